/* Unit tests for message: START and plain header parsing with hostile
 * inputs, the dispatch of control messages, and server messages. */
#define _GNU_SOURCE
#include "message.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static void test_parse_start(void)
{
    struct {
        const char *json;
        int code; /* 0 = ok */
    } cases[] = {
        {"{\"type\":\"START\",\"filename\":\"a.txt\",\"size\":5}", 0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":0,\"sha256\":"
         "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}",
         0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"sha256\":null,\"token\":\"t\"}", 0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"extra\":[1,2,3]}", 0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"id\":"
         "\"0123456789abcdef0123456789abcdef\"}",
         0},
        {"", 400},
        {"not json", 400},
        {"[1,2]", 400},
        {"\"START\"", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":5", 400},
        {"{\"type\":\"DONE\"}", 400},
        {"{\"type\":\"start\",\"filename\":\"a\",\"size\":1}", 400},
        {"{\"filename\":\"a\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":5,\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\"}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":\"5\"}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":-1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1.5}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1e300}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"sha256\":\"abc\"}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"sha256\":"
         "\"zz3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8\"}",
         400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"id\":\"../../etc\"}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"token\":7}", 400},
        /* One JSON object and only whitespace around it (issue 10, item 2). */
        {" \t\r\n{\"type\":\"START\",\"filename\":\"a\",\"size\":1} \t\r\n", 0},
        {"{ \"type\" : \"START\" , \"filename\" : \"a\" , \"size\" : 1 }", 0},
        {"{\"ty\\u0070e\":\"START\",\"file\\u006eame\":\"a\",\"size\":1}", 0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1} trailing", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1}{\"type\":\"START\"}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1},", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1}\x01", 400},
        {"{\"type\":\"START\",\x01\"filename\":\"a\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\tb\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":01}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1.}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":+1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"x\":tru}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\\x\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\\u12\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"\\ud800\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"\\udc00\\ud800\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"filename\":\"b\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"x\":[[[[[[[[[[[[[[[[[[[[[["
         "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
         400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"x\":[{\"y\":[true,false,null,-0.5e+3]"
         "}]}",
         0},
        /* An escaped NUL is part of the string, never its end (item 1). */
        {"{\"type\":\"START\\u0000x\",\"filename\":\"a\",\"size\":1}", 400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"id\":"
         "\"0123456789abcdef0123456789abcdef\\u0000\"}",
         400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":0,\"sha256\":"
         "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\\u0000\"}",
         400},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1,\"token\":\"t\\u0000u\"}", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct upload_request r;
        struct upload_error e = {0};
        int rc = message_parse_start(cases[i].json, strlen(cases[i].json), &r, &e);
        if (cases[i].code == 0)
            CHECK_MSG(rc == 0, "%s: %s", cases[i].json, e.message);
        else
            CHECK_MSG(rc < 0 && e.code == cases[i].code && e.message[0], "%s", cases[i].json);
    }
    /* A NUL inside the filename is kept, with the real length. */
    const char *nul = "{\"type\":\"START\",\"filename\":\"shell.php\\u0000.jpg\",\"size\":1}";
    struct upload_request rn;
    struct upload_error en;
    CHECK(message_parse_start(nul, strlen(nul), &rn, &en) == 0);
    CHECK(rn.filename_len == 14 && memcmp(rn.filename, "shell.php\0.jpg", 14) == 0);
    const char *esc = "{\"type\":\"START\",\"filename\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9"
                      "\\u20ac\\ud83d\\ude00\",\"size\":1}";
    CHECK(message_parse_start(esc, strlen(esc), &rn, &en) == 0);
    CHECK(rn.filename_len == 17 &&
          memcmp(rn.filename, "\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 17) == 0);
    /* Parsing stops at len: bytes after it are not part of the object. */
    const char *s = "{\"type\":\"START\",\"filename\":\"a\",\"size\":5}garbage";
    struct upload_request r;
    struct upload_error e;
    CHECK(message_parse_start(s, strlen(s) - 7, &r, &e) == 0);
    CHECK(r.size == 5 && strcmp(r.filename, "a") == 0);
    /* A filename over the limit is refused. */
    char *big = malloc(UPLOAD_FILENAME_MAX + 100);
    int n =
        snprintf(big, UPLOAD_FILENAME_MAX + 100, "{\"type\":\"START\",\"size\":1,\"filename\":\"");
    memset(big + n, 'x', UPLOAD_FILENAME_MAX + 1);
    strcpy(big + n + UPLOAD_FILENAME_MAX + 1, "\"}");
    CHECK(message_parse_start(big, strlen(big), &r, &e) < 0 && e.code == 400);
    free(big);
    /* A lone surrogate is named as what it is: no UTF-8 carries one (it was
     * refused as a filename too long or not a string). */
    const char *lone[] = {"{\"type\":\"START\",\"filename\":\"a\\ud800b\",\"size\":1}",
                          "{\"type\":\"START\",\"filename\":\"\\udc00\",\"size\":1}",
                          "{\"type\":\"START\",\"filename\":\"\\ud800\\u0041\",\"size\":1}"};
    for (size_t i = 0; i < sizeof lone / sizeof *lone; i++) {
        CHECK(message_parse_start(lone[i], strlen(lone[i]), &r, &e) < 0 && e.code == 400);
        CHECK_MSG(strstr(e.message, "not valid UTF-8") != NULL, "%s: %s", lone[i], e.message);
    }
}

static void test_parse_plain(void)
{
    struct {
        const char *line;
        int code;
        unsigned long long size;
        const char *name;
    } cases[] = {
        {"5 a.txt", 0, 5, "a.txt"},
        {"0 empty", 0, 0, "empty"},
        {"12 name with spaces.txt", 0, 12, "name with spaces.txt"},
        {"3  leading space", 0, 3, " leading space"},
        {"18446744073709551615 x", 0, 18446744073709551615ULL, "x"},
        {"18446744073709551616 x", 413, 0, NULL},
        {"99999999999999999999999 x", 413, 0, NULL},
        {"", 400, 0, NULL},
        {"5", 400, 0, NULL},
        {"5a.txt", 400, 0, NULL},
        {" 5 a", 400, 0, NULL},
        {"-5 a", 400, 0, NULL},
        {"five a", 400, 0, NULL},
        {"5\ta", 400, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct upload_request r;
        struct upload_error e = {0};
        int rc = message_parse_plain(cases[i].line, strlen(cases[i].line), &r, &e);
        if (cases[i].code == 0) {
            CHECK_MSG(rc == 0, "%s: %s", cases[i].line, e.message);
            CHECK(r.size == cases[i].size);
            CHECK_STR(r.filename, cases[i].name);
        } else {
            CHECK_MSG(rc < 0 && e.code == cases[i].code, "\"%s\" code %d", cases[i].line, e.code);
        }
    }
    struct upload_request r;
    struct upload_error e;
    CHECK(message_parse_plain("3 a\0b", 5, &r, &e) < 0 && e.code == 400);
}

static void test_dispatch(void)
{
    static const struct {
        const char *msg;
        bool line;
        enum message_type want;
        int code;
    } cases[] = {
        {"{\"type\":\"DONE\"}", false, MSG_DONE, 0},
        {" {\"type\":\"DONE\"} ", false, MSG_DONE, 0},
        {"{\"type\":\"DONE\"}", true, MSG_DONE, 0}, /* the session refuses it on raw TCP */
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1}", false, MSG_START, 0},
        {"{\"type\":\"START\",\"filename\":\"a\",\"size\":1}", true, MSG_START, 0},
        {"5 a.txt", true, MSG_START, 0},
        {"5 a.txt", false, MSG_BAD, 400}, /* no plain form on WebSocket */
        {"{\"type\":\"PING\"}", false, MSG_BAD, 400},
        {"{\"type\":\"DONE\"}{}", false, MSG_BAD, 400}, /* one object only */
        {"{\"type\":\"DONE\",\"type\":\"START\"}", false, MSG_BAD, 400},
        {"{\"type\":\"DO\\u0000NE\"}", false, MSG_BAD, 400},
        {"{}", false, MSG_BAD, 400},
        {"", true, MSG_BAD, 400},
        {"99999999999999999999999 a", true, MSG_BAD, 413},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct upload_request *r = malloc(sizeof *r);
        struct upload_error e = {0};
        enum message_type m =
            message_parse(cases[i].msg, strlen(cases[i].msg), cases[i].line, r, &e);
        CHECK_MSG(m == cases[i].want, "case %zu (%s): %d", i, cases[i].msg, m);
        if (cases[i].want == MSG_BAD) CHECK_MSG(e.code == cases[i].code, "case %zu: %d", i, e.code);
        free(r);
    }
}

static void test_server_messages(void)
{
    struct upload *u = calloc(1, sizeof *u);
    snprintf(u->id, sizeof u->id, "0123456789abcdef0123456789abcdef");
    u->received = 42;
    size_t n;
    char *m = message_ready(u, false, false, &n);
    CHECK_STR(m, "{\"type\":\"READY\",\"id\":\"0123456789abcdef0123456789abcdef\",\"offset\":42}");
    CHECK(n == strlen(m));
    free(m);
    m = message_ready(u, true, false, &n);
    CHECK_STR(m, "{\"type\":\"DATA\",\"code\":200,\"message\":\"Upload initialized. Wait for "
                 "data\",\"id\":\"0123456789abcdef0123456789abcdef\",\"offset\":42}");
    free(m);
    m = message_ready(u, true, true, &n);
    CHECK(m && strstr(m, "\"message\":\"Upload resumed\"") && strstr(m, "\"offset\":42"));
    free(m);
    char buf[160];
    int l = message_ack(u, 7, buf, sizeof buf);
    CHECK_STR(buf, "{\"type\":\"DATA\",\"code\":200,\"bytesRead\":7,\"offset\":42}");
    CHECK(l == (int)strlen(buf));
    free(u);
}

int main(void)
{
    test_parse_start();
    test_parse_plain();
    test_dispatch();
    test_server_messages();
    return test_report("test_message");
}
