/* Tries to register an action after init (from start): must be refused
 * with SM_ESTATE, which this plugin turns into a start failure. */
#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *me;

static void noop(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    host->reply(ctx, "late", NULL);
}

static const sm_action actions[] = {{"late", noop, 0, NULL}, {NULL, NULL, 0, NULL}};

static int init(sm_plugin *self, const sm_host *h, void **data)
{
    (void)data;
    host = h;
    me = self;
    return SM_OK;
}

static int start(void *data)
{
    (void)data;
    return host->register_actions(me, actions) == SM_ESTATE ? SM_ERROR : SM_OK;
}

SM_PLUGIN_DECLARE(.name = "late_register", .version = "1", .init = init, .start = start);
