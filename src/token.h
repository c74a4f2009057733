/* token: upload tokens (docs/protocol.md, "Upload tokens"): v1.EXPIRY.MAXSIZE.SIG, where EXPIRY
 * is in Unix seconds, MAXSIZE in bytes (0 = no limit) and SIG is base64url
 * without padding of HMAC-SHA256(secret, "v1.EXPIRY.MAXSIZE"). The parser is
 * strict and pure (bounded, no allocation, no I/O); signing and verifying use
 * OpenSSL's HMAC and compare signatures in constant time. Nothing here logs,
 * and no message it writes contains the token. */
#ifndef INTAKE_TOKEN_H
#define INTAKE_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_SIG_LEN 32      /* HMAC-SHA256 */
#define TOKEN_SIG_TEXT_LEN 43 /* its base64url, without padding */
#define TOKEN_DEC_MAX 20      /* digits of UINT64_MAX */
/* The longest well-formed token: "v1." EXPIRY "." MAXSIZE "." SIG. */
#define TOKEN_TEXT_MAX (3 + TOKEN_DEC_MAX + 1 + TOKEN_DEC_MAX + 1 + TOKEN_SIG_TEXT_LEN)
#define TOKEN_SECRET_MIN 32 /* bytes of a secret */

/* A secret: the HMAC key's bytes, owned by whoever loaded them. */
struct token_key {
    const unsigned char *bytes;
    size_t len;
};

struct token {
    uint64_t expiry;   /* Unix seconds: valid while now < expiry */
    uint64_t max_size; /* bytes; 0 = no limit */
    size_t signed_len; /* length of the "v1.EXPIRY.MAXSIZE" prefix the signature covers */
    unsigned char sig[TOKEN_SIG_LEN];
};

/* Parses exactly len bytes: "v1.", two decimal fields (digits only, no sign,
 * no leading zero except "0" itself, at most UINT64_MAX), and 43 base64url
 * characters whose unused low bits are zero. 0, or -1 for anything else. */
int token_parse(const char *s, size_t len, struct token *out);

/* Writes the token for expiry and max_size signed with key, NUL-terminated,
 * into out (cap >= TOKEN_TEXT_MAX + 1). Returns its length, or -1. */
int token_sign(const struct token_key *key, uint64_t expiry, uint64_t max_size, char *out,
               size_t cap);

/* Whether t (parsed from s) carries a signature made with one of the n keys.
 * Every key is tried; signatures are compared with CRYPTO_memcmp. */
bool token_verify(const struct token_key *keys, size_t n, const char *s, const struct token *t);

/* The START check with tokens required. tok/tok_len: the token the START
 * carries (or the WebSocket URL's), tok_len 0 for none. first_start: the
 * upload's first START (no id), the only one whose expiry counts. size: the
 * START's size. Returns 0 (allowed), 401 or 413 with a message for the
 * client and the log in msg (never the token itself; at most its expiry). */
int token_check(const struct token_key *keys, size_t n, const char *tok, size_t tok_len,
                uint64_t now, bool first_start, uint64_t size, char *msg, size_t msglen);

#endif
