/* A deleted account (SM_EVENT_USER_DELETED): every message it sent, in
 * rooms and in private, and every private message sent to it. Room
 * history loses the deleted user's lines; nothing of theirs stays behind
 * for a new account of the same name to inherit.
 *
 * A deleted room (SM_EVENT_ROOM_DELETED): its whole history, so a room
 * created later under the same name, in any case, shows none of it.
 *
 * Each is one DELETE statement, atomic on its own: all or nothing. */
#include "messaging.h"

void messaging_on_user_deleted(const sm_event_info *info, void *data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *username = info->username;
    (void)session;
    messaging *m = data;
    const sm_host *h = m->host;
    if (event != SM_EVENT_USER_DELETED || !username)
        return;
    char lower[STORE_NAME_MAX + 1];
    if (sm_name_fold(username, lower, sizeof lower) != SM_OK)
        return; /* no account has such a name */
    sm_stmt *st = NULL;
    int rc = h->db_prepare(m->self,
                           "DELETE FROM messaging_messages"
                           " WHERE sender_lower = ?1 OR recipient_lower = ?1",
                           &st);
    if (rc == SM_OK)
        rc = h->db_bind_text(st, 1, lower, -1);
    if (rc == SM_OK)
        rc = h->db_step(st) == SM_DONE ? SM_OK : SM_ERROR;
    if (rc == SM_OK)
        h->log(m->self, SM_LOG_INFO, "deleted %lld messages of a deleted user",
               (long long)h->db_changes(m->self));
    else
        h->log(m->self, SM_LOG_ERROR, "cannot delete the messages of a deleted user");
    h->db_finalize(st);
}

void messaging_on_room_deleted(const sm_event_info *info, void *data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *room = info->room;
    (void)session;
    messaging *m = data;
    const sm_host *h = m->host;
    char lower[STORE_NAME_MAX];
    if (event != SM_EVENT_ROOM_DELETED || !room)
        return;
    /* room_lower is what post_public stored: the same ASCII folding as the
     * rooms plugin's key, so "Lobby" and "LOBBY" are one history. */
    if (sm_name_fold(room, lower, sizeof lower) != SM_OK) {
        h->log(m->self, SM_LOG_WARNING, "a deleted room's name is not a room name");
        return;
    }
    sm_stmt *st = NULL;
    int rc = h->db_prepare(m->self,
                           "DELETE FROM messaging_messages"
                           " WHERE kind = 'public' AND room_lower = ?1",
                           &st);
    if (rc == SM_OK)
        rc = h->db_bind_text(st, 1, lower, -1);
    if (rc == SM_OK)
        rc = h->db_step(st) == SM_DONE ? SM_OK : SM_ERROR;
    if (rc == SM_OK)
        h->log(m->self, SM_LOG_INFO, "deleted %lld messages of deleted room %s",
               (long long)h->db_changes(m->self), lower);
    else
        h->log(m->self, SM_LOG_ERROR, "cannot delete the history of deleted room %s", lower);
    h->db_finalize(st);
}
