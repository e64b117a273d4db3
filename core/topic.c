#include "topic.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "cluster.h"
#include "core.h"
#include "presence.h"
#include "session.h"
#include "session_io.h"

typedef struct topic {
    char *name;
    hashmap *members; /* sm_session_id -> session * */
    hashmap *users;   /* folded user name (with its NUL) -> its member sessions here */
    bucket fanout;    /* limits.room_fanout_bytes_per_second */
} topic;

static topic *find(const char *name)
{
    return hashmap_get(g_core.topics, name, strlen(name));
}

static void topic_free(topic *t)
{
    hashmap_free(t->members, NULL);
    hashmap_free(t->users, NULL);
    free(t->name);
    free(t);
}

/* Counts a member session of user (folded) in t; returns the count. The
 * keys hold their NUL, so topic_user_keys can hand them out as strings. */
static uintptr_t user_count(topic *t, const char *user, int delta)
{
    size_t len = strlen(user) + 1;
    uintptr_t n = (uintptr_t)hashmap_get(t->users, user, len);
    n = delta > 0 ? n + 1 : n - 1;
    if (n == 0)
        hashmap_remove(t->users, user, len);
    else if (hashmap_put(t->users, user, len, (void *)n) != 0)
        return 0;
    return n;
}

static int session_track(struct session *s, const char *name, char *user)
{
    if (s->n_topics == s->cap_topics) {
        size_t cap = s->cap_topics ? s->cap_topics * 2 : 4;
        struct session_topic *topics = realloc(s->topics, cap * sizeof *topics);
        if (!topics)
            return -1;
        s->topics = topics;
        s->cap_topics = cap;
    }
    s->topics[s->n_topics++] = (struct session_topic){.name = name, .user = user};
    return 0;
}

/* Forgets the session's entry for name and returns its user (the
 * caller's to free), NULL if it had none. */
static char *session_untrack(struct session *s, const char *name)
{
    for (size_t i = 0; i < s->n_topics; i++) {
        if (s->topics[i].name == name) {
            char *user = s->topics[i].user;
            s->topics[i] = s->topics[--s->n_topics];
            return user;
        }
    }
    return NULL;
}

int topic_name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    /* A first byte below 0x20 names the core's own channels (cluster.h). */
    return len > 0 && len <= TOPIC_NAME_MAX && (unsigned char)name[0] >= 0x20;
}

/* A topic with a name of len bytes, in the table and, in a cluster,
 * subscribed to (other nodes' publishes come here); NULL when out of
 * memory. */
static topic *topic_create(const char *name, size_t len)
{
    topic *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->name = malloc(len + 1);
    t->members = hashmap_new();
    t->users = hashmap_new();
    if (!t->name || !t->members || !t->users)
        goto fail;
    memcpy(t->name, name, len + 1);
    if (hashmap_put(g_core.topics, t->name, len, t) != 0)
        goto fail;
    if (cluster_topic_subscribe(t->name) != SM_OK) {
        hashmap_remove(g_core.topics, t->name, len);
        goto fail;
    }
    bucket_init(&t->fanout, (double)g_core.sc->room_fanout_burst, core_mono_now());
    return t;
fail:
    topic_free(t);
    return NULL;
}

static void topic_drop(topic *t)
{
    hashmap_remove(g_core.topics, t->name, strlen(t->name));
    cluster_topic_unsubscribe(t->name);
    topic_free(t);
}

int topic_join(const char *name, struct session *s)
{
    size_t len = name ? strlen(name) : 0;
    if (!topic_name_ok(name))
        return SM_EINVAL;
    topic *t = find(name);
    int created = 0;
    if (!t) {
        t = topic_create(name, len);
        if (!t)
            return SM_ENOMEM;
        created = 1;
    }
    if (hashmap_get_u64(t->members, s->id))
        return SM_OK;
    char key[SESSION_USERNAME_MAX + 1], *user = NULL;
    if (s->username && sm_name_fold(s->username, key, sizeof key) == SM_OK)
        user = core_strdup(key);
    uintptr_t count = 0;
    if ((s->username && !user) || hashmap_put_u64(t->members, s->id, s) != 0 ||
        (user && (count = user_count(t, user, 1)) == 0) || session_track(s, t->name, user) != 0) {
        if (count)
            user_count(t, user, -1);
        hashmap_remove_u64(t->members, s->id);
        free(user);
        if (created)
            topic_drop(t);
        return SM_ENOMEM;
    }
    if (user)
        presence_topic_up(t->name, s->id, s->username, count == 1);
    return SM_OK;
}

/* The topic may be freed on return; a presence event may run plugins,
 * so nothing of t is read after it. */
static void leave(topic *t, struct session *s)
{
    hashmap_remove_u64(t->members, s->id);
    char *user = session_untrack(s, t->name);
    uintptr_t left = user ? user_count(t, user, -1) : 0;
    char name[TOPIC_NAME_MAX + 1];
    if (user)
        snprintf(name, sizeof name, "%s", t->name);
    if (hashmap_count(t->members) == 0)
        topic_drop(t);
    if (user) {
        /* The login's spelling, unless the session logged out (or in
         * as someone else) since it joined. */
        const char *who = s->username && sm_name_equal(s->username, user) ? s->username : NULL;
        presence_topic_down(name, s->id, who, user, left == 0);
        free(user);
    }
}

int topic_leave(const char *name, struct session *s)
{
    topic *t = name ? find(name) : NULL;
    if (!t || !hashmap_get_u64(t->members, s->id))
        return SM_ENOTFOUND;
    leave(t, s);
    return SM_OK;
}

int topic_is_member(const char *name, const struct session *s)
{
    topic *t = name ? find(name) : NULL;
    return t && hashmap_get_u64(t->members, s->id) != NULL;
}

size_t topic_members(const char *name, sm_session_id *out, size_t max)
{
    topic *t = name ? find(name) : NULL;
    if (!t)
        return 0;
    size_t n = 0;
    hashmap_iter it;
    void *value;
    hashmap_iter_init(t->members, &it);
    while (hashmap_iter_next(&it, NULL, NULL, &value)) {
        if (n < max && out)
            out[n] = ((struct session *)value)->id;
        n++;
    }
    return n;
}

size_t topic_user_keys(const char *name, const char **out, size_t max)
{
    topic *t = name ? find(name) : NULL;
    if (!t)
        return 0;
    size_t n = 0;
    hashmap_iter it;
    const void *key;
    hashmap_iter_init(t->users, &it);
    while (hashmap_iter_next(&it, &key, NULL, NULL)) {
        if (n < max && out)
            out[n] = key;
        n++;
    }
    return n;
}

/* Members collected for one publish, on the stack up to this many. */
#define PUBLISH_STACK 256

/* To this node's members of topic name but the session except (0: none)
 * and the sessions of except_user (NULL: none). */
static int deliver(const char *name, const char *action, const char *text, size_t len,
                   sm_session_id except, const char *except_user)
{
    topic *t = name ? find(name) : NULL;
    if (!t)
        return SM_OK;
    size_t n = 0, cap = hashmap_count(t->members);
    struct session *stack[PUBLISH_STACK];
    struct session **to = cap <= PUBLISH_STACK ? stack : malloc(cap * sizeof *to);
    if (!to)
        return SM_ENOMEM;
    hashmap_iter it;
    void *value;
    hashmap_iter_init(t->members, &it);
    /* Delivery never changes membership: a failing session is only marked
     * closing here and removed later by the transport. Members with a
     * command in flight hold the event behind its reply, each on its own;
     * the others get it in one batch per I/O thread. */
    while (hashmap_iter_next(&it, NULL, NULL, &value)) {
        struct session *s = value;
        if (s->id == except || (except_user && sm_name_equal(s->username, except_user)))
            continue;
        if (session_io_can_publish(s))
            to[n++] = s;
        else
            session_io_send(s, "event", action, NULL, text, len);
    }
    session_io_publish(to, n, action, text, len);
    if (to != stack)
        free(to);
    return SM_OK;
}

/* Here, then to the other nodes of a cluster (which have no session
 * `except`: it is one of ours). */
static int publish(const char *name, const char *action, const json_t *payload,
                   sm_session_id except, const char *except_user)
{
    if (!topic_name_ok(name))
        return SM_EINVAL;
    char *text = session_payload_text(payload);
    if (!text)
        return SM_ENOMEM;
    size_t len = strlen(text);
    int rc = deliver(name, action, text, len, except, except_user);
    if (rc == SM_OK)
        rc = cluster_publish_topic(name, except_user, action, text, len);
    free(text);
    return rc;
}

int topic_publish(const char *name, const char *action, const json_t *payload,
                  sm_session_id except)
{
    return publish(name, action, payload, except, NULL);
}

int topic_publish_except_user(const char *name, const char *action, const json_t *payload,
                              const char *except_user)
{
    return publish(name, action, payload, 0, except_user);
}

int topic_deliver_here(const char *name, const char *action, const char *text, size_t len,
                       const char *except_user)
{
    return deliver(name, action, text, len, 0, except_user);
}

int topic_fanout_take(const char *name, size_t payload_bytes, double *retry_after)
{
    topic *t = find(name);
    if (!t)
        return SM_OK;
    const server_config *sc = g_core.sc;
    double cost = (double)payload_bytes * (double)hashmap_count(t->members);
    double wait = bucket_wait(&t->fanout, sc->room_fanout_bytes_per_second,
                              (double)sc->room_fanout_burst, cost, core_mono_now());
    if (wait > 0) {
        if (retry_after)
            *retry_after = bucket_retry_after(wait);
        return SM_EBUSY;
    }
    bucket_take(&t->fanout, cost);
    return SM_OK;
}

void topic_leave_all(struct session *s)
{
    while (s->n_topics > 0) {
        topic *t = find(s->topics[s->n_topics - 1].name);
        if (!t) {
            free(s->topics[--s->n_topics].user);
            continue;
        }
        leave(t, s);
    }
}

void topic_destroy_all(void)
{
    if (!g_core.topics)
        return;
    hashmap_iter it;
    void *value;
    for (;;) {
        hashmap_iter_init(g_core.topics, &it);
        if (!hashmap_iter_next(&it, NULL, NULL, &value))
            break;
        topic_drop(value);
    }
}
