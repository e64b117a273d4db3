/* The new password of `users passwd`: never from the command line (it
 * would show in ps and the shell's history). From the terminal without
 * echo, twice; or, for scripts, one line of stdin (--password-stdin). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "tool.h"

#define PASSWORD_BUF 1100 /* auth takes up to 1024 bytes */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Ctrl-C interrupts read() (no SA_RESTART), so echo is restored before
 * the tool exits. */
static int read_tty(const char *prompt, char *buf, size_t len)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct termios old, quiet;
    if (tcgetattr(fd, &old) != 0) {
        close(fd);
        return -1;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
    quiet.c_lflag |= (tcflag_t)(ICANON | ECHONL);
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_sa);
    int rc = -1;
    size_t used = 0;
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0 || write(fd, prompt, strlen(prompt)) < 0)
        goto restore;
    for (;;) {
        char c;
        ssize_t k = read(fd, &c, 1);
        if (k < 0 && errno == EINTR && !interrupted)
            continue;
        if (k <= 0 || interrupted)
            goto restore;
        if (c == '\n' || c == '\r')
            break;
        if (used + 1 >= len)
            goto restore; /* too long: refuse rather than cut */
        buf[used++] = c;
    }
    buf[used] = '\0';
    rc = 0;
restore:
    tcsetattr(fd, TCSAFLUSH, &old);
    sigaction(SIGINT, &old_sa, NULL);
    if (interrupted && write(fd, "\n", 1) < 0) {
        /* nothing to do: the prompt line merely stays open */
    }
    close(fd);
    if (rc != 0)
        explicit_bzero(buf, len);
    return rc;
}

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
        if (read_tty("New password: ", first, PASSWORD_BUF) != 0 ||
            read_tty("Again: ", again, PASSWORD_BUF) != 0) {
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
