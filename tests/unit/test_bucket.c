/* core/bucket: the token bucket behind the command, byte and room fan-out
 * limits: refill up to the burst, a refused take costs nothing, a cost
 * above the burst passes from a full bucket and leaves a debt. */
#include "bucket.h"
#include "safemessenger/testhost_suite.h"

static void bucket_takes_until_empty_then_says_how_long_to_wait(void)
{
    bucket b;
    bucket_init(&b, 1000, 0);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 600, 0), 0, 1e-12);
    bucket_take(&b, 600);
    /* 400 left; 600 more needs 200 at 100/s. */
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 600, 0), 2.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 600, 1.5), 0.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 600, 2.0), 0, 1e-12);
}

static void bucket_refills_no_higher_than_the_burst(void)
{
    bucket b;
    bucket_init(&b, 1000, 0);
    bucket_take(&b, 1000);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 1000, 3600), 0, 1e-12);
    bucket_take(&b, 1000);
    /* An hour of refill did not bank more than one burst. */
    CU_ASSERT(bucket_wait(&b, 100, 1000, 1, 3600) > 0);
}

static void cost_above_the_burst_passes_from_full_and_leaves_a_debt(void)
{
    bucket b;
    bucket_init(&b, 1000, 0);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 5000, 0), 0, 1e-12);
    bucket_take(&b, 5000);
    /* -4000: the bucket is full again after 50 s, not 10. */
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 5000, 10), 40.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(bucket_wait(&b, 100, 1000, 5000, 50), 0, 1e-12);
}

static void retry_after_is_rounded_up_to_the_millisecond(void)
{
    CU_ASSERT_DOUBLE_EQUAL(bucket_retry_after(0.0001), 0.001, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(bucket_retry_after(1.2341), 1.235, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(bucket_retry_after(2.0), 2.0, 1e-12);
}

static const sm_test_case cases[] = {
    SM_TEST(bucket_takes_until_empty_then_says_how_long_to_wait),
    SM_TEST(bucket_refills_no_higher_than_the_burst),
    SM_TEST(cost_above_the_burst_passes_from_full_and_leaves_a_debt),
    SM_TEST(retry_after_is_rounded_up_to_the_millisecond),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("bucket", cases, NULL, NULL);
}
