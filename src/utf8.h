/* utf8: strict, incremental UTF-8 validation (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). The state carries a sequence cut
 * between two calls, so WebSocket text can be checked fragment by fragment
 * and fail as soon as the first bad byte arrives. Also turns any bytes into
 * a JSON string body that is always valid JSON and valid UTF-8. */
#ifndef INTAKE_UTF8_H
#define INTAKE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct utf8_state {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* allowed range of the next continuation byte */
};

/* 0 while everything so far can still be valid UTF-8, -1 once it cannot. */
int utf8_feed(struct utf8_state *st, const uint8_t *p, size_t n);
/* True when no sequence is left open. */
static inline bool utf8_complete(const struct utf8_state *st)
{
    return st->need == 0;
}
bool utf8_valid(const uint8_t *p, size_t n);
/* The length (1-4) of the valid UTF-8 sequence p starts with, 0 if p[0..n)
 * does not start with one. */
size_t utf8_seq_len(const uint8_t *p, size_t n);

/* Worst-case output of utf8_json_escape for n input bytes. */
#define UTF8_JSON_MAX(n) (6 * (n))
/* Writes p[0..n) as the inside of a JSON string (no quotes, no NUL) to out,
 * which holds UTF8_JSON_MAX(n) bytes: '"', backslash and control characters
 * escaped, bytes that are not UTF-8 replaced by U+FFFD (*replaced set then,
 * untouched otherwise). NUL bytes become \u0000: the length is p's, never
 * strlen. Returns the bytes written. */
size_t utf8_json_escape(char *out, const uint8_t *p, size_t n, bool *replaced);

#endif
