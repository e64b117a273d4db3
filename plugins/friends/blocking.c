/* Blocking (an extension of PROTOCOL.md, documented in docs/PROTOCOL.md):
 * a user's block list, and the policy that makes the core's
 * policy_check drop what a blocked user sends to the blocker (private
 * messages, friend requests) without telling the sender: every reply the
 * blocked user can provoke is the one an unblocked user in the same state
 * would get (docs/PROTOCOL.md section 8), and, in
 * friends.private_messages = "friends" mode, deny private messages
 * between users who are not friends. */
#include <string.h>

#include "friends.h"

/* Blocking ends the friendship (the caller tells the blocked user as
 * remove_friend would) and withdraws the blocker's own request. The
 * blocked user's request to the blocker stays pending, hidden: the blocked
 * user, asking again, gets the 1010 they got before the block. */
static int block_tx(friends *fr, const char *blocker, const char *blocked)
{
    int rc = fr_exec(fr, FR_BLOCK_ADD, blocker, blocked, fr->host->now());
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_PAIR_DEL, blocker, blocked, 0);
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_REQ_DEL, blocker, blocked, 0);
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_REQ_HIDE, blocked, blocker, 0);
    return rc;
}

/* A hidden request of the blocked user goes with the block, as if the
 * blocker had declined it (which the requester is never told). */
static int unblock_tx(friends *fr, const char *blocker, const char *blocked)
{
    int rc = fr_exec(fr, FR_BLOCK_DEL, blocker, blocked, 0);
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_REQ_DEL_HIDDEN, blocked, blocker, 0);
    return rc;
}

void fr_block_user(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK)
        return;
    const char *asked = json_string_value(json_object_get(payload, "username"));
    if (sm_name_fold(asked, their_key, sizeof their_key) == SM_OK &&
        strcmp(their_key, my_key) == 0) {
        fr->host->reply_error(ctx, SM_ERR_MALFORMED, "you cannot block yourself");
        return;
    }
    if (fr_target(fr, ctx, payload, "username", their_key, them) != SM_OK)
        return;
    /* Blocking again is no error: it keeps the first block's time. */
    int friends_now = fr_exists(fr, FR_PAIR_GET, my_key, their_key);
    if (friends_now < 0 || fr_transaction(fr, block_tx, my_key, their_key) != SM_OK) {
        fr_reply_internal(fr, ctx);
        return;
    }
    /* What remove_friend tells: a friendship that vanished without it
     * would tell the blocked user more. */
    if (friends_now)
        fr_notify(fr, them, "friend_removed", "friend_username", me);
    fr_reply(fr, ctx, "block_user", json_pack("{s:s}", "username", them));
}

void fr_unblock_user(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK ||
        fr_target(fr, ctx, payload, "username", their_key, them) != SM_OK)
        return;
    int blocked = fr_exists(fr, FR_BLOCK_GET, my_key, their_key);
    if (blocked < 0 || (blocked && fr_transaction(fr, unblock_tx, my_key, their_key) != SM_OK)) {
        fr_reply_internal(fr, ctx);
        return;
    }
    if (!blocked) {
        fr->host->reply_error(ctx, SM_ERR_NOT_FOUND, "this user is not blocked");
        return;
    }
    fr_reply(fr, ctx, "unblock_user", json_pack("{s:s}", "username", them));
}

void fr_get_blocked_users(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    friends *fr = plugin_data;
    fr_names names = {0};
    if (fr_my_list(fr, ctx, FR_BLOCKED_BY, &names) != SM_OK)
        return;
    json_t *list = json_array();
    for (size_t i = 0; list && i < names.n; i++) {
        if (json_array_append_new(list, json_string(names.name[i])) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    fr_names_free(&names);
    fr_reply(fr, ctx, "blocked_users", list ? json_pack("{s:o}", "users", list) : NULL);
}

/* Runs for every private message on the server: at most two primary-key
 * lookups. A failed lookup denies rather than lets a blocked user through. */
int fr_policy(sm_interaction what, const char *from_user, const char *to_user,
              void *plugin_data)
{
    friends *fr = plugin_data;
    char from_key[FR_NAME_MAX + 1], to_key[FR_NAME_MAX + 1];
    if (what != SM_INTERACTION_PRIVATE_MESSAGE && what != SM_INTERACTION_FRIEND_REQUEST)
        return SM_VERDICT_ALLOW; /* kinds added later are not ours to judge */
    if (!fr || !fr->stmt[FR_BLOCK_GET] ||
        sm_name_fold(from_user, from_key, sizeof from_key) != SM_OK ||
        sm_name_fold(to_user, to_key, sizeof to_key) != SM_OK)
        return SM_VERDICT_ALLOW;
    /* Blocking first: a blocked sender is dropped even in friends-only
     * mode, where a denial would tell them something. */
    int blocked = fr_exists(fr, FR_BLOCK_GET, to_key, from_key);
    if (blocked != 0) {
        if (blocked < 0)
            fr->host->log(fr->self, SM_LOG_ERROR, "block list unreadable: interaction denied");
        return blocked > 0 ? SM_VERDICT_DROP : SM_VERDICT_DENY;
    }
    if (what != SM_INTERACTION_PRIVATE_MESSAGE || !fr->friends_only ||
        strcmp(from_key, to_key) == 0)
        return SM_VERDICT_ALLOW;
    int pair = fr_exists(fr, FR_PAIR_GET, from_key, to_key);
    if (pair < 0)
        fr->host->log(fr->self, SM_LOG_ERROR, "friends list unreadable: message denied");
    return pair > 0 ? SM_VERDICT_ALLOW : SM_VERDICT_DENY;
}
