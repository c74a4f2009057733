/* http: see http.h. Strict where it matters for safety (no obs-fold, no
 * bare CR, tokens per RFC 9110), lenient on a bare LF line end. */
#define _GNU_SOURCE
#include "http.h"

#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
    if (c >= 'a' && c <= 'z') return true;
    if (c >= 'A' && c <= 'Z') return true;
    if (c >= '0' && c <= '9') return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the end of the head: "\r\n\r\n" or "\n\n". Returns its length or 0. */
static size_t head_end(struct http_parser *st, const char *buf, size_t len)
{
    size_t i = st->scanned > 3 ? st->scanned - 3 : 0;
    for (; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (i >= 1 && buf[i - 1] == '\n') return i + 1;
        if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n') return i + 1;
    }
    st->scanned = len;
    return 0;
}

/* Reads one line [p, end) up to its line end; returns the next line's start. */
static const char *line_end(const char *p, const char *end, const char **eol)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return NULL;
    *eol = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    return nl + 1;
}

ssize_t http_parse_request(struct http_parser *st, const char *buf, size_t len,
                           struct http_request *req)
{
    size_t n = head_end(st, buf, len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX);
    if (!n) {
        /* Refuse what cannot become a request line at once (a TLS hello on a
         * plain port, binary junk) instead of waiting for header_timeout. */
        size_t i = 0;
        while (i < len && i < 2 && (buf[i] == '\r' || buf[i] == '\n'))
            i++;
        size_t m = i;
        while (i < len && i < 32 && is_tchar((unsigned char)buf[i]))
            i++;
        if (i < len && i < 32 && (buf[i] != ' ' || i == m)) return HTTP_BAD;
        return len >= HTTP_HEAD_MAX ? HTTP_TOO_LARGE : HTTP_AGAIN;
    }
    const char *p = buf, *end = buf + n, *eol;
    /* Tolerate one empty line before the request line (RFC 9112 2.2). */
    if (*p == '\r' && p + 1 < end && p[1] == '\n')
        p += 2;
    else if (*p == '\n')
        p++;
    const char *next = line_end(p, end, &eol);
    if (!next) return HTTP_BAD;
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *q = p;
    while (q < eol && is_tchar((unsigned char)*q))
        q++;
    if (q == p || q >= eol || *q != ' ' || q - p >= 32) return HTTP_BAD;
    req->method = p;
    req->method_len = (size_t)(q - p);
    p = ++q;
    while (q < eol && (unsigned char)*q > 0x20 && *q != 0x7f)
        q++;
    if (q == p || q >= eol || *q != ' ') return HTTP_BAD;
    req->path = p;
    req->path_len = (size_t)(q - p);
    p = q + 1;
    if (eol - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return HTTP_BAD;
    req->minor_version = p[7] - '0';
    req->num_headers = 0;
    p = next;
    for (;;) {
        next = line_end(p, end, &eol);
        if (!next) return HTTP_BAD;
        if (eol == p) break;                          /* the empty line */
        if (*p == ' ' || *p == '\t') return HTTP_BAD; /* obs-fold */
        if (req->num_headers == HTTP_MAX_HEADERS) return HTTP_TOO_LARGE;
        q = p;
        while (q < eol && is_tchar((unsigned char)*q))
            q++;
        if (q == p || q >= eol || *q != ':') return HTTP_BAD;
        struct http_header *h = &req->headers[req->num_headers++];
        h->name = p;
        h->name_len = (size_t)(q - p);
        q++;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        const char *v = q, *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *c = v; c < ve; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) return HTTP_BAD;
        h->value = v;
        h->value_len = (size_t)(ve - v);
        p = next;
    }
    return (ssize_t)n;
}

bool http_eq_nocase(const char *a, size_t alen, const char *s)
{
    return strlen(s) == alen && strncasecmp(a, s, alen) == 0;
}

const struct http_header *http_header_get(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->num_headers; i++)
        if (http_eq_nocase(req->headers[i].name, req->headers[i].name_len, name))
            return &req->headers[i];
    return NULL;
}

size_t http_header_count(const struct http_request *req, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < req->num_headers; i++)
        n += http_eq_nocase(req->headers[i].name, req->headers[i].name_len, name);
    return n;
}

bool http_has_token(const char *value, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t s = i;
        while (i < len && value[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (value[e - 1] == ' ' || value[e - 1] == '\t'))
            e--;
        if (e > s && http_eq_nocase(value + s, e - s, token)) return true;
    }
    return false;
}
