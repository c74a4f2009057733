/* Unit tests for the WebSocket frame header parser, unmasking and UTF-8
 * validation: every RFC 6455 section 5 rule, each input cut at every byte. */
#include "test.h"
#include "utf8.h"
#include "ws_frame.h"

#include <stdlib.h>

struct frame_case {
    const char *name;
    uint8_t in[16];
    size_t len;
    ssize_t want; /* header size or WS_FAIL */
    int code;     /* close code on WS_FAIL */
    uint64_t plen;
};

static void test_headers(void)
{
    const struct frame_case cases[] = {
        {"masked text 5", {0x81, 0x85, 1, 2, 3, 4}, 6, 6, 0, 5},
        {"empty binary", {0x82, 0x80, 1, 2, 3, 4}, 6, 6, 0, 0},
        {"continuation not fin", {0x00, 0x81, 1, 2, 3, 4}, 6, 6, 0, 1},
        {"16-bit 126", {0x82, 0xFE, 0x00, 0x7E, 1, 2, 3, 4}, 8, 8, 0, 126},
        {"16-bit 65535", {0x82, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4}, 8, 8, 0, 65535},
        {"64-bit 65536", {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, 14, 14, 0, 65536},
        {"64-bit 16 MiB", {0x82, 0xFF, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4}, 14, 14, 0, 16 << 20},
        {"ping 125", {0x89, 0xFD, 1, 2, 3, 4}, 6, 6, 0, 125},
        {"close empty", {0x88, 0x80, 1, 2, 3, 4}, 6, 6, 0, 0},
        {"unmasked", {0x81, 0x05}, 2, WS_FAIL, 1002, 0},
        {"rsv1", {0xC1, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"rsv2", {0xA1, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"rsv3", {0x91, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"opcode 3", {0x83, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"opcode 7", {0x87, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"opcode B", {0x8B, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"opcode F", {0x8F, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"fragmented ping", {0x09, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"fragmented close", {0x08, 0x80, 1, 2, 3, 4}, 6, WS_FAIL, 1002, 0},
        {"ping 126", {0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4}, 8, WS_FAIL, 1002, 0},
        {"16-bit not minimal", {0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4}, 8, WS_FAIL, 1002, 0},
        {"64-bit not minimal",
         {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4},
         14,
         WS_FAIL,
         1002,
         0},
        {"64-bit top bit",
         {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
         14,
         WS_FAIL,
         1002,
         0},
        {"over 16 MiB", {0x82, 0xFF, 0, 0, 0, 0, 1, 0, 0, 1, 1, 2, 3, 4}, 14, WS_FAIL, 1009, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct frame_case *c = &cases[i];
        struct ws_frame f;
        int code = -1;
        ssize_t r = ws_frame_parse(c->in, c->len, &f, &code);
        CHECK_MSG(r == c->want, "%s: got %zd want %zd", c->name, r, c->want);
        if (r == WS_FAIL) CHECK_MSG(code == c->code, "%s: code %d", c->name, code);
        if (r > 0) {
            CHECK_MSG(f.len == c->plen, "%s: len %llu", c->name, (unsigned long long)f.len);
            CHECK(memcmp(f.mask, "\1\2\3\4", 4) == 0);
            CHECK(f.opcode == (c->in[0] & 0x0F) && f.fin == ((c->in[0] & 0x80) != 0));
        }
        /* Cut at every byte: need more, or the same failure once decidable. */
        for (size_t cut = 0; cut < c->len; cut++) {
            ssize_t a = ws_frame_parse(c->in, cut, &f, &code);
            CHECK_MSG(a == WS_AGAIN || (a == WS_FAIL && c->want == WS_FAIL), "%s: cut %zu got %zd",
                      c->name, cut, a);
        }
    }
}

static void test_unmask(void)
{
    /* Any alignment, any length, any starting offset: same as byte by byte.
     * Lengths reach past the 64-byte loop from every 16-byte alignment. */
    uint8_t *buf = malloc(300), *ref = malloc(300);
    const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    int bad = 0;
    for (size_t start = 0; start < 17; start++)
        for (size_t n = 0; n < 200; n++)
            for (uint64_t off = 0; off < 5; off++) {
                for (size_t i = 0; i < 300; i++)
                    buf[i] = ref[i] = (uint8_t)(i * 7 + 3);
                for (size_t i = 0; i < n; i++)
                    ref[start + i] ^= mask[(off + i) & 3];
                ws_unmask(buf + start, n, mask, off);
                if (memcmp(buf, ref, 300) != 0) bad++;
            }
    CHECK_MSG(bad == 0, "%d unmask mismatches", bad);
    /* RFC 6455 5.7: "Hello" masked with 37 fa 21 3d. */
    uint8_t hello[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ws_unmask(hello, 5, mask, 0);
    CHECK(memcmp(hello, "Hello", 5) == 0);
    free(buf);
    free(ref);
}

static void test_server_header(void)
{
    uint8_t h[10];
    CHECK(ws_frame_header(h, WS_OP_TEXT, 5) == 2 && h[0] == 0x81 && h[1] == 5);
    CHECK(ws_frame_header(h, WS_OP_BINARY, 126) == 4 && h[1] == 126 && h[3] == 126);
    CHECK(ws_frame_header(h, WS_OP_BINARY, 65536) == 10 && h[1] == 127 && h[7] == 1);
    unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                        1010, 1011, 3000, 3999, 4000, 4999};
    unsigned invalid[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++)
        CHECK(ws_close_code_valid(valid[i]));
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++)
        CHECK_MSG(!ws_close_code_valid(invalid[i]), "%u", invalid[i]);
}

static void test_utf8(void)
{
    struct {
        const char *s;
        size_t len;
        int valid;
    } cases[] = {
        {"", 0, 1},
        {"plain ascii text, longer than eight bytes", 0, 1},
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 0, 1}, /* κόσμε */
        {"\xf0\x90\x80\x80", 0, 1},                             /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 0, 1},                             /* U+10FFFF */
        {"\xef\xbf\xbf", 0, 1},                                 /* U+FFFF */
        {"\xed\x9f\xbf", 0, 1},                                 /* U+D7FF */
        {"\xf4\x90\x80\x80", 0, 0},                             /* U+110000 */
        {"\xed\xa0\x80", 0, 0},                                 /* surrogate */
        {"\xc0\xaf", 0, 0},                                     /* overlong / */
        {"\xe0\x80\xaf", 0, 0},
        {"\xf0\x80\x80\xaf", 0, 0},
        {"\x80", 0, 0},
        {"\xbf", 0, 0},
        {"\xfe", 0, 0},
        {"\xff", 0, 0},
        {"\xce\xba\xe1\xbd", 0, 0}, /* truncated at the end */
        {"a\xc3", 0, 0},
        {"\xc3\x28", 0, 0},
        {"\0", 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        size_t n = cases[i].len ? cases[i].len : strlen(cases[i].s);
        CHECK_MSG(utf8_valid(p, n) == cases[i].valid, "case %zu", i);
        /* Split at every point into two feeds: same verdict. */
        for (size_t cut = 0; cut <= n; cut++) {
            struct utf8_state st = {0};
            int ok = utf8_feed(&st, p, cut) == 0 && utf8_feed(&st, p + cut, n - cut) == 0 &&
                     utf8_complete(&st);
            CHECK_MSG(ok == cases[i].valid, "case %zu cut %zu", i, cut);
        }
    }
    /* Fail fast: an invalid byte is reported when it arrives, not at the end. */
    struct utf8_state st = {0};
    CHECK(utf8_feed(&st, (const uint8_t *)"\xce\xba\xe1\xbd\xb9", 5) == 0);
    CHECK(utf8_feed(&st, (const uint8_t *)"\xf4\x90", 2) == -1);
}

int main(void)
{
    test_headers();
    test_unmask();
    test_server_header();
    test_utf8();
    return test_report("test_ws_frame");
}
