/* main: intaked's command line (intaked(8)): -c, -o, -t, -s, -V, -h. */
#define _GNU_SOURCE
#include "config.h"
#include "log.h"
#include "master.h"
#include "net.h"
#include "pidfile.h"
#include "proctitle.h"
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef INTAKE_VERSION
#define INTAKE_VERSION "0.1.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: intaked [-c FILE] [-o NAME=VALUE]... [-t] "
            "[-s stop|quit|reload|reopen|upgrade] [-V] [-h]\n"
            "  -c FILE        configuration file (default %s)\n"
            "  -o NAME=VALUE  set a directive after the file is read (repeatable)\n"
            "  -t             check the configuration and exit\n"
            "  -s SIGNAL      signal the running master: stop, quit, reload, reopen, upgrade\n"
            "  -V             print the version\n"
            "  -h             this help\n",
            INTAKE_DEFAULT_CONF);
}

static int send_signal(const struct config *c, const char *what)
{
    static const struct {
        const char *name;
        int sig;
    } map[] = {{"stop", SIGTERM},
               {"quit", SIGQUIT},
               {"reload", SIGHUP},
               {"reopen", SIGUSR1},
               {"upgrade", SIGUSR2}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (strcmp(what, map[i].name) != 0) continue;
        const char *why = "";
        pid_t pid = pidfile_read(c->pid_file, &why);
        if (pid < 0) {
            fprintf(stderr, "intaked: %s: %s\n", c->pid_file, why);
            return 1;
        }
        /* A stale file, or one planted, must not send a signal elsewhere. */
        if (!pidfile_trusted(c->pid_file, pid)) {
            fprintf(stderr, "intaked: %s names pid %d, which is not an intaked master, or the "
                            "file is not root's (or yours) and the master's; nothing signalled "
                            "(a stale or planted pid file? is intaked running?)\n",
                    c->pid_file, (int)pid);
            return 1;
        }
        if (kill(pid, map[i].sig) < 0) {
            fprintf(stderr, "intaked: cannot signal master pid %d (from %s): %s\n", (int)pid,
                    c->pid_file, strerror(errno));
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "intaked: unknown signal \"%s\" (stop, quit, reload, reopen, upgrade)\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *sig = NULL;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    int n_over = 0, test = 0, opt, rc = 1;
    struct config *c = NULL;
    if (!overrides) return 1;
    /* First: it moves argv and environ out of the area the title reuses. */
    proctitle_init(argc, argv);
    while ((opt = getopt(argc, argv, "c:o:ts:Vh")) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 'o':
            overrides[n_over++] = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 's':
            sig = optarg;
            break;
        case 'V':
            printf("intaked %s\n", INTAKE_VERSION);
            rc = 0;
            goto out;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "intaked: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        goto out;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) {
        perror("intaked: getcwd");
        goto out;
    }
    char err[1024];
    c = config_load(conf, overrides, n_over, cwd, err, sizeof err);
    if (!c) {
        fprintf(stderr, "intaked: %s\n", err);
        goto out;
    }
    if (!sig && (config_check_paths(c, err, sizeof err) < 0 ||
                 net_check_names(c, err, sizeof err) < 0)) {
        fprintf(stderr, "intaked: %s\n", err);
        goto out;
    }
    if (!sig && c->daemon && strcmp(c->error_log, "stderr") == 0)
        fprintf(stderr, "intaked: warning: daemon on with error_log stderr: once detached, "
                        "standard error is /dev/null and every log line is lost; set error_log "
                        "to a file or syslog\n");
    if (test) {
        SSL_CTX *tls; /* -t also loads the certificate and key */
        if (tls_server_load(c, &tls, err, sizeof err) < 0) {
            fprintf(stderr, "intaked: %s\n", err);
            goto out;
        }
        SSL_CTX_free(tls);
        printf("configuration ok\n");
        rc = 0;
        goto out;
    }
    if (sig) {
        rc = send_signal(c, sig);
        goto out;
    }
    int lrc = log_open(c->error_log, (enum log_level)c->log_level);
    if (lrc < 0) {
        fprintf(stderr, "intaked: cannot open error_log %s: %s\n", c->error_log, strerror(-lrc));
        goto out;
    }
    log_errors_to_stderr(true); /* until the master is up */
    struct master_args args = {.conf_path = conf,
                               .overrides = overrides,
                               .n_overrides = n_over,
                               .base_dir = cwd,
                               .argv = argv};
    rc = master_run(c, &args);
    c = NULL; /* the master owned it */
out:
    config_free(c);
    free(overrides);
    return rc;
}
