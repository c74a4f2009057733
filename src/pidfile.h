/* pidfile: the master's pid file. Written atomically (temp file + rename)
 * once the listeners are bound; refused while another live intaked holds it. */
#ifndef INTAKE_PIDFILE_H
#define INTAKE_PIDFILE_H

#include <stdbool.h>
#include <sys/types.h>

/* 0 if no other live intaked holds path, else -1 with the reason logged. */
int pidfile_check(const char *path);
/* Writes this process's pid. 0, or -1 with the reason logged. */
int pidfile_write(const char *path);
/* The pid in the file, or -1 with *why set. */
pid_t pidfile_read(const char *path, const char **why);
/* Whether pid is an intaked master (by the title it gives itself). */
bool pidfile_names_master(pid_t pid);
/* Whether path, naming pid, may be believed: written by root or by us, and
 * naming a master of the same owner. */
bool pidfile_trusted(const char *path, pid_t pid);
/* Removes the file if it still names this process. */
void pidfile_remove(const char *path);

#endif
