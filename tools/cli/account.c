/* Accounts: /register and /login, with the password (never from the
 * command line) and the user's key pair under <config>/keys/<server>/. */
#include "account.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "conn.h"
#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "privmsg.h"
#include "render.h"
#include "seen.h"
#include "tty.h"

#define PASSWORD_MAX CLI_PASSWORD_MAX
#define PASSWORD_FILE_MAX 4096
#define PASSWORD_RULE "passwords are 8 to 1024 bytes"

/* Renders the reply; an error sets the exit status. 0 for a response. */
static int finish(cli_app *app, const char *command, const sm_message *reply)
{
    render_reply(command, reply, NULL);
    if (!conn_is_error(reply))
        return 0;
    cli_set_status(app, CLI_EXIT_FAILED);
    return -1;
}

/* The password: --password-file, else $SM_PASSWORD, else (interactive) a
 * prompt without echo, twice when confirming. Never from the command line. */
static int get_password(cli_app *app, const char *user, int confirm, char *buf, size_t len)
{
    if (app->password_file) {
        char *data = NULL;
        size_t n = 0;
        if (files_read(app->password_file, PASSWORD_FILE_MAX, &data, &n) != 0) {
            render_local("error", "password_file", NULL, "cannot read the password file %s",
                         app->password_file);
            return -1;
        }
        size_t line = strcspn(data, "\r\n");
        int ok = line < len;
        if (ok) {
            memcpy(buf, data, line);
            buf[line] = '\0';
        }
        crypto_wipe(data, n);
        free(data);
        if (!ok)
            render_local("error", "password_file", NULL, "the password in %s is too long",
                         app->password_file);
        return ok ? 0 : -1;
    }
    const char *env = getenv("SM_PASSWORD");
    if (env) {
        if (strlen(env) >= len) {
            render_local("error", "password_env", NULL, "SM_PASSWORD is too long");
            return -1;
        }
        memcpy(buf, env, strlen(env) + 1);
        return 0;
    }
    if (app->batch) {
        render_local("error", "no_password", NULL,
                     "batch mode reads the password from $SM_PASSWORD or --password-file");
        return -1;
    }
    char prompt[96];
    snprintf(prompt, sizeof prompt, "Password for %s: ", user);
    if (tty_read_password(prompt, buf, len) != 0) {
        render_local("error", "no_password", NULL, "no password read");
        return -1;
    }
    if (confirm) {
        char again[PASSWORD_MAX + 2];
        int same = tty_read_password("Repeat it: ", again, sizeof again) == 0 && strcmp(again, buf) == 0;
        crypto_wipe(again, sizeof again);
        if (!same) {
            crypto_wipe(buf, len);
            render_local("error", "password_mismatch", NULL, "the passwords differ");
            return -1;
        }
    }
    return 0;
}

/* The server's rule, checked before anything is sent, with the rule in
 * the message (a login with a malformed password only gets 1001). */
static int get_checked_password(cli_app *app, const char *user, int confirm, char *buf, size_t len)
{
    if (get_password(app, user, confirm, buf, len) != 0)
        return -1;
    size_t n = strlen(buf);
    if (n >= CLI_PASSWORD_MIN && n <= CLI_PASSWORD_MAX)
        return 0;
    crypto_wipe(buf, len);
    json_t *f = json_pack("{s:I,s:i,s:i}", "length", (json_int_t)n, "min", CLI_PASSWORD_MIN, "max",
                          CLI_PASSWORD_MAX);
    render_local("error", "bad_password", f, "the password is %zu bytes long: %s", n, PASSWORD_RULE);
    json_decref(f);
    return -1;
}

/* <config>/keys/<server>/<user>.pem and .pub.pem */
int account_key_paths(cli_app *app, const char *user, char *priv, size_t priv_len, char *pub,
                     size_t pub_len)
{
    char lower[CLI_NAME_MAX + 1], dir[CLI_PATH_MAX], name[CLI_NAME_MAX + 16];
    if (files_lower(user, lower, sizeof lower) != 0
        || files_join(dir, sizeof dir, app->config_dir, "keys", app->server_dir) != 0)
        return -1;
    int n = snprintf(name, sizeof name, "%s.pem", lower);
    if (n < 0 || (size_t)n >= sizeof name || files_join(priv, priv_len, dir, name, NULL) != 0)
        return -1;
    n = snprintf(name, sizeof name, "%s.pub.pem", lower);
    if (n < 0 || (size_t)n >= sizeof name || files_join(pub, pub_len, dir, name, NULL) != 0)
        return -1;
    return 0;
}

static void open_seen(cli_app *app)
{
    char lower[CLI_NAME_MAX + 1], dir[CLI_PATH_MAX], path[CLI_PATH_MAX] = "";
    if (files_lower(app->username, lower, sizeof lower) != 0
        || files_join(dir, sizeof dir, app->config_dir, "seen", app->server_dir) != 0
        || files_join(path, sizeof path, dir, lower, NULL) != 0 || files_mkdirs(dir) != 0
        || seen_open(path, SEEN_LIMIT, &app->seen) != 0)
        render_local("warning", "seen_unavailable", NULL,
                     "cannot open the replay list %s: replayed messages will not be detected",
                     path);
}

/* The session is now logged in as the reply says. */
static void start_login(cli_app *app, const sm_message *reply)
{
    const char *name = json_string_value(json_object_get(reply->payload, "username"));
    const char *room = json_string_value(json_object_get(reply->payload, "assigned_room"));
    cli_copy_name(app->username, sizeof app->username, name && files_name_ok(name) ? name : NULL);
    cli_copy_name(app->room, sizeof app->room, room);
    if (app->username[0])
        open_seen(app);
}

/* Sends register/login with the password, wiping every copy we made. */
static int call_with_password(cli_app *app, const char *action, json_t *payload, char *password,
                              sm_message **reply)
{
    json_t *pw = json_string(password);
    /* Kept for logging in again after a reconnection (cli.h); the caller
     * marks it valid once the server accepted it. */
    size_t plen = strlen(password);
    cli_forget_password(app);
    if (plen < sizeof app->password)
        memcpy(app->password, password, plen + 1);
    crypto_wipe(password, plen);
    if (!pw || json_object_set_new(payload, "password", pw) != 0) {
        render_local("error", "password_utf8", NULL, "the password is not valid UTF-8");
        return -1;
    }
    int rc = conn_call(app, action, payload, reply);
    /* jansson does not wipe freed strings: do it for the one we made. */
    crypto_wipe((char *)json_string_value(pw), json_string_length(pw));
    return rc;
}

int account_register(cli_app *app, const char *command, const char *word)
{
    if (!files_name_ok(word)) {
        render_local("error", "usage", NULL, "invalid username %s: 3-32 of A-Z a-z 0-9 _ . -", word);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    char priv[CLI_PATH_MAX], pub[CLI_PATH_MAX], why[CLI_PATH_MAX + 128];
    char password[PASSWORD_MAX + 2] = "";
    EVP_PKEY *key = NULL;
    char *pem = NULL;
    sm_message *reply = NULL;
    json_t *payload = NULL;
    int rc = -1, fresh = 0;
    if (account_key_paths(app, word, priv, sizeof priv, pub, sizeof pub) != 0 || files_mkdirs_parent(priv) != 0) {
        render_local("error", "key_dir", NULL, "cannot create the key directory under %s", app->config_dir);
        goto fail_status;
    }
    /* The password first: typing it while a key is generated would echo
     * it on the screen (the terminal is in normal mode then). */
    if (get_checked_password(app, word, 1, password, sizeof password) != 0)
        goto fail_status;
    int r = e2e_key_load(priv, &key, why, sizeof why);
    if (r < 0) {
        render_local("error", "key_unreadable", NULL, "%s", why);
        goto fail_status;
    }
    if (r == 1) {
        if (!app->batch)
            render_local("info", "keygen", NULL, "generating a %d-bit key pair...", E2E_NEW_KEY_BITS);
        if (e2e_key_generate(E2E_NEW_KEY_BITS, &key) != 0) {
            render_local("error", "keygen_failed", NULL, "cannot generate an RSA key");
            goto fail_status;
        }
        fresh = 1;
    }
    /* Appendix A: only RSA keys of at least 2048 bits; check before the
     * key leaves this machine, whatever the key file held. */
    if (e2e_key_usable(key, why, sizeof why) != 0) {
        render_local("error", "key_refused", NULL, "refusing to register the key in %s: %s", priv, why);
        goto fail_status;
    }
    if (crypto_pubkey_pem(key, &pem) != 0)
        goto fail_status;
    payload = json_pack("{s:s,s:s}", "username", word, "public_key", pem);
    if (!payload)
        goto fail_status;
    cli_clear_login(app);   /* PROTOCOL.md 7: register ends any old login */
    if (call_with_password(app, "register", payload, password, &reply) != 0)
        goto out;
    if (finish(app, command, reply) != 0)
        goto out;
    start_login(app, reply);
    app->have_password = 1;
    char fp[CRYPTO_FINGERPRINT_LEN] = "";
    (void)crypto_fingerprint(key, fp);
    if (fresh) {
        if (e2e_key_save(priv, pub, key) != 0) {
            const char *lines[] = {"WARNING: REGISTERED, BUT THE NEW PRIVATE KEY COULD NOT BE SAVED!",
                                   priv, "Messages encrypted to this account cannot be read later."};
            render_loud("key_not_saved", NULL, lines, 3);
            cli_set_status(app, CLI_EXIT_FAILED);
        } else {
            json_t *f = json_pack("{s:s,s:s}", "path", priv, "fingerprint", fp);
            render_local("info", "key_created", f, "new %d-bit key pair in %s (fingerprint %s)",
                         E2E_NEW_KEY_BITS, priv, fp);
            json_decref(f);
        }
    } else {
        json_t *f = json_pack("{s:s,s:s}", "path", priv, "fingerprint", fp);
        render_local("info", "key_reused", f, "registered the existing key %s (fingerprint %s)", priv, fp);
        json_decref(f);
    }
    app->key = key;
    key = NULL;
    rc = 0;
    goto out;
fail_status:
    cli_set_status(app, CLI_EXIT_FAILED);
out:
    crypto_wipe(password, sizeof password);
    if (!app->username[0])
        cli_forget_password(app);
    EVP_PKEY_free(key);
    free(pem);
    json_decref(payload);
    sm_message_free(reply);
    return rc;
}

int account_login(cli_app *app, const char *command, const char *word)
{
    if (!files_name_ok(word)) {
        render_local("error", "usage", NULL, "invalid username %s: 3-32 of A-Z a-z 0-9 _ . -", word);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    char password[PASSWORD_MAX + 2];
    if (get_checked_password(app, word, 0, password, sizeof password) != 0) {
        cli_set_status(app, CLI_EXIT_FAILED);
        return -1;
    }
    json_t *payload = json_pack("{s:s}", "username", word);
    if (!payload) {
        crypto_wipe(password, sizeof password);
        return -1;
    }
    cli_clear_login(app);   /* PROTOCOL.md 7: login ends any old login */
    sm_message *reply = NULL;
    int rc = call_with_password(app, "login", payload, password, &reply);
    json_decref(payload);
    if (rc != 0)
        return -1;
    rc = finish(app, command, reply);
    if (rc != 0)
        cli_forget_password(app);
    if (rc == 0) {
        start_login(app, reply);
        app->have_password = 1;
        char priv[CLI_PATH_MAX] = "", pub[CLI_PATH_MAX];
        char why[CLI_PATH_MAX + 128] = "the key file's path is too long";
        EVP_PKEY *key = NULL;
        int r = account_key_paths(app, app->username[0] ? app->username : word, priv, sizeof priv, pub,
                          sizeof pub) == 0 ? e2e_key_load(priv, &key, why, sizeof why) : -1;
        if (r == 1) {
            render_local("warning", "no_private_key", NULL,
                         "no private key %s here: encrypted messages to you cannot be read and "
                         "yours go unsigned", priv);
        } else if (r < 0) {
            render_local("warning", "key_unreadable", NULL, "%s", why);
        } else if (e2e_key_usable(key, why, sizeof why) != 0) {
            render_local("warning", "key_unusable", NULL, "the key in %s is unusable: %s", priv, why);
            EVP_PKEY_free(key);
        } else {
            app->key = key;
            privmsg_check_own_key(app);
        }
    }
    sm_message_free(reply);
    return rc;
}

int account_resume(cli_app *app)
{
    if (!app->username[0])
        return 0;
    char room[CLI_ROOM_BUF];
    memcpy(room, app->room, sizeof room);
    if (!app->have_password) {
        render_local("warning", "login_needed", NULL, "not logged in any more: /login %s",
                     app->username);
        cli_clear_login(app);
        return 0;
    }
    json_t *payload = json_pack("{s:s,s:s}", "username", app->username, "password", app->password);
    sm_message *reply = NULL;
    int rc = payload ? conn_call(app, "login", payload, &reply) : -1;
    if (payload)
        crypto_wipe((char *)json_string_value(json_object_get(payload, "password")), strlen(app->password));
    json_decref(payload);
    if (rc != 0)
        return -1;
    if (conn_is_error(reply)) {
        render_reply("login", reply, NULL);
        render_local("warning", "login_needed", NULL, "logging in again failed: /login %s",
                     app->username);
        sm_message_free(reply);
        cli_clear_login(app);
        return 0;
    }
    const char *assigned = json_string_value(json_object_get(reply->payload, "assigned_room"));
    cli_copy_name(app->room, sizeof app->room, assigned);
    sm_message_free(reply);
    /* Back to the room we were in (or out of the default one). */
    if (strcasecmp(room, app->room) == 0)
        return 0;
    payload = room[0] ? json_pack("{s:s}", "room_name", room) : json_object();
    rc = payload ? conn_call(app, room[0] ? "join_room" : "leave_room", payload, &reply) : -1;
    json_decref(payload);
    if (rc != 0)
        return -1;
    if (conn_is_error(reply)) {
        render_reply(room[0] ? "join" : "leave", reply, NULL);
    } else if (room[0]) {
        cli_copy_name(app->room, sizeof app->room,
                      json_string_value(json_object_get(reply->payload, "room")));
    } else {
        app->room[0] = '\0';
    }
    sm_message_free(reply);
    return 0;
}
