/* safemessenger-admin: manage a SafeMessenger server's users, rooms and
 * sessions, back up its database, run its retention purge.
 *
 * Every command is an admin command of the server (core/admin.h): sent to
 * a running server through its admin socket, or, when no server runs,
 * run by the core started in this process on the database. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "admin_socket.h"
#include "config.h"
#include "log.h"
#include "tool.h"

#ifndef SM_VERSION
#define SM_VERSION "dev"
#endif
/* The server's own default: the installed configuration. In a source
 * tree, pass --config conf/safemessenger.conf. */
#ifndef SM_DEFAULT_CONFIG
#define SM_DEFAULT_CONFIG "/etc/safemessenger/safemessenger.conf"
#endif

enum { EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
"Usage: safemessenger-admin [options] COMMAND [ARGS]\n"
"\n"
"Manages a SafeMessenger server. With the server running, commands go\n"
"through its admin socket (server.admin_socket; by default admin.sock\n"
"beside the database), so `disable` and `kick` end live sessions at once.\n"
"Without a running server, the tool opens the database itself with the\n"
"configured plugins. Run it as the server's user (or root).\n"
"\n"
"Commands:\n"
"  users list                 every account: name, id, created, disabled\n"
"  users show NAME            one account\n"
"  users disable NAME         refuse its logins and close its sessions\n"
"  users enable NAME          allow its logins again\n"
"  users delete NAME          delete the account and what plugins keep for it\n"
"  users passwd NAME          set a new password, read from the terminal\n"
"                             without echo (or stdin, --password-stdin)\n"
"  rooms list                 every room: name, created, users in it\n"
"  rooms delete NAME          delete a room (not a configured one) and its\n"
"                             history; its users leave it\n"
"  sessions list              open sessions: id, user, address, state, since\n"
"  sessions kick ID           close one session\n"
"  sessions kick --user NAME  close every session of a user\n"
"  backup FILE                consistent copy of the database (SQLite online\n"
"                             backup) into FILE, mode 0600, replaced whole\n"
"  purge                      run the message retention purge now\n"
"  import-sqlite FILE         copy a stopped server's SQLite database FILE\n"
"                             into the PostgreSQL database the configuration\n"
"                             names (storage.backend = \"postgresql\"), which\n"
"                             no server may have used yet; never through the\n"
"                             socket\n"
"  commands                   the admin commands the server knows\n"
"\n"
"Options:\n"
"  -c, --config FILE   configuration file (default %s)\n"
"      --json          print the result as JSON (for scripts)\n"
"      --password-stdin  users passwd: read the password from stdin's first line\n"
"      --version       print the version and exit\n"
"  -h, --help          this help\n"
"\n"
"Exit status: 0 done, 1 the command failed (e.g. no such user), 2 usage.\n",
            SM_DEFAULT_CONFIG);
}

typedef struct command {
    const char *group, *verb; /* verb NULL: a single word */
    const char *name;         /* the admin command */
    const char *arg;          /* the one argument's key, or NULL */
} command;

static const command commands[] = {
    {"users", "list", "users.list", NULL},
    {"users", "show", "users.show", "user"},
    {"users", "disable", "users.disable", "user"},
    {"users", "enable", "users.enable", "user"},
    {"users", "delete", "users.delete", "user"},
    {"users", "passwd", "users.passwd", "user"},
    {"rooms", "list", "rooms.list", NULL},
    {"rooms", "delete", "rooms.delete", "room"},
    {"sessions", "list", "sessions.list", NULL},
    {"sessions", "kick", "sessions.kick", "id"},
    {"backup", NULL, "backup", "path"},
    {"purge", NULL, "messages.purge", NULL},
    {"commands", NULL, "commands", NULL},
};

static const command *find_command(int argc, char **argv, int *used)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const command *c = &commands[i];
        if (strcmp(argv[0], c->group) != 0)
            continue;
        if (!c->verb) {
            *used = 1;
            return c;
        }
        if (argc > 1 && strcmp(argv[1], c->verb) == 0) {
            *used = 2;
            return c;
        }
    }
    return NULL;
}

/* backup's FILE is written by the server, whose working directory is not
 * ours: made absolute here. The directory must exist. */
static int absolute_path(const char *path, char *out, size_t len)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int n = slash ? snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path)
                  : snprintf(dir, sizeof dir, ".");
    if (n < 0 || (size_t)n >= sizeof dir || !*base)
        return -1;
    char *real = realpath(*dir ? dir : "/", NULL);
    if (!real)
        return -1;
    n = snprintf(out, len, "%s/%s", strcmp(real, "/") == 0 ? "" : real, base);
    free(real);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int parse_id(const char *s, json_int_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v <= 0)
        return -1;
    *out = (json_int_t)v;
    return 0;
}

/* Builds the request; 0, or 2 (usage) with a message printed. */
static int build_request(const command *c, const char *value, const char *kick_user,
                         int password_stdin, json_t **out)
{
    json_t *args = json_object();
    if (!args)
        return 1;
    if (strcmp(c->name, "sessions.kick") == 0) {
        json_int_t id;
        if (kick_user)
            json_object_set_new(args, "user", json_string(kick_user));
        else if (value && parse_id(value, &id) == 0)
            json_object_set_new(args, "id", json_integer(id));
        else {
            fprintf(stderr, "safemessenger-admin: sessions kick takes a session id "
                            "(sessions list) or --user NAME\n");
            json_decref(args);
            return EXIT_USAGE;
        }
    } else if (strcmp(c->name, "backup") == 0) {
        char path[PATH_MAX];
        if (absolute_path(value, path, sizeof path) != 0) {
            fprintf(stderr, "safemessenger-admin: %s: its directory does not exist\n", value);
            json_decref(args);
            return 1;
        }
        json_object_set_new(args, "path", json_string(path));
    } else if (c->arg) {
        json_t *v = json_string(value);
        if (!v) {
            fprintf(stderr, "safemessenger-admin: %s is not valid UTF-8\n", c->arg);
            json_decref(args);
            return EXIT_USAGE;
        }
        json_object_set_new(args, c->arg, v);
    }
    if (strcmp(c->name, "users.passwd") == 0) {
        char *pw = read_password(password_stdin);
        if (!pw) {
            json_decref(args);
            return 1;
        }
        json_object_set_new(args, "password", json_string(pw));
        explicit_bzero(pw, strlen(pw));
        free(pw);
    }
    *out = json_pack("{s:s, s:o}", "command", c->name, "args", args);
    return *out ? 0 : 1;
}

static int print_reply(const json_t *reply, int as_json)
{
    int ok = json_is_true(json_object_get(reply, "ok"));
    if (!ok) {
        const char *e = json_string_value(json_object_get(reply, "error"));
        if (as_json) {
            char *text = json_dumps(reply, JSON_COMPACT);
            if (text)
                puts(text);
            free(text);
        }
        fprintf(stderr, "safemessenger-admin: %s\n", e ? e : "the command failed");
        return 1;
    }
    const json_t *result = json_object_get(reply, "result");
    if (as_json) {
        char *text = json_dumps(result, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text)
            puts(text);
        free(text);
    } else {
        render_result(stdout, result);
    }
    return 0;
}

/* Root working on a database owned by the server's user takes on that
 * user first: files SQLite creates beside the database (the WAL, a new
 * journal) must stay the server's, or the server could not open them. */
static int become_owner(const struct stat *db, char *err, size_t err_len)
{
    if (geteuid() != 0 || db->st_uid == 0)
        return 0;
    if (setgroups(0, NULL) != 0 || setgid(db->st_gid) != 0 || setuid(db->st_uid) != 0) {
        snprintf(err, err_len, "cannot switch to the database owner's uid %u: %s",
                 (unsigned)db->st_uid, strerror(errno));
        return -1;
    }
    return 0;
}

/* The server's socket if one answers, else the database in this process. */
static int run(const char *config_file, const json_t *request, int as_json)
{
    config *cfg = NULL;
    if (config_load(config_file, &cfg) != 0) {
        fprintf(stderr, "safemessenger-admin: cannot read the configuration %s\n", config_file);
        return 1;
    }
    char path[108], err[600];
    int rc = admin_socket_path(config_server(cfg), path, sizeof path);
    /* Only the server creates the database: one made here would lack the
     * server's identity, and the server would then refuse to start. */
    struct stat st;
    /* On PostgreSQL there is no file to find or own: the core connects. */
    int on_pg = strcmp(config_server(cfg)->backend, "postgresql") == 0;
    int have_db = on_pg || stat(config_server(cfg)->database, &st) == 0;
    if (!have_db)
        snprintf(err, sizeof err, "no database at %s (has the server ever run?)",
                 config_server(cfg)->database);
    config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "safemessenger-admin: server.admin_socket: path too long\n");
        return 1;
    }
    json_t *reply = NULL;
    rc = remote_call(path, request, &reply, err, sizeof err);
    if (rc == 0 && have_db && !on_pg && become_owner(&st, err, sizeof err) != 0)
        have_db = 0;
    if (rc == 0)
        rc = have_db && local_call(config_file, request, &reply, err, sizeof err) == 0 ? 1 : -1;
    if (rc < 0) {
        fprintf(stderr, "safemessenger-admin: %s\n", err);
        return 1;
    }
    int status = print_reply(reply, as_json);
    json_decref(reply);
    return status;
}

int main(int argc, char **argv)
{
    const char *config_file = SM_DEFAULT_CONFIG, *kick_user = NULL;
    int as_json = 0, password_stdin = 0;
    enum { OPT_JSON = 256, OPT_PASSWORD_STDIN, OPT_VERSION, OPT_USER };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, OPT_JSON},
        {"password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN},
        {"user", required_argument, NULL, OPT_USER},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case OPT_JSON: as_json = 1; break;
        case OPT_PASSWORD_STDIN: password_stdin = 1; break;
        case OPT_USER: kick_user = optarg; break;
        case OPT_VERSION: printf("safemessenger-admin %s\n", SM_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    int n_args = argc - optind, used = 0;
    if (n_args > 0 && strcmp(argv[optind], "import-sqlite") == 0) {
        if (n_args != 2) {
            fprintf(stderr, "safemessenger-admin: import-sqlite takes one argument\n");
            return EXIT_USAGE;
        }
        log_set_level(SM_LOG_WARNING);
        return import_sqlite(config_file, argv[optind + 1], as_json);
    }
    const command *c = n_args > 0 ? find_command(n_args, argv + optind, &used) : NULL;
    if (!c) {
        if (n_args > 0)
            fprintf(stderr, "safemessenger-admin: unknown command '%s%s%s'\n", argv[optind],
                    n_args > 1 ? " " : "", n_args > 1 ? argv[optind + 1] : "");
        usage(stderr);
        return EXIT_USAGE;
    }
    int want = (c->arg && !(kick_user && strcmp(c->name, "sessions.kick") == 0)) ? 1 : 0;
    if (n_args - used != want || (kick_user && strcmp(c->name, "sessions.kick") != 0)) {
        fprintf(stderr, "safemessenger-admin: %s%s%s takes %s\n", c->group, c->verb ? " " : "",
                c->verb ? c->verb : "", want ? "one argument" : "no argument");
        return EXIT_USAGE;
    }
    json_t *request = NULL;
    int rc = build_request(c, want ? argv[optind + used] : NULL, kick_user, password_stdin,
                           &request);
    if (rc != 0)
        return rc;
    /* Start-up lines of the in-process core would only be noise. */
    log_set_level(SM_LOG_WARNING);
    rc = run(config_file, request, as_json);
    admin_scrub(request);
    json_decref(request);
    return rc;
}
