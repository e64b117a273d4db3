/* Cluster mode's bus: topic publishes and per-user events relayed
 * between server nodes through Redis pub/sub, over one redis_link per
 * node (core/redis_link.h: hiredis's async API on an lws loop, nothing
 * blocks).
 *
 * Channels. A topic's is "<prefix>t:<topic>" (the topic's bytes as they
 * are: topics compare exactly), a user's "<prefix>u:<user>" with the
 * name lower-cased in ASCII (users compare without regard to case), so
 * one prefix ("sm:") per cluster lets several share a Redis.
 *
 * Interest. A node subscribes to a topic's channel while it has local
 * members and to a user's while the user has local sessions, once per
 * node: cluster_bus_topic_join/_leave and cluster_bus_user_online/
 * _offline count references, the first SUBSCRIBEs and the last
 * UNSUBSCRIBEs. A subscription made while Redis is down is made once it
 * is up, and every one is made again after a reconnection (redis_link).
 *
 * Publishing. The caller delivers to its own node's sessions itself and
 * publishes once for the others: one PUBLISH per call, whether or not
 * any other node listens. A node receives its own publishes back on the
 * channels it is subscribed to; they carry its node id and a random
 * instance number drawn at start, and are dropped (counted as
 * dropped_own). A message with the node's id but another instance comes
 * from another process configured with the same id: it is delivered,
 * counted as an id clash and logged (the first), since two nodes sharing
 * an id would otherwise lose every message between them without a word.
 * (A node restarted within the moment its last publishes take to arrive
 * may see one of its previous run's: delivered too, which is right, as
 * that run's sessions are gone.)
 *
 * Frame (version 1), binary-safe, every length explicit, integers
 * big-endian:
 *
 *   1 byte   version, 1
 *   8 bytes  instance of the origin's bus
 *   1 byte   N, then N bytes: origin node id (1..64 of [A-Za-z0-9_.-])
 *   1 byte   E, then E bytes: except-user (0: none; else a name as above,
 *            any case, as the publisher gave it; never on a user channel)
 *   1 byte   A, then A bytes: action (1..255 bytes, no NUL)
 *   4 bytes  P, then P bytes: payload (0..CLUSTER_BUS_PAYLOAD_MAX, any bytes)
 *
 * and nothing after. A message that does not parse is counted as
 * malformed, logged (the first at warning level, the rest at debug) and
 * dropped: a peer of another version, or anyone who can PUBLISH on the
 * Redis, cannot make a node deliver what was not framed. A later
 * version changes the first byte; this one drops what it cannot read.
 *
 * Threads. As redis_link: every function runs on the thread servicing
 * the context the bus was started on; from within the bus's handlers
 * every function may be called except cluster_bus_stop. Stop a bus
 * before destroying its context. */
#ifndef SM_CORE_CLUSTER_BUS_H
#define SM_CORE_CLUSTER_BUS_H

#include <stddef.h>
#include <stdint.h>

struct lws_context;
struct redis_link;

/* Statuses: redis_link's, same values. A publish that returns DOWN or
 * BUSY sent nothing: the caller answers its client with an error. */
#define CLUSTER_BUS_OK 0
#define CLUSTER_BUS_DOWN (-1)      /* no connection to Redis now */
#define CLUSTER_BUS_BUSY (-2)      /* REDIS_LINK_MAX_IN_FLIGHT publishes await Redis */
#define CLUSTER_BUS_NO_MEMORY (-3)
#define CLUSTER_BUS_INVALID (-4)   /* a bad argument (below), or a leave without a join */

#define CLUSTER_BUS_NODE_MAX 64        /* node id, bytes */
#define CLUSTER_BUS_PREFIX_MAX 64      /* channel prefix, bytes */
#define CLUSTER_BUS_TOPIC_MAX 256      /* topic name, bytes (TOPIC_NAME_MAX) */
#define CLUSTER_BUS_USER_MAX 64        /* user name, bytes (SESSION_USERNAME_MAX) */
#define CLUSTER_BUS_ACTION_MAX 255     /* action, bytes */
#define CLUSTER_BUS_PAYLOAD_MAX (16u << 20) /* payload, bytes */

typedef struct cluster_bus cluster_bus;

/* Called for messages from other nodes only. The strings are
 * NUL-terminated and valid during the call; payload is len bytes, not
 * NUL-terminated. Any may be NULL. */
typedef struct cluster_bus_handlers {
    /* A publish on a topic this node has joined. except_user is NULL or
     * the user whose sessions must not get it (compare without regard
     * to ASCII case). */
    void (*on_topic)(const char *topic, const char *except_user, const char *action,
                     const void *payload, size_t len, void *arg);
    /* An event for a user online here; user is lower-cased. */
    void (*on_user)(const char *user, const char *action, const void *payload, size_t len,
                    void *arg);
    /* redis_link's on_state, passed through: 1 up (every subscription
     * confirmed), 0 down. On changes only. */
    void (*on_state)(int up, void *arg);
} cluster_bus_handlers;

/* Starts a bus on ctx for the node node_id (1..CLUSTER_BUS_NODE_MAX of
 * [A-Za-z0-9_.-]; unique in the cluster), its channels prefixed by
 * prefix (0..CLUSTER_BUS_PREFIX_MAX of [A-Za-z0-9_.:-]; the same on
 * every node of a cluster), through a redis_link to redis_url (its
 * forms: redis_link_parse_url). handlers is copied; arg is passed to
 * them. Returns 0 with *out set, or CLUSTER_BUS_INVALID /
 * CLUSTER_BUS_NO_MEMORY with the reason in err (err_len bytes,
 * NUL-terminated; never the password). */
int cluster_bus_start(struct lws_context *ctx, const char *redis_url, const char *node_id,
                      const char *prefix, const cluster_bus_handlers *handlers, void *arg,
                      cluster_bus **out, char *err, size_t err_len);

/* Stops the link and frees the bus. NULL is a no-op. */
void cluster_bus_stop(cluster_bus *bus);

/* One more local member of topic (1..CLUSTER_BUS_TOPIC_MAX bytes): the
 * first subscribes. Returns 0, CLUSTER_BUS_INVALID or
 * CLUSTER_BUS_NO_MEMORY (nothing counted). Succeeds while Redis is
 * down: the subscription is made once it is up. */
int cluster_bus_topic_join(cluster_bus *bus, const char *topic);
/* One fewer: the last unsubscribes, and no message on the topic reaches
 * on_topic after this returns. CLUSTER_BUS_INVALID if not joined. */
int cluster_bus_topic_leave(cluster_bus *bus, const char *topic);

/* The same for a user's sessions on this node (user: a name of
 * 1..CLUSTER_BUS_USER_MAX bytes of [A-Za-z0-9_.-], any case). */
int cluster_bus_user_online(cluster_bus *bus, const char *user);
int cluster_bus_user_offline(cluster_bus *bus, const char *user);

/* 1 when Redis confirmed the subscription for topic (user), so that
 * other nodes' publishes reach this one, else 0. */
int cluster_bus_topic_subscribed(const cluster_bus *bus, const char *topic);
int cluster_bus_user_subscribed(const cluster_bus *bus, const char *user);

/* Publishes to the other nodes: for topic's members except except_user's
 * sessions (NULL: none), or for every session of user. action
 * NUL-terminated (1..CLUSTER_BUS_ACTION_MAX bytes), payload len bytes
 * (NULL when len is 0). Returns 0 when handed to Redis,
 * CLUSTER_BUS_DOWN, CLUSTER_BUS_BUSY (nothing sent, counted) or
 * CLUSTER_BUS_INVALID / CLUSTER_BUS_NO_MEMORY. */
int cluster_bus_publish_topic(cluster_bus *bus, const char *topic, const char *except_user,
                              const char *action, const void *payload, size_t len);
int cluster_bus_publish_user(cluster_bus *bus, const char *user, const char *action,
                             const void *payload, size_t len);

/* 1 while the link is up, else 0. */
int cluster_bus_is_up(const cluster_bus *bus);

/* Counters for metrics; readable from any thread (atomics). */
typedef struct cluster_bus_counters {
    uint64_t published;     /* publish calls handed to Redis */
    uint64_t received;      /* messages from other nodes passed to a handler */
    uint64_t dropped_own;   /* this bus's own publishes come back: dropped */
    uint64_t malformed;     /* messages that did not parse: dropped */
    uint64_t id_clashes;    /* messages from another process with this node's id (delivered) */
    uint64_t refused_down;  /* publish calls refused: CLUSTER_BUS_DOWN */
    uint64_t refused_busy;  /* publish calls refused: CLUSTER_BUS_BUSY */
    uint64_t topics;        /* topics joined now (a gauge) */
    uint64_t users;         /* users online here now (a gauge) */
} cluster_bus_counters;

void cluster_bus_get_counters(const cluster_bus *bus, cluster_bus_counters *out);

/* The bus's link, for its own counters (redis_link_get_counters). */
const struct redis_link *cluster_bus_link(const cluster_bus *bus);

/* A short English text for a status above (redis_link_status_text). */
const char *cluster_bus_status_text(int status);

#endif
