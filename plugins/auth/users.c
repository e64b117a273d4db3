#include "users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct users {
    const sm_host *host;
    sm_plugin *self;
    sm_stmt *find, *next_id, *insert, *update_hash;
    sm_stmt *list, *set_disabled, *remove, *set_hash; /* the admin commands' */
    sm_stmt *by_name, *by_id;                         /* the users service's */
    /* The last lookup's answer, kept for the core to copy. */
    char found_name[USERNAME_MAX + 1];
    char *found_key;
};

/* Portable SQL: the same migrations run on SQLite and PostgreSQL.
 *
 * Version 1 was first shipped with `created_at REAL`: on SQLite, REAL and
 * DOUBLE PRECISION are the same column (REAL affinity, an 8-byte float),
 * so a database made with either text is the same, and none needs
 * changing; on PostgreSQL REAL is a 4-byte float, which would round a
 * UNIX time to 128 s. `id INTEGER PRIMARY KEY` stays: on SQLite it is the
 * table's rowid (one b-tree, the key of every old database); on
 * PostgreSQL it is a 4-byte integer without a default, so ids are given
 * by the application (version 3), never by the engine.
 *
 * Version 3: ids come from auth_ids, one row holding the last id given,
 * taken with `UPDATE ... RETURNING` (SQLite 3.35, PostgreSQL), atomic on
 * both engines and across the nodes of a cluster, where SQLite's rowid
 * (max + 1) would give two nodes the same id. It starts at the highest id
 * a database at version 2 has. An id is never given twice: a name taken
 * between the two statements costs one, and the id of a deleted newest
 * account is not given again (SQLite's rowid did reuse it). */
const sm_migration users_migrations[] = {
    {1, "CREATE TABLE auth_users (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
        " username_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
        " public_key TEXT, created_at DOUBLE PRECISION NOT NULL)"},
    /* safemessenger-admin users disable: a disabled user cannot log in. */
    {2, "ALTER TABLE auth_users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0"},
    {3, "CREATE TABLE auth_ids (last_id BIGINT NOT NULL);"
        "INSERT INTO auth_ids (last_id) SELECT COALESCE(MAX(id), 0) FROM auth_users"},
    {0, NULL},
};

int users_open(const sm_host *host, sm_plugin *self, users **out)
{
    users *u = calloc(1, sizeof *u);
    if (!u)
        return SM_ENOMEM;
    u->host = host;
    u->self = self;
    int rc;
    if ((rc = host->db_prepare(self,
                               "SELECT id, username, password_hash, disabled, created_at,"
                               " public_key IS NOT NULL FROM auth_users WHERE username_lower = ?",
                               &u->find)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "UPDATE auth_ids SET last_id = last_id + 1 RETURNING last_id",
                               &u->next_id)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "INSERT INTO auth_users (id, username, username_lower,"
                               " password_hash, public_key, created_at)"
                               " VALUES (?, ?, ?, ?, ?, ?)",
                               &u->insert)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "UPDATE auth_users SET password_hash = ?"
                               " WHERE id = ? AND password_hash = ?",
                               &u->update_hash)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "SELECT id, username, created_at, disabled FROM auth_users"
                               " ORDER BY username_lower",
                               &u->list)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "UPDATE auth_users SET disabled = ? WHERE username_lower = ?",
                               &u->set_disabled)) != SM_OK ||
        (rc = host->db_prepare(self, "DELETE FROM auth_users WHERE username_lower = ?",
                               &u->remove)) != SM_OK ||
        (rc = host->db_prepare(self, "UPDATE auth_users SET password_hash = ? WHERE id = ?",
                               &u->set_hash)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "SELECT id, username, public_key FROM auth_users"
                               " WHERE username_lower = ?",
                               &u->by_name)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "SELECT id, username, public_key FROM auth_users WHERE id = ?",
                               &u->by_id)) != SM_OK) {
        users_close(u);
        return rc;
    }
    *out = u;
    return SM_OK;
}

void users_close(users *u)
{
    if (!u)
        return;
    u->host->db_finalize(u->find);
    u->host->db_finalize(u->next_id);
    u->host->db_finalize(u->insert);
    u->host->db_finalize(u->update_hash);
    u->host->db_finalize(u->list);
    u->host->db_finalize(u->set_disabled);
    u->host->db_finalize(u->remove);
    u->host->db_finalize(u->set_hash);
    u->host->db_finalize(u->by_name);
    u->host->db_finalize(u->by_id);
    free(u->found_key);
    free(u);
}

int users_find(users *u, const char *lower, user_row *row)
{
    const sm_host *h = u->host;
    int found = -1;
    if (h->db_bind_text(u->find, 1, lower, -1) != SM_OK)
        goto out;
    int rc = h->db_step(u->find);
    if (rc == SM_DONE) {
        found = 0;
        goto out;
    }
    if (rc != SM_ROW)
        goto out;
    if (row) {
        const char *name = h->db_column_text(u->find, 1);
        const char *hash = h->db_column_text(u->find, 2);
        if (!name || !hash || strlen(name) > USERNAME_MAX)
            goto out;
        size_t n = strlen(hash) + 1;
        char *copy = malloc(n);
        if (!copy)
            goto out;
        memcpy(copy, hash, n);
        row->id = h->db_column_int64(u->find, 0);
        snprintf(row->username, sizeof row->username, "%s", name);
        row->password_hash = copy;
        row->disabled = h->db_column_int64(u->find, 3) != 0;
        row->created_at = h->db_column_double(u->find, 4);
        row->has_public_key = h->db_column_int64(u->find, 5) != 0;
    }
    found = 1;
out:
    h->db_reset(u->find);
    return found;
}

/* The next user id from auth_ids (committed at once: see the
 * migrations). SM_OK, or SM_ERROR (logged by the host, or here when the
 * row is missing). */
static int next_id(users *u, int64_t *id)
{
    const sm_host *h = u->host;
    int rc = h->db_step(u->next_id);
    if (rc == SM_ROW)
        *id = h->db_column_int64(u->next_id, 0);
    else if (rc == SM_DONE)
        h->log(u->self, SM_LOG_ERROR, "auth_ids has no row: no user id to give");
    h->db_reset(u->next_id);
    return rc == SM_ROW ? SM_OK : SM_ERROR;
}

int users_insert(users *u, const char *username, const char *lower, const char *hash,
                 const char *public_key, int64_t *id)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->insert;
    int64_t new_id = 0;
    if (next_id(u, &new_id) != SM_OK)
        return SM_ERROR;
    int rc = SM_ERROR;
    if (h->db_bind_int64(st, 1, new_id) != SM_OK ||
        h->db_bind_text(st, 2, username, -1) != SM_OK ||
        h->db_bind_text(st, 3, lower, -1) != SM_OK ||
        h->db_bind_text(st, 4, hash, -1) != SM_OK ||
        (public_key ? h->db_bind_text(st, 5, public_key, -1) : h->db_bind_null(st, 5)) != SM_OK ||
        h->db_bind_double(st, 6, h->now()) != SM_OK)
        goto out;
    rc = h->db_step(st);
    if (rc == SM_DONE) {
        *id = new_id;
        rc = SM_OK;
    } else if (rc != SM_EEXIST) {
        rc = SM_ERROR;
    }
out:
    h->db_reset(st);
    /* Either key may be the one taken: the name is the user's problem, the
     * id is a row written behind auth_ids's back (by hand, or by a
     * version that took rowids), and telling the user the name is taken
     * would hide it. */
    if (rc == SM_EEXIST && users_find(u, lower, NULL) == 0) {
        h->log(u->self, SM_LOG_ERROR,
               "user id %lld is already taken: auth_ids is behind auth_users", (long long)new_id);
        rc = SM_ERROR;
    }
    return rc;
}

int users_update_hash(users *u, int64_t id, const char *new_hash, const char *old_hash)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->update_hash;
    int rc = SM_ERROR;
    if (h->db_bind_text(st, 1, new_hash, -1) == SM_OK && h->db_bind_int64(st, 2, id) == SM_OK &&
        h->db_bind_text(st, 3, old_hash, -1) == SM_OK && h->db_step(st) == SM_DONE)
        rc = h->db_changes(u->self) > 0 ? SM_OK : SM_ENOTFOUND;
    h->db_reset(st);
    return rc;
}

int users_set_disabled(users *u, const char *lower, int disabled)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->set_disabled;
    int rc = SM_ERROR;
    if (h->db_bind_int64(st, 1, disabled ? 1 : 0) == SM_OK &&
        h->db_bind_text(st, 2, lower, -1) == SM_OK && h->db_step(st) == SM_DONE)
        rc = h->db_changes(u->self) > 0 ? SM_OK : SM_ENOTFOUND;
    h->db_reset(st);
    return rc;
}

int users_delete(users *u, const char *lower)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->remove;
    int rc = SM_ERROR;
    if (h->db_bind_text(st, 1, lower, -1) == SM_OK && h->db_step(st) == SM_DONE)
        rc = h->db_changes(u->self) > 0 ? SM_OK : SM_ENOTFOUND;
    h->db_reset(st);
    return rc;
}

int users_set_hash(users *u, int64_t id, const char *hash)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->set_hash;
    int rc = SM_ERROR;
    if (h->db_bind_text(st, 1, hash, -1) == SM_OK && h->db_bind_int64(st, 2, id) == SM_OK &&
        h->db_step(st) == SM_DONE)
        rc = h->db_changes(u->self) > 0 ? SM_OK : SM_ENOTFOUND;
    h->db_reset(st);
    return rc;
}

json_t *users_list(users *u)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->list;
    json_t *list = json_array();
    int rc = SM_DONE;
    while (list && (rc = h->db_step(st)) == SM_ROW) {
        const char *name = h->db_column_text(st, 1);
        json_t *row = json_pack("{s:s, s:I, s:f, s:b}", "user", name ? name : "?", "id",
                                (json_int_t)h->db_column_int64(st, 0), "created_at",
                                h->db_column_double(st, 2), "disabled",
                                h->db_column_int64(st, 3) != 0);
        if (json_array_append_new(list, row) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    if (list && rc != SM_DONE) {
        json_decref(list);
        list = NULL;
    }
    h->db_reset(st);
    return list;
}

int users_valid_name(const char *s, size_t len)
{
    return strlen(s) == len && sm_name_valid(s, USERNAME_MIN, USERNAME_MAX);
}

/* Binds lower (or id when lower is NULL) and copies the row into u, where
 * it stays valid until the next lookup. */
int users_lookup(users *u, const char *lower, int64_t id, sm_user_info *out)
{
    const sm_host *h = u->host;
    sm_stmt *st = lower ? u->by_name : u->by_id;
    int rc = lower ? h->db_bind_text(st, 1, lower, -1) : h->db_bind_int64(st, 1, id);
    if (rc == SM_OK) {
        int step = h->db_step(st);
        rc = step == SM_DONE ? SM_ENOTFOUND : step == SM_ROW ? SM_OK : SM_ERROR;
    }
    if (rc == SM_OK) {
        const char *name = h->db_column_text(st, 1);
        const char *key = h->db_column_text(st, 2);
        char *key_copy = NULL;
        size_t n = key ? strlen(key) + 1 : 0;
        if (!name || strlen(name) > USERNAME_MAX)
            rc = SM_ERROR;
        else if (key && !(key_copy = malloc(n)))
            rc = SM_ENOMEM;
        if (rc == SM_OK) {
            if (key_copy)
                memcpy(key_copy, key, n);
            free(u->found_key);
            u->found_key = key_copy;
            snprintf(u->found_name, sizeof u->found_name, "%s", name);
            out->id = h->db_column_int64(st, 0);
            out->name = u->found_name;
            out->public_key = u->found_key;
        }
    }
    h->db_reset(st);
    return rc;
}
