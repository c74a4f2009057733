/* scand: intake-scand, the scanner process (intake-scand(8)). Loads the
 * signature databases once with libclamav and answers a subset of clamd's
 * protocol on a UNIX stream socket: PING, VERSION, SCAN, CONTSCAN, MULTISCAN,
 * ALLMATCHSCAN, INSTREAM, FILDES (z- or n-prefixed, or bare with a
 * newline), and IDSESSION/END.
 *
 * Each connection has its own thread, so a client that stalls or sends
 * garbage holds only itself; scans take one of --threads slots only once
 * their input is complete. Every read has a timeout, every length a limit.
 * libclamav fails open in quiet ways; each is closed here: the engine gets
 * its own checked temp dir, archives are parsed, files past a limit alert
 * (Heuristics.Limits.Exceeded.*) instead of passing, an engine with zero
 * signatures refuses to start, a CL_VIRUS without a name gets the name the
 * virus-found callback saw, and the EICAR test file is scanned through the
 * upload path at start and every minute: if it is not found, the scanner
 * exits (the master respawns it; intaked meanwhile fails closed).
 *
 * This is the only program that links libclamav (GPL-2.0). */
#define _GNU_SOURCE
#include "config.h"
#include "log.h"
#include "proctitle.h"
#include "scand_dirs.h"
#include "scand_tempfiles.h"

#include <clamav.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef INTAKE_VERSION
#define INTAKE_VERSION "0.1.0"
#endif

#define CMD_MAX (PATH_MAX + 64)
#define READ_TIMEOUT_S 30 /* a command, or the next INSTREAM chunk */
#define MAX_CONNECTIONS 256
#define SELFTEST_PERIOD_S 60

static const char EICAR[] = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

static struct cl_engine *engine;
static unsigned int signatures;
static char tmpdir[PATH_MAX];
static const char *tmpbase; /* --tmpdir, or $TMPDIR, or /tmp */
static int tmplock = -1;    /* flock held on tmpdir/lock while this scanner lives */
static uint64_t max_size = 1ULL << 30;
static sem_t scan_slots;
static int active_connections;
static pthread_mutex_t conn_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t stopping, reopen_logs;
/* Set by the main thread once it stops (after the signal): a scan that ends
 * after it is answered ERROR, never OK, and the process leaves with _exit
 * once the scans in libclamav are done, without atexit handlers: exit()
 * tore down OpenSSL under running scans, and libclamav then reported
 * infected files clean. */
static atomic_bool shutting_down;
static atomic_int scans_running;
static char sock_path[108];
static void unlink_own_socket(void);

/* --- libclamav -------------------------------------------------------------- */

/* Set on a scanning thread when libclamav reports that it could not make a
 * temporary directory or file during the scan. libclamav 1.4 then goes on
 * and reports the file CLEAN without having scanned it (or with members it
 * could not extract unscanned): such a scan is an error here, never OK. */
static _Thread_local bool tmp_failed;

static void on_clamav_msg(enum cl_msg severity, const char *fullmsg, const char *msg, void *ctx)
{
    (void)fullmsg;
    (void)ctx;
    if (severity == CL_MSG_ERROR && (strcasestr(msg, "temporary") || strstr(msg, "tmp")))
        tmp_failed = true;
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    if (severity == CL_MSG_ERROR)
        log_error("libclamav: %.*s", (int)n, msg);
    else if (severity == CL_MSG_WARN)
        log_warn("libclamav: %.*s", (int)n, msg);
    else
        log_debug("libclamav: %.*s", (int)n, msg);
}

#define MAX_MATCHES 16

struct scan_ctx {
    char names[MAX_MATCHES][128]; /* what the virus-found callback reported */
    int n;
};

static void on_virus_found(int fd, const char *virname, void *context)
{
    (void)fd;
    struct scan_ctx *sc = context;
    if (!sc || !virname || sc->n == MAX_MATCHES) return;
    snprintf(sc->names[sc->n++], sizeof sc->names[0], "%s", virname);
}

enum verdict { V_CLEAN, V_FOUND, V_ERROR };

/* Scans an open file. Writes the virus name or the error message. */
/* With allmatch (ALLMATCHSCAN) every match is reported: out holds the names
 * one per line. */
static void remove_tree_at(int parent, const char *name);

/* Out of descriptors, libclamav cannot empty its per-scan directory and
 * leaves it, with what it extracted. Removing it needs descriptors too, so
 * what cannot go now is tried again after each later scan, not kept until
 * the scanner exits. */
#define LEFTOVERS_MAX 16
static pthread_mutex_t leftovers_mu = PTHREAD_MUTEX_INITIALIZER;
static char leftovers[LEFTOVERS_MAX][PATH_MAX];
static int n_leftovers;

static void remove_leftovers(const char *now)
{
    pthread_mutex_lock(&leftovers_mu);
    if (now && n_leftovers < LEFTOVERS_MAX)
        snprintf(leftovers[n_leftovers++], sizeof leftovers[0], "%s", now);
    for (int i = 0; i < n_leftovers;) {
        struct stat st;
        remove_tree_at(AT_FDCWD, leftovers[i]);
        if (lstat(leftovers[i], &st) < 0 && errno == ENOENT) {
            memmove(leftovers[i], leftovers[--n_leftovers], sizeof leftovers[0]);
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&leftovers_mu);
}

static enum verdict scan_fd_all(int fd, char *out, size_t outlen, bool allmatch)
{
    struct cl_scan_options opts;
    memset(&opts, 0, sizeof opts);
    opts.general = CL_SCAN_GENERAL_HEURISTICS | (allmatch ? CL_SCAN_GENERAL_ALLMATCHES : 0);
    opts.parse = ~0u;
    /* What the engine cannot look into is reported, never passed: files past
     * a limit, archives and documents it cannot decrypt (intaked makes
     * Heuristics.Limits.Exceeded.* and Heuristics.Encrypted.* verdict error). */
    opts.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE |
                     CL_SCAN_HEURISTIC_ENCRYPTED_DOC;
    struct scan_ctx *sc = calloc(1, sizeof *sc);
    if (!sc) {
        snprintf(out, outlen, "out of memory");
        return V_ERROR;
    }
    const char *virname = NULL;
    unsigned long scanned = 0;
    sem_wait(&scan_slots);
    /* Counted before the flag is read: the stopping main thread either sees
     * this scan running or this scan sees it stopping. */
    atomic_fetch_add(&scans_running, 1);
    tmp_failed = false;
    scand_tempfiles_watch(); /* libclamav does not check every temp file */
    scand_dirs_scan_begin();
    cl_error_t rc = atomic_load(&shutting_down)
                        ? CL_EARG
                        : cl_scandesc_callback(fd, NULL, &virname, &scanned, engine, &opts, sc);
    int temp_error = scand_tempfiles_end();
    remove_leftovers(scand_dirs_scan_leftover());
    bool failed = tmp_failed;
    bool stopped = atomic_load(&shutting_down); /* never cleared once set */
    atomic_fetch_sub(&scans_running, 1);
    sem_post(&scan_slots);
    /* Found is found; anything else from a scan that did not see the
     * whole file is an error, never OK. */
    if (rc != CL_VIRUS && (stopped || failed || temp_error)) {
        free(sc);
        if (stopped) {
            snprintf(out, outlen, "not scanned: the scanner is stopping");
        } else if (failed) {
            snprintf(out, outlen, "not scanned: the engine could not use its temporary directory");
        } else {
            /* What it extracted was cut short or left out. */
            log_error("a scan could not make or write a temporary file in %s: %s; answered "
                      "ERROR, not OK. Make room (space, inodes) on that file system (--tmpdir), "
                      "or raise the file-size or open-files limit",
                      tmpdir, strerror(temp_error));
            snprintf(out, outlen,
                     "not scanned: the engine could not make or write a temporary file (%s)",
                     strerror(temp_error));
        }
        return V_ERROR;
    }
    if (rc == CL_VIRUS) {
        if (allmatch && sc->n > 1) {
            size_t o = 0;
            out[0] = '\0';
            for (int i = 0; i < sc->n && o < outlen; i++)
                o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? "\n" : "", sc->names[i]);
        } else {
            const char *name = virname ? virname : sc->n ? sc->names[0] : "Heuristics.Unknown";
            snprintf(out, outlen, "%s", name);
        }
        free(sc);
        return V_FOUND;
    }
    free(sc);
    if (rc == CL_CLEAN) return V_CLEAN;
    snprintf(out, outlen, "%s", cl_strerror(rc));
    return V_ERROR;
}

static enum verdict scan_fd(int fd, char *out, size_t outlen)
{
    return scan_fd_all(fd, out, outlen, false);
}

/* The EICAR test file, scanned exactly as an uploaded file is (an fd). */
static int selftest(void)
{
    int fd = memfd_create("intake-scand-selftest", MFD_CLOEXEC);
    if (fd < 0 || write(fd, EICAR, sizeof EICAR - 1) != (ssize_t)(sizeof EICAR - 1)) {
        log_error("self-test: cannot create the test file: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    lseek(fd, 0, SEEK_SET);
    char name[256];
    enum verdict v = scan_fd(fd, name, sizeof name);
    close(fd);
    /* Refused because the scanner is stopping: that says nothing of the
     * engine (it was logged as a failed self-test, a false alarm). */
    if (v != V_FOUND && atomic_load(&shutting_down)) return -1;
    if (v != V_FOUND) {
        log_error("self-test FAILED: the EICAR test file was %s%s%s; the scanner would miss "
                  "malware. Check signature_dir and the temp directory.",
                  v == V_CLEAN ? "reported clean" : "not scanned (", v == V_ERROR ? name : "",
                  v == V_ERROR ? ")" : "");
        return -1;
    }
    return 0;
}

static int check_tmpdir(void)
{
    /* An unusable temp dir makes libclamav report every archive clean. */
    char probe[PATH_MAX + 16];
    snprintf(probe, sizeof probe, "%s/probe", tmpdir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, "x", 1) != 1) {
        log_error("temp directory %s is not writable: %s", tmpdir, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

/* rm -r of what the directory parent/name holds, but an entry named keep
 * (NULL: none), not following symlinks. How many entries it left there
 * besides keep (-1: the directory could not be read). */
static int empty_dir_at(int parent, const char *name, const char *keep, int depth)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int left = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (keep && !strcmp(e->d_name, keep)) continue;
        if (unlinkat(fd, e->d_name, 0) == 0) continue;
        if (errno == EISDIR && depth < 32 && empty_dir_at(fd, e->d_name, NULL, depth + 1) >= 0 &&
            unlinkat(fd, e->d_name, AT_REMOVEDIR) == 0)
            continue;
        left++;
    }
    closedir(d);
    return left;
}

/* rm -r of parent/name (libclamav leaves a directory per scan, with what it
 * extracted, when it is killed mid-scan). */
static void remove_tree_at(int parent, const char *name)
{
    empty_dir_at(parent, name, NULL, 0);
    unlinkat(parent, name, AT_REMOVEDIR);
}

/* Temp directories of scanners that are gone (kill -9, a crash): every live
 * scanner holds an flock on its directory's "lock" file, which the kernel
 * drops when it dies. A directory without that file (being created, or not
 * ours) is left alone. */
static void sweep_stale_tmpdirs(void)
{
    DIR *d = opendir(tmpbase);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "intake-scand.", 13) != 0) continue;
        int dfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) continue;
        int lfd = openat(dfd, "lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) == 0) {
            remove_tree_at(dirfd(d), e->d_name);
            log_info("removed %s/%s, the temp directory of a scanner that is gone", tmpbase,
                     e->d_name);
        }
        if (lfd >= 0) close(lfd);
        close(dfd);
    }
    closedir(d);
}

/* A fresh temp directory, marked as in use by this process. */
static int make_tmpdir(void)
{
    if (mkdir(tmpbase, 0700) < 0 && errno != EEXIST) {
        log_error("cannot create the temp directory %s: %s", tmpbase, strerror(errno));
        return -1;
    }
    sweep_stale_tmpdirs();
    snprintf(tmpdir, sizeof tmpdir, "%s/intake-scand.XXXXXX", tmpbase);
    if (!mkdtemp(tmpdir)) {
        log_error("cannot create a temp directory under %s: %s", tmpbase, strerror(errno));
        tmpdir[0] = '\0';
        return -1;
    }
    /* Locked before it gets its final name: a sweeper never sees it unlocked. */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lock.new", tmpdir);
    tmplock = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (tmplock < 0 || flock(tmplock, LOCK_EX | LOCK_NB) < 0) {
        log_error("cannot lock the temp directory %s: %s", tmpdir, strerror(errno));
        return -1;
    }
    char final[PATH_MAX + 16];
    snprintf(final, sizeof final, "%s/lock", tmpdir);
    if (rename(path, final) < 0) {
        log_error("cannot lock the temp directory %s: %s", tmpdir, strerror(errno));
        return -1;
    }
    return 0;
}

static int load_engine(const char *sigdir)
{
    cl_set_clcb_msg(on_clamav_msg);
    cl_error_t rc = cl_init(CL_INIT_DEFAULT);
    if (rc != CL_SUCCESS) {
        log_error("libclamav init failed: %s", cl_strerror(rc));
        return -1;
    }
    if (make_tmpdir() < 0 || check_tmpdir() < 0) return -1;
    scand_dirs_init(tmpdir); /* each scan's directory is parked and reused */
    scand_tempfiles_init(tmpdir);
    engine = cl_engine_new();
    if (!engine) return -1;
    cl_engine_set_str(engine, CL_ENGINE_TMPDIR, tmpdir);
    /* No clean cache: libclamav remembers every file it calls clean and
     * answers the same bytes clean again unscanned, also after a scan that
     * was answered ERROR here (a temp file cut short, the temp dir gone, a
     * stop), and there is no call to forget one. Uploads are rarely the
     * same file twice, and the cache cost an MD5 of every file it saw. */
    cl_engine_set_num(engine, CL_ENGINE_DISABLE_CACHE, 1);
    /* libclamav cannot scan past 4000 MiB; bigger limits are refused by it. */
    uint64_t lim = max_size < (4000ULL << 20) ? max_size : (4000ULL << 20);
    cl_engine_set_num(engine, CL_ENGINE_MAX_FILESIZE, (long long)lim);
    cl_engine_set_num(engine, CL_ENGINE_MAX_SCANSIZE, (long long)lim);
    cl_engine_set_clcb_virus_found(engine, on_virus_found);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = cl_load(sigdir, engine, &signatures, CL_DB_STDOPT);
    if (rc != CL_SUCCESS) {
        log_error("cannot load signatures from %s: %s", sigdir, cl_strerror(rc));
        return -1;
    }
    if (signatures == 0) {
        log_error("%s holds no signatures: refusing to run a scanner that finds nothing", sigdir);
        return -1;
    }
    rc = cl_engine_compile(engine);
    if (rc != CL_SUCCESS) {
        log_error("cannot compile the engine: %s", cl_strerror(rc));
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    log_info("loaded %u signatures from %s in %.0f ms (libclamav %s, temp dir %s)", signatures,
             sigdir,
             (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
             cl_retver(), tmpdir);
    return 0;
}

/* --- one connection ------------------------------------------------------------ */

struct client {
    int fd;
    char buf[CMD_MAX + 8];
    size_t len;
    /* Descriptors received with SCM_RIGHTS, not yet used, in the order they
     * came; FD_LOST where one was sent and could not be received. */
    int fds[16];
    int nfds;
    bool session;
    unsigned id; /* IDSESSION request counter */
    char term;   /* reply terminator: '\0' (z) or '\n' (n, bare) */
};

#define FD_LOST (-1)

/* Queues a received descriptor, or FD_LOST. Full (a client with 16
 * descriptors sent ahead of their commands): closed, and -1, the client is
 * dropped, since a later FILDES would take another file's descriptor. */
static int queue_fd(struct client *cl, int fd)
{
    if (cl->nfds == (int)(sizeof cl->fds / sizeof cl->fds[0])) {
        if (fd >= 0) close(fd);
        return -1;
    }
    cl->fds[cl->nfds++] = fd;
    return 0;
}

/* recvmsg into the buffer, keeping any passed descriptors in order. >0
 * bytes, 0 EOF, -1 error or timeout. A message's descriptors the kernel
 * could not give (MSG_CTRUNC: out of descriptors here) are queued as
 * FD_LOST, so the FILDES they came with fails instead of taking the next
 * FILDES's file (one recvmsg takes one message's descriptors at most). */
static ssize_t fill(struct client *cl)
{
    if (cl->len >= sizeof cl->buf) return -1;
    char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    struct iovec iov = {.iov_base = cl->buf + cl->len, .iov_len = sizeof cl->buf - cl->len};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n;
    do
        n = recvmsg(cl->fd, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    /* A failed recvmsg (the read timeout, a reset) leaves m and cbuf as they
     * were: cbuf is uninitialized, and walking it would close whatever
     * descriptors its garbage names, other threads' included. */
    if (n < 0) return -1;
    int got = 0, overflow = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *p = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < k; i++, got++)
            overflow |= queue_fd(cl, p[i]) < 0;
    }
    if (m.msg_flags & MSG_CTRUNC) {
        if (got) {
            log_warn("a client passed more file descriptors in one message than fit; the extra "
                     "ones were dropped");
        } else {
            log_warn("a client passed a file descriptor this scanner could not take (no free "
                     "descriptor: raise its open-files limit); that FILDES is answered ERROR");
            overflow |= queue_fd(cl, FD_LOST) < 0;
        }
    }
    if (overflow) {
        log_warn("a client sent more than 16 file descriptors ahead of their commands; "
                 "connection closed");
        return -1;
    }
    if (n > 0) cl->len += (size_t)n;
    return n;
}

static void reply(struct client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct client *cl, const char *fmt, ...)
{
    char out[PATH_MAX + 512];
    int n = 0;
    if (cl->session) n = snprintf(out, sizeof out, "%u: ", cl->id);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(out + n, sizeof out - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof out - 2) len = sizeof out - 2;
    out[len++] = cl->term;
    ssize_t w = send(cl->fd, out, len, MSG_NOSIGNAL);
    (void)w;
}

/* Takes the next command out of the buffer: 1 with cmd set, 0 need more, -1 bad. */
static int next_command(struct client *cl, char *cmd, size_t cap)
{
    if (cl->len == 0) return 0;
    char term;
    size_t start = 0;
    if (cl->buf[0] == 'z')
        term = '\0', start = 1;
    else if (cl->buf[0] == 'n')
        term = '\n', start = 1;
    else
        term = '\n';
    char *end = memchr(cl->buf + start, term, cl->len - start);
    if (!end) return cl->len >= CMD_MAX ? -1 : 0;
    size_t n = (size_t)(end - cl->buf) - start;
    if (n >= cap) return -1;
    memcpy(cmd, cl->buf + start, n);
    cmd[n] = '\0';
    if (n && cmd[n - 1] == '\r') cmd[n - 1] = '\0';
    size_t used = (size_t)(end - cl->buf) + 1;
    memmove(cl->buf, cl->buf + used, cl->len - used);
    cl->len -= used;
    cl->term = term;
    return 1;
}

static void do_fildes(struct client *cl)
{
    /* clamdscan sends the descriptor with a dummy byte right after the
     * command; other clients attach it to the command itself. */
    while (cl->nfds == 0) {
        ssize_t n = fill(cl);
        if (n <= 0) {
            reply(cl, "FILDES: didn't receive file descriptor. ERROR");
            return;
        }
    }
    int fd = cl->fds[0];
    memmove(cl->fds, cl->fds + 1, (size_t)--cl->nfds * sizeof(int));
    /* Drop the dummy byte(s) that carried it. */
    while (cl->len && (cl->buf[0] == '\0' || cl->buf[0] == '\n')) {
        memmove(cl->buf, cl->buf + 1, --cl->len);
    }
    if (fd == FD_LOST) {
        reply(cl, "FILDES: the file descriptor could not be received (too many open files). "
                  "ERROR");
        return;
    }
    char out[512];
    enum verdict v = scan_fd(fd, out, sizeof out);
    if (v == V_CLEAN)
        reply(cl, "fd[%d]: OK", fd);
    else if (v == V_FOUND)
        reply(cl, "fd[%d]: %s FOUND", fd, out);
    else
        reply(cl, "fd[%d]: %s ERROR", fd, out);
    if (v == V_FOUND) log_info("fd[%d]: %s FOUND", fd, out);
    close(fd);
}

/* Reads exactly n bytes (from what is buffered, then the socket). */
static int read_exact(struct client *cl, void *dst, size_t n, int out_fd)
{
    char *d = dst;
    while (n) {
        if (cl->len == 0) {
            ssize_t r = fill(cl);
            if (r <= 0) return -1;
        }
        size_t k = cl->len < n ? cl->len : n;
        if (out_fd >= 0) {
            if (write(out_fd, cl->buf, k) != (ssize_t)k) return -2;
        } else {
            memcpy(d, cl->buf, k);
            d += k;
        }
        memmove(cl->buf, cl->buf + k, cl->len - k);
        cl->len -= k;
        n -= k;
    }
    return 0;
}

/* Returns false when the connection must close. */
static bool do_instream(struct client *cl)
{
    int tfd = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (tfd < 0) {
        reply(cl, "INSTREAM: cannot create a temporary file: %s ERROR", strerror(errno));
        return false;
    }
    uint64_t total = 0;
    for (;;) {
        unsigned char lenbuf[4];
        if (read_exact(cl, lenbuf, 4, -1) < 0) {
            log_info("INSTREAM: client went away or stalled after %llu bytes",
                     (unsigned long long)total);
            close(tfd);
            return false;
        }
        uint32_t n = (uint32_t)lenbuf[0] << 24 | (uint32_t)lenbuf[1] << 16 |
                     (uint32_t)lenbuf[2] << 8 | lenbuf[3];
        if (n == 0) break;
        if (total + n > max_size) {
            reply(cl, "INSTREAM size limit exceeded. ERROR");
            close(tfd);
            return false;
        }
        int r = read_exact(cl, NULL, n, tfd);
        if (r < 0) {
            if (r == -2) reply(cl, "INSTREAM: cannot write a temporary file ERROR");
            close(tfd);
            return false;
        }
        total += n;
    }
    lseek(tfd, 0, SEEK_SET);
    char out[512];
    enum verdict v = scan_fd(tfd, out, sizeof out);
    close(tfd);
    if (v == V_CLEAN)
        reply(cl, "stream: OK");
    else if (v == V_FOUND)
        reply(cl, "stream: %s FOUND", out);
    else
        reply(cl, "stream: %s ERROR", out);
    return true;
}

/* SCAN: a file, or a directory walked until the first virus; CONTSCAN and
 * MULTISCAN (all_found) report every infected file. Returns 1 if anything
 * was found, -1 on an error, 0 if clean. */
static int scan_path(struct client *cl, const char *path, int depth, bool all_found, bool allmatch)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        reply(cl, "%s: %s ERROR", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        if (depth > 15) return 0;
        DIR *d = opendir(path);
        if (!d) {
            reply(cl, "%s: %s ERROR", path, strerror(errno));
            return -1;
        }
        struct dirent *e;
        int rc = 0;
        while ((rc == 0 || (all_found && rc > 0)) && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char sub[PATH_MAX];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) continue;
            int r = scan_path(cl, sub, depth + 1, all_found, allmatch);
            if (r != 0 && rc >= 0) rc = r;
        }
        closedir(d);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        reply(cl, "%s: %s ERROR", path, strerror(errno));
        return -1;
    }
    char out[MAX_MATCHES * 130];
    enum verdict v = scan_fd_all(fd, out, sizeof out, allmatch);
    close(fd);
    if (v == V_FOUND) {
        for (char *save = NULL, *name = strtok_r(out, "\n", &save); name;
             name = strtok_r(NULL, "\n", &save))
            reply(cl, "%s: %s FOUND", path, name);
        return 1;
    }
    if (v == V_ERROR) {
        reply(cl, "%s: %s ERROR", path, out);
        return -1;
    }
    return 0;
}

static void do_scan(struct client *cl, const char *path, bool all_found, bool allmatch)
{
    if (path[0] != '/') {
        reply(cl, "%s: path must be absolute ERROR", path);
        return;
    }
    if (scan_path(cl, path, 0, all_found, allmatch) == 0) reply(cl, "%s: OK", path);
}

static void *client_thread(void *arg)
{
    struct client *cl = arg;
    struct timeval tv = {.tv_sec = READ_TIMEOUT_S};
    setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char cmd[CMD_MAX];
    for (;;) {
        int r = next_command(cl, cmd, sizeof cmd);
        if (r < 0) {
            cl->term = '\n';
            reply(cl, "COMMAND READ TIMED OUT OR TOO LONG ERROR");
            break;
        }
        if (r == 0) {
            if (fill(cl) <= 0) break;
            continue;
        }
        if (cmd[0] == '\0') continue; /* a stray separator */
        if (cl->session) cl->id++;
        bool keep = cl->session;
        if (strcmp(cmd, "PING") == 0)
            reply(cl, "PONG");
        else if (strcmp(cmd, "VERSION") == 0)
            reply(cl, "ClamAV %s/%u/intake-scand %s", cl_retver(), signatures, INTAKE_VERSION);
        else if (strcmp(cmd, "FILDES") == 0)
            do_fildes(cl);
        else if (strcmp(cmd, "INSTREAM") == 0)
            keep = do_instream(cl) && keep;
        else if (strncmp(cmd, "SCAN ", 5) == 0)
            do_scan(cl, cmd + 5, false, false);
        else if (strncmp(cmd, "CONTSCAN ", 9) == 0)
            do_scan(cl, cmd + 9, true, false);
        else if (strncmp(cmd, "MULTISCAN ", 10) == 0)
            do_scan(cl, cmd + 10, true, false);
        else if (strncmp(cmd, "ALLMATCHSCAN ", 13) == 0)
            do_scan(cl, cmd + 13, true, true);
        else if (strcmp(cmd, "IDSESSION") == 0 && !cl->session) {
            cl->session = true;
            keep = true;
        } else if (strcmp(cmd, "END") == 0 && cl->session)
            keep = false;
        else
            reply(cl, "UNKNOWN COMMAND");
        if (!keep) break;
    }
    for (int i = 0; i < cl->nfds; i++)
        if (cl->fds[i] >= 0) close(cl->fds[i]);
    close(cl->fd);
    free(cl);
    pthread_mutex_lock(&conn_mu);
    active_connections--;
    pthread_mutex_unlock(&conn_mu);
    return NULL;
}

/* --- the server ------------------------------------------------------------------ */

static void *selftest_thread(void *arg)
{
    (void)arg;
    for (;;) {
        sleep(SELFTEST_PERIOD_S);
        if (selftest() < 0 && !atomic_load(&shutting_down)) {
            log_error("periodic self-test failed: exiting so the master restarts the scanner");
            unlink_own_socket();
            _exit(3);
        }
    }
    return NULL;
}

static ino_t sock_ino; /* the socket file this process created */

/* Listens on path, taking it over atomically: bind a private name, then
 * rename it over path. A scanner already there (an old one during a binary
 * upgrade, a dying one during a respawn) keeps its accepted connections;
 * new ones come here, and there is never a moment without a socket. */
static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char tmp[sizeof sa.sun_path + 16];
    if (snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid()) >= (int)sizeof sa.sun_path) {
        log_error("socket path %s is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, tmp);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* Create the socket's directory (run/ on a fresh checkout). */
    char dir[sizeof sa.sun_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0755);
    }
    unlink(tmp);
    mode_t old = umask(0117); /* socket 0660: the workers' user and group */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    struct stat st;
    if (rc < 0 || listen(fd, 128) < 0 || rename(tmp, path) < 0 || stat(path, &st) < 0) {
        log_error("cannot listen on %s: %s", path, strerror(errno));
        unlink(tmp);
        close(fd);
        return -1;
    }
    sock_ino = st.st_ino;
    return fd;
}

/* Removes the socket file only if it is still ours (not a successor's). */
static void unlink_own_socket(void)
{
    struct stat st;
    if (sock_ino && stat(sock_path, &st) == 0 && st.st_ino == sock_ino) unlink(sock_path);
}

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    reopen_logs = 1;
}

/* Our temp dir goes, its lock last: if a scan that outlived the wait keeps
 * adding to it, the lock stays, and the next scanner's sweep (which needs
 * it) removes the rest once this process is gone. */
static void cleanup_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/lock", tmpdir);
    int left = empty_dir_at(AT_FDCWD, tmpdir, "lock", 0);
    if (left < 0) return; /* gone already */
    if (left > 0 || unlink(lock) < 0 || unlinkat(AT_FDCWD, tmpdir, AT_REMOVEDIR) < 0)
        log_warn("temp directory %s is not empty after the scans; the next scanner removes it",
                 tmpdir);
}

/* Waits (at most `ms`) for the scans inside libclamav to end. */
static void wait_for_scans(int ms)
{
    struct timespec step = {0, 10 * 1000 * 1000};
    for (int waited = 0; atomic_load(&scans_running) > 0 && waited < ms; waited += 10)
        nanosleep(&step, NULL);
    int left = atomic_load(&scans_running);
    if (left > 0)
        log_warn("%d scans still running at exit; their clients see the scanner go away", left);
}

static void usage(FILE *f)
{
    fputs("usage: intake-scand --socket PATH --signatures DIR [--threads N] [--max-size SIZE]\n"
          "                    [--tmpdir DIR]\n"
          "  --socket PATH      UNIX socket to listen on (clamd protocol)\n"
          "  --signatures DIR   ClamAV databases (.cvd/.cld/.hdb/.ndb/...), loaded once\n"
          "  --tmpdir DIR       where the engine's temp directory goes (default $TMPDIR or\n"
          "                     /tmp; intaked passes spool_dir/intake-scand); those of\n"
          "                     scanners that are gone are removed at start\n"
          "  --threads N        concurrent scans (default: online CPUs)\n"
          "  --max-size SIZE    largest file scanned in full and largest INSTREAM (default 1G;\n"
          "                     bigger files alert Heuristics.Limits.Exceeded, never pass)\n"
          "  -V, --version      print the version\n"
          "  -h, --help         this help\n",
          f);
}

int main(int argc, char **argv)
{
    const char *sock = NULL, *sigdir = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    static const struct option longs[] = {
        {"socket", required_argument, 0, 's'},  {"signatures", required_argument, 0, 'd'},
        {"threads", required_argument, 0, 't'}, {"max-size", required_argument, 0, 'm'},
        {"tmpdir", required_argument, 0, 'T'},  {"version", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    /* A descriptor 0-2 its starter left closed would be the next file opened
     * (the temp dir's lock) and take log lines or reads meant elsewhere. In
     * this order, an open gets the lowest free descriptor: that one. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) open("/dev/null", O_RDWR);
    proctitle_init(argc, argv);
    while ((c = getopt_long(argc, argv, "Vh", longs, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 'd':
            sigdir = optarg;
            break;
        case 't':
            threads = strtol(optarg, NULL, 10);
            if (threads < 1 || threads > 256) {
                fprintf(stderr, "intake-scand: --threads wants 1-256\n");
                return 2;
            }
            break;
        case 'm':
            if (config_parse_size(optarg, &max_size) < 0 || max_size == 0) {
                fprintf(stderr, "intake-scand: bad --max-size \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'T':
            tmpbase = optarg;
            break;
        case 'V':
            printf("intake-scand %s (libclamav %s)\n", INTAKE_VERSION, cl_retver());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!sock || !sigdir || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (!tmpbase) tmpbase = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
    proctitle_set("intake-scand");
    /* intaked passes its log_level; run by hand, the default is info. */
    enum log_level level = LOG_INFO;
    if (getenv("INTAKE_LOG_LEVEL")) log_level_parse(getenv("INTAKE_LOG_LEVEL"), &level);
    const char *logfile = getenv("INTAKE_LOG_FILE");
    if (!logfile || log_open(logfile, level) < 0) log_open("stderr", level);
    log_capture_stderr(); /* libclamav's own messages follow the log through USR1 */
    log_set_role("scanner");
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (ulimit -f) makes a temp file's write fail, which
     * the scan then reports, instead of killing the scanner mid-scan. */
    signal(SIGXFSZ, SIG_IGN);
    /* Nested archives hold a descriptor per level in every scan thread:
     * take all the descriptors allowed (a failed open fails the scan). */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    snprintf(sock_path, sizeof sock_path, "%s", sock);
    sem_init(&scan_slots, 0, (unsigned)threads);
    int rc = 1;
    int lfd = -1;
    if (load_engine(sigdir) < 0) goto out;
    if (selftest() < 0) goto out;
    log_info("self-test passed: the EICAR test file is detected");
    /* The stop and reopen signals are taken by the main thread alone, only
     * inside ppoll: every thread, created from here on, inherits them
     * blocked, so none can swallow a TERM while accept waits on. */
    sigset_t sigs, waitmask;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGQUIT);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGQUIT);
    sigdelset(&waitmask, SIGUSR1);
    /* Without its periodic self-test the scanner could silently stop finding
     * malware: no thread, no scanner. */
    pthread_t st;
    int perr = pthread_create(&st, NULL, selftest_thread, NULL);
    if (perr != 0) {
        log_error("cannot start the self-test thread: %s", strerror(perr));
        goto out;
    }
    pthread_detach(st);
    lfd = listen_unix(sock);
    if (lfd < 0) goto out;
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    struct sigaction su = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &su, NULL);
    signal(SIGHUP, SIG_IGN);
    log_info("intake-scand ready on %s (%ld scan threads, files up to %llu bytes)", sock, threads,
             (unsigned long long)max_size);
    while (!stopping) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int pr = ppoll(&pfd, 1, NULL, &waitmask);
        int cfd = pr > 0 ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
        if (pr < 0 && errno != EINTR) log_error("poll: %s", strerror(errno));
        if (reopen_logs) {
            reopen_logs = 0;
            if (log_reopen() < 0)
                log_error("cannot reopen the log: %s", strerror(errno));
            else
                log_info("log reopened");
        }
        if (cfd < 0) {
            if (pr <= 0 || errno == EINTR || errno == EAGAIN) continue;
            if (errno == EMFILE || errno == ENFILE) {
                log_error("accept: %s; waiting", strerror(errno));
                sleep(1);
            }
            continue;
        }
        pthread_mutex_lock(&conn_mu);
        bool full = active_connections >= MAX_CONNECTIONS;
        if (!full) active_connections++;
        pthread_mutex_unlock(&conn_mu);
        if (full) {
            static const char busy[] = "MAX CONNECTIONS REACHED ERROR\n";
            ssize_t w = send(cfd, busy, sizeof busy - 1, MSG_NOSIGNAL);
            (void)w;
            close(cfd);
            continue;
        }
        struct client *cl = calloc(1, sizeof *cl);
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int terr = cl ? (cl->fd = cfd, pthread_create(&t, &a, client_thread, cl)) : ENOMEM;
        if (terr != 0) {
            log_error("cannot start a thread for a connection: %s", strerror(terr));
            static const char nothread[] = "CANNOT START A THREAD ERROR\n";
            ssize_t w = send(cfd, nothread, sizeof nothread - 1, MSG_NOSIGNAL);
            (void)w;
            close(cfd);
            free(cl);
            pthread_mutex_lock(&conn_mu);
            active_connections--;
            pthread_mutex_unlock(&conn_mu);
        }
        pthread_attr_destroy(&a);
    }
    log_info("intake-scand stopping");
    atomic_store(&shutting_down, true);
    rc = 0;
out:
    if (lfd >= 0) {
        close(lfd);
        unlink_own_socket();
    }
    /* Scans that ended now were answered ERROR; the ones inside libclamav
     * get a moment, then die with the process. */
    wait_for_scans(2000);
    cleanup_tmpdir();
    /* _exit, not exit: atexit handlers (OpenSSL's) must not run while a
     * scan may still be inside libclamav. */
    _exit(rc);
}
