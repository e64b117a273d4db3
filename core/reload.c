/* The configuration reload (SIGHUP): the whole file is read and checked
 * again; if anything in it is wrong nothing changes. Settings bound to
 * what was opened at start (the listening socket, the database, the key,
 * the worker and I/O threads, the plugin directory, TLS on or off, the web
 * client's directory, the cluster's node id, Redis and prefix) keep their
 * running values, each refused with a warning that names the key; the
 * rest takes effect: limits, log level and format, origins, proxies,
 * metrics.allow, the TLS certificate (re-read from its files), plugin
 * settings through the plugins' reload callbacks, and plugins added to or
 * removed from plugins.load. Sessions stay open throughout. */
#include "core.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "plugin_loader.h"

/* ---- settings that need a restart -------------------------------------- */

/* FIXED_SECRET: a string that may hold a password, named but never shown. */
typedef enum { FIXED_INT, FIXED_DOUBLE, FIXED_STRING, FIXED_SECRET } fixed_kind;

typedef struct fixed_key {
    const char *name;
    fixed_kind kind;
    size_t offset;
} fixed_key;

#define AT(field) offsetof(server_config, field)

/* What was opened or started with these values at start-up. */
static const fixed_key fixed_keys[] = {
    {"server.bind", FIXED_STRING, AT(bind)},
    {"server.port", FIXED_INT, AT(port)},
    {"server.key_file", FIXED_STRING, AT(key_file)},
    {"server.key_bits", FIXED_INT, AT(key_bits)},
    {"server.workers", FIXED_INT, AT(workers)},
    {"server.worker_nice", FIXED_INT, AT(worker_nice)},
    {"server.io_threads", FIXED_INT, AT(io_threads)},
    {"storage.backend", FIXED_STRING, AT(backend)},
    {"storage.postgresql", FIXED_SECRET, AT(postgresql)},
    {"storage.postgresql_timeout", FIXED_DOUBLE, AT(postgresql_timeout)},
    {"storage.database", FIXED_STRING, AT(database)},
    {"storage.synchronous", FIXED_STRING, AT(synchronous)},
    /* The node joined its cluster under this id, on this Redis, with
     * these keys: another would be another node. */
    {"cluster.node", FIXED_STRING, AT(cluster_node)},
    {"cluster.redis", FIXED_SECRET, AT(cluster_redis)},
    {"cluster.prefix", FIXED_STRING, AT(cluster_prefix)},
    {"plugins.dir", FIXED_STRING, AT(plugin_dir)},
    {"web.enabled", FIXED_INT, AT(web_enabled)},
    {"web.root", FIXED_STRING, AT(web_root)},
};

#define FIELD(sc, type, at) ((type *)((char *)(sc) + (at)))

/* Keeps the running value of every key that cannot change live, with one
 * warning per key that the file changed. Strings stay valid: the running
 * configuration is retired, not freed. Returns how many were refused. */
static size_t keep_fixed(const server_config *cur, server_config *next)
{
    size_t refused = 0;
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++) {
        const fixed_key *k = &fixed_keys[i];
        if (k->kind == FIXED_DOUBLE) {
            double was = *FIELD(cur, const double, k->offset);
            double *now = FIELD(next, double, k->offset);
            if (*now == was)
                continue;
            LOG_WARN("%s: cannot change while running (%g -> %g); restart to apply", k->name,
                     was, *now);
            *now = was;
        } else if (k->kind == FIXED_INT) {
            int was = *FIELD(cur, const int, k->offset);
            int *now = FIELD(next, int, k->offset);
            if (*now == was)
                continue;
            LOG_WARN("%s: cannot change while running (%d -> %d); restart to apply", k->name,
                     was, *now);
            *now = was;
        } else {
            const char *was = *FIELD(cur, const char *const, k->offset);
            const char **now = FIELD(next, const char *, k->offset);
            if (strcmp(*now, was) == 0)
                continue;
            if (k->kind == FIXED_SECRET)
                LOG_WARN("%s: cannot change while running; restart to apply", k->name);
            else
                LOG_WARN("%s: cannot change while running (\"%s\" -> \"%s\"); restart to apply",
                         k->name, was, *now);
            *now = was;
        }
        refused++;
    }
    /* web.root is opened once: whether it was written follows the path. */
    next->web_root_set = cur->web_root_set;
    /* The vhost was made with TLS or without, from these paths: a renewed
     * certificate is re-read from them, but switching TLS on or off, or to
     * other files, needs a new listener. */
    if (strcmp(cur->tls_cert, next->tls_cert) != 0 || strcmp(cur->tls_key, next->tls_key) != 0) {
        LOG_WARN("server.tls: cannot change while running (cert \"%s\", key \"%s\" -> cert \"%s\", "
                 "key \"%s\"); restart to apply (a certificate renewed in place is reloaded)",
                 cur->tls_cert, cur->tls_key, next->tls_cert, next->tls_key);
        next->tls_cert = cur->tls_cert;
        next->tls_key = cur->tls_key;
        refused++;
    }
    return refused;
}

/* ---- plugins ----------------------------------------------------------- */

static int in_list(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

static plugin *running(const char *name)
{
    for (size_t i = 0; i < g_core.n_plugins; i++)
        if (strcmp(g_core.plugins[i]->name, name) == 0)
            return g_core.plugins[i];
    return NULL;
}

/* Every staying plugin with a reload callback checks its new settings
 * (g_core.cfg is the new file by then); then the new file's plugin
 * sections are checked for unknown keys, as at start-up, except those of
 * plugins that never read them (no callback, or not loaded yet). */
static int check_plugins(const char *const *names, size_t n_names)
{
    const char *checked[CONFIG_MAX_PLUGINS];
    size_t n_checked = 0;
    int rc = 0;
    for (size_t i = 0; i < g_core.n_plugins; i++) {
        plugin *p = g_core.plugins[i];
        if (!p->reload || !in_list(names, n_names, p->name))
            continue;
        checked[n_checked++] = p->name;
        int status = p->reload(p->data, 0);
        if (status != SM_OK) {
            log_msg(SM_LOG_ERROR, p->name, "new settings refused (status %d); see above", status);
            rc = -1;
        }
    }
    if (config_check_sections(g_core.cfg, names, n_names, checked, n_checked) != 0)
        rc = -1;
    return rc;
}

static void apply_plugin_settings(const char *const *names, size_t n_names)
{
    for (size_t i = 0; i < g_core.n_plugins; i++) {
        plugin *p = g_core.plugins[i];
        if (!in_list(names, n_names, p->name))
            continue;
        if (!p->reload)
            continue;
        int status = p->reload(p->data, 1);
        /* The check passed, so only memory can fail here: the plugin keeps
         * what it had. */
        if (status != SM_OK)
            log_msg(SM_LOG_ERROR, p->name, "could not apply its new settings (status %d)",
                    status);
    }
}

static size_t remove_plugins(const server_config *next)
{
    size_t removed = 0;
    /* Reverse load order, as at shutdown. */
    for (size_t i = g_core.n_plugins; i-- > 0;) {
        plugin *p = g_core.plugins[i];
        if (in_list(next->plugins, next->n_plugins, p->name))
            continue;
        plugin_unload(p);
        removed++;
    }
    return removed;
}

/* A plugin new in plugins.load: loaded, its section checked, migrated and
 * started; on any failure unloaded again, the rest of the reload stands. */
static int add_plugin(const server_config *next, const char *name)
{
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/%s.so", next->plugin_dir, name);
    if (len < 0 || (size_t)len >= sizeof path) {
        LOG_ERROR("plugin %s: path too long; not loaded", name);
        return -1;
    }
    if (plugin_load(path, name) != 0) {
        LOG_ERROR("plugin %s: not loaded, see the messages above", name);
        return -1;
    }
    plugin *p = g_core.plugins[g_core.n_plugins - 1];
    const char *self[1] = {name};
    if (config_check_sections(g_core.cfg, next->plugins, next->n_plugins, self, 1) != 0 ||
        plugin_start_last() != 0) {
        LOG_ERROR("plugin %s: not loaded, see the messages above", name);
        plugin_unload(p);
        return -1;
    }
    return 0;
}

/* ---- the reload -------------------------------------------------------- */

/* Room for one more retired configuration, taken before anything
 * changes so that retiring cannot fail afterwards. */
static int reserve_retired(void)
{
    config **list = realloc(g_core.retired, (g_core.n_retired + 1) * sizeof *list);
    if (!list)
        return -1;
    g_core.retired = list;
    return 0;
}

int core_reload(void)
{
    const char *path = g_core.cfg ? config_file(g_core.cfg) : NULL;
    if (!path) {
        LOG_WARN("configuration reload: the server runs on the built-in defaults, no file to "
                 "read");
        return -1;
    }
    return core_reload_from(path, 1);
}

int core_reload_from(const char *path, int manage_plugins)
{
    if (!g_core.cfg || !path)
        return -1;
    LOG_INFO("reloading the configuration from %s", path);
    config *next_cfg = NULL;
    if (config_load(path, &next_cfg) != 0) {
        LOG_ERROR("%s: configuration reload refused, nothing changed", path);
        return -1;
    }
    server_config *cur = g_core.sc, *next = config_server(next_cfg);
    if (g_core.port_override >= 0)
        next->port = g_core.port_override;
    if (g_core.database_override)
        next->database = g_core.database_override;
    config *cur_cfg = g_core.cfg;
    if (reserve_retired() != 0) {
        LOG_ERROR("%s: configuration reload refused (out of memory), nothing changed", path);
        config_free(next_cfg);
        return -1;
    }
    size_t fixed = keep_fixed(cur, next);
    /* The plugins that run once the reload is done. */
    const char *running_names[CONFIG_MAX_PLUGINS];
    const char *const *names = next->plugins;
    size_t n_names = next->n_plugins;
    if (!manage_plugins) {
        n_names = 0;
        for (size_t i = 0; i < g_core.n_plugins && n_names < CONFIG_MAX_PLUGINS; i++)
            running_names[n_names++] = g_core.plugins[i]->name;
        names = running_names;
    }

    /* Everything is checked before anything changes. */
    g_core.cfg = next_cfg;
    int ok = check_plugins(names, n_names) == 0;
    if (ok && g_core.transport_reload && g_core.transport_reload(next, 1) != 0)
        ok = 0;
    if (!ok) {
        g_core.cfg = cur_cfg;
        config_free(next_cfg);
        LOG_ERROR("%s: configuration reload refused, nothing changed", path);
        return -1;
    }

    g_core.retired[g_core.n_retired++] = cur_cfg;
    g_core.sc = next;
    log_set_level(next->log_level);
    log_set_format(next->log_format);
    if (g_core.transport_reload && g_core.transport_reload(next, 0) != 0)
        LOG_ERROR("the transport could not take the new settings; see above");
    apply_plugin_settings(names, n_names);
    size_t removed = manage_plugins ? remove_plugins(next) : 0, added = 0, failed = 0;
    for (size_t i = 0; manage_plugins && i < next->n_plugins; i++) {
        if (running(next->plugins[i]))
            continue;
        if (add_plugin(next, next->plugins[i]) == 0)
            added++;
        else
            failed++;
    }
    /* The outcome is written whatever the new log.level: the operator
     * asked for the reload and waits for its answer. */
    log_msg_always(SM_LOG_INFO, "core",
                   "configuration reloaded from %s (plugins: %zu added, %zu removed, %zu "
                   "failed to load; %zu setting(s) kept until restart)",
                   path, added, removed, failed, fixed);
    return 0;
}
