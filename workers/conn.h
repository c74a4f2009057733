/* conn: one client connection inside a worker, whatever its transport. It owns
 * its socket, its small carry buffer (bytes of a header line not yet
 * complete), its pending output and its upload session. State changes go
 * through conn_set_state, which also re-arms the io watcher and the one
 * timer. A conn is freed in one place only, the worker's reaper, after
 * conn_close and after any job it has running has finished. */
#ifndef INTAKE_CONN_H
#define INTAKE_CONN_H

#include "config.h"
#include "upload.h"
#include "jobs.h"
#include "tcp_line.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;

enum conn_state {
    CONN_HEADER,    /* waiting for a header line / control message */
    CONN_BODY,      /* receiving file bytes */
    CONN_FINISHING, /* upload complete; a job is syncing, scanning, placing */
    CONN_LINGER,    /* error sent: discard input until EOF, then close */
    CONN_CLOSED,
};

struct conn {
    ev_io io;
    ev_timer timer;
    struct worker *w;
    int fd;
    const struct listen_addr *addr;
    enum conn_state state;
    char peer[64];

    char *carry; /* TCP_LINE_MAX + 1 bytes while in use */
    size_t carry_len;
    struct tcp_line line;

    char *out;
    size_t out_len, out_off, out_cap;

    struct upload up;
    struct job job;
    bool in_job;
    unsigned uploads; /* finished on this connection */
    ev_tstamp linger_until;
    struct conn *prev, *next;
};

struct conn *conn_new(struct worker *w, int fd, const struct listen_addr *addr);
void conn_set_state(struct conn *c, enum conn_state s);
/* Queues bytes for the client; writes at once when the socket allows. 0 or -1
 * (the connection is then closed). */
int conn_send(struct conn *c, const char *data, size_t len);
/* Sends an ERROR message, drops the upload (its spool file stays), lingers. */
void conn_fail(struct conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void conn_fail_with(struct conn *c, const struct upload_error *e);
/* Closes at once; the memory goes when any running job is done. */
void conn_close(struct conn *c);
/* Lets a connection waiting for its next header go (QUIT). */
void conn_drain(struct conn *c);
void conn_free(struct conn *c);

#endif
