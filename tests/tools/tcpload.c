/* tcpload: a raw TCP upload load client for the benchmarks (not installed).
 * CONNS connections, each making UPLOADS uploads of SIZE bytes back to back,
 * all driven by one epoll loop so the client costs little next to the
 * server. Per upload the header line and the body go out together without
 * waiting for READY (SPEC allows it; -r waits for READY first); the next
 * upload on a connection starts when its STATUS has arrived (no pipelining
 * across uploads). Each body starts with 24 bytes of its own (time, upload
 * number, connection, process) and goes on with one random block (up
 * to 1 MiB) repeated: no two uploads are the same file, so a scanner that
 * remembers files it found clean measures its scanning, not its memory.
 * Each upload's latency is from its first byte sent to its STATUS received,
 * timed with CLOCK_MONOTONIC (the clock of Python's time.monotonic()).
 *
 *   tcpload [-c CONNS] [-n UPLOADS] [-s SIZE[K|M|G]] [-t SECONDS] [-r]
 *           [-l LATFILE] HOST PORT
 *
 * -n 0 means no limit: uploads continue until -t SECONDS have passed or
 * SIGTERM/SIGINT arrives; then the uploads in flight finish and it stops.
 * Prints one JSON object: uploads, bytes, seconds (from all connected to the
 * last STATUS), uploads_per_s, mib_per_s, lat_ms {p50 p90 p99 p999 max}.
 * -l writes "START_NS END_NS" per upload (CLOCK_MONOTONIC) to LATFILE.
 * Exit 1 (with the server's line on stderr) on an ERROR or a verdict other
 * than clean/unscanned. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1u << 20)

struct conn {
    int fd;
    int index;
    long done;          /* uploads finished on this connection */
    int active;         /* an upload is in flight */
    int ready_seen;
    uint64_t sent;      /* of header + body */
    uint64_t total;
    char hdr[96 + 24]; /* the header line, then the body's first bytes, this upload's own */
    size_t hdr_len;
    size_t stamp_len; /* those first bytes */
    size_t pre_len;   /* what goes out in the first send: the line and, unless -r, the stamp */
    uint64_t t_start;
    char in[8192];
    size_t in_len;
};

struct lat {
    uint64_t start, end;
};

static struct conn *conns;
static int n_conns;
static long n_uploads = 1;
static uint64_t size = 4096;
static int wait_ready;
static double limit_s;
static const char *lat_path;
static uint8_t *body;
static size_t body_len;
static int ep;
static volatile sig_atomic_t stop_flag;
static struct lat *lats;
static size_t n_lats, cap_lats;
static int open_conns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *m)
{
    fprintf(stderr, "tcpload: %s: %s\n", m, strerror(errno));
    exit(2);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t parse_size(const char *s)
{
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    switch (*e) {
    case 'K': case 'k': v <<= 10; break;
    case 'M': case 'm': v <<= 20; break;
    case 'G': case 'g': v <<= 30; break;
    case '\0': break;
    default: fprintf(stderr, "tcpload: bad size %s\n", s); exit(2);
    }
    return v;
}

static void set_events(struct conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

static void start_upload(struct conn *c)
{
    c->hdr_len = (size_t)snprintf(c->hdr, sizeof c->hdr - 24, "%llu tcpload-%d-%d-%ld.bin\n",
                                  (unsigned long long)size, (int)getpid(), c->index, c->done);
    /* What changes most first: a body shorter than the stamp still differs. */
    uint64_t more[2] = {now_ns(), (uint64_t)c->done};
    uint32_t ids[2] = {(uint32_t)c->index, (uint32_t)getpid()};
    uint8_t stamp[24];
    memcpy(stamp, more, sizeof more);
    memcpy(stamp + sizeof more, ids, sizeof ids);
    c->stamp_len = size < sizeof stamp ? (size_t)size : sizeof stamp;
    memcpy(c->hdr + c->hdr_len, stamp, c->stamp_len);
    /* With the line, as the body went before: no send more per upload. */
    c->pre_len = c->hdr_len + (wait_ready ? 0 : c->stamp_len);
    c->sent = 0;
    c->total = c->hdr_len + size;
    c->ready_seen = 0;
    c->active = 1;
    c->t_start = now_ns();
    set_events(c, EPOLLIN | EPOLLOUT);
}

static void finish_conn(struct conn *c)
{
    close(c->fd);
    c->fd = -1;
    open_conns--;
}

/* Sends what the socket takes: the header, then (unless waiting for READY)
 * the body. */
static void on_writable(struct conn *c)
{
    while (c->sent < c->total) {
        ssize_t w;
        if (c->sent < c->pre_len) {
            w = send(c->fd, c->hdr + c->sent, c->pre_len - c->sent, MSG_NOSIGNAL);
        } else {
            if (wait_ready && !c->ready_seen) {
                set_events(c, EPOLLIN);
                return;
            }
            uint64_t boff = c->sent - c->hdr_len;
            if (boff < c->stamp_len) { /* -r: the stamp after READY */
                w = send(c->fd, c->hdr + c->hdr_len + boff, c->stamp_len - boff, MSG_NOSIGNAL);
            } else {
                uint64_t off = boff % body_len;
                uint64_t n = body_len - off;
                if (n > c->total - c->sent) n = c->total - c->sent;
                w = send(c->fd, body + off, (size_t)n, MSG_NOSIGNAL);
            }
        }
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            die("send");
        }
        c->sent += (uint64_t)w;
    }
    set_events(c, EPOLLIN);
}

static void record(uint64_t start, uint64_t end)
{
    if (n_lats == cap_lats) {
        cap_lats = cap_lats ? cap_lats * 2 : 4096;
        lats = realloc(lats, cap_lats * sizeof *lats);
        if (!lats) die("realloc");
    }
    lats[n_lats++] = (struct lat){start, end};
}

static int out_of_time(uint64_t t0)
{
    return stop_flag || (limit_s > 0 && (double)(now_ns() - t0) / 1e9 >= limit_s);
}

static void on_line(struct conn *c, char *line, uint64_t t0)
{
    if (strstr(line, "\"READY\"")) {
        c->ready_seen = 1;
        if (wait_ready && c->sent < c->total) set_events(c, EPOLLIN | EPOLLOUT);
        return;
    }
    if (strstr(line, "\"STATUS\"") &&
        (strstr(line, "\"verdict\":\"clean\"") || strstr(line, "\"verdict\":\"unscanned\""))) {
        record(c->t_start, now_ns());
        c->active = 0;
        c->done++;
        if ((n_uploads > 0 && c->done >= n_uploads) || out_of_time(t0))
            finish_conn(c);
        else
            start_upload(c);
        return;
    }
    fprintf(stderr, "tcpload: connection %d, upload %ld: %s\n", c->index, c->done, line);
    exit(1);
}

static void on_readable(struct conn *c, uint64_t t0)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            die("recv");
        }
        if (r == 0) {
            fprintf(stderr, "tcpload: connection %d closed by the server after %ld uploads\n",
                    c->index, c->done);
            exit(1);
        }
        c->in_len += (size_t)r;
        char *nl;
        while (c->fd >= 0 && (nl = memchr(c->in, '\n', c->in_len))) {
            *nl = '\0';
            size_t used = (size_t)(nl + 1 - c->in);
            char line[sizeof c->in];
            memcpy(line, c->in, used);
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            on_line(c, line, t0);
        }
        if (c->fd < 0) return;
        if (c->in_len == sizeof c->in - 1) {
            fprintf(stderr, "tcpload: line too long from the server\n");
            exit(1);
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    if (!n) return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return (double)v[k - 1] / 1e6;
}

int main(int argc, char **argv)
{
    int opt;
    n_conns = 1;
    while ((opt = getopt(argc, argv, "c:n:s:t:rl:")) != -1) {
        switch (opt) {
        case 'c': n_conns = atoi(optarg); break;
        case 'n': n_uploads = atol(optarg); break;
        case 's': size = parse_size(optarg); break;
        case 't': limit_s = atof(optarg); break;
        case 'r': wait_ready = 1; break;
        case 'l': lat_path = optarg; break;
        default: goto usage;
        }
    }
    if (argc - optind != 2 || n_conns < 1) {
usage:
        fprintf(stderr, "usage: tcpload [-c CONNS] [-n UPLOADS] [-s SIZE[K|M|G]] "
                        "[-t SECONDS] [-r] [-l LATFILE] HOST PORT\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    body_len = size < BLOCK ? (size ? (size_t)size : 1) : BLOCK;
    body = malloc(body_len);
    if (!body) die("malloc");
    for (size_t i = 0; i < body_len;) {
        ssize_t r = getrandom(body + i, body_len - i, 0);
        if (r <= 0) die("getrandom");
        i += (size_t)r;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(argv[optind], argv[optind + 1], &hints, &ai)) die("resolve");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    conns = calloc((size_t)n_conns, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->index = i;
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl");
        open_conns++;
    }
    freeaddrinfo(ai);
    uint64_t t0 = now_ns();
    for (int i = 0; i < n_conns; i++)
        start_upload(&conns[i]);
    struct epoll_event evs[256];
    while (open_conns > 0) {
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c, t0);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                on_writable(c);
        }
    }
    uint64_t t1 = now_ns();
    double secs = (double)(t1 - t0) / 1e9;
    uint64_t *d = malloc((n_lats ? n_lats : 1) * sizeof *d);
    if (!d) die("malloc");
    for (size_t i = 0; i < n_lats; i++)
        d[i] = lats[i].end - lats[i].start;
    qsort(d, n_lats, sizeof *d, cmp_u64);
    if (lat_path) {
        FILE *f = fopen(lat_path, "w");
        if (!f) die(lat_path);
        for (size_t i = 0; i < n_lats; i++)
            fprintf(f, "%llu %llu\n", (unsigned long long)lats[i].start,
                    (unsigned long long)lats[i].end);
        if (fclose(f)) die(lat_path);
    }
    double bytes = (double)n_lats * (double)size;
    printf("{\"conns\":%d,\"uploads\":%zu,\"bytes\":%.0f,\"seconds\":%.6f,"
           "\"uploads_per_s\":%.1f,\"mib_per_s\":%.1f,\"lat_ms\":{\"p50\":%.3f,"
           "\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}}\n",
           n_conns, n_lats, bytes, secs, (double)n_lats / secs, bytes / 1048576.0 / secs,
           pct(d, n_lats, 0.50), pct(d, n_lats, 0.90), pct(d, n_lats, 0.99),
           pct(d, n_lats, 0.999), n_lats ? (double)d[n_lats - 1] / 1e6 : 0.0);
    return 0;
}
