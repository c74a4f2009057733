/* config: the intaked configuration file (intake.conf(5)).
 * config_load parses a file plus -o overrides into a fresh struct config, with
 * every directive validated; errors come back as "file:line: message". Paths
 * are made absolute against the start directory, so chdir never changes them. */
#ifndef INTAKE_CONFIG_H
#define INTAKE_CONFIG_H

#include "token.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_LIST 64
#define CONFIG_MAX_SECRETS 64
#define CONFIG_SECRET_FILE_MAX (64 * 1024)

enum listen_kind { LISTEN_WS, LISTEN_TCP };

struct listen_addr {
    enum listen_kind kind;
    bool tls;
    bool is_unix;
    char text[256]; /* as written: "127.0.0.1:9090", "[::1]:80", "unix:/run/x.sock" */
    char host[128]; /* without brackets; empty = any */
    char port[8];
    char path[108]; /* unix socket path, absolute */
};

/* The secrets of auth_secret_file: keys[] point into buf. */
struct config_secrets {
    unsigned char *buf;
    size_t buf_len;
    struct token_key keys[CONFIG_MAX_SECRETS];
    int n;
};

/* builtin: intake-scand on scanner_socket; pool: the addresses given;
 * off: no scan. */
enum scanner_mode { SCANNER_BUILTIN, SCANNER_POOL, SCANNER_OFF };

#define CONFIG_MAX_SCANNERS 8

/* One scanner address: unix:/path (FILDES) or tcp:HOST:PORT (INSTREAM). */
struct scanner_addr {
    bool tcp;
    char text[128]; /* "unix:/abs/path" or "tcp:host:port": logs and metrics */
    char path[108]; /* unix: absolute */
    char host[100]; /* tcp: without brackets */
    char port[8];
};
enum scan_fail { SCAN_FAIL_REJECT, SCAN_FAIL_ACCEPT };
enum on_infected { ON_INFECTED_QUARANTINE, ON_INFECTED_DELETE };

struct config {
    char *file;  /* the file read, absolute */
    int workers; /* 0 = auto */
    struct listen_addr listen[CONFIG_MAX_LISTEN];
    char listen_at[CONFIG_MAX_LISTEN][320]; /* where each was set: "file:line" */
    int n_listen;
    char *tls_certificate, *tls_certificate_key;
    char *user;
    bool daemon;
    char *pid_file;
    char *error_log;  /* "stderr", "syslog" or an absolute path */
    int log_level;    /* enum log_level */
    char *access_log; /* NULL = off */
    char *spool_dir, *accept_dir, *quarantine_dir;
    uint64_t max_file_size, min_free_space;
    uint64_t resume_timeout_ms;
    enum scanner_mode scanner;
    /* The addresses scans go to, round-robin: for builtin, scanner_socket
     * (filled in by config_load); none when off. */
    struct scanner_addr scanners[CONFIG_MAX_SCANNERS];
    int n_scanners;
    char *scanner_socket, *signature_dir;
    uint64_t scan_timeout_ms;
    enum scan_fail scan_fail;
    enum on_infected on_infected;
    int max_connections;
    uint64_t header_timeout_ms, idle_timeout_ms, shutdown_timeout_ms;
    char *allowed_origins[CONFIG_MAX_LIST];
    int n_allowed_origins;
    bool allow_any_origin;  /* "*" */
    bool allow_same_origin; /* "same" (the default) */
    char *trusted_proxies[CONFIG_MAX_LIST];
    int n_trusted_proxies;
    char *auth_secret_file;
    struct config_secrets auth; /* read by config_load: workers never open the file */
    bool ws_echo;
    /* Delivery (intake.conf(5), "Delivery"). accept_dir is NULL with "accept_dir off". */
    char **accept_hook; /* PROGRAM ARG... NULL-terminated; NULL: none */
    int n_accept_hook;
    uint64_t hook_timeout_ms;
    char *publish_urls;    /* "nats://h:p,nats://h:p"; NULL: publish off */
    char *publish_subject;
    char *node_name; /* default: the host name */
    /* Where these were set ("file:line", "-o ...", or the file for a
     * default): errors found only when the files they name are opened
     * point there. */
    char at_tls_certificate[320], at_tls_certificate_key[320];
    char at_access_log[320], at_signature_dir[320], at_error_log[320], at_accept_hook[320];
};

/* Loads `path` (NULL = the compiled-in default) and applies the overrides
 * ("NAME=VALUE" strings). Returns a config to free with config_free, or NULL
 * with a message in err ("file:line: ..."). base_dir resolves relative paths. */
struct config *config_load(const char *path, char *const *overrides, int n_overrides,
                           const char *base_dir, char *err, size_t errlen);
void config_free(struct config *c);
/* What the configuration names that only opening can check, as -t, start
 * and HUP must: access_log can be opened for appending (it is created),
 * with the builtin scanner, signature_dir is a readable directory, and the
 * accept hook's program exists and is executable (found through PATH when
 * its name has no '/').
 * 0, or -1 with a message in err ("file:line: ..."). */
int config_check_paths(const struct config *c, char *err, size_t errlen);

/* Value parsers, exposed for the CLI and the unit tests. 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);    /* 10, 4K, 1M, 1G */
int config_parse_duration(const char *s, uint64_t *ms); /* 10, 10s, 500ms, 5m, 1h */
int config_parse_listen(const char *s, struct listen_addr *out, const char **why);
/* "unix:/path" (made absolute against base_dir) or "tcp:HOST:PORT". */
int config_parse_scanner(const char *s, const char *base_dir, struct scanner_addr *out,
                         const char **why);

/* Reads a secret file: one secret per line, the line's bytes (without "\n",
 * or "\r\n") are the key; empty lines are skipped; each secret has at least
 * TOKEN_SECRET_MIN bytes; the file is regular, at most CONFIG_SECRET_FILE_MAX
 * bytes, and gives group and others no access at all. 0, or -1 with a reason
 * in why (never a secret's bytes). Free with config_secrets_free (which wipes). */
int config_read_secrets(const char *path, struct config_secrets *out, char *why, size_t whylen);
void config_secrets_free(struct config_secrets *s);

/* Splits one configuration line into at most `max` tokens (whitespace
 * separated, "double quotes" group, # starts a comment). Tokens are written
 * into `scratch` (NUL-terminated). Returns the count, or -1 with *why set. */
int config_tokenize(const char *line, size_t len, char *scratch, size_t scratch_len, char **tokens,
                    int max, const char **why);

#ifndef INTAKE_DEFAULT_CONF
#define INTAKE_DEFAULT_CONF "etc/intake.conf"
#endif

#endif
