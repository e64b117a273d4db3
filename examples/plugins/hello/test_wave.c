/* The wave plugin's suite on the SafeMessenger test host: events recorded
 * per session, the fake clock for its timer, worker jobs run on demand.
 * WAVE_SO is the path of the built wave.so (CMakeLists.txt passes it). */
#include <string.h>

#include <safemessenger/testhost.h>
#include <safemessenger/testhost_suite.h>

#ifndef WAVE_SO
#error "WAVE_SO must name the built wave.so"
#endif

static sm_testhost *th;

static int setup(void)
{
    if (sm_testhost_new("wave = { tick_seconds = 30; };", &th) != SM_OK)
        return -1;
    if (sm_testhost_load(th, WAVE_SO, "wave") != SM_OK) {
        sm_testhost_free(th); /* CUnit runs no cleanup after a failed init */
        th = NULL;
        return -1;
    }
    return 0;
}

static int cleanup(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

static const char *field(const json_t *message, const char *key)
{
    return json_string_value(json_object_get(json_object_get(message, "payload"), key));
}

static long long number(const json_t *message, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(message, "payload"), key));
}

static void wave_login_announces_arrival_to_the_lobby(void)
{
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id bob = sm_testhost_connect_user(th, "bob", 2);
    json_t *ev = sm_testhost_next_event(th, alice, "wave_arrived");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(field(ev, "username"), "bob");
    json_decref(ev);
    CU_ASSERT_PTR_NULL(sm_testhost_next_event(th, bob, "wave_arrived")); /* not to himself */
    sm_testhost_disconnect(th, alice);
    sm_testhost_disconnect(th, bob);
}

static void wave_reaches_the_others_after_the_reply(void)
{
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id bob = sm_testhost_connect_user(th, "bob", 2);
    sm_session_id anonymous = sm_testhost_connect(th, NULL);
    sm_testhost_clear(th);

    json_t *reply = sm_testhost_call(th, bob, "wave", NULL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(reply, "type")), "response");
    CU_ASSERT_EQUAL(number(reply, "seen_by"), 1);
    json_decref(reply);
    json_t *ev = sm_testhost_next(th, alice);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ev, "action")), "waved");
    CU_ASSERT_STRING_EQUAL(field(ev, "from"), "bob");
    json_decref(ev);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, bob), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, anonymous), 0); /* not logged in: not in the lobby */

    reply = sm_testhost_call(th, anonymous, "wave", NULL);
    CU_ASSERT_EQUAL(number(reply, "code"), 1002);
    json_decref(reply);
    sm_testhost_disconnect(th, alice);
    sm_testhost_disconnect(th, bob);
    sm_testhost_disconnect(th, anonymous);
}

static void wave_logout_leaves_the_lobby(void)
{
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id bob = sm_testhost_connect_user(th, "bob", 2);
    sm_testhost_disconnect(th, alice);
    json_t *reply = sm_testhost_call(th, bob, "wave", NULL);
    CU_ASSERT_EQUAL(number(reply, "seen_by"), 0);
    json_decref(reply);
    sm_testhost_disconnect(th, bob);
}

static void wave_ticks_to_the_lobby_every_interval(void)
{
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id bob = sm_testhost_connect_user(th, "bob", 2);
    sm_testhost_clear(th);
    sm_testhost_advance(th, 30);
    json_t *ev = sm_testhost_next_event(th, alice, "wave_tick");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(number(ev, "online"), 2);
    json_decref(ev);
    ev = sm_testhost_next_event(th, bob, "wave_tick");
    CU_ASSERT_PTR_NOT_NULL(ev);
    json_decref(ev);
    sm_testhost_advance(th, 30);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, alice), 1);
    sm_testhost_disconnect(th, alice);
    sm_testhost_disconnect(th, bob);
}

static void shout_replies_from_the_worker(void)
{
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 1);
    sm_testhost_clear(th);
    uint64_t nonce = sm_testhost_send(th, alice, "shout", "{\"text\": \"hey there 1\"}");
    CU_ASSERT_NOT_EQUAL_FATAL(nonce, 0);
    CU_ASSERT_PTR_NULL(sm_testhost_reply(th, alice, nonce)); /* deferred: not yet */
    sm_testhost_run_workers(th);
    json_t *reply = sm_testhost_reply(th, alice, nonce);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_STRING_EQUAL(field(reply, "text"), "HEY THERE 1");
    json_decref(reply);

    reply = sm_testhost_call(th, alice, "shout", "{\"text\": \"\"}");
    CU_ASSERT_EQUAL(number(reply, "code"), 1004);
    json_decref(reply);
    sm_testhost_disconnect(th, alice);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(wave_login_announces_arrival_to_the_lobby),
        SM_TEST(wave_reaches_the_others_after_the_reply),
        SM_TEST(wave_logout_leaves_the_lobby),
        SM_TEST(wave_ticks_to_the_lobby_every_interval),
        SM_TEST(shout_replies_from_the_worker),
        SM_TEST_END,
    };
    return sm_test_run("wave", tests, setup, cleanup);
}
