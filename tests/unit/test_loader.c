/* The plugin loader's refusals and the registration rules, with the small
 * plugins of tests/plugins. */
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "core.h"
#include "dispatch.h"
#include "plugin_loader.h"
#include "safemessenger/testhost_suite.h"

static char *load_capture(const char *name, int *rc)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.so", SM_TEST_PLUGIN_DIR, name);
    capture c;
    CU_ASSERT_FATAL(capture_begin(&c) == 0);
    *rc = plugin_load(path, name);
    return capture_end(&c);
}

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1};
    return core_start(&o);
}

static int teardown(void)
{
    core_stop();
    return 0;
}

static void loader_loads_valid_plugin_and_registers_actions(void)
{
    int rc;
    free(load_capture("testcmds", &rc));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(g_core.n_plugins, 1);
    CU_ASSERT_PTR_NOT_NULL(hashmap_get(g_core.actions, "echo", 4));
    CU_ASSERT_EQUAL(plugin_start_all(), 0);
    int version = 0;
    CU_ASSERT_EQUAL(storage_version(g_core.db, "testcmds", &version), 0);
    CU_ASSERT_EQUAL(version, 2);
    plugin_unload_all();
    CU_ASSERT_EQUAL(g_core.n_plugins, 0);
    CU_ASSERT_PTR_NULL(hashmap_get(g_core.actions, "echo", 4));
}

static void loader_refuses_newer_abi_naming_file_and_versions(void)
{
    int rc;
    char *log = load_capture("abi_newer", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "abi_newer.so"));
    char want[64];
    snprintf(want, sizeof want, "plugin ABI %u", SM_PLUGIN_ABI_VERSION + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    snprintf(want, sizeof want, "server's ABI %u", SM_PLUGIN_ABI_VERSION);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    CU_ASSERT_EQUAL(g_core.n_plugins, 0);
    free(log);
}

static void loader_refuses_older_abi_naming_file_and_versions(void)
{
    int rc;
    char *log = load_capture("abi_older", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "abi_older.so"));
    char want[64];
    snprintf(want, sizeof want, "plugin ABI %u", SM_PLUGIN_ABI_MIN - 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    snprintf(want, sizeof want, "(%u to %u)", SM_PLUGIN_ABI_MIN, SM_PLUGIN_ABI_VERSION);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    free(log);
}

static void loader_refuses_missing_descriptor_symbol(void)
{
    int rc;
    char *log = load_capture("no_descriptor", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "no_descriptor.so"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, SM_PLUGIN_DESCRIPTOR_SYMBOL));
    free(log);
}

static void loader_refuses_missing_file(void)
{
    int rc;
    char *log = load_capture("does_not_exist", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "does_not_exist.so"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "cannot load"));
    free(log);
}

static void loader_refuses_failing_init(void)
{
    int rc;
    char *log = load_capture("init_fails", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "plugin init_fails: init failed"));
    CU_ASSERT_EQUAL(g_core.n_plugins, 0);
    free(log);
}

static void loader_refuses_duplicate_action_naming_both_plugins(void)
{
    int rc;
    free(load_capture("testcmds", &rc));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    char *log = load_capture("dup_echo", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "action 'echo' of plugin 'dup_echo'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "already registered by testcmds"));
    /* The first plugin's action is untouched. */
    dispatch_entry *e = hashmap_get(g_core.actions, "echo", 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e->owner->name, "testcmds");
    free(log);
    plugin_unload_all();
}

static void loader_refuses_registration_after_init(void)
{
    int rc;
    free(load_capture("late_register", &rc));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    capture c;
    CU_ASSERT_FATAL(capture_begin(&c) == 0);
    rc = plugin_start_all();
    char *log = capture_end(&c);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "register_actions is allowed only during init"));
    CU_ASSERT_PTR_NULL(hashmap_get(g_core.actions, "late", 4));
    free(log);
    plugin_unload_all();
}

static void loader_load_all_unloads_everything_on_failure(void)
{
    const char *names[] = {"testcmds", "init_fails"};
    capture c;
    CU_ASSERT_FATAL(capture_begin(&c) == 0);
    int rc = plugin_load_all(SM_TEST_PLUGIN_DIR, names, 2);
    free(capture_end(&c));
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_EQUAL(g_core.n_plugins, 0);
    CU_ASSERT_PTR_NULL(hashmap_get(g_core.actions, "echo", 4));
}

static void loader_refuses_core_section_names(void)
{
    int rc;
    char *log = load_capture("server", &rc);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "reserved"));
    free(log);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(loader_loads_valid_plugin_and_registers_actions),
        SM_TEST(loader_refuses_newer_abi_naming_file_and_versions),
        SM_TEST(loader_refuses_older_abi_naming_file_and_versions),
        SM_TEST(loader_refuses_missing_descriptor_symbol),
        SM_TEST(loader_refuses_missing_file),
        SM_TEST(loader_refuses_failing_init),
        SM_TEST(loader_refuses_duplicate_action_naming_both_plugins),
        SM_TEST(loader_refuses_registration_after_init),
        SM_TEST(loader_load_all_unloads_everything_on_failure),
        SM_TEST(loader_refuses_core_section_names),
        SM_TEST_END,
    };
    return sm_test_run("loader", cases, setup, teardown);
}
