/* proxy: see proxy.h. */
#define _GNU_SOURCE
#include "proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proxy_parse(const char *spec, struct proxy_net *out)
{
    char buf[64];
    if (strlen(spec) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", spec);
    char *slash = strchr(buf, '/');
    if (slash) *slash = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || b < 0 || b > out->bits) return -1;
        out->bits = (int)b;
    }
    return 0;
}

static bool in_net(const struct proxy_net *p, int family, const unsigned char *a)
{
    if (p->family != family) return false;
    int full = p->bits / 8, rest = p->bits % 8;
    if (memcmp(p->addr, a, (size_t)full) != 0) return false;
    if (!rest) return true;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));
    return (p->addr[full] & mask) == (a[full] & mask);
}

bool proxy_trusted(const struct proxy_net *nets, int n, const char *ip)
{
    if (strcmp(ip, "unix") == 0) return true;
    unsigned char a[16];
    int family;
    if (inet_pton(AF_INET, ip, a) == 1)
        family = AF_INET;
    else if (inet_pton(AF_INET6, ip, a) == 1) {
        family = AF_INET6;
        /* An IPv4-mapped IPv6 peer matches IPv4 entries. */
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        if (memcmp(a, v4mapped, 12) == 0) {
            memmove(a, a + 12, 4);
            family = AF_INET;
        }
    } else
        return false;
    for (int i = 0; i < n; i++)
        if (in_net(&nets[i], family, a)) return true;
    return false;
}

/* Copies one address out of a header item, trimmed; false if it is not one. */
static bool item_ip(const char *p, size_t len, char *out, size_t cap)
{
    while (len && (*p == ' ' || *p == '\t'))
        p++, len--;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (!len || len >= cap) return false;
    memcpy(out, p, len);
    out[len] = '\0';
    unsigned char a[16];
    return inet_pton(AF_INET, out, a) == 1 || inet_pton(AF_INET6, out, a) == 1;
}

void proxy_client(const struct proxy_net *nets, int n, const char *peer, const char *xff,
                  size_t xff_len, const char *xri, size_t xri_len, char *out, size_t cap)
{
    snprintf(out, cap, "%s", peer);
    if (!proxy_trusted(nets, n, peer)) return;
    if (xff && xff_len) {
        char ip[64];
        size_t end = xff_len;
        while (end > 0) {
            size_t start = end;
            while (start > 0 && xff[start - 1] != ',')
                start--;
            if (!item_ip(xff + start, end - start, ip, sizeof ip))
                return; /* garbage: stop at what we know */
            snprintf(out, cap, "%s", ip);
            if (!proxy_trusted(nets, n, ip)) return;
            end = start ? start - 1 : 0;
        }
        return; /* all trusted: the leftmost */
    }
    char ip[64];
    if (xri && xri_len && item_ip(xri, xri_len, ip, sizeof ip)) snprintf(out, cap, "%s", ip);
}
