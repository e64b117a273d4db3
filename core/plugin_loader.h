/* Loads plugins: dlopen(RTLD_NOW | RTLD_LOCAL), the descriptor symbol, the
 * ABI check both ways, init with the host table, migrations, start; and at
 * shutdown fini in reverse order. Every refusal is a start-up error that
 * names the plugin file and the reason. */
#ifndef SM_CORE_PLUGIN_LOADER_H
#define SM_CORE_PLUGIN_LOADER_H

#include <stddef.h>
#include "safemessenger/plugin.h"

struct sm_plugin {
    char *name;
    char *path;
    void *dl;
    const sm_plugin_descriptor *desc;
    void *data;
    const sm_migration *migrations;
    sm_reload_fn reload;    /* register_reload; NULL: settings fixed until restart */
    sm_broadcast_fn broadcast; /* register_broadcast; NULL: none */
    int initialised;
};
typedef struct sm_plugin plugin;

/* Loads and initialises each named plugin from dir ("<dir>/<name>.so"),
 * then applies every plugin's migrations and calls start. On failure
 * everything loaded so far is unloaded and -1 returned. */
int plugin_load_all(const char *dir, const char *const *names, size_t n);
/* Loads one plugin file (path) as `name`; used by load_all and the test
 * host. Appends to g_core.plugins. */
int plugin_load(const char *path, const char *name);
/* Runs migrations and start for every loaded plugin. */
int plugin_start_all(void);
/* Runs migrations and start for the plugin loaded last (the test host
 * loads and starts plugins one by one). */
int plugin_start_last(void);
/* Unloads one running plugin (a configuration reload dropped it from
 * plugins.load): its actions, subscriptions and policies go, its worker
 * jobs are drained, its fini runs, its timers stop, commands it still had
 * deferred are answered with an error, and its file is closed. Sessions
 * stay open. */
void plugin_unload(plugin *p);
/* The loaded plugin named name, or NULL. */
plugin *plugin_find(const char *name);
/* 1 when p is a loaded plugin (a callback that outlived an unload checks). */
int plugin_loaded(const plugin *p);
/* fini in reverse load order, timers stopped, handles closed. */
void plugin_unload_all(void);

#endif
