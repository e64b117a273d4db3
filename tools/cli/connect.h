/* Connecting to the server: the WebSocket, the protocol handshake and the
 * check of the server's key, at start-up and again on every reconnection. */
#ifndef SM_CLI_CONNECT_H
#define SM_CLI_CONNECT_H

#include "cli.h"

/* Opens app->client and checks the server key. The first time, trust on
 * first use against known_servers (PROTOCOL.md 3), then the per-server
 * directories are set to the key's fingerprint (moving the old
 * host:port ones, serverdir.h). Later (reconnecting) the key must be the
 * one this run started with. Returns -1 when connected and trusted, else
 * the exit status (CLI_EXIT_CONNECTION with app->client NULL when the
 * connection failed, reported when loud is set; CLI_EXIT_PIN_REFUSED when
 * the key is refused: nothing was sent). */
int connect_server(cli_app *app, int loud);

#endif
