/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static const int codes[] = {400, 401, 403, 404, 405, 408, 409, 413,
                            422, 426, 431, 500, 503, 507, 0};
#define N_CODES (sizeof codes / sizeof *codes) /* the last, 0, is "other" */

static const double bounds[METRICS_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                   0.5,   1,    2.5,   5,    10};

static const char *const tnames[MT_COUNT] = {"ws", "tcp"};
static const char *const vnames[MV_COUNT] = {"clean", "infected", "unscanned", "error"};

struct metrics *metrics_create(void)
{
    void *p = mmap(NULL, sizeof(struct metrics), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

#define ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void metrics_upload(struct metrics_slot *s, enum metrics_transport t, enum metrics_verdict v)
{
    if (s) ADD(s->uploads[t][v], 1);
}

void metrics_received(struct metrics_slot *s, enum metrics_transport t, uint64_t n)
{
    if (s) ADD(s->received[t], n);
}

void metrics_resume(struct metrics_slot *s, enum metrics_transport t)
{
    if (s) ADD(s->resumes[t], 1);
}

void metrics_requery(struct metrics_slot *s, enum metrics_transport t)
{
    if (s) ADD(s->requeries[t], 1);
}

void metrics_connection(struct metrics_slot *s, enum metrics_transport t, int delta)
{
    if (s) ADD(s->connections[t], delta);
}

void metrics_promise(struct metrics *m, const struct metrics_slot *s, int64_t delta)
{
    if (m && s && delta) ADD(m->promised[s - m->slot], delta);
}

uint64_t metrics_promised(const struct metrics *m)
{
    if (!m) return 0;
    int64_t n = 0;
    for (int i = 0; i < METRICS_SLOTS; i++) {
        int64_t p = GET(m->promised[i]);
        if (p > 0) n += p;
    }
    return (uint64_t)n;
}

int64_t metrics_slot_connections(const struct metrics_slot *s)
{
    int64_t n = 0;
    for (int t = 0; t < MT_COUNT; t++)
        n += GET(s->connections[t]);
    return n;
}

void metrics_error(struct metrics_slot *s, int code)
{
    if (!s) return;
    size_t i = 0;
    while (i < N_CODES - 1 && codes[i] != code)
        i++;
    ADD(s->errors[i], 1);
}

void metrics_scan(struct metrics_slot *s, uint64_t micros)
{
    if (!s) return;
    size_t b = 0;
    while (b < METRICS_BUCKETS - 1 && (double)micros / 1e6 > bounds[b])
        b++;
    ADD(s->scan_bucket[b], 1);
    ADD(s->scan_count, 1);
    ADD(s->scan_sum_us, micros);
}

int metrics_scanner_index(struct metrics *m, const char *name, int add)
{
    if (!m) return METRICS_SCANNERS;
    int n = GET(m->n_scanner_names);
    for (int i = 0; i < n; i++)
        if (strcmp(m->scanner_name[i], name) == 0) return i;
    if (!add || n == METRICS_SCANNERS) return METRICS_SCANNERS;
    snprintf(m->scanner_name[n], METRICS_SCANNER_NAME, "%s", name);
    __atomic_store_n(&m->scanner_state[n], MS_UNSEEN, __ATOMIC_RELAXED);
    __atomic_store_n(&m->n_scanner_names, n + 1, __ATOMIC_RELEASE);
    return n;
}

void metrics_scan_result(struct metrics_slot *s, int idx, enum metrics_scan_result r)
{
    if (!s) return;
    if (idx < 0 || idx > METRICS_SCANNERS) idx = METRICS_SCANNERS;
    ADD(s->scans[idx][r], 1);
}

/* --- delivery: accept hook and publish -------------------------------------- */

static const char *const hnames[MH_COUNT] = {"ok", "failed", "timeout"};
static const char *const pnames[MP_COUNT] = {"acked", "failed", "dropped"};

void metrics_hook(struct metrics_slot *s, enum metrics_hook r, uint64_t micros)
{
    if (!s) return;
    size_t b = 0;
    while (b < METRICS_BUCKETS - 1 && (double)micros / 1e6 > bounds[b])
        b++;
    ADD(s->hook_bucket[b], 1);
    ADD(s->hooks[r], 1);
    ADD(s->hook_sum_us, micros);
}

void metrics_publish(struct metrics_slot *s, enum metrics_publish r)
{
    if (s) ADD(s->publishes[r], 1);
}

struct out {
    char *buf;
    size_t cap, len;
    int overflow;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->overflow = 1;
    else
        o->len += (size_t)n;
}

/* One histogram in Prometheus text format: cumulative buckets, sum, count. */
static void histogram(struct out *o, const char *name, const char *help, const uint64_t *bucket,
                      uint64_t sum_us, uint64_t count)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        cum += bucket[b];
        if (b < METRICS_BUCKETS - 1)
            put(o, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[b], (unsigned long long)cum);
        else
            put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    put(o, "%s_sum %.6f\n", name, (double)sum_us / 1e6);
    put(o, "%s_count %llu\n", name, (unsigned long long)count);
}

int metrics_render(const struct metrics *m, char *buf, size_t cap)
{
    struct metrics_slot sum;
    memset(&sum, 0, sizeof sum);
    for (int i = 0; i < METRICS_SLOTS; i++) {
        const struct metrics_slot *s = &m->slot[i];
        for (int t = 0; t < MT_COUNT; t++) {
            for (int v = 0; v < MV_COUNT; v++)
                sum.uploads[t][v] += GET(s->uploads[t][v]);
            sum.received[t] += GET(s->received[t]);
            sum.resumes[t] += GET(s->resumes[t]);
            sum.requeries[t] += GET(s->requeries[t]);
            sum.connections[t] += GET(s->connections[t]);
        }
        for (size_t c = 0; c < N_CODES; c++)
            sum.errors[c] += GET(s->errors[c]);
        for (int b = 0; b < METRICS_BUCKETS; b++)
            sum.scan_bucket[b] += GET(s->scan_bucket[b]);
        sum.scan_count += GET(s->scan_count);
        sum.scan_sum_us += GET(s->scan_sum_us);
        for (int a = 0; a <= METRICS_SCANNERS; a++)
            for (int r = 0; r < MSR_COUNT; r++)
                sum.scans[a][r] += GET(s->scans[a][r]);
        for (int r = 0; r < MH_COUNT; r++)
            sum.hooks[r] += GET(s->hooks[r]);
        for (int b = 0; b < METRICS_BUCKETS; b++)
            sum.hook_bucket[b] += GET(s->hook_bucket[b]);
        sum.hook_sum_us += GET(s->hook_sum_us);
        for (int r = 0; r < MP_COUNT; r++)
            sum.publishes[r] += GET(s->publishes[r]);
    }
    struct out o = {.buf = buf, .cap = cap};
    put(&o, "# HELP intake_uploads_total Uploads finished, by transport and verdict.\n"
            "# TYPE intake_uploads_total counter\n");
    for (int t = 0; t < MT_COUNT; t++)
        for (int v = 0; v < MV_COUNT; v++)
            put(&o, "intake_uploads_total{transport=\"%s\",verdict=\"%s\"} %llu\n", tnames[t],
                vnames[v], (unsigned long long)sum.uploads[t][v]);
    put(&o, "# HELP intake_received_bytes_total File bytes received.\n"
            "# TYPE intake_received_bytes_total counter\n");
    for (int t = 0; t < MT_COUNT; t++)
        put(&o, "intake_received_bytes_total{transport=\"%s\"} %llu\n", tnames[t],
            (unsigned long long)sum.received[t]);
    put(&o, "# HELP intake_resumes_total Interrupted uploads taken up again (START with an id).\n"
            "# TYPE intake_resumes_total counter\n");
    for (int t = 0; t < MT_COUNT; t++)
        put(&o, "intake_resumes_total{transport=\"%s\"} %llu\n", tnames[t],
            (unsigned long long)sum.resumes[t]);
    put(&o, "# HELP intake_requeries_total Complete uploads asked for again (START with an id).\n"
            "# TYPE intake_requeries_total counter\n");
    for (int t = 0; t < MT_COUNT; t++)
        put(&o, "intake_requeries_total{transport=\"%s\"} %llu\n", tnames[t],
            (unsigned long long)sum.requeries[t]);
    put(&o, "# HELP intake_connections Open client connections.\n"
            "# TYPE intake_connections gauge\n");
    for (int t = 0; t < MT_COUNT; t++)
        put(&o, "intake_connections{transport=\"%s\"} %lld\n", tnames[t],
            (long long)(sum.connections[t] > 0 ? sum.connections[t] : 0));
    put(&o, "# HELP intake_errors_total ERROR messages and HTTP errors sent, by code.\n"
            "# TYPE intake_errors_total counter\n");
    for (size_t c = 0; c < N_CODES; c++) {
        if (codes[c])
            put(&o, "intake_errors_total{code=\"%d\"} %llu\n", codes[c],
                (unsigned long long)sum.errors[c]);
        else
            put(&o, "intake_errors_total{code=\"other\"} %llu\n",
                (unsigned long long)sum.errors[c]);
    }
    histogram(&o, "intake_scan_duration_seconds", "Time to scan one file.", sum.scan_bucket,
              sum.scan_sum_us, sum.scan_count);
    put(&o, "# HELP intake_scans_total Scanner round trips, by scanner address and result "
            "(error: refused, timed out, went away or answered ERROR).\n"
            "# TYPE intake_scans_total counter\n");
    int n_names = __atomic_load_n(&m->n_scanner_names, __ATOMIC_ACQUIRE);
    for (int a = 0; a <= n_names; a++) {
        if (a == n_names && !sum.scans[METRICS_SCANNERS][MSR_OK] &&
            !sum.scans[METRICS_SCANNERS][MSR_ERROR])
            break; /* "other" only once it counts something */
        char label[2 * METRICS_SCANNER_NAME];
        const char *name = a < n_names ? m->scanner_name[a] : "other";
        size_t k = 0;
        for (const char *p = name; *p && k < sizeof label - 2; p++) {
            if (*p == '"' || *p == '\\') label[k++] = '\\';
            label[k++] = *p == '\n' ? ' ' : *p;
        }
        label[k] = '\0';
        int row = a < n_names ? a : METRICS_SCANNERS;
        for (int r = 0; r < MSR_COUNT; r++)
            put(&o, "intake_scans_total{scanner=\"%s\",result=\"%s\"} %llu\n", label,
                r == MSR_OK ? "ok" : "error", (unsigned long long)sum.scans[row][r]);
    }
    put(&o, "# HELP intake_hook_runs_total Accept hook runs, by result.\n"
            "# TYPE intake_hook_runs_total counter\n");
    uint64_t hook_count = 0;
    for (int r = 0; r < MH_COUNT; r++) {
        put(&o, "intake_hook_runs_total{result=\"%s\"} %llu\n", hnames[r],
            (unsigned long long)sum.hooks[r]);
        hook_count += sum.hooks[r];
    }
    histogram(&o, "intake_hook_duration_seconds", "Time one accept hook ran.", sum.hook_bucket,
              sum.hook_sum_us, hook_count);
    put(&o, "# HELP intake_publishes_total Upload events published to NATS JetStream, by result "
            "(acked by the stream; failed: no acknowledgement in time; dropped: the retry queue "
            "was full).\n"
            "# TYPE intake_publishes_total counter\n");
    for (int r = 0; r < MP_COUNT; r++)
        put(&o, "intake_publishes_total{result=\"%s\"} %llu\n", pnames[r],
            (unsigned long long)sum.publishes[r]);
    put(&o,
        "# HELP intake_workers Running upload workers.\n# TYPE intake_workers gauge\n"
        "intake_workers %d\n",
        GET(m->workers));
    return o.overflow ? -1 : (int)o.len;
}
