/* cli_tls: the intake CLI's TLS (--tls, --cacert, --insecure) and the byte
 * I/O it shares with plain connections: every call takes the SSL object
 * (NULL: plain) and the socket, blocking as the CLI's socket is. */
#ifndef INTAKE_CLI_TLS_H
#define INTAKE_CLI_TLS_H

#include <openssl/ssl.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/types.h>

/* The client context: the system trust store, or only cacert when given;
 * insecure: no verification at all. NULL with a message in err. */
SSL_CTX *cli_tls_context(const char *cacert, bool insecure, char *err, size_t errlen);
/* TLS over the connected fd to target (HOST:PORT, [v6]:PORT or unix:PATH):
 * handshake, chain and host name (or IP address) verified unless the
 * context is insecure; a session from an earlier connection is resumed.
 * The SSL object, or NULL with one line in err. */
SSL *cli_tls_connect(SSL_CTX *ctx, int fd, const char *target, char *err, size_t errlen);
/* close_notify, and the session kept for the next connection. NULL: no-op. */
void cli_tls_close(SSL *ssl);

/* Like read(2), send(2), sendfile(2) and poll(2) on one fd; -1 with errno
 * (EAGAIN: TLS read only records without data, such as session tickets). */
ssize_t cli_tls_read(SSL *ssl, int fd, void *buf, size_t len);
ssize_t cli_tls_send(SSL *ssl, int fd, const void *buf, size_t len);
ssize_t cli_tls_sendfile(SSL *ssl, int sock, int fd, off_t *pos, size_t len);
/* Decrypted bytes waiting inside TLS count as readable. */
int cli_tls_poll(SSL *ssl, struct pollfd *p, int timeout_ms);

#endif
