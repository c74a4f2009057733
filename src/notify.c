/* notify: see notify.h. A thin layer over libsystemd's sd_notify, which
 * does the socket work (a path or an abstract address in NOTIFY_SOCKET). */
#define _GNU_SOURCE
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

static bool silent;
static char last_status[256];

static bool wanted(void)
{
    return !silent && getenv("NOTIFY_SOCKET") != NULL;
}

/* STATUS= is one line: a newline would start another assignment. */
static void one_line(const char *in, char *out, size_t cap)
{
    snprintf(out, cap, "%s", in);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

void notify_ready(const char *status)
{
    if (!wanted()) return;
    one_line(status, last_status, sizeof last_status);
    sd_notifyf(0, "READY=1\nMAINPID=%ld\nSTATUS=%s", (long)getpid(), last_status);
}

void notify_status(const char *status)
{
    if (!wanted()) return;
    char line[sizeof last_status];
    one_line(status, line, sizeof line);
    if (strcmp(line, last_status) == 0) return;
    memcpy(last_status, line, sizeof line);
    sd_notifyf(0, "STATUS=%s", last_status);
}

void notify_reloading(void)
{
    if (!wanted()) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    last_status[0] = '\0';
}

void notify_stopping(void)
{
    if (!wanted()) return;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void notify_mainpid(pid_t pid)
{
    if (!wanted()) return;
    sd_notifyf(0, "MAINPID=%ld", (long)pid);
}

void notify_silence(bool on)
{
    silent = on;
    last_status[0] = '\0';
}
