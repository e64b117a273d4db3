/* Group commit for storage on PostgreSQL (issue 14 item 3: "the logic
 * thread's waits are bounded and measured; a write is acknowledged to a
 * client only after PostgreSQL committed it").
 *
 * Why: plugins run their statements synchronously on the logic thread
 * (the SDK's storage API). A COMMIT that waits for PostgreSQL's WAL flush
 * (an fsync, 2-4 ms on the reference machine) would stop every session's
 * commands for that long: measured, private messages on one node fell
 * from about 5,000/s on SQLite to 285/s (docs/BENCHMARKS.md (i)). So the
 * logic thread commits with synchronous_commit = off (the commit is done
 * and visible, its WAL not yet flushed, which PostgreSQL does in the
 * background) and nothing it sends after a write leaves the process
 * until a barrier confirms the flush: a worker, on a connection of its
 * own, commits a transaction of its own with synchronous_commit = on,
 * which returns only once the WAL is flushed up to its commit record,
 * after every commit the logic thread made before the barrier began. One
 * barrier (one fsync) covers every write since the previous one: the
 * logic thread never waits, and a client's reply waits for one flush.
 *
 * Held: every item the logic thread queues for the I/O threads (replies,
 * events, publishes, a command's end, closes) once a write is not yet
 * confirmed, and everything after such an item, so the order every
 * session sees is the order the logic thread produced. A reply or event
 * that needs no write waits only if something before it does.
 *
 * A barrier that fails (PostgreSQL unreachable) is retried with backoff
 * (50 ms doubling to 1 s); after DURABILITY_GIVE_UP_S seconds without a
 * confirmation the held items are released with an error in the log and
 * counted (`unconfirmed`): sessions must not stall for ever on a database
 * that is gone, and a commit PostgreSQL accepted is lost only if
 * PostgreSQL itself crashed before flushing it.
 *
 * Logic thread only, except the barrier function (a worker) and
 * durability_stats_get (any thread). Not used on
 * SQLite, whose commits are durable by its own `synchronous` setting. */
#ifndef SM_CORE_DURABILITY_H
#define SM_CORE_DURABILITY_H

#include <stddef.h>
#include <stdint.h>

struct workers;

/* Seconds without a confirmed barrier before held items go unconfirmed. */
#define DURABILITY_GIVE_UP_S 10.0

/* Blocks until PostgreSQL confirms that every commit made before the
 * call is flushed: 0, or -1 (logged by the function). Runs on a worker. */
typedef int (*durability_barrier_fn)(void *arg);
/* Hands a held item on, in order (io_threads' queue). */
typedef void (*durability_release_fn)(int index, void *item);
/* The number of commits the logic thread made that may have written. */
typedef uint64_t (*durability_commits_fn)(void);
/* Asks the logic thread to call durability_kick() soon, after the work
 * it is doing now (a zero-delay timer), so that one barrier covers all
 * of it. */
typedef void (*durability_kick_fn)(void);

typedef struct durability_ops {
    durability_barrier_fn barrier;
    void *barrier_arg;
    durability_release_fn release;
    durability_commits_fn commits;
    durability_kick_fn kick;
    double give_up_s; /* 0: DURABILITY_GIVE_UP_S (tests shorten it) */
} durability_ops;

/* Turns holding on. SM_OK, or SM_ESTATE if already on. */
int durability_start(struct workers *pool, const durability_ops *ops);
/* Confirms and releases what is held (waiting for the barrier in flight,
 * then running one more on this thread if needed) and turns holding off.
 * Before the I/O threads stop taking items. Nothing to do when off. */
void durability_stop(void);
int durability_active(void);

/* Called with every item for I/O thread `index`: 1 when held (released
 * later through ops.release, the caller hands it nowhere), 0 when the
 * caller queues it now (nothing unconfirmed is ahead of it). */
int durability_hold(int index, void *item);
/* 1 when durability_hold would hold an item now: a caller that must copy
 * what it holds (a cluster publish) copies only then. */
int durability_would_hold(void);
/* Starts a barrier for what is held, unless one is in flight (ops.kick
 * brings the call). */
void durability_kick(void);

typedef struct durability_stats {
    uint64_t barriers;     /* barriers confirmed */
    uint64_t failures;     /* barriers that failed (retried) */
    uint64_t released;     /* items held, then released after a barrier */
    uint64_t unconfirmed;  /* items released after DURABILITY_GIVE_UP_S without one */
    size_t held;           /* items held now */
    size_t high_water;     /* most items held at once */
    double wait_seconds;   /* barriers' durations, summed */
    double wait_max;       /* the longest barrier */
} durability_stats;

/* Any thread. */
void durability_stats_get(durability_stats *out);

#endif
