/* idleconns: opens many connections to intaked and leaves them idle, for the
 * memory-per-connection benchmark (not installed). One epoll loop; at most
 * PARALLEL connections are being set up at a time (non-blocking connect,
 * then with -w the WebSocket handshake, then with -u one upload of BYTES),
 * the others wait their turn. Connections come from NADDRS source addresses
 * 127.0.0.1, 127.0.0.2, ... (IP_BIND_ADDRESS_NO_PORT) so that ephemeral
 * ports do not run short across runs. RLIMIT_NOFILE is raised to its hard
 * limit.
 *
 *   idleconns [-c N] [-w] [-u BYTES] [-a NADDRS] [-p PARALLEL] HOST PORT
 *
 * When all N are set up it prints "idle N SECONDS" and waits, holding them,
 * until its stdin is closed; then it prints "closed_by_server K" (how many
 * the server closed meanwhile) and exits. HOST is an IPv4 address. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { NEW, CONNECTING, SENDING, WAIT_101, WAIT_STATUS, IDLE, CLOSED };

struct conn {
    int fd;
    int state;
    int after_send;     /* the state once out is sent */
    char *out;          /* what is left to send (malloc'd), or NULL */
    size_t out_len, out_off;
    char in[1024];
    size_t in_len;
};

static struct conn *conns;
static int n_total = 10000, parallel = 200, n_addrs = 4, ws, upload_bytes = -1;
static int ep;
static struct sockaddr_in dst;
static int n_idle, n_closed_idle, in_setup, next_new;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
    fprintf(stderr, "idleconns: %s: %s\n", m, strerror(errno));
    exit(2);
}

static void fail(int i, const char *what, const char *got)
{
    fprintf(stderr, "idleconns: connection %d: %s%s%.200s\n", i, what, got ? ": " : "",
            got ? got : "");
    exit(1);
}

static void set_events(struct conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

/* Appends one masked client frame (mask key 0: the payload is sent as is,
 * which RFC 6455 allows a client to do). */
static size_t ws_frame(char *p, int op, const char *payload, size_t n)
{
    size_t h = 0;
    p[h++] = (char)(0x80 | op);
    if (n < 126) {
        p[h++] = (char)(0x80 | n);
    } else {
        p[h++] = (char)(0x80 | 126);
        p[h++] = (char)(n >> 8);
        p[h++] = (char)(n & 0xff);
    }
    memset(p + h, 0, 4);
    h += 4;
    if (payload) memcpy(p + h, payload, n);
    else memset(p + h, 'x', n);
    return h + n;
}

static void queue_upload(struct conn *c)
{
    int i = (int)(c - conns);
    size_t cap = (size_t)upload_bytes + 512;
    c->out = malloc(cap);
    if (!c->out) die("malloc");
    char start[256];
    if (ws) {
        int n = snprintf(start, sizeof start,
                         "{\"type\":\"START\",\"filename\":\"idle-%d-%d.bin\",\"size\":%d}",
                         (int)getpid(), i, upload_bytes);
        size_t l = ws_frame(c->out, 1, start, (size_t)n);
        l += ws_frame(c->out + l, 2, NULL, (size_t)upload_bytes);
        l += ws_frame(c->out + l, 1, "{\"type\":\"DONE\"}", 15);
        c->out_len = l;
    } else {
        int n = snprintf(c->out, cap, "%d idle-%d-%d.bin\n", upload_bytes, (int)getpid(), i);
        memset(c->out + n, 'x', (size_t)upload_bytes);
        c->out_len = (size_t)n + (size_t)upload_bytes;
    }
    c->out_off = 0;
    c->in_len = 0;
    c->state = SENDING;
    c->after_send = WAIT_STATUS;
    set_events(c, EPOLLOUT);
}

static void become_idle(struct conn *c)
{
    c->state = IDLE;
    set_events(c, EPOLLIN | EPOLLRDHUP);
    n_idle++;
    in_setup--;
}

/* What follows the connect (or the handshake): an upload, or idleness. */
static void after_setup(struct conn *c)
{
    if (upload_bytes >= 0) queue_upload(c);
    else become_idle(c);
}

static void start_one(void)
{
    int i = next_new++;
    struct conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % n_addrs));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl");
    in_setup++;
    c->state = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
        die("connect");
}

static void on_event(struct conn *c)
{
    int i = (int)(c - conns);
    if (c->state == IDLE) {
        char b[256];
        ssize_t r = recv(c->fd, b, sizeof b, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            close(c->fd);
            c->state = CLOSED;
            n_closed_idle++;
        }
        return;
    }
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            errno = err;
            die("connect");
        }
        if (!ws) {
            after_setup(c);
            return;
        }
        char req[] = "GET /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
        c->out = malloc(sizeof req);
        if (!c->out) die("malloc");
        memcpy(c->out, req, sizeof req - 1);
        c->out_len = sizeof req - 1;
        c->out_off = 0;
        c->state = SENDING;
        c->after_send = WAIT_101;
    }
    if (c->state == SENDING) {
        while (c->out_off < c->out_len) {
            ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN) return;
                die("send");
            }
            c->out_off += (size_t)w;
        }
        free(c->out);
        c->out = NULL;
        c->state = c->after_send;
        set_events(c, EPOLLIN);
        return;
    }
    ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) fail(i, "closed by the server during setup", NULL);
    c->in_len += (size_t)r;
    c->in[c->in_len] = '\0';
    if (c->state == WAIT_101) {
        char *e = strstr(c->in, "\r\n\r\n");
        if (!e) return;
        if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) fail(i, "handshake refused", c->in);
        c->in_len = 0;
        after_setup(c);
        return;
    }
    /* WAIT_STATUS: server lines (raw TCP) or unmasked text frames (ws). */
    for (;;) {
        size_t hl = 0, n = 0;
        if (ws) {
            if (c->in_len < 2) return;
            n = (uint8_t)c->in[1] & 0x7f;
            hl = 2;
            if (n == 126) {
                if (c->in_len < 4) return;
                n = (size_t)((uint8_t)c->in[2] << 8 | (uint8_t)c->in[3]);
                hl = 4;
            }
            if (n > sizeof c->in - 8) fail(i, "frame too long", NULL);
            if (hl + n > c->in_len) return;
        } else {
            char *nl = memchr(c->in, '\n', c->in_len);
            if (!nl) {
                if (c->in_len == sizeof c->in - 1) fail(i, "line too long", NULL);
                return;
            }
            n = (size_t)(nl + 1 - c->in);
        }
        char msg[sizeof c->in];
        memcpy(msg, c->in + hl, n);
        msg[n] = '\0';
        memmove(c->in, c->in + hl + n, c->in_len - hl - n);
        c->in_len -= hl + n;
        if (strstr(msg, "\"ERROR\"")) fail(i, "upload failed", msg);
        if (strstr(msg, "\"STATUS\"")) {
            become_idle(c);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "c:wu:a:p:")) != -1) {
        switch (opt) {
        case 'c': n_total = atoi(optarg); break;
        case 'w': ws = 1; break;
        case 'u': upload_bytes = atoi(optarg); break;
        case 'a': n_addrs = atoi(optarg); break;
        case 'p': parallel = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (argc - optind != 2 || n_total < 1 || n_addrs < 1 || parallel < 1 || upload_bytes > 60000) {
usage:
        fprintf(stderr, "usage: idleconns [-c N] [-w] [-u BYTES] [-a NADDRS] [-p PARALLEL] "
                        "HOST PORT   (BYTES <= 60000)\n");
        return 2;
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &dst.sin_addr) != 1) {
        fprintf(stderr, "idleconns: HOST must be an IPv4 address\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n_total + 16) {
        fprintf(stderr, "idleconns: RLIMIT_NOFILE hard limit %llu is below %d connections\n",
                (unsigned long long)rl.rlim_max, n_total);
        return 2;
    }
    conns = calloc((size_t)n_total, sizeof *conns);
    if (!conns) die("calloc");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    double t0 = now_s();
    struct epoll_event evs[512];
    while (n_idle + n_closed_idle < n_total) {
        while (in_setup < parallel && next_new < n_total)
            start_one();
        int n = epoll_wait(ep, evs, 512, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++)
            on_event(&conns[evs[k].data.u32]);
        if (now_s() - t0 > 300) {
            fprintf(stderr, "idleconns: %d of %d set up after 300 s\n", n_idle, n_total);
            return 1;
        }
    }
    printf("idle %d %.3f\n", n_idle, now_s() - t0);
    fflush(stdout);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e) < 0) die("epoll_ctl stdin");
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == UINT32_MAX) {
                char b[64];
                if (read(0, b, sizeof b) <= 0) {
                    printf("closed_by_server %d\n", n_closed_idle);
                    return 0;
                }
                continue;
            }
            on_event(&conns[evs[k].data.u32]);
        }
    }
}
