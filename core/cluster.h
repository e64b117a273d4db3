/* Cluster mode (issue 14): the server's part of a cluster of nodes that
 * share one PostgreSQL database and one Redis. Off unless the
 * configuration has a cluster section (config.h: cluster_node); then
 * every function below does nothing and returns SM_OK, so the callers
 * (topic.c, session.c, presence.c, host_api.c) need no test of their own.
 *
 * What it joins: the bus (core/cluster_bus.h: topic publishes and per-user
 * events between nodes over Redis pub/sub) and presence
 * (core/cluster_presence.h: who is online and in which topics, counted in
 * Redis, each change reported once cluster-wide). Both run on the logic
 * thread's lws context, as everything that calls them does.
 *
 * A publish goes to this node's sessions first (the caller's part), then
 * once to Redis for the others; without Redis the local part still
 * happens and the caller gets SM_EBUSY, with a warning in the log (the
 * first of each outage, then one a minute with a count). On PostgreSQL a
 * publish after a write waits for the write's flush, as the local
 * replies and events do (CLUSTER_HELD_INDEX below); its outcome is then
 * only logged (the caller got SM_OK). */
#ifndef SM_CORE_CLUSTER_H
#define SM_CORE_CLUSTER_H

#include <stddef.h>

#include "cluster_bus.h"
#include "cluster_presence.h"
#include "redis_link.h"

struct lws_context;
struct server_config;

/* Starts both on ctx when sc names a cluster (else does nothing and
 * returns 0). 0, or -1 with the reason logged. The node's state is
 * logged as it changes; a node refused by the cluster (another node runs
 * with its id, or the cluster serves another key) has the server stop
 * with a failure status (transport_fail). */
int cluster_start(struct lws_context *ctx, const struct server_config *sc);

/* A clean shutdown, after the sessions are gone: tells Redis this node
 * left (its users go offline everywhere at once instead of after the
 * liveness timeout), servicing ctx until Redis answered or `seconds`
 * passed. */
void cluster_leave(struct lws_context *ctx, double seconds);

/* Stops both; before ctx is destroyed. Safe when not started. */
void cluster_stop(void);

/* 1 in a cluster (started), else 0. */
int cluster_on(void);

/* The node's counters for /metrics (server_metrics.c). */
typedef struct cluster_stats {
    int up;             /* 1: the bus's link is up and presence is registered */
    int presence_state; /* enum cluster_presence_state */
    cluster_bus_counters bus;
    cluster_presence_counters presence;
    redis_link_counters bus_link, presence_link;
} cluster_stats;

/* Copies them into *out: 0 in a cluster, -1 (nothing copied) when not.
 * Callable from any thread: scrapes run on the I/O threads, and a scrape
 * racing cluster_stop() either copies before the bus and presence are
 * freed or finds the node out of the cluster. */
int cluster_stats_get(cluster_stats *out);

/* This node has members of topic (the first, and no more: topic.c calls
 * them once per topic it creates and frees), or sessions of user
 * (folded): subscribes to what other nodes publish there. SM_OK, or
 * SM_EINVAL / SM_ENOMEM (nothing subscribed). */
int cluster_topic_subscribe(const char *topic);
void cluster_topic_unsubscribe(const char *topic);
int cluster_user_subscribe(const char *user);
void cluster_user_unsubscribe(const char *user);

/* To the other nodes: an event (action, text of len bytes: a serialised
 * object) for topic's members but except_user's sessions (NULL: none),
 * or for user's sessions. SM_OK (handed to Redis, or not in a cluster),
 * SM_EBUSY (Redis unreachable or saturated: logged, nothing sent),
 * SM_EINVAL or SM_ENOMEM. */
int cluster_publish_topic(const char *topic, const char *except_user, const char *action,
                          const char *text, size_t len);
int cluster_publish_user(const char *user, const char *action, const char *text, size_t len);

/* Presence counts (presence.c): a logged-in session of user began or
 * ended; one joined or left topic. The changes come back through
 * presence_reported_user and _member. */
void cluster_session_up(const char *user);
void cluster_session_down(const char *user);
void cluster_member_up(const char *topic, const char *user);
void cluster_member_down(const char *topic, const char *user);

/* On PostgreSQL a publish that follows a write not yet flushed waits
 * with the replies and events (durability.h) under this index; the
 * transport's release hands it to cluster_release_held, which publishes
 * it (or drops it once the cluster stopped) and frees it. */
#define CLUSTER_HELD_INDEX (-2)
void cluster_release_held(void *item);

/* Plugin broadcasts (sm_host.broadcast): a plugin with a broadcast
 * callback has this node listen for its instances on the others (on:
 * SM_OK, or SM_EINVAL / SM_ENOMEM; called again for every such plugin by
 * cluster_start); cluster_broadcast sends text (a serialised object, len
 * bytes) to them, with cluster_publish_topic's statuses. The channel is a
 * topic no plugin can name (its first byte is a control character: the
 * host refuses those for topics). */
int cluster_broadcast_on(const char *plugin);
void cluster_broadcast_off(const char *plugin);
int cluster_broadcast(const char *plugin, const char *text, size_t len);

/* Presence queries in a cluster (presence.c answers them on one node):
 * done gets an SM_ status: SM_OK from Redis, SM_EBUSY with this node's
 * answer when Redis could not be asked. SM_OK (done ran or will run),
 * else SM_EINVAL / SM_ENOMEM (it will not). topic_users' names are
 * folded. */
int cluster_users_online(const char *const *users, size_t n,
                         void (*done)(int status, const int *online, size_t n, void *arg),
                         void *arg);
int cluster_topic_users(const char *topic,
                        void (*done)(int status, const char *const *users, size_t n, void *arg),
                        void *arg);

#endif
