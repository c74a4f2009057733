/* metrics: counters shared by the master and its workers. One MAP_SHARED
 * anonymous mapping made by the master before forking; each worker writes
 * only its own slot (relaxed atomics, no locks), a scrape sums the slots.
 * Counters survive a worker's respawn (Prometheus counters must not go
 * back); gauges of a slot are reset by the worker that takes it over. */
#ifndef INTAKE_METRICS_H
#define INTAKE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_SLOTS 512
#define METRICS_BUCKETS 12 /* scan duration histogram, the last is +Inf */

enum metrics_transport { MT_WS, MT_TCP, MT_COUNT };
enum metrics_verdict { MV_CLEAN, MV_INFECTED, MV_UNSCANNED, MV_ERROR, MV_COUNT };
/* MS_UNSEEN: a scanner address neither probed nor tried since it was listed. */
enum metrics_scanner { MS_OFF, MS_UP, MS_DOWN, MS_UNSEEN };
/* Delivery: accept hook runs and NATS publishes, by result. */
enum metrics_hook { MH_OK, MH_FAILED, MH_TIMEOUT, MH_COUNT };
enum metrics_publish { MP_ACKED, MP_FAILED, MP_DROPPED, MP_COUNT };
/* Accept hooks one worker runs at once, at most. */
#define METRICS_HOOKS 16

/* Scanner addresses with series of their own in intake_scans_total: the
 * master registers each address it is configured with (reloads add, never
 * remove, so a label keeps its counters); past this many, "other". */
#define METRICS_SCANNERS 16
#define METRICS_SCANNER_NAME 128
enum metrics_scan_result { MSR_OK, MSR_ERROR, MSR_COUNT };

struct metrics_slot {
    uint64_t uploads[MT_COUNT][MV_COUNT];
    uint64_t received[MT_COUNT];
    uint64_t resumes[MT_COUNT];  /* START with an id that went on receiving */
    uint64_t requeries[MT_COUNT]; /* START with an id of a complete upload */
    int64_t connections[MT_COUNT];
    uint64_t errors[16]; /* indexed by metrics_code_index */
    uint64_t scan_bucket[METRICS_BUCKETS];
    uint64_t scan_count, scan_sum_us;
    /* Scanner round trips by address (the last row: "other") and result. */
    uint64_t scans[METRICS_SCANNERS + 1][MSR_COUNT];
    /* Delivery. */
    uint64_t hooks[MH_COUNT];
    uint64_t hook_bucket[METRICS_BUCKETS];
    uint64_t hook_sum_us;
    uint64_t publishes[MP_COUNT];
    /* Not a metric: the process groups of the accept hooks the slot's
     * worker runs (0: free). A worker that dies cannot kill them, so the
     * master does, when it reaps the worker, and clears them. */
    int32_t hook_pgid[METRICS_HOOKS];
};

struct metrics {
    int workers; /* running workers, kept by the master */
    int scanner; /* enum metrics_scanner */
    /* 1 while the slot's worker accepts connections: the workers use the
     * connection gauges of the accepting ones to share the load. */
    int accepting[METRICS_SLOTS];
    /* By slot: bytes its worker's uploads in progress have announced and
     * not yet written; the free-space check at START counts them all. One
     * array, so the sum reads a page, not one of every slot (pages a worker
     * touches count in its memory). */
    int64_t promised[METRICS_SLOTS];
    struct metrics_slot slot[METRICS_SLOTS];
    /* The scanner addresses (labels) and each one's state (MS_UP/MS_DOWN),
     * kept by the master's probe and by the workers that fail to reach one. */
    char scanner_name[METRICS_SCANNERS][METRICS_SCANNER_NAME];
    int scanner_state[METRICS_SCANNERS];
    int n_scanner_names;
};

/* Space promised to uploads in progress (see promised above), by the
 * worker of slot s. */
void metrics_promise(struct metrics *m, const struct metrics_slot *s, int64_t delta);
uint64_t metrics_promised(const struct metrics *m);
/* Open connections of a slot, both transports. */
int64_t metrics_slot_connections(const struct metrics_slot *s);

/* The shared mapping, or NULL. */
struct metrics *metrics_create(void);

void metrics_upload(struct metrics_slot *s, enum metrics_transport t, enum metrics_verdict v);
void metrics_received(struct metrics_slot *s, enum metrics_transport t, uint64_t n);
void metrics_resume(struct metrics_slot *s, enum metrics_transport t);
void metrics_requery(struct metrics_slot *s, enum metrics_transport t);
void metrics_connection(struct metrics_slot *s, enum metrics_transport t, int delta);
void metrics_error(struct metrics_slot *s, int code);
void metrics_scan(struct metrics_slot *s, uint64_t micros);
void metrics_hook(struct metrics_slot *s, enum metrics_hook r, uint64_t micros);
void metrics_publish(struct metrics_slot *s, enum metrics_publish r);

/* The series index of a scanner address, added (master only, before the
 * workers that use it fork) when add is set and there is room; it starts
 * MS_UNSEEN. METRICS_SCANNERS ("other") when it is not in the table. */
int metrics_scanner_index(struct metrics *m, const char *name, int add);
/* One round trip to scanner idx: ok or not. */
void metrics_scan_result(struct metrics_slot *s, int idx, enum metrics_scan_result r);

/* Prometheus text format, summed over all slots. Returns the length, or -1
 * if it does not fit in cap. */
int metrics_render(const struct metrics *m, char *buf, size_t cap);

#endif
