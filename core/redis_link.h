/* A link to one Redis for cluster mode: PUBLISH and SUBSCRIBE through
 * hiredis's asynchronous API, driven by an lws context's own loop (no
 * blocking Redis call). A link holds two connections to the same server,
 * one for commands (PUBLISH) and one for SUBSCRIBE: in RESP2 a subscribed
 * connection can issue nothing else. When either drops (a Redis restart),
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
 * (on_message, on_state) except publish, subscribe, unsubscribe and the
 * queries. Stop a link before destroying its context. */
#ifndef SM_CORE_REDIS_LINK_H
#define SM_CORE_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>

struct lws_context;

/* Statuses of the functions below. */
#define REDIS_LINK_OK 0
#define REDIS_LINK_DOWN (-1)      /* no connection to Redis now: the caller decides */
#define REDIS_LINK_BUSY (-2)      /* REDIS_LINK_MAX_IN_FLIGHT publishes await Redis */
#define REDIS_LINK_NO_MEMORY (-3)
#define REDIS_LINK_INVALID (-4)   /* a bad argument: empty or over-long channel, bad URL */

/* Publishes sent and not yet answered, at most: beyond, publish returns
 * REDIS_LINK_BUSY instead of queueing without bound. */
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

/* Closes both connections and frees the link; publishes not yet answered
 * count as failed. NULL is a no-op. */
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
} redis_link_counters;

void redis_link_get_counters(const redis_link *link, redis_link_counters *out);

/* A short English text for a status above ("ok", "redis is down", ...). */
const char *redis_link_status_text(int status);

#endif
