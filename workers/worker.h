/* worker: one upload worker process. A libev loop that accepts on the
 * listening sockets the master bound, runs each connection's transport, and
 * keeps blocking work on a job pool. QUIT drains (stop accepting, finish the
 * uploads in flight, exit), TERM/INT exits at once, USR1 reopens the logs. */
#ifndef INTAKE_WORKER_H
#define INTAKE_WORKER_H

#include "config.h"
#include "metrics.h"
#include "proxy.h"
#include "store.h"
#include "upload.h"

#include <ev.h>
#include <stdbool.h>

struct listener {
    int fd;
    const struct listen_addr *addr;
};

struct conn;
struct jobs;
struct scan_client;
struct hooks;
struct publisher;

struct worker {
    struct ev_loop *loop;
    const struct config *cfg;
    int slot;
    struct store store;
    struct jobs *jobs;        /* finishing: checksum, fsync, placement; lookups */
    struct jobs *bulk;        /* hashing while bytes arrive (jobs.h) */
    struct scan_client *scan; /* NULL: scanner off; owns the scan queue */
    struct hooks *hooks;      /* NULL: no accept_hook */
    struct publisher *pub;    /* NULL: publish off */
    struct upload_limits limits;
    struct upload_policy policy;
    struct metrics *metrics;    /* shared with the master and the other workers */
    struct metrics_slot *mslot; /* this worker's slot */

    struct worker_listener {
        ev_io io;
        struct worker *w;
        const struct listen_addr *addr;
    } ls[CONFIG_MAX_LISTEN];
    int n_ls;
    bool accepting;
    bool deferred;         /* skipped one wakeup for a less loaded worker */
    ev_timer accept_retry; /* after EMFILE, or a deferral to a less loaded worker */

    struct conn *conns; /* doubly linked, all open connections */
    int n_conns;
    struct conn *dead; /* closed, freed from the prepare watcher */
    ev_prepare reaper;

    int access_fd;   /* -1: access_log off */
    bool access_cut; /* the last access log line was cut short */
    struct proxy_net proxies[CONFIG_MAX_LIST];
    int n_proxies;

    char *rbuf; /* shared read buffer for body bytes */
    size_t rbuf_size;
    int pipe[2]; /* raw TCP bodies go socket -> pipe -> file (splice); -1: off */
    size_t pipe_size;

    bool draining;
    bool past_deadline; /* shutdown_timeout struck while draining */
    ev_timer drain_deadline;
    ev_signal sig_quit, sig_term, sig_int, sig_usr1, sig_hup;
};

/* Runs a worker until it has finished; never returns. */
void worker_run(const struct config *cfg, const struct listener *ls, int n_ls, int slot,
                struct metrics *m) __attribute__((noreturn));

/* Appends one line to the access log (one write: lines never interleave). */
void worker_access_log(struct worker *w, const char *line, size_t len);

/* Accepting is paused while a worker is at max_connections. */
void worker_conn_closed(struct worker *w);

#endif
