/* safemessenger-cli: options, connecting and pinning the server key, and
 * the two modes (interactive with libedit, --batch with JSON lines). */
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "batch.h"
#include "cli.h"
#include "commands.h"
#include "conn.h"
#include "connect.h"
#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "log.h"
#include "pinning.h"
#include "render.h"
#include "seen.h"
#include "tty.h"

#ifndef SM_VERSION
#define SM_VERSION "0"
#endif

#define DEFAULT_TIMEOUT_MS 15000
#define DEFAULT_WAIT_MS 10000
#define MAX_E_COMMANDS 256

void cli_set_status(cli_app *app, int status)
{
    if (status > app->status)
        app->status = status;
}

void cli_copy_name(char *dst, size_t len, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= len)
        n = 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void cli_forget_password(cli_app *app)
{
    crypto_wipe(app->password, sizeof app->password);
    app->have_password = 0;
}

void cli_clear_login(cli_app *app)
{
    cli_forget_password(app);
    app->username[0] = '\0';
    app->room[0] = '\0';
    EVP_PKEY_free(app->key);
    app->key = NULL;
    seen_close(app->seen);
    app->seen = NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: safemessenger-cli [options] URL\n"
            "       safemessenger-cli --batch [options] URL < commands\n"
            "       safemessenger-cli -e CMD [-e CMD ...] [options] URL\n"
            "URL is ws://host[:port][/path] or wss://...\n"
            "options:\n"
            "  --batch             commands from stdin, one JSON object per line on stdout\n"
            "  -e CMD              run CMD (repeatable; implies --batch)\n"
            "  --config-dir DIR    instead of $XDG_CONFIG_HOME/safemessenger\n"
            "                      (or ~/.config/safemessenger)\n"
            "  --ca-file FILE      wss: trust the CAs in FILE (PEM)\n"
            "  --insecure          wss: skip certificate checks (the key pin still applies)\n"
            "  --accept-new-key    replace the pinned server key if it changed\n"
            "  --reconnect         batch: reconnect when the connection is lost\n"
            "  --no-reconnect      interactive: exit when the connection is lost\n"
            "  --password-file F   read the password from the first line of F\n"
            "                      (or set $SM_PASSWORD; never on the command line)\n"
            "  --wait-events N     batch: after the commands, wait until N events were shown\n"
            "  --wait-action NAME  count only events of this action\n"
            "  --wait-ms T         batch: wait at most T ms (default %d with --wait-events)\n"
            "  --timeout-ms T      wait at most T ms for each reply (default %d)\n"
            "  -h, --help          this text;  --version  the version\n"
            "exit status: 0 ok, 1 a command failed or the server answered an error,\n"
            "2 usage, 3 server key refused, 4 connection failed or lost\n",
            DEFAULT_WAIT_MS, DEFAULT_TIMEOUT_MS);
}

typedef struct options {
    cli_app *app;
    const char *config_dir;
    int reconnect;      /* -1 default, 0 off, 1 on */
    const char *commands[MAX_E_COMMANDS];
    size_t n_commands;
    long wait_events;
    long wait_ms;
} options;

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

enum {
    OPT_BATCH = 256, OPT_CONFIG_DIR, OPT_CA_FILE, OPT_INSECURE, OPT_ACCEPT_NEW_KEY,
    OPT_PASSWORD_FILE, OPT_WAIT_EVENTS, OPT_WAIT_MS, OPT_WAIT_ACTION, OPT_TIMEOUT_MS, OPT_VERSION,
    OPT_RECONNECT, OPT_NO_RECONNECT
};

/* Returns -1 to continue, or the exit status. */
static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longopts[] = {
        {"batch", no_argument, NULL, OPT_BATCH},
        {"config-dir", required_argument, NULL, OPT_CONFIG_DIR},
        {"ca-file", required_argument, NULL, OPT_CA_FILE},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"accept-new-key", no_argument, NULL, OPT_ACCEPT_NEW_KEY},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"wait-events", required_argument, NULL, OPT_WAIT_EVENTS},
        {"wait-ms", required_argument, NULL, OPT_WAIT_MS},
        {"wait-action", required_argument, NULL, OPT_WAIT_ACTION},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"reconnect", no_argument, NULL, OPT_RECONNECT},
        {"no-reconnect", no_argument, NULL, OPT_NO_RECONNECT},
        {NULL, 0, NULL, 0},
    };
    cli_app *app = o->app;
    long v;
    int c;
    while ((c = getopt_long(argc, argv, "he:", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BATCH: app->batch = 1; break;
        case 'e':
            if (o->n_commands == MAX_E_COMMANDS) {
                fprintf(stderr, "safemessenger-cli: at most %d -e commands\n", MAX_E_COMMANDS);
                return CLI_EXIT_USAGE;
            }
            o->commands[o->n_commands++] = optarg;
            app->batch = 1;
            break;
        case OPT_CONFIG_DIR: o->config_dir = optarg; break;
        case OPT_CA_FILE: app->ca_file = optarg; break;
        case OPT_INSECURE: app->insecure = 1; break;
        case OPT_RECONNECT: o->reconnect = 1; break;
        case OPT_NO_RECONNECT: o->reconnect = 0; break;
        case OPT_ACCEPT_NEW_KEY: app->accept_new_key = 1; break;
        case OPT_PASSWORD_FILE: app->password_file = optarg; break;
        case OPT_WAIT_ACTION: app->wait_action = optarg; break;
        case OPT_WAIT_EVENTS:
        case OPT_WAIT_MS:
        case OPT_TIMEOUT_MS:
            if (parse_long(optarg, c == OPT_TIMEOUT_MS ? 1 : 0, 24L * 3600 * 1000, &v) != 0) {
                fprintf(stderr, "safemessenger-cli: bad number: %s\n", optarg);
                return CLI_EXIT_USAGE;
            }
            if (c == OPT_WAIT_EVENTS)
                o->wait_events = v;
            else if (c == OPT_WAIT_MS)
                o->wait_ms = v;
            else
                app->timeout_ms = (int)v;
            break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case OPT_VERSION: printf("safemessenger-cli %s\n", SM_VERSION); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    app->url = argv[optind];
    if (!app->batch && (o->wait_events || o->wait_ms)) {
        fprintf(stderr, "safemessenger-cli: --wait-events and --wait-ms need --batch\n");
        return CLI_EXIT_USAGE;
    }
    /* Interactive users expect the client to come back by itself; a
     * script expects exit status 4 unless it asks otherwise. */
    app->reconnect = o->reconnect >= 0 ? o->reconnect : !app->batch;
    if (o->wait_events && !o->wait_ms)
        o->wait_ms = DEFAULT_WAIT_MS;
    int r = o->config_dir ? snprintf(app->config_dir, sizeof app->config_dir, "%s", o->config_dir) >= 0
                                && strlen(o->config_dir) < sizeof app->config_dir
                          : files_default_config_dir(app->config_dir, sizeof app->config_dir) == 0;
    if (!r || !app->config_dir[0]) {
        fprintf(stderr, "safemessenger-cli: no configuration directory (set HOME or --config-dir)\n");
        return CLI_EXIT_USAGE;
    }
    if (pinning_server_id(app->url, app->server_id, sizeof app->server_id, app->legacy_dir,
                          sizeof app->legacy_dir) != 0) {
        fprintf(stderr, "safemessenger-cli: not a ws:// or wss:// URL: %s\n", app->url);
        return CLI_EXIT_USAGE;
    }
    return -1;
}

typedef struct interactive {
    cli_app *app;
    tty *tty;
} interactive;

static void erase_prompt(void *ctx)
{
    tty_erase_line(ctx);
}

/* Events while a line is being typed: printed above it (tty.c). */
static int pump_cb(void *ctx)
{
    interactive *in = ctx;
    render_on_output(erase_prompt, in->tty);
    int rc = conn_pump(in->app, 0, 0);
    render_on_output(NULL, NULL);
    /* After a reconnection the socket is another one. */
    if (rc == 0)
        tty_set_sock_fd(in->tty, sm_client_fd(in->app->client));
    return rc;
}

static void run_interactive(cli_app *app)
{
    tty *t = NULL;
    if (tty_open("safemessenger-cli", &t) != 0) {
        render_local("error", "tty", NULL, "cannot set up line editing");
        cli_set_status(app, CLI_EXIT_FAILED);
        return;
    }
    render_local("info", "connected", NULL, "connected to %s; /help lists the commands", app->server_id);
    while (!app->quit && !app->closed) {
        char prompt[CLI_ROOM_BUF + CLI_NAME_MAX + 8];
        if (app->username[0] && app->room[0])
            snprintf(prompt, sizeof prompt, "[%s] %s> ", app->room, app->username);
        else if (app->username[0])
            snprintf(prompt, sizeof prompt, "%s> ", app->username);
        else
            snprintf(prompt, sizeof prompt, "> ");
        tty_set_prompt(t, prompt);
        char *line = NULL;
        interactive in = {.app = app, .tty = t};
        int r = tty_read_line(t, sm_client_fd(app->client), pump_cb, &in, &line);
        if (r != 0) {
            fputc('\n', stdout);   /* leave the shell a fresh line */
            break;
        }
        commands_run(app, line);
        free(line);
        conn_pump(app, 0, 0);
    }
    tty_close(t);
}

int main(int argc, char **argv)
{
    cli_app app;
    memset(&app, 0, sizeof app);
    app.timeout_ms = DEFAULT_TIMEOUT_MS;
    options o;
    memset(&o, 0, sizeof o);
    o.app = &app;
    o.reconnect = -1;
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* Writing to a closed TLS connection must not kill us (sm_client.h). */
    signal(SIGPIPE, SIG_IGN);
    if (!app.batch)
        setlocale(LC_CTYPE, "");
    log_set_level(SM_LOG_ERROR);
    render_init(app.batch);

    rc = connect_server(&app, 1);
    if (rc >= 0)
        return rc;
    if (app.batch) {
        batch_options bo = {
            .commands = o.n_commands ? o.commands : NULL,
            .n_commands = o.n_commands,
            .wait_events = (unsigned long)o.wait_events,
            .wait_ms = (int)o.wait_ms,
        };
        batch_run(&app, &bo);
    } else {
        run_interactive(&app);
    }
    cli_clear_login(&app);
    if (app.closed)
        sm_client_free(app.client);
    else
        sm_client_close(app.client, 1000);
    return app.status;
}
