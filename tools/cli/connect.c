/* Connection set-up and the server key pin. */
#include "connect.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "pinning.h"
#include "render.h"
#include "serverdir.h"

static void refuse_changed(cli_app *app, const char *old, const char *fp)
{
    json_t *f = json_pack("{s:s,s:s,s:s}", "server", app->server_id, "fingerprint", fp,
                          "pinned_fingerprint", old);
    char l0[400], l1[200], l2[200], l3[CLI_PATH_MAX + 64];
    snprintf(l0, sizeof l0, "WARNING: THE KEY OF SERVER %s HAS CHANGED!", app->server_id);
    snprintf(l1, sizeof l1, "Pinned key:    %s", old);
    snprintf(l2, sizeof l2, "Server offers: %s", fp);
    snprintf(l3, sizeof l3, "The pin is in %s/known_servers.", app->config_dir);
    const char *lines[] = {
        l0, "",
        "Someone may be intercepting this connection (man in the middle),",
        "or the server's operator replaced its key.",
        l1, l2, l3,
        "Nothing was sent. If the operator confirms the new fingerprint,",
        "connect again with --accept-new-key.",
    };
    render_loud("server_key_changed", f, lines, sizeof lines / sizeof lines[0]);
    json_decref(f);
}

/* Points the per-server directories at the fingerprint's, moving what the
 * old layout (host_port) and, after an accepted key change, the old key's
 * directory held: the user accepted the new key as the same server. */
static void use_server_dir(cli_app *app, const char *replaced_fp)
{
    serverdir_moved moved = {0, 0};
    int rc = serverdir_migrate(app->config_dir, app->legacy_dir, app->server_dir, &moved);
    char old_dir[CLI_SERVER_ID_MAX];
    if (replaced_fp && serverdir_name(replaced_fp, old_dir, sizeof old_dir) == 0
        && serverdir_migrate(app->config_dir, old_dir, app->server_dir, &moved) != 0)
        rc = -1;
    if (moved.files) {
        json_t *f = json_pack("{s:s,s:I}", "server_dir", app->server_dir, "files", (json_int_t)moved.files);
        render_local("info", "keys_migrated", f,
                     "moved %u key, contact and replay-list files of %s to the per-fingerprint "
                     "directories %s", moved.files, app->server_id, app->server_dir);
        json_decref(f);
    }
    if (rc != 0 || moved.conflicts) {
        json_t *f = json_pack("{s:s,s:I}", "server_dir", app->legacy_dir, "conflicts",
                              (json_int_t)moved.conflicts);
        render_local("warning", "keys_migration_incomplete", f,
                     "some files under keys/, contacts/ or seen/%s were not moved to %s "
                     "(%u already exist there): check them by hand",
                     app->legacy_dir, app->server_dir, moved.conflicts);
        json_decref(f);
    }
}

/* Trust on first use of the server key (PROTOCOL.md 3). */
static int check_pin(cli_app *app)
{
    /* The fingerprint is computed here from the key itself rather than
     * taken from server_hello's "fingerprint" field. */
    const char *pem = sm_client_server_key_pem(app->client);
    EVP_PKEY *key = NULL;
    char fp[CRYPTO_FINGERPRINT_LEN], old[CRYPTO_FINGERPRINT_LEN] = "";
    if (!pem || e2e_pubkey_parse(pem, &key) != 0 || crypto_fingerprint(key, fp) != 0) {
        EVP_PKEY_free(key);
        render_local("error", "server_key", NULL, "the server's key cannot be read");
        return CLI_EXIT_CONNECTION;
    }
    EVP_PKEY_free(key);
    if (app->fingerprint[0]) {
        /* Reconnecting: the server must be the one this run trusted. */
        if (strcmp(fp, app->fingerprint) == 0)
            return -1;
        refuse_changed(app, app->fingerprint, fp);
        return CLI_EXIT_PIN_REFUSED;
    }
    pin_result res;
    if (files_mkdirs(app->config_dir) != 0
        || pinning_check_server(app->config_dir, app->server_id, fp, app->accept_new_key, &res, old) != 0) {
        render_local("error", "known_servers", NULL, "cannot read or write %s/known_servers",
                     app->config_dir);
        return CLI_EXIT_FAILED;
    }
    if (res == PIN_CHANGED) {
        refuse_changed(app, old, fp);
        return CLI_EXIT_PIN_REFUSED;
    }
    json_t *f = json_pack("{s:s,s:s,s:s?}", "server", app->server_id, "fingerprint", fp,
                          "pinned_fingerprint", old[0] ? old : NULL);
    if (res == PIN_NEW) {
        render_local("info", "server_key_pinned", f,
                     "first connection to %s: trusting its key %s (pinned in %s/known_servers)",
                     app->server_id, fp, app->config_dir);
    } else if (res == PIN_REPLACED) {
        render_local("warning", "server_key_replaced", f,
                     "the key of %s changed from %s to %s: accepted (--accept-new-key)",
                     app->server_id, old, fp);
    }
    json_decref(f);
    if (serverdir_name(fp, app->server_dir, sizeof app->server_dir) != 0) {
        render_local("error", "server_key", NULL, "the server's fingerprint is malformed");
        return CLI_EXIT_FAILED;
    }
    memcpy(app->fingerprint, fp, strlen(fp) + 1);
    use_server_dir(app, res == PIN_REPLACED ? old : NULL);
    return -1;
}

int connect_server(cli_app *app, int loud)
{
    sm_client_options copt = {
        .url = app->url,
        .timeout_ms = app->timeout_ms,
        .ca_file = app->ca_file,
        .insecure = app->insecure,
        .auto_pong = 1,
    };
    char err[256] = "";
    app->client = NULL;
    int crc = sm_client_open(&copt, &app->client, err, sizeof err);
    if (crc == SM_CLIENT_OK && (crc = sm_client_handshake(app->client, err, sizeof err)) != SM_CLIENT_OK) {
        sm_client_free(app->client);
        app->client = NULL;
    }
    if (crc != SM_CLIENT_OK) {
        app->client = NULL;
        if (loud)
            render_local("error", "connect_failed", NULL, "cannot connect to %s: %s", app->url,
                         err[0] ? err : "failed");
        return CLI_EXIT_CONNECTION;
    }
    int rc = check_pin(app);
    if (rc >= 0) {
        /* Nothing but the handshake's random session key went out. */
        sm_client_free(app->client);
        app->client = NULL;
    }
    return rc;
}
