/* store: where upload bytes live on disk. Owns the spool, accept and quarantine
 * directories (held open as fds: every name is created with openat/renameat
 * relative to them, O_NOFOLLOW|O_EXCL, so nothing built from client input can
 * leave its directory), upload ids, the stored-name rules and durability
 * (data fsync, then rename, then directory fsync). */
#ifndef INTAKE_STORE_H
#define INTAKE_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_ID_LEN 32
#define STORE_NAME_MAX 255

/* Group commit of one directory's fsync (store_sync_dir). */
struct dir_sync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t asked;   /* callers so far, numbered */
    uint64_t covered; /* callers up to this one are covered by a finished fsync */
    uint64_t ok;      /* ... by a successful one */
    uint64_t failed;  /* ... by a failed one (the latest): never vouched for */
    bool running;
    int err; /* errno of the last failed fsync */
};

struct store {
    int spool_fd, accept_fd, quarantine_fd;
    uint64_t min_free_space;
    struct dir_sync sync[3]; /* spool, accept, quarantine */
};

/* mkdir -p: path and its missing parents, with mode. 0 or -errno. */
int store_mkdir_p(const char *path, mode_t mode);
/* Creates (mode 0750) and opens the three directories. 0 or -errno; *which
 * names the directory that failed. */
int store_open(struct store *s, const char *spool, const char *accept, const char *quarantine,
               const char **which);
void store_close(struct store *s);
/* fsync(2) of one of the three directories, shared: threads that ask while
 * one fsync runs wait for the next, which covers them all, instead of each
 * syncing (and holding the directory's lock) in turn. One fsync covers every
 * change made in the directory before it started. Any other fd is synced
 * alone. 0 or -errno. */
int store_sync_dir(struct store *s, int dir_fd);
/* The same in two steps, for changes whose durability can wait: the mark
 * taken after a change (store_dir_mark), then store_sync_dir_since(mark)
 * returns at once if an fsync that began after the mark has succeeded
 * meanwhile (other uploads' syncs run all the time), and otherwise syncs as
 * store_sync_dir does (mark 0: a sync of its own, store_sync_dir itself).
 * A mark that a failed fsync covered stays an error: no later fsync vouches
 * for it. */
uint64_t store_dir_mark(struct store *s, int dir_fd);
int store_sync_dir_since(struct store *s, int dir_fd, uint64_t mark);

/* 32 lowercase hex characters from getrandom(2), NUL-terminated (33 bytes). */
void store_new_id(char out[STORE_ID_LEN + 1]);
int store_id_valid(const char *id);

/* The stored_as rule (docs/protocol.md, "Names"): last component after / or \, control characters
 * removed, a leading '.' becomes '_'. 0, or -EINVAL with *why set when the
 * name is not UTF-8, empty, ".", "..", or longer than 255 bytes. */
int store_sanitize_name(const char *name, size_t len, char out[STORE_NAME_MAX + 1],
                        const char **why);

/* Creates spool/<id>.part exclusively. Returns the fd (O_WRONLY) or -errno. */
int store_create_part(struct store *s, const char *id);
/* 0 if `need` bytes fit while leaving min_free_space free on the spool and
 * accept filesystems, -ENOSPC otherwise (or another -errno). */
int store_check_space(struct store *s, uint64_t need);

/* Durably moves spool/<id>.part into dir_fd under `name`, or name-1, name-2...
 * (before the extension) if taken: link(2) never overwrites, then the spool
 * entry is unlinked and both directories fsynced. The final name is written
 * to stored (STORE_NAME_MAX + 1 bytes). Blocking: call it off the event loop.
 * 0 or -errno. */
int store_place(struct store *s, const char *id, int dir_fd, const char *prefix, const char *name,
                char *stored);

/* spool/<id>.part opened with flags (O_NOFOLLOW|O_CLOEXEC added). fd or -errno. */
int store_open_part(struct store *s, const char *id, int flags);
/* Removes spool/<id>.part if it is there, then fsyncs the spool directory
 * (whoever removed it). 0 or -errno of the fsync. */
int store_discard_part(struct store *s, const char *id);
/* Removes spool/<id>.part. 0 or -errno (-ENOENT: gone already). */
int store_unlink_part(struct store *s, const char *id);
/* Links spool/<id>.part into dir_fd under prefix+name, or the first free
 * name-1, name-2... (link(2) never overwrites), and fsyncs dir_fd; the spool
 * entry stays (store_discard_part removes it once the placement is
 * recorded). If a crash came between a link and its record, the .part is
 * already linked there (same inode): that name is reported, no second link
 * is made. When dir_fd is on another filesystem or mount (EXDEV), a
 * complete fsynced copy made as an unnamed O_TMPFILE in dir_fd is linked
 * instead: no partial or temporary name ever appears there. Such a copy is
 * not the .part's inode: it carries the upload's id (xattr
 * user.intake.upload, where the filesystem takes one), so after a crash
 * between its link and its record the name holding it is reported, no
 * second copy is made. The final name without prefix goes to stored
 * (STORE_NAME_MAX + 1 bytes). Blocking. 0, or -errno with *linked telling
 * whether the file is in dir_fd anyway (its directory fsync failed). */
int store_link_part(struct store *s, const char *id, int dir_fd, const char *prefix,
                    const char *name, char *stored, bool *linked);
/* Links spool/<id>.part into dir_fd under exactly name (a stored_as
 * chosen before, see upload.c), never another: -EEXIST if that name holds
 * another file. A link made before a crash (same inode, or a copy with
 * this upload's id) counts as done.
 * On another filesystem, a synced unnamed copy is linked (store_link_part).
 * fsyncs dir_fd. Blocking. 0, or -errno with *linked as there. */
int store_link_part_as(struct store *s, const char *id, int dir_fd, const char *name, bool *linked);

/* stored_as chosen before placement (an accept hook or a publish must know
 * it): the first of name, name-1, name-2... that is neither in accept_dir
 * nor reserved by another upload, reserved in spool/.names/ (a file holding
 * the id, created with O_EXCL: one owner across all workers) and synced.
 * Asked again by the same upload, it finds its own reservation. Blocking.
 * 0 with the name in stored (STORE_NAME_MAX + 1 bytes), or -errno. */
int store_reserve_name(struct store *s, const char *id, const char *name, char *stored);
/* Drops upload id's reservation of name (after it was placed there). */
void store_release_name(struct store *s, const char *id, const char *name);
/* The id in reservation name of directory nfd (spool/.names), NUL-ended:
 * the bytes read (STORE_ID_LEN when whole), or -1. */
ssize_t store_reservation_owner(int nfd, const char *name, char id[STORE_ID_LEN + 1]);
/* Where the reservations are, under the spool. */
#define STORE_NAMES_DIR ".names"
/* spool/.events: the publisher's outbox (workers/publish.h). */
#define STORE_EVENTS_DIR ".events"

/* The outbox directory (made if missing), open, or -errno. */
int store_events_dir(const struct store *s);

#endif
