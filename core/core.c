#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "dispatch.h"
#include "handshake.h"
#include "identity.h"
#include "log.h"
#include "metrics.h"
#include "plugin_loader.h"
#include "server_metrics.h"
#include "session.h"
#include "session_io.h"
#include "topic.h"

struct core g_core;

static double real_wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double real_mono_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double core_wall_now(void) { return g_core.wall_clock(); }

char *core_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

double core_mono_now(void) { return g_core.mono_clock(); }

int core_random(uint8_t *buf, size_t len) { return g_core.random(buf, len); }

static sm_timer *real_timer_start(double after, sm_timer_fn fn, void *arg)
{
    sm_timer *t = timers_start(g_core.timers, core_mono_now(), after, 0, fn, arg, NULL);
    if (t && g_core.timers_changed)
        g_core.timers_changed();
    return t;
}

sm_timer *core_timer_start(double after, sm_timer_fn fn, void *arg)
{
    return g_core.timer_start(after, fn, arg);
}

static void core_cleanup(void);

static int core_init(void)
{
    memset(&g_core, 0, sizeof g_core);
    g_core.logic_thread = pthread_self();
    g_core.logic_thread_set = 1;
    g_core.wall_clock = real_wall_clock;
    g_core.mono_clock = real_mono_clock;
    g_core.random = crypto_random;
    g_core.timer_start = real_timer_start;
    g_core.next_session_id = 1;
    g_core.sessions = hashmap_new();
    g_core.users = hashmap_new();
    g_core.topics = hashmap_new();
    g_core.actions = hashmap_new();
    g_core.admin = hashmap_new();
    g_core.timers = timers_new();
    g_core.metrics = metrics_new();
    if (!g_core.sessions || !g_core.users || !g_core.topics || !g_core.actions || !g_core.admin ||
        !g_core.timers || admin_register_core() != SM_OK || !g_core.metrics ||
        server_metrics_init(g_core.metrics) != 0) {
        core_cleanup();
        return -1;
    }
    return 0;
}

static void core_cleanup(void)
{
    session_destroy_all();
    topic_destroy_all();
    dispatch_clear();
    admin_clear();
    hashmap_free(g_core.admin, NULL);
    g_core.admin = NULL;
    hashmap_free(g_core.sessions, NULL);
    hashmap_free(g_core.users, NULL);
    hashmap_free(g_core.topics, NULL);
    hashmap_free(g_core.actions, NULL);
    timers_free(g_core.timers);
    server_metrics_reset();
    metrics_free(g_core.metrics);
    g_core.metrics = NULL;
    for (int e = 0; e < SM_EVENT_COUNT; e++)
        free(g_core.subscribers[e]);
    free(g_core.policies);
    g_core.policies = NULL;
    g_core.n_policies = 0;
    g_core.users_plugin = NULL;
    g_core.users_provider = NULL;
    free(g_core.user_name);
    free(g_core.user_key);
    g_core.user_name = g_core.user_key = NULL;
    g_core.sessions = g_core.users = g_core.topics = g_core.actions = NULL;
    g_core.timers = NULL;
    memset(g_core.subscribers, 0, sizeof g_core.subscribers);
    memset(g_core.n_subscribers, 0, sizeof g_core.n_subscribers);
}

static int refuse(const char *config_file)
{
    LOG_ERROR("%s: configuration refused", config_file ? config_file : "(defaults)");
    return -1;
}

/* The configuration and the plugins' init; for --check-config, that is
 * all. Unknown keys are looked for only once every plugin's init ran to
 * the end: a plugin that failed half-way read only some of its own. */
static int load_plugins(const char *config_file)
{
    const server_config *sc = g_core.sc;
    if (plugin_load_all(sc->plugin_dir, sc->plugins, sc->n_plugins) != 0 ||
        config_check_unused(g_core.cfg, sc->plugins, sc->n_plugins) != 0)
        return refuse(config_file);
    return 0;
}

int core_start(const core_options *o)
{
    if (core_init() != 0) {
        LOG_ERROR("out of memory");
        return -1;
    }
    g_core.started = 1;
    dispatch_set_resume(session_io_command_done);
    g_core.transport = o->transport;
    if (config_load(o->config_file, &g_core.cfg) != 0) {
        refuse(o->config_file);
        goto fail;
    }
    g_core.sc = config_server(g_core.cfg);
    log_set_level(o->quiet && g_core.sc->log_level > SM_LOG_WARNING ? SM_LOG_WARNING
                                                                    : g_core.sc->log_level);
    log_set_format(g_core.sc->log_format);
    g_core.port_override = o->port;
    g_core.database_override = o->database;
    if (o->port >= 0)
        g_core.sc->port = o->port;
    if (o->database)
        g_core.sc->database = o->database;
    int checked = !o->check || o->check(g_core.sc, o->config_file) == 0;
    if (o->check_only) {
        /* Plugins are initialised too, so that their sections are checked;
         * nothing is opened or listened on. */
        if (o->load_plugins && load_plugins(o->config_file) != 0)
            goto fail;
        if (!checked) {
            refuse(o->config_file);
            goto fail;
        }
        return 0;
    }
    if (!checked)
        goto fail;
    const char *postgresql = o->postgresql;
    if (!postgresql && strcmp(g_core.sc->backend, "postgresql") == 0) {
        if (o->database) {
            LOG_ERROR("--db names an SQLite database, but storage.backend is \"postgresql\"");
            goto fail;
        }
        postgresql = g_core.sc->postgresql;
    }
    if (postgresql) {
        /* The string may hold a password: storage_open_pg logs what it
         * may (host, port, database). */
        g_core.pg_conninfo = postgresql;
        double wait = o->postgresql_wait > 0 ? o->postgresql_wait
                                             : g_core.sc->postgresql_timeout;
        if (storage_open_pg(postgresql, wait, &g_core.db) != SM_OK) {
            LOG_ERROR("cannot open the PostgreSQL database");
            goto fail;
        }
    } else if (storage_open(g_core.sc->database, g_core.sc->synchronous, &g_core.db) != 0) {
        LOG_ERROR("cannot open the database %s", g_core.sc->database);
        goto fail;
    }
    if (o->open_identity && identity_open(g_core.sc->key_file, g_core.sc->key_bits, g_core.db,
                                          g_core.sc->cluster_node && *g_core.sc->cluster_node) != 0)
        goto fail;
    size_t n_workers = o->workers ? o->workers : (size_t)g_core.sc->workers;
    /* Started from the loop thread: workers run worker_nice levels below it,
     * so password hashing and RSA yield the CPU to the loop. */
    if (workers_start_nice(n_workers, g_core.sc->worker_nice, o->wake, NULL, &g_core.pool) !=
        0) {
        LOG_ERROR("cannot start the worker pool");
        goto fail;
    }
    /* The database opened before the pool existed: its WAL checkpoints
     * move to the pool now. */
    if (storage_start_checkpoints(g_core.db, g_core.pool) != 0)
        goto fail;
    if (o->load_plugins && (load_plugins(o->config_file) != 0 || plugin_start_all() != 0))
        goto fail;
    return 0;
fail:
    core_stop();
    return -1;
}

void core_stop(void)
{
    if (!g_core.started)
        return;
    /* Sessions the transport left (the test host's, the unit tests') close
     * while the plugins can still see the events. */
    session_destroy_all();
    admin_abort();
    /* Before the pool goes; what the plugins commit from here on is
     * checkpointed by SQLite in the commit, as before the pool started. */
    storage_stop_checkpoints(g_core.db);
    if (g_core.pool) {
        workers_stop(g_core.pool);
        g_core.pool = NULL;
        if (g_core.server_key)
            handshake_log_stats();
    }
    plugin_unload_all();
    if (g_core.db) {
        storage_close(g_core.db);
        g_core.db = NULL;
    }
    core_cleanup();
    g_core.pg_conninfo = NULL;
    crypto_pkey_free(g_core.server_key);
    g_core.server_key = NULL;
    crypto_thread_release();
    free(g_core.server_public_pem);
    g_core.server_public_pem = NULL;
    config_free(g_core.cfg);
    g_core.cfg = NULL;
    for (size_t i = 0; i < g_core.n_retired; i++)
        config_free(g_core.retired[i]);
    free(g_core.retired);
    g_core.retired = NULL;
    g_core.n_retired = 0;
    g_core.transport_reload = NULL;
    g_core.sc = NULL;
    g_core.transport = NULL;
    dispatch_set_resume(NULL);
    g_core.started = 0;
}
