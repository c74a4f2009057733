/* Unit tests for upload tokens: known answers (computed independently with
 * Python's hmac module), hostile spellings, every truncation and every byte
 * changed, key rotation, and the START check's codes and messages. */
#include "test.h"
#include "token.h"

#include <stdint.h>
#include <stdlib.h>

static const char k1_text[] = "0123456789abcdef0123456789abcdef";
static const char k2_text[] = "second-secret-second-secret-0001";
static const char good[] = "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzkE";
static const char good_max[] =
    "v1.18446744073709551615.1048576.4lJERcmNYI_AKEBqc5-fcKIBipAZ_O4O9R0s7fwhB1M";
static const char good_k2[] = "v1.1700000000.0._MCEQFOmPm8EoRQPhoq6eNRYG5e3P78kE-IMSqbL_do";
#define SIG "f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzkE"

static int parse(const char *s)
{
    struct token t;
    return token_parse(s, strlen(s), &t);
}

int main(void)
{
    struct token_key k1 = {(const unsigned char *)k1_text, 32};
    struct token_key k2 = {(const unsigned char *)k2_text, 32};
    struct token_key both[2] = {k1, k2};
    struct token t;

    /* Well formed. */
    CHECK(token_parse(good, strlen(good), &t) == 0);
    CHECK(t.expiry == 1700000000 && t.max_size == 0 && t.signed_len == 15);
    CHECK(token_parse(good_max, strlen(good_max), &t) == 0);
    CHECK(t.expiry == UINT64_MAX && t.max_size == 1048576);
    CHECK(strlen(good_max) < TOKEN_TEXT_MAX);
    CHECK(parse("v1.0.0." SIG) == 0);
    CHECK(parse("v1.18446744073709551615.18446744073709551615." SIG) == 0);
    CHECK(strlen("v1.18446744073709551615.18446744073709551615." SIG) == TOKEN_TEXT_MAX);

    /* Hostile spellings. */
    static const char *const bad[] = {
        "",
        "v",
        "v1",
        "v1.",
        "v1.1",
        "v1.1.",
        "v1.1.0",
        "v1.1.0.",
        "v2.1700000000.0." SIG,
        "V1.1700000000.0." SIG,
        "1.1700000000.0." SIG,
        " v1.1700000000.0." SIG,
        "v1.1700000000.0." SIG " ",
        "v1.1700000000.0." SIG "\n",
        "v1.+1700000000.0." SIG,
        "v1.-1700000000.0." SIG,
        "v1. 1700000000.0." SIG,
        "v1.1700000000 .0." SIG,
        "v1.01700000000.0." SIG,
        "v1.1700000000.00." SIG,
        "v1.1700000000.01." SIG,
        "v1.0x10.0." SIG,
        "v1.1e9.0." SIG,
        "v1..0." SIG,
        "v1.1700000000.." SIG,
        "v1.1700000000.0" SIG,
        "v1.1700000000.0.." SIG,
        "v1.18446744073709551616.0." SIG,  /* UINT64_MAX + 1 */
        "v1.99999999999999999999.0." SIG,  /* 20 digits, too big */
        "v1.100000000000000000000.0." SIG, /* 21 digits */
        "v1.1.18446744073709551616." SIG,
        "v1.1700000000.0." SIG "=",                                     /* padding */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzk",   /* 42 */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzkEA", /* 44 */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzkF",  /* low bits set */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzk=",  /* '=' in place */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tz+E",  /* base64, not url */
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tz/E",
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2t.kE",
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2t%2E",
        "v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2t\xc3\xa9",
        "v1.1700000000.0.1." SIG,
        "v1.1700000000." SIG,
        "Bearer v1.1700000000.0." SIG,
        "v1.1700000000.0." SIG SIG,
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(parse(bad[i]) < 0, "accepted \"%s\"", bad[i]);
    /* Embedded NUL: the length, not strlen, decides. */
    char nul[sizeof good];
    memcpy(nul, good, sizeof good);
    nul[20] = '\0';
    CHECK(token_parse(nul, sizeof good - 1, &t) < 0);
    /* Longer than any token, even when it starts like one. */
    char huge[4096];
    memset(huge, '1', sizeof huge);
    memcpy(huge, "v1.", 3);
    CHECK(token_parse(huge, sizeof huge, &t) < 0);

    /* Every truncation of a good token is malformed. */
    for (size_t n = 0; n < strlen(good); n++)
        CHECK_MSG(token_parse(good, n, &t) < 0, "prefix of %zu bytes accepted", n);

    /* Known answers, both ways. */
    char out[TOKEN_TEXT_MAX + 1];
    CHECK(token_sign(&k1, 1700000000, 0, out, sizeof out) == (int)strlen(good));
    CHECK_STR(out, good);
    CHECK(token_sign(&k1, UINT64_MAX, 1048576, out, sizeof out) == (int)strlen(good_max));
    CHECK_STR(out, good_max);
    CHECK(token_sign(&k2, 1700000000, 0, out, sizeof out) > 0);
    CHECK_STR(out, good_k2);
    CHECK(token_sign(&k1, 1, 2, out, TOKEN_TEXT_MAX) < 0); /* too small a buffer */
    CHECK(token_sign(&k1, UINT64_MAX, UINT64_MAX, out, sizeof out) == TOKEN_TEXT_MAX);

    /* Verification, and key rotation: either key verifies its own tokens. */
    token_parse(good, strlen(good), &t);
    CHECK(token_verify(&k1, 1, good, &t));
    CHECK(!token_verify(&k2, 1, good, &t));
    CHECK(token_verify(both, 2, good, &t));
    token_parse(good_k2, strlen(good_k2), &t);
    CHECK(!token_verify(&k1, 1, good_k2, &t));
    CHECK(token_verify(both, 2, good_k2, &t));
    CHECK(!token_verify(both, 0, good_k2, &t));
    struct token_key shorter = {(const unsigned char *)k1_text, 31};
    token_parse(good, strlen(good), &t);
    CHECK(!token_verify(&shorter, 1, good, &t));

    /* Any byte changed: malformed, or the signature no longer matches. */
    char mut[sizeof good];
    static const unsigned char flips[] = {0x01, 0x02, 0x04, 0x20, 0x80};
    int survived = 0;
    for (size_t i = 0; i < strlen(good); i++)
        for (size_t f = 0; f < sizeof flips; f++) {
            memcpy(mut, good, sizeof good);
            mut[i] = (char)(mut[i] ^ flips[f]);
            if (token_parse(mut, strlen(good), &t) == 0 && token_verify(both, 2, mut, &t))
                survived++;
        }
    CHECK_MSG(survived == 0, "%d altered tokens verified", survived);

    /* Round trips over awkward values. */
    static const uint64_t vals[] = {0,         1, 9, 10, 4294967295u, 4294967296u, UINT64_MAX - 1,
                                    UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        for (size_t j = 0; j < sizeof vals / sizeof *vals; j++) {
            int n = token_sign(&k2, vals[i], vals[j], out, sizeof out);
            CHECK(n > 0 && token_parse(out, (size_t)n, &t) == 0 && t.expiry == vals[i] &&
                  t.max_size == vals[j] && token_verify(both, 2, out, &t));
        }

    /* The START check. */
    char msg[256];
    const uint64_t exp = 1700000000;
    struct {
        const char *tok;
        uint64_t now;
        bool first;
        uint64_t size;
        int code;
        const char *msg_has;
    } cases[] = {
        {"", exp - 100, true, 1, 401, "required"},
        {"garbage", exp - 100, true, 1, 401, "malformed"},
        {"v1.1700000000.0.f9ZZ1l4lH5aAbeVBb6Pt8FuChMNLB6elMX7HiB2tzkF", exp - 100, true, 1, 401,
         "malformed"},
        {"v1.1700000001.0." SIG, exp - 100, true, 1, 401, "bad signature"},
        {"v1.1700000001.0." SIG, exp - 100, false, 1, 401, "bad signature"},
        {good, exp - 1, true, 1, 0, ""},
        {good, exp, true, 1, 401, "expired at 2023-11-14T22:13:20Z"},
        {good, exp + 86400, true, 1, 401, "expired at 2023-11-14T22:13:20Z"},
        {good, exp + 86400, false, 1, 0, ""},     /* resume / re-query after expiry */
        {good, exp - 1, true, UINT64_MAX, 0, ""}, /* MAXSIZE 0: no limit from the token */
        {good_k2, exp - 1, true, 1, 0, ""},
        {good_max, exp, true, 1048576, 0, ""},
        {good_max, exp, true, 1048577, 413, "1048577 bytes is larger than the upload token allows"},
        {good_max, exp, false, 1048577, 413, "(1048576 bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memset(msg, 'x', sizeof msg);
        int code = token_check(both, 2, cases[i].tok, strlen(cases[i].tok), cases[i].now,
                               cases[i].first, cases[i].size, msg, sizeof msg);
        CHECK_MSG(code == cases[i].code, "case %zu: %d, want %d (%s)", i, code, cases[i].code, msg);
        CHECK_MSG(strstr(msg, cases[i].msg_has) != NULL, "case %zu: \"%s\"", i, msg);
        CHECK_MSG(!strstr(msg, "f9ZZ") && !strstr(msg, "4lJE") && !strstr(msg, "_MCE") &&
                      !strstr(msg, "garbage"),
                  "case %zu: the message shows the token: %s", i, msg);
    }
    /* No keys at all (not a configuration intaked accepts): nothing verifies. */
    CHECK(token_check(both, 0, good, strlen(good), exp - 1, true, 1, msg, sizeof msg) == 401);

    return test_report("token");
}
