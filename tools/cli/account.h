/* Accounts: /register (creating the end-to-end key pair, PROTOCOL.md
 * Appendix A) and /login (loading it). Both take the password from
 * --password-file, $SM_PASSWORD or (interactive) a prompt without echo,
 * render the reply, and keep app's login state in step. Each returns 0 when
 * the server accepted, -1 otherwise (the exit status is recorded). */
#ifndef SM_CLI_ACCOUNT_H
#define SM_CLI_ACCOUNT_H

#include <stddef.h>

#include "cli.h"

int account_register(cli_app *app, const char *command, const char *user);
int account_login(cli_app *app, const char *command, const char *user);

/* After a reconnection: logs in again with the remembered password and
 * returns to the room the session was in. 0 when done (or not possible:
 * then the login state is cleared and the user told to /login), -1 when
 * the connection failed meanwhile. */
int account_resume(cli_app *app);

/* The key files of user on this server: <config>/keys/<server>/<user>.pem
 * and .pub.pem (user lower-cased). */
int account_key_paths(cli_app *app, const char *user, char *priv, size_t priv_len, char *pub,
                      size_t pub_len);

#endif
