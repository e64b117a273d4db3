/* The friends plugin in the real server with auth, rooms and messaging,
 * through real clients: request / accept / decline / remove with the
 * events each side sees, mutual requests, presence with two devices,
 * blocking (dropped private messages and requests) and friends-only
 * private messages. Room events (user_joined / user_left) and PINGs are
 * not this suite's business and are skipped. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"
#define QUIET_MS 300 /* how long "nothing more arrives" is watched */

#define CONFIG_BASE                                                                      \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"                                          \
    " load = [\"auth\", \"rooms\", \"messaging\", \"friends\"]; };\n"                    \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; };\n"

static harness_server srv;

static int init(void)
{
    return harness_start(&srv, CONFIG_BASE);
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

#define ASSERT_STR(got, want)                   \
    do {                                        \
        const char *got_ = (got);               \
        CU_ASSERT_PTR_NOT_NULL(got_);           \
        if (got_)                               \
            CU_ASSERT_STRING_EQUAL(got_, want); \
    } while (0)

static int is_noise(const sm_message *m)
{
    return strcmp(m->action, "user_joined") == 0 || strcmp(m->action, "user_left") == 0 ||
           strcmp(m->action, "PING") == 0;
}

/* A new connection logged in as name (registered first when `reg`). */
static sm_client *user(const harness_server *s, const char *name, int reg)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    sm_message *r = harness_callf(c, reg ? "register" : "login", "{s:s, s:s}", "username", name,
                                  "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(r->action, reg ? "registration_success" : "login_success");
    sm_message_free(r);
    return c;
}

/* The next event that is not room noise; NULL after timeout_ms. */
static sm_message *next_event(sm_client *c, int timeout_ms)
{
    for (;;) {
        sm_message *m = NULL;
        if (sm_client_next_event(c, timeout_ms, &m) != SM_CLIENT_OK)
            return NULL;
        if (!is_noise(m))
            return m;
        sm_message_free(m);
    }
}

/* The next event is `action` with payload field == value. */
static void expect_event(sm_client *c, const char *action, const char *field, const char *value)
{
    sm_message *m = next_event(c, 3000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    ASSERT_STR(m->action, action);
    ASSERT_STR(json_string_value(json_object_get(m->payload, field)), value);
    sm_message_free(m);
}

/* Nothing but room noise arrives for QUIET_MS. */
static void expect_quiet(sm_client *c)
{
    sm_message *m = next_event(c, QUIET_MS);
    if (m)
        fprintf(stderr, "unexpected event %s\n", m->action);
    CU_ASSERT_PTR_NULL(m);
    sm_message_free(m);
}

/* Calls and checks the reply's action; returns the reply. */
static sm_message *call_ok(sm_client *c, const char *action, const char *reply, const char *fmt,
                           const char *name)
{
    sm_message *r = fmt ? harness_callf(c, action, fmt, "friend_username", name)
                        : harness_callf(c, action, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    if (strcmp(r->type, "error") == 0)
        fprintf(stderr, "%s: error %d\n", action, harness_error_code(r));
    ASSERT_STR(r->type, "response");
    ASSERT_STR(r->action, reply);
    return r;
}

/* A friend action answered {success:true, friend_username: shown, message}. */
static void friend_ok(sm_client *c, const char *action, const char *reply, const char *name,
                      const char *shown)
{
    sm_message *r = call_ok(c, action, reply, "{s:s}", name);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "success")));
    ASSERT_STR(json_string_value(json_object_get(r->payload, "friend_username")), shown);
    CU_ASSERT_TRUE(json_is_string(json_object_get(r->payload, "message")));
    sm_message_free(r);
}

static int error_of(sm_client *c, const char *action, const char *field, const char *name)
{
    sm_message *r = harness_callf(c, action, "{s:s}", field, name);
    int code = harness_error_code(r);
    sm_message_free(r);
    return code;
}

static void befriend(sm_client *a, const char *a_name, sm_client *b, const char *b_name)
{
    friend_ok(a, "send_friend_request", "friend_request_response", b_name, b_name);
    expect_event(b, "friend_request", "from", a_name);
    friend_ok(b, "accept_friend_request", "friend_request_accept_response", a_name, a_name);
    expect_event(a, "friend_request_accepted", "friend_username", b_name);
}

/* get_friends_list as "name:1,name:0". */
static void expect_friends(sm_client *c, const char *expected)
{
    sm_message *r = call_ok(c, "get_friends_list", "friends_list", NULL, NULL);
    char got[256] = "";
    size_t len = 0, i;
    json_t *item;
    json_array_foreach(json_object_get(r->payload, "friends"), i, item) {
        int n = snprintf(got + len, sizeof got - len, "%s%s:%d", i ? "," : "",
                         json_string_value(json_object_get(item, "username")),
                         json_is_true(json_object_get(item, "online")));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    ASSERT_STR(got, expected);
    sm_message_free(r);
}

static void expect_requests(sm_client *c, const char *expected)
{
    sm_message *r = call_ok(c, "get_friend_requests", "friend_requests", NULL, NULL);
    char got[256] = "";
    size_t len = 0, i;
    json_t *item;
    json_array_foreach(json_object_get(r->payload, "requests"), i, item) {
        CU_ASSERT_TRUE(json_is_number(json_object_get(item, "timestamp")));
        int n = snprintf(got + len, sizeof got - len, "%s%s", i ? "," : "",
                         json_string_value(json_object_get(item, "from")));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof got - len);
        len += (size_t)n;
    }
    ASSERT_STR(got, expected);
    sm_message_free(r);
}

static sm_message *private_message(sm_client *c, const char *to, const char *text)
{
    sm_message *r = harness_callf(c, "private_message", "{s:s, s:s, s:b}", "recipient", to,
                                  "content", text, "encrypted", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

static void request_accept_and_remove_with_events_on_each_side(void)
{
    sm_client *a = user(&srv, "Ann_ra", 1), *b = user(&srv, "bo_ra", 1);
    friend_ok(a, "send_friend_request", "friend_request_response", "BO_RA", "bo_ra");
    expect_event(b, "friend_request", "from", "Ann_ra");
    expect_quiet(a);
    expect_requests(b, "Ann_ra");
    CU_ASSERT_EQUAL(error_of(a, "send_friend_request", "friend_username", "bo_ra"), 1010);
    CU_ASSERT_EQUAL(error_of(a, "send_friend_request", "friend_username", "ann_RA"), 1004);
    CU_ASSERT_EQUAL(error_of(a, "send_friend_request", "friend_username", "nobody_ra"), 1009);
    friend_ok(b, "accept_friend_request", "friend_request_accept_response", "ann_ra", "Ann_ra");
    expect_event(a, "friend_request_accepted", "friend_username", "bo_ra");
    expect_quiet(b); /* the accepter's own sessions are not told */
    expect_friends(a, "bo_ra:1");
    expect_friends(b, "Ann_ra:1");
    CU_ASSERT_EQUAL(error_of(b, "accept_friend_request", "friend_username", "Ann_ra"), 1010);

    sm_message *r = call_ok(a, "remove_friend", "remove_friend", "{s:s}", "bo_ra");
    ASSERT_STR(json_string_value(json_object_get(r->payload, "friend_username")), "bo_ra");
    sm_message_free(r);
    expect_event(b, "friend_removed", "friend_username", "Ann_ra");
    expect_quiet(a);
    expect_friends(a, "");
    CU_ASSERT_EQUAL(error_of(b, "remove_friend", "friend_username", "Ann_ra"), 1009);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

static void decline_is_not_told_to_the_requester(void)
{
    sm_client *a = user(&srv, "ann_de", 1), *b = user(&srv, "bo_de", 1);
    friend_ok(a, "send_friend_request", "friend_request_response", "bo_de", "bo_de");
    expect_event(b, "friend_request", "from", "ann_de");
    friend_ok(b, "decline_friend_request", "friend_request_decline_response", "ann_de",
              "ann_de");
    expect_quiet(a);
    expect_quiet(b);
    expect_requests(b, "");
    CU_ASSERT_EQUAL(error_of(b, "decline_friend_request", "friend_username", "ann_de"), 1009);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

static void mutual_requests_make_friends_and_tell_both(void)
{
    sm_client *a1 = user(&srv, "ann_mu", 1), *a2 = user(&srv, "ann_mu", 0);
    sm_client *b = user(&srv, "bo_mu", 1);
    friend_ok(a1, "send_friend_request", "friend_request_response", "bo_mu", "bo_mu");
    expect_event(b, "friend_request", "from", "ann_mu");
    friend_ok(b, "send_friend_request", "friend_request_response", "ann_mu", "ann_mu");
    expect_event(b, "friend_request_accepted", "friend_username", "ann_mu");
    expect_event(a1, "friend_request_accepted", "friend_username", "bo_mu");
    expect_event(a2, "friend_request_accepted", "friend_username", "bo_mu");
    expect_quiet(a1);
    expect_quiet(a2);
    expect_quiet(b);
    expect_friends(a2, "bo_mu:1");
    expect_requests(a1, "");
    expect_requests(b, "");
    sm_client_close(a1, 1000);
    sm_client_close(a2, 1000);
    sm_client_close(b, 1000);
}

static void presence_once_per_user_not_per_device(void)
{
    sm_client *a = user(&srv, "ann_pr", 1), *b = user(&srv, "bo_pr", 1);
    befriend(a, "ann_pr", b, "bo_pr");
    sm_client_close(a, 1000);
    expect_event(b, "friend_offline", "username", "ann_pr");
    expect_friends(b, "ann_pr:0");

    sm_client *a1 = user(&srv, "ann_pr", 0);
    expect_event(b, "friend_online", "username", "ann_pr");
    sm_client *a2 = user(&srv, "ann_pr", 0); /* second device */
    expect_quiet(b);
    sm_message *r = call_ok(a2, "logout", "logout", NULL, NULL);
    sm_message_free(r);
    expect_quiet(b); /* a1 is still online */
    expect_friends(b, "ann_pr:1");
    sm_client_free(a1); /* abrupt: the last session goes */
    expect_event(b, "friend_offline", "username", "ann_pr");
    expect_quiet(b);
    sm_client_close(a2, 1000);
    sm_client_close(b, 1000);
}

/* The error reply (code, message) a command gets, as "1010 a friend
 * request is already pending", for comparing two users' replies. */
static void error_text(sm_client *c, const char *action, const char *field, const char *name,
                       char *out, size_t out_len)
{
    sm_message *r = harness_callf(c, action, "{s:s}", field, name);
    snprintf(out, out_len, "%d %s", harness_error_code(r),
             r ? json_string_value(json_object_get(r->payload, "message")) : "(none)");
    sm_message_free(r);
}

/* Everything a blocked user can provoke gets the reply an unblocked user
 * in the same state gets (docs/PROTOCOL.md section 8): the block is never
 * told, neither through a reply nor through a missing event. */
static void blocked_sender_gets_the_replies_anyone_gets(void)
{
    sm_client *a = user(&srv, "ann_bl", 1), *b = user(&srv, "bo_bl", 1);
    sm_client *c = user(&srv, "cy_bl", 1), *d = user(&srv, "di_bl", 1);
    befriend(a, "ann_bl", b, "bo_bl");
    sm_message *r = harness_callf(a, "block_user", "{s:s}", "username", "BO_BL");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(r->action, "block_user");
    ASSERT_STR(json_string_value(json_object_get(r->payload, "username")), "bo_bl");
    sm_message_free(r);
    /* the friendship ends as remove_friend would end it */
    expect_event(b, "friend_removed", "friend_username", "ann_bl");
    expect_quiet(b);
    expect_friends(b, "");

    /* A private message: the same reply as cy_bl's, who is not blocked. */
    sm_message *blocked = private_message(b, "ann_bl", "are you there?");
    sm_message *plain = private_message(c, "di_bl", "are you there?");
    ASSERT_STR(blocked->action, "message_delivered");
    CU_ASSERT_EQUAL(json_object_size(blocked->payload), 4);
    CU_ASSERT_TRUE(json_is_true(json_object_get(blocked->payload, "online")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(plain->payload, "online")));
    ASSERT_STR(json_string_value(json_object_get(blocked->payload, "recipient")), "ann_bl");
    /* ids from one sequence: the plain message got the next one */
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(plain->payload, "message_id")),
                    json_integer_value(json_object_get(blocked->payload, "message_id")) + 1);
    sm_message_free(blocked);
    sm_message_free(plain);
    expect_event(d, "private_message", "content", "are you there?");

    /* A friend request, then the same request again: success, then 1010. */
    friend_ok(b, "send_friend_request", "friend_request_response", "ann_bl", "ann_bl");
    friend_ok(c, "send_friend_request", "friend_request_response", "di_bl", "di_bl");
    expect_event(d, "friend_request", "from", "cy_bl");
    char got[128], want[128];
    error_text(b, "send_friend_request", "friend_username", "ann_bl", got, sizeof got);
    error_text(c, "send_friend_request", "friend_username", "di_bl", want, sizeof want);
    ASSERT_STR(got, want);
    ASSERT_STR(got, "1010 a friend request is already pending");
    /* remove, accept, decline: what "not friends, nothing pending" gives */
    const char *actions[] = {"remove_friend", "accept_friend_request", "decline_friend_request"};
    for (size_t i = 0; i < 3; i++) {
        error_text(b, actions[i], "friend_username", "ann_bl", got, sizeof got);
        error_text(c, actions[i], "friend_username", "ann_bl", want, sizeof want);
        ASSERT_STR(got, want);
    }
    /* the key and the message marking, as for anyone */
    r = harness_callf(b, "get_public_key", "{s:s}", "username", "ann_bl");
    sm_message *r2 = harness_callf(c, "get_public_key", "{s:s}", "username", "ann_bl");
    CU_ASSERT_TRUE(r && r2 && json_equal(r->payload, r2->payload));
    sm_message_free(r);
    sm_message_free(r2);
    expect_quiet(a);
    expect_requests(a, "");
    r = harness_callf(a, "get_unread_messages", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    ASSERT_STR(r->action, "unread_messages");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r->payload, "messages")), 0);
    sm_message_free(r);

    /* the blocker still reaches the blocked user; after unblocking both ways work */
    r = private_message(a, "bo_bl", "one way");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "online")));
    sm_message_free(r);
    expect_event(b, "private_message", "content", "one way");
    r = harness_callf(a, "unblock_user", "{s:s}", "username", "bo_bl");
    ASSERT_STR(r ? r->action : NULL, "unblock_user");
    sm_message_free(r);
    r = private_message(b, "ann_bl", "hello again");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "online")));
    sm_message_free(r);
    expect_event(a, "private_message", "content", "hello again");
    /* the request made while blocked is gone, as if declined */
    expect_requests(a, "");
    friend_ok(b, "send_friend_request", "friend_request_response", "ann_bl", "ann_bl");
    expect_event(a, "friend_request", "from", "bo_bl");
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
}

static void friends_only_mode_refuses_messages_between_non_friends(void)
{
    harness_server fo;
    memset(&fo, 0, sizeof fo);
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&fo, CONFIG_BASE "friends = { private_messages = \"friends\"; };\n"), 0);
    sm_client *a = user(&fo, "ann_fo", 1), *b = user(&fo, "bo_fo", 1),
              *c = user(&fo, "cy_fo", 1);
    befriend(a, "ann_fo", b, "bo_fo");
    sm_message *r = private_message(c, "ann_fo", "let me in");
    CU_ASSERT_EQUAL(harness_error_code(r), 1002);
    sm_message_free(r);
    expect_quiet(a);
    r = private_message(a, "bo_fo", "hi friend");
    ASSERT_STR(r->action, "message_delivered");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "online")));
    sm_message_free(r);
    expect_event(b, "private_message", "content", "hi friend");
    /* a friend request still reaches a non-friend */
    friend_ok(c, "send_friend_request", "friend_request_response", "ann_fo", "ann_fo");
    expect_event(a, "friend_request", "from", "cy_fo");
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&fo), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(request_accept_and_remove_with_events_on_each_side),
        SM_TEST(decline_is_not_told_to_the_requester),
        SM_TEST(mutual_requests_make_friends_and_tell_both),
        SM_TEST(presence_once_per_user_not_per_device),
        SM_TEST(blocked_sender_gets_the_replies_anyone_gets),
        SM_TEST(friends_only_mode_refuses_messages_between_non_friends),
        SM_TEST_END,
    };
    return sm_test_run("integration_friends", cases, init, fini);
}
