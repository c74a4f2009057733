/* Unit tests for the clamd reply parser (every reply form clamd and
 * intake-scand send, and the replies that must never read as clean) and for
 * the pool client against a fake clamd on loopback that speaks sessions
 * (IDSESSION, INSTREAM, "N: " replies): one session carries scan after
 * scan; INSTREAM chunks stay bounded and carry the whole file; a session the
 * scanner closed is reopened; one that dies with a file is retried once on
 * a new session; a reply with the wrong request number, or an early
 * size-limit reply, is an error and closes the session; a refused address
 * is marked down once and skipped. */
#define _GNU_SOURCE
#include "scan.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A fake clamd on loopback TCP, one connection at a time (the client under
 * test makes one scan at a time). Requests are numbered across sessions
 * from 1; the fields below are set by the test between scans. */
struct fake {
    int lfd, port;
    int limit;       /* reply "size limit exceeded" after this many bytes (0: never) */
    int close_after; /* close the session right after answering this request */
    int die_at;      /* at this request, take the stream and close without a reply */
    int wrong_id_at; /* at this request, answer with another request's number */
    /* What it saw (written by its thread, read by the test between scans). */
    int conns;        /* connections accepted */
    int requests;     /* INSTREAM requests, all sessions */
    int no_session;   /* connections that did not start with zIDSESSION */
    int bad_ids;      /* replies a correct client would not have expected */
    int closed;       /* sessions it closed itself (close_after, die_at, limit) */
    size_t max_chunk; /* the largest chunk seen */
    size_t total;     /* stream bytes of the last request */
    pthread_t th;
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

static void say(int c, const char *text)
{
    send(c, text, strlen(text) + 1, MSG_NOSIGNAL); /* with its NUL, as z-commands get */
}

/* One session: its requests until the client or the test ends it. */
static void fake_session(struct fake *f, int c)
{
    char cmd[11];
    if (read_full(c, cmd, sizeof cmd) < 0 || memcmp(cmd, "zIDSESSION", 11) != 0) {
        __atomic_fetch_add(&f->no_session, 1, __ATOMIC_SEQ_CST);
        return;
    }
    unsigned id = 0; /* this session's request numbers, from 1 */
    static char buf[1 << 20];
    while (read_full(c, cmd, 10) == 0) {
        if (memcmp(cmd, "zINSTREAM", 10) != 0) return;
        id++;
        int req = __atomic_add_fetch(&f->requests, 1, __ATOMIC_SEQ_CST);
        f->total = 0;
        bool over = false;
        for (;;) {
            uint32_t be;
            if (read_full(c, &be, 4) < 0) return;
            size_t n = ntohl(be);
            if (n == 0) break;
            if (n > f->max_chunk) f->max_chunk = n;
            if (n > sizeof buf || read_full(c, buf, n) < 0) return;
            f->total += n;
            if (f->limit && f->total > (size_t)f->limit) {
                over = true;
                break;
            }
        }
        char out[64];
        if (over) {
            snprintf(out, sizeof out, "%u: INSTREAM size limit exceeded. ERROR", id);
            say(c, out);
            return; /* as clamd: the session ends with it */
        }
        if (req == f->die_at) return;
        snprintf(out, sizeof out, "%u: stream: OK", req == f->wrong_id_at ? id + 6 : id);
        say(c, out);
        if (req == f->close_after) return;
    }
}

static void *fake_run(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0) return NULL;
        __atomic_fetch_add(&f->conns, 1, __ATOMIC_SEQ_CST);
        fake_session(f, c);
        close(c);
        __atomic_fetch_add(&f->closed, 1, __ATOMIC_SEQ_CST);
    }
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

/* A port that refuses connections and stays ours: bound, never listening.
 * (A listener closed again frees its port for any other process on the
 * machine, which may then accept and never answer.) */
static int refusing_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        abort();
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Waits until the fake has closed n sessions itself (so the client sees
 * the close before its next scan). */
static void wait_closed(struct fake *f, int n)
{
    for (int i = 0; i < 5000 && __atomic_load_n(&f->closed, __ATOMIC_SEQ_CST) < n; i++)
        usleep(1000);
}

static void target(struct scan_client *sc, struct metrics *m, int port)
{
    struct scan_target *t = &sc->t[sc->n++];
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
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
     * chunks, all of it, in a session. */
    int dead_port, dead = refusing_port(&dead_port);
    struct fake f = {0};
    f.lfd = listen_any(&f.port);
    struct scan_client sc = {
        .timeout_ms = 5000, .shared = m, .metrics = &m->slot[0], .stop_fd = -1};
    target(&sc, m, dead_port);
    target(&sc, m, f.port);
    struct scan_target *ft = &sc.t[1];
    pthread_create(&f.th, NULL, fake_run, &f);
    char virus[128] = "", reason[256] = "";
    enum upload_verdict v = scan_file(&sc, fd, "u1", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_CLEAN, "verdict %d: %s", (int)v, reason);
    CHECK(f.requests == 1 && f.total == sizeof data && f.no_session == 0);
    CHECK_MSG(f.max_chunk > 0 && f.max_chunk <= SCAN_CHUNK, "chunk %zu", f.max_chunk);
    CHECK(m->scanner_state[sc.t[0].mi] == MS_DOWN && m->scanner_state[ft->mi] == MS_UP);
    CHECK(m->slot[0].scans[sc.t[0].mi][MSR_ERROR] == 1 && m->slot[0].scans[ft->mi][MSR_OK] == 1);

    /* The session survives many scans: one connection, requests 2..50,
     * each reply matched to its number. */
    int bad = 0;
    for (int i = 0; i < 49; i++)
        bad +=
            scan_file(&sc, fd, "many", virus, sizeof virus, reason, sizeof reason) != VERDICT_CLEAN;
    CHECK_MSG(bad == 0, "%d not clean: %s", bad, reason);
    CHECK_MSG(f.conns == 1 && ft->opened == 1 && f.requests == 50, "conns %d opened %llu req %d",
              f.conns, (unsigned long long)ft->opened, f.requests);
    CHECK(m->slot[0].scans[ft->mi][MSR_OK] == 50 && m->slot[0].scans[ft->mi][MSR_ERROR] == 0);

    /* The scanner closes the session after a verdict (as clamd's IdleTimeout
     * does): the next scan opens another, no retry, nothing counted as an
     * error. */
    f.close_after = 51;
    v = scan_file(&sc, fd, "u51", virus, sizeof virus, reason, sizeof reason);
    CHECK(v == VERDICT_CLEAN);
    wait_closed(&f, 1);
    v = scan_file(&sc, fd, "u52", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_CLEAN, "verdict %d: %s", (int)v, reason);
    CHECK_MSG(f.conns == 2 && f.requests == 52, "conns %d req %d", f.conns, f.requests);
    CHECK(m->slot[0].scans[ft->mi][MSR_ERROR] == 0 && m->slot[0].scans[ft->mi][MSR_OK] == 52);

    /* The scanner goes away with a file (a crash): a new session, the file
     * scanned once more, clean; the went-away attempt counted as an error. */
    f.die_at = 53;
    v = scan_file(&sc, fd, "u53", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_CLEAN, "verdict %d: %s", (int)v, reason);
    CHECK_MSG(f.conns == 3 && f.requests == 54 && f.total == sizeof data, "conns %d req %d",
              f.conns, f.requests);
    CHECK(m->slot[0].scans[ft->mi][MSR_ERROR] == 1);

    /* A reply with another request's number is no verdict for this file:
     * error, never clean; the session is closed and the next scan gets a
     * new one. */
    f.wrong_id_at = 55;
    v = scan_file(&sc, fd, "u55", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_ERROR &&
                  strstr(reason, "out of turn (expected the answer to request 2)"),
              "verdict %d: %s", (int)v, reason);
    wait_closed(&f, 3);
    v = scan_file(&sc, fd, "u56", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_CLEAN, "verdict %d: %s", (int)v, reason);
    CHECK_MSG(f.conns == 4 && f.requests == 56, "conns %d req %d", f.conns, f.requests);

    /* clamd stops reading past StreamMaxLength and says so: verdict error,
     * never clean, not tried elsewhere, and that session is not reused. */
    f.limit = 100 * 1024;
    v = scan_file(&sc, fd, "u57", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_ERROR && strstr(reason, "StreamMaxLength"), "verdict %d: %s", (int)v,
              reason);
    CHECK(f.requests == 57);
    f.limit = 0;
    wait_closed(&f, 4);
    v = scan_file(&sc, fd, "u58", virus, sizeof virus, reason, sizeof reason);
    CHECK(v == VERDICT_CLEAN && f.conns == 5);
    CHECK(f.no_session == 0);

    /* Nobody answers: scanner unavailable within scan_timeout. */
    scan_close_sessions(&sc);
    CHECK(ft->n_idle == 0);
    wait_closed(&f, 5);
    shutdown(f.lfd, SHUT_RDWR);
    pthread_join(f.th, NULL);
    close(f.lfd);
    sc.timeout_ms = 300;
    v = scan_file(&sc, fd, "u3", virus, sizeof virus, reason, sizeof reason);
    CHECK_MSG(v == VERDICT_ERROR && strcmp(reason, "scanner unavailable") == 0, "%s", reason);
    CHECK(m->scanner_state[ft->mi] == MS_DOWN);

    /* The probe: both refused. */
    bool up[2] = {true, true};
    struct scanner_addr addrs[2] = {sc.t[0].addr, ft->addr};
    scan_probe(addrs, 2, 300, up);
    CHECK(!up[0] && !up[1]);
    close(dead);
    close(fd);
}

static void *stop_later(void *arg)
{
    usleep(200 * 1000);
    scan_stop(arg);
    return NULL;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* scan_stop (shutdown_timeout): a round trip waiting for a scanner that
 * took the file and says nothing ends at once with VERDICT_STOPPED, well
 * before scan_timeout, and so does one waiting for a scanner to come up;
 * neither counts against the scanner nor marks it down. */
static void test_stop(void)
{
    struct metrics *m = metrics_create();
    CHECK(m != NULL);
    if (!m) return;
    char path[] = "/tmp/intake-test-scan-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    CHECK(write(fd, "stop", 4) == 4);
    int port, silent = listen_any(&port); /* connects (backlog), never answers */
    struct scan_client sc = {.timeout_ms = 60000, .shared = m, .metrics = &m->slot[0]};
    target(&sc, m, port);
    sc.stop_fd = eventfd(0, EFD_CLOEXEC);
    char virus[128], reason[256] = "";
    pthread_t th;
    pthread_create(&th, NULL, stop_later, &sc);
    int64_t t0 = mono_ms();
    enum upload_verdict v = scan_file(&sc, fd, "s1", virus, sizeof virus, reason, sizeof reason);
    int64_t took = mono_ms() - t0;
    pthread_join(th, NULL);
    CHECK_MSG(v == VERDICT_STOPPED, "verdict %d: %s", (int)v, reason);
    CHECK_MSG(took >= 150 && took < 30000, "took %lld ms", (long long)took);
    CHECK(m->scanner_state[sc.t[0].mi] == MS_UP);
    CHECK(m->slot[0].scans[sc.t[0].mi][MSR_ERROR] == 0 &&
          m->slot[0].scans[sc.t[0].mi][MSR_OK] == 0);
    /* Stopped stays stopped: the next scan does not start. */
    v = scan_file(&sc, fd, "s2", virus, sizeof virus, reason, sizeof reason);
    CHECK(v == VERDICT_STOPPED);
    close(sc.stop_fd);

    /* Waiting for a scanner to come up (the only one is down): stopped too. */
    int dead_port, dead = refusing_port(&dead_port);
    struct scan_client wait = {.timeout_ms = 60000, .shared = m, .metrics = &m->slot[0]};
    target(&wait, m, dead_port);
    wait.stop_fd = eventfd(0, EFD_CLOEXEC);
    pthread_create(&th, NULL, stop_later, &wait);
    t0 = mono_ms();
    v = scan_file(&wait, fd, "s3", virus, sizeof virus, reason, sizeof reason);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    CHECK_MSG(v == VERDICT_STOPPED, "verdict %d: %s", (int)v, reason);
    CHECK_MSG(took >= 150 && took < 30000, "took %lld ms", (long long)took);
    close(wait.stop_fd);
    close(dead);
    close(silent);
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
        {"fd[9]: Eicar FOUND", VERDICT_INFECTED, "Eicar", ""},
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
    test_stop();
    return test_report("test_scan");
}
