/* Friends: friend requests, the friends list with presence, and a block
 * list enforced through the core's policy hook (PROTOCOL.md section 7;
 * blocking is this plugin's extension, see docs/PROTOCOL.md).
 *
 * This file: life cycle, the action table and the friendship handlers.
 * store.c holds the SQL, presence.c friend_online/friend_offline,
 * blocking.c the block list and the policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "friends.h"

static const sm_migration migrations[] = {
    {1, "CREATE TABLE friends_requests (from_lower TEXT NOT NULL, to_lower TEXT NOT NULL,"
        " created_at REAL NOT NULL, PRIMARY KEY (from_lower, to_lower));"
        "CREATE INDEX friends_requests_to ON friends_requests (to_lower, created_at);"
        "CREATE TABLE friends_pairs (a_lower TEXT NOT NULL, b_lower TEXT NOT NULL,"
        " created_at REAL NOT NULL, PRIMARY KEY (a_lower, b_lower),"
        " CHECK (a_lower < b_lower));"
        "CREATE INDEX friends_pairs_b ON friends_pairs (b_lower);"
        "CREATE TABLE friends_blocks (blocker_lower TEXT NOT NULL,"
        " blocked_lower TEXT NOT NULL, created_at REAL NOT NULL,"
        " PRIMARY KEY (blocker_lower, blocked_lower))"},
    /* Requests a policy dropped are kept, hidden from their target. */
    {2, "ALTER TABLE friends_requests ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0"},
    {0, NULL},
};

/* ---- helpers shared with presence.c and blocking.c ---- */

void fr_reply(friends *fr, sm_ctx *ctx, const char *action, json_t *payload)
{
    if (!payload) {
        fr_reply_internal(fr, ctx);
        return;
    }
    fr->host->reply(ctx, action, payload);
    json_decref(payload);
}

void fr_reply_internal(friends *fr, sm_ctx *ctx)
{
    fr->host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
}

void fr_notify(friends *fr, const char *user, const char *action, const char *field,
               const char *value)
{
    json_t *p = json_pack("{s:s}", field, value);
    if (!p || fr->host->send_event_user(user, action, p) != SM_OK)
        fr->host->log(fr->self, SM_LOG_WARNING, "%s to %s not sent", action, user);
    json_decref(p);
}

int fr_me(friends *fr, sm_ctx *ctx, const char **name, char *lower, size_t lower_len)
{
    const char *me = fr->host->session_username(fr->host->ctx_session(ctx));
    if (!me || sm_name_fold(me, lower, lower_len) != SM_OK) {
        fr_reply_internal(fr, ctx);
        return SM_ERROR;
    }
    *name = me;
    return SM_OK;
}

int fr_target(friends *fr, sm_ctx *ctx, const json_t *payload, const char *field,
              char *lower, char *canon)
{
    /* The schema has checked the name: 3 to 32 name characters. */
    const char *asked = json_string_value(json_object_get(payload, field));
    int rc = sm_name_fold(asked, lower, FR_NAME_MAX + 1);
    if (rc == SM_OK)
        rc = fr_user_get(fr, lower, canon, FR_NAME_MAX + 1);
    if (rc == SM_ENOTFOUND)
        fr->host->reply_error(ctx, SM_ERR_NOT_FOUND, "no such user");
    else if (rc != SM_OK)
        fr_reply_internal(fr, ctx);
    return rc == SM_OK ? SM_OK : SM_ERROR;
}

/* Replies {success:true, friend_username, message}; the message is
 * before + other + after. */
static void reply_done(friends *fr, sm_ctx *ctx, const char *action, const char *other,
                       const char *before, const char *after)
{
    char message[160];
    int n = snprintf(message, sizeof message, "%s%s%s", before, other, after);
    if (n < 0 || (size_t)n >= sizeof message) {
        fr_reply_internal(fr, ctx);
        return;
    }
    fr_reply(fr, ctx, action,
             json_pack("{s:b, s:s, s:s}", "success", 1, "friend_username", other, "message",
                       message));
}

/* ---- friendship handlers ---- */

/* Turns requester's pending request to accepter into a friendship (run in a
 * transaction). A request the other way cannot exist, but would be stale. */
static int befriend(friends *fr, const char *requester, const char *accepter)
{
    int rc = fr_exec(fr, FR_REQ_DEL, requester, accepter, 0);
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_REQ_DEL, accepter, requester, 0);
    if (rc == SM_OK)
        rc = fr_exec(fr, FR_PAIR_ADD, requester, accepter, fr->host->now());
    return rc;
}

static void send_friend_request(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const sm_host *h = fr->host;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK)
        return;
    const char *asked = json_string_value(json_object_get(payload, "friend_username"));
    if (sm_name_fold(asked, their_key, sizeof their_key) == SM_OK &&
        strcmp(their_key, my_key) == 0) {
        h->reply_error(ctx, SM_ERR_MALFORMED, "you cannot send a friend request to yourself");
        return;
    }
    if (fr_target(fr, ctx, payload, "friend_username", their_key, them) != SM_OK)
        return;
    int friends_now = fr_exists(fr, FR_PAIR_GET, my_key, their_key);
    int pending = fr_exists(fr, FR_REQ_ANY_GET, my_key, their_key);
    int blocked = fr_exists(fr, FR_BLOCK_GET, my_key, their_key);
    int incoming = fr_exists(fr, FR_REQ_GET, their_key, my_key);
    if (friends_now < 0 || pending < 0 || blocked < 0 || incoming < 0) {
        fr_reply_internal(fr, ctx);
        return;
    }
    if (friends_now || pending) {
        h->reply_error(ctx, SM_ERR_CONFLICT,
                       friends_now ? "already friends" : "a friend request is already pending");
        return;
    }
    /* The target would otherwise get a request they cannot reply to
     * without becoming friends with someone the sender keeps blocked. */
    if (blocked) {
        h->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "you have blocked this user; unblock first");
        return;
    }
    int verdict = h->policy_check(SM_INTERACTION_FRIEND_REQUEST, me, them);
    if (verdict == SM_VERDICT_DENY) {
        h->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "not allowed to send this user a request");
        return;
    }
    if (verdict == SM_VERDICT_DROP) {
        /* Refused silently (e.g. the target blocked us): looks sent, and is
         * kept hidden so that a repeat gets the 1010 any pending request
         * gets. The target never sees it. */
        if (fr_exec(fr, FR_REQ_ADD_HIDDEN, my_key, their_key, h->now()) != SM_OK) {
            fr_reply_internal(fr, ctx);
            return;
        }
        reply_done(fr, ctx, "friend_request_response", them, "Friend request sent to ", "");
        return;
    }
    if (incoming) {
        if (fr_transaction(fr, befriend, their_key, my_key) != SM_OK) {
            fr_reply_internal(fr, ctx);
            return;
        }
        /* Events are held for the acting session until the reply. */
        fr_notify(fr, me, "friend_request_accepted", "friend_username", them);
        fr_notify(fr, them, "friend_request_accepted", "friend_username", me);
        reply_done(fr, ctx, "friend_request_response", them, "You and ", " are now friends");
        return;
    }
    double at = h->now();
    if (fr_exec(fr, FR_REQ_ADD, my_key, their_key, at) != SM_OK) {
        fr_reply_internal(fr, ctx);
        return;
    }
    json_t *ev = json_pack("{s:s, s:f}", "from", me, "timestamp", at);
    if (!ev || h->send_event_user(them, "friend_request", ev) != SM_OK)
        h->log(fr->self, SM_LOG_WARNING, "friend_request to %s not sent", them);
    json_decref(ev);
    reply_done(fr, ctx, "friend_request_response", them, "Friend request sent to ", "");
}

/* The requester is told; the accepter's own sessions are not (PROTOCOL.md
 * lists the event for the requester only). */
static void accept_friend_request(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const sm_host *h = fr->host;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK ||
        fr_target(fr, ctx, payload, "friend_username", their_key, them) != SM_OK)
        return;
    int friends_now = fr_exists(fr, FR_PAIR_GET, my_key, their_key);
    int pending = fr_exists(fr, FR_REQ_GET, their_key, my_key);
    if (friends_now < 0 || pending < 0) {
        fr_reply_internal(fr, ctx);
        return;
    }
    if (friends_now) {
        h->reply_error(ctx, SM_ERR_CONFLICT, "already friends");
        return;
    }
    if (!pending) {
        h->reply_error(ctx, SM_ERR_NOT_FOUND, "no pending friend request from this user");
        return;
    }
    if (fr_transaction(fr, befriend, their_key, my_key) != SM_OK) {
        fr_reply_internal(fr, ctx);
        return;
    }
    fr_notify(fr, them, "friend_request_accepted", "friend_username", me);
    reply_done(fr, ctx, "friend_request_accept_response", them, "You and ", " are now friends");
}

/* Deletes the row (a, b) through the table's get and delete statements.
 * Returns 1 when the row was there and is gone; otherwise it has already
 * replied (1009 with not_found, or 1005) and returns 0. */
static int take_row(friends *fr, sm_ctx *ctx, fr_stmt_id get, fr_stmt_id del, const char *a,
                    const char *b, const char *not_found)
{
    int present = fr_exists(fr, get, a, b);
    if (present < 0 || (present && fr_exec(fr, del, a, b, 0) != SM_OK)) {
        fr_reply_internal(fr, ctx);
        return 0;
    }
    if (!present) {
        fr->host->reply_error(ctx, SM_ERR_NOT_FOUND, not_found);
        return 0;
    }
    return 1;
}

/* The requester is not told (PROTOCOL.md section 7). */
static void decline_friend_request(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK ||
        fr_target(fr, ctx, payload, "friend_username", their_key, them) != SM_OK)
        return;
    if (!take_row(fr, ctx, FR_REQ_GET, FR_REQ_DEL, their_key, my_key,
                  "no pending friend request from this user"))
        return;
    reply_done(fr, ctx, "friend_request_decline_response", them, "Friend request from ",
               " declined");
}

static void remove_friend(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    friends *fr = plugin_data;
    const char *me;
    char my_key[FR_NAME_MAX + 1], their_key[FR_NAME_MAX + 1], them[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK ||
        fr_target(fr, ctx, payload, "friend_username", their_key, them) != SM_OK)
        return;
    int friends_now = fr_exists(fr, FR_PAIR_GET, my_key, their_key);
    if (friends_now < 0 ||
        (friends_now && fr_exec(fr, FR_PAIR_DEL, my_key, their_key, 0) != SM_OK)) {
        fr_reply_internal(fr, ctx);
        return;
    }
    if (!friends_now) {
        fr->host->reply_error(ctx, SM_ERR_NOT_FOUND, "not friends with this user");
        return;
    }
    fr_notify(fr, them, "friend_removed", "friend_username", me);
    fr_reply(fr, ctx, "remove_friend", json_pack("{s:s}", "friend_username", them));
}

int fr_my_list(friends *fr, sm_ctx *ctx, fr_stmt_id id, fr_names *out)
{
    const char *me;
    char my_key[FR_NAME_MAX + 1];
    if (fr_me(fr, ctx, &me, my_key, sizeof my_key) != SM_OK)
        return SM_ERROR;
    if (fr_list(fr, id, my_key, out) != SM_OK) {
        fr_reply_internal(fr, ctx);
        return SM_ERROR;
    }
    return SM_OK;
}

/* The list waits for whether each friend has a session anywhere (on
 * another node of a cluster, Redis says). */
typedef struct friends_query {
    friends *fr;
    sm_ctx *ctx;
    fr_names names;
} friends_query;

static void reply_friends(friends_query *q, const int *online)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < q->names.n; i++) {
        json_t *item = json_pack("{s:s, s:b}", "username", q->names.name[i], "online",
                                 online ? online[i]
                                        : q->fr->host->user_sessions(q->names.name[i], NULL,
                                                                     0) > 0);
        if (json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    fr_reply(q->fr, q->ctx, "friends_list", list ? json_pack("{s:o}", "friends", list) : NULL);
}

static void friends_online(int status, const int *online, size_t n, void *arg)
{
    friends_query *q = arg;
    /* SM_EBUSY (Redis unreachable): this node's answer, the best there is. */
    (void)status;
    reply_friends(q, n == q->names.n ? online : NULL);
    fr_names_free(&q->names);
    free(q);
}

static void get_friends_list(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    friends *fr = plugin_data;
    const sm_host *h = fr->host;
    friends_query local = {.fr = fr, .ctx = ctx};
    if (fr_my_list(fr, ctx, FR_FRIENDS_OF, &local.names) != SM_OK)
        return;
    friends_query *q = SM_HOST_HAS(h, topic_users) ? malloc(sizeof *q) : NULL;
    if (q) {
        *q = local;
        h->defer(ctx);
        if (h->users_online(fr->self, (const char *const *)q->names.name, q->names.n,
                            friends_online, q) == SM_OK)
            return; /* q is friends_online's */
        free(q);
    }
    reply_friends(&local, NULL);
    fr_names_free(&local.names);
}

static void get_friend_requests(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    friends *fr = plugin_data;
    fr_names names = {0};
    if (fr_my_list(fr, ctx, FR_REQUESTS_TO, &names) != SM_OK)
        return;
    json_t *list = json_array();
    for (size_t i = 0; list && i < names.n; i++) {
        json_t *item = json_pack("{s:s, s:f}", "from", names.name[i], "timestamp", names.num[i]);
        if (json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    fr_names_free(&names);
    fr_reply(fr, ctx, "friend_requests", list ? json_pack("{s:o}", "requests", list) : NULL);
}

/* ---- the action table ---- */

static const sm_field friend_schema[] = {
    {"friend_username", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field user_schema[] = {
    {"username", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"send_friend_request", send_friend_request, SM_ACTION_NEEDS_LOGIN, friend_schema},
    {"accept_friend_request", accept_friend_request, SM_ACTION_NEEDS_LOGIN, friend_schema},
    {"decline_friend_request", decline_friend_request, SM_ACTION_NEEDS_LOGIN, friend_schema},
    {"remove_friend", remove_friend, SM_ACTION_NEEDS_LOGIN, friend_schema},
    {"get_friends_list", get_friends_list, SM_ACTION_NEEDS_LOGIN, NULL},
    {"get_friend_requests", get_friend_requests, SM_ACTION_NEEDS_LOGIN, NULL},
    {"block_user", fr_block_user, SM_ACTION_NEEDS_LOGIN, user_schema},
    {"unblock_user", fr_unblock_user, SM_ACTION_NEEDS_LOGIN, user_schema},
    {"get_blocked_users", fr_get_blocked_users, SM_ACTION_NEEDS_LOGIN, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- life cycle ---- */

/* friends.private_messages: *friends_only 1 for "friends", 0 for
 * "anyone" (the default); read at init and on a reload. */
static int read_mode(const sm_host *host, sm_plugin *self, int *friends_only)
{
    const char *mode = "anyone";
    int rc = host->config_string(self, "private_messages", &mode);
    if (rc == SM_OK && strcmp(mode, "anyone") != 0 && strcmp(mode, "friends") != 0) {
        host->log(self, SM_LOG_ERROR,
                  "friends.private_messages must be \"anyone\" or \"friends\", not \"%s\"", mode);
        rc = SM_EINVAL;
    }
    *friends_only = rc == SM_OK && strcmp(mode, "friends") == 0;
    return rc;
}

/* SIGHUP: the policy answers by the new mode from the next message on. */
static int reload(void *plugin_data, int apply)
{
    friends *fr = plugin_data;
    int friends_only;
    int rc = read_mode(fr->host, fr->self, &friends_only);
    if (rc == SM_OK && apply)
        fr->friends_only = friends_only;
    return rc;
}

static int init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    /* The users service and subscribe_ex came after the policy hook. */
    if (!SM_HOST_HAS(host, user_lookup_id)) {
        host->log(self, SM_LOG_ERROR, "friends needs a server with the users service");
        return SM_ESTATE;
    }
    friends *fr = calloc(1, sizeof *fr);
    if (!fr)
        return SM_ENOMEM;
    fr->host = host;
    fr->self = self;
    int rc = read_mode(host, self, &fr->friends_only);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->register_migrations(self, migrations);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_USER_ONLINE, fr_on_presence_event);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_USER_OFFLINE, fr_on_presence_event);
    if (rc == SM_OK)
        rc = host->register_policy(self, fr_policy);
    if (rc == SM_OK && SM_HOST_HAS(host, user_deleted))
        rc = host->subscribe_ex(self, SM_EVENT_USER_DELETED, fr_on_user_deleted);
    /* An older server has no reload: the mode then stays as read. */
    if (rc == SM_OK && SM_HOST_HAS(host, register_reload))
        rc = host->register_reload(self, reload);
    if (rc != SM_OK)
        goto fail;
    *plugin_data = fr;
    return SM_OK;
fail:
    free(fr);
    return rc;
}

static int start(void *plugin_data)
{
    friends *fr = plugin_data;
    /* Names are checked and spelled by the users service (auth). */
    if (fr->host->user_lookup(NULL, NULL) == SM_ESTATE) {
        fr->host->log(fr->self, SM_LOG_ERROR, "friends needs a users provider (the auth plugin)");
        return SM_ERROR;
    }
    int rc = fr_store_prepare(fr);
    if (rc != SM_OK)
        fr_store_finalize(fr);
    return rc;
}

static void fini(void *plugin_data)
{
    friends *fr = plugin_data;
    fr_store_finalize(fr);
    free(fr);
}

SM_PLUGIN_DECLARE(.name = "friends", .version = "1.0",
                  .description = "friend requests, friends list with presence, blocking",
                  .init = init, .fini = fini, .start = start);
