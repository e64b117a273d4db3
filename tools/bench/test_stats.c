/* The bench's latency histogram: percentiles are nearest-rank and within
 * the documented 1/64 resolution, the maximum and the mean are exact. */
#include "bench.h"
#include "safemessenger/testhost_suite.h"

#include <stdlib.h>

static bench_hist *new_hist(void)
{
    bench_hist *h = malloc(sizeof *h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    hist_reset(h);
    return h;
}

static void hist_empty_reports_zero(void)
{
    bench_hist *h = new_hist();
    CU_ASSERT_EQUAL(hist_percentile(h, 50), 0);
    CU_ASSERT_EQUAL(hist_percentile(h, 100), 0);
    CU_ASSERT_EQUAL(h->n, 0);
    CU_ASSERT_DOUBLE_EQUAL(hist_mean(h), 0.0, 1e-12);
    free(h);
}

static void hist_small_values_are_exact(void)
{
    bench_hist *h = new_hist();
    for (uint64_t v = 1; v <= 10; v++)
        hist_add(h, v);
    CU_ASSERT_EQUAL(hist_percentile(h, 50), 5);    /* rank ceil(5.0) = 5 */
    CU_ASSERT_EQUAL(hist_percentile(h, 51), 6);    /* rank ceil(5.1) = 6 */
    CU_ASSERT_EQUAL(hist_percentile(h, 99), 10);
    CU_ASSERT_EQUAL(hist_percentile(h, 100), 10);
    CU_ASSERT_EQUAL(h->max, 10);
    CU_ASSERT_DOUBLE_EQUAL(hist_mean(h), 5.5, 1e-12);
    free(h);
}

static void hist_percentile_within_resolution(void)
{
    bench_hist *h = new_hist();
    /* 1..100000 ms in ns: the true p50 is 50000 ms, p99 99000 ms. */
    for (uint64_t v = 1; v <= 100000; v++)
        hist_add(h, v * 1000000u);
    uint64_t p50 = hist_percentile(h, 50), p99 = hist_percentile(h, 99);
    CU_ASSERT(p50 >= 50000ull * 1000000u);
    CU_ASSERT(p50 <= 50000ull * 1000000u + 50000ull * 1000000u / 64);
    CU_ASSERT(p99 >= 99000ull * 1000000u);
    CU_ASSERT(p99 <= 99000ull * 1000000u + 99000ull * 1000000u / 64);
    CU_ASSERT_EQUAL(hist_percentile(h, 100), 100000ull * 1000000u);
    CU_ASSERT_EQUAL(h->n, 100000);
    free(h);
}

static void hist_percentile_never_exceeds_max(void)
{
    bench_hist *h = new_hist();
    hist_add(h, 1000001);   /* inside a bucket 16384 wide */
    CU_ASSERT_EQUAL(hist_percentile(h, 50), 1000001);
    CU_ASSERT_EQUAL(hist_percentile(h, 99), 1000001);
    free(h);
}

static void hist_outlier_sets_max_not_p99(void)
{
    bench_hist *h = new_hist();
    for (int i = 0; i < 999; i++)
        hist_add(h, 1000);
    hist_add(h, 5000000000ull);
    CU_ASSERT(hist_percentile(h, 99) >= 1000);
    CU_ASSERT(hist_percentile(h, 99) <= 1000 + 1000 / 64);
    CU_ASSERT_EQUAL(h->max, 5000000000ull);
    CU_ASSERT_EQUAL(hist_percentile(h, 100), 5000000000ull);
    free(h);
}

static void hist_handles_largest_value(void)
{
    bench_hist *h = new_hist();
    hist_add(h, UINT64_MAX);
    CU_ASSERT_EQUAL(hist_percentile(h, 50), UINT64_MAX);
    free(h);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(hist_empty_reports_zero),
        SM_TEST(hist_small_values_are_exact),
        SM_TEST(hist_percentile_within_resolution),
        SM_TEST(hist_percentile_never_exceeds_max),
        SM_TEST(hist_outlier_sets_max_not_p99),
        SM_TEST(hist_handles_largest_value),
        SM_TEST_END,
    };
    return sm_test_run("bench_stats", cases, NULL, NULL);
}
