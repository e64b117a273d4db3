#include "cluster.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_bus.h"
#include "cluster_presence.h"
#include "config.h"
#include "core.h"
#include "durability.h"
#include "crypto.h"
#include "redis_link.h"
#include "log.h"
#include "plugin_loader.h"
#include "presence.h"
#include "session.h"
#include "topic.h"
#include "transport.h"

/* A warning a minute at most while publishes are refused. */
#define REFUSED_LOG_INTERVAL 60.0

static struct {
    cluster_bus *bus;
    cluster_presence *presence;
    int on;
    /* publishes refused since the last warning, and when it was */
    unsigned long refused;
    double refused_logged;
    int leaving, left;
} cl;

int cluster_on(void) { return cl.on; }

/* ---- metrics ----------------------------------------------------------------- */

/* What cluster_stats_get reads off the logic thread: the bus and presence
 * as published under the lock (set once both started, cleared before
 * they are freed), and the states as the handlers last reported them
 * (redis_link's and presence's own state fields are the logic thread's
 * alone). Apart from cl, which cluster_stop wipes. */
static struct {
    pthread_mutex_t lock;
    cluster_bus *bus;
    cluster_presence *presence;
    atomic_int bus_up, presence_state;
} st = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void stats_publish(cluster_bus *bus, cluster_presence *presence)
{
    pthread_mutex_lock(&st.lock);
    st.bus = bus;
    st.presence = presence;
    pthread_mutex_unlock(&st.lock);
}

int cluster_stats_get(cluster_stats *out)
{
    int rc = -1;
    pthread_mutex_lock(&st.lock);
    if (st.bus && st.presence) {
        /* The counters are atomics; the lock only keeps the objects alive. */
        memset(out, 0, sizeof *out);
        int bus_up = atomic_load(&st.bus_up);
        out->presence_state = atomic_load(&st.presence_state);
        out->up = bus_up && out->presence_state == CLUSTER_PRESENCE_STATE_UP;
        cluster_bus_get_counters(st.bus, &out->bus);
        cluster_presence_get_counters(st.presence, &out->presence);
        redis_link_get_counters(cluster_bus_link(st.bus), &out->bus_link);
        redis_link_get_counters(cluster_presence_link(st.presence), &out->presence_link);
        rc = 0;
    }
    pthread_mutex_unlock(&st.lock);
    return rc;
}

/* ---- from the other nodes ------------------------------------------------ */

/* The topic of a plugin's broadcasts: "\x1eplugin:<name>". */
#define BROADCAST_TAG "\x1eplugin:"
#define BROADCAST_TAG_LEN (sizeof BROADCAST_TAG - 1)
#define BROADCAST_ACTION "broadcast"

static void on_broadcast(const char *name, const void *payload, size_t len)
{
    plugin *p = plugin_find(name);
    if (!p || !p->broadcast)
        return; /* unloaded meanwhile */
    json_error_t err;
    json_t *body = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(body)) {
        LOG_WARN("cluster: a broadcast for plugin %s that is no JSON object dropped", name);
        json_decref(body);
        return;
    }
    p->broadcast(body, p->data);
    json_decref(body);
}

static void on_topic(const char *topic, const char *except_user, const char *action,
                     const void *payload, size_t len, void *arg)
{
    (void)arg;
    if (strncmp(topic, BROADCAST_TAG, BROADCAST_TAG_LEN) == 0)
        on_broadcast(topic + BROADCAST_TAG_LEN, payload, len);
    else
        topic_deliver_here(topic, action, payload, len, except_user);
}

static void on_user(const char *user, const char *action, const void *payload, size_t len,
                    void *arg)
{
    (void)arg;
    session_send_user(user, action, payload, len);
}

static void on_bus_state(int up, void *arg)
{
    (void)arg;
    atomic_store(&st.bus_up, up ? 1 : 0);
    if (up) {
        LOG_INFO("cluster: bus up: publishes reach the other nodes");
        if (cl.refused)
            LOG_WARN("cluster: %lu events reached this node's sessions only while Redis was "
                     "unreachable", cl.refused);
        cl.refused = 0;
        cl.refused_logged = 0;
    } else {
        LOG_WARN("cluster: bus down (Redis unreachable): events reach this node's sessions "
                 "only until it is back");
    }
}

/* ---- presence ------------------------------------------------------------- */

static void on_presence_user(const char *user, int online, enum cluster_presence_reason reason,
                             void *arg)
{
    (void)arg;
    (void)reason;
    presence_reported_user(user, online);
}

static void on_presence_member(const char *topic, const char *user, int joined,
                               enum cluster_presence_reason reason, void *arg)
{
    (void)arg;
    (void)reason;
    presence_reported_member(topic, user, joined);
}

static void on_presence_state(enum cluster_presence_state state, void *arg)
{
    (void)arg;
    atomic_store(&st.presence_state, (int)state);
    /* cluster_presence logs its ups and downs itself. */
    switch (state) {
    case CLUSTER_PRESENCE_STATE_UP:
    case CLUSTER_PRESENCE_STATE_DOWN:
        break;
    case CLUSTER_PRESENCE_STATE_REFUSED:
        transport_fail("this node may not take part in the cluster: another node runs with "
                       "cluster.node = the same id (see the error above)");
        break;
    case CLUSTER_PRESENCE_STATE_KEY_MISMATCH:
        transport_fail("this node serves another server key than the cluster (see the error "
                       "above)");
        break;
    }
}

/* ---- life ------------------------------------------------------------------ */

int cluster_start(struct lws_context *ctx, const struct server_config *sc)
{
    if (!sc->cluster_node || !*sc->cluster_node)
        return 0;
    /* Down until the handlers say otherwise (a restart in one process,
     * as the tests do, must not inherit the last run's states). */
    atomic_store(&st.bus_up, 0);
    atomic_store(&st.presence_state, CLUSTER_PRESENCE_STATE_DOWN);
    char err[256];
    const cluster_bus_handlers bh = {
        .on_topic = on_topic,
        .on_user = on_user,
        .on_state = on_bus_state,
    };
    if (cluster_bus_start(ctx, sc->cluster_redis, sc->cluster_node, sc->cluster_prefix, &bh,
                          NULL, &cl.bus, err, sizeof err) != CLUSTER_BUS_OK) {
        LOG_ERROR("cluster: cannot start the bus: %s", err);
        return -1;
    }
    const cluster_presence_options po = {
        .redis_url = sc->cluster_redis,
        .node_id = sc->cluster_node,
        .prefix = sc->cluster_prefix,
        .fingerprint = g_core.fingerprint,
    };
    const cluster_presence_handlers ph = {
        .on_user = on_presence_user,
        .on_state = on_presence_state,
        .on_member = on_presence_member,
    };
    if (cluster_presence_start(ctx, &po, &ph, NULL, &cl.presence, err, sizeof err) !=
        CLUSTER_PRESENCE_OK) {
        LOG_ERROR("cluster: cannot start presence: %s", err);
        cluster_bus_stop(cl.bus);
        cl.bus = NULL;
        return -1;
    }
    cl.on = 1;
    stats_publish(cl.bus, cl.presence);
    for (size_t i = 0; i < g_core.n_plugins; i++)
        if (g_core.plugins[i]->broadcast && cluster_broadcast_on(g_core.plugins[i]->name) != SM_OK)
            LOG_ERROR("cluster: plugin %s will not hear its other nodes (no memory)",
                      g_core.plugins[i]->name);
    redis_link_url u;
    if (redis_link_parse_url(sc->cluster_redis, &u, err, sizeof err) == 0)
        LOG_INFO("cluster: node %s, Redis %s:%d db %d, prefix \"%s\"", sc->cluster_node,
                 u.host, u.port, u.db, sc->cluster_prefix);
    crypto_wipe(&u, sizeof u);
    return 0;
}

static void left(int status, void *arg)
{
    (void)arg;
    cl.left = 1;
    if (status == CLUSTER_PRESENCE_OK)
        LOG_INFO("cluster: node %s left: its users are offline on the other nodes",
                 g_core.sc->cluster_node);
    else
        LOG_WARN("cluster: could not tell Redis that node %s left (%s): the other nodes take "
                 "its users offline once its key expires",
                 g_core.sc->cluster_node, cluster_presence_status_text(status));
}

void cluster_leave(struct lws_context *ctx, double seconds)
{
    if (!cl.on || cl.leaving)
        return;
    cl.leaving = 1;
    if (cluster_presence_leave(cl.presence, left, NULL) != CLUSTER_PRESENCE_OK) {
        left(CLUSTER_PRESENCE_DOWN, NULL);
        return;
    }
    double deadline = core_mono_now() + seconds;
    while (!cl.left && core_mono_now() < deadline)
        if (lws_service(ctx, 0) < 0)
            break;
}

void cluster_stop(void)
{
    /* First: a scrape from now on finds no cluster, and one under way
     * has finished copying once the lock is taken. */
    stats_publish(NULL, NULL);
    atomic_store(&st.bus_up, 0);
    atomic_store(&st.presence_state, CLUSTER_PRESENCE_STATE_DOWN);
    cl.on = 0;
    cluster_presence_stop(cl.presence);
    cluster_bus_stop(cl.bus);
    memset(&cl, 0, sizeof cl);
}

/* ---- interest -------------------------------------------------------------- */

static int bus_status(int rc)
{
    switch (rc) {
    case CLUSTER_BUS_OK: return SM_OK;
    case CLUSTER_BUS_NO_MEMORY: return SM_ENOMEM;
    case CLUSTER_BUS_INVALID: return SM_EINVAL;
    default: return SM_EBUSY;
    }
}

int cluster_topic_subscribe(const char *topic)
{
    return cl.on ? bus_status(cluster_bus_topic_join(cl.bus, topic)) : SM_OK;
}

void cluster_topic_unsubscribe(const char *topic)
{
    if (cl.on)
        cluster_bus_topic_leave(cl.bus, topic);
}

int cluster_user_subscribe(const char *user)
{
    return cl.on ? bus_status(cluster_bus_user_online(cl.bus, user)) : SM_OK;
}

void cluster_user_unsubscribe(const char *user)
{
    if (cl.on)
        cluster_bus_user_offline(cl.bus, user);
}

/* ---- publishing ------------------------------------------------------------ */

static int published(int rc, const char *what, const char *name, const char *action)
{
    if (rc == CLUSTER_BUS_OK)
        return SM_OK;
    if (rc == CLUSTER_BUS_INVALID || rc == CLUSTER_BUS_NO_MEMORY) {
        LOG_ERROR("cluster: %s for %s %s not sent to the other nodes: %s", action, what, name,
                  cluster_bus_status_text(rc));
        return bus_status(rc);
    }
    cl.refused++;
    double now = core_mono_now();
    if (cl.refused == 1 || now - cl.refused_logged >= REFUSED_LOG_INTERVAL) {
        LOG_WARN("cluster: %s for %s %s reached this node's sessions only (%s); %lu so far in "
                 "this outage",
                 action, what, name, cluster_bus_status_text(rc), cl.refused);
        cl.refused_logged = now;
    }
    return SM_EBUSY;
}

/* A publish held until PostgreSQL confirmed the flush of the writes
 * before it (durability.h): another node must not show what this one
 * has not made durable, nor in another order than this node's sessions
 * see it. */
typedef struct held_publish {
    int to_user;
    const char *name, *except_user, *action, *text; /* in data */
    size_t len;
    char data[]; /* name, except_user (if any), action, each with its NUL; then the text */
} held_publish;

static int publish_now(int to_user, const char *name, const char *except_user,
                       const char *action, const char *text, size_t len)
{
    if (to_user)
        return published(cluster_bus_publish_user(cl.bus, name, action, text, len), "user",
                         name, action);
    return published(cluster_bus_publish_topic(cl.bus, name, except_user, action, text, len),
                     "topic", name, action);
}

/* One block for the publish and its strings, copied only when the
 * durability module will hold it (most publishes go at once). */
static held_publish *held_new(int to_user, const char *name, const char *except_user,
                              const char *action, const char *text, size_t len)
{
    size_t n = strlen(name) + 1, e = except_user ? strlen(except_user) + 1 : 0,
           a = strlen(action) + 1;
    held_publish *h = malloc(sizeof *h + n + e + a + len);
    if (!h)
        return NULL;
    char *at = h->data;
    h->to_user = to_user;
    h->name = memcpy(at, name, n);
    at += n;
    h->except_user = except_user ? memcpy(at, except_user, e) : NULL;
    at += e;
    h->action = memcpy(at, action, a);
    at += a;
    h->text = memcpy(at, text, len);
    h->len = len;
    return h;
}

static int publish(int to_user, const char *name, const char *except_user, const char *action,
                   const char *text, size_t len)
{
    if (!cl.on)
        return SM_OK;
    if (durability_would_hold()) {
        held_publish *h = held_new(to_user, name, except_user, action, text, len);
        if (!h) {
            LOG_ERROR("cluster: out of memory: %s for %s not sent to the other nodes", action,
                      name);
            return SM_ENOMEM;
        }
        if (durability_hold(CLUSTER_HELD_INDEX, h))
            return SM_OK; /* cluster_release_held sends it */
        free(h); /* not held (no memory for its place: confirmed at once): on its way now */
    }
    return publish_now(to_user, name, except_user, action, text, len);
}

void cluster_release_held(void *item)
{
    held_publish *h = item;
    if (cl.on)
        publish_now(h->to_user, h->name, h->except_user, h->action, h->text, h->len);
    free(h);
}

int cluster_publish_topic(const char *topic, const char *except_user, const char *action,
                          const char *text, size_t len)
{
    return publish(0, topic, except_user, action, text, len);
}

int cluster_publish_user(const char *user, const char *action, const char *text, size_t len)
{
    return publish(1, user, NULL, action, text, len);
}

/* ---- plugin broadcasts ------------------------------------------------------- */

static int broadcast_topic(const char *plugin_name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s%s", BROADCAST_TAG, plugin_name);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int cluster_broadcast_on(const char *plugin_name)
{
    char t[CLUSTER_BUS_TOPIC_MAX + 1];
    if (!cl.on)
        return SM_OK;
    if (broadcast_topic(plugin_name, t, sizeof t) != 0)
        return SM_EINVAL;
    return bus_status(cluster_bus_topic_join(cl.bus, t));
}

void cluster_broadcast_off(const char *plugin_name)
{
    char t[CLUSTER_BUS_TOPIC_MAX + 1];
    if (cl.on && broadcast_topic(plugin_name, t, sizeof t) == 0)
        cluster_bus_topic_leave(cl.bus, t);
}

int cluster_broadcast(const char *plugin_name, const char *text, size_t len)
{
    char t[CLUSTER_BUS_TOPIC_MAX + 1];
    if (!cl.on)
        return SM_OK;
    if (broadcast_topic(plugin_name, t, sizeof t) != 0)
        return SM_EINVAL;
    return publish(0, t, NULL, BROADCAST_ACTION, text, len);
}

/* ---- presence counts ------------------------------------------------------- */

/* DOWN and BUSY keep the count (written back later) and REFUSED means the
 * server is stopping: only the others are news. */
static void counted(int rc, const char *what, const char *user)
{
    if (rc == CLUSTER_PRESENCE_INVALID || rc == CLUSTER_PRESENCE_NO_MEMORY)
        LOG_ERROR("cluster: %s of %s not counted: %s", what, user,
                  cluster_presence_status_text(rc));
}

void cluster_session_up(const char *user)
{
    if (cl.on)
        counted(cluster_presence_session_up(cl.presence, user), "a login", user);
}

void cluster_session_down(const char *user)
{
    if (cl.on)
        counted(cluster_presence_session_down(cl.presence, user), "a logout", user);
}

void cluster_member_up(const char *topic, const char *user)
{
    if (cl.on)
        counted(cluster_presence_topic_join(cl.presence, topic, user), "a topic join", user);
}

void cluster_member_down(const char *topic, const char *user)
{
    if (cl.on)
        counted(cluster_presence_topic_leave(cl.presence, topic, user), "a topic leave", user);
}

/* ---- queries ----------------------------------------------------------------- */

/* A query's SM_ status: Redis answered, or this node answered alone. */
static int query_status(int rc)
{
    return rc == CLUSTER_PRESENCE_OK ? SM_OK : SM_EBUSY;
}

typedef struct query {
    void (*online)(int status, const int *online, size_t n, void *arg);
    void (*members)(int status, const char *const *users, size_t n, void *arg);
    void *arg;
} query;

static void online_answer(int status, const int *online, size_t n, void *arg)
{
    query q = *(query *)arg;
    free(arg);
    q.online(query_status(status), online, n, q.arg);
}

static void members_answer(int status, const char *const *users, size_t n, void *arg)
{
    query q = *(query *)arg;
    free(arg);
    q.members(query_status(status), users, n, q.arg);
}

static int query_sent(int rc, query *q)
{
    if (rc == CLUSTER_PRESENCE_OK)
        return SM_OK;
    free(q);
    return rc == CLUSTER_PRESENCE_NO_MEMORY ? SM_ENOMEM : SM_EINVAL;
}

int cluster_users_online(const char *const *users, size_t n,
                         void (*done)(int status, const int *online, size_t n, void *arg),
                         void *arg)
{
    query *q = malloc(sizeof *q);
    if (!q)
        return SM_ENOMEM;
    *q = (query){.online = done, .arg = arg};
    return query_sent(cluster_presence_query_online(cl.presence, users, n, online_answer, q), q);
}

int cluster_topic_users(const char *topic,
                        void (*done)(int status, const char *const *users, size_t n, void *arg),
                        void *arg)
{
    query *q = malloc(sizeof *q);
    if (!q)
        return SM_ENOMEM;
    *q = (query){.members = done, .arg = arg};
    return query_sent(cluster_presence_query_members(cl.presence, topic, members_answer, q), q);
}
