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

static void hist_merge_adds_every_sample(void)
{
    bench_hist *a = new_hist(), *b = new_hist(), *all = new_hist();
    for (uint64_t v = 1; v <= 1000; v++) {
        hist_add(v % 3 ? a : b, v * 1000);
        hist_add(all, v * 1000);
    }
    hist_merge(a, b);
    CU_ASSERT_EQUAL(a->n, all->n);
    CU_ASSERT_EQUAL(a->max, all->max);
    CU_ASSERT_DOUBLE_EQUAL(a->sum, all->sum, 1e-6);
    for (double p = 1; p <= 100; p += 7)
        CU_ASSERT_EQUAL(hist_percentile(a, p), hist_percentile(all, p));
    free(a);
    free(b);
    free(all);
}

static int64_t offset_now;
static int fresh_calls;

static int64_t fresh_offset(void)
{
    fresh_calls++;
    return offset_now;
}

static void arrival_converts_with_the_offset(void)
{
    int64_t offset = 1000;
    offset_now = 1000;
    fresh_calls = 0;
    CU_ASSERT_EQUAL(bench_arrival_mono(4000, &offset, 5000, fresh_offset), 3000);
    CU_ASSERT_EQUAL(fresh_calls, 0);
    CU_ASSERT_EQUAL(offset, 1000);
}

/* A VM resumed from a snapshot stepped the realtime clock 3.7 s forward
 * between two refreshes of the offset: every arrival of the next 100 ms
 * came out seconds late (p99 3,690 ms against 62.9 ms taken). */
static void arrival_after_forward_step_takes_offset_again(void)
{
    int64_t offset = 1000;    /* taken before the step */
    offset_now = 4701000;     /* realtime 4.7 ms further ahead now */
    fresh_calls = 0;
    /* received at monotonic 5,000,000, i.e. realtime 9,701,000 */
    CU_ASSERT_EQUAL(bench_arrival_mono(9701000, &offset, 6000000, fresh_offset), 5000000);
    CU_ASSERT_EQUAL(fresh_calls, 1);
    CU_ASSERT_EQUAL(offset, 4701000);
    /* and the next conversion uses the new offset at once */
    CU_ASSERT_EQUAL(bench_arrival_mono(9702000, &offset, 6000000, fresh_offset), 5001000);
    CU_ASSERT_EQUAL(fresh_calls, 1);
}

static void arrival_that_cannot_be_placed_is_unknown(void)
{
    int64_t offset = 1000;
    offset_now = 1000;   /* the fresh offset agrees: not a step */
    fresh_calls = 0;
    CU_ASSERT_EQUAL(bench_arrival_mono(9000, &offset, 5000, fresh_offset), 0);
    CU_ASSERT_EQUAL(fresh_calls, 1);
    CU_ASSERT_EQUAL(bench_arrival_mono(500, &offset, 5000, fresh_offset), 0);
    CU_ASSERT_EQUAL(bench_arrival_mono(4000, &offset, 5000, NULL), 3000);
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
        SM_TEST(hist_merge_adds_every_sample),
        SM_TEST(arrival_converts_with_the_offset),
        SM_TEST(arrival_after_forward_step_takes_offset_again),
        SM_TEST(arrival_that_cannot_be_placed_is_unknown),
        SM_TEST_END,
    };
    return sm_test_run("bench_stats", cases, NULL, NULL);
}
