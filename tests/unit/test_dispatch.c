/* Dispatch rules of PROTOCOL.md section 5 through the testcmds plugin and a
 * recording transport: check order, one reply per command, reply before
 * events, deferred replies, rate limits. */
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "core.h"
#include "dispatch.h"
#include "fake_transport.h"
#include "plugin_loader.h"
#include "session_io.h"
#include "session.h"
#include "safemessenger/testhost_suite.h"
#include "topic.h"

static sm_timer *(*real_timer_start)(double after, sm_timer_fn fn, void *arg);

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &fake_transport};
    if (core_start(&o) != 0)
        return -1;
    real_timer_start = g_core.timer_start;
    if (plugin_load(SM_TEST_PLUGIN_DIR "/testcmds.so", "testcmds") != 0)
        return -1;
    return plugin_start_all();
}

static int teardown(void)
{
    fake_reset();
    core_stop();
    return 0;
}

static void run(struct session *s, const char *action, const char *nonce, const char *payload)
{
    json_t *p = json_loads(payload, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* As session I/O hands an opened command to the logic side: the next
     * one waits for its done. */
    s->io_busy = 1;
    session_io_command(s, action, nonce, p, strlen(payload));
}

static void dispatch_unknown_action_gets_1003(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "no_such_action", "7", "{}");
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "error");
    CU_ASSERT_STRING_EQUAL(fake_log[0].action, "error");
    CU_ASSERT_STRING_EQUAL(fake_log[0].reply_to, "7");
    CU_ASSERT_EQUAL(fake_code(0), 1003);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fake_log[0].payload, "command")),
                           "no_such_action");
    session_destroy(s);
}

static void dispatch_login_required_before_payload_check(void)
{
    fake_reset();
    struct session *s = fake_session();
    /* whoami needs login; the order is login (1002) before anything else. */
    run(s, "whoami", "1", "{}");
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_code(0), 1002);
    run(s, "fake_login", "2", "{\"username\":\"Alice\"}");
    run(s, "whoami", "3", "{}");
    CU_ASSERT_EQUAL_FATAL(fake_count, 3);
    CU_ASSERT_STRING_EQUAL(fake_log[2].type, "response");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fake_log[2].payload, "username")),
                           "Alice");
    session_destroy(s);
}

static void dispatch_schema_names_offending_field(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "typed", "1", "{}");
    run(s, "typed", "2", "{\"name\": 5}");
    run(s, "typed", "3", "{\"name\": \"ab\"}");
    run(s, "typed", "4", "{\"name\": \"bad name!\"}");
    run(s, "typed", "5", "{\"name\": \"abc\", \"count\": 201}");
    run(s, "typed", "6", "{\"name\": \"abc\", \"count\": 1.5}");
    run(s, "typed", "7", "{\"name\": \"abc\", \"flag\": \"yes\"}");
    run(s, "typed", "8", "{\"name\": \"abc\", \"count\": null, \"extra\": 1}");
    CU_ASSERT_EQUAL_FATAL(fake_count, 8);
    const char *fields[] = {"'name'", "'name'", "'name'", "'name'", "'count'", "'count'", "'flag'"};
    for (size_t i = 0; i < 7; i++) {
        CU_ASSERT_EQUAL(fake_code(i), 1004);
        const char *msg = json_string_value(json_object_get(fake_log[i].payload, "message"));
        CU_ASSERT_PTR_NOT_NULL(msg && strstr(msg, fields[i]));
    }
    /* null counts as absent; unknown fields are ignored */
    CU_ASSERT_STRING_EQUAL(fake_log[7].type, "response");
    session_destroy(s);
}

static void dispatch_handler_without_reply_gets_1005(void)
{
    fake_reset();
    struct session *s = fake_session();
    capture c;
    CU_ASSERT_FATAL(capture_begin(&c) == 0);
    run(s, "no_reply", "9", "{}");
    char *log = capture_end(&c);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_code(0), 1005);
    CU_ASSERT_STRING_EQUAL(fake_log[0].reply_to, "9");
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "returned without replying"));
    free(log);
    session_destroy(s);
}

static void dispatch_second_reply_is_refused(void)
{
    fake_reset();
    struct session *s = fake_session();
    capture c;
    CU_ASSERT_FATAL(capture_begin(&c) == 0);
    run(s, "double_reply", "4", "{}");
    char *log = capture_end(&c);
    CU_ASSERT_EQUAL(fake_count, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "second reply to command 'double_reply' refused"));
    char want[64];
    snprintf(want, sizeof want, "second reply returned %d", SM_EREPLIED);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    free(log);
    session_destroy(s);
}

static void dispatch_reply_goes_before_caused_events(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "emit", "5", "{}");
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[0].action, "emit");
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "event");
    CU_ASSERT_STRING_EQUAL(fake_log[1].action, "emitted");
    session_destroy(s);
}

static void dispatch_deferred_reply_and_queued_input_keep_order(void)
{
    fake_reset();
    struct session *s = fake_session();
    sm_session_id id = s->id;
    run(s, "deferred_echo", "1", "{\"n\":1}");
    CU_ASSERT_EQUAL(fake_count, 0);
    CU_ASSERT_PTR_NOT_NULL(s->busy);
    CU_ASSERT_EQUAL(fake_paused, 1);
    /* A command arriving meanwhile waits (no keys here: it is queued as
     * text and would go through the envelope check, so only check that it
     * is queued and not run). */
    session_io_receive(s, "{}", 2);
    CU_ASSERT_EQUAL(s->input_count, 1);
    workers_drain(g_core.pool);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].action, "deferred_echo");
    CU_ASSERT_STRING_EQUAL(fake_log[0].reply_to, "1");
    CU_ASSERT_PTR_NULL(s->busy);
    /* The queued message runs on the next loop turn (a zero timer). */
    timers_run_due(g_core.timers, core_mono_now() + 0.001);
    s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(s->input_count, 0);
    CU_ASSERT_EQUAL(fake_paused, 0);
    session_destroy(s);
}

static sm_timer *no_timer(double after, sm_timer_fn fn, void *arg)
{
    (void)after;
    (void)fn;
    (void)arg;
    return NULL;
}

/* Out of memory for the timer that runs the session's next command after
 * a deferred reply: the reply still goes, then the session closes 1011
 * instead of waiting for ever with its input paused. */
static void dispatch_deferred_reply_without_timer_closes_1011(void)
{
    fake_reset();
    struct session *s = fake_session();
    sm_session_id id = s->id;
    run(s, "deferred_echo", "1", "{}");
    session_io_receive(s, "{}", 2);
    CU_ASSERT_EQUAL(s->input_count, 1);
    g_core.timer_start = no_timer;
    workers_drain(g_core.pool);
    g_core.timer_start = real_timer_start;
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[0].reply_to, "1");
    s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(fake_closed_code, 1011);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    session_destroy(s);
}

/* At most 64 messages wait behind a command in flight; the 65th closes
 * the connection with 1008. (Through lws the server stops reading first,
 * so this is the backstop: tests/integration/test_rules.c.) */
static void dispatch_more_than_64_queued_messages_close_1008(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "deferred_echo", "1", "{}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->busy);
    for (int i = 0; i < 64; i++)
        session_io_receive(s, "{}", 2);
    CU_ASSERT_EQUAL(s->input_count, 64);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    CU_ASSERT_EQUAL(s->state, SESSION_OPEN);
    session_io_receive(s, "{}", 2);
    CU_ASSERT_EQUAL(fake_closed_code, 1008);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    CU_ASSERT_EQUAL(s->input_count, 64);
    workers_drain(g_core.pool);
    session_destroy(s);
}

static void dispatch_deferred_reply_after_close_is_dropped(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "deferred_echo", "1", "{}");
    session_destroy(s);
    workers_drain(g_core.pool);
    CU_ASSERT_EQUAL(fake_count, 0);
}

static void dispatch_rate_limit_gets_1008_with_retry_after(void)
{
    fake_reset();
    struct session *s = fake_session();
    int burst = g_core.sc->command_burst;
    for (int i = 0; i <= burst; i++)
        run(s, "echo", "1", "{}");
    CU_ASSERT_EQUAL_FATAL(fake_count, (size_t)burst + 1);
    CU_ASSERT_STRING_EQUAL(fake_log[burst - 1].type, "response");
    CU_ASSERT_EQUAL(fake_code((size_t)burst), 1008);
    json_t *ra = json_object_get(fake_log[burst].payload, "retry_after");
    CU_ASSERT_TRUE(json_is_number(ra) && json_number_value(ra) > 0 &&
                   json_number_value(ra) <= 1.0 / g_core.sc->commands_per_second + 0.001);
    session_destroy(s);
}

/* One command as if it had arrived as `bytes` bytes on the wire. */
static void run_sized(struct session *s, const char *action, const char *nonce,
                      const char *payload, size_t bytes)
{
    json_t *p = json_loads(payload, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    dispatch_command(s, action, nonce, p, bytes);
    json_decref(p);
}

static void dispatch_byte_limit_gets_1008_with_retry_after(void)
{
    fake_reset();
    struct session *s = fake_session();
    const server_config *sc = g_core.sc;
    /* Defaults: 65536 bytes/s, burst 262144 (4 largest messages). */
    CU_ASSERT_EQUAL_FATAL(sc->bytes_burst, 262144);
    size_t big = sc->max_message_bytes;
    for (int i = 0; i < 4; i++)
        run_sized(s, "echo", "1", "{}", big);
    run_sized(s, "echo", "2", "{}", big);
    CU_ASSERT_EQUAL_FATAL(fake_count, 5);
    CU_ASSERT_STRING_EQUAL(fake_log[3].type, "response");
    CU_ASSERT_EQUAL(fake_code(4), 1008);
    json_t *ra = json_object_get(fake_log[4].payload, "retry_after");
    /* 65536 bytes at 65536/s: about one second (less what time passed). */
    CU_ASSERT_TRUE(json_is_number(ra) && json_number_value(ra) > 0.5 &&
                   json_number_value(ra) <= 1.0);
    /* Small commands still pass: the refused one took nothing from either
     * bucket, and the byte bucket is not empty. */
    run_sized(s, "echo", "3", "{}", 2);
    CU_ASSERT_EQUAL_FATAL(fake_count, 6);
    CU_ASSERT_STRING_EQUAL(fake_log[5].type, "response");
    session_destroy(s);
}

static void dispatch_byte_limit_comes_after_login_and_before_payload(void)
{
    fake_reset();
    struct session *s = fake_session();
    size_t big = g_core.sc->max_message_bytes;
    for (int i = 0; i < 4; i++)
        run_sized(s, "echo", "1", "{}", big);
    fake_reset();
    run_sized(s, "no_such_action", "2", "{}", big);
    run_sized(s, "whoami", "3", "{}", big);
    run_sized(s, "typed", "4", "{\"name\": 5}", big);
    CU_ASSERT_EQUAL_FATAL(fake_count, 3);
    CU_ASSERT_EQUAL(fake_code(0), 1003);
    CU_ASSERT_EQUAL(fake_code(1), 1002);
    CU_ASSERT_EQUAL(fake_code(2), 1008);
    /* Not counted: PONG and other NO_RATE_LIMIT actions. */
    run_sized(s, "PONG", "5", "{\"timestamp\": 1}", big);
    CU_ASSERT_EQUAL(fake_count, 3);
    session_destroy(s);
}

static void dispatch_no_reply_action_is_silent_even_when_malformed(void)
{
    fake_reset();
    struct session *s = fake_session();
    run(s, "PONG", "1", "{\"timestamp\": 12.5}");
    run(s, "PONG", "2", "{\"timestamp\": \"x\"}");
    run(s, "PONG", "3", "{}");
    CU_ASSERT_EQUAL(fake_count, 0);
    session_destroy(s);
}

static void topic_publish_reaches_members_except_one(void)
{
    fake_reset();
    struct session *a = fake_session(), *b = fake_session(), *c = fake_session();
    CU_ASSERT_EQUAL(topic_join("room", a), SM_OK);
    CU_ASSERT_EQUAL(topic_join("room", b), SM_OK);
    CU_ASSERT_EQUAL(topic_join("room", b), SM_OK); /* idempotent */
    CU_ASSERT_TRUE(topic_is_member("room", a));
    CU_ASSERT_FALSE(topic_is_member("room", c));
    CU_ASSERT_EQUAL(topic_members("room", NULL, 0), 2);
    json_t *p = json_pack("{s:s}", "x", "y");
    CU_ASSERT_EQUAL(topic_publish("room", "ev", p, a->id), SM_OK);
    json_decref(p);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_log[0].session, b->id);
    CU_ASSERT_EQUAL(topic_leave("room", c), SM_ENOTFOUND);
    CU_ASSERT_EQUAL(topic_leave("room", a), SM_OK);
    session_destroy(b); /* leaves the topic, which is then freed */
    CU_ASSERT_EQUAL(topic_members("room", NULL, 0), 0);
    CU_ASSERT_EQUAL(hashmap_count(g_core.topics), 0);
    session_destroy(a);
    session_destroy(c);
}

static void session_users_are_case_insensitive_and_multi_device(void)
{
    fake_reset();
    struct session *a = fake_session(), *b = fake_session();
    CU_ASSERT_EQUAL(session_login(a, "Alice", 1), SM_OK);
    CU_ASSERT_EQUAL(session_login(b, "alice", 1), SM_OK);
    user_sessions *u = session_user("ALICE");
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_EQUAL(u->n, 2);
    CU_ASSERT_STRING_EQUAL(u->name, "Alice");
    CU_ASSERT_EQUAL(session_logout(a), SM_OK);
    CU_ASSERT_EQUAL(session_logout(a), SM_ESTATE);
    CU_ASSERT_EQUAL(session_user("alice")->n, 1);
    session_destroy(b);
    CU_ASSERT_PTR_NULL(session_user("alice"));
    session_destroy(a);
}

static void session_attributes_set_replace_remove(void)
{
    struct session *s = fake_session();
    CU_ASSERT_EQUAL(session_set_attr(s, "rooms.current", "general"), SM_OK);
    CU_ASSERT_STRING_EQUAL(session_get_attr(s, "rooms.current"), "general");
    CU_ASSERT_EQUAL(session_set_attr(s, "rooms.current", "dev"), SM_OK);
    CU_ASSERT_STRING_EQUAL(session_get_attr(s, "rooms.current"), "dev");
    CU_ASSERT_EQUAL(session_set_attr(s, "rooms.current", NULL), SM_OK);
    CU_ASSERT_PTR_NULL(session_get_attr(s, "rooms.current"));
    char key[16];
    for (int i = 0; i < SESSION_MAX_ATTRS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CU_ASSERT_EQUAL(session_set_attr(s, key, "v"), SM_OK);
    }
    CU_ASSERT_EQUAL(session_set_attr(s, "one.more", "v"), SM_EBUSY);
    session_destroy(s);
}

/* Fills the session's send queue (which the fake transport does not use)
 * with `bytes` unsent bytes, as the real transport would hold them. */
static void fill_output(struct session *s, size_t bytes)
{
    static char chunk[4096];
    while (bytes > 0) {
        size_t n = bytes < sizeof chunk ? bytes : sizeof chunk;
        CU_ASSERT_EQUAL_FATAL(outqueue_push(&s->out, chunk, n, g_core.sc->send_queue_bytes,
                                            g_core.sc->send_queue_messages, core_mono_now()),
                              0);
        bytes -= n;
    }
    /* The level the logic side reads (session_io.c keeps it so). */
    atomic_store(&s->out_msgs, outqueue_messages(&s->out));
    atomic_store(&s->out_bytes, outqueue_unsent(&s->out));
}

static void dispatch_reply_over_payload_limit_becomes_1011(void)
{
    fake_reset();
    struct session *s = fake_session();
    size_t cap = session_io_payload_max();
    CU_ASSERT_EQUAL(cap, g_core.sc->send_queue_bytes / 4);
    char payload[64];
    snprintf(payload, sizeof payload, "{\"size\":%zu}", cap); /* {"data":"..."} is larger */
    run(s, "big", "9", payload);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "error");
    CU_ASSERT_STRING_EQUAL(fake_log[0].reply_to, "9");
    CU_ASSERT_EQUAL(fake_code(0), 1011);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fake_log[0].payload, "message")),
                           "reply too large");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fake_log[0].payload, "command")),
                           "big");
    CU_ASSERT_PTR_NULL(s->busy);
    /* Just under the limit it goes out as is. */
    snprintf(payload, sizeof payload, "{\"size\":%zu}", cap - 11); /* + {"data":""} */
    run(s, "big", "10", payload);
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "response");
    CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(fake_log[1].payload, "data"))),
                    cap - 11);
    session_destroy(s);
}

static void session_event_over_payload_limit_is_dropped(void)
{
    fake_reset();
    struct session *s = fake_session();
    size_t cap = session_io_payload_max();
    char *text = malloc(cap + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memset(text, ' ', cap + 1);
    text[0] = '{';
    text[cap] = '}';
    text[cap + 1] = '\0';
    CU_ASSERT_EQUAL(session_io_send(s, "event", "huge", NULL, text, cap + 1), -1);
    CU_ASSERT_EQUAL(fake_count, 0);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    CU_ASSERT_EQUAL(session_io_send(s, "event", "fits", NULL, text + 1, cap), 0);
    CU_ASSERT_EQUAL(fake_count, 1);
    free(text);
    session_destroy(s);
}

static void held_events_count_with_unsent_output(void)
{
    fake_reset();
    struct session *s = fake_session();
    /* The event emit causes is held until emit's reply; with the queue all
     * but full it takes the session past send_queue_bytes. */
    fill_output(s, g_core.sc->send_queue_bytes - 16);
    run(s, "emit", "1", "{}");
    CU_ASSERT_EQUAL(fake_closed_code, 1008);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    session_destroy(s);
}

static void receive_waits_while_output_congested_and_resumes_after_drain(void)
{
    fake_reset();
    struct session *s = fake_session();
    size_t half = g_core.sc->send_queue_bytes / 2;
    fill_output(s, half);
    /* Not run: its reply would add to a queue already half full. */
    session_io_receive(s, "{}", 2);
    CU_ASSERT_EQUAL(fake_count, 0);
    CU_ASSERT_EQUAL(s->input_count, 1);
    CU_ASSERT_EQUAL(fake_paused, 1);
    /* Still at the threshold: resuming runs nothing yet. */
    session_io_resume(s);
    CU_ASSERT_EQUAL(s->input_count, 1);
    CU_ASSERT_EQUAL(fake_paused, 1);
    /* One frame written whole: below the threshold, the command runs (an
     * unreadable envelope here: error 1004) and reading resumes. */
    outqueue_sent(&s->out, 0, core_mono_now());
    session_io_resume(s);
    CU_ASSERT_EQUAL(s->input_count, 0);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_code(0), 1004);
    CU_ASSERT_EQUAL(fake_paused, 0);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    session_destroy(s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(dispatch_unknown_action_gets_1003),
        SM_TEST(dispatch_login_required_before_payload_check),
        SM_TEST(dispatch_schema_names_offending_field),
        SM_TEST(dispatch_handler_without_reply_gets_1005),
        SM_TEST(dispatch_second_reply_is_refused),
        SM_TEST(dispatch_reply_goes_before_caused_events),
        SM_TEST(dispatch_deferred_reply_and_queued_input_keep_order),
        SM_TEST(dispatch_deferred_reply_after_close_is_dropped),
        SM_TEST(dispatch_deferred_reply_without_timer_closes_1011),
        SM_TEST(dispatch_more_than_64_queued_messages_close_1008),
        SM_TEST(dispatch_rate_limit_gets_1008_with_retry_after),
        SM_TEST(dispatch_byte_limit_gets_1008_with_retry_after),
        SM_TEST(dispatch_byte_limit_comes_after_login_and_before_payload),
        SM_TEST(dispatch_no_reply_action_is_silent_even_when_malformed),
        SM_TEST(topic_publish_reaches_members_except_one),
        SM_TEST(session_users_are_case_insensitive_and_multi_device),
        SM_TEST(session_attributes_set_replace_remove),
        SM_TEST(dispatch_reply_over_payload_limit_becomes_1011),
        SM_TEST(session_event_over_payload_limit_is_dropped),
        SM_TEST(held_events_count_with_unsent_output),
        SM_TEST(receive_waits_while_output_congested_and_resumes_after_drain),
        SM_TEST_END,
    };
    return sm_test_run("dispatch", cases, setup, teardown);
}
