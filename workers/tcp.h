/* tcp: the raw TCP transport (SPEC "Raw TCP transport"): header line, READY,
 * counted body, STATUS, repeat. A thin framing around the upload session. */
#ifndef INTAKE_TCP_H
#define INTAKE_TCP_H

struct conn;

/* The socket is readable: read and drive the connection. */
void tcp_on_readable(struct conn *c);

#endif
