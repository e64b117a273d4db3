/* safemessenger-server: reads the configuration, opens the key, the
 * database and the plugins, then runs the WebSocket loop until SIGINT or
 * SIGTERM, and shuts down cleanly (sessions closed with 1001, writes
 * finished, database closed). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "crypto.h"
#include "identity.h"
#include "listener.h"
#include "handshake.h"
#include "log.h"
#include "plugin_loader.h"
#include "tls_check.h"
#include "transport.h"

#ifndef SM_VERSION
#define SM_VERSION "dev"
#endif
#define DEFAULT_CONFIG "/etc/safemessenger/safemessenger.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: safemessenger-server [options]\n"
            "  -c, --config FILE     configuration file (default %s)\n"
            "  -p, --port PORT       listen on PORT (overrides server.port; 0 = any free port)\n"
            "      --db PATH         database file (overrides storage.database)\n"
            "      --port-file FILE  write the bound port to FILE once listening\n"
            "      --check-config    check the configuration and the plugins, then exit\n"
            "      --version         print the version and exit\n"
            "  -h, --help            this help\n",
            DEFAULT_CONFIG);
}

static void on_signal(int sig)
{
    (void)sig;
    transport_request_stop();
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%d\n", port) > 0;
    ok = (fclose(f) == 0) && ok;
    /* Renamed into place so a reader never sees a half-written file. */
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int parse_port(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

/* What the transport would refuse at start (the listening address, the TLS
 * certificate and key), found before the key and the database are touched,
 * and by --check-config. */
static int check_server_section(const server_config *sc, const char *config_file)
{
    char err[1024];
    if (listener_check_address(sc->bind, err, sizeof err) != 0 ||
        (sc->tls_cert && *sc->tls_cert &&
         tls_check_pair(sc->tls_cert, sc->tls_key, err, sizeof err) != 0)) {
        LOG_ERROR("%s: %s", config_file, err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *config_file = DEFAULT_CONFIG, *db_override = NULL, *port_file = NULL;
    int port_override = -1, check_only = 0;
    enum { OPT_DB = 256, OPT_PORT_FILE, OPT_CHECK, OPT_VERSION };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"db", required_argument, NULL, OPT_DB},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:p:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case 'p':
            if (parse_port(optarg, &port_override) != 0) {
                fprintf(stderr, "safemessenger-server: invalid port '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_DB: db_override = optarg; break;
        case OPT_PORT_FILE: port_file = optarg; break;
        case OPT_CHECK: check_only = 1; break;
        case OPT_VERSION: printf("safemessenger-server %s (plugin ABI %u)\n", SM_VERSION,
                                 SM_PLUGIN_ABI_VERSION);
            return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "safemessenger-server: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    int status = 1;
    if (core_init() != 0) {
        LOG_ERROR("out of memory");
        return 1;
    }
    if (config_load(config_file, &g_core.cfg) != 0) {
        LOG_ERROR("%s: configuration refused", config_file);
        goto out;
    }
    g_core.sc = config_server(g_core.cfg);
    log_set_level(g_core.sc->log_level);
    if (port_override >= 0)
        g_core.sc->port = port_override;
    if (db_override)
        g_core.sc->database = db_override;

    int server_ok = check_server_section(g_core.sc, config_file) == 0;
    if (check_only) {
        /* Plugins are loaded and initialised too, so their sections are
         * checked; nothing is opened or listened on. */
        /* Unknown keys are looked for only once every plugin's init ran to
         * the end: a plugin that failed half-way read only some of its own. */
        if (plugin_load_all(g_core.sc->plugin_dir, g_core.sc->plugins,
                            g_core.sc->n_plugins) != 0 ||
            config_check_unused(g_core.cfg, g_core.sc->plugins, g_core.sc->n_plugins) != 0 ||
            !server_ok) {
            LOG_ERROR("%s: configuration refused", config_file);
            goto out;
        }
        printf("%s: configuration OK\n", config_file);
        status = 0;
        goto out;
    }
    if (!server_ok)
        goto out;

    signal(SIGPIPE, SIG_IGN);
    if (storage_open(g_core.sc->database, g_core.sc->synchronous, &g_core.db) != 0) {
        LOG_ERROR("cannot open the database %s", g_core.sc->database);
        goto out;
    }
    if (identity_open(g_core.sc->key_file, g_core.sc->key_bits, g_core.db) != 0)
        goto out;
    /* Started from the loop thread: workers run worker_nice levels below it. */
    if (workers_start_nice((size_t)g_core.sc->workers, g_core.sc->worker_nice, transport_wake,
                           NULL, &g_core.pool) != 0) {
        LOG_ERROR("cannot start the worker pool");
        goto out;
    }
    if (plugin_load_all(g_core.sc->plugin_dir, g_core.sc->plugins, g_core.sc->n_plugins) != 0 ||
        config_check_unused(g_core.cfg, g_core.sc->plugins, g_core.sc->n_plugins) != 0) {
        LOG_ERROR("%s: configuration refused", config_file);
        goto out;
    }
    if (plugin_start_all() != 0)
        goto out;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int port = 0;
    if (transport_start(g_core.sc, &port) != 0)
        goto out;
    if (port_file && write_port_file(port_file, port) != 0) {
        LOG_ERROR("cannot write the port file %s", port_file);
        goto out;
    }
    transport_run();
    status = 0;
out:
    transport_stop();
    if (g_core.pool) {
        workers_stop(g_core.pool);
        g_core.pool = NULL;
        handshake_log_stats();
    }
    plugin_unload_all();
    if (g_core.db) {
        storage_close(g_core.db);
        g_core.db = NULL;
    }
    core_cleanup();
    crypto_pkey_free(g_core.server_key);
    free(g_core.server_public_pem);
    config_free(g_core.cfg);
    if (status == 0 && !check_only)
        LOG_INFO("stopped");
    return status;
}
