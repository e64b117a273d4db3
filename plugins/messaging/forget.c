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

/* Runs sql with ?1 = key; the number of rows deleted, or -1. */
static long long delete_where(messaging *m, const char *sql, const char *key)
{
    const sm_host *h = m->host;
    sm_stmt *st = NULL;
    int rc = h->db_prepare(m->self, sql, &st);
    if (rc == SM_OK)
        rc = h->db_bind_text(st, 1, key, -1);
    if (rc == SM_OK)
        rc = h->db_step(st) == SM_DONE ? SM_OK : SM_ERROR;
    long long n = rc == SM_OK ? (long long)h->db_changes(m->self) : -1;
    h->db_finalize(st);
    return n;
}

void messaging_on_user_deleted(const sm_event_info *info, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    if (info->event != SM_EVENT_USER_DELETED || !info->username)
        return;
    char lower[STORE_NAME_MAX + 1];
    if (sm_name_fold(info->username, lower, sizeof lower) != SM_OK)
        return; /* no account has such a name */
    long long n = delete_where(m,
                               "DELETE FROM messaging_messages"
                               " WHERE sender_lower = ?1 OR recipient_lower = ?1",
                               lower);
    if (n >= 0)
        h->log(m->self, SM_LOG_INFO, "deleted %lld messages of a deleted user", n);
    else
        h->log(m->self, SM_LOG_ERROR, "cannot delete the messages of a deleted user");
}

void messaging_on_room_deleted(const sm_event_info *info, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    if (info->event != SM_EVENT_ROOM_DELETED || !info->room)
        return;
    /* room_lower is what post_public stored: the same ASCII folding as the
     * rooms plugin's key, so "Lobby" and "LOBBY" are one history. */
    char lower[STORE_NAME_MAX];
    if (sm_name_fold(info->room, lower, sizeof lower) != SM_OK) {
        h->log(m->self, SM_LOG_WARNING, "a deleted room's name is not a room name");
        return;
    }
    long long n = delete_where(m,
                               "DELETE FROM messaging_messages"
                               " WHERE kind = 'public' AND room_lower = ?1",
                               lower);
    if (n >= 0)
        h->log(m->self, SM_LOG_INFO, "deleted %lld messages of deleted room %s", n, lower);
    else
        h->log(m->self, SM_LOG_ERROR, "cannot delete the history of deleted room %s", lower);
}
