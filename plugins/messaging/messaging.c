/* Messaging: public messages to the sender's room, private messages with
 * offline storage, read receipts, public keys, room history and expiring
 * messages (PROTOCOL.md section 7).
 *
 * The room comes from the session attribute "rooms.current" and its topic
 * is "room:<lower-cased name>" (docs/PLUGINS.md section 17); users are looked up in
 * auth's auth_users. Every reply that confirms a write is sent after the
 * commit, and events follow the commit too, so no client ever sees a
 * message that a crash could take back. Message contents are never
 * logged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "messaging.h"
#include "unread.h"

#define UNREAD_ATTR "messaging.unread_count"
#define TOPIC_PREFIX "room:"

/* The largest max_content_bytes the configuration accepts; the schema
 * allows this much and the handlers check the configured limit. */
#define CONTENT_LIMIT 1048576
/* Ids are below 2^53 (PROTOCOL.md section 7): every JSON number parser
 * keeps them exact. */
#define ID_LIMIT 9007199254740991.0
/* messaging.max_page_bytes: the default keeps a page within the core's
 * payload limit at the default limits.send_queue_bytes (a quarter of
 * 1 MiB); the maximum is the core's absolute payload limit. */
#define PAGE_BYTES_DEFAULT 262144
#define PAGE_BYTES_MIN 16384
#define PAGE_BYTES_MAX 6000000
/* What one stored message can take in a page beyond 6 bytes per content
 * byte (a control character is escaped as \u00XX): names, the signature,
 * numbers and keys. */
#define ITEM_OVERHEAD (SIGNATURE_LIMIT + 1024)
/* Longest signature accepted: the base64 RSA-PSS signature of an 8192-bit
 * key is 1368 bytes. */
#define SIGNATURE_LIMIT 4096
/* How long a sender is told to wait when the recipient's unread cap (or
 * the sender's share of it) is reached: a person reading messages frees
 * room within about a minute. */
#define UNREAD_RETRY_AFTER 60

/* The optional and checked parts of a message payload. */
typedef struct msg_input {
    const char *content;
    int has_expiry;
    double expires_at;
} msg_input;

void messaging_reply_internal(messaging *m, sm_ctx *ctx)
{
    m->host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
}

void messaging_reply_json(messaging *m, sm_ctx *ctx, const char *action, json_t *p)
{
    if (p)
        m->host->reply(ctx, action, p);
    else
        messaging_reply_internal(m, ctx);
    json_decref(p);
}

/* Text fields are stored and read back as C strings, so an embedded
 * U+0000 could not be relayed as given. The core's JSON parser refuses
 * it today; this keeps the plugin safe if that ever changes. */
static int has_nul(const json_t *v)
{
    return v && json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v);
}

/* Content and expires_at, checked beyond the schema (1004 naming the
 * field). Replies itself on failure. */
static int read_input(messaging *m, sm_ctx *ctx, const json_t *payload, double now,
                      msg_input *out)
{
    const json_t *content = json_object_get(payload, "content");
    char msg[128];
    if (json_string_length(content) > (size_t)m->max_content_bytes) {
        snprintf(msg, sizeof msg, "field 'content' must be a string of 1 to %lld bytes",
                 (long long)m->max_content_bytes);
        m->host->reply_error(ctx, SM_ERR_MALFORMED, msg);
        return SM_EINVAL;
    }
    if (has_nul(content)) {
        m->host->reply_error(ctx, SM_ERR_MALFORMED, "field 'content' must not contain U+0000");
        return SM_EINVAL;
    }
    const json_t *exp = json_object_get(payload, "expires_at");
    int has_expiry = json_is_number(exp);
    double at = has_expiry ? json_number_value(exp) : 0;
    if (has_expiry && !(at > now && at <= now + (double)m->max_expiry)) {
        snprintf(msg, sizeof msg,
                 "field 'expires_at' must be in the future and at most %lld seconds from now",
                 (long long)m->max_expiry);
        m->host->reply_error(ctx, SM_ERR_MALFORMED, msg);
        return SM_EINVAL;
    }
    out->content = json_string_value(content);
    out->has_expiry = has_expiry;
    out->expires_at = at;
    return SM_OK;
}

static int set_expiry(json_t *obj, const msg_input *in)
{
    return in->has_expiry ? json_object_set_new(obj, "expires_at", json_real(in->expires_at)) : 0;
}

/* Reserves an id and stores the row, in one committed transaction. When
 * caps is not NULL they are checked too: UNREAD_AT_CAP or
 * UNREAD_AT_SENDER_CAP (nothing written, the id not taken) when one is
 * reached. The id comes first: it locks the sequence until the commit,
 * so on a PostgreSQL shared by several nodes the caps are counted with
 * every other node's messages committed, never beside one in flight
 * (SQLite's BEGIN IMMEDIATE already allows one writer at a time). */
static int commit_message(messaging *m, msg_row *row, const unread_caps *caps, double now,
                          int64_t *id)
{
    const sm_host *h = m->host;
    int64_t new_id = 0;
    int rc = h->db_begin(m->self);
    if (rc != SM_OK)
        return rc;
    rc = store_reserve_id(&m->store, &new_id);
    if (rc == SM_OK && caps)
        rc = unread_check_caps(&m->store, caps, now);
    if (rc == SM_OK) {
        row->id = new_id;
        rc = store_insert(&m->store, row);
    }
    if (rc != SM_OK) {
        h->db_rollback(m->self);
        return rc;
    }
    rc = h->db_commit(m->self); /* rolls back itself on failure */
    if (rc == SM_OK)
        *id = new_id;
    return rc;
}

/* ---- public messages ---------------------------------------------------- */

/* Stores the message, then sends the event to every session in the room
 * (the sender's included: the core holds it until this reply). */
static void post_public(messaging *m, sm_ctx *ctx, const char *room, const msg_input *in,
                        double now)
{
    const sm_host *h = m->host;
    char lower[STORE_NAME_MAX], topic[sizeof TOPIC_PREFIX + STORE_NAME_MAX];
    const char *sender = h->session_username(h->ctx_session(ctx));
    int n = sm_name_fold(room, lower, sizeof lower) == SM_OK
                ? snprintf(topic, sizeof topic, TOPIC_PREFIX "%s", lower)
                : -1;
    if (n < 0 || (size_t)n >= sizeof topic) {
        h->log(m->self, SM_LOG_ERROR, "session room attribute is not a room name");
        messaging_reply_internal(m, ctx);
        return;
    }
    /* The room's fan-out budget (limits.room_fanout_bytes_per_second),
     * before anything is stored: a refused message leaves no trace. A
     * server older than the entry has no budget to ask. */
    double retry_after = 0;
    if (SM_HOST_HAS(h, topic_fanout_take) &&
        h->topic_fanout_take(topic, strlen(in->content), &retry_after) == SM_EBUSY) {
        json_t *extra = json_pack("{s:f}", "retry_after", retry_after);
        h->reply_error_extra(ctx, SM_ERR_RATE_LIMITED, "room fan-out budget exceeded", extra);
        json_decref(extra);
        return;
    }
    msg_row row = {.sender = sender, .room = room, .room_lower = lower, .content = in->content,
                   .timestamp = now, .has_expiry = in->has_expiry, .expires_at = in->expires_at};
    int64_t id = 0;
    if (commit_message(m, &row, NULL, now, &id) != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    json_t *ev = json_pack("{s:I, s:s, s:s, s:s, s:f}", "id", (json_int_t)id, "sender", sender,
                           "content", in->content, "room", room, "timestamp", now);
    if (ev && set_expiry(ev, in) == 0)
        h->topic_publish(topic, "public_message", ev, 0);
    else
        h->log(m->self, SM_LOG_ERROR, "message %lld stored but not sent: out of memory",
               (long long)id);
    json_decref(ev);
    messaging_reply_json(m, ctx, "public_message",
               json_pack("{s:I, s:s, s:f}", "id", (json_int_t)id, "room", room, "timestamp", now));
}

static void public_message(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    double now = m->host->now();
    msg_input in;
    if (read_input(m, ctx, payload, now, &in) != SM_OK)
        return;
    const char *room = m->host->session_get_attr(m->host->ctx_session(ctx), ROOM_ATTR);
    if (!room) {
        m->host->reply_error(ctx, SM_ERR_NOT_FOUND, "you are in no room");
        return;
    }
    post_public(m, ctx, room, &in, now);
}

/* As public_message, naming the room, which must be the sender's own
 * (also 1002 when the sender is in no room: the table's only rule). */
static void send_message(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    double now = m->host->now();
    msg_input in;
    if (read_input(m, ctx, payload, now, &in) != SM_OK)
        return;
    const char *want = json_string_value(json_object_get(payload, "room"));
    const char *room = m->host->session_get_attr(m->host->ctx_session(ctx), ROOM_ATTR);
    if (!room || !sm_name_equal(room, want)) {
        m->host->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "you are not in that room");
        return;
    }
    post_public(m, ctx, room, &in, now);
}

/* ---- private messages --------------------------------------------------- */

/* message_delivered, once it is known whether the recipient has a
 * session anywhere (on another node of a cluster, Redis says). */
typedef struct delivered {
    messaging *m;
    sm_ctx *ctx;
    int64_t id;
    double timestamp;
    char recipient[STORE_NAME_MAX];
} delivered;

static void send_delivered(delivered *d, int online)
{
    messaging_reply_json(d->m, d->ctx, "message_delivered",
                         json_pack("{s:I, s:s, s:b, s:f}", "message_id", (json_int_t)d->id,
                                   "recipient", d->recipient, "online", online, "timestamp",
                                   d->timestamp));
}

static void online_known(int status, const int *online, size_t n, void *arg)
{
    delivered *d = arg;
    /* SM_EBUSY (Redis unreachable): this node's answer, the best there is. */
    (void)status;
    send_delivered(d, n == 1 && online[0]);
    free(d);
}

static void reply_delivered(messaging *m, sm_ctx *ctx, int64_t id, const char *recipient,
                            double now)
{
    const sm_host *h = m->host;
    delivered local = {.m = m, .ctx = ctx, .id = id, .timestamp = now};
    snprintf(local.recipient, sizeof local.recipient, "%s", recipient);
    delivered *d = SM_HOST_HAS(h, topic_users) ? malloc(sizeof *d) : NULL;
    if (d) {
        *d = local;
        h->defer(ctx);
        const char *names[] = {d->recipient};
        if (h->users_online(m->self, names, 1, online_known, d) == SM_OK)
            return; /* d is online_known's */
        free(d);
    }
    send_delivered(&local, h->user_sessions(recipient, NULL, 0) > 0);
}

static void private_message(sm_ctx *ctx, const json_t *payload, void *data)
{
    messaging *m = data;
    const sm_host *h = m->host;
    double now = h->now();
    msg_input in;
    if (read_input(m, ctx, payload, now, &in) != SM_OK)
        return;
    const json_t *sig = json_object_get(payload, "signature");
    if (has_nul(sig)) {
        h->reply_error(ctx, SM_ERR_MALFORMED, "field 'signature' must not contain U+0000");
        return;
    }
    char lower[STORE_NAME_MAX], recipient[STORE_NAME_MAX];
    int rc = sm_name_fold(json_string_value(json_object_get(payload, "recipient")), lower,
                         sizeof lower);
    if (rc == SM_OK)
        rc = store_find_user(&m->store, lower, recipient, sizeof recipient, NULL);
    if (rc == SM_ENOTFOUND) {
        h->reply_error(ctx, SM_ERR_NOT_FOUND, "no such user");
        return;
    }
    if (rc != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    const char *sender = h->session_username(h->ctx_session(ctx));
    char sender_lower[STORE_NAME_MAX];
    if (!sender || sm_name_fold(sender, sender_lower, sizeof sender_lower) != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    int verdict = unread_verdict(&m->store, sender, recipient);
    if (verdict == SM_VERDICT_DENY) {
        h->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "you may not send messages to this user");
        return;
    }
    /* A dropped message (the recipient blocked the sender) takes the path
     * of a stored one, caps and all, and is stored hidden: no content,
     * never shown to the recipient, but counted for the sender's cap as an
     * unread message would be. Its id is a real one from the sequence and
     * `online` says what it says for anyone: the sender cannot tell. */
    int drop = verdict == SM_VERDICT_DROP;
    const char *signature = json_string_value(sig);
    int encrypted = json_is_true(json_object_get(payload, "encrypted"));
    msg_row row = {.sender = sender, .recipient = recipient, .recipient_lower = lower,
                   .content = in.content, .encrypted = encrypted, .signature = signature,
                   .timestamp = now, .has_expiry = in.has_expiry, .expires_at = in.expires_at,
                   .hidden = drop};
    unread_caps caps = {.recipient = recipient, .recipient_lower = lower,
                        .sender_lower = sender_lower, .drop = drop,
                        .max_unread = m->max_unread,
                        .max_per_sender = m->max_unread_per_sender};
    int64_t id = 0;
    rc = commit_message(m, &row, &caps, now, &id);
    if (rc == UNREAD_AT_CAP || rc == UNREAD_AT_SENDER_CAP) {
        json_t *extra = json_pack("{s:i}", "retry_after", UNREAD_RETRY_AFTER);
        if (extra)
            h->reply_error_extra(ctx, SM_ERR_RATE_LIMITED,
                                 rc == UNREAD_AT_CAP
                                     ? "the recipient has too many unread messages"
                                     : "you have too many unread messages waiting for this user",
                                 extra);
        else
            messaging_reply_internal(m, ctx);
        json_decref(extra);
        return;
    }
    if (rc != SM_OK) {
        messaging_reply_internal(m, ctx);
        return;
    }
    if (!drop) {
        json_t *ev = json_pack("{s:I, s:s, s:s, s:s, s:b, s:s?, s:f}", "id", (json_int_t)id,
                               "sender", sender, "recipient", recipient, "content", in.content,
                               "encrypted", encrypted, "signature", signature, "timestamp",
                               now);
        if (ev && set_expiry(ev, &in) == 0)
            h->send_event_user(recipient, "private_message", ev);
        else
            h->log(m->self, SM_LOG_ERROR, "message %lld stored but not sent: out of memory",
                   (long long)id);
        json_decref(ev);
    }
    reply_delivered(m, ctx, id, recipient, now);
}

/* ---- core events -------------------------------------------------------- */

/* auth reads the attribute for login_success.unread_count once
 * session_login returns (this runs inside it; docs/PLUGINS.md section 17). */
static void on_logged_in(const sm_event_info *info, void *data)
{
    sm_core_event event = info->event;
    sm_session_id session = info->session;
    const char *username = info->username;
    (void)event;
    messaging *m = data;
    char lower[STORE_NAME_MAX], text[24];
    int64_t count = 0;
    if (!username || sm_name_fold(username, lower, sizeof lower) != SM_OK ||
        unread_settle(&m->store, username, lower, m->host->now(), &count) != SM_OK) {
        m->host->log(m->self, SM_LOG_ERROR, "session %llu: cannot count unread messages",
                     (unsigned long long)session);
        return;
    }
    snprintf(text, sizeof text, "%lld", (long long)count);
    if (m->host->session_set_attr(session, UNREAD_ATTR, text) != SM_OK)
        m->host->log(m->self, SM_LOG_ERROR, "session %llu: cannot set %s",
                     (unsigned long long)session, UNREAD_ATTR);
}

/* ---- the action table --------------------------------------------------- */

static const sm_field public_schema[] = {
    {"content", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, CONTENT_LIMIT},
    {"expires_at", SM_FIELD_NUMBER, 0, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field send_schema[] = {
    {"room", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {"content", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, CONTENT_LIMIT},
    {"expires_at", SM_FIELD_NUMBER, 0, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field private_schema[] = {
    {"recipient", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {"content", SM_FIELD_STRING, SM_FIELD_REQUIRED, 1, CONTENT_LIMIT},
    {"encrypted", SM_FIELD_BOOLEAN, SM_FIELD_REQUIRED, 0, 0},
    {"signature", SM_FIELD_STRING, 0, 0, SIGNATURE_LIMIT},
    {"expires_at", SM_FIELD_NUMBER, 0, 0, 0},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field unread_schema[] = {
    {"after_id", SM_FIELD_INTEGER, 0, 0, ID_LIMIT},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field mark_schema[] = {
    {"message_id", SM_FIELD_INTEGER, SM_FIELD_REQUIRED, 1, ID_LIMIT},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field mark_all_schema[] = {
    {"up_to_id", SM_FIELD_INTEGER, 0, 1, ID_LIMIT},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field key_schema[] = {
    {"username", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 3, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};
static const sm_field history_schema[] = {
    {"room", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {"before_id", SM_FIELD_INTEGER, 0, 1, ID_LIMIT + 1},
    {"limit", SM_FIELD_INTEGER, 0, 1, 200},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"public_message", public_message, SM_ACTION_NEEDS_LOGIN, public_schema},
    {"send_message", send_message, SM_ACTION_NEEDS_LOGIN, send_schema},
    {"private_message", private_message, SM_ACTION_NEEDS_LOGIN, private_schema},
    {"get_unread_messages", messaging_get_unread_messages, SM_ACTION_NEEDS_LOGIN, unread_schema},
    {"mark_message_read", messaging_mark_message_read, SM_ACTION_NEEDS_LOGIN, mark_schema},
    {"mark_all_read", messaging_mark_all_read, SM_ACTION_NEEDS_LOGIN, mark_all_schema},
    {"get_public_key", messaging_get_public_key, SM_ACTION_NEEDS_LOGIN, key_schema},
    {"get_history", messaging_get_history, SM_ACTION_NEEDS_LOGIN, history_schema},
    {NULL, NULL, 0, NULL},
};

static const sm_admin_command admin_commands[] = {
    {"messages.purge", messaging_admin_purge,
     "run the purge of expired messages and retention now"},
    {NULL, NULL, NULL},
};

/* ---- life cycle --------------------------------------------------------- */

/* Every setting into m (the defaults of docs/OPERATIONS.md when a key is
 * absent): at init, and on a reload into a copy first. */
static int read_settings(messaging *m)
{
    const sm_host *host = m->host;
    sm_plugin *self = m->self;
    m->max_content_bytes = 16384;
    m->max_unread = 10000;
    m->max_unread_per_sender = 1000;
    m->max_expiry = 2592000;
    int rc = host->config_int(self, "max_content_bytes", 1, CONTENT_LIMIT, &m->max_content_bytes);
    if (rc == SM_OK)
        rc = host->config_int(self, "max_unread", 1, 1000000000, &m->max_unread);
    if (rc == SM_OK)
        rc = host->config_int(self, "max_unread_per_sender", 1, 1000000000,
                              &m->max_unread_per_sender);
    if (rc == SM_OK)
        rc = host->config_int(self, "max_expiry", 1, 315360000, &m->max_expiry);
    m->max_page_bytes = PAGE_BYTES_DEFAULT;
    if (rc == SM_OK)
        rc = host->config_int(self, "max_page_bytes", PAGE_BYTES_MIN, PAGE_BYTES_MAX,
                              &m->max_page_bytes);
    if (rc == SM_OK && m->max_page_bytes < 6 * m->max_content_bytes + ITEM_OVERHEAD)
        host->log(self, SM_LOG_WARNING,
                  "max_page_bytes (%lld) is below what one message of max_content_bytes (%lld) "
                  "can take in a page (%lld); such a message goes alone in its page",
                  (long long)m->max_page_bytes, (long long)m->max_content_bytes,
                  (long long)(6 * m->max_content_bytes + ITEM_OVERHEAD));
    if (rc == SM_OK)
        rc = messaging_purge_configure(m);
    return rc;
}

/* SIGHUP: every setting changes live; the purge reads the retention at
 * each run. */
static int reload(void *plugin_data, int apply)
{
    messaging *m = plugin_data;
    messaging next = *m;
    int rc = read_settings(&next);
    if (rc != SM_OK || !apply)
        return rc;
    m->max_content_bytes = next.max_content_bytes;
    m->max_unread = next.max_unread;
    m->max_unread_per_sender = next.max_unread_per_sender;
    m->max_expiry = next.max_expiry;
    m->max_page_bytes = next.max_page_bytes;
    m->private_retention = next.private_retention;
    m->public_retention = next.public_retention;
    return SM_OK;
}

static int init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    /* Events come through subscribe_ex (sm_event_info), which came with
     * the users service. */
    if (!SM_HOST_HAS(host, user_lookup_id)) {
        host->log(self, SM_LOG_ERROR, "messaging needs a server with subscribe_ex");
        return SM_ESTATE;
    }
    messaging *m = calloc(1, sizeof *m);
    if (!m)
        return SM_ENOMEM;
    m->host = host;
    m->self = self;
    int rc = read_settings(m);
    /* An older server has no reload: the settings then stay as read. */
    if (rc == SM_OK && SM_HOST_HAS(host, register_reload))
        rc = host->register_reload(self, reload);
    if (rc == SM_OK)
        rc = host->register_migrations(self, store_migrations);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_LOGGED_IN, on_logged_in);
    if (rc == SM_OK && SM_HOST_HAS(host, user_deleted))
        rc = host->register_admin_commands(self, admin_commands);
    if (rc == SM_OK && SM_HOST_HAS(host, user_deleted))
        rc = host->subscribe_ex(self, SM_EVENT_USER_DELETED, messaging_on_user_deleted);
    /* An older server never deletes rooms this way: nothing to subscribe. */
    if (rc == SM_OK && SM_HOST_HAS(host, room_deleted))
        rc = host->subscribe_ex(self, SM_EVENT_ROOM_DELETED, messaging_on_room_deleted);
    if (rc != SM_OK) {
        free(m);
        return rc;
    }
    *plugin_data = m;
    return SM_OK;
}

static int start(void *plugin_data)
{
    messaging *m = plugin_data;
    if (store_open(&m->store, m->host, m->self) != SM_OK)
        return SM_ERROR;
    if (messaging_purge_start(m) != SM_OK) {
        store_close(&m->store);
        return SM_ENOMEM;
    }
    return SM_OK;
}

/* Also runs for a plugin whose start never ran or failed (store zeroed). */
static void fini(void *plugin_data)
{
    messaging *m = plugin_data;
    messaging_purge_stop(m);
    store_close(&m->store);
    free(m);
}

SM_PLUGIN_DECLARE(.name = "messaging", .version = "1.0",
                  .description = "public, private and expiring messages, history, public keys",
                  .init = init, .fini = fini, .start = start);
