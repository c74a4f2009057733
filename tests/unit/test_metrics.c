/* Unit tests for metrics: counters from several slots are summed, the
 * histogram is cumulative, every SPEC metric is present in Prometheus text
 * format, and a buffer too small is refused rather than cut. */
#include "metrics.h"
#include "test.h"

#include <stdlib.h>

/* The value of the line "series value" (at a line start). */
static long long value(const char *text, const char *series)
{
    char want[256];
    snprintf(want, sizeof want, "\n%s ", series);
    const char *p = strstr(text, want);
    return p ? strtoll(p + strlen(want), NULL, 10) : -1;
}

int main(void)
{
    struct metrics *m = metrics_create();
    CHECK(m != NULL);
    if (!m) return test_report("test_metrics");
    m->workers = 2;
    struct metrics_slot *a = &m->slot[0], *b = &m->slot[7];
    /* Promised space: every slot's sum; a slot below zero counts as none. */
    CHECK(metrics_promised(m) == 0);
    metrics_promise(m, a, 3000);
    metrics_promise(m, b, 500);
    metrics_promise(m, a, -1000);
    CHECK(metrics_promised(m) == 2500 && m->promised[7] == 500);
    metrics_promise(m, b, -700);
    CHECK(metrics_promised(m) == 2000);
    metrics_promise(m, b, 200);
    metrics_promise(m, a, -2000);
    CHECK(metrics_promised(m) == 0 && metrics_promised(NULL) == 0);
    metrics_upload(a, MT_TCP, MV_CLEAN);
    metrics_upload(b, MT_TCP, MV_CLEAN);
    metrics_upload(b, MT_WS, MV_INFECTED);
    metrics_received(a, MT_TCP, 1000);
    metrics_received(b, MT_TCP, 24);
    metrics_connection(a, MT_WS, 1);
    metrics_connection(b, MT_WS, 1);
    metrics_connection(b, MT_WS, -1);
    metrics_error(a, 413);
    metrics_error(b, 413);
    metrics_error(b, 299);                  /* not a code we know: "other" */
    metrics_scan(a, 3000);                  /* 3 ms: the 0.005 bucket */
    metrics_scan(b, 700000);                /* 0.7 s: the 1 s bucket */
    metrics_scan(b, 99000000);              /* 99 s: only +Inf */
    metrics_hook(a, MH_OK, 8000);           /* 8 ms: the 0.01 bucket */
    metrics_hook(b, MH_TIMEOUT, 60000000);  /* 60 s: only +Inf */
    metrics_publish(a, MP_ACKED);
    metrics_publish(b, MP_ACKED);
    metrics_publish(b, MP_FAILED);
    metrics_resume(a, MT_TCP);
    metrics_resume(b, MT_TCP);
    metrics_requery(b, MT_WS);
    metrics_upload(NULL, MT_TCP, MV_CLEAN); /* no slot: ignored, not a crash */
    CHECK(metrics_slot_connections(b) == 0 && metrics_slot_connections(a) == 1);

    char *buf = malloc(65536);
    int n = metrics_render(m, buf, 65536);
    CHECK(n > 0 && (size_t)n == strlen(buf));
    CHECK(value(buf, "intake_uploads_total{transport=\"tcp\",verdict=\"clean\"}") == 2);
    CHECK(value(buf, "intake_uploads_total{transport=\"ws\",verdict=\"infected\"}") == 1);
    CHECK(value(buf, "intake_uploads_total{transport=\"ws\",verdict=\"unscanned\"}") == 0);
    CHECK(value(buf, "intake_received_bytes_total{transport=\"tcp\"}") == 1024);
    CHECK(value(buf, "intake_connections{transport=\"ws\"}") == 1);
    CHECK(value(buf, "intake_resumes_total{transport=\"tcp\"}") == 2);
    CHECK(value(buf, "intake_resumes_total{transport=\"ws\"}") == 0);
    CHECK(value(buf, "intake_requeries_total{transport=\"ws\"}") == 1);
    CHECK(value(buf, "intake_errors_total{code=\"413\"}") == 2);
    CHECK(value(buf, "intake_errors_total{code=\"other\"}") == 1);
    CHECK(value(buf, "intake_scan_duration_seconds_bucket{le=\"0.005\"}") == 1);
    CHECK(value(buf, "intake_scan_duration_seconds_bucket{le=\"0.5\"}") == 1);
    CHECK(value(buf, "intake_scan_duration_seconds_bucket{le=\"1\"}") == 2);
    CHECK(value(buf, "intake_scan_duration_seconds_bucket{le=\"10\"}") == 2);
    CHECK(value(buf, "intake_scan_duration_seconds_bucket{le=\"+Inf\"}") == 3);
    CHECK(value(buf, "intake_scan_duration_seconds_count") == 3);
    CHECK(strstr(buf, "intake_scan_duration_seconds_sum 99.703000\n") != NULL);
    CHECK(value(buf, "intake_workers") == 2);
    CHECK(value(buf, "intake_hook_runs_total{result=\"ok\"}") == 1);
    CHECK(value(buf, "intake_hook_runs_total{result=\"failed\"}") == 0);
    CHECK(value(buf, "intake_hook_runs_total{result=\"timeout\"}") == 1);
    CHECK(value(buf, "intake_hook_duration_seconds_bucket{le=\"0.01\"}") == 1);
    CHECK(value(buf, "intake_hook_duration_seconds_bucket{le=\"+Inf\"}") == 2);
    CHECK(value(buf, "intake_hook_duration_seconds_count") == 2);
    CHECK(strstr(buf, "intake_hook_duration_seconds_sum 60.008000\n") != NULL);
    CHECK(value(buf, "intake_publishes_total{result=\"acked\"}") == 2);
    CHECK(value(buf, "intake_publishes_total{result=\"failed\"}") == 1);
    CHECK(value(buf, "intake_publishes_total{result=\"dropped\"}") == 0);
    const char *types[] = {"intake_uploads_total counter",
                           "intake_received_bytes_total counter",
                           "intake_connections gauge",
                           "intake_errors_total counter",
                           "intake_scan_duration_seconds histogram",
                           "intake_hook_runs_total counter",
                           "intake_hook_duration_seconds histogram",
                           "intake_publishes_total counter",
                           "intake_workers gauge"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        char want[128];
        snprintf(want, sizeof want, "# TYPE %s\n", types[i]);
        CHECK_MSG(strstr(buf, want) != NULL, "missing %s", want);
    }
    /* Every line is a comment or "name{labels} value". */
    int bad = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] != '#' && !strchr(line, ' ')) bad++;
    CHECK(bad == 0);
    CHECK(metrics_render(m, buf, 100) == -1);
    free(buf);
    return test_report("test_metrics");
}
