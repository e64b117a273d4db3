/* Calls and the incoming stream. */
#include "conn.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "connect.h"
#include "crypto.h"
#include "privmsg.h"
#include "render.h"

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000

static int reconnect(cli_app *app);

/* Reports the loss; then, when enabled, reconnects (0: connected again). */
static int lost(cli_app *app, int rc)
{
    if (app->closed)
        return -1;
    app->closed = 1;
    int code = sm_client_close_code(app->client);
    if (rc == SM_CLIENT_CLOSED)
        render_local("error", "connection_closed", NULL, "the server closed the connection (close %d)",
                     code);
    else if (rc == SM_CLIENT_PROTOCOL)
        render_local("error", "protocol_error", NULL,
                     "the server sent a message that failed the protocol checks; disconnected");
    else
        render_local("error", "connection_lost", NULL, "connection lost (status %d)", rc);
    if (app->reconnecting)
        return -1;   /* the reconnection loop goes on */
    if (app->reconnect && !app->quit && reconnect(app) == 0)
        return 0;
    cli_set_status(app, CLI_EXIT_CONNECTION);
    return -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Exponential backoff with "equal jitter": half the step fixed, half
 * random, so that many clients of a restarted server do not all come back
 * in the same instant. */
static int backoff_ms(unsigned attempt)
{
    long step = BACKOFF_FIRST_MS;
    for (unsigned i = 0; i < attempt && step < BACKOFF_MAX_MS; i++)
        step *= 2;
    if (step > BACKOFF_MAX_MS)
        step = BACKOFF_MAX_MS;
    uint32_t r = 0;
    if (crypto_random((uint8_t *)&r, sizeof r) != 0)
        r = (uint32_t)time(NULL);
    return (int)(step / 2 + (long)(r % (uint32_t)(step / 2 + 1)));
}

/* Connects again until it works, the server's key is refused, or the
 * login cannot be resumed; the line being typed stays (render's erase hook
 * and the tty's redraw, as for events). */
static int reconnect(cli_app *app)
{
    app->reconnecting = 1;
    sm_client_free(app->client);
    app->client = NULL;
    int rc = -1;
    for (unsigned attempt = 0;; attempt++) {
        int wait = backoff_ms(attempt);
        json_t *f = json_pack("{s:I,s:i}", "attempt", (json_int_t)attempt + 1, "delay_ms", wait);
        render_local("info", "reconnecting", f, "reconnecting to %s in %.1f s (attempt %u)",
                     app->server_id, wait / 1000.0, attempt + 1);
        json_decref(f);
        sleep_ms(wait);
        int crc = connect_server(app, 0);
        if (crc == CLI_EXIT_PIN_REFUSED) {
            cli_set_status(app, crc);
            break;
        }
        if (crc >= 0)
            continue;
        app->closed = 0;
        if (account_resume(app) != 0) {
            if (!app->closed) {
                app->closed = 1;   /* out of memory: give up, consistently */
                break;
            }
            sm_client_free(app->client);
            app->client = NULL;
            continue;   /* lost again while logging in */
        }
        app->reconnects++;
        render_local("info", "reconnected", NULL, "reconnected to %s%s%s%s%s", app->server_id,
                     app->username[0] ? " as " : "", app->username,
                     app->room[0] ? ", in room " : "", app->room);
        rc = 0;
        break;
    }
    app->reconnecting = 0;
    return rc;
}

int conn_call(cli_app *app, const char *action, const json_t *payload, sm_message **reply)
{
    if (app->closed)
        return -1;
    sm_message *m = NULL;
    int rc = sm_client_call(app->client, action, payload, app->timeout_ms, &m);
    if (rc == SM_CLIENT_OK) {
        *reply = m;
        return 0;
    }
    if (rc == SM_CLIENT_TIMEOUT) {
        /* A late reply would be taken for another command's: the nonce
         * bookkeeping of this connection can no longer be trusted. */
        render_local("error", "timeout", NULL, "no reply to %s within %d ms; disconnecting", action,
                     app->timeout_ms);
    }
    if (lost(app, rc) == 0 && !app->reconnecting) {
        /* Whether the server acted on it is unknown: not resent, since
         * most commands are not idempotent. */
        render_local("error", "not_confirmed", NULL,
                     "the connection was lost during %s: check whether it took effect", action);
        cli_set_status(app, CLI_EXIT_FAILED);
    }
    return -1;
}

int conn_is_error(const sm_message *m) { return m && strcmp(m->type, "error") == 0; }

/* A private message shown as it arrived has been read: tell the server
 * (its sender gets message_read). Quietly, except when it fails. */
static void mark_read(cli_app *app, const json_t *payload)
{
    json_t *id = json_object_get(payload, "id");
    if (!app->username[0] || !json_is_integer(id) || app->reconnecting)
        return;
    json_t *p = json_pack("{s:O}", "message_id", id);
    sm_message *reply = NULL;
    if (p && conn_call(app, "mark_message_read", p, &reply) == 0 && conn_is_error(reply))
        render_reply("read", reply, NULL);
    json_decref(p);
    sm_message_free(reply);
}

/* Handles one message read outside conn_pump (an event, or a reply that
 * matched no call). Takes ownership of m. */
static void conn_dispatch(cli_app *app, sm_message *m)
{
    if (strcmp(m->type, "event") != 0) {
        render_reply(NULL, m, NULL);   /* a reply no call waited for */
        sm_message_free(m);
        return;
    }
    if (strcmp(m->action, "PING") == 0) {
        sm_message_free(m);
        return;
    }
    json_t *e2e = NULL;
    int is_pm = strcmp(m->action, "private_message") == 0;
    if (is_pm)
        e2e = privmsg_receive(app, m->payload);
    render_event(m, e2e);
    json_decref(e2e);
    if (is_pm)
        mark_read(app, m->payload);
    app->events_seen++;
    if (!app->wait_action || strcmp(app->wait_action, m->action) == 0)
        app->events_counted++;
    sm_message_free(m);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int conn_pump(cli_app *app, int timeout_ms, unsigned long stop_at)
{
    uint64_t deadline = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    while (!app->closed) {
        if (stop_at && app->events_counted >= stop_at)
            return 0;
        uint64_t now = now_ms();
        int left = now >= deadline ? 0 : (int)(deadline - now);
        sm_message *m = NULL;
        int rc = sm_client_recv(app->client, left, &m);
        if (rc == SM_CLIENT_TIMEOUT)
            return 0;
        if (rc != SM_CLIENT_OK) {
            if (lost(app, rc) == 0)
                continue;
            return -1;
        }
        conn_dispatch(app, m);
    }
    return -1;
}
