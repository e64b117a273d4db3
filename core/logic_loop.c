#include "logic_loop.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "safemessenger/plugin.h"
#include "wakeup.h"

struct logic_loop {
    timers *timers;
    double (*now)(void);
    handoff *tasks;
    wakeup *wake;
    /* sig_atomic_t would do for the signal handler alone; atomic because
     * other threads set it too. */
    atomic_int stop;
    int backlog;   /* the last turn left tasks queued: do not sleep */
};

static void wake_loop(void *arg)
{
    wakeup_signal(arg);
}

logic_loop *logic_loop_new(timers *t, double (*now)(void), size_t capacity)
{
    logic_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->timers = t;
    l->now = now;
    atomic_init(&l->stop, 0);
    l->wake = wakeup_new();
    if (!l->wake)
        goto fail;
    l->tasks = handoff_new(capacity, wake_loop, l->wake);
    if (!l->tasks)
        goto fail;
    return l;
fail:
    wakeup_free(l->wake);
    free(l);
    return NULL;
}

static void drop_task(void *item)
{
    logic_task *task = item;
    if (task->drop)
        task->drop(task);
}

void logic_loop_free(logic_loop *l)
{
    if (!l)
        return;
    handoff_free(l->tasks, drop_task);
    wakeup_free(l->wake);
    free(l);
}

int logic_loop_post(logic_loop *l, logic_task *task)
{
    if (!l || !task || !task->run)
        return SM_EINVAL;
    return handoff_push(l->tasks, task);
}

void logic_loop_wake(logic_loop *l)
{
    wakeup_signal(l->wake);
}

void logic_loop_stop(logic_loop *l)
{
    atomic_store(&l->stop, 1);
    wakeup_signal(l->wake);
}

size_t logic_loop_turn(logic_loop *l)
{
    size_t ran = timers_run_due(l->timers, l->now());
    void *batch[64];
    size_t taken = 0, n;
    l->backlog = 0;
    do {
        size_t room = LOGIC_LOOP_TURN - taken;
        n = handoff_take(l->tasks, batch, room < 64 ? room : 64);
        for (size_t i = 0; i < n; i++) {
            logic_task *task = batch[i];
            task->run(task);
        }
        taken += n;
    } while (n == 64 && taken < LOGIC_LOOP_TURN);
    /* A full turn may have left tasks behind, and the queue wakes nobody
     * for them (it only wakes on empty -> non-empty). */
    if (taken == LOGIC_LOOP_TURN)
        l->backlog = 1;
    return ran + taken;
}

int logic_loop_run(logic_loop *l)
{
    while (!atomic_load(&l->stop)) {
        logic_loop_turn(l);
        if (atomic_load(&l->stop))
            break;
        double due = l->backlog ? 0 : timers_next_due(l->timers, l->now());
        if (wakeup_wait(l->wake, due) < 0)
            return -1;
    }
    return 0;
}

void logic_loop_stats(logic_loop *l, handoff_stats *out)
{
    handoff_stats_get(l->tasks, out);
}
