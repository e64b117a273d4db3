/* services.postgres_smoke: the private PostgreSQL that ctest's fixture
 * "postgres" starts (tests/services/postgres-instance) works end to end
 * through libpq, the client library the PostgreSQL storage backend will
 * use: its connection string file, a parameterised insert that another
 * connection sees only after COMMIT, and what the fixture promises (an
 * ordinary role owning a UTF-8 database, loopback only). The connection
 * string file is in SM_TEST_POSTGRES_URL_FILE. */
#include <CUnit/CUnit.h>
#include <libpq-fe.h>
#include <safemessenger/testhost_suite.h>
#include <stdlib.h>
#include <string.h>

#include "service_url.h"

static char conninfo[512];

static int suite_init(void)
{
    return service_url_read("SM_TEST_POSTGRES_URL_FILE", conninfo, sizeof conninfo);
}

static PGconn *connect_pg(void)
{
    PGconn *conn = PQconnectdb(conninfo);
    CU_ASSERT_PTR_NOT_NULL_FATAL(conn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect \"%s\": %s", conninfo, PQerrorMessage(conn));
        PQfinish(conn);
        CU_FAIL_FATAL("cannot connect to the fixture's PostgreSQL");
    }
    return conn;
}

/* Runs sql without parameters; true when it ended with status want. */
static int exec_is(PGconn *conn, const char *sql, ExecStatusType want)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == want;
    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return ok;
}

/* The number of rows of smoke_messages with this id, as conn sees them;
 * -1 on error. */
static int count_rows(PGconn *conn, const char *id)
{
    const char *params[] = { id };
    PGresult *res = PQexecParams(conn, "SELECT count(*) FROM smoke_messages WHERE id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    int n = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        n = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "count: %s", PQerrorMessage(conn));
    PQclear(res);
    return n;
}

static void parameterised_insert_is_visible_after_commit(void)
{
    /* Quotes and a statement terminator: a parameter is data, never SQL. */
    static const char body[] = "it's'); DROP TABLE smoke_messages; -- \xc3\xa9";
    PGconn *writer = connect_pg();
    PGconn *reader = connect_pg();
    /* Without the notice that DROP ... IF EXISTS gives for a fresh database. */
    CU_ASSERT_FATAL(exec_is(writer, "SET client_min_messages = warning", PGRES_COMMAND_OK));
    CU_ASSERT_FATAL(exec_is(writer, "DROP TABLE IF EXISTS smoke_messages", PGRES_COMMAND_OK));
    CU_ASSERT_FATAL(exec_is(writer,
                            "CREATE TABLE smoke_messages (id integer PRIMARY KEY, body text NOT NULL)",
                            PGRES_COMMAND_OK));

    CU_ASSERT_FATAL(exec_is(writer, "BEGIN", PGRES_COMMAND_OK));
    const char *params[] = { "7", body };
    PGresult *res = PQexecParams(writer, "INSERT INTO smoke_messages (id, body) VALUES ($1, $2)",
                                 2, NULL, params, NULL, NULL, 0);
    CU_ASSERT_EQUAL(PQresultStatus(res), PGRES_COMMAND_OK);
    CU_ASSERT_STRING_EQUAL(PQcmdTuples(res), "1");
    PQclear(res);
    CU_ASSERT_EQUAL(count_rows(reader, "7"), 0); /* not yet committed */
    CU_ASSERT_FATAL(exec_is(writer, "COMMIT", PGRES_COMMAND_OK));
    CU_ASSERT_EQUAL(count_rows(reader, "7"), 1);

    const char *id[] = { "7" };
    res = PQexecParams(reader, "SELECT body FROM smoke_messages WHERE id = $1", 1, NULL, id, NULL,
                       NULL, 0);
    CU_ASSERT_EQUAL(PQresultStatus(res), PGRES_TUPLES_OK);
    CU_ASSERT_EQUAL(PQntuples(res), 1);
    if (PQntuples(res) == 1)
        CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), body);
    PQclear(res);

    CU_ASSERT(exec_is(writer, "DROP TABLE smoke_messages", PGRES_COMMAND_OK));
    PQfinish(reader);
    PQfinish(writer);
}

static void connects_as_owner_of_utf8_database_not_superuser(void)
{
    PGconn *conn = connect_pg();
    PGresult *res = PQexec(conn,
                           "SELECT current_user, current_database(), r.rolsuper, "
                           "       pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding) "
                           "FROM pg_roles r, pg_database d "
                           "WHERE r.rolname = current_user AND d.datname = current_database()");
    CU_ASSERT_EQUAL_FATAL(PQresultStatus(res), PGRES_TUPLES_OK);
    CU_ASSERT_EQUAL_FATAL(PQntuples(res), 1);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), "safemessenger");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 1), "safemessenger");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 2), "f");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 3), "safemessenger");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 4), "UTF8");
    PQclear(res);
    PQfinish(conn);
}

static void instance_listens_on_loopback_only(void)
{
    PGconn *conn = connect_pg();
    PGresult *res = PQexec(conn, "SELECT current_setting('listen_addresses'), "
                                 "host(inet_server_addr())");
    CU_ASSERT_EQUAL_FATAL(PQresultStatus(res), PGRES_TUPLES_OK);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 1), "127.0.0.1");
    PQclear(res);
    PQfinish(conn);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(parameterised_insert_is_visible_after_commit),
        SM_TEST(connects_as_owner_of_utf8_database_not_superuser),
        SM_TEST(instance_listens_on_loopback_only),
        SM_TEST_END,
    };
    return sm_test_run("services.postgres_smoke", tests, suite_init, NULL);
}
