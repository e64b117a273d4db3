/* A plugin as built against an older SDK whose host table ended at `log`
 * (tests/sdk/v1_0/safemessenger/plugin.h, the only SDK header on this
 * file's include path). Today's server hands it a longer table; the plugin
 * uses the prefix it knows, and its action table and schema must still be
 * read the same way. tests/testhost/test_abi.c loads it as "old_shape".
 *
 * Action `old_hello` (needs login, payload {"times": 1..3}) replies
 *   {"text": "<salutation>, <user>" + "!" x times,
 *    "built_host_size": sizeof(sm_host) in the old header,
 *    "host_size": the size of the table the server passed}. */
#include <stdio.h>
#include <string.h>

#include "safemessenger/plugin.h"

static const sm_host *host;
static sm_plugin *self_plugin;
static const char *salutation;

static void old_hello(sm_ctx *ctx, const json_t *payload, void *plugin_data)
{
    (void)plugin_data;
    const char *user = host->session_username(host->ctx_session(ctx));
    json_int_t times = json_integer_value(json_object_get(payload, "times"));
    char text[128];
    int n = snprintf(text, sizeof text, "%s, %s%.*s", salutation, user ? user : "?", (int)times,
                     "!!!");
    json_t *reply = n >= 0 && (size_t)n < sizeof text
                        ? json_pack("{s:s, s:I, s:I}", "text", text, "built_host_size",
                                    (json_int_t)sizeof(sm_host), "host_size",
                                    (json_int_t)host->size)
                        : NULL;
    if (!reply) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->log(self_plugin, SM_LOG_INFO, "greeted %s", user);
    host->reply(ctx, "old_hello", reply);
    json_decref(reply);
}

static const sm_field old_hello_schema[] = {
    {"times", SM_FIELD_INTEGER, SM_FIELD_REQUIRED, 1, 3},
    {NULL, SM_FIELD_END, 0, 0, 0},
};

static const sm_action actions[] = {
    {"old_hello", old_hello, SM_ACTION_NEEDS_LOGIN, old_hello_schema},
    {NULL, NULL, 0, NULL},
};

static int init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    self_plugin = self;
    salutation = "Hi";
    *plugin_data = NULL;
    int rc = h->config_string(self, "salutation", &salutation);
    if (rc == SM_OK && (salutation[0] == '\0' || strlen(salutation) > 32))
        rc = SM_EINVAL;
    if (rc != SM_OK)
        return rc;
    return h->register_actions(self, actions);
}

SM_PLUGIN_DECLARE(.name = "old_shape", .version = "1.0",
                  .description = "tests: built against a shorter host table", .init = init);
