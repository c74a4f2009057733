/* log: the error log shared by every intake process.
 * Lines look like `2026-11-22T18:45:14.123Z [info] 1234: message`. One write(2)
 * per line on an O_APPEND fd, so lines from several processes never interleave. */
#ifndef INTAKE_LOG_H
#define INTAKE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Target: "stderr", "syslog" or a file path. Returns 0, or -errno if the file
 * cannot be opened (the previous target stays in use). */
int log_open(const char *target, enum log_level level);
/* Reopens the current file target (USR1). Returns 0 or -errno. */
int log_reopen(void);
void log_set_level(enum log_level level);
/* Names the process in every line: "1234: worker 1: message" (STYLE: an
 * operator must be able to follow a process and an upload with grep). */
void log_set_role(const char *role);
int log_level_parse(const char *s, enum log_level *out);
/* The fd lines are written to (2 for stderr, -1 for syslog). */
int log_fd(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
