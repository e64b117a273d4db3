#include "host_api.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "cluster.h"
#include "core.h"
#include "dispatch.h"
#include "host_metrics.h"
#include "log.h"
#include "plugin_loader.h"
#include "presence.h"
#include "session.h"
#include "session_io.h"
#include "topic.h"

/* ---- the logic thread ---- */

/* Host services act on state only the logic thread may touch (sessions,
 * topics, timers, the one database connection, the configuration), so a
 * call from any other thread, a worker's `work` for instance, is refused
 * before it touches anything: SM_ESTATE, 0 or NULL, and nothing done
 * (PLUGINS.md 11). Only now, metric_add and metric_set, which touch
 * nothing else, work everywhere. The refusal is logged the first time and
 * then every LOGIC_REFUSAL_LOG_EVERY-th time, so a worker calling in a
 * loop cannot flood the log; host_api_off_thread_calls() counts them all. */
#define LOGIC_REFUSAL_LOG_EVERY 1024

static atomic_ulong off_thread_calls;

static int host_off_logic_thread(const char *what)
{
    if (!g_core.logic_thread_set || pthread_equal(pthread_self(), g_core.logic_thread))
        return 0;
    unsigned long n = atomic_fetch_add(&off_thread_calls, 1);
    if (n % LOGIC_REFUSAL_LOG_EVERY == 0)
        log_msg(SM_LOG_ERROR, "core",
                "host service %s called off the logic thread (a worker's work?): refused "
                "(%lu such calls)", what, n + 1);
    return 1;
}

unsigned long host_api_off_thread_calls(void) { return atomic_load(&off_thread_calls); }

/* The entries the table would otherwise point straight at, behind the
 * same check. */
static size_t h_topic_members(const char *topic, sm_session_id *out, size_t max)
{
    if (host_off_logic_thread("topic_members"))
        return 0;
    return topic_members(topic, out, max);
}

static int h_db_bind_int64(sm_stmt *stmt, int index, int64_t value)
{
    if (host_off_logic_thread("db_bind_int64"))
        return SM_ESTATE;
    return storage_bind_int64(stmt, index, value);
}

static int h_db_bind_double(sm_stmt *stmt, int index, double value)
{
    if (host_off_logic_thread("db_bind_double"))
        return SM_ESTATE;
    return storage_bind_double(stmt, index, value);
}

static int h_db_bind_text(sm_stmt *stmt, int index, const char *value, long len)
{
    if (host_off_logic_thread("db_bind_text"))
        return SM_ESTATE;
    return storage_bind_text(stmt, index, value, len);
}

static int h_db_bind_null(sm_stmt *stmt, int index)
{
    if (host_off_logic_thread("db_bind_null"))
        return SM_ESTATE;
    return storage_bind_null(stmt, index);
}

static int h_db_step(sm_stmt *stmt)
{
    if (host_off_logic_thread("db_step"))
        return SM_ESTATE;
    return storage_step(stmt);
}

static int64_t h_db_column_int64(sm_stmt *stmt, int col)
{
    if (host_off_logic_thread("db_column_int64"))
        return 0;
    return storage_column_int64(stmt, col);
}

static double h_db_column_double(sm_stmt *stmt, int col)
{
    if (host_off_logic_thread("db_column_double"))
        return 0;
    return storage_column_double(stmt, col);
}

static const char *h_db_column_text(sm_stmt *stmt, int col)
{
    if (host_off_logic_thread("db_column_text"))
        return NULL;
    return storage_column_text(stmt, col);
}

static int h_db_column_is_null(sm_stmt *stmt, int col)
{
    if (host_off_logic_thread("db_column_is_null"))
        return 1; /* reads as NULL */
    return storage_column_is_null(stmt, col);
}

static int h_db_reset(sm_stmt *stmt)
{
    if (host_off_logic_thread("db_reset"))
        return SM_ESTATE;
    return storage_reset(stmt);
}

static void h_db_finalize(sm_stmt *stmt)
{
    if (host_off_logic_thread("db_finalize"))
        return;
    storage_finalize(stmt);
}

static int h_admin_reply(sm_admin_ctx *ctx, const json_t *result)
{
    if (host_off_logic_thread("admin_reply"))
        return SM_ESTATE;
    return admin_reply(ctx, result);
}

static int h_admin_error(sm_admin_ctx *ctx, int status, const char *message)
{
    if (host_off_logic_thread("admin_error"))
        return SM_ESTATE;
    return admin_error(ctx, status, message);
}

static int h_admin_defer(sm_admin_ctx *ctx)
{
    if (host_off_logic_thread("admin_defer"))
        return SM_ESTATE;
    return admin_defer(ctx);
}

static int h_metric_register(sm_plugin *self, sm_metric_type type, const char *name,
                             const char *help, const char *const *labels, sm_metric **out)
{
    if (host_off_logic_thread("metric_register"))
        return SM_ESTATE;
    return host_metric_register(self, type, name, help, labels, out);
}

static int in_init(const plugin *self, const char *what)
{
    if (self && g_core.initialising == self)
        return 1;
    log_msg(SM_LOG_ERROR, self ? self->name : "?", "%s is allowed only during init", what);
    return 0;
}

/* ---- registration ---- */

static int refused(int rc)
{
    if (rc != SM_OK)
        g_core.init_errors++;
    return rc;
}

static int h_register_actions(sm_plugin *self, const sm_action *actions)
{
    if (host_off_logic_thread("register_actions"))
        return SM_ESTATE;
    if (!in_init(self, "register_actions"))
        return SM_ESTATE;
    if (!actions)
        return refused(SM_EINVAL);
    return refused(dispatch_register(self, actions));
}

static int add_subscriber(sm_plugin *self, sm_core_event event, sm_event_fn fn,
                          sm_event_ex_fn fn_ex, const char *what)
{
    if (!in_init(self, what))
        return SM_ESTATE;
    if ((!fn && !fn_ex) || event < 0 || event >= SM_EVENT_COUNT)
        return refused(SM_EINVAL);
    size_t n = g_core.n_subscribers[event];
    core_subscriber *subs = realloc(g_core.subscribers[event], (n + 1) * sizeof *subs);
    if (!subs)
        return refused(SM_ENOMEM);
    subs[n].plugin = self;
    subs[n].fn = fn;
    subs[n].fn_ex = fn_ex;
    g_core.subscribers[event] = subs;
    g_core.n_subscribers[event] = n + 1;
    return SM_OK;
}

static int h_subscribe(sm_plugin *self, sm_core_event event, sm_event_fn fn)
{
    if (host_off_logic_thread("subscribe"))
        return SM_ESTATE;
    return add_subscriber(self, event, fn, NULL, "subscribe");
}

static int h_subscribe_ex(sm_plugin *self, sm_core_event event, sm_event_ex_fn fn)
{
    if (host_off_logic_thread("subscribe_ex"))
        return SM_ESTATE;
    return add_subscriber(self, event, NULL, fn, "subscribe_ex");
}

/* Old-style callbacks have no room or topic argument: for ROOM_DELETED
 * they always got the room as `username` (plugin.h), and keep getting it. */
static void fire(sm_core_event event, sm_session_id id, const char *username, const char *room,
                 const char *topic)
{
    const sm_event_info info = {
        .size = sizeof info,
        .event = event,
        .session = id,
        .username = username,
        .room = room,
        .topic = topic,
    };
    const char *old_name = room ? room : username;
    size_t n = g_core.n_subscribers[event];
    core_subscriber *subs = g_core.subscribers[event];
    for (size_t i = 0; i < n; i++) {
        if (subs[i].fn_ex)
            subs[i].fn_ex(&info, subs[i].plugin->data);
        else
            subs[i].fn(event, id, old_name, subs[i].plugin->data);
    }
}

void core_fire_event(sm_core_event event, sm_session_id id, const char *username,
                     const char *room)
{
    fire(event, id, username, room, NULL);
}

void core_fire_topic_event(sm_core_event event, sm_session_id id, const char *username,
                           const char *topic)
{
    fire(event, id, username, NULL, topic);
}

static int h_register_migrations(sm_plugin *self, const sm_migration *migrations)
{
    if (host_off_logic_thread("register_migrations"))
        return SM_ESTATE;
    if (!in_init(self, "register_migrations"))
        return SM_ESTATE;
    if (!migrations)
        return refused(SM_EINVAL);
    self->migrations = migrations;
    return SM_OK;
}

static int h_register_reload(sm_plugin *self, sm_reload_fn fn)
{
    if (host_off_logic_thread("register_reload"))
        return SM_ESTATE;
    if (!in_init(self, "register_reload"))
        return SM_ESTATE;
    if (!fn)
        return refused(SM_EINVAL);
    self->reload = fn;
    return SM_OK;
}

static int h_register_policy(sm_plugin *self, sm_policy_fn fn)
{
    if (host_off_logic_thread("register_policy"))
        return SM_ESTATE;
    if (!in_init(self, "register_policy"))
        return SM_ESTATE;
    if (!fn)
        return refused(SM_EINVAL);
    struct core_policy *list =
        realloc(g_core.policies, (g_core.n_policies + 1) * sizeof *list);
    if (!list)
        return refused(SM_ENOMEM);
    list[g_core.n_policies].plugin = self;
    list[g_core.n_policies].fn = fn;
    g_core.policies = list;
    g_core.n_policies++;
    return SM_OK;
}

static int h_policy_check(sm_interaction what, const char *from_user, const char *to_user)
{
    if (host_off_logic_thread("policy_check"))
        return SM_ESTATE;
    if (!from_user || !to_user)
        return SM_VERDICT_DENY;
    for (size_t i = 0; i < g_core.n_policies; i++) {
        int v = g_core.policies[i].fn(what, from_user, to_user, g_core.policies[i].plugin->data);
        /* An unknown verdict from a newer plugin counts as a denial. */
        if (v != SM_VERDICT_ALLOW)
            return v == SM_VERDICT_DROP ? SM_VERDICT_DROP : SM_VERDICT_DENY;
    }
    return SM_VERDICT_ALLOW;
}

/* ---- admin commands ---- */

static int h_register_admin_commands(sm_plugin *self, const sm_admin_command *commands)
{
    if (host_off_logic_thread("register_admin_commands"))
        return SM_ESTATE;
    if (!in_init(self, "register_admin_commands"))
        return SM_ESTATE;
    if (!commands)
        return refused(SM_EINVAL);
    return refused(admin_register(self, commands));
}

/* Session 0: the account or room is gone, no session is involved. */
static int h_user_deleted(sm_plugin *self, const char *username)
{
    if (host_off_logic_thread("user_deleted"))
        return SM_ESTATE;
    (void)self;
    if (!username || !*username)
        return SM_EINVAL;
    core_fire_event(SM_EVENT_USER_DELETED, 0, username, NULL);
    return SM_OK;
}

static int h_room_deleted(sm_plugin *self, const char *room)
{
    if (host_off_logic_thread("room_deleted"))
        return SM_ESTATE;
    (void)self;
    if (!room || !*room)
        return SM_EINVAL;
    core_fire_event(SM_EVENT_ROOM_DELETED, 0, NULL, room);
    return SM_OK;
}

/* ---- users service ---- */

static int h_register_users_provider(sm_plugin *self, const sm_users_provider *provider)
{
    if (host_off_logic_thread("register_users_provider"))
        return SM_ESTATE;
    if (!in_init(self, "register_users_provider"))
        return SM_ESTATE;
    /* A provider built against a header whose struct ended before by_id
     * cannot exist: both came together. */
    if (!provider || provider->size < offsetof(sm_users_provider, by_id) + sizeof provider->by_id ||
        !provider->by_name || !provider->by_id)
        return refused(SM_EINVAL);
    if (g_core.users_plugin) {
        log_msg(SM_LOG_ERROR, self->name, "the users provider is already %s",
                g_core.users_plugin->name);
        return refused(SM_EEXIST);
    }
    g_core.users_plugin = self;
    g_core.users_provider = provider;
    return SM_OK;
}

/* Keeps copies of the provider's strings (its own may live in a statement
 * that its next query resets) and fills what fits of the caller's struct,
 * whose size says which header it was built against. */
static int user_answer(const sm_user_info *got, sm_user_info *out)
{
    char *name = core_strdup(got->name);
    char *key = core_strdup(got->public_key);
    if (!name || (got->public_key && !key)) {
        free(name);
        free(key);
        return SM_ENOMEM;
    }
    free(g_core.user_name);
    free(g_core.user_key);
    g_core.user_name = name;
    g_core.user_key = key;
    if (out->size >= offsetof(sm_user_info, id) + sizeof out->id)
        out->id = got->id;
    if (out->size >= offsetof(sm_user_info, name) + sizeof out->name)
        out->name = name;
    if (out->size >= offsetof(sm_user_info, public_key) + sizeof out->public_key)
        out->public_key = key;
    return SM_OK;
}

static int user_lookup(const char *name, int64_t id, sm_user_info *out)
{
    if (!g_core.users_provider)
        return SM_ESTATE;
    sm_user_info got = {.size = sizeof got};
    const sm_users_provider *p = g_core.users_provider;
    void *data = g_core.users_plugin->data;
    int rc = name ? p->by_name(data, name, &got) : p->by_id(data, id, &got);
    if (rc != SM_OK)
        return rc;
    if (!got.name || !*got.name) {
        log_msg(SM_LOG_ERROR, g_core.users_plugin->name, "users provider returned no name");
        return SM_ERROR;
    }
    return out ? user_answer(&got, out) : SM_OK;
}

const char *core_user_name(const char *name)
{
    sm_user_info info = {.size = sizeof info};
    if (!name || user_lookup(name, 0, &info) != SM_OK)
        return NULL;
    return info.name;
}

/* SM_ESTATE before SM_EINVAL: user_lookup(NULL, NULL) is how a plugin's
 * start asks whether a provider is loaded (plugin.h). */
static int h_user_lookup(const char *name, sm_user_info *out)
{
    if (host_off_logic_thread("user_lookup"))
        return SM_ESTATE;
    if (!g_core.users_provider)
        return SM_ESTATE;
    if (!name || !*name)
        return SM_EINVAL;
    return user_lookup(name, 0, out);
}

static int h_user_lookup_id(int64_t id, sm_user_info *out)
{
    if (host_off_logic_thread("user_lookup_id"))
        return SM_ESTATE;
    return user_lookup(NULL, id, out);
}

/* ---- presence across nodes ---- */

#define USERS_ONLINE_MAX 4096

static int h_users_online(sm_plugin *self, const char *const *names, size_t n,
                          sm_users_online_fn done, void *arg)
{
    if (host_off_logic_thread("users_online"))
        return SM_ESTATE;
    if (!done || (!names && n) || n > USERS_ONLINE_MAX)
        return SM_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!sm_name_valid(names[i], 1, SESSION_USERNAME_MAX))
            return SM_EINVAL;
    return presence_users_online(self, names, n, done, arg);
}

static int h_topic_users(sm_plugin *self, const char *topic, sm_topic_users_fn done, void *arg)
{
    if (host_off_logic_thread("topic_users"))
        return SM_ESTATE;
    if (!done || !topic_name_ok(topic))
        return SM_EINVAL;
    return presence_topic_users(self, topic, done, arg);
}

static int h_register_broadcast(sm_plugin *self, sm_broadcast_fn fn)
{
    if (host_off_logic_thread("register_broadcast"))
        return SM_ESTATE;
    if (!in_init(self, "register_broadcast"))
        return SM_ESTATE;
    if (!fn || self->broadcast)
        return refused(SM_EINVAL);
    self->broadcast = fn;
    /* A plugin loaded by a reload joins a running cluster now; the others
     * when it starts. */
    return refused(cluster_broadcast_on(self->name));
}

static int h_broadcast(sm_plugin *self, const json_t *payload)
{
    if (host_off_logic_thread("broadcast"))
        return SM_ESTATE;
    if (!self || !json_is_object(payload))
        return SM_EINVAL;
    char *text = session_payload_text(payload);
    if (!text)
        return SM_ENOMEM;
    int rc = cluster_broadcast(self->name, text, strlen(text));
    free(text);
    return rc;
}

/* ---- replies ---- */

static int h_reply(sm_ctx *ctx, const char *action, const json_t *payload)
{
    if (host_off_logic_thread("reply"))
        return SM_ESTATE;
    return dispatch_reply(ctx, action, payload);
}

static int h_reply_error(sm_ctx *ctx, int code, const char *message)
{
    if (host_off_logic_thread("reply_error"))
        return SM_ESTATE;
    return dispatch_reply_error(ctx, code, message, NULL);
}

static int h_reply_error_extra(sm_ctx *ctx, int code, const char *message, const json_t *extra)
{
    if (host_off_logic_thread("reply_error_extra"))
        return SM_ESTATE;
    return dispatch_reply_error(ctx, code, message, extra);
}

static int h_defer(sm_ctx *ctx)
{
    if (host_off_logic_thread("defer"))
        return SM_ESTATE;
    return dispatch_defer(ctx);
}

static sm_session_id h_ctx_session(const sm_ctx *ctx)
{
    if (host_off_logic_thread("ctx_session"))
        return 0;
    return ctx ? ctx->session : 0;
}

static const char *h_ctx_action(const sm_ctx *ctx)
{
    if (host_off_logic_thread("ctx_action"))
        return NULL;
    return ctx ? ctx->entry->action->name : NULL;
}

/* ---- sessions ---- */

static int h_session_login(sm_session_id id, const char *username, int64_t user_id)
{
    if (host_off_logic_thread("session_login"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? session_login(s, username, user_id) : SM_ENOTFOUND;
}

static void h_audit(sm_plugin *self, sm_session_id id, const char *event, const char *username)
{
    if (host_off_logic_thread("audit"))
        return;
    if (!event)
        return;
    const char *by = self ? self->name : "plugin";
    /* Session 0: an event no client caused (an admin command). */
    if (id == 0) {
        audit_line(event, username, NULL, 0, by);
        return;
    }
    session *s = session_find(id);
    if (s)
        session_audit(s, event, username, by);
}

static int h_session_logout(sm_session_id id)
{
    if (host_off_logic_thread("session_logout"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? session_logout(s) : SM_ENOTFOUND;
}

static const char *h_session_username(sm_session_id id)
{
    if (host_off_logic_thread("session_username"))
        return NULL;
    session *s = session_find(id);
    return s ? s->username : NULL;
}

static int64_t h_session_user_id(sm_session_id id)
{
    if (host_off_logic_thread("session_user_id"))
        return 0;
    session *s = session_find(id);
    return s && s->username ? s->user_id : 0;
}

static const char *h_session_address(sm_session_id id)
{
    if (host_off_logic_thread("session_address"))
        return NULL;
    session *s = session_find(id);
    return s ? s->address : NULL;
}

static int h_session_set_attr(sm_session_id id, const char *key, const char *value)
{
    if (host_off_logic_thread("session_set_attr"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? session_set_attr(s, key, value) : SM_ENOTFOUND;
}

static const char *h_session_get_attr(sm_session_id id, const char *key)
{
    if (host_off_logic_thread("session_get_attr"))
        return NULL;
    session *s = session_find(id);
    return s && key ? session_get_attr(s, key) : NULL;
}

static int h_session_close(sm_session_id id, int close_code, const char *reason)
{
    if (host_off_logic_thread("session_close"))
        return SM_ESTATE;
    session *s = session_find(id);
    if (!s)
        return SM_ENOTFOUND;
    if (close_code < 1000 || close_code > 4999)
        return SM_EINVAL;
    session_io_close(s, close_code, reason ? reason : "");
    return SM_OK;
}

static size_t h_user_sessions(const char *username, sm_session_id *out, size_t max)
{
    if (host_off_logic_thread("user_sessions"))
        return 0;
    user_sessions *u = session_user(username);
    if (!u)
        return 0;
    for (size_t i = 0; i < u->n && i < max && out; i++)
        out[i] = u->ids[i];
    return u->n;
}

/* ---- events ---- */

static int h_send_event(sm_session_id id, const char *action, const json_t *payload)
{
    if (host_off_logic_thread("send_event"))
        return SM_ESTATE;
    session *s = session_find(id);
    if (!s)
        return SM_ENOTFOUND;
    if (!action || !*action || (payload && !json_is_object(payload)))
        return SM_EINVAL;
    return session_send_event_json(s, action, payload);
}

static int h_send_event_user(const char *username, const char *action, const json_t *payload)
{
    if (host_off_logic_thread("send_event_user"))
        return SM_ESTATE;
    if (!action || !*action || (payload && !json_is_object(payload)))
        return SM_EINVAL;
    char *text = session_payload_text(payload);
    if (!text)
        return SM_ENOMEM;
    size_t len = strlen(text);
    int rc = session_send_user(username, action, text, len);
    if (rc == SM_OK)
        rc = cluster_publish_user(username, action, text, len);
    free(text);
    return rc;
}

/* ---- topics ---- */

static int h_topic_join(const char *topic, sm_session_id id)
{
    if (host_off_logic_thread("topic_join"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? topic_join(topic, s) : SM_ENOTFOUND;
}

static int h_topic_leave(const char *topic, sm_session_id id)
{
    if (host_off_logic_thread("topic_leave"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? topic_leave(topic, s) : SM_ENOTFOUND;
}

static int h_topic_is_member(const char *topic, sm_session_id id)
{
    if (host_off_logic_thread("topic_is_member"))
        return SM_ESTATE;
    session *s = session_find(id);
    return s ? topic_is_member(topic, s) : 0;
}

static int h_topic_publish(const char *topic, const char *action, const json_t *payload,
                           sm_session_id except)
{
    if (host_off_logic_thread("topic_publish"))
        return SM_ESTATE;
    if (!action || !*action || (payload && !json_is_object(payload)))
        return SM_EINVAL;
    return topic_publish(topic, action, payload, except);
}

static int h_topic_publish_except_user(const char *topic, const char *action,
                                       const json_t *payload, const char *except_user)
{
    if (host_off_logic_thread("topic_publish_except_user"))
        return SM_ESTATE;
    if (!action || !*action || (payload && !json_is_object(payload)))
        return SM_EINVAL;
    return topic_publish_except_user(topic, action, payload, except_user);
}

static int h_topic_fanout_take(const char *topic, size_t payload_bytes, double *retry_after)
{
    if (host_off_logic_thread("topic_fanout_take"))
        return SM_ESTATE;
    if (!topic)
        return SM_EINVAL;
    return topic_fanout_take(topic, payload_bytes, retry_after);
}

/* ---- time, timers, workers ---- */

static sm_timer *h_timer_start(sm_plugin *self, double after, double repeat, sm_timer_fn fn,
                               void *arg)
{
    if (host_off_logic_thread("timer_start"))
        return NULL;
    if (!fn || after < 0 || repeat < 0)
        return NULL;
    sm_timer *t = timers_start(g_core.timers, core_mono_now(), after, repeat, fn, arg, self);
    if (t && g_core.timers_changed)
        g_core.timers_changed();
    return t;
}

static void h_timer_stop(sm_timer *timer)
{
    if (host_off_logic_thread("timer_stop"))
        return;
    if (timer)
        timers_stop(g_core.timers, timer);
}

static int h_work_submit(sm_plugin *self, sm_work_fn work, sm_work_done_fn done, void *arg)
{
    if (host_off_logic_thread("work_submit"))
        return SM_ESTATE;
    if (!work || !g_core.pool)
        return SM_EINVAL;
    /* The plugin is the owner: the pool serves each plugin's queue and the
     * handshake's in turn. */
    return workers_submit(g_core.pool, self, work, done, arg) == 0 ? SM_OK : SM_ERROR;
}

/* ---- configuration ---- */

static int h_config_int(sm_plugin *self, const char *key, int64_t min, int64_t max, int64_t *out)
{
    if (host_off_logic_thread("config_int"))
        return SM_ESTATE;
    return config_section_int(g_core.cfg, self->name, key, min, max, out);
}

static int h_config_double(sm_plugin *self, const char *key, double min, double max, double *out)
{
    if (host_off_logic_thread("config_double"))
        return SM_ESTATE;
    return config_section_double(g_core.cfg, self->name, key, min, max, out);
}

static int h_config_bool(sm_plugin *self, const char *key, int *out)
{
    if (host_off_logic_thread("config_bool"))
        return SM_ESTATE;
    return config_section_bool(g_core.cfg, self->name, key, out);
}

static int h_config_string(sm_plugin *self, const char *key, const char **out)
{
    if (host_off_logic_thread("config_string"))
        return SM_ESTATE;
    return config_section_string(g_core.cfg, self->name, key, out);
}

static int h_config_string_list(sm_plugin *self, const char *key, const char **out, size_t max)
{
    if (host_off_logic_thread("config_string_list"))
        return SM_ESTATE;
    return config_section_string_list(g_core.cfg, self->name, key, out, max);
}

/* ---- logging ---- */

static void h_log(sm_plugin *self, sm_log_level level, const char *fmt, ...) SM_PRINTF(3, 4);
static void h_log(sm_plugin *self, sm_log_level level, const char *fmt, ...)
{
    if (host_off_logic_thread("log"))
        return;
    if (level < SM_LOG_ERROR || level > SM_LOG_DEBUG || !fmt)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, self ? self->name : "plugin", fmt, ap);
    va_end(ap);
}

/* ---- storage ---- */

static int h_db_prepare(sm_plugin *self, const char *sql, sm_stmt **out)
{
    if (host_off_logic_thread("db_prepare"))
        return SM_ESTATE;
    return storage_prepare(g_core.db, self->name, sql, out);
}

static int h_db_begin(sm_plugin *self)
{
    if (host_off_logic_thread("db_begin"))
        return SM_ESTATE;
    (void)self;
    return storage_begin(g_core.db);
}

static int h_db_commit(sm_plugin *self)
{
    if (host_off_logic_thread("db_commit"))
        return SM_ESTATE;
    (void)self;
    return storage_commit(g_core.db);
}

static int h_db_rollback(sm_plugin *self)
{
    if (host_off_logic_thread("db_rollback"))
        return SM_ESTATE;
    (void)self;
    return storage_rollback(g_core.db);
}

static int64_t h_db_last_insert_id(sm_plugin *self)
{
    if (host_off_logic_thread("db_last_insert_id"))
        return 0;
    (void)self;
    return storage_last_insert_id(g_core.db);
}

static int64_t h_db_changes(sm_plugin *self)
{
    if (host_off_logic_thread("db_changes"))
        return 0;
    (void)self;
    return storage_changes(g_core.db);
}

static const sm_host host_table = {
    .size = sizeof(sm_host),
    .abi_version = SM_PLUGIN_ABI_VERSION,
    .register_actions = h_register_actions,
    .subscribe = h_subscribe,
    .register_migrations = h_register_migrations,
    .reply = h_reply,
    .reply_error = h_reply_error,
    .reply_error_extra = h_reply_error_extra,
    .defer = h_defer,
    .ctx_session = h_ctx_session,
    .ctx_action = h_ctx_action,
    .session_login = h_session_login,
    .session_logout = h_session_logout,
    .session_username = h_session_username,
    .session_user_id = h_session_user_id,
    .session_address = h_session_address,
    .session_set_attr = h_session_set_attr,
    .session_get_attr = h_session_get_attr,
    .session_close = h_session_close,
    .user_sessions = h_user_sessions,
    .send_event = h_send_event,
    .send_event_user = h_send_event_user,
    .topic_join = h_topic_join,
    .topic_leave = h_topic_leave,
    .topic_is_member = h_topic_is_member,
    .topic_members = h_topic_members,
    .topic_publish = h_topic_publish,
    .now = core_wall_now,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .work_submit = h_work_submit,
    .config_int = h_config_int,
    .config_double = h_config_double,
    .config_bool = h_config_bool,
    .config_string = h_config_string,
    .config_string_list = h_config_string_list,
    .log = h_log,
    .db_prepare = h_db_prepare,
    .db_bind_int64 = h_db_bind_int64,
    .db_bind_double = h_db_bind_double,
    .db_bind_text = h_db_bind_text,
    .db_bind_null = h_db_bind_null,
    .db_step = h_db_step,
    .db_column_int64 = h_db_column_int64,
    .db_column_double = h_db_column_double,
    .db_column_text = h_db_column_text,
    .db_column_is_null = h_db_column_is_null,
    .db_reset = h_db_reset,
    .db_finalize = h_db_finalize,
    .db_begin = h_db_begin,
    .db_commit = h_db_commit,
    .db_rollback = h_db_rollback,
    .db_last_insert_id = h_db_last_insert_id,
    .db_changes = h_db_changes,
    .register_policy = h_register_policy,
    .policy_check = h_policy_check,
    .topic_fanout_take = h_topic_fanout_take,
    .audit = h_audit,
    .register_admin_commands = h_register_admin_commands,
    .admin_reply = h_admin_reply,
    .admin_error = h_admin_error,
    .admin_defer = h_admin_defer,
    .user_deleted = h_user_deleted,
    .register_reload = h_register_reload,
    .metric_register = h_metric_register,
    .metric_add = host_metric_add,
    .metric_set = host_metric_set,
    .room_deleted = h_room_deleted,
    .topic_publish_except_user = h_topic_publish_except_user,
    .subscribe_ex = h_subscribe_ex,
    .register_users_provider = h_register_users_provider,
    .user_lookup = h_user_lookup,
    .user_lookup_id = h_user_lookup_id,
    .users_online = h_users_online,
    .topic_users = h_topic_users,
    .register_broadcast = h_register_broadcast,
    .broadcast = h_broadcast,
};

const sm_host *host_api_table(void) { return &host_table; }
