/* Unit tests for config: value parsers, the tokenizer, and whole files with
 * every directive, good and bad, checked for their file:line messages. */
#define _GNU_SOURCE
#include "config.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64], secret_path[64];

/* Writes the secret file with len bytes of text and the given mode. */
static void write_secret(const char *text, size_t len, mode_t mode)
{
    FILE *f = fopen(secret_path, "w");
    fwrite(text, 1, len, f);
    fclose(f);
    chmod(secret_path, mode);
}

static struct config *load_bytes(const char *text, size_t len, char *err, size_t el)
{
    FILE *f = fopen(path, "w");
    fwrite(text, 1, len, f);
    fclose(f);
    return config_load(path, NULL, 0, "/base", err, el);
}

static struct config *load(const char *text, char *const *ov, int nov, char *err, size_t el)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return config_load(path, ov, nov, "/base", err, el);
}

/* Loads len bytes of text and expects it to fail with "PATH:LINE:
 * ...fragment...". */
static void expect_error_bytes(const char *text, size_t len, int line, const char *fragment)
{
    char err[1024] = "";
    struct config *c = load_bytes(text, len, err, sizeof err);
    CHECK_MSG(c == NULL, "accepted: %s", text);
    config_free(c);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    CHECK_MSG(strncmp(err, prefix, strlen(prefix)) == 0, "%s: error \"%s\" lacks \"%s\"", text, err,
              prefix);
    CHECK_MSG(strstr(err, fragment) != NULL, "%s: error \"%s\" lacks \"%s\"", text, err, fragment);
}

static void expect_error(const char *text, int line, const char *fragment)
{
    expect_error_bytes(text, strlen(text), line, fragment);
}

/* Lines: NUL bytes, the length limit, no final newline; relations between
 * values name a line; a user that does not exist (as root). */
static void test_lines(void)
{
    expect_error_bytes("workers 2\n\0\n", 12, 2, "NUL byte in line");
    expect_error_bytes("workers 2\nworkers\0 3\n", 20, 2, "NUL byte in line");
    static char big[4200];
    memset(big, '#', 4097);
    big[4097] = '\n';
    expect_error(big, 1, "line longer than 4096 bytes");
    big[4096] = '\n'; /* 4096 bytes and the newline: fits */
    big[4097] = '\0';
    char err[1024] = "";
    struct config *c = load(big, NULL, 0, err, sizeof err);
    CHECK_MSG(c != NULL, "a 4096-byte line: %s", err);
    config_free(c);
    c = load("workers 3", NULL, 0, err, sizeof err); /* no final newline */
    CHECK(c && c->workers == 3);
    config_free(c);
    expect_error("workers 1\nresume_timeout 10s\n", 2, "must be longer than idle_timeout");
    expect_error("idle_timeout 2h\n", 1, "must be longer than idle_timeout");
    expect_error("accept_hook /h\n\nhook_timeout 40m\n", 3, "twice hook_timeout");
    if (geteuid() == 0) {
        expect_error("workers 1\nuser no-such-user-here\n", 2, "\"no-such-user-here\" does not exist");
        c = load("user root\n", NULL, 0, err, sizeof err);
        CHECK_MSG(c != NULL, "user root: %s", err);
        config_free(c);
    }
}

/* Loads text and runs config_check_paths: with line 0 it must pass; else it
 * must fail with "PATH:LINE: what ...fragment..." (line -1: "PATH: what",
 * a default, set on no line). */
static void check_paths(const char *text, int line, const char *what, const char *fragment)
{
    char err[1024] = "", want[256];
    struct config *c = load(text, NULL, 0, err, sizeof err);
    CHECK_MSG(c != NULL, "%s: %s", text, err);
    if (!c) return;
    int rc = config_check_paths(c, err, sizeof err);
    config_free(c);
    if (line == 0) {
        CHECK_MSG(rc == 0, "%s: %s", text, err);
        return;
    }
    if (line > 0)
        snprintf(want, sizeof want, "%s:%d: %s ", path, line, what);
    else
        snprintf(want, sizeof want, "%s: %s ", path, what);
    CHECK_MSG(rc < 0 && strncmp(err, want, strlen(want)) == 0 && strstr(err, fragment),
              "%s: \"%s\" (wanted \"%s...%s\")", text, err, want, fragment);
}

/* What only opening can check: the log files, signature_dir (builtin). */
static void test_paths(void)
{
    char dir[64], t[512], f[600];
    snprintf(dir, sizeof dir, "/tmp/intake-test-paths-%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(t, sizeof t, "scanner off\naccess_log %s/a.log\n", dir);
    check_paths(t, 0, NULL, NULL);
    snprintf(f, sizeof f, "%s/a.log", dir);
    CHECK(access(f, F_OK) == 0); /* created, as nginx -t does */
    snprintf(t, sizeof t, "scanner off\n\naccess_log %s/no/such/dir/a.log\n", dir);
    check_paths(t, 3, "access_log", "cannot open");
    snprintf(t, sizeof t, "scanner off\nerror_log %s/no/e.log\n", dir);
    check_paths(t, 2, "error_log", "cannot open");
    /* A FIFO (no reader) is not opened, which would block: its permission
     * is what counts. */
    snprintf(f, sizeof f, "%s/fifo", dir);
    CHECK(mkfifo(f, 0600) == 0);
    snprintf(t, sizeof t, "scanner off\naccess_log %s/fifo\nerror_log %s/fifo\n", dir, dir);
    check_paths(t, 0, NULL, NULL);
    /* signature_dir: missing, a file, and fine; off needs none; the default
     * (relative to the start directory) is named with the file. */
    snprintf(t, sizeof t, "signature_dir %s/none\n", dir);
    check_paths(t, 1, "signature_dir", "No such file");
    snprintf(t, sizeof t, "signature_dir %s/a.log\n", dir);
    check_paths(t, 1, "signature_dir", "not a directory");
    snprintf(t, sizeof t, "signature_dir %s\n", dir);
    check_paths(t, 0, NULL, NULL);
    check_paths("workers 1\n", -1, "signature_dir", "/base/etc/signatures: ");
    check_paths("scanner off\n", 0, NULL, NULL);
    snprintf(t, sizeof t, "rm -rf %s", dir);
    CHECK(system(t) == 0);
}

static void test_values(void)
{
    struct {
        const char *s;
        int ok;
        uint64_t v;
    } sizes[] = {{"0", 1, 0},
                 {"10", 1, 10},
                 {"4K", 1, 4096},
                 {"4k", 1, 4096},
                 {"1M", 1, 1 << 20},
                 {"2G", 1, 2ULL << 30},
                 {"", 0, 0},
                 {"K", 0, 0},
                 {"-1", 0, 0},
                 {"1.5M", 0, 0},
                 {"1T", 0, 0},
                 {"1MB", 0, 0},
                 {" 1", 0, 0},
                 {"99999999999999999999", 0, 0},
                 {"17179869184G", 0, 0}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint64_t v = 12345;
        int rc = config_parse_size(sizes[i].s, &v);
        CHECK_MSG((rc == 0) == sizes[i].ok, "size \"%s\"", sizes[i].s);
        if (sizes[i].ok)
            CHECK_MSG(v == sizes[i].v, "size \"%s\" = %llu", sizes[i].s, (unsigned long long)v);
    }
    struct {
        const char *s;
        int ok;
        uint64_t ms;
    } durs[] = {{"10", 1, 10000},  {"10s", 1, 10000},  {"500ms", 1, 500},
                {"5m", 1, 300000}, {"1h", 1, 3600000}, {"", 0, 0},
                {"s", 0, 0},       {"1d", 0, 0},       {"-5s", 0, 0},
                {"1.5s", 0, 0},    {"10 s", 0, 0},     {"99999999999999999h", 0, 0}};
    for (size_t i = 0; i < sizeof durs / sizeof *durs; i++) {
        uint64_t v = 0;
        int rc = config_parse_duration(durs[i].s, &v);
        CHECK_MSG((rc == 0) == durs[i].ok, "duration \"%s\"", durs[i].s);
        if (durs[i].ok) CHECK(v == durs[i].ms);
    }
    struct {
        const char *s;
        int ok;
        const char *host, *port;
        int is_unix;
    } addrs[] = {{"127.0.0.1:8080", 1, "127.0.0.1", "8080", 0},
                 {"[::1]:9090", 1, "::1", "9090", 0},
                 {"*:80", 1, "", "80", 0},
                 {"localhost:1", 1, "localhost", "1", 0},
                 {"unix:/run/x.sock", 1, "", "", 1},
                 {"127.0.0.1", 0, "", "", 0},
                 {"127.0.0.1:0", 0, "", "", 0},
                 {"127.0.0.1:65536", 0, "", "", 0},
                 {"127.0.0.1:80x", 0, "", "", 0},
                 {"::1:80", 0, "", "", 0},
                 {"[::1]80", 0, "", "", 0},
                 {"[]:80", 0, "", "", 0},
                 {"unix:", 0, "", "", 0}};
    for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
        struct listen_addr a;
        const char *why = "";
        int rc = config_parse_listen(addrs[i].s, &a, &why);
        CHECK_MSG((rc == 0) == addrs[i].ok, "listen \"%s\"", addrs[i].s);
        if (rc == 0 && !addrs[i].is_unix) {
            CHECK_STR(a.host, addrs[i].host);
            CHECK_STR(a.port, addrs[i].port);
        }
        if (rc == 0) CHECK(a.is_unix == addrs[i].is_unix);
    }
}

static void test_tokenize(void)
{
    struct {
        const char *line;
        int n;
        const char *t0, *t1;
    } cases[] = {{"workers 2", 2, "workers", "2"},
                 {"  listen_ws\t127.0.0.1:1  tls  # comment", 3, "listen_ws", "127.0.0.1:1"},
                 {"# only a comment", 0, NULL, NULL},
                 {"", 0, NULL, NULL},
                 {"spool_dir \"/path with spaces/x\"", 2, "spool_dir", "/path with spaces/x"},
                 {"a \"unterminated", -1, NULL, NULL},
                 {"a \"x\"y", -1, NULL, NULL},
                 {"a b\"c", -1, NULL, NULL},
                 {"a \x01", -1, NULL, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char scratch[256];
        char *tok[8];
        const char *why = "";
        int n = config_tokenize(cases[i].line, strlen(cases[i].line), scratch, sizeof scratch, tok,
                                8, &why);
        CHECK_MSG(n == cases[i].n, "tokenize \"%s\" = %d (%s)", cases[i].line, n, why);
        if (n >= 2) {
            CHECK_STR(tok[0], cases[i].t0);
            CHECK_STR(tok[1], cases[i].t1);
        }
    }
    char scratch[8];
    char *tok[8];
    const char *why = "";
    CHECK(config_tokenize("abcdefghijkl", 12, scratch, sizeof scratch, tok, 8, &why) == -1);
    CHECK(config_tokenize("a b c d e f g h i", 17, scratch, 64, tok, 4, &why) == -1);
}

/* auth_secret_file: modes, line rules, limits; the error names the
 * directive's line and never a secret's bytes. */
static void test_secret_file(void)
{
    static const char k1[] = "first-secret-first-secret-first-secret";
    static const char k2[] = "second-secret-second-secret-0002";
    struct {
        const char *text;
        mode_t mode;
        int n;            /* secrets, or -1 for an error */
        const char *frag; /* in the error */
    } cases[] = {
        {"first-secret-first-secret-first-secret\n", 0600, 1, NULL},
        {"first-secret-first-secret-first-secret", 0400, 1, NULL}, /* no final newline */
        {"first-secret-first-secret-first-secret\r\nsecond-secret-second-secret-0002\r\n", 0600, 2,
         NULL},
        {"\n\nfirst-secret-first-secret-first-secret\n\r\n\nsecond-secret-second-secret-0002\n",
         0600, 2, NULL},
        {"first-secret-first-secret-first-secret\n", 0640, -1, "group or others"},
        {"first-secret-first-secret-first-secret\n", 0604, -1, "(mode 0604)"},
        {"first-secret-first-secret-first-secret\n", 0602, -1, "(mode 0602)"},
        {"first-secret-first-secret-first-secret\n", 0610, -1, "(mode 0610)"},
        {"0123456789abcdef0123456789abcde\n", 0600, -1, "line 1: a secret of 31 bytes"},
        {"first-secret-first-secret-first-secret\nshort\n", 0600, -1, "line 2: a secret of 5"},
        {"first-secret-first-secret-first-secret\n\n0123456789abcdef0123456789abcde\r\n", 0600, -1,
         "line 3: a secret of 31"},
        {"", 0600, -1, "holds no secret"},
        {"\n\r\n\n", 0600, -1, "holds no secret"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct config_secrets s;
        char why[256] = "";
        write_secret(cases[i].text, strlen(cases[i].text), cases[i].mode);
        int rc = config_read_secrets(secret_path, &s, why, sizeof why);
        if (cases[i].n >= 0) {
            CHECK_MSG(rc == 0 && s.n == cases[i].n, "case %zu: %s", i, why);
            if (rc == 0) {
                CHECK(s.keys[0].len == strlen(k1) && memcmp(s.keys[0].bytes, k1, strlen(k1)) == 0);
                if (s.n == 2)
                    CHECK(s.keys[1].len == strlen(k2) &&
                          memcmp(s.keys[1].bytes, k2, strlen(k2)) == 0);
            }
            config_secrets_free(&s);
            CHECK(s.buf == NULL && s.n == 0);
        } else {
            CHECK_MSG(rc < 0 && strstr(why, cases[i].frag), "case %zu: \"%s\"", i, why);
            CHECK(!strstr(why, "secret-first") && !strstr(why, "0123456789"));
        }
    }
    /* 64 secrets are fine, 65 are not; the file may not exceed 64 KiB. */
    static char many[80 * 66];
    size_t len = 0;
    for (int i = 0; i < 65; i++)
        len += (size_t)snprintf(many + len, sizeof many - len,
                                "secret-number-%02d-padded-to-32-bytes\n", i);
    struct config_secrets s;
    char why[256];
    write_secret(many, len - 36, 0600); /* each line is 36 bytes */
    CHECK(config_read_secrets(secret_path, &s, why, sizeof why) == 0 && s.n == 64);
    config_secrets_free(&s);
    write_secret(many, len, 0600);
    CHECK(config_read_secrets(secret_path, &s, why, sizeof why) < 0 && strstr(why, "more than 64"));
    static char big[CONFIG_SECRET_FILE_MAX + 1];
    memset(big, 'k', sizeof big);
    write_secret(big, CONFIG_SECRET_FILE_MAX, 0600);
    CHECK(config_read_secrets(secret_path, &s, why, sizeof why) == 0 && s.n == 1 &&
          s.keys[0].len == CONFIG_SECRET_FILE_MAX);
    config_secrets_free(&s);
    write_secret(big, sizeof big, 0600);
    CHECK(config_read_secrets(secret_path, &s, why, sizeof why) < 0 && strstr(why, "larger than"));
    CHECK(config_read_secrets("/", &s, why, sizeof why) < 0 && strstr(why, "not a regular file"));
    CHECK(config_read_secrets("/nonexistent", &s, why, sizeof why) < 0 &&
          strstr(why, "cannot open"));

    /* Through config_load: the error names the directive's line. */
    char err[1024], text[256];
    write_secret("short\n", 6, 0600);
    snprintf(text, sizeof text, "workers 1\nauth_secret_file %s\n", secret_path);
    expect_error(text, 2, "a secret of 5 bytes");
    write_secret(k1, strlen(k1), 0644);
    expect_error(text, 2, "(mode 0644)");
    write_secret(k1, strlen(k1), 0600);
    struct config *c = load(text, NULL, 0, err, sizeof err);
    CHECK_MSG(c && c->auth.n == 1, "%s", err);
    config_free(c);
    unlink(secret_path);
    expect_error(text, 2, "cannot open");
}

static void test_files(void)
{
    char err[1024];
    /* Defaults. */
    struct config *c = load("# nothing\n", NULL, 0, err, sizeof err);
    CHECK_MSG(c != NULL, "%s", err);
    if (c) {
        CHECK(c->workers == 0);
        CHECK(c->n_listen == 2);
        CHECK(c->max_file_size == 1ULL << 30);
        CHECK(c->min_free_space == 64ULL << 20);
        CHECK(c->header_timeout_ms == 10000 && c->idle_timeout_ms == 60000);
        CHECK(c->shutdown_timeout_ms == 30000 && c->resume_timeout_ms == 3600000);
        CHECK(c->scanner == SCANNER_BUILTIN && c->scan_fail == SCAN_FAIL_REJECT);
        CHECK(c->max_connections == 10000);
        CHECK(c->allow_same_origin && !c->allow_any_origin && c->n_allowed_origins == 0);
        CHECK(c->n_trusted_proxies == 2 && c->auth_secret_file == NULL && c->auth.n == 0);
        CHECK_STR(c->spool_dir, "/base/var/spool");
        CHECK_STR(c->pid_file, "/base/run/intaked.pid");
        CHECK(!c->daemon && !c->ws_echo && c->access_log == NULL);
    }
    config_free(c);
    /* Every directive at once. */
    write_secret("0123456789abcdef0123456789abcdef\n", 33, 0600);
    char all[2048];
    snprintf(all, sizeof all,
             "workers 3\nlisten_ws [::1]:8081\nlisten_ws unix:sock/ws.sock\nlisten_tcp off\n"
             "tls_certificate /c.pem\ntls_certificate_key k.pem\nuser nobody\ndaemon on\n"
             "pid_file /run/x.pid\nerror_log logs/e.log\nlog_level debug\naccess_log a.log\n"
             "spool_dir /s\naccept_dir /a\nquarantine_dir /q\nmax_file_size 10M\n"
             "min_free_space 0\nresume_timeout 2h\nscanner unix:/run/clamd.sock\n"
             "scanner_socket s.sock\nsignature_dir /sig\nscan_timeout 500ms\nscan_fail accept\n"
             "on_infected delete\nmax_connections 7\nheader_timeout 1s\nidle_timeout 2m\n"
             "shutdown_timeout 0\nallowed_origins https://a.example http://b.example\n"
             "trusted_proxies 10.0.0.0/8 ::1 192.168.1.1\nauth_secret_file %s\nws_echo on\n",
             secret_path);
    c = load(all, NULL, 0, err, sizeof err);
    CHECK_MSG(c != NULL, "%s", err);
    if (c) {
        CHECK(c->workers == 3);
        CHECK(c->n_listen == 2); /* two ws, tcp off */
        CHECK(c->listen[1].is_unix);
        CHECK_STR(c->listen[1].path, "/base/sock/ws.sock");
        CHECK_STR(c->tls_certificate_key, "/base/k.pem");
        CHECK(c->daemon && c->ws_echo);
        CHECK_STR(c->error_log, "/base/logs/e.log");
        CHECK(c->max_file_size == 10 << 20 && c->min_free_space == 0);
        CHECK(c->scanner == SCANNER_POOL && c->n_scanners == 1 && !c->scanners[0].tcp);
        CHECK_STR(c->scanners[0].path, "/run/clamd.sock");
        CHECK_STR(c->scanners[0].text, "unix:/run/clamd.sock");
        CHECK(c->scan_timeout_ms == 500 && c->scan_fail == SCAN_FAIL_ACCEPT);
        CHECK(c->on_infected == ON_INFECTED_DELETE && c->max_connections == 7);
        CHECK(!c->allow_any_origin && !c->allow_same_origin && c->n_allowed_origins == 2);
        CHECK(c->auth.n == 1 && c->auth.keys[0].len == 32 &&
              memcmp(c->auth.keys[0].bytes, "0123456789abcdef", 16) == 0);
        CHECK(c->n_trusted_proxies == 3);
    }
    config_free(c);
    /* -o replaces a repeatable directive and overrides a single one. */
    char *ov[] = {"listen_tcp=127.0.0.1:7000", "workers=1", "listen_tcp=127.0.0.1:7001"};
    c = load("workers 4\nlisten_tcp 127.0.0.1:9000\nlisten_tcp 127.0.0.1:9001\n", ov, 3, err,
             sizeof err);
    CHECK_MSG(c != NULL, "%s", err);
    if (c) {
        CHECK(c->workers == 1);
        int tcp = 0;
        for (int i = 0; i < c->n_listen; i++)
            if (c->listen[i].kind == LISTEN_TCP) {
                tcp++;
                CHECK(strcmp(c->listen[i].port, "7000") == 0 ||
                      strcmp(c->listen[i].port, "7001") == 0);
            }
        CHECK(tcp == 2);
    }
    config_free(c);
    char *bad_ov[] = {"workers"};
    c = load("", bad_ov, 1, err, sizeof err);
    CHECK(c == NULL && strstr(err, "-o workers") && strstr(err, "NAME=VALUE"));
    char *bad_ov2[] = {"nosuch=1"};
    c = load("", bad_ov2, 1, err, sizeof err);
    CHECK(c == NULL && strstr(err, "unknown directive"));

    /* Delivery. */
    c = load("accept_hook hooks/ship \"two words\" x\nhook_timeout 5s\naccept_dir off\n"
             "publish nats://a:4222,nats://b:4223 uploads.done\nnode_name gw-1\n",
             NULL, 0, err, sizeof err);
    CHECK_MSG(c != NULL, "%s", err);
    if (c) {
        CHECK(c->n_accept_hook == 3 && c->accept_hook[3] == NULL);
        CHECK_STR(c->accept_hook[0], "/base/hooks/ship");
        CHECK_STR(c->accept_hook[1], "two words");
        CHECK(c->hook_timeout_ms == 5000 && c->accept_dir == NULL);
        CHECK_STR(c->publish_urls, "nats://a:4222,nats://b:4223");
        CHECK_STR(c->publish_subject, "uploads.done");
        CHECK_STR(c->node_name, "gw-1");
    }
    config_free(c);
    c = load("accept_hook rclone-copy dav:x\n", NULL, 0, err, sizeof err);
    CHECK(c && strcmp(c->accept_hook[0], "rclone-copy") == 0); /* from PATH */
    CHECK(c && c->hook_timeout_ms == 60000 && c->publish_urls == NULL && c->node_name[0]);
    config_free(c);
    expect_error("accept_dir off\n", 1, "needs accept_hook");
    expect_error("accept_hook /h\naccept_dir off\nscan_fail accept\n", 2, "cannot be combined");
    expect_error("accept_hook\n", 1, "needs a program");
    expect_error("hook_timeout 10ms\n", 1, "at least 100 ms");
    expect_error("publish nats://a:4222\n", 1, "server list and a subject");
    expect_error("publish http://a:4222 s\n", 1, "invalid NATS server");
    expect_error("publish nats://a s\n", 1, "invalid NATS server");
    expect_error("publish nats://a:99999 s\n", 1, "invalid NATS server");
    expect_error("publish nats://a:1 up.*\n", 1, "invalid publish subject");
    expect_error("publish nats://a:1 up..x\n", 1, "invalid publish subject");
    expect_error("node_name \"a b\"\n", 1, "node_name may hold only");
    c = load("accept_hook /h\nresume_timeout 100s\nhook_timeout 60s\n", NULL, 0, err, sizeof err);
    CHECK(c == NULL && strstr(err, "twice hook_timeout"));
    expect_error("workers 2\n\nbogus 1\n", 3, "unknown directive \"bogus\"");
    expect_error("workers 0\n", 1, "invalid workers");
    expect_error("workers two\n", 1, "invalid workers");
    expect_error("workers 1\nworkers 2\n", 2, "duplicate");
    expect_error("workers\n", 1, "exactly one value");
    expect_error("listen_ws 127.0.0.1\n", 1, "invalid address");
    expect_error("listen_ws 127.0.0.1:1 ssl\n", 1, "only \"tls\"");
    expect_error("listen_ws 127.0.0.1:1\nlisten_tcp 127.0.0.1:1\n", 2, "already used");
    expect_error("listen_tcp 127.0.0.1:1 tls\n", 1, "tls_certificate");
    expect_error("daemon yes\n", 1, "(off or on)");
    expect_error("scanner_socket /very/long/path/that/goes/on/and/on/and/on/for/quite/a/while/"
                 "until/it/cannot/fit/in/sun_path.sock\n",
                 1, "longer than 96 bytes");
    expect_error("log_level verbose\n", 1, "invalid log_level");
    expect_error("max_file_size 1T\n", 1, "invalid size");
    expect_error("max_file_size 0\n", 1, "more than 0");
    expect_error("min_free_space lots\n", 1, "invalid size");
    expect_error("header_timeout 10d\n", 1, "invalid duration");
    expect_error("idle_timeout 1ms\n", 1, "at least");
    {
        c = load("resume_timeout 30s\n", NULL, 0, err, sizeof err);
        CHECK(c == NULL && strstr(err, "resume_timeout (30000 ms) must be longer than "
                                       "idle_timeout (60000 ms) and scan_timeout"));
        c = load("resume_timeout 2m\nscan_timeout 5m\n", NULL, 0, err, sizeof err);
        CHECK(c == NULL && strstr(err, "scan_timeout"));
        c = load("resume_timeout 2s\nidle_timeout 1s\nscanner off\n", NULL, 0, err, sizeof err);
        CHECK_MSG(c != NULL, "%s", err);
        config_free(c);
    }
    expect_error("scanner clamd\n", 1, "invalid scanner");
    expect_error("workers 1\nscanner tcp:127.0.0.1\n", 2, "invalid scanner \"tcp:127.0.0.1\"");
    expect_error("scanner unix:/a tcp:h:0\n", 1, "invalid scanner \"tcp:h:0\": bad port");
    expect_error("scanner tcp::3310\n", 1, "invalid scanner");
    expect_error("scanner tcp:*:3310\n", 1, "with a host");
    expect_error("scanner tcp:a/b:1\n", 1, "bad character in host");
    expect_error("scanner tcp:h:1 builtin\n", 1, "invalid scanner \"builtin\"");
    expect_error("scanner builtin tcp:h:1\n", 1, "scanner builtin takes no addresses");
    expect_error("scanner off unix:/a\n", 1, "scanner off takes no addresses");
    expect_error("scanner\n", 1, "needs a value");
    expect_error("scanner tcp:h:1 unix:/a tcp:h:1\n", 1, "tcp:h:1 is given twice");
    expect_error("scanner unix: \n", 1, "empty unix socket path");
    expect_error("scanner unix:/1 unix:/2 unix:/3 unix:/4 unix:/5 unix:/6 unix:/7 unix:/8 "
                 "unix:/9\n",
                 1, "at most 8 scanner addresses");
    expect_error("node_name \"a b\"\n", 1, "node_name may hold only");
    expect_error("node_name a/b\n", 1, "node_name may hold only");
    expect_error("node_name \"\"\n", 1, "1 to 64 bytes");
    expect_error("node_name a b\n", 1, "exactly one value");
    {
        c = load("scanner unix:run/c.sock tcp:clamd.example:3310 tcp:[::1]:3311 "
                 "tcp:10.0.0.7:03310\nnode_name gw-1.example\n",
                 NULL, 0, err, sizeof err);
        CHECK_MSG(c != NULL, "%s", err);
        if (c) {
            CHECK(c->scanner == SCANNER_POOL && c->n_scanners == 4);
            CHECK_STR(c->scanners[0].text, "unix:/base/run/c.sock");
            CHECK(c->scanners[1].tcp && strcmp(c->scanners[1].host, "clamd.example") == 0 &&
                  strcmp(c->scanners[1].port, "3310") == 0);
            CHECK_STR(c->scanners[1].text, "tcp:clamd.example:3310");
            CHECK_STR(c->scanners[2].host, "::1");
            CHECK_STR(c->scanners[2].text, "tcp:[::1]:3311");
            CHECK_STR(c->scanners[3].text, "tcp:10.0.0.7:3310");
            CHECK_STR(c->node_name, "gw-1.example");
        }
        config_free(c);
        /* builtin: the one address is scanner_socket; off: none. */
        c = load("scanner_socket s.sock\n", NULL, 0, err, sizeof err);
        CHECK(c && c->scanner == SCANNER_BUILTIN && c->n_scanners == 1 &&
              strcmp(c->scanners[0].text, "unix:/base/s.sock") == 0);
        CHECK(c && c->node_name && c->node_name[0]); /* the host name */
        config_free(c);
        c = load("scanner tcp:h:1\nscanner off\n", NULL, 0, err, sizeof err);
        CHECK(c == NULL && strstr(err, "duplicate"));
        char *ov_off[] = {"scanner=off"};
        c = load("scanner tcp:h:1\n", ov_off, 1, err, sizeof err);
        CHECK(c && c->scanner == SCANNER_OFF && c->n_scanners == 0);
        config_free(c);
    }
    expect_error("scan_fail maybe\n", 1, "reject or accept");
    expect_error("on_infected keep\n", 1, "quarantine or delete");
    expect_error("max_connections 0\n", 1, "max_connections");
    expect_error("allowed_origins example.com\n", 1, "invalid origin");
    expect_error("allowed_origins https://example.com/\n", 1, "invalid origin");
    expect_error("allowed_origins same https://a.example:0\n", 1, "invalid origin");
    expect_error("allowed_origins\n", 1, "at least one value");
    {
        c = load("allowed_origins same https://A.example:8443 null\n", NULL, 0, err, sizeof err);
        CHECK_MSG(c && c->allow_same_origin && !c->allow_any_origin && c->n_allowed_origins == 2,
                  "%s", err);
        config_free(c);
        c = load("allowed_origins *\n", NULL, 0, err, sizeof err);
        CHECK(c && c->allow_any_origin && !c->allow_same_origin && c->n_allowed_origins == 0);
        config_free(c);
        c = load("allowed_origins https://a.example\n", NULL, 0, err, sizeof err);
        CHECK(c && !c->allow_any_origin && !c->allow_same_origin && c->n_allowed_origins == 1);
        config_free(c);
    }
    expect_error("trusted_proxies 10.0.0.0/33\n", 1, "invalid proxy");
    expect_error("trusted_proxies not-an-ip\n", 1, "invalid proxy");
    expect_error("ws_echo\n", 1, "exactly one value");
    expect_error("spool_dir \"unterminated\n", 1, "unterminated quote");
    static char longline[5000];
    memset(longline, 'a', sizeof longline - 2);
    longline[sizeof longline - 2] = '\n';
    expect_error(longline, 1, "longer than");

    test_secret_file();

    c = config_load("/nonexistent/intake.conf", NULL, 0, "/", err, sizeof err);
    CHECK(c == NULL && strstr(err, "/nonexistent/intake.conf: cannot open"));
    /* Relative to the root directory: one slash, not "//nonexistent". */
    c = config_load("nonexistent/intake.conf", NULL, 0, "/", err, sizeof err);
    CHECK(c == NULL && strncmp(err, "/nonexistent/intake.conf: cannot open", 37) == 0);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/intake-test-config-%d.conf", (int)getpid());
    snprintf(secret_path, sizeof secret_path, "/tmp/intake-test-secret-%d", (int)getpid());
    test_values();
    test_tokenize();
    test_files();
    test_lines();
    test_paths();
    unlink(path);
    unlink(secret_path);
    return test_report("test_config");
}
