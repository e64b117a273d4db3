/* Rooms: join_room, leave_room, get_users and list_rooms (PROTOCOL.md section 7,
 * "Rooms:"), and the default room every session enters at login, which
 * auth reports as assigned_room through the attribute "rooms.current".
 *
 * A room exists from its first join and persists (table `rooms`); with
 * rooms.allow_create = false only the configured rooms exist. Membership
 * lives in memory (membership.c); a room's topic "room:<lower-cased name>"
 * is where the messaging plugin publishes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "membership.h"

#define ROOMS_LIST_MAX 1000

typedef struct rooms {
    const sm_host *host;
    sm_plugin *self;
    membership members;
    int allow_create;
    const char *default_room;    /* "" = nobody is put in a room; points into the config */
    char default_key[ROOMS_NAME_MAX + 1];
    const char **configured;     /* rooms.rooms, pointers into the config */
    size_t n_configured;
    /* lower-cased name -> stored display name of the default and configured
     * rooms: the rooms that exist when allow_create is false. */
    json_t *listed;
    sm_stmt *find_stmt, *insert_stmt, *list_stmt;
} rooms;

/* Portable SQL: the same migrations and statements run on SQLite and
 * PostgreSQL (docs/PLUGINS.md, "Portable SQL").
 *
 * Version 1's `id INTEGER PRIMARY KEY` was SQLite's rowid, given by the
 * engine; on PostgreSQL it is a plain BIGINT without a default, so an
 * insert that leaves it out fails. Nothing ever read it: a room is known
 * by its lower-cased name (its topic, its history in messaging, the
 * admin commands). Version 2 rebuilds the table without it, keyed by
 * name_lower, keeping every room's spelling and created_at. */
static const sm_migration migrations[] = {
    {1, "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " name_lower TEXT NOT NULL UNIQUE, created_at REAL NOT NULL)"},
    {2, "CREATE TABLE rooms_v2 (name TEXT NOT NULL, name_lower TEXT NOT NULL PRIMARY KEY,"
        " created_at REAL NOT NULL);"
        "INSERT INTO rooms_v2 (name, name_lower, created_at)"
        " SELECT name, name_lower, created_at FROM rooms;"
        "DROP TABLE rooms;"
        "ALTER TABLE rooms_v2 RENAME TO rooms"},
    {0, NULL},
};

/* ---- the rooms that exist ----------------------------------------------- */

/* Copies the stored display name of room `key` into display: SM_OK,
 * SM_ENOTFOUND or an error. */
static int db_find(rooms *r, const char *key, char display[ROOMS_NAME_MAX + 1])
{
    const sm_host *h = r->host;
    int rc = h->db_bind_text(r->find_stmt, 1, key, -1);
    if (rc == SM_OK)
        rc = h->db_step(r->find_stmt);
    if (rc == SM_ROW) {
        const char *name = h->db_column_text(r->find_stmt, 0);
        rc = name && strlen(name) <= ROOMS_NAME_MAX ? SM_OK : SM_ERROR;
        if (rc == SM_OK)
            memcpy(display, name, strlen(name) + 1);
    } else if (rc == SM_DONE) {
        rc = SM_ENOTFOUND;
    } else if (rc == SM_OK) {
        rc = SM_ERROR;
    }
    h->db_reset(r->find_stmt);
    return rc;
}

static int db_insert(rooms *r, const char *name, const char *key)
{
    const sm_host *h = r->host;
    int rc = h->db_bind_text(r->insert_stmt, 1, name, -1);
    if (rc == SM_OK)
        rc = h->db_bind_text(r->insert_stmt, 2, key, -1);
    if (rc == SM_OK)
        rc = h->db_bind_double(r->insert_stmt, 3, h->now());
    if (rc == SM_OK)
        rc = h->db_step(r->insert_stmt);
    h->db_reset(r->insert_stmt);
    return rc == SM_DONE ? SM_OK : (rc == SM_OK ? SM_ERROR : rc);
}

/* The display name of room `name` (as the client wrote it), creating the
 * room if it does not exist and creation is allowed. SM_ENOTFOUND when it
 * does not exist and may not be created. */
static int resolve(rooms *r, const char *name, const char *key,
                   char display[ROOMS_NAME_MAX + 1])
{
    const char *known = membership_display(&r->members, key);
    if (!known)
        known = json_string_value(json_object_get(r->listed, key));
    if (known) {
        memcpy(display, known, strlen(known) + 1);
        return SM_OK;
    }
    if (!r->allow_create)
        return SM_ENOTFOUND;
    int rc = db_find(r, key, display);
    if (rc != SM_ENOTFOUND)
        return rc;
    rc = db_insert(r, name, key);
    if (rc != SM_OK)
        return rc;
    r->host->log(r->self, SM_LOG_INFO, "room %s created", name);
    memcpy(display, name, strlen(name) + 1);
    return SM_OK;
}

/* Makes sure room `name` exists and remembers its stored spelling. */
static int ensure_listed(rooms *r, const char *name)
{
    char key[ROOMS_NAME_MAX + 1], display[ROOMS_NAME_MAX + 1];
    if (sm_name_fold(name, key, sizeof key) != SM_OK)
        return SM_EINVAL;
    if (json_object_get(r->listed, key))
        return SM_OK;
    int rc = db_find(r, key, display);
    if (rc == SM_ENOTFOUND) {
        rc = db_insert(r, name, key);
        memcpy(display, name, strlen(name) + 1);
    }
    if (rc == SM_OK && json_object_set_new(r->listed, key, json_string(display)) != 0)
        rc = SM_ENOMEM;
    return rc;
}

/* ---- moving sessions ---------------------------------------------------- */

/* Moves the session into the room; leaving its old room first sends
 * user_left there. On failure the session is in no room. */
static int move_to(rooms *r, sm_session_id sid, const char *username, const char *key,
                   const char *display)
{
    const char *current = membership_room(&r->members, sid);
    if (current && strcmp(current, key) == 0)
        return SM_OK;
    if (current)
        membership_leave(&r->members, sid);
    return membership_enter(&r->members, sid, username, key, display);
}

static void on_login(const sm_event_info *info, void *data)
{
    sm_core_event event = info->event;
    sm_session_id sid = info->session;
    const char *username = info->username;
    (void)event;
    rooms *r = data;
    if (!r->default_key[0])
        return;
    /* Created at start, so this finds it without touching the database
     * unless the table was changed behind our back. */
    char display[ROOMS_NAME_MAX + 1];
    int rc = resolve(r, r->default_room, r->default_key, display);
    if (rc == SM_OK)
        rc = move_to(r, sid, username, r->default_key, display);
    if (rc != SM_OK)
        r->host->log(r->self, SM_LOG_ERROR,
                     "session %llu could not enter the default room (status %d); it is in no room",
                     (unsigned long long)sid, rc);
}

/* Logout, re-login and disconnect (LOGGED_OUT comes before CLOSED) all
 * leave the room; CLOSED catches a session that somehow is still in one. */
static void on_logout(const sm_event_info *info, void *data)
{
    sm_core_event event = info->event;
    sm_session_id sid = info->session;
    const char *username = info->username;
    (void)event;
    (void)username;
    rooms *r = data;
    membership_leave(&r->members, sid);
}

/* ---- actions ------------------------------------------------------------ */

/* A user's first session came into a room's topic, or the last left,
 * counting every node: the room's other users hear of it. In a cluster
 * this may run on a node without the room in memory (the user's node
 * died): the stored name then. */
static void on_topic_event(const sm_event_info *info, void *data)
{
    rooms *r = data;
    static const char prefix[] = "room:";
    if (!SM_EVENT_INFO_HAS(info, topic) || !info->topic || !info->username ||
        strncmp(info->topic, prefix, sizeof prefix - 1) != 0)
        return;
    const char *key = info->topic + sizeof prefix - 1;
    char stored[ROOMS_NAME_MAX + 1];
    const char *display = membership_display(&r->members, key);
    if (!display)
        display = db_find(r, key, stored) == SM_OK ? stored : key;
    membership_notify(&r->members, info->topic,
                      info->event == SM_EVENT_TOPIC_JOINED ? "user_joined" : "user_left",
                      info->username, display);
}

/* A listing waits for the room's users on every node (Redis says, in a
 * cluster). */
typedef struct listing_query {
    rooms *r;
    sm_ctx *ctx;
    char display[ROOMS_NAME_MAX + 1];
} listing_query;

static int by_name(const void *a, const void *b)
{
    return sm_name_compare(*(const char *const *)a, *(const char *const *)b);
}

static void users_known(int status, const char *const *users, size_t n, void *arg)
{
    listing_query *q = arg;
    const sm_host *h = q->r->host;
    /* SM_EBUSY (Redis unreachable): this node's users, the best there is. */
    const char **sorted = status == SM_ENOMEM ? NULL : malloc((n ? n : 1) * sizeof *sorted);
    json_t *list = sorted ? json_array() : NULL;
    if (list) {
        memcpy(sorted, users, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, by_name);
        for (size_t i = 0; list && i < n; i++)
            if (json_array_append_new(list, json_string(sorted[i])) != 0) {
                json_decref(list);
                list = NULL;
            }
    }
    json_t *listing = list ? json_pack("{s:s, s:o}", "room", q->display, "users", list) : NULL;
    if (listing)
        h->reply(q->ctx, h->ctx_action(q->ctx), listing);
    else
        h->reply_error(q->ctx, SM_ERR_INTERNAL, "internal server error");
    json_decref(listing);
    free(sorted);
    free(q);
}

static void reply_listing(rooms *r, sm_ctx *ctx, const char *key)
{
    const sm_host *h = r->host;
    const char *display = membership_display(&r->members, key);
    char topic[sizeof "room:" + ROOMS_NAME_MAX];
    listing_query *q = display && SM_HOST_HAS(h, topic_users) ? malloc(sizeof *q) : NULL;
    if (q) {
        *q = (listing_query){.r = r, .ctx = ctx};
        snprintf(q->display, sizeof q->display, "%s", display);
        snprintf(topic, sizeof topic, "room:%s", key);
        h->defer(ctx);
        if (h->topic_users(r->self, topic, users_known, q) == SM_OK)
            return; /* q is users_known's */
        free(q);
    }
    json_t *listing = membership_listing(&r->members, key);
    if (!listing) {
        r->host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    r->host->reply(ctx, r->host->ctx_action(ctx), listing);
    json_decref(listing);
}

static void join_room(sm_ctx *ctx, const json_t *payload, void *data)
{
    rooms *r = data;
    const sm_host *h = r->host;
    sm_session_id sid = h->ctx_session(ctx);
    const char *name = json_string_value(json_object_get(payload, "room_name"));
    char key[ROOMS_NAME_MAX + 1], display[ROOMS_NAME_MAX + 1];
    if (sm_name_fold(name, key, sizeof key) != SM_OK) { /* the schema bounds it */
        h->reply_error(ctx, SM_ERR_MALFORMED, "field 'room_name' must be a string of 1 to 32 bytes");
        return;
    }
    int rc = resolve(r, name, key, display);
    if (rc == SM_ENOTFOUND) {
        h->reply_error(ctx, SM_ERR_NOT_FOUND, "no such room");
        return;
    }
    if (rc == SM_OK)
        rc = move_to(r, sid, h->session_username(sid), key, display);
    if (rc != SM_OK) {
        h->log(r->self, SM_LOG_ERROR, "join_room %s failed (status %d)", key, rc);
        h->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    reply_listing(r, ctx, key);
}

static void leave_room(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    rooms *r = data;
    const sm_host *h = r->host;
    sm_session_id sid = h->ctx_session(ctx);
    const char *key = membership_room(&r->members, sid);
    if (!key) {
        h->reply_error(ctx, SM_ERR_NOT_FOUND, "not in a room");
        return;
    }
    /* The room's entry may go away with its last member: reply with a copy. */
    json_t *reply = json_pack("{s:s}", "room", membership_display(&r->members, key));
    if (!reply) {
        h->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    membership_leave(&r->members, sid);
    h->reply(ctx, "leave_room", reply);
    json_decref(reply);
}

static void get_users(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    rooms *r = data;
    const char *key = membership_room(&r->members, r->host->ctx_session(ctx));
    if (!key) {
        r->host->reply_error(ctx, SM_ERR_NOT_FOUND, "not in a room");
        return;
    }
    reply_listing(r, ctx, key);
}

/* Sessions in an occupied room (its key), 0 for an empty one. */
static json_int_t occupants(const rooms *r, const char *key)
{
    const json_t *users = json_object_get(json_object_get(r->members.active, key), "users");
    json_int_t n = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)users, k, v)
        n += json_integer_value(json_object_get(v, "count")) > 0;
    return n;
}

/* The rooms that can be joined, by name without regard to case, with how
 * many users are in each; at most ROOMS_LIST_MAX, "more" when there are
 * others. The query has no LIMIT: a server without room creation may skip
 * any number of stored rooms. */
/* A listing of rooms waits for each room's users on every node (one
 * topic_users each; on one node they all answer at once). The extra
 * count held while asking keeps the reply from going out before every
 * question was asked. */
typedef struct rooms_query {
    rooms *r;
    sm_ctx *ctx;
    json_t *reply;
    size_t pending;
} rooms_query;

typedef struct room_count {
    rooms_query *q;
    json_t *item;
} room_count;

static void rooms_query_done(rooms_query *q)
{
    if (--q->pending > 0)
        return;
    q->r->host->reply(q->ctx, "list_rooms", q->reply);
    json_decref(q->reply);
    free(q);
}

static void room_counted(int status, const char *const *users, size_t n, void *arg)
{
    room_count *c = arg;
    (void)users;
    /* SM_EBUSY (Redis unreachable): this node's count stands. */
    if (status == SM_OK || status == SM_EBUSY)
        json_object_set_new(c->item, "users", json_integer((json_int_t)n));
    rooms_query_done(c->q);
    free(c);
}

/* Asks every room's users across the nodes, then replies; SM_OK when the
 * reply is on its way (or sent), else nothing was asked. */
static int count_everywhere(rooms *r, sm_ctx *ctx, json_t *reply)
{
    const sm_host *h = r->host;
    rooms_query *q = SM_HOST_HAS(h, topic_users) ? malloc(sizeof *q) : NULL;
    if (!q)
        return SM_ENOMEM;
    *q = (rooms_query){.r = r, .ctx = ctx, .reply = json_incref(reply), .pending = 1};
    h->defer(ctx);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(reply, "rooms"), i, item) {
        char key[ROOMS_NAME_MAX + 1], topic[sizeof "room:" + ROOMS_NAME_MAX];
        room_count *c = malloc(sizeof *c);
        if (!c || sm_name_fold(json_string_value(json_object_get(item, "room")), key,
                               sizeof key) != SM_OK) {
            free(c);
            continue; /* this node's count stands */
        }
        *c = (room_count){.q = q, .item = item};
        snprintf(topic, sizeof topic, "room:%s", key);
        q->pending++;
        if (h->topic_users(r->self, topic, room_counted, c) != SM_OK) {
            q->pending--;
            free(c);
        }
    }
    rooms_query_done(q);
    return SM_OK;
}

static void list_rooms(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    rooms *r = data;
    const sm_host *h = r->host;
    json_t *list = json_array();
    int more = 0, rc = list ? SM_OK : SM_ENOMEM;
    size_t n = 0;
    while (rc == SM_OK) {
        int step = h->db_step(r->list_stmt);
        if (step == SM_DONE)
            break;
        if (step != SM_ROW) {
            rc = SM_ERROR;
            break;
        }
        const char *name = h->db_column_text(r->list_stmt, 0);
        const char *key = h->db_column_text(r->list_stmt, 1);
        /* Without room creation only the configured rooms can be joined,
         * whatever earlier runs created. */
        if (key && !r->allow_create && !json_object_get(r->listed, key))
            continue;
        if (n == ROOMS_LIST_MAX) {
            more = 1;
            break;
        }
        json_t *item = name && key ? json_pack("{s:s,s:I}", "room", name, "users", occupants(r, key)) : NULL;
        if (!item || json_array_append_new(list, item) != 0)
            rc = SM_ENOMEM;
        n++;
    }
    h->db_reset(r->list_stmt);
    json_t *reply = rc == SM_OK ? json_pack("{s:O,s:b}", "rooms", list, "more", more) : NULL;
    if (!reply)
        h->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
    else if (count_everywhere(r, ctx, reply) != SM_OK)
        h->reply(ctx, "list_rooms", reply); /* this node's counts */
    json_decref(reply);
    json_decref(list);
}

/* ---- life cycle --------------------------------------------------------- */

/* Reads every key before failing, so that each mistake is reported once. */
static int read_config(rooms *r)
{
    const sm_host *h = r->host;
    r->allow_create = 1;
    r->default_room = "general";
    r->configured = calloc(ROOMS_LIST_MAX, sizeof *r->configured);
    if (!r->configured)
        return SM_ENOMEM;
    int rc = SM_OK;
    if (h->config_bool(r->self, "allow_create", &r->allow_create) != SM_OK)
        rc = SM_EINVAL;
    if (h->config_string(r->self, "default_room", &r->default_room) != SM_OK)
        rc = SM_EINVAL;
    else if (r->default_room[0] && !sm_name_valid(r->default_room, 1, ROOMS_NAME_MAX)) {
        h->log(r->self, SM_LOG_ERROR, "rooms.default_room must be \"\" or 1 to 32 characters "
                                      "of letters, digits, '_', '.' and '-'");
        rc = SM_EINVAL;
    }
    int n = h->config_string_list(r->self, "rooms", r->configured, ROOMS_LIST_MAX);
    if (n < 0)
        return SM_EINVAL;
    r->n_configured = (size_t)n;
    for (size_t i = 0; i < r->n_configured; i++) {
        if (!sm_name_valid(r->configured[i], 1, ROOMS_NAME_MAX)) {
            h->log(r->self, SM_LOG_ERROR, "rooms.rooms[%zu] must be 1 to 32 characters of "
                                          "letters, digits, '_', '.' and '-'", i);
            rc = SM_EINVAL;
        }
    }
    /* "" is no default room: its key stays empty. */
    r->default_key[0] = '\0';
    if (rc == SM_OK && r->default_room[0] &&
        sm_name_fold(r->default_room, r->default_key, sizeof r->default_key) != SM_OK)
        rc = SM_EINVAL; /* cannot happen: checked above */
    return rc;
}

static void rooms_free(rooms *r)
{
    if (r->find_stmt)
        r->host->db_finalize(r->find_stmt);
    if (r->insert_stmt)
        r->host->db_finalize(r->insert_stmt);
    if (r->list_stmt)
        r->host->db_finalize(r->list_stmt);
    membership_free(&r->members);
    json_decref(r->listed);
    free(r->configured);
    free(r);
}

/* SIGHUP: allow_create, default_room and rooms take effect for the next
 * join and login; new rooms of the list are created now. Sessions stay in
 * the rooms they are in, also in one the new list no longer names. */
static int reload(void *plugin_data, int apply)
{
    rooms *r = plugin_data;
    rooms next = *r;
    next.configured = NULL;
    next.listed = json_object();
    int rc = next.listed ? read_config(&next) : SM_ENOMEM;
    if (rc == SM_OK && apply && next.default_room[0])
        rc = ensure_listed(&next, next.default_room);
    for (size_t i = 0; rc == SM_OK && apply && i < next.n_configured; i++)
        rc = ensure_listed(&next, next.configured[i]);
    if (rc != SM_OK || !apply) {
        free(next.configured);
        json_decref(next.listed);
        return rc;
    }
    free(r->configured);
    json_decref(r->listed);
    r->allow_create = next.allow_create;
    r->default_room = next.default_room;
    memcpy(r->default_key, next.default_key, sizeof r->default_key);
    r->configured = next.configured;
    r->n_configured = next.n_configured;
    r->listed = next.listed;
    return SM_OK;
}

static const sm_field join_schema[] = {
    {"room_name", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, ROOMS_NAME_MAX},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"join_room", join_room, SM_ACTION_NEEDS_LOGIN, join_schema},
    {"leave_room", leave_room, SM_ACTION_NEEDS_LOGIN, NULL},
    {"get_users", get_users, SM_ACTION_NEEDS_LOGIN, NULL},
    {"list_rooms", list_rooms, SM_ACTION_NEEDS_LOGIN, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- admin commands (safemessenger-admin rooms ...) ------------------ */

static void rooms_list_cmd(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    rooms *r = data;
    const sm_host *h = r->host;
    sm_stmt *st = NULL;
    json_t *list = json_array();
    int rc = list ? h->db_prepare(r->self,
                                  "SELECT name, name_lower, created_at FROM rooms"
                                  " ORDER BY name_lower",
                                  &st)
                  : SM_ENOMEM;
    while (rc == SM_OK && (rc = h->db_step(st)) == SM_ROW) {
        const char *name = h->db_column_text(st, 0), *key = h->db_column_text(st, 1);
        json_t *users = json_object_get(json_object_get(r->members.active, key ? key : ""),
                                        "users");
        json_t *row = json_pack("{s:s, s:f, s:I, s:b}", "room", name ? name : "?",
                                "created_at", h->db_column_double(st, 2), "users",
                                (json_int_t)json_object_size(users), "configured",
                                key && json_object_get(r->listed, key) != NULL);
        rc = json_array_append_new(list, row) == 0 ? SM_OK : SM_ENOMEM;
    }
    h->db_finalize(st);
    json_t *result = rc == SM_DONE ? json_pack("{s:O}", "rooms", list) : NULL;
    if (result)
        h->admin_reply(ctx, result);
    else
        h->admin_error(ctx, SM_ERROR, "cannot list the rooms (see the server's log)");
    json_decref(result);
    json_decref(list);
}

/* Its members are moved out (the others see user_left), then every plugin
 * hears of it (SM_EVENT_ROOM_DELETED) and deletes what it keeps for the
 * room, so a room created later under the same name, in any case, starts
 * with no history. A configured room (the default, rooms.rooms) would
 * come back at the next start: refused. */
static void rooms_delete_cmd(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    rooms *r = data;
    const sm_host *h = r->host;
    const char *name = json_string_value(json_object_get(args, "room"));
    char key[ROOMS_NAME_MAX + 1], topic[ROOMS_NAME_MAX + 8];
    if (!name || !sm_name_valid(name, 1, ROOMS_NAME_MAX) ||
        sm_name_fold(name, key, sizeof key) != SM_OK) {
        h->admin_error(ctx, SM_ENOTFOUND, "no such room");
        return;
    }
    if (json_object_get(r->listed, key)) {
        h->admin_error(ctx, SM_ESTATE,
                       "a configured room (rooms.default_room, rooms.rooms): remove it from the "
                       "configuration first");
        return;
    }
    sm_stmt *st = NULL;
    int rc = h->db_prepare(r->self, "DELETE FROM rooms WHERE name_lower = ?", &st);
    if (rc == SM_OK)
        rc = h->db_bind_text(st, 1, key, -1);
    if (rc == SM_OK)
        rc = h->db_step(st) == SM_DONE ? SM_OK : SM_ERROR;
    int64_t deleted = rc == SM_OK ? h->db_changes(r->self) : 0;
    h->db_finalize(st);
    if (rc != SM_OK || deleted == 0) {
        h->admin_error(ctx, rc != SM_OK ? SM_ERROR : SM_ENOTFOUND,
                       rc != SM_OK ? "database error (see the server's log)" : "no such room");
        return;
    }
    snprintf(topic, sizeof topic, "room:%s", key);
    size_t moved = 0, n = h->topic_members(topic, NULL, 0);
    sm_session_id *ids = n ? calloc(n, sizeof *ids) : NULL;
    if (ids) {
        n = h->topic_members(topic, ids, n);
        for (size_t i = 0; i < n; i++)
            moved += membership_leave(&r->members, ids[i]) == SM_OK;
        free(ids);
    }
    h->log(r->self, SM_LOG_INFO, "room %s deleted by the operator", key);
    /* The lower-cased key: the name the room's topic and history go by. */
    if (SM_HOST_HAS(h, room_deleted))
        h->room_deleted(r->self, key);
    json_t *result = json_pack("{s:s, s:b, s:I}", "room", name, "deleted", 1, "sessions_moved_out",
                               (json_int_t)moved);
    h->admin_reply(ctx, result);
    json_decref(result);
}

static const sm_admin_command admin_commands[] = {
    {"rooms.list", rooms_list_cmd, "every room: name, created_at, users in it, configured"},
    {"rooms.delete", rooms_delete_cmd, "delete {room} (not a configured one); members leave it"},
    {NULL, NULL, NULL},
};

static int init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    /* Events come through subscribe_ex (sm_event_info), which came with
     * the users service. */
    if (!SM_HOST_HAS(host, user_lookup_id)) {
        host->log(self, SM_LOG_ERROR, "rooms needs a server with subscribe_ex");
        return SM_ESTATE;
    }
    rooms *r = calloc(1, sizeof *r);
    if (!r)
        return SM_ENOMEM;
    r->host = host;
    r->self = self;
    int rc = membership_init(&r->members, host, self);
    if (rc == SM_OK && !(r->listed = json_object()))
        rc = SM_ENOMEM;
    if (rc == SM_OK)
        rc = read_config(r);
    if (rc == SM_OK)
        rc = host->register_migrations(self, migrations);
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_LOGGED_IN, on_login);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_LOGGED_OUT, on_logout);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_SESSION_CLOSED, on_logout);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_TOPIC_JOINED, on_topic_event);
    if (rc == SM_OK)
        rc = host->subscribe_ex(self, SM_EVENT_TOPIC_LEFT, on_topic_event);
    if (rc == SM_OK && SM_HOST_HAS(host, user_deleted))
        rc = host->register_admin_commands(self, admin_commands);
    /* An older server has no reload: the settings then stay as read. */
    if (rc == SM_OK && SM_HOST_HAS(host, register_reload))
        rc = host->register_reload(self, reload);
    if (rc != SM_OK) {
        rooms_free(r);
        return rc;
    }
    *plugin_data = r;
    return SM_OK;
}

static int start(void *plugin_data)
{
    rooms *r = plugin_data;
    const sm_host *h = r->host;
    int rc = h->db_prepare(r->self, "SELECT name FROM rooms WHERE name_lower = ?", &r->find_stmt);
    if (rc == SM_OK)
        rc = h->db_prepare(r->self,
                           "INSERT INTO rooms (name, name_lower, created_at) VALUES (?, ?, ?)",
                           &r->insert_stmt);
    if (rc == SM_OK)
        rc = h->db_prepare(r->self, "SELECT name, name_lower FROM rooms ORDER BY name_lower",
                           &r->list_stmt);
    if (rc == SM_OK && r->default_room[0])
        rc = ensure_listed(r, r->default_room);
    for (size_t i = 0; rc == SM_OK && i < r->n_configured; i++)
        rc = ensure_listed(r, r->configured[i]);
    if (rc != SM_OK)
        h->log(r->self, SM_LOG_ERROR, "cannot set up the configured rooms (status %d)", rc);
    return rc;
}

static void fini(void *plugin_data)
{
    rooms_free(plugin_data);
}

SM_PLUGIN_DECLARE(.name = "rooms", .version = "1.0",
                  .description = "chat rooms: join_room, leave_room, get_users, list_rooms",
                  .init = init, .fini = fini, .start = start);
