#include "timers.h"
#include "safemessenger/testhost_suite.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Each callback appends its arg (an int id) to the fired log. */
enum { LOG_MAX = 2048 };
static int fired_log[LOG_MAX];
static size_t fired_len;
static timers *cur; /* the set under test, for callbacks that act on it */

static void record(sm_timer *timer, void *arg)
{
    (void)timer;
    if (fired_len < LOG_MAX)
        fired_log[fired_len++] = (int)(intptr_t)arg;
}

static void reset_log(void)
{
    fired_len = 0;
}

static void *id(int n)
{
    return (void *)(intptr_t)n;
}

static void timers_fire_in_due_order(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 3, 0, record, id(3), NULL));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, record, id(1), NULL));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 2, 0, record, id(2), NULL));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 5, 0, record, id(5), NULL));
    CU_ASSERT_EQUAL(timers_count(cur), 4);
    CU_ASSERT_EQUAL(timers_run_due(cur, 0.5), 0);
    CU_ASSERT_EQUAL(timers_run_due(cur, 3), 3); /* due == now fires */
    CU_ASSERT_EQUAL_FATAL(fired_len, 3);
    CU_ASSERT_EQUAL(fired_log[0], 1);
    CU_ASSERT_EQUAL(fired_log[1], 2);
    CU_ASSERT_EQUAL(fired_log[2], 3);
    CU_ASSERT_EQUAL(timers_count(cur), 1); /* one-shots are gone */
    CU_ASSERT_EQUAL(timers_run_due(cur, 3), 0);
    timers_free(cur);
}

static void timers_with_equal_due_fire_in_start_order(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, record, id(i), NULL));
    CU_ASSERT_EQUAL(timers_run_due(cur, 1), 20);
    int in_order = fired_len == 20;
    for (int i = 0; i < 20 && in_order; i++)
        in_order = fired_log[i] == i;
    CU_ASSERT_TRUE(in_order);
    timers_free(cur);
}

static void heap_keeps_order_with_many_timers_and_stops(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    enum { N = 1000 };
    static sm_timer *handles[N];
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        double after = (double)(x >> 8 & 0xffff) / 16.0;
        handles[i] = timers_start(cur, 0, after, 0, record, id(i), NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(handles[i]);
    }
    for (int i = 0; i < N; i += 3)
        timers_stop(cur, handles[i]);
    size_t expected = N - (N + 2) / 3;
    CU_ASSERT_EQUAL(timers_count(cur), expected);
    /* Fire in several steps; the due times must never go backwards. */
    double last = -1;
    int ordered = 1, stopped_fired = 0;
    size_t total = 0;
    for (double now = 0; now < 4096 + 97; now += 97) {
        size_t from = fired_len;
        total += timers_run_due(cur, now);
        for (size_t k = from; k < fired_len; k++) {
            int i = fired_log[k];
            if (i % 3 == 0)
                stopped_fired++;
            /* Recompute the due time of timer i from the same sequence. */
            uint32_t y = 12345;
            for (int j = 0; j <= i; j++)
                y = y * 1103515245u + 12345u;
            double due = (double)(y >> 8 & 0xffff) / 16.0;
            if (due < last || due > now)
                ordered = 0;
            last = due;
        }
    }
    CU_ASSERT_EQUAL(total, expected);
    CU_ASSERT_EQUAL(fired_len, expected);
    CU_ASSERT_TRUE(ordered);
    CU_ASSERT_EQUAL(stopped_fired, 0);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    CU_ASSERT_EQUAL(timers_next_due(cur, 0), -1);
    timers_free(cur);
}

static void repeat_reschedules_from_due_time_without_drift(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL_FATAL(timers_start(cur, 100, 1, 2, record, id(1), NULL));
    CU_ASSERT_EQUAL(timers_run_due(cur, 101.3), 1); /* late by 0.3 */
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 101.3), 1.7, 1e-9); /* due 103, not 103.3 */
    CU_ASSERT_EQUAL(timers_run_due(cur, 102.9), 0);
    CU_ASSERT_EQUAL(timers_run_due(cur, 103.0), 1);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 103.0), 2.0, 1e-9);
    CU_ASSERT_EQUAL(timers_count(cur), 1);
    CU_ASSERT_EQUAL(fired_len, 2);
    timers_free(cur);
}

static void repeat_fires_once_per_call_when_periods_were_missed(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL_FATAL(timers_start(cur, 0, 1, 1, record, id(1), NULL));
    /* Due 1, 2, 3, 4, 5 have all passed at 5.5: one firing per call. */
    for (int call = 0; call < 5; call++) {
        CU_ASSERT_EQUAL(timers_run_due(cur, 5.5), 1);
        if (call < 4)
            CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 5.5), 0, 0);
    }
    CU_ASSERT_EQUAL(timers_run_due(cur, 5.5), 0);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 5.5), 0.5, 1e-9);
    CU_ASSERT_EQUAL(fired_len, 5);
    timers_free(cur);
}

static int self_stop_calls;

static void stop_self(sm_timer *timer, void *arg)
{
    (void)arg;
    self_stop_calls++;
    timers_stop(cur, timer);
    timers_stop(cur, timer); /* twice is harmless inside the callback */
}

static void timer_stopped_from_own_callback_is_freed_once(void)
{
    self_stop_calls = 0;
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 1, stop_self, NULL, NULL)); /* repeating */
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, stop_self, NULL, NULL)); /* one-shot */
    CU_ASSERT_EQUAL(timers_run_due(cur, 10), 2);
    CU_ASSERT_EQUAL(self_stop_calls, 2);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    CU_ASSERT_EQUAL(timers_run_due(cur, 20), 0);
    CU_ASSERT_EQUAL(self_stop_calls, 2);
    CU_ASSERT_EQUAL(timers_next_due(cur, 20), -1);
    timers_free(cur);
}

static sm_timer *victim;

static void stop_victim(sm_timer *timer, void *arg)
{
    (void)timer;
    record(timer, arg);
    timers_stop(cur, victim);
    victim = NULL;
}

static void timer_stopped_by_another_callback_never_fires(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, stop_victim, id(1), NULL));
    victim = timers_start(cur, 0, 2, 1, record, id(2), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(victim);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 3, 0, record, id(3), NULL));
    CU_ASSERT_EQUAL(timers_run_due(cur, 10), 2);
    CU_ASSERT_EQUAL_FATAL(fired_len, 2);
    CU_ASSERT_EQUAL(fired_log[0], 1);
    CU_ASSERT_EQUAL(fired_log[1], 3);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    timers_free(cur);
}

static sm_timer *started_in_callback;

static void start_another(sm_timer *timer, void *arg)
{
    record(timer, arg);
    /* after = 0: due now, but it must wait for the next call. */
    started_in_callback = timers_start(cur, 5, 0, 0, record, id(99), NULL);
}

static void timer_started_from_callback_fires_in_next_call(void)
{
    reset_log();
    started_in_callback = NULL;
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, start_another, id(1), NULL));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 5, 0, record, id(5), NULL));
    CU_ASSERT_EQUAL(timers_run_due(cur, 5), 2);
    CU_ASSERT_PTR_NOT_NULL(started_in_callback);
    CU_ASSERT_EQUAL_FATAL(fired_len, 2);
    CU_ASSERT_EQUAL(fired_log[0], 1);
    CU_ASSERT_EQUAL(fired_log[1], 5); /* the older timer was not blocked */
    CU_ASSERT_EQUAL(timers_count(cur), 1);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 5), 0, 0);
    CU_ASSERT_EQUAL(timers_run_due(cur, 5), 1);
    CU_ASSERT_EQUAL_FATAL(fired_len, 3);
    CU_ASSERT_EQUAL(fired_log[2], 99);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    timers_free(cur);
}

static sm_timer *deferred;

static void start_then_stop(sm_timer *timer, void *arg)
{
    record(timer, arg);
    if ((int)(intptr_t)arg == 1) {
        deferred = timers_start(cur, 2, 0, 0, record, id(50), NULL);
    } else {
        timers_stop(cur, deferred); /* set aside by this call: freed at its end */
        deferred = NULL;
    }
}

static void timer_started_and_stopped_within_one_call(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, start_then_stop, id(1), NULL));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 3, 0, start_then_stop, id(2), NULL));
    CU_ASSERT_EQUAL(timers_run_due(cur, 3), 2);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    CU_ASSERT_EQUAL(timers_run_due(cur, 10), 0);
    CU_ASSERT_EQUAL(fired_len, 2);
    timers_free(cur);
}

static int owner_a, owner_b;

static void stop_owner_a(sm_timer *timer, void *arg)
{
    record(timer, arg);
    timers_stop_owner(cur, &owner_a); /* includes this running timer */
}

static void stop_owner_removes_only_that_owners_timers(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_PTR_NOT_NULL(
            timers_start(cur, 0, i + 1, 1, record, id(i), i % 2 ? &owner_b : &owner_a));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 0, record, id(100), NULL));
    CU_ASSERT_EQUAL(timers_count(cur), 7);
    timers_stop_owner(cur, &owner_a);
    CU_ASSERT_EQUAL(timers_count(cur), 4);
    timers_stop_owner(cur, &owner_a); /* none left: no-op */
    CU_ASSERT_EQUAL(timers_count(cur), 4);
    CU_ASSERT_EQUAL(timers_run_due(cur, 6), 4);
    int only_b = 1;
    for (size_t k = 0; k < fired_len; k++)
        only_b &= fired_log[k] % 2 == 1 || fired_log[k] == 100;
    CU_ASSERT_TRUE(only_b);
    CU_ASSERT_EQUAL(timers_count(cur), 3); /* owner_b's repeating timers */
    timers_free(cur);
}

static void stop_owner_from_callback(void)
{
    reset_log();
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 1, 1, stop_owner_a, id(1), &owner_a));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 2, 1, record, id(2), &owner_a));
    CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, 2, 1, record, id(3), &owner_b));
    CU_ASSERT_EQUAL(timers_run_due(cur, 2), 2);
    CU_ASSERT_EQUAL_FATAL(fired_len, 2);
    CU_ASSERT_EQUAL(fired_log[0], 1);
    CU_ASSERT_EQUAL(fired_log[1], 3);
    CU_ASSERT_EQUAL(timers_count(cur), 1);
    timers_free(cur);
}

static void next_due_and_count(void)
{
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 0), -1, 0);
    sm_timer *a = timers_start(cur, 10, 5, 0, record, id(1), NULL);
    sm_timer *b = timers_start(cur, 10, 2.5, 0, record, id(2), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(timers_count(cur), 2);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 10), 2.5, 0);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 20), 0, 0); /* overdue */
    timers_stop(cur, b);
    CU_ASSERT_EQUAL(timers_count(cur), 1);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 11), 4, 0);
    timers_stop(cur, a);
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    CU_ASSERT_DOUBLE_EQUAL(timers_next_due(cur, 11), -1, 0);
    timers_stop(cur, NULL); /* ignored */
    timers_free(cur);
    timers_free(NULL);
}

static void start_rejects_invalid_times(void)
{
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    CU_ASSERT_PTR_NULL(timers_start(cur, 0, -1, 0, record, NULL, NULL));
    CU_ASSERT_PTR_NULL(timers_start(cur, 0, 1, -1, record, NULL, NULL));
    CU_ASSERT_PTR_NULL(timers_start(cur, 0, NAN, 0, record, NULL, NULL));
    CU_ASSERT_PTR_NULL(timers_start(cur, 0, 1, INFINITY, record, NULL, NULL));
    CU_ASSERT_PTR_NULL(timers_start(cur, 0, 1, 0, NULL, NULL, NULL));
    CU_ASSERT_EQUAL(timers_count(cur), 0);
    timers_free(cur);
}

static void free_with_remaining_timers_releases_them(void)
{
    cur = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
    for (int i = 0; i < 100; i++)
        CU_ASSERT_PTR_NOT_NULL(timers_start(cur, 0, i, i % 2, record, id(i), NULL));
    reset_log();
    timers_free(cur); /* LeakSanitizer checks that they were freed */
    CU_ASSERT_EQUAL(fired_len, 0); /* without calling them */
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(timers_fire_in_due_order),
        SM_TEST(timers_with_equal_due_fire_in_start_order),
        SM_TEST(heap_keeps_order_with_many_timers_and_stops),
        SM_TEST(repeat_reschedules_from_due_time_without_drift),
        SM_TEST(repeat_fires_once_per_call_when_periods_were_missed),
        SM_TEST(timer_stopped_from_own_callback_is_freed_once),
        SM_TEST(timer_stopped_by_another_callback_never_fires),
        SM_TEST(timer_started_from_callback_fires_in_next_call),
        SM_TEST(timer_started_and_stopped_within_one_call),
        SM_TEST(stop_owner_removes_only_that_owners_timers),
        SM_TEST(stop_owner_from_callback),
        SM_TEST(next_due_and_count),
        SM_TEST(start_rejects_invalid_times),
        SM_TEST(free_with_remaining_timers_releases_them),
        SM_TEST_END,
    };
    return sm_test_run("timers", cases, NULL, NULL);
}
