/* core/server_metrics: sessions by state counted as session.c changes
 * them (closing wins over logged in), plugin_info set as plugins load and
 * unload, and a scrape (collect + render) safe on several threads at once
 * while I/O threads count and the logic thread registers families. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "core.h"
#include "fake_transport.h"
#include "metrics.h"
#include "metrics_page.h"
#include "plugin_loader.h"
#include "server_metrics.h"
#include "session.h"
#include "safemessenger/testhost_suite.h"

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &fake_transport};
    return core_start(&o);
}

static int teardown(void)
{
    fake_reset();
    core_stop();
    return 0;
}

/* A scrape as /metrics answers it: collect, then render. */
static double scrape(const char *series)
{
    char *page = NULL;
    size_t len = 0;
    server_metrics_collect();
    if (metrics_render(g_core.metrics, &page, &len) != 0)
        return -2;
    double v = sample_in(page, series);
    free(page);
    return v;
}

static int sessions_are(double handshake, double key_pending, double open, double logged_in,
                        double closing)
{
    static const char *const names[] = {"handshake", "key_pending", "open", "logged_in",
                                        "closing"};
    const double want[] = {handshake, key_pending, open, logged_in, closing};
    int ok = 1;
    for (size_t i = 0; i < 5; i++) {
        char series[64];
        snprintf(series, sizeof series, "safemessenger_sessions{state=\"%s\"}", names[i]);
        double got = scrape(series);
        if (got != want[i]) {
            fprintf(stderr, "%s: %g, expected %g\n", series, got, want[i]);
            ok = 0;
        }
    }
    return ok;
}

static void sessions_are_counted_in_their_state_as_it_changes(void)
{
    CU_ASSERT_TRUE(sessions_are(0, 0, 0, 0, 0));
    session *a = session_new(NULL, "10.0.0.1"), *b = session_new(NULL, "10.0.0.2");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_TRUE(sessions_are(2, 0, 0, 0, 0));
    session_set_key_pending(a);
    CU_ASSERT_TRUE(sessions_are(1, 1, 0, 0, 0));
    session_set_open(a);
    session_set_open(b);
    CU_ASSERT_TRUE(sessions_are(0, 0, 2, 0, 0));
    CU_ASSERT_EQUAL(session_login(a, "alice", 1), SM_OK);
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 1, 0));
    /* A second login replaces the first: still one logged in. */
    CU_ASSERT_EQUAL(session_login(a, "alice2", 2), SM_OK);
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 1, 0));
    CU_ASSERT_EQUAL(session_logout(a), SM_OK);
    CU_ASSERT_TRUE(sessions_are(0, 0, 2, 0, 0));
    CU_ASSERT_EQUAL(session_login(a, "alice", 1), SM_OK);
    /* Closing wins over logged in, and logging out or in does not move
     * a closing session. */
    session_set_closing(a);
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 0, 1));
    CU_ASSERT_EQUAL(session_logout(a), SM_OK);
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 0, 1));
    CU_ASSERT_EQUAL(session_login(a, "alice", 1), SM_ESTATE);
    session_set_open(a); /* nothing once closing */
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 0, 1));
    session_destroy(a);
    CU_ASSERT_TRUE(sessions_are(0, 0, 1, 0, 0));
    /* Destroyed while logged in: out of logged_in, counted nowhere. */
    CU_ASSERT_EQUAL(session_login(b, "bob", 3), SM_OK);
    CU_ASSERT_TRUE(sessions_are(0, 0, 0, 1, 0));
    session_destroy(b);
    CU_ASSERT_TRUE(sessions_are(0, 0, 0, 0, 0));
}

static void plugin_info_is_set_as_plugins_load_and_unload(void)
{
    static const char series[] = "safemessenger_plugin_info{name=\"guide_example\",version=\"1.0\"}";
    CU_ASSERT_EQUAL(scrape(series), -1);
    CU_ASSERT_EQUAL_FATAL(plugin_load(SM_TEST_PLUGIN_DIR "/guide_example.so", "guide_example"), 0);
    CU_ASSERT_EQUAL_FATAL(plugin_start_last(), 0);
    CU_ASSERT_EQUAL(scrape(series), 1);
    plugin *p = g_core.plugins[g_core.n_plugins - 1];
    plugin_unload(p);
    /* Kept, at 0, so a dashboard sees it go. */
    CU_ASSERT_EQUAL(scrape(series), 0);
}

/* ---- several threads ---------------------------------------------------- */

#define SCRAPERS 2
#define SCRAPES 150
#define IO_ROUNDS 3000
#define LOGIC_FAMILIES 40

static atomic_int scrape_errors;
static atomic_int cpu_went_back;

/* /metrics on two I/O threads at once: every page whole, and the CPU
 * counter never lower than on the thread's previous page. */
static void *scraper(void *arg)
{
    (void)arg;
    double last_cpu = 0;
    for (int i = 0; i < SCRAPES; i++) {
        char *page = NULL;
        size_t len = 0;
        server_metrics_collect();
        if (metrics_render(g_core.metrics, &page, &len) != 0) {
            atomic_fetch_add(&scrape_errors, 1);
            continue;
        }
        double cpu = sample_in(page, "process_cpu_seconds_total");
        if (cpu < 0 || sample_in(page, "safemessenger_sessions{state=\"open\"}") < 0 ||
            len != strlen(page) || page[len - 1] != '\n')
            atomic_fetch_add(&scrape_errors, 1);
        if (cpu < last_cpu)
            atomic_fetch_add(&cpu_went_back, 1);
        last_cpu = cpu;
        free(page);
    }
    return NULL;
}

/* An I/O thread's counting: sessions through their states, handshakes,
 * deliveries. Each session ends where it began: nowhere. */
static void *io_counter(void *arg)
{
    (void)arg;
    for (int i = 0; i < IO_ROUNDS; i++) {
        server_metrics_session_state(SERVER_METRICS_SESSION_NONE,
                                     SERVER_METRICS_SESSION_HANDSHAKE);
        server_metrics_connection();
        server_metrics_session_state(SERVER_METRICS_SESSION_HANDSHAKE,
                                     SERVER_METRICS_SESSION_KEY_PENDING);
        server_metrics_session_state(SERVER_METRICS_SESSION_KEY_PENDING,
                                     SERVER_METRICS_SESSION_OPEN);
        server_metrics_handshake("ok");
        server_metrics_delivery();
        server_metrics_session_state(SERVER_METRICS_SESSION_OPEN,
                                     SERVER_METRICS_SESSION_CLOSING);
        server_metrics_session_state(SERVER_METRICS_SESSION_CLOSING,
                                     SERVER_METRICS_SESSION_NONE);
    }
    return NULL;
}

static double value_of(const char *family, const char *label)
{
    metric_family *f = metrics_find(g_core.metrics, family);
    return metric_value(label ? metrics_series1(f, label) : metrics_series(f, NULL));
}

static void scrapes_on_several_threads_while_others_count_and_register(void)
{
    double handshakes = value_of("safemessenger_handshakes_total", "ok");
    double deliveries = value_of("safemessenger_deliveries_total", NULL);
    atomic_store(&scrape_errors, 0);
    atomic_store(&cpu_went_back, 0);
    pthread_t scrapers[SCRAPERS], io;
    for (int i = 0; i < SCRAPERS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&scrapers[i], NULL, scraper, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&io, NULL, io_counter, NULL), 0);
    /* This thread is the logic thread: plugins' families and series,
     * plugins coming and going, sessions made and destroyed, commands
     * counted. */
    static const char *const kind[] = {"kind", NULL};
    for (int i = 0; i < LOGIC_FAMILIES; i++) {
        char name[64], value[16];
        snprintf(name, sizeof name, "plugin_family_%d_total", i);
        metric_family *f = metrics_family(g_core.metrics, METRIC_COUNTER, name, "A plugin's.",
                                          kind, NULL, 0);
        CU_ASSERT_PTR_NOT_NULL(f);
        for (int j = 0; j < 8; j++) {
            snprintf(value, sizeof value, "k%d", j);
            metric_add(metrics_series1(f, value), 1);
        }
        snprintf(name, sizeof name, "plugin_%d", i);
        server_metrics_plugin(name, "1.0", 1);
        server_metrics_command("ping", 0, 0.001 * i);
        server_metrics_plugin(name, "1.0", i % 2);
        /* Sessions and plugins change on this thread as scrapes run. */
        session *sn = session_new(NULL, "10.0.0.9");
        CU_ASSERT_PTR_NOT_NULL_FATAL(sn);
        session_set_open(sn);
        CU_ASSERT_EQUAL(session_login(sn, "carol", 4), SM_OK);
        session_destroy(sn);
        if (i % 8 == 0) {
            CU_ASSERT_EQUAL_FATAL(plugin_load(SM_TEST_PLUGIN_DIR "/guide_example.so",
                                              "guide_example"), 0);
            CU_ASSERT_EQUAL_FATAL(plugin_start_last(), 0);
            plugin_unload(g_core.plugins[g_core.n_plugins - 1]);
        }
    }
    pthread_join(io, NULL);
    for (int i = 0; i < SCRAPERS; i++)
        pthread_join(scrapers[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&scrape_errors), 0);
    CU_ASSERT_EQUAL(atomic_load(&cpu_went_back), 0);
    CU_ASSERT_EQUAL(value_of("safemessenger_handshakes_total", "ok"), handshakes + IO_ROUNDS);
    CU_ASSERT_EQUAL(value_of("safemessenger_deliveries_total", NULL), deliveries + IO_ROUNDS);
    CU_ASSERT_EQUAL(value_of("plugin_family_39_total", "k7"), 1);
    CU_ASSERT_EQUAL(scrape("safemessenger_plugin_info{name=\"plugin_3\",version=\"1.0\"}"), 1);
    CU_ASSERT_EQUAL(scrape("safemessenger_plugin_info{name=\"plugin_4\",version=\"1.0\"}"), 0);
    CU_ASSERT_TRUE(sessions_are(0, 0, 0, 0, 0));
}

/* The storage's PostgreSQL families have no series on SQLite
 * (services.storage_pg checks them on PostgreSQL). */
static void postgresql_families_without_series_on_sqlite(void)
{
    CU_ASSERT_EQUAL(scrape("safemessenger_postgresql_up"), -1);
    CU_ASSERT_EQUAL(scrape("safemessenger_postgresql_wait_seconds_count"), -1);
    CU_ASSERT_EQUAL(scrape("safemessenger_postgresql_connection_losses_total"), -1);
}

/* Nor do the cluster families outside a cluster, though the page
 * declares them (docs/OPERATIONS.md "Monitoring"); cluster_stats_get
 * says there is none. */
static void cluster_families_declared_without_series_outside_a_cluster(void)
{
    cluster_stats cs;
    CU_ASSERT_EQUAL(cluster_on(), 0);
    CU_ASSERT_EQUAL(cluster_stats_get(&cs), -1);
    static const char *const gauges[] = {"safemessenger_cluster_up",
                                         "safemessenger_cluster_presence_state",
                                         "safemessenger_cluster_bus_topics",
                                         "safemessenger_cluster_presence_members"};
    static const char *const counters[] = {"safemessenger_cluster_bus_published_total",
                                           "safemessenger_cluster_bus_refused_total",
                                           "safemessenger_cluster_presence_online_total",
                                           "safemessenger_cluster_redis_reconnects_total"};
    char *page = NULL;
    size_t len = 0;
    server_metrics_collect();
    CU_ASSERT_EQUAL_FATAL(metrics_render(g_core.metrics, &page, &len), 0);
    char line[160];
    for (size_t i = 0; i < 4; i++) {
        snprintf(line, sizeof line, "\n# TYPE %s gauge\n", gauges[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(page, line));
        snprintf(line, sizeof line, "\n%s ", gauges[i]);
        CU_ASSERT_PTR_NULL(strstr(page, line));
        snprintf(line, sizeof line, "\n# TYPE %s counter\n", counters[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(page, line));
        snprintf(line, sizeof line, "\n%s", counters[i]);
        /* Only the HELP and TYPE lines name it: no sample line starts with it. */
        CU_ASSERT_PTR_NULL(strstr(page, line));
    }
    free(page);
}

static const sm_test_case cases[] = {
    SM_TEST(sessions_are_counted_in_their_state_as_it_changes),
    SM_TEST(plugin_info_is_set_as_plugins_load_and_unload),
    SM_TEST(scrapes_on_several_threads_while_others_count_and_register),
    SM_TEST(postgresql_families_without_series_on_sqlite),
    SM_TEST(cluster_families_declared_without_series_outside_a_cluster),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("server_metrics", cases, setup, teardown);
}
