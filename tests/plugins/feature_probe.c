/* A plugin built against a newer SDK header than the server that runs it:
 * every host entry it uses beyond the oldest table it supports is tested
 * with SM_HOST_HAS before use, and the plugin falls back when the entry is
 * absent. tests/unit/test_host_abi.c hands it shortened copies of the real
 * host table. Its one action, `probe`, replies
 *   {"storage": <bool>, "policy": <bool>, "calls": <n>}
 * where "calls" (present only with storage) counts the probes it stored. */
#include <stdlib.h>

#include "safemessenger/plugin.h"

typedef struct probe {
    sm_plugin *self;
    const sm_host *host;
    int storage; /* the host has every db_* entry this plugin calls */
    int policy;  /* the host has the policy hook */
    sm_stmt *insert;
    sm_stmt *count;
} probe;

static const sm_migration migrations[] = {
    {1, "CREATE TABLE feature_probe_calls (id INTEGER PRIMARY KEY)"},
    {0, NULL},
};

/* Stores one probe and counts them; SM_OK and *out, or an error status. */
static int store_probe(probe *p, int64_t *out)
{
    const sm_host *host = p->host;
    int rc = host->db_step(p->insert) == SM_DONE && host->db_changes(p->self) == 1 ? SM_OK
                                                                                 : SM_ERROR;
    host->db_reset(p->insert);
    if (rc != SM_OK)
        return rc;
    int64_t n = 0;
    if (host->db_step(p->count) == SM_ROW)
        n = host->db_column_int64(p->count, 0);
    else
        rc = SM_ERROR;
    host->db_reset(p->count);
    if (rc == SM_OK)
        *out = n;
    return rc;
}

static void probe_cmd(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)payload;
    probe *p = plugin_data;
    const sm_host *host = p->host;
    json_t *reply = json_pack("{s:b, s:b}", "storage", p->storage, "policy", p->policy);
    if (reply && p->storage) {
        int64_t calls = 0;
        if (store_probe(p, &calls) != SM_OK ||
            json_object_set_new(reply, "calls", json_integer((json_int_t)calls)) != 0) {
            json_decref(reply);
            reply = NULL;
        }
    }
    if (reply && p->policy &&
        host->policy_check(SM_INTERACTION_PRIVATE_MESSAGE, "a", "b") != SM_VERDICT_ALLOW) {
        json_decref(reply);
        reply = NULL;
    }
    if (!reply) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "probe", reply);
    json_decref(reply);
}

static const sm_action actions[] = {
    {"probe", probe_cmd, 0, NULL},
    {NULL, NULL, 0, NULL},
};

/* Admin command probe.status (safemessenger-admin): what probe answers,
 * without storing a call. */
static void probe_status(sm_admin_ctx *ctx, const json_t *args, void *plugin_data)
{
    (void)args;
    probe *p = plugin_data;
    json_t *result = json_pack("{s:b, s:b}", "storage", p->storage, "policy", p->policy);
    if (result)
        p->host->admin_reply(ctx, result);
    else
        p->host->admin_error(ctx, SM_ENOMEM, "out of memory");
    json_decref(result);
}

static const sm_admin_command admin_commands[] = {
    {"probe.status", probe_status, "which host features this plugin found"},
    {NULL, NULL, NULL},
};

static int probe_init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    probe *p = calloc(1, sizeof *p);
    if (!p)
        return SM_ENOMEM;
    p->self = self;
    p->host = host;
    /* Entries only ever grow at the table's end, so the newest entry a
     * feature needs stands for all of the feature's entries. */
    p->storage = SM_HOST_HAS(host, db_changes);
    p->policy = SM_HOST_HAS(host, policy_check);
    int rc = host->register_actions(self, actions);
    if (rc == SM_OK && p->storage)
        rc = host->register_migrations(self, migrations);
    if (rc == SM_OK && SM_HOST_HAS(host, user_deleted))
        rc = host->register_admin_commands(self, admin_commands);
    if (rc != SM_OK) {
        free(p);
        return rc;
    }
    if (!p->storage)
        host->log(self, SM_LOG_WARNING, "this server has no storage services; not counting");
    *plugin_data = p;
    return SM_OK;
}

static int probe_start(void *plugin_data)
{
    probe *p = plugin_data;
    if (!p->storage)
        return SM_OK;
    if (p->host->db_prepare(p->self, "INSERT INTO feature_probe_calls DEFAULT VALUES",
                            &p->insert) != SM_OK ||
        p->host->db_prepare(p->self, "SELECT count(*) FROM feature_probe_calls", &p->count) !=
            SM_OK)
        return SM_ERROR;
    return SM_OK;
}

static void probe_fini(void *plugin_data)
{
    probe *p = plugin_data;
    if (p->storage) {
        p->host->db_finalize(p->insert);
        p->host->db_finalize(p->count);
    }
    free(p);
}

SM_PLUGIN_DECLARE(.name = "feature_probe", .version = "1.0",
                  .description = "tests: uses newer host entries only after SM_HOST_HAS",
                  .init = probe_init, .fini = probe_fini, .start = probe_start);
