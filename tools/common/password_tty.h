#ifndef SM_TOOLS_PASSWORD_TTY_H
#define SM_TOOLS_PASSWORD_TTY_H

#include <stddef.h>

/* Prompts on the controlling terminal and reads a line with echo off,
 * after discarding what was typed before the prompt
 * (restored on every path, also on Ctrl-C). Returns 0, or -1 when there is
 * no terminal, the input ended, the line does not fit, or Ctrl-C; buf is
 * wiped on failure. */
int tty_read_password(const char *prompt, char *buf, size_t len);

#endif
