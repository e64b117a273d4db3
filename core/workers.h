/* The worker pool: a fixed set of threads running blocking jobs (RSA
 * private-key operations, password hashing) off the event loop. A job's
 * `work` runs on a worker thread; its `done` runs later on the loop thread,
 * from workers_run_completions(), which the loop calls when woken.
 *
 * Threads: submit, submit_bounded, cancel, queued, pending and waiting
 * take the pool's lock and may be called from any thread at once (I/O
 * threads queue handshakes while the logic thread queues plugin jobs and
 * runs completions). Every finished job, whoever submitted it, goes to
 * the one completed list: its done runs on the thread that calls
 * workers_run_completions, drain or drain_owner, not necessarily the
 * submitter's. workers_stop must not overlap any other call (stop the
 * threads that submit first). */
#ifndef SM_CORE_WORKERS_H
#define SM_CORE_WORKERS_H

#include <stddef.h>
#include "safemessenger/plugin.h"

typedef struct workers workers;

/* Worker threads run this many nice levels below the thread that starts
 * the pool (at most nice 19): server.worker_nice, docs/OPERATIONS.md. */
#define WORKERS_NICE 19

/* wake(wake_arg) is called from a worker thread each time a job finishes,
 * so the loop can be woken (lws_cancel_service). It may be NULL. Workers
 * run WORKERS_NICE levels below the caller. */
int workers_start(size_t threads, void (*wake)(void *wake_arg), void *wake_arg, workers **out);

/* The same with `nice` (0..19) levels below the caller; 0 = the caller's
 * priority. Returns -1 for a value out of range. */
int workers_start_nice(size_t threads, int nice, void (*wake)(void *wake_arg), void *wake_arg,
                       workers **out);

/* Queues a job of `owner` (any pointer naming the submitter: the core's
 * handshake, a plugin). Each owner's jobs start in submit order; owners
 * are served round-robin, one job each in turn, so no owner's backlog
 * holds another's jobs behind it. done may be NULL. Returns 0, or -1 when
 * stopping or out of memory (the job is then not queued and nothing is
 * called). */
int workers_submit(workers *w, const void *owner, sm_work_fn work, sm_work_done_fn done,
                   void *arg);

/* workers_submit_bounded refused the job: owner already has max_queued
 * jobs queued and not yet started. */
#define WORKERS_FULL 1
/* workers_submit, unless owner already has max_queued jobs waiting: 0
 * queued, WORKERS_FULL refused (nothing queued or called), -1 as
 * workers_submit. One step under the pool's lock: workers_queued followed
 * by workers_submit would let submitters on several threads pass the
 * bound together. */
int workers_submit_bounded(workers *w, const void *owner, size_t max_queued, sm_work_fn work,
                           sm_work_done_fn done, void *arg);

/* workers_submit_bounded for a job whose work passes its result on by
 * itself (the handshake's RSA job posts it to its session's I/O thread):
 * a job that ran leaves no completion and wakes nobody. `cancelled` (may
 * be NULL) is called, as done(arg, 1), only for a job that never ran
 * because the pool stopped; workers_cancel works as for any job. */
int workers_submit_handoff(workers *w, const void *owner, size_t max_queued, sm_work_fn work,
                           sm_work_done_fn cancelled, void *arg);

/* Removes owner's queued job whose arg is `arg`, if it has not started.
 * Returns 0 when removed: neither work nor done will be called, so arg is
 * the caller's again. Returns -1 when it has started or finished: done
 * will be called as usual. Any thread, but only while done(arg) cannot
 * have run yet, so that arg still names this job and not a later one
 * that reuses the memory: on the thread that runs completions that is
 * plain; on another thread the caller must exclude done meanwhile (done
 * runs on the completions thread, and -1 may be answered while it runs). */
int workers_cancel(workers *w, const void *owner, const void *arg);

/* Jobs of owner queued and not yet started. */
size_t workers_queued(const workers *w, const void *owner);

/* Runs `done` of every finished job, on the calling (loop) thread.
 * Returns how many ran. */
size_t workers_run_completions(workers *w);

/* Blocks until every queued job has finished, then runs completions.
 * Used by the test host and at shutdown. */
void workers_drain(workers *w);

/* Cancels owner's queued jobs (their done(arg, 1) runs here) and waits
 * for its running ones, then runs the finished jobs' done callbacks (of
 * every owner), on the calling (loop) thread. Afterwards no job of owner
 * is queued or running, so its code can be unloaded. */
void workers_drain_owner(workers *w, const void *owner);
/* Jobs queued or running. */
size_t workers_pending(const workers *w);
/* Jobs queued and not yet started, over all owners. */
size_t workers_waiting(const workers *w);

/* Stops the pool: jobs not yet started get done(arg, 1); running ones
 * finish and get done(arg, 0); threads are joined; w is freed. */
void workers_stop(workers *w);

#endif
