/* The friends plugin's SQL: every statement is prepared once in start and
 * looks rows up by primary key (or an index), because the policy runs for
 * every private message on the server. Keys are ASCII-lower-cased names;
 * display names always come from the users service (sm_host.user_lookup),
 * and a key whose account is gone is left out of every list. */
#include <stdlib.h>
#include <string.h>

#include "friends.h"

typedef struct fr_sql {
    const char *sql;
    int keys;       /* how many leading parameters take a name key */
    int stamped;    /* 1: the parameter after the keys is now() */
} fr_sql;

/* Indexed by fr_stmt_id. The same SQL runs on SQLite and PostgreSQL
 * (docs/PLUGINS.md, "Portable SQL"). An insert of a row that is there
 * already (a repeated block) does nothing, by its key's ON CONFLICT: any
 * other constraint that refuses a row is an error, never taken for a
 * repeat (on PostgreSQL, a database collation other than C can make the
 * pairs' CHECK (a_lower < b_lower) refuse a pair that strcmp ordered). */
static const fr_sql statements[FR_STMT_COUNT] = {
    [FR_PAIR_GET] = {"SELECT 1 FROM friends_pairs WHERE a_lower = ? AND b_lower = ?", 2, 0},
    [FR_PAIR_ADD] = {"INSERT INTO friends_pairs (a_lower, b_lower, created_at) VALUES (?, ?, ?)"
                     " ON CONFLICT (a_lower, b_lower) DO NOTHING",
                     2, 1},
    [FR_PAIR_DEL] = {"DELETE FROM friends_pairs WHERE a_lower = ? AND b_lower = ?", 2, 0},
    /* A hidden request is one a policy dropped (the target blocked the
     * requester): its target never sees it, its requester is told "already
     * pending" as for any other (docs/PROTOCOL.md 7.7). */
    [FR_REQ_GET] = {"SELECT 1 FROM friends_requests WHERE from_lower = ? AND to_lower = ?"
                    " AND hidden = 0",
                    2, 0},
    [FR_REQ_ADD] = {"INSERT INTO friends_requests (from_lower, to_lower, created_at)"
                    " VALUES (?, ?, ?) ON CONFLICT (from_lower, to_lower) DO NOTHING",
                    2, 1},
    [FR_REQ_DEL] = {"DELETE FROM friends_requests WHERE from_lower = ? AND to_lower = ?", 2, 0},
    [FR_REQ_ANY_GET] = {"SELECT 1 FROM friends_requests WHERE from_lower = ? AND to_lower = ?",
                        2, 0},
    [FR_REQ_ADD_HIDDEN] = {"INSERT INTO friends_requests (from_lower, to_lower, created_at,"
                           " hidden) VALUES (?, ?, ?, 1)"
                           " ON CONFLICT (from_lower, to_lower) DO NOTHING",
                           2, 1},
    [FR_REQ_HIDE] = {"UPDATE friends_requests SET hidden = 1 WHERE from_lower = ?"
                     " AND to_lower = ?",
                     2, 0},
    [FR_REQ_DEL_HIDDEN] = {"DELETE FROM friends_requests WHERE from_lower = ? AND to_lower = ?"
                           " AND hidden = 1",
                           2, 0},
    [FR_BLOCK_GET] = {"SELECT 1 FROM friends_blocks WHERE blocker_lower = ? AND blocked_lower = ?",
                      2, 0},
    [FR_BLOCK_ADD] = {"INSERT INTO friends_blocks (blocker_lower, blocked_lower, created_at)"
                      " VALUES (?, ?, ?) ON CONFLICT (blocker_lower, blocked_lower) DO NOTHING",
                      2, 1},
    [FR_BLOCK_DEL] = {"DELETE FROM friends_blocks WHERE blocker_lower = ? AND blocked_lower = ?",
                      2, 0},
    /* Both halves use an index (the primary key, friends_pairs_b); sorting
     * by the lower-cased name is sorting without regard to ASCII case. */
    [FR_FRIENDS_OF] = {"SELECT b_lower FROM friends_pairs WHERE a_lower = ?"
                       " UNION ALL"
                       " SELECT a_lower FROM friends_pairs WHERE b_lower = ?"
                       " ORDER BY 1",
                       2, 0},
    /* Requests made within the same instant come in name order: portable
     * SQL has no insertion order, and real clocks carry fractions. */
    [FR_REQUESTS_TO] = {"SELECT from_lower, created_at FROM friends_requests"
                        " WHERE to_lower = ? AND hidden = 0"
                        " ORDER BY created_at, from_lower",
                        1, 0},
    [FR_BLOCKED_BY] = {"SELECT blocked_lower FROM friends_blocks"
                       " WHERE blocker_lower = ? ORDER BY blocked_lower",
                       1, 0},
};

int fr_store_prepare(friends *fr)
{
    for (int i = 0; i < FR_STMT_COUNT; i++) {
        int rc = fr->host->db_prepare(fr->self, statements[i].sql, &fr->stmt[i]);
        if (rc != SM_OK)
            return rc;
    }
    return SM_OK;
}

void fr_store_finalize(friends *fr)
{
    for (int i = 0; i < FR_STMT_COUNT; i++) {
        if (fr->stmt[i])
            fr->host->db_finalize(fr->stmt[i]);
        fr->stmt[i] = NULL;
    }
}

/* Binds the keys (pair keys in ascending order) and the timestamp. */
static int bind_keys(friends *fr, fr_stmt_id id, const char *a, const char *b, double at)
{
    const sm_host *h = fr->host;
    sm_stmt *st = fr->stmt[id];
    if ((id == FR_PAIR_GET || id == FR_PAIR_ADD || id == FR_PAIR_DEL) && strcmp(a, b) > 0) {
        const char *t = a;
        a = b;
        b = t;
    }
    int rc = h->db_bind_text(st, 1, a, -1);
    if (rc == SM_OK && statements[id].keys > 1)
        rc = h->db_bind_text(st, 2, b ? b : a, -1);
    if (rc == SM_OK && statements[id].stamped)
        rc = h->db_bind_double(st, statements[id].keys + 1, at);
    return rc;
}

int fr_user_get(friends *fr, const char *lower, char *out, size_t out_len)
{
    sm_user_info info = {.size = sizeof info};
    int rc = fr->host->user_lookup(lower, &info);
    if (rc != SM_OK)
        return rc == SM_ENOTFOUND ? SM_ENOTFOUND : SM_ERROR;
    size_t len = strlen(info.name);
    if (len >= out_len)
        return SM_ERROR;
    memcpy(out, info.name, len + 1);
    return SM_OK;
}

int fr_exists(friends *fr, fr_stmt_id id, const char *a, const char *b)
{
    sm_stmt *st = fr->stmt[id];
    int rc = bind_keys(fr, id, a, b, 0);
    if (rc == SM_OK) {
        rc = fr->host->db_step(st);
        rc = rc == SM_ROW ? 1 : rc == SM_DONE ? 0 : (rc < 0 ? rc : SM_ERROR);
    }
    fr->host->db_reset(st);
    return rc;
}

int fr_exec(friends *fr, fr_stmt_id id, const char *a, const char *b, double at)
{
    sm_stmt *st = fr->stmt[id];
    int rc = bind_keys(fr, id, a, b, at);
    if (rc == SM_OK) {
        rc = fr->host->db_step(st);
        if (rc == SM_EEXIST)
            fr->host->log(fr->self, SM_LOG_ERROR, "a constraint refused the row (%s, %s)", a,
                          b ? b : a);
        rc = rc == SM_DONE ? SM_OK : (rc < 0 ? rc : SM_ERROR);
    }
    fr->host->db_reset(st);
    return rc;
}

void fr_names_free(fr_names *names)
{
    for (size_t i = 0; i < names->n; i++)
        free(names->name[i]);
    free(names->name);
    free(names->num);
    names->name = NULL;
    names->num = NULL;
    names->n = names->cap = 0;
}

static int names_push(fr_names *names, const char *name, double num)
{
    if (!name)
        return SM_ERROR;
    if (names->n == names->cap) {
        size_t cap = names->cap ? names->cap * 2 : 8;
        char **v = realloc(names->name, cap * sizeof *v);
        if (!v)
            return SM_ENOMEM;
        names->name = v;
        double *d = realloc(names->num, cap * sizeof *d);
        if (!d)
            return SM_ENOMEM;
        names->num = d;
        names->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return SM_ENOMEM;
    names->name[names->n] = copy;
    names->num[names->n] = num;
    names->n++;
    return SM_OK;
}

/* Replaces each key by the name its account is registered under, leaving
 * out keys whose account is gone (the rows outlive a deleted account only
 * until its SM_EVENT_USER_DELETED has run). */
static int resolve(friends *fr, fr_names *names)
{
    size_t kept = 0;
    for (size_t i = 0; i < names->n; i++) {
        sm_user_info info = {.size = sizeof info};
        int rc = fr->host->user_lookup(names->name[i], &info);
        char *name = rc == SM_OK ? strdup(info.name) : NULL;
        if (rc == SM_OK && !name)
            rc = SM_ENOMEM;
        free(names->name[i]);
        names->name[i] = NULL;
        if (rc == SM_ENOTFOUND)
            continue;
        if (rc != SM_OK) {
            /* Free the rest too: names->n still counts them. */
            for (size_t k = i + 1; k < names->n; k++)
                free(names->name[k]);
            names->n = kept;
            return rc == SM_ENOMEM ? rc : SM_ERROR;
        }
        names->name[kept] = name;
        names->num[kept] = names->num[i];
        kept++;
    }
    names->n = kept;
    return SM_OK;
}

/* The rows are copied out and the statement reset before the caller sends
 * anything: sending can close a session, whose events come back here. */
int fr_list(friends *fr, fr_stmt_id id, const char *key, fr_names *out)
{
    const sm_host *h = fr->host;
    sm_stmt *st = fr->stmt[id];
    fr_names names = {0};
    int rc = bind_keys(fr, id, key, key, 0);
    while (rc == SM_OK) {
        rc = h->db_step(st);
        if (rc == SM_DONE) {
            rc = SM_OK;
            break;
        }
        if (rc != SM_ROW) {
            rc = rc < 0 ? rc : SM_ERROR;
            break;
        }
        double num = id == FR_REQUESTS_TO ? h->db_column_double(st, 1) : 0;
        rc = names_push(&names, h->db_column_text(st, 0), num);
    }
    h->db_reset(st);
    if (rc == SM_OK)
        rc = resolve(fr, &names);
    if (rc != SM_OK)
        goto fail;
    *out = names;
    return SM_OK;
fail:
    fr_names_free(&names);
    return rc;
}

int fr_transaction(friends *fr, int (*fn)(friends *fr, const char *a, const char *b),
                   const char *a, const char *b)
{
    int rc = fr->host->db_begin(fr->self);
    if (rc != SM_OK)
        return rc;
    rc = fn(fr, a, b);
    if (rc == SM_OK)
        return fr->host->db_commit(fr->self); /* rolls back itself on failure */
    fr->host->db_rollback(fr->self);
    return rc;
}
