/* scan: see scan.h. */
#define _GNU_SOURCE
#include "scan.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LIMITS_PREFIX "Heuristics.Limits.Exceeded"
#define ENCRYPTED_PREFIX "Heuristics.Encrypted."
#define SIZE_LIMIT_REPLY "INSTREAM size limit exceeded"
/* A scanner that has not taken the connection by then is skipped: the scan
 * goes on with another address, within scan_timeout. */
#define CONNECT_TIMEOUT_MS 2000
#define WAIT_STEP_US (100 * 1000) /* no address answers: look again */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void)
{
    return now_us() / 1000;
}

enum upload_verdict scan_parse_reply(const char *reply, char *virus, size_t virus_len, char *reason,
                                     size_t reason_len)
{
    /* clamd's INSTREAM past StreamMaxLength: the file was not scanned. */
    if (strncmp(reply, SIZE_LIMIT_REPLY, strlen(SIZE_LIMIT_REPLY)) == 0) {
        snprintf(reason, reason_len,
                 "file could not be fully scanned (INSTREAM size limit exceeded: the scanner's "
                 "StreamMaxLength is smaller than the file)");
        return VERDICT_ERROR;
    }
    /* "<what>: <result>"; the subject never contains ": " for fd[N] and
     * stream, and for paths the result is what follows the last ": ". */
    const char *r = strstr(reply, ": ");
    if (!r) {
        snprintf(reason, reason_len, "scanner said \"%.80s\"", reply);
        return VERDICT_ERROR;
    }
    const char *last;
    while ((last = strstr(r + 2, ": ")))
        r = last;
    r += 2;
    size_t n = strlen(r);
    if (strcmp(r, "OK") == 0) return VERDICT_CLEAN;
    if (n > 6 && strcmp(r + n - 6, " FOUND") == 0) {
        /* Not fully scanned is never clean, nor proof of malware: past a
         * limit, or encrypted (an archive or document the engine cannot
         * decrypt, e.g. a password-protected zip). */
        if (strncmp(r, LIMITS_PREFIX, strlen(LIMITS_PREFIX)) == 0) {
            snprintf(reason, reason_len, "file could not be fully scanned (%.*s)", (int)(n - 6), r);
            return VERDICT_ERROR;
        }
        if (strncmp(r, ENCRYPTED_PREFIX, strlen(ENCRYPTED_PREFIX)) == 0) {
            snprintf(reason, reason_len, "file is encrypted and could not be scanned (%.*s)",
                     (int)(n - 6), r);
            return VERDICT_ERROR;
        }
        snprintf(virus, virus_len, "%.*s", (int)(n - 6), r);
        return VERDICT_INFECTED;
    }
    if (n > 6 && strcmp(r + n - 6, " ERROR") == 0)
        snprintf(reason, reason_len, "scanner error: %.*s", (int)(n - 6), r);
    else
        snprintf(reason, reason_len, "scanner said \"%.80s\"", r);
    return VERDICT_ERROR;
}

/* How long a round trip may wait: until scan_timeout's deadline, or until
 * the worker stops its scans (scan_stop), whichever comes first. */
struct until {
    int64_t ms;
    int stop_fd;         /* readable once the scans are stopped (wakes a wait); -1: never */
    const int *stopping; /* set before that (read without a system call); NULL: never */
};

/* Waits until s is ready for events, or the deadline, or the stop: >0
 * ready, 0 not (the caller tells a stop by stopped()). */
static int wait_fd(int s, short events, const struct until *u, short *revents)
{
    for (;;) {
        int64_t left = u->ms - now_ms();
        if (left <= 0) return 0;
        struct pollfd p[2] = {{.fd = s, .events = events}, {.fd = u->stop_fd, .events = POLLIN}};
        int pr = poll(p, u->stop_fd >= 0 ? 2 : 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return 0;
        if (u->stop_fd >= 0 && p[1].revents) return 0;
        if (pr > 0) {
            *revents = p[0].revents;
            return 1;
        }
    }
}

static bool stopped(const struct until *u)
{
    return u->stopping && __atomic_load_n(u->stopping, __ATOMIC_ACQUIRE);
}

/* Starts a non-blocking connect to one sockaddr: the fd (connected or in
 * progress), or -errno. */
static int connect_start(int family, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Connects to a, within the deadline: a non-blocking fd, or -errno
 * (-ETIMEDOUT when it did not connect in time). */
static int scan_connect(const struct scanner_addr *a, const struct until *u)
{
    if (!a->tcp) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", a->path);
        int fd = connect_start(AF_UNIX, (struct sockaddr *)&sa, sizeof sa);
        if (fd < 0) return fd == -EAGAIN ? -ECONNREFUSED : fd; /* backlog full: as refused */
        return fd;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0) return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = connect_start(ai->ai_family, ai->ai_addr, ai->ai_addrlen);
        if (fd < 0) {
            rc = fd;
            continue;
        }
        short rev = 0;
        if (!wait_fd(fd, POLLOUT, u, &rev)) {
            close(fd);
            rc = -ETIMEDOUT;
            break;
        }
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
        if (err == 0) {
            rc = fd;
            break;
        }
        close(fd);
        rc = -err;
    }
    freeaddrinfo(res);
    return rc;
}

/* Reads one NUL- (or newline-) terminated reply before the deadline. 0, or
 * -1 with why. *extra is set when bytes followed the reply (a session
 * with those is not reused: one request at a time has one reply). */
static int read_reply(int s, char *buf, size_t cap, const struct until *u, const char **why,
                      bool *extra)
{
    size_t len = 0;
    for (;;) {
        short rev = 0;
        if (!wait_fd(s, POLLIN, u, &rev)) {
            *why = stopped(u) ? "stopped" : "scan timed out";
            return -1;
        }
        ssize_t n = read(s, buf + len, cap - 1 - len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) {
            *why = len ? "scanner closed the connection in the middle of its reply"
                       : "scanner closed the connection without a verdict";
            return -1;
        }
        len += (size_t)n;
        char *end = memchr(buf, '\0', len);
        if (!end) end = memchr(buf, '\n', len);
        if (end) {
            *extra = (size_t)(end - buf) + 1 < len;
            *end = '\0';
            return 0;
        }
        if (len == cap - 1) {
            *why = "scanner reply too long";
            return -1;
        }
    }
}

void scan_init(struct scan_client *sc, const struct config *cfg, struct metrics *shared,
               struct metrics_slot *slot)
{
    sc->n = 0;
    for (int i = 0; i < cfg->n_scanners && i < CONFIG_MAX_SCANNERS; i++) {
        sc->t[i].addr = cfg->scanners[i];
        sc->t[i].mi = metrics_scanner_index(shared, cfg->scanners[i].text, 0);
        pthread_mutex_init(&sc->t[i].mu, NULL);
        sc->t[i].n_idle = 0;
        sc->t[i].opened = 0;
        sc->n++;
    }
    sc->next = 0;
    sc->stop_fd = -1;
    sc->stopping = 0;
    sc->timeout_ms = cfg->scan_timeout_ms;
    sc->shared = shared;
    sc->metrics = slot;
}

int scan_start(struct scan_client *sc, struct ev_loop *loop, int threads)
{
    sc->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sc->stop_fd < 0) return -1;
    sc->queue = jobs_start(loop, threads, false);
    return sc->queue ? 0 : -1;
}

void scan_stop(struct scan_client *sc)
{
    uint64_t one = 1;
    __atomic_store_n(&sc->stopping, 1, __ATOMIC_RELEASE);
    /* Level-triggered: stays readable, so every wait, running or to come, ends. */
    if (sc->stop_fd >= 0 && write(sc->stop_fd, &one, sizeof one) < 0)
        log_error("cannot stop the running scans: %s", strerror(errno));
}

void scan_submit(struct scan_client *sc, struct job *j)
{
    jobs_submit(sc->queue, j);
}

int scan_pending(const struct scan_client *sc)
{
    return sc->queue ? jobs_pending(sc->queue) : 0;
}

void scan_mark(struct metrics *shared, int mi, const char *text, bool up, const char *why,
               int n_addrs)
{
    if (!shared || mi < 0 || mi >= METRICS_SCANNERS) return;
    int to = up ? MS_UP : MS_DOWN;
    /* From either other state: an address down from the start is said to be
     * down too, once (an operator's typo in a pool must not go unheard). */
    int from = __atomic_load_n(&shared->scanner_state[mi], __ATOMIC_RELAXED);
    do
        if (from == to) return; /* already so: someone else said it */
    while (!__atomic_compare_exchange_n(&shared->scanner_state[mi], &from, to, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    if (up)
        log_info("scanner at %s is up", text);
    else if (n_addrs > 1)
        log_warn("scanner at %s is down (%s): scans go to the other scanners until it "
                 "answers again",
                 text, why);
    else
        log_warn("scanner at %s is down (%s): uploads wait for it up to scan_timeout, then "
                 "get verdict error",
                 text, why);
}

static bool target_up(const struct scan_client *sc, int i)
{
    int mi = sc->t[i].mi;
    if (!sc->shared || mi >= METRICS_SCANNERS) return true; /* no state kept: try it */
    return __atomic_load_n(&sc->shared->scanner_state[mi], __ATOMIC_RELAXED) == MS_UP;
}

/* The address for the next attempt: round-robin over those up and not yet
 * tried by this scan; when none is up, the first one not tried (it may be
 * back before the probe sees it); -1 when every one was tried. */
static int pick(struct scan_client *sc, unsigned tried)
{
    unsigned start = __atomic_fetch_add(&sc->next, 1, __ATOMIC_RELAXED);
    int fallback = -1;
    for (int k = 0; k < sc->n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)sc->n);
        if (tried & (1u << i)) continue;
        if (target_up(sc, i)) return i;
        if (fallback < 0) fallback = i;
    }
    return fallback;
}

/* DONE: a verdict or a final error. RETRY: the file could not be handed
 * over (another address may take it). DIED: the scanner went away with the
 * file (it may have died of it). STALE: a reused session turned out closed
 * before the file was handed over (open another, to the same address). */
enum attempt { DONE, RETRY, DIED, STALE };

/* What one attempt found, for scan_file's caller. */
struct result {
    enum upload_verdict v;
    char *virus, *reason;
    size_t virus_len, reason_len;
    bool answered; /* the scanner did its job (a verdict, not an ERROR reply) */
    bool reusable; /* the session is in step: one reply, the right number, no ERROR */
};

/* One session in use by a scan thread. */
struct session {
    int fd;
    unsigned id; /* this request's number */
    bool reused; /* it served an earlier scan */
};

/* An idle session to t that is still open, or false. Sessions idle too long
 * are closed, as are those the scanner closed meanwhile (readable while
 * idle: EOF, or bytes nobody asked for). */
static bool take_session(struct scan_target *t, struct session *ss)
{
    int64_t now = now_ms();
    for (;;) {
        pthread_mutex_lock(&t->mu);
        if (t->n_idle == 0) {
            pthread_mutex_unlock(&t->mu);
            return false;
        }
        struct scan_session s = t->idle[--t->n_idle];
        pthread_mutex_unlock(&t->mu);
        struct pollfd p = {.fd = s.fd, .events = POLLIN};
        if (now - s.used_ms < SCAN_SESSION_IDLE_MS && poll(&p, 1, 0) == 0) {
            ss->fd = s.fd;
            ss->id = s.id + 1;
            ss->reused = true;
            return true;
        }
        close(s.fd);
    }
}

/* Gives a session that is in step back to t's idle ones (closing the
 * oldest when there are SCAN_IDLE_MAX already). */
static void give_session(struct scan_target *t, const struct session *ss)
{
    int drop = -1;
    struct scan_session s = {.fd = ss->fd, .id = ss->id, .used_ms = now_ms()};
    pthread_mutex_lock(&t->mu);
    if (t->n_idle == SCAN_IDLE_MAX) {
        drop = t->idle[0].fd;
        memmove(t->idle, t->idle + 1, (SCAN_IDLE_MAX - 1) * sizeof t->idle[0]);
        t->n_idle--;
    }
    t->idle[t->n_idle++] = s;
    pthread_mutex_unlock(&t->mu);
    if (drop >= 0) close(drop);
}

void scan_close_sessions(struct scan_client *sc)
{
    for (int i = 0; i < sc->n; i++) {
        struct scan_target *t = &sc->t[i];
        pthread_mutex_lock(&t->mu);
        for (int k = 0; k < t->n_idle; k++)
            close(t->idle[k].fd);
        t->n_idle = 0;
        pthread_mutex_unlock(&t->mu);
    }
}

/* Sends len bytes before the deadline. 0; 1 when the scanner answered (or
 * closed) before taking them all, the reply to be read; -1 on timeout. */
static int send_all(int s, const char *buf, size_t len, const struct until *u)
{
    while (len > 0) {
        short rev = 0;
        if (!wait_fd(s, POLLOUT | POLLIN, u, &rev)) return -1;
        if (rev & (POLLIN | POLLHUP | POLLERR)) return 1;
        ssize_t n = send(s, buf, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return 1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sends len bytes of fd from *off (sendfile: the bytes go from the page
 * cache to the socket). Returns as send_all; -2 when the file cannot be read. */
static int send_file(int s, int fd, off_t *off, size_t len, const struct until *u)
{
    while (len > 0) {
        short rev = 0;
        if (!wait_fd(s, POLLOUT | POLLIN, u, &rev)) return -1;
        if (rev & (POLLIN | POLLHUP | POLLERR)) return 1;
        ssize_t n = sendfile(s, fd, off, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return 1;
        if (n <= 0) return -2; /* a read error, or the file shrank */
        len -= (size_t)n;
    }
    return 0;
}

/* The reply ends the attempt: a verdict, or why there is none. The reply
 * must carry the request's number ("N: "); anything else is never taken
 * for a verdict. */
static enum attempt finish_attempt(const struct scan_target *t, const struct session *ss,
                                   const char *id, const struct until *u, uint64_t timeout_ms,
                                   struct result *r)
{
    char reply[1024];
    const char *why = "";
    bool extra = false;
    if (read_reply(ss->fd, reply, sizeof reply, u, &why, &extra) < 0) {
        snprintf(r->reason, r->reason_len, "%s", why);
        if (strcmp(why, "stopped") == 0) return DONE;
        if (strcmp(why, "scan timed out") == 0) {
            log_error("upload %s: scan timed out at %s (scan_timeout %llu ms)", id, t->addr.text,
                      (unsigned long long)timeout_ms);
            return DONE;
        }
        return strcmp(why, "scanner reply too long") == 0 ? DONE : DIED;
    }
    char *end;
    errno = 0;
    unsigned long n = reply[0] >= '0' && reply[0] <= '9' ? strtoul(reply, &end, 10) : 0;
    if (errno || n != ss->id || end[0] != ':' || end[1] != ' ') {
        /* Not the answer to this request: a reply from before, or a scanner
         * out of step. Its words say nothing about this file. */
        snprintf(r->reason, r->reason_len,
                 "scanner reply out of turn (expected the answer to request %u): \"%.80s\"", ss->id,
                 reply);
        log_error("upload %s: %s (scanner at %s); closing that session", id, r->reason,
                  t->addr.text);
        return DONE;
    }
    const char *body = end + 2;
    r->v = scan_parse_reply(body, r->virus, r->virus_len, r->reason, r->reason_len);
    size_t len = strlen(body);
    r->answered = !(len >= 6 && strcmp(body + len - 6, " ERROR") == 0);
    r->reusable = r->answered && !extra;
    if (r->v == VERDICT_ERROR)
        log_error("upload %s: %s (scanner at %s)", id, r->reason, t->addr.text);
    return DONE;
}

/* One FILDES round trip. RETRY when the file could not be handed over, DIED
 * when the scanner went away with it (it may have died of this file), DONE
 * with a verdict or a final error. */
static enum attempt fildes_once(struct scan_client *sc, const struct scan_target *t,
                                const struct session *ss, int fd, const char *id,
                                const struct until *u, struct result *r)
{
    int s = ss->fd;
    /* As clamdscan --fdpass: the command and one dummy byte carrying the fd. */
    static const char cmd[] = "zFILDES\0";
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {.iov_base = (void *)cmd, .iov_len = sizeof cmd};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t sent;
    short rev = 0;
    do
        sent = sendmsg(s, &m, MSG_NOSIGNAL);
    while (sent < 0 && (errno == EINTR || (errno == EAGAIN && wait_fd(s, POLLOUT, u, &rev))));
    if (sent != (ssize_t)sizeof cmd && ss->reused && (errno == EPIPE || errno == ECONNRESET))
        return STALE;
    if (sent != (ssize_t)sizeof cmd && stopped(u)) return DONE;
    if (sent != (ssize_t)sizeof cmd) {
        snprintf(r->reason, r->reason_len, "cannot send the file to the scanner");
        log_warn("upload %s: sending to the scanner at %s failed: %s", id, t->addr.text,
                 strerror(errno));
        return RETRY;
    }
    log_debug("upload %s: handed to the scanner at %s (request %u)", id, t->addr.text, ss->id);
    return finish_attempt(t, ss, id, u, sc->timeout_ms, r);
}

/* One INSTREAM round trip: the file in SCAN_CHUNK chunks, each a 4-byte
 * big-endian length and the bytes, then a zero length. clamd may answer
 * before the end (StreamMaxLength): that reply is read, whatever it is. */
static enum attempt instream_once(struct scan_client *sc, const struct scan_target *t,
                                  const struct session *ss, int fd, const char *id,
                                  const struct until *u, struct result *r)
{
    int s = ss->fd;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(r->reason, r->reason_len, "cannot read the spooled file");
        log_error("upload %s: cannot stat the spooled file: %s", id, strerror(errno));
        return DONE;
    }
    static const char cmd[] = "zINSTREAM";
    int rc = send_all(s, cmd, sizeof cmd, u);
    /* A reused session the scanner had closed: nothing was handed over. */
    if (rc == 1 && ss->reused) {
        char b;
        if (recv(s, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return STALE;
    }
    off_t off = 0;
    while (rc == 0 && off < st.st_size) {
        size_t n = st.st_size - off > SCAN_CHUNK ? SCAN_CHUNK : (size_t)(st.st_size - off);
        uint32_t be = htonl((uint32_t)n);
        rc = send_all(s, (const char *)&be, 4, u);
        if (rc == 0) rc = send_file(s, fd, &off, n, u);
    }
    if (rc == 0) {
        static const char end[4] = {0, 0, 0, 0};
        rc = send_all(s, end, 4, u);
    }
    if (rc == -1 && stopped(u)) return DONE;
    if (rc == -1) {
        snprintf(r->reason, r->reason_len, "scan timed out");
        log_error("upload %s: scan timed out at %s while sending the file (scan_timeout %llu ms)",
                  id, t->addr.text, (unsigned long long)sc->timeout_ms);
        return DONE;
    }
    if (rc == -2) {
        snprintf(r->reason, r->reason_len, "cannot read the spooled file");
        log_error("upload %s: cannot read the spooled file to stream it to %s: %s", id,
                  t->addr.text, strerror(errno));
        return DONE;
    }
    log_debug("upload %s: handed to the scanner at %s (request %u)", id, t->addr.text, ss->id);
    return finish_attempt(t, ss, id, u, sc->timeout_ms, r);
}

/* Opens a session to t: connect, then IDSESSION (clamd answers nothing to
 * it). The fd, or -errno. */
static int open_session(struct scan_target *t, const struct until *u)
{
    int s = scan_connect(&t->addr, u);
    if (s < 0) return s;
    static const char cmd[] = "zIDSESSION";
    if (send_all(s, cmd, sizeof cmd, u) != 0) {
        close(s);
        return -ECONNRESET;
    }
    __atomic_fetch_add(&t->opened, 1, __ATOMIC_RELAXED);
    return s;
}

enum upload_verdict scan_file(void *ctx, int fd, const char *id, char *virus, size_t virus_len,
                              char *reason, size_t reason_len)
{
    struct scan_client *sc = ctx;
    int64_t t0 = now_us(), deadline = t0 / 1000 + (int64_t)sc->timeout_ms;
    int waited = 0, died = 0;
    unsigned tried = 0; /* addresses this round: each once, then wait and go again */
    struct result r = {.v = VERDICT_ERROR,
                       .virus = virus,
                       .virus_len = virus_len,
                       .reason = reason,
                       .reason_len = reason_len};
    struct until until = {deadline, sc->stop_fd, &sc->stopping};
    for (;;) {
        if (stopped(&until)) {
            r.v = VERDICT_STOPPED;
            return r.v;
        }
        int i = pick(sc, tried);
        if (i < 0) {
            /* None answered: they may be restarting. Wait, within scan_timeout. */
            if (now_ms() + WAIT_STEP_US / 1000 >= deadline) {
                snprintf(reason, reason_len, "scanner unavailable");
                log_error("upload %s: no scanner answered within scan_timeout (%llu ms)", id,
                          (unsigned long long)sc->timeout_ms);
                break;
            }
            if (!waited++) log_debug("upload %s: no scanner answering; waiting for one", id);
            struct pollfd stop = {.fd = sc->stop_fd, .events = POLLIN};
            poll(&stop, sc->stop_fd >= 0, WAIT_STEP_US / 1000);
            tried = 0;
            continue;
        }
        struct scan_target *t = &sc->t[i];
        tried |= 1u << i;
        enum attempt a = RETRY;
        struct session ss;
        for (;;) {
            if (!take_session(t, &ss)) {
                int64_t cdl = now_ms() + CONNECT_TIMEOUT_MS;
                struct until cu = {cdl < deadline ? cdl : deadline, sc->stop_fd, &sc->stopping};
                ss.fd = open_session(t, &cu);
                ss.id = 1;
                ss.reused = false;
            }
            if (ss.fd < 0) break;
            r.v = VERDICT_ERROR;
            r.answered = r.reusable = false;
            a = t->addr.tcp ? instream_once(sc, t, &ss, fd, id, &until, &r)
                            : fildes_once(sc, t, &ss, fd, id, &until, &r);
            if (a == DONE && r.reusable) {
                give_session(t, &ss);
                break;
            }
            close(ss.fd);
            if (a != STALE || stopped(&until)) break;
            log_debug("upload %s: the session to %s was closed; opening another", id, t->addr.text);
        }
        /* Cut short by the stop: says nothing of the scanner or the file. */
        if (stopped(&until)) {
            r.v = VERDICT_STOPPED;
            return r.v;
        }
        if (ss.fd < 0) {
            int e = -ss.fd;
            metrics_scan_result(sc->metrics, t->mi, MSR_ERROR);
            scan_mark(sc->shared, t->mi, t->addr.text, false, strerror(e), sc->n);
            log_debug("upload %s: scanner at %s: %s", id, t->addr.text, strerror(e));
            continue;
        }
        metrics_scan_result(sc->metrics, t->mi, a == DONE && r.answered ? MSR_OK : MSR_ERROR);
        if (a == DONE) break;
        /* A scanner that died mid-scan is respawned (or another takes over):
         * scan once more. Twice is the file's doing, not bad luck: do not
         * take scanners down again and again (and every scan with them). */
        if (a == DIED && ++died == 2) {
            snprintf(reason, reason_len, "the scanner went away twice while scanning this file");
            log_error("upload %s: the scanner (last %s) went away twice while scanning it; not "
                      "scanned again (verdict error). If the scanner's log shows it crashed, "
                      "this file may crash libclamav: keep it for analysis",
                      id, t->addr.text);
            break;
        }
        if (now_ms() + WAIT_STEP_US / 1000 >= deadline) break;
        if (a == DIED)
            log_warn("upload %s: %s (scanner at %s); retrying", id, reason, t->addr.text);
    }
    metrics_scan(sc->metrics, (uint64_t)(now_us() - t0));
    return r.v;
}

/* The probe's connection to one address: a TCP host name may resolve to
 * several addresses (localhost: ::1 and 127.0.0.1), tried in turn. */
struct probe {
    int fd;
    enum { P_CONNECTING, P_SENT, P_FINISHED } st;
    struct addrinfo *res, *ai;
    char buf[16];
    size_t got;
};

static void probe_next(struct probe *p)
{
    while (p->ai) {
        struct addrinfo *ai = p->ai;
        p->ai = ai->ai_next;
        p->fd = connect_start(ai->ai_family, ai->ai_addr, ai->ai_addrlen);
        if (p->fd >= 0) {
            p->st = P_CONNECTING;
            return;
        }
    }
    p->st = P_FINISHED;
}

void scan_probe(const struct scanner_addr *a, int n, int timeout_ms, bool *up)
{
    struct probe pr[CONFIG_MAX_SCANNERS];
    if (n > CONFIG_MAX_SCANNERS) n = CONFIG_MAX_SCANNERS;
    int64_t deadline = now_ms() + timeout_ms;
    for (int i = 0; i < n; i++) {
        struct probe *p = &pr[i];
        memset(p, 0, sizeof *p);
        p->fd = -1;
        p->st = P_FINISHED;
        up[i] = false;
        if (!a[i].tcp) {
            struct until u = {deadline, -1, NULL};
            p->fd = scan_connect(&a[i], &u); /* a UNIX connect does not wait */
            if (p->fd >= 0) p->st = P_CONNECTING;
            continue;
        }
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        if (getaddrinfo(a[i].host, a[i].port, &hints, &p->res) != 0) p->res = NULL;
        p->ai = p->res;
        probe_next(p);
    }
    for (;;) {
        struct pollfd pf[CONFIG_MAX_SCANNERS];
        int np = 0, map[CONFIG_MAX_SCANNERS];
        for (int i = 0; i < n; i++)
            if (pr[i].st != P_FINISHED) {
                pf[np].fd = pr[i].fd;
                pf[np].events = pr[i].st == P_CONNECTING ? POLLOUT : POLLIN;
                pf[np].revents = 0;
                map[np++] = i;
            }
        int64_t left = deadline - now_ms();
        if (np == 0 || left <= 0) break;
        int rc = poll(pf, (nfds_t)np, (int)left);
        if (rc < 0 && errno != EINTR) break;
        for (int k = 0; k < np && rc > 0; k++) {
            struct probe *p = &pr[map[k]];
            if (!pf[k].revents) continue;
            if (p->st == P_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
                if (!err && send(p->fd, "zPING", 6, MSG_NOSIGNAL) == 6) {
                    p->st = P_SENT;
                } else {
                    close(p->fd);
                    p->fd = -1;
                    probe_next(p);
                }
                continue;
            }
            ssize_t r = read(p->fd, p->buf + p->got, sizeof p->buf - 1 - p->got);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (r <= 0) {
                p->st = P_FINISHED;
                continue;
            }
            p->got += (size_t)r;
            if (memchr(p->buf, '\0', p->got)) {
                up[map[k]] = strcmp(p->buf, "PONG") == 0;
                p->st = P_FINISHED;
            } else if (p->got == sizeof p->buf - 1) {
                p->st = P_FINISHED;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (pr[i].fd >= 0) close(pr[i].fd);
        if (pr[i].res) freeaddrinfo(pr[i].res);
    }
}
