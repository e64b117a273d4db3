/* The server's process-wide state. The core runs one event loop thread, and
 * every field here is touched only from it (the worker pool talks back
 * through workers_run_completions). The host table's services take no
 * context argument, so they reach this state through g_core. */

/* Status convention of the core. A function that can fail returns int:
 * 0 (SM_OK) on success, negative on failure, drawn from sm_status
 * (safemessenger/plugin.h): -1 is SM_ERROR, "failed" with the reason
 * logged where it happened; a caller that must tell failures apart gets
 * the specific SM_E* (SM_ENOMEM, SM_EINVAL, SM_EBUSY for a limit reached,
 * ...), so the host table passes the core's statuses to plugins unchanged.
 * Positive values are never failures: predicates (is_*, *_admit,
 * *_congested, ...) return 1 or 0, and documented tri-states say so.
 * Results that are protocol codes keep their own enums (envelope_status,
 * reassembly_status). */
#ifndef SM_CORE_CORE_H
#define SM_CORE_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "crypto.h"
#include "hashmap.h"
#include "storage.h"
#include "timers.h"
#include "workers.h"

struct metrics;
struct peers;
struct session;
struct sm_plugin;

/* How a session reaches its socket: the WebSocket transport, or the
 * plugin test host which records instead. Everything else about a
 * session's I/O is session_io.c's; the transport calls back into it. */
typedef struct session_transport {
    /* Sealed frames wait in the session's send queue: take them
     * (session_io_next_frame, session_io_frame_sent) once the socket can be
     * written. */
    void (*write)(struct session *s);
    /* Ends the connection (the session is already closing): how is
     * SESSION_IO_FLUSH (after the queued frames, with the session's
     * close_code and close_reason) or SESSION_IO_DROP (at once, no close
     * frame). */
    void (*close)(struct session *s, int how);
    /* Stops (pause = 1) or resumes reading the session's input. */
    void (*pause)(struct session *s, int pause);
    /* Calls handshake_timed_out(s) `seconds` from now, on the session's
     * thread; seconds <= 0 cancels. 0 or -1. NULL: the handshake uses a
     * core timer (no I/O threads, so the logic thread's timers are the
     * session's). */
    int (*handshake_deadline)(struct session *s, double seconds);
} session_transport;

struct session_bridge;

/* One subscription: exactly one of fn (subscribe) and fn_ex (subscribe_ex)
 * is set. */
typedef struct core_subscriber {
    struct sm_plugin *plugin;
    sm_event_fn fn;
    sm_event_ex_fn fn_ex;
} core_subscriber;

struct core {
    config *cfg;
    /* Atomic: I/O threads read the limits while a reload (logic thread)
     * puts the next configuration in place. A replaced one stays allocated
     * until core_stop (retired), so a pointer read once stays valid. */
    server_config *_Atomic sc;
    storage *db;
    workers *pool;
    timers *timers;
    const session_transport *transport;
    /* How a session's I/O side and logic side reach each other: NULL when
     * they run on one thread (direct calls, session_io.c), the I/O
     * threads' queues otherwise (io_threads.c). */
    const struct session_bridge *bridge;

    /* The logic side's sessions: with I/O threads, those whose handshake
     * completed (each I/O thread has its own map of the rest). */
    hashmap *sessions;  /* sm_session_id -> struct session * */
    hashmap *users;     /* lower-case username -> struct user_sessions * */
    hashmap *topics;    /* topic name -> struct topic * */
    hashmap *actions;   /* action name -> struct dispatch_entry * */
    hashmap *admin;     /* admin command name -> admin entry (admin.c) */
    struct metrics *metrics; /* /metrics: the core's families and the plugins' */

    struct sm_plugin **plugins; /* load order */
    size_t n_plugins;
    struct sm_plugin *initialising; /* set while a plugin's init runs */
    int init_errors;                /* registrations refused during that init */

    core_subscriber *subscribers[SM_EVENT_COUNT];
    size_t n_subscribers[SM_EVENT_COUNT];

    struct core_policy {
        struct sm_plugin *plugin;
        sm_policy_fn fn;
    } *policies; /* load order */
    size_t n_policies;

    /* The users provider (sm_host.register_users_provider) and what the
     * last lookup returned: user_lookup's strings point here. */
    struct sm_plugin *users_plugin;
    const sm_users_provider *users_provider;
    char *user_name, *user_key;

    EVP_PKEY *server_key;
    char *server_public_pem;
    char fingerprint[CRYPTO_FINGERPRINT_LEN];

    atomic_uint_least64_t next_session_id;
    atomic_size_t n_sessions;  /* every session, on whichever thread */
    struct peers *peers; /* per-address limits; the transport's, NULL under the test host */
    /* 1: closing the sessions, 2: the transport is gone. */
    atomic_int shutting_down;
    int started;               /* between core_start and core_stop */
    /* The logic thread: the one that called core_start. Dispatch, the
     * plugins, timers and worker completions run on it; host services
     * called from any other thread are refused (host_api.c, PLUGINS.md
     * 11). Set before the worker pool starts, never written again while
     * it runs, so other threads may read it. */
    pthread_t logic_thread;
    int logic_thread_set;

    /* Clocks: wall time for timestamps, monotonic for timers. The test host
     * replaces both with its fake clock. */
    double (*wall_clock)(void);
    double (*mono_clock)(void);
    /* Called after a timer is started so the loop can wake in time. */
    void (*timers_changed)(void);
    /* Randomness and the core's own one-shot timers (core_random,
     * core_timer_start). The unit tests replace them to reach the paths
     * taken when the system has no entropy or no memory. */
    int (*random)(uint8_t *buf, size_t len);
    sm_timer *(*timer_start)(double after, sm_timer_fn fn, void *arg);

    /* Configuration reload (reload.c). The command-line overrides apply
     * to every reloaded file too. Configurations replaced by a reload stay
     * allocated until core_stop: plugins and sessions may still hold
     * strings from them. */
    int port_override;               /* -1: none */
    const char *database_override;   /* NULL: none */
    const char *pg_conninfo;         /* the PostgreSQL storage's, or NULL on SQLite */
    config **retired;
    size_t n_retired;
    /* The transport's part of a reload (TLS certificate, per-address
     * limits), set by the transport: with check = 1 whether `next` can be
     * put in force (0, or -1 after logging why), with check = 0 do it. */
    int (*transport_reload)(const server_config *next, int check);
};

extern struct core g_core;

double core_wall_now(void);
double core_mono_now(void);
/* A malloc'd copy of s (NULL for NULL, or when out of memory). */
char *core_strdup(const char *s);
/* Fills buf with random bytes: 0, or -1 when no entropy could be had. */
int core_random(uint8_t *buf, size_t len);
/* Starts a one-shot core timer due `after` seconds from now and tells the
 * loop. NULL when out of memory. */
sm_timer *core_timer_start(double after, sm_timer_fn fn, void *arg);
/* Delivers a core event to every subscriber in load order (host_api.c):
 * old-style callbacks get the room in `username` for ROOM_DELETED. */
void core_fire_event(sm_core_event event, sm_session_id id, const char *username,
                     const char *room);
/* The same for SM_EVENT_TOPIC_JOINED and _LEFT, which carry a topic. */
void core_fire_topic_event(sm_core_event event, sm_session_id id, const char *username,
                           const char *topic);
/* The account's name as the users service spells it (host_api.c), valid
 * until the next users-service lookup; NULL without a provider or such
 * an account. */
const char *core_user_name(const char *name);

/* What core_start opens besides the maps, timers, clocks and the
 * configuration. The server, the plugin test host and the unit tests all
 * start and stop the core through these two functions, so the order of
 * the shutdown is written once. */
typedef struct core_options {
    const char *config_file;   /* NULL: the built-in defaults */
    const char *database;      /* overrides storage.database when not NULL */
    /* Not NULL: a libpq connection string; the storage service runs on
     * that PostgreSQL database (storage_open_pg) instead of the SQLite
     * file, which is then not opened. The test host's
     * SM_TESTHOST_POSTGRES_URL_FILE; the configuration's storage.backend
     * does not select it yet (issue 14). */
    const char *postgresql;
    /* Seconds one round trip to that database may take (storage_open_pg);
     * 0: STORAGE_PG_WAIT_S. */
    double postgresql_wait;
    int port;                  /* overrides server.port when >= 0 */
    /* What would be refused later (the server's listener and TLS files),
     * checked before anything is opened; non-zero refuses the start. */
    int (*check)(const server_config *sc, const char *config_file);
    /* --check-config: the configuration and every plugin's init, nothing
     * opened (no database, key or workers). */
    int check_only;
    int open_identity;         /* the server key (tests have none) */
    int load_plugins;          /* plugins.load (the test host loads one by one) */
    size_t workers;            /* worker threads; 0: server.workers */
    void (*wake)(void *arg);   /* worker completion wake-up (NULL: polled) */
    /* Caps log.level at warning: the admin tool's stderr is for problems,
     * not the server's start-up story. */
    int quiet;
    const session_transport *transport;
} core_options;

/* Loads the configuration (with o's overrides), opens the database and
 * the server key, starts the worker pool, loads and starts the plugins,
 * each as o asks. Returns 0, or -1 after logging why and undoing what it
 * did. */
int core_start(const core_options *o);
/* Closes what is left of the sessions while the plugins still see their
 * events, stops the workers, unloads the plugins, closes the database and
 * frees the rest. The transport is stopped first (transport_stop). Safe
 * to call when core_start failed or never ran. */
void core_stop(void);

/* Re-reads the configuration file (SIGHUP, on the loop thread) and puts
 * in force what can change while running: docs/OPERATIONS.md "Reload".
 * Returns 0 when the new file was taken (settings that need a restart
 * keep their running values, each named in a warning), -1 when it was
 * refused as a whole (nothing changed; the reason is logged). */
int core_reload(void);
/* The same from another file; manage_plugins = 0 leaves the running
 * plugins as they are, whatever the file's plugins.load says (the test
 * host loads its plugins one by one). */
int core_reload_from(const char *path, int manage_plugins);

#endif
