/* cli_progress: the intake CLI's per-file progress bar on a terminal: bytes,
 * rate and time left, redrawn in place at most 10 times a second; once the
 * last byte is sent, the average rate and "scanning..." until the verdict. */
#ifndef INTAKE_CLI_PROGRESS_H
#define INTAKE_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
    bool on;
    const char *label;
    uint64_t total;
    double start, last_draw;
};

void progress_begin(struct progress *p, bool on, const char *label, uint64_t total);
void progress_update(struct progress *p, uint64_t done);
/* Erases the bar so the result line takes its place. */
void progress_end(struct progress *p);
/* "12.3 MiB" */
void progress_bytes(double v, char *out, int cap);

#endif
