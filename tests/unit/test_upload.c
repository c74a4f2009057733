/* Unit tests for the upload session: START and plain header parsing with
 * hostile inputs, limits (413, 507), overrun (400), checksum (422), and the
 * whole begin/write/seal/finalize path into a temporary tree. */
#define _GNU_SOURCE
#include "log.h"
#include "test.h"
#include "upload.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
        int rc = upload_parse_start(cases[i].json, strlen(cases[i].json), &r, &e);
        if (cases[i].code == 0)
            CHECK_MSG(rc == 0, "%s: %s", cases[i].json, e.message);
        else
            CHECK_MSG(rc < 0 && e.code == cases[i].code && e.message[0], "%s", cases[i].json);
    }
    /* A NUL inside the filename is kept, with the real length. */
    const char *nul = "{\"type\":\"START\",\"filename\":\"shell.php\\u0000.jpg\",\"size\":1}";
    struct upload_request rn;
    struct upload_error en;
    CHECK(upload_parse_start(nul, strlen(nul), &rn, &en) == 0);
    CHECK(rn.filename_len == 14 && memcmp(rn.filename, "shell.php\0.jpg", 14) == 0);
    const char *esc = "{\"type\":\"START\",\"filename\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9"
                      "\\u20ac\\ud83d\\ude00\",\"size\":1}";
    CHECK(upload_parse_start(esc, strlen(esc), &rn, &en) == 0);
    CHECK(rn.filename_len == 17 &&
          memcmp(rn.filename, "\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 17) == 0);
    /* Parsing stops at len: bytes after it are not part of the object. */
    const char *s = "{\"type\":\"START\",\"filename\":\"a\",\"size\":5}garbage";
    struct upload_request r;
    struct upload_error e;
    CHECK(upload_parse_start(s, strlen(s) - 7, &r, &e) == 0);
    CHECK(r.size == 5 && strcmp(r.filename, "a") == 0);
    /* A filename over the limit is refused. */
    char *big = malloc(UPLOAD_FILENAME_MAX + 100);
    int n =
        snprintf(big, UPLOAD_FILENAME_MAX + 100, "{\"type\":\"START\",\"size\":1,\"filename\":\"");
    memset(big + n, 'x', UPLOAD_FILENAME_MAX + 1);
    strcpy(big + n + UPLOAD_FILENAME_MAX + 1, "\"}");
    CHECK(upload_parse_start(big, strlen(big), &r, &e) < 0 && e.code == 400);
    free(big);
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
        int rc = upload_parse_plain(cases[i].line, strlen(cases[i].line), &r, &e);
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
    CHECK(upload_parse_plain("3 a\0b", 5, &r, &e) < 0 && e.code == 400);
}

/* Linked with -Wl,--wrap=EVP_DigestUpdate: fails while digest_fails is set. */
static int digest_fails;
int __real_EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t n);
int __wrap_EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t n);
int __wrap_EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t n)
{
    return digest_fails ? 0 : __real_EVP_DigestUpdate(ctx, d, n);
}

static char root[64];
static struct store st;

static int begin(struct upload *u, const char *name, uint64_t size, uint64_t max,
                 const char *sha_hex, struct upload_error *e)
{
    struct upload_request r = {0};
    snprintf(r.filename, sizeof r.filename, "%s", name);
    r.filename_len = strlen(name);
    r.size = size;
    if (sha_hex) {
        r.has_sha256 = true;
        for (int i = 0; i < 32; i++) {
            unsigned v;
            sscanf(sha_hex + 2 * i, "%2x", &v);
            r.sha256[i] = (unsigned char)v;
        }
    }
    struct upload_limits lim = {.max_file_size = max};
    return upload_begin(u, &st, &lim, &r, e);
}

static int count_dir(int dfd)
{
    int n = 0;
    char cmd[128];
    (void)dfd;
    snprintf(cmd, sizeof cmd, "ls %s/accepted | wc -l", root);
    FILE *p = popen(cmd, "r");
    if (fscanf(p, "%d", &n) != 1) n = -1;
    pclose(p);
    return n;
}

static void test_session(void)
{
    snprintf(root, sizeof root, "/tmp/intake-test-upload-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    char sp[128], ac[128], q[128];
    snprintf(sp, sizeof sp, "%s/spool", root);
    snprintf(ac, sizeof ac, "%s/accepted", root);
    snprintf(q, sizeof q, "%s/quarantine", root);
    const char *which;
    CHECK(store_open(&st, sp, ac, q, &which) == 0);
    st.min_free_space = 0;
    struct upload_policy pol = {0};
    struct upload u;
    struct upload_error e;
    upload_init(&u);

    /* The happy path, in pieces, then finalize: stored, status and hash right. */
    CHECK(begin(&u, "dir/hello.txt", 11, 100, NULL, &e) == 0);
    CHECK(strlen(u.id) == 32);
    CHECK(upload_write(&u, "hello ", 6, &e) == 0);
    CHECK(!upload_complete(&u));
    CHECK(upload_write(&u, "world", 5, &e) == 0);
    CHECK(upload_complete(&u));
    CHECK(upload_hash(&u, 6) == 0 && u.hashed == 6); /* hashing may trail the writes */
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0);
    CHECK(u.verdict == VERDICT_UNSCANNED);
    CHECK_STR(u.stored, "hello.txt");
    size_t ml;
    char *msg = upload_msg_status(&u, &ml);
    CHECK(msg && ml == strlen(msg));
    cJSON *o = cJSON_Parse(msg);
    free(msg);
    CHECK(o != NULL);
    CHECK_STR(cJSON_GetObjectItem(o, "status")->valuestring, "./dir/hello.txt: OK (not scanned)");
    CHECK_STR(cJSON_GetObjectItem(o, "sha256")->valuestring,
              "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "virus")));
    CHECK(cJSON_GetObjectItem(o, "size")->valuedouble == 11);
    cJSON_Delete(o);
    CHECK(count_dir(st.accept_fd) == 1);

    /* More bytes than announced: 400, nothing accepted. */
    CHECK(begin(&u, "over.bin", 3, 100, NULL, &e) == 0);
    CHECK(upload_write(&u, "abcd", 4, &e) < 0 && e.code == 400);
    upload_abort(&u);
    /* Over max_file_size: 413 before anything is created. */
    CHECK(begin(&u, "big.bin", 101, 100, NULL, &e) < 0 && e.code == 413);
    /* Bad names: 400. */
    CHECK(begin(&u, "..", 1, 100, NULL, &e) < 0 && e.code == 400);
    CHECK(begin(&u, "bad\xff", 1, 100, NULL, &e) < 0 && e.code == 400);
    /* min_free_space: 507. */
    st.min_free_space = UINT64_MAX / 4;
    CHECK(begin(&u, "space.bin", 1, 100, NULL, &e) < 0 && e.code == 507);
    st.min_free_space = 0;
    char part[64];
    /* Checksum: mismatch is 422 and nothing is accepted; a match is accepted. */
    CHECK(begin(&u, "sum.txt", 3, 100,
                "0000000000000000000000000000000000000000000000000000000000000000", &e) == 0);
    CHECK(upload_write(&u, "abc", 3, &e) == 0);
    snprintf(part, sizeof part, "%s.part", u.id);
    CHECK(upload_finalize(&u, &st, &pol, &e) < 0 && e.code == 422);
    CHECK(faccessat(st.spool_fd, part, F_OK, 0) < 0);
    CHECK(u.stored[0] == '\0');
    upload_release(&u);
    CHECK(begin(&u, "sum.txt", 3, 100,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &e) == 0);
    CHECK(upload_write(&u, "abc", 3, &e) == 0);
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0);
    CHECK_STR(u.stored, "sum.txt");
    CHECK(count_dir(st.accept_fd) == 2);
    /* An interrupted upload stays in the spool, never in accept. */
    CHECK(begin(&u, "cut.bin", 10, 100, NULL, &e) == 0);
    CHECK(upload_write(&u, "12345", 5, &e) == 0);
    snprintf(part, sizeof part, "%s.part", u.id);
    upload_abort(&u);
    struct stat sb;
    CHECK(fstatat(st.spool_fd, part, &sb, 0) == 0 && sb.st_size == 5);
    CHECK(count_dir(st.accept_fd) == 2);
    /* SHA-256 fails (issue 10, item 16): no digest is made up; verdict
     * error, nothing accepted. */
    CHECK(begin(&u, "nohash.bin", 3, 100, NULL, &e) == 0);
    CHECK(upload_write(&u, "abc", 3, &e) == 0);
    digest_fails = 1;
    CHECK(upload_hash(&u, 3) < 0 && u.hashed == 0);
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0 && u.verdict == VERDICT_ERROR);
    CHECK(u.stored[0] == '\0');
    digest_fails = 0;
    CHECK(count_dir(st.accept_fd) == 2);
    /* Bytes moved from a pipe (splice) count like written ones. */
    int pf[2];
    CHECK(pipe(pf) == 0);
    CHECK(begin(&u, "spliced.bin", 10, 100, NULL, &e) == 0);
    CHECK(write(pf[1], "0123456789", 10) == 10);
    CHECK(upload_splice(&u, pf[0], 6, &e) == 0 && u.received == 6);
    CHECK(upload_splice(&u, pf[0], 5, &e) < 0 && e.code == 400); /* past the size */
    CHECK(upload_splice(&u, pf[0], 4, &e) == 0 && upload_complete(&u));
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0);
    CHECK(memcmp(u.digest, "\x84\xd8\x98\x77", 4) == 0); /* sha256("0123456789") */
    close(pf[0]);
    close(pf[1]);
    /* ERROR and READY messages. */
    struct upload_error ee = {.code = 413, .message = "too \"big\""};
    msg = upload_msg_error(&ee, &ml);
    CHECK_STR(msg, "{\"type\":\"ERROR\",\"code\":413,\"message\":\"too \\\"big\\\"\"}");
    free(msg);
    /* A message cut in the middle of a character is still UTF-8 (a WebSocket
     * text frame must be). */
    struct upload_error eu = {.code = 400, .message = "type \"\xe2\x82\" bad \x01"};
    msg = upload_msg_error(&eu, &ml);
    CHECK_STR(
        msg,
        "{\"type\":\"ERROR\",\"code\":400,\"message\":\"type \\\"\xef\xbf\xbd\xef\xbf\xbd\\\" bad "
        "\\u0001\"}");
    free(msg);

    /* STATUS echoes the client's whole name, NULs included (item 1), and is
     * sized from its content: a long name of control characters sanitizes to
     * a short one but is escaped six-fold, twice (item 9). */
    struct upload_request rq = {.size = 1};
    memcpy(rq.filename, "shell.php\0.jpg", 14);
    rq.filename_len = 14;
    struct upload_limits lim = {.max_file_size = 100};
    CHECK(upload_begin(&u, &st, &lim, &rq, &e) == 0);
    CHECK(upload_write(&u, "x", 1, &e) == 0);
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0);
    CHECK_STR(u.stored, "shell.php.jpg");
    CHECK_STR(u.logname, "shell.php\\x00.jpg");
    msg = upload_msg_status(&u, &ml);
    CHECK(msg && strstr(msg, "\"filename\":\"shell.php\\u0000.jpg\"") &&
          strstr(msg, "\"status\":\"./shell.php\\u0000.jpg: OK (not scanned)\""));
    free(msg);
    rq.filename[0] = 'a';
    memset(rq.filename + 1, 1, UPLOAD_FILENAME_MAX - 1);
    rq.filename_len = UPLOAD_FILENAME_MAX;
    CHECK(upload_begin(&u, &st, &lim, &rq, &e) == 0);
    CHECK(upload_write(&u, "x", 1, &e) == 0);
    CHECK(upload_finalize(&u, &st, &pol, &e) == 0);
    CHECK_STR(u.stored, "a");
    CHECK(strlen(u.logname) <= UPLOAD_LOGNAME_MAX && strstr(u.logname, "...") != NULL);
    msg = upload_msg_status(&u, &ml);
    CHECK(msg && ml > 2 * 6 * (UPLOAD_FILENAME_MAX - 1));
    o = msg ? cJSON_Parse(msg) : NULL;
    CHECK(o && strlen(cJSON_GetObjectItem(o, "filename")->valuestring) == UPLOAD_FILENAME_MAX);
    cJSON_Delete(o);
    free(msg);
    store_close(&st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    log_open("stderr", LOG_ERROR);
    test_parse_start();
    test_parse_plain();
    test_session();
    return test_report("test_upload");
}
