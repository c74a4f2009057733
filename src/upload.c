/* upload: see upload.h. */
#define _GNU_SOURCE
#include "upload.h"

#include "log.h"
#include "utf8.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int err(struct upload_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int err(struct upload_error *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->code = code;
    return -1;
}

void upload_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[bin[i] >> 4];
        out[2 * i + 1] = hex[bin[i] & 15];
    }
    out[2 * n] = '\0';
}

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
enum { J_ABSENT = -1, J_BAD = -2 };

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
 * Returns the length, or -1 if it does not fit or holds a lone surrogate. */
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
        if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 6 > n - 1 || raw[i] != '\\' || raw[i + 1] != 'u') return -1;
            uint32_t lo = jhex4(raw + i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF) return -1;
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
 * missing or null; J_BAD when not a string, longer than cap or repeated. */
static ssize_t jget_string(const char *p, size_t n, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    int rc = jmember(p, n, key, &v, &vl);
    if (rc < 0) return rc;
    if (vl == 4 && memcmp(v, "null", 4) == 0) return J_ABSENT;
    if (v[0] != '"') return J_BAD;
    ssize_t l = jdecode(v, vl, out, cap);
    return l < 0 ? J_BAD : l;
}

int upload_parse_start(const char *json, size_t len, struct upload_request *r,
                       struct upload_error *e)
{
    memset(r, 0, sizeof *r);
    if (json_check_object(json, len) < 0)
        return err(e, 400, "malformed header: expected one JSON START object");
    char buf[80];
    ssize_t l = jget_string(json, len, "type", buf, sizeof buf);
    if (l != 5 || memcmp(buf, "START", 5) != 0)
        return err(e, 400, "expected {\"type\":\"START\",...}");
    l = jget_string(json, len, "filename", r->filename, UPLOAD_FILENAME_MAX);
    if (l < 0)
        return err(e, 400, "START needs one \"filename\" string of at most %d bytes",
                   UPLOAD_FILENAME_MAX);
    r->filename[l] = '\0';
    r->filename_len = (size_t)l;
    const char *v;
    size_t vl;
    /* JSON numbers are doubles here: integers are exact up to 2^53. */
    if (jmember(json, len, "size", &v, &vl) != 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) ||
        vl >= sizeof buf)
        return err(e, 400, "START needs \"size\": a whole number of bytes");
    memcpy(buf, v, vl);
    buf[vl] = '\0';
    double size = strtod(buf, NULL);
    if (!(size >= 0) || size > 9007199254740992.0 || floor(size) != size)
        return err(e, 400, "START needs \"size\": a whole number of bytes");
    r->size = (uint64_t)size;
    l = jget_string(json, len, "sha256", buf, sizeof buf);
    if (l != J_ABSENT) {
        if (l < 0 || unhex(buf, (size_t)l, r->sha256, 32) < 0)
            return err(e, 400, "\"sha256\" must be 64 hexadecimal characters");
        r->has_sha256 = true;
    }
    l = jget_string(json, len, "token", r->token, UPLOAD_TOKEN_MAX);
    if (l != J_ABSENT) {
        if (l < 0 || memchr(r->token, '\0', (size_t)l))
            return err(e, 400, "\"token\" must be a string of at most %d bytes, without NUL",
                       UPLOAD_TOKEN_MAX);
        r->token[l] = '\0';
    }
    l = jget_string(json, len, "id", buf, sizeof buf);
    if (l != J_ABSENT) {
        buf[l < 0 ? 0 : l] = '\0';
        if (l != STORE_ID_LEN || !store_id_valid(buf))
            return err(e, 400, "\"id\" must be an upload id (32 lowercase hex characters)");
        memcpy(r->resume_id, buf, STORE_ID_LEN + 1);
    }
    return 0;
}

int upload_parse_type(const char *json, size_t len, char *type, size_t cap)
{
    if (json_check_object(json, len) < 0) return -1;
    ssize_t l = jget_string(json, len, "type", type, cap - 1);
    if (l < 0) return -1;
    type[l] = '\0';
    return 0;
}

int upload_parse_plain(const char *line, size_t len, struct upload_request *r,
                       struct upload_error *e)
{
    memset(r, 0, sizeof *r);
    size_t i = 0;
    uint64_t size = 0;
    while (i < len && line[i] >= '0' && line[i] <= '9') {
        uint64_t d = (uint64_t)(line[i] - '0');
        if (size > (UINT64_MAX - d) / 10) return err(e, 413, "size is too large");
        size = size * 10 + d;
        i++;
    }
    if (i == 0 || i > 20 || i >= len || line[i] != ' ')
        return err(e, 400, "malformed header: expected \"SIZE NAME\" or a JSON START object");
    i++;
    size_t nl = len - i;
    if (nl > UPLOAD_FILENAME_MAX)
        return err(e, 400, "filename is longer than %d bytes", UPLOAD_FILENAME_MAX);
    if (memchr(line + i, '\0', nl)) return err(e, 400, "filename contains a NUL byte");
    memcpy(r->filename, line + i, nl);
    r->filename[nl] = '\0';
    r->filename_len = nl;
    r->size = size;
    return 0;
}

void upload_init(struct upload *u)
{
    memset(u, 0, sizeof *u);
    u->fd = u->rfd = -1;
}

int upload_begin(struct upload *u, struct store *st, const struct upload_limits *lim,
                 const struct upload_request *r, struct upload_error *e)
{
    upload_release(u);
    const char *why = "";
    if (store_sanitize_name(r->filename, r->filename_len, u->name, &why) < 0)
        return err(e, 400, "%s", why);
    if (r->resume_id[0]) /* START with an id goes to upload_find */
        return err(e, 404, "upload %s is unknown or expired", r->resume_id);
    if (r->size > lim->max_file_size)
        return err(e, 413, "file of %llu bytes is larger than the limit of %llu bytes",
                   (unsigned long long)r->size, (unsigned long long)lim->max_file_size);
    int rc = store_check_space(st, r->size);
    if (rc == -ENOSPC)
        return err(e, 507, "not enough free space on the server for %llu bytes",
                   (unsigned long long)r->size);
    if (rc < 0) return err(e, 500, "cannot check free space: %s", strerror(-rc));
    store_new_id(u->id);
    int fd = store_create_part(st, u->id);
    if (fd < 0) {
        log_error("upload %s: cannot create spool file: %s", u->id, strerror(-fd));
        return err(e, fd == -ENOSPC ? 507 : 500, "cannot create the spool file");
    }
    /* The one writer's lock (see resume.c): new, so nobody else holds it. */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int rfd = store_open_part(st, u->id, O_RDONLY);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0 || rfd < 0 || !md ||
        EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        if (rfd >= 0) close(rfd);
        close(fd);
        store_discard_part(st, u->id);
        return err(e, 500, "cannot start the upload");
    }
    u->fd = fd;
    u->rfd = rfd;
    u->md = md;
    u->hashed = 0;
    upload_set_filename(u, r->filename, r->filename_len);
    u->size = r->size;
    u->received = 0;
    u->has_want = r->has_sha256;
    memcpy(u->want, r->sha256, sizeof u->want);
    u->verdict = u->scanned = VERDICT_NONE;
    u->stored[0] = u->placed[0] = u->virus[0] = u->reason[0] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &u->started);
    u->created = (int64_t)time(NULL);
    u->token_expiry = r->token_expiry;
    u->durable = 0;
    u->steps = 0;
    u->resumed = false;
    u->phase = UPLOAD_RECEIVING;
    /* Not fsynced: until bytes are made durable there is nothing to lose,
     * and a record lost with the machine reads as an unknown upload. */
    if (upload_save_record(u, st, false) < 0) {
        upload_release(u);
        store_discard_part(st, u->id);
        return err(e, 500, "cannot record the upload in the spool");
    }
    return 0;
}

void upload_set_filename(struct upload *u, const char *name, size_t len)
{
    memcpy(u->filename, name, len);
    u->filename[len] = '\0';
    u->filename_len = len;
    size_t used;
    size_t ll = log_escape(u->logname, UPLOAD_LOGNAME_MAX - 3, name, len, &used);
    if (used < len) {
        memcpy(u->logname + ll, "...", 3);
        ll += 3;
    }
    u->logname[ll] = '\0';
}

void upload_to_record(const struct upload *u, struct record *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", u->id);
    r->filename_len = u->filename_len;
    memcpy(r->filename, u->filename, r->filename_len);
    r->size = u->size;
    r->has_want = u->has_want;
    memcpy(r->want, u->want, 32);
    r->created = u->created;
    r->token_expiry = u->token_expiry;
    snprintf(r->boot, sizeof r->boot, "%s", record_boot_id());
    r->durable = u->durable;
    r->steps = u->steps;
    if (u->steps & RECORD_HASHED) memcpy(r->digest, u->digest, 32);
    if (u->steps & RECORD_SCANNED) r->verdict = (int)u->scanned;
    if (r->verdict == RV_INFECTED) snprintf(r->virus, sizeof r->virus, "%s", u->virus);
    snprintf(r->reason, sizeof r->reason, "%s", u->reason);
    snprintf(r->stored, sizeof r->stored, "%s", u->placed);
}

int upload_save_record(const struct upload *u, struct store *st, bool sync)
{
    static _Thread_local struct record r; /* 4 KiB of filename: not on the stack */
    upload_to_record(u, &r);
    int rc = record_save(st->spool_fd, &r, sync);
    if (rc < 0)
        log_error("upload %s: cannot write its record in the spool: %s", u->id, strerror(-rc));
    return rc;
}

int upload_checkpoint(struct upload *u, struct store *st, uint64_t upto)
{
    if (upto < u->durable + UPLOAD_CHECKPOINT) return 0;
    if (fdatasync(u->fd) < 0) {
        log_error("upload %s: fdatasync of the spool file failed: %s", u->id, strerror(errno));
        return -1;
    }
    u->durable = upto;
    return upload_save_record(u, st, true) < 0 ? -1 : 0;
}

int upload_write(struct upload *u, const void *buf, size_t len, struct upload_error *e)
{
    if (u->phase != UPLOAD_RECEIVING) return err(e, 400, "data outside an upload");
    if (len > upload_remaining(u))
        return err(e, 400, "more data than the announced size of %llu bytes",
                   (unsigned long long)u->size);
    const char *p = buf;
    size_t left = len;
    while (left) {
        ssize_t n = write(u->fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int en = errno;
            log_error("upload %s: write to spool failed at byte %llu: %s", u->id,
                      (unsigned long long)u->received, strerror(en));
            return err(e, en == ENOSPC || en == EDQUOT ? 507 : 500,
                       en == ENOSPC || en == EDQUOT ? "server disk is full"
                                                    : "cannot write the spool file");
        }
        p += n;
        left -= (size_t)n;
    }
    u->received += len;
    return 0;
}

int upload_splice(struct upload *u, int pipe_rd, size_t len, struct upload_error *e)
{
    if (u->phase != UPLOAD_RECEIVING) return err(e, 400, "data outside an upload");
    if (len > upload_remaining(u))
        return err(e, 400, "more data than the announced size of %llu bytes",
                   (unsigned long long)u->size);
    size_t left = len;
    while (left) {
        ssize_t n = splice(pipe_rd, NULL, u->fd, NULL, left, SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int en = n < 0 ? errno : EIO;
            log_error("upload %s: write to spool failed at byte %llu: %s", u->id,
                      (unsigned long long)(u->received + (len - left)), strerror(en));
            return err(e, en == ENOSPC || en == EDQUOT ? 507 : 500,
                       en == ENOSPC || en == EDQUOT ? "server disk is full"
                                                    : "cannot write the spool file");
        }
        left -= (size_t)n;
        u->received += (uint64_t)n;
    }
    return 0;
}

int upload_hash(struct upload *u, uint64_t upto)
{
    /* One buffer per job thread, kept for the thread's life. */
    static _Thread_local unsigned char *buf;
    enum { BUF = 1 << 20 };
    if (!buf && !(buf = malloc(BUF))) return -1;
    while (u->hashed < upto) {
        size_t want = upto - u->hashed < BUF ? (size_t)(upto - u->hashed) : BUF;
        ssize_t n = pread(u->rfd, buf, want, (off_t)u->hashed);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        if (EVP_DigestUpdate(u->md, buf, (size_t)n) != 1) {
            log_error("upload %s: SHA-256 update failed", u->id);
            errno = EIO;
            return -1;
        }
        u->hashed += (uint64_t)n;
    }
    return 0;
}

/* A finishing step failed: verdict error, the file stays in the spool, and
 * the record says which step to redo when the client asks again. */
static void step_failed(struct upload *u, struct store *st, const char *reason)
{
    u->verdict = VERDICT_ERROR;
    if (reason != u->reason) snprintf(u->reason, sizeof u->reason, "%s", reason);
    upload_save_record(u, st, true);
}

/* Step 1: finishes the checksum and compares it with the client's. 0, 1 if
 * the step failed (verdict error), or -1 with e (422: the upload ends). */
static int check_hash(struct upload *u, struct store *st, struct upload_error *e)
{
    unsigned int dl = 0;
    if (upload_hash(u, u->size) < 0 || EVP_DigestFinal_ex(u->md, u->digest, &dl) != 1) {
        log_error("upload %s: cannot hash the spool file: %s; kept in the spool", u->id,
                  strerror(errno));
        step_failed(u, st, "cannot read the spool file back");
        return 1;
    }
    EVP_MD_CTX_free(u->md);
    u->md = NULL;
    if (u->has_want && memcmp(u->want, u->digest, 32) != 0) {
        char got[65];
        upload_hex(u->digest, 32, got);
        log_warn("upload %s (%s): checksum mismatch, received sha256 %s; discarded", u->id,
                 u->logname, got);
        store_discard_part(st, u->id);
        record_remove(st->spool_fd, u->id);
        return err(e, 422, "checksum mismatch: the received data has sha256 %s", got);
    }
    u->steps |= RECORD_RECEIVED | RECORD_HASHED;
    return 0;
}

/* Step 2: the data on disk, recorded with the digest. 0 or 1 (failed). */
static int sync_data(struct upload *u, struct store *st)
{
    if (fsync(u->fd) < 0) {
        log_error("upload %s: fsync failed: %s; kept in the spool", u->id, strerror(errno));
        step_failed(u, st, "cannot sync to disk");
        return 1;
    }
    u->steps |= RECORD_SYNCED;
    u->durable = u->size;
    if (upload_save_record(u, st, true) < 0) {
        step_failed(u, st, "cannot record the upload");
        return 1;
    }
    return 0;
}

/* Step 3: the verdict. Recorded with the placement that follows it: a crash
 * between the two scans again, which changes nothing outside. 0 or 1. */
static int scan(struct upload *u, struct store *st, const struct upload_policy *p)
{
    u->virus[0] = '\0';
    if (!p->scan) {
        u->verdict = VERDICT_UNSCANNED;
    } else {
        /* The spool fd is write-only: the scanner gets the read-only one. */
        u->verdict = p->scan(p->scan_ctx, u->rfd, u->id, u->virus, sizeof u->virus, u->reason,
                             sizeof u->reason);
    }
    u->scanned = u->verdict;
    if (u->verdict == VERDICT_ERROR) {
        if (!p->scan_fail_accept) {
            log_error("upload %s (%s): scan failed (%s); kept in the spool as %s.part", u->id,
                      u->logname, u->reason, u->id);
            step_failed(u, st, u->reason);
            return 1;
        }
        log_error("upload %s (%s): scan failed (%s) and scan_fail is accept: ACCEPTING "
                  "UNSCANNED FILE",
                  u->id, u->logname, u->reason);
    } else {
        u->reason[0] = '\0';
    }
    u->steps |= RECORD_SCANNED;
    return 0;
}

/* Step 4: placement by verdict, recorded before the spool entry goes, so a
 * crash anywhere in it never places the file twice. 0 or 1. */
static int place(struct upload *u, struct store *st, const struct upload_policy *p)
{
    const char *where = "accept_dir";
    int rc = 0;
    bool linked = true;
    u->placed[0] = '\0';
    u->verdict = u->scanned;
    if (u->scanned == VERDICT_INFECTED && p->infected_delete) {
        where = "deletion";
    } else if (u->scanned == VERDICT_INFECTED) {
        where = "quarantine_dir";
        char prefix[STORE_ID_LEN + 2];
        snprintf(prefix, sizeof prefix, "%s-", u->id);
        rc = store_link_part(st, u->id, st->quarantine_fd, prefix, u->name, u->placed, &linked);
    } else {
        rc = store_link_part(st, u->id, st->accept_fd, "", u->name, u->placed, &linked);
    }
    if (rc < 0 && !linked) {
        log_error("upload %s (%s): cannot move it into %s: %s; kept in the spool", u->id,
                  u->logname, where, strerror(-rc));
        u->placed[0] = '\0';
        step_failed(u, st, "cannot store the file");
        return 1;
    }
    if (rc < 0) {
        /* Linked, but its directory could not be made durable: the file is
         * there now, and a crash could lose the name. Not durable: not
         * acknowledged; a re-query finds the link and syncs again. */
        log_error("upload %s (%s): placed in %s as %s, but syncing that directory failed: %s; "
                  "answering error until a retry succeeds",
                  u->id, u->logname, where, u->placed, strerror(-rc));
        u->placed[0] = '\0';
        step_failed(u, st, "cannot sync the accept directory");
        return 1;
    }
    u->steps |= RECORD_PLACED;
    if (upload_save_record(u, st, true) < 0) {
        /* The link stays; a re-query finds it (same inode) and records it. */
        u->steps &= ~(unsigned)RECORD_PLACED;
        step_failed(u, st, "cannot record the placement");
        return 1;
    }
    rc = store_discard_part(st, u->id);
    if (rc < 0 && rc != -ENOENT)
        log_warn("upload %s: placed, but removing its spool entry failed: %s (the sweep will)",
                 u->id, strerror(-rc));
    return 0;
}

int upload_finalize(struct upload *u, struct store *st, const struct upload_policy *p,
                    struct upload_error *e)
{
    int rc = 0;
    u->reason[0] = '\0';
    if (!(u->steps & RECORD_HASHED)) rc = check_hash(u, st, e);
    if (rc < 0) {
        upload_release(u);
        u->phase = UPLOAD_DONE;
        return -1;
    }
    if (rc == 0 && !(u->steps & RECORD_SYNCED)) rc = sync_data(u, st);
    if (rc == 0 && !(u->steps & RECORD_SCANNED)) rc = scan(u, st, p);
    if (rc == 0 && !(u->steps & RECORD_PLACED)) rc = place(u, st, p);
    if (rc == 0) u->verdict = u->scanned;
    bool accepted = rc == 0 && u->verdict != VERDICT_INFECTED;
    snprintf(u->stored, sizeof u->stored, "%s", accepted ? u->placed : "");
    if (rc == 0) {
        char hex[65];
        upload_hex(u->digest, 32, hex);
        if (u->verdict == VERDICT_INFECTED && !u->placed[0])
            log_warn("upload %s (%s): infected with %s; deleted", u->id, u->logname, u->virus);
        else if (u->verdict == VERDICT_INFECTED)
            log_warn("upload %s (%s): infected with %s; quarantined as %s-%s", u->id, u->logname,
                     u->virus, u->id, u->placed);
        else
            log_info("upload %s (%s): %llu bytes, sha256 %s, %s; stored as %s", u->id, u->logname,
                     (unsigned long long)u->size, hex, upload_verdict_name(u->verdict), u->stored);
    }
    upload_release(u);
    u->phase = UPLOAD_DONE;
    return 0;
}

void upload_abort(struct upload *u)
{
    if (u->phase == UPLOAD_RECEIVING)
        log_info("upload %s (%s): interrupted after %llu of %llu bytes; kept in the spool", u->id,
                 u->logname, (unsigned long long)u->received, (unsigned long long)u->size);
    upload_release(u);
}

void upload_release(struct upload *u)
{
    if (u->fd >= 0) close(u->fd);
    if (u->rfd >= 0) close(u->rfd);
    u->fd = u->rfd = -1;
    if (u->md) EVP_MD_CTX_free(u->md);
    u->md = NULL;
    u->phase = UPLOAD_IDLE;
}

const char *upload_verdict_name(enum upload_verdict v)
{
    switch (v) {
    case VERDICT_CLEAN:
        return "clean";
    case VERDICT_INFECTED:
        return "infected";
    case VERDICT_UNSCANNED:
        return "unscanned";
    default:
        return "error";
    }
}

int upload_json_add(struct cJSON *o, const char *key, const void *s, size_t n, bool *replaced)
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

char *upload_msg_ready(const struct upload *u, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = cJSON_AddStringToObject(o, "type", "READY") &&
              cJSON_AddStringToObject(o, "id", u->id) &&
              cJSON_AddNumberToObject(o, "offset", (double)u->received);
    return print(o, ok, len);
}

char *upload_msg_status(const struct upload *u, size_t *len)
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
        ok =
            cJSON_AddStringToObject(o, "type", "STATUS") &&
            cJSON_AddStringToObject(o, "id", u->id) &&
            upload_json_add(o, "filename", u->filename, u->filename_len, NULL) == 0 &&
            (u->stored[0] ? upload_json_add(o, "stored_as", u->stored, strlen(u->stored), NULL) == 0
                          : cJSON_AddNullToObject(o, "stored_as") != NULL) &&
            cJSON_AddNumberToObject(o, "size", (double)u->size) &&
            cJSON_AddStringToObject(o, "sha256", hex) &&
            cJSON_AddStringToObject(o, "verdict", upload_verdict_name(u->verdict)) &&
            (u->verdict == VERDICT_INFECTED
                 ? upload_json_add(o, "virus", u->virus, strlen(u->virus), NULL) == 0
                 : cJSON_AddNullToObject(o, "virus") != NULL) &&
            upload_json_add(o, "status", status, sl, NULL) == 0;
    }
    free(status);
    return print(o, ok, len);
}

char *upload_msg_error(const struct upload_error *e, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = cJSON_AddStringToObject(o, "type", "ERROR") &&
              cJSON_AddNumberToObject(o, "code", e->code) &&
              upload_json_add(o, "message", e->message, strlen(e->message), NULL) == 0;
    return print(o, ok, len);
}
