/* Coalesced writes (server.coalesce_writes, core/wsframe.c) against the
 * real server: a room's traffic piles up for a member that does not read
 * (a small receive buffer), so its send queue holds many frames when the
 * socket turns writable and they leave in batches. Once it reads, every
 * event arrives intact and in order, each frame parsed by the client's own
 * WebSocket code and each envelope's signature and nonce (previous + 1)
 * checked by the client library. Over ws:// and wss://, and with
 * coalescing off as the reference. Nobody is cut off meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"
#define EVENTS 1000
/* Every LARGE_EVERY-th message is large: a frame with a 4-byte header
 * above 64 KiB sealed goes alone, between batches of small ones. */
#define LARGE_EVERY 50
#define LARGE_BYTES 50000
#define WINDOW 32

#define CONFIG_REST                                                                     \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"                                          \
    " load = [\"auth\", \"rooms\", \"messaging\"]; };\n"                                \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; };\n" \
    "messaging = { max_content_bytes = 65536; };\n"                                      \
    "limits = { commands_per_second = 100000; command_burst = 100000;"                  \
    " bytes_per_second = 100000000; bytes_burst = 100000000;"                           \
    " send_queue_bytes = 8388608; send_queue_messages = 5000;"                          \
    " room_fanout_bytes_per_second = 1000000000; room_fanout_burst = 1000000000; };\n"

static sm_client *registered(harness_server *s, const char *url, const char *ca,
                             const char *name, int rcvbuf)
{
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.url = url;
    o.ca_file = ca;
    o.rcvbuf = rcvbuf;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(s, &o, &c), SM_CLIENT_OK);
    sm_message *m =
        harness_callf(c, "register", "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->action, "registration_success");
    sm_message_free(m);
    return c;
}

static void content_of(int i, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "m%04d:", i);
    /* Varied sizes: sealed frames from ~300 bytes (2- and 4-byte headers
     * in one batch) to the occasional large one. */
    size_t fill = i % LARGE_EVERY == LARGE_EVERY - 1 ? LARGE_BYTES : (size_t)(i * 37 % 3000);
    if (n + fill >= len)
        fill = len - n - 1;
    memset(buf + n, 'a' + i % 26, fill);
    buf[n + fill] = '\0';
}

/* The room's traffic reaches a member that reads only afterwards. */
static void fan_out_to_a_late_reader(harness_server *s, const char *url, const char *ca)
{
    /* Small, but not below loopback's 64 KiB MSS: with 4 KiB the window
     * stays under one segment, and once in a while (1 run in ~30 over
     * TLS, io_threads 4) the kernel then fed it by window probes, 281 KB
     * in 34 s (ss: rwnd_limited 99.8%), and the suite ran into ctest's
     * timeout. Still far below the 2.5 MB the room sends it. */
    sm_client *reader = registered(s, url, ca, "reader", 65536);
    sm_client *sender = registered(s, url, ca, "sender", 0);
    static char content[LARGE_BYTES + 64];
    uint64_t nonces[EVENTS];
    /* Pipelined in windows (below the server's input queue of 64): the
     * sender does not wait for each reply either. */
    int sent = 0, replies = 0;
    while (replies < EVENTS) {
        for (; sent < EVENTS && sent - replies < WINDOW; sent++) {
            content_of(sent, content, sizeof content);
            json_t *p = json_pack("{s:s}", "content", content);
            CU_ASSERT_EQUAL_FATAL(sm_client_send(sender, "public_message", p, &nonces[sent]),
                                  SM_CLIENT_OK);
            json_decref(p);
        }
        sm_message *m = NULL;
        CU_ASSERT_EQUAL_FATAL(sm_client_recv(sender, 30000, &m), SM_CLIENT_OK);
        if (strcmp(m->type, "response") == 0) {
            char want[24];
            snprintf(want, sizeof want, "%llu", (unsigned long long)nonces[replies]);
            CU_ASSERT_STRING_EQUAL(m->reply_to ? m->reply_to : "", want);
            replies++;
        } else {
            CU_ASSERT_STRING_EQUAL(m->type, "event");
        }
        sm_message_free(m);
    }
    /* Now the reader reads: every event, in the order sent. */
    int got = 0;
    while (got < EVENTS) {
        sm_message *m = NULL;
        int rc = sm_client_recv(reader, 30000, &m);
        CU_ASSERT_EQUAL_FATAL(rc, SM_CLIENT_OK);
        if (strcmp(m->type, "event") == 0 && strcmp(m->action, "public_message") == 0) {
            content_of(got, content, sizeof content);
            const char *text = json_string_value(json_object_get(m->payload, "content"));
            CU_ASSERT_PTR_NOT_NULL_FATAL(text);
            if (strcmp(text, content) != 0) {
                fprintf(stderr, "event %d: got '%.12s' (%zu bytes)\n", got, text, strlen(text));
                CU_FAIL_FATAL("event out of order or damaged");
            }
            got++;
        }
        sm_message_free(m);
    }
    /* Still in step afterwards: a round trip on the reader. */
    sm_message *m = harness_callf(reader, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL(m);
    if (m)
        CU_ASSERT_STRING_EQUAL(m->type, "response");
    sm_message_free(m);
    CU_ASSERT_EQUAL(harness_log_contains(s, "disconnecting"), 0);
    sm_client_close(reader, 1000);
    sm_client_close(sender, 1000);
}

static void run(const char *server_section, int tls)
{
    harness_server s;
    char config[2048];
    int n = snprintf(config, sizeof config, "server = { " HARNESS_SERVER_BASE " %s };\n%s",
                     server_section, CONFIG_REST);
    CU_ASSERT_TRUE_FATAL(n > 0 && (size_t)n < sizeof config);
    int started = harness_start(&s, config);
    CU_ASSERT_EQUAL(started, 0);
    if (started != 0) {
        CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
        return;
    }
    char ca[512] = "";
    if (tls)
        CU_ASSERT_EQUAL(harness_path(&s, HARNESS_TLS_CERT, ca, sizeof ca), 0);
    fan_out_to_a_late_reader(&s, tls ? s.wss_url : s.url, tls ? ca : NULL);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void coalesced_events_arrive_intact_and_in_order(void)
{
    run("max_message_bytes = 262144;", 0);
}

static void coalesced_events_arrive_intact_and_in_order_over_tls(void)
{
    run("max_message_bytes = 262144;"
        " tls = { cert = \"@TLS_CERT@\"; key = \"@TLS_KEY@\"; };", 1);
}

static void uncoalesced_events_arrive_intact_and_in_order(void)
{
    run("max_message_bytes = 262144; coalesce_writes = false;", 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(coalesced_events_arrive_intact_and_in_order),
        SM_TEST(coalesced_events_arrive_intact_and_in_order_over_tls),
        SM_TEST(uncoalesced_events_arrive_intact_and_in_order),
        SM_TEST_END,
    };
    return sm_test_run("coalesce", cases, NULL, NULL);
}
