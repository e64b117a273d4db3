/* safemessenger-bench: a load generator for one SafeMessenger server on
 * the same machine. One process, one thread, one epoll loop, thousands of
 * connections, each a small state machine (loop.c) that speaks the
 * protocol of PROTOCOL.md with the building blocks the client library is
 * made of: WebSocket frame helpers (client/ws.h), sealing and opening
 * (proto/envelope.h), RSA-OAEP and friends (proto/crypto.h).
 *
 * main.c reads the options and prints the report, loop.c owns sockets
 * and connections, scenarios.c drives them (one function per scenario),
 * stats.c keeps latency histograms. */
#ifndef SM_BENCH_H
#define SM_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <jansson.h>

#include "envelope.h"
#include "ws.h"

/* Hard bounds, whatever the options say. The machine allows 20,000 file
 * descriptors per process; the server and the bench are separate
 * processes, each under that limit. */
#define BENCH_MAX_CONNECTIONS 19000u
#define BENCH_FD_RESERVE 64u            /* stdio, epoll, /proc files, slack */
#define BENCH_MAX_DURATION_S 300.0
#define BENCH_MAX_SETUP_S 600.0
#define BENCH_MAX_SOURCES 64u
#define BENCH_MAX_CONTENT 16000u        /* below the server's default 16384 */
#define BENCH_MAX_WINDOW 1024u
#define BENCH_MAX_TARGETS 16u           /* --url given this many times at most */

/* ---- options ------------------------------------------------------------ */

/* One server (a node of a cluster): --url may be repeated, and
 * connections go to the targets in turn (the n-th opened to target
 * n mod count), so every scenario's users spread evenly over the nodes. */
typedef struct bench_target {
    const char *url;
    ws_url ws;                      /* parsed url */
    struct sockaddr_storage addr;
    socklen_t addr_len;
} bench_target;

typedef struct bench_opts {
    const char *scenario;
    bench_target targets[BENCH_MAX_TARGETS];
    unsigned n_targets;             /* 1 when no --url: the default */
    double duration_s;              /* measured time */
    double warmup_s;                /* load before measuring */
    double setup_timeout_s;         /* connecting and logging in */
    unsigned connections;           /* handshakes, logins, idle */
    unsigned rooms, members, senders;   /* fanout (senders: private too) */
    unsigned online, offline;       /* private: recipients */
    double rate;                    /* messages/s in total; 0 = as fast as windows allow */
    unsigned window;                /* commands in flight per sender */
    unsigned room_window;           /* fanout: undelivered messages per room */
    unsigned content_bytes;         /* message content length */
    unsigned verify_one_in;         /* open 1 delivery in K fully */
    unsigned readers;               /* fanout: threads reading members' deliveries */
    double bystander_ms;            /* logins: the bystander's get_users period; 0 = none */
    unsigned bystander_rounds;      /* logins: alone/storm alternations */
    long server_pid;                /* 0 = unknown */
    unsigned sources;               /* 127.0.0.x source addresses, 0 = auto */
    unsigned setup_concurrency;     /* connections in setup at once */
    unsigned max_connections;       /* min(BENCH_MAX_CONNECTIONS, fd limit - reserve) */
    const char *user_prefix;
    const char *password;
    int quiet;                      /* no progress line */
} bench_opts;

/* ---- time --------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds: the clock the content timestamps use. */
uint64_t bench_now_ns(void);
/* A kernel receive time on the realtime clock (SO_TIMESTAMPNS) as a
 * bench_now_ns time: real_ns - *offset_ns, the offset being realtime -
 * monotonic as last measured. A result later than now_ns means the
 * realtime clock stepped since: the offset is taken again from
 * fresh_offset (kept in *offset_ns) and the time converted anew. 0 when
 * it still cannot be placed (before the epoch of the monotonic clock, or
 * after now). */
uint64_t bench_arrival_mono(int64_t real_ns, int64_t *offset_ns, uint64_t now_ns,
                            int64_t (*fresh_offset)(void));

/* ---- latency histograms (stats.c) --------------------------------------- */

/* Log-linear buckets: exact below 64 ns, then 64 buckets per power of two,
 * so a reported percentile is within 1/64 (1.6%) of the true sample; the
 * maximum and the mean are exact. */
#define HIST_SUB_BITS 6u
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB + (64u - HIST_SUB_BITS) * HIST_SUB)

typedef struct bench_hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n;
    uint64_t max;
    double sum;
} bench_hist;

void hist_reset(bench_hist *h);
void hist_add(bench_hist *h, uint64_t value);
/* Adds every sample of `from` to `into`. */
void hist_merge(bench_hist *into, const bench_hist *from);
/* Nearest rank: the smallest recorded bucket value v with at least p% of
 * the samples <= v (reported as the bucket's upper bound, at most max).
 * p in (0, 100]; 0 when the histogram is empty. */
uint64_t hist_percentile(const bench_hist *h, double p);
double hist_mean(const bench_hist *h);
/* {"samples", "p50", "p99", "max", "mean"} in milliseconds, values in ns. */
json_t *hist_json_ms(const bench_hist *h);

/* ---- the server's threads (threads.c) ----------------------------------- */

/* Thread groups by name (issue 11): the logic thread "sm-logic", the I/O
 * threads "sm-io-<i>", the worker pool "sm-worker-<i>", anything else. A
 * server whose threads are not named yet has its main thread (tid == pid)
 * counted as the logic thread, so figures compare before and after. */
typedef enum {
    TGROUP_LOGIC = 0,
    TGROUP_IO,
    TGROUP_WORKER,
    TGROUP_OTHER,
    TGROUP_COUNT
} thread_group;

#define BENCH_MAX_THREADS 128u
#define THREAD_COMM_MAX 16              /* the kernel's TASK_COMM_LEN */

typedef struct thread_sample {
    long tid;
    uint64_t ticks;                 /* utime + stime, clock ticks */
    thread_group group;
    char comm[THREAD_COMM_MAX];
} thread_sample;

/* The threads of one process at one instant (at most BENCH_MAX_THREADS;
 * `dropped` counts any beyond). */
typedef struct thread_snapshot {
    thread_sample t[BENCH_MAX_THREADS];
    unsigned n;
    unsigned dropped;
} thread_snapshot;

/* "sm-logic", "sm-io", "sm-worker", "other". */
const char *thread_group_name(thread_group g);
/* The group of a thread called `comm`; `main_thread` when its tid is the
 * process id, `named_logic` when some thread of it is called sm-logic. */
thread_group thread_group_of(const char *comm, int main_thread, int named_logic);
/* utime + stime from the text of a /proc/.../stat file (fields 14 and 15,
 * counted after the command name's last ')', which may itself contain
 * spaces and parentheses). Returns 0 or -1. */
int stat_text_ticks(const char *text, uint64_t *out);
/* Reads /proc/<pid>/task/ (each thread's comm and stat). Returns 0, or -1
 * when the process is gone. */
int threads_take(long pid, thread_snapshot *out);
/* CPU seconds per group between two snapshots (a thread new in b counts
 * from 0; one gone by b is lost: the kernel keeps no account of it), and
 * per thread name. {"sm-logic": s, "sm-io": s, "sm-worker": s, "other": s,
 * "total": s, "threads": {"<comm>": s, ...}}. */
json_t *threads_json(const thread_snapshot *a, const thread_snapshot *b);

/* ---- connections (loop.c) ----------------------------------------------- */

typedef struct bench_loop bench_loop;
typedef struct bench_conn bench_conn;

/* Why a connection ended, for the report's error counts. */
typedef enum {
    END_CLOSED_BY_US = 0,   /* conn_close() completed */
    END_CONNECT,            /* TCP connect failed */
    END_UPGRADE,            /* HTTP upgrade refused or malformed */
    END_HANDSHAKE,          /* server_hello / key_exchange failed */
    END_PROTOCOL,           /* bad frame, signature, nonce or envelope */
    END_SERVER_CLOSED,      /* the server closed on its own */
    END_TIMEOUT,            /* setup or close took too long */
    END_IO,                 /* socket error, out of memory */
    END_COUNT
} bench_end;

const char *bench_end_name(bench_end e);

/* A server message after the handshake. Deliveries (public_message and
 * private_message events) not chosen by --verify-one-in are not opened:
 * then verified is 0 and payload NULL (see loop.c for what is skipped). */
typedef struct bench_msg {
    const char *type;
    const char *action;
    const char *reply_to;       /* NULL when absent */
    uint64_t reply_nonce;       /* reply_to as a number, 0 when absent */
    json_t *payload;            /* borrowed, valid during the callback */
    int verified;
    uint64_t content_ns;        /* a verified delivery's send time, 0 if none */
    uint64_t recv_ns;           /* when the bench took it (after the frames before it) */
    /* When the kernel received the bytes that completed it (SO_TIMESTAMPNS,
     * monotonic clock; 0 if unknown): what a client with a core of its own
     * would see, without the bench's own queue of connections to read. */
    uint64_t arrival_ns;
} bench_msg;

typedef struct bench_handlers {
    void (*ready)(bench_conn *c, void *arg);        /* handshake complete */
    void (*message)(bench_conn *c, const bench_msg *m, void *arg);
    /* The connection is gone; it is freed after this returns. */
    void (*ended)(bench_conn *c, bench_end why, void *arg);
} bench_handlers;

typedef struct bench_counters {
    uint64_t connects;          /* TCP connections started */
    uint64_t per_target[BENCH_MAX_TARGETS]; /* of which to each target */
    uint64_t ended[END_COUNT];
    uint64_t verified;          /* deliveries opened fully */
    uint64_t unverified;        /* deliveries only parsed (sampling) */
    uint64_t close_timeouts;    /* our close not answered by a TCP close in 2 s */
    uint64_t frames_in;
    uint64_t bytes_in, bytes_out;
} bench_counters;

int loop_new(const bench_opts *o, const bench_handlers *h, void *arg, bench_loop **out);
void loop_free(bench_loop *L);

/* Starts a connection (non-blocking connect, then upgrade and handshake
 * driven by the loop). `user` is the caller's pointer for it. Returns 0,
 * or -1 when no descriptor is left or the socket cannot be made. */
int loop_connect(bench_loop *L, void *user, bench_conn **out);

/* Called about every tick_ms (and once a second for progress) while the
 * loop runs; returning nonzero ends loop_run. */
typedef int (*bench_tick_fn)(void *arg, uint64_t now_ns);

/* Runs until tick returns nonzero, until deadline_ns, or until the run
 * is interrupted (SIGINT). Returns 0, or -1 when epoll failed. */
int loop_run(bench_loop *L, uint64_t deadline_ns, unsigned tick_ms, bench_tick_fn tick,
             void *arg);
/* Connections open (not yet ended), and how many of them are mid-close. */
size_t loop_live(const bench_loop *L);
size_t loop_closing(const bench_loop *L);
const bench_counters *loop_counters(const bench_loop *L);
/* The descriptor budget: how many more connections may be opened. */
size_t loop_room(const bench_loop *L);

/* Hands a ready connection to another loop (another thread's), whose
 * handlers see it from then on. Neither loop may be running. Returns 0,
 * or -1 (not ready, closing, or epoll refused). */
int loop_move(bench_conn *c, bench_loop *to);
/* Adds the traffic, verification and end counts of `from` to `into`'s
 * (connects stay with the loop that opened them): one report for a
 * scenario that read on several loops. */
void loop_counters_add(bench_loop *into, const bench_loop *from);

/* Seals a command (payload: a serialised JSON object) and queues it.
 * *nonce (may be NULL) receives its nonce. Returns 0 or -1. */
int conn_send(bench_conn *c, const char *action, const char *payload, size_t len,
              uint64_t *nonce);
/* The same with a JSON object (borrowed). */
int conn_send_json(bench_conn *c, const char *action, const json_t *payload, uint64_t *nonce);
/* Graceful close: a close frame (1000), then wait for the server to close
 * the TCP connection (so TIME_WAIT stays on the server side), at most 2 s.
 * Before the handshake the socket is just closed. ended() follows. */
void conn_close(bench_conn *c);
void *conn_user(const bench_conn *c);
void conn_set_user(bench_conn *c, void *user);
/* When the connection was started (bench_now_ns), for handshake latency. */
uint64_t conn_started_ns(const bench_conn *c);

/* ---- scenarios (scenarios.c) -------------------------------------------- */

/* Each runs one scenario and fills `report` (the "results", "setup" and
 * "errors" members). Returns 0 when the scenario ran (errors are in the
 * report), -1 when it could not (setup failed: the reason in report's
 * "error"). */
int scenario_handshakes(const bench_opts *o, json_t *report);
int scenario_logins(const bench_opts *o, json_t *report);
int scenario_fanout(const bench_opts *o, json_t *report);
int scenario_private(const bench_opts *o, json_t *report);
int scenario_idle(const bench_opts *o, json_t *report);

/* Set by SIGINT/SIGTERM: scenarios stop measuring and report. */
extern volatile int bench_interrupted;

#endif
