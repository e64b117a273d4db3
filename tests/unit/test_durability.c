/* Group commit's hold and release (core/durability.c) with a barrier the
 * test controls: nothing after an unconfirmed write leaves before its
 * barrier, the order is kept, one barrier covers what was held when it
 * began, items with no write ahead of them go at once, a failing barrier
 * is retried and, after the give-up time, releases unconfirmed, and stop
 * confirms and releases everything. */
#include "durability.h"
#include "workers.h"
#include "safemessenger/plugin.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static workers *pool;
static uint64_t commits;          /* the "storage's" write commits */
static int kicks;                 /* ops.kick calls not yet acted on */
static uintptr_t released[64];
static durability_stats base; /* the totals when the case started */
static size_t n_released;
static atomic_int barriers_run;
static atomic_int fail_barriers;  /* the next n barriers fail */
/* A barrier waits while gate is closed, so the test sees it in flight. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open = 1;

static int barrier(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    atomic_fetch_add(&barriers_run, 1);
    if (atomic_load(&fail_barriers) > 0) {
        atomic_fetch_sub(&fail_barriers, 1);
        return -1;
    }
    return 0;
}

static void set_gate(int open)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = open;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static void release(int index, void *item)
{
    CU_ASSERT_EQUAL(index, (int)((uintptr_t)item % 4));
    if (n_released < sizeof released / sizeof released[0])
        released[n_released++] = (uintptr_t)item;
}

static uint64_t commit_count(void) { return commits; }
static void kick(void) { kicks++; }

/* The logic thread's turn: the kick it was asked for, then the finished
 * barrier's completion, until nothing changes for a while. */
static void settle(void)
{
    int quiet = 0;
    for (int i = 0; i < 2000 && quiet < 5; i++) {
        size_t ran = 0;
        if (kicks > 0) {
            kicks = 0;
            durability_kick();
            ran++;
        }
        ran += workers_run_completions(pool);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        /* Quiet: nothing ran, nothing asked for, no job queued, running
         * or finished and waiting for its completion. */
        quiet = ran == 0 && kicks == 0 && workers_pending(pool) == 0 &&
                        workers_run_completions(pool) == 0
                    ? quiet + 1
                    : 0;
    }
}

static void *item(uintptr_t n) { return (void *)n; }

static int hold(uintptr_t n) { return durability_hold((int)(n % 4), item(n)); }

static void start(double give_up)
{
    commits = 0;
    kicks = 0;
    n_released = 0;
    atomic_store(&barriers_run, 0);
    atomic_store(&fail_barriers, 0);
    set_gate(1);
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &pool), 0);
    durability_ops ops = {.barrier = barrier, .release = release, .commits = commit_count,
                          .kick = kick, .give_up_s = give_up};
    CU_ASSERT_EQUAL_FATAL(durability_start(pool, &ops), SM_OK);
    CU_ASSERT_EQUAL(durability_start(pool, &ops), SM_ESTATE);
    durability_stats_get(&base);
}

static void finish(void)
{
    durability_stop();
    CU_ASSERT_FALSE(durability_active());
    workers_stop(pool);
    pool = NULL;
}

static void nothing_written_nothing_held(void)
{
    start(0);
    CU_ASSERT_EQUAL(hold(1), 0);
    CU_ASSERT_EQUAL(hold(2), 0);
    CU_ASSERT_EQUAL(kicks, 0);
    settle();
    CU_ASSERT_EQUAL(atomic_load(&barriers_run), 0);
    finish();
}

static void held_after_a_write_until_its_barrier_in_order(void)
{
    start(0);
    set_gate(0);
    commits++;                     /* a handler committed ... */
    CU_ASSERT_EQUAL(hold(5), 1);   /* ... its reply and event wait */
    CU_ASSERT_EQUAL(hold(6), 1);
    CU_ASSERT_EQUAL(kicks, 1);     /* one kick for the pass */
    CU_ASSERT_EQUAL(hold(7), 1);
    CU_ASSERT_EQUAL(kicks, 1);
    kicks = 0;
    durability_kick();             /* the barrier starts, and waits at the gate */
    /* A reply that needs no write, behind them: held for the order. */
    CU_ASSERT_EQUAL(hold(8), 1);
    commits++;
    CU_ASSERT_EQUAL(hold(9), 1);   /* after a write the first barrier may not cover */
    settle();
    CU_ASSERT_EQUAL(n_released, 0);
    durability_stats st;
    durability_stats_get(&st);
    CU_ASSERT_EQUAL(st.held, 5);
    set_gate(1);
    settle();
    /* First barrier: 5, 6, 7; the second (commits moved): 8, 9. */
    CU_ASSERT_EQUAL_FATAL(n_released, 5);
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(released[i], 5 + i);
    CU_ASSERT_EQUAL(atomic_load(&barriers_run), 2);
    /* All confirmed: the next one goes at once. */
    CU_ASSERT_EQUAL(hold(10), 0);
    durability_stats_get(&st);
    CU_ASSERT_EQUAL(st.barriers - base.barriers, 2);
    CU_ASSERT_EQUAL(st.released - base.released, 5);
    CU_ASSERT_EQUAL(st.held, 0);
    CU_ASSERT(st.high_water >= 5);
    finish();
}

/* Items held only for the order, with no write since the last barrier,
 * go without another one. */
static void no_new_write_no_second_barrier(void)
{
    start(0);
    set_gate(0);
    commits++;
    CU_ASSERT_EQUAL(hold(1), 1);
    kicks = 0;
    durability_kick();
    CU_ASSERT_EQUAL(hold(2), 1); /* no write since the barrier began */
    set_gate(1);
    settle();
    CU_ASSERT_EQUAL(n_released, 2);
    CU_ASSERT_EQUAL(atomic_load(&barriers_run), 1);
    finish();
}

static void failing_barrier_retried_then_released(void)
{
    start(0);
    atomic_store(&fail_barriers, 2);
    commits++;
    CU_ASSERT_EQUAL(hold(3), 1);
    settle();
    CU_ASSERT_EQUAL(atomic_load(&barriers_run), 3); /* two failures, then confirmed */
    CU_ASSERT_EQUAL(n_released, 1);
    durability_stats st;
    durability_stats_get(&st);
    CU_ASSERT_EQUAL(st.failures - base.failures, 2);
    CU_ASSERT_EQUAL(st.unconfirmed - base.unconfirmed, 0);
    finish();
}

static void giving_up_releases_unconfirmed(void)
{
    start(0.2);
    atomic_store(&fail_barriers, 1000);
    commits++;
    CU_ASSERT_EQUAL(hold(1), 1);
    CU_ASSERT_EQUAL(hold(2), 1);
    settle();
    CU_ASSERT_EQUAL(n_released, 2);
    durability_stats st;
    durability_stats_get(&st);
    CU_ASSERT_EQUAL(st.unconfirmed - base.unconfirmed, 2);
    CU_ASSERT_EQUAL(st.released - base.released, 0);
    atomic_store(&fail_barriers, 0);
    finish();
}

static void stop_confirms_and_releases_everything(void)
{
    start(0);
    set_gate(0);
    commits++;
    CU_ASSERT_EQUAL(hold(1), 1);
    kicks = 0;
    durability_kick();         /* in flight at the gate */
    commits++;
    CU_ASSERT_EQUAL(hold(2), 1);
    set_gate(1);
    durability_stop();         /* waits for it (or cancels it), confirms, releases */
    CU_ASSERT_EQUAL_FATAL(n_released, 2);
    CU_ASSERT_EQUAL(released[0], 1);
    CU_ASSERT_EQUAL(released[1], 2);
    CU_ASSERT(atomic_load(&barriers_run) >= 1);
    durability_stats st;
    durability_stats_get(&st);
    CU_ASSERT_EQUAL(st.unconfirmed - base.unconfirmed, 0);
    CU_ASSERT_EQUAL(hold(3), 0); /* off: nothing held */
    workers_stop(pool);
    pool = NULL;
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(nothing_written_nothing_held),
        SM_TEST(held_after_a_write_until_its_barrier_in_order),
        SM_TEST(no_new_write_no_second_barrier),
        SM_TEST(failing_barrier_retried_then_released),
        SM_TEST(giving_up_releases_unconfirmed),
        SM_TEST(stop_confirms_and_releases_everything),
        SM_TEST_END,
    };
    return sm_test_run("durability", cases, NULL, NULL);
}
