/* safemessenger-server: reads the configuration, opens the key, the
 * database and the plugins, then runs the WebSocket loop until SIGINT or
 * SIGTERM, and shuts down cleanly (sessions closed with 1001, writes
 * finished, database closed). SIGHUP reloads the configuration. */
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
#include "listener.h"
#include "log.h"
#include "plugin_loader.h"
#include "signals.h"
#include "tls_check.h"
#include "transport.h"
#include "web.h"

#ifndef SM_VERSION
#define SM_VERSION "dev"
#endif
/* The build passes <sysconfdir>/safemessenger/safemessenger.conf, where
 * `cmake --install` puts the default configuration. */
#ifndef SM_DEFAULT_CONFIG
#define SM_DEFAULT_CONFIG "/etc/safemessenger/safemessenger.conf"
#endif

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
            SM_DEFAULT_CONFIG);
}

static void reload(void) { (void)core_reload(); }

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
 * certificate and key, the web root), found before the key and the
 * database are touched, and by --check-config. */
static int check_server_section(const server_config *sc, const char *config_file)
{
    char err[1024];
    if (listener_check_address(sc->bind, err, sizeof err) != 0 ||
        (sc->tls_cert && *sc->tls_cert &&
         tls_check_pair(sc->tls_cert, sc->tls_key, err, sizeof err) != 0)) {
        LOG_ERROR("%s: %s", config_file, err);
        return -1;
    }
    return web_check(sc);
}

int main(int argc, char **argv)
{
    const char *config_file = SM_DEFAULT_CONFIG, *db_override = NULL, *port_file = NULL;
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
    if (!check_only) {
        signal(SIGPIPE, SIG_IGN);
        /* Before any thread starts, so that all inherit the mask: the
         * logic thread reads these from a signalfd (signals.h), and one
         * sent while the plugins load waits for the loop. */
        if (signals_block() != 0) {
            fprintf(stderr, "safemessenger-server: cannot block signals: %s\n", strerror(errno));
            return 1;
        }
    }
    core_options o = {
        .config_file = config_file,
        .database = db_override,
        .port = port_override,
        .check = check_server_section,
        .check_only = check_only,
        .open_identity = 1,
        .load_plugins = 1,
        .wake = transport_wake,
    };
    if (core_start(&o) != 0)
        goto out;
    if (check_only) {
        printf("%s: configuration OK\n", config_file);
        status = 0;
        goto out;
    }

    int port = 0;
    if (transport_start(g_core.sc, &port) != 0)
        goto out;
    if (port_file && write_port_file(port_file, port) != 0) {
        LOG_ERROR("cannot write the port file %s", port_file);
        goto out;
    }
    status = transport_run(reload) == 0 ? 0 : 1;
out:
    transport_stop();
    core_stop();
    if (status == 0 && !check_only)
        LOG_INFO("stopped");
    return status;
}
