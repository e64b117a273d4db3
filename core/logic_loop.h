/* The logic thread's loop (issue 11): once the I/O threads own the
 * sockets, dispatch, every plugin handler, core event, timer and worker
 * completion run here, on one thread, so a plugin never needs a lock.
 * The loop runs the due timers, then the tasks other threads posted (an
 * I/O thread's opened commands and "session gone" notices, a worker's
 * completion), and sleeps until the next timer or the next post.
 *
 * Tasks come through a bounded hand-off queue (handoff.h): a post into a
 * full queue is refused with SM_EBUSY, and the poster takes its
 * back-pressure path (an I/O thread stops reading its sockets until the
 * queue drains) instead of the queue growing. One turn runs at most
 * LOGIC_LOOP_TURN tasks, so timers are never starved by a flood. */
#ifndef SM_CORE_LOGIC_LOOP_H
#define SM_CORE_LOGIC_LOOP_H

#include <stddef.h>

#include "handoff.h"
#include "timers.h"

#define LOGIC_LOOP_TURN 256

/* A unit of work for the logic thread, embedded first in the poster's
 * own struct: run is called on the logic thread and owns the task from
 * then on (frees it); drop is called instead for a task still queued
 * when the loop is freed. */
typedef struct logic_task {
    void (*run)(struct logic_task *task);
    void (*drop)(struct logic_task *task);
} logic_task;

typedef struct logic_loop logic_loop;

/* A loop over `t` (owned by the caller, used only on the loop's thread)
 * on the monotonic clock `now`, with room for `capacity` queued tasks.
 * NULL when out of memory or no eventfd could be had (logged). */
logic_loop *logic_loop_new(timers *t, double (*now)(void), size_t capacity);
/* Drops the tasks still queued (their drop) and frees the loop. Not while
 * logic_loop_run runs. */
void logic_loop_free(logic_loop *l);

/* Queues task for the logic thread and wakes it. Any thread. SM_OK,
 * SM_EINVAL, or SM_EBUSY when the queue is full (nothing queued; the
 * refusal is counted in logic_loop_stats). */
int logic_loop_post(logic_loop *l, logic_task *task);
/* A timer was started or stopped on the loop's thread outside the loop
 * (before it runs): the next wait is computed again. Any thread. */
void logic_loop_wake(logic_loop *l);
/* Ends logic_loop_run after its current turn. Any thread, and
 * async-signal-safe (a signal handler may call it). */
void logic_loop_stop(logic_loop *l);

/* Runs turns until logic_loop_stop; the calling thread is the logic
 * thread meanwhile. 0, or -1 when waiting failed (logged). */
int logic_loop_run(logic_loop *l);
/* One turn without waiting: the due timers and up to LOGIC_LOOP_TURN
 * tasks. Returns how many timers and tasks ran. (For a caller that drives
 * the logic side synchronously, such as the plugin test host.) */
size_t logic_loop_turn(logic_loop *l);

/* The task queue's counters (queued, high water, refused): /metrics. */
void logic_loop_stats(logic_loop *l, handoff_stats *out);

#endif
