/* SafeMessenger plugin SDK.
 *
 * A plugin is a shared object that exports one symbol, `safemessenger_plugin`
 * (declare it with SM_PLUGIN_DECLARE). The server dlopen()s the file with
 * RTLD_NOW | RTLD_LOCAL, checks the descriptor's ABI version against its own
 * and calls init() with a const table of host services (struct sm_host).
 * Plugins never see the server's sockets, TLS, SQLite or OpenSSL objects:
 * everything goes through the host table.
 *
 * Threads: every callback (init, fini, action handlers, core event
 * callbacks, timer callbacks, worker `done` callbacks) runs on one thread,
 * the logic thread (the "loop thread" below; the server's sockets have I/O
 * threads of their own, which never call a plugin), unless its comment
 * says otherwise, so a plugin needs
 * no lock for its own state. Only a worker job's `work` function runs on a
 * worker thread, and it may call no host service: from any thread but the
 * logic thread every host call except now, metric_add and metric_set is
 * refused without effect (SM_ESTATE, 0 or NULL; logged).
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

/* A running timer (sm_host.timer_start). Owned by the core; the handle is
 * valid until the timer is stopped, or, for a one-shot timer, until its
 * callback returns. */
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

/* A handler, called on the loop thread. `payload` is the decrypted payload
 * object, already checked against the action's schema; it is borrowed for
 * the call (copy what you keep). `plugin_data` is what init stored. The
 * handler must answer exactly once through sm_host.reply or reply_error,
 * either before returning or later after sm_host.defer; a handler that
 * returns without either gets a 1005 sent for it. */
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
    /* (appended) An account was deleted (sm_host.user_deleted, e.g. by the
     * admin tool): session is 0, username the deleted name. Delete what
     * you keep for that user. Its sessions were closed before. */
    SM_EVENT_USER_DELETED = 4,
    /* (appended) A room was deleted (sm_host.room_deleted, e.g. by the
     * admin tool): session is 0; sm_event_info.room is the room's name
     * (an sm_event_fn gets it in its `username` argument instead). The
     * rooms plugin passes it ASCII lower-cased; compare without regard to
     * ASCII case. Delete what you keep for that room. Its members were
     * moved out before. */
    SM_EVENT_ROOM_DELETED = 5,
    /* (appended) Presence: the user's first session logged in (ONLINE)
     * or the last one ended (OFFLINE), counting every node of a cluster.
     * Fired once for each change, on one node: with one node, right
     * after the LOGGED_IN (LOGGED_OUT) of that session; in a cluster, on
     * the node whose session made the change, a moment later (after
     * Redis counted it), or on any node when a node died (its users go
     * offline within 15 s). session is that local session, or 0 when the
     * change came from elsewhere (a dead node, a resync after a Redis
     * outage); username is the account's name. A user may have sessions
     * on other nodes: sm_host.user_sessions counts this node's only. */
    SM_EVENT_USER_ONLINE = 6,
    SM_EVENT_USER_OFFLINE = 7,
    /* (appended) Topic presence: the first session of a user joined a
     * topic (TOPIC_JOINED), or the user's last session in it left
     * (TOPIC_LEFT), counting every node; once for each change, as the
     * presence events above. sm_event_info.topic is the topic,
     * username the user; only logged-in sessions count. Rooms send
     * user_joined and user_left from these. Subscribe with subscribe_ex:
     * an sm_event_fn gets the username but has no topic argument. */
    SM_EVENT_TOPIC_JOINED = 8,
    SM_EVENT_TOPIC_LEFT = 9,
    SM_EVENT_COUNT
} sm_core_event;

/* A core event callback, on the loop thread. `username` is NULL for
 * sessions that are not logged in; it is owned by the core and valid
 * during the call. For SM_EVENT_ROOM_DELETED it is a room name instead.
 * Plugins must ignore event values they do not know (new events are
 * appended). New plugins use sm_event_ex_fn (sm_host.subscribe_ex). */
typedef void (*sm_event_fn)(sm_core_event event, sm_session_id session,
                            const char *username, void *plugin_data);

/* What a core event is about, for sm_event_ex_fn. The struct only grows
 * at its end: `size` is the size the core filled, so check
 * SM_EVENT_INFO_HAS(info, field) before reading a field newer than the
 * one this header had first (those below are always there). Owned by
 * the core, valid during the call. */
typedef struct sm_event_info {
    size_t size;
    sm_core_event event;
    sm_session_id session;  /* 0 for USER_DELETED and ROOM_DELETED */
    const char *username;   /* the session's login, NULL when not logged in;
                               USER_DELETED: the deleted account; ROOM_DELETED: NULL */
    const char *room;       /* ROOM_DELETED: the deleted room (ASCII lower-cased
                               by the rooms plugin); NULL for every other event */
    const char *topic;      /* (appended) TOPIC_JOINED, TOPIC_LEFT: the topic; else NULL */
} sm_event_info;

/* True when the core filled the given field of an sm_event_info. */
#define SM_EVENT_INFO_HAS(info, member) \
    ((info)->size >= offsetof(sm_event_info, member) + sizeof(((sm_event_info *)0)->member))

/* A core event callback taking an sm_event_info (sm_host.subscribe_ex),
 * on the loop thread. Ignore event values you do not know. */
typedef void (*sm_event_ex_fn)(const sm_event_info *info, void *plugin_data);

/* The answers of sm_host.users_online and sm_host.topic_users, on the
 * loop thread; `arg` is what the call got. */
typedef void (*sm_users_online_fn)(int status, const int *online, size_t n, void *arg);
typedef void (*sm_topic_users_fn)(int status, const char *const *users, size_t n, void *arg);

/* What another node's instance of the plugin broadcast (sm_host.broadcast),
 * on the loop thread; payload is borrowed for the call. */
typedef void (*sm_broadcast_fn)(const json_t *payload, void *plugin_data);

/* A timer callback, on the loop thread; `arg` is what timer_start got. */
typedef void (*sm_timer_fn)(sm_timer *timer, void *arg);

/* ---- policy: may one user interact with another? ------------------------ */

/* Interactions between two users that plugins may veto (values are never
 * reused; new kinds are appended, so a policy must allow kinds it does not
 * know). */
typedef enum sm_interaction {
    SM_INTERACTION_PRIVATE_MESSAGE = 1, /* from sends a private message to to */
    SM_INTERACTION_FRIEND_REQUEST = 2   /* from sends a friend request to to */
} sm_interaction;

/* A policy's verdict. */
typedef enum sm_verdict {
    SM_VERDICT_ALLOW = 0,   /* no objection */
    SM_VERDICT_DENY = 1,    /* refuse openly: the action answers 1002 */
    SM_VERDICT_DROP = 2     /* refuse silently: acknowledge as usual, but store and
                               deliver nothing (e.g. the recipient blocked the sender) */
} sm_verdict;

/* A policy check: usernames as sessions show them; runs on the loop
 * thread; must not block. Returns an sm_verdict. */
typedef int (*sm_policy_fn)(sm_interaction what, const char *from_user, const char *to_user,
                            void *plugin_data);

/* Kinds of metric a plugin may register (sm_host.metric_register). */
typedef enum sm_metric_type {
    SM_METRIC_COUNTER = 0, /* only grows; the name ends in "_total" */
    SM_METRIC_GAUGE = 1    /* goes up and down */
} sm_metric_type;

/* A metric a plugin registered: owned by the core, valid until the
 * plugin's fini returns. */
typedef struct sm_metric sm_metric;

/* Worker jobs: `work` runs on a worker thread and must not call the host
 * (such calls are refused, see "Threads" above);
 * `done` runs afterwards on the loop thread (also when the server is
 * shutting down, with cancelled = 1, so the plugin can free `arg`). */
typedef void (*sm_work_fn)(void *arg);
typedef void (*sm_work_done_fn)(void *arg, int cancelled);

/* A configuration reload (SIGHUP, docs/OPERATIONS.md "Reload"): called on
 * the loop thread while the config_* getters read the new file. With
 * apply = 0, read and check every setting and keep nothing: return SM_OK,
 * or SM_EINVAL when a value is bad (the getters have logged it), and the
 * whole reload is refused. With apply = 1 (every plugin's check passed),
 * read them again and put them in force; strings the getters return then
 * stay valid until fini. */
typedef int (*sm_reload_fn)(void *plugin_data, int apply);

/* A versioned schema step of a plugin's own tables. Migrations are applied
 * in order at start-up, each in its own transaction, and recorded per
 * plugin name in the database. The list ends with { 0, NULL }. */
typedef struct sm_migration {
    int version;      /* 1, 2, 3, ... strictly increasing */
    const char *sql;  /* one or more statements */
} sm_migration;

/* ---- admin commands ---------------------------------------------------- */

/* One admin command being handled (safemessenger-admin, through the
 * server's admin socket or in the tool's own process on a stopped
 * server). Valid until the reply, like sm_ctx. */
typedef struct sm_admin_ctx sm_admin_ctx;

/* An admin command handler, on the loop thread. `args` is the request's
 * argument object (borrowed; unchecked: validate what you read). Answer
 * exactly once with sm_host.admin_reply or admin_error, before returning
 * or after admin_defer; a handler that returns without either gets an
 * error answered for it. */
typedef void (*sm_admin_fn)(sm_admin_ctx *ctx, const json_t *args, void *plugin_data);

/* One row of a plugin's admin table; the table ends with a row whose name
 * is NULL. Names are "<area>.<verb>" ("users.disable", "rooms.list"). */
typedef struct sm_admin_command {
    const char *name;
    sm_admin_fn handler;
    const char *summary; /* one line, shown by `safemessenger-admin commands` */
} sm_admin_command;

/* ---- names ------------------------------------------------------------ */

/* Usernames and room names are [A-Za-z0-9_.-] and compared without regard
 * to ASCII case: fold them to lower case for keys. These helpers are
 * static inline rather than host services on purpose: they are pure, so
 * they cost the host table nothing, behave the same under every server a
 * plugin is loaded into (no SM_HOST_HAS check), and the core's own
 * SM_FIELD_NAME check uses the very same code. A plugin built against an
 * older header keeps its own copy, which is fine: the rule never changes. */

/* 1 when c may appear in a name. */
static inline int sm_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

/* 1 when s is min to max bytes of name characters, else 0 (also for NULL). */
static inline int sm_name_valid(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++)
        if (n >= max || !sm_name_char(s[n]))
            return 0;
    return n >= min;
}

/* Writes s with A-Z lowered into out (NUL-terminated). SM_EINVAL, with
 * out untouched, for a NULL or empty s or one that does not fit
 * (strlen(s) >= out_len). Other bytes are copied as they are. */
static inline int sm_name_fold(const char *s, char *out, size_t out_len)
{
    size_t n = 0;
    if (!s || !out)
        return SM_EINVAL;
    while (s[n])
        n++;
    if (n == 0 || n >= out_len)
        return SM_EINVAL;
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    out[n] = '\0';
    return SM_OK;
}

/* Compares without regard to ASCII case: < 0, 0 or > 0 as strcmp on the
 * folded names (a sort order for listings). */
static inline int sm_name_compare(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = (*a >= 'A' && *a <= 'Z') ? *a - 'A' + 'a' : (unsigned char)*a;
        int cb = (*b >= 'A' && *b <= 'Z') ? *b - 'A' + 'a' : (unsigned char)*b;
        if (ca != cb || !ca)
            return ca - cb;
    }
}

/* 1 when a and b are the same name without regard to ASCII case; 0 when
 * not, or when either is NULL. */
static inline int sm_name_equal(const char *a, const char *b)
{
    return a && b && sm_name_compare(a, b) == 0;
}

/* ---- users: the accounts service --------------------------------------- */

/* One account, as sm_host.user_lookup returns it. The caller sets `size`
 * to sizeof(sm_user_info) before the call; the struct only grows at its
 * end and the core fills only what fits. The strings are owned by the
 * core: valid until the next user_lookup/user_lookup_id call or until the
 * callback that called returns, whichever comes first. */
typedef struct sm_user_info {
    size_t size;
    int64_t id;             /* the account's id (session_login's user_id) */
    const char *name;       /* as registered (its case kept) */
    const char *public_key; /* the registered PEM public key, NULL when none */
} sm_user_info;

/* The plugin that owns accounts (auth) answers lookups for every other
 * plugin through this (sm_host.register_users_provider). Each function
 * fills *out (its strings need stay valid only until the function returns:
 * the core copies them) and returns SM_OK, SM_ENOTFOUND, or another error
 * status (logged). Runs on the loop thread, synchronously: it must not
 * block for long (one indexed query). */
typedef struct sm_users_provider {
    size_t size; /* sizeof(sm_users_provider) as the provider was built */
    /* By name, compared without regard to ASCII case. */
    int (*by_name)(void *plugin_data, const char *name, sm_user_info *out);
    int (*by_id)(void *plugin_data, int64_t id, sm_user_info *out);
} sm_users_provider;

/* ---- the host table ---------------------------------------------------- */

typedef struct sm_host {
    /* Size of this struct as the server built it, and the server's ABI
     * version. Check SM_HOST_HAS() before using an entry newer than the
     * header the plugin was built against. */
    size_t size;
    uint32_t abi_version;

    /* -- registration, only during init (SM_ESTATE afterwards) -- */

    /* Registers the plugin's action table (rows ending with name NULL),
     * all rows or none. The table is borrowed and must stay valid until
     * fini (make it static const). A row without name or handler is
     * SM_EINVAL; a name listed twice or already registered (by another
     * plugin, or key_exchange by the core) is SM_EEXIST and makes
     * start-up fail, naming both plugins. */
    int (*register_actions)(sm_plugin *self, const sm_action *actions);
    /* Subscribes fn to a core event (SM_EINVAL for an event this server
     * does not know). Subscribers are called in plugin load order. */
    int (*subscribe)(sm_plugin *self, sm_core_event event, sm_event_fn fn);
    /* Declares the plugin's migrations; the loader applies them after
     * every init, before start. The array is borrowed and must stay valid
     * until fini. */
    int (*register_migrations)(sm_plugin *self, const sm_migration *migrations);

    /* -- replying to a command (loop thread) -- */

    /* Sends the reply: a `response` with this action name and payload
     * (an object; NULL means {}). `action` and `payload` are borrowed and
     * serialised during the call. SM_EREPLIED for a second reply,
     * SM_EINVAL for bad arguments (not counted as the reply). A payload
     * over the core's limit (a quarter of limits.send_queue_bytes) is
     * not sent: the client gets error 1011 "reply too large" as the
     * reply, and this returns SM_ERROR. */
    int (*reply)(sm_ctx *ctx, const char *action, const json_t *payload);
    /* Sends an `error` reply {"code", "message", "command"} with a
     * protocol code (enum sm_error_code) and a human message (copied).
     * Never put internal details into a 1005 message: log them. */
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
    /* The command's action name (the row's name from the action table). */
    const char *(*ctx_action)(const sm_ctx *ctx);

    /* -- sessions (loop thread) -- */

    /* Marks the session logged in as `username` (1 to 64 bytes, copied)
     * with user_id and fires SM_EVENT_LOGGED_IN before returning. A
     * session already logged in is first logged out (SM_EVENT_LOGGED_OUT).
     * The core trusts the call: checking credentials is the caller's job. */
    int (*session_login)(sm_session_id session, const char *username, int64_t user_id);
    /* Ends the session's login (SM_EVENT_LOGGED_OUT). SM_ESTATE if not
     * logged in. */
    int (*session_logout)(sm_session_id session);
    /* The login as session_login got it; NULL when not logged in or
     * unknown. Owned by the core: valid until the callback returns. */
    const char *(*session_username)(sm_session_id session);
    /* 0 when not logged in or unknown. */
    int64_t (*session_user_id)(sm_session_id session);
    /* The peer's IP address as text ("127.0.0.1", "::1"); NULL for an
     * unknown session. Valid until the callback returns. */
    const char *(*session_address)(sm_session_id session);
    /* Small per-session string attributes (key <= 64 bytes, value <= 1024
     * bytes, at most 32 per session), shared by all plugins: name keys
     * "<plugin>.<key>". Key and value are copied; value NULL removes the
     * key. Cleared at close. get_attr returns NULL when absent; its string
     * is valid until the attribute changes or the callback returns. */
    int (*session_set_attr)(sm_session_id session, const char *key, const char *value);
    const char *(*session_get_attr)(sm_session_id session, const char *key);
    /* Closes the session with a WebSocket close code and reason; core
     * events fire as for any close. */
    int (*session_close)(sm_session_id session, int close_code, const char *reason);
    /* Writes up to max ids of the user's logged-in sessions (username
     * compared without regard to ASCII case); returns how many the user
     * has (may exceed max; out may be NULL to count only). */
    size_t (*user_sessions)(const char *username, sm_session_id *out, size_t max);

    /* -- events (loop thread); payload borrowed, serialised once -- */

    /* One `event` message (payload an object; NULL means {}) to one
     * session, logged in or not. Events to a session whose command is in
     * flight are held until that command's reply. SM_ENOTFOUND for an
     * unknown session, SM_ERROR if it is closing. */
    int (*send_event)(sm_session_id session, const char *action, const json_t *payload);
    /* To every logged-in session of the user; returns SM_OK also when the
     * user has none (see user_sessions to know). */
    int (*send_event_user)(const char *username, const char *action, const json_t *payload);

    /* -- topics: named sets of sessions (rooms are topics), loop thread -- */

    /* Topic names are 1 to 256 bytes, copied; a topic exists while it has
     * members. Joining twice is SM_OK. Membership ends at close, never at
     * logout. */
    int (*topic_join)(const char *topic, sm_session_id session);
    /* SM_ENOTFOUND if the session was not a member. */
    int (*topic_leave)(const char *topic, sm_session_id session);
    /* 1 or 0. */
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
    /* Calls fn(timer, arg) on the loop thread after `after` seconds, then
     * every `repeat` seconds if repeat > 0 (monotonic clock). `arg` stays
     * the plugin's: free it after stopping the timer. Returns NULL on
     * failure (negative time, NULL fn, no memory). The core stops the
     * plugin's remaining timers after its fini. */
    sm_timer *(*timer_start)(sm_plugin *self, double after, double repeat,
                             sm_timer_fn fn, void *arg);
    /* Cancels a timer (safe from inside its own callback). A one-shot
     * timer is freed once its callback returns: never stop it after that. */
    void (*timer_stop)(sm_timer *timer);
    /* Queues a job on the core's worker pool: work(arg) on a worker
     * thread (no host calls there), then done(arg, cancelled) on the loop
     * thread (done may be NULL). `arg` is the plugin's; free it in done.
     * The plugin's jobs start in submit order; the pool serves each
     * plugin and the core's handshakes in turn (docs/PLUGINS.md section 9).
     * SM_OK, SM_EINVAL (no work, or no pool as under --check-config) or
     * SM_ERROR (pool stopping, no memory: done will not be called). */
    int (*work_submit)(sm_plugin *self, sm_work_fn work, sm_work_done_fn done, void *arg);

    /* -- configuration: the plugin's own subtree "<name> = { ... }" -- */

    /* Each getter writes *out only when the key is present and valid; an
     * absent key leaves *out untouched (set the default first) and returns
     * SM_OK. A wrong type or out-of-range value logs the file and line and
     * returns SM_EINVAL; fail init on it. */
    int (*config_int)(sm_plugin *self, const char *key, int64_t min, int64_t max, int64_t *out);
    int (*config_double)(sm_plugin *self, const char *key, double min, double max, double *out);
    int (*config_bool)(sm_plugin *self, const char *key, int *out);
    /* *out points into the configuration, owned by the core, valid until
     * fini returns. */
    int (*config_string)(sm_plugin *self, const char *key, const char **out);
    /* A list of strings; returns the count written to out (at most max), or
     * a negative sm_status. Strings valid until fini. */
    int (*config_string_list)(sm_plugin *self, const char *key, const char **out, size_t max);

    /* -- logging (loop thread only; never log secrets) -- */

    /* One line on stderr, "[<plugin name>]" prefixed, printf-style, cut at
     * 1024 bytes; filtered by the configuration's log.level. */

    void (*log)(sm_plugin *self, sm_log_level level, const char *fmt, ...) SM_PRINTF(3, 4);

    /* -- storage: the core's database through prepared statements -- */

    /* Storage runs on the loop thread only (never in a worker's work).
     * Prepares exactly one SQL statement (SM_EINVAL for more, SM_ERROR
     * logged with the SQL for a bad one). The statement is the plugin's:
     * db_finalize it, at the latest in fini. Parameters are bound by
     * 1-based index, columns read by 0-based index. */
    int (*db_prepare)(sm_plugin *self, const char *sql, sm_stmt **out);
    int (*db_bind_int64)(sm_stmt *stmt, int index, int64_t value);
    int (*db_bind_double)(sm_stmt *stmt, int index, double value);
    /* len < 0 means strlen(value). The text is copied. */
    int (*db_bind_text)(sm_stmt *stmt, int index, const char *value, long len);
    int (*db_bind_null)(sm_stmt *stmt, int index);
    /* SM_ROW, SM_DONE, SM_EEXIST (constraint), SM_EBUSY or SM_ERROR. */
    int (*db_step)(sm_stmt *stmt);
    int64_t (*db_column_int64)(sm_stmt *stmt, int col);
    double (*db_column_double)(sm_stmt *stmt, int col);
    /* NULL for SQL NULL; owned by the statement, valid until the next
     * step/reset/finalize. */
    const char *(*db_column_text)(sm_stmt *stmt, int col);
    int (*db_column_is_null)(sm_stmt *stmt, int col);
    /* Makes the statement ready to run again; bindings are cleared. */
    int (*db_reset)(sm_stmt *stmt);
    /* Frees the statement; NULL is allowed. */
    void (*db_finalize)(sm_stmt *stmt);
    /* Transactions: begin is BEGIN IMMEDIATE; commit returns only when the
     * data is committed. There is one database connection, shared by all
     * plugins: begin and commit within one callback, never across a
     * deferral. Nesting is not supported (SM_ESTATE). A failed commit
     * rolls back and returns SM_ERROR: reply "stored" only after SM_OK. */
    int (*db_begin)(sm_plugin *self);
    int (*db_commit)(sm_plugin *self);
    int (*db_rollback)(sm_plugin *self);
    /* Of the shared connection: read them right after your own step. */
    int64_t (*db_last_insert_id)(sm_plugin *self);
    int64_t (*db_changes)(sm_plugin *self);

    /* -- policy hook (appended: check SM_HOST_HAS(host, policy_check)) -- */

    /* Registers a policy consulted by policy_check, in plugin load order.
     * Only during init. */
    int (*register_policy)(sm_plugin *self, sm_policy_fn fn);
    /* Asks every registered policy whether `from_user` may do `what` to
     * `to_user`; the first verdict other than SM_VERDICT_ALLOW wins and is
     * returned. Plugins that carry out an interaction call this first. */
    int (*policy_check)(sm_interaction what, const char *from_user, const char *to_user);

    /* -- fan-out budget (appended: check SM_HOST_HAS(host, topic_fanout_take)) -- */

    /* Charges a publish of payload_bytes to each member of the topic
     * (payload_bytes x members) to the topic's fan-out budget, a token
     * bucket of limits.room_fanout_bytes_per_second with burst
     * limits.room_fanout_burst. SM_OK: charged (also for a topic without
     * members, at no cost), go ahead. SM_EBUSY: over budget, nothing
     * charged, and *retry_after (may be NULL) is the seconds until it
     * would pass: answer 1008 with {"retry_after": ...} and store and
     * publish nothing. Call it before storing what you will publish. */
    int (*topic_fanout_take)(const char *topic, size_t payload_bytes, double *retry_after);

    /* -- audit log (appended: check SM_HOST_HAS(host, audit)) -- */

    /* Writes an audit line (source "audit", level info) for an event the
     * core cannot see, e.g. "login_failed" or "register": the event, the
     * username as the client gave it (NULL: none) and the session's
     * address, in the configured log.format. The core itself audits
     * connections, logins and logouts. Never pass a secret. */
    void (*audit)(sm_plugin *self, sm_session_id session, const char *event,
                  const char *username);

    /* -- admin commands (appended: check SM_HOST_HAS(host, user_deleted)) -- */

    /* Registers the plugin's admin commands (rows ending with name NULL),
     * all or none; only during init. The table is borrowed: make it static
     * const. A name already registered is SM_EEXIST and fails start-up. */
    int (*register_admin_commands)(sm_plugin *self, const sm_admin_command *commands);
    /* Answers an admin command with a result object (borrowed; NULL means
     * {}). SM_EREPLIED for a second answer. */
    int (*admin_reply)(sm_admin_ctx *ctx, const json_t *result);
    /* Answers with an error: status is SM_ENOTFOUND (no such user, room),
     * SM_EINVAL (bad arguments), SM_EEXIST, SM_EBUSY or SM_ERROR; the
     * message (copied) is shown to the operator as is. */
    int (*admin_error)(sm_admin_ctx *ctx, int status, const char *message);
    /* Keeps ctx alive after the handler returns (e.g. for a worker job);
     * answer later. */
    int (*admin_defer)(sm_admin_ctx *ctx);
    /* Tells every plugin (SM_EVENT_USER_DELETED, in load order) that the
     * account `username` was deleted, so each deletes what it keeps for
     * it. Called by the plugin that owns accounts (auth) after its own
     * delete committed. */
    int (*user_deleted)(sm_plugin *self, const char *username);

    /* -- configuration reload (appended: check SM_HOST_HAS(host, register_reload)) -- */

    /* Registers fn to receive the plugin's settings again when the server
     * reloads its configuration (sm_reload_fn). Only during init; one per
     * plugin (a second call replaces the first). A plugin without one keeps
     * the settings it read at init until a restart. */
    int (*register_reload)(sm_plugin *self, sm_reload_fn fn);

    /* -- metrics (appended: check SM_HOST_HAS(host, metric_set)) -- */

    /* Registers a counter or gauge served on /metrics (docs/OPERATIONS.md,
     * "Monitoring"). Only during init. `name` is
     * "safemessenger_<plugin name>_<what>" of [a-z0-9_], a counter's
     * ending in "_total"; `help` one line (copied); `labels` a
     * NULL-terminated list of at most 4 label names ([a-z_][a-z0-9_]*),
     * or NULL for none. SM_EINVAL for a bad name, SM_EEXIST for a name
     * registered with another type or labels. Registering a name again
     * the same way (the plugin loaded again by a configuration reload)
     * gives the same metric, its values kept. Every series starts at 0
     * when first added to or set. */
    int (*metric_register)(sm_plugin *self, sm_metric_type type, const char *name,
                           const char *help, const char *const *labels, sm_metric **out);
    /* Adds value to the series of these label values (one per registered
     * label, NULL when there are none): value >= 0 for a counter, any for
     * a gauge. Label values must come from a small fixed set (a result, a
     * kind), never a username or anything a client chooses: a family
     * holds at most 2048 series, and adding to a new one past that is
     * SM_EBUSY. Unlike every other service, safe from any thread, a
     * worker job's work included. */
    int (*metric_add)(sm_metric *metric, const char *const *label_values, double value);
    /* Sets a gauge's series (SM_EINVAL for a counter); as metric_add. */
    int (*metric_set)(sm_metric *metric, const char *const *label_values, double value);

    /* -- deleted rooms (appended: check SM_HOST_HAS(host, room_deleted)) -- */

    /* Tells every plugin (SM_EVENT_ROOM_DELETED, in load order; the room
     * in sm_event_info.room, or in an sm_event_fn's `username` argument)
     * that the room `room` was deleted, so each deletes what it keeps for
     * it (messaging: the room's history). Called by the plugin that owns
     * rooms (rooms) after its own delete committed and its members were
     * moved out. SM_EINVAL for a NULL or empty name. */
    int (*room_deleted)(sm_plugin *self, const char *room);

    /* -- SDK services (appended: check SM_HOST_HAS(host, user_lookup_id)) -- */

    /* As topic_publish, but skips every session logged in as the user
     * `except_user` (compared without regard to ASCII case; NULL: skip
     * none), so an event reaches a room's other users and not the acting
     * user's other devices. The payload is serialised once. */
    int (*topic_publish_except_user)(const char *topic, const char *action,
                                     const json_t *payload, const char *except_user);
    /* As subscribe, for a callback taking an sm_event_info, which can
     * carry new fields without a new callback type. Only during init. A
     * plugin may use both; each registered callback is called. */
    int (*subscribe_ex)(sm_plugin *self, sm_core_event event, sm_event_ex_fn fn);
    /* Makes the plugin the users provider (the plugin that owns accounts:
     * auth). Only during init; the struct is borrowed (make it static
     * const). SM_EEXIST when another plugin already is the provider,
     * SM_EINVAL for a struct without by_name or by_id. */
    int (*register_users_provider)(sm_plugin *self, const sm_users_provider *provider);
    /* Looks an account up by name (without regard to ASCII case) through
     * the users provider. out may be NULL to ask only whether it exists;
     * otherwise set out->size first. SM_OK, SM_ENOTFOUND, SM_ESTATE when
     * no users provider is loaded, SM_EINVAL for a NULL or empty name, or
     * the provider's error. From start() on (providers register in init);
     * user_lookup(NULL, NULL) is SM_ESTATE exactly when no provider is
     * loaded: a plugin that needs one checks that in its start. */
    int (*user_lookup)(const char *name, sm_user_info *out);
    /* As user_lookup, by the account's id. */
    int (*user_lookup_id)(int64_t id, sm_user_info *out);

    /* -- presence across nodes (appended: check SM_HOST_HAS(host, topic_users)) -- */

    /* Whether each of names[0..n) has a session anywhere: on this server,
     * or on any node of a cluster. done runs once on the loop thread with
     * online[i] (1 or 0) for names[i], valid during the call: on one node
     * before users_online returns, with SM_OK; in a cluster once Redis
     * answered (SM_OK), or, when Redis cannot be asked, with SM_EBUSY and
     * this node's sessions only. Meant for a handler that defers its
     * reply (sm_host.defer) and replies from done. Returns SM_OK (done ran
     * or will run; not if a configuration reload unloads the plugin
     * first), or SM_EINVAL (a NULL list, n over 4096, a name that is no
     * user name) / SM_ENOMEM, and done will not run. */
    int (*users_online)(sm_plugin *self, const char *const *names, size_t n,
                        sm_users_online_fn done, void *arg);
    /* The users with a session in topic, counting every node of a
     * cluster: done runs once with users[0..n), each the account's name
     * (as its session logged in, else as the users service spells it),
     * valid during the call, in no particular order. As users_online
     * otherwise: SM_EBUSY with this node's members only when Redis cannot
     * be asked. Only logged-in sessions count. */
    int (*topic_users)(sm_plugin *self, const char *topic, sm_topic_users_fn done, void *arg);

    /* -- a plugin's instances on the nodes of a cluster (appended: check
     * SM_HOST_HAS(host, broadcast)) -- */

    /* Has fn receive what this plugin's instances on the other nodes
     * broadcast (never its own). Only during init; once. */
    int (*register_broadcast)(sm_plugin *self, sm_broadcast_fn fn);
    /* Sends payload (an object, borrowed, serialised now) to this
     * plugin's instances on every other node of the cluster that
     * registered a broadcast callback, each once, in the order sent;
     * nothing without a cluster. For state every node must share, such
     * as rate-limit counters (auth counts failed logins cluster-wide
     * this way). SM_OK (handed to Redis, or no cluster), SM_EBUSY (Redis
     * unreachable: nothing sent, the server logs it), SM_EINVAL,
     * SM_ENOMEM. */
    int (*broadcast)(sm_plugin *self, const json_t *payload);
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
    /* Called once at shutdown, in reverse load order, after sessions are
     * closed and every worker job's done has run; the database is still
     * open. Also called when start-up fails after this plugin's init
     * succeeded (start may not have run); never after a failed init, so
     * init frees what it took before failing. May be NULL. */
    void (*fini)(void *plugin_data);
    /* Called once after every plugin's init and every migration, before
     * the first session. May be NULL. Return SM_OK or fail start-up. */
    int (*start)(void *plugin_data);
} sm_plugin_descriptor;

/* Declares the plugin's descriptor with designated initialisers, so the
 * fields a plugin does not name are NULL:
 *   SM_PLUGIN_DECLARE(.name = "hello", .version = "1.0", .init = hello_init);
 * This keeps source compatibility when a field is added, not binary
 * compatibility: the descriptor has no size field, so adding one needs an
 * ABI version bump (docs/PLUGINS.md, "The ABI rule"). */
#ifdef __cplusplus
/* C++20 designated initialisers (fields in declaration order). g++ before
 * 13 warns under -Wextra about every field a designated initialiser leaves
 * out, which is the point here, so the warning is off for this one
 * declaration. */
#if defined(__GNUC__)
#define SM_DECLARE_BEGIN_ \
    _Pragma("GCC diagnostic push") \
    _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")
#define SM_DECLARE_END_ _Pragma("GCC diagnostic pop")
#else
#define SM_DECLARE_BEGIN_
#define SM_DECLARE_END_
#endif
/* The pragma cannot stand before the caller's `;`: the declaration ends
 * inside, and a static_assert takes the caller's `;`. */
#define SM_PLUGIN_DECLARE(...) \
    SM_DECLARE_BEGIN_ \
    extern "C" SM_EXPORT const sm_plugin_descriptor safemessenger_plugin = \
        { .abi_version = SM_PLUGIN_ABI_VERSION, __VA_ARGS__ }; \
    SM_DECLARE_END_ \
    static_assert(sizeof(sm_plugin_descriptor) > 0, "")
#else
#define SM_PLUGIN_DECLARE(...) \
    SM_EXPORT const sm_plugin_descriptor safemessenger_plugin = \
        { .abi_version = SM_PLUGIN_ABI_VERSION, __VA_ARGS__ }
#endif

#ifdef __cplusplus
}
#endif

#endif
