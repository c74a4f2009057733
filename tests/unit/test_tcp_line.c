/* Unit tests for the raw TCP header line parser: every input is also fed
 * cut at every byte boundary, as a slow client would send it. */
#include "tcp_line.h"
#include "test.h"

#include <stdlib.h>

struct line_case {
    const char *name;
    const char *input;
    size_t len;      /* 0: strlen(input) */
    ssize_t want;    /* bytes consumed, TCP_LINE_AGAIN or TCP_LINE_TOO_LONG */
    size_t want_len; /* line length without the line end */
};

/* Feeds buf[0..len) as a growing prefix, one more byte each time, and returns
 * the first non-AGAIN result (or AGAIN if none). */
static ssize_t feed_growing(const char *buf, size_t len, size_t *ll)
{
    struct tcp_line st = {0};
    for (size_t i = 1; i <= len; i++) {
        ssize_t r = tcp_line_parse(&st, buf, i, ll);
        if (r != TCP_LINE_AGAIN) return r;
    }
    return TCP_LINE_AGAIN;
}

int main(void)
{
    static char longline[TCP_LINE_MAX + 2], toolong[TCP_LINE_MAX + 2];
    memset(longline, 'a', TCP_LINE_MAX);
    longline[TCP_LINE_MAX] = '\n';
    memset(toolong, 'a', TCP_LINE_MAX + 1);
    toolong[TCP_LINE_MAX + 1] = '\n';
    const struct line_case cases[] = {
        {"plain", "5 a.txt\nhello", 0, 8, 7},
        {"crlf", "5 a.txt\r\nhello", 0, 9, 7},
        {"json", "{\"type\":\"START\"}\n", 0, 17, 16},
        {"empty line", "\n", 0, 1, 0},
        {"lone cr", "\r\n", 0, 2, 0},
        {"no newline", "5 a.txt", 0, TCP_LINE_AGAIN, 0},
        {"nothing", "", 0, TCP_LINE_AGAIN, 0},
        {"nul inside", "5 a\0b\n", 6, 6, 5},
        {"cr in middle kept", "5 a\rb\n", 0, 6, 5},
        {"exactly the limit", longline, TCP_LINE_MAX + 1, TCP_LINE_MAX + 1, TCP_LINE_MAX},
        {"one over the limit", toolong, TCP_LINE_MAX + 2, TCP_LINE_TOO_LONG, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct line_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->input);
        struct tcp_line st = {0};
        size_t ll = 99999;
        ssize_t r = tcp_line_parse(&st, c->input, len, &ll);
        CHECK_MSG(r == c->want, "%s: whole: got %zd want %zd", c->name, r, c->want);
        if (r > 0) CHECK_MSG(ll == c->want_len, "%s: len %zu want %zu", c->name, ll, c->want_len);
        ll = 99999;
        r = feed_growing(c->input, len, &ll);
        CHECK_MSG(r == c->want, "%s: byte by byte: got %zd want %zd", c->name, r, c->want);
        if (r > 0) CHECK_MSG(ll == c->want_len, "%s: split len %zu", c->name, ll);
        /* Every cut point: the prefix needs more, unless the line already ended. */
        for (size_t cut = 0; cut < len; cut++) {
            struct tcp_line s2 = {0};
            ssize_t a = tcp_line_parse(&s2, c->input, cut, &ll);
            ssize_t b = tcp_line_parse(&s2, c->input, len, &ll);
            if (c->want > 0 && (size_t)c->want <= cut)
                CHECK(a == c->want);
            else if (c->want == TCP_LINE_TOO_LONG && cut > TCP_LINE_MAX)
                CHECK(a == TCP_LINE_TOO_LONG);
            else {
                CHECK_MSG(a == TCP_LINE_AGAIN, "%s: cut %zu got %zd", c->name, cut, a);
                CHECK_MSG(b == c->want, "%s: cut %zu then whole got %zd", c->name, cut, b);
            }
        }
    }
    /* A guard: the parser never reads past len (bytes after it are poison). */
    char *buf = malloc(16);
    memcpy(buf, "12 ab", 5);
    memset(buf + 5, '\n', 11);
    struct tcp_line st = {0};
    size_t ll;
    CHECK(tcp_line_parse(&st, buf, 5, &ll) == TCP_LINE_AGAIN);
    free(buf);
    return test_report("test_tcp_line");
}
