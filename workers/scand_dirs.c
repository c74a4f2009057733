/* scand_dirs: libclamav's per-scan temporary directories, reused.
 *
 * libclamav 1.4 makes a directory under the engine's temp dir for every
 * scan (<tmpdir>/<time>-scantemp.<random>) and removes it when the scan
 * ends, whatever the engine settings. On a disk file system that is an
 * inode and a directory block allocated and freed per file scanned: with
 * `discard` the freed block is trimmed there and then, and on ext4 without
 * a journal every freed inode makes each create on that file system (the
 * spool's too) scan past it for 30 s. For small files that was most of the
 * scanner's kernel time.
 *
 * So intake-scand defines mkdir and rmdir itself. libclamav calls them
 * through the PLT, and the executable's definitions come first, so its
 * calls land here (ours too). An rmdir of an empty directory directly under
 * the engine's temp dir renames it to parked.N there instead; a mkdir of a
 * directory directly under the temp dir renames a parked one into place
 * (RENAME_NOREPLACE: an existing name still fails with EEXIST). A rename
 * allocates and frees nothing. Everything else, a directory that is not
 * empty or has grown big, more than PARK_MAX parked, and any failure go to
 * the real calls (mkdirat, unlinkat). A parked directory keeps its mode
 * (mkdir's mode and the umask are not applied again): libclamav makes
 * every one 0700. What is parked goes with the temp dir when the scanner
 * exits (or with the sweep of a dead scanner's). */
#define _GNU_SOURCE
#include "scand_dirs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARK_MAX 64 /* more than one per scan thread is never needed */

enum slot { SLOT_FREE, SLOT_PARKED, SLOT_MOVING };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char base[PATH_MAX]; /* set once, before the first scan */
static size_t base_len;
static enum slot slots[PARK_MAX];
static int n_parked;
static bool in_scope(const char *path);
/* The directory under base this thread's scan made and has not removed. */
static _Thread_local char made[PATH_MAX];

void scand_dirs_scan_begin(void)
{
    made[0] = '\0';
}

const char *scand_dirs_scan_leftover(void)
{
    struct stat st;
    if (!made[0] || lstat(made, &st) < 0 || !S_ISDIR(st.st_mode)) return NULL;
    return made;
}

static void made_now(const char *path)
{
    if (in_scope(path) && strlen(path) < sizeof made) memcpy(made, path, strlen(path) + 1);
}

static void removed_now(const char *path)
{
    if (made[0] && strcmp(path, made) == 0) made[0] = '\0';
}

void scand_dirs_init(const char *dir)
{
    pthread_mutex_lock(&mu);
    snprintf(base, sizeof base, "%s", dir);
    base_len = strlen(base);
    memset(slots, 0, sizeof slots);
    n_parked = 0;
    pthread_mutex_unlock(&mu);
}

int scand_dirs_parked(void)
{
    pthread_mutex_lock(&mu);
    int n = n_parked;
    pthread_mutex_unlock(&mu);
    return n;
}

/* A directory directly under base, not one of the parking names. */
static bool in_scope(const char *path)
{
    if (!base_len || strncmp(path, base, base_len) != 0 || path[base_len] != '/') return false;
    const char *name = path + base_len + 1;
    return name[0] && !strchr(name, '/') && strncmp(name, "parked.", 7) != 0 &&
           strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static bool slot_path(int i, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/parked.%d", base, i);
    return n > 0 && (size_t)n < cap;
}

/* Takes a slot in state `from` (moving it), or -1. */
static int take(enum slot from)
{
    int got = -1;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < PARK_MAX && got < 0; i++)
        if (slots[i] == from) got = i;
    if (got >= 0) {
        slots[got] = SLOT_MOVING;
        if (from == SLOT_PARKED) n_parked--;
    }
    pthread_mutex_unlock(&mu);
    return got;
}

static void put(int i, enum slot to)
{
    pthread_mutex_lock(&mu);
    slots[i] = to;
    if (to == SLOT_PARKED) n_parked++;
    pthread_mutex_unlock(&mu);
}

/* What a directory may be parked as. */
enum parkable { PARK_OK, PARK_TOO_BIG, PARK_NO };

/* A directory never shrinks: one that held an archive's thousands of
 * members keeps their blocks when emptied. It is removed, not parked. */
#define PARK_DIR_MAX (16 * 1024)

/* PARK_OK for an empty directory of at most PARK_DIR_MAX bytes,
 * PARK_TOO_BIG for a bigger empty one, PARK_NO for anything else (a
 * directory with entries, or not a directory). */
static enum parkable classify(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return PARK_NO;
    struct stat st;
    char buf[512] __attribute__((aligned(8)));
    bool empty = fstat(fd, &st) == 0;
    ssize_t n = 0;
    while (empty && (n = getdents64(fd, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            const struct dirent64 *e = (const struct dirent64 *)(buf + off);
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = false;
            off += e->d_reclen;
        }
    }
    close(fd);
    if (!empty || n < 0) return PARK_NO;
    return st.st_size > PARK_DIR_MAX ? PARK_TOO_BIG : PARK_OK;
}

__attribute__((noinline)) static int park_mkdir(const char *path, mode_t mode)
{
    int i = in_scope(path) ? take(SLOT_PARKED) : -1;
    if (i >= 0) {
        char from[PATH_MAX + 16];
        int rc = slot_path(i, from, sizeof from)
                     ? renameat2(AT_FDCWD, from, AT_FDCWD, path, RENAME_NOREPLACE)
                     : (errno = ENAMETOOLONG, -1);
        /* The name exists (mkdir's EEXIST below): the parked one stays.
         * Anything else (the temp dir moved away): give the slot up. */
        put(i, rc == 0 || errno != EEXIST ? SLOT_FREE : SLOT_PARKED);
        if (rc == 0) {
            made_now(path);
            return 0;
        }
    }
    int rc = mkdirat(AT_FDCWD, path, mode);
    if (rc == 0) made_now(path);
    return rc;
}

static int unlink_dir(const char *path)
{
    int rc = unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
    if (rc == 0) removed_now(path);
    return rc;
}

__attribute__((noinline)) static int park_rmdir(const char *path)
{
    int i = in_scope(path) ? take(SLOT_FREE) : -1;
    if (i >= 0) {
        char to[PATH_MAX + 16];
        /* Renamed first, then looked at: under its parking name nobody
         * adds to it between the look and the parking. Replacing: a
         * leftover empty parked.N (after the temp dir was moved away and
         * back) is simply taken over. */
        if (slot_path(i, to, sizeof to) && renameat2(AT_FDCWD, path, AT_FDCWD, to, 0) == 0) {
            enum parkable k = classify(to);
            if (k == PARK_OK) {
                put(i, SLOT_PARKED);
                removed_now(path);
                return 0;
            }
            put(i, SLOT_FREE);
            if (k == PARK_TOO_BIG) {
                int rc = unlinkat(AT_FDCWD, to, AT_REMOVEDIR);
                if (rc == 0) removed_now(path);
                return rc;
            }
            /* Not empty, or not a directory: back under its name, and the
             * real rmdir below says why it cannot go. */
            renameat2(AT_FDCWD, to, AT_FDCWD, path, RENAME_NOREPLACE);
            return unlink_dir(path);
        }
        put(i, SLOT_FREE);
    }
    return unlink_dir(path);
}

/* Whoever calls mkdir or rmdir lands here, at any time: a sanitizer's
 * runtime does before its shadow memory exists (ASan creating its log
 * directory). So the entry points read one word, uninstrumented, and are
 * plain calls until scand_dirs_init has run. */
#define UNCHECKED __attribute__((no_sanitize("address", "undefined")))

UNCHECKED int mkdir(const char *path, mode_t mode)
{
    return base_len ? park_mkdir(path, mode) : mkdirat(AT_FDCWD, path, mode);
}

UNCHECKED int rmdir(const char *path)
{
    return base_len ? park_rmdir(path) : unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}
