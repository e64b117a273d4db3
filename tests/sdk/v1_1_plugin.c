/* A plugin as built against the SDK before the SDK services
 * (tests/sdk/v1_1/safemessenger/plugin.h, the only SDK header on this
 * file's include path): its host table ends at room_deleted, and it
 * takes core events through the old sm_event_fn. Today's server must
 * still serve it exactly as before. tests/testhost/test_abi.c loads it as
 * "v1_1_shape".
 *
 * Events: it records, per event kind, the last (session, username) its
 * old-style callback got.
 * Actions:
 *   v11_seen {} -> {"built_host_size", "host_size",
 *                   "<event number>": {"session", "username"}, ...}
 *   v11_delete_room {"room": s} -> calls room_deleted, then as v11_seen
 *   v11_publish {"topic": s} -> joins the topic, then topic_publish
 *                                {"from": <its username>} to all but itself */
#include <stdio.h>
#include <string.h>

#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *self_plugin;
static json_t *seen; /* event number -> {"session", "username"} */

static void on_event(sm_core_event event, sm_session_id session, const char *username,
                     void *plugin_data)
{
    (void)plugin_data;
    char key[16];
    snprintf(key, sizeof key, "%d", (int)event);
    json_object_set_new(seen, key,
                        json_pack("{s:I, s:s?}", "session", (json_int_t)session, "username",
                                  username));
}

static void reply_seen(sm_ctx *ctx, const char *action, int status)
{
    json_t *r = json_pack("{s:I, s:I, s:i, s:O}", "built_host_size", (json_int_t)sizeof(sm_host),
                          "host_size", (json_int_t)host->size, "status", status, "seen", seen);
    if (!r) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, action, r);
    json_decref(r);
}

static void v11_seen(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    reply_seen(ctx, "v11_seen", SM_OK);
}

static void v11_delete_room(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    int rc = host->room_deleted(self_plugin, json_string_value(json_object_get(payload, "room")));
    reply_seen(ctx, "v11_delete_room", rc);
}

static void v11_publish(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    sm_session_id sid = host->ctx_session(ctx);
    const char *topic = json_string_value(json_object_get(payload, "topic"));
    int rc = host->topic_join(topic, sid);
    json_t *ev = json_pack("{s:s?}", "from", host->session_username(sid));
    if (rc == SM_OK)
        rc = ev ? host->topic_publish(topic, "v11_event", ev, sid) : SM_ENOMEM;
    json_decref(ev);
    json_t *r = json_pack("{s:i}", "status", rc);
    host->reply(ctx, "v11_publish", r);
    json_decref(r);
}

static const sm_field room_schema[] = {
    {"room", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_field topic_schema[] = {
    {"topic", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, 64},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"v11_seen", v11_seen, 0, NULL},
    {"v11_delete_room", v11_delete_room, 0, room_schema},
    {"v11_publish", v11_publish, SM_ACTION_NEEDS_LOGIN, topic_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    self_plugin = self;
    *plugin_data = NULL;
    seen = json_object();
    if (!seen)
        return SM_ENOMEM;
    int rc = h->register_actions(self, actions);
    for (int e = SM_EVENT_SESSION_OPENED; rc == SM_OK && e < SM_EVENT_COUNT; e++)
        rc = h->subscribe(self, (sm_core_event)e, on_event);
    if (rc != SM_OK) {
        json_decref(seen);
        seen = NULL;
    }
    return rc;
}

static void fini(void *data)
{
    (void)data;
    json_decref(seen);
    seen = NULL;
}

SM_PLUGIN_DECLARE(.name = "v1_1_shape", .version = "1.1",
                  .description = "tests: built before the SDK services", .init = init,
                  .fini = fini);
