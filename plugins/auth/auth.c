/* Auth: `register`, `login` and `logout` (PROTOCOL.md sections 5 to 7).
 *
 * Public schema. Other plugins may read this table through the storage API
 * (e.g. to check that a recipient exists); only this plugin writes it:
 *
 *   auth_users(
 *     id             INTEGER PRIMARY KEY,     -- the user id given to session_login
 *     username       TEXT NOT NULL,           -- as first written (shown to everyone)
 *     username_lower TEXT NOT NULL UNIQUE,    -- ASCII-folded: look users up by this
 *     password_hash  TEXT NOT NULL,           -- argon2id encoded form, never sent
 *     public_key     TEXT,                    -- PEM SubjectPublicKeyInfo or NULL
 *     created_at     DOUBLE PRECISION NOT NULL, -- UNIX seconds (REAL on SQLite
 *                                             --   databases made before: the same)
 *     disabled       INTEGER NOT NULL DEFAULT 0) -- 1: logins refused (admin tool)
 *
 * Ids come from auth_ids(last_id), never from the engine (users.c says
 * why): a row written into auth_users by hand takes its id from there.
 * The SQL runs unchanged on SQLite and PostgreSQL.
 *
 * e.g. SELECT username, public_key FROM auth_users WHERE username_lower = ?
 * with the name folded A-Z -> a-z (usernames are [A-Za-z0-9_.-] only).
 *
 * This file: the handlers and the action table; admin_users.c holds the
 * `users` admin commands. Passwords are hashed and
 * checked on the worker pool (hashing.c); the failed-login and
 * registration limits and each address's share of the hash queue live in
 * memory (limits.c); public keys are checked
 * with OpenSSL (pubkey.c); the table's statements are in users.c and the
 * configuration in settings.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_users.h"
#include "auth.h"
#include "shared_limits.h"
#include "hashing.h"
#include "limits.h"
#include "pubkey.h"
#include "safemessenger/plugin.h"
#include "settings.h"
#include "users.h"

#define PRUNE_INTERVAL 60.0
#define BAD_CREDENTIALS "invalid username or password"

/* One register or login waiting for its hash. */
typedef struct auth_req {
    auth *a;
    sm_ctx *ctx;
    sm_session_id session;
    int64_t user_id;                   /* login: 0 for an unknown user */
    char username[USERNAME_MAX + 1];   /* register: as sent; login: as stored */
    char lower[USERNAME_MAX + 1];
    char address[RATELIMIT_KEY_MAX + 1];
    /* Reservations held while the hash is queued or running (reserve()). */
    int held_hash;                     /* a slot of the address's hash share */
    int held_addr, held_user;          /* login: an attempt in flight in fail_* */
    char *stored_hash;                 /* login: for the compare-and-set rehash */
    int disabled;                      /* login: the account is disabled */
    char *public_key;                  /* register: NULL when none */
} auth_req;

/* Counted, so that unloading can tell that every one ended. */
static auth_req *req_new(auth *a, sm_ctx *ctx, sm_session_id session)
{
    auth_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->a = a;
    r->ctx = ctx;
    r->session = session;
    a->requests++;
    return r;
}

static void req_free(auth_req *r)
{
    if (!r)
        return;
    r->a->requests--;
    free(r->stored_hash);
    free(r->public_key);
    free(r);
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- payload checks ---------------------------------------------------- */

/* A string field: 0 present (value and byte length written), 1 absent or
 * null (PROTOCOL.md section 5), -1 not a string (message written). */
static int get_string(const json_t *payload, const char *name, const char **value, size_t *len,
                      char *msg, size_t msg_len)
{
    json_t *v = json_object_get(payload, name);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_string(v)) {
        snprintf(msg, msg_len, "field '%s' must be a string", name);
        return -1;
    }
    *value = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

static int get_required(const json_t *payload, const char *name, const char **value,
                        size_t *len, char *msg, size_t msg_len)
{
    int rc = get_string(payload, name, value, len, msg, msg_len);
    if (rc == 1)
        snprintf(msg, msg_len, "field '%s' is required", name);
    return rc == 0 ? 0 : -1;
}

/* ---- replies ------------------------------------------------------------ */

static void reply_internal(auth *a, sm_ctx *ctx)
{
    a->host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
}

static void reply_retry(auth *a, sm_ctx *ctx, const char *message, double retry_after)
{
    json_t *extra = json_pack("{s:I}", "retry_after", (json_int_t)retry_after);
    if (!extra) {
        reply_internal(a, ctx);
        return;
    }
    a->host->reply_error_extra(ctx, SM_ERR_RATE_LIMITED, message, extra);
    json_decref(extra);
}

/* The reply after a login: the room and unread count come from the
 * session attributes the rooms and messaging plugins set in their
 * LOGGED_IN subscribers, which have run by now (plugins never call each
 * other). */
static void reply_logged_in(auth *a, sm_ctx *ctx, const char *action, const char *username,
                            int64_t user_id, int with_unread)
{
    sm_session_id sid = a->host->ctx_session(ctx);
    const char *room = a->host->session_get_attr(sid, "rooms.current");
    json_t *p = json_pack("{s:s, s:I, s:o}", "username", username, "user_id",
                          (json_int_t)user_id, "assigned_room",
                          room ? json_string(room) : json_null());
    if (p && with_unread) {
        const char *text = a->host->session_get_attr(sid, "messaging.unread_count");
        long long unread = 0;
        if (text) {
            char *end = NULL;
            errno = 0;
            unread = strtoll(text, &end, 10);
            if (errno || end == text || *end || unread < 0)
                unread = 0;
        }
        if (json_object_set_new(p, "unread_count", json_integer((json_int_t)unread)) != 0) {
            json_decref(p);
            p = NULL;
        }
    }
    if (!p) {
        reply_internal(a, ctx);
        return;
    }
    a->host->reply(ctx, action, p);
    json_decref(p);
}

/* PROTOCOL.md section 7: register or login on a logged-in session first
 * ends that login, so even a failed attempt has ended it. */
static void end_login(auth *a, sm_session_id sid)
{
    if (a->host->session_username(sid))
        a->host->session_logout(sid);
}

/* The rate-limit key of the session's peer (limits.h). */
static void address_key(auth *a, sm_session_id sid, char *out)
{
    const char *addr = a->host->session_address(sid);
    ratelimit_address_key(addr ? addr : "", out);
}

/* Ends the reservations: a failed login becomes a counted failure, any
 * other end (success, internal error, dropped job) leaves no trace. */
static void release(auth *a, auth_req *r, int failed, double now)
{
    if (r->held_hash)
        ratelimit_end(a->hash_addr, r->address, 0, now);
    if (r->held_addr)
        ratelimit_end(a->fail_addr, r->address, failed, now);
    if (r->held_user)
        ratelimit_end(a->fail_user, r->lower, failed, now);
    if (failed && (r->held_addr || r->held_user))
        shared_login_failed(a, r->address, r->lower);
    r->held_hash = r->held_addr = r->held_user = 0;
}

/* Takes what an attempt holds while its hash is queued or running: a slot
 * of its address's share of the hash queue and, for a login, an attempt in
 * flight in both failure counters, so that parallel guesses count before
 * their hashes are done. Returns 0, or -1 (no memory) with nothing held. */
static int reserve(auth *a, auth_req *r, int login, double now)
{
    r->held_hash = ratelimit_begin(a->hash_addr, r->address, now) == 0;
    if (login) {
        r->held_addr = ratelimit_begin(a->fail_addr, r->address, now) == 0;
        r->held_user = ratelimit_begin(a->fail_user, r->lower, now) == 0;
    }
    if (r->held_hash && (!login || (r->held_addr && r->held_user)))
        return 0;
    release(a, r, 0, now);
    return -1;
}

/* Compare-and-set: a concurrent login that upgraded the hash first wins. */
static void store_rehash(auth *a, const auth_req *r, const char *hash)
{
    int rc = users_update_hash(a->users, r->user_id, hash, r->stored_hash);
    if (rc == SM_OK)
        a->host->log(a->self, SM_LOG_INFO,
                     "password hash of user '%s' upgraded to m=%u,t=%u,p=%u", r->username,
                     a->cfg.argon2.m_kib, a->cfg.argon2.passes, a->cfg.argon2.lanes);
    else if (rc != SM_ENOTFOUND)
        a->host->log(a->self, SM_LOG_WARNING, "could not store the upgraded hash of user '%s'",
                     r->username);
}

/* ---- register ----------------------------------------------------------- */

static void register_hashed(void *arg, hash_status status, const char *hash)
{
    auth_req *r = arg;
    auth *a = r->a;
    const sm_host *h = a->host;
    release(a, r, 0, h->now());
    if (a->unloading)
        goto out;
    if (status != HASH_OK) {
        reply_internal(a, r->ctx);
        goto out;
    }
    int64_t id = 0;
    int rc = users_insert(a->users, r->username, r->lower, hash, r->public_key, &id);
    if (rc == SM_EEXIST) {
        /* The UNIQUE index decides a race between two registrations. */
        h->reply_error(r->ctx, SM_ERR_CONFLICT, "username already taken");
        goto out;
    }
    if (rc != SM_OK) {
        reply_internal(a, r->ctx);
        goto out;
    }
    h->log(a->self, SM_LOG_INFO, "user '%s' registered (id %lld) from %s", r->username,
           (long long)id, r->address);
    if (SM_HOST_HAS(h, audit))
        h->audit(a->self, r->session, "register", r->username);
    rc = h->session_login(r->session, r->username, id);
    if (rc != SM_OK && h->session_address(r->session)) {
        h->log(a->self, SM_LOG_ERROR, "user '%s' registered but the session login failed (%d)",
               r->username, rc);
        reply_internal(a, r->ctx);
        goto out;
    }
    reply_logged_in(a, r->ctx, "registration_success", r->username, id, 0);
out:
    req_free(r);
}

/* The start of every register and login: end the session's login first
 * (PROTOCOL.md 7: even a failed attempt has ended it), then refuse at no
 * cost when the client's address is over its limit in `table` or already
 * has its share of the hash queue (max_hashes_per_address: a burst from
 * one address cannot fill the queue and delay everyone else's logins).
 * Returns 1 when the attempt may go on, with the address key in
 * `address`. */
static int begin_attempt(auth *a, sm_ctx *ctx, ratelimit *table, const char *what,
                         const char *refusal, char address[RATELIMIT_KEY_MAX + 1])
{
    const sm_host *h = a->host;
    sm_session_id sid = h->ctx_session(ctx);
    end_login(a, sid);
    address_key(a, sid, address);
    double retry_after = 0;
    if (ratelimit_blocked(table, address, h->now(), &retry_after)) {
        h->log(a->self, SM_LOG_WARNING, "%s limit reached for %s", what, address);
        reply_retry(a, ctx, refusal, retry_after);
        return 0;
    }
    if (ratelimit_blocked(a->hash_addr, address, h->now(), &retry_after)) {
        h->log(a->self, SM_LOG_WARNING, "hash queue share reached for %s", address);
        reply_retry(a, ctx, "too many attempts in progress; try again later", retry_after);
        return 0;
    }
    return 1;
}

static void do_register(sm_ctx *ctx, const json_t *payload, void *data)
{
    auth *a = data;
    const sm_host *h = a->host;
    sm_session_id sid = h->ctx_session(ctx);
    char address[RATELIMIT_KEY_MAX + 1];
    if (!begin_attempt(a, ctx, a->reg_addr, "registration",
                       "too many registrations; try again later", address))
        return;
    double now = h->now();

    char msg[160];
    const char *username = NULL, *password = NULL, *key = NULL;
    size_t ulen = 0, plen = 0, klen = 0;
    if (get_required(payload, "username", &username, &ulen, msg, sizeof msg) != 0 ||
        get_required(payload, "password", &password, &plen, msg, sizeof msg) != 0) {
        h->reply_error(ctx, SM_ERR_MALFORMED, msg);
        return;
    }
    if (!users_valid_name(username, ulen)) {
        h->reply_error(ctx, SM_ERR_MALFORMED, "field 'username' must be 3 to 32 characters of "
                                              "A-Z, a-z, 0-9, '_', '.' and '-'");
        return;
    }
    if (plen < PASSWORD_MIN || plen > PASSWORD_MAX) {
        h->reply_error(ctx, SM_ERR_MALFORMED, "field 'password' must be 8 to 1024 bytes");
        return;
    }
    int has_key = get_string(payload, "public_key", &key, &klen, msg, sizeof msg);
    if (has_key < 0) {
        h->reply_error(ctx, SM_ERR_MALFORMED, msg);
        return;
    }
    if (has_key == 0) {
        if (klen > a->cfg.max_public_key_bytes) {
            snprintf(msg, sizeof msg, "field 'public_key' must be at most %zu bytes",
                     a->cfg.max_public_key_bytes);
            h->reply_error(ctx, SM_ERR_MALFORMED, msg);
            return;
        }
        if (pubkey_check(key, klen, msg, sizeof msg) != 0) {
            h->reply_error(ctx, SM_ERR_MALFORMED, msg);
            return;
        }
    }

    auth_req *r = req_new(a, ctx, sid);
    if (!r || (has_key == 0 && !(r->public_key = dup_text(key)))) {
        req_free(r);
        reply_internal(a, ctx);
        return;
    }
    memcpy(r->username, username, ulen + 1);
    sm_name_fold(username, r->lower, sizeof r->lower); /* valid: it fits */
    memcpy(r->address, address, sizeof address);

    /* Every well-formed attempt counts, taken names included: the limit
     * also slows down probing which names exist. */
    ratelimit_add(a->reg_addr, address, now);
    shared_registered(a, address);
    int found = users_find(a->users, r->lower, NULL);
    if (found != 0) {
        if (found > 0)
            h->reply_error(ctx, SM_ERR_CONFLICT, "username already taken");
        else
            reply_internal(a, ctx);
        req_free(r);
        return;
    }
    if (reserve(a, r, 0, now) != 0) {
        reply_internal(a, ctx);
        req_free(r);
        return;
    }
    h->defer(ctx);
    int rc = hashq_hash(a->hq, sid, password, plen, register_hashed, r);
    if (rc != SM_OK) {
        release(a, r, 0, now);
        if (rc == SM_EBUSY)
            reply_retry(a, ctx, "server busy; try again later", 1);
        else
            reply_internal(a, ctx);
        req_free(r);
    }
    /* SM_OK: r belongs to register_hashed now (it may have run already). */
}

/* ---- login -------------------------------------------------------------- */

/* result: "success" or "failed" (wrong or impossible credentials). */
static void count_login(const auth *a, const char *result)
{
    const char *const values[] = {result};
    if (a->logins)
        a->host->metric_add(a->logins, values, 1);
}

static int register_metrics(auth *a)
{
    static const char *const labels[] = {"result", NULL};
    const sm_host *h = a->host;
    if (!SM_HOST_HAS(h, metric_set))
        return SM_OK;
    int rc = h->metric_register(a->self, SM_METRIC_COUNTER, "safemessenger_auth_logins_total",
                                "Logins answered, by result (success, failed).", labels,
                                &a->logins);
    if (rc != SM_OK)
        return rc;
    /* Both series from the start, so a rate over them has a first sample. */
    const char *const success[] = {"success"}, *const failed[] = {"failed"};
    if ((rc = h->metric_add(a->logins, success, 0)) != SM_OK)
        return rc;
    return h->metric_add(a->logins, failed, 0);
}

/* The account may have been disabled or deleted (safemessenger-admin)
 * while its password was being checked. */
static int still_enabled(auth *a, const auth_req *r)
{
    user_row now = {0};
    int found = users_find(a->users, r->lower, &now);
    free(now.password_hash);
    return found == 1 && now.id == r->user_id && !now.disabled;
}

static void login_checked(void *arg, hash_status status, const char *rehash)
{
    auth_req *r = arg;
    auth *a = r->a;
    const sm_host *h = a->host;
    int failed = status == HASH_MISMATCH ||
                 (status == HASH_OK && (r->user_id <= 0 || r->disabled ||
                                        (!a->unloading && !still_enabled(a, r))));
    release(a, r, failed, h->now());
    if (a->unloading)
        goto out;
    if (failed) {
        h->log(a->self, SM_LOG_INFO, "failed login from %s", r->address);
        if (SM_HOST_HAS(h, audit))
            /* Only an existing user's name: a name that does not exist
             * may be a password typed into the wrong field. */
            h->audit(a->self, r->session, "login_failed", r->user_id > 0 ? r->username : NULL);
        count_login(a, "failed");
        h->reply_error(r->ctx, SM_ERR_INVALID_CREDENTIALS, BAD_CREDENTIALS);
        goto out;
    }
    if (status != HASH_OK) {
        reply_internal(a, r->ctx);
        goto out;
    }
    if (rehash)
        store_rehash(a, r, rehash);
    int rc = h->session_login(r->session, r->username, r->user_id);
    if (rc != SM_OK && h->session_address(r->session)) {
        h->log(a->self, SM_LOG_ERROR, "session login of user '%s' failed (%d)", r->username,
               rc);
        reply_internal(a, r->ctx);
        goto out;
    }
    count_login(a, "success");
    reply_logged_in(a, r->ctx, "login_success", r->username, r->user_id, 1);
out:
    req_free(r);
}

static void do_login(sm_ctx *ctx, const json_t *payload, void *data)
{
    auth *a = data;
    const sm_host *h = a->host;
    sm_session_id sid = h->ctx_session(ctx);
    char address[RATELIMIT_KEY_MAX + 1];
    if (!begin_attempt(a, ctx, a->fail_addr, "failed-login",
                       "too many failed logins; try again later", address))
        return;
    double now = h->now(), retry_after = 0;
    char msg[160];
    const char *username = NULL, *password = NULL;
    size_t ulen = 0, plen = 0;
    if (get_required(payload, "username", &username, &ulen, msg, sizeof msg) != 0 ||
        get_required(payload, "password", &password, &plen, msg, sizeof msg) != 0) {
        h->reply_error(ctx, SM_ERR_MALFORMED, msg);
        return;
    }
    /* No such name or password can exist: the same 1001 as a wrong one,
     * without hashing (the caller knows what it sent; nothing leaks). */
    if (!users_valid_name(username, ulen) || plen < PASSWORD_MIN || plen > PASSWORD_MAX) {
        ratelimit_add(a->fail_addr, address, now);
        shared_login_failed(a, address, NULL);
        /* Nor an invalid name. */
        if (SM_HOST_HAS(h, audit))
            h->audit(a->self, sid, "login_failed", NULL);
        count_login(a, "failed");
        h->reply_error(ctx, SM_ERR_INVALID_CREDENTIALS, BAD_CREDENTIALS);
        return;
    }
    char lower[USERNAME_MAX + 1];
    sm_name_fold(username, lower, sizeof lower); /* valid: it fits */
    /* A name counts whether or not it exists, so this reply tells nothing
     * about existence either. */
    if (ratelimit_blocked(a->fail_user, lower, now, &retry_after)) {
        h->log(a->self, SM_LOG_WARNING, "failed-login limit reached for a username (from %s)",
               address);
        reply_retry(a, ctx, "too many failed logins; try again later", retry_after);
        return;
    }

    auth_req *r = req_new(a, ctx, sid);
    if (!r) {
        reply_internal(a, ctx);
        return;
    }
    memcpy(r->lower, lower, sizeof lower);
    memcpy(r->address, address, sizeof address);
    user_row row = {0};
    int found = users_find(a->users, lower, &row);
    if (found < 0) {
        req_free(r);
        reply_internal(a, ctx);
        return;
    }
    if (found) {
        r->user_id = row.id;
        memcpy(r->username, row.username, sizeof r->username);
        r->stored_hash = row.password_hash;
        /* Still verified, at the same cost, and refused with the same
         * 1001: the reply must not tell that the name exists. */
        r->disabled = row.disabled;
    }
    /* Guesses sent in parallel count as failures while they hash, per
     * address and per username, or a burst could try far more than the
     * limits before the first failure is known. */
    if (reserve(a, r, 1, now) != 0) {
        req_free(r);
        reply_internal(a, ctx);
        return;
    }
    h->defer(ctx);
    /* Unknown user: verified against the dummy hash, at the same cost. */
    int rc = hashq_verify(a->hq, sid, password, plen, r->user_id > 0 ? r->stored_hash : NULL,
                          login_checked, r);
    if (rc != SM_OK) {
        release(a, r, 0, now);
        if (rc == SM_EBUSY)
            reply_retry(a, ctx, "server busy; try again later", 1);
        else
            reply_internal(a, ctx);
        req_free(r);
    }
}

/* ---- logout ------------------------------------------------------------- */

static void do_logout(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    auth *a = data;
    if (a->host->session_logout(a->host->ctx_session(ctx)) != SM_OK) {
        a->host->reply_error(ctx, SM_ERR_NOT_AUTHORIZED, "login required");
        return;
    }
    a->host->reply(ctx, "logout", NULL);
}

/* ---- life cycle --------------------------------------------------------- */

static void prune(sm_timer *timer, void *arg)
{
    (void)timer;
    auth *a = arg;
    double now = a->host->now();
    ratelimit_prune(a->fail_user, now);
    ratelimit_prune(a->fail_addr, now);
    ratelimit_prune(a->reg_addr, now);
    ratelimit_prune(a->hash_addr, now);
}

static void auth_free(auth *a)
{
    if (!a)
        return;
    a->unloading = 1;
    /* Every hash job and every register or login waiting for one must end
     * here: a job still on the pool would complete into freed memory. */
    size_t jobs_left = hashq_free(a->hq);
    a->host->log(a->self, jobs_left || a->requests ? SM_LOG_ERROR : SM_LOG_DEBUG,
                 "unloading: %zu hash jobs and %zu requests left", jobs_left, a->requests);
    if (a->prune_timer)
        a->host->timer_stop(a->prune_timer);
    users_close(a->users);
    ratelimit_free(a->fail_user);
    ratelimit_free(a->fail_addr);
    ratelimit_free(a->reg_addr);
    ratelimit_free(a->hash_addr);
    free(a);
}

/* Defined at the end of the file, after the handlers it names. */
static const sm_action actions[4];

/* SIGHUP: the argon2id parameters, the rate limits and the public key
 * bound change live; the sizes of the hash queue and of the rate-limit
 * tables were allocated at init and keep their values (a warning names
 * each one changed). */
static int reload(void *data, int apply)
{
    auth *a = data;
    auth_settings next;
    int rc = settings_read(a->host, a->self, !apply, &next);
    if (rc != SM_OK || !apply)
        return rc;
    auth_settings *c = &a->cfg;
    static const char *const fixed_names[] = {"max_concurrent_hashes", "max_queued_hashes",
                                              "max_tracked_keys"};
    size_t was[] = {c->max_concurrent_hashes, c->max_queued_hashes, c->max_tracked_keys};
    size_t now[] = {next.max_concurrent_hashes, next.max_queued_hashes, next.max_tracked_keys};
    for (size_t i = 0; i < sizeof was / sizeof was[0]; i++)
        if (was[i] != now[i])
            a->host->log(a->self, SM_LOG_WARNING,
                         "auth.%s: cannot change while running (%zu -> %zu); restart to apply",
                         fixed_names[i], was[i], now[i]);
    next.max_concurrent_hashes = c->max_concurrent_hashes;
    next.max_queued_hashes = c->max_queued_hashes;
    next.max_tracked_keys = c->max_tracked_keys;
    *c = next;
    hashq_set_params(a->hq, &c->argon2);
    ratelimit_set(a->fail_user, c->failed_logins_per_user, c->failed_login_window);
    ratelimit_set(a->fail_addr, c->failed_logins, c->failed_login_window);
    ratelimit_set(a->reg_addr, c->registrations_per_hour, 3600.0);
    ratelimit_set(a->hash_addr, c->max_hashes_per_address, 1.0);
    return SM_OK;
}

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    auth *a = calloc(1, sizeof *a);
    if (!a)
        return SM_ENOMEM;
    a->host = host;
    a->self = self;
    int rc = settings_read(host, self, 1, &a->cfg);
    if (rc != SM_OK)
        goto fail;
    const auth_settings *c = &a->cfg;
    if (hashq_new(host, self, &c->argon2, c->max_concurrent_hashes, c->max_queued_hashes,
                  &a->hq) != SM_OK ||
        ratelimit_new(c->failed_logins_per_user, c->failed_login_window, c->max_tracked_keys,
                      &a->fail_user) != 0 ||
        ratelimit_new(c->failed_logins, c->failed_login_window, c->max_tracked_keys,
                      &a->fail_addr) != 0 ||
        ratelimit_new(c->registrations_per_hour, 3600.0, c->max_tracked_keys,
                      &a->reg_addr) != 0 ||
        /* Nothing is ever counted in it (reservations only): the window
         * does not matter. */
        ratelimit_new(c->max_hashes_per_address, 1.0, c->max_tracked_keys,
                      &a->hash_addr) != 0) {
        rc = SM_ENOMEM;
        goto fail;
    }
    if ((rc = host->register_actions(self, actions)) != SM_OK ||
        (rc = host->register_migrations(self, users_migrations)) != SM_OK ||
        (SM_HOST_HAS(host, user_deleted) &&
         (rc = host->register_admin_commands(self, auth_admin_commands)) != SM_OK) ||
        (rc = register_metrics(a)) != SM_OK)
        goto fail;
    /* An older server has no users service: nobody can ask then. */
    if (SM_HOST_HAS(host, register_users_provider) &&
        (rc = host->register_users_provider(self, &auth_users_provider)) != SM_OK)
        goto fail;
    /* An older server has no reload: the settings then stay as read. */
    if (SM_HOST_HAS(host, register_reload) && (rc = host->register_reload(self, reload)) != SM_OK)
        goto fail;
    if (SM_HOST_HAS(host, broadcast) &&
        (rc = host->register_broadcast(self, shared_on_broadcast)) != SM_OK)
        goto fail;
    *data = a;
    return SM_OK;
fail:
    auth_free(a);
    return rc;
}

static int start(void *data)
{
    auth *a = data;
    const sm_host *h = a->host;
    if (users_open(h, a->self, &a->users) != SM_OK)
        return SM_ERROR;
    a->prune_timer = h->timer_start(a->self, PRUNE_INTERVAL, PRUNE_INTERVAL, prune, a);
    if (!a->prune_timer)
        return SM_ERROR;
    if (hashq_start(a->hq) != SM_OK)
        return SM_ERROR;
    h->log(a->self, SM_LOG_INFO, "argon2id m=%u KiB, t=%u, p=%u; max_concurrent_hashes = %zu",
           a->cfg.argon2.m_kib, a->cfg.argon2.passes, a->cfg.argon2.lanes,
           a->cfg.max_concurrent_hashes);
    return SM_OK;
}

static void fini(void *data) { auth_free(data); }

/* No schema: every check is in the handlers, so that a malformed register
 * or login still ends the session's old login (PROTOCOL.md section 7) and
 * an ill-formed login gets 1001, not 1004. */
static const sm_action actions[4] = {
    {"register", do_register, 0, NULL},
    {"login", do_login, 0, NULL},
    {"logout", do_logout, SM_ACTION_NEEDS_LOGIN, NULL},
    {NULL, NULL, 0, NULL},
};

SM_PLUGIN_DECLARE(.name = "auth", .version = "1.0",
                  .description = "register, login and logout with argon2id passwords",
                  .init = init, .fini = fini, .start = start);
