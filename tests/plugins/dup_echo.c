/* Registers "echo", which testcmds registers too: a duplicate action. */
#include "safemessenger/plugin.h"

static void echo(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)ctx;
    (void)payload;
    (void)data;
}

static const sm_action actions[] = {{"echo", echo, 0, NULL}, {NULL, NULL, 0, NULL}};

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    (void)data;
    return host->register_actions(self, actions);
}

SM_PLUGIN_DECLARE(.name = "dup_echo", .version = "1", .init = init);
