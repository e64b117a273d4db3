/* The core's presence events (SM_EVENT_USER_ONLINE, _OFFLINE,
 * _TOPIC_JOINED, _TOPIC_LEFT) in the order they came, for the core's
 * tests:
 *   presence_log {}          -> {"events": [{"event", "session",
 *                               "username", "topic"}, ...]}; clears the log

 *   presence_join {topic}    -> topic_join's status for the caller
 *   presence_leave {topic}   -> topic_leave's status for the caller */
#include "safemessenger/plugin.h"

static const sm_host *host;
static json_t *log_;

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
    json_t *r = json_pack("{s:O}", "events", log_);
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

static const sm_field topic_schema[] = {
    {"topic", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 256},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"presence_log", presence_log, 0, NULL},
    {"presence_join", presence_join, 0, topic_schema},
    {"presence_leave", presence_leave, 0, topic_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    *plugin_data = NULL;
    log_ = json_array();
    if (!log_)
        return SM_ENOMEM;
    int rc = h->register_actions(self, actions);
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
