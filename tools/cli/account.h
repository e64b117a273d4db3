/* Accounts: /register (creating the end-to-end key pair, PROTOCOL.md
 * Appendix A) and /login (loading it). Both take the password from
 * --password-file, $SM_PASSWORD or (interactive) a prompt without echo,
 * render the reply, and keep app's login state in step. Each returns 0 when
 * the server accepted, -1 otherwise (the exit status is recorded). */
#ifndef SM_CLI_ACCOUNT_H
#define SM_CLI_ACCOUNT_H

#include "cli.h"

int account_register(cli_app *app, const char *command, const char *user);
int account_login(cli_app *app, const char *command, const char *user);

#endif
