/* The limits of issue 10 against the real server: connections per address
 * (429 at the upgrade, another address unaffected, one log line a minute),
 * the login deadline (close 1008), key_exchange attempts per address
 * (error 1008 with retry_after before any RSA work, close 1008), bytes per
 * session (1008 with retry_after, small messages unaffected) and the
 * room fan-out budget (1008 with retry_after, nothing stored). Each test
 * starts a server with the limits it needs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define WAIT_MS 5000
#define OTHER_ADDRESS "127.0.0.2"

#define PLUGINS                                                                                    \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"rooms\", \"messaging\"]; };\n"  \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"            \
    "         registrations_per_hour = 1000; };\n"
#define PASSWORD "correct horse battery"

static harness_server srv;

static int fini(void) { return harness_cleanup(&srv); }

static void start(const char *config)
{
    /* A test that stopped at a fatal assertion left its server running. */
    harness_cleanup(&srv);
    CU_ASSERT_EQUAL_FATAL(harness_start(&srv, config), 0);
}

static void stop(void) { CU_ASSERT_EQUAL(harness_cleanup(&srv), 0); }

/* TCP + upgrade only, from source (NULL = default); the status, with the
 * refusal's HTTP status line in err. */
static int open_from(const char *source, sm_client **c, char *err, size_t err_len)
{
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.url = srv.url;
    o.source_address = source;
    *c = NULL;
    err[0] = '\0';
    return sm_client_open(&o, c, err, err_len);
}

/* The address the server recorded for a session from source (NULL:
 * default) sending X-Forwarded-For xff (NULL: none); "" on failure. */
static void address_seen(const char *source, const char *xff, char *out, size_t len)
{
    out[0] = '\0';
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.source_address = source;
    o.forwarded_for = xff;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &o, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "peer_address", NULL);
    if (m && strcmp(m->type, "response") == 0)
        snprintf(out, len, "%s", json_string_value(json_object_get(m->payload, "address")));
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* X-Forwarded-For counts only from a trusted proxy, and then its
 * right-most address that is not itself a trusted proxy. */
static void forwarded_for_is_believed_only_from_trusted_proxies(void)
{
    start("server = { " HARNESS_SERVER_BASE " trusted_proxies = [\"127.0.0.1\", \"10.0.0.9\"]; };\n");
    char a[80];
    address_seen(NULL, "192.0.2.7", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "192.0.2.7");
    /* The client wrote 198.51.100.1; the trusted 10.0.0.9 saw 192.0.2.8. */
    address_seen(NULL, "198.51.100.1, 192.0.2.8,10.0.0.9", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "192.0.2.8");
    address_seen(NULL, "2001:DB8::0:1", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "2001:db8::1");
    /* Not an address: the whole header is ignored. */
    address_seen(NULL, "192.0.2.7, unknown", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "127.0.0.1");
    address_seen(NULL, NULL, a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "127.0.0.1");
    /* 127.0.0.2 is no trusted proxy: its header is ignored. */
    address_seen(OTHER_ADDRESS, "192.0.2.7", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, OTHER_ADDRESS);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "connection user=- address=192.0.2.7 ", WAIT_MS), 1);
    stop();
}

/* Without trusted_proxies (the default) the header is never believed. */
static void forwarded_for_is_ignored_by_default(void)
{
    start(NULL);
    char a[80];
    address_seen(NULL, "192.0.2.7", a, sizeof a);
    CU_ASSERT_STRING_EQUAL(a, "127.0.0.1");
    stop();
}

/* The per-address limit counts the forwarded address, not the proxy's. */
static void per_address_limit_counts_the_forwarded_address(void)
{
    start("server = { " HARNESS_SERVER_BASE " trusted_proxies = [\"127.0.0.1\"]; };\n"
          "limits = { max_sessions_per_address = 1; };\n");
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.forwarded_for = "192.0.2.7";
    sm_client *first = NULL, *second = NULL, *third = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &o, &first), SM_CLIENT_OK);
    o.forwarded_for = "192.0.2.8";
    CU_ASSERT_EQUAL(harness_connect_opts(&srv, &o, &second), SM_CLIENT_OK);
    o.forwarded_for = "192.0.2.7";
    o.url = srv.url;
    char err[256] = "";
    CU_ASSERT_EQUAL(sm_client_open(&o, &third, err, sizeof err), SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "429"));
    sm_client_free(third);
    sm_client_close(first, 1000);
    sm_client_close(second, 1000);
    stop();
}

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static int error_code(const sm_message *m) { return m ? harness_error_code(m) : -1; }

static double retry_after(const sm_message *m)
{
    const json_t *ra = m ? json_object_get(m->payload, "retry_after") : NULL;
    return json_is_number(ra) ? json_number_value(ra) : -1;
}

static sm_client *connected(const char *label)
{
    sm_client *c = NULL;
    if (harness_connect(&srv, &c) != SM_CLIENT_OK)
        fprintf(stderr, "%s: no connection\n", label);
    return c;
}

/* A new connection with a newly registered user, in room general. */
static sm_client *registered(const char *name)
{
    sm_client *c = connected(name);
    if (!c)
        return NULL;
    sm_message *m =
        harness_callf(c, "register", "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "registration_success");
    CU_ASSERT_STRING_EQUAL(m ? jstr(m->payload, "assigned_room") : "", "general");
    sm_message_free(m);
    return c;
}

/* ---- max_sessions_per_address --------------------------------------------- */

static void connection_beyond_max_sessions_per_address_gets_429(void)
{
    start("limits = { max_sessions_per_address = 3; };\n");
    sm_client *held[3] = {NULL, NULL, NULL};
    char err[256];
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(open_from(NULL, &held[i], err, sizeof err), SM_CLIENT_OK);
    /* The fourth, and every further one, is refused at the upgrade. */
    for (int i = 0; i < 5; i++) {
        sm_client *c = NULL;
        CU_ASSERT_EQUAL(open_from(NULL, &c, err, sizeof err), SM_CLIENT_PROTOCOL);
        CU_ASSERT_PTR_NULL(c);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "429"));
        sm_client_free(c);
    }
    /* Another address still connects and completes the handshake. */
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.source_address = OTHER_ADDRESS;
    sm_client *other = NULL;
    CU_ASSERT_EQUAL(harness_connect_opts(&srv, &o, &other), SM_CLIENT_OK);
    sm_client_close(other, 1000);
    /* One log line for the five refusals (one per address per minute). */
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "max_sessions_per_address (3) reached", WAIT_MS), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "max_sessions_per_address"), 1);
    /* A closed session frees its slot. */
    sm_client_close(held[0], 1000);
    held[0] = NULL;
    int rc = SM_CLIENT_PROTOCOL;
    for (int i = 0; i < 50 && rc != SM_CLIENT_OK; i++) {
        rc = open_from(NULL, &held[0], err, sizeof err);
        if (rc != SM_CLIENT_OK)
            usleep(100 * 1000);
    }
    CU_ASSERT_EQUAL(rc, SM_CLIENT_OK);
    for (int i = 0; i < 3; i++)
        sm_client_free(held[i]);
    stop();
}

/* ---- login_deadline ------------------------------------------------------- */

static void session_without_login_is_closed_1008_at_login_deadline(void)
{
    start(PLUGINS "limits = { login_deadline = 1; };\n");
    sm_client *idle = connected("idle");
    sm_client *user = registered("deadline_u");
    CU_ASSERT_PTR_NOT_NULL_FATAL(idle);
    CU_ASSERT_PTR_NOT_NULL_FATAL(user);
    /* The deadline was met by the first login; a logout does not restart it. */
    sm_message *m = harness_callf(user, "logout", NULL);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "logout");
    sm_message_free(m);
    CU_ASSERT_EQUAL(harness_wait_closed(idle, WAIT_MS), 1008);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "no login within 1 s", WAIT_MS), 1);
    /* user is past the deadline too (idle was closed at it), and still open. */
    usleep(300 * 1000);
    m = harness_callf(user, "login", "{s:s, s:s}", "username", "deadline_u", "password",
                      PASSWORD);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "login_success");
    sm_message_free(m);
    sm_client_free(idle);
    sm_client_close(user, 1000);
    stop();
}

/* ---- handshakes_per_address ----------------------------------------------- */

/* A key_exchange well-formed in every field, whose encrypted_key no RSA
 * key decrypts: the server answers 1007 once it has done the RSA work. */
static char *undecryptable_key_exchange(const char *nonce)
{
    uint8_t junk[256], cn[32];
    memset(junk, 0x5a, sizeof junk);
    memset(cn, 0x11, sizeof cn);
    char *ek = NULL, *cnb = NULL;
    size_t n = 0;
    json_t *env = NULL;
    char *text = NULL;
    if (crypto_b64_encode(junk, sizeof junk, &ek, &n) == 0 &&
        crypto_b64_encode(cn, sizeof cn, &cnb, &n) == 0)
        env = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:s}", "type", "command", "action",
                        "key_exchange", "payload", "cipher", "AES-256-GCM", "encrypted_key", ek,
                        "client_nonce", cnb, "nonce", nonce, "signature", "");
    if (env)
        text = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    free(ek);
    free(cnb);
    return text;
}

/* Sends the raw key_exchange on a fresh connection and returns the plain
 * reply (NULL if none); *close_code gets the close that followed. */
static json_t *raw_key_exchange(const char *nonce, int *close_code)
{
    sm_client *c = NULL;
    char err[256];
    *close_code = -1;
    if (open_from(NULL, &c, err, sizeof err) != SM_CLIENT_OK)
        return NULL;
    char *text = NULL, *ke = undecryptable_key_exchange(nonce);
    size_t len = 0;
    json_t *reply = NULL;
    if (ke && sm_client_recv_text(c, WAIT_MS, &text, &len) == SM_CLIENT_OK) { /* server_hello */
        free(text);
        text = NULL;
        if (sm_client_send_text(c, ke, strlen(ke)) == SM_CLIENT_OK &&
            sm_client_recv_text(c, WAIT_MS, &text, &len) == SM_CLIENT_OK)
            reply = json_loadb(text, len, 0, NULL);
        *close_code = harness_wait_closed(c, WAIT_MS);
    }
    free(text);
    free(ke);
    sm_client_free(c);
    return reply;
}

static void key_exchange_beyond_handshakes_per_address_gets_1008_without_rsa(void)
{
    start("limits = { handshakes_per_address = 2; };\n");
    int close_code = 0;
    /* Within the budget the junk key costs an RSA decryption: 1007. */
    json_t *r = raw_key_exchange("5", &close_code);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(r, "payload"), "code")),
                    1007);
    CU_ASSERT_EQUAL(close_code, 1008);
    json_decref(r);
    sm_client *ok = connected("second handshake");
    CU_ASSERT_PTR_NOT_NULL(ok);
    sm_client_close(ok, 1000);
    /* Beyond it: 1008 before any RSA work (else this would be 1007),
     * unencrypted, with retry_after, then close 1008. */
    r = raw_key_exchange("7", &close_code);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    const json_t *p = json_object_get(r, "payload");
    CU_ASSERT_STRING_EQUAL(jstr(r, "type"), "error");
    CU_ASSERT_STRING_EQUAL(jstr(r, "nonce"), "0");
    CU_ASSERT_STRING_EQUAL(jstr(r, "signature"), "");
    CU_ASSERT_STRING_EQUAL(jstr(r, "reply_to"), "7");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "code")), 1008);
    CU_ASSERT_STRING_EQUAL(jstr(p, "command"), "key_exchange");
    const json_t *ra = json_object_get(p, "retry_after");
    /* 2 a minute: one attempt back within 30 s. */
    CU_ASSERT_TRUE(json_is_number(ra) && json_number_value(ra) > 0 &&
                   json_number_value(ra) <= 30.0);
    CU_ASSERT_EQUAL(close_code, 1008);
    json_decref(r);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "handshakes_per_address (2 per minute)", WAIT_MS), 1);
    /* Another address has its own budget. */
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.source_address = OTHER_ADDRESS;
    sm_client *other = NULL;
    CU_ASSERT_EQUAL(harness_connect_opts(&srv, &o, &other), SM_CLIENT_OK);
    sm_client_close(other, 1000);
    stop();
}

/* ---- bytes_per_second ----------------------------------------------------- */

static sm_message *echo_padded(sm_client *c, size_t pad)
{
    char *text = malloc(pad + 1);
    if (!text)
        return NULL;
    memset(text, 'x', pad);
    text[pad] = '\0';
    sm_message *m = harness_callf(c, "echo", "{s:s}", "pad", text);
    free(text);
    return m;
}

static void big_messages_beyond_bytes_per_second_get_1008_with_retry_after(void)
{
    /* Defaults: 65536 bytes/s, burst 262144; max_message_bytes 65536. */
    start(NULL);
    sm_client *big = connected("big");
    sm_client *chat = connected("chat");
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(chat);
    /* ~60 KB on the wire each (45,000 bytes of plaintext, base64 and
     * envelope): four fit the burst, the fifth does not. */
    for (int i = 0; i < 4; i++) {
        sm_message *m = echo_padded(big, 45000);
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
    }
    sm_message *m = echo_padded(big, 45000);
    CU_ASSERT_EQUAL(error_code(m), 1008);
    CU_ASSERT_TRUE(retry_after(m) > 0 && retry_after(m) <= 1.0);
    double wait = retry_after(m);
    sm_message_free(m);
    /* Chat-sized messages from another session are not affected. */
    for (int i = 0; i < 30; i++) {
        m = echo_padded(chat, 200);
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
    }
    /* After retry_after the big message passes. */
    if (wait > 0 && wait <= 1.0)
        usleep((useconds_t)(wait * 1e6) + 100 * 1000);
    m = echo_padded(big, 45000);
    CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
    sm_message_free(m);
    sm_client_close(big, 1000);
    sm_client_close(chat, 1000);
    stop();
}

/* ---- room fan-out budget -------------------------------------------------- */

static int history_has(sm_client *c, const char *content)
{
    sm_message *m = harness_callf(c, "get_history", "{s:s}", "room", "general");
    const json_t *list = m ? json_object_get(m->payload, "messages") : NULL;
    int found = 0;
    for (size_t i = 0; i < json_array_size(list); i++)
        found |= strcmp(jstr(json_array_get(list, i), "content"), content) == 0;
    sm_message_free(m);
    return found;
}

static void public_message_beyond_room_fanout_budget_gets_1008_and_is_not_stored(void)
{
    /* 3,000 bytes to 2 members cost 6,000 of a 8,192 burst refilled at
     * 1,024 a second: the second message right after is refused. */
    start(PLUGINS "limits = { room_fanout_bytes_per_second = 1024; room_fanout_burst = 8192; };\n");
    sm_client *a = registered("fanout_a");
    sm_client *b = registered("fanout_b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    char first[3001], second[3001];
    memset(first, 'a', 3000);
    memset(second, 'b', 3000);
    first[3000] = second[3000] = '\0';
    sm_message *m = harness_callf(a, "public_message", "{s:s}", "content", first);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "public_message");
    sm_message_free(m);
    m = harness_callf(a, "public_message", "{s:s}", "content", second);
    CU_ASSERT_EQUAL(error_code(m), 1008);
    CU_ASSERT_STRING_EQUAL(m ? jstr(m->payload, "command") : "", "public_message");
    /* (6,000 - 2,192) / 1,024 s, less what time passed. */
    CU_ASSERT_TRUE(retry_after(m) > 2.0 && retry_after(m) <= 3.72);
    sm_message_free(m);
    /* Nothing stored, nothing sent. */
    CU_ASSERT_TRUE(history_has(b, first));
    CU_ASSERT_FALSE(history_has(b, second));
    int events = 0, seconds = 0;
    while (sm_client_next_event(b, 0, &m) == SM_CLIENT_OK) {
        if (strcmp(m->action, "public_message") == 0) {
            events++;
            seconds += strcmp(jstr(m->payload, "content"), second) == 0;
        }
        sm_message_free(m);
    }
    CU_ASSERT_EQUAL(events, 1);
    CU_ASSERT_EQUAL(seconds, 0);
    /* Small messages still pass within what is left. */
    m = harness_callf(a, "public_message", "{s:s}", "content", "hello");
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "public_message");
    sm_message_free(m);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    stop();
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(connection_beyond_max_sessions_per_address_gets_429),
        SM_TEST(session_without_login_is_closed_1008_at_login_deadline),
        SM_TEST(key_exchange_beyond_handshakes_per_address_gets_1008_without_rsa),
        SM_TEST(big_messages_beyond_bytes_per_second_get_1008_with_retry_after),
        SM_TEST(public_message_beyond_room_fanout_budget_gets_1008_and_is_not_stored),
        SM_TEST(forwarded_for_is_believed_only_from_trusted_proxies),
        SM_TEST(forwarded_for_is_ignored_by_default),
        SM_TEST(per_address_limit_counts_the_forwarded_address),
        SM_TEST_END,
    };
    return sm_test_run("limits", cases, NULL, fini);
}
