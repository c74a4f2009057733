/* proxy: who the client really is behind a trusted reverse proxy (nginx).
 * A peer in trusted_proxies may name the client: X-Forwarded-For is read
 * from the right, skipping trusted addresses, and the first untrusted one
 * is the client (so a client cannot forge its address by sending its own
 * X-Forwarded-For); without it, X-Real-IP. Pure functions, unit-tested. */
#ifndef INTAKE_PROXY_H
#define INTAKE_PROXY_H

#include <stdbool.h>
#include <stddef.h>

struct proxy_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};

/* "10.0.0.0/8", "::1", "192.168.1.1". 0 or -1. */
int proxy_parse(const char *spec, struct proxy_net *out);
/* Whether ip (text) is inside one of the nets. "unix" (a local socket) is
 * always trusted. */
bool proxy_trusted(const struct proxy_net *nets, int n, const char *ip);
/* The client's address: peer itself unless peer is trusted and the
 * headers (may be NULL) say otherwise. */
void proxy_client(const struct proxy_net *nets, int n, const char *peer, const char *xff,
                  size_t xff_len, const char *xri, size_t xri_len, char *out, size_t cap);

#endif
