/* Claims a plugin ABI newer than any server has: must be refused. */
#include "safemessenger/plugin.h"

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    (void)self;
    (void)host;
    (void)data;
    return SM_OK;
}

SM_EXPORT const sm_plugin_descriptor safemessenger_plugin = {
    .abi_version = SM_PLUGIN_ABI_VERSION + 1, .name = "abi_newer", .version = "1", .init = init};
