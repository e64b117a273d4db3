/* The rooms plugin in the real server behind auth, through the client
 * library: the assigned room at registration, user_joined / user_left to
 * the room's other users (never to the acting user's own sessions),
 * join_room, leave_room, get_users, logout and disconnect, the reply
 * before anything else on the acting connection, and rooms that outlive
 * a restart.
 *
 * All tests share one server and its default room, so each test names its
 * users with its own prefix and looks only at events about them. Absent
 * events are checked after a round trip of the observer: the server runs
 * on one thread and keeps each connection's messages in order, so an event
 * caused before the observer's command would arrive before its reply. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define AUTH_AND_ROOMS \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"rooms\"]; };\n" \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n" \
    "         registrations_per_hour = 1000; };\n"

#define PASSWORD "correct horse battery"

/* A string member, or "<none>" so a failing comparison reports instead of
 * passing NULL to strcmp. */
static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static harness_server srv;

static int init(void)
{
    return harness_start(&srv, AUTH_AND_ROOMS);
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

static sm_client *connect_to(const harness_server *s)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    return c;
}

/* A client of `s` registered as `name`; the reply is checked for
 * assigned_room == room (NULL: JSON null). */
static sm_client *registered_on(const harness_server *s, const char *name, const char *room)
{
    sm_client *c = connect_to(s);
    sm_message *m = harness_callf(c, "register", "{s:s, s:s}", "username", name,
                                  "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, "registration_success");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "username"), name);
    CU_ASSERT_TRUE(json_is_integer(json_object_get(m->payload, "user_id")));
    json_t *assigned = json_object_get(m->payload, "assigned_room");
    if (room) {
        CU_ASSERT_STRING_EQUAL(jstr(m->payload, "assigned_room"), room);
    } else {
        CU_ASSERT_TRUE(json_is_null(assigned));
    }
    sm_message_free(m);
    return c;
}

static sm_client *registered(const char *name)
{
    return registered_on(&srv, name, "general");
}

static int has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The next event whose username starts with prefix (others are other
 * tests' users, skipped); NULL on timeout. */
static sm_message *next_about(sm_client *c, const char *prefix, int timeout_ms)
{
    for (;;) {
        sm_message *m = NULL;
        if (sm_client_next_event(c, timeout_ms, &m) != SM_CLIENT_OK)
            return NULL;
        if (has_prefix(jstr(m->payload, "username"), prefix))
            return m;
        sm_message_free(m);
    }
}

/* The client's next event about prefix's users is exactly {username, room}. */
static void expect_event(sm_client *c, const char *prefix, const char *action,
                         const char *username, const char *room)
{
    sm_message *m = next_about(c, prefix, 5000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->action, action);
    CU_ASSERT_EQUAL(json_object_size(m->payload), 2);
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "username"), username);
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), room);
    sm_message_free(m);
}

/* No event about prefix's users has reached c: one round trip, then only
 * what is already queued. */
static void expect_no_event(sm_client *c, const char *prefix)
{
    sm_message *r = harness_callf(c, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL(r);
    sm_message_free(r);
    sm_message *m = next_about(c, prefix, 0);
    if (m)
        fprintf(stderr, "\nunexpected %s about %s\n", m->action,
                jstr(m->payload, "username"));
    CU_ASSERT_PTR_NULL(m);
    sm_message_free(m);
}

/* Round trip, then drops every queued event about prefix's users: the
 * events of a test's set-up. */
static void settle(sm_client *c, const char *prefix)
{
    sm_message *r = harness_callf(c, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL(r);
    sm_message_free(r);
    sm_message *m;
    while ((m = next_about(c, prefix, 0)) != NULL)
        sm_message_free(m);
}

/* A successful command's payload (the caller frees the message). */
static sm_message *ok(sm_client *c, const char *action, const char *fmt, const char *arg)
{
    sm_message *m = fmt ? harness_callf(c, action, fmt, "room_name", arg)
                        : harness_callf(c, action, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, action);
    return m;
}

static int users_are2(const json_t *users, const char *a, const char *b)
{
    size_t n = b ? 2 : 1;
    const char *first = json_string_value(json_array_get(users, 0));
    const char *second = json_string_value(json_array_get(users, 1));
    return json_array_size(users) == n && first && strcmp(first, a) == 0 &&
           (!b || (second && strcmp(second, b) == 0));
}

static void register_assigns_general_and_tells_the_room(void)
{
    sm_client *a = registered("ra_alice");
    sm_client *b = registered("ra_bob");
    expect_event(a, "ra_", "user_joined", "ra_bob", "general");
    /* bob is not told about himself, and alice's event came once. */
    expect_no_event(b, "ra_");
    expect_no_event(a, "ra_");
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

static void join_room_elsewhere_sends_user_left_to_old_room(void)
{
    sm_client *a = registered("rb_alice");
    sm_client *b = registered("rb_bob");
    sm_client *c = registered("rb_carol");
    expect_event(a, "rb_", "user_joined", "rb_bob", "general");
    expect_event(a, "rb_", "user_joined", "rb_carol", "general");
    expect_event(b, "rb_", "user_joined", "rb_carol", "general");

    sm_message *m = ok(a, "join_room", "{s:s}", "RbLobby");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "RbLobby");
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "rb_alice", NULL));
    sm_message_free(m);
    expect_event(b, "rb_", "user_left", "rb_alice", "general");
    expect_event(c, "rb_", "user_left", "rb_alice", "general");

    m = ok(b, "join_room", "{s:s}", "rblobby");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "RbLobby");
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "rb_alice", "rb_bob"));
    sm_message_free(m);
    expect_event(a, "rb_", "user_joined", "rb_bob", "RbLobby");
    expect_event(c, "rb_", "user_left", "rb_bob", "general");
    expect_no_event(a, "rb_");
    expect_no_event(b, "rb_");
    expect_no_event(c, "rb_");
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    sm_client_close(c, 1000);
}

static void leave_room_and_get_users(void)
{
    sm_client *a = registered("rc_Bea");
    sm_client *b = registered("rc_adam");
    sm_message *m = ok(a, "join_room", "{s:s}", "rc_room");
    sm_message_free(m);
    m = ok(b, "join_room", "{s:s}", "rc_room");
    sm_message_free(m);
    expect_event(a, "rc_", "user_joined", "rc_adam", "general");
    expect_event(a, "rc_", "user_joined", "rc_adam", "rc_room");
    expect_event(b, "rc_", "user_left", "rc_Bea", "general");

    m = ok(a, "get_users", NULL, NULL);
    CU_ASSERT_EQUAL(json_object_size(m->payload), 2);
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "rc_room");
    /* Sorted without regard to case: "rc_adam" before "rc_Bea". */
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "rc_adam", "rc_Bea"));
    sm_message_free(m);

    m = ok(a, "leave_room", NULL, NULL);
    CU_ASSERT_EQUAL(json_object_size(m->payload), 1);
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "rc_room");
    sm_message_free(m);
    expect_event(b, "rc_", "user_left", "rc_Bea", "rc_room");

    m = harness_callf(a, "get_users", NULL);
    CU_ASSERT_EQUAL(harness_error_code(m), 1009);
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "command"),
                           "get_users");
    sm_message_free(m);
    m = harness_callf(a, "leave_room", NULL);
    CU_ASSERT_EQUAL(harness_error_code(m), 1009);
    sm_message_free(m);
    m = harness_callf(a, "join_room", "{s:s}", "room_name", "no spaces");
    CU_ASSERT_EQUAL(harness_error_code(m), 1004);
    sm_message_free(m);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

static void disconnect_and_logout_send_user_left(void)
{
    sm_client *a = registered("rd_alice");
    sm_client *b = registered("rd_bob");
    sm_client *c = registered("rd_carol");
    sm_message *m = ok(a, "join_room", "{s:s}", "rd_room");
    sm_message_free(m);
    m = ok(b, "join_room", "{s:s}", "rd_room");
    sm_message_free(m);
    m = ok(c, "join_room", "{s:s}", "rd_room");
    sm_message_free(m);
    settle(a, "rd_");

    sm_client_free(b); /* abrupt: no close frame, no logout */
    expect_event(a, "rd_", "user_left", "rd_bob", "rd_room");

    m = ok(c, "logout", NULL, NULL);
    CU_ASSERT_EQUAL(json_object_size(m->payload), 0);
    sm_message_free(m);
    expect_event(a, "rd_", "user_left", "rd_carol", "rd_room");
    /* Logged out, carol can no longer use the rooms. */
    m = harness_callf(c, "get_users", NULL);
    CU_ASSERT_EQUAL(harness_error_code(m), 1002);
    sm_message_free(m);
    expect_no_event(a, "rd_");
    sm_client_close(a, 1000);
    sm_client_close(c, 1000);
}

/* The acting connection's first message is its reply, and events about its
 * own user never reach any of that user's connections. */
static void reply_first_and_no_room_events_for_own_user(void)
{
    sm_client *a1 = registered("re_alice");
    sm_client *b = registered("re_bob");
    expect_event(a1, "re_", "user_joined", "re_bob", "general");
    sm_message *m = ok(b, "join_room", "{s:s}", "re_room");
    sm_message_free(m);
    expect_event(a1, "re_", "user_left", "re_bob", "general");

    /* A second device of alice logs in: bob's room is elsewhere; a1 is hers. */
    sm_client *a2 = connect_to(&srv);
    m = harness_callf(a2, "login", "{s:s, s:s}", "username", "RE_ALICE", "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->action, "login_success");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "assigned_room"),
                           "general");
    sm_message_free(m);
    expect_no_event(a1, "re_");

    /* Alice enters bob's room from a1: bob hears it; on a1 the reply comes
     * first and nothing about alice follows, on a2 nothing at all. */
    uint64_t nonce = 0;
    json_t *p = json_pack("{s:s}", "room_name", "re_room");
    CU_ASSERT_EQUAL_FATAL(sm_client_send(a1, "join_room", p, &nonce), SM_CLIENT_OK);
    json_decref(p);
    expect_event(b, "re_", "user_joined", "re_alice", "re_room");
    for (;;) {
        m = NULL;
        CU_ASSERT_EQUAL_FATAL(sm_client_recv(a1, 5000, &m), SM_CLIENT_OK);
        const char *who = jstr(m->payload, "username");
        if (strcmp(m->type, "event") == 0 && !has_prefix(who, "re_")) {
            sm_message_free(m); /* another test's leftovers */
            continue;
        }
        break;
    }
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, "join_room");
    char want[24];
    snprintf(want, sizeof want, "%llu", (unsigned long long)nonce);
    CU_ASSERT_STRING_EQUAL(m->reply_to ? m->reply_to : "<none>", want);
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "re_alice", "re_bob"));
    sm_message_free(m);
    expect_no_event(a1, "re_");
    expect_no_event(a2, "re_");

    /* a2 (still in general) follows: bob is told nothing new. */
    m = ok(a2, "join_room", "{s:s}", "RE_ROOM");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "re_room");
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "re_alice", "re_bob"));
    sm_message_free(m);
    expect_no_event(b, "re_");
    /* a1 closes: alice is still in the room on a2. */
    sm_client_close(a1, 1000);
    m = ok(b, "get_users", NULL, NULL);
    CU_ASSERT_TRUE(users_are2(json_object_get(m->payload, "users"), "re_alice", "re_bob"));
    sm_message_free(m);
    /* a2 closes: now alice has left. */
    sm_client_close(a2, 1000);
    expect_event(b, "re_", "user_left", "re_alice", "re_room");
    sm_client_close(b, 1000);
}

/* A room created on one run exists on the next with its first spelling;
 * with an empty default_room nobody is put in a room. */
static void rooms_outlive_restart_and_empty_default_assigns_null(void)
{
    harness_server first = {0}, second = {0}, third = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&first, AUTH_AND_ROOMS), 0);
    sm_client *a = registered_on(&first, "rf_alice", "general");
    sm_message *m = ok(a, "join_room", "{s:s}", "KeptRoom");
    sm_message_free(m);
    sm_client_close(a, 1000);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&first, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);

    int started = harness_start_on(&second, &first, AUTH_AND_ROOMS
                                   "rooms = { default_room = \"\"; allow_create = false; };\n",
                                   NULL);
    CU_ASSERT_EQUAL(started, 0);
    if (started == 0) {
        sm_client *b = registered_on(&second, "rf_bob", NULL);
        m = harness_callf(b, "get_users", NULL);
        CU_ASSERT_EQUAL(harness_error_code(m), 1009);
        sm_message_free(m);
        /* Creation is off and nothing is listed: the rooms of the earlier
         * run are not joinable now. */
        m = harness_callf(b, "join_room", "{s:s}", "room_name", "keptroom");
        CU_ASSERT_EQUAL(harness_error_code(m), 1009);
        sm_message_free(m);
        sm_client_close(b, 1000);
    }
    CU_ASSERT_EQUAL(harness_cleanup(&second), 0);

    started = harness_start_on(&third, &first, AUTH_AND_ROOMS, NULL);
    CU_ASSERT_EQUAL(started, 0);
    if (started == 0) {
        sm_client *c = connect_to(&third);
        m = harness_callf(c, "login", "{s:s, s:s}", "username", "rf_alice", "password", PASSWORD);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        CU_ASSERT_STRING_EQUAL(m->action, "login_success");
        sm_message_free(m);
        m = ok(c, "join_room", "{s:s}", "keptroom");
        CU_ASSERT_STRING_EQUAL(jstr(m->payload, "room"), "KeptRoom");
        sm_message_free(m);
        sm_client_close(c, 1000);
    }
    CU_ASSERT_EQUAL(harness_cleanup(&third), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&first), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(register_assigns_general_and_tells_the_room),
        SM_TEST(join_room_elsewhere_sends_user_left_to_old_room),
        SM_TEST(leave_room_and_get_users),
        SM_TEST(disconnect_and_logout_send_user_left),
        SM_TEST(reply_first_and_no_room_events_for_own_user),
        SM_TEST(rooms_outlive_restart_and_empty_default_assigns_null),
        SM_TEST_END,
    };
    return sm_test_run("integration_rooms", cases, init, fini);
}
