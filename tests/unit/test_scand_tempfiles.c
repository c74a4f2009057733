/* Unit tests for scand_tempfiles: every write call libclamav imports, made
 * to fail on a file in the temp dir (a file-size limit: EFBIG), and every
 * open that fails there or runs out of descriptors, is remembered on a
 * watching thread; failures elsewhere (not watching, another thread, a
 * file outside the temp dir such as a log, a pipe, EAGAIN, EEXIST, a bad
 * descriptor) are not, and the calls still do their work. */
#undef _FILE_OFFSET_BITS /* call each name itself, with and without 64 */
#define _GNU_SOURCE
#include "scand_tempfiles.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

enum { LIMIT = 4096 };
static char dir[64];
static struct rlimit unlimited;

/* A regular file whose offset is at the file-size limit: the next byte
 * written there fails with EFBIG while the limit is on. */
static int at_limit(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/f.XXXXXX", dir);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    lseek(fd, LIMIT, SEEK_SET);
    return fd;
}

static void limit_on(void)
{
    struct rlimit r = {LIMIT, unlimited.rlim_max};
    CHECK(setrlimit(RLIMIT_FSIZE, &r) == 0);
}

static void limit_off(void)
{
    CHECK(setrlimit(RLIMIT_FSIZE, &unlimited) == 0);
}

static const char data[64] = "what libclamav extracted";

/* Each makes one call that fails past the limit; returns what it returned
 * (negative or short) as 0 for "failed", 1 for "did not fail". */
static int do_write(int fd)
{
    return write(fd, data, sizeof data) >= 0;
}

static int do_writev(int fd)
{
    struct iovec v[2] = {{(void *)data, 10}, {(void *)(data + 10), 10}};
    return writev(fd, v, 2) >= 0;
}

static int do_pwrite(int fd)
{
    return pwrite(fd, data, sizeof data, LIMIT) >= 0;
}

static int do_pwrite64(int fd)
{
    return pwrite64(fd, data, sizeof data, LIMIT) >= 0;
}

static int do_pwritev(int fd)
{
    struct iovec v = {(void *)data, sizeof data};
    return pwritev(fd, &v, 1, LIMIT) >= 0;
}

static int do_pwritev64(int fd)
{
    struct iovec v = {(void *)data, sizeof data};
    return pwritev64(fd, &v, 1, LIMIT) >= 0;
}

static int do_ftruncate(int fd)
{
    return ftruncate(fd, 2 * LIMIT) >= 0;
}

static int do_ftruncate64(int fd)
{
    return ftruncate64(fd, 2 * LIMIT) >= 0;
}

static int do_sendfile(int fd)
{
    int in = at_limit();
    pwrite(in, data, sizeof data, 0);
    off_t off = 0;
    int ok = sendfile(fd, in, &off, sizeof data) >= 0;
    close(in);
    return ok;
}

static int do_sendfile64(int fd)
{
    int in = at_limit();
    pwrite(in, data, sizeof data, 0);
    off64_t off = 0;
    int ok = sendfile64(fd, in, &off, sizeof data) >= 0;
    close(in);
    return ok;
}

static int do_splice(int fd)
{
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], data, sizeof data) == (ssize_t)sizeof data);
    int ok = splice(p[0], NULL, fd, NULL, sizeof data, 0) >= 0;
    close(p[0]);
    close(p[1]);
    return ok;
}

static int do_copy_file_range(int fd)
{
    int in = at_limit();
    pwrite(in, data, sizeof data, 0);
    off_t off = 0;
    int ok = copy_file_range(in, &off, fd, NULL, sizeof data, 0) >= 0;
    close(in);
    return ok;
}

static FILE *unbuffered(int fd)
{
    FILE *f = fdopen(fd, "w");
    CHECK(f != NULL);
    setvbuf(f, NULL, _IONBF, 0);
    return f;
}

static int do_fwrite(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = fwrite(data, 1, sizeof data, f) == sizeof data;
    fclose(f);
    return ok;
}

static int do_fputs(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = fputs(data, f) != EOF;
    fclose(f);
    return ok;
}

static int do_fputc(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = fputc('x', f) != EOF;
    fclose(f);
    return ok;
}

static int do_putc(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = putc('x', f) != EOF;
    fclose(f);
    return ok;
}

static int do_fflush(int fd)
{
    FILE *f = fdopen(dup(fd), "w");
    fwrite(data, 1, sizeof data, f); /* buffered: this one succeeds */
    int ok = fflush(f) != EOF;
    fclose(f);
    return ok;
}

static int do_fclose(int fd)
{
    FILE *f = fdopen(dup(fd), "w");
    fwrite(data, 1, sizeof data, f);
    return fclose(f) != EOF; /* the flush inside fails */
}

static int do_fprintf(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = fprintf(f, "%s", data) >= 0;
    fclose(f);
    return ok;
}

static int call_vfprintf(FILE *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfprintf(f, fmt, ap);
    va_end(ap);
    return rc;
}

static int do_vfprintf(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = call_vfprintf(f, "%s", data) >= 0;
    fclose(f);
    return ok;
}

/* glibc's fortified names, as the libraries libclamav loads call them. */
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...);

static int do_fprintf_chk(int fd)
{
    FILE *f = unbuffered(dup(fd));
    int ok = __fprintf_chk(f, 1, "%s", data) >= 0;
    fclose(f);
    return ok;
}

static const struct {
    const char *name;
    int (*call)(int fd);
} calls[] = {
    {"write", do_write},
    {"writev", do_writev},
    {"pwrite", do_pwrite},
    {"pwrite64", do_pwrite64},
    {"pwritev", do_pwritev},
    {"pwritev64", do_pwritev64},
    {"ftruncate", do_ftruncate},
    {"ftruncate64", do_ftruncate64},
    {"sendfile", do_sendfile},
    {"sendfile64", do_sendfile64},
    {"splice", do_splice},
    {"copy_file_range", do_copy_file_range},
    {"fwrite", do_fwrite},
    {"fputs", do_fputs},
    {"fputc", do_fputc},
    {"putc", do_putc},
    {"fflush", do_fflush},
    {"fclose", do_fclose},
    {"fprintf", do_fprintf},
    {"vfprintf", do_vfprintf},
    {"__fprintf_chk", do_fprintf_chk},
};

/* Without /proc (a container that does not mount it) a descriptor's path
 * cannot be read: a failed write to a regular file counts then (failing
 * closed). In a child with a mount namespace of its own and /proc gone;
 * needs root, skipped otherwise. 1 passed, 0 failed, -1 skipped. */
static int without_proc(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            umount2("/proc", MNT_DETACH) < 0)
            _exit(77);
        int fd = at_limit();
        scand_tempfiles_watch();
        limit_on();
        do_write(fd);
        limit_off();
        _exit(scand_tempfiles_end() == EFBIG ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void *fail_unwatched(void *arg)
{
    (void)arg;
    int fd = at_limit();
    limit_on();
    int ok = do_write(fd);
    limit_off();
    close(fd);
    return (void *)(long)ok;
}

static void *fail_watched(void *arg)
{
    (void)arg;
    int fd = at_limit();
    scand_tempfiles_watch();
    limit_on();
    do_write(fd);
    limit_off();
    close(fd);
    return (void *)(long)scand_tempfiles_end();
}

int main(void)
{
    signal(SIGXFSZ, SIG_IGN); /* as intake-scand: the write fails instead */
    signal(SIGPIPE, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &unlimited);
    snprintf(dir, sizeof dir, "/tmp/test_scand_tempfiles.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    /* Outside the temp dir: a file that is not the engine's (a log). */
    char outside[96];
    snprintf(outside, sizeof outside, "%s.log", dir);
    scand_tempfiles_init(dir);

    /* Every call: failing past the limit is remembered while watched, with
     * its errno, and errno is what the call set. */
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        int fd = at_limit();
        scand_tempfiles_watch();
        limit_on();
        errno = 0;
        int ok = calls[i].call(fd);
        int en = errno;
        limit_off();
        int got = scand_tempfiles_end();
        CHECK_MSG(!ok, "%s past the limit did not fail", calls[i].name);
        CHECK_MSG(got == EFBIG, "%s: remembered %d (%s), not EFBIG", calls[i].name, got,
                  strerror(got));
        if (strcmp(calls[i].name, "fclose") != 0)
            CHECK_MSG(en == EFBIG, "%s: errno %d after the call", calls[i].name, en);
        close(fd);
    }

    /* Under the limit the calls work and nothing is remembered. */
    {
        int fd = at_limit();
        lseek(fd, 0, SEEK_SET);
        scand_tempfiles_watch();
        limit_on();
        CHECK(write(fd, data, sizeof data) == (ssize_t)sizeof data);
        FILE *f = fdopen(dup(fd), "w");
        CHECK(fwrite(data, 1, sizeof data, f) == sizeof data);
        CHECK(fclose(f) == 0);
        limit_off();
        CHECK(scand_tempfiles_end() == 0);
        char back[sizeof data];
        CHECK(pread(fd, back, sizeof back, 0) == (ssize_t)sizeof back &&
              memcmp(back, data, sizeof data) == 0);
        close(fd);
    }

    /* Not watching: the same failure is not remembered, and a later watch
     * starts clean. */
    {
        int fd = at_limit();
        limit_on();
        CHECK(!do_write(fd));
        limit_off();
        scand_tempfiles_watch();
        CHECK(scand_tempfiles_end() == 0);
        close(fd);
    }

    /* Only the first failure counts, and a new watch forgets it. */
    {
        int fd = at_limit();
        scand_tempfiles_watch();
        limit_on();
        do_write(fd);
        limit_off();
        char path[128];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY);
        CHECK(ro >= 0 && write(ro, data, 1) < 0 && errno == EBADF); /* a file, but second */
        close(ro);
        CHECK(scand_tempfiles_end() == EFBIG);
        scand_tempfiles_watch();
        CHECK(scand_tempfiles_end() == 0);
        close(fd);
    }

    /* Not a file losing content: a pipe with no reader (EPIPE), a full
     * non-blocking pipe (EAGAIN), a bad descriptor (EBADF), a temp file
     * open only for reading (EBADF: the scanner's lock on fd 2 when it was
     * started with stderr closed). */
    {
        int p[2];
        CHECK(pipe2(p, O_NONBLOCK) == 0);
        scand_tempfiles_watch();
        char big[4096] = {0};
        while (write(p[1], big, sizeof big) > 0) {
        }
        CHECK(errno == EAGAIN);
        close(p[0]);
        CHECK(write(p[1], data, 1) < 0 && errno == EPIPE);
        CHECK(write(-1, data, 1) < 0 && errno == EBADF);
        CHECK(fsync(-1) < 0 && fdatasync(-1) < 0);
        char lock[96];
        snprintf(lock, sizeof lock, "%s/lock", dir);
        int ro = open(lock, O_RDONLY | O_CREAT, 0600);
        CHECK(ro >= 0 && write(ro, data, 1) < 0 && errno == EBADF);
        close(ro);
        unlink(lock);
        CHECK(scand_tempfiles_end() == 0);
        close(p[1]);
    }

    /* Per thread: another thread's failure is not this thread's, and a
     * thread that watches sees its own. */
    {
        scand_tempfiles_watch();
        pthread_t t;
        void *ok;
        CHECK(pthread_create(&t, NULL, fail_unwatched, NULL) == 0);
        pthread_join(t, &ok);
        CHECK(ok == NULL); /* it failed there */
        void *got;
        CHECK(pthread_create(&t, NULL, fail_watched, NULL) == 0);
        pthread_join(t, &got);
        CHECK((long)got == EFBIG);
        CHECK(scand_tempfiles_end() == 0);
    }

    /* A copy in the kernel refused as "not here" (from a pipe: EINVAL) is
     * not lost data: the caller reads and writes instead. */
    {
        int fd = at_limit();
        int p[2];
        CHECK(pipe(p) == 0);
        CHECK(write(p[1], data, sizeof data) == (ssize_t)sizeof data);
        scand_tempfiles_watch();
        CHECK(copy_file_range(p[0], NULL, fd, NULL, sizeof data, 0) < 0 && errno == EINVAL);
        CHECK(sendfile(fd, p[0], NULL, sizeof data) < 0 && errno == EINVAL);
        CHECK(scand_tempfiles_end() == 0);
        close(p[0]);
        close(p[1]);
        close(fd);
    }

    /* A file outside the temp dir (the scanner's log on a full disk): its
     * failed writes are not the engine's. */
    {
        int fd = open(outside, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        lseek(fd, LIMIT, SEEK_SET);
        scand_tempfiles_watch();
        limit_on();
        CHECK(!do_write(fd) && !do_fwrite(fd) && !do_fprintf(fd));
        limit_off();
        CHECK(scand_tempfiles_end() == 0);
        close(fd);
        unlink(outside);
    }

    /* Opens: one that fails in the temp dir counts (a directory gone:
     * ENOENT; by a relative path too), EEXIST there does not (a unique name
     * being looked for), ENOENT elsewhere does not (a probe). */
    {
        char path[160];
        snprintf(path, sizeof path, "%s/gone/part", dir);
        scand_tempfiles_watch();
        CHECK(open(path, O_WRONLY | O_CREAT, 0600) < 0 && errno == ENOENT);
        CHECK(scand_tempfiles_end() == ENOENT);

        scand_tempfiles_watch();
        CHECK(fopen(path, "w") == NULL && errno == ENOENT);
        CHECK(scand_tempfiles_end() == ENOENT);

        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        CHECK(dfd >= 0);
        scand_tempfiles_watch();
        CHECK(openat(dfd, "gone/part", O_WRONLY | O_CREAT, 0600) < 0 && errno == ENOENT);
        CHECK(scand_tempfiles_end() == ENOENT);

        /* Only looking (to read) for a file that was never made is not a
         * failure: libclamav does it after every HTML page without a
         * script. */
        scand_tempfiles_watch();
        CHECK(openat(dfd, "gone/part", O_RDONLY) < 0 && errno == ENOENT);
        CHECK(open(path, O_RDONLY) < 0 && errno == ENOENT);
        CHECK(fopen(path, "r") == NULL && errno == ENOENT);
        CHECK(fopen(path, "rb") == NULL && errno == ENOENT);
        CHECK(scand_tempfiles_end() == 0);
        /* To write one that is not there, without making it: a look too. */
        scand_tempfiles_watch();
        CHECK(fopen(path, "r+") == NULL && errno == ENOENT);
        CHECK(open(path, O_RDWR) < 0 && errno == ENOENT);
        CHECK(scand_tempfiles_end() == 0);
        /* But a write open that fails otherwise counts (a directory). */
        char sub[160];
        snprintf(sub, sizeof sub, "%s/sub", dir);
        CHECK(mkdir(sub, 0700) == 0);
        scand_tempfiles_watch();
        CHECK(open(sub, O_WRONLY) < 0 && errno == EISDIR);
        CHECK(scand_tempfiles_end() == EISDIR);
        rmdir(sub);
        scand_tempfiles_watch();
        CHECK(fopen(path, "ab") == NULL && errno == ENOENT);
        CHECK(scand_tempfiles_end() == ENOENT);

        snprintf(path, sizeof path, "%s/taken", dir);
        int fd = open(path, O_WRONLY | O_CREAT, 0600);
        CHECK(fd >= 0);
        close(fd);
        scand_tempfiles_watch();
        CHECK(openat(dfd, "taken", O_WRONLY | O_CREAT | O_EXCL, 0600) < 0 && errno == EEXIST);
        CHECK(open("/nonexistent-intake/file", O_RDONLY) < 0 && errno == ENOENT);
        CHECK(fopen("/nonexistent-intake/file", "r") == NULL);
        char gone[160];
        snprintf(gone, sizeof gone, "%s/gone", dir);
        CHECK(opendir(gone) == NULL && errno == ENOENT); /* a look */
        DIR *d = opendir(dir);
        CHECK(d != NULL);
        if (d) closedir(d);
        CHECK(scand_tempfiles_end() == 0);
        unlink(path);

        /* The mode reaches the file (the variadic argument is passed on). */
        snprintf(path, sizeof path, "%s/mode", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
        struct stat st;
        CHECK(fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 0777) == (0640 & ~umask(022)));
        close(fd);
        unlink(path);
        close(dfd);
    }

    /* Out of descriptors: counts anywhere (open, fopen, dup, opendir). */
    {
        struct rlimit nofile, few;
        getrlimit(RLIMIT_NOFILE, &nofile);
        int probe = open("/dev/null", O_RDONLY);
        CHECK(probe >= 0);
        few.rlim_cur = (rlim_t)probe; /* every descriptor below is taken */
        few.rlim_max = nofile.rlim_max;
        for (int k = 0; k < 4; k++) {
            scand_tempfiles_watch();
            CHECK(setrlimit(RLIMIT_NOFILE, &few) == 0);
            int rc = k == 0   ? open("/dev/null", O_RDONLY)
                     : k == 1 ? (fopen("/dev/null", "r") ? 0 : -1)
                     : k == 2 ? dup(probe)
                              : (opendir(dir) ? 0 : -1);
            int en = errno;
            CHECK(setrlimit(RLIMIT_NOFILE, &nofile) == 0);
            CHECK_MSG(rc < 0 && en == EMFILE, "call %d: rc %d errno %d", k, rc, en);
            int got = scand_tempfiles_end();
            CHECK_MSG(got == en, "call %d: remembered %d, not %d", k, got, en);
        }
        close(probe);
    }

    int np = without_proc();
    if (np < 0)
        printf("scand_tempfiles: cannot hide /proc (not root?); that case skipped\n");
    else
        CHECK_MSG(np == 1, "without /proc a failed write to a temp file was not counted");

    rmdir(dir);
    return test_report("scand_tempfiles");
}
