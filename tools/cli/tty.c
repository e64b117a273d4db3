/* libedit glue.
 *
 * Showing events without breaking the line being typed: libedit reads
 * characters through a function we install with EL_GETCFN. That function
 * poll()s stdin and the server socket together. When the socket is
 * readable it erases the terminal row holding the prompt ("\r" + "\033[K"),
 * lets the caller print the events (each ends with a newline, so the
 * cursor is then at the start of a fresh row), and asks libedit to redraw
 * prompt and buffer with el_set(EL_REFRESH): EL_REFRESH first forgets what
 * libedit believes is on the screen (re_clear_display puts its cursor at
 * row 0, column 0) and then paints the whole line again, so the partly
 * typed text and the cursor position survive. Limitation: when the edited
 * line wraps over several terminal rows, only the last row is erased and
 * the earlier ones stay above the event.
 *
 * Characters are decoded with mbrtowc() in the user's locale (main() calls
 * setlocale), as libedit's built-in reader does. History lives in memory
 * only: lines may hold private message text, which must not land in a file.
 */
#include "tty.h"

#include <errno.h>
#include <fcntl.h>
#include <histedit.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <wchar.h>

#define TTY_HISTORY_SIZE 500

struct tty {
    EditLine *el;
    History *hist;
    HistEvent ev;
    char prompt[256];
    /* while tty_read_line runs */
    int sock_fd;
    int (*pump)(void *ctx);
    void *ctx;
    int pump_failed;
    int in_pump;        /* pump() is running from inside el_gets */
    int erased;         /* the edited line was erased for output */
    mbstate_t mbs;
};

static tty *tty_of(EditLine *el)
{
    void *p = NULL;
    el_get(el, EL_CLIENTDATA, &p);
    return p;
}

static char *prompt_fn(EditLine *el)
{
    tty *t = tty_of(el);
    return t ? t->prompt : "> ";
}

static int getc_fn(EditLine *el, wchar_t *wc)
{
    tty *t = tty_of(el);
    for (;;) {
        struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                                {.fd = t->sock_fd, .events = POLLIN}};
        nfds_t n = (t->sock_fd >= 0 && t->pump && !t->pump_failed) ? 2 : 1;
        int r = poll(fds, n, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 2 && fds[1].revents) {
            t->in_pump = 1;
            t->erased = 0;
            int rc = t->pump(t->ctx);
            t->in_pump = 0;
            fflush(stdout);
            fflush(stderr);
            if (t->erased)
                el_set(el, EL_REFRESH);
            if (rc != 0) {
                t->pump_failed = 1;
                return -1;
            }
            continue;
        }
        if (!fds[0].revents)
            continue;
        char c;
        ssize_t k = read(STDIN_FILENO, &c, 1);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return 0;
        wchar_t w = 0;
        size_t m = mbrtowc(&w, &c, 1, &t->mbs);
        if (m == (size_t)-2)
            continue;   /* more bytes of this character to come */
        if (m == (size_t)-1) {
            memset(&t->mbs, 0, sizeof t->mbs);   /* drop an invalid byte */
            continue;
        }
        *wc = w;
        return 1;
    }
}

int tty_open(const char *prog, tty **out)
{
    tty *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->sock_fd = -1;
    snprintf(t->prompt, sizeof t->prompt, "> ");
    t->el = el_init(prog, stdin, stdout, stderr);
    t->hist = history_init();
    if (!t->el || !t->hist) {
        tty_close(t);
        return -1;
    }
    history(t->hist, &t->ev, H_SETSIZE, TTY_HISTORY_SIZE);
    history(t->hist, &t->ev, H_SETUNIQUE, 1);
    el_set(t->el, EL_CLIENTDATA, (void *)t);
    el_set(t->el, EL_PROMPT, prompt_fn);
    el_set(t->el, EL_EDITOR, "emacs");
    el_set(t->el, EL_HIST, history, t->hist);
    el_set(t->el, EL_SIGNAL, 1);   /* restore the terminal on signals */
    el_set(t->el, EL_GETCFN, getc_fn);
    el_source(t->el, NULL);        /* the user's ~/.editrc, if any */
    *out = t;
    return 0;
}

void tty_close(tty *t)
{
    if (!t)
        return;
    if (t->el)
        el_end(t->el);
    if (t->hist)
        history_end(t->hist);
    free(t);
}

void tty_erase_line(tty *t)
{
    if (!t->in_pump || t->erased)
        return;
    fputs("\r\033[K", stdout);
    t->erased = 1;
}

void tty_set_sock_fd(tty *t, int sock_fd)
{
    t->sock_fd = sock_fd;
}

void tty_set_prompt(tty *t, const char *prompt)
{
    snprintf(t->prompt, sizeof t->prompt, "%s", prompt);
}

int tty_read_line(tty *t, int sock_fd, int (*pump)(void *ctx), void *ctx, char **line)
{
    t->sock_fd = sock_fd;
    t->pump = pump;
    t->ctx = ctx;
    t->pump_failed = 0;
    int count = 0;
    const char *s = el_gets(t->el, &count);
    t->pump = NULL;
    if (t->pump_failed)
        return -1;   /* the connection is gone: a half-typed line is not run */
    if (!s || count <= 0)
        return 1;
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    if (len > 0)
        history(t->hist, &t->ev, H_ENTER, copy);
    *line = copy;
    return 0;
}
