/* Unit tests for scand_dirs: an emptied scan directory is parked and handed
 * back (the same inode, nothing allocated), while everything mkdir and rmdir
 * must refuse is still refused and everything out of scope is untouched. */
#define _GNU_SOURCE
#include "scand_dirs.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[64];

static char *at(const char *name)
{
    static char path[4][PATH_MAX];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", base, name);
    return path[k];
}

static ino_t ino(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_ino : 0;
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
}

static void *churn(void *arg)
{
    int t = (int)(long)arg;
    for (int i = 0; i < 500; i++) {
        char path[PATH_MAX]; /* not at(): its buffers are shared */
        snprintf(path, sizeof path, "%s/t%d-%d-scantemp.x", base, t, i);
        if (mkdir(path, 0700) != 0 || rmdir(path) != 0) return (void *)1;
    }
    return NULL;
}

int main(void)
{
    snprintf(base, sizeof base, "/tmp/test_scand_dirs.XXXXXX");
    CHECK(mkdtemp(base) != NULL);

    /* Before init nothing is in scope: a plain mkdir and rmdir. */
    CHECK(mkdir(at("a-scantemp.1"), 0700) == 0);
    CHECK(rmdir(at("a-scantemp.1")) == 0);
    CHECK(ino(at("parked.0")) == 0 && scand_dirs_parked() == 0);

    scand_dirs_init(base);

    /* The first scan's directory is made for real, then parked. */
    CHECK(mkdir(at("b-scantemp.2"), 0700) == 0);
    ino_t first = ino(at("b-scantemp.2"));
    CHECK(first != 0);
    CHECK(rmdir(at("b-scantemp.2")) == 0);
    CHECK(ino(at("b-scantemp.2")) == 0);
    CHECK(ino(at("parked.0")) == first && scand_dirs_parked() == 1);

    /* The next one gets it back, under its own name. */
    CHECK(mkdir(at("c-scantemp.3"), 0700) == 0);
    CHECK(ino(at("c-scantemp.3")) == first && scand_dirs_parked() == 0);
    CHECK(ino(at("parked.0")) == 0);

    /* Not empty: rmdir refuses as it must, nothing is parked, and once
     * emptied it is parked. */
    touch(at("c-scantemp.3/member"));
    errno = 0;
    CHECK(rmdir(at("c-scantemp.3")) == -1 && errno == ENOTEMPTY);
    CHECK(scand_dirs_parked() == 0 && ino(at("c-scantemp.3")) == first);
    CHECK(ino(at("c-scantemp.3/member")) != 0); /* where it was, untouched */
    CHECK(mkdir(at("c-scantemp.3/sub"), 0700) == 0); /* deeper: out of scope */
    CHECK(unlink(at("c-scantemp.3/member")) == 0);
    errno = 0;
    CHECK(rmdir(at("c-scantemp.3")) == -1 && errno == ENOTEMPTY); /* a subdirectory */
    CHECK(rmdir(at("c-scantemp.3/sub")) == 0 && scand_dirs_parked() == 0);
    CHECK(rmdir(at("c-scantemp.3")) == 0 && scand_dirs_parked() == 1);

    /* A scan's leftover: the directory it made under base and did not
     * remove (a parked one handed back counts as made), none once it is
     * removed or parked, and never one deeper down. */
    scand_dirs_scan_begin();
    CHECK(scand_dirs_scan_leftover() == NULL);
    CHECK(mkdir(at("l-scantemp.9"), 0700) == 0); /* takes parked.0 */
    CHECK(mkdir(at("l-scantemp.9/deeper"), 0700) == 0);
    CHECK(scand_dirs_scan_leftover() != NULL &&
          strcmp(scand_dirs_scan_leftover(), at("l-scantemp.9")) == 0);
    CHECK(rmdir(at("l-scantemp.9")) == -1); /* not empty: still left */
    CHECK(scand_dirs_scan_leftover() != NULL);
    CHECK(rmdir(at("l-scantemp.9/deeper")) == 0);
    CHECK(scand_dirs_scan_leftover() != NULL); /* a deeper one is not the scan's */
    CHECK(rmdir(at("l-scantemp.9")) == 0 && scand_dirs_parked() == 1);
    CHECK(scand_dirs_scan_leftover() == NULL);
    scand_dirs_scan_begin();
    CHECK(mkdir(at("m-scantemp.10"), 0700) == 0);
    scand_dirs_scan_begin(); /* the next scan: not its own */
    CHECK(scand_dirs_scan_leftover() == NULL);
    CHECK(rmdir(at("m-scantemp.10")) == 0 && scand_dirs_parked() == 1);

    /* mkdir of an existing name: EEXIST, and the parked one stays parked. */
    CHECK(mkdir(at("d-scantemp.4"), 0700) == 0); /* takes parked.0 */
    CHECK(mkdir(at("e-scantemp.5"), 0700) == 0); /* made for real */
    CHECK(rmdir(at("e-scantemp.5")) == 0 && scand_dirs_parked() == 1);
    errno = 0;
    CHECK(mkdir(at("d-scantemp.4"), 0700) == -1 && errno == EEXIST);
    CHECK(scand_dirs_parked() == 1);
    CHECK(rmdir(at("d-scantemp.4")) == 0 && scand_dirs_parked() == 2);

    /* rmdir of what is not there, or not a directory: the real errors. */
    errno = 0;
    CHECK(rmdir(at("f-scantemp.6")) == -1 && errno == ENOENT);
    touch(at("g-scantemp.7"));
    errno = 0;
    CHECK(rmdir(at("g-scantemp.7")) == -1 && errno == ENOTDIR);
    CHECK(symlink(".", at("h-scantemp.8")) == 0);
    errno = 0;
    CHECK(rmdir(at("h-scantemp.8")) == -1 && errno == ENOTDIR);
    CHECK(unlink(at("g-scantemp.7")) == 0 && unlink(at("h-scantemp.8")) == 0);
    CHECK(scand_dirs_parked() == 2);

    /* The parking names themselves, paths elsewhere, and base itself are
     * left to the real calls. */
    errno = 0;
    CHECK(rmdir(at("parked.0")) == 0 && scand_dirs_parked() == 2); /* out of scope */
    errno = 0;
    CHECK(mkdir(at("x-scantemp.9"), 0700) == 0); /* parked.0 is gone: slot given up */
    CHECK(rmdir(at("x-scantemp.9")) == 0);
    char other[96];
    snprintf(other, sizeof other, "%s-other", base);
    CHECK(mkdir(other, 0700) == 0 && rmdir(other) == 0);
    CHECK(ino(other) == 0);

    /* The temp dir moved away: mkdir fails as it would, and no parked
     * directory is handed out from the wrong place. */
    char moved[96];
    snprintf(moved, sizeof moved, "%s-moved", base);
    CHECK(rename(base, moved) == 0);
    errno = 0;
    CHECK(mkdir(at("y-scantemp.10"), 0700) == -1 && errno == ENOENT);
    CHECK(rename(moved, base) == 0);
    CHECK(mkdir(at("y-scantemp.10"), 0700) == 0 && rmdir(at("y-scantemp.10")) == 0);

    /* Emptied but grown big (an archive's many members): removed, not
     * parked, since a directory never shrinks. */
    int before = scand_dirs_parked();
    CHECK(mkdir(at("z-scantemp.11"), 0700) == 0);
    char member[PATH_MAX];
    for (int i = 0; i < 600; i++) {
        snprintf(member, sizeof member, "%s/member-with-a-long-name-%04d", at("z-scantemp.11"), i);
        touch(member);
    }
    struct stat big;
    CHECK(stat(at("z-scantemp.11"), &big) == 0 && big.st_size > 16 * 1024);
    for (int i = 0; i < 600; i++) {
        snprintf(member, sizeof member, "%s/member-with-a-long-name-%04d", at("z-scantemp.11"), i);
        CHECK(unlink(member) == 0);
    }
    CHECK(rmdir(at("z-scantemp.11")) == 0 && ino(at("z-scantemp.11")) == 0);
    CHECK_MSG(scand_dirs_parked() == (before ? before - 1 : 0), "%d parked, %d before",
              scand_dirs_parked(), before); /* its mkdir took one; none came back */

    /* At most PARK_MAX (64) are parked; the rest are removed for real. */
    for (int i = 0; i < 70; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%d-scantemp", i);
        CHECK(mkdirat(AT_FDCWD, at(name), 0700) == 0);
    }
    for (int i = 0; i < 70; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%d-scantemp", i);
        CHECK(rmdir(at(name)) == 0 && ino(at(name)) == 0);
    }
    CHECK(scand_dirs_parked() == 64);

    /* Threads at once: every mkdir and rmdir succeeds, nothing leaks. */
    pthread_t th[8];
    for (long t = 0; t < 8; t++)
        CHECK(pthread_create(&th[t], NULL, churn, (void *)t) == 0);
    for (int t = 0; t < 8; t++) {
        void *rc;
        CHECK(pthread_join(th[t], &rc) == 0 && rc == NULL);
    }
    CHECK(scand_dirs_parked() == 64);
    int entries = 0;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", base);
    FILE *ls = popen(cmd, "r");
    CHECK(ls && fscanf(ls, "%d", &entries) == 1);
    if (ls) pclose(ls);
    CHECK_MSG(entries == 64, "%d entries", entries);

    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    CHECK(system(cmd) == 0);
    return test_report("test_scand_dirs");
}
