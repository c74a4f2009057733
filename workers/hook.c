/* hook: see hook.h. */
#define _GNU_SOURCE
#include "hook.h"

#include "container.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* What one hook may put in the error log; the rest is read and dropped. */
#define HOOK_LOG_MAX (64 * 1024)

struct hooks {
    struct ev_loop *loop;
    char *const *argv;
    double timeout;
    uint64_t timeout_ms;
    int cap, running, queued;
    bool stopping; /* hooks_stop was called: nothing starts any more */
    struct hook_run *head, *tail; /* waiting for a slot */
    struct hook_run *live;        /* running (linked through next) */
    struct metrics_slot *metrics;
};

static void start(struct hooks *hs, struct hook_run *h);
static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents);

struct hooks *hooks_start(struct ev_loop *loop, char *const *argv, uint64_t timeout_ms, int cap,
                          struct metrics_slot *metrics)
{
    struct hooks *hs = calloc(1, sizeof *hs);
    if (!hs) return NULL;
    hs->loop = loop;
    hs->argv = argv;
    hs->timeout_ms = timeout_ms;
    hs->timeout = (double)timeout_ms / 1e3;
    hs->cap = cap > 0 ? cap : 1;
    hs->metrics = metrics;
    return hs;
}

int hooks_pending(const struct hooks *hs)
{
    return hs ? hs->running + hs->queued : 0;
}

/* Reported from the loop, after hooks_submit returned: a hook that never
 * ran (it could not be started, or the worker is stopping). */
static void report_later(struct hooks *hs, struct hook_run *h)
{
    h->pid = 0;
    ev_init(&h->timer, on_timeout);
    ev_timer_set(&h->timer, 0.0, 0.0);
    ev_timer_start(hs->loop, &h->timer);
}

/* One that will not run: the worker is past shutdown_timeout. */
static void drop_stopped(struct hooks *hs, struct hook_run *h)
{
    h->stopped = true;
    snprintf(h->why, sizeof h->why, "not started: the worker is past shutdown_timeout");
    report_later(hs, h);
}

void hooks_submit(struct hooks *hs, struct hook_run *h)
{
    h->hs = hs;
    h->next = NULL;
    h->pgid_ix = -1;
    h->pid = 0;
    /* Nothing open yet, whichever way it ends. */
    h->in_io.fd = h->exit_io.fd = h->out.io.fd = h->err.io.fd = -1;
    if (hs->stopping) {
        drop_stopped(hs, h);
        return;
    }
    if (hs->running < hs->cap) {
        start(hs, h);
        return;
    }
    if (hs->tail)
        hs->tail->next = h;
    else
        hs->head = h;
    hs->tail = h;
    hs->queued++;
}

/* --- output to the error log ---------------------------------------------------- */

static void emit(struct hook_stream *s, const char *p, size_t n, bool cut)
{
    struct hook_run *h = s->h;
    if (h->logged >= HOOK_LOG_MAX) return;
    h->logged += n;
    /* log_msg escapes the whole line: a hook cannot forge log lines. */
    log_info("upload %s: accept hook %s: %.*s%s", h->id, s->name, (int)n, p, cut ? " [...]" : "");
    if (h->logged >= HOOK_LOG_MAX)
        log_warn("upload %s: accept hook wrote more than %d bytes; the rest is not logged", h->id,
                 HOOK_LOG_MAX);
}

static void take(struct hook_stream *s, const char *buf, size_t n)
{
    while (n) {
        const char *nl = memchr(buf, '\n', n);
        size_t chunk = nl ? (size_t)(nl - buf) : n;
        size_t room = sizeof s->line - s->len;
        if (chunk > room) chunk = room;
        memcpy(s->line + s->len, buf, chunk);
        s->len += chunk;
        buf += chunk;
        n -= chunk;
        if (n && *buf == '\n') { /* a whole line */
            emit(s, s->line, s->len, false);
            s->len = 0;
            buf++;
            n--;
        } else if (s->len == sizeof s->line) { /* too long: in pieces */
            emit(s, s->line, s->len, true);
            s->len = 0;
        }
    }
}

static void stream_close(struct hook_run *h, struct hook_stream *s)
{
    if (s->io.fd < 0) return;
    ev_io_stop(h->hs->loop, &s->io);
    close(s->io.fd);
    s->io.fd = -1;
    if (s->len) emit(s, s->line, s->len, false);
    s->len = 0;
}

/* Reads what is there. Returns false at EOF or error (closed). */
static bool stream_read(struct hook_run *h, struct hook_stream *s)
{
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(s->io.fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n <= 0) {
            stream_close(h, s);
            return false;
        }
        take(s, buf, (size_t)n);
    }
    return true;
}

static void on_output(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct hook_stream *s = container_of(io, struct hook_stream, io);
    stream_read(s->h, s);
}

/* --- stdin ------------------------------------------------------------------------ */

static void in_close(struct hook_run *h)
{
    if (h->in_io.fd < 0) return;
    ev_io_stop(h->hs->loop, &h->in_io);
    close(h->in_io.fd);
    h->in_io.fd = -1;
}

static void on_input(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct hook_run *h = container_of(io, struct hook_run, in_io);
    while (h->in_off < h->input_len) {
        ssize_t n = write(io->fd, h->input + h->in_off, h->input_len - h->in_off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) break; /* EPIPE: the hook does not read its input; its exit status says */
        h->in_off += (size_t)n;
    }
    in_close(h);
}

/* --- the end ---------------------------------------------------------------------- */

static void finish(struct hook_run *h, bool ok, const char *reason)
{
    struct hooks *hs = h->hs;
    ev_timer_stop(hs->loop, &h->timer);
    in_close(h);
    stream_close(h, &h->out);
    stream_close(h, &h->err);
    free(h->input);
    h->input = NULL;
    if (h->pid > 0) {
        for (struct hook_run **p = &hs->live; *p; p = &(*p)->next)
            if (*p == h) {
                *p = h->next;
                break;
            }
        hs->running--;
        double secs = ev_now(hs->loop) - h->started;
        /* One stopped by a shutdown did not fail: not counted. */
        if (ok || !h->stopped)
            metrics_hook(hs->metrics, ok ? MH_OK : h->timed_out ? MH_TIMEOUT : MH_FAILED,
                         (uint64_t)(secs > 0 ? secs * 1e6 : 0));
    } else if (!h->stopped) {
        metrics_hook(hs->metrics, MH_FAILED, 0); /* it could not be started */
    }
    h->pid = 0;
    /* A slot is free: the next waiting hook starts. */
    while (hs->head && hs->running < hs->cap && !hs->stopping) {
        struct hook_run *n = hs->head;
        hs->head = n->next;
        if (!hs->head) hs->tail = NULL;
        hs->queued--;
        start(hs, n);
    }
    h->done(h, ok, reason);
}

/* The master's view of the hooks running (metrics.h, hook_pgid): written
 * once the hook runs, cleared once its group has been killed, before the
 * leader is reaped, so an entry never names a group id that could be
 * reused. A worker that dies between the spawn and the entry leaves that
 * one hook to run out on its own. */
static void remember_group(struct hook_run *h)
{
    h->pgid_ix = -1;
    if (!h->hs->metrics) return;
    int32_t *e = h->hs->metrics->hook_pgid;
    for (int i = 0; i < METRICS_HOOKS; i++)
        if (__atomic_load_n(&e[i], __ATOMIC_RELAXED) == 0) {
            __atomic_store_n(&e[i], (int32_t)h->pid, __ATOMIC_RELEASE);
            h->pgid_ix = i;
            return;
        }
}

static void forget_group(struct hook_run *h)
{
    if (h->pgid_ix < 0) return;
    __atomic_store_n(&h->hs->metrics->hook_pgid[h->pgid_ix], 0, __ATOMIC_RELEASE);
    h->pgid_ix = -1;
}

static void on_exit_(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct hook_run *h = container_of(io, struct hook_run, exit_io);
    struct hooks *hs = h->hs;
    /* The hook is a zombie now, so its pid (and group id) cannot be reused
     * yet: kill whatever it left running in its group, then reap it. */
    kill(-h->pid, SIGKILL);
    forget_group(h);
    int status = 0;
    pid_t r;
    do
        r = waitpid(h->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return; /* not yet: the pidfd wakes us again */
    ev_io_stop(hs->loop, io);
    close(io->fd);
    io->fd = -1;
    /* What it wrote before it ended. */
    if (h->out.io.fd >= 0) stream_read(h, &h->out);
    if (h->err.io.fd >= 0) stream_read(h, &h->err);
    char reason[128];
    bool ok = false;
    if (r < 0) {
        snprintf(reason, sizeof reason, "cannot learn how it ended: %s", strerror(errno));
    } else if (h->stopped && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        /* An exit 0 that came just before the deadline is a success. */
        snprintf(reason, sizeof reason,
                 "stopped at shutdown_timeout (killed with its process group)");
    } else if (h->timed_out) {
        snprintf(reason, sizeof reason, "timed out after %llu ms (killed with its process group)",
                 (unsigned long long)hs->timeout_ms);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        ok = true;
        reason[0] = '\0';
    } else if (WIFEXITED(status)) {
        snprintf(reason, sizeof reason, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(reason, sizeof reason, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(reason, sizeof reason, "ended with wait status %d", status);
    }
    finish(h, ok, reason);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hook_run *h = container_of(t, struct hook_run, timer);
    if (h->pid <= 0) { /* it never started: report (after hooks_submit returned) */
        finish(h, false, h->why);
        return;
    }
    h->timed_out = true;
    log_warn("upload %s: accept hook still running after %llu ms; killing its process group %d",
             h->id, (unsigned long long)h->hs->timeout_ms, (int)h->pid);
    kill(-h->pid, SIGKILL);
}

/* --- start ------------------------------------------------------------------------ */

/* A pipe whose two ends are close-on-exec and above 2 (so that moving one
 * to 0, 1 or 2 in the child is never a no-op that keeps close-on-exec). */
static int hook_pipe(int fds[2])
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -1;
    for (int i = 0; i < 2; i++) {
        if (p[i] > 2) {
            fds[i] = p[i];
            continue;
        }
        fds[i] = fcntl(p[i], F_DUPFD_CLOEXEC, 3);
        close(p[i]);
        if (fds[i] < 0) {
            if (i == 1) close(fds[0]);
            else close(p[1]);
            return -1;
        }
    }
    return 0;
}

static void start(struct hooks *hs, struct hook_run *h)
{
    h->pid = 0;
    h->timed_out = false;
    h->in_off = 0;
    h->logged = 0;
    h->in_io.fd = h->exit_io.fd = h->out.io.fd = h->err.io.fd = -1;
    h->out.h = h->err.h = h;
    h->out.name = "stdout";
    h->err.name = "stderr";
    h->out.len = h->err.len = 0;
    ev_init(&h->timer, on_timeout);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int rc = 0;
    const char *what = "pipe";
    if (hook_pipe(in) < 0 || hook_pipe(out) < 0 || hook_pipe(err) < 0) rc = errno;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_ok = false, at_ok = false;
    pid_t pid = 0;
    if (!rc) {
        what = "posix_spawn";
        fa_ok = posix_spawn_file_actions_init(&fa) == 0;
        at_ok = posix_spawnattr_init(&at) == 0;
        sigset_t none, dfl;
        sigemptyset(&none);
        /* Ignored in the worker, and ignored dispositions survive exec. */
        sigemptyset(&dfl);
        sigaddset(&dfl, SIGPIPE);
        sigaddset(&dfl, SIGHUP);
        if (!fa_ok || !at_ok || posix_spawn_file_actions_adddup2(&fa, in[0], 0) ||
            posix_spawn_file_actions_adddup2(&fa, out[1], 1) ||
            posix_spawn_file_actions_adddup2(&fa, err[1], 2) ||
            /* Everything is close-on-exec already; this makes sure. */
            posix_spawn_file_actions_addclosefrom_np(&fa, 3) ||
            posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                              POSIX_SPAWN_SETSIGDEF) ||
            posix_spawnattr_setpgroup(&at, 0) || posix_spawnattr_setsigmask(&at, &none) ||
            posix_spawnattr_setsigdefault(&at, &dfl))
            rc = ENOMEM;
        else
            rc = posix_spawnp(&pid, hs->argv[0], &fa, &at, hs->argv, environ);
    }
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (at_ok) posix_spawnattr_destroy(&at);
    int pidfd = -1;
    if (!rc) {
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by design */
        if (pidfd < 0) {
            rc = errno;
            what = "pidfd_open";
            kill(-pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    if (in[0] >= 0) close(in[0]);
    if (out[1] >= 0) close(out[1]);
    if (err[1] >= 0) close(err[1]);
    if (rc) {
        if (in[1] >= 0) close(in[1]);
        if (out[0] >= 0) close(out[0]);
        if (err[0] >= 0) close(err[0]);
        snprintf(h->why, sizeof h->why, "cannot start it: %s: %s", what, strerror(rc));
        log_error("upload %s: cannot start the accept hook %s (%s: %s)", h->id, hs->argv[0], what,
                  strerror(rc));
        report_later(hs, h);
        return;
    }
    h->pid = pid;
    remember_group(h);
    h->started = ev_now(hs->loop);
    h->next = hs->live;
    hs->live = h;
    hs->running++;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    ev_io_init(&h->exit_io, on_exit_, pidfd, EV_READ);
    ev_io_start(hs->loop, &h->exit_io);
    ev_io_init(&h->in_io, on_input, in[1], EV_WRITE);
    ev_io_start(hs->loop, &h->in_io);
    ev_io_init(&h->out.io, on_output, out[0], EV_READ);
    ev_io_start(hs->loop, &h->out.io);
    ev_io_init(&h->err.io, on_output, err[0], EV_READ);
    ev_io_start(hs->loop, &h->err.io);
    ev_timer_set(&h->timer, hs->timeout, 0.0);
    ev_timer_start(hs->loop, &h->timer);
    log_debug("upload %s: accept hook started, pid %d", h->id, (int)pid);
}

void hooks_stop(struct hooks *hs)
{
    if (!hs || hs->stopping) return;
    hs->stopping = true;
    for (struct hook_run *h = hs->live; h; h = h->next)
        if (h->pid > 0) {
            log_warn("upload %s: shutdown_timeout reached while its accept hook runs; killing "
                     "its process group %d; the upload is kept in the spool",
                     h->id, (int)h->pid);
            h->stopped = true;
            kill(-h->pid, SIGKILL); /* on_exit_ reaps it and reports */
        }
    while (hs->head) {
        struct hook_run *h = hs->head;
        hs->head = h->next;
        hs->queued--;
        drop_stopped(hs, h);
    }
    hs->tail = NULL;
}

void hooks_kill_all(struct hooks *hs)
{
    if (!hs) return;
    for (struct hook_run *h = hs->live; h; h = h->next)
        if (h->pid > 0) {
            log_warn("upload %s: the worker is exiting; killing its accept hook (process group "
                     "%d); the upload is kept in the spool",
                     h->id, (int)h->pid);
            kill(-h->pid, SIGKILL);
            forget_group(h); /* done: the master need not */
        }
}
