/* master: see master.h. Signals stay blocked and are taken synchronously with
 * sigtimedwait, so every action runs in the main loop, never in a handler.
 * Processes carry a generation number: a reload (later) starts generation n+1
 * beside the draining generation n without special cases. */
#define _GNU_SOURCE
#include "master.h"

#include "log.h"
#include "metrics.h"
#include "net.h"
#include "pidfile.h"
#include "proctitle.h"
#include "scan.h"
#include "store.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <sys/prctl.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 1024
#define TERM_GRACE_S 4.0  /* TERM: children get this long before SIGKILL */
#define QUIT_GRACE_S 5.0  /* QUIT: beyond shutdown_timeout before SIGKILL */

enum master_state { RUNNING, QUITTING, TERMINATING };

#define SCANNER_SLOT (-1)
#define PROBE_PERIOD_S 2.0

struct proc {
    pid_t pid;
    int slot; /* worker slot, or SCANNER_SLOT */
    unsigned gen;
    bool stopping; /* we asked it to go: do not respawn */
    double started;
};

struct master {
    struct config *cfg;
    struct listener ls[CONFIG_MAX_LISTEN];
    int n_ls;
    struct proc procs[MAX_PROCS];
    int n_procs;
    unsigned gen;
    int n_workers;
    enum master_state state;
    double deadline; /* QUITTING/TERMINATING: SIGKILL what is left then */
    bool killed;
    double last_crash_respawn;
    int pending_respawn[MAX_PROCS]; /* slots waiting for their respawn time */
    int n_pending;
    double respawn_at;
    uid_t uid;
    gid_t gid;
    bool drop;
    struct metrics *metrics;
    char scand[4096];   /* the intake-scand binary, next to intaked */
    double next_probe;  /* scanner health check */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill_sigset(sigset_t *s)
{
    sigemptyset(s);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1,
                  SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(s, sigs[i]);
}

static void drop_privileges(struct master *m)
{
    if (!m->drop) return;
    if (setgroups(0, NULL) < 0 || initgroups(m->cfg->user, m->gid) < 0 || setgid(m->gid) < 0 ||
        setuid(m->uid) < 0) {
        log_error("cannot switch to user \"%s\": %s", m->cfg->user, strerror(errno));
        _exit(2);
    }
}

static int count_workers(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_procs; i++) n += m->procs[i].slot != SCANNER_SLOT;
    return n;
}

static void add_proc(struct master *m, pid_t pid, int slot)
{
    m->procs[m->n_procs++] = (struct proc){.pid = pid, .slot = slot, .gen = m->gen,
                                           .started = now_s()};
    if (m->metrics) m->metrics->workers = count_workers(m);
}

/* fork + exec intake-scand: its libclamav engine (a full database is ~1 GiB)
 * never lives in the workers' address space. */
static int spawn_scanner(struct master *m)
{
    if (m->n_procs == MAX_PROCS) return -1;
    struct config *c = m->cfg;
    pid_t pid = fork();
    if (pid < 0) {
        log_error("cannot fork the scanner: %s; will retry", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (log_fd() > 2) dup2(log_fd(), 2);
        drop_privileges(m);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        static const char *const levels[] = {"error", "warn", "info", "debug"};
        setenv("INTAKE_LOG_LEVEL", levels[c->log_level & 3], 1);
        char maxsize[32];
        snprintf(maxsize, sizeof maxsize, "%llu", (unsigned long long)c->max_file_size);
        char *argv[] = {"intake-scand", "--socket", c->scanner_socket, "--signatures",
                        c->signature_dir, "--max-size", maxsize, NULL};
        execv(m->scand, argv);
        log_error("cannot run %s: %s", m->scand, strerror(errno));
        _exit(127);
    }
    add_proc(m, pid, SCANNER_SLOT);
    log_info("started the scanner intake-scand (pid %d) on %s", (int)pid, c->scanner_socket);
    return 0;
}

static int spawn_worker(struct master *m, int slot)
{
    if (m->n_procs == MAX_PROCS) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        log_error("cannot fork worker %d: %s; will retry", slot, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        drop_privileges(m);
        worker_run(m->cfg, m->ls, m->n_ls, slot, m->metrics);
    }
    add_proc(m, pid, slot);
    log_info("started worker %d (pid %d)", slot, (int)pid);
    return 0;
}

enum which { WORKERS = 1, SCANNER = 2, ALL = 3 };

static void signal_procs(struct master *m, enum which which, int sig)
{
    for (int i = 0; i < m->n_procs; i++) {
        struct proc *p = &m->procs[i];
        bool is_scanner = p->slot == SCANNER_SLOT;
        if (!((which & SCANNER) && is_scanner) && !((which & WORKERS) && !is_scanner)) continue;
        p->stopping = p->stopping || sig == SIGQUIT || sig == SIGTERM || sig == SIGKILL;
        kill(p->pid, sig);
    }
}

static void close_listeners(struct master *m)
{
    for (int i = 0; i < m->n_ls; i++) {
        close(m->ls[i].fd);
        if (m->ls[i].addr->is_unix) unlink(m->ls[i].addr->path);
    }
    m->n_ls = 0;
}

static void describe_exit(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status)) snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else snprintf(buf, cap, "stopped (status %d)", status);
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int i = 0;
        while (i < m->n_procs && m->procs[i].pid != pid) i++;
        if (i == m->n_procs) continue;
        struct proc p = m->procs[i];
        m->procs[i] = m->procs[--m->n_procs];
        if (m->metrics) m->metrics->workers = count_workers(m);
        char how[128], what[64];
        describe_exit(status, how, sizeof how);
        if (p.slot == SCANNER_SLOT) {
            snprintf(what, sizeof what, "scanner intake-scand");
            if (m->metrics) m->metrics->scanner = MS_DOWN;
        } else {
            snprintf(what, sizeof what, "worker %d", p.slot);
        }
        bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (p.stopping) {
            log_info("%s (pid %d) %s", what, (int)pid, how);
            continue;
        }
        /* While draining, the scanner still serves the uploads in flight. */
        if (m->state == TERMINATING || (m->state == QUITTING && p.slot != SCANNER_SLOT)) continue;
        log_error("%s (pid %d) %s; respawning it%s", what, (int)pid, how,
                  p.slot == SCANNER_SLOT ? " (uploads wait for it, up to scan_timeout)"
                  : clean                ? ""
                                         : " (its open connections were lost)");
        m->pending_respawn[m->n_pending++] = p.slot;
    }
}

static void respawn_due(struct master *m, double t)
{
    if (m->n_pending == 0 || m->state == TERMINATING) return;
    /* First crash: respawn at once. Repeated crashes: at most once a second. */
    if (t - m->last_crash_respawn < 1.0) {
        m->respawn_at = m->last_crash_respawn + 1.0;
        return;
    }
    int slot = m->pending_respawn[0];
    memmove(m->pending_respawn, m->pending_respawn + 1, (size_t)--m->n_pending * sizeof(int));
    m->last_crash_respawn = t;
    int rc = slot == SCANNER_SLOT ? spawn_scanner(m) : spawn_worker(m, slot);
    if (rc < 0) m->pending_respawn[m->n_pending++] = slot;
    m->respawn_at = m->n_pending ? t + 1.0 : 0;
}

static int bind_all(struct master *m)
{
    struct config *c = m->cfg;
    for (int i = 0; i < c->n_listen; i++) {
        const char *why = "";
        int fd = net_listen(&c->listen[i], &why);
        if (fd < 0) {
            log_error("cannot listen on %s (%s): %s: %s", c->listen[i].text,
                      c->listen[i].kind == LISTEN_WS ? "listen_ws" : "listen_tcp", why,
                      strerror(-fd));
            return -1;
        }
        if (c->listen[i].tls) {
            log_error("%s: TLS listeners are not available in this version of intaked; remove "
                      "\"tls\" or terminate TLS in nginx",
                      c->listen[i].text);
            close(fd);
            return -1;
        }
        m->ls[m->n_ls++] = (struct listener){.fd = fd, .addr = &c->listen[i]};
    }
    return 0;
}

static int prepare_user(struct master *m)
{
    struct config *c = m->cfg;
    if (!c->user) return 0;
    if (geteuid() != 0) {
        log_warn("\"user %s\" ignored: intaked is not running as root", c->user);
        return 0;
    }
    struct passwd *pw = getpwnam(c->user);
    if (!pw) {
        log_error("user \"%s\" does not exist", c->user);
        return -1;
    }
    m->uid = pw->pw_uid;
    m->gid = pw->pw_gid;
    m->drop = true;
    const char *dirs[] = {c->spool_dir, c->accept_dir, c->quarantine_dir};
    for (int i = 0; i < 3; i++)
        if (chown(dirs[i], m->uid, m->gid) < 0)
            log_warn("cannot give %s to user %s: %s", dirs[i], c->user, strerror(errno));
    return 0;
}

int master_run(struct config *cfg)
{
    static struct master mm;
    struct master *m = &mm;
    m->cfg = cfg;
    m->gen = 1;
    m->n_workers = cfg->workers ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (m->n_workers < 1) m->n_workers = 1;
    proctitle_set("intaked: master process");

    struct store st;
    const char *which = "";
    int rc = store_open(&st, cfg->spool_dir, cfg->accept_dir, cfg->quarantine_dir, &which);
    if (rc < 0) {
        log_error("cannot create or open %s: %s", which, strerror(-rc));
        return 1;
    }
    store_close(&st);
    if (prepare_user(m) < 0) return 1;
    if (cfg->scanner == SCANNER_BUILTIN) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
        snprintf(m->scand, sizeof m->scand, "%s/intake-scand", dirname(self));
        if (access(m->scand, X_OK) < 0) {
            log_error("scanner builtin: %s not found or not executable; install intake-scand "
                      "next to intaked, or set \"scanner unix:/path\" or \"scanner off\"",
                      m->scand);
            return 1;
        }
    }
    m->metrics = metrics_create();
    if (!m->metrics) {
        log_error("cannot map the shared metrics segment: %s", strerror(errno));
        return 1;
    }
    m->metrics->scanner = cfg->scanner == SCANNER_OFF ? MS_OFF : MS_DOWN;
    if (bind_all(m) < 0) return 1;
    if (cfg->daemon && daemon(1, 0) < 0) {
        log_error("cannot detach (daemon on): %s", strerror(errno));
        return 1;
    }
    if (pidfile_write(cfg->pid_file) < 0) {
        close_listeners(m);
        return 1;
    }
    if (cfg->scanner == SCANNER_OFF)
        log_warn("scanner off: uploads are accepted without a malware scan (verdict unscanned)");

    sigset_t set;
    fill_sigset(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (cfg->scanner == SCANNER_BUILTIN) spawn_scanner(m);
    for (int i = 0; i < m->n_workers; i++) spawn_worker(m, i);
    for (int i = 0; i < m->n_ls; i++)
        log_info("listening on %s (%s)", m->ls[i].addr->text,
                 m->ls[i].addr->kind == LISTEN_WS ? "WebSocket/HTTP" : "raw TCP");
    log_info("master ready: %d workers", m->n_workers);

    for (;;) {
        reap(m); /* also catches exits whose SIGCHLD merged with another */
        double t = now_s();
        respawn_due(m, t);
        if (m->state == QUITTING && count_workers(m) == 0 && m->n_procs > 0) {
            /* The last upload is finished: the scanner can go now. */
            signal_procs(m, SCANNER, SIGTERM);
        }
        if (m->state != RUNNING && m->n_procs == 0) break;
        if (cfg->scanner != SCANNER_OFF && m->state == RUNNING && t >= m->next_probe) {
            const char *path = cfg->scanner == SCANNER_BUILTIN ? cfg->scanner_socket
                                                               : cfg->scanner_path;
            int up = scan_ping(path, 300) == 0;
            if (m->metrics->scanner != (up ? MS_UP : MS_DOWN)) {
                if (up) log_info("scanner at %s is up", path);
                else log_warn("scanner at %s is down: uploads wait for it up to scan_timeout, "
                              "then get verdict error",
                              path);
            }
            m->metrics->scanner = up ? MS_UP : MS_DOWN;
            /* Check often until it first comes up, then every few seconds. */
            m->next_probe = now_s() + (up ? PROBE_PERIOD_S : 0.25);
        }
        if (m->state != RUNNING && !m->killed && t >= m->deadline) {
            log_warn("%d processes still running after the grace period; killing them",
                     m->n_procs);
            signal_procs(m, ALL, SIGKILL);
            m->killed = true;
        }
        double wait = 1.0;
        if (cfg->scanner != SCANNER_OFF && m->state == RUNNING && m->next_probe - t < wait)
            wait = m->next_probe - t;
        if (m->respawn_at > 0 && m->respawn_at - t < wait) wait = m->respawn_at - t;
        if (m->state != RUNNING && !m->killed && m->deadline - t < wait) wait = m->deadline - t;
        if (wait < 0.001) wait = 0.001;
        struct timespec ts = {.tv_sec = (time_t)wait,
                              .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig < 0) continue;
        switch (sig) {
        case SIGCHLD: reap(m); break;
        case SIGTERM:
        case SIGINT:
            if (m->state == TERMINATING) break;
            log_info("%s: fast shutdown", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            m->state = TERMINATING;
            m->deadline = now_s() + TERM_GRACE_S;
            m->killed = false;
            close_listeners(m);
            signal_procs(m, ALL, SIGTERM);
            break;
        case SIGQUIT:
            if (m->state != RUNNING) break;
            log_info("SIGQUIT: graceful shutdown, draining uploads for up to %llu ms",
                     (unsigned long long)cfg->shutdown_timeout_ms);
            m->state = QUITTING;
            m->deadline = now_s() + (double)cfg->shutdown_timeout_ms / 1e3 + QUIT_GRACE_S;
            close_listeners(m);
            signal_procs(m, WORKERS, SIGQUIT);
            break;
        case SIGUSR1:
            if (log_reopen() < 0) log_error("cannot reopen the error log: %s", strerror(errno));
            log_info("SIGUSR1: log files reopened");
            signal_procs(m, WORKERS, SIGUSR1);
            break;
        case SIGHUP:
        case SIGUSR2:
        case SIGWINCH:
        case SIGTTIN:
        case SIGTTOU:
            log_warn("%s received: not supported by this version of intaked; ignored",
                     strsignal(sig));
            break;
        default: break;
        }
    }
    close_listeners(m);
    pidfile_remove(cfg->pid_file);
    log_info("master exiting");
    return 0;
}
