/* ws: the HTTP/WebSocket listener's transport. Before the upgrade web.c
 * answers plain HTTP; after it, this is RFC 6455 framing around the same
 * upload session the raw TCP transport uses (or an echo endpoint for
 * conformance tests). Reached through ws_transport (conn.h). */
#ifndef INTAKE_WS_H
#define INTAKE_WS_H

#include "conn.h"

#include <stdbool.h>
#include <stdint.h>

/* Completes a checked handshake: key is the client's 24-character
 * Sec-WebSocket-Key; token/token_len the URL's ?token= (for STARTs without
 * one). Sends 101 and makes c a WebSocket connection. */
void ws_upgrade(struct conn *c, const char *key, bool echo, const char *token, size_t token_len);
/* Frames that came in right behind the handshake (p is writable: unmasked
 * in place). */
void ws_feed(struct conn *c, uint8_t *p, size_t n);

/* The upload page compiled into the binary (workers/page.S). */
extern const char page_html[];
extern const char page_html_end[];

#endif
