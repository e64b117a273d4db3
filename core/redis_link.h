/* A link to one Redis for cluster mode: PUBLISH, SUBSCRIBE, commands
 * with replies and Lua scripts through hiredis's asynchronous API, driven
 * by an lws context's own loop (no blocking Redis call). A link holds two
 * connections to the same server, one for commands (PUBLISH, the others)
 * and one for SUBSCRIBE: in RESP2 a subscribed connection can issue
 * nothing else. When either drops (a Redis restart),
 * the link reports itself down, reconnects with backoff (100 ms doubling
 * to 5 s) and, once both are back, subscribes again to every channel it
 * has before reporting itself up.
 *
 * A connection need not drop to count as lost: an attempt that is not
 * usable (TCP connected, AUTH and SELECT answered) within
 * REDIS_LINK_CONNECT_TIMEOUT_MS is abandoned (an address that drops
 * packets would otherwise hold it for the kernel's ~2 min TCP timeout),
 * and a usable connection that answers nothing for
 * REDIS_LINK_DEAD_AFTER_MS (a Redis stopped, frozen or swapping) is
 * dropped; both take the reconnection path above. Each connection gets a
 * heartbeat every REDIS_LINK_PING_INTERVAL_MS for that: PING on the
 * command connection, a SUBSCRIBE to a channel of the link's own on the
 * subscriber connection (redis_link.c says why not PING there).
 *
 * Every function runs on the thread that services the context the link
 * was started on, and none from within the link's own handlers
 * (on_message, on_state, a command's callback) except publish,
 * subscribe, unsubscribe, command, eval, script_add and the queries.
 * Stop a link before destroying its context. */
#ifndef SM_CORE_REDIS_LINK_H
#define SM_CORE_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>

struct lws_context;
struct redisReply;

/* Statuses of the functions below. */
#define REDIS_LINK_OK 0
#define REDIS_LINK_DOWN (-1)      /* no connection to Redis now: the caller decides */
#define REDIS_LINK_BUSY (-2)      /* REDIS_LINK_MAX_IN_FLIGHT publishes (or commands) await Redis */
#define REDIS_LINK_NO_MEMORY (-3)
#define REDIS_LINK_INVALID (-4)   /* a bad argument: empty or over-long channel, bad URL */

/* Publishes sent and not yet answered, at most, and as many commands
 * (redis_link_command, redis_link_eval; counted apart): beyond, the call
 * returns REDIS_LINK_BUSY instead of queueing without bound. */
#define REDIS_LINK_MAX_IN_FLIGHT 10000
/* Liveness. Issue 14 wants the users of a dead node offline everywhere
 * within 15 s: nodes refresh their presence keys through this link, so a
 * node must notice a Redis that stopped answering, and be back on a
 * working one, well inside that budget. A healthy Redis answers in well
 * under a millisecond and its slow moments (a fork for a snapshot, a slow
 * command) last far less than 3 s; a PING per second costs it two
 * commands a second per node. A silent connection is thus dropped 3 to 4
 * s (DEAD_AFTER, plus up to one interval) after its last answer, a
 * quarter of the budget, leaving the rest for the reconnection (first
 * retry after 100 ms) and the presence refresh. The connect timeout
 * (TCP connect and AUTH/SELECT answered) is 2 s: a thousand times a LAN
 * round trip, and an unreachable Redis is retried every 2 s plus the
 * backoff instead of every two minutes. */
#define REDIS_LINK_CONNECT_TIMEOUT_MS 2000
#define REDIS_LINK_PING_INTERVAL_MS 1000
#define REDIS_LINK_DEAD_AFTER_MS 3000
/* The longest channel name, in bytes. */
#define REDIS_LINK_CHANNEL_MAX 1024
/* The longest URL redis_link_parse_url accepts, in bytes. */
#define REDIS_LINK_URL_MAX 1024

/* A parsed redis:// URL. */
typedef struct redis_link_url {
    char host[256];     /* a name or an address; an IPv6 one without its brackets */
    int port;           /* 1..65535, 6379 when the URL has none */
    int db;             /* 0..15, 0 when the URL has none */
    char password[256]; /* "" for none; percent-escapes decoded */
} redis_link_url;

/* Parses redis://[:password@]host[:port][/db]: host a name, an IPv4
 * address or an [IPv6] address; the password may hold %XX escapes.
 * Returns 0 and fills *out, or REDIS_LINK_INVALID with a sentence in err
 * (err_len bytes, NUL-terminated) saying what is wrong; the message never
 * repeats the password. */
int redis_link_parse_url(const char *url, redis_link_url *out, char *err, size_t err_len);

typedef struct redis_link redis_link;

typedef struct redis_link_handlers {
    /* A message on a channel the link is subscribed to (payload: len
     * bytes, binary; not NUL-terminated). May be NULL. */
    void (*on_message)(const char *channel, const void *payload, size_t len, void *arg);
    /* The link went up (1: both connections answer and every
     * subscription is confirmed again) or down (0: a connection dropped
     * or stopped answering, or the first attempt failed or timed out).
     * Called on changes only. May be NULL. */
    void (*on_state)(int up, void *arg);
} redis_link_handlers;

/* Starts a link to the Redis at url on ctx. The connections are made
 * from the loop (the first attempt right after start returns); nothing
 * here waits for them. A host name is resolved (getaddrinfo) on each
 * attempt, which blocks the loop for the lookup: give an address where
 * that matters. handlers is copied; arg is passed to them. Returns 0 with
 * *out set, REDIS_LINK_INVALID (a bad URL, the reason in err) or
 * REDIS_LINK_NO_MEMORY (err says so too). */
int redis_link_start(struct lws_context *ctx, const char *url, const redis_link_handlers *handlers,
                     void *arg, redis_link **out, char *err, size_t err_len);

/* Closes both connections and frees the link (and its scripts);
 * publishes not yet answered count as failed, and commands not yet
 * answered get their callbacks with NULL before this returns. NULL is a
 * no-op. */
void redis_link_stop(redis_link *link);

/* Adds channel (NUL-terminated, 1..REDIS_LINK_CHANNEL_MAX bytes) to the
 * link's subscriptions; sent now if the subscriber connection is up, and
 * again after every reconnection. Subscribing twice is one subscription.
 * Returns 0, REDIS_LINK_INVALID or REDIS_LINK_NO_MEMORY. */
int redis_link_subscribe(redis_link *link, const char *channel);

/* Removes channel from the subscriptions: no message on it reaches
 * on_message after this returns, even one already on its way. Returns 0,
 * or REDIS_LINK_INVALID when the link was not subscribed to it. */
int redis_link_unsubscribe(redis_link *link, const char *channel);

/* 1 when Redis confirmed the subscription to channel on the current
 * connection (from then on, a message published on it reaches the link),
 * else 0. */
int redis_link_is_subscribed(const redis_link *link, const char *channel);

/* Sends PUBLISH channel payload (len bytes, binary-safe). Returns 0 when
 * sent (its outcome is counted: published or publish_failed),
 * REDIS_LINK_DOWN when the command connection is not up,
 * REDIS_LINK_BUSY when REDIS_LINK_MAX_IN_FLIGHT publishes await an
 * answer, REDIS_LINK_INVALID for a bad channel. Nothing is queued when
 * it does not return 0. */
int redis_link_publish(redis_link *link, const char *channel, const void *payload, size_t len);

/* ---- commands with replies ----------------------------------------------

 * What a command's callback gets: Redis's reply (any type, an error reply
 * included: REDIS_REPLY_ERROR with its text), valid during the call only;
 * or NULL when no reply will come: the command connection was lost or
 * dropped for its silence after the command was sent (Redis may or may
 * not have run it), or the link is being stopped. Called once per
 * command sent, on the loop's thread. From within it the caller may send
 * commands (they return REDIS_LINK_DOWN while the connection is going) but
 * not stop the link. */
typedef void (*redis_link_reply_fn)(const struct redisReply *reply, void *arg);

/* Sends one command (argv[0] the command's name, argc >= 1; each
 * argument argvlen[i] bytes, binary-safe, or NUL-terminated when argvlen
 * is NULL) on the command connection; cb (may be NULL) gets its reply.
 * Commands are sent, and answered, in the order of the calls, after any
 * publish sent before. Returns 0 when sent: cb runs exactly once, later;
 * else cb never runs and nothing is queued: REDIS_LINK_DOWN when the
 * command connection is not up (at once: nothing waits for Redis),
 * REDIS_LINK_BUSY when REDIS_LINK_MAX_IN_FLIGHT commands await an answer,
 * REDIS_LINK_NO_MEMORY, or REDIS_LINK_INVALID for a bad argument or a
 * command that would change the connection behind the link's back
 * (SUBSCRIBE and its kin, MONITOR, SELECT, AUTH, HELLO, RESET, QUIT). A
 * blocking command (BLPOP...) holds every later one and, past
 * REDIS_LINK_DEAD_AFTER_MS, the heartbeat drops the connection: don't. */
int redis_link_command(redis_link *link, int argc, const char *const *argv,
                       const size_t *argvlen, redis_link_reply_fn cb, void *arg);

/* ---- Lua scripts ---------------------------------------------------------- */

/* A Lua script known to a link: run by SHA1 (EVALSHA), so its text
 * crosses the network once per connection, not once per call. The link
 * SCRIPT LOADs every script it knows on each command connection, right
 * after AUTH/SELECT and before anything else (and at once on a live
 * connection when a script is added): an EVALSHA sent afterwards on that
 * connection reaches Redis after the load, so a script is never missing
 * after a Redis restart, and calls keep their order. Should Redis answer
 * NOSCRIPT all the same (an operator's SCRIPT FLUSH, a failover to a
 * replica that never saw the load), the call is sent again as EVAL with
 * the text (which loads it too), and only that call may then run after
 * calls made later. A script that does not compile is logged once per
 * connection; its calls get Redis's error reply. */
typedef struct redis_link_script redis_link_script;

/* Adds a script (NUL-terminated Lua source) to the link, which owns it
 * until redis_link_stop; adding the same source again gives the same
 * script. Returns 0 with *out set, REDIS_LINK_INVALID (empty source) or
 * REDIS_LINK_NO_MEMORY. */
int redis_link_script_add(redis_link *link, const char *source, redis_link_script **out);

/* The script's SHA1, 40 lower-case hexadecimal digits. */
const char *redis_link_script_sha(const redis_link_script *script);

/* Runs script: EVALSHA sha numkeys argv[0..argc), the first numkeys of
 * argv being its KEYS, the rest its ARGV (argvlen as for
 * redis_link_command; 0 <= numkeys <= argc). Returns and calls back as
 * redis_link_command (a NOSCRIPT answer is not passed on: the EVAL's
 * is). The arguments are copied. */
int redis_link_eval(redis_link *link, const redis_link_script *script, int numkeys, int argc,
                    const char *const *argv, const size_t *argvlen, redis_link_reply_fn cb,
                    void *arg);

/* 1 while the link is up (see on_state), else 0. */
int redis_link_is_up(const redis_link *link);

/* Counters for metrics; readable from any thread (atomics). */
typedef struct redis_link_counters {
    uint64_t published;      /* PUBLISH commands Redis answered */
    uint64_t publish_failed; /* sent but not answered (connection lost, or dropped for its
                                silence: Redis may still have run it) or refused by Redis */
    uint64_t publish_refused; /* publish calls that returned DOWN or BUSY */
    uint64_t received;       /* messages passed to on_message */
    uint64_t reconnects;     /* times the link came up again after being down */
    uint64_t in_flight;      /* publishes sent, not yet answered (a gauge) */
    uint64_t commands;       /* commands and scripts Redis answered (error replies too) */
    uint64_t command_failed; /* sent but not answered: their callbacks got NULL */
    uint64_t command_refused; /* command and eval calls that returned DOWN or BUSY */
    uint64_t commands_in_flight; /* sent, not yet answered (a gauge) */
    uint64_t script_fallbacks; /* EVALSHA answered NOSCRIPT, sent again as EVAL */
} redis_link_counters;

void redis_link_get_counters(const redis_link *link, redis_link_counters *out);

/* A short English text for a status above ("ok", "redis is down", ...). */
const char *redis_link_status_text(int status);

#endif
