/* web: the plain-HTTP side of the listen_ws listener. A tiny HTTP/1.1 server
 * that reads one request head (bounded, HTTP_HEAD_MAX) and answers it: the
 * upload page, /healthz, /metrics, errors (always Connection: close), or a
 * WebSocket handshake, which it checks (version, key, Origin) and hands to
 * ws_upgrade. What follows the upgrade is ws.c's. */
#ifndef INTAKE_WEB_H
#define INTAKE_WEB_H

#include "conn.h"

/* One read of the request head and, once complete, its answer. The
 * transport's read_step before the upgrade: 1 if bytes came in, else 0. */
int web_read_head(struct conn *c);
/* An HTTP error response (extra: more header lines, or NULL), then close. */
void web_error(struct conn *c, int code, const char *why, const char *extra);
/* header_timeout ran out before the request head: 408. */
void web_header_timeout(struct conn *c);

#endif
