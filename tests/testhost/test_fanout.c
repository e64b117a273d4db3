/* The host table's topic_fanout_take under the test host: a topic's
 * fan-out budget (payload bytes x members) on the host's fake clock,
 * refused charges cost nothing, topics are independent. */
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

static sm_testhost *th;

/* 1,000 bytes a second, burst 4,096. */
#define CONFIG "limits = { room_fanout_bytes_per_second = 1000; room_fanout_burst = 4096; };"

/* The status of a fanout charge; *retry_after receives the reply's value. */
static long long fanout(sm_session_id s, const char *topic, long long bytes, double *retry_after)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"op\":\"fanout\",\"topic\":\"%s\",\"bytes\":%lld}",
             topic, bytes);
    json_t *r = sm_testhost_call(th, s, "topic", payload);
    const json_t *p = json_object_get(r, "payload");
    long long status = json_integer_value(json_object_get(p, "status"));
    if (retry_after)
        *retry_after = json_number_value(json_object_get(p, "retry_after"));
    json_decref(r);
    return status;
}

static void join(sm_session_id s, const char *topic)
{
    char payload[128];
    snprintf(payload, sizeof payload, "{\"op\":\"join\",\"topic\":\"%s\"}", topic);
    json_decref(sm_testhost_call(th, s, "topic", payload));
}

static void fanout_budget_charges_bytes_times_members_on_the_fake_clock(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(CONFIG, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, SM_TEST_PLUGIN_DIR "/testcmds.so", "testcmds"),
                          SM_OK);
    sm_session_id a = sm_testhost_connect_user(th, "alice", 1);
    sm_session_id b = sm_testhost_connect_user(th, "bob", 2);
    join(a, "room:x");
    join(b, "room:x");
    double retry = -1;
    /* 1,500 x 2 members = 3,000 of 4,096. */
    CU_ASSERT_EQUAL(fanout(a, "room:x", 1500, &retry), SM_OK);
    /* 3,000 more does not fit the 1,096 left: 1.904 s to wait. */
    CU_ASSERT_EQUAL(fanout(a, "room:x", 1500, &retry), SM_EBUSY);
    CU_ASSERT_DOUBLE_EQUAL(retry, 1.904, 1e-9);
    /* Refused charges cost nothing: the wait has not grown. */
    CU_ASSERT_EQUAL(fanout(b, "room:x", 1500, &retry), SM_EBUSY);
    CU_ASSERT_DOUBLE_EQUAL(retry, 1.904, 1e-9);
    /* Another topic has its own budget; an empty one costs nothing. */
    join(a, "room:y");
    CU_ASSERT_EQUAL(fanout(a, "room:y", 4000, &retry), SM_OK);
    CU_ASSERT_EQUAL(fanout(a, "room:none", 1 << 30, &retry), SM_OK);
    /* The fake clock refills it. */
    sm_testhost_advance(th, 1.903);
    CU_ASSERT_EQUAL(fanout(a, "room:x", 1500, &retry), SM_EBUSY);
    sm_testhost_advance(th, 0.001);
    CU_ASSERT_EQUAL(fanout(a, "room:x", 1500, &retry), SM_OK);
    sm_testhost_free(th);
}

static void fanout_above_the_burst_passes_from_full_and_leaves_a_debt(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(CONFIG, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, SM_TEST_PLUGIN_DIR "/testcmds.so", "testcmds"),
                          SM_OK);
    sm_session_id a = sm_testhost_connect_user(th, "alice", 1);
    join(a, "room:x");
    double retry = -1;
    /* Larger than the burst: passes once, from a full bucket... */
    CU_ASSERT_EQUAL(fanout(a, "room:x", 10000, &retry), SM_OK);
    /* ...and its whole price is paid back before the next: -5,904, so a
     * 1-byte charge waits 5.905 s. */
    CU_ASSERT_EQUAL(fanout(a, "room:x", 1, &retry), SM_EBUSY);
    CU_ASSERT_DOUBLE_EQUAL(retry, 5.905, 1e-9);
    sm_testhost_free(th);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(fanout_budget_charges_bytes_times_members_on_the_fake_clock),
        SM_TEST(fanout_above_the_burst_passes_from_full_and_leaves_a_debt),
        SM_TEST_END,
    };
    return sm_test_run("fanout", cases, NULL, NULL);
}
