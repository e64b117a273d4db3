/* The hand-off queues from the logic thread to the I/O threads
 * (core/handoff.c): bounded with counted refusals, one wake-up per batch,
 * nothing lost or reordered per producer under contention, nothing leaked
 * at free. */
#include "handoff.h"
#include "safemessenger/plugin.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Items are small integers as pointers (never 0: NULL is refused). */
static void *item(uintptr_t n)
{
    return (void *)n;
}

static void handoff_full_queue_refuses_and_counts(void)
{
    handoff *q = handoff_new(3, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    for (uintptr_t i = 1; i <= 3; i++)
        CU_ASSERT_EQUAL(handoff_push(q, item(i)), SM_OK);
    CU_ASSERT_EQUAL(handoff_push(q, item(4)), SM_EBUSY);
    handoff_stats st;
    handoff_stats_get(q, &st);
    CU_ASSERT_EQUAL(st.queued, 3);
    CU_ASSERT_EQUAL(st.high_water, 3);
    CU_ASSERT_EQUAL(st.pushed, 3);
    CU_ASSERT_EQUAL(st.refused, 1);

    void *out[8];
    CU_ASSERT_EQUAL(handoff_take(q, out, 2), 2);
    CU_ASSERT_PTR_EQUAL(out[0], item(1));
    CU_ASSERT_PTR_EQUAL(out[1], item(2));
    /* Room again, and the ring wraps without reordering. */
    CU_ASSERT_EQUAL(handoff_push(q, item(5)), SM_OK);
    CU_ASSERT_EQUAL(handoff_push(q, item(6)), SM_OK);
    CU_ASSERT_EQUAL(handoff_push(q, item(7)), SM_EBUSY);
    CU_ASSERT_EQUAL(handoff_take(q, out, 8), 3);
    CU_ASSERT_PTR_EQUAL(out[0], item(3));
    CU_ASSERT_PTR_EQUAL(out[1], item(5));
    CU_ASSERT_PTR_EQUAL(out[2], item(6));
    CU_ASSERT_EQUAL(handoff_take(q, out, 8), 0);
    handoff_stats_get(q, &st);
    CU_ASSERT_EQUAL(st.queued, 0);
    CU_ASSERT_EQUAL(st.pushed, 5);
    CU_ASSERT_EQUAL(st.refused, 2);
    handoff_free(q, NULL);
}

static void handoff_refuses_null_and_zero_capacity(void)
{
    CU_ASSERT_PTR_NULL(handoff_new(0, NULL, NULL));
    handoff *q = handoff_new(1, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_EQUAL(handoff_push(q, NULL), SM_EINVAL);
    handoff_stats st;
    handoff_stats_get(q, &st);
    CU_ASSERT_EQUAL(st.pushed, 0);
    CU_ASSERT_EQUAL(st.queued, 0);
    handoff_free(q, NULL);
}

static int wakes;

static void count_wake(void *arg)
{
    CU_ASSERT_PTR_EQUAL(arg, &wakes);
    wakes++;
}

static void handoff_wakes_once_per_batch(void)
{
    wakes = 0;
    handoff *q = handoff_new(16, count_wake, &wakes);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    for (uintptr_t i = 1; i <= 5; i++)
        CU_ASSERT_EQUAL(handoff_push(q, item(i)), SM_OK);
    CU_ASSERT_EQUAL(wakes, 1);
    void *out[16];
    /* A partial take leaves the queue non-empty: no new wake-up is due. */
    CU_ASSERT_EQUAL(handoff_take(q, out, 2), 2);
    CU_ASSERT_EQUAL(handoff_push(q, item(6)), SM_OK);
    CU_ASSERT_EQUAL(wakes, 1);
    CU_ASSERT_EQUAL(handoff_take(q, out, 16), 4);
    CU_ASSERT_EQUAL(handoff_push(q, item(7)), SM_OK);
    CU_ASSERT_EQUAL(wakes, 2);
    /* A refused push into a full queue wakes nobody either. */
    handoff_stats st;
    handoff_stats_get(q, &st);
    CU_ASSERT_EQUAL(st.wakes, 2);
    handoff_free(q, NULL);
}

static int dropped;

static void drop_item(void *p)
{
    dropped++;
    free(p);
}

static void handoff_free_hands_queued_items_to_drop(void)
{
    dropped = 0;
    handoff *q = handoff_new(4, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    for (int i = 0; i < 4; i++) {
        void *p = malloc(16);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL(handoff_push(q, p), SM_OK);
    }
    void *out[1];
    CU_ASSERT_EQUAL(handoff_take(q, out, 1), 1);
    free(out[0]);
    /* Three left, wrapped or not: each reaches drop once (LeakSanitizer
     * would report one that did not, ASan one freed twice). */
    handoff_free(q, drop_item);
    CU_ASSERT_EQUAL(dropped, 3);
}

/* ---- many producers, one consumer ------------------------------------ */

enum { PRODUCERS = 4, PER_PRODUCER = 20000, CAPACITY = 64, TAKE_MAX = 16 };

typedef struct producer {
    pthread_t thread;
    handoff *q;
    uintptr_t id;
    uint64_t retries;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (uintptr_t seq = 0; seq < PER_PRODUCER; seq++) {
        /* Producer id in the low bits, sequence above; +1 keeps it non-NULL. */
        void *it = item(((seq * PRODUCERS) + p->id) + 1);
        while (handoff_push(p->q, it) == SM_EBUSY) {
            p->retries++;
            sched_yield();
        }
    }
    return NULL;
}

/* The consumer's wait (an I/O thread sleeps in lws until
 * lws_cancel_service; here a condition variable does that job). */
typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int signalled;
} waiter;

static void wake_consumer(void *arg)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->signalled = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* 1 when woken, 0 after about a second without a wake-up. */
static int wait_consumer(waiter *w)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock(&w->lock);
    while (!w->signalled && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
        ;
    int woken = w->signalled;
    w->signalled = 0;
    pthread_mutex_unlock(&w->lock);
    return woken;
}

static void handoff_many_producers_deliver_exactly_once_in_order(void)
{
    waiter wt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    waiter *w = &wt;
    handoff *q = handoff_new(CAPACITY, wake_consumer, w);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    producer prod[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++) {
        prod[i] = (producer){.q = q, .id = i, .retries = 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&prod[i].thread, NULL, produce, &prod[i]), 0);
    }
    uintptr_t next[PRODUCERS] = {0};
    size_t received = 0, out_of_order = 0;
    double deadline = mono() + 60.0;
    while (received < (size_t)PRODUCERS * PER_PRODUCER && mono() < deadline) {
        /* The consumer's loop as an I/O thread's: sleep until woken (or a
         * second passed), then take until a take comes back short. */
        wait_consumer(w);
        void *out[TAKE_MAX];
        size_t n;
        do {
            n = handoff_take(q, out, TAKE_MAX);
            for (size_t i = 0; i < n; i++) {
                uintptr_t v = (uintptr_t)out[i] - 1;
                uintptr_t id = v % PRODUCERS, seq = v / PRODUCERS;
                if (seq != next[id])
                    out_of_order++;
                next[id] = seq + 1;
                received++;
            }
        } while (n == TAKE_MAX);
    }
    uint64_t retries = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(prod[i].thread, NULL);
        retries += prod[i].retries;
    }
    CU_ASSERT_EQUAL(received, (size_t)PRODUCERS * PER_PRODUCER);
    CU_ASSERT_EQUAL(out_of_order, 0);
    for (int i = 0; i < PRODUCERS; i++)
        CU_ASSERT_EQUAL(next[i], PER_PRODUCER);
    handoff_stats st;
    handoff_stats_get(q, &st);
    CU_ASSERT_EQUAL(st.pushed, (uint64_t)PRODUCERS * PER_PRODUCER);
    CU_ASSERT_EQUAL(st.refused, retries);
    CU_ASSERT(st.high_water <= CAPACITY);
    CU_ASSERT(st.wakes >= 1 && st.wakes <= st.pushed);
    CU_ASSERT_EQUAL(st.queued, 0);
    handoff_free(q, NULL);
}


int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(handoff_full_queue_refuses_and_counts),
        SM_TEST(handoff_refuses_null_and_zero_capacity),
        SM_TEST(handoff_wakes_once_per_batch),
        SM_TEST(handoff_free_hands_queued_items_to_drop),
        SM_TEST(handoff_many_producers_deliver_exactly_once_in_order),
        SM_TEST_END,
    };
    return sm_test_run("handoff", tests, NULL, NULL);
}
