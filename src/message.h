/* message: the upload protocol's messages as bytes, for both transports.
 * Client messages (START, DONE, and raw TCP's plain "SIZE NAME" line) are
 * read by a strict, allocation-free JSON reader: exactly one object, strings
 * with their real length (a "\u0000" in a name is a byte like any other), a
 * member given twice refused. Server messages (READY, DATA, STATUS, ERROR)
 * are built with cJSON, sized from their content, every string escaped and
 * valid UTF-8. Pure: no I/O, no logging; workers/session.c drives them. */
#ifndef INTAKE_MESSAGE_H
#define INTAKE_MESSAGE_H

#include "upload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum message_type { MSG_BAD, MSG_START, MSG_DONE };

/* One client message: a WebSocket control message (a JSON object), or with
 * line a raw TCP header line (a JSON object or "SIZE NAME", no line end).
 * MSG_START fills r; MSG_DONE (whether DONE is allowed here is the caller's
 * call); MSG_BAD fills e (400, or 413 for a plain size past 2^64). */
enum message_type message_parse(const char *buf, size_t len, bool line, struct upload_request *r,
                                struct upload_error *e);
/* The parts, for tests and fuzzing: a START object; the plain form. 0 or -1. */
int message_parse_start(const char *json, size_t len, struct upload_request *r,
                        struct upload_error *e);
int message_parse_plain(const char *line, size_t len, struct upload_request *r,
                        struct upload_error *e);

/* Server messages: one JSON object (no line end), NUL-terminated; the caller
 * frees it. NULL only when out of memory. *len gets the length. */
/* The answer to START: READY (raw TCP), or the first DATA (WebSocket). */
char *message_ready(const struct upload *u, bool websocket, bool resumed, size_t *len);
char *message_status(const struct upload *u, size_t *len);
char *message_error(const struct upload_error *e, size_t *len);
/* WebSocket's acknowledgement of a data message of n bytes, into buf (at
 * least 128 bytes). Returns the length. */
int message_ack(const struct upload *u, uint64_t n, char *buf, size_t cap);

/* Adds a string member holding s[0..n) to a cJSON object as above (through a
 * raw item: cJSON's own strings end at a NUL and copy invalid UTF-8).
 * *replaced (may be NULL) is set when bytes were not UTF-8. 0 or -1. */
struct cJSON;
int message_json_add(struct cJSON *o, const char *key, const void *s, size_t n, bool *replaced);

#endif
