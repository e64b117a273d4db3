/* Configuration: one libconfig file, as docs/OPERATIONS.md describes it.
 * The core's own sections (server, storage, cluster, plugins, limits, log,
 * web, metrics) are read
 * and checked here into server_config; every other top-level section belongs
 * to the plugin of that name, which reads it through the getters below
 * (the host table's config_* services). Errors name the file and line. */
#ifndef SM_CORE_CONFIG_H
#define SM_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "safemessenger/plugin.h"
#include "log.h"

#define CONFIG_MAX_PROXIES 32
#define CONFIG_MAX_ORIGINS 32
#define CONFIG_MAX_PLUGINS 64
#define CONFIG_MAX_METRICS_ALLOW 32
#define CONFIG_MAX_IO_THREADS 64
/* server.io_threads left out: one per online CPU, at most this many
 * (docs/OPERATIONS.md). */
#define CONFIG_DEFAULT_IO_THREADS_CAP 8

typedef struct server_config {
    /* server */
    const char *bind;               /* "0.0.0.0" */
    int port;                       /* 8765; 0 = any free port */
    const char *key_file;           /* "data/server_key.pem" */
    int key_bits;                   /* 2048 (2048..8192) */
    size_t max_message_bytes;       /* 65536 (4096..16 MiB) */
    const char *tls_cert;           /* "" = no TLS */
    const char *tls_key;
    const char *allowed_origins[CONFIG_MAX_ORIGINS]; /* empty = any */
    size_t n_allowed_origins;
    /* Peers whose X-Forwarded-For is believed (IP literals); empty = none. */
    const char *trusted_proxies[CONFIG_MAX_PROXIES];
    size_t n_trusted_proxies;
    int handshake_timeout;          /* 10 seconds (PROTOCOL.md section 1) */
    int workers;                    /* worker threads, 2 (1..64) */
    int worker_nice;                /* their nice levels below the loop, 19 (0..19) */
    int io_threads;                 /* I/O threads owning the connections (1..64);
                                       config_default_io_threads() when not set */
    const char *admin_socket;       /* "" = "admin.sock" beside the database */
    int coalesce_writes;            /* 1: queued frames leave in one write (wsframe.h) */
    /* storage */
    const char *backend;            /* "sqlite" (default) or "postgresql" */
    const char *postgresql;         /* libpq connection string; "" = not set. May hold a
                                       password: never logged */
    double postgresql_timeout;      /* 5 s: one round trip's deadline (0.1..300) */
    const char *database;           /* "data/safemessenger.db" */
    const char *synchronous;        /* "normal" (off|normal|full|extra) */
    /* cluster (issue 14): cluster mode is node and redis both set */
    const char *cluster_node;       /* this node's id, 1..64 of [A-Za-z0-9_.-]; "" = not in
                                       a cluster */
    const char *cluster_redis;      /* a Redis URL (redis_link_parse_url's forms); "" = not
                                       set. May hold a password: never logged */
    const char *cluster_prefix;     /* key and channel prefix, 0..64 of [A-Za-z0-9_.:-],
                                       "sm:"; the same on every node */
    /* plugins */
    const char *plugin_dir;         /* build-time default */
    const char *plugins[CONFIG_MAX_PLUGINS];
    size_t n_plugins;
    /* limits */
    double commands_per_second;     /* 20 */
    int command_burst;              /* 40 */
    size_t send_queue_bytes;        /* 1 MiB */
    size_t send_queue_messages;     /* 1000 */
    int send_timeout;               /* 30 seconds (1..3600) without output taken: closed */
    int max_sessions;               /* 19000 */
    size_t handshake_queue;         /* 256 RSA jobs waiting (1..10000) */
    int max_sessions_per_address;   /* 64 open connections per peer address */
    int handshakes_per_address;     /* 60 key_exchange attempts per address per minute */
    int login_deadline;             /* 60 seconds from open to first login; 0 = off */
    double bytes_per_second;        /* 65536 received bytes per session */
    size_t bytes_burst;             /* 0 = max(262144, max_message_bytes) */
    double room_fanout_bytes_per_second; /* 8 MiB: payload bytes x members, per topic */
    size_t room_fanout_burst;       /* 32 MiB */
    /* log */
    sm_log_level log_level;         /* info */
    sm_log_format log_format;       /* text */
    /* web: the browser client's static files, served at / */
    int web_enabled;                /* 1 */
    const char *web_root;           /* build-time default: <datadir>/safemessenger/web */
    int web_root_set;               /* web.root was written in the file: a missing
                                       directory is then an error, not a warning */
    /* metrics: TCP peers answered on /metrics (addresses or networks);
     * ["127.0.0.1", "::1"]; empty = nobody */
    const char *metrics_allow[CONFIG_MAX_METRICS_ALLOW];
    size_t n_metrics_allow;
} server_config;

typedef struct config config;

/* Loads and checks the file. path NULL gives the built-in defaults (no
 * file). On error logs "<file>:<line>: <what>" for each problem and
 * returns -1. Unknown keys in the core's sections are errors. Relative
 * paths (key_file, database, plugins.dir, TLS files, web.root) are resolved against
 * the directory of the file. */
int config_load(const char *path, config **out);
void config_free(config *cfg);

/* The default of server.io_threads for a machine with online_cpus CPUs
 * online (sysconf(_SC_NPROCESSORS_ONLN), -1 when unknown): that many, at
 * least 1 and at most CONFIG_DEFAULT_IO_THREADS_CAP. */
int config_default_io_threads(long online_cpus);

/* The core's settings; main may change fields after load (command-line
 * overrides). Strings point into the config and live as long as it. */
server_config *config_server(config *cfg);
const char *config_path(const config *cfg);
/* The file it was read from; NULL for the built-in defaults. */
const char *config_file(const config *cfg);
/* The file and line of plugins.load[index]; line 0 (file: the config's
 * path, or NULL without a file) when it comes from the defaults. */
int config_plugin_line(config *cfg, size_t index, const char **file);

/* Plugin subtree getters: semantics as the sm_host config_* entries.
 * section is the plugin name; key may be a dotted path inside it. */
int config_section_int(config *cfg, const char *section, const char *key,
                       int64_t min, int64_t max, int64_t *out);
int config_section_double(config *cfg, const char *section, const char *key,
                          double min, double max, double *out);
int config_section_bool(config *cfg, const char *section, const char *key, int *out);
int config_section_string(config *cfg, const char *section, const char *key, const char **out);
int config_section_string_list(config *cfg, const char *section, const char *key,
                               const char **out, size_t max);

/* Reports, as errors with the closest known name suggested, keys of a
 * plugin's section that no getter read (typos), and top-level sections
 * that are neither the core's nor in `known` (names of loaded plugins).
 * Call after every plugin's init. Returns 0, or -1 if anything was
 * reported. */
int config_check_unused(config *cfg, const char *const *known, size_t n_known);
/* The same, but only the sections named in `checked` (plugins that read
 * their settings from this config) have their keys checked; sections of
 * other `known` plugins are left alone (a reload: plugins without a reload
 * callback never read the new file). */
int config_check_sections(config *cfg, const char *const *known, size_t n_known,
                          const char *const *checked, size_t n_checked);

#endif
