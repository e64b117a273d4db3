/* The new password of `users passwd`: never from the command line (it
 * would show in ps and the shell's history). From the terminal without
 * echo, twice; or, for scripts, one line of stdin (--password-stdin). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "password_tty.h"
#include "tool.h"

#define PASSWORD_BUF 1100 /* auth takes up to 1024 bytes */

static int read_stdin_line(char *buf, size_t len)
{
    if (!fgets(buf, (int)len, stdin))
        return -1;
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (n + 1 == len)
        return -1; /* too long */
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return 0;
}

char *read_password(int from_stdin)
{
    char *first = calloc(1, PASSWORD_BUF), *again = calloc(1, PASSWORD_BUF);
    char *result = NULL;
    if (!first || !again) {
        fprintf(stderr, "safemessenger-admin: out of memory\n");
        goto out;
    }
    if (from_stdin) {
        if (read_stdin_line(first, PASSWORD_BUF) != 0) {
            fprintf(stderr, "safemessenger-admin: no password on stdin (or over 1024 bytes)\n");
            goto out;
        }
    } else {
        if (tty_read_password("New password: ", first, PASSWORD_BUF) != 0 ||
            tty_read_password("Again: ", again, PASSWORD_BUF) != 0) {
            fprintf(stderr, "safemessenger-admin: cannot read a password from the terminal "
                            "(use --password-stdin in scripts)\n");
            goto out;
        }
        if (strcmp(first, again) != 0) {
            fprintf(stderr, "safemessenger-admin: the passwords differ\n");
            goto out;
        }
    }
    result = first;
    first = NULL;
out:
    if (first)
        explicit_bzero(first, PASSWORD_BUF);
    if (again)
        explicit_bzero(again, PASSWORD_BUF);
    free(first);
    free(again);
    return result;
}
