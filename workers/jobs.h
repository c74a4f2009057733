/* jobs: a small pool of threads for the blocking work a worker must keep off
 * its event loop. A worker has three: its job pool (finishing: checksum,
 * fsync, link + directory fsync; resume lookups), its bulk pool (hashing
 * while bytes arrive) and the scan queue that scan.c owns (scanner round
 * trips).
 * A job's run() executes on a pool thread; its done() is called back on the
 * loop thread, in completion order, through an ev_async. */
#ifndef INTAKE_JOBS_H
#define INTAKE_JOBS_H

#include <ev.h>
#include <stdbool.h>

struct job {
    void (*run)(struct job *);  /* pool thread: touch only what the job owns */
    void (*done)(struct job *); /* loop thread */
    struct job *next;
};

struct jobs;

/* bulk: the threads run as background work (SCHED_BATCH, nice +5), so a
 * big upload's hashing yields a core to the loop and to the short jobs
 * that finish small uploads, instead of sharing it evenly with them. */
struct jobs *jobs_start(struct ev_loop *loop, int threads, bool bulk);
void jobs_submit(struct jobs *js, struct job *j);
/* Jobs queued or running. */
int jobs_pending(const struct jobs *js);

#endif
