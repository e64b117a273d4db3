/* safemessenger-cli: the state one run of the client shares between its
 * modules (main.c options and modes, commands.c slash commands, account.c
 * register and login, privmsg.c end-to-end pipelines, conn.c calls and the
 * incoming stream, batch.c and tty.c the two input modes, render.c output).
 * One connection, one login at a time, used from one thread. */
#ifndef SM_CLI_H
#define SM_CLI_H

#include <stddef.h>

#include "sm_client.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct seen_store seen_store;

/* Exit statuses (docs/CLI.md). A run keeps the highest one it met. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,        /* the server answered an error, or a command failed */
    CLI_EXIT_USAGE = 2,         /* bad options or a malformed command */
    CLI_EXIT_PIN_REFUSED = 3,   /* the server's key differs from the pinned one */
    CLI_EXIT_CONNECTION = 4     /* could not connect, or the connection was lost */
};

#define CLI_PATH_MAX 4096
#define CLI_NAME_MAX 32         /* usernames and room names (PROTOCOL.md 7) */
#define CLI_ROOM_BUF 128        /* room names as the server echoes them */
#define CLI_SERVER_ID_MAX 300   /* "host:port" */
#define CLI_PASSWORD_MIN 8      /* PROTOCOL.md 7: passwords are 8-1024 bytes */
#define CLI_PASSWORD_MAX 1024
#define CLI_FINGERPRINT_BUF 80  /* "sha256:" + 64 hex + NUL (CRYPTO_FINGERPRINT_LEN) */

typedef struct cli_app {
    /* options */
    const char *url;
    char config_dir[CLI_PATH_MAX];
    const char *password_file;
    int batch;                  /* JSON lines on stdout, no prompts */
    int accept_new_key;
    int timeout_ms;             /* per server call */
    const char *ca_file;
    int insecure;
    int reconnect;              /* reconnect when the connection is lost */

    /* the server */
    char server_id[CLI_SERVER_ID_MAX];   /* known_servers key: "host:port" */
    char legacy_dir[CLI_SERVER_ID_MAX];  /* the same as a file name (old per-server dirs) */
    char server_dir[CLI_SERVER_ID_MAX];  /* per-server dirs: the fingerprint as a file name */
    char fingerprint[CLI_FINGERPRINT_BUF];  /* the pinned key of this run's server */
    sm_client *client;
    int closed;                 /* the connection is gone */
    int reconnects;             /* successful reconnections so far */
    int reconnecting;           /* inside the reconnection loop */

    /* the login */
    char username[CLI_NAME_MAX + 1];     /* as registered; "" when logged out */
    char room[CLI_ROOM_BUF];             /* current room; "" when none */
    EVP_PKEY *key;              /* our private key for this login, NULL when none */
    seen_store *seen;           /* e2e ids already shown (replay guard) */
    /* The login's password, kept in memory only while the program runs
     * so that a reconnection can log in again (wiped at logout and exit). */
    char password[CLI_PASSWORD_MAX + 1];
    int have_password;

    int status;                 /* exit status so far */
    int quit;                   /* /quit was given */
    unsigned long events_seen;  /* events rendered (PING excluded) */
    const char *wait_action;    /* count only events of this action (NULL = all) */
    unsigned long events_counted;
} cli_app;

/* Raises the run's exit status to `status` if that is higher. */
void cli_set_status(cli_app *app, int status);

/* Copies a name the server sent (user, room) into our state; one that does
 * not fit is not a valid name (PROTOCOL.md 7) and is dropped rather than
 * truncated. src may be NULL (empty). */
void cli_copy_name(char *dst, size_t len, const char *src);

/* Forgets the remembered password (wiping it). */
void cli_forget_password(cli_app *app);

/* Ends the login state (after logout, or a failed register/login, which
 * also ends the old login per PROTOCOL.md 7). */
void cli_clear_login(cli_app *app);

#endif
