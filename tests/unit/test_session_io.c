/* Session I/O (core/session_io.c) on sealed envelopes through a fake
 * transport: one command at a time and in order, replies before the events
 * they cause, held events, back-pressure, the slow-consumer cut, the stall
 * check and the failure paths that reply and close. */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "fake_transport.h"
#include "plugin_loader.h"
#include "safemessenger/testhost_suite.h"
#include "session.h"
#include "session_io.h"

static double fake_mono;
static double (*real_mono_clock)(void);

static double test_clock(void) { return fake_mono; }

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &fake_transport};
    if (core_start(&o) != 0)
        return -1;
    real_mono_clock = g_core.mono_clock;
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

/* Zero-delay timers (the resume after a deferred reply) run. */
static void next_turn(void) { timers_run_due(g_core.timers, core_mono_now() + 0.001); }

static const char *reply_to(size_t i) { return fake_log[i].reply_to; }

static void pipelined_commands_run_one_at_a_time_in_order(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    sm_session_id id = s->id;
    CU_ASSERT_EQUAL(fake_send(s, "deferred_echo", "{\"n\":1}"), 0);
    CU_ASSERT_PTR_NOT_NULL(s->busy);
    CU_ASSERT_EQUAL(fake_send(s, "echo", "{\"n\":2}"), 0);
    CU_ASSERT_EQUAL(fake_send(s, "deferred_echo", "{\"n\":3}"), 0);
    CU_ASSERT_EQUAL(fake_send(s, "echo", "{\"n\":4}"), 0);
    /* Nothing behind the command in flight ran; reading stopped. */
    CU_ASSERT_EQUAL(fake_count, 0);
    CU_ASSERT_EQUAL(s->input_count, 3);
    CU_ASSERT_EQUAL(fake_paused, 1);
    workers_drain(g_core.pool);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    /* The next ones run on the next loop turn, up to the next deferred
     * command, which again holds the rest. */
    next_turn();
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_EQUAL(s->input_count, 1);
    CU_ASSERT_EQUAL(fake_paused, 1);
    workers_drain(g_core.pool);
    next_turn();
    s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(fake_count, 4);
    const char *want[] = {"1", "2", "3", "4"};
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(fake_log[i].type, "response");
        CU_ASSERT_STRING_EQUAL(reply_to(i), want[i]);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(fake_log[i].payload, "n")),
                        (json_int_t)(i + 1));
    }
    CU_ASSERT_EQUAL(s->input_count, 0);
    CU_ASSERT_EQUAL(fake_paused, 0);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    session_destroy(s);
}

static void reply_goes_before_the_events_it_causes(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(fake_send(s, "emit_many", "{\"count\":3}"), 0);
    CU_ASSERT_EQUAL_FATAL(fake_count, 4);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[0].action, "emit_many");
    for (size_t i = 1; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(fake_log[i].type, "event");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(fake_log[i].payload, "i")),
                        (json_int_t)(i - 1));
    }
    CU_ASSERT_EQUAL(s->held_count, 0);
    session_destroy(s);
}

static void held_events_go_out_after_a_deferred_reply(void)
{
    fake_reset();
    struct session *s = fake_session(), *other = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    CU_ASSERT_EQUAL(fake_send(s, "deferred_echo", "{}"), 0);
    /* Events from elsewhere while the command is in flight wait for its
     * reply; another session's are not held. */
    json_t *ev = json_pack("{s:i}", "k", 7);
    CU_ASSERT_EQUAL(session_send_event_json(s, "later", ev), SM_OK);
    CU_ASSERT_EQUAL(session_send_event_json(other, "now", ev), SM_OK);
    json_decref(ev);
    CU_ASSERT_EQUAL(s->held_count, 1);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_log[0].session, other->id);
    workers_drain(g_core.pool);
    CU_ASSERT_EQUAL_FATAL(fake_count, 3);
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[1].reply_to, "1");
    CU_ASSERT_STRING_EQUAL(fake_log[2].type, "event");
    CU_ASSERT_STRING_EQUAL(fake_log[2].action, "later");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(fake_log[2].payload, "k")), 7);
    CU_ASSERT_EQUAL(s->held_count, 0);
    CU_ASSERT_EQUAL(s->held_bytes, 0);
    next_turn();
    session_destroy(s);
    session_destroy(other);
}

/* Queues events of about `bytes` payload bytes each until the unsent
 * output reaches `until` bytes (the fake holding every frame). */
static void fill_with_events(struct session *s, size_t bytes, size_t until)
{
    char *text = malloc(bytes + 16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    int n = snprintf(text, bytes + 16, "{\"d\":\"%*s\"}", (int)bytes, "");
    CU_ASSERT_FATAL(n > 0);
    while (outqueue_unsent(&s->out) < until && s->state != SESSION_CLOSING)
        session_io_send(s, "event", "filler", NULL, text, (size_t)n);
    free(text);
}

static void congested_output_pauses_input_until_it_drains(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t max = g_core.sc->send_queue_bytes;
    fake_hold = 1;
    fill_with_events(s, 16384, max / 2);
    CU_ASSERT_EQUAL(s->state, SESSION_OPEN);
    size_t frames = outqueue_messages(&s->out);
    /* At half the bound the next command waits, reading paused. */
    CU_ASSERT_EQUAL(fake_send(s, "echo", "{\"n\":1}"), 0);
    CU_ASSERT_EQUAL(s->input_count, 1);
    CU_ASSERT_EQUAL(fake_paused, 1);
    CU_ASSERT_EQUAL(outqueue_messages(&s->out), frames);
    /* Output moved but is still at the threshold: still waiting. */
    session_io_output_moved(s);
    CU_ASSERT_EQUAL(s->input_count, 1);
    /* The client reads one frame: below the threshold, the command runs
     * and reading resumes. */
    fake_take(s, 1);
    session_io_output_moved(s);
    CU_ASSERT_EQUAL(s->input_count, 0);
    CU_ASSERT_EQUAL(fake_paused, 0);
    fake_hold = 0;
    fake_take(s, (size_t)-1);
    CU_ASSERT_EQUAL_FATAL(fake_count, frames + 1);
    CU_ASSERT_STRING_EQUAL(fake_log[frames].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[frames].reply_to, "1");
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    session_destroy(s);
}

static void slow_consumer_is_cut_and_its_queue_freed(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    fake_hold = 1;
    /* Events the client does not read, past limits.send_queue_bytes. */
    fill_with_events(s, 65536, g_core.sc->send_queue_bytes + 1);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    /* Dropped without a close frame (the client sees 1006), memory freed
     * at once. */
    CU_ASSERT_EQUAL(fake_closed_code, 1006);
    CU_ASSERT_EQUAL(outqueue_unsent(&s->out), 0);
    CU_ASSERT_EQUAL(session_io_send(s, "event", "late", NULL, "{}", 2), -1);
    CU_ASSERT_EQUAL(outqueue_messages(&s->out), 0);
    session_destroy(s);
}

static void slow_consumer_by_message_count_is_cut(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    fake_hold = 1;
    size_t max = g_core.sc->send_queue_messages;
    for (size_t i = 0; i < max; i++)
        CU_ASSERT_EQUAL_FATAL(session_io_send(s, "event", "small", NULL, "{}", 2), 0);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    CU_ASSERT_EQUAL(session_io_send(s, "event", "small", NULL, "{}", 2), -1);
    CU_ASSERT_EQUAL(fake_closed_code, 1006);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    session_destroy(s);
}

static void stalled_output_is_cut_after_send_timeout(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    double timeout = (double)g_core.sc->send_timeout, check_in = -1;
    fake_mono = 1000.0;
    g_core.mono_clock = test_clock;
    /* Nothing pending: no check needed. */
    CU_ASSERT_EQUAL(session_io_check_stall(s, &check_in), 0);
    CU_ASSERT_EQUAL(check_in, 0);
    fake_hold = 1;
    CU_ASSERT_EQUAL(session_io_send(s, "event", "unread", NULL, "{}", 2), 0);
    fake_mono += timeout / 2;
    CU_ASSERT_EQUAL(session_io_check_stall(s, &check_in), 0);
    CU_ASSERT_DOUBLE_EQUAL(check_in, timeout / 2, 1e-9);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    fake_mono += timeout / 2;
    CU_ASSERT_EQUAL(session_io_check_stall(s, &check_in), 1);
    g_core.mono_clock = real_mono_clock;
    CU_ASSERT_EQUAL(fake_closed_code, 1006);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    CU_ASSERT_FALSE(session_io_output_pending(s));
    session_destroy(s);
}

static void replayed_nonce_replies_1006_and_closes_1008(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    fake_client *c = fake_client_of(s->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    char *frame = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(envelope_seal(&c->c2s, "command", "echo", NULL, "{}", 2, &frame, &len),
                          0);
    session_io_receive(s, frame, len);
    session_io_receive(s, frame, len);
    free(frame);
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "error");
    CU_ASSERT_EQUAL(fake_code(1), SM_ERR_REPLAY);
    CU_ASSERT_EQUAL(fake_closed_code, 1008);
    CU_ASSERT_STRING_EQUAL(s->close_reason, "bad nonce");
    /* Closing: nothing more is read. */
    CU_ASSERT_EQUAL(fake_send(s, "echo", "{}"), 0);
    CU_ASSERT_EQUAL(fake_count, 2);
    session_destroy(s);
}

static void tampered_envelope_replies_1007_and_closes_1008(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    fake_client *c = fake_client_of(s->id);
    char *frame = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(envelope_seal(&c->c2s, "command", "echo", NULL, "{}", 2, &frame, &len),
                          0);
    /* Another action than the one signed. */
    char *at = strstr(frame, "\"echo\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    memcpy(at + 1, "ECHO", 4);
    session_io_receive(s, frame, len);
    free(frame);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_EQUAL(fake_code(0), SM_ERR_INTEGRITY);
    CU_ASSERT_EQUAL(fake_closed_code, 1008);
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    session_destroy(s);
}

static void fail_replies_then_closes_once(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    session_io_fail(s, SM_ERR_TOO_LARGE, "message too large", 1009);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].type, "error");
    CU_ASSERT_EQUAL(fake_code(0), SM_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(fake_closed_code, 1009);
    CU_ASSERT_STRING_EQUAL(s->close_reason, "message too large");
    /* A second close keeps the first code. */
    session_io_close(s, 1000, "bye");
    CU_ASSERT_EQUAL(s->close_code, 1009);
    session_destroy(s);
}

static void held_events_over_the_bound_close_1008(void)
{
    fake_reset();
    struct session *s = fake_session();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char payload[64];
    snprintf(payload, sizeof payload, "{\"count\":%zu}", g_core.sc->send_queue_messages + 1);
    CU_ASSERT_EQUAL(fake_send(s, "emit_many", payload), 0);
    CU_ASSERT_EQUAL(fake_closed_code, 1008);
    CU_ASSERT_STRING_EQUAL(s->close_reason, "send queue overflow");
    CU_ASSERT_EQUAL(s->held_count, 0);
    /* The reply came after the close: not sent. */
    CU_ASSERT_EQUAL(fake_count, 0);
    session_destroy(s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(pipelined_commands_run_one_at_a_time_in_order),
        SM_TEST(reply_goes_before_the_events_it_causes),
        SM_TEST(held_events_go_out_after_a_deferred_reply),
        SM_TEST(congested_output_pauses_input_until_it_drains),
        SM_TEST(slow_consumer_is_cut_and_its_queue_freed),
        SM_TEST(slow_consumer_by_message_count_is_cut),
        SM_TEST(stalled_output_is_cut_after_send_timeout),
        SM_TEST(replayed_nonce_replies_1006_and_closes_1008),
        SM_TEST(tampered_envelope_replies_1007_and_closes_1008),
        SM_TEST(fail_replies_then_closes_once),
        SM_TEST(held_events_over_the_bound_close_1008),
        SM_TEST_END,
    };
    return sm_test_run("session_io", cases, setup, teardown);
}
