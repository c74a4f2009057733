/* store: see store.h. */
#define _GNU_SOURCE
#include "store.h"

#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

int store_mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        /* Parents as mkdir -p makes them: only the last one gets mode, or
         * with user the workers could not get through a 0750 var/ of
         * root's to a spool of their own. */
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST) return -errno;
    return 0;
}

static int open_dir(const char *path)
{
    /* mkdir -p, so `make run` works from a fresh checkout. */
    int rc = store_mkdir_p(path, 0750);
    if (rc < 0) return rc;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int store_open(struct store *s, const char *spool, const char *accept, const char *quarantine,
               const char **which)
{
    s->spool_fd = s->accept_fd = s->quarantine_fd = -1;
    for (int i = 0; i < 3; i++) {
        s->sync[i] = (struct dir_sync){.asked = 0};
        pthread_mutex_init(&s->sync[i].mu, NULL);
        pthread_cond_init(&s->sync[i].cv, NULL);
    }
    const char *paths[3] = {spool, accept, quarantine};
    int *fds[3] = {&s->spool_fd, &s->accept_fd, &s->quarantine_fd};
    for (int i = 0; i < 3; i++) {
        if (!paths[i]) continue; /* accept_dir off */
        int fd = open_dir(paths[i]);
        if (fd < 0) {
            *which = paths[i];
            store_close(s);
            return fd;
        }
        *fds[i] = fd;
    }
    return 0;
}

void store_close(struct store *s)
{
    int *fds[3] = {&s->spool_fd, &s->accept_fd, &s->quarantine_fd};
    for (int i = 0; i < 3; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
}

static struct dir_sync *dir_sync_of(struct store *s, int dir_fd)
{
    if (dir_fd < 0) return NULL;
    return dir_fd == s->spool_fd        ? &s->sync[0]
           : dir_fd == s->accept_fd     ? &s->sync[1]
           : dir_fd == s->quarantine_fd ? &s->sync[2]
                                        : NULL;
}

/* Waits until caller `me` is covered (mutex held), running the fsync when
 * none runs. 0 or -errno. */
static int sync_covering(struct dir_sync *d, int dir_fd, uint64_t me)
{
    while (d->covered < me) {
        if (d->running) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        /* Ours to run: it covers everyone who has asked by now. */
        d->running = true;
        uint64_t upto = d->asked;
        pthread_mutex_unlock(&d->mu);
        int en = fsync(dir_fd) < 0 ? errno : 0;
        pthread_mutex_lock(&d->mu);
        d->running = false;
        d->covered = upto;
        if (en) {
            d->err = en;
            d->failed = upto;
        } else {
            d->ok = upto;
        }
        pthread_cond_broadcast(&d->cv);
    }
    /* A failed fsync that was to write our change may have dropped it (on
     * Linux the pages it could not write are no longer dirty), so no later
     * success vouches for it: an error, for every caller it covered. */
    return me <= d->failed ? -d->err : 0;
}

int store_sync_dir(struct store *s, int dir_fd)
{
    return store_sync_dir_since(s, dir_fd, 0);
}

uint64_t store_dir_mark(struct store *s, int dir_fd)
{
    struct dir_sync *d = dir_sync_of(s, dir_fd);
    if (!d) return 0;
    pthread_mutex_lock(&d->mu);
    uint64_t me = ++d->asked;
    pthread_mutex_unlock(&d->mu);
    return me;
}

int store_sync_dir_since(struct store *s, int dir_fd, uint64_t mark)
{
    struct dir_sync *d = dir_sync_of(s, dir_fd);
    if (!d) return fsync(dir_fd) < 0 ? -errno : 0;
    pthread_mutex_lock(&d->mu);
    if (mark == 0) mark = ++d->asked; /* our change was made before this */
    int rc = sync_covering(d, dir_fd, mark);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void store_new_id(char out[STORE_ID_LEN + 1])
{
    unsigned char raw[STORE_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            /* getrandom cannot fail on Linux >= 3.17 once seeded; refuse to go on
             * with a predictable id. */
            perror("getrandom");
            _exit(70);
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[STORE_ID_LEN] = '\0';
}

int store_id_valid(const char *id)
{
    size_t i = 0;
    for (; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return i == STORE_ID_LEN;
}

int store_sanitize_name(const char *name, size_t len, char out[STORE_NAME_MAX + 1],
                        const char **why)
{
    if (!utf8_valid((const unsigned char *)name, len)) {
        *why = "filename is not valid UTF-8";
        return -EINVAL;
    }
    size_t start = 0;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/' || name[i] == '\\') start = i + 1;
    size_t o = 0;
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7F) continue;
        /* C1 controls U+0080..U+009F are encoded C2 80..C2 9F. */
        if (c == 0xC2 && i + 1 < len && (unsigned char)name[i + 1] <= 0x9F) {
            i++;
            continue;
        }
        if (o == STORE_NAME_MAX) {
            *why = "filename is longer than 255 bytes";
            return -EINVAL;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (o == 0) {
        *why = "filename is empty";
        return -EINVAL;
    }
    if (strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        *why = "filename may not be \".\" or \"..\"";
        return -EINVAL;
    }
    if (out[0] == '.') out[0] = '_';
    return 0;
}

int store_create_part(struct store *s, const char *id)
{
    char name[STORE_ID_LEN + 8];
    snprintf(name, sizeof name, "%s.part", id);
    int fd = openat(s->spool_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

static int fs_has_room(int dir_fd, uint64_t need, uint64_t keep)
{
    struct statvfs v;
    if (fstatvfs(dir_fd, &v) < 0) return -errno;
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
    if (avail < need || avail - need < keep) return -ENOSPC;
    return 0;
}

int store_check_space(struct store *s, uint64_t need)
{
    int rc = fs_has_room(s->spool_fd, need, s->min_free_space);
    /* On another filesystem, accept_dir gets a copy: it needs the room too. */
    struct stat a, b;
    bool same = s->accept_fd < 0 || (fstat(s->spool_fd, &a) == 0 && fstat(s->accept_fd, &b) == 0 &&
                                     a.st_dev == b.st_dev);
    if (rc == 0 && s->accept_fd >= 0)
        rc = fs_has_room(s->accept_fd, same ? 0 : need, s->min_free_space);
    return rc;
}

/* The n-th candidate name: "a.txt", "a-1.txt", "a-2.txt"... The extension is
 * what follows the last dot. With a prefix (quarantine's "<id>-") the result
 * could pass NAME_MAX: the stem is shortened, never the extension. */
static int candidate(const char *prefix, const char *name, unsigned n, char *out, size_t cap)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) dot = name + strlen(name);
    char suffix[16] = "";
    int sl = n ? snprintf(suffix, sizeof suffix, "-%u", n) : 0;
    size_t stem = (size_t)(dot - name);
    size_t ext = strlen(dot);
    size_t plen = strlen(prefix);
    if (plen + (size_t)sl >= STORE_NAME_MAX) return -1;
    size_t room = STORE_NAME_MAX - plen - (size_t)sl;
    if (stem + ext > room) {
        /* The stem gives way, keeping the extension; when the extension
         * alone leaves no room, the whole name is cut from its end. */
        if (ext < room) {
            stem = room - ext;
        } else {
            stem = room;
            dot = "";
        }
        /* Do not cut a UTF-8 sequence in half. */
        while (stem > 0 && ((unsigned char)name[stem] & 0xC0) == 0x80)
            stem--;
        if (stem == 0) return -1;
    }
    int w = snprintf(out, cap, "%s%.*s%s%s", prefix, (int)stem, name, suffix, dot);
    return w < (int)cap ? 0 : -1;
}

int store_place(struct store *s, const char *id, int dir_fd, const char *prefix, const char *name,
                char *stored)
{
    char part[STORE_ID_LEN + 8];
    snprintf(part, sizeof part, "%s.part", id);
    char cand[STORE_NAME_MAX + 64];
    int rc = -EEXIST;
    for (unsigned n = 0; n < 100000; n++) {
        if (candidate(prefix, name, n, cand, sizeof cand) < 0) return -ENAMETOOLONG;
        /* linkat fails with EEXIST instead of replacing, unlike renameat. */
        if (linkat(s->spool_fd, part, dir_fd, cand, 0) == 0) {
            rc = 0;
            break;
        }
        if (errno != EEXIST) return -errno;
    }
    if (rc < 0) return rc;
    int sr = store_sync_dir(s, dir_fd);
    if (sr < 0) rc = sr;
    if (unlinkat(s->spool_fd, part, 0) < 0 && rc == 0) rc = -errno;
    store_sync_dir(s, s->spool_fd);
    snprintf(stored, STORE_NAME_MAX + 1, "%s", cand + strlen(prefix));
    return rc;
}

int store_open_part(struct store *s, const char *id, int flags)
{
    char part[STORE_ID_LEN + 8];
    snprintf(part, sizeof part, "%s.part", id);
    int fd = openat(s->spool_fd, part, flags | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int store_unlink_part(struct store *s, const char *id)
{
    char part[STORE_ID_LEN + 8];
    snprintf(part, sizeof part, "%s.part", id);
    return unlinkat(s->spool_fd, part, 0) < 0 ? -errno : 0;
}

int store_discard_part(struct store *s, const char *id)
{
    store_unlink_part(s, id);
    return store_sync_dir(s, s->spool_fd);
}

/* Looks for an earlier link of the .part among the candidate names. */
static bool find_link(const struct stat *part, int dir_fd, const char *prefix, const char *name,
                      char *found, size_t cap)
{
    unsigned misses = 0;
    for (unsigned n = 0; n < 100000 && misses < 16; n++) {
        if (candidate(prefix, name, n, found, cap) < 0) return false;
        struct stat st;
        if (fstatat(dir_fd, found, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            misses++;
            continue;
        }
        misses = 0;
        if (st.st_ino == part->st_ino && st.st_dev == part->st_dev) return true;
    }
    return false;
}

/* A copy placed on another filesystem carries its upload's id here: it is
 * not the .part's inode, and after a crash between its link and its record
 * this is how a retry knows the name holds its own copy (and neither
 * places a second one nor calls its own name taken). */
#define COPY_XATTR "user.intake.upload"

/* name in dir_fd is a placed copy of upload id. */
static bool own_copy(int dir_fd, const char *name, const char *id)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    char got[STORE_ID_LEN + 1];
    ssize_t n = fgetxattr(fd, COPY_XATTR, got, sizeof got);
    close(fd);
    return n == STORE_ID_LEN && memcmp(got, id, STORE_ID_LEN) == 0;
}

/* dir_fd is on another filesystem or mount than the spool file pst. */
static bool other_mount(struct store *s, int dir_fd, const struct stat *pst)
{
    struct stat dst;
    if (fstat(dir_fd, &dst) < 0) return false;
    if (dst.st_dev != pst->st_dev) return true;
    struct statx a, b;
    return statx(dir_fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &a) == 0 &&
           statx(s->spool_fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &b) == 0 &&
           (a.stx_mask & b.stx_mask & STATX_MNT_ID) && a.stx_mnt_id != b.stx_mnt_id;
}

/* Copies spool/<part> into a new unnamed file (O_TMPFILE) in dir_fd, marks
 * it with the upload's id (where the filesystem can) and fsyncs it: a file
 * that can be linked to its final name but never has a name of its own
 * meanwhile. Returns its fd or -errno. */
static int copy_unnamed(struct store *s, const char *part, const char *id, int dir_fd)
{
    int in = openat(s->spool_fd, part, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) return -errno;
    int out = openat(dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0640);
    int rc = out < 0 ? -errno : 0;
    enum { BUF = 256 * 1024 };
    char *buf = NULL;
    bool plain = false; /* copy_file_range refused: read and write */
    while (rc == 0) {
        ssize_t n;
        if (!plain) {
            n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
            if (n < 0 &&
                (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                plain = true;
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(BUF))) {
                rc = -ENOMEM;
                break;
            }
            n = read(in, buf, BUF);
            for (ssize_t off = 0, w; n > 0 && off < n; off += w) {
                w = write(out, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR) w = 0;
                if (w < 0) {
                    n = -1;
                    break;
                }
            }
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = -errno;
        if (n <= 0) break;
    }
    /* Best effort: without it, the crash case reports the name taken. */
    if (rc == 0) fsetxattr(out, COPY_XATTR, id, strlen(id), 0);
    if (rc == 0 && fsync(out) < 0) rc = -errno;
    free(buf);
    close(in);
    if (rc < 0 && out >= 0) close(out);
    return rc < 0 ? rc : out;
}

/* Gives the file (spool/<part>, or the unnamed copy tmp_fd) the name cand in
 * dir_fd; linkat fails with EEXIST instead of replacing, unlike renameat.
 * 0, or -1 with errno. */
static int link_as(struct store *s, const char *part, int tmp_fd, int dir_fd, const char *cand)
{
    if (tmp_fd < 0) return linkat(s->spool_fd, part, dir_fd, cand, 0);
    if (linkat(tmp_fd, "", dir_fd, cand, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT && errno != EPERM) return -1;
    /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc works for anyone. */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", tmp_fd);
    return linkat(AT_FDCWD, proc, dir_fd, cand, AT_SYMLINK_FOLLOW);
}

int store_link_part(struct store *s, const char *id, int dir_fd, const char *prefix,
                    const char *name, char *stored, bool *linked)
{
    *linked = false;
    char part[STORE_ID_LEN + 8];
    snprintf(part, sizeof part, "%s.part", id);
    char cand[STORE_NAME_MAX + 64];
    struct stat pst;
    if (fstatat(s->spool_fd, part, &pst, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
    bool done = pst.st_nlink > 1 && find_link(&pst, dir_fd, prefix, name, cand, sizeof cand);
    /* On another filesystem, or mount (a bind mount of the same one
     * refuses links too), a name taken may be this upload's own copy. Asked
     * only when a name is taken (-1: not yet): the usual link needs none. */
    int across = -1;
    int tmp = -1, rc = -EEXIST;
    for (unsigned n = 0; !done && n < 100000; n++) {
        if (candidate(prefix, name, n, cand, sizeof cand) < 0) {
            rc = -ENAMETOOLONG;
            break;
        }
        if (link_as(s, part, tmp, dir_fd, cand) == 0) {
            done = true;
        } else if (errno == EXDEV && tmp < 0) {
            /* dir_fd is on another filesystem than the spool: link a
             * complete, synced copy instead, under the same name rules. */
            if ((tmp = copy_unnamed(s, part, id, dir_fd)) < 0) return tmp;
            across = 1;
            n--; /* the same candidate again */
        } else if (errno == EEXIST &&
                   (across < 0 ? (across = other_mount(s, dir_fd, &pst)) : across) &&
                   own_copy(dir_fd, cand, id)) {
            done = true; /* placed before a crash kept the record from saying so */
        } else if (errno != EEXIST) {
            rc = -errno;
            break;
        }
    }
    if (tmp >= 0) close(tmp);
    if (!done) return rc;
    *linked = true;
    snprintf(stored, STORE_NAME_MAX + 1, "%s", cand + strlen(prefix));
    return store_sync_dir(s, dir_fd);
}

int store_link_part_as(struct store *s, const char *id, int dir_fd, const char *name, bool *linked)
{
    *linked = false;
    char part[STORE_ID_LEN + 8];
    snprintf(part, sizeof part, "%s.part", id);
    struct stat pst, st;
    if (fstatat(s->spool_fd, part, &pst, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        /* Linked (or its copy placed) before a crash kept the record from
         * saying so: done. */
        if ((st.st_ino != pst.st_ino || st.st_dev != pst.st_dev) && !own_copy(dir_fd, name, id))
            return -EEXIST;
    } else if (link_as(s, part, -1, dir_fd, name) < 0) {
        if (errno != EXDEV) return -errno;
        int tmp = copy_unnamed(s, part, id, dir_fd);
        if (tmp < 0) return tmp;
        int rc = link_as(s, part, tmp, dir_fd, name) < 0 ? -errno : 0;
        close(tmp);
        if (rc < 0) return rc;
    }
    *linked = true;
    return store_sync_dir(s, dir_fd);
}

/* Reservations: spool/.names/<name>, holding the id of the upload that
 * chose that name for accept_dir before its hook and publish ran. */

static int names_dir(struct store *s)
{
    int fd = openat(s->spool_fd, STORE_NAMES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (mkdirat(s->spool_fd, STORE_NAMES_DIR, 0750) < 0 && errno != EEXIST) return -errno;
        fsync(s->spool_fd);
        fd = openat(s->spool_fd, STORE_NAMES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    return fd < 0 ? -errno : fd;
}

/* 1 if the reservation cand in nfd names upload id. */
ssize_t store_reservation_owner(int nfd, const char *name, char id[STORE_ID_LEN + 1])
{
    int fd = openat(nfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, id, STORE_ID_LEN);
    close(fd);
    id[n > 0 ? n : 0] = '\0';
    return n;
}

static int held_by(int nfd, const char *cand, const char *id)
{
    char owner[STORE_ID_LEN + 1];
    return store_reservation_owner(nfd, cand, owner) == STORE_ID_LEN &&
           memcmp(owner, id, STORE_ID_LEN) == 0;
}

int store_reserve_name(struct store *s, const char *id, const char *name, char *stored)
{
    if (s->accept_fd < 0) return -EINVAL;
    int nfd = names_dir(s);
    if (nfd < 0) return nfd;
    char cand[STORE_NAME_MAX + 64];
    int rc = -EEXIST;
    for (unsigned n = 0; n < 100000; n++) {
        if (candidate("", name, n, cand, sizeof cand) < 0) {
            rc = -ENAMETOOLONG;
            break;
        }
        struct stat st;
        if (fstatat(s->accept_fd, cand, &st, AT_SYMLINK_NOFOLLOW) == 0) continue; /* placed */
        int fd = openat(nfd, cand, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        if (fd < 0) {
            if (!held_by(nfd, cand, id)) continue;
            rc = 0; /* ours already: chosen before a crash */
            break;
        }
        ssize_t w = write(fd, id, STORE_ID_LEN);
        int en = errno;
        /* Checked again after reserving: an upload whose reservation went
         * just before ours was taken linked its file first, so it is in
         * accept_dir by now. */
        bool taken =
            w == STORE_ID_LEN &&
            (fstatat(s->accept_fd, cand, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT);
        close(fd); /* made durable with the directory, below */
        if (w != STORE_ID_LEN || taken) unlinkat(nfd, cand, 0);
        if (taken) continue;
        if (w != STORE_ID_LEN) {
            rc = w < 0 ? -en : -EIO;
            break;
        }
        rc = 0;
        break;
    }
    if (rc == 0) {
        if (fsync(nfd) < 0) rc = -errno;
        size_t cl = strnlen(cand, STORE_NAME_MAX);
        memcpy(stored, cand, cl);
        stored[cl] = '\0';
    }
    close(nfd);
    return rc;
}

void store_release_name(struct store *s, const char *id, const char *name)
{
    int nfd = openat(s->spool_fd, STORE_NAMES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (nfd < 0) return;
    /* Only our own: nobody else creates that name while it exists. */
    if (held_by(nfd, name, id)) unlinkat(nfd, name, 0);
    close(nfd);
}

int store_events_dir(const struct store *s)
{
    if (mkdirat(s->spool_fd, STORE_EVENTS_DIR, 0750) < 0 && errno != EEXIST) return -errno;
    int fd = openat(s->spool_fd, STORE_EVENTS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}
