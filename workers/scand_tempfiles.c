/* scand_tempfiles: libclamav's temp files, a failure to make or write one
 * noticed.
 *
 * libclamav 1.4 writes what it extracts to temp files and scans those. For
 * zip, tar and gzip members it checks every write and fails the scan; for
 * mail parts, uuencoded files and PDF streams it does not: with the temp
 * file system full (or a file-size limit) the member was written short or
 * not at all, the scan looked at what was there, and the file came back
 * clean with EICAR inside. Likewise when it cannot open a temp file (out
 * of descriptors, out of inodes): the part is skipped and the file is
 * clean. (Attack runs found both; test_scanner.py shows them.) No libclamav
 * setting or callback reports either.
 *
 * So intake-scand defines the calls libclamav and the libraries it loads
 * import to make and write files, as scand_dirs.c does mkdir: they call
 * them through the PLT, and the executable's definitions come first. Each
 * makes the real call (the system call, or for stdio the next definition,
 * libc's); only when it fails, and only on a thread that watches (a scan in
 * progress), it looks closer and may remember the errno. The scan that saw
 * one is answered ERROR unless it found something. What counts:
 *  - a failed write to a regular file in the temp dir (not a log, a pipe,
 *    a socket: those are not the engine losing content);
 *  - a failed open to make or write a file in the temp dir (but EEXIST: a
 *    unique name being looked for; an open to read, or to write without
 *    O_CREAT, may look for a file that was never made), or any open when
 *    out of descriptors or memory;
 *  - of a copy in the kernel (copy_file_range, sendfile, splice), only what
 *    loses data: "not supported here" makes the caller read and write.
 * EINTR and EAGAIN never count. */
#undef _FILE_OFFSET_BITS /* define exactly the names libclamav imports */
#define _GNU_SOURCE
#include "scand_tempfiles.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static _Thread_local bool watching;
static _Thread_local int first_error;
/* The temp dir as given to libclamav (its paths start with it) and as the
 * kernel names it (/proc/self/fd): set once, before the first scan. */
static char dir_given[PATH_MAX], dir_real[PATH_MAX];
static size_t given_len, real_len;

void scand_tempfiles_init(const char *dir)
{
    snprintf(dir_given, sizeof dir_given, "%s", dir);
    given_len = strlen(dir_given);
    while (given_len > 1 && dir_given[given_len - 1] == '/')
        dir_given[--given_len] = '\0';
    if (!realpath(dir, dir_real)) snprintf(dir_real, sizeof dir_real, "%s", dir_given);
    real_len = strlen(dir_real);
}

void scand_tempfiles_watch(void)
{
    first_error = 0;
    watching = true;
}

int scand_tempfiles_end(void)
{
    watching = false;
    return first_error;
}

static bool under(const char *path, const char *dir, size_t len)
{
    return len && strncmp(path, dir, len) == 0 && path[len] == '/';
}

static bool in_temp_dir(const char *path)
{
    return under(path, dir_given, given_len) || under(path, dir_real, real_len);
}

/* The path fd was opened by (" (deleted)" and all), or "" if unknown. */
static void fd_path(int fd, char *out, size_t cap)
{
    char link[32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
}

#define ANY_FILE (-100) /* a stream with no descriptor, or fflush(NULL) */

/* fd is a regular file in the temp dir (before init, or where its path
 * cannot be read, as without /proc: any regular file, failing closed). */
static bool temp_file(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) return false;
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    return !given_len || !path[0] || in_temp_dir(path);
}

/* A write to fd failed with errno en. Keeps errno. EBADF is a descriptor
 * not open for writing, not a file that lost content. */
__attribute__((noinline)) static void write_failed(int fd, int en)
{
    if (watching && !first_error && en != EINTR && en != EAGAIN && en != EBADF &&
        (fd == ANY_FILE || temp_file(fd)))
        first_error = en ? en : EIO;
    errno = en;
}

/* A copy in the kernel (copy_file_range, sendfile, splice) failed: callers
 * fall back to reading and writing on "not here" (EINVAL, EXDEV, ENOSYS,
 * EOPNOTSUPP...), so only what loses data counts. */
__attribute__((noinline)) static void copy_failed(int fd, int en)
{
    if (en == ENOSPC || en == EDQUOT || en == EFBIG || en == EIO || en == ENOMEM)
        write_failed(fd, en);
    errno = en;
}

enum open_kind { READING, WRITING, CREATING };

/* An open of path (relative to dirfd), a dup or an fdopen (path NULL)
 * failed with errno en. Keeps errno. In the temp dir, an open only to read,
 * or to write a file that is not there (ENOENT without O_CREAT), is a look,
 * not a failure: libclamav looks for files a step may or may not have made
 * (after HTML, html-tmp.*\/javascript exists only if there was a script). */
__attribute__((noinline)) static void open_failed(int dirfd, const char *path, enum open_kind kind,
                                                  int en)
{
    if (watching && !first_error && en != EINTR && en != EAGAIN && en != EEXIST) {
        bool counts = en == EMFILE || en == ENFILE || en == ENOMEM;
        if (!counts && path && (kind == CREATING || (kind == WRITING && en != ENOENT))) {
            char full[PATH_MAX * 2];
            if (path[0] == '/') {
                snprintf(full, sizeof full, "%s", path);
            } else {
                char base[PATH_MAX];
                if (dirfd == AT_FDCWD) {
                    if (!getcwd(base, sizeof base)) base[0] = '\0';
                } else {
                    fd_path(dirfd, base, sizeof base);
                }
                snprintf(full, sizeof full, "%s/%s", base, path);
            }
            counts = in_temp_dir(full);
        }
        if (counts) first_error = en ? en : EIO;
    }
    errno = en;
}

/* Whoever calls these lands here, at any time, a sanitizer's runtime too
 * (see scand_dirs.c): the entry points are uninstrumented and touch only
 * this thread's flag, and only after a failure. */
#define UNCHECKED __attribute__((no_sanitize("address", "undefined")))
#define CHECK(fd, rc)                                                                              \
    do {                                                                                           \
        if ((rc) < 0 && watching) write_failed((fd), errno);                                       \
    } while (0)
#define CHECK_COPY(fd, rc)                                                                         \
    do {                                                                                           \
        if ((rc) < 0 && watching) copy_failed((fd), errno);                                        \
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
    CHECK_COPY(out, rc);
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
    CHECK_COPY(out, rc);
    return rc;
}

UNCHECKED ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                                  unsigned flags)
{
    ssize_t rc = syscall(SYS_copy_file_range, in, in_off, out, out_off, n, flags);
    CHECK_COPY(out, rc);
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

/* Opening: the mode is there only with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, mode)                                                                     \
    do {                                                                                           \
        if (((flags)&O_CREAT) || ((flags)&O_TMPFILE) == O_TMPFILE) {                               \
            va_list ap;                                                                            \
            va_start(ap, flags);                                                                   \
            mode = (mode_t)va_arg(ap, int);                                                        \
            va_end(ap);                                                                            \
        }                                                                                          \
    } while (0)

static int open_at(int dirfd, const char *path, int flags, mode_t mode)
{
    int rc = (int)syscall(SYS_openat, dirfd, path, flags, mode);
    if (rc < 0 && watching)
        open_failed(dirfd, path,
                    (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? CREATING
                    : flags & (O_WRONLY | O_RDWR)                         ? WRITING
                                                                          : READING,
                    errno);
    return rc;
}

UNCHECKED int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return open_at(AT_FDCWD, path, flags, mode);
}

/* The same calls under their LFS names (one function on 64-bit Linux). */
UNCHECKED int open64(const char *path, int flags, ...) __attribute__((alias("open")));

UNCHECKED int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return open_at(dirfd, path, flags, mode);
}

UNCHECKED int openat64(int dirfd, const char *path, int flags, ...)
    __attribute__((alias("openat")));

UNCHECKED int dup(int fd)
{
    int rc = (int)syscall(SYS_dup, fd);
    if (rc < 0 && watching) open_failed(AT_FDCWD, NULL, READING, errno);
    return rc;
}

UNCHECKED int dup2(int fd, int to)
{
#ifdef SYS_dup2
    int rc = (int)syscall(SYS_dup2, fd, to);
#else /* arm64, riscv64: dup3, which refuses fd == to where dup2 checks fd */
    int rc = fd == to ? (int)syscall(SYS_fcntl, fd, F_GETFD) : (int)syscall(SYS_dup3, fd, to, 0);
    if (fd == to && rc >= 0) rc = to;
#endif
    if (rc < 0 && watching) open_failed(AT_FDCWD, NULL, READING, errno);
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
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef FILE *(*fdopen_fn)(int, const char *);
typedef int (*vfprintf_fn)(FILE *, const char *, va_list);
typedef int (*vfprintf_chk_fn)(FILE *, int, const char *, va_list);
typedef DIR *(*opendir_fn)(const char *);
typedef DIR *(*fdopendir_fn)(int);
REAL(fwrite, fwrite_fn)
REAL(fputs, fputs_fn)
REAL(fputc, fputc_fn)
REAL(putc, fputc_fn)
REAL(fflush, fflush_fn)
REAL(fclose, fflush_fn)
REAL(fopen, fopen_fn)
REAL(fdopen, fdopen_fn)
REAL(vfprintf, vfprintf_fn)
REAL(__vfprintf_chk, vfprintf_chk_fn)
REAL(opendir, opendir_fn)
REAL(fdopendir, fdopendir_fn)

static int stream_fd(FILE *f)
{
    int fd = f ? fileno(f) : -1;
    return fd >= 0 ? fd : ANY_FILE;
}

UNCHECKED size_t fwrite(const void *restrict p, size_t size, size_t n, FILE *restrict f)
{
    size_t rc = real_fwrite()(p, size, n, f);
    if (rc < n && size && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fputs(const char *restrict s, FILE *restrict f)
{
    int rc = real_fputs()(s, f);
    if (rc == EOF && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fputc(int c, FILE *f)
{
    int rc = real_fputc()(c, f);
    if (rc == EOF && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int putc(int c, FILE *f)
{
    int rc = real_putc()(c, f);
    if (rc == EOF && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fflush(FILE *f)
{
    int rc = real_fflush()(f);
    if (rc == EOF && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fclose(FILE *f)
{
    /* Which file it was must be asked before it is gone. */
    bool file = false;
    if (watching) {
        int fd = fileno(f);
        file = fd < 0 || temp_file(fd);
    }
    int rc = real_fclose()(f);
    if (rc == EOF && file) write_failed(ANY_FILE, errno);
    return rc;
}

/* What fopen's mode does: "w" and "a" make the file, "r+" writes it. */
static enum open_kind mode_kind(const char *mode)
{
    if (mode && (mode[0] == 'w' || mode[0] == 'a')) return CREATING;
    return mode && strchr(mode, '+') ? WRITING : READING;
}

UNCHECKED FILE *fopen(const char *restrict path, const char *restrict mode)
{
    FILE *f = real_fopen()(path, mode);
    if (!f && watching) open_failed(AT_FDCWD, path, mode_kind(mode), errno);
    return f;
}

UNCHECKED FILE *fopen64(const char *restrict path, const char *restrict mode)
    __attribute__((alias("fopen")));

UNCHECKED FILE *fdopen(int fd, const char *mode)
{
    FILE *f = real_fdopen()(fd, mode);
    if (!f && watching) open_failed(AT_FDCWD, NULL, READING, errno);
    return f;
}

/* Directories: libclamav walks what some extractors made. glibc opens them
 * inside, not through open(): out of descriptors or memory counts here,
 * and a directory that is not there is a look. */
UNCHECKED DIR *opendir(const char *path)
{
    DIR *d = real_opendir()(path);
    if (!d && watching) open_failed(AT_FDCWD, path, READING, errno);
    return d;
}

UNCHECKED DIR *fdopendir(int fd)
{
    DIR *d = real_fdopendir()(fd);
    if (!d && watching) open_failed(AT_FDCWD, NULL, READING, errno);
    return d;
}

/* The printf family writes through the stream like fwrite (glibc's
 * fortified names included: the libraries are built with them). */
UNCHECKED int vfprintf(FILE *restrict f, const char *restrict fmt, va_list ap)
{
    int rc = real_vfprintf()(f, fmt, ap);
    if (rc < 0 && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int fprintf(FILE *restrict f, const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = real_vfprintf()(f, fmt, ap);
    va_end(ap);
    if (rc < 0 && watching) write_failed(stream_fd(f), errno);
    return rc;
}

int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap);
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...);

UNCHECKED int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap)
{
    int rc = real___vfprintf_chk()(f, flag, fmt, ap);
    if (rc < 0 && watching) write_failed(stream_fd(f), errno);
    return rc;
}

UNCHECKED int __fprintf_chk(FILE *f, int flag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = real___vfprintf_chk()(f, flag, fmt, ap);
    va_end(ap);
    if (rc < 0 && watching) write_failed(stream_fd(f), errno);
    return rc;
}
