/* tcp: see tcp.h. Reads are sized so that they never run past the current
 * body: body bytes go from the socket to the spool file through the worker's
 * pipe (splice, no copy) or, over TLS or failing that, its shared buffer
 * (decrypted there), and only header-line bytes are ever kept per connection. */
#define _GNU_SOURCE
#include "tcp.h"

#include "log.h"
#include "session.h"
#include "tcp_line.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CARRY_CAP (TCP_LINE_MAX + 1)

/* A header line in progress (and the body bytes that came with it). */
struct tcp_head {
    struct tcp_line line;
    char buf[CARRY_CAP];
};
#define HEAD(c) ((struct tcp_head *)(c)->head)

static void process(struct conn *c);

static void tcp_send_msg(struct conn *c, const char *json, size_t len)
{
    conn_send2(c, json, len, "\n", 1);
}

static void tcp_go_on(struct conn *c)
{
    if (c->w->draining && (c->carry_len == 0 || c->w->past_deadline)) {
        conn_drain(c);
        return;
    }
    process(c);
}

static void tcp_drain(struct conn *c)
{
    if (c->state != CONN_HEADER || c->carry_len || c->out_len) return;
    /* A next upload the client already sent is served like one already read. */
    if (!conn_input_pending(c)) conn_close(c);
}

static void tcp_header_timeout(struct conn *c)
{
    conn_fail(c, 408, "header line not received within %llu ms",
              (unsigned long long)c->w->cfg->header_timeout_ms);
}

/* Consumes what the carry buffer holds: header lines and the body bytes that
 * came with them. Stops when waiting for a job or for more input. */
static void process(struct conn *c)
{
    while (c->state == CONN_HEADER || c->state == CONN_BODY) {
        size_t used = 0;
        if (c->state == CONN_HEADER) {
            if (c->carry_len == 0) return;
            size_t ll;
            ssize_t n = tcp_line_parse(&HEAD(c)->line, HEAD(c)->buf, c->carry_len, &ll);
            if (n == TCP_LINE_AGAIN) return;
            if (n == TCP_LINE_TOO_LONG) {
                conn_fail(c, 431, "header line longer than %d bytes", TCP_LINE_MAX);
                return;
            }
            session_on_line(c, HEAD(c)->buf, ll);
            used = (size_t)n;
        } else {
            if (c->carry_len == 0 && !upload_complete(&c->up)) return;
            uint64_t rem = upload_remaining(&c->up);
            used = c->carry_len < rem ? c->carry_len : (size_t)rem;
            if (used && conn_write_body(c, HEAD(c)->buf, used) < 0) return;
        }
        if (c->state == CONN_CLOSED || c->state == CONN_LINGER) return;
        memmove(HEAD(c)->buf, HEAD(c)->buf + used, c->carry_len - used);
        c->carry_len -= used;
        if (c->state == CONN_BODY && upload_complete(&c->up)) conn_complete_upload(c);
    }
}

/* Returns 1 if bytes came in, 0 otherwise. */
static int read_header(struct conn *c)
{
    if (!c->head && !(c->head = calloc(1, sizeof(struct tcp_head)))) {
        conn_fail(c, 500, "out of memory");
        return 0;
    }
    if (c->carry_len == CARRY_CAP) {
        conn_fail(c, 431, "header line longer than %d bytes", TCP_LINE_MAX);
        return 0;
    }
    bool was_empty = c->carry_len == 0;
    ssize_t n = conn_recv(c, HEAD(c)->buf + c->carry_len, CARRY_CAP - c->carry_len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        log_debug("%s: read failed: %s", c->peer, strerror(errno));
        conn_close(c);
        return 0;
    }
    if (n == 0) {
        if (c->carry_len) log_info("%s: connection closed in the middle of a header line", c->peer);
        conn_close(c);
        return 0;
    }
    c->carry_len += (size_t)n;
    /* The first byte of a new header starts its header_timeout. */
    if (was_empty && c->uploads > 0) conn_set_state(c, CONN_HEADER);
    process(c);
    /* Keep the carry buffer only while it holds something. */
    if (c->state != CONN_CLOSED && c->carry_len == 0) {
        free(c->head);
        c->head = NULL;
    }
    return 1;
}

static int read_body(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t rem = upload_remaining(&c->up);
    if (w->pipe[0] >= 0 && !c->tls) {
        /* Zero copy: socket -> pipe -> spool file, never through user space. */
        size_t want = rem < w->pipe_size ? (size_t)rem : w->pipe_size;
        ssize_t n = splice(c->fd, NULL, w->pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            ev_timer_again(w->loop, &c->timer);
            if (conn_splice_body(c, (size_t)n) < 0) return 0;
            if (upload_complete(&c->up)) conn_complete_upload(c);
            return 1;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
        if (n == 0) {
            conn_close(c); /* logs the interruption; the .part stays */
            return 0;
        }
        if (errno != EINVAL && errno != ENOSYS) {
            log_info("upload %s (%s) from %s: read failed: %s", c->up.id, c->up.logname, c->peer,
                     strerror(errno));
            conn_close(c);
            return 0;
        }
        /* This socket cannot splice: copy. */
    }
    size_t want = rem < w->rbuf_size ? (size_t)rem : w->rbuf_size;
    ssize_t n = conn_recv(c, w->rbuf, want);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        log_info("upload %s (%s) from %s: read failed: %s", c->up.id, c->up.logname, c->peer,
                 strerror(errno));
        conn_close(c);
        return 0;
    }
    if (n == 0) {
        conn_close(c); /* logs the interruption; the .part stays */
        return 0;
    }
    ev_timer_again(w->loop, &c->timer);
    if (conn_write_body(c, w->rbuf, (size_t)n) < 0) return 0;
    if (upload_complete(&c->up)) conn_complete_upload(c);
    return 1;
}

static int tcp_read_step(struct conn *c)
{
    return c->state == CONN_HEADER ? read_header(c) : read_body(c);
}

const struct transport tcp_transport = {
    .kind = MT_TCP,
    .idle_state = CONN_HEADER,
    .read_step = tcp_read_step,
    .send_msg = tcp_send_msg,
    .after_error = NULL,
    .go_on = tcp_go_on,
    .header_timeout = tcp_header_timeout,
    .drain = tcp_drain,
    .release = NULL,
};
