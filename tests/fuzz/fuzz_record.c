/* libFuzzer target for the upload record parser: any bytes either fail or
 * parse into a record that formats back to a record parsing the same; the
 * same for a two-slot record file made of the input (its first two bytes
 * say where slot 0's bytes end and slot 1's begin, so inputs under
 * -max_len reach both slots). */
#include "record.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct record r, back;
    static char buf[RECORD_MAX];
    static char img[2 * RECORD_SLOT];
    unsigned seq, seq2;
    if (size >= 2) {
        size_t k = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
        size_t rest = size - 2 - k;
        memset(img, 0, sizeof img);
        memcpy(img, data + 2, k);
        memcpy(img + RECORD_SLOT, data + 2 + k, rest);
        size_t len = rest ? RECORD_SLOT + rest : k;
        if (record_file_parse(img, len, &r, &seq) == 0) {
            /* Resealed alone in its slot, it reads back the same. */
            size_t at = (size_t)(seq % 2) * RECORD_SLOT;
            memset(img, 0, sizeof img);
            int n = record_slot_format(&r, seq, img + at, RECORD_SLOT);
            if (n < 0 || record_file_parse(img, at + (size_t)n, &back, &seq2) != 0 ||
                seq2 != seq || back.size != r.size || back.steps != r.steps ||
                back.durable != r.durable)
                abort();
        }
    }
    if (record_parse((const char *)data, size, &r) != 0) return 0;
    int n = record_format(&r, buf, sizeof buf);
    if (n < 0) abort();
    if (record_parse(buf, (size_t)n, &back) != 0) abort();
    if (back.size != r.size || back.steps != r.steps || back.durable != r.durable ||
        back.filename_len != r.filename_len || memcmp(back.filename, r.filename, r.filename_len))
        abort();
    return 0;
}
