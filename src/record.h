/* record: an upload's durable record, the file spool/<id>.state beside its
 * .part. It is what makes an upload resumable and its verdict askable again
 * from any worker, after any crash: what the client announced, how many
 * bytes are known to be on disk, which finishing steps are done, and the
 * verdict and name they produced.
 *
 * The format is line-based text, one "key value" per line between a magic
 * first line and a final "end" line, every client string hex-encoded, so a
 * record can never be confused by the bytes it carries and a truncated one
 * never parses. record_parse is pure (no allocation, I/O or globals) and
 * bounded by RECORD_MAX; any defect (truncation, unknown version, a
 * duplicate or malformed field, values that contradict each other) makes it
 * fail, and the caller treats the upload as unknown.
 *
 * The file holds two slots of RECORD_SLOT bytes, written in turn in place
 * (no temporary file, no rename: an upload's records cost the spool
 * directory nothing after the first). A slot is the record text, a seal
 * line "seal SEQ HASH" (the save's sequence number, even in slot 0 and odd
 * in slot 1, and the FNV-1a 64 hash of the text) and a NUL. The newest
 * whole slot is the record: a save torn by a crash, or read while being
 * written, fails its seal and the other slot, the save before, stands. A
 * file from before the slots (one record, no seal, written by rename)
 * reads as sequence 0. */
#ifndef INTAKE_RECORD_H
#define INTAKE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_MAX 16384 /* a record's text is never larger */
#define RECORD_SLOT (RECORD_MAX + 4096) /* slot k starts at byte k * RECORD_SLOT */
#define RECORD_ID_LEN 32
#define RECORD_FILENAME_MAX 4096
#define RECORD_NAME_MAX 255
#define RECORD_TEXT_MAX 127 /* virus name, error reason */
#define RECORD_BOOT_LEN 36  /* /proc/sys/kernel/random/boot_id */

/* Finishing steps, in the order they run (docs/protocol.md, "Resuming and re-querying"). */
enum record_step {
    RECORD_RECEIVED = 1 << 0,  /* every byte is in the .part */
    RECORD_HASHED = 1 << 1,    /* digest known and checked against the client's */
    RECORD_SYNCED = 1 << 2,    /* the .part's data is on disk */
    RECORD_SCANNED = 1 << 3,   /* verdict known (clean, infected, unscanned) */
    RECORD_HOOKED = 1 << 4,    /* the accept hook exited 0 */
    RECORD_PUBLISHED = 1 << 5, /* the stream acknowledged the event */
    RECORD_PLACED = 1 << 6,    /* moved by verdict: accepted (or removed with accept_dir
                                  off), quarantined, deleted */
};

/* The scan's verdict, with RECORD_SCANNED (values as enum upload_verdict);
 * RV_ERROR there is a scan error let through by `scan_fail accept`. */
enum record_verdict { RV_NONE, RV_CLEAN, RV_INFECTED, RV_UNSCANNED, RV_ERROR };

struct record {
    char id[RECORD_ID_LEN + 1];
    char filename[RECORD_FILENAME_MAX + 1]; /* the client's bytes; may hold NUL */
    size_t filename_len;
    uint64_t size;
    bool has_want;
    unsigned char want[32]; /* the client's sha256, when it sent one */
    int64_t created;        /* Unix seconds of the first START */
    int64_t token_expiry;   /* the token's EXPIRY at the first START; 0: none */
    char boot[RECORD_BOOT_LEN + 1];
    uint64_t durable;                 /* bytes of the .part made durable (fdatasync) on that boot */
    unsigned steps;                   /* enum record_step bits */
    unsigned char digest[32];         /* with RECORD_HASHED */
    int verdict;                      /* enum record_verdict, with RECORD_SCANNED */
    char virus[RECORD_TEXT_MAX + 1];  /* with RV_INFECTED */
    char reason[RECORD_TEXT_MAX + 1]; /* why the first step not in steps failed
                                         (or, with RV_ERROR, why the scan did) */
    char stored[RECORD_NAME_MAX + 1]; /* accept_dir/quarantine name; "" none */
    char name[RECORD_NAME_MAX + 1];   /* stored_as chosen before the hook and the
                                         publish (never changes); "" none */
};

/* Formats r into buf. Returns the length, or -1 if it does not fit. */
int record_format(const struct record *r, char *buf, size_t cap);
/* Parses a whole record file. 0, or -1 on any defect (r is then garbage). */
int record_parse(const char *buf, size_t len, struct record *r);

/* The bytes of slot seq % 2 for r: text, seal line, NUL. The length, or -1
 * if it does not fit cap (RECORD_SLOT always fits). */
int record_slot_format(const struct record *r, unsigned seq, char *buf, size_t cap);
/* Picks from a record file's bytes the newest slot that is whole. 0 with r
 * and *seq, or -1 (no whole slot; r is then garbage). Pure, like
 * record_parse. */
int record_file_parse(const char *buf, size_t len, struct record *r, unsigned *seq);

/* Writes save number seq into its slot of spool/<id>.state (save 0 creates
 * the file), then fdatasync when sync. Without sync a crash of the machine
 * may lose or garble it: only for a record that holds nothing worth keeping
 * yet. 0 or -errno. */
int record_save(int spool_fd, const struct record *r, unsigned seq, bool sync);
/* The same in two steps, for a writer that saves again and again: opens
 * spool/<id>.state for saves (create: a new, empty one; the fd, or -errno),
 * then writes save number seq into its slot of that fd (0 or -errno). */
int record_open(int spool_fd, const char *id, bool create);
int record_write(int fd, const struct record *r, unsigned seq, bool sync);
/* Reads spool/<id>.state: its newest whole slot, and that save's number in
 * *seq (the next save is *seq + 1). 0, -ENOENT, or -EINVAL (corrupt: treat
 * as unknown). */
int record_load(int spool_fd, const char *id, struct record *r, unsigned *seq);
/* Removes spool/<id>.state (and a temporary an older intake may have left). */
void record_remove(int spool_fd, const char *id);

/* This boot's id (cached), or "" if the kernel does not say. */
const char *record_boot_id(void);

#endif
