/* core/config: the core's sections are checked into server_config with
 * every error reported as "<file>:<line>: <path> ...", and plugin sections
 * are read through the typed getters. */
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "safemessenger/testhost_suite.h"

static char tmp_dir[] = "/tmp/sm_test_config_XXXXXX";
static char conf_path[256];
static char log_path[256];

static int suite_init(void)
{
    if (!mkdtemp(tmp_dir))
        return -1;
    int a = snprintf(conf_path, sizeof conf_path, "%s/t.conf", tmp_dir);
    int b = snprintf(log_path, sizeof log_path, "%s/stderr.txt", tmp_dir);
    if (a < 0 || (size_t)a >= sizeof conf_path || b < 0 || (size_t)b >= sizeof log_path)
        return -1;
    log_set_level(SM_LOG_DEBUG);
    return 0;
}

static int suite_cleanup(void)
{
    unlink(conf_path);
    unlink(log_path);
    return rmdir(tmp_dir);
}

static int write_conf(const char *text)
{
    FILE *f = fopen(conf_path, "w");
    if (!f)
        return -1;
    size_t len = strlen(text);
    int rc = fwrite(text, 1, len, f) == len ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* stderr capture: everything log_msg writes between begin and end. */
static int saved_stderr = -1;

static void capture_begin(void)
{
    fflush(stderr);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    saved_stderr = dup(STDERR_FILENO);
    CU_ASSERT_FATAL(saved_stderr >= 0);
    CU_ASSERT_FATAL(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Returns what was written (caller frees); stderr is restored. */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(log_path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    if (buf) {
        size_t n = fread(buf, 1, 65535, f);
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

/* Writes text as the config file and loads it with stderr captured. */
static int load_text(const char *text, config **cfg, char **log)
{
    CU_ASSERT_FATAL(write_conf(text) == 0);
    capture_begin();
    int rc = config_load(conf_path, cfg);
    *log = capture_end();
    CU_ASSERT_FATAL(*log != NULL);
    return rc;
}

/* True when log holds "<conf_path>:<line>: <what>". */
static int log_has(const char *log, int line, const char *what)
{
    char want[1024];
    int n = snprintf(want, sizeof want, "%s:%d: %s", conf_path, line, what);
    if (n < 0 || (size_t)n >= sizeof want)
        return 0;
    return strstr(log, want) != NULL;
}

/* Loads text, expects failure and the message at the line. */
static void expect_error(const char *text, int line, const char *what)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL(load_text(text, &cfg, &log), -1);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT(log_has(log, line, what));
    if (!log_has(log, line, what))
        fprintf(stdout, "\n    expected line %d \"%s\" in:\n%s", line, what, log);
    free(log);
}

/* ---- defaults and a full file ----------------------------------------- */

static void config_null_path_gives_defaults(void)
{
    config *cfg = NULL;
    CU_ASSERT_EQUAL_FATAL(config_load(NULL, &cfg), 0);
    CU_ASSERT_STRING_EQUAL(config_path(cfg), "(defaults)");
    const server_config *s = config_server(cfg);
    CU_ASSERT_STRING_EQUAL(s->bind, "0.0.0.0");
    CU_ASSERT_EQUAL(s->port, 8765);
    CU_ASSERT_STRING_EQUAL(s->key_file, "data/server_key.pem");
    CU_ASSERT_EQUAL(s->key_bits, 2048);
    CU_ASSERT_EQUAL(s->max_message_bytes, 65536);
    CU_ASSERT_STRING_EQUAL(s->tls_cert, "");
    CU_ASSERT_STRING_EQUAL(s->tls_key, "");
    CU_ASSERT_EQUAL(s->n_allowed_origins, 0);
    CU_ASSERT_EQUAL(s->handshake_timeout, 10);
    CU_ASSERT_EQUAL(s->workers, 2);
    CU_ASSERT_STRING_EQUAL(s->database, "data/safemessenger.db");
    CU_ASSERT_STRING_EQUAL(s->synchronous, "normal");
    CU_ASSERT_STRING_EQUAL(s->backend, "sqlite");
    CU_ASSERT_STRING_EQUAL(s->postgresql, "");
    CU_ASSERT_STRING_EQUAL(s->cluster_node, "");
    CU_ASSERT_STRING_EQUAL(s->cluster_redis, "");
    CU_ASSERT_STRING_EQUAL(s->cluster_prefix, "sm:");
    CU_ASSERT_PTR_NOT_NULL(s->plugin_dir);
    CU_ASSERT(s->plugin_dir && s->plugin_dir[0] != '\0');
    CU_ASSERT_EQUAL(s->n_plugins, 0);
    CU_ASSERT_DOUBLE_EQUAL(s->commands_per_second, 20.0, 1e-9);
    CU_ASSERT_EQUAL(s->command_burst, 40);
    CU_ASSERT_EQUAL(s->send_queue_bytes, 1048576);
    CU_ASSERT_EQUAL(s->send_queue_messages, 1000);
    CU_ASSERT_EQUAL(s->max_sessions, 19000);
    CU_ASSERT_EQUAL(s->handshake_queue, 256);
    CU_ASSERT_EQUAL(s->log_level, SM_LOG_INFO);
    CU_ASSERT_EQUAL(s->log_format, SM_LOG_FORMAT_TEXT);
    CU_ASSERT_EQUAL(s->n_trusted_proxies, 0);
    /* Plugin getters on the empty tree: absent, default kept. */
    int64_t v = 7;
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "failed_logins", 0, 10, &v), SM_OK);
    CU_ASSERT_EQUAL(v, 7);
    config_free(cfg);
}

static const char full_conf[] =
    "server: {\n"
    "  port = 9001;\n"
    "  bind = \"127.0.0.1\";\n"
    "  key_file = \"/var/lib/sm/key.pem\";\n"
    "  key_bits = 4096;\n"
    "  max_message_bytes = 131072;\n"
    "  handshake_timeout = 30;\n"
    "  workers = 8;\n"
    "  io_threads = 3;\n"
    "  allowed_origins = [\"https://a.example\", \"https://b.example\"];\n"
    "  tls = { cert = \"/etc/sm/cert.pem\"; key = \"/etc/sm/key.pem\"; };\n"
    "};\n"
    "storage: { database = \"/var/lib/sm/sm.db\"; synchronous = \"full\"; };\n"
    "plugins: { dir = \"/opt/sm/plugins\"; load = (\"auth\", \"heart_beat2\"); };\n"
    "limits: {\n"
    "  commands_per_second = 12.5;\n"
    "  command_burst = 25;\n"
    "  send_queue_bytes = 2097152;\n"
    "  send_queue_messages = 500;\n"
    "  max_sessions = 100;\n"
    "};\n"
    "log: { level = \"debug\"; };\n"
    "auth: { failed_logins = 5; };\n";

static void config_reads_every_core_key(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text(full_conf, &cfg, &log), 0);
    CU_ASSERT_STRING_EQUAL(log, "");
    free(log);
    CU_ASSERT_STRING_EQUAL(config_path(cfg), conf_path);
    const server_config *s = config_server(cfg);
    CU_ASSERT_EQUAL(s->port, 9001);
    CU_ASSERT_STRING_EQUAL(s->bind, "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(s->key_file, "/var/lib/sm/key.pem");
    CU_ASSERT_EQUAL(s->key_bits, 4096);
    CU_ASSERT_EQUAL(s->max_message_bytes, 131072);
    CU_ASSERT_EQUAL(s->handshake_timeout, 30);
    CU_ASSERT_EQUAL(s->workers, 8);
    CU_ASSERT_EQUAL(s->io_threads, 3);
    CU_ASSERT_EQUAL_FATAL(s->n_allowed_origins, 2);
    CU_ASSERT_STRING_EQUAL(s->allowed_origins[0], "https://a.example");
    CU_ASSERT_STRING_EQUAL(s->allowed_origins[1], "https://b.example");
    CU_ASSERT_STRING_EQUAL(s->tls_cert, "/etc/sm/cert.pem");
    CU_ASSERT_STRING_EQUAL(s->tls_key, "/etc/sm/key.pem");
    CU_ASSERT_STRING_EQUAL(s->database, "/var/lib/sm/sm.db");
    CU_ASSERT_STRING_EQUAL(s->synchronous, "full");
    CU_ASSERT_STRING_EQUAL(s->plugin_dir, "/opt/sm/plugins");
    CU_ASSERT_EQUAL_FATAL(s->n_plugins, 2);
    CU_ASSERT_STRING_EQUAL(s->plugins[0], "auth");
    CU_ASSERT_STRING_EQUAL(s->plugins[1], "heart_beat2");
    CU_ASSERT_DOUBLE_EQUAL(s->commands_per_second, 12.5, 1e-9);
    CU_ASSERT_EQUAL(s->command_burst, 25);
    CU_ASSERT_EQUAL(s->send_queue_bytes, 2097152);
    CU_ASSERT_EQUAL(s->send_queue_messages, 500);
    CU_ASSERT_EQUAL(s->max_sessions, 100);
    CU_ASSERT_EQUAL(s->log_level, SM_LOG_DEBUG);
    config_free(cfg);
}

static void config_accepts_integer_rate_and_range_ends(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("server = { port = 0; key_bits = 8192; };\n"
                                    "limits = { commands_per_second = 100000;\n"
                                    "  send_queue_bytes = 1073741824; };\n",
                                    &cfg, &log), 0);
    free(log);
    const server_config *s = config_server(cfg);
    CU_ASSERT_EQUAL(s->port, 0);
    CU_ASSERT_EQUAL(s->key_bits, 8192);
    CU_ASSERT_DOUBLE_EQUAL(s->commands_per_second, 100000.0, 1e-9);
    CU_ASSERT_EQUAL(s->send_queue_bytes, 1073741824);
    config_free(cfg);
}

/* ---- errors in the core's sections ------------------------------------ */

static void config_rejects_wrong_type(void)
{
    expect_error("server = {\n  port = \"8765\";\n};\n", 2,
                 "server.port must be an integer from 0 to 65535");
    expect_error("server = {\n  workers = 2.0;\n};\n", 2,
                 "server.workers must be an integer from 1 to 64");
    expect_error("storage = {\n  database = 5;\n};\n", 2,
                 "storage.database must be a non-empty string");
    expect_error("limits = {\n\n  commands_per_second = \"fast\";\n};\n", 3,
                 "limits.commands_per_second must be a number greater than 0 and at most 100000");
}

static void config_rejects_port_out_of_range(void)
{
    expect_error("server = {\n  port = 65536;\n};\n", 2,
                 "server.port must be an integer from 0 to 65535");
    expect_error("server = {\n  port = -1;\n};\n", 2,
                 "server.port must be an integer from 0 to 65535");
}

static void config_rejects_other_out_of_range_values(void)
{
    expect_error("server = { key_bits = 1024; };\n", 1,
                 "server.key_bits must be an integer from 2048 to 8192");
    expect_error("server = { max_message_bytes = 4095; };\n", 1,
                 "server.max_message_bytes must be an integer from 4096 to 16777216");
    expect_error("limits = { commands_per_second = 0; };\n", 1,
                 "limits.commands_per_second must be a number greater than 0 and at most 100000");
    expect_error("limits = { send_queue_bytes = 65535; };\n", 1,
                 "limits.send_queue_bytes must be an integer from 65536 to 1073741824");
    expect_error("limits = { max_sessions = 0; };\n", 1,
                 "limits.max_sessions must be an integer from 1 to 1000000");
    expect_error("limits = { handshake_queue = 0; };\n", 1,
                 "limits.handshake_queue must be an integer from 1 to 10000");
    expect_error("log = { level = \"verbose\"; };\n", 1,
                 "log.level must be one of \"error\", \"warning\", \"info\", \"debug\"");
    expect_error("server = { trusted_proxies = [\"127.0.0.1\", \"proxy.local\"]; };\n", 1,
                 "server.trusted_proxies[1] must be an IPv4 or IPv6 address");
    expect_error("log = { format = \"xml\"; };\n", 1,
                 "log.format must be one of \"text\", \"json\"");
}

/* ---- server.io_threads ------------------------------------------------- */

static void io_threads_outside_1_to_64_is_refused_by_name(void)
{
    expect_error("server = {\n  io_threads = 0;\n};\n", 2,
                 "server.io_threads must be an integer from 1 to 64");
    expect_error("server = {\n\n  io_threads = 65;\n};\n", 3,
                 "server.io_threads must be an integer from 1 to 64");
    expect_error("server = { io_threads = -4; };\n", 1,
                 "server.io_threads must be an integer from 1 to 64");
    expect_error("server = { io_threads = 4.0; };\n", 1,
                 "server.io_threads must be an integer from 1 to 64");
    expect_error("server = { io_threads = \"4\"; };\n", 1,
                 "server.io_threads must be an integer from 1 to 64");
}

static void io_threads_takes_1_and_64(void)
{
    static const int ends[] = {1, 64};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "server = { io_threads = %d; };\n", ends[i]);
        config *cfg = NULL;
        char *log = NULL;
        CU_ASSERT_EQUAL_FATAL(load_text(text, &cfg, &log), 0);
        CU_ASSERT_STRING_EQUAL(log, "");
        free(log);
        CU_ASSERT_EQUAL(config_server(cfg)->io_threads, ends[i]);
        config_free(cfg);
    }
}

/* One thread per online CPU, between 1 and 8; 1 when sysconf fails. */
static void io_threads_default_is_online_cpus_from_1_to_8(void)
{
    CU_ASSERT_EQUAL(config_default_io_threads(-1), 1);
    CU_ASSERT_EQUAL(config_default_io_threads(0), 1);
    CU_ASSERT_EQUAL(config_default_io_threads(1), 1);
    CU_ASSERT_EQUAL(config_default_io_threads(3), 3);
    CU_ASSERT_EQUAL(config_default_io_threads(8), 8);
    CU_ASSERT_EQUAL(config_default_io_threads(9), 8);
    CU_ASSERT_EQUAL(config_default_io_threads(512), 8);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int want = online < 1 ? 1 : online > 8 ? 8 : (int)online;
    config *cfg = NULL;
    CU_ASSERT_EQUAL_FATAL(config_load(NULL, &cfg), 0);
    CU_ASSERT_EQUAL(config_server(cfg)->io_threads, want);
    config_free(cfg);
    /* A file without the key keeps the default too. */
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("server = { workers = 3; };\n", &cfg, &log), 0);
    free(log);
    CU_ASSERT_EQUAL(config_server(cfg)->io_threads, want);
    config_free(cfg);
}

static void config_limits_of_issue_10_have_safe_defaults(void)
{
    config *cfg = NULL;
    CU_ASSERT_EQUAL_FATAL(config_load(NULL, &cfg), 0);
    const server_config *s = config_server(cfg);
    CU_ASSERT_EQUAL(s->max_sessions_per_address, 64);
    CU_ASSERT_EQUAL(s->handshakes_per_address, 60);
    CU_ASSERT_EQUAL(s->login_deadline, 60);
    CU_ASSERT_DOUBLE_EQUAL(s->bytes_per_second, 65536.0, 1e-9);
    CU_ASSERT_EQUAL(s->bytes_burst, 262144);
    CU_ASSERT_DOUBLE_EQUAL(s->room_fanout_bytes_per_second, 8388608.0, 1e-9);
    CU_ASSERT_EQUAL(s->room_fanout_burst, 33554432);
    config_free(cfg);
}

static void config_bytes_burst_unset_holds_the_largest_message(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("server = { max_message_bytes = 1048576; };\n", &cfg, &log),
                          0);
    CU_ASSERT_EQUAL(config_server(cfg)->bytes_burst, 1048576);
    free(log);
    config_free(cfg);
}

static void config_rejects_bytes_burst_below_max_message_bytes(void)
{
    expect_error("server = { max_message_bytes = 65536; };\nlimits = {\n  bytes_burst = 65535;\n};\n",
                 3, "limits.bytes_burst (65535) must be at least server.max_message_bytes (65536)");
    expect_error("limits = { login_deadline = -1; };\n", 1,
                 "limits.login_deadline must be an integer from 0 to 86400");
    expect_error("limits = { max_sessions_per_address = 0; };\n", 1,
                 "limits.max_sessions_per_address must be an integer from 1 to 1000000");
}

static void config_reports_every_error_not_only_the_first(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL(load_text("server = {\n"
                              "  port = 70000;\n"
                              "  key_file = \"\";\n"
                              "};\n"
                              "limits = {\n"
                              "  command_burst = 0;\n"
                              "};\n",
                              &cfg, &log), -1);
    CU_ASSERT(log_has(log, 2, "server.port must be an integer from 0 to 65535"));
    CU_ASSERT(log_has(log, 3, "server.key_file must be a non-empty string"));
    CU_ASSERT(log_has(log, 6, "limits.command_burst must be an integer from 1 to 100000"));
    free(log);
}

/* storage.backend selects the engine; PostgreSQL needs its connection
 * string, which libpq parses at load (a typo is a config error with its
 * line) and which is never echoed (it may hold a password). */
static void config_storage_backend(void)
{
    config *cfg = NULL;
    char *log = NULL;
    /* Readable by others whatever the umask (rewriting keeps the mode). */
    CU_ASSERT_FATAL(write_conf("") == 0);
    CU_ASSERT_EQUAL_FATAL(chmod(conf_path, 0644), 0);
    CU_ASSERT_EQUAL_FATAL(load_text("storage = { backend = \"postgresql\";\n"
                                    "  postgresql = \"host=db.example port=5432 dbname=sm"
                                    " password=hunter2\"; };\n",
                                    &cfg, &log),
                          0);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->backend, "postgresql");
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->postgresql,
                           "host=db.example port=5432 dbname=sm password=hunter2");
    /* A password in a file others can read is said, the password not. */
    CU_ASSERT(log_has(log, 2, "storage.postgresql holds a password and"));
    CU_ASSERT_PTR_NULL(strstr(log, "hunter2"));
    config_free(cfg);
    free(log);
    CU_ASSERT_EQUAL_FATAL(chmod(conf_path, 0600), 0);
    capture_begin();
    CU_ASSERT_EQUAL(config_load(conf_path, &cfg), 0);
    log = capture_end();
    CU_ASSERT_PTR_NULL(strstr(log, "holds a password"));
    config_free(cfg);
    free(log);
    CU_ASSERT_EQUAL_FATAL(load_text("storage = { backend = \"sqlite\"; };\n", &cfg, &log), 0);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->backend, "sqlite");
    config_free(cfg);
    free(log);
    /* A connection string beside SQLite: kept, unused, said. */
    CU_ASSERT_EQUAL_FATAL(load_text("storage = {\n  postgresql = \"dbname=sm\";\n};\n", &cfg, &log),
                          0);
    CU_ASSERT(log_has(log, 2, "storage.postgresql is set but storage.backend is \"sqlite\": it "
                              "is not used"));
    config_free(cfg);
    free(log);

    expect_error("storage = {\n  backend = \"mysql\";\n};\n", 2,
                 "storage.backend must be \"sqlite\" or \"postgresql\"");
    expect_error("storage = {\n  backend = \"postgresql\";\n};\n", 2,
                 "storage.backend is \"postgresql\" but storage.postgresql (a libpq connection "
                 "string) is not set");
    expect_error("storage = {\n  backend = \"postgresql\";\n  postgresql = \"\";\n};\n", 3,
                 "storage.postgresql must be a non-empty string");
    expect_error("storage = {\n  postgresql = \"host=x passwort=secret\";\n};\n", 2,
                 "storage.postgresql is not a libpq connection string: invalid connection option "
                 "\"passwort\"");
    /* A quoting error: libpq's reason, not the text. */
    CU_ASSERT_EQUAL(load_text("storage = {\n  postgresql = \"password='open\";\n};\n", &cfg, &log),
                    -1);
    CU_ASSERT(log_has(log, 2, "storage.postgresql is not a libpq connection string"));
    CU_ASSERT_PTR_NULL(strstr(log, "open"));
    free(log);
}

/* ---- cluster ------------------------------------------------------------ */

#define PG_STORAGE "storage = { backend = \"postgresql\"; postgresql = \"dbname=sm\"; };\n"

/* Cluster mode is node and redis together, on PostgreSQL; the three keys
 * are read as written. */
static void config_cluster_mode(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text(PG_STORAGE "cluster = {\n  node = \"node-1.eu_west\";\n"
                                    "  redis = \"redis://10.0.0.5:6380/2\";\n"
                                    "  prefix = \"chat.prod:\";\n};\n",
                                    &cfg, &log),
                          0);
    const server_config *s = config_server(cfg);
    CU_ASSERT_STRING_EQUAL(s->cluster_node, "node-1.eu_west");
    CU_ASSERT_STRING_EQUAL(s->cluster_redis, "redis://10.0.0.5:6380/2");
    CU_ASSERT_STRING_EQUAL(s->cluster_prefix, "chat.prod:");
    config_free(cfg);
    free(log);
    /* The prefix defaults to "sm:" in cluster mode too; "" and 64
     * characters are taken, and a 64-character node id. */
    CU_ASSERT_EQUAL_FATAL(load_text(PG_STORAGE
                                    "cluster = { node = \"a\"; redis = \"redis://r\"; };\n",
                                    &cfg, &log),
                          0);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->cluster_prefix, "sm:");
    config_free(cfg);
    free(log);
    CU_ASSERT_EQUAL_FATAL(load_text("cluster = { prefix = \"\"; };\n", &cfg, &log), 0);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->cluster_prefix, "");
    config_free(cfg);
    free(log);
    char text[512];
    snprintf(text, sizeof text,
             PG_STORAGE
             "cluster = { node = \"%064d\"; redis = \"redis://r\"; prefix = \"%s\"; };\n",
             7, "0123456789:abcdefghij.ABCDEFGHIJ-_0123456789:abcdefghij.ABCDEFGH");
    CU_ASSERT_EQUAL_FATAL(load_text(text, &cfg, &log), 0);
    CU_ASSERT_EQUAL(strlen(config_server(cfg)->cluster_node), 64);
    CU_ASSERT_EQUAL(strlen(config_server(cfg)->cluster_prefix), 64);
    config_free(cfg);
    free(log);
    /* Written empty: not in a cluster, as when left out. */
    CU_ASSERT_EQUAL_FATAL(load_text("cluster = { node = \"\"; redis = \"\"; };\n", &cfg, &log), 0);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->cluster_node, "");
    config_free(cfg);
    free(log);
}

static void config_cluster_needs_node_and_redis(void)
{
    expect_error(PG_STORAGE "cluster = {\n  node = \"n1\";\n};\n", 3,
                 "cluster.node is set but cluster.redis (a Redis URL) is not: set both for "
                 "cluster mode, or neither");
    expect_error(PG_STORAGE "cluster = {\n  redis = \"redis://r\";\n};\n", 3,
                 "cluster.redis is set but cluster.node (this node's id) is not: set both for "
                 "cluster mode, or neither");
    expect_error(PG_STORAGE "cluster = {\n  node = \"n1\";\n  redis = \"\";\n};\n", 3,
                 "cluster.node is set but cluster.redis");
}

static void config_cluster_needs_postgresql(void)
{
    expect_error("cluster = {\n  node = \"n1\";\n  redis = \"redis://r\";\n};\n", 2,
                 "cluster mode needs storage.backend = \"postgresql\": every node must see the "
                 "same rows");
    expect_error("storage = { backend = \"sqlite\"; };\n"
                 "cluster = {\n  node = \"n1\";\n  redis = \"redis://r\";\n};\n", 3,
                 "cluster mode needs storage.backend = \"postgresql\"");
}

static void config_cluster_rejects_bad_node_id(void)
{
    static const char want[] = "cluster.node must be a node id of 1 to 64 characters from "
                               "[A-Za-z0-9_.-] (or \"\" outside cluster mode)";
    expect_error(PG_STORAGE "cluster = {\n  node = \"node 1\";\n  redis = \"redis://r\";\n};\n",
                 3, want);
    expect_error(PG_STORAGE "cluster = {\n  node = \"n:1\";\n  redis = \"redis://r\";\n};\n", 3,
                 want);
    expect_error(PG_STORAGE "cluster = {\n  node = 1;\n  redis = \"redis://r\";\n};\n", 3, want);
    char text[512];
    snprintf(text, sizeof text,
             PG_STORAGE "cluster = {\n  node = \"%065d\";\n  redis = \"redis://r\";\n};\n", 7);
    expect_error(text, 3, want);
}

static void config_cluster_rejects_bad_prefix(void)
{
    static const char want[] = "cluster.prefix must be 0 to 64 characters from [A-Za-z0-9_.:-]";
    expect_error("cluster = {\n  prefix = \"sm prod:\";\n};\n", 2, want);
    expect_error("cluster = {\n  prefix = \"sm/\";\n};\n", 2, want);
    expect_error("cluster = {\n  prefix = 3;\n};\n", 2, want);
    char text[512];
    snprintf(text, sizeof text, "cluster = {\n  prefix = \"%065d\";\n};\n", 7);
    expect_error(text, 2, want);
}

/* redis_link_parse_url's reasons, without its "redis URL: " and never
 * with the password, not even part of one cut at a '/'. */
static void config_cluster_rejects_bad_redis_url(void)
{
    expect_error("cluster = {\n  redis = \"http://r\";\n};\n", 2,
                 "cluster.redis is not a Redis URL: unknown scheme: it must begin with redis://");
    expect_error("cluster = {\n  redis = \"redis://r:99999\";\n};\n", 2,
                 "cluster.redis is not a Redis URL: the port '99999' is not a number from 1 to "
                 "65535");
    expect_error("cluster = {\n  redis = 6379;\n};\n", 2, "cluster.redis must be a string");
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL(load_text("cluster = {\n  redis = \"redis://admin:hunter4@r\";\n};\n", &cfg,
                              &log),
                    -1);
    CU_ASSERT(log_has(log, 2, "cluster.redis is not a Redis URL: a user name is not supported"));
    CU_ASSERT_PTR_NULL(strstr(log, "hunter4"));
    free(log);
    /* Unescaped, the '/' ends the host part: "hunter5" would be quoted
     * as the port. */
    CU_ASSERT_EQUAL(load_text("cluster = {\n  redis = \"redis://x:hunter5/secret@r\";\n};\n", &cfg,
                              &log),
                    -1);
    CU_ASSERT(log_has(log, 2, "cluster.redis is not a Redis URL: an '@' after the first '/' "
                              "(write a '/' in the password as %2F)"));
    CU_ASSERT_PTR_NULL(strstr(log, "hunter5"));
    CU_ASSERT_PTR_NULL(strstr(log, "secret"));
    free(log);
}

/* The storage.postgresql warning, for the Redis password. */
static void config_cluster_redis_password_in_a_readable_file(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_FATAL(write_conf("") == 0);
    CU_ASSERT_EQUAL_FATAL(chmod(conf_path, 0644), 0);
    CU_ASSERT_EQUAL_FATAL(load_text(PG_STORAGE "cluster = {\n  node = \"n1\";\n"
                                    "  redis = \"redis://:hunter6@r\";\n};\n",
                                    &cfg, &log),
                          0);
    CU_ASSERT(log_has(log, 4, "cluster.redis holds a password and"));
    CU_ASSERT(strstr(log, "is readable by others (mode 644): make it 0600\n") != NULL);
    CU_ASSERT_PTR_NULL(strstr(log, "hunter6"));
    CU_ASSERT_PTR_NULL(strstr(log, "storage.postgresql holds"));
    config_free(cfg);
    free(log);
    /* Without a password, or in a file of mode 0600: nothing said. */
    CU_ASSERT_EQUAL_FATAL(load_text(PG_STORAGE
                                    "cluster = { node = \"n1\"; redis = \"redis://r\"; };\n",
                                    &cfg, &log),
                          0);
    CU_ASSERT_PTR_NULL(strstr(log, "holds a password"));
    config_free(cfg);
    free(log);
    CU_ASSERT_EQUAL_FATAL(chmod(conf_path, 0600), 0);
    CU_ASSERT_EQUAL_FATAL(load_text(PG_STORAGE "cluster = {\n  node = \"n1\";\n"
                                    "  redis = \"redis://:hunter6@r\";\n};\n",
                                    &cfg, &log),
                          0);
    CU_ASSERT_PTR_NULL(strstr(log, "holds a password"));
    config_free(cfg);
    free(log);
}

static void config_cluster_unknown_key_is_suggested(void)
{
    expect_error("cluster = {\n  nodes = \"n1\";\n};\n", 2,
                 "unknown key cluster.nodes (did you mean 'cluster.node'?)");
    expect_error("server = {\n  redis = \"redis://r\";\n};\n", 2,
                 "unknown key server.redis (did you mean 'cluster.redis'?)");
}

static void config_rejects_unknown_synchronous(void)
{
    expect_error("storage = {\n  synchronous = \"fast\";\n};\n", 2,
                 "storage.synchronous must be one of \"off\", \"normal\", \"full\", \"extra\"");
}

static void config_rejects_tls_cert_without_key(void)
{
    expect_error("server = {\n  tls = {\n    cert = \"c.pem\";\n  };\n};\n", 3,
                 "server.tls.cert is set but server.tls.key is missing");
    expect_error("server = {\n  tls = { cert = \"\"; key = \"k.pem\"; };\n};\n", 2,
                 "server.tls.key is set but server.tls.cert is missing");
}

static void config_rejects_bad_plugin_name(void)
{
    expect_error("plugins = {\n  load = [\"auth\",\n    \"Rooms\"];\n};\n", 3,
                 "plugins.load[1] must be a plugin name of 1 to 64 characters from [a-z0-9_]");
    expect_error("plugins = { load = [\"\"]; };\n", 1, "plugins.load[0] must be a plugin name");
    expect_error("plugins = { load = [\"../evil\"]; };\n", 1,
                 "plugins.load[0] must be a plugin name");
    /* 65 characters: one over the limit. */
    expect_error("plugins = { load = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]; };\n",
                 1, "plugins.load[0] must be a plugin name");
}

static void config_accepts_64_character_plugin_name(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("plugins = { load = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]; };\n",
                                    &cfg, &log), 0);
    free(log);
    CU_ASSERT_EQUAL(config_server(cfg)->n_plugins, 1);
    CU_ASSERT_EQUAL(strlen(config_server(cfg)->plugins[0]), 64);
    config_free(cfg);
}

static void config_rejects_duplicate_plugin(void)
{
    expect_error("plugins = {\n  load = (\"auth\", \"rooms\",\n  \"auth\");\n};\n", 3,
                 "plugins.load lists plugin \"auth\" more than once");
}

static void config_rejects_bad_allowed_origins(void)
{
    expect_error("server = {\n  allowed_origins = [\"https://a\", \"\"];\n};\n", 2,
                 "server.allowed_origins[1] must be a non-empty string");
    expect_error("server = { allowed_origins = \"https://a\"; };\n", 1,
                 "server.allowed_origins must be a list of at most 32 non-empty strings");
}

static void metrics_allow_defaults_to_loopback_and_takes_networks(void)
{
    config *cfg = NULL;
    CU_ASSERT_EQUAL_FATAL(config_load(NULL, &cfg), 0);
    const server_config *s = config_server(cfg);
    CU_ASSERT_EQUAL_FATAL(s->n_metrics_allow, 2);
    CU_ASSERT_STRING_EQUAL(s->metrics_allow[0], "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(s->metrics_allow[1], "::1");
    config_free(cfg);
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("metrics = { allow = [\"10.0.0.0/8\", \"fd00::/8\", "
                                    "\"192.0.2.7\"]; };\n", &cfg, &log), 0);
    free(log);
    s = config_server(cfg);
    CU_ASSERT_EQUAL_FATAL(s->n_metrics_allow, 3);
    CU_ASSERT_STRING_EQUAL(s->metrics_allow[0], "10.0.0.0/8");
    CU_ASSERT_STRING_EQUAL(s->metrics_allow[2], "192.0.2.7");
    config_free(cfg);
    /* An empty list answers nobody. */
    CU_ASSERT_EQUAL_FATAL(load_text("metrics = { allow = []; };\n", &cfg, &log), 0);
    free(log);
    CU_ASSERT_EQUAL(config_server(cfg)->n_metrics_allow, 0);
    config_free(cfg);
}

static void config_rejects_bad_metrics_allow(void)
{
    expect_error("metrics = {\n  allow = [\"127.0.0.1\", \"localhost\"];\n};\n", 2,
                 "metrics.allow[1] must be an IPv4 or IPv6 address or network");
    expect_error("metrics = { allow = [\"10.0.0.1/8\"]; };\n", 1,
                 "metrics.allow[0] must be an IPv4 or IPv6 address or network");
    expect_error("metrics = { allow = \"127.0.0.1\"; };\n", 1,
                 "metrics.allow must be a list of at most 32 IP addresses or networks");
    expect_error("metrics = { alow = [\"127.0.0.1\"]; };\n", 1,
                 "unknown key metrics.alow (did you mean 'metrics.allow'?)");
}

static void config_rejects_core_section_that_is_not_a_group(void)
{
    expect_error("server = 8765;\n", 1, "server must be a group");
    expect_error("storage = { };\nport = 8765;\n", 2, "top-level setting 'port' must be a section");
}

/* A typo must not silently leave the default in force: every unknown key
 * is an error, with the nearest known key (in its section, else in
 * another core section) suggested, and all of them reported at once. */
static void config_rejects_unknown_core_keys_with_suggestions(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL(load_text("server = {\n  bnid = \"127.0.0.1\";\n  port = 9000;\n"
                              "  tls = { cert = \"\"; key = \"\"; cret = \"x\"; };\n"
                              "  max_sessions = 5;\n  zzzzzz = 1;\n};\n",
                              &cfg, &log), -1);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT(log_has(log, 2, "unknown key server.bnid (did you mean 'server.bind'?)"));
    CU_ASSERT(log_has(log, 4, "unknown key server.tls.cret (did you mean 'server.tls.cert'?)"));
    CU_ASSERT(log_has(log, 5, "unknown key server.max_sessions (did you mean "
                              "'limits.max_sessions'?)"));
    CU_ASSERT(log_has(log, 6, "unknown key server.zzzzzz"));
    CU_ASSERT(strstr(log, "zzzzzz (did you mean") == NULL);
    CU_ASSERT(strstr(log, "ignored") == NULL);
    free(log);
}

/* Relative paths start at the config file's directory, so the server
 * finds the same key and database whatever directory it starts in;
 * absolute paths are kept, and defaults resolve like written values. */
static void config_resolves_relative_paths_against_its_directory(void)
{
    config *cfg = NULL;
    char *log = NULL;
    char dir[PATH_MAX];
    CU_ASSERT_PTR_NOT_NULL_FATAL(realpath(tmp_dir, dir));
    CU_ASSERT_EQUAL_FATAL(load_text("server = { key_file = \"keys/k.pem\";\n"
                                    "  tls = { cert = \"c.pem\"; key = \"/abs/k.pem\"; }; };\n"
                                    "plugins = { dir = \"./x/../../plugins\"; };\n",
                                    &cfg, &log), 0);
    free(log);
    const server_config *s = config_server(cfg);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/keys/k.pem", dir);
    CU_ASSERT_STRING_EQUAL(s->key_file, want);
    snprintf(want, sizeof want, "%s/c.pem", dir);
    CU_ASSERT_STRING_EQUAL(s->tls_cert, want);
    CU_ASSERT_STRING_EQUAL(s->tls_key, "/abs/k.pem");
    /* Shown without "..": dir's parent. */
    snprintf(want, sizeof want, "%.*s/plugins", (int)(strrchr(dir, '/') - dir), dir);
    CU_ASSERT_STRING_EQUAL(s->plugin_dir, want);
    snprintf(want, sizeof want, "%s/data/safemessenger.db", dir);
    CU_ASSERT_STRING_EQUAL(s->database, want);
    config_free(cfg);

    /* The same file reached through a relative path from another working
     * directory gives the same absolute paths. */
    char cwd[PATH_MAX];
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(cwd, sizeof cwd));
    CU_ASSERT_EQUAL_FATAL(chdir("/"), 0);
    capture_begin();
    int rc = config_load(conf_path + 1, &cfg); /* "tmp/..." relative to "/" */
    free(capture_end());
    CU_ASSERT_EQUAL(chdir(cwd), 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    snprintf(want, sizeof want, "%s/keys/k.pem", dir);
    CU_ASSERT_STRING_EQUAL(config_server(cfg)->key_file, want);
    config_free(cfg);
}

/* web: on by default with the built-in root (absolute, so it is kept);
 * a written root resolves like the other paths and is marked written,
 * which makes a missing directory an error at start (web.c). */
static void config_web_section(void)
{
    config *cfg = NULL;
    CU_ASSERT_EQUAL_FATAL(config_load(NULL, &cfg), 0);
    const server_config *s = config_server(cfg);
    CU_ASSERT_EQUAL(s->web_enabled, 1);
    CU_ASSERT_EQUAL(s->web_root_set, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->web_root);
    CU_ASSERT_EQUAL(s->web_root[0], '/');
    CU_ASSERT_PTR_NOT_NULL(strstr(s->web_root, "/safemessenger/web"));
    config_free(cfg);

    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("storage = { };\n", &cfg, &log), 0);
    free(log);
    CU_ASSERT_EQUAL(config_server(cfg)->web_root_set, 0);
    CU_ASSERT_EQUAL(config_server(cfg)->web_root[0], '/');
    config_free(cfg);

    char dir[PATH_MAX], want[PATH_MAX + 64];
    CU_ASSERT_PTR_NOT_NULL_FATAL(realpath(tmp_dir, dir));
    CU_ASSERT_EQUAL_FATAL(load_text("web = {\n  enabled = false;\n  root = \"../w\";\n};\n", &cfg,
                                    &log), 0);
    free(log);
    s = config_server(cfg);
    CU_ASSERT_EQUAL(s->web_enabled, 0);
    CU_ASSERT_EQUAL(s->web_root_set, 1);
    snprintf(want, sizeof want, "%.*s/w", (int)(strrchr(dir, '/') - dir), dir);
    CU_ASSERT_STRING_EQUAL(s->web_root, want);
    config_free(cfg);

    expect_error("web = {\n  enabled = 1;\n};\n", 2, "web.enabled must be true or false");
    expect_error("web = {\n  root = \"\";\n};\n", 2, "web.root must be a non-empty string");
    expect_error("web = {\n  rot = \"x\";\n};\n", 2,
                 "unknown key web.rot (did you mean 'web.root'?)");
    expect_error("web = true;\n", 1, "web must be a group { ... }");
}

static void config_reports_syntax_error_line(void)
{
    expect_error("server = {\n  port = 1;\n  bind = ;\n};\n", 3, "syntax error");
}

static void config_rejects_missing_file(void)
{
    char missing[300];
    int n = snprintf(missing, sizeof missing, "%s/none.conf", tmp_dir);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof missing);
    config *cfg = NULL;
    capture_begin();
    int rc = config_load(missing, &cfg);
    char *log = capture_end();
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT(strstr(log, missing) != NULL);
    CU_ASSERT(strstr(log, "No such file") != NULL);
    free(log);
}

/* ---- plugin sections --------------------------------------------------- */

static const char plugin_conf[] =
    "auth = {\n"                                   /* 1 */
    "  failed_logins = 5;\n"                       /* 2 */
    "  window = 1.5;\n"                            /* 3 */
    "  whole = 60;\n"                              /* 4 */
    "  open = true;\n"                             /* 5 */
    "  realm = \"chat\";\n"                        /* 6 */
    "  names = [\"a\", \"b\", \"c\"];\n"           /* 7 */
    "  mixed = (\"a\", 2);\n"                      /* 8 */
    "  big = 5000000000L;\n"                       /* 9 */
    "  neg = -5000000000L;\n"                      /* 10 */
    "  nested = { depth = 3; };\n"                 /* 11 */
    "  empty = [];\n"                              /* 12 */
    "};\n";

static config *load_plugin_conf(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL(load_text(plugin_conf, &cfg, &log), 0);
    free(log);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    return cfg;
}

static void section_absent_key_keeps_default(void)
{
    config *cfg = load_plugin_conf();
    int64_t i = 42;
    double d = 2.5;
    int b = -1;
    const char *str = "default";
    const char *list[2] = {"x", "y"};
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "missing", 0, 10, &i), SM_OK);
    CU_ASSERT_EQUAL(config_section_double(cfg, "auth", "missing", 0, 10, &d), SM_OK);
    CU_ASSERT_EQUAL(config_section_bool(cfg, "auth", "missing", &b), SM_OK);
    CU_ASSERT_EQUAL(config_section_string(cfg, "auth", "missing", &str), SM_OK);
    CU_ASSERT_EQUAL(config_section_string_list(cfg, "auth", "missing", list, 2), 0);
    CU_ASSERT_EQUAL(config_section_int(cfg, "nosection", "k", 0, 10, &i), SM_OK);
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "nested.missing", 0, 10, &i), SM_OK);
    CU_ASSERT_EQUAL(i, 42);
    CU_ASSERT_DOUBLE_EQUAL(d, 2.5, 0);
    CU_ASSERT_EQUAL(b, -1);
    CU_ASSERT_STRING_EQUAL(str, "default");
    CU_ASSERT_STRING_EQUAL(list[0], "x");
    CU_ASSERT_STRING_EQUAL(list[1], "y");
    config_free(cfg);
}

static void section_getters_read_valid_values(void)
{
    config *cfg = load_plugin_conf();
    int64_t i = 0;
    double d = 0;
    int b = 0;
    const char *str = NULL;
    const char *list[3] = {NULL, NULL, NULL};
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "failed_logins", 1, 100, &i), SM_OK);
    CU_ASSERT_EQUAL(i, 5);
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "nested.depth", 0, 10, &i), SM_OK);
    CU_ASSERT_EQUAL(i, 3);
    CU_ASSERT_EQUAL(config_section_double(cfg, "auth", "window", 0.5, 10, &d), SM_OK);
    CU_ASSERT_DOUBLE_EQUAL(d, 1.5, 0);
    /* A double key takes an integer setting. */
    CU_ASSERT_EQUAL(config_section_double(cfg, "auth", "whole", 0, 100, &d), SM_OK);
    CU_ASSERT_DOUBLE_EQUAL(d, 60.0, 0);
    CU_ASSERT_EQUAL(config_section_bool(cfg, "auth", "open", &b), SM_OK);
    CU_ASSERT_EQUAL(b, 1);
    CU_ASSERT_EQUAL(config_section_string(cfg, "auth", "realm", &str), SM_OK);
    CU_ASSERT_STRING_EQUAL(str, "chat");
    CU_ASSERT_EQUAL(config_section_string_list(cfg, "auth", "names", list, 3), 3);
    CU_ASSERT_STRING_EQUAL(list[0], "a");
    CU_ASSERT_STRING_EQUAL(list[1], "b");
    CU_ASSERT_STRING_EQUAL(list[2], "c");
    CU_ASSERT_EQUAL(config_section_string_list(cfg, "auth", "empty", list, 3), 0);
    config_free(cfg);
}

static void section_int_reads_int64_values(void)
{
    config *cfg = load_plugin_conf();
    int64_t i = 0;
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "big", 0, INT64_MAX, &i), SM_OK);
    CU_ASSERT_EQUAL(i, INT64_C(5000000000));
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "neg", INT64_MIN, 0, &i), SM_OK);
    CU_ASSERT_EQUAL(i, INT64_C(-5000000000));
    double d = 0;
    CU_ASSERT_EQUAL(config_section_double(cfg, "auth", "big", 0, 1e12, &d), SM_OK);
    CU_ASSERT_DOUBLE_EQUAL(d, 5e9, 0);
    /* Just over an int64 range bound is refused. */
    i = 1;
    capture_begin();
    int rc = config_section_int(cfg, "auth", "big", 0, INT64_C(4999999999), &i);
    char *log = capture_end();
    CU_ASSERT_EQUAL(rc, SM_EINVAL);
    CU_ASSERT_EQUAL(i, 1);
    CU_ASSERT(log_has(log, 9, "auth.big must be an integer from 0 to 4999999999"));
    free(log);
    config_free(cfg);
}

/* Runs a getter call with stderr captured; checks SM_EINVAL and the
 * message at the line. */
#define EXPECT_EINVAL(call, line, what)                       \
    do {                                                      \
        capture_begin();                                      \
        int rc_ = (call);                                     \
        char *log_ = capture_end();                           \
        CU_ASSERT_EQUAL(rc_, SM_EINVAL);                      \
        CU_ASSERT(log_has(log_, (line), (what)));             \
        if (!log_has(log_, (line), (what)))                   \
            fprintf(stdout, "\n    expected \"%s\" in:\n%s", (what), log_); \
        free(log_);                                           \
    } while (0)

static void section_getters_reject_wrong_type(void)
{
    config *cfg = load_plugin_conf();
    int64_t i = 9;
    double d = 9;
    int b = 9;
    const char *str = "keep";
    const char *list[3] = {"keep", NULL, NULL};
    EXPECT_EINVAL(config_section_int(cfg, "auth", "window", 0, 10, &i), 3,
                  "auth.window must be an integer from 0 to 10");
    EXPECT_EINVAL(config_section_int(cfg, "auth", "realm", 0, 10, &i), 6,
                  "auth.realm must be an integer from 0 to 10");
    EXPECT_EINVAL(config_section_double(cfg, "auth", "open", 0, 10, &d), 5,
                  "auth.open must be a number from 0 to 10");
    EXPECT_EINVAL(config_section_bool(cfg, "auth", "failed_logins", &b), 2,
                  "auth.failed_logins must be true or false");
    EXPECT_EINVAL(config_section_string(cfg, "auth", "failed_logins", &str), 2,
                  "auth.failed_logins must be a string");
    EXPECT_EINVAL(config_section_string_list(cfg, "auth", "realm", list, 3), 6,
                  "auth.realm must be a list of strings");
    EXPECT_EINVAL(config_section_string_list(cfg, "auth", "mixed", list, 3), 8,
                  "auth.mixed[1] must be a string");
    EXPECT_EINVAL(config_section_int(cfg, "auth", "nested", 0, 10, &i), 11,
                  "auth.nested must be an integer");
    CU_ASSERT_EQUAL(i, 9);
    CU_ASSERT_DOUBLE_EQUAL(d, 9, 0);
    CU_ASSERT_EQUAL(b, 9);
    CU_ASSERT_STRING_EQUAL(str, "keep");
    CU_ASSERT_STRING_EQUAL(list[0], "keep");
    config_free(cfg);
}

static void section_getters_reject_out_of_range(void)
{
    config *cfg = load_plugin_conf();
    int64_t i = 9;
    double d = 9;
    const char *list[2] = {"keep", "keep"};
    EXPECT_EINVAL(config_section_int(cfg, "auth", "failed_logins", 6, 100, &i), 2,
                  "auth.failed_logins must be an integer from 6 to 100");
    EXPECT_EINVAL(config_section_int(cfg, "auth", "failed_logins", 0, 4, &i), 2,
                  "auth.failed_logins must be an integer from 0 to 4");
    EXPECT_EINVAL(config_section_double(cfg, "auth", "window", 2, 10, &d), 3,
                  "auth.window must be a number from 2 to 10");
    EXPECT_EINVAL(config_section_string_list(cfg, "auth", "names", list, 2), 7,
                  "auth.names must list at most 2 strings");
    CU_ASSERT_EQUAL(i, 9);
    CU_ASSERT_DOUBLE_EQUAL(d, 9, 0);
    CU_ASSERT_STRING_EQUAL(list[0], "keep");
    CU_ASSERT_STRING_EQUAL(list[1], "keep");
    config_free(cfg);
}

static void section_getters_refuse_core_sections(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("server = { port = 1; };\n", &cfg, &log), 0);
    free(log);
    int64_t i = 9;
    capture_begin();
    int rc = config_section_int(cfg, "server", "port", 0, 65535, &i);
    log = capture_end();
    CU_ASSERT_EQUAL(rc, SM_EINVAL);
    CU_ASSERT_EQUAL(i, 9);
    CU_ASSERT(strstr(log, "section 'server' belongs to the core") != NULL);
    free(log);
    config_free(cfg);
}

/* ---- unused keys and sections ----------------------------------------- */

static void unused_check_names_unread_keys_and_unknown_sections(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("auth = {\n"                     /* 1 */
                                    "  failed_logins = 5;\n"         /* 2 */
                                    "  failed_login = 6;\n"          /* 3 */
                                    "  limits = {\n"                 /* 4 */
                                    "    per_hour = 20;\n"           /* 5 */
                                    "    per_day = 200;\n"           /* 6 */
                                    "  };\n"                         /* 7 */
                                    "  unread_group = { x = 1; };\n" /* 8 */
                                    "};\n"                           /* 9 */
                                    "foo = {\n"                      /* 10 */
                                    "  bar = 1;\n"                   /* 11 */
                                    "};\n"                           /* 12 */
                                    "rooms = { };\n",                /* 13 */
                                    &cfg, &log), 0);
    CU_ASSERT_STRING_EQUAL(log, "");
    free(log);
    int64_t v = 0;
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "failed_logins", 0, 10, &v), SM_OK);
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "limits.per_hour", 0, 100, &v), SM_OK);
    CU_ASSERT_EQUAL(v, 20);
    const char *const known[] = {"auth", "rooms"};
    /* Asked for but absent: a candidate for suggestions all the same. */
    CU_ASSERT_EQUAL(config_section_int(cfg, "auth", "limits.per_days", 0, 100, &v), SM_OK);
    capture_begin();
    CU_ASSERT_EQUAL(config_check_unused(cfg, known, 2), -1);
    log = capture_end();
    CU_ASSERT(log_has(log, 3, "unknown key auth.failed_login (did you mean "
                              "'auth.failed_logins'?)"));
    CU_ASSERT(log_has(log, 6, "unknown key auth.limits.per_day (did you mean "
                              "'auth.limits.per_days'?)"));
    CU_ASSERT(log_has(log, 8, "unknown key auth.unread_group"));
    CU_ASSERT(strstr(log, "unread_group (did you mean") == NULL);
    CU_ASSERT(log_has(log, 10, "section 'foo' is neither a core section nor a loaded plugin's"));
    /* Read keys, the group they were read from and an empty known
     * section are not warned about; nor are the keys of an unknown
     * section one by one. */
    CU_ASSERT(strstr(log, "auth.failed_logins ") == NULL);
    CU_ASSERT(strstr(log, "per_hour") == NULL);
    CU_ASSERT(strstr(log, "auth.limits ") == NULL);
    CU_ASSERT(strstr(log, "unread_group.x") == NULL);
    CU_ASSERT(strstr(log, "foo.bar") == NULL);
    CU_ASSERT(strstr(log, "'rooms'") == NULL);
    CU_ASSERT(strstr(log, "rooms.") == NULL);
    free(log);
    config_free(cfg);
}

static void unused_check_suggests_the_plugin_a_section_meant(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("auht = {\n  x = 1;\n};\nlimit = { };\n", &cfg, &log), 0);
    free(log);
    const char *const known[] = {"auth", "rooms"};
    capture_begin();
    CU_ASSERT_EQUAL(config_check_unused(cfg, known, 2), -1);
    log = capture_end();
    CU_ASSERT(log_has(log, 1, "section 'auht' is neither a core section nor a loaded plugin's (did you mean 'auth'?)"));
    CU_ASSERT(log_has(log, 4, "section 'limit' is neither a core section nor a loaded plugin's (did you mean "
                              "'limits'?)"));
    free(log);
    config_free(cfg);
}

static void unused_check_is_silent_when_everything_was_read(void)
{
    config *cfg = NULL;
    char *log = NULL;
    CU_ASSERT_EQUAL_FATAL(load_text("server = { port = 1; };\nauth = { a = true; };\n",
                                    &cfg, &log), 0);
    free(log);
    int b = 0;
    CU_ASSERT_EQUAL(config_section_bool(cfg, "auth", "a", &b), SM_OK);
    CU_ASSERT_EQUAL(b, 1);
    const char *const known[] = {"auth"};
    capture_begin();
    CU_ASSERT_EQUAL(config_check_unused(cfg, known, 1), 0);
    log = capture_end();
    CU_ASSERT_STRING_EQUAL(log, "");
    free(log);
    config_free(cfg);
}

static const sm_test_case cases[] = {
    SM_TEST(config_null_path_gives_defaults),
    SM_TEST(config_reads_every_core_key),
    SM_TEST(config_accepts_integer_rate_and_range_ends),
    SM_TEST(config_rejects_wrong_type),
    SM_TEST(config_rejects_port_out_of_range),
    SM_TEST(config_rejects_other_out_of_range_values),
    SM_TEST(io_threads_outside_1_to_64_is_refused_by_name),
    SM_TEST(io_threads_takes_1_and_64),
    SM_TEST(io_threads_default_is_online_cpus_from_1_to_8),
    SM_TEST(config_limits_of_issue_10_have_safe_defaults),
    SM_TEST(config_bytes_burst_unset_holds_the_largest_message),
    SM_TEST(config_rejects_bytes_burst_below_max_message_bytes),
    SM_TEST(config_reports_every_error_not_only_the_first),
    SM_TEST(config_rejects_unknown_synchronous),
    SM_TEST(config_storage_backend),
    SM_TEST(config_cluster_mode),
    SM_TEST(config_cluster_needs_node_and_redis),
    SM_TEST(config_cluster_needs_postgresql),
    SM_TEST(config_cluster_rejects_bad_node_id),
    SM_TEST(config_cluster_rejects_bad_prefix),
    SM_TEST(config_cluster_rejects_bad_redis_url),
    SM_TEST(config_cluster_redis_password_in_a_readable_file),
    SM_TEST(config_cluster_unknown_key_is_suggested),
    SM_TEST(config_rejects_tls_cert_without_key),
    SM_TEST(config_rejects_bad_plugin_name),
    SM_TEST(config_accepts_64_character_plugin_name),
    SM_TEST(config_rejects_duplicate_plugin),
    SM_TEST(config_rejects_bad_allowed_origins),
    SM_TEST(config_rejects_core_section_that_is_not_a_group),
    SM_TEST(config_rejects_unknown_core_keys_with_suggestions),
    SM_TEST(config_resolves_relative_paths_against_its_directory),
    SM_TEST(config_web_section),
    SM_TEST(config_reports_syntax_error_line),
    SM_TEST(config_rejects_missing_file),
    SM_TEST(section_absent_key_keeps_default),
    SM_TEST(section_getters_read_valid_values),
    SM_TEST(section_int_reads_int64_values),
    SM_TEST(section_getters_reject_wrong_type),
    SM_TEST(section_getters_reject_out_of_range),
    SM_TEST(section_getters_refuse_core_sections),
    SM_TEST(unused_check_names_unread_keys_and_unknown_sections),
    SM_TEST(unused_check_suggests_the_plugin_a_section_meant),
    SM_TEST(unused_check_is_silent_when_everything_was_read),
    SM_TEST(metrics_allow_defaults_to_loopback_and_takes_networks),
    SM_TEST(config_rejects_bad_metrics_allow),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("config", cases, suite_init, suite_cleanup);
}
