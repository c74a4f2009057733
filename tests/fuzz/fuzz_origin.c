/* libFuzzer target for the Origin check (built by `make fuzz` as
 * build/fuzz/fuzz_origin). The input is an Origin and a Host split at the
 * first newline. Any input must be survived, never read past its end, and an
 * origin that parses matches itself. */
#include "origin.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t olen = nl ? (size_t)(nl - s) : size;
    const char *host = nl ? nl + 1 : s + size;
    size_t hlen = size - olen - (nl ? 1 : 0);
    struct origin o;
    if (origin_parse(s, olen, &o) == 0) {
        if (o.host < s || o.host + o.host_len > s + olen || !o.host_len) abort();
        if (o.port > 65535 || (o.def_port != 80 && o.def_port != 443)) abort();
        if (!origin_match(s, olen, s, olen)) abort();
    }
    if (origin_parse_host(host, hlen, &o) == 0) {
        if (o.host != host || o.host_len > hlen || o.port > 65535) abort();
    }
    (void)origin_same(s, olen, host, hlen);
    (void)origin_match(host, hlen, s, olen);
    return 0;
}
