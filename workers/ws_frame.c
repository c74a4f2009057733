/* ws_frame: see ws_frame.h. */
#include "ws_frame.h"

#include <string.h>

ssize_t ws_frame_parse(const uint8_t *buf, size_t len, struct ws_frame *f, int *close_code)
{
    if (len < 2) return WS_AGAIN;
    uint8_t b0 = buf[0], b1 = buf[1];
    *close_code = 1002;
    if (b0 & 0x70) return WS_FAIL; /* RSV1-3: no extension was negotiated */
    uint8_t op = b0 & 0x0F;
    if (op != WS_OP_CONT && op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE &&
        op != WS_OP_PING && op != WS_OP_PONG)
        return WS_FAIL;
    if (!(b1 & 0x80)) return WS_FAIL; /* clients must mask */
    f->fin = (b0 & 0x80) != 0;
    f->opcode = op;
    uint64_t plen = b1 & 0x7F;
    size_t hl = 2;
    if (op & 0x8) {
        if (!f->fin || plen > 125) return WS_FAIL;
    }
    if (plen == 126) {
        if (len < 4) return WS_AGAIN;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        if (plen < 126) return WS_FAIL; /* not minimal */
        hl = 4;
    } else if (plen == 127) {
        if (len < 10) return WS_AGAIN;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | buf[2 + i];
        if (plen >> 63) return WS_FAIL;
        if (plen < 65536) return WS_FAIL; /* not minimal */
        hl = 10;
    }
    if (len < hl + 4) return WS_AGAIN;
    memcpy(f->mask, buf + hl, 4);
    f->len = plen;
    if (plen > WS_MESSAGE_MAX) {
        *close_code = 1009;
        return WS_FAIL;
    }
    *close_code = 0;
    return (ssize_t)(hl + 4);
}

/* A GNU vector type (gcc and clang): SSE2 on x86-64, NEON on arm64, plain
 * words elsewhere. Unmasking is a quarter of what a worker does per
 * WebSocket byte beside the two kernel copies; 16 bytes at a time, four in
 * flight, runs at about twice the speed of a word at a time. */
typedef uint8_t ws_vec __attribute__((vector_size(16)));

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    size_t i = 0;
    unsigned k = (unsigned)(offset & 3);
    /* Bytes up to 16-byte alignment, then whole vectors, then the tail. */
    while (i < n && ((uintptr_t)(p + i) & 15)) {
        p[i++] ^= mask[k];
        k = (k + 1) & 3;
    }
    ws_vec w;
    for (unsigned j = 0; j < sizeof w; j++)
        w[j] = mask[(k + j) & 3];
    for (; i + 4 * sizeof w <= n; i += 4 * sizeof w) {
        ws_vec a, b, c, d;
        memcpy(&a, p + i, sizeof a);
        memcpy(&b, p + i + 16, sizeof b);
        memcpy(&c, p + i + 32, sizeof c);
        memcpy(&d, p + i + 48, sizeof d);
        a ^= w;
        b ^= w;
        c ^= w;
        d ^= w;
        memcpy(p + i, &a, sizeof a);
        memcpy(p + i + 16, &b, sizeof b);
        memcpy(p + i + 32, &c, sizeof c);
        memcpy(p + i + 48, &d, sizeof d);
    }
    for (; i + sizeof w <= n; i += sizeof w) {
        ws_vec a;
        memcpy(&a, p + i, sizeof a);
        a ^= w;
        memcpy(p + i, &a, sizeof a);
    }
    /* A vector is 16 bytes, whole mask periods: k is unchanged. */
    while (i < n) {
        p[i++] ^= mask[k];
        k = (k + 1) & 3;
    }
}

size_t ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

bool ws_close_code_valid(unsigned code)
{
    if (code >= 1000 && code <= 1003) return true;
    if (code >= 1007 && code <= 1014) return true;
    return code >= 3000 && code <= 4999;
}
