/* tcp: the raw TCP transport (docs/protocol.md, "Raw TCP"): header line, READY,
 * counted body, STATUS, repeat. A thin framing around the upload session;
 * its functions are reached through tcp_transport (conn.h). */
#ifndef INTAKE_TCP_H
#define INTAKE_TCP_H

#include "conn.h"

#endif
