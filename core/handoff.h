/* Hand-off queues: how the logic thread and the I/O threads pass work to
 * each other (issue 11: one logic thread running dispatch and every
 * plugin, N I/O threads each owning its connections). One queue per
 * direction and thread; any thread may push, one thread takes.
 *
 * Bounded: a push into a full queue is refused with SM_EBUSY and counted,
 * never grown, so a thread that falls behind costs a known amount of
 * memory and the caller takes its back-pressure path (cut a slow
 * consumer, stop reading a socket until the queue drains) and says so in
 * the log and /metrics.
 *
 * Batched wake-ups: the consumer's wake function runs only on the push
 * that makes an empty queue non-empty, and the consumer takes everything
 * queued at once (handoff_take), so a burst of N items costs one wake-up
 * (one lws_cancel_service, one eventfd write), not N. */
#ifndef SM_CORE_HANDOFF_H
#define SM_CORE_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

typedef struct handoff handoff;

/* Called (outside the queue's lock) when an item arrives in an empty
 * queue: wakes the consuming thread. May be NULL (the consumer polls). */
typedef void (*handoff_wake_fn)(void *arg);

/* A queue of at most `capacity` (>= 1) items. NULL when out of memory or
 * capacity is 0. */
handoff *handoff_new(size_t capacity, handoff_wake_fn wake, void *wake_arg);
/* Frees the queue; items still queued are handed to drop (may be NULL)
 * first, so none leaks. */
void handoff_free(handoff *q, void (*drop)(void *item));

/* Queues item (not NULL). SM_OK, SM_EINVAL for a NULL item, or SM_EBUSY
 * when the queue is full: nothing is queued then and the refusal is
 * counted (handoff_stats). */
int handoff_push(handoff *q, void *item);
/* Moves up to max queued items, oldest first, into out and returns how
 * many. Items pushed by one thread come out in the order it pushed
 * them. A woken consumer takes until this returns fewer than max: a
 * queue left non-empty gets no further wake-up. */
size_t handoff_take(handoff *q, void **out, size_t max);

typedef struct handoff_stats {
    size_t queued;        /* items waiting now */
    size_t high_water;    /* most items ever waiting at once */
    uint64_t pushed;      /* items accepted since handoff_new */
    uint64_t refused;     /* pushes refused because the queue was full */
    uint64_t wakes;       /* times the wake function was called */
} handoff_stats;

/* A consistent snapshot of the counters (for /metrics and the log). */
void handoff_stats_get(handoff *q, handoff_stats *out);

#endif
