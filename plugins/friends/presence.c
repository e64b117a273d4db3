/* Presence: friend_online when a user's first session logs in and
 * friend_offline when the last one logs out or closes, to the user's
 * friends (sessions of friends who are offline simply get nothing).
 * A second device changes nothing for the friends, on the same node or
 * on another node of a cluster. */
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

void fr_on_presence_event(const sm_event_info *info, void *plugin_data)
{
    friends *fr = plugin_data;
    if (!info->username || !fr->stmt[FR_FRIENDS_OF])
        return;
    /* The core fires these once per change of the user's presence,
     * counting every session on every node (plugin.h). */
    if (info->event == SM_EVENT_USER_ONLINE)
        tell_friends(fr, info->username, "friend_online");
    else if (info->event == SM_EVENT_USER_OFFLINE)
        tell_friends(fr, info->username, "friend_offline");
}
