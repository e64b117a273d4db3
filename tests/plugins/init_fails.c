/* init returns an error: start-up must fail naming the plugin. */
#include "safemessenger/plugin.h"

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    (void)data;
    host->log(self, SM_LOG_ERROR, "init_fails: refusing to start on purpose");
    return SM_ERROR;
}

SM_PLUGIN_DECLARE(.name = "init_fails", .version = "1", .init = init);
