/* token: see token.h. One spelling per token: the decimal fields have no
 * leading zeros and the signature's base64url no padding and no stray low
 * bits, so a token cannot be altered without breaking its signature or its
 * form. */
#define _POSIX_C_SOURCE 200809L
#include "token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

/* 32 bytes from exactly 43 characters: ten groups of four, then three
 * characters for the last two bytes (18 bits, the low two must be zero). */
static int sig_decode(const char *s, unsigned char out[TOKEN_SIG_LEN])
{
    size_t o = 0;
    for (size_t i = 0; i < TOKEN_SIG_TEXT_LEN; i += 4) {
        uint32_t acc = 0;
        size_t n = TOKEN_SIG_TEXT_LEN - i < 4 ? TOKEN_SIG_TEXT_LEN - i : 4;
        for (size_t k = 0; k < n; k++) {
            int v = b64url_value((unsigned char)s[i + k]);
            if (v < 0) return -1;
            acc = acc << 6 | (uint32_t)v;
        }
        if (n == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
        } else {
            if (acc & 3) return -1;
            out[o++] = (unsigned char)(acc >> 10);
            out[o++] = (unsigned char)(acc >> 2);
        }
    }
    return o == TOKEN_SIG_LEN ? 0 : -1;
}

static void sig_encode(const unsigned char in[TOKEN_SIG_LEN], char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= TOKEN_SIG_LEN; i += 3) {
        uint32_t acc = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[acc >> 18 & 63];
        out[o++] = b64url[acc >> 12 & 63];
        out[o++] = b64url[acc >> 6 & 63];
        out[o++] = b64url[acc & 63];
    }
    uint32_t acc = (uint32_t)in[i] << 8 | in[i + 1];
    out[o++] = b64url[acc >> 10 & 63];
    out[o++] = b64url[acc >> 4 & 63];
    out[o++] = b64url[acc << 2 & 63];
}

/* A decimal field of s[*pos..] ending at '.': digits only, no leading zero
 * except "0", no overflow. Moves *pos past the '.'. */
static int parse_dec(const char *s, size_t len, size_t *pos, uint64_t *out)
{
    size_t i = *pos, start = i;
    uint64_t v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (i - start >= TOKEN_DEC_MAX || v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        i++;
    }
    if (i == start || i >= len || s[i] != '.') return -1;
    if (s[start] == '0' && i - start > 1) return -1;
    *out = v;
    *pos = i + 1;
    return 0;
}

int token_parse(const char *s, size_t len, struct token *out)
{
    if (len > TOKEN_TEXT_MAX || len < 3 || memcmp(s, "v1.", 3) != 0) return -1;
    size_t pos = 3;
    if (parse_dec(s, len, &pos, &out->expiry) < 0) return -1;
    if (parse_dec(s, len, &pos, &out->max_size) < 0) return -1;
    out->signed_len = pos - 1;
    if (len - pos != TOKEN_SIG_TEXT_LEN) return -1;
    return sig_decode(s + pos, out->sig);
}

static int mac(const struct token_key *key, const char *data, size_t len,
               unsigned char out[TOKEN_SIG_LEN])
{
    unsigned int n = 0;
    if (key->len > (size_t)0x7fffffff) return -1;
    if (!HMAC(EVP_sha256(), key->bytes, (int)key->len, (const unsigned char *)data, len, out, &n) ||
        n != TOKEN_SIG_LEN)
        return -1;
    return 0;
}

int token_sign(const struct token_key *key, uint64_t expiry, uint64_t max_size, char *out,
               size_t cap)
{
    if (cap < TOKEN_TEXT_MAX + 1) return -1;
    int n = snprintf(out, cap, "v1.%llu.%llu", (unsigned long long)expiry,
                     (unsigned long long)max_size);
    unsigned char sig[TOKEN_SIG_LEN];
    if (n < 0 || mac(key, out, (size_t)n, sig) < 0) return -1;
    out[n++] = '.';
    sig_encode(sig, out + n);
    n += TOKEN_SIG_TEXT_LEN;
    out[n] = '\0';
    OPENSSL_cleanse(sig, sizeof sig);
    return n;
}

bool token_verify(const struct token_key *keys, size_t n, const char *s, const struct token *t)
{
    bool ok = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char want[TOKEN_SIG_LEN];
        if (mac(&keys[i], s, t->signed_len, want) == 0 &&
            CRYPTO_memcmp(want, t->sig, TOKEN_SIG_LEN) == 0)
            ok = true;
    }
    return ok;
}

int token_check(const struct token_key *keys, size_t n, const char *tok, size_t tok_len,
                uint64_t now, bool first_start, uint64_t size, char *msg, size_t msglen)
{
    struct token t;
    if (tok_len == 0) {
        snprintf(msg, msglen, "upload token required (this server has auth_secret_file)");
        return 401;
    }
    if (token_parse(tok, tok_len, &t) < 0) {
        snprintf(msg, msglen, "malformed upload token (expected v1.EXPIRY.MAXSIZE.SIGNATURE)");
        return 401;
    }
    if (!token_verify(keys, n, tok, &t)) {
        snprintf(msg, msglen, "upload token not valid (bad signature)");
        return 401;
    }
    if (first_start && now >= t.expiry) {
        char when[32] = "";
        struct tm tm;
        time_t e = (time_t)t.expiry; /* <= now: it fits */
        if (gmtime_r(&e, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(msg, msglen, "upload token expired at %s", when);
        return 401;
    }
    if (t.max_size && size > t.max_size) {
        snprintf(msg, msglen,
                 "file of %llu bytes is larger than the upload token allows (%llu bytes)",
                 (unsigned long long)size, (unsigned long long)t.max_size);
        return 413;
    }
    if (msglen) msg[0] = '\0';
    return 0;
}
