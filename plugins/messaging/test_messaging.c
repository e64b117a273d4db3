/* The messaging plugin on the test host: every action of PROTOCOL.md
 * section 7 it provides, its errors, the policy hook, the unread cap,
 * expiry, retention and the purge, and the unread_count attribute at
 * login.
 *
 * auth_users is created here as docs/PLUGINS.md section 17 gives it; a test-only
 * helper plugin (test_room_helper.c) puts sessions in rooms the way the
 * rooms plugin does, and policy_veto denies private messages to "denied"
 * and drops those to "blocked". Suites on blocks that come and go load the
 * real friends plugin instead, whose policy drops what a blocked user
 * sends.
 *
 * services.plugin_messaging_pg runs it again on PostgreSQL, with cases of
 * its own where another node of a cluster writes meanwhile. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"
#include "service_url.h"

#define NOW0 SM_TESTHOST_EPOCH
#define BOB_KEY                                                                                    \
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC "   \
    "KEY-----\n"

/* The fixture's connection string when the host runs on PostgreSQL
 * (SM_TESTHOST_POSTGRES_URL_FILE, services.plugin_messaging_pg), "" on
 * SQLite. */
static char pg_base[1024];

static int on_postgres(void)
{
    return pg_base[0] != '\0';
}

/* The core's rate limit would answer 1008 to the long loops below. */
#define FAST_LIMITS "limits = { commands_per_second = 100000; command_burst = 100000; };\n"

static const char *const users_sql =
    "CREATE TABLE auth_users(id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
    " username_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, public_key TEXT,"
    " created_at REAL NOT NULL);"
    "INSERT INTO auth_users VALUES (1, 'alice', 'alice', 'x', NULL, 0);"
    "INSERT INTO auth_users VALUES (2, 'Bob', 'bob', 'x', '" BOB_KEY "', 0);"
    "INSERT INTO auth_users VALUES (3, 'carol', 'carol', 'x', NULL, 0);"
    "INSERT INTO auth_users VALUES (4, 'denied', 'denied', 'x', NULL, 0);"
    "INSERT INTO auth_users VALUES (5, 'blocked', 'blocked', 'x', NULL, 0);"
    "INSERT INTO auth_users VALUES (6, 'dave', 'dave', 'x', NULL, 0);";

/* Loads a plugin. A failure frees the host before it ends the test:
 * there is one host at a time, and the next tests need theirs. */
static void load(sm_testhost *th, const char *so, const char *name)
{
    if (sm_testhost_load(th, so, name) == SM_OK)
        return;
    sm_testhost_free(th);
    CU_FAIL_FATAL("a plugin did not load (see the log above)");
}

/* The users above, and users_table to serve them as auth would (the
 * users service: messaging reads no table of auth's). */
static void add_users(sm_testhost *th)
{
    CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, users_sql), SM_OK);
    load(th, USERS_TABLE_SO, "users_table");
}

/* A host with auth_users, a policy (policy_veto, or friends when
 * `policy` says so), the room helper and messaging (extra: config text). */
static sm_testhost *start_with(const char *extra, const char *policy)
{
    char config[1024];
    snprintf(config, sizeof config, FAST_LIMITS "%s", extra ? extra : "");
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(config, &th), SM_OK);
    add_users(th);
    int friends = strcmp(policy, "friends") == 0;
    load(th, friends ? FRIENDS_SO : POLICY_VETO_SO, policy);
    load(th, ROOM_HELPER_SO, "test_room_helper");
    load(th, MESSAGING_SO, "messaging");
    return th;
}

static sm_testhost *start(const char *extra)
{
    return start_with(extra, "policy_veto");
}

static sm_session_id user(sm_testhost *th, const char *name, int64_t id)
{
    sm_session_id s = sm_testhost_connect_user(th, name, id);
    CU_ASSERT_FATAL(s != 0);
    return s;
}

/* The payload text from a printf format (may be long: content). */
static char *vformat(const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (text)
        vsnprintf(text, (size_t)n + 1, fmt, ap);
    return text;
}

static json_t *callf(sm_testhost *th, sm_session_id s, const char *action, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = vformat(fmt, ap);
    va_end(ap);
    json_t *r = text ? sm_testhost_call(th, s, action, text) : NULL;
    free(text);
    return r;
}

static json_t *payload_of(const json_t *m)
{
    return json_object_get(m, "payload");
}

/* A string member, or "(absent)": CU_ASSERT_STRING_EQUAL must never see
 * NULL (strcmp), so a missing field fails the assertion cleanly. */
static const char *str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "(absent)";
}

static json_int_t integer(const json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

/* Asserts a response with this action; returns its payload (owned by r). */
static json_t *expect_response(const json_t *r, const char *action)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "type"), "response");
    CU_ASSERT_STRING_EQUAL(str(r, "action"), action);
    return payload_of(r);
}

/* Asserts an error with code and command, then frees r. */
static void expect_error(json_t *r, int code, const char *command)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(r, "type"), "error");
    CU_ASSERT_STRING_EQUAL(str(r, "action"), "error");
    CU_ASSERT_EQUAL(integer(payload_of(r), "code"), code);
    CU_ASSERT_STRING_EQUAL(str(payload_of(r), "command"), command);
    if (integer(payload_of(r), "code") != code)
        fprintf(stderr, "unexpected error: %s\n", str(payload_of(r), "message"));
    json_decref(r);
}

static void expect_error_message(json_t *r, int code, const char *command, const char *message)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str(payload_of(r), "message"), message);
    expect_error(r, code, command);
}

static void enter(sm_testhost *th, sm_session_id s, const char *room)
{
    json_t *r = callf(th, s, "test_enter_room", "{\"room\": \"%s\"}", room);
    expect_response(r, "test_enter_room");
    json_decref(r);
}

static int64_t count_rows(sm_testhost *th, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM messaging_messages%s%s", where ? " WHERE " : "",
             where ? where : "");
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, sql, &n), SM_OK);
    return n;
}

/* Sends a private message and returns its id (asserting message_delivered). */
static json_int_t pm(sm_testhost *th, sm_session_id from, const char *to, const char *extra)
{
    json_t *r = callf(th, from, "private_message",
                      "{\"recipient\": \"%s\", \"content\": \"hi\", \"encrypted\": false%s}", to,
                      extra ? extra : "");
    json_t *p = expect_response(r, "message_delivered");
    json_int_t id = integer(p, "message_id");
    CU_ASSERT_TRUE(id > 0);
    json_decref(r);
    return id;
}

static json_t *take_event(sm_testhost *th, sm_session_id s, const char *action)
{
    json_t *m = sm_testhost_next(th, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(str(m, "type"), "event");
    CU_ASSERT_STRING_EQUAL(str(m, "action"), action);
    return m;
}

/* ---- public_message and send_message ----------------------------------- */

static void public_message_reaches_every_room_session_reply_first(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2), c = user(th, "carol", 3);
    sm_session_id d = user(th, "dave", 6), nobody = user(th, "carol", 3);
    enter(th, a, "General");
    enter(th, b, "general");
    enter(th, c, "GENERAL");
    enter(th, d, "other");
    sm_testhost_clear(th);

    uint64_t nonce = sm_testhost_send(th, a, "public_message", "{\"content\": \"hello all\"}");
    CU_ASSERT_FATAL(nonce != 0);
    json_t *r = sm_testhost_next(th, a); /* the reply comes before the event */
    json_t *p = expect_response(r, "public_message");
    CU_ASSERT_EQUAL(json_object_size(p), 3);
    json_int_t id = integer(p, "id");
    CU_ASSERT_TRUE(id > 0);
    CU_ASSERT_STRING_EQUAL(str(p, "room"), "General");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(p, "timestamp")), NOW0, 1e-6);
    json_decref(r);

    sm_session_id members[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        json_t *ev = take_event(th, members[i], "public_message");
        json_t *e = payload_of(ev);
        CU_ASSERT_EQUAL(json_object_size(e), 5);
        CU_ASSERT_EQUAL(integer(e, "id"), id);
        CU_ASSERT_STRING_EQUAL(str(e, "sender"), "alice");
        CU_ASSERT_STRING_EQUAL(str(e, "content"), "hello all");
        CU_ASSERT_STRING_EQUAL(str(e, "room"), "General");
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(e, "timestamp")), NOW0, 1e-6);
        json_decref(ev);
        CU_ASSERT_EQUAL(sm_testhost_pending(th, members[i]), 0);
    }
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, nobody), 0);
    CU_ASSERT_EQUAL(count_rows(th, "kind = 'public' AND room_lower = 'general'"), 1);
    sm_testhost_free(th);
}

static void public_message_from_no_room_is_1009(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    expect_error(callf(th, a, "public_message", "{\"content\": \"x\"}"), 1009, "public_message");
    enter(th, a, "general");
    json_t *r = callf(th, a, "test_leave_room", "{}");
    json_decref(r);
    expect_error(callf(th, a, "public_message", "{\"content\": \"x\"}"), 1009, "public_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    sm_testhost_free(th);
}

static void send_message_must_name_the_current_room(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    expect_error(callf(th, a, "send_message", "{\"room\": \"general\", \"content\": \"x\"}"), 1002,
                 "send_message");
    enter(th, a, "General");
    enter(th, b, "general");
    expect_error(callf(th, a, "send_message", "{\"room\": \"other\", \"content\": \"x\"}"), 1002,
                 "send_message");
    expect_error(callf(th, a, "send_message", "{\"room\": \"a b\", \"content\": \"x\"}"), 1004,
                 "send_message");
    expect_error(callf(th, a, "send_message", "{\"content\": \"x\"}"), 1004, "send_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);

    json_t *r = callf(th, a, "send_message", "{\"room\": \"gEnErAl\", \"content\": \"named\"}");
    json_t *p = expect_response(r, "public_message");
    CU_ASSERT_STRING_EQUAL(str(p, "room"), "General");
    json_int_t id = integer(p, "id");
    json_decref(r);
    json_t *ev = take_event(th, b, "public_message");
    CU_ASSERT_EQUAL(integer(payload_of(ev), "id"), id);
    CU_ASSERT_STRING_EQUAL(str(payload_of(ev), "content"), "named");
    CU_ASSERT_STRING_EQUAL(str(payload_of(ev), "room"), "General");
    json_decref(ev);
    ev = take_event(th, a, "public_message");
    json_decref(ev);
    sm_testhost_free(th);
}

static void every_action_needs_login(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_FATAL(s != 0);
    const char *actions[] = {
        "public_message",    "send_message",   "private_message", "get_unread_messages",
        "mark_message_read", "mark_all_read",  "get_public_key",  "get_history",
        NULL};
    for (const char **a = actions; *a; a++)
        expect_error(sm_testhost_call(th, s, *a, "{}"), 1002, *a);
    sm_testhost_free(th);
}

/* ---- content ------------------------------------------------------------ */

static void content_beyond_configured_limit_is_1004(void)
{
    sm_testhost *th = start("messaging = { max_content_bytes = 10; };");
    sm_session_id a = user(th, "alice", 1);
    enter(th, a, "general");
    const char *limit_msg = "field 'content' must be a string of 1 to 10 bytes";
    expect_error_message(callf(th, a, "public_message", "{\"content\": \"0123456789a\"}"), 1004,
                         "public_message", limit_msg);
    expect_error_message(
        callf(th, a, "send_message", "{\"room\": \"general\", \"content\": \"0123456789a\"}"), 1004,
        "send_message", limit_msg);
    expect_error_message(callf(th, a, "private_message",
                               "{\"recipient\": \"Bob\", \"content\": \"0123456789a\","
                               " \"encrypted\": false}"),
                         1004, "private_message", limit_msg);
    /* Bytes, not characters: five two-byte characters are 10 bytes. */
    json_t *r =
        callf(th, a, "public_message", "{\"content\": \"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}");
    expect_response(r, "public_message");
    json_decref(r);
    expect_error(
        callf(th, a, "public_message", "{\"content\": \"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9x\"}"),
        1004, "public_message");
    expect_error(callf(th, a, "public_message", "{\"content\": \"\"}"), 1004, "public_message");
    expect_error(callf(th, a, "public_message", "{\"content\": 5}"), 1004, "public_message");
    r = callf(th, a, "public_message", "{\"content\": \"0123456789\"}");
    expect_response(r, "public_message");
    json_decref(r);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 2);
    sm_testhost_free(th);
}

/* SIGHUP: the new max_content_bytes holds from the next command; a bad
 * value refuses the reload and the old one stays. */
static void content_limit_changes_on_reload(void)
{
    sm_testhost *th = start("messaging = { max_content_bytes = 10; };");
    sm_session_id a = user(th, "alice", 1);
    enter(th, a, "general");
    const char *eleven = "{\"content\": \"0123456789a\"}";
    expect_error(callf(th, a, "public_message", eleven), 1004, "public_message");
    CU_ASSERT_EQUAL(sm_testhost_reload(th, FAST_LIMITS "messaging = { max_content_bytes = 20; };"),
                    SM_OK);
    json_t *r = callf(th, a, "public_message", eleven);
    expect_response(r, "public_message");
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, FAST_LIMITS "messaging = { max_content_bytes = 0; };"),
                    SM_ERROR);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, FAST_LIMITS "messaging = { max_content_byte = 5; };"),
                    SM_ERROR);
    r = callf(th, a, "public_message", eleven);
    expect_response(r, "public_message");
    json_decref(r);
    expect_error(callf(th, a, "public_message", "{\"content\": \"0123456789012345678901\"}"),
                 1004, "public_message");
    CU_ASSERT_EQUAL(sm_testhost_reload(th, FAST_LIMITS "messaging = { max_content_bytes = 10; };"),
                    SM_OK);
    expect_error(callf(th, a, "public_message", eleven), 1004, "public_message");
    sm_testhost_free(th);
}

/* ---- private_message ---------------------------------------------------- */

static void private_message_online_reaches_every_recipient_session(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), b1 = user(th, "Bob", 2), b2 = user(th, "Bob", 2);
    sm_session_id a2 = user(th, "alice", 1);
    sm_testhost_clear(th);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"BOB\", \"content\": \"opaque==\", \"encrypted\": true,"
                      " \"signature\": \"c2ln\"}");
    json_t *p = expect_response(r, "message_delivered");
    CU_ASSERT_EQUAL(json_object_size(p), 4);
    json_int_t id = integer(p, "message_id");
    CU_ASSERT_TRUE(id > 0);
    CU_ASSERT_STRING_EQUAL(str(p, "recipient"), "Bob");
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "online")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(p, "timestamp")), NOW0, 1e-6);
    json_decref(r);
    sm_session_id bobs[] = {b1, b2};
    for (size_t i = 0; i < 2; i++) {
        json_t *ev = take_event(th, bobs[i], "private_message");
        json_t *e = payload_of(ev);
        CU_ASSERT_EQUAL(json_object_size(e), 7);
        CU_ASSERT_EQUAL(integer(e, "id"), id);
        CU_ASSERT_STRING_EQUAL(str(e, "sender"), "alice");
        CU_ASSERT_STRING_EQUAL(str(e, "recipient"), "Bob");
        CU_ASSERT_STRING_EQUAL(str(e, "content"), "opaque==");
        CU_ASSERT_TRUE(json_is_true(json_object_get(e, "encrypted")));
        CU_ASSERT_STRING_EQUAL(str(e, "signature"), "c2ln");
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(e, "timestamp")), NOW0, 1e-6);
        json_decref(ev);
    }
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a2), 0);
    CU_ASSERT_EQUAL(count_rows(th, "kind = 'private' AND recipient_lower = 'bob' AND is_read = 0"),
                    1);

    /* Unsigned: signature is null in the event. */
    r = callf(th, a, "private_message",
              "{\"recipient\": \"bob\", \"content\": \"plain\", \"encrypted\": false, "
              "\"signature\": null}");
    expect_response(r, "message_delivered");
    json_decref(r);
    json_t *ev = take_event(th, b1, "private_message");
    CU_ASSERT_TRUE(json_is_null(json_object_get(payload_of(ev), "signature")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(payload_of(ev), "encrypted")));
    json_decref(ev);
    sm_testhost_free(th);
}

static void private_message_offline_is_stored_and_listed_later(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"carol\", \"content\": \"later\", \"encrypted\": false,"
                      " \"signature\": \"s\"}");
    json_t *p = expect_response(r, "message_delivered");
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "online")));
    CU_ASSERT_STRING_EQUAL(str(p, "recipient"), "carol");
    json_int_t id = integer(p, "message_id");
    json_decref(r);
    sm_testhost_advance(th, 5);
    sm_session_id c = user(th, "carol", 3);
    r = sm_testhost_call(th, c, "get_unread_messages", "{}");
    p = expect_response(r, "unread_messages");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    json_t *list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 1);
    json_t *m = json_array_get(list, 0);
    CU_ASSERT_EQUAL(json_object_size(m), 6);
    CU_ASSERT_EQUAL(integer(m, "id"), id);
    CU_ASSERT_STRING_EQUAL(str(m, "sender"), "alice");
    CU_ASSERT_STRING_EQUAL(str(m, "content"), "later");
    CU_ASSERT_TRUE(json_is_false(json_object_get(m, "encrypted")));
    CU_ASSERT_STRING_EQUAL(str(m, "signature"), "s");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(m, "timestamp")), NOW0, 1e-6);
    json_decref(r);
    sm_testhost_free(th);
}

static void private_message_recipient_checks(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    expect_error_message(
        callf(th, a, "private_message",
              "{\"recipient\": \"nobody\", \"content\": \"x\", \"encrypted\": false}"),
        1009, "private_message", "no such user");
    const char *bad[] = {"\"a b\"", "\"ab\"", "\"x123456789012345678901234567890123\"",
                         "5",       "null",   NULL};
    for (const char **b = bad; *b; b++)
        expect_error(callf(th, a, "private_message",
                           "{\"recipient\": %s, \"content\": \"x\", \"encrypted\": false}", *b),
                     1004, "private_message");
    expect_error(callf(th, a, "private_message", "{\"recipient\": \"Bob\", \"content\": \"x\"}"),
                 1004, "private_message");
    expect_error(callf(th, a, "private_message",
                       "{\"recipient\": \"Bob\", \"content\": \"x\", \"encrypted\": 1}"),
                 1004, "private_message");
    expect_error(callf(th, a, "private_message",
                       "{\"recipient\": \"Bob\", \"content\": \"x\", \"encrypted\": true,"
                       " \"signature\": 7}"),
                 1004, "private_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    sm_testhost_free(th);
}

/* The signature field is capped at 4096 bytes: exactly that is stored and
 * relayed, one byte more is a malformed payload and nothing is stored. */
static void private_message_signature_limit_is_4096_bytes_inclusive(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    user(th, "Bob", 2);
    char sig[4098];
    memset(sig, 'A', sizeof sig - 1);
    sig[4096] = '\0';
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"Bob\", \"content\": \"x\", \"encrypted\": true,"
                      " \"signature\": \"%s\"}", sig);
    expect_response(r, "message_delivered");
    json_decref(r);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 1);
    sig[4096] = 'A';
    sig[4097] = '\0';
    expect_error(callf(th, a, "private_message",
                       "{\"recipient\": \"Bob\", \"content\": \"x\", \"encrypted\": true,"
                       " \"signature\": \"%s\"}", sig),
                 1004, "private_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 1);
    sm_testhost_free(th);
}

static void private_message_denied_by_policy_is_1002(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), d = user(th, "denied", 4);
    sm_testhost_clear(th);
    expect_error(callf(th, a, "private_message",
                       "{\"recipient\": \"denied\", \"content\": \"x\", \"encrypted\": false}"),
                 1002, "private_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    sm_testhost_free(th);
}

/* A drop looks like any delivery: a fresh id (the next real message gets a
 * later one), `online` true since the recipient has a session, nothing sent
 * and nothing the recipient could see stored. */
static void private_message_dropped_by_policy_looks_delivered(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), x = user(th, "blocked", 5);
    json_int_t before = pm(th, a, "carol", NULL);
    sm_testhost_clear(th);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"Blocked\", \"content\": \"x\", \"encrypted\": false}");
    json_t *p = expect_response(r, "message_delivered");
    CU_ASSERT_EQUAL(json_object_size(p), 4);
    json_int_t dropped = integer(p, "message_id");
    CU_ASSERT_EQUAL(dropped, before + 1);
    CU_ASSERT_STRING_EQUAL(str(p, "recipient"), "blocked");
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "online")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(p, "timestamp")), NOW0, 1e-6);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, x), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    /* Only a hidden row without content, for the sender's cap. */
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'blocked'"), 1);
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'blocked' AND hidden = 1 AND content = ''"
                                   " AND signature IS NULL"),
                    1);
    CU_ASSERT_EQUAL(pm(th, a, "carol", NULL), dropped + 1);
    r = sm_testhost_call(th, x, "get_unread_messages", "{}");
    CU_ASSERT_EQUAL(
        json_array_size(json_object_get(expect_response(r, "unread_messages"), "messages")), 0);
    json_decref(r);
    expect_error(callf(th, x, "mark_message_read", "{\"message_id\": %lld}", (long long)dropped),
                 1009, "mark_message_read");
    sm_testhost_free(th);
}

static void private_message_to_yourself_reaches_your_sessions(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), a2 = user(th, "alice", 1);
    sm_testhost_clear(th);
    uint64_t nonce =
        sm_testhost_send(th, a, "private_message",
                         "{\"recipient\": \"alice\", \"content\": \"note\", \"encrypted\": false}");
    CU_ASSERT_FATAL(nonce != 0);
    json_t *r = sm_testhost_next(th, a);
    json_t *p = expect_response(r, "message_delivered");
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "online")));
    json_decref(r);
    json_t *ev = take_event(th, a, "private_message");
    json_decref(ev);
    ev = take_event(th, a2, "private_message");
    CU_ASSERT_STRING_EQUAL(str(payload_of(ev), "sender"), "alice");
    CU_ASSERT_STRING_EQUAL(str(payload_of(ev), "recipient"), "alice");
    json_decref(ev);
    sm_testhost_free(th);
}

static void unread_cap_answers_1008_and_stores_nothing(void)
{
    sm_testhost *th = start("messaging = { max_unread = 3; };");
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    json_int_t first = pm(th, a, "carol", NULL);
    pm(th, a, "carol", NULL);
    pm(th, b, "carol", NULL);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"carol\", \"content\": \"x\", \"encrypted\": false}");
    CU_ASSERT_EQUAL(integer(payload_of(r), "retry_after"), 60);
    expect_error(r, 1008, "private_message");
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol'"), 3);
    /* The cap is per recipient. */
    pm(th, a, "Bob", NULL);
    /* Reading one frees a place. */
    sm_session_id c = user(th, "carol", 3);
    r = callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)first);
    expect_response(r, "mark_message_read");
    json_decref(r);
    pm(th, a, "carol", NULL);
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol'"), 4);
    sm_testhost_free(th);
}

/* ---- per-sender cap and blocked senders (issue 10, items 8 and 11) ------ */

static void per_sender_cap_answers_1008_and_leaves_room_for_others(void)
{
    sm_testhost *th =
        start("messaging = { max_unread = 5; max_unread_per_sender = 3; };");
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    json_int_t first = pm(th, a, "carol", NULL);
    pm(th, a, "carol", NULL);
    pm(th, a, "carol", NULL);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"carol\", \"content\": \"x\", \"encrypted\": false}");
    CU_ASSERT_EQUAL(json_object_size(payload_of(r)), 4);
    CU_ASSERT_EQUAL(integer(payload_of(r), "retry_after"), 60);
    expect_error_message(r, 1008, "private_message",
                         "you have too many unread messages waiting for this user");
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol'"), 3);
    /* The share is per recipient, and other senders still get through. */
    pm(th, a, "dave", NULL);
    pm(th, b, "carol", NULL);
    pm(th, b, "carol", NULL);
    /* Then the recipient's own cap. */
    r = callf(th, b, "private_message",
              "{\"recipient\": \"carol\", \"content\": \"x\", \"encrypted\": false}");
    CU_ASSERT_EQUAL(integer(payload_of(r), "retry_after"), 60);
    expect_error_message(r, 1008, "private_message", "the recipient has too many unread messages");
    /* Reading one of alice's frees a place in her share. */
    sm_session_id c = user(th, "carol", 3);
    json_decref(callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)first));
    pm(th, a, "carol", NULL);
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol' AND is_read = 0"), 5);
    sm_testhost_free(th);
}

static void block(sm_testhost *th, sm_session_id s, const char *action, const char *name)
{
    json_t *r = callf(th, s, action, "{\"username\": \"%s\"}", name);
    expect_response(r, action);
    json_decref(r);
}

/* Asserts the ids of a list of messages, in order, as "1,2,3". */
static void expect_ids(const json_t *list, const char *want)
{
    char got[256] = "";
    for (size_t i = 0; i < json_array_size(list); i++) {
        size_t n = strlen(got);
        snprintf(got + n, sizeof got - n, "%s%lld", i ? "," : "",
                 (long long)integer(json_array_get(list, i), "id"));
    }
    CU_ASSERT_STRING_EQUAL(got, want);
}

/* The ids get_unread_messages lists, as "1,2,3". */
static void expect_unread_ids(sm_testhost *th, sm_session_id s, const char *want)
{
    json_t *r = sm_testhost_call(th, s, "get_unread_messages", "{}");
    expect_ids(json_object_get(expect_response(r, "unread_messages"), "messages"), want);
    json_decref(r);
}

static void expect_unread_count_at_login(sm_testhost *th, const char *name, int64_t id,
                                         const char *want)
{
    sm_session_id s = user(th, name, id);
    json_t *r = callf(th, s, "test_get_attr", "{\"key\": \"messaging.unread_count\"}");
    CU_ASSERT_STRING_EQUAL(str(expect_response(r, "test_get_attr"), "value"), want);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, s), SM_OK);
}

/* The flood of the review: one sender fills the recipient's unread cap;
 * blocking the flooder must let everybody else through at once, without
 * the flooder sending anything more. */
static void blocking_a_flooder_frees_the_recipients_cap(void)
{
    sm_testhost *th = start_with("messaging = { max_unread = 4; };", "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6);
    for (int i = 0; i < 4; i++)
        pm(th, d, "carol", NULL);
    expect_error(callf(th, a, "private_message",
                       "{\"recipient\": \"carol\", \"content\": \"x\", \"encrypted\": false}"),
                 1008, "private_message");
    sm_session_id c = user(th, "carol", 3);
    block(th, c, "block_user", "dave");
    json_int_t id = pm(th, a, "carol", NULL);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)id);
    expect_unread_ids(th, c, want);
    expect_unread_count_at_login(th, "carol", 3, "1");
    /* The flooder's messages are kept without content, hidden. */
    CU_ASSERT_EQUAL(count_rows(th, "sender_lower = 'dave' AND hidden = 1 AND content = ''"), 4);
    sm_testhost_free(th);
}

/* A block counts from the moment it is made: the count at login, the
 * listing and marking a message the recipient saw live all ignore the
 * blocked sender's waiting messages, and the sender gets no receipt. */
static void blocked_senders_waiting_messages_stop_counting_at_once(void)
{
    sm_testhost *th = start_with(NULL, "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6), c = user(th, "carol", 3);
    json_int_t live = pm(th, d, "carol", NULL);
    pm(th, d, "carol", NULL);
    json_int_t kept = pm(th, a, "carol", NULL);
    block(th, c, "block_user", "DAVE");
    sm_testhost_clear(th);
    expect_unread_count_at_login(th, "carol", 3, "1");
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)kept);
    expect_unread_ids(th, c, want);
    expect_error(callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)live),
                 1009, "mark_message_read");
    /* Unblocking does not bring them back. */
    block(th, c, "unblock_user", "dave");
    expect_unread_ids(th, c, want);
    expect_unread_count_at_login(th, "carol", 3, "1");
    /* A message seen live, then a block: marking it is marking nothing. */
    live = pm(th, d, "carol", NULL);
    block(th, c, "block_user", "dave");
    sm_testhost_clear(th);
    expect_error_message(
        callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)live), 1009,
        "mark_message_read", "no such message");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    expect_unread_ids(th, c, want);
    sm_testhost_free(th);
}

static void blocked_senders_messages_are_not_listed(void)
{
    sm_testhost *th = start_with(NULL, "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6), c = user(th, "carol", 3);
    pm(th, d, "carol", NULL);
    json_int_t kept = pm(th, a, "carol", NULL);
    block(th, c, "block_user", "dave");
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)kept);
    expect_unread_ids(th, c, want);
    sm_testhost_free(th);
}

/* The blocked sender's own share keeps counting what it sent, as with a
 * recipient who never reads: the same 1008 at the same moment. Once
 * unblocked, the hidden messages go and the share is free again. */
static void blocked_sender_meets_its_cap_as_anyone_would(void)
{
    sm_testhost *th = start_with("messaging = { max_unread_per_sender = 2; };", "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6), c = user(th, "carol", 3);
    pm(th, d, "carol", NULL); /* before the block */
    pm(th, a, "Bob", NULL);
    pm(th, a, "Bob", NULL);
    block(th, c, "block_user", "dave");
    pm(th, d, "carol", NULL); /* dropped */
    json_t *blocked = callf(th, d, "private_message",
                            "{\"recipient\": \"carol\", \"content\": \"x\", \"encrypted\": false}");
    json_t *plain = callf(th, a, "private_message",
                          "{\"recipient\": \"Bob\", \"content\": \"x\", \"encrypted\": false}");
    CU_ASSERT_TRUE(json_equal(payload_of(blocked), payload_of(plain)));
    expect_error(blocked, 1008, "private_message");
    expect_error(plain, 1008, "private_message");
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol' AND hidden = 1"), 2);
    block(th, c, "unblock_user", "dave");
    sm_testhost_clear(th);
    json_int_t id = pm(th, d, "carol", NULL);
    json_t *ev = take_event(th, c, "private_message");
    CU_ASSERT_EQUAL(integer(payload_of(ev), "id"), id);
    json_decref(ev);
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol' AND hidden = 1"), 0);
    sm_testhost_free(th);
}

/* What a blocked sender sees of a private message is what anyone sees:
 * the next id of the sequence, `online` as the recipient's sessions say,
 * the same reply shape; the recipient gets nothing. */
static void blocked_sender_gets_the_reply_anyone_gets(void)
{
    sm_testhost *th = start_with(NULL, "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6), c = user(th, "carol", 3);
    block(th, c, "block_user", "dave");
    for (int online = 1; online >= 0; online--) {
        sm_testhost_clear(th);
        json_int_t before = pm(th, a, "Bob", NULL);
        json_t *r = callf(th, d, "private_message",
                          "{\"recipient\": \"CAROL\", \"content\": \"x\", \"encrypted\": true,"
                          " \"signature\": \"c2ln\"}");
        json_t *p = expect_response(r, "message_delivered");
        CU_ASSERT_EQUAL(json_object_size(p), 4);
        CU_ASSERT_EQUAL(integer(p, "message_id"), before + 1);
        CU_ASSERT_STRING_EQUAL(str(p, "recipient"), "carol");
        CU_ASSERT_EQUAL(json_is_true(json_object_get(p, "online")), online);
        CU_ASSERT_TRUE(json_is_boolean(json_object_get(p, "online")));
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(p, "timestamp")),
                               sm_testhost_now(th), 1e-6);
        json_decref(r);
        r = callf(th, a, "private_message",
                  "{\"recipient\": \"carol\", \"content\": \"y\", \"encrypted\": false}");
        p = expect_response(r, "message_delivered");
        CU_ASSERT_EQUAL(integer(p, "message_id"), before + 2);
        CU_ASSERT_EQUAL(json_is_true(json_object_get(p, "online")), online);
        json_decref(r);
        if (online) {
            json_t *ev = take_event(th, c, "private_message");
            CU_ASSERT_STRING_EQUAL(str(payload_of(ev), "sender"), "alice");
            json_decref(ev);
            CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
            CU_ASSERT_EQUAL(sm_testhost_disconnect(th, c), SM_OK);
        }
        /* The sender marking its own message: the same 1009 as anyone. */
        json_t *own = callf(th, d, "mark_message_read", "{\"message_id\": %lld}",
                            (long long)(before + 1));
        json_t *other = callf(th, a, "mark_message_read", "{\"message_id\": %lld}",
                              (long long)(before + 2));
        CU_ASSERT_TRUE(json_equal(payload_of(own), payload_of(other)));
        expect_error(own, 1009, "mark_message_read");
        expect_error(other, 1009, "mark_message_read");
        /* And the recipient's key, as anyone gets it. */
        json_t *k1 = callf(th, d, "get_public_key", "{\"username\": \"carol\"}");
        json_t *k2 = callf(th, a, "get_public_key", "{\"username\": \"carol\"}");
        CU_ASSERT_TRUE(json_equal(payload_of(k1), payload_of(k2)));
        expect_response(k1, "get_public_key");
        json_decref(k1);
        json_decref(k2);
        sm_testhost_advance(th, 1);
    }
    CU_ASSERT_EQUAL(count_rows(th, "sender_lower = 'dave' AND (hidden = 0 OR content <> ''"
                                   " OR signature IS NOT NULL OR encrypted <> 0)"),
                    0);
    expect_unread_count_at_login(th, "carol", 3, "2");
    sm_testhost_free(th);
}

/* ---- get_unread_messages ------------------------------------------------ */

/* Fetches one page and checks its size and ids; returns the last id. */
static json_int_t unread_page(sm_testhost *th, sm_session_id s, json_int_t after, size_t size,
                              int more, json_int_t first_id)
{
    json_t *r = after
                    ? callf(th, s, "get_unread_messages", "{\"after_id\": %lld}", (long long)after)
                    : sm_testhost_call(th, s, "get_unread_messages", "{}");
    json_t *p = expect_response(r, "unread_messages");
    json_t *list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL(json_array_size(list), size);
    CU_ASSERT_EQUAL(json_is_true(json_object_get(p, "more")), more);
    json_int_t last = after;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_int_t id = integer(json_array_get(list, i), "id");
        if (i == 0)
            CU_ASSERT_EQUAL(id, first_id);
        CU_ASSERT_TRUE(id > last); /* oldest first */
        last = id;
    }
    json_decref(r);
    return last;
}

static void unread_messages_come_in_pages_of_100(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    json_int_t first = pm(th, a, "carol", NULL);
    for (int i = 1; i < 250; i++)
        pm(th, a, "carol", NULL);
    pm(th, a, "Bob", NULL); /* someone else's: never listed */
    sm_testhost_clear(th);
    json_int_t last = unread_page(th, c, 0, 100, 1, first);
    CU_ASSERT_EQUAL(last, first + 99);
    last = unread_page(th, c, last, 100, 1, first + 100);
    last = unread_page(th, c, last, 50, 0, first + 200);
    CU_ASSERT_EQUAL(last, first + 249);
    unread_page(th, c, last, 0, 0, 0);
    unread_page(th, c, first + 149, 100, 0, first + 150);
    /* Read messages are no longer listed. */
    json_t *r = callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)first);
    json_decref(r);
    unread_page(th, c, 0, 100, 1, first + 1);
    expect_error(sm_testhost_call(th, c, "get_unread_messages", "{\"after_id\": -1}"), 1004,
                 "get_unread_messages");
    expect_error(sm_testhost_call(th, c, "get_unread_messages", "{\"after_id\": \"1\"}"), 1004,
                 "get_unread_messages");
    sm_testhost_free(th);
}

/* ---- mark_message_read -------------------------------------------------- */

static void mark_read_sends_receipt_once_to_every_sender_session(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a1 = user(th, "alice", 1), a2 = user(th, "alice", 1), b = user(th, "Bob", 2);
    json_int_t id = pm(th, a1, "bob", NULL);
    sm_testhost_advance(th, 2);
    sm_testhost_clear(th);
    json_t *r = callf(th, b, "mark_message_read", "{\"message_id\": %lld}", (long long)id);
    json_t *p = expect_response(r, "mark_message_read");
    CU_ASSERT_EQUAL(json_object_size(p), 1);
    CU_ASSERT_EQUAL(integer(p, "message_id"), id);
    json_decref(r);
    sm_session_id senders[] = {a1, a2};
    for (size_t i = 0; i < 2; i++) {
        json_t *ev = take_event(th, senders[i], "message_read");
        json_t *e = payload_of(ev);
        CU_ASSERT_EQUAL(json_object_size(e), 3);
        CU_ASSERT_EQUAL(integer(e, "message_id"), id);
        CU_ASSERT_STRING_EQUAL(str(e, "reader"), "Bob");
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(e, "timestamp")), NOW0 + 2, 1e-6);
        json_decref(ev);
    }
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 1"), 1);
    /* Again: the same reply, no second receipt. */
    r = callf(th, b, "mark_message_read", "{\"message_id\": %lld}", (long long)id);
    CU_ASSERT_EQUAL(integer(expect_response(r, "mark_message_read"), "message_id"), id);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a1), 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a2), 0);
    sm_testhost_free(th);
}

static void mark_read_same_1009_for_unknown_and_foreign_ids(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    enter(th, a, "general");
    json_int_t to_bob = pm(th, a, "Bob", NULL);
    json_t *r = callf(th, a, "public_message", "{\"content\": \"pub\"}");
    json_int_t public_id = integer(expect_response(r, "public_message"), "id");
    json_decref(r);
    json_t *foreign =
        callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)to_bob);
    json_t *sender = callf(th, a, "mark_message_read", "{\"message_id\": %lld}", (long long)to_bob);
    json_t *unknown = callf(th, c, "mark_message_read", "{\"message_id\": 999999}");
    json_t *pub = callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)public_id);
    CU_ASSERT_TRUE(json_equal(payload_of(foreign), payload_of(unknown)));
    CU_ASSERT_TRUE(json_equal(payload_of(sender), payload_of(unknown)));
    CU_ASSERT_TRUE(json_equal(payload_of(pub), payload_of(unknown)));
    expect_error_message(foreign, 1009, "mark_message_read", "no such message");
    expect_error(sender, 1009, "mark_message_read");
    expect_error(unknown, 1009, "mark_message_read");
    expect_error(pub, 1009, "mark_message_read");
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 1"), 0);
    expect_error(sm_testhost_call(th, c, "mark_message_read", "{\"message_id\": 0}"), 1004,
                 "mark_message_read");
    expect_error(sm_testhost_call(th, c, "mark_message_read", "{}"), 1004, "mark_message_read");
    expect_error(sm_testhost_call(th, c, "mark_message_read", "{\"message_id\": 1.5}"), 1004,
                 "mark_message_read");
    sm_testhost_free(th);
}

/* ---- mark_all_read (extension, issue 10) -------------------------------- */

/* Takes the message_read events of a session, checking each, and returns
 * their ids as "1,2". */
static void expect_receipts(sm_testhost *th, sm_session_id s, const char *reader, double at,
                            const char *want)
{
    char got[256] = "";
    json_t *ev;
    while ((ev = sm_testhost_next_event(th, s, "message_read")) != NULL) {
        json_t *e = payload_of(ev);
        CU_ASSERT_EQUAL(json_object_size(e), 3);
        CU_ASSERT_STRING_EQUAL(str(e, "reader"), reader);
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(e, "timestamp")), at, 1e-6);
        size_t n = strlen(got);
        snprintf(got + n, sizeof got - n, "%s%lld", n ? "," : "",
                 (long long)integer(e, "message_id"));
        json_decref(ev);
    }
    CU_ASSERT_STRING_EQUAL(got, want);
}

static void expect_marked(json_t *r, json_int_t count, int more)
{
    json_t *p = expect_response(r, "mark_all_read");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_EQUAL(integer(p, "count"), count);
    CU_ASSERT_TRUE(json_is_boolean(json_object_get(p, "more")));
    CU_ASSERT_EQUAL(json_is_true(json_object_get(p, "more")), more);
    json_decref(r);
}

static void mark_all_read_marks_everything_with_one_receipt_each(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a1 = user(th, "alice", 1), a2 = user(th, "alice", 1), b = user(th, "Bob", 2);
    json_int_t m1 = pm(th, a1, "carol", NULL);
    json_int_t m2 = pm(th, b, "carol", NULL);
    json_int_t m3 = pm(th, a1, "carol", NULL);
    json_int_t other = pm(th, a1, "dave", NULL);
    sm_session_id c = user(th, "carol", 3);
    json_decref(callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)m2));
    sm_testhost_advance(th, 3);
    sm_testhost_clear(th);
    uint64_t nonce = sm_testhost_send(th, c, "mark_all_read", "{}");
    CU_ASSERT_FATAL(nonce != 0);
    expect_marked(sm_testhost_next(th, c), 2, 0); /* the reply first */
    char want[64];
    snprintf(want, sizeof want, "%lld,%lld", (long long)m1, (long long)m3);
    expect_receipts(th, a1, "carol", NOW0 + 3, want);
    expect_receipts(th, a2, "carol", NOW0 + 3, want);
    expect_receipts(th, b, "carol", NOW0 + 3, ""); /* m2 was read before */
    CU_ASSERT_EQUAL(sm_testhost_pending(th, c), 0);
    expect_unread_ids(th, c, "");
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 0"), 1);
    (void)other;
    /* Again: nothing left, no receipt. */
    expect_marked(sm_testhost_call(th, c, "mark_all_read", "{\"up_to_id\": null}"), 0, 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a1), 0);
    sm_testhost_free(th);
}

static void mark_all_read_stops_at_up_to_id(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    json_int_t m1 = pm(th, a, "carol", NULL);
    json_int_t m2 = pm(th, a, "carol", NULL);
    json_int_t m3 = pm(th, a, "carol", NULL);
    sm_testhost_clear(th);
    expect_marked(callf(th, c, "mark_all_read", "{\"up_to_id\": %lld}", (long long)m2), 2, 0);
    char want[64];
    snprintf(want, sizeof want, "%lld,%lld", (long long)m1, (long long)m2);
    expect_receipts(th, a, "carol", NOW0, want);
    snprintf(want, sizeof want, "%lld", (long long)m3);
    expect_unread_ids(th, c, want);
    const char *bad[] = {"{\"up_to_id\": 0}", "{\"up_to_id\": -1}", "{\"up_to_id\": \"5\"}",
                         "{\"up_to_id\": 1.5}", "{\"up_to_id\": 9007199254740992}", NULL};
    for (const char **b = bad; *b; b++)
        expect_error(sm_testhost_call(th, c, "mark_all_read", *b), 1004, "mark_all_read");
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 0"), 1);
    sm_testhost_free(th);
}

static void mark_all_read_works_in_batches_of_1000(void)
{
    sm_testhost *th = start("messaging = { max_unread_per_sender = 2000; };");
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    for (int i = 0; i < 1001; i++)
        pm(th, a, "carol", NULL);
    sm_testhost_clear(th);
    expect_marked(sm_testhost_call(th, c, "mark_all_read", "{}"), 1000, 1);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 1000);
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 0"), 1);
    expect_marked(sm_testhost_call(th, c, "mark_all_read", "{}"), 1, 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 1001);
    sm_testhost_free(th);
}

static void mark_all_read_leaves_blocked_senders_unanswered(void)
{
    sm_testhost *th = start_with(NULL, "friends");
    sm_session_id a = user(th, "alice", 1), d = user(th, "dave", 6), c = user(th, "carol", 3);
    pm(th, d, "carol", NULL);
    json_int_t kept = pm(th, a, "carol", NULL);
    block(th, c, "block_user", "dave");
    sm_testhost_clear(th);
    expect_marked(sm_testhost_call(th, c, "mark_all_read", "{}"), 1, 0);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)kept);
    expect_receipts(th, a, "carol", NOW0, want);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, d), 0);
    sm_testhost_free(th);
}

/* ---- get_public_key ----------------------------------------------------- */

static void get_public_key_key_null_or_1009(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    json_t *r = sm_testhost_call(th, a, "get_public_key", "{\"username\": \"BOB\"}");
    json_t *p = expect_response(r, "get_public_key");
    CU_ASSERT_EQUAL(json_object_size(p), 2);
    CU_ASSERT_STRING_EQUAL(str(p, "username"), "Bob");
    CU_ASSERT_STRING_EQUAL(str(p, "public_key"), BOB_KEY);
    json_decref(r);
    r = sm_testhost_call(th, a, "get_public_key", "{\"username\": \"carol\"}");
    p = expect_response(r, "get_public_key");
    CU_ASSERT_STRING_EQUAL(str(p, "username"), "carol");
    CU_ASSERT_TRUE(json_is_null(json_object_get(p, "public_key")));
    json_decref(r);
    expect_error_message(sm_testhost_call(th, a, "get_public_key", "{\"username\": \"nobody\"}"),
                         1009, "get_public_key", "no such user");
    expect_error(sm_testhost_call(th, a, "get_public_key", "{\"username\": \"no body\"}"), 1004,
                 "get_public_key");
    expect_error(sm_testhost_call(th, a, "get_public_key", "{\"username\": \"xy\"}"), 1004,
                 "get_public_key");
    expect_error(sm_testhost_call(th, a, "get_public_key", "{}"), 1004, "get_public_key");
    sm_testhost_free(th);
}

/* ---- get_history -------------------------------------------------------- */

static void get_history_newest_first_with_paging(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    enter(th, a, "General");
    enter(th, b, "other");
    json_int_t ids[5];
    for (int i = 0; i < 5; i++) {
        json_t *r = callf(th, a, "public_message", "{\"content\": \"m%d\"}", i);
        ids[i] = integer(expect_response(r, "public_message"), "id");
        json_decref(r);
        json_decref(callf(th, b, "public_message", "{\"content\": \"elsewhere\"}"));
        sm_testhost_advance(th, 1);
    }
    json_t *r = sm_testhost_call(th, a, "get_history", "{\"room\": \"general\"}");
    json_t *p = expect_response(r, "get_history");
    CU_ASSERT_EQUAL(json_object_size(p), 3);
    CU_ASSERT_STRING_EQUAL(str(p, "room"), "General");
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    json_t *list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 5);
    for (int i = 0; i < 5; i++) {
        json_t *m = json_array_get(list, (size_t)i);
        char want[8];
        snprintf(want, sizeof want, "m%d", 4 - i);
        CU_ASSERT_EQUAL(json_object_size(m), 5);
        CU_ASSERT_EQUAL(integer(m, "id"), ids[4 - i]);
        CU_ASSERT_STRING_EQUAL(str(m, "sender"), "alice");
        CU_ASSERT_STRING_EQUAL(str(m, "content"), want);
        CU_ASSERT_STRING_EQUAL(str(m, "room"), "General");
        CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(m, "timestamp")), NOW0 + 4 - i,
                               1e-6);
    }
    json_decref(r);

    r = sm_testhost_call(th, a, "get_history", "{\"room\": \"General\", \"limit\": 2}");
    p = expect_response(r, "get_history");
    list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL(json_array_size(list), 2);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 0), "id"), ids[4]);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 1), "id"), ids[3]);
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "more")));
    json_decref(r);

    r = callf(th, a, "get_history", "{\"room\": \"General\", \"limit\": 2, \"before_id\": %lld}",
              (long long)ids[3]);
    p = expect_response(r, "get_history");
    list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL(json_array_size(list), 2);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 0), "id"), ids[2]);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 1), "id"), ids[1]);
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "more")));
    json_decref(r);

    r = callf(th, a, "get_history", "{\"room\": \"General\", \"limit\": 200, \"before_id\": %lld}",
              (long long)ids[1]);
    p = expect_response(r, "get_history");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(p, "messages")), 1);
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    json_decref(r);
    sm_testhost_free(th);
}

/* A page's payload as the core serialises it. */
static size_t page_bytes(const json_t *payload)
{
    return json_dumpb(payload, NULL, 0, JSON_COMPACT);
}

#define PAGE_LIMIT 65536
#define BIG_CONTENT 10000

static char *big_content(void)
{
    char *c = malloc(BIG_CONTENT + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(c, 'x', BIG_CONTENT);
    c[BIG_CONTENT] = '\0';
    return c;
}

static void get_history_page_stops_at_max_page_bytes(void)
{
    sm_testhost *th = start("messaging = { max_page_bytes = 65536; };\n");
    sm_session_id a = user(th, "alice", 1);
    enter(th, a, "general");
    char *content = big_content();
    json_int_t ids[12];
    for (int i = 0; i < 12; i++) {
        json_t *r = callf(th, a, "public_message", "{\"content\": \"%s\"}", content);
        ids[i] = integer(expect_response(r, "public_message"), "id");
        json_decref(r);
    }
    free(content);
    sm_testhost_clear(th);
    /* Six items of about 10 kB fit in 64 KiB, a seventh would not: the
     * page stops there and says more, whatever the limit asked for. */
    json_t *r = sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"limit\": 50}");
    json_t *p = expect_response(r, "get_history");
    json_t *list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 6);
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "more")));
    CU_ASSERT_TRUE(page_bytes(p) <= PAGE_LIMIT);
    CU_ASSERT_TRUE(page_bytes(p) + BIG_CONTENT > PAGE_LIMIT);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(integer(json_array_get(list, (size_t)i), "id"), ids[11 - i]);
    json_int_t last = integer(json_array_get(list, 5), "id");
    json_decref(r);
    /* Paging on with before_id gives the rest, and then no more. */
    r = callf(th, a, "get_history", "{\"room\": \"general\", \"limit\": 50, \"before_id\": %lld}",
              (long long)last);
    p = expect_response(r, "get_history");
    list = json_object_get(p, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 6);
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(integer(json_array_get(list, (size_t)i), "id"), ids[5 - i]);
    json_decref(r);
    sm_testhost_free(th);
}

static void unread_page_stops_at_max_page_bytes(void)
{
    sm_testhost *th = start("messaging = { max_page_bytes = 65536; };\n");
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    char *content = big_content();
    json_int_t first = 0;
    for (int i = 0; i < 10; i++) {
        json_t *r = callf(th, a, "private_message",
                          "{\"recipient\": \"carol\", \"content\": \"%s\", \"encrypted\": false}",
                          content);
        json_int_t id = integer(expect_response(r, "message_delivered"), "message_id");
        if (i == 0)
            first = id;
        json_decref(r);
    }
    free(content);
    sm_testhost_clear(th);
    json_t *r = sm_testhost_call(th, c, "get_unread_messages", "{}");
    json_t *p = expect_response(r, "unread_messages");
    CU_ASSERT_TRUE(page_bytes(p) <= PAGE_LIMIT);
    json_decref(r);
    json_int_t last = unread_page(th, c, 0, 6, 1, first);
    unread_page(th, c, last, 4, 0, first + 6);
    sm_testhost_free(th);
}

static void max_page_bytes_out_of_range_is_refused(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new("messaging = { max_page_bytes = 1000; };\n", &th),
                          SM_OK);
    add_users(th);
    CU_ASSERT_NOT_EQUAL(sm_testhost_load(th, MESSAGING_SO, "messaging"), SM_OK);
    sm_testhost_free(th);
}

static void get_history_checks_room_and_limit(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    expect_error(sm_testhost_call(th, a, "get_history", "{\"room\": \"general\"}"), 1002,
                 "get_history");
    enter(th, a, "general");
    expect_error(sm_testhost_call(th, a, "get_history", "{\"room\": \"other\"}"), 1002,
                 "get_history");
    expect_error(sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"limit\": 0}"),
                 1004, "get_history");
    expect_error(sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"limit\": 201}"),
                 1004, "get_history");
    expect_error(
        sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"before_id\": 0}"), 1004,
        "get_history");
    expect_error(sm_testhost_call(th, a, "get_history", "{}"), 1004, "get_history");
    json_t *r = sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"limit\": 200}");
    json_t *p = expect_response(r, "get_history");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(p, "messages")), 0);
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    json_decref(r);
    r = sm_testhost_call(th, a, "get_history", "{\"room\": \"general\", \"limit\": 1}");
    expect_response(r, "get_history");
    json_decref(r);
    sm_testhost_free(th);
}

/* ---- expiry ------------------------------------------------------------- */

static void expires_at_must_be_future_and_within_limit(void)
{
    sm_testhost *th = start("messaging = { max_expiry = 3600; };");
    sm_session_id a = user(th, "alice", 1);
    enter(th, a, "general");
    const char *msg = "field 'expires_at' must be in the future and at most 3600 seconds from now";
    double bad[] = {NOW0 - 1, NOW0, NOW0 + 3600.5, 0, -5};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_error_message(
            callf(th, a, "public_message", "{\"content\": \"x\", \"expires_at\": %.3f}", bad[i]),
            1004, "public_message", msg);
        expect_error_message(callf(th, a, "private_message",
                                   "{\"recipient\": \"Bob\", \"content\": \"x\","
                                   " \"encrypted\": false, \"expires_at\": %.3f}",
                                   bad[i]),
                             1004, "private_message", msg);
        expect_error_message(
            callf(th, a, "send_message",
                  "{\"room\": \"general\", \"content\": \"x\", \"expires_at\": %.3f}", bad[i]),
            1004, "send_message", msg);
    }
    expect_error(callf(th, a, "public_message", "{\"content\": \"x\", \"expires_at\": \"soon\"}"),
                 1004, "public_message");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    json_t *r =
        callf(th, a, "public_message", "{\"content\": \"x\", \"expires_at\": %.3f}", NOW0 + 3600);
    expect_response(r, "public_message");
    json_decref(r);
    json_t *ev = take_event(th, a, "public_message");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(payload_of(ev), "expires_at")),
                           NOW0 + 3600, 1e-6);
    CU_ASSERT_EQUAL(json_object_size(payload_of(ev)), 6);
    json_decref(ev);
    /* null counts as absent. */
    r = callf(th, a, "public_message", "{\"content\": \"x\", \"expires_at\": null}");
    expect_response(r, "public_message");
    json_decref(r);
    ev = take_event(th, a, "public_message");
    CU_ASSERT_PTR_NULL(json_object_get(payload_of(ev), "expires_at"));
    json_decref(ev);
    sm_testhost_free(th);
}

static void expired_messages_vanish_then_are_purged_within_a_minute(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    enter(th, a, "general");
    sm_testhost_advance(th, 7); /* off the purge timer's phase */
    double t = sm_testhost_now(th);
    json_int_t pid = pm(th, a, "carol", ",\"expires_at\": 1700000017.5, \"signature\": \"s\"");
    json_int_t keep = pm(th, a, "carol", NULL);
    json_t *r =
        callf(th, a, "public_message", "{\"content\": \"short\", \"expires_at\": %.3f}", t + 10.5);
    json_decref(r);
    json_int_t bob_pid = pm(th, a, "Bob", ",\"expires_at\": 1700000017.5");
    sm_testhost_clear(th);

    /* Before expiry: listed with expires_at. */
    sm_session_id c = user(th, "carol", 3);
    r = sm_testhost_call(th, c, "get_unread_messages", "{}");
    json_t *list = json_object_get(expect_response(r, "unread_messages"), "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 0), "id"), pid);
    CU_ASSERT_EQUAL(json_object_size(json_array_get(list, 0)), 7);
    CU_ASSERT_DOUBLE_EQUAL(
        json_number_value(json_object_get(json_array_get(list, 0), "expires_at")), t + 10.5, 1e-6);
    json_decref(r);
    sm_testhost_disconnect(th, c);

    sm_testhost_advance(th, 10.5); /* now exactly at expiry: expired */
    c = user(th, "carol", 3);
    r = callf(th, c, "test_get_attr", "{\"key\": \"messaging.unread_count\"}");
    CU_ASSERT_STRING_EQUAL(str(expect_response(r, "test_get_attr"), "value"), "1");
    json_decref(r);
    r = sm_testhost_call(th, c, "get_unread_messages", "{}");
    list = json_object_get(expect_response(r, "unread_messages"), "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 1);
    CU_ASSERT_EQUAL(integer(json_array_get(list, 0), "id"), keep);
    json_decref(r);
    r = sm_testhost_call(th, a, "get_history", "{\"room\": \"general\"}");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(expect_response(r, "get_history"), "messages")),
                    0);
    json_decref(r);
    expect_error(callf(th, b, "mark_message_read", "{\"message_id\": %lld}", (long long)bob_pid),
                 1009, "mark_message_read");
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);

    /* Deleted from storage within a minute of expiring. */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 4);
    sm_testhost_advance(th, 60);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 1);
    CU_ASSERT_EQUAL(count_rows(th, "expires_at IS NOT NULL"), 0);
    sm_testhost_free(th);
}

/* More expired rows than one batch: one tick still deletes them all. */
static void purge_works_in_batches(void)
{
    sm_testhost *th = start(NULL);
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(th, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                             " WHERE i < 2500) INSERT INTO messaging_messages (id, kind, sender,"
                             " recipient, recipient_lower, content, created_at, expires_at)"
                             " SELECT i, 'private', 'alice', 'carol', 'carol', 'x', 1, 2 FROM n"),
        SM_OK);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 2500);
    sm_testhost_advance(th, 30);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    sm_testhost_free(th);
}

/* One run deletes at most 20 batches of 1000; a larger backlog is drained
 * by follow-up runs 0.2 s apart, so it is gone well within the minute. */
static void purge_drains_a_large_backlog_within_a_minute(void)
{
    sm_testhost *th = start(NULL);
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(th, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                             " WHERE i < 45000) INSERT INTO messaging_messages (id, kind, sender,"
                             " recipient, recipient_lower, content, created_at, expires_at)"
                             " SELECT i, 'private', 'alice', 'carol', 'carol', 'x', 1, 2 FROM n"),
        SM_OK);
    sm_testhost_advance(th, 30);               /* the regular run: 20,000 */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 25000);
    sm_testhost_advance(th, 0.2);              /* first follow-up: 20,000 more */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 5000);
    sm_testhost_advance(th, 0.2);              /* second: the rest */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 0);
    sm_testhost_free(th);
}

/* ---- retention (issue 12) ----------------------------------------------- */

#define DAY 86400.0

/* The ids of the room's history, newest first, as "3,2" ("" when empty);
 * asserts a single page. */
static void expect_history_ids(sm_testhost *th, sm_session_id s, const char *room,
                               const char *want)
{
    json_t *r = callf(th, s, "get_history", "{\"room\": \"%s\"}", room);
    json_t *p = expect_response(r, "get_history");
    CU_ASSERT_TRUE(json_is_false(json_object_get(p, "more")));
    expect_ids(json_object_get(p, "messages"), want);
    json_decref(r);
}

static json_int_t post(sm_testhost *th, sm_session_id s, const char *content)
{
    json_t *r = callf(th, s, "public_message", "{\"content\": \"%s\"}", content);
    json_int_t id = integer(expect_response(r, "public_message"), "id");
    CU_ASSERT_TRUE(id > 0);
    json_decref(r);
    return id;
}

static int64_t row_exists(sm_testhost *th, json_int_t id)
{
    char where[64];
    snprintf(where, sizeof where, "id = %lld", (long long)id);
    return count_rows(th, where);
}

static void expect_marked_read(sm_testhost *th, sm_session_id s, json_int_t id)
{
    json_t *r = callf(th, s, "mark_message_read", "{\"message_id\": %lld}", (long long)id);
    CU_ASSERT_EQUAL(integer(expect_response(r, "mark_message_read"), "message_id"), id);
    json_decref(r);
}

/* private_retention counts from the moment a message was first marked
 * read (mark_message_read or mark_all_read), not from when it was sent;
 * unread messages and room history are not touched by it. */
static void read_private_messages_go_private_retention_after_being_read(void)
{
    sm_testhost *th = start("messaging = { private_retention = 3600; };");
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    enter(th, a, "general");
    sm_testhost_advance(th, 7); /* off the purge timer's phase: runs at +30 s, +60 s, ... */
    json_int_t read_first = pm(th, a, "carol", NULL);
    json_int_t read_later = pm(th, a, "carol", NULL);
    json_int_t unread = pm(th, a, "carol", NULL);
    json_int_t pub = post(th, a, "kept");
    expect_marked_read(th, c, read_first);                    /* read at +7 */
    sm_testhost_advance(th, 1800);
    expect_marked(callf(th, c, "mark_all_read", "{\"up_to_id\": %lld}", (long long)read_later),
                  1, 0);                                      /* read at +1807 */

    sm_testhost_advance(th, 1799); /* +3606: the run at +3600 found it 3593 s old */
    CU_ASSERT_EQUAL(row_exists(th, read_first), 1);
    sm_testhost_advance(th, 24);   /* +3630: 3623 s since it was read */
    CU_ASSERT_EQUAL(row_exists(th, read_first), 0);
    CU_ASSERT_EQUAL(row_exists(th, read_later), 1); /* sent as long ago, read later */
    expect_error(callf(th, c, "mark_message_read", "{\"message_id\": %lld}",
                       (long long)read_first),
                 1009, "mark_message_read");
    expect_marked_read(th, c, read_later); /* still there: the same reply as before */

    sm_testhost_advance(th, 1800); /* +5430: 3623 s since read_later was read */
    CU_ASSERT_EQUAL(row_exists(th, read_later), 0);
    sm_testhost_advance(th, DAY);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 2);
    CU_ASSERT_EQUAL(row_exists(th, unread), 1);
    CU_ASSERT_EQUAL(row_exists(th, pub), 1);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)unread);
    expect_unread_ids(th, c, want);
    snprintf(want, sizeof want, "%lld", (long long)pub);
    expect_history_ids(th, a, "general", want);
    sm_testhost_free(th);
}

/* public_retention counts from the message's timestamp; a message goes at
 * the first purge run at which it is that old or older. */
static void room_history_older_than_public_retention_leaves_get_history(void)
{
    sm_testhost *th = start("messaging = { public_retention = 600; };");
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2), c = user(th, "carol", 3);
    enter(th, a, "general");
    enter(th, b, "other");
    json_int_t first = post(th, a, "first");        /* at +0 */
    json_int_t elsewhere = post(th, b, "elsewhere"); /* at +0, another room */
    json_int_t read = pm(th, a, "carol", NULL);
    expect_marked_read(th, c, read);
    sm_testhost_advance(th, 1);
    json_int_t second = post(th, a, "second"); /* at +1 */
    char want[64];
    snprintf(want, sizeof want, "%lld,%lld", (long long)second, (long long)first);
    expect_history_ids(th, a, "general", want);

    sm_testhost_advance(th, 599); /* +600: the run there finds `first` exactly 600 s old */
    snprintf(want, sizeof want, "%lld", (long long)second);
    expect_history_ids(th, a, "general", want);
    expect_history_ids(th, b, "other", "");
    CU_ASSERT_EQUAL(row_exists(th, elsewhere), 0);

    sm_testhost_advance(th, 30);
    expect_history_ids(th, a, "general", "");
    CU_ASSERT_EQUAL(count_rows(th, NULL), 1); /* the read private message: no private_retention */
    CU_ASSERT_EQUAL(row_exists(th, read), 1);
    sm_testhost_free(th);
}

/* 0 (also the default) keeps that kind for ever while the other goes. */
static void retention_zero_keeps_that_kind_for_ever(void)
{
    const char *configs[] = {"messaging = { private_retention = 0; public_retention = 60; };",
                             "messaging = { private_retention = 60; public_retention = 0; };",
                             "messaging = { private_retention = 60; };"};
    for (int i = 0; i < 3; i++) {
        int keep_private = i == 0;
        sm_testhost *th = start(configs[i]);
        sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
        enter(th, a, "general");
        json_int_t pub = post(th, a, "old");
        json_int_t read = pm(th, a, "carol", NULL);
        expect_marked_read(th, c, read);
        sm_testhost_advance(th, 2 * DAY);
        CU_ASSERT_EQUAL(row_exists(th, read), keep_private);
        CU_ASSERT_EQUAL(row_exists(th, pub), !keep_private);
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)pub);
        expect_history_ids(th, a, "general", keep_private ? "" : want);
        sm_testhost_free(th);
    }
}

/* The three purges share one run's budget of 20 DELETE statements of at
 * most 1000 rows, in the order expired, read private, old public; a kind
 * is done when a statement deletes fewer than 1000 (0 included: 15,000
 * expired rows take 16 statements). A larger backlog drains in follow-up
 * runs 0.2 s apart. */
static void retention_backlog_drains_in_bounded_runs(void)
{
    sm_testhost *th = start("messaging = { private_retention = 60; public_retention = 60; };");
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(
            th, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 45000)"
                " INSERT INTO messaging_messages (id, kind, sender, room, room_lower, recipient,"
                " recipient_lower, content, created_at, expires_at, is_read, read_at)"
                " SELECT i, CASE WHEN i > 30000 THEN 'public' ELSE 'private' END, 'alice',"
                " CASE WHEN i > 30000 THEN 'general' END, CASE WHEN i > 30000 THEN 'general' END,"
                " CASE WHEN i <= 30000 THEN 'carol' END, CASE WHEN i <= 30000 THEN 'carol' END,"
                " 'x', 1, CASE WHEN i <= 15000 THEN 2 END,"
                " CASE WHEN i > 15000 AND i <= 30000 THEN 1 ELSE 0 END,"
                " CASE WHEN i > 15000 AND i <= 30000 THEN 1 END FROM n;"
                /* and what stays: unread, recent */
                " INSERT INTO messaging_messages (id, kind, sender, recipient, recipient_lower,"
                " content, created_at) VALUES (45001, 'private', 'alice', 'carol', 'carol', 'x',"
                " 1);"),
        SM_OK);
    CU_ASSERT_EQUAL(count_rows(th, "expires_at IS NOT NULL"), 15000);
    CU_ASSERT_EQUAL(count_rows(th, "read_at IS NOT NULL"), 15000);
    CU_ASSERT_EQUAL(count_rows(th, "kind = 'public'"), 15000);
    sm_testhost_advance(th, 30); /* the regular run: 15,000 expired (16), 4,000 read (4) */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 26001);
    CU_ASSERT_EQUAL(count_rows(th, "expires_at IS NOT NULL"), 0);
    CU_ASSERT_EQUAL(count_rows(th, "read_at IS NOT NULL"), 11000);
    CU_ASSERT_EQUAL(count_rows(th, "kind = 'public'"), 15000);
    sm_testhost_advance(th, 0.2); /* first follow-up: none expired (1), 11,000 read (12), */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 8001); /* 7,000 public (7) */
    CU_ASSERT_EQUAL(count_rows(th, "read_at IS NOT NULL"), 0);
    CU_ASSERT_EQUAL(count_rows(th, "kind = 'public'"), 8000);
    sm_testhost_advance(th, 0.2); /* second: the rest */
    CU_ASSERT_EQUAL(count_rows(th, NULL), 1);
    CU_ASSERT_EQUAL(row_exists(th, 45001), 1);
    sm_testhost_free(th);
}

/* PostgreSQL has no INDEXED BY: the same question to its planner, in a
 * function of the test's own (in the host's schema, dropped with it).
 * In a subtransaction it then undoes, it drops every other index of the
 * table (the primary key's too) and forbids sequential scans: a plan that
 * names the index is one the index can serve. The count, or -1. */
static const char *const pg_count_by_index =
    "CREATE OR REPLACE FUNCTION sm_test_count_by_index(idx TEXT, cond TEXT) RETURNS BIGINT AS $$"
    " DECLARE other TEXT; line TEXT; used BOOLEAN := FALSE; n BIGINT := -1;"
    " BEGIN"
    "  BEGIN"
    "   FOR other IN SELECT conname FROM pg_constraint"
    "    WHERE conrelid = 'messaging_messages'::regclass AND contype = 'p' LOOP"
    "     EXECUTE format('ALTER TABLE messaging_messages DROP CONSTRAINT %I', other);"
    "   END LOOP;"
    "   FOR other IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    "    WHERE i.indrelid = 'messaging_messages'::regclass AND c.relname <> idx LOOP"
    "     EXECUTE format('DROP INDEX %I', other);"
    "   END LOOP;"
    "   SET LOCAL enable_seqscan = off;"
    "   FOR line IN EXECUTE 'EXPLAIN SELECT COUNT(*) FROM messaging_messages WHERE ' || cond LOOP"
    "    used := used OR position(idx IN line) > 0;"
    "   END LOOP;"
    "   IF used THEN"
    "    EXECUTE 'SELECT COUNT(*) FROM messaging_messages WHERE ' || cond INTO n;"
    "   END IF;"
    "   RAISE EXCEPTION 'undone';"
    "  EXCEPTION WHEN raise_exception THEN NULL;"
    "  END;"
    "  RETURN n;"
    " END $$ LANGUAGE plpgsql";

/* The query forced onto one index: SQLite refuses (no query solution)
 * when the index cannot serve it, e.g. a partial index whose condition
 * the query does not imply; PostgreSQL's planner then plans no use of it
 * (above). Returns the count, -1 when refused. */
static int64_t count_by_index(sm_testhost *th, const char *index, const char *where)
{
    char sql[512];
    if (on_postgres()) {
        char quoted[256]; /* where as a string literal's text: ' doubled */
        size_t n = 0;
        for (const char *c = where; *c && n + 2 < sizeof quoted; c++) {
            if (*c == '\'')
                quoted[n++] = '\'';
            quoted[n++] = *c;
        }
        quoted[n] = '\0';
        CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, pg_count_by_index), SM_OK);
        snprintf(sql, sizeof sql, "SELECT sm_test_count_by_index('%s', '%s')", index, quoted);
    } else {
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM messaging_messages INDEXED BY %s WHERE %s",
                 index, where);
    }
    int64_t n = -1;
    return sm_testhost_query_int(th, sql, &n) == SM_OK ? n : -1;
}

static void expect_partial_indexes_serve_their_queries(sm_testhost *th)
{
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(
                        th,
                        on_postgres() ? "SELECT COUNT(*) FROM pg_index WHERE indrelid ="
                                        " 'messaging_messages'::regclass AND indpred IS NOT NULL"
                                      : "SELECT COUNT(*) FROM pragma_index_list("
                                        "'messaging_messages') WHERE partial = 1",
                        &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 4);
    /* The shapes of store.c's statements (VISIBLE_UNREAD, the purges). */
    CU_ASSERT(count_by_index(th, "messaging_messages_unread_visible",
                             "recipient_lower = 'carol' AND is_read = 0 AND hidden = 0") >= 0);
    CU_ASSERT(count_by_index(th, "messaging_messages_unread_sender",
                             "recipient_lower = 'carol' AND is_read = 0 AND hidden = 0"
                             " AND sender_lower = 'alice'") >= 0);
    CU_ASSERT(count_by_index(th, "messaging_messages_expiry", "expires_at <= 1e12") >= 0);
    CU_ASSERT(count_by_index(th, "messaging_messages_read_at", "read_at <= 1e12") >= 0);
    /* A query that does not imply the condition cannot use the index. */
    CU_ASSERT_EQUAL(count_by_index(th, "messaging_messages_read_at", "read_at IS NULL"), -1);
}

/* Schema version 4: room messages stay out of the unread, expiry and
 * read_at indexes (a commit that stores one writes fewer pages), and
 * every query still finds its index. */
static void room_messages_stay_out_of_the_private_indexes(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    enter(th, a, "general");
    for (int i = 0; i < 3; i++) {
        json_t *r = callf(th, a, "public_message", "{\"content\": \"hi %d\"}", i);
        expect_response(r, "public_message");
        json_decref(r);
    }
    sm_testhost_disconnect(th, c); /* offline: the private message is stored */
    char expiry[64];
    snprintf(expiry, sizeof expiry, ", \"expires_at\": %.0f", (double)NOW0 + 60);
    pm(th, a, "carol", expiry);
    expect_partial_indexes_serve_their_queries(th);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 4);
    CU_ASSERT_EQUAL(count_by_index(th, "messaging_messages_unread_visible",
                                   "recipient_lower = 'carol' AND is_read = 0 AND hidden = 0"),
                    1);
    CU_ASSERT_EQUAL(count_by_index(th, "messaging_messages_expiry", "expires_at <= 1e12"), 1);
    /* The indexes hold the private row alone. */
    CU_ASSERT_EQUAL(count_by_index(th, "messaging_messages_unread_visible",
                                   "recipient_lower IS NOT NULL"),
                    1);
    sm_testhost_free(th);
}

/* A database from before read times (schema version 2): its read private
 * messages count as read when they were sent, so retention can reach them;
 * unread ones keep read_at NULL. */
static void upgrade_counts_earlier_reads_as_read_when_sent(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_new(FAST_LIMITS "messaging = { private_retention = 3600; };", &th), SM_OK);
    add_users(th);
    /* The version 2 table as migrations 1 and 2 leave it (indexes aside). */
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(
            th, "CREATE TABLE messaging_ids (last_id INTEGER NOT NULL);"
                "INSERT INTO messaging_ids (last_id) VALUES (3);"
                "CREATE TABLE messaging_messages (id INTEGER PRIMARY KEY,"
                " kind TEXT NOT NULL, sender TEXT NOT NULL, room TEXT, room_lower TEXT,"
                " recipient TEXT, recipient_lower TEXT, content TEXT NOT NULL,"
                " encrypted INTEGER NOT NULL DEFAULT 0, signature TEXT,"
                " created_at REAL NOT NULL, expires_at REAL,"
                " is_read INTEGER NOT NULL DEFAULT 0, sender_lower TEXT,"
                " hidden INTEGER NOT NULL DEFAULT 0);"
                "INSERT INTO messaging_messages (id, kind, sender, sender_lower, recipient,"
                " recipient_lower, content, created_at, is_read) VALUES"
                " (1, 'private', 'alice', 'alice', 'carol', 'carol', 'x', 1699990000, 1),"
                " (2, 'private', 'alice', 'alice', 'carol', 'carol', 'x', 1699999000, 1),"
                " (3, 'private', 'alice', 'alice', 'carol', 'carol', 'x', 1699990000, 0);"
                "INSERT INTO sm_migrations (owner, version, applied_at)"
                " VALUES ('messaging', 1, 0), ('messaging', 2, 0);"),
        SM_OK);
    load(th, POLICY_VETO_SO, "policy_veto");
    load(th, MESSAGING_SO, "messaging");
    CU_ASSERT_EQUAL(count_rows(th, "read_at = created_at"), 2);
    CU_ASSERT_EQUAL(count_rows(th, "id = 3 AND read_at IS NULL"), 1);
    sm_testhost_advance(th, 30); /* id 1 was read 10,030 s ago, id 2 1,030 s ago */
    CU_ASSERT_EQUAL(row_exists(th, 1), 0);
    CU_ASSERT_EQUAL(row_exists(th, 2), 1);
    sm_testhost_advance(th, 2580); /* +2610: id 2 is 3,610 s old */
    CU_ASSERT_EQUAL(row_exists(th, 2), 0);
    CU_ASSERT_EQUAL(row_exists(th, 3), 1);
    expect_partial_indexes_serve_their_queries(th); /* and versions 3 and 4 on top */
    sm_testhost_free(th);
}

/* ---- deleted rooms ------------------------------------------------------ */

/* auth_users, policy_veto, the real rooms plugin (default room "general")
 * and messaging: rooms.delete reaches messaging only through the core. */
static sm_testhost *start_with_rooms(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(FAST_LIMITS, &th), SM_OK);
    add_users(th);
    load(th, POLICY_VETO_SO, "policy_veto");
    load(th, ROOMS_SO, "rooms");
    load(th, MESSAGING_SO, "messaging");
    return th;
}

static void join(sm_testhost *th, sm_session_id s, const char *room)
{
    json_t *r = callf(th, s, "join_room", "{\"room_name\": \"%s\"}", room);
    expect_response(r, "join_room");
    json_decref(r);
}

static json_t *delete_room(sm_testhost *th, const char *room)
{
    json_t *args = json_pack("{s:s}", "room", room);
    json_t *answer = sm_testhost_admin(th, "rooms.delete", args);
    json_decref(args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(answer);
    return answer;
}

/* safemessenger-admin rooms delete: the room's history goes with it, so
 * whoever creates a room of that name later, in any case, reads none of
 * it. Other rooms' history and private messages stay. */
static void deleted_room_takes_its_history_with_it(void)
{
    sm_testhost *th = start_with_rooms();
    sm_session_id a = user(th, "alice", 1), b = user(th, "Bob", 2);
    join(th, a, "Lobby");
    join(th, b, "lobby");
    post(th, a, "old one");
    post(th, b, "old two");
    join(th, b, "general");
    json_int_t kept = post(th, b, "stays");
    json_int_t private_id = pm(th, a, "carol", NULL);
    CU_ASSERT_EQUAL(count_rows(th, "room_lower = 'lobby'"), 2);

    json_t *answer = delete_room(th, "LOBBY");
    CU_ASSERT_TRUE(json_is_true(json_object_get(answer, "ok")));
    CU_ASSERT_EQUAL(integer(json_object_get(answer, "result"), "sessions_moved_out"), 1);
    json_decref(answer);
    CU_ASSERT_EQUAL(count_rows(th, "room_lower = 'lobby'"), 0);
    CU_ASSERT_EQUAL(row_exists(th, kept), 1);
    CU_ASSERT_EQUAL(row_exists(th, private_id), 1);

    /* Created again by another user, spelled another way. */
    join(th, b, "LOBBY");
    expect_history_ids(th, b, "LOBBY", "");
    json_int_t fresh = post(th, b, "new");
    join(th, a, "lobby");
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)fresh);
    expect_history_ids(th, a, "lobby", want);
    join(th, a, "general");
    snprintf(want, sizeof want, "%lld", (long long)kept);
    expect_history_ids(th, a, "general", want);
    sm_testhost_free(th);
}

/* A refused or unknown room deletes nothing. */
static void refused_room_delete_keeps_the_history(void)
{
    sm_testhost *th = start_with_rooms();
    sm_session_id a = user(th, "alice", 1);
    post(th, a, "in general");
    join(th, a, "Lobby");
    post(th, a, "in lobby");
    json_t *answer = delete_room(th, "General"); /* the default room: configured */
    CU_ASSERT_STRING_EQUAL(str(answer, "status"), "state");
    json_decref(answer);
    answer = delete_room(th, "nowhere");
    CU_ASSERT_STRING_EQUAL(str(answer, "status"), "not_found");
    json_decref(answer);
    CU_ASSERT_EQUAL(count_rows(th, NULL), 2);
    sm_testhost_free(th);
}

/* ---- login, ids, start-up ----------------------------------------------- */

static void unread_count_attribute_set_at_login(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    json_int_t id = pm(th, a, "carol", NULL);
    pm(th, a, "carol", NULL);
    pm(th, a, "carol", NULL);
    pm(th, a, "Bob", NULL);
    sm_session_id c = user(th, "CAROL", 3);
    json_t *r = callf(th, c, "test_get_attr", "{\"key\": \"messaging.unread_count\"}");
    CU_ASSERT_STRING_EQUAL(str(expect_response(r, "test_get_attr"), "value"), "3");
    json_decref(r);
    r = callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)id);
    json_decref(r);
    sm_session_id c2 = user(th, "carol", 3);
    r = callf(th, c2, "test_get_attr", "{\"key\": \"messaging.unread_count\"}");
    CU_ASSERT_STRING_EQUAL(str(expect_response(r, "test_get_attr"), "value"), "2");
    json_decref(r);
    sm_session_id d = user(th, "dave", 6);
    r = callf(th, d, "test_get_attr", "{\"key\": \"messaging.unread_count\"}");
    CU_ASSERT_STRING_EQUAL(str(expect_response(r, "test_get_attr"), "value"), "0");
    json_decref(r);
    sm_testhost_free(th);
}

static void ids_are_unique_across_public_and_private(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1);
    enter(th, a, "general");
    json_int_t last = 0;
    for (int i = 0; i < 6; i++) {
        json_int_t id;
        if (i % 2) {
            id = pm(th, a, "Bob", NULL);
        } else {
            json_t *r = callf(th, a, "public_message", "{\"content\": \"p\"}");
            id = integer(expect_response(r, "public_message"), "id");
            json_decref(r);
        }
        CU_ASSERT_EQUAL(id, last + 1);
        last = id;
    }
    /* Deleting the newest row does not hand its id out again. */
    CU_ASSERT_EQUAL(sm_testhost_exec(th, "DELETE FROM messaging_messages"), SM_OK);
    CU_ASSERT_EQUAL(pm(th, a, "Bob", NULL), last + 1);
    sm_testhost_free(th);
}

static int load_messaging(const char *config, int with_users)
{
    sm_testhost *th = NULL;
    if (sm_testhost_new(config, &th) != SM_OK)
        return 1000;
    if (with_users && (sm_testhost_exec(th, users_sql) != SM_OK ||
                       sm_testhost_load(th, USERS_TABLE_SO, "users_table") != SM_OK)) {
        sm_testhost_free(th);
        return 1001;
    }
    int rc = sm_testhost_load(th, MESSAGING_SO, "messaging");
    sm_testhost_free(th);
    return rc;
}

static void start_fails_without_users_provider(void)
{
    CU_ASSERT_NOT_EQUAL(load_messaging(NULL, 0), SM_OK);
    CU_ASSERT_EQUAL(load_messaging(NULL, 1), SM_OK);
}

static void bad_config_refused_at_load(void)
{
    const char *bad[] = {"messaging = { max_content_bytes = 0; };",
                         "messaging = { max_content_bytes = 1048577; };",
                         "messaging = { max_content_bytes = \"16k\"; };",
                         "messaging = { max_unread = 0; };",
                         "messaging = { max_unread_per_sender = 0; };",
                         "messaging = { max_unread_per_sender = 1000000001; };",
                         "messaging = { max_expiry = 0; };",
                         "messaging = { max_expiry = 1.5; };",
                         NULL};
    for (const char **c = bad; *c; c++)
        CU_ASSERT_NOT_EQUAL(load_messaging(*c, 1), SM_OK);
    CU_ASSERT_EQUAL(load_messaging("messaging = { max_content_bytes = 1048576; max_unread = 1;"
                                   " max_unread_per_sender = 1000000000;"
                                   " max_expiry = 60; };",
                                   1),
                    SM_OK);
}

static void retention_out_of_range_is_refused(void)
{
    const char *bad[] = {"messaging = { private_retention = 59; };",
                         "messaging = { public_retention = 1; };",
                         "messaging = { private_retention = -1; };",
                         "messaging = { public_retention = 315360001; };",
                         "messaging = { private_retention = 60.5; };",
                         "messaging = { public_retention = \"1d\"; };",
                         NULL};
    for (const char **c = bad; *c; c++)
        CU_ASSERT_NOT_EQUAL(load_messaging(*c, 1), SM_OK);
    CU_ASSERT_EQUAL(load_messaging("messaging = { private_retention = 0;"
                                   " public_retention = 0; };", 1), SM_OK);
    CU_ASSERT_EQUAL(load_messaging("messaging = { private_retention = 60;"
                                   " public_retention = 315360000; };", 1), SM_OK);
}

/* ---- a cluster: another node on the same PostgreSQL -------------------- */

/* Another node of a cluster, on PostgreSQL only: a connection of its own
 * to the host's schema (sm_testhost_<pid>_..., include/safemessenger/
 * testhost.h; one host at a time) that holds a transaction open, and a
 * thread that commits it once a statement of the host waits for its
 * locks (or after 10 s). The host's next command then runs against a
 * write that lands while it runs, as two nodes' commands can. */
typedef struct other_node {
    PGconn *conn;
    pthread_t thread;
    int waited_for; /* the host waited for this transaction (set by the thread) */
} other_node;

static void other_exec(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(res);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    CU_ASSERT(t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK);
    PQclear(res);
}

/* Connects to th's schema and runs sql in a transaction left open. A
 * failure frees th before it ends the test, as load() does. */
static void other_begin(sm_testhost *th, other_node *o, const char *sql)
{
    memset(o, 0, sizeof *o);
    o->conn = PQconnectdb(pg_base);
    char find[200];
    snprintf(find, sizeof find,
             "SELECT set_config('search_path', nspname, false) FROM pg_namespace"
             " WHERE nspname LIKE 'sm\\_testhost\\_%ld\\_%%'",
             (long)getpid());
    PGresult *res = PQexec(o->conn, find);
    int found = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        fprintf(stderr, "no schema of this host: %s", PQerrorMessage(o->conn));
        PQfinish(o->conn);
        sm_testhost_free(th);
        CU_FAIL_FATAL("another node cannot reach the host's schema");
    }
    other_exec(o->conn, "BEGIN");
    other_exec(o->conn, sql);
}

static void *commit_when_waited_for(void *arg)
{
    other_node *o = arg;
    PGconn *watch = PQconnectdb(pg_base);
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE %d = ANY(pg_blocking_pids(pid))",
             PQbackendPID(o->conn));
    const struct timespec pause = {0, 5000000};
    for (int i = 0; i < 2000 && !o->waited_for && PQstatus(watch) == CONNECTION_OK; i++) {
        PGresult *res = PQexec(watch, sql);
        o->waited_for = PQresultStatus(res) == PGRES_TUPLES_OK && atoi(PQgetvalue(res, 0, 0)) > 0;
        PQclear(res);
        if (!o->waited_for)
            nanosleep(&pause, NULL);
    }
    PQfinish(watch);
    PQclear(PQexec(o->conn, "COMMIT"));
    return NULL;
}

static void other_commit_when_waited_for(other_node *o)
{
    CU_ASSERT_EQUAL_FATAL(pthread_create(&o->thread, NULL, commit_when_waited_for, o), 0);
}

/* Waits for the commit; whether the host waited for it. */
static int other_end(other_node *o)
{
    pthread_join(o->thread, NULL);
    PQfinish(o->conn);
    return o->waited_for;
}

/* Another node marks two of carol's three messages read while her
 * mark_all_read runs here: it marks and answers for the third alone (the
 * other node sent the receipts of the two), where checking the count of
 * rows it changed against what it had listed gave 1005. */
static void mark_all_read_answers_for_what_it_marked_itself(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    json_int_t m1 = pm(th, a, "carol", NULL), m2 = pm(th, a, "carol", NULL);
    json_int_t m3 = pm(th, a, "carol", NULL);
    sm_testhost_clear(th);
    other_node o;
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE messaging_messages SET is_read = 1, read_at = %.0f WHERE id IN (%lld, %lld)",
             NOW0 - 1, (long long)m1, (long long)m2);
    other_begin(th, &o, sql);
    other_commit_when_waited_for(&o);
    json_t *r = sm_testhost_call(th, c, "mark_all_read", "{}");
    CU_ASSERT_TRUE(other_end(&o));
    expect_marked(r, 1, 0);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)m3);
    expect_receipts(th, a, "carol", NOW0, want);
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 1 AND read_at < 1700000000"), 2);
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 0"), 0);
    sm_testhost_free(th);
}

/* Another node marks the message read while mark_message_read runs here:
 * one receipt in all (the other node's), its read time stays. */
static void mark_read_sends_no_second_receipt_when_another_node_read_it(void)
{
    sm_testhost *th = start(NULL);
    sm_session_id a = user(th, "alice", 1), c = user(th, "carol", 3);
    json_int_t id = pm(th, a, "carol", NULL);
    sm_testhost_clear(th);
    other_node o;
    char sql[128];
    snprintf(sql, sizeof sql,
             "UPDATE messaging_messages SET is_read = 1, read_at = %.0f WHERE id = %lld",
             NOW0 - 1, (long long)id);
    other_begin(th, &o, sql);
    other_commit_when_waited_for(&o);
    json_t *r = callf(th, c, "mark_message_read", "{\"message_id\": %lld}", (long long)id);
    CU_ASSERT_TRUE(other_end(&o));
    CU_ASSERT_EQUAL(integer(expect_response(r, "mark_message_read"), "message_id"), id);
    json_decref(r);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0);
    CU_ASSERT_EQUAL(count_rows(th, "is_read = 1 AND read_at < 1700000000"), 1);
    sm_testhost_free(th);
}

/* Another node stores carol's second unread message while alice's third
 * is checked here against max_unread = 2: refused, as on one node, not
 * counted before the other node's commit and stored beyond the cap. */
static void unread_cap_holds_across_nodes(void)
{
    sm_testhost *th = start("messaging = { max_unread = 2; };");
    sm_session_id a = user(th, "alice", 1);
    pm(th, a, "carol", NULL);
    other_node o;
    other_begin(th, &o, "UPDATE messaging_ids SET last_id = last_id + 1;"
                    "INSERT INTO messaging_messages (id, kind, sender, sender_lower, recipient,"
                    " recipient_lower, content, created_at) VALUES ((SELECT last_id FROM"
                    " messaging_ids), 'private', 'Bob', 'bob', 'carol', 'carol', 'x', 1700000000)");
    other_commit_when_waited_for(&o);
    json_t *r = callf(th, a, "private_message",
                      "{\"recipient\": \"carol\", \"content\": \"hi\", \"encrypted\": false}");
    CU_ASSERT_TRUE(other_end(&o));
    expect_error_message(r, 1008, "private_message", "the recipient has too many unread messages");
    CU_ASSERT_EQUAL(count_rows(th, "recipient_lower = 'carol'"), 2);
    sm_testhost_free(th);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(public_message_reaches_every_room_session_reply_first),
        SM_TEST(public_message_from_no_room_is_1009),
        SM_TEST(send_message_must_name_the_current_room),
        SM_TEST(every_action_needs_login),
        SM_TEST(content_beyond_configured_limit_is_1004),
        SM_TEST(content_limit_changes_on_reload),
        SM_TEST(private_message_online_reaches_every_recipient_session),
        SM_TEST(private_message_offline_is_stored_and_listed_later),
        SM_TEST(private_message_recipient_checks),
        SM_TEST(private_message_signature_limit_is_4096_bytes_inclusive),
        SM_TEST(private_message_denied_by_policy_is_1002),
        SM_TEST(private_message_dropped_by_policy_looks_delivered),
        SM_TEST(private_message_to_yourself_reaches_your_sessions),
        SM_TEST(unread_cap_answers_1008_and_stores_nothing),
        SM_TEST(per_sender_cap_answers_1008_and_leaves_room_for_others),
        SM_TEST(blocking_a_flooder_frees_the_recipients_cap),
        SM_TEST(blocked_senders_waiting_messages_stop_counting_at_once),
        SM_TEST(blocked_senders_messages_are_not_listed),
        SM_TEST(blocked_sender_meets_its_cap_as_anyone_would),
        SM_TEST(blocked_sender_gets_the_reply_anyone_gets),
        SM_TEST(unread_messages_come_in_pages_of_100),
        SM_TEST(mark_read_sends_receipt_once_to_every_sender_session),
        SM_TEST(mark_read_same_1009_for_unknown_and_foreign_ids),
        SM_TEST(mark_all_read_marks_everything_with_one_receipt_each),
        SM_TEST(mark_all_read_stops_at_up_to_id),
        SM_TEST(mark_all_read_works_in_batches_of_1000),
        SM_TEST(mark_all_read_leaves_blocked_senders_unanswered),
        SM_TEST(get_public_key_key_null_or_1009),
        SM_TEST(get_history_newest_first_with_paging),
        SM_TEST(get_history_checks_room_and_limit),
        SM_TEST(get_history_page_stops_at_max_page_bytes),
        SM_TEST(unread_page_stops_at_max_page_bytes),
        SM_TEST(max_page_bytes_out_of_range_is_refused),
        SM_TEST(expires_at_must_be_future_and_within_limit),
        SM_TEST(expired_messages_vanish_then_are_purged_within_a_minute),
        SM_TEST(purge_works_in_batches),
        SM_TEST(purge_drains_a_large_backlog_within_a_minute),
        SM_TEST(read_private_messages_go_private_retention_after_being_read),
        SM_TEST(room_history_older_than_public_retention_leaves_get_history),
        SM_TEST(retention_zero_keeps_that_kind_for_ever),
        SM_TEST(retention_backlog_drains_in_bounded_runs),
        SM_TEST(upgrade_counts_earlier_reads_as_read_when_sent),
        SM_TEST(room_messages_stay_out_of_the_private_indexes),
        SM_TEST(deleted_room_takes_its_history_with_it),
        SM_TEST(refused_room_delete_keeps_the_history),
        SM_TEST(unread_count_attribute_set_at_login),
        SM_TEST(ids_are_unique_across_public_and_private),
        SM_TEST(start_fails_without_users_provider),
        SM_TEST(bad_config_refused_at_load),
        SM_TEST(retention_out_of_range_is_refused),
        SM_TEST_END,
    };
    /* What only a shared PostgreSQL has: another node writing meanwhile. */
    static const sm_test_case cluster_cases[] = {
        SM_TEST(mark_all_read_answers_for_what_it_marked_itself),
        SM_TEST(mark_read_sends_no_second_receipt_when_another_node_read_it),
        SM_TEST(unread_cap_holds_across_nodes),
        SM_TEST_END,
    };
    const char *pg = getenv(SM_TESTHOST_POSTGRES_ENV);
    if (pg && *pg && service_url_read(SM_TESTHOST_POSTGRES_ENV, pg_base, sizeof pg_base) != 0)
        return 1;
    enum { N = sizeof cases / sizeof cases[0], M = sizeof cluster_cases / sizeof cluster_cases[0] };
    sm_test_case all[N + M - 1];
    memcpy(all, cases, sizeof cases);
    if (on_postgres())
        memcpy(all + N - 1, cluster_cases, sizeof cluster_cases);
    return sm_test_run(on_postgres() ? "plugin_messaging_pg" : "plugin_messaging", all, NULL,
                       NULL);
}
