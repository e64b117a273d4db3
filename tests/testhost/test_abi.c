/* The plugin ABI across SDK versions, through the test host as a plugin
 * author's suite would see it: a plugin built against an older header
 * (shorter host table) still loads and works, C and C++ plugins built with
 * the strict SDK flags load, and a plugin asking for a newer ABI is
 * refused. The newer-header direction (SM_HOST_HAS on a shorter table) is
 * tests/unit/test_host_abi.c: the real host table cannot be shortened
 * through the public API. */
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define PLUGIN(name) SM_TEST_PLUGIN_DIR "/" name ".so"

static sm_testhost *th;

static int setup(void)
{
    if (sm_testhost_new("old_shape = { salutation = \"Howdy\"; };\n", &th) != SM_OK)
        return -1;
    if (sm_testhost_load(th, PLUGIN("old_shape"), "old_shape") != SM_OK ||
        sm_testhost_load(th, PLUGIN("sdk_c"), "sdk_c") != SM_OK ||
        sm_testhost_load(th, PLUGIN("sdk_cpp"), "sdk_cpp") != SM_OK)
        return -1;
    return 0;
}

static int teardown(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

static const json_t *payload(const json_t *m) { return json_object_get(m, "payload"); }

static const char *str(const json_t *m, const char *key)
{
    return json_string_value(json_object_get(payload(m), key));
}

static long long num(const json_t *m, const char *key)
{
    return json_integer_value(json_object_get(payload(m), key));
}

static void abi_older_header_plugin_loads_and_answers(void)
{
    sm_session_id s = sm_testhost_connect_user(th, "alice", 1);
    CU_ASSERT_NOT_EQUAL_FATAL(s, 0);
    json_t *r = sm_testhost_call(th, s, "old_hello", "{\"times\": 2}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "type")), "response");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "action")), "old_hello");
    CU_ASSERT_STRING_EQUAL(str(r, "text"), "Howdy, alice!!");
    /* Its header's table is exactly today's cut before the storage
     * entries, and the server passed the whole current table. */
    CU_ASSERT_EQUAL(num(r, "built_host_size"), (long long)offsetof(sm_host, db_prepare));
    CU_ASSERT_EQUAL(num(r, "host_size"), (long long)sizeof(sm_host));
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

static void abi_older_header_plugin_keeps_its_flags_and_schema(void)
{
    sm_session_id anon = sm_testhost_connect(th, NULL);
    json_t *r = sm_testhost_call(th, anon, "old_hello", "{\"times\": 1}");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "type")), "error");
    CU_ASSERT_EQUAL(num(r, "code"), 1002);
    json_decref(r);
    sm_session_id s = sm_testhost_connect_user(th, "bob", 2);
    r = sm_testhost_call(th, s, "old_hello", "{\"times\": 4}");
    CU_ASSERT_EQUAL(num(r, "code"), 1004);
    CU_ASSERT_STRING_EQUAL(str(r, "message"), "field 'times' must be an integer from 1 to 3");
    json_decref(r);
    sm_testhost_disconnect(th, anon);
    sm_testhost_disconnect(th, s);
}

static void abi_strict_c_and_cpp_plugins_load_and_answer(void)
{
    sm_session_id s = sm_testhost_connect_user(th, "carol", 3);
    json_t *c = sm_testhost_call(th, s, "sdk_c_hello", "{\"name\": \"x\"}");
    json_t *cpp = sm_testhost_call(th, s, "sdk_cpp_hello", "{\"name\": \"y\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cpp);
    CU_ASSERT_STRING_EQUAL(str(c, "language"), "C");
    CU_ASSERT_STRING_EQUAL(str(c, "name"), "x");
    CU_ASSERT_TRUE(json_is_true(json_object_get(payload(c), "storage")));
    CU_ASSERT_STRING_EQUAL(str(cpp, "language"), "C++");
    CU_ASSERT_STRING_EQUAL(str(cpp, "name"), "y");
    CU_ASSERT_TRUE(json_is_true(json_object_get(payload(cpp), "storage")));
    json_decref(c);
    json_decref(cpp);
    /* The C++ plugin's schema reaches the core intact. */
    json_t *bad = sm_testhost_call(th, s, "sdk_cpp_hello", "{\"name\": \"a b\"}");
    CU_ASSERT_EQUAL(num(bad, "code"), 1004);
    json_decref(bad);
    sm_testhost_disconnect(th, s);
}

static void abi_newer_plugin_is_refused(void)
{
    /* The loader's message naming both versions is checked in
     * tests/unit/test_loader.c; here the test host passes the refusal on. */
    CU_ASSERT_EQUAL(sm_testhost_load(th, PLUGIN("abi_newer"), "abi_newer"), SM_ERROR);
    sm_session_id s = sm_testhost_connect_user(th, "dave", 4);
    json_t *r = sm_testhost_call(th, s, "old_hello", "{\"times\": 3}");
    CU_ASSERT_STRING_EQUAL(str(r, "text"), "Howdy, dave!!!");
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(abi_older_header_plugin_loads_and_answers),
        SM_TEST(abi_older_header_plugin_keeps_its_flags_and_schema),
        SM_TEST(abi_strict_c_and_cpp_plugins_load_and_answer),
        SM_TEST(abi_newer_plugin_is_refused),
        SM_TEST_END,
    };
    return sm_test_run("abi", cases, setup, teardown);
}
