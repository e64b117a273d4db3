/* The core's presence events on one node (plugin.h: SM_EVENT_USER_ONLINE,
 * _OFFLINE, _TOPIC_JOINED, _TOPIC_LEFT), through the presence_log test
 * plugin: once per change of a user's presence, however many sessions,
 * in the order they happen, with the session that made the change. */
#include <stdio.h>
#include <string.h>

#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

#define PLUGIN(name) SM_TEST_PLUGIN_DIR "/" name ".so"

static sm_testhost *th;

static int setup(void)
{
    if (sm_testhost_new(NULL, &th) != SM_OK ||
        sm_testhost_load(th, PLUGIN("presence_log"), "presence_log") != SM_OK)
        return -1;
    return 0;
}

static int teardown(void)
{
    sm_testhost_free(th);
    th = NULL;
    return 0;
}

/* The events since the last call, as "event:username[:topic]@session"
 * joined by spaces. */
static void take_log(char *out, size_t len)
{
    sm_session_id probe = sm_testhost_connect(th, NULL);
    json_t *r = sm_testhost_call(th, probe, "presence_log", "{}");
    sm_testhost_disconnect(th, probe);
    out[0] = '\0';
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const json_t *events = json_object_get(json_object_get(r, "payload"), "events");
    size_t i, used = 0;
    const json_t *e;
    json_array_foreach(events, i, e) {
        const char *topic = json_string_value(json_object_get(e, "topic"));
        int n = snprintf(out + used, len - used, "%s%s:%s%s%s@%lld", used ? " " : "",
                         json_string_value(json_object_get(e, "event")),
                         json_string_value(json_object_get(e, "username")), topic ? ":" : "",
                         topic ? topic : "",
                         (long long)json_integer_value(json_object_get(e, "session")));
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    json_decref(r);
}

static void expect_log(const char *want)
{
    char got[1024];
    take_log(got, sizeof got);
    CU_ASSERT_STRING_EQUAL(got, want);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "presence log: got \"%s\", want \"%s\"\n", got, want);
}

/* Empties the log, whatever it holds. */
static void expect_log_any(void)
{
    char got[1024];
    take_log(got, sizeof got);
}

static int topic_call(sm_session_id s, const char *action, const char *topic)
{
    char body[300];
    snprintf(body, sizeof body, "{\"topic\": \"%s\"}", topic);
    json_t *r = sm_testhost_call(th, s, action, body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    int status = (int)json_integer_value(json_object_get(json_object_get(r, "payload"), "status"));
    json_decref(r);
    return status;
}

static void presence_first_and_last_session_only(void)
{
    expect_log("");
    sm_session_id a1 = sm_testhost_connect_user(th, "Alice", 1);
    char want[256];
    snprintf(want, sizeof want, "online:Alice@%llu", (unsigned long long)a1);
    expect_log(want);
    sm_session_id a2 = sm_testhost_connect_user(th, "alice", 1);
    expect_log("");
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a1), SM_OK);
    expect_log("");
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, a2), SM_OK);
    snprintf(want, sizeof want, "offline:alice@%llu", (unsigned long long)a2);
    expect_log(want);
}

static void presence_topic_per_user_not_per_session(void)
{
    sm_session_id b1 = sm_testhost_connect_user(th, "Bob", 2);
    sm_session_id b2 = sm_testhost_connect_user(th, "Bob", 2);
    sm_session_id c = sm_testhost_connect_user(th, "Carol", 3);
    char want[256];
    snprintf(want, sizeof want, "online:Bob@%llu online:Carol@%llu", (unsigned long long)b1,
             (unsigned long long)c);
    expect_log(want);
    CU_ASSERT_EQUAL(topic_call(b1, "presence_join", "room:x"), SM_OK);
    snprintf(want, sizeof want, "joined:Bob:room:x@%llu", (unsigned long long)b1);
    expect_log(want);
    /* Joining again, and the user's second session: no change. */
    CU_ASSERT_EQUAL(topic_call(b1, "presence_join", "room:x"), SM_OK);
    CU_ASSERT_EQUAL(topic_call(b2, "presence_join", "room:x"), SM_OK);
    expect_log("");
    CU_ASSERT_EQUAL(topic_call(c, "presence_join", "room:x"), SM_OK);
    snprintf(want, sizeof want, "joined:Carol:room:x@%llu", (unsigned long long)c);
    expect_log(want);
    CU_ASSERT_EQUAL(topic_call(b1, "presence_leave", "room:x"), SM_OK);
    expect_log("");
    CU_ASSERT_EQUAL(topic_call(b1, "presence_leave", "room:x"), SM_ENOTFOUND);
    /* The last of Bob's sessions in the topic closes: it leaves, then Bob
     * is still online through b1. */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, b2), SM_OK);
    snprintf(want, sizeof want, "left:Bob:room:x@%llu", (unsigned long long)b2);
    expect_log(want);
    /* Carol closes: her login ends first (offline), then the session
     * leaves its topics; the name then comes from the users service,
     * which this host has not: the folded name. */
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, c), SM_OK);
    snprintf(want, sizeof want, "offline:Carol@%llu left:carol:room:x@%llu",
             (unsigned long long)c, (unsigned long long)c);
    expect_log(want);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, b1), SM_OK);
    snprintf(want, sizeof want, "offline:Bob@%llu", (unsigned long long)b1);
    expect_log(want);
}

static void presence_anonymous_sessions_do_not_count(void)
{
    sm_session_id s = sm_testhost_connect(th, NULL);
    CU_ASSERT_EQUAL(topic_call(s, "presence_join", "lobby"), SM_OK);
    CU_ASSERT_EQUAL(topic_call(s, "presence_leave", "lobby"), SM_OK);
    sm_testhost_disconnect(th, s);
    expect_log("");
}

static json_t *payload_of(sm_session_id s, const char *action, const char *body)
{
    json_t *r = sm_testhost_call(th, s, action, body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    json_t *p = json_incref(json_object_get(r, "payload"));
    json_decref(r);
    return p;
}

/* users_online and topic_users on one node answer at once from this
 * node's sessions; broadcast sends nothing and says SM_OK. */
static void presence_queries_and_broadcast_on_one_node(void)
{
    sm_session_id d1 = sm_testhost_connect_user(th, "Dora", 4);
    sm_session_id d2 = sm_testhost_connect_user(th, "dora", 4);
    sm_session_id e = sm_testhost_connect_user(th, "Eve", 5);
    sm_session_id anon = sm_testhost_connect(th, NULL);
    json_t *p = payload_of(anon, "presence_online", "{\"names\": [\"DORA\", \"frank\", \"eve\"]}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "status")), SM_OK);
    const json_t *online = json_object_get(p, "online");
    CU_ASSERT_EQUAL(json_array_size(online), 3);
    CU_ASSERT(json_is_true(json_array_get(online, 0)));
    CU_ASSERT(json_is_false(json_array_get(online, 1)));
    CU_ASSERT(json_is_true(json_array_get(online, 2)));
    json_decref(p);
    p = payload_of(anon, "presence_online", "{\"names\": [\"no spaces\"]}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "status")), SM_EINVAL);
    CU_ASSERT_PTR_NULL(json_object_get(p, "online"));
    json_decref(p);

    CU_ASSERT_EQUAL(topic_call(d1, "presence_join", "room:y"), SM_OK);
    CU_ASSERT_EQUAL(topic_call(d2, "presence_join", "room:y"), SM_OK);
    CU_ASSERT_EQUAL(topic_call(e, "presence_join", "room:y"), SM_OK);
    CU_ASSERT_EQUAL(topic_call(anon, "presence_join", "room:y"), SM_OK);
    p = payload_of(anon, "presence_users", "{\"topic\": \"room:y\"}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "status")), SM_OK);
    const json_t *users = json_object_get(p, "users");
    CU_ASSERT_EQUAL(json_array_size(users), 2); /* Dora once, Eve; not the anonymous one */
    int dora = 0, eve = 0;
    for (size_t i = 0; i < json_array_size(users); i++) {
        const char *u = json_string_value(json_array_get(users, i));
        dora += u && strcmp(u, "Dora") == 0;
        eve += u && strcmp(u, "Eve") == 0;
    }
    CU_ASSERT_EQUAL(dora, 1);
    CU_ASSERT_EQUAL(eve, 1);
    json_decref(p);
    p = payload_of(anon, "presence_users", "{\"topic\": \"room:none\"}");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(p, "users")), 0);
    json_decref(p);
    /* The core's own channels: a topic may not begin with a control byte. */
    CU_ASSERT_EQUAL(topic_call(d1, "presence_join", "\\u001eplugin:x"), SM_EINVAL);

    p = payload_of(anon, "presence_broadcast", "{\"x\": 1}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "status")), SM_OK);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "late_register")), SM_ESTATE);
    json_decref(p);
    p = payload_of(anon, "presence_log", "{}");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "broadcasts")), 0);
    json_decref(p);
    sm_testhost_disconnect(th, anon);
    sm_testhost_disconnect(th, e);
    sm_testhost_disconnect(th, d2);
    sm_testhost_disconnect(th, d1);
    expect_log_any();
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(presence_first_and_last_session_only),
        SM_TEST(presence_topic_per_user_not_per_session),
        SM_TEST(presence_anonymous_sessions_do_not_count),
        SM_TEST(presence_queries_and_broadcast_on_one_node),
        SM_TEST_END,
    };
    return sm_test_run("presence", cases, setup, teardown);
}
