/* The server as a process: command-line options, configuration refusals,
 * the key file, TLS, and SIGTERM shutdown with the database intact. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static void version_and_help_exit_0(void)
{
    char out[4096];
    CU_ASSERT_EQUAL(harness_run_server("--version", out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "safemessenger-server"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "plugin ABI"));
    CU_ASSERT_EQUAL(harness_run_server("--help", out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--check-config"));
    CU_ASSERT_EQUAL(harness_run_server("--no-such-option", out, sizeof out), 2);
    CU_ASSERT_EQUAL(harness_run_server("-p 70000", out, sizeof out), 2);
}

static void check_config_cites_file_and_line(void)
{
    char dir[] = "/tmp/sm-process-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char conf[512], args[1024], out[8192];
    snprintf(conf, sizeof conf, "%s/bad.conf", dir);
    CU_ASSERT_EQUAL_FATAL(write_text(conf, "server = {\n  port = \"eighty\";\n"
                                           "  prot = 1;\n};\nlimits = { command_burst = 0; };\n"),
                          0);
    snprintf(args, sizeof args, "-c '%s' --check-config", conf);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    char want[600];
    snprintf(want, sizeof want, "%s:2: server.port", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(want, sizeof want, "%s:3: unknown key server.prot", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(want, sizeof want, "%s:5: limits.command_burst", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));

    /* A valid file with a plugin that does not exist fails the check too. */
    CU_ASSERT_EQUAL_FATAL(write_text(conf, "plugins = { dir = \"/nonexistent\"; load = [\"x\"]; };\n"),
                          0);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent/x.so"));

    char good[1024];
    snprintf(good, sizeof good, "plugins = { dir = \"%s\"; load = [\"testcmds\"]; };\n",
             SM_TEST_PLUGIN_DIR);
    CU_ASSERT_EQUAL_FATAL(write_text(conf, good), 0);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "configuration OK"));
    unlink(conf);
    rmdir(dir);
}

static int fingerprint_of(const harness_server *s, char *out, size_t len);

/* Unknown keys are errors, so the shipped files must stay in step with
 * the code: each passes --check-config with every plugin it names (its
 * plugins.dir pointed at this build, its web.root at the source tree's
 * web/; nothing else is changed). */
static void shipped_configurations_pass_check_config(void)
{
    static const char *const files[] = {"safemessenger.conf", "bench.conf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[600], dir[] = "/tmp/sm-shipped-XXXXXX", dst[600], cmd[2048], out[16384];
        snprintf(src, sizeof src, "%s/conf/%s", SM_SOURCE_DIR, files[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        snprintf(cmd, sizeof cmd,
                 "sed -e 's|^\\( *dir = \\).*|\\1\"%s\";|'"
                 " -e 's|^\\( *root = \\).*|\\1\"%s/web\";|' '%s' > '%s' && grep -q '%s' '%s'",
                 SM_PLUGIN_BUILD_DIR, SM_SOURCE_DIR, src, dst, SM_PLUGIN_BUILD_DIR, dst);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        char args[700];
        snprintf(args, sizeof args, "-c '%s' --check-config", dst);
        int rc = harness_run_server(args, out, sizeof out);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "configuration OK"));
        if (rc != 0)
            fprintf(stderr, "\n%s:\n%s\n", files[i], out);
        unlink(dst);
        rmdir(dir);
    }
}

/* --check-config goes on past a plugin that fails, so one run lists every
 * plugin's problem, each pointing at its plugins.load entry; a key no
 * plugin reads is an error too. */
static void check_config_reports_every_plugin_error_with_file_and_line(void)
{
    char dir[] = "/tmp/sm-process-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char conf[512], args[1024], out[8192], text[2048], want[700];
    snprintf(conf, sizeof conf, "%s/plugins.conf", dir);
    snprintf(text, sizeof text,
             "plugins = {\n  dir = \"%s\";\n  load = [\n    \"nope\",\n    \"testcmds\",\n"
             "    \"gone\" ];\n};\n", SM_TEST_PLUGIN_DIR);
    CU_ASSERT_EQUAL_FATAL(write_text(conf, text), 0);
    snprintf(args, sizeof args, "-c '%s' --check-config", conf);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "%s:4: plugins.load[0] \"nope\"", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(want, sizeof want, "%s:6: plugins.load[2] \"gone\"", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NULL(strstr(out, "plugins.load[1]"));

    snprintf(text, sizeof text,
             "plugins = { dir = \"%s\"; load = [\"testcmds\"]; };\n"
             "testcmds = {\n  bogus = 1;\n};\nlimit = { };\n", SM_TEST_PLUGIN_DIR);
    CU_ASSERT_EQUAL_FATAL(write_text(conf, text), 0);
    CU_ASSERT_EQUAL(harness_run_server(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "%s:3: unknown key testcmds.bogus", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    snprintf(want, sizeof want, "%s:5: section 'limit' is neither a core section nor a loaded plugin's (did you mean "
                                "'limits'?)", conf);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    unlink(conf);
    rmdir(dir);
}

/* Runs the server in the background from working directory cwd; returns
 * its pid (the port is written to port_file). */
static pid_t spawn_server_in(const char *cwd, const char *conf, const char *port_file,
                             const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (chdir(cwd) != 0)
        _exit(126);
    FILE *f = freopen(log, "w", stderr);
    if (!f)
        _exit(126);
    execl(SM_SERVER_PATH, SM_SERVER_PATH, "-c", conf, "-p", "0", "--port-file", port_file,
          (char *)NULL);
    _exit(127);
}

static int wait_for_file(const char *path, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (access(path, F_OK) == 0)
            return 0;
        usleep(50 * 1000);
    }
    return -1;
}

/* Started from another directory, a config with relative paths still finds
 * its own key and database (once, a server started elsewhere minted a new
 * key and database where it stood). */
static void relative_paths_start_at_the_config_directory(void)
{
    /* Not on PostgreSQL: it is about a relative storage.database (an SQLite
     * file) in a configuration of its own; integration.test_process runs it. */
    if (harness_postgresql())
        return;
    char dir[] = "/tmp/sm-relpath-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char sub[600], conf[700], text[2048], port[700], log[700], path[800], cmd[900];
    snprintf(sub, sizeof sub, "%s/conf", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(sub, 0700), 0);
    snprintf(conf, sizeof conf, "%s/server.conf", sub);
    snprintf(port, sizeof port, "%s/port", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    snprintf(text, sizeof text,
             "server = { bind = \"127.0.0.1\"; key_file = \"../state/key.pem\"; io_threads = %d; };\n"
             "storage = { database = \"../state/server.db\"; };\n"
             "plugins = { dir = \"%s\"; load = [\"testcmds\"]; };\n", harness_io_threads(),
             SM_TEST_PLUGIN_DIR);
    CU_ASSERT_EQUAL_FATAL(write_text(conf, text), 0);
    pid_t pid = spawn_server_in("/", conf, port, log);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(wait_for_file(port, 30000), 0);
    kill(pid, SIGTERM);
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(path, sizeof path, "%s/state/key.pem", dir);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/state/server.db", dir);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    CU_ASSERT_NOT_EQUAL(access("/state", F_OK), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

/* Runs the server on s's config in the foreground (it must refuse to
 * start); returns its exit status and output. */
static int run_on_config_of(const harness_server *s, char *out, size_t len)
{
    char conf[512], args[700];
    harness_path(s, "server.conf", conf, sizeof conf);
    snprintf(args, sizeof args, "-c '%s' -p 0", conf);
    return harness_run_server(args, out, len);
}

/* Clients pinned the key the database was used with: a lost key file must
 * not be silently replaced by a new one. */
static void missing_key_for_a_used_database_is_refused_with_the_remedy(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "server = { port = 0; bind = \"127.0.0.1\"; "
                                            "key_file = \"@DIR@/keys/own.pem\"; "
                                            HARNESS_IO_THREADS " };\n"),
                          0);
    char fp[CRYPTO_FINGERPRINT_LEN] = "";
    CU_ASSERT_EQUAL(fingerprint_of(&s, fp, sizeof fp), 0);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    char key[512], out[8192], want[300];
    harness_path(&s, "keys/own.pem", key, sizeof key);
    CU_ASSERT_EQUAL_FATAL(unlink(key), 0);
    CU_ASSERT_EQUAL(run_on_config_of(&s, out, sizeof out), 1);
    snprintf(want, sizeof want, "is missing, but the database was used with %s; refusing to "
                                "create a new key", fp);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "Restore the key file from a backup"));
    CU_ASSERT_NOT_EQUAL(access(key, F_OK), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* PostgreSQL serves several servers (cluster mode's nodes share it): a
 * second one on the same schema starts, and both answer. */
static void second_server_on_the_same_postgresql_schema_starts(const harness_server *s)
{
    harness_server two;
    CU_ASSERT_EQUAL_FATAL(harness_start_on(&two, s, NULL, NULL), 0);
    const harness_server *both[] = {s, &two};
    for (size_t i = 0; i < 2; i++) {
        sm_client *c = NULL;
        CU_ASSERT_EQUAL(harness_connect(both[i], &c), SM_CLIENT_OK);
        sm_message *m = c ? harness_callf(c, "kv_put", "{s:s, s:s}", "key", "k", "value", "v")
                          : NULL;
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
        sm_client_close(c, 1000);
    }
    long long n = -1;
    CU_ASSERT_EQUAL(harness_query_int(s, "SELECT count(*) FROM testcmds_kv", &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(harness_cleanup(&two), 0);
}

static void second_server_on_the_same_database_is_refused_naming_the_pid(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, NULL), 0);
    if (harness_postgresql()) {
        second_server_on_the_same_postgresql_schema_starts(&s);
        CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
        return;
    }
    char out[8192], want[200];
    CU_ASSERT_EQUAL(run_on_config_of(&s, out, sizeof out), 1);
    snprintf(want, sizeof want, "is in use by another server (pid %ld)", (long)s.pid);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    /* The first one is unaffected. */
    sm_client *c = NULL;
    CU_ASSERT_EQUAL(harness_connect(&s, &c), SM_CLIENT_OK);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static int fingerprint_of(const harness_server *s, char *out, size_t len)
{
    sm_client *c = NULL;
    if (harness_connect(s, &c) != SM_CLIENT_OK)
        return -1;
    snprintf(out, len, "%s", sm_client_fingerprint(c));
    sm_client_close(c, 1000);
    return 0;
}

static void server_key_created_0600_and_reused(void)
{
    harness_server s1, s2;
    /* key_file outside the harness's pre-written key: the server makes it. */
    CU_ASSERT_EQUAL_FATAL(harness_start(&s1, "server = { port = 0; bind = \"127.0.0.1\"; "
                                             "key_file = \"@DIR@/keys/own.pem\"; "
                                             HARNESS_IO_THREADS " };\n"),
                          0);
    char path[512];
    harness_path(&s1, "keys/own.pem", path, sizeof path);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    char fp1[CRYPTO_FINGERPRINT_LEN] = "", fp2[CRYPTO_FINGERPRINT_LEN] = "";
    CU_ASSERT_EQUAL(fingerprint_of(&s1, fp1, sizeof fp1), 0);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s1, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);

    /* A second server on the same key file reuses it. */
    char extra[1024];
    snprintf(extra, sizeof extra,
             "server = { port = 0; bind = \"127.0.0.1\"; key_file = \"%s\"; " HARNESS_IO_THREADS
             " };\n", path);
    CU_ASSERT_EQUAL_FATAL(harness_start(&s2, extra), 0);
    CU_ASSERT_EQUAL(fingerprint_of(&s2, fp2, sizeof fp2), 0);
    CU_ASSERT_STRING_EQUAL(fp1, fp2);
    CU_ASSERT_EQUAL(strncmp(fp1, "sha256:", 7), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);

    /* A group-readable key is refused at start (timeout: never hang). */
    CU_ASSERT_EQUAL(chmod(path, 0640), 0);
    char conf[512], out[4096];
    harness_path(&s1, "server.conf", conf, sizeof conf);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "timeout 10 '%s' -c '%s' -p 0 2>&1", SM_SERVER_PATH, conf);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    CU_ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "own.pem"));
    CU_ASSERT_EQUAL(harness_cleanup(&s1), 0);
}

static void sigterm_closes_sessions_1001_and_keeps_database_intact(void)
{
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, "limits = { command_burst = 100; };\n"), 0);
    sm_client *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s, &a), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s, &b), SM_CLIENT_OK);
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        sm_message *m = harness_callf(a, "kv_put", "{s:s, s:s}", "key", key, "value", "v");
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
    }
    int status = -1;
    CU_ASSERT_EQUAL(kill(s.pid, SIGTERM), 0);
    CU_ASSERT_EQUAL(harness_wait_closed(a, 5000), 1001);
    CU_ASSERT_EQUAL(harness_wait_closed(b, 5000), 1001);
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "stopped"), 1);
    sm_client_free(a);
    sm_client_free(b);

    char db[512], wal[600];
    harness_path(&s, "server.db", db, sizeof db);
    snprintf(wal, sizeof wal, "%s-wal", db);
    long long n = -1;
    if (harness_postgresql()) {
        /* Every row in the schema, and no SQLite file made on the side. */
        CU_ASSERT_NOT_EQUAL(access(db, F_OK), 0);
    } else {
        /* A clean close checkpoints the WAL away. */
        CU_ASSERT_NOT_EQUAL(access(wal, F_OK), 0);
        CU_ASSERT_EQUAL(harness_query_int(&s, "SELECT count(*) FROM pragma_integrity_check"
                                              " WHERE integrity_check = 'ok'", &n), 0);
        CU_ASSERT_EQUAL(n, 1);
    }
    CU_ASSERT_EQUAL(harness_query_int(&s, "SELECT count(*) FROM testcmds_kv", &n), 0);
    CU_ASSERT_EQUAL(n, 50);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void db_option_overrides_the_config(void)
{
    harness_server s;
    char dbpath[] = "/tmp/sm-dbopt-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dbpath));
    char file[600];
    snprintf(file, sizeof file, "%s/other.db", dbpath);
    const char *args[] = {"--db", file, NULL};
    if (harness_postgresql()) {
        /* --db names an SQLite file: with backend postgresql it is refused,
         * not silently ignored, and no file is made. */
        fprintf(stderr, "(a refused start follows, as it should)\n");
        CU_ASSERT_NOT_EQUAL(harness_start_args(&s, NULL, args), 0);
        CU_ASSERT_EQUAL(harness_log_contains(&s, "--db names an SQLite database, but "
                                                 "storage.backend is \"postgresql\""), 1);
        CU_ASSERT_NOT_EQUAL(access(file, F_OK), 0);
    } else {
        CU_ASSERT_EQUAL_FATAL(harness_start_args(&s, NULL, args), 0);
        CU_ASSERT_EQUAL(access(file, F_OK), 0);
    }
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
    char side[700];
    snprintf(side, sizeof side, "%s-wal", file);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", file);
    unlink(side);
    snprintf(side, sizeof side, "%s.lock", file);
    unlink(side);
    unlink(file);
    rmdir(dbpath);
}

/* A stop or reload signal while the plugins load waits for the loop
 * (signals.h): SIGHUP does not kill the server half started, SIGTERM makes
 * it stop cleanly once started. Before the signalfd, SIGTERM there took
 * its default action (killed, status 143). */
static void signals_while_starting_wait_for_the_loop(void)
{
    static const char *const conf =
        "plugins = { dir = \"@TEST_PLUGIN_DIR@\"; load = [\"slow_start\"]; };\n"
        "slow_start = { ms = 1500; };\n";
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_spawn(&s, conf, NULL), 0);
    CU_ASSERT_EQUAL(harness_wait_log(&s, "slow_start: waiting", 20000), 1);
    CU_ASSERT_EQUAL(kill(s.pid, SIGHUP), 0);
    CU_ASSERT_EQUAL(kill(s.pid, SIGTERM), 0);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, 0, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "listening on"), 1);
    CU_ASSERT_EQUAL(harness_log_contains(&s, "stopped"), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

/* SIGTERM at once after the port file, again and again: every start ends
 * in a clean stop. (With a signal handler instead of the signalfd, one
 * such SIGTERM in some hundreds was lost under ThreadSanitizer when it was
 * delivered to an I/O thread that had just started.) */
static void sigterm_right_after_start_always_stops(void)
{
    for (int i = 0; i < 10; i++) {
        harness_server s;
        CU_ASSERT_EQUAL_FATAL(harness_start(&s, NULL), 0);
        int status = -1;
        CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
        CU_ASSERT_EQUAL(status, 0);
        CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
    }
}

static void tls_serves_wss(void)
{
    char dir[] = "/tmp/sm-tls-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/tls.key -out %s/tls.crt "
             "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
             dir, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char extra[2048];
    snprintf(extra, sizeof extra,
             "server = { " HARNESS_SERVER_BASE " tls = { cert = \"%s/tls.crt\"; key = \"%s/tls.key\"; }; };\n",
             dir, dir);
    harness_server s;
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, extra), 0);
    sm_client_options o;
    memset(&o, 0, sizeof o);
    char url[160];
    snprintf(url, sizeof url, "wss://127.0.0.1:%d/", s.port);
    o.url = url;
    o.insecure = 1;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL(harness_connect_opts(&s, &o, &c), SM_CLIENT_OK);
    if (c) {
        sm_message *m = harness_callf(c, "echo", "{s:s}", "over", "tls");
        CU_ASSERT_STRING_EQUAL(m ? m->type : "", "response");
        sm_message_free(m);
        sm_client_close(c, 1000);
    }
    /* The CA check works too: the self-signed certificate is its own CA. */
    char ca[600];
    snprintf(ca, sizeof ca, "%s/tls.crt", dir);
    o.insecure = 0;
    o.ca_file = ca;
    c = NULL;
    CU_ASSERT_EQUAL(harness_connect_opts(&s, &o, &c), SM_CLIENT_OK);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(version_and_help_exit_0),
        SM_TEST(check_config_cites_file_and_line),
        SM_TEST(check_config_reports_every_plugin_error_with_file_and_line),
        SM_TEST(shipped_configurations_pass_check_config),
        SM_TEST(relative_paths_start_at_the_config_directory),
        SM_TEST(missing_key_for_a_used_database_is_refused_with_the_remedy),
        SM_TEST(second_server_on_the_same_database_is_refused_naming_the_pid),
        SM_TEST(server_key_created_0600_and_reused),
        SM_TEST(sigterm_closes_sessions_1001_and_keeps_database_intact),
        SM_TEST(db_option_overrides_the_config),
        SM_TEST(signals_while_starting_wait_for_the_loop),
        SM_TEST(sigterm_right_after_start_always_stops),
        SM_TEST(tls_serves_wss),
        SM_TEST_END,
    };
    return sm_test_run("process", cases, NULL, NULL);
}
