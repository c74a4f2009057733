/* pidfile: see pidfile.h. */
#define _GNU_SOURCE
#include "pidfile.h"

#include "log.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

pid_t pidfile_read(const char *path, const char **why)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        *why = errno == ENOENT ? "no pid file (is intaked running?)" : strerror(errno);
        return -1;
    }
    long pid = 0;
    int ok = fscanf(f, "%ld", &pid) == 1 && pid > 1 && pid < INT_MAX;
    fclose(f);
    if (!ok) {
        *why = "the pid file does not hold a pid";
        return -1;
    }
    return (pid_t)pid;
}

static int is_intaked(pid_t pid)
{
    char p[64], buf[256] = "";
    snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kill(pid, 0) == 0; /* no /proc: trust the pid */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    /* A master names itself so (proctitle) before it writes its pid file,
     * cut short when its arguments and environment left less room; any
     * other process that merely has "intaked" in its name is not one (a
     * stale pid file naming it blocked the start, and -s signalled it). */
    static const char title[] = "intaked: master process";
    size_t len = strlen(buf);
    return len >= 7 && strncmp(buf, title, len < sizeof title - 1 ? len : sizeof title - 1) == 0;
}

/* The pid file's directory (run/ on a fresh checkout). */
static void mkdirs_for(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        store_mkdir_p(dir, 0755);
    }
}

bool pidfile_names_master(pid_t pid)
{
    return is_intaked(pid) == 1;
}

/* The pid file counts only if root or we wrote it, and names a master of
 * the same owner: with user, the pid file's directory is writable by the
 * user's group, and a file planted there while no master runs, naming a
 * process of the user's own called intaked, must neither be signalled by
 * root nor keep intaked from starting. */
bool pidfile_trusted(const char *path, pid_t pid)
{
    struct stat f, p;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%d", (int)pid);
    if (stat(path, &f) < 0 || (f.st_uid != 0 && f.st_uid != geteuid())) return false;
    if (stat(proc, &p) == 0 && p.st_uid != f.st_uid) return false;
    return pidfile_names_master(pid);
}

int pidfile_check(const char *path)
{
    const char *why;
    pid_t other = pidfile_read(path, &why);
    if (other > 0 && other != getpid() && kill(other, 0) == 0 && pidfile_trusted(path, other)) {
        log_error("another intaked (pid %d) is running with pid file %s; stop it first "
                  "(intaked -s stop) or use another pid_file",
                  (int)other, path);
        return -1;
    }
    return 0;
}

int pidfile_write(const char *path)
{
    if (pidfile_check(path) < 0) return -1;
    mkdirs_for(path);
    /* A fresh file under an unpredictable name: with user, the directory
     * may be writable by the user's group, and a file made there in advance
     * under a name we would open must not become the pid file. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0 || fchmod(fd, 0644) < 0) {
        log_error("cannot write pid file %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return -1;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    int rc = write(fd, line, (size_t)n) == n ? 0 : -1;
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0) rc = -1;
    if (rc < 0) {
        log_error("cannot write pid file %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return rc;
}

void pidfile_remove(const char *path)
{
    const char *why;
    if (pidfile_read(path, &why) == getpid()) unlink(path);
}
