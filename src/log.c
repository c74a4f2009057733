/* log: see log.h. Safe to use before log_open (writes to stderr). */
#define _GNU_SOURCE
#include "log.h"

#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_out = 2;
static int log_syslog;
static enum log_level log_min = LOG_INFO;
static char log_path[4096];
static bool log_stderr_too; /* log_capture_stderr was called */
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
        dup3(fd, log_out, O_CLOEXEC); /* dup2 would drop close-on-exec */
        close(fd);
    } else {
        log_out = fd;
    }
    if (log_stderr_too) dup2(log_out, 2);
    return 0;
}

void log_capture_stderr(void)
{
    if (log_syslog || log_out <= 2) return;
    log_stderr_too = true;
    dup2(log_out, 2);
}

/* Characters that are valid UTF-8 but still unfit for a log line. */
static bool unfit(const uint8_t *p, size_t k)
{
    if (k == 1) return p[0] < 0x20 || p[0] == 0x7F;
    if (k == 2) return p[0] == 0xC2 && p[1] <= 0x9F; /* C1: U+0080..U+009F */
    if (k == 3 && p[0] == 0xE2 && p[1] == 0x80) return p[2] >= 0xA8 && p[2] <= 0xAE;
    if (k == 3 && p[0] == 0xE2 && p[1] == 0x81) return p[2] >= 0xA6 && p[2] <= 0xA9;
    return false;
}

size_t log_escape(char *out, size_t cap, const void *in, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = in;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t k = utf8_seq_len(p + i, n - i);
        if (k && !unfit(p + i, k)) {
            if (o + k > cap) break;
            memcpy(out + o, p + i, k);
            o += k;
        } else {
            if (k == 0) k = 1; /* not UTF-8: this byte alone */
            if (o + 4 * k > cap) break;
            for (size_t j = 0; j < k; j++, o += 4) {
                out[o] = '\\';
                out[o + 1] = 'x';
                out[o + 2] = hex[p[i + j] >> 4];
                out[o + 3] = hex[p[i + j] & 15];
            }
        }
        i += k;
    }
    if (used) *used = i;
    return o;
}

static bool errors_to_stderr;

void log_errors_to_stderr(bool on)
{
    /* Not when stderr is the log file itself (the new binary of an
     * upgrade, whose stderr the old master pointed there): twice. */
    struct stat a, b;
    if (on && !log_syslog && log_out > 2 && fstat(2, &a) == 0 && fstat(log_out, &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        on = false;
    errors_to_stderr = on;
}

/* "intaked: MESSAGE" on stderr, for whoever started the program. */
static void error_to_stderr(const char *msg, size_t ml)
{
    char line[8192];
    int n = snprintf(line, sizeof line, "intaked: ");
    size_t len = (size_t)n + log_escape(line + n, sizeof line - (size_t)n - 1, msg, ml, NULL);
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_min) return;
    int saved = errno;
    char msg[4096], line[8192];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t ml = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    if (errors_to_stderr && level == LOG_ERROR && (log_syslog || log_out != 2))
        error_to_stderr(msg, ml);
    if (log_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        size_t n = log_escape(line, sizeof line - 1, msg, ml, NULL);
        line[n] = '\0';
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
    size_t len = (size_t)n + log_escape(line + n, sizeof line - (size_t)n - 1, msg, ml, NULL);
    line[len++] = '\n';
    ssize_t w = write(log_out, line, len);
    (void)w;
    errno = saved;
}
