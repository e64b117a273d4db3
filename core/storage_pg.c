/* The storage service on PostgreSQL (libpq), for cluster mode: one
 * connection, used by the logic thread alone, like SQLite's.
 *
 * Every call blocks the calling thread until the server answers: this is
 * the first, synchronous step. Issue 14 requires the logic thread's waits
 * on the database to be bounded and measured (non-blocking libpq, pipeline
 * mode or a pool on the workers), which a later step brings; until then
 * only connecting is bounded (connect_timeout).
 *
 * Where PostgreSQL and SQLite differ, SQLite's behaviour is kept, since
 * plugins were written against it:
 * - an error inside a transaction undoes the failed statement only (each
 *   statement then runs under a savepoint), where PostgreSQL would abort
 *   the whole transaction: a plugin may take SM_EEXIST as "already there"
 *   and go on (friends does);
 * - `?` and `?NNN` placeholders, bound from 1, translated to `$N`;
 * - a statement stepped past its end runs again (SQLite's auto-reset);
 * - storage_changes counts rows of the last INSERT, UPDATE or DELETE only. */
#include "storage_pg.h"

#include "log.h"

#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct pg_db {
    PGconn *conn;
    unsigned long next_name; /* statement names: sm_1, sm_2, ... per connection */
    int64_t changes;         /* rows of the last INSERT, UPDATE or DELETE */
};

enum { ST_READY, ST_ROWS, ST_DONE };

struct pg_stmt {
    pg_db *db;
    char name[32];
    char *sql;      /* the caller's text, for logs */
    int nparams;
    char **values;  /* nparams text values; NULL is SQL NULL */
    PGresult *res;  /* the whole result of the run in progress */
    int row;        /* the row the columns read, in res */
    int state;      /* ST_READY: may bind; ST_ROWS: res read; ST_DONE: reset first */
};

#define PG_MAX_PARAMS 65535 /* the protocol's limit (a 16-bit count) */

/* ---- errors ------------------------------------------------------------ */

/* SQLSTATE to the SDK's status: class 23 is an integrity constraint (as
 * SQLITE_CONSTRAINT), serialization failures, deadlocks and lock timeouts
 * are worth retrying (as SQLITE_BUSY). */
static int status_from_result(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return SM_ERROR;
    if (strncmp(state, "23", 2) == 0)
        return SM_EEXIST;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "55P03") == 0)
        return SM_EBUSY;
    if (strcmp(state, "53200") == 0)
        return SM_ENOMEM;
    return SM_ERROR;
}

/* The server's message without libpq's "ERROR:  " prefix and newline, or
 * the connection's (copied into buf, trimmed). */
static const char *error_text(const pg_db *db, const PGresult *res, char *buf, size_t size)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (msg)
        snprintf(buf, size, "%s (SQLSTATE %s)", msg, state ? state : "?");
    else
        snprintf(buf, size, "%s", db->conn ? PQerrorMessage(db->conn) : "no connection");
    /* libpq's connection messages span lines: one log line each. */
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\t')
            *c = ' ';
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
    return buf;
}

static int result_ok(const PGresult *res)
{
    ExecStatusType t = PQresultStatus(res);
    return t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
}

/* Remembers the row count of an INSERT, UPDATE, DELETE or MERGE, as
 * sqlite3_changes does; other commands leave it. */
static void note_changes(pg_db *db, const PGresult *res)
{
    static const char *const writes[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE "};
    const char *cmd = PQcmdStatus((PGresult *)res);
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
        if (cmd && strncmp(cmd, writes[i], strlen(writes[i])) == 0) {
            db->changes = strtoll(PQcmdTuples((PGresult *)res), NULL, 10);
            return;
        }
}

/* ---- connecting -------------------------------------------------------- */

/* Notices (such as "relation already exists, skipping") go to the log,
 * not to libpq's default of stderr. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    size_t n = strcspn(message, "\n");
    log_msg(SM_LOG_DEBUG, "core", "storage: PostgreSQL: %.*s", (int)n, message);
}

static const char *option(const PQconninfoOption *opts, const char *key)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

/* "host=H port=P dbname=D" for logs: the connection string itself may
 * hold a password, these three never do. */
static void describe(const PQconninfoOption *opts, char *buf, size_t size)
{
    const char *host = option(opts, "host") ? option(opts, "host") : option(opts, "hostaddr");
    const char *port = option(opts, "port"), *dbname = option(opts, "dbname");
    snprintf(buf, size, "host=%s port=%s dbname=%s", host ? host : "(default)",
             port ? port : "(default)", dbname ? dbname : "(default)");
}

/* The parsed options plus defaults the caller did not set: a connect
 * timeout, UTF-8 (what every column holds) and an application name for
 * pg_stat_activity. */
static PGconn *connect_with_defaults(const PQconninfoOption *opts)
{
    static const char *const defaults[][2] = {
        {"connect_timeout", PG_CONNECT_TIMEOUT_S},
        {"client_encoding", "UTF8"},
        {"application_name", "safemessenger"},
    };
    size_t n = 0, ndefaults = sizeof defaults / sizeof defaults[0];
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    const char **keys = calloc(n + ndefaults + 1, sizeof *keys);
    const char **vals = calloc(n + ndefaults + 1, sizeof *vals);
    PGconn *conn = NULL;
    if (!keys || !vals)
        goto out;
    size_t k = 0;
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val) {
            keys[k] = o->keyword;
            vals[k++] = o->val;
        }
    for (size_t i = 0; i < ndefaults; i++)
        if (!option(opts, defaults[i][0])) {
            keys[k] = defaults[i][0];
            vals[k++] = defaults[i][1];
        }
    conn = PQconnectdbParams(keys, vals, 0);
out:
    free(keys);
    free(vals);
    return conn;
}

/* A libpq parse error quotes the text it stumbled on, which may be part of
 * a password: shown only when the string holds none. */
static int may_hold_password(const char *conninfo)
{
    return strstr(conninfo, "password") != NULL || strchr(conninfo, '@') != NULL;
}

/* Creates the core's tables (the same columns as SQLite's; applied_at is
 * DOUBLE PRECISION because PostgreSQL's REAL is only 4 bytes). */
static const char create_core_tables[] =
    "CREATE TABLE IF NOT EXISTS sm_migrations("
    "owner TEXT NOT NULL, version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY(owner, version));"
    "CREATE TABLE IF NOT EXISTS sm_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)";

int pg_db_open(const char *conninfo, pg_db **out)
{
    if (!conninfo || !out)
        return SM_EINVAL;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        LOG_ERROR("storage: the PostgreSQL connection string cannot be parsed: %s",
                  may_hold_password(conninfo) ? "(details withheld: it may hold a password)"
                  : perr                      ? perr
                                              : "out of memory");
        int status = perr ? SM_EINVAL : SM_ENOMEM;
        PQfreemem(perr);
        return status;
    }
    char where[256];
    describe(opts, where, sizeof where);
    PGconn *conn = connect_with_defaults(opts);
    PQconninfoFree(opts);
    if (!conn) {
        LOG_ERROR("storage: cannot connect to PostgreSQL (%s): out of memory", where);
        return SM_ENOMEM;
    }
    char why[512];
    if (PQstatus(conn) != CONNECTION_OK) {
        pg_db tmp = {.conn = conn};
        LOG_ERROR("storage: cannot connect to PostgreSQL (%s): %s", where,
                  error_text(&tmp, NULL, why, sizeof why));
        PQfinish(conn);
        return SM_ERROR;
    }
    PQsetNoticeProcessor(conn, notice_to_log, NULL);
    pg_db *db = calloc(1, sizeof *db);
    if (!db) {
        PQfinish(conn);
        return SM_ENOMEM;
    }
    db->conn = conn;
    /* One simple query: its statements run in one implicit transaction. */
    PGresult *res = PQexec(conn, create_core_tables);
    if (!result_ok(res)) {
        LOG_ERROR("storage: cannot create the core's tables on PostgreSQL (%s): %s", where,
                  error_text(db, res, why, sizeof why));
        PQclear(res);
        pg_db_close(db);
        return SM_ERROR;
    }
    PQclear(res);
    int version = PQserverVersion(conn);
    LOG_INFO("storage: PostgreSQL %d.%d at %s", version / 10000, version % 10000, where);
    *out = db;
    return SM_OK;
}

void pg_db_close(pg_db *db)
{
    if (!db)
        return;
    if (pg_db_in_transaction(db)) {
        LOG_WARN("storage: transaction left open at close, rolling back");
        PQclear(PQexec(db->conn, "ROLLBACK"));
    }
    PQfinish(db->conn);
    free(db);
}

/* ---- statement-level rollback ------------------------------------------ */

/* Inside a transaction, a failed statement leaves PostgreSQL's whole
 * transaction aborted; SQLite undoes that statement only and the
 * transaction goes on. Each statement in a transaction therefore runs
 * under a savepoint, released after it, rolled back to if it failed. */
#define SAVEPOINT_SQL "SAVEPOINT sm_stmt"
#define RELEASE_SQL "RELEASE SAVEPOINT sm_stmt"
#define UNDO_SQL "ROLLBACK TO SAVEPOINT sm_stmt; RELEASE SAVEPOINT sm_stmt"

static int in_open_transaction(const pg_db *db)
{
    return PQtransactionStatus(db->conn) == PQTRANS_INTRANS;
}

/* After the guarded statement: release, or undo it if it failed. A
 * failure here leaves the transaction aborted; the commit reports it. */
static void end_savepoint(pg_db *db, int failed)
{
    PGresult *res = PQexec(db->conn, failed ? UNDO_SQL : RELEASE_SQL);
    if (!result_ok(res)) {
        char why[256];
        LOG_ERROR("storage: %s failed: %s", failed ? "undoing a statement" : "RELEASE SAVEPOINT",
                  error_text(db, res, why, sizeof why));
    }
    PQclear(res);
}

/* A simple query (one or more statements, no parameters), guarded as
 * above inside a transaction. */
static PGresult *exec_guarded(pg_db *db, const char *sql)
{
    int guard = in_open_transaction(db);
    if (guard) {
        PGresult *sp = PQexec(db->conn, SAVEPOINT_SQL);
        if (!result_ok(sp))
            return sp;
        PQclear(sp);
    }
    PGresult *res = PQexec(db->conn, sql);
    if (guard)
        end_savepoint(db, !result_ok(res));
    return res;
}

/* The prepared statement with its bindings. In a transaction, the
 * savepoint, the statement and the release go in one round trip (libpq's
 * pipeline mode); only a failure costs a second one, to undo it. */
static PGresult *exec_prepared(pg_stmt *st)
{
    PGconn *c = st->db->conn;
    const char *const *values = (const char *const *)st->values;
    if (!in_open_transaction(st->db))
        return PQexecPrepared(c, st->name, st->nparams, values, NULL, NULL, 0);
    if (!PQenterPipelineMode(c))
        return NULL;
    int sent = PQsendQueryParams(c, SAVEPOINT_SQL, 0, NULL, NULL, NULL, NULL, 0) &&
               PQsendQueryPrepared(c, st->name, st->nparams, values, NULL, NULL, 0) &&
               PQsendQueryParams(c, RELEASE_SQL, 0, NULL, NULL, NULL, NULL, 0) &&
               PQpipelineSync(c);
    /* Each query's result is followed by NULL; the sync's closes the run. */
    PGresult *results[3] = {NULL, NULL, NULL};
    size_t i = 0;
    while (sent) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (++i > 3 || PQstatus(c) != CONNECTION_OK)
                break;
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (i < 3 && !results[i])
            results[i] = r;
        else
            PQclear(r);
    }
    if (!PQexitPipelineMode(c))
        LOG_ERROR("storage: PostgreSQL pipeline left unfinished: %s", PQerrorMessage(c));
    if (result_ok(results[1]) && !result_ok(results[2])) {
        /* The transaction is aborted now: the commit will say so. */
        char why[256];
        LOG_ERROR("storage: RELEASE SAVEPOINT failed: %s",
                  error_text(st->db, results[2], why, sizeof why));
    }
    PQclear(results[2]);
    if (!result_ok(results[0])) {
        /* No savepoint: the statement did not run; say why. */
        PQclear(results[1]);
        return results[0];
    }
    PQclear(results[0]);
    if (!result_ok(results[1]))
        end_savepoint(st->db, 1);
    return results[1];
}

/* ---- transactions ------------------------------------------------------ */

static int run_tx(pg_db *db, const char *sql)
{
    PGresult *res = PQexec(db->conn, sql);
    int ok = result_ok(res);
    if (!ok) {
        char why[256];
        log_msg(SM_LOG_ERROR, "core", "SQL failed (%s): %s", sql,
                error_text(db, res, why, sizeof why));
    }
    int status = ok ? SM_OK : status_from_result(res);
    PQclear(res);
    return status;
}

int pg_db_in_transaction(const pg_db *db)
{
    PGTransactionStatusType t = PQtransactionStatus(db->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

int pg_db_begin(pg_db *db)
{
    if (pg_db_in_transaction(db))
        return SM_ESTATE;
    return run_tx(db, "BEGIN");
}

int pg_db_commit(pg_db *db)
{
    if (!pg_db_in_transaction(db))
        return SM_ESTATE;
    /* COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK:
     * only the tag COMMIT means the rows are stored. */
    PGresult *res = PQexec(db->conn, "COMMIT");
    int ok = result_ok(res) && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!ok) {
        char why[256];
        log_msg(SM_LOG_ERROR, "core", "SQL failed (COMMIT): %s",
                result_ok(res) ? "the transaction had failed and was rolled back"
                               : error_text(db, res, why, sizeof why));
    }
    PQclear(res);
    if (ok)
        return SM_OK;
    /* The caller must not believe anything was stored. */
    if (pg_db_in_transaction(db))
        run_tx(db, "ROLLBACK");
    return SM_ERROR;
}

int pg_db_rollback(pg_db *db)
{
    if (!pg_db_in_transaction(db))
        return SM_ESTATE;
    return run_tx(db, "ROLLBACK") == SM_OK ? SM_OK : SM_ERROR;
}

/* PostgreSQL has no rowid: the id of the row just inserted is the value
 * its identity (or serial) column took from its sequence, which is
 * lastval(), the session's most recent nextval. So it is right after an
 * INSERT into a table whose key is such a column, as every plugin table
 * that reads it must have. A round trip per call, three inside a
 * transaction (exec_guarded: lastval() fails before any nextval, and a
 * failure must not abort the transaction). 0 (and a log line)
 * when no sequence was used yet in this session, as SQLite gives 0 before
 * any insert. */
int64_t pg_db_last_insert_id(pg_db *db)
{
    PGresult *res = exec_guarded(db, "SELECT lastval()");
    int64_t id = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    } else {
        char why[256];
        LOG_ERROR("storage: last insert id: %s", error_text(db, res, why, sizeof why));
    }
    PQclear(res);
    return id;
}

int64_t pg_db_changes(const pg_db *db)
{
    return db->changes;
}

int pg_db_exec(pg_db *db, const char *who, const char *sql)
{
    char *text = NULL;
    const char *why = NULL;
    int status = pg_translate_types(sql, &text, &why);
    if (status != SM_OK) {
        if (why)
            log_msg(SM_LOG_ERROR, who, "%s: \"%s\"", why, sql);
        return status;
    }
    PGresult *res = exec_guarded(db, text);
    free(text);
    if (result_ok(res)) {
        note_changes(db, res);
    } else {
        char reason[512];
        log_msg(SM_LOG_ERROR, who, "SQL failed (%s): %s", sql,
                error_text(db, res, reason, sizeof reason));
        status = status_from_result(res);
    }
    PQclear(res);
    return status;
}

/* ---- migrations and the core's tables ----------------------------------- */

/* A query with text parameters; the result, or NULL with the reason
 * logged under who when it did not succeed. */
static PGresult *query(pg_db *db, const char *who, const char *sql, int n,
                       const char *const *params)
{
    PGresult *res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
    if (result_ok(res))
        return res;
    char why[512];
    log_msg(SM_LOG_ERROR, who, "SQL failed (%s): %s", sql, error_text(db, res, why, sizeof why));
    PQclear(res);
    return NULL;
}

int pg_db_apply_migration(pg_db *db, const char *owner, const sm_migration *m,
                          double applied_at)
{
    char version[16], at[32], why[512];
    snprintf(version, sizeof version, "%d", m->version);
    snprintf(at, sizeof at, "%.17g", applied_at);
    const char *params[] = {owner, version, at};
    char *text = NULL;
    const char *bad = NULL;
    if (pg_translate_types(m->sql, &text, &bad) != SM_OK) {
        log_msg(SM_LOG_ERROR, owner, "migration %d failed: %s", m->version,
                bad ? bad : "out of memory");
        return -1;
    }
    PGresult *res = PQexec(db->conn, "BEGIN");
    if (!result_ok(res))
        goto fail;
    PQclear(res);
    /* A simple query: the migration may hold several statements. */
    res = PQexec(db->conn, text);
    if (!result_ok(res))
        goto fail;
    PQclear(res);
    res = PQexecParams(db->conn,
                       "INSERT INTO sm_migrations(owner, version, applied_at) VALUES($1, $2, $3)",
                       3, NULL, params, NULL, NULL, 0);
    if (!result_ok(res))
        goto fail;
    PQclear(res);
    res = PQexec(db->conn, "COMMIT");
    if (!result_ok(res) || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        goto fail;
    PQclear(res);
    free(text);
    log_msg(SM_LOG_INFO, owner, "applied migration %d", m->version);
    return 0;
fail:
    free(text);
    log_msg(SM_LOG_ERROR, owner, "migration %d failed: %s", m->version,
            error_text(db, res, why, sizeof why));
    PQclear(res);
    if (pg_db_in_transaction(db))
        PQclear(PQexec(db->conn, "ROLLBACK"));
    return -1;
}

int pg_db_version(pg_db *db, const char *owner, int *out)
{
    const char *params[] = {owner};
    PGresult *res = query(db, owner,
                          "SELECT COALESCE(MAX(version), 0) FROM sm_migrations WHERE owner = $1",
                          1, params);
    if (!res)
        return SM_ERROR;
    long long v = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    if (v < 0 || v > INT32_MAX)
        return SM_ERROR;
    *out = (int)v;
    return SM_OK;
}

int pg_db_meta_get(pg_db *db, const char *name, char *buf, size_t size)
{
    const char *params[] = {name};
    PGresult *res = query(db, "core", "SELECT value FROM sm_meta WHERE name = $1", 1, params);
    if (!res)
        return SM_ERROR;
    int status = SM_ENOTFOUND;
    if (PQntuples(res) == 1) {
        int n = snprintf(buf, size, "%s", PQgetvalue(res, 0, 0));
        status = n < 0 || (size_t)n >= size ? SM_EINVAL : SM_OK;
    }
    PQclear(res);
    return status;
}

int pg_db_meta_set(pg_db *db, const char *name, const char *value)
{
    const char *params[] = {name, value};
    PGresult *res = query(db, "core",
                          "INSERT INTO sm_meta(name, value) VALUES($1, $2)"
                          " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                          2, params);
    if (!res)
        return SM_ERROR;
    PQclear(res);
    return SM_OK;
}

int pg_db_has_migrations(pg_db *db)
{
    PGresult *res = query(db, "core", "SELECT 1 FROM sm_migrations LIMIT 1", 0, NULL);
    if (!res)
        return -1;
    int any = PQntuples(res) > 0;
    PQclear(res);
    return any;
}

/* ---- placeholders ------------------------------------------------------ */

static int ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* Copies a quoted run from *p (at the opening quote) to its closing quote
 * into *o; `quote` doubled inside stands for itself, and in an E'...'
 * string a backslash escapes the next byte. */
static void copy_quoted(const char **p, char **o, char quote, int backslashes)
{
    const char *s = *p;
    char *d = *o;
    *d++ = *s++;
    while (*s) {
        if (backslashes && *s == '\\' && s[1]) {
            *d++ = *s++;
            *d++ = *s++;
            continue;
        }
        if (*s == quote) {
            *d++ = *s++;
            if (*s != quote)
                break;
        }
        *d++ = *s++;
    }
    *p = s;
    *o = d;
}

/* Copies a comment from *p: "--" to the end of the line, or a block
 * comment, which nests in PostgreSQL. */
static void copy_comment(const char **p, char **o)
{
    const char *s = *p;
    char *d = *o;
    if (s[0] == '-') {
        while (*s && *s != '\n')
            *d++ = *s++;
    } else {
        int depth = 0;
        do {
            if (s[0] == '/' && s[1] == '*') {
                depth++;
                *d++ = *s++;
            } else if (s[0] == '*' && s[1] == '/') {
                depth--;
                *d++ = *s++;
            }
            *d++ = *s++;
        } while (*s && depth > 0);
    }
    *p = s;
    *o = d;
}

/* SQLite's INTEGER is 64 bits and its REAL a double; PostgreSQL's are 32
 * bits and a 4-byte float, which would cut ids at 2^31 and round a UNIX
 * time to 128 s. Plugins write SQLite's types (one text for both
 * engines), so these words, outside quotes and comments, become the
 * PostgreSQL types that hold the same values. The length of what *p
 * starts with that is such a word, and its replacement, or 0. */
static size_t type_word(const char *sql, const char *p, const char **with)
{
    static const struct {
        const char *word, *with;
    } map[] = {
        {"INTEGER", "BIGINT"},
        {"INT", "BIGINT"},
        {"REAL", "DOUBLE PRECISION"},
    };
    if (p > sql && (ident_char(p[-1]) || p[-1] == '.'))
        return 0;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i].word);
        if (strncasecmp(p, map[i].word, n) == 0 && !ident_char(p[n])) {
            *with = map[i].with;
            return n;
        }
    }
    return 0;
}

/* A dollar-quoted string ($$...$$ or $tag$...$tag$: a PL/pgSQL body)
 * starting at p: its length to the end of the closing tag, or 0 when p
 * starts none (then `$` is something else: `$1`, or inside a name). */
static size_t dollar_quoted(const char *sql, const char *p)
{
    if (p > sql && ident_char(p[-1]))
        return 0;
    size_t t = 1;
    if (isdigit((unsigned char)p[1]))
        return 0;
    while (p[t] != '$' && (ident_char(p[t]) && p[t] != '$'))
        t++;
    if (p[t] != '$')
        return 0;
    t++; /* the tag, both dollars included */
    for (const char *q = p + t; (q = strchr(q, '$')) != NULL; q++)
        if (strncmp(q, p, t) == 0)
            return (size_t)(q - p) + t;
    return strlen(p); /* unterminated: the server will say so */
}

static int word_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(p, word, n) == 0;
}

/* PostgreSQL compares and sorts text by the database's collation, SQLite
 * and the plugins' C code (strcmp) by bytes: under en_US 'a_b' < 'a-b',
 * so a CHECK (a < b) the C code satisfied could fail and lists come out
 * in another order. A column declared TEXT in a migration or db_exec is
 * therefore declared TEXT COLLATE "C" (byte order for UTF-8), whatever
 * the database's default: a column type is TEXT followed by the end of
 * the definition or a constraint, and not preceded by AS (a cast). */
static int text_column_type(const char *prev, size_t prev_len, const char *p)
{
    /* Called only inside CREATE TABLE and ALTER TABLE (see translate). */
    static const char *const next_ok[] = {"NOT", "NULL", "DEFAULT", "UNIQUE", "PRIMARY",
                                          "CHECK", "REFERENCES", "CONSTRAINT"};
    if (prev && word_is(prev, prev_len, "AS"))
        return 0;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0' || *p == ',' || *p == ')' || *p == ';')
        return 1;
    size_t n = 0;
    while (ident_char(p[n]))
        n++;
    for (size_t i = 0; i < sizeof next_ok / sizeof next_ok[0]; i++)
        if (word_is(p, n, next_ok[i]))
            return 1;
    return 0;
}

/* The walk behind pg_translate_sql (placeholders: one statement, `?`
 * numbered) and pg_translate_types (any number of statements, `?` left
 * alone). */
static int translate(const char *sql, int placeholders, char **out, int *nparams,
                     const char **why)
{
    size_t len = strlen(sql);
    /* "?" becomes at most "$65535" and "REAL" "DOUBLE PRECISION": six
     * bytes at most for one. */
    size_t size = len * 6 + 1;
    char *buf = malloc(size);
    if (!buf)
        return SM_ENOMEM;
    const char *p = sql;
    char *o = buf;
    int highest = 0, ended = 0, any = 0;
    const char *prev = NULL; /* the last word, for text_column_type */
    size_t prev_len = 0;
    /* Where a column's type can stand: the statement began CREATE ...
     * TABLE or ALTER TABLE (words counts its words). */
    int words = 0, table_ddl = 0, create = 0;
    *why = NULL;
    while (*p && !*why) {
        char c = *p;
        const char *with = NULL;
        size_t n;
        if ((c == '-' && p[1] == '-') || (c == '/' && p[1] == '*')) {
            copy_comment(&p, &o);
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';') {
            ended |= c == ';' && any;
            if (c == ';')
                words = table_ddl = create = 0;
            *o++ = *p++;
            continue;
        }
        if (ended && placeholders) {
            *why = "prepare wants exactly one SQL statement";
            break;
        }
        any = 1;
        if (c == '\'' || c == '"') {
            int e = c == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                    (p - 1 == sql || !ident_char(p[-2]));
            copy_quoted(&p, &o, c, e);
        } else if (c == '$' && isdigit((unsigned char)p[1]) && (p == sql || !ident_char(p[-1]))) {
            *why = "write placeholders as ? or ?N, not $N";
        } else if (c == '$' && (n = dollar_quoted(sql, p)) > 0) {
            memcpy(o, p, n);
            o += n;
            p += n;
        } else if ((n = type_word(sql, p, &with)) > 0) {
            size_t w = strlen(with);
            memcpy(o, with, w);
            o += w;
            prev = p;
            prev_len = n;
            p += n;
        } else if (c == '?' && placeholders) {
            long k = highest + 1L;
            p++;
            if (isdigit((unsigned char)*p)) {
                char *end;
                k = strtol(p, &end, 10);
                p = end;
            }
            if (k < 1 || k > PG_MAX_PARAMS) {
                *why = "placeholder index out of range (1..65535)";
                break;
            }
            o += snprintf(o, size - (size_t)(o - buf), "$%ld", k);
            if (k > highest)
                highest = (int)k;
        } else if (ident_char(c)) {
            /* A whole word, so that no type name is found inside one. */
            const char *word = p;
            while (ident_char(*p))
                *o++ = *p++;
            size_t wn = (size_t)(p - word);
            if (++words == 1) {
                create = word_is(word, wn, "CREATE");
                table_ddl = 0;
            } else if (words <= 3 && word_is(word, wn, "TABLE") &&
                       (create || (words == 2 && word_is(prev, prev_len, "ALTER")))) {
                table_ddl = 1;
            }
            if (!placeholders && table_ddl && word_is(word, wn, "TEXT") &&
                text_column_type(prev, prev_len, p)) {
                static const char collate[] = " COLLATE \"C\"";
                memcpy(o, collate, sizeof collate - 1);
                o += sizeof collate - 1;
            }
            prev = word;
            prev_len = wn;
        } else {
            *o++ = *p++;
        }
    }
    if (!*why && !any)
        *why = "no SQL statement";
    if (*why) {
        free(buf);
        return SM_EINVAL;
    }
    *o = '\0';
    *out = buf;
    if (nparams)
        *nparams = highest;
    return SM_OK;
}

int pg_translate_sql(const char *sql, char **out, int *nparams, const char **why)
{
    return translate(sql, 1, out, nparams, why);
}

int pg_translate_types(const char *sql, char **out, const char **why)
{
    return translate(sql, 0, out, NULL, why);
}

/* ---- statements -------------------------------------------------------- */

static char *copy_text(const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
    }
    return copy;
}

int pg_stmt_prepare(pg_db *db, const char *owner, const char *sql, pg_stmt **out)
{
    char *translated = NULL;
    const char *why = NULL;
    int nparams = 0;
    int status = pg_translate_sql(sql, &translated, &nparams, &why);
    if (status != SM_OK) {
        if (why)
            log_msg(SM_LOG_ERROR, owner, "%s: \"%s\"", why, sql);
        return status;
    }
    pg_stmt *st = calloc(1, sizeof *st);
    status = SM_ENOMEM;
    if (!st)
        goto fail;
    st->db = db;
    st->nparams = nparams;
    st->sql = copy_text(sql, strlen(sql));
    if (!st->sql || (nparams && !(st->values = calloc((size_t)nparams, sizeof *st->values))))
        goto fail;
    snprintf(st->name, sizeof st->name, "sm_%lu", ++db->next_name);
    /* Parameter types are left to the server, which infers each from
     * where it stands (a column compared or assigned, a LIMIT); values go
     * as text, which it converts. */
    PGresult *res = PQprepare(db->conn, st->name, translated, 0, NULL);
    if (!result_ok(res)) {
        char buf[512];
        log_msg(SM_LOG_ERROR, owner, "cannot prepare \"%s\": %s", sql,
                error_text(db, res, buf, sizeof buf));
        status = status_from_result(res) == SM_ENOMEM ? SM_ENOMEM : SM_ERROR;
        PQclear(res);
        st->name[0] = '\0'; /* nothing to deallocate */
        goto fail;
    }
    PQclear(res);
    free(translated);
    *out = st;
    return SM_OK;
fail:
    free(translated);
    if (st) {
        free(st->values);
        free(st->sql);
        free(st);
    }
    return status;
}

const char *pg_stmt_sql(const pg_stmt *st)
{
    return st->sql;
}

/* Takes ownership of text (NULL: SQL NULL, or out of memory if !is_null). */
static int bind_value(pg_stmt *st, const char *owner, int index, char *text, int is_null)
{
    int status = SM_OK;
    if (st->state != ST_READY)
        status = SM_ESTATE; /* as SQLite: stepped, not reset */
    else if (index < 1 || index > st->nparams)
        status = SM_EINVAL;
    else if (!text && !is_null)
        status = SM_ENOMEM;
    if (status != SM_OK) {
        log_msg(SM_LOG_ERROR, owner, "bind failed on \"%s\": %s", st->sql,
                status == SM_ESTATE ? "statement not reset"
                : status == SM_EINVAL ? "index out of range"
                                      : "out of memory");
        free(text);
        return status;
    }
    free(st->values[index - 1]);
    st->values[index - 1] = text;
    return SM_OK;
}

int pg_stmt_bind_int64(pg_stmt *st, const char *owner, int index, int64_t value)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    return bind_value(st, owner, index, copy_text(buf, strlen(buf)), 0);
}

int pg_stmt_bind_double(pg_stmt *st, const char *owner, int index, double value)
{
    /* 17 significant digits read back as the same double. */
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", value);
    return bind_value(st, owner, index, copy_text(buf, strlen(buf)), 0);
}

int pg_stmt_bind_text(pg_stmt *st, const char *owner, int index, const char *value, size_t len)
{
    if (!value)
        return bind_value(st, owner, index, NULL, 1);
    if (memchr(value, '\0', len)) {
        log_msg(SM_LOG_ERROR, owner, "bind failed on \"%s\": text holds a NUL byte", st->sql);
        return SM_EINVAL;
    }
    return bind_value(st, owner, index, copy_text(value, len), 0);
}

int pg_stmt_step(pg_stmt *st, const char *owner)
{
    if (st->state == ST_DONE) {
        /* SQLite runs a finished statement again, with the same bindings. */
        PQclear(st->res);
        st->res = NULL;
        st->state = ST_READY;
    }
    if (st->state == ST_READY) {
        PGresult *res = exec_prepared(st);
        if (!result_ok(res)) {
            char why[512];
            int status = status_from_result(res);
            error_text(st->db, res, why, sizeof why);
            if (status == SM_EEXIST)
                /* Expected in normal operation (a taken username, a duplicate). */
                log_msg(SM_LOG_DEBUG, owner, "constraint on \"%s\": %s", st->sql, why);
            else if (status == SM_EBUSY)
                log_msg(SM_LOG_WARNING, owner, "database busy on \"%s\": %s", st->sql, why);
            else
                log_msg(SM_LOG_ERROR, owner, "step failed on \"%s\": %s", st->sql, why);
            PQclear(res);
            st->state = ST_DONE; /* reset before binding again, as SQLite */
            return status == SM_EEXIST || status == SM_EBUSY ? status : SM_ERROR;
        }
        note_changes(st->db, res);
        st->res = res;
        st->row = -1;
        st->state = ST_ROWS;
    }
    if (++st->row < PQntuples(st->res))
        return SM_ROW;
    st->state = ST_DONE;
    return SM_DONE;
}

/* The column's text in the current row, NULL for SQL NULL or no row. */
static const char *cell(const pg_stmt *st, int col)
{
    if (st->state != ST_ROWS || col < 0 || col >= PQnfields(st->res) ||
        PQgetisnull(st->res, st->row, col))
        return NULL;
    return PQgetvalue(st->res, st->row, col);
}

int64_t pg_stmt_column_int64(const pg_stmt *st, int col)
{
    const char *v = cell(st, col);
    if (!v)
        return 0;
    if (strcmp(v, "t") == 0 || strcmp(v, "f") == 0) /* boolean */
        return v[0] == 't';
    return strtoll(v, NULL, 10);
}

double pg_stmt_column_double(const pg_stmt *st, int col)
{
    const char *v = cell(st, col);
    return v ? strtod(v, NULL) : 0.0;
}

const char *pg_stmt_column_text(const pg_stmt *st, int col)
{
    return cell(st, col);
}

int pg_stmt_column_is_null(const pg_stmt *st, int col)
{
    return cell(st, col) == NULL;
}

void pg_stmt_reset(pg_stmt *st)
{
    PQclear(st->res);
    st->res = NULL;
    st->state = ST_READY;
    for (int i = 0; i < st->nparams; i++) {
        free(st->values[i]);
        st->values[i] = NULL;
    }
}

void pg_stmt_finalize(pg_stmt *st)
{
    pg_stmt_reset(st);
    /* The server keeps a prepared statement until the session ends. In an
     * aborted transaction it would refuse DEALLOCATE: the statement then
     * stays until disconnection, which is harmless. */
    if (PQstatus(st->db->conn) == CONNECTION_OK &&
        PQtransactionStatus(st->db->conn) != PQTRANS_INERROR) {
        char sql[48];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", st->name);
        PGresult *res = PQexec(st->db->conn, sql);
        if (!result_ok(res))
            LOG_DEBUG("storage: %s failed: %s", sql, PQerrorMessage(st->db->conn));
        PQclear(res);
    }
    free(st->values);
    free(st->sql);
    free(st);
}
