/* core/metrics: the registry and its text exposition format (Prometheus
 * 0.0.4): exact text, label escaping, cumulative histogram buckets with
 * _sum and _count, bounded series, refused names, atomic counts from
 * several threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "safemessenger/testhost_suite.h"

static char *render(metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(metrics_render(m, &text, &len), 0);
    CU_ASSERT_EQUAL(strlen(text), len);
    return text;
}

static void counter_and_gauge_render_with_help_type_and_labels(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"action", "code", NULL};
    metric_family *c = metrics_family(m, METRIC_COUNTER, "sm_commands_total", "Commands.",
                                      labels, NULL, 0);
    metric_family *g = metrics_family(m, METRIC_GAUGE, "sm_depth", "Depth.", NULL, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    const char *login_ok[] = {"login", "0"}, *login_bad[] = {"login", "1001"};
    metric_add(metrics_series(c, login_ok), 2);
    metric_add(metrics_series(c, login_bad), 1);
    metric_add(metrics_series(c, login_ok), 1);
    metric_add(metrics_series(c, login_ok), -5); /* a counter never goes down */
    metric_set(metrics_series(g, NULL), 7);
    metric_add(metrics_series(g, NULL), -2.5);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series(c, login_ok)), 3, 0);
    char *text = render(m);
    CU_ASSERT_STRING_EQUAL(text,
                           "# HELP sm_commands_total Commands.\n"
                           "# TYPE sm_commands_total counter\n"
                           "sm_commands_total{action=\"login\",code=\"0\"} 3\n"
                           "sm_commands_total{action=\"login\",code=\"1001\"} 1\n"
                           "# HELP sm_depth Depth.\n"
                           "# TYPE sm_depth gauge\n"
                           "sm_depth 4.5\n");
    free(text);
    metrics_free(m);
}

static void label_values_and_help_are_escaped(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"v", NULL};
    metric_family *f = metrics_family(m, METRIC_GAUGE, "sm_x", "a \\ b\nc \"q\"", labels,
                                      NULL, 0);
    metric_set(metrics_series1(f, "back\\slash \"quote\"\nline"), 1);
    char *text = render(m);
    /* HELP escapes backslash and newline only; label values also quotes. */
    CU_ASSERT_STRING_EQUAL(text, "# HELP sm_x a \\\\ b\\nc \"q\"\n"
                                 "# TYPE sm_x gauge\n"
                                 "sm_x{v=\"back\\\\slash \\\"quote\\\"\\nline\"} 1\n");
    free(text);
    metrics_free(m);
}

static void histogram_buckets_are_cumulative_with_sum_and_count(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"action", NULL};
    static const double buckets[] = {0.1, 1, 2.5};
    metric_family *h = metrics_family(m, METRIC_HISTOGRAM, "sm_seconds", "Time.", labels,
                                      buckets, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    metric *s = metrics_series1(h, "ping");
    metric_observe(s, 0.05);
    metric_observe(s, 0.1); /* le is inclusive */
    metric_observe(s, 0.5);
    metric_observe(s, 3);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(s), 4, 0);
    char *text = render(m);
    CU_ASSERT_STRING_EQUAL(text, "# HELP sm_seconds Time.\n"
                                 "# TYPE sm_seconds histogram\n"
                                 "sm_seconds_bucket{action=\"ping\",le=\"0.1\"} 2\n"
                                 "sm_seconds_bucket{action=\"ping\",le=\"1\"} 3\n"
                                 "sm_seconds_bucket{action=\"ping\",le=\"2.5\"} 3\n"
                                 "sm_seconds_bucket{action=\"ping\",le=\"+Inf\"} 4\n"
                                 "sm_seconds_sum{action=\"ping\"} 3.65\n"
                                 "sm_seconds_count{action=\"ping\"} 4\n");
    free(text);
    metrics_free(m);
}

static void bad_names_duplicates_and_bad_buckets_are_refused(void)
{
    metrics *m = metrics_new();
    static const double buckets[] = {1, 2}, unsorted[] = {2, 1};
    static const char *const le[] = {"le", NULL}, *const twice[] = {"a", "a", NULL},
                             *const dunder[] = {"__x", NULL}, *const colon[] = {"a:b", NULL},
                             *const five[] = {"a", "b", "c", "d", "e", NULL};
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "1abc", "", NULL, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "a-b", "", NULL, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "", "", NULL, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "x", "", twice, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "x", "", dunder, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "x", "", colon, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "x", "", five, NULL, 0));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_HISTOGRAM, "h", "", le, buckets, 2));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_HISTOGRAM, "h", "", NULL, unsorted, 2));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_HISTOGRAM, "h", "", NULL, NULL, 0));
    CU_ASSERT_PTR_NOT_NULL(metrics_family(m, METRIC_GAUGE, "ns:x", "", NULL, NULL, 0));
    CU_ASSERT_PTR_NOT_NULL(metrics_family(m, METRIC_HISTOGRAM, "h", "", NULL, buckets, 2));
    CU_ASSERT_PTR_NULL(metrics_family(m, METRIC_GAUGE, "h", "", NULL, NULL, 0));
    metrics_free(m);
}

static void series_are_bounded_per_family(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"k", NULL};
    metric_family *f = metrics_family(m, METRIC_COUNTER, "c_total", "", labels, NULL, 0);
    char value[32];
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        snprintf(value, sizeof value, "v%d", i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(metrics_series1(f, value));
    }
    CU_ASSERT_PTR_NULL(metrics_series1(f, "one-more"));
    /* Existing ones are still found; a missing value is refused. */
    CU_ASSERT_PTR_NOT_NULL(metrics_series1(f, "v0"));
    const char *none[] = {NULL};
    CU_ASSERT_PTR_NULL(metrics_series(f, none));
    metrics_free(m);
}

static void numbers_print_exactly(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"n", NULL};
    metric_family *f = metrics_family(m, METRIC_GAUGE, "g", "", labels, NULL, 0);
    metric_set(metrics_series1(f, "a"), 0.1);
    metric_set(metrics_series1(f, "b"), 1e21);
    metric_set(metrics_series1(f, "c"), 123456789012.0);
    metric_set(metrics_series1(f, "d"), 1.0 / 3.0);
    char *text = render(m);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "g{n=\"a\"} 0.1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "g{n=\"b\"} 1e+21\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "g{n=\"c\"} 123456789012\n"));
    /* 15 digits would not read back as the same double. */
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "g{n=\"d\"} 0.33333333333333331\n"));
    free(text);
    metrics_free(m);
}

#define THREADS 4
#define ADDS 20000

static void *adder(void *arg)
{
    metric_family *f = arg;
    for (int i = 0; i < ADDS; i++) {
        metric_add(metrics_series1(f, i % 2 ? "odd" : "even"), 1);
        metric_add(metrics_series1(f, "half"), 0.5);
    }
    return NULL;
}

static void counts_from_several_threads_add_up_exactly(void)
{
    metrics *m = metrics_new();
    static const char *const labels[] = {"k", NULL};
    metric_family *f = metrics_family(m, METRIC_COUNTER, "c_total", "", labels, NULL, 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, adder, f), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(f, "odd")), THREADS * ADDS / 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(f, "even")), THREADS * ADDS / 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(f, "half")), THREADS * ADDS / 2, 0);
    metrics_free(m);
}

static const sm_test_case cases[] = {
    SM_TEST(counter_and_gauge_render_with_help_type_and_labels),
    SM_TEST(label_values_and_help_are_escaped),
    SM_TEST(histogram_buckets_are_cumulative_with_sum_and_count),
    SM_TEST(bad_names_duplicates_and_bad_buckets_are_refused),
    SM_TEST(series_are_bounded_per_family),
    SM_TEST(numbers_print_exactly),
    SM_TEST(counts_from_several_threads_add_up_exactly),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("metrics", cases, NULL, NULL);
}
