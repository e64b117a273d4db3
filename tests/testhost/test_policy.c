/* The core's policy hook: policies run in load order and the first veto
 * wins; with no policy everything is allowed. */
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

static sm_testhost *th;

static long long verdict(sm_session_id s, const char *what, const char *to)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"what\":\"%s\",\"to\":\"%s\"}", what, to);
    json_t *r = sm_testhost_call(th, s, "check_policy", payload);
    long long v = json_integer_value(json_object_get(json_object_get(r, "payload"), "verdict"));
    json_decref(r);
    return v;
}

static void policy_allows_everything_without_policies(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, SM_TEST_PLUGIN_DIR "/testcmds.so", "testcmds"),
                          SM_OK);
    sm_session_id s = sm_testhost_connect_user(th, "alice", 1);
    CU_ASSERT_EQUAL(verdict(s, "private_message", "blocked"), SM_VERDICT_ALLOW);
    sm_testhost_free(th);
}

static void policy_first_veto_wins(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, SM_TEST_PLUGIN_DIR "/testcmds.so", "testcmds"),
                          SM_OK);
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_load(th, SM_TEST_PLUGIN_DIR "/policy_veto.so", "policy_veto"), SM_OK);
    sm_session_id s = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id spam = sm_testhost_connect_user(th, "spammer", 2);
    CU_ASSERT_EQUAL(verdict(s, "private_message", "bob"), SM_VERDICT_ALLOW);
    CU_ASSERT_EQUAL(verdict(s, "private_message", "denied"), SM_VERDICT_DENY);
    /* first drops, second would deny: the first veto wins */
    CU_ASSERT_EQUAL(verdict(s, "private_message", "blocked"), SM_VERDICT_DROP);
    CU_ASSERT_EQUAL(verdict(spam, "friend_request", "alice"), SM_VERDICT_DROP);
    CU_ASSERT_EQUAL(verdict(s, "friend_request", "alice"), SM_VERDICT_ALLOW);
    sm_testhost_free(th);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(policy_allows_everything_without_policies),
        SM_TEST(policy_first_veto_wins),
        SM_TEST_END,
    };
    return sm_test_run("policy", cases, NULL, NULL);
}
