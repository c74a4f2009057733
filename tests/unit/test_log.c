/* Unit tests for log: log_escape with hostile bytes (line breaks, ESC,
 * C1 and bidi controls, bytes that are not UTF-8, cuts at the buffer's end),
 * and whole lines through log_msg: one event, one line. */
#define _GNU_SOURCE
#include "log.h"
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static void test_escape(void)
{
    struct {
        const char *in;
        size_t len; /* 0: strlen */
        const char *want;
    } cases[] = {
        {"plain name.txt", 0, "plain name.txt"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0,
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"back\\slash", 0, "back\\slash"},
        {"a\nb\rc\td", 0, "a\\x0ab\\x0dc\\x09d"},
        {"x\n2026-01-01T00:00:00.000Z [error] 1: master: forged", 0,
         "x\\x0a2026-01-01T00:00:00.000Z [error] 1: master: forged"},
        {"\x1b[31mred\x1b[0m", 0, "\\x1b[31mred\\x1b[0m"},
        {"nul\0byte", 8, "nul\\x00byte"},
        {"del\x7f", 0, "del\\x7f"},
        {"c1 \xc2\x85 \xc2\x9b", 0, "c1 \\xc2\\x85 \\xc2\\x9b"},
        {"nbsp \xc2\xa0", 0, "nbsp \xc2\xa0"},
        {"ls \xe2\x80\xa8 ps \xe2\x80\xa9", 0, "ls \\xe2\\x80\\xa8 ps \\xe2\\x80\\xa9"},
        {"rlo \xe2\x80\xae lri \xe2\x81\xa6", 0, "rlo \\xe2\\x80\\xae lri \\xe2\\x81\\xa6"},
        {"bad \xff \xc0\xaf \xed\xa0\x80", 0, "bad \\xff \\xc0\\xaf \\xed\\xa0\\x80"},
        {"cut \xe2\x82", 0, "cut \\xe2\\x82"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[256];
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in), used = 0;
        size_t n = log_escape(out, sizeof out - 1, cases[i].in, len, &used);
        out[n] = '\0';
        CHECK_STR(out, cases[i].want);
        CHECK(used == len);
    }
    /* Never past cap, never half an escape or half a character. */
    const char *in = "ab\n\xe2\x82\xac";
    for (size_t cap = 0; cap <= 10; cap++) {
        char out[16];
        memset(out, '#', sizeof out);
        size_t used = 99, n = log_escape(out, cap, in, strlen(in), &used);
        CHECK(n <= cap && out[cap] == '#');
        size_t want_used = cap < 2 ? cap : cap < 6 ? 2 : cap < 9 ? 3 : 6;
        CHECK_MSG(used == want_used, "cap %zu used %zu", cap, used);
    }
}

static void test_lines(void)
{
    char path[] = "/tmp/intake-test-log-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(log_open(path, LOG_INFO) == 0);
    log_set_role("worker 1");
    log_info("upload x (%s) from %s: refused",
             "evil\n2026-01-01T00:00:00.000Z [error] 1: forged\x1b", "1.2.3.4:5");
    char big[6000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_warn("long: %s", big);
    log_open("stderr", LOG_ERROR);
    FILE *f = fopen(path, "r");
    char line[16384];
    int lines = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        CHECK(strchr(line, '\n') == line + strlen(line) - 1);
        CHECK(strchr(line, '\x1b') == NULL);
        CHECK(strstr(line, "Z [") && strstr(line, ": worker 1: "));
    }
    CHECK(lines == 2);
    if (f) fclose(f);
    unlink(path);
}

int main(void)
{
    test_escape();
    test_lines();
    return test_report("test_log");
}
