/* Unit tests for the HTTP request head parser: good and hostile heads, each
 * also fed growing a byte at a time and cut at every byte. */
#include "http.h"
#include "test.h"

#include <stdlib.h>

struct head_case {
    const char *name, *in;
    ssize_t want; /* > 0: the whole input is the head; or HTTP_BAD/TOO_LARGE */
};

static void test_cases(void)
{
    const struct head_case cases[] = {
        {"minimal", "GET / HTTP/1.1\r\n\r\n", 1},
        {"headers", "GET /x?y=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX:  v  \r\n\r\n", 1},
        {"http/1.0", "GET / HTTP/1.0\r\n\r\n", 1},
        {"bare lf", "GET / HTTP/1.1\nHost: a\n\n", 1},
        {"leading crlf", "\r\nGET / HTTP/1.1\r\n\r\n", 1},
        {"empty value", "GET / HTTP/1.1\r\nX:\r\n\r\n", 1},
        {"no version", "GET /\r\n\r\n", HTTP_BAD},
        {"http/2", "GET / HTTP/2.0\r\n\r\n", HTTP_BAD},
        {"lowercase http", "GET / http/1.1\r\n\r\n", HTTP_BAD},
        {"two spaces", "GET  / HTTP/1.1\r\n\r\n", HTTP_BAD},
        {"no method", " / HTTP/1.1\r\n\r\n", HTTP_BAD},
        {"bad method char", "G(T / HTTP/1.1\r\n\r\n", HTTP_BAD},
        {"ctl in target", "GET /\x01 HTTP/1.1\r\n\r\n", HTTP_BAD},
        {"obs-fold", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HTTP_BAD},
        {"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", HTTP_BAD},
        {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", HTTP_BAD},
        {"empty name", "GET / HTTP/1.1\r\n: a\r\n\r\n", HTTP_BAD},
        {"ctl in value", "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", HTTP_BAD},
        {"nul in value", "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", HTTP_BAD},
        {"garbage", "\x16\x03\x01\x02\x05\x01\x01\xfc\x03\x03\n\n", HTTP_BAD},
        {"long method", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n\r\n", HTTP_BAD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct head_case *c = &cases[i];
        size_t len = strlen(c->in);
        if (strcmp(c->name, "nul in value") == 0) len = 27;
        ssize_t want = c->want == 1 ? (ssize_t)len : c->want;
        struct http_request req;
        struct http_parser st = {0};
        ssize_t r = http_parse_request(&st, c->in, len, &req);
        CHECK_MSG(r == want, "%s: got %zd want %zd", c->name, r, want);
        /* Growing a byte at a time: AGAIN until the end, then the same answer. */
        struct http_parser g = {0};
        ssize_t last = HTTP_AGAIN;
        size_t k;
        for (k = 1; k <= len; k++) {
            last = http_parse_request(&g, c->in, k, &req);
            if (last != HTTP_AGAIN) break;
        }
        CHECK_MSG(last == want && (want < 0 || k == len), "%s: growing got %zd at %zu", c->name,
                  last, k);
        /* Garbage at the start is refused before the head is complete. */
        if (c->in[0] == '\x16') CHECK(http_parse_request(&st, c->in, 1, &req) == HTTP_BAD);
        /* Every cut point with a fresh state. */
        for (size_t cut = 0; cut < len; cut++) {
            struct http_parser s2 = {0};
            ssize_t a = http_parse_request(&s2, c->in, cut, &req);
            CHECK_MSG(a == HTTP_AGAIN || a == want, "%s: cut %zu got %zd", c->name, cut, a);
        }
    }
}

static void test_fields(void)
{
    const char *in =
        "GET /echo?x HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade"
        "\r\nupgrade: WebSocket\r\nSec-WebSocket-Key:\tdGhlIHNhbXBsZSBub25jZQ==  \r\n\r\n";
    struct http_request req;
    struct http_parser st = {0};
    CHECK(http_parse_request(&st, in, strlen(in), &req) == (ssize_t)strlen(in));
    CHECK(req.method_len == 3 && memcmp(req.method, "GET", 3) == 0);
    CHECK(req.path_len == 7 && memcmp(req.path, "/echo?x", 7) == 0);
    CHECK(req.minor_version == 1 && req.num_headers == 4);
    const struct http_header *h = http_header_get(&req, "UPGRADE");
    CHECK(h && http_eq_nocase(h->value, h->value_len, "websocket"));
    h = http_header_get(&req, "connection");
    CHECK(h && http_has_token(h->value, h->value_len, "upgrade"));
    CHECK(h && !http_has_token(h->value, h->value_len, "close"));
    h = http_header_get(&req, "sec-websocket-key");
    CHECK(h && h->value_len == 24);
    CHECK(http_header_get(&req, "origin") == NULL);
    CHECK(http_has_token("a, b ,c", 7, "b") && !http_has_token("ab", 2, "a"));
}

static void test_limits(void)
{
    /* A head of exactly the limit passes; one byte more is 431. */
    char *buf = malloc(HTTP_HEAD_MAX + 16);
    const char *start = "GET / HTTP/1.1\r\nX: ";
    size_t sl = strlen(start);
    memcpy(buf, start, sl);
    memset(buf + sl, 'v', HTTP_HEAD_MAX - sl - 4);
    memcpy(buf + HTTP_HEAD_MAX - 4, "\r\n\r\n", 4);
    struct http_request req;
    struct http_parser st = {0};
    CHECK(http_parse_request(&st, buf, HTTP_HEAD_MAX, &req) == HTTP_HEAD_MAX);
    memset(buf + sl, 'v', HTTP_HEAD_MAX - sl + 1);
    memcpy(buf + HTTP_HEAD_MAX + 1 - 4, "\r\n\r\n", 4);
    struct http_parser st2 = {0};
    CHECK(http_parse_request(&st2, buf, HTTP_HEAD_MAX + 1, &req) == HTTP_TOO_LARGE);
    /* No end in sight after the limit: 431, not AGAIN forever. */
    memset(buf, 'a', HTTP_HEAD_MAX + 16);
    struct http_parser st3 = {0};
    CHECK(http_parse_request(&st3, buf, HTTP_HEAD_MAX + 16, &req) == HTTP_TOO_LARGE);
    /* Too many headers: 431. */
    size_t o = 0;
    o += (size_t)sprintf(buf + o, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        o += (size_t)sprintf(buf + o, "H%d: x\r\n", i);
    o += (size_t)sprintf(buf + o, "\r\n");
    struct http_parser st4 = {0};
    CHECK(http_parse_request(&st4, buf, o, &req) == HTTP_TOO_LARGE);
    free(buf);
}

int main(void)
{
    test_cases();
    test_fields();
    test_limits();
    return test_report("test_http");
}
