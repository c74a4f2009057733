/* master: see master.h. Signals stay blocked and are taken synchronously with
 * sigtimedwait, so every action runs in the main loop, never in a handler.
 *
 * Processes carry a generation. A reload (HUP) reads the configuration
 * anew, keeps the listening sockets whose address is unchanged (the same
 * fds: their queued connections are not lost), binds the new ones, starts
 * generation n+1's workers and only then tells generation n to drain (QUIT):
 * stop accepting, finish the uploads in flight within shutdown_timeout. The
 * listening sockets are shared by all workers, so a connection waiting in a
 * queue is taken by whichever generation accepts first. A binary upgrade
 * (USR2) re-executes the binary with the listening fds inherited through
 * INTAKED_LISTENERS, as nginx does. */
#define _GNU_SOURCE
#include "master.h"

#include "log.h"
#include "metrics.h"
#include "net.h"
#include "notify.h"
#include "pidfile.h"
#include "proctitle.h"
#include "scan.h"
#include "store.h"
#include "sweep.h"
#include "tls.h"
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 1024
#define TERM_GRACE_S 4.0 /* TERM: children get this long before SIGKILL */
#define QUIT_GRACE_S 5.0 /* QUIT: beyond shutdown_timeout before SIGKILL */
#define SCANNER_SLOT (-1)
#define PROBE_PERIOD_S 2.0
#define PROBE_TIMEOUT_MS 500 /* a scanner that does not answer PING by then is down */

enum master_state { RUNNING, QUITTING, TERMINATING };

struct proc {
    pid_t pid;
    int slot; /* worker slot (metrics), or SCANNER_SLOT */
    unsigned gen;
    bool stopping;  /* we asked it to go: do not respawn */
    bool replaced;  /* a scanner kept until its successor serves, or (wait_successor
                       false) until the older workers are gone; stopping too */
    bool wait_successor;
    double kill_at; /* SIGKILL a drainer still there then */
};

struct master_listener {
    int fd;
    struct listen_addr addr; /* a copy: configurations come and go */
    bool inherited;          /* from the previous binary: its unix path is not ours */
};

struct master {
    struct config *cfg;
    const struct master_args *args;
    struct master_listener ls[CONFIG_MAX_LISTEN];
    int n_ls;
    struct proc procs[MAX_PROCS];
    int n_procs;
    unsigned gen;
    int n_workers;   /* the current generation's target */
    bool no_workers; /* WINCH: keep the listeners, run no workers */
    enum master_state state;
    double deadline; /* QUITTING/TERMINATING: SIGKILL what is left then */
    bool killed;
    double last_crash_respawn;
    int pending_respawn[MAX_PROCS]; /* worker slots to respawn */
    int n_pending;
    double respawn_at;
    double scanner_next_start; /* a scanner starts at most once a second */
    uid_t uid;
    gid_t gid;
    bool drop;
    struct metrics *metrics;
    char self[PATH_MAX];  /* this binary, for USR2 */
    char scand[PATH_MAX]; /* intake-scand, next to it */
    double next_probe;
    double next_sweep; /* spool files past resume_timeout */
    struct sweep sweep;
    pid_t upgrade_pid; /* the new binary's master after USR2 */
    char oldbin[PATH_MAX + 8];
    bool told_ready;     /* systemd has READY=1 from this master */
    pid_t upgraded_from; /* the old binary's master, while it may roll back to it */
    bool detached;       /* daemon on: standard error is /dev/null */
    bool on_terminal;    /* has a controlling terminal: WINCH may be a window resize */
    bool successor_failed; /* a replacing scanner could not start: none is tried again
                              while the replaced one serves, until the next reload */
    char scanner_log[PATH_MAX]; /* the builtin scanner's error_log and level, from its start */
    int scanner_log_level;
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
    int sigs[] = {SIGCHLD, SIGTERM,  SIGINT,  SIGQUIT, SIGHUP, SIGUSR1,
                  SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaddset(s, sigs[i]);
}

static int worker_count(const struct config *c)
{
    int n = c->workers ? c->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

/* --- processes ---------------------------------------------------------------- */

static void drop_privileges(struct master *m)
{
    if (!m->drop) return;
    if (setgroups(0, NULL) < 0 || initgroups(m->cfg->user, m->gid) < 0 || setgid(m->gid) < 0 ||
        setuid(m->uid) < 0) {
        log_error("cannot switch to user \"%s\": %s", m->cfg->user, strerror(errno));
        _exit(2);
    }
}

static int count_workers(const struct master *m, bool current_only)
{
    int n = 0;
    for (int i = 0; i < m->n_procs; i++)
        n += m->procs[i].slot != SCANNER_SLOT &&
             (!current_only || (m->procs[i].gen == m->gen && !m->procs[i].stopping));
    return n;
}

static void update_gauges(struct master *m)
{
    if (m->metrics) m->metrics->workers = count_workers(m, false);
}

static void add_proc(struct master *m, pid_t pid, int slot)
{
    m->procs[m->n_procs++] = (struct proc){.pid = pid, .slot = slot, .gen = m->gen};
    update_gauges(m);
}

/* The lowest metrics slot no live worker uses. */
static int free_slot(const struct master *m)
{
    for (int s = 0; s < METRICS_SLOTS; s++) {
        bool used = false;
        for (int i = 0; i < m->n_procs && !used; i++)
            used = m->procs[i].slot == s;
        for (int i = 0; i < m->n_pending && !used; i++)
            used = m->pending_respawn[i] == s;
        if (!used) return s;
    }
    return METRICS_SLOTS - 1;
}

/* fork + exec intake-scand: its libclamav engine (a full database is ~1 GiB)
 * never lives in the workers' address space. */
static int spawn_scanner(struct master *m)
{
    if (m->n_procs == MAX_PROCS) return -1;
    struct config *c = m->cfg;
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_error("cannot fork the scanner: %s; will retry", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        log_errors_to_stderr(false);
        if (log_fd() > 2) dup2(log_fd(), 2);
        drop_privileges(m);
        /* After setuid, which clears it; and if the master is already gone,
         * do not start at all. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != master) _exit(0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        static const char *const levels[] = {"error", "warn", "info", "debug"};
        setenv("INTAKE_LOG_LEVEL", levels[c->log_level & 3], 1);
        /* A log file is reopened by the scanner itself on USR1. */
        if (c->error_log[0] == '/' || strcmp(c->error_log, "syslog") == 0)
            setenv("INTAKE_LOG_FILE", c->error_log, 1);
        else
            unsetenv("INTAKE_LOG_FILE");
        unsetenv(MASTER_INHERIT_ENV);
        char maxsize[32];
        snprintf(maxsize, sizeof maxsize, "%llu", (unsigned long long)c->max_file_size);
        /* What the engine extracts goes on the spool's disk (not a tmpfs),
         * where the next scanner sweeps what a killed one left. */
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s/intake-scand", c->spool_dir);
        char *argv[] = {"intake-scand",
                        "--socket",
                        c->scanner_socket,
                        "--signatures",
                        c->signature_dir,
                        "--max-size",
                        maxsize,
                        "--tmpdir",
                        tmp,
                        NULL};
        execv(m->scand, argv);
        log_error("cannot run %s: %s", m->scand, strerror(errno));
        _exit(127);
    }
    add_proc(m, pid, SCANNER_SLOT);
    snprintf(m->scanner_log, sizeof m->scanner_log, "%s", c->error_log);
    m->scanner_log_level = c->log_level;
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
        log_errors_to_stderr(false); /* the master says why it cannot start */
        sweep_close(&m->sweep); /* the master's pass, not the worker's */
        drop_privileges(m);
        struct listener ls[CONFIG_MAX_LISTEN];
        for (int i = 0; i < m->n_ls; i++)
            ls[i] = (struct listener){m->ls[i].fd, &m->ls[i].addr};
        worker_run(m->cfg, ls, m->n_ls, slot, m->metrics);
    }
    add_proc(m, pid, slot);
    log_info("started worker %d (pid %d, generation %u)", slot, (int)pid, m->gen);
    return 0;
}

static void spawn_workers(struct master *m)
{
    while (!m->no_workers && count_workers(m, true) < m->n_workers)
        if (spawn_worker(m, free_slot(m)) < 0) break;
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

/* Gracefully retires one worker: it stops accepting and drains. */
static void retire(struct master *m, struct proc *p)
{
    p->stopping = true;
    p->kill_at = now_s() + (double)m->cfg->shutdown_timeout_ms / 1e3 + QUIT_GRACE_S;
    kill(p->pid, SIGQUIT);
}

static void describe_exit(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, cap, "stopped (status %d)", status);
}

static void restart_scanner(struct master *m);
static pid_t scanner_socket_pid(const char *path);

/* Marks ours[i] for each group g[i] (of n) that a child of this master is
 * in, other than the master's own group, in one pass over /proc. Orphans
 * it adopted as subreaper are its children: a group with one of them in it
 * descends from one of our workers, and killing it kills nothing of anyone
 * else's. */
static void adopted_groups(const pid_t *g, bool *ours, int n)
{
    DIR *d = opendir("/proc");
    if (!d) return;
    pid_t me = getpid(), mine = getpgrp();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) continue;
        buf[len] = '\0';
        /* "pid (comm) state ppid pgrp ...": comm may hold anything but
         * ends at the last ')'. */
        char *p = strrchr(buf, ')');
        long ppid, pgrp;
        if (!p || sscanf(p + 1, " %*c %ld %ld", &ppid, &pgrp) != 2 || ppid != me || pgrp <= 1 ||
            pgrp == mine)
            continue;
        for (int i = 0; i < n; i++)
            ours[i] |= g[i] == (pid_t)pgrp;
    }
    closedir(d);
}

/* A worker that ended with accept hooks still running (killed, crashed, or
 * past shutdown_timeout) left them behind with nobody to stop them: they
 * would run on past hook_timeout and past intaked itself, and a re-query
 * would start the hook again beside them. The worker's slot names their
 * groups, but a worker is not trusted (it parses what clients send, and
 * can write its slot): a group is killed only if a process this master
 * adopted (PR_SET_CHILD_SUBREAPER: the hook leader, or its children once
 * it is reaped) is in it, never this master's own group. Their uploads
 * stay in the spool, and a re-query runs the hook again. */
static void kill_orphan_hooks(struct master *m, int slot, pid_t worker)
{
    int32_t *e = m->metrics->slot[slot].hook_pgid;
    pid_t named[METRICS_HOOKS];
    bool ours[METRICS_HOOKS] = {false};
    int n = 0;
    for (int i = 0; i < METRICS_HOOKS; i++) {
        pid_t g = __atomic_exchange_n(&e[i], 0, __ATOMIC_ACQ_REL);
        if (g > 0) named[n++] = g;
    }
    if (n) adopted_groups(named, ours, n);
    for (int i = 0; i < n; i++)
        if (ours[i] && kill(-named[i], SIGKILL) == 0)
            log_warn("worker %d (pid %d) ended with an accept hook running; killed the hook's "
                     "process group %d (its upload stays in the spool; a re-query runs the hook "
                     "again)",
                     slot, (int)worker, (int)named[i]);
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char how[128], what[64];
        describe_exit(status, how, sizeof how);
        if (pid == m->upgrade_pid) {
            /* The new binary is gone: this master is the one again. */
            m->upgrade_pid = 0;
            log_warn("the new binary's master (pid %d) %s; restoring %s", (int)pid, how,
                     m->cfg->pid_file);
            if (rename(m->oldbin, m->cfg->pid_file) < 0)
                log_error("cannot restore %s: %s", m->cfg->pid_file, strerror(errno));
            notify_silence(false);
            m->told_ready = false; /* READY=1 again, with MAINPID= this master */
            /* Its scanner may have taken over the scanner socket path: if
             * ours does not serve it any more, ours starts again. */
            if (m->state == RUNNING && m->cfg->scanner == SCANNER_BUILTIN) {
                pid_t serving = scanner_socket_pid(m->cfg->scanner_socket);
                bool ours = false;
                for (int k = 0; k < m->n_procs; k++)
                    ours |= m->procs[k].slot == SCANNER_SLOT && m->procs[k].pid == serving;
                if (!ours) restart_scanner(m);
            }
            /* Workers stopped by WINCH for the upgrade: nobody serves now. */
            if (m->state == RUNNING && m->no_workers) {
                log_warn("starting workers again: they had been stopped (WINCH) for the upgrade "
                         "that just ended");
                m->no_workers = false;
                spawn_workers(m);
            }
            continue;
        }
        int i = 0;
        while (i < m->n_procs && m->procs[i].pid != pid)
            i++;
        if (i == m->n_procs) continue;
        struct proc p = m->procs[i];
        m->procs[i] = m->procs[--m->n_procs];
        update_gauges(m);
        if (p.slot >= 0 && p.slot < METRICS_SLOTS && m->metrics) {
            __atomic_store_n(&m->metrics->accepting[p.slot], 0, __ATOMIC_RELAXED);
            /* What a dead worker's uploads promised will not be written. */
            __atomic_store_n(&m->metrics->promised[p.slot], 0, __ATOMIC_RELAXED);
            kill_orphan_hooks(m, p.slot, pid);
        }
        if (p.slot == SCANNER_SLOT) {
            snprintf(what, sizeof what, "scanner intake-scand");
            /* A successor that dies while the previous scanner still holds
             * the socket never served: that one goes on. One that had
             * taken the socket over leaves the previous one unreachable:
             * it is stopped, and a new one started as after any crash. */
            bool previous = false;
            pid_t serving = 0;
            for (int k = 0; k < m->n_procs; k++)
                if (m->procs[k].replaced && m->procs[k].wait_successor) {
                    if (!previous && m->cfg->scanner == SCANNER_BUILTIN)
                        serving = scanner_socket_pid(m->cfg->scanner_socket);
                    previous = true;
                }
            bool still_served = false;
            for (int k = 0; k < m->n_procs; k++)
                still_served |= m->procs[k].replaced && m->procs[k].pid == serving;
            if (previous && !p.stopping && !still_served) {
                for (int k = 0; k < m->n_procs; k++)
                    if (m->procs[k].replaced && m->procs[k].wait_successor) {
                        m->procs[k].replaced = false;
                        kill(m->procs[k].pid, SIGTERM);
                    }
                previous = false;
            }
            if (previous && !p.stopping) {
                /* A successor that never served: the previous one goes on,
                 * and none is tried again until the next reload (each try
                 * loads the whole database). */
                m->successor_failed = true;
                log_error("the new scanner (pid %d) %s before it could serve; the previous "
                          "scanner goes on scanning with the previous settings, and no new one is "
                          "tried until the next reload (fix what the line above says, then "
                          "reload)",
                          (int)pid, how);
                continue;
            }
            if (m->metrics && !p.stopping) m->metrics->scanner = MS_DOWN;
        } else {
            snprintf(what, sizeof what, "worker %d", p.slot);
        }
        bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (p.stopping) {
            log_info("%s (pid %d, generation %u) %s", what, (int)pid, p.gen, how);
            continue;
        }
        /* While draining, the scanner still serves the uploads in flight. */
        if (m->state == TERMINATING || (m->state == QUITTING && p.slot != SCANNER_SLOT)) continue;
        if (p.slot != SCANNER_SLOT && (p.gen != m->gen || m->no_workers)) continue;
        log_error("%s (pid %d) %s; respawning it%s", what, (int)pid, how,
                  p.slot == SCANNER_SLOT ? " (uploads wait for it, up to scan_timeout)"
                  : clean                ? ""
                                         : " (its open connections were lost)");
        /* A missing scanner is not an event to remember: reconcile_scanner
         * sees it on every turn of the loop. */
        if (p.slot != SCANNER_SLOT) m->pending_respawn[m->n_pending++] = p.slot;
    }
}

/* "A scanner is wanted" is state, not an event: whatever happened (a crash,
 * a reload, WINCH, a failed fork), every turn of the loop starts one when
 * it is wanted and none is running. */
static bool scanner_wanted(const struct master *m)
{
    if (m->cfg->scanner != SCANNER_BUILTIN) return false;
    /* While draining, the scanner still serves the uploads in flight. */
    return m->state == RUNNING || (m->state == QUITTING && count_workers(m, false) > 0);
}

/* Returns when it wants to be called again (0: not before something changes). */
static double reconcile_scanner(struct master *m, double t)
{
    if (!scanner_wanted(m)) return 0;
    for (int i = 0; i < m->n_procs; i++)
        if (m->procs[i].slot == SCANNER_SLOT &&
            (!m->procs[i].stopping || (m->procs[i].replaced && m->successor_failed)))
            return 0;
    /* First crash: at once. A crash loop: once a second. */
    if (t < m->scanner_next_start) return m->scanner_next_start;
    m->scanner_next_start = t + 1.0;
    return spawn_scanner(m) < 0 ? m->scanner_next_start : 0;
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
    int rc = spawn_worker(m, slot);
    if (rc < 0) m->pending_respawn[m->n_pending++] = slot;
    m->respawn_at = m->n_pending ? t + 1.0 : 0;
}

/* A reload that changes the builtin scanner's settings but not its socket:
 * the new scanner starts beside the old one, which goes on scanning until
 * the new one has loaded its signatures and taken the socket over
 * (retire_replaced). A new one that cannot start (a broken database) leaves
 * the old one serving, with the previous settings, instead of no scanner. */
static void replace_scanner(struct master *m, bool by_successor)
{
    m->successor_failed = false;
    for (int i = 0; i < m->n_procs; i++)
        if (m->procs[i].slot == SCANNER_SLOT && !m->procs[i].stopping) {
            m->procs[i].stopping = true;
            m->procs[i].replaced = true;
            m->procs[i].wait_successor = by_successor;
        } else if (m->procs[i].replaced && !by_successor) {
            /* Replaced before, and now the scanner goes off, to a pool or
             * another socket: no successor will take its socket over; it
             * goes when the workers that may still scan through it do. */
            m->procs[i].wait_successor = false;
        }
    m->scanner_next_start = 0;
    reconcile_scanner(m, now_s());
}

/* Stops the replaced scanners once the socket is their successor's, or,
 * with no successor on that socket (scanner off, a pool, another socket),
 * once the workers of earlier generations, whose scans went there, are
 * gone. */
static void retire_replaced(struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->n_procs; i++)
        n += m->procs[i].replaced;
    if (!n) return;
    pid_t serving = 0;
    bool older_workers = false, successor = false;
    for (int i = 0; i < m->n_procs; i++) {
        older_workers |= m->procs[i].slot != SCANNER_SLOT && m->procs[i].gen != m->gen;
        if (m->procs[i].replaced && m->procs[i].wait_successor && !serving) {
            serving = m->cfg->scanner == SCANNER_BUILTIN
                          ? scanner_socket_pid(m->cfg->scanner_socket)
                          : 0;
            for (int k = 0; k < m->n_procs; k++)
                successor |= m->procs[k].slot == SCANNER_SLOT && !m->procs[k].stopping &&
                             m->procs[k].pid == serving;
        }
    }
    for (int i = 0; i < m->n_procs; i++) {
        struct proc *p = &m->procs[i];
        if (!p->replaced || (p->wait_successor ? !successor : older_workers)) continue;
        p->replaced = false;
        if (p->wait_successor)
            log_info("the new scanner (pid %d) serves; stopping the previous one (pid %d)",
                     (int)serving, (int)p->pid);
        else
            log_info("the workers that scanned with the previous scanner (pid %d) are gone; "
                     "stopping it",
                     (int)p->pid);
        kill(p->pid, SIGTERM);
    }
}

static void restart_scanner(struct master *m)
{
    for (int i = 0; i < m->n_procs; i++)
        if (m->procs[i].slot == SCANNER_SLOT) {
            m->procs[i].stopping = true;
            kill(m->procs[i].pid, SIGTERM);
        }
    m->scanner_next_start = 0; /* asked for: at once */
    reconcile_scanner(m, now_s());
}

/* --- listeners --------------------------------------------------------------------- */

static bool same_address(const struct listen_addr *a, const struct listen_addr *b)
{
    if (a->is_unix || b->is_unix) return a->is_unix && b->is_unix && strcmp(a->path, b->path) == 0;
    return strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0;
}

static void close_listener(struct master *m, struct master_listener *l)
{
    close(l->fd);
    /* A unix socket handed to, or inherited from, another master is still in use. */
    if (l->addr.is_unix && !l->inherited && !m->upgrade_pid) unlink(l->addr.path);
}

static void close_listeners(struct master *m)
{
    for (int i = 0; i < m->n_ls; i++)
        close_listener(m, &m->ls[i]);
    m->n_ls = 0;
}

/* Sockets passed by the previous binary: "fd:kind:address;...". */
static int take_inherited(struct master_listener *out, int max)
{
    const char *env = getenv(MASTER_INHERIT_ENV);
    int n = 0;
    if (!env) return 0;
    char *copy = strdup(env), *save = NULL;
    for (char *tok = strtok_r(copy, ";", &save); tok && n < max; tok = strtok_r(NULL, ";", &save)) {
        char kind;
        int fd, off = 0;
        if (sscanf(tok, "%d:%c:%n", &fd, &kind, &off) != 2 || off == 0 || fcntl(fd, F_GETFD) < 0)
            continue;
        const char *why;
        struct listen_addr a;
        if (config_parse_listen(tok + off, &a, &why) < 0) {
            close(fd);
            continue;
        }
        a.kind = kind == 'w' ? LISTEN_WS : LISTEN_TCP;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        out[n++] = (struct master_listener){.fd = fd, .addr = a, .inherited = true};
    }
    free(copy);
    unsetenv(MASTER_INHERIT_ENV);
    return n;
}

/* Builds the listener set for cfg out of the current one (same fds for the
 * same addresses), the inherited ones, and new binds. On failure nothing
 * changes and -1 is returned. */
static int build_listeners(struct master *m, const struct config *cfg, struct master_listener *pool,
                           int n_pool, struct master_listener *out, int *n_out)
{
    bool taken[CONFIG_MAX_LISTEN * 2] = {false};
    int n = 0;
    for (int i = 0; i < cfg->n_listen; i++) {
        const struct listen_addr *want = &cfg->listen[i];
        int j = 0;
        while (j < n_pool && (taken[j] || !same_address(&pool[j].addr, want)))
            j++;
        if (j < n_pool) {
            taken[j] = true;
            out[n] = pool[j];
            out[n].addr = *want; /* the kind may change; the socket stays */
            n++;
            continue;
        }
        const char *why = "";
        int fd = net_listen(want, &why);
        if (fd < 0) {
            const char *dir = want->kind == LISTEN_WS ? "listen_ws" : "listen_tcp";
            if (fd == NET_UNRESOLVED)
                log_error("%s: cannot listen on %s (%s): the host name does not resolve: %s",
                          cfg->listen_at[i], want->text, dir, why);
            else
                log_error("%s: cannot listen on %s (%s): %s: %s", cfg->listen_at[i], want->text,
                          dir, why, strerror(-fd));
            goto fail;
        }
        out[n++] = (struct master_listener){.fd = fd, .addr = *want};
        (void)m;
    }
    *n_out = n;
    /* What the new set does not use is closed by the caller (pool[!taken]). */
    for (int j = 0; j < n_pool; j++)
        pool[j].fd = taken[j] ? -1 : pool[j].fd;
    return 0;
fail:
    for (int k = 0; k < n; k++) {
        bool from_pool = false;
        for (int j = 0; j < n_pool; j++)
            from_pool |= out[k].fd == pool[j].fd;
        if (!from_pool) close(out[k].fd);
    }
    return -1;
}

/* --- set-up that a reload repeats ---------------------------------------------------- */

/* The scanner, running as user, makes its socket in this directory, which
 * by default also holds the pid file. The user gets to create files there
 * through the group, not the directory itself, and the sticky bit keeps
 * the pid file (root's) from being replaced: owning the directory, a
 * compromised scanner or worker could point root's "intaked -s stop" at any
 * process. A socket left by a scanner that ran as someone else is given
 * to the user, so the scanner can take the path over. */
/* Whether dir holds nothing but what intaked puts there: the scanner
 * socket (and the scanner's temporary name for it, NAME.PID), the pid file
 * (NAME.oldbin, and its temporary NAME.XXXXXX). Only such a directory is
 * ours to change: not /run, /tmp or another program's. */
static bool socket_dir_is_ours(const char *dir, const char *sock, const char *pidf)
{
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof a, "%s", sock);
    snprintf(b, sizeof b, "%s", pidf);
    const char *sname = basename(a), *pname = basename(b);
    char pdir[PATH_MAX];
    snprintf(pdir, sizeof pdir, "%s", pidf);
    bool pid_here = strcmp(dirname(pdir), dir) == 0;
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ours = true;
    struct dirent *e;
    while (ours && (e = readdir(d))) {
        const char *n = e->d_name;
        size_t sl = strlen(sname), pl = strlen(pname);
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, sname) == 0) continue;
        if (strncmp(n, sname, sl) == 0 && n[sl] == '.' && n[sl + 1] &&
            strspn(n + sl + 1, "0123456789") == strlen(n + sl + 1))
            continue;
        if (pid_here && strncmp(n, pname, pl) == 0 &&
            (n[pl] == '\0' || strcmp(n + pl, ".oldbin") == 0 ||
             (n[pl] == '.' && strlen(n + pl + 1) == 6)))
            continue;
        ours = false;
    }
    closedir(d);
    return ours;
}

/* The scanner, running as user, makes its socket in this directory, which
 * by default also holds the pid file. The user gets to create files there
 * through the group, not the directory itself, and the sticky bit keeps
 * the pid file (root's) from being replaced: owning the directory, a
 * compromised scanner or worker could point root's "intaked -s stop" at any
 * process. Only a directory of intaked's own is changed; elsewhere (/run
 * itself) the operator is told. A socket left by a scanner that ran as
 * someone else is given to the user, so the scanner can take the path over. */
static void prepare_socket_dir(struct master *m, const struct config *c)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", c->scanner_socket);
    char *sockdir = dirname(dir);
    store_mkdir_p(sockdir, 0755);
    struct stat st;
    if (stat(sockdir, &st) < 0) return;
    mode_t want = (st.st_mode & 07777) | S_ISVTX | S_IRWXG;
    bool ready = st.st_uid == geteuid() && st.st_gid == m->gid && (st.st_mode & 07777) == want;
    bool open_to_all = (st.st_mode & (S_IWOTH | S_ISVTX)) == (S_IWOTH | S_ISVTX); /* /tmp */
    if (!ready && !open_to_all) {
        if (!socket_dir_is_ours(sockdir, c->scanner_socket, c->pid_file)) {
            log_warn("%s holds files that are not intaked's, so it is left as it is; if user %s "
                     "cannot create the scanner socket there, give scanner_socket a directory "
                     "of its own (such as /run/intake/scand.sock)",
                     sockdir, c->user);
        } else {
            if ((st.st_uid != geteuid() || st.st_gid != m->gid) &&
                chown(sockdir, geteuid(), m->gid) < 0)
                log_warn("cannot give %s to group %d: %s; the scanner may not be able to "
                         "listen there",
                         sockdir, (int)m->gid, strerror(errno));
            if ((st.st_mode & 07777) != want && chmod(sockdir, want) < 0)
                log_warn("cannot make %s group-writable and sticky: %s", sockdir,
                         strerror(errno));
        }
    }
    /* A socket left by a scanner that ran as someone else, which the
     * scanner (as user) could not take over: removed when nobody serves
     * it, never given away (a hard link to another daemon's socket would
     * be given with it). */
    if (lstat(c->scanner_socket, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid != m->uid &&
        !scanner_socket_pid(c->scanner_socket))
        unlink(c->scanner_socket);
}

/* What the spool holds from before (uploads written while intaked ran as
 * root, then a start or reload that sets user) becomes the user's, or each
 * such upload answers 404: its workers cannot read its record. The user
 * owns the spool and may have put anything there, so nothing is followed:
 * each entry is opened O_PATH|O_NOFOLLOW and judged by what the descriptor
 * is (the name may be swapped meanwhile, the inode not). Only root's
 * regular files with one link, and root's directories (.names/, .events/,
 * one level down), change owner: a hard link to a file elsewhere, a
 * symlink, a device, anything of another user's is left alone. */
static void give_spool_dir(int dfd, uid_t uid, gid_t gid, int depth)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        int fd = openat(dirfd(d), e->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st;
        bool mine = fstat(fd, &st) == 0 && st.st_uid == 0 &&
                    ((S_ISREG(st.st_mode) && st.st_nlink == 1) || S_ISDIR(st.st_mode));
        if (mine && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
            log_warn("cannot give %s in the spool to the user: %s", e->d_name, strerror(errno));
        if (mine && S_ISDIR(st.st_mode) && depth < 1) {
            int sub = openat(dirfd(d), e->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            struct stat again;
            if (sub >= 0 && fstat(sub, &again) == 0 && again.st_ino == st.st_ino &&
                again.st_dev == st.st_dev)
                give_spool_dir(sub, uid, gid, depth + 1);
            else if (sub >= 0)
                close(sub);
        }
        close(fd);
    }
    closedir(d);
}

/* Log files the user's processes reopen (USR1) must exist and be theirs. */
static void give_logs(struct master *m, const struct config *c)
{
    const char *logs[] = {c->error_log, c->access_log};
    for (int i = 0; i < 2; i++)
        if (logs[i] && logs[i][0] == '/') {
            int fd = open(logs[i], O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
            if (fd >= 0) {
                if (fchown(fd, m->uid, m->gid) < 0) { /* best effort */
                }
                close(fd);
            }
        }
}

static int prepare_dirs(struct master *m, const struct config *c)
{
    struct store st;
    const char *which = "";
    int rc = store_open(&st, c->spool_dir, c->accept_dir, c->quarantine_dir, &which);
    if (rc < 0) {
        log_error("cannot create or open %s: %s", which, strerror(-rc));
        return -1;
    }
    store_close(&st);
    if (m->drop) {
        const char *dirs[] = {c->spool_dir, c->accept_dir, c->quarantine_dir};
        for (int i = 0; i < 3; i++) {
            /* Not through a symlink: one of them may sit in another the
             * user owns (accept_dir inside spool_dir), swapped for a link. */
            int dfd = dirs[i] ? open(dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                              : -1;
            if (dirs[i] && (dfd < 0 || fchown(dfd, m->uid, m->gid) < 0))
                log_warn("cannot give %s to user %s: %s", dirs[i], c->user, strerror(errno));
            if (dfd >= 0) close(dfd);
        }
        int sfd = open(c->spool_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd >= 0) give_spool_dir(sfd, m->uid, m->gid, 0);
        prepare_socket_dir(m, c);
        give_logs(m, c);
    }
    return 0;
}

static int prepare_user(struct master *m, const struct config *c)
{
    m->drop = false;
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
    return 0;
}

static bool scanner_changed(const struct config *a, const struct config *b)
{
    if (a->scanner != b->scanner || a->max_file_size != b->max_file_size) return true;
    if (strcmp(a->scanner_socket, b->scanner_socket) || strcmp(a->signature_dir, b->signature_dir))
        return true;
    return false;
}

/* The scanner addresses, in order, as text: "unix:/a tcp:b:3310". */
static bool scanner_addrs_changed(const struct config *a, const struct config *b)
{
    if (a->n_scanners != b->n_scanners) return true;
    for (int i = 0; i < a->n_scanners; i++)
        if (strcmp(a->scanners[i].text, b->scanners[i].text) != 0) return true;
    return false;
}

/* Gives each scanner address its series and shared state (before the
 * workers that use them fork). */
static void register_scanners(struct master *m, const struct config *c)
{
    for (int i = 0; i < c->n_scanners; i++)
        if (metrics_scanner_index(m->metrics, c->scanners[i].text, 1) == METRICS_SCANNERS)
            log_warn("scanner %s: more than %d scanner addresses since the start; its scans "
                     "are counted under scanner=\"other\" in /metrics (restart to reset)",
                     c->scanners[i].text, METRICS_SCANNERS);
}

/* PINGs every scanner address at once; /healthz's scanner is up while one
 * answers. Each address's change is logged once (scan_mark). */
static bool probe_scanners(struct master *m, const struct config *c, bool *all)
{
    bool up[CONFIG_MAX_SCANNERS], any = false;
    *all = true;
    scan_probe(c->scanners, c->n_scanners, PROBE_TIMEOUT_MS, up);
    for (int i = 0; i < c->n_scanners; i++) {
        int mi = metrics_scanner_index(m->metrics, c->scanners[i].text, 0);
        /* intake-scand does not answer while it loads its signatures: it is
         * down once it has been up (or a worker could not reach it). */
        bool starting =
            c->scanner == SCANNER_BUILTIN && mi < METRICS_SCANNERS &&
            __atomic_load_n(&m->metrics->scanner_state[mi], __ATOMIC_RELAXED) == MS_UNSEEN;
        if (!up[i] && starting) {
            *all = false; /* looked at again soon, not at the next period */
            continue;
        }
        scan_mark(m->metrics, mi, c->scanners[i].text, up[i], "no answer to PING",
                  c->n_scanners);
        any |= up[i];
        *all &= up[i];
    }
    int was = m->metrics->scanner;
    if (c->n_scanners > 1 && was == MS_UP && !any)
        log_warn("no scanner of the %d answers: uploads wait for one up to scan_timeout, then "
                 "get verdict error",
                 c->n_scanners);
    m->metrics->scanner = any ? MS_UP : MS_DOWN;
    return any;
}

/* A reload that names another pid_file moves it, as nginx does: the new
 * file is written first, the old one removed after. The master stays in the
 * old one if the new cannot be written, or while a binary upgrade holds it
 * as .oldbin (the new master owns the name then). */
static void move_pid_file(struct master *m, const struct config *old, struct config *nc)
{
    if (strcmp(old->pid_file, nc->pid_file) == 0) return;
    const char *stay = NULL;
    if (m->upgrade_pid)
        stay = "a binary upgrade is in progress";
    else if (pidfile_write(nc->pid_file) < 0)
        stay = "the new one cannot be written (see above)";
    if (stay) {
        log_error("reload: pid_file %s not applied: %s; the pid file stays %s%s", nc->pid_file,
                  stay, old->pid_file, m->upgrade_pid ? " (.oldbin until the upgrade ends)" : "");
        char *keep = strdup(old->pid_file);
        if (keep) {
            free(nc->pid_file);
            nc->pid_file = keep;
        }
        return;
    }
    /* Two names of one file (a symlinked directory, "./"): written, it is
     * the new one, and removing the old name would remove it. */
    struct stat a, b;
    if (!(stat(old->pid_file, &a) == 0 && stat(nc->pid_file, &b) == 0 && a.st_dev == b.st_dev &&
          a.st_ino == b.st_ino))
        pidfile_remove(old->pid_file);
    log_info("reload: the pid file is now %s (was %s)", nc->pid_file, old->pid_file);
}

/* The process listening on the UNIX socket path (its peer credentials), or 0. */
static pid_t scanner_socket_pid(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return 0;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return 0;
    struct ucred cred;
    socklen_t len = sizeof cred;
    bool up = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
    close(fd);
    return up ? cred.pid : 0;
}

/* The master of another intaked whose scanner listens on path, or 0. The
 * scanner takes its socket path over by design (a respawn, a binary
 * upgrade), so a second intaked given the same scanner_socket would take
 * the first one's scanner away from it. */
static pid_t scanner_socket_owner(const char *path)
{
    pid_t listener = scanner_socket_pid(path);
    if (!listener) return 0;
    struct ucred cred = {.pid = listener};
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)cred.pid);
    int sf = open(p, O_RDONLY | O_CLOEXEC);
    if (sf < 0) return 0;
    ssize_t n = read(sf, buf, sizeof buf - 1);
    close(sf);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    int ppid = 0;
    if (!rp || sscanf(rp + 1, " %*c %d", &ppid) != 1 || ppid <= 1 || ppid == getpid()) return 0;
    return pidfile_names_master(ppid) ? (pid_t)ppid : 0; /* an orphan (init's) is going */
}

/* HUP: the new configuration, or no change at all. */
static void reload(struct master *m)
{
    char err[1024];
    const struct master_args *a = m->args;
    struct config *nc =
        config_load(a->conf_path, a->overrides, a->n_overrides, a->base_dir, err, sizeof err);
    if (!nc) {
        log_error("reload failed: %s; still running with the previous configuration", err);
        return;
    }
    if (config_check_paths(nc, err, sizeof err) < 0) {
        log_error("reload failed: %s; still running with the previous configuration", err);
        config_free(nc);
        return;
    }
    pid_t other = nc->scanner == SCANNER_BUILTIN &&
                          (m->cfg->scanner != SCANNER_BUILTIN || !m->cfg->scanner_socket ||
                           strcmp(m->cfg->scanner_socket, nc->scanner_socket) != 0)
                      ? scanner_socket_owner(nc->scanner_socket)
                      : 0;
    if (other) {
        log_error("reload failed: scanner_socket %s is the scanner socket of another intaked "
                  "(master pid %d); still running with the previous configuration",
                  nc->scanner_socket, (int)other);
        config_free(nc);
        return;
    }
    /* The certificate and key are re-read at every reload. */
    SSL_CTX *tls = NULL;
    if (tls_server_load(nc, &tls, err, sizeof err) < 0) {
        log_error("reload failed: %s; still running with the previous configuration and "
                  "certificate",
                  err);
        config_free(nc);
        return;
    }
    struct config *old = m->cfg;
    m->cfg = nc; /* prepare_* and spawn_* read m->cfg */
    struct master_listener next[CONFIG_MAX_LISTEN];
    int n_next = 0;
    struct master_listener pool[CONFIG_MAX_LISTEN];
    memcpy(pool, m->ls, sizeof pool);
    if (prepare_user(m, nc) < 0 || prepare_dirs(m, nc) < 0 ||
        build_listeners(m, nc, pool, m->n_ls, next, &n_next) < 0) {
        m->cfg = old;
        prepare_user(m, old);
        config_free(nc);
        SSL_CTX_free(tls);
        log_error("reload failed (see above); still running with the previous configuration");
        return;
    }
    if (strcmp(old->spool_dir, nc->spool_dir) != 0)
        log_warn("reload: spool_dir is now %s; what %s holds (interrupted uploads, verdicts "
                 "not yet asked for) can no longer be resumed or asked for, and is not swept: "
                 "move it over while no upload runs, or remove it",
                 nc->spool_dir, old->spool_dir);
    if (strcmp(old->error_log, nc->error_log) != 0 || old->log_level != nc->log_level) {
        if (m->detached && strcmp(nc->error_log, "stderr") == 0)
            log_warn("reload: error_log stderr, but this master has detached (daemon on) and its "
                     "standard error is /dev/null: the log is lost from here on; set error_log "
                     "to a file or syslog");
        int rc = log_open(nc->error_log, (enum log_level)nc->log_level);
        if (rc < 0) log_error("cannot open error_log %s: %s", nc->error_log, strerror(-rc));
    }
    /* Listeners the new configuration dropped: the old workers close their
     * copies as they drain; the master closes its own now. */
    for (int j = 0; j < m->n_ls; j++)
        if (pool[j].fd >= 0) {
            log_info("reload: no longer listening on %s", pool[j].addr.text);
            close_listener(m, &pool[j]);
        }
    for (int k = 0; k < n_next; k++) {
        bool had = false;
        for (int j = 0; j < m->n_ls; j++)
            had |= m->ls[j].fd == next[k].fd;
        if (!had)
            log_info("reload: now listening on %s (%s%s)", next[k].addr.text,
                     next[k].addr.kind == LISTEN_WS ? "WebSocket/HTTP" : "raw TCP",
                     next[k].addr.tls ? " over TLS" : "");
    }
    memcpy(m->ls, next, sizeof next);
    m->n_ls = n_next;
    unsigned old_gen = m->gen++;
    m->n_workers = worker_count(nc);
    m->no_workers = false;
    m->n_pending = 0; /* pending worker respawns belonged to the old generation */
    bool same_socket = nc->scanner == SCANNER_BUILTIN &&
                       strcmp(old->scanner_socket, nc->scanner_socket) == 0;
    if (scanner_changed(old, nc) && old->scanner == SCANNER_BUILTIN) {
        if (same_socket)
            log_info("reload: scanner settings changed; starting a new scanner, the previous one "
                     "scans until it is ready");
        else
            log_info("reload: scanner settings changed; the previous scanner serves the old "
                     "workers' scans until they are gone");
        replace_scanner(m, same_socket);
        if (nc->scanner == SCANNER_OFF) m->metrics->scanner = MS_OFF;
    } else if (scanner_changed(old, nc)) {
        log_info("reload: scanner settings changed; restarting the scanner");
        restart_scanner(m);
        if (nc->scanner == SCANNER_OFF) m->metrics->scanner = MS_OFF;
    } else if (nc->scanner == SCANNER_BUILTIN && (strcmp(m->scanner_log, nc->error_log) != 0 ||
                                                  m->scanner_log_level != nc->log_level)) {
        /* Not worth a signature reload, but the operator should know. */
        log_info("reload: the builtin scanner keeps error_log %s and its log level until it "
                 "restarts",
                 m->scanner_log);
    }
    if (scanner_addrs_changed(old, nc)) {
        register_scanners(m, nc);
        char list[CONFIG_MAX_SCANNERS * 130] = "";
        for (int i = 0; i < nc->n_scanners; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? " " : "",
                     nc->scanners[i].text);
        log_info("reload: scans go to %s", nc->n_scanners ? list : "no scanner (scanner off)");
        m->next_probe = 0; /* look at the new ones at once */
    }
    move_pid_file(m, old, nc);
    config_free(old);
    tls_server_use(tls); /* the new workers inherit it */
    char what[512];
    tls_server_describe(what, sizeof what);
    if (what[0]) log_info("reload: %s", what);
    spawn_workers(m);
    int retired = 0;
    for (int i = 0; i < m->n_procs; i++)
        if (m->procs[i].slot != SCANNER_SLOT && m->procs[i].gen == old_gen &&
            !m->procs[i].stopping) {
            retire(m, &m->procs[i]);
            retired++;
        }
    if (nc->auth_secret_file)
        log_info("reload: upload tokens required: %d secrets from %s", nc->auth.n,
                 nc->auth_secret_file);
    log_info("reload: configuration %s applied: %d new workers (generation %u), %d old ones "
             "draining",
             nc->file, m->n_workers, m->gen, retired);
}

/* USR2: the new binary inherits the listening sockets and starts beside us. */
static void upgrade(struct master *m)
{
    if (m->upgrade_pid) {
        log_warn("USR2 ignored: an upgrade is already in progress (new master pid %d)",
                 (int)m->upgrade_pid);
        return;
    }
    /* We are the new binary and the old master still runs: a third master
     * would take over the .oldbin name and leave the first one in no pid
     * file at all (nginx refuses this too). */
    if (m->upgraded_from && getppid() == m->upgraded_from) {
        log_warn("USR2 ignored: the old master (pid %d) is still running; finish this upgrade "
                 "first (QUIT the old master, or roll back by stopping this one)",
                 (int)m->upgraded_from);
        return;
    }
    snprintf(m->oldbin, sizeof m->oldbin, "%s.oldbin", m->cfg->pid_file);
    if (rename(m->cfg->pid_file, m->oldbin) < 0) {
        log_error("upgrade: cannot rename %s to %s: %s", m->cfg->pid_file, m->oldbin,
                  strerror(errno));
        return;
    }
    char env[CONFIG_MAX_LISTEN * 300] = "";
    size_t o = 0;
    for (int i = 0; i < m->n_ls; i++)
        o += (size_t)snprintf(env + o, sizeof env - o, "%d:%c:%s;", m->ls[i].fd,
                              m->ls[i].addr.kind == LISTEN_WS ? 'w' : 't', m->ls[i].addr.text);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("upgrade: cannot fork: %s", strerror(errno));
        rename(m->oldbin, m->cfg->pid_file);
        return;
    }
    if (pid == 0) {
        for (int i = 0; i < m->n_ls; i++)
            fcntl(m->ls[i].fd, F_SETFD, 0);
        setenv(MASTER_INHERIT_ENV, env, 1);
        /* What the new binary says before it opens the log (a configuration
         * it refuses) goes to ours: detached, its stderr is /dev/null. */
        log_errors_to_stderr(false);
        if (m->detached && log_fd() > 2) dup2(log_fd(), 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(m->self, m->args->argv);
        log_error("upgrade: cannot execute %s: %s", m->self, strerror(errno));
        _exit(127);
    }
    m->upgrade_pid = pid;
    notify_silence(true); /* systemd hears from the new master now */
    log_info("USR2: started the new binary %s as pid %d; %s renamed to %s. Send WINCH then QUIT "
             "to this master (pid %d) to finish, or TERM to the new one to roll back",
             m->self, (int)pid, m->cfg->pid_file, m->oldbin, (int)getpid());
}

static void find_binaries(struct master *m)
{
    ssize_t n = readlink("/proc/self/exe", m->self, sizeof m->self - 1);
    m->self[n > 0 ? n : 0] = '\0';
    /* After `make install` replaced the file, the path is still the binary to run. */
    char *del = strstr(m->self, " (deleted)");
    if (del && del[10] == '\0') *del = '\0';
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", m->self);
    snprintf(m->scand, sizeof m->scand, "%s/intake-scand", dirname(dir));
}

/* systemd (Type=notify): READY=1 once the workers run and the builtin
 * scanner answers (or at once with ready), else STATUS= when it changes. */
static void report(struct master *m, bool ready)
{
    static const char *const sc[] = {"off", "up", "down"};
    int s = m->metrics->scanner;
    char status[160];
    snprintf(status, sizeof status, "%d workers (generation %u), scanner %s",
             count_workers(m, true), m->gen, sc[s >= 0 && s <= 2 ? s : 2]);
    if (ready || (!m->told_ready && (m->cfg->scanner != SCANNER_BUILTIN || s == MS_UP))) {
        m->told_ready = true;
        notify_ready(status);
    } else if (m->told_ready) {
        notify_status(status);
    }
}

/* TTIN and TTOU count only while workers run (not while draining, nor
 * after WINCH, which says so). */
static bool workers_adjustable(const struct master *m, const char *sig)
{
    if (m->state != RUNNING) return false;
    if (m->no_workers)
        log_warn("%s ignored: the workers are stopped (WINCH); HUP starts them again", sig);
    return !m->no_workers;
}

/* TERM, INT, QUIT. A new binary stopped while its old master is still there
 * is a roll back: the old master is the service's main process again. */
static void report_stopping(const struct master *m)
{
    if (m->upgraded_from && getppid() == m->upgraded_from)
        notify_mainpid(m->upgraded_from);
    else
        notify_stopping();
}

int master_run(struct config *cfg, const struct master_args *args)
{
    static struct master mm;
    struct master *m = &mm;
    m->cfg = cfg;
    m->args = args;
    m->gen = 1;
    m->n_workers = worker_count(cfg);
    proctitle_set("intaked: master process");
    log_set_role("master");
    find_binaries(m);
    int rc = 1;
    SSL_CTX *tls = NULL;
    char err[1024];
    if (tls_server_load(cfg, &tls, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out;
    }
    tls_server_use(tls);
    if (prepare_user(m, cfg) < 0 || prepare_dirs(m, cfg) < 0) goto out;
    if (cfg->scanner == SCANNER_BUILTIN && access(m->scand, X_OK) < 0) {
        log_error("scanner builtin: %s not found or not executable; install intake-scand "
                  "next to intaked, or set \"scanner unix:/path\" or \"scanner off\"",
                  m->scand);
        goto out;
    }
    /* Orphans of our workers (accept hooks whose worker died) become our
     * children, not init's: kill_orphan_hooks can tell them apart, and the
     * reap loop collects them. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_warn("cannot become a subreaper (%s): accept hooks of a worker that dies will run "
                 "on until they end",
                 strerror(errno));
    m->metrics = metrics_create();
    if (!m->metrics) {
        log_error("cannot map the shared metrics segment: %s", strerror(errno));
        goto out;
    }
    m->metrics->scanner = cfg->scanner == SCANNER_OFF ? MS_OFF : MS_DOWN;
    register_scanners(m, cfg);
    if (pidfile_check(cfg->pid_file) < 0) goto out;
    struct master_listener inherited[CONFIG_MAX_LISTEN];
    int n_inh = take_inherited(inherited, CONFIG_MAX_LISTEN);
    if (build_listeners(m, cfg, inherited, n_inh, m->ls, &m->n_ls) < 0) goto out;
    for (int j = 0; j < n_inh; j++)
        if (inherited[j].fd >= 0) close(inherited[j].fd);
    if (n_inh) log_info("binary upgrade: inherited %d listening sockets", n_inh);
    pid_t other = !n_inh && cfg->scanner == SCANNER_BUILTIN ? scanner_socket_owner(cfg->scanner_socket) : 0;
    if (other) {
        log_error("scanner_socket %s is the scanner socket of another intaked (master pid %d); "
                  "starting would take its scanner away from it: give each intaked its own "
                  "scanner_socket",
                  cfg->scanner_socket, (int)other);
        goto out;
    }
    if (n_inh) m->upgraded_from = getppid();
    /* The new binary of an upgrade is already detached: the old master's
     * child, in its session. Detaching again would end that child, which the
     * old master takes for a failed upgrade (and rolls back from). */
    if (cfg->daemon && !n_inh && daemon(1, 0) < 0) {
        log_error("cannot detach (daemon on): %s", strerror(errno));
        goto out;
    }
    m->detached = cfg->daemon;
    /* Our controlling terminal, if we still have one. */
    int tty = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
    m->on_terminal = tty >= 0;
    if (tty >= 0) close(tty);
    if (pidfile_write(cfg->pid_file) < 0) goto out;
    if (cfg->scanner == SCANNER_OFF)
        log_warn("scanner off: uploads are accepted without a malware scan (verdict unscanned)");
    if (cfg->auth_secret_file)
        log_info("upload tokens required: %d secrets from %s", cfg->auth.n, cfg->auth_secret_file);

    sigset_t set;
    fill_sigset(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    reconcile_scanner(m, now_s()); /* before the workers: they wait for it */
    spawn_workers(m);
    for (int i = 0; i < m->n_ls; i++)
        log_info("listening on %s (%s%s)", m->ls[i].addr.text,
                 m->ls[i].addr.kind == LISTEN_WS ? "WebSocket/HTTP" : "raw TCP",
                 m->ls[i].addr.tls ? " over TLS" : "");
    tls_server_describe(err, sizeof err);
    if (err[0]) log_info("%s", err);
    log_info("master ready: %d workers", m->n_workers);
    log_errors_to_stderr(false); /* started: from now on the log alone */

    for (;;) {
        reap(m); /* also catches exits whose SIGCHLD merged with another */
        if (m->state == RUNNING) report(m, false);
        double t = now_s();
        respawn_due(m, t);
        double scanner_at = reconcile_scanner(m, t);
        struct config *c = m->cfg;
        if (m->state == QUITTING && count_workers(m, false) == 0 && m->n_procs > 0) {
            /* The last upload is finished: the scanner can go now. */
            signal_procs(m, SCANNER, SIGTERM);
        }
        if (m->state != RUNNING && m->n_procs == 0) break;
        for (int i = 0; i < m->n_procs; i++)
            if (m->procs[i].kill_at > 0 && t >= m->procs[i].kill_at) {
                log_warn("worker %d (pid %d) still draining past shutdown_timeout; killing it",
                         m->procs[i].slot, (int)m->procs[i].pid);
                kill(m->procs[i].pid, SIGKILL);
                m->procs[i].kill_at = 0;
            }
        if (m->state == RUNNING && t >= m->next_sweep) {
            sweep_step(&m->sweep, c->spool_dir, c->resume_timeout_ms, SWEEP_BATCH);
            /* Often enough that an upload goes within seconds of its deadline. */
            double every = (double)c->resume_timeout_ms / 4e3;
            m->next_sweep = t + (every < 1 ? (every < 0.25 ? 0.25 : every) : 1);
        }
        if (m->state == RUNNING) retire_replaced(m);
        if (c->scanner != SCANNER_OFF && m->state == RUNNING && t >= m->next_probe) {
            bool all = false, up = probe_scanners(m, c, &all);
            /* One that is down is looked at again within a second (a frozen
             * one holds this loop PROBE_TIMEOUT_MS). */
            m->next_probe = now_s() + (all ? PROBE_PERIOD_S : up ? 1.0 : 0.25);
        }
        if (m->state != RUNNING && !m->killed && t >= m->deadline) {
            log_warn("%d processes still running after the grace period; killing them", m->n_procs);
            signal_procs(m, ALL, SIGKILL);
            m->killed = true;
        }
        double wait = 1.0;
        if (m->state == RUNNING && m->next_sweep - t < wait) wait = m->next_sweep - t;
        if (c->scanner != SCANNER_OFF && m->state == RUNNING && m->next_probe - t < wait)
            wait = m->next_probe - t;
        if (m->respawn_at > 0 && m->respawn_at - t < wait) wait = m->respawn_at - t;
        if (scanner_at > 0 && scanner_at - t < wait) wait = scanner_at - t;
        if (m->state != RUNNING && !m->killed && m->deadline - t < wait) wait = m->deadline - t;
        if (wait < 0.001) wait = 0.001;
        struct timespec ts = {.tv_sec = (time_t)wait,
                              .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig < 0) continue;
        switch (sig) {
        case SIGCHLD:
            reap(m);
            break;
        case SIGTERM:
        case SIGINT:
            if (m->state == TERMINATING) break;
            log_info("%s: fast shutdown", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            m->state = TERMINATING;
            m->deadline = now_s() + TERM_GRACE_S;
            m->killed = false;
            report_stopping(m);
            close_listeners(m);
            signal_procs(m, ALL, SIGTERM);
            break;
        case SIGQUIT:
            if (m->state != RUNNING) break;
            log_info("SIGQUIT: graceful shutdown, draining uploads for up to %llu ms",
                     (unsigned long long)c->shutdown_timeout_ms);
            m->state = QUITTING;
            report_stopping(m);
            m->deadline = now_s() + (double)c->shutdown_timeout_ms / 1e3 + QUIT_GRACE_S;
            close_listeners(m);
            signal_procs(m, WORKERS, SIGQUIT);
            break;
        case SIGHUP:
            if (m->state != RUNNING) break;
            log_info("SIGHUP: reloading %s", c->file);
            notify_reloading();
            reload(m);
            report(m, true);
            break;
        case SIGUSR1:
            /* Renamed away (logrotate): made again, and the user's, first. */
            if (m->drop) give_logs(m, m->cfg);
            if (log_reopen() < 0) log_error("cannot reopen the error log: %s", strerror(errno));
            log_info("SIGUSR1: log files reopened");
            signal_procs(m, ALL, SIGUSR1);
            break;
        case SIGUSR2:
            if (m->state == RUNNING) upgrade(m);
            break;
        case SIGWINCH:
            if (m->state != RUNNING) break;
            /* A terminal sends WINCH to its foreground processes whenever
             * its window is resized: on one (make run), WINCH counts only
             * during a binary upgrade. Detached, or under systemd, always. */
            if (m->on_terminal && !m->upgrade_pid) {
                log_info("SIGWINCH ignored: this master runs on a terminal, which sends it when "
                         "the window is resized; it stops the workers only during a binary "
                         "upgrade (USR2) or when detached (daemon on)");
                break;
            }
            log_info("SIGWINCH: stopping this master's workers gracefully; the listeners stay "
                     "open (HUP starts workers again)");
            m->no_workers = true;
            m->n_pending = 0;
            for (int i = 0; i < m->n_procs; i++)
                if (m->procs[i].slot != SCANNER_SLOT && !m->procs[i].stopping)
                    retire(m, &m->procs[i]);
            break;
        case SIGTTIN:
            if (!workers_adjustable(m, "SIGTTIN")) break;
            m->n_workers++;
            log_info("SIGTTIN: one worker more (%d)", m->n_workers);
            spawn_workers(m);
            break;
        case SIGTTOU:
            if (!workers_adjustable(m, "SIGTTOU")) break;
            if (m->n_workers <= 1) {
                log_warn("SIGTTOU ignored: at least one worker must run");
                break;
            }
            m->n_workers--;
            for (int i = m->n_procs - 1; i >= 0; i--) {
                struct proc *p = &m->procs[i];
                if (p->slot != SCANNER_SLOT && p->gen == m->gen && !p->stopping) {
                    log_info("SIGTTOU: one worker fewer (%d); worker %d (pid %d) drains",
                             m->n_workers, p->slot, (int)p->pid);
                    retire(m, p);
                    break;
                }
            }
            break;
        default:
            break;
        }
    }
    rc = 0;
out:
    close_listeners(m);
    if (rc == 0 || m->n_procs == 0) pidfile_remove(m->cfg->pid_file);
    if (m->oldbin[0]) pidfile_remove(m->oldbin); /* only while it names this process */
    log_info("master exiting");
    config_free(m->cfg);
    return rc;
}
