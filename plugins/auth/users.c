#include "users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct users {
    const sm_host *host;
    sm_plugin *self;
    sm_stmt *find, *insert, *update_hash;
};

const sm_migration users_migrations[] = {
    {1, "CREATE TABLE auth_users (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
        " username_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
        " public_key TEXT, created_at REAL NOT NULL)"},
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
                               "SELECT id, username, password_hash FROM auth_users"
                               " WHERE username_lower = ?",
                               &u->find)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "INSERT INTO auth_users (username, username_lower, password_hash,"
                               " public_key, created_at) VALUES (?, ?, ?, ?, ?)",
                               &u->insert)) != SM_OK ||
        (rc = host->db_prepare(self,
                               "UPDATE auth_users SET password_hash = ?"
                               " WHERE id = ? AND password_hash = ?",
                               &u->update_hash)) != SM_OK) {
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
    u->host->db_finalize(u->insert);
    u->host->db_finalize(u->update_hash);
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
    }
    found = 1;
out:
    h->db_reset(u->find);
    return found;
}

int users_insert(users *u, const char *username, const char *lower, const char *hash,
                 const char *public_key, int64_t *id)
{
    const sm_host *h = u->host;
    sm_stmt *st = u->insert;
    int rc = SM_ERROR;
    if (h->db_bind_text(st, 1, username, -1) != SM_OK ||
        h->db_bind_text(st, 2, lower, -1) != SM_OK ||
        h->db_bind_text(st, 3, hash, -1) != SM_OK ||
        (public_key ? h->db_bind_text(st, 4, public_key, -1) : h->db_bind_null(st, 4)) != SM_OK ||
        h->db_bind_double(st, 5, h->now()) != SM_OK)
        goto out;
    rc = h->db_step(st);
    if (rc == SM_DONE) {
        *id = h->db_last_insert_id(u->self);
        rc = SM_OK;
    } else if (rc != SM_EEXIST) {
        rc = SM_ERROR;
    }
out:
    h->db_reset(st);
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
