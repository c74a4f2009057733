/* scan: the workers' scanner client, and the one module that talks to the
 * scanners (intake-scand, or a pool of real clamd servers). It owns the scan
 * queue: a finished upload's scan round trip runs on threads of its own, so
 * a scanner that is slow, frozen or restarting holds only scans, never the
 * hashing, fsync and placement of other uploads on the worker's job pool.
 *
 * A scan goes to one address of the pool, round-robin: unix:/path hands the
 * file over with FILDES (as clamdscan --fdpass), tcp:HOST:PORT streams it
 * with INSTREAM in bounded chunks straight from the read-only spool fd
 * (sendfile, never whole in memory). Connections are clamd sessions
 * (IDSESSION, then one request at a time, each reply "N: ..." matched to
 * its request number) kept per address and reused scan after scan, at most
 * SCAN_IDLE_MAX idle per address and none idle longer than
 * SCAN_SESSION_IDLE_MS; one found closed when taken is reopened, and a
 * reused one that fails before the file was handed over is reopened and
 * the file sent again at no cost to the rule below. Anything unexpected (an
 * ERROR reply, a wrong request number, trailing bytes) closes the session.
 * scan_timeout is the deadline for everything. An address that refuses or
 * does not connect in time is marked down in the shared state (logged once,
 * by whoever marks it) and skipped until the master's probe finds it
 * answering again (logged once); the scan moves on to the next address.
 * With none up, the scan waits for one (within the deadline). A scan the
 * scanner died in is tried once more, on another address when there is
 * one, not again: a file that kills the scanner twice, anywhere in the
 * pool, is verdict error. */
#ifndef INTAKE_SCAN_H
#define INTAKE_SCAN_H

#include "config.h"
#include "jobs.h"
#include "metrics.h"
#include "upload.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCAN_CHUNK (64 * 1024) /* INSTREAM chunk: far below any StreamMaxLength */
#define SCAN_IDLE_MAX 16         /* idle sessions kept per address (a worker has 4 scan threads) */
/* An idle session older than this is closed rather than reused: below
 * clamd's IdleTimeout (30 s by default) and intake-scand's 30 s. */
#define SCAN_SESSION_IDLE_MS 20000

struct scan_session {
    int fd;
    unsigned id;     /* the last request number used on it */
    int64_t used_ms; /* when it was last given back (CLOCK_MONOTONIC) */
};

struct scan_target {
    struct scanner_addr addr;
    int mi; /* its index in the shared metrics table (metrics_scanner_index) */
    /* Idle sessions to this address, the most recently used last. All zero
     * is a valid empty state (the mutex included, on glibc). */
    pthread_mutex_t mu;
    struct scan_session idle[SCAN_IDLE_MAX];
    int n_idle;
    uint64_t opened; /* sessions opened, ever (read by the tests) */
};

struct scan_client {
    struct scan_target t[CONFIG_MAX_SCANNERS];
    int n;
    unsigned next;       /* round-robin position, shared by the scan threads */
    uint64_t timeout_ms; /* scan_timeout */
    struct metrics *shared;       /* the per-address state (up/down); may be NULL */
    struct metrics_slot *metrics; /* this worker's counters; may be NULL */
    struct jobs *queue;           /* the scan queue's threads (scan_start) */
    int stop_fd;                  /* an eventfd, readable once scan_stop was called */
    int stopping;                 /* set (atomically) by scan_stop, before stop_fd */
};

/* Fills sc's targets from the configuration (its scanners[]). */
void scan_init(struct scan_client *sc, const struct config *cfg, struct metrics *shared,
               struct metrics_slot *slot);

/* Starts the scan queue's threads for the loop. 0, or -1. */
int scan_start(struct scan_client *sc, struct ev_loop *loop, int threads);
/* Queues a job whose run() makes scanner round trips (scan_file); its
 * done() comes back on the loop thread. */
void scan_submit(struct scan_client *sc, struct job *j);
/* shutdown_timeout struck: every scan running or still queued ends at
 * once with VERDICT_STOPPED (no verdict: the file is scanned when its
 * client asks again). Any thread. */
void scan_stop(struct scan_client *sc);
/* Scan jobs queued or running. */
int scan_pending(const struct scan_client *sc);

/* An upload_scan_fn (upload.h): ctx is a struct scan_client. */
enum upload_verdict scan_file(void *ctx, int fd, const char *id, char *virus, size_t virus_len,
                              char *reason, size_t reason_len);

/* Closes every idle session (the tests; a worker's go with the process). */
void scan_close_sessions(struct scan_client *sc);

/* Parses one clamd reply ("fd[5]: OK", "stream: Eicar FOUND", "x: msg ERROR",
 * "INSTREAM size limit exceeded. ERROR"). Exposed for the unit tests. */
enum upload_verdict scan_parse_reply(const char *reply, char *virus, size_t virus_len, char *reason,
                                     size_t reason_len);

/* PINGs the n addresses at once; up[i] is true for each that answered PONG
 * within timeout_ms. */
void scan_probe(const struct scanner_addr *a, int n, int timeout_ms, bool *up);

/* Marks an address of the shared table up or down; the caller that changes
 * its state logs it (once, whoever it is), with why for down. */
void scan_mark(struct metrics *shared, int mi, const char *text, bool up, const char *why,
               int n_addrs);

#endif
