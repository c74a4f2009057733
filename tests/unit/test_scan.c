/* Unit tests for the clamd reply parser: every reply form clamd and
 * intake-scand send, and the replies that must never read as clean. */
#include "scan.h"
#include "test.h"

int main(void)
{
    struct {
        const char *reply;
        enum upload_verdict v;
        const char *virus, *reason_part;
    } cases[] = {
        {"fd[5]: OK", VERDICT_CLEAN, "", ""},
        {"stream: OK", VERDICT_CLEAN, "", ""},
        {"/a/b: c.txt: OK", VERDICT_CLEAN, "", ""},
        {"fd[5]: Eicar-Test-Signature.UNOFFICIAL FOUND", VERDICT_INFECTED,
         "Eicar-Test-Signature.UNOFFICIAL", ""},
        {"stream: Win.Test.EICAR_HDB-1 FOUND", VERDICT_INFECTED, "Win.Test.EICAR_HDB-1", ""},
        {"1: fd[9]: Eicar FOUND", VERDICT_INFECTED, "Eicar", ""},
        {"fd[5]: Heuristics.Limits.Exceeded.MaxFileSize FOUND", VERDICT_ERROR, "",
         "could not be fully scanned (Heuristics.Limits.Exceeded.MaxFileSize)"},
        {"fd[5]: Heuristics.Limits.Exceeded.MaxScanSize FOUND", VERDICT_ERROR, "",
         "could not be fully scanned"},
        {"fd[5]: Heuristics.Encrypted.Zip FOUND", VERDICT_ERROR, "",
         "encrypted and could not be scanned (Heuristics.Encrypted.Zip)"},
        {"stream: Heuristics.Encrypted.PDF FOUND", VERDICT_ERROR, "", "Heuristics.Encrypted.PDF"},
        {"3: fd[7]: Heuristics.Encrypted.RAR FOUND", VERDICT_ERROR, "", "Encrypted.RAR"},
        {"/up/x.7z: Heuristics.Encrypted.7Zip FOUND", VERDICT_ERROR, "", "encrypted"},
        {"fd[5]: Can't open file or directory ERROR", VERDICT_ERROR, "",
         "scanner error: Can't open file or directory"},
        {"INSTREAM size limit exceeded. ERROR", VERDICT_ERROR, "", "INSTREAM size limit"},
        {"UNKNOWN COMMAND", VERDICT_ERROR, "", "UNKNOWN COMMAND"},
        {"fd[5]: OK but not really", VERDICT_ERROR, "", "OK but not really"},
        {"fd[5]: ", VERDICT_ERROR, "", ""},
        {"", VERDICT_ERROR, "", ""},
        {"fd[5]: FOUND", VERDICT_ERROR, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char virus[128] = "", reason[256] = "";
        enum upload_verdict v =
            scan_parse_reply(cases[i].reply, virus, sizeof virus, reason, sizeof reason);
        CHECK_MSG(v == cases[i].v, "\"%s\": verdict %d", cases[i].reply, (int)v);
        CHECK_STR(virus, cases[i].virus);
        CHECK_MSG(strstr(reason, cases[i].reason_part) != NULL, "\"%s\": reason \"%s\"",
                  cases[i].reply, reason);
        if (v == VERDICT_ERROR) CHECK_MSG(reason[0] != '\0', "\"%s\": no reason", cases[i].reply);
    }
    return test_report("test_scan");
}
