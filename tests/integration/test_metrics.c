/* GET /metrics in the real server (docs/OPERATIONS.md, "Monitoring"): after
 * a known workload (handshakes, one timed out, one refused, one failed,
 * registrations,
 * logins with one wrong password, private messages, an unknown action)
 * the page, read by the Prometheus client's own parser, holds exactly the
 * counts; a slow consumer's cut is counted; only addresses in
 * metrics.allow are answered, by the TCP peer and never by
 * X-Forwarded-For; the cluster families are declared, without samples. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

/* Debian's interpreter: python3-prometheus-client is installed for it
 * (scripts/install-deps), whatever python3 comes first in PATH. */
#define PYTHON "/usr/bin/python3"
#define PARSER SM_SOURCE_DIR "/tests/integration/metrics_parse.py"

/* Bound on 0.0.0.0 so that a client from 127.0.0.2 is another peer;
 * only 127.0.0.1 may read the page, 127.0.0.2 is a trusted proxy (whose
 * X-Forwarded-For must not open /metrics). */
#define WORKLOAD_CONFIG                                                                      \
    "server = { port = 0; bind = \"0.0.0.0\"; key_file = \"@DIR@/server_key.pem\";"          \
    " key_bits = 2048; handshake_timeout = 1; trusted_proxies = [\"127.0.0.2\"]; "          \
    HARNESS_IO_THREADS " };\n"                                                             \
    "limits = { handshakes_per_address = 3; };\n"                                          \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"messaging\"]; };\n"      \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; };\n"   \
    "metrics = { allow = [\"127.0.0.1\"]; };\n"

/* Large enough for the parser's output, whatever the number of series. */
#define PAGE_MAX (1 << 20)

/* The response to GET path from source (NULL: the default) with an extra
 * header line (NULL: none); malloc'd, NULL on failure. */
static char *http_get(int port, const char *source, const char *path, const char *header)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sConnection: close\r\n\r\n", path,
                     header ? header : "", header ? "\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof req)
        return NULL;
    return harness_http_exchange(port, source, req, (size_t)n, 5000, NULL);
}

/* The page parsed by metrics_parse.py: its output lines, malloc'd. */
static char *scrape(const harness_server *srv)
{
    char *resp = http_get(srv->port, NULL, "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_PTR_NOT_NULL(strstr(resp, "HTTP/1.1 200"));
    CU_ASSERT_PTR_NOT_NULL(strstr(resp, "text/plain; version=0.0.4"));
    char *body = strstr(resp, "\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    char path[512], cmd[1200];
    CU_ASSERT_EQUAL_FATAL(harness_path(srv, "scrape.txt", path, sizeof path), 0);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(body + 4, f);
    fclose(f);
    free(resp);
    snprintf(cmd, sizeof cmd, "%s %s %s", PYTHON, PARSER, path);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    char *out = calloc(1, PAGE_MAX);
    size_t got = out ? fread(out, 1, PAGE_MAX - 1, p) : 0;
    int status = pclose(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    out[got] = '\0';
    CU_ASSERT_EQUAL(status, 0); /* the parser accepted the page */
    return out;
}

/* The value of the sample "name|labels|", or -1 when absent (printed). */
static double sample(const char *parsed, const char *name, const char *labels)
{
    char key[256];
    snprintf(key, sizeof key, "\n%s|%s|", name, labels);
    const char *at = strstr(parsed, key);
    if (!at) {
        fprintf(stderr, "no sample %s{%s}\n", name, labels);
        return -1;
    }
    return strtod(at + strlen(key), NULL);
}

static int has_type(const char *parsed, const char *family, const char *type)
{
    char line[256];
    snprintf(line, sizeof line, "TYPE %s %s\n", family, type);
    return strstr(parsed, line) != NULL;
}

static harness_server srv;

static sm_client *connect_client(void)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    return c;
}

/* The code of the reply to action (0 for a response). */
static int call_code(sm_client *c, const char *action, const char *user, const char *password)
{
    sm_message *m = harness_callf(c, action, "{s:s, s:s}", "username", user, "password",
                                  password);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    int code = strcmp(m->type, "response") == 0 ? 0 : harness_error_code(m);
    sm_message_free(m);
    return code;
}

static void scrape_after_a_known_workload_has_exact_counts(void)
{
    CU_ASSERT_EQUAL_FATAL(harness_start(&srv, WORKLOAD_CONFIG), 0);
    /* One connection that never sends key_exchange: handshake_timeout. */
    sm_client *idle = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_open_opts(&srv, NULL, &idle), SM_CLIENT_OK);
    sm_client *a = connect_client(), *b = connect_client(), *c = connect_client();
    /* A fourth key_exchange from 127.0.0.1 this minute: refused. */
    sm_client *refused = NULL;
    CU_ASSERT_NOT_EQUAL(harness_connect(&srv, &refused), SM_CLIENT_OK);
    sm_client_free(refused);
    /* Not an envelope at all: failed (and not counted by the limit). */
    sm_client *garbage = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_open_opts(&srv, NULL, &garbage), SM_CLIENT_OK);
    CU_ASSERT_EQUAL(sm_client_send_text(garbage, "nonsense", 8), SM_CLIENT_OK);
    CU_ASSERT_EQUAL(harness_wait_closed(garbage, 5000), 1008);
    sm_client_free(garbage);
    CU_ASSERT_EQUAL(call_code(a, "register", "alice", "correct horse"), 0);
    CU_ASSERT_EQUAL(call_code(b, "register", "bob", "battery staple"), 0);
    CU_ASSERT_EQUAL(call_code(c, "login", "alice", "wrong horse"), 1001);
    CU_ASSERT_EQUAL(call_code(c, "login", "alice", "correct horse"), 0);
    for (int i = 0; i < 2; i++) {
        sm_message *m = harness_callf(a, "private_message", "{s:s, s:s, s:b}", "recipient",
                                      "bob", "content", "hello", "encrypted", 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        CU_ASSERT_STRING_EQUAL(m->type, "response");
        sm_message_free(m);
    }
    sm_message *m = harness_callf(a, "no_such_action", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(harness_error_code(m), 1003);
    sm_message_free(m);
    CU_ASSERT_EQUAL(harness_wait_closed(idle, 5000), 1008);
    sm_client_free(idle);
    /* The server may notice the close after the client: wait for it. */
    CU_ASSERT_TRUE(harness_wait_log(&srv, "no key_exchange in time", 5000));

    char *p = NULL;
    for (int i = 0; i < 50; i++) {
        free(p);
        p = scrape(&srv);
        if (sample(p, "safemessenger_sessions", "state=closing") == 0 &&
            sample(p, "safemessenger_sessions", "state=handshake") == 0)
            break;
        usleep(100 * 1000);
    }
    CU_ASSERT_TRUE(has_type(p, "safemessenger_sessions", "gauge"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_commands", "counter"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_command_duration_seconds", "histogram"));
    CU_ASSERT_EQUAL(sample(p, "safemessenger_sessions", "state=logged_in"), 3);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_sessions", "state=open"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_sessions", "state=handshake"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_sessions", "state=key_pending"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_connections_total", ""), 6);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_handshakes_total", "result=ok"), 3);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_handshakes_total", "result=timeout"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_handshakes_total", "result=failed"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_handshakes_total", "result=refused"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=register,code=0"), 2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=login,code=0"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=login,code=1001"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=private_message,code=0"),
                    2);
    /* The client's action name is not a label. */
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=unknown,code=1003"), 1);
    CU_ASSERT_PTR_NULL(strstr(p, "no_such_action"));
    CU_ASSERT_EQUAL(sample(p, "safemessenger_command_duration_seconds_count", "action=login"),
                    2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_command_duration_seconds_bucket",
                           "action=login,le=+Inf"), 2);
    CU_ASSERT(sample(p, "safemessenger_command_duration_seconds_sum", "action=login") > 0);
    /* Two private messages to bob's one session; nothing else sends events. */
    CU_ASSERT_EQUAL(sample(p, "safemessenger_deliveries_total", ""), 2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_send_queue_drops_total", "reason=queue_full"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_worker_queue_depth", ""), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_host_calls_refused_total", ""), 0);
    /* The server runs the I/O threads the suite asked for; the scrape
     * comes after every reply, so nothing waits in their queues. */
    CU_ASSERT_EQUAL(sample(p, "safemessenger_io_threads", ""), harness_io_threads());
    CU_ASSERT_EQUAL(sample(p, "safemessenger_io_queue_items", ""), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_io_queue_full_waits_total", ""), 0);
    /* The auth plugin's own counter, registered through the host table. */
    CU_ASSERT_EQUAL(sample(p, "safemessenger_auth_logins_total", "result=success"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_auth_logins_total", "result=failed"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nsafemessenger_plugin_info|name=auth,version="));
    CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nsafemessenger_plugin_info|name=messaging,version="));
    /* A lone server declares the cluster families without samples (as
     * the PostgreSQL ones on SQLite); integration.cluster's nodes have them. */
    CU_ASSERT_TRUE(has_type(p, "safemessenger_cluster_up", "gauge"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_cluster_presence_state", "gauge"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_cluster_bus_published", "counter"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_cluster_presence_online", "counter"));
    CU_ASSERT_TRUE(has_type(p, "safemessenger_cluster_redis_reconnects", "counter"));
    CU_ASSERT_PTR_NULL(strstr(p, "\nsafemessenger_cluster_"));
    CU_ASSERT(sample(p, "process_cpu_seconds_total", "") > 0);
    CU_ASSERT(sample(p, "process_resident_memory_bytes", "") > 1e6);
    CU_ASSERT(sample(p, "process_open_fds", "") > 3);
    free(p);
    sm_client_free(a);
    sm_client_free(b);
    sm_client_free(c);
}

static void only_allowed_tcp_peers_get_the_page(void)
{
    /* The server of the previous test: bound on 0.0.0.0, allow 127.0.0.1. */
    CU_ASSERT_NOT_EQUAL_FATAL(srv.pid, 0);
    char *r = http_get(srv.port, "127.0.0.2", "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "HTTP/1.1 403"));
    CU_ASSERT_PTR_NULL(strstr(r, "safemessenger_"));
    free(r);
    /* 127.0.0.2 is a trusted proxy, and still its X-Forwarded-For opens
     * nothing here. */
    r = http_get(srv.port, "127.0.0.2", "/metrics", "X-Forwarded-For: 127.0.0.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "HTTP/1.1 403"));
    free(r);
    r = http_get(srv.port, "127.0.0.1", "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "HTTP/1.1 200"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "safemessenger_connections_total"));
    free(r);
    CU_ASSERT_EQUAL(harness_cleanup(&srv), 0);
}

static void slow_consumer_cut_is_counted(void)
{
    /* The default plugins (testcmds): emit_many holds its events until
     * the reply, and the 17th over send_queue_messages = 16 cuts the
     * session. */
    harness_server s2;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s2, "limits = { send_queue_messages = 16; };\n"), 0);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s2, &c), SM_CLIENT_OK);
    json_t *payload = json_pack("{s:i}", "count", 100);
    CU_ASSERT_EQUAL(sm_client_send(c, "emit_many", payload, NULL), SM_CLIENT_OK);
    json_decref(payload);
    CU_ASSERT_EQUAL(harness_wait_closed(c, 5000), 1008);
    sm_client_free(c);
    char *p = scrape(&s2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_send_queue_drops_total", "reason=queue_full"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_send_queue_drops_total", "reason=send_timeout"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_deliveries_total", ""), 16);
    free(p);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
}

/* A plugin's worker calling a host service is refused, logged and counted
 * (testcmds host_from_worker does it on purpose). */
static void host_call_from_a_worker_is_refused_and_counted(void)
{
    harness_server s2;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s2, NULL), 0);
    char *p = scrape(&s2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_host_calls_refused_total", ""), 0);
    free(p);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s2, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "host_from_worker", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_TRUE(json_is_true(json_object_get(m->payload, "refused")));
    sm_message_free(m);
    sm_client_close(c, 1000);
    p = scrape(&s2);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_host_calls_refused_total", ""), 1);
    free(p);
    CU_ASSERT_EQUAL(harness_log_contains(&s2, "called off the logic thread"), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
}

/* Code of the reply to action with payload {} (0 for a response). */
static int code_of(sm_client *c, const char *action)
{
    sm_message *m = harness_callf(c, action, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    int code = strcmp(m->type, "response") == 0 ? 0 : harness_error_code(m);
    sm_message_free(m);
    return code;
}

/* Each command path of dispatch counted with its code: replied in the
 * handler or deferred, refused before it (1002, 1004), left without a
 * reply (1005), silent (PONG, SM_ACTION_NO_REPLY).
 * With one histogram per action the page is over one write's chunk, so
 * it is also written in pieces (metrics_http.c, CHUNK). */
static void every_dispatch_path_counts_its_code_on_a_page_of_several_chunks(void)
{
    harness_server s3;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s3, NULL), 0);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s3, &c), SM_CLIENT_OK);
    static const char *const ok[] = {"echo", "stats", "peer_address", "worker_status",
                                     "release_worker", "deferred_echo", "double_reply", "emit"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CU_ASSERT_EQUAL(code_of(c, ok[i]), 0);
    CU_ASSERT_EQUAL(code_of(c, "whoami"), 1002);
    CU_ASSERT_EQUAL(code_of(c, "check_policy"), 1002);
    CU_ASSERT_EQUAL(code_of(c, "kv_get"), 1004);
    CU_ASSERT_EQUAL(code_of(c, "topic"), 1004);
    CU_ASSERT_EQUAL(code_of(c, "typed"), 1004);
    /* A handler that returns without replying: the core's 1005. */
    CU_ASSERT_EQUAL(code_of(c, "no_reply"), 1005);
    json_t *pong = json_pack("{s:f}", "timestamp", 1.0);
    CU_ASSERT_EQUAL(sm_client_send(c, "PONG", pong, NULL), SM_CLIENT_OK);
    json_decref(pong);
    CU_ASSERT_EQUAL(code_of(c, "echo"), 0); /* after PONG: it has run */
    char *resp = http_get(s3.port, NULL, "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    const char *body = strstr(resp, "\r\n\r\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT(strlen(body + 4) > 16384);
    free(resp);
    char *p = scrape(&s3);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=echo,code=0"), 2);
    for (size_t i = 1; i < sizeof ok / sizeof ok[0]; i++) {
        char labels[96];
        snprintf(labels, sizeof labels, "action=%s,code=0", ok[i]);
        CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", labels), 1);
    }
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=whoami,code=1002"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=check_policy,code=1002"),
                    1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=kv_get,code=1004"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=topic,code=1004"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=typed,code=1004"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=no_reply,code=1005"), 1);
    /* SM_ACTION_NO_REPLY: answered by nothing, counted as a success. */
    CU_ASSERT_EQUAL(sample(p, "safemessenger_commands_total", "action=PONG,code=0"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_deliveries_total", ""), 1); /* emit's event */
    free(p);
    sm_client_free(c);
    CU_ASSERT_EQUAL(harness_cleanup(&s3), 0);
}

#define AUTH_PLUGINS(list, allow)                                                            \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [" list "]; };\n"                      \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1; };\n"   \
    "metrics = { allow = [" allow "]; };\n"
#define BOTH "\"auth\", \"messaging\""
#define LOCAL "\"127.0.0.1\""

/* A reload that unloads auth, then one that loads it again: its counter
 * comes back with its count (a counter never goes down), plugin_info
 * follows, and metrics.allow takes effect at the reload. */
static void plugin_reloaded_keeps_its_counts_and_allow_follows_reloads(void)
{
    harness_server s4;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s4, AUTH_PLUGINS(BOTH, LOCAL)), 0);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s4, &c), SM_CLIENT_OK);
    CU_ASSERT_EQUAL(call_code(c, "login", "nobody", "wrong password"), 1001);
    char *p = scrape(&s4);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_plugin_info", "name=auth,version=1.0"), 1);
    free(p);
    CU_ASSERT_EQUAL(harness_reload(&s4, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = "
                                        "[\"messaging\"]; };\n"), 1);
    p = scrape(&s4);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_plugin_info", "name=auth,version=1.0"), 0);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_auth_logins_total", "result=failed"), 1);
    free(p);
    CU_ASSERT_EQUAL(harness_reload(&s4, AUTH_PLUGINS(BOTH, LOCAL)), 1);
    CU_ASSERT_EQUAL(call_code(c, "login", "nobody", "wrong password"), 1001);
    p = scrape(&s4);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_plugin_info", "name=auth,version=1.0"), 1);
    CU_ASSERT_EQUAL(sample(p, "safemessenger_auth_logins_total", "result=failed"), 2);
    free(p);
    /* Nobody may read the page any more. */
    CU_ASSERT_EQUAL(harness_reload(&s4, AUTH_PLUGINS(BOTH, "")), 1);
    char *r = http_get(s4.port, NULL, "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "HTTP/1.1 403"));
    free(r);
    sm_client_free(c);
    CU_ASSERT_EQUAL(harness_cleanup(&s4), 0);
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

static const sm_test_case cases[] = {
    SM_TEST(scrape_after_a_known_workload_has_exact_counts),
    SM_TEST(only_allowed_tcp_peers_get_the_page),
    SM_TEST(slow_consumer_cut_is_counted),
    SM_TEST(host_call_from_a_worker_is_refused_and_counted),
    SM_TEST(every_dispatch_path_counts_its_code_on_a_page_of_several_chunks),
    SM_TEST(plugin_reloaded_keeps_its_counts_and_allow_follows_reloads),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("metrics", cases, NULL, fini);
}
