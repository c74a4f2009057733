/* hook: runs the accept hook (intake.conf(5) "accept_hook") for a worker, on its event
 * loop, never on a thread: the program is started with posix_spawn, its
 * exit is watched through a pidfd (libev's ev_child works on the default
 * loop only, and a worker runs its own loop), its standard input is written
 * and its standard output and error are read by io watchers, so a hook that
 * runs for hook_timeout holds no thread and delays no other upload.
 *
 * The child gets exactly three descriptors (stdin: the JSON line, stdout and
 * stderr: pipes whose lines go to the error log with the upload id), default
 * signal dispositions and mask, and a process group of its own: at
 * hook_timeout the whole group is killed, and so is whatever the hook left
 * behind in its group when it exits. At most `cap` hooks run at once per
 * worker; the others wait in a queue, in order. Each running hook's group
 * is also written into the worker's slot of the shared mapping (hook_pgid):
 * a worker that dies cannot kill its hooks, so the master does. */
#ifndef INTAKE_HOOK_H
#define INTAKE_HOOK_H

#include "metrics.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct hooks;
struct hook_run;

/* Called on the loop once the hook has ended: ok (exit 0 in time), or why
 * not ("exited with status 3", "timed out after 60000 ms", ...). */
typedef void (*hook_done_fn)(struct hook_run *h, bool ok, const char *reason);

#define HOOK_LINE_MAX 1024 /* a longer output line is logged in pieces */

struct hook_stream {
    ev_io io;
    struct hook_run *h;
    const char *name; /* "stdout", "stderr" */
    char line[HOOK_LINE_MAX];
    size_t len;
};

struct hook_run {
    /* Set by the caller before hooks_submit. */
    char id[33];       /* the upload's id, for the log */
    char *input;       /* one JSON line with its "\n"; freed by the hook module */
    size_t input_len;
    hook_done_fn done;
    void *owner; /* the caller's */

    /* The hook module's. */
    struct hooks *hs;
    pid_t pid;
    ev_io exit_io; /* the pidfd */
    ev_io in_io;
    size_t in_off;
    struct hook_stream out, err;
    ev_timer timer;
    ev_tstamp started;
    bool timed_out;
    bool stopped; /* by hooks_stop: the worker is past shutdown_timeout */
    int pgid_ix;  /* its entry in the slot's hook_pgid (the master's view), or -1 */
    size_t logged; /* output bytes logged */
    char why[96];  /* it could not be started */
    struct hook_run *next;
};

/* The per-worker runner: argv is the accept_hook directive (PROGRAM ARG...,
 * NULL-terminated), kept by the caller. NULL on out of memory. */
struct hooks *hooks_start(struct ev_loop *loop, char *const *argv, uint64_t timeout_ms, int cap,
                          struct metrics_slot *metrics);
/* Runs h now, or queued behind the cap. h->done is always called, on the
 * loop, after hooks_submit has returned. */
void hooks_submit(struct hooks *hs, struct hook_run *h);
/* Hooks running or queued. */
int hooks_pending(const struct hooks *hs);
/* shutdown_timeout: every running hook is killed with its process group and
 * every waiting one dropped; each one's done gets ok false with h->stopped
 * set, and so does any hook submitted from now on. */
void hooks_stop(struct hooks *hs);
/* The worker is exiting: kill every running hook's process group. */
void hooks_kill_all(struct hooks *hs);

#endif
