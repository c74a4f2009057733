/* conn: one client connection inside a worker, whatever its transport. It owns
 * its socket, its small head buffer (bytes of a header line or HTTP head not
 * yet complete), its pending output and its upload session. State changes go
 * through conn_set_state, which also re-arms the io watcher and the one
 * timer. A conn is freed in one place only, the worker's reaper, after
 * conn_close and after any job it has running has finished.
 *
 * The transport (raw TCP or WebSocket) is a small table of functions: how to
 * read, how to frame a JSON message, what to do after an ERROR and after
 * STATUS. Everything else (limits, finishing an upload off the loop,
 * STATUS, errors, metrics) is here, once. */
#ifndef INTAKE_CONN_H
#define INTAKE_CONN_H

#include "config.h"
#include "hook.h"
#include "jobs.h"
#include "publish.h"
#include "metrics.h"
#include "upload.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct conn;
struct ws;
struct tls;

enum conn_state {
    CONN_HEADER,    /* waiting for a header line / HTTP request head */
    CONN_BODY,      /* receiving: file bytes (TCP) or frames (WebSocket) */
    CONN_LOOKUP,    /* START with an id: finding the upload (a job), or waiting for
                       another worker to finish it (the timer) */
    CONN_FINISHING, /* upload complete; a job is syncing, scanning, placing */
    CONN_LINGER,    /* last words sent: discard input until EOF, then close */
    CONN_CLOSED,
};

struct transport {
    enum metrics_transport kind;
    /* The state a connection waits in for its next message. */
    enum conn_state idle_state;
    /* One read and what follows from it: 1 if bytes came in (read again),
     * 0 if the socket had nothing or the connection changed state. */
    int (*read_step)(struct conn *c);
    /* Frames and queues one JSON message (no line end in json). */
    void (*send_msg)(struct conn *c, const char *json, size_t len);
    /* After an ERROR message: any closing words (WebSocket close frame). */
    void (*after_error)(struct conn *c, int code);
    /* After STATUS was queued, or a resumed upload was found: go on with the
     * input already buffered. */
    void (*go_on)(struct conn *c);
    /* header_timeout ran out before a header line / request head. */
    void (*header_timeout)(struct conn *c);
    /* Whether to read on while the upload finishes or a START with an id
     * is looked up (WebSocket: to answer pings); NULL: no. */
    bool (*reads_waiting)(const struct conn *c);
    /* QUIT: let an idle connection go. */
    void (*drain)(struct conn *c);
    void (*release)(struct conn *c);
};

extern const struct transport tcp_transport;
extern const struct transport ws_transport;

struct conn {
    ev_io io;
    ev_timer timer;
    struct worker *w;
    const struct transport *t;
    int fd;
    const struct listen_addr *addr;
    enum conn_state state;
    char peer[64];   /* address:port of the socket peer, for the error log */
    char remote[64]; /* the client: the peer, or whom a trusted proxy names */

    /* A header line / HTTP head in progress: the transport's own struct
     * (its bytes and its parser's state), allocated only while in use. */
    void *head;
    size_t carry_len; /* bytes it holds */
    struct ws *ws;   /* after a WebSocket upgrade */
    struct tls *tls; /* on a tls listener (tls.c) */

    char *out;
    size_t out_len, out_off, out_cap;

    struct upload up;
    struct job job; /* hash, finalize or lookup: one at a time */
    struct upload_request *req; /* START with an id, while it is looked up */
    enum upload_found found;    /* what the lookup found */
    bool in_job;
    bool finish_pending; /* complete while a hash job ran: finalize after it */
    uint8_t lookups;     /* a START with an id looked up again and again */
    uint64_t hash_to;    /* what the running hash job covers */
    bool hash_failed;    /* the last hash job could not read or hash */
    bool hash_wait;      /* reading paused until the hash job catches up */
    struct upload_error job_err;
    /* Finishing, the legs on the loop (hook.c, publish.c): their outcome,
     * recorded by the next job. */
    struct hook_run *hook;  /* allocated while its hook runs */
    struct publish_req *pub; /* allocated while its event is awaited */
    unsigned step; /* RECORD_HOOKED or RECORD_PUBLISHED to record; 0: none */
    bool step_ok;
    bool on_scan_queue; /* the job runs on the scan queue's threads */
    int abort_code;   /* the upload failed while a job held it */
    bool logged;      /* the current upload has its access log line */
    /* When its access line and its event say the upload ended: the first of
     * the two to be built fixes it, so both say the same. 0 until then. */
    int64_t ended_ms;     /* ms since the epoch */
    uint32_t ended_after; /* its duration_ms */
    unsigned uploads; /* finished on this connection */
    ev_tstamp linger_until;
    struct conn *prev, *next;
};

struct conn *conn_new(struct worker *w, int fd, const struct listen_addr *addr);
void conn_set_state(struct conn *c, enum conn_state s);
/* Reading or not, writing or not, as the connection's state now says (the
 * state and its timer unchanged). */
void conn_update_io(struct conn *c);
/* Queues bytes for the client; writes at once when the socket allows. 0 or -1
 * (the connection is then closed). */
int conn_send(struct conn *c, const void *data, size_t len);
/* The same for a message in two parts (header and payload, line and its
 * newline): one write, so one segment, not two. */
int conn_send2(struct conn *c, const void *a, size_t alen, const void *b, size_t blen);
/* Sends an ERROR message (and the transport's closing words), drops the
 * upload (its spool file stays), then lingers and closes. */
void conn_fail(struct conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void conn_fail_with(struct conn *c, const struct upload_error *e);
/* Shuts the write side once the output is flushed and closes after EOF or
 * a few seconds: the client reads our last words instead of a reset. */
void conn_linger(struct conn *c);
/* Starts a new upload from a parsed START: limits, free space, spool file
 * and record (a draining worker still serves the connections it accepted). 0, or -1 after conn_fail. */
int conn_begin_upload(struct conn *c, const struct upload_request *r);
/* The bytes an upload being received still has to write are promised in
 * the shared metrics (the free-space check at every START counts them), from
 * its START or resume until they are written or it is dropped. */
void conn_promise(struct conn *c);
/* Every byte is in: checksum, then fsync/scan/place on a job thread, then
 * STATUS through the transport. */
void conn_complete_upload(struct conn *c);
/* Writes body bytes to the session and counts them. 0, or -1 after conn_fail. */
int conn_write_body(struct conn *c, const void *data, size_t len);
/* The same for len bytes the transport spliced into the worker's pipe. */
int conn_splice_body(struct conn *c, size_t len);
/* Closes at once; the memory goes when any running job is done. */
void conn_close(struct conn *c);
void conn_drain(struct conn *c);
/* Whether input waits that the connection has not read (in the socket or
 * inside TLS): a draining worker serves it rather than close on it (a
 * close with unread input is a reset, which can take the client's last
 * STATUS with it). */
bool conn_input_pending(const struct conn *c);
/* Whether the client has closed its side or the connection broke, seen
 * without reading: for connections that are not being read. */
bool conn_peer_gone(const struct conn *c);
/* shutdown_timeout struck: tells the client (ERROR 503) what becomes of its
 * upload or request, then closes (lingering). Not while a job holds the
 * connection: its leg ends first (it may place the file: its STATUS and
 * log lines follow), and the connection is shut down after it. */
void conn_shut_down(struct conn *c);

void conn_free(struct conn *c);
/* Drops the upload in progress (its .part stays, resumable), writing its
 * access log line with code (499: the client went away). */
void conn_abort_upload(struct conn *c, int code);
/* One access log line: the upload in c (r == NULL) or a refused request r. */
void conn_log_access(struct conn *c, int code, const struct upload_request *r);
/* Hands a closed connection whose jobs are done to the worker's reaper. */
void conn_park(struct conn *c);

#endif
