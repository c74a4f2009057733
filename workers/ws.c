/* ws: see ws.h. Frames are processed straight from the worker's shared read
 * buffer: payload is unmasked in place and handed on as it arrives (binary
 * data to the spool file, base64 decoded on the fly, text checked for UTF-8
 * as it comes), so a connection keeps only a partial frame header (<= 14
 * bytes), a control message (<= 8 KiB) and, for echo, the message to echo. */
#define _GNU_SOURCE
#include "ws.h"

#include "web.h"

#include "log.h"
#include "origin.h"
#include "session.h"
#include "tls.h"
#include "utf8.h"
#include "worker.h"
#include "ws_frame.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEAD_CAP (HTTP_HEAD_MAX + 1)

enum msg_mode { M_UNDECIDED, M_JSON, M_BASE64, M_BINARY };

struct ws {
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hdr_len;
    bool in_frame;
    bool gone;           /* the client closed while its upload finished */
    uint32_t stash_seen; /* whole frames from the stash's start looked at (in padding) */
    struct ws_frame f;
    uint64_t f_done;
    uint8_t cpay[125];
    size_t cpay_len;

    bool in_msg;
    uint8_t msg_op;
    uint64_t msg_len;
    struct utf8_state utf8;
    enum msg_mode mode;
    char *ctrl; /* a control message being assembled; NULL between them */
    size_t ctrl_len;
    uint8_t b64[4];
    size_t b64_len;
    bool b64_end;
    uint64_t data_bytes;

    bool echo;
    uint8_t *echo_buf;
    size_t echo_len, echo_cap;

    uint8_t *stash; /* input read while the upload was finishing */
    size_t stash_len;

    /* ?token= of the handshake URL, percent-decoded: used by STARTs without
     * one (on the heap, only when the URL has one). Longer than any token:
     * kept one byte too long, so it fails. */
    char *url_token;
    size_t url_token_len;
};

/* --- the upgrade -------------------------------------------------------------- */

void ws_upgrade(struct conn *c, const char *key, bool echo, const char *token, size_t token_len)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char in[24 + sizeof guid], digest[SHA_DIGEST_LENGTH];
    memcpy(in, key, 24);
    memcpy(in + 24, guid, sizeof guid - 1);
    SHA1(in, 24 + sizeof guid - 1, digest);
    char accept[32];
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
    c->ws = calloc(1, sizeof *c->ws);
    if (!c->ws) {
        web_error(c, 503, "out of memory", NULL);
        return;
    }
    c->ws->echo = echo;
    if (token_len > TOKEN_TEXT_MAX + 2) token_len = TOKEN_TEXT_MAX + 2;
    if (token_len && !(c->ws->url_token = malloc(token_len))) {
        free(c->ws);
        c->ws = NULL;
        web_error(c, 503, "out of memory", NULL);
        return;
    }
    if (token_len) memcpy(c->ws->url_token, token, token_len);
    c->ws->url_token_len = token_len;
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    conn_set_state(c, CONN_BODY);
    conn_send(c, resp, (size_t)n);
    log_debug("%s: WebSocket %s", c->peer, echo ? "echo" : "upload connection");
}

/* --- frames out --------------------------------------------------------------- */

static void send_frame(struct conn *c, uint8_t op, const void *p, size_t n)
{
    uint8_t h[10];
    size_t hl = ws_frame_header(h, op, n);
    conn_send2(c, h, hl, p, n);
}

/* Closes with a close frame carrying code and a short reason, then lingers. */
static void ws_close(struct conn *c, unsigned code, const char *reason)
{
    if (c->state == CONN_CLOSED || c->state == CONN_LINGER) return;
    if (c->up.phase == UPLOAD_RECEIVING)
        log_info("upload %s (%s) from %s: WebSocket closed with %u (%s)", c->up.id, c->up.logname,
                 c->peer, code, reason);
    else if (code != 1000 && code != 1001)
        log_info("%s: WebSocket closed with %u (%s)", c->peer, code, reason);
    conn_abort_upload(c, 499);
    uint8_t pay[125];
    size_t rl = strlen(reason);
    if (rl > 123) rl = 123;
    pay[0] = (uint8_t)(code >> 8);
    pay[1] = (uint8_t)code;
    memcpy(pay + 2, reason, rl);
    send_frame(c, WS_OP_CLOSE, pay, rl + 2);
    conn_linger(c);
}

static void ws_send_msg(struct conn *c, const char *json, size_t len)
{
    if (c->ws) send_frame(c, WS_OP_TEXT, json, len);
}

static void ws_after_error(struct conn *c, int code)
{
    if (!c->ws) {
        /* Still plain HTTP: answer as HTTP. */
        web_error(c, code, code == 408 ? "request head not received in time" : "refused", NULL);
        return;
    }
    unsigned wc = code == 413 ? 1009 : code >= 500 ? 1011 : 1008;
    uint8_t pay[2] = {(uint8_t)(wc >> 8), (uint8_t)wc};
    send_frame(c, WS_OP_CLOSE, pay, 2);
}

/* --- the upload protocol over messages ---------------------------------------- */

static void on_control_message(struct conn *c)
{
    struct ws *ws = c->ws;
    char *msg = ws->ctrl;
    size_t len = ws->ctrl_len;
    /* Given back first: an idle connection holds no control buffer. */
    ws->ctrl = NULL;
    ws->ctrl_len = 0;
    session_on_message(c, msg ? msg : "", len, ws->url_token, ws->url_token_len);
    free(msg);
}

static const int8_t *b64_table(void)
{
    static int8_t t[256];
    static bool made;
    if (!made) {
        static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        memset(t, -1, sizeof t);
        for (int i = 0; i < 64; i++)
            t[(unsigned char)a[i]] = (int8_t)i;
        made = true;
    }
    return t;
}

/* Decodes base64 text as it arrives, in groups of 4; '=' only at the end. */
static int b64_feed(struct conn *c, const uint8_t *p, size_t n)
{
    struct ws *ws = c->ws;
    const int8_t *T = b64_table();
    uint8_t out[4096];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (ws->b64_end) goto bad;
        ws->b64[ws->b64_len++] = p[i];
        if (ws->b64_len < 4) continue;
        ws->b64_len = 0;
        const uint8_t *g = ws->b64;
        int a = T[g[0]], b = T[g[1]], x = g[2] == '=' ? -2 : T[g[2]],
            y = g[3] == '=' ? -2 : T[g[3]];
        if (a < 0 || b < 0 || x == -1 || y == -1 || (x == -2 && y != -2)) goto bad;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
        if (x >= 0) out[o++] = (uint8_t)((b & 15) << 4 | x >> 2);
        if (y >= 0) out[o++] = (uint8_t)((x & 3) << 6 | y);
        if (x < 0 || y < 0) ws->b64_end = true;
        if (o > sizeof out - 3) {
            if (conn_write_body(c, out, o) < 0) return -1;
            ws->data_bytes += o;
            o = 0;
        }
    }
    if (o) {
        if (conn_write_body(c, out, o) < 0) return -1;
        ws->data_bytes += o;
    }
    return 0;
bad:
    conn_fail(c, 400, "data chunk is not valid base64");
    return -1;
}

static void on_data(struct conn *c, const uint8_t *p, size_t n)
{
    struct ws *ws = c->ws;
    if (ws->mode == M_UNDECIDED) {
        while (n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++, n--;
        if (!n) return;
        ws->mode = *p == '{' ? M_JSON : M_BASE64;
    }
    if (ws->mode == M_JSON) {
        if (ws->ctrl_len + n > UPLOAD_CONTROL_MAX) {
            conn_fail(c, 431, "control message over %d bytes", UPLOAD_CONTROL_MAX);
            return;
        }
        if (!ws->ctrl && !(ws->ctrl = malloc(UPLOAD_CONTROL_MAX))) {
            conn_fail(c, 500, "out of memory");
            return;
        }
        memcpy(ws->ctrl + ws->ctrl_len, p, n);
        ws->ctrl_len += n;
        return;
    }
    if (c->up.phase != UPLOAD_RECEIVING) {
        conn_fail(c, 400, "data before START");
        return;
    }
    if (ws->mode == M_BASE64) {
        b64_feed(c, p, n);
        return;
    }
    if (conn_write_body(c, p, n) == 0) ws->data_bytes += n;
}

static void on_message_end(struct conn *c)
{
    struct ws *ws = c->ws;
    if (ws->msg_op == WS_OP_TEXT && !utf8_complete(&ws->utf8)) {
        ws_close(c, 1007, "invalid UTF-8 in text message");
        return;
    }
    if (ws->echo) {
        send_frame(c, ws->msg_op, ws->echo_buf, ws->echo_len);
        ws->echo_len = 0;
        if (ws->echo_cap > 1 << 20) {
            free(ws->echo_buf);
            ws->echo_buf = NULL;
            ws->echo_cap = 0;
        }
        return;
    }
    switch (ws->mode) {
    case M_JSON:
        on_control_message(c);
        break;
    case M_BASE64:
    case M_UNDECIDED: /* an empty text message: an empty chunk */
        if (c->up.phase != UPLOAD_RECEIVING) {
            conn_fail(c, 400, "data before START");
            return;
        }
        if (ws->b64_len != 0) {
            conn_fail(c, 400, "base64 chunk length is not a multiple of 4");
            return;
        }
        session_send_ack(c, ws->data_bytes);
        break;
    case M_BINARY:
        session_send_ack(c, ws->data_bytes);
        break;
    }
}

static void on_control_frame(struct conn *c)
{
    struct ws *ws = c->ws;
    switch (ws->f.opcode) {
    case WS_OP_PING:
        send_frame(c, WS_OP_PONG, ws->cpay, ws->cpay_len);
        break;
    case WS_OP_PONG:
        break;
    case WS_OP_CLOSE: {
        if (ws->cpay_len == 1) {
            ws_close(c, 1002, "close frame with a 1-byte payload");
            return;
        }
        unsigned code = ws->cpay_len ? (unsigned)ws->cpay[0] << 8 | ws->cpay[1] : 0;
        if (ws->cpay_len && !ws_close_code_valid(code)) {
            ws_close(c, 1002, "invalid close code");
            return;
        }
        if (ws->cpay_len > 2 && !utf8_valid(ws->cpay + 2, ws->cpay_len - 2)) {
            ws_close(c, 1007, "close reason is not UTF-8");
            return;
        }
        if (c->up.phase == UPLOAD_RECEIVING)
            log_info("upload %s (%s) from %s: client closed the WebSocket after %llu of %llu "
                     "bytes; kept in the spool",
                     c->up.id, c->up.logname, c->peer, (unsigned long long)c->up.received,
                     (unsigned long long)c->up.size);
        conn_abort_upload(c, 499);
        /* Echo the code (not the reason) and close. */
        send_frame(c, WS_OP_CLOSE, ws->cpay, ws->cpay_len ? 2 : 0);
        conn_linger(c);
        break;
    }
    }
}

static void on_frame_start(struct conn *c)
{
    struct ws *ws = c->ws;
    uint8_t op = ws->f.opcode;
    if (op & 0x8) {
        ws->cpay_len = 0;
        return;
    }
    if (op == WS_OP_CONT) {
        if (!ws->in_msg) {
            ws_close(c, 1002, "continuation frame without a message");
            return;
        }
    } else {
        if (ws->in_msg) {
            ws_close(c, 1002, "new message inside a fragmented message");
            return;
        }
        ws->in_msg = true;
        ws->msg_op = op;
        ws->msg_len = 0;
        memset(&ws->utf8, 0, sizeof ws->utf8);
        ws->mode = op == WS_OP_BINARY ? M_BINARY : M_UNDECIDED;
        ws->ctrl_len = 0;
        ws->b64_len = 0;
        ws->b64_end = false;
        ws->data_bytes = 0;
        ws->echo_len = 0;
    }
    if (ws->msg_len + ws->f.len > WS_MESSAGE_MAX) {
        ws_close(c, 1009, "message over 16 MiB");
        return;
    }
    ws->msg_len += ws->f.len;
    if (ws->echo && ws->echo_len + ws->f.len > ws->echo_cap) {
        size_t cap = ws->echo_cap ? ws->echo_cap : 4096;
        while (cap < ws->echo_len + ws->f.len)
            cap *= 2;
        uint8_t *p = realloc(ws->echo_buf, cap);
        if (!p) {
            ws_close(c, 1011, "out of memory");
            return;
        }
        ws->echo_buf = p;
        ws->echo_cap = cap;
    }
}

static void on_payload(struct conn *c, const uint8_t *p, size_t n)
{
    struct ws *ws = c->ws;
    if (ws->f.opcode & 0x8) {
        memcpy(ws->cpay + ws->cpay_len, p, n);
        ws->cpay_len += n;
        return;
    }
    if (ws->msg_op == WS_OP_TEXT && utf8_feed(&ws->utf8, p, n) < 0) {
        ws_close(c, 1007, "invalid UTF-8 in text message");
        return;
    }
    if (ws->echo) {
        memcpy(ws->echo_buf + ws->echo_len, p, n);
        ws->echo_len += n;
        return;
    }
    on_data(c, p, n);
}

static void on_frame_end(struct conn *c)
{
    struct ws *ws = c->ws;
    ws->in_frame = false;
    if (ws->f.opcode & 0x8)
        on_control_frame(c);
    else if (ws->f.fin) {
        ws->in_msg = false;
        on_message_end(c);
    }
}

/* The connection left CONN_BODY for a while (an upload finishing, a
 * resume being looked up): what follows waits in the stash. */
static bool waits(const struct conn *c)
{
    return c->state == CONN_FINISHING || c->state == CONN_LOOKUP;
}

/* Runs the frame machine over p[0..n) (writable: unmasked in place). Returns
 * the bytes used; it stops early when the connection leaves CONN_BODY. */
static size_t ws_process(struct conn *c, uint8_t *p, size_t n)
{
    struct ws *ws = c->ws;
    size_t i = 0;
    while (i < n && c->state == CONN_BODY) {
        if (!ws->in_frame) {
            size_t take = n - i;
            if (take > WS_FRAME_HEADER_MAX - ws->hdr_len) take = WS_FRAME_HEADER_MAX - ws->hdr_len;
            memcpy(ws->hdr + ws->hdr_len, p + i, take);
            int code = 0;
            ssize_t h = ws_frame_parse(ws->hdr, ws->hdr_len + take, &ws->f, &code);
            if (h == WS_AGAIN) {
                ws->hdr_len += take;
                i += take;
                continue;
            }
            if (h == WS_FAIL) {
                ws_close(c, (unsigned)code, code == 1009 ? "frame over 16 MiB" : "protocol error");
                return n;
            }
            i += (size_t)h - ws->hdr_len;
            ws->hdr_len = 0;
            ws->in_frame = true;
            ws->f_done = 0;
            on_frame_start(c);
            if (c->state != CONN_BODY) return n;
            if (ws->f.len == 0) on_frame_end(c);
            continue;
        }
        uint64_t left = ws->f.len - ws->f_done;
        size_t k = n - i < left ? n - i : (size_t)left;
        ws_unmask(p + i, k, ws->f.mask, ws->f_done);
        ws->f_done += k;
        on_payload(c, p + i, k);
        i += k;
        if (c->state != CONN_BODY) return waits(c) ? i : n;
        if (ws->f_done == ws->f.len) on_frame_end(c);
    }
    return i;
}

static void answer_waiting_pings(struct conn *c);

/* Keeps bytes read while the connection waits, and answers the pings among
 * them. false if the connection is closed (out of memory). */
static bool stash(struct conn *c, const uint8_t *p, size_t n)
{
    struct ws *ws = c->ws;
    uint8_t *s = realloc(ws->stash, ws->stash_len + n);
    if (!s) {
        conn_close(c);
        return false;
    }
    memcpy(s + ws->stash_len, p, n);
    ws->stash = s;
    ws->stash_len += n;
    answer_waiting_pings(c);
    return c->state != CONN_CLOSED;
}

/* Processes bytes; what is left when an upload starts finishing waits. */
static void consume(struct conn *c, uint8_t *p, size_t n)
{
    size_t used = ws_process(c, p, n);
    if (used < n && waits(c)) stash(c, p + used, n - used);
}

/* While an upload finishes or a START with an id is looked up, the
 * connection is still read, into the stash, up to WS_WAIT_HOLD bytes, and
 * every whole ping in it is answered at once and taken out: a client's
 * keepalive must not time out behind a slow scan or accept hook (a
 * python-websockets client gives up after 20 s without a pong). The stash
 * starts at a frame boundary (an upload finishes, and a lookup begins, at the
 * end of a message); anything but a ping stays in it for later, in order,
 * and a close frame ends the look ahead. */
#define WS_WAIT_HOLD (64 * 1024)

static void answer_waiting_pings(struct conn *c)
{
    struct ws *ws = c->ws;
    size_t off = ws->stash_seen;
    while (off < ws->stash_len) {
        struct ws_frame f;
        int code = 0;
        ssize_t h = ws_frame_parse(ws->stash + off, ws->stash_len - off, &f, &code);
        if (h < 0 || f.len > ws->stash_len - off - (size_t)h) break; /* partial, or for later */
        size_t whole = (size_t)h + (size_t)f.len;
        if (f.opcode == WS_OP_CLOSE) break;
        if (f.opcode != WS_OP_PING) {
            off += whole;
            continue;
        }
        uint8_t pay[125];
        memcpy(pay, ws->stash + off + h, (size_t)f.len);
        ws_unmask(pay, (size_t)f.len, f.mask, 0);
        send_frame(c, WS_OP_PONG, pay, (size_t)f.len);
        if (c->state == CONN_CLOSED) return;
        memmove(ws->stash + off, ws->stash + off + whole, ws->stash_len - off - whole);
        ws->stash_len -= whole;
    }
    ws->stash_seen = (uint32_t)off;
}

static bool ws_reads_waiting(const struct conn *c)
{
    return c->ws && !c->ws->gone && c->ws->stash_len < WS_WAIT_HOLD;
}

static int read_waiting(struct conn *c)
{
    struct ws *ws = c->ws;
    struct worker *w = c->w;
    size_t room = WS_WAIT_HOLD - ws->stash_len;
    /* Into the shared buffer first: the stash grows by what came, not by
     * the room it may use. */
    ssize_t n = conn_recv(c, w->rbuf, room < w->rbuf_size ? room : w->rbuf_size);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
        /* The client left. A lookup is simply dropped; an upload that
         * finishes goes on (a client that sent DONE and left learns its
         * verdict by asking again): it is not read any more, and its
         * STATUS finds the connection gone. */
        if (c->state == CONN_LOOKUP) {
            conn_close(c);
        } else {
            ws->gone = true;
            conn_update_io(c);
        }
        return 0;
    }
    if (!stash(c, (const uint8_t *)w->rbuf, (size_t)n)) return 0;
    if (ws->stash_len >= WS_WAIT_HOLD) conn_update_io(c); /* full: reading stops until it is used */
    return 1;
}

static void ws_go_on(struct conn *c)
{
    struct ws *ws = c->ws;
    ws->stash_seen = 0;
    if (c->w->past_deadline && ws->stash_len && c->state == CONN_BODY) {
        conn_shut_down(c); /* no new upload now, even one already sent */
        return;
    }
    while (ws->stash_len && c->state == CONN_BODY) {
        uint8_t *s = ws->stash;
        size_t n = ws->stash_len;
        ws->stash = NULL;
        ws->stash_len = 0;
        consume(c, s, n);
        free(s);
    }
    if (c->w->draining && c->state == CONN_BODY) conn_drain(c);
}

static void ws_drain(struct conn *c)
{
    if (!c->ws) {
        if (c->carry_len == 0 && c->out_len == 0) conn_close(c);
        return;
    }
    /* A message the client already sent is read first (it may be a START). */
    if (c->state == CONN_BODY && !conn_input_pending(c)) ws_close(c, 1001, "server is shutting down");
}

static void ws_release(struct conn *c)
{
    if (!c->ws) return;
    free(c->ws->echo_buf);
    free(c->ws->stash);
    free(c->ws->ctrl);
    free(c->ws->url_token);
    free(c->ws);
    c->ws = NULL;
}

/* --- reading ------------------------------------------------------------------ */

static int read_frames(struct conn *c)
{
    struct worker *w = c->w;
    ssize_t n = conn_recv(c, w->rbuf, w->rbuf_size);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        conn_close(c);
        return 0;
    }
    if (n == 0) {
        if (c->up.phase == UPLOAD_RECEIVING)
            log_info("upload %s (%s) from %s: connection lost after %llu of %llu bytes; kept in "
                     "the spool",
                     c->up.id, c->up.logname, c->peer, (unsigned long long)c->up.received,
                     (unsigned long long)c->up.size);
        conn_close(c);
        return 0;
    }
    ev_timer_again(w->loop, &c->timer);
    consume(c, (uint8_t *)w->rbuf, (size_t)n);
    /* Draining: what was read may have left the connection idle again. */
    if (w->draining && c->state == CONN_BODY && c->up.phase != UPLOAD_RECEIVING) conn_drain(c);
    return 1;
}

void ws_feed(struct conn *c, uint8_t *p, size_t n)
{
    consume(c, p, n);
}

static void ws_header_timeout(struct conn *c)
{
    web_header_timeout(c);
}

static int ws_read_step(struct conn *c)
{
    if (!c->ws) return c->state == CONN_HEADER ? web_read_head(c) : 0;
    if (waits(c)) return read_waiting(c);
    return c->state == CONN_BODY ? read_frames(c) : 0;
}

const struct transport ws_transport = {
    .kind = MT_WS,
    .idle_state = CONN_BODY,
    .read_step = ws_read_step,
    .send_msg = ws_send_msg,
    .after_error = ws_after_error,
    .go_on = ws_go_on,
    .header_timeout = ws_header_timeout,
    .drain = ws_drain,
    .release = ws_release,
    .reads_waiting = ws_reads_waiting,
};
