/* safemessenger-admin against the real server (issue 12 item 3): through
 * the admin socket while the server runs (disable and kick close live
 * sessions at once, a disabled user gets the same 1001 as a wrong
 * password, backup, passwd, delete, errors and exit codes, audit lines),
 * then on the stopped server's database directly. On PostgreSQL
 * (integration.test_admin.pg) backup is refused with its reason: it copies an
 * SQLite file. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define ADMIN_CONFIG                                                                          \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"                                               \
    " load = [\"auth\", \"rooms\", \"messaging\", \"friends\"]; };\n"                         \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;"         \
    " failed_logins = 1000; failed_logins_per_user = 1000000; registrations_per_hour = 10000;" \
    " max_hashes_per_address = 100; };\n"                                                     \
    "rooms = { default_room = \"lobby\"; };\n"

#define BAD_CREDENTIALS "invalid username or password"
/* What backup answers on PostgreSQL (core/storage.c). */
#define BACKUP_ON_POSTGRESQL                                                              \
    "backup copies a SQLite database; back up PostgreSQL with its own tools (pg_dump, "    \
    "pg_basebackup)"

static harness_server srv;

static int init(void) { return harness_start(&srv, ADMIN_CONFIG); }

static int fini(void) { return harness_cleanup(&srv); }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Output of the last run_admin. */
static char out_text[65536], err_text[8192];

/* Runs safemessenger-admin -c <dir>/server.conf ARGS... (NULL-ended),
 * with `input` on stdin (NULL: /dev/null); returns its exit status, -1 if
 * it did not run or end within 60 s. */
static int run_admin(const char *input, ...)
{
    char conf[512], in_path[512];
    harness_path(&srv, "server.conf", conf, sizeof conf);
    harness_path(&srv, "admin.in", in_path, sizeof in_path);
    FILE *f = fopen(in_path, "w");
    if (!f)
        return -1;
    if (input)
        fputs(input, f);
    fclose(f);
    const char *argv[32] = {SM_ADMIN_PATH, "-c", conf};
    size_t n = 3;
    va_list ap;
    va_start(ap, input);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n + 1 < sizeof argv / sizeof argv[0])
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return harness_run_tool(&srv, argv, in_path, out_text, sizeof out_text, err_text,
                            sizeof err_text, 60);
}

static sm_client *connect_to(void)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    return c;
}

static sm_message *call2(sm_client *c, const char *action, const char *user, const char *pw)
{
    sm_message *m = harness_callf(c, action, "{s:s, s:s}", "username", user, "password", pw);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    return m;
}

static void expect_action(sm_message *m, const char *action)
{
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, action);
    sm_message_free(m);
}

/* The one 1001 every failed login gets, whatever the reason. */
static void expect_bad_credentials(sm_message *m)
{
    CU_ASSERT_STRING_EQUAL(m->type, "error");
    CU_ASSERT_EQUAL(harness_error_code(m), 1001);
    const char *msg = json_string_value(json_object_get(m->payload, "message"));
    CU_ASSERT_STRING_EQUAL(msg ? msg : "<none>", BAD_CREDENTIALS);
    sm_message_free(m);
}

/* A client logged in as a newly registered user. */
static sm_client *registered(const char *user, const char *pw)
{
    sm_client *c = connect_to();
    expect_action(call2(c, "register", user, pw), "registration_success");
    return c;
}

/* The user's single session id from `sessions list --json`, 0 if none. */
static json_int_t session_of(const char *user)
{
    CU_ASSERT_EQUAL_FATAL(run_admin(NULL, "--json", "sessions", "list", NULL), 0);
    json_t *r = json_loads(out_text, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    json_int_t id = 0;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(r, "sessions"), i, row) {
        const char *u = json_string_value(json_object_get(row, "user"));
        if (u && strcmp(u, user) == 0) {
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(row, "state")), "open");
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(row, "address")),
                                   "127.0.0.1");
            CU_ASSERT_TRUE(json_real_value(json_object_get(row, "since")) > 1e9);
            id = json_integer_value(json_object_get(row, "id"));
        }
    }
    json_decref(r);
    return id;
}

static void admin_socket_is_a_0600_socket_of_the_server_user(void)
{
    char path[512];
    harness_path(&srv, "admin.sock", path, sizeof path);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(lstat(path, &st), 0);
    CU_ASSERT_TRUE(S_ISSOCK(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL(st.st_uid, geteuid());
}

static void disable_closes_the_session_at_once_and_login_gets_the_bad_password_reply(void)
{
    sm_client *c = registered("Adm.Bob", "Pw-Bob-1a2b3c");
    double before = now_s();
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "disable", "adm.bob", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "disabled: yes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "sessions_closed: 1"));
    /* Closed by the command itself, not by some later timeout. */
    CU_ASSERT_EQUAL(harness_wait_closed(c, 5000), 1008);
    CU_ASSERT_TRUE(now_s() - before < 5.0);
    sm_client_close(c, 1000);

    sm_client *d = connect_to();
    expect_bad_credentials(call2(d, "login", "Adm.Bob", "Pw-Bob-1a2b3c"));
    expect_bad_credentials(call2(d, "login", "Adm.Bob", "Pw-Wrong-9z8y"));
    expect_bad_credentials(call2(d, "login", "adm.nobody", "Pw-Bob-1a2b3c"));

    CU_ASSERT_EQUAL(run_admin(NULL, "users", "enable", "Adm.Bob", NULL), 0);
    expect_action(call2(d, "login", "adm.bob", "Pw-Bob-1a2b3c"), "login_success");
    sm_client_close(d, 1000);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "[audit] disable user='Adm.Bob' address=- "
                                           "session=- by=auth", 5000), 1);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "[audit] enable user='Adm.Bob'", 5000), 1);
}

static void kick_closes_the_session_that_sessions_list_shows(void)
{
    sm_client *c = registered("Adm.Kim", "Pw-Kim-4d5e6f");
    json_int_t id = session_of("Adm.Kim");
    CU_ASSERT_TRUE_FATAL(id > 0);
    char id_text[32], audit[128];
    snprintf(id_text, sizeof id_text, "%lld", (long long)id);
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "kick", id_text, NULL), 0);
    CU_ASSERT_EQUAL(harness_wait_closed(c, 5000), 1008);
    sm_client_close(c, 1000);
    snprintf(audit, sizeof audit,
             "[audit] kick user='Adm.Kim' address=127.0.0.1 session=%s by=admin", id_text);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, audit, 5000), 1);
    /* Gone from the list, and a second kick finds nothing. */
    CU_ASSERT_EQUAL(session_of("Adm.Kim"), 0);
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "kick", id_text, NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "no such session"));
}

static void unknown_users_and_bad_usage_exit_1_and_2(void)
{
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "disable", "no.such.user", NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "no such user 'no.such.user'"));
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "users", "show", "no.such.user", NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"status\":\"not_found\""));
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "frobnicate", NULL), 2);
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "disable", NULL), 2);
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "kick", "x1", NULL), 2);
    CU_ASSERT_EQUAL(run_admin(NULL, "--help", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "users passwd NAME"));
}

/* The integer `sql` gives on the server's storage, -1 if it failed. */
static long long count_rows(const char *sql)
{
    long long n = -1;
    CU_ASSERT_EQUAL(harness_query_int(&srv, sql, &n), 0);
    return n;
}

/* Runs `backup path`: on PostgreSQL it must be refused with the reason,
 * leaving no file. 1 when the backup was made (SQLite), 0 when refused. */
static int backup_to(const char *path)
{
    if (harness_postgresql()) {
        CU_ASSERT_EQUAL(run_admin(NULL, "backup", path, NULL), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err_text, BACKUP_ON_POSTGRESQL));
        CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
        return 0;
    }
    CU_ASSERT_EQUAL(run_admin(NULL, "backup", path, NULL), 0);
    return 1;
}

static void backup_is_a_0600_sqlite_copy_with_the_users(void)
{
    sm_client *c = registered("Adm.Bak", "Pw-Bak-7g8h9i");
    sm_client_close(c, 1000);
    char path[512];
    harness_path(&srv, "copy.db", path, sizeof path);
    if (!backup_to(path))
        return;
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    /* The copy is an SQLite file: read as one. */
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CU_ASSERT_EQUAL(sqlite3_prepare_v2(db, "SELECT count(*) FROM auth_users"
                                           " WHERE username_lower = 'adm.bak'", -1, &q, NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    CU_ASSERT_EQUAL(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    sqlite3_close(db);
    /* A second backup replaces the first whole. */
    CU_ASSERT_EQUAL(run_admin(NULL, "backup", path, NULL), 0);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "[audit] backup", 5000), 1);
}

static const char *history_content(sm_client *c, json_t **keep)
{
    sm_message *r = harness_callf(c, "get_history", "{s:s}", "room", "lobby");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    *keep = json_incref(r->payload);
    sm_message_free(r);
    json_t *list = json_object_get(*keep, "messages");
    json_t *last = json_array_get(list, json_array_size(list) - 1);
    return json_string_value(json_object_get(last, "content"));
}

/* The restore procedure of docs/OPERATIONS.md ("Backup and restore"): a
 * server started on the backup file (with the same key) has what was
 * there at the backup and nothing written after it. */
static void a_server_started_on_the_backup_has_what_it_held(void)
{
    /* Not on PostgreSQL: backup is refused there (backup_to), restoring is
     * pg_dump's and pg_restore's. */
    if (harness_postgresql())
        return;
    sm_client *c = registered("Adm.Rst", "Pw-Rst-1a2b3c");
    expect_action(harness_callf(c, "join_room", "{s:s}", "room_name", "lobby"), "join_room");
    sm_message *r = harness_callf(c, "public_message", "{s:s}", "content", "kept by the backup");
    CU_ASSERT_PTR_NOT_NULL(r);
    sm_message_free(r);
    char path[512];
    harness_path(&srv, "restore.db", path, sizeof path);
    CU_ASSERT_EQUAL_FATAL(run_admin(NULL, "backup", path, NULL), 0);
    r = harness_callf(c, "public_message", "{s:s}", "content", "written after the backup");
    sm_message_free(r);
    sm_client_close(c, 1000);
    sm_client *late = registered("Adm.Late", "Pw-Late-4d5e6f");
    sm_client_close(late, 1000);

    /* Its own admin socket: the default is beside the database, which is
     * here in the first server's directory. */
    harness_server restored = {0};
    const char *args[] = {"--db", path, NULL};
    CU_ASSERT_EQUAL_FATAL(harness_start_args(&restored,
                                             "server = { " HARNESS_SERVER_BASE
                                             " admin_socket = \"@DIR@/admin.sock\"; };\n"
                                             ADMIN_CONFIG,
                                             args),
                          0);
    sm_client *c2 = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&restored, &c2), SM_CLIENT_OK);
    expect_action(call2(c2, "login", "Adm.Rst", "Pw-Rst-1a2b3c"), "login_success");
    expect_action(harness_callf(c2, "join_room", "{s:s}", "room_name", "lobby"), "join_room");
    json_t *keep = NULL;
    const char *last = history_content(c2, &keep);
    CU_ASSERT_STRING_EQUAL(last ? last : "<none>", "kept by the backup");
    json_decref(keep);
    expect_bad_credentials(call2(c2, "login", "Adm.Late", "Pw-Late-4d5e6f"));
    sm_client_close(c2, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&restored), 0);
}

static void passwd_from_stdin_replaces_the_password(void)
{
    sm_client *c = registered("Adm.Pat", "Pw-Old-0j1k2l");
    CU_ASSERT_EQUAL(run_admin("Pw-New-3m4n5o\n", "--password-stdin", "users", "passwd",
                              "adm.pat", NULL),
                    0);
    expect_bad_credentials(call2(c, "login", "adm.pat", "Pw-Old-0j1k2l"));
    expect_action(call2(c, "login", "adm.pat", "Pw-New-3m4n5o"), "login_success");
    sm_client_close(c, 1000);
    /* Too short: refused, nothing changed. */
    CU_ASSERT_EQUAL(run_admin("short\n", "--password-stdin", "users", "passwd", "adm.pat", NULL),
                    1);
    CU_ASSERT_EQUAL(harness_log_contains(&srv, "Pw-New-"), 0);
}

static void delete_closes_sessions_and_forgets_what_plugins_kept(void)
{
    sm_client *fr = registered("Adm.Fr", "Pw-Fr-6p7q8r");
    sm_client *del = registered("Adm.Del", "Pw-Del-9s0t1u");
    sm_message *m = harness_callf(del, "send_friend_request", "{s:s}", "friend_username",
                                  "adm.fr");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    sm_message_free(m);
    m = harness_callf(del, "private_message", "{s:s, s:s, s:b}", "recipient", "adm.fr",
                      "content", "hello", "encrypted", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    sm_message_free(m);

    CU_ASSERT_EQUAL(run_admin(NULL, "users", "delete", "adm.del", NULL), 0);
    CU_ASSERT_EQUAL(harness_wait_closed(del, 5000), 1008);
    sm_client_close(del, 1000);
    sm_client_close(fr, 1000);
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "show", "adm.del", NULL), 1);

    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM friends_requests"
                               " WHERE from_lower = 'adm.del' OR to_lower = 'adm.del'"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM messaging_messages"
                               " WHERE sender_lower = 'adm.del' OR recipient_lower = 'adm.del'"),
                    0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM auth_users WHERE username_lower = 'adm.fr'"),
                    1);
    /* The name is free again, with nothing inherited. */
    sm_client *again = registered("Adm.Del", "Pw-Del2-2v3w4x");
    sm_client_close(again, 1000);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "[audit] delete user='Adm.Del'", 5000), 1);
}

static void kick_by_user_closes_each_of_its_sessions(void)
{
    sm_client *a = registered("Adm.Two", "Pw-Two-8b9c0d");
    sm_client *b = connect_to();
    expect_action(call2(b, "login", "adm.two", "Pw-Two-8b9c0d"), "login_success");
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "kick", "--user", "ADM.TWO", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "kicked: 2"));
    CU_ASSERT_EQUAL(harness_wait_closed(a, 5000), 1008);
    CU_ASSERT_EQUAL(harness_wait_closed(b, 5000), 1008);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "kick", "--user", "adm.two", NULL), 1);
}

static void rooms_delete_moves_the_users_out(void)
{
    sm_client *c = registered("Adm.Roomy", "Pw-Roomy-1e2f3g");
    sm_message *m = harness_callf(c, "join_room", "{s:s}", "room_name", "Adm-Room");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    sm_message_free(m);
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "rooms", "list", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"room\": \"Adm-Room\""));
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "delete", "adm-room", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "sessions_moved_out: 1"));
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "rooms", "list", NULL), 0);
    CU_ASSERT_PTR_NULL(strstr(out_text, "Adm-Room"));
    /* The session is in no room now. */
    m = harness_callf(c, "get_users", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->type, "error");
    sm_message_free(m);
    sm_client_close(c, 1000);
}

/* The contents of the room's history as "a,b" (newest first; "" when
 * empty), as `c`, which must be in that room, reads them. */
static void expect_history(sm_client *c, const char *room, const char *want)
{
    sm_message *r = harness_callf(c, "get_history", "{s:s}", "room", room);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->type, "response");
    char got[256] = "";
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(r->payload, "messages"), i, item) {
        const char *content = json_string_value(json_object_get(item, "content"));
        size_t used = strlen(got);
        snprintf(got + used, sizeof got - used, "%s%s", used ? "," : "",
                 content ? content : "?");
    }
    CU_ASSERT_STRING_EQUAL(got, want);
    sm_message_free(r);
}

static void post_public(sm_client *c, const char *content)
{
    expect_action(harness_callf(c, "public_message", "{s:s}", "content", content),
                  "public_message");
}

/* A deleted room's history goes with it: another user who creates a room
 * of that name later, spelled another way, reads none of it. */
static void rooms_delete_takes_the_history_with_it(void)
{
    sm_client *c = registered("Adm.Hist", "Pw-Hist-4h5i6j");
    expect_action(harness_callf(c, "join_room", "{s:s}", "room_name", "Adm-Hist"), "join_room");
    post_public(c, "old one");
    post_public(c, "old two");
    expect_history(c, "Adm-Hist", "old two,old one");
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "delete", "ADM-HIST", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "sessions_moved_out: 1"));

    sm_client *d = registered("Adm.Next", "Pw-Next-7k8l9m");
    expect_action(harness_callf(d, "join_room", "{s:s}", "room_name", "adm-hist"), "join_room");
    expect_history(d, "adm-hist", "");
    post_public(d, "new");
    expect_action(harness_callf(c, "join_room", "{s:s}", "room_name", "ADM-HIST"), "join_room");
    expect_history(c, "ADM-HIST", "new");

    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM messaging_messages"
                               " WHERE room_lower = 'adm-hist'"), 1);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
}

/* A socket file left by a server that died is replaced; a file that is
 * not a socket is never touched, and the server refuses to start. */
static void stale_admin_socket_is_replaced_and_a_plain_file_refused(void)
{
    char stale[512], plain[512], extra[1400];
    harness_path(&srv, "stale.sock", stale, sizeof stale);
    harness_path(&srv, "plain.file", plain, sizeof plain);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", stale);
    CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd); /* the file stays, nobody listens */

    harness_server s2;
    snprintf(extra, sizeof extra,
             "server = { " HARNESS_SERVER_BASE " admin_socket = \"%s\"; };\n", stale);
    CU_ASSERT_EQUAL_FATAL(harness_start(&s2, extra), 0);
    struct stat st;
    CU_ASSERT_EQUAL(lstat(stale, &st), 0);
    CU_ASSERT_TRUE(S_ISSOCK(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL(harness_log_contains(&s2, "admin socket on "), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&s2), 0);
    /* Removed at shutdown. */
    CU_ASSERT_EQUAL(lstat(stale, &st), -1);

    FILE *f = fopen(plain, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("keep me\n", f);
    fclose(f);
    harness_server s3;
    snprintf(extra, sizeof extra,
             "server = { " HARNESS_SERVER_BASE " admin_socket = \"%s\"; };\n", plain);
    fprintf(stderr, "(a refused start follows, as it should)\n");
    CU_ASSERT_NOT_EQUAL(harness_start(&s3, extra), 0);
    CU_ASSERT_EQUAL(harness_log_contains(&s3, "exists and is not a socket"), 1);
    CU_ASSERT_EQUAL(harness_cleanup(&s3), 0);
    char back[16] = "";
    f = fopen(plain, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(fgets(back, sizeof back, f));
    fclose(f);
    CU_ASSERT_STRING_EQUAL(back, "keep me\n");
}

static void rooms_list_and_purge_answer(void)
{
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "rooms", "list", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"room\": \"lobby\""));
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "delete", "lobby", NULL), 1);
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "delete", "nowhere", NULL), 1);
    CU_ASSERT_EQUAL(run_admin(NULL, "purge", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "expired: "));
}

/* A plugin removed by a reload takes its admin commands with it (they
 * pointed into its code and data); added back, they answer again. */
static void reload_removing_a_plugin_removes_its_admin_commands(void)
{
    const char *without_rooms =
        "plugins = { dir = \"@PLUGIN_BUILD_DIR@\";"
        " load = [\"auth\", \"messaging\", \"friends\"]; };\n"
        "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;"
        " failed_logins = 1000; failed_logins_per_user = 1000000; registrations_per_hour = 10000;"
        " max_hashes_per_address = 100; };\n";
    CU_ASSERT_EQUAL_FATAL(harness_reload(&srv, without_rooms), 1);
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "list", NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "unknown admin command"));
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "users", "list", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(harness_reload(&srv, ADMIN_CONFIG), 1);
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "rooms", "list", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"room\": \"lobby\""));
}

/* Last: stops the server. */
static void without_a_server_the_tool_works_on_the_database(void)
{
    CU_ASSERT_EQUAL_FATAL(harness_stop(&srv, SIGTERM, NULL), 0);
    char sock[512];
    harness_path(&srv, "admin.sock", sock, sizeof sock);
    CU_ASSERT_EQUAL(access(sock, F_OK), -1);
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "users", "list", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"user\": \"Adm.Bob\""));
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "disable", "adm.kim", NULL), 0);
    CU_ASSERT_EQUAL(run_admin(NULL, "--json", "users", "show", "adm.kim", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "\"disabled\": true"));
    CU_ASSERT_EQUAL(run_admin(NULL, "users", "show", "no.such.user", NULL), 1);
    CU_ASSERT_EQUAL(run_admin("Pw-Off-5y6z7a\n", "--password-stdin", "users", "passwd",
                              "adm.bob", NULL),
                    0);
    char path[512];
    harness_path(&srv, "offline.db", path, sizeof path);
    if (backup_to(path)) {
        struct stat st;
        CU_ASSERT_EQUAL(stat(path, &st), 0);
        CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    }
    CU_ASSERT_EQUAL(run_admin(NULL, "sessions", "list", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_text, "no sessions"));
    /* The room rooms_delete_takes_the_history_with_it made again: its
     * history goes with it here too, where the tool runs the plugins. */
    CU_ASSERT_EQUAL(run_admin(NULL, "rooms", "delete", "Adm-Hist", NULL), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM messaging_messages"
                               " WHERE room_lower = 'adm-hist'"), 0);
}

static const sm_test_case cases[] = {
    SM_TEST(admin_socket_is_a_0600_socket_of_the_server_user),
    SM_TEST(disable_closes_the_session_at_once_and_login_gets_the_bad_password_reply),
    SM_TEST(kick_closes_the_session_that_sessions_list_shows),
    SM_TEST(unknown_users_and_bad_usage_exit_1_and_2),
    SM_TEST(backup_is_a_0600_sqlite_copy_with_the_users),
    SM_TEST(passwd_from_stdin_replaces_the_password),
    SM_TEST(delete_closes_sessions_and_forgets_what_plugins_kept),
    SM_TEST(kick_by_user_closes_each_of_its_sessions),
    SM_TEST(rooms_delete_moves_the_users_out),
    SM_TEST(rooms_delete_takes_the_history_with_it),
    SM_TEST(stale_admin_socket_is_replaced_and_a_plain_file_refused),
    SM_TEST(rooms_list_and_purge_answer),
    SM_TEST(a_server_started_on_the_backup_has_what_it_held),
    SM_TEST(reload_removing_a_plugin_removes_its_admin_commands),
    SM_TEST(without_a_server_the_tool_works_on_the_database),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("admin", cases, init, fini);
}
