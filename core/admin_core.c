/* The core's own admin commands: what only the core can see (sessions)
 * or do (back up the database). */
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "core.h"
#include "session.h"

/* WebSocket close for a session the operator ends (docs/PROTOCOL.md
 * section 8): policy violation, with a reason the client can show. */
#define KICK_CLOSE_CODE 1008
#define KICK_REASON "closed by the server operator"

static const char *const state_names[] = {"handshake", "key_pending", "open", "closing"};

static json_t *session_row(const session *s)
{
    return json_pack("{s:I, s:s?, s:s, s:s, s:f}", "id", (json_int_t)s->id, "user",
                     s->username, "address", s->address,
                     "state", state_names[s->state], "since", s->connected_at);
}

static void sessions_list(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    (void)data;
    json_t *list = json_array();
    hashmap_iter it;
    void *value;
    hashmap_iter_init(g_core.sessions, &it);
    while (list && hashmap_iter_next(&it, NULL, NULL, &value))
        if (json_array_append_new(list, session_row(value)) != 0) {
            json_decref(list);
            list = NULL;
        }
    json_t *result = list ? json_pack("{s:o}", "sessions", list) : NULL;
    if (result)
        admin_reply(ctx, result);
    else
        admin_error(ctx, SM_ENOMEM, "out of memory");
    json_decref(result);
}

static void kick(session *s)
{
    audit_line("kick", s->username, s->address, s->id, "admin");
    g_core.transport->close(s, KICK_CLOSE_CODE, KICK_REASON);
}

/* {"id": n} closes one session; {"user": name} every session of a user. */
static void sessions_kick(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)data;
    json_t *id = json_object_get(args, "id");
    const char *user = json_string_value(json_object_get(args, "user"));
    size_t kicked = 0;
    if (json_is_integer(id)) {
        session *s = session_find((sm_session_id)json_integer_value(id));
        if (!s || s->state == SESSION_CLOSING) {
            admin_error(ctx, SM_ENOTFOUND, "no such session");
            return;
        }
        kick(s);
        kicked = 1;
    } else if (user) {
        user_sessions *u = session_user(user);
        /* Copied: closing may change the user's list. */
        size_t n = u ? u->n : 0;
        sm_session_id ids[256];
        if (n > sizeof ids / sizeof ids[0])
            n = sizeof ids / sizeof ids[0];
        for (size_t i = 0; i < n; i++)
            ids[i] = u->ids[i];
        for (size_t i = 0; i < n; i++) {
            session *s = session_find(ids[i]);
            if (s && s->state != SESSION_CLOSING) {
                kick(s);
                kicked++;
            }
        }
        if (!kicked) {
            admin_error(ctx, SM_ENOTFOUND, "that user has no session");
            return;
        }
    } else {
        admin_error(ctx, SM_EINVAL, "give \"id\" (a session id) or \"user\"");
        return;
    }
    json_t *result = json_pack("{s:I}", "kicked", (json_int_t)kicked);
    admin_reply(ctx, result);
    json_decref(result);
}

/* {"path": absolute path}: written by this process, so as the server's
 * user, mode 0600. */
static void backup(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)data;
    const char *path = json_string_value(json_object_get(args, "path"));
    if (!path || path[0] != '/') {
        admin_error(ctx, SM_EINVAL, "\"path\" must be an absolute path");
        return;
    }
    char err[512];
    if (storage_backup(g_core.db, path, err, sizeof err) != 0) {
        admin_error(ctx, SM_ERROR, err);
        return;
    }
    audit_line("backup", NULL, NULL, 0, "admin");
    json_t *result = json_pack("{s:s}", "path", path);
    admin_reply(ctx, result);
    json_decref(result);
}

static void commands(sm_admin_ctx *ctx, const json_t *args, void *data);

static const sm_admin_command core_commands[] = {
    {"commands", commands, "list the admin commands this server knows"},
    {"sessions.list", sessions_list, "list the open sessions: id, user, address, state, since"},
    {"sessions.kick", sessions_kick, "close a session {id} or every session of {user}"},
    {"backup", backup, "copy the database to {path} (online backup, mode 0600)"},
    {NULL, NULL, NULL},
};

static void commands(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    (void)data;
    json_t *list = admin_command_list();
    json_t *result = list ? json_pack("{s:o}", "commands", list) : NULL;
    if (result)
        admin_reply(ctx, result);
    else
        admin_error(ctx, SM_ENOMEM, "out of memory");
    json_decref(result);
}

int admin_register_core(void) { return admin_register(NULL, core_commands); }
