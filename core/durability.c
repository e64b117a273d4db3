/* See durability.h. */
#include "durability.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "safemessenger/plugin.h"
#include "log.h"
#include "workers.h"

typedef struct held {
    struct held *next;
    int index;
    void *item;
} held;

/* The barrier in flight: filled on the worker, read on the logic thread
 * in its done callback (the pool orders the two). */
typedef struct flight {
    int result;
    double seconds;
    double backoff; /* slept before trying, after a failure */
} flight;

/* The counters are read by /metrics on an I/O thread: under this lock;
 * everything else is the logic thread's. */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int active;
    workers *pool;
    durability_ops ops;
    held *head, *tail;
    size_t n_held;
    uint64_t covered;      /* commits confirmed by the last barrier */
    int in_flight;
    size_t flight_upto;    /* items held when the barrier in flight began */
    uint64_t flight_commits;
    int kick_pending;
    double failing_since;  /* 0: the last barrier succeeded */
    double backoff;
    flight job;
    durability_stats st;
} d;

int durability_active(void)
{
    return d.active;
}

/* Not core_mono_now: the worker runs this too, and tests run it without
 * a core. */
static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void release_first(size_t n, int confirmed)
{
    while (n-- > 0 && d.head) {
        held *h = d.head;
        d.head = h->next;
        if (!d.head)
            d.tail = NULL;
        d.n_held--;
        pthread_mutex_lock(&stats_lock);
        if (confirmed)
            d.st.released++;
        else
            d.st.unconfirmed++;
        d.st.held = d.n_held;
        pthread_mutex_unlock(&stats_lock);
        d.ops.release(h->index, h->item);
        free(h);
    }
}

int durability_would_hold(void)
{
    /* Nothing held and every write confirmed: an item goes on its way now. */
    return d.active && (d.head || d.ops.commits() != d.covered);
}

int durability_hold(int index, void *item)
{
    if (!durability_would_hold())
        return 0;
    held *h = malloc(sizeof *h);
    if (!h) {
        /* Cannot keep it in order: wait for the confirmation here (a
         * bounded barrier), then it goes. */
        LOG_ERROR("durability: out of memory holding an item; confirming synchronously");
        durability_stop();
        d.active = 1;
        return 0;
    }
    h->next = NULL;
    h->index = index;
    h->item = item;
    if (d.tail)
        d.tail->next = h;
    else
        d.head = h;
    d.tail = h;
    pthread_mutex_lock(&stats_lock);
    if (++d.n_held > d.st.high_water)
        d.st.high_water = d.n_held;
    d.st.held = d.n_held;
    pthread_mutex_unlock(&stats_lock);
    if (!d.in_flight && !d.kick_pending) {
        d.kick_pending = 1;
        d.ops.kick();
    }
    return 1;
}

static void barrier_work(void *arg)
{
    flight *f = arg;
    if (f->backoff > 0) {
        struct timespec ts = {(time_t)f->backoff,
                              (long)((f->backoff - (double)(time_t)f->backoff) * 1e9)};
        nanosleep(&ts, NULL);
    }
    double t0 = mono();
    f->result = d.ops.barrier(d.ops.barrier_arg);
    f->seconds = mono() - t0;
}

static void barrier_done(void *arg, int cancelled)
{
    flight *f = arg;
    d.in_flight = 0;
    if (!cancelled && f->result == 0) {
        pthread_mutex_lock(&stats_lock);
        d.st.barriers++;
        d.st.wait_seconds += f->seconds;
        if (f->seconds > d.st.wait_max)
            d.st.wait_max = f->seconds;
        pthread_mutex_unlock(&stats_lock);
        d.covered = d.flight_commits;
        if (d.failing_since > 0)
            LOG_INFO("durability: PostgreSQL confirms commits again");
        d.failing_since = 0;
        d.backoff = 0;
        release_first(d.flight_upto, 1);
    } else if (!cancelled) {
        pthread_mutex_lock(&stats_lock);
        d.st.failures++;
        pthread_mutex_unlock(&stats_lock);
        double now = mono();
        if (d.failing_since == 0) {
            d.failing_since = now;
            LOG_ERROR("durability: PostgreSQL did not confirm a flush; %zu replies and events "
                      "wait, retrying",
                      d.n_held);
        }
        d.backoff = d.backoff == 0 ? 0.05 : (d.backoff * 2 > 1.0 ? 1.0 : d.backoff * 2);
        double give_up = d.ops.give_up_s > 0 ? d.ops.give_up_s : DURABILITY_GIVE_UP_S;
        if (now - d.failing_since >= give_up) {
            LOG_ERROR("durability: no confirmation from PostgreSQL for %.0f s: releasing %zu "
                      "replies and events unconfirmed (safemessenger_storage_unconfirmed_total)",
                      now - d.failing_since, d.flight_upto);
            d.covered = d.flight_commits;
            release_first(d.flight_upto, 0);
            d.failing_since = now;
        }
    }
    if (d.head && !d.kick_pending) {
        d.kick_pending = 1;
        d.ops.kick();
    }
}

void durability_kick(void)
{
    d.kick_pending = 0;
    if (!d.active || d.in_flight || !d.head)
        return;
    uint64_t commits = d.ops.commits();
    if (commits == d.covered) {
        /* Held only to keep the order behind items now released. */
        release_first(d.n_held, 1);
        return;
    }
    d.in_flight = 1;
    d.flight_upto = d.n_held;
    d.flight_commits = commits;
    d.job.result = -1;
    d.job.backoff = d.backoff;
    if (workers_submit(d.pool, &d, barrier_work, barrier_done, &d.job) != 0) {
        /* The pool is stopping: confirm here rather than lose the order. */
        barrier_work(&d.job);
        barrier_done(&d.job, 0);
    }
}

int durability_start(workers *pool, const durability_ops *ops)
{
    if (d.active)
        return SM_ESTATE;
    /* Everything but the stats' totals from a clean slate. */
    pthread_mutex_lock(&stats_lock);
    durability_stats totals = d.st;
    pthread_mutex_unlock(&stats_lock);
    memset(&d, 0, sizeof d);
    totals.high_water = 0;
    totals.held = 0;
    pthread_mutex_lock(&stats_lock);
    d.st = totals;
    pthread_mutex_unlock(&stats_lock);
    d.pool = pool;
    d.ops = *ops;
    d.covered = ops->commits();
    d.active = 1;
    return SM_OK;
}

void durability_stop(void)
{
    if (!d.active)
        return;
    /* The barrier in flight ends first (its done runs here). */
    if (d.in_flight)
        workers_drain_owner(d.pool, &d);
    d.active = 0;
    if (d.head && d.ops.commits() != d.covered) {
        d.job.backoff = 0;
        barrier_work(&d.job);
        if (d.job.result == 0) {
            pthread_mutex_lock(&stats_lock);
            d.st.barriers++;
            pthread_mutex_unlock(&stats_lock);
            d.covered = d.ops.commits();
        }
        release_first(d.n_held, d.job.result == 0);
    } else {
        release_first(d.n_held, 1);
    }
    d.in_flight = 0;
    d.kick_pending = 0;
}

void durability_stats_get(durability_stats *out)
{
    pthread_mutex_lock(&stats_lock);
    *out = d.st;
    pthread_mutex_unlock(&stats_lock);
}
