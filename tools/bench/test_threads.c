/* The server's CPU per thread group: /proc stat parsing, the grouping
 * rules, and a real snapshot of this test's own named, busy threads. */
#define _GNU_SOURCE /* pthread_setname_np() */
#include "bench.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stat_ticks_are_utime_plus_stime_after_the_last_paren(void)
{
    uint64_t t = 0;
    /* A command name may hold spaces and parentheses: only the last ')'
     * ends it. utime = 250, stime = 17. */
    const char *line = "4242 (sm) x (y) S 1 4242 4242 0 -1 4194560 120 0 3 0 250 17 0 0 20 0 5";
    CU_ASSERT_EQUAL(stat_text_ticks(line, &t), 0);
    CU_ASSERT_EQUAL(t, 267);
    t = 99;
    CU_ASSERT_EQUAL(stat_text_ticks("4242 sm S 1 2 3", &t), -1);
    CU_ASSERT_EQUAL(stat_text_ticks("4242 (sm) S 1 4242 4242 0 -1 4194560 120", &t), -1);
    CU_ASSERT_EQUAL(t, 99);   /* untouched on failure */
}

static void threads_group_by_issue_11_names(void)
{
    CU_ASSERT_EQUAL(thread_group_of("sm-logic", 1, 1), TGROUP_LOGIC);
    CU_ASSERT_EQUAL(thread_group_of("sm-io-0", 0, 1), TGROUP_IO);
    CU_ASSERT_EQUAL(thread_group_of("sm-io-15", 0, 0), TGROUP_IO);
    CU_ASSERT_EQUAL(thread_group_of("sm-worker-3", 0, 1), TGROUP_WORKER);
    CU_ASSERT_EQUAL(thread_group_of("sm-logical", 0, 1), TGROUP_OTHER);
    CU_ASSERT_EQUAL(thread_group_of("sm-io", 0, 1), TGROUP_OTHER);
    CU_ASSERT_EQUAL(thread_group_of("lws-service", 0, 0), TGROUP_OTHER);
    /* Before the threads were named, the main thread was the logic thread... */
    CU_ASSERT_EQUAL(thread_group_of("safemessenger-s", 1, 0), TGROUP_LOGIC);
    /* ...and once one is named sm-logic, an unnamed main thread is not. */
    CU_ASSERT_EQUAL(thread_group_of("safemessenger-s", 1, 1), TGROUP_OTHER);
    CU_ASSERT_EQUAL(thread_group_of("safemessenger-s", 0, 0), TGROUP_OTHER);
    CU_ASSERT_STRING_EQUAL(thread_group_name(TGROUP_IO), "sm-io");
    CU_ASSERT_STRING_EQUAL(thread_group_name(TGROUP_WORKER), "sm-worker");
}

/* ---- a real process ------------------------------------------------------ */

typedef struct spinner {
    const char *name;
    long cpu_ms;                /* CPU time to burn once started */
    atomic_int named, go, done;
} spinner;

static uint64_t thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *spin_main(void *arg)
{
    spinner *s = arg;
    pthread_setname_np(pthread_self(), s->name);
    atomic_store(&s->named, 1);
    while (!atomic_load(&s->go)) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    uint64_t start = thread_cpu_ms();
    volatile uint64_t x = 0;
    while (thread_cpu_ms() - start < (uint64_t)s->cpu_ms)
        x += 1;
    atomic_store(&s->done, 1);
    while (atomic_load(&s->go) != 2) {   /* stay alive for the second snapshot */
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static double get_s(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    CU_ASSERT_PTR_NOT_NULL(v);
    return v ? json_real_value(v) : -1.0;
}

static int group_count(const thread_snapshot *s, thread_group g)
{
    int n = 0;
    for (unsigned i = 0; i < s->n; i++)
        n += s->t[i].group == g;
    return n;
}

/* Two snapshots around a known amount of CPU burnt by named threads: each
 * group gets its threads' CPU, to the clock tick, and the total is theirs. */
static void threads_take_counts_each_named_threads_cpu(void)
{
    spinner sp[2] = {{.name = "sm-io-0", .cpu_ms = 300}, {.name = "sm-worker-0", .cpu_ms = 150}};
    pthread_t th[2];

    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, spin_main, &sp[i]), 0);
    while (!atomic_load(&sp[0].named) || !atomic_load(&sp[1].named)) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    thread_snapshot *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    long pid = (long)getpid();
    CU_ASSERT_EQUAL_FATAL(threads_take(pid, a), 0);
    /* Threads of the process besides ours (ThreadSanitizer starts one of
     * its own) count as "other". */
    size_t extra = (size_t)group_count(a, TGROUP_OTHER);
    CU_ASSERT_EQUAL(a->n, 3 + extra);
    /* No thread is sm-logic: the main thread (this one) counts as it. */
    CU_ASSERT_EQUAL(group_count(a, TGROUP_LOGIC), 1);
    CU_ASSERT_EQUAL(group_count(a, TGROUP_IO), 1);
    CU_ASSERT_EQUAL(group_count(a, TGROUP_WORKER), 1);
    for (int i = 0; i < 2; i++)
        atomic_store(&sp[i].go, 1);
    while (!atomic_load(&sp[0].done) || !atomic_load(&sp[1].done)) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    CU_ASSERT_EQUAL_FATAL(threads_take(pid, b), 0);
    json_t *j = threads_json(a, b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    double tick = 1.0 / (double)sysconf(_SC_CLK_TCK);
    /* /proc rounds each thread's time down to whole ticks, at each end. */
    CU_ASSERT_DOUBLE_EQUAL(get_s(j, "sm-io"), 0.300, 2 * tick + 0.001);
    CU_ASSERT_DOUBLE_EQUAL(get_s(j, "sm-worker"), 0.150, 2 * tick + 0.001);
    CU_ASSERT(get_s(j, "sm-logic") < 0.05);   /* this thread mostly slept */
    if (extra == 0)
        CU_ASSERT_DOUBLE_EQUAL(get_s(j, "other"), 0.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(get_s(j, "total"),
                           get_s(j, "sm-logic") + get_s(j, "sm-io") + get_s(j, "sm-worker") +
                               get_s(j, "other"),
                           1e-9);
    json_t *names = json_object_get(j, "threads");
    CU_ASSERT_DOUBLE_EQUAL(get_s(names, "sm-io-0"), get_s(j, "sm-io"), 1e-9);
    json_decref(j);

    /* Once a thread is named sm-logic, the main thread is just "other". */
    pthread_setname_np(th[1], "sm-logic");
    CU_ASSERT_EQUAL_FATAL(threads_take(pid, b), 0);
    CU_ASSERT_EQUAL(group_count(b, TGROUP_LOGIC), 1);
    CU_ASSERT_EQUAL(group_count(b, TGROUP_OTHER), 1 + extra);
    CU_ASSERT_EQUAL(group_count(b, TGROUP_WORKER), 0);

    for (int i = 0; i < 2; i++) {
        atomic_store(&sp[i].go, 2);
        pthread_join(th[i], NULL);
    }
    free(a);
    free(b);
}

static void threads_take_of_a_gone_process_fails(void)
{
    thread_snapshot *s = malloc(sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(threads_take(999999999L, s), -1);
    free(s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(stat_ticks_are_utime_plus_stime_after_the_last_paren),
        SM_TEST(threads_group_by_issue_11_names),
        SM_TEST(threads_take_counts_each_named_threads_cpu),
        SM_TEST(threads_take_of_a_gone_process_fails),
        SM_TEST_END,
    };
    return sm_test_run("bench_threads", cases, NULL, NULL);
}
