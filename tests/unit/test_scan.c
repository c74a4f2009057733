/* Unit tests for the clamd reply parser (every reply form clamd and
 * intake-scand send, and the replies that must never read as clean) and for
 * the pool client against fake scanners on loopback: INSTREAM chunks stay
 * bounded and carry the whole file, an early size-limit reply is an error,
 * a refused address is marked down once and skipped. */
#define _GNU_SOURCE
#include "scan.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A fake clamd for one INSTREAM connection. */
struct fake {
    int lfd, port;
    int limit;          /* reply "size limit exceeded" after this many bytes (0: never) */
    size_t max_chunk;   /* the largest chunk seen */
    size_t total;       /* stream bytes received */
    int ok;             /* the command was zINSTREAM and the stream ended well */
};

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static void *fake_run(void *arg)
{
    struct fake *f = arg;
    int c = accept(f->lfd, NULL, NULL);
    if (c < 0) return NULL;
    char cmd[10];
    if (read_full(c, cmd, sizeof cmd) == 0 && memcmp(cmd, "zINSTREAM", 10) == 0) {
        static char buf[1 << 20];
        for (;;) {
            uint32_t be;
            if (read_full(c, &be, 4) < 0) break;
            size_t n = ntohl(be);
            if (n == 0) {
                f->ok = 1;
                send(c, "stream: OK", 11, MSG_NOSIGNAL);
                break;
            }
            if (n > f->max_chunk) f->max_chunk = n;
            if (n > sizeof buf || read_full(c, buf, n) < 0) break;
            f->total += n;
            if (f->limit && f->total > (size_t)f->limit) {
                send(c, "INSTREAM size limit exceeded. ERROR", 36, MSG_NOSIGNAL);
                break;
            }
        }
    }
    close(c);
    return NULL;
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        abort();
    *port = ntohs(sa.sin_port);
    return fd;
}

static void target(struct scan_client *sc, struct metrics *m, int port)
{
    struct scan_target *t = &sc->t[sc->n++];
    memset(t, 0, sizeof *t);
    t->addr.tcp = true;
    snprintf(t->addr.host, sizeof t->addr.host, "127.0.0.1");
    snprintf(t->addr.port, sizeof t->addr.port, "%d", port);
    snprintf(t->addr.text, sizeof t->addr.text, "tcp:127.0.0.1:%d", port);
    t->mi = metrics_scanner_index(m, t->addr.text, 1);
    m->scanner_state[t->mi] = MS_UP;
}

static void test_pool_client(void)
{
    struct metrics *m = metrics_create();
    CHECK(m != NULL);
    if (!m) return;
    char path[] = "/tmp/intake-test-scan-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    static char data[300 * 1024 + 7];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 7);
    CHECK(write(fd, data, sizeof data) == (ssize_t)sizeof data);

    /* A refused address first, then a fake clamd: clean, the refused one
     * marked down and counted as an error, the file streamed in bounded
     * chunks, all of it. */
    int dead_port, dead = listen_any(&dead_port);
    close(dead);
    struct fake f = {0};
    f.lfd = listen_any(&f.port);
    struct scan_client sc = {.timeout_ms = 5000, .shared = m, .metrics = &m->slot[0]};
    target(&sc, m, dead_port);
    target(&sc, m, f.port);
    pthread_t th;
    pthread_create(&th, NULL, fake_run, &f);
    char virus[128] = "", reason[256] = "";
    enum upload_verdict v = scan_file(&sc, fd, "u1", virus, sizeof virus, reason, sizeof reason);
    pthread_join(th, NULL);
    CHECK_MSG(v == VERDICT_CLEAN, "verdict %d: %s", (int)v, reason);
    CHECK(f.ok && f.total == sizeof data);
    CHECK_MSG(f.max_chunk > 0 && f.max_chunk <= SCAN_CHUNK, "chunk %zu", f.max_chunk);
    CHECK(m->scanner_state[sc.t[0].mi] == MS_DOWN && m->scanner_state[sc.t[1].mi] == MS_UP);
    CHECK(m->slot[0].scans[sc.t[0].mi][MSR_ERROR] == 1 && m->slot[0].scans[sc.t[1].mi][MSR_OK] == 1);

    /* clamd stops reading past StreamMaxLength and says so: verdict error,
     * never clean, and not tried elsewhere. */
    struct fake g = {0};
    g.lfd = f.lfd;
    g.port = f.port;
    g.limit = 100 * 1024;
    pthread_create(&th, NULL, fake_run, &g);
    v = scan_file(&sc, fd, "u2", virus, sizeof virus, reason, sizeof reason);
    pthread_join(th, NULL);
    CHECK_MSG(v == VERDICT_ERROR && strstr(reason, "StreamMaxLength"), "verdict %d: %s", (int)v,
              reason);
    CHECK(m->slot[0].scans[sc.t[1].mi][MSR_ERROR] == 1);

    /* Nobody answers: scanner unavailable within scan_timeout. */
    close(f.lfd);
    sc.timeout_ms = 300;
    v = scan_file(&sc, fd, "u3", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_ERROR && strcmp(reason, "scanner unavailable") == 0, "%s", reason);
    CHECK(m->scanner_state[sc.t[1].mi] == MS_DOWN);

    /* The probe: both refused. */
    bool up[2] = {true, true};
    struct scanner_addr addrs[2] = {sc.t[0].addr, sc.t[1].addr};
    scan_probe(addrs, 2, 300, up);
    CHECK(!up[0] && !up[1]);
    close(fd);
}

int main(void)
{
    struct {
        const char *reply;
        enum upload_verdict v;
        const char *virus, *reason_part;
    } cases[] = {
        {"fd[5]: OK", VERDICT_CLEAN, "", ""},
        {"stream: OK", VERDICT_CLEAN, "", ""},
        {"/a/b: c.txt: OK", VERDICT_CLEAN, "", ""},
        {"fd[5]: Eicar-Test-Signature.UNOFFICIAL FOUND", VERDICT_INFECTED,
         "Eicar-Test-Signature.UNOFFICIAL", ""},
        {"stream: Win.Test.EICAR_HDB-1 FOUND", VERDICT_INFECTED, "Win.Test.EICAR_HDB-1", ""},
        {"1: fd[9]: Eicar FOUND", VERDICT_INFECTED, "Eicar", ""},
        {"fd[5]: Heuristics.Limits.Exceeded.MaxFileSize FOUND", VERDICT_ERROR, "",
         "could not be fully scanned (Heuristics.Limits.Exceeded.MaxFileSize)"},
        {"fd[5]: Heuristics.Limits.Exceeded.MaxScanSize FOUND", VERDICT_ERROR, "",
         "could not be fully scanned"},
        {"fd[5]: Heuristics.Encrypted.Zip FOUND", VERDICT_ERROR, "",
         "encrypted and could not be scanned (Heuristics.Encrypted.Zip)"},
        {"stream: Heuristics.Encrypted.PDF FOUND", VERDICT_ERROR, "", "Heuristics.Encrypted.PDF"},
        {"3: fd[7]: Heuristics.Encrypted.RAR FOUND", VERDICT_ERROR, "", "Encrypted.RAR"},
        {"/up/x.7z: Heuristics.Encrypted.7Zip FOUND", VERDICT_ERROR, "", "encrypted"},
        {"fd[5]: Can't open file or directory ERROR", VERDICT_ERROR, "",
         "scanner error: Can't open file or directory"},
        {"INSTREAM size limit exceeded. ERROR", VERDICT_ERROR, "", "INSTREAM size limit"},
        {"UNKNOWN COMMAND", VERDICT_ERROR, "", "UNKNOWN COMMAND"},
        {"fd[5]: OK but not really", VERDICT_ERROR, "", "OK but not really"},
        {"fd[5]: ", VERDICT_ERROR, "", ""},
        {"", VERDICT_ERROR, "", ""},
        {"fd[5]: FOUND", VERDICT_ERROR, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char virus[128] = "", reason[256] = "";
        enum upload_verdict v =
            scan_parse_reply(cases[i].reply, virus, sizeof virus, reason, sizeof reason);
        CHECK_MSG(v == cases[i].v, "\"%s\": verdict %d", cases[i].reply, (int)v);
        CHECK_STR(virus, cases[i].virus);
        CHECK_MSG(strstr(reason, cases[i].reason_part) != NULL, "\"%s\": reason \"%s\"",
                  cases[i].reply, reason);
        if (v == VERDICT_ERROR) CHECK_MSG(reason[0] != '\0', "\"%s\": no reason", cases[i].reply);
    }
    test_pool_client();
    return test_report("test_scan");
}
