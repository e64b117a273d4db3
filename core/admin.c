#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"
#include "plugin_loader.h"

typedef struct admin_entry {
    struct sm_plugin *owner; /* NULL: the core */
    const sm_admin_command *cmd;
} admin_entry;

struct sm_admin_ctx {
    admin_done_fn done;
    void *arg;
    const admin_entry *entry;
    int replied;
    int deferred;
    int in_handler;
    /* Deferred contexts are listed so that unloading their plugin can
     * answer them (nothing else would). */
    struct sm_plugin *owner;
    sm_admin_ctx *prev, *next;
};

static sm_admin_ctx *deferred_head;

static void unlink_deferred(sm_admin_ctx *ctx)
{
    if (!ctx->deferred)
        return;
    if (ctx->prev)
        ctx->prev->next = ctx->next;
    else if (deferred_head == ctx)
        deferred_head = ctx->next;
    if (ctx->next)
        ctx->next->prev = ctx->prev;
    ctx->prev = ctx->next = NULL;
}

#define ADMIN_NAME_MAX 64

int admin_register(struct sm_plugin *owner, const sm_admin_command *commands)
{
    size_t n = 0;
    for (; commands[n].name; n++) {
        const sm_admin_command *c = &commands[n];
        if (!c->handler || !*c->name || strlen(c->name) > ADMIN_NAME_MAX)
            return SM_EINVAL;
        if (hashmap_get(g_core.admin, c->name, strlen(c->name))) {
            log_msg(SM_LOG_ERROR, owner ? owner->name : "core",
                    "admin command '%s' is already registered", c->name);
            return SM_EEXIST;
        }
        for (size_t k = 0; k < n; k++)
            if (strcmp(commands[k].name, c->name) == 0)
                return SM_EEXIST;
    }
    for (size_t i = 0; i < n; i++) {
        admin_entry *e = malloc(sizeof *e);
        if (!e || hashmap_put(g_core.admin, commands[i].name, strlen(commands[i].name), e) != 0) {
            free(e);
            /* Undo this table's rows: all or none. */
            for (size_t k = 0; k < i; k++)
                free(hashmap_remove(g_core.admin, commands[k].name, strlen(commands[k].name)));
            return SM_ENOMEM;
        }
        e->owner = owner;
        e->cmd = &commands[i];
    }
    return SM_OK;
}

void admin_clear(void)
{
    if (!g_core.admin)
        return;
    hashmap_iter it;
    void *value;
    hashmap_iter_init(g_core.admin, &it);
    while (hashmap_iter_next(&it, NULL, NULL, &value))
        free(value);
}

json_t *admin_command_list(void)
{
    json_t *list = json_object();
    hashmap_iter it;
    void *value;
    hashmap_iter_init(g_core.admin, &it);
    while (list && hashmap_iter_next(&it, NULL, NULL, &value)) {
        const admin_entry *e = value;
        json_t *row = json_pack("{s:s, s:s}", "summary", e->cmd->summary ? e->cmd->summary : "",
                                "by", e->owner ? e->owner->name : "core");
        if (json_object_set_new(list, e->cmd->name, row) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

void admin_scrub(json_t *request)
{
    json_t *pw = json_object_get(json_object_get(request, "args"), "password");
    if (json_is_string(pw))
        /* The string is the object's own malloc'd copy. */
        explicit_bzero((char *)json_string_value(pw), json_string_length(pw));
}

const char *admin_status_name(int status)
{
    switch (status) {
    case SM_ENOTFOUND: return "not_found";
    case SM_EINVAL: return "invalid";
    case SM_EEXIST: return "exists";
    case SM_EBUSY: return "busy";
    case SM_ESTATE: return "state";
    case SM_ENOMEM: return "no_memory";
    default: return "error";
    }
}

static void finish(sm_admin_ctx *ctx, json_t *reply)
{
    ctx->replied = 1;
    unlink_deferred(ctx);
    if (ctx->done && reply)
        ctx->done(reply, ctx->arg);
    else if (ctx->done) {
        /* Out of memory building the reply: still answer once. */
        json_t *fallback = json_pack("{s:b, s:s, s:s}", "ok", 0, "status", "no_memory", "error",
                                     "out of memory");
        if (fallback)
            ctx->done(fallback, ctx->arg);
        json_decref(fallback);
    }
    json_decref(reply);
    /* A context answered inside its handler is freed by admin_run. */
    if (!ctx->in_handler)
        free(ctx);
}

int admin_reply(sm_admin_ctx *ctx, const json_t *result)
{
    if (!ctx)
        return SM_EINVAL;
    if (ctx->replied)
        return SM_EREPLIED;
    if (result && !json_is_object(result))
        return SM_EINVAL;
    json_t *r = result ? json_deep_copy(result) : json_object();
    json_t *reply = r ? json_pack("{s:b, s:o}", "ok", 1, "result", r) : NULL;
    finish(ctx, reply);
    return SM_OK;
}

int admin_error(sm_admin_ctx *ctx, int status, const char *message)
{
    if (!ctx)
        return SM_EINVAL;
    if (ctx->replied)
        return SM_EREPLIED;
    json_t *reply = json_pack("{s:b, s:s, s:s}", "ok", 0, "status", admin_status_name(status),
                              "error", message ? message : "failed");
    finish(ctx, reply);
    return SM_OK;
}

int admin_defer(sm_admin_ctx *ctx)
{
    if (!ctx)
        return SM_EINVAL;
    if (ctx->replied)
        return SM_EREPLIED;
    if (!ctx->deferred) {
        ctx->deferred = 1;
        ctx->prev = NULL;
        ctx->next = deferred_head;
        if (deferred_head)
            deferred_head->prev = ctx;
        deferred_head = ctx;
    }
    return SM_OK;
}

void admin_remove_owner(struct sm_plugin *owner)
{
    if (!owner)
        return;
    for (sm_admin_ctx *ctx = deferred_head, *next; ctx; ctx = next) {
        next = ctx->next;
        if (ctx->owner == owner)
            admin_error(ctx, SM_ERROR, "the plugin handling the command was unloaded");
    }
    if (!g_core.admin)
        return;
    /* Collect first: removing while iterating would disturb the walk. */
    const char *names[256];
    size_t n;
    do {
        n = 0;
        hashmap_iter it;
        void *value;
        hashmap_iter_init(g_core.admin, &it);
        while (n < sizeof names / sizeof names[0] && hashmap_iter_next(&it, NULL, NULL, &value)) {
            const admin_entry *e = value;
            if (e->owner == owner)
                names[n++] = e->cmd->name;
        }
        for (size_t i = 0; i < n; i++)
            free(hashmap_remove(g_core.admin, names[i], strlen(names[i])));
    } while (n == sizeof names / sizeof names[0]);
}

void admin_detach(sm_admin_ctx *ctx)
{
    if (ctx)
        ctx->done = NULL;
}

static void answer_now(admin_done_fn done, void *arg, int status, const char *message)
{
    sm_admin_ctx ctx = {.done = done, .arg = arg, .in_handler = 1};
    admin_error(&ctx, status, message);
}

sm_admin_ctx *admin_run(const json_t *request, admin_done_fn done, void *arg)
{
    const char *name = json_string_value(json_object_get(request, "command"));
    json_t *args = json_object_get(request, "args");
    if (json_is_null(args))
        args = NULL; /* as absent: {} */
    if (!name || (args && !json_is_object(args))) {
        answer_now(done, arg, SM_EINVAL, "a request is {\"command\": name, \"args\": {...}}");
        return NULL;
    }
    const admin_entry *e = hashmap_get(g_core.admin, name, strlen(name));
    if (!e) {
        answer_now(done, arg, SM_ENOTFOUND, "unknown admin command (is its plugin loaded?)");
        return NULL;
    }
    sm_admin_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        answer_now(done, arg, SM_ENOMEM, "out of memory");
        return NULL;
    }
    ctx->done = done;
    ctx->arg = arg;
    ctx->entry = e;
    ctx->owner = e->owner;
    json_t *empty = args ? NULL : json_object();
    ctx->in_handler = 1;
    e->cmd->handler(ctx, args ? args : empty, e->owner ? e->owner->data : NULL);
    ctx->in_handler = 0;
    json_decref(empty);
    if (ctx->replied) {
        free(ctx);
        return NULL;
    }
    if (!ctx->deferred) {
        log_msg(SM_LOG_ERROR, e->owner ? e->owner->name : "core",
                "admin command '%s' returned without an answer", name);
        admin_error(ctx, SM_ERROR, "the command gave no answer");
        return NULL;
    }
    return ctx;
}
