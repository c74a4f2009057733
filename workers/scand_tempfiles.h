/* scand_tempfiles: libclamav's temp files, a failure to make or write one
 * noticed (intake-scand only). libclamav extracts what it looks into (mail
 * parts, uuencoded files, PDF streams) into temp files, and for some
 * formats it does not check that the file was made or written: with the
 * temp file system full, or out of descriptors, it scanned what it got and
 * answered clean. This file defines the calls libclamav and its libraries
 * make to open and write files, so that a scan can tell. */
#ifndef INTAKE_SCAND_TEMPFILES_H
#define INTAKE_SCAND_TEMPFILES_H

/* The engine's temp dir: what fails there counts (before: every regular
 * file). */
void scand_tempfiles_init(const char *dir);

/* From now on, on this thread, a failure that can lose what the engine
 * extracts is remembered: a write to a regular file in the temp dir, an
 * open to make or write a file there (but EEXIST), running out of
 * descriptors or memory anywhere. EINTR, EAGAIN and EBADF never count. */
void scand_tempfiles_watch(void);

/* Stops watching on this thread: the errno of the first such failure since
 * scand_tempfiles_watch, or 0. */
int scand_tempfiles_end(void);

#endif
