/* Unit tests for the real-client rules behind trusted proxies. */
#include "proxy.h"
#include "test.h"

int main(void)
{
    const char *specs[] = {"127.0.0.1", "::1", "10.0.0.0/8", "192.168.1.0/24", "fd00::/8"};
    struct proxy_net nets[5];
    for (int i = 0; i < 5; i++)
        CHECK(proxy_parse(specs[i], &nets[i]) == 0);
    struct proxy_net bad;
    CHECK(proxy_parse("10.0.0.0/33", &bad) < 0 && proxy_parse("host", &bad) < 0 &&
          proxy_parse("1.2.3.4/", &bad) < 0 && proxy_parse("::1/129", &bad) < 0);
    CHECK(proxy_trusted(nets, 5, "127.0.0.1") && proxy_trusted(nets, 5, "10.200.3.4"));
    CHECK(proxy_trusted(nets, 5, "::ffff:10.1.1.1") && proxy_trusted(nets, 5, "fd12::1"));
    CHECK(proxy_trusted(nets, 5, "unix"));
    CHECK(!proxy_trusted(nets, 5, "127.0.0.2") && !proxy_trusted(nets, 5, "192.168.2.1"));
    CHECK(!proxy_trusted(nets, 5, "11.0.0.1") && !proxy_trusted(nets, 5, "garbage"));
    struct {
        const char *peer, *xff, *xri, *want;
    } cases[] = {
        {"203.0.113.5", "1.2.3.4", NULL, "203.0.113.5"},               /* untrusted peer: ignored */
        {"127.0.0.1", "198.51.100.7", NULL, "198.51.100.7"},           /* nginx in front */
        {"127.0.0.1", "6.6.6.6, 198.51.100.7", NULL, "198.51.100.7"},  /* forged left part */
        {"127.0.0.1", "198.51.100.7, 10.0.0.2", NULL, "198.51.100.7"}, /* two proxies */
        {"127.0.0.1", "10.0.0.9, 10.0.0.2", NULL, "10.0.0.9"},         /* all trusted: leftmost */
        {"127.0.0.1", " 2001:db8::1 ", NULL, "2001:db8::1"},
        {"127.0.0.1", "not-an-ip", NULL, "127.0.0.1"},
        {"127.0.0.1", "198.51.100.7, junk", NULL, "127.0.0.1"},
        {"127.0.0.1", NULL, "198.51.100.9", "198.51.100.9"}, /* X-Real-IP */
        {"127.0.0.1", NULL, "junk", "127.0.0.1"},
        {"203.0.113.5", NULL, "198.51.100.9", "203.0.113.5"},
        {"unix", "198.51.100.7", NULL, "198.51.100.7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[64];
        proxy_client(nets, 5, cases[i].peer, cases[i].xff, cases[i].xff ? strlen(cases[i].xff) : 0,
                     cases[i].xri, cases[i].xri ? strlen(cases[i].xri) : 0, out, sizeof out);
        CHECK_STR(out, cases[i].want);
    }
    return test_report("test_proxy");
}
