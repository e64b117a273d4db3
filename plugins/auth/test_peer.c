/* Test stand-in for the rooms and messaging plugins: on LOGGED_IN it sets
 * the session attributes they will set ("rooms.current",
 * "messaging.unread_count"), so plugin_test_auth can check that auth's
 * replies carry them. Not shipped. */
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

static int init(sm_plugin *self, const sm_host *h, void **data)
{
    host = h;
    *data = NULL;
    return h->subscribe(self, SM_EVENT_LOGGED_IN, logged_in);
}

SM_PLUGIN_DECLARE(.name = "auth_peer", .version = "1.0",
                  .description = "sets the attributes rooms and messaging will set",
                  .init = init);
