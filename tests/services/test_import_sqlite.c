/* safemessenger-admin import-sqlite (issue 14 item 7: moving an existing
 * SQLite deployment to PostgreSQL), end to end with the real server and
 * tool: a server on SQLite gets users, a waiting private message, a room
 * message and a friend request; it stops; the tool copies its database
 * into a fresh schema of the fixture's PostgreSQL; a server on that schema
 * with the same key has all of it, and ids go on above the old ones. Then
 * what the tool refuses, each without writing anything. */
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"
#include "service_url.h"

#define LOAD "[\"auth\", \"heartbeat\", \"rooms\", \"friends\", \"messaging\"]"
#define PLUGIN_SECTIONS                                                                     \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"     \
    "         registrations_per_hour = 1000; };\n"
#define PASSWORD "correct horse battery"

static char base_url[512];   /* the fixture's database */
static harness_server old;   /* the SQLite deployment, stopped after setup */
static char old_db[512], old_key[512];
static char out_text[16384], err_text[16384];

static int init(void)
{
    if (service_url_read("SM_TEST_POSTGRES_URL_FILE", base_url, sizeof base_url) != 0)
        return -1;
    return 0;
}

static int fini(void)
{
    return harness_cleanup(&old);
}

/* ---- PostgreSQL, directly ------------------------------------------------ */

static void admin_exec(const char *sql)
{
    PGconn *c = PQconnectdb(base_url);
    CU_ASSERT_EQUAL_FATAL(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

/* One integer from a query in schema; -1 when it fails. */
static long long pg_int(const char *schema, const char *sql)
{
    char conninfo[768];
    snprintf(conninfo, sizeof conninfo, "%s options='-c search_path=%s'", base_url, schema);
    PGconn *c = PQconnectdb(conninfo);
    long long v = -1;
    PGresult *res = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
    return v;
}

/* A new, empty schema; its name in name. */
static void fresh_schema(char *name, size_t len)
{
    static unsigned serial;
    snprintf(name, len, "sm_import_%ld_%u", (long)getpid(), ++serial);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", name);
    admin_exec(sql);
}

static void drop_schema(const char *name)
{
    char sql[128];
    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", name);
    admin_exec(sql);
}

/* The configuration of a server on schema (written into old's directory,
 * with its key), plugins `load`. */
static void write_pg_conf(const char *path, const char *schema, const char *load)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f,
            "server = { port = 0; bind = \"127.0.0.1\"; key_file = \"%s\"; io_threads = 2; };\n"
            "storage = { backend = \"postgresql\";\n"
            "  postgresql = \"%s options='-c search_path=%s'\"; };\n"
            "plugins = { dir = \"%s\"; load = %s; };\n" PLUGIN_SECTIONS,
            old_key, base_url, schema, SM_PLUGIN_BUILD_DIR, load);
    fclose(f);
}

/* ---- the tool ------------------------------------------------------------ */

/* safemessenger-admin -c conf import-sqlite db [--json]: its exit status
 * (-1 if it did not end within 120 s), output in out_text / err_text. */
static int run_import(const char *conf, const char *db, int json)
{
    const char *argv[] = {SM_ADMIN_PATH, "-c", conf, "import-sqlite", db,
                          json ? "--json" : NULL, NULL};
    return harness_run_tool(&old, argv, NULL, out_text, sizeof out_text, err_text,
                            sizeof err_text, 120);
}

/* ---- clients ------------------------------------------------------------- */

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "<none>";
}

static sm_client *session_on(const harness_server *s, const char *action, const char *name,
                             sm_message **reply)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, action, "{s:s, s:s}", "username", name, "password", PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    if (reply)
        *reply = m;
    else
        sm_message_free(m);
    return c;
}

/* The SQLite deployment: alice and bob registered, bob offline with a
 * private message from alice, a room message in general, carol's friend
 * request to alice waiting. Stopped when this returns. */
static void set_up_old(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    CU_ASSERT_EQUAL_FATAL(harness_start(&old, "storage = { database = \"@DIR@/server.db\"; };\n"
                                              "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = " LOAD
                                              "; };\n" PLUGIN_SECTIONS),
                          0);
    sm_message *m = NULL;
    sm_client *bob = session_on(&old, "register", "imp_bob", &m);
    CU_ASSERT_STRING_EQUAL(m->action, "registration_success");
    sm_message_free(m);
    sm_client_close(bob, 1000);
    sm_client *carol = session_on(&old, "register", "imp_carol", NULL);
    sm_client *alice = session_on(&old, "register", "imp_alice", &m);
    CU_ASSERT_STRING_EQUAL(m->action, "registration_success");
    sm_message_free(m);
    m = harness_callf(alice, "private_message", "{s:s, s:s, s:b}", "recipient", "imp_bob",
                      "content", "moved with the database", "encrypted", 0);
    CU_ASSERT_PTR_NOT_NULL(m);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "message_delivered");
    sm_message_free(m);
    m = harness_callf(alice, "public_message", "{s:s}", "content", "room history too");
    CU_ASSERT_PTR_NOT_NULL(m);
    sm_message_free(m);
    m = harness_callf(carol, "send_friend_request", "{s:s}", "friend_username", "imp_alice");
    CU_ASSERT_PTR_NOT_NULL(m);
    sm_message_free(m);
    sm_client_close(alice, 1000);
    sm_client_close(carol, 1000);
    int status = -1;
    CU_ASSERT_EQUAL_FATAL(harness_stop(&old, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    harness_path(&old, "server.db", old_db, sizeof old_db);
    harness_path(&old, "server_key.pem", old_key, sizeof old_key);
}

/* ---- cases --------------------------------------------------------------- */

static void import_then_serve_from_postgresql(void)
{
    set_up_old();
    char schema[64], conf[600];
    fresh_schema(schema, sizeof schema);
    harness_path(&old, "pg.conf", conf, sizeof conf);
    write_pg_conf(conf, schema, LOAD);
    CU_ASSERT_EQUAL(run_import(conf, old_db, 1), 0);
    json_error_t jerr;
    json_t *report = json_loads(out_text, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL(report);
    json_t *tables = json_object_get(report, "tables");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(tables, "auth_users")), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(tables, "messaging_messages")), 2);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(tables, "sm_meta")) > 0, 1);
    CU_ASSERT_PTR_NULL(json_object_get(tables, "sm_migrations"));
    json_decref(report);
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM auth_users"), 3);
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM friends_requests"), 1);

    /* A server on the copy with the same key file: everything is there. */
    harness_server pg;
    memset(&pg, 0, sizeof pg);
    char extra[2048];
    snprintf(extra, sizeof extra,
             "server = { port = 0; bind = \"127.0.0.1\"; key_file = \"%s\"; " HARNESS_IO_THREADS
             " };\n"
             "storage = { backend = \"postgresql\";\n"
             "  postgresql = \"%s options='-c search_path=%s'\"; };\n"
             "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = " LOAD "; };\n" PLUGIN_SECTIONS,
             old_key, base_url, schema);
    CU_ASSERT_EQUAL_FATAL(harness_start(&pg, extra), 0);
    sm_message *m = NULL;
    sm_client *bob = session_on(&pg, "login", "imp_bob", &m);
    CU_ASSERT_STRING_EQUAL(m->action, "login_success");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(m->payload, "unread_count")), 1);
    sm_message_free(m);
    m = harness_callf(bob, "get_unread_messages", NULL);
    json_t *list = m ? json_object_get(m->payload, "messages") : NULL;
    CU_ASSERT_EQUAL(json_array_size(list), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "content"), "moved with the database");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "sender"), "imp_alice");
    sm_message_free(m);
    m = harness_callf(bob, "get_history", "{s:s}", "room", "general");
    list = m ? json_object_get(m->payload, "messages") : NULL;
    CU_ASSERT_EQUAL(json_array_size(list), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "content"), "room history too");
    sm_message_free(m);
    sm_client *alice = session_on(&pg, "login", "imp_alice", &m);
    CU_ASSERT_STRING_EQUAL(m->action, "login_success");
    sm_message_free(m);
    m = harness_callf(alice, "get_friend_requests", NULL);
    list = m ? json_object_get(m->payload, "requests") : NULL;
    CU_ASSERT_EQUAL(json_array_size(list), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "from"), "imp_carol");
    sm_message_free(m);
    /* Ids go on above the copied ones: users and messages. */
    sm_client *dave = session_on(&pg, "register", "imp_dave", &m);
    CU_ASSERT_STRING_EQUAL(m->action, "registration_success");
    CU_ASSERT(json_integer_value(json_object_get(m->payload, "user_id")) > 3);
    sm_message_free(m);
    m = harness_callf(dave, "public_message", "{s:s}", "content", "after the move");
    CU_ASSERT_PTR_NOT_NULL(m);
    CU_ASSERT(m && json_integer_value(json_object_get(m->payload, "id")) > 2);
    sm_message_free(m);
    /* The server took the copied key's record as its own: no warning of a
     * changed key. */
    CU_ASSERT_FALSE(harness_log_contains(&pg, "is not the one this database was used with"));
    sm_client_close(dave, 1000);
    sm_client_close(alice, 1000);
    sm_client_close(bob, 1000);

    /* The database is now used: a second import is refused. */
    CU_ASSERT_EQUAL(run_import(conf, old_db, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "the PostgreSQL database was used by a server "
                                            "already"));
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM auth_users"), 4);
    CU_ASSERT_EQUAL(harness_cleanup(&pg), 0);
    drop_schema(schema);
}

/* Nothing is copied into a database a server already used, or from a
 * database a server runs on, or without PostgreSQL configured, or with a
 * plugin of the old database not loaded; and a copy that fails midway
 * leaves nothing behind. */
static void refusals_write_nothing(void)
{
    set_up_old();
    char schema[64], conf[600];
    fresh_schema(schema, sizeof schema);
    harness_path(&old, "pg.conf", conf, sizeof conf);

    /* A plugin of the old database not loaded. */
    write_pg_conf(conf, schema, "[\"auth\", \"heartbeat\", \"rooms\", \"messaging\"]");
    CU_ASSERT_EQUAL(run_import(conf, old_db, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "plugin friends: the SQLite database holds its "
                                            "tables, but the configuration does not load it"));
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM auth_users"), 0);

    /* The configuration on SQLite. */
    char sqlite_conf[600];
    harness_path(&old, "server.conf", sqlite_conf, sizeof sqlite_conf);
    CU_ASSERT_EQUAL(run_import(sqlite_conf, old_db, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "import-sqlite copies into PostgreSQL"));

    /* Not a SafeMessenger database, and no file at all. */
    write_pg_conf(conf, schema, LOAD);
    char other[600];
    harness_path(&old, "other.db", other, sizeof other);
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(other, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TABLE t (x INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(run_import(conf, other, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "not a SafeMessenger database"));
    CU_ASSERT_EQUAL(run_import(conf, "/nonexistent/x.db", 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "No such file or directory"));

    /* A value PostgreSQL's text cannot hold, in a table copied after
     * others: the transaction takes the earlier tables back too. */
    char broken[600];
    harness_path(&old, "broken.db", broken, sizeof broken);
    snprintf(out_text, sizeof out_text, "cp '%s' '%s'", old_db, broken);
    CU_ASSERT_EQUAL_FATAL(system(out_text), 0);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(broken, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL(sqlite3_prepare_v2(db, "UPDATE messaging_messages SET content = ?", -1, &st,
                                       NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_bind_text(st, 1, "a\0b", 3, SQLITE_STATIC), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(run_import(conf, broken, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "messaging_messages, column content: a text holds a "
                                            "NUL byte"));
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM auth_users"), 0);
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM sm_meta WHERE name = "
                                   "'server_key_fingerprint'"),
                    0);

    /* A server running on the SQLite database. */
    harness_server again;
    memset(&again, 0, sizeof again);
    const char *args[] = {"--db", old_db, NULL};
    CU_ASSERT_EQUAL_FATAL(harness_start_args(&again, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; "
                                                     "load = " LOAD "; };\n" PLUGIN_SECTIONS,
                                             args),
                          0);
    CU_ASSERT_EQUAL(run_import(conf, old_db, 0), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_text, "a server is running on it"));
    CU_ASSERT_EQUAL(pg_int(schema, "SELECT count(*) FROM auth_users"), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&again), 0);
    drop_schema(schema);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(import_then_serve_from_postgresql),
        SM_TEST(refusals_write_nothing),
        SM_TEST_END,
    };
    return sm_test_run("services_import_sqlite", cases, init, fini);
}
