/* sweep: see sweep.h. */
#define _GNU_SOURCE
#include "sweep.h"

#include "log.h"
#include "record.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Whether s starts with an upload id (32 lowercase hex digits). */
static bool is_id(const char *s)
{
    for (int i = 0; i < STORE_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

/* The upload id an entry belongs to, and its kind, or NULL. */
static const char *kind_of(const char *name)
{
    size_t n = strlen(name);
    if (n <= STORE_ID_LEN || name[STORE_ID_LEN] != '.' || !is_id(name)) return NULL;
    const char *k = name + STORE_ID_LEN;
    if (strcmp(k, ".part") == 0 || strcmp(k, ".state") == 0 || strcmp(k, ".state.tmp") == 0)
        return k;
    return NULL;
}

/* Modification time in nanoseconds: the sweep must not take an upload a
 * fraction of a second before its deadline. */
static bool mtime_of(int dfd, const char *name, int64_t *t, off_t *size)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) return false;
    *t = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (size) *size = st.st_size;
    return true;
}

/* Expires one upload if all its files are older than limit and no worker
 * holds it. 1 if removed. */
static int expire(int dfd, const char *entry, int64_t now, uint64_t limit_ms)
{
    char id[STORE_ID_LEN + 1];
    snprintf(id, sizeof id, "%.32s", entry);
    char part[48], state[48], tmp[48];
    snprintf(part, sizeof part, "%.32s.part", id);
    snprintf(state, sizeof state, "%.32s.state", id);
    snprintf(tmp, sizeof tmp, "%.32s.state.tmp", id);
    int64_t newest = 0, t;
    off_t size = -1;
    bool has_part = mtime_of(dfd, part, &t, &size);
    if (has_part && t > newest) newest = t;
    if (mtime_of(dfd, state, &t, NULL) && t > newest) newest = t;
    if (mtime_of(dfd, tmp, &t, NULL) && t > newest) newest = t;
    if (newest == 0 || now - newest < (int64_t)limit_ms * 1000000) return 0;
    int fd = -1;
    if (has_part) {
        /* A worker holding it keeps it, however old its files look; our
         * own lock keeps a worker from taking it while it goes. */
        fd = openat(dfd, part, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
        if (fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) < 0) {
            close(fd);
            return 0;
        }
    }
    static struct record rec;
    unsigned seq;
    bool known = record_load(dfd, id, &rec, &seq) == 0;
    unlinkat(dfd, part, 0);
    unlinkat(dfd, state, 0);
    unlinkat(dfd, tmp, 0);
    if (fd >= 0) close(fd);
    double secs = (double)limit_ms / 1e3;
    if (known && (rec.steps & RECORD_PLACED))
        log_debug("upload %.32s: verdict kept for resume_timeout (%g s); forgotten", id, secs);
    else if (known && rec.reason[0])
        log_warn("upload %.32s: kept in the spool after verdict error (%s) and not asked for again "
                 "within resume_timeout (%g s); %lld bytes removed",
                 id, rec.reason, secs, (long long)(size < 0 ? 0 : size));
    else
        log_info("upload %.32s: not resumed within resume_timeout (%g s); %lld bytes removed "
                 "from the spool",
                 id, secs, (long long)(size < 0 ? 0 : size));
    return 1;
}

/* Name reservations (spool/.names/<name>, holding an upload id) whose
 * upload left no file in the spool: it failed, was never asked for again
 * and expired, or a crash came between reserving and recording. Without
 * this they would stay for ever, and their names be skipped for ever. At
 * most batch entries; those older than limit_ms only. */
static void sweep_names(int dfd, int64_t now, uint64_t limit_ms, unsigned batch)
{
    int nfd = openat(dfd, STORE_NAMES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = nfd < 0 ? NULL : fdopendir(nfd);
    if (!d) {
        if (nfd >= 0) close(nfd);
        return;
    }
    struct dirent *e;
    for (unsigned n = 0; n < batch && (e = readdir(d)); n++) {
        int64_t t;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (!mtime_of(nfd, e->d_name, &t, NULL)) continue;
        if (now - t < (int64_t)limit_ms * 1000000) continue;
        char id[STORE_ID_LEN + 1];
        ssize_t got = store_reservation_owner(nfd, e->d_name, id);
        if (got < 0) continue;
        bool valid = got == STORE_ID_LEN && is_id(id);
        char part[48], state[48];
        snprintf(part, sizeof part, "%.32s.part", id);
        snprintf(state, sizeof state, "%.32s.state", id);
        if (valid && (faccessat(dfd, part, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
                      faccessat(dfd, state, F_OK, AT_SYMLINK_NOFOLLOW) == 0))
            continue;
        if (unlinkat(nfd, e->d_name, 0) == 0)
            log_info("upload %.32s: removed a name reservation in %s/ that outlived its upload",
                     valid ? id : "(unreadable id)", STORE_NAMES_DIR);
    }
    closedir(d);
}

int sweep_step(struct sweep *s, const char *spool_dir, uint64_t limit_ms, unsigned batch)
{
    if (s->d && strcmp(s->dir, spool_dir) != 0) sweep_close(s); /* a reload moved it */
    if (!s->d) {
        snprintf(s->dir, sizeof s->dir, "%s", spool_dir);
        if (!(s->d = opendir(spool_dir))) return -errno;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int dfd = dirfd(s->d);
    int removed = 0;
    for (unsigned n = 0; n < batch; n++) {
        struct dirent *e = readdir(s->d);
        if (!e) {
            sweep_names(dfd, now, limit_ms, batch);
            sweep_close(s); /* the pass is done: the next call starts one */
            break;
        }
        const char *k = kind_of(e->d_name);
        /* Each upload once: by its record, or by a file that has none. */
        if (!k) continue;
        if (strcmp(k, ".state") != 0) {
            char state[48];
            snprintf(state, sizeof state, "%.32s.state", e->d_name);
            if (faccessat(dfd, state, F_OK, AT_SYMLINK_NOFOLLOW) == 0) continue;
        }
        removed += expire(dfd, e->d_name, now, limit_ms);
    }
    return removed;
}

int sweep_spool(const char *spool_dir, uint64_t limit_ms)
{
    struct sweep s = {0};
    int removed = 0;
    do {
        int rc = sweep_step(&s, spool_dir, limit_ms, SWEEP_BATCH);
        if (rc < 0) return rc;
        removed += rc;
    } while (s.d);
    return removed;
}

void sweep_close(struct sweep *s)
{
    if (s->d) closedir(s->d);
    s->d = NULL;
}
