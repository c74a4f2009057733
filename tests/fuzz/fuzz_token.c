/* libFuzzer target for the upload token parser and the START check (built
 * by `make fuzz` as build/fuzz/fuzz_token). Any input must be survived; a
 * token that parses is in its one canonical spelling; a token that passes
 * the check is exactly what token_sign makes of its fields. */
#include "token.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct token_key keys[2] = {
        {(const unsigned char *)"0123456789abcdef0123456789abcdef", 32},
        {(const unsigned char *)"second-secret-second-secret-0001", 32},
    };
    const char *s = (const char *)data;
    struct token t;
    if (token_parse(s, size, &t) == 0) {
        if (size > TOKEN_TEXT_MAX || t.signed_len + 1 + TOKEN_SIG_TEXT_LEN != size) abort();
        char prefix[TOKEN_TEXT_MAX + 1];
        int n = snprintf(prefix, sizeof prefix, "v1.%llu.%llu", (unsigned long long)t.expiry,
                         (unsigned long long)t.max_size);
        if (n < 0 || (size_t)n != t.signed_len || memcmp(prefix, s, t.signed_len) != 0) abort();
    }
    char msg[256];
    uint64_t now = size ? data[0] : 0;
    int code = token_check(keys, 2, s, size, now, size & 1, 1000, msg, sizeof msg);
    if (code != 0 && code != 401 && code != 413) abort();
    if (memchr(msg, '\0', sizeof msg) == NULL) abort();
    if (code == 0) {
        char again[TOKEN_TEXT_MAX + 1], other[TOKEN_TEXT_MAX + 1];
        int a = token_sign(&keys[0], t.expiry, t.max_size, again, sizeof again);
        int b = token_sign(&keys[1], t.expiry, t.max_size, other, sizeof other);
        bool same = ((size_t)a == size && memcmp(again, s, size) == 0) ||
                    ((size_t)b == size && memcmp(other, s, size) == 0);
        if (!same) abort();
    }
    return 0;
}
