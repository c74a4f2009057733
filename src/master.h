/* master: the intaked master process. Binds the listeners, forks the workers,
 * supervises them (respawn, rate-limited after repeated crashes) and turns
 * signals into actions. It never touches client bytes. */
#ifndef INTAKE_MASTER_H
#define INTAKE_MASTER_H

#include "config.h"

/* Runs the master until shutdown. Returns the process exit status. */
int master_run(struct config *cfg);

#endif
