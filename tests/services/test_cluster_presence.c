/* services.cluster_presence: core/cluster_presence.c, cluster-wide
 * session counting (first and last session of a user, exactly once),
 * node liveness and the reaping of dead nodes, with up to three nodes
 * ("a", "b", "c") on one lws context against the private Redis of
 * ctest's fixture "redis" (SM_TEST_REDIS_URL_FILE); each case uses keys
 * under a prefix of its own and deletes them after. A blocking hiredis
 * connection of the test's own reads what Redis holds (the key layout
 * cluster_presence.h documents) and plays the operator (DEL). The Redis
 * outage cases run on a private instance (private_redis.h), stopped or
 * frozen. Every wait is bounded. */
#include <CUnit/CUnit.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <safemessenger/testhost_suite.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_presence.h"
#include "private_redis.h"
#include "redis_link.h"
#include "service_loop.h"
#include "service_url.h"

#define WAIT_FOR SERVICE_WAIT_FOR
#define MAX_EVENTS 512
#define RACES 50

/* Short liveness intervals for the cases that do not time the issue's
 * 15 s (that one runs on the defaults): a key lives 3 s, refreshed every
 * 0.5 s (2.5 s of slack for a loaded machine), dead nodes looked for
 * every 0.3 s. */
#define SHORT_TTL_MS 3000
#define SHORT_REFRESH_MS 500
#define SHORT_REAP_MS 300

static char fixture_url[256];
static char prefix[96]; /* this case's keys */
static int case_number;
static private_redis priv;

/* ---- what a node reports ------------------------------------------------- */

typedef struct event {
    char topic[CLUSTER_PRESENCE_TOPIC_MAX + 1]; /* "" for on_user */
    char user[CLUSTER_PRESENCE_USER_MAX + 1];
    int online;
    enum cluster_presence_reason reason;
    double at;
} event;

typedef struct node {
    cluster_presence *p;
    const char *id;
    event ev[MAX_EVENTS];
    int n;
    enum cluster_presence_state state;
    int state_changes;
    int left_status; /* leave's done: 1 + status, 0 before */
} node;

static node na, nb, nc, nd;

static void on_member(const char *topic, const char *user, int joined,
                      enum cluster_presence_reason reason, void *arg)
{
    node *n = arg;
    if (n->n < MAX_EVENTS) {
        event *e = &n->ev[n->n];
        snprintf(e->topic, sizeof e->topic, "%s", topic);
        snprintf(e->user, sizeof e->user, "%s", user);
        e->online = joined;
        e->reason = reason;
        e->at = service_loop_now();
    }
    n->n++;
}

static void on_user(const char *user, int online, enum cluster_presence_reason reason, void *arg)
{
    on_member("", user, online, reason, arg);
}

static void on_state(enum cluster_presence_state state, void *arg)
{
    node *n = arg;
    n->state = state;
    n->state_changes++;
}

static const cluster_presence_handlers handlers = { on_user, on_state, on_member };

/* Starts node n as id on url with these intervals (0: defaults),
 * serving the key of fingerprint (NULL: no check). */
static int start_node_full(node *n, const char *id, const char *url, unsigned ttl,
                           unsigned refresh, unsigned reap, const char *fingerprint)
{
    memset(n, 0, sizeof *n);
    n->id = id;
    cluster_presence_options o = { url, id, prefix, ttl, refresh, reap, fingerprint };
    char err[256] = "";
    int rc = cluster_presence_start(service_loop_ctx, &o, &handlers, n, &n->p, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "cluster_presence_start(%s): %d %s\n", id, rc, err);
    CU_ASSERT_EQUAL(rc, 0);
    return rc;
}

static int start_node_with(node *n, const char *id, const char *url, unsigned ttl,
                           unsigned refresh, unsigned reap)
{
    return start_node_full(n, id, url, ttl, refresh, reap, NULL);
}

/* On the fixture with the short intervals, serving fingerprint's key. */
static int start_node_serving(node *n, const char *id, const char *fingerprint)
{
    return start_node_full(n, id, fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS, SHORT_REAP_MS,
                           fingerprint);
}

static int start_node(node *n, const char *id)
{
    return start_node_with(n, id, fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS, SHORT_REAP_MS);
}

static void stop_node(node *n)
{
    cluster_presence_stop(n->p);
    n->p = NULL;
}

static int is_up(const node *n)
{
    return n->p && cluster_presence_get_state(n->p) == CLUSTER_PRESENCE_STATE_UP;
}

/* Every node given is up (NULL-terminated list). */
static int all_up(node *first, ...)
{
    va_list ap;
    int up = 1;
    va_start(ap, first);
    for (node *n = first; n; n = va_arg(ap, node *))
        up = up && is_up(n);
    va_end(ap);
    return up;
}

/* Nodes a and b on url, up; -1 (a failure noted) otherwise. */
static int start_pair(const char *url, unsigned ttl, unsigned refresh)
{
    if (start_node_with(&na, "a", url, ttl, refresh, SHORT_REAP_MS)
        || start_node_with(&nb, "b", url, ttl, refresh, SHORT_REAP_MS))
        return -1;
    WAIT_FOR(all_up(&na, &nb, NULL), 5000);
    CU_ASSERT(all_up(&na, &nb, NULL));
    return all_up(&na, &nb, NULL) ? 0 : -1;
}

static uint64_t in_flight(const node *n)
{
    redis_link_counters c;
    if (!n->p)
        return 0;
    redis_link_get_counters(cluster_presence_link(n->p), &c);
    return c.commands_in_flight;
}

/* Until every node's scripts were answered (their events are in). */
static void settle(void)
{
    WAIT_FOR(in_flight(&na) + in_flight(&nb) + in_flight(&nc) + in_flight(&nd) == 0, 5000);
    CU_ASSERT_EQUAL(in_flight(&na) + in_flight(&nb) + in_flight(&nc) + in_flight(&nd), 0);
}

/* How many times n reported user going online (1) or offline (0), for
 * any reason (reason 0) or that one. */
static int topic_events_of(const node *n, const char *topic, const char *user, int up,
                           int reason)
{
    int k = 0;
    for (int i = 0; i < n->n && i < MAX_EVENTS; i++)
        k += strcmp(n->ev[i].topic, topic) == 0 && strcmp(n->ev[i].user, user) == 0
             && n->ev[i].online == up && (reason == 0 || (int)n->ev[i].reason == reason);
    return k;
}

static int events_of(const node *n, const char *user, int online, int reason)
{
    return topic_events_of(n, "", user, online, reason);
}

/* The same, on every node: how many times user joined (1) or left (0)
 * topic ("": went online or offline). */
static int topic_events_all(const char *topic, const char *user, int up, int reason)
{
    return topic_events_of(&na, topic, user, up, reason) + topic_events_of(&nb, topic, user, up, reason)
           + topic_events_of(&nc, topic, user, up, reason) + topic_events_of(&nd, topic, user, up, reason);
}

static int events_all(const char *user, int online, int reason)
{
    return topic_events_all("", user, online, reason);
}

static int total_events(void)
{
    return na.n + nb.n + nc.n + nd.n;
}

/* ---- what Redis holds (a blocking connection of the test's own) -------- */

static redisContext *redis_connect(const char *url)
{
    redis_link_url u;
    char err[128];
    if (redis_link_parse_url(url, &u, err, sizeof err) != 0)
        return NULL;
    struct timeval timeout = { 5, 0 };
    redisContext *c = redisConnectWithTimeout(u.host, u.port, timeout);
    if (c && c->err) {
        redisFree(c);
        c = NULL;
    }
    return c;
}

/* An integer reply to a command on the case's key <prefix><key> (an
 * extra argument for commands that take one), or -1. */
static long long redis_int(const char *url, const char *cmd, const char *key, const char *extra)
{
    redisContext *c = redis_connect(url);
    if (!c)
        return -1;
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, key);
    redisReply *r = extra ? redisCommand(c, "%s %s %s", cmd, full, extra)
                          : redisCommand(c, "%s %s", cmd, full);
    long long n = -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        n = r->integer;
    else if (r && r->type == REDIS_REPLY_STRING)
        n = atoll(r->str);
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Node id's count of user's sessions (in topic, unless NULL) as Redis
 * holds it (0: no field). */
static long long topic_field(const char *url, const char *topic, const char *user,
                             const char *id)
{
    char key[400];
    if (topic)
        snprintf(key, sizeof key, "pr:%s:%s", user, topic);
    else
        snprintf(key, sizeof key, "pu:%s", user);
    long long n = redis_int(url, "HGET", key, id);
    return n < 0 ? 0 : n;
}

static long long field(const char *url, const char *user, const char *id)
{
    return topic_field(url, NULL, user, id);
}

static int is_member(const char *url, const char *set, const char *member)
{
    return (int)redis_int(url, "SISMEMBER", set, member);
}

/* Deletes every key of the case's prefix. */
static void delete_keys(const char *url)
{
    redisContext *c = redis_connect(url);
    if (!c)
        return;
    char pattern[128];
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    redisReply *r = redisCommand(c, "KEYS %s", pattern);
    if (r && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            freeReplyObject(redisCommand(c, "DEL %s", r->element[i]->str));
    freeReplyObject(r);
    redisFree(c);
}

static void new_case(void)
{
    memset(&na, 0, sizeof na);
    memset(&nb, 0, sizeof nb);
    memset(&nc, 0, sizeof nc);
    memset(&nd, 0, sizeof nd);
    snprintf(prefix, sizeof prefix, "sm:test:presence:%ld:%d:", (long)getpid(), ++case_number);
}

static void end_case(void)
{
    stop_node(&na);
    stop_node(&nb);
    stop_node(&nc);
    stop_node(&nd);
    delete_keys(fixture_url);
}

/* ---- options --------------------------------------------------------------- */

static void start_refuses_bad_options_with_the_reason(void)
{
    new_case();
    static const struct {
        const char *url, *id, *prefix;
        unsigned ttl, refresh, reap;
        const char *reason;
    } cases[] = {
        { "redis://127.0.0.1", "", "p:", 0, 0, 0, "node id" },
        { "redis://127.0.0.1", "a b", "p:", 0, 0, 0, "node id" },
        { "redis://127.0.0.1",
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "p:", 0, 0, 0,
          "node id" },
        { "redis://127.0.0.1", "a", "p p", 0, 0, 0, "prefix" },
        { "redis://127.0.0.1", "a", "p:", 9, 0, 0, "interval" },
        { "redis://127.0.0.1", "a", "p:", 0, 0, 600001, "interval" },
        { "redis://127.0.0.1", "a", "p:", 1000, 501, 0, "at most half" },
        { "redis://127.0.0.1", "a", "p:", 0, 4001, 0, "at most half" },
        { "http://127.0.0.1", "a", "p:", 0, 0, 0, "scheme" },
        { "redis://:secret@127.0.0.1:0", "a", "p:", 0, 0, 0, "port" },
        { "redis://127.0.0.1", "a", "p:", 0, 0, 0, "fingerprint" },
        { "redis://127.0.0.1", "a", "p:", 0, 0, 0, "fingerprint" },
        { "redis://127.0.0.1", "a", "p:", 0, 0, 0, "fingerprint" },
    };
    /* The last three: a space, a control character, one byte too many. */
    static char long_fingerprint[CLUSTER_PRESENCE_FINGERPRINT_MAX + 2];
    memset(long_fingerprint, 'f', sizeof long_fingerprint - 1);
    const char *const fingerprints[] = { "sha256:ab cd", "sha256:ab\x01", long_fingerprint };
    const size_t first_fingerprint = sizeof cases / sizeof cases[0] - 3;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cluster_presence_options o = { cases[i].url, cases[i].id, cases[i].prefix,
                                       cases[i].ttl, cases[i].refresh, cases[i].reap,
                                       i >= first_fingerprint
                                           ? fingerprints[i - first_fingerprint] : NULL };
        cluster_presence *p = (cluster_presence *)&o; /* must stay untouched */
        char err[256] = "";
        CU_ASSERT_EQUAL(cluster_presence_start(service_loop_ctx, &o, &handlers, NULL, &p, err,
                                               sizeof err), CLUSTER_PRESENCE_INVALID);
        if (!strstr(err, cases[i].reason))
            fprintf(stderr, "case %zu: expected '%s' in '%s'\n", i, cases[i].reason, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].reason));
        CU_ASSERT_PTR_NULL(strstr(err, "secret"));
        CU_ASSERT_PTR_EQUAL(p, (cluster_presence *)&o);
    }
    /* Defaults and the bounds themselves pass; an empty prefix too, and
     * an empty fingerprint (no check) or one of the longest. */
    long_fingerprint[CLUSTER_PRESENCE_FINGERPRINT_MAX] = '\0';
    cluster_presence_options ok = { fixture_url, "a", "", 20, 10, 600000, long_fingerprint };
    cluster_presence *p = NULL;
    char err[256];
    CU_ASSERT_EQUAL(cluster_presence_start(service_loop_ctx, &ok, NULL, NULL, &p, err, sizeof err),
                    0);
    cluster_presence_stop(p);
    ok.fingerprint = "";
    p = NULL;
    CU_ASSERT_EQUAL(cluster_presence_start(service_loop_ctx, &ok, NULL, NULL, &p, err, sizeof err),
                    0);
    cluster_presence_stop(p);
    cluster_presence_stop(NULL);
}

/* ---- counting -------------------------------------------------------------- */

static void first_and_last_sessions_are_reported_once_across_nodes(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(na.state_changes, 1);
    CU_ASSERT_EQUAL(total_events(), 0);

    /* First session anywhere: reported by the node that has it. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(events_of(&na, "alice", 1, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 1);
    /* More sessions, here and elsewhere, any case: nothing. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "Alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "ALICE"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 1);
    CU_ASSERT_EQUAL(cluster_presence_local_sessions(na.p, "alice"), 2);
    CU_ASSERT_EQUAL(cluster_presence_local_sessions(nb.p, "aLiCe"), 1);
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "a"), 2);
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "b"), 1);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nu:a", "pu:alice"), 1);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "a"), 1);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "b"), 1);
    long long ttl = redis_int(fixture_url, "PTTL", "node:a", NULL);
    CU_ASSERT(ttl > 0 && ttl <= SHORT_TTL_MS);

    /* a's sessions end: b still has one. */
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 1);
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "a"), 0);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nu:a", "pu:alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "alice"), CLUSTER_PRESENCE_INVALID);
    /* The last one anywhere: reported by b, once. */
    CU_ASSERT_EQUAL(cluster_presence_session_down(nb.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(events_of(&nb, "alice", 0, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 2);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pu:alice", NULL), 0);
    /* Again from b: first, then last, now both on b. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_down(nb.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(events_of(&nb, "alice", 1, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(events_of(&nb, "alice", 0, CLUSTER_PRESENCE_SESSION), 2);
    CU_ASSERT_EQUAL(total_events(), 4);

    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "not a name"), CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, ""), CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "nobody"), CLUSTER_PRESENCE_INVALID);
    cluster_presence_counters c;
    cluster_presence_get_counters(na.p, &c);
    CU_ASSERT_EQUAL(c.online, 1);
    CU_ASSERT_EQUAL(c.offline, 0);
    CU_ASSERT_EQUAL(c.users, 0);
    CU_ASSERT_EQUAL(c.registered, 1);
    CU_ASSERT_EQUAL(c.lost + c.not_sent, 0);
out:
    end_case();
}

/* Topics (rooms) counted as users are, apart from them: user_joined
 * and user_left once cluster-wide. */
static void first_and_last_members_of_a_topic_are_reported_once_across_nodes(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "ALICE"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "Alice"), 0);
    /* Topics compare exactly, and may hold ':'. */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "General", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "team:x", "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(topic_events_of(&na, "general", "alice", 1, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(topic_events_of(&na, "General", "alice", 1, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(topic_events_of(&nb, "team:x", "alice", 1, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 3);
    /* Not online for that: sessions are counted apart. */
    CU_ASSERT_EQUAL(events_all("alice", 1, 0), 0);
    CU_ASSERT_EQUAL(cluster_presence_local_members(na.p, "general", "alice"), 2);
    CU_ASSERT_EQUAL(cluster_presence_local_members(nb.p, "general", "alice"), 1);
    CU_ASSERT_EQUAL(cluster_presence_local_sessions(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(topic_field(fixture_url, "general", "alice", "a"), 2);
    CU_ASSERT_EQUAL(topic_field(fixture_url, "team:x", "alice", "b"), 1);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nu:b", "pr:alice:team:x"), 1);

    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(nb.p, "team:x", "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(topic_events_of(&nb, "team:x", "alice", 0, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 4); /* general: b still has her */
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(nb.p, "general", "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(topic_events_of(&nb, "general", "alice", 0, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 5);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pr:alice:general", NULL), 0);

    char long_topic[CLUSTER_PRESENCE_TOPIC_MAX + 2];
    memset(long_topic, 't', sizeof long_topic - 1);
    long_topic[sizeof long_topic - 1] = '\0';
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, long_topic, "alice"),
                    CLUSTER_PRESENCE_INVALID);
    long_topic[CLUSTER_PRESENCE_TOPIC_MAX] = '\0'; /* the longest */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, long_topic, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, long_topic, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "", "alice"), CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, NULL, "alice"), CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "a:b"),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "alice"),
                    CLUSTER_PRESENCE_INVALID);
    settle();
    CU_ASSERT_EQUAL(total_events(), 7);
    cluster_presence_counters c;
    cluster_presence_get_counters(na.p, &c);
    CU_ASSERT_EQUAL(c.joined, 3);
    CU_ASSERT_EQUAL(c.left, 1);
    CU_ASSERT_EQUAL(c.members, 1); /* alice in General */
    CU_ASSERT_EQUAL(c.online + c.offline, 0);
out:
    end_case();
}

/* Each of RACES users gets a first session on all three nodes in the
 * same turn of the loop, then loses them all the same way: three scripts
 * on three connections reach Redis together, and since Redis runs one
 * script at a time exactly one node reports each transition. (Which one
 * follows the order lws writes the connections in, not the order of the
 * calls; counting in several commands instead of one script, two nodes
 * could both see the other's field and neither report.) */
static void simultaneous_sessions_on_three_nodes_give_one_first_and_one_last(void)
{
    new_case();
    node *nodes[3] = { &na, &nb, &nc };
    if (start_node(&na, "a") || start_node(&nb, "b") || start_node(&nc, "c"))
        goto out;
    WAIT_FOR(all_up(&na, &nb, &nc, NULL), 5000);
    CU_ASSERT_FATAL(all_up(&na, &nb, &nc, NULL));
    char user[32];
    for (int i = 0; i < RACES; i++) {
        snprintf(user, sizeof user, "racer%d", i);
        for (int k = 0; k < 3; k++)
            CU_ASSERT_EQUAL(cluster_presence_session_up(nodes[(i + k) % 3]->p, user), 0);
    }
    settle();
    int first_by[3] = { 0, 0, 0 };
    for (int i = 0; i < RACES; i++) {
        snprintf(user, sizeof user, "racer%d", i);
        CU_ASSERT_EQUAL(events_all(user, 1, CLUSTER_PRESENCE_SESSION), 1);
        CU_ASSERT_EQUAL(events_all(user, 0, 0), 0);
        for (int k = 0; k < 3; k++)
            first_by[k] += events_of(nodes[k], user, 1, 0);
    }
    fprintf(stderr, "first sessions reported by a, b, c: %d, %d, %d\n", first_by[0],
            first_by[1], first_by[2]);
    CU_ASSERT_EQUAL(first_by[0] + first_by[1] + first_by[2], RACES);
    for (int i = 0; i < RACES; i++) {
        snprintf(user, sizeof user, "racer%d", i);
        for (int k = 0; k < 3; k++)
            CU_ASSERT_EQUAL(cluster_presence_session_down(nodes[(i + 2 * k) % 3]->p, user), 0);
    }
    settle();
    for (int i = 0; i < RACES; i++) {
        snprintf(user, sizeof user, "racer%d", i);
        CU_ASSERT_EQUAL(events_all(user, 0, CLUSTER_PRESENCE_SESSION), 1);
        char key[64];
        snprintf(key, sizeof key, "pu:%s", user);
        CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", key, NULL), 0);
    }
    CU_ASSERT_EQUAL(total_events(), 2 * RACES);
out:
    end_case();
}

/* ---- a node that dies ---------------------------------------------------- */

/* On the default intervals: the bound. */
static void a_dead_nodes_users_go_offline_and_leave_their_topics_once_within_15_s(void)
{
    new_case();
    if (start_node_with(&na, "a", fixture_url, 0, 0, 0)
        || start_node_with(&nb, "b", fixture_url, 0, 0, 0)
        || start_node_with(&nc, "c", fixture_url, 0, 0, 0))
        goto out;
    WAIT_FOR(all_up(&na, &nb, &nc, NULL), 5000);
    CU_ASSERT_FATAL(all_up(&na, &nb, &nc, NULL));
    /* carol and frank only on c, dave on b and c, erin on a. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(nc.p, "carol"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nc.p, "frank"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nc.p, "frank"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nc.p, "dave"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "dave"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "erin"), 0);
    /* carol in general only on c; dave in general on b and c. */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nc.p, "general", "carol"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nc.p, "general", "dave"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "dave"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 6);
    int before = total_events();

    /* c dies: its connections close, nothing is said to Redis. */
    stop_node(&nc);
    double died = service_loop_now();
    WAIT_FOR(events_all("carol", 0, 0) + events_all("frank", 0, 0)
                 + topic_events_all("general", "carol", 0, 0) == 3, 20000);
    double took = service_loop_now() - died;
    fprintf(stderr, "a dead node's users offline after %.2f s (key %d s, refresh %d s, reap "
            "every %d s)\n", took, CLUSTER_PRESENCE_ALIVE_TTL_MS / 1000,
            CLUSTER_PRESENCE_REFRESH_MS / 1000, CLUSTER_PRESENCE_REAP_INTERVAL_MS / 1000);
    CU_ASSERT(took <= 15.0);
    /* Not before its key could have expired: refreshed at most one
     * interval before it died. */
    CU_ASSERT(took >= (CLUSTER_PRESENCE_ALIVE_TTL_MS - CLUSTER_PRESENCE_REFRESH_MS) / 1000.0 - 0.2);
    /* Another round of reaping on both survivors: still once each, by
     * one of them, and dave (still on b) and erin never. */
    WAIT_FOR(0, CLUSTER_PRESENCE_REAP_INTERVAL_MS + 500);
    settle();
    CU_ASSERT_EQUAL(events_all("carol", 0, CLUSTER_PRESENCE_REAPED), 1);
    CU_ASSERT_EQUAL(events_all("frank", 0, CLUSTER_PRESENCE_REAPED), 1);
    CU_ASSERT_EQUAL(topic_events_all("general", "carol", 0, CLUSTER_PRESENCE_REAPED), 1);
    CU_ASSERT_EQUAL(total_events(), before + 3);
    CU_ASSERT_EQUAL(events_of(&na, "carol", 0, 0) + events_of(&na, "frank", 0, 0) == 2
                        || events_of(&nb, "carol", 0, 0) + events_of(&nb, "frank", 0, 0) == 2,
                    1);
    cluster_presence_counters ca, cb;
    cluster_presence_get_counters(na.p, &ca);
    cluster_presence_get_counters(nb.p, &cb);
    CU_ASSERT_EQUAL(ca.reaped_nodes + cb.reaped_nodes, 1);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "c"), 0);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "a"), 1);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "nu:c", NULL), 0);
    CU_ASSERT_EQUAL(field(fixture_url, "dave", "c"), 0);
    CU_ASSERT_EQUAL(field(fixture_url, "dave", "b"), 1);
    CU_ASSERT_EQUAL(topic_field(fixture_url, "general", "dave", "c"), 0);
    CU_ASSERT_EQUAL(topic_field(fixture_url, "general", "dave", "b"), 1);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pu:carol", NULL), 0);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pr:carol:general", NULL), 0);
    /* The survivors went on. */
    CU_ASSERT(all_up(&na, &nb, NULL));
    CU_ASSERT_EQUAL(na.state_changes + nb.state_changes, 2);
out:
    end_case();
}

/* ---- one id, one node -------------------------------------------------- */

static void a_node_id_in_use_is_refused_and_a_restart_waits_for_its_predecessor(void)
{
    new_case();
    if (start_node(&na, "a"))
        goto out;
    WAIT_FOR(is_up(&na), 5000);
    CU_ASSERT_FATAL(is_up(&na));
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(events_of(&na, "alice", 1, CLUSTER_PRESENCE_SESSION), 1);

    /* A second process with id a: it waits for the key to expire (it
     * may be its own crashed predecessor's), a refreshes it, so after
     * the wait (TTL + 2 refreshes) it is refused, for good. */
    if (start_node(&nb, "a"))
        goto out;
    WAIT_FOR(0, SHORT_TTL_MS / 2);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_DOWN);
    WAIT_FOR(nb.state == CLUSTER_PRESENCE_STATE_REFUSED, SHORT_TTL_MS + 3 * SHORT_REFRESH_MS + 2000);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_REFUSED);
    CU_ASSERT_EQUAL(nb.state_changes, 1);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_EQUAL(cluster_presence_leave(nb.p, NULL, NULL), CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_PTR_NOT_NULL(strstr(cluster_presence_status_text(CLUSTER_PRESENCE_REFUSED),
                                  "id is taken"));
    /* The first goes on, refreshing its key across several intervals. */
    WAIT_FOR(0, 3 * SHORT_REFRESH_MS);
    CU_ASSERT(is_up(&na));
    CU_ASSERT_EQUAL(na.state_changes, 1);
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "a"), 1);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pu:bob", NULL), 0);
    CU_ASSERT_EQUAL(nb.n, 0);
    stop_node(&nb);

    /* a crashes: restarted at once, the new instance finds the key alive
     * and waits; once it expired (nobody else runs, so nobody reaped it)
     * it registers and clears its predecessor's sessions: alice goes
     * offline, reported by it. */
    stop_node(&na);
    if (start_node(&nb, "a"))
        goto out;
    WAIT_FOR(0, SHORT_REFRESH_MS);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_DOWN);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "node:a", NULL), 1);
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "a"), 1);
    WAIT_FOR(is_up(&nb), SHORT_TTL_MS + 3 * SHORT_REFRESH_MS + 2000);
    CU_ASSERT(is_up(&nb));
    CU_ASSERT_EQUAL(nb.state_changes, 1);
    settle();
    CU_ASSERT_EQUAL(events_of(&nb, "alice", 0, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(nb.n, 1);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pu:alice", NULL), 0);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "nu:a", NULL), 0);
out:
    end_case();
}

/* The value of the case's key <prefix><key> as Redis holds it, into out
 * ("" when absent). */
static void redis_string(const char *url, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    redisContext *c = redis_connect(url);
    if (!c)
        return;
    redisReply *r = redisCommand(c, "GET %s%s", prefix, key);
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(out, len, "%s", r->str);
    freeReplyObject(r);
    redisFree(c);
}

/* Every node of a cluster serves the same server key: the first node
 * with a fingerprint stores it, a node with another is refused for good
 * (KEY_MISMATCH), one with the same, or with none, takes part. */
static void a_node_serving_another_key_is_refused_with_both_fingerprints(void)
{
    static const char fa[] = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    static const char fb[] = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
                             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    char stored[256];
    new_case();
    if (start_node_serving(&na, "a", fa))
        goto out;
    WAIT_FOR(is_up(&na), 5000);
    CU_ASSERT_FATAL(is_up(&na));
    redis_string(fixture_url, "fingerprint", stored, sizeof stored);
    CU_ASSERT_STRING_EQUAL(stored, fa);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "PTTL", "fingerprint", NULL), -1); /* no expiry */
    CU_ASSERT_PTR_NULL(cluster_presence_cluster_fingerprint(na.p));
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    settle();

    /* b serves another key: refused before it wrote anything. */
    if (start_node_serving(&nb, "b", fb))
        goto out;
    WAIT_FOR(nb.state == CLUSTER_PRESENCE_STATE_KEY_MISMATCH, 5000);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_KEY_MISMATCH);
    CU_ASSERT_EQUAL(nb.state_changes, 1);
    CU_ASSERT_EQUAL(cluster_presence_get_state(nb.p), CLUSTER_PRESENCE_STATE_KEY_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cluster_presence_cluster_fingerprint(nb.p));
    CU_ASSERT_STRING_EQUAL(cluster_presence_cluster_fingerprint(nb.p), fa);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "bob"),
                    CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "alice"), CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_EQUAL(cluster_presence_leave(nb.p, NULL, NULL), CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "node:b", NULL), 0);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "b"), 0);
    redis_string(fixture_url, "fingerprint", stored, sizeof stored);
    CU_ASSERT_STRING_EQUAL(stored, fa);
    /* It stays out across refresh intervals; a goes on. */
    WAIT_FOR(0, 3 * SHORT_REFRESH_MS);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_KEY_MISMATCH);
    CU_ASSERT_EQUAL(nb.state_changes, 1);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "pu:bob", NULL), 0);
    CU_ASSERT_EQUAL(nb.n, 0);
    CU_ASSERT(is_up(&na));
    stop_node(&nb);

    /* c serves a's key, d none: both take part. */
    if (start_node_serving(&nc, "c", fa) || start_node_serving(&nd, "d", NULL))
        goto out;
    WAIT_FOR(all_up(&nc, &nd, NULL), 5000);
    CU_ASSERT(all_up(&nc, &nd, NULL));
    CU_ASSERT_PTR_NULL(cluster_presence_cluster_fingerprint(nc.p));
    CU_ASSERT_EQUAL(cluster_presence_session_up(nc.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nd.p, "carol"), 0);
    settle();
    CU_ASSERT_EQUAL(field(fixture_url, "alice", "c"), 1);
    CU_ASSERT_EQUAL(field(fixture_url, "carol", "d"), 1);
    CU_ASSERT_EQUAL(events_all("alice", 1, 0), 1);
    CU_ASSERT_EQUAL(events_all("carol", 1, 0), 1);
    redis_string(fixture_url, "fingerprint", stored, sizeof stored);
    CU_ASSERT_STRING_EQUAL(stored, fa);
out:
    end_case();
}

/* Nodes without a fingerprint neither check nor store one. */
static void nodes_without_a_fingerprint_store_none(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "fingerprint", NULL), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(events_all("alice", 1, 0), 1);
    CU_ASSERT_PTR_NULL(cluster_presence_cluster_fingerprint(na.p));
out:
    end_case();
}

static void on_left(int status, void *arg)
{
    node *n = arg;
    n->left_status = 1 + status;
}

static void a_node_that_leaves_takes_its_sessions_with_it_at_once(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "alice"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 3);
    CU_ASSERT_EQUAL(cluster_presence_leave(na.p, on_left, &na), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "carol"), CLUSTER_PRESENCE_REFUSED);
    WAIT_FOR(na.left_status != 0, 3000);
    CU_ASSERT_EQUAL(na.left_status, 1 + CLUSTER_PRESENCE_OK);
    CU_ASSERT_EQUAL(events_of(&na, "alice", 0, CLUSTER_PRESENCE_LEFT), 1);
    CU_ASSERT_EQUAL(topic_events_of(&na, "general", "alice", 0, CLUSTER_PRESENCE_LEFT), 1);
    CU_ASSERT_EQUAL(total_events(), 5);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "node:a", NULL), 0);
    CU_ASSERT_EQUAL(is_member(fixture_url, "nodes", "a"), 0);
    CU_ASSERT_EQUAL(field(fixture_url, "bob", "b"), 1);
    CU_ASSERT_EQUAL(field(fixture_url, "bob", "a"), 0);
    CU_ASSERT_EQUAL(cluster_presence_leave(na.p, on_left, &na), CLUSTER_PRESENCE_REFUSED);
    stop_node(&na);
    /* The id is free at once. */
    if (start_node(&nc, "a"))
        goto out;
    WAIT_FOR(is_up(&nc), 5000);
    CU_ASSERT(is_up(&nc));
    /* Nothing more to reap, for anyone. */
    WAIT_FOR(0, SHORT_TTL_MS + 3 * SHORT_REAP_MS);
    settle();
    CU_ASSERT_EQUAL(total_events(), 5);
out:
    end_case();
}

/* A node whose key lapsed (an operator's DEL stands for a Redis or node
 * too slow for the TTL) registers again; if the other reaped it
 * meanwhile, its users' offline and online come in pairs. */
static void a_lapsed_node_registers_again_and_reports_in_pairs(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    settle();
    /* b reaps only after SHORT_TTL_MS registered: wait, so it can. */
    WAIT_FOR(0, SHORT_TTL_MS);
    for (int round = 0; round < 2; round++) {
        cluster_presence_counters before, after;
        cluster_presence_get_counters(na.p, &before);
        CU_ASSERT_EQUAL(redis_int(fixture_url, "DEL", "node:a", NULL), 1);
        WAIT_FOR((cluster_presence_get_counters(na.p, &after), after.registered)
                     > before.registered, 3 * SHORT_REFRESH_MS + 3000);
        CU_ASSERT(after.registered > before.registered);
        settle();
        CU_ASSERT(is_up(&na));
        CU_ASSERT_EQUAL(field(fixture_url, "alice", "a"), 1);
        CU_ASSERT_EQUAL(events_all("alice", 0, 0), events_all("alice", 1, 0) - 1);
    }
    fprintf(stderr, "lapsed twice: alice reported offline %d times (reaped before a came "
            "back)\n", events_all("alice", 0, 0));
out:
    end_case();
}

/* ---- Redis goes away -------------------------------------------------------- */

/* A private Redis, and nodes a and b on it, up; -1 (a failure noted)
 * otherwise. */
static int start_private_pair(unsigned ttl, unsigned refresh)
{
    if (private_redis_start(&priv, "presence") != 0) {
        CU_FAIL("cannot start a private redis-server");
        return -1;
    }
    return start_pair(priv.url, ttl, refresh);
}

static void calls_while_redis_is_down_are_counted_and_written_back_after_a_restart(void)
{
    new_case();
    if (start_private_pair(SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "lobby", "bob"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 3);

    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    WAIT_FOR(na.state == CLUSTER_PRESENCE_STATE_DOWN && nb.state == CLUSTER_PRESENCE_STATE_DOWN,
             5000);
    CU_ASSERT_EQUAL(na.state, CLUSTER_PRESENCE_STATE_DOWN);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_DOWN);
    /* Counted here, Redis told later. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "carol"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "alice"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "lobby", "carol"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_local_sessions(nb.p, "bob"), 2);
    CU_ASSERT_EQUAL(cluster_presence_local_members(na.p, "lobby", "carol"), 1);
    CU_ASSERT_EQUAL(cluster_presence_local_sessions(na.p, "alice"), 0);
    WAIT_FOR(0, 500); /* some failed attempts: no new report */
    CU_ASSERT_EQUAL(na.state_changes, 2);
    CU_ASSERT_EQUAL(nb.state_changes, 2);

    /* Back, empty (no persistence): both register again and write back
     * what they count. Redis knew nobody, so everyone with a session is
     * online again as Redis sees it (RESYNC); alice, gone meanwhile,
     * cannot be reported (the Redis that knew her is gone). */
    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    WAIT_FOR(all_up(&na, &nb, NULL), 10000);
    CU_ASSERT_FATAL(all_up(&na, &nb, NULL));
    settle();
    CU_ASSERT_EQUAL(na.state_changes, 3);
    CU_ASSERT_EQUAL(field(priv.url, "carol", "a"), 1);
    CU_ASSERT_EQUAL(field(priv.url, "bob", "b"), 2);
    CU_ASSERT_EQUAL(redis_int(priv.url, "EXISTS", "pu:alice", NULL), 0);
    CU_ASSERT_EQUAL(is_member(priv.url, "nu:a", "pu:carol"), 1);
    CU_ASSERT_EQUAL(is_member(priv.url, "nu:b", "pu:bob"), 1);
    CU_ASSERT_EQUAL(is_member(priv.url, "nodes", "a"), 1);
    CU_ASSERT_EQUAL(is_member(priv.url, "nodes", "b"), 1);
    CU_ASSERT(redis_int(priv.url, "PTTL", "node:a", NULL) > 0);
    CU_ASSERT_EQUAL(events_of(&na, "carol", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(events_of(&nb, "bob", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(topic_field(priv.url, "lobby", "bob", "b"), 1);
    CU_ASSERT_EQUAL(topic_field(priv.url, "lobby", "carol", "a"), 1);
    CU_ASSERT_EQUAL(is_member(priv.url, "nu:a", "pr:carol:lobby"), 1);
    CU_ASSERT_EQUAL(topic_events_of(&nb, "lobby", "bob", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(topic_events_of(&na, "lobby", "carol", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(total_events(), 7);
    /* And it goes on from there. */
    CU_ASSERT_EQUAL(cluster_presence_session_down(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_down(nb.p, "bob"), 0);
    settle();
    CU_ASSERT_EQUAL(events_of(&nb, "bob", 0, CLUSTER_PRESENCE_SESSION), 1);
    CU_ASSERT_EQUAL(total_events(), 8);
out:
    stop_node(&na);
    stop_node(&nb);
    private_redis_stop(&priv);
}

/* Redis frozen (SIGSTOP) long enough for the links to drop it, keeping
 * its data: what changed meanwhile is reported once it resumes, exactly
 * the changes and once each. The key lives longer than the freeze. */
static void changes_while_redis_is_frozen_are_reported_once_when_it_resumes(void)
{
    new_case();
    if (start_private_pair(30000, 1000) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "lobby", "bob"), 0);
    settle();
    CU_ASSERT_EQUAL(total_events(), 3);
    CU_ASSERT_EQUAL(is_member(priv.url, "tm:lobby", "bob"), 1);

    if (private_redis_freeze(&priv) != 0) {
        CU_FAIL("cannot SIGSTOP redis-server");
        goto out;
    }
    WAIT_FOR(na.state == CLUSTER_PRESENCE_STATE_DOWN && nb.state == CLUSTER_PRESENCE_STATE_DOWN,
             REDIS_LINK_DEAD_AFTER_MS + 2 * REDIS_LINK_PING_INTERVAL_MS + 3000);
    CU_ASSERT_EQUAL(na.state, CLUSTER_PRESENCE_STATE_DOWN);
    CU_ASSERT_EQUAL(nb.state, CLUSTER_PRESENCE_STATE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "alice"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_down(na.p, "bob"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "carol"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "carol"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_session_down(nb.p, "carol"), CLUSTER_PRESENCE_DOWN);
    /* bob leaves lobby, carol joins it: register moves the index. */
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(nb.p, "lobby", "bob"), CLUSTER_PRESENCE_DOWN);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "lobby", "carol"), CLUSTER_PRESENCE_DOWN);
    cluster_presence_counters c;
    cluster_presence_get_counters(nb.p, &c);
    CU_ASSERT_EQUAL(c.not_sent, 4);

    private_redis_thaw(&priv);
    WAIT_FOR(all_up(&na, &nb, NULL), 10000);
    CU_ASSERT_FATAL(all_up(&na, &nb, NULL));
    settle();
    /* alice left (a's last), carol came (b's first); bob still on b. */
    CU_ASSERT_EQUAL(events_of(&na, "alice", 0, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(events_of(&nb, "carol", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(topic_events_of(&nb, "lobby", "bob", 0, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(topic_events_of(&na, "lobby", "carol", 1, CLUSTER_PRESENCE_RESYNC), 1);
    CU_ASSERT_EQUAL(total_events(), 7);
    CU_ASSERT_EQUAL(is_member(priv.url, "tm:lobby", "bob"), 0);
    CU_ASSERT_EQUAL(is_member(priv.url, "tm:lobby", "carol"), 1);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCARD", "tm:lobby", NULL), 1);
    CU_ASSERT_EQUAL(field(priv.url, "carol", "b"), 1);
    CU_ASSERT_EQUAL(field(priv.url, "bob", "a"), 0);
    CU_ASSERT_EQUAL(field(priv.url, "bob", "b"), 1);
    CU_ASSERT_EQUAL(redis_int(priv.url, "EXISTS", "pu:alice", NULL), 0);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCARD", "nu:a", NULL), 1); /* pr:carol:lobby */
out:
    stop_node(&na);
    stop_node(&nb);
    private_redis_stop(&priv);
}

/* ---- queries ------------------------------------------------------------------ */

#define QUERY_USERS_MAX 8

/* What a query's done got: called counts its calls (exactly one is
 * expected), status and the answer as it was then. */
typedef struct answer {
    int called;
    int status;
    size_t n;
    int online[QUERY_USERS_MAX];
    char users[QUERY_USERS_MAX][CLUSTER_PRESENCE_USER_MAX + 1];
} answer;

static void on_online(int status, const int *online, size_t n, void *arg)
{
    answer *a = arg;
    a->called++;
    a->status = status;
    a->n = n;
    for (size_t i = 0; i < n && i < QUERY_USERS_MAX; i++)
        a->online[i] = online[i];
}

static void on_members(int status, const char *const *users, size_t n, void *arg)
{
    answer *a = arg;
    a->called++;
    a->status = status;
    a->n = n;
    for (size_t i = 0; i < n && i < QUERY_USERS_MAX; i++)
        snprintf(a->users[i], sizeof a->users[i], "%s", users[i]);
}

/* Asks n about users and waits for the answer (done once). */
static answer ask_online(const node *n, const char *const *users, size_t count)
{
    answer a;
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_online(n->p, users, count, on_online, &a), 0);
    WAIT_FOR(a.called, 5000);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.n, count);
    return a;
}

static answer ask_members(const node *n, const char *topic)
{
    answer a;
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_members(n->p, topic, on_members, &a), 0);
    WAIT_FOR(a.called, 5000);
    CU_ASSERT_EQUAL(a.called, 1);
    return a;
}

/* Times user is in an answer's members. */
static int listed(const answer *a, const char *user)
{
    int k = 0;
    for (size_t i = 0; i < a->n && i < QUERY_USERS_MAX; i++)
        k += strcmp(a->users[i], user) == 0;
    return k;
}

/* a's answer has exactly these members (NULL-terminated), each once. */
static int members_are(const answer *a, ...)
{
    va_list ap;
    size_t count = 0;
    int ok = a->status == CLUSTER_PRESENCE_OK;
    va_start(ap, a);
    for (const char *u = va_arg(ap, const char *); u; u = va_arg(ap, const char *), count++)
        ok = ok && listed(a, u) == 1;
    va_end(ap);
    if (!ok || a->n != count) {
        fprintf(stderr, "members (status %d):", a->status);
        for (size_t i = 0; i < a->n && i < QUERY_USERS_MAX; i++)
            fprintf(stderr, " %s", a->users[i]);
        fprintf(stderr, "\n");
    }
    return ok && a->n == count;
}

static void query_online_answers_from_either_node_until_a_dead_node_is_reaped(void)
{
    static const char *const users[] = { "alice", "BOB", "carol", "Dave" };
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    /* alice on a, bob on b, dave on both, carol nowhere. */
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "dave"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "dave"), 0);
    settle();
    node *nodes[2] = { &na, &nb };
    for (int k = 0; k < 2; k++) {
        answer a = ask_online(nodes[k], users, 4);
        CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_OK);
        CU_ASSERT(a.online[0] == 1 && a.online[1] == 1 && a.online[2] == 0 && a.online[3] == 1);
    }
    /* No user: answered at once. Bad arguments: done never runs. */
    answer a;
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, users, 0, on_online, &a), 0);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_OK);
    static const char *const bad[] = { "alice", "a:b" };
    static const char *const null_user[] = { "alice", NULL };
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, bad, 2, on_online, &a),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, null_user, 2, on_online, &a),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, NULL, 1, on_online, &a),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, users, 1, NULL, &a),
                    CLUSTER_PRESENCE_INVALID);
    settle();
    CU_ASSERT_EQUAL(a.called, 0);

    /* b dies: until reaped its users stay online (its fields count)... */
    stop_node(&nb);
    a = ask_online(&na, users, 4);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_OK);
    CU_ASSERT_EQUAL(a.online[1], 1);
    /* ...then bob is offline; dave, still on a, is not. */
    WAIT_FOR(events_of(&na, "bob", 0, CLUSTER_PRESENCE_REAPED) == 1,
             SHORT_TTL_MS + 4 * SHORT_REAP_MS + 3000);
    CU_ASSERT_EQUAL(events_of(&na, "bob", 0, CLUSTER_PRESENCE_REAPED), 1);
    a = ask_online(&na, users, 4);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_OK);
    CU_ASSERT(a.online[0] == 1 && a.online[1] == 0 && a.online[2] == 0 && a.online[3] == 1);

    /* Asked, then stopped before the reply: done runs within the stop,
     * with DOWN and a's own sessions. */
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, users, 4, on_online, &a), 0);
    CU_ASSERT_EQUAL(a.called, 0);
    stop_node(&na);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_DOWN);
    CU_ASSERT(a.online[0] == 1 && a.online[1] == 0 && a.online[2] == 0 && a.online[3] == 1);
out:
    end_case();
}

static void query_members_lists_each_member_of_a_topic_once_across_nodes(void)
{
    new_case();
    if (start_pair(fixture_url, SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    /* alice twice on a, bob on b, dave on both; erin joins and leaves;
     * frank elsewhere. */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "Alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "dave"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "DAVE"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "general", "erin"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "team:x", "frank"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(nb.p, "general", "erin"), 0);
    settle();
    answer a = ask_members(&na, "general");
    CU_ASSERT(members_are(&a, "alice", "bob", "dave", NULL));
    a = ask_members(&nb, "general");
    CU_ASSERT(members_are(&a, "alice", "bob", "dave", NULL));
    a = ask_members(&nb, "team:x");
    CU_ASSERT(members_are(&a, "frank", NULL));
    a = ask_members(&na, "General"); /* topics compare exactly */
    CU_ASSERT(members_are(&a, NULL));
    CU_ASSERT_EQUAL(redis_int(fixture_url, "SCARD", "tm:general", NULL), 3);
    CU_ASSERT_EQUAL(is_member(fixture_url, "tm:team:x", "frank"), 1);
    CU_ASSERT_EQUAL(cluster_presence_query_members(na.p, "", on_members, &a),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_query_members(na.p, NULL, on_members, &a),
                    CLUSTER_PRESENCE_INVALID);
    CU_ASSERT_EQUAL(cluster_presence_query_members(na.p, "general", NULL, &a),
                    CLUSTER_PRESENCE_INVALID);

    /* b dies and is reaped: bob goes, dave (on a) stays. */
    stop_node(&nb);
    WAIT_FOR(topic_events_of(&na, "general", "bob", 0, CLUSTER_PRESENCE_REAPED) == 1,
             SHORT_TTL_MS + 4 * SHORT_REAP_MS + 3000);
    CU_ASSERT_EQUAL(topic_events_of(&na, "general", "bob", 0, CLUSTER_PRESENCE_REAPED), 1);
    a = ask_members(&na, "general");
    CU_ASSERT(members_are(&a, "alice", "dave", NULL));
    CU_ASSERT_EQUAL(is_member(fixture_url, "tm:general", "bob"), 0);

    /* The last members leave: the index goes with them. */
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_leave(na.p, "general", "dave"), 0);
    settle();
    a = ask_members(&na, "general");
    CU_ASSERT(members_are(&a, NULL));
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "tm:general", NULL), 0);

    /* A node that leaves takes its members out of the index. */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "general", "gina"), 0);
    settle();
    CU_ASSERT_EQUAL(is_member(fixture_url, "tm:general", "gina"), 1);
    CU_ASSERT_EQUAL(cluster_presence_leave(na.p, on_left, &na), 0);
    WAIT_FOR(na.left_status != 0, 3000);
    CU_ASSERT_EQUAL(na.left_status, 1 + CLUSTER_PRESENCE_OK);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "tm:general", NULL), 0);
    CU_ASSERT_EQUAL(redis_int(fixture_url, "EXISTS", "tm:team:x", NULL), 0);
    /* Left: refused, answered from a's own counts at once. */
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_members(na.p, "team:x", on_members, &a), 0);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_REFUSED);
    CU_ASSERT(a.n == 1 && listed(&a, "frank") == 1);

    /* Asked, then stopped before the reply: DOWN and the local members. */
    if (start_node(&nc, "c"))
        goto out;
    WAIT_FOR(is_up(&nc), 5000);
    CU_ASSERT_FATAL(is_up(&nc));
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nc.p, "lobby", "hank"), 0);
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_members(nc.p, "lobby", on_members, &a), 0);
    CU_ASSERT_EQUAL(a.called, 0);
    stop_node(&nc);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_DOWN);
    CU_ASSERT(a.n == 1 && listed(&a, "hank") == 1);
out:
    end_case();
}

/* Redis stopped: both queries answer at once, DOWN, from the node's own
 * counts; back (empty), register rebuilds the index from every node's. */
static void queries_while_redis_is_down_answer_from_local_counts(void)
{
    static const char *const users[] = { "alice", "bob", "carol" };
    new_case();
    if (start_private_pair(SHORT_TTL_MS, SHORT_REFRESH_MS) != 0)
        goto out;
    CU_ASSERT_EQUAL(cluster_presence_session_up(na.p, "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_session_up(nb.p, "bob"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(na.p, "lobby", "alice"), 0);
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "lobby", "bob"), 0);
    settle();
    answer a = ask_members(&na, "lobby");
    CU_ASSERT(members_are(&a, "alice", "bob", NULL));

    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    WAIT_FOR(na.state == CLUSTER_PRESENCE_STATE_DOWN && nb.state == CLUSTER_PRESENCE_STATE_DOWN,
             5000);
    CU_ASSERT_FATAL(na.state == CLUSTER_PRESENCE_STATE_DOWN);
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_online(na.p, users, 3, on_online, &a), 0);
    CU_ASSERT_EQUAL(a.called, 1); /* before it returned */
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_DOWN);
    CU_ASSERT(a.online[0] == 1 && a.online[1] == 0 && a.online[2] == 0);
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_members(nb.p, "lobby", on_members, &a), 0);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_DOWN);
    CU_ASSERT(a.n == 1 && listed(&a, "bob") == 1);
    /* A member who came meanwhile is counted here, so listed here. */
    CU_ASSERT_EQUAL(cluster_presence_topic_join(nb.p, "lobby", "carol"),
                    CLUSTER_PRESENCE_DOWN);
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(cluster_presence_query_members(nb.p, "lobby", on_members, &a), 0);
    CU_ASSERT_EQUAL(a.called, 1);
    CU_ASSERT(a.n == 2 && listed(&a, "bob") == 1 && listed(&a, "carol") == 1);

    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    WAIT_FOR(all_up(&na, &nb, NULL), 10000);
    CU_ASSERT_FATAL(all_up(&na, &nb, NULL));
    settle();
    a = ask_members(&na, "lobby");
    CU_ASSERT(members_are(&a, "alice", "bob", "carol", NULL));
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCARD", "tm:lobby", NULL), 3);
    a = ask_online(&na, users, 3);
    CU_ASSERT_EQUAL(a.status, CLUSTER_PRESENCE_OK);
    CU_ASSERT(a.online[0] == 1 && a.online[1] == 1 && a.online[2] == 0);
out:
    stop_node(&na);
    stop_node(&nb);
    private_redis_stop(&priv);
}

/* ---- the suite ------------------------------------------------------------ */

static int suite_init(void)
{
    if (service_url_read("SM_TEST_REDIS_URL_FILE", fixture_url, sizeof fixture_url) != 0)
        return -1;
    return service_loop_init();
}

static int suite_cleanup(void)
{
    private_redis_stop(&priv); /* a failed assertion left a case early */
    end_case();
    service_loop_cleanup();
    return 0;
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(start_refuses_bad_options_with_the_reason),
        SM_TEST(first_and_last_sessions_are_reported_once_across_nodes),
        SM_TEST(first_and_last_members_of_a_topic_are_reported_once_across_nodes),
        SM_TEST(simultaneous_sessions_on_three_nodes_give_one_first_and_one_last),
        SM_TEST(a_node_id_in_use_is_refused_and_a_restart_waits_for_its_predecessor),
        SM_TEST(a_node_serving_another_key_is_refused_with_both_fingerprints),
        SM_TEST(nodes_without_a_fingerprint_store_none),
        SM_TEST(a_node_that_leaves_takes_its_sessions_with_it_at_once),
        SM_TEST(a_lapsed_node_registers_again_and_reports_in_pairs),
        SM_TEST(a_dead_nodes_users_go_offline_and_leave_their_topics_once_within_15_s),
        SM_TEST(calls_while_redis_is_down_are_counted_and_written_back_after_a_restart),
        SM_TEST(changes_while_redis_is_frozen_are_reported_once_when_it_resumes),
        SM_TEST(query_online_answers_from_either_node_until_a_dead_node_is_reaped),
        SM_TEST(query_members_lists_each_member_of_a_topic_once_across_nodes),
        SM_TEST(queries_while_redis_is_down_answer_from_local_counts),
        SM_TEST_END,
    };
    return sm_test_run("services.cluster_presence", tests, suite_init, suite_cleanup);
}
