/* config: directive table, value parsers and the file reader. Every directive
 * of intake.conf(5) is parsed and validated here, including those a later stage acts on. */
#define _GNU_SOURCE
#include "config.h"

#include "log.h"
#include "origin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <paths.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096
#define MAX_TOKENS 66

int config_parse_size(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s)) return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -EINVAL;
    unsigned shift = 0;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            shift = 10;
            break;
        case 'M':
            shift = 20;
            break;
        case 'G':
            shift = 30;
            break;
        default:
            return -EINVAL;
        }
        if (end[1]) return -EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift)) return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    if (!isdigit((unsigned char)*s)) return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -EINVAL;
    uint64_t mul;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mul / 4) return -EINVAL;
    *ms = v * mul;
    return 0;
}

static int parse_port(const char *p, char *out, size_t outlen)
{
    if (!*p || strlen(p) > 5) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    long v = strtol(p, NULL, 10);
    if (v < 1 || v > 65535) return -1;
    snprintf(out, outlen, "%ld", v);
    return 0;
}

int config_parse_listen(const char *s, struct listen_addr *out, const char **why)
{
    memset(out, 0, sizeof *out);
    if (strlen(s) >= sizeof out->text) {
        *why = "address too long";
        return -EINVAL;
    }
    snprintf(out->text, sizeof out->text, "%s", s);
    if (strncmp(s, "unix:", 5) == 0) {
        const char *p = s + 5;
        if (!*p) {
            *why = "empty unix socket path";
            return -EINVAL;
        }
        if (strlen(p) >= sizeof out->path) {
            *why = "unix socket path longer than 107 bytes";
            return -EINVAL;
        }
        out->is_unix = true;
        snprintf(out->path, sizeof out->path, "%s", p);
        return 0;
    }
    const char *colon;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            *why = "expected [v6]:port";
            return -EINVAL;
        }
        size_t hl = (size_t)(rb - s - 1);
        if (hl == 0 || hl >= sizeof out->host) {
            *why = "bad IPv6 address";
            return -EINVAL;
        }
        memcpy(out->host, s + 1, hl);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            *why = "expected host:port, [v6]:port or unix:/path";
            return -EINVAL;
        }
        size_t hl = (size_t)(colon - s);
        if (hl >= sizeof out->host || memchr(s, ':', hl)) {
            *why = "bad host (IPv6 addresses go in brackets)";
            return -EINVAL;
        }
        memcpy(out->host, s, hl);
        if (strcmp(out->host, "*") == 0) out->host[0] = '\0';
    }
    if (parse_port(colon + 1, out->port, sizeof out->port) < 0) {
        *why = "bad port (1-65535)";
        return -EINVAL;
    }
    return 0;
}

int config_parse_scanner(const char *s, const char *base_dir, struct scanner_addr *out,
                         const char **why)
{
    memset(out, 0, sizeof *out);
    if (strncmp(s, "unix:", 5) == 0) {
        const char *p = s + 5;
        if (!*p) {
            *why = "empty unix socket path";
            return -EINVAL;
        }
        int n = p[0] == '/' || !base_dir
                    ? snprintf(out->path, sizeof out->path, "%s", p)
                    : snprintf(out->path, sizeof out->path, "%s/%s", base_dir, p);
        if (n < 0 || (size_t)n >= sizeof out->path) {
            *why = "unix socket path longer than 107 bytes once absolute";
            return -EINVAL;
        }
        snprintf(out->text, sizeof out->text, "unix:%s", out->path);
        return 0;
    }
    if (strncmp(s, "tcp:", 4) == 0) {
        struct listen_addr a;
        if (config_parse_listen(s + 4, &a, why) < 0) return -EINVAL;
        if (a.is_unix || !a.host[0] || strcmp(s + 4, "*") == 0 || s[4] == '*') {
            *why = "expected tcp:HOST:PORT with a host (tcp:[v6]:PORT for IPv6)";
            return -EINVAL;
        }
        if (strlen(a.host) >= sizeof out->host) {
            *why = "host name too long";
            return -EINVAL;
        }
        for (const char *h = a.host; *h; h++)
            if (!isalnum((unsigned char)*h) && !strchr(".-_:%", *h)) {
                *why = "bad character in host";
                return -EINVAL;
            }
        out->tcp = true;
        snprintf(out->host, sizeof out->host, "%s", a.host);
        snprintf(out->port, sizeof out->port, "%s", a.port);
        snprintf(out->text, sizeof out->text, strchr(a.host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s",
                 out->host, out->port);
        return 0;
    }
    *why = "expected unix:/path or tcp:HOST:PORT";
    return -EINVAL;
}

int config_tokenize(const char *line, size_t len, char *scratch, size_t scratch_len, char **tokens,
                    int max, const char **why)
{
    size_t i = 0, o = 0;
    int n = 0;
    for (;;) {
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i >= len || line[i] == '#') break;
        if (n == max) {
            *why = "too many values";
            return -1;
        }
        tokens[n++] = scratch + o;
        if (line[i] == '"') {
            i++;
            while (i < len && line[i] != '"') {
                if (o + 1 >= scratch_len) goto toolong;
                scratch[o++] = line[i++];
            }
            if (i >= len) {
                *why = "unterminated quote";
                return -1;
            }
            i++;
            if (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '#') {
                *why = "text after closing quote";
                return -1;
            }
        } else {
            while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' &&
                   line[i] != '#') {
                if (line[i] == '"') {
                    *why = "quote inside a value";
                    return -1;
                }
                if ((unsigned char)line[i] < 0x20) {
                    *why = "control character";
                    return -1;
                }
                if (o + 1 >= scratch_len) goto toolong;
                scratch[o++] = line[i++];
            }
        }
        if (o + 1 >= scratch_len) goto toolong;
        scratch[o++] = '\0';
    }
    return n;
toolong:
    *why = "line too long";
    return -1;
}

/* --- the secret file -------------------------------------------------------- */

void config_secrets_free(struct config_secrets *s)
{
    if (s->buf) {
        explicit_bzero(s->buf, s->buf_len);
        free(s->buf);
    }
    memset(s, 0, sizeof *s);
}

static int read_all(int fd, unsigned char *buf, size_t cap, size_t *len)
{
    *len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + *len, cap - *len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return 0;
        *len += (size_t)r;
        if (*len == cap) return -EFBIG;
    }
}

int config_read_secrets(const char *path, struct config_secrets *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        return -1;
    }
    /* Checked on the open file, so what is checked is what is read. */
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) < 0) {
        snprintf(why, whylen, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, whylen,
                 "group or others may access it (mode %04o); allow only its owner "
                 "(chmod 600), as sshd requires of private keys",
                 (unsigned)(st.st_mode & 07777));
        goto out;
    }
    /* One byte more than allowed, to tell "at the limit" from "over it". */
    out->buf = malloc(CONFIG_SECRET_FILE_MAX + 1);
    if (!out->buf) abort();
    int r = read_all(fd, out->buf, CONFIG_SECRET_FILE_MAX + 1, &out->buf_len);
    if (r == -EFBIG) {
        snprintf(why, whylen, "larger than %d KiB", CONFIG_SECRET_FILE_MAX / 1024);
        goto out;
    }
    if (r < 0) {
        snprintf(why, whylen, "read error: %s", strerror(-r));
        goto out;
    }
    size_t pos = 0;
    for (int line = 1; pos < out->buf_len; line++) {
        const unsigned char *p = out->buf + pos;
        const unsigned char *nl = memchr(p, '\n', out->buf_len - pos);
        size_t len = nl ? (size_t)(nl - p) : out->buf_len - pos;
        pos += len + (nl ? 1 : 0);
        if (len && p[len - 1] == '\r') len--;
        if (len == 0) continue;
        if (len < TOKEN_SECRET_MIN) {
            snprintf(why, whylen, "line %d: a secret of %zu bytes; each needs at least %d", line,
                     len, TOKEN_SECRET_MIN);
            goto out;
        }
        if (out->n == CONFIG_MAX_SECRETS) {
            snprintf(why, whylen, "more than %d secrets", CONFIG_MAX_SECRETS);
            goto out;
        }
        out->keys[out->n].bytes = p;
        out->keys[out->n].len = len;
        out->n++;
    }
    if (out->n == 0) {
        snprintf(why, whylen, "holds no secret (one per line, at least %d bytes each)",
                 TOKEN_SECRET_MIN);
        goto out;
    }
    rc = 0;
out:
    close(fd);
    if (rc < 0) config_secrets_free(out);
    return rc;
}

/* --- directives ------------------------------------------------------------ */

struct ctx {
    struct config *c;
    const char *base_dir;
    const char *where; /* "file:line" */
    char *err;
    size_t errlen;
    unsigned seen[64];
    bool from_override;
    bool tcp_off;           /* "listen_tcp off" was given */
    char tls_where[320];    /* where the first "tls" listener was declared */
    char secret_where[320]; /* where auth_secret_file was set */
    char accept_off_where[320]; /* where "accept_dir off" was said */
    char at[64][320];           /* where each directive was last set */
};

static int fail(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *x, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errlen, "%s: %s", x->where, msg);
    return -1;
}

static char *abs_path(struct ctx *x, const char *p)
{
    char *r;
    if (p[0] == '/' || !x->base_dir)
        r = strdup(p);
    else if (asprintf(&r, "%s%s%s", x->base_dir, strcmp(x->base_dir, "/") ? "/" : "", p) < 0)
        r = NULL;
    if (!r) abort();
    return r;
}

static void set_str(char **slot, char *v)
{
    free(*slot);
    *slot = v;
}

typedef int (*handler_fn)(struct ctx *, char **argv, int argc);

static int want_one(struct ctx *x, char **argv, int argc)
{
    if (argc != 1) return fail(x, "\"%s\" takes exactly one value", argv[-1]);
    return 0;
}

static int h_workers(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (strcmp(v[0], "auto") == 0) {
        x->c->workers = 0;
        return 0;
    }
    char *end;
    long w = strtol(v[0], &end, 10);
    if (*end || !isdigit((unsigned char)v[0][0]) || w < 1 || w > 512)
        return fail(x, "invalid workers \"%s\" (auto or 1-512)", v[0]);
    x->c->workers = (int)w;
    return 0;
}

static int add_listen(struct ctx *x, enum listen_kind kind, char **v, int n)
{
    if (n < 1 || n > 2) return fail(x, "\"%s\" takes ADDR [tls]", v[-1]);
    if (n == 2 && strcmp(v[1], "tls") != 0)
        return fail(x, "unexpected \"%s\" (only \"tls\" may follow the address)", v[1]);
    struct config *c = x->c;
    if (c->n_listen == CONFIG_MAX_LISTEN)
        return fail(x, "too many listeners (at most %d)", CONFIG_MAX_LISTEN);
    struct listen_addr a;
    const char *why = "";
    if (config_parse_listen(v[0], &a, &why) < 0)
        return fail(x, "invalid address \"%s\": %s", v[0], why);
    a.kind = kind;
    a.tls = n == 2;
    if (a.tls && !x->tls_where[0]) snprintf(x->tls_where, sizeof x->tls_where, "%s", x->where);
    if (a.is_unix && a.path[0] != '/') {
        char *p = abs_path(x, a.path);
        if (strlen(p) >= sizeof a.path) {
            free(p);
            return fail(x, "unix socket path \"%s\" is too long once made absolute", v[0]);
        }
        snprintf(a.path, sizeof a.path, "%s", p);
        free(p);
    }
    for (int i = 0; i < c->n_listen; i++) {
        struct listen_addr *o = &c->listen[i];
        bool same = a.is_unix ? (o->is_unix && strcmp(o->path, a.path) == 0)
                              : (!o->is_unix && strcmp(o->host, a.host) == 0 &&
                                 strcmp(o->port, a.port) == 0);
        if (same) return fail(x, "address \"%s\" is already used by another listener", v[0]);
    }
    snprintf(c->listen_at[c->n_listen], sizeof c->listen_at[0], "%s", x->where);
    c->listen[c->n_listen++] = a;
    return 0;
}

/* A repeatable directive set by -o replaces everything the file said. */
static void drop_listen(struct config *c, enum listen_kind kind)
{
    int j = 0;
    for (int i = 0; i < c->n_listen; i++)
        if (c->listen[i].kind != kind) {
            memmove(c->listen_at[j], c->listen_at[i], sizeof c->listen_at[0]);
            c->listen[j++] = c->listen[i];
        }
    c->n_listen = j;
}

static int h_listen_ws(struct ctx *x, char **v, int n)
{
    return add_listen(x, LISTEN_WS, v, n);
}

static int h_listen_tcp(struct ctx *x, char **v, int n)
{
    if (n == 1 && strcmp(v[0], "off") == 0) {
        drop_listen(x->c, LISTEN_TCP);
        x->tcp_off = true;
        return 0;
    }
    return add_listen(x, LISTEN_TCP, v, n);
}

#define PATH_HANDLER(name, field)                                                                  \
    static int h_##name(struct ctx *x, char **v, int n)                                            \
    {                                                                                              \
        if (want_one(x, v, n)) return -1;                                                          \
        if (!*v[0]) return fail(x, "empty path");                                                  \
        set_str(&x->c->field, abs_path(x, v[0]));                                                  \
        return 0;                                                                                  \
    }
PATH_HANDLER(tls_certificate, tls_certificate)
PATH_HANDLER(tls_certificate_key, tls_certificate_key)
PATH_HANDLER(pid_file, pid_file)
PATH_HANDLER(spool_dir, spool_dir)
static int h_accept_dir(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (!*v[0]) return fail(x, "empty path");
    set_str(&x->c->accept_dir, strcmp(v[0], "off") == 0 ? NULL : abs_path(x, v[0]));
    if (!x->c->accept_dir) snprintf(x->accept_off_where, sizeof x->accept_off_where, "%s", x->where);
    return 0;
}
PATH_HANDLER(quarantine_dir, quarantine_dir)
static int h_scanner_socket(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (!*v[0]) return fail(x, "empty path");
    set_str(&x->c->scanner_socket, abs_path(x, v[0]));
    /* sun_path holds 107 bytes, and the scanner binds "<path>.<pid>" first. */
    if (strlen(x->c->scanner_socket) > 96)
        return fail(x, "scanner_socket path is longer than 96 bytes once absolute: \"%s\"",
                    x->c->scanner_socket);
    return 0;
}
PATH_HANDLER(signature_dir, signature_dir)
static int h_auth_secret_file(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (!*v[0]) return fail(x, "empty path");
    set_str(&x->c->auth_secret_file, abs_path(x, v[0]));
    snprintf(x->secret_where, sizeof x->secret_where, "%s", x->where);
    return 0;
}

static int choose(struct ctx *x, char **v, int n, const char *a, const char *b, int *out);

static int parse_bool(struct ctx *x, char **v, int n, bool *out)
{
    int i = 0;
    if (choose(x, v, n, "off", "on", &i) < 0) return -1;
    *out = i == 1;
    return 0;
}

static int h_daemon(struct ctx *x, char **v, int n)
{
    return parse_bool(x, v, n, &x->c->daemon);
}

static int h_ws_echo(struct ctx *x, char **v, int n)
{
    return parse_bool(x, v, n, &x->c->ws_echo);
}

static int h_user(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (!*v[0] || strlen(v[0]) > 32) return fail(x, "invalid user \"%s\"", v[0]);
    set_str(&x->c->user, strdup(v[0]));
    return 0;
}

static int h_error_log(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (strcmp(v[0], "stderr") == 0 || strcmp(v[0], "syslog") == 0)
        set_str(&x->c->error_log, strdup(v[0]));
    else
        set_str(&x->c->error_log, abs_path(x, v[0]));
    return 0;
}

static int h_access_log(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    set_str(&x->c->access_log, strcmp(v[0], "off") == 0 ? NULL : abs_path(x, v[0]));
    return 0;
}

static int h_log_level(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    enum log_level l;
    if (log_level_parse(v[0], &l) < 0)
        return fail(x, "invalid log_level \"%s\" (error, warn, info or debug)", v[0]);
    x->c->log_level = (int)l;
    return 0;
}

#define SIZE_HANDLER(name)                                                                         \
    static int h_##name(struct ctx *x, char **v, int n)                                            \
    {                                                                                              \
        if (want_one(x, v, n)) return -1;                                                          \
        if (config_parse_size(v[0], &x->c->name) < 0)                                              \
            return fail(x, "invalid size \"%s\" for " #name " (a number with K, M or G)", v[0]);   \
        return 0;                                                                                  \
    }
SIZE_HANDLER(min_free_space)

static int h_max_file_size(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    if (config_parse_size(v[0], &x->c->max_file_size) < 0)
        return fail(x, "invalid size \"%s\" for max_file_size (a number with K, M or G)", v[0]);
    if (x->c->max_file_size == 0) return fail(x, "max_file_size must be more than 0");
    return 0;
}

static int at_least(struct ctx *x, const char *name, uint64_t ms, uint64_t min_ms)
{
    if (ms < min_ms)
        return fail(x, "%s must be at least %llu ms", name, (unsigned long long)min_ms);
    return 0;
}

#define DURATION_HANDLER(name, min_ms)                                                             \
    static int h_##name(struct ctx *x, char **v, int n)                                            \
    {                                                                                              \
        if (want_one(x, v, n)) return -1;                                                          \
        if (config_parse_duration(v[0], &x->c->name##_ms) < 0)                                     \
            return fail(x, "invalid duration \"%s\" for " #name " (a number with ms, s, m or h)",  \
                        v[0]);                                                                     \
        return at_least(x, #name, x->c->name##_ms, (min_ms));                                      \
    }
DURATION_HANDLER(resume_timeout, 1000)
DURATION_HANDLER(scan_timeout, 100)
DURATION_HANDLER(header_timeout, 100)
DURATION_HANDLER(idle_timeout, 100)
DURATION_HANDLER(shutdown_timeout, 0)
DURATION_HANDLER(hook_timeout, 100)

static void free_argv(char ***argv, int *n)
{
    for (int i = 0; *argv && i < *n; i++)
        free((*argv)[i]);
    free(*argv);
    *argv = NULL;
    *n = 0;
}

static int h_accept_hook(struct ctx *x, char **v, int n)
{
    struct config *c = x->c;
    if (n < 1 || !*v[0]) return fail(x, "accept_hook needs a program (and its arguments)");
    free_argv(&c->accept_hook, &c->n_accept_hook);
    if (n == 1 && strcmp(v[0], "off") == 0) return 0;
    c->accept_hook = calloc((size_t)n + 1, sizeof *c->accept_hook);
    if (!c->accept_hook) abort();
    /* The program as written: a bare name is looked up in PATH, a path with
     * a slash is made absolute (workers run from the start directory). */
    c->accept_hook[0] = strchr(v[0], '/') ? abs_path(x, v[0]) : strdup(v[0]);
    for (int i = 1; i < n; i++)
        c->accept_hook[i] = strdup(v[i]);
    c->n_accept_hook = n;
    for (int i = 0; i < n; i++)
        if (!c->accept_hook[i]) abort();
    return 0;
}

/* "nats://host:port[,nats://host:port...] SUBJECT", or every server tls:// */
static int h_publish(struct ctx *x, char **v, int n)
{
    struct config *c = x->c;
    if (n == 1 && strcmp(v[0], "off") == 0) {
        set_str(&c->publish_urls, NULL);
        set_str(&c->publish_subject, NULL);
        return 0;
    }
    if (n != 2) return fail(x, "publish takes a server list and a subject: publish nats://HOST:PORT[,...] SUBJECT");
    char *list = strdup(v[0]);
    if (!list) abort();
    int count = 0, tls = 0;
    for (char *save = NULL, *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        const char *hp = strncmp(u, "nats://", 7) == 0 ? u + 7 : strncmp(u, "tls://", 6) == 0 ? u + 6 : NULL;
        tls += hp == u + 6;
        const char *colon = hp ? strrchr(hp, ':') : NULL;
        char port[8];
        if (!hp || !colon || colon == hp || parse_port(colon + 1, port, sizeof port) < 0) {
            int rc = fail(x, "invalid NATS server \"%s\" in publish (nats://HOST:PORT)", u);
            free(list);
            return rc;
        }
        count++;
    }
    free(list);
    if (!count) return fail(x, "publish needs at least one server (nats://HOST:PORT)");
    /* tls:// makes TLS a requirement for the whole connection, which moves
     * between the servers of the list. */
    if (tls && tls != count)
        return fail(x, "publish mixes tls:// and nats:// servers: make every one tls:// (TLS "
                       "required) or every one nats://");
    const char *s = v[1];
    bool ok = *s && s[0] != '.' && s[strlen(s) - 1] != '.' && !strstr(s, "..");
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '*' || *p == '>') ok = false;
    if (!ok)
        return fail(x, "invalid publish subject \"%s\" (dot-separated tokens, no spaces or "
                       "wildcards)", s);
    set_str(&c->publish_urls, strdup(v[0]));
    set_str(&c->publish_subject, strdup(s));
    return 0;
}

static int h_scanner(struct ctx *x, char **v, int n)
{
    struct config *c = x->c;
    if (n < 1) return fail(x, "\"scanner\" needs a value");
    if (strcmp(v[0], "builtin") == 0 || strcmp(v[0], "off") == 0) {
        if (n != 1) return fail(x, "scanner %s takes no addresses", v[0]);
        c->scanner = v[0][0] == 'b' ? SCANNER_BUILTIN : SCANNER_OFF;
        c->n_scanners = 0;
        return 0;
    }
    if (n > CONFIG_MAX_SCANNERS)
        return fail(x, "at most %d scanner addresses", CONFIG_MAX_SCANNERS);
    for (int i = 0; i < n; i++) {
        const char *why = "";
        if (config_parse_scanner(v[i], x->base_dir, &c->scanners[i], &why) < 0)
            return fail(x, "invalid scanner \"%.200s\": %s (builtin, off, or addresses "
                           "unix:/path and tcp:HOST:PORT)",
                        v[i], why);
        for (int j = 0; j < i; j++)
            if (strcmp(c->scanners[j].text, c->scanners[i].text) == 0)
                return fail(x, "scanner address %s is given twice", c->scanners[i].text);
    }
    c->scanner = SCANNER_POOL;
    c->n_scanners = n;
    return 0;
}

static int h_node_name(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    size_t len = strlen(v[0]);
    if (len == 0 || len > 64) return fail(x, "node_name must have 1 to 64 bytes");
    for (const char *p = v[0]; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-_:", *p))
            return fail(x, "node_name may hold only letters, digits and . - _ :");
    set_str(&x->c->node_name, strdup(v[0]));
    if (!x->c->node_name) abort();
    return 0;
}

/* One value out of two words: the first maps to 0, the second to 1. */
static int choose(struct ctx *x, char **v, int n, const char *a, const char *b, int *out)
{
    if (want_one(x, v, n)) return -1;
    if (strcmp(v[0], a) == 0)
        *out = 0;
    else if (strcmp(v[0], b) == 0)
        *out = 1;
    else
        return fail(x, "invalid %s \"%s\" (%s or %s)", v[-1], v[0], a, b);
    return 0;
}

static int h_scan_fail(struct ctx *x, char **v, int n)
{
    int i = 0;
    if (choose(x, v, n, "reject", "accept", &i) < 0) return -1;
    x->c->scan_fail = i ? SCAN_FAIL_ACCEPT : SCAN_FAIL_REJECT;
    return 0;
}

static int h_on_infected(struct ctx *x, char **v, int n)
{
    int i = 0;
    if (choose(x, v, n, "quarantine", "delete", &i) < 0) return -1;
    x->c->on_infected = i ? ON_INFECTED_DELETE : ON_INFECTED_QUARANTINE;
    return 0;
}

static int h_max_connections(struct ctx *x, char **v, int n)
{
    if (want_one(x, v, n)) return -1;
    char *end;
    long m = strtol(v[0], &end, 10);
    if (*end || !isdigit((unsigned char)v[0][0]) || m < 1 || m > 1000000)
        return fail(x, "invalid max_connections \"%s\" (1-1000000)", v[0]);
    x->c->max_connections = (int)m;
    return 0;
}

static void free_list(char **list, int *n)
{
    for (int i = 0; i < *n; i++)
        free(list[i]);
    *n = 0;
}

static int h_allowed_origins(struct ctx *x, char **v, int n)
{
    struct config *c = x->c;
    if (n < 1) return fail(x, "allowed_origins needs at least one value");
    free_list(c->allowed_origins, &c->n_allowed_origins);
    c->allow_any_origin = c->allow_same_origin = false;
    for (int i = 0; i < n; i++) {
        struct origin o;
        if (strcmp(v[i], "*") == 0) {
            c->allow_any_origin = true;
            continue;
        }
        if (strcmp(v[i], "same") == 0) {
            c->allow_same_origin = true;
            continue;
        }
        if (strcmp(v[i], "null") != 0 && origin_parse(v[i], strlen(v[i]), &o) < 0)
            return fail(x,
                        "invalid origin \"%s\" (scheme://host[:port] and nothing after it, like "
                        "https://example.com; or same, *, null)",
                        v[i]);
        if (c->n_allowed_origins == CONFIG_MAX_LIST) return fail(x, "too many origins");
        c->allowed_origins[c->n_allowed_origins++] = strdup(v[i]);
    }
    return 0;
}

static int valid_proxy(const char *s)
{
    char buf[64];
    if (strlen(s) >= sizeof buf) return 0;
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    int max = strchr(buf, ':') ? 128 : 32;
    if (slash) {
        *slash = '\0';
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || bits < 0 || bits > max) return 0;
    }
    unsigned char addr[16];
    return inet_pton(max == 128 ? AF_INET6 : AF_INET, buf, addr) == 1;
}

static int h_trusted_proxies(struct ctx *x, char **v, int n)
{
    struct config *c = x->c;
    if (n < 1) return fail(x, "trusted_proxies needs at least one value (or none)");
    free_list(c->trusted_proxies, &c->n_trusted_proxies);
    if (n == 1 && strcmp(v[0], "none") == 0) return 0;
    for (int i = 0; i < n; i++) {
        if (!valid_proxy(v[i]))
            return fail(x, "invalid proxy address \"%s\" (an IP address or CIDR)", v[i]);
        if (c->n_trusted_proxies == CONFIG_MAX_LIST) return fail(x, "too many proxies");
        c->trusted_proxies[c->n_trusted_proxies++] = strdup(v[i]);
    }
    return 0;
}

struct directive {
    const char *name;
    handler_fn fn;
    bool repeatable;
};

static const struct directive directives[] = {
    {"workers", h_workers, false},
    {"listen_ws", h_listen_ws, true},
    {"listen_tcp", h_listen_tcp, true},
    {"tls_certificate", h_tls_certificate, false},
    {"tls_certificate_key", h_tls_certificate_key, false},
    {"user", h_user, false},
    {"daemon", h_daemon, false},
    {"pid_file", h_pid_file, false},
    {"error_log", h_error_log, false},
    {"log_level", h_log_level, false},
    {"access_log", h_access_log, false},
    {"spool_dir", h_spool_dir, false},
    {"accept_dir", h_accept_dir, false},
    {"quarantine_dir", h_quarantine_dir, false},
    {"max_file_size", h_max_file_size, false},
    {"min_free_space", h_min_free_space, false},
    {"resume_timeout", h_resume_timeout, false},
    {"scanner", h_scanner, false},
    {"scanner_socket", h_scanner_socket, false},
    {"signature_dir", h_signature_dir, false},
    {"scan_timeout", h_scan_timeout, false},
    {"scan_fail", h_scan_fail, false},
    {"on_infected", h_on_infected, false},
    {"max_connections", h_max_connections, false},
    {"header_timeout", h_header_timeout, false},
    {"idle_timeout", h_idle_timeout, false},
    {"shutdown_timeout", h_shutdown_timeout, false},
    {"allowed_origins", h_allowed_origins, false},
    {"trusted_proxies", h_trusted_proxies, false},
    {"auth_secret_file", h_auth_secret_file, false},
    {"ws_echo", h_ws_echo, false},
    {"accept_hook", h_accept_hook, false},
    {"hook_timeout", h_hook_timeout, false},
    {"publish", h_publish, false},
    {"node_name", h_node_name, false},
};
#define N_DIRECTIVES (sizeof directives / sizeof *directives)
_Static_assert(N_DIRECTIVES <= 64, "struct ctx keeps 64 entries per directive");

/* Where the directive was last set, or "" if it was not. */
static const char *set_at(const struct ctx *x, const char *name)
{
    for (unsigned i = 0; i < N_DIRECTIVES; i++)
        if (strcmp(directives[i].name, name) == 0) return x->at[i];
    return "";
}

/* Points x->where at the first of the directives that was set (errors
 * about how values relate name a line); the file if none was. */
static void where_first(struct ctx *x, const char *const *names, int n)
{
    x->where = x->c->file;
    for (int i = 0; i < n; i++)
        if (set_at(x, names[i])[0]) {
            x->where = set_at(x, names[i]);
            return;
        }
}

static int apply(struct ctx *x, char **tok, int n, unsigned override_seen[])
{
    for (unsigned i = 0; i < N_DIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        if (strcmp(tok[0], d->name) != 0) continue;
        if (!d->repeatable && x->seen[i] && !x->from_override)
            return fail(x, "\"%s\" is duplicate", d->name);
        if (x->from_override && d->repeatable && !override_seen[i]) {
            /* -o for a repeatable directive replaces the file's values. */
            if (strcmp(d->name, "listen_ws") == 0) drop_listen(x->c, LISTEN_WS);
            if (strcmp(d->name, "listen_tcp") == 0) drop_listen(x->c, LISTEN_TCP);
        }
        if (x->from_override) override_seen[i] = 1;
        x->seen[i]++;
        snprintf(x->at[i], sizeof x->at[i], "%s", x->where);
        return d->fn(x, tok + 1, n - 1);
    }
    return fail(x, "unknown directive \"%s\"", tok[0]);
}

static void set_defaults(struct config *c, struct ctx *x)
{
    c->workers = 0;
    c->pid_file = abs_path(x, "run/intaked.pid");
    c->error_log = strdup("stderr");
    c->log_level = LOG_INFO;
    c->spool_dir = abs_path(x, "var/spool");
    c->accept_dir = abs_path(x, "var/accepted");
    c->quarantine_dir = abs_path(x, "var/quarantine");
    c->max_file_size = 1ULL << 30;
    c->min_free_space = 64ULL << 20;
    c->resume_timeout_ms = 3600 * 1000;
    c->scanner = SCANNER_BUILTIN;
    c->scanner_socket = abs_path(x, "run/scand.sock");
    c->signature_dir = abs_path(x, "etc/signatures");
    c->scan_timeout_ms = 60 * 1000;
    c->max_connections = 10000;
    c->header_timeout_ms = 10 * 1000;
    c->idle_timeout_ms = 60 * 1000;
    c->shutdown_timeout_ms = 30 * 1000;
    c->allow_same_origin = true;
    c->trusted_proxies[0] = strdup("127.0.0.1");
    c->trusted_proxies[1] = strdup("::1");
    c->n_trusted_proxies = 2;
    c->hook_timeout_ms = 60 * 1000;
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) < 0 || !host[0]) snprintf(host, sizeof host, "intake");
    host[64] = '\0';
    for (char *p = host; *p; p++) /* as node_name allows: it goes into JSON unescaped */
        if (!isalnum((unsigned char)*p) && !strchr(".-_:", *p)) *p = '_';
    c->node_name = strdup(host);
    if (!c->node_name) abort();
}

static int finish(struct ctx *x)
{
    struct config *c = x->c;
    bool has_ws = false, has_tcp = false, wants_tls = false;
    for (int i = 0; i < c->n_listen; i++) {
        has_ws |= c->listen[i].kind == LISTEN_WS;
        has_tcp |= c->listen[i].kind == LISTEN_TCP;
        wants_tls |= c->listen[i].tls;
    }
    struct listen_addr a;
    const char *why;
    if (!has_ws && c->n_listen < CONFIG_MAX_LISTEN) {
        config_parse_listen("127.0.0.1:8080", &a, &why);
        a.kind = LISTEN_WS;
        snprintf(c->listen_at[c->n_listen], sizeof c->listen_at[0], "%s", c->file);
        c->listen[c->n_listen++] = a;
    }
    if (!has_tcp && !x->tcp_off && c->n_listen < CONFIG_MAX_LISTEN) {
        config_parse_listen("127.0.0.1:9090", &a, &why);
        a.kind = LISTEN_TCP;
        snprintf(c->listen_at[c->n_listen], sizeof c->listen_at[0], "%s", c->file);
        c->listen[c->n_listen++] = a;
    }
    /* The spool sweep removes files untouched for resume_timeout: an upload
     * still in progress (silent up to idle_timeout, scanning up to
     * scan_timeout) must never look that old. */
    if (c->resume_timeout_ms <= c->idle_timeout_ms ||
        (c->scanner != SCANNER_OFF && c->resume_timeout_ms <= c->scan_timeout_ms)) {
        const char *names[] = {"resume_timeout", "idle_timeout", "scan_timeout"};
        where_first(x, names, 3);
        return fail(x, "resume_timeout (%llu ms) must be longer than idle_timeout (%llu ms)%s",
                    (unsigned long long)c->resume_timeout_ms,
                    (unsigned long long)c->idle_timeout_ms,
                    c->scanner != SCANNER_OFF ? " and scan_timeout" : "");
    }
    /* Read now, by the master (before it forks or drops privileges), so that
     * -t, start and HUP all fail on a secret file that would not do. */
    if (c->auth_secret_file) {
        char reason[256];
        if (config_read_secrets(c->auth_secret_file, &c->auth, reason, sizeof reason) < 0) {
            x->where = x->secret_where;
            return fail(x, "auth_secret_file %s: %s", c->auth_secret_file, reason);
        }
    }
    if (c->scanner == SCANNER_BUILTIN) {
        struct scanner_addr *s = &c->scanners[0];
        memset(s, 0, sizeof *s);
        snprintf(s->path, sizeof s->path, "%s", c->scanner_socket);
        snprintf(s->text, sizeof s->text, "unix:%s", s->path);
        c->n_scanners = 1;
    }
    if (!c->accept_dir && !c->accept_hook) {
        x->where = x->accept_off_where;
        return fail(x, "\"accept_dir off\" needs accept_hook: the hook is then the only place "
                       "an accepted file goes");
    }
    if (!c->accept_dir && c->scan_fail == SCAN_FAIL_ACCEPT) {
        x->where = x->accept_off_where;
        return fail(x, "\"accept_dir off\" cannot be combined with \"scan_fail accept\"");
    }
    /* The sweep must not take a file whose hook or publish is still running. */
    if ((c->accept_hook || c->publish_urls) && c->resume_timeout_ms <= c->hook_timeout_ms * 2) {
        const char *names[] = {"resume_timeout", "hook_timeout"};
        where_first(x, names, 2);
        return fail(x, "resume_timeout (%llu ms) must be longer than twice hook_timeout (%llu ms)",
                    (unsigned long long)c->resume_timeout_ms,
                    (unsigned long long)c->hook_timeout_ms);
    }
    /* As root the workers and the scanner become this user: one that does
     * not exist would stop the start, not -t, without this. */
    if (c->user && geteuid() == 0 && !getpwnam(c->user)) {
        x->where = set_at(x, "user");
        return fail(x, "user \"%s\" does not exist", c->user);
    }
    struct {
        char *at;
        const char *name;
    } locate[] = {{c->at_tls_certificate, "tls_certificate"},
                  {c->at_tls_certificate_key, "tls_certificate_key"},
                  {c->at_access_log, "access_log"},
                  {c->at_error_log, "error_log"},
                  {c->at_signature_dir, "signature_dir"},
                  {c->at_accept_hook, "accept_hook"}};
    for (size_t i = 0; i < sizeof locate / sizeof *locate; i++)
        snprintf(locate[i].at, sizeof c->at_access_log, "%s",
                 set_at(x, locate[i].name)[0] ? set_at(x, locate[i].name) : c->file);
    if (wants_tls && (!c->tls_certificate || !c->tls_certificate_key)) {
        x->where = x->tls_where;
        return fail(x, "a listener says \"tls\" but tls_certificate and tls_certificate_key "
                       "are not both set");
    }
    return 0;
}

/* One line, without its newline, into buf (max bytes and a NUL), NUL
 * bytes included: fgets would hide them behind its terminator. 1: a line;
 * 0: the end of the file; -1: a line longer than max. */
static int next_line(FILE *f, char *buf, size_t max, size_t *len)
{
    size_t n = 0;
    int ch;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (n == max) return -1;
        buf[n++] = (char)ch;
    }
    buf[n] = '\0';
    *len = n;
    return ch == EOF && n == 0 ? 0 : 1;
}

static int read_file(struct ctx *x, const char *path)
{
    FILE *f = fopen(path, "re");
    char where[4200];
    if (!f) {
        snprintf(x->err, x->errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char line[LINE_MAX_BYTES + 2];
    char scratch[LINE_MAX_BYTES + 2];
    char *tok[MAX_TOKENS];
    int lineno = 0, rc = 0;
    for (;;) {
        size_t len;
        int got = next_line(f, line, LINE_MAX_BYTES, &len);
        if (got == 0) break;
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        x->where = where;
        if (got < 0) {
            rc = fail(x, "line longer than %d bytes", LINE_MAX_BYTES);
            break;
        }
        if (strlen(line) != len) {
            rc = fail(x, "NUL byte in line");
            break;
        }
        const char *why = "";
        int n = config_tokenize(line, len, scratch, sizeof scratch, tok, MAX_TOKENS, &why);
        if (n < 0) {
            rc = fail(x, "%s", why);
            break;
        }
        if (n == 0) continue;
        if (apply(x, tok, n, NULL) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(x->err, x->errlen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    x->where = path;
    return rc;
}

struct config *config_load(const char *path, char *const *overrides, int n_overrides,
                           const char *base_dir, char *err, size_t errlen)
{
    struct config *c = calloc(1, sizeof *c);
    if (!c) abort();
    struct ctx x = {.c = c, .base_dir = base_dir, .err = err, .errlen = errlen, .where = ""};
    set_defaults(c, &x);
    c->file = abs_path(&x, path ? path : INTAKE_DEFAULT_CONF);
    if (read_file(&x, c->file) < 0) goto fail;

    unsigned override_seen[N_DIRECTIVES] = {0};
    x.from_override = true;
    for (int i = 0; i < n_overrides; i++) {
        char where[300];
        snprintf(where, sizeof where, "-o %.280s", overrides[i]);
        x.where = where;
        const char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i]) {
            fail(&x, "expected NAME=VALUE");
            goto fail;
        }
        char line[LINE_MAX_BYTES + 2], scratch[LINE_MAX_BYTES + 2];
        char *tok[MAX_TOKENS];
        snprintf(line, sizeof line, "%s", overrides[i]);
        line[eq - overrides[i]] = ' ';
        const char *why = "";
        int n = config_tokenize(line, strlen(line), scratch, sizeof scratch, tok, MAX_TOKENS, &why);
        if (n < 0) {
            fail(&x, "%s", why);
            goto fail;
        }
        if (n < 2) {
            fail(&x, "no value given");
            goto fail;
        }
        if (apply(&x, tok, n, override_seen) < 0) goto fail;
    }
    x.where = c->file;
    if (finish(&x) < 0) goto fail;
    return c;
fail:
    config_free(c);
    return NULL;
}

/* A log file can be opened for appending (it is created). Never blocks: a
 * FIFO, which could wait for a reader for ever (the master would hang in a
 * reload), or a device is only checked for write permission. */
static const char *log_unwritable(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return access(path, W_OK) == 0 ? NULL : strerror(errno);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
    if (fd < 0) return strerror(errno);
    close(fd);
    return NULL;
}

/* Whether the accept hook could be started, looked up as posix_spawnp
 * does: a name with '/' as it is, any other in each PATH entry (an empty
 * one is the current directory; no PATH at all: _PATH_DEFPATH). */
enum hook_lookup { HOOK_FOUND, HOOK_MISSING, HOOK_DENIED, HOOK_NOT_FILE, HOOK_NOT_IN_PATH };

static enum hook_lookup hook_lookup(const char *prog)
{
    struct stat st;
    if (strchr(prog, '/')) {
        if (stat(prog, &st) < 0) return errno == EACCES ? HOOK_DENIED : HOOK_MISSING;
        if (!S_ISREG(st.st_mode)) return HOOK_NOT_FILE;
        return access(prog, X_OK) < 0 ? HOOK_DENIED : HOOK_FOUND;
    }
    const char *path = getenv("PATH");
    if (!path) path = _PATH_DEFPATH;
    char cand[4096];
    bool denied = false;
    for (const char *p = path;; p++) {
        size_t n = strcspn(p, ":");
        int w = n ? snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, prog)
                  : snprintf(cand, sizeof cand, "%s", prog);
        if (w > 0 && (size_t)w < sizeof cand && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(cand, X_OK) == 0) return HOOK_FOUND;
            denied = true;
        }
        p += n;
        if (!*p) break;
    }
    return denied ? HOOK_DENIED : HOOK_NOT_IN_PATH;
}

/* Why the hook cannot be started, or NULL. As root with `user`, the hook
 * runs as that user, so the lookup is made as that user too, in a child. */
static const char *hook_unstartable(const char *prog, const char *user)
{
    int code = -1;
    struct passwd *pw = user && geteuid() == 0 ? getpwnam(user) : NULL;
    if (pw) {
        uid_t uid = pw->pw_uid;
        gid_t gid = pw->pw_gid;
        pid_t pid = fork();
        if (pid == 0) {
            if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) _exit(100);
            _exit((int)hook_lookup(prog));
        }
        int st = 0;
        while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) <= HOOK_NOT_IN_PATH) code = WEXITSTATUS(st);
        if (code < 0) return NULL; /* could not look: the start will tell */
    } else {
        code = (int)hook_lookup(prog);
    }
    switch ((enum hook_lookup)code) {
    case HOOK_FOUND:
        return NULL;
    case HOOK_MISSING:
        return "No such file or directory";
    case HOOK_DENIED:
        if (!pw) return "Permission denied";
        static char denied[160];
        snprintf(denied, sizeof denied, "Permission denied to user %.64s, who runs it", user);
        return denied;
    case HOOK_NOT_FILE:
        return "not a regular file";
    case HOOK_NOT_IN_PATH:
        return "not found in PATH";
    }
    return NULL;
}

int config_check_paths(const struct config *c, char *err, size_t errlen)
{
    const char *why;
    if (c->accept_hook && (why = hook_unstartable(c->accept_hook[0], c->user))) {
        snprintf(err, errlen, "%s: accept_hook %s: %s; no upload could pass",
                 c->at_accept_hook, c->accept_hook[0], why);
        return -1;
    }
    if (c->error_log[0] == '/' && (why = log_unwritable(c->error_log))) {
        snprintf(err, errlen, "%s: error_log %s: cannot open: %s", c->at_error_log, c->error_log,
                 why);
        return -1;
    }
    if (c->access_log && (why = log_unwritable(c->access_log))) {
        snprintf(err, errlen, "%s: access_log %s: cannot open: %s", c->at_access_log,
                 c->access_log, why);
        return -1;
    }
    /* Made at start when missing; something else under the name fails it. */
    const char *names[] = {"spool_dir", "accept_dir", "quarantine_dir"};
    const char *dirs[] = {c->spool_dir, c->accept_dir, c->quarantine_dir};
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (dirs[i] && stat(dirs[i], &st) == 0 && !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: %s %s: not a directory", c->file, names[i], dirs[i]);
            return -1;
        }
    }
    if (c->scanner == SCANNER_BUILTIN) {
        struct stat st;
        why = NULL;
        if (stat(c->signature_dir, &st) < 0)
            why = strerror(errno);
        else if (!S_ISDIR(st.st_mode))
            why = "not a directory";
        else if (access(c->signature_dir, R_OK | X_OK) < 0)
            why = strerror(errno);
        if (why) {
            snprintf(err, errlen,
                     "%s: signature_dir %s: %s (the builtin scanner loads its signatures there)",
                     c->at_signature_dir, c->signature_dir, why);
            return -1;
        }
    }
    return 0;
}

void config_free(struct config *c)
{
    if (!c) return;
    char **strs[] = {&c->file,           &c->tls_certificate, &c->tls_certificate_key,
                     &c->user,           &c->pid_file,        &c->error_log,
                     &c->access_log,     &c->spool_dir,       &c->accept_dir,
                     &c->quarantine_dir, &c->node_name,       &c->scanner_socket,
                     &c->signature_dir,  &c->auth_secret_file, &c->publish_urls,
                     &c->publish_subject};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        free(*strs[i]);
    free_list(c->allowed_origins, &c->n_allowed_origins);
    free_list(c->trusted_proxies, &c->n_trusted_proxies);
    free_argv(&c->accept_hook, &c->n_accept_hook);
    config_secrets_free(&c->auth);
    free(c);
}
