/* The client after the upgrade: sealing commands, opening server messages
 * with the same envelope code the server uses, matching replies to
 * commands and queueing whatever arrives in between. */
#include "client_priv.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void client_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    if (n < 0)
        err[0] = '\0';
}

const char *client_status_text(int status)
{
    switch (status) {
    case SM_CLIENT_OK: return "ok";
    case SM_CLIENT_TIMEOUT: return "timed out";
    case SM_CLIENT_CLOSED: return "connection closed";
    case SM_CLIENT_PROTOCOL: return "protocol violation";
    case SM_CLIENT_IO: return "I/O error";
    default: return "error";
    }
}

uint64_t client_deadline(const sm_client *c, int timeout_ms)
{
    int t = timeout_ms < 0 ? c->timeout_ms : timeout_ms;
    return ws_now_ms() + (uint64_t)t;
}

void sm_message_free(sm_message *m)
{
    if (!m)
        return;
    free(m->type);
    free(m->action);
    free(m->nonce);
    free(m->reply_to);
    json_decref(m->payload);
    free(m);
}

/* Builds an sm_message from a parsed envelope (strings copied) and the
 * payload object (reference taken over). */
static int client_message_new(const envelope_in *env, json_t *payload, sm_message **out)
{
    sm_message *m = calloc(1, sizeof *m);
    if (!m)
        return SM_CLIENT_ERROR;
    m->type = strdup(env->type);
    m->action = strdup(env->action);
    m->nonce = strdup(env->nonce);
    m->reply_to = env->reply_to ? strdup(env->reply_to) : NULL;
    if (!m->type || !m->action || !m->nonce || (env->reply_to && !m->reply_to)) {
        sm_message_free(m);
        return SM_CLIENT_ERROR;
    }
    m->payload = payload;
    *out = m;
    return SM_CLIENT_OK;
}

/* ---- the queue ----------------------------------------------------------- */

static int queue_push(sm_client *c, sm_message *m)
{
    msg_node *n = malloc(sizeof *n);
    if (!n)
        return SM_CLIENT_ERROR;
    n->msg = m;
    n->next = NULL;
    if (c->tail)
        c->tail->next = n;
    else
        c->head = n;
    c->tail = n;
    return SM_CLIENT_OK;
}

/* Removes and returns the first queued message matching `type` (NULL =
 * any), or NULL. */
static sm_message *queue_take(sm_client *c, const char *type)
{
    msg_node *prev = NULL;
    for (msg_node *n = c->head; n; prev = n, n = n->next) {
        if (type && strcmp(n->msg->type, type) != 0)
            continue;
        if (prev)
            prev->next = n->next;
        else
            c->head = n->next;
        if (c->tail == n)
            c->tail = prev;
        sm_message *m = n->msg;
        free(n);
        return m;
    }
    return NULL;
}


/* ---- reading ------------------------------------------------------------ */

/* Turns one text message into an sm_message: unencrypted before the key
 * exchange, opened with the s2c direction after it. */
static int decode(sm_client *c, const char *text, size_t len, sm_message **out)
{
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK)
        return SM_CLIENT_PROTOCOL;
    json_t *payload = NULL;
    int rc = SM_CLIENT_PROTOCOL;
    if (c->keyed) {
        envelope_status st = envelope_open(&c->s2c, &env, &payload);
        if (st != ENVELOPE_OK) {
            rc = st == ENVELOPE_INTERNAL ? SM_CLIENT_ERROR : SM_CLIENT_PROTOCOL;
            goto out;
        }
    } else {
        if (strcmp(env.nonce, "0") != 0 || env.signature[0] != '\0'
            || !json_is_object(env.payload))
            goto out;
        payload = json_incref(env.payload);
    }
    rc = client_message_new(&env, payload, out);
    if (rc != SM_CLIENT_OK)
        json_decref(payload);
out:
    envelope_in_clear(&env);
    return rc;
}

/* PROTOCOL.md 7: PONG echoes the PING's timestamp. A failed send is not
 * reported here: the connection's next operation reports it. */
static void answer_ping(sm_client *c, const sm_message *ping)
{
    json_t *p = json_object();
    if (!p)
        return;
    json_t *ts = json_object_get(ping->payload, "timestamp");
    if (ts)
        json_object_set(p, "timestamp", ts);
    (void)sm_client_send(c, "PONG", p, NULL);
    json_decref(p);
}

/* The next message from the wire, verified. */
static int read_one(sm_client *c, uint64_t deadline, sm_message **out)
{
    if (c->failed)
        return c->failed;
    char *text = NULL;
    size_t len = 0;
    int rc = ws_recv_message(c->ws, deadline, &text, &len);
    if (rc != SM_CLIENT_OK)
        return rc;
    sm_message *m = NULL;
    rc = decode(c, text, len, &m);
    free(text);
    if (rc != SM_CLIENT_OK) {
        c->failed = rc;   /* the s2c state can no longer be trusted */
        return rc;
    }
    if (c->auto_pong && c->ready && strcmp(m->type, "event") == 0
        && strcmp(m->action, "PING") == 0)
        answer_ping(c, m);
    *out = m;
    return SM_CLIENT_OK;
}

int sm_client_recv(sm_client *c, int timeout_ms, sm_message **out)
{
    if (!c || !out)
        return SM_CLIENT_ERROR;
    sm_message *m = queue_take(c, NULL);
    if (m) {
        *out = m;
        return SM_CLIENT_OK;
    }
    return read_one(c, client_deadline(c, timeout_ms), out);
}

int sm_client_next_event(sm_client *c, int timeout_ms, sm_message **out)
{
    if (!c || !out)
        return SM_CLIENT_ERROR;
    sm_message *m = queue_take(c, "event");
    if (m) {
        *out = m;
        return SM_CLIENT_OK;
    }
    uint64_t deadline = client_deadline(c, timeout_ms);
    for (;;) {
        int rc = read_one(c, deadline, &m);
        if (rc != SM_CLIENT_OK)
            return rc;
        if (strcmp(m->type, "event") == 0) {
            *out = m;
            return SM_CLIENT_OK;
        }
        if (queue_push(c, m) != SM_CLIENT_OK) {
            sm_message_free(m);
            return SM_CLIENT_ERROR;
        }
    }
}

/* ---- sending ------------------------------------------------------------ */

int sm_client_send(sm_client *c, const char *action, const json_t *payload, uint64_t *nonce_out)
{
    if (!c || !action || !c->ready)
        return SM_CLIENT_ERROR;
    if (payload && !json_is_object(payload))
        return SM_CLIENT_ERROR;
    char *plain = payload ? json_dumps(payload, JSON_COMPACT) : strdup("{}");
    if (!plain)
        return SM_CLIENT_ERROR;
    char *text = NULL;
    size_t text_len = 0;
    size_t plain_len = strlen(plain);
    int rc = SM_CLIENT_ERROR;
    if (envelope_seal(&c->c2s, "command", action, NULL, plain, plain_len, &text, &text_len) != 0)
        goto out;
    rc = ws_send_frame(c->ws, WS_OP_TEXT, 1, 0, 1, text, text_len, client_deadline(c, -1));
    if (rc == SM_CLIENT_OK && nonce_out)
        *nonce_out = c->c2s.nonce;
out:
    crypto_wipe(plain, plain_len);   /* commands carry passwords */
    free(plain);
    free(text);
    return rc;
}

int sm_client_call(sm_client *c, const char *action, const json_t *payload, int timeout_ms,
                   sm_message **reply)
{
    if (!c || !reply)
        return SM_CLIENT_ERROR;
    uint64_t nonce = 0;
    int rc = sm_client_send(c, action, payload, &nonce);
    if (rc != SM_CLIENT_OK)
        return rc;
    char want[ENVELOPE_NONCE_MAX_DIGITS + 1];
    snprintf(want, sizeof want, "%" PRIu64, nonce);
    uint64_t deadline = client_deadline(c, timeout_ms);
    for (;;) {
        sm_message *m = NULL;
        rc = read_one(c, deadline, &m);
        if (rc != SM_CLIENT_OK)
            return rc;
        if ((strcmp(m->type, "response") == 0 || strcmp(m->type, "error") == 0)
            && m->reply_to && strcmp(m->reply_to, want) == 0) {
            *reply = m;
            return SM_CLIENT_OK;
        }
        if (queue_push(c, m) != SM_CLIENT_OK) {
            sm_message_free(m);
            return SM_CLIENT_ERROR;
        }
    }
}

/* ---- open / close --------------------------------------------------------- */

int sm_client_open(const sm_client_options *opt, sm_client **out, char *err, size_t err_len)
{
    if (!opt || !out || !opt->url) {
        client_err(err, err_len, "no url given");
        return SM_CLIENT_ERROR;
    }
    ws_url url;
    if (ws_url_parse(opt->url, &url) != 0) {
        client_err(err, err_len, "bad url: %.200s", opt->url);
        return SM_CLIENT_ERROR;
    }
    const char *cipher_name = opt->cipher ? opt->cipher : SM_CLIENT_DEFAULT_CIPHER;
    envelope_cipher cipher = envelope_cipher_from_name(cipher_name);
    if (cipher == ENVELOPE_CIPHER_NONE) {
        client_err(err, err_len, "unknown cipher: %.100s", cipher_name);
        return SM_CLIENT_ERROR;
    }
    sm_client *c = calloc(1, sizeof *c);
    if (!c) {
        client_err(err, err_len, "out of memory");
        return SM_CLIENT_ERROR;
    }
    c->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : SM_CLIENT_DEFAULT_TIMEOUT_MS;
    c->auto_pong = opt->auto_pong;
    c->cipher = cipher;
    ws_options wo = {
        .subprotocol = opt->no_subprotocol ? NULL
                       : opt->subprotocol  ? opt->subprotocol
                                           : SM_CLIENT_DEFAULT_SUBPROTOCOL,
        .origin = opt->origin,
        .ca_file = opt->ca_file,
        .insecure = opt->insecure,
        .rcvbuf = opt->rcvbuf,
        .source_address = opt->source_address,
        .forwarded_for = opt->forwarded_for,
    };
    int rc = ws_connect(&url, &wo, client_deadline(c, -1), &c->ws, err, err_len);
    if (rc != SM_CLIENT_OK) {
        free(c);
        return rc;
    }
    *out = c;
    return SM_CLIENT_OK;
}

int sm_client_connect(const sm_client_options *opt, sm_client **out, char *err, size_t err_len)
{
    sm_client *c = NULL;
    int rc = sm_client_open(opt, &c, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    rc = sm_client_handshake(c, err, err_len);
    if (rc != SM_CLIENT_OK) {
        sm_client_free(c);
        return rc;
    }
    *out = c;
    return SM_CLIENT_OK;
}

void sm_client_free(sm_client *c)
{
    if (!c)
        return;
    crypto_wipe(&c->c2s, sizeof c->c2s);
    crypto_wipe(&c->s2c, sizeof c->s2c);
    sm_message *m;
    while ((m = queue_take(c, NULL)) != NULL)
        sm_message_free(m);
    ws_free(c->ws);
    free(c->server_key_pem);
    free(c->session_id);
    free(c);
}

void sm_client_close(sm_client *c, int code)
{
    if (!c)
        return;
    if (code > 0) {
        /* RFC 6455 7.1.1: the client waits for the server's close (or its
         * TCP close) so the server, not the client, holds TIME_WAIT and
         * the close frame is not lost to a reset. Bounded: this is cleanup. */
        int wait_ms = c->timeout_ms < 1000 ? c->timeout_ms : 1000;
        uint64_t deadline = ws_now_ms() + (uint64_t)wait_ms;
        if (ws_send_close(c->ws, code, deadline) == SM_CLIENT_OK)
            ws_drain_until_closed(c->ws, deadline);
    }
    sm_client_free(c);
}

/* ---- accessors and raw access ----------------------------------------- */

const char *sm_client_fingerprint(const sm_client *c)
{
    return c && c->fingerprint[0] ? c->fingerprint : NULL;
}

const char *sm_client_server_key_pem(const sm_client *c) { return c ? c->server_key_pem : NULL; }

const char *sm_client_session_id(const sm_client *c) { return c ? c->session_id : NULL; }

const char *sm_client_subprotocol(const sm_client *c) { return c ? ws_subprotocol(c->ws) : NULL; }

const char *sm_client_cipher(const sm_client *c)
{
    return c ? envelope_cipher_name(c->cipher) : NULL;
}

int sm_client_close_code(const sm_client *c) { return c ? ws_close_code(c->ws) : -1; }

int sm_client_fd(const sm_client *c) { return c ? ws_fd(c->ws) : -1; }

envelope_dir *sm_client_c2s(sm_client *c) { return c && c->keyed ? &c->c2s : NULL; }

envelope_dir *sm_client_s2c(sm_client *c) { return c && c->keyed ? &c->s2c : NULL; }

int sm_client_send_text(sm_client *c, const char *data, size_t len)
{
    return sm_client_send_frame_ex(c, WS_OP_TEXT, 1, 0, 1, data, len);
}

int sm_client_send_frame(sm_client *c, int opcode, int fin, const void *data, size_t len)
{
    return sm_client_send_frame_ex(c, opcode, fin, 0, 1, data, len);
}

int sm_client_send_frame_ex(sm_client *c, int opcode, int fin, int rsv, int masked,
                            const void *data, size_t len)
{
    if (!c || (len && !data) || opcode < 0 || opcode > 15 || rsv < 0 || rsv > 7)
        return SM_CLIENT_ERROR;
    return ws_send_frame(c->ws, opcode, fin, rsv, masked, data, len, client_deadline(c, -1));
}

int sm_client_send_raw(sm_client *c, const void *data, size_t len)
{
    if (!c || (len && !data))
        return SM_CLIENT_ERROR;
    return ws_send_raw(c->ws, data, len, client_deadline(c, -1));
}

int sm_client_recv_text(sm_client *c, int timeout_ms, char **text, size_t *len)
{
    if (!c || !text)
        return SM_CLIENT_ERROR;
    size_t n = 0;
    int rc = ws_recv_message(c->ws, client_deadline(c, timeout_ms), text, &n);
    if (rc == SM_CLIENT_OK && len)
        *len = n;
    return rc;
}
