/* FROZEN: the plugin SDK header as an older release shipped it, whose host
 * table ended at `log` (no storage services, no policy hook). Only
 * tests/sdk/old_shape_plugin.c is built against it (-I tests/sdk/v1_0), to
 * prove that today's server still serves plugins built for a shorter
 * sm_host. Never update this file; the real header is
 * include/safemessenger/plugin.h.
 *
 * The rest of this comment is the original's.
 *
 * SafeMessenger plugin SDK.
 *
 * A plugin is a shared object that exports one symbol, `safemessenger_plugin`
 * (declare it with SM_PLUGIN_DECLARE). The server dlopen()s the file with
 * RTLD_NOW | RTLD_LOCAL, checks the descriptor's ABI version against its own
 * and calls init() with a const table of host services (struct sm_host).
 * Plugins never see the server's sockets, TLS, SQLite or OpenSSL objects:
 * everything goes through the host table.
 *
 * Threads: every callback (init, fini, action handlers, core event
 * callbacks, timer callbacks, worker `done` callbacks) runs on the server's
 * single event-loop thread, unless its comment says otherwise. Only a worker
 * job's `work` function runs on a worker thread, and it may call no host
 * service.
 *
 * Ownership: strings passed to the host are copied unless documented
 * otherwise. json_t payloads passed to reply/event functions are borrowed
 * (the caller keeps its reference). Strings the host returns are valid until
 * the callback that received them returns, unless documented otherwise.
 *
 * ABI rule (see docs/PLUGINS.md): the host table only ever grows at its end.
 * A plugin built against an older header keeps working; a plugin that uses
 * an entry added later checks SM_HOST_HAS() first. SM_PLUGIN_ABI_VERSION is
 * bumped only for changes that break existing plugins.
 */
#ifndef SAFEMESSENGER_PLUGIN_H
#define SAFEMESSENGER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. The server accepts plugins built for any
 * version from SM_PLUGIN_ABI_MIN to its own SM_PLUGIN_ABI_VERSION. */
#define SM_PLUGIN_ABI_VERSION 1u
#define SM_PLUGIN_ABI_MIN 1u

#define SM_PLUGIN_DESCRIPTOR_SYMBOL "safemessenger_plugin"

#if defined(__GNUC__)
#define SM_EXPORT __attribute__((visibility("default")))
#define SM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SM_EXPORT
#define SM_PRINTF(fmt, args)
#endif

/* ---- status codes ------------------------------------------------------ */

/* Every host service that can fail returns one of these. */
typedef enum sm_status {
    SM_OK = 0,
    SM_ERROR = -1,        /* generic failure; details are logged by the host */
    SM_ENOMEM = -2,
    SM_EINVAL = -3,       /* bad argument */
    SM_ENOTFOUND = -4,    /* no such session, topic, row, key */
    SM_EEXIST = -5,       /* already registered / constraint violated */
    SM_ESTATE = -6,       /* not allowed now (e.g. registering after init) */
    SM_EREPLIED = -7,     /* this command already has its reply */
    SM_EBUSY = -8,        /* database locked or a limit reached */
    SM_ROW = 1,           /* sm_host.db_step: a row is available */
    SM_DONE = 2           /* sm_host.db_step: the statement has finished */
} sm_status;

/* Protocol error codes (PROTOCOL.md section 6). */
enum sm_error_code {
    SM_ERR_INVALID_CREDENTIALS = 1001,
    SM_ERR_NOT_AUTHORIZED = 1002,
    SM_ERR_INVALID_COMMAND = 1003,
    SM_ERR_MALFORMED = 1004,
    SM_ERR_INTERNAL = 1005,
    SM_ERR_REPLAY = 1006,
    SM_ERR_INTEGRITY = 1007,
    SM_ERR_RATE_LIMITED = 1008,
    SM_ERR_NOT_FOUND = 1009,
    SM_ERR_CONFLICT = 1010,
    SM_ERR_TOO_LARGE = 1011
};

typedef enum sm_log_level {
    SM_LOG_ERROR = 0,
    SM_LOG_WARNING = 1,
    SM_LOG_INFO = 2,
    SM_LOG_DEBUG = 3
} sm_log_level;

/* ---- opaque handles ---------------------------------------------------- */

/* A loaded plugin, as the host knows it. Passed to init; give it back to
 * the registration, storage, timer, worker, config and log services. */
typedef struct sm_plugin sm_plugin;

/* One command being handled. Valid from the handler's call until the reply
 * is sent (for a deferred command) or until the handler returns. */
typedef struct sm_ctx sm_ctx;

/* A prepared statement of the plugin's storage. */
typedef struct sm_stmt sm_stmt;

typedef struct sm_timer sm_timer;

/* Sessions are named by id. Ids are never reused while the server runs,
 * so a stale id simply finds nothing (SM_ENOTFOUND). 0 is never a session. */
typedef uint64_t sm_session_id;

/* ---- actions ----------------------------------------------------------- */

/* Action flags. */
#define SM_ACTION_NEEDS_LOGIN   (1u << 0) /* 1002 before the handler if not logged in */
#define SM_ACTION_NO_REPLY      (1u << 1) /* the command gets no reply at all (PONG) */
#define SM_ACTION_NO_RATE_LIMIT (1u << 2) /* not counted by the per-session rate limit */

/* Field types of a payload schema. */
typedef enum sm_field_type {
    SM_FIELD_END = 0,   /* terminates a schema array */
    SM_FIELD_STRING,    /* min/max bound the length in bytes (UTF-8) */
    SM_FIELD_INTEGER,   /* a JSON integer; min/max bound the value */
    SM_FIELD_NUMBER,    /* integer or real, finite; min/max bound the value */
    SM_FIELD_BOOLEAN,
    SM_FIELD_OBJECT,
    SM_FIELD_ARRAY      /* min/max bound the element count */
} sm_field_type;

/* Field flags. */
#define SM_FIELD_REQUIRED (1u << 0) /* absent or null gets 1004 */
#define SM_FIELD_NAME     (1u << 1) /* string of [A-Za-z0-9_.-] only */

/* One payload field. When min == max == 0 the value is not range-checked.
 * A null value counts as absent (PROTOCOL.md section 5). Unknown fields
 * are ignored. */
typedef struct sm_field {
    const char *name;
    sm_field_type type;
    unsigned flags;
    double min;
    double max;
} sm_field;

/* A handler. `payload` is the decrypted payload object, already checked
 * against the action's schema; it is borrowed for the call. The handler
 * must answer exactly once through sm_host.reply or reply_error, either
 * before returning or later after sm_host.defer. */
typedef void (*sm_handler_fn)(sm_ctx *ctx, const json_t *payload, void *plugin_data);

/* One row of a plugin's action table; the table ends with a row whose name
 * is NULL. `schema` may be NULL (no fields checked) or an array ending with
 * a field of type SM_FIELD_END. */
typedef struct sm_action {
    const char *name;
    sm_handler_fn handler;
    unsigned flags;
    const sm_field *schema;
} sm_action;

/* ---- core events ------------------------------------------------------- */

/* Session life-cycle events, delivered synchronously on the loop thread to
 * every subscribed plugin in plugin load order. For a session that closes
 * while logged in, LOGGED_OUT is delivered before CLOSED. During
 * LOGGED_OUT the session's username is still readable; during CLOSED the
 * session can no longer be sent to. */
typedef enum sm_core_event {
    SM_EVENT_SESSION_OPENED = 0, /* handshake completed */
    SM_EVENT_LOGGED_IN = 1,      /* sm_host.session_login succeeded */
    SM_EVENT_LOGGED_OUT = 2,     /* login ended: logout, re-login, close */
    SM_EVENT_SESSION_CLOSED = 3, /* connection gone; resources about to be freed */
    SM_EVENT_COUNT
} sm_core_event;

/* `username` is NULL for sessions that are not logged in. */
typedef void (*sm_event_fn)(sm_core_event event, sm_session_id session,
                            const char *username, void *plugin_data);

typedef void (*sm_timer_fn)(sm_timer *timer, void *arg);

/* Worker jobs: `work` runs on a worker thread and must not call the host;
 * `done` runs afterwards on the loop thread (also when the server is
 * shutting down, with cancelled = 1, so the plugin can free `arg`). */
typedef void (*sm_work_fn)(void *arg);
typedef void (*sm_work_done_fn)(void *arg, int cancelled);

/* A versioned schema step of a plugin's own tables. Migrations are applied
 * in order at start-up, each in its own transaction, and recorded per
 * plugin name in the database. The list ends with { 0, NULL }. */
typedef struct sm_migration {
    int version;      /* 1, 2, 3, ... strictly increasing */
    const char *sql;  /* one or more statements */
} sm_migration;

/* ---- the host table ---------------------------------------------------- */

typedef struct sm_host {
    /* Size of this struct as the server built it, and the server's ABI
     * version. Check SM_HOST_HAS() before using an entry newer than the
     * header the plugin was built against. */
    size_t size;
    uint32_t abi_version;

    /* -- registration, only during init (SM_ESTATE afterwards) -- */

    /* Registers the plugin's action table (rows ending with name NULL).
     * The table must stay valid until fini. A name another plugin already
     * registered makes start-up fail, naming both plugins. */
    int (*register_actions)(sm_plugin *self, const sm_action *actions);
    /* Subscribes fn to a core event. */
    int (*subscribe)(sm_plugin *self, sm_core_event event, sm_event_fn fn);
    /* Declares the plugin's migrations (array must stay valid until fini). */
    int (*register_migrations)(sm_plugin *self, const sm_migration *migrations);

    /* -- replying to a command (loop thread) -- */

    /* Sends the reply: a `response` with this action name and payload
     * (an object; NULL means {}). SM_EREPLIED for a second reply. */
    int (*reply)(sm_ctx *ctx, const char *action, const json_t *payload);
    /* Sends an `error` reply with code and human message. */
    int (*reply_error)(sm_ctx *ctx, int code, const char *message);
    /* As reply_error with extra fields merged into the error payload
     * (e.g. {"retry_after": 3}). */
    int (*reply_error_extra)(sm_ctx *ctx, int code, const char *message,
                             const json_t *extra);
    /* Keeps ctx alive after the handler returns; the plugin must reply
     * later (typically from a worker job's done callback). If the session
     * has closed meanwhile the reply is dropped, and ctx is freed all the
     * same. After the reply ctx is invalid. */
    int (*defer)(sm_ctx *ctx);
    /* The session that sent the command. */
    sm_session_id (*ctx_session)(const sm_ctx *ctx);
    /* The command's action name. */
    const char *(*ctx_action)(const sm_ctx *ctx);

    /* -- sessions (loop thread) -- */

    /* Marks the session logged in as `username` (copied) with user_id and
     * fires SM_EVENT_LOGGED_IN. A session already logged in is first
     * logged out (SM_EVENT_LOGGED_OUT). */
    int (*session_login)(sm_session_id session, const char *username, int64_t user_id);
    /* Ends the session's login (SM_EVENT_LOGGED_OUT). SM_ESTATE if not
     * logged in. */
    int (*session_logout)(sm_session_id session);
    /* NULL when not logged in or unknown. */
    const char *(*session_username)(sm_session_id session);
    /* 0 when not logged in or unknown. */
    int64_t (*session_user_id)(sm_session_id session);
    /* The peer's IP address as text ("127.0.0.1", "::1"). */
    const char *(*session_address)(sm_session_id session);
    /* Small per-session string attributes (key <= 64 bytes, value <= 1024
     * bytes, at most 32 per session), shared by all plugins: name keys
     * "<plugin>.<key>". value NULL removes the key. Cleared at close. */
    int (*session_set_attr)(sm_session_id session, const char *key, const char *value);
    const char *(*session_get_attr)(sm_session_id session, const char *key);
    /* Closes the session with a WebSocket close code and reason; core
     * events fire as for any close. */
    int (*session_close)(sm_session_id session, int close_code, const char *reason);
    /* Writes up to max ids of the user's logged-in sessions (username
     * compared without regard to ASCII case); returns how many the user
     * has (may exceed max). */
    size_t (*user_sessions)(const char *username, sm_session_id *out, size_t max);

    /* -- events (loop thread); payload borrowed, serialised once -- */

    int (*send_event)(sm_session_id session, const char *action, const json_t *payload);
    /* To every logged-in session of the user; returns SM_OK also when the
     * user has none (see user_sessions to know). */
    int (*send_event_user)(const char *username, const char *action, const json_t *payload);

    /* -- topics: named sets of sessions (rooms are topics) -- */

    int (*topic_join)(const char *topic, sm_session_id session);
    /* SM_ENOTFOUND if the session was not a member. */
    int (*topic_leave)(const char *topic, sm_session_id session);
    int (*topic_is_member)(const char *topic, sm_session_id session);
    /* As user_sessions, for the topic's members. */
    size_t (*topic_members)(const char *topic, sm_session_id *out, size_t max);
    /* Sends the event to every member except `except` (0 for none). The
     * payload is serialised once and only encrypted per member. */
    int (*topic_publish)(const char *topic, const char *action,
                         const json_t *payload, sm_session_id except);

    /* -- time, timers and workers -- */

    /* Wall-clock UNIX time in seconds (a fake clock under the test host). */
    double (*now)(void);
    /* Calls fn after `after` seconds, then every `repeat` seconds if
     * repeat > 0. Returns NULL on failure. */
    sm_timer *(*timer_start)(sm_plugin *self, double after, double repeat,
                             sm_timer_fn fn, void *arg);
    /* Cancels a timer (safe from inside its own callback). A one-shot
     * timer is freed once its callback returns: never stop it after that. */
    void (*timer_stop)(sm_timer *timer);
    /* Queues a job on the core's worker pool. */
    int (*work_submit)(sm_plugin *self, sm_work_fn work, sm_work_done_fn done, void *arg);

    /* -- configuration: the plugin's own subtree "<name> = { ... }" -- */

    /* Each getter writes *out only when the key is present and valid; an
     * absent key leaves *out untouched (set the default first) and returns
     * SM_OK. A wrong type or out-of-range value logs the file and line and
     * returns SM_EINVAL; fail init on it. */
    int (*config_int)(sm_plugin *self, const char *key, int64_t min, int64_t max, int64_t *out);
    int (*config_double)(sm_plugin *self, const char *key, double min, double max, double *out);
    int (*config_bool)(sm_plugin *self, const char *key, int *out);
    /* *out points into the configuration, valid until fini. */
    int (*config_string)(sm_plugin *self, const char *key, const char **out);
    /* A list of strings; returns the count written to out (at most max), or
     * a negative sm_status. Strings valid until fini. */
    int (*config_string_list)(sm_plugin *self, const char *key, const char **out, size_t max);

    /* -- logging -- */

    void (*log)(sm_plugin *self, sm_log_level level, const char *fmt, ...) SM_PRINTF(3, 4);
} sm_host;

/* True when the host table has the given entry (it may be older than the
 * header the plugin was built against). */
#define SM_HOST_HAS(host, member) \
    ((host)->size >= offsetof(sm_host, member) + sizeof(((sm_host *)0)->member))

/* ---- the descriptor ---------------------------------------------------- */

typedef struct sm_plugin_descriptor {
    uint32_t abi_version;     /* SM_PLUGIN_ABI_VERSION the plugin was built with */
    const char *name;         /* [a-z0-9_]+; also the name of its config section */
    const char *version;      /* the plugin's own version, free text */
    const char *description;
    /* Called once at start-up. Register actions, subscribe to events,
     * declare migrations, read config. Store the plugin's state in
     * *plugin_data; it is passed back to every callback. Return SM_OK, or
     * anything else to make start-up fail. Migrations run after init
     * returns, so do not touch the plugin's tables in init. */
    int (*init)(sm_plugin *self, const sm_host *host, void **plugin_data);
    /* Called once at shutdown, in reverse load order. May be NULL. */
    void (*fini)(void *plugin_data);
    /* Called once after every plugin's init and every migration, before
     * the first session. May be NULL. Return SM_OK or fail start-up. */
    int (*start)(void *plugin_data);
} sm_plugin_descriptor;

/* Declares the plugin's descriptor with designated initialisers, so fields
 * added to the descriptor later default to NULL:
 *   SM_PLUGIN_DECLARE(.name = "hello", .version = "1.0", .init = hello_init);
 */
#ifdef __cplusplus
/* C++20 designated initialisers (fields in declaration order). */
#define SM_PLUGIN_DECLARE(...) \
    extern "C" SM_EXPORT const sm_plugin_descriptor safemessenger_plugin = \
        { .abi_version = SM_PLUGIN_ABI_VERSION, __VA_ARGS__ }
#else
#define SM_PLUGIN_DECLARE(...) \
    SM_EXPORT const sm_plugin_descriptor safemessenger_plugin = \
        { .abi_version = SM_PLUGIN_ABI_VERSION, __VA_ARGS__ }
#endif

#ifdef __cplusplus
}
#endif

#endif
