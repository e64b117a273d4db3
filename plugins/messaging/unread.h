/* Unread accounting of private messages (issue 10, docs/PROTOCOL.md 7.5
 * and 7.7): the two caps a new message must pass, and the hiding of the
 * waiting messages of senders the recipient's policy drops (a block).
 *
 * The messaging plugin never reads another plugin's tables: it learns of a
 * block by asking the core's policy hook, at every point where a
 * recipient's unread messages show (the count at login, listing, marking,
 * a full mailbox), so a block takes effect from the moment it is made.
 * Loop thread only; every function returns an sm_status. */
#ifndef MESSAGING_UNREAD_H
#define MESSAGING_UNREAD_H

#include <stdint.h>

#include "store.h"

/* unread_check_caps' answers when a cap is reached; not sm_status values,
 * so a busy database (SM_EBUSY) is never taken for one. */
#define UNREAD_AT_CAP 100
#define UNREAD_AT_SENDER_CAP 101

/* What a private message must pass. */
typedef struct unread_caps {
    const char *recipient, *recipient_lower; /* as registered, and folded */
    const char *sender_lower;
    int drop;                  /* the policy drops it: it will be stored hidden */
    int64_t max_unread;        /* messaging.max_unread */
    int64_t max_per_sender;    /* messaging.max_unread_per_sender */
} unread_caps;

/* The policy hook's verdict on a private message from sender to
 * recipient (SM_VERDICT_ALLOW on a server without the hook). */
int unread_verdict(msg_store *st, const char *sender, const char *recipient);

/* The user's visible unread count, after hiding the waiting messages of
 * every sender the policy now drops. */
int unread_settle(msg_store *st, const char *user, const char *user_lower, double now,
                  int64_t *count);

/* SM_OK when the message may be stored, UNREAD_AT_SENDER_CAP or
 * UNREAD_AT_CAP when a cap is reached, or an error status. Call inside
 * the transaction that stores the message. */
int unread_check_caps(msg_store *st, const unread_caps *caps, double now);

#endif
