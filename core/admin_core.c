/* The core's own admin commands: what only the core can see (sessions)
 * or do (back up the database). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "core.h"
#include "session.h"
#include "session_io.h"

/* WebSocket close for a session the operator ends (docs/PROTOCOL.md
 * section 8): policy violation, with a reason the client can show. */
#define KICK_CLOSE_CODE 1008
#define KICK_REASON "closed by the server operator"

static json_t *session_row(const session *s)
{
    return json_pack("{s:I, s:s?, s:s, s:s, s:f}", "id", (json_int_t)s->id, "user",
                     s->username, "address", s->address,
                     "state", session_usable(s) ? "open" : "closing", "since", s->connected_at);
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
    session_io_close(s, KICK_CLOSE_CODE, KICK_REASON);
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
        if (!s || !session_usable(s)) {
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
            if (s && session_usable(s)) {
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

/* A backup copies this many pages per turn of the loop (4 MiB with
 * SQLite's default 4 KiB pages), so sessions keep being served meanwhile. */
#define BACKUP_PAGES 1024

typedef struct backup_job {
    storage_backup *b;
    sm_admin_ctx *ctx;
    sm_timer *timer;  /* the next step, while one is scheduled */
    char path[4096];
} backup_job;

/* One at a time: a second one answers "busy". */
static backup_job *running_backup;

static void backup_end(backup_job *j, int rc, const char *err)
{
    running_backup = NULL;
    if (rc == 0) {
        audit_line("backup", NULL, NULL, 0, "admin");
        json_t *result = json_pack("{s:s}", "path", j->path);
        admin_reply(j->ctx, result);
        json_decref(result);
    } else {
        admin_error(j->ctx, SM_ERROR, err);
    }
    free(j);
}

static void backup_tick(sm_timer *t, void *arg)
{
    (void)t;
    backup_job *j = arg;
    j->timer = NULL; /* one-shot: freed by the timers after this call */
    char err[512] = "";
    int rc = storage_backup_step(j->b, BACKUP_PAGES, err, sizeof err);
    if (rc == 1 && !(j->timer = core_timer_start(0, backup_tick, j))) {
        storage_backup_abort(j->b);
        snprintf(err, sizeof err, "out of memory");
        rc = -1;
    }
    if (rc != 1)
        backup_end(j, rc, err);
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
    if (running_backup) {
        admin_error(ctx, SM_EBUSY, "a backup is running; try again when it is done");
        return;
    }
    backup_job *j = calloc(1, sizeof *j);
    char err[512] = "";
    if (!j || snprintf(j->path, sizeof j->path, "%s", path) >= (int)sizeof j->path) {
        free(j);
        admin_error(ctx, SM_EINVAL, "path too long");
        return;
    }
    if (storage_backup_begin(g_core.db, path, &j->b, err, sizeof err) != 0) {
        free(j);
        admin_error(ctx, SM_ERROR, err);
        return;
    }
    j->ctx = ctx;
    running_backup = j;
    admin_defer(ctx);
    backup_tick(NULL, j);
}

void admin_abort(void)
{
    backup_job *j = running_backup;
    if (!j)
        return;
    if (j->timer)
        timers_stop(g_core.timers, j->timer);
    storage_backup_abort(j->b);
    backup_end(j, -1, "the server is stopping");
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
