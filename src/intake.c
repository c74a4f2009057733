/* intake: the command-line uploader (intake(1)). Sends each FILE over the
 * raw TCP protocol on one connection (reconnecting after an ERROR or a lost
 * connection), streams the body without waiting for READY, and prints one
 * clamscan-style result line per file. Exit 0 clean/unscanned, 1 infected,
 * 2 error. */
#define _GNU_SOURCE
#include "cli_progress.h"
#include "cli_tls.h"
#include "config.h"
#include "upload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef INTAKE_VERSION
#define INTAKE_VERSION "0.1.0"
#endif

#define LINE_CAP 65536
#define CHUNK (1 << 20)

enum result { R_CLEAN = 0, R_INFECTED = 1, R_ERROR = 2 };

struct opts {
    const char *name, *token;
    bool sha256, json, quiet, progress;
    int retries;
};

struct link {
    int fd;
    SSL *ssl; /* with --tls */
    char buf[LINE_CAP];
    size_t len;
};

static void usage(FILE *f)
{
    fputs("usage: intake [OPTIONS] HOST:PORT FILE...    (FILE - reads stdin)\n"
          "       intake token --secret-file FILE [--ttl DURATION] [--max-size SIZE]\n"
          "Sends each FILE to intaked and prints one line per file when it is scanned:\n"
          "FILE: OK, FILE: OK (not scanned), FILE: VIRUS FOUND, or FILE: REASON ERROR.\n"
          "  -n, --name NAME    store as NAME (one FILE only; stdin is stored as stdin)\n"
          "  -t, --token TOKEN  upload token (default $INTAKE_TOKEN)\n"
          "      --sha256       send the SHA-256 for the server to check (422 if not equal)\n"
          "      --retries N    after a lost connection resume, or start over (default 3)\n"
          "      --json         print the server's STATUS (or ERROR) object per file\n"
          "  -q, --quiet        no progress bar; print only infected files and errors\n"
          "      --tls          TLS to the server, its certificate and name verified\n"
          "      --cacert FILE  trust the CA certificates in FILE (implies --tls)\n"
          "      --insecure     TLS without verifying the certificate\n"
          "  -V, --version      print the version\n"
          "  -h, --help         this help\n"
          "HOST:PORT is host:port, [v6]:port or unix:/path. intake token prints a token\n"
          "signed with FILE's first secret (--ttl default 1h, --max-size default 0: no\n"
          "limit). Exit status: 0 all clean or unscanned, 1 any infected, 2 any error.\n"
          "See intake(1).\n",
          f);
}

static int dial(const char *target, char *err, size_t errlen)
{
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(target + 5) >= sizeof sa.sun_path) {
            snprintf(err, errlen, "socket path too long");
            return -1;
        }
        strcpy(sa.sun_path, target + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
        snprintf(err, errlen, "%s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    struct listen_addr a;
    const char *why = "";
    if (config_parse_listen(target, &a, &why) < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    int g = getaddrinfo(a.host[0] ? a.host : "127.0.0.1", a.port, &hints, &res);
    if (g) {
        snprintf(err, errlen, "%s", gai_strerror(g));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        e = errno;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) snprintf(err, errlen, "%s", strerror(e));
    return fd;
}

static void link_close(struct link *l)
{
    cli_tls_close(l->ssl);
    l->ssl = NULL;
    close(l->fd);
    l->fd = -1;
}

/* Reads what is there (or waits when block) into the line buffer. 1 if bytes
 * came, 0 on EOF, -1 on error. */
static int fill(struct link *l, int timeout_ms)
{
    struct pollfd p = {.fd = l->fd, .events = POLLIN};
    int pr = cli_tls_poll(l->ssl, &p, timeout_ms);
    if (pr <= 0) return pr < 0 ? -1 : 2; /* 2: nothing yet */
    if (l->len == sizeof l->buf) return -1;
    ssize_t n = cli_tls_read(l->ssl, l->fd, l->buf + l->len, sizeof l->buf - l->len);
    if (n < 0) return errno == EINTR || errno == EAGAIN ? 2 : -1;
    if (n == 0) return 0;
    l->len += (size_t)n;
    return 1;
}

/* Takes one complete line out of the buffer into out. 1 if one was there. */
static int take_line(struct link *l, char *out, size_t cap)
{
    char *nl = memchr(l->buf, '\n', l->len);
    if (!nl) return 0;
    size_t n = (size_t)(nl - l->buf);
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(out, l->buf, c);
    out[c] = '\0';
    memmove(l->buf, nl + 1, l->len - n - 1);
    l->len -= n + 1;
    return 1;
}

/* How long "upload in use" is retried: the server drops the connection
 * still holding the upload after its idle_timeout (60 s by default). */
#define IN_USE_PATIENCE 150.0

/* Sleeps *backoff seconds, then doubles it (0.5 s, 1 s, 2 s... up to 30 s). */
static void pause_for(double *backoff)
{
    usleep((useconds_t)(*backoff * 1e6));
    *backoff = *backoff * 2 > 30 ? 30 : *backoff * 2;
}

static const char *msg_type(cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

struct outcome {
    enum result r;
    char line[LINE_CAP]; /* STATUS or ERROR JSON, or empty */
    char message[512];   /* for local errors */
    bool lost;           /* the connection broke: retry may help */
    char id[STORE_ID_LEN + 1];
};

/* The file's SHA-256 from its first byte to its end. 0, or -1 (a read or
 * hashing error: no checksum is better than a wrong one). */
static int sha256_file(int fd, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *buf = malloc(CHUNK);
    int rc = md && buf && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    off_t off = 0;
    while (rc == 0) {
        ssize_t n = pread(fd, buf, CHUNK, off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = -1;
        if (n <= 0) break;
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) rc = -1;
        off += n;
    }
    unsigned len;
    if (rc == 0 && EVP_DigestFinal_ex(md, out, &len) != 1) rc = -1;
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

/* One attempt at one file over l. */
static void attempt(struct link *l, int fd, uint64_t size, const char *name, const char *label,
                    const struct opts *o, const unsigned char *sha, struct outcome *out)
{
    out->lost = false;
    out->line[0] = '\0';
    cJSON *start = cJSON_CreateObject();
    cJSON_AddStringToObject(start, "type", "START");
    cJSON_AddStringToObject(start, "filename", name);
    cJSON_AddNumberToObject(start, "size", (double)size);
    if (sha) {
        char hex[65];
        upload_hex(sha, 32, hex);
        cJSON_AddStringToObject(start, "sha256", hex);
    }
    if (o->token) cJSON_AddStringToObject(start, "token", o->token);
    bool resuming = out->id[0] != '\0';
    if (resuming) cJSON_AddStringToObject(start, "id", out->id);
    char *hdr = cJSON_PrintUnformatted(start);
    cJSON_Delete(start);
    if (!hdr) {
        out->r = R_ERROR;
        snprintf(out->message, sizeof out->message, "out of memory");
        return;
    }
    size_t hl = strlen(hdr);
    char *grown = realloc(hdr, hl + 2);
    if (!grown) {
        free(hdr);
        out->r = R_ERROR;
        snprintf(out->message, sizeof out->message, "out of memory");
        return;
    }
    hdr = grown;
    hdr[hl++] = '\n';
    ssize_t w = cli_tls_send(l->ssl, l->fd, hdr, hl);
    free(hdr);
    if (w != (ssize_t)hl) {
        out->lost = true;
        snprintf(out->message, sizeof out->message, "connection lost: %s", strerror(errno));
        return;
    }
    /* A fresh upload streams at once; a resume waits for READY's offset. */
    uint64_t off = 0;
    bool ready = !resuming, sending = !resuming;
    struct progress pb;
    progress_begin(&pb, o->progress, label, size);
    char line[LINE_CAP];
    for (;;) {
        while (take_line(l, line, sizeof line)) {
            cJSON *m = cJSON_Parse(line);
            if (!m && strncmp(line, "HTTP/", 5) == 0) {
                /* Not worth retrying: the wrong port. */
                snprintf(out->message, sizeof out->message,
                         "the server answered in HTTP, not intake's raw TCP protocol: is this "
                         "its WebSocket port (listen_ws)?");
                out->r = R_ERROR;
                progress_end(&pb);
                link_close(l); /* the next file connects afresh */
                return;
            }
            const char *t = m ? msg_type(m) : "";
            if (strcmp(t, "READY") == 0) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
                const cJSON *k = cJSON_GetObjectItemCaseSensitive(m, "offset");
                if (cJSON_IsString(id)) snprintf(out->id, sizeof out->id, "%s", id->valuestring);
                if (!ready && cJSON_IsNumber(k) && k->valuedouble >= 0 &&
                    k->valuedouble <= (double)size) {
                    /* The bar goes on from what the server already has. */
                    off = (uint64_t)k->valuedouble;
                    progress_resume(&pb, off);
                }
                ready = sending = true;
            } else if (strcmp(t, "STATUS") == 0 || strcmp(t, "ERROR") == 0) {
                snprintf(out->line, sizeof out->line, "%s", line);
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "verdict");
                if (strcmp(t, "ERROR") == 0)
                    out->r = R_ERROR;
                else if (cJSON_IsString(v) && strcmp(v->valuestring, "infected") == 0)
                    out->r = R_INFECTED;
                else if (cJSON_IsString(v) && (strcmp(v->valuestring, "clean") == 0 ||
                                               strcmp(v->valuestring, "unscanned") == 0))
                    out->r = R_CLEAN;
                else
                    out->r = R_ERROR;
                cJSON_Delete(m);
                progress_end(&pb);
                return;
            }
            cJSON_Delete(m);
        }
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        if (sending && off < size) p.events |= POLLOUT;
        if (cli_tls_poll(l->ssl, &p, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int f = fill(l, 0);
            if (f == 0 || f < 0) {
                snprintf(out->message, sizeof out->message, "connection closed by the server");
                out->lost = true;
                break;
            }
            continue;
        }
        if (p.revents & POLLOUT) {
            off_t pos = (off_t)off;
            size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
            ssize_t s = cli_tls_sendfile(l->ssl, l->fd, fd, &pos, n);
            if (s < 0 && errno == EINTR) continue;
            if (s <= 0) {
                snprintf(out->message, sizeof out->message, "connection lost: %s",
                         s < 0 ? strerror(errno) : "file shrank while sending");
                out->lost = s < 0;
                break;
            }
            off += (uint64_t)s;
            progress_update(&pb, off);
        }
    }
    progress_end(&pb);
    /* The server may have said why before closing. */
    while (fill(l, 200) == 1) {
    }
    while (take_line(l, line, sizeof line)) {
        cJSON *m = cJSON_Parse(line);
        if (m && strcmp(msg_type(m), "ERROR") == 0) {
            snprintf(out->line, sizeof out->line, "%s", line);
            out->lost = false;
        }
        cJSON_Delete(m);
    }
    out->r = R_ERROR;
}

/* stdin that is not a regular file goes to an unlinked temporary file first:
 * the protocol announces the size before the body. */
static int stdin_file(uint64_t *size)
{
    struct stat st;
    /* A regular file read from its start is sent as it is; anything else
     * (a pipe, or a file already partly read) is copied. */
    if (fstat(0, &st) == 0 && S_ISREG(st.st_mode) && lseek(0, 0, SEEK_CUR) == 0) {
        *size = (uint64_t)st.st_size;
        return dup(0);
    }
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    char *buf = malloc(CHUNK);
    ssize_t n;
    uint64_t total = 0;
    while (buf && (n = read(0, buf, CHUNK)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || write(fd, buf, (size_t)n) != n) {
            free(buf);
            close(fd);
            return -1;
        }
        total += (uint64_t)n;
    }
    free(buf);
    *size = total;
    return fd;
}

static void print_result(const char *label, const struct outcome *out, const struct opts *o)
{
    cJSON *m = out->line[0] ? cJSON_Parse(out->line) : NULL;
    if (o->json) {
        if (m && strcmp(msg_type(m), "STATUS") == 0) {
            printf("%s\n", out->line);
        } else {
            cJSON *e = m ? m : cJSON_CreateObject();
            if (!m) {
                cJSON_AddStringToObject(e, "type", "ERROR");
                cJSON_AddNumberToObject(e, "code", 0);
                cJSON_AddStringToObject(e, "message", out->message);
            }
            cJSON_AddStringToObject(e, "file", label);
            char *s = cJSON_PrintUnformatted(e);
            printf("%s\n", s);
            free(s);
            if (!m) cJSON_Delete(e);
        }
        cJSON_Delete(m);
        fflush(stdout);
        return;
    }
    if (m && strcmp(msg_type(m), "STATUS") == 0) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "verdict");
        const cJSON *virus = cJSON_GetObjectItemCaseSensitive(m, "virus");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(m, "status");
        const char *verdict = cJSON_IsString(v) ? v->valuestring : "";
        if (strcmp(verdict, "clean") == 0) {
            if (!o->quiet) printf("%s: OK\n", label);
        } else if (strcmp(verdict, "unscanned") == 0) {
            if (!o->quiet) printf("%s: OK (not scanned)\n", label);
        } else if (strcmp(verdict, "infected") == 0) {
            printf("%s: %s FOUND\n", label, cJSON_IsString(virus) ? virus->valuestring : "?");
        } else {
            /* status is "./NAME: REASON ERROR": keep the reason. */
            const char *s = cJSON_IsString(st) ? st->valuestring : "";
            const char *colon = strstr(s, ": ");
            printf("%s: %s\n", label, colon ? colon + 2 : "scan ERROR");
        }
    } else if (m && strcmp(msg_type(m), "ERROR") == 0) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(m, "message");
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(m, "code");
        printf("%s: %s (%d) ERROR\n", label, cJSON_IsString(msg) ? msg->valuestring : "?",
               cJSON_IsNumber(code) ? code->valueint : 0);
    } else {
        printf("%s: %s ERROR\n", label, out->message);
    }
    cJSON_Delete(m);
    fflush(stdout);
}

static int cmd_token(int argc, char **argv);

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "token") == 0) return cmd_token(argc - 1, argv + 1);
    struct opts o = {.retries = 3, .token = getenv("INTAKE_TOKEN")};
    bool tls = false, insecure = false;
    const char *cacert = NULL;
    static const struct option longs[] = {
        {"name", required_argument, 0, 'n'},    {"token", required_argument, 0, 't'},
        {"tls", no_argument, 0, 'T'},           {"cacert", required_argument, 0, 'C'},
        {"insecure", no_argument, 0, 'I'},      {"sha256", no_argument, 0, 'S'},
        {"retries", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'},         {"version", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "n:t:qVh", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            o.name = optarg;
            break;
        case 't':
            o.token = optarg;
            break;
        case 'T': /* --cacert and --insecure imply --tls */
            tls = true;
            break;
        case 'C':
            tls = true;
            cacert = optarg;
            break;
        case 'I':
            tls = insecure = true;
            break;
        case 'S':
            o.sha256 = true;
            break;
        case 'r': {
            char *end;
            long r = strtol(optarg, &end, 10);
            if (*end || r < 0 || r > 1000) {
                fprintf(stderr, "intake: --retries wants a number from 0 to 1000\n");
                return 2;
            }
            o.retries = (int)r;
            break;
        }
        case 'j':
            o.json = true;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'V':
            printf("intake %s\n", INTAKE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind < 2) {
        usage(stderr);
        return 2;
    }
    SSL_CTX *tls_ctx = NULL;
    char err[256];
    if (tls && !(tls_ctx = cli_tls_context(cacert, insecure, err, sizeof err))) {
        fprintf(stderr, "intake: %s\n", err);
        return 2;
    }
    const char *target = argv[optind++];
    int nfiles = argc - optind;
    if (o.name && nfiles != 1) {
        fprintf(stderr, "intake: --name needs exactly one FILE\n");
        return 2;
    }
    o.progress = !o.quiet && !o.json && isatty(2);

    static struct link l;
    l.fd = -1;
    int worst = R_CLEAN;
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        static struct outcome out;
        memset(&out, 0, sizeof out);
        uint64_t size = 0;
        int fd;
        if (strcmp(path, "-") == 0)
            fd = stdin_file(&size);
        else
            fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && strcmp(path, "-") != 0) {
            if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                fd = -1;
                errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
            } else {
                size = (uint64_t)st.st_size;
            }
        }
        if (fd < 0) {
            snprintf(out.message, sizeof out.message, "%s",
                     errno == EINVAL ? "not a regular file" : strerror(errno));
            out.r = R_ERROR;
            print_result(path, &out, &o);
            worst = R_ERROR;
            continue;
        }
        char *pathcopy = strdup(path);
        const char *name = o.name ? o.name : strcmp(path, "-") == 0 ? "stdin" : basename(pathcopy);
        unsigned char sha[32];
        bool have_sha = o.sha256;
        if (have_sha && sha256_file(fd, sha) < 0) {
            snprintf(out.message, sizeof out.message, "cannot read it to compute --sha256: %s",
                     strerror(errno ? errno : EIO));
            out.r = R_ERROR;
            print_result(path, &out, &o);
            worst = R_ERROR;
            free(pathcopy);
            close(fd);
            continue;
        }
        /* attempt_no counts lost connections; a refused resume (the server
         * kept nothing) restarts the file without using one up, and an
         * upload still held by the server's end of a dead connection is
         * asked for again until the server lets it go (its idle_timeout). */
        int restarts = 0;
        double backoff = 0.5, in_use_waited = 0;
        for (int attempt_no = 0;; attempt_no++) {
            if (l.fd < 0) {
                l.fd = dial(target, err, sizeof err);
                l.len = 0;
                if (l.fd >= 0 && tls_ctx &&
                    !(l.ssl = cli_tls_connect(tls_ctx, l.fd, target, err, sizeof err)))
                    link_close(&l);
                if (l.fd < 0) {
                    /* A server that went away with the upload, or said it
                     * is shutting down (503, out.line), may be back soon. */
                    if (attempt_no < o.retries && (out.id[0] || out.line[0])) {
                        pause_for(&backoff);
                        continue;
                    }
                    /* What the server said last is this file's result. */
                    if (out.line[0]) print_result(path, &out, &o);
                    fprintf(stderr, "intake: cannot connect to %s: %s\n", target, err);
                    free(pathcopy);
                    close(fd);
                    return 2;
                }
            }
            attempt(&l, fd, size, name, name, &o, have_sha ? sha : NULL, &out);
            bool resume_refused = false, in_use = false;
            if (out.line[0]) {
                cJSON *m = cJSON_Parse(out.line);
                const cJSON *code = m ? cJSON_GetObjectItemCaseSensitive(m, "code") : NULL;
                const cJSON *msg = m ? cJSON_GetObjectItemCaseSensitive(m, "message") : NULL;
                bool refused = out.id[0] && strcmp(msg_type(m), "ERROR") == 0 &&
                               cJSON_IsNumber(code);
                in_use = refused && code->valueint == 409 && cJSON_IsString(msg) &&
                         strncmp(msg->valuestring, "upload in use", 13) == 0;
                resume_refused = refused && !in_use &&
                                 (code->valueint == 404 || code->valueint == 409);
                if (strcmp(msg_type(m), "ERROR") == 0) {
                    link_close(&l); /* the server closes after ERROR */
                    /* Shutting down (a reload or a stop past its
                     * shutdown_timeout): the server kept what it has and
                     * asks for the rest on a new connection, as after a
                     * lost one. */
                    if (cJSON_IsNumber(code) && code->valueint == 503) {
                        out.lost = true;
                        snprintf(out.message, sizeof out.message, "%s",
                                 cJSON_IsString(msg) ? msg->valuestring
                                                     : "server is shutting down");
                    }
                }
                cJSON_Delete(m);
            }
            if (resume_refused && restarts++ <= o.retries) {
                /* The server cannot resume it: start the file over. */
                if (!o.quiet)
                    fprintf(stderr, "intake: %s: the server cannot resume it; starting over\n",
                            path);
                out.id[0] = '\0';
                attempt_no--;
                continue;
            }
            if (in_use && o.retries > 0 && in_use_waited < IN_USE_PATIENCE) {
                if (!o.quiet && in_use_waited == 0)
                    fprintf(stderr,
                            "intake: %s: the server still holds the broken connection's upload; "
                            "waiting for it to let go\n",
                            path);
                in_use_waited += 2;
                usleep(2000000);
                attempt_no--;
                continue;
            }
            if (!out.lost || attempt_no >= o.retries) break;
            link_close(&l);
            if (!o.quiet) fprintf(stderr, "intake: %s: %s; retrying\n", path, out.message);
            pause_for(&backoff);
        }
        if (out.lost && l.fd >= 0) link_close(&l);
        print_result(path, &out, &o);
        if ((int)out.r > worst) worst = (int)out.r;
        free(pathcopy);
        close(fd);
    }
    if (l.fd >= 0) link_close(&l);
    SSL_CTX_free(tls_ctx);
    return worst;
}

/* intake token: prints v1.EXPIRY.MAXSIZE.SIG signed with the secret file's
 * first secret (intake(1)): EXPIRY = now + ttl (default 1h). */
static int cmd_token(int argc, char **argv)
{
    static const struct option longs[] = {{"secret-file", required_argument, 0, 'f'},
                                          {"ttl", required_argument, 0, 't'},
                                          {"max-size", required_argument, 0, 'm'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    const char *file = NULL;
    uint64_t ttl_ms = 3600 * 1000, max_size = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 't':
            if (config_parse_duration(optarg, &ttl_ms) < 0 || ttl_ms == 0) {
                fprintf(stderr,
                        "intake token: invalid --ttl \"%s\" (more than 0: a "
                        "number with ms, s, m or h)\n",
                        optarg);
                return 2;
            }
            break;
        case 'm':
            if (config_parse_size(optarg, &max_size) < 0) {
                fprintf(stderr,
                        "intake token: invalid --max-size \"%s\" (bytes, or with K, M, "
                        "G; 0 = no limit)\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            puts("usage: intake token --secret-file FILE [--ttl DURATION] [--max-size SIZE]\n"
                 "Prints an upload token signed with FILE's first secret (the file intaked's\n"
                 "auth_secret_file names): valid for --ttl (default 1h; ms, s, m, h) at an\n"
                 "upload's start, for files of at most --max-size (default 0: no limit).");
            return 0;
        default:
            return 2;
        }
    }
    if (!file || optind != argc) {
        fprintf(stderr,
                "usage: intake token --secret-file FILE [--ttl DURATION] [--max-size SIZE]\n");
        return 2;
    }
    struct config_secrets s;
    char why[256];
    if (config_read_secrets(file, &s, why, sizeof why) < 0) {
        fprintf(stderr, "intake token: %s: %s\n", file, why);
        return 2;
    }
    /* Rounded up to whole seconds: a token never lives shorter than asked. */
    uint64_t now = (uint64_t)time(NULL), ttl = (ttl_ms + 999) / 1000;
    uint64_t expiry = ttl > UINT64_MAX - now ? UINT64_MAX : now + ttl;
    char tok[TOKEN_TEXT_MAX + 1];
    int n = token_sign(&s.keys[0], expiry, max_size, tok, sizeof tok);
    config_secrets_free(&s);
    if (n < 0) {
        fprintf(stderr, "intake token: cannot compute the signature (OpenSSL)\n");
        return 2;
    }
    printf("%s\n", tok);
    return fflush(stdout) == 0 ? 0 : 2;
}
