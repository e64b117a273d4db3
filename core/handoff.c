#include "handoff.h"

#include <pthread.h>
#include <stdlib.h>

#include "safemessenger/plugin.h"

/* A ring of item pointers under one mutex. The critical sections are a
 * few stores, and the consumer empties the ring in one take, so the lock
 * is held briefly and rarely contended; a lock-free ring would buy little
 * and make the wake-once rule harder to get right. */
struct handoff {
    pthread_mutex_t lock;
    void **ring;
    size_t capacity;
    size_t head;          /* next to take */
    size_t count;
    handoff_wake_fn wake;
    void *wake_arg;
    handoff_stats stats;  /* queued is count, filled in by handoff_stats_get */
};

handoff *handoff_new(size_t capacity, handoff_wake_fn wake, void *wake_arg)
{
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(void *))
        return NULL;
    handoff *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->ring = calloc(capacity, sizeof *q->ring);
    if (!q->ring)
        goto fail;
    if (pthread_mutex_init(&q->lock, NULL) != 0)
        goto fail;
    q->capacity = capacity;
    q->wake = wake;
    q->wake_arg = wake_arg;
    return q;
fail:
    free(q->ring);
    free(q);
    return NULL;
}

void handoff_free(handoff *q, void (*drop)(void *item))
{
    if (!q)
        return;
    for (size_t i = 0; i < q->count; i++) {
        void *item = q->ring[(q->head + i) % q->capacity];
        if (drop)
            drop(item);
    }
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}

int handoff_push(handoff *q, void *item)
{
    if (!q || !item)
        return SM_EINVAL;
    pthread_mutex_lock(&q->lock);
    if (q->count == q->capacity) {
        q->stats.refused++;
        pthread_mutex_unlock(&q->lock);
        return SM_EBUSY;
    }
    q->ring[(q->head + q->count) % q->capacity] = item;
    q->count++;
    q->stats.pushed++;
    if (q->count > q->stats.high_water)
        q->stats.high_water = q->count;
    /* Only the first item of a batch wakes the consumer: until it takes,
     * later items ride on the same wake-up. */
    int wake = q->count == 1 && q->wake;
    if (wake)
        q->stats.wakes++;
    pthread_mutex_unlock(&q->lock);
    if (wake)
        q->wake(q->wake_arg);
    return SM_OK;
}

size_t handoff_take(handoff *q, void **out, size_t max)
{
    if (!q || !out)
        return 0;
    pthread_mutex_lock(&q->lock);
    size_t n = q->count < max ? q->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = q->ring[q->head];
        q->ring[q->head] = NULL;
        q->head = (q->head + 1) % q->capacity;
    }
    q->count -= n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void handoff_stats_get(handoff *q, handoff_stats *out)
{
    pthread_mutex_lock(&q->lock);
    *out = q->stats;
    out->queued = q->count;
    pthread_mutex_unlock(&q->lock);
}
