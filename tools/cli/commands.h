/* The slash commands: one table (name, arguments, help, handler, and for
 * the plain ones the protocol action and payload field), and the runner
 * for one line of input. */
#ifndef SM_CLI_COMMANDS_H
#define SM_CLI_COMMANDS_H

#include "cli.h"

/* Runs one input line: "/name args" or, without a leading '/', a public
 * message to the current room. Empty lines do nothing. Outcomes are
 * rendered and recorded in app->status. Returns 0 when the command
 * succeeded, -1 otherwise. */
int commands_run(cli_app *app, const char *line);

#endif
