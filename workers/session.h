/* session: the upload protocol's messages on a connection, once for both
 * transports. A transport hands over each complete control message (a raw
 * TCP header line, a WebSocket text message holding JSON); the session
 * enforces the order (START, data, DONE on WebSocket, STATUS), starts,
 * resumes and re-queries uploads, and sends READY, DATA, STATUS and ERROR
 * through the transport's framing. Transports only frame bytes. */
#ifndef INTAKE_SESSION_H
#define INTAKE_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/* A raw TCP header line (no line end): a START object or "SIZE NAME". */
void session_on_line(struct conn *c, const char *line, size_t len);
/* A WebSocket control message: a JSON object, START or DONE. url_token: the
 * handshake URL's ?token=, for STARTs that carry none (may be NULL, 0). */
void session_on_message(struct conn *c, const char *json, size_t len, const char *url_token,
                        size_t url_token_len);
/* WebSocket: a data message of n bytes was written. */
void session_send_ack(struct conn *c, uint64_t n);
/* The upload's finishing steps ended (or a re-query found its verdict):
 * STATUS, its access log line, then the transport goes on. */
void session_send_status(struct conn *c);
/* The connection's timer while a lookup waits for another worker to finish
 * the upload: look again. */
void session_on_timer(struct conn *c);
/* The connection is going away: forget a pending lookup. */
void session_release(struct conn *c);

#endif
