/* What clients read back: unread pages, read receipts (one message or
 * all), public keys and room history. Pages stop at messaging.max_page_bytes
 * and say `more`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "messaging.h"
#include "unread.h"

/* The bytes left for a page's items once its reply object (measured
 * empty, with the longer "more":false) is counted, 0 when none. */
static size_t page_budget(const messaging *m, json_t *empty_reply)
{
    size_t base = empty_reply ? json_dumpb(empty_reply, NULL, 0, JSON_COMPACT) : 0;
    json_decref(empty_reply);
    size_t max = (size_t)m->max_page_bytes;
    return base > 0 && base < max ? max - base : 0;
}

/* The caller's name and its lower-cased copy; replies 1005 itself on
 * failure. */
static int caller(messaging *m, sm_ctx *ctx, const char **name, char *lower, size_t lower_len)
{
    const char *me = m->host->session_username(m->host->ctx_session(ctx));
    if (!me || sm_name_fold(me, lower, lower_len) != SM_OK) {
        messaging_reply_internal(m, ctx);
        return SM_ERROR;
    }
    *name = me;
    return SM_OK;
}

void messaging_get_unread_messages(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    const char *name;
    char me[STORE_NAME_MAX];
    if (caller(m, ctx, &name, me, sizeof me) != SM_OK)
        return;
    const json_t *after = json_object_get(payload, "after_id");
    int64_t after_id = json_is_integer(after) ? (int64_t)json_integer_value(after) : 0;
    double now = m->host->now();
    int64_t count = 0;
    int more = 0;
    size_t budget = page_budget(m, json_pack("{s:[], s:b}", "messages", "more", 0));
    json_t *items = json_array();
    if (!items || unread_settle(&m->store, name, me, now, &count) != SM_OK ||
        store_list_unread(&m->store, me, after_id, now, UNREAD_PAGE, budget, items, &more) !=
            SM_OK) {
        json_decref(items);
        messaging_reply_internal(m, ctx);
        return;
    }
    messaging_reply_json(m, ctx, "unread_messages",
               json_pack("{s:o, s:b}", "messages", items, "more", more));
}

/* The same 1009 whether the message does not exist, has expired, is
 * someone else's or is hidden: no hint whether it exists. */
void messaging_mark_message_read(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    const char *name;
    char me[STORE_NAME_MAX], sender[STORE_NAME_MAX], sender_lower[STORE_NAME_MAX];
    if (caller(m, ctx, &name, me, sizeof me) != SM_OK)
        return;
    int64_t id = (int64_t)json_integer_value(json_object_get(payload, "message_id"));
    double now = h->now();
    int was_read = 0;
    int rc = store_find_private(&m->store, id, me, now, sender, sizeof sender, &was_read);
    /* An unread message whose sender has been blocked since is hidden
     * now, as unread_settle would have hidden it. */
    if (rc == SM_OK && !was_read && unread_verdict(&m->store, sender, name) == SM_VERDICT_DROP) {
        rc = sm_name_fold(sender, sender_lower, sizeof sender_lower);
        if (rc == SM_OK)
            rc = store_hide_pair(&m->store, me, sender_lower);
        if (rc == SM_OK)
            rc = SM_ENOTFOUND;
    }
    int marked = 0;
    if (rc == SM_OK && !was_read) {
        rc = store_set_read(&m->store, id, now, &marked);
        /* Another node marked it read, or hid it, since it was found:
         * answered as that finds it now, without a second receipt. */
        if (rc == SM_OK && !marked)
            rc = store_find_private(&m->store, id, me, now, sender, sizeof sender, &was_read);
    }
    if (rc == SM_ENOTFOUND) {
        h->reply_error(ctx, SM_ERR_NOT_FOUND, "no such message");
        return;
    }
    if (rc != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    messaging_reply_json(m, ctx, "mark_message_read", json_pack("{s:I}", "message_id", (json_int_t)id));
    if (!marked)
        return;
    json_t *ev = json_pack("{s:I, s:s, s:f}", "message_id", (json_int_t)id, "reader", name,
                           "timestamp", now);
    if (ev)
        h->send_event_user(sender, "message_read", ev);
    json_decref(ev);
}

/* An extension (docs/PROTOCOL.md 7.5): marks the caller's visible unread
 * messages up to `up_to_id` read, oldest first, at most MARK_ALL_BATCH,
 * with one receipt per message as mark_message_read sends. */
void messaging_mark_all_read(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    const char *name;
    char me[STORE_NAME_MAX];
    if (caller(m, ctx, &name, me, sizeof me) != SM_OK)
        return;
    const json_t *up_to = json_object_get(payload, "up_to_id");
    int64_t up_to_id = json_is_integer(up_to) ? (int64_t)json_integer_value(up_to) : INT64_MAX;
    double now = h->now();
    int64_t count = 0;
    int more = 0;
    store_marked marked = {0};
    int rc = h->db_begin(m->self);
    if (rc != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    rc = unread_settle(&m->store, name, me, now, &count);
    if (rc == SM_OK)
        rc = store_mark_all(&m->store, me, up_to_id, now, MARK_ALL_BATCH, &marked, &more);
    if (rc != SM_OK) {
        h->db_rollback(m->self);
        messaging_reply_internal(m, ctx);
        return;
    }
    if (h->db_commit(m->self) != SM_OK) {
        store_marked_free(&marked);
        messaging_reply_internal(m, ctx);
        return;
    }
    messaging_reply_json(m, ctx, "mark_all_read",
               json_pack("{s:I, s:b}", "count", (json_int_t)marked.n, "more", more));
    for (size_t i = 0; i < marked.n; i++) {
        json_t *ev = json_pack("{s:I, s:s, s:f}", "message_id", (json_int_t)marked.item[i].id,
                               "reader", name, "timestamp", now);
        if (ev)
            h->send_event_user(marked.item[i].sender, "message_read", ev);
        else
            h->log(m->self, SM_LOG_ERROR, "message_read for %lld not sent: out of memory",
                   (long long)marked.item[i].id);
        json_decref(ev);
    }
    store_marked_free(&marked);
}

void messaging_get_public_key(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    char lower[STORE_NAME_MAX], name[STORE_NAME_MAX];
    json_t *key = NULL;
    int rc = sm_name_fold(json_string_value(json_object_get(payload, "username")), lower,
                         sizeof lower);
    if (rc == SM_OK)
        rc = store_find_user(&m->store, lower, name, sizeof name, &key);
    if (rc == SM_ENOTFOUND) {
        m->host->reply_error(ctx, SM_ERR_NOT_FOUND, "no such user");
        return;
    }
    if (rc != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    messaging_reply_json(m, ctx, "get_public_key",
               json_pack("{s:s, s:o}", "username", name, "public_key", key));
}

void messaging_get_history(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    const char *want = json_string_value(json_object_get(payload, "room"));
    const char *room = h->session_get_attr(h->ctx_session(ctx), ROOM_ATTR);
    if (!room || !sm_name_equal(room, want)) {
        h->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "you are not in that room");
        return;
    }
    char lower[STORE_NAME_MAX];
    if (sm_name_fold(room, lower, sizeof lower) != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    const json_t *before = json_object_get(payload, "before_id");
    const json_t *limit = json_object_get(payload, "limit");
    int64_t before_id = json_is_integer(before) ? (int64_t)json_integer_value(before) : INT64_MAX;
    int n = json_is_integer(limit) ? (int)json_integer_value(limit) : HISTORY_DEFAULT;
    int more = 0;
    size_t budget =
        page_budget(m, json_pack("{s:s, s:[], s:b}", "room", room, "messages", "more", 0));
    json_t *items = json_array();
    if (!items ||
        store_history(&m->store, lower, before_id, h->now(), n, budget, items, &more) != SM_OK) {
        json_decref(items);
        messaging_reply_internal(m, ctx);
        return;
    }
    messaging_reply_json(m, ctx, "get_history",
               json_pack("{s:s, s:o, s:b}", "room", room, "messages", items, "more", more));
}

