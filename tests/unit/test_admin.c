/* core/admin: the registry (all or none, no name twice), one answer per
 * request whatever the handler does, deferred answers, a requester gone
 * before the answer, and the core's own commands. */
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "core.h"
#include "safemessenger/testhost_suite.h"

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1};
    return core_start(&o);
}

static int teardown(void)
{
    core_stop();
    return 0;
}

/* What the last request got. */
static json_t *answer;
static int answers;

static void record(const json_t *reply, void *arg)
{
    (void)arg;
    json_decref(answer);
    answer = json_deep_copy(reply);
    answers++;
}

static sm_admin_ctx *run(const char *request_text)
{
    json_t *request = json_loads(request_text, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(request);
    answers = 0;
    sm_admin_ctx *pending = admin_run(request, record, NULL);
    json_decref(request);
    return pending;
}

static const char *status_of(void)
{
    const char *s = json_string_value(json_object_get(answer, "status"));
    return s ? s : "<none>";
}

static void echo(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)data;
    admin_reply(ctx, args);
    /* A second answer is refused and changes nothing. */
    CU_ASSERT_EQUAL(admin_reply(ctx, NULL), SM_EREPLIED);
}

static void silent(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)ctx;
    (void)args;
    (void)data;
}

static sm_admin_ctx *parked;

static void later(sm_admin_ctx *ctx, const json_t *args, void *data)
{
    (void)args;
    (void)data;
    CU_ASSERT_EQUAL(admin_defer(ctx), SM_OK);
    parked = ctx;
}

static const sm_admin_command table[] = {
    {"test.echo", echo, "answers its args"},
    {"test.silent", silent, "answers nothing"},
    {"test.later", later, "answers after returning"},
    {NULL, NULL, NULL},
};

static void register_is_all_or_none_and_names_are_unique(void)
{
    CU_ASSERT_EQUAL_FATAL(admin_register(NULL, table), SM_OK);
    static const sm_admin_command clash[] = {
        {"test.fresh", echo, ""},
        {"test.echo", echo, ""},
        {NULL, NULL, NULL},
    };
    CU_ASSERT_EQUAL(admin_register(NULL, clash), SM_EEXIST);
    static const sm_admin_command twice[] = {
        {"test.dup", echo, ""},
        {"test.dup", echo, ""},
        {NULL, NULL, NULL},
    };
    CU_ASSERT_EQUAL(admin_register(NULL, twice), SM_EEXIST);
    static const sm_admin_command no_handler[] = {{"test.none", NULL, ""}, {NULL, NULL, NULL}};
    CU_ASSERT_EQUAL(admin_register(NULL, no_handler), SM_EINVAL);
    /* Nothing of the refused tables was registered. */
    CU_ASSERT_PTR_NULL(run("{\"command\":\"test.fresh\"}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "not_found");
    CU_ASSERT_PTR_NULL(run("{\"command\":\"test.dup\"}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "not_found");
}

static void every_request_gets_exactly_one_answer(void)
{
    CU_ASSERT_PTR_NULL(run("{\"command\":\"test.echo\",\"args\":{\"x\":1}}"));
    CU_ASSERT_EQUAL(answers, 1);
    CU_ASSERT_TRUE(json_is_true(json_object_get(answer, "ok")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(answer, "result"), "x")),
                    1);
    CU_ASSERT_PTR_NULL(run("{\"command\":\"test.silent\"}"));
    CU_ASSERT_EQUAL(answers, 1);
    CU_ASSERT_STRING_EQUAL(status_of(), "error");
    CU_ASSERT_PTR_NULL(run("{\"args\":{}}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "invalid");
    CU_ASSERT_PTR_NULL(run("{\"command\":\"test.echo\",\"args\":[]}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "invalid");
    CU_ASSERT_PTR_NULL(run("{\"command\":\"no.such\"}"));
    CU_ASSERT_EQUAL(answers, 1);
    CU_ASSERT_STRING_EQUAL(status_of(), "not_found");
}

static void a_deferred_answer_arrives_later_or_nowhere(void)
{
    sm_admin_ctx *pending = run("{\"command\":\"test.later\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(pending);
    CU_ASSERT_EQUAL(answers, 0);
    CU_ASSERT_EQUAL(admin_error(parked, SM_ENOTFOUND, "gone"), SM_OK);
    CU_ASSERT_EQUAL(answers, 1);
    CU_ASSERT_STRING_EQUAL(status_of(), "not_found");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(answer, "error")), "gone");

    /* The requester left: the answer goes nowhere (and nothing leaks). */
    pending = run("{\"command\":\"test.later\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(pending);
    admin_detach(pending);
    CU_ASSERT_EQUAL(admin_reply(parked, NULL), SM_OK);
    CU_ASSERT_EQUAL(answers, 0);
}

static void the_core_lists_its_commands_and_sessions(void)
{
    CU_ASSERT_PTR_NULL(run("{\"command\":\"commands\"}"));
    json_t *list = json_object_get(json_object_get(answer, "result"), "commands");
    static const char *const core_names[] = {"commands", "sessions.list", "sessions.kick",
                                             "backup", "test.echo"};
    for (size_t i = 0; i < sizeof core_names / sizeof *core_names; i++)
        CU_ASSERT_PTR_NOT_NULL(json_object_get(list, core_names[i]));
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(list, "backup"), "by")), "core");
    CU_ASSERT_PTR_NULL(run("{\"command\":\"sessions.list\"}"));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(json_object_get(answer, "result"),
                                                    "sessions")),
                    0);
    CU_ASSERT_PTR_NULL(run("{\"command\":\"sessions.kick\",\"args\":{\"id\":99}}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "not_found");
    CU_ASSERT_PTR_NULL(run("{\"command\":\"backup\",\"args\":{\"path\":\"relative.db\"}}"));
    CU_ASSERT_STRING_EQUAL(status_of(), "invalid");
}

static void scrub_wipes_the_password(void)
{
    json_t *r = json_loads("{\"command\":\"users.passwd\",\"args\":{\"password\":\"Secret-1\"}}",
                           0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const char *pw = json_string_value(json_object_get(json_object_get(r, "args"), "password"));
    admin_scrub(r);
    CU_ASSERT_EQUAL(memcmp(pw, "\0\0\0\0\0\0\0\0", 8), 0);
    json_decref(r);
}

static const sm_test_case cases[] = {
    SM_TEST(register_is_all_or_none_and_names_are_unique),
    SM_TEST(every_request_gets_exactly_one_answer),
    SM_TEST(a_deferred_answer_arrives_later_or_nowhere),
    SM_TEST(the_core_lists_its_commands_and_sessions),
    SM_TEST(scrub_wipes_the_password),
    SM_TEST_END
};

int main(void)
{
    int rc = sm_test_run("admin", cases, setup, teardown);
    json_decref(answer);
    return rc;
}
