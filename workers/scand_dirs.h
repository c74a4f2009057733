/* scand_dirs: libclamav's per-scan temporary directories, reused instead of
 * made and removed for every scan (intake-scand only). */
#ifndef INTAKE_SCAND_DIRS_H
#define INTAKE_SCAND_DIRS_H

#include <sys/types.h>

/* From now on, an emptied directory directly under dir (the engine's temp
 * dir) is parked there on rmdir and handed back by the next mkdir of a
 * directory directly under dir. */
void scand_dirs_init(const char *dir);

/* How many directories are parked now (for tests and the log). */
int scand_dirs_parked(void);

/* Around one scan, on its thread: the directory under dir that the scan
 * made and did not remove (libclamav gives up emptying it when it runs out
 * of descriptors), for the caller to remove; NULL when there is none. */
void scand_dirs_scan_begin(void);
const char *scand_dirs_scan_leftover(void);

/* This file defines mkdir(2) and rmdir(2) for the whole program; see
 * scand_dirs.c. */
int mkdir(const char *path, mode_t mode);
int rmdir(const char *path);

#endif
