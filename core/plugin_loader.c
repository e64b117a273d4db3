#include "plugin_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "cluster.h"
#include "core.h"
#include "dispatch.h"
#include "host_api.h"
#include "log.h"
#include "server_metrics.h"

/* As in config.c: a plugin named after a core section could not have its own. */
static const char *const core_sections[] = {"server", "storage", "plugins", "limits", "log",
                                            "web"};

static void plugin_free(plugin *p)
{
    if (!p)
        return;
#ifndef SM_SANITIZE
    /* Under the sanitizers the library stays mapped so leak reports can
     * still name the plugin's functions. */
    if (p->dl)
        dlclose(p->dl);
#endif
    free(p->name);
    free(p->path);
    free(p);
}

static int check_descriptor(const plugin *p)
{
    const sm_plugin_descriptor *d = p->desc;
    if (d->abi_version > SM_PLUGIN_ABI_VERSION) {
        LOG_ERROR("plugin %s: %s was built for plugin ABI %u, newer than this server's ABI %u "
                  "(it supports %u to %u); upgrade the server or rebuild the plugin",
                  p->name, p->path, d->abi_version, SM_PLUGIN_ABI_VERSION, SM_PLUGIN_ABI_MIN,
                  SM_PLUGIN_ABI_VERSION);
        return -1;
    }
    if (d->abi_version < SM_PLUGIN_ABI_MIN) {
        LOG_ERROR("plugin %s: %s was built for plugin ABI %u, older than this server supports "
                  "(%u to %u); rebuild the plugin against the current SDK",
                  p->name, p->path, d->abi_version, SM_PLUGIN_ABI_MIN, SM_PLUGIN_ABI_VERSION);
        return -1;
    }
    if (!d->name || strcmp(d->name, p->name) != 0) {
        LOG_ERROR("plugin %s: %s declares the name '%s'; the file name and the descriptor's "
                  "name must match",
                  p->name, p->path, d->name ? d->name : "(null)");
        return -1;
    }
    if (!d->init) {
        LOG_ERROR("plugin %s: %s has no init function", p->name, p->path);
        return -1;
    }
    return 0;
}

static int append(plugin *p)
{
    plugin **list = realloc(g_core.plugins, (g_core.n_plugins + 1) * sizeof *list);
    if (!list)
        return -1;
    g_core.plugins = list;
    g_core.plugins[g_core.n_plugins++] = p;
    return 0;
}

static void remove_subscriptions(plugin *p)
{
    size_t kept = 0;
    for (size_t i = 0; i < g_core.n_policies; i++)
        if (g_core.policies[i].plugin != p)
            g_core.policies[kept++] = g_core.policies[i];
    g_core.n_policies = kept;
    if (g_core.users_plugin == p) {
        g_core.users_plugin = NULL;
        g_core.users_provider = NULL;
    }
    for (int e = 0; e < SM_EVENT_COUNT; e++) {
        size_t k = 0;
        for (size_t i = 0; i < g_core.n_subscribers[e]; i++)
            if (g_core.subscribers[e][i].plugin != p)
                g_core.subscribers[e][k++] = g_core.subscribers[e][i];
        g_core.n_subscribers[e] = k;
    }
}

int plugin_load(const char *path, const char *name)
{
    for (size_t i = 0; i < sizeof core_sections / sizeof *core_sections; i++) {
        if (strcmp(name, core_sections[i]) == 0) {
            LOG_ERROR("plugin %s: the name is reserved for the core's configuration", name);
            return -1;
        }
    }
    for (size_t i = 0; i < g_core.n_plugins; i++) {
        if (strcmp(g_core.plugins[i]->name, name) == 0) {
            LOG_ERROR("plugin %s: listed twice", name);
            return -1;
        }
    }
    plugin *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->name = core_strdup(name);
    p->path = core_strdup(path);
    if (!p->name || !p->path)
        goto fail;
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        LOG_ERROR("plugin %s: cannot load %s: %s", name, path, dlerror());
        goto fail;
    }
    p->desc = dlsym(p->dl, SM_PLUGIN_DESCRIPTOR_SYMBOL);
    if (!p->desc) {
        LOG_ERROR("plugin %s: %s does not export the symbol '%s' (declare it with "
                  "SM_PLUGIN_DECLARE)",
                  name, path, SM_PLUGIN_DESCRIPTOR_SYMBOL);
        goto fail;
    }
    if (check_descriptor(p) != 0 || append(p) != 0)
        goto fail;
    g_core.initialising = p;
    g_core.init_errors = 0;
    int rc = p->desc->init(p, host_api_table(), &p->data);
    g_core.initialising = NULL;
    if (rc != SM_OK || g_core.init_errors) {
        /* A refused registration fails start-up even if init ignored it. */
        LOG_ERROR("plugin %s: init failed (status %d%s); see the messages above", name, rc,
                  g_core.init_errors ? ", a registration was refused" : "");
        if (rc == SM_OK && p->desc->fini)
            p->desc->fini(p->data);
        dispatch_remove_owner(p);
        remove_subscriptions(p);
        if (g_core.timers)
            timers_stop_owner(g_core.timers, p);
        g_core.n_plugins--;
        goto fail;
    }
    p->initialised = 1;
    LOG_INFO("plugin %s %s loaded from %s", name, p->desc->version ? p->desc->version : "",
             path);
    server_metrics_plugin(p->name, p->desc->version, 1);
    return 0;
fail:
    plugin_free(p);
    return -1;
}

static int migrate(plugin *p)
{
    if (p->migrations && storage_migrate(g_core.db, p->name, p->migrations) != 0) {
        LOG_ERROR("plugin %s: database migration failed", p->name);
        return -1;
    }
    return 0;
}

static int start(plugin *p)
{
    if (p->desc->start && p->desc->start(p->data) != SM_OK) {
        LOG_ERROR("plugin %s: start failed", p->name);
        return -1;
    }
    return 0;
}

int plugin_start_all(void)
{
    /* Every plugin's tables exist before any plugin starts. */
    for (size_t i = 0; i < g_core.n_plugins; i++)
        if (migrate(g_core.plugins[i]) != 0)
            return -1;
    for (size_t i = 0; i < g_core.n_plugins; i++)
        if (start(g_core.plugins[i]) != 0)
            return -1;
    return 0;
}

int plugin_start_last(void)
{
    if (g_core.n_plugins == 0)
        return -1;
    plugin *p = g_core.plugins[g_core.n_plugins - 1];
    return migrate(p) == 0 && start(p) == 0 ? 0 : -1;
}

/* Every plugin is tried even after one fails, so one run of --check-config
 * reports every plugin's problem, each pointing at its plugins.load entry. */
int plugin_load_all(const char *dir, const char *const *names, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        int len = snprintf(path, sizeof path, "%s/%s.so", dir, names[i]);
        if (len >= 0 && (size_t)len < sizeof path && plugin_load(path, names[i]) == 0)
            continue;
        if (len < 0 || (size_t)len >= sizeof path)
            LOG_ERROR("plugin %s: path too long", names[i]);
        const char *file = NULL;
        int line = g_core.cfg ? config_plugin_line(g_core.cfg, i, &file) : 0;
        log_msg(SM_LOG_ERROR, "config", "%s:%d: plugins.load[%zu] \"%s\" (%s): not loaded, "
                "see the messages above", file ? file : "(defaults)", line, i, names[i], path);
        rc = -1;
    }
    if (rc != 0)
        plugin_unload_all();
    return rc;
}

plugin *plugin_find(const char *name)
{
    for (size_t i = 0; name && i < g_core.n_plugins; i++)
        if (strcmp(g_core.plugins[i]->name, name) == 0)
            return g_core.plugins[i];
    return NULL;
}

int plugin_loaded(const plugin *p)
{
    for (size_t i = 0; p && i < g_core.n_plugins; i++)
        if (g_core.plugins[i] == p)
            return 1;
    return 0;
}

void plugin_unload(plugin *p)
{
    size_t at = 0;
    while (at < g_core.n_plugins && g_core.plugins[at] != p)
        at++;
    if (at == g_core.n_plugins)
        return;
    /* No new event or policy question reaches it; its worker jobs finish
     * (their done callbacks may still answer deferred commands) before
     * fini frees what they use. */
    remove_subscriptions(p);
    if (p->broadcast)
        cluster_broadcast_off(p->name);
    if (g_core.pool)
        workers_drain_owner(g_core.pool, p);
    if (p->initialised && p->desc->fini)
        p->desc->fini(p->data);
    if (g_core.timers)
        timers_stop_owner(g_core.timers, p);
    dispatch_abandon_owner(p);
    dispatch_remove_owner(p);
    admin_remove_owner(p);
    memmove(&g_core.plugins[at], &g_core.plugins[at + 1],
            (g_core.n_plugins - at - 1) * sizeof *g_core.plugins);
    g_core.n_plugins--;
    LOG_INFO("plugin %s unloaded", p->name);
    server_metrics_plugin(p->name, p->desc->version, 0);
    plugin_free(p);
}

void plugin_unload_all(void)
{
    /* Actions first, so nothing can reach a plugin that is going away. */
    dispatch_clear();
    while (g_core.n_plugins > 0) {
        plugin *p = g_core.plugins[--g_core.n_plugins];
        remove_subscriptions(p);
        if (p->initialised && p->desc->fini)
            p->desc->fini(p->data);
        /* After fini, which may stop its own timers: the rest go now. */
        if (g_core.timers)
            timers_stop_owner(g_core.timers, p);
        server_metrics_plugin(p->name, p->desc->version, 0);
        plugin_free(p);
    }
    free(g_core.plugins);
    g_core.plugins = NULL;
}
