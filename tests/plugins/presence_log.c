/* The core's presence events (SM_EVENT_USER_ONLINE, _OFFLINE,
 * _TOPIC_JOINED, _TOPIC_LEFT) in the order they came, for the core's
 * tests:
 *   presence_log {}          -> {"events": [{"event", "session",
 *                               "username", "topic"}, ...]}; clears the log

 *   presence_online {names}  -> users_online's answer {status, online}
 *   presence_users {topic}   -> topic_users' answer {status, users}
 *   presence_broadcast {...} -> broadcast's status, and register_broadcast's
 *                               after init (refused)
 *   presence_join {topic}    -> topic_join's status for the caller
 *   presence_leave {topic}   -> topic_leave's status for the caller */
#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *self_;
static json_t *log_;
static int broadcasts; /* received: none on one node */

static void on_broadcast(const json_t *payload, void *plugin_data)
{
    (void)payload;
    (void)plugin_data;
    broadcasts++;
}

static const char *event_name(sm_core_event e)
{
    switch (e) {
    case SM_EVENT_USER_ONLINE: return "online";
    case SM_EVENT_USER_OFFLINE: return "offline";
    case SM_EVENT_TOPIC_JOINED: return "joined";
    case SM_EVENT_TOPIC_LEFT: return "left";
    default: return "other";
    }
}

static void on_event(const sm_event_info *info, void *plugin_data)
{
    (void)plugin_data;
    const char *topic = SM_EVENT_INFO_HAS(info, topic) ? info->topic : NULL;
    json_array_append_new(log_, json_pack("{s:s, s:I, s:s?, s:s?}", "event",
                                          event_name(info->event), "session",
                                          (json_int_t)info->session, "username",
                                          info->username, "topic", topic));
}

static void presence_log(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    json_t *r = json_pack("{s:O, s:i}", "events", log_, "broadcasts", broadcasts);
    host->reply(ctx, "presence_log", r);
    json_decref(r);
    json_array_clear(log_);
}

static void membership(sm_ctx *ctx, const json_t *payload, int join)
{
    const char *topic = json_string_value(json_object_get(payload, "topic"));
    sm_session_id id = host->ctx_session(ctx);
    int rc = join ? host->topic_join(topic, id) : host->topic_leave(topic, id);
    json_t *r = json_pack("{s:i}", "status", rc);
    host->reply(ctx, join ? "presence_join" : "presence_leave", r);
    json_decref(r);
}

static void presence_join(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    membership(ctx, payload, 1);
}

static void presence_leave(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    membership(ctx, payload, 0);
}

/* The answers of users_online and topic_users, replied from done (which
 * runs before the call returns on one node, later in a cluster). */
static void online_done(int status, const int *online, size_t n, void *arg)
{
    sm_ctx *ctx = arg;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_boolean(online[i]));
    json_t *r = json_pack("{s:i, s:o}", "status", status, "online", list);
    host->reply(ctx, "presence_online", r);
    json_decref(r);
}

static void users_done(int status, const char *const *users, size_t n, void *arg)
{
    sm_ctx *ctx = arg;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_string(users[i]));
    json_t *r = json_pack("{s:i, s:o}", "status", status, "users", list);
    host->reply(ctx, "presence_users", r);
    json_decref(r);
}

static void reply_status(sm_ctx *ctx, const char *action, int status)
{
    json_t *r = json_pack("{s:i}", "status", status);
    host->reply(ctx, action, r);
    json_decref(r);
}

/* {names: [...]} -> {status, online: [bool...]}, or {status} when refused. */
static void presence_online(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const json_t *names = json_object_get(payload, "names");
    const char *list[16];
    size_t n = json_array_size(names);
    if (n > 16)
        n = 16;
    for (size_t i = 0; i < n; i++)
        list[i] = json_string_value(json_array_get(names, i));
    host->defer(ctx);
    int rc = host->users_online(self_, list, n, online_done, ctx);
    if (rc != SM_OK)
        reply_status(ctx, "presence_online", rc);
}

static void presence_users(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    host->defer(ctx);
    int rc = host->topic_users(self_, json_string_value(json_object_get(payload, "topic")),
                               users_done, ctx);
    if (rc != SM_OK)
        reply_status(ctx, "presence_users", rc);
}

/* broadcast on one node: SM_OK, nothing sent; registering after init is
 * refused: {status, late_register}. */
static void presence_broadcast(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    json_t *r = json_pack("{s:i, s:i}", "status", host->broadcast(self_, payload),
                          "late_register", host->register_broadcast(self_, on_broadcast));
    host->reply(ctx, "presence_broadcast", r);
    json_decref(r);
}

static const sm_field topic_schema[] = {
    {"topic", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 256},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"presence_log", presence_log, 0, NULL},
    {"presence_online", presence_online, 0, NULL},
    {"presence_users", presence_users, 0, topic_schema},
    {"presence_broadcast", presence_broadcast, 0, NULL},
    {"presence_join", presence_join, 0, topic_schema},
    {"presence_leave", presence_leave, 0, topic_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    self_ = self;
    *plugin_data = NULL;
    log_ = json_array();
    if (!log_)
        return SM_ENOMEM;
    int rc = h->register_actions(self, actions);
    if (rc == SM_OK)
        rc = h->register_broadcast(self, on_broadcast);
    for (int e = SM_EVENT_USER_ONLINE; rc == SM_OK && e <= SM_EVENT_TOPIC_LEFT; e++)
        rc = h->subscribe_ex(self, (sm_core_event)e, on_event);
    if (rc != SM_OK) {
        json_decref(log_);
        log_ = NULL;
    }
    return rc;
}

static void fini(void *data)
{
    (void)data;
    json_decref(log_);
    log_ = NULL;
}

SM_PLUGIN_DECLARE(.name = "presence_log", .version = "1.0",
                  .description = "tests: the core's presence events in order", .init = init,
                  .fini = fini);
