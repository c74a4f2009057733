/* upload: one file's journey, independent of the transport that carries it.
 * A transport turns its framing into calls: upload_begin (START), upload_write
 * (data), and, once upload_complete says every byte is in, upload_finalize
 * (off the event loop). It sends the JSON these functions format. Errors come
 * back as protocol error codes (400, 413, 422, 507...) with a message meant for the
 * client. The session owns the spool fds until it is finalized or aborted; an
 * aborted upload leaves its .part in the spool (resumable).
 *
 * upload_write only writes: SHA-256 is computed by upload_hash, which reads
 * the written bytes back (page cache) on a job thread, so hashing runs on
 * another core beside the event loop instead of between its reads. */
#ifndef INTAKE_UPLOAD_H
#define INTAKE_UPLOAD_H

#include "record.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define UPLOAD_FILENAME_MAX 4096
#define UPLOAD_TOKEN_MAX 1024
#define UPLOAD_CONTROL_MAX 8192 /* a header line / control message: 431 beyond */
#define UPLOAD_LOGNAME_MAX 512
#define UPLOAD_NAME_CAP (STORE_NAME_MAX + 1)
#define UPLOAD_TEXT_CAP 128

struct upload_error {
    int code;
    char message[256];
};

/* What a client asked for in START (or the raw TCP plain form). */
struct upload_request {
    char filename[UPLOAD_FILENAME_MAX + 1]; /* filename_len bytes (NULs included), then NUL */
    size_t filename_len;
    uint64_t size;
    bool has_sha256;
    unsigned char sha256[32];
    char token[UPLOAD_TOKEN_MAX + 1];
    int64_t token_expiry; /* the checked token's EXPIRY, 0: none */
    char resume_id[STORE_ID_LEN + 1];
};

enum upload_verdict {
    VERDICT_NONE,
    VERDICT_CLEAN,
    VERDICT_INFECTED,
    VERDICT_UNSCANNED,
    VERDICT_ERROR,
    /* Only from an upload_scan_fn cut short by the worker's shutdown_timeout:
     * no verdict, never recorded nor sent; the file is scanned again. */
    VERDICT_STOPPED
};

enum upload_phase { UPLOAD_IDLE, UPLOAD_RECEIVING, UPLOAD_SEALED, UPLOAD_DONE };

struct upload_limits {
    uint64_t max_file_size;
    /* Bytes other uploads in progress have announced and not yet written:
     * START's free-space check leaves room for them too. */
    uint64_t promised;
};

/* The scanner seam: given the complete, fsynced file, decide a verdict.
 * Blocking (runs on a job thread). Writes the virus name or error reason. */
typedef enum upload_verdict (*upload_scan_fn)(void *ctx, int fd, const char *id, char *virus,
                                              size_t virus_len, char *reason, size_t reason_len);

struct upload_policy {
    upload_scan_fn scan; /* NULL: scanner off, verdict unscanned */
    void *scan_ctx;
    bool scan_fail_accept; /* scan error: accept the file anyway (logged loudly) */
    bool infected_delete;  /* infected: delete instead of quarantine */
    bool hook;             /* accept_hook: a file that passed is hooked before placement */
    bool publish;          /* publish: a file that passed is announced before placement */
    bool accept_off;       /* accept_dir off: "placement" removes the file */
};

struct upload {
    enum upload_phase phase;
    char id[STORE_ID_LEN + 1];
    /* The client's name as it sent it (may hold NULs), and the same escaped
     * and shortened for the log: on the heap, sized to fit (an idle
     * connection keeps no 4 KiB name buffer), "" before the first upload,
     * kept after an upload ends for its STATUS and log line. */
    char *filename;
    size_t filename_len;
    char *logname;
    /* Names and texts the upload produces, in one heap block from its START
     * (or lookup) until the connection lets it go after STATUS: an idle
     * connection holds none (they read "" then). Capacities: UPLOAD_NAME_CAP
     * and UPLOAD_TEXT_CAP bytes. */
    char *name;   /* sanitized */
    char *stored; /* stored_as: name in accept_dir, or "" */
    char *placed; /* name in accept_dir or quarantine_dir */
    uint64_t size, received;
    uint64_t wb_started, wb_done; /* write-behind (upload_hash): asked for, written */
    int fd;   /* the spool file, write-only */
    int rfd;  /* the same file, read-only: hashing and scanning */
    void *md; /* EVP_MD_CTX, owned by whoever hashes (one job at a time) */
    uint64_t hashed;
    bool has_want;
    unsigned char want[32], digest[32];
    bool resumed; /* picked up again by START with its id */
    bool named;   /* stored holds the stored_as chosen (and recorded) before the
                     hook and the publish; placement links exactly that name */
    enum upload_verdict verdict; /* the outcome told to the client */
    enum upload_verdict scanned; /* the scan's verdict, with RECORD_SCANNED */
    int record_fd;               /* spool/<id>.state, open from the first save to release */
    char *virus;
    char *reason;
    struct timespec started;
    /* What the durable record (record.h) says, kept in step with it. */
    int64_t created, token_expiry;
    uint64_t durable; /* bytes made durable on this boot */
    int64_t durable_ms; /* when (CLOCK_MONOTONIC), 0: not yet */
    unsigned steps;   /* enum record_step bits */
    unsigned record_seq; /* the next save's number (record.h: slots) */
    uint64_t spool_mark; /* store_dir_mark of the spool once the record's name was there */
};

void upload_init(struct upload *u);
/* Validates the request, checks limits and free space, creates the spool file.
 * 0, or -1 with e filled; the session stays IDLE then. */
int upload_begin(struct upload *u, struct store *st, const struct upload_limits *lim,
                 const struct upload_request *r, struct upload_error *e);
/* Appends client bytes (never more than size - received). 0 or -1 with e. */
int upload_write(struct upload *u, const void *buf, size_t len, struct upload_error *e);
/* The same for len bytes waiting in a pipe (moved with splice, no copy
 * through user space). On error the pipe may still hold bytes: the caller
 * empties it. 0 or -1 with e. */
int upload_splice(struct upload *u, int pipe_rd, size_t len, struct upload_error *e);
static inline uint64_t upload_remaining(const struct upload *u)
{
    return u->size - u->received;
}
static inline bool upload_complete(const struct upload *u)
{
    return u->phase == UPLOAD_RECEIVING && u->received == u->size;
}
/* Blocking (a job thread): hashes the written bytes up to offset upto, and
 * has the disk write them behind (upload.c). 0 or -1. */
int upload_hash(struct upload *u, uint64_t upto);
/* The same for bytes read back from the disk (a resume after a restart):
 * by pread, so a read error fails the upload instead of the worker. */
int upload_rehash(struct upload *u, uint64_t upto);
/* Bytes written but not hashed yet. */
static inline uint64_t upload_unhashed(const struct upload *u)
{
    return u->received - u->hashed;
}
/* Blocking (a job thread): finishes the checksum and compares it with the
 * client's (-1 with e: 422, the spool file removed, nothing accepted); then
 * fsync, scan, and place the file by verdict (accept_dir, quarantine,
 * deleted, or kept in the spool), unless the scan was stopped (the upload
 * is left sealed, as upload_scan_place says). Sets verdict/stored/virus/
 * reason. Touches only this upload and the store's fds. */
int upload_finalize(struct upload *u, struct store *st, const struct upload_policy *p,
                    struct upload_error *e);
/* upload_finalize in two legs, so that the scanner round trip can run on
 * threads of its own: upload_seal_sync (checksum, fsync: -1 as above; 1 if a
 * step failed and the upload is done with verdict error; 0: sealed, phase
 * UPLOAD_SEALED), then upload_scan_place (scan and placement; the upload is
 * done, unless the scan was stopped: then it is still sealed, nothing
 * recorded). Steps a resumed upload has recorded are skipped, as there. */
int upload_seal_sync(struct upload *u, struct store *st, struct upload_error *e);
void upload_scan_place(struct upload *u, struct store *st, const struct upload_policy *p);
/* With an accept hook or publish, finishing goes on after the scan in more
 * legs, some of them on the event loop (workers/hook.c, workers/publish.c):
 * upload_scan_step (blocking: scan; a file that passed gets its stored_as
 * now, reserved and recorded; 0, or 1 if the step failed and the upload is
 * done with verdict error, or 2: the scan was stopped, still sealed), then,
 * as upload_next says, the hook and the publish, each outcome recorded with
 * upload_step_done (blocking: 0, or 1: failed, done), then
 * upload_place_step (blocking: placement; done). The spool fds, and so the
 * one writer's lock, are held until the upload is done: nobody else can
 * take it over meanwhile. */
enum upload_next { NEXT_HOOK, NEXT_PUBLISH, NEXT_PLACE };
int upload_scan_step(struct upload *u, struct store *st, const struct upload_policy *p);
enum upload_next upload_next(const struct upload *u, const struct upload_policy *p);
/* The file passed the scan: clean, unscanned, or a scan error let through. */
bool upload_passed(const struct upload *u);
int upload_step_done(struct upload *u, struct store *st, unsigned step, bool ok, const char *reason);
void upload_place_step(struct upload *u, struct store *st, const struct upload_policy *p);
/* Drops the session: closes the spool fd; the .part stays (resumable). */
void upload_abort(struct upload *u);
void upload_release(struct upload *u);

/* Sets the client's filename (len bytes, NULs and all; at most
 * UPLOAD_FILENAME_MAX) and its log form. 0, or -1 (out of memory). */
int upload_set_filename(struct upload *u, const char *name, size_t len);
/* Frees what the session holds on the heap (after upload_release): its
 * names and texts read "" afterwards. */
void upload_free(struct upload *u);
/* Gives the session its names and texts block (before it writes them). 0 or
 * -1 (out of memory). */
int upload_texts(struct upload *u);
/* The upload's durable record: fills r from u. */
void upload_to_record(const struct upload *u, struct record *r);
/* Saves it in its next slot (sync: fdatasync after). 0 or -errno, logged. */
int upload_save_record(struct upload *u, struct store *st, bool sync);
/* Blocking (a job thread), while receiving: makes the bytes written before
 * upto durable (fdatasync) and records that, once UPLOAD_CHECKPOINT bytes
 * have come since the last time and at most every UPLOAD_CHECKPOINT_MS (a
 * fast upload is not held up by a sync every 32 MiB). 0 or -1. */
#define UPLOAD_CHECKPOINT (32u << 20)
#define UPLOAD_CHECKPOINT_MS 1000
int upload_checkpoint(struct upload *u, struct store *st, uint64_t upto);

/* What START with an id found (resume.c). */
enum upload_found {
    FOUND_ERROR,     /* e says why: 404 unknown, 409 mismatch or in use, 500 */
    FOUND_FINISHING, /* complete and being finished elsewhere: ask again shortly */
    /* Complete and held elsewhere, finishing not yet recorded: about to be
     * finished, or a WebSocket sender that has not sent DONE. Ask again
     * shortly, for a while; then it is "upload in use". */
    FOUND_HELD,
    FOUND_RECEIVING, /* u holds it (locked, hashed up to u->received): send the rest */
    FOUND_COMPLETE,  /* u holds it, every byte in: run upload_finalize */
    FOUND_FINAL,     /* u describes its final STATUS (phase UPLOAD_DONE) */
};
/* Blocking (a job thread): finds the upload r->resume_id in the spool, checks
 * that r matches what its first START announced, takes it over (an OFD lock
 * on its .part: one writer across all workers, dropped by the kernel if this
 * process dies), cuts a .part written before a reboot back to what was made
 * durable, and rehashes what is kept. */
enum upload_found upload_find(struct upload *u, struct store *st, const struct upload_request *r,
                              struct upload_error *e);

/* Fills e with code and a message for the client. Returns -1. */
int upload_fail(struct upload_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *upload_verdict_name(enum upload_verdict v);
void upload_hex(const unsigned char *bin, size_t n, char *out);

#endif
