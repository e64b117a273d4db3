/* The host table's growth rule seen from a plugin built against a newer
 * header than its server: the server's table may end earlier, the plugin
 * finds out through `size` (SM_HOST_HAS) and falls back. An older server
 * is simulated with a copy of the real table cut at an entry boundary, in
 * an allocation of exactly that size, so a plugin reading past it is a
 * heap overflow under ASan. tests/plugins/feature_probe.c is the plugin. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "dispatch.h"
#include "fake_transport.h"
#include "host_api.h"
#include "plugin_loader.h"
#include "safemessenger/testhost_suite.h"

#define PROBE_SO SM_TEST_PLUGIN_DIR "/feature_probe.so"

static int core_up(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &fake_transport};
    return core_start(&o);
}

static void core_down(void)
{
    fake_reset();
    core_stop();
}

/* A copy of the server's table as a server built when the table ended
 * just before `cut` bytes would have it. Caller frees. */
static sm_host *older_table(size_t cut)
{
    sm_host *t = malloc(cut);
    if (t) {
        memcpy(t, host_api_table(), cut);
        t->size = cut;
    }
    return t;
}

/* What plugin_load does, but with the given table instead of the
 * server's: the loader has no way to pass another one. The plugin joins
 * g_core.plugins, so plugin_unload_all() runs its fini and frees it. */
static int load_probe(const sm_host *table)
{
    plugin *p = calloc(1, sizeof *p);
    plugin **list = realloc(g_core.plugins, (g_core.n_plugins + 1) * sizeof *list);
    if (!p || !list) {
        free(p);
        free(list);
        return -1;
    }
    g_core.plugins = list;
    p->name = strdup("feature_probe");
    p->path = strdup(PROBE_SO);
    p->dl = dlopen(PROBE_SO, RTLD_NOW | RTLD_LOCAL);
    p->desc = p->dl ? dlsym(p->dl, SM_PLUGIN_DESCRIPTOR_SYMBOL) : NULL;
    g_core.plugins[g_core.n_plugins++] = p;
    if (!p->name || !p->path || !p->desc)
        return -1;
    g_core.initialising = p;
    int rc = p->desc->init(p, table, &p->data);
    g_core.initialising = NULL;
    if (rc != SM_OK)
        return -1;
    p->initialised = 1;
    return plugin_start_last();
}

/* Runs `probe` on a fresh session; returns the reply payload (borrowed
 * from fake_log, valid until fake_reset) or NULL if it was not a response. */
static json_t *run_probe(void)
{
    fake_reset();
    struct session *s = fake_session();
    json_t *empty = json_object();
    if (!s || !empty)
        return NULL;
    dispatch_command(s, "probe", "1", empty, 2);
    json_decref(empty);
    session_destroy(s);
    if (fake_count != 1 || strcmp(fake_log[0].type, "response") != 0)
        return NULL;
    return fake_log[0].payload;
}

static int has_table(const char *name)
{
    sm_stmt *st = NULL;
    if (storage_prepare(g_core.db, "test", "SELECT count(*) FROM sqlite_master WHERE name = ?",
                        &st) != SM_OK)
        return -1;
    storage_bind_text(st, 1, name, -1);
    int n = storage_step(st) == SM_ROW ? (int)storage_column_int64(st, 0) : -1;
    storage_finalize(st);
    return n;
}

static void host_abi_server_table_reports_its_size_and_version(void)
{
    const sm_host *h = host_api_table();
    CU_ASSERT_EQUAL(h->size, sizeof(sm_host));
    CU_ASSERT_EQUAL(h->abi_version, SM_PLUGIN_ABI_VERSION);
    CU_ASSERT_TRUE(SM_HOST_HAS(h, policy_check));
    CU_ASSERT_TRUE(SM_HOST_HAS(h, room_deleted));
    CU_ASSERT_PTR_NOT_NULL(h->room_deleted);
    /* The SDK services, appended after room_deleted. */
    CU_ASSERT_TRUE(SM_HOST_HAS(h, user_lookup_id));
    CU_ASSERT_TRUE(offsetof(sm_host, topic_publish_except_user) >
                   offsetof(sm_host, room_deleted));
    CU_ASSERT_PTR_NOT_NULL(h->topic_publish_except_user);
    CU_ASSERT_PTR_NOT_NULL(h->subscribe_ex);
    CU_ASSERT_PTR_NOT_NULL(h->register_users_provider);
    CU_ASSERT_PTR_NOT_NULL(h->user_lookup);
    CU_ASSERT_PTR_NOT_NULL(h->user_lookup_id);
}

/* Without a users provider every lookup is SM_ESTATE, before its
 * arguments are looked at: user_lookup(NULL, NULL) is how a plugin's
 * start asks whether one is loaded. */
static void host_abi_user_lookup_without_a_provider_is_estate(void)
{
    CU_ASSERT_EQUAL_FATAL(core_up(), 0);
    const sm_host *h = host_api_table();
    sm_user_info info = {.size = sizeof info};
    CU_ASSERT_EQUAL(h->user_lookup(NULL, NULL), SM_ESTATE);
    CU_ASSERT_EQUAL(h->user_lookup("alice", &info), SM_ESTATE);
    CU_ASSERT_EQUAL(h->user_lookup_id(1, &info), SM_ESTATE);
    CU_ASSERT_EQUAL(h->register_users_provider(NULL, NULL), SM_ESTATE); /* not in init */
    core_down();
}

/* The name helpers: one rule for the core's SM_FIELD_NAME and plugins. */
static void host_abi_name_helpers(void)
{
    char out[8];
    CU_ASSERT_TRUE(sm_name_valid("Ab_.-9", 1, 32));
    CU_ASSERT_FALSE(sm_name_valid("a b", 1, 32));
    CU_ASSERT_FALSE(sm_name_valid("ab", 3, 32));
    CU_ASSERT_FALSE(sm_name_valid("abcd", 1, 3));
    CU_ASSERT_FALSE(sm_name_valid("", 1, 3));
    CU_ASSERT_FALSE(sm_name_valid(NULL, 0, 3));
    CU_ASSERT_EQUAL(sm_name_fold("MiXeD.1", out, sizeof out), SM_OK);
    CU_ASSERT_STRING_EQUAL(out, "mixed.1");
    CU_ASSERT_EQUAL(sm_name_fold("TooLong1", out, sizeof out), SM_EINVAL);
    CU_ASSERT_EQUAL(sm_name_fold("", out, sizeof out), SM_EINVAL);
    CU_ASSERT_EQUAL(sm_name_fold(NULL, out, sizeof out), SM_EINVAL);
    CU_ASSERT_TRUE(sm_name_equal("Alice", "aLICE"));
    CU_ASSERT_FALSE(sm_name_equal("Alice", "Alicia"));
    CU_ASSERT_FALSE(sm_name_equal(NULL, "a"));
    CU_ASSERT_TRUE(sm_name_compare("alice", "Bob") < 0);
    CU_ASSERT_TRUE(sm_name_compare("Zed", "bob") > 0);
    CU_ASSERT_EQUAL(sm_name_compare("X_y", "x_Y"), 0);
}

/* room_deleted and user_deleted refuse a missing name before any
 * subscriber could see it. */
static void host_abi_deleted_notices_need_a_name(void)
{
    CU_ASSERT_EQUAL_FATAL(core_up(), 0);
    const sm_host *h = host_api_table();
    CU_ASSERT_EQUAL(h->room_deleted(NULL, NULL), SM_EINVAL);
    CU_ASSERT_EQUAL(h->room_deleted(NULL, ""), SM_EINVAL);
    CU_ASSERT_EQUAL(h->user_deleted(NULL, ""), SM_EINVAL);
    CU_ASSERT_EQUAL(h->room_deleted(NULL, "lobby"), SM_OK); /* no subscriber: nothing to do */
    core_down();
}

static void host_abi_has_needs_the_whole_entry(void)
{
    sm_host t;
    memset(&t, 0, sizeof t);
    t.size = offsetof(sm_host, db_changes) + sizeof t.db_changes - 1;
    CU_ASSERT_FALSE(SM_HOST_HAS(&t, db_changes));
    CU_ASSERT_TRUE(SM_HOST_HAS(&t, db_last_insert_id));
    t.size++;
    CU_ASSERT_TRUE(SM_HOST_HAS(&t, db_changes));
    CU_ASSERT_FALSE(SM_HOST_HAS(&t, register_policy));
}

static void host_abi_full_table_plugin_uses_storage_and_policy(void)
{
    CU_ASSERT_EQUAL_FATAL(core_up(), 0);
    sm_host *t = older_table(sizeof(sm_host));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(load_probe(t), 0);
    json_t *r = run_probe();
    CU_ASSERT_PTR_NOT_NULL(r);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r, "storage")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(r, "policy")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "calls")), 1);
    r = run_probe();
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "calls")), 2);
    CU_ASSERT_EQUAL(has_table("feature_probe_calls"), 1);
    core_down();
    free(t);
}

static void host_abi_table_before_policy_hook_hides_policy(void)
{
    CU_ASSERT_EQUAL_FATAL(core_up(), 0);
    sm_host *t = older_table(offsetof(sm_host, register_policy));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(load_probe(t), 0);
    json_t *r = run_probe();
    CU_ASSERT_PTR_NOT_NULL(r);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r, "storage")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(r, "policy")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "calls")), 1);
    core_down();
    free(t);
}

static void host_abi_table_without_storage_plugin_falls_back(void)
{
    CU_ASSERT_EQUAL_FATAL(core_up(), 0);
    /* A server whose table ended at db_prepare: db_bind_int64 and every
     * later entry are missing. */
    sm_host *t = older_table(offsetof(sm_host, db_bind_int64));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_TRUE(SM_HOST_HAS(t, db_prepare));
    CU_ASSERT_FALSE(SM_HOST_HAS(t, db_bind_int64));
    CU_ASSERT_EQUAL(load_probe(t), 0);
    json_t *r = run_probe();
    CU_ASSERT_PTR_NOT_NULL(r);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r, "storage")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(r, "policy")));
    CU_ASSERT_PTR_NULL(json_object_get(r, "calls"));
    /* It registered no migration it could not use. */
    CU_ASSERT_EQUAL(has_table("feature_probe_calls"), 0);
    core_down();
    free(t);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(host_abi_server_table_reports_its_size_and_version),
        SM_TEST(host_abi_has_needs_the_whole_entry),
        SM_TEST(host_abi_deleted_notices_need_a_name),
        SM_TEST(host_abi_user_lookup_without_a_provider_is_estate),
        SM_TEST(host_abi_name_helpers),
        SM_TEST(host_abi_full_table_plugin_uses_storage_and_policy),
        SM_TEST(host_abi_table_before_policy_hook_hides_policy),
        SM_TEST(host_abi_table_without_storage_plugin_falls_back),
        SM_TEST_END,
    };
    return sm_test_run("host_abi", cases, NULL, NULL);
}
