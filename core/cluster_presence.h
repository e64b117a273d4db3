/* Cluster mode's presence: who has sessions anywhere in the cluster, and
 * in which topics (rooms), so that a user's first session (on any node)
 * and last session (on every node), and a user's first and last session
 * in a room, are seen exactly once cluster-wide (presence, user_joined,
 * user_left), and the users of a node that died go offline, and leave
 * their rooms, everywhere within 15 s (issue 14). Counting happens in
 * Redis, in Lua scripts (atomic: Redis runs one script at a time), over
 * a redis_link of the presence's own (core/redis_link.h); nothing
 * blocks the loop. Two queries read what Redis holds (who is online,
 * who is in a topic), with this node's counts as the fallback.
 *
 * Keys, all under the cluster's prefix (the same on every node):
 *
 *   <prefix>node:<id>  string, the node's instance (32 random hex digits
 *                      drawn at start), with an expiry (SET ... PX): the
 *                      node is alive while it exists. Refreshed every
 *                      refresh_ms, expiring alive_ttl_ms after the last
 *                      refresh.
 *   <prefix>nodes      set of the node ids that registered and were not
 *                      reaped yet.
 *   <prefix>pu:<user>  hash, per user (lower-cased in ASCII): field <id>
 *                      = that node's count of the user's sessions (> 0;
 *                      a node without one has no field). The key exists
 *                      exactly while the user has a session somewhere.
 *   <prefix>pr:<user>:<topic>
 *                      hash, the same for the user's sessions that joined
 *                      topic (its bytes as they are: the first ':' after
 *                      the user ends the name, which holds none).
 *   <prefix>tm:<topic> set, the index of a topic's members: the users
 *                      (lower-cased) whose pr:<user>:<topic> hash
 *                      exists. Every script that makes such a hash come
 *                      to exist or go (session, register, reap, leave)
 *                      adds or removes the user in the same run, so the
 *                      set exists exactly while the topic has a member
 *                      somewhere (Redis drops an empty set).
 *                      cluster_presence_query_members reads it.
 *   <prefix>nu:<id>    set of the entries ("pu:<user>", "pr:<user>:<topic>":
 *                      the hashes' names without the prefix) with a field
 *                      of node <id>: what to undo when it dies.
 *   <prefix>fingerprint
 *                      string, the fingerprint of the server key the
 *                      cluster's nodes serve (no expiry): set by the first
 *                      node that registers with one (options.fingerprint),
 *                      checked by every later one.
 *
 * The scripts (cluster_presence.c holds their text):
 *
 *   register  (at start, after every reconnection, and whenever this
 *             node's writes may have missed Redis) refuses when the node
 *             has a fingerprint and fingerprint holds another (returning
 *             the one stored), or when node:<id> holds another instance;
 *             else sets fingerprint to the node's if it has one and the
 *             key is absent, sets node:<id> to this
 *             instance with its expiry, adds <id> to nodes, writes every
 *             local count back as it is in memory (a field per entry
 *             counted here, no field for the others of nu:<id>), adds
 *             the user to tm:<topic> for each pr entry written and
 *             removes them for each pr hash that went, and returns the
 *             entries this made come to exist (online, joined) or go
 *             (offline, left).
 *   session   (per session_up/_down, topic_join/_leave) checks that
 *             node:<id> is still this instance, sets the entry's field to
 *             the node's new local count (absolute, not +1/-1: a call
 *             replayed by register changes nothing) or removes it at 0,
 *             for a pr entry adds the user to tm:<topic> while the hash
 *             exists after that and removes them once it is gone, and
 *             returns 1 when the entry's hash came to exist (the
 *             first session anywhere, in the topic), -1 when it went (the
 *             last), else 0.
 *   refresh   PEXPIREs node:<id> when it is still this instance; says
 *             when it lapsed (register then runs) or was taken.
 *   reap      (every reap_interval_ms on every node) finds the members
 *             of nodes whose node:<id> expired, removes each one's fields
 *             from every entry of its nu:<id>, removes the user from
 *             tm:<topic> for each pr hash that this empties, drops
 *             nu:<id> and the member, and returns the entries left with
 *             no field at all.
 *   leave     (a node shutting down) the same for the node itself, after
 *             deleting its node:<id>, so a restart need not wait.
 *   online    (cluster_presence_query_online) whether pu:<user> exists,
 *             for each user asked about; reads only. Members are read
 *             with a plain SMEMBERS of tm:<topic>.
 *
 * Why exactly once. Every transition is an entry's hash coming to exist
 * or going, inside one script; Redis runs scripts one at a time, so of two
 * nodes whose users' first sessions come at once, one script sees the
 * key absent and the other present; of several nodes reaping the same
 * dead one, the first removes its fields and the others find nu:<id>
 * gone. No claim key is needed for that (an earlier plan had the reaper
 * claim a dead node with SET NX first): the script is the claim. An
 * entry's hash counts every node's field, the fields of a node that died
 * but is not reaped yet included: a user who moves from a dead node to a
 * live one before the reap stays online without an offline/online pair,
 * and the reap reports exactly those left with nothing.
 *
 * Timing. A node dies at most refresh_ms after its last refresh, so its
 * key expires at most alive_ttl_ms after its death, and the next reap on
 * any node (every reap_interval_ms) reports its users offline and out of
 * their topics: with the defaults,
 * 8 + 2 s plus Redis round trips, within the 15 s. The TTL leaves
 * a node three refreshes' worth of slack (a slow Redis, redis_link's
 * 3-4 s to notice a silent one and reconnect) before it is taken for
 * dead. A node that just (re)registered waits alive_ttl_ms before it
 * reaps: after an outage of Redis, the others need that long to come back
 * and refresh their keys, and a Redis that restarts from a snapshot holds
 * every node's key expired.
 *
 * A node id whose key holds another instance belongs to a running node,
 * or to this node's previous run that stopped without leaving (a crash),
 * whose key expires within alive_ttl_ms: a node that never registered
 * tries again at each refresh for alive_ttl_ms + 2 refresh_ms (logged
 * once), then reports CLUSTER_PRESENCE_STATE_REFUSED (on_state) and
 * takes no part (every call returns CLUSTER_PRESENCE_REFUSED); stop it.
 * Every node of a cluster must serve the same server key (clients pin its
 * fingerprint, and reach any node): a node whose fingerprint differs from
 * the one stored reports CLUSTER_PRESENCE_STATE_KEY_MISMATCH, logs both
 * and takes no part either, for good. The stored fingerprint stays when
 * every node is gone: a cluster moving to a new key deletes
 * <prefix>fingerprint by hand. A node that crashed leaves its key for up
 * to alive_ttl_ms, so a restart that soon waits for it, as above
 * (cluster_presence_leave on a clean shutdown avoids the wait).
 * A node whose own key lapsed (Redis or the node too slow) registers
 * again: if it was reaped meanwhile, its users come back online
 * (reason RESYNC).
 *
 * Redis down. Every call still counts the session locally and returns
 * CLUSTER_PRESENCE_DOWN: Redis was not told now (the caller decides what
 * to tell users meanwhile). Once Redis answers again, register writes
 * every local count back in one script and reports the transitions that
 * makes as seen from Redis: users who came or went here meanwhile (and
 * topics joined or left). A Redis that lost its data (restarted without
 * persistence) has no user online, so every user of the node is
 * reported online again, and in its topics (RESYNC).
 * A call whose reply is lost (the connection dropped after sending it)
 * is written back the same way; if Redis had run it, the transition it
 * made is not reported. The state is logged once per change.
 *
 * Lua reaches keys it builds from the prefix (not only its KEYS): fine
 * on one Redis (or a primary with replicas), not on Redis Cluster.
 *
 * Threads. As redis_link: every function runs on the thread servicing
 * the context; from within the handlers every function may be called
 * except cluster_presence_stop. Stop it before destroying the context. */
#ifndef SM_CORE_CLUSTER_PRESENCE_H
#define SM_CORE_CLUSTER_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

struct lws_context;
struct redis_link;

/* Statuses. DOWN and BUSY keep the session counted locally (written
 * back to Redis once it answers). */
#define CLUSTER_PRESENCE_OK 0
#define CLUSTER_PRESENCE_DOWN (-1)      /* Redis not reachable now (or the node not registered) */
#define CLUSTER_PRESENCE_BUSY (-2)      /* REDIS_LINK_MAX_IN_FLIGHT commands await Redis */
#define CLUSTER_PRESENCE_NO_MEMORY (-3)
#define CLUSTER_PRESENCE_INVALID (-4)   /* a bad argument, or a session_down without an up */
#define CLUSTER_PRESENCE_REFUSED (-5)   /* the node takes no part: another node runs with
                                           its id, its server key is not the cluster's,
                                           or it left */

/* Defaults of the liveness intervals (cluster_presence_options). */
#define CLUSTER_PRESENCE_ALIVE_TTL_MS 8000
#define CLUSTER_PRESENCE_REFRESH_MS 2000
#define CLUSTER_PRESENCE_REAP_INTERVAL_MS 2000

#define CLUSTER_PRESENCE_NODE_MAX 64   /* node id, bytes */
#define CLUSTER_PRESENCE_PREFIX_MAX 64 /* key prefix, bytes */
#define CLUSTER_PRESENCE_USER_MAX 64   /* user name, bytes (SESSION_USERNAME_MAX) */
#define CLUSTER_PRESENCE_TOPIC_MAX 256 /* topic name, bytes (TOPIC_NAME_MAX) */
#define CLUSTER_PRESENCE_FINGERPRINT_MAX 128 /* key fingerprint, bytes ("sha256:" + 64
                                                hex digits is 71) */

/* What made a user go online or offline (on_user), or join or leave a
 * topic (on_member). */
enum cluster_presence_reason {
    CLUSTER_PRESENCE_SESSION = 1, /* this node's session_up/_down, topic_join/_leave */
    CLUSTER_PRESENCE_REAPED = 2,  /* offline: the user's sessions were on nodes that died */
    CLUSTER_PRESENCE_RESYNC = 3,  /* this node's counts written back (register): sessions that
                                     came or went while Redis could not be told, the
                                     sessions of this id's previous instance, or this
                                     node's users back after it was reaped */
    CLUSTER_PRESENCE_LEFT = 4     /* offline: this node's cluster_presence_leave */
};

/* The node's state (on_state). */
enum cluster_presence_state {
    CLUSTER_PRESENCE_STATE_DOWN = 0,   /* not registered: Redis unreachable, or not yet */
    CLUSTER_PRESENCE_STATE_UP = 1,     /* registered, counts written back */
    CLUSTER_PRESENCE_STATE_REFUSED = 2, /* another node runs with this id: for good */
    CLUSTER_PRESENCE_STATE_KEY_MISMATCH = 3 /* this node's server key is not the one the
                                               cluster serves: for good */
};

typedef struct cluster_presence_handlers {
    /* user (lower-cased) went online (1: had no session anywhere, has
     * one now) or offline (0: the other way round), as this node's
     * script saw it; the caller tells the cluster. Reported once
     * cluster-wide, by the node whose script made the change. May be
     * NULL. */
    void (*on_user)(const char *user, int online, enum cluster_presence_reason reason,
                    void *arg);
    /* The state changed. May be NULL. */
    void (*on_state)(enum cluster_presence_state state, void *arg);
    /* user (lower-cased) joined topic (1: none of the user's sessions was
     * in it anywhere, one is now) or left it (0: the other way round);
     * as on_user otherwise. May be NULL. */
    void (*on_member)(const char *topic, const char *user, int joined,
                      enum cluster_presence_reason reason, void *arg);
} cluster_presence_handlers;

typedef struct cluster_presence_options {
    const char *redis_url;      /* redis_link_parse_url's forms */
    const char *node_id;        /* 1..CLUSTER_PRESENCE_NODE_MAX of [A-Za-z0-9_.-], unique */
    const char *prefix;         /* 0..CLUSTER_PRESENCE_PREFIX_MAX of [A-Za-z0-9_.:-] */
    /* 0 for the defaults above. refresh_ms at most half of
     * alive_ttl_ms; each from 10 ms to 10 minutes. The same on every
     * node of a cluster. */
    unsigned alive_ttl_ms;
    unsigned refresh_ms;
    unsigned reap_interval_ms;
    /* The fingerprint of the server key this node serves
     * (crypto_fingerprint's text: 1..CLUSTER_PRESENCE_FINGERPRINT_MAX
     * printable ASCII bytes, no space), checked against the cluster's;
     * NULL or "" for no check (nor is one stored). */
    const char *fingerprint;
} cluster_presence_options;

typedef struct cluster_presence cluster_presence;

/* Starts presence for a node on ctx: the link connects and the node
 * registers from the loop (on_state says when it is up or refused).
 * handlers is copied; arg is passed to them. Returns 0 with *out set,
 * or CLUSTER_PRESENCE_INVALID / CLUSTER_PRESENCE_NO_MEMORY with the
 * reason in err (err_len bytes, NUL-terminated; never the password). */
int cluster_presence_start(struct lws_context *ctx, const cluster_presence_options *options,
                           const cluster_presence_handlers *handlers, void *arg,
                           cluster_presence **out, char *err, size_t err_len);

/* Stops the link and frees everything, telling Redis nothing: to the
 * others this node died (its key expires, they reap it). Queries still
 * awaiting Redis get their done before this returns, with
 * CLUSTER_PRESENCE_DOWN and this node's local answer; from within that
 * done, call nothing of this presence but the queries (which answer the
 * same way at once). NULL is a no-op. */
void cluster_presence_stop(cluster_presence *presence);

/* A local session of user (1..CLUSTER_PRESENCE_USER_MAX of
 * [A-Za-z0-9_.-], any case) began or ended. Counted locally at once;
 * the transition, if any, comes through on_user. Returns OK (sent),
 * DOWN or BUSY (counted, Redis told later), REFUSED (counted, never
 * told), INVALID (nothing counted: a bad name, or a down for a user
 * without a local session) or NO_MEMORY (nothing counted). */
int cluster_presence_session_up(cluster_presence *presence, const char *user);
int cluster_presence_session_down(cluster_presence *presence, const char *user);

/* This node's local sessions of user (any case); 0 for a bad name. */
unsigned long cluster_presence_local_sessions(const cluster_presence *presence, const char *user);

/* A local session of user joined or left topic (1..CLUSTER_PRESENCE_TOPIC_MAX
 * bytes, compared exactly): counted and reported (on_member) as the
 * sessions above, with the same statuses. Independent of session_up and
 * _down: the caller ends a session's topics before the session. */
int cluster_presence_topic_join(cluster_presence *presence, const char *topic, const char *user);
int cluster_presence_topic_leave(cluster_presence *presence, const char *topic, const char *user);

/* This node's local sessions of user in topic. */
unsigned long cluster_presence_local_members(const cluster_presence *presence, const char *topic,
                                             const char *user);

/* A clean shutdown: removes this node's key and fields from Redis
 * (leave script) and reports, through on_user and on_member (reason
 * LEFT), the users that leaves with no session anywhere and the topics
 * they are no longer in; then done(status) runs: OK, or
 * DOWN when Redis could not be told (the others reap the node once its
 * key expires). From then on the node takes no part (calls return
 * REFUSED); stop it. done may be NULL. Returns OK (done will run) or a
 * status (done will not). */
int cluster_presence_leave(cluster_presence *presence, void (*done)(int status, void *arg),
                           void *arg);

/* ---- queries ----------------------------------------------------------------

 * Both ask Redis without blocking the loop, and fall back on this node's
 * own counts when Redis cannot answer. This node's local sessions count
 * in an OK answer too: Redis may not have been told of them yet (a call
 * that returned DOWN or BUSY, written back at the next registration).
 * A Redis error reply, or one of an unexpected shape, is treated as a lost
 * reply (DOWN, the local answer; logged). */

/* Which of users (n folded or any-case names, 1..CLUSTER_PRESENCE_USER_MAX
 * of [A-Za-z0-9_.-]) have a session anywhere in the cluster (a
 * pu:<user> entry, a dead node's not yet reaped included). done runs
 * once, on the loop thread: later with CLUSTER_PRESENCE_OK and online[i]
 * 0/1 for users[i]; or, when Redis could not answer (the command was not
 * sent: DOWN/BUSY/REFUSED, or its reply was lost), with that status and
 * online[i] = whether this node has local sessions of users[i]
 * (cluster_presence_local_sessions). If the query cannot be sent, done
 * runs before this returns. Returns CLUSTER_PRESENCE_OK (done ran or
 * will run) or CLUSTER_PRESENCE_INVALID / NO_MEMORY (done will not run).
 * n may be 0 (done runs at once with OK, online NULL). online is valid
 * during the call. */
typedef void (*cluster_presence_online_fn)(int status, const int *online, size_t n, void *arg);
int cluster_presence_query_online(cluster_presence *presence, const char *const *users, size_t n,
                                  cluster_presence_online_fn done, void *arg);

/* The users (lower-cased) with a session in topic (1..CLUSTER_PRESENCE_TOPIC_MAX
 * bytes, compared exactly; else INVALID) anywhere in the cluster, each
 * once: tm:<topic>. done as above: OK with every member from Redis; or a
 * failure status with this node's local members of the topic only. users
 * are valid during the call; order unspecified. The answer is built when
 * the reply comes: should memory be short then, done gets
 * CLUSTER_PRESENCE_NO_MEMORY and no users. */
typedef void (*cluster_presence_members_fn)(int status, const char *const *users, size_t n,
                                            void *arg);
int cluster_presence_query_members(cluster_presence *presence, const char *topic,
                                   cluster_presence_members_fn done, void *arg);

enum cluster_presence_state cluster_presence_get_state(const cluster_presence *presence);

/* The fingerprint the cluster serves, as Redis held it, once the state
 * is CLUSTER_PRESENCE_STATE_KEY_MISMATCH; NULL before or otherwise. */
const char *cluster_presence_cluster_fingerprint(const cluster_presence *presence);

/* Counters for metrics; readable from any thread (atomics). */
typedef struct cluster_presence_counters {
    uint64_t online;        /* on_user(..., 1, ...) calls */
    uint64_t offline;       /* on_user(..., 0, ...) calls */
    uint64_t registered;    /* register scripts that succeeded (start, reconnections) */
    uint64_t reaped_nodes;  /* dead nodes this node reaped */
    uint64_t not_sent;      /* session calls that returned DOWN or BUSY */
    uint64_t lost;          /* scripts sent whose answer never came or was an error */
    uint64_t users;         /* users with local sessions now (a gauge) */
    uint64_t joined;        /* on_member(..., 1, ...) calls */
    uint64_t left;          /* on_member(..., 0, ...) calls */
    uint64_t members;       /* (topic, user) pairs with local sessions now (a gauge) */
} cluster_presence_counters;

void cluster_presence_get_counters(const cluster_presence *presence,
                                   cluster_presence_counters *out);

/* The presence's link, for its own counters (redis_link_get_counters). */
const struct redis_link *cluster_presence_link(const cluster_presence *presence);

/* A short English text for a status above. */
const char *cluster_presence_status_text(int status);

#endif
