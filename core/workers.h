/* The worker pool: a fixed set of threads running blocking jobs (RSA
 * private-key operations, password hashing) off the event loop. A job's
 * `work` runs on a worker thread; its `done` runs later on the loop thread,
 * from workers_run_completions(), which the loop calls when woken. */
#ifndef SM_CORE_WORKERS_H
#define SM_CORE_WORKERS_H

#include <stddef.h>
#include "safemessenger/plugin.h"

typedef struct workers workers;

/* wake(wake_arg) is called from a worker thread each time a job finishes,
 * so the loop can be woken (lws_cancel_service). It may be NULL. */
int workers_start(size_t threads, void (*wake)(void *wake_arg), void *wake_arg, workers **out);

/* Queues a job. done may be NULL. Returns 0, or -1 when stopping or out
 * of memory (the job is then not queued and nothing is called). */
int workers_submit(workers *w, sm_work_fn work, sm_work_done_fn done, void *arg);

/* Runs `done` of every finished job, on the calling (loop) thread.
 * Returns how many ran. */
size_t workers_run_completions(workers *w);

/* Blocks until every queued job has finished, then runs completions.
 * Used by the test host and at shutdown. */
void workers_drain(workers *w);

/* Jobs queued or running. */
size_t workers_pending(const workers *w);

/* Stops the pool: jobs not yet started get done(arg, 1); running ones
 * finish and get done(arg, 0); threads are joined; w is freed. */
void workers_stop(workers *w);

#endif
