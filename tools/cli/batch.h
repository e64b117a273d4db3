/* Non-interactive mode: commands from -e options or stdin, one per line,
 * JSON lines out (render.h), then optionally waiting for events. */
#ifndef SM_CLI_BATCH_H
#define SM_CLI_BATCH_H

#include <stddef.h>

#include "cli.h"

typedef struct batch_options {
    const char *const *commands;  /* -e commands, or NULL to read stdin */
    size_t n_commands;
    unsigned long wait_events;    /* --wait-events N (0: none) */
    int wait_ms;                  /* --wait-ms T */
} batch_options;

/* Runs the commands; returns when they are done (or /quit, or the
 * connection is lost) and the wait is over. */
void batch_run(cli_app *app, const batch_options *opt);

#endif
