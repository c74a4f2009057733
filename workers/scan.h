/* scan: the workers' scanner client, and the one module that talks to the
 * scanner (intake-scand or a real clamd). It owns the scan queue: a finished
 * upload's scan round trip runs on threads of its own, so a scanner that is
 * slow, frozen or restarting holds only scans, never the hashing, fsync and
 * placement of other uploads on the worker's job pool. A round trip hands
 * the file over with FILDES, exactly as clamdscan --fdpass does, and reads
 * the verdict, with scan_timeout as the deadline for everything. A scanner
 * that is restarting is waited for (within the deadline); a scan the scanner
 * died in is tried once more, not again: a file that kills the scanner twice
 * is verdict error. */
#ifndef INTAKE_SCAN_H
#define INTAKE_SCAN_H

#include "jobs.h"
#include "metrics.h"
#include "upload.h"

#include <stddef.h>
#include <stdint.h>

struct scan_client {
    char path[108];      /* the scanner's UNIX socket */
    uint64_t timeout_ms; /* scan_timeout */
    struct metrics_slot *metrics;
    struct jobs *queue; /* the scan queue's threads (scan_start) */
};

/* Starts the scan queue's threads for the loop. 0, or -1. */
int scan_start(struct scan_client *sc, struct ev_loop *loop, int threads);
/* Queues a job whose run() makes scanner round trips (scan_fildes); its
 * done() comes back on the loop thread. */
void scan_submit(struct scan_client *sc, struct job *j);
/* Scan jobs queued or running. */
int scan_pending(const struct scan_client *sc);

/* An upload_scan_fn (upload.h): ctx is a struct scan_client. */
enum upload_verdict scan_fildes(void *ctx, int fd, const char *id, char *virus, size_t virus_len,
                                char *reason, size_t reason_len);

/* Parses one clamd reply ("fd[5]: OK", "stream: Eicar FOUND", "x: msg ERROR").
 * Exposed for the unit tests. */
enum upload_verdict scan_parse_reply(const char *reply, char *virus, size_t virus_len, char *reason,
                                     size_t reason_len);

/* PING within timeout_ms: 0 if the scanner answered PONG. */
int scan_ping(const char *path, int timeout_ms);

#endif
