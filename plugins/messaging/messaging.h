/* The messaging plugin's shared state and helpers: messaging.c posts
 * messages, reading.c answers what clients read back (unread pages,
 * receipts, public keys, history), purge.c deletes expired messages and
 * what retention no longer keeps. */
#ifndef SM_PLUGIN_MESSAGING_H
#define SM_PLUGIN_MESSAGING_H

#include <stdint.h>

#include "safemessenger/plugin.h"
#include "store.h"

#define ROOM_ATTR "rooms.current"
#define UNREAD_PAGE 100
#define HISTORY_DEFAULT 50
/* mark_all_read marks at most this many per command (oldest first), so
 * one command never holds the loop for long; `more` asks for another. */
#define MARK_ALL_BATCH 1000

typedef struct messaging {
    const sm_host *host;
    sm_plugin *self;
    int64_t max_content_bytes, max_unread, max_unread_per_sender, max_expiry, max_page_bytes;
    int64_t private_retention, public_retention; /* seconds; 0 = kept for ever */
    msg_store store;
    sm_timer *purge_timer;
    sm_timer *purge_more;   /* one-shot follow-up while a backlog remains */
} messaging;

/* Replies 1005 (details are logged where they happen). */
void messaging_reply_internal(messaging *m, sm_ctx *ctx);
/* Replies with p (taking it), or 1005 when p is NULL (out of memory). */
void messaging_reply_json(messaging *m, sm_ctx *ctx, const char *action, json_t *p);

/* Action handlers of reading.c (the action table is in messaging.c). */
void messaging_get_unread_messages(sm_ctx *ctx, const json_t *payload, void *data);
void messaging_mark_message_read(sm_ctx *ctx, const json_t *payload, void *data);
void messaging_mark_all_read(sm_ctx *ctx, const json_t *payload, void *data);
void messaging_get_public_key(sm_ctx *ctx, const json_t *payload, void *data);
void messaging_get_history(sm_ctx *ctx, const json_t *payload, void *data);

/* purge.c. Reads messaging.private_retention and public_retention (in
 * init; logs and fails on a bad value). */
int messaging_purge_configure(messaging *m);
/* Starts the periodic purge (in start, once the store is open). */
int messaging_purge_start(messaging *m);
/* Stops its timers; safe when it never started. */
void messaging_purge_stop(messaging *m);
/* Admin command messages.purge: one purge run now, with its counts. */
void messaging_admin_purge(sm_admin_ctx *ctx, const json_t *args, void *data);

/* forget.c. SM_EVENT_USER_DELETED: the messages the user sent or was
 * sent. */
void messaging_on_user_deleted(const sm_event_info *info, void *data);
/* SM_EVENT_ROOM_DELETED (`room` is the callback's username argument):
 * the room's whole history. */
void messaging_on_room_deleted(const sm_event_info *info, void *data);

#endif
