/* origin: the WebSocket Origin check behind allowed_origins. Pure (no
 * allocation, no I/O, output points into the input). An origin is
 * scheme://host[:port] with scheme http, https, ws or wss and nothing after
 * the port (RFC 6454's serialization); a Host header is host[:port]. A host
 * is a name ([A-Za-z0-9._~-]) or a bracketed IPv6 literal; a port is 1-65535.
 * Hosts compare case-insensitively and byte for byte otherwise (a trailing
 * dot is significant, as browsers treat it). */
#ifndef INTAKE_ORIGIN_H
#define INTAKE_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>

struct origin {
    const char *host; /* IPv6 with its brackets */
    size_t host_len;
    unsigned port;     /* as given; 0 = none */
    unsigned def_port; /* the scheme's: 80 (http, ws) or 443 (https, wss); 0 for a Host */
};

/* An Origin value. 0, or -1 (including "null", which names no origin). */
int origin_parse(const char *s, size_t len, struct origin *o);
/* A Host header value. 0 or -1. */
int origin_parse_host(const char *s, size_t len, struct origin *o);

/* allowed_origins same: the Origin's host and port equal the Host's, once
 * each side's default port is removed (the Origin's scheme's default; 80 or
 * 443 on the Host, whose scheme is unknown when TLS ends at a proxy). The
 * scheme is not compared. False when either does not parse. */
bool origin_same(const char *origin, size_t olen, const char *host, size_t hlen);

/* A listed origin against a request's: the same scheme, host and port (a
 * default port written or not), or both "null". */
bool origin_match(const char *listed, size_t llen, const char *origin, size_t olen);

#endif
