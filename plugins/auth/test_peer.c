/* Test stand-in for the rooms and messaging plugins: on LOGGED_IN it sets
 * the session attributes they will set ("rooms.current",
 * "messaging.unread_count"), so plugin_test_auth can check that auth's
 * replies carry them; and, as messaging and friends do, it looks accounts
 * up through the users service auth provides:
 *   peer_lookup {"name": s} or {"id": n}
 *     -> {"status": <user_lookup's sm_status>, "id", "name", "public_key"}.
 * Not shipped. */
#include "safemessenger/plugin.h"

static const sm_host *host;

static void logged_in(sm_core_event event, sm_session_id session, const char *username,
                      void *data)
{
    (void)event;
    (void)username;
    (void)data;
    host->session_set_attr(session, "rooms.current", "lobby");
    host->session_set_attr(session, "messaging.unread_count", "7");
}

static void peer_lookup(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const json_t *id = json_object_get(payload, "id");
    sm_user_info info = {.size = sizeof info};
    int rc = json_is_integer(id)
                 ? host->user_lookup_id((int64_t)json_integer_value(id), &info)
                 : host->user_lookup(json_string_value(json_object_get(payload, "name")), &info);
    json_t *r = rc == SM_OK ? json_pack("{s:i, s:I, s:s, s:s?}", "status", rc, "id",
                                        (json_int_t)info.id, "name", info.name, "public_key",
                                        info.public_key)
                            : json_pack("{s:i}", "status", rc);
    host->reply(ctx, "peer_lookup", r);
    json_decref(r);
}

static const sm_action actions[] = {
    {"peer_lookup", peer_lookup, 0, NULL},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **data)
{
    host = h;
    *data = NULL;
    int rc = h->register_actions(self, actions);
    return rc == SM_OK ? h->subscribe(self, SM_EVENT_LOGGED_IN, logged_in) : rc;
}

SM_PLUGIN_DECLARE(.name = "auth_peer", .version = "1.0",
                  .description = "sets the attributes rooms and messaging will set",
                  .init = init);
