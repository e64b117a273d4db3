#include "dispatch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "core.h"
#include "log.h"
#include "plugin_loader.h"
#include "schema.h"
#include "server_metrics.h"
#include "session.h"
#include "session_io.h"

int dispatch_register(plugin *p, const sm_action *actions)
{
    /* Check the whole table first, so a refused table registers nothing. */
    for (const sm_action *a = actions; a->name; a++) {
        for (const sm_action *b = actions; b != a; b++) {
            if (strcmp(a->name, b->name) == 0) {
                log_msg(SM_LOG_ERROR, "core", "plugin '%s' (%s) lists action '%s' twice",
                        p->name, p->path, a->name);
                return SM_EEXIST;
            }
        }
    }
    for (const sm_action *a = actions; a->name; a++) {
        if (!a->handler || !*a->name) {
            log_msg(SM_LOG_ERROR, p->name, "action table row '%s' has no handler or name",
                    a->name);
            return SM_EINVAL;
        }
        dispatch_entry *old = hashmap_get(g_core.actions, a->name, strlen(a->name));
        if (old || strcmp(a->name, "key_exchange") == 0) {
            log_msg(SM_LOG_ERROR, "core",
                    "action '%s' of plugin '%s' (%s) is already registered by %s", a->name,
                    p->name, p->path, old ? old->owner->name : "the core");
            return SM_EEXIST;
        }
    }
    for (const sm_action *a = actions; a->name; a++) {
        dispatch_entry *e = malloc(sizeof *e);
        if (!e || hashmap_put(g_core.actions, a->name, strlen(a->name), e) != 0) {
            free(e);
            dispatch_remove_owner(p);
            return SM_ENOMEM;
        }
        e->action = a;
        e->owner = p;
    }
    return SM_OK;
}

void dispatch_remove_owner(plugin *p)
{
    hashmap_iter it;
    const void *key;
    size_t key_len;
    void *value;
    hashmap_iter_init(g_core.actions, &it);
    while (hashmap_iter_next(&it, &key, &key_len, &value)) {
        dispatch_entry *e = value;
        if (e->owner == p) {
            hashmap_remove(g_core.actions, key, key_len);
            free(e);
        }
    }
}

void dispatch_abandon_owner(plugin *p)
{
    hashmap_iter it;
    void *value;
    hashmap_iter_init(g_core.sessions, &it);
    while (hashmap_iter_next(&it, NULL, NULL, &value)) {
        struct session *s = value;
        sm_ctx *ctx = s->busy;
        /* The reply resumes the session through a timer, not from here,
         * so the walk is not disturbed. */
        if (ctx && ctx->deferred && !ctx->replied && ctx->entry->owner == p)
            dispatch_reply_error(ctx, SM_ERR_INTERNAL,
                                 "the plugin handling the command was unloaded", NULL);
    }
}

static void free_entry(void *e) { free(e); }

void dispatch_clear(void)
{
    if (!g_core.actions)
        return;
    hashmap_free(g_core.actions, free_entry);
    g_core.actions = hashmap_new();
}

char *dispatch_error_text(const char *command, int code, const char *message,
                          const json_t *extra)
{
    json_t *p = json_pack("{s:i, s:s, s:s}", "code", code, "message", message, "command",
                          command ? command : "");
    if (!p)
        return NULL;
    if (extra) {
        /* The protocol fixes these keys; extra may not override them. */
        json_object_update_missing(p, (json_t *)extra);
    }
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return text;
}

int dispatch_send_error(struct session *s, const char *reply_to, const char *command, int code,
                        const char *message, const json_t *extra)
{
    char *text = dispatch_error_text(command, code, message, extra);
    if (!text)
        return SM_ENOMEM;
    int rc = session_io_send(s, "error", "error", reply_to ? reply_to : "", text, strlen(text));
    free(text);
    return rc == 0 ? SM_OK : SM_ERROR;
}

/* limits: a command takes one token of the command bucket and its bytes
 * (as received) from the byte bucket. It passes only if both have enough,
 * and a refused command takes from neither. */
static int rate_take(struct session *s, size_t bytes, double *retry_after)
{
    const server_config *sc = g_core.sc;
    double now = core_mono_now();
    double burst = (double)sc->command_burst, byte_burst = (double)sc->bytes_burst;
    double wait = bucket_wait(&s->commands, sc->commands_per_second, burst, 1.0, now);
    double byte_wait = bucket_wait(&s->bytes, sc->bytes_per_second, byte_burst, (double)bytes, now);
    if (byte_wait > wait)
        wait = byte_wait;
    if (wait > 0) {
        *retry_after = bucket_retry_after(wait);
        return 0;
    }
    bucket_take(&s->commands, 1.0);
    bucket_take(&s->bytes, (double)bytes);
    return 1;
}

static void ctx_free(sm_ctx *ctx)
{
    free(ctx->nonce);
    free(ctx);
}

static void count_command(const sm_ctx *ctx, int code)
{
    server_metrics_command(ctx->entry->action->name, code, core_mono_now() - ctx->started);
}

static dispatch_resume_fn resume_hook;

void dispatch_set_resume(dispatch_resume_fn fn) { resume_hook = fn; }

static void finish(struct session *s, sm_ctx *ctx)
{
    if (!s || s->busy != ctx)
        return;
    session_io_end(s, ctx);
    /* Only a deferred reply needs it: after a reply given inside the
     * handler, control returns to session_io, which takes the next command. */
    if (ctx->deferred && resume_hook)
        resume_hook(s);
}

/* The error 1011 that replaces a reply over the payload limit. */
static char *too_large_text(const char *command)
{
    json_t *p = json_pack("{s:i, s:s, s:s}", "code", SM_ERR_TOO_LARGE, "message",
                          "reply too large", "command", command);
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    return text;
}

/* code: what the reply tells the client, 0 for a response. */
static int send_reply(sm_ctx *ctx, const char *type, const char *action, const json_t *payload,
                      int code)
{
    if (ctx->replied) {
        log_msg(SM_LOG_ERROR, ctx->entry->owner->name,
                "second reply to command '%s' refused (one reply per command)",
                ctx->entry->action->name);
        return SM_EREPLIED;
    }
    if (ctx->entry->action->flags & SM_ACTION_NO_REPLY) {
        log_msg(SM_LOG_ERROR, ctx->entry->owner->name,
                "reply to '%s' refused: the action is declared SM_ACTION_NO_REPLY",
                ctx->entry->action->name);
        return SM_ESTATE;
    }
    ctx->replied = 1;
    struct session *s = session_find(ctx->session);
    int rc = SM_OK;
    if (s) {
        char *text = session_payload_text(payload);
        if (!text) {
            /* The command still gets its one reply. */
            static const char internal[] =
                "{\"code\":1005,\"message\":\"internal server error\",\"command\":\"\"}";
            session_io_send(s, "error", "error", ctx->nonce, internal, sizeof internal - 1);
            rc = SM_ENOMEM;
            code = SM_ERR_INTERNAL;
        } else {
            size_t len = strlen(text), cap = session_io_payload_max();
            if (len > cap) {
                /* No reply may take a client's queue past its bound: the
                 * command still gets its one reply, a short one. */
                log_msg(SM_LOG_WARNING, ctx->entry->owner->name,
                        "reply to '%s' is %zu bytes, over the %zu-byte payload limit; sent 1011",
                        ctx->entry->action->name, len, cap);
                free(text);
                text = too_large_text(ctx->entry->action->name);
                type = "error";
                action = "error";
                len = text ? strlen(text) : 0;
                rc = SM_ERROR;
                code = SM_ERR_TOO_LARGE;
            }
            if (!text || session_io_send(s, type, action, ctx->nonce, text, len) != 0)
                rc = SM_ERROR;
            free(text);
        }
    }
    count_command(ctx, code);
    finish(s, ctx);
    if (ctx->deferred && !ctx->in_handler)
        ctx_free(ctx);
    return rc;
}

int dispatch_reply(sm_ctx *ctx, const char *action, const json_t *payload)
{
    if (!ctx || !action || !*action || (payload && !json_is_object(payload)))
        return SM_EINVAL;
    return send_reply(ctx, "response", action, payload, 0);
}

int dispatch_reply_error(sm_ctx *ctx, int code, const char *message, const json_t *extra)
{
    if (!ctx || !message || (extra && !json_is_object(extra)))
        return SM_EINVAL;
    json_t *p = json_pack("{s:i, s:s, s:s}", "code", code, "message", message, "command",
                          ctx->entry->action->name);
    if (!p)
        return SM_ENOMEM;
    if (extra)
        json_object_update_missing(p, (json_t *)extra); /* code, message, command stay */
    int rc = send_reply(ctx, "error", "error", p, code);
    json_decref(p);
    return rc;
}

int dispatch_defer(sm_ctx *ctx)
{
    /* A NO_REPLY command has nothing to defer: its context ends with the
     * handler. */
    if (!ctx || !ctx->in_handler || ctx->replied ||
        (ctx->entry->action->flags & SM_ACTION_NO_REPLY))
        return SM_ESTATE;
    ctx->deferred = 1;
    return SM_OK;
}

/* The checks before the handler, in PROTOCOL.md's order: 0 when the
 * command may run, or the code it was refused with (replied unless the
 * action has no replies). */
static int dispatch_check(struct session *s, const dispatch_entry *e, const char *action,
                          const char *nonce, const json_t *payload, size_t bytes)
{
    unsigned flags = e->action->flags;
    int silent = (flags & SM_ACTION_NO_REPLY) != 0;
    if ((flags & SM_ACTION_NEEDS_LOGIN) && !s->username) {
        if (!silent)
            dispatch_send_error(s, nonce, action, SM_ERR_NOT_AUTHORIZED, "login required", NULL);
        return SM_ERR_NOT_AUTHORIZED;
    }
    double retry_after = 0;
    if (!(flags & SM_ACTION_NO_RATE_LIMIT) && !rate_take(s, bytes, &retry_after)) {
        if (!silent) {
            json_t *extra = json_pack("{s:f}", "retry_after", retry_after);
            dispatch_send_error(s, nonce, action, SM_ERR_RATE_LIMITED, "rate limited", extra);
            json_decref(extra);
        }
        return SM_ERR_RATE_LIMITED;
    }
    char msg[256];
    if (schema_check(e->action->schema, payload, msg, sizeof msg) != 0) {
        if (!silent)
            dispatch_send_error(s, nonce, action, SM_ERR_MALFORMED, msg, NULL);
        return SM_ERR_MALFORMED;
    }
    return 0;
}

static void dispatch_run(struct session *s, dispatch_entry *e, const char *action,
                         const char *nonce, const json_t *payload, double started)
{
    int silent = (e->action->flags & SM_ACTION_NO_REPLY) != 0;
    sm_ctx *ctx = calloc(1, sizeof *ctx);
    size_t nlen = strlen(nonce);
    if (!ctx || !(ctx->nonce = malloc(nlen + 1))) {
        free(ctx);
        if (!silent)
            dispatch_send_error(s, nonce, action, SM_ERR_INTERNAL, "internal server error", NULL);
        server_metrics_command(e->action->name, SM_ERR_INTERNAL, core_mono_now() - started);
        return;
    }
    memcpy(ctx->nonce, nonce, nlen + 1);
    ctx->session = s->id;
    ctx->entry = e;
    ctx->in_handler = 1;
    ctx->started = started;
    session_io_begin(s, ctx);
    sm_session_id sid = s->id;
    e->action->handler(ctx, payload, e->owner->data);
    ctx->in_handler = 0;
    s = session_find(sid); /* the handler may have closed it */
    if (ctx->replied || silent) {
        if (silent)
            count_command(ctx, 0);
        if (s)
            session_io_end(s, ctx);
        ctx_free(ctx);
        return;
    }
    if (ctx->deferred) {
        if (s)
            session_io_deferred(s);
        return;
    }
    log_msg(SM_LOG_ERROR, e->owner->name, "handler for '%s' returned without replying; sent 1005",
            action);
    count_command(ctx, SM_ERR_INTERNAL);
    if (s) {
        dispatch_send_error(s, nonce, action, SM_ERR_INTERNAL, "internal server error", NULL);
        session_io_end(s, ctx);
    }
    ctx_free(ctx);
}

void dispatch_command(struct session *s, const char *action, const char *nonce,
                      const json_t *payload, size_t bytes)
{
    double started = core_mono_now();
    dispatch_entry *e = hashmap_get(g_core.actions, action, strlen(action));
    if (!e) {
        dispatch_send_error(s, nonce, action, SM_ERR_INVALID_COMMAND, "unknown action", NULL);
        server_metrics_command(NULL, SM_ERR_INVALID_COMMAND, core_mono_now() - started);
        return;
    }
    int refused = dispatch_check(s, e, action, nonce, payload, bytes);
    if (refused) {
        server_metrics_command(e->action->name, refused, core_mono_now() - started);
        return;
    }
    dispatch_run(s, e, action, nonce, payload, started);
}
