/* The heartbeat plugin on the test host (fake clock): PING schedule and
 * payload, PONG silence, the timeout window, configuration checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define EPOCH SM_TESTHOST_EPOCH

/* A host with the plugin loaded (config_text: the heartbeat section or NULL). */
static sm_testhost *start(const char *config_text)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(config_text, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, HEARTBEAT_SO, "heartbeat"), SM_OK);
    return th;
}

/* The status of loading the plugin with this configuration. */
static int load_status(const char *config_text)
{
    sm_testhost *th = NULL;
    if (sm_testhost_new(config_text, &th) != SM_OK)
        return 1000; /* not a plugin status: the assertion shows it */
    int rc = sm_testhost_load(th, HEARTBEAT_SO, "heartbeat");
    sm_testhost_free(th);
    return rc;
}

/* Takes the session's next PING and checks its payload: username (NULL =
 * JSON null) and the fake clock's time. */
static void expect_ping(sm_testhost *th, sm_session_id s, const char *username)
{
    json_t *m = sm_testhost_next_event(th, s, "PING");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    json_t *p = json_object_get(m, "payload");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    json_t *who = json_object_get(p, "username");
    if (username) {
        CU_ASSERT_STRING_EQUAL(json_string_value(who), username);
    } else {
        CU_ASSERT_TRUE(json_is_null(who));
    }
    json_t *ts = json_object_get(p, "timestamp");
    CU_ASSERT_TRUE(json_is_number(ts));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(ts), sm_testhost_now(th), 1e-6);
    json_decref(m);
}

static void expect_no_ping(sm_testhost *th, sm_session_id s)
{
    json_t *m = sm_testhost_next_event(th, s, "PING");
    CU_ASSERT_PTR_NULL(m);
    json_decref(m);
}

/* Advances in quarter seconds until the session is closed or `limit`
 * seconds have passed; returns the fake time of the close (or -1). */
static double advance_until_closed(sm_testhost *th, sm_session_id s, double limit)
{
    double end = sm_testhost_now(th) + limit;
    while (sm_testhost_now(th) < end) {
        sm_testhost_advance(th, 0.25);
        if (sm_testhost_closed(th, s, NULL) == 1)
            return sm_testhost_now(th);
    }
    return -1;
}

static void ping_reaches_every_session_each_interval(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id anon = sm_testhost_connect(th, NULL);
    sm_session_id alice = sm_testhost_connect_user(th, "alice", 7);
    CU_ASSERT_FATAL(anon != 0 && alice != 0);
    sm_testhost_clear(th);
    sm_testhost_advance(th, 29.5);
    expect_no_ping(th, anon);
    expect_no_ping(th, alice);
    sm_testhost_advance(th, 0.5);
    CU_ASSERT_DOUBLE_EQUAL(sm_testhost_now(th), EPOCH + 30, 1e-9);
    expect_ping(th, anon, NULL);
    expect_ping(th, alice, "alice");
    expect_no_ping(th, anon);
    sm_testhost_advance(th, 30);
    expect_ping(th, anon, NULL);
    expect_ping(th, alice, "alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, anon), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, alice), 0);
    sm_testhost_free(th);
}

static void pong_gets_no_reply_even_when_malformed(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(s != 0);
    sm_testhost_clear(th);
    const char *payloads[] = {"{\"timestamp\": 1700000030.25}", "{\"timestamp\": 5}",
                              "{}", "{\"timestamp\": null}", "{\"timestamp\": \"now\"}",
                              "{\"timestamp\": [1]}", NULL};
    for (const char **p = payloads; *p; p++) {
        json_t *r = sm_testhost_call(th, s, "PONG", *p);
        CU_ASSERT_PTR_NULL(r);
        json_decref(r);
    }
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s), 0);
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, NULL), 0);
    sm_testhost_free(th);
}

static void silent_session_closed_1001_between_timeout_and_one_second_later(void)
{
    sm_testhost *th = start(NULL);
    sm_testhost_advance(th, 0.25); /* open between two checks */
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(s != 0);
    double opened = sm_testhost_now(th);
    double closed_at = advance_until_closed(th, s, 100);
    CU_ASSERT_TRUE(closed_at >= opened + 90);
    CU_ASSERT_TRUE(closed_at <= opened + 91);
    int code = 0;
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, &code), 1);
    CU_ASSERT_EQUAL(code, 1001);
    sm_testhost_free(th);
}

/* Any well-formed PONG counts, whatever timestamp it echoes. */
static void pong_keeps_session_alive_past_timeout(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id live = sm_testhost_connect(th, NULL);
    sm_session_id silent = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(live != 0 && silent != 0);
    for (int i = 0; i < 8; i++) { /* 240 s, well past the 90 s timeout */
        sm_testhost_advance(th, 30);
        json_t *r = sm_testhost_call(th, live, "PONG", "{\"timestamp\": 12345}");
        CU_ASSERT_PTR_NULL(r);
        json_decref(r);
    }
    CU_ASSERT_EQUAL(sm_testhost_closed(th, live, NULL), 0);
    CU_ASSERT_EQUAL(sm_testhost_closed(th, silent, NULL), 1);
    /* Once it stops answering, the timeout counts from its last PONG. */
    double last_pong = sm_testhost_now(th);
    double closed_at = advance_until_closed(th, live, 100);
    CU_ASSERT_TRUE(closed_at >= last_pong + 90);
    CU_ASSERT_TRUE(closed_at <= last_pong + 91);
    sm_testhost_free(th);
}

static void malformed_pong_does_not_keep_session_alive(void)
{
    sm_testhost *th = start("heartbeat = { interval = 1; timeout = 3; };");
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(s != 0);
    for (int i = 0; i < 3; i++) {
        sm_testhost_advance(th, 1);
        json_t *r = sm_testhost_call(th, s, "PONG", "{\"timestamp\": \"x\"}");
        CU_ASSERT_PTR_NULL(r);
        json_decref(r);
    }
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, NULL), 0);
    sm_testhost_advance(th, 1);
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, NULL), 1);
    sm_testhost_free(th);
}

static void custom_interval_and_timeout_honoured(void)
{
    sm_testhost *th = start("heartbeat = { interval = 5; timeout = 12; };");
    sm_session_id s = sm_testhost_connect_user(th, "bob", 2);
    CU_ASSERT_FATAL(s != 0);
    sm_testhost_clear(th);
    sm_testhost_advance(th, 4.75);
    expect_no_ping(th, s);
    sm_testhost_advance(th, 0.25);
    expect_ping(th, s, "bob");
    sm_testhost_advance(th, 5);
    expect_ping(th, s, "bob");
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, NULL), 0);
    double closed_at = advance_until_closed(th, s, 10);
    CU_ASSERT_TRUE(closed_at >= EPOCH + 12);
    CU_ASSERT_TRUE(closed_at <= EPOCH + 13);
    sm_testhost_free(th);
}

static void timeout_below_interval_refused_at_load(void)
{
    CU_ASSERT_NOT_EQUAL(load_status("heartbeat = { interval = 60; timeout = 59; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("heartbeat = { interval = 100; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("heartbeat = { interval = 60; timeout = 60; };"), SM_OK);
}

static void bad_types_and_ranges_refused_at_load(void)
{
    const char *bad[] = {
        "heartbeat = { interval = \"30\"; };", "heartbeat = { interval = 1.5; };",
        "heartbeat = { timeout = true; };",    "heartbeat = { interval = 0; };",
        "heartbeat = { interval = 3601; };",   "heartbeat = { timeout = 0; };",
        "heartbeat = { timeout = 86401; };",   "heartbeat = { interval = -5; };",
        NULL};
    for (const char **c = bad; *c; c++) {
        int rc = load_status(*c);
        if (rc == SM_OK)
            fprintf(stderr, "accepted: %s\n", *c);
        CU_ASSERT_NOT_EQUAL(rc, SM_OK);
    }
    CU_ASSERT_EQUAL(load_status("heartbeat = { interval = 3600; timeout = 86400; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("heartbeat = { interval = 1; timeout = 1; };"), SM_OK);
}

/* Many sessions, half of them closed in an interleaved order (the table's
 * deletions), then PINGs reach exactly the others and only the silent
 * ones time out. */
static void many_sessions_tracked_and_forgotten(void)
{
    enum { N = 20000 }; /* the size the plugin is built for */
    sm_testhost *th = start("heartbeat = { interval = 2; timeout = 4; };");
    sm_session_id *ids = calloc(N, sizeof *ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    for (int i = 0; i < N; i++) {
        ids[i] = sm_testhost_connect(th, NULL);
        CU_ASSERT_FATAL(ids[i] != 0);
    }
    for (int i = 0; i < N; i++)
        if (i % 4 == 1 || i % 4 == 2)
            CU_ASSERT_EQUAL(sm_testhost_disconnect(th, ids[i]), SM_OK);
    sm_testhost_clear(th);
    sm_testhost_advance(th, 2);
    int pinged = 0, wrong = 0;
    for (int i = 0; i < N; i++) {
        json_t *m = sm_testhost_next_event(th, ids[i], "PING");
        int open = i % 4 == 0 || i % 4 == 3;
        pinged += m != NULL;
        wrong += (m != NULL) != open;
        json_decref(m);
        if (i % 4 == 3)
            json_decref(sm_testhost_call(th, ids[i], "PONG", "{\"timestamp\": 1}"));
    }
    CU_ASSERT_EQUAL(pinged, N / 2);
    CU_ASSERT_EQUAL(wrong, 0);
    sm_testhost_advance(th, 3); /* 5 s: silent ones (no PONG since 0) are gone */
    int closed_ok = 0;
    for (int i = 0; i < N; i += 4) {
        int code = 0;
        closed_ok += sm_testhost_closed(th, ids[i], &code) == 1 && code == 1001;
        closed_ok += sm_testhost_closed(th, ids[i + 3], NULL) == 0;
    }
    CU_ASSERT_EQUAL(closed_ok, N / 2);
    free(ids);
    sm_testhost_free(th);
}

/* SIGHUP: a shorter interval restarts the schedule, a shorter timeout
 * closes silent sessions sooner; a bad pair changes nothing. */
static void reload_changes_interval_and_timeout(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(s != 0);
    sm_testhost_advance(th, 10.0);
    sm_testhost_clear(th);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "heartbeat = { interval = 5; timeout = 20; };"), SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "heartbeat = { interval = 5; timeout = 4; };"),
                    SM_ERROR);
    sm_testhost_advance(th, 4.75);
    expect_no_ping(th, s);
    sm_testhost_advance(th, 0.25);
    expect_ping(th, s, NULL);
    /* Silent since its open at 0 s: closed between 20 and 21 s of silence
     * (the default 90 s would keep it open). */
    double closed_at = advance_until_closed(th, s, 10.0);
    CU_ASSERT(closed_at > EPOCH + 20.0 && closed_at <= EPOCH + 21.0);
    sm_testhost_free(th);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(ping_reaches_every_session_each_interval),
        SM_TEST(reload_changes_interval_and_timeout),
        SM_TEST(pong_gets_no_reply_even_when_malformed),
        SM_TEST(silent_session_closed_1001_between_timeout_and_one_second_later),
        SM_TEST(pong_keeps_session_alive_past_timeout),
        SM_TEST(malformed_pong_does_not_keep_session_alive),
        SM_TEST(custom_interval_and_timeout_honoured),
        SM_TEST(timeout_below_interval_refused_at_load),
        SM_TEST(bad_types_and_ranges_refused_at_load),
        SM_TEST(many_sessions_tracked_and_forgotten),
        SM_TEST_END,
    };
    return sm_test_run("plugin_heartbeat", cases, NULL, NULL);
}
