/* master: the intaked master process. Binds the listeners, forks the workers
 * and the scanner, supervises them (respawn, rate-limited after repeated
 * crashes) and turns signals into actions: reload, drain, log reopen, binary
 * upgrade, worker scaling. It never touches client bytes. */
#ifndef INTAKE_MASTER_H
#define INTAKE_MASTER_H

#include "config.h"

/* What a reload re-reads and an upgrade re-executes. */
struct master_args {
    const char *conf_path; /* -c, or NULL for the default */
    char **overrides;      /* -o NAME=VALUE */
    int n_overrides;
    const char *base_dir; /* relative paths resolve against it */
    char **argv;          /* the command line, for USR2 */
};

/* The environment variable naming inherited listening sockets across a
 * binary upgrade: "fd:kind:address;..." (kind w or t). */
#define MASTER_INHERIT_ENV "INTAKED_LISTENERS"

/* Runs the master until shutdown; takes ownership of cfg. Returns the
 * process exit status. */
int master_run(struct config *cfg, const struct master_args *args);

#endif
