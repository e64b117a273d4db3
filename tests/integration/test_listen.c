/* The listening socket: server.bind binds exactly the address it names
 * (read back from the kernel in /proc/net/tcp{,6}), other local addresses
 * are refused, the log states the address actually bound, a bad address
 * or a busy port is refused with the reason, and the TLS certificate and
 * key are checked (by --check-config and at start) before they are used. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define BIND_SECTION(addr) \
    "server = { port = 0; bind = \"" addr "\"; key_file = \"@DIR@/server_key.pem\"; key_bits = 2048; " \
    HARNESS_IO_THREADS " };\n"

/* Number of LISTEN sockets on `port` in /proc/net/<file>; the local
 * address of the last one (kernel hex form) goes to addr. */
static int listeners_on(const char *file, int port, char *addr, size_t addr_len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/net/%s", file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int count = 0;
    if (!fgets(line, sizeof line, f)) { /* header */
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        char local[64], remote[64], state[8];
        if (sscanf(line, "%*s %63s %63s %7s", local, remote, state) != 3)
            continue;
        char *colon = strrchr(local, ':');
        if (!colon || strtol(colon + 1, NULL, 16) != port || strcmp(state, "0A") != 0)
            continue;
        *colon = '\0';
        snprintf(addr, addr_len, "%s", local);
        count++;
    }
    fclose(f);
    return count;
}

/* 0 when a TCP connection to addr:port succeeds, else the errno. */
static int tcp_connect(const char *addr, int port)
{
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof *v6;
    } else {
        return EINVAL;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    int rc = connect(fd, (struct sockaddr *)&sa, len) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

/* Connects a protocol client to url and returns the peer address the
 * server recorded for it ("" on failure). */
static void recorded_address(const harness_server *s, const char *url, char *out, size_t len)
{
    out[0] = '\0';
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.url = url;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(s, &o, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "peer_address", NULL);
    if (m && strcmp(m->type, "response") == 0)
        snprintf(out, len, "%s", json_string_value(json_object_get(m->payload, "address")));
    sm_message_free(m);
    sm_client_close(c, 1000);
}

static int log_says_listening(const harness_server *s, const char *where_fmt)
{
    char where[128], line[160];
    snprintf(where, sizeof where, where_fmt, s->port);
    snprintf(line, sizeof line, "listening on %s (ws)", where);
    return harness_log_contains(s, line);
}

static void bind_ipv4_loopback_listens_on_it_alone(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, BIND_SECTION("127.0.0.1")), 0);
    char addr[64] = "";
    CU_ASSERT_EQUAL(listeners_on("tcp", s.port, addr, sizeof addr), 1);
    CU_ASSERT_STRING_EQUAL(addr, "0100007F");
    CU_ASSERT_EQUAL(listeners_on("tcp6", s.port, addr, sizeof addr), 0);
    CU_ASSERT_EQUAL(log_says_listening(&s, "127.0.0.1:%d"), 1);
    CU_ASSERT_EQUAL(tcp_connect("127.0.0.1", s.port), 0);
    /* 127.0.0.2 is loopback too on Linux: another local address. */
    CU_ASSERT_EQUAL(tcp_connect("127.0.0.2", s.port), ECONNREFUSED);
    CU_ASSERT_EQUAL(tcp_connect("::1", s.port), ECONNREFUSED);
    char peer[64];
    recorded_address(&s, s.url, peer, sizeof peer);
    CU_ASSERT_STRING_EQUAL(peer, "127.0.0.1");
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void bind_ipv6_loopback_refuses_ipv4(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, BIND_SECTION("::1")), 0);
    char addr[64] = "";
    CU_ASSERT_EQUAL(listeners_on("tcp6", s.port, addr, sizeof addr), 1);
    CU_ASSERT_STRING_EQUAL(addr, "00000000000000000000000001000000");
    CU_ASSERT_EQUAL(listeners_on("tcp", s.port, addr, sizeof addr), 0);
    CU_ASSERT_EQUAL(log_says_listening(&s, "[::1]:%d"), 1);
    CU_ASSERT_EQUAL(tcp_connect("127.0.0.1", s.port), ECONNREFUSED);
    char url[128], peer[64];
    snprintf(url, sizeof url, "ws://[::1]:%d/", s.port);
    recorded_address(&s, url, peer, sizeof peer);
    CU_ASSERT_STRING_EQUAL(peer, "::1");
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void bind_all_ipv4_does_not_listen_on_ipv6(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, BIND_SECTION("0.0.0.0")), 0);
    char addr[64] = "";
    CU_ASSERT_EQUAL(listeners_on("tcp", s.port, addr, sizeof addr), 1);
    CU_ASSERT_STRING_EQUAL(addr, "00000000");
    CU_ASSERT_EQUAL(listeners_on("tcp6", s.port, addr, sizeof addr), 0);
    CU_ASSERT_EQUAL(log_says_listening(&s, "0.0.0.0:%d"), 1);
    CU_ASSERT_EQUAL(tcp_connect("127.0.0.2", s.port), 0);
    CU_ASSERT_EQUAL(tcp_connect("::1", s.port), ECONNREFUSED);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void bind_all_ipv6_is_dual_stack(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, BIND_SECTION("::")), 0);
    char addr[64] = "";
    CU_ASSERT_EQUAL(listeners_on("tcp6", s.port, addr, sizeof addr), 1);
    CU_ASSERT_STRING_EQUAL(addr, "00000000000000000000000000000000");
    CU_ASSERT_EQUAL(log_says_listening(&s, "[::]:%d"), 1);
    CU_ASSERT_EQUAL(tcp_connect("::1", s.port), 0);
    CU_ASSERT_EQUAL(tcp_connect("127.0.0.1", s.port), 0);
    /* An IPv4 peer of the dual-stack socket is recorded as plain IPv4. */
    char peer[64];
    recorded_address(&s, s.url, peer, sizeof peer);
    CU_ASSERT_STRING_EQUAL(peer, "127.0.0.1");
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* Connections accepted by our socket still pass lws's upgrade checks: at
 * limits.max_sessions the next upgrade is refused with 503. */
static void full_server_refuses_the_upgrade_with_503(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "limits = { max_sessions = 2; };\n"), 0);
    sm_client *a = NULL, *b = NULL, *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s, &a), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s, &b), SM_CLIENT_OK);
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.url = s.url;
    char err[256] = "";
    CU_ASSERT_EQUAL(sm_client_open(&o, &c, err, sizeof err), SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "503"));
    sm_client_close(a, 1000);
    /* A freed slot is usable again (the close is handled asynchronously). */
    int rc = SM_CLIENT_PROTOCOL;
    for (int i = 0; i < 50 && rc != SM_CLIENT_OK; i++) {
        rc = harness_connect(&s, &c);
        if (rc != SM_CLIENT_OK)
            usleep(100000);
    }
    CU_ASSERT_EQUAL(rc, SM_CLIENT_OK);
    sm_client_close(c, 1000);
    sm_client_close(b, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* ---- refusals: the server run directly on a configuration of ours ------ */

/* Writes <dir>/alt.conf (server keys as given, the harness's key, an empty
 * plugin list) and runs the server on it with args; returns its exit
 * status, its output in out. */
static int run_alt(const harness_server *s, const char *server_keys, const char *args,
                   char *out, size_t out_len)
{
    char conf[512], key[512], db[512];
    if (harness_path(s, "alt.conf", conf, sizeof conf) != 0 ||
        harness_path(s, "server_key.pem", key, sizeof key) != 0 ||
        harness_path(s, "alt.db", db, sizeof db) != 0)
        return -1;
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "server = { key_file = \"%s\"; key_bits = 2048; io_threads = %d; %s };\n"
            "storage = { database = \"%s\"; };\n"
            "plugins = { dir = \"%s\"; load = []; };\n",
            key, harness_io_threads(), server_keys, db, SM_TEST_PLUGIN_DIR);
    if (fclose(f) != 0)
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "timeout 30 '%s' -c '%s' %s 2>&1", SM_SERVER_PATH, conf, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t got = fread(out, 1, out_len - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    CU_ASSERT_PTR_NULL(strstr(out, "Sanitizer"));
    CU_ASSERT_PTR_NULL(strstr(out, "runtime error"));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void bind_host_name_or_bad_literal_is_refused_with_the_reason(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, NULL), 0);
    static const char *const bad[] = {"localhost", "127.0.0.300", "[::1", "", "*"};
    char keys[256], out[8192];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(keys, sizeof keys, "port = 0; bind = \"%s\";", bad[i]);
        CU_ASSERT_EQUAL(run_alt(&s, keys, "", out, sizeof out), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "server.bind"));
        CU_ASSERT_PTR_NULL(strstr(out, "listening on"));
        CU_ASSERT_EQUAL(run_alt(&s, keys, "--check-config", out, sizeof out), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "server.bind"));
    }
    snprintf(keys, sizeof keys, "port = 0; bind = \"localhost\";");
    CU_ASSERT_EQUAL(run_alt(&s, keys, "--check-config", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "server.bind \"localhost\" is not an IP address"));
    /* A literal this machine does not have: the kernel's reason. */
    snprintf(keys, sizeof keys, "port = 0; bind = \"192.0.2.1\";");
    CU_ASSERT_EQUAL(run_alt(&s, keys, "", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "cannot listen on 192.0.2.1:0: Cannot assign requested address"));
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* A socket of ours holding 127.0.0.1:<port>; returns the fd, *port set. */
static int occupy_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void busy_port_says_address_in_use_and_not_tls(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "server = { " HARNESS_SERVER_BASE
                                            " tls = { cert = \"@TLS_CERT@\"; key = \"@TLS_KEY@\"; }; };\n"),
                          0);
    int port = 0;
    int fd = occupy_port(&port);
    CU_ASSERT_FATAL(fd >= 0);
    char args[64], want[128], out[8192];
    snprintf(args, sizeof args, "-p %d", port);
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: Address already in use", port);
    CU_ASSERT_EQUAL(run_alt(&s, "bind = \"127.0.0.1\";", args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    /* With TLS configured (a good pair), still only the port is blamed. */
    char cert[512], key[512], keys[1200];
    harness_path(&s, HARNESS_TLS_CERT, cert, sizeof cert);
    harness_path(&s, HARNESS_TLS_KEY, key, sizeof key);
    snprintf(keys, sizeof keys, "bind = \"127.0.0.1\"; tls = { cert = \"%s\"; key = \"%s\"; };",
             cert, key);
    CU_ASSERT_EQUAL(run_alt(&s, keys, args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NULL(strstr(out, "TLS"));
    close(fd);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* A second certificate and key, so each key can be paired with the other
 * certificate. */
static int write_other_pair(const harness_server *s, char *cert, char *key, size_t len)
{
    if (harness_path(s, "other_cert.pem", cert, len) != 0 ||
        harness_path(s, "other_key.pem", key, len) != 0)
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout '%s' -out '%s' -days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1",
             key, cert);
    return system(cmd) == 0 ? 0 : -1;
}

static void tls_key_not_matching_the_certificate_is_refused(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "server = { " HARNESS_SERVER_BASE
                                            " tls = { cert = \"@TLS_CERT@\"; key = \"@TLS_KEY@\"; }; };\n"),
                          0);
    char cert[512], key[512], other_cert[512], other_key[512];
    harness_path(&s, HARNESS_TLS_CERT, cert, sizeof cert);
    harness_path(&s, HARNESS_TLS_KEY, key, sizeof key);
    CU_ASSERT_EQUAL_FATAL(write_other_pair(&s, other_cert, other_key, sizeof other_cert), 0);
    char keys[1400], out[8192], want[1400];

    /* A good pair passes the check (and the running server used it). */
    snprintf(keys, sizeof keys, "port = 0; bind = \"127.0.0.1\"; tls = { cert = \"%s\"; key = \"%s\"; };",
             cert, key);
    CU_ASSERT_EQUAL(run_alt(&s, keys, "--check-config", out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "configuration OK"));

    /* The harness's certificate with the other key: refused by the check and
     * at start, naming both files. */
    snprintf(keys, sizeof keys, "port = 0; bind = \"127.0.0.1\"; tls = { cert = \"%s\"; key = \"%s\"; };",
             cert, other_key);
    snprintf(want, sizeof want, "server.tls: the key %s does not match the certificate %s",
             other_key, cert);
    CU_ASSERT_EQUAL(run_alt(&s, keys, "--check-config", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NULL(strstr(out, "configuration OK"));
    CU_ASSERT_EQUAL(run_alt(&s, keys, "", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NULL(strstr(out, "listening on"));

    /* A missing key file and a file that is not PEM name the file. */
    snprintf(keys, sizeof keys, "port = 0; bind = \"127.0.0.1\"; tls = { cert = \"%s\"; key = \"%s.missing\"; };",
             cert, key);
    snprintf(want, sizeof want, "server.tls.key: cannot open %s.missing: No such file or directory", key);
    CU_ASSERT_EQUAL(run_alt(&s, keys, "--check-config", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    char conf[512];
    harness_path(&s, "server.conf", conf, sizeof conf);
    snprintf(keys, sizeof keys, "port = 0; bind = \"127.0.0.1\"; tls = { cert = \"%s\"; key = \"%s\"; };",
             conf, key);
    snprintf(want, sizeof want, "server.tls.cert: %s holds no PEM certificate", conf);
    CU_ASSERT_EQUAL(run_alt(&s, keys, "", out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(bind_ipv4_loopback_listens_on_it_alone),
        SM_TEST(bind_ipv6_loopback_refuses_ipv4),
        SM_TEST(bind_all_ipv4_does_not_listen_on_ipv6),
        SM_TEST(bind_all_ipv6_is_dual_stack),
        SM_TEST(full_server_refuses_the_upgrade_with_503),
        SM_TEST(bind_host_name_or_bad_literal_is_refused_with_the_reason),
        SM_TEST(busy_port_says_address_in_use_and_not_tls),
        SM_TEST(tls_key_not_matching_the_certificate_is_refused),
        SM_TEST_END,
    };
    return sm_test_run("listen", cases, NULL, NULL);
}
