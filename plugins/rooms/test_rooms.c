/* The rooms plugin on the test host: the default room at login, join_room,
 * leave_room, get_users, list_rooms, per-user room events over per-session membership,
 * restricted rooms, name rules, persistence and configuration checks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

/* A string member, or "<none>" so a failing comparison reports instead of
 * passing NULL to strcmp. */
static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static sm_testhost *start(const char *config_text)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(config_text, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, ROOMS_SO, "rooms"), SM_OK);
    return th;
}

static int load_status(const char *config_text)
{
    sm_testhost *th = NULL;
    if (sm_testhost_new(config_text, &th) != SM_OK)
        return 1000; /* not a plugin status: the assertion shows it */
    int rc = sm_testhost_load(th, ROOMS_SO, "rooms");
    sm_testhost_free(th);
    return rc;
}

static sm_session_id user(sm_testhost *th, const char *name)
{
    static int64_t next_id = 1;
    sm_session_id s = sm_testhost_connect_user(th, name, next_id++);
    CU_ASSERT_FATAL(s != 0);
    return s;
}

/* True if the array holds exactly the names given (NULL-terminated), in order. */
static int names_are(const json_t *array, ...)
{
    va_list ap;
    va_start(ap, array);
    size_t i = 0;
    int ok = json_is_array(array);
    for (const char *want; ok && (want = va_arg(ap, const char *)) != NULL; i++) {
        const char *got = json_string_value(json_array_get(array, i));
        ok = got && strcmp(got, want) == 0;
    }
    va_end(ap);
    if (ok && json_array_size(array) != i)
        ok = 0;
    if (!ok) {
        char *text = json_dumps(array, JSON_COMPACT);
        fprintf(stderr, "\nusers: %s\n", text ? text : "(null)");
        free(text);
    }
    return ok;
}

/* Sends the command, checks it got a response with the action's name and
 * returns its payload (owned by the caller). */
static json_t *ok_call(sm_testhost *th, sm_session_id s, const char *action, const char *payload)
{
    json_t *r = sm_testhost_call(th, s, action, payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(jstr(r, "type"), "response");
    CU_ASSERT_STRING_EQUAL(jstr(r, "action"), action);
    json_t *p = json_incref(json_object_get(r, "payload"));
    json_decref(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* Sends the command and checks the error code and `command` field; returns
 * the error's message in msg (may be NULL). */
static void expect_error(sm_testhost *th, sm_session_id s, const char *action,
                         const char *payload, int code, char *msg, size_t msg_len)
{
    json_t *r = sm_testhost_call(th, s, action, payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    json_t *p = json_object_get(r, "payload");
    CU_ASSERT_STRING_EQUAL(jstr(r, "type"), "error");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "code")), code);
    CU_ASSERT_STRING_EQUAL(jstr(p, "command"), action);
    if (msg) {
        const char *m = jstr(p, "message");
        snprintf(msg, msg_len, "%s", m ? m : "");
    }
    json_decref(r);
}

/* The session's next message is the event {username, room} (exactly). */
static void expect_event(sm_testhost *th, sm_session_id s, const char *action,
                         const char *username, const char *room)
{
    json_t *m = sm_testhost_next(th, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(jstr(m, "type"), "event");
    CU_ASSERT_STRING_EQUAL(jstr(m, "action"), action);
    json_t *p = json_object_get(m, "payload");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_STRING_EQUAL(jstr(p, "username"), username);
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), room);
    json_decref(m);
}

static void expect_quiet(sm_testhost *th, sm_session_id s)
{
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s), 0);
}

/* get_users answers {room, users} with these users (NULL-terminated after room). */
static void expect_users(sm_testhost *th, sm_session_id s, const char *room, const char *u1,
                         const char *u2, const char *u3)
{
    json_t *p = ok_call(th, s, "get_users", "{}");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), room);
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), u1, u2, u3, NULL));
    json_decref(p);
}

static void login_puts_session_in_general_and_tells_others(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    expect_quiet(th, alice);
    expect_users(th, alice, "general", "alice", NULL, NULL);
    sm_session_id bob = user(th, "bob");
    expect_event(th, alice, "user_joined", "bob", "general");
    expect_quiet(th, alice);
    expect_quiet(th, bob);
    expect_users(th, bob, "general", "alice", "bob", NULL);
    sm_testhost_free(th);
}

static void join_room_replies_with_room_and_users_including_caller(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    sm_testhost_clear(th);
    json_t *p = ok_call(th, bob, "join_room", "{\"room_name\":\"lobby\"}");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "lobby");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "bob", NULL));
    json_decref(p);
    /* The acting session gets the reply, not the event. */
    expect_quiet(th, bob);
    expect_event(th, alice, "user_left", "bob", "general");
    expect_quiet(th, alice);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"lobby\"}");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", "bob", NULL));
    json_decref(p);
    expect_event(th, bob, "user_joined", "alice", "lobby");
    expect_quiet(th, bob);
    expect_quiet(th, alice);
    sm_testhost_free(th);
}

static void join_elsewhere_tells_old_and_new_rooms(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    sm_session_id carol = user(th, "carol");
    json_t *p = ok_call(th, carol, "join_room", "{\"room_name\":\"dev\"}");
    json_decref(p);
    sm_testhost_clear(th);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"dev\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "dev");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", "carol", NULL));
    json_decref(p);
    expect_event(th, bob, "user_left", "alice", "general");
    expect_event(th, carol, "user_joined", "alice", "dev");
    expect_quiet(th, alice);
    expect_quiet(th, bob);
    expect_quiet(th, carol);
    expect_users(th, bob, "general", "bob", NULL, NULL);
    sm_testhost_free(th);
}

static void rejoining_current_room_changes_nothing(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    sm_testhost_clear(th);
    /* Any spelling names the same room, still shown as first written. */
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"GENERAL\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "general");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", "bob", NULL));
    json_decref(p);
    expect_quiet(th, alice);
    expect_quiet(th, bob);
    expect_users(th, bob, "general", "alice", "bob", NULL);
    sm_testhost_free(th);
}

static void second_device_of_user_causes_no_room_events(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id bob = user(th, "bob");
    sm_session_id alice1 = user(th, "alice");
    sm_testhost_clear(th);
    sm_session_id alice2 = user(th, "alice");
    expect_quiet(th, bob);    /* alice was already in general */
    expect_quiet(th, alice1); /* her own user is not "another user" */
    expect_users(th, bob, "general", "alice", "bob", NULL);

    /* The first device leaving: alice is still in general. */
    json_t *p = ok_call(th, alice1, "join_room", "{\"room_name\":\"lobby\"}");
    json_decref(p);
    expect_quiet(th, bob);
    expect_quiet(th, alice2);
    expect_users(th, bob, "general", "alice", "bob", NULL);

    /* The second device follows: now she has left general, and entering
     * lobby where her first device is tells nobody there. */
    p = ok_call(th, alice2, "join_room", "{\"room_name\":\"lobby\"}");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", NULL));
    json_decref(p);
    expect_event(th, bob, "user_left", "alice", "general");
    expect_quiet(th, bob);
    expect_quiet(th, alice1);
    expect_users(th, bob, "general", "bob", NULL, NULL);
    sm_testhost_free(th);
}

static void last_device_disconnecting_sends_user_left(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id bob = user(th, "bob");
    sm_session_id alice1 = user(th, "alice");
    sm_session_id alice2 = user(th, "alice");
    sm_testhost_clear(th);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, alice1), SM_OK);
    expect_quiet(th, bob);
    expect_quiet(th, alice2);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, alice2), SM_OK);
    expect_event(th, bob, "user_left", "alice", "general");
    expect_quiet(th, bob);
    expect_users(th, bob, "general", "bob", NULL, NULL);
    sm_testhost_free(th);
}

static void leave_room_replies_room_and_tells_others(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    sm_testhost_clear(th);
    json_t *p = ok_call(th, alice, "leave_room", "{}");
    CU_ASSERT_EQUAL(json_object_size(p), 1);
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "general");
    json_decref(p);
    expect_quiet(th, alice);
    expect_event(th, bob, "user_left", "alice", "general");
    expect_users(th, bob, "general", "bob", NULL, NULL);
    /* In no room now. */
    expect_error(th, alice, "get_users", "{}", 1009, NULL, 0);
    expect_error(th, alice, "leave_room", "{}", 1009, NULL, 0);
    /* Joining again works from no room, and tells bob. */
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"general\"}");
    json_decref(p);
    expect_event(th, bob, "user_joined", "alice", "general");
    sm_testhost_free(th);
}

static void last_member_leaving_keeps_the_room(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"Lobby\"}");
    json_decref(p);
    p = ok_call(th, alice, "leave_room", "{}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "Lobby");
    json_decref(p);
    /* Empty, but it exists and keeps its first spelling. */
    p = ok_call(th, bob, "join_room", "{\"room_name\":\"LOBBY\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "Lobby");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "bob", NULL));
    json_decref(p);
    sm_testhost_free(th);
}

static void get_users_lists_each_user_once_sorted_without_case(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id bob = user(th, "bob");
    user(th, "Alice");
    user(th, "carol");
    user(th, "Alice");
    user(th, "bob");
    expect_users(th, bob, "general", "Alice", "bob", "carol");
    json_t *p = ok_call(th, bob, "join_room", "{\"room_name\":\"general\"}");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "Alice", "bob", "carol", NULL));
    json_decref(p);
    sm_testhost_free(th);
}

static void room_names_unique_without_case_shown_as_first_written(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"MyRoom\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "MyRoom");
    json_decref(p);
    sm_testhost_clear(th);
    p = ok_call(th, bob, "join_room", "{\"room_name\":\"myROOM\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "MyRoom");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", "bob", NULL));
    json_decref(p);
    expect_event(th, alice, "user_joined", "bob", "MyRoom");
    expect_users(th, alice, "MyRoom", "alice", "bob", NULL);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE name_lower = "
                                              "'myroom' AND name = 'MyRoom'", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2); /* general and MyRoom */
    sm_testhost_free(th);
}

static void join_room_rejects_bad_names_with_1004(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    sm_testhost_clear(th);
    static const char *const bad[] = {
        "{}",
        "{\"room_name\":null}",
        "{\"room_name\":5}",
        "{\"room_name\":\"\"}",
        "{\"room_name\":\"a b\"}",
        "{\"room_name\":\"room/1\"}",
        "{\"room_name\":\"caf\\u00e9\"}",
        "{\"room_name\":\"abcdefghijabcdefghijabcdefghijabc\"}", /* 33 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char msg[256];
        expect_error(th, alice, "join_room", bad[i], 1004, msg, sizeof msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "room_name"));
    }
    /* Nothing moved. */
    expect_quiet(th, bob);
    expect_users(th, alice, "general", "alice", "bob", NULL);
    /* The longest and the odd-but-valid names are fine. */
    json_t *p = ok_call(th, alice, "join_room",
                        "{\"room_name\":\"abcdefghijabcdefghijabcdefghijab\"}");
    json_decref(p);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"-._\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "-._");
    json_decref(p);
    sm_testhost_free(th);
}

static void room_actions_need_login(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id anon = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(anon != 0);
    expect_error(th, anon, "join_room", "{\"room_name\":\"general\"}", 1002, NULL, 0);
    /* Login is checked before the payload. */
    expect_error(th, anon, "join_room", "{}", 1002, NULL, 0);
    expect_error(th, anon, "leave_room", "{}", 1002, NULL, 0);
    expect_error(th, anon, "get_users", "{}", 1002, NULL, 0);
    sm_session_id alice = user(th, "alice");
    expect_users(th, alice, "general", "alice", NULL, NULL);
    sm_testhost_free(th);
}

static void restricted_rooms_only_listed_and_default_exist(void)
{
    sm_testhost *th = start("rooms = { allow_create = false; rooms = [\"Lobby\", \"dev\"]; };");
    sm_session_id alice = user(th, "alice");
    expect_error(th, alice, "join_room", "{\"room_name\":\"nowhere\"}", 1009, NULL, 0);
    /* A refused join leaves the session where it was. */
    expect_users(th, alice, "general", "alice", NULL, NULL);
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"lobby\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "Lobby");
    json_decref(p);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"DEV\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "dev");
    json_decref(p);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"general\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "general");
    json_decref(p);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 3);
    sm_testhost_free(th);
}

static void configured_rooms_exist_from_start(void)
{
    sm_testhost *th = start("rooms = { default_room = \"Main\"; rooms = [\"Lobby\", \"lobby\"]; };");
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE "
                                              "(name = 'Main' AND name_lower = 'main') OR "
                                              "(name = 'Lobby' AND name_lower = 'lobby')", &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    sm_session_id alice = user(th, "alice");
    expect_users(th, alice, "Main", "alice", NULL, NULL);
    sm_testhost_free(th);
}

static void empty_default_room_puts_nobody_in_a_room(void)
{
    sm_testhost *th = start("rooms = { default_room = \"\"; };");
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    expect_quiet(th, alice);
    expect_error(th, alice, "get_users", "{}", 1009, NULL, 0);
    expect_error(th, alice, "leave_room", "{}", 1009, NULL, 0);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 0);
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"general\"}");
    CU_ASSERT_TRUE(names_are(json_object_get(p, "users"), "alice", NULL));
    json_decref(p);
    expect_quiet(th, bob);
    sm_testhost_free(th);
}

/* SIGHUP: the new list and default hold for the next join and login; a
 * session stays in its room; a bad name refuses the reload. */
static void reload_changes_rooms_and_default(void)
{
    sm_testhost *th = start("rooms = { allow_create = false; rooms = [\"Lobby\"]; };");
    sm_session_id alice = user(th, "alice");
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"lobby\"}");
    json_decref(p);
    expect_error(th, alice, "join_room", "{\"room_name\":\"dev\"}", 1009, NULL, 0);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "rooms = { allow_create = false; "
                                           "default_room = \"Main\"; rooms = [\"dev\"]; };"),
                    SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "rooms = { default_room = \"no spaces\"; };"),
                    SM_ERROR);
    /* Alice is still in Lobby, which the list no longer names. */
    expect_users(th, alice, "Lobby", "alice", NULL, NULL);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"DEV\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "dev");
    json_decref(p);
    expect_error(th, alice, "join_room", "{\"room_name\":\"lobby\"}", 1009, NULL, 0);
    sm_session_id bob = user(th, "bob");
    expect_users(th, bob, "Main", "bob", NULL, NULL);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE name IN "
                                              "('Main', 'dev')", &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    sm_testhost_free(th);
}

static void rooms_persist_in_table(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"Lobby\"}");
    json_decref(p);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, alice), SM_OK);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE name = 'Lobby' "
                                              "AND name_lower = 'lobby' AND created_at > 0", &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE name = "
                                              "'general'", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT MAX(version) FROM sm_migrations WHERE "
                                              "owner = 'rooms'", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    sm_testhost_free(th);
}

static void invalid_configuration_fails_init(void)
{
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { default_room = \"bad name\"; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { default_room = 5; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { default_room = "
                                    "\"abcdefghijabcdefghijabcdefghijabc\"; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { allow_create = 1; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { rooms = [\"ok\", \"not ok\"]; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { rooms = [\"ok\", \"\"]; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("rooms = { rooms = \"ok\"; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("rooms = { default_room = \"x\"; allow_create = false; "
                                "rooms = [\"a.b-c_d\"]; };"), SM_OK);
}

static void reconnecting_user_reenters_default_room(void)
{
    /* A user whose only session was elsewhere leaves nothing here; the new
     * login lands in the default room like any other. */
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    json_t *p = ok_call(th, bob, "join_room", "{\"room_name\":\"dev\"}");
    json_decref(p);
    sm_testhost_clear(th);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, bob), SM_OK);
    expect_quiet(th, alice); /* bob was not in her room */
    sm_session_id bob2 = user(th, "bob");
    expect_event(th, alice, "user_joined", "bob", "general");
    expect_users(th, bob2, "general", "alice", "bob", NULL);
    sm_testhost_free(th);
}

/* list_rooms: every room, sorted without regard to case, with its number
 * of users (each user once), empty rooms included; without room creation
 * only the rooms that can be joined. */
static void list_rooms_counts_users_and_keeps_empty_rooms(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id alice = user(th, "alice");
    sm_session_id alice2 = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    json_t *p = ok_call(th, bob, "join_room", "{\"room_name\":\"Zoo\"}");
    json_decref(p);
    p = ok_call(th, bob, "join_room", "{\"room_name\":\"attic\"}");
    json_decref(p);
    (void)alice2;
    p = ok_call(th, alice, "list_rooms", "{}");
    char *text = json_dumps(p, JSON_COMPACT);
    CU_ASSERT_STRING_EQUAL(text, "{\"rooms\":[{\"room\":\"attic\",\"users\":1},"
                                 "{\"room\":\"general\",\"users\":1},{\"room\":\"Zoo\",\"users\":0}],"
                                 "\"more\":false}");
    free(text);
    json_decref(p);
    sm_testhost_free(th);
    /* Rooms created before creation was turned off are not listed. */
    th = start("rooms = { allow_create = false; rooms = [\"Lobby\"]; };");
    CU_ASSERT_EQUAL(sm_testhost_exec(th, "INSERT INTO rooms (name, name_lower, created_at) "
                                         "VALUES ('old', 'old', 1)"), SM_OK);
    alice = user(th, "alice");
    p = ok_call(th, alice, "list_rooms", "{}");
    text = json_dumps(p, JSON_COMPACT);
    CU_ASSERT_STRING_EQUAL(text, "{\"rooms\":[{\"room\":\"general\",\"users\":1},"
                                 "{\"room\":\"Lobby\",\"users\":0}],\"more\":false}");
    free(text);
    json_decref(p);
    sm_testhost_free(th);
}

/* ---- the schema (the same on SQLite and PostgreSQL) ----------------------- */

/* A database at version 1, as servers before version 2 left it (the
 * engine's id included): version 2 keeps every room with its spelling and
 * created_at, the rooms still resolve without regard to case, and new
 * rooms are created without an id (on PostgreSQL version 1's id had no
 * default, so no room could be created at all). */
static void upgrade_from_version_1_keeps_the_rooms(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(th, "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                             " name_lower TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);"
                             "INSERT INTO sm_migrations (owner, version, applied_at)"
                             " VALUES ('rooms', 1, 0);"
                             "INSERT INTO rooms (id, name, name_lower, created_at)"
                             " VALUES (3, 'general', 'general', 5);"
                             "INSERT INTO rooms (id, name, name_lower, created_at)"
                             " VALUES (7, 'Lobby', 'lobby', 6.5)"),
        SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, ROOMS_SO, "rooms"), SM_OK);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT MAX(version) FROM sm_migrations WHERE "
                                              "owner = 'rooms'", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms WHERE (name = "
                                              "'general' AND created_at = 5) OR (name = 'Lobby'"
                                              " AND name_lower = 'lobby' AND created_at = 6.5)",
                                          &n), SM_OK);
    CU_ASSERT_EQUAL(n, 2);
    sm_session_id alice = user(th, "alice");
    json_t *p = ok_call(th, alice, "join_room", "{\"room_name\":\"LOBBY\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "Lobby");
    json_decref(p);
    p = ok_call(th, alice, "join_room", "{\"room_name\":\"Fresh\"}");
    CU_ASSERT_STRING_EQUAL(jstr(p, "room"), "Fresh");
    json_decref(p);
    p = ok_call(th, alice, "list_rooms", "{}");
    char *text = json_dumps(p, JSON_COMPACT);
    CU_ASSERT_STRING_EQUAL(text, "{\"rooms\":[{\"room\":\"Fresh\",\"users\":1},"
                                 "{\"room\":\"general\",\"users\":0},"
                                 "{\"room\":\"Lobby\",\"users\":0}],\"more\":false}");
    free(text);
    json_decref(p);
    /* The same name in any case is still one room: name_lower is the key. */
    CU_ASSERT_NOT_EQUAL(sm_testhost_exec(th, "INSERT INTO rooms (name, name_lower, created_at)"
                                             " VALUES ('FRESH', 'fresh', 1)"),
                        SM_OK);
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 3);
    sm_testhost_free(th);
}

/* The result of an admin command that succeeded (owned by the answer). */
static const json_t *admin_ok(const json_t *answer)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(answer);
    CU_ASSERT_TRUE(json_is_true(json_object_get(answer, "ok")));
    return json_object_get(answer, "result");
}

static json_t *admin_delete(sm_testhost *th, const char *room)
{
    json_t *args = json_pack("{s:s}", "room", room);
    json_t *answer = sm_testhost_admin(th, "rooms.delete", args);
    json_decref(args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(answer);
    return answer;
}

/* safemessenger-admin rooms list and rooms delete: the list sorted
 * without regard to case with each room's created_at, users and whether
 * it is configured; a delete moves the members out, and a second one
 * finds nothing (the deleted row count decides). */
static void admin_lists_and_deletes_rooms(void)
{
    sm_testhost *th = start("rooms = { rooms = [\"Lobby\"]; };");
    sm_session_id alice = user(th, "alice");
    sm_session_id bob = user(th, "bob");
    json_decref(ok_call(th, bob, "join_room", "{\"room_name\":\"attic\"}"));
    json_decref(ok_call(th, bob, "join_room", "{\"room_name\":\"general\"}"));
    json_decref(ok_call(th, alice, "join_room", "{\"room_name\":\"Zoo\"}"));
    sm_testhost_clear(th);

    json_t *answer = sm_testhost_admin(th, "rooms.list", NULL);
    const json_t *rooms = json_object_get(admin_ok(answer), "rooms");
    static const char *const names[] = {"attic", "general", "Lobby", "Zoo"};
    static const json_int_t users[] = {0, 1, 0, 1};
    static const int configured[] = {0, 1, 1, 0};
    CU_ASSERT_EQUAL(json_array_size(rooms), 4);
    for (size_t i = 0; i < 4 && i < json_array_size(rooms); i++) {
        const json_t *row = json_array_get(rooms, i);
        CU_ASSERT_STRING_EQUAL(jstr(row, "room"), names[i]);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(row, "users")), users[i]);
        CU_ASSERT_EQUAL(json_is_true(json_object_get(row, "configured")), configured[i]);
        CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(row, "created_at")),
                               sm_testhost_now(th), 0.001);
    }
    json_decref(answer);

    answer = admin_delete(th, "ZOO");
    const json_t *result = admin_ok(answer);
    CU_ASSERT_STRING_EQUAL(jstr(result, "room"), "ZOO");
    CU_ASSERT_TRUE(json_is_true(json_object_get(result, "deleted")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(result, "sessions_moved_out")), 1);
    json_decref(answer);
    expect_error(th, alice, "get_users", "{}", 1009, NULL, 0);
    answer = admin_delete(th, "zoo");
    CU_ASSERT_STRING_EQUAL(jstr(answer, "status"), "not_found");
    json_decref(answer);
    answer = admin_delete(th, "lobby");
    CU_ASSERT_STRING_EQUAL(jstr(answer, "status"), "state");
    json_decref(answer);
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM rooms", &n), SM_OK);
    CU_ASSERT_EQUAL(n, 3);
    expect_quiet(th, bob);
    sm_testhost_free(th);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(login_puts_session_in_general_and_tells_others),
        SM_TEST(join_room_replies_with_room_and_users_including_caller),
        SM_TEST(join_elsewhere_tells_old_and_new_rooms),
        SM_TEST(rejoining_current_room_changes_nothing),
        SM_TEST(second_device_of_user_causes_no_room_events),
        SM_TEST(last_device_disconnecting_sends_user_left),
        SM_TEST(leave_room_replies_room_and_tells_others),
        SM_TEST(last_member_leaving_keeps_the_room),
        SM_TEST(get_users_lists_each_user_once_sorted_without_case),
        SM_TEST(room_names_unique_without_case_shown_as_first_written),
        SM_TEST(join_room_rejects_bad_names_with_1004),
        SM_TEST(room_actions_need_login),
        SM_TEST(restricted_rooms_only_listed_and_default_exist),
        SM_TEST(configured_rooms_exist_from_start),
        SM_TEST(empty_default_room_puts_nobody_in_a_room),
        SM_TEST(rooms_persist_in_table),
        SM_TEST(reload_changes_rooms_and_default),
        SM_TEST(invalid_configuration_fails_init),
        SM_TEST(reconnecting_user_reenters_default_room),
        SM_TEST(list_rooms_counts_users_and_keeps_empty_rooms),
        SM_TEST(upgrade_from_version_1_keeps_the_rooms),
        SM_TEST(admin_lists_and_deletes_rooms),
        SM_TEST_END,
    };
    return sm_test_run("plugin_rooms", cases, NULL, NULL);
}
