/* tls: see tls.h. OpenSSL 3, TLS 1.2 and 1.3 only: ECDHE with AEAD ciphers
 * for 1.2, the 1.3 suites with AES-GCM first; no renegotiation, no
 * compression; stateless session tickets (no per-worker session cache, which
 * another worker could not use). */
#define _GNU_SOURCE
#include "tls.h"

#include "conn.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

struct tls {
    SSL *ssl;
    bool read_wants_write; /* the last read stopped until the socket takes our records */
    bool more;             /* the last read filled its buffer: TLS may hold more input */
    bool failed;           /* a TLS error: no more I/O */
    bool eof;
    bool shut;  /* close_notify sent */
    bool up;    /* handshake done (and logged) */
    bool hello; /* the first byte looked like a TLS handshake record */
};

static SSL_CTX *server_ctx;

/* --- the server context ------------------------------------------------------- */

/* The first OpenSSL error on the queue, as text, and the queue emptied. */
static const char *ssl_reason(void)
{
    static char buf[256];
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, sizeof buf, "%s", r ? r : e ? "unknown OpenSSL error" : "no detail");
    ERR_clear_error();
    return buf;
}

/* A protected key must fail to load, not ask for a pass phrase on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int readable(const char *at, const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s %s: cannot open: %s", at, what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

int tls_server_load(const struct config *cfg, SSL_CTX **out, char *err, size_t errlen)
{
    *out = NULL;
    bool wanted = false;
    for (int i = 0; i < cfg->n_listen; i++)
        wanted |= cfg->listen[i].tls;
    if (!wanted) return 0;
    const char *cert = cfg->tls_certificate, *key = cfg->tls_certificate_key;
    if (!cert || !key) {
        snprintf(err, errlen,
                 "a listener says \"tls\" but tls_certificate and "
                 "tls_certificate_key are not both set");
        return -1;
    }
    /* Every error names where the file was set ("file:line: "). */
    const char *cat = cfg->at_tls_certificate, *kat = cfg->at_tls_certificate_key;
    if (readable(cat, "tls_certificate", cert, err, errlen) < 0 ||
        readable(kat, "tls_certificate_key", key, err, errlen) < 0)
        return -1;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* Unexpected EOF is an ordinary end here: every message of the protocol
     * carries its own length, so a cut-off stream is an interrupted upload. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA);
    /* Partial writes and a moving buffer: conn.c's output buffer may grow
     * (realloc) between a write that waited and its retry. Read-ahead: one
     * read(2) takes several records. Released buffers: an idle connection
     * (between uploads, waiting for a verdict) holds no TLS buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1) {
        snprintf(err, errlen, "cannot set the TLS cipher list: %s", ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "%s: tls_certificate %s: cannot load a PEM certificate (chain): %s",
                 cat, cert, ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
            ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "%s: tls_certificate_key %s does not match tls_certificate %s",
                     kat, key, cert);
        } else {
            snprintf(err, errlen,
                     "%s: tls_certificate_key %s: cannot load a PEM private key (an encrypted "
                     "key is not supported): %s",
                     kat, key, ssl_reason());
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: tls_certificate_key %s does not match tls_certificate %s", kat,
                 key, cert);
        goto fail;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x && X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        log_warn("tls_certificate %s has expired: clients will refuse it; renew it, then HUP",
                 cert);
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -1;
}

void tls_server_use(SSL_CTX *ctx)
{
    if (server_ctx) SSL_CTX_free(server_ctx);
    server_ctx = ctx;
}

void tls_server_describe(char *out, size_t cap)
{
    out[0] = '\0';
    X509 *x = server_ctx ? SSL_CTX_get0_certificate(server_ctx) : NULL;
    if (!x) return;
    char subject[256] = "?", serial[80] = "?", until[64] = "?";
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        /* RFC 2253 with control characters escaped: one log line whatever the name holds. */
        X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        int n = BIO_read(b, subject, sizeof subject - 1);
        subject[n > 0 ? n : 0] = '\0';
        (void)BIO_reset(b);
        ASN1_TIME_print(b, X509_get0_notAfter(x));
        n = BIO_read(b, until, sizeof until - 1);
        until[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex) snprintf(serial, sizeof serial, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
    snprintf(out, cap, "TLS certificate %s (serial %s, valid until %s)", subject, serial, until);
}

/* --- connections ------------------------------------------------------------------- */

int tls_conn_start(struct conn *c)
{
    if (!server_ctx) {
        log_error("%s: TLS listener %s without a certificate loaded", c->peer, c->addr->text);
        return -1;
    }
    struct tls *t = calloc(1, sizeof *t);
    if (!t) return -1;
    ERR_clear_error();
    t->ssl = SSL_new(server_ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, c->fd) != 1) {
        log_error("%s: cannot start TLS: %s", c->peer, ssl_reason());
        SSL_free(t->ssl);
        free(t);
        return -1;
    }
    SSL_set_accept_state(t->ssl);
    c->tls = t;
    return 0;
}

void tls_conn_free(struct conn *c)
{
    if (!c->tls) return;
    SSL_free(c->tls->ssl);
    free(c->tls);
    c->tls = NULL;
}

static void handshake_done(struct conn *c)
{
    struct tls *t = c->tls;
    t->up = true;
    log_debug("%s: %s %s%s", c->peer, SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
              SSL_session_reused(t->ssl) ? ", session resumed" : "");
}

/* A TLS error on c: logged once, and no more I/O on it. */
static void tls_fail(struct conn *c)
{
    struct tls *t = c->tls;
    const char *why = ssl_reason();
    if (!t->up)
        log_info("%s: TLS handshake failed on %s (%s); closing", c->peer, c->addr->text, why);
    else
        log_info("%s: TLS error (%s); closing", c->peer, why);
    t->failed = true;
}

/* Every TLS client opens with a handshake record (content type 22). Anything
 * else (a plain-text client, a port scanner) is closed at its first byte,
 * not after header_timeout waiting for a record header to complete. 0 if c
 * may go on, or -1 with errno (EAGAIN: nothing yet). */
static int check_hello(struct conn *c)
{
    unsigned char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) return -1;
    if (n == 0) {
        c->tls->eof = true;
        return 0;
    }
    if (b != 22) {
        log_info("%s: not a TLS client on %s (first byte 0x%02x%s); closing", c->peer,
                 c->addr->text, b, b >= 'A' && b <= 'z' ? ", plain text" : "");
        c->tls->failed = true;
        errno = EPROTO;
        return -1;
    }
    c->tls->hello = true;
    return 0;
}

static ssize_t tls_recv(struct conn *c, void *buf, size_t len)
{
    struct tls *t = c->tls;
    size_t got = 0;
    t->read_wants_write = false;
    t->more = false;
    if (t->failed) {
        errno = EPROTO;
        return -1;
    }
    if (!t->hello && !t->eof && check_hello(c) < 0) return -1;
    while (got < len && !t->eof) {
        size_t n = 0;
        ERR_clear_error();
        errno = 0;
        int ok = SSL_read_ex(t->ssl, (char *)buf + got, len - got, &n);
        if (!t->up && SSL_is_init_finished(t->ssl)) handshake_done(c);
        if (ok) {
            got += n;
            continue;
        }
        switch (SSL_get_error(t->ssl, 0)) {
        case SSL_ERROR_WANT_READ:
            break;
        case SSL_ERROR_WANT_WRITE:
            t->read_wants_write = true;
            break;
        case SSL_ERROR_ZERO_RETURN:
            t->eof = true;
            break;
        case SSL_ERROR_SYSCALL:
            if (errno == EINTR) continue;
            /* errno 0: the peer closed without close_notify (ignored: see above). */
            if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
                ERR_clear_error();
                t->eof = true;
                break;
            }
            ERR_clear_error();
            if (got) return (ssize_t)got;
            return -1;
        default:
            tls_fail(c);
            if (got) return (ssize_t)got;
            errno = EPROTO;
            return -1;
        }
        break;
    }
    if (got == len) t->more = true;
    if (got) return (ssize_t)got;
    if (t->eof) return 0;
    errno = EAGAIN;
    return -1;
}

ssize_t conn_recv(struct conn *c, void *buf, size_t len)
{
    if (!c->tls) return read(c->fd, buf, len);
    return tls_recv(c, buf, len);
}

ssize_t conn_xmit(struct conn *c, const void *buf, size_t len)
{
    if (!c->tls) return send(c->fd, buf, len, MSG_NOSIGNAL);
    struct tls *t = c->tls;
    /* No reply before the handshake is done: an answer would be written into
     * a half-made TLS session (a 408 to a client that never finished it). */
    if (t->failed || !t->up) {
        errno = t->failed ? EPROTO : ENOTCONN;
        return -1;
    }
    size_t n = 0;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, buf, len, &n)) return (ssize_t)n;
    switch (SSL_get_error(t->ssl, 0)) {
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == 0) errno = EPIPE;
        return -1;
    default:
        /* WANT_READ cannot happen without renegotiation: treat it as an error. */
        tls_fail(c);
        errno = EPROTO;
        return -1;
    }
}

void conn_shutdown_write(struct conn *c)
{
    struct tls *t = c->tls;
    if (t && t->up && !t->shut && !t->failed) {
        /* One call sends close_notify; the client's own is read (or not) while lingering. */
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        t->shut = true;
    }
    shutdown(c->fd, SHUT_WR);
}

bool tls_read_wants_write(const struct conn *c)
{
    return c->tls && c->tls->read_wants_write;
}

bool tls_resume_read(struct conn *c)
{
    if (!tls_read_wants_write(c)) return false;
    c->tls->read_wants_write = false;
    return true;
}

void tls_kick(struct conn *c)
{
    struct tls *t = c->tls;
    if (!t || !t->more || t->failed || !ev_is_active(&c->io) || !(c->io.events & EV_READ)) return;
    /* Input still in the kernel wakes the loop by itself (and other
     * connections get their turn first); only what TLS holds alone does not. */
    int queued = 0;
    if (!SSL_has_pending(t->ssl) || (ioctl(c->fd, FIONREAD, &queued) == 0 && queued > 0)) return;
    ev_feed_event(c->w->loop, &c->io, EV_READ);
}

bool tls_has_pending(const struct conn *c)
{
    return c->tls && SSL_has_pending(c->tls->ssl);
}

bool tls_handshake_timeout(struct conn *c)
{
    if (!c->tls || c->tls->up) return false;
    log_info("%s: TLS handshake on %s not completed within %llu ms; closing", c->peer,
             c->addr->text, (unsigned long long)c->w->cfg->header_timeout_ms);
    conn_close(c);
    return true;
}
