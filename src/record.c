/* record: see record.h. */
#define _GNU_SOURCE
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "intake-record 1\n"

static const char *const step_names[] = {"received", "hashed",    "synced", "scanned",
                                         "hooked",   "published", "placed"};
#define N_STEPS (sizeof step_names / sizeof step_names[0])
static const char *const verdict_names[] = {"", "clean", "infected", "unscanned", "error"};

/* --- formatting ------------------------------------------------------------ */

struct out {
    char *p;
    size_t len, cap;
    bool over;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->over || o->cap - o->len < n) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct out *o, const char *key, uint64_t v)
{
    char b[64];
    int n = snprintf(b, sizeof b, "%s %llu\n", key, (unsigned long long)v);
    put(o, b, (size_t)n);
}

static void put_hex(struct out *o, const char *key, const void *bytes, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    puts_(o, key);
    put(o, " ", 1);
    for (size_t i = 0; i < n && !o->over; i++) {
        char two[2] = {hex[b[i] >> 4], hex[b[i] & 15]};
        put(o, two, 2);
    }
    put(o, "\n", 1);
}

int record_format(const struct record *r, char *buf, size_t cap)
{
    struct out o = {.p = buf, .cap = cap};
    puts_(&o, MAGIC);
    puts_(&o, "id ");
    puts_(&o, r->id);
    puts_(&o, "\n");
    put_hex(&o, "filename", r->filename, r->filename_len);
    put_u64(&o, "size", r->size);
    if (r->has_want) put_hex(&o, "sha256", r->want, 32);
    put_u64(&o, "created", (uint64_t)r->created);
    put_u64(&o, "token_expiry", (uint64_t)r->token_expiry);
    puts_(&o, "boot ");
    puts_(&o, r->boot[0] ? r->boot : "-");
    puts_(&o, "\n");
    put_u64(&o, "durable", r->durable);
    puts_(&o, "steps");
    for (size_t i = 0; i < N_STEPS; i++)
        if (r->steps & (1u << i)) {
            puts_(&o, " ");
            puts_(&o, step_names[i]);
        }
    puts_(&o, "\n");
    if (r->steps & RECORD_HASHED) put_hex(&o, "digest", r->digest, 32);
    if (r->verdict > RV_NONE && r->verdict <= RV_ERROR) {
        puts_(&o, "verdict ");
        puts_(&o, verdict_names[r->verdict]);
        puts_(&o, "\n");
    }
    if (r->virus[0]) put_hex(&o, "virus", r->virus, strlen(r->virus));
    if (r->reason[0]) put_hex(&o, "reason", r->reason, strlen(r->reason));
    if (r->stored[0]) put_hex(&o, "stored", r->stored, strlen(r->stored));
    if (r->name[0]) put_hex(&o, "name", r->name, strlen(r->name));
    puts_(&o, "end\n");
    return o.over ? -1 : (int)o.len;
}

/* --- parsing --------------------------------------------------------------- */

static int unhex(const char *s, size_t n, unsigned char *out, size_t cap, size_t *got)
{
    if (n % 2 || n / 2 > cap) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    *got = n / 2;
    return 0;
}

/* A decimal without sign or leading zeros, at most 19 digits (fits int64). */
static int dec(const char *s, size_t n, uint64_t *v)
{
    if (n == 0 || n > 19 || (n > 1 && s[0] == '0')) return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *v = x;
    return 0;
}

/* Hex text without NUL into a C string of at most max bytes. */
static int text(const char *s, size_t n, char *out, size_t max)
{
    size_t got;
    if (unhex(s, n, (unsigned char *)out, max, &got) < 0 || memchr(out, '\0', got)) return -1;
    out[got] = '\0';
    return got ? 0 : -1;
}

static bool is_key(const char *k, size_t kl, const char *name)
{
    return strlen(name) == kl && memcmp(k, name, kl) == 0;
}

enum {
    F_ID,
    F_FILENAME,
    F_SIZE,
    F_SHA,
    F_CREATED,
    F_EXPIRY,
    F_BOOT,
    F_DURABLE,
    F_STEPS,
    F_DIGEST,
    F_VERDICT,
    F_VIRUS,
    F_REASON,
    F_STORED,
    F_NAME,
    F_END,
    N_FIELDS
};
static const char *const field_names[N_FIELDS] = {
    "id",    "filename", "size",    "sha256", "created", "token_expiry", "boot", "durable",
    "steps", "digest",   "verdict", "virus",  "reason",  "stored",       "name", "end"};

static int field(struct record *r, int f, const char *v, size_t vl)
{
    uint64_t x;
    size_t got;
    switch (f) {
    case F_ID:
        if (vl != RECORD_ID_LEN) return -1;
        for (size_t i = 0; i < vl; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return -1;
        memcpy(r->id, v, vl);
        r->id[vl] = '\0';
        return 0;
    case F_FILENAME:
        if (unhex(v, vl, (unsigned char *)r->filename, RECORD_FILENAME_MAX, &got) < 0 || !got)
            return -1;
        r->filename[got] = '\0';
        r->filename_len = got;
        return 0;
    case F_SIZE:
        return dec(v, vl, &r->size);
    case F_SHA:
        r->has_want = true;
        return unhex(v, vl, r->want, 32, &got) < 0 || got != 32 ? -1 : 0;
    case F_CREATED:
        if (dec(v, vl, &x) < 0) return -1;
        r->created = (int64_t)x;
        return 0;
    case F_EXPIRY:
        if (dec(v, vl, &x) < 0) return -1;
        r->token_expiry = (int64_t)x;
        return 0;
    case F_BOOT:
        if (vl == 1 && v[0] == '-') return 0;
        if (vl != RECORD_BOOT_LEN) return -1;
        for (size_t i = 0; i < vl; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f') || v[i] == '-'))
                return -1;
        memcpy(r->boot, v, vl);
        r->boot[vl] = '\0';
        return 0;
    case F_DURABLE:
        return dec(v, vl, &r->durable);
    case F_STEPS: {
        /* Names separated by single spaces, each once, in order. */
        size_t i = 0, next = 0;
        while (i < vl) {
            if (v[i] != ' ') return -1;
            size_t j = ++i;
            while (j < vl && v[j] != ' ')
                j++;
            size_t s = next;
            while (s < N_STEPS && !is_key(v + i, j - i, step_names[s]))
                s++;
            if (s == N_STEPS) return -1;
            r->steps |= 1u << s;
            next = s + 1;
            i = j;
        }
        return 0;
    }
    case F_DIGEST:
        return unhex(v, vl, r->digest, 32, &got) < 0 || got != 32 ? -1 : 0;
    case F_VERDICT:
        for (int k = RV_CLEAN; k <= RV_ERROR; k++)
            if (is_key(v, vl, verdict_names[k])) {
                r->verdict = k;
                return 0;
            }
        return -1;
    case F_VIRUS:
        return text(v, vl, r->virus, RECORD_TEXT_MAX);
    case F_REASON:
        return text(v, vl, r->reason, RECORD_TEXT_MAX);
    case F_STORED:
        return text(v, vl, r->stored, RECORD_NAME_MAX);
    case F_NAME:
        return text(v, vl, r->name, RECORD_NAME_MAX);
    }
    return -1;
}

int record_parse(const char *buf, size_t len, struct record *r)
{
    memset(r, 0, sizeof *r);
    size_t ml = sizeof MAGIC - 1;
    if (len > RECORD_MAX || len < ml || memcmp(buf, MAGIC, ml) != 0) return -1;
    unsigned seen = 0;
    size_t i = ml;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl) return -1;
        size_t ll = (size_t)(nl - (buf + i));
        const char *line = buf + i;
        const char *sp = memchr(line, ' ', ll);
        size_t kl = sp ? (size_t)(sp - line) : ll;
        /* "steps" keeps its leading space: an empty list is "steps". */
        const char *v = sp ? (is_key(line, kl, "steps") ? sp : sp + 1) : line + ll;
        size_t vl = (size_t)(line + ll - v);
        int f = 0;
        while (f < N_FIELDS && !is_key(line, kl, field_names[f]))
            f++;
        if (f == N_FIELDS || (seen & (1u << f))) return -1;
        seen |= 1u << f;
        if (f == F_END) {
            if (sp || nl + 1 != buf + len) return -1;
            break;
        }
        if (f != F_STEPS && !sp) return -1;
        if (field(r, f, v, vl) < 0) return -1;
        i += ll + 1;
    }
    const unsigned need = 1u << F_ID | 1u << F_FILENAME | 1u << F_SIZE | 1u << F_CREATED |
                          1u << F_EXPIRY | 1u << F_BOOT | 1u << F_DURABLE | 1u << F_STEPS |
                          1u << F_END;
    if ((seen & need) != need) return -1;
    /* Values that contradict each other. */
    if (r->durable > r->size) return -1;
    if (!(r->steps & RECORD_HASHED) != !(seen & (1u << F_DIGEST))) return -1;
    if ((r->steps & ~RECORD_RECEIVED) && !(r->steps & RECORD_RECEIVED)) return -1;
    if ((r->steps & RECORD_SYNCED) && r->durable != r->size) return -1;
    if (!(r->steps & RECORD_SCANNED) != (r->verdict == RV_NONE)) return -1;
    if ((r->steps & (RECORD_HOOKED | RECORD_PUBLISHED | RECORD_PLACED)) &&
        !(r->steps & RECORD_SCANNED))
        return -1;
    /* Only a file that passed is hooked, announced before STATUS, or named early. */
    if (((r->steps & (RECORD_HOOKED | RECORD_PUBLISHED)) || r->name[0]) &&
        r->verdict == RV_INFECTED)
        return -1;
    if (r->name[0] && r->stored[0] && strcmp(r->name, r->stored) != 0) return -1;
    if (r->verdict == RV_ERROR && !r->reason[0]) return -1;
    if (!r->virus[0] != (r->verdict != RV_INFECTED)) return -1;
    return 0;
}

/* --- slots ----------------------------------------------------------------- */

static uint64_t fnv1a64(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int record_slot_format(const struct record *r, unsigned seq, char *buf, size_t cap)
{
    enum { SEAL_MAX = 48 }; /* "seal " + 10 digits + " " + 16 hex + "\n" + NUL */
    if (cap < SEAL_MAX) return -1;
    int n = record_format(r, buf, cap - SEAL_MAX);
    if (n < 0 || n > RECORD_MAX) return -1;
    int m = snprintf(buf + n, SEAL_MAX, "seal %u %016llx\n", seq,
                     (unsigned long long)fnv1a64(buf, (size_t)n));
    return n + m + 1; /* with the NUL snprintf wrote */
}

/* "seal SEQ HASH\n" at s (n bytes): 0 with *seq and *hash and *used, or -1. */
static int parse_seal(const char *s, size_t n, unsigned *seq, uint64_t *hash, size_t *used)
{
    const char *nl = memchr(s, '\n', n);
    if (!nl || n < 5 || memcmp(s, "seal ", 5) != 0) return -1;
    const char *v = s + 5, *sp = memchr(v, ' ', (size_t)(nl - v));
    uint64_t x;
    if (!sp || dec(v, (size_t)(sp - v), &x) < 0 || x > 0xffffffffu) return -1;
    if (nl - (sp + 1) != 16) return -1;
    unsigned char h[8];
    size_t got;
    if (unhex(sp + 1, 16, h, 8, &got) < 0) return -1;
    uint64_t hv = 0;
    for (int i = 0; i < 8; i++)
        hv = hv << 8 | h[i];
    *seq = (unsigned)x;
    *hash = hv;
    *used = (size_t)(nl + 1 - s);
    return 0;
}

/* Slot k of the file: 0 with its sequence number, its text length and
 * whether it is sealed; or -1. */
static int slot_check(const char *buf, size_t len, int k, struct record *scratch, unsigned *seq,
                      size_t *text_len, bool *sealed)
{
    size_t start = (size_t)k * RECORD_SLOT;
    if (start >= len) return -1;
    size_t n = len - start < RECORD_SLOT ? len - start : RECORD_SLOT;
    const char *s = buf + start;
    const char *end = memmem(s, n, "\nend\n", 5);
    if (!end) return -1;
    size_t tl = (size_t)(end + 5 - s);
    if (record_parse(s, tl, scratch) < 0) return -1;
    unsigned q;
    uint64_t h;
    size_t used;
    if (parse_seal(s + tl, n - tl, &q, &h, &used) == 0) {
        /* Sealed: the hash, the slot's parity, then a NUL or the end. */
        if (h != fnv1a64(s, tl) || q % 2 != (unsigned)k) return -1;
        if (tl + used < n && s[tl + used] != '\0') return -1;
        *sealed = true;
    } else {
        /* Unsealed: maybe a record written whole by an older intake (one
         * text, renamed into place), in slot 0, followed by nothing or a
         * hole; record_file_parse takes it only if nothing sealed is there. */
        if (k != 0 || (tl < n && s[tl] != '\0')) return -1;
        q = 0;
        *sealed = false;
    }
    *seq = q;
    *text_len = tl;
    return 0;
}

int record_file_parse(const char *buf, size_t len, struct record *r, unsigned *seq)
{
    if (len > 2 * (size_t)RECORD_SLOT) return -1;
    int best = -1;
    unsigned best_seq = 0;
    size_t best_len = 0;
    bool best_sealed = false;
    for (int k = 0; k < 2; k++) {
        unsigned q;
        size_t tl;
        bool sealed;
        if (slot_check(buf, len, k, r, &q, &tl, &sealed) < 0) continue;
        if (best < 0 || (sealed && !best_sealed) || (sealed == best_sealed && q > best_seq)) {
            best = k;
            best_seq = q;
            best_len = tl;
            best_sealed = sealed;
        }
    }
    if (best < 0) return -1;
    /* An unsealed text stands only as a whole file from before the slots
     * (never longer than one record): a new file's unsealed slot is a save
     * cut short, or one being written, whose bytes the seal cannot vouch
     * for. */
    if (!best_sealed && len > RECORD_MAX) return -1;
    *seq = best_seq;
    return record_parse(buf + (size_t)best * RECORD_SLOT, best_len, r);
}

/* --- files ----------------------------------------------------------------- */

/* spool/<id>.state, and the temporary an older intake wrote beside it. */
static void names(const char *id, char *state, char *tmp)
{
    snprintf(state, 48, "%.32s.state", id);
    snprintf(tmp, 48, "%.32s.state.tmp", id);
}

int record_open(int spool_fd, const char *id, bool create)
{
    char state[48];
    snprintf(state, sizeof state, "%.32s.state", id);
    int flags = O_WRONLY | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0);
    int fd = openat(spool_fd, state, flags, 0640);
    return fd < 0 ? -errno : fd;
}

int record_write(int fd, const struct record *r, unsigned seq, bool sync)
{
    static _Thread_local char buf[RECORD_SLOT];
    int n = record_slot_format(r, seq, buf, sizeof buf);
    if (n < 0) return -EOVERFLOW;
    size_t off = 0;
    off_t at = (off_t)(seq % 2) * RECORD_SLOT;
    while (off < (size_t)n) {
        ssize_t w = pwrite(fd, buf + off, (size_t)n - off, at + (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EIO;
        off += (size_t)w;
    }
    return sync && fdatasync(fd) < 0 ? -errno : 0;
}

int record_save(int spool_fd, const struct record *r, unsigned seq, bool sync)
{
    int fd = record_open(spool_fd, r->id, seq == 0);
    if (fd < 0) return fd;
    int rc = record_write(fd, r, seq, sync);
    if (close(fd) < 0 && rc == 0) rc = -errno;
    return rc;
}

int record_load(int spool_fd, const char *id, struct record *r, unsigned *seq)
{
    char state[48];
    snprintf(state, sizeof state, "%.32s.state", id);
    static _Thread_local char buf[2 * RECORD_SLOT + 1];
    /* Read while its writer saves twice in a row, both slots can look torn:
     * a second look settles it. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = openat(spool_fd, state, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) return errno == ENOENT ? -ENOENT : -EINVAL;
        size_t len = 0;
        for (;;) {
            ssize_t n = read(fd, buf + len, sizeof buf - len);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            len += (size_t)n;
            if (len == sizeof buf) break;
        }
        close(fd);
        if (record_file_parse(buf, len, r, seq) == 0) return strcmp(r->id, id) == 0 ? 0 : -EINVAL;
    }
    return -EINVAL;
}

void record_remove(int spool_fd, const char *id)
{
    char state[48], tmp[48];
    names(id, state, tmp);
    unlinkat(spool_fd, state, 0);
    unlinkat(spool_fd, tmp, 0);
}

static char boot[RECORD_BOOT_LEN + 1];

static void read_boot_id(void)
{
    {
        int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char b[64];
            ssize_t n = read(fd, b, sizeof b);
            close(fd);
            if (n >= RECORD_BOOT_LEN) {
                memcpy(boot, b, RECORD_BOOT_LEN);
                boot[RECORD_BOOT_LEN] = '\0';
                for (int i = 0; i < RECORD_BOOT_LEN; i++)
                    if (!((boot[i] >= '0' && boot[i] <= '9') ||
                          (boot[i] >= 'a' && boot[i] <= 'f') || boot[i] == '-'))
                        boot[0] = '\0';
            }
        }
    }
}

const char *record_boot_id(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_boot_id);
    return boot;
}
