/* libFuzzer target for the upload record parser: any bytes either fail or
 * parse into a record that formats back to a record parsing the same. */
#include "record.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct record r, back;
    static char buf[RECORD_MAX];
    if (record_parse((const char *)data, size, &r) != 0) return 0;
    int n = record_format(&r, buf, sizeof buf);
    if (n < 0) abort();
    if (record_parse(buf, (size_t)n, &back) != 0) abort();
    if (back.size != r.size || back.steps != r.steps || back.durable != r.durable ||
        back.filename_len != r.filename_len || memcmp(back.filename, r.filename, r.filename_len))
        abort();
    return 0;
}
