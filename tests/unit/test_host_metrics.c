/* The host table's metric services: a plugin's names are prefixed with
 * its own, counters end in _total, registration only during init, label
 * values checked, and the series show on the rendered page. */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "host_api.h"
#include "metrics.h"
#include "plugin_loader.h"
#include "safemessenger/testhost_suite.h"

static plugin demo = {.name = "demo"};

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1};
    return core_start(&o);
}

static int teardown(void)
{
    core_stop();
    return 0;
}

static int reg(sm_metric_type type, const char *name, const char *const *labels,
               sm_metric **out)
{
    const sm_host *h = host_api_table();
    g_core.initialising = &demo;
    g_core.init_errors = 0;
    int rc = h->metric_register(&demo, type, name, "Help.", labels, out);
    g_core.initialising = NULL;
    /* A refusal makes the plugin's init fail, as every refused registration. */
    CU_ASSERT_EQUAL(g_core.init_errors, rc == SM_OK ? 0 : 1);
    return rc;
}

static void names_carry_the_plugin_prefix_and_counters_end_in_total(void)
{
    sm_metric *m = NULL;
    static const char *const bad_label[] = {"Result", NULL}, *const digit[] = {"1x", NULL};
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "safemessenger_other_x_total", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "demo_x_total", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "safemessenger_demo_", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "safemessenger_demox_total", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "safemessenger_demo_things", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_Depth", NULL, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth", bad_label, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth", digit, &m), SM_EINVAL);
    CU_ASSERT_EQUAL(reg((sm_metric_type)7, "safemessenger_demo_depth", NULL, &m), SM_EINVAL);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth", NULL, &m), SM_OK);
    CU_ASSERT_PTR_NOT_NULL(m);
    /* The same registration again (a reload loaded the plugin again):
     * the same metric; with another type or labels: refused. */
    static const char *const one[] = {"kind", NULL}, *const five[] = {"a", "b", "c", "d", "e",
                                                                       NULL};
    sm_metric *again = NULL;
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth", NULL, &again), SM_OK);
    CU_ASSERT_PTR_EQUAL(again, m);
    again = NULL;
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth", one, &again), SM_EEXIST);
    CU_ASSERT_EQUAL(reg(SM_METRIC_COUNTER, "safemessenger_demo_depth_total", NULL, &again),
                    SM_OK);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_depth_total", NULL, &again),
                    SM_EEXIST);
    CU_ASSERT_EQUAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_wide", five, &again), SM_EINVAL);
}

static void registration_is_refused_outside_init(void)
{
    sm_metric *m = NULL;
    g_core.initialising = NULL;
    CU_ASSERT_EQUAL(host_api_table()->metric_register(&demo, SM_METRIC_GAUGE,
                                                      "safemessenger_demo_late", "", NULL, &m),
                    SM_ESTATE);
    CU_ASSERT_PTR_NULL(m);
}

static void adds_and_sets_show_on_the_page(void)
{
    const sm_host *h = host_api_table();
    static const char *const labels[] = {"result", NULL};
    sm_metric *logins = NULL, *queue = NULL;
    CU_ASSERT_EQUAL_FATAL(reg(SM_METRIC_COUNTER, "safemessenger_demo_logins_total", labels,
                              &logins), SM_OK);
    CU_ASSERT_EQUAL_FATAL(reg(SM_METRIC_GAUGE, "safemessenger_demo_queue", NULL, &queue), SM_OK);
    const char *const ok[] = {"ok"}, *const missing[] = {NULL};
    CU_ASSERT_EQUAL(h->metric_add(logins, ok, 2), SM_OK);
    CU_ASSERT_EQUAL(h->metric_add(logins, ok, 1), SM_OK);
    CU_ASSERT_EQUAL(h->metric_add(logins, ok, -1), SM_EINVAL);
    CU_ASSERT_EQUAL(h->metric_add(logins, missing, 1), SM_EINVAL);
    CU_ASSERT_EQUAL(h->metric_add(logins, NULL, 1), SM_EINVAL);
    CU_ASSERT_EQUAL(h->metric_set(logins, ok, 9), SM_EINVAL);
    CU_ASSERT_EQUAL(h->metric_set(queue, NULL, 5), SM_OK);
    CU_ASSERT_EQUAL(h->metric_add(queue, NULL, -2), SM_OK);
    char *text = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(metrics_render(g_core.metrics, &text, &len), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE safemessenger_demo_logins_total counter\n"
                                        "safemessenger_demo_logins_total{result=\"ok\"} 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nsafemessenger_demo_queue 3\n"));
    free(text);
}

static const sm_test_case cases[] = {
    SM_TEST(names_carry_the_plugin_prefix_and_counters_end_in_total),
    SM_TEST(registration_is_refused_outside_init),
    SM_TEST(adds_and_sets_show_on_the_page),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("host_metrics", cases, setup, teardown);
}
