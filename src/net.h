/* net: listening sockets. The master binds them once (before dropping
 * privileges); workers inherit the fds and accept on them. */
#ifndef INTAKE_NET_H
#define INTAKE_NET_H

#include "config.h"

/* Binds and listens (non-blocking, close-on-exec, SO_REUSEADDR; a stale unix
 * socket file is replaced only when nothing answers on it). Returns the fd or
 * -errno with *why naming the step that failed; NET_UNRESOLVED when the host
 * name does not resolve, with *why the resolver's reason. */
#define NET_UNRESOLVED (-100000)
int net_listen(const struct listen_addr *a, const char **why);

#endif
