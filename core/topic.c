#include "topic.h"

#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "core.h"
#include "session.h"
#include "session_io.h"

typedef struct topic {
    char *name;
    hashmap *members; /* sm_session_id -> session * */
    bucket fanout;    /* limits.room_fanout_bytes_per_second */
} topic;

static topic *find(const char *name)
{
    return hashmap_get(g_core.topics, name, strlen(name));
}

static void topic_free(topic *t)
{
    hashmap_free(t->members, NULL);
    free(t->name);
    free(t);
}

static int session_track(struct session *s, const char *name)
{
    if (s->n_topics == s->cap_topics) {
        size_t cap = s->cap_topics ? s->cap_topics * 2 : 4;
        char **names = realloc(s->topics, cap * sizeof *names);
        if (!names)
            return -1;
        s->topics = names;
        s->cap_topics = cap;
    }
    s->topics[s->n_topics++] = (char *)name; /* owned by the topic */
    return 0;
}

static void session_untrack(struct session *s, const char *name)
{
    for (size_t i = 0; i < s->n_topics; i++) {
        if (s->topics[i] == name) {
            s->topics[i] = s->topics[--s->n_topics];
            return;
        }
    }
}

int topic_join(const char *name, struct session *s)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > TOPIC_NAME_MAX)
        return SM_EINVAL;
    topic *t = find(name);
    int created = 0;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return SM_ENOMEM;
        t->name = malloc(len + 1);
        t->members = hashmap_new();
        if (!t->name || !t->members || (memcpy(t->name, name, len + 1), 0) ||
            hashmap_put(g_core.topics, t->name, len, t) != 0) {
            hashmap_free(t->members, NULL);
            free(t->name);
            free(t);
            return SM_ENOMEM;
        }
        bucket_init(&t->fanout, (double)g_core.sc->room_fanout_burst, core_mono_now());
        created = 1;
    }
    if (hashmap_get_u64(t->members, s->id))
        return SM_OK;
    if (hashmap_put_u64(t->members, s->id, s) != 0 || session_track(s, t->name) != 0) {
        hashmap_remove_u64(t->members, s->id);
        if (created) {
            hashmap_remove(g_core.topics, t->name, len);
            topic_free(t);
        }
        return SM_ENOMEM;
    }
    return SM_OK;
}

static void leave(topic *t, struct session *s)
{
    hashmap_remove_u64(t->members, s->id);
    session_untrack(s, t->name);
    if (hashmap_count(t->members) == 0) {
        hashmap_remove(g_core.topics, t->name, strlen(t->name));
        topic_free(t);
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

/* Members collected for one publish, on the stack up to this many. */
#define PUBLISH_STACK 256

static int publish(const char *name, const char *action, const json_t *payload,
                   sm_session_id except, const char *except_user)
{
    topic *t = name ? find(name) : NULL;
    if (!t)
        return SM_OK;
    char *text = session_payload_text(payload);
    if (!text)
        return SM_ENOMEM;
    size_t len = strlen(text), n = 0, cap = hashmap_count(t->members);
    struct session *stack[PUBLISH_STACK];
    struct session **to = cap <= PUBLISH_STACK ? stack : malloc(cap * sizeof *to);
    if (!to) {
        free(text);
        return SM_ENOMEM;
    }
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
    free(text);
    return SM_OK;
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
        topic *t = find(s->topics[s->n_topics - 1]);
        if (!t) {
            s->n_topics--;
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
        topic *t = value;
        hashmap_remove(g_core.topics, t->name, strlen(t->name));
        topic_free(t);
    }
}
