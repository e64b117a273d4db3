/* The I/O threads' side of the bridge (issue 11, bridge.h): each I/O
 * thread owns its connections' sessions end to end (handshake, envelope
 * open and seal, send queue, writes) and keeps them in a map of its own;
 * the logic thread (dispatch, every plugin, timers, worker completions)
 * keeps the opened ones in g_core.sessions. They talk through queues:
 *
 *   logic -> I/O thread: a bounded hand-off queue per thread (handoff.h)
 *     of send / publish / done / close / call items. A publish is one item
 *     per thread whatever the number of recipients on it, carrying one
 *     reference-counted text (shared_payload.h). When a thread's queue is
 *     full the logic thread waits for it to drain (that thread never waits
 *     for the logic thread, so the wait ends), counting and logging each
 *     wait: memory stays bounded and a slow thread slows the producer.
 *   I/O thread -> logic: one queue of opened / command / gone items. It
 *     is bounded by construction, not by a capacity: a session posts
 *     opened once, gone once, and at most one command until its done.
 *
 * No lws here: the transport gives the wake-ups. */
#ifndef SM_CORE_IO_THREADS_H
#define SM_CORE_IO_THREADS_H

#include <stddef.h>
#include <stdint.h>

#include "bridge.h"
#include "config.h"
#include "handoff.h"
#include "safemessenger/plugin.h"

#define IO_THREADS_MAX CONFIG_MAX_IO_THREADS

struct session;

/* Queues for n (1..IO_THREADS_MAX) I/O threads, each taking at most
 * `capacity` items. wake_io(i) wakes I/O thread i, wake_logic the logic
 * thread; both are called from any thread. 0, or -1 when out of memory
 * (logged). Sets g_core.bridge. */
int io_threads_init(size_t n, size_t capacity, void (*wake_io)(int index),
                    void (*wake_logic)(void));
/* Frees every queue, dropping what is still queued (its descriptors
 * closed, its completions' jobs left to handshake_drain first), and
 * clears g_core.bridge. Once no I/O thread runs, and after
 * io_threads_run_logic took the last opened/gone items (their sessions
 * are not freed here). */
void io_threads_free(void);
size_t io_threads_count(void);

/* ---- on an I/O thread ---- */

/* The calling thread is I/O thread `index` from now on. */
void io_threads_enter(int index);
/* The calling I/O thread's index, or -1 on any other thread. */
int io_threads_current(void);
/* A session of the calling I/O thread, or NULL. */
struct session *io_threads_find(sm_session_id id);
/* Adds a new session to the calling thread's map (s->io_thread set).
 * SM_OK or SM_ENOMEM. */
int io_threads_add(struct session *s);
/* The connection is gone: s leaves the thread's map; the logic side is
 * told when it knew the session (it destroys it), otherwise the session
 * is discarded here. The caller never touches s again. */
void io_threads_gone(struct session *s);
/* Calls fn on every session of the calling thread (fn may close them). */
void io_threads_each(void (*fn)(struct session *s));
/* Runs what was posted to the calling thread: completions, then the
 * logic thread's items. Returns how many ran. */
size_t io_threads_run(void);
/* The calling thread is stopping: no socket or completion is posted to it
 * any more and nothing wakes it (its lws context may be destroyed after
 * this); items the logic thread still queues stay until io_threads_free,
 * or are dropped when its queue is full. */
void io_threads_stopping(void);
/* The calling thread ends: the sessions still in its map are handed to
 * io_threads_gone, completions already posted run (their sessions are
 * gone), sockets not yet adopted are closed. */
void io_threads_leave(void);

/* ---- the acceptor ---- */

/* The I/O thread with the fewest connections (ties in turn). */
int io_threads_pick(void);
/* An accepted socket for thread `index` to adopt (io_threads_take_fd).
 * 0, or -1 when that thread has stopped (fd is the caller's). */
int io_threads_post_fd(int index, int fd);
/* The next socket posted to the calling thread, or -1. */
int io_threads_take_fd(void);
/* A connection of thread `index` began or ended (the acceptor's choice). */
void io_threads_count_connection(int index, int delta);

/* How an I/O thread wakes the logic thread once its current pass is over
 * (the transport: a zero-delay lws timer on the thread's context whose
 * callback wakes the logic thread); NULL, the default: at once. Set
 * before the I/O threads start. */
void io_threads_set_deferred_wake(void (*defer)(void));

/* ---- any thread ---- */

/* Wakes I/O thread `index` unless it has stopped. */
void io_threads_wake(int index);

/* Runs fn(arg) on I/O thread `index` (a worker's finished handshake job).
 * 0, or -1 when that thread has stopped (arg is the caller's). */
int io_threads_post_completion(int index, void (*fn)(void *arg), void *arg);
/* Runs fn(index) on every I/O thread, in order behind what the logic
 * thread queued before (logic thread). */
void io_threads_call_all(void (*fn)(int index));

/* ---- on the logic thread ---- */
/* Queues an item durability.h held for I/O thread `index`, now that it
 * may go (its durability_release_fn). */
void io_threads_release_held(int index, void *item);

/* Runs the I/O threads' opened / command / gone items. Returns how many. */
size_t io_threads_run_logic(void);

typedef struct io_threads_stats {
    handoff_stats queue;     /* the I/O threads' queues, summed (high_water: the largest) */
    uint64_t full_waits;     /* times the logic thread waited for a full queue */
} io_threads_stats;
void io_threads_stats_get(io_threads_stats *out);

#endif
