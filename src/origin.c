/* origin: see origin.h. Strict on purpose: whatever does not parse is
 * refused, so a browser's Origin either matches plainly or not at all. */
#include "origin.h"

#include <string.h>

static bool name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_' || ch == '~';
}

static bool v6_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
           ch == ':' || ch == '.';
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

static bool eq_nocase(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen) return false;
    for (size_t i = 0; i < alen; i++)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

/* host[:port] filling o->host/host_len/port. */
static int parse_authority(const char *s, size_t len, struct origin *o)
{
    size_t i = 0;
    if (len && s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++)
            if (!v6_char(s[i])) return -1;
        if (i >= len || i < 3) return -1; /* no ']', or "[]" / "[x]" */
        i++;
    } else {
        while (i < len && name_char(s[i]))
            i++;
        if (i == 0) return -1;
    }
    o->host = s;
    o->host_len = i;
    o->port = 0;
    if (i == len) return 0;
    if (s[i] != ':' || len - i - 1 < 1 || len - i - 1 > 5) return -1;
    unsigned port = 0;
    for (i++; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        port = port * 10 + (unsigned)(s[i] - '0');
    }
    if (port < 1 || port > 65535) return -1;
    o->port = port;
    return 0;
}

int origin_parse(const char *s, size_t len, struct origin *o)
{
    static const struct {
        const char *name;
        unsigned port;
    } schemes[] = {{"http", 80}, {"https", 443}, {"ws", 80}, {"wss", 443}};
    for (size_t k = 0; k < sizeof schemes / sizeof *schemes; k++) {
        size_t n = strlen(schemes[k].name);
        if (len < n + 3 || !eq_nocase(s, n, schemes[k].name, n) || memcmp(s + n, "://", 3) != 0)
            continue;
        if (parse_authority(s + n + 3, len - n - 3, o) < 0) return -1;
        o->def_port = schemes[k].port;
        return 0;
    }
    return -1;
}

int origin_parse_host(const char *s, size_t len, struct origin *o)
{
    if (parse_authority(s, len, o) < 0) return -1;
    o->def_port = 0;
    return 0;
}

bool origin_same(const char *origin, size_t olen, const char *host, size_t hlen)
{
    struct origin o, h;
    if (origin_parse(origin, olen, &o) < 0 || origin_parse_host(host, hlen, &h) < 0) return false;
    /* Host does not tell the scheme: 80 and 443 there count as default
     * ports (behind a proxy either may show). And the same explicit port on
     * both sides is the same, whatever the scheme's default. */
    unsigned op = o.port == o.def_port ? 0 : o.port;
    unsigned hp = h.port == 80 || h.port == 443 ? 0 : h.port;
    bool port = op == hp || (o.port ? o.port : o.def_port) == (h.port ? h.port : o.def_port);
    return port && eq_nocase(o.host, o.host_len, h.host, h.host_len);
}

bool origin_match(const char *listed, size_t llen, const char *origin, size_t olen)
{
    if (eq_nocase(listed, llen, "null", 4) || eq_nocase(origin, olen, "null", 4))
        return eq_nocase(listed, llen, origin, olen);
    struct origin a, b;
    if (origin_parse(listed, llen, &a) < 0 || origin_parse(origin, olen, &b) < 0) return false;
    /* The scheme: its length tells http from https and ws from wss. */
    size_t as = (size_t)(a.host - listed) - 3, bs = (size_t)(b.host - origin) - 3;
    return eq_nocase(listed, as, origin, bs) &&
           (a.port ? a.port : a.def_port) == (b.port ? b.port : b.def_port) &&
           eq_nocase(a.host, a.host_len, b.host, b.host_len);
}
