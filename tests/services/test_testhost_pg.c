/* The plugin test host on PostgreSQL (SM_TESTHOST_POSTGRES_URL_FILE,
 * include/safemessenger/testhost.h), against the fixture's instance
 * (tests/services/README.md): each host in a schema of its own, nothing
 * outside it, the schema gone at sm_testhost_free; a URI and options of
 * the string's own kept; a file or string that cannot be used fails
 * sm_testhost_new and leaves nothing behind. What the suite checks in the
 * database it asks on a libpq connection of its own. */
#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"
#include "service_url.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char base[512];      /* the fixture's connection string */
static char base_file[512]; /* the file it came from */
static char tmp_file[64];   /* a file of the suite's own, "" when none */

static int suite_init(void)
{
    const char *f = getenv(SM_TESTHOST_POSTGRES_ENV);
    if (!f || strlen(f) >= sizeof base_file)
        return -1;
    snprintf(base_file, sizeof base_file, "%s", f);
    return service_url_read(SM_TESTHOST_POSTGRES_ENV, base, sizeof base);
}

/* After each test: the fixture's file again, the suite's own removed. */
static void restore(void)
{
    setenv(SM_TESTHOST_POSTGRES_ENV, base_file, 1);
    if (tmp_file[0])
        unlink(tmp_file);
    tmp_file[0] = '\0';
}

/* text as the file the variable names. */
static void use_url_text(const char *text)
{
    snprintf(tmp_file, sizeof tmp_file, "/tmp/sm-testhost-pg-XXXXXX");
    int fd = mkstemp(tmp_file);
    CU_ASSERT_FATAL(fd >= 0);
    size_t len = strlen(text);
    CU_ASSERT_FATAL(write(fd, text, len) == (ssize_t)len);
    close(fd);
    setenv(SM_TESTHOST_POSTGRES_ENV, tmp_file, 1);
}

/* One integer from the fixture's database, on a connection of the
 * suite's own (-1 on failure, asserted). */
static long long pg_int(const char *sql)
{
    PGconn *c = PQconnectdb(base);
    CU_ASSERT_EQUAL_FATAL(PQstatus(c), CONNECTION_OK);
    PGresult *res = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    CU_ASSERT_NOT_EQUAL(v, -1);
    PQclear(res);
    PQfinish(c);
    return v;
}

/* How many schemas of this process's hosts exist. */
static long long my_schemas(void)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'sm\\_testhost\\_%ld\\_%%'",
             (long)getpid());
    return pg_int(sql);
}

static int64_t host_int(sm_testhost *th, const char *sql)
{
    int64_t v = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, sql, &v), SM_OK);
    return v;
}

#define IN_MY_SCHEMA "position('sm_testhost_' in current_schema()) = 1"

static void each_host_has_a_schema_of_its_own_dropped_at_free(void)
{
    CU_ASSERT_EQUAL(my_schemas(), 0);
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL(my_schemas(), 1);
    CU_ASSERT_EQUAL(host_int(th, "SELECT " IN_MY_SCHEMA), 1);
    /* The core's tables and the test's are in it, and only there. */
    CU_ASSERT_EQUAL(host_int(th, "SELECT count(*) FROM information_schema.tables"
                                 " WHERE table_schema = current_schema()"
                                 " AND table_name IN ('sm_migrations', 'sm_meta')"),
                    2);
    CU_ASSERT_EQUAL(sm_testhost_exec(th, "CREATE TABLE t (x INTEGER);"
                                         "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"),
                    SM_OK);
    CU_ASSERT_EQUAL(host_int(th, "SELECT sum(x) FROM t"), 3);
    /* Other suites share the fixture meanwhile, each in schemas of its
     * own: the test host's (sm_testhost_...), services.storage_pg's
     * (sm_test_...) and the integration suites' servers' (sm_it_...,
     * tests/integration/harness_storage.c). */
    CU_ASSERT_EQUAL(pg_int("SELECT count(*) FROM information_schema.tables WHERE table_name"
                           " IN ('t', 'sm_migrations') AND table_schema NOT LIKE 'sm\\_testhost\\_%'"
                           " AND table_schema NOT LIKE 'sm\\_test\\_%'"
                           " AND table_schema NOT LIKE 'sm\\_it\\_%'"),
                    0);
    sm_testhost_free(th);
    CU_ASSERT_EQUAL(my_schemas(), 0);

    /* The next host starts empty. */
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL(host_int(th, "SELECT count(*) FROM information_schema.tables"
                                 " WHERE table_schema = current_schema() AND table_name = 't'"),
                    0);
    sm_testhost_free(th);
    CU_ASSERT_EQUAL(my_schemas(), 0);
}

/* The string as a URI with options of its own: both the options and the
 * host's search path apply. */
static void a_uri_with_options_of_its_own_works(void)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(opts);
    const char *host = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    CU_ASSERT_FATAL(host && port && dbname && user);
    char uri[512];
    snprintf(uri, sizeof uri,
             "postgresql://%s@%s:%s/%s?options=-c%%20statement_timeout%%3D4321\n", user, host,
             port, dbname);
    PQconninfoFree(opts);
    use_url_text(uri);

    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL(host_int(th, "SELECT " IN_MY_SCHEMA), 1);
    CU_ASSERT_EQUAL(host_int(th, "SELECT setting FROM pg_settings"
                                 " WHERE name = 'statement_timeout'"),
                    4321);
    CU_ASSERT_EQUAL(my_schemas(), 1);
    sm_testhost_free(th);
    CU_ASSERT_EQUAL(my_schemas(), 0);
    restore();
}

/* Each way the variable can be unusable fails sm_testhost_new, leaves
 * no schema and no host behind (the next sm_testhost_new works). */
static void an_unusable_file_or_string_fails_new(void)
{
    const char *bad[] = {
        "",                                       /* empty */
        "\n",                                     /* empty first line */
        "host=127.0.0.1 port=1 no_such_keyword=1\n", /* libpq cannot parse it */
        NULL,
    };
    sm_testhost *th = NULL;
    for (const char **b = bad; *b; b++) {
        use_url_text(*b);
        CU_ASSERT_NOT_EQUAL(sm_testhost_new(NULL, &th), SM_OK);
        CU_ASSERT_PTR_NULL(th);
        restore();
    }
    setenv(SM_TESTHOST_POSTGRES_ENV, "/nonexistent/url", 1);
    CU_ASSERT_NOT_EQUAL(sm_testhost_new(NULL, &th), SM_OK);
    restore();

    /* The server refuses an option of the string's. */
    char text[640];
    snprintf(text, sizeof text, "%s options='-c no_such_setting=1'\n", base);
    use_url_text(text);
    CU_ASSERT_NOT_EQUAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_PTR_NULL(th);
    restore();
    /* The schema was made, then the core refused the configuration: the
     * schema goes too. */
    CU_ASSERT_NOT_EQUAL(sm_testhost_new("server = { port = ", &th), SM_OK);
    CU_ASSERT_PTR_NULL(th);
    CU_ASSERT_EQUAL(my_schemas(), 0);

    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    sm_testhost_free(th);
}

static const sm_test_case cases[] = {
    SM_TEST(each_host_has_a_schema_of_its_own_dropped_at_free),
    SM_TEST(a_uri_with_options_of_its_own_works),
    SM_TEST(an_unusable_file_or_string_fails_new),
    SM_TEST_END,
};

int main(void) { return sm_test_run("services.testhost_pg", cases, suite_init, NULL); }
