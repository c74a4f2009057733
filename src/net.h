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

/* -t and start: every listener's host name resolves (what binding needs;
 * a reload binds new addresses only, and says so if one does not). Not
 * part of config_load: -s must not wait for a resolver. 0, or -1 with
 * "file:line: ..." in err. */
int net_check_names(const struct config *c, char *err, size_t errlen);
int net_listen(const struct listen_addr *a, const char **why);

#endif
