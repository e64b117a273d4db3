/* See store.h. The same SQL runs on SQLite and on PostgreSQL (cluster
 * mode, docs/PLUGINS.md "Portable SQL"): no AUTOINCREMENT, ids from
 * messaging_ids by UPDATE ... RETURNING, partial indexes in the form both
 * engines take (CREATE INDEX ... WHERE col IS NOT NULL). Where several
 * nodes share one PostgreSQL, a statement that changes rows another
 * node may change meanwhile says in its own WHERE which rows it wants:
 * PostgreSQL checks a row that was changed while the statement waited
 * for it against that WHERE again, with the row's new values. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

/* Ids come from messaging_ids rather than from the table's row ids: a row
 * id of a deleted newest row would be handed out again, and a message id
 * must stay unique for ever (clients page and acknowledge by id). The
 * sequence also lets a dropped private message (policy DROP) consume a real
 * id without storing anything.
 *
 * The unread index carries expires_at so counting a user's unread messages
 * (the max_unread cap, unread_count at login) reads the index only.
 *
 * Version 2 (issue 10): sender_lower keys the per-sender cap; `hidden`
 * marks rows the recipient can never see: messages from a sender the
 * recipient's policy drops (blocked), kept without content only so the
 * sender's own cap counts them as it would count unread ones. Both unread
 * indexes start with (recipient_lower, is_read, hidden), so the visible
 * count, the listing and the per-sender counts read an index only.
 *
 * Version 3 (issue 12, retention): read_at is when the recipient first
 * marked a private message read, set exactly when is_read becomes 1 (NULL
 * for unread and public rows). The server kept no read time before, so a
 * row read earlier counts as read when it was sent: the earliest it can
 * have been read. The two indexes let the retention purge find its oldest
 * rows by range: read_at for read private messages, (kind, created_at) for
 * room history.
 *
 * Version 4: the unread, expiry and read_at indexes hold only the rows
 * they are searched for (partial: recipient_lower, expires_at, read_at
 * not NULL). A room message has none of the three, and storing one
 * rewrote a page of each of those four indexes in every commit, about
 * half of the pages its commit wrote: the room fan-out's storage cost is
 * most of the logic thread's time (perf, docs/BENCHMARKS.md (h)). Every
 * query still searches them: its condition on the column (`=`, `<=`)
 * implies the index's IS NOT NULL, in SQLite and in PostgreSQL. */
const sm_migration store_migrations[] = {
    {1, "CREATE TABLE messaging_ids (last_id INTEGER NOT NULL);"
        "INSERT INTO messaging_ids (last_id) VALUES (0);"
        "CREATE TABLE messaging_messages ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL CHECK (kind IN ('public', 'private')),"
        " sender TEXT NOT NULL,"
        " room TEXT, room_lower TEXT,"
        " recipient TEXT, recipient_lower TEXT,"
        " content TEXT NOT NULL,"
        " encrypted INTEGER NOT NULL DEFAULT 0,"
        " signature TEXT,"
        " created_at REAL NOT NULL,"
        " expires_at REAL,"
        " is_read INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX messaging_messages_unread"
        " ON messaging_messages (recipient_lower, is_read, id, expires_at);"
        "CREATE INDEX messaging_messages_room ON messaging_messages (room_lower, id);"
        "CREATE INDEX messaging_messages_expiry ON messaging_messages (expires_at);"},
    {2, "ALTER TABLE messaging_messages ADD COLUMN sender_lower TEXT;"
        "UPDATE messaging_messages SET sender_lower = LOWER(sender);"
        "ALTER TABLE messaging_messages ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;"
        "DROP INDEX messaging_messages_unread;"
        "CREATE INDEX messaging_messages_unread_visible"
        " ON messaging_messages (recipient_lower, is_read, hidden, id, expires_at);"
        "CREATE INDEX messaging_messages_unread_sender"
        " ON messaging_messages (recipient_lower, is_read, hidden, sender_lower, expires_at);"},
    {3, "ALTER TABLE messaging_messages ADD COLUMN read_at REAL;"
        "UPDATE messaging_messages SET read_at = created_at WHERE is_read = 1;"
        "CREATE INDEX messaging_messages_read_at ON messaging_messages (read_at);"
        "CREATE INDEX messaging_messages_public_age ON messaging_messages (kind, created_at);"},
    {4, "DROP INDEX IF EXISTS messaging_messages_unread_visible;"
        "CREATE INDEX messaging_messages_unread_visible"
        " ON messaging_messages (recipient_lower, is_read, hidden, id, expires_at)"
        " WHERE recipient_lower IS NOT NULL;"
        "DROP INDEX IF EXISTS messaging_messages_unread_sender;"
        "CREATE INDEX messaging_messages_unread_sender"
        " ON messaging_messages (recipient_lower, is_read, hidden, sender_lower, expires_at)"
        " WHERE recipient_lower IS NOT NULL;"
        "DROP INDEX IF EXISTS messaging_messages_expiry;"
        "CREATE INDEX messaging_messages_expiry ON messaging_messages (expires_at)"
        " WHERE expires_at IS NOT NULL;"
        "DROP INDEX IF EXISTS messaging_messages_read_at;"
        "CREATE INDEX messaging_messages_read_at ON messaging_messages (read_at)"
        " WHERE read_at IS NOT NULL;"},
    {0, NULL},
};

#define NOT_EXPIRED "(expires_at IS NULL OR expires_at > ?)"
/* What the recipient may see of their unread messages. */
#define VISIBLE_UNREAD "recipient_lower = ? AND is_read = 0 AND hidden = 0"

static const struct {
    size_t offset;
    const char *sql;
} statements[] = {
    /* One statement: atomic on both engines, also without a transaction,
     * and the row stays locked to the end of the caller's transaction. */
    {offsetof(msg_store, next_id),
     "UPDATE messaging_ids SET last_id = last_id + 1 RETURNING last_id"},
    {offsetof(msg_store, insert),
     "INSERT INTO messaging_messages (id, kind, sender, sender_lower, room, room_lower,"
     " recipient, recipient_lower, content, encrypted, signature, created_at, expires_at,"
     " hidden) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"},
    {offsetof(msg_store, count_unread),
     "SELECT COUNT(*) FROM messaging_messages WHERE " VISIBLE_UNREAD " AND " NOT_EXPIRED},
    {offsetof(msg_store, list_unread),
     "SELECT id, sender, content, encrypted, signature, created_at, expires_at"
     " FROM messaging_messages WHERE " VISIBLE_UNREAD " AND id > ?"
     " AND " NOT_EXPIRED " ORDER BY id LIMIT ?"},
    {offsetof(msg_store, find_private),
     "SELECT sender, is_read FROM messaging_messages WHERE id = ? AND recipient_lower = ?"
     " AND hidden = 0 AND " NOT_EXPIRED},
    /* Hidden rows count too: the sender's cap must not change when the
     * recipient blocks them. IN (0, 1) keeps both halves on the index. */
    {offsetof(msg_store, count_pair),
     "SELECT COUNT(*), COALESCE(SUM(hidden), 0) FROM messaging_messages WHERE recipient_lower = ?"
     " AND is_read = 0 AND hidden IN (0, 1) AND sender_lower = ? AND " NOT_EXPIRED},
    {offsetof(msg_store, unread_senders),
     "SELECT sender_lower, MIN(sender), COUNT(*) FROM messaging_messages"
     " WHERE " VISIBLE_UNREAD " AND " NOT_EXPIRED " GROUP BY sender_lower"},
    /* The content goes: nothing the recipient could ever be shown is kept. */
    {offsetof(msg_store, hide_pair),
     "UPDATE messaging_messages SET hidden = 1, content = '', signature = NULL,"
     " encrypted = 0 WHERE " VISIBLE_UNREAD " AND sender_lower = ?"},
    {offsetof(msg_store, release_pair),
     "DELETE FROM messaging_messages WHERE recipient_lower = ? AND is_read = 0"
     " AND hidden = 1 AND sender_lower = ?"},
    /* The oldest batch, marked and returned by one statement: only the
     * rows this statement marked come back, none another node marked
     * read or hid meanwhile (the outer WHERE, checked again for those;
     * the subquery's rows are the statement's snapshot). ?1 now, ?2 the
     * recipient, ?3 up_to_id, ?4 the batch. */
    {offsetof(msg_store, mark_batch),
     "UPDATE messaging_messages SET is_read = 1, read_at = ?1"
     " WHERE recipient_lower = ?2 AND is_read = 0 AND hidden = 0 AND id IN"
     " (SELECT id FROM messaging_messages WHERE recipient_lower = ?2 AND is_read = 0"
     " AND hidden = 0 AND id <= ?3 AND (expires_at IS NULL OR expires_at > ?1)"
     " ORDER BY id LIMIT ?4) RETURNING id, sender"},
    {offsetof(msg_store, more_to_mark),
     "SELECT 1 FROM messaging_messages WHERE " VISIBLE_UNREAD " AND id <= ?"
     " AND " NOT_EXPIRED " LIMIT 1"},
    /* Unread and visible still: a message another node marked read (or
     * hid) since store_find_private is not marked, or answered, twice. */
    {offsetof(msg_store, set_read),
     "UPDATE messaging_messages SET is_read = 1, read_at = ?"
     " WHERE id = ? AND is_read = 0 AND hidden = 0"},
    {offsetof(msg_store, history),
     "SELECT id, sender, content, room, created_at, expires_at FROM messaging_messages"
     " WHERE room_lower = ? AND id < ? AND " NOT_EXPIRED " ORDER BY id DESC LIMIT ?"},
    /* The purges, one per store_purge_kind: each deletes at most a batch,
     * found through its own index (expiry, read_at, public_age). */
    {offsetof(msg_store, purge[STORE_PURGE_EXPIRED]),
     "DELETE FROM messaging_messages WHERE id IN (SELECT id FROM messaging_messages"
     " WHERE expires_at <= ? LIMIT ?)"},
    {offsetof(msg_store, purge[STORE_PURGE_READ_PRIVATE]),
     "DELETE FROM messaging_messages WHERE id IN (SELECT id FROM messaging_messages"
     " WHERE read_at <= ? LIMIT ?)"},
    {offsetof(msg_store, purge[STORE_PURGE_OLD_PUBLIC]),
     "DELETE FROM messaging_messages WHERE id IN (SELECT id FROM messaging_messages"
     " WHERE kind = 'public' AND created_at <= ? LIMIT ?)"},
};

static sm_stmt **slot(msg_store *st, size_t offset)
{
    return (sm_stmt **)(void *)((char *)st + offset);
}

void store_close(msg_store *st)
{
    if (!st->host)
        return;
    for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        sm_stmt **s = slot(st, statements[i].offset);
        if (*s)
            st->host->db_finalize(*s);
        *s = NULL;
    }
}

int store_open(msg_store *st, const sm_host *host, sm_plugin *self)
{
    memset(st, 0, sizeof *st);
    st->host = host;
    st->self = self;
    /* Recipients and keys come from the users service (auth); without a
     * provider none can be looked up. */
    if (!SM_HOST_HAS(host, user_lookup_id) || host->user_lookup(NULL, NULL) == SM_ESTATE) {
        host->log(self, SM_LOG_ERROR, "messaging needs a users provider (the auth plugin)");
        return SM_ERROR;
    }
    for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        if (host->db_prepare(self, statements[i].sql, slot(st, statements[i].offset)) != SM_OK) {
            store_close(st);
            return SM_ERROR;
        }
    }
    return SM_OK;
}

/* Copies a text column into a fixed buffer; SM_ERROR if absent or too long. */
static int copy_text(const sm_host *h, sm_stmt *s, int col, char *out, size_t out_len)
{
    const char *t = h->db_column_text(s, col);
    size_t n = t ? strlen(t) : 0;
    if (!t || n >= out_len)
        return SM_ERROR;
    memcpy(out, t, n + 1);
    return SM_OK;
}

/* A nullable text column as JSON (string or null). */
static json_t *text_or_null(const sm_host *h, sm_stmt *s, int col)
{
    const char *t = h->db_column_text(s, col);
    return t ? json_string(t) : json_null();
}

int store_reserve_id(msg_store *st, int64_t *id)
{
    const sm_host *h = st->host;
    int64_t value = 0;
    if (h->db_step(st->next_id) == SM_ROW)
        value = h->db_column_int64(st->next_id, 0);
    h->db_reset(st->next_id);
    if (value <= 0)
        return SM_ERROR;
    *id = value;
    return SM_OK;
}

static int bind_opt_text(const sm_host *h, sm_stmt *s, int i, const char *v)
{
    return v ? h->db_bind_text(s, i, v, -1) : h->db_bind_null(s, i);
}

int store_insert(msg_store *st, const msg_row *r)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->insert;
    char sender_lower[STORE_NAME_MAX];
    int rc = sm_name_fold(r->sender, sender_lower, sizeof sender_lower);
    if (rc != SM_OK)
        return rc;
    if (h->db_bind_int64(s, 1, r->id) != SM_OK ||
        h->db_bind_text(s, 2, r->recipient ? "private" : "public", -1) != SM_OK ||
        h->db_bind_text(s, 3, r->sender, -1) != SM_OK ||
        h->db_bind_text(s, 4, sender_lower, -1) != SM_OK ||
        bind_opt_text(h, s, 5, r->room) != SM_OK ||
        bind_opt_text(h, s, 6, r->room_lower) != SM_OK ||
        bind_opt_text(h, s, 7, r->recipient) != SM_OK ||
        bind_opt_text(h, s, 8, r->recipient_lower) != SM_OK ||
        h->db_bind_text(s, 9, r->hidden ? "" : r->content, -1) != SM_OK ||
        h->db_bind_int64(s, 10, r->encrypted && !r->hidden ? 1 : 0) != SM_OK ||
        bind_opt_text(h, s, 11, r->hidden ? NULL : r->signature) != SM_OK ||
        h->db_bind_double(s, 12, r->timestamp) != SM_OK ||
        (r->has_expiry ? h->db_bind_double(s, 13, r->expires_at) : h->db_bind_null(s, 13)) !=
            SM_OK ||
        h->db_bind_int64(s, 14, r->hidden ? 1 : 0) != SM_OK || h->db_step(s) != SM_DONE)
        rc = SM_ERROR;
    h->db_reset(s);
    return rc;
}

int store_count_unread(msg_store *st, const char *user_lower, double now, int64_t *count)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->count_unread;
    int rc = SM_ERROR;
    int64_t n = 0;
    if (h->db_bind_text(s, 1, user_lower, -1) == SM_OK && h->db_bind_double(s, 2, now) == SM_OK &&
        h->db_step(s) == SM_ROW) {
        n = h->db_column_int64(s, 0);
        rc = SM_OK;
    }
    h->db_reset(s);
    if (rc == SM_OK)
        *count = n;
    return rc;
}

/* Adds "expires_at" to an item when the column is set. */
static int add_expiry(const sm_host *h, sm_stmt *s, int col, json_t *item)
{
    if (h->db_column_is_null(s, col))
        return 0;
    return json_object_set_new(item, "expires_at", json_real(h->db_column_double(s, col)));
}

/* Runs a listing statement (already bound) and appends at most `limit`
 * items built by make_item; the statement asks for limit + 1 rows so the
 * extra one tells whether there is more. Items also stop before their
 * compact JSON (with the commas between them) would pass `budget` bytes;
 * the first item always goes in, so paging always moves on. */
static int collect(const sm_host *h, sm_stmt *s, int limit, size_t budget, json_t *items,
                   int *more, json_t *(*make_item)(const sm_host *, sm_stmt *))
{
    int rc, n = 0, extra = 0;
    size_t used = 0;
    while ((rc = h->db_step(s)) == SM_ROW) {
        if (n == limit) {
            extra = 1;
            break;
        }
        json_t *item = make_item(h, s);
        /* Measured exactly as the core serialises the reply. */
        size_t size = item ? json_dumpb(item, NULL, 0, JSON_COMPACT) : 0;
        if (size == 0) {
            json_decref(item);
            rc = SM_ENOMEM;
            break;
        }
        size += n > 0; /* the comma */
        if (n > 0 && (size > budget || used > budget - size)) {
            json_decref(item);
            extra = 1;
            break;
        }
        if (json_array_append_new(items, item) != 0) {
            rc = SM_ENOMEM;
            break;
        }
        used += size;
        n++;
    }
    h->db_reset(s);
    if (rc != SM_ROW && rc != SM_DONE)
        return rc == SM_ENOMEM ? SM_ENOMEM : SM_ERROR;
    *more = extra;
    return SM_OK;
}

static json_t *unread_item(const sm_host *h, sm_stmt *s)
{
    json_t *item =
        json_pack("{s:I, s:s?, s:s?, s:b, s:o, s:f}", "id", (json_int_t)h->db_column_int64(s, 0),
                  "sender", h->db_column_text(s, 1), "content", h->db_column_text(s, 2),
                  "encrypted", h->db_column_int64(s, 3) != 0, "signature", text_or_null(h, s, 4),
                  "timestamp", h->db_column_double(s, 5));
    if (item && add_expiry(h, s, 6, item) != 0) {
        json_decref(item);
        item = NULL;
    }
    return item;
}

int store_list_unread(msg_store *st, const char *user_lower, int64_t after_id, double now,
                      int limit, size_t budget, json_t *items, int *more)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->list_unread;
    if (h->db_bind_text(s, 1, user_lower, -1) != SM_OK ||
        h->db_bind_int64(s, 2, after_id) != SM_OK || h->db_bind_double(s, 3, now) != SM_OK ||
        h->db_bind_int64(s, 4, (int64_t)limit + 1) != SM_OK) {
        h->db_reset(s);
        return SM_ERROR;
    }
    return collect(h, s, limit, budget, items, more, unread_item);
}

int store_find_private(msg_store *st, int64_t id, const char *user_lower, double now, char *sender,
                       size_t sender_len, int *is_read)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->find_private;
    int rc = SM_ERROR;
    int read = 0;
    if (h->db_bind_int64(s, 1, id) == SM_OK && h->db_bind_text(s, 2, user_lower, -1) == SM_OK &&
        h->db_bind_double(s, 3, now) == SM_OK) {
        int step = h->db_step(s);
        if (step == SM_ROW) {
            rc = copy_text(h, s, 0, sender, sender_len);
            read = h->db_column_int64(s, 1) != 0;
        } else if (step == SM_DONE) {
            rc = SM_ENOTFOUND;
        }
    }
    h->db_reset(s);
    if (rc == SM_OK)
        *is_read = read;
    return rc;
}

int store_set_read(msg_store *st, int64_t id, double now, int *marked)
{
    const sm_host *h = st->host;
    int rc = h->db_bind_double(st->set_read, 1, now) == SM_OK &&
                     h->db_bind_int64(st->set_read, 2, id) == SM_OK &&
                     h->db_step(st->set_read) == SM_DONE
                 ? SM_OK
                 : SM_ERROR;
    int64_t changed = h->db_changes(st->self);
    h->db_reset(st->set_read);
    if (rc == SM_OK)
        *marked = changed > 0;
    return rc;
}

static json_t *history_item(const sm_host *h, sm_stmt *s)
{
    json_t *item =
        json_pack("{s:I, s:s?, s:s?, s:s?, s:f}", "id", (json_int_t)h->db_column_int64(s, 0),
                  "sender", h->db_column_text(s, 1), "content", h->db_column_text(s, 2), "room",
                  h->db_column_text(s, 3), "timestamp", h->db_column_double(s, 4));
    if (item && add_expiry(h, s, 5, item) != 0) {
        json_decref(item);
        item = NULL;
    }
    return item;
}

int store_history(msg_store *st, const char *room_lower, int64_t before_id, double now, int limit,
                  size_t budget, json_t *items, int *more)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->history;
    if (h->db_bind_text(s, 1, room_lower, -1) != SM_OK ||
        h->db_bind_int64(s, 2, before_id) != SM_OK || h->db_bind_double(s, 3, now) != SM_OK ||
        h->db_bind_int64(s, 4, (int64_t)limit + 1) != SM_OK) {
        h->db_reset(s);
        return SM_ERROR;
    }
    return collect(h, s, limit, budget, items, more, history_item);
}

int store_purge(msg_store *st, store_purge_kind kind, double cutoff, int64_t batch,
                int64_t *deleted)
{
    const sm_host *h = st->host;
    if ((unsigned)kind >= STORE_PURGE_KINDS)
        return SM_EINVAL;
    sm_stmt *s = st->purge[kind];
    int rc = h->db_bind_double(s, 1, cutoff) == SM_OK && h->db_bind_int64(s, 2, batch) == SM_OK &&
                     h->db_step(s) == SM_DONE
                 ? SM_OK
                 : SM_ERROR;
    int64_t n = h->db_changes(st->self);
    h->db_reset(s);
    if (rc == SM_OK)
        *deleted = n;
    return rc;
}

int store_find_user(msg_store *st, const char *user_lower, char *name, size_t name_len,
                    json_t **public_key)
{
    sm_user_info info = {.size = sizeof info};
    int rc = st->host->user_lookup(user_lower, &info);
    if (rc != SM_OK)
        return rc == SM_ENOTFOUND ? SM_ENOTFOUND : SM_ERROR;
    size_t n = strlen(info.name);
    if (n >= name_len)
        return SM_ERROR;
    json_t *key = NULL;
    if (public_key && !(key = info.public_key ? json_string(info.public_key) : json_null()))
        return SM_ENOMEM;
    memcpy(name, info.name, n + 1);
    if (public_key)
        *public_key = key;
    return SM_OK;
}

int store_count_pair(msg_store *st, const char *recipient_lower, const char *sender_lower,
                     double now, int64_t *all, int64_t *hidden)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->count_pair;
    int rc = SM_ERROR;
    int64_t n = 0, n_hidden = 0;
    if (h->db_bind_text(s, 1, recipient_lower, -1) == SM_OK &&
        h->db_bind_text(s, 2, sender_lower, -1) == SM_OK && h->db_bind_double(s, 3, now) == SM_OK &&
        h->db_step(s) == SM_ROW) {
        n = h->db_column_int64(s, 0);
        n_hidden = h->db_column_int64(s, 1);
        rc = SM_OK;
    }
    h->db_reset(s);
    if (rc == SM_OK) {
        *all = n;
        *hidden = n_hidden;
    }
    return rc;
}

void store_senders_free(store_senders *list)
{
    free(list->item);
    list->item = NULL;
    list->n = 0;
}

int store_unread_senders(msg_store *st, const char *recipient_lower, double now,
                         store_senders *out)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->unread_senders;
    store_senders list = {0};
    size_t cap = 0;
    int rc = h->db_bind_text(s, 1, recipient_lower, -1) == SM_OK &&
                     h->db_bind_double(s, 2, now) == SM_OK
                 ? SM_ROW
                 : SM_ERROR;
    while (rc == SM_ROW && (rc = h->db_step(s)) == SM_ROW) {
        if (list.n == cap) {
            size_t more = cap ? cap * 2 : 16;
            store_sender *grown = realloc(list.item, more * sizeof *grown);
            if (!grown) {
                rc = SM_ENOMEM;
                break;
            }
            list.item = grown;
            cap = more;
        }
        store_sender *it = &list.item[list.n];
        if (copy_text(h, s, 0, it->lower, sizeof it->lower) != SM_OK ||
            copy_text(h, s, 1, it->name, sizeof it->name) != SM_OK) {
            rc = SM_ERROR;
            break;
        }
        it->count = h->db_column_int64(s, 2);
        list.n++;
    }
    h->db_reset(s);
    if (rc != SM_DONE)
        goto fail;
    *out = list;
    return SM_OK;
fail:
    store_senders_free(&list);
    return rc == SM_ENOMEM ? SM_ENOMEM : SM_ERROR;
}

/* Runs a statement bound with (recipient_lower, sender_lower). */
static int run_pair(const sm_host *h, sm_stmt *s, const char *recipient_lower,
                    const char *sender_lower)
{
    int rc = h->db_bind_text(s, 1, recipient_lower, -1) == SM_OK &&
                     h->db_bind_text(s, 2, sender_lower, -1) == SM_OK && h->db_step(s) == SM_DONE
                 ? SM_OK
                 : SM_ERROR;
    h->db_reset(s);
    return rc;
}

int store_hide_pair(msg_store *st, const char *recipient_lower, const char *sender_lower)
{
    return run_pair(st->host, st->hide_pair, recipient_lower, sender_lower);
}

int store_release_pair(msg_store *st, const char *recipient_lower, const char *sender_lower)
{
    return run_pair(st->host, st->release_pair, recipient_lower, sender_lower);
}

static int by_id(const void *a, const void *b)
{
    int64_t x = ((const store_marked_item *)a)->id, y = ((const store_marked_item *)b)->id;
    return (x > y) - (x < y);
}

/* Whether visible unread messages up to up_to_id remain (after a batch). */
static int more_to_mark(msg_store *st, const char *user_lower, int64_t up_to_id, double now,
                        int *more)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->more_to_mark;
    int step = SM_ERROR;
    if (h->db_bind_text(s, 1, user_lower, -1) == SM_OK &&
        h->db_bind_int64(s, 2, up_to_id) == SM_OK && h->db_bind_double(s, 3, now) == SM_OK)
        step = h->db_step(s);
    h->db_reset(s);
    if (step != SM_ROW && step != SM_DONE)
        return SM_ERROR;
    *more = step == SM_ROW;
    return SM_OK;
}

int store_mark_all(msg_store *st, const char *user_lower, int64_t up_to_id, double now,
                   int limit, store_marked *out, int *more)
{
    const sm_host *h = st->host;
    sm_stmt *s = st->mark_batch;
    store_marked list = {0};
    int rc = SM_ERROR;
    list.item = calloc((size_t)limit, sizeof *list.item);
    if (!list.item)
        return SM_ENOMEM;
    if (h->db_bind_double(s, 1, now) == SM_OK && h->db_bind_text(s, 2, user_lower, -1) == SM_OK &&
        h->db_bind_int64(s, 3, up_to_id) == SM_OK && h->db_bind_int64(s, 4, limit) == SM_OK) {
        while ((rc = h->db_step(s)) == SM_ROW) {
            /* More rows than the LIMIT asked for cannot come. */
            store_marked_item *it = list.n < (size_t)limit ? &list.item[list.n] : NULL;
            if (!it || copy_text(h, s, 1, it->sender, sizeof it->sender) != SM_OK) {
                rc = SM_ERROR;
                break;
            }
            it->id = h->db_column_int64(s, 0);
            list.n++;
        }
    }
    h->db_reset(s);
    if (rc != SM_DONE || more_to_mark(st, user_lower, up_to_id, now, more) != SM_OK) {
        store_marked_free(&list);
        return SM_ERROR;
    }
    /* RETURNING gives the rows in no set order; receipts go oldest first. */
    qsort(list.item, list.n, sizeof *list.item, by_id);
    *out = list;
    return SM_OK;
}

void store_marked_free(store_marked *list)
{
    free(list->item);
    list->item = NULL;
    list->n = 0;
}
