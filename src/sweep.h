/* sweep: expires uploads from the spool. An upload that was interrupted,
 * that ended with verdict error, or whose verdict was given, stays
 * resumable and askable for resume_timeout after its files were last
 * touched; then all its spool files (.part, .state, a stray .state.tmp) go.
 * The master goes on with it every second or so, SWEEP_BATCH entries at a
 * time: an upload goes within seconds of its deadline while the spool
 * holds up to a few thousand uploads, and within entries / SWEEP_BATCH
 * seconds beyond. An upload whose .part is locked (a worker holds it) is
 * never touched. At the end of each pass, name reservations (spool/.names)
 * older than resume_timeout whose upload has no spool file left go too. */
#ifndef INTAKE_SWEEP_H
#define INTAKE_SWEEP_H

#include <stdint.h>

#include <dirent.h>
#include <limits.h>

/* A pass over the spool, carried on from one call to the next. */
struct sweep {
    DIR *d;               /* the pass in progress, or NULL */
    char dir[PATH_MAX];   /* the directory it reads */
};

/* At most SWEEP_BATCH entries are looked at per call: the spool holds an
 * upload's files for resume_timeout (an hour by default), which at a
 * thousand uploads a second is millions of entries, and a pass over all of
 * them every second would take the master's whole core. */
#define SWEEP_BATCH 4096

/* Goes on with the pass over spool_dir (starting one if none is under
 * way, or if spool_dir changed): uploads untouched for limit_ms go. At
 * most `batch` entries. Returns the number removed, or -errno if the
 * directory cannot be read. */
int sweep_step(struct sweep *s, const char *spool_dir, uint64_t limit_ms, unsigned batch);
/* A whole pass at once (tests, and small spools). */
int sweep_spool(const char *spool_dir, uint64_t limit_ms);
void sweep_close(struct sweep *s);

#endif
