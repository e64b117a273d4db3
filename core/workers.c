/* A fixed pool of threads fed by one FIFO queue per owner under a mutex.
 * Workers serve the owners' queues round-robin, so one submitter's flood
 * (a handshake storm, a login storm) delays another's jobs by at most one
 * job per other owner, not by the whole backlog. Finished jobs move to a
 * completed list that only the loop thread drains, so every `done`
 * callback runs on the loop thread as the SDK promises.
 *
 * Workers run `nice` levels below the thread that started them (the event
 * loop): password hashing on every worker would otherwise take every core
 * from the loop, and a login storm would slow every session's commands. */
#define _GNU_SOURCE /* gettid(), pthread_setname_np() */
#include "workers.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct job {
    const void *owner;
    sm_work_fn work;
    sm_work_done_fn done;
    void *arg;
    int hands_off;   /* done only if cancelled (workers_submit_handoff) */
    struct job *next;
};

struct job_list {
    struct job *head, *tail;
};

/* Owners are few (the core's handshake, one per plugin) and live as long
 * as the pool, so their queues are never freed before it. */
struct owner_queue {
    const void *owner;
    struct job_list jobs;
    size_t queued;
    size_t running;          /* started and not finished */
};

struct workers {
    pthread_mutex_t lock;
    pthread_cond_t has_work; /* a queue gained a job, or stopping */
    pthread_cond_t idle;     /* queues empty and nothing running */
    pthread_cond_t finished; /* some job finished (workers_drain_owner waits on it) */
    struct owner_queue *owners;
    size_t n_owners, cap_owners;
    size_t next_owner;       /* round-robin: the owner served next */
    struct job_list completed;
    size_t queued;           /* over all owners */
    size_t running;
    int stopping;
    void (*wake)(void *wake_arg);
    void *wake_arg;
    pthread_t *threads;
    size_t nthreads;
    int nice;                /* levels below the starting thread; read-only once started */
};

static void list_push(struct job_list *list, struct job *job)
{
    job->next = NULL;
    if (list->tail)
        list->tail->next = job;
    else
        list->head = job;
    list->tail = job;
}

static struct job *list_pop(struct job_list *list)
{
    struct job *job = list->head;
    if (job) {
        list->head = job->next;
        if (!list->head)
            list->tail = NULL;
    }
    return job;
}

/* The first owner from the cursor on with a job waiting; the cursor then
 * moves past it. Called with the lock held and w->queued > 0. */
static struct job *next_job(workers *w)
{
    for (size_t i = 0; i < w->n_owners; i++) {
        size_t at = (w->next_owner + i) % w->n_owners;
        struct owner_queue *q = &w->owners[at];
        if (q->jobs.head) {
            w->next_owner = (at + 1) % w->n_owners;
            q->queued--;
            q->running++;
            w->queued--;
            return list_pop(&q->jobs);
        }
    }
    return NULL;
}

static struct owner_queue *find_owner(workers *w, const void *owner)
{
    for (size_t i = 0; i < w->n_owners; i++)
        if (w->owners[i].owner == owner)
            return &w->owners[i];
    return NULL;
}

/* Linux keeps a nice value per thread, inherited from the creating thread:
 * PRIO_PROCESS with a thread id changes this thread alone. Raising one's
 * own nice value needs no privilege; if it fails all the same, the pool
 * still works, only without the loop's precedence. */
static void lower_priority(int below)
{
    if (below <= 0)
        return;
    id_t tid = (id_t)gettid();
    errno = 0;
    int base = getpriority(PRIO_PROCESS, tid);
    if (base == -1 && errno != 0) {
        LOG_WARN("workers: cannot read the thread's nice value: %s", strerror(errno));
        return;
    }
    int target = base + below > 19 ? 19 : base + below;
    if (setpriority(PRIO_PROCESS, tid, target) != 0)
        LOG_WARN("workers: cannot set nice %d on a worker thread: %s", target, strerror(errno));
}

/* "sm-worker-<i>" in top -H, perf and /proc/<pid>/task/<tid>/comm, so
 * per-thread CPU can be told apart from the I/O and logic threads
 * (tools/bench/measure.sh groups threads by these names). The kernel
 * keeps 15 characters; a name that cannot be set only costs the label. */
static void name_thread(pthread_t thread, size_t index)
{
    char name[16];   /* "sm-worker-" and at most 5 digits */
    snprintf(name, sizeof name, "sm-worker-%u", (unsigned)(index % 100000u));
    int rc = pthread_setname_np(thread, name);
    if (rc != 0)
        LOG_WARN("workers: cannot name worker thread %zu: %s", index, strerror(rc));
}

static void *worker_main(void *arg)
{
    workers *w = arg;
    lower_priority(w->nice);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->stopping && w->queued == 0)
            pthread_cond_wait(&w->has_work, &w->lock);
        /* On stop, jobs not yet started stay queued: workers_stop cancels them. */
        if (w->stopping)
            break;
        struct job *job = next_job(w);
        w->running++;
        pthread_mutex_unlock(&w->lock);

        job->work(job->arg);

        pthread_mutex_lock(&w->lock);
        w->running--;
        struct owner_queue *q = find_owner(w, job->owner);
        if (q)
            q->running--;
        int hands_off = job->hands_off;
        if (hands_off)
            free(job); /* the work passed its result on itself */
        else
            list_push(&w->completed, job);
        pthread_cond_broadcast(&w->finished);
        if (w->queued == 0 && w->running == 0)
            pthread_cond_broadcast(&w->idle);
        /* Outside the lock: wake may take locks of its own (lws). Nothing
         * to wake for when the job left no completion: each one woke the
         * loop thread for nothing, once per handshake. */
        if (w->wake && !hands_off) {
            pthread_mutex_unlock(&w->lock);
            w->wake(w->wake_arg);
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void join_threads(workers *w, size_t count)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->has_work);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < count; i++)
        pthread_join(w->threads[i], NULL);
}

static void destroy(workers *w)
{
    pthread_cond_destroy(&w->finished);
    pthread_cond_destroy(&w->idle);
    pthread_cond_destroy(&w->has_work);
    pthread_mutex_destroy(&w->lock);
    free(w->owners);
    free(w->threads);
    free(w);
}

int workers_start(size_t threads, void (*wake)(void *wake_arg), void *wake_arg, workers **out)
{
    return workers_start_nice(threads, WORKERS_NICE, wake, wake_arg, out);
}

int workers_start_nice(size_t threads, int nice, void (*wake)(void *wake_arg), void *wake_arg,
                       workers **out)
{
    if (threads == 0 || !out || nice < 0 || nice > 19)
        return -1;
    workers *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->threads = calloc(threads, sizeof *w->threads);
    if (!w->threads) {
        free(w);
        return -1;
    }
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&w->has_work, NULL) != 0)
        goto fail_has_work;
    if (pthread_cond_init(&w->idle, NULL) != 0)
        goto fail_idle;
    if (pthread_cond_init(&w->finished, NULL) != 0) {
        pthread_cond_destroy(&w->idle);
        goto fail_idle;
    }
    w->wake = wake;
    w->wake_arg = wake_arg;
    w->nice = nice;

    /* Workers inherit a full signal mask, so SIGINT/SIGTERM are handled by
     * the loop thread only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    size_t started = 0;
    int rc = 0;
    for (; started < threads; started++) {
        rc = pthread_create(&w->threads[started], NULL, worker_main, w);
        if (rc != 0)
            break;
        name_thread(w->threads[started], started);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        LOG_ERROR("workers: cannot start thread %zu of %zu: %s", started + 1, threads,
                  strerror(rc));
        join_threads(w, started);
        destroy(w);
        return -1;
    }
    w->nthreads = threads;
    *out = w;
    return 0;

fail_idle:
    pthread_cond_destroy(&w->has_work);
fail_has_work:
    pthread_mutex_destroy(&w->lock);
fail_mutex:
    free(w->threads);
    free(w);
    return -1;
}

/* Called with the lock held. */
static struct owner_queue *owner_queue(workers *w, const void *owner)
{
    struct owner_queue *q = find_owner(w, owner);
    if (q)
        return q;
    if (w->n_owners == w->cap_owners) {
        size_t cap = w->cap_owners ? 2 * w->cap_owners : 4;
        struct owner_queue *grown = realloc(w->owners, cap * sizeof *grown);
        if (!grown)
            return NULL;
        w->owners = grown;
        w->cap_owners = cap;
    }
    q = &w->owners[w->n_owners++];
    memset(q, 0, sizeof *q);
    q->owner = owner;
    return q;
}

/* Queues the job unless owner already has max_queued waiting: the bound
 * is checked under the same lock that queues, so submitters on several
 * threads cannot pass it together. */
static int submit(workers *w, const void *owner, size_t max_queued, sm_work_fn work,
                  sm_work_done_fn done, void *arg, int hands_off)
{
    if (!w || !work)
        return -1;
    struct job *job = malloc(sizeof *job);
    if (!job)
        return -1;
    job->owner = owner;
    job->work = work;
    job->done = done;
    job->arg = arg;
    job->hands_off = hands_off;
    pthread_mutex_lock(&w->lock);
    struct owner_queue *q = w->stopping ? NULL : owner_queue(w, owner);
    int rc = !q ? -1 : q->queued >= max_queued ? WORKERS_FULL : 0;
    if (rc != 0) {
        pthread_mutex_unlock(&w->lock);
        free(job);
        return rc;
    }
    list_push(&q->jobs, job);
    q->queued++;
    w->queued++;
    pthread_cond_signal(&w->has_work);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

int workers_submit(workers *w, const void *owner, sm_work_fn work, sm_work_done_fn done,
                   void *arg)
{
    return submit(w, owner, SIZE_MAX, work, done, arg, 0);
}

int workers_submit_bounded(workers *w, const void *owner, size_t max_queued, sm_work_fn work,
                           sm_work_done_fn done, void *arg)
{
    return submit(w, owner, max_queued, work, done, arg, 0);
}

int workers_submit_handoff(workers *w, const void *owner, size_t max_queued, sm_work_fn work,
                           sm_work_done_fn cancelled, void *arg)
{
    return submit(w, owner, max_queued, work, cancelled, arg, 1);
}

/* A linear walk of the owner's queue: the only canceller, the handshake,
 * bounds its queue (limits.handshake_queue, at most 10000). */
int workers_cancel(workers *w, const void *owner, const void *arg)
{
    if (!w)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&w->lock);
    struct owner_queue *q = find_owner(w, owner);
    struct job *prev = NULL;
    for (struct job *job = q ? q->jobs.head : NULL; job; prev = job, job = job->next) {
        if (job->arg != arg)
            continue;
        if (prev)
            prev->next = job->next;
        else
            q->jobs.head = job->next;
        if (q->jobs.tail == job)
            q->jobs.tail = prev;
        q->queued--;
        w->queued--;
        if (w->queued == 0 && w->running == 0)
            pthread_cond_broadcast(&w->idle);
        free(job);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

size_t workers_queued(const workers *w, const void *owner)
{
    if (!w)
        return 0;
    workers *mw = (workers *)w; /* as in workers_pending */
    pthread_mutex_lock(&mw->lock);
    const struct owner_queue *q = find_owner(mw, owner);
    size_t n = q ? q->queued : 0;
    pthread_mutex_unlock(&mw->lock);
    return n;
}

/* Returns the number of jobs whose completion was handled (done called, or
 * none to call). */
static size_t run_list(struct job *job, int cancelled)
{
    size_t n = 0;
    while (job) {
        struct job *next = job->next;
        if (job->done)
            job->done(job->arg, cancelled);
        free(job);
        job = next;
        n++;
    }
    return n;
}

size_t workers_run_completions(workers *w)
{
    if (!w)
        return 0;
    /* Take the whole list: done callbacks may submit new jobs. */
    pthread_mutex_lock(&w->lock);
    struct job *jobs = w->completed.head;
    w->completed.head = w->completed.tail = NULL;
    pthread_mutex_unlock(&w->lock);
    return run_list(jobs, 0);
}

void workers_drain(workers *w)
{
    if (!w)
        return;
    /* Repeat while completions ran: a done callback may have queued a
     * follow-up job, which the caller expects to be drained as well. */
    do {
        pthread_mutex_lock(&w->lock);
        while (w->queued > 0 || w->running > 0)
            pthread_cond_wait(&w->idle, &w->lock);
        pthread_mutex_unlock(&w->lock);
    } while (workers_run_completions(w) > 0);
}

void workers_drain_owner(workers *w, const void *owner)
{
    if (!w)
        return;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        struct owner_queue *q = find_owner(w, owner);
        struct job *cancelled = NULL;
        if (q) {
            cancelled = q->jobs.head;
            q->jobs.head = q->jobs.tail = NULL;
            w->queued -= q->queued;
            q->queued = 0;
            if (w->queued == 0 && w->running == 0)
                pthread_cond_broadcast(&w->idle);
        }
        /* The owner's running jobs run its code: wait for them, whatever
         * the other owners do. Found again after each wait, never q: a
         * submit on another thread (an I/O thread's handshake) may grow
         * the array meanwhile. */
        while ((q = find_owner(w, owner)) && q->running > 0)
            pthread_cond_wait(&w->finished, &w->lock);
        pthread_mutex_unlock(&w->lock);
        run_list(cancelled, 1);
        workers_run_completions(w);
        /* A done callback may have queued a follow-up job of the owner. */
        pthread_mutex_lock(&w->lock);
        q = find_owner(w, owner);
        int again = q && (q->queued > 0 || q->running > 0);
        pthread_mutex_unlock(&w->lock);
        if (!again)
            break;
    }
}

size_t workers_pending(const workers *w)
{
    if (!w)
        return 0;
    /* The mutex is the only mutable part of a const pool. */
    workers *mw = (workers *)w;
    pthread_mutex_lock(&mw->lock);
    size_t n = mw->queued + mw->running;
    pthread_mutex_unlock(&mw->lock);
    return n;
}

size_t workers_waiting(const workers *w)
{
    if (!w)
        return 0;
    workers *mw = (workers *)w; /* as in workers_pending */
    pthread_mutex_lock(&mw->lock);
    size_t n = mw->queued;
    pthread_mutex_unlock(&mw->lock);
    return n;
}

void workers_stop(workers *w)
{
    if (!w)
        return;
    join_threads(w, w->nthreads);
    /* Threads are gone; stopping stays set, so a done callback that tries
     * to submit gets -1. Finished jobs first, then the cancelled ones,
     * owner by owner. */
    struct job *finished = w->completed.head;
    w->completed.head = w->completed.tail = NULL;
    run_list(finished, 0);
    for (size_t i = 0; i < w->n_owners; i++) {
        struct job *cancelled = w->owners[i].jobs.head;
        w->owners[i].jobs.head = w->owners[i].jobs.tail = NULL;
        w->owners[i].queued = 0;
        run_list(cancelled, 1);
    }
    w->queued = 0;
    destroy(w);
}
