/* The logic thread's wait (issue 11): once dispatch and the plugins run
 * on a thread of their own, that thread is no lws loop any more; it
 * sleeps here until its next timer is due or another thread hands it
 * work (an I/O thread's commands, a worker's completion) and calls
 * wakeup_signal. An eventfd: signals made before the wait are not lost,
 * and any number of them wake one wait once. */
#ifndef SM_CORE_WAKEUP_H
#define SM_CORE_WAKEUP_H

typedef struct wakeup wakeup;

/* NULL, after logging why, when no eventfd could be had. */
wakeup *wakeup_new(void);
void wakeup_free(wakeup *w);

/* Wakes the waiter, now or at its next wakeup_wait. Any thread;
 * async-signal-safe (a write to the eventfd), so SIGTERM and SIGHUP
 * handlers may call it too. */
void wakeup_signal(wakeup *w);
/* Waits until signalled or timeout seconds passed (timeout < 0: no
 * limit). Returns 1 when signalled (the signals are consumed), 0 on
 * timeout, -1 on failure (logged). An interrupting signal returns 0:
 * the caller re-checks its state either way. */
int wakeup_wait(wakeup *w, double timeout);

#endif
