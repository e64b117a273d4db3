/* Without a running server: the core in this process, on the database
 * directly. The same start-up as the server's without the listener (the
 * test host does the same), so the configured plugins load and register
 * the very admin commands the server would run. The core's storage takes
 * the flock on <database>.lock, so this cannot run beside a server. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "core.h"
#include "tool.h"

/* A command that waits for a worker job (a password hash) gets this long. */
#define LOCAL_TIMEOUT_SECONDS 120.0

typedef struct local_wait {
    json_t *reply;
} local_wait;

static void local_done(const json_t *reply, void *arg)
{
    local_wait *w = arg;
    w->reply = json_deep_copy(reply);
}

int local_call(const char *config_file, const json_t *request, json_t **reply, char *err,
               size_t err_len)
{
    core_options o = {
        .config_file = config_file,
        .port = -1,
        .load_plugins = 1,
        .workers = 1,
        .quiet = 1,
    };
    if (core_start(&o) != 0) {
        snprintf(err, err_len, "cannot open the database and the plugins (see above)");
        return -1;
    }
    local_wait w = {0};
    sm_admin_ctx *pending = admin_run(request, local_done, &w);
    /* Deferred commands finish on worker completions and timers: the
     * loop the server would run, polled. */
    double deadline = core_mono_now() + LOCAL_TIMEOUT_SECONDS;
    while (!w.reply && pending && core_mono_now() < deadline) {
        workers_run_completions(g_core.pool);
        timers_run_due(g_core.timers, core_mono_now());
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (!w.reply)
        admin_detach(pending);
    core_stop();
    if (!w.reply) {
        snprintf(err, err_len, "the command did not finish");
        return -1;
    }
    *reply = w.reply;
    return 0;
}
