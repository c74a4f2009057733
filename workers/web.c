/* web: the plain-HTTP side of listen_ws, see web.h. */
#define _GNU_SOURCE
#include "web.h"

#include "http.h"
#include "log.h"
#include "origin.h"
#include "tls.h"
#include "token.h"
#include "worker.h"
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_CAP (HTTP_HEAD_MAX + 1)

/* A request head in progress. */
struct web_head {
    struct http_parser http;
    char buf[HEAD_CAP];
};
#define HEAD(c) ((struct web_head *)(c)->head)

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return code >= 500 ? "Internal Server Error" : "Bad Request";
    }
}

/* Sends a complete response and closes (lingering). */
static void http_respond(struct conn *c, int code, const char *ctype, const char *body, size_t blen,
                         const char *extra)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-Content-Type-Options: nosniff\r\n%s\r\n",
                     code, reason_phrase(code), ctype, blen, extra ? extra : "");
    if (code >= 400) metrics_error(c->w->mslot, code);
    if (conn_send2(c, head, (size_t)n, body, blen) < 0) return;
    conn_linger(c);
}

void web_error(struct conn *c, int code, const char *why, const char *extra)
{
    char body[512];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", code, reason_phrase(code), why);
    log_info("%s: HTTP %d: %s", c->peer, code, why);
    http_respond(c, code, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

static void serve_healthz(struct conn *c)
{
    static const char *const states[] = {"off", "up", "down"};
    const struct metrics *m = c->w->metrics;
    int sc = m ? m->scanner : 0;
    char body[192];
    /* node_name is letters, digits and ".-_:" (config.c): nothing to escape. */
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"ok\",\"workers\":%d,\"scanner\":\"%s\",\"node\":\"%s\"}",
                     m ? m->workers : 1, states[sc >= 0 && sc <= 2 ? sc : 0],
                     c->w->cfg->node_name ? c->w->cfg->node_name : "");
    http_respond(c, 200, "application/json", body, (size_t)n, "Cache-Control: no-store\r\n");
}

static void serve_metrics(struct conn *c)
{
    size_t cap = 64 * 1024;
    char *buf = malloc(cap);
    int n = buf && c->w->metrics ? metrics_render(c->w->metrics, buf, cap) : -1;
    if (n < 0)
        web_error(c, 500, "cannot render metrics", NULL);
    else
        http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, (size_t)n,
                     "Cache-Control: no-store\r\n");
    free(buf);
}

static void serve_page(struct conn *c)
{
    http_respond(c, 200, "text/html; charset=utf-8", page_html, (size_t)(page_html_end - page_html),
                 "Cache-Control: no-cache\r\n"
                 "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
                 "style-src 'unsafe-inline'; img-src data:; connect-src 'self'\r\n");
}

/* --- the handshake ---------------------------------------------------------- */

static bool key_valid(const struct http_header *h)
{
    /* 16 random bytes in base64: 22 characters and "==". */
    if (!h || h->value_len != 24 || memcmp(h->value + 22, "==", 2) != 0) return false;
    for (int i = 0; i < 22; i++) {
        char ch = h->value[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return false;
    }
    return true;
}

/* allowed_origins: no Origin (not a browser) passes; "same" compares it with
 * Host; listed origins match by scheme, host and port. */
static bool origin_allowed(const struct config *cfg, const struct http_header *o,
                           const struct http_header *host)
{
    if (!o || cfg->allow_any_origin) return true;
    if (cfg->allow_same_origin && host &&
        origin_same(o->value, o->value_len, host->value, host->value_len))
        return true;
    for (int i = 0; i < cfg->n_allowed_origins; i++)
        if (origin_match(cfg->allowed_origins[i], strlen(cfg->allowed_origins[i]), o->value,
                         o->value_len))
            return true;
    return false;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The first "token" parameter of the request's query, percent-decoded into
 * out (at most cap bytes kept). A bad escape, or one for a byte no token
 * holds (NUL, a control character, a space), yields "%", which no token is. */
static size_t url_token(const char *path, size_t len, char *out, size_t cap)
{
    const char *q = memchr(path, '?', len);
    if (!q) return 0;
    const char *end = path + len, *p = q + 1;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if (pe - p >= 6 && memcmp(p, "token=", 6) == 0) {
            size_t n = 0;
            for (const char *v = p + 6; v < pe && n < cap; n++) {
                if (*v != '%') {
                    out[n] = *v++;
                    continue;
                }
                int hi = pe - v >= 3 ? hex_value(v[1]) : -1, lo = hi >= 0 ? hex_value(v[2]) : -1;
                if (lo < 0 || (hi << 4 | lo) < 0x21 || (hi << 4 | lo) > 0x7e) {
                    out[0] = '%';
                    return 1;
                }
                out[n] = (char)(hi << 4 | lo);
                v += 3;
            }
            return n;
        }
        p = pe + 1;
    }
    return 0;
}

/* A Host value: host[:port] or [v6]:port, no spaces, controls, '/', '\\'
 * or '@'. */
static bool host_valid(const struct http_header *h)
{
    if (!h->value_len) return false;
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned char ch = (unsigned char)h->value[i];
        if (ch <= 0x20 || ch == 0x7F || ch == '/' || ch == '\\' || ch == '@') return false;
    }
    return true;
}

static void route(struct conn *c, const struct http_request *req)
{
    const struct config *cfg = c->w->cfg;
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host, and a valid
     * one; two could make two hops see two different hosts. */
    size_t hosts = http_header_count(req, "host");
    const struct http_header *host = http_header_get(req, "host");
    if (hosts > 1 || (host && !host_valid(host)) || (!host && req->minor_version >= 1)) {
        web_error(c, 400, "an HTTP/1.1 request needs exactly one valid Host header", NULL);
        return;
    }
    /* Behind a trusted proxy, the client is whom it names. */
    const struct http_header *xff = http_header_get(req, "x-forwarded-for");
    const struct http_header *xri = http_header_get(req, "x-real-ip");
    char peer_ip[64];
    snprintf(peer_ip, sizeof peer_ip, "%s", c->remote);
    proxy_client(c->w->proxies, c->w->n_proxies, peer_ip, xff ? xff->value : NULL,
                 xff ? xff->value_len : 0, xri ? xri->value : NULL, xri ? xri->value_len : 0,
                 c->remote, sizeof c->remote);
    size_t pl = req->path_len;
    const char *q = memchr(req->path, '?', pl);
    if (q) pl = (size_t)(q - req->path);
    if (!http_eq_nocase(req->method, req->method_len, "GET") ||
        memcmp(req->method, "GET", 3) != 0) {
        web_error(c, 405, "only GET is served here", "Allow: GET\r\n");
        return;
    }
    if (pl == 8 && memcmp(req->path, "/healthz", 8) == 0) {
        serve_healthz(c);
        return;
    }
    if (pl == 8 && memcmp(req->path, "/metrics", 8) == 0) {
        serve_metrics(c);
        return;
    }
    const struct http_header *up = http_header_get(req, "upgrade");
    if (!up || !http_has_token(up->value, up->value_len, "websocket")) {
        if ((pl == 1 && req->path[0] == '/') ||
            (pl == 11 && memcmp(req->path, "/index.html", 11) == 0))
            serve_page(c);
        else
            web_error(c, 404, "no such page (the upload page is /)", NULL);
        return;
    }
    const struct http_header *conn_h = http_header_get(req, "connection");
    const struct http_header *ver = http_header_get(req, "sec-websocket-version");
    const struct http_header *key = http_header_get(req, "sec-websocket-key");
    if (req->minor_version < 1) {
        web_error(c, 400, "WebSocket needs HTTP/1.1", NULL);
        return;
    }
    if (!conn_h || !http_has_token(conn_h->value, conn_h->value_len, "upgrade")) {
        web_error(c, 400, "WebSocket handshake without \"Connection: Upgrade\"", NULL);
        return;
    }
    if (!ver || ver->value_len != 2 || memcmp(ver->value, "13", 2) != 0) {
        web_error(c, 426, "only WebSocket version 13 is supported",
                  "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    if (!key_valid(key)) {
        web_error(c, 400, "missing or malformed Sec-WebSocket-Key", NULL);
        return;
    }
    /* One of each: which would count, the first or the last? */
    if (http_header_count(req, "sec-websocket-key") > 1 ||
        http_header_count(req, "sec-websocket-version") > 1 ||
        http_header_count(req, "origin") > 1) {
        web_error(c, 400, "repeated Sec-WebSocket-Key, Sec-WebSocket-Version or Origin", NULL);
        return;
    }
    if (!origin_allowed(cfg, http_header_get(req, "origin"), http_header_get(req, "host"))) {
        web_error(c, 403, "origin not allowed (allowed_origins)", NULL);
        return;
    }
    bool echo = cfg->ws_echo && pl == 5 && memcmp(req->path, "/echo", 5) == 0;
    char token[TOKEN_TEXT_MAX + 2];
    size_t tl = url_token(req->path, req->path_len, token, sizeof token);
    ws_upgrade(c, key->value, echo, token, tl);
}

void web_header_timeout(struct conn *c)
{
    log_info("%s: request head not received within %llu ms", c->peer,
             (unsigned long long)c->w->cfg->header_timeout_ms);
    web_error(c, 408, "request head not received in time", NULL);
}

int web_read_head(struct conn *c)
{
    if (!c->head && !(c->head = calloc(1, sizeof(struct web_head)))) {
        conn_close(c);
        return 0;
    }
    if (c->carry_len == HEAD_CAP) {
        web_error(c, 431, "request head over 8 KiB", NULL);
        return 0;
    }
    ssize_t n = conn_recv(c, HEAD(c)->buf + c->carry_len, HEAD_CAP - c->carry_len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        conn_close(c);
        return 0;
    }
    if (n == 0) {
        conn_close(c);
        return 0;
    }
    c->carry_len += (size_t)n;
    struct http_request req;
    ssize_t h = http_parse_request(&HEAD(c)->http, HEAD(c)->buf, c->carry_len, &req);
    if (h == HTTP_AGAIN) return 1;
    if (h == HTTP_TOO_LARGE) {
        web_error(c, 431, "request head over 8 KiB or too many headers", NULL);
        return 0;
    }
    if (h == HTTP_BAD) {
        web_error(c, 400, "malformed HTTP request", NULL);
        return 0;
    }
    route(c, &req);
    if (c->ws && c->state == CONN_BODY && c->carry_len > (size_t)h) {
        /* Frames that came right behind the handshake. */
        ws_feed(c, (uint8_t *)HEAD(c)->buf + h, c->carry_len - (size_t)h);
    }
    if (c->state != CONN_CLOSED) {
        free(c->head);
        c->head = NULL;
        c->carry_len = 0;
    }
    return 1;
}
