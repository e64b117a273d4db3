/* A fixed pool of threads fed by one FIFO queue under a mutex. Finished
 * jobs move to a completed list that only the loop thread drains, so every
 * `done` callback runs on the loop thread as the SDK promises. */
#include "workers.h"

#include "log.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct job {
    sm_work_fn work;
    sm_work_done_fn done;
    void *arg;
    struct job *next;
};

struct job_list {
    struct job *head, *tail;
};

struct workers {
    pthread_mutex_t lock;
    pthread_cond_t has_work; /* queue gained a job, or stopping */
    pthread_cond_t idle;     /* queue empty and nothing running */
    struct job_list queue;
    struct job_list completed;
    size_t queued;
    size_t running;
    int stopping;
    void (*wake)(void *wake_arg);
    void *wake_arg;
    pthread_t *threads;
    size_t nthreads;
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

static void *worker_main(void *arg)
{
    workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->stopping && !w->queue.head)
            pthread_cond_wait(&w->has_work, &w->lock);
        /* On stop, jobs not yet started stay queued: workers_stop cancels them. */
        if (w->stopping)
            break;
        struct job *job = list_pop(&w->queue);
        w->queued--;
        w->running++;
        pthread_mutex_unlock(&w->lock);

        job->work(job->arg);

        pthread_mutex_lock(&w->lock);
        w->running--;
        list_push(&w->completed, job);
        if (w->queued == 0 && w->running == 0)
            pthread_cond_broadcast(&w->idle);
        /* Outside the lock: wake may take locks of its own (lws). */
        if (w->wake) {
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
    pthread_cond_destroy(&w->idle);
    pthread_cond_destroy(&w->has_work);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}

int workers_start(size_t threads, void (*wake)(void *wake_arg), void *wake_arg, workers **out)
{
    if (threads == 0 || !out)
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
    w->wake = wake;
    w->wake_arg = wake_arg;

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

int workers_submit(workers *w, sm_work_fn work, sm_work_done_fn done, void *arg)
{
    if (!w || !work)
        return -1;
    struct job *job = malloc(sizeof *job);
    if (!job)
        return -1;
    job->work = work;
    job->done = done;
    job->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(job);
        return -1;
    }
    list_push(&w->queue, job);
    w->queued++;
    pthread_cond_signal(&w->has_work);
    pthread_mutex_unlock(&w->lock);
    return 0;
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

void workers_stop(workers *w)
{
    if (!w)
        return;
    join_threads(w, w->nthreads);
    /* Threads are gone; stopping stays set, so a done callback that tries
     * to submit gets -1. Finished jobs first, then the cancelled ones. */
    struct job *finished = w->completed.head;
    struct job *cancelled = w->queue.head;
    w->completed.head = w->completed.tail = NULL;
    w->queue.head = w->queue.tail = NULL;
    w->queued = 0;
    run_list(finished, 0);
    run_list(cancelled, 1);
    destroy(w);
}
