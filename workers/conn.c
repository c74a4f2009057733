/* conn: see conn.h. */
#define _GNU_SOURCE
#include "conn.h"

#include "log.h"
#include "tcp.h"
#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINGER_SECONDS 5.0

static void conn_on_io(struct ev_loop *loop, ev_io *io, int revents);
static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents);

struct conn *conn_new(struct worker *w, int fd, const struct listen_addr *addr)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->w = w;
    c->fd = fd;
    c->addr = addr;
    upload_init(&c->up);
    ev_io_init(&c->io, conn_on_io, fd, 0);
    ev_init(&c->timer, conn_on_timer);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    conn_set_state(c, CONN_HEADER);
    return c;
}

static void update_io(struct conn *c)
{
    int ev = 0;
    if (c->out_len > c->out_off) ev |= EV_WRITE;
    /* Backpressure: no reading while a reply waits for the client or a job
     * owns the upload. */
    else if (c->state == CONN_HEADER || c->state == CONN_BODY || c->state == CONN_LINGER)
        ev |= EV_READ;
    if (c->state == CONN_LINGER) ev |= EV_READ;
    if ((c->io.events & (EV_READ | EV_WRITE)) == ev && ev_is_active(&c->io)) return;
    ev_io_stop(c->w->loop, &c->io);
    ev_io_set(&c->io, c->fd, ev);
    if (ev) ev_io_start(c->w->loop, &c->io);
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
    case CONN_BODY: return (double)cfg->idle_timeout_ms / 1e3;
    case CONN_LINGER: return LINGER_SECONDS;
    default: return 0;
    }
}

void conn_set_state(struct conn *c, enum conn_state s)
{
    c->state = s;
    double t = state_timeout(c);
    if (t > 0) {
        c->timer.repeat = t;
        ev_timer_again(c->w->loop, &c->timer);
    } else {
        ev_timer_stop(c->w->loop, &c->timer);
    }
    if (s == CONN_LINGER) c->linger_until = ev_now(c->w->loop) + LINGER_SECONDS;
    update_io(c);
}

static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0) return -1;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

int conn_send(struct conn *c, const char *data, size_t len)
{
    if (c->state == CONN_CLOSED) return -1;
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + len) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            conn_close(c);
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    if (flush(c) < 0) {
        log_debug("%s: send failed: %s", c->peer, strerror(errno));
        conn_close(c);
        return -1;
    }
    if (c->out_len == 0 && c->state == CONN_LINGER) shutdown(c->fd, SHUT_WR);
    update_io(c);
    return 0;
}

void conn_fail_with(struct conn *c, const struct upload_error *e)
{
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) return;
    if (c->up.phase == UPLOAD_RECEIVING)
        log_info("upload %s (%s) from %s: %d %s", c->up.id, c->up.filename, c->peer, e->code,
                 e->message);
    else
        log_info("%s: refused with %d: %s", c->peer, e->code, e->message);
    upload_abort(&c->up);
    char msg[512];
    int n = upload_msg_error(e, msg, sizeof msg - 1);
    if (n < 0) {
        conn_close(c);
        return;
    }
    msg[n++] = '\n';
    conn_set_state(c, CONN_LINGER);
    conn_send(c, msg, (size_t)n);
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

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED) return;
    struct worker *w = c->w;
    /* A running job owns the upload until its done callback. */
    if (!c->in_job) upload_abort(&c->up);
    ev_io_stop(w->loop, &c->io);
    ev_timer_stop(w->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->n_conns--;
    /* Freed later by the reaper (or when its job is done), never on the stack
     * of one of its own callbacks. */
    if (!c->in_job) {
        c->next = w->dead;
        w->dead = c;
    }
    worker_conn_closed(w);
}

void conn_free(struct conn *c)
{
    upload_release(&c->up);
    free(c->carry);
    free(c->out);
    free(c);
}

void conn_drain(struct conn *c)
{
    if (c->state == CONN_HEADER && c->carry_len == 0 && c->out_len == 0) conn_close(c);
}

static void linger_read(struct conn *c)
{
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(c->fd, c->w->rbuf, c->w->rbuf_size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
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
    struct conn *c = (struct conn *)io; /* io is the first member */
    if (revents & EV_WRITE) {
        if (flush(c) < 0) {
            conn_close(c);
            return;
        }
        if (c->out_len == 0 && c->state == CONN_LINGER) shutdown(c->fd, SHUT_WR);
        update_io(c);
        /* Readable input waits for the next round: the reply went first. */
        return;
    }
    if (!(revents & EV_READ)) return;
    if (c->state == CONN_LINGER) {
        linger_read(c);
        return;
    }
    tcp_on_readable(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
    switch (c->state) {
    case CONN_HEADER:
        if (c->uploads > 0 && c->carry_len == 0) {
            log_debug("%s: idle after %u uploads; closing", c->peer, c->uploads);
            conn_fail(c, 408, "no new upload for %llu ms; closing",
                      (unsigned long long)c->w->cfg->idle_timeout_ms);
        } else {
            conn_fail(c, 408, "header line not received within %llu ms",
                      (unsigned long long)c->w->cfg->header_timeout_ms);
        }
        break;
    case CONN_BODY:
        conn_fail(c, 408, "no data received for %llu ms; upload interrupted",
                  (unsigned long long)c->w->cfg->idle_timeout_ms);
        break;
    case CONN_LINGER: conn_close(c); break;
    default: break;
    }
}
