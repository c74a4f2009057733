/* message: see message.h. */
#define _GNU_SOURCE
#include "message.h"

#include "utf8.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unhex(const char *s, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n) return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0) return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return 0;
}

/* --- control messages: a strict JSON reader ---------------------------------
 * cJSON takes bytes after the object, treats every byte below '!' as
 * whitespace and ends a string at an escaped NUL. A control message must be
 * exactly one JSON object (RFC 8259) with only JSON whitespace around it, and
 * its strings are read here with their real length. No allocation; nesting
 * is bounded; a member given twice is refused rather than guessed at. */

#define JSON_DEPTH_MAX 32
enum { J_ABSENT = -1, J_BAD = -2, J_SURROGATE = -3 };

struct jtext {
    const char *p;
    size_t n, i;
};

static void jws(struct jtext *t)
{
    while (t->i < t->n &&
           (t->p[t->i] == ' ' || t->p[t->i] == '\t' || t->p[t->i] == '\n' || t->p[t->i] == '\r'))
        t->i++;
}

static int jhex(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int jstring(struct jtext *t)
{
    t->i++; /* the opening quote */
    while (t->i < t->n) {
        unsigned char c = (unsigned char)t->p[t->i++];
        if (c == '"') return 0;
        if (c < 0x20) return -1; /* raw control characters are not JSON */
        if (c != '\\') continue;
        if (t->i >= t->n) return -1;
        c = (unsigned char)t->p[t->i++];
        if (c == 'u') {
            if (t->n - t->i < 4) return -1;
            for (int k = 0; k < 4; k++)
                if (jhex(t->p[t->i++]) < 0) return -1;
        } else if (!memchr("\"\\/bfnrt", c, 8)) {
            return -1;
        }
    }
    return -1;
}

static int jdigits(struct jtext *t)
{
    size_t s = t->i;
    while (t->i < t->n && t->p[t->i] >= '0' && t->p[t->i] <= '9')
        t->i++;
    return t->i > s ? 0 : -1;
}

static int jnumber(struct jtext *t)
{
    if (t->p[t->i] == '-') t->i++;
    if (t->i < t->n && t->p[t->i] == '0')
        t->i++;
    else if (jdigits(t) < 0)
        return -1;
    if (t->i < t->n && t->p[t->i] == '.') {
        t->i++;
        if (jdigits(t) < 0) return -1;
    }
    if (t->i < t->n && (t->p[t->i] == 'e' || t->p[t->i] == 'E')) {
        t->i++;
        if (t->i < t->n && (t->p[t->i] == '+' || t->p[t->i] == '-')) t->i++;
        if (jdigits(t) < 0) return -1;
    }
    return 0;
}

static int jvalue(struct jtext *t, int depth)
{
    jws(t);
    if (t->i >= t->n || depth > JSON_DEPTH_MAX) return -1;
    char c = t->p[t->i];
    if (c == '"') return jstring(t);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        t->i++;
        jws(t);
        if (t->i < t->n && t->p[t->i] == close) {
            t->i++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                jws(t);
                if (t->i >= t->n || t->p[t->i] != '"' || jstring(t) < 0) return -1;
                jws(t);
                if (t->i >= t->n || t->p[t->i++] != ':') return -1;
            }
            if (jvalue(t, depth + 1) < 0) return -1;
            jws(t);
            if (t->i >= t->n) return -1;
            char d = t->p[t->i++];
            if (d == close) return 0;
            if (d != ',') return -1;
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t wl = strlen(words[k]);
        if (t->n - t->i >= wl && memcmp(t->p + t->i, words[k], wl) == 0) {
            t->i += wl;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) return jnumber(t);
    return -1;
}

/* 0 if p[0..n) is one JSON object and nothing else but whitespace. */
static int json_check_object(const char *p, size_t n)
{
    struct jtext t = {p, n, 0};
    jws(&t);
    if (t.i >= n || p[t.i] != '{' || jvalue(&t, 0) < 0) return -1;
    jws(&t);
    return t.i == n ? 0 : -1;
}

static void put_utf8(char *out, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | cp >> 18);
        out[(*o)++] = (char)(0x80 | (cp >> 12 & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static uint32_t jhex4(const char *p)
{
    return (uint32_t)(jhex(p[0]) << 12 | jhex(p[1]) << 8 | jhex(p[2]) << 4 | jhex(p[3]));
}

/* Decodes the checked string token raw[0..n) (quotes included) into out,
 * cap bytes, with its real length: "\u0000" is a NUL byte like any other.
 * Returns the length, -1 if it does not fit, or -2 if it holds a lone
 * surrogate (no UTF-8 can carry one). */
static ssize_t jdecode(const char *raw, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 1; i + 1 < n;) {
        if (raw[i] != '\\' || raw[i + 1] != 'u') {
            if (o == cap) return -1;
            if (raw[i] != '\\') {
                out[o++] = raw[i++];
                continue;
            }
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            out[o++] = to[(const char *)memchr(from, raw[i + 1], 8) - from];
            i += 2;
            continue;
        }
        i += 2;
        uint32_t cp = jhex4(raw + i);
        i += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return -2;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 6 > n - 1 || raw[i] != '\\' || raw[i + 1] != 'u') return -2;
            uint32_t lo = jhex4(raw + i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF) return -2;
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        size_t need = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        if (cap - o < need) return -1;
        put_utf8(out, &o, cp);
    }
    return (ssize_t)o;
}

/* The raw value of the member key of the checked object p[0..n): 0 with
 * *v, *vl set; J_ABSENT; J_BAD when key occurs twice. */
static int jmember(const char *p, size_t n, const char *key, const char **v, size_t *vl)
{
    struct jtext t = {p, n, 0};
    jws(&t);
    t.i++; /* '{' */
    int found = J_ABSENT;
    for (;;) {
        jws(&t);
        if (p[t.i] == '}') break;
        size_t ks = t.i;
        jstring(&t);
        char kbuf[32];
        ssize_t kl = jdecode(p + ks, t.i - ks, kbuf, sizeof kbuf);
        jws(&t);
        t.i++; /* ':' */
        jws(&t);
        size_t vs = t.i;
        jvalue(&t, 1);
        if (kl == (ssize_t)strlen(key) && memcmp(kbuf, key, (size_t)kl) == 0) {
            if (found == 0) return J_BAD;
            found = 0;
            *v = p + vs;
            *vl = t.i - vs;
        }
        jws(&t);
        if (p[t.i++] == '}') break;
    }
    return found;
}

/* A string member, decoded into out (cap bytes): its length; J_ABSENT when
 * missing or null; J_BAD when not a string, longer than cap or repeated;
 * J_SURROGATE when it holds a lone surrogate. */
static ssize_t jget_string(const char *p, size_t n, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    int rc = jmember(p, n, key, &v, &vl);
    if (rc < 0) return rc;
    if (vl == 4 && memcmp(v, "null", 4) == 0) return J_ABSENT;
    if (v[0] != '"') return J_BAD;
    ssize_t l = jdecode(v, vl, out, cap);
    return l == -2 ? J_SURROGATE : l < 0 ? J_BAD : l;
}

int message_parse_start(const char *json, size_t len, struct upload_request *r,
                        struct upload_error *e)
{
    memset(r, 0, sizeof *r);
    if (json_check_object(json, len) < 0)
        return upload_fail(e, 400, "malformed header: expected one JSON START object");
    char buf[80];
    ssize_t l = jget_string(json, len, "type", buf, sizeof buf);
    if (l != 5 || memcmp(buf, "START", 5) != 0)
        return upload_fail(e, 400, "expected {\"type\":\"START\",...}");
    l = jget_string(json, len, "filename", r->filename, UPLOAD_FILENAME_MAX);
    if (l == J_SURROGATE)
        return upload_fail(e, 400, "filename is not valid UTF-8 (a lone surrogate escape)");
    if (l < 0)
        return upload_fail(e, 400, "START needs one \"filename\" string of at most %d bytes",
                           UPLOAD_FILENAME_MAX);
    r->filename[l] = '\0';
    r->filename_len = (size_t)l;
    const char *v;
    size_t vl;
    /* JSON numbers are doubles here: integers are exact up to 2^53. */
    if (jmember(json, len, "size", &v, &vl) != 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) ||
        vl >= sizeof buf)
        return upload_fail(e, 400, "START needs \"size\": a whole number of bytes");
    memcpy(buf, v, vl);
    buf[vl] = '\0';
    double size = strtod(buf, NULL);
    if (!(size >= 0) || size > 9007199254740992.0 || floor(size) != size)
        return upload_fail(e, 400, "START needs \"size\": a whole number of bytes");
    r->size = (uint64_t)size;
    l = jget_string(json, len, "sha256", buf, sizeof buf);
    if (l != J_ABSENT) {
        if (l < 0 || unhex(buf, (size_t)l, r->sha256, 32) < 0)
            return upload_fail(e, 400, "\"sha256\" must be 64 hexadecimal characters");
        r->has_sha256 = true;
    }
    l = jget_string(json, len, "token", r->token, UPLOAD_TOKEN_MAX);
    if (l != J_ABSENT) {
        if (l < 0 || memchr(r->token, '\0', (size_t)l))
            return upload_fail(e, 400,
                               "\"token\" must be a string of at most %d bytes, without NUL",
                               UPLOAD_TOKEN_MAX);
        r->token[l] = '\0';
    }
    l = jget_string(json, len, "id", buf, sizeof buf);
    if (l != J_ABSENT) {
        buf[l < 0 ? 0 : l] = '\0';
        if (l != STORE_ID_LEN || !store_id_valid(buf))
            return upload_fail(e, 400, "\"id\" must be an upload id (32 lowercase hex characters)");
        memcpy(r->resume_id, buf, STORE_ID_LEN + 1);
    }
    return 0;
}

static int parse_type(const char *json, size_t len, char *type, size_t cap)
{
    if (json_check_object(json, len) < 0) return -1;
    ssize_t l = jget_string(json, len, "type", type, cap - 1);
    if (l < 0) return -1;
    type[l] = '\0';
    return 0;
}

int message_parse_plain(const char *line, size_t len, struct upload_request *r,
                        struct upload_error *e)
{
    memset(r, 0, sizeof *r);
    size_t i = 0;
    uint64_t size = 0;
    while (i < len && line[i] >= '0' && line[i] <= '9') {
        uint64_t d = (uint64_t)(line[i] - '0');
        if (size > (UINT64_MAX - d) / 10) return upload_fail(e, 413, "size is too large");
        size = size * 10 + d;
        i++;
    }
    if (i == 0 || i > 20 || i >= len || line[i] != ' ')
        return upload_fail(e, 400,
                           "malformed header: expected \"SIZE NAME\" or a JSON START object");
    i++;
    size_t nl = len - i;
    if (nl > UPLOAD_FILENAME_MAX)
        return upload_fail(e, 400, "filename is longer than %d bytes", UPLOAD_FILENAME_MAX);
    if (memchr(line + i, '\0', nl)) return upload_fail(e, 400, "filename contains a NUL byte");
    memcpy(r->filename, line + i, nl);
    r->filename[nl] = '\0';
    r->filename_len = nl;
    r->size = size;
    return 0;
}

enum message_type message_parse(const char *buf, size_t len, bool line, struct upload_request *r,
                                struct upload_error *e)
{
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    if (line && (i == len || buf[i] != '{'))
        return message_parse_plain(buf, len, r, e) < 0 ? MSG_BAD : MSG_START;
    char type[64];
    if (parse_type(buf, len, type, sizeof type) < 0) {
        upload_fail(e, 400,
                    line ? "malformed header: expected one JSON START object or \"SIZE NAME\""
                         : "malformed control message: expected one JSON object with a \"type\"");
        return MSG_BAD;
    }
    if (strcmp(type, "DONE") == 0) return MSG_DONE;
    if (strcmp(type, "START") != 0) {
        /* Shown to the client and logged: keep it short and printable. */
        for (char *p = type; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
        upload_fail(e, 400, "unknown message type \"%.40s\" (START%s)", type,
                    line ? "" : " or DONE");
        return MSG_BAD;
    }
    return message_parse_start(buf, len, r, e) < 0 ? MSG_BAD : MSG_START;
}

int message_json_add(struct cJSON *o, const char *key, const void *s, size_t n, bool *replaced)
{
    bool dummy = false;
    char *q = malloc(UTF8_JSON_MAX(n) + 3);
    if (!q) return -1;
    size_t l = utf8_json_escape(q + 1, s, n, replaced ? replaced : &dummy);
    q[0] = '"';
    q[l + 1] = '"';
    q[l + 2] = '\0';
    int rc = cJSON_AddRawToObject(o, key, q) ? 0 : -1;
    free(q);
    return rc;
}

static char *print(cJSON *o, bool ok, size_t *len)
{
    char *s = o && ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    *len = s ? strlen(s) : 0;
    return s;
}

char *message_ready(const struct upload *u, bool websocket, bool resumed, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    bool ok;
    if (websocket)
        ok = cJSON_AddStringToObject(o, "type", "DATA") &&
             cJSON_AddNumberToObject(o, "code", 200) &&
             cJSON_AddStringToObject(
                 o, "message", resumed ? "Upload resumed" : "Upload initialized. Wait for data");
    else
        ok = cJSON_AddStringToObject(o, "type", "READY");
    ok = ok && cJSON_AddStringToObject(o, "id", u->id) &&
         cJSON_AddNumberToObject(o, "offset", (double)u->received);
    return print(o, ok, len);
}

int message_ack(const struct upload *u, uint64_t n, char *buf, size_t cap)
{
    /* The hot path of WebSocket uploads: two numbers, no JSON tree. */
    return snprintf(buf, cap, "{\"type\":\"DATA\",\"code\":200,\"bytesRead\":%llu,\"offset\":%llu}",
                    (unsigned long long)n, (unsigned long long)u->received);
}

char *message_status(const struct upload *u, size_t *len)
{
    char hex[65];
    upload_hex(u->digest, 32, hex);
    /* clamscan's form: "./NAME: ..." with the client's name, NULs and all. */
    const char *tail;
    char more[300];
    switch (u->verdict) {
    case VERDICT_CLEAN:
        tail = ": OK";
        break;
    case VERDICT_UNSCANNED:
        tail = ": OK (not scanned)";
        break;
    case VERDICT_INFECTED:
        snprintf(more, sizeof more, ": %s FOUND", u->virus);
        tail = more;
        break;
    default:
        snprintf(more, sizeof more, ": %s ERROR", u->reason);
        tail = more;
        break;
    }
    size_t tl = strlen(tail), sl = 2 + u->filename_len + tl;
    char *status = malloc(sl);
    cJSON *o = cJSON_CreateObject();
    bool ok = status && o;
    if (ok) {
        memcpy(status, "./", 2);
        memcpy(status + 2, u->filename, u->filename_len);
        memcpy(status + 2 + u->filename_len, tail, tl);
        ok = cJSON_AddStringToObject(o, "type", "STATUS") &&
             cJSON_AddStringToObject(o, "id", u->id) &&
             message_json_add(o, "filename", u->filename, u->filename_len, NULL) == 0 &&
             (u->stored[0]
                  ? message_json_add(o, "stored_as", u->stored, strlen(u->stored), NULL) == 0
                  : cJSON_AddNullToObject(o, "stored_as") != NULL) &&
             cJSON_AddNumberToObject(o, "size", (double)u->size) &&
             cJSON_AddStringToObject(o, "sha256", hex) &&
             cJSON_AddStringToObject(o, "verdict", upload_verdict_name(u->verdict)) &&
             (u->verdict == VERDICT_INFECTED
                  ? message_json_add(o, "virus", u->virus, strlen(u->virus), NULL) == 0
                  : cJSON_AddNullToObject(o, "virus") != NULL) &&
             message_json_add(o, "status", status, sl, NULL) == 0;
    }
    free(status);
    return print(o, ok, len);
}

char *message_error(const struct upload_error *e, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = cJSON_AddStringToObject(o, "type", "ERROR") &&
              cJSON_AddNumberToObject(o, "code", e->code) &&
              message_json_add(o, "message", e->message, strlen(e->message), NULL) == 0;
    return print(o, ok, len);
}
