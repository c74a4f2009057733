/* notify: the systemd service notification protocol (sd_notify), for a
 * Type=notify unit: READY=1 with MAINPID=, RELOADING=1, STOPPING=1 and a
 * one-line STATUS=. Without NOTIFY_SOCKET in the environment every call
 * does nothing. Only the master calls these. */
#ifndef INTAKE_NOTIFY_H
#define INTAKE_NOTIFY_H

#include <stdbool.h>
#include <sys/types.h>

/* READY=1, MAINPID=<this process>, STATUS=status. */
void notify_ready(const char *status);
/* STATUS=status, only when it differs from the last one sent. */
void notify_status(const char *status);
/* RELOADING=1 (with MONOTONIC_USEC=, as systemd asks). */
void notify_reloading(void);
/* STOPPING=1. */
void notify_stopping(void);
/* MAINPID=pid: the service's main process is now pid. */
void notify_mainpid(pid_t pid);
/* While silent (a master that handed the service over to a new binary),
 * every call above does nothing. */
void notify_silence(bool on);

#endif
