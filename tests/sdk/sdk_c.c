/* The SDK headers as strict C11 (gcc -std=c11 -Wall -Wextra -pedantic
 * -Werror): plugin.h first, to show it stands alone, then testhost.h, with
 * nothing of the project but include/ on the include path; and a plugin
 * declared with SM_PLUGIN_DECLARE. tests/testhost/test_abi.c loads it. */
#include "safemessenger/plugin.h"
#include "safemessenger/testhost.h"

static const sm_host *host;

static void sdk_c_hello(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)plugin_data;
    json_t *reply = json_pack("{s:s, s:s, s:b}", "language", "C", "name",
                              json_string_value(json_object_get(payload, "name")), "storage",
                              SM_HOST_HAS(host, db_changes));
    if (!reply) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "sdk_c_hello", reply);
    json_decref(reply);
}

static const sm_field sdk_c_schema[] = {
    {"name", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action sdk_c_actions[] = {
    {"sdk_c_hello", sdk_c_hello, SM_ACTION_NEEDS_LOGIN, sdk_c_schema},
    {NULL, NULL, 0, NULL},
};

static int sdk_c_init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    *plugin_data = NULL;
    return h->register_actions(self, sdk_c_actions);
}

SM_PLUGIN_DECLARE(.name = "sdk_c", .version = "1.0",
                  .description = "tests: the SDK headers as strict C11", .init = sdk_c_init);
