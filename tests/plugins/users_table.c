/* A users provider for plugin suites that run without the auth plugin: it
 * answers sm_host.user_lookup from an auth_users table the suite created
 * itself (docs/PLUGINS.md section 17 gives its columns), the way auth
 * answers from its own. Load it after creating the table: start() fails
 * when there is none. Also an action for the core's tests:
 *   users_table_lookup {"name": s} or {"id": n}
 *     -> {"status": <user_lookup's sm_status>, "id", "name", "public_key"}. */
#include <stdio.h>
#include <string.h>

#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *self_plugin;
static sm_stmt *by_name_stmt, *by_id_stmt;
static char found_name[65];
static char found_key[4096];

static int answer(sm_stmt *st, sm_user_info *out)
{
    int step = host->db_step(st);
    int rc = step == SM_ROW ? SM_OK : step == SM_DONE ? SM_ENOTFOUND : SM_ERROR;
    if (rc == SM_OK) {
        const char *name = host->db_column_text(st, 1);
        const char *key = host->db_column_text(st, 2);
        int n = snprintf(found_name, sizeof found_name, "%s", name ? name : "");
        int k = snprintf(found_key, sizeof found_key, "%s", key ? key : "");
        if (n <= 0 || (size_t)n >= sizeof found_name || k < 0 || (size_t)k >= sizeof found_key)
            rc = SM_ERROR;
        out->id = host->db_column_int64(st, 0);
        out->name = found_name;
        out->public_key = key ? found_key : NULL;
    }
    host->db_reset(st);
    return rc;
}

static int by_name(void *data, const char *name, sm_user_info *out)
{
    (void)data;
    char lower[65];
    if (!by_name_stmt)
        return SM_ESTATE;
    if (sm_name_fold(name, lower, sizeof lower) != SM_OK)
        return SM_ENOTFOUND;
    if (host->db_bind_text(by_name_stmt, 1, lower, -1) != SM_OK)
        return SM_ERROR;
    return answer(by_name_stmt, out);
}

static int by_id(void *data, int64_t id, sm_user_info *out)
{
    (void)data;
    if (!by_id_stmt)
        return SM_ESTATE;
    if (host->db_bind_int64(by_id_stmt, 1, id) != SM_OK)
        return SM_ERROR;
    return answer(by_id_stmt, out);
}

static const sm_users_provider provider = {
    .size = sizeof(sm_users_provider),
    .by_name = by_name,
    .by_id = by_id,
};

static void lookup(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    const char *name = json_string_value(json_object_get(payload, "name"));
    const json_t *id = json_object_get(payload, "id");
    sm_user_info info = {.size = sizeof info};
    int rc = json_is_integer(id) ? host->user_lookup_id((int64_t)json_integer_value(id), &info)
                                 : host->user_lookup(name, &info);
    json_t *r = rc == SM_OK ? json_pack("{s:i, s:I, s:s, s:s?}", "status", rc, "id",
                                        (json_int_t)info.id, "name", info.name, "public_key",
                                        info.public_key)
                            : json_pack("{s:i}", "status", rc);
    host->reply(ctx, "users_table_lookup", r);
    json_decref(r);
}

static const sm_action actions[] = {
    {"users_table_lookup", lookup, 0, NULL},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    self_plugin = self;
    *plugin_data = NULL;
    int rc = h->register_users_provider(self, &provider);
    return rc == SM_OK ? h->register_actions(self, actions) : rc;
}

static int start(void *data)
{
    (void)data;
    if (host->db_prepare(self_plugin,
                         "SELECT id, username, public_key FROM auth_users"
                         " WHERE username_lower = ?",
                         &by_name_stmt) != SM_OK ||
        host->db_prepare(self_plugin,
                         "SELECT id, username, public_key FROM auth_users WHERE id = ?",
                         &by_id_stmt) != SM_OK)
        return SM_ERROR;
    return SM_OK;
}

static void fini(void *data)
{
    (void)data;
    host->db_finalize(by_name_stmt);
    host->db_finalize(by_id_stmt);
    by_name_stmt = by_id_stmt = NULL;
}

SM_PLUGIN_DECLARE(.name = "users_table", .version = "1.0",
                  .description = "tests: a users provider over a suite's own auth_users",
                  .init = init, .fini = fini, .start = start);
