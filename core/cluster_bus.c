#include "cluster_bus.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cluster_frame.h"
#include "hashmap.h"
#include "log.h"
#include "redis_link.h"
#include "safemessenger/plugin.h"

_Static_assert(CLUSTER_BUS_DOWN == REDIS_LINK_DOWN && CLUSTER_BUS_BUSY == REDIS_LINK_BUSY
                   && CLUSTER_BUS_NO_MEMORY == REDIS_LINK_NO_MEMORY
                   && CLUSTER_BUS_INVALID == REDIS_LINK_INVALID,
               "the bus passes redis_link's statuses on as they are");
_Static_assert(CLUSTER_BUS_PREFIX_MAX + 2 + CLUSTER_BUS_TOPIC_MAX <= REDIS_LINK_CHANNEL_MAX,
               "every channel fits redis_link");

#define CB_INSTANCE_LEN CLUSTER_FRAME_INSTANCE_LEN
#define CB_TOPIC_TAG "t:"
#define CB_USER_TAG "u:"
#define CB_TAG_LEN 2
#define CB_CHANNEL_MAX (CLUSTER_BUS_PREFIX_MAX + CB_TAG_LEN + CLUSTER_BUS_TOPIC_MAX)

/* One channel this node is subscribed to, and how many local members
 * (sessions) want it. */
typedef struct cb_interest {
    unsigned long refs;
    int is_user;
    char channel[];
} cb_interest;

struct cluster_bus {
    redis_link *link;
    cluster_bus_handlers handlers;
    void *arg;
    char node[CLUSTER_BUS_NODE_MAX + 1];
    size_t node_len;
    unsigned char instance[CB_INSTANCE_LEN];
    char prefix[CLUSTER_BUS_PREFIX_MAX + 1];
    size_t prefix_len;
    hashmap *interest; /* channel -> cb_interest */
    int warned_malformed, warned_clash;
    _Atomic uint64_t published, received, dropped_own, malformed, id_clashes, refused_down,
        refused_busy, topics, users;
};

static void count(_Atomic uint64_t *c, int64_t delta)
{
    atomic_fetch_add_explicit(c, (uint64_t)delta, memory_order_relaxed);
}

static uint64_t read_count(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- names and channels ------------------------------------------------ */

static int prefix_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CLUSTER_BUS_PREFIX_MAX || !(sm_name_char(s[n]) || s[n] == ':'))
            return 0;
    return 1;
}

static int topic_valid(const char *topic, size_t *len)
{
    if (!topic)
        return 0;
    *len = strnlen(topic, CLUSTER_BUS_TOPIC_MAX + 1);
    return *len > 0 && *len <= CLUSTER_BUS_TOPIC_MAX;
}

/* "<prefix>t:<topic>" into out (CB_CHANNEL_MAX + 1 bytes); 0, or -1 for
 * a bad topic. */
static int topic_channel(const cluster_bus *bus, const char *topic, char *out)
{
    size_t len;
    if (!topic_valid(topic, &len))
        return -1;
    memcpy(out, bus->prefix, bus->prefix_len);
    memcpy(out + bus->prefix_len, CB_TOPIC_TAG, CB_TAG_LEN);
    memcpy(out + bus->prefix_len + CB_TAG_LEN, topic, len + 1);
    return 0;
}

/* "<prefix>u:<user lower-cased>"; 0, or -1 for a bad name. */
static int user_channel(const cluster_bus *bus, const char *user, char *out)
{
    if (!sm_name_valid(user, 1, CLUSTER_BUS_USER_MAX))
        return -1;
    memcpy(out, bus->prefix, bus->prefix_len);
    memcpy(out + bus->prefix_len, CB_USER_TAG, CB_TAG_LEN);
    return sm_name_fold(user, out + bus->prefix_len + CB_TAG_LEN, CLUSTER_BUS_USER_MAX + 1)
                   == SM_OK ? 0 : -1;
}

/* ---- the frame (cluster_frame.h) ---------------------------------------- */

static int frame_encode(const cluster_bus *bus, const char *except_user, size_t except_len,
                        const char *action, size_t action_len, const void *payload, size_t len,
                        unsigned char **out, size_t *out_len)
{
    return cluster_frame_encode(bus->instance, bus->node, bus->node_len, except_user, except_len,
                                action, action_len, payload, len, out, out_len) == 0
               ? 0
               : CLUSTER_BUS_NO_MEMORY;
}

/* ---- receiving -------------------------------------------------------- */

static void note_malformed(cluster_bus *bus, const char *channel, const char *why)
{
    count(&bus->malformed, 1);
    /* Anyone who can PUBLISH on the Redis can send these: one warning
     * tells the operator, the counter tells how many. */
    if (!bus->warned_malformed) {
        bus->warned_malformed = 1;
        LOG_WARN("cluster bus: dropped a message on %.*s that does not parse (%s); further "
                 "ones are only counted", CB_CHANNEL_MAX, channel, why);
    } else {
        LOG_DEBUG("cluster bus: dropped a message on %.*s (%s)", CB_CHANNEL_MAX, channel, why);
    }
}

/* redis_link's on_message: a frame on one of this node's channels. */
static void on_message(const char *channel, const void *msg, size_t len, void *arg)
{
    cluster_bus *bus = arg;
    cluster_frame f;
    const char *why = cluster_frame_decode(msg, len, &f);
    const char *name = channel + bus->prefix_len + CB_TAG_LEN;
    int is_user = strncmp(channel + bus->prefix_len, CB_USER_TAG, CB_TAG_LEN) == 0;
    if (!why && is_user && f.except_user[0])
        why = "an except-user on a user channel";
    if (why) {
        note_malformed(bus, channel, why);
        return;
    }
    if (strcmp(f.origin, bus->node) == 0) {
        if (memcmp(f.instance, bus->instance, sizeof bus->instance) == 0) {
            count(&bus->dropped_own, 1); /* delivered locally by the publisher */
            return;
        }
        count(&bus->id_clashes, 1);
        if (!bus->warned_clash) {
            bus->warned_clash = 1;
            LOG_ERROR("cluster bus: another process publishes as node '%s', this node's id: "
                      "give every node its own cluster.node", bus->node);
        }
    }
    /* A copy: a handler that leaves the topic frees the channel's name. */
    char copy[CLUSTER_BUS_TOPIC_MAX + 1];
    snprintf(copy, sizeof copy, "%s", name);
    count(&bus->received, 1);
    if (is_user) {
        if (bus->handlers.on_user)
            bus->handlers.on_user(copy, f.action, f.payload, f.len, bus->arg);
    } else if (bus->handlers.on_topic) {
        bus->handlers.on_topic(copy, f.except_user[0] ? f.except_user : NULL, f.action, f.payload,
                               f.len, bus->arg);
    }
}

static void on_state(int up, void *arg)
{
    cluster_bus *bus = arg;
    if (bus->handlers.on_state)
        bus->handlers.on_state(up, bus->arg);
}

/* ---- the API -------------------------------------------------------------- */

static int start_error(char *err, size_t err_len, int status, const char *why)
{
    if (err && err_len)
        snprintf(err, err_len, "%s", why);
    return status;
}

/* Random, so that a restarted node or another process configured with
 * the same id is told apart from this bus. */
static void draw_instance(unsigned char *out, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(out + got, len - got, GRND_NONBLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == len)
        return;
    /* No entropy yet (early boot): the pid and the clock still differ
     * between processes. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t v = (uint64_t)getpid() << 40 ^ (uint64_t)ts.tv_sec << 20 ^ (uint64_t)ts.tv_nsec;
    memcpy(out, &v, len < sizeof v ? len : sizeof v);
}

int cluster_bus_start(struct lws_context *ctx, const char *redis_url, const char *node_id,
                      const char *prefix, const cluster_bus_handlers *handlers, void *arg,
                      cluster_bus **out, char *err, size_t err_len)
{
    if (!sm_name_valid(node_id, 1, CLUSTER_BUS_NODE_MAX))
        return start_error(err, err_len, CLUSTER_BUS_INVALID,
                           "the node id must be 1 to 64 characters of [A-Za-z0-9_.-]");
    if (!prefix || !prefix_valid(prefix))
        return start_error(err, err_len, CLUSTER_BUS_INVALID,
                           "the channel prefix must be at most 64 characters of [A-Za-z0-9_.:-]");
    cluster_bus *bus = calloc(1, sizeof *bus);
    if (!bus || !(bus->interest = hashmap_new())) {
        free(bus);
        return start_error(err, err_len, CLUSTER_BUS_NO_MEMORY, "out of memory");
    }
    bus->node_len = strlen(node_id);
    memcpy(bus->node, node_id, bus->node_len + 1);
    bus->prefix_len = strlen(prefix);
    memcpy(bus->prefix, prefix, bus->prefix_len + 1);
    draw_instance(bus->instance, sizeof bus->instance);
    if (handlers)
        bus->handlers = *handlers;
    bus->arg = arg;
    const redis_link_handlers link_handlers = { on_message, on_state };
    int rc = redis_link_start(ctx, redis_url, &link_handlers, bus, &bus->link, err, err_len);
    if (rc != 0) {
        hashmap_free(bus->interest, NULL);
        free(bus);
        return rc;
    }
    *out = bus;
    return 0;
}

static void free_interest(void *v)
{
    free(v);
}

void cluster_bus_stop(cluster_bus *bus)
{
    if (!bus)
        return;
    redis_link_stop(bus->link);
    hashmap_free(bus->interest, free_interest);
    free(bus);
}

static int interest_add(cluster_bus *bus, const char *channel, int is_user)
{
    size_t len = strlen(channel);
    cb_interest *in = hashmap_get(bus->interest, channel, len);
    if (in) {
        in->refs++;
        return 0;
    }
    in = calloc(1, sizeof *in + len + 1);
    if (!in)
        return CLUSTER_BUS_NO_MEMORY;
    in->refs = 1;
    in->is_user = is_user;
    memcpy(in->channel, channel, len + 1);
    if (hashmap_put(bus->interest, in->channel, len, in) != 0) {
        free(in);
        return CLUSTER_BUS_NO_MEMORY;
    }
    int rc = redis_link_subscribe(bus->link, in->channel);
    if (rc != 0) {
        hashmap_remove(bus->interest, channel, len);
        free(in);
        return rc;
    }
    count(is_user ? &bus->users : &bus->topics, 1);
    return 0;
}

static int interest_drop(cluster_bus *bus, const char *channel)
{
    size_t len = strlen(channel);
    cb_interest *in = hashmap_get(bus->interest, channel, len);
    if (!in)
        return CLUSTER_BUS_INVALID;
    if (--in->refs > 0)
        return 0;
    hashmap_remove(bus->interest, channel, len);
    redis_link_unsubscribe(bus->link, in->channel);
    count(in->is_user ? &bus->users : &bus->topics, -1);
    free(in);
    return 0;
}

int cluster_bus_topic_join(cluster_bus *bus, const char *topic)
{
    char channel[CB_CHANNEL_MAX + 1];
    return topic_channel(bus, topic, channel) != 0 ? CLUSTER_BUS_INVALID
                                                    : interest_add(bus, channel, 0);
}

int cluster_bus_topic_leave(cluster_bus *bus, const char *topic)
{
    char channel[CB_CHANNEL_MAX + 1];
    return topic_channel(bus, topic, channel) != 0 ? CLUSTER_BUS_INVALID
                                                    : interest_drop(bus, channel);
}

int cluster_bus_user_online(cluster_bus *bus, const char *user)
{
    char channel[CB_CHANNEL_MAX + 1];
    return user_channel(bus, user, channel) != 0 ? CLUSTER_BUS_INVALID
                                                  : interest_add(bus, channel, 1);
}

int cluster_bus_user_offline(cluster_bus *bus, const char *user)
{
    char channel[CB_CHANNEL_MAX + 1];
    return user_channel(bus, user, channel) != 0 ? CLUSTER_BUS_INVALID
                                                  : interest_drop(bus, channel);
}

int cluster_bus_topic_subscribed(const cluster_bus *bus, const char *topic)
{
    char channel[CB_CHANNEL_MAX + 1];
    return topic_channel(bus, topic, channel) == 0 && redis_link_is_subscribed(bus->link, channel);
}

int cluster_bus_user_subscribed(const cluster_bus *bus, const char *user)
{
    char channel[CB_CHANNEL_MAX + 1];
    return user_channel(bus, user, channel) == 0 && redis_link_is_subscribed(bus->link, channel);
}

static int publish(cluster_bus *bus, const char *channel, const char *except_user,
                   const char *action, const void *payload, size_t len)
{
    size_t except_len = except_user ? strlen(except_user) : 0;
    size_t action_len = action ? strnlen(action, CLUSTER_BUS_ACTION_MAX + 1) : 0;
    if (action_len == 0 || action_len > CLUSTER_BUS_ACTION_MAX || len > CLUSTER_BUS_PAYLOAD_MAX
        || (len > 0 && !payload))
        return CLUSTER_BUS_INVALID;
    unsigned char *frame;
    size_t frame_len;
    int rc = frame_encode(bus, except_user, except_len, action, action_len, payload, len, &frame,
                          &frame_len);
    if (rc != 0)
        return rc;
    rc = redis_link_publish(bus->link, channel, frame, frame_len);
    free(frame);
    if (rc == 0)
        count(&bus->published, 1);
    else if (rc == REDIS_LINK_DOWN)
        count(&bus->refused_down, 1);
    else if (rc == REDIS_LINK_BUSY)
        count(&bus->refused_busy, 1);
    return rc;
}

int cluster_bus_publish_topic(cluster_bus *bus, const char *topic, const char *except_user,
                              const char *action, const void *payload, size_t len)
{
    char channel[CB_CHANNEL_MAX + 1];
    if (topic_channel(bus, topic, channel) != 0
        || (except_user && !sm_name_valid(except_user, 1, CLUSTER_BUS_USER_MAX)))
        return CLUSTER_BUS_INVALID;
    return publish(bus, channel, except_user, action, payload, len);
}

int cluster_bus_publish_user(cluster_bus *bus, const char *user, const char *action,
                             const void *payload, size_t len)
{
    char channel[CB_CHANNEL_MAX + 1];
    if (user_channel(bus, user, channel) != 0)
        return CLUSTER_BUS_INVALID;
    return publish(bus, channel, NULL, action, payload, len);
}

int cluster_bus_is_up(const cluster_bus *bus)
{
    return redis_link_is_up(bus->link);
}

void cluster_bus_get_counters(const cluster_bus *bus, cluster_bus_counters *out)
{
    out->published = read_count(&bus->published);
    out->received = read_count(&bus->received);
    out->dropped_own = read_count(&bus->dropped_own);
    out->malformed = read_count(&bus->malformed);
    out->id_clashes = read_count(&bus->id_clashes);
    out->refused_down = read_count(&bus->refused_down);
    out->refused_busy = read_count(&bus->refused_busy);
    out->topics = read_count(&bus->topics);
    out->users = read_count(&bus->users);
}

const struct redis_link *cluster_bus_link(const cluster_bus *bus)
{
    return bus->link;
}

const char *cluster_bus_status_text(int status)
{
    return redis_link_status_text(status);
}
