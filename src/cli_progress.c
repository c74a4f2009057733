/* cli_progress: see cli_progress.h. Writes to stderr only. */
#define _GNU_SOURCE
#include "cli_progress.h"

#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_bytes(double v, char *out, int cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, (size_t)cap, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void progress_begin(struct progress *p, bool on, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->on = on;
    p->label = label;
    p->total = total;
    p->start = now();
    p->last_draw = 0;
    /* An empty file has no bytes to count: it goes straight to the scan. */
    if (total == 0) progress_update(p, 0);
}

void progress_resume(struct progress *p, uint64_t offset)
{
    p->base = offset;
    p->start = now();
    progress_update(p, offset);
}

void progress_update(struct progress *p, uint64_t done)
{
    if (!p->on) return;
    double t = now();
    bool sent = done >= p->total;
    if (!sent && t - p->last_draw < 0.1) return;
    p->last_draw = t;
    struct winsize ws;
    int cols = ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20 ? ws.ws_col : 80;
    double el = t - p->start;
    char d[16], tot[16], r[16], tail[160];
    progress_bytes((double)done, d, sizeof d);
    progress_bytes((double)p->total, tot, sizeof tot);
    int tl;
    if (sent) {
        /* Every byte is out: the average over the whole file (never "--"),
         * and what the wait is for now (a big archive can take a while). */
        progress_bytes((double)(done - p->base) / (el > 0.001 ? el : 0.001), r, sizeof r);
        tl = snprintf(tail, sizeof tail, " 100%% %s %s/s avg, scanning...", tot, r);
    } else {
        /* The first socket buffer fills at memory speed: no rate until it means something. */
        double rate = el > 0.25 ? (double)(done - p->base) / el : 0;
        char eta[48] = "--:--";
        if (rate > 0) {
            progress_bytes(rate, r, sizeof r);
            long left = (long)((double)(p->total - done) / rate + 0.5);
            snprintf(eta, sizeof eta, "%ld:%02ld", left / 60, left % 60);
        } else {
            snprintf(r, sizeof r, "--");
        }
        int pct = (int)(done * 100 / p->total);
        tl = snprintf(tail, sizeof tail, " %3d%% %s/%s %s/s %s left", pct, d, tot, r, eta);
    }
    int name_w = cols / 4;
    int bar_w = cols - name_w - tl - 4;
    if (bar_w < 5) bar_w = 5;
    char bar[512];
    int fill = sent ? bar_w : (int)((double)done / (double)p->total * bar_w);
    for (int i = 0; i < bar_w && i < (int)sizeof bar - 1; i++)
        bar[i] = i < fill ? '#' : (i == fill ? '>' : '.');
    bar[bar_w < (int)sizeof bar ? bar_w : (int)sizeof bar - 1] = '\0';
    fprintf(stderr, "\r%-*.*s [%s]%s\033[K", name_w, name_w, p->label, bar, tail);
    fflush(stderr);
}

void progress_end(struct progress *p)
{
    if (!p->on) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
