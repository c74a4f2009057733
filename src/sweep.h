/* sweep: expires uploads from the spool. An upload that was interrupted,
 * that ended with verdict error, or whose verdict was given, stays
 * resumable and askable for resume_timeout after its files were last
 * touched; then all its spool files (.part, .state, a stray .state.tmp) go.
 * The master runs it every second or so. An upload whose .part is locked
 * (a worker holds it) is never touched. */
#ifndef INTAKE_SWEEP_H
#define INTAKE_SWEEP_H

#include <stdint.h>

/* Sweeps spool_dir once: uploads untouched for limit_ms go. Returns the
 * number removed, or -errno if the directory cannot be read. */
int sweep_spool(const char *spool_dir, uint64_t limit_ms);

#endif
