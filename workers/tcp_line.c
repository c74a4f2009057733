/* tcp_line: see tcp_line.h. */
#define _GNU_SOURCE
#include "tcp_line.h"

#include <string.h>

ssize_t tcp_line_parse(struct tcp_line *st, const char *buf, size_t len, size_t *line_len)
{
    size_t limit = TCP_LINE_MAX + 1; /* the line plus its '\n' */
    size_t end = len < limit ? len : limit;
    if (st->scanned < end) {
        const char *nl = memchr(buf + st->scanned, '\n', end - st->scanned);
        if (nl) {
            size_t n = (size_t)(nl - buf);
            st->scanned = 0;
            *line_len = n > 0 && buf[n - 1] == '\r' ? n - 1 : n;
            return (ssize_t)(n + 1);
        }
        st->scanned = end;
    }
    return len >= limit ? TCP_LINE_TOO_LONG : TCP_LINE_AGAIN;
}
