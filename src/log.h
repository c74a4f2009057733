/* log: the error log shared by every intake process.
 * Lines look like `2026-11-22T18:45:14.123Z [info] 1234: message`. One write(2)
 * per line on an O_APPEND fd, so lines from several processes never interleave.
 * Every message goes through log_escape before it is written: whatever a
 * client managed to get into it (a filename, a header, a scanner's reply),
 * one event stays one line and no control byte reaches the operator's
 * terminal. */
#ifndef INTAKE_LOG_H
#define INTAKE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Target: "stderr", "syslog" or a file path. Returns 0, or -errno if the file
 * cannot be opened (the previous target stays in use). */
int log_open(const char *target, enum log_level level);
/* Reopens the current file target (USR1). Returns 0 or -errno. */
int log_reopen(void);
/* Points stderr at the log file too, now and after every reopen: for a
 * process whose libraries may write to stderr (intake-scand's libclamav),
 * which would otherwise keep a rotated file open. No-op unless the target
 * is a file. */
void log_capture_stderr(void);
/* While on, error lines also go to stderr when the log is elsewhere: a
 * program that fails to start says why to whoever started it. */
void log_errors_to_stderr(bool on);
/* Names the process in every line: "1234: worker 1: message" (STYLE: an
 * operator must be able to follow a process and an upload with grep). */
void log_set_role(const char *role);
int log_level_parse(const char *s, enum log_level *out);
/* The fd lines are written to (2 for stderr, -1 for syslog). */
int log_fd(void);

/* Copies n bytes for a log line: control characters (C0, DEL, C1), line and
 * paragraph separators (U+2028/9), bidi controls and bytes that are not UTF-8
 * become \xNN, one per byte; the rest (printable UTF-8, backslash included)
 * is kept. Never writes past cap and never splits a character or an escape.
 * Returns the bytes written (no NUL); *used (may be NULL) gets the input
 * bytes consumed, less than n when out was too small. */
size_t log_escape(char *out, size_t cap, const void *in, size_t n, size_t *used);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
