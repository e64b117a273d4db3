/* The complete plugin of docs/PLUGINS.md section 12, quoted there verbatim:
 * one action with a payload schema and one configuration key. The test build
 * compiles every C file of tests/plugins as a plugin, so the guide's code
 * keeps compiling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safemessenger/plugin.h"

typedef struct greeter {
    const sm_host *host;
    const char *greeting; /* points into the configuration: valid until fini */
} greeter;

static void greet(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    greeter *g = plugin_data;
    /* The schema has checked it: a string of 1 to 32 name characters. */
    const char *name = json_string_value(json_object_get(payload, "name"));
    char text[128];
    int n = snprintf(text, sizeof text, "%s, %s!", g->greeting, name);
    json_t *reply = n >= 0 && (size_t)n < sizeof text ? json_pack("{s:s}", "text", text) : NULL;
    if (!reply) {
        g->host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    g->host->reply(ctx, "greet", reply);
    json_decref(reply);
}

static const sm_field greet_schema[] = {
    {"name", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"greet", greet, 0, greet_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *host, void **plugin_data)
{
    greeter *g = calloc(1, sizeof *g);
    if (!g)
        return SM_ENOMEM;
    g->host = host;
    g->greeting = "Hello"; /* the default stays when the key is absent */
    int rc = host->config_string(self, "greeting", &g->greeting);
    if (rc == SM_OK && (g->greeting[0] == '\0' || strlen(g->greeting) > 64)) {
        host->log(self, SM_LOG_ERROR, "guide_example.greeting must be 1 to 64 bytes");
        rc = SM_EINVAL;
    }
    if (rc == SM_OK)
        rc = host->register_actions(self, actions);
    if (rc != SM_OK) {
        free(g);
        return rc;
    }
    *plugin_data = g;
    return SM_OK;
}

static void fini(void *plugin_data) { free(plugin_data); }

SM_PLUGIN_DECLARE(.name = "guide_example", .version = "1.0",
                  .description = "docs/PLUGINS.md example: greets by name",
                  .init = init, .fini = fini);
