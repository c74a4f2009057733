/* session: see session.h. Messages are parsed and built by message.c; this
 * file decides what they mean on a connection. */
#define _GNU_SOURCE
#include "session.h"

#include "conn.h"
#include "container.h"
#include "log.h"
#include "message.h"
#include "token.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A START with an id whose upload another connection is finishing is looked
 * up again every LOOKUP_RETRY_SECONDS (every second after the first ten
 * tries); one whose upload is complete but held without finishing, for
 * LOOKUP_HELD_TRIES tries (5 s): then it is "upload in use". */
#define LOOKUP_RETRY_SECONDS 0.2
#define LOOKUP_FAST_TRIES 10
#define LOOKUP_HELD_TRIES 13

static void send_ready(struct conn *c, bool resumed)
{
    size_t n;
    char *m = message_ready(&c->up, c->t->kind == MT_WS, resumed, &n);
    if (!m) {
        log_error("%s: out of memory formatting a message; closing", c->peer);
        conn_close(c);
        return;
    }
    c->t->send_msg(c, m, n);
    free(m);
}

void session_send_ack(struct conn *c, uint64_t n)
{
    char msg[160];
    int len = message_ack(&c->up, n, msg, sizeof msg);
    c->t->send_msg(c, msg, (size_t)len);
}

/* STATUS of c->up; then the connection waits for its next upload. */
static void status(struct conn *c)
{
    size_t n;
    char *m = message_status(&c->up, &n);
    c->uploads++;
    conn_set_state(c, c->t->idle_state);
    if (!m) {
        log_error("upload %s: out of memory for its STATUS message; closing (the file is %s)",
                  c->up.id, c->up.stored[0] ? "stored" : "not stored");
        conn_close(c);
        return;
    }
    c->t->send_msg(c, m, n);
    free(m);
    if (c->state == CONN_CLOSED) return;
    /* The upload is over: an idle connection keeps nothing of it. */
    c->logged = true;
    upload_free(&c->up);
    c->up.phase = UPLOAD_IDLE;
    c->t->go_on(c);
}

void session_send_status(struct conn *c)
{
    conn_log_access(c, 200, NULL);
    status(c);
}

/* --- START with an id: resume or re-query ------------------------------------ */

static void lookup_run(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    c->found = upload_find(&c->up, &c->w->store, c->req, &c->job_err);
}

static void lookup_done(struct job *j);

static void lookup_submit(struct conn *c)
{
    c->in_job = true;
    c->job.run = lookup_run;
    c->job.done = lookup_done;
    jobs_submit(c->w->jobs, &c->job);
}

void session_on_timer(struct conn *c)
{
    if (c->req && !c->in_job) lookup_submit(c);
}

void session_release(struct conn *c)
{
    free(c->req);
    c->req = NULL;
}

static void lookup_done(struct job *j)
{
    struct conn *c = container_of(j, struct conn, job);
    c->in_job = false;
    if (c->state == CONN_CLOSED) {
        /* The client left meanwhile: let go of what the lookup took. */
        session_release(c);
        upload_release(&c->up);
        conn_park(c);
        return;
    }
    struct upload_request *r = c->req;
    if (c->w->past_deadline && c->found != FOUND_FINAL && c->found != FOUND_ERROR) {
        /* shutdown_timeout struck while it was looked up: nothing more is
         * received or finished here (the answer to a known verdict is
         * still given). */
        upload_release(&c->up);
        conn_shut_down(c); /* names the id it asked for */
        session_release(c);
        return;
    }
    switch (c->found) {
    case FOUND_ERROR:
        conn_log_access(c, c->job_err.code, r);
        session_release(c);
        conn_fail_with(c, &c->job_err);
        return;
    case FOUND_FINISHING:
    case FOUND_HELD:
        /* The connection is not read while it waits: a client that left
         * would otherwise be waited for until the verdict. */
        if (conn_peer_gone(c)) {
            log_info("%s: asked for upload %s and left before it was finished", c->peer,
                     r->resume_id);
            conn_close(c);
            return;
        }
        if (c->lookups < UINT8_MAX) c->lookups++;
        if (c->found == FOUND_HELD && c->lookups > LOOKUP_HELD_TRIES) {
            struct upload_error e;
            log_info("upload %s: has every byte, but another connection holds it without "
                     "finishing it (a WebSocket sender that has not sent DONE); a re-query is "
                     "refused (409) until that one is closed",
                     r->resume_id);
            upload_fail(&e, 409, "upload in use");
            conn_log_access(c, 409, r);
            session_release(c);
            conn_fail_with(c, &e);
            return;
        }
        /* Another connection's worker is finishing it: its verdict is
         * recorded soon. */
        ev_timer_stop(c->w->loop, &c->timer);
        ev_timer_set(&c->timer, c->lookups > LOOKUP_FAST_TRIES ? 1.0 : LOOKUP_RETRY_SECONDS, 0.0);
        ev_timer_start(c->w->loop, &c->timer);
        return;
    case FOUND_FINAL:
        session_release(c);
        metrics_requery(c->w->mslot, c->t->kind);
        log_info("upload %s (%s) from %s: asked again; verdict %s", c->up.id, c->up.logname,
                 c->peer, upload_verdict_name(c->up.verdict));
        status(c); /* nothing happened to the file: no second access log line */
        return;
    case FOUND_COMPLETE:
        /* Every byte is in: the answer is its STATUS, once the finishing
         * steps end (no READY, no "Upload resumed": nothing is left to
         * send, and a WebSocket client owes no DONE). */
        session_release(c);
        c->logged = false;
        c->ended_ms = 0;
        c->abort_code = 0;
        if (c->up.steps & RECORD_RECEIVED) {
            /* Its finishing steps ran before and one failed, or were cut
             * short (its worker died, a shutdown): redo from there. */
            metrics_requery(c->w->mslot, c->t->kind);
            if (c->up.reason[0])
                log_info("upload %s (%s) from %s: asked again; finishing it from the step that "
                         "failed before (%s)",
                         c->up.id, c->up.logname, c->peer, c->up.reason);
            else
                log_info("upload %s (%s) from %s: asked again; finishing it from where its "
                         "finishing steps were cut short (a worker that ended, a shutdown)",
                         c->up.id, c->up.logname, c->peer);
        } else {
            metrics_resume(c->w->mslot, c->t->kind);
            log_info("upload %s (%s) from %s: resumed at byte %llu of %llu: every byte is in; "
                     "finishing it",
                     c->up.id, c->up.logname, c->peer, (unsigned long long)c->up.size,
                     (unsigned long long)c->up.size);
        }
        conn_complete_upload(c);
        return;
    case FOUND_RECEIVING:
        session_release(c);
        metrics_resume(c->w->mslot, c->t->kind);
        c->logged = false;
        c->ended_ms = 0;
        c->abort_code = 0;
        log_info("upload %s (%s) from %s: resumed at byte %llu of %llu", c->up.id, c->up.logname,
                 c->peer, (unsigned long long)c->up.received, (unsigned long long)c->up.size);
        conn_promise(c);
        conn_set_state(c, CONN_BODY);
        send_ready(c, true);
        if (c->state == CONN_BODY) c->t->go_on(c);
        return;
    }
}

/* --- client messages ------------------------------------------------------------ */

/* Tokens first: nothing about the server or an upload is told to a client
 * without one. Expiry counts at an upload's first START only (no id). */
static int check_token(struct conn *c, struct upload_request *r)
{
    const struct config *cfg = c->w->cfg;
    if (!cfg->auth_secret_file) return 0;
    struct upload_error e = {0};
    e.code =
        token_check(cfg->auth.keys, (size_t)cfg->auth.n, r->token, strlen(r->token),
                    (uint64_t)time(NULL), !r->resume_id[0], r->size, e.message, sizeof e.message);
    if (e.code) {
        conn_log_access(c, e.code, r);
        conn_fail_with(c, &e);
        return -1;
    }
    struct token t;
    if (token_parse(r->token, strlen(r->token), &t) == 0) r->token_expiry = (int64_t)t.expiry;
    return 0;
}

static void start(struct conn *c, struct upload_request *r)
{
    if (check_token(c, r) < 0) {
        free(r);
        return;
    }
    if (r->resume_id[0]) {
        c->req = r; /* kept until the lookup is done */
        c->lookups = 0;
        conn_set_state(c, CONN_LOOKUP);
        lookup_submit(c);
        return;
    }
    if (conn_begin_upload(c, r) == 0) {
        conn_set_state(c, CONN_BODY);
        send_ready(c, false);
    }
    free(r);
}

static void done(struct conn *c)
{
    if (c->up.phase != UPLOAD_RECEIVING) {
        conn_fail(c, 400, "DONE without an upload in progress");
        return;
    }
    if (!upload_complete(&c->up)) {
        conn_fail(c, 400, "DONE after %llu of %llu bytes", (unsigned long long)c->up.received,
                  (unsigned long long)c->up.size);
        return;
    }
    conn_complete_upload(c);
}

static void dispatch(struct conn *c, const char *buf, size_t len, bool line, const char *url_token,
                     size_t url_token_len)
{
    struct upload_request *r = malloc(sizeof *r);
    if (!r) {
        conn_fail(c, 500, "out of memory");
        return;
    }
    struct upload_error e = {0};
    enum message_type m = message_parse(buf, len, line, r, &e);
    if (m == MSG_BAD) {
        free(r);
        conn_fail_with(c, &e);
        return;
    }
    if (m == MSG_DONE) {
        free(r);
        if (line)
            conn_fail(c, 400, "expected {\"type\":\"START\",...}: DONE is a WebSocket message");
        else
            done(c);
        return;
    }
    if (c->up.phase == UPLOAD_RECEIVING) {
        free(r);
        conn_fail(c, 400, "START while upload %s is in progress (send DONE first)", c->up.id);
        return;
    }
    if (!r->token[0] && url_token_len) { /* a START's own token wins */
        memcpy(r->token, url_token, url_token_len);
        r->token[url_token_len] = '\0';
    }
    start(c, r);
}

void session_on_line(struct conn *c, const char *line, size_t len)
{
    dispatch(c, line, len, true, NULL, 0);
}

void session_on_message(struct conn *c, const char *json, size_t len, const char *url_token,
                        size_t url_token_len)
{
    dispatch(c, json, len, false, url_token, url_token_len);
}
