/* Unit tests for record: round trips, truncation at every byte, hostile
 * contents, the two slots (torn, stale, mixed, resealed, legacy files),
 * and the file round trip in a temporary directory. */
#define _GNU_SOURCE
#include "record.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void sample(struct record *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->id, "0123456789abcdef0123456789abcdef", 33);
    static const char name[] = "a\nb\0c.txt"; /* newline and NUL survive */
    memcpy(r->filename, name, sizeof name - 1);
    r->filename_len = sizeof name - 1;
    r->size = 1000;
    r->has_want = true;
    memset(r->want, 0xab, 32);
    r->created = 1764000000;
    r->token_expiry = 1764003600;
    memcpy(r->boot, "2f1c4e0a-1111-4222-8333-944455556666", 37);
    r->durable = 512;
    r->steps = RECORD_RECEIVED;
}

static bool same(const struct record *a, const struct record *b)
{
    return strcmp(a->id, b->id) == 0 && a->filename_len == b->filename_len &&
           memcmp(a->filename, b->filename, a->filename_len) == 0 && a->size == b->size &&
           a->has_want == b->has_want && (!a->has_want || memcmp(a->want, b->want, 32) == 0) &&
           a->created == b->created && a->token_expiry == b->token_expiry &&
           strcmp(a->boot, b->boot) == 0 && a->durable == b->durable && a->steps == b->steps &&
           (!(a->steps & RECORD_HASHED) || memcmp(a->digest, b->digest, 32) == 0) &&
           a->verdict == b->verdict && strcmp(a->virus, b->virus) == 0 &&
           strcmp(a->reason, b->reason) == 0 && strcmp(a->stored, b->stored) == 0 &&
           strcmp(a->name, b->name) == 0;
}

static void round_trips(void)
{
    struct record r, back;
    char buf[RECORD_MAX];
    sample(&r);
    struct record variants[9];
    variants[0] = r; /* receiving */
    variants[1] = r;
    variants[1].has_want = false;
    variants[1].boot[0] = '\0';
    variants[1].token_expiry = 0;
    variants[2] = r; /* hashed and synced, scan failed */
    variants[2].steps = RECORD_RECEIVED | RECORD_HASHED | RECORD_SYNCED;
    variants[2].durable = r.size;
    memset(variants[2].digest, 0x5a, 32);
    snprintf(variants[2].reason, sizeof variants[2].reason, "scanner unreachable");
    variants[3] = variants[2]; /* accepted */
    variants[3].reason[0] = '\0';
    variants[3].steps |= RECORD_SCANNED | RECORD_PLACED;
    variants[3].verdict = RV_CLEAN;
    snprintf(variants[3].stored, sizeof variants[3].stored, "a-1.txt");
    variants[4] = variants[3]; /* quarantined */
    variants[4].verdict = RV_INFECTED;
    snprintf(variants[4].virus, sizeof variants[4].virus, "Eicar-Test-Signature.UNOFFICIAL");
    variants[5] = variants[2]; /* scanned unscanned, placement failed */
    variants[5].steps |= RECORD_SCANNED;
    variants[5].verdict = RV_UNSCANNED;
    snprintf(variants[5].reason, sizeof variants[5].reason, "cannot store the file");
    variants[6] = variants[2]; /* named before its hook, and the hook failed */
    variants[6].steps |= RECORD_SCANNED;
    variants[6].verdict = RV_CLEAN;
    snprintf(variants[6].name, sizeof variants[6].name, "a-2.txt");
    snprintf(variants[6].reason, sizeof variants[6].reason, "accept hook failed");
    variants[7] = variants[6]; /* hooked, the publish failed */
    variants[7].steps |= RECORD_HOOKED;
    snprintf(variants[7].reason, sizeof variants[7].reason, "publish failed");
    variants[8] = variants[7]; /* hooked, published, placed under its name */
    variants[8].steps |= RECORD_PUBLISHED | RECORD_PLACED;
    variants[8].reason[0] = '\0';
    snprintf(variants[8].stored, sizeof variants[8].stored, "a-2.txt");
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        int n = record_format(&variants[i], buf, sizeof buf);
        CHECK_MSG(n > 0, "variant %zu formats", i);
        if (n <= 0) continue;
        CHECK_MSG(record_parse(buf, (size_t)n, &back) == 0, "variant %zu parses", i);
        CHECK_MSG(same(&variants[i], &back), "variant %zu round trips", i);
        /* Truncated anywhere, it never parses. */
        int bad = 0;
        for (int cut = 0; cut < n; cut++)
            if (record_parse(buf, (size_t)cut, &back) == 0) bad++;
        CHECK_MSG(bad == 0, "variant %zu: %d truncations parsed", i, bad);
    }
    /* The longest filename fits a record; a small buffer is refused. */
    sample(&r);
    memset(r.filename, 0xff, RECORD_FILENAME_MAX);
    r.filename_len = RECORD_FILENAME_MAX;
    int n = record_format(&r, buf, sizeof buf);
    CHECK(n > 0 && n <= RECORD_MAX);
    CHECK(record_parse(buf, (size_t)n, &back) == 0 && back.filename_len == RECORD_FILENAME_MAX);
    CHECK(record_format(&r, buf, 100) == -1);
}

static const char good_head[] = "intake-record 1\n"
                                "id 0123456789abcdef0123456789abcdef\n"
                                "filename 612e747874\n"
                                "size 10\n"
                                "created 5\n"
                                "token_expiry 0\n"
                                "boot -\n";

static void hostile(void)
{
    struct record r;
    char buf[RECORD_MAX + 64];
    static const struct {
        const char *tail; /* after good_head */
        int ok;
    } cases[] = {
        {"durable 0\nsteps\nend\n", 0},
        {"durable 10\nsteps received\nend\n", 0},
        {"durable 0\nsteps\nend\nx", -1}, /* bytes after end */
        {"durable 0\nsteps\nend", -1},    /* no final newline */
        {"durable 0\nsteps\nend \n", -1}, /* end with a value */
        {"durable 0\nsteps\n", -1},       /* no end */
        {"durable 11\nsteps\nend\n", -1}, /* durable past size */
        {"durable 01\nsteps\nend\n", -1}, /* leading zero */
        {"durable -1\nsteps\nend\n", -1}, /* sign */
        {"durable 99999999999999999999\nsteps\nend\n", -1},
        {"durable 0\ndurable 0\nsteps\nend\n", -1},      /* duplicate */
        {"durable 0\nsteps\nbogus 1\nend\n", -1},        /* unknown key */
        {"durable 0\nsteps hashed received\nend\n", -1}, /* out of order */
        {"durable 0\nsteps received received\nend\n", -1},
        {"durable 0\nsteps  received\nend\n", -1}, /* double space */
        {"durable 0\nsteps received\ndigest 00\nend\n", -1},
        {"durable 0\nsteps received hashed\nend\n", -1}, /* hashed without digest */
        {"durable 0\nsteps hashed\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nend\n",
         -1}, /* hashed without received */
        {"durable 0\nsteps received hashed synced\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nend\n",
         -1},                                                    /* synced but durable < size */
        {"durable 0\nsteps received\nverdict clean\nend\n", -1}, /* verdict without scan */
        {"durable 0\nsteps received\nverdict error\nend\n", -1},
        {"durable 10\nsteps received hashed synced scanned\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict error\n"
         "end\n",
         -1}, /* a scan error let through needs its reason */
        {"durable 10\nsteps received hashed synced scanned placed\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict error\n"
         "reason 78\nend\n",
         0},
        {"durable 0\nsteps\nvirus 41\nend\n", -1},
        {"durable 0\nsteps\nstored 2f\nend\n", 0},  /* "/" is allowed by the format */
        {"durable 0\nsteps\nstored 00\nend\n", -1}, /* NUL */
        {"durable 0\nsteps\nstored \nend\n", -1},   /* empty */
        {"durable 0\nsteps\nreason 4\nend\n", -1},  /* odd hex */
        {"durable 0\nsteps\nreason 4G\nend\n", -1},
        {"durable 0\nsteps\nreason 4A\nend\n", -1}, /* uppercase hex */
        {"durable 0\nsteps\nsha256 ab\nend\n", -1},
        /* Delivery steps: hooked, published, the name chosen before them. */
        {"durable 10\nsteps received hashed synced scanned hooked published placed\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict clean\nstored "
         "61\nname 61\nend\n",
         0},
        {"durable 10\nsteps received hashed synced scanned hooked\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict "
         "unscanned\nreason 78\nname 61\nend\n",
         0},
        {"durable 10\nsteps received hashed synced hooked\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nend\n",
         -1}, /* hooked without a verdict */
        {"durable 10\nsteps received hashed synced published\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nend\n",
         -1}, /* published without a verdict */
        {"durable 10\nsteps received hashed synced scanned published hooked\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict clean\nend\n",
         -1}, /* out of order */
        {"durable 10\nsteps received hashed synced scanned hooked\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict "
         "infected\nvirus 41\nend\n",
         -1}, /* an infected file is never hooked */
        {"durable 10\nsteps received hashed synced scanned\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict "
         "infected\nvirus 41\nname 61\nend\n",
         -1}, /* nor named early */
        {"durable 10\nsteps received hashed synced scanned placed\ndigest "
         "0000000000000000000000000000000000000000000000000000000000000000\nverdict clean\nstored "
         "61\nname 62\nend\n",
         -1}, /* placed under another name */
        {"durable 0\nsteps\nname \nend\n", -1},
        {"durable 0\nsteps\nname 00\nend\n", -1},
        {"durable 0\nsteps\nname 61\nname 61\nend\n", -1},
        {"durable 0\nsteps\nend\n\n", -1},
        {"durable\nsteps\nend\n", -1},
        {"durable 0\nsteps\0\nend\n", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hl = strlen(good_head), tl = strlen(cases[i].tail);
        if (i == sizeof cases / sizeof cases[0] - 1) tl = 21; /* keeps its NUL */
        memcpy(buf, good_head, hl);
        memcpy(buf + hl, cases[i].tail, tl);
        int rc = record_parse(buf, hl + tl, &r);
        CHECK_MSG(rc == cases[i].ok, "case %zu (%s): %d", i, cases[i].tail, rc);
    }
    /* Head defects. */
    CHECK(record_parse("intake-record 2\n", 16, &r) == -1);
    CHECK(record_parse("", 0, &r) == -1);
    const char *no_id = "intake-record 1\nfilename 61\nsize 1\ncreated 1\ntoken_expiry 0\n"
                        "boot -\ndurable 0\nsteps\nend\n";
    CHECK(record_parse(no_id, strlen(no_id), &r) == -1);
    const char *bad_id = "intake-record 1\nid 0123456789ABCDEF0123456789abcdef\nfilename 61\n"
                         "size 1\ncreated 1\ntoken_expiry 0\nboot -\ndurable 0\nsteps\nend\n";
    CHECK(record_parse(bad_id, strlen(bad_id), &r) == -1);
    /* Over RECORD_MAX, whatever it holds. */
    memset(buf, 'a', sizeof buf);
    CHECK(record_parse(buf, RECORD_MAX + 1, &r) == -1);
}

/* A file image: slot k of img holds save seq of r (n bytes in all). */
static size_t put_slot(char *img, size_t n, const struct record *r, unsigned seq)
{
    int len = record_slot_format(r, seq, img + (seq % 2) * RECORD_SLOT, RECORD_SLOT);
    CHECK(len > 0);
    size_t end = (seq % 2) * RECORD_SLOT + (size_t)len;
    return end > n ? end : n;
}

static void slots(void)
{
    static char img[2 * RECORD_SLOT + 8];
    struct record a, b, back;
    unsigned seq = 99;
    sample(&a);
    b = a;
    b.steps = RECORD_RECEIVED | RECORD_HASHED | RECORD_SYNCED;
    b.durable = b.size;
    memset(b.digest, 0x77, 32);

    /* One slot; then the newer of two, whichever slot it is in. */
    memset(img, 0, sizeof img);
    size_t n = put_slot(img, 0, &a, 0);
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 0 && same(&a, &back));
    n = put_slot(img, n, &b, 1);
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 1 && same(&b, &back));
    n = put_slot(img, n, &a, 2);
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 2 && same(&a, &back));

    /* Save 3 torn at every length: save 2 stands, never a garbled record. */
    memset(img, 0, sizeof img);
    n = put_slot(img, 0, &a, 2);
    static char full[RECORD_SLOT];
    int len = record_slot_format(&b, 3, full, sizeof full);
    int torn_ok = 0;
    for (int cut = 0; cut < len - 1; cut++) {
        memcpy(img + RECORD_SLOT, full, (size_t)cut);
        size_t m = RECORD_SLOT + (size_t)cut;
        if (record_file_parse(img, m, &back, &seq) == 0 && seq == 2 && same(&a, &back)) torn_ok++;
    }
    CHECK_MSG(torn_ok == len - 1, "torn save 3: save 2 stands at %d of %d cuts", torn_ok, len - 1);
    /* Whole but for its NUL (the file ends there): whole. */
    memcpy(img + RECORD_SLOT, full, (size_t)len - 1);
    CHECK(record_file_parse(img, RECORD_SLOT + (size_t)len - 1, &back, &seq) == 0 && seq == 3);

    /* Every byte of a sealed slot flipped: that slot fails, the other stands. */
    memset(img, 0, sizeof img);
    n = put_slot(img, 0, &a, 4);
    n = put_slot(img, n, &b, 5);
    int flips_ok = 0;
    for (int i = 0; i < len - 1; i++) {
        img[RECORD_SLOT + i] ^= 0x01;
        if (record_file_parse(img, n, &back, &seq) == 0 && seq == 4) flips_ok++;
        img[RECORD_SLOT + i] ^= 0x01;
    }
    CHECK_MSG(flips_ok == len - 1, "flipped save 5: save 4 stands at %d of %d bytes", flips_ok,
              len - 1);

    /* A newer save over an older, longer one: the stale tail after the NUL
     * does not matter; a new text with an old tail (torn) fails its seal. */
    struct record longer = b;
    snprintf(longer.reason, sizeof longer.reason, "%s", "a long reason, longer than none at all");
    memset(img, 0, sizeof img);
    n = put_slot(img, 0, &longer, 0);
    n = put_slot(img, n, &b, 1);
    put_slot(img, n, &a, 2); /* shorter, over slot 0 */
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 2 && same(&a, &back));
    static char olds[RECORD_SLOT];
    int ol = record_slot_format(&longer, 0, olds, sizeof olds);
    int al = record_slot_format(&a, 2, full, sizeof full);
    CHECK(ol > al);
    memcpy(img, olds, (size_t)ol);
    memcpy(img, full, (size_t)al - 60); /* new head, old tail */
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 1 && same(&b, &back));

    /* Hostile seals and placements. */
    static const struct {
        const char *seal; /* replaces the seal line of save 0 in slot 0 */
        int ok;
    } seals[] = {
        {"seal 0 %s\n", 0},       {"seal 2 %s\n", 0},  {"seal 1 %s\n", -1}, /* odd in slot 0 */
        {"seal 00 %s\n", -1},     {"seal  0 %s\n", -1}, {"seal 0  %s\n", -1},
        {"seal -0 %s\n", -1},     {"seal 4294967296 %s\n", -1},
        {"seal 0 %s", -1}, /* no newline */
        {"seal 0 %.15s\n", -1},   {"seal 0 %sf\n", -1}, {"Seal 0 %s\n", -1},
        {"seal 0 %s\nX", -1}, /* neither NUL nor the end after it */
        {"seal 0 %s\n\n", -1},
    };
    char text[RECORD_MAX];
    int tl = record_format(&a, text, sizeof text);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < tl; i++)
        h = (h ^ (unsigned char)text[i]) * 0x100000001b3ULL;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    for (size_t i = 0; i < sizeof seals / sizeof seals[0]; i++) {
        memset(img, 0, sizeof img);
        memcpy(img, text, (size_t)tl);
        int sl = snprintf(img + tl, 64, seals[i].seal, hex);
        int rc = record_file_parse(img, (size_t)tl + (size_t)sl, &back, &seq);
        CHECK_MSG(rc == seals[i].ok, "seal case %zu: %d", i, rc);
    }
    /* Upper-case hash. */
    for (char *p = hex; *p; p++)
        if (*p >= 'a') *p = (char)(*p - 32);
    memcpy(img, text, (size_t)tl);
    int sl = snprintf(img + tl, 64, "seal 0 %s\n", hex);
    CHECK(strpbrk(hex, "ABCDEF") == NULL || record_file_parse(img, (size_t)tl + (size_t)sl, &back, &seq) == -1);

    /* A file from before the slots: one text, no seal. */
    CHECK(record_file_parse(text, (size_t)tl, &back, &seq) == 0 && seq == 0 && same(&a, &back));
    memset(img, 0, sizeof img);
    memcpy(img, text, (size_t)tl);
    n = put_slot(img, (size_t)tl, &b, 1); /* its first new save: a hole between */
    CHECK(record_file_parse(img, n, &back, &seq) == 0 && seq == 1 && same(&b, &back));
    img[tl] = 'x'; /* not a hole after it: not a record of ours */
    CHECK(record_file_parse(img, (size_t)tl + 1, &back, &seq) == -1);
    /* Unsealed text in slot 0 of a file longer than one record (a new
     * file whose slot 0 save was cut before its seal, or is being
     * written, and whose slot 1 is torn): not vouched for, unknown. */
    memset(img, 0, sizeof img);
    memcpy(img, text, (size_t)tl);
    memcpy(img + RECORD_SLOT, "intake-record 1\nid 01", 21);
    CHECK(record_file_parse(img, RECORD_SLOT + 21, &back, &seq) == -1);
    /* Unsealed text in slot 1: never. */
    memset(img, 0, sizeof img);
    memcpy(img + RECORD_SLOT, text, (size_t)tl);
    CHECK(record_file_parse(img, RECORD_SLOT + (size_t)tl, &back, &seq) == -1);
    /* Longer than two slots; empty; zeros. */
    memset(img, 0, sizeof img);
    n = put_slot(img, 0, &a, 0);
    CHECK(record_file_parse(img, 2 * RECORD_SLOT + 1, &back, &seq) == -1);
    CHECK(record_file_parse(img, 0, &back, &seq) == -1);
    memset(img, 0, sizeof img);
    CHECK(record_file_parse(img, 2 * RECORD_SLOT, &back, &seq) == -1);
    /* A record too big for a slot is refused when formatted. */
    CHECK(record_slot_format(&a, 0, img, 40) == -1);
}

static void files(void)
{
    char dir[] = "/tmp/test_record.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    struct record r, back;
    unsigned seq = 99;
    sample(&r);
    CHECK(record_load(dfd, r.id, &back, &seq) == -ENOENT);
    /* Save 0 creates the file; a later one needs it. */
    CHECK(record_save(dfd, &r, 1, true) == -ENOENT);
    CHECK(record_save(dfd, &r, 0, true) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && same(&r, &back) && seq == 0);
    r.durable = 1000;
    CHECK(record_save(dfd, &r, 1, false) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && back.durable == 1000 && seq == 1);
    r.durable = 999;
    CHECK(record_save(dfd, &r, 2, true) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && back.durable == 999 && seq == 2);
    char path[256];
    snprintf(path, sizeof path, "%s/%s.state", dir, r.id);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size > RECORD_SLOT && sb.st_size < 2 * RECORD_SLOT);
    /* Saves through one open fd, as an upload makes them. */
    CHECK(record_open(dfd, "0123456789abcdef0123456789abcdee", false) == -ENOENT);
    int rfd = record_open(dfd, r.id, false);
    CHECK(rfd >= 0);
    r.durable = 500;
    CHECK(record_write(rfd, &r, 3, false) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && back.durable == 500 && seq == 3);
    r.durable = 999;
    CHECK(record_write(rfd, &r, 4, true) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && back.durable == 999 && seq == 4);
    close(rfd);
    /* Slot 1 cut by a crash: save 4, in slot 0, stands. */
    CHECK(truncate(path, RECORD_SLOT + 40) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == 0 && seq == 4);
    /* Both cut: unknown, never something. */
    CHECK(truncate(path, 40) == 0);
    CHECK(record_load(dfd, r.id, &back, &seq) == -EINVAL);
    /* A record under another id's name is refused. */
    CHECK(record_save(dfd, &r, 0, false) == 0);
    char other[256];
    snprintf(other, sizeof other, "%s/ffffffffffffffffffffffffffffffff.state", dir);
    CHECK(rename(path, other) == 0);
    CHECK(record_load(dfd, "ffffffffffffffffffffffffffffffff", &back, &seq) == -EINVAL);
    record_remove(dfd, "ffffffffffffffffffffffffffffffff");
    record_remove(dfd, r.id);
    CHECK(record_load(dfd, r.id, &back, &seq) == -ENOENT);
    close(dfd);
    CHECK(rmdir(dir) == 0);
    const char *b = record_boot_id();
    CHECK(strlen(b) == RECORD_BOOT_LEN);
}

int main(void)
{
    round_trips();
    hostile();
    slots();
    files();
    return test_report("record");
}
