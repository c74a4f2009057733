/* ws_frame: the RFC 6455 frame header parser and the unmasking routine. Pure:
 * no allocation, no I/O, so it can be unit-tested and fuzzed alone. It
 * enforces everything decidable from one header: client frames masked, no
 * reserved bits (no extension is negotiated), known opcodes, control frames
 * final and at most 125 bytes, minimal length encodings, top bit of a 64-bit
 * length clear, and no frame over the message limit. */
#ifndef INTAKE_WS_FRAME_H
#define INTAKE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA

#define WS_MESSAGE_MAX (16u << 20) /* larger messages: close 1009 */
#define WS_FRAME_HEADER_MAX 14

#define WS_AGAIN (-2)
#define WS_FAIL (-1)

struct ws_frame {
    bool fin;
    uint8_t opcode;
    uint8_t mask[4];
    uint64_t len;
};

/* Parses the frame header at buf. Returns its size (2..14), WS_AGAIN, or
 * WS_FAIL with *close_code set (1002 protocol error, 1009 too big). */
ssize_t ws_frame_parse(const uint8_t *buf, size_t len, struct ws_frame *f, int *close_code);

/* XORs n payload bytes in place; offset is the position of p[0] within the
 * frame's payload (the mask repeats every 4 bytes). 16 bytes at a time. */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes a server frame header (FIN set, never masked). Returns its size. */
size_t ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t len);

/* Whether a close code may appear in a close frame (RFC 6455 7.4, IANA). */
bool ws_close_code_valid(unsigned code);

#endif
