/* Send-queue accounting against the real server with auth, heartbeat,
 * rooms and messaging: a client that reads may pipeline history requests
 * without ever being cut off, and every reply comes in order within the
 * payload limit; clients that answer PINGs (they send PONGs) but never
 * read are cut off once their unsent output passes
 * limits.send_queue_bytes, the bytes libwebsockets buffers included, and
 * the server's memory stays bounded meanwhile.
 *
 * The room's history holds messages of 16000 control characters, which
 * JSON escapes to 96 kB each: without a byte limit one history page of
 * them is several MB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"
#define HISTORY_MESSAGES 40
#define SLOW_CLIENTS 12
#define PAGE_LIMIT 262144 /* messaging.max_page_bytes default = payload limit at 1 MiB */

static harness_server srv;

static int init(void)
{
    /* ASan keeps freed memory in a quarantine (256 MB by default), which
     * would hide what the server really holds: the RSS bound below is
     * about live memory. */
    const char *old = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    return harness_start(
        &srv, "server = { " HARNESS_SERVER_BASE " max_message_bytes = 262144; };\n"
              "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"
              " load = [\"auth\", \"heartbeat\", \"rooms\", \"messaging\"]; };\n"
              "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"
              "         registrations_per_hour = 1000; };\n"
              "heartbeat = { interval = 1; timeout = 60; };\n"
              "limits = { commands_per_second = 1000; command_burst = 1000;"
              " bytes_per_second = 100000000; bytes_burst = 100000000;"
              " room_fanout_bytes_per_second = 1000000000; room_fanout_burst = 1000000000; };\n");
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

static sm_client *registered(const char *name, int rcvbuf)
{
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.auto_pong = 1;
    o.rcvbuf = rcvbuf;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &o, &c), SM_CLIENT_OK);
    sm_message *m =
        harness_callf(c, "register", "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->action, "registration_success");
    sm_message_free(m);
    return c;
}

/* 1 when the message was posted. */
static int post(sm_client *c, const char *content)
{
    sm_message *m = harness_callf(c, "public_message", "{s:s}", "content", content);
    CU_ASSERT_PTR_NOT_NULL(m);
    int ok = m && strcmp(m->type, "response") == 0;
    CU_ASSERT_TRUE(ok);
    sm_message_free(m);
    return ok;
}

/* The next response or error (events are skipped). */
static sm_message *next_reply(sm_client *c)
{
    for (;;) {
        sm_message *m = NULL;
        if (sm_client_recv(c, 15000, &m) != SM_CLIENT_OK)
            return NULL;
        if (strcmp(m->type, "event") != 0)
            return m;
        sm_message_free(m);
    }
}

static sm_client *writer;

static void history_of_large_messages_is_written(void)
{
    writer = registered("writer", 0);
    char *content = malloc(16001);
    CU_ASSERT_PTR_NOT_NULL_FATAL(content);
    memset(content, '\001', 16000);
    content[16000] = '\0';
    for (int i = 0; i < HISTORY_MESSAGES; i++)
        post(writer, content);
    free(content);
}

static void pipelining_reader_gets_every_reply_in_order(void)
{
    sm_client *c = registered("reader", 0);
    enum { N = 60 };
    static const char *const actions[] = {"get_users", "get_history", "get_unread_messages"};
    static const char *const replies[] = {"get_users", "get_history", "unread_messages"};
    uint64_t nonces[N];
    json_t *history = json_pack("{s:s, s:i}", "room", "general", "limit", 200);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL_FATAL(
            sm_client_send(c, actions[i % 3], i % 3 == 1 ? history : NULL, &nonces[i]),
            SM_CLIENT_OK);
    json_decref(history);
    for (int i = 0; i < N; i++) {
        sm_message *m = next_reply(c);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        char want[24];
        snprintf(want, sizeof want, "%llu", (unsigned long long)nonces[i]);
        CU_ASSERT_STRING_EQUAL(m->type, "response");
        CU_ASSERT_STRING_EQUAL(m->action, replies[i % 3]);
        CU_ASSERT_STRING_EQUAL(m->reply_to ? m->reply_to : "", want);
        if (i % 3 == 1) {
            /* A page stops at the byte limit and says more. */
            json_t *list = json_object_get(m->payload, "messages");
            CU_ASSERT_TRUE(json_array_size(list) >= 1);
            CU_ASSERT_TRUE(json_array_size(list) < HISTORY_MESSAGES);
            CU_ASSERT_TRUE(json_is_true(json_object_get(m->payload, "more")));
            CU_ASSERT_TRUE(json_dumpb(m->payload, NULL, 0, JSON_COMPACT) <= PAGE_LIMIT);
        }
        sm_message_free(m);
    }
    /* Paging on with before_id reaches every message exactly once. */
    json_int_t before = 0, seen = 0;
    for (int more = 1; more;) {
        sm_message *m = before ? harness_callf(c, "get_history", "{s:s, s:i, s:I}", "room",
                                               "general", "limit", 200, "before_id", before)
                               : harness_callf(c, "get_history", "{s:s, s:i}", "room", "general",
                                               "limit", 200);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        CU_ASSERT_STRING_EQUAL_FATAL(m->type, "response");
        json_t *list = json_object_get(m->payload, "messages");
        size_t n = json_array_size(list);
        CU_ASSERT_TRUE_FATAL(n > 0 || !json_is_true(json_object_get(m->payload, "more")));
        for (size_t i = 0; i < n; i++) {
            json_int_t id = json_integer_value(json_object_get(json_array_get(list, i), "id"));
            CU_ASSERT_TRUE(before == 0 || id < before);
            before = id;
            seen++;
        }
        more = json_is_true(json_object_get(m->payload, "more"));
        sm_message_free(m);
    }
    CU_ASSERT_EQUAL(seen, HISTORY_MESSAGES);
    CU_ASSERT_EQUAL(harness_log_contains(&srv, "disconnecting"), 0);
    sm_client_close(c, 1000);
}

static long server_rss_kib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)srv.pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void pong(sm_client *c)
{
    json_t *p = json_pack("{s:f}", "timestamp", 1.0);
    sm_client_send(c, "PONG", p, NULL); /* fails once the server cut it: fine */
    json_decref(p);
}

static void readers_that_only_pong_are_cut_and_memory_stays_bounded(void)
{
    sm_client *slow[SLOW_CLIENTS];
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "slow%d", i);
        slow[i] = registered(name, 4096);
    }
    int cut_before = harness_log_count(&srv, "send queue over its bound") +
                     harness_log_count(&srv, "no output taken");
    long base = server_rss_kib();
    CU_ASSERT_TRUE_FATAL(base > 0);
    /* From here the slow clients read nothing: history pages they ask for
     * and the room's traffic pile up. */
    json_t *history = json_pack("{s:s, s:i}", "room", "general", "limit", 200);
    for (int i = 0; i < SLOW_CLIENTS; i++)
        for (int k = 0; k < 4; k++)
            sm_client_send(slow[i], "get_history", history, NULL);
    json_decref(history);
    char *content = malloc(16001);
    CU_ASSERT_PTR_NOT_NULL_FATAL(content);
    memset(content, 'y', 16000);
    content[16000] = '\0';
    long peak = base;
    int cut = 0;
    for (int i = 0; i < 1500 && cut < SLOW_CLIENTS; i++) {
        if (!post(writer, content))
            break;
        /* The writer reads its own events too, so they do not pile up. */
        sm_message *m = NULL;
        while (sm_client_next_event(writer, 0, &m) == SM_CLIENT_OK)
            sm_message_free(m);
        if (i % 10 == 0)
            for (int k = 0; k < SLOW_CLIENTS; k++)
                pong(slow[k]);
        long rss = server_rss_kib();
        if (rss > peak)
            peak = rss;
        cut = harness_log_count(&srv, "send queue over its bound") +
              harness_log_count(&srv, "no output taken") - cut_before;
    }
    free(content);
    printf("\n    server RSS %ld KiB before, peak %ld KiB (+%ld KiB); %d of %d slow clients cut\n",
           base, peak, peak - base, cut, SLOW_CLIENTS);
    CU_ASSERT_EQUAL(cut, SLOW_CLIENTS);
    /* Each cut-off session held at most send_queue_bytes (1 MiB) of
     * output; allow as much again per client for allocator slack. */
    CU_ASSERT_TRUE(peak - base < 2L * SLOW_CLIENTS * 1024 + 8192);
    /* Their connections were dropped: reading what got through ends in a
     * closed connection. The writer still works. */
    for (int i = 0; i < SLOW_CLIENTS; i++) {
        int rc = SM_CLIENT_OK;
        for (int k = 0; k < 100000 && rc == SM_CLIENT_OK; k++) {
            sm_message *x = NULL;
            rc = sm_client_recv(slow[i], 10000, &x);
            sm_message_free(x);
        }
        CU_ASSERT_TRUE(rc == SM_CLIENT_CLOSED || rc == SM_CLIENT_IO);
        sm_client_free(slow[i]);
    }
    sm_message *m = harness_callf(writer, "get_users", NULL);
    CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
    sm_message_free(m);
    sm_client_close(writer, 1000);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(history_of_large_messages_is_written),
        SM_TEST(pipelining_reader_gets_every_reply_in_order),
        SM_TEST(readers_that_only_pong_are_cut_and_memory_stays_bounded),
        SM_TEST_END,
    };
    return sm_test_run("sendq", cases, init, fini);
}
