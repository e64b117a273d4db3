/* Reading a password from the controlling terminal with echo off, for the
 * command-line tools (safemessenger-cli, safemessenger-admin). */
#include "password_tty.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

int tty_read_password(const char *prompt, char *buf, size_t len)
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
    /* Ctrl-C must interrupt read() (no SA_RESTART) so that echo is
     * restored before the program goes on. */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_sa);
    int rc = -1;
    /* Typeahead (a password typed before this prompt, echoed or not) is
     * dropped: what was typed before the prompt is not the answer to it. */
    (void)tcflush(STDIN_FILENO, TCIFLUSH);
    (void)tcflush(fd, TCIFLUSH);
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
        goto out;
    if (write(fd, prompt, strlen(prompt)) < 0)
        goto restore;
    size_t used = 0;
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
            goto restore;   /* too long: refuse rather than truncate */
        buf[used++] = c;
    }
    buf[used] = '\0';
    rc = 0;
restore:
    tcsetattr(fd, TCSAFLUSH, &old);
    if (rc != 0) {
        explicit_bzero(buf, len);
        if (write(fd, "\n", 1) < 0) {
            /* nothing to do: the prompt line merely stays open */
        }
    }
out:
    sigaction(SIGINT, &old_sa, NULL);
    close(fd);
    return rc;
}
