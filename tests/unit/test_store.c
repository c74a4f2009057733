/* Unit tests for store: the stored_as rules with hostile names, UTF-8
 * validation, ids, never-overwriting placement in a temporary tree, and
 * the group commit of directory fsyncs. */
#define _GNU_SOURCE
#include "store.h"
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Linked with -Wl,--wrap=fsync: store.c's fsyncs of watch_fd are counted,
 * take 20 ms (so callers pile up behind one), and fail while fail_fsync. */
static int watch_fd = -1, fail_fsync;
static int fsyncs;
int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
    if (fd == watch_fd) {
        __atomic_add_fetch(&fsyncs, 1, __ATOMIC_SEQ_CST);
        usleep(20000);
        if (fail_fsync) {
            errno = EIO;
            return -1;
        }
    }
    return __real_fsync(fd);
}

struct name_case {
    const char *in;
    size_t len;       /* 0: strlen */
    const char *want; /* NULL: refused */
};

static void test_sanitize(void)
{
    static char n255[300], n256[300], n256path[400];
    memset(n255, 'x', 255);
    memset(n256, 'y', 256);
    snprintf(n256path, sizeof n256path, "dir/%s", n255); /* last component fits */
    const struct name_case cases[] = {
        {"a.txt", 0, "a.txt"},
        {"../../etc/passwd", 0, "passwd"},
        {"/abs/path/f.bin", 0, "f.bin"},
        {"..\\..\\windows\\system32\\evil.dll", 0, "evil.dll"},
        {"mixed/dirs\\name", 0, "name"},
        {".bashrc", 0, "_bashrc"},
        {"..hidden", 0, "_.hidden"},
        {"dir/.env", 0, "_env"},
        {"a\tb\nc\rd\x01"
         "e\x7f"
         "f",
         0, "abcdef"},
        {"caf\xc3\xa9.txt", 0, "caf\xc3\xa9.txt"},
        {"\xe2\x82\xac euro", 0, "\xe2\x82\xac euro"},
        {"c1\xc2\x85"
         "ctl",
         0, "c1ctl"},                  /* U+0085 NEL removed */
        {"nul\0after", 9, "nulafter"}, /* NUL is a control character */
        {"", 0, NULL},
        {".", 0, NULL},
        {"..", 0, NULL},
        {"a/..", 0, NULL},
        {"a/", 0, NULL},
        {"\\", 0, NULL},
        {"\x01\x02", 0, NULL},
        {"bad\xff", 0, NULL},
        {"overlong\xc0\xaf", 0, NULL},
        {"surrogate\xed\xa0\x80", 0, NULL},
        {"truncated\xe2\x82", 0, NULL},
        {"toobig\xf4\x90\x80\x80", 0, NULL},
        {n255, 0, n255},
        {n256, 0, NULL},
        {n256path, 0, n255},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct name_case *c = &cases[i];
        char out[STORE_NAME_MAX + 1] = "";
        const char *why = NULL;
        size_t len = c->len ? c->len : strlen(c->in);
        int rc = store_sanitize_name(c->in, len, out, &why);
        if (c->want) {
            CHECK_MSG(rc == 0, "case %zu: refused: %s", i, why ? why : "?");
            if (rc == 0) CHECK_STR(out, c->want);
        } else {
            CHECK_MSG(rc == -EINVAL && why && *why, "case %zu (%.20s) accepted as %s", i, c->in,
                      out);
        }
    }
}

static void test_ids(void)
{
    char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1];
    store_new_id(a);
    store_new_id(b);
    CHECK(strlen(a) == 32);
    CHECK(store_id_valid(a));
    CHECK(strcmp(a, b) != 0);
    CHECK(!store_id_valid("0123456789abcdef0123456789ABCDEF"));
    CHECK(!store_id_valid("0123456789abcdef0123456789abcde"));
    CHECK(!store_id_valid("0123456789abcdef0123456789abcdef0"));
    CHECK(!store_id_valid("../../../../../../../../etc/pass"));
}

static int write_part(struct store *s, const char *id, const char *data)
{
    int fd = store_create_part(s, id);
    if (fd < 0) return fd;
    ssize_t n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

/* A store in a new temporary tree under root (a mkdtemp template):
 * root/spool, root/<accept>, root/q. */
static void open_store_tree(struct store *s, char *root, const char *accept)
{
    CHECK(mkdtemp(root) != NULL);
    char sp[128], ac[128], q[128];
    snprintf(sp, sizeof sp, "%s/spool", root);
    snprintf(ac, sizeof ac, "%s/%s", root, accept);
    snprintf(q, sizeof q, "%s/q", root);
    const char *which = "";
    CHECK(store_open(s, sp, ac, q, &which) == 0);
    s->min_free_space = 0;
}

static void test_place(void)
{
    char root[] = "/tmp/intake-test-store-XXXXXX";
    struct store s;
    open_store_tree(&s, root, "deep/accepted");
    const char *names[] = {"a.txt", "a.txt", "a.txt", "noext", "noext", "_rc", "_rc"};
    const char *want[] = {"a.txt", "a-1.txt", "a-2.txt", "noext", "noext-1", "_rc", "_rc-1"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char id[STORE_ID_LEN + 1], stored[STORE_NAME_MAX + 1] = "";
        store_new_id(id);
        CHECK(write_part(&s, id, names[i]) == 0);
        CHECK(store_create_part(&s, id) == -EEXIST); /* O_EXCL */
        CHECK(store_place(&s, id, s.accept_fd, "", names[i], stored) == 0);
        CHECK_STR(stored, want[i]);
        char part[64];
        snprintf(part, sizeof part, "%s.part", id);
        CHECK(faccessat(s.spool_fd, part, F_OK, 0) < 0); /* moved, not copied */
    }
    /* The first file was not overwritten by the later ones. */
    char buf[16] = "";
    int fd = openat(s.accept_fd, "a.txt", O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 5);
    close(fd);
    CHECK_STR(buf, "a.txt");
    /* A symlink planted under the target name is never followed or replaced. */
    CHECK(symlinkat("/etc/passwd", s.accept_fd, "link.txt") == 0);
    char id[STORE_ID_LEN + 1], stored[STORE_NAME_MAX + 1];
    store_new_id(id);
    write_part(&s, id, "data");
    CHECK(store_place(&s, id, s.accept_fd, "", "link.txt", stored) == 0);
    CHECK_STR(stored, "link-1.txt");
    /* Quarantine names carry the id prefix and stay within NAME_MAX. */
    static char longname[STORE_NAME_MAX + 1];
    memset(longname, 'L', 250);
    strcpy(longname + 250, ".exe");
    store_new_id(id);
    write_part(&s, id, "x");
    char prefix[STORE_ID_LEN + 2];
    snprintf(prefix, sizeof prefix, "%s-", id);
    CHECK(store_place(&s, id, s.quarantine_fd, prefix, longname, stored) == 0);
    CHECK(strlen(stored) + strlen(prefix) <= STORE_NAME_MAX);
    CHECK(strcmp(stored + strlen(stored) - 4, ".exe") == 0);
    /* An extension too long to keep beside the prefix or "-N": the whole
     * name is cut from its end (both refused before: verdict error). */
    memset(longname, 0, sizeof longname);
    longname[0] = 'a';
    longname[1] = '.';
    memset(longname + 2, 'b', 253);
    for (int i = 0; i < 2; i++) {
        store_new_id(id);
        write_part(&s, id, "y");
        CHECK(store_place(&s, id, s.accept_fd, "", longname, stored) == 0);
        if (i == 0) CHECK_STR(stored, longname);
    }
    CHECK(strlen(stored) == STORE_NAME_MAX && strcmp(stored + 253, "-1") == 0);
    CHECK(strncmp(stored, longname, 253) == 0);
    store_new_id(id);
    write_part(&s, id, "z");
    snprintf(prefix, sizeof prefix, "%s-", id);
    CHECK(store_place(&s, id, s.quarantine_fd, prefix, longname, stored) == 0);
    CHECK(strlen(stored) + strlen(prefix) == STORE_NAME_MAX);
    CHECK(strncmp(stored, longname, strlen(stored)) == 0);
    /* Space check: an impossible reserve is refused. */
    s.min_free_space = UINT64_MAX / 2;
    CHECK(store_check_space(&s, 1) == -ENOSPC);
    s.min_free_space = 0;
    CHECK(store_check_space(&s, 1) == 0);
    store_close(&s);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

/* accept_dir on another filesystem (issue 10, item 6): a synced copy is
 * linked from an unnamed O_TMPFILE, under the same never-overwrite rules. */
static void test_place_across(void)
{
    struct stat a, b;
    if (stat("/tmp", &a) < 0 || stat("/dev/shm", &b) < 0 || a.st_dev == b.st_dev) {
        printf("test_store: /tmp and /dev/shm share a filesystem; cross-filesystem case skipped\n");
        return;
    }
    char root[] = "/tmp/intake-test-store-XXXXXX", other[] = "/dev/shm/intake-test-store-XXXXXX";
    CHECK(mkdtemp(root) != NULL && mkdtemp(other) != NULL);
    char sp[128], ac[128], q[128];
    snprintf(sp, sizeof sp, "%s/spool", root);
    snprintf(ac, sizeof ac, "%s/accepted", other);
    snprintf(q, sizeof q, "%s/q", other);
    struct store s;
    const char *which = "";
    CHECK(store_open(&s, sp, ac, q, &which) == 0);
    s.min_free_space = 0;
    static char big[3 << 20];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 23);
    const char *want[] = {"x.bin", "x-1.bin"};
    for (int i = 0; i < 2; i++) {
        char id[STORE_ID_LEN + 1], stored[STORE_NAME_MAX + 1], part[64];
        store_new_id(id);
        CHECK(write_part(&s, id, i ? "small" : big) == 0);
        bool linked = false;
        CHECK(store_link_part(&s, id, s.accept_fd, "", "x.bin", stored, &linked) == 0 && linked);
        CHECK_STR(stored, want[i]);
        CHECK(store_discard_part(&s, id) == 0);
        snprintf(part, sizeof part, "%s.part", id);
        CHECK(faccessat(s.spool_fd, part, F_OK, 0) < 0);
    }
    struct stat st;
    CHECK(fstatat(s.accept_fd, "x.bin", &st, 0) == 0 && st.st_size == (off_t)strlen(big));
    int fd = openat(s.accept_fd, "x.bin", O_RDONLY);
    static char back[3 << 20];
    CHECK(fd >= 0 && read(fd, back, sizeof back) == (ssize_t)strlen(big));
    CHECK(memcmp(back, big, strlen(big)) == 0);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", ac);
    FILE *p = popen(cmd, "r");
    int n = -1;
    CHECK(p && fscanf(p, "%d", &n) == 1 && n == 2); /* nothing else, ever */
    if (p) pclose(p);

    /* A crash between placing a copy and recording it: the retry finds its
     * own copy under its name (the copy carries the upload's id) and makes
     * no second one; another upload's copy under a name is not its own. */
    {
        char id[STORE_ID_LEN + 1], other_id[STORE_ID_LEN + 1], stored[STORE_NAME_MAX + 1];
        store_new_id(id);
        store_new_id(other_id);
        CHECK(write_part(&s, id, "placed, then the machine went down") == 0);
        bool linked = false;
        CHECK(store_link_part(&s, id, s.accept_fd, "", "x.bin", stored, &linked) == 0 && linked);
        CHECK_STR(stored, "x-2.bin");
        linked = false;
        CHECK(store_link_part(&s, id, s.accept_fd, "", "x.bin", stored, &linked) == 0 && linked);
        CHECK_STR(stored, "x-2.bin"); /* before: x-3.bin, a second copy */
        CHECK(faccessat(s.accept_fd, "x-3.bin", F_OK, AT_SYMLINK_NOFOLLOW) < 0);
        /* Under a name chosen before (a hook's stored_as), likewise. */
        CHECK(store_link_part_as(&s, id, s.accept_fd, "y.bin", &linked) == 0 && linked);
        linked = false;
        CHECK(store_link_part_as(&s, id, s.accept_fd, "y.bin", &linked) == 0 && linked);
        CHECK(write_part(&s, other_id, "another upload") == 0);
        CHECK(store_link_part_as(&s, other_id, s.accept_fd, "y.bin", &linked) == -EEXIST);
        CHECK(store_link_part(&s, other_id, s.accept_fd, "", "x.bin", stored, &linked) == 0);
        CHECK_STR(stored, "x-3.bin");
        CHECK(store_discard_part(&s, id) == 0 && store_discard_part(&s, other_id) == 0);
    }
    store_close(&s);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", root, other);
    CHECK(system(cmd) == 0);
}

/* accept_dir on a bind mount of the spool's own filesystem: links across
 * mounts are refused too (EXDEV), so the file is a copy, and a retry after
 * a crash must know its copy there though st_dev is the same. Needs root
 * (mount); skipped otherwise. */
static void test_place_across_bind(void)
{
    char root[] = "/tmp/intake-test-store-bind-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char sp[128], real[128], bind[128], q[128], ac[160];
    snprintf(sp, sizeof sp, "%s/spool", root);
    snprintf(real, sizeof real, "%s/real", root);
    snprintf(bind, sizeof bind, "%s/bind", root);
    snprintf(q, sizeof q, "%s/q", root);
    snprintf(ac, sizeof ac, "%s/accepted", bind);
    CHECK(mkdir(real, 0700) == 0 && mkdir(bind, 0700) == 0);
    if (mount(real, bind, NULL, MS_BIND, NULL) < 0) {
        printf("test_store: cannot bind-mount (%s); bind-mount case skipped\n", strerror(errno));
    } else {
        struct store s;
        const char *which = "";
        CHECK(store_open(&s, sp, ac, q, &which) == 0);
        s.min_free_space = 0;
        char id[STORE_ID_LEN + 1], stored[STORE_NAME_MAX + 1];
        store_new_id(id);
        CHECK(write_part(&s, id, "across a bind mount") == 0);
        bool linked = false;
        CHECK(store_link_part(&s, id, s.accept_fd, "", "b.bin", stored, &linked) == 0 && linked);
        CHECK_STR(stored, "b.bin");
        CHECK(store_link_part(&s, id, s.accept_fd, "", "b.bin", stored, &linked) == 0 && linked);
        CHECK_STR(stored, "b.bin"); /* before: b-1.bin, a second copy */
        CHECK(faccessat(s.accept_fd, "b-1.bin", F_OK, AT_SYMLINK_NOFOLLOW) < 0);
        CHECK(store_discard_part(&s, id) == 0);
        store_close(&s);
        CHECK(umount2(bind, MNT_DETACH) == 0);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

enum { SYNCERS = 8 };
static struct store sync_store;
static pthread_barrier_t start_line;
static int sync_rc[SYNCERS];

static void *syncer(void *arg)
{
    int i = (int)(long)arg;
    char name[32];
    snprintf(name, sizeof name, "f%d", i);
    int fd = openat(sync_store.accept_fd, name, O_WRONLY | O_CREAT | O_EXCL, 0640);
    if (fd >= 0) close(fd);
    pthread_barrier_wait(&start_line);
    sync_rc[i] = store_sync_dir(&sync_store, sync_store.accept_fd);
    return NULL;
}

static void *sync_once(void *arg)
{
    (void)arg;
    store_sync_dir(&sync_store, watch_fd);
    return NULL;
}

static void test_sync_dir(void)
{
    char root[] = "/tmp/intake-test-sync-XXXXXX";
    open_store_tree(&sync_store, root, "accepted");
    watch_fd = sync_store.accept_fd;
    /* Alone: one fsync. */
    CHECK(store_sync_dir(&sync_store, watch_fd) == 0 && fsyncs == 1);
    /* Eight at once: the first runs one, the others wait and share the
     * next (two, or three if one arrives late), never eight. */
    fsyncs = 0;
    pthread_t t[SYNCERS];
    CHECK(pthread_barrier_init(&start_line, NULL, SYNCERS) == 0);
    for (long i = 0; i < SYNCERS; i++)
        CHECK(pthread_create(&t[i], NULL, syncer, (void *)i) == 0);
    for (int i = 0; i < SYNCERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start_line);
    int ok = 0;
    for (int i = 0; i < SYNCERS; i++)
        ok += sync_rc[i] == 0;
    CHECK_MSG(ok == SYNCERS, "%d of %d callers synced", ok, SYNCERS);
    CHECK_MSG(fsyncs >= 1 && fsyncs <= 4, "%d fsyncs for %d callers", fsyncs, SYNCERS);
    /* A failed fsync is the error of every caller it was to cover; the
     * next one that works covers the next callers. */
    fail_fsync = 1;
    CHECK(store_sync_dir(&sync_store, watch_fd) == -EIO);
    fail_fsync = 0;
    CHECK(store_sync_dir(&sync_store, watch_fd) == 0);
    /* A mark taken after a change: a sync begun after it (anyone's) covers
     * it, so none is run; with none since, one is. */
    fsyncs = 0;
    uint64_t m = store_dir_mark(&sync_store, watch_fd);
    CHECK(store_sync_dir(&sync_store, watch_fd) == 0 && fsyncs == 1);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m) == 0 && fsyncs == 1);
    m = store_dir_mark(&sync_store, watch_fd);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m) == 0 && fsyncs == 2);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m) == 0 && fsyncs == 2);
    /* Covered by a failed sync: an error for good. A failed fsync may have
     * dropped what it could not write, so a later success vouches for
     * nothing before it; changes after the failure are covered again. */
    m = store_dir_mark(&sync_store, watch_fd);
    fail_fsync = 1;
    CHECK(store_sync_dir(&sync_store, watch_fd) == -EIO && fsyncs == 3);
    fail_fsync = 0;
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m) == -EIO && fsyncs == 3);
    CHECK(store_sync_dir(&sync_store, watch_fd) == 0 && fsyncs == 4);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m) == -EIO && fsyncs == 4);
    uint64_t m2 = store_dir_mark(&sync_store, watch_fd);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m2) == 0 && fsyncs == 5);
    /* A sync already running when the mark is taken does not count (it
     * may have begun before the change): the mark waits for the next. */
    pthread_t runner;
    fsyncs = 0;
    CHECK(pthread_create(&runner, NULL, sync_once, NULL) == 0);
    while (__atomic_load_n(&fsyncs, __ATOMIC_SEQ_CST) == 0)
        usleep(1000); /* the runner is inside its (20 ms) fsync */
    uint64_t m3 = store_dir_mark(&sync_store, watch_fd);
    CHECK(store_sync_dir_since(&sync_store, watch_fd, m3) == 0 && fsyncs == 2);
    pthread_join(runner, NULL);
    /* No mark (0): a sync of its own. */
    CHECK(store_sync_dir_since(&sync_store, watch_fd, 0) == 0 && fsyncs == 3);
    /* Not one of the store's directories: synced alone, result passed on. */
    CHECK(store_sync_dir(&sync_store, -1) == -EBADF);
    watch_fd = -1;
    store_close(&sync_store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    test_sync_dir();
    test_sanitize();
    test_ids();
    test_place();
    test_place_across();
    test_place_across_bind();
    return test_report("test_store");
}
