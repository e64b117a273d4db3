/* services.cluster_bus: core/cluster_bus.c, cluster mode's relay of topic
 * publishes and per-user events between nodes, with two buses (nodes
 * "a" and "b") on one lws context against the private Redis of ctest's
 * fixture "redis" (SM_TEST_REDIS_URL_FILE). A blocking hiredis
 * connection of the test's own asks Redis what it holds (PUBSUB NUMSUB)
 * and publishes frames built by hand from the layout cluster_bus.h
 * documents, well-formed and not. The restart case runs on a private
 * instance (private_redis.h). Every wait is bounded. */
#include <CUnit/CUnit.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <safemessenger/testhost_suite.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cluster_bus.h"
#include "private_redis.h"
#include "redis_link.h"
#include "service_loop.h"
#include "service_url.h"

#define BIG_PAYLOAD 70000 /* over 65535: a 16-bit length would not hold it */
#define ORDERED 1000

static char fixture_url[256];
static char prefix[64]; /* this run's channels, so suites sharing the fixture never meet */
static private_redis priv;

/* ---- what a bus delivers --------------------------------------------------- */

typedef struct probe {
    cluster_bus *bus;
    int ups, downs;
    int topics, users;         /* on_topic, on_user calls */
    char topic[300], user[80], action[260];
    char except[80];           /* "(null)" for NULL */
    unsigned char payload[BIG_PAYLOAD];
    size_t len;
    int seq[ORDERED];          /* "seq" events' payloads, as numbers, in arrival order */
    int n_seq;
    int leave_in_handler;      /* on_topic leaves the topic before reading it */
} probe;

static probe pa, pb;

static void note(probe *p, const char *action, const void *payload, size_t len)
{
    snprintf(p->action, sizeof p->action, "%s", action);
    p->len = len < sizeof p->payload ? len : sizeof p->payload;
    if (len)
        memcpy(p->payload, payload, p->len);
    if (strcmp(action, "seq") == 0 && p->n_seq < ORDERED) {
        char text[16];
        snprintf(text, sizeof text, "%.*s", (int)(len < 15 ? len : 15), (const char *)payload);
        p->seq[p->n_seq++] = atoi(text);
    }
}

static void on_topic(const char *topic, const char *except_user, const char *action,
                     const void *payload, size_t len, void *arg)
{
    probe *p = arg;
    if (p->leave_in_handler)
        CU_ASSERT_EQUAL(cluster_bus_topic_leave(p->bus, topic), 0);
    p->topics++;
    snprintf(p->topic, sizeof p->topic, "%s", topic);
    snprintf(p->except, sizeof p->except, "%s", except_user ? except_user : "(null)");
    note(p, action, payload, len);
}

static void on_user(const char *user, const char *action, const void *payload, size_t len,
                    void *arg)
{
    probe *p = arg;
    p->users++;
    snprintf(p->user, sizeof p->user, "%s", user);
    note(p, action, payload, len);
}

static void on_state(int up, void *arg)
{
    probe *p = arg;
    if (up)
        p->ups++;
    else
        p->downs++;
}

static const cluster_bus_handlers handlers = { on_topic, on_user, on_state };

static cluster_bus *start_bus(const char *url, const char *node, probe *p)
{
    char err[256] = "";
    memset(p, 0, sizeof *p);
    int rc = cluster_bus_start(service_loop_ctx, url, node, prefix, &handlers, p, &p->bus, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "cluster_bus_start(%s, %s): %d %s\n", url, node, rc, err);
    CU_ASSERT_EQUAL(rc, 0);
    return rc == 0 ? p->bus : NULL;
}

/* Nodes a and b on the fixture, both up; 0, or -1 after a CUnit failure. */
static int start_pair(cluster_bus **a, cluster_bus **b)
{
    *a = start_bus(fixture_url, "a", &pa);
    *b = start_bus(fixture_url, "b", &pb);
    if (!*a || !*b)
        return -1;
    SERVICE_WAIT_FOR(cluster_bus_is_up(*a) && cluster_bus_is_up(*b), 5000);
    CU_ASSERT(cluster_bus_is_up(*a) && cluster_bus_is_up(*b));
    return cluster_bus_is_up(*a) && cluster_bus_is_up(*b) ? 0 : -1;
}

static uint64_t counter(const cluster_bus *bus, size_t offset)
{
    cluster_bus_counters c;
    cluster_bus_get_counters(bus, &c);
    uint64_t v;
    memcpy(&v, (const char *)&c + offset, sizeof v);
    return v;
}

#define COUNTER(bus, field) counter(bus, offsetof(cluster_bus_counters, field))

/* The channel names cluster_bus.h documents. */
static const char *topic_chan(char *buf, size_t len, const char *topic)
{
    snprintf(buf, len, "%st:%s", prefix, topic);
    return buf;
}

static const char *user_chan(char *buf, size_t len, const char *lower_user)
{
    snprintf(buf, len, "%su:%s", prefix, lower_user);
    return buf;
}

/* ---- the test's own blocking connection ---------------------------------- */

static redisContext *raw_connect(void)
{
    redis_link_url u;
    char err[128];
    if (redis_link_parse_url(fixture_url, &u, err, sizeof err) != 0)
        return NULL;
    struct timeval timeout = { 5, 0 };
    redisContext *c = redisConnectWithTimeout(u.host, u.port, timeout);
    if (!c || c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Subscribers Redis counts on channel (PUBSUB NUMSUB), -1 on failure. */
static long subscribers(const char *channel)
{
    redisContext *c = raw_connect();
    long n = -1;
    redisReply *r = c ? redisCommand(c, "PUBSUB NUMSUB %s", channel) : NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[1]->type == REDIS_REPLY_INTEGER)
        n = (long)r->element[1]->integer;
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* PUBLISH channel bytes on c; 0 when Redis answered with a count. */
static int raw_publish(redisContext *c, const char *channel, const void *bytes, size_t len)
{
    redisReply *r = redisCommand(c, "PUBLISH %s %b", channel, bytes, len);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    freeReplyObject(r);
    return rc;
}

/* A frame as cluster_bus.h lays it out, built here independently of the
 * bus's encoder: version, instance, then each string as a length byte
 * and its bytes (NULL: length 0), then a 4-byte big-endian payload
 * length and the payload. Returns its size. */
static size_t build_frame(unsigned char *out, unsigned char version, const char *instance8,
                          const char *node, const char *except, const char *action,
                          const void *payload, uint32_t len)
{
    unsigned char *p = out;
    *p++ = version;
    memcpy(p, instance8, 8);
    p += 8;
    const char *strings[] = { node, except, action };
    for (size_t i = 0; i < 3; i++) {
        size_t n = strings[i] ? strlen(strings[i]) : 0;
        *p++ = (unsigned char)n;
        memcpy(p, strings[i] ? strings[i] : "", n);
        p += n;
    }
    *p++ = (unsigned char)(len >> 24);
    *p++ = (unsigned char)(len >> 16);
    *p++ = (unsigned char)(len >> 8);
    *p++ = (unsigned char)len;
    memcpy(p, payload, len);
    return (size_t)(p - out) + len;
}

/* ---- starting ------------------------------------------------------------ */

static void start_refuses_bad_node_ids_prefixes_and_urls(void)
{
    char long_node[CLUSTER_BUS_NODE_MAX + 2], long_prefix[CLUSTER_BUS_PREFIX_MAX + 2];
    memset(long_node, 'n', sizeof long_node - 1);
    long_node[sizeof long_node - 1] = '\0';
    memset(long_prefix, 'p', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = '\0';
    const struct {
        const char *url, *node, *prefix, *reason;
    } cases[] = {
        { "redis://127.0.0.1:1/0", "", "sm:", "node id" },
        { "redis://127.0.0.1:1/0", NULL, "sm:", "node id" },
        { "redis://127.0.0.1:1/0", "a b", "sm:", "node id" },
        { "redis://127.0.0.1:1/0", "a/b", "sm:", "node id" },
        { "redis://127.0.0.1:1/0", long_node, "sm:", "node id" },
        { "redis://127.0.0.1:1/0", "a", "sm :", "prefix" },
        { "redis://127.0.0.1:1/0", "a", NULL, "prefix" },
        { "redis://127.0.0.1:1/0", "a", long_prefix, "prefix" },
        { "redis://127.0.0.1:70000/0", "a", "sm:", "port '70000'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cluster_bus *bus = (cluster_bus *)&service_loop_ctx; /* a sentinel: must stay untouched */
        char err[160] = "";
        CU_ASSERT_EQUAL(cluster_bus_start(service_loop_ctx, cases[i].url, cases[i].node, cases[i].prefix,
                                          &handlers, NULL, &bus, err, sizeof err),
                        CLUSTER_BUS_INVALID);
        CU_ASSERT_PTR_EQUAL(bus, (cluster_bus *)&service_loop_ctx);
        if (!strstr(err, cases[i].reason))
            fprintf(stderr, "case %zu: expected '%s' in '%s'\n", i, cases[i].reason, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].reason));
    }
    /* The limits themselves pass: 64 bytes each, an empty prefix. */
    long_node[CLUSTER_BUS_NODE_MAX] = '\0';
    long_prefix[CLUSTER_BUS_PREFIX_MAX] = '\0';
    const char *prefixes[] = { long_prefix, "" };
    for (size_t i = 0; i < 2; i++) {
        cluster_bus *bus = NULL;
        char err[160] = "";
        CU_ASSERT_EQUAL(cluster_bus_start(service_loop_ctx, "redis://127.0.0.1:1/0", long_node, prefixes[i],
                                          &handlers, NULL, &bus, err, sizeof err), 0);
        cluster_bus_stop(bus);
    }
}

/* ---- delivery ------------------------------------------------------------- */

static void a_topic_publish_reaches_the_other_node_once_and_not_its_own(void)
{
    static const char payload[] = "{\"content\":\"hi\"}";
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(a, "room:general"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:general"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(a, "room:general")
                 && cluster_bus_topic_subscribed(b, "room:general"), 3000);
    CU_ASSERT(cluster_bus_topic_subscribed(b, "room:general"));
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:general", NULL, "public_message", payload,
                                              sizeof payload - 1), 0);
    /* b gets it; a gets its own copy back from Redis and drops it. */
    SERVICE_WAIT_FOR(pb.topics == 1 && COUNTER(a, dropped_own) == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 1);
    CU_ASSERT_STRING_EQUAL(pb.topic, "room:general");
    CU_ASSERT_STRING_EQUAL(pb.except, "(null)");
    CU_ASSERT_STRING_EQUAL(pb.action, "public_message");
    CU_ASSERT_EQUAL(pb.len, sizeof payload - 1);
    CU_ASSERT_EQUAL(memcmp(pb.payload, payload, sizeof payload - 1), 0);
    CU_ASSERT_EQUAL(COUNTER(a, dropped_own), 1);
    CU_ASSERT_EQUAL(pa.topics, 0);
    /* Once: a second publish is b's second delivery, not its third. */
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:general", NULL, "marker", "", 0), 0);
    SERVICE_WAIT_FOR(strcmp(pb.action, "marker") == 0 && COUNTER(a, dropped_own) == 2, 3000);
    CU_ASSERT_EQUAL(pb.topics, 2);
    CU_ASSERT_EQUAL(pb.len, 0);
    CU_ASSERT_EQUAL(pa.topics, 0);
    /* And the other way round. */
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(b, "room:general", NULL, "from_b", "x", 1), 0);
    SERVICE_WAIT_FOR(pa.topics == 1 && COUNTER(b, dropped_own) == 1, 3000);
    CU_ASSERT_EQUAL(pa.topics, 1);
    CU_ASSERT_STRING_EQUAL(pa.action, "from_b");
    CU_ASSERT_EQUAL(pb.topics, 2);
    CU_ASSERT_EQUAL(COUNTER(a, published), 2);
    CU_ASSERT_EQUAL(COUNTER(b, received), 2);
    CU_ASSERT_EQUAL(COUNTER(a, received), 1);
    CU_ASSERT_EQUAL(COUNTER(b, malformed) + COUNTER(a, malformed), 0);
    CU_ASSERT_EQUAL(COUNTER(b, id_clashes) + COUNTER(a, id_clashes), 0);
    CU_ASSERT_EQUAL(COUNTER(a, topics), 1);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

static void nothing_reaches_a_node_without_interest(void)
{
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "marker"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "gone"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "gone_user"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "marker") && cluster_bus_topic_subscribed(b, "gone")
                 && cluster_bus_user_subscribed(b, "gone_user"), 3000);
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(b, "gone"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_offline(b, "gone_user"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_subscribed(b, "gone"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_subscribed(b, "gone_user"), 0);
    /* Never joined, joined and left, a user never or no longer here: one
     * publisher connection, so the marker comes after all of them. */
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "lonely", NULL, "x", "1", 1), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "gone", NULL, "x", "2", 1), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "nobody", "x", "3", 1), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "gone_user", "x", "4", 1), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "marker", NULL, "end", "", 0), 0);
    SERVICE_WAIT_FOR(pb.topics == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 1);
    CU_ASSERT_STRING_EQUAL(pb.topic, "marker");
    CU_ASSERT_EQUAL(pb.users, 0);
    CU_ASSERT_EQUAL(COUNTER(b, received), 1);
    CU_ASSERT_EQUAL(COUNTER(b, topics), 1);
    CU_ASSERT_EQUAL(COUNTER(b, users), 0);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

/* Publishes a marker from a on `marker` and waits for b to get it: what
 * a published before has reached b by then, or never will. */
static void sync_on_marker(cluster_bus *a, int *topics_seen)
{
    int before = *topics_seen;
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "marker", NULL, "end", "", 0), 0);
    SERVICE_WAIT_FOR(*topics_seen > before && strcmp(pb.topic, "marker") == 0, 3000);
    CU_ASSERT_STRING_EQUAL(pb.topic, "marker");
}

static void joins_and_leaves_count_references_one_subscription_per_node(void)
{
    char ch[256], uch[256];
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    topic_chan(ch, sizeof ch, "room:counted");
    user_chan(uch, sizeof uch, "alice");
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "marker"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:counted"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:counted"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "Alice"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "ALICE"), 0); /* the same user */
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:counted")
                 && cluster_bus_user_subscribed(b, "alice")
                 && cluster_bus_topic_subscribed(b, "marker"), 3000);
    CU_ASSERT_EQUAL(subscribers(ch), 1);
    CU_ASSERT_EQUAL(subscribers(uch), 1);
    CU_ASSERT_EQUAL(COUNTER(b, topics), 2);
    CU_ASSERT_EQUAL(COUNTER(b, users), 1);

    /* One of two leaves: still subscribed, still delivered. */
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(b, "room:counted"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_offline(b, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:counted", NULL, "still", "", 0), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "aLiCe", "still", "", 0), 0);
    sync_on_marker(a, &pb.topics);
    CU_ASSERT_EQUAL(pb.topics, 2);
    CU_ASSERT_EQUAL(pb.users, 1);
    CU_ASSERT_EQUAL(subscribers(ch), 1);
    CU_ASSERT_EQUAL(subscribers(uch), 1);

    /* The other node's interest is its own subscription. */
    CU_ASSERT_EQUAL(cluster_bus_topic_join(a, "room:counted"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(a, "room:counted"), 3000);
    CU_ASSERT_EQUAL(subscribers(ch), 2);
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(a, "room:counted"), 0);

    /* The last leave: unsubscribed, nothing more delivered. */
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(b, "room:counted"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_offline(b, "Alice"), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:counted", NULL, "late", "", 0), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "alice", "late", "", 0), 0);
    sync_on_marker(a, &pb.topics);
    CU_ASSERT_EQUAL(pb.topics, 3);
    CU_ASSERT_EQUAL(pb.users, 1);
    /* Redis saw the UNSUBSCRIBEs (b's connection, not a's: no order
     * between them and the marker). */
    SERVICE_WAIT_FOR(subscribers(ch) == 0 && subscribers(uch) == 0, 3000);
    CU_ASSERT_EQUAL(subscribers(ch), 0);
    CU_ASSERT_EQUAL(subscribers(uch), 0);
    CU_ASSERT_EQUAL(COUNTER(b, topics), 1);
    CU_ASSERT_EQUAL(COUNTER(b, users), 0);
    /* A leave without a join. */
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(b, "room:counted"), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_user_offline(b, "alice"), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(COUNTER(b, topics), 1);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

static void except_user_is_carried_and_names_are_checked(void)
{
    char topic[CLUSTER_BUS_TOPIC_MAX + 2], action[CLUSTER_BUS_ACTION_MAX + 2];
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:lobby"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:lobby"), 3000);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", "Bob", "user_joined", "{}", 2), 0);
    SERVICE_WAIT_FOR(pb.topics == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 1);
    CU_ASSERT_STRING_EQUAL(pb.except, "Bob");
    CU_ASSERT_STRING_EQUAL(pb.action, "user_joined");

    /* Refused before anything is sent. */
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", "", "x", "", 0),
                    CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", "b b", "x", "", 0),
                    CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", NULL, "", "", 0),
                    CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", NULL, NULL, "", 0),
                    CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", NULL, "x", NULL, 1),
                    CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "", NULL, "x", "", 0), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "", "x", "", 0), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "a:b", "x", "", 0), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_user_online(a, "a*"), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(a, NULL), CLUSTER_BUS_INVALID);
    memset(topic, 't', sizeof topic - 1);
    topic[sizeof topic - 1] = '\0';
    CU_ASSERT_EQUAL(cluster_bus_topic_join(a, topic), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, topic, NULL, "x", "", 0), CLUSTER_BUS_INVALID);
    topic[sizeof topic - 2] = '\0'; /* CLUSTER_BUS_TOPIC_MAX: fine */
    CU_ASSERT_EQUAL(cluster_bus_topic_join(a, topic), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_leave(a, topic), 0);
    memset(action, 'x', sizeof action - 1);
    action[sizeof action - 1] = '\0';
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "bob", action, "", 0), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:lobby", NULL, "x", "",
                                              CLUSTER_BUS_PAYLOAD_MAX + 1), CLUSTER_BUS_INVALID);
    CU_ASSERT_EQUAL(COUNTER(a, published), 1);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

static void a_user_channel_ignores_ascii_case(void)
{
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "Carol"), 0);
    SERVICE_WAIT_FOR(cluster_bus_user_subscribed(b, "CAROL"), 3000);
    CU_ASSERT_EQUAL(cluster_bus_user_subscribed(b, "carol"), 1);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "cAROL", "private_message", "{\"id\":1}", 8), 0);
    SERVICE_WAIT_FOR(pb.users == 1, 3000);
    CU_ASSERT_EQUAL(pb.users, 1);
    CU_ASSERT_STRING_EQUAL(pb.user, "carol");
    CU_ASSERT_STRING_EQUAL(pb.action, "private_message");
    CU_ASSERT_EQUAL(pb.len, 8);
    CU_ASSERT_EQUAL(memcmp(pb.payload, "{\"id\":1}", 8), 0);
    CU_ASSERT_EQUAL(pb.topics, 0);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

static void a_nodes_publishes_arrive_in_order(void)
{
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:ordered"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "dave"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:ordered")
                 && cluster_bus_user_subscribed(b, "dave"), 3000);
    /* Topic and user channel interleaved: a private message and a room
     * event keep their order too. */
    int sent = 0;
    for (int i = 0; i < ORDERED; i++) {
        char text[16];
        int n = snprintf(text, sizeof text, "%d", i);
        int rc = i % 2 ? cluster_bus_publish_user(a, "dave", "seq", text, (size_t)n)
                       : cluster_bus_publish_topic(a, "room:ordered", NULL, "seq", text,
                                                   (size_t)n);
        sent += rc == 0;
    }
    CU_ASSERT_EQUAL(sent, ORDERED);
    SERVICE_WAIT_FOR(pb.n_seq == ORDERED, 10000);
    CU_ASSERT_EQUAL(pb.n_seq, ORDERED);
    int in_order = 0;
    for (int i = 0; i < pb.n_seq; i++)
        in_order += pb.seq[i] == i;
    CU_ASSERT_EQUAL(in_order, ORDERED);
    CU_ASSERT_EQUAL(pb.topics, ORDERED / 2);
    CU_ASSERT_EQUAL(pb.users, ORDERED / 2);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

static void binary_payloads_arrive_whole(void)
{
    static const char nuls[] = "\0sealed\0\xff\x01\0";
    static unsigned char big[BIG_PAYLOAD];
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 31 + i / 256);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:bin"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "erin"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:bin") && cluster_bus_user_subscribed(b, "erin"),
             3000);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:bin", NULL, "nuls", nuls, sizeof nuls - 1),
                    0);
    SERVICE_WAIT_FOR(pb.topics == 1, 3000);
    CU_ASSERT_EQUAL(pb.len, sizeof nuls - 1);
    CU_ASSERT_EQUAL(memcmp(pb.payload, nuls, sizeof nuls - 1), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "erin", "big", big, sizeof big), 0);
    SERVICE_WAIT_FOR(pb.users == 1, 3000);
    CU_ASSERT_EQUAL(pb.len, sizeof big);
    CU_ASSERT_EQUAL(memcmp(pb.payload, big, sizeof big), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "erin", "empty", NULL, 0), 0);
    SERVICE_WAIT_FOR(pb.users == 2, 3000);
    CU_ASSERT_STRING_EQUAL(pb.action, "empty");
    CU_ASSERT_EQUAL(pb.len, 0);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

/* ---- what does not parse ------------------------------------------------ */

static void garbage_is_counted_as_malformed_and_never_delivered(void)
{
    static const char payload[] = "p\0q";
    char ch[256], uch[256];
    unsigned char good[512], bad[512];
    cluster_bus *b = start_bus(fixture_url, "b", &pb);
    redisContext *raw = raw_connect();
    CU_ASSERT_PTR_NOT_NULL(raw);
    if (!b || !raw)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:junk"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "frank"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:junk")
                 && cluster_bus_user_subscribed(b, "frank"), 5000);
    topic_chan(ch, sizeof ch, "room:junk");
    user_chan(uch, sizeof uch, "frank");
    size_t good_len = build_frame(good, 1, "instance", "z", "Bob", "act", payload, 3);
    int sent = 0;
    /* Every cut of a good frame, the empty message included. */
    for (size_t n = 0; n < good_len; n++)
        sent += raw_publish(raw, ch, good, n) == 0;
    /* One byte too many. */
    memcpy(bad, good, good_len);
    bad[good_len] = 0;
    sent += raw_publish(raw, ch, bad, good_len + 1) == 0;
    /* Each field wrong in turn. */
    struct {
        unsigned char version;
        const char *node, *except, *action;
    } fields[] = {
        { 2, "z", NULL, "act" },       /* a version this one cannot read */
        { 0, "z", NULL, "act" },
        { 1, NULL, NULL, "act" },      /* no origin */
        { 1, "z z", NULL, "act" },
        { 1, "z\x01", NULL, "act" },
        { 1, "n123456789012345678901234567890123456789012345678901234567890123x", NULL, "act" },
        { 1, "z", "b*b", "act" },
        { 1, "z", "u123456789012345678901234567890123456789012345678901234567890123x", "act" },
        { 1, "z", NULL, NULL },        /* no action */
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        size_t n = build_frame(bad, fields[i].version, "instance", fields[i].node,
                               fields[i].except, fields[i].action, payload, 3);
        sent += raw_publish(raw, ch, bad, n) == 0;
    }
    /* A NUL inside a string would cut what the handler sees. */
    size_t n = build_frame(bad, 1, "instance", "zz", NULL, "act", payload, 3);
    bad[11] = '\0'; /* the origin's second byte */
    sent += raw_publish(raw, ch, bad, n) == 0;
    n = build_frame(bad, 1, "instance", "z", NULL, "ab", payload, 3);
    bad[14] = '\0'; /* the action's second byte */
    sent += raw_publish(raw, ch, bad, n) == 0;
    /* Payload lengths: one short, one over, one over the maximum (with
     * as many bytes as it says, so only the bound refuses it). */
    n = build_frame(bad, 1, "instance", "z", NULL, "act", payload, 3);
    bad[n - 4] = 2;
    sent += raw_publish(raw, ch, bad, n) == 0;
    bad[n - 4] = 4;
    sent += raw_publish(raw, ch, bad, n) == 0;
    unsigned char *huge = calloc(1, CLUSTER_BUS_PAYLOAD_MAX + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
    n = build_frame(huge, 1, "instance", "z", NULL, "act", huge + 32, 0);
    uint32_t over = CLUSTER_BUS_PAYLOAD_MAX + 1;
    huge[n - 4] = (unsigned char)(over >> 24);
    huge[n - 3] = (unsigned char)(over >> 16);
    huge[n - 2] = (unsigned char)(over >> 8);
    huge[n - 1] = (unsigned char)over;
    sent += raw_publish(raw, ch, huge, n + over) == 0;
    free(huge);
    /* An except-user has no place on a user channel. */
    sent += raw_publish(raw, uch, good, good_len) == 0;
    /* Noise: random bytes, half of them behind a valid version byte. */
    srand(14);
    for (int i = 0; i < 200; i++) {
        size_t len = (size_t)(rand() % 64);
        for (size_t j = 0; j < len; j++)
            bad[j] = (unsigned char)rand();
        if (len && i % 2)
            bad[0] = 1;
        sent += raw_publish(raw, i % 3 ? ch : uch, bad, len) == 0;
    }
    int garbage = sent;
    /* Last, the good frame itself, from node "z": it is delivered, so
     * everything before it was read (one publisher connection). */
    sent += raw_publish(raw, ch, good, good_len) == 0;
    CU_ASSERT_EQUAL(sent, (int)good_len + 1 + 9 + 2 + 2 + 1 + 1 + 200 + 1);
    SERVICE_WAIT_FOR(pb.topics == 1, 5000);
    CU_ASSERT_EQUAL(pb.topics, 1);
    CU_ASSERT_EQUAL(pb.users, 0);
    CU_ASSERT_STRING_EQUAL(pb.topic, "room:junk");
    CU_ASSERT_STRING_EQUAL(pb.except, "Bob");
    CU_ASSERT_STRING_EQUAL(pb.action, "act");
    CU_ASSERT_EQUAL(pb.len, 3);
    CU_ASSERT_EQUAL(memcmp(pb.payload, payload, 3), 0);
    CU_ASSERT_EQUAL(COUNTER(b, malformed), (uint64_t)garbage);
    CU_ASSERT_EQUAL(COUNTER(b, received), 1);

    /* A frame with b's own node id but not b's instance comes from
     * another process configured as "b": delivered, and counted. */
    n = build_frame(bad, 1, "another!", "b", NULL, "clash", "", 0);
    CU_ASSERT_EQUAL(raw_publish(raw, uch, bad, n), 0);
    SERVICE_WAIT_FOR(pb.users == 1, 3000);
    CU_ASSERT_EQUAL(pb.users, 1);
    CU_ASSERT_STRING_EQUAL(pb.user, "frank");
    CU_ASSERT_STRING_EQUAL(pb.action, "clash");
    CU_ASSERT_EQUAL(COUNTER(b, id_clashes), 1);
    CU_ASSERT_EQUAL(COUNTER(b, dropped_own), 0);
    CU_ASSERT_EQUAL(COUNTER(b, malformed), (uint64_t)garbage);
out:
    redisFree(raw);
    cluster_bus_stop(b);
}

/* A handler may leave the topic it is called for (its last member went):
 * the topic it was given stays readable (ASan would see it freed). */
static void a_handler_may_leave_the_topic_it_is_called_for(void)
{
    char ch[256];
    cluster_bus *a = NULL, *b = NULL;
    if (start_pair(&a, &b) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:brief"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "marker"), 0);
    SERVICE_WAIT_FOR(cluster_bus_topic_subscribed(b, "room:brief")
                 && cluster_bus_topic_subscribed(b, "marker"), 3000);
    pb.leave_in_handler = 1;
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:brief", NULL, "once", "", 0), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:brief", NULL, "twice", "", 0), 0);
    SERVICE_WAIT_FOR(pb.topics == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 1);
    CU_ASSERT_STRING_EQUAL(pb.topic, "room:brief");
    CU_ASSERT_STRING_EQUAL(pb.action, "once");
    /* Redis saw the UNSUBSCRIBE (it may come after the test asks). */
    SERVICE_WAIT_FOR(subscribers(topic_chan(ch, sizeof ch, "room:brief")) == 0, 3000);
    CU_ASSERT_EQUAL(subscribers(ch), 0);
    /* "twice" came before the marker, or never: not after the leave. */
    sync_on_marker(a, &pb.topics);
    CU_ASSERT_EQUAL(pb.topics, 2);
    CU_ASSERT_EQUAL(COUNTER(b, topics), 0);
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
}

/* ---- without Redis ----------------------------------------------------- */

/* A loopback port nothing listens on (bound, then released). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0
        && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void publishing_without_redis_is_refused_as_down(void)
{
    char url[64];
    int port = closed_port();
    CU_ASSERT_FATAL(port > 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    cluster_bus *bus = start_bus(url, "a", &pa);
    CU_ASSERT_FATAL(bus != NULL);
    SERVICE_WAIT_FOR(pa.downs > 0, 3000);
    CU_ASSERT_EQUAL(pa.downs, 1);
    CU_ASSERT_EQUAL(pa.ups, 0);
    CU_ASSERT_EQUAL(cluster_bus_is_up(bus), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(bus, "room:x", NULL, "x", "1", 1),
                    CLUSTER_BUS_DOWN);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(bus, "gina", "x", "1", 1), CLUSTER_BUS_DOWN);
    CU_ASSERT_STRING_EQUAL(cluster_bus_status_text(CLUSTER_BUS_DOWN), "redis is unreachable");
    /* Interest is kept for when Redis comes. */
    CU_ASSERT_EQUAL(cluster_bus_topic_join(bus, "room:x"), 0);
    CU_ASSERT_EQUAL(cluster_bus_topic_subscribed(bus, "room:x"), 0);
    CU_ASSERT_EQUAL(COUNTER(bus, refused_down), 2);
    CU_ASSERT_EQUAL(COUNTER(bus, published), 0);
    CU_ASSERT_EQUAL(COUNTER(bus, topics), 1);
    cluster_bus_stop(bus);
}

static void publishing_beyond_the_in_flight_cap_is_refused_as_busy(void)
{
    cluster_bus *a = start_bus(fixture_url, "a", &pa);
    CU_ASSERT_FATAL(a != NULL);
    SERVICE_WAIT_FOR(cluster_bus_is_up(a), 5000);
    CU_ASSERT_FATAL(cluster_bus_is_up(a));
    int ok = 0;
    /* Nothing is answered while the loop does not run. */
    for (int i = 0; i < REDIS_LINK_MAX_IN_FLIGHT; i++)
        ok += cluster_bus_publish_topic(a, "room:busy", NULL, "x", "1", 1) == 0;
    CU_ASSERT_EQUAL(ok, REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "hank", "x", "1", 1), CLUSTER_BUS_BUSY);
    CU_ASSERT_EQUAL(COUNTER(a, refused_busy), 1);
    CU_ASSERT_EQUAL(COUNTER(a, published), REDIS_LINK_MAX_IN_FLIGHT);
    redis_link_counters lc;
    SERVICE_WAIT_FOR((redis_link_get_counters(cluster_bus_link(a), &lc), lc.in_flight == 0), 10000);
    CU_ASSERT_EQUAL(lc.in_flight, 0);
    CU_ASSERT_EQUAL(lc.published, REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "hank", "x", "1", 1), 0);
    cluster_bus_stop(a);
}

/* ---- a Redis restart ------------------------------------------------------ */

static void subscriptions_come_back_after_a_redis_restart(void)
{
    cluster_bus *a = NULL, *b = NULL;
    if (private_redis_start(&priv, "cluster-bus") != 0) {
        CU_FAIL("cannot start a private redis-server");
        goto out;
    }
    a = start_bus(priv.url, "a", &pa);
    b = start_bus(priv.url, "b", &pb);
    if (!a || !b)
        goto out;
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:r"), 0);
    CU_ASSERT_EQUAL(cluster_bus_user_online(b, "ivan"), 0);
    SERVICE_WAIT_FOR(cluster_bus_is_up(a) && cluster_bus_is_up(b), 5000);
    CU_ASSERT(cluster_bus_is_up(a) && cluster_bus_is_up(b));
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:r", NULL, "before", "", 0), 0);
    SERVICE_WAIT_FOR(pb.topics == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 1);

    /* Redis goes: both report it, publishing is refused. */
    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    SERVICE_WAIT_FOR(pa.downs == 1 && pb.downs == 1, 5000);
    CU_ASSERT_EQUAL(pa.downs, 1);
    CU_ASSERT_EQUAL(pb.downs, 1);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:r", NULL, "lost", "", 0),
                    CLUSTER_BUS_DOWN);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "ivan", "lost", "", 0), CLUSTER_BUS_DOWN);
    CU_ASSERT_EQUAL(COUNTER(a, refused_down), 2);
    CU_ASSERT_EQUAL(cluster_bus_topic_subscribed(b, "room:r"), 0);
    /* Joined meanwhile: subscribed once Redis is back. */
    CU_ASSERT_EQUAL(cluster_bus_topic_join(b, "room:new"), 0);

    /* Back on the same port: every subscription with it. */
    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    SERVICE_WAIT_FOR(cluster_bus_is_up(a) && cluster_bus_is_up(b), 8000);
    CU_ASSERT(cluster_bus_is_up(a) && cluster_bus_is_up(b));
    CU_ASSERT_EQUAL(pa.ups, 2);
    CU_ASSERT_EQUAL(pb.ups, 2);
    CU_ASSERT(cluster_bus_topic_subscribed(b, "room:r") && cluster_bus_user_subscribed(b, "ivan")
              && cluster_bus_topic_subscribed(b, "room:new"));
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:r", NULL, "after", "", 0), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_user(a, "ivan", "after", "", 0), 0);
    CU_ASSERT_EQUAL(cluster_bus_publish_topic(a, "room:new", NULL, "after", "", 0), 0);
    SERVICE_WAIT_FOR(pb.topics == 3 && pb.users == 1, 3000);
    CU_ASSERT_EQUAL(pb.topics, 3);
    CU_ASSERT_EQUAL(pb.users, 1);
    CU_ASSERT_STRING_EQUAL(pb.topic, "room:new");
out:
    cluster_bus_stop(a);
    cluster_bus_stop(b);
    private_redis_stop(&priv);
}

/* ---- the suite ------------------------------------------------------------ */

static int suite_init(void)
{
    if (service_url_read("SM_TEST_REDIS_URL_FILE", fixture_url, sizeof fixture_url) != 0)
        return -1;
    snprintf(prefix, sizeof prefix, "sm:test:cluster_bus:%ld:", (long)getpid());
    return service_loop_init();
}

static int suite_cleanup(void)
{
    private_redis_stop(&priv); /* a failed assertion left a case early */
    service_loop_cleanup();
    return 0;
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(start_refuses_bad_node_ids_prefixes_and_urls),
        SM_TEST(a_topic_publish_reaches_the_other_node_once_and_not_its_own),
        SM_TEST(nothing_reaches_a_node_without_interest),
        SM_TEST(joins_and_leaves_count_references_one_subscription_per_node),
        SM_TEST(except_user_is_carried_and_names_are_checked),
        SM_TEST(a_user_channel_ignores_ascii_case),
        SM_TEST(a_nodes_publishes_arrive_in_order),
        SM_TEST(binary_payloads_arrive_whole),
        SM_TEST(garbage_is_counted_as_malformed_and_never_delivered),
        SM_TEST(a_handler_may_leave_the_topic_it_is_called_for),
        SM_TEST(publishing_without_redis_is_refused_as_down),
        SM_TEST(publishing_beyond_the_in_flight_cap_is_refused_as_busy),
        SM_TEST(subscriptions_come_back_after_a_redis_restart),
        SM_TEST_END,
    };
    return sm_test_run("services.cluster_bus", tests, suite_init, suite_cleanup);
}
