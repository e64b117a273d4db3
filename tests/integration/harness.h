/* Integration-test harness: runs the real safemessenger-server on an
 * ephemeral port in a private temporary directory and connects real
 * clients (client/sm_client.h) to it.
 *
 * Typical suite:
 *     static harness_server srv;
 *     static int init(void) { return harness_start(&srv, NULL); }
 *     static int fini(void) { harness_cleanup(&srv); return 0; }
 *     ... sm_client *c; CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK); ...
 *     return sm_test_run("name", cases, init, fini);
 *
 * harness_cleanup() prints the tail of the server's log when a CUnit
 * assertion failed since harness_start(), and keeps the directory when the
 * environment variable SM_KEEP_TEST_DIRS is set.
 *
 * Storage: SQLite (<dir>/server.db) by default. PostgreSQL mode: when the
 * environment variable SM_TEST_SERVER_POSTGRES_URL_FILE names a file whose
 * first line is a libpq connection string in keyword form (ctest's
 * integration.<suite>.pg runs with the postgres fixture's DIR/url), each
 * server the harness starts gets a schema of its own, created through
 * libpq (sm_it_<pid>_<n>_<8 hex>), and its storage section reads
 *     storage = { backend = "postgresql";
 *                 postgresql = "<url> options='-c search_path=<schema>'"; };
 * (the admin socket's default is then beside the key: <dir>/admin.sock
 * too). harness_reload() keeps the schema;
 * harness_cleanup() drops it once the last server on it is cleaned up
 * (harness_start_on() shares it), and keeps it, saying so, when something
 * failed and SM_KEEP_TEST_DIRS is set. A suite stays engine-neutral with
 * harness_postgresql(), harness_start_on() (a second server on the
 * storage of a first, instead of `--db <first's server.db>`) and
 * harness_query_int() (instead of opening server.db with sqlite3). A case
 * about what only one engine has asks harness_postgresql() and checks
 * what the other does instead (backup refused, --db refused, ...).
 *
 * Several servers as the nodes of one cluster (one key, one schema, one
 * Redis): harness_cluster.h.
 */
#ifndef SM_TEST_HARNESS_H
#define SM_TEST_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include "sm_client.h"

struct harness_pg;

typedef struct harness_server {
    pid_t pid;              /* 0 when not running */
    int port;
    char dir[256];          /* mkdtemp: holds server.conf, server.db, server_key.pem, server.log */
    char db[512];           /* the SQLite database it runs on: <dir>/server.db, or the one of
                               the server harness_start_on() named */
    struct harness_pg *pg;  /* PostgreSQL mode: its schema (shared, counted), else NULL */
    char url[128];          /* ws://127.0.0.1:<port>/ */
    char wss_url[128];      /* wss://127.0.0.1:<port>/ (when the config enables TLS) */
    unsigned failures_at_start;   /* CUnit failure count when started */
    int stopped;            /* harness_stop() ran */
    int stop_signal;        /* the signal it sent */
    int stop_status;        /* its exit status (as harness_stop reports it), -1 if it
                               did not end within the stop timeout */
} harness_server;

/* File names inside the server's directory. */
#define HARNESS_TLS_CERT "tls_cert.pem"
#define HARNESS_TLS_KEY "tls_key.pem"

/* The server.io_threads every server of the suite runs with: the
 * environment variable SM_TEST_IO_THREADS (ctest runs each integration
 * suite as integration.<suite> with 1, integration.<suite>.io4 with 4 and
 * integration.<suite>.pg with 2), 1 when unset. -1, with a message, when it is not a positive
 * integer (the server refuses one above its range itself). For
 * configuration files a suite writes without the harness. */
int harness_io_threads(void);

/* The key inside a server section the harness writes: "@IO_THREADS@" is
 * replaced by harness_io_threads(). A server section passed to
 * harness_start() or harness_reload() must set io_threads (this macro, or
 * HARNESS_SERVER_BASE, which holds it), or they fail. */
#define HARNESS_IO_THREADS "io_threads = @IO_THREADS@;"

/* Keys of the default server section, for callers that pass their own
 * `server = { ... }` section: "server = { " HARNESS_SERVER_BASE
 * " max_message_bytes = 200000; };". */
#define HARNESS_SERVER_BASE                                                                 \
    HARNESS_SERVER_ADDR "key_file = \"@DIR@/server_key.pem\"; key_bits = 2048; "             \
    HARNESS_IO_THREADS
/* Its listening part: an ephemeral port on the loopback address. */
#define HARNESS_SERVER_ADDR "port = 0; bind = \"127.0.0.1\"; "

/* Whether text (may be NULL) defines the top-level section `name`: a line
 * starting in column 0 with the name, optional blanks, then '=' or ':'
 * (how harness_start() tells which default sections extra_config
 * replaces). 1 or 0. */
int harness_config_defines(const char *text, const char *name);

/* 1 in PostgreSQL mode (SM_TEST_SERVER_POSTGRES_URL_FILE is set and not
 * empty, see the top of this file), 0 on SQLite. */
int harness_postgresql(void);

/* Starts a server. The configuration is written to <dir>/server.conf:
 *   server  { port = 0; bind = "127.0.0.1"; key_file = "<dir>/server_key.pem"; key_bits = 2048;
 *             io_threads = harness_io_threads(); }
 *   storage { database = "<dir>/server.db"; }   (PostgreSQL mode: see the top)
 *   plugins { dir = SM_TEST_PLUGIN_DIR; load = ["testcmds"]; }
 *   log     { level = "info"; }
 *   limits  { handshakes_per_address = 100000; }  (the suites' many connections
 *           from 127.0.0.1 are not an attack; a test of the limit sets its own)
 * followed by extra_config (may be NULL). A section that extra_config
 * defines (a line starting in column 0 with "name =" or "name:") replaces
 * the default one entirely. In extra_config "@DIR@" is replaced by the
 * temporary directory, "@TEST_PLUGIN_DIR@" by SM_TEST_PLUGIN_DIR,
 * "@PLUGIN_BUILD_DIR@" by SM_PLUGIN_BUILD_DIR, "@SOURCE_DIR@" by
 * SM_SOURCE_DIR, "@IO_THREADS@" by harness_io_threads(), and "@TLS_CERT@" / "@TLS_KEY@" by <dir>/tls_cert.pem and
 * <dir>/tls_key.pem: when either appears, the harness first writes a
 * fresh self-signed certificate (EC P-256, for 127.0.0.1, ::1 and
 * localhost, usable as a client's ca_file) and its key (0600) there.
 * To save RSA key generation, <dir>/server_key.pem is pre-written (mode
 * 0600) with a key generated once per test process; point key_file
 * elsewhere to have the server generate its own.
 * The server runs with cwd = dir, stdout and stderr to <dir>/server.log,
 * `-c <dir>/server.conf --port-file <dir>/port`; the harness waits up to
 * 20 s for the port file. Also ignores SIGPIPE in this process.
 * Returns 0, or -1 (the reason and the log tail are printed to stderr; the
 * directory is left for harness_cleanup()). */
int harness_start(harness_server *s, const char *extra_config);

/* Like harness_start() with extra command-line arguments (NULL-terminated
 * list, may be NULL), e.g. {"--db", "/tmp/x.db", NULL}. */
int harness_start_args(harness_server *s, const char *extra_config, const char *const *args);

/* Like harness_start_args(), on the storage of `other`, a server started
 * before (running or stopped, not yet cleaned up): its SQLite database
 * (storage.database = other->db, as `--db` would) or, in PostgreSQL mode,
 * its schema. For a restart on the same data: the storage outlives
 * `other`'s cleanup until the last server on it is cleaned up (on SQLite
 * the file is in other's directory: clean up `s` first). extra_config
 * must not define a storage section. */
int harness_start_on(harness_server *s, const harness_server *other, const char *extra_config,
                     const char *const *args);

/* Runs sql, a query both engines understand that returns one integer (e.g.
 * "SELECT count(*) FROM auth_users WHERE username_lower = 'bob'"; no
 * parameters), on the storage s runs on: its SQLite database (read-only)
 * or its PostgreSQL schema, on a connection of the harness's own. Works
 * while the server runs and after it stopped. Returns 0 with *out, or -1
 * with the reason on stderr (also when the result is not one integer). */
int harness_query_int(const harness_server *s, const char *sql, long long *out);

/* The first half of harness_start_args(): the directory, the config and
 * the server process, without waiting for its port file (s->port stays
 * 0). For a test that acts on a server still starting; stop it with
 * harness_stop() or harness_cleanup(). */
int harness_spawn(harness_server *s, const char *extra_config, const char *const *args);
/* harness_spawn() on the storage of `other`, as harness_start_on(): for a
 * server expected to exit by itself (harness_wait_exit()), perhaps before
 * it listens. */
int harness_spawn_on(harness_server *s, const harness_server *other, const char *extra_config,
                     const char *const *args);

/* Waits up to timeout_ms for the server to exit by itself (it is sent
 * nothing) and reaps it. Returns 0 with *exit_status (may be NULL; as
 * harness_stop() reports it), or -1 when it still runs (it is left
 * running) or was not running. The status is the caller's to check:
 * harness_cleanup() does not count an exit waited for this way against
 * the server (it still checks the log for sanitizer reports). */
int harness_wait_exit(harness_server *s, int timeout_ms, int *exit_status);

/* Sends `sig` (e.g. SIGTERM; 0 sends nothing and only waits for an exit
 * already under way), waits up to 10 s, then SIGKILLs. Returns 0 when the
 * server ended within 10 s, -1 when it had to be killed or was not
 * running. *exit_status (may be NULL) receives the exit code, or 128 + the
 * signal number when a signal ended it. The signal and status are also
 * kept in the struct: harness_cleanup() fails when a server asked to stop
 * gracefully (SIGTERM, SIGINT, or 0) did not exit 0 in time, so a caller
 * that ignores the status cannot let a bad exit through. */
int harness_stop(harness_server *s, int sig, int *exit_status);

/* Stops the server if it still runs (SIGTERM) and checks that it exited
 * 0 (also after an earlier graceful harness_stop()); checks all of
 * server.log, whatever its size, for sanitizer reports (AddressSanitizer,
 * LeakSanitizer, UBSan "runtime error:"), and fails when the log cannot
 * be read; prints the log tail when anything failed or an assertion
 * failed since harness_start(); removes the directory unless
 * SM_KEEP_TEST_DIRS is set or something failed. Returns 0, or -1 when the
 * server did not end cleanly, its log was unreadable or it reported a
 * sanitizer error: suites return it from their cleanup function, tests
 * assert on it. Safe on a zeroed or already cleaned struct. */
int harness_cleanup(harness_server *s);

/* Rewrites <dir>/server.conf as harness_start() does with extra_config
 * (the same defaults and substitutions; "@TLS_CERT@" writes no new
 * certificate), sends SIGHUP and waits up to 20 s for the outcome in the
 * log. Returns 1 when the server logged "configuration reloaded", 0 when
 * it logged "configuration reload refused", -1 on error or timeout. */
int harness_reload(harness_server *s, const char *extra_config);
/* Writes a newly generated RSA key (2048 bits, PEM, mode 0600; not the
 * key harness_start() pre-writes) to path, which must not exist: for a
 * server that must serve another key than the others. 0 or -1. */
int harness_write_key(const char *path);
/* Writes a new self-signed certificate and key over <dir>/tls_cert.pem and
 * <dir>/tls_key.pem (a renewal in place). 0 or -1. */
int harness_renew_tls(const harness_server *s);

/* Sends req (req_len bytes, as they are) to 127.0.0.1:port from the
 * loopback address source (NULL: the kernel's choice) and reads until the
 * server closes or timeout_ms pass without a byte. Returns the response,
 * malloc'd and NUL-terminated (*len, may be NULL, its length), or NULL
 * when it could not connect or send, or out of memory. */
char *harness_http_exchange(int port, const char *source, const char *req, size_t req_len,
                            int timeout_ms, size_t *len);

/* Runs the server binary (SM_SERVER_PATH) with args (shell words) under a
 * 20 s timeout, its stdout and stderr into out (NUL-terminated, cut to
 * fit). Returns its exit status, -1 if it did not run or exit normally. */
int harness_run_server(const char *args, char *out, size_t out_len);

/* Runs argv (argv[0] a path, NULL-terminated) with stdin from in_path
 * (NULL: /dev/null) and stdout / stderr into out / err (NUL-terminated,
 * cut to their sizes; the files go to s's directory), waiting at most
 * timeout_s. A sanitizer report on its stderr fails the current test
 * (the tools run the core in their own process). Returns its exit status,
 * -1 if it did not run or end in time (it is killed then). */
int harness_run_tool(const harness_server *s, const char *const *argv, const char *in_path,
                     char *out, size_t out_len, char *err, size_t err_len, double timeout_s);

/* Prints the last lines of <dir>/server.log to stderr. */
void harness_dump_log(const harness_server *s);

/* Path of a file inside the server's directory, e.g. "server.log".
 * Returns 0 or -1 if it does not fit. */
int harness_path(const harness_server *s, const char *name, char *buf, size_t buf_len);

/* How many lines of server.log contain needle, -1 if unreadable. */
int harness_log_count(const harness_server *s, const char *needle);
/* 1 if server.log contains needle (searched through the whole file, any
 * size), 0 if not, -1 if unreadable. */
int harness_log_contains(const harness_server *s, const char *needle);
/* Waits up to timeout_ms for needle to appear in server.log: 1 found, 0 not. */
int harness_wait_log(const harness_server *s, const char *needle, int timeout_ms);

/* Connect + handshake with the default options (AES-256-GCM, 5 s
 * timeout). Prints the reason to stderr on failure. Returns an
 * sm_client_status. */
int harness_connect(const harness_server *s, sm_client **out);
/* The same with options; base->url NULL means the server's url. */
int harness_connect_opts(const harness_server *s, const sm_client_options *base, sm_client **out);
/* Open only (TCP + upgrade, no protocol handshake). */
int harness_open_opts(const harness_server *s, const sm_client_options *base, sm_client **out);

/* sm_client_call() with a payload built by json_pack(fmt, ...) (fmt NULL
 * = {}). Returns the reply or NULL (reason printed). */
sm_message *harness_callf(sm_client *c, const char *action, const char *fmt, ...);

/* The payload code of an error message, or -1 if m is not an error with
 * an integer code. */
int harness_error_code(const sm_message *m);

/* Reads and discards messages until the server closes; returns the close
 * code, or -1 if it did not close within timeout_ms. */
int harness_wait_closed(sm_client *c, int timeout_ms);

#endif
