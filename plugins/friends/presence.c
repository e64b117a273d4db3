/* Presence: friend_online when a user's first session logs in and
 * friend_offline when the last one logs out or closes, to the user's
 * friends (sessions of friends who are offline simply get nothing).
 * A second device changes nothing for the friends. */
#include "friends.h"

static void tell_friends(friends *fr, const char *username, const char *action)
{
    char key[FR_NAME_MAX + 1];
    fr_names names = {0};
    if (sm_name_fold(username, key, sizeof key) != SM_OK ||
        fr_list(fr, FR_FRIENDS_OF, key, &names) != SM_OK) {
        fr->host->log(fr->self, SM_LOG_ERROR, "%s of %s not sent: friends list unreadable",
                      action, username);
        return;
    }
    for (size_t i = 0; i < names.n; i++)
        fr_notify(fr, names.name[i], action, "username", username);
    fr_names_free(&names);
}

void fr_on_session_event(const sm_event_info *info, void *plugin_data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *username = info->username;
    (void)session;
    friends *fr = plugin_data;
    if (!username || !fr->stmt[FR_FRIENDS_OF])
        return;
    /* The core counts the session among the user's sessions during both
     * events: it is added before LOGGED_IN and removed after LOGGED_OUT.
     * So 1 means "the first one" at login and "the last one" at logout. */
    size_t count = fr->host->user_sessions(username, NULL, 0);
    if (count != 1)
        return;
    if (event == SM_EVENT_LOGGED_IN)
        tell_friends(fr, username, "friend_online");
    else if (event == SM_EVENT_LOGGED_OUT)
        tell_friends(fr, username, "friend_offline");
}
