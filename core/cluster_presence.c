#include "cluster_presence.h"

#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "hashmap.h"
#include "log.h"
#include "redis_link.h"
#include "safemessenger/plugin.h"

_Static_assert(CLUSTER_PRESENCE_DOWN == REDIS_LINK_DOWN && CLUSTER_PRESENCE_BUSY == REDIS_LINK_BUSY
                   && CLUSTER_PRESENCE_NO_MEMORY == REDIS_LINK_NO_MEMORY
                   && CLUSTER_PRESENCE_INVALID == REDIS_LINK_INVALID,
               "presence passes redis_link's statuses on as they are");

#define CP_INSTANCE_LEN 32 /* hex digits */
#define CP_KEY_MAX (CLUSTER_PRESENCE_PREFIX_MAX + 8 + CLUSTER_PRESENCE_NODE_MAX)
#define CP_INTERVAL_MIN_MS 10u
#define CP_INTERVAL_MAX_MS 600000u

/* ---- the scripts (cluster_presence.h says what each does) ---------------- */

/* What the scripts count are entries: "pu:<user>" (a user's sessions)
 * or "pr:<user>:<topic>" (a user's sessions in a topic), each the name
 * of its hash under the prefix, and what nu:<id> holds. Every script
 * that makes a pr:<user>:<topic> hash exist or go adds user to, or
 * removes them from, tm:<topic> in the same run: the topic's index for
 * cluster_presence_query_members.
 *
 * session. KEYS: node:<id>, <prefix><entry>, nu:<id>, and for a pr
 * entry tm:<topic>. ARGV: instance, id, entry, the node's count for it
 * now, and for a pr entry the user. Returns 2 when node:<id> is not this
 * instance (the node must register), else the change in the existence of
 * the entry's hash: 1, -1 or 0. The index follows the hash as it is
 * after the write, not only its change: adding a member present or
 * removing one absent changes nothing, and an index that missed a change
 * (written by an older version) mends itself on the user's next call. */
static const char session_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 2 end\n"
    "local before = redis.call('EXISTS', KEYS[2])\n"
    "if tonumber(ARGV[4]) > 0 then\n"
    "  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])\n"
    "  redis.call('SADD', KEYS[3], ARGV[3])\n"
    "else\n"
    "  redis.call('HDEL', KEYS[2], ARGV[2])\n"
    "  redis.call('SREM', KEYS[3], ARGV[3])\n"
    "end\n"
    "local after = redis.call('EXISTS', KEYS[2])\n"
    "if KEYS[4] then\n"
    "  if after == 1 then redis.call('SADD', KEYS[4], ARGV[5])\n"
    "  else redis.call('SREM', KEYS[4], ARGV[5]) end\n"
    "end\n"
    "return after - before\n";

/* The index set of entry and its member (user), or nil for a pu entry:
 * the user ends at the first ':' after "pr:" (names hold none), the
 * topic is the rest, whatever its bytes. Shared by register, reap and
 * leave, which get entries from nu:<id> or the node. */
#define TOPIC_SET_LUA                                                                             \
    "local function topic_set(prefix, entry)\n"                                                   \
    "  local user, topic = string.match(entry, '^pr:([^:]+):(.+)$')\n"                            \
    "  if user then return prefix .. 'tm:' .. topic, user end\n"                                  \
    "  return nil\n"                                                                              \
    "end\n"

/* register. KEYS: node:<id>, nodes, nu:<id>, fingerprint. ARGV:
 * prefix, instance, id, TTL in ms, the node's key fingerprint ("": no
 * check), then an entry and the node's count for each entry it counts.
 * Returns {2, the stored fingerprint} when it is not the node's, {0}
 * when node:<id> holds another instance (both before anything is
 * written), else {1, entries whose hash came to exist, entries whose
 * hash went}. */
static const char register_lua[] =
    TOPIC_SET_LUA
    "local prefix, id, fingerprint = ARGV[1], ARGV[3], ARGV[5]\n"
    "local stored = false\n"
    "if fingerprint ~= '' then\n"
    "  stored = redis.call('GET', KEYS[4])\n"
    "  if stored and stored ~= fingerprint then return {2, stored} end\n"
    "end\n"
    "local current = redis.call('GET', KEYS[1])\n"
    "if current and current ~= ARGV[2] then return {0} end\n"
    "if fingerprint ~= '' and not stored then redis.call('SET', KEYS[4], fingerprint) end\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])\n"
    "redis.call('SADD', KEYS[2], id)\n"
    "local online, offline, here = {}, {}, {}\n"
    "for i = 6, #ARGV - 1, 2 do\n"
    "  local entry = ARGV[i]\n"
    "  local key = prefix .. entry\n"
    "  here[entry] = true\n"
    "  if redis.call('EXISTS', key) == 0 then online[#online + 1] = entry end\n"
    "  redis.call('HSET', key, id, ARGV[i + 1])\n"
    "  redis.call('SADD', KEYS[3], entry)\n"
    "  local set, user = topic_set(prefix, entry)\n"
    "  if set then redis.call('SADD', set, user) end\n"
    "end\n"
    "for _, entry in ipairs(redis.call('SMEMBERS', KEYS[3])) do\n"
    "  if not here[entry] then\n"
    "    local key = prefix .. entry\n"
    "    redis.call('SREM', KEYS[3], entry)\n"
    "    if redis.call('HDEL', key, id) == 1 and redis.call('EXISTS', key) == 0 then\n"
    "      offline[#offline + 1] = entry\n"
    "      local set, user = topic_set(prefix, entry)\n"
    "      if set then redis.call('SREM', set, user) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {1, online, offline}\n";

/* refresh. KEYS: node:<id>. ARGV: instance, TTL in ms. Returns 1 (kept
 * alive), 0 (lapsed: register again) or -1 (another instance). */
static const char refresh_lua[] =
    "local current = redis.call('GET', KEYS[1])\n"
    "if current == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "if current then return -1 end\n"
    "return 0\n";

/* Removes node id's fields from every entry of its nu:<id>, drops
 * nu:<id> and its member of nodes; returns the entries left with no
 * field. Shared by reap and leave (ARGV[1] is the prefix in both). */
#define DROP_NODE_LUA                                                                             \
    TOPIC_SET_LUA                                                                                 \
    "local function drop_node(prefix, id)\n"                                                      \
    "  local gone = {}\n"                                                                         \
    "  local nu = prefix .. 'nu:' .. id\n"                                                        \
    "  for _, entry in ipairs(redis.call('SMEMBERS', nu)) do\n"                                   \
    "    local key = prefix .. entry\n"                                                           \
    "    if redis.call('HDEL', key, id) == 1 and redis.call('EXISTS', key) == 0 then\n"           \
    "      gone[#gone + 1] = entry\n"                                                             \
    "      local set, user = topic_set(prefix, entry)\n"                                          \
    "      if set then redis.call('SREM', set, user) end\n"                                       \
    "    end\n"                                                                                   \
    "  end\n"                                                                                     \
    "  redis.call('DEL', nu)\n"                                                                   \
    "  redis.call('SREM', prefix .. 'nodes', id)\n"                                               \
    "  return gone\n"                                                                             \
    "end\n"

/* reap. KEYS: nodes. ARGV: prefix, this node's id (never reaped here:
 * its own lapse is its refresh's business). Returns {nodes reaped,
 * entries whose hash went}. */
static const char reap_lua[] =
    DROP_NODE_LUA
    "local reaped, gone = {}, {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if id ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'node:' .. id) == 0 then\n"
    "    reaped[#reaped + 1] = id\n"
    "    for _, entry in ipairs(drop_node(ARGV[1], id)) do gone[#gone + 1] = entry end\n"
    "  end\n"
    "end\n"
    "return {reaped, gone}\n";

/* leave. KEYS: node:<id>. ARGV: prefix, instance, id. Returns {0} when
 * node:<id> is not this instance (nothing done), else {1, entries whose
 * hash went}. */
static const char leave_lua[] =
    DROP_NODE_LUA
    "if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {0} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return {1, drop_node(ARGV[1], ARGV[3])}\n";

/* online (cluster_presence_query_online). KEYS: pu:<user> of each user
 * asked about. Returns 1 or 0 for each, in order. One script, not an
 * EXISTS per user: one round trip, and one moment of Redis for all. */
static const char online_lua[] =
    "local online = {}\n"
    "for i, key in ipairs(KEYS) do online[i] = redis.call('EXISTS', key) end\n"
    "return online\n";

/* ---- the state ------------------------------------------------------------ */

/* The longest entry: "pr:<user>:<topic>". */
#define CP_ENTRY_MAX (3 + CLUSTER_PRESENCE_USER_MAX + 1 + CLUSTER_PRESENCE_TOPIC_MAX)

/* The longest topic index key: "<prefix>tm:<topic>". */
#define CP_TOPIC_SET_MAX (CLUSTER_PRESENCE_PREFIX_MAX + 3 + CLUSTER_PRESENCE_TOPIC_MAX)

typedef struct cp_count {
    unsigned long sessions;
} cp_count;

struct cluster_presence {
    struct lws_context *ctx;
    redis_link *link;
    cluster_presence_handlers handlers;
    void *arg;
    char node[CLUSTER_PRESENCE_NODE_MAX + 1];
    char prefix[CLUSTER_PRESENCE_PREFIX_MAX + 1];
    char instance[CP_INSTANCE_LEN + 1];
    char key_node[CP_KEY_MAX + 1];  /* <prefix>node:<id> */
    char key_nodes[CP_KEY_MAX + 1]; /* <prefix>nodes */
    char key_nu[CP_KEY_MAX + 1];    /* <prefix>nu:<id> */
    char key_fingerprint[CP_KEY_MAX + 1]; /* <prefix>fingerprint */
    char fingerprint[CLUSTER_PRESENCE_FINGERPRINT_MAX + 1]; /* "": no check */
    char cluster_fingerprint[CLUSTER_PRESENCE_FINGERPRINT_MAX + 1]; /* Redis's, on a mismatch */
    char ttl_text[16];
    unsigned ttl_ms, refresh_ms, reap_ms;
    redis_link_script *session_script, *register_script, *refresh_script, *reap_script,
        *leave_script, *online_script;
    hashmap *entries; /* entry, with its NUL -> cp_count: what this node counts */
    int link_up;
    int registered;     /* register succeeded, and nothing since says the key lapsed */
    int refused, left;  /* for good */
    int mismatch;       /* refused because of the server key (refused is set too) */
    int dirty;          /* a change may have missed Redis: register again */
    int register_in_flight, refresh_in_flight, reap_in_flight;
    int warned_error;   /* a script's error reply was logged (once per registration) */
    enum cluster_presence_state reported;
    lws_usec_t registered_since;
    lws_usec_t started;   /* cluster_presence_start */
    int ever_registered;  /* a register succeeded once */
    int warned_held;      /* "node id held" logged while waiting for it */
    lws_sorted_usec_list_t refresh_timer, reap_timer;
    void (*leave_done)(int status, void *arg);
    void *leave_arg;
    int stopping;
    _Atomic uint64_t online, offline, joined, parted, registrations, reaped_nodes, not_sent, lost,
        n_users, n_members;
};

/* A session script in flight: for which entry. */
typedef struct cp_call {
    cluster_presence *cp;
    char entry[CP_ENTRY_MAX + 1];
} cp_call;

static void count(_Atomic uint64_t *c, int64_t delta)
{
    atomic_fetch_add_explicit(c, (uint64_t)delta, memory_order_relaxed);
}

static uint64_t read_count(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* <prefix>tm:<topic> into set (CP_TOPIC_SET_MAX + 1 bytes). */
static void topic_set_key(const cluster_presence *cp, const char *topic, char *set)
{
    snprintf(set, CP_TOPIC_SET_MAX + 1, "%stm:%s", cp->prefix, topic);
}

static lws_usec_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (lws_usec_t)ts.tv_sec * LWS_USEC_PER_SEC + (lws_usec_t)ts.tv_nsec / 1000;
}

static enum cluster_presence_state current_state(const cluster_presence *cp)
{
    if (cp->mismatch)
        return CLUSTER_PRESENCE_STATE_KEY_MISMATCH;
    if (cp->refused)
        return CLUSTER_PRESENCE_STATE_REFUSED;
    return cp->registered && cp->link_up && !cp->left ? CLUSTER_PRESENCE_STATE_UP
                                                      : CLUSTER_PRESENCE_STATE_DOWN;
}

/* Reports a change of state, once; logs going up, and going down when
 * the caller has not said why already. */
static void state_changed(cluster_presence *cp, int log_down)
{
    enum cluster_presence_state s = current_state(cp);
    if (s == cp->reported)
        return;
    cp->reported = s;
    if (s == CLUSTER_PRESENCE_STATE_UP)
        LOG_INFO("cluster presence: node %s registered, %llu users and %llu topic members with "
                 "local sessions written back", cp->node,
                 (unsigned long long)read_count(&cp->n_users),
                 (unsigned long long)read_count(&cp->n_members));
    else if (s == CLUSTER_PRESENCE_STATE_DOWN && log_down)
        LOG_WARN("cluster presence: node %s cannot reach Redis; sessions are counted here and "
                 "written back once it answers", cp->node);
    if (cp->handlers.on_state)
        cp->handlers.on_state(s, cp->arg);
}

/* An entry's hash came to exist (up) or went: a user online or
 * offline, or a user who joined or left a topic. Returns -1 for what is
 * no entry (whoever else writes to this Redis put it there). */
static int report_entry(cluster_presence *cp, const char *entry, size_t len, int up,
                        enum cluster_presence_reason reason)
{
    if (strlen(entry) != len || len < 4)
        return -1;
    if (memcmp(entry, "pu:", 3) == 0) {
        if (!sm_name_valid(entry + 3, 1, CLUSTER_PRESENCE_USER_MAX))
            return -1;
        count(up ? &cp->online : &cp->offline, 1);
        if (cp->handlers.on_user)
            cp->handlers.on_user(entry + 3, up, reason, cp->arg);
        return 0;
    }
    const char *colon = memchr(entry + 3, ':', len - 3);
    size_t user_len = colon ? (size_t)(colon - entry - 3) : 0;
    size_t topic_len = colon ? len - 3 - user_len - 1 : 0;
    char user[CLUSTER_PRESENCE_USER_MAX + 1];
    if (memcmp(entry, "pr:", 3) != 0 || user_len == 0 || user_len > CLUSTER_PRESENCE_USER_MAX
        || topic_len == 0 || topic_len > CLUSTER_PRESENCE_TOPIC_MAX)
        return -1;
    memcpy(user, entry + 3, user_len);
    user[user_len] = '\0';
    if (!sm_name_valid(user, 1, CLUSTER_PRESENCE_USER_MAX))
        return -1;
    count(up ? &cp->joined : &cp->parted, 1);
    if (cp->handlers.on_member)
        cp->handlers.on_member(colon + 1, user, up, reason, cp->arg);
    return 0;
}

/* Every entry of an array reply. */
static void report_entries(cluster_presence *cp, const redisReply *entries, int up,
                           enum cluster_presence_reason reason)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_STRING
            || report_entry(cp, e->str, (size_t)e->len, up, reason) != 0)
            LOG_WARN("cluster presence: something in Redis that is no entry of this module; "
                     "skipped");
    }
}

/* An answer that is no answer (NULL: the connection went) or an error:
 * the next registration writes everything back. */
static int script_failed(cluster_presence *cp, const redisReply *r, const char *script)
{
    if (r && r->type != REDIS_REPLY_ERROR)
        return 0;
    count(&cp->lost, 1);
    cp->dirty = 1;
    if (r && !cp->warned_error) {
        cp->warned_error = 1;
        LOG_ERROR("cluster presence: the %s script failed: %s", script,
                  r->str ? r->str : "error");
    }
    return 1;
}

/* ---- register ------------------------------------------------------------- */

static void register_reply(const redisReply *r, void *arg);

/* Sends register with every local count; the node counts as clean from
 * here (a later change is sent after it, on the same connection). */
static void send_register(cluster_presence *cp)
{
    size_t n = hashmap_count(cp->entries);
    if (n > (size_t)(INT32_MAX - 8) / 2) {
        cp->dirty = 1;
        return;
    }
    int argc = 9 + 2 * (int)n;
    const char **argv = calloc((size_t)argc, sizeof *argv);
    char(*numbers)[24] = calloc(n ? n : 1, sizeof *numbers);
    if (!argv || !numbers) {
        free(argv);
        free(numbers);
        cp->dirty = 1;
        return;
    }
    argv[0] = cp->key_node;
    argv[1] = cp->key_nodes;
    argv[2] = cp->key_nu;
    argv[3] = cp->key_fingerprint;
    argv[4] = cp->prefix;
    argv[5] = cp->instance;
    argv[6] = cp->node;
    argv[7] = cp->ttl_text;
    argv[8] = cp->fingerprint;
    hashmap_iter it;
    const void *key;
    void *v;
    int i = 9;
    size_t k = 0;
    hashmap_iter_init(cp->entries, &it);
    while (hashmap_iter_next(&it, &key, NULL, &v)) {
        const cp_count *c = v;
        snprintf(numbers[k], sizeof numbers[k], "%lu", c->sessions);
        argv[i++] = key; /* stored with its NUL (find_entry) */
        argv[i++] = numbers[k++];
    }
    int rc = redis_link_eval(cp->link, cp->register_script, 4, argc, argv, NULL, register_reply,
                             cp);
    free(argv);
    free(numbers);
    if (rc != 0) {
        cp->dirty = 1;
        return;
    }
    cp->dirty = 0;
    cp->register_in_flight = 1;
}

/* register found another fingerprint in Redis: the node takes no part,
 * for good (as when refused). What Redis holds is kept for the getter
 * and the log as printable ASCII, bounded: anyone may have written it. */
static void key_mismatch(cluster_presence *cp, const redisReply *stored)
{
    size_t n = 0;
    if (stored && stored->type == REDIS_REPLY_STRING)
        for (; n < stored->len && n < CLUSTER_PRESENCE_FINGERPRINT_MAX; n++) {
            char c = stored->str[n];
            cp->cluster_fingerprint[n] = c > ' ' && c < 0x7f ? c : '?';
        }
    cp->cluster_fingerprint[n] = '\0';
    cp->refused = 1;
    cp->mismatch = 1;
    LOG_ERROR("cluster presence: this node's server key (fingerprint %s) differs from the "
              "cluster's (%s, key %s in Redis): every node of a cluster serves the same key; "
              "copy server.key_file from a running node", cp->fingerprint, cp->cluster_fingerprint,
              cp->key_fingerprint);
    state_changed(cp, 0);
}

static void register_reply(const redisReply *r, void *arg)
{
    cluster_presence *cp = arg;
    cp->register_in_flight = 0;
    if (cp->stopping || script_failed(cp, r, "register"))
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_INTEGER) {
        script_failed(cp, NULL, "register");
        return;
    }
    if (r->element[0]->integer == 2) {
        key_mismatch(cp, r->elements == 2 ? r->element[1] : NULL);
        return;
    }
    if (r->element[0]->integer == 0) {
        /* Held by another instance. A previous run of this node that
         * crashed holds it until its key expires (alive_ttl_ms): a node
         * that never registered waits that long, registering again at
         * each refresh, before it takes the id for another live node's. */
        lws_usec_t patience = (lws_usec_t)(cp->ttl_ms + 2 * cp->refresh_ms) * LWS_US_PER_MS;
        if (!cp->ever_registered && now_us() - cp->started < patience) {
            if (!cp->warned_held)
                LOG_WARN("cluster presence: the node id '%s' is held by another instance (a "
                         "previous run that stopped without leaving?); waiting up to %u ms for "
                         "its key %s to expire",
                         cp->node, cp->ttl_ms + 2 * cp->refresh_ms, cp->key_node);
            cp->warned_held = 1;
            cp->dirty = 1;
            return;
        }
        cp->refused = 1;
        LOG_ERROR("cluster presence: another node runs with the node id '%s' (its key %s is "
                  "alive and holds another instance); this node takes no part in presence",
                  cp->node, cp->key_node);
        state_changed(cp, 0);
        return;
    }
    if (r->elements == 3) {
        report_entries(cp, r->element[1], 1, CLUSTER_PRESENCE_RESYNC);
        report_entries(cp, r->element[2], 0, CLUSTER_PRESENCE_RESYNC);
    }
    count(&cp->registrations, 1);
    if (!cp->link_up) {
        cp->dirty = 1; /* the link went meanwhile: again once it is back */
        return;
    }
    if (!cp->registered)
        cp->registered_since = now_us();
    cp->registered = 1;
    cp->ever_registered = 1;
    cp->warned_error = 0;
    state_changed(cp, 0);
}

/* ---- the timers ------------------------------------------------------------ */

/* node:<id> no longer holds this instance (it expired, or someone
 * deleted it): register again, which writes every count back. */
static void lapsed(cluster_presence *cp)
{
    cp->dirty = 1;
    if (cp->refused || cp->left)
        return;
    if (cp->registered) {
        LOG_WARN("cluster presence: node %s's key %s expired (Redis or this node too slow for "
                 "%u ms); registering again", cp->node, cp->key_node, cp->ttl_ms);
        cp->registered = 0;
        state_changed(cp, 0);
    }
    if (cp->link_up && !cp->register_in_flight)
        send_register(cp);
}

static void refresh_reply(const redisReply *r, void *arg)
{
    cluster_presence *cp = arg;
    cp->refresh_in_flight = 0;
    if (cp->stopping || script_failed(cp, r, "refresh") || r->type != REDIS_REPLY_INTEGER
        || cp->left)
        return;
    if (r->integer == 1)
        return;
    if (r->integer < 0) {
        cp->refused = 1;
        LOG_ERROR("cluster presence: node %s lapsed and another node took its id (key %s); "
                  "this node takes no part in presence any more", cp->node, cp->key_node);
        state_changed(cp, 0);
        return;
    }
    lapsed(cp);
}

static void refresh_cb(lws_sorted_usec_list_t *sul)
{
    cluster_presence *cp = lws_container_of(sul, cluster_presence, refresh_timer);
    if (cp->refused || cp->left)
        return;
    lws_sul_schedule(cp->ctx, 0, &cp->refresh_timer, refresh_cb,
                     (lws_usec_t)cp->refresh_ms * LWS_US_PER_MS);
    if (!cp->link_up)
        return;
    if (!cp->registered || cp->dirty) {
        if (!cp->register_in_flight)
            send_register(cp);
        return;
    }
    if (cp->refresh_in_flight)
        return;
    const char *argv[] = { cp->key_node, cp->instance, cp->ttl_text };
    if (redis_link_eval(cp->link, cp->refresh_script, 1, 3, argv, NULL, refresh_reply, cp) == 0)
        cp->refresh_in_flight = 1;
}

static void reap_reply(const redisReply *r, void *arg)
{
    cluster_presence *cp = arg;
    cp->reap_in_flight = 0;
    if (cp->stopping || r == NULL)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        if (!cp->warned_error)
            LOG_ERROR("cluster presence: the reap script failed: %s",
                      r->type == REDIS_REPLY_ERROR && r->str ? r->str : "unexpected reply");
        cp->warned_error = 1;
        return;
    }
    const redisReply *nodes = r->element[0], *entries = r->element[1];
    if (nodes->type == REDIS_REPLY_ARRAY && nodes->elements > 0) {
        count(&cp->reaped_nodes, (int64_t)nodes->elements);
        for (size_t i = 0; i < nodes->elements; i++)
            LOG_WARN("cluster presence: node %.*s is gone (its key expired); node %s removed "
                     "its sessions", CLUSTER_PRESENCE_NODE_MAX,
                     nodes->element[i]->str ? nodes->element[i]->str : "?", cp->node);
    }
    report_entries(cp, entries, 0, CLUSTER_PRESENCE_REAPED);
}

static void reap_cb(lws_sorted_usec_list_t *sul)
{
    cluster_presence *cp = lws_container_of(sul, cluster_presence, reap_timer);
    if (cp->refused || cp->left)
        return;
    lws_sul_schedule(cp->ctx, 0, &cp->reap_timer, reap_cb,
                     (lws_usec_t)cp->reap_ms * LWS_US_PER_MS);
    /* Just registered: the others may not be back yet (the header). */
    if (current_state(cp) != CLUSTER_PRESENCE_STATE_UP || cp->reap_in_flight
        || now_us() - cp->registered_since < (lws_usec_t)cp->ttl_ms * LWS_US_PER_MS)
        return;
    const char *argv[] = { cp->key_nodes, cp->prefix, cp->node };
    if (redis_link_eval(cp->link, cp->reap_script, 1, 3, argv, NULL, reap_reply, cp) == 0)
        cp->reap_in_flight = 1;
}

static void on_link_state(int up, void *arg)
{
    cluster_presence *cp = arg;
    cp->link_up = up;
    if (cp->refused || cp->left)
        return;
    if (up) {
        if (!cp->register_in_flight)
            send_register(cp);
    } else {
        cp->registered = 0;
    }
    state_changed(cp, 1);
}

/* ---- sessions -------------------------------------------------------------- */

static void session_reply(const redisReply *r, void *arg)
{
    cp_call *call = arg;
    cluster_presence *cp = call->cp;
    if (!cp->stopping && !script_failed(cp, r, "session")) {
        if (r->type != REDIS_REPLY_INTEGER)
            script_failed(cp, NULL, "session");
        else if (r->integer == 2)
            lapsed(cp); /* under this call: register writes it back */
        else if (r->integer != 0)
            report_entry(cp, call->entry, strlen(call->entry), r->integer > 0,
                         CLUSTER_PRESENCE_SESSION);
    }
    free(call);
}

/* Tells Redis the node's count for entry now; the count is already in
 * memory. */
static int send_count(cluster_presence *cp, const char *entry, unsigned long sessions)
{
    if (cp->refused || cp->left)
        return CLUSTER_PRESENCE_REFUSED;
    if (!cp->link_up || !(cp->registered || cp->register_in_flight)) {
        cp->dirty = 1;
        count(&cp->not_sent, 1);
        return CLUSTER_PRESENCE_DOWN;
    }
    cp_call *call = calloc(1, sizeof *call);
    if (!call) {
        cp->dirty = 1;
        return CLUSTER_PRESENCE_NO_MEMORY;
    }
    call->cp = cp;
    snprintf(call->entry, sizeof call->entry, "%s", entry);
    char key[CLUSTER_PRESENCE_PREFIX_MAX + CP_ENTRY_MAX + 1], n[24];
    char set[CP_TOPIC_SET_MAX + 1], user[CLUSTER_PRESENCE_USER_MAX + 1];
    snprintf(key, sizeof key, "%s%s", cp->prefix, entry);
    snprintf(n, sizeof n, "%lu", sessions);
    /* A pr entry also passes its topic's index set (a KEY) and the user. */
    const char *colon = strncmp(entry, "pr:", 3) == 0 ? strchr(entry + 3, ':') : NULL;
    const char *argv[9] = { cp->key_node, key, cp->key_nu };
    int argc = 3;
    if (colon) {
        snprintf(user, sizeof user, "%.*s", (int)(colon - entry - 3), entry + 3);
        topic_set_key(cp, colon + 1, set);
        argv[argc++] = set;
    }
    int numkeys = argc;
    argv[argc++] = cp->instance;
    argv[argc++] = cp->node;
    argv[argc++] = entry;
    argv[argc++] = n;
    if (colon)
        argv[argc++] = user;
    int rc = redis_link_eval(cp->link, cp->session_script, numkeys, argc, argv, NULL,
                             session_reply, call);
    if (rc != 0) {
        free(call);
        cp->dirty = 1;
        count(&cp->not_sent, 1);
    }
    return rc;
}

/* The entry for user alone (topic NULL) or for user in topic, into
 * entry (CP_ENTRY_MAX + 1 bytes), the user lower-cased; its length with
 * the NUL in *len (the map's keys keep it, so that send_register can
 * pass them on as they are) and its count (NULL: none here). 0, or -1
 * for a bad name or topic. */
static int find_entry(const cluster_presence *cp, const char *topic, const char *user,
                      char *entry, size_t *len, cp_count **out)
{
    char name[CLUSTER_PRESENCE_USER_MAX + 1];
    if (!user || !sm_name_valid(user, 1, CLUSTER_PRESENCE_USER_MAX)
        || sm_name_fold(user, name, sizeof name) != SM_OK)
        return -1;
    size_t topic_len = topic ? strnlen(topic, CLUSTER_PRESENCE_TOPIC_MAX + 1) : 0;
    if (topic && (topic_len == 0 || topic_len > CLUSTER_PRESENCE_TOPIC_MAX))
        return -1;
    int n = topic ? snprintf(entry, CP_ENTRY_MAX + 1, "pr:%s:%s", name, topic)
                  : snprintf(entry, CP_ENTRY_MAX + 1, "pu:%s", name);
    *len = (size_t)n + 1;
    *out = hashmap_get(cp->entries, entry, *len);
    return 0;
}

static void count_entries(cluster_presence *cp, const char *topic, int64_t delta)
{
    count(topic ? &cp->n_members : &cp->n_users, delta);
}

static int entry_up(cluster_presence *cp, const char *topic, const char *user)
{
    char entry[CP_ENTRY_MAX + 1];
    size_t len;
    cp_count *c;
    if (find_entry(cp, topic, user, entry, &len, &c) != 0)
        return CLUSTER_PRESENCE_INVALID;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || hashmap_put(cp->entries, entry, len, c) != 0) {
            free(c);
            return CLUSTER_PRESENCE_NO_MEMORY;
        }
        count_entries(cp, topic, 1);
    }
    c->sessions++;
    return send_count(cp, entry, c->sessions);
}

static int entry_down(cluster_presence *cp, const char *topic, const char *user)
{
    char entry[CP_ENTRY_MAX + 1];
    size_t len;
    cp_count *c;
    if (find_entry(cp, topic, user, entry, &len, &c) != 0 || !c)
        return CLUSTER_PRESENCE_INVALID;
    unsigned long left = --c->sessions;
    if (left == 0) {
        free(hashmap_remove(cp->entries, entry, len));
        count_entries(cp, topic, -1);
    }
    return send_count(cp, entry, left);
}

static unsigned long entry_sessions(const cluster_presence *cp, const char *topic,
                                    const char *user)
{
    char entry[CP_ENTRY_MAX + 1];
    size_t len;
    cp_count *c;
    if (find_entry(cp, topic, user, entry, &len, &c) != 0 || !c)
        return 0;
    return c->sessions;
}

int cluster_presence_session_up(cluster_presence *cp, const char *user)
{
    return entry_up(cp, NULL, user);
}

int cluster_presence_session_down(cluster_presence *cp, const char *user)
{
    return entry_down(cp, NULL, user);
}

unsigned long cluster_presence_local_sessions(const cluster_presence *cp, const char *user)
{
    return entry_sessions(cp, NULL, user);
}

int cluster_presence_topic_join(cluster_presence *cp, const char *topic, const char *user)
{
    return topic ? entry_up(cp, topic, user) : CLUSTER_PRESENCE_INVALID;
}

int cluster_presence_topic_leave(cluster_presence *cp, const char *topic, const char *user)
{
    return topic ? entry_down(cp, topic, user) : CLUSTER_PRESENCE_INVALID;
}

unsigned long cluster_presence_local_members(const cluster_presence *cp, const char *topic,
                                             const char *user)
{
    return topic ? entry_sessions(cp, topic, user) : 0;
}

/* ---- queries ----------------------------------------------------------------- */

/* A query_online in flight: the users asked about (folded), and room for
 * the answer, taken before sending so that the reply needs no memory. */
typedef struct cp_online_query {
    cluster_presence *cp;
    cluster_presence_online_fn done;
    void *arg;
    size_t n;
    char (*users)[CLUSTER_PRESENCE_USER_MAX + 1];
    int *online;
} cp_online_query;

static void free_online_query(cp_online_query *q)
{
    free(q->users);
    free(q->online);
    free(q);
}

/* Adds this node's own sessions to the flags (all of the answer when
 * Redis gave none), runs done and frees q. */
static void finish_online(cp_online_query *q, int status)
{
    for (size_t i = 0; i < q->n; i++)
        if (cluster_presence_local_sessions(q->cp, q->users[i]) > 0)
            q->online[i] = 1;
    q->done(status, q->online, q->n, q->arg);
    free_online_query(q);
}

/* The reply of a script or command that answers a query: an error reply
 * is logged (once per registration, as the others' are) and, as a lost
 * one, gives the local answer. */
static int query_answered(cluster_presence *cp, const redisReply *r, const char *what)
{
    if (!r || cp->stopping)
        return 0;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!cp->warned_error)
            LOG_ERROR("cluster presence: the %s query failed: %s", what,
                      r->str ? r->str : "error");
        cp->warned_error = 1;
        return 0;
    }
    return 1;
}

static void online_reply(const redisReply *r, void *arg)
{
    cp_online_query *q = arg;
    int status = CLUSTER_PRESENCE_DOWN;
    if (query_answered(q->cp, r, "online")) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements == q->n) {
            status = CLUSTER_PRESENCE_OK;
            for (size_t i = 0; i < q->n; i++) {
                const redisReply *e = r->element[i];
                if (e->type != REDIS_REPLY_INTEGER) {
                    status = CLUSTER_PRESENCE_DOWN;
                    break;
                }
                q->online[i] = e->integer != 0;
            }
        }
        if (status != CLUSTER_PRESENCE_OK) {
            memset(q->online, 0, q->n * sizeof *q->online);
            LOG_WARN("cluster presence: an unexpected reply to the online query; answered "
                     "from this node's sessions");
        }
    }
    finish_online(q, status);
}

/* Sends the online script for q; REDIS_LINK's status. */
static int send_online(cluster_presence *cp, cp_online_query *q)
{
    if (q->n > (size_t)INT32_MAX)
        return CLUSTER_PRESENCE_INVALID;
    enum { KEY_LEN = CLUSTER_PRESENCE_PREFIX_MAX + 3 + CLUSTER_PRESENCE_USER_MAX + 1 };
    const char **argv = calloc(q->n, sizeof *argv);
    char(*keys)[KEY_LEN] = calloc(q->n, sizeof *keys);
    if (!argv || !keys) {
        free(argv);
        free(keys);
        return CLUSTER_PRESENCE_NO_MEMORY;
    }
    for (size_t i = 0; i < q->n; i++) {
        snprintf(keys[i], sizeof keys[i], "%spu:%s", cp->prefix, q->users[i]);
        argv[i] = keys[i];
    }
    int rc = redis_link_eval(cp->link, cp->online_script, (int)q->n, (int)q->n, argv, NULL,
                             online_reply, q);
    free(argv);
    free(keys);
    return rc;
}

/* Why a query cannot go to Redis now (0: it can). While stopping the
 * link is going: nothing is sent. */
static int query_blocked(const cluster_presence *cp)
{
    if (cp->stopping)
        return CLUSTER_PRESENCE_DOWN;
    if (cp->refused || cp->left)
        return CLUSTER_PRESENCE_REFUSED;
    return cp->link_up ? 0 : CLUSTER_PRESENCE_DOWN;
}

int cluster_presence_query_online(cluster_presence *cp, const char *const *users, size_t n,
                                  cluster_presence_online_fn done, void *arg)
{
    if (!cp || !done || (n && !users))
        return CLUSTER_PRESENCE_INVALID;
    for (size_t i = 0; i < n; i++)
        if (!users[i] || !sm_name_valid(users[i], 1, CLUSTER_PRESENCE_USER_MAX))
            return CLUSTER_PRESENCE_INVALID;
    if (n == 0) {
        done(CLUSTER_PRESENCE_OK, NULL, 0, arg);
        return CLUSTER_PRESENCE_OK;
    }
    cp_online_query *q = calloc(1, sizeof *q);
    if (q) {
        q->users = calloc(n, sizeof *q->users);
        q->online = calloc(n, sizeof *q->online);
    }
    if (!q || !q->users || !q->online) {
        if (q)
            free_online_query(q);
        return CLUSTER_PRESENCE_NO_MEMORY;
    }
    q->cp = cp;
    q->done = done;
    q->arg = arg;
    q->n = n;
    for (size_t i = 0; i < n; i++)
        sm_name_fold(users[i], q->users[i], sizeof q->users[i]);
    int rc = query_blocked(cp);
    if (rc == 0)
        rc = send_online(cp, q);
    if (rc == 0)
        return CLUSTER_PRESENCE_OK; /* online_reply finishes it */
    if (rc != CLUSTER_PRESENCE_DOWN && rc != CLUSTER_PRESENCE_BUSY
        && rc != CLUSTER_PRESENCE_REFUSED) {
        free_online_query(q);
        return rc;
    }
    finish_online(q, rc);
    return CLUSTER_PRESENCE_OK;
}

/* A query_members in flight: its topic, for the local answer. */
typedef struct cp_members_query {
    cluster_presence *cp;
    cluster_presence_members_fn done;
    void *arg;
    char topic[CLUSTER_PRESENCE_TOPIC_MAX + 1];
} cp_members_query;

static int compare_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The user of a local entry "pr:<user>:<topic>" (key_len with its NUL)
 * when its topic is topic, into user; else 0. */
static int local_member(const char *key, size_t key_len, const char *topic, size_t topic_len,
                        char *user)
{
    if (key_len < 6 || memcmp(key, "pr:", 3) != 0)
        return 0;
    const char *colon = memchr(key + 3, ':', key_len - 4);
    if (!colon)
        return 0;
    size_t user_len = (size_t)(colon - key - 3);
    if (user_len == 0 || user_len > CLUSTER_PRESENCE_USER_MAX
        || key_len - 1 - user_len - 4 != topic_len || memcmp(colon + 1, topic, topic_len) != 0)
        return 0;
    memcpy(user, key + 3, user_len);
    user[user_len] = '\0';
    return 1;
}

/* Answers a members query: Redis's members (reply, NULL for none) and
 * this node's own (sessions Redis may not have been told of yet), each
 * user once. Returns NO_MEMORY without calling done when that is
 * short. */
static int answer_members(cluster_presence *cp, const char *topic, int status,
                          const redisReply *reply, cluster_presence_members_fn done, void *arg)
{
    size_t from_redis = reply ? reply->elements : 0;
    size_t max = from_redis + hashmap_count(cp->entries);
    char(*names)[CLUSTER_PRESENCE_USER_MAX + 1] = calloc(max ? max : 1, sizeof *names);
    const char **list = calloc(max ? max : 1, sizeof *list);
    if (!names || !list) {
        free(names);
        free(list);
        return CLUSTER_PRESENCE_NO_MEMORY;
    }
    size_t n = 0, skipped = 0;
    for (size_t i = 0; i < from_redis; i++) {
        const redisReply *e = reply->element[i];
        /* Anyone may write to Redis: names only. */
        if (e->type != REDIS_REPLY_STRING || strlen(e->str) != e->len
            || !sm_name_valid(e->str, 1, CLUSTER_PRESENCE_USER_MAX)
            || sm_name_fold(e->str, names[n], sizeof names[n]) != SM_OK)
            skipped++;
        else
            n++;
    }
    if (skipped)
        LOG_WARN("cluster presence: %zu members of topic index %stm:%s are no user names; "
                 "skipped", skipped, cp->prefix, topic);
    size_t topic_len = strlen(topic);
    hashmap_iter it;
    const void *key;
    size_t key_len;
    hashmap_iter_init(cp->entries, &it);
    while (hashmap_iter_next(&it, &key, &key_len, NULL))
        if (local_member(key, key_len, topic, topic_len, names[n]))
            n++;
    /* Each once: sorted, duplicates dropped. */
    if (n > 1)
        qsort(names, n, sizeof *names, compare_names);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(list[k - 1], names[i]) != 0)
            list[k++] = names[i];
    done(status, list, k, arg);
    free(names);
    free(list);
    return CLUSTER_PRESENCE_OK;
}

static void members_reply(const redisReply *r, void *arg)
{
    cp_members_query *q = arg;
    int status = CLUSTER_PRESENCE_DOWN;
    if (query_answered(q->cp, r, "members")) {
        if (r->type == REDIS_REPLY_ARRAY)
            status = CLUSTER_PRESENCE_OK;
        else
            LOG_WARN("cluster presence: an unexpected reply to the members query; answered "
                     "from this node's sessions");
    }
    if (answer_members(q->cp, q->topic, status, status == CLUSTER_PRESENCE_OK ? r : NULL,
                       q->done, q->arg) != 0) {
        LOG_ERROR("cluster presence: out of memory for the members of a topic");
        q->done(CLUSTER_PRESENCE_NO_MEMORY, NULL, 0, q->arg);
    }
    free(q);
}

int cluster_presence_query_members(cluster_presence *cp, const char *topic,
                                   cluster_presence_members_fn done, void *arg)
{
    size_t topic_len = topic ? strnlen(topic, CLUSTER_PRESENCE_TOPIC_MAX + 1) : 0;
    if (!cp || !done || topic_len == 0 || topic_len > CLUSTER_PRESENCE_TOPIC_MAX)
        return CLUSTER_PRESENCE_INVALID;
    int rc = query_blocked(cp);
    if (rc != 0)
        return answer_members(cp, topic, rc, NULL, done, arg);
    cp_members_query *q = calloc(1, sizeof *q);
    if (!q)
        return CLUSTER_PRESENCE_NO_MEMORY;
    q->cp = cp;
    q->done = done;
    q->arg = arg;
    memcpy(q->topic, topic, topic_len + 1);
    char set[CP_TOPIC_SET_MAX + 1];
    topic_set_key(cp, topic, set);
    const char *argv[] = { "SMEMBERS", set };
    rc = redis_link_command(cp->link, 2, argv, NULL, members_reply, q);
    if (rc == 0)
        return CLUSTER_PRESENCE_OK;
    free(q);
    if (rc != CLUSTER_PRESENCE_DOWN && rc != CLUSTER_PRESENCE_BUSY)
        return rc;
    return answer_members(cp, topic, rc, NULL, done, arg);
}

/* ---- leave ----------------------------------------------------------------- */

static void leave_reply(const redisReply *r, void *arg)
{
    cluster_presence *cp = arg;
    int status = CLUSTER_PRESENCE_DOWN;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1
        && r->element[0]->type == REDIS_REPLY_INTEGER) {
        status = CLUSTER_PRESENCE_OK;
        if (r->element[0]->integer == 1 && r->elements == 2 && !cp->stopping)
            report_entries(cp, r->element[1], 0, CLUSTER_PRESENCE_LEFT);
        LOG_INFO("cluster presence: node %s left the cluster", cp->node);
    } else if (r) {
        LOG_ERROR("cluster presence: the leave script failed: %s",
                  r->type == REDIS_REPLY_ERROR && r->str ? r->str : "unexpected reply");
    }
    if (cp->leave_done)
        cp->leave_done(status, cp->leave_arg);
}

int cluster_presence_leave(cluster_presence *cp, void (*done)(int status, void *arg), void *arg)
{
    if (cp->refused || cp->left)
        return CLUSTER_PRESENCE_REFUSED;
    if (!cp->link_up)
        return CLUSTER_PRESENCE_DOWN;
    const char *argv[] = { cp->key_node, cp->prefix, cp->instance, cp->node };
    int rc = redis_link_eval(cp->link, cp->leave_script, 1, 4, argv, NULL, leave_reply, cp);
    if (rc != 0)
        return rc;
    cp->left = 1;
    cp->leave_done = done;
    cp->leave_arg = arg;
    lws_sul_cancel(&cp->refresh_timer);
    lws_sul_cancel(&cp->reap_timer);
    state_changed(cp, 0);
    return 0;
}

/* ---- start and stop ------------------------------------------------------ */

static int start_error(char *err, size_t err_len, int status, const char *fmt, ...)
    SM_PRINTF(4, 5);

static int start_error(char *err, size_t err_len, int status, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return status;
}

static int prefix_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CLUSTER_PRESENCE_PREFIX_MAX || !(sm_name_char(s[n]) || s[n] == ':'))
            return 0;
    return 1;
}

/* "" (no check) or printable ASCII without spaces, bounded: it goes
 * into Redis and the log as it is. */
static int fingerprint_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CLUSTER_PRESENCE_FINGERPRINT_MAX || s[n] <= ' ' || s[n] >= 0x7f)
            return 0;
    return 1;
}

/* One interval: 0 gives the default; else within the bounds. */
static int interval(unsigned given, unsigned def, unsigned *out)
{
    *out = given ? given : def;
    return *out >= CP_INTERVAL_MIN_MS && *out <= CP_INTERVAL_MAX_MS;
}

static int check_options(const cluster_presence_options *o, unsigned *ttl, unsigned *refresh,
                         unsigned *reap, char *err, size_t err_len)
{
    if (!o || !o->node_id || !sm_name_valid(o->node_id, 1, CLUSTER_PRESENCE_NODE_MAX))
        return start_error(err, err_len, CLUSTER_PRESENCE_INVALID,
                           "cluster presence: the node id must be 1 to %d of A-Z a-z 0-9 _ . -",
                           CLUSTER_PRESENCE_NODE_MAX);
    if (!o->prefix || !prefix_valid(o->prefix))
        return start_error(err, err_len, CLUSTER_PRESENCE_INVALID,
                           "cluster presence: the key prefix must be 0 to %d of A-Z a-z 0-9 _ . "
                           ": -", CLUSTER_PRESENCE_PREFIX_MAX);
    if (o->fingerprint && !fingerprint_valid(o->fingerprint))
        return start_error(err, err_len, CLUSTER_PRESENCE_INVALID,
                           "cluster presence: the key fingerprint must be at most %d printable "
                           "ASCII characters without spaces", CLUSTER_PRESENCE_FINGERPRINT_MAX);
    if (!interval(o->alive_ttl_ms, CLUSTER_PRESENCE_ALIVE_TTL_MS, ttl)
        || !interval(o->refresh_ms, CLUSTER_PRESENCE_REFRESH_MS, refresh)
        || !interval(o->reap_interval_ms, CLUSTER_PRESENCE_REAP_INTERVAL_MS, reap))
        return start_error(err, err_len, CLUSTER_PRESENCE_INVALID,
                           "cluster presence: each interval must be from %u to %u ms",
                           CP_INTERVAL_MIN_MS, CP_INTERVAL_MAX_MS);
    if (*refresh > *ttl / 2)
        return start_error(err, err_len, CLUSTER_PRESENCE_INVALID,
                           "cluster presence: the refresh interval (%u ms) must be at most half "
                           "the key's lifetime (%u ms)", *refresh, *ttl);
    return 0;
}

static int add_scripts(cluster_presence *cp)
{
    const struct {
        const char *source;
        redis_link_script **out;
    } scripts[] = {
        { session_lua, &cp->session_script }, { register_lua, &cp->register_script },
        { refresh_lua, &cp->refresh_script }, { reap_lua, &cp->reap_script },
        { leave_lua, &cp->leave_script }, { online_lua, &cp->online_script },
    };
    for (size_t i = 0; i < sizeof scripts / sizeof scripts[0]; i++)
        if (redis_link_script_add(cp->link, scripts[i].source, scripts[i].out) != 0)
            return -1;
    return 0;
}

static void free_count(void *v)
{
    free(v);
}

int cluster_presence_start(struct lws_context *ctx, const cluster_presence_options *options,
                           const cluster_presence_handlers *handlers, void *arg,
                           cluster_presence **out, char *err, size_t err_len)
{
    unsigned ttl = 0, refresh = 0, reap = 0;
    int rc = check_options(options, &ttl, &refresh, &reap, err, err_len);
    if (rc != 0)
        return rc;
    unsigned char random[CP_INSTANCE_LEN / 2];
    if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random)
        return start_error(err, err_len, CLUSTER_PRESENCE_NO_MEMORY,
                           "cluster presence: no random bytes for the instance");
    cluster_presence *cp = calloc(1, sizeof *cp);
    if (!cp || !(cp->entries = hashmap_new())) {
        free(cp);
        return start_error(err, err_len, CLUSTER_PRESENCE_NO_MEMORY, "out of memory");
    }
    cp->ctx = ctx;
    if (handlers)
        cp->handlers = *handlers;
    cp->arg = arg;
    cp->ttl_ms = ttl;
    cp->refresh_ms = refresh;
    cp->reap_ms = reap;
    snprintf(cp->ttl_text, sizeof cp->ttl_text, "%u", ttl);
    snprintf(cp->node, sizeof cp->node, "%s", options->node_id);
    snprintf(cp->prefix, sizeof cp->prefix, "%s", options->prefix);
    for (size_t i = 0; i < sizeof random; i++)
        snprintf(cp->instance + 2 * i, 3, "%02x", random[i]);
    snprintf(cp->key_node, sizeof cp->key_node, "%snode:%s", cp->prefix, cp->node);
    snprintf(cp->key_nodes, sizeof cp->key_nodes, "%snodes", cp->prefix);
    snprintf(cp->key_nu, sizeof cp->key_nu, "%snu:%s", cp->prefix, cp->node);
    snprintf(cp->key_fingerprint, sizeof cp->key_fingerprint, "%sfingerprint", cp->prefix);
    snprintf(cp->fingerprint, sizeof cp->fingerprint, "%s",
             options->fingerprint ? options->fingerprint : "");
    cp->reported = CLUSTER_PRESENCE_STATE_DOWN;
    cp->started = now_us();
    const redis_link_handlers lh = { NULL, on_link_state };
    rc = redis_link_start(ctx, options->redis_url, &lh, cp, &cp->link, err, err_len);
    if (rc == 0 && add_scripts(cp) != 0)
        rc = start_error(err, err_len, CLUSTER_PRESENCE_NO_MEMORY, "out of memory");
    if (rc != 0) {
        redis_link_stop(cp->link);
        hashmap_free(cp->entries, NULL);
        free(cp);
        return rc;
    }
    lws_sul_schedule(ctx, 0, &cp->refresh_timer, refresh_cb,
                     (lws_usec_t)refresh * LWS_US_PER_MS);
    lws_sul_schedule(ctx, 0, &cp->reap_timer, reap_cb, (lws_usec_t)reap * LWS_US_PER_MS);
    *out = cp;
    return 0;
}

void cluster_presence_stop(cluster_presence *cp)
{
    if (!cp)
        return;
    cp->stopping = 1;
    lws_sul_cancel(&cp->refresh_timer);
    lws_sul_cancel(&cp->reap_timer);
    /* Runs what is in flight with NULL: the calls' records are freed. */
    redis_link_stop(cp->link);
    hashmap_free(cp->entries, free_count);
    free(cp);
}

enum cluster_presence_state cluster_presence_get_state(const cluster_presence *cp)
{
    return current_state(cp);
}

const char *cluster_presence_cluster_fingerprint(const cluster_presence *cp)
{
    return cp->mismatch ? cp->cluster_fingerprint : NULL;
}

void cluster_presence_get_counters(const cluster_presence *cp, cluster_presence_counters *out)
{
    out->online = read_count(&cp->online);
    out->offline = read_count(&cp->offline);
    out->registered = read_count(&cp->registrations);
    out->reaped_nodes = read_count(&cp->reaped_nodes);
    out->not_sent = read_count(&cp->not_sent);
    out->lost = read_count(&cp->lost);
    out->users = read_count(&cp->n_users);
    out->joined = read_count(&cp->joined);
    out->left = read_count(&cp->parted);
    out->members = read_count(&cp->n_members);
}

const struct redis_link *cluster_presence_link(const cluster_presence *cp)
{
    return cp->link;
}

const char *cluster_presence_status_text(int status)
{
    if (status == CLUSTER_PRESENCE_REFUSED)
        return "this node takes no part in cluster presence (its id is taken, its server key "
               "is not the cluster's, or it left)";
    return redis_link_status_text(status);
}
