/* Room membership: Jansson objects as hash tables, so entering, leaving
 * and membership tests are O(1) and an event costs O(sessions in the room). */
#include "membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROOMS_ATTR "rooms.current"
/* "room:" + lower-cased name (docs/PLUGINS.md section 17): other plugins
 * publish there. */
#define ROOMS_TOPIC_MAX (sizeof "room:" + ROOMS_NAME_MAX)
#define ROOMS_ID_MAX 24

static int topic_of(const char *room_key, char *buf, size_t buf_len)
{
    int n = snprintf(buf, buf_len, "room:%s", room_key);
    return n >= 0 && (size_t)n < buf_len ? 0 : -1;
}

static void id_key(sm_session_id session, char buf[ROOMS_ID_MAX])
{
    snprintf(buf, ROOMS_ID_MAX, "%llu", (unsigned long long)session);
}

int membership_init(membership *m, const sm_host *host, sm_plugin *self)
{
    m->host = host;
    m->self = self;
    m->active = json_object();
    m->sessions = json_object();
    if (!m->active || !m->sessions) {
        membership_free(m);
        return SM_ENOMEM;
    }
    return SM_OK;
}

void membership_free(membership *m)
{
    json_decref(m->active);
    json_decref(m->sessions);
    m->active = m->sessions = NULL;
}

const char *membership_room(const membership *m, sm_session_id session)
{
    char key[ROOMS_ID_MAX];
    id_key(session, key);
    return json_string_value(json_object_get(json_object_get(m->sessions, key), "room"));
}

const char *membership_display(const membership *m, const char *room_key)
{
    return json_string_value(json_object_get(json_object_get(m->active, room_key), "name"));
}

/* Room events go to the room's other users: every member session except
 * those of the acting user (its other devices are "the user", PROTOCOL.md
 * section 7), not merely except the acting session as topic_publish would.
 * Every member of a room's topic is logged in (rooms leave at logout).
 * The core says when (SM_EVENT_TOPIC_JOINED, _LEFT: once per user, in a
 * cluster too); rooms.c passes that on here. */
void membership_notify(membership *m, const char *topic, const char *action,
                       const char *username, const char *display)
{
    char user_key[ROOMS_USER_MAX + 1];
    if (sm_name_fold(username, user_key, sizeof user_key) != SM_OK)
        return;
    json_t *event = json_pack("{s:s, s:s}", "username", username, "room", display);
    if (!event) {
        m->host->log(m->self, SM_LOG_ERROR, "out of memory: %s not sent to %s", action, topic);
        return;
    }
    if (m->host->topic_publish_except_user(topic, action, event, user_key) != SM_OK)
        m->host->log(m->self, SM_LOG_ERROR, "%s not sent to %s", action, topic);
    json_decref(event);
}

int membership_enter(membership *m, sm_session_id session, const char *username,
                     const char *room_key, const char *display)
{
    char topic[ROOMS_TOPIC_MAX], user_key[ROOMS_USER_MAX + 1], sid[ROOMS_ID_MAX];
    if (!username || topic_of(room_key, topic, sizeof topic) != 0 ||
        sm_name_fold(username, user_key, sizeof user_key) != SM_OK)
        return SM_EINVAL;
    id_key(session, sid);
    if (json_object_get(m->sessions, sid))
        return SM_EEXIST;

    int rc = SM_ENOMEM, room_added = 0, joined = 0, attr_set = 0, session_added = 0;
    json_t *room = json_object_get(m->active, room_key);
    if (!room) {
        room = json_pack("{s:s, s:{}}", "name", display, "users");
        if (!room || json_object_set_new(m->active, room_key, room) != 0)
            goto fail;
        room_added = 1;
    }
    json_t *users = json_object_get(room, "users");
    json_t *user = json_object_get(users, user_key);
    rc = m->host->topic_join(topic, session);
    if (rc != SM_OK)
        goto fail;
    joined = 1;
    /* The stored display name: auth reports it as assigned_room and the
     * messaging plugin finds the room's topic from it. */
    rc = m->host->session_set_attr(session, ROOMS_ATTR, json_string_value(
                                       json_object_get(room, "name")));
    if (rc != SM_OK)
        goto fail;
    attr_set = 1;
    rc = SM_ENOMEM;
    if (json_object_set_new(m->sessions, sid,
                            json_pack("{s:s, s:s}", "room", room_key, "user", user_key)) != 0)
        goto fail;
    session_added = 1;
    if (!user) {
        user = json_pack("{s:s, s:I}", "name", username, "count", (json_int_t)0);
        if (!user || json_object_set_new(users, user_key, user) != 0)
            goto fail;
    }
    /* Nothing can fail from here on. */
    json_int_t count = json_integer_value(json_object_get(user, "count")) + 1;
    json_integer_set(json_object_get(user, "count"), count);
    return SM_OK;
fail:
    if (session_added)
        json_object_del(m->sessions, sid);
    if (attr_set)
        m->host->session_set_attr(session, ROOMS_ATTR, NULL);
    if (joined)
        m->host->topic_leave(topic, session);
    if (room_added)
        json_object_del(m->active, room_key);
    m->host->log(m->self, SM_LOG_ERROR, "session %llu could not enter room %s (status %d)",
                 (unsigned long long)session, room_key, rc);
    return rc;
}

int membership_leave(membership *m, sm_session_id session)
{
    char sid[ROOMS_ID_MAX], room_key[ROOMS_NAME_MAX + 1], user_key[ROOMS_USER_MAX + 1];
    char topic[ROOMS_TOPIC_MAX];
    id_key(session, sid);
    json_t *entry = json_object_get(m->sessions, sid);
    if (!entry)
        return SM_ENOTFOUND;
    /* Copies: the entry is deleted below. */
    if (sm_name_fold(json_string_value(json_object_get(entry, "room")), room_key,
                     sizeof room_key) != SM_OK ||
        sm_name_fold(json_string_value(json_object_get(entry, "user")), user_key,
                     sizeof user_key) != SM_OK ||
        topic_of(room_key, topic, sizeof topic) != 0)
        return SM_ERROR; /* cannot happen: enter stored checked names */
    json_object_del(m->sessions, sid);
    /* ENOTFOUND when the core already dropped a closing session: fine. */
    m->host->topic_leave(topic, session);
    m->host->session_set_attr(session, ROOMS_ATTR, NULL);

    json_t *room = json_object_get(m->active, room_key);
    json_t *users = json_object_get(room, "users");
    json_t *user = json_object_get(users, user_key);
    if (!user)
        return SM_OK;
    json_int_t count = json_integer_value(json_object_get(user, "count")) - 1;
    json_integer_set(json_object_get(user, "count"), count);
    if (count <= 0)
        json_object_del(users, user_key);
    /* Empty rooms live on in the database only. */
    if (json_object_size(users) == 0)
        json_object_del(m->active, room_key);
    return SM_OK;
}

static int compare_names(const void *a, const void *b)
{
    return sm_name_compare(*(const char *const *)a, *(const char *const *)b);
}

json_t *membership_listing(const membership *m, const char *room_key)
{
    json_t *room = json_object_get(m->active, room_key);
    json_t *users = json_object_get(room, "users");
    if (!users)
        return NULL;
    size_t n = json_object_size(users), i = 0;
    const char **names = malloc((n ? n : 1) * sizeof *names);
    json_t *list = json_array();
    json_t *out = NULL;
    if (!names || !list)
        goto done;
    const char *key;
    json_t *user;
    json_object_foreach(users, key, user)
        names[i++] = json_string_value(json_object_get(user, "name"));
    /* Names are unique without regard to case, so the order is total. */
    qsort(names, n, sizeof *names, compare_names);
    for (i = 0; i < n; i++)
        if (json_array_append_new(list, json_string(names[i])) != 0)
            goto done;
    out = json_pack("{s:O, s:O}", "room", json_object_get(room, "name"), "users", list);
done:
    json_decref(list);
    free(names);
    return out;
}
