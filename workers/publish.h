/* publish: a worker's NATS JetStream publisher (intake.conf(5) "publish", the
 * `publish` directive), with the NATS C client (cnats).
 *
 * One place per worker owns the connection: a publisher thread started after
 * the worker forked. The loop never calls cnats: it hands events to that
 * thread through a queue, and the acknowledgements (cnats calls them back on
 * its own threads) come back to the loop through an ev_async. cnats follows
 * the cluster: it is given every server of the directive, learns the others
 * from the servers, and reconnects to any of them forever; while it is
 * disconnected it buffers what is published.
 *
 * Every message carries the header Nats-Msg-Id: ID.VERDICT, so the stream
 * drops a re-sent one within its duplicate window. Two kinds:
 * - publish_submit: a file that passed, announced before STATUS. Tried
 *   (each attempt waiting up to PUBLISH_ATTEMPT_MS for the stream's
 *   acknowledgement) until timeout_ms (hook_timeout) has passed; then
 *   req->done says why not.
 * - publish_async: infected and error verdicts, not awaited; retried while
 *   NATS is away, in a bounded queue (PUBLISH_QUEUE_MAX: beyond it the
 *   oldest waiting event is dropped, counted and logged), and kept in the
 *   spool's outbox until acknowledged, so a worker that ends before NATS
 *   is back (reload, shutdown, crash) loses none: the next one to start
 *   publishes them. */
#ifndef INTAKE_PUBLISH_H
#define INTAKE_PUBLISH_H

#include "metrics.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PUBLISH_ATTEMPT_MS 2000
#define PUBLISH_QUEUE_MAX 10000

struct publisher;
struct publish_req;

typedef void (*publish_done_fn)(struct publish_req *r, bool ok, const char *reason);

struct publish_req {
    publish_done_fn done; /* set by the caller */
    void *owner;          /* the caller's */
    /* The publisher's. */
    struct publisher *p;
    char msgid[48];
    char *json;
    size_t len;
    ev_timer deadline;
    char why[128]; /* the last attempt's failure */
    bool stopped;  /* by publish_give_up: the worker is past shutdown_timeout */
    struct publish_req *prev, *next;
};

/* urls: "nats://h:p,nats://h:p". outbox: a directory (spool/.events) where
 * the events nobody waits for are kept until the stream acknowledges them,
 * and whose leftovers (from a worker that ended) are published again at
 * the start; -1: none. NULL on failure (logged). */
struct publisher *publish_start(struct ev_loop *loop, const char *urls, const char *subject,
                                uint64_t timeout_ms, struct metrics_slot *metrics, int outbox);
/* Announces json (len bytes, taken over: freed by the publisher; NULL: out
 * of memory, reported as a failure) for upload id with verdict; r->done is
 * called on the loop, after this returns. */
void publish_submit(struct publisher *p, struct publish_req *r, const char *id,
                    const char *verdict, char *json, size_t len);
/* The same, not awaited (json taken over). */
void publish_async(struct publisher *p, const char *id, const char *verdict, char *json,
                   size_t len);
/* publish_submit requests not done yet. */
int publish_pending(const struct publisher *p);
/* shutdown_timeout: nobody waits for an acknowledgement any more; each
 * pending request's done gets ok false with r->stopped set (an event that
 * still reaches the stream is a duplicate its re-query's is dropped as). */
void publish_give_up(struct publisher *p);
/* The worker is exiting: gives queued events up to wait_ms to go out. */
void publish_stop(struct publisher *p, int wait_ms);

#endif
