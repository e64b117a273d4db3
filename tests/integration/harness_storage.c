/* See harness.h ("Storage") and harness_storage.h: a server's SQLite file
 * or, in PostgreSQL mode, its schema in the fixture's database. */
#define _GNU_SOURCE /* asprintf */
#include "harness_storage.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "service_url.h"

#define POSTGRES_ENV "SM_TEST_SERVER_POSTGRES_URL_FILE"

/* A schema and how many servers of the suite still run on it or may be
 * restarted on it. */
struct harness_pg {
    char schema[64];
    char *conninfo; /* the fixture's string, the schema as the search path */
    unsigned refs;
};

int harness_postgresql(void)
{
    const char *v = getenv(POSTGRES_ENV);
    return v && *v;
}

/* The fixture's connection string, read once; NULL (reason printed) when
 * it cannot be read or is not keywords without options of their own
 * (the harness appends `options=` to it). */
static const char *base_url(void)
{
    static char url[1024];
    if (url[0])
        return url;
    char buf[sizeof url];
    if (service_url_read(POSTGRES_ENV, buf, sizeof buf) != 0)
        return NULL;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(buf, &err);
    int ok = opts != NULL && strstr(buf, "://") == NULL;
    for (const PQconninfoOption *o = opts; ok && o->keyword; o++)
        ok = !(strcmp(o->keyword, "options") == 0 && o->val && *o->val);
    if (!ok)
        fprintf(stderr, "harness: %s: \"%s\" is not a libpq keyword string without options "
                        "(%s)\n", POSTGRES_ENV, buf, err ? err : "the harness adds options");
    PQfreemem(err);
    PQconninfoFree(opts);
    if (!ok)
        return NULL;
    memcpy(url, buf, sizeof url);
    return url;
}

/* Runs one statement on a connection of the harness's own, to the
 * fixture's database outside any schema of a server. 0, or -1 with
 * PostgreSQL's reason printed. */
static int admin_exec(const char *sql)
{
    const char *url = base_url();
    if (!url)
        return -1;
    PGconn *c = PQconnectdb(url);
    int rc = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: PostgreSQL: %s", PQerrorMessage(c));
    } else {
        /* Without it DROP SCHEMA ... CASCADE prints a notice per table. */
        PQclear(PQexec(c, "SET client_min_messages = warning"));
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            rc = 0;
        else
            fprintf(stderr, "harness: PostgreSQL: %s: %s", sql, PQerrorMessage(c));
        PQclear(res);
    }
    PQfinish(c);
    return rc;
}

/* A new schema with a name no other server of any suite uses: the pid
 * keeps parallel suites apart, the counter the servers of one suite, the
 * random part a pid the system gave again. */
static struct harness_pg *schema_new(void)
{
    static unsigned serial;
    const char *url = base_url();
    uint32_t r = 0;
    if (!url || getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        return NULL;
    struct harness_pg *pg = calloc(1, sizeof *pg);
    if (!pg)
        return NULL;
    snprintf(pg->schema, sizeof pg->schema, "sm_it_%ld_%u_%08x", (long)getpid(), ++serial,
             (unsigned)r);
    size_t len = strlen(url) + strlen(pg->schema) + 64;
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", pg->schema);
    if (!(pg->conninfo = malloc(len)) || admin_exec(sql) != 0) {
        free(pg->conninfo);
        free(pg);
        return NULL;
    }
    /* The schema alone in the search path: every table of the core and the
     * plugins lands in it, and no other server's is seen. */
    snprintf(pg->conninfo, len, "%s options='-c search_path=%s'", url, pg->schema);
    pg->refs = 1;
    return pg;
}

int harness_storage_prepare(harness_server *s, const harness_server *other)
{
    if (other) {
        if (other->db[0] == '\0' || (harness_postgresql() && !other->pg)) {
            fprintf(stderr, "harness: the server to share storage with has none\n");
            return -1;
        }
        snprintf(s->db, sizeof s->db, "%s", other->db);
        if (other->pg) {
            s->pg = other->pg;
            s->pg->refs++;
        }
        return 0;
    }
    if (harness_path(s, "server.db", s->db, sizeof s->db) != 0)
        return -1;
    if (harness_postgresql() && !(s->pg = schema_new())) {
        fprintf(stderr, "harness: cannot make a PostgreSQL schema for the server\n");
        return -1;
    }
    return 0;
}

/* text as the inside of a libconfig string ('\' and '"' escaped);
 * malloc'd, NULL when out of memory. */
static char *config_quoted(const char *text)
{
    char *out = malloc(2 * strlen(text) + 1), *p = out;
    if (!out)
        return NULL;
    for (; *text; text++) {
        if (*text == '\\' || *text == '"')
            *p++ = '\\';
        *p++ = *text;
    }
    *p = '\0';
    return out;
}

char *harness_storage_section(const harness_server *s)
{
    char *value = config_quoted(s->pg ? s->pg->conninfo : s->db);
    char *out = NULL;
    int n = -1;
    if (value && s->pg)
        n = asprintf(&out, "storage = { backend = \"postgresql\"; postgresql = \"%s\"; };\n",
                     value);
    else if (value)
        n = asprintf(&out, "storage = { database = \"%s\"; };\n", value);
    free(value);
    return n < 0 ? NULL : out;
}

void harness_storage_release(harness_server *s, int keep)
{
    struct harness_pg *pg = s->pg;
    s->pg = NULL;
    s->db[0] = '\0';
    if (!pg || --pg->refs > 0)
        return;
    if (keep) {
        fprintf(stderr, "harness: keeping the PostgreSQL schema %s (%s)\n", pg->schema,
                pg->conninfo);
    } else {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", pg->schema);
        admin_exec(sql);
    }
    free(pg->conninfo);
    free(pg);
}

/* One integer from the first column of the only row, or -1 with why. */
static int sqlite_query_int(const char *path, const char *sql, long long *out)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "harness: %s: %s: %s\n", path, sql, db ? sqlite3_errmsg(db) : "?");
    } else {
        int one = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_count(st) == 1 &&
                  sqlite3_column_type(st, 0) == SQLITE_INTEGER;
        long long n = one ? sqlite3_column_int64(st, 0) : 0;
        if (one && sqlite3_step(st) == SQLITE_DONE) {
            *out = n;
            rc = 0;
        } else {
            fprintf(stderr, "harness: %s: %s: not one integer (%s)\n", path, sql,
                    sqlite3_errmsg(db));
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int pg_query_int(const struct harness_pg *pg, const char *sql, long long *out)
{
    PGconn *c = PQconnectdb(pg->conninfo);
    PGresult *res = NULL;
    int rc = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: PostgreSQL: %s", PQerrorMessage(c));
        goto out;
    }
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "harness: PostgreSQL schema %s: %s: %s", pg->schema, sql,
                PQerrorMessage(c));
        goto out;
    }
    const char *v = PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0)
                        ? PQgetvalue(res, 0, 0)
                        : NULL;
    char *end = NULL;
    errno = 0;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (!v || end == v || *end != '\0' || errno != 0) {
        fprintf(stderr, "harness: PostgreSQL schema %s: %s: not one integer\n", pg->schema, sql);
        goto out;
    }
    *out = n;
    rc = 0;
out:
    PQclear(res);
    PQfinish(c);
    return rc;
}

int harness_query_int(const harness_server *s, const char *sql, long long *out)
{
    if (s->pg)
        return pg_query_int(s->pg, sql, out);
    if (s->db[0] == '\0') {
        fprintf(stderr, "harness: the server has no storage (not started, or cleaned up)\n");
        return -1;
    }
    return sqlite_query_int(s->db, sql, out);
}
