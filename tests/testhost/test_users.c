/* The users service through the test host: a provider (users_table,
 * serving an auth_users table made here) answers user_lookup and
 * user_lookup_id for every plugin, and there is only one provider. */
#include <stdio.h>
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define PLUGIN(name) SM_TEST_PLUGIN_DIR "/" name ".so"

static sm_testhost *th;

static int setup(void)
{
    if (sm_testhost_new(NULL, &th) != SM_OK ||
        sm_testhost_exec(th, "CREATE TABLE auth_users(id INTEGER PRIMARY KEY,"
                             " username TEXT NOT NULL, username_lower TEXT NOT NULL UNIQUE,"
                             " password_hash TEXT NOT NULL, public_key TEXT,"
                             " created_at REAL NOT NULL);"
                             "INSERT INTO auth_users VALUES (4, 'Zoe', 'zoe', 'x', 'PEM', 0);"
                             "INSERT INTO auth_users VALUES (5, 'yann', 'yann', 'x', NULL, 0);") !=
            SM_OK ||
        sm_testhost_load(th, PLUGIN("users_table"), "users_table") != SM_OK)
        return -1;
    return 0;
}

static int teardown(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

static json_t *lookup(const char *body)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    json_t *r = sm_testhost_call(th, s, "users_table_lookup", body);
    sm_testhost_disconnect(th, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

static const json_t *field(const json_t *r, const char *key)
{
    return json_object_get(json_object_get(r, "payload"), key);
}

static void users_lookup_by_name_ignores_case(void)
{
    json_t *r = lookup("{\"name\": \"zOE\"}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_OK);
    CU_ASSERT_EQUAL(json_integer_value(field(r, "id")), 4);
    CU_ASSERT_STRING_EQUAL(json_string_value(field(r, "name")), "Zoe");
    CU_ASSERT_STRING_EQUAL(json_string_value(field(r, "public_key")), "PEM");
    json_decref(r);
}

static void users_lookup_by_id_and_missing(void)
{
    json_t *r = lookup("{\"id\": 5}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_OK);
    CU_ASSERT_STRING_EQUAL(json_string_value(field(r, "name")), "yann");
    CU_ASSERT_TRUE(json_is_null(field(r, "public_key")));
    json_decref(r);
    r = lookup("{\"id\": 6}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_ENOTFOUND);
    json_decref(r);
    r = lookup("{\"name\": \"xavier\"}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_ENOTFOUND);
    json_decref(r);
    r = lookup("{}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_EINVAL);
    json_decref(r);
}

/* A second provider is refused (SM_EEXIST fails its init); the first
 * keeps answering. */
static void users_second_provider_is_refused(void)
{
    CU_ASSERT_EQUAL(sm_testhost_load(th, PLUGIN("users_second"), "users_second"), SM_ERROR);
    json_t *r = lookup("{\"name\": \"yann\"}");
    CU_ASSERT_EQUAL(json_integer_value(field(r, "status")), SM_OK);
    json_decref(r);
}

/* Alone, the same plugin is accepted: the refusal above was the second
 * provider's. */
static void users_lone_provider_is_accepted(void)
{
    sm_testhost *other = NULL;
    sm_testhost_free(th);
    th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &other), SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_load(other, PLUGIN("users_second"), "users_second"), SM_OK);
    sm_testhost_free(other);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(users_lookup_by_name_ignores_case),
        SM_TEST(users_lookup_by_id_and_missing),
        SM_TEST(users_second_provider_is_refused),
        SM_TEST(users_lone_provider_is_accepted), /* last: frees the suite's host */
        SM_TEST_END,
    };
    return sm_test_run("users", cases, setup, teardown);
}
