#define _GNU_SOURCE /* gettid() */
#include "workers.h"
#include "safemessenger/testhost_suite.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static pthread_t test_thread;

/* ---- many jobs --------------------------------------------------------- */

enum { MANY_JOBS = 1000, MAX_THREADS = 4 };

static atomic_int work_count;
static atomic_int wake_count;
static atomic_int wake_on_test_thread;
static int done_count;
static int done_off_thread;
static int done_cancelled;
static pthread_t worker_ids[MAX_THREADS];
static atomic_int worker_id_count;
static pthread_mutex_t worker_ids_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_worker_thread(void)
{
    pthread_t self = pthread_self();
    pthread_mutex_lock(&worker_ids_lock);
    int n = atomic_load(&worker_id_count);
    int known = 0;
    for (int i = 0; i < n; i++)
        known |= pthread_equal(worker_ids[i], self);
    if (!known && n < MAX_THREADS) {
        worker_ids[n] = self;
        atomic_store(&worker_id_count, n + 1);
    }
    pthread_mutex_unlock(&worker_ids_lock);
}

static void count_work(void *arg)
{
    (void)arg;
    note_worker_thread();
    atomic_fetch_add(&work_count, 1);
    /* Long enough that the other threads get jobs too. */
    struct timespec ts = {0, 50000L};
    nanosleep(&ts, NULL);
}

static void count_done(void *arg, int cancelled)
{
    int *value = arg;
    if (!pthread_equal(pthread_self(), test_thread))
        done_off_thread++;
    if (cancelled)
        done_cancelled++;
    done_count++;
    free(value);
}

static void count_wake(void *arg)
{
    /* CUnit asserts are not thread-safe: count, check on the test thread. */
    if (arg != &wake_count)
        return;
    if (pthread_equal(pthread_self(), test_thread))
        atomic_fetch_add(&wake_on_test_thread, 1);
    atomic_fetch_add(&wake_count, 1);
}

static void reset_counters(void)
{
    test_thread = pthread_self();
    atomic_store(&work_count, 0);
    atomic_store(&wake_count, 0);
    atomic_store(&wake_on_test_thread, 0);
    atomic_store(&worker_id_count, 0);
    done_count = done_off_thread = done_cancelled = 0;
}

static void workers_run_many_jobs_done_on_calling_thread(void)
{
    reset_counters();
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(4, count_wake, &wake_count, &w), 0);
    for (int i = 0; i < MANY_JOBS; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        *arg = i;
        CU_ASSERT_EQUAL(workers_submit(w, NULL, count_work, count_done, arg), 0);
    }
    workers_drain(w);
    CU_ASSERT_EQUAL(atomic_load(&work_count), MANY_JOBS);
    CU_ASSERT_EQUAL(done_count, MANY_JOBS);
    CU_ASSERT_EQUAL(done_off_thread, 0);
    CU_ASSERT_EQUAL(done_cancelled, 0);
    CU_ASSERT_TRUE(atomic_load(&worker_id_count) >= 2);
    CU_ASSERT_EQUAL(workers_pending(w), 0);
    CU_ASSERT_EQUAL(workers_run_completions(w), 0);
    workers_stop(w);
    CU_ASSERT_EQUAL(done_count, MANY_JOBS); /* nothing left for stop */
    /* wake runs once per finished job, on a worker thread. It runs after the
     * job is queued for completion, so only the join in stop guarantees
     * every call has happened. */
    CU_ASSERT_EQUAL(atomic_load(&wake_count), MANY_JOBS);
    CU_ASSERT_EQUAL(atomic_load(&wake_on_test_thread), 0);
}

/* ---- completions wait for the loop ------------------------------------- */

static void noop_work(void *arg)
{
    (void)arg;
}

static void done_waits_for_run_completions(void)
{
    reset_counters();
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(2, NULL, NULL, &w), 0);
    for (int i = 0; i < 3; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        CU_ASSERT_EQUAL(workers_submit(w, NULL, noop_work, count_done, arg), 0);
    }
    CU_ASSERT_EQUAL(workers_submit(w, NULL, noop_work, NULL, NULL), 0); /* done may be NULL */
    for (int tries = 0; workers_pending(w) > 0 && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_EQUAL(workers_pending(w), 0);
    CU_ASSERT_EQUAL(done_count, 0); /* finished, but done only runs from the loop */
    CU_ASSERT_EQUAL(workers_run_completions(w), 4);
    CU_ASSERT_EQUAL(done_count, 3);
    CU_ASSERT_EQUAL(done_off_thread, 0);
    CU_ASSERT_EQUAL(workers_run_completions(w), 0);
    workers_stop(w);
}

/* ---- FIFO -------------------------------------------------------------- */

enum { FIFO_JOBS = 200 };
static int work_order[FIFO_JOBS];
static int work_order_len;
static int done_order[FIFO_JOBS];
static int done_order_len;

static void record_work(void *arg)
{
    work_order[work_order_len++] = *(int *)arg; /* one worker: no race */
}

static void record_done(void *arg, int cancelled)
{
    CU_ASSERT_EQUAL(cancelled, 0);
    done_order[done_order_len++] = *(int *)arg;
    free(arg);
}

static void single_worker_runs_jobs_in_submit_order(void)
{
    work_order_len = done_order_len = 0;
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &w), 0);
    for (int i = 0; i < FIFO_JOBS; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        *arg = i;
        CU_ASSERT_EQUAL(workers_submit(w, NULL, record_work, record_done, arg), 0);
    }
    workers_drain(w);
    CU_ASSERT_EQUAL_FATAL(work_order_len, FIFO_JOBS);
    CU_ASSERT_EQUAL_FATAL(done_order_len, FIFO_JOBS);
    int in_order = 1;
    for (int i = 0; i < FIFO_JOBS; i++)
        in_order &= work_order[i] == i && done_order[i] == i;
    CU_ASSERT_TRUE(in_order);
    workers_stop(w);
}

/* ---- drain follows chains ---------------------------------------------- */

static workers *chain_pool;
static int chain_steps;

static void chain_done(void *arg, int cancelled)
{
    CU_ASSERT_EQUAL(cancelled, 0);
    int *left = arg;
    chain_steps++;
    if (--*left > 0) {
        CU_ASSERT_EQUAL(workers_submit(chain_pool, NULL, noop_work, chain_done, left), 0);
    } else {
        free(left);
    }
}

static void drain_runs_jobs_submitted_by_done(void)
{
    chain_steps = 0;
    CU_ASSERT_EQUAL_FATAL(workers_start(2, NULL, NULL, &chain_pool), 0);
    int *left = malloc(sizeof *left);
    CU_ASSERT_PTR_NOT_NULL_FATAL(left);
    *left = 5;
    CU_ASSERT_EQUAL(workers_submit(chain_pool, NULL, noop_work, chain_done, left), 0);
    workers_drain(chain_pool);
    CU_ASSERT_EQUAL(chain_steps, 5);
    CU_ASSERT_EQUAL(workers_pending(chain_pool), 0);
    workers_drain(chain_pool); /* idle: returns at once */
    workers_stop(chain_pool);
    chain_pool = NULL;
}

/* ---- stop -------------------------------------------------------------- */

static workers *stop_pool;
static atomic_int gate_started;
static atomic_int gate_open;
static int gate_done_cancelled = -1;
static int cancelled_jobs;
static int finished_jobs;
static int resubmit_refused;
static int resubmit_accepted;

static void gate_work(void *arg)
{
    (void)arg;
    atomic_store(&gate_started, 1);
    while (!atomic_load(&gate_open))
        sleep_ms(1);
}

static void gate_done(void *arg, int cancelled)
{
    (void)arg;
    gate_done_cancelled = cancelled;
}

static void queued_done(void *arg, int cancelled)
{
    if (cancelled) {
        cancelled_jobs++;
        /* stop has begun: the pool is still valid here but refuses work. */
        if (workers_submit(stop_pool, NULL, noop_work, NULL, NULL) == -1)
            resubmit_refused++;
        else
            resubmit_accepted++;
    } else {
        finished_jobs++;
    }
    free(arg);
}

static void *stop_thread_main(void *arg)
{
    (void)arg;
    workers_stop(stop_pool);
    return NULL;
}

static void stop_cancels_queued_jobs_and_refuses_submit(void)
{
    atomic_store(&gate_started, 0);
    atomic_store(&gate_open, 0);
    gate_done_cancelled = -1;
    cancelled_jobs = finished_jobs = resubmit_refused = resubmit_accepted = 0;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &stop_pool), 0);
    CU_ASSERT_EQUAL(workers_submit(stop_pool, NULL, gate_work, gate_done, NULL), 0);
    for (int tries = 0; !atomic_load(&gate_started) && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_FATAL(atomic_load(&gate_started));
    /* The only worker is held by the gate: these stay queued. */
    int queued = 0;
    for (int i = 0; i < 5; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        if (workers_submit(stop_pool, NULL, noop_work, queued_done, arg) == 0)
            queued++;
        else
            free(arg);
    }
    CU_ASSERT_EQUAL(queued, 5);
    CU_ASSERT_EQUAL(workers_pending(stop_pool), 6);

    /* Stop from another thread: it blocks joining the gated worker, so the
     * pool stays valid while we watch submit start failing. */
    pthread_t stopper;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&stopper, NULL, stop_thread_main, NULL), 0);
    int accepted_while_stopping = 0;
    int refused = 0;
    for (int tries = 0; tries < 5000; tries++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        if (workers_submit(stop_pool, NULL, noop_work, queued_done, arg) != 0) {
            free(arg); /* refused: nothing will be called */
            refused = 1;
            break;
        }
        accepted_while_stopping++; /* submitted before stop began */
        sleep_ms(1);
    }
    CU_ASSERT_TRUE(refused);
    atomic_store(&gate_open, 1);
    CU_ASSERT_EQUAL(pthread_join(stopper, NULL), 0);
    stop_pool = NULL;

    CU_ASSERT_EQUAL(gate_done_cancelled, 0); /* the running job finished */
    CU_ASSERT_EQUAL(finished_jobs, 0);
    CU_ASSERT_EQUAL(cancelled_jobs, 5 + accepted_while_stopping);
    CU_ASSERT_EQUAL(resubmit_refused, cancelled_jobs);
    CU_ASSERT_EQUAL(resubmit_accepted, 0);
}

/* ---- jobs that hand their result on themselves ------------------------- */

/* Like the handshake's RSA job: the work passes arg on (here: frees it). */
static void handoff_work(void *arg)
{
    atomic_fetch_add(&work_count, 1);
    free(arg);
}

static void handoff_jobs_leave_no_completion_and_wake_nobody(void)
{
    reset_counters();
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(2, count_wake, &wake_count, &w), 0);
    for (int i = 0; i < 100; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        CU_ASSERT_EQUAL(workers_submit_handoff(w, NULL, SIZE_MAX, handoff_work, count_done, arg),
                        0);
    }
    workers_drain(w);
    CU_ASSERT_EQUAL(atomic_load(&work_count), 100);
    CU_ASSERT_EQUAL(workers_run_completions(w), 0);
    /* An ordinary job beside them still completes and wakes. */
    int *arg = malloc(sizeof *arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
    CU_ASSERT_EQUAL(workers_submit(w, NULL, count_work, count_done, arg), 0);
    workers_drain(w);
    workers_stop(w);
    CU_ASSERT_EQUAL(done_count, 1);
    CU_ASSERT_EQUAL(done_cancelled, 0);
    CU_ASSERT_EQUAL(atomic_load(&wake_count), 1);
}

static void handoff_job_that_never_ran_gets_cancelled_at_stop(void)
{
    reset_counters();
    atomic_store(&gate_started, 0);
    atomic_store(&gate_open, 0);
    gate_done_cancelled = -1;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &stop_pool), 0);
    CU_ASSERT_EQUAL(workers_submit(stop_pool, NULL, gate_work, gate_done, NULL), 0);
    for (int tries = 0; !atomic_load(&gate_started) && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_FATAL(atomic_load(&gate_started));
    for (int i = 0; i < 3; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        CU_ASSERT_EQUAL(
            workers_submit_handoff(stop_pool, NULL, SIZE_MAX, handoff_work, count_done, arg), 0);
    }
    /* Bounded like workers_submit_bounded. */
    CU_ASSERT_EQUAL(workers_submit_handoff(stop_pool, NULL, 3, handoff_work, count_done, NULL),
                    WORKERS_FULL);
    pthread_t stopper;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&stopper, NULL, stop_thread_main, NULL), 0);
    sleep_ms(20);
    atomic_store(&gate_open, 1);
    CU_ASSERT_EQUAL(pthread_join(stopper, NULL), 0);
    stop_pool = NULL;
    CU_ASSERT_EQUAL(atomic_load(&work_count), 0);
    CU_ASSERT_EQUAL(done_count, 3); /* each freed its arg */
    CU_ASSERT_EQUAL(done_cancelled, 3);
}

static void stop_gives_finished_jobs_done_not_cancelled(void)
{
    reset_counters();
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(2, NULL, NULL, &w), 0);
    for (int i = 0; i < 10; i++) {
        int *arg = malloc(sizeof *arg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        CU_ASSERT_EQUAL(workers_submit(w, NULL, noop_work, count_done, arg), 0);
    }
    for (int tries = 0; workers_pending(w) > 0 && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_EQUAL(done_count, 0);
    workers_stop(w); /* completions not yet run by the loop */
    CU_ASSERT_EQUAL(done_count, 10);
    CU_ASSERT_EQUAL(done_cancelled, 0);
}

/* ---- owners are served in turn ------------------------------------------- */

static const char owner_a, owner_b, owner_gate;
enum { FAIR_A_JOBS = 100 };
static int fair_order[FAIR_A_JOBS + 1];
static int fair_order_len;

static void fair_work(void *arg)
{
    fair_order[fair_order_len++] = *(int *)arg; /* one worker: no race */
}

static void free_done(void *arg, int cancelled)
{
    (void)cancelled;
    free(arg);
}

/* Holds the only worker until gate_open (the stop tests' gate). */
static void hold_only_worker(workers *w)
{
    atomic_store(&gate_started, 0);
    atomic_store(&gate_open, 0);
    CU_ASSERT_EQUAL(workers_submit(w, &owner_gate, gate_work, NULL, NULL), 0);
    for (int tries = 0; !atomic_load(&gate_started) && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_FATAL(atomic_load(&gate_started));
}

static int *int_arg(int v)
{
    int *arg = malloc(sizeof *arg);
    if (arg)
        *arg = v;
    return arg;
}

/* Issue 10 item 5: one FIFO let a flood of one submitter (RSA at
 * handshakes, argon2 at logins) hold every other's jobs behind it. */
static void owner_with_one_job_is_served_before_anothers_backlog(void)
{
    fair_order_len = 0;
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &w), 0);
    hold_only_worker(w);
    for (int i = 0; i < FAIR_A_JOBS; i++) {
        int *arg = int_arg(i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
        CU_ASSERT_EQUAL(workers_submit(w, &owner_a, fair_work, free_done, arg), 0);
    }
    int *b = int_arg(-1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(workers_submit(w, &owner_b, fair_work, free_done, b), 0);
    CU_ASSERT_EQUAL(workers_queued(w, &owner_a), FAIR_A_JOBS);
    CU_ASSERT_EQUAL(workers_queued(w, &owner_b), 1);
    atomic_store(&gate_open, 1);
    workers_drain(w);
    CU_ASSERT_EQUAL_FATAL(fair_order_len, FAIR_A_JOBS + 1);
    /* B's job is among the first two; A's still run in their own order. */
    CU_ASSERT_TRUE(fair_order[0] == -1 || fair_order[1] == -1);
    int a_in_order = 1, expect = 0;
    for (int i = 0; i < fair_order_len; i++) {
        if (fair_order[i] == -1)
            continue;
        a_in_order &= fair_order[i] == expect++;
    }
    CU_ASSERT_TRUE(a_in_order);
    workers_stop(w);
}

/* ---- cancel ---------------------------------------------------------------- */

static atomic_int cancel_work_runs;
static int cancel_done_calls;

static void cancel_work(void *arg)
{
    (void)arg;
    atomic_fetch_add(&cancel_work_runs, 1);
}

static void cancel_done(void *arg, int cancelled)
{
    (void)cancelled;
    cancel_done_calls++;
    free(arg);
}

static void cancelled_job_never_runs_and_gets_no_done(void)
{
    atomic_store(&cancel_work_runs, 0);
    cancel_done_calls = 0;
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &w), 0);
    hold_only_worker(w);
    int *args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = int_arg(i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(args[i]);
        CU_ASSERT_EQUAL(workers_submit(w, &owner_a, cancel_work, cancel_done, args[i]), 0);
    }
    CU_ASSERT_EQUAL(workers_queued(w, &owner_a), 3);
    CU_ASSERT_EQUAL(workers_pending(w), 4);
    /* The wrong owner finds nothing; the right one removes the job. */
    CU_ASSERT_EQUAL(workers_cancel(w, &owner_b, args[1]), -1);
    CU_ASSERT_EQUAL(workers_cancel(w, &owner_a, args[1]), 0);
    CU_ASSERT_EQUAL(workers_cancel(w, &owner_a, args[1]), -1);
    free(args[1]); /* the caller's again */
    CU_ASSERT_EQUAL(workers_queued(w, &owner_a), 2);
    /* The last job too: the queue's tail must follow. */
    CU_ASSERT_EQUAL(workers_cancel(w, &owner_a, args[2]), 0);
    free(args[2]);
    int *late = int_arg(3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(late);
    CU_ASSERT_EQUAL(workers_submit(w, &owner_a, cancel_work, cancel_done, late), 0);
    CU_ASSERT_EQUAL(workers_cancel(w, &owner_gate, NULL), -1); /* running: too late */
    atomic_store(&gate_open, 1);
    workers_drain(w);
    CU_ASSERT_EQUAL(atomic_load(&cancel_work_runs), 2); /* args[0] and late */
    CU_ASSERT_EQUAL(cancel_done_calls, 2);
    CU_ASSERT_EQUAL(workers_queued(w, &owner_a), 0);
    workers_stop(w);
}

/* ---- drain one owner (a plugin unloaded by a reload) ---------------------- */

static int drained_done_calls, drained_cancelled;
static int gate_done_calls;

static void drained_done(void *arg, int cancelled)
{
    drained_done_calls++;
    drained_cancelled += cancelled;
    free(arg);
}

static void counting_gate_done(void *arg, int cancelled)
{
    (void)arg;
    gate_done_calls++;
    gate_done_cancelled = cancelled;
}

static void *open_gate_later(void *arg)
{
    (void)arg;
    sleep_ms(100);
    atomic_store(&gate_open, 1);
    return NULL;
}

static void drain_owner_cancels_its_queue_and_waits_for_its_running_job(void)
{
    atomic_store(&cancel_work_runs, 0);
    drained_done_calls = drained_cancelled = gate_done_calls = 0;
    atomic_store(&gate_started, 0);
    atomic_store(&gate_open, 0);
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &w), 0);
    /* owner_a's job holds the only worker; two more of its jobs and one
     * of owner_b wait behind it. */
    CU_ASSERT_EQUAL(workers_submit(w, &owner_a, gate_work, counting_gate_done, NULL), 0);
    for (int tries = 0; !atomic_load(&gate_started) && tries < 5000; tries++)
        sleep_ms(1);
    CU_ASSERT_FATAL(atomic_load(&gate_started));
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL(workers_submit(w, &owner_a, cancel_work, drained_done, int_arg(i)), 0);
    CU_ASSERT_EQUAL(workers_submit(w, &owner_b, cancel_work, cancel_done, int_arg(9)), 0);
    cancel_done_calls = 0;
    pthread_t opener;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
    workers_drain_owner(w, &owner_a);
    /* It returned only once owner_a's running job had ended and its done
     * had run; its queued jobs never ran and got done(arg, 1). */
    CU_ASSERT_TRUE(atomic_load(&gate_open));
    CU_ASSERT_EQUAL(gate_done_calls, 1);
    CU_ASSERT_EQUAL(gate_done_cancelled, 0);
    CU_ASSERT_EQUAL(drained_done_calls, 2);
    CU_ASSERT_EQUAL(drained_cancelled, 2);
    CU_ASSERT_EQUAL(workers_queued(w, &owner_a), 0);
    pthread_join(opener, NULL);
    /* owner_b's job was left alone. */
    workers_drain(w);
    CU_ASSERT_EQUAL(cancel_done_calls, 1);
    CU_ASSERT_EQUAL(atomic_load(&cancel_work_runs), 1);
    workers_stop(w);
}

static void start_and_submit_reject_bad_arguments(void)
{
    workers *w = (workers *)&w;
    workers *before = w;
    CU_ASSERT_EQUAL(workers_start(0, NULL, NULL, &w), -1);
    CU_ASSERT_PTR_EQUAL(w, before);
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &w), 0);
    CU_ASSERT_EQUAL(workers_submit(w, NULL, NULL, NULL, NULL), -1);
    CU_ASSERT_EQUAL(workers_pending(w), 0);
    workers_stop(w);
    workers_stop(NULL); /* ignored */
}

/* ---- priority ---------------------------------------------------------- */

enum { NICE_THREADS = 2 };

static atomic_int nice_started;
static atomic_int nice_seen[NICE_THREADS];
static atomic_int nice_failed;

static int own_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, (id_t)gettid());
    return n == -1 && errno != 0 ? -100 : n;
}

/* Records this worker's nice value, then waits (at most 10 s) until every
 * job has started, so that each runs on a thread of its own. */
static void record_nice(void *arg)
{
    int slot = *(int *)arg;
    atomic_store(&nice_seen[slot], own_nice());
    atomic_fetch_add(&nice_started, 1);
    for (int i = 0; i < 10000 && atomic_load(&nice_started) < NICE_THREADS; i++)
        sleep_ms(1);
    if (atomic_load(&nice_started) < NICE_THREADS)
        atomic_store(&nice_failed, 1);
}

/* The nice value of each of NICE_THREADS workers of a pool started with
 * `nice` levels (or with workers_start when nice < 0). */
static void worker_nices(int nice, int out[NICE_THREADS])
{
    static int slots[NICE_THREADS] = {0, 1};
    atomic_store(&nice_started, 0);
    atomic_store(&nice_failed, 0);
    workers *w = NULL;
    int rc = nice < 0 ? workers_start(NICE_THREADS, NULL, NULL, &w)
                      : workers_start_nice(NICE_THREADS, nice, NULL, NULL, &w);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    for (int i = 0; i < NICE_THREADS; i++) {
        atomic_store(&nice_seen[i], -200);
        CU_ASSERT_EQUAL(workers_submit(w, &owner_a, record_nice, NULL, &slots[i]), 0);
    }
    workers_drain(w);
    workers_stop(w);
    CU_ASSERT_EQUAL(atomic_load(&nice_failed), 0);
    for (int i = 0; i < NICE_THREADS; i++)
        out[i] = atomic_load(&nice_seen[i]);
}

static int capped(int n)
{
    return n > 19 ? 19 : n;
}

/* Password hashing on every worker must not take the cores from the event
 * loop: workers run WORKERS_NICE (or the given) levels below the thread
 * that started the pool, capped at 19, and that thread keeps its own. */
static void workers_run_nice_levels_below_the_starting_thread(void)
{
    int loop = own_nice();
    CU_ASSERT_FATAL(loop != -100);
    /* At nice 19 already, nothing could be lower: run the suite below it. */
    CU_ASSERT_FATAL(loop < 19);
    int seen[NICE_THREADS];

    worker_nices(-1, seen);
    for (int i = 0; i < NICE_THREADS; i++)
        CU_ASSERT_EQUAL(seen[i], capped(loop + WORKERS_NICE));
    CU_ASSERT_EQUAL(WORKERS_NICE, 19);
    CU_ASSERT_EQUAL(own_nice(), loop);

    worker_nices(5, seen);
    for (int i = 0; i < NICE_THREADS; i++)
        CU_ASSERT_EQUAL(seen[i], capped(loop + 5));

    worker_nices(0, seen);
    for (int i = 0; i < NICE_THREADS; i++)
        CU_ASSERT_EQUAL(seen[i], loop);
    CU_ASSERT_EQUAL(own_nice(), loop);

    workers *w = NULL;
    CU_ASSERT_EQUAL(workers_start_nice(1, -1, NULL, NULL, &w), -1);
    CU_ASSERT_EQUAL(workers_start_nice(1, 20, NULL, NULL, &w), -1);
    CU_ASSERT_PTR_NULL(w);
}

/* ---- several submitting threads (I/O threads' handshakes) ---------------- */

#define SUBMITTERS 4
#define BOUND 10
#define BOUNDED_TRIES 50

static workers *shared_pool;
static atomic_int bounded_accepted;
static atomic_int bounded_full;
static atomic_int bounded_other;

static void *bounded_submitter(void *arg)
{
    (void)arg;
    for (int i = 0; i < BOUNDED_TRIES; i++) {
        int *job = int_arg(i);
        if (!job) {
            atomic_fetch_add(&bounded_other, 1);
            continue;
        }
        int rc = workers_submit_bounded(shared_pool, &owner_a, BOUND, noop_work, free_done, job);
        if (rc == 0) {
            atomic_fetch_add(&bounded_accepted, 1);
        } else {
            atomic_fetch_add(rc == WORKERS_FULL ? &bounded_full : &bounded_other, 1);
            free(job); /* refused: still ours */
        }
    }
    return NULL;
}

/* Issue 11: the handshake's queue bound (limits.handshake_queue), checked
 * by threads that all submit at once, is never passed. */
static void bounded_submit_holds_its_bound_across_threads(void)
{
    atomic_store(&bounded_accepted, 0);
    atomic_store(&bounded_full, 0);
    atomic_store(&bounded_other, 0);
    CU_ASSERT_EQUAL_FATAL(workers_start(1, NULL, NULL, &shared_pool), 0);
    hold_only_worker(shared_pool);
    pthread_t t[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, bounded_submitter, NULL), 0);
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&bounded_accepted), BOUND);
    CU_ASSERT_EQUAL(atomic_load(&bounded_full), SUBMITTERS * BOUNDED_TRIES - BOUND);
    CU_ASSERT_EQUAL(atomic_load(&bounded_other), 0);
    CU_ASSERT_EQUAL(workers_queued(shared_pool, &owner_a), BOUND);
    /* Another owner has its own bound. */
    CU_ASSERT_EQUAL(workers_submit_bounded(shared_pool, &owner_b, 1, noop_work, NULL, NULL), 0);
    CU_ASSERT_EQUAL(workers_submit_bounded(shared_pool, &owner_b, 1, noop_work, NULL, NULL),
                    WORKERS_FULL);
    atomic_store(&gate_open, 1);
    workers_drain(shared_pool);
    CU_ASSERT_EQUAL(workers_queued(shared_pool, &owner_a), 0);
    CU_ASSERT_EQUAL(workers_submit_bounded(shared_pool, &owner_a, BOUND, noop_work, NULL, NULL),
                    0);
    workers_stop(shared_pool);
}

#define MIXED_JOBS 400
#define LOGIC_JOBS 2000

/* One job of an I/O thread: never reused, so a cancel can only name it. */
typedef struct mixed_job {
    atomic_int work_runs;
    atomic_int done_runs;
    atomic_int cancelled;
    atomic_int done_off_thread;
} mixed_job;

static mixed_job mixed[SUBMITTERS][MIXED_JOBS];
static mixed_job logic_jobs[LOGIC_JOBS];
static atomic_int submit_errors;
static atomic_int submitters_left;
static const char owner_rsa = 0, owner_plugin = 0;

static void mixed_work(void *arg)
{
    mixed_job *j = arg;
    atomic_fetch_add(&j->work_runs, 1);
}

static void mixed_done(void *arg, int cancelled)
{
    mixed_job *j = arg;
    (void)cancelled;
    if (!pthread_equal(pthread_self(), test_thread))
        atomic_store(&j->done_off_thread, 1);
    atomic_fetch_add(&j->done_runs, 1);
}

/* An I/O thread: queues handshakes, asks the queue's depth, and cancels
 * every third job at once (its session closed). */
static void *mixed_submitter(void *arg)
{
    mixed_job *jobs = arg;
    for (int i = 0; i < MIXED_JOBS; i++) {
        if (workers_submit(shared_pool, &owner_rsa, mixed_work, mixed_done, &jobs[i]) != 0) {
            atomic_fetch_add(&submit_errors, 1);
            continue;
        }
        (void)workers_queued(shared_pool, &owner_rsa);
        (void)workers_waiting(shared_pool);
        if (i % 3 == 0 && workers_cancel(shared_pool, &owner_rsa, &jobs[i]) == 0)
            atomic_store(&jobs[i].cancelled, 1);
    }
    atomic_fetch_sub(&submitters_left, 1);
    return NULL;
}

/* Every job ran once and had done once on the completions thread, or was
 * cancelled and had neither. */
static int job_accounted(mixed_job *j)
{
    if (atomic_load(&j->cancelled))
        return atomic_load(&j->work_runs) == 0 && atomic_load(&j->done_runs) == 0;
    return atomic_load(&j->work_runs) == 1 && atomic_load(&j->done_runs) == 1 &&
           !atomic_load(&j->done_off_thread);
}

static void submits_and_cancels_from_several_threads_while_completions_run(void)
{
    memset(mixed, 0, sizeof mixed);
    memset(logic_jobs, 0, sizeof logic_jobs);
    atomic_store(&submit_errors, 0);
    atomic_store(&submitters_left, SUBMITTERS);
    test_thread = pthread_self();
    CU_ASSERT_EQUAL_FATAL(workers_start(2, NULL, NULL, &shared_pool), 0);
    pthread_t t[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, mixed_submitter, mixed[i]), 0);
    /* This thread is the logic thread: plugin jobs and completions. */
    int next = 0;
    while (atomic_load(&submitters_left) > 0 || next < LOGIC_JOBS) {
        if (next < LOGIC_JOBS &&
            workers_submit(shared_pool, &owner_plugin, mixed_work, mixed_done,
                           &logic_jobs[next++]) != 0)
            atomic_fetch_add(&submit_errors, 1);
        workers_run_completions(shared_pool);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(t[i], NULL);
    workers_drain(shared_pool);
    CU_ASSERT_EQUAL(atomic_load(&submit_errors), 0);
    CU_ASSERT_EQUAL(workers_pending(shared_pool), 0);
    int unaccounted = 0, cancelled = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        for (int j = 0; j < MIXED_JOBS; j++) {
            unaccounted += !job_accounted(&mixed[i][j]);
            cancelled += atomic_load(&mixed[i][j].cancelled);
        }
    }
    for (int j = 0; j < LOGIC_JOBS; j++)
        unaccounted += !job_accounted(&logic_jobs[j]) || atomic_load(&logic_jobs[j].cancelled);
    CU_ASSERT_EQUAL(unaccounted, 0);
    CU_ASSERT(cancelled <= SUBMITTERS * ((MIXED_JOBS + 2) / 3));
    workers_stop(shared_pool);
}

/* ---- thread names -------------------------------------------------------- */

/* How many threads of this process have `name` as their comm. */
static int threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;   /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        n += strcmp(comm, name) == 0;
    }
    closedir(d);
    return n;
}

/* Per-thread CPU figures (tools/bench/measure.sh, top -H) tell the pool
 * from the I/O and logic threads by name: each worker is sm-worker-<i>. */
static void workers_are_named_sm_worker_and_their_index(void)
{
    workers *w = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start(3, NULL, NULL, &w), 0);
    CU_ASSERT_EQUAL(threads_named("sm-worker-0"), 1);
    CU_ASSERT_EQUAL(threads_named("sm-worker-1"), 1);
    CU_ASSERT_EQUAL(threads_named("sm-worker-2"), 1);
    CU_ASSERT_EQUAL(threads_named("sm-worker-3"), 0);
    workers_stop(w);
    CU_ASSERT_EQUAL(threads_named("sm-worker-0"), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(workers_run_many_jobs_done_on_calling_thread),
        SM_TEST(done_waits_for_run_completions),
        SM_TEST(single_worker_runs_jobs_in_submit_order),
        SM_TEST(drain_runs_jobs_submitted_by_done),
        SM_TEST(stop_cancels_queued_jobs_and_refuses_submit),
        SM_TEST(stop_gives_finished_jobs_done_not_cancelled),
        SM_TEST(owner_with_one_job_is_served_before_anothers_backlog),
        SM_TEST(cancelled_job_never_runs_and_gets_no_done),
        SM_TEST(drain_owner_cancels_its_queue_and_waits_for_its_running_job),
        SM_TEST(start_and_submit_reject_bad_arguments),
        SM_TEST(bounded_submit_holds_its_bound_across_threads),
        SM_TEST(submits_and_cancels_from_several_threads_while_completions_run),
        SM_TEST(workers_run_nice_levels_below_the_starting_thread),
        SM_TEST(workers_are_named_sm_worker_and_their_index),
        SM_TEST(handoff_jobs_leave_no_completion_and_wake_nobody),
        SM_TEST(handoff_job_that_never_ran_gets_cancelled_at_stop),
        SM_TEST_END,
    };
    return sm_test_run("workers", cases, NULL, NULL);
}
