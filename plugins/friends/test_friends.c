/* The friends plugin on the test host: every friend action with its reply,
 * its errors and the events each side sees (and nothing more), presence
 * with several devices, blocking, and the verdicts of its policy, asked
 * through the core's policy hook with testcmds' check_policy. */
#include <stdio.h>
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define EPOCH SM_TESTHOST_EPOCH
#define TESTCMDS_SO SM_TEST_PLUGIN_DIR "/testcmds.so"
#define USERS_TABLE_SO SM_TEST_PLUGIN_DIR "/users_table.so"

/* String equality that fails, rather than crashes, on a missing string. */
#define ASSERT_STR(got, want)                   \
    do {                                        \
        const char *got_ = (got);               \
        CU_ASSERT_PTR_NOT_NULL(got_);           \
        if (got_)                               \
            CU_ASSERT_STRING_EQUAL(got_, want); \
    } while (0)

/* auth's table as docs/PLUGINS.md section 17 gives it, so the suite sees
 * auth's users without loading auth. */
#define AUTH_USERS_SQL                                                                   \
    "CREATE TABLE auth_users(id INTEGER PRIMARY KEY, username TEXT NOT NULL,"            \
    " username_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, public_key TEXT," \
    " created_at REAL NOT NULL)"

static sm_testhost *th;

/* Registered users, spelled as registered ("Alice", "Carol" capitalised so
 * that canonical spelling and case-blind sorting show). */
static const char *const users[] = {"Alice", "bob", "Carol", "dave", "erin"};

static void add_users(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, AUTH_USERS_SQL), SM_OK);
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
        char lower[16], sql[256];
        size_t n = strlen(users[i]);
        for (size_t j = 0; j <= n; j++)
            lower[j] = (char)(users[i][j] >= 'A' && users[i][j] <= 'Z' ? users[i][j] + 32
                                                                       : users[i][j]);
        snprintf(sql, sizeof sql,
                 "INSERT INTO auth_users (id, username, username_lower, password_hash,"
                 " created_at) VALUES (%zu, '%s', '%s', 'x', 0)",
                 i + 1, users[i], lower);
        CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, sql), SM_OK);
    }
    /* Served as auth would: friends reads no table of auth's. */
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, USERS_TABLE_SO, "users_table"), SM_OK);
}

/* A host with auth_users, optionally testcmds, and friends (config: NULL or
 * a friends section). */
static void start_with(const char *config, int with_testcmds)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(config, &th), SM_OK);
    add_users();
    if (with_testcmds)
        CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, TESTCMDS_SO, "testcmds"), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, FRIENDS_SO, "friends"), SM_OK);
}

static void start(void)
{
    start_with(NULL, 0);
}

static void stop(void)
{
    sm_testhost_free(th);
    th = NULL;
}

static sm_session_id login(const char *name)
{
    int64_t id = 0;
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        if (strcmp(users[i], name) == 0)
            id = (int64_t)i + 1;
    sm_session_id s = sm_testhost_connect_user(th, name, id);
    CU_ASSERT_FATAL(s != 0);
    return s;
}

/* Runs the command and checks that it got a response with `action`; returns
 * its payload (a new reference) or NULL. */
static json_t *ok(sm_session_id s, const char *action, const char *payload, const char *reply)
{
    json_t *r = sm_testhost_call(th, s, action, payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(json_string_value(json_object_get(r, "type")), "response");
    ASSERT_STR(json_string_value(json_object_get(r, "action")), reply);
    json_t *p = json_incref(json_object_get(r, "payload"));
    json_decref(r);
    return p;
}

static void expect_error(sm_session_id s, const char *action, const char *payload, int code)
{
    json_t *r = sm_testhost_call(th, s, action, payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(json_string_value(json_object_get(r, "type")), "error");
    json_t *p = json_object_get(r, "payload");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "code")), code);
    ASSERT_STR(json_string_value(json_object_get(p, "command")), action);
    const char *message = json_string_value(json_object_get(p, "message"));
    CU_ASSERT_TRUE(message && *message);
    json_decref(r);
}

/* A {success:true, friend_username, message} reply naming `other`. */
static void expect_success(sm_session_id s, const char *action, const char *payload,
                           const char *reply, const char *other)
{
    json_t *p = ok(s, action, payload, reply);
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "success")));
    ASSERT_STR(json_string_value(json_object_get(p, "friend_username")), other);
    const char *message = json_string_value(json_object_get(p, "message"));
    CU_ASSERT_TRUE(message && strlen(message) > 0);
    CU_ASSERT_EQUAL(json_object_size(p), 3);
    json_decref(p);
}

/* The session's next message is the event `action` whose only field
 * `field` equals value. */
static void expect_event(sm_session_id s, const char *action, const char *field,
                         const char *value)
{
    json_t *m = sm_testhost_next(th, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    ASSERT_STR(json_string_value(json_object_get(m, "type")), "event");
    ASSERT_STR(json_string_value(json_object_get(m, "action")), action);
    json_t *p = json_object_get(m, "payload");
    CU_ASSERT_EQUAL(json_object_size(p), 1);
    ASSERT_STR(json_string_value(json_object_get(p, field)), value);
    json_decref(m);
}

static void expect_request_event(sm_session_id s, const char *from, double timestamp)
{
    json_t *m = sm_testhost_next(th, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    ASSERT_STR(json_string_value(json_object_get(m, "action")), "friend_request");
    json_t *p = json_object_get(m, "payload");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    ASSERT_STR(json_string_value(json_object_get(p, "from")), from);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(p, "timestamp")), timestamp, 1e-6);
    json_decref(m);
}

static void send_request(sm_session_id s, const char *to, const char *shown)
{
    char payload[96];
    snprintf(payload, sizeof payload, "{\"friend_username\":\"%s\"}", to);
    expect_success(s, "send_friend_request", payload, "friend_request_response", shown);
}

/* Makes a and b friends (a asks, b accepts) and drops the events. */
static void befriend(sm_session_id a, const char *a_name, sm_session_id b, const char *b_name)
{
    send_request(a, b_name, b_name);
    char payload[96];
    snprintf(payload, sizeof payload, "{\"friend_username\":\"%s\"}", a_name);
    expect_success(b, "accept_friend_request", payload, "friend_request_accept_response",
                   a_name);
    sm_testhost_clear(th);
}

/* The friends list as "name:1,name:0" (online flags). */
static void expect_friends(sm_session_id s, const char *expected)
{
    json_t *p = ok(s, "get_friends_list", NULL, "friends_list");
    char got[256] = "";
    size_t len = 0;
    json_t *item;
    size_t i;
    json_array_foreach(json_object_get(p, "friends"), i, item) {
        CU_ASSERT_EQUAL(json_object_size(item), 2);
        int n = snprintf(got + len, sizeof got - len, "%s%s:%d", i ? "," : "",
                         json_string_value(json_object_get(item, "username")),
                         json_is_true(json_object_get(item, "online")));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    ASSERT_STR(got, expected);
    json_decref(p);
}

/* Incoming requests as "from,from" in the reply's order. */
static void expect_requests(sm_session_id s, const char *expected)
{
    json_t *p = ok(s, "get_friend_requests", NULL, "friend_requests");
    char got[256] = "";
    size_t len = 0;
    json_t *item;
    size_t i;
    json_array_foreach(json_object_get(p, "requests"), i, item) {
        int n = snprintf(got + len, sizeof got - len, "%s%s", i ? "," : "",
                         json_string_value(json_object_get(item, "from")));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    ASSERT_STR(got, expected);
    json_decref(p);
}

static void expect_blocked(sm_session_id s, const char *expected)
{
    json_t *p = ok(s, "get_blocked_users", NULL, "blocked_users");
    char got[256] = "";
    size_t len = 0;
    json_t *item;
    size_t i;
    json_array_foreach(json_object_get(p, "users"), i, item) {
        int n = snprintf(got + len, sizeof got - len, "%s%s", i ? "," : "",
                         json_string_value(item));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    ASSERT_STR(got, expected);
    json_decref(p);
}

static long long verdict(sm_session_id s, const char *what, const char *to)
{
    char payload[128];
    snprintf(payload, sizeof payload, "{\"what\":\"%s\",\"to\":\"%s\"}", what, to);
    json_t *p = ok(s, "check_policy", payload, "check_policy");
    long long v = json_integer_value(json_object_get(p, "verdict"));
    json_decref(p);
    return v;
}

/* ---- start-up ---- */

static void start_fails_without_users_provider(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_NOT_EQUAL(sm_testhost_load(th, FRIENDS_SO, "friends"), SM_OK);
    stop();
}

static void start_fails_on_unknown_private_messages_mode(void)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new("friends = { private_messages = \"nobody\"; };", &th),
                          SM_OK);
    add_users();
    CU_ASSERT_NOT_EQUAL(sm_testhost_load(th, FRIENDS_SO, "friends"), SM_OK);
    stop();
}

/* ---- requests ---- */

static void friend_actions_need_login(void)
{
    start();
    sm_session_id s = sm_testhost_connect(th, NULL);
    const char *actions[] = {"send_friend_request", "accept_friend_request",
                             "decline_friend_request", "remove_friend", "get_friends_list",
                             "get_friend_requests", "block_user", "unblock_user",
                             "get_blocked_users", NULL};
    for (const char **a = actions; *a; a++)
        expect_error(s, *a, "{\"friend_username\":\"bob\",\"username\":\"bob\"}", 1002);
    stop();
}

static void request_ill_formed_name_gets_1004(void)
{
    start();
    sm_session_id a = login("Alice");
    const char *bad[] = {"{}", "{\"friend_username\":null}", "{\"friend_username\":5}",
                         "{\"friend_username\":\"bo\"}", "{\"friend_username\":\"b b b\"}",
                         "{\"friend_username\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", NULL};
    for (const char **p = bad; *p; p++) {
        expect_error(a, "send_friend_request", *p, 1004);
        expect_error(a, "accept_friend_request", *p, 1004);
        expect_error(a, "decline_friend_request", *p, 1004);
        expect_error(a, "remove_friend", *p, 1004);
    }
    stop();
}

static void request_to_yourself_gets_1004_in_any_case(void)
{
    start();
    sm_session_id a = login("Alice");
    expect_error(a, "send_friend_request", "{\"friend_username\":\"Alice\"}", 1004);
    expect_error(a, "send_friend_request", "{\"friend_username\":\"aLICE\"}", 1004);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    stop();
}

static void request_to_unknown_user_gets_1009(void)
{
    start();
    sm_session_id a = login("Alice");
    expect_error(a, "send_friend_request", "{\"friend_username\":\"nobody\"}", 1009);
    expect_error(a, "accept_friend_request", "{\"friend_username\":\"nobody\"}", 1009);
    expect_error(a, "decline_friend_request", "{\"friend_username\":\"nobody\"}", 1009);
    expect_error(a, "remove_friend", "{\"friend_username\":\"nobody\"}", 1009);
    stop();
}

static void request_reaches_every_target_session_not_the_sender(void)
{
    start();
    sm_session_id a = login("Alice"), b1 = login("bob"), b2 = login("bob");
    sm_testhost_advance(th, 2.5);
    send_request(a, "BOB", "bob"); /* shown as registered */
    expect_request_event(b1, "Alice", EPOCH + 2.5);
    expect_request_event(b2, "Alice", EPOCH + 2.5);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b2), 0);
    /* an offline target finds it later */
    sm_testhost_advance(th, 1);
    send_request(a, "dave", "dave");
    sm_session_id d = login("dave");
    expect_requests(d, "Alice");
    expect_requests(b1, "Alice");
    expect_requests(a, ""); /* outgoing requests are not listed */
    stop();
}

static void request_twice_or_to_a_friend_gets_1010(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob");
    send_request(a, "bob", "bob");
    sm_testhost_clear(th);
    expect_error(a, "send_friend_request", "{\"friend_username\":\"Bob\"}", 1010);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    expect_success(b, "accept_friend_request", "{\"friend_username\":\"alice\"}",
                   "friend_request_accept_response", "Alice");
    sm_testhost_clear(th);
    expect_error(a, "send_friend_request", "{\"friend_username\":\"bob\"}", 1010);
    expect_error(b, "send_friend_request", "{\"friend_username\":\"alice\"}", 1010);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    stop();
}

static void mutual_request_makes_friends_and_tells_every_session_of_both(void)
{
    start();
    sm_session_id a1 = login("Alice"), a2 = login("Alice"), b = login("bob");
    send_request(a1, "bob", "bob");
    sm_testhost_clear(th);
    send_request(b, "alice", "Alice");
    expect_event(b, "friend_request_accepted", "friend_username", "Alice");
    expect_event(a1, "friend_request_accepted", "friend_username", "bob");
    expect_event(a2, "friend_request_accepted", "friend_username", "bob");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a2), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    expect_friends(a1, "bob:1");
    expect_friends(b, "Alice:1");
    expect_requests(a1, "");
    expect_requests(b, "");
    stop();
}

static void accept_tells_only_the_requester(void)
{
    start();
    sm_session_id a = login("Alice"), b1 = login("bob"), b2 = login("bob");
    send_request(a, "bob", "bob");
    sm_testhost_clear(th);
    expect_success(b1, "accept_friend_request", "{\"friend_username\":\"ALICE\"}",
                   "friend_request_accept_response", "Alice");
    expect_event(a, "friend_request_accepted", "friend_username", "bob");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b2), 0);
    expect_friends(a, "bob:1");
    expect_friends(b2, "Alice:1");
    expect_requests(b1, "");
    stop();
}

static void accept_errors_follow_the_state(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob");
    expect_error(b, "accept_friend_request", "{\"friend_username\":\"Alice\"}", 1009);
    expect_error(b, "accept_friend_request", "{\"friend_username\":\"bob\"}", 1009); /* self */
    send_request(a, "bob", "bob");
    /* the requester cannot accept its own request */
    expect_error(a, "accept_friend_request", "{\"friend_username\":\"bob\"}", 1009);
    expect_success(b, "accept_friend_request", "{\"friend_username\":\"Alice\"}",
                   "friend_request_accept_response", "Alice");
    expect_error(b, "accept_friend_request", "{\"friend_username\":\"Alice\"}", 1010);
    expect_error(a, "accept_friend_request", "{\"friend_username\":\"bob\"}", 1010);
    stop();
}

static void decline_removes_the_request_and_the_requester_is_not_told(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob");
    send_request(a, "bob", "bob");
    sm_testhost_clear(th);
    expect_success(b, "decline_friend_request", "{\"friend_username\":\"alice\"}",
                   "friend_request_decline_response", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    expect_requests(b, "");
    expect_friends(a, "");
    expect_error(b, "decline_friend_request", "{\"friend_username\":\"alice\"}", 1009);
    expect_error(b, "accept_friend_request", "{\"friend_username\":\"alice\"}", 1009);
    /* nothing pending any more: she may ask again */
    send_request(a, "bob", "bob");
    expect_request_event(b, "Alice", EPOCH);
    stop();
}

static void remove_friend_tells_the_other_side_only(void)
{
    start();
    sm_session_id a1 = login("Alice"), a2 = login("Alice"), b1 = login("bob"),
                  b2 = login("bob");
    befriend(a1, "Alice", b1, "bob");
    json_t *p = ok(a1, "remove_friend", "{\"friend_username\":\"BOB\"}", "remove_friend");
    ASSERT_STR(json_string_value(json_object_get(p, "friend_username")), "bob");
    CU_ASSERT_EQUAL(json_object_size(p), 1);
    json_decref(p);
    expect_event(b1, "friend_removed", "friend_username", "Alice");
    expect_event(b2, "friend_removed", "friend_username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a2), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b1), 0);
    expect_friends(a1, "");
    expect_friends(b1, "");
    expect_error(a1, "remove_friend", "{\"friend_username\":\"bob\"}", 1009);
    expect_error(b1, "remove_friend", "{\"friend_username\":\"Alice\"}", 1009);
    expect_error(a1, "remove_friend", "{\"friend_username\":\"Alice\"}", 1009); /* self */
    stop();
}

static void friends_list_sorted_without_regard_to_case_with_online(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol"), d = login("dave");
    befriend(d, "dave", a, "Alice");
    befriend(c, "Carol", a, "Alice");
    befriend(b, "bob", a, "Alice");
    send_request(a, "erin", "erin"); /* pending: not a friend */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, d), SM_OK);
    sm_testhost_clear(th);
    expect_friends(a, "bob:1,Carol:1,dave:0");
    expect_friends(b, "Alice:1");
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, c), SM_OK);
    expect_friends(a, "bob:1,Carol:0,dave:0");
    stop();
}

static void friend_requests_incoming_oldest_first(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol"), d = login("dave");
    send_request(d, "Alice", "Alice");
    sm_testhost_advance(th, 1);
    send_request(b, "alice", "Alice");
    sm_testhost_advance(th, 1);
    send_request(c, "alice", "Alice");
    send_request(a, "erin", "erin");
    json_t *p = ok(a, "get_friend_requests", NULL, "friend_requests");
    json_t *list = json_object_get(p, "requests");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 3);
    const char *from[] = {"dave", "bob", "Carol"};
    for (size_t i = 0; i < 3; i++) {
        json_t *item = json_array_get(list, i);
        CU_ASSERT_EQUAL(json_object_size(item), 2);
        ASSERT_STR(json_string_value(json_object_get(item, "from")), from[i]);
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(item, "timestamp")),
                               EPOCH + (double)i, 1e-6);
    }
    json_decref(p);
    stop();
}

/* ---- presence ---- */

static void presence_once_for_the_first_device_and_the_last(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob");
    befriend(a, "Alice", b, "bob");
    sm_session_id c = login("Carol"); /* not a friend: sees nothing */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a), SM_OK);
    expect_event(b, "friend_offline", "username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);

    sm_session_id a1 = login("Alice");
    expect_event(b, "friend_online", "username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    sm_session_id a2 = login("Alice"); /* a second device: no second event */
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a1), SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a2), 0); /* the user is not told of itself */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a2), SM_OK);
    expect_event(b, "friend_offline", "username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
    stop();
}

static void presence_reaches_every_session_of_online_friends(void)
{
    start();
    sm_session_id a = login("Alice"), b1 = login("bob"), c = login("Carol");
    befriend(a, "Alice", b1, "bob");
    befriend(a, "Alice", c, "Carol");
    sm_session_id b2 = login("bob"); /* bob's second device: Alice hears nothing */
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a), SM_OK);
    expect_event(b1, "friend_offline", "username", "Alice");
    expect_event(b2, "friend_offline", "username", "Alice");
    expect_event(c, "friend_offline", "username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b2), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
    stop();
}

/* ---- blocking ---- */

static void block_list_sorted_idempotent_and_unblock(void)
{
    start();
    sm_session_id a = login("Alice");
    const char *blocks[][2] = {{"CAROL", "Carol"}, {"bob", "bob"}, {"Bob", "bob"}};
    for (size_t i = 0; i < 3; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"username\":\"%s\"}", blocks[i][0]);
        json_t *p = ok(a, "block_user", payload, "block_user");
        ASSERT_STR(json_string_value(json_object_get(p, "username")), blocks[i][1]);
        CU_ASSERT_EQUAL(json_object_size(p), 1);
        json_decref(p);
    }
    expect_blocked(a, "bob,Carol");
    expect_error(a, "block_user", "{\"username\":\"alice\"}", 1004);
    expect_error(a, "block_user", "{\"username\":\"nobody\"}", 1009);
    expect_error(a, "block_user", "{\"username\":\"x\"}", 1004);
    expect_error(a, "block_user", "{}", 1004);
    expect_error(a, "unblock_user", "{\"username\":\"dave\"}", 1009);
    expect_error(a, "unblock_user", "{\"username\":\"nobody\"}", 1009);
    json_t *p = ok(a, "unblock_user", "{\"username\":\"BOB\"}", "unblock_user");
    ASSERT_STR(json_string_value(json_object_get(p, "username")), "bob");
    json_decref(p);
    expect_error(a, "unblock_user", "{\"username\":\"bob\"}", 1009);
    expect_blocked(a, "Carol");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    stop();
}

/* A repeated insert is no error (its key's ON CONFLICT does nothing), but
 * a row another constraint refuses is: the command fails with 1005 and
 * nothing of its transaction stays, never a success for a row that was
 * not stored. The extra unique index stands in for such a constraint
 * (on PostgreSQL, the pairs' CHECK under a collation other than C). */
static void a_row_a_constraint_refuses_is_an_error_not_a_repeat(void)
{
    start();
    CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, "CREATE UNIQUE INDEX test_one_block_each"
                                               " ON friends_blocks (blocker_lower)"),
                          SM_OK);
    sm_session_id a = login("Alice");
    sm_session_id c = login("Carol");
    json_decref(ok(a, "block_user", "{\"username\":\"bob\"}", "block_user"));
    json_decref(ok(a, "block_user", "{\"username\":\"BOB\"}", "block_user"));
    /* Carol and Alice are friends: the block would end that, but fails. */
    json_decref(ok(c, "send_friend_request", "{\"friend_username\":\"alice\"}",
                   "friend_request_response"));
    json_decref(ok(a, "accept_friend_request", "{\"friend_username\":\"carol\"}",
                   "friend_request_accept_response"));
    sm_testhost_clear(th);
    expect_error(a, "block_user", "{\"username\":\"carol\"}", 1005);
    expect_blocked(a, "bob");
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM friends_pairs", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
    stop();
}

/* The reply to a command that must fail, as a new reference to its
 * payload (code, message, command) for comparing replies. */
static json_t *error_payload(sm_session_id s, const char *action, const char *payload)
{
    json_t *r = sm_testhost_call(th, s, action, payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(json_string_value(json_object_get(r, "type")), "error");
    json_t *p = json_incref(json_object_get(r, "payload"));
    json_decref(r);
    return p;
}

/* Asserts that two commands get the same error, with this code. */
static void expect_same_error(sm_session_id s1, const char *action1, const char *payload1,
                              sm_session_id s2, const char *action2, const char *payload2,
                              int code)
{
    json_t *p1 = error_payload(s1, action1, payload1);
    json_t *p2 = error_payload(s2, action2, payload2);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p1, "code")), code);
    /* The command names differ when the actions do; the rest must not. */
    json_object_del(p1, "command");
    json_object_del(p2, "command");
    CU_ASSERT_TRUE(json_equal(p1, p2));
    if (!json_equal(p1, p2))
        fprintf(stderr, "replies differ: %s / %s\n",
                json_string_value(json_object_get(p1, "message")),
                json_string_value(json_object_get(p2, "message")));
    json_decref(p1);
    json_decref(p2);
}

/* Blocking a friend looks like remove_friend to the blocked user (the
 * same friend_removed event, no friendship left); the blocker's own
 * request is withdrawn; nothing else is told. */
static void block_ends_friendship_as_remove_friend_does(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol"), d = login("dave");
    befriend(a, "Alice", b, "bob");
    send_request(a, "dave", "dave");
    sm_testhost_clear(th);
    const char *targets[] = {"bob", "Carol", "dave"};
    for (size_t i = 0; i < 3; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"username\":\"%s\"}", targets[i]);
        json_t *p = ok(a, "block_user", payload, "block_user");
        json_decref(p);
    }
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    expect_event(b, "friend_removed", "friend_username", "Alice");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    expect_friends(a, "");
    expect_friends(b, "");
    expect_same_error(b, "remove_friend", "{\"friend_username\":\"alice\"}", c, "remove_friend",
                      "{\"friend_username\":\"alice\"}", 1009);
    expect_requests(d, "");
    expect_same_error(d, "accept_friend_request", "{\"friend_username\":\"alice\"}", c,
                      "accept_friend_request", "{\"friend_username\":\"alice\"}", 1009);
    /* and no presence any more */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a), SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    stop();
}

/* The review's oracle: a second request got success from a blocked user
 * and 1010 from anyone else. The dropped request is kept, hidden from its
 * target, so every reply is the one an unblocked user would get. */
static void repeated_request_from_blocked_user_gets_1010_as_a_pending_one(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol"), d = login("dave");
    json_decref(ok(a, "block_user", "{\"username\":\"bob\"}", "block_user"));
    send_request(b, "alice", "Alice");
    send_request(c, "dave", "dave");
    sm_testhost_clear(th);
    expect_same_error(b, "send_friend_request", "{\"friend_username\":\"alice\"}", c,
                      "send_friend_request", "{\"friend_username\":\"dave\"}", 1010);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    /* The target never sees it: not listed, nothing to accept or decline. */
    expect_requests(a, "");
    expect_same_error(a, "accept_friend_request", "{\"friend_username\":\"bob\"}", a,
                      "accept_friend_request", "{\"friend_username\":\"erin\"}", 1009);
    expect_same_error(a, "decline_friend_request", "{\"friend_username\":\"bob\"}", a,
                      "decline_friend_request", "{\"friend_username\":\"erin\"}", 1009);
    expect_same_error(b, "send_friend_request", "{\"friend_username\":\"Alice\"}", c,
                      "send_friend_request", "{\"friend_username\":\"dave\"}", 1010);
    /* the blocker cannot befriend whom she blocks until she unblocks */
    expect_error(a, "send_friend_request", "{\"friend_username\":\"bob\"}", 1002);
    /* Unblocking forgets the hidden request, as a silent decline would. */
    json_decref(ok(a, "unblock_user", "{\"username\":\"bob\"}", "unblock_user"));
    expect_requests(a, "");
    send_request(b, "alice", "Alice");
    expect_request_event(a, "bob", EPOCH);
    expect_requests(a, "bob");
    stop();
}

/* A request made before the block stays pending for its sender. */
static void block_keeps_the_blocked_users_request_pending(void)
{
    start();
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol"), d = login("dave");
    send_request(b, "alice", "Alice");
    send_request(c, "dave", "dave");
    json_decref(ok(a, "block_user", "{\"username\":\"bob\"}", "block_user"));
    sm_testhost_clear(th);
    expect_requests(a, "");
    expect_same_error(b, "send_friend_request", "{\"friend_username\":\"alice\"}", c,
                      "send_friend_request", "{\"friend_username\":\"dave\"}", 1010);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    int64_t rows = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th,
                                          "SELECT COUNT(*) FROM friends_requests"
                                          " WHERE from_lower = 'bob' AND hidden = 1",
                                          &rows),
                    SM_OK);
    CU_ASSERT_EQUAL(rows, 1);
    stop();
}

static void policy_drops_what_a_blocked_user_sends(void)
{
    start_with(NULL, 1);
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol");
    json_decref(ok(a, "block_user", "{\"username\":\"bob\"}", "block_user"));
    CU_ASSERT_EQUAL(verdict(b, "private_message", "Alice"), 2);
    CU_ASSERT_EQUAL(verdict(b, "private_message", "ALICE"), 2);
    CU_ASSERT_EQUAL(verdict(b, "friend_request", "alice"), 2);
    CU_ASSERT_EQUAL(verdict(a, "private_message", "bob"), 0); /* one direction only */
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 0); /* default "anyone" */
    CU_ASSERT_EQUAL(verdict(c, "friend_request", "Alice"), 0);
    json_decref(ok(a, "unblock_user", "{\"username\":\"bob\"}", "unblock_user"));
    CU_ASSERT_EQUAL(verdict(b, "private_message", "Alice"), 0);
    stop();
}

static void friends_only_mode_denies_non_friends_and_drops_blocked(void)
{
    start_with("friends = { private_messages = \"friends\"; };", 1);
    sm_session_id a = login("Alice"), b = login("bob"), c = login("Carol");
    befriend(a, "Alice", b, "bob");
    CU_ASSERT_EQUAL(verdict(a, "private_message", "bob"), 0);
    CU_ASSERT_EQUAL(verdict(b, "private_message", "alice"), 0);
    CU_ASSERT_EQUAL(verdict(a, "private_message", "Carol"), 1);
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 1);
    CU_ASSERT_EQUAL(verdict(c, "friend_request", "Alice"), 0); /* requests stay open */
    json_decref(ok(a, "block_user", "{\"username\":\"Carol\"}", "block_user"));
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 2); /* blocking wins */
    json_decref(ok(a, "block_user", "{\"username\":\"bob\"}", "block_user"));
    CU_ASSERT_EQUAL(verdict(b, "private_message", "Alice"), 2);
    CU_ASSERT_EQUAL(verdict(a, "private_message", "bob"), 1); /* no longer friends */
    stop();
}

/* SIGHUP: the policy follows the new mode from the next message; an
 * unknown mode refuses the reload and the old one stays. */
static void reload_switches_private_messages_mode(void)
{
    start_with(NULL, 1);
    sm_session_id a = login("Alice"), c = login("Carol");
    (void)a;
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 0);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "friends = { private_messages = \"friends\"; };"),
                    SM_OK);
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 1);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "friends = { private_messages = \"nobody\"; };"),
                    SM_ERROR);
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 1);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "friends = { };"), SM_OK);
    CU_ASSERT_EQUAL(verdict(c, "private_message", "Alice"), 0);
    stop();
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(start_fails_without_users_provider),
        SM_TEST(start_fails_on_unknown_private_messages_mode),
        SM_TEST(friend_actions_need_login),
        SM_TEST(request_ill_formed_name_gets_1004),
        SM_TEST(request_to_yourself_gets_1004_in_any_case),
        SM_TEST(request_to_unknown_user_gets_1009),
        SM_TEST(request_reaches_every_target_session_not_the_sender),
        SM_TEST(request_twice_or_to_a_friend_gets_1010),
        SM_TEST(mutual_request_makes_friends_and_tells_every_session_of_both),
        SM_TEST(accept_tells_only_the_requester),
        SM_TEST(accept_errors_follow_the_state),
        SM_TEST(decline_removes_the_request_and_the_requester_is_not_told),
        SM_TEST(remove_friend_tells_the_other_side_only),
        SM_TEST(friends_list_sorted_without_regard_to_case_with_online),
        SM_TEST(friend_requests_incoming_oldest_first),
        SM_TEST(presence_once_for_the_first_device_and_the_last),
        SM_TEST(presence_reaches_every_session_of_online_friends),
        SM_TEST(block_list_sorted_idempotent_and_unblock),
        SM_TEST(block_ends_friendship_as_remove_friend_does),
        SM_TEST(repeated_request_from_blocked_user_gets_1010_as_a_pending_one),
        SM_TEST(block_keeps_the_blocked_users_request_pending),
        SM_TEST(a_row_a_constraint_refuses_is_an_error_not_a_repeat),
        SM_TEST(policy_drops_what_a_blocked_user_sends),
        SM_TEST(friends_only_mode_denies_non_friends_and_drops_blocked),
        SM_TEST(reload_switches_private_messages_mode),
        SM_TEST_END,
    };
    return sm_test_run("friends", cases, NULL, NULL);
}
