/* log: see log.h. Safe to use before log_open (writes to stderr). */
#define _GNU_SOURCE
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_out = 2;
static int log_syslog;
static enum log_level log_min = LOG_INFO;
static char log_path[4096];
static char log_role[32];

void log_set_role(const char *role)
{
    snprintf(log_role, sizeof log_role, "%s", role ? role : "");
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof *level_names; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_set_level(enum log_level level)
{
    log_min = level;
}

int log_fd(void)
{
    return log_syslog ? -1 : log_out;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int log_open(const char *target, enum log_level level)
{
    log_min = level;
    if (strcmp(target, "stderr") == 0) {
        if (log_out > 2) close(log_out);
        log_out = 2;
        log_syslog = 0;
        log_path[0] = '\0';
        return 0;
    }
    if (strcmp(target, "syslog") == 0) {
        openlog("intaked", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_syslog = 1;
        log_path[0] = '\0';
        return 0;
    }
    int fd = open_file(target);
    if (fd < 0) return -errno;
    if (log_out > 2) close(log_out);
    log_out = fd;
    log_syslog = 0;
    snprintf(log_path, sizeof log_path, "%s", target);
    return 0;
}

int log_reopen(void)
{
    if (log_path[0] == '\0') return 0;
    int fd = open_file(log_path);
    if (fd < 0) return -errno;
    /* dup2 keeps the fd number, so children sharing it see the new file too. */
    if (log_out > 2) {
        dup2(fd, log_out);
        close(fd);
    } else {
        log_out = fd;
    }
    return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_min) return;
    int saved = errno;
    char line[2048];
    va_list ap;
    if (log_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        syslog(prio[level], "%s%s%s", log_role, log_role[0] ? ": " : "", line);
        errno = saved;
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s] %d: %s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level], (int)getpid(), log_role,
                     log_role[0] ? ": " : "");
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(log_out, line, len);
    (void)w;
    errno = saved;
}
