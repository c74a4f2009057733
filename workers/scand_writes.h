/* scand_writes: failed file writes during a scan, noticed (intake-scand
 * only). libclamav extracts what it looks into (mail parts, uuencoded
 * files, PDF streams) into temp files, and for some formats it does not
 * check that the write worked: with the temp file system full it scanned
 * what it got and answered clean. This file defines the write calls
 * libclamav makes, so that a scan can tell. */
#ifndef INTAKE_SCAND_WRITES_H
#define INTAKE_SCAND_WRITES_H

/* From now on, on this thread, a write to a regular file that fails is
 * remembered (EINTR and EAGAIN are not failures). */
void scand_writes_watch(void);

/* Stops watching on this thread: the errno of the first failed write since
 * scand_writes_watch, or 0. */
int scand_writes_end(void);

#endif
