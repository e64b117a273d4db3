/* SIGHUP reload against the real server (docs/OPERATIONS.md "Reload"):
 * limits take effect on a live session, log.level changes what is logged,
 * restart-only keys (server.port, server.io_threads) are refused by name
 * while the server keeps serving on the old port, an invalid file (syntax,
 * unknown key, bad value, bad plugin setting) changes nothing, a plugin removed from
 * plugins.load answers "unknown action" while sessions stay connected and
 * logged in, and answers again once added back, a plugin's settings change
 * through its reload callback, and a certificate renewed in place is
 * served to new connections. Each test starts its own server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"
#define AUTH_WEAK "allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;"

static harness_server srv;

static int fini(void) { return harness_cleanup(&srv); }

static void start(const char *config)
{
    harness_cleanup(&srv);
    CU_ASSERT_EQUAL_FATAL(harness_start(&srv, config), 0);
}

static void stop(void) { CU_ASSERT_EQUAL(harness_cleanup(&srv), 0); }

static sm_client *connect_ok(void)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    return c;
}

/* The reply's error code, 0 for a response, -1 for no reply. */
static int code_of(sm_message *m)
{
    if (!m)
        return -1;
    int code = strcmp(m->type, "response") == 0 ? 0 : harness_error_code(m);
    sm_message_free(m);
    return code;
}

static int call_code(sm_client *c, const char *action)
{
    return code_of(harness_callf(c, action, NULL));
}

static int register_code(sm_client *c, const char *user)
{
    return code_of(harness_callf(c, "register", "{s:s, s:s}", "username", user, "password",
                                 PASSWORD));
}

/* How many of n echo commands sent back to back pass the rate limit. */
static int echoes_passing(sm_client *c, int n)
{
    int passed = 0;
    for (int i = 0; i < n; i++) {
        int code = call_code(c, "echo");
        CU_ASSERT(code == 0 || code == 1008);
        passed += code == 0;
    }
    return passed;
}

#define FAST_LIMITS "limits = { commands_per_second = 1000; command_burst = 1000; };\n"
#define SLOW_LIMITS "limits = { commands_per_second = 0.01; command_burst = 2; };\n"

static void limits_change_on_a_live_session(void)
{
    start(FAST_LIMITS);
    sm_client *c = connect_ok();
    CU_ASSERT_EQUAL(echoes_passing(c, 6), 6);
    CU_ASSERT_EQUAL(harness_reload(&srv, SLOW_LIMITS), 1);
    /* The session's bucket is cut to the new burst at its next command. */
    CU_ASSERT_EQUAL(echoes_passing(c, 6), 2);
    CU_ASSERT_EQUAL(harness_reload(&srv, FAST_LIMITS), 1);
    sm_client *d = connect_ok();
    CU_ASSERT_EQUAL(echoes_passing(d, 6), 6);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
    stop();
}

#define AUTH_PLUGINS(level)                                                                        \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"                           \
    "auth = { " AUTH_WEAK " };\n"                                                                 \
    "log = { level = \"" level "\"; };\n"

/* Each connection writes an info line (audit); auth's fini writes a debug
 * line at shutdown. */
static void log_level_changes_live(void)
{
    start(AUTH_PLUGINS("info"));
    sm_client *c = connect_ok();
    int lines = harness_log_count(&srv, "connection user=-");
    CU_ASSERT_EQUAL(lines, 1);
    CU_ASSERT_EQUAL(harness_reload(&srv, AUTH_PLUGINS("error")), 1);
    sm_client *d = connect_ok();
    CU_ASSERT_EQUAL(call_code(d, "echo"), 1003);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "connection user=-"), lines);
    CU_ASSERT_EQUAL(harness_reload(&srv, AUTH_PLUGINS("debug")), 1);
    sm_client *e = connect_ok();
    CU_ASSERT_EQUAL(call_code(e, "echo"), 1003);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "connection user=-"), lines + 1);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
    sm_client_close(e, 1000);
    CU_ASSERT_EQUAL(harness_stop(&srv, SIGTERM, NULL), 0);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "[auth] unloading: 0 hash jobs"), 1);
    stop();
}

static void port_change_is_refused_by_name_and_the_old_port_serves(void)
{
    start(NULL);
    sm_client *c = connect_ok();
    int old_port = srv.port;
    int other = old_port == 65000 ? 65001 : 65000;
    char config[512];
    snprintf(config, sizeof config,
             "server = { port = %d; bind = \"127.0.0.1\"; key_file = \"@DIR@/server_key.pem\"; "
             "key_bits = 2048; " HARNESS_IO_THREADS " };\n" SLOW_LIMITS, other);
    CU_ASSERT_EQUAL(harness_reload(&srv, config), 1);
    char line[128];
    snprintf(line, sizeof line, "server.port: cannot change while running (0 -> %d)", other);
    CU_ASSERT_EQUAL(harness_log_count(&srv, line), 1);
    /* The rest of the file took effect: the new limits. */
    CU_ASSERT_EQUAL(echoes_passing(c, 4), 2);
    sm_client *d = connect_ok(); /* still the old port */
    CU_ASSERT_EQUAL(call_code(d, "echo"), 0);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
    stop();
}

/* The I/O threads own the connections from start: a reload keeps their
 * number. The running value is the harness's SM_TEST_IO_THREADS, so this
 * also shows the suite's server really runs with the count ctest chose. */
static void io_threads_change_is_refused_by_name(void)
{
    start(NULL);
    sm_client *c = connect_ok();
    int running = harness_io_threads();
    CU_ASSERT_FATAL(running >= 1);
    int other = running == 1 ? 2 : 1;
    char config[512];
    snprintf(config, sizeof config,
             "server = { port = 0; bind = \"127.0.0.1\"; key_file = \"@DIR@/server_key.pem\"; "
             "key_bits = 2048; io_threads = %d; };\n" SLOW_LIMITS, other);
    CU_ASSERT_EQUAL(harness_reload(&srv, config), 1);
    char line[128];
    snprintf(line, sizeof line, "server.io_threads: cannot change while running (%d -> %d)",
             running, other);
    CU_ASSERT_EQUAL(harness_log_count(&srv, line), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "1 setting(s) kept until restart"), 1);
    /* The rest of the file took effect; the connection stays. */
    CU_ASSERT_EQUAL(echoes_passing(c, 4), 2);
    sm_client_close(c, 1000);
    stop();
}

/* The cluster keys name what the node joined at start (core/reload.c):
 * a reload keeps them. Shown on cluster.prefix, which needs no Redis. */
static void cluster_prefix_change_is_refused_by_name(void)
{
    start(NULL);
    sm_client *c = connect_ok();
    CU_ASSERT_EQUAL(harness_reload(&srv, "server = { " HARNESS_SERVER_BASE " };\n" SLOW_LIMITS
                                         "cluster = { prefix = \"other:\"; };\n"),
                    1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "cluster.prefix: cannot change while running "
                                            "(\"sm:\" -> \"other:\")"),
                    1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "1 setting(s) kept until restart"), 1);
    CU_ASSERT_EQUAL(echoes_passing(c, 4), 2);
    sm_client_close(c, 1000);
    stop();
}

static void invalid_files_change_nothing(void)
{
    start(FAST_LIMITS);
    sm_client *c = connect_ok();
    static const char *const bad[] = {
        /* syntax error */
        "limits = { command_burst = 2 ;; };\n",
        /* unknown core key */
        SLOW_LIMITS "server = { " HARNESS_SERVER_BASE " bogus_key = 1; };\n",
        /* bad value */
        "limits = { commands_per_second = 0.01; command_burst = 0; };\n",
        /* a section of no loaded plugin */
        SLOW_LIMITS "nobody = { x = 1; };\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(harness_reload(&srv, bad[i]), 0);
        /* Still the old limits, still the old plugin. */
        CU_ASSERT_EQUAL(echoes_passing(c, 4), 4);
    }
    CU_ASSERT_EQUAL(harness_log_count(&srv, "unknown key server.bogus_key"), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "section 'nobody' is neither"), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "configuration reload refused, nothing changed"), 4);
    sm_client_close(c, 1000);
    stop();
}

#define ROOMS_PLUGINS(list)                                                                        \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [" list "]; };\n"                           \
    "auth = { " AUTH_WEAK " };\n"

static int join_code(sm_client *c, const char *room)
{
    return code_of(harness_callf(c, "join_room", "{s:s}", "room_name", room));
}

static void removed_plugin_answers_unknown_action_and_comes_back(void)
{
    start(ROOMS_PLUGINS("\"auth\", \"rooms\""));
    sm_client *c = connect_ok();
    CU_ASSERT_EQUAL(register_code(c, "gina"), 0);
    CU_ASSERT_EQUAL(call_code(c, "get_users"), 0);

    CU_ASSERT_EQUAL(harness_reload(&srv, ROOMS_PLUGINS("\"auth\"")), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "plugin rooms unloaded"), 1);
    CU_ASSERT_EQUAL(call_code(c, "get_users"), 1003);
    CU_ASSERT_EQUAL(join_code(c, "general"), 1003);
    /* The session stays open and logged in: the actions that need a login
     * work again, without a new login, once the plugin is back. */

    CU_ASSERT_EQUAL(harness_reload(&srv, ROOMS_PLUGINS("\"auth\", \"rooms\"")), 1);
    CU_ASSERT_EQUAL(join_code(c, "general"), 0);
    CU_ASSERT_EQUAL(call_code(c, "get_users"), 0);
    CU_ASSERT_EQUAL(call_code(c, "logout"), 0);
    sm_client_close(c, 1000);
    stop();
}

/* A command the plugin deferred and cannot answer any more (its timer
 * went with it) gets 1005 from the core; the session goes on. */
static void unloading_answers_the_plugins_deferred_commands(void)
{
    start(NULL);
    sm_client *c = connect_ok();
    json_t *p = json_pack("{s:f}", "after", 600.0);
    uint64_t nonce = 0;
    CU_ASSERT_EQUAL_FATAL(sm_client_send(c, "deferred_timer", p, &nonce), SM_CLIENT_OK);
    json_decref(p);
    CU_ASSERT_EQUAL_FATAL(harness_wait_log(&srv, "deferred_timer: reply deferred", 5000), 1);
    CU_ASSERT_EQUAL(harness_reload(&srv, "plugins = { dir = \"@TEST_PLUGIN_DIR@\"; load = []; };\n"),
                    1);
    sm_message *m = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv(c, 5000, &m), SM_CLIENT_OK);
    CU_ASSERT_STRING_EQUAL(m->type, "error");
    CU_ASSERT_EQUAL(harness_error_code(m), 1005);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m->payload, "message")),
                           "the plugin handling the command was unloaded");
    sm_message_free(m);
    CU_ASSERT_EQUAL(call_code(c, "echo"), 1003);
    CU_ASSERT_EQUAL(harness_reload(&srv, NULL), 1);
    CU_ASSERT_EQUAL(call_code(c, "echo"), 0);
    sm_client_close(c, 1000);
    stop();
}

#define REG_LIMIT(n)                                                                               \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"                           \
    "auth = { " AUTH_WEAK " registrations_per_hour = " #n "; };\n"

static void plugin_settings_change_through_its_reload_callback(void)
{
    start(REG_LIMIT(1000));
    sm_client *c = connect_ok();
    CU_ASSERT_EQUAL(register_code(c, "hank"), 0);
    CU_ASSERT_EQUAL(harness_reload(&srv, REG_LIMIT(1)), 1);
    /* One registration from this address in the hour already. */
    CU_ASSERT_EQUAL(register_code(c, "ivan"), 1008);
    /* A bad or unknown auth setting refuses the whole file: the limit stays
     * at 1, and the limits section changes nothing either. */
    CU_ASSERT_EQUAL(harness_reload(&srv, REG_LIMIT(0) SLOW_LIMITS), 0);
    CU_ASSERT_EQUAL(harness_reload(&srv, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; "
                                         "load = [\"auth\"]; };\n"
                                         "auth = { " AUTH_WEAK " registrations_per_huor = 1; };\n"),
                    0);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "unknown key auth.registrations_per_huor"), 1);
    CU_ASSERT_EQUAL(register_code(c, "ivan"), 1008);
    CU_ASSERT_EQUAL(harness_reload(&srv, REG_LIMIT(1000)), 1);
    CU_ASSERT_EQUAL(register_code(c, "ivan"), 0);
    sm_client_close(c, 1000);
    stop();
}

#define TLS_CONFIG                                                                                 \
    "server = { " HARNESS_SERVER_BASE                                                              \
    " tls = { cert = \"@TLS_CERT@\"; key = \"@TLS_KEY@\"; }; };\n"

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int ok = in && out;
    char buf[4096];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

static int tls_connect(const char *ca)
{
    sm_client_options o = {.url = srv.wss_url, .ca_file = ca};
    sm_client *c = NULL;
    int rc = harness_connect_opts(&srv, &o, &c);
    if (c)
        sm_client_close(c, 1000);
    return rc;
}

static void renewed_certificate_is_served_to_new_connections(void)
{
    start(TLS_CONFIG);
    char cert[512], old_ca[512];
    CU_ASSERT_EQUAL_FATAL(harness_path(&srv, HARNESS_TLS_CERT, cert, sizeof cert), 0);
    CU_ASSERT_EQUAL_FATAL(harness_path(&srv, "old_ca.pem", old_ca, sizeof old_ca), 0);
    CU_ASSERT_EQUAL_FATAL(copy_file(cert, old_ca), 0);
    CU_ASSERT_EQUAL(tls_connect(old_ca), SM_CLIENT_OK);
    sm_client_options o = {.url = srv.wss_url, .ca_file = old_ca};
    sm_client *open = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &o, &open), SM_CLIENT_OK);

    CU_ASSERT_EQUAL_FATAL(harness_renew_tls(&srv), 0);
    CU_ASSERT_EQUAL(harness_reload(&srv, TLS_CONFIG), 1);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "TLS certificate reloaded"), 1);
    CU_ASSERT_NOT_EQUAL(tls_connect(old_ca), SM_CLIENT_OK);
    CU_ASSERT_EQUAL(tls_connect(cert), SM_CLIENT_OK);
    /* The connection opened before keeps working. */
    CU_ASSERT_EQUAL(call_code(open, "echo"), 0);
    sm_client_close(open, 1000);

    /* A certificate that does not match its key refuses the reload. */
    char key[512], saved_key[512];
    CU_ASSERT_EQUAL_FATAL(harness_path(&srv, HARNESS_TLS_KEY, key, sizeof key), 0);
    CU_ASSERT_EQUAL_FATAL(harness_path(&srv, "saved_key.pem", saved_key, sizeof saved_key), 0);
    CU_ASSERT_EQUAL_FATAL(copy_file(key, saved_key), 0);
    CU_ASSERT_EQUAL_FATAL(harness_renew_tls(&srv), 0);
    CU_ASSERT_EQUAL_FATAL(copy_file(saved_key, key), 0);
    CU_ASSERT_EQUAL(harness_reload(&srv, TLS_CONFIG), 0);
    stop();
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(limits_change_on_a_live_session),
        SM_TEST(log_level_changes_live),
        SM_TEST(port_change_is_refused_by_name_and_the_old_port_serves),
        SM_TEST(io_threads_change_is_refused_by_name),
        SM_TEST(cluster_prefix_change_is_refused_by_name),
        SM_TEST(invalid_files_change_nothing),
        SM_TEST(removed_plugin_answers_unknown_action_and_comes_back),
        SM_TEST(unloading_answers_the_plugins_deferred_commands),
        SM_TEST(plugin_settings_change_through_its_reload_callback),
        SM_TEST(renewed_certificate_is_served_to_new_connections),
        SM_TEST_END,
    };
    return sm_test_run("reload", cases, NULL, fini);
}
