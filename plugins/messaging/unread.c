/* See unread.h. */
#include "unread.h"

int unread_verdict(msg_store *st, const char *sender, const char *recipient)
{
    const sm_host *h = st->host;
    return SM_HOST_HAS(h, policy_check)
               ? h->policy_check(SM_INTERACTION_PRIVATE_MESSAGE, sender, recipient)
               : SM_VERDICT_ALLOW;
}

/* One policy question per distinct sender, not per message: a mailbox
 * full of one flooder's messages costs one question. Each hiding is one
 * statement, so this needs no transaction of its own and joins the
 * caller's, if any. */
int unread_settle(msg_store *st, const char *user, const char *user_lower, double now,
                  int64_t *count)
{
    store_senders senders = {0};
    int64_t visible = 0;
    int rc = store_unread_senders(st, user_lower, now, &senders);
    for (size_t i = 0; rc == SM_OK && i < senders.n; i++) {
        if (unread_verdict(st, senders.item[i].name, user) == SM_VERDICT_DROP)
            rc = store_hide_pair(st, user_lower, senders.item[i].lower);
        else
            visible += senders.item[i].count;
    }
    store_senders_free(&senders);
    if (rc == SM_OK)
        *count = visible;
    return rc;
}

/* The sender's share first, hidden rows included, so that a block changes
 * nothing the sender can count: the sender's messages stay "unread" as
 * they would with a recipient who never reads. Hidden rows left from an
 * earlier block are released once the policy allows the sender again;
 * visible ones are hidden once it drops them. Then the recipient's visible
 * total, settled only when it looks full: the common case costs two
 * counts. */
int unread_check_caps(msg_store *st, const unread_caps *c, double now)
{
    int64_t all = 0, hidden = 0, total = 0;
    int rc = store_count_pair(st, c->recipient_lower, c->sender_lower, now, &all, &hidden);
    if (rc == SM_OK && !c->drop && hidden > 0) {
        rc = store_release_pair(st, c->recipient_lower, c->sender_lower);
        all -= hidden;
    } else if (rc == SM_OK && c->drop && all > hidden) {
        rc = store_hide_pair(st, c->recipient_lower, c->sender_lower);
    }
    if (rc != SM_OK)
        return rc;
    if (all >= c->max_per_sender)
        return UNREAD_AT_SENDER_CAP;
    rc = store_count_unread(st, c->recipient_lower, now, &total);
    if (rc == SM_OK && total >= c->max_unread)
        rc = unread_settle(st, c->recipient, c->recipient_lower, now, &total);
    if (rc == SM_OK && total >= c->max_unread)
        return UNREAD_AT_CAP;
    return rc;
}
