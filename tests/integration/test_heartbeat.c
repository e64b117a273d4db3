/* The heartbeat plugin in the real server (interval 1 s, timeout 3 s):
 * PINGs arrive on time, a client that answers stays, a silent one is
 * closed with 1001. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

static harness_server srv;

static int init(void)
{
    return harness_start(&srv, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"heartbeat\"]; };\n"
                               "heartbeat = { interval = 1; timeout = 3; };\n");
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sm_client *connect_client(int auto_pong)
{
    sm_client_options opt = {.auto_pong = auto_pong};
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &opt, &c), SM_CLIENT_OK);
    return c;
}

/* How much later than the rule an event may come on a busy machine (2
 * cores under the sanitizers): upper bounds get it, lower bounds that are
 * protocol rules do not. */
#define BUSY_MARGIN 3.0

/* The PING's own timestamp: the server's clock when it sent it. */
static double ping_time(const sm_message *m)
{
    return json_number_value(json_object_get(m->payload, "timestamp"));
}

static void ping_arrives_within_interval_with_null_username(void)
{
    sm_client *c = connect_client(0);
    double t0 = mono_now();
    sm_message *m = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_client_next_event(c, (int)((1.0 + BUSY_MARGIN) * 1000), &m),
                          SM_CLIENT_OK);
    CU_ASSERT_TRUE(mono_now() - t0 <= 1.0 + BUSY_MARGIN);
    CU_ASSERT_STRING_EQUAL(m->action, "PING");
    CU_ASSERT_TRUE(json_is_null(json_object_get(m->payload, "username")));
    json_t *ts = json_object_get(m->payload, "timestamp");
    CU_ASSERT_TRUE(json_is_number(ts));
    /* The server's wall clock, so within a few seconds of ours. */
    double skew = json_number_value(ts) - (double)time(NULL);
    CU_ASSERT_TRUE(skew > -5 && skew < 5);
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* auto_pong answers every PING; the client is still open after PINGs
 * spanning 5 s of the server's own clock (beyond the 3 s timeout), however
 * long that takes here, and PINGs keep coming. */
static void answering_client_stays_connected(void)
{
    sm_client *c = connect_client(1);
    double deadline = mono_now() + 30.0, first = -1, last = -1;
    int pings = 0;
    while (mono_now() < deadline && (first < 0 || last - first < 5.0)) {
        sm_message *m = NULL;
        int rc = sm_client_next_event(c, 500, &m);
        CU_ASSERT_TRUE(rc == SM_CLIENT_OK || rc == SM_CLIENT_TIMEOUT);
        if (rc != SM_CLIENT_OK && rc != SM_CLIENT_TIMEOUT)
            break;
        if (m && strcmp(m->action, "PING") == 0) {
            pings++;
            last = ping_time(m);
            if (first < 0)
                first = last;
        }
        sm_message_free(m);
    }
    CU_ASSERT_EQUAL(sm_client_close_code(c), -1);
    CU_ASSERT_TRUE(first >= 0 && last - first >= 5.0);
    CU_ASSERT_TRUE(pings >= 4);
    sm_message *m = NULL;
    CU_ASSERT_EQUAL(sm_client_next_event(c, (int)((1.0 + BUSY_MARGIN) * 1000), &m),
                    SM_CLIENT_OK);
    CU_ASSERT_TRUE(m && strcmp(m->action, "PING") == 0);
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* Closed between timeout and timeout + 1 s after the handshake. Never
 * sooner than 3 s after the client began to connect (the server counts
 * from later still); later than 4 s after the handshake only by how busy
 * the machine is. */
static void silent_client_closed_1001_after_timeout(void)
{
    double before = mono_now();
    sm_client *c = connect_client(0);
    double connected = mono_now();
    int code = harness_wait_closed(c, 15000);
    double closed = mono_now();
    CU_ASSERT_EQUAL(code, 1001);
    if (closed - before < 3.0 || closed - connected > 4.0 + BUSY_MARGIN)
        fprintf(stderr, "closed %.3f s after the connect began, %.3f s after the handshake\n",
                closed - before, closed - connected);
    CU_ASSERT_TRUE(closed - before >= 3.0);
    CU_ASSERT_TRUE(closed - connected <= 4.0 + BUSY_MARGIN);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "no PONG for 3 s, closing", 2000), 1);
    sm_client_free(c);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(ping_arrives_within_interval_with_null_username),
        SM_TEST(answering_client_stays_connected),
        SM_TEST(silent_client_closed_1001_after_timeout),
        SM_TEST_END,
    };
    return sm_test_run("integration_heartbeat", cases, init, fini);
}
