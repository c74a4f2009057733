/* tcp_line: the raw TCP transport's header line parser (docs/protocol.md "Raw TCP
 * transport"): one line of at most 8 KiB ending in '\n', a trailing '\r'
 * dropped. Pure and incremental: no allocation, no I/O; state starts zeroed
 * and remembers how far it has looked, so refeeding a growing buffer is O(n). */
#ifndef INTAKE_TCP_LINE_H
#define INTAKE_TCP_LINE_H

#include <stddef.h>
#include <sys/types.h>

#define TCP_LINE_MAX 8192 /* bytes before the '\n' */
#define TCP_LINE_AGAIN (-2)
#define TCP_LINE_TOO_LONG (-1)

struct tcp_line {
    size_t scanned;
};

/* Looks for the end of the line in buf[0..len). Returns the bytes the line
 * takes including its '\n' (> 0) with *line_len set to its length without the
 * line end; TCP_LINE_AGAIN when more bytes are needed; TCP_LINE_TOO_LONG when
 * no '\n' came within TCP_LINE_MAX + 1 bytes (the server answers 431). */
ssize_t tcp_line_parse(struct tcp_line *st, const char *buf, size_t len, size_t *line_len);

#endif
