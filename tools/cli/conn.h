/* The connection as the CLI uses it: one call at a time, and the stream of
 * events read between (or during) calls. */
#ifndef SM_CLI_CONN_H
#define SM_CLI_CONN_H

#include <jansson.h>

#include "cli.h"

/* Sends action with payload (NULL = {}, borrowed) and waits for its reply.
 * Returns 0 with *reply set (a response or an error: check reply->type),
 * or -1 when no reply came: the reason is reported, and a lost connection
 * marks app->closed and the exit status CLI_EXIT_CONNECTION. */
int conn_call(cli_app *app, const char *action, const json_t *payload, sm_message **reply);

/* 1 if m is an error reply, 0 otherwise. */
int conn_is_error(const sm_message *m);

/* Reads and renders the server's messages for up to timeout_ms (0: only
 * what is ready now), stopping early once app->events_counted reaches
 * stop_at (0: never). PINGs are answered by the client library and not
 * shown. Returns 0, or -1 when the connection is gone. */
int conn_pump(cli_app *app, int timeout_ms, unsigned long stop_at);

#endif
