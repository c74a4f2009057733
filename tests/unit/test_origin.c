/* Unit tests for the Origin check: allowed_origins same (Origin against
 * Host) and listed origins, with default ports, IPv6 literals, case, trailing
 * dots, bad ports, "null" and junk. */
#include "origin.h"
#include "test.h"

int main(void)
{
    struct {
        const char *origin, *host;
        bool same;
    } same[] = {
        /* The page served by intaked itself, on any port. */
        {"http://127.0.0.1:8080", "127.0.0.1:8080", true},
        {"http://localhost:8080", "localhost:8080", true},
        /* Default ports, written or not, on either side. */
        {"http://example.com", "example.com", true},
        {"http://example.com:80", "example.com", true},
        {"http://example.com", "example.com:80", true},
        {"https://example.com", "example.com", true},
        {"https://example.com:443", "example.com", true},
        {"https://example.com", "example.com:443", true},
        {"ws://example.com", "example.com:80", true},
        {"wss://example.com:443", "example.com", true},
        /* The scheme is not compared: TLS ending at nginx. */
        {"https://uploads.example.com:8443", "uploads.example.com:8443", true},
        {"http://uploads.example.com:8443", "uploads.example.com:8443", true},
        /* Not the default port: it must match. */
        {"http://example.com:8080", "example.com", false},
        {"http://example.com", "example.com:8080", false},
        {"https://example.com:8443", "example.com:9443", false},
        {"https://example.com", "example.com:8443", false},
        /* Other hosts. */
        {"http://evil.example", "example.com", false},
        {"http://example.com.evil.example", "example.com", false},
        {"http://example.co", "example.com", false},
        {"http://127.0.0.1:8080", "localhost:8080", false},
        /* Case-insensitive host and scheme. */
        {"HTTP://EXAMPLE.COM", "example.com", true},
        {"http://Example.Com:8080", "EXAMPLE.com:8080", true},
        {"HTTPS://example.com", "Example.COM:443", true},
        /* A trailing dot is a different host name to a browser. */
        {"http://example.com.", "example.com.", true},
        {"http://example.com.", "example.com", false},
        {"http://example.com", "example.com.", false},
        /* IPv6 literals. */
        {"http://[::1]:8080", "[::1]:8080", true},
        {"http://[::1]", "[::1]", true},
        {"https://[2001:DB8::1]", "[2001:db8::1]:443", true},
        {"http://[::1]:8080", "[::1]:8081", false},
        {"http://[::1]:8080", "::1:8080", false},
        {"http://[::1]:8080", "[::2]:8080", false},
        {"http://[]:8080", "[]:8080", false},
        {"http://[::1%eth0]", "[::1%eth0]", false},
        {"http://[::1", "[::1", false},
        /* Bad ports. */
        {"http://example.com:", "example.com", false},
        {"http://example.com:0", "example.com:0", false},
        {"http://example.com:65536", "example.com:65536", false},
        {"http://example.com:123456", "example.com:123456", false},
        {"http://example.com:+80", "example.com", false},
        {"http://example.com:-1", "example.com", false},
        {"http://example.com:8o", "example.com", false},
        {"http://example.com:65535", "example.com:65535", true},
        /* The same explicit port, which is the other scheme's default. */
        {"http://example.com:443", "example.com:443", true},
        {"https://example.com:80", "example.com:80", true},
        {"http://example.com:443", "example.com", false},
        {"https://example.com:80", "example.com", false},
        {"http://example.com:443", "example.com:80", false},
        {"http://example.com:080", "example.com:80", true}, /* leading zero: the same number */
        {"http://example.com:8080", "example.com:", false},
        {"http://example.com:8080", "example.com:8080:8080", false},
        /* Not an origin. */
        {"null", "example.com", false},
        {"", "example.com", false},
        {"example.com", "example.com", false},
        {"//example.com", "example.com", false},
        {"http:/example.com", "example.com", false},
        {"http://", "", false},
        {"ftp://example.com", "example.com", false},
        {"file://", "", false},
        {"chrome-extension://abcdef", "abcdef", false},
        {"http://example.com/", "example.com", false},
        {"http://example.com/path", "example.com", false},
        {"http://example.com?x", "example.com", false},
        {"http://user@example.com", "example.com", false},
        {"http://example.com ", "example.com", false},
        {" http://example.com", "example.com", false},
        {"http://exa mple.com", "exa mple.com", false},
        {"http://example.com\r\nX: y", "example.com", false},
        {"http://ex%41mple.com", "ex%41mple.com", false},
        {"http://example.com", "", false},
        {"http://example.com", "http://example.com", false},
        {"http://example.com", "example.com/", false},
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++)
        CHECK_MSG(origin_same(same[i].origin, strlen(same[i].origin), same[i].host,
                              strlen(same[i].host)) == same[i].same,
                  "\"%s\" vs Host \"%s\"", same[i].origin, same[i].host);

    /* Lengths, not NULs, end the values. */
    CHECK(origin_same("http://a.example:1", 16, "a.example:1", 9));
    CHECK(!origin_same("http://a.example\0x", 18, "a.example", 9));

    struct {
        const char *listed, *origin;
        bool match;
    } list[] = {
        {"https://good.example", "https://good.example", true},
        {"https://good.example", "HTTPS://GOOD.EXAMPLE", true},
        {"https://good.example", "https://good.example:443", true},
        {"https://good.example:443", "https://good.example", true},
        {"http://good.example:8080", "http://good.example:8080", true},
        {"https://good.example", "http://good.example", false}, /* the scheme counts here */
        {"http://good.example", "https://good.example", false},
        {"https://good.example", "https://good.example:8443", false},
        {"https://good.example", "https://evil.example", false},
        {"https://good.example", "https://good.example.evil.example", false},
        {"https://good.example", "https://good.example/", false},
        {"https://good.example", "null", false},
        {"null", "null", true},
        {"null", "https://good.example", false},
        {"https://[::1]:8443", "https://[::1]:8443", true},
        {"https://good.example", "", false},
    };
    for (size_t i = 0; i < sizeof list / sizeof *list; i++)
        CHECK_MSG(origin_match(list[i].listed, strlen(list[i].listed), list[i].origin,
                               strlen(list[i].origin)) == list[i].match,
                  "listed \"%s\" vs \"%s\"", list[i].listed, list[i].origin);

    struct origin o;
    CHECK(origin_parse("https://a.example:8443", 22, &o) == 0 && o.port == 8443 &&
          o.def_port == 443 && o.host_len == 9 && memcmp(o.host, "a.example", 9) == 0);
    CHECK(origin_parse_host("[::1]:80", 8, &o) == 0 && o.port == 80 && o.host_len == 5);
    /* Every truncation of an origin either parses as a shorter one or not at all,
     * and never reads past its end. */
    const char *full = "https://[2001:db8::1]:8443";
    for (size_t n = 0; n <= strlen(full); n++) {
        char buf[64];
        memcpy(buf, full, n);
        if (origin_parse(buf, n, &o) == 0) CHECK(o.host + o.host_len <= buf + n && o.port <= 65535);
    }
    return test_report("origin");
}
