#include "session.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "audit.h"
#include "bridge.h"
#include "log.h"
#include "plugin_loader.h"
#include "presence.h"
#include "cluster.h"
#include "server_metrics.h"
#include "session_io.h"
#include "topic.h"

/* ---- safemessenger_sessions{state}: counted as the categories change,
 * so a scrape on any thread reads counts and walks no sessions ---------- */

/* The session's metric word: the I/O side's state category in the low
 * bits, the logic side's "logged in" above, each side changing only its
 * own part by compare-and-swap, so that the category each change moves
 * the count from is the one counted last, whichever thread changed what. */
#define METRIC_LOGGED 8
#define METRIC_IO_MASK 7
#define METRIC_GONE 7 /* the I/O part of a session that no longer counts */

static int word_category(int word)
{
    int io = word & METRIC_IO_MASK;
    if (io == METRIC_GONE)
        return SERVER_METRICS_SESSION_NONE;
    if (io == SERVER_METRICS_SESSION_OPEN && (word & METRIC_LOGGED))
        return SERVER_METRICS_SESSION_LOGGED_IN;
    return io;
}

static void metric_update(session *s, int mask, int bits)
{
    int old = atomic_load(&s->metric_word), next;
    do {
        next = (old & ~mask) | bits;
    } while (!atomic_compare_exchange_weak(&s->metric_word, &old, next));
    server_metrics_session_state(word_category(old), word_category(next));
}

/* The I/O side: the state's category (HANDSHAKE, KEY_PENDING, OPEN,
 * CLOSING), or METRIC_GONE. */
static void metric_state(session *s)
{
    int io = s->state == SESSION_HANDSHAKE     ? SERVER_METRICS_SESSION_HANDSHAKE
             : s->state == SESSION_KEY_PENDING ? SERVER_METRICS_SESSION_KEY_PENDING
             : s->state == SESSION_CLOSING     ? SERVER_METRICS_SESSION_CLOSING
                                               : SERVER_METRICS_SESSION_OPEN;
    metric_update(s, METRIC_IO_MASK, io);
}

/* The logic side: logged in or not. */
static void metric_login(session *s, int logged)
{
    metric_update(s, METRIC_LOGGED, logged ? METRIC_LOGGED : 0);
}

/* ------------------------------------------------------------------------ */

session *session_new(void *io, const char *address)
{
    session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const server_config *sc = g_core.sc;
    s->id = atomic_fetch_add(&g_core.next_session_id, 1);
    s->io_thread = -1;
    s->io = io;
    s->state = SESSION_HANDSHAKE;
    s->connected_at = core_wall_now();
    s->connected_mono = core_mono_now();
    snprintf(s->address, sizeof s->address, "%s", address ? address : "");
    bucket_init(&s->commands, (double)sc->command_burst, s->connected_mono);
    bucket_init(&s->bytes, (double)sc->bytes_burst, s->connected_mono);
    /* With I/O threads the logic side learns of the session once its
     * handshake completes (session_register, from the bridge). */
    if (!g_core.bridge && session_register(s) != SM_OK) {
        free(s);
        return NULL;
    }
    atomic_fetch_add(&g_core.n_sessions, 1);
    server_metrics_connection();
    atomic_init(&s->metric_word, METRIC_GONE);
    metric_state(s);
    return s;
}

int session_register(session *s)
{
    return hashmap_put_u64(g_core.sessions, s->id, s) == 0 ? SM_OK : SM_ENOMEM;
}

void session_set_key_pending(session *s)
{
    if (s->state == SESSION_HANDSHAKE)
        s->state = SESSION_KEY_PENDING;
    metric_state(s);
}

void session_set_open(session *s)
{
    if (s->state == SESSION_CLOSING)
        return;
    s->has_keys = 1;
    s->state = SESSION_OPEN;
    metric_state(s);
}

void session_set_closing(session *s)
{
    s->state = SESSION_CLOSING;
    metric_state(s);
}

int session_usable(const session *s)
{
    if (s->logic_closing)
        return 0;
    /* With I/O threads the state is the I/O thread's to read. */
    return g_core.bridge ? s->opened : s->state == SESSION_OPEN;
}

session *session_find(sm_session_id id)
{
    return id ? hashmap_get_u64(g_core.sessions, id) : NULL;
}

void session_fire(sm_core_event event, session *s)
{
    core_fire_event(event, s->id, s->username, NULL);
}

static void user_remove_session(session *s)
{
    char key[SESSION_USERNAME_MAX + 1];
    if (!s->username || sm_name_fold(s->username, key, sizeof key) != 0)
        return;
    user_sessions *u = hashmap_get(g_core.users, key, strlen(key));
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        if (u->ids[i] == s->id) {
            u->ids[i] = u->ids[--u->n];
            break;
        }
    }
    if (u->n == 0) {
        hashmap_remove(g_core.users, key, strlen(key));
        free(u->name);
        free(u->ids);
        free(u);
        cluster_user_unsubscribe(key);
    }
}

static int user_add_session(session *s)
{
    char key[SESSION_USERNAME_MAX + 1];
    if (sm_name_fold(s->username, key, sizeof key) != 0)
        return -1;
    user_sessions *u = hashmap_get(g_core.users, key, strlen(key));
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u)
            return -1;
        u->name = core_strdup(s->username);
        if (!u->name || hashmap_put(g_core.users, key, strlen(key), u) != 0) {
            free(u->name);
            free(u);
            return -1;
        }
        /* Events other nodes send the user: theirs to deliver here. */
        if (cluster_user_subscribe(key) != SM_OK) {
            hashmap_remove(g_core.users, key, strlen(key));
            free(u->name);
            free(u);
            return -1;
        }
    }
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 4;
        sm_session_id *ids = realloc(u->ids, cap * sizeof *ids);
        if (!ids) {
            if (u->n == 0) {
                hashmap_remove(g_core.users, key, strlen(key));
                free(u->name);
                free(u);
                cluster_user_unsubscribe(key);
            }
            return -1;
        }
        u->ids = ids;
        u->cap = cap;
    }
    u->ids[u->n++] = s->id;
    return 0;
}

user_sessions *session_user(const char *username)
{
    char key[SESSION_USERNAME_MAX + 1];
    if (!username || sm_name_fold(username, key, sizeof key) != 0)
        return NULL;
    return hashmap_get(g_core.users, key, strlen(key));
}

int session_send_user(const char *username, const char *action, const char *text, size_t len)
{
    user_sessions *u = session_user(username);
    if (!u)
        return SM_OK;
    /* Copy the ids: a delivery failure may close a session, and the user's
     * list must not change under the loop. */
    size_t n = u->n;
    sm_session_id *ids = malloc(n * sizeof *ids);
    if (!ids)
        return SM_ENOMEM;
    memcpy(ids, u->ids, n * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        session *s = session_find(ids[i]);
        if (s)
            session_io_send(s, "event", action, NULL, text, len);
    }
    free(ids);
    return SM_OK;
}

/* After the user index dropped the session: tells presence whether it
 * was the user's last one here. */
static void presence_down(session *s)
{
    if (!s->counted)
        return;
    s->counted = 0;
    presence_session_down(s->id, s->username, session_user(s->username) == NULL);
}

void session_audit(const session *s, const char *event, const char *username, const char *by)
{
    audit_line(event, username, s->address, s->id, by);
}

int session_logout(session *s)
{
    if (!s->username)
        return SM_ESTATE;
    session_audit(s, "logout", s->username, NULL);
    /* Subscribers still see the username during LOGGED_OUT. */
    session_fire(SM_EVENT_LOGGED_OUT, s);
    user_remove_session(s);
    presence_down(s);
    free(s->username);
    s->username = NULL;
    s->user_id = 0;
    metric_login(s, 0);
    return SM_OK;
}

static void login_deadline_cb(sm_timer *t, void *arg)
{
    (void)t;
    session *s = session_find((sm_session_id)(uintptr_t)arg);
    if (!s)
        return;
    s->login_timer = NULL; /* one-shot: freed by the timer module */
    LOG_INFO("session %llu (%s): no login within %d s; closing", (unsigned long long)s->id,
             s->address, g_core.sc->login_deadline);
    session_io_close(s, 1008, "login deadline");
}

int session_start_login_deadline(session *s)
{
    const server_config *sc = g_core.sc;
    int seconds = sc ? sc->login_deadline : 0;
    if (seconds <= 0)
        return SM_OK;
    /* Counted from the connection, whenever the logic side learns of it. */
    double left = (double)seconds - (core_mono_now() - s->connected_mono);
    s->login_timer = core_timer_start(left > 0 ? left : 0, login_deadline_cb,
                                      (void *)(uintptr_t)s->id);
    return s->login_timer ? SM_OK : SM_ENOMEM;
}

int session_login(session *s, const char *username, int64_t user_id)
{
    if (!username || !*username || strlen(username) > SESSION_USERNAME_MAX)
        return SM_EINVAL;
    if (!session_usable(s))
        return SM_ESTATE;
    if (s->username)
        session_logout(s);
    s->username = core_strdup(username);
    if (!s->username)
        return SM_ENOMEM;
    if (user_add_session(s) != 0) {
        free(s->username);
        s->username = NULL;
        return SM_ENOMEM;
    }
    s->user_id = user_id;
    metric_login(s, 1);
    if (s->login_timer) {
        timers_stop(g_core.timers, s->login_timer);
        s->login_timer = NULL;
    }
    session_audit(s, "login", s->username, NULL);
    session_fire(SM_EVENT_LOGGED_IN, s);
    /* The plugins may have ended the login meanwhile (LOGGED_OUT, and
     * presence told, already). */
    if (s->username) {
        user_sessions *u = session_user(s->username);
        s->counted = 1;
        presence_session_up(s->id, s->username, u && u->n == 1);
    }
    return SM_OK;
}

/* What both sides took: the I/O side's queues and keys, the logic side's
 * strings; then the session itself. */
static void session_free(session *s)
{
    atomic_fetch_sub(&g_core.n_sessions, 1);
    metric_update(s, METRIC_IO_MASK, METRIC_GONE);
    session_io_free(s);
    for (size_t i = 0; i < s->n_attrs; i++) {
        free(s->attrs[i].key);
        free(s->attrs[i].value);
    }
    free(s->topics);
    reassembly_release(&s->rx);
    free(s->username);
    crypto_wipe(&s->c2s, sizeof s->c2s);
    crypto_wipe(&s->s2c, sizeof s->s2c);
    free(s);
}

void session_opened(session *s)
{
    if (g_core.bridge)
        g_core.bridge->opened(s);
    else
        session_logic_opened(s);
}

void session_logic_opened(session *s)
{
    s->opened = 1;
    if (session_start_login_deadline(s) != SM_OK) {
        LOG_ERROR("session %llu: cannot start its login deadline (out of memory); closing",
                  (unsigned long long)s->id);
        session_io_close(s, 1011, "internal error");
    }
    session_fire(SM_EVENT_SESSION_OPENED, s);
}

void session_destroy(session *s)
{
    if (!s)
        return;
    if (s->opened) {
        if (s->username)
            session_logout(s);
        session_fire(SM_EVENT_SESSION_CLOSED, s);
    } else if (s->username) {
        user_remove_session(s);
        presence_down(s);
    }
    topic_leave_all(s);
    if (s->handshake_timer)
        timers_stop(g_core.timers, s->handshake_timer);
    if (s->key_job && s->key_job_drop)
        s->key_job_drop(s->key_job);
    if (s->login_timer)
        timers_stop(g_core.timers, s->login_timer);
    hashmap_remove_u64(g_core.sessions, s->id);
    session_free(s);
}

void session_discard(session *s)
{
    if (!s)
        return;
    if (s->key_job && s->key_job_drop)
        s->key_job_drop(s->key_job);
    session_free(s);
}

void session_destroy_all(void)
{
    if (!g_core.sessions)
        return;
    hashmap_iter it;
    void *value;
    /* Destroying modifies the map, so restart the walk each time. */
    for (;;) {
        hashmap_iter_init(g_core.sessions, &it);
        if (!hashmap_iter_next(&it, NULL, NULL, &value))
            break;
        session_destroy(value);
    }
}

char *session_payload_text(const json_t *payload)
{
    return payload ? json_dumps(payload, JSON_COMPACT) : core_strdup("{}");
}

int session_send_event_json(session *s, const char *action, const json_t *payload)
{
    char *text = session_payload_text(payload);
    if (!text)
        return SM_ENOMEM;
    int rc = session_io_send(s, "event", action, NULL, text, strlen(text));
    free(text);
    return rc == 0 ? SM_OK : SM_ERROR;
}

int session_set_attr(session *s, const char *key, const char *value)
{
    if (!key || !*key || strlen(key) > SESSION_ATTR_KEY_MAX)
        return SM_EINVAL;
    if (value && strlen(value) > SESSION_ATTR_VALUE_MAX)
        return SM_EINVAL;
    for (size_t i = 0; i < s->n_attrs; i++) {
        if (strcmp(s->attrs[i].key, key) != 0)
            continue;
        if (!value) {
            free(s->attrs[i].key);
            free(s->attrs[i].value);
            s->attrs[i] = s->attrs[--s->n_attrs];
            return SM_OK;
        }
        char *v = core_strdup(value);
        if (!v)
            return SM_ENOMEM;
        free(s->attrs[i].value);
        s->attrs[i].value = v;
        return SM_OK;
    }
    if (!value)
        return SM_OK;
    if (s->n_attrs == SESSION_MAX_ATTRS)
        return SM_EBUSY;
    char *k = core_strdup(key), *v = core_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return SM_ENOMEM;
    }
    s->attrs[s->n_attrs].key = k;
    s->attrs[s->n_attrs].value = v;
    s->n_attrs++;
    return SM_OK;
}

const char *session_get_attr(const session *s, const char *key)
{
    for (size_t i = 0; i < s->n_attrs; i++)
        if (strcmp(s->attrs[i].key, key) == 0)
            return s->attrs[i].value;
    return NULL;
}
