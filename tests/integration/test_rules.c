/* Rules of PROTOCOL.md and OPERATIONS.md that no other suite checks, each
 * through the wire of the real server: the session and pipelining limits,
 * the send-queue and held-events bounds, PONG and the rate limit, graceful
 * shutdown, -p, the pre-handshake size limit at its boundary, 8 MiB
 * server messages, no permessage-deflate, log levels and what is never
 * logged; and the harness's own log scan and storage (SQLite file or
 * PostgreSQL schema), which every suite relies on. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto.h"
#include "envelope.h"
#include "harness.h"
#include "safemessenger/testhost_suite.h"
#include "service_url.h"

#define WAIT_MS 10000

/* A count bound small enough to pass at once, a byte bound far above
 * anything these tests queue (so only the count can cut), no rate limit. */
#define MAIN_CONFIG                                                                  \
    "limits = { send_queue_messages = 16; send_queue_bytes = 67108864;"              \
    " commands_per_second = 100000; command_burst = 100000;"                        \
    " bytes_per_second = 100000000; bytes_burst = 100000000; };\n"

/* The built-in plugins with cheap hashes, for the tests that need users. */
#define USER_PLUGINS                                                                 \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"rooms\","         \
    " \"messaging\"]; };\n"                                                          \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; };\n"

/* The default send-queue bounds (64 replies at once must fit), no rate
 * limit. */
#define ROOMY_CONFIG                                                                 \
    "limits = { commands_per_second = 100000; command_burst = 100000;"              \
    " bytes_per_second = 100000000; bytes_burst = 100000000; };\n"

static harness_server srv, roomy;

static int init(void)
{
    return harness_start(&srv, MAIN_CONFIG) == 0 && harness_start(&roomy, ROOMY_CONFIG) == 0
               ? 0
               : -1;
}

static int fini(void)
{
    int a = harness_cleanup(&srv), b = harness_cleanup(&roomy);
    return a == 0 && b == 0 ? 0 : -1;
}

/* ---- helpers ------------------------------------------------------------- */

static sm_client *connect_to(const harness_server *s, int rcvbuf)
{
    sm_client_options o = {.rcvbuf = rcvbuf};
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(s, &o, &c), SM_CLIENT_OK);
    return c;
}

static const char *jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* A reply of type response with this action (freed). */
static void expect_response(sm_message *m, const char *action)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, action);
    sm_message_free(m);
}

/* sm_client_open() without the harness's message on failure: refusals
 * are what these tests expect. */
static int try_open(const harness_server *s, sm_client **out, char *err, size_t err_len)
{
    sm_client_options o = {.url = s->url};
    return sm_client_open(&o, out, err, err_len);
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads into buf until it holds `until` and at least `extra` bytes after
 * it, the peer closes or WAIT_MS pass. Returns the bytes read. */
static size_t read_until(int fd, char *buf, size_t cap, const char *until, size_t extra)
{
    size_t got = 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    while (got + 1 < cap && poll(&pfd, 1, WAIT_MS) > 0) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
        const char *end = strstr(buf, until);
        if (end && (size_t)(end - buf) + strlen(until) + extra <= got)
            break;
    }
    buf[got] = '\0';
    return got;
}

/* Asks a topic of testcmds to send `body` to its members; the reply comes
 * after the event was handed to every member's send queue. */
static void publish(sm_client *c, const char *topic, const char *body)
{
    sm_message *m = harness_callf(c, "topic", "{s:s, s:s, s:s}", "op", "publish", "topic", topic,
                                  "body", body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(m->payload, "status")), 0);
    sm_message_free(m);
}

static void join_topic(sm_client *c, const char *topic)
{
    sm_message *m = harness_callf(c, "topic", "{s:s, s:s}", "op", "join", "topic", topic);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(m->payload, "status")), 0);
    sm_message_free(m);
}

/* Counts topic events readable now, without waiting. Returns -1 once the
 * connection has ended. */
static int drain_events(sm_client *c)
{
    int n = 0;
    for (;;) {
        sm_message *m = NULL;
        int rc = sm_client_recv(c, 0, &m);
        if (rc == SM_CLIENT_TIMEOUT)
            return n;
        if (rc != SM_CLIENT_OK)
            return -1;
        if (strcmp(m->action, "topic_event") == 0)
            n++;
        sm_message_free(m);
    }
}

/* ---- sessions ------------------------------------------------------------ */

/* limits.max_sessions: one connection more gets HTTP 503 at the upgrade,
 * and a place freed can be taken again. */
static void connections_beyond_max_sessions_get_503(void)
{
    harness_server lim = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&lim, "limits = { max_sessions = 2; };\n"), 0);
    sm_client *a = connect_to(&lim, 0), *b = connect_to(&lim, 0), *c = NULL;
    char err[256] = "";
    CU_ASSERT_EQUAL(try_open(&lim, &c, err, sizeof err), SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "503"));
    CU_ASSERT_EQUAL(harness_log_contains(&lim, "max_sessions (2) reached"), 1);
    /* The server counts a but a moment after its close: wait for the place
     * rather than for a time. */
    sm_client_close(a, 1000);
    int rc = SM_CLIENT_PROTOCOL;
    for (int i = 0; i < 200 && rc == SM_CLIENT_PROTOCOL; i++) {
        rc = try_open(&lim, &c, err, sizeof err);
        if (rc == SM_CLIENT_PROTOCOL)
            usleep(50 * 1000);
    }
    CU_ASSERT_EQUAL(rc, SM_CLIENT_OK);
    sm_client_close(c, 1000);
    sm_client_close(b, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&lim), 0);
}

/* A server shutting down takes no new session: 503, and it still exits 0. */
static void connections_during_shutdown_get_503(void)
{
    harness_server s = {0};
    /* Room for a 4 MB reply: payloads may take a quarter of the bound. */
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "limits = { send_queue_bytes = 67108864; };\n"), 0);
    /* A client that reads nothing of a 4 MB reply keeps the server
     * flushing for its shutdown grace period: the window this test opens a
     * connection in. Its first bytes arriving show the reply is queued. */
    sm_client *held = connect_to(&s, 4096);
    json_t *p = json_pack("{s:i}", "size", 4000000);
    CU_ASSERT_EQUAL(sm_client_send(held, "big", p, NULL), SM_CLIENT_OK);
    json_decref(p);
    struct pollfd pfd = {sm_client_fd(held), POLLIN, 0};
    CU_ASSERT_EQUAL_FATAL(poll(&pfd, 1, WAIT_MS), 1);
    CU_ASSERT_EQUAL_FATAL(kill(s.pid, SIGTERM), 0);
    CU_ASSERT_EQUAL_FATAL(harness_wait_log(&s, "shutting down: closing 1 sessions", WAIT_MS), 1);
    sm_client *c = NULL;
    char err[256] = "";
    CU_ASSERT_EQUAL(try_open(&s, &c, err, sizeof err), SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "503"));
    sm_client_free(c);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, 0, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    sm_client_free(held);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* Appends one client frame (FIN, text, a zero mask key) to buf. */
static size_t put_frame(uint8_t *buf, const char *payload, size_t len)
{
    size_t o = 0;
    buf[o++] = 0x81;
    if (len < 126) {
        buf[o++] = (uint8_t)(0x80 | len);
    } else {
        buf[o++] = 0x80 | 126;
        buf[o++] = (uint8_t)(len >> 8);
        buf[o++] = (uint8_t)len;
    }
    memset(buf + o, 0, 4);
    o += 4;
    memcpy(buf + o, payload, len);
    return o + len;
}

/* Messages pipelined behind a command in flight are not read until it
 * finishes (the server stops reading the connection), so even far more
 * than the 64 a session may queue (tests/unit/test_dispatch.c) are all
 * answered in order, and nothing is closed. The first command waits for a
 * worker; the others arrive with it in one write. */
static void pipelined_messages_are_held_back_not_refused(void)
{
    enum { PIPELINED = 200 };
    sm_client *c = connect_to(&roomy, 0);
    char *first = NULL;
    size_t first_len = 0;
    CU_ASSERT_EQUAL_FATAL(envelope_seal(sm_client_c2s(c), "command", "deferred_echo", NULL, "{}",
                                        2, &first, &first_len),
                          0);
    CU_ASSERT_FATAL(first_len < 65536);
    uint8_t buf[4096];
    size_t n = put_frame(buf, first, first_len);
    free(first);
    for (int i = 0; i < PIPELINED; i++) {
        CU_ASSERT_FATAL(n + 8 <= sizeof buf);
        n += put_frame(buf + n, "{}", 2);   /* unreadable: 1004, and the connection stays */
    }
    CU_ASSERT_EQUAL(sm_client_send_raw(c, buf, n), SM_CLIENT_OK);
    sm_message *m = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv(c, WAIT_MS, &m), SM_CLIENT_OK);
    CU_ASSERT_STRING_EQUAL(m->action, "deferred_echo");
    sm_message_free(m);
    for (int i = 0; i < PIPELINED; i++) {
        m = NULL;
        CU_ASSERT_EQUAL_FATAL(sm_client_recv(c, WAIT_MS, &m), SM_CLIENT_OK);
        CU_ASSERT_EQUAL(harness_error_code(m), 1004);
        sm_message_free(m);
    }
    expect_response(harness_callf(c, "echo", NULL), "echo");
    sm_client_close(c, 1000);
}

/* ---- send queue ---------------------------------------------------------- */

/* limits.send_queue_messages (16 here): a client that stops reading is cut
 * once more messages than that wait for it, long before the byte bound
 * (64 MiB here); one that reads gets every message. */
static void stopped_reader_is_cut_past_the_message_count_bound(void)
{
    enum { EVENTS = 600, BODY = 8000 };
    sm_client *slow = connect_to(&srv, 4096), *reader = connect_to(&srv, 0),
              *sender = connect_to(&srv, 0);
    join_topic(slow, "count_bound");
    join_topic(reader, "count_bound");
    /* About 6.6 MB in all: more than the socket buffers hold, a tenth of
     * the byte bound. */
    char *body = malloc(BODY + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'b', BODY);
    body[BODY] = '\0';
    int read_by_reader = 0;
    for (int i = 0; i < EVENTS; i++) {
        publish(sender, "count_bound", body);
        /* The reader keeps up: each event read before the next publish.
         * One that only took what had arrived fell behind whenever the
         * server's writes came late (a loaded machine, events held for a
         * flush on PostgreSQL), and was cut too. */
        while (read_by_reader <= i) {
            sm_message *m = NULL;
            CU_ASSERT_EQUAL_FATAL(sm_client_recv(reader, WAIT_MS, &m), SM_CLIENT_OK);
            read_by_reader += strcmp(m->action, "topic_event") == 0;
            sm_message_free(m);
        }
    }
    free(body);
    CU_ASSERT_EQUAL(drain_events(reader), 0);
    CU_ASSERT_EQUAL(read_by_reader, EVENTS);
    /* The slow one reads now: what reached its socket, then the end of a
     * connection dropped without a close frame. */
    int read_by_slow = 0, rc = SM_CLIENT_OK;
    while (rc == SM_CLIENT_OK && read_by_slow <= EVENTS) {
        sm_message *m = NULL;
        rc = sm_client_next_event(slow, WAIT_MS, &m);
        if (rc == SM_CLIENT_OK)
            read_by_slow++;
        sm_message_free(m);
    }
    fprintf(stderr, "\n  the stopped reader got %d of %d events before the cut\n", read_by_slow,
            EVENTS);
    CU_ASSERT_TRUE(rc == SM_CLIENT_CLOSED || rc == SM_CLIENT_IO);
    CU_ASSERT_EQUAL(sm_client_close_code(slow), 1006);
    CU_ASSERT_TRUE(read_by_slow < EVENTS);
    /* The others are unaffected. */
    expect_response(harness_callf(reader, "echo", NULL), "echo");
    sm_client_free(slow);
    sm_client_close(reader, 1000);
    sm_client_close(sender, 1000);
}

/* Events a command causes wait for its reply (PROTOCOL.md 5) and count
 * against the same bound: within it they all follow the reply, beyond it
 * the session is closed with 1008. */
static void held_events_beyond_the_bound_close_1008(void)
{
    sm_client *c = connect_to(&srv, 0);
    expect_response(harness_callf(c, "emit_many", "{s:i}", "count", 8), "emit_many");
    for (int i = 0; i < 8; i++) {
        sm_message *m = NULL;
        CU_ASSERT_EQUAL_FATAL(sm_client_next_event(c, WAIT_MS, &m), SM_CLIENT_OK);
        CU_ASSERT_STRING_EQUAL(m->action, "emitted");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(m->payload, "i")), i);
        sm_message_free(m);
    }
    json_t *p = json_pack("{s:i}", "count", 100);
    CU_ASSERT_EQUAL(sm_client_send(c, "emit_many", p, NULL), SM_CLIENT_OK);
    json_decref(p);
    CU_ASSERT_EQUAL(harness_wait_closed(c, WAIT_MS), 1008);
    CU_ASSERT_EQUAL(harness_log_contains(&srv, "held events exceed the send queue bound"), 1);
    sm_client_free(c);
}

/* ---- rate limit ---------------------------------------------------------- */

/* PONG is exempt from the rate limit: after many PONGs the whole burst is
 * still there for commands. */
static void pong_costs_no_rate_limit_tokens(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&s, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\","
                          " \"heartbeat\"]; };\n"
                          "limits = { commands_per_second = 0.01; command_burst = 3; };\n"),
        0);
    sm_client *c = connect_to(&s, 0);
    json_t *pong = json_pack("{s:f}", "timestamp", 1.0);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(sm_client_send(c, "PONG", pong, NULL), SM_CLIENT_OK);
    json_decref(pong);
    /* login without fields: 1004 when the rate limit lets it through. */
    for (int i = 0; i < 3; i++) {
        sm_message *m = harness_callf(c, "login", NULL);
        CU_ASSERT_EQUAL(harness_error_code(m), 1004);
        sm_message_free(m);
    }
    sm_message *m = harness_callf(c, "login", NULL);
    CU_ASSERT_EQUAL(harness_error_code(m), 1008);
    sm_message_free(m);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* ---- shutdown and command line ---------------------------------------- */

/* SIGINT: every message queued for a client before the shutdown reaches
 * it, in order, then the close 1001; the server exits 0. */
static void sigint_flushes_queued_messages_before_close_1001(void)
{
    enum { EVENTS = 100, BODY = 30000 };
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&s, "limits = { send_queue_bytes = 16777216; send_queue_messages = 1000;"
                          " commands_per_second = 100000; command_burst = 100000;"
                          " bytes_per_second = 100000000; bytes_burst = 100000000; };\n"),
        0);
    sm_client *slow = connect_to(&s, 4096), *sender = connect_to(&s, 0);
    join_topic(slow, "last_words");
    /* 3 MB for a client that reads nothing yet: most of it waits in the
     * server. Each reply comes after its event was queued. */
    char *body = malloc(BODY + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'q', BODY);
    body[BODY] = '\0';
    for (int i = 0; i < EVENTS; i++) {
        char tag[16];
        int n = snprintf(tag, sizeof tag, "%04d-", i);
        memcpy(body, tag, (size_t)n);
        publish(sender, "last_words", body);
    }
    free(body);
    sm_client_close(sender, 1000);
    CU_ASSERT_EQUAL_FATAL(kill(s.pid, SIGINT), 0);
    int got = 0;
    for (;;) {
        sm_message *m = NULL;
        int rc = sm_client_next_event(slow, WAIT_MS, &m);
        if (rc != SM_CLIENT_OK)
            break;
        char want[16];
        snprintf(want, sizeof want, "%04d-", got);
        const char *b = jstr(m->payload, "body");
        CU_ASSERT_TRUE(b && strncmp(b, want, 5) == 0 && strlen(b) == BODY);
        got++;
        sm_message_free(m);
    }
    CU_ASSERT_EQUAL(got, EVENTS);
    CU_ASSERT_EQUAL(sm_client_close_code(slow), 1001);
    sm_client_free(slow);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, 0, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* -p PORT overrides server.port (0 in the harness's configuration). */
static void port_option_overrides_the_configured_port(void)
{
    /* A port free a moment ago: the kernel hands out ephemeral ports in
     * turn, so another process taking it meanwhile is unlikely. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0
                    && getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    int port = ntohs(a.sin_port);
    close(fd);
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    const char *const args[] = {"-p", port_text, NULL};
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start_args(&s, NULL, args), 0);
    CU_ASSERT_EQUAL(s.port, port);
    char line[64];
    snprintf(line, sizeof line, "listening on 127.0.0.1:%d (ws)", port);
    CU_ASSERT_EQUAL(harness_log_contains(&s, line), 1);
    sm_client *c = connect_to(&s, 0);
    expect_response(harness_callf(c, "echo", NULL), "echo");
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* ---- message sizes ------------------------------------------------------- */

/* A valid key_exchange for the server_hello in hello_text, padded with
 * blanks inside the object to exactly `total` bytes. Fills the secrets
 * needed to derive the session keys. */
static char *padded_key_exchange(const char *hello_text, size_t total, uint8_t k[32],
                                 uint8_t sn[32], uint8_t cn[32])
{
    char *out = NULL, *ek_b64 = NULL, *cn_b64 = NULL, *text = NULL;
    uint8_t ek[1024], *raw = NULL;
    size_t ek_len = sizeof ek, n = 0, text_len = 0;
    EVP_PKEY *pub = NULL;
    json_t *kx = NULL, *hello = json_loads(hello_text, 0, NULL);
    const json_t *hp = json_object_get(hello, "payload");
    const char *pem = jstr(hp, "public_key"), *sn_b64 = jstr(hp, "server_nonce");
    if (!pem || !sn_b64 || crypto_b64_decode(sn_b64, strlen(sn_b64), &raw, &n) != 0 || n != 32)
        goto out;
    memcpy(sn, raw, 32);
    if (crypto_pubkey_from_pem(pem, strlen(pem), &pub) != 0 || crypto_random(k, 32) != 0
        || crypto_random(cn, 32) != 0 || crypto_rsa_oaep_encrypt(pub, k, 32, ek, sizeof ek, &ek_len) != 0
        || crypto_b64_encode(ek, ek_len, &ek_b64, &n) != 0
        || crypto_b64_encode(cn, 32, &cn_b64, &n) != 0)
        goto out;
    kx = json_pack("{s:s, s:s, s:s}", "cipher", "AES-256-GCM", "encrypted_key", ek_b64,
                   "client_nonce", cn_b64);
    if (!kx || envelope_plain("command", "key_exchange", kx, NULL, &text, &text_len) != 0
        || text_len >= total || text[text_len - 1] != '}')
        goto out;
    out = malloc(total + 1);
    if (!out)
        goto out;
    memcpy(out, text, text_len - 1);
    memset(out + text_len - 1, ' ', total - text_len);
    out[total - 1] = '}';
    out[total] = '\0';
out:
    crypto_pkey_free(pub);
    json_decref(kx);
    json_decref(hello);
    free(raw);
    free(ek_b64);
    free(cn_b64);
    free(text);
    return out;
}

/* Opens a connection and sends a key_exchange of exactly `total` bytes. */
static sm_client *send_key_exchange_of(size_t total, uint8_t k[32], uint8_t sn[32],
                                       uint8_t cn[32])
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_open_opts(&srv, NULL, &c), SM_CLIENT_OK);
    char *hello = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv_text(c, WAIT_MS, &hello, &len), SM_CLIENT_OK);
    char *kx = padded_key_exchange(hello, total, k, sn, cn);
    free(hello);
    CU_ASSERT_PTR_NOT_NULL_FATAL(kx);
    CU_ASSERT_EQUAL(strlen(kx), total);
    CU_ASSERT_EQUAL(sm_client_send_text(c, kx, total), SM_CLIENT_OK);
    free(kx);
    return c;
}

/* Before the handshake a message may be 4096 bytes: a key_exchange of
 * exactly 4096 completes it; one byte more gets 1011 and close 1009. */
static void pre_handshake_limit_is_4096_bytes_inclusive(void)
{
    uint8_t k[32], sn[32], cn[32];
    sm_client *c = send_key_exchange_of(4096, k, sn, cn);
    char *text = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv_text(c, WAIT_MS, &text, &len), SM_CLIENT_OK);
    envelope_dir c2s, s2c;
    envelope_in in;
    json_t *p = NULL;
    CU_ASSERT_EQUAL_FATAL(envelope_derive(k, sn, cn, ENVELOPE_CIPHER_AES256_GCM, &c2s, &s2c), 0);
    CU_ASSERT_EQUAL_FATAL(envelope_parse(text, len, &in), ENVELOPE_OK);
    free(text);
    CU_ASSERT_STRING_EQUAL(in.type, "response");
    CU_ASSERT_STRING_EQUAL(in.action, "key_exchange");
    CU_ASSERT_EQUAL(envelope_open(&s2c, &in, &p), ENVELOPE_OK);
    CU_ASSERT_TRUE(json_is_true(json_object_get(p, "success")));
    json_decref(p);
    envelope_in_clear(&in);
    sm_client_free(c);

    c = send_key_exchange_of(4097, k, sn, cn);
    CU_ASSERT_EQUAL_FATAL(sm_client_recv_text(c, WAIT_MS, &text, &len), SM_CLIENT_OK);
    json_t *err = json_loadb(text, len, 0, NULL);
    free(text);
    CU_ASSERT_STRING_EQUAL(jstr(err, "type"), "error");
    CU_ASSERT_STRING_EQUAL(jstr(err, "nonce"), "0");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(err, "payload"), "code")),
                    1011);
    json_decref(err);
    CU_ASSERT_EQUAL(harness_wait_closed(c, WAIT_MS), 1009);
    sm_client_free(c);
}

/* Clients must accept server messages of 8 MiB (PROTOCOL.md 1). The
 * server caps one payload at 6,000,000 bytes so that, sealed (base64 of
 * the ciphertext, plus the envelope), every message it sends stays within
 * those 8 MiB: the largest one it sends arrives whole, and one payload more
 * is refused as too large rather than sent. */
static void largest_server_message_reaches_the_client(void)
{
    enum { SIZE = 5999000 };
    sm_client *c = connect_to(&srv, 0);
    sm_message *m = NULL;
    json_t *p = json_pack("{s:i}", "size", SIZE);
    CU_ASSERT_EQUAL_FATAL(sm_client_call(c, "big", p, 60000, &m), SM_CLIENT_OK);
    json_decref(p);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    const char *data = jstr(m->payload, "data");
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_EQUAL(strlen(data), SIZE);
    CU_ASSERT_TRUE(strspn(data, "x") == SIZE);
    sm_message_free(m);
    p = json_pack("{s:i}", "size", 6000000);
    CU_ASSERT_EQUAL_FATAL(sm_client_call(c, "big", p, 60000, &m), SM_CLIENT_OK);
    json_decref(p);
    CU_ASSERT_EQUAL(harness_error_code(m), 1011);
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* permessage-deflate is not offered: a client's offer is declined (no
 * Sec-WebSocket-Extensions in the 101), and frames come uncompressed. */
static void permessage_deflate_offer_is_declined(void)
{
    int fd = raw_connect(srv.port);
    CU_ASSERT_FATAL(fd >= 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: safemessenger.v1\r\n"
                     "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                     "\r\n",
                     srv.port);
    CU_ASSERT_EQUAL_FATAL(write(fd, req, (size_t)n), n);
    static char resp[16384];
    size_t got = read_until(fd, resp, sizeof resp, "\r\n\r\n", 1);
    close(fd);
    char *end = strstr(resp, "\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(end);
    CU_ASSERT_EQUAL(strncmp(resp, "HTTP/1.1 101", 12), 0);
    CU_ASSERT_TRUE((size_t)(end + 4 - resp) < got);
    unsigned char first = (unsigned char)end[4];
    *end = '\0';
    CU_ASSERT_PTR_NOT_NULL(strcasestr(resp, "sec-websocket-accept"));
    CU_ASSERT_PTR_NULL(strcasestr(resp, "sec-websocket-extensions"));
    /* server_hello: FIN, text, and no RSV1 (the compressed-message bit). */
    CU_ASSERT_EQUAL(first, 0x81);
}

/* ---- logging ------------------------------------------------------------- */

/* log.level: a line is written only at its level or a more severe one. */
static void log_level_filters_less_severe_lines(void)
{
    static const struct {
        const char *level;
        int debug, info;   /* lines of these levels expected */
    } cases[] = {{"debug", 1, 1}, {"info", 0, 1}, {"warning", 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char conf[128];
        snprintf(conf, sizeof conf, "log = { level = \"%s\"; };\n", cases[i].level);
        harness_server s = {0};
        CU_ASSERT_EQUAL_FATAL(harness_start(&s, conf), 0);
        sm_client *c = connect_to(&s, 0);
        expect_response(harness_callf(c, "echo", NULL), "echo");
        sm_client_close(c, 1000);
        int status = -1;
        CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
        CU_ASSERT_EQUAL(status, 0);
        /* "Z <level padded to 7> [": the level field of every line. */
        CU_ASSERT_EQUAL(harness_log_contains(&s, "Z debug   ["), cases[i].debug);
        CU_ASSERT_EQUAL(harness_log_contains(&s, "Z debug   [core] loaded server key"),
                        cases[i].debug);
        CU_ASSERT_EQUAL(harness_log_contains(&s, "Z info    ["), cases[i].info);
        CU_ASSERT_EQUAL(harness_log_contains(&s, "Z info    [core] listening on"),
                        cases[i].info);
        CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
    }
}

/* Every line of the server's log file, each a JSON object with exactly
 * time, level, source, message and fields (an object); the number of
 * lines, -1 on a line that is not. */
static int json_log_lines(const harness_server *s, const char *source, const char *needle,
                          int *matches)
{
    char path[512];
    if (harness_path(s, "server.log", path, sizeof path) != 0)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    static char line[16384];
    int n = 0;
    *matches = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &err);
        const char *keys[] = {"time", "level", "source", "message"};
        int ok = o && json_is_object(o) && json_object_size(o) == 5 &&
                 json_is_object(json_object_get(o, "fields"));
        for (size_t k = 0; ok && k < 4; k++)
            ok = json_is_string(json_object_get(o, keys[k]));
        if (!ok) {
            fprintf(stderr, "not a JSON log line: %s", line);
            json_decref(o);
            fclose(f);
            return -1;
        }
        if (strcmp(json_string_value(json_object_get(o, "source")), source) == 0
            && strstr(json_string_value(json_object_get(o, "message")), needle))
            (*matches)++;
        json_decref(o);
        n++;
    }
    fclose(f);
    return n;
}

/* log.format = "json": the server writes nothing but JSON objects, from
 * start to exit, core and plugins alike. */
static void json_log_format_writes_only_json_objects(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&s, USER_PLUGINS "log = { level = \"debug\"; format = \"json\"; };\n"), 0);
    sm_client *c = connect_to(&s, 0);
    sm_message *m = harness_callf(c, "register", "{s:s, s:s}", "username", "json_user",
                                  "password", "correct horse");
    expect_response(m, "registration_success");
    sm_client_close(c, 1000);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    int listening = 0;
    int lines = json_log_lines(&s, "core", "listening on", &listening);
    CU_ASSERT_TRUE(lines > 3);
    CU_ASSERT_EQUAL(listening, 1);
    int registered_lines = 0;
    CU_ASSERT_TRUE(json_log_lines(&s, "auth", "user 'json_user' registered", &registered_lines)
                   > 3);
    CU_ASSERT_EQUAL(registered_lines, 1);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "\"level\":\"debug\""), 1);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "Z info    ["), 0);
    /* Audit lines carry their fields as an object. */
    CU_ASSERT_EQUAL(harness_log_contains(&s, "\"source\":\"audit\",\"message\":\"register\","
                                             "\"fields\":{\"event\":\"register\","
                                             "\"user\":\"json_user\",\"address\":\"127.0.0.1\","
                                             "\"session\":1,\"by\":\"auth\"}"),
                    1);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static sm_client *registered(const harness_server *s, const char *name)
{
    sm_client *c = connect_to(s, 0);
    sm_message *m = harness_callf(c, "register", "{s:s, s:s}", "username", name, "password",
                                  "correct horse");
    expect_response(m, "registration_success");
    return c;
}

/* Message contents are never logged, not even at debug level: public,
 * private plain and private "encrypted" content, and signatures. */
static void message_content_is_never_logged(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, USER_PLUGINS "log = { level = \"debug\"; };\n"), 0);
    sm_client *alice = registered(&s, "log_alice"), *bob = registered(&s, "log_bob");
    sm_message *m = harness_callf(alice, "public_message", "{s:s}", "content",
                                  "Marker-Public-6f1d2c");
    expect_response(m, "public_message");
    m = harness_callf(alice, "private_message", "{s:s, s:s, s:b, s:s}", "recipient", "log_bob",
                      "content", "Marker-Private-93ab07", "encrypted", 0, "signature",
                      "Marker-Signature-51e8");
    expect_response(m, "message_delivered");
    m = harness_callf(alice, "private_message", "{s:s, s:s, s:b}", "recipient", "log_bob",
                      "content", "Marker-Encrypted-c40f99", "encrypted", 1);
    expect_response(m, "message_delivered");
    /* bob got them, so every step of the delivery ran. */
    int private_seen = 0;
    for (int i = 0; i < 10 && private_seen < 2; i++) {
        m = NULL;
        if (sm_client_next_event(bob, WAIT_MS, &m) != SM_CLIENT_OK)
            break;
        if (strcmp(m->action, "private_message") == 0)
            private_seen++;
        sm_message_free(m);
    }
    CU_ASSERT_EQUAL(private_seen, 2);
    sm_client_close(alice, 1000);
    sm_client_close(bob, 1000);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "Z debug   ["), 1);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "user 'log_bob' registered"), 1);
    static const char *const markers[] = {"Marker-Public-6f1d2c", "Marker-Private-93ab07",
                                          "Marker-Signature-51e8", "Marker-Encrypted-c40f99",
                                          "Marker-"};
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        CU_ASSERT_EQUAL(harness_log_contains(&s, markers[i]), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* ---- the harness's log scan ---------------------------------------------- */

/* harness_cleanup() keeps a failed server's directory for debugging;
 * these tests fail it on purpose and remove it themselves. */
static void remove_dir(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

/* A log that cannot be read is no evidence of a clean run. */
static void harness_cleanup_fails_when_the_log_cannot_be_read(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, NULL), 0);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    char dir[sizeof s.dir], log[512];
    memcpy(dir, s.dir, sizeof dir);
    CU_ASSERT_EQUAL_FATAL(harness_path(&s, "server.log", log, sizeof log), 0);
    CU_ASSERT_EQUAL_FATAL(unlink(log), 0);
    fprintf(stderr, "\n  (expected: the harness reports the missing log)\n");
    CU_ASSERT_EQUAL(harness_cleanup(&s), -1);
    remove_dir(dir);
}

/* A report after 64 MiB of log lines is found like any other. */
static void harness_cleanup_finds_a_report_past_64_mib_of_log(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, NULL), 0);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    char dir[sizeof s.dir], log[512];
    memcpy(dir, s.dir, sizeof dir);
    CU_ASSERT_EQUAL_FATAL(harness_path(&s, "server.log", log, sizeof log), 0);
    FILE *f = fopen(log, "a");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static char filler[1 << 20];
    memset(filler, 'f', sizeof filler);
    for (size_t i = 63; i < sizeof filler; i += 64)
        filler[i] = '\n';
    for (int i = 0; i < 65; i++)
        CU_ASSERT_EQUAL(fwrite(filler, 1, sizeof filler, f), sizeof filler);
    fputs("runtime error: planted by the harness self-test\n", f);
    CU_ASSERT_EQUAL(fclose(f), 0);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "planted by the harness self-test"), 1);
    fprintf(stderr, "\n  (expected: the harness reports the planted line)\n");
    CU_ASSERT_EQUAL(harness_cleanup(&s), -1);
    remove_dir(dir);
}

/* ---- the harness's storage ----------------------------------------------- */

/* kv_get of key on s: the value, or "" when it failed (static buffer). */
static const char *kv_value(const harness_server *s, const char *key)
{
    static char value[64];
    value[0] = '\0';
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "kv_get", "{s:s}", "key", key);
    const char *v = m ? json_string_value(json_object_get(m->payload, "value")) : NULL;
    snprintf(value, sizeof value, "%s", v ? v : "");
    sm_message_free(m);
    sm_client_close(c, 1000);
    return value;
}

static void kv_put_on(const harness_server *s, const char *key, const char *value)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "kv_put", "{s:s, s:s}", "key", key, "value", value);
    CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* In PostgreSQL mode, whether the schema with that oid exists, asked
 * through the storage of the running server `via` (pg_catalog is in every
 * search path). -1 when the query failed. */
static long long schema_exists(const harness_server *via, long long oid)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_namespace WHERE oid = %lld", oid);
    long long n = -1;
    CU_ASSERT_EQUAL(harness_query_int(via, sql, &n), 0);
    return n;
}

#define SCHEMA_OID "SELECT oid::bigint FROM pg_namespace WHERE nspname = current_schema()"

/* Each server has storage of its own on the engine of the run (SQLite:
 * <dir>/server.db; PostgreSQL: a schema, no file); harness_start_on() puts
 * a second one on the first's, which harness_query_int() reads; the
 * schema is dropped with the last server on it. */
static void harness_storage_is_the_runs_engine_and_shared_on_request(void)
{
    harness_server one = {0}, two = {0}, other = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&one, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_start(&other, NULL), 0);
    kv_put_on(&one, "shared", "by one");
    char db[512];
    CU_ASSERT_EQUAL_FATAL(harness_path(&one, "server.db", db, sizeof db), 0);
    int pg = harness_postgresql();
    CU_ASSERT_EQUAL(access(db, F_OK) == 0, !pg);
    CU_ASSERT_EQUAL(harness_log_contains(&one, "storage: PostgreSQL"), pg);
    long long oid = -1, n = -1;
    if (pg)
        CU_ASSERT_EQUAL(harness_query_int(&one, SCHEMA_OID, &oid), 0);
    /* A restart on the same storage finds the row; the other server's is
     * its own. */
    CU_ASSERT_EQUAL(harness_stop(&one, SIGTERM, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_start_on(&two, &one, NULL, NULL), 0);
    CU_ASSERT_STRING_EQUAL(kv_value(&two, "shared"), "by one");
    CU_ASSERT_STRING_EQUAL(kv_value(&other, "shared"), "");
    kv_put_on(&two, "shared", "by two");
    CU_ASSERT_EQUAL(harness_query_int(&one, "SELECT count(*) FROM testcmds_kv"
                                            " WHERE v = 'by two'", &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(harness_query_int(&other, "SELECT count(*) FROM testcmds_kv", &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(harness_cleanup(&two), 0);
    if (pg)
        CU_ASSERT_EQUAL(schema_exists(&other, oid), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&one), 0);
    if (pg)
        CU_ASSERT_EQUAL(schema_exists(&other, oid), 0);
    fprintf(stderr, "\n  (expected: the harness says the server has no storage now)\n");
    CU_ASSERT_EQUAL(harness_query_int(&one, "SELECT 1", &n), -1);
    CU_ASSERT_EQUAL(harness_cleanup(&other), 0);
}

/* SM_KEEP_TEST_DIRS keeps a failed server's schema for a look, and only
 * a failed one's. (On SQLite the file is in the directory, kept as
 * before.) */
static void harness_keeps_a_failed_servers_schema_with_sm_keep_test_dirs(void)
{
    if (!harness_postgresql())
        return; /* SQLite's file is in the directory, kept as the cases above check */
    harness_server ok = {0}, failed = {0}, via = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&via, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_start(&ok, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_start(&failed, NULL), 0);
    long long ok_oid = -1, failed_oid = -1;
    CU_ASSERT_EQUAL(harness_query_int(&ok, SCHEMA_OID, &ok_oid), 0);
    CU_ASSERT_EQUAL(harness_query_int(&failed, SCHEMA_OID, &failed_oid), 0);
    char dir[sizeof failed.dir], ok_dir[sizeof ok.dir], log[512];
    memcpy(dir, failed.dir, sizeof dir);
    memcpy(ok_dir, ok.dir, sizeof ok_dir);
    CU_ASSERT_EQUAL(harness_stop(&failed, SIGTERM, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_path(&failed, "server.log", log, sizeof log), 0);
    CU_ASSERT_EQUAL_FATAL(unlink(log), 0);
    const char *keep = getenv("SM_KEEP_TEST_DIRS");
    char *saved = keep ? strdup(keep) : NULL;
    setenv("SM_KEEP_TEST_DIRS", "1", 1);
    CU_ASSERT_EQUAL(harness_cleanup(&ok), 0);
    fprintf(stderr, "\n  (expected: the harness keeps the schema of a server whose log "
                    "is missing)\n");
    CU_ASSERT_EQUAL(harness_cleanup(&failed), -1);
    if (saved)
        setenv("SM_KEEP_TEST_DIRS", saved, 1);
    else
        unsetenv("SM_KEEP_TEST_DIRS");
    free(saved);
    CU_ASSERT_EQUAL(schema_exists(&via, ok_oid), 0);
    CU_ASSERT_EQUAL(schema_exists(&via, failed_oid), 1);
    /* Kept for a person to look at; this test removes it itself. */
    char url[1024], sql[256];
    CU_ASSERT_EQUAL_FATAL(service_url_read("SM_TEST_SERVER_POSTGRES_URL_FILE", url, sizeof url),
                          0);
    snprintf(sql, sizeof sql,
             "DO $$BEGIN EXECUTE format('DROP SCHEMA %%I CASCADE',"
             " (SELECT nspname FROM pg_namespace WHERE oid = %lld)); END$$",
             failed_oid);
    PGconn *c = PQconnectdb(url);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *res = PQexec(c, sql);
    CU_ASSERT_EQUAL(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(c);
    CU_ASSERT_EQUAL(schema_exists(&via, failed_oid), 0);
    remove_dir(dir);
    remove_dir(ok_dir); /* kept too, as SM_KEEP_TEST_DIRS asks */
    CU_ASSERT_EQUAL(harness_cleanup(&via), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(connections_beyond_max_sessions_get_503),
        SM_TEST(connections_during_shutdown_get_503),
        SM_TEST(pipelined_messages_are_held_back_not_refused),
        SM_TEST(stopped_reader_is_cut_past_the_message_count_bound),
        SM_TEST(held_events_beyond_the_bound_close_1008),
        SM_TEST(pong_costs_no_rate_limit_tokens),
        SM_TEST(sigint_flushes_queued_messages_before_close_1001),
        SM_TEST(port_option_overrides_the_configured_port),
        SM_TEST(pre_handshake_limit_is_4096_bytes_inclusive),
        SM_TEST(largest_server_message_reaches_the_client),
        SM_TEST(permessage_deflate_offer_is_declined),
        SM_TEST(log_level_filters_less_severe_lines),
        SM_TEST(message_content_is_never_logged),
        SM_TEST(json_log_format_writes_only_json_objects),
        SM_TEST(harness_cleanup_fails_when_the_log_cannot_be_read),
        SM_TEST(harness_cleanup_finds_a_report_past_64_mib_of_log),
        SM_TEST(harness_storage_is_the_runs_engine_and_shared_on_request),
        SM_TEST(harness_keeps_a_failed_servers_schema_with_sm_keep_test_dirs),
        SM_TEST_END,
    };
    return sm_test_run("integration_rules", cases, init, fini);
}
