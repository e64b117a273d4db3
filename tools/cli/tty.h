/* The terminal: line editing and history through libedit, events shown
 * while a line is being typed, and password prompts without echo. */
#ifndef SM_CLI_TTY_H
#define SM_CLI_TTY_H

#include "password_tty.h"

#include <stddef.h>

typedef struct tty tty;

int tty_open(const char *prog, tty **out);
void tty_close(tty *t);

/* The prompt shown from the next redraw on (copied). */
void tty_set_prompt(tty *t, const char *prompt);

/* Reads one line (without its newline; malloc'd into *line). While the
 * user types, whenever sock_fd is readable pump(ctx) is called: what it
 * prints appears above the line being edited, which is then redrawn.
 * Returns 0 with a line, 1 at end of input (Ctrl-D), -1 when pump failed
 * (it returned non-zero) or the terminal failed. */
int tty_read_line(tty *t, int sock_fd, int (*pump)(void *ctx), void *ctx, char **line);

/* The socket tty_read_line watches from now on (after a reconnection). */
void tty_set_sock_fd(tty *t, int sock_fd);

/* Erases the line being edited so that output can take its row; only
 * while pump() runs inside tty_read_line, and once per pump() call (the
 * line is redrawn after it). */
void tty_erase_line(tty *t);

#endif
