/* The friends plugin's shared state and the helpers its files share:
 * friends.c (life cycle, action table, request handlers), store.c (SQL),
 * presence.c (friend_online / friend_offline), blocking.c (block list and
 * the policy). Nothing here is exported from the .so (hidden visibility). */
#ifndef FRIENDS_H
#define FRIENDS_H

#include <stddef.h>

#include "safemessenger/plugin.h"

/* Usernames are at most 32 characters (PROTOCOL.md section 7); session
 * names may be up to 64 bytes (the core's limit), so keys fit 64. */
#define FR_NAME_MAX 64

/* Prepared statements, by purpose (SQL in store.c). */
typedef enum fr_stmt_id {
    FR_PAIR_GET,        /* (a_lower, b_lower) with a < b */
    FR_PAIR_ADD,        /* (a_lower, b_lower, created_at) */
    FR_PAIR_DEL,
    FR_REQ_GET,         /* (from_lower, to_lower): a request the target can see */
    FR_REQ_ADD,         /* (from_lower, to_lower, created_at) */
    FR_REQ_DEL,         /* hidden or not */
    FR_REQ_ANY_GET,     /* (from_lower, to_lower): hidden or not */
    FR_REQ_ADD_HIDDEN,  /* (from_lower, to_lower, created_at) */
    FR_REQ_HIDE,        /* (from_lower, to_lower) */
    FR_REQ_DEL_HIDDEN,  /* (from_lower, to_lower) */
    FR_BLOCK_GET,       /* (blocker_lower, blocked_lower) */
    FR_BLOCK_ADD,       /* (blocker_lower, blocked_lower, created_at) */
    FR_BLOCK_DEL,
    FR_FRIENDS_OF,      /* (lower, lower) -> lower; by name */
    FR_REQUESTS_TO,     /* (to_lower) -> from_lower, created_at; oldest first */
    FR_BLOCKED_BY,      /* (blocker_lower) -> blocked_lower; by name */
    FR_STMT_COUNT
} fr_stmt_id;

typedef struct friends {
    const sm_host *host;
    sm_plugin *self;
    int friends_only;   /* friends.private_messages = "friends" */
    sm_stmt *stmt[FR_STMT_COUNT];
} friends;

/* A list of usernames with an optional number each (request timestamps). */
typedef struct fr_names {
    char **name;
    double *num;
    size_t n, cap;
} fr_names;

/* ---- forget.c ---- */

/* SM_EVENT_USER_DELETED: deletes the user's requests, pairs and blocks. */
void fr_on_user_deleted(const sm_event_info *info, void *plugin_data);

/* ---- store.c ---- */

int fr_store_prepare(friends *fr);
void fr_store_finalize(friends *fr);
/* The registered spelling of the user whose key is lower, through the
 * users service: SM_OK, SM_ENOTFOUND or an error status. */
int fr_user_get(friends *fr, const char *lower, char *out, size_t out_len);
/* 1 if the statement (two keys) finds a row, 0 if not, <0 on error. For
 * FR_PAIR_GET the keys may come in any order. */
int fr_exists(friends *fr, fr_stmt_id id, const char *a, const char *b);
/* Runs an insert or delete with two keys (inserts store `at` as
 * created_at). Inserting a row whose key is there already changes
 * nothing and succeeds; a row another constraint refuses is SM_ERROR
 * (logged). */
int fr_exec(friends *fr, fr_stmt_id id, const char *a, const char *b, double at);
/* The rows of a list statement with one key, in the statement's order,
 * as registered names (keys of deleted accounts left out).
 * `out` is filled only on success; free it with fr_names_free. */
int fr_list(friends *fr, fr_stmt_id id, const char *key, fr_names *out);
void fr_names_free(fr_names *names);
/* The caller's own list (friends, incoming requests, blocked users) for a
 * list action. SM_OK with *out filled; otherwise it has already replied. */
int fr_my_list(friends *fr, sm_ctx *ctx, fr_stmt_id id, fr_names *out);

/* Runs fn between db_begin and db_commit (rolled back when fn fails). */
int fr_transaction(friends *fr, int (*fn)(friends *fr, const char *a, const char *b),
                   const char *a, const char *b);

/* ---- friends.c: replies shared by the handler files ---- */

/* Sends payload (taken: decref'd here) as the reply, 1005 if it is NULL. */
void fr_reply(friends *fr, sm_ctx *ctx, const char *action, json_t *payload);
void fr_reply_internal(friends *fr, sm_ctx *ctx);
/* send_event_user(user, action, {field: value}); failures are logged. */
void fr_notify(friends *fr, const char *user, const char *action, const char *field,
               const char *value);
/* The acting user's name and key; SM_ERROR (1005 sent) if unusable. */
int fr_me(friends *fr, sm_ctx *ctx, const char **name, char *lower, size_t lower_len);
/* Folds and looks up the payload's name field: SM_OK with the key and the
 * registered spelling, or SM_ERROR after replying 1009 / 1005. */
int fr_target(friends *fr, sm_ctx *ctx, const json_t *payload, const char *field,
              char *lower, char *canon);

/* ---- presence.c ---- */

void fr_on_presence_event(const sm_event_info *info, void *plugin_data);

/* ---- blocking.c ---- */

void fr_block_user(sm_ctx *ctx, const json_t *payload, void *plugin_data);
void fr_unblock_user(sm_ctx *ctx, const json_t *payload, void *plugin_data);
void fr_get_blocked_users(sm_ctx *ctx, const json_t *payload, void *plugin_data);
int fr_policy(sm_interaction what, const char *from_user, const char *to_user,
              void *plugin_data);

#endif
