/* The hello plugin's suite on the SafeMessenger test host: the real core
 * in-process, fake sessions, an in-memory database. HELLO_SO is the path
 * of the built hello.so (CMakeLists.txt passes it; by hand, -DHELLO_SO as
 * docs/PLUGINS.md section 13 shows). */
#include <string.h>

#include <safemessenger/testhost.h>
#include <safemessenger/testhost_suite.h>

#ifndef HELLO_SO
#error "HELLO_SO must name the built hello.so"
#endif

/* The core is process-wide: one test host at a time. */
static sm_testhost *th;

/* Replaces the current host with a fresh one on `config` (NULL: no
 * configuration at all) with hello loaded. */
static int use_host(const char *config)
{
    sm_testhost_free(th);
    th = NULL;
    if (sm_testhost_new(config, &th) != SM_OK)
        return SM_ERROR;
    return sm_testhost_load(th, HELLO_SO, "hello");
}

static int cleanup(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

static const char *greeting_of(const json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "payload"), "greeting"));
}

static long long count_of(const json_t *reply)
{
    return json_integer_value(json_object_get(json_object_get(reply, "payload"), "count"));
}

/* Calls hello in the name of the session; returns the count it replied. */
static long long greet(sm_session_id s)
{
    json_t *reply = sm_testhost_call(th, s, "hello", NULL);
    long long n = count_of(reply);
    json_decref(reply);
    return n;
}

static void hello_replies_with_configured_greeting(void)
{
    CU_ASSERT_EQUAL_FATAL(use_host("hello = { greeting = \"Howdy\"; };"), SM_OK);
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    CU_ASSERT_NOT_EQUAL_FATAL(alice, 0);

    json_t *reply = sm_testhost_call(th, alice, "hello", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(reply, "type")), "response");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(reply, "action")), "hello");
    CU_ASSERT_STRING_EQUAL(greeting_of(reply), "Howdy, alice!");
    CU_ASSERT_EQUAL(count_of(reply), 1);
    json_decref(reply);
}

static void hello_counts_each_user_separately(void)
{
    CU_ASSERT_EQUAL_FATAL(use_host("hello = { greeting = \"Hi\"; };"), SM_OK);
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id bob = sm_testhost_connect_user(th, "bob", 2);
    CU_ASSERT_EQUAL(greet(alice), 1);
    CU_ASSERT_EQUAL(greet(alice), 2);
    CU_ASSERT_EQUAL(greet(bob), 1);
    CU_ASSERT_EQUAL(greet(alice), 3);
    /* The count is the user's, not the session's. */
    sm_session_id alice_again = sm_testhost_connect_user(th, "alice", 1);
    CU_ASSERT_EQUAL(greet(alice_again), 4);
    int64_t stored = 0;
    CU_ASSERT_EQUAL(sm_testhost_query_int(
                        th, "SELECT count FROM hello_counts WHERE username = 'bob'", &stored),
                    SM_OK);
    CU_ASSERT_EQUAL(stored, 1);
}

static void hello_count_ignores_ascii_case_of_username(void)
{
    CU_ASSERT_EQUAL_FATAL(use_host(NULL), SM_OK);
    sm_session_id lower = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id upper = sm_testhost_connect_user(th, "ALICE", 1);
    CU_ASSERT_EQUAL(greet(lower), 1);
    json_t *reply = sm_testhost_call(th, upper, "hello", NULL);
    CU_ASSERT_STRING_EQUAL(greeting_of(reply), "Hello, ALICE!"); /* as the session shows it */
    CU_ASSERT_EQUAL(count_of(reply), 2);
    json_decref(reply);
}

static void hello_needs_login(void)
{
    CU_ASSERT_EQUAL_FATAL(use_host(NULL), SM_OK);
    sm_session_id anonymous = sm_testhost_connect(th, NULL);
    json_t *reply = sm_testhost_call(th, anonymous, "hello", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(reply, "type")), "error");
    json_t *payload = json_object_get(reply, "payload");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(payload, "code")), 1002);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload, "command")), "hello");
    json_decref(reply);
    int64_t rows = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT count(*) FROM hello_counts", &rows), SM_OK);
    CU_ASSERT_EQUAL(rows, 0);
}

static void hello_greets_with_hello_when_section_is_absent(void)
{
    /* A second host: use_host frees the first one before creating it. */
    CU_ASSERT_EQUAL_FATAL(use_host("log = { level = \"warning\"; };"), SM_OK);
    sm_session_id carol = sm_testhost_connect_user(th, "carol", 3);
    json_t *reply = sm_testhost_call(th, carol, "hello", NULL);
    CU_ASSERT_STRING_EQUAL(greeting_of(reply), "Hello, carol!");
    CU_ASSERT_EQUAL(count_of(reply), 1);
    json_decref(reply);
}

static void hello_refuses_greeting_outside_1_to_64_bytes(void)
{
    CU_ASSERT_EQUAL(use_host("hello = { greeting = \"\"; };"), SM_ERROR);
    CU_ASSERT_EQUAL(use_host("hello = { greeting = "
                             "\"12345678901234567890123456789012345678901234567890123456789012345\"; };"),
                    SM_ERROR);
    CU_ASSERT_EQUAL(use_host("hello = { greeting = 5; };"), SM_ERROR);
    CU_ASSERT_EQUAL(use_host("hello = { greeting = "
                             "\"1234567890123456789012345678901234567890123456789012345678901234\"; };"),
                    SM_OK);
}

/* SIGHUP: the new greeting holds from the next command; a bad one is
 * refused and the old one stays. */
static void hello_takes_a_new_greeting_on_reload(void)
{
    CU_ASSERT_EQUAL_FATAL(use_host("hello = { greeting = \"Howdy\"; };"), SM_OK);
    sm_session_id dave = sm_testhost_connect_user(th, "dave", 4);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "hello = { greeting = \"Ahoy\"; };"), SM_OK);
    json_t *reply = sm_testhost_call(th, dave, "hello", NULL);
    CU_ASSERT_STRING_EQUAL(greeting_of(reply), "Ahoy, dave!");
    json_decref(reply);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "hello = { greeting = \"\"; };"), SM_ERROR);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "hello = { greting = \"Hi\"; };"), SM_ERROR);
    reply = sm_testhost_call(th, dave, "hello", NULL);
    CU_ASSERT_STRING_EQUAL(greeting_of(reply), "Ahoy, dave!");
    json_decref(reply);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(hello_replies_with_configured_greeting),
        SM_TEST(hello_takes_a_new_greeting_on_reload),
        SM_TEST(hello_counts_each_user_separately),
        SM_TEST(hello_count_ignores_ascii_case_of_username),
        SM_TEST(hello_needs_login),
        SM_TEST(hello_greets_with_hello_when_section_is_absent),
        SM_TEST(hello_refuses_greeting_outside_1_to_64_bytes),
        SM_TEST_END,
    };
    return sm_test_run("hello", tests, NULL, cleanup);
}
