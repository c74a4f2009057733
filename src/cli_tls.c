/* cli_tls: see cli_tls.h. */
#define _GNU_SOURCE
#include "cli_tls.h"

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define SEND_CHUNK (256 * 1024)

static SSL_SESSION *saved; /* for the next connection's resumption */

static const char *ssl_reason(void)
{
    static char buf[256];
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, sizeof buf, "%s", r ? r : e ? "unknown OpenSSL error" : "connection closed");
    ERR_clear_error();
    return buf;
}

SSL_CTX *cli_tls_context(const char *cacert, bool insecure, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* After poll says readable, a read that meets only a session ticket must
     * come back (EAGAIN) rather than block for data that may never come. */
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    FILE *f = cacert ? fopen(cacert, "r") : NULL;
    if (cacert && !f) {
        snprintf(err, errlen, "--cacert %s: %s", cacert, strerror(errno));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (f) fclose(f);
    int ok = cacert ? SSL_CTX_load_verify_locations(ctx, cacert, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        if (cacert)
            snprintf(err, errlen, "--cacert %s: cannot load: %s", cacert, ssl_reason());
        else
            snprintf(err, errlen, "cannot load the system's trusted certificates: %s",
                     ssl_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL *cli_tls_connect(SSL_CTX *ctx, int fd, const char *target, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "cannot start TLS: %s", ssl_reason());
        SSL_free(ssl);
        return NULL;
    }
    /* The name to check: the host part of target, as the user wrote it. */
    char host[128] = "";
    struct listen_addr a;
    const char *why;
    if (strncmp(target, "unix:", 5) != 0 && config_parse_listen(target, &a, &why) == 0)
        snprintf(host, sizeof host, "%s", a.host[0] ? a.host : "127.0.0.1");
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (host[0] && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
        int set = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
                        : SSL_set1_host(ssl, host);
        if (set != 1) {
            snprintf(err, errlen, "cannot check the certificate against \"%s\"", host);
            SSL_free(ssl);
            return NULL;
        }
    }
    if (host[0] && !is_ip) SSL_set_tlsext_host_name(ssl, host);
    if (saved) SSL_set_session(ssl, saved);
    if (SSL_connect(ssl) == 1) return ssl;
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        snprintf(err, errlen,
                 "TLS: the server's certificate is not valid for %s (--insecure skips the check)",
                 host);
    else if (v != X509_V_OK)
        snprintf(err, errlen,
                 "TLS: the server's certificate cannot be verified: %s (--cacert FILE names the "
                 "CA that signed it; --insecure skips the check)",
                 X509_verify_cert_error_string(v));
    else
        snprintf(err, errlen, "TLS handshake failed: %s", ssl_reason());
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

void cli_tls_close(SSL *ssl)
{
    if (!ssl) return;
    SSL_SESSION *s = SSL_get1_session(ssl);
    if (s && SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(saved);
        saved = s;
    } else {
        SSL_SESSION_free(s);
    }
    SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
}

ssize_t cli_tls_read(SSL *ssl, int fd, void *buf, size_t len)
{
    if (!ssl) return read(fd, buf, len);
    size_t n = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(ssl, buf, len, &n)) return (ssize_t)n;
    int e = SSL_get_error(ssl, 0);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) return 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        errno = EAGAIN;
    else if (e != SSL_ERROR_SYSCALL)
        errno = EPROTO;
    return -1;
}

ssize_t cli_tls_send(SSL *ssl, int fd, const void *buf, size_t len)
{
    if (!ssl) return send(fd, buf, len, MSG_NOSIGNAL);
    size_t n = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(ssl, buf, len, &n)) return (ssize_t)n;
    int e = SSL_get_error(ssl, 0);
    ERR_clear_error();
    if (e != SSL_ERROR_SYSCALL || errno == 0) errno = EPIPE;
    return -1;
}

ssize_t cli_tls_sendfile(SSL *ssl, int sock, int fd, off_t *pos, size_t len)
{
    if (!ssl) return sendfile(sock, fd, pos, len);
    static char *buf;
    if (!buf && !(buf = malloc(SEND_CHUNK))) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n = pread(fd, buf, len < SEND_CHUNK ? len : SEND_CHUNK, *pos);
    if (n <= 0) return n;
    ssize_t w = cli_tls_send(ssl, sock, buf, (size_t)n);
    if (w > 0) *pos += w;
    return w;
}

int cli_tls_poll(SSL *ssl, struct pollfd *p, int timeout_ms)
{
    if (ssl && SSL_pending(ssl) > 0) {
        p->revents = POLLIN;
        return 1;
    }
    return poll(p, 1, timeout_ms);
}
