/* A binary min-heap of timers ordered by (due, seq); each timer knows its
 * heap index so stop is O(log n).
 *
 * One call of timers_run_due fires only timers that existed, with their
 * current due time, when the call began: every start and every repeat
 * reschedule takes a fresh sequence number, and timers numbered at or after
 * the call's first number are set aside and put back when the call ends.
 * So a callback that starts a timer with after = 0, or a repeating timer
 * whose next due time has already passed, cannot make one call loop
 * forever; they fire in the next call.
 *
 * The heap array always has room for every timer object alive, so putting
 * timers back never allocates and cannot fail. */
#include "timers.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum timer_state {
    TIMER_IN_HEAP,
    TIMER_RUNNING,  /* its callback is running */
    TIMER_SET_ASIDE /* popped by the current run_due, to be put back */
};

struct sm_timer {
    double due;
    double repeat;
    sm_timer_fn fn;
    void *arg;
    void *owner;
    uint64_t seq;
    size_t heap_index;
    enum timer_state state;
    int stopped;             /* stopped while running or set aside: free later */
    struct sm_timer *next;   /* in the set-aside list */
};

struct timers {
    sm_timer **heap;
    size_t heap_len;
    size_t heap_cap;
    size_t allocated; /* timer objects not yet freed */
    size_t live;      /* timers not stopped and not finished */
    uint64_t next_seq;
    sm_timer *running;
    sm_timer *set_aside;
};

static int before(const sm_timer *a, const sm_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(timers *t, size_t i, sm_timer *timer)
{
    t->heap[i] = timer;
    timer->heap_index = i;
}

static void sift_up(timers *t, size_t i)
{
    sm_timer *timer = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(timer, t->heap[parent]))
            break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, timer);
}

static void sift_down(timers *t, size_t i)
{
    sm_timer *timer = t->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= t->heap_len)
            break;
        if (child + 1 < t->heap_len && before(t->heap[child + 1], t->heap[child]))
            child++;
        if (!before(t->heap[child], timer))
            break;
        heap_set(t, i, t->heap[child]);
        i = child;
    }
    heap_set(t, i, timer);
}

/* Capacity is reserved at start, so this cannot fail. */
static void heap_push(timers *t, sm_timer *timer)
{
    timer->state = TIMER_IN_HEAP;
    heap_set(t, t->heap_len++, timer);
    sift_up(t, timer->heap_index);
}

static void heap_remove(timers *t, size_t i)
{
    sm_timer *last = t->heap[--t->heap_len];
    if (i == t->heap_len)
        return;
    heap_set(t, i, last);
    if (i > 0 && before(last, t->heap[(i - 1) / 2]))
        sift_up(t, i);
    else
        sift_down(t, i);
}

static void timer_free(timers *t, sm_timer *timer)
{
    t->allocated--;
    free(timer);
}

timers *timers_new(void)
{
    return calloc(1, sizeof(timers));
}

void timers_free(timers *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->heap_len; i++)
        free(t->heap[i]);
    while (t->set_aside) {
        sm_timer *next = t->set_aside->next;
        free(t->set_aside);
        t->set_aside = next;
    }
    free(t->heap);
    free(t);
}

sm_timer *timers_start(timers *t, double now, double after, double repeat, sm_timer_fn fn,
                       void *arg, void *owner)
{
    /* NaN or infinite times would break the heap order. */
    if (!t || !fn || !isfinite(now) || !isfinite(after) || after < 0 || !isfinite(repeat) ||
        repeat < 0 || !isfinite(now + after))
        return NULL;
    if (t->allocated + 1 > t->heap_cap) {
        size_t cap = t->heap_cap ? t->heap_cap * 2 : 16;
        if (cap < t->heap_cap || cap > SIZE_MAX / sizeof *t->heap)
            return NULL;
        sm_timer **heap = realloc(t->heap, cap * sizeof *heap);
        if (!heap)
            return NULL;
        t->heap = heap;
        t->heap_cap = cap;
    }
    sm_timer *timer = calloc(1, sizeof *timer);
    if (!timer)
        return NULL;
    timer->due = now + after;
    timer->repeat = repeat;
    timer->fn = fn;
    timer->arg = arg;
    timer->owner = owner;
    timer->seq = t->next_seq++;
    t->allocated++;
    t->live++;
    heap_push(t, timer);
    return timer;
}

void timers_stop(timers *t, sm_timer *timer)
{
    if (!t || !timer)
        return;
    switch (timer->state) {
    case TIMER_IN_HEAP:
        heap_remove(t, timer->heap_index);
        t->live--;
        timer_free(t, timer);
        break;
    case TIMER_RUNNING:
    case TIMER_SET_ASIDE:
        /* Still referenced by run_due: it frees the timer when done. */
        if (!timer->stopped) {
            timer->stopped = 1;
            t->live--;
        }
        break;
    }
}

void timers_stop_owner(timers *t, void *owner)
{
    if (!t)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < t->heap_len; i++) {
        sm_timer *timer = t->heap[i];
        if (timer->owner == owner) {
            t->live--;
            timer_free(t, timer);
        } else {
            t->heap[kept++] = timer;
        }
    }
    if (kept != t->heap_len) {
        t->heap_len = kept;
        for (size_t i = 0; i < kept; i++)
            t->heap[i]->heap_index = i;
        for (size_t i = kept / 2; i-- > 0;)
            sift_down(t, i);
    }
    for (sm_timer *timer = t->set_aside; timer; timer = timer->next)
        if (timer->owner == owner)
            timers_stop(t, timer);
    if (t->running && t->running->owner == owner)
        timers_stop(t, t->running);
}

size_t timers_run_due(timers *t, double now)
{
    if (!t)
        return 0;
    uint64_t first_new = t->next_seq;
    size_t fired = 0;
    while (t->heap_len > 0 && t->heap[0]->due <= now) {
        sm_timer *timer = t->heap[0];
        heap_remove(t, 0);
        if (timer->seq >= first_new) {
            timer->state = TIMER_SET_ASIDE;
            timer->next = t->set_aside;
            t->set_aside = timer;
            continue;
        }
        timer->state = TIMER_RUNNING;
        t->running = timer;
        timer->fn(timer, timer->arg);
        t->running = NULL;
        fired++;
        if (timer->stopped) {
            timer_free(t, timer);
        } else if (timer->repeat > 0) {
            /* From the due time, not from now: no drift. */
            timer->due += timer->repeat;
            timer->seq = t->next_seq++;
            heap_push(t, timer);
        } else {
            t->live--;
            timer_free(t, timer);
        }
    }
    while (t->set_aside) {
        sm_timer *timer = t->set_aside;
        t->set_aside = timer->next;
        timer->next = NULL;
        if (timer->stopped)
            timer_free(t, timer);
        else
            heap_push(t, timer);
    }
    return fired;
}

double timers_next_due(const timers *t, double now)
{
    if (!t)
        return -1;
    int found = 0;
    double due = 0;
    if (t->heap_len > 0) {
        due = t->heap[0]->due;
        found = 1;
    }
    /* Only non-empty while a callback of run_due asks. */
    for (const sm_timer *timer = t->set_aside; timer; timer = timer->next)
        if (!timer->stopped && (!found || timer->due < due)) {
            due = timer->due;
            found = 1;
        }
    if (!found)
        return -1;
    return due > now ? due - now : 0;
}

size_t timers_count(const timers *t)
{
    return t ? t->live : 0;
}
