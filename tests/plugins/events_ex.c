/* Core events through sm_host.subscribe_ex, for the core's tests: records
 * the last sm_event_info per event kind.
 *   events_ex_seen {} -> {"<event number>": {"size", "session", "username",
 *                         "room"}, ...} */
#include <stdio.h>

#include "safemessenger/plugin.h"

static const sm_host *host;
static json_t *seen;

static void on_event(const sm_event_info *info, void *plugin_data)
{
    (void)plugin_data;
    char key[16];
    snprintf(key, sizeof key, "%d", (int)info->event);
    const char *room = SM_EVENT_INFO_HAS(info, room) ? info->room : NULL;
    json_object_set_new(seen, key,
                        json_pack("{s:I, s:I, s:s?, s:s?}", "size", (json_int_t)info->size,
                                  "session", (json_int_t)info->session, "username",
                                  info->username, "room", room));
}

static void events_ex_seen(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    host->reply(ctx, "events_ex_seen", seen);
}

static const sm_action actions[] = {
    {"events_ex_seen", events_ex_seen, 0, NULL},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    *plugin_data = NULL;
    if (!SM_HOST_HAS(h, subscribe_ex))
        return SM_ESTATE;
    seen = json_object();
    if (!seen)
        return SM_ENOMEM;
    int rc = h->register_actions(self, actions);
    for (int e = SM_EVENT_SESSION_OPENED; rc == SM_OK && e < SM_EVENT_COUNT; e++)
        rc = h->subscribe_ex(self, (sm_core_event)e, on_event);
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

SM_PLUGIN_DECLARE(.name = "events_ex", .version = "1.0",
                  .description = "tests: core events through subscribe_ex", .init = init,
                  .fini = fini);
