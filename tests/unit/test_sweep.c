/* Unit tests for sweep: expired uploads go, fresh and held ones stay, a
 * pass goes on from call to call, never looking at more entries per call
 * than asked, and name reservations that outlived their uploads go. */
#define _GNU_SOURCE
#include "log.h"
#include "record.h"
#include "store.h"
#include "sweep.h"
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static void make_upload(int dfd, int i, bool part, bool old)
{
    struct record r = {0};
    snprintf(r.id, sizeof r.id, "%032x", i);
    r.filename[0] = 'f';
    r.filename_len = 1;
    r.size = 10;
    CHECK(record_save(dfd, &r, 0, false) == 0);
    char name[64];
    struct timespec t[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_NOW}};
    if (old) t[0] = t[1] = (struct timespec){.tv_sec = time(NULL) - 7200};
    snprintf(name, sizeof name, "%s.state", r.id);
    CHECK(utimensat(dfd, name, t, 0) == 0);
    if (part) {
        snprintf(name, sizeof name, "%s.part", r.id);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT, 0640);
        CHECK(fd >= 0 && write(fd, "12345", 5) == 5);
        close(fd);
        CHECK(utimensat(dfd, name, t, 0) == 0);
    }
}

static bool exists(int dfd, int i, const char *kind)
{
    char name[64];
    snprintf(name, sizeof name, "%032x%s", i, kind);
    return faccessat(dfd, name, F_OK, 0) == 0;
}

int main(void)
{
    log_open("stderr", LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/intake-test-sweep-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    /* 40 expired (half with a .part), 10 fresh, 1 expired but held by a
     * worker's lock, and 30 files that are not uploads'. */
    for (int i = 0; i < 40; i++)
        make_upload(dfd, i, i % 2 == 0, true);
    for (int i = 40; i < 50; i++)
        make_upload(dfd, i, true, false);
    make_upload(dfd, 50, true, true);
    char name[64];
    snprintf(name, sizeof name, "%032x.part", 50);
    int held = openat(dfd, name, O_WRONLY);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    CHECK(held >= 0 && fcntl(held, F_OFD_SETLK, &fl) == 0);
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof name, "other-%d", i);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT, 0640);
        close(fd);
    }
    /* 4 entries a call: the pass takes many calls, and removes every
     * expired upload once. */
    struct sweep s = {0};
    int removed = 0, calls = 0;
    do {
        int rc = sweep_step(&s, dir, 3600 * 1000, 4);
        CHECK(rc >= 0 && rc <= 4);
        removed += rc;
        calls++;
    } while (s.d && calls < 1000);
    /* 40 + 20 + 10 + 10 + 2 + 30 entries, plus "." and "..". */
    CHECK_MSG(calls >= 112 / 4 && calls <= 114 / 4 + 1, "%d calls", calls);
    CHECK_MSG(removed == 40, "%d removed", removed);
    int gone = 0, kept = 0;
    for (int i = 0; i < 40; i++)
        gone += !exists(dfd, i, ".state") && !exists(dfd, i, ".part");
    for (int i = 40; i < 50; i++)
        kept += exists(dfd, i, ".state") && exists(dfd, i, ".part");
    CHECK(gone == 40 && kept == 10);
    CHECK(exists(dfd, 50, ".state") && exists(dfd, 50, ".part")); /* held */
    /* Released, it goes with the next whole pass. */
    close(held);
    CHECK(sweep_spool(dir, 3600 * 1000) == 1 && !exists(dfd, 50, ".state"));
    /* Name reservations: one whose upload left nothing in the spool goes
     * once it is older than the limit; one whose upload is still there, one
     * not yet old enough, and a dot-name of an upload still there stay; an
     * unreadable one (not an id) that is old goes too. */
    CHECK(mkdirat(dfd, STORE_NAMES_DIR, 0750) == 0);
    int nfd = openat(dfd, STORE_NAMES_DIR, O_RDONLY | O_DIRECTORY);
    struct {
        const char *name;
        int id; /* -1: not an id */
        bool old, stays;
    } res[] = {
        {"gone.txt", 7, true, false},     {"here.txt", 45, true, true},
        {"young.txt", 8, false, true},    {".hidden", 46, true, true},
        {"garbage.txt", -1, true, false}, {"gone-1.txt", 9, true, false},
    };
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        int fd = openat(nfd, res[i].name, O_WRONLY | O_CREAT | O_EXCL, 0640);
        char id[40];
        snprintf(id, sizeof id, res[i].id < 0 ? "not an upload id\n" : "%032x", res[i].id);
        CHECK(fd >= 0 && write(fd, id, strlen(id)) == (ssize_t)strlen(id));
        close(fd);
        struct timespec t[2] = {{.tv_sec = time(NULL) - (res[i].old ? 7200 : 0)}, {.tv_nsec = 0}};
        t[1] = t[0];
        CHECK(utimensat(nfd, res[i].name, t, 0) == 0);
    }
    CHECK(sweep_spool(dir, 3600 * 1000) == 0);
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++)
        CHECK_MSG((faccessat(nfd, res[i].name, F_OK, 0) == 0) == res[i].stays, "%s: %s",
                  res[i].name, res[i].stays ? "removed" : "kept");
    close(nfd);
    /* Another directory (a reload moved the spool): the pass starts over there. */
    CHECK(sweep_step(&s, dir, 3600 * 1000, 2) == 0 && s.d != NULL);
    CHECK(sweep_step(&s, "/nonexistent-intake-spool", 3600 * 1000, 2) < 0 && s.d == NULL);
    sweep_close(&s);
    close(dfd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_report("test_sweep");
}
