/* The plugin ABI across SDK versions, through the test host as a plugin
 * author's suite would see it: plugins built against older headers
 * (shorter host tables: v1_0 ends at `log`, v1_1 at `room_deleted`) still
 * load and work, old-style event callbacks keep their arguments next to
 * sm_event_info subscribers, C and C++ plugins built with
 * the strict SDK flags load, and a plugin asking for a newer ABI is
 * refused. The newer-header direction (SM_HOST_HAS on a shorter table) is
 * tests/unit/test_host_abi.c: the real host table cannot be shortened
 * through the public API. */
#include <stdio.h>
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
        sm_testhost_load(th, PLUGIN("v1_1_shape"), "v1_1_shape") != SM_OK ||
        sm_testhost_load(th, PLUGIN("events_ex"), "events_ex") != SM_OK ||
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

/* The last event of kind `event` a plugin recorded (in the reply). */
static const json_t *seen(const json_t *seen_map, int event)
{
    char key[16];
    snprintf(key, sizeof key, "%d", event);
    return json_object_get(seen_map, key);
}

static void abi_v1_1_plugin_loads_and_gets_old_style_events(void)
{
    sm_session_id s = sm_testhost_connect_user(th, "Erin", 5);
    CU_ASSERT_NOT_EQUAL_FATAL(s, 0);
    json_t *r = sm_testhost_call(th, s, "v11_seen", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    /* Its table is exactly today's cut before the SDK services. */
    CU_ASSERT_EQUAL(num(r, "built_host_size"),
                    (long long)offsetof(sm_host, topic_publish_except_user));
    CU_ASSERT_EQUAL(num(r, "host_size"), (long long)sizeof(sm_host));
    const json_t *in = seen(json_object_get(payload(r), "seen"), SM_EVENT_LOGGED_IN);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(in, "session")), (json_int_t)s);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(in, "username")), "Erin");
    json_decref(r);
    /* The same event through subscribe_ex. */
    r = sm_testhost_call(th, s, "events_ex_seen", NULL);
    in = seen(payload(r), SM_EVENT_LOGGED_IN);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(in, "session")), (json_int_t)s);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(in, "username")), "Erin");
    CU_ASSERT_TRUE(json_is_null(json_object_get(in, "room")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(in, "size")),
                    (json_int_t)sizeof(sm_event_info));
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

/* An old-style subscriber keeps getting the room in `username`; an
 * sm_event_info subscriber gets it in `room`, with no username. */
static void abi_room_deleted_reaches_old_and_new_subscribers(void)
{
    sm_session_id s = sm_testhost_connect_user(th, "frank", 6);
    json_t *r = sm_testhost_call(th, s, "v11_delete_room", "{\"room\": \"lobby\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(num(r, "status"), SM_OK);
    const json_t *old = seen(json_object_get(payload(r), "seen"), SM_EVENT_ROOM_DELETED);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(old, "session")), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(old, "username")), "lobby");
    json_decref(r);
    r = sm_testhost_call(th, s, "events_ex_seen", NULL);
    const json_t *ex = seen(payload(r), SM_EVENT_ROOM_DELETED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(ex, "session")), 0);
    CU_ASSERT_TRUE(json_is_null(json_object_get(ex, "username")));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ex, "room")), "lobby");
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

static void abi_v1_1_plugin_publishes_to_a_topic(void)
{
    sm_session_id a = sm_testhost_connect_user(th, "gina", 7);
    sm_session_id b = sm_testhost_connect_user(th, "hank", 8);
    json_t *r = sm_testhost_call(th, a, "v11_publish", "{\"topic\": \"v11\"}");
    CU_ASSERT_EQUAL(num(r, "status"), SM_OK);
    json_decref(r);
    r = sm_testhost_call(th, b, "v11_publish", "{\"topic\": \"v11\"}");
    CU_ASSERT_EQUAL(num(r, "status"), SM_OK);
    json_decref(r);
    json_t *ev = sm_testhost_next_event(th, a, "v11_event");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(str(ev, "from"), "hank");
    json_decref(ev);
    ev = sm_testhost_next_event(th, b, "v11_event"); /* `except` was its own session */
    CU_ASSERT_PTR_NULL(ev);
    json_decref(ev);
    sm_testhost_disconnect(th, a);
    sm_testhost_disconnect(th, b);
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
        SM_TEST(abi_v1_1_plugin_loads_and_gets_old_style_events),
        SM_TEST(abi_room_deleted_reaches_old_and_new_subscribers),
        SM_TEST(abi_v1_1_plugin_publishes_to_a_topic),
        SM_TEST(abi_newer_plugin_is_refused),
        SM_TEST_END,
    };
    return sm_test_run("abi", cases, setup, teardown);
}
