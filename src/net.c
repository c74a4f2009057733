/* net: see net.h. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BACKLOG 1024

static int listen_unix(const struct listen_addr *a, const char **why)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", a->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "socket";
        return -errno;
    }
    struct stat st;
    if (lstat(a->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Only remove a socket nobody listens on any more. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0) close(probe);
        if (live) {
            close(fd);
            *why = "bind (another process is listening there)";
            return -EADDRINUSE;
        }
        unlink(a->path);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        *why = "bind";
        goto fail;
    }
    chmod(a->path, 0666);
    if (listen(fd, BACKLOG) < 0) {
        *why = "listen";
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

/* The address to bind a (not a unix one) to, as getaddrinfo says. */
static int resolve(const struct listen_addr *a, struct addrinfo **res)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    return getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, res);
}

int net_check_names(const struct config *c, char *err, size_t errlen)
{
    for (int i = 0; i < c->n_listen; i++) {
        const struct listen_addr *a = &c->listen[i];
        if (a->is_unix || !a->host[0]) continue;
        struct addrinfo *res = NULL;
        int g = resolve(a, &res);
        if (g == 0) {
            freeaddrinfo(res);
            continue;
        }
        snprintf(err, errlen, "%s: cannot listen on \"%s\": the host name does not resolve: %s",
                 c->listen_at[i], a->text, gai_strerror(g));
        return -1;
    }
    return 0;
}

int net_listen(const struct listen_addr *a, const char **why)
{
    if (a->is_unix) return listen_unix(a, why);
    struct addrinfo *res;
    int g = resolve(a, &res);
    if (g != 0) {
        *why = gai_strerror(g);
        return NET_UNRESOLVED;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "socket";
        freeaddrinfo(res);
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (res->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = 0;
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        *why = "bind";
        rc = -errno;
    } else if (listen(fd, BACKLOG) < 0) {
        *why = "listen";
        rc = -errno;
    }
    freeaddrinfo(res);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}
