/* resume: START with an id. Finds an upload by its record in the spool,
 * whichever worker or process began it, and takes it over. Everything here
 * blocks (file opens, locks, reading a record, rehashing up to 1 GiB and
 * more): it runs on a job thread, never on the event loop.
 *
 * One writer per upload: the holder keeps an OFD lock on the .part (F_OFD_
 * SETLK: per open file, so it also excludes another connection of the same
 * worker, and the kernel drops it when the holder dies, kill -9 included).
 * A .part that is locked and complete is being finished: the caller asks
 * again shortly. Locked and incomplete: another connection still receives
 * it (409 until its idle_timeout drops it). */
#define _GNU_SOURCE
#include "upload.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool matches(const struct record *rec, const struct upload_request *r)
{
    return rec->filename_len == r->filename_len &&
           memcmp(rec->filename, r->filename, r->filename_len) == 0 && rec->size == r->size &&
           rec->has_want == r->has_sha256 &&
           (!r->has_sha256 || memcmp(rec->want, r->sha256, 32) == 0);
}

/* u from its record: everything but the open files. */
static int from_record(struct upload *u, const struct record *rec, unsigned seq,
                       struct upload_error *e)
{
    const char *why = "";
    if (upload_texts(u) < 0) {
        upload_fail(e, 500, "out of memory");
        return -1;
    }
    if (store_sanitize_name(rec->filename, rec->filename_len, u->name, &why) < 0) {
        upload_fail(e, 404, "upload %s is unknown", rec->id);
        return -1;
    }
    snprintf(u->id, sizeof u->id, "%s", rec->id);
    if (upload_set_filename(u, rec->filename, rec->filename_len) < 0) {
        upload_fail(e, 500, "out of memory");
        return -1;
    }
    u->size = rec->size;
    u->has_want = rec->has_want;
    memcpy(u->want, rec->want, 32);
    memcpy(u->digest, rec->digest, 32);
    u->created = rec->created;
    u->token_expiry = rec->token_expiry;
    u->durable = rec->durable;
    u->durable_ms = 0;
    u->steps = rec->steps;
    u->record_seq = seq + 1;
    u->scanned = (enum upload_verdict)rec->verdict;
    u->verdict = rec->steps & RECORD_PLACED ? u->scanned
                 : rec->reason[0]           ? VERDICT_ERROR
                                            : VERDICT_NONE;
    snprintf(u->virus, UPLOAD_TEXT_CAP, "%s", rec->virus);
    snprintf(u->reason, UPLOAD_TEXT_CAP, "%s", rec->reason);
    /* stored_as names the file in accept_dir only. */
    bool accepted = rec->verdict != RV_INFECTED && (rec->steps & RECORD_PLACED);
    snprintf(u->stored, UPLOAD_NAME_CAP, "%s", accepted ? rec->stored : "");
    snprintf(u->placed, UPLOAD_NAME_CAP, "%s", rec->stored);
    /* Named before its hook and publish: that name, for good. */
    u->named = rec->name[0] != '\0';
    if (u->named && !(rec->steps & RECORD_PLACED))
        snprintf(u->stored, UPLOAD_NAME_CAP, "%s", rec->name);
    u->resumed = true;
    clock_gettime(CLOCK_MONOTONIC, &u->started);
    return 0;
}

static enum upload_found final(struct upload *u, struct store *st, const struct record *rec,
                               unsigned seq, struct upload_error *e)
{
    if (from_record(u, rec, seq, e) < 0) return FOUND_ERROR;
    /* A crash between recording the placement and removing the spool
     * entry leaves the .part behind: it is no longer needed. And the
     * answer waits for a spool fsync: the upload's own may have failed, or
     * not have run yet (it is still finishing on another connection). */
    int rc = store_discard_part(st, rec->id);
    if (rc < 0) {
        log_error("upload %s: asked again, but syncing the spool directory failed: %s", rec->id,
                  strerror(-rc));
        upload_release(u);
        return upload_fail(e, 500, "cannot sync the spool directory"), FOUND_ERROR;
    }
    u->phase = UPLOAD_DONE;
    return FOUND_FINAL;
}

enum upload_found upload_find(struct upload *u, struct store *st, const struct upload_request *r,
                              struct upload_error *e)
{
    upload_release(u);
    const char *id = r->resume_id;
    static _Thread_local struct record rec; /* 4 KiB of filename: not on the stack */
    unsigned seq = 0;
    /* A few rounds: the holder may finish (and remove the .part) between
     * our reading its record and opening or locking the .part. */
    for (int round = 0; round < 3; round++) {
        int rc = record_load(st->spool_fd, id, &rec, &seq);
        if (rc == -EINVAL)
            log_warn("upload %s: its record in the spool is unreadable; answering 404", id);
        if (rc < 0) return upload_fail(e, 404, "upload %s is unknown or expired", id), FOUND_ERROR;
        if (!matches(&rec, r)) {
            /* The client hears SPEC's words exactly; the operator, which. */
            log_info("upload %s: a resume with another filename, size or sha256 than its "
                     "first START; refused (409)",
                     id);
            return upload_fail(e, 409, "resume does not match"), FOUND_ERROR;
        }
        if (rec.steps & RECORD_PLACED) return final(u, st, &rec, seq, e);
        int fd = store_open_part(st, id, O_WRONLY);
        if (fd < 0) {
            if (fd == -ENOENT) continue; /* finished meanwhile, or gone */
            log_error("upload %s: cannot open its spool file: %s", id, strerror(-fd));
            return upload_fail(e, 500, "cannot open the spool file"), FOUND_ERROR;
        }
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        struct stat sb;
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
            int en = errno;
            bool complete = fstat(fd, &sb) == 0 && (uint64_t)sb.st_size >= rec.size;
            close(fd);
            if (en != EAGAIN && en != EACCES) {
                log_error("upload %s: cannot lock its spool file: %s", id, strerror(en));
                return upload_fail(e, 500, "cannot lock the spool file"), FOUND_ERROR;
            }
            /* Finishing records RECORD_RECEIVED first thing (after the
             * fsync); until then a complete, locked upload may as well be
             * a WebSocket one whose sender has not said DONE. */
            if (complete) return rec.steps & RECORD_RECEIVED ? FOUND_FINISHING : FOUND_HELD;
            log_info("upload %s: still being received on another connection; a resume is "
                     "refused (409) until that one is closed",
                     id);
            return upload_fail(e, 409, "upload in use"), FOUND_ERROR;
        }
        /* Ours now. Gone while we locked it? Then look again. */
        if (fstat(fd, &sb) < 0 || sb.st_nlink == 0) {
            close(fd);
            continue;
        }
        /* The record may have moved on before we held the lock. */
        if (record_load(st->spool_fd, id, &rec, &seq) < 0 || !matches(&rec, r)) {
            close(fd);
            continue;
        }
        if (rec.steps & RECORD_PLACED) {
            close(fd);
            return final(u, st, &rec, seq, e);
        }
        if (from_record(u, &rec, seq, e) < 0) {
            close(fd);
            return FOUND_ERROR;
        }
        uint64_t have = (uint64_t)sb.st_size;
        /* After a reboot the page cache is gone and the tail of the .part may
         * be zeros: keep only what an fdatasync made durable. */
        const char *boot = record_boot_id();
        if (!(rec.steps & RECORD_RECEIVED) && (!boot[0] || strcmp(rec.boot, boot) != 0)) {
            if (have > rec.durable) {
                log_info("upload %s: written before a restart of the machine; resuming from the "
                         "%llu bytes made durable (of %llu received)",
                         id, (unsigned long long)rec.durable, (unsigned long long)have);
                if (ftruncate(fd, (off_t)rec.durable) < 0) {
                    close(fd);
                    return upload_fail(e, 500, "cannot cut the spool file back"), FOUND_ERROR;
                }
            }
            have = rec.durable < have ? rec.durable : have;
        }
        if (have > rec.size) have = rec.size; /* never more than announced */
        if ((rec.steps & RECORD_RECEIVED) && have != rec.size) {
            log_error("upload %s: its record says complete but the spool file holds %llu of "
                      "%llu bytes; answering 404",
                      id, (unsigned long long)have, (unsigned long long)rec.size);
            close(fd);
            return upload_fail(e, 404, "upload %s is unknown or expired", id), FOUND_ERROR;
        }
        u->fd = fd;
        u->rfd = store_open_part(st, id, O_RDONLY);
        if (u->rfd < 0 || lseek(fd, (off_t)have, SEEK_SET) < 0) {
            upload_release(u);
            return upload_fail(e, 500, "cannot reopen the spool file"), FOUND_ERROR;
        }
        /* Resumed now: the sweep measures resume_timeout from here. */
        futimens(fd, NULL);
        u->spool_mark = store_dir_mark(st, st->spool_fd);
        snprintf(u->id, sizeof u->id, "%s", id);
        u->received = u->wb_started = u->wb_done = have;
        u->phase = UPLOAD_RECEIVING;
        if (rec.steps & RECORD_HASHED) {
            u->hashed = have;
            return FOUND_COMPLETE;
        }
        /* OpenSSL cannot resume a SHA-256 from a saved state: hash again
         * what is kept, so the final digest covers exactly the file. */
        u->md = EVP_MD_CTX_new();
        u->hashed = 0;
        if (!u->md || EVP_DigestInit_ex(u->md, EVP_sha256(), NULL) != 1 ||
            upload_rehash(u, have) < 0) {
            log_error("upload %s: cannot rehash the %llu bytes kept: %s", id,
                      (unsigned long long)have, strerror(errno));
            upload_release(u);
            return upload_fail(e, 500, "cannot read the spool file back"), FOUND_ERROR;
        }
        return have == rec.size ? FOUND_COMPLETE : FOUND_RECEIVING;
    }
    return upload_fail(e, 404, "upload %s is unknown or expired", id), FOUND_ERROR;
}
