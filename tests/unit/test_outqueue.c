/* The send queue's accounting (core/outqueue.c): every unsent byte counts,
 * the frame lws still holds included, no frame is exempt from the bounds,
 * back-pressure at half the byte bound, the stall clock, and the payload
 * limit. */
#include <string.h>

#include "outqueue.h"
#include "safemessenger/plugin.h"
#include "safemessenger/testhost_suite.h"

static char data[8192];

static void push_ok(outqueue *q, size_t len, size_t max_bytes, size_t max_msgs, double now)
{
    CU_ASSERT_EQUAL_FATAL(outqueue_push(q, data, len, max_bytes, max_msgs, now), 0);
}

static void outqueue_first_frame_counts_against_the_byte_bound(void)
{
    outqueue q = {0};
    /* An empty queue is no exception: a frame over the bound is refused. */
    CU_ASSERT_EQUAL(outqueue_push(&q, data, 5000, 4096, 10, 0), SM_EBUSY);
    CU_ASSERT_EQUAL(q.count, 0);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 0);
    push_ok(&q, 4096, 4096, 10, 0);
    CU_ASSERT_EQUAL(outqueue_push(&q, data, 1, 4096, 10, 0), SM_EBUSY);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 4096);
    outqueue_clear(&q);
}

static void outqueue_frame_held_by_the_transport_stays_counted(void)
{
    outqueue q = {0};
    push_ok(&q, 3000, 8192, 10, 0);
    push_ok(&q, 2000, 8192, 10, 0);
    /* The first frame went to lws, which kept part of it. */
    outqueue_sent(&q, 1, 1.0);
    CU_ASSERT_EQUAL(q.count, 1);
    CU_ASSERT_EQUAL(q.bytes, 2000);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 5000);
    CU_ASSERT_EQUAL(outqueue_messages(&q), 2);
    /* 5000 + 3500 > 8192: refused although the queue alone would fit. */
    CU_ASSERT_EQUAL(outqueue_push(&q, data, 3500, 8192, 10, 1.0), SM_EBUSY);
    /* lws wrote it all out: it leaves the count. */
    outqueue_transport_drained(&q, 2.0);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 2000);
    CU_ASSERT_EQUAL(outqueue_messages(&q), 1);
    push_ok(&q, 3500, 8192, 10, 2.0);
    /* Written whole: nothing stays with the transport. */
    outqueue_sent(&q, 0, 3.0);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 3500);
    outqueue_clear(&q);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 0);
    CU_ASSERT_FALSE(outqueue_pending(&q));
}

static void outqueue_message_bound_counts_the_handed_off_frame(void)
{
    outqueue q = {0};
    push_ok(&q, 10, 8192, 2, 0);
    outqueue_sent(&q, 1, 0);
    push_ok(&q, 10, 8192, 2, 0);
    CU_ASSERT_EQUAL(outqueue_push(&q, data, 10, 8192, 2, 0), SM_EBUSY);
    outqueue_transport_drained(&q, 0);
    push_ok(&q, 10, 8192, 2, 0);
    outqueue_clear(&q);
}

static void outqueue_congested_at_half_the_byte_bound(void)
{
    outqueue q = {0};
    push_ok(&q, 2047, 4096, 10, 0);
    CU_ASSERT_FALSE(outqueue_congested(&q, 4096));
    push_ok(&q, 1, 4096, 10, 0);
    CU_ASSERT_TRUE(outqueue_congested(&q, 4096));
    /* Still congested while lws holds the frame. */
    outqueue_sent(&q, 1, 0);
    CU_ASSERT_TRUE(outqueue_congested(&q, 4096));
    outqueue_transport_drained(&q, 0);
    CU_ASSERT_FALSE(outqueue_congested(&q, 4096));
    outqueue_clear(&q);
}

static void outqueue_stalls_only_with_output_pending_and_none_taken(void)
{
    outqueue q = {0};
    CU_ASSERT_FALSE(outqueue_stalled(&q, 1000.0, 30.0));
    /* The clock starts when output becomes pending, not at the last
     * output of an idle session. */
    push_ok(&q, 100, 8192, 10, 100.0);
    CU_ASSERT_FALSE(outqueue_stalled(&q, 129.0, 30.0));
    CU_ASSERT_TRUE(outqueue_stalled(&q, 130.0, 30.0));
    push_ok(&q, 100, 8192, 10, 125.0); /* more queued is no progress */
    CU_ASSERT_TRUE(outqueue_stalled(&q, 130.0, 30.0));
    outqueue_sent(&q, 1, 131.0);
    CU_ASSERT_FALSE(outqueue_stalled(&q, 160.0, 30.0));
    CU_ASSERT_TRUE(outqueue_stalled(&q, 161.0, 30.0));
    /* Only the frame lws holds is left: still pending. */
    outqueue_sent(&q, 1, 161.5);
    CU_ASSERT_TRUE(outqueue_pending(&q));
    CU_ASSERT_TRUE(outqueue_stalled(&q, 191.5, 30.0));
    outqueue_transport_drained(&q, 192.0);
    CU_ASSERT_FALSE(outqueue_pending(&q));
    CU_ASSERT_FALSE(outqueue_stalled(&q, 1000.0, 30.0));
}

static void outqueue_payload_limit_is_a_quarter_of_the_bound_capped(void)
{
    CU_ASSERT_EQUAL(outqueue_payload_max(1048576), 262144);
    CU_ASSERT_EQUAL(outqueue_payload_max(65536), 16384);
    CU_ASSERT_EQUAL(outqueue_payload_max((size_t)1 << 30), OUTQUEUE_PAYLOAD_MAX);
    /* Sealed (base64, a third more, plus the envelope) it stays below the
     * 8 MiB every client must accept. */
    CU_ASSERT_TRUE(OUTQUEUE_PAYLOAD_MAX / 3 * 4 + 4096 < (size_t)8 << 20);
}

int main(void)
{
    memset(data, 'x', sizeof data);
    static const sm_test_case cases[] = {
        SM_TEST(outqueue_first_frame_counts_against_the_byte_bound),
        SM_TEST(outqueue_frame_held_by_the_transport_stays_counted),
        SM_TEST(outqueue_message_bound_counts_the_handed_off_frame),
        SM_TEST(outqueue_congested_at_half_the_byte_bound),
        SM_TEST(outqueue_stalls_only_with_output_pending_and_none_taken),
        SM_TEST(outqueue_payload_limit_is_a_quarter_of_the_bound_capped),
        SM_TEST_END,
    };
    return sm_test_run("outqueue", cases, NULL, NULL);
}
