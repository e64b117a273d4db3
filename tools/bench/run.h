/* What the scenarios share: simulated users and their setup (connect,
 * handshake, register or log in, join a room), timed phases with the
 * once-a-second progress line, commands in flight, and the parts of the
 * report every scenario has. */
#ifndef SM_BENCH_RUN_H
#define SM_BENCH_RUN_H

#include "bench.h"

#define USER_NAME_MAX 33            /* 32 characters and the NUL */

typedef enum {
    STAGE_IDLE,                     /* no connection (or not a setup user) */
    STAGE_CONNECTING,               /* connect and handshake, then register */
    STAGE_REGISTER,
    STAGE_LOGIN,                    /* register said 1010: the user exists */
    STAGE_JOIN,
    STAGE_READY,
    STAGE_GONE                      /* failed or closed */
} user_stage;

typedef struct pending {
    uint64_t nonce;
    uint64_t sent_ns;
} pending;

typedef struct user {
    bench_conn *conn;
    unsigned idx;
    user_stage stage;
    int join;                       /* setup joins room `room` */
    unsigned room;
    int role;                       /* the scenario's */
    uint64_t wait_nonce;            /* the setup command awaiting its reply */
    pending *pend;                  /* measured commands in flight, run.window of them */
    unsigned inflight;
    unsigned next_target;
    uint64_t sent;
    char name[USER_NAME_MAX];
} user;

typedef struct run run;

typedef struct run_hooks {
    /* A handshake completed on a connection that is not in setup. */
    void (*conn_ready)(run *r, bench_conn *c);
    /* A user finished setup. */
    void (*user_ready)(run *r, user *u);
    /* A server message for a ready user. */
    void (*message)(run *r, user *u, const bench_msg *m);
    /* A ready user's connection ended. */
    void (*ended)(run *r, user *u, bench_end why);
    /* Every tick_ms while a phase runs; nonzero ends the phase. */
    int (*tick)(run *r, uint64_t now);
    /* The scenario's part of the progress line, rates over dt seconds. */
    void (*progress)(run *r, char *buf, size_t len, double dt);
} run_hooks;

/* CPU use over an interval, from two marks. */
typedef struct cpu_mark {
    uint64_t wall_ns;
    uint64_t bench_ns;              /* this process */
    uint64_t server_ticks;          /* utime + stime of --server-pid */
    int has_server;
    int has_threads;
    thread_snapshot threads;        /* --server-pid's threads */
} cpu_mark;

struct run {
    const bench_opts *o;
    bench_loop *loop;
    run_hooks hooks;
    void *scenario;
    user *users;
    unsigned n_users;
    unsigned window;
    unsigned tick_ms;
    /* setup */
    int in_setup;
    unsigned next_setup, setup_inflight, setup_ready, setup_failed;
    char setup_error[200];
    /* phases */
    const char *phase;
    int measuring;
    int (*until)(run *r);           /* ends the current phase early */
    uint64_t t0_ns, next_progress_ns, last_progress_ns;
    uint64_t quiet_frames, quiet_since_ns;  /* run_setup's settle phase */
    /* the scenario's unit of work and deliveries: measured time only, and
     * in every phase (all_*, for the progress line) */
    uint64_t done, all_done, done_shown;
    uint64_t deliveries, all_deliveries, deliveries_shown;
    uint64_t cmd_errors;
    uint64_t unexpected;
    /* connections and ended ones on other threads' loops (fanout
     * --readers), for the progress line; the scenario keeps them current */
    size_t live_elsewhere;
    uint64_t errors_elsewhere;
    json_t *error_codes;            /* "code" -> count, every phase */
    /* teardown (run_close_all): not errors of the run */
    uint64_t teardown_timeouts;     /* closes the server did not finish in time */
    size_t teardown_unclosed;       /* still open when the wait ended */
    double teardown_s;
};

/* n users named <prefix><index>; window = commands in flight per sender
 * (pending slots are allocated by run_sender). Returns 0 or -1. */
int run_init(run *r, const bench_opts *o, const run_hooks *h, void *scenario, unsigned n_users,
             unsigned window);
void run_free(run *r);
int run_sender(run *r, user *u);

/* Connects every user not yet set up (stage IDLE, conn NULL), registers
 * them (or logs in when the name exists) and joins rooms for users with
 * join set, at most setup_concurrency at once; then waits until the
 * server has gone quiet (no frame for 300 ms, at most 60 s): the replies
 * come before the room events the joins caused, and a 1,000-member room
 * leaves about half a million user_joined events still queued when the
 * last reply arrives. Writes report.setup. Returns 0 when all are ready,
 * -1 otherwise (report.error says why). */
int run_setup(run *r, json_t *report);

/* Runs the loop for `seconds` (ends early when until(r) returns nonzero).
 * Returns the seconds it ran. */
double run_phase(run *r, const char *name, double seconds, int measuring, int (*until)(run *));

/* Sends a command for u and records it in flight (pend when u has one).
 * Returns 0 or -1. */
int user_send(run *r, user *u, const char *action, const char *payload, size_t len,
              uint64_t now);
/* Takes the command a reply answers out of u's in-flight set: 1 and its
 * send time, or 0 when it is not one of u's measured commands. */
int user_take_reply(user *u, uint64_t reply_nonce, uint64_t *sent_ns);
/* Counts an error reply by code; returns the code (-1 if unreadable). */
int run_count_error(run *r, const bench_msg *m);
/* Closes every connection gracefully and waits up to `seconds` for them;
 * what is slower is counted as teardown, not as an error. */
void run_close_all(run *r, double seconds);

/* Writes the content for now: the timestamp, a space and padding to
 * o->content_bytes. Returns its length. */
size_t content_make(const bench_opts *o, uint64_t now, char *buf, size_t cap);

void cpu_take(const run *r, cpu_mark *m);
json_t *cpu_json(const cpu_mark *a, const cpu_mark *b);

/* Fills report.errors, report.verification and report.traffic. */
void run_report(run *r, json_t *report);

/* Counts one unit of the scenario's work / one delivery. */
static inline void count_done(run *r)
{
    r->all_done++;
    r->done += r->measuring != 0;
}

static inline void count_delivery(run *r)
{
    r->all_deliveries++;
    r->deliveries += r->measuring != 0;
}

/* x per second over s seconds (0 when s is 0). */
double per_s(uint64_t x, double s);

#endif
