/* Batch mode. Commands from stdin are read with poll() alongside the
 * socket, so events that arrive while a script pauses are printed as they
 * come rather than when the next command arrives. */
#include "batch.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "conn.h"
#include "render.h"

#define BATCH_LINE_MAX (65536 + 64)

/* One input line; '#' starts a comment line in scripts. */
static void run_line(cli_app *app, const char *line)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '#')
        return;
    commands_run(app, line);
    conn_pump(app, 0, 0);
}

static void run_stdin(cli_app *app)
{
    static char buf[BATCH_LINE_MAX + 1];
    size_t used = 0;
    int eof = 0;
    while (!eof && !app->quit && !app->closed) {
        struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                                {.fd = sm_client_fd(app->client), .events = POLLIN}};
        int r = poll(fds, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (fds[1].revents && conn_pump(app, 0, 0) != 0)
            break;
        if (!fds[0].revents)
            continue;
        ssize_t n = read(STDIN_FILENO, buf + used, BATCH_LINE_MAX - used);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            eof = 1;
        } else {
            used += (size_t)n;
        }
        /* Every complete line, then (at the end) the unterminated rest. */
        size_t start = 0;
        for (;;) {
            char *nl = memchr(buf + start, '\n', used - start);
            if (!nl && !(eof && start < used))
                break;
            size_t end = nl ? (size_t)(nl - buf) : used;
            buf[end] = '\0';
            run_line(app, buf + start);
            start = nl ? end + 1 : used;
            if (app->quit || app->closed)
                return;
        }
        memmove(buf, buf + start, used - start);
        used -= start;
        if (used == BATCH_LINE_MAX) {
            render_local("error", "too_long", NULL, "an input line is longer than %d bytes",
                         BATCH_LINE_MAX);
            cli_set_status(app, CLI_EXIT_USAGE);
            return;
        }
    }
}

void batch_run(cli_app *app, const batch_options *opt)
{
    if (opt->commands) {
        for (size_t i = 0; i < opt->n_commands && !app->quit && !app->closed; i++)
            run_line(app, opt->commands[i]);
    } else {
        run_stdin(app);
    }
    if (app->closed || app->quit || (opt->wait_events == 0 && opt->wait_ms <= 0))
        return;
    conn_pump(app, opt->wait_ms, opt->wait_events);
    if (opt->wait_events && app->events_counted < opt->wait_events && !app->closed) {
        render_local("warning", "wait_timeout", NULL, "%lu of %lu events within %d ms",
                     app->events_counted, opt->wait_events, opt->wait_ms);
    }
}
