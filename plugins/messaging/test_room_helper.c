/* Test-only plugin for the messaging suite: stands in for the rooms plugin
 * (which messaging never calls) by setting the session attribute
 * "rooms.current" and the room topic exactly as docs/PLUGINS.md section 17
 * says rooms does, and reads attributes back. Never built into a server. */
#include <stdio.h>

#include "safemessenger/plugin.h"

#define ROOM_ATTR "rooms.current"

static const sm_host *host;

/* The room's topic, "room:<ASCII lower-cased name>". */
static int topic_of(const char *room, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, "room:%s", room);
    if (n < 0 || (size_t)n >= out_len)
        return SM_EINVAL;
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return SM_OK;
}

static int leave_current(sm_session_id sid)
{
    const char *room = host->session_get_attr(sid, ROOM_ATTR);
    char topic[128];
    if (!room)
        return SM_OK;
    if (topic_of(room, topic, sizeof topic) != SM_OK)
        return SM_EINVAL;
    host->topic_leave(topic, sid);
    return host->session_set_attr(sid, ROOM_ATTR, NULL);
}

static void enter_room(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    sm_session_id sid = host->ctx_session(ctx);
    const char *room = json_string_value(json_object_get(payload, "room"));
    char topic[128];
    if (leave_current(sid) != SM_OK || topic_of(room, topic, sizeof topic) != SM_OK ||
        host->topic_join(topic, sid) != SM_OK ||
        host->session_set_attr(sid, ROOM_ATTR, room) != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "test_enter_room", NULL);
}

static void leave_room(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    if (leave_current(host->ctx_session(ctx)) != SM_OK) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "test_leave_room", NULL);
}

static void get_attr(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *key = json_string_value(json_object_get(payload, "key"));
    const char *value = host->session_get_attr(host->ctx_session(ctx), key);
    json_t *p = json_pack("{s:s?}", "value", value);
    if (p)
        host->reply(ctx, "test_get_attr", p);
    else
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
    json_decref(p);
}

static const sm_field room_schema[] = {
    {"room", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field attr_schema[] = {
    {"key", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"test_enter_room", enter_room, SM_ACTION_NO_RATE_LIMIT, room_schema},
    {"test_leave_room", leave_room, SM_ACTION_NO_RATE_LIMIT, NULL},
    {"test_get_attr", get_attr, SM_ACTION_NO_RATE_LIMIT, attr_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **data)
{
    host = h;
    *data = NULL;
    return h->register_actions(self, actions);
}

SM_PLUGIN_DECLARE(.name = "test_room_helper", .version = "1",
                  .description = "messaging tests: sets rooms.current and the room topic",
                  .init = init);
