/* proctitle: see proctitle.h. */
#define _GNU_SOURCE
#include "proctitle.h"

#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char *area;      /* the original argv[0] storage */
static size_t area_len; /* through the end of the last contiguous string */

void proctitle_init(int argc, char **argv)
{
    if (argc < 1 || !argv[0]) return;
    char *start = argv[0];
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++)
        if (argv[i] == end) end = argv[i] + strlen(argv[i]) + 1;
    /* The environment usually follows argv: move it to the heap to reuse its room. */
    size_t n = 0;
    while (environ[n])
        n++;
    char **copy = calloc(n + 1, sizeof *copy);
    if (!copy) return;
    for (size_t i = 0; i < n; i++) {
        if (environ[i] == end) end = environ[i] + strlen(environ[i]) + 1;
        copy[i] = strdup(environ[i]);
    }
    environ = copy;
    /* Callers keep using argv: point it at copies before the area is reused. */
    for (int i = 0; i < argc; i++)
        argv[i] = strdup(argv[i]);
    area = start;
    area_len = (size_t)(end - start);
}

void proctitle_set(const char *title)
{
    prctl(PR_SET_NAME, title, 0, 0, 0);
    if (!area || area_len < 2) return;
    size_t n = strlen(title);
    if (n >= area_len) n = area_len - 1;
    memcpy(area, title, n);
    memset(area + n, 0, area_len - n);
}
