/* core/metrics: the registry and its text exposition format (Prometheus
 * 0.0.4): exact text, label escaping, cumulative histogram buckets with
 * _sum and _count, bounded series, refused names, atomic counts from
 * several threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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

/* A counter copied in from elsewhere never goes back, whatever order two
 * scrapes' readings arrive in. */
static void raise_never_lowers_a_counter(void)
{
    metrics *m = metrics_new();
    metric_family *f = metrics_family(m, METRIC_COUNTER, "cpu_total", "", NULL, NULL, 0);
    metric *s = metrics_series(f, NULL);
    metric_raise(s, 5);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(s), 5, 0);
    metric_raise(s, 3);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(s), 5, 0);
    metric_raise(s, 7.5);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(s), 7.5, 0);
    metrics_free(m);
}

/* A histogram observed elsewhere (the storage's waits on PostgreSQL) and
 * copied in at scrape time: buckets and sum as given, never lowered; a
 * count of buckets that does not match is ignored. */
static void histogram_copied_in_renders_and_never_lowers(void)
{
    metrics *m = metrics_new();
    static const double buckets[] = {0.1, 1};
    metric_family *h = metrics_family(m, METRIC_HISTOGRAM, "sm_wait", "W.", NULL, buckets, 2);
    metric *s = metrics_series(h, NULL);
    const unsigned long long first[] = {2, 1, 1}, older[] = {1, 1, 0}, wrong[] = {9, 9};
    metric_histogram_raise(s, first, 3, 3.25);
    metric_histogram_raise(s, older, 3, 1.0); /* a slower scrape's reading */
    metric_histogram_raise(s, wrong, 2, 99.0);
    metric_histogram_raise(NULL, first, 3, 1.0);
    char *text = render(m);
    CU_ASSERT_STRING_EQUAL(text, "# HELP sm_wait W.\n"
                                 "# TYPE sm_wait histogram\n"
                                 "sm_wait_bucket{le=\"0.1\"} 2\n"
                                 "sm_wait_bucket{le=\"1\"} 3\n"
                                 "sm_wait_bucket{le=\"+Inf\"} 4\n"
                                 "sm_wait_sum 3.25\n"
                                 "sm_wait_count 4\n");
    free(text);
    const unsigned long long later[] = {3, 1, 1};
    metric_histogram_raise(s, later, 3, 3.5);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(s), 5, 0);
    /* Not a histogram: nothing. */
    metric *g = metrics_series(metrics_family(m, METRIC_GAUGE, "sm_g", "", NULL, NULL, 0), NULL);
    metric_histogram_raise(g, later, 3, 3.5);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(g), 0, 0);
    metrics_free(m);
}

/* ---- rendering while other threads update and register -------------- */

#define RENDERERS 2
#define RENDERS 200
#define UPDATES 20000
#define NEW_FAMILIES 64

typedef struct render_run {
    metrics *m;
    atomic_int stop;
    atomic_int bad_pages;
    atomic_int pages;
} render_run;

/* A page is whole when every family has its HELP and TYPE before its
 * samples, and every histogram's _count equals its +Inf bucket. */
static int page_is_whole(char *page)
{
    char family[128] = "";
    double inf_bucket = -1;
    char *save = NULL;
    for (char *line = strtok_r(page, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (sscanf(line + 7, "%127s", family) != 1)
                return 0;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            if (strncmp(line + 7, family, strlen(family)) != 0)
                return 0;
            continue;
        }
        if (!*family || strncmp(line, family, strlen(family)) != 0)
            return 0;
        const char *value = strrchr(line, ' ');
        if (!value)
            return 0;
        if (strstr(line, "le=\"+Inf\"")) {
            inf_bucket = strtod(value + 1, NULL);
        } else if (strstr(line, "_count")) {
            if (strtod(value + 1, NULL) != inf_bucket)
                return 0;
        }
    }
    return 1;
}

static void *renderer(void *arg)
{
    render_run *r = arg;
    for (int i = 0; i < RENDERS; i++) {
        char *page = NULL;
        size_t len = 0;
        if (metrics_render(r->m, &page, &len) != 0 || !page_is_whole(page))
            atomic_fetch_add(&r->bad_pages, 1);
        atomic_fetch_add(&r->pages, 1);
        free(page);
    }
    return NULL;
}

static void *updater(void *arg)
{
    render_run *r = arg;
    metric_family *c = metrics_find(r->m, "busy_total");
    metric_family *g = metrics_find(r->m, "busy_depth");
    metric_family *h = metrics_find(r->m, "busy_seconds");
    for (int i = 0; i < UPDATES; i++) {
        metric_add(metrics_series1(c, i % 2 ? "a" : "b"), 1);
        metric_set(metrics_series(g, NULL), i);
        metric_observe(metrics_series(h, NULL), (i % 10) * 0.1);
    }
    return NULL;
}

static void render_is_whole_while_others_update_and_register(void)
{
    static render_run r;
    r.m = metrics_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.m);
    atomic_store(&r.bad_pages, 0);
    atomic_store(&r.pages, 0);
    static const char *const labels[] = {"k", NULL};
    static const double buckets[] = {0.25, 0.5, 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(metrics_family(r.m, METRIC_COUNTER, "busy_total", "", labels,
                                                NULL, 0));
    CU_ASSERT_PTR_NOT_NULL_FATAL(metrics_family(r.m, METRIC_GAUGE, "busy_depth", "", NULL,
                                                NULL, 0));
    CU_ASSERT_PTR_NOT_NULL_FATAL(metrics_family(r.m, METRIC_HISTOGRAM, "busy_seconds", "", NULL,
                                                buckets, 3));
    pthread_t renderers[RENDERERS], upd;
    for (int i = 0; i < RENDERERS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&renderers[i], NULL, renderer, &r), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&upd, NULL, updater, &r), 0);
    /* Families and series registered meanwhile (a plugin loaded by a
     * reload, new label values). */
    for (int i = 0; i < NEW_FAMILIES; i++) {
        char name[32], value[16];
        snprintf(name, sizeof name, "late_%d", i);
        metric_family *f = metrics_family(r.m, i % 3 == 2 ? METRIC_HISTOGRAM : METRIC_GAUGE,
                                          name, "Late.", labels, buckets, 3);
        CU_ASSERT_PTR_NOT_NULL(f);
        for (int j = 0; j < 16; j++) {
            snprintf(value, sizeof value, "v%d", j);
            if (i % 3 == 2)
                metric_observe(metrics_series1(f, value), j);
            else
                metric_set(metrics_series1(f, value), j);
        }
    }
    pthread_join(upd, NULL);
    for (int i = 0; i < RENDERERS; i++)
        pthread_join(renderers[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&r.pages), RENDERERS * RENDERS);
    CU_ASSERT_EQUAL(atomic_load(&r.bad_pages), 0);
    metric_family *c = metrics_find(r.m, "busy_total");
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(c, "a")), UPDATES / 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(c, "b")), UPDATES / 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series(metrics_find(r.m, "busy_seconds"), NULL)),
                           UPDATES, 0);
    CU_ASSERT_DOUBLE_EQUAL(metric_value(metrics_series1(metrics_find(r.m, "late_63"), "v15")),
                           15, 0);
    char *page = render(r.m);
    CU_ASSERT_TRUE(page_is_whole(page));
    free(page);
    metrics_free(r.m);
}

static const sm_test_case cases[] = {
    SM_TEST(counter_and_gauge_render_with_help_type_and_labels),
    SM_TEST(label_values_and_help_are_escaped),
    SM_TEST(histogram_buckets_are_cumulative_with_sum_and_count),
    SM_TEST(bad_names_duplicates_and_bad_buckets_are_refused),
    SM_TEST(series_are_bounded_per_family),
    SM_TEST(numbers_print_exactly),
    SM_TEST(counts_from_several_threads_add_up_exactly),
    SM_TEST(raise_never_lowers_a_counter),
    SM_TEST(histogram_copied_in_renders_and_never_lowers),
    SM_TEST(render_is_whole_while_others_update_and_register),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("metrics", cases, NULL, NULL);
}
