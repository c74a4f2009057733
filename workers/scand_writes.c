/* scand_writes: failed file writes during a scan, noticed.
 *
 * libclamav 1.4 writes what it extracts to temp files and scans those. For
 * zip, tar and gzip members it checks every write and fails the scan; for
 * mail parts, uuencoded files and PDF streams it does not: with the temp
 * file system full (or a file-size limit) the member was written short or
 * not at all, the scan looked at what was there, and the file came back
 * clean with EICAR inside (an attack run found it; so does
 * test_scanner.py). No libclamav setting or callback reports it.
 *
 * So intake-scand defines the write calls libclamav imports, as
 * scand_dirs.c does mkdir: libclamav, and every library it loads, calls
 * them through the PLT, and the executable's definitions come first. Each
 * makes the real call (the system call, or for stdio the next definition,
 * libc's); only when it fails, and only on a thread that watches (a scan
 * in progress), it looks whether the target is a regular file and, if so,
 * remembers the errno. The scan that saw one is answered ERROR unless it
 * found something. A failed write to a pipe or socket (a log, a client) is
 * not the engine losing content and is not counted. */
#undef _FILE_OFFSET_BITS /* define exactly the names libclamav imports */
#define _GNU_SOURCE
#include "scand_writes.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static _Thread_local bool watching;
static _Thread_local int first_error;

void scand_writes_watch(void)
{
    first_error = 0;
    watching = true;
}

int scand_writes_end(void)
{
    watching = false;
    return first_error;
}

#define ANY_FILE (-100) /* a stream with no descriptor, or fflush(NULL) */

/* A call on fd failed with errno en: remembered if this thread watches and
 * fd is a regular file or ANY_FILE. Keeps errno. */
__attribute__((noinline)) static void failed(int fd, int en)
{
    struct stat st;
    if (watching && !first_error && en != EINTR && en != EAGAIN &&
        (fd == ANY_FILE || (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))))
        first_error = en ? en : EIO;
    errno = en;
}

/* Whoever calls these lands here, at any time, a sanitizer's runtime too
 * (see scand_dirs.c): the entry points are uninstrumented and touch only
 * this thread's flag, and only after a failure. */
#define UNCHECKED __attribute__((no_sanitize("address", "undefined")))
#define CHECK(fd, rc)                                                                              \
    do {                                                                                           \
        if ((rc) < 0 && watching) failed((fd), errno);                                             \
    } while (0)

UNCHECKED ssize_t write(int fd, const void *buf, size_t n)
{
    ssize_t rc = syscall(SYS_write, fd, buf, n);
    CHECK(fd, rc);
    return rc;
}

UNCHECKED ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    ssize_t rc = syscall(SYS_writev, fd, iov, cnt);
    CHECK(fd, rc);
    return rc;
}

/* Each with and without 64 in its name: libclamav imports some of either,
 * and the libraries it loads may import the others (the same calls on
 * 64-bit Linux). */
UNCHECKED ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    ssize_t rc = syscall(SYS_pwrite64, fd, buf, n, off);
    CHECK(fd, rc);
    return rc;
}

UNCHECKED ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite64(fd, buf, n, off);
}

UNCHECKED ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    /* The kernel takes the offset in two halves (for 32-bit callers). */
    ssize_t rc = syscall(SYS_pwritev, fd, iov, cnt, (unsigned long)off,
                         (unsigned long)((unsigned long long)off >> 32));
    CHECK(fd, rc);
    return rc;
}

UNCHECKED ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return pwritev64(fd, iov, cnt, off);
}

UNCHECKED ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
    ssize_t rc = syscall(SYS_sendfile, out, in, off, n);
    CHECK(out, rc);
    return rc;
}

UNCHECKED ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    return sendfile64(out, in, (off64_t *)off, n);
}

UNCHECKED int ftruncate64(int fd, off64_t len)
{
    int rc = (int)syscall(SYS_ftruncate, fd, len);
    CHECK(fd, rc);
    return rc;
}

UNCHECKED int ftruncate(int fd, off_t len)
{
    return ftruncate64(fd, len);
}

UNCHECKED ssize_t splice(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                         unsigned flags)
{
    ssize_t rc = syscall(SYS_splice, in, in_off, out, out_off, n, flags);
    CHECK(out, rc);
    return rc;
}

UNCHECKED ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                                  unsigned flags)
{
    ssize_t rc = syscall(SYS_copy_file_range, in, in_off, out, out_off, n, flags);
    CHECK(out, rc);
    return rc;
}

UNCHECKED int fsync(int fd)
{
    int rc = (int)syscall(SYS_fsync, fd);
    CHECK(fd, rc);
    return rc;
}

UNCHECKED int fdatasync(int fd)
{
    int rc = (int)syscall(SYS_fdatasync, fd);
    CHECK(fd, rc);
    return rc;
}

/* stdio: libc's own functions do the work (buffering, locking); a failure
 * shows as their error return. Looked up once; a race only looks up the
 * same address twice. */
#define REAL(name, type)                                                                           \
    static type real_##name(void)                                                                  \
    {                                                                                              \
        static _Atomic(type) p;                                                                    \
        type f = atomic_load_explicit(&p, memory_order_relaxed);                                   \
        if (!f) {                                                                                  \
            f = (type)dlsym(RTLD_NEXT, #name);                                                     \
            atomic_store_explicit(&p, f, memory_order_relaxed);                                    \
        }                                                                                          \
        return f;                                                                                  \
    }

typedef size_t (*fwrite_fn)(const void *, size_t, size_t, FILE *);
typedef int (*fputs_fn)(const char *, FILE *);
typedef int (*fputc_fn)(int, FILE *);
typedef int (*fflush_fn)(FILE *);
REAL(fwrite, fwrite_fn)
REAL(fputs, fputs_fn)
REAL(fputc, fputc_fn)
REAL(putc, fputc_fn)
REAL(fflush, fflush_fn)
REAL(fclose, fflush_fn)

static int stream_fd(FILE *f)
{
    int fd = f ? fileno(f) : -1;
    return fd >= 0 ? fd : ANY_FILE;
}

UNCHECKED size_t fwrite(const void *restrict p, size_t size, size_t n, FILE *restrict f)
{
    size_t rc = real_fwrite()(p, size, n, f);
    if (rc < n && size && watching) failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fputs(const char *restrict s, FILE *restrict f)
{
    int rc = real_fputs()(s, f);
    if (rc == EOF && watching) failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fputc(int c, FILE *f)
{
    int rc = real_fputc()(c, f);
    if (rc == EOF && watching) failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int putc(int c, FILE *f)
{
    int rc = real_putc()(c, f);
    if (rc == EOF && watching) failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fflush(FILE *f)
{
    int rc = real_fflush()(f);
    if (rc == EOF && watching) failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fclose(FILE *f)
{
    /* Which file it was must be asked before it is gone. */
    bool file = false;
    if (watching) {
        struct stat st;
        int fd = fileno(f);
        file = fd < 0 || (fstat(fd, &st) == 0 && S_ISREG(st.st_mode));
    }
    int rc = real_fclose()(f);
    if (rc == EOF && file) failed(ANY_FILE, errno);
    return rc;
}
