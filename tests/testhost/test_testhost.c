/* The plugin test host, driven as a plugin author would: the testcmds
 * plugin, fake sessions, replies and events, workers, the fake clock. */
#include <string.h>
#include <time.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define TESTCMDS SM_TEST_PLUGIN_DIR "/testcmds.so"

static sm_testhost *th;

static int setup(void)
{
    if (sm_testhost_new("limits = { command_burst = 1000; };\n", &th) != SM_OK)
        return -1;
    return sm_testhost_load(th, TESTCMDS, "testcmds") == SM_OK ? 0 : -1;
}

static int teardown(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

static const char *str(const json_t *m, const char *key)
{
    return json_string_value(json_object_get(m, key));
}

static long long code_of(const json_t *m)
{
    return json_integer_value(json_object_get(json_object_get(m, "payload"), "code"));
}

static void testhost_call_returns_the_reply(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_NOT_EQUAL_FATAL(s, 0);
    json_t *r = sm_testhost_call(th, s, "echo", "{\"x\": 1}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "type"), "response");
    CU_ASSERT_STRING_EQUAL(str(r, "action"), "echo");
    CU_ASSERT_STRING_EQUAL(str(r, "reply_to"), "1");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(r, "payload"), "x")), 1);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s), 0);
    sm_testhost_disconnect(th, s);
}

/* Commands take the server's receive path (sealed, opened, then checked
 * as after decryption), not a shortcut into dispatch: key_exchange is
 * refused there as "already complete", which dispatch alone knows nothing
 * of. */
static void testhost_commands_take_the_servers_receive_path(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_NOT_EQUAL_FATAL(s, 0);
    json_t *r = sm_testhost_call(th, s, "key_exchange", "{}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(code_of(r), 1003);
    CU_ASSERT_STRING_EQUAL(str(json_object_get(r, "payload"), "message"),
                           "the handshake is already complete");
    CU_ASSERT_STRING_EQUAL(str(r, "reply_to"), "1");
    json_decref(r);
    /* The nonces go on from there, as the envelope counts them. */
    r = sm_testhost_call(th, s, "echo", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "reply_to"), "2");
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

static void testhost_applies_the_core_checks(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    json_t *r = sm_testhost_call(th, s, "whoami", NULL);
    CU_ASSERT_EQUAL(code_of(r), 1002);
    json_decref(r);
    r = sm_testhost_call(th, s, "nope", NULL);
    CU_ASSERT_EQUAL(code_of(r), 1003);
    json_decref(r);
    r = sm_testhost_call(th, s, "typed", "{\"name\": 1}");
    CU_ASSERT_EQUAL(code_of(r), 1004);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_send(th, s, "echo", "[1]"), 0);   /* not an object */
    CU_ASSERT_EQUAL(sm_testhost_send(th, s, "echo", "{\"a\":1,\"a\":2}"), 0); /* duplicate */
    sm_testhost_disconnect(th, s);
}

static void testhost_connect_user_is_logged_in(void)
{
    sm_session_id s = sm_testhost_connect_user(th, "Alice", 7);
    CU_ASSERT_STRING_EQUAL(sm_testhost_username(th, s), "Alice");
    json_t *r = sm_testhost_call(th, s, "whoami", NULL);
    CU_ASSERT_STRING_EQUAL(str(json_object_get(r, "payload"), "username"), "Alice");
    json_decref(r);
    sm_testhost_disconnect(th, s);
    CU_ASSERT_PTR_NULL(sm_testhost_username(th, s));
}

static void testhost_workers_run_on_demand(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    uint64_t n = sm_testhost_send(th, s, "deferred_echo", "{\"k\":\"v\"}");
    CU_ASSERT_NOT_EQUAL_FATAL(n, 0);
    CU_ASSERT_PTR_NULL(sm_testhost_reply(th, s, n));
    sm_testhost_run_workers(th);
    json_t *r = sm_testhost_reply(th, s, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(json_object_get(r, "payload"), "k"), "v");
    json_decref(r);
    sm_testhost_disconnect(th, s);
}

static void testhost_records_events_after_their_reply(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    uint64_t n = sm_testhost_send(th, s, "emit", NULL);
    json_t *first = sm_testhost_next(th, s), *second = sm_testhost_next(th, s);
    CU_ASSERT_STRING_EQUAL(str(first, "type"), "response");
    CU_ASSERT_STRING_EQUAL(str(first, "reply_to"), "1");
    CU_ASSERT_STRING_EQUAL(str(second, "type"), "event");
    CU_ASSERT_STRING_EQUAL(str(second, "action"), "emitted");
    CU_ASSERT_PTR_NULL(json_object_get(second, "reply_to"));
    CU_ASSERT_EQUAL(n, 1);
    json_decref(first);
    json_decref(second);
    sm_testhost_disconnect(th, s);
}

static void testhost_topics_reach_other_sessions(void)
{
    sm_session_id a = sm_testhost_connect(th, NULL), b = sm_testhost_connect(th, NULL);
    json_decref(sm_testhost_call(th, a, "topic", "{\"op\":\"join\",\"topic\":\"t\"}"));
    json_decref(sm_testhost_call(th, b, "topic", "{\"op\":\"join\",\"topic\":\"t\"}"));
    json_decref(sm_testhost_call(th, a, "topic", "{\"op\":\"publish\",\"topic\":\"t\",\"body\":5}"));
    json_t *ev = sm_testhost_next_event(th, b, "topic_event");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(ev, "payload"), "body")), 5);
    json_decref(ev);
    ev = sm_testhost_next_event(th, a, "topic_event"); /* publisher included */
    CU_ASSERT_PTR_NOT_NULL(ev);
    json_decref(ev);
    sm_testhost_disconnect(th, a);
    sm_testhost_disconnect(th, b);
}

/* Two sessions of alice, one of Bob, one not logged in: alice's
 * publish_others reaches Bob and the anonymous member, none of alice's
 * (her name compared without regard to case). */
static void testhost_topic_publish_except_user_skips_the_users_sessions(void)
{
    sm_session_id a1 = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id a2 = sm_testhost_connect_user(th, "ALICE", 1);
    sm_session_id b = sm_testhost_connect_user(th, "Bob", 2);
    sm_session_id anon = sm_testhost_connect(th, NULL);
    sm_session_id all[] = {a1, a2, b, anon};
    for (size_t i = 0; i < 4; i++)
        json_decref(sm_testhost_call(th, all[i], "topic", "{\"op\":\"join\",\"topic\":\"x\"}"));
    json_t *r = sm_testhost_call(th, a1, "topic",
                                 "{\"op\":\"publish_others\",\"topic\":\"x\",\"body\":7}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(r, "payload"), "status")),
                    SM_OK);
    json_decref(r);
    for (size_t i = 0; i < 4; i++) {
        json_t *ev = sm_testhost_next_event(th, all[i], "topic_event");
        int expected = all[i] == b || all[i] == anon;
        CU_ASSERT_EQUAL(ev != NULL, expected);
        json_decref(ev);
        sm_testhost_disconnect(th, all[i]);
    }
}

static void testhost_fake_clock_fires_timers(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    double t0 = sm_testhost_now(th);
    json_decref(sm_testhost_call(th, s, "timer", "{\"after\": 30}"));
    sm_testhost_advance(th, 29.9);
    CU_ASSERT_PTR_NULL(sm_testhost_next_event(th, s, "tick"));
    sm_testhost_advance(th, 0.2);
    json_t *ev = sm_testhost_next_event(th, s, "tick");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    /* The clock stands at the timer's due time while it runs. */
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(json_object_get(ev, "payload"), "at")),
                           t0 + 30, 1e-6);
    json_decref(ev);
    CU_ASSERT_DOUBLE_EQUAL(sm_testhost_now(th), t0 + 30.1, 1e-6);
    sm_testhost_disconnect(th, s);
}

static void testhost_reports_sessions_the_core_closed(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    json_t *r = sm_testhost_call(th, s, "close_me", "{\"code\": 4001}");
    CU_ASSERT_STRING_EQUAL(str(r, "type"), "response");
    json_decref(r);
    int code = 0;
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, &code), 1);
    CU_ASSERT_EQUAL(code, 4001);
    CU_ASSERT_EQUAL(sm_testhost_send(th, s, "echo", NULL), 0);
    CU_ASSERT_EQUAL(sm_testhost_closed(th, 999999, NULL), -1);
}

static void testhost_delivers_core_events_to_plugins(void)
{
    json_t *r;
    sm_session_id probe = sm_testhost_connect(th, NULL);
    r = sm_testhost_call(th, probe, "stats", NULL);
    long long opened = json_integer_value(json_object_get(json_object_get(r, "payload"), "opened"));
    long long out0 = json_integer_value(json_object_get(json_object_get(r, "payload"), "logged_out"));
    json_decref(r);
    sm_session_id u = sm_testhost_connect_user(th, "bob", 2);
    sm_testhost_disconnect(th, u);
    r = sm_testhost_call(th, probe, "stats", NULL);
    json_t *p = json_object_get(r, "payload");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "opened")), opened + 1);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "logged_out")), out0 + 1);
    json_decref(r);
    sm_testhost_disconnect(th, probe);
}

static void testhost_storage_is_queryable(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    json_decref(sm_testhost_call(th, s, "kv_put", "{\"key\":\"a\",\"value\":\"1\"}"));
    json_decref(sm_testhost_call(th, s, "kv_put", "{\"key\":\"b\",\"value\":\"2\"}"));
    /* A second put of a key replaces its value (testcmds' upsert). */
    json_decref(sm_testhost_call(th, s, "kv_put", "{\"key\":\"a\",\"value\":\"3\"}"));
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT count(*) FROM testcmds_kv", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT v FROM testcmds_kv WHERE k = 'a'", &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_EQUAL(sm_testhost_exec(th, "DELETE FROM testcmds_kv"), SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT count(*) FROM testcmds_kv", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 0);
    sm_testhost_disconnect(th, s);
}

static void testhost_is_one_at_a_time(void)
{
    sm_testhost *second = NULL;
    CU_ASSERT_EQUAL(sm_testhost_new(NULL, &second), SM_ESTATE);
    CU_ASSERT_PTR_NULL(second);
}

/* Sends `echo` until the first refusal; the number of replies before it,
 * with the refusal's payload checked: 1008 "rate limited", retry_after. */
static int echoes_until_limited(sm_session_id s, int most)
{
    for (int i = 0; i < most; i++) {
        json_t *r = sm_testhost_call(th, s, "echo", NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        if (strcmp(str(r, "type"), "error") == 0) {
            json_t *p = json_object_get(r, "payload");
            CU_ASSERT_EQUAL(code_of(r), 1008);
            CU_ASSERT_STRING_EQUAL(str(p, "message"), "rate limited");
            CU_ASSERT(json_number_value(json_object_get(p, "retry_after")) > 0);
            json_decref(r);
            return i;
        }
        json_decref(r);
    }
    return most;
}

/* docs/PLUGINS.md section 13: the default command limit (bursts of 40, 20
 * per second) applies on the fake clock, which refills it only when the
 * suite advances it, never with the time the suite takes. */
static void testhost_command_limit_refills_only_on_the_fake_clock(void)
{
    sm_testhost_free(th); /* one host at a time: this one has the defaults */
    th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, TESTCMDS, "testcmds"), SM_OK);
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_NOT_EQUAL_FATAL(s, 0);
    CU_ASSERT_EQUAL(echoes_until_limited(s, 100), 40);
    /* Real time refills nothing: 200 ms would be 4 commands on the wall clock. */
    struct timespec pause = {0, 200000000};
    nanosleep(&pause, NULL);
    CU_ASSERT_EQUAL(echoes_until_limited(s, 100), 0);
    sm_testhost_advance(th, 1.0);
    CU_ASSERT_EQUAL(echoes_until_limited(s, 100), 20);
    sm_testhost_disconnect(th, s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(testhost_call_returns_the_reply),
        SM_TEST(testhost_applies_the_core_checks),
        SM_TEST(testhost_commands_take_the_servers_receive_path),
        SM_TEST(testhost_connect_user_is_logged_in),
        SM_TEST(testhost_workers_run_on_demand),
        SM_TEST(testhost_records_events_after_their_reply),
        SM_TEST(testhost_topics_reach_other_sessions),
        SM_TEST(testhost_topic_publish_except_user_skips_the_users_sessions),
        SM_TEST(testhost_fake_clock_fires_timers),
        SM_TEST(testhost_reports_sessions_the_core_closed),
        SM_TEST(testhost_delivers_core_events_to_plugins),
        SM_TEST(testhost_storage_is_queryable),
        SM_TEST(testhost_is_one_at_a_time),
        SM_TEST(testhost_command_limit_refills_only_on_the_fake_clock), /* last: own host */
        SM_TEST_END,
    };
    return sm_test_run("testhost", cases, setup, teardown);
}
