/* conn: see conn.h. */
#define _GNU_SOURCE
#include "conn.h"

#include "container.h"
#include "log.h"
#include "message.h"
#include "scan.h"
#include "session.h"
#include "tls.h"

#include <cjson/cJSON.h>
#include <sys/time.h>
#include <time.h>
#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINGER_SECONDS 5.0
/* Past shutdown_timeout the master kills what is left 5 s later: a client
 * that keeps its side open after its 503 must not be what holds the
 * worker until then. */
#define LINGER_PAST_DEADLINE 1.0

static void conn_on_io(struct ev_loop *loop, ev_io *io, int revents);
static void leg_done(struct job *j);

static double linger_seconds(const struct conn *c)
{
    return c->w->past_deadline ? LINGER_PAST_DEADLINE : LINGER_SECONDS;
}

/* The client's filename in an access log line: JSON-escaped with its real
 * length; a name that is not UTF-8 (refused, but logged) has its bad bytes
 * replaced by U+FFFD and, so that nothing is lost, the exact bytes in hex as
 * "filename_hex". */
static void add_filename(cJSON *o, const char *name, size_t len)
{
    bool replaced = false;
    message_json_add(o, "filename", name, len, &replaced);
    if (!replaced) return;
    char *hex = malloc(2 * len + 1);
    if (!hex) return;
    upload_hex((const unsigned char *)name, len, hex);
    cJSON_AddStringToObject(o, "filename_hex", hex);
    free(hex);
}

/* Every string goes through message_json_add: the line is JSON whatever the
 * client sent. */
static cJSON *access_object(struct conn *c, int code, const struct upload_request *r)
{
    const struct upload *u = &c->up;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t at = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    if (!r && !c->ended_ms) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double ms = (double)(now.tv_sec - u->started.tv_sec) * 1e3 +
                    (double)(now.tv_nsec - u->started.tv_nsec) / 1e6;
        c->ended_ms = at;
        c->ended_after = ms < 0 ? 0 : (uint32_t)(ms + 0.5);
    }
    if (!r) at = c->ended_ms;
    time_t secs = (time_t)(at / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[96], hex[65];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(at % 1000));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "time", when);
    message_json_add(o, "remote", c->remote, strlen(c->remote), NULL);
    cJSON_AddStringToObject(o, "transport", c->t->kind == MT_TCP ? "tcp" : "ws");
    if (r) {
        /* A refused resume or re-query: the id asked for (a valid id, the
         * parser checked), what an operator looks for. */
        if (r->resume_id[0])
            cJSON_AddStringToObject(o, "id", r->resume_id);
        else
            cJSON_AddNullToObject(o, "id");
        add_filename(o, r->filename, r->filename_len);
        cJSON_AddNullToObject(o, "stored_as");
        cJSON_AddNumberToObject(o, "size", (double)r->size);
        cJSON_AddNumberToObject(o, "received", 0);
        cJSON_AddNullToObject(o, "sha256");
        cJSON_AddNullToObject(o, "verdict");
        cJSON_AddNullToObject(o, "virus");
        cJSON_AddNumberToObject(o, "code", code);
        cJSON_AddNumberToObject(o, "duration_ms", 0);
    } else {
        bool sealed = u->phase == UPLOAD_SEALED || u->phase == UPLOAD_DONE;
        cJSON_AddStringToObject(o, "id", u->id);
        add_filename(o, u->filename, u->filename_len);
        if (u->stored[0])
            message_json_add(o, "stored_as", u->stored, strlen(u->stored), NULL);
        else
            cJSON_AddNullToObject(o, "stored_as");
        cJSON_AddNumberToObject(o, "size", (double)u->size);
        cJSON_AddNumberToObject(o, "received", (double)u->received);
        if (sealed) {
            upload_hex(u->digest, 32, hex);
            cJSON_AddStringToObject(o, "sha256", hex);
        } else {
            cJSON_AddNullToObject(o, "sha256");
        }
        if (u->verdict != VERDICT_NONE)
            cJSON_AddStringToObject(o, "verdict", upload_verdict_name(u->verdict));
        else
            cJSON_AddNullToObject(o, "verdict");
        if (u->verdict == VERDICT_INFECTED)
            message_json_add(o, "virus", u->virus, strlen(u->virus), NULL);
        else
            cJSON_AddNullToObject(o, "virus");
        cJSON_AddNumberToObject(o, "code", code);
        cJSON_AddNumberToObject(o, "duration_ms", (double)c->ended_after);
    }
    return o;
}

void conn_log_access(struct conn *c, int code, const struct upload_request *r)
{
    if (c->w->access_fd < 0) return;
    cJSON *o = access_object(c, code, r);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t n = json ? strlen(json) : 0;
    char *line = json ? malloc(n + 1) : NULL;
    if (line) {
        memcpy(line, json, n);
        line[n] = '\n';
        worker_access_log(c->w, line, n + 1);
    }
    free(line);
    free(json);
    c->logged = true;
}

void conn_promise(struct conn *c)
{
    metrics_promise(c->w->metrics, c->w->mslot, (int64_t)(c->up.size - c->up.received));
}

void conn_abort_upload(struct conn *c, int code)
{
    if (c->in_job) {
        /* The job owns the upload: its done callback drops it. */
        if (!c->abort_code) c->abort_code = code;
        return;
    }
    /* What it will not write is no longer promised (see conn_promise). */
    if (c->up.phase == UPLOAD_RECEIVING)
        metrics_promise(c->w->metrics, c->w->mslot, -(int64_t)(c->up.size - c->up.received));
    if ((c->up.phase == UPLOAD_RECEIVING || c->up.phase == UPLOAD_SEALED ||
         (c->up.phase == UPLOAD_DONE && !c->up.stored[0])) &&
        !c->logged)
        conn_log_access(c, code, NULL);
    upload_abort(&c->up);
}
static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents);

void conn_park(struct conn *c)
{
    c->next = c->w->dead;
    c->w->dead = c;
}

struct conn *conn_new(struct worker *w, int fd, const struct listen_addr *addr)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->w = w;
    c->fd = fd;
    c->addr = addr;
    c->t = addr->kind == LISTEN_TCP ? &tcp_transport : &ws_transport;
    upload_init(&c->up);
    ev_io_init(&c->io, conn_on_io, fd, 0);
    ev_init(&c->timer, conn_on_timer);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    metrics_connection(w->mslot, c->t->kind, 1);
    conn_set_state(c, CONN_HEADER);
    return c;
}

/* The states that read client bytes, unless reading waits for the hash. */
static bool reading(const struct conn *c)
{
    if (c->state == CONN_FINISHING || c->state == CONN_LOOKUP)
        return c->t->reads_waiting && c->t->reads_waiting(c);
    return (c->state == CONN_HEADER || c->state == CONN_BODY) && !c->hash_wait;
}

void conn_update_io(struct conn *c)
{
    int ev = 0;
    if (c->out_len > c->out_off || tls_read_wants_write(c)) ev |= EV_WRITE;
    /* Backpressure: no reading while a reply waits for the client or a job
     * owns the upload. Lingering reads whatever comes, to discard it. */
    else if (reading(c))
        ev |= EV_READ;
    if (c->state == CONN_LINGER && !tls_read_wants_write(c)) ev |= EV_READ;
    if ((c->io.events & (EV_READ | EV_WRITE)) != ev || !ev_is_active(&c->io)) {
        ev_io_stop(c->w->loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        if (ev) ev_io_start(c->w->loop, &c->io);
    }
    tls_kick(c);
}

static double state_timeout(struct conn *c)
{
    const struct config *cfg = c->w->cfg;
    switch (c->state) {
    case CONN_HEADER:
        /* Between uploads a client may think for idle_timeout; once it has
         * started a header line it has header_timeout to finish it. */
        if (c->uploads > 0 && c->carry_len == 0) return (double)cfg->idle_timeout_ms / 1e3;
        return (double)cfg->header_timeout_ms / 1e3;
    case CONN_BODY:
        return (double)cfg->idle_timeout_ms / 1e3;
    case CONN_LINGER:
        return linger_seconds(c);
    default:
        return 0;
    }
}

void conn_set_state(struct conn *c, enum conn_state s)
{
    if (c->state == CONN_CLOSED) return;
    c->state = s;
    double t = state_timeout(c);
    if (t > 0) {
        c->timer.repeat = t;
        ev_timer_again(c->w->loop, &c->timer);
    } else {
        ev_timer_stop(c->w->loop, &c->timer);
    }
    conn_update_io(c);
}

static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = conn_xmit(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0) return -1;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    /* Everything went out. While an upload is received the buffer is kept
     * for its acknowledgements (one per WebSocket data message); otherwise
     * an idle connection keeps no output buffer. */
    if ((!c->in_job && c->up.phase != UPLOAD_RECEIVING) || c->out_cap > 65536) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 0;
}

static void after_flush(struct conn *c)
{
    if (c->out_len == 0 && c->state == CONN_LINGER) conn_shutdown_write(c);
    conn_update_io(c);
}

int conn_send(struct conn *c, const void *data, size_t len)
{
    return conn_send2(c, data, len, NULL, 0);
}

int conn_send2(struct conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    if (c->state == CONN_CLOSED) return -1;
    size_t len = alen + blen;
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            conn_close(c);
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    if (alen) memcpy(c->out + c->out_len, a, alen);
    if (blen) memcpy(c->out + c->out_len + alen, b, blen);
    c->out_len += len;
    if (flush(c) < 0) {
        log_debug("%s: send failed: %s", c->peer, strerror(errno));
        conn_close(c);
        return -1;
    }
    after_flush(c);
    return 0;
}

void conn_linger(struct conn *c)
{
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) return;
    conn_set_state(c, CONN_LINGER);
    c->linger_until = ev_now(c->w->loop) + linger_seconds(c);
    after_flush(c);
}

void conn_fail_with(struct conn *c, const struct upload_error *e)
{
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) return;
    if (c->up.phase == UPLOAD_RECEIVING)
        log_info("upload %s (%s) from %s: %d %s", c->up.id, c->up.logname, c->peer, e->code,
                 e->message);
    else
        log_info("%s: refused with %d: %s", c->peer, e->code, e->message);
    metrics_error(c->w->mslot, e->code);
    conn_abort_upload(c, e->code);
    size_t n;
    char *msg = message_error(e, &n);
    if (!msg) {
        conn_close(c);
        return;
    }
    c->t->send_msg(c, msg, n);
    free(msg);
    if (c->state == CONN_CLOSED) return;
    if (c->t->after_error) c->t->after_error(c, e->code);
    conn_linger(c);
}

void conn_fail(struct conn *c, int code, const char *fmt, ...)
{
    struct upload_error e = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    conn_fail_with(c, &e);
}

int conn_begin_upload(struct conn *c, const struct upload_request *r)
{
    struct upload_error e = {0};
    c->w->limits.promised = metrics_promised(c->w->metrics);
    /* A draining worker still serves connections it has accepted: a reload
     * must not fail an upload that arrives on one of them. */
    if (upload_begin(&c->up, &c->w->store, &c->w->limits, r, &e) < 0) {
        conn_log_access(c, e.code, r);
        conn_fail_with(c, &e);
        return -1;
    }
    conn_promise(c);
    c->logged = false;
    c->ended_ms = 0;
    c->abort_code = 0;
    log_debug("upload %s (%s) from %s: started, %llu bytes", c->up.id, c->up.logname, c->peer,
              (unsigned long long)c->up.size);
    return 0;
}

/* Hashing trails the writes on a job thread, started every HASH_STEP
 * bytes. Reading pauses while more than HASH_LAG bytes wait beyond what the
 * running job covers: the client then waits in the kernel instead of the
 * hash waiting for a core, so on a busy machine the hash keeps up and the
 * last byte is followed by at most 2 * HASH_LAG bytes to hash, not by a
 * second pass over most of the file. */
#define HASH_STEP (4u << 20)
#define HASH_LAG (16u << 20)

static void hash_run(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    /* Hash what was written, and every UPLOAD_CHECKPOINT bytes make it
     * durable and record that: what a resume after a crash may count on. */
    c->hash_failed = upload_hash(&c->up, c->hash_to) < 0;
    if (!c->hash_failed && upload_checkpoint(&c->up, &c->w->store, c->hash_to) < 0)
        c->hash_failed = true;
}

static void start_finalize(struct conn *c);
static void hash_done(struct job *j);

/* Hands what was written and not yet hashed to the bulk pool. */
static void submit_hash(struct conn *c)
{
    c->hash_to = c->up.received;
    c->in_job = true;
    c->job.run = hash_run;
    c->job.done = hash_done;
    jobs_submit(c->w->bulk, &c->job);
}

static void hash_done(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    c->in_job = false;
    bool paused = c->hash_wait;
    c->hash_wait = false;
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) {
        /* It failed, or the client went away, meanwhile: now drop the upload. */
        conn_abort_upload(c, c->abort_code ? c->abort_code : 499);
        if (c->state == CONN_CLOSED) conn_park(c);
        return;
    }
    if (c->hash_failed) {
        /* Finishing would fail the same way: stop receiving now. */
        c->hash_failed = c->finish_pending = false;
        conn_fail(c, 500, "cannot read the spool file back or make it durable");
        return;
    }
    if (c->finish_pending) {
        c->finish_pending = false;
        start_finalize(c);
        return;
    }
    if (c->w->past_deadline) {
        conn_shut_down(c); /* shutdown_timeout struck while it hashed: 503, bytes kept */
        return;
    }
    if (c->up.phase == UPLOAD_RECEIVING && upload_unhashed(&c->up) >= HASH_STEP) submit_hash(c);
    if (paused) {
        /* Caught up: read again, and the idle time counts from now. */
        conn_update_io(c);
        ev_timer_again(c->w->loop, &c->timer);
    }
}

static void after_body(struct conn *c, size_t len);

/* What was written since before, all of it or up to a failure, is no longer
 * promised (conn_promise). */
static void unpromise_written(struct conn *c, uint64_t before)
{
    metrics_promise(c->w->metrics, c->w->mslot, -(int64_t)(c->up.received - before));
}

int conn_write_body(struct conn *c, const void *data, size_t len)
{
    struct upload_error e;
    uint64_t before = c->up.received;
    int rc = upload_write(&c->up, data, len, &e);
    unpromise_written(c, before);
    if (rc < 0) {
        conn_fail_with(c, &e);
        return -1;
    }
    after_body(c, len);
    return 0;
}

int conn_splice_body(struct conn *c, size_t len)
{
    struct upload_error e;
    uint64_t before = c->up.received;
    int rc = upload_splice(&c->up, c->w->pipe[0], len, &e);
    unpromise_written(c, before);
    if (rc < 0) {
        /* The shared pipe must be empty for the next connection. */
        char sink[4096];
        while (read(c->w->pipe[0], sink, sizeof sink) > 0) {
        }
        conn_fail_with(c, &e);
        return -1;
    }
    after_body(c, len);
    return 0;
}

static void after_body(struct conn *c, size_t len)
{
    metrics_received(c->w->mslot, c->t->kind, len);
    if (!c->in_job && upload_unhashed(&c->up) >= HASH_STEP && !upload_complete(&c->up)) {
        submit_hash(c);
    } else if (c->in_job && c->up.received - c->hash_to >= HASH_LAG) {
        c->hash_wait = true;
        conn_update_io(c);
    }
}

/* Finishing runs in legs (design-notes "Finishing an upload"): blocking
 * ones on the job pool (checksum, fsync, recording, placement) or the scan
 * queue (the scan), and the accept hook and the publish on the loop itself.
 * Between legs the connection stays in_job: it is not read and not freed,
 * and the upload's spool fds (its one-writer lock) stay held. leg_run does
 * every blocking step that is due; leg_done decides where the upload goes
 * next. */
static void leg_run(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    struct worker *w = c->w;
    struct upload *u = &c->up;
    if (c->step) {
        /* The outcome of the hook or the publish, recorded. */
        unsigned step = c->step;
        c->step = 0;
        if (upload_step_done(u, &w->store, step, c->step_ok,
                             step == RECORD_HOOKED ? "accept hook failed" : "publish failed"))
            return;
    }
    if (u->phase == UPLOAD_RECEIVING) {
        c->job_err.code = 0;
        int rc = upload_seal_sync(u, &w->store, &c->job_err);
        if (rc < 0 && !c->job_err.code) c->job_err.code = 500;
        if (rc != 0) return;
    }
    if (u->phase != UPLOAD_SEALED) return;
    if (!(u->steps & RECORD_SCANNED)) {
        if (w->scan && !c->on_scan_queue) return; /* the scan queue's, next */
        if (upload_scan_step(u, &w->store, &w->policy)) return;
    }
    if (upload_next(u, &w->policy) == NEXT_PLACE) upload_place_step(u, &w->store, &w->policy);
}

static enum metrics_verdict mverdict(enum upload_verdict v)
{
    switch (v) {
    case VERDICT_CLEAN:
        return MV_CLEAN;
    case VERDICT_INFECTED:
        return MV_INFECTED;
    case VERDICT_UNSCANNED:
        return MV_UNSCANNED;
    default:
        return MV_ERROR;
    }
}

static void leg_submit(struct conn *c, bool scan_queue)
{
    c->in_job = true;
    c->on_scan_queue = scan_queue;
    c->job.run = leg_run;
    c->job.done = leg_done;
    if (scan_queue)
        scan_submit(c->w->scan, &c->job);
    else
        jobs_submit(c->w->jobs, &c->job);
}

/* --- the accept hook -------------------------------------------------------------- */

/* The hook's one line: the STATUS the client will hear if it succeeds, plus
 * where the file is and who sent it. */
static char *hook_input(struct conn *c, size_t *len)
{
    struct upload *u = &c->up;
    enum upload_verdict keep = u->verdict;
    u->verdict = u->scanned;
    if (u->scanned == VERDICT_ERROR && !u->reason[0])
        snprintf(u->reason, UPLOAD_TEXT_CAP, "scan failed");
    size_t n;
    char *status = message_status(u, &n);
    u->verdict = keep;
    cJSON *o = status ? cJSON_ParseWithLength(status, n) : NULL;
    free(status);
    if (!o) return NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.part", c->w->cfg->spool_dir, u->id);
    message_json_add(o, "path", path, strlen(path), NULL);
    message_json_add(o, "remote", c->remote, strlen(c->remote), NULL);
    cJSON_AddStringToObject(o, "transport", c->t->kind == MT_TCP ? "tcp" : "ws");
    message_json_add(o, "node", c->w->cfg->node_name, strlen(c->w->cfg->node_name), NULL);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json) return NULL;
    n = strlen(json);
    char *line = realloc(json, n + 2);
    if (!line) {
        free(json);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

/* shutdown_timeout struck between two legs: nothing more runs for this
 * upload here. Its record keeps the steps done (a hook stopped is not a
 * hook that failed), its file stays in the spool, and a re-query, after
 * the restart or to another worker, does the rest; the client is told so. */
static void finishing_stopped(struct conn *c, const char *leg)
{
    c->in_job = false;
    /* No verdict yet and nothing stored: what the access line of this 503
     * says (the scan's verdict and the reserved name stay in the record). */
    c->up.verdict = VERDICT_NONE;
    c->up.stored[0] = '\0';
    log_warn("upload %s (%s): shutdown_timeout reached before its %s; kept in the spool, a "
             "re-query finishes it",
             c->up.id, c->up.logname, leg);
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) {
        conn_abort_upload(c, 499);
        if (c->state == CONN_CLOSED) conn_park(c);
        return;
    }
    conn_fail(c, 503,
              "server is shutting down: the file is kept; ask for its verdict (START with id "
              "%s) on a new connection",
              c->up.id);
}

static void hook_done(struct hook_run *h, bool ok, const char *reason)
{
    struct conn *c = h->owner;
    if (h->stopped && !ok) { /* one that ended well before it was killed counts */
        free(h);
        c->hook = NULL;
        finishing_stopped(c, "accept hook ended");
        return;
    }
    if (!ok)
        log_error("upload %s (%s): accept hook failed: %s; kept in the spool (verdict error; "
                  "a re-query runs the hook again)",
                  c->up.id, c->up.logname, reason);
    else
        log_debug("upload %s: accept hook succeeded", c->up.id);
    free(h);
    c->hook = NULL;
    c->step = RECORD_HOOKED;
    c->step_ok = ok;
    leg_submit(c, false);
}

static void start_hook(struct conn *c)
{
    struct hook_run *h = calloc(1, sizeof *h);
    if (h) {
        snprintf(h->id, sizeof h->id, "%s", c->up.id);
        h->done = hook_done;
        h->owner = c;
        h->input = hook_input(c, &h->input_len);
    }
    if (!h || !h->input) {
        free(h);
        log_error("upload %s: out of memory for its accept hook's input", c->up.id);
        c->step = RECORD_HOOKED;
        c->step_ok = false;
        leg_submit(c, false);
        return;
    }
    c->hook = h;
    hooks_submit(c->w->hooks, h);
}

/* --- publish ---------------------------------------------------------------------- */

/* The event: the access log object the upload gets (code 200: what its line
 * says when the client hears STATUS) plus the node. */
static char *event_json(struct conn *c, int code, size_t *len)
{
    cJSON *o = access_object(c, code, NULL);
    if (!o) return NULL;
    message_json_add(o, "node", c->w->cfg->node_name, strlen(c->w->cfg->node_name), NULL);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (json) *len = strlen(json);
    return json;
}

static void publish_done(struct publish_req *p, bool ok, const char *reason)
{
    struct conn *c = p->owner;
    if (p->stopped) {
        free(p);
        c->pub = NULL;
        finishing_stopped(c, "event was acknowledged");
        return;
    }
    if (!ok)
        log_error("upload %s (%s): publish failed: %s; kept in the spool (verdict error; a "
                  "re-query publishes again)",
                  c->up.id, c->up.logname, reason);
    free(p);
    c->pub = NULL;
    c->step = RECORD_PUBLISHED;
    c->step_ok = ok;
    leg_submit(c, false);
}

static void start_publish(struct conn *c)
{
    struct upload *u = &c->up;
    enum upload_verdict keep = u->verdict;
    u->verdict = u->scanned;
    size_t n = 0;
    char *json = event_json(c, 200, &n);
    u->verdict = keep;
    struct publish_req *p = calloc(1, sizeof *p);
    if (!p) {
        free(json);
        log_error("upload %s: out of memory for its event", u->id);
        c->step = RECORD_PUBLISHED;
        c->step_ok = false;
        leg_submit(c, false);
        return;
    }
    p->done = publish_done;
    p->owner = c;
    c->pub = p;
    publish_submit(c->w->pub, p, u->id, upload_verdict_name(u->scanned), json, n);
}

/* Infected and error verdicts: announced without holding up STATUS. */
static void publish_after(struct conn *c, int code)
{
    struct upload *u = &c->up;
    if (!c->w->pub || u->verdict == VERDICT_NONE) return;
    if (u->verdict == VERDICT_CLEAN || u->verdict == VERDICT_UNSCANNED) return; /* before STATUS */
    if (strcmp(u->reason, "publish failed") == 0) return; /* never itself published */
    if (u->verdict == VERDICT_ERROR && (u->steps & RECORD_PLACED)) return; /* a scan error let through: published as it passed */
    size_t n = 0;
    char *json = event_json(c, code, &n);
    publish_async(c->w->pub, u->id, upload_verdict_name(u->verdict), json, n);
}

static void leg_done(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    struct worker *w = c->w;
    struct upload *u = &c->up;
    if (!c->job_err.code && u->phase == UPLOAD_SEALED) {
        /* Still being finished: the next leg, client there or not. */
        if (!(u->steps & RECORD_SCANNED)) {
            /* A scan stopped, or one not begun, at shutdown_timeout. */
            if (w->past_deadline) {
                finishing_stopped(c, c->on_scan_queue ? "scan was done" : "scan began");
                return;
            }
            leg_submit(c, true);
            return;
        }
        enum upload_next next = upload_next(u, &w->policy);
        if (w->past_deadline && next != NEXT_PLACE) {
            finishing_stopped(c, next == NEXT_HOOK ? "accept hook ran" : "event was published");
            return;
        }
        switch (next) {
        case NEXT_HOOK:
            start_hook(c);
            return;
        case NEXT_PUBLISH:
            start_publish(c);
            return;
        case NEXT_PLACE:
            leg_submit(c, false);
            return;
        }
    }
    c->in_job = false;
    if (c->job_err.code) {
        /* The checksum did not match (422): nothing was accepted. */
        if (c->state == CONN_CLOSED) {
            if (!c->logged) conn_log_access(c, c->job_err.code, NULL);
            conn_park(c);
            return;
        }
        conn_fail_with(c, &c->job_err);
        return;
    }
    metrics_upload(w->mslot, c->t->kind, mverdict(u->verdict));
    if (c->state == CONN_CLOSED) {
        /* The client went away while we finished: the upload is done all
         * the same (its line has verdict and stored_as); 499 says the client
         * never heard its STATUS. */
        log_info("upload %s (%s): finished as %s after its client had gone", u->id,
                 u->logname, upload_verdict_name(u->verdict));
        conn_log_access(c, 499, NULL);
        publish_after(c, 499);
        conn_park(c);
        return;
    }
    publish_after(c, 200);
    session_send_status(c);
}

static void start_finalize(struct conn *c)
{
    c->step = 0;
    leg_submit(c, false);
}

void conn_complete_upload(struct conn *c)
{
    conn_set_state(c, CONN_FINISHING);
    if (c->in_job)
        c->finish_pending = true; /* after the hash job in flight */
    else
        start_finalize(c);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED) return;
    struct worker *w = c->w;
    /* A running job owns the upload until its done callback. */
    conn_abort_upload(c, 499);
    ev_io_stop(w->loop, &c->io);
    ev_timer_stop(w->loop, &c->timer);
    tls_conn_free(c);
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
    metrics_connection(w->mslot, c->t->kind, -1);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->n_conns--;
    /* Freed later by the reaper (or when its job is done), never on the stack
     * of one of its own callbacks. */
    if (!c->in_job) {
        /* Waiting to look an upload up again: nothing holds it. */
        session_release(c);
        conn_park(c);
    }
    worker_conn_closed(w);
}

void conn_free(struct conn *c)
{
    free(c->hook); /* NULL: a conn with a leg running is not freed */
    free(c->pub);
    upload_free(&c->up);
    session_release(c);
    upload_release(&c->up);
    if (c->t->release) c->t->release(c);
    free(c->head);
    free(c->out);
    free(c);
}

bool conn_input_pending(const struct conn *c)
{
    int queued = 0;
    return (ioctl(c->fd, FIONREAD, &queued) == 0 && queued > 0) || tls_has_pending(c);
}

void conn_shut_down(struct conn *c)
{
    if (c->in_job || c->state == CONN_LINGER || c->state == CONN_CLOSED) return;
    /* ERROR, then the lingering close: input still coming is read and
     * dropped, so the client gets the message, not a reset. */
    if (c->up.phase == UPLOAD_RECEIVING)
        conn_fail(c, 503,
                  "server is shutting down: the %llu bytes received are kept; resume "
                  "(START with id %s) on a new connection",
                  (unsigned long long)c->up.received, c->up.id);
    else if (c->req && c->req->resume_id[0]) {
        /* A resume or re-query looked up, or waiting for the finishing
         * steps another connection runs: the upload stays where it is. */
        conn_log_access(c, 503, c->req);
        conn_fail(c, 503,
                  "server is shutting down: the upload is kept; send START with id %s again on "
                  "a new connection",
                  c->req->resume_id);
    } else
        conn_fail(c, 503, "server is shutting down; send it again on a new connection");
}

bool conn_peer_gone(const struct conn *c)
{
    /* POLLRDHUP: the client has shut its side down (sent FIN), whatever it
     * sent before, a WebSocket close frame or a stray byte, still unread. */
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void conn_drain(struct conn *c)
{
    if (c->state == CONN_LINGER || c->state == CONN_CLOSED || c->state == CONN_FINISHING ||
        c->state == CONN_LOOKUP)
        return;
    if (c->w->past_deadline && (c->carry_len || conn_input_pending(c))) {
        /* No new upload now, even one already sent: told so. */
        conn_shut_down(c);
        return;
    }
    if (c->up.phase == UPLOAD_RECEIVING) return; /* in flight: let it finish */
    /* A connection whose header or handshake has not come yet was accepted
     * for an upload: it gets it (header_timeout bounds a silent one). One
     * idle between uploads, or a WebSocket that has sent nothing since its
     * handshake, is let go. */
    if (c->uploads == 0 && !c->ws) return;
    c->t->drain(c);
}

static void linger_read(struct conn *c)
{
    for (int i = 0; i < 16; i++) {
        ssize_t n = conn_recv(c, c->w->rbuf, c->w->rbuf_size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
    }
    if (ev_now(c->w->loop) > c->linger_until) conn_close(c);
}

static void conn_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct conn *c = container_of(io, struct conn, io);
    if (revents & EV_WRITE) {
        if (flush(c) < 0) {
            conn_close(c);
            return;
        }
        after_flush(c);
        /* Readable input waits for the next round: the reply went first
         * (unless a TLS read was waiting for the socket to take its records). */
        if (!tls_resume_read(c)) return;
        revents |= EV_READ;
    }
    if (!(revents & EV_READ)) return;
    if (c->state == CONN_LINGER)
        linger_read(c);
    else if (reading(c))
        /* One read per wakeup (a body read moves up to 1 MiB): between two
         * reads of a fast upload the loop serves every other ready
         * connection. With 8, small uploads waited up to ~70 ms behind a
         * 1 GiB one on the same worker; with 1, ~20-45 ms. */
        c->t->read_step(c);
    /* TLS: a read may wait to write, or leave decrypted input behind. */
    if (c->tls && c->state != CONN_CLOSED) conn_update_io(c);
}

/* The timer ran out while our messages waited for the client: we stopped
 * reading (backpressure) because it does not read its acknowledgements, not
 * because it sent nothing. Says so, and closes at once: lingering would
 * read and discard what such a client keeps sending. */
static void fail_unread(struct conn *c)
{
    unsigned long long ms = (unsigned long long)c->w->cfg->idle_timeout_ms;
    size_t queued = c->out_len - c->out_off;
    if (c->up.phase == UPLOAD_RECEIVING)
        log_info("upload %s (%s) from %s: the client has not read the server's messages for %llu "
                 "ms (%zu bytes waiting; a client must read its acknowledgements); upload "
                 "interrupted, closing",
                 c->up.id, c->up.logname, c->peer, ms, queued);
    else
        log_info("%s: the client has not read the server's messages for %llu ms (%zu bytes "
                 "waiting); closing",
                 c->peer, ms, queued);
    metrics_error(c->w->mslot, 408);
    conn_abort_upload(c, 408);
    /* Best effort: queued behind what it has not read, it may never see it. */
    struct upload_error e = {.code = 408};
    snprintf(e.message, sizeof e.message,
             "the client has not read the server's messages for %llu ms; closing", ms);
    size_t n;
    char *msg = message_error(&e, &n);
    if (msg) c->t->send_msg(c, msg, n);
    free(msg);
    if (c->state != CONN_CLOSED && c->t->after_error) c->t->after_error(c, 408);
    conn_close(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct conn *c = container_of(t, struct conn, timer);
    const struct config *cfg = c->w->cfg;
    if ((c->state == CONN_HEADER || c->state == CONN_BODY) && c->out_len > c->out_off) {
        fail_unread(c);
        return;
    }
    if (c->hash_wait && c->state == CONN_BODY) {
        /* Not the client's silence: we stopped reading. */
        ev_timer_again(loop, t);
        return;
    }
    switch (c->state) {
    case CONN_HEADER:
        if (tls_handshake_timeout(c)) break;
        if (c->uploads > 0 && c->carry_len == 0)
            conn_fail(c, 408, "no new upload for %llu ms; closing",
                      (unsigned long long)cfg->idle_timeout_ms);
        else
            c->t->header_timeout(c);
        break;
    case CONN_BODY:
        if (c->up.phase == UPLOAD_RECEIVING)
            conn_fail(c, 408, "no data received for %llu ms; upload interrupted",
                      (unsigned long long)cfg->idle_timeout_ms);
        else
            conn_fail(c, 408, "idle for %llu ms; closing",
                      (unsigned long long)cfg->idle_timeout_ms);
        break;
    case CONN_LINGER:
        conn_close(c);
        break;
    case CONN_LOOKUP:
        session_on_timer(c);
        break;
    default:
        break;
    }
}
