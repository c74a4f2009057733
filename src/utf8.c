/* utf8: see utf8.h. An ASCII fast path checks eight bytes at a time. */
#include "utf8.h"

#include <string.h>

int utf8_feed(struct utf8_state *st, const uint8_t *p, size_t n)
{
    size_t i = 0;
    uint8_t need = st->need, lo = st->lo, hi = st->hi;
    while (i < n) {
        if (need == 0) {
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ULL) break;
                i += 8;
            }
            if (i >= n) break;
            uint8_t c = p[i++];
            if (c < 0x80) continue;
            lo = 0x80;
            hi = 0xBF;
            if (c >= 0xC2 && c <= 0xDF)
                need = 1;
            else if (c >= 0xE0 && c <= 0xEF) {
                need = 2;
                if (c == 0xE0) lo = 0xA0; /* overlong */
                if (c == 0xED) hi = 0x9F; /* surrogates */
            } else if (c >= 0xF0 && c <= 0xF4) {
                need = 3;
                if (c == 0xF0) lo = 0x90; /* overlong */
                if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
            } else
                goto bad;
        } else {
            uint8_t c = p[i++];
            if (c < lo || c > hi) goto bad;
            lo = 0x80;
            hi = 0xBF;
            need--;
        }
    }
    st->need = need;
    st->lo = lo;
    st->hi = hi;
    return 0;
bad:
    st->need = 0xFF;
    return -1;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    struct utf8_state st = {0};
    return utf8_feed(&st, p, n) == 0 && utf8_complete(&st);
}

size_t utf8_seq_len(const uint8_t *p, size_t n)
{
    if (n == 0) return 0;
    uint8_t c = p[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (len == 0 || len > n) return 0;
    return utf8_valid(p, len) ? len : 0;
}

size_t utf8_json_escape(char *out, const uint8_t *p, size_t n, bool *replaced)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
            i++;
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
            i++;
        } else if (c < 0x80) {
            out[o++] = (char)c;
            i++;
        } else {
            size_t k = utf8_seq_len(p + i, n - i);
            if (k == 0) {
                memcpy(out + o, "\xef\xbf\xbd", 3); /* U+FFFD */
                o += 3;
                *replaced = true;
                i++;
            } else {
                memcpy(out + o, p + i, k);
                o += k;
                i += k;
            }
        }
    }
    return o;
}
