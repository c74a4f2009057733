/* scan: see scan.h. */
#define _GNU_SOURCE
#include "scan.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LIMITS_PREFIX "Heuristics.Limits.Exceeded"
#define ENCRYPTED_PREFIX "Heuristics.Encrypted."

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

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Reads one NUL-terminated reply before the deadline. 0, or -1 with why. */
static int read_reply(int s, char *buf, size_t cap, int64_t deadline, const char **why)
{
    size_t len = 0;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            *why = "scan timed out";
            return -1;
        }
        struct pollfd p = {.fd = s, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            *why = "scan timed out";
            return -1;
        }
        ssize_t n = read(s, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            *why = "scanner closed the connection without a verdict";
            return -1;
        }
        len += (size_t)n;
        char *end = memchr(buf, '\0', len);
        if (!end) end = memchr(buf, '\n', len);
        if (end) {
            *end = '\0';
            return 0;
        }
        if (len == cap - 1) {
            *why = "scanner reply too long";
            return -1;
        }
    }
}

int scan_start(struct scan_client *sc, struct ev_loop *loop, int threads)
{
    sc->queue = jobs_start(loop, threads);
    return sc->queue ? 0 : -1;
}

void scan_submit(struct scan_client *sc, struct job *j)
{
    jobs_submit(sc->queue, j);
}

int scan_pending(const struct scan_client *sc)
{
    return sc->queue ? jobs_pending(sc->queue) : 0;
}

enum attempt { DONE, RETRY, DIED };

/* One FILDES round trip on a fresh connection. RETRY when the file could
 * not be handed over, DIED when the scanner went away with it (it may have
 * died of this file), DONE with a verdict or a final error. */
static enum attempt fildes_once(struct scan_client *sc, int s, int fd, const char *id,
                                int64_t deadline, enum upload_verdict *v, char *virus,
                                size_t virus_len, char *reason, size_t reason_len)
{
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
    char reply[1024];
    const char *why = "";
    *v = VERDICT_ERROR;
    if (sendmsg(s, &m, MSG_NOSIGNAL) != (ssize_t)sizeof cmd) {
        snprintf(reason, reason_len, "cannot send the file to the scanner");
        log_warn("upload %s: sending to the scanner failed: %s", id, strerror(errno));
        return RETRY;
    }
    log_debug("upload %s: handed to the scanner at %s", id, sc->path);
    if (read_reply(s, reply, sizeof reply, deadline, &why) < 0) {
        snprintf(reason, reason_len, "%s", why);
        if (strcmp(why, "scan timed out") == 0) {
            log_error("upload %s: scan timed out (scan_timeout %llu ms)", id,
                      (unsigned long long)sc->timeout_ms);
            return DONE;
        }
        return strcmp(why, "scanner reply too long") == 0 ? DONE : DIED;
    }
    *v = scan_parse_reply(reply, virus, virus_len, reason, reason_len);
    if (*v == VERDICT_ERROR) log_error("upload %s: %s", id, reason);
    return DONE;
}

enum upload_verdict scan_fildes(void *ctx, int fd, const char *id, char *virus, size_t virus_len,
                                char *reason, size_t reason_len)
{
    struct scan_client *sc = ctx;
    int64_t t0 = now_us(), deadline = t0 / 1000 + (int64_t)sc->timeout_ms;
    int waited = 0, died = 0;
    enum upload_verdict v = VERDICT_ERROR;
    for (;;) {
        /* The scanner may be restarting: wait for it, within scan_timeout. */
        int s = connect_unix(sc->path);
        if (s < 0) {
            if (now_ms() + 100 >= deadline) {
                snprintf(reason, reason_len, "scanner unavailable");
                log_error("upload %s: scanner at %s unavailable for %llu ms: %s", id, sc->path,
                          (unsigned long long)sc->timeout_ms, strerror(-s));
                break;
            }
            if (!waited++)
                log_warn("upload %s: scanner at %s not answering (%s); waiting for it", id,
                         sc->path, strerror(-s));
            usleep(100 * 1000);
            continue;
        }
        enum attempt a =
            fildes_once(sc, s, fd, id, deadline, &v, virus, virus_len, reason, reason_len);
        close(s);
        if (a == DONE) break;
        /* A scanner that died mid-scan is respawned by the master: scan once
         * more. Twice is the file's doing, not bad luck: do not take the
         * scanner down again and again (and every scan with it). */
        if (a == DIED && ++died == 2) {
            snprintf(reason, reason_len, "the scanner went away twice while scanning this file");
            log_error("upload %s: the scanner at %s went away twice while scanning it; not "
                      "scanned again (verdict error). If the scanner's log shows it crashed, "
                      "this file may crash libclamav: keep it for analysis",
                      id, sc->path);
            break;
        }
        if (now_ms() + 100 >= deadline) break;
        if (a == DIED) log_warn("upload %s: %s; retrying", id, reason);
        usleep(100 * 1000);
    }
    metrics_scan(sc->metrics, (uint64_t)(now_us() - t0));
    return v;
}

int scan_ping(const char *path, int timeout_ms)
{
    int s = connect_unix(path);
    if (s < 0) return -1;
    int64_t deadline = now_ms() + timeout_ms;
    char reply[64];
    const char *why;
    int rc = -1;
    if (send(s, "zPING", 6, MSG_NOSIGNAL) == 6 &&
        read_reply(s, reply, sizeof reply, deadline, &why) == 0 && strcmp(reply, "PONG") == 0)
        rc = 0;
    close(s);
    return rc;
}
