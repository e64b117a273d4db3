/* The logic thread's loop (core/logic_loop.c): tasks posted from other
 * threads run on the loop's thread, each exactly once and in each
 * poster's order; timers fire on time with nothing posted; a flood of
 * tasks does not starve a due timer; a full queue refuses; stop ends the
 * loop; tasks still queued at free are dropped, not leaked. */
#include "logic_loop.h"
#include "safemessenger/plugin.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct loop_fixture {
    timers *t;
    logic_loop *l;
    pthread_t thread;
    pthread_t loop_thread;  /* set by the loop thread itself */
    int run_status;
} loop_fixture;

static loop_fixture fx;

static void *run_loop(void *arg)
{
    loop_fixture *f = arg;
    f->loop_thread = pthread_self();
    f->run_status = logic_loop_run(f->l);
    return NULL;
}

static void fixture_start(size_t capacity)
{
    fx.t = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.t);
    fx.l = logic_loop_new(fx.t, mono, capacity);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.l);
    fx.run_status = -99;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&fx.thread, NULL, run_loop, &fx), 0);
}

static void fixture_stop(void)
{
    logic_loop_stop(fx.l);
    pthread_join(fx.thread, NULL);
    CU_ASSERT_EQUAL(fx.run_status, 0);
    logic_loop_free(fx.l);
    timers_free(fx.t);
}

/* ---- tasks from many threads ------------------------------------------- */

enum { POSTERS = 4, PER_POSTER = 5000 };

typedef struct counted_task {
    logic_task base;    /* first */
    int poster;
    int seq;
} counted_task;

/* Touched only on the loop thread (ThreadSanitizer checks that), read by
 * the test after the join. */
static int next_seq[POSTERS];
static int out_of_order, off_thread, ran;
static atomic_int dropped;

static void run_counted(logic_task *task)
{
    counted_task *c = (counted_task *)task;
    if (!pthread_equal(pthread_self(), fx.loop_thread))
        off_thread++;
    if (c->seq != next_seq[c->poster])
        out_of_order++;
    next_seq[c->poster] = c->seq + 1;
    ran++;
    free(c);
}

static void drop_counted(logic_task *task)
{
    atomic_fetch_add(&dropped, 1);
    free(task);
}

static counted_task *new_task(int poster, int seq)
{
    counted_task *c = malloc(sizeof *c);
    if (c)
        *c = (counted_task){{run_counted, drop_counted}, poster, seq};
    return c;
}

typedef struct poster {
    pthread_t thread;
    int id;
    long refused;
    int failed;
} poster;

static void *post_all(void *arg)
{
    poster *p = arg;
    for (int seq = 0; seq < PER_POSTER; seq++) {
        counted_task *c = new_task(p->id, seq);
        if (!c) {
            p->failed = 1;
            return NULL;
        }
        /* The back-pressure path of an I/O thread, shortened: wait for
         * room instead of reading more. */
        while (logic_loop_post(fx.l, &c->base) == SM_EBUSY) {
            p->refused++;
            sched_yield();
        }
    }
    return NULL;
}

static void logic_loop_runs_posted_tasks_once_in_order_on_its_thread(void)
{
    for (int i = 0; i < POSTERS; i++)
        next_seq[i] = 0;
    out_of_order = off_thread = ran = 0;
    fixture_start(32);
    poster p[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        p[i] = (poster){.id = i, .refused = 0, .failed = 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&p[i].thread, NULL, post_all, &p[i]), 0);
    }
    long refused = 0;
    for (int i = 0; i < POSTERS; i++) {
        pthread_join(p[i].thread, NULL);
        CU_ASSERT_EQUAL(p[i].failed, 0);
        refused += p[i].refused;
    }
    /* Every post is in; a task that waits for all of them to have run
     * would need another post, so wait on the stats instead. */
    double deadline = mono() + 60.0;
    handoff_stats st;
    do {
        logic_loop_stats(fx.l, &st);
        if (st.queued == 0)
            break;
        sched_yield();
    } while (mono() < deadline);
    fixture_stop();
    CU_ASSERT_EQUAL(ran, POSTERS * PER_POSTER);
    CU_ASSERT_EQUAL(out_of_order, 0);
    CU_ASSERT_EQUAL(off_thread, 0);
    CU_ASSERT_EQUAL(st.refused, (uint64_t)refused);
    CU_ASSERT(st.high_water <= 32);
}

/* ---- timers ------------------------------------------------------------ */

static atomic_int timer_fired;
static double fired_at;

static void on_timer(sm_timer *timer, void *arg)
{
    (void)timer;
    (void)arg;
    fired_at = mono();
    atomic_store(&timer_fired, 1);
}

typedef struct start_timer_task {
    logic_task base;
    double after;
    double started_at;
} start_timer_task;

/* Timers belong to the loop's thread: another thread starts one through a
 * task, as a plugin would from a handler. */
static void run_start_timer(logic_task *task)
{
    start_timer_task *s = (start_timer_task *)task;
    s->started_at = mono();
    CU_ASSERT_PTR_NOT_NULL(timers_start(fx.t, mono(), s->after, 0, on_timer, NULL, NULL));
}

static void logic_loop_fires_a_timer_on_time_while_idle(void)
{
    atomic_store(&timer_fired, 0);
    fixture_start(8);
    start_timer_task s = {{run_start_timer, NULL}, 0.15, 0};
    CU_ASSERT_EQUAL(logic_loop_post(fx.l, &s.base), SM_OK);
    double deadline = mono() + 30.0;
    while (!atomic_load(&timer_fired) && mono() < deadline) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fixture_stop();
    CU_ASSERT_EQUAL_FATAL(atomic_load(&timer_fired), 1);
    /* Not early; late only by scheduling (generous for a loaded machine). */
    CU_ASSERT(fired_at - s.started_at >= 0.149);
    CU_ASSERT(fired_at - s.started_at < 5.0);
}

/* ---- a flood does not starve timers -------------------------------------- */

static int flood_left;
static int timer_during_flood;

static void run_flood(logic_task *task);

/* Twice a turn's worth, each posting itself again while the flood lasts:
 * the queue never runs dry. */
static logic_task flood[2 * LOGIC_LOOP_TURN];

static void run_flood(logic_task *task)
{
    if (--flood_left >= (int)(sizeof flood / sizeof flood[0]))
        CU_ASSERT_EQUAL(logic_loop_post(fx.l, task), SM_OK);
}

static void on_flood_timer(sm_timer *timer, void *arg)
{
    (void)timer;
    (void)arg;
    timer_during_flood = flood_left > 0;
}

static void logic_loop_turn_bounds_tasks_so_timers_run(void)
{
    const int n = (int)(sizeof flood / sizeof flood[0]);
    fx.t = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.t);
    fx.l = logic_loop_new(fx.t, mono, (size_t)n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.l);
    fx.loop_thread = pthread_self();
    flood_left = 10 * LOGIC_LOOP_TURN;
    timer_during_flood = 0;
    for (int i = 0; i < n; i++) {
        flood[i] = (logic_task){run_flood, NULL};
        CU_ASSERT_EQUAL_FATAL(logic_loop_post(fx.l, &flood[i]), SM_OK);
    }
    CU_ASSERT_PTR_NOT_NULL(timers_start(fx.t, mono(), 0, 0, on_flood_timer, NULL, NULL));
    /* Driven synchronously, as the test host would: the turn runs the due
     * timer and stops after LOGIC_LOOP_TURN tasks, queue still full. */
    CU_ASSERT_EQUAL(logic_loop_turn(fx.l), 1 + LOGIC_LOOP_TURN);
    CU_ASSERT_EQUAL(timer_during_flood, 1);
    CU_ASSERT_EQUAL(flood_left, 9 * LOGIC_LOOP_TURN);
    handoff_stats st;
    logic_loop_stats(fx.l, &st);
    CU_ASSERT_EQUAL(st.queued, (size_t)n);
    while (flood_left > 0)
        CU_ASSERT_FATAL(logic_loop_turn(fx.l) > 0);
    CU_ASSERT_EQUAL(logic_loop_turn(fx.l), 0);
    logic_loop_free(fx.l);
    timers_free(fx.t);
}

/* ---- full queue, stop, free ---------------------------------------------- */

static void logic_loop_full_queue_refuses_and_free_drops(void)
{
    timers *t = timers_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    logic_loop *l = logic_loop_new(t, mono, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    atomic_store(&dropped, 0);
    counted_task *a = new_task(0, 0), *b = new_task(0, 1), *c = new_task(0, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a && b && c);
    CU_ASSERT_EQUAL(logic_loop_post(l, &a->base), SM_OK);
    CU_ASSERT_EQUAL(logic_loop_post(l, &b->base), SM_OK);
    CU_ASSERT_EQUAL(logic_loop_post(l, &c->base), SM_EBUSY);
    CU_ASSERT_EQUAL(logic_loop_post(l, NULL), SM_EINVAL);
    handoff_stats st;
    logic_loop_stats(l, &st);
    CU_ASSERT_EQUAL(st.refused, 1);
    CU_ASSERT_EQUAL(st.queued, 2);
    free(c);
    /* Stopped before it ran: run returns at once, nothing runs. */
    logic_loop_stop(l);
    CU_ASSERT_EQUAL(logic_loop_run(l), 0);
    logic_loop_free(l);
    CU_ASSERT_EQUAL(atomic_load(&dropped), 2);
    timers_free(t);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(logic_loop_runs_posted_tasks_once_in_order_on_its_thread),
        SM_TEST(logic_loop_fires_a_timer_on_time_while_idle),
        SM_TEST(logic_loop_turn_bounds_tasks_so_timers_run),
        SM_TEST(logic_loop_full_queue_refuses_and_free_drops),
        SM_TEST_END,
    };
    return sm_test_run("logic_loop", tests, NULL, NULL);
}
