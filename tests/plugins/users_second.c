/* A second users provider, for tests/testhost/test_users.c: its init
 * fails with whatever register_users_provider answers (SM_EEXIST when a
 * provider is loaded already), and succeeds when it is the only one. */
#include "safemessenger/plugin.h"

static int none(void *data, const char *name, sm_user_info *out)
{
    (void)data;
    (void)name;
    (void)out;
    return SM_ENOTFOUND;
}

static int none_id(void *data, int64_t id, sm_user_info *out)
{
    (void)data;
    (void)id;
    (void)out;
    return SM_ENOTFOUND;
}

static const sm_users_provider provider = {
    .size = sizeof(sm_users_provider),
    .by_name = none,
    .by_id = none_id,
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    *plugin_data = NULL;
    int rc = h->register_users_provider(self, &provider);
    if (rc != SM_OK)
        h->log(self, SM_LOG_ERROR, "register_users_provider: status %d", rc);
    return rc;
}

SM_PLUGIN_DECLARE(.name = "users_second", .version = "1.0",
                  .description = "tests: a provider that finds nobody", .init = init);
