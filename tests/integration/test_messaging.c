/* The messaging plugin in the real server behind auth and rooms, through
 * the client library: public fan-out in the default room with the reply
 * first, private messages to every device of an online user and stored
 * for an offline one (unread_count at login, get_unread_messages), read
 * receipts, room history, and durability: a message acknowledged just
 * before a SIGKILL is there after a restart on the same database, and the
 * database passes SQLite's integrity check.
 *
 * The tests share one server (the durability test starts its own), so
 * each names its users with its own prefix; events about other tests'
 * users (user_joined, user_left) are skipped by action. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PLUGINS                                                                                    \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"rooms\", \"messaging\"]; };\n"  \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"            \
    "         registrations_per_hour = 1000; };\n"

#define PASSWORD "correct horse battery"

static harness_server srv;

static int init(void)
{
    return harness_start(&srv, PLUGINS);
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

/* A string member, or "<none>" so a failed comparison never passes NULL
 * to strcmp. */
static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static json_int_t jint(const json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static sm_client *connect_to(const harness_server *s)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    return c;
}

static sm_client *registered_on(const harness_server *s, const char *name)
{
    sm_client *c = connect_to(s);
    sm_message *m =
        harness_callf(c, "register", "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->action, "registration_success");
    CU_ASSERT_STRING_EQUAL(jstr(m->payload, "assigned_room"), "general");
    sm_message_free(m);
    return c;
}

/* A new connection logged in as name; *unread (may be NULL) receives
 * login_success.unread_count. */
static sm_client *logged_in_on(const harness_server *s, const char *name, json_int_t *unread)
{
    sm_client *c = connect_to(s);
    sm_message *m = harness_callf(c, "login", "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->action, "login_success");
    CU_ASSERT_TRUE(json_is_integer(json_object_get(m->payload, "unread_count")));
    if (unread)
        *unread = jint(m->payload, "unread_count");
    sm_message_free(m);
    return c;
}

/* The next event with this action (others are skipped); NULL on timeout. */
static sm_message *next_event(sm_client *c, const char *action)
{
    for (;;) {
        sm_message *m = NULL;
        if (sm_client_next_event(c, 5000, &m) != SM_CLIENT_OK)
            return NULL;
        if (strcmp(m->action, action) == 0)
            return m;
        sm_message_free(m);
    }
}

/* Drops every event that arrived so far: a round trip, then what is queued. */
static void drain(sm_client *c)
{
    sm_message *m = harness_callf(c, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL(m);
    sm_message_free(m);
    while (sm_client_next_event(c, 0, &m) == SM_CLIENT_OK)
        sm_message_free(m);
}

/* No event with this action reached c: a round trip, then the queue. */
static void expect_no_event(sm_client *c, const char *action)
{
    sm_message *m = harness_callf(c, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL(m);
    sm_message_free(m);
    while (sm_client_next_event(c, 0, &m) == SM_CLIENT_OK) {
        CU_ASSERT_STRING_NOT_EQUAL(m->action, action);
        sm_message_free(m);
    }
}

static sm_message *send_pm(sm_client *c, const char *to, const char *content)
{
    return harness_callf(c, "private_message", "{s:s, s:s, s:b, s:s}", "recipient", to, "content",
                         content, "encrypted", 1, "signature", "c2lnbmF0dXJl");
}

static void public_message_fans_out_to_room_with_reply_first(void)
{
    sm_client *c[3];
    const char *names[3] = {"pa_ann", "pa_ben", "pa_cid"};
    for (int i = 0; i < 3; i++)
        c[i] = registered_on(&srv, names[i]);
    for (int i = 0; i < 3; i++)
        drain(c[i]);

    uint64_t nonce = 0;
    json_t *p = json_pack("{s:s}", "content", "hello, room");
    CU_ASSERT_EQUAL_FATAL(sm_client_send(c[0], "public_message", p, &nonce), SM_CLIENT_OK);
    json_decref(p);
    /* On the sender's connection the reply comes before the event. */
    sm_message *r = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv(c[0], 5000, &r), SM_CLIENT_OK);
    CU_ASSERT_STRING_EQUAL(r->type, "response");
    CU_ASSERT_STRING_EQUAL(r->action, "public_message");
    char want_nonce[24];
    snprintf(want_nonce, sizeof want_nonce, "%llu", (unsigned long long)nonce);
    CU_ASSERT_STRING_EQUAL(r->reply_to ? r->reply_to : "", want_nonce);
    json_int_t id = jint(r->payload, "id");
    CU_ASSERT_TRUE(id > 0);
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), "general");
    CU_ASSERT_TRUE(json_is_number(json_object_get(r->payload, "timestamp")));
    sm_message_free(r);

    for (int i = 0; i < 3; i++) {
        sm_message *ev = next_event(c[i], "public_message");
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_EQUAL(json_object_size(ev->payload), 5);
        CU_ASSERT_EQUAL(jint(ev->payload, "id"), id);
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "sender"), "pa_ann");
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "content"), "hello, room");
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "room"), "general");
        sm_message_free(ev);
    }
    for (int i = 0; i < 3; i++)
        sm_client_close(c[i], 1000);
}

static void private_message_reaches_both_devices_of_online_user(void)
{
    sm_client *alice = registered_on(&srv, "pb_alice");
    sm_client *bob1 = registered_on(&srv, "pb_Bob");
    sm_client *bob2 = logged_in_on(&srv, "pb_bob", NULL);
    drain(alice);
    sm_message *r = send_pm(alice, "PB_BOB", "ciphertext==");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "message_delivered");
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "recipient"), "pb_Bob");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "online")));
    json_int_t id = jint(r->payload, "message_id");
    CU_ASSERT_TRUE(id > 0);
    sm_message_free(r);
    sm_client *bobs[2] = {bob1, bob2};
    for (int i = 0; i < 2; i++) {
        sm_message *ev = next_event(bobs[i], "private_message");
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_EQUAL(json_object_size(ev->payload), 7);
        CU_ASSERT_EQUAL(jint(ev->payload, "id"), id);
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "sender"), "pb_alice");
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "recipient"), "pb_Bob");
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "content"), "ciphertext==");
        CU_ASSERT_TRUE(json_is_true(json_object_get(ev->payload, "encrypted")));
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "signature"), "c2lnbmF0dXJl");
        sm_message_free(ev);
    }
    expect_no_event(alice, "private_message");
    sm_client_close(alice, 1000);
    sm_client_close(bob1, 1000);
    sm_client_close(bob2, 1000);
}

static void offline_message_waits_unread_then_receipt_reaches_sender(void)
{
    sm_client *bob = registered_on(&srv, "pc_bob");
    sm_client_close(bob, 1000);
    sm_client *alice = registered_on(&srv, "pc_alice");
    json_int_t ids[2];
    for (int i = 0; i < 2; i++) {
        sm_message *r = send_pm(alice, "pc_bob", i ? "second" : "first");
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_STRING_EQUAL(r->action, "message_delivered");
        CU_ASSERT_TRUE(json_is_false(json_object_get(r->payload, "online")));
        ids[i] = jint(r->payload, "message_id");
        sm_message_free(r);
    }
    CU_ASSERT_TRUE(ids[1] > ids[0]);

    json_int_t unread = -1;
    bob = logged_in_on(&srv, "pc_bob", &unread);
    CU_ASSERT_EQUAL(unread, 2);
    sm_message *r = harness_callf(bob, "get_unread_messages", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "unread_messages");
    CU_ASSERT_TRUE(json_is_false(json_object_get(r->payload, "more")));
    json_t *list = json_object_get(r->payload, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_EQUAL(jint(json_array_get(list, 0), "id"), ids[0]);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "content"), "first");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "sender"), "pc_alice");
    CU_ASSERT_EQUAL(jint(json_array_get(list, 1), "id"), ids[1]);
    sm_message_free(r);

    drain(alice);
    r = harness_callf(bob, "mark_message_read", "{s:I}", "message_id", ids[0]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "mark_message_read");
    CU_ASSERT_EQUAL(jint(r->payload, "message_id"), ids[0]);
    sm_message_free(r);
    sm_message *ev = next_event(alice, "message_read");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(jint(ev->payload, "message_id"), ids[0]);
    CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "reader"), "pc_bob");
    CU_ASSERT_TRUE(json_is_number(json_object_get(ev->payload, "timestamp")));
    sm_message_free(ev);
    /* Marking again: the reply again, no second receipt. */
    r = harness_callf(bob, "mark_message_read", "{s:I}", "message_id", ids[0]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "mark_message_read");
    sm_message_free(r);
    expect_no_event(alice, "message_read");
    /* The sender is not the recipient: the same 1009 as an unknown id. */
    r = harness_callf(alice, "mark_message_read", "{s:I}", "message_id", ids[1]);
    CU_ASSERT_EQUAL(harness_error_code(r), 1009);
    sm_message_free(r);
    sm_client_close(alice, 1000);
    sm_client_close(bob, 1000);
}

/* The extension of issue 10: one command marks what waits, up to an id,
 * with the receipt of each message to its sender. */
static void mark_all_read_marks_waiting_messages_with_a_receipt_each(void)
{
    sm_client *bob = registered_on(&srv, "ma_bob");
    sm_client_close(bob, 1000);
    sm_client *alice = registered_on(&srv, "ma_alice");
    json_int_t ids[3];
    for (int i = 0; i < 3; i++) {
        sm_message *r = send_pm(alice, "ma_bob", "waiting");
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_STRING_EQUAL_FATAL(r->action, "message_delivered");
        ids[i] = jint(r->payload, "message_id");
        sm_message_free(r);
    }
    json_int_t unread = -1;
    bob = logged_in_on(&srv, "ma_bob", &unread);
    CU_ASSERT_EQUAL(unread, 3);
    drain(alice);
    sm_message *r = harness_callf(bob, "mark_all_read", "{s:I}", "up_to_id", ids[1]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->type, "response");
    CU_ASSERT_STRING_EQUAL(r->action, "mark_all_read");
    CU_ASSERT_EQUAL(json_object_size(r->payload), 2);
    CU_ASSERT_EQUAL(jint(r->payload, "count"), 2);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r->payload, "more")));
    sm_message_free(r);
    for (int i = 0; i < 2; i++) {
        sm_message *ev = next_event(alice, "message_read");
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_EQUAL(jint(ev->payload, "message_id"), ids[i]);
        CU_ASSERT_STRING_EQUAL(jstr(ev->payload, "reader"), "ma_bob");
        CU_ASSERT_TRUE(json_is_number(json_object_get(ev->payload, "timestamp")));
        sm_message_free(ev);
    }
    r = harness_callf(bob, "mark_all_read", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(jint(r->payload, "count"), 1);
    sm_message_free(r);
    sm_message *ev = next_event(alice, "message_read");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(jint(ev->payload, "message_id"), ids[2]);
    sm_message_free(ev);
    /* Nothing left: count 0 and no receipt. */
    r = harness_callf(bob, "mark_all_read", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(jint(r->payload, "count"), 0);
    sm_message_free(r);
    expect_no_event(alice, "message_read");
    r = harness_callf(bob, "mark_all_read", "{s:i}", "up_to_id", 0);
    CU_ASSERT_EQUAL(harness_error_code(r), 1004);
    sm_message_free(r);
    sm_client *bob2 = logged_in_on(&srv, "ma_bob", &unread);
    CU_ASSERT_EQUAL(unread, 0);
    sm_client_close(bob2, 1000);
    sm_client_close(alice, 1000);
    sm_client_close(bob, 1000);
}

static void history_of_current_room_newest_first(void)
{
    sm_client *a = registered_on(&srv, "pd_ann");
    sm_client *b = registered_on(&srv, "pd_ben");
    sm_client *clients[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        sm_message *r = harness_callf(clients[i], "join_room", "{s:s}", "room_name", "PD_Room");
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_STRING_EQUAL(r->action, "join_room");
        sm_message_free(r);
    }
    json_int_t ids[3];
    const char *texts[3] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        sm_message *r = harness_callf(clients[i % 2], "send_message", "{s:s, s:s}", "room",
                                      "pd_room", "content", texts[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_STRING_EQUAL(r->action, "public_message");
        ids[i] = jint(r->payload, "id");
        sm_message_free(r);
    }
    sm_message *r = harness_callf(b, "get_history", "{s:s, s:i}", "room", "pd_room", "limit", 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->action, "get_history");
    CU_ASSERT_STRING_EQUAL(jstr(r->payload, "room"), "PD_Room");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r->payload, "more")));
    json_t *list = json_object_get(r->payload, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    json_t *newest = json_array_get(list, 0);
    CU_ASSERT_EQUAL(json_object_size(newest), 5);
    CU_ASSERT_EQUAL(jint(newest, "id"), ids[2]);
    CU_ASSERT_STRING_EQUAL(jstr(newest, "content"), "three");
    CU_ASSERT_STRING_EQUAL(jstr(newest, "sender"), "pd_ann");
    CU_ASSERT_STRING_EQUAL(jstr(newest, "room"), "PD_Room");
    CU_ASSERT_EQUAL(jint(json_array_get(list, 1), "id"), ids[1]);
    sm_message_free(r);
    r = harness_callf(b, "get_history", "{s:s, s:I}", "room", "pd_room", "before_id", ids[1]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    list = json_object_get(r->payload, "messages");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 1);
    CU_ASSERT_EQUAL(jint(json_array_get(list, 0), "id"), ids[0]);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r->payload, "more")));
    sm_message_free(r);
    /* Another room than one's own: 1002. */
    r = harness_callf(b, "get_history", "{s:s}", "room", "general");
    CU_ASSERT_EQUAL(harness_error_code(r), 1002);
    sm_message_free(r);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

/* Acknowledged means durable: a reply or event that reports a write is
 * sent only after the commit (docs/PLUGINS.md section 8, "reply after
 * commit"). The server is killed the moment message_delivered arrives; a
 * new server on the same database has it. */
static void acknowledged_message_survives_sigkill(void)
{
    harness_server first, second;
    memset(&second, 0, sizeof second);
    CU_ASSERT_EQUAL_FATAL(harness_start(&first, PLUGINS), 0);
    sm_client *bob = registered_on(&first, "pe_bob");
    sm_client_close(bob, 1000);
    sm_client *alice = registered_on(&first, "pe_alice");
    sm_message *r = send_pm(alice, "pe_bob", "must survive");
    CU_ASSERT_PTR_NOT_NULL(r);
    json_int_t id = r ? jint(r->payload, "message_id") : 0;
    CU_ASSERT_STRING_EQUAL(r ? r->action : "", "message_delivered");
    int status = 0;
    CU_ASSERT_EQUAL(harness_stop(&first, SIGKILL, &status), 0);
    CU_ASSERT_EQUAL(status, 128 + SIGKILL);
    sm_message_free(r);
    sm_client_free(alice);

    CU_ASSERT_EQUAL(harness_start_on(&second, &first, PLUGINS, NULL), 0);
    if (second.pid > 0) {
        json_int_t unread = -1;
        bob = logged_in_on(&second, "pe_bob", &unread);
        CU_ASSERT_EQUAL(unread, 1);
        r = harness_callf(bob, "get_unread_messages", NULL);
        CU_ASSERT_PTR_NOT_NULL(r);
        json_t *list = r ? json_object_get(r->payload, "messages") : NULL;
        CU_ASSERT_EQUAL(json_array_size(list), 1);
        CU_ASSERT_EQUAL(jint(json_array_get(list, 0), "id"), id);
        CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "content"), "must survive");
        sm_message_free(r);
        sm_client_close(bob, 1000);
        CU_ASSERT_EQUAL(harness_stop(&second, SIGTERM, &status), 0);
        CU_ASSERT_EQUAL(status, 0);
    }
    long long n = -1;
    /* SQLite's own check of the file (PostgreSQL has none an ordinary role
     * may run: its WAL replay is the server's). */
    if (!harness_postgresql()) {
        CU_ASSERT_EQUAL(harness_query_int(&first, "SELECT count(*) FROM pragma_integrity_check"
                                                  " WHERE integrity_check = 'ok'", &n), 0);
        CU_ASSERT_EQUAL(n, 1);
    }
    CU_ASSERT_EQUAL(harness_query_int(&first, "SELECT COUNT(*) FROM messaging_messages"
                                              " WHERE content = 'must survive'", &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(harness_cleanup(&second), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&first), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(public_message_fans_out_to_room_with_reply_first),
        SM_TEST(private_message_reaches_both_devices_of_online_user),
        SM_TEST(offline_message_waits_unread_then_receipt_reaches_sender),
        SM_TEST(mark_all_read_marks_waiting_messages_with_a_receipt_each),
        SM_TEST(history_of_current_room_newest_first),
        SM_TEST(acknowledged_message_survives_sigkill),
        SM_TEST_END,
    };
    return sm_test_run("integration_messaging", cases, init, fini);
}
