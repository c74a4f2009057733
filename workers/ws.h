/* ws: the HTTP/WebSocket listener's transport. Before the upgrade it is a
 * tiny HTTP/1.1 server (the upload page, /healthz, /metrics, errors, always
 * Connection: close); after it, RFC 6455 framing around the same upload
 * session the raw TCP transport uses (or an echo endpoint for conformance
 * tests). Reached through ws_transport (conn.h). */
#ifndef INTAKE_WS_H
#define INTAKE_WS_H

#include "conn.h"

/* The upload page compiled into the binary (workers/page.S). */
extern const char page_html[];
extern const char page_html_end[];

#endif
