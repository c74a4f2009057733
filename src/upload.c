/* upload: see upload.h. */
#define _GNU_SOURCE
#include "upload.h"

#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int upload_fail(struct upload_error *e, int code, const char *fmt, ...)
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

/* What every name and text of a session without its heap block reads. */
static char no_name[1];

static void texts_none(struct upload *u)
{
    no_name[0] = '\0';
    u->name = u->stored = u->placed = u->virus = u->reason = no_name;
}

void upload_init(struct upload *u)
{
    memset(u, 0, sizeof *u);
    u->fd = u->rfd = u->record_fd = -1;
    u->filename = u->logname = no_name;
    texts_none(u);
}

int upload_texts(struct upload *u)
{
    if (u->name != no_name) return 0;
    char *b = calloc(1, 3 * UPLOAD_NAME_CAP + 2 * UPLOAD_TEXT_CAP);
    if (!b) return -1;
    u->name = b;
    u->stored = b + UPLOAD_NAME_CAP;
    u->placed = b + 2 * UPLOAD_NAME_CAP;
    u->virus = b + 3 * UPLOAD_NAME_CAP;
    u->reason = b + 3 * UPLOAD_NAME_CAP + UPLOAD_TEXT_CAP;
    return 0;
}

static void filename_none(struct upload *u)
{
    if (u->filename != no_name) free(u->filename);
    if (u->logname != no_name) free(u->logname);
    u->filename = u->logname = no_name;
    u->filename_len = 0;
}

void upload_free(struct upload *u)
{
    filename_none(u);
    if (u->name != no_name) free(u->name);
    texts_none(u);
}

int upload_begin(struct upload *u, struct store *st, const struct upload_limits *lim,
                 const struct upload_request *r, struct upload_error *e)
{
    upload_release(u);
    if (upload_texts(u) < 0) return upload_fail(e, 500, "out of memory");
    const char *why = "";
    if (store_sanitize_name(r->filename, r->filename_len, u->name, &why) < 0)
        return upload_fail(e, 400, "%s", why);
    if (r->resume_id[0]) /* START with an id goes to upload_find */
        return upload_fail(e, 404, "upload %s is unknown or expired", r->resume_id);
    if (r->size > lim->max_file_size)
        return upload_fail(e, 413, "file of %llu bytes is larger than the limit of %llu bytes",
                           (unsigned long long)r->size, (unsigned long long)lim->max_file_size);
    int rc = store_check_space(st, r->size + lim->promised);
    if (rc == -ENOSPC)
        return upload_fail(e, 507, "not enough free space on the server for %llu bytes",
                           (unsigned long long)r->size);
    if (rc < 0) return upload_fail(e, 500, "cannot check free space: %s", strerror(-rc));
    store_new_id(u->id);
    int fd = store_create_part(st, u->id);
    if (fd < 0) {
        log_error("upload %s: cannot create spool file: %s", u->id, strerror(-fd));
        return upload_fail(e, fd == -ENOSPC ? 507 : 500, "cannot create the spool file");
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
        return upload_fail(e, 500, "cannot start the upload");
    }
    u->fd = fd;
    u->rfd = rfd;
    u->md = md;
    u->hashed = 0;
    if (upload_set_filename(u, r->filename, r->filename_len) < 0) {
        upload_release(u);
        store_discard_part(st, u->id);
        return upload_fail(e, 500, "out of memory");
    }
    u->size = r->size;
    u->received = u->wb_started = u->wb_done = 0;
    u->has_want = r->has_sha256;
    memcpy(u->want, r->sha256, sizeof u->want);
    u->verdict = u->scanned = VERDICT_NONE;
    u->stored[0] = u->placed[0] = u->virus[0] = u->reason[0] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &u->started);
    u->created = (int64_t)time(NULL);
    u->token_expiry = r->token_expiry;
    u->durable = 0;
    u->durable_ms = 0;
    u->steps = 0;
    u->record_seq = 0;
    u->resumed = u->named = false;
    u->phase = UPLOAD_RECEIVING;
    /* Not fsynced: until bytes are made durable there is nothing to lose,
     * and a record lost with the machine reads as an unknown upload. */
    if (upload_save_record(u, st, false) < 0) {
        upload_release(u);
        store_discard_part(st, u->id);
        return upload_fail(e, 500, "cannot record the upload in the spool");
    }
    u->spool_mark = store_dir_mark(st, st->spool_fd);
    return 0;
}

int upload_set_filename(struct upload *u, const char *name, size_t len)
{
    char log[UPLOAD_LOGNAME_MAX + 1];
    size_t used;
    size_t ll = log_escape(log, UPLOAD_LOGNAME_MAX - 3, name, len, &used);
    if (used < len) {
        memcpy(log + ll, "...", 3);
        ll += 3;
    }
    log[ll] = '\0';
    char *f = malloc(len + 1), *l = malloc(ll + 1);
    if (!f || !l) {
        free(f);
        free(l);
        return -1;
    }
    memcpy(f, name, len);
    f[len] = '\0';
    memcpy(l, log, ll + 1);
    filename_none(u);
    u->filename = f;
    u->logname = l;
    u->filename_len = len;
    return 0;
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
    if (u->named) snprintf(r->name, sizeof r->name, "%s", u->stored);
}

int upload_save_record(struct upload *u, struct store *st, bool sync)
{
    static _Thread_local struct record r; /* 4 KiB of filename: not on the stack */
    upload_to_record(u, &r);
    /* Kept open between saves: each open was a lookup in a spool
     * directory that holds an hour of records. */
    if (u->record_fd < 0) u->record_fd = record_open(st->spool_fd, u->id, u->record_seq == 0);
    int rc = u->record_fd < 0 ? u->record_fd : record_write(u->record_fd, &r, u->record_seq, sync);
    if (rc < 0)
        log_error("upload %s: cannot write its record in the spool: %s", u->id, strerror(-rc));
    else
        u->record_seq++; /* a failed save is redone in the same slot */
    return rc;
}

int upload_checkpoint(struct upload *u, struct store *st, uint64_t upto)
{
    if (upto < u->durable + UPLOAD_CHECKPOINT) return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (u->durable_ms && ms - u->durable_ms < UPLOAD_CHECKPOINT_MS) return 0;
    if (fdatasync(u->fd) < 0) {
        log_error("upload %s: fdatasync of the spool file failed: %s", u->id, strerror(errno));
        return -1;
    }
    u->durable = upto;
    u->durable_ms = ms;
    return upload_save_record(u, st, true) < 0 ? -1 : 0;
}

int upload_write(struct upload *u, const void *buf, size_t len, struct upload_error *e)
{
    if (u->phase != UPLOAD_RECEIVING) return upload_fail(e, 400, "data outside an upload");
    if (len > upload_remaining(u))
        return upload_fail(e, 400, "more data than the announced size of %llu bytes",
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
            return upload_fail(e, en == ENOSPC || en == EDQUOT ? 507 : 500,
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
    if (u->phase != UPLOAD_RECEIVING) return upload_fail(e, 400, "data outside an upload");
    if (len > upload_remaining(u))
        return upload_fail(e, 400, "more data than the announced size of %llu bytes",
                           (unsigned long long)u->size);
    size_t left = len;
    while (left) {
        ssize_t n = splice(pipe_rd, NULL, u->fd, NULL, left, SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int en = n < 0 ? errno : EIO;
            log_error("upload %s: write to spool failed at byte %llu: %s", u->id,
                      (unsigned long long)(u->received + (len - left)), strerror(en));
            return upload_fail(e, en == ENOSPC || en == EDQUOT ? 507 : 500,
                               en == ENOSPC || en == EDQUOT ? "server disk is full"
                                                            : "cannot write the spool file");
        }
        left -= (size_t)n;
        u->received += (uint64_t)n;
    }
    return 0;
}

/* Write-behind, as the hash trails the writes: every WRITE_BEHIND bytes
 * hashed, the disk is asked to start writing them (sync_file_range; it
 * makes nothing durable), and the piece asked for one step before is
 * waited for, by then mostly written. So the bytes flow to the disk while
 * the rest arrives, the fsync before STATUS finds little left, and no more
 * than two pieces of one upload wait in the disk's queue, where another
 * upload's fsync would wait behind them. A hint: where the file system
 * cannot, the work is left to the fsync. */
#define WRITE_BEHIND (4u << 20)

static void write_behind(struct upload *u, uint64_t upto)
{
    if (u->wb_started == UINT64_MAX || upto < u->wb_started + WRITE_BEHIND) return;
    uint64_t prev = u->wb_started;
    if (sync_file_range(u->fd, (off64_t)prev, (off64_t)(upto - prev), SYNC_FILE_RANGE_WRITE) < 0) {
        u->wb_started = UINT64_MAX;
        return;
    }
    u->wb_started = upto;
    if (prev > u->wb_done)
        sync_file_range(u->fd, (off64_t)u->wb_done, (off64_t)(prev - u->wb_done),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
    u->wb_done = prev;
}

/* By pread, through one buffer per thread: a read error is an error here,
 * where through a mapping it would be a SIGBUS that takes the whole worker
 * down. */
int upload_rehash(struct upload *u, uint64_t upto)
{
    static _Thread_local unsigned char *buf;
    enum { BUF = 1 << 20 };
    if (!buf && !(buf = malloc(BUF))) return -1;
    while (u->hashed < upto) {
        size_t want = upto - u->hashed < BUF ? (size_t)(upto - u->hashed) : BUF;
        ssize_t n = pread(u->rfd, buf, want, (off_t)u->hashed);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            return -1;
        }
        if (EVP_DigestUpdate(u->md, buf, (size_t)n) != 1) {
            log_error("upload %s: SHA-256 update failed", u->id);
            errno = EIO;
            return -1;
        }
        u->hashed += (uint64_t)n;
    }
    return 0;
}

int upload_hash(struct upload *u, uint64_t upto)
{
    /* The bytes were just written and sit in the page cache: hash them
     * there, through a read-only mapping, instead of copying them out with
     * pread (about 15% more throughput on a 1 GiB upload). Only the part
     * the file holds is mapped: the file only grows while it is ours (the
     * OFD lock), so no page of the window can vanish under the hash. (Bytes
     * read back from the disk are hashed by upload_rehash, with pread: a
     * bad sector must fail one upload, not raise SIGBUS in the worker.)
     * Mapped pages count in the worker's RSS: 1 MiB windows keep that to a
     * few MiB however many threads hash at once (4 MiB ones took the
     * worker's peak from 12 to 28 MiB with 100 uploads, for no speed). */
    enum { WINDOW = 1 << 20, SMALL = 64 << 10 };
    /* A small rest (all of a small upload) is cheaper to read: a mapping
     * costs an mmap and a munmap, and a munmap in a threaded process
     * interrupts every CPU running one of its threads to flush its TLB. */
    if (u->hashed < upto && upto - u->hashed <= SMALL) {
        if (upload_rehash(u, upto) < 0) return -1;
        write_behind(u, u->hashed);
        return 0;
    }
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    struct stat sb;
    if (u->hashed < upto && fstat(u->rfd, &sb) < 0) return -1;
    if (u->hashed < upto && (uint64_t)sb.st_size < upto) {
        errno = EIO; /* shorter than what was written: not ours to read */
        return -1;
    }
    while (u->hashed < upto) {
        uint64_t base = u->hashed & ~(page - 1);
        size_t len = upto - base < WINDOW ? (size_t)(upto - base) : WINDOW;
        size_t skip = (size_t)(u->hashed - base);
        unsigned char *m =
            mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, u->rfd, (off_t)base);
        if (m == MAP_FAILED) {
            /* A file system that cannot map: read it instead. */
            if (upload_rehash(u, base + len) < 0) return -1;
        } else {
            int ok = EVP_DigestUpdate(u->md, m + skip, len - skip);
            munmap(m, len);
            if (ok != 1) {
                log_error("upload %s: SHA-256 update failed", u->id);
                errno = EIO;
                return -1;
            }
            u->hashed = base + len;
        }
        write_behind(u, u->hashed);
    }
    return 0;
}

/* A finishing step failed: verdict error, the file stays in the spool, and
 * the record says which step to redo when the client asks again. */
static void step_failed(struct upload *u, struct store *st, const char *reason)
{
    u->verdict = VERDICT_ERROR;
    if (reason != u->reason) snprintf(u->reason, UPLOAD_TEXT_CAP, "%s", reason);
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
        return upload_fail(e, 422, "checksum mismatch: the received data has sha256 %s", got);
    }
    u->steps |= RECORD_RECEIVED | RECORD_HASHED;
    return 0;
}

/* Step 2: the data on disk, recorded with the digest. 0 or 1 (failed).
 * The record is synced here, before the placement links the file: that
 * link comes before the placement's own save, and a crash between them
 * must find a record that says every byte is there (not a checkpoint, which
 * a resume would cut the .part back to: the very inode now in accept_dir). */
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
 * between the two scans again, which changes nothing outside. 0, 1, or 2
 * when the scan was stopped (shutdown_timeout): nothing recorded, the
 * upload stays sealed for its connection to let go of. */
static int scan(struct upload *u, struct store *st, const struct upload_policy *p)
{
    u->virus[0] = '\0';
    if (!p->scan) {
        u->verdict = VERDICT_UNSCANNED;
    } else {
        /* The spool fd is write-only: the scanner gets the read-only one. */
        u->verdict = p->scan(p->scan_ctx, u->rfd, u->id, u->virus, UPLOAD_TEXT_CAP, u->reason,
                             UPLOAD_TEXT_CAP);
        if (u->verdict == VERDICT_STOPPED) {
            u->verdict = VERDICT_NONE;
            u->reason[0] = '\0';
            return 2;
        }
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
    if (!upload_passed(u) || (!p->hook && !p->publish)) return 0;
    /* The hook and the event are told stored_as: chosen now, for good. */
    if (!p->accept_off && !u->named) {
        int rc = store_reserve_name(st, u->id, u->name, u->stored);
        if (rc < 0) {
            log_error("upload %s (%s): cannot reserve a name in accept_dir: %s; kept in the spool",
                      u->id, u->logname, strerror(-rc));
            u->stored[0] = '\0';
            step_failed(u, st, "cannot store the file");
            return 1;
        }
        u->named = true;
    }
    /* Recorded before the hook runs: a crash during it never rescans, and
     * the name stays. */
    if (upload_save_record(u, st, true) < 0) {
        step_failed(u, st, "cannot record the upload");
        return 1;
    }
    return 0;
}

static void remove_spool_entry(struct upload *u, struct store *st)
{
    int rc = store_unlink_part(st, u->id);
    if (rc < 0 && rc != -ENOENT)
        log_warn("upload %s: placed, but removing its spool entry failed: %s (the sweep will)",
                 u->id, strerror(-rc));
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
    } else if (p->accept_off) {
        where = "nowhere (accept_dir off)";
        linked = false;
    } else if (u->named) {
        rc = store_link_part_as(st, u->id, st->accept_fd, u->stored, &linked);
        if (linked) snprintf(u->placed, UPLOAD_NAME_CAP, "%s", u->stored);
        if (rc == -EEXIST) {
            /* Not intake's doing (a reservation keeps every upload of ours
             * off the name): the name was promised, so it is not changed. */
            log_error("upload %s (%s): accept_dir already holds a file named %s that this upload "
                      "did not put there; kept in the spool: move that file away, then ask "
                      "again (START with the id) to place it",
                      u->id, u->logname, u->stored);
            step_failed(u, st, "cannot store the file: its name is taken");
            return 1;
        }
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
    if (u->named) store_release_name(st, u->id, u->stored);
    /* What must be durable before STATUS is the record's own name in the
     * spool, made when the upload began: a spool fsync begun since the mark
     * covers it, and other uploads' usually have. Then the spool entry goes
     * (a re-query may have removed it already); that need not be durable.
     * A deletion must be: it goes first and takes an fsync of its own. */
    bool deleted = u->scanned == VERDICT_INFECTED && p->infected_delete;
    if (deleted) remove_spool_entry(u, st);
    rc = store_sync_dir_since(st, st->spool_fd, deleted ? 0 : u->spool_mark);
    if (rc < 0) {
        log_error("upload %s (%s): placed in %s%s%s, but syncing the spool directory failed: %s; "
                  "kept in the spool, answering error until a retry succeeds",
                  u->id, u->logname, where, u->placed[0] ? " as " : "", u->placed, strerror(-rc));
        /* The record keeps the name it was placed under: a re-query answers
         * with it once a spool fsync succeeds. */
        step_failed(u, st, "cannot sync the spool directory");
        return 1;
    }
    if (!deleted) remove_spool_entry(u, st);
    return 0;
}

/* The end of every finalize: what STATUS says, the log line, the fds. */
static void finish(struct upload *u, int rc)
{
    if (rc == 0) u->verdict = u->scanned;
    bool accepted = rc == 0 && u->verdict != VERDICT_INFECTED;
    snprintf(u->stored, UPLOAD_NAME_CAP, "%s", accepted ? u->placed : "");
    if (rc == 0) {
        char hex[65];
        upload_hex(u->digest, 32, hex);
        if (u->verdict == VERDICT_INFECTED && !u->placed[0])
            log_warn("upload %s (%s): infected with %s; deleted", u->id, u->logname, u->virus);
        else if (u->verdict == VERDICT_INFECTED)
            log_warn("upload %s (%s): infected with %s; quarantined as %s-%s", u->id, u->logname,
                     u->virus, u->id, u->placed);
        else if (!u->stored[0])
            log_info("upload %s (%s): %llu bytes, sha256 %s, %s; delivered by the accept hook, "
                     "removed from the spool (accept_dir off)",
                     u->id, u->logname, (unsigned long long)u->size, hex,
                     upload_verdict_name(u->verdict));
        else
            log_info("upload %s (%s): %llu bytes, sha256 %s, %s; stored as %s", u->id, u->logname,
                     (unsigned long long)u->size, hex, upload_verdict_name(u->verdict), u->stored);
    }
    upload_release(u);
    u->phase = UPLOAD_DONE;
}

int upload_seal_sync(struct upload *u, struct store *st, struct upload_error *e)
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
    if (rc != 0) {
        finish(u, rc);
        return 1;
    }
    u->phase = UPLOAD_SEALED;
    return 0;
}

void upload_scan_place(struct upload *u, struct store *st, const struct upload_policy *p)
{
    int rc = 0;
    if (!(u->steps & RECORD_SCANNED)) rc = scan(u, st, p);
    if (rc == 2) return;
    if (rc == 0 && !(u->steps & RECORD_PLACED)) rc = place(u, st, p);
    finish(u, rc);
}

bool upload_passed(const struct upload *u)
{
    return (u->steps & RECORD_SCANNED) && u->scanned != VERDICT_INFECTED;
}

int upload_scan_step(struct upload *u, struct store *st, const struct upload_policy *p)
{
    int rc = (u->steps & RECORD_SCANNED) ? 0 : scan(u, st, p);
    if (rc == 1) finish(u, rc);
    return rc;
}

enum upload_next upload_next(const struct upload *u, const struct upload_policy *p)
{
    if (upload_passed(u) && p->hook && !(u->steps & RECORD_HOOKED)) return NEXT_HOOK;
    if (upload_passed(u) && p->publish && !(u->steps & RECORD_PUBLISHED)) return NEXT_PUBLISH;
    return NEXT_PLACE;
}

int upload_step_done(struct upload *u, struct store *st, unsigned step, bool ok, const char *reason)
{
    if (ok) {
        u->steps |= step;
        u->reason[0] = '\0';
        if (upload_save_record(u, st, true) == 0) return 0;
        u->steps &= ~step;
        reason = "cannot record the upload";
    }
    step_failed(u, st, reason);
    finish(u, 1);
    return 1;
}

void upload_place_step(struct upload *u, struct store *st, const struct upload_policy *p)
{
    int rc = 0;
    u->verdict = u->scanned;
    if (!(u->steps & RECORD_PLACED)) rc = place(u, st, p);
    finish(u, rc);
}

int upload_finalize(struct upload *u, struct store *st, const struct upload_policy *p,
                    struct upload_error *e)
{
    int rc = upload_seal_sync(u, st, e);
    if (rc == 0) upload_scan_place(u, st, p);
    return rc < 0 ? -1 : 0;
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
    if (u->record_fd >= 0) close(u->record_fd);
    u->fd = u->rfd = u->record_fd = -1;
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
