/* Timers on a monotonic clock given by the caller, so the server drives
 * them from the real clock and the plugin test host from a fake one.
 * A binary heap ordered by due time: start/stop O(log n). */
#ifndef SM_CORE_TIMERS_H
#define SM_CORE_TIMERS_H

#include "safemessenger/plugin.h"

typedef struct timers timers;

timers *timers_new(void);
/* Frees remaining timers without calling them. */
void timers_free(timers *t);

/* Starts a timer due at now + after, then every `repeat` seconds when
 * repeat > 0. owner is an opaque tag (the plugin) kept for timers_stop_owner.
 * Returns NULL on failure. */
sm_timer *timers_start(timers *t, double now, double after, double repeat,
                       sm_timer_fn fn, void *arg, void *owner);
/* Stops and frees a timer. Safe from inside its own callback. A one-shot
 * timer is freed by the module after its callback returns, so it may be
 * stopped only before it fires or from inside its callback. */
void timers_stop(timers *t, sm_timer *timer);
/* Stops every timer of an owner (at plugin unload). */
void timers_stop_owner(timers *t, void *owner);
/* Runs every timer due at or before now, in due order. A repeating timer
 * is rescheduled from its due time (no drift), and fires at most once per
 * call even if several periods passed. Returns how many fired. */
size_t timers_run_due(timers *t, double now);
/* Seconds from now until the next timer is due (0 if overdue), or -1 when
 * there is none. */
double timers_next_due(const timers *t, double now);
size_t timers_count(const timers *t);

#endif
