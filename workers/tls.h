/* tls: TLS on the listeners that say `tls`, and the one seam through which
 * every transport reads and writes a connection's socket (conn_recv,
 * conn_xmit, conn_shutdown_write), plain or TLS alike.
 *
 * The master loads the certificate and key into a server context (at start,
 * at -t, at every HUP); the workers it forks afterwards inherit that context,
 * so a new pair reaches new connections through the new generation of
 * workers, and every worker of one generation shares the session ticket keys
 * (a client resumes on whichever worker takes it). A worker gives each TLS
 * connection an SSL object that does the handshake inside the first reads,
 * non-blocking, bounded by header_timeout like any request head. */
#ifndef INTAKE_TLS_H
#define INTAKE_TLS_H

#include "config.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/types.h>

struct conn;

/* --- the server context (master) -------------------------------------------- */

/* When a listener of cfg says tls: loads tls_certificate (with its chain) and
 * tls_certificate_key into a new server context and checks that they match.
 * 0 with *out set (NULL when no listener wants TLS), or -1 with a message
 * naming the file in err. */
int tls_server_load(const struct config *cfg, SSL_CTX **out, char *err, size_t errlen);
/* ctx becomes the context new connections of this process, and of the
 * workers it forks from now on, use; the previous one is freed. */
void tls_server_use(SSL_CTX *ctx);
/* One line about the context in use, for the master's log ("" without TLS). */
void tls_server_describe(char *out, size_t cap);

/* --- connections (worker) -------------------------------------------------------- */

/* Gives c (accepted on a tls listener) its SSL object. 0, or -1 (close it). */
int tls_conn_start(struct conn *c);
/* Frees c's SSL object (at close; no-op for plain connections). */
void tls_conn_free(struct conn *c);

/* Like read(2) on c's socket: bytes, 0 at the end, or -1 with errno (EAGAIN:
 * nothing now). Over TLS it reads until len bytes are in or the socket is
 * empty, so a caller never leaves a decrypted record behind unnoticed. */
ssize_t conn_recv(struct conn *c, void *buf, size_t len);
/* Like send(2): bytes taken (possibly fewer), or -1 with errno (EAGAIN:
 * socket full; retry with the same bytes first). Nothing is sent over TLS
 * before the handshake is complete (ENOTCONN). */
ssize_t conn_xmit(struct conn *c, const void *buf, size_t len);
/* Our last words are out: TLS close_notify, then shutdown(SHUT_WR). */
void conn_shutdown_write(struct conn *c);

/* TLS needs the socket writable before it can read on (a handshake flight, a
 * key update answer): the io watcher waits for EV_WRITE instead of EV_READ. */
bool tls_read_wants_write(const struct conn *c);
/* On EV_WRITE: true (and the wait is over) if a read was waiting for it. */
bool tls_resume_read(struct conn *c);
/* Records already taken off the socket do not make it readable: if c's reads
 * are armed and TLS holds input while the socket is empty, queue a read event. */
void tls_kick(struct conn *c);
/* Whether TLS holds decrypted input not yet read (false without TLS). */
bool tls_has_pending(const struct conn *c);
/* header_timeout struck: true (and c closed) if the handshake was not done. */
bool tls_handshake_timeout(struct conn *c);

#endif
