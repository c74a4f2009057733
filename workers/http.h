/* http: the HTTP/1.1 request head parser (picohttpparser's contract) and
 * helpers for header lookup. Pure: no allocation, no I/O; the output points
 * into the caller's buffer. State starts zeroed and remembers how far it has
 * searched for the end of the head, so refeeding a growing buffer is O(n). */
#ifndef INTAKE_HTTP_H
#define INTAKE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HTTP_HEAD_MAX 8192
#define HTTP_MAX_HEADERS 64

#define HTTP_BAD (-1)       /* 400 */
#define HTTP_AGAIN (-2)     /* need more bytes */
#define HTTP_TOO_LARGE (-3) /* 431: head over HTTP_HEAD_MAX or too many headers */

struct http_header {
    const char *name, *value;
    size_t name_len, value_len;
};

struct http_request {
    const char *method, *path;
    size_t method_len, path_len;
    int minor_version;
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;
};

struct http_parser {
    size_t scanned;
};

/* Returns the head's length (request line through the empty line) when it
 * is complete and well formed, or HTTP_AGAIN, HTTP_BAD, HTTP_TOO_LARGE. */
ssize_t http_parse_request(struct http_parser *st, const char *buf, size_t len,
                           struct http_request *req);

/* The first header called name (case-insensitive), or NULL. */
const struct http_header *http_header_get(const struct http_request *req, const char *name);
/* How many times the header appears. */
size_t http_header_count(const struct http_request *req, const char *name);
/* Whether a comma-separated header value lists token (case-insensitive). */
bool http_has_token(const char *value, size_t len, const char *token);
/* Whether a request or header string equals s, ignoring case. */
bool http_eq_nocase(const char *a, size_t alen, const char *s);

#endif
