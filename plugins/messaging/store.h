/* The messaging plugin's storage: one table for public and private
 * messages, one id sequence, read access to auth_users. Every function
 * runs on the loop thread and returns an sm_status; out-parameters are
 * written only on SM_OK. Rows whose expires_at has passed are invisible
 * to every reader here, whether or not the purge has deleted them yet. */
#ifndef MESSAGING_STORE_H
#define MESSAGING_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "safemessenger/plugin.h"

/* Longest ASCII-lower-cased name or room kept in a fixed buffer (names are
 * at most 32 bytes; room attributes come from another plugin). */
#define STORE_NAME_MAX 64

/* What store_purge deletes, each by its own time column against a cutoff:
 * expired messages (expires_at), read private messages (read_at: when
 * first marked read) and room history (created_at). Unread private
 * messages go only when they expire. */
typedef enum store_purge_kind {
    STORE_PURGE_EXPIRED,
    STORE_PURGE_READ_PRIVATE,
    STORE_PURGE_OLD_PUBLIC,
    STORE_PURGE_KINDS
} store_purge_kind;

typedef struct msg_store {
    const sm_host *host;
    sm_plugin *self;
    sm_stmt *purge[STORE_PURGE_KINDS];
    sm_stmt *next_id, *insert, *count_unread, *list_unread, *find_private, *set_read,
        *history, *count_pair, *unread_senders, *hide_pair, *release_pair, *mark_batch,
        *more_to_mark;
} msg_store;

/* One message to insert. Public messages have room/room_lower and no
 * recipient; private ones the reverse. signature may be NULL. A hidden
 * row (a private message the recipient's policy drops) is stored without
 * content, signature or encrypted flag. */
typedef struct msg_row {
    int64_t id;
    const char *sender;
    const char *room, *room_lower;
    const char *recipient, *recipient_lower;
    const char *content;
    int encrypted;
    const char *signature;
    double timestamp;
    int has_expiry;
    double expires_at;
    int hidden;
} msg_row;

/* A sender with visible unread messages waiting for one recipient. */
typedef struct store_sender {
    char lower[STORE_NAME_MAX];
    char name[STORE_NAME_MAX];  /* as the rows spell it */
    int64_t count;
} store_sender;

typedef struct store_senders {
    store_sender *item;
    size_t n;
} store_senders;

/* A message mark_all_read has just marked. */
typedef struct store_marked_item {
    int64_t id;
    char sender[STORE_NAME_MAX];
} store_marked_item;

typedef struct store_marked {
    store_marked_item *item;
    size_t n;
} store_marked;

/* The migrations, for register_migrations in init. */
extern const sm_migration store_migrations[];

/* Prepares every statement (in start: the tables exist then). Fails when
 * no users provider (sm_host.user_lookup) is loaded. */
int store_open(msg_store *st, const sm_host *host, sm_plugin *self);
void store_close(msg_store *st);


/* The next message id from the sequence, atomic on its own. Inside a
 * transaction the sequence stays locked until it ends (on PostgreSQL,
 * against every other node's messages). */
int store_reserve_id(msg_store *st, int64_t *id);
int store_insert(msg_store *st, const msg_row *row);

/* Unread, unexpired, visible private messages to the user (lower-cased
 * name). */
int store_count_unread(msg_store *st, const char *user_lower, double now, int64_t *count);

/* The unread, unexpired messages from one sender to one recipient: all of
 * them (hidden included) and how many of those are hidden. */
int store_count_pair(msg_store *st, const char *recipient_lower, const char *sender_lower,
                     double now, int64_t *all, int64_t *hidden);

/* The senders of the recipient's visible unread messages, with counts
 * (in no particular order). Free with store_senders_free. */
int store_unread_senders(msg_store *st, const char *recipient_lower, double now,
                         store_senders *out);
void store_senders_free(store_senders *list);

/* Hides the recipient's visible unread messages from the sender (their
 * content is erased); they still count for the sender's own cap. */
int store_hide_pair(msg_store *st, const char *recipient_lower, const char *sender_lower);
/* Deletes the hidden unread messages from the sender to the recipient. */
int store_release_pair(msg_store *st, const char *recipient_lower, const char *sender_lower);

/* Marks read (at `now`, which becomes their read_at) the user's oldest
 * visible unread messages with ids up to up_to_id, at most `limit` (> 0),
 * and lists those this call marked (id, sender), in id order, in *out
 * (free with store_marked_free): none that another session marked
 * meanwhile. *more says whether further ones remain. */
int store_mark_all(msg_store *st, const char *user_lower, int64_t up_to_id, double now,
                   int limit, store_marked *out, int *more);
void store_marked_free(store_marked *list);

/* Appends up to `limit` of the user's unread messages with ids above
 * after_id, oldest first, as get_unread_messages items, to `items`;
 * *more says whether further ones exist. Items stop early before their
 * compact JSON, commas included, would pass `budget` bytes (the first
 * item always goes in). */
int store_list_unread(msg_store *st, const char *user_lower, int64_t after_id, double now,
                      int limit, size_t budget, json_t *items, int *more);

/* The private message `id` if user_lower is its recipient and it has not
 * expired: its sender (copied into sender, sender_len bytes) and whether
 * it was read. SM_ENOTFOUND otherwise, whichever reason. */
int store_find_private(msg_store *st, int64_t id, const char *user_lower, double now,
                       char *sender, size_t sender_len, int *is_read);
/* Marks the message read, with `now` as its read_at, if it is still
 * unread and visible: *marked says whether this call marked it (0 when
 * another session read it, or it was hidden, since store_find_private). */
int store_set_read(msg_store *st, int64_t id, double now, int *marked);

/* Appends up to `limit` of the room's messages with ids below before_id,
 * newest first, shaped as public_message events, within `budget` bytes as
 * store_list_unread. */
int store_history(msg_store *st, const char *room_lower, int64_t before_id, double now,
                  int limit, size_t budget, json_t *items, int *more);

/* Deletes up to `batch` rows of that kind whose time column is at or
 * before `cutoff`; *deleted is how many went. */
int store_purge(msg_store *st, store_purge_kind kind, double cutoff, int64_t batch,
                int64_t *deleted);

/* The registered user `user_lower`, through the users service: the name as registered (copied into
 * name, name_len bytes) and, when public_key is not NULL, a new JSON string
 * of the key or JSON null. SM_ENOTFOUND for an unknown user. */
int store_find_user(msg_store *st, const char *user_lower, char *name, size_t name_len,
                    json_t **public_key);

#endif
