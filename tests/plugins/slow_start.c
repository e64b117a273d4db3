/* init takes slow_start.ms (default 3000) to return, after logging that it
 * began: a test's window to signal a server that is still starting. */
#include <errno.h>
#include <time.h>

#include "safemessenger/plugin.h"

static int init(sm_plugin *self, const sm_host *host, void **data)
{
    *data = NULL;
    int64_t ms = 3000;
    if (host->config_int(self, "ms", 0, 60000, &ms) == SM_EINVAL)
        return SM_ERROR;
    host->log(self, SM_LOG_INFO, "slow_start: waiting %lld ms", (long long)ms);
    struct timespec left = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    return SM_OK;
}

SM_PLUGIN_DECLARE(.name = "slow_start", .version = "1", .init = init);
