/* Calls and the incoming stream. */
#include "conn.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "privmsg.h"
#include "render.h"

static void lost(cli_app *app, int rc)
{
    if (app->closed)
        return;
    app->closed = 1;
    cli_set_status(app, CLI_EXIT_CONNECTION);
    int code = sm_client_close_code(app->client);
    if (rc == SM_CLIENT_CLOSED)
        render_local("error", "connection_closed", NULL, "the server closed the connection (close %d)",
                     code);
    else if (rc == SM_CLIENT_PROTOCOL)
        render_local("error", "protocol_error", NULL,
                     "the server sent a message that failed the protocol checks; disconnected");
    else
        render_local("error", "connection_lost", NULL, "connection lost (status %d)", rc);
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
        app->closed = 1;
        cli_set_status(app, CLI_EXIT_CONNECTION);
        return -1;
    }
    lost(app, rc);
    return -1;
}

int conn_is_error(const sm_message *m) { return m && strcmp(m->type, "error") == 0; }

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
    if (strcmp(m->action, "private_message") == 0)
        e2e = privmsg_receive(app, m->payload);
    render_event(m, e2e);
    json_decref(e2e);
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
            lost(app, rc);
            return -1;
        }
        conn_dispatch(app, m);
    }
    return -1;
}
