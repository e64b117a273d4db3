/* See pg_barrier.h. */
#include "pg_barrier.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "safemessenger/plugin.h"

struct pg_barrier {
    char *conninfo;
    PGconn *conn;
    int failing; /* the last run failed: its reason was logged */
};

/* pg_current_xact_id() gives the transaction an id, so its COMMIT writes
 * a commit record and, synchronous, waits for its flush; a transaction
 * without one would commit without touching the WAL. */
#define BARRIER_SQL                                                                        \
    "SET synchronous_commit = on; BEGIN; SELECT pg_current_xact_id(); COMMIT"

int pg_barrier_new(const char *conninfo, pg_barrier **out)
{
    pg_barrier *b = calloc(1, sizeof *b);
    if (!b || !(b->conninfo = strdup(conninfo))) {
        free(b);
        return SM_ENOMEM;
    }
    *out = b;
    return SM_OK;
}

void pg_barrier_free(pg_barrier *b)
{
    if (!b)
        return;
    PQfinish(b->conn);
    /* The string may hold a password. */
    explicit_bzero(b->conninfo, strlen(b->conninfo));
    free(b->conninfo);
    free(b);
}

static int fail(pg_barrier *b, const char *what)
{
    if (!b->failing)
        LOG_WARN("storage: flush barrier: %s: %s", what,
                 b->conn ? PQerrorMessage(b->conn) : "out of memory");
    b->failing = 1;
    PQfinish(b->conn);
    b->conn = NULL;
    return -1;
}

static int connect_barrier(pg_barrier *b)
{
    /* connect_timeout first: the caller's own string overrides it. */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const values[] = {"5", b->conninfo, NULL};
    b->conn = PQconnectdbParams(keys, values, 1);
    if (!b->conn || PQstatus(b->conn) != CONNECTION_OK)
        return fail(b, "cannot connect");
    return 0;
}

int pg_barrier_run(void *arg)
{
    pg_barrier *b = arg;
    if (!b->conn && connect_barrier(b) != 0)
        return -1;
    PGresult *res = PQexec(b->conn, BARRIER_SQL);
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK &&
             strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    if (!ok)
        return fail(b, "no COMMIT");
    if (b->failing)
        LOG_INFO("storage: flush barrier: PostgreSQL answers again");
    b->failing = 0;
    return 0;
}
