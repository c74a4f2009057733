/* scan: the workers' scanner client. Hands a finished upload's file to the
 * scanner (intake-scand or a real clamd) with FILDES, exactly as clamdscan
 * --fdpass does, and reads the verdict. Blocking, with scan_timeout as the
 * deadline for everything: it runs on a job thread, never on the loop. A
 * scanner that is restarting is waited for (within the deadline) rather
 * than answered with an error at once. */
#ifndef INTAKE_SCAN_H
#define INTAKE_SCAN_H

#include "metrics.h"
#include "upload.h"

#include <stddef.h>
#include <stdint.h>

struct scan_client {
    char path[108];      /* the scanner's UNIX socket */
    uint64_t timeout_ms; /* scan_timeout */
    struct metrics_slot *metrics;
};

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
