/* libFuzzer entry points, one per parser (built by `make fuzz`, one binary
 * each via -DTARGET_*). Every parser must survive any input, and fed the
 * same bytes in two pieces it must reach the same verdict as in one. */
#include "config.h"
#include "http.h"
#include "log.h"
#include "tcp_line.h"
#include "message.h"
#include "upload.h"
#include "utf8.h"
#include "ws_frame.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#if defined(TARGET_HTTP)
    struct http_request req;
    struct http_parser a = {0}, b = {0};
    ssize_t whole = http_parse_request(&a, (const char *)data, size, &req);
    size_t cut = size ? data[0] % (size + 1) : 0;
    ssize_t first = http_parse_request(&b, (const char *)data, cut, &req);
    ssize_t second =
        first == HTTP_AGAIN ? http_parse_request(&b, (const char *)data, size, &req) : first;
    if (first == HTTP_AGAIN && second != whole) abort();
    if (whole > 0) {
        if ((size_t)whole > size || req.num_headers > HTTP_MAX_HEADERS) abort();
        for (size_t i = 0; i < req.num_headers; i++)
            if (req.headers[i].name < (const char *)data ||
                req.headers[i].value + req.headers[i].value_len > (const char *)data + size)
                abort();
    }
#elif defined(TARGET_WS_FRAME)
    struct ws_frame f;
    int code = 0;
    ssize_t r = ws_frame_parse(data, size, &f, &code);
    if (r > 0) {
        if (r > WS_FRAME_HEADER_MAX || (size_t)r > size || f.len > WS_MESSAGE_MAX) abort();
        if ((f.opcode & 8) && (f.len > 125 || !f.fin)) abort();
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        ws_unmask(copy + r, size - (size_t)r, f.mask, 0);
        ws_unmask(copy + r, size - (size_t)r, f.mask, 0);
        if (memcmp(copy, data, size) != 0) abort(); /* XOR twice is identity */
        free(copy);
    } else if (r == WS_FAIL && code != 1002 && code != 1009) {
        abort();
    }
#elif defined(TARGET_TCP_LINE)
    struct tcp_line a = {0}, b = {0};
    size_t la = 0, lb = 0;
    ssize_t whole = tcp_line_parse(&a, (const char *)data, size, &la);
    size_t cut = size ? data[0] % (size + 1) : 0;
    ssize_t first = tcp_line_parse(&b, (const char *)data, cut, &lb);
    if (first == TCP_LINE_AGAIN) first = tcp_line_parse(&b, (const char *)data, size, &lb);
    if (first != whole || (whole > 0 && la != lb)) abort();
    if (whole > 0 && (la > TCP_LINE_MAX || (size_t)whole > size)) abort();
#elif defined(TARGET_UPLOAD_HEADER)
    struct upload_request *r = malloc(sizeof *r);
    struct upload_error e;
    if (message_parse_start((const char *)data, size, r, &e) == 0) {
        if (r->filename_len > UPLOAD_FILENAME_MAX || r->filename[r->filename_len]) abort();
        if (strlen(r->token) > UPLOAD_TOKEN_MAX) abort();
        /* One object only: as a whole message it is a START. */
        struct upload_request *r2 = malloc(sizeof *r2);
        if (message_parse((const char *)data, size, false, r2, &e) != MSG_START) abort();
        if (r2->size != r->size || r2->filename_len != r->filename_len) abort();
        free(r2);
    } else if (e.code != 400) {
        abort();
    }
    if (message_parse_plain((const char *)data, size, r, &e) < 0 && e.code != 400 && e.code != 413)
        abort();
    char name[STORE_NAME_MAX + 1];
    const char *why;
    if (store_sanitize_name((const char *)data, size, name, &why) == 0) {
        if (!name[0] || strchr(name, '/') || strchr(name, '\\') || name[0] == '.') abort();
        if (!utf8_valid((const uint8_t *)name, strlen(name))) abort();
    }
    free(r);
#elif defined(TARGET_ESCAPE)
    /* The access log's and the messages' JSON strings: always JSON, always
     * UTF-8, exact for UTF-8 input. The error log's escaping: one line, no
     * control bytes, never cut. */
    char *q = malloc(UTF8_JSON_MAX(size) + 3);
    bool replaced = false;
    size_t n = utf8_json_escape(q + 1, data, size, &replaced);
    if (n > UTF8_JSON_MAX(size)) abort();
    q[0] = '"';
    q[n + 1] = '"';
    q[n + 2] = '\0';
    if (replaced == utf8_valid(data, size)) abort();
    if (!utf8_valid((const uint8_t *)q, n + 2) || memchr(q, '\0', n + 2)) abort();
    cJSON *o = cJSON_ParseWithLength(q, n + 2);
    if (!cJSON_IsString(o)) abort();
    if (!replaced && !memchr(data, '\0', size) &&
        (strlen(o->valuestring) != size || memcmp(o->valuestring, data, size) != 0))
        abort();
    cJSON_Delete(o);
    free(q);
    char *l = malloc(4 * size + 1);
    size_t used = 0, m = log_escape(l, 4 * size, data, size, &used);
    if (used != size || m > 4 * size || !utf8_valid((const uint8_t *)l, m)) abort();
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c < 0x20 || c == 0x7F || (c == 0xC2 && i + 1 < m && (unsigned char)l[i + 1] <= 0x9F))
            abort();
    }
    size_t cut = size ? data[0] % (4 * size) : 0; /* a short buffer: never past it */
    if (log_escape(l, cut, data, size, &used) > cut || used > size) abort();
    free(l);
#elif defined(TARGET_CONFIG_LINE)
    char scratch[4200];
    char *tok[66];
    const char *why = NULL;
    if (size > 4096) return 0;
    int n = config_tokenize((const char *)data, size, scratch, sizeof scratch, tok, 66, &why);
    if (n < 0 && !why) abort();
    for (int i = 0; i < n; i++)
        if (tok[i] < scratch || tok[i] >= scratch + sizeof scratch) abort();
    if (n >= 1) {
        struct listen_addr a;
        uint64_t v;
        config_parse_listen(tok[0], &a, &why);
        config_parse_size(tok[0], &v);
        config_parse_duration(tok[0], &v);
    }
#else
#error "define one TARGET_*"
#endif
    return 0;
}
