#include "presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "core.h"
#include "plugin_loader.h"
#include "session.h"
#include "topic.h"

/* The account's name for a folded one, copied into buf (an event's
 * subscribers may look users up or log sessions out, which frees the
 * strings it comes from): a local session's login if there is one (no
 * query), else the users service's spelling, else the folded name itself
 * (no users provider, or the account is gone). */
static const char *display_name(const char *user, char *buf, size_t len)
{
    user_sessions *u = session_user(user);
    const char *name = u && u->name ? u->name : core_user_name(user);
    if (!name || strlen(name) >= len)
        name = user;
    snprintf(buf, len, "%s", name);
    return buf;
}

void presence_session_up(sm_session_id id, const char *username, int first_here)
{
    if (cluster_on())
        cluster_session_up(username);
    else if (first_here)
        core_fire_event(SM_EVENT_USER_ONLINE, id, username, NULL);
}

void presence_session_down(sm_session_id id, const char *username, int last_here)
{
    if (cluster_on())
        cluster_session_down(username);
    else if (last_here)
        core_fire_event(SM_EVENT_USER_OFFLINE, id, username, NULL);
}

void presence_topic_up(const char *topic, sm_session_id id, const char *username, int first_here)
{
    if (cluster_on())
        cluster_member_up(topic, username);
    else if (first_here)
        core_fire_topic_event(SM_EVENT_TOPIC_JOINED, id, username, topic);
}

void presence_topic_down(const char *topic, sm_session_id id, const char *username,
                         const char *user, int last_here)
{
    char name[SESSION_USERNAME_MAX + 1];
    if (cluster_on())
        cluster_member_down(topic, user);
    else if (last_here)
        core_fire_topic_event(SM_EVENT_TOPIC_LEFT, id,
                              username ? username : display_name(user, name, sizeof name), topic);
}

void presence_reported_user(const char *user, int online)
{
    char name[SESSION_USERNAME_MAX + 1];
    core_fire_event(online ? SM_EVENT_USER_ONLINE : SM_EVENT_USER_OFFLINE, 0,
                    display_name(user, name, sizeof name), NULL);
}

void presence_reported_member(const char *topic, const char *user, int joined)
{
    char name[SESSION_USERNAME_MAX + 1];
    core_fire_topic_event(joined ? SM_EVENT_TOPIC_JOINED : SM_EVENT_TOPIC_LEFT, 0,
                          display_name(user, name, sizeof name), topic);
}

/* ---- queries ---------------------------------------------------------------- */

/* A query's answer on its way back to a plugin, which a configuration
 * reload may have unloaded meanwhile: its callback is then not called
 * (its code is gone; the commands it deferred were answered with 1005 at
 * the unload). */
typedef struct query {
    const plugin *self;
    sm_users_online_fn online;
    sm_topic_users_fn users;
    void *arg;
} query;

static query *query_new(const plugin *self, sm_users_online_fn online, sm_topic_users_fn users,
                        void *arg)
{
    query *q = malloc(sizeof *q);
    if (q)
        *q = (query){.self = self, .online = online, .users = users, .arg = arg};
    return q;
}

static void online_answer(int status, const int *online, size_t n, void *arg)
{
    query q = *(query *)arg;
    free(arg);
    if (!q.self || plugin_loaded(q.self))
        q.online(status, online, n, q.arg);
}

int presence_users_online(const plugin *self, const char *const *names, size_t n,
                          sm_users_online_fn done, void *arg)
{
    if (cluster_on()) {
        query *q = query_new(self, done, NULL, arg);
        if (!q)
            return SM_ENOMEM;
        int rc = cluster_users_online(names, n, online_answer, q);
        if (rc != SM_OK)
            free(q);
        return rc;
    }
    int *online = malloc((n ? n : 1) * sizeof *online);
    if (!online)
        return SM_ENOMEM;
    for (size_t i = 0; i < n; i++)
        online[i] = session_user(names[i]) != NULL;
    done(SM_OK, online, n, arg);
    free(online);
    return SM_OK;
}

/* A topic_users answer: the folded names made the accounts' names. */
static void named(int status, const char *const *users, size_t n, void *arg)
{
    query q = *(query *)arg;
    free(arg);
    if (q.self && !plugin_loaded(q.self))
        return;
    char(*names)[SESSION_USERNAME_MAX + 1] = malloc((n ? n : 1) * sizeof *names);
    const char **list = malloc((n ? n : 1) * sizeof *list);
    if (!names || !list) {
        /* Nothing better to give than nothing: said so. */
        q.users(SM_ENOMEM, NULL, 0, q.arg);
    } else {
        for (size_t i = 0; i < n; i++)
            list[i] = display_name(users[i], names[i], sizeof names[i]);
        q.users(status, list, n, q.arg);
    }
    free(names);
    free(list);
}

int presence_topic_users(const plugin *self, const char *topic, sm_topic_users_fn done,
                         void *arg)
{
    query *q = query_new(self, NULL, done, arg);
    if (!q)
        return SM_ENOMEM;
    if (cluster_on()) {
        int rc = cluster_topic_users(topic, named, q);
        if (rc != SM_OK)
            free(q);
        return rc;
    }
    size_t n = topic_user_keys(topic, NULL, 0);
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) {
        free(q);
        return SM_ENOMEM;
    }
    topic_user_keys(topic, keys, n);
    named(SM_OK, keys, n, q);
    free(keys);
    return SM_OK;
}
