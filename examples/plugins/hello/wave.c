/* wave: hello's companion in the SDK example, for the host services hello
 * does not need (docs/PLUGINS.md quotes both): core events, topics, a
 * repeating timer and a worker job.
 *
 * - Logging in puts the session into the topic "wave.lobby" and tells the
 *   other members: event `wave_arrived {"username"}`. Logging out (also by
 *   closing) takes it out again.
 * - Action `wave` (needs login, no fields): event `waved {"from"}` to every
 *   other lobby member; replies {"seen_by": <how many got it>}.
 * - Every `wave.tick_seconds` (default 60, 1 to 86400) the lobby gets
 *   event `wave_tick {"online": <members>}`.
 * - Action `shout` (needs login, {"text": 1 to 256 bytes}) replies
 *   {"text": <text in ASCII capitals>}, computed on a worker thread (a
 *   stand-in for slow work such as password hashing). */
#include <stdlib.h>
#include <string.h>

#include <safemessenger/plugin.h>

#define LOBBY "wave.lobby"
#define SHOUT_MAX 256

typedef struct wave {
    sm_plugin *self;
    const sm_host *host;
    int64_t tick_seconds;
    sm_timer *tick; /* started in start, stopped in fini */
} wave;

/* ---- core events and topics ---- */

static void on_login_change(sm_core_event event, sm_session_id session, const char *username,
                            void *plugin_data)
{
    wave *w = plugin_data;
    const sm_host *host = w->host;
    if (event == SM_EVENT_LOGGED_OUT) {
        host->topic_leave(LOBBY, session);
        return;
    }
    if (event != SM_EVENT_LOGGED_IN)
        return; /* only subscribed to these two; ignore what we do not know */
    if (host->topic_join(LOBBY, session) != SM_OK) {
        host->log(w->self, SM_LOG_WARNING, "%s could not join the lobby", username);
        return;
    }
    json_t *ev = json_pack("{s:s}", "username", username);
    if (ev)
        host->topic_publish(LOBBY, "wave_arrived", ev, session); /* not to the newcomer */
    json_decref(ev);
}

static void wave_cmd(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    wave *w = plugin_data;
    const sm_host *host = w->host;
    sm_session_id me = host->ctx_session(ctx);
    /* Sender fields come from the session, never from the payload. */
    json_t *ev = json_pack("{s:s}", "from", host->session_username(me));
    if (!ev || host->topic_publish(LOBBY, "waved", ev, me) != SM_OK) {
        json_decref(ev);
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    json_decref(ev);
    size_t members = host->topic_members(LOBBY, NULL, 0);
    size_t others = members - (host->topic_is_member(LOBBY, me) ? 1 : 0);
    json_t *reply = json_pack("{s:I}", "seen_by", (json_int_t)others);
    host->reply(ctx, "wave", reply); /* the events go out after this reply */
    json_decref(reply);
}

/* ---- a repeating timer ---- */

static void on_tick(sm_timer *timer, void *arg)
{
    (void)timer;
    wave *w = arg;
    size_t online = w->host->topic_members(LOBBY, NULL, 0);
    if (online == 0)
        return;
    json_t *ev = json_pack("{s:I}", "online", (json_int_t)online);
    if (ev)
        w->host->topic_publish(LOBBY, "wave_tick", ev, 0);
    json_decref(ev);
}

/* ---- a worker job ---- */

typedef struct shout_job {
    sm_ctx *ctx; /* deferred: valid until we reply */
    wave *w;
    char text[SHOUT_MAX + 1]; /* a copy: the payload is gone after the handler */
} shout_job;

/* Worker thread: only the job's own data, no host service at all. */
static void shout_work(void *arg)
{
    shout_job *job = arg;
    for (char *p = job->text; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
}

/* Loop thread, after shout_work, or with cancelled = 1 at shutdown: reply
 * in both cases, as the reply is what frees the deferred ctx. */
static void shout_done(void *arg, int cancelled)
{
    shout_job *job = arg;
    const sm_host *host = job->w->host;
    json_t *reply = cancelled ? NULL : json_pack("{s:s}", "text", job->text);
    if (reply)
        host->reply(job->ctx, "shout", reply);
    else
        host->reply_error(job->ctx, SM_ERR_INTERNAL, "internal server error");
    json_decref(reply);
    free(job);
}

static void shout_cmd(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    wave *w = plugin_data;
    const sm_host *host = w->host;
    json_t *text = json_object_get(payload, "text"); /* the schema checked it */
    shout_job *job = calloc(1, sizeof *job);
    if (!job) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    job->ctx = ctx;
    job->w = w;
    memcpy(job->text, json_string_value(text), json_string_length(text));
    if (host->work_submit(w->self, shout_work, shout_done, job) != SM_OK) {
        free(job);
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->defer(ctx); /* done cannot run before this handler returns */
}

/* ---- registration ---- */

static const sm_field shout_schema[] = {
    {"text", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, SHOUT_MAX},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"wave", wave_cmd, SM_ACTION_NEEDS_LOGIN, NULL},
    {"shout", shout_cmd, SM_ACTION_NEEDS_LOGIN, shout_schema},
    {NULL, NULL, 0, NULL},
};

static int wave_init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    wave *w = calloc(1, sizeof *w);
    if (!w)
        return SM_ENOMEM;
    w->self = self;
    w->host = host;
    w->tick_seconds = 60;
    int rc = host->config_int(self, "tick_seconds", 1, 86400, &w->tick_seconds);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->subscribe(self, SM_EVENT_LOGGED_IN, on_login_change);
    if (rc == SM_OK)
        rc = host->subscribe(self, SM_EVENT_LOGGED_OUT, on_login_change);
    if (rc != SM_OK) {
        free(w);
        return rc;
    }
    *plugin_data = w;
    return SM_OK;
}

static int wave_start(void *plugin_data)
{
    wave *w = plugin_data;
    double every = (double)w->tick_seconds;
    w->tick = w->host->timer_start(w->self, every, every, on_tick, w);
    return w->tick ? SM_OK : SM_ERROR;
}

static void wave_fini(void *plugin_data)
{
    wave *w = plugin_data;
    if (w->tick)
        w->host->timer_stop(w->tick); /* before freeing its arg */
    free(w);
}

SM_PLUGIN_DECLARE(.name = "wave", .version = "1.0",
                  .description = "SDK example: events, topics, a timer and a worker job",
                  .init = wave_init, .fini = wave_fini, .start = wave_start);
