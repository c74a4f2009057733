/* worker: see worker.h. */
#define _GNU_SOURCE
#include "worker.h"

#include "conn.h"
#include "container.h"
#include "hook.h"
#include "jobs.h"
#include "publish.h"
#include "log.h"
#include "proctitle.h"
#include "scan.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_BUFFER_SIZE (256 * 1024)
#define ACCEPTS_PER_WAKEUP                                                                         \
    1 /* one, then back to the loop: the workers sharing a socket share the load */
/* The job pool (hashing, fsync, placement) never waits for the scanner: its
 * round trips have the scan queue's threads (scan.h). */
#define JOB_THREADS 4
#define BULK_THREADS 2
#define SCAN_THREADS 4
/* Accept hooks running at once per worker; more wait in a queue. */
#define HOOKS_PER_WORKER METRICS_HOOKS /* each has its entry in the slot (hook.h) */

static void set_accepting(struct worker *w, bool on)
{
    on = on && !w->draining && w->n_conns < w->cfg->max_connections;
    if (w->metrics && w->slot < METRICS_SLOTS)
        __atomic_store_n(&w->metrics->accepting[w->slot], on && !w->draining ? 1 : 0,
                         __ATOMIC_RELAXED);
    if (on == w->accepting) return;
    w->accepting = on;
    for (int i = 0; i < w->n_ls; i++) {
        if (on)
            ev_io_start(w->loop, &w->ls[i].io);
        else
            ev_io_stop(w->loop, &w->ls[i].io);
    }
}

static void peer_name(int fd, char *out, size_t cap, char *ip, size_t ipcap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(out, cap, "?");
        snprintf(ip, ipcap, "?");
        return;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%d", host, ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%d", host, ntohs(s->sin6_port));
    } else {
        snprintf(host, sizeof host, "unix");
        snprintf(out, cap, "unix");
    }
    snprintf(ip, ipcap, "%s", host);
}

static int open_access_log(const struct config *cfg)
{
    if (!cfg->access_log) return -1;
    int fd = open(cfg->access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) log_error("cannot open access_log %s: %s", cfg->access_log, strerror(errno));
    return fd;
}

void worker_access_log(struct worker *w, const char *line, size_t len)
{
    if (w->access_fd < 0) return;
    /* After a line cut short (a full disk), a newline first: the cut line
     * stays broken, but the next ones are whole lines again. */
    struct iovec v[2] = {{.iov_base = "\n", .iov_len = 1}, {.iov_base = (void *)line, .iov_len = len}};
    bool prefix = w->access_cut;
    ssize_t n = writev(w->access_fd, v + (prefix ? 0 : 1), prefix ? 2 : 1);
    if (n < 0) {
        log_error("access log write failed: %s", strerror(errno));
        return;
    }
    size_t wrote = (size_t)n;
    if (prefix && wrote > 0) {
        w->access_cut = false; /* the newline is out */
        wrote--;
    }
    if (wrote == len) return;
    log_error("access log line cut short (%zu of %zu bytes): is its disk full?", wrote, len);
    if (wrote > 0) w->access_cut = true;
}

static void worker_on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    set_accepting(w, true);
    /* If the others did not take it meanwhile, this worker does. */
}

/* Every worker is woken for a connection on the shared socket. One holding
 * clearly more connections than the least loaded accepting worker lets that
 * one take it, briefly: a worker that does not is never starved (2 ms). */
#define DEFER_MARGIN 2
#define DEFER_SECONDS 0.002

static bool busier_than_others(struct worker *w)
{
    if (!w->metrics || w->slot >= METRICS_SLOTS) return false;
    int64_t mine = metrics_slot_connections(&w->metrics->slot[w->slot]);
    for (int s = 0; s < METRICS_SLOTS; s++) {
        if (s == w->slot || !__atomic_load_n(&w->metrics->accepting[s], __ATOMIC_RELAXED)) continue;
        if (metrics_slot_connections(&w->metrics->slot[s]) + DEFER_MARGIN <= mine) return true;
    }
    return false;
}

static void worker_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker_listener *l = container_of(io, struct worker_listener, io);
    struct worker *w = l->w;
    if (!w->deferred && busier_than_others(w)) {
        w->deferred = true;
        set_accepting(w, false);
        ev_timer_set(&w->accept_retry, DEFER_SECONDS, 0.0);
        ev_timer_start(w->loop, &w->accept_retry);
        return;
    }
    w->deferred = false;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && w->accepting; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of
                 * spinning on a readable listener. */
                log_error("accept on %s: %s; pausing accepts for 1 s (raise the fd limit or "
                          "lower max_connections)",
                          l->addr->text, strerror(errno));
                set_accepting(w, false);
                ev_timer_set(&w->accept_retry, 1.0, 0.0);
                ev_timer_start(w->loop, &w->accept_retry);
            }
            return;
        }
        if (!l->addr->is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *c = conn_new(w, fd, l->addr);
        if (!c) {
            close(fd);
            continue;
        }
        peer_name(fd, c->peer, sizeof c->peer, c->remote, sizeof c->remote);
        log_debug("%s: connected to %s", c->peer, l->addr->text);
        if (l->addr->tls && tls_conn_start(c) < 0) {
            conn_close(c);
            continue;
        }
        set_accepting(w, true);
    }
}

/* No connection, and no job that still owns an upload. */
static bool worker_idle(const struct worker *w)
{
    return w->n_conns == 0 && jobs_pending(w->jobs) == 0 && jobs_pending(w->bulk) == 0 &&
           (!w->scan || scan_pending(w->scan) == 0) && hooks_pending(w->hooks) == 0 &&
           publish_pending(w->pub) == 0;
}

void worker_conn_closed(struct worker *w)
{
    if (!w->draining) {
        set_accepting(w, true);
        return;
    }
    if (worker_idle(w)) ev_break(w->loop, EVBREAK_ALL);
}

static void worker_on_reap(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = p->data;
    while (w->dead) {
        struct conn *c = w->dead;
        w->dead = c->next;
        conn_free(c);
    }
    if (w->draining && worker_idle(w)) ev_break(w->loop, EVBREAK_ALL);
}

static void close_all(struct worker *w)
{
    while (w->conns)
        conn_close(w->conns);
}

static void worker_on_drain_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    log_warn("shutdown_timeout reached with %d connections still open; closing them "
             "(interrupted uploads stay in the spool)",
             w->n_conns);
    w->past_deadline = true;
    hooks_stop(w->hooks); /* their uploads are told 503 as each one ends */
    publish_give_up(w->pub);
    if (w->scan) scan_stop(w->scan); /* the same for scans */
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        conn_shut_down(c);
    }
    worker_conn_closed(w); /* exits once the last job and lingering close end */
}

static void start_drain(struct worker *w)
{
    if (w->draining) return;
    set_accepting(w, false);
    w->draining = true;
    for (int i = 0; i < w->n_ls; i++)
        close(w->ls[i].io.fd);
    w->n_ls = 0;
    log_info("stopped accepting; draining %d connections (up to %llu ms)", w->n_conns,
             (unsigned long long)w->cfg->shutdown_timeout_ms);
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        conn_drain(c);
    }
    ev_timer_set(&w->drain_deadline, (double)w->cfg->shutdown_timeout_ms / 1e3, 0.0);
    ev_timer_start(w->loop, &w->drain_deadline);
    worker_conn_closed(w);
}

static void worker_on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)revents;
    struct worker *w = s->data;
    switch (s->signum) {
    case SIGQUIT:
        start_drain(w);
        break;
    case SIGTERM:
    case SIGINT:
        log_info("exiting at once, closing %d connections", w->n_conns);
        close_all(w);
        ev_break(loop, EVBREAK_ALL);
        break;
    case SIGUSR1:
        if (log_reopen() < 0) log_error("cannot reopen the log: %s", strerror(errno));
        if (w->cfg->access_log) {
            int fd = open_access_log(w->cfg);
            if (fd >= 0) {
                if (w->access_fd >= 0) close(w->access_fd);
                w->access_fd = fd;
                w->access_cut = false; /* a new file */
            }
        }
        break;
    default:
        break;
    }
}

static void sig_watch(struct worker *w, ev_signal *s, int signum)
{
    ev_signal_init(s, worker_on_signal, signum);
    s->data = w;
    ev_signal_start(w->loop, s);
}

void worker_run(const struct config *cfg, const struct listener *ls, int n_ls, int slot,
                struct metrics *m)
{
    static struct worker wk;
    struct worker *w = &wk;
    pid_t master = getppid();
    /* Die with the master; and if it is already gone, do not linger. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master) _exit(0);
    proctitle_set("intaked: worker process");
    char role[32];
    snprintf(role, sizeof role, "worker %d", slot);
    log_set_role(role);

    w->cfg = cfg;
    w->slot = slot;
    w->metrics = m;
    w->mslot = m && slot < METRICS_SLOTS ? &m->slot[slot] : NULL;
    /* The connections of this slot's previous worker died with it. */
    if (w->mslot) {
        memset(w->mslot->connections, 0, sizeof w->mslot->connections);
        m->promised[slot] = 0; /* a dead predecessor's promises */
    }
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!w->loop) {
        log_error("cannot create the event loop");
        _exit(2);
    }
    const char *which = "";
    int rc = store_open(&w->store, cfg->spool_dir, cfg->accept_dir, cfg->quarantine_dir, &which);
    if (rc < 0) {
        log_error("cannot open %s: %s", which, strerror(-rc));
        _exit(2);
    }
    w->store.min_free_space = cfg->min_free_space;
    w->access_fd = open_access_log(cfg);
    for (int i = 0; i < cfg->n_trusted_proxies; i++)
        if (proxy_parse(cfg->trusted_proxies[i], &w->proxies[w->n_proxies]) == 0) w->n_proxies++;
    w->limits.max_file_size = cfg->max_file_size;
    static struct scan_client sc;
    if (cfg->scanner != SCANNER_OFF) {
        scan_init(&sc, cfg, w->metrics, w->mslot);
        w->policy.scan = scan_file;
        w->policy.scan_ctx = &sc;
    }
    w->policy.scan_fail_accept = cfg->scan_fail == SCAN_FAIL_ACCEPT;
    w->policy.infected_delete = cfg->on_infected == ON_INFECTED_DELETE;
    w->policy.hook = cfg->accept_hook != NULL;
    w->policy.publish = cfg->publish_urls != NULL;
    w->policy.accept_off = cfg->accept_dir == NULL;
    w->rbuf_size = READ_BUFFER_SIZE;
    w->rbuf = malloc(w->rbuf_size);
    /* One pipe per worker: each splice round empties it before the next. */
    w->pipe[0] = w->pipe[1] = -1;
    if (pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
        int sz = fcntl(w->pipe[1], F_SETPIPE_SZ, 1 << 20);
        w->pipe_size = sz > 0 ? (size_t)sz : 65536;
    } else {
        log_warn("no pipe for splice (%s); copying bodies instead", strerror(errno));
    }
    w->jobs = jobs_start(w->loop, JOB_THREADS, false);
    w->bulk = jobs_start(w->loop, BULK_THREADS, true);
    if (w->policy.scan && scan_start(&sc, w->loop, SCAN_THREADS) == 0) w->scan = &sc;
    /* Delivery: after the fork, so each worker has its own NATS connection. */
    if (cfg->accept_hook)
        w->hooks = hooks_start(w->loop, cfg->accept_hook, cfg->hook_timeout_ms, HOOKS_PER_WORKER,
                               w->mslot);
    if (cfg->publish_urls) {
        int outbox = store_events_dir(&w->store);
        if (outbox < 0)
            log_error("cannot open %s/%s: %s; events held while NATS is away are lost if their "
                      "worker ends",
                      cfg->spool_dir, STORE_EVENTS_DIR, strerror(-outbox));
        w->pub = publish_start(w->loop, cfg->publish_urls, cfg->publish_subject,
                               cfg->hook_timeout_ms, w->mslot, outbox);
    }
    if (!w->rbuf || !w->jobs || !w->bulk || (w->policy.scan && !w->scan) || (cfg->accept_hook && !w->hooks) ||
        (cfg->publish_urls && !w->pub)) {
        log_error("out of memory at start");
        _exit(2);
    }

    /* Signals were blocked by the master around fork; libev takes them now. */
    sig_watch(w, &w->sig_quit, SIGQUIT);
    sig_watch(w, &w->sig_term, SIGTERM);
    sig_watch(w, &w->sig_int, SIGINT);
    sig_watch(w, &w->sig_usr1, SIGUSR1);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    for (int i = 0; i < n_ls; i++) {
        struct worker_listener *l = &w->ls[w->n_ls++];
        l->w = w;
        l->addr = ls[i].addr;
        ev_io_init(&l->io, worker_on_accept, ls[i].fd, EV_READ);
    }
    ev_init(&w->accept_retry, worker_on_accept_retry);
    w->accept_retry.data = w;
    ev_init(&w->drain_deadline, worker_on_drain_deadline);
    w->drain_deadline.data = w;
    ev_prepare_init(&w->reaper, worker_on_reap);
    w->reaper.data = w;
    ev_prepare_start(w->loop, &w->reaper);
    set_accepting(w, true);

    log_info("started");
    ev_run(w->loop, 0);
    worker_on_reap(w->loop, &w->reaper, 0);
    hooks_kill_all(w->hooks);
    publish_stop(w->pub, 2000);
    log_info("exiting");
    _exit(0);
}
