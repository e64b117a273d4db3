/* SafeMessenger plugin test host: runs plugins in-process, without sockets,
 * so a plugin's CUnit suite can drive it command by command.
 *
 * The host is the real core (session I/O with its envelope encryption,
 * dispatch, sessions, topics, storage, timers, worker pool) with a
 * recording transport instead of WebSockets, an in-memory SQLite database
 * (or PostgreSQL: SM_TESTHOST_POSTGRES_ENV below) and a fake clock.
 * Everything runs on the calling thread except worker jobs, which run on
 * one internal thread and whose completions run on the calling thread in
 * sm_testhost_run_workers().
 *
 * One host at a time per process (the core's state is process-wide): free
 * one before creating the next. Call every function from one thread; the
 * plugins' callbacks, except worker jobs' `work`, run on it.
 *
 * Messages a session receives are recorded in order as JSON objects
 *   {"type": "response"|"error"|"event", "action": "...",
 *    "reply_to": "<nonce>" (responses and errors), "payload": {...}}
 * and read back with sm_testhost_next() or sm_testhost_reply().
 *
 * Typical use:
 *   sm_testhost *th;
 *   sm_testhost_new("hello = { greeting = \"hi\"; };", &th);
 *   sm_testhost_load(th, "build/plugins/hello.so", "hello");
 *   sm_session_id s = sm_testhost_connect_user(th, "alice", 1);
 *   json_t *r = sm_testhost_call(th, s, "hello", "{}");
 *   ... assert on r ...
 *   json_decref(r);
 *   sm_testhost_free(th);
 */
#ifndef SAFEMESSENGER_TESTHOST_H
#define SAFEMESSENGER_TESTHOST_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "safemessenger/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sm_testhost sm_testhost;

/* The fake clock starts at this UNIX time. */
#define SM_TESTHOST_EPOCH 1700000000.0

/* The environment variable that puts the host's database on PostgreSQL:
 * when it names a file holding a libpq connection string (keywords or a
 * URI; the first line, trailing white space removed), each
 * sm_testhost_new creates a schema of its own, sm_testhost_<pid>_<n>_<hex>,
 * in that database, and the core connects with `-c search_path=<schema>`
 * added to the string's options, so that every table (sm_migrations, the
 * plugins') lands there and no other schema is seen; sm_testhost_free
 * drops the schema with everything in it. The role needs CREATE on the
 * database. The same suite thus runs on both engines: write its SQL
 * (sm_testhost_query_int, sm_testhost_exec) portably, as the plugin's.
 * Unset or empty: SQLite in memory. A file that cannot be read, a string
 * libpq cannot parse or a server that refuses fail sm_testhost_new. */
#define SM_TESTHOST_POSTGRES_ENV "SM_TESTHOST_POSTGRES_URL_FILE"

/* Creates the host. config_text is libconfig text (may be NULL) with the
 * sections plugins read, e.g. "auth = { failed_logins = 3; };", and core
 * sections such as "limits = { ... };". Errors are logged to stderr.
 * Returns SM_OK or an error status. */
int sm_testhost_new(const char *config_text, sm_testhost **out);

/* Loads a plugin .so as `name`: ABI check, init, migrations, start, as the
 * server does. Several plugins may be loaded, in order, before the first
 * session. SM_ERROR if the loader refuses the plugin or its init,
 * migrations or start fail (the reason is logged); sm_testhost_free() is
 * still needed. */
int sm_testhost_load(sm_testhost *th, const char *path, const char *name);

/* Reloads the configuration from config_text as SIGHUP does for the
 * server (docs/OPERATIONS.md "Reload"): core settings, and each loaded
 * plugin's settings through its reload callback; the loaded plugins stay
 * (plugins.load is not looked at). SM_OK when the text was taken,
 * SM_ERROR when it was refused (nothing changed; the reason is logged). */
int sm_testhost_reload(sm_testhost *th, const char *config_text);

/* Unloads the plugins (fini), closes every session and frees the host. */
void sm_testhost_free(sm_testhost *th);

/* A new session past the handshake (SM_EVENT_SESSION_OPENED fires), not
 * logged in. address is the peer address plugins see (NULL =
 * "127.0.0.1"). Returns its id, 0 on failure. */
sm_session_id sm_testhost_connect(sm_testhost *th, const char *address);

/* A new session, logged in as username with user_id through the core's
 * session_login (SM_EVENT_LOGGED_IN fires): for testing actions that need
 * a login without going through an auth plugin. 0 on failure. */
sm_session_id sm_testhost_connect_user(sm_testhost *th, const char *username, int64_t user_id);

/* Closes the session as a dropped connection would (LOGGED_OUT if logged
 * in, then SESSION_CLOSED). Its recorded messages stay readable. */
int sm_testhost_disconnect(sm_testhost *th, sm_session_id session);

/* Sends a command (payload_json: a JSON object as text, NULL = {}) and
 * runs it exactly as the server would: sealed in an envelope with the
 * session's keys, then opened and dispatched by the server's own receive
 * path, rate limits included: limits.commands_per_second, and
 * limits.bytes_per_second counting the whole envelope, both on the fake
 * clock, as is the topics' fan-out budget (sm_host.topic_fanout_take).
 * Returns the command's nonce (1, 2, ... per session), or 0 if the session
 * is unknown or closed or payload_json is not a JSON object. Worker jobs
 * it queues are not run: see sm_testhost_run_workers(). */
uint64_t sm_testhost_send(sm_testhost *th, sm_session_id session, const char *action,
                          const char *payload_json);

/* sm_testhost_send(), then runs worker jobs to completion, then returns
 * the command's reply (removed from the session's record; other messages
 * stay in order). NULL if there is none. Caller owns the result. */
json_t *sm_testhost_call(sm_testhost *th, sm_session_id session, const char *action,
                         const char *payload_json);

/* The reply to the given nonce, removed from the record; NULL if none. */
json_t *sm_testhost_reply(sm_testhost *th, sm_session_id session, uint64_t nonce);

/* The oldest recorded message of the session, removed from the record;
 * NULL when none. Caller owns it. */
json_t *sm_testhost_next(sm_testhost *th, sm_session_id session);

/* The oldest recorded event with this action, removed; NULL when none. */
json_t *sm_testhost_next_event(sm_testhost *th, sm_session_id session, const char *action);

/* How many messages are recorded for the session. */
size_t sm_testhost_pending(sm_testhost *th, sm_session_id session);

/* Drops every recorded message of every session. */
void sm_testhost_clear(sm_testhost *th);

/* Runs queued worker jobs until none is left, and their completions. */
void sm_testhost_run_workers(sm_testhost *th);

/* Moves the fake clock forward, firing due timers in time order (the clock
 * stands at each timer's due time while it runs), then runs workers. */
void sm_testhost_advance(sm_testhost *th, double seconds);

/* The fake clock (UNIX seconds). */
double sm_testhost_now(const sm_testhost *th);

/* 1 if the core closed the session (e.g. a plugin called session_close),
 * with the close code in *close_code (may be NULL); 0 if it is open; -1
 * if unknown. */
int sm_testhost_closed(sm_testhost *th, sm_session_id session, int *close_code);

/* The session's username, NULL when not logged in or closed. Owned by
 * the host: valid until the session's login changes or it closes. */
const char *sm_testhost_username(sm_testhost *th, sm_session_id session);

/* Runs one SQL query returning a single integer (e.g. a count) on the
 * host's database. Returns SM_OK and *out, or an error status. On
 * PostgreSQL a boolean (`x LIKE 'a%'`, `a = b`) reads as 1 or 0, and a
 * number is read from its text as an integer (a fraction is cut off). */
int sm_testhost_query_int(sm_testhost *th, const char *sql, int64_t *out);

/* Runs SQL statements without results (test setup); several, separated
 * by semicolons, on both engines. */
int sm_testhost_exec(sm_testhost *th, const char *sql);

/* Runs an admin command (sm_host.register_admin_commands) as
 * safemessenger-admin would, args may be NULL ({}), and runs the workers
 * until it is answered. Returns the answer, {"ok": true, "result": {...}}
 * or {"ok": false, "status": "not_found", "error": "..."} (free it with
 * json_decref), or NULL if the command never answered. */
json_t *sm_testhost_admin(sm_testhost *th, const char *command, const json_t *args);

#ifdef __cplusplus
}
#endif

#endif
