/* Cluster mode (issue 14) end to end: two real servers, nodes "a" and
 * "b", on one server key, one PostgreSQL schema and one Redis
 * (harness_cluster.h), with clients spread over both. What a user sees
 * must not depend on which node their peers reached: room messages and
 * user_joined / user_left, private messages (online and stored), read
 * receipts, friend requests and presence, each exactly once, also for a
 * user logged in on both nodes at once; and a node that dies takes its
 * users offline for the others. What a node counts or lists covers the
 * whole cluster too: auth's failed-login and registration limits, room
 * listings (list_rooms, get_users, join_room), the cluster metrics. A node
 * with another server key is refused.
 *
 * Every case starts a cluster of its own (a new schema and a new key
 * prefix: no state leaks between cases) on the suite's private Redis
 * (tests/services/private_redis.c, started by init and always stopped).
 * Until the server understands the `cluster` section every case fails at
 * its start, with the node's log tail showing the refusal.
 *
 * "Exactly once": the event arrives within WAIT_MS and no second one
 * within QUIET_MS after it; "never": none within QUIET_MS (events about a
 * remote user cross Redis, so a round trip to one node proves nothing).
 * Events arrive interleaved across nodes in any order, so each client
 * keeps what it read but was not looking for (struct peer's inbox) and
 * every expectation looks there first. PINGs are answered (auto_pong). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "harness_cluster.h"
#include "private_redis.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"
#define WAIT_MS 5000       /* for an event that must come */
#define QUIET_MS 300       /* for one that must not (a duplicate, a wrong recipient) */
#define REAP_WAIT_MS 20000 /* for a dead node's users to go offline (issue 14: 15 s) */
#define KILL_OFFLINE_MS 15000     /* issue 14's bound on that, checked after the wait */
#define REDIS_DOWN_WAIT_MS 5000   /* for a node to notice Redis went (its connection closes) */
#define RECONNECT_WAIT_MS 10000   /* for a node back on Redis (redis_link backs off to 5 s) */
#define OUTAGE_MS 6500            /* a Redis outage long enough for that backoff to reach 5 s */
#define INBOX_MAX 256

#define PLUGINS                                                                              \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"                                              \
    " load = [\"auth\", \"rooms\", \"messaging\", \"friends\"]; };\n"
/* Cheap hashes: the suites' many registrations and logins. */
#define WEAK_ARGON2 "allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"
#define CONFIG PLUGINS "auth = { " WEAK_ARGON2 "         registrations_per_hour = 1000; };\n"
/* auth_limits_count_every_node: limits a few attempts reach. Per address
 * below per user, as auth requires; the window long enough for a slow
 * run. */
#define LIMITS_CONFIG                                                                        \
    PLUGINS "auth = { " WEAK_ARGON2 "         failed_logins = 2; failed_logins_per_user = 3;"  \
            " failed_login_window = 600;\n         registrations_per_hour = 3; };\n"
#define SHARE_WAIT_MS 2000    /* for a node to count another's attempt (a Redis round trip) */
#define OTHER_KEY_EXIT_MS 15000 /* for a node with another key to give up */

static private_redis redis;
static harness_cluster cl;
static harness_server odd; /* a_node_with_another_key_is_refused's third node */
static int redis_is_down; /* a case stopped it (private_redis_down) and has not started it */

static int init(void)
{
    return private_redis_start(&redis, "it-cluster");
}

static int fini(void)
{
    /* A case that ended on a fatal assertion left its nodes running. */
    int rc = harness_cluster_cleanup(&cl);
    if (harness_cleanup(&odd) != 0)
        rc = -1;
    private_redis_stop(&redis);
    return rc;
}

/* The case's cluster: nodes a (cl.node[0]) and b (cl.node[1]), with
 * config as every node's extra configuration. */
static void up_with(const char *config)
{
    harness_cluster_cleanup(&cl); /* what a failed case left */
    harness_cleanup(&odd);
    if (redis_is_down) {          /* a failed case's outage */
        CU_ASSERT_EQUAL_FATAL(private_redis_up(&redis), 0);
        redis_is_down = 0;
    }
    if (harness_cluster_start(&cl, 2, redis.url, config) != 0) {
        harness_cluster_cleanup(&cl);
        CU_FAIL_FATAL("the two nodes did not start in cluster mode (reason and server.log "
                      "above; a server without issue 14's wiring refuses the cluster section)");
    }
}

static void up(void)
{
    up_with(CONFIG);
}

static void down(void)
{
    CU_ASSERT_EQUAL(harness_cluster_cleanup(&cl), 0);
}

#define NODE_A (&cl.node[0])
#define NODE_B (&cl.node[1])

/* ---- clients ------------------------------------------------------------ */

/* A client and the events it read that no expectation took yet. */
typedef struct peer {
    sm_client *c;
    char label[64]; /* "alice@a", for messages */
    sm_message *inbox[INBOX_MAX];
    size_t n;
} peer;

/* The line of the case's expectation being checked, for the messages:
 * CUnit's own point into the helpers. Set by the macros below. */
static int line_;

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static json_int_t jint(const json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static const char *node_name(const harness_server *node)
{
    return node == NODE_A ? "a" : node == NODE_B ? "b" : "?";
}

/* A connection to node from the loopback address source (NULL: the
 * kernel's choice, 127.0.0.1), handshaken, answering PINGs; not logged
 * in. */
static peer *connected_from(const harness_server *node, const char *name, const char *source)
{
    peer *p = calloc(1, sizeof *p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    snprintf(p->label, sizeof p->label, "%s@%s", name, node_name(node));
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.auto_pong = 1;
    o.source_address = source;
    if (harness_connect_opts(node, &o, &p->c) != SM_CLIENT_OK) {
        free(p);
        CU_FAIL_FATAL("cannot connect to a node");
    }
    return p;
}

static peer *connected(const harness_server *node, const char *name)
{
    return connected_from(node, name, NULL);
}

/* A new connection to node logged in as name (registered first when reg). */
static peer *user(const harness_server *node, const char *name, int reg)
{
    peer *p = connected(node, name);
    sm_message *r = harness_callf(p->c, reg ? "register" : "login", "{s:s, s:s}", "username",
                                  name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    if (strcmp(r->type, "response") != 0)
        fprintf(stderr, "%s: %s got error %d\n", p->label, reg ? "register" : "login",
                harness_error_code(r));
    CU_ASSERT_STRING_EQUAL(r->action, reg ? "registration_success" : "login_success");
    sm_message_free(r);
    return p;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void drop_inbox(peer *p)
{
    for (size_t i = 0; i < p->n; i++)
        sm_message_free(p->inbox[i]);
    p->n = 0;
}

/* Closes politely (close frame 1000) or abruptly (no frame, no logout). */
static void bye(peer *p, int abrupt)
{
    if (!p)
        return;
    if (abrupt)
        sm_client_free(p->c);
    else
        sm_client_close(p->c, 1000);
    drop_inbox(p);
    free(p);
}

/* Whether m is the event action with payload f1 == v1 and f2 == v2
 * (strings; a NULL field is not checked). */
static int matches(const sm_message *m, const char *action, const char *f1, const char *v1,
                   const char *f2, const char *v2)
{
    return strcmp(m->action, action) == 0 &&
           (!f1 || strcmp(jstr(m->payload, f1), v1) == 0) &&
           (!f2 || strcmp(jstr(m->payload, f2), v2) == 0);
}

/* The first matching event: from the inbox, else read within timeout_ms
 * (what else arrives meanwhile goes to the inbox). NULL when none came. */
static sm_message *take(peer *p, int timeout_ms, const char *action, const char *f1,
                        const char *v1, const char *f2, const char *v2)
{
    for (size_t i = 0; i < p->n; i++) {
        if (matches(p->inbox[i], action, f1, v1, f2, v2)) {
            sm_message *m = p->inbox[i];
            memmove(&p->inbox[i], &p->inbox[i + 1], (p->n - i - 1) * sizeof *p->inbox);
            p->n--;
            return m;
        }
    }
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        sm_message *m = NULL;
        int rc = sm_client_next_event(p->c, left > 0 ? (int)left : 0, &m);
        if (rc != SM_CLIENT_OK) {
            if (rc != SM_CLIENT_TIMEOUT)
                fprintf(stderr, "%s: reading events failed (%d), close code %d\n", p->label, rc,
                        sm_client_close_code(p->c));
            return NULL;
        }
        if (matches(m, action, f1, v1, f2, v2))
            return m;
        if (p->n == INBOX_MAX) { /* the oldest unwanted one goes */
            sm_message_free(p->inbox[0]);
            memmove(&p->inbox[0], &p->inbox[1], (INBOX_MAX - 1) * sizeof *p->inbox);
            p->n--;
        }
        p->inbox[p->n++] = m;
    }
}

static void describe(const peer *p, const char *what, const char *action, const char *f1,
                     const char *v1, const char *f2, const char *v2)
{
    fprintf(stderr, "\nline %d: %s: %s %s {%s: %s%s%s%s%s}\n", line_, p->label, what, action,
            f1 ? f1 : "",
            f1 ? v1 : "", f2 ? ", " : "", f2 ? f2 : "", f2 ? ": " : "", f2 ? v2 : "");
}

/* The event comes within wait_ms and no second one within QUIET_MS;
 * returns it (the caller frees) or NULL. */
static sm_message *once_within_(peer *p, int wait_ms, const char *action, const char *f1,
                               const char *v1, const char *f2, const char *v2)
{
    sm_message *m = take(p, wait_ms, action, f1, v1, f2, v2);
    if (!m)
        describe(p, "no", action, f1, v1, f2, v2);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (!m)
        return NULL;
    sm_message *dup = take(p, QUIET_MS, action, f1, v1, f2, v2);
    if (dup)
        describe(p, "a second", action, f1, v1, f2, v2);
    CU_ASSERT_PTR_NULL(dup);
    sm_message_free(dup);
    return m;
}

static sm_message *once_(peer *p, const char *action, const char *f1, const char *v1,
                        const char *f2, const char *v2)
{
    return once_within_(p, WAIT_MS, action, f1, v1, f2, v2);
}

/* once_(), the message itself not needed. */
static void expect_once_(peer *p, const char *action, const char *f1, const char *v1,
                        const char *f2, const char *v2)
{
    sm_message_free(once_(p, action, f1, v1, f2, v2));
}

/* No such event within QUIET_MS (nor one read earlier). */
static void expect_none_(peer *p, const char *action, const char *f1, const char *v1,
                        const char *f2, const char *v2)
{
    sm_message *m = take(p, QUIET_MS, action, f1, v1, f2, v2);
    if (m)
        describe(p, "an unexpected", action, f1, v1, f2, v2);
    CU_ASSERT_PTR_NULL(m);
    sm_message_free(m);
}

/* A command answered with a response whose action is reply; returns it. */
static sm_message *call_ok(peer *p, const char *action, const char *reply, const char *fmt,
                           const char *key, const char *value)
{
    sm_message *r = fmt ? harness_callf(p->c, action, fmt, key, value)
                        : harness_callf(p->c, action, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    if (strcmp(r->type, "response") != 0)
        fprintf(stderr, "%s: %s got error %d\n", p->label, action, harness_error_code(r));
    CU_ASSERT_STRING_EQUAL(r->type, "response");
    CU_ASSERT_STRING_EQUAL(r->action, reply);
    return r;
}

static void call_ok_free(peer *p, const char *action, const char *reply, const char *fmt,
                         const char *key, const char *value)
{
    sm_message_free(call_ok(p, action, reply, fmt, key, value));
}

/* private_message to `to`; returns message_delivered's message_id after
 * checking its online flag (ONLINE_EITHER: not checked, for a recipient
 * whose node died and whose presence is not reaped yet). */
#define ONLINE_EITHER (-1)
static json_int_t send_pm_(peer *p, const char *to, const char *content, int online)
{
    sm_message *r = harness_callf(p->c, "private_message", "{s:s, s:s, s:b}", "recipient", to,
                                  "content", content, "encrypted", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "message_delivered");
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "recipient"), to);
    int got = json_is_true(json_object_get(r->payload, "online"));
    if (online != ONLINE_EITHER && got != online)
        fprintf(stderr, "\nline %d: %s: message_delivered.online for %s is not %s\n", line_,
                p->label, to, online ? "true" : "false");
    CU_ASSERT_TRUE(online == ONLINE_EITHER || got == online);
    json_int_t id = jint(r->payload, "message_id");
    CU_ASSERT_TRUE(id > 0);
    sm_message_free(r);
    return id;
}

/* The private_message event for content reaches p once, from `from`. */
static void expect_pm_(peer *p, const char *from, const char *to, const char *content,
                      json_int_t id)
{
    sm_message *ev = once_(p, "private_message", "content", content, NULL, NULL);
    if (ev) {
        CU_ASSERT_EQUAL(jint(ev->payload, "id"), id);
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "sender"), from);
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "recipient"), to);
    }
    sm_message_free(ev);
}

/* get_friends_list as "name:1,name:0" equals expected. */
static void expect_friends_(peer *p, const char *expected)
{
    sm_message *r = call_ok(p, "get_friends_list", "friends_list", NULL, NULL, NULL);
    char got[256] = "";
    size_t len = 0, i;
    json_t *item;
    json_array_foreach(json_object_get(r->payload, "friends"), i, item) {
        int n = snprintf(got + len, sizeof got - len, "%s%s:%d", i ? "," : "",
                         jstr(item, "username"), json_is_true(json_object_get(item, "online")));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    if (strcmp(got, expected) != 0)
        fprintf(stderr, "\nline %d: %s: friends \"%s\", expected \"%s\"\n", line_, p->label, got,
                expected);
    CU_ASSERT_STRING_EQUAL(got, expected);
    sm_message_free(r);
}

/* A listing's room and users (get_users, join_room) are room and exactly
 * "u1,u2" (as the server sorts them). */
static void expect_listing_(const peer *p, const sm_message *r, const char *room,
                            const char *expected)
{
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), room);
    char got[256] = "";
    size_t len = 0, i;
    json_t *item;
    json_array_foreach(json_object_get(r->payload, "users"), i, item) {
        int n = snprintf(got + len, sizeof got - len, "%s%s", i ? "," : "",
                         json_string_value(item) ? json_string_value(item) : "<none>");
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    if (strcmp(got, expected) != 0)
        fprintf(stderr, "\nline %d: %s: %s lists users of %s \"%s\", expected \"%s\"\n", line_,
                p->label, r->action, room, got, expected);
    CU_ASSERT_STRING_EQUAL(got, expected);
}

/* get_users lists exactly "u1,u2" (as the server sorts them). */
static void expect_users_(peer *p, const char *room, const char *expected)
{
    sm_message *r = call_ok(p, "get_users", "get_users", NULL, NULL, NULL);
    expect_listing_(p, r, room, expected);
    sm_message_free(r);
}

/* join_room room: its listing is exactly "u1,u2". */
static void expect_join_(peer *p, const char *room, const char *expected)
{
    sm_message *r = call_ok(p, "join_room", "join_room", "{s:s}", "room_name", room);
    expect_listing_(p, r, room, expected);
    sm_message_free(r);
}

/* alice registered on node a and bob on node b: registration puts both in
 * general, and bob's arrival there reaches alice once (taken here). */
static void alice_and_bob_(peer **alice, peer **bob)
{
    *alice = user(NODE_A, "alice", 1);
    *bob = user(NODE_B, "bob", 1);
    expect_once_(*alice, "user_joined", "username", "bob", "room", "general");
}

/* request on from's node, accept on to's, with the events across. */
static void befriend_(peer *from, const char *from_name, peer *to, const char *to_name)
{
    call_ok_free(from, "send_friend_request", "friend_request_response", "{s:s}",
                 "friend_username", to_name);
    expect_once_(to, "friend_request", "from", from_name, NULL, NULL);
    call_ok_free(to, "accept_friend_request", "friend_request_accept_response", "{s:s}",
                 "friend_username", from_name);
    expect_once_(from, "friend_request_accepted", "friend_username", to_name, NULL, NULL);
}

/* alice and carol, both on one node, at step `tag`: a room message from
 * each (they share general: each reaches both once) and a private
 * message each way (online, once): what happens to another node or to
 * Redis must not disturb sessions that share a node. */
static void chat_(peer *alice, peer *carol, const char *tag)
{
    char room_a[96], room_c[96], pm_a[96], pm_c[96];
    snprintf(room_a, sizeof room_a, "room from alice, %s", tag);
    snprintf(room_c, sizeof room_c, "room from carol, %s", tag);
    snprintf(pm_a, sizeof pm_a, "alice to carol, %s", tag);
    snprintf(pm_c, sizeof pm_c, "carol to alice, %s", tag);
    call_ok_free(alice, "public_message", "public_message", "{s:s}", "content", room_a);
    call_ok_free(carol, "public_message", "public_message", "{s:s}", "content", room_c);
    peer *both[2] = {alice, carol};
    for (int i = 0; i < 2; i++) {
        expect_once_(both[i], "public_message", "content", room_a, "sender", "alice");
        expect_once_(both[i], "public_message", "content", room_c, "sender", "carol");
    }
    json_int_t id = send_pm_(alice, "carol", pm_a, 1);
    expect_pm_(carol, "alice", "carol", pm_a, id);
    id = send_pm_(carol, "alice", pm_c, 1);
    expect_pm_(alice, "carol", "alice", pm_c, id);
}

/* A private message as its sender's message_delivered acknowledged it. */
typedef struct sent_pm {
    json_int_t id;
    const char *content;
} sent_pm;

/* A new connection to node logging in as name: login_success's
 * unread_count is n and get_unread_messages lists exactly those of sent
 * (in any order), each from `from` with its content. Returns the
 * logged-in peer. */
static peer *login_unread_(const harness_server *node, const char *name, const char *from,
                           const sent_pm *sent, size_t n)
{
    peer *p = connected(node, name);
    sm_message *r = harness_callf(p->c, "login", "{s:s, s:s}", "username", name, "password",
                                  PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL_FATAL(r->action, "login_success");
    if (jint(r->payload, "unread_count") != (json_int_t)n)
        fprintf(stderr, "\nline %d: %s: login_success.unread_count %lld, expected %zu\n", line_,
                p->label, (long long)jint(r->payload, "unread_count"), n);
    CU_ASSERT_EQUAL(jint(r->payload, "unread_count"), (json_int_t)n);
    sm_message_free(r);

    r = call_ok(p, "get_unread_messages", "unread_messages", NULL, NULL, NULL);
    json_t *list = json_object_get(r->payload, "messages");
    CU_ASSERT_EQUAL(json_array_size(list), n);
    for (size_t k = 0; k < n; k++) {
        size_t i;
        json_t *item, *found = NULL;
        json_array_foreach(list, i, item) {
            if (jint(item, "id") == sent[k].id)
                found = item;
        }
        if (!found)
            fprintf(stderr, "\nline %d: %s: message %lld (\"%s\"), acknowledged to %s, is not "
                            "among the unread\n",
                    line_, p->label, (long long)sent[k].id, sent[k].content, from);
        CU_ASSERT_PTR_NOT_NULL(found);
        if (found) {
            CU_ASSERT_STRING_EQUAL(jstr(found, "sender"), from);
            CU_ASSERT_STRING_EQUAL(jstr(found, "content"), sent[k].content);
        }
    }
    sm_message_free(r);
    return p;
}

/* Waits until server.log has more than `before` lines with needle, up to
 * the deadline (now_ms()); 1 when it did, else 0 (with a message). */
static int log_grows_(const harness_server *node, const char *needle, int before,
                      long long deadline)
{
    for (;;) {
        int n = harness_log_count(node, needle);
        if (n > before)
            return 1;
        if (n < 0 || now_ms() >= deadline) {
            fprintf(stderr, "\nline %d: node %s: no new \"%s\" in its log (%d before, %d now)\n",
                    line_, node_name(node), needle, before, n);
            return 0;
        }
        sleep_ms(50);
    }
}

/* ---- auth's limits ------------------------------------------------------- */

/* What r is: 0 for a response, its error code for an error, -1 for no
 * reply. */
static int outcome(const sm_message *r)
{
    if (!r)
        return -1;
    return strcmp(r->type, "response") == 0 ? 0 : harness_error_code(r);
}

/* One register or login (action) as name with password on a new
 * connection to node from the loopback address source; its reply (NULL:
 * none; the caller frees), the connection closed. */
static sm_message *attempt(const harness_server *node, const char *source, const char *action,
                           const char *name, const char *password)
{
    peer *p = connected_from(node, name, source);
    sm_message *r = harness_callf(p->c, action, "{s:s, s:s}", "username", name, "password",
                                  password);
    bye(p, 0);
    return r;
}

/* The attempt is refused: error 1008 with a retry_after of a second or
 * more. While its outcome (outcome()) is `pending`, what it is until node
 * has counted the other node's attempts, it is repeated every 50 ms for up
 * to SHARE_WAIT_MS; ONCE: never. A repeated attempt must not count itself
 * (a successful login, a malformed registration), or node would reach the
 * limit on its own and hide that nothing was shared. */
#define ONCE (-2)
static void expect_refused_(const harness_server *node, const char *source, const char *action,
                            const char *name, const char *password, int pending)
{
    long long start = now_ms();
    int tries = 0;
    sm_message *r;
    for (;;) {
        r = attempt(node, source, action, name, password);
        tries++;
        if (outcome(r) != pending || now_ms() - start >= SHARE_WAIT_MS)
            break;
        sm_message_free(r);
        sleep_ms(50);
    }
    json_t *after = r ? json_object_get(r->payload, "retry_after") : NULL;
    if (outcome(r) != 1008)
        fprintf(stderr, "\nline %d: node %s: %s as %s from %s got %d (0: success, else the "
                        "error code) after %d tries in %lld ms, not 1008: the other node's "
                        "attempts were not counted here\n",
                line_, node_name(node), action, name, source, outcome(r), tries,
                now_ms() - start);
    CU_ASSERT_EQUAL(outcome(r), 1008);
    CU_ASSERT_TRUE(outcome(r) != 1008 ||
                   (json_is_integer(after) && json_integer_value(after) >= 1));
    sm_message_free(r);
}

/* One attempt whose outcome is `expected` (0: success). */
static void expect_outcome_(const harness_server *node, const char *source, const char *action,
                            const char *name, const char *password, int expected)
{
    sm_message *r = attempt(node, source, action, name, password);
    if (outcome(r) != expected)
        fprintf(stderr, "\nline %d: node %s: %s as %s from %s got %d, expected %d (0: success)\n",
                line_, node_name(node), action, name, source, outcome(r), expected);
    CU_ASSERT_EQUAL(outcome(r), expected);
    sm_message_free(r);
}

/* ---- metrics ------------------------------------------------------------- */

/* node's GET /metrics, the whole response (malloc'd), NULL when none. */
static char *page_of(const harness_server *node)
{
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n";
    return harness_http_exchange(node->port, NULL, req, sizeof req - 1, 5000, NULL);
}

/* The value of series (its name and labels as on the page) on node's
 * page; NAN when the page or the series is missing. */
static double metric_of(const harness_server *node, const char *series)
{
    char *page = page_of(node), needle[256];
    snprintf(needle, sizeof needle, "\n%s ", series);
    const char *at = page ? strstr(page, needle) : NULL;
    double v = at ? strtod(at + strlen(needle), NULL) : NAN;
    free(page);
    return v;
}

/* Polls series on node every 50 ms, up to WAIT_MS, until its value is
 * want (at_least: want or more). 1 when it got there, else 0 with the
 * last value. */
static int metric_reaches_(const harness_server *node, const char *series, double want,
                           int at_least)
{
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        double v = metric_of(node, series);
        if (at_least ? v >= want : v == want) /* NAN is neither */
            return 1;
        if (now_ms() >= deadline) {
            fprintf(stderr, "\nline %d: node %s: %s is %g, expected %s%g within %d ms\n",
                    line_, node_name(node), series, v, at_least ? "at least " : "", want,
                    WAIT_MS);
            return 0;
        }
        sleep_ms(50);
    }
}

/* ---- list_rooms ------------------------------------------------------------ */

/* list_rooms on p's node counts want users in room: polled every 50 ms up
 * to WAIT_MS (the counts come from every node through Redis). 1 when it
 * did, else 0 with the last count. */
static int room_count_reaches_(peer *p, const char *room, json_int_t want)
{
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        sm_message *r = call_ok(p, "list_rooms", "list_rooms", NULL, NULL, NULL);
        json_int_t got = -1;
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(r->payload, "rooms"), i, item) {
            if (strcmp(jstr(item, "room"), room) == 0)
                got = jint(item, "users");
        }
        sm_message_free(r);
        if (got == want)
            return 1;
        if (now_ms() >= deadline) {
            fprintf(stderr, "\nline %d: %s: list_rooms counts %lld users in %s (-1: not "
                            "listed), expected %lld within %d ms\n",
                    line_, p->label, (long long)got, room, (long long)want, WAIT_MS);
            return 0;
        }
        sleep_ms(50);
    }
}

/* The helpers as the cases call them, noting the case's line. */
#define AT(call) (line_ = __LINE__, call)
#define once_within(...) AT(once_within_(__VA_ARGS__))
#define once(...) AT(once_(__VA_ARGS__))
#define expect_once(...) AT(expect_once_(__VA_ARGS__))
#define expect_none(...) AT(expect_none_(__VA_ARGS__))
#define send_pm(...) AT(send_pm_(__VA_ARGS__))
#define expect_pm(...) AT(expect_pm_(__VA_ARGS__))
#define expect_friends(...) AT(expect_friends_(__VA_ARGS__))
#define expect_users(...) AT(expect_users_(__VA_ARGS__))
#define expect_join(...) AT(expect_join_(__VA_ARGS__))
#define befriend(...) AT(befriend_(__VA_ARGS__))
#define chat(...) AT(chat_(__VA_ARGS__))
#define login_unread(...) AT(login_unread_(__VA_ARGS__))
#define log_grows(...) AT(log_grows_(__VA_ARGS__))
#define expect_refused(...) AT(expect_refused_(__VA_ARGS__))
#define expect_outcome(...) AT(expect_outcome_(__VA_ARGS__))
#define metric_is(node, series, want) AT(metric_reaches_(node, series, want, 0))
#define metric_at_least(node, series, want) AT(metric_reaches_(node, series, want, 1))
#define room_count_is(p, room, want) AT(room_count_reaches_(p, room, want))

/* ---- cases -------------------------------------------------------------- */

/* The harness's part, true of any two servers it starts this way: one
 * fingerprint on both nodes, one user table (registered on a, logs in on
 * b, a second registration of the name refused on b). */
static void nodes_share_the_key_and_the_database(void)
{
    up();
    peer *a = connected(NODE_A, "probe"), *b = connected(NODE_B, "probe");
    CU_ASSERT_NOT_EQUAL(NODE_A->port, NODE_B->port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sm_client_fingerprint(a->c));
    CU_ASSERT_STRING_EQUAL(sm_client_fingerprint(a->c), sm_client_fingerprint(b->c));
    bye(a, 0);
    bye(b, 0);

    peer *alice = user(NODE_A, "alice", 1);
    peer *alice_b = user(NODE_B, "Alice", 0);
    peer *dup = connected(NODE_B, "alice");
    sm_message *r = harness_callf(dup->c, "register", "{s:s, s:s}", "username", "ALICE",
                                  "password", PASSWORD);
    CU_ASSERT_EQUAL(harness_error_code(r), 1010);
    sm_message_free(r);
    bye(dup, 0);
    bye(alice, 0);
    bye(alice_b, 0);
    down();
}

/* alice on a and bob on b in one room: user_joined and user_left about
 * bob reach alice once and never bob; each one's public_message reaches
 * both once; get_users on either node lists both. */
static void room_events_and_messages_cross_nodes_once(void)
{
    up();
    /* Registration put both in general: bob's arrival there crossed too. */
    peer *alice, *bob;
    AT(alice_and_bob_(&alice, &bob));
    expect_none(bob, "user_joined", "username", "bob", NULL, NULL);

    sm_message *r = call_ok(alice, "join_room", "join_room", "{s:s}", "room_name", "lobby");
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), "lobby");
    sm_message_free(r);
    expect_once(bob, "user_left", "username", "alice", "room", "general");
    r = call_ok(bob, "join_room", "join_room", "{s:s}", "room_name", "LOBBY");
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), "lobby");
    sm_message_free(r);
    expect_once(alice, "user_joined", "username", "bob", "room", "lobby");
    expect_none(bob, "user_joined", "username", "bob", NULL, NULL);
    expect_users(alice, "lobby", "alice,bob");
    expect_users(bob, "lobby", "alice,bob");

    /* Each message: the sender's reply, then the event once on each side. */
    r = call_ok(alice, "public_message", "public_message", "{s:s}", "content", "hello from a");
    json_int_t id_a = jint(r->payload, "id");
    sm_message_free(r);
    r = call_ok(bob, "public_message", "public_message", "{s:s}", "content", "hello from b");
    json_int_t id_b = jint(r->payload, "id");
    sm_message_free(r);
    CU_ASSERT_TRUE(id_a > 0 && id_b > 0 && id_a != id_b);
    peer *both[2] = {alice, bob};
    for (int i = 0; i < 2; i++) {
        sm_message *ev = once(both[i], "public_message", "content", "hello from a", NULL, NULL);
        if (ev) {
            CU_ASSERT_EQUAL(jint(ev->payload, "id"), id_a);
            CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "sender"), "alice");
            CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "room"), "lobby");
        }
        sm_message_free(ev);
        ev = once(both[i], "public_message", "content", "hello from b", NULL, NULL);
        if (ev) {
            CU_ASSERT_EQUAL(jint(ev->payload, "id"), id_b);
            CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "sender"), "bob");
            CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "room"), "lobby");
        }
        sm_message_free(ev);
    }

    /* bob leaves: alice hears it once, bob nothing about himself. */
    r = call_ok(bob, "leave_room", "leave_room", NULL, NULL, NULL);
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), "lobby");
    sm_message_free(r);
    expect_once(alice, "user_left", "username", "bob", "room", "lobby");
    expect_none(bob, "user_left", "username", "bob", NULL, NULL);
    expect_users(alice, "lobby", "alice");
    /* A message in the room now reaches alice only. */
    call_ok_free(alice, "public_message", "public_message", "{s:s}", "content", "alone");
    expect_once(alice, "public_message", "content", "alone", NULL, NULL);
    expect_none(bob, "public_message", "content", "alone", NULL, NULL);

    /* bob back, then gone without a word (disconnect): once each way. */
    call_ok_free(bob, "join_room", "join_room", "{s:s}", "room_name", "lobby");
    expect_once(alice, "user_joined", "username", "bob", "room", "lobby");
    bye(bob, 1);
    expect_once(alice, "user_left", "username", "bob", "room", "lobby");
    bye(alice, 0);
    down();
}

/* alice (a) to bob (b): delivered online as an event to bob only; with
 * bob logged out, stored (online false) and found by bob logging in on
 * a: unread_count and get_unread_messages. */
static void private_messages_cross_nodes_online_and_offline(void)
{
    up();
    peer *bob = user(NODE_B, "bob", 1);
    peer *alice = user(NODE_A, "alice", 1);
    json_int_t id = send_pm(alice, "bob", "hi bob, from a", 1);
    expect_pm(bob, "alice", "bob", "hi bob, from a", id);
    expect_none(alice, "private_message", NULL, NULL, NULL, NULL);

    /* bob logs out on b (the connection stays, logged out). */
    call_ok_free(bob, "logout", "logout", NULL, NULL, NULL);
    json_int_t stored = send_pm(alice, "bob", "while you were out", 0);
    CU_ASSERT_TRUE(stored > id);
    expect_none(bob, "private_message", NULL, NULL, NULL, NULL);

    /* The first message was delivered but never marked read: both wait. */
    const sent_pm unread[] = {{id, "hi bob, from a"}, {stored, "while you were out"}};
    peer *bob_a = login_unread(NODE_A, "bob", "alice", unread, sizeof unread / sizeof *unread);
    /* Online again (on a now): the next one is delivered as an event. */
    id = send_pm(alice, "bob", "welcome back", 1);
    expect_pm(bob_a, "alice", "bob", "welcome back", id);
    expect_none(bob, "private_message", NULL, NULL, NULL, NULL);
    bye(bob_a, 0);
    bye(bob, 0);
    bye(alice, 0);
    down();
}

/* bob (b) marks alice's message read: message_read reaches alice's
 * sessions on a and on b once each, and marking it again sends none. */
static void read_receipts_cross_nodes_once(void)
{
    up();
    peer *alice = user(NODE_A, "alice", 1);
    peer *bob = user(NODE_B, "bob", 1);
    peer *alice_b = user(NODE_B, "alice", 0);
    json_int_t id = send_pm(alice, "bob", "read me", 1);
    expect_pm(bob, "alice", "bob", "read me", id);

    sm_message *r = harness_callf(bob->c, "mark_message_read", "{s:I}", "message_id", id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "mark_message_read");
    CU_ASSERT_EQUAL(jint(r->payload, "message_id"), id);
    sm_message_free(r);
    peer *alices[2] = {alice, alice_b};
    for (int i = 0; i < 2; i++) {
        sm_message *ev = once(alices[i], "message_read", "reader", "bob", NULL, NULL);
        if (ev) {
            CU_ASSERT_EQUAL(jint(ev->payload, "message_id"), id);
            CU_ASSERT_TRUE(json_is_number(json_object_get(ev->payload, "timestamp")));
        }
        sm_message_free(ev);
    }
    expect_none(bob, "message_read", NULL, NULL, NULL, NULL);

    /* Again: the reply, no second receipt anywhere. */
    r = harness_callf(bob->c, "mark_message_read", "{s:I}", "message_id", id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "mark_message_read");
    sm_message_free(r);
    expect_none(alice, "message_read", NULL, NULL, NULL, NULL);
    expect_none(alice_b, "message_read", NULL, NULL, NULL, NULL);
    bye(alice, 0);
    bye(alice_b, 0);
    bye(bob, 0);
    down();
}

/* Request and accept across nodes, the friends list's online flags from
 * the other node, and friend_offline / friend_online once each way. */
static void friends_and_presence_cross_nodes_once(void)
{
    up();
    peer *alice = user(NODE_A, "alice", 1);
    peer *bob = user(NODE_B, "bob", 1);
    befriend(alice, "alice", bob, "bob");
    expect_none(bob, "friend_request_accepted", NULL, NULL, NULL, NULL);
    expect_friends(alice, "bob:1");
    expect_friends(bob, "alice:1");

    /* bob goes (logout on b): alice on a is told once. */
    call_ok_free(bob, "logout", "logout", NULL, NULL, NULL);
    expect_once(alice, "friend_offline", "username", "bob", NULL, NULL);
    expect_friends(alice, "bob:0");
    /* bob comes back on b: once. */
    sm_message *r = harness_callf(bob->c, "login", "{s:s, s:s}", "username", "bob", "password",
                                  PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "login_success");
    sm_message_free(r);
    expect_once(alice, "friend_online", "username", "bob", NULL, NULL);
    expect_friends(alice, "bob:1");
    expect_none(bob, "friend_online", NULL, NULL, NULL, NULL);

    /* The other way: alice's connection on a drops; bob on b is told once. */
    bye(alice, 1);
    expect_once(bob, "friend_offline", "username", "alice", NULL, NULL);
    expect_friends(bob, "alice:0");
    peer *alice2 = user(NODE_A, "alice", 0);
    expect_once(bob, "friend_online", "username", "alice", NULL, NULL);
    bye(alice2, 0);
    expect_once(bob, "friend_offline", "username", "alice", NULL, NULL);
    bye(bob, 0);
    down();
}

/* bob on both nodes at once: a private message reaches both sessions
 * once; his friend carol sees friend_online for the first session only
 * and friend_offline only once the last of the two has gone, whichever
 * node each was on. */
static void one_user_on_both_nodes(void)
{
    up();
    peer *carol = user(NODE_A, "carol", 1);
    peer *bob_b = user(NODE_B, "bob", 1);
    befriend(carol, "carol", bob_b, "bob");
    bye(bob_b, 0);
    expect_once(carol, "friend_offline", "username", "bob", NULL, NULL);

    /* First session on b (the node carol is not on), second on a. */
    bob_b = user(NODE_B, "bob", 0);
    expect_once(carol, "friend_online", "username", "bob", NULL, NULL);
    peer *bob_a = user(NODE_A, "bob", 0);
    expect_none(carol, "friend_online", "username", "bob", NULL, NULL);
    expect_friends(carol, "bob:1");

    json_int_t id = send_pm(carol, "bob", "to every bob", 1);
    expect_pm(bob_a, "carol", "bob", "to every bob", id);
    expect_pm(bob_b, "carol", "bob", "to every bob", id);
    expect_none(carol, "private_message", NULL, NULL, NULL, NULL);

    /* The first session goes: bob is still online (on a). */
    bye(bob_b, 0);
    expect_none(carol, "friend_offline", "username", "bob", NULL, NULL);
    expect_friends(carol, "bob:1");
    id = send_pm(carol, "bob", "still there?", 1);
    expect_pm(bob_a, "carol", "bob", "still there?", id);
    /* The last goes: now once. */
    bye(bob_a, 0);
    expect_once(carol, "friend_offline", "username", "bob", NULL, NULL);
    expect_friends(carol, "bob:0");

    /* And the other way round: first on a, then b; a goes first. */
    bob_a = user(NODE_A, "bob", 0);
    expect_once(carol, "friend_online", "username", "bob", NULL, NULL);
    bob_b = user(NODE_B, "bob", 0);
    expect_none(carol, "friend_online", "username", "bob", NULL, NULL);
    bye(bob_a, 1);
    expect_none(carol, "friend_offline", "username", "bob", NULL, NULL);
    bye(bob_b, 1);
    expect_once(carol, "friend_offline", "username", "bob", NULL, NULL);
    bye(carol, 0);
    down();
}

/* Node b dies (SIGKILL: it tells Redis nothing): bob, online only there,
 * goes offline for carol on a once, within REAP_WAIT_MS, and a message to
 * him is stored; node a serves on. */
static void a_dead_nodes_users_go_offline(void)
{
    up();
    peer *carol = user(NODE_A, "carol", 1);
    peer *bob = user(NODE_B, "bob", 1);
    befriend(carol, "carol", bob, "bob");
    expect_friends(carol, "bob:1");

    CU_ASSERT_EQUAL(harness_cluster_kill(&cl, 1), 0);
    sm_message_free(once_within(carol, REAP_WAIT_MS, "friend_offline", "username", "bob", NULL,
                                NULL));
    expect_friends(carol, "bob:0");
    send_pm(carol, "bob", "are you there?", 0);
    bye(bob, 1);
    bye(carol, 0);
    down();
}

/* Node b dies (SIGKILL) under bob; alice and carol stay on a. Every
 * private message acknowledged to alice (message_delivered), before the
 * kill, between the kill and the reap (when bob may still count as
 * online) and after it, waits for bob: he logs in again on a and finds
 * them all unread. alice, his friend, hears friend_offline within
 * KILL_OFFLINE_MS of the kill, and friend_online once when he is back
 * (he reconnects only after the reap, so the two cannot cross). carol
 * and alice talk through it all without reconnecting. */
static void a_killed_nodes_users_reconnect_and_find_their_unread(void)
{
    up();
    peer *alice = user(NODE_A, "alice", 1);
    peer *carol = user(NODE_A, "carol", 1);
    peer *bob = user(NODE_B, "bob", 1);
    befriend(alice, "alice", bob, "bob");
    chat(alice, carol, "before the kill");

    sent_pm sent[4] = {
        {0, "before the kill"}, {0, "just after the kill"},
        {0, "while b is dead"}, {0, "after the reap"},
    };
    sent[0].id = send_pm(alice, "bob", sent[0].content, 1);
    expect_pm(bob, "alice", "bob", sent[0].content, sent[0].id);

    long long killed = now_ms();
    CU_ASSERT_EQUAL_FATAL(harness_cluster_kill(&cl, 1), 0);
    /* Until the reap bob may still count as online: stored either way. */
    sent[1].id = send_pm(alice, "bob", sent[1].content, ONLINE_EITHER);
    chat(alice, carol, "after the kill");
    sent[2].id = send_pm(alice, "bob", sent[2].content, ONLINE_EITHER);

    sm_message *off = once_within(alice, REAP_WAIT_MS, "friend_offline", "username", "bob",
                                  NULL, NULL);
    /* once_within waited QUIET_MS more for a duplicate. */
    long long took = now_ms() - killed - QUIET_MS;
    if (off && took > KILL_OFFLINE_MS)
        fprintf(stderr, "\nalice@a: friend_offline for bob %lld ms after the kill (bound %d)\n",
                took, KILL_OFFLINE_MS);
    CU_ASSERT_TRUE(off && took <= KILL_OFFLINE_MS);
    sm_message_free(off);
    expect_none(carol, "friend_offline", NULL, NULL, NULL, NULL); /* not his friend */
    expect_friends(alice, "bob:0");
    sent[3].id = send_pm(alice, "bob", sent[3].content, 0);
    chat(alice, carol, "after the reap");

    peer *bob_a = login_unread(NODE_A, "bob", "alice", sent, sizeof sent / sizeof *sent);
    expect_once(alice, "friend_online", "username", "bob", NULL, NULL);
    expect_friends(alice, "bob:1");
    json_int_t id = send_pm(alice, "bob", "welcome back", 1);
    expect_pm(bob_a, "alice", "bob", "welcome back", id);
    chat(alice, carol, "after bob is back");

    bye(bob_a, 0);
    bye(bob, 1);
    bye(carol, 0);
    bye(alice, 0);
    down();
}

/* The private Redis stops under both nodes for OUTAGE_MS and starts again
 * on its port. While it is down: a room message from alice reaches alice's sessions on
 * a (local delivery continues; node a logs that it reached this node's
 * sessions only), not bob on b. Once it is back, both nodes reconnect and
 * resubscribe within RECONNECT_WAIT_MS (each logs the bus down, the link
 * connected again with its subscriptions restored, the bus and presence
 * up again); then a room message and a private message reach bob once,
 * and presence works: bob's logout is friend_offline once for each of
 * alice's sessions. */
static void redis_restart_nodes_reconnect_and_resubscribe(void)
{
    up();
    peer *alice, *bob;
    AT(alice_and_bob_(&alice, &bob));
    befriend(alice, "alice", bob, "bob");
    peer *alice2 = user(NODE_A, "alice", 0);
    peer *alices[2] = {alice, alice2};
    harness_server *nodes[2] = {NODE_A, NODE_B};
    /* Both also come at start: the return is a line more. */
    int bus_up[2], presence_up[2];
    for (int i = 0; i < 2; i++) {
        bus_up[i] = harness_log_count(nodes[i], "cluster: bus up");
        presence_up[i] = harness_log_count(nodes[i], "with local sessions written back");
        CU_ASSERT_TRUE(bus_up[i] >= 1 && presence_up[i] >= 1);
    }

    CU_ASSERT_EQUAL_FATAL(private_redis_down(&redis), 0);
    redis_is_down = 1;
    long long outage_end = now_ms() + OUTAGE_MS;
    for (int i = 0; i < 2; i++) {
        int seen = harness_wait_log(nodes[i], "cluster: bus down", REDIS_DOWN_WAIT_MS);
        if (seen != 1)
            fprintf(stderr, "\nnode %s did not log \"cluster: bus down\" within %d ms of Redis "
                            "stopping\n", node_name(nodes[i]), REDIS_DOWN_WAIT_MS);
        CU_ASSERT_EQUAL(seen, 1);
    }
    call_ok_free(alice, "public_message", "public_message", "{s:s}", "content",
                 "while redis is down");
    for (int i = 0; i < 2; i++)
        expect_once(alices[i], "public_message", "content", "while redis is down", "sender",
                    "alice");
    expect_none(bob, "public_message", "content", "while redis is down", NULL, NULL);
    CU_ASSERT_EQUAL(harness_wait_log(NODE_A, "reached this node's sessions only", WAIT_MS), 1);
    /* Down long enough for the links' retries to back off to their longest. */
    long long rest = outage_end - now_ms();
    if (rest > 0) {
        struct timespec ts = {(time_t)(rest / 1000), (long)(rest % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }

    CU_ASSERT_EQUAL_FATAL(private_redis_up(&redis), 0);
    redis_is_down = 0;
    long long deadline = now_ms() + RECONNECT_WAIT_MS;
    for (int i = 0; i < 2; i++) {
        long long left = deadline - now_ms();
        int seen = harness_wait_log(nodes[i], "subscriptions restored",
                                    left > 0 ? (int)left : 0);
        if (seen != 1)
            fprintf(stderr, "\nnode %s did not log its Redis link \"connected again, ... "
                            "subscriptions restored\" within %d ms of Redis starting\n",
                    node_name(nodes[i]), RECONNECT_WAIT_MS);
        CU_ASSERT_EQUAL(seen, 1);
        CU_ASSERT_TRUE(log_grows(nodes[i], "cluster: bus up", bus_up[i], deadline));
        CU_ASSERT_TRUE(log_grows(nodes[i], "with local sessions written back", presence_up[i], deadline));
    }

    call_ok_free(alice, "public_message", "public_message", "{s:s}", "content",
                 "redis is back");
    expect_once(bob, "public_message", "content", "redis is back", "sender", "alice");
    for (int i = 0; i < 2; i++)
        expect_once(alices[i], "public_message", "content", "redis is back", "sender", "alice");
    json_int_t id = send_pm(alice, "bob", "after the outage", 1);
    expect_pm(bob, "alice", "bob", "after the outage", id);
    expect_friends(alice, "bob:1");
    expect_friends(bob, "alice:1");

    call_ok_free(bob, "logout", "logout", NULL, NULL, NULL);
    for (int i = 0; i < 2; i++)
        expect_once(alices[i], "friend_offline", "username", "bob", NULL, NULL);
    expect_friends(alice, "bob:0");

    bye(bob, 0);
    bye(alice2, 0);
    bye(alice, 0);
    down();
}

/* auth's limits count the attempts of every node (shared_limits.c, over
 * the bus): failed logins for xavier on a, up to failed_logins_per_user,
 * refuse him on b, right password or not, from an address b never saw
 * fail; the address that failed failed_logins times on a is refused on b
 * for another user too; registrations from one address, on a and b in
 * turn, reach registrations_per_hour and the next is refused on both.
 * Each node alone stays below every limit: without the sharing b (and a,
 * for registrations) would accept. Clients come from several loopback
 * addresses, since per address auth allows fewer failures than per user.
 * The events cross Redis: expect_refused() repeats, within SHARE_WAIT_MS,
 * only attempts that count nothing themselves. */
#define FAIL_FROM "127.0.0.2"  /* fails twice on a: failed_logins */
#define FAIL_FROM2 "127.0.0.3" /* fails once on a: xavier's third */
#define FRESH_FROM "127.0.0.4" /* never fails */
#define REG_FROM "127.0.0.5"   /* registers three times */
#define WRONG "not the password"
static void auth_limits_count_every_node(void)
{
    up_with(LIMITS_CONFIG);
    bye(user(NODE_A, "xavier", 1), 0);
    bye(user(NODE_B, "yvonne", 1), 0);

    /* Failed logins: 2 from FAIL_FROM and 1 from FAIL_FROM2, all on a. */
    expect_outcome(NODE_A, FAIL_FROM, "login", "xavier", WRONG, 1001);
    expect_outcome(NODE_A, FAIL_FROM, "login", "xavier", WRONG, 1001);
    expect_outcome(NODE_A, FAIL_FROM2, "login", "xavier", WRONG, 1001);
    /* b counts xavier's 3: his right password is refused from FRESH_FROM
     * too (until then it logs in, which counts nothing). */
    expect_refused(NODE_B, FRESH_FROM, "login", "xavier", PASSWORD, 0);
    expect_refused(NODE_A, FRESH_FROM, "login", "xavier", PASSWORD, ONCE);
    /* and FAIL_FROM's 2: yvonne's right password from there is refused on b. */
    expect_refused(NODE_B, FAIL_FROM, "login", "yvonne", PASSWORD, ONCE);
    expect_outcome(NODE_B, FRESH_FROM, "login", "yvonne", PASSWORD, 0);

    /* Registrations from REG_FROM: a, b, a; a alone has seen 2, b 1. */
    expect_outcome(NODE_A, REG_FROM, "register", "rita", PASSWORD, 0);
    expect_outcome(NODE_B, REG_FROM, "register", "rolf", PASSWORD, 0);
    expect_outcome(NODE_A, REG_FROM, "register", "rosa", PASSWORD, 0);
    /* A name too short is refused with 1004 and counts nothing, but is
     * checked after the limit: the probe until each node has counted 3. */
    harness_server *nodes[2] = {NODE_A, NODE_B};
    for (int i = 0; i < 2; i++) {
        expect_refused(nodes[i], REG_FROM, "register", "no", PASSWORD, 1004);
        expect_refused(nodes[i], REG_FROM, "register", "ruth", PASSWORD, ONCE);
    }
    long long ruths = -1;
    CU_ASSERT_EQUAL(harness_query_int(NODE_A, "SELECT count(*) FROM auth_users WHERE "
                                              "username_lower = 'ruth'", &ruths), 0);
    CU_ASSERT_EQUAL(ruths, 0);
    /* Another address still registers. */
    expect_outcome(NODE_B, FRESH_FROM, "register", "ruth", PASSWORD, 0);
    down();
}

/* A third server on the cluster's storage and Redis, node "c", with a key
 * of its own: it exits with status 1 within OTHER_KEY_EXIT_MS, its log
 * naming the cluster's fingerprint (as clients see it), the database's
 * record of it untouched; nodes a and b serve on. */
static void a_node_with_another_key_is_refused(void)
{
    up();
    peer *alice, *bob;
    AT(alice_and_bob_(&alice, &bob));
    char cluster_fp[256];
    CU_ASSERT_PTR_NOT_NULL_FATAL(sm_client_fingerprint(alice->c));
    snprintf(cluster_fp, sizeof cluster_fp, "%s", sm_client_fingerprint(alice->c));

    char key[600];
    CU_ASSERT_EQUAL_FATAL(harness_path(NODE_A, "other_key.pem", key, sizeof key), 0);
    CU_ASSERT_EQUAL_FATAL(harness_write_key(key), 0);
    long long spawned = now_ms();
    CU_ASSERT_EQUAL_FATAL(harness_cluster_spawn(&cl, &odd, "c", redis.url, CONFIG, key), 0);
    int status = -1;
    int exited = harness_wait_exit(&odd, OTHER_KEY_EXIT_MS, &status) == 0;
    if (!exited)
        fprintf(stderr, "\nnode c, with another key, still runs %lld ms after its start\n",
                now_ms() - spawned);
    CU_ASSERT_TRUE(exited);
    CU_ASSERT_EQUAL(status, 1);
    /* Refused at start, by the database the cluster shares (the key it
     * recorded), before it wrote anything or joined Redis; the Redis-side
     * check (a new database, another key in Redis) is services.
     * cluster_presence's. */
    char line[700];
    snprintf(line, sizeof line, "is not the one the cluster's database was used with (%s)",
             cluster_fp);
    int named = harness_log_contains(&odd, line);
    if (named != 1)
        fprintf(stderr, "\nnode c's log has no \"%s\"\n", line);
    CU_ASSERT_EQUAL(named, 1);
    CU_ASSERT_EQUAL(harness_log_contains(&odd, "every node of a cluster serves the same key"), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&odd), 0);
    char sql[512];
    long long kept = -1;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sm_meta WHERE name = "
                              "'server_key_fingerprint' AND value = '%s'", cluster_fp);
    CU_ASSERT_EQUAL(harness_query_int(NODE_A, sql, &kept), 0);
    CU_ASSERT_EQUAL(kept, 1);

    /* a and b: one fingerprint, messages and presence across as before. */
    peer *probe = connected(NODE_B, "probe");
    CU_ASSERT_STRING_EQUAL(sm_client_fingerprint(probe->c), cluster_fp);
    bye(probe, 0);
    call_ok_free(bob, "public_message", "public_message", "{s:s}", "content", "after c");
    expect_once(alice, "public_message", "content", "after c", "sender", "bob");
    json_int_t id = send_pm(alice, "bob", "still here", 1);
    expect_pm(bob, "alice", "bob", "still here", id);
    peer *dave = user(NODE_B, "dave", 1);
    expect_once(alice, "user_joined", "username", "dave", "room", "general");
    bye(dave, 0);
    expect_once(alice, "user_left", "username", "dave", "room", "general");
    bye(bob, 0);
    bye(alice, 0);
    down();
}

/* The safemessenger_cluster_* metrics on each node's /metrics: up and
 * registered; with alice on a and bob on b one user on each node's
 * presence and bus, two users online in all; a room message counted
 * published on a and received on b; no malformed message, id clash or
 * refused publish. */
static void metrics_describe_the_cluster(void)
{
    up();
    harness_server *nodes[2] = {NODE_A, NODE_B};
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_TRUE(metric_is(nodes[i], "safemessenger_cluster_up", 1));
        CU_ASSERT_TRUE(metric_is(nodes[i], "safemessenger_cluster_presence_state", 1));
    }
    peer *alice, *bob;
    AT(alice_and_bob_(&alice, &bob));
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_TRUE(metric_is(nodes[i], "safemessenger_cluster_presence_users", 1));
        CU_ASSERT_TRUE(metric_is(nodes[i], "safemessenger_cluster_bus_users", 1));
        CU_ASSERT_TRUE(metric_at_least(nodes[i], "safemessenger_cluster_bus_topics", 1));
    }
    /* Each going online is counted once, by one node; then no more. */
    static const char online[] = "safemessenger_cluster_presence_online_total";
    long long deadline = now_ms() + WAIT_MS;
    double sum;
    while ((sum = metric_of(NODE_A, online) + metric_of(NODE_B, online)) < 2 &&
           now_ms() < deadline)
        sleep_ms(50);
    sleep_ms(QUIET_MS);
    double later = metric_of(NODE_A, online) + metric_of(NODE_B, online);
    if (sum != 2 || later != 2)
        fprintf(stderr, "\n%s summed over a and b: %g, then %g, expected 2\n", online, sum,
                later);
    CU_ASSERT_TRUE(sum == 2 && later == 2);

    static const char published[] = "safemessenger_cluster_bus_published_total",
                      received[] = "safemessenger_cluster_bus_received_total";
    double published0 = metric_of(NODE_A, published), received0 = metric_of(NODE_B, received);
    CU_ASSERT_FALSE(isnan(published0) || isnan(received0));
    call_ok_free(alice, "public_message", "public_message", "{s:s}", "content", "counted");
    expect_once(bob, "public_message", "content", "counted", "sender", "alice");
    CU_ASSERT_TRUE(metric_at_least(NODE_A, published, published0 + 1));
    CU_ASSERT_TRUE(metric_at_least(NODE_B, received, received0 + 1));

    static const char *const zero[] = {"safemessenger_cluster_bus_malformed_total",
                                       "safemessenger_cluster_bus_id_clashes_total",
                                       "safemessenger_cluster_bus_refused_total{reason=\"down\"}"};
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < sizeof zero / sizeof *zero; k++)
            CU_ASSERT_TRUE(metric_is(nodes[i], zero[k], 0));
    bye(bob, 0);
    bye(alice, 0);
    down();
}

/* alice (a) and bob (b) in lobby, carol (a) in general: list_rooms on
 * either node counts lobby's users on both; get_users and join_room's
 * listing name the users of both nodes. */
static void list_rooms_and_get_users_count_every_node(void)
{
    up();
    peer *alice = user(NODE_A, "alice", 1);
    peer *bob = user(NODE_B, "bob", 1);
    peer *carol = user(NODE_A, "carol", 1);
    expect_once(alice, "user_joined", "username", "bob", "room", "general");
    expect_once(bob, "user_joined", "username", "carol", "room", "general");
    expect_join(alice, "lobby", "alice");
    expect_once(bob, "user_left", "username", "alice", "room", "general");
    expect_join(bob, "lobby", "alice,bob");
    expect_once(alice, "user_joined", "username", "bob", "room", "lobby");
    expect_once(carol, "user_left", "username", "bob", "room", "general");
    expect_users(alice, "lobby", "alice,bob");
    expect_users(bob, "lobby", "alice,bob");
    expect_users(carol, "general", "carol");
    peer *all[3] = {alice, bob, carol};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(room_count_is(all[i], "lobby", 2));
        CU_ASSERT_TRUE(room_count_is(all[i], "general", 1));
    }

    /* carol to lobby, on a: her listing has bob, on b; the counts follow. */
    expect_join(carol, "lobby", "alice,bob,carol");
    expect_once(bob, "user_joined", "username", "carol", "room", "lobby");
    expect_users(bob, "lobby", "alice,bob,carol");
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(room_count_is(all[i], "lobby", 3));
        CU_ASSERT_TRUE(room_count_is(all[i], "general", 0));
    }
    bye(carol, 0);
    bye(bob, 0);
    bye(alice, 0);
    down();
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(nodes_share_the_key_and_the_database),
        SM_TEST(room_events_and_messages_cross_nodes_once),
        SM_TEST(private_messages_cross_nodes_online_and_offline),
        SM_TEST(read_receipts_cross_nodes_once),
        SM_TEST(friends_and_presence_cross_nodes_once),
        SM_TEST(one_user_on_both_nodes),
        SM_TEST(a_dead_nodes_users_go_offline),
        SM_TEST(a_killed_nodes_users_reconnect_and_find_their_unread),
        SM_TEST(redis_restart_nodes_reconnect_and_resubscribe),
        SM_TEST(auth_limits_count_every_node),
        SM_TEST(a_node_with_another_key_is_refused),
        SM_TEST(metrics_describe_the_cluster),
        SM_TEST(list_rooms_and_get_users_count_every_node),
        SM_TEST_END,
    };
    return sm_test_run("integration_cluster", cases, init, fini);
}
