/* A deleted account (SM_EVENT_USER_DELETED, from safemessenger-admin users
 * delete): its requests, friendships and blocks, both ways, go with it,
 * so a new account of the same name starts with none of them. */
#include "friends.h"

static const char *const forget_sql[] = {
    "DELETE FROM friends_requests WHERE from_lower = ?1 OR to_lower = ?1",
    "DELETE FROM friends_pairs WHERE a_lower = ?1 OR b_lower = ?1",
    "DELETE FROM friends_blocks WHERE blocker_lower = ?1 OR blocked_lower = ?1",
};

static int forget(friends *fr, const char *lower, const char *unused)
{
    (void)unused;
    const sm_host *h = fr->host;
    for (size_t i = 0; i < sizeof forget_sql / sizeof forget_sql[0]; i++) {
        sm_stmt *st = NULL;
        int rc = h->db_prepare(fr->self, forget_sql[i], &st);
        if (rc == SM_OK)
            rc = h->db_bind_text(st, 1, lower, -1);
        if (rc == SM_OK)
            rc = h->db_step(st) == SM_DONE ? SM_OK : SM_ERROR;
        h->db_finalize(st);
        if (rc != SM_OK)
            return rc;
    }
    return SM_OK;
}

void fr_on_user_deleted(const sm_event_info *info, void *plugin_data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *username = info->username;
    (void)session;
    friends *fr = plugin_data;
    char lower[FR_NAME_MAX + 1];
    if (event != SM_EVENT_USER_DELETED || !username ||
        sm_name_fold(username, lower, sizeof lower) != SM_OK)
        return;
    if (fr_transaction(fr, forget, lower, NULL) != SM_OK)
        fr->host->log(fr->self, SM_LOG_ERROR, "cannot delete the friends data of a deleted user");
}
