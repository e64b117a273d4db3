/* The Appendix A pipelines. A correspondent's key is fetched with
 * get_public_key on first contact and pinned; after that the pin is what
 * counts, and the server's copy is only fetched again to explain a failed
 * verification, or before each send (so a changed key is noticed before
 * anything is encrypted to it). */
#include "privmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "conn.h"
#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "pinning.h"
#include "render.h"
#include "seen.h"

/* What we know of one correspondent's key. */
typedef struct peer {
    char name[CLI_NAME_MAX + 1];   /* as registered */
    int fetched;                   /* the server was asked */
    char *server_pem;              /* the key the server holds, NULL when none */
    char server_fp[CRYPTO_FINGERPRINT_LEN];
    char *pinned_pem;              /* our pin, NULL when none */
    char pinned_fp[CRYPTO_FINGERPRINT_LEN];
} peer;

static void peer_clear(peer *p)
{
    free(p->server_pem);
    free(p->pinned_pem);
    memset(p, 0, sizeof *p);
}

static int peer_init(peer *p, const char *user)
{
    memset(p, 0, sizeof *p);
    if (!files_name_ok(user))
        return -1;
    memcpy(p->name, user, strlen(user) + 1);
    return 0;
}

/* Loads the pin of p->name: 0 (pinned or not), -1 on a broken pin file. */
static int load_pin(cli_app *app, peer *p)
{
    char *pem = NULL;
    int r = pinning_contact_load(app->config_dir, app->server_dir, p->name, &pem);
    if (r == 1)
        return 0;
    if (r < 0 || e2e_pem_fingerprint(pem, p->pinned_fp, sizeof p->pinned_fp) != 0) {
        free(pem);
        render_local("error", "contact_pin_unreadable", NULL,
                     "the pinned key of %s cannot be read (contacts/%s/)", p->name, app->server_dir);
        return -1;
    }
    p->pinned_pem = pem;
    return 0;
}

/* Asks the server for p->name's key. Returns 0, 1 when the server answered
 * an error (*reply set when reply is not NULL, else freed), -1 when no
 * answer came or the answer is unusable. */
static int fetch_key(cli_app *app, peer *p, sm_message **reply)
{
    json_t *payload = json_pack("{s:s}", "username", p->name);
    sm_message *m = NULL;
    int rc = payload ? conn_call(app, "get_public_key", payload, &m) : -1;
    json_decref(payload);
    if (rc != 0)
        return -1;
    if (conn_is_error(m)) {
        if (reply)
            *reply = m;
        else
            sm_message_free(m);
        return 1;
    }
    const char *canon = json_string_value(json_object_get(m->payload, "username"));
    const json_t *key = json_object_get(m->payload, "public_key");
    p->fetched = 1;
    /* The registered spelling matters: it is bound into AAD and signature. */
    if (canon && files_name_ok(canon) && strcasecmp(canon, p->name) == 0)
        memcpy(p->name, canon, strlen(canon) + 1);
    if (json_is_string(key)) {
        p->server_pem = strdup(json_string_value(key));
        if (!p->server_pem
            || e2e_pem_fingerprint(p->server_pem, p->server_fp, sizeof p->server_fp) != 0) {
            render_local("error", "key_unreadable", NULL,
                         "the key the server holds for %s is not a readable PEM public key", p->name);
            free(p->server_pem);
            p->server_pem = NULL;
            if (reply)
                *reply = m;
            else
                sm_message_free(m);
            return -1;
        }
    }
    if (reply)
        *reply = m;
    else
        sm_message_free(m);
    return 0;
}

static void warn_key_changed(const peer *p)
{
    char l0[160], l1[160], l2[160], l3[200], l4[200];
    snprintf(l0, sizeof l0, "WARNING: THE END-TO-END KEY OF %s HAS CHANGED!", p->name);
    snprintf(l1, sizeof l1, "Pinned key:  %s", p->pinned_fp);
    snprintf(l2, sizeof l2, "Server says: %s", p->server_pem ? p->server_fp : "(no key at all)");
    snprintf(l3, sizeof l3, "Either %s has a new key, or someone (the server?) is trying to read", p->name);
    snprintf(l4, sizeof l4, "or forge your messages. Check with %s over another channel;", p->name);
    char l5[160];
    snprintf(l5, sizeof l5, "\"/trust %s\" accepts the new key.", p->name);
    const char *lines[] = {l0, "", l1, l2, "", l3, l4, l5};
    json_t *f = json_pack("{s:s,s:s,s:s?}", "username", p->name, "pinned_fingerprint", p->pinned_fp,
                          "server_fingerprint", p->server_pem ? p->server_fp : NULL);
    render_loud("contact_key_changed", f, lines, sizeof lines / sizeof lines[0]);
    json_decref(f);
}

/* Pins the server's key of p on first contact. */
static int pin_first_use(cli_app *app, peer *p)
{
    if (pinning_contact_save(app->config_dir, app->server_dir, p->name, p->server_pem) != 0) {
        render_local("error", "contact_pin_failed", NULL, "cannot write the pin of %s's key", p->name);
        return -1;
    }
    free(p->pinned_pem);
    p->pinned_pem = strdup(p->server_pem);
    if (!p->pinned_pem)
        return -1;
    memcpy(p->pinned_fp, p->server_fp, sizeof p->pinned_fp);
    json_t *f = json_pack("{s:s,s:s}", "username", p->name, "fingerprint", p->server_fp);
    render_local("info", "contact_key_pinned", f, "pinned the end-to-end key of %s (first use): %s",
                 p->name, p->server_fp);
    json_decref(f);
    return 0;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
}

static int send_fail(cli_app *app, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports why a message was not sent (exit status 1). */
static int send_fail(cli_app *app, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    render_local("error", "not_sent", NULL, "%s", msg);
    cli_set_status(app, CLI_EXIT_FAILED);
    return -1;
}

int privmsg_send(cli_app *app, const char *command, const char *user, const char *text)
{
    if (!app->username[0])
        return send_fail(app, "log in first (/login USER)");
    peer p;
    if (peer_init(&p, user) != 0) {
        render_local("error", "usage", NULL, "invalid username: %s", user);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    int rc = -1;
    sm_message *reply = NULL;
    EVP_PKEY *their_key = NULL;
    char *content = NULL, *e2e_id = NULL, *sig = NULL;
    json_t *payload = NULL, *sent = NULL;
    int f = fetch_key(app, &p, &reply);
    if (f == 1) {
        render_reply(command, reply, NULL);
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    sm_message_free(reply);
    reply = NULL;
    if (f != 0 || load_pin(app, &p) != 0) {
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    int encrypted = 0;
    if (p.server_pem) {
        if (p.pinned_pem && strcmp(p.pinned_fp, p.server_fp) != 0) {
            warn_key_changed(&p);
            send_fail(app, "message to %s NOT sent: their key changed", p.name);
            goto out;
        }
        char why[160];
        if (e2e_pubkey_parse(p.server_pem, &their_key) != 0
            || e2e_key_usable(their_key, why, sizeof why) != 0) {
            send_fail(app, "message to %s NOT sent: their registered key is unusable (%s)",
                      p.name, their_key ? why : "unreadable");
            goto out;
        }
        if (!p.pinned_pem && pin_first_use(app, &p) != 0) {
            cli_set_status(app, CLI_EXIT_FAILED);
            goto out;
        }
        if (e2e_encrypt(their_key, app->username, p.name, text, wall_now(), &content, &e2e_id) != 0) {
            send_fail(app, "message to %s NOT sent: encryption failed (is the text valid UTF-8?)",
                      p.name);
            goto out;
        }
        encrypted = 1;
    } else {
        if (p.pinned_pem) {
            /* A key that vanishes is a downgrade to plain text: refuse. */
            warn_key_changed(&p);
            send_fail(app, "message to %s NOT sent: their pinned key disappeared", p.name);
            goto out;
        }
        if (!(content = strdup(text)))
            goto out;
    }
    if (app->key && e2e_sign(app->key, app->username, p.name, content, &sig) != 0) {
        send_fail(app, "message to %s NOT sent: signing failed", p.name);
        goto out;
    }
    payload = json_pack("{s:s,s:s,s:b,s:s?}", "recipient", p.name, "content", content, "encrypted",
                        encrypted, "signature", sig);
    if (!payload) {
        send_fail(app, "message to %s NOT sent: the text is not valid UTF-8", p.name);
        goto out;
    }
    if (conn_call(app, "private_message", payload, &reply) != 0)
        goto out;
    sent = json_pack("{s:{s:b,s:b,s:s?}}", "sent", "encrypted", encrypted, "signed", sig != NULL,
                     "id", e2e_id);
    render_reply(command, reply, sent);
    if (conn_is_error(reply)) {
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    if (!encrypted)
        render_local("warning", "sent_plain",
                     NULL, "%s has no registered key: the message went as plain text, %s", p.name,
                     sig ? "signed" : "unsigned");
    rc = 0;
out:
    sm_message_free(reply);
    EVP_PKEY_free(their_key);
    free(content);
    free(e2e_id);
    free(sig);
    json_decref(payload);
    json_decref(sent);
    peer_clear(&p);
    return rc;
}

/* ---- receiving ------------------------------------------------------------ */

typedef enum sig_state { SIG_NONE, SIG_OK, SIG_BAD, SIG_KEY_CHANGED } sig_state;

/* Verifies sig with the key in pem. */
static int verify_pem(const char *pem, const char *sender, const char *recipient,
                      const char *content, const char *sig)
{
    EVP_PKEY *key = NULL;
    if (e2e_pubkey_parse(pem, &key) != 0)
        return -1;
    int rc = e2e_verify(key, sender, recipient, content, sig);
    EVP_PKEY_free(key);
    return rc;
}

static sig_state check_signature(cli_app *app, peer *p, const char *recipient,
                                 const char *content, const char *sig, const char **reason)
{
    if (!sig)
        return SIG_NONE;
    if (!p->name[0]) {
        *reason = "the sender's name is not a valid username";
        return SIG_BAD;
    }
    if (load_pin(app, p) != 0) {
        *reason = "the sender's pinned key cannot be read";
        return SIG_BAD;
    }
    if (!p->pinned_pem) {
        if (fetch_key(app, p, NULL) != 0) {
            *reason = "the sender's key could not be fetched";
            return SIG_BAD;
        }
        if (!p->server_pem) {
            *reason = "the sender has no registered key to verify with";
            return SIG_BAD;
        }
        if (pin_first_use(app, p) != 0) {
            *reason = "the sender's key could not be pinned";
            return SIG_BAD;
        }
    }
    if (verify_pem(p->pinned_pem, p->name, recipient, content, sig) == 0)
        return SIG_OK;
    /* Explain the failure: has the server's copy of the key changed? */
    if (!p->fetched && fetch_key(app, p, NULL) < 0) {
        *reason = "the signature does not verify with the sender's pinned key";
        return SIG_BAD;
    }
    if (p->server_pem && strcmp(p->server_fp, p->pinned_fp) != 0) {
        warn_key_changed(p);
        if (verify_pem(p->server_pem, p->name, recipient, content, sig) == 0) {
            *reason = "signed by the sender's new key, not the pinned one";
            return SIG_KEY_CHANGED;
        }
    }
    *reason = "the signature does not verify with the sender's pinned key";
    return SIG_BAD;
}

json_t *privmsg_receive(cli_app *app, const json_t *msg)
{
    const char *sender = json_string_value(json_object_get(msg, "sender"));
    const char *content = json_string_value(json_object_get(msg, "content"));
    const char *sig = json_string_value(json_object_get(msg, "signature"));
    int encrypted = json_is_true(json_object_get(msg, "encrypted"));
    long long msg_id = (long long)json_integer_value(json_object_get(msg, "id"));
    const char *recipient = app->username[0] ? app->username
                                             : json_string_value(json_object_get(msg, "recipient"));
    if (sig && !sig[0])
        sig = NULL;
    if (!sender)
        sender = "";
    if (!content)
        content = "";
    if (!recipient)
        recipient = "";

    json_t *e2e = json_object();
    if (!e2e)
        return NULL;
    peer p;
    if (peer_init(&p, sender) != 0)
        memset(&p, 0, sizeof p);
    const char *sig_reason = NULL;
    sig_state ss = check_signature(app, &p, recipient, content, sig, &sig_reason);

    const char *status = "ok", *reason = NULL, *decrypt_reason = NULL;
    int decrypted = 0, replay = 0;
    e2e_plain plain = {0};
    if (encrypted) {
        if (!app->key) {
            decrypt_reason = "no private key for this user on this machine";
        } else if (e2e_decrypt(app->key, p.name[0] ? p.name : sender, recipient, content, &plain) != 0) {
            decrypt_reason = "decryption failed: not encrypted for our key, or altered";
        } else {
            decrypted = 1;
            seen_result sr = SEEN_NEW;
            if (app->seen && seen_check(app->seen, plain.id, msg_id, &sr) != 0)
                render_local("warning", "seen_write_failed", NULL,
                             "cannot record message ids in the replay list");
            replay = sr == SEEN_REPLAY;
        }
    }
    if (replay) {
        status = "replay";
        reason = "a message with this e2e id was shown before";
    } else if (ss == SIG_KEY_CHANGED) {
        status = "key_changed";
        reason = sig_reason;
    } else if (ss == SIG_BAD) {
        status = "bad_signature";
        reason = sig_reason;
    } else if (ss == SIG_NONE) {
        status = "unsigned";
        reason = "the message carries no signature";
    } else if (encrypted && !decrypted) {
        status = "undecryptable";
        reason = decrypt_reason;
    }
    json_object_set_new(e2e, "verified", json_boolean(ss == SIG_OK));
    json_object_set_new(e2e, "decrypted", json_boolean(decrypted));
    json_object_set_new(e2e, "encrypted", json_boolean(encrypted));
    json_object_set_new(e2e, "status", json_string(status));
    if (decrypted) {
        if (!replay)
            json_object_set_new(e2e, "text", json_stringn(plain.text, plain.text_len));
        json_object_set_new(e2e, "sent_at", json_real(plain.sent_at));
        json_object_set_new(e2e, "id", json_string(plain.id));
    } else if (!encrypted) {
        json_object_set_new(e2e, "text", json_string(content));
    }
    if (reason)
        json_object_set_new(e2e, "reason", json_string(reason));
    if (decrypt_reason && reason != decrypt_reason)
        json_object_set_new(e2e, "decrypt_error", json_string(decrypt_reason));
    if (p.pinned_pem)
        json_object_set_new(e2e, "sender_key", json_string(p.pinned_fp));
    e2e_plain_clear(&plain);
    peer_clear(&p);
    return e2e;
}

/* ---- keys ------------------------------------------------------------------- */

int privmsg_key(cli_app *app, const char *command, const char *user, int trust)
{
    peer p;
    if (peer_init(&p, user) != 0) {
        render_local("error", "usage", NULL, "invalid username: %s", user);
        cli_set_status(app, CLI_EXIT_USAGE);
        return -1;
    }
    sm_message *reply = NULL;
    int rc = -1;
    json_t *extra = NULL;
    int f = fetch_key(app, &p, &reply);
    if (f == 1) {
        render_reply(command, reply, NULL);
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    if (f != 0 || load_pin(app, &p) != 0) {
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    const char *pin_state;
    if (!p.server_pem)
        pin_state = p.pinned_pem ? "removed" : "none";
    else if (!p.pinned_pem)
        pin_state = "new";
    else if (strcmp(p.pinned_fp, p.server_fp) == 0)
        pin_state = "match";
    else
        pin_state = trust ? "replaced" : "changed";
    char why[160] = "";
    EVP_PKEY *k = NULL;
    int usable = p.server_pem && e2e_pubkey_parse(p.server_pem, &k) == 0
                 && e2e_key_usable(k, why, sizeof why) == 0;
    EVP_PKEY_free(k);
    extra = json_pack("{s:{s:s,s:s?,s:b,s:s,s:s?}}", "key", "username", p.name, "fingerprint",
                      p.server_pem ? p.server_fp : NULL, "usable", usable, "pin", pin_state,
                      "pinned_fingerprint", p.pinned_pem ? p.pinned_fp : NULL);
    render_reply(command, reply, extra);
    if (!p.server_pem) {
        render_local("info", "no_key", NULL, "%s has no registered key: messages to them go as plain text",
                     p.name);
        if (p.pinned_pem)
            warn_key_changed(&p);
        if (trust) {
            render_local("error", "nothing_to_trust", NULL, "nothing to trust: %s has no key", p.name);
            cli_set_status(app, CLI_EXIT_FAILED);
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (!usable)
        render_local("warning", "key_unusable", NULL, "%s's key cannot be used end to end: %s", p.name,
                     why[0] ? why : "unreadable");
    if (strcmp(pin_state, "new") == 0) {
        if (pin_first_use(app, &p) != 0)
            goto out;
    } else if (strcmp(pin_state, "match") == 0) {
        render_local("info", "key_matches", NULL, "key of %s: %s (matches the pinned key)", p.name,
                     p.server_fp);
    } else if (trust) {
        if (pinning_contact_save(app->config_dir, app->server_dir, p.name, p.server_pem) != 0) {
            render_local("error", "contact_pin_failed", NULL, "cannot write the pin of %s's key", p.name);
            cli_set_status(app, CLI_EXIT_FAILED);
            goto out;
        }
        render_local("warning", "contact_key_replaced", NULL,
                     "now trusting %s's key %s (replaced the pinned %s)", p.name, p.server_fp,
                     p.pinned_fp);
    } else {
        warn_key_changed(&p);
        cli_set_status(app, CLI_EXIT_FAILED);
        goto out;
    }
    rc = 0;
out:
    sm_message_free(reply);
    json_decref(extra);
    peer_clear(&p);
    return rc;
}

void privmsg_check_own_key(cli_app *app)
{
    if (!app->key || !app->username[0])
        return;
    peer p;
    if (peer_init(&p, app->username) != 0)
        return;
    char mine[CRYPTO_FINGERPRINT_LEN];
    if (fetch_key(app, &p, NULL) == 0 && crypto_fingerprint(app->key, mine) == 0) {
        if (!p.server_pem) {
            render_local("warning", "own_key_not_registered", NULL,
                         "the server holds no public key for %s: others cannot encrypt to you",
                         p.name);
        } else if (strcmp(p.server_fp, mine) != 0) {
            char l0[160], l1[160], l2[160];
            snprintf(l0, sizeof l0, "WARNING: THE KEY THE SERVER HOLDS FOR %s IS NOT YOUR KEY!", p.name);
            snprintf(l1, sizeof l1, "Your key:    %s", mine);
            snprintf(l2, sizeof l2, "Server says: %s", p.server_fp);
            const char *lines[] = {l0, l1, l2,
                                   "Messages encrypted to the server's key are not readable here,",
                                   "and may be readable by whoever holds that key."};
            render_loud("own_key_mismatch", NULL, lines, sizeof lines / sizeof lines[0]);
        }
    }
    peer_clear(&p);
}

int privmsg_registered_fingerprint(cli_app *app, const char *user, char fp[CRYPTO_FINGERPRINT_LEN])
{
    peer p;
    if (peer_init(&p, user) != 0)
        return -1;
    int rc = fetch_key(app, &p, NULL);
    if (rc == 0 && !p.server_pem)
        rc = 1;
    else if (rc == 0)
        memcpy(fp, p.server_fp, CRYPTO_FINGERPRINT_LEN);
    else
        rc = -1;
    peer_clear(&p);
    return rc;
}
