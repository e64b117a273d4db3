/* A plugin for the core's tests: each action exercises one host service or
 * one dispatch rule. Not shipped. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *self_plugin;
static sm_stmt *put_stmt, *get_stmt;

static void echo(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    host->reply(ctx, "echo", payload);
}

/* Logs the session in without any credentials (tests only). */
static void fake_login(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *name = json_string_value(json_object_get(payload, "username"));
    int rc = host->session_login(host->ctx_session(ctx), name, 42);
    if (rc != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "login failed");
        return;
    }
    json_t *p = json_pack("{s:s}", "username", host->session_username(host->ctx_session(ctx)));
    host->reply(ctx, "fake_login", p);
    json_decref(p);
}

static void whoami(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    json_t *p = json_pack("{s:s}", "username", host->session_username(host->ctx_session(ctx)));
    host->reply(ctx, "whoami", p);
    json_decref(p);
}

/* The peer address the core recorded for this session. */
static void peer_address(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    const char *address = host->session_address(host->ctx_session(ctx));
    json_t *p = json_pack("{s:s}", "address", address ? address : "");
    host->reply(ctx, "peer_address", p);
    json_decref(p);
}

static void no_reply(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)ctx;
    (void)payload;
    (void)data;
}

static void double_reply(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    host->reply(ctx, "double_reply", NULL);
    int second = host->reply(ctx, "double_reply", NULL);
    host->log(self_plugin, SM_LOG_INFO, "second reply returned %d", second);
}

static void typed(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    host->reply(ctx, "typed", payload);
}

/* Emits an event to the caller before replying: the reply must arrive first. */
static void emit(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    json_t *ev = json_pack("{s:s}", "note", "caused by emit");
    host->send_event(host->ctx_session(ctx), "emitted", ev);
    json_decref(ev);
    host->reply(ctx, "emit", NULL);
}

/* Sends `count` events to the caller before replying: while the command
 * is in flight they are held (PROTOCOL.md 5), for tests of the bound on
 * held events. */
static void emit_many(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    json_int_t count = json_integer_value(json_object_get(payload, "count"));
    sm_session_id sid = host->ctx_session(ctx);
    for (json_int_t i = 0; i < count; i++) {
        json_t *ev = json_pack("{s:I}", "i", i);
        int rc = host->send_event(sid, "emitted", ev);
        json_decref(ev);
        if (rc != SM_OK)
            break; /* the session is being closed */
    }
    host->reply(ctx, "emit_many", NULL);
}

/* Replies with `size` bytes of text, for send-queue tests. */
static void big(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    json_int_t size = json_integer_value(json_object_get(payload, "size"));
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "no memory");
        return;
    }
    memset(buf, 'x', (size_t)size);
    buf[size] = '\0';
    json_t *p = json_pack("{s:s}", "data", buf);
    free(buf);
    host->reply(ctx, "big", p);
    json_decref(p);
}

typedef struct slow_job {
    sm_ctx *ctx;
    json_t *payload;
} slow_job;

static void slow_work(void *arg)
{
    (void)arg; /* nothing to compute: the point is the round trip */
}

static void slow_done(void *arg, int cancelled)
{
    slow_job *job = arg;
    /* Reply even when cancelled (shutdown): the reply is what frees ctx. */
    (void)cancelled;
    host->reply(job->ctx, "deferred_echo", job->payload);
    json_decref(job->payload);
    free(job);
}

static void deferred_echo(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    slow_job *job = malloc(sizeof *job);
    if (!job) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "no memory");
        return;
    }
    job->ctx = ctx;
    job->payload = json_deep_copy(payload);
    host->defer(ctx);
    if (host->work_submit(self_plugin, slow_work, slow_done, job) != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "cannot queue");
        json_decref(job->payload);
        free(job);
    }
}

/* host_from_worker: a plugin bug on purpose. Its work calls a host service
 * on the worker thread, which the core refuses (and counts); done, back on
 * the logic thread, replies {"refused": true} when it was. */
typedef struct bad_job {
    sm_ctx *ctx;
    sm_session_id session;
    int rc;
} bad_job;

static void bad_work(void *arg)
{
    bad_job *job = arg;
    job->rc = host->session_set_attr(job->session, "testcmds.bad", "1");
}

static void bad_done(void *arg, int cancelled)
{
    bad_job *job = arg;
    (void)cancelled;
    json_t *p = json_pack("{s:b}", "refused", job->rc == SM_ESTATE);
    host->reply(job->ctx, "host_from_worker", p);
    json_decref(p);
    free(job);
}

static void host_from_worker(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    bad_job *job = calloc(1, sizeof *job);
    if (!job) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "no memory");
        return;
    }
    job->ctx = ctx;
    job->session = host->ctx_session(ctx);
    host->defer(ctx);
    if (host->work_submit(self_plugin, bad_work, bad_done, job) != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "cannot queue");
        free(job);
    }
}

/* hold_worker occupies one worker thread until release_worker (or 30 s,
 * so a failed test cannot hang the server's shutdown): with
 * server.workers = 1, tests can then queue handshakes that cannot start. */
static atomic_int worker_held, worker_release;

static void hold_work(void *arg)
{
    (void)arg;
    atomic_store(&worker_held, 1);
    struct timespec ms = {0, 1000000L};
    for (int i = 0; i < 30000 && !atomic_load(&worker_release); i++)
        nanosleep(&ms, NULL);
    atomic_store(&worker_held, 0);
}

static void hold_worker(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    atomic_store(&worker_release, 0);
    if (host->work_submit(self_plugin, hold_work, NULL, NULL) != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "cannot queue");
        return;
    }
    host->reply(ctx, "hold_worker", NULL);
}

/* {"held": true} once hold_work runs on a worker. */
static void worker_status(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    json_t *p = json_pack("{s:b}", "held", atomic_load(&worker_held));
    host->reply(ctx, "worker_status", p);
    json_decref(p);
}

static void release_worker(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    atomic_store(&worker_release, 1);
    host->reply(ctx, "release_worker", NULL);
}

static void kv_put(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *k = json_string_value(json_object_get(payload, "key"));
    const char *v = json_string_value(json_object_get(payload, "value"));
    host->db_reset(put_stmt);
    host->db_bind_text(put_stmt, 1, k, -1);
    host->db_bind_text(put_stmt, 2, v, -1);
    if (host->db_step(put_stmt) != SM_DONE) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "write failed");
        return;
    }
    host->reply(ctx, "kv_put", NULL);
}

static void kv_get(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *k = json_string_value(json_object_get(payload, "key"));
    host->db_reset(get_stmt);
    host->db_bind_text(get_stmt, 1, k, -1);
    if (host->db_step(get_stmt) != SM_ROW) {
        host->reply_error(ctx, SM_ERR_NOT_FOUND, "no such key");
        return;
    }
    json_t *p = json_pack("{s:s}", "value", host->db_column_text(get_stmt, 0));
    host->db_reset(get_stmt);
    host->reply(ctx, "kv_get", p);
    json_decref(p);
}

static void topic_cmd(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *op = json_string_value(json_object_get(payload, "op"));
    const char *topic = json_string_value(json_object_get(payload, "topic"));
    sm_session_id sid = host->ctx_session(ctx);
    int rc = SM_EINVAL;
    double retry_after = 0;
    if (strcmp(op, "fanout") == 0)
        rc = host->topic_fanout_take(
            topic, (size_t)json_integer_value(json_object_get(payload, "bytes")), &retry_after);
    else if (strcmp(op, "join") == 0)
        rc = host->topic_join(topic, sid);
    else if (strcmp(op, "leave") == 0)
        rc = host->topic_leave(topic, sid);
    else if (strcmp(op, "publish") == 0 || strcmp(op, "publish_others") == 0) {
        json_t *ev = json_pack("{s:s, s:O}", "topic", topic, "body",
                               json_object_get(payload, "body"));
        /* publish_others: to every member but the caller's user's sessions. */
        rc = strcmp(op, "publish") == 0
                 ? host->topic_publish(topic, "topic_event", ev, 0)
                 : host->topic_publish_except_user(topic, "topic_event", ev,
                                                   host->session_username(sid));
        json_decref(ev);
    }
    json_t *p = json_pack("{s:i, s:I, s:f}", "status", rc, "members",
                          (json_int_t)host->topic_members(topic, NULL, 0), "retry_after",
                          retry_after);
    host->reply(ctx, "topic", p);
    json_decref(p);
}

/* Core events seen, by kind, for tests of event delivery. */
static long long event_counts[SM_EVENT_COUNT];

static void on_event(sm_core_event event, sm_session_id session, const char *username,
                     void *data)
{
    (void)session;
    (void)username;
    (void)data;
    event_counts[event]++;
}

static void stats(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    json_t *p = json_pack("{s:I, s:I, s:I, s:I}", "opened",
                          (json_int_t)event_counts[SM_EVENT_SESSION_OPENED], "logged_in",
                          (json_int_t)event_counts[SM_EVENT_LOGGED_IN], "logged_out",
                          (json_int_t)event_counts[SM_EVENT_LOGGED_OUT], "closed",
                          (json_int_t)event_counts[SM_EVENT_SESSION_CLOSED]);
    host->reply(ctx, "stats", p);
    json_decref(p);
}

static void tick(sm_timer *timer, void *arg)
{
    (void)timer;
    json_t *ev = json_pack("{s:f}", "at", host->now());
    host->send_event((sm_session_id)(uintptr_t)arg, "tick", ev);
    json_decref(ev);
}

static void deferred_tick(sm_timer *timer, void *arg)
{
    (void)timer;
    host->reply(arg, "deferred_timer", NULL);
}

/* Defers the reply to a one-shot timer `after` seconds away: the plugin
 * keeps nothing else, so a reload that unloads it meanwhile leaves the
 * command for the core to answer. */
static void deferred_timer(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    double after = json_number_value(json_object_get(payload, "after"));
    host->defer(ctx);
    if (!host->timer_start(self_plugin, after, 0, deferred_tick, ctx)) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "cannot start the timer");
        return;
    }
    /* Tests wait for this line to know the command is pending. */
    host->log(self_plugin, SM_LOG_INFO, "deferred_timer: reply deferred");
}

/* Starts a one-shot timer that sends a "tick" event to the caller. */
static void timer_cmd(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    double after = json_number_value(json_object_get(payload, "after"));
    sm_timer *t = host->timer_start(self_plugin, after, 0, tick,
                                    (void *)(uintptr_t)host->ctx_session(ctx));
    if (!t) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "timer refused");
        return;
    }
    host->reply(ctx, "timer", NULL);
}

/* Replies, then has the core close the session with the given code. */
static void close_me(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    int code = (int)json_integer_value(json_object_get(payload, "code"));
    host->reply(ctx, "close_me", NULL);
    host->session_close(host->ctx_session(ctx), code, "asked to");
}

/* Asks the core's policy hook about the caller and `to`. */
static void check_policy(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *to = json_string_value(json_object_get(payload, "to"));
    const char *what = json_string_value(json_object_get(payload, "what"));
    sm_interaction kind = strcmp(what, "friend_request") == 0 ? SM_INTERACTION_FRIEND_REQUEST
                                                              : SM_INTERACTION_PRIVATE_MESSAGE;
    int v = host->policy_check(kind, host->session_username(host->ctx_session(ctx)), to);
    json_t *p = json_pack("{s:i}", "verdict", v);
    host->reply(ctx, "check_policy", p);
    json_decref(p);
}

static void pong(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)ctx;
    (void)payload;
    (void)data;
}

static const sm_field typed_schema[] = {
    {"name", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {"count", SM_FIELD_INTEGER, 0, 1, 200},
    {"flag", SM_FIELD_BOOLEAN, 0, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field login_schema[] = {
    {"username", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field big_schema[] = {
    {"size", SM_FIELD_INTEGER, SM_FIELD_REQUIRED, 1, 8 << 20},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field emit_many_schema[] = {
    {"count", SM_FIELD_INTEGER, SM_FIELD_REQUIRED, 1, 100000},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field kv_schema[] = {
    {"key", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {"value", SM_FIELD_STRING, 0, 0, 4096},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field topic_schema[] = {
    {"op", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 16},
    {"topic", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {"bytes", SM_FIELD_INTEGER, 0, 0, 1 << 30},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field pong_schema[] = {
    {"timestamp", SM_FIELD_NUMBER, SM_FIELD_REQUIRED, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_field timer_schema[] = {
    {"after", SM_FIELD_NUMBER, SM_FIELD_REQUIRED, 0, 3600},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field close_schema[] = {
    {"code", SM_FIELD_INTEGER, SM_FIELD_REQUIRED, 1000, 4999},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_field policy_schema[] = {
    {"to", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {"what", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"check_policy", check_policy, SM_ACTION_NEEDS_LOGIN, policy_schema},
    {"stats", stats, 0, NULL},
    {"timer", timer_cmd, 0, timer_schema},
    {"deferred_timer", deferred_timer, 0, timer_schema},
    {"close_me", close_me, 0, close_schema},
    {"echo", echo, 0, NULL},
    {"fake_login", fake_login, 0, login_schema},
    {"whoami", whoami, SM_ACTION_NEEDS_LOGIN, NULL},
    {"no_reply", no_reply, 0, NULL},
    {"double_reply", double_reply, 0, NULL},
    {"typed", typed, 0, typed_schema},
    {"emit", emit, 0, NULL},
    {"emit_many", emit_many, 0, emit_many_schema},
    {"big", big, SM_ACTION_NO_RATE_LIMIT, big_schema},
    {"deferred_echo", deferred_echo, 0, NULL},
    {"host_from_worker", host_from_worker, 0, NULL},
    {"peer_address", peer_address, 0, NULL},
    {"hold_worker", hold_worker, 0, NULL},
    {"worker_status", worker_status, 0, NULL},
    {"release_worker", release_worker, 0, NULL},
    {"kv_put", kv_put, 0, kv_schema},
    {"kv_get", kv_get, 0, kv_schema},
    {"topic", topic_cmd, 0, topic_schema},
    {"PONG", pong, SM_ACTION_NO_REPLY | SM_ACTION_NO_RATE_LIMIT, pong_schema},
    {NULL, NULL, 0, NULL},
};

static const sm_migration migrations[] = {
    {1, "CREATE TABLE testcmds_kv (k TEXT PRIMARY KEY, v TEXT)"},
    {2, "CREATE INDEX testcmds_kv_v ON testcmds_kv (v)"},
    {0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **data)
{
    host = h;
    self_plugin = self;
    *data = NULL;
    if (h->register_actions(self, actions) != SM_OK ||
        h->register_migrations(self, migrations) != SM_OK)
        return SM_ERROR;
    for (int e = 0; e < SM_EVENT_COUNT; e++) {
        event_counts[e] = 0;
        if (h->subscribe(self, (sm_core_event)e, on_event) != SM_OK)
            return SM_ERROR;
    }
    return SM_OK;
}

static int start(void *data)
{
    (void)data;
    /* Portable SQL (an upsert, not INSERT OR REPLACE): suites that load
     * testcmds run on PostgreSQL too (services.plugin_friends_pg). */
    if (host->db_prepare(self_plugin,
                         "INSERT INTO testcmds_kv (k, v) VALUES (?, ?)"
                         " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                         &put_stmt) != SM_OK ||
        host->db_prepare(self_plugin, "SELECT v FROM testcmds_kv WHERE k = ?", &get_stmt) != SM_OK)
        return SM_ERROR;
    return SM_OK;
}

static void fini(void *data)
{
    (void)data;
    host->db_finalize(put_stmt);
    host->db_finalize(get_stmt);
    put_stmt = get_stmt = NULL;
}

SM_PLUGIN_DECLARE(.name = "testcmds", .version = "1.0", .description = "core test actions",
                  .init = init, .fini = fini, .start = start);
