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
    uint64_t base; /* bytes the server already had: not counted in rates */
    double start, last_draw;
};

void progress_begin(struct progress *p, bool on, const char *label, uint64_t total);
void progress_update(struct progress *p, uint64_t done);
/* A resumed upload: the bar goes on from offset, the rate counts from now. */
void progress_resume(struct progress *p, uint64_t offset);
/* Erases the bar so the result line takes its place. */
void progress_end(struct progress *p);
/* "12.3 MiB" */
void progress_bytes(double v, char *out, int cap);

#endif
