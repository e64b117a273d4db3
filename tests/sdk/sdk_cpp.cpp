// The SDK headers as C++20 (g++ -std=c++20 -Wall -Wextra -pedantic
// -Werror): testhost.h first, to show it stands alone, with nothing of the
// project but include/ on the include path; and a plugin declared with
// SM_PLUGIN_DECLARE, whose C++ form uses C++20 designated initialisers.
// tests/testhost/test_abi.c loads it like any C plugin.
#include "safemessenger/testhost.h"
#include "safemessenger/plugin.h"

namespace {

const sm_host *host;

void sdk_cpp_hello(sm_ctx *ctx, const json_t *payload, void *)
{
    json_t *reply = json_pack("{s:s, s:s, s:b}", "language", "C++", "name",
                              json_string_value(json_object_get(payload, "name")), "storage",
                              SM_HOST_HAS(host, db_changes) ? 1 : 0);
    if (!reply) {
        host->reply_error(ctx, SM_ERR_INTERNAL, "internal server error");
        return;
    }
    host->reply(ctx, "sdk_cpp_hello", reply);
    json_decref(reply);
}

const sm_field sdk_cpp_schema[] = {
    {"name", SM_FIELD_STRING, SM_FIELD_REQUIRED | SM_FIELD_NAME, 1, 32},
    {nullptr, SM_FIELD_END, 0, 0, 0},
};

const sm_action sdk_cpp_actions[] = {
    {"sdk_cpp_hello", sdk_cpp_hello, SM_ACTION_NEEDS_LOGIN, sdk_cpp_schema},
    {nullptr, nullptr, 0, nullptr},
};

int sdk_cpp_init(sm_plugin *self, const sm_host *h, void **plugin_data)
{
    host = h;
    *plugin_data = nullptr;
    return h->register_actions(self, sdk_cpp_actions);
}

} // namespace

SM_PLUGIN_DECLARE(.name = "sdk_cpp", .version = "1.0",
                  .description = "tests: the SDK headers as C++20", .init = sdk_cpp_init);
