/* wsbench: a minimal, fast WebSocket upload client for benchmarks. Uploads
 * one file to intaked over ws:// in binary messages of CHUNK bytes with up to
 * WINDOW unacknowledged, masking with a random key 16 bytes at a time, and
 * prints the STATUS line. With -z every key is 0 and the payload goes from
 * the file by sendfile, so the client costs the cores it shares with the
 * daemon no more than the raw TCP client does (the daemon unmasks all the
 * same). Not a general client: it speaks exactly SPEC's upload protocol.
 *     wsbench [-z] HOST PORT FILE [CHUNK_KIB] [WINDOW] */
#define _GNU_SOURCE
#include "ws_frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

static int sock;
static int zero_key; /* -z: every frame's key is 0, the payload goes by sendfile */
static char in[1 << 16];
static size_t in_len;

static void die(const char *m)
{
    fprintf(stderr, "wsbench: %s: %s\n", m, strerror(errno));
    exit(2);
}

static void send_all(const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(sock, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("send");
        c += w;
        n -= (size_t)w;
    }
}

/* Sends one masked client frame; payload is masked in place. */
static void send_frame(uint8_t op, uint8_t *p, size_t n)
{
    uint8_t h[14];
    size_t hl = ws_frame_header(h, op, n);
    h[1] |= 0x80;
    uint8_t key[4] = {0};
    if (!zero_key && getrandom(key, 4, 0) != 4) die("getrandom");
    memcpy(h + hl, key, 4);
    ws_unmask(p, n, key, 0); /* XOR is its own inverse */
    send_all(h, hl + 4);
    send_all(p, n);
}

/* Reads one server text frame into out (NUL-terminated). */
static void recv_text(char *out, size_t cap)
{
    for (;;) {
        if (in_len >= 2) {
            size_t n = in[1] & 0x7F, hl = 2;
            if (n == 126 && in_len >= 4) n = (size_t)((uint8_t)in[2] << 8 | (uint8_t)in[3]), hl = 4;
            if (hl + n <= in_len && n != 126 && n != 127) {
                size_t c = n < cap - 1 ? n : cap - 1;
                memcpy(out, in + hl, c);
                out[c] = '\0';
                memmove(in, in + hl + n, in_len - hl - n);
                in_len -= hl + n;
                return;
            }
        }
        ssize_t r = read(sock, in + in_len, sizeof in - in_len);
        if (r <= 0) die("connection closed");
        in_len += (size_t)r;
    }
}

static int readable(void)
{
    struct pollfd p = {.fd = sock, .events = POLLIN};
    return in_len >= 2 || poll(&p, 1, 0) > 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "-z") == 0) {
        zero_key = 1;
        argv++;
        argc--;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: wsbench [-z] HOST PORT FILE [CHUNK_KIB] [WINDOW]\n");
        return 2;
    }
    size_t chunk = (argc > 4 ? (size_t)atoi(argv[4]) : 1024) * 1024;
    int window = argc > 5 ? atoi(argv[5]) : 8;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(argv[1], argv[2], &hints, &ai)) die("resolve");
    sock = socket(ai->ai_family, SOCK_STREAM, 0);
    if (connect(sock, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
    freeaddrinfo(ai);
    int fd = open(argv[3], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) die(argv[3]);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /upload HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     argv[1]);
    send_all(req, (size_t)n);
    for (;;) {
        ssize_t r = read(sock, in + in_len, sizeof in - in_len);
        if (r <= 0) die("handshake");
        in_len += (size_t)r;
        char *e = memmem(in, in_len, "\r\n\r\n", 4);
        if (!e) continue;
        if (strncmp(in, "HTTP/1.1 101", 12) != 0) die("handshake refused");
        size_t used = (size_t)(e + 4 - in);
        memmove(in, in + used, in_len - used);
        in_len -= used;
        break;
    }
    char msg[4096];
    n = snprintf(msg, sizeof msg, "{\"type\":\"START\",\"filename\":\"wsbench.bin\",\"size\":%lld}",
                 (long long)st.st_size);
    send_frame(WS_OP_TEXT, (uint8_t *)msg, (size_t)n);
    recv_text(msg, sizeof msg);
    uint8_t *buf = malloc(chunk);
    off_t off = 0;
    int inflight = 0;
    while (off < st.st_size) {
        ssize_t r;
        if (zero_key) {
            size_t want = st.st_size - off < (off_t)chunk ? (size_t)(st.st_size - off) : chunk;
            uint8_t h[14];
            size_t hl = ws_frame_header(h, WS_OP_BINARY, want);
            h[1] |= 0x80;
            memset(h + hl, 0, 4);
            send_all(h, hl + 4);
            for (size_t left = want; left;) {
                ssize_t s = sendfile(sock, fd, NULL, left);
                if (s < 0 && errno == EINTR) continue;
                if (s <= 0) die("sendfile");
                left -= (size_t)s;
            }
            r = (ssize_t)want;
        } else {
            r = pread(fd, buf, chunk, off);
            if (r <= 0) die("read file");
            send_frame(WS_OP_BINARY, buf, (size_t)r);
        }
        off += r;
        inflight++;
        while (inflight >= window || (inflight && readable())) {
            recv_text(msg, sizeof msg);
            inflight--;
        }
    }
    while (inflight--)
        recv_text(msg, sizeof msg);
    char done[] = "{\"type\":\"DONE\"}";
    send_frame(WS_OP_TEXT, (uint8_t *)done, sizeof done - 1);
    recv_text(msg, sizeof msg);
    printf("%s\n", msg);
    return strstr(msg, "\"STATUS\"") ? 0 : 1;
}
