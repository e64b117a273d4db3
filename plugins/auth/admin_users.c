/* safemessenger-admin's `users` commands. Every command takes {"user":
 * name}; names are matched like logins (ASCII case folded).
 *
 * Disabling and deleting close the user's live sessions at once with close
 * 1008 (docs/PROTOCOL.md section 8); a disabled user's logins then fail
 * with the very 1001 a wrong password gets (auth.c), so nobody learns
 * that the name exists. */
#include "admin_users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define CLOSE_POLICY 1008
#define MAX_CLOSED 1024

/* The name from args, folded into lower; 0, or -1 after answering. */
static int user_arg(auth *a, sm_admin_ctx *ctx, const json_t *args, const char **name,
                    char lower[USERNAME_MAX + 1])
{
    const char *s = json_string_value(json_object_get(args, "user"));
    if (!s) {
        a->host->admin_error(ctx, SM_EINVAL, "give {\"user\": name}");
        return -1;
    }
    if (!sm_name_valid(s, USERNAME_MIN, USERNAME_MAX)) {
        /* No such name can exist. */
        char msg[96];
        snprintf(msg, sizeof msg, "no such user '%.40s'", s);
        a->host->admin_error(ctx, SM_ENOTFOUND, msg);
        return -1;
    }
    *name = s;
    sm_name_fold(s, lower, USERNAME_MAX + 1); /* valid: it fits */
    return 0;
}

static void no_such_user(auth *a, sm_admin_ctx *ctx, const char *name)
{
    char msg[96];
    snprintf(msg, sizeof msg, "no such user '%s'", name);
    a->host->admin_error(ctx, SM_ENOTFOUND, msg);
}

static void internal(auth *a, sm_admin_ctx *ctx)
{
    a->host->admin_error(ctx, SM_ERROR, "database error (see the server's log)");
}

/* Closes every live session of the user; returns how many. */
static size_t close_sessions(auth *a, const char *name, const char *reason)
{
    const sm_host *h = a->host;
    sm_session_id ids[MAX_CLOSED];
    size_t n = h->user_sessions(name, ids, MAX_CLOSED);
    if (n > MAX_CLOSED)
        n = MAX_CLOSED;
    for (size_t i = 0; i < n; i++)
        h->session_close(ids[i], CLOSE_POLICY, reason);
    return n;
}

static void reply_row(auth *a, sm_admin_ctx *ctx, const user_row *row, size_t closed,
                      int with_closed)
{
    json_t *result = json_pack("{s:s, s:I, s:f, s:b, s:b, s:I}", "user", row->username, "id",
                               (json_int_t)row->id, "created_at", row->created_at, "disabled",
                               row->disabled, "public_key", row->has_public_key, "sessions",
                               (json_int_t)a->host->user_sessions(row->username, NULL, 0));
    if (result && with_closed)
        json_object_set_new(result, "sessions_closed", json_integer((json_int_t)closed));
    if (result)
        a->host->admin_reply(ctx, result);
    else
        internal(a, ctx);
    json_decref(result);
}

/* The user's row, or -1 after answering. */
static int find(auth *a, sm_admin_ctx *ctx, const char *name, const char *lower, user_row *row)
{
    int found = users_find(a->users, lower, row);
    if (found == 1)
        return 0;
    if (found == 0)
        no_such_user(a, ctx, name);
    else
        internal(a, ctx);
    return -1;
}

static void users_list_cmd(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    auth *a = data;
    json_t *list = users_list(a->users);
    json_t *result = list ? json_pack("{s:o}", "users", list) : NULL;
    if (result)
        a->host->admin_reply(ctx, result);
    else
        internal(a, ctx);
    json_decref(result);
}

static void users_show(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    auth *a = data;
    const char *name;
    char lower[USERNAME_MAX + 1];
    user_row row = {0};
    if (user_arg(a, ctx, args, &name, lower) != 0 || find(a, ctx, name, lower, &row) != 0)
        return;
    reply_row(a, ctx, &row, 0, 0);
    free(row.password_hash);
}

static void set_disabled(sm_admin_ctx *ctx, const json_t *args, auth *a, int disabled)
{
    const char *name;
    char lower[USERNAME_MAX + 1];
    user_row row = {0};
    if (user_arg(a, ctx, args, &name, lower) != 0)
        return;
    int rc = users_set_disabled(a->users, lower, disabled);
    if (rc == SM_ENOTFOUND) {
        no_such_user(a, ctx, name);
        return;
    }
    if (rc != SM_OK || find(a, ctx, name, lower, &row) != 0) {
        if (rc != SM_OK)
            internal(a, ctx);
        return;
    }
    a->host->audit(a->self, 0, disabled ? "disable" : "enable", row.username);
    /* After the commit: a login racing this one re-reads the flag before
     * it succeeds (auth.c, still_enabled). */
    size_t closed = disabled ? close_sessions(a, row.username, "account disabled") : 0;
    reply_row(a, ctx, &row, closed, 1);
    free(row.password_hash);
}

static void users_disable(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    set_disabled(ctx, args, data, 1);
}

static void users_enable(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    set_disabled(ctx, args, data, 0);
}

/* The account row goes here; what other plugins keep for the user (rooms,
 * friends, messages) goes when they receive SM_EVENT_USER_DELETED. */
static void users_delete_cmd(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    auth *a = data;
    const sm_host *h = a->host;
    const char *name;
    char lower[USERNAME_MAX + 1];
    user_row row = {0};
    if (user_arg(a, ctx, args, &name, lower) != 0 || find(a, ctx, name, lower, &row) != 0)
        return;
    free(row.password_hash);
    size_t closed = close_sessions(a, row.username, "account deleted");
    if (users_delete(a->users, lower) != SM_OK) {
        internal(a, ctx);
        return;
    }
    h->audit(a->self, 0, "delete", row.username);
    h->user_deleted(a->self, row.username);
    json_t *result = json_pack("{s:s, s:b, s:I}", "user", row.username, "deleted", 1,
                               "sessions_closed", (json_int_t)closed);
    h->admin_reply(ctx, result);
    json_decref(result);
}

/* users.passwd: hashed on the worker pool like a registration. */
typedef struct passwd_req {
    auth *a;
    sm_admin_ctx *ctx;
    int64_t id;
    char username[USERNAME_MAX + 1];
} passwd_req;

static void passwd_hashed(void *arg, hash_status status, const char *encoded)
{
    passwd_req *r = arg;
    auth *a = r->a;
    const sm_host *h = a->host;
    if (status != HASH_OK || a->unloading) {
        h->admin_error(r->ctx, SM_ERROR, "the password could not be hashed (server stopping?)");
    } else {
        int rc = users_set_hash(a->users, r->id, encoded);
        if (rc == SM_ENOTFOUND) {
            no_such_user(a, r->ctx, r->username);
        } else if (rc != SM_OK) {
            internal(a, r->ctx);
        } else {
            h->audit(a->self, 0, "passwd", r->username);
            json_t *result = json_pack("{s:s, s:b}", "user", r->username, "password_set", 1);
            h->admin_reply(r->ctx, result);
            json_decref(result);
        }
    }
    free(r);
}

static void users_passwd(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    auth *a = data;
    const char *name;
    char lower[USERNAME_MAX + 1];
    user_row row = {0};
    json_t *pw = json_object_get(args, "password");
    size_t len = json_string_length(pw);
    if (!json_is_string(pw) || len < PASSWORD_MIN || len > PASSWORD_MAX) {
        a->host->admin_error(ctx, SM_EINVAL, "the password must be 8 to 1024 bytes");
        return;
    }
    if (user_arg(a, ctx, args, &name, lower) != 0 || find(a, ctx, name, lower, &row) != 0)
        return;
    free(row.password_hash);
    passwd_req *r = calloc(1, sizeof *r);
    if (!r) {
        internal(a, ctx);
        return;
    }
    r->a = a;
    r->ctx = ctx;
    r->id = row.id;
    memcpy(r->username, row.username, sizeof r->username);
    a->host->admin_defer(ctx);
    /* Session 0: the job runs whatever happens to sessions. */
    int rc = hashq_hash(a->hq, 0, json_string_value(pw), len, passwd_hashed, r);
    if (rc != SM_OK) {
        a->host->admin_error(ctx, rc == SM_EBUSY ? SM_EBUSY : SM_ERROR,
                             rc == SM_EBUSY ? "server busy; try again" : "cannot hash");
        free(r);
    }
}

const sm_admin_command auth_admin_commands[] = {
    {"users.list", users_list_cmd, "every account: user, id, created_at, disabled"},
    {"users.show", users_show, "one account {user}"},
    {"users.disable", users_disable, "refuse {user}'s logins, close its sessions"},
    {"users.enable", users_enable, "allow {user}'s logins again"},
    {"users.delete", users_delete_cmd, "delete {user}: the account, then every plugin's data"},
    {"users.passwd", users_passwd, "set {user}'s {password} (hashed like a registration)"},
    {NULL, NULL, NULL},
};
