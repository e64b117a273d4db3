/* The storage service on PostgreSQL (libpq), for cluster mode: one
 * connection, used by the logic thread alone, like SQLite's.
 *
 * Waits are bounded and measured (issue 14). Every exchange with the
 * server is one round trip (round_trip below) through libpq's
 * asynchronous API on a non-blocking connection: send, then poll() the
 * socket with the time left until the deadline, read what came
 * (PQconsumeInput) until a whole answer is there (PQisBusy). So no call
 * can wait longer than the deadline (the open's wait, 5 s by default),
 * whatever the server or the network do. When it passes, the connection
 * is dropped (PQfinish: PostgreSQL rolls back a transaction open on it)
 * and the call fails; a COMMIT that got no answer is an error, never a
 * success. The server cancels a statement itself at statement_timeout, a
 * fifth of the deadline earlier, so that a slow statement costs an error,
 * not the connection. Each round trip is counted and timed (pg_db_stats).
 *
 * A lost connection is replaced in the background (connector, below):
 * until then every call fails at once, and a transaction it held is
 * refused to the end. Statements carry the number of the connection they
 * were prepared on and are prepared again on a newer one, in the same
 * round trip as their next run.
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
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Between two connection attempts after a loss: from the first to the
 * last, doubling. */
#define PG_RECONNECT_FIRST_MS 100
#define PG_RECONNECT_MAX_MS 5000
/* Migrations may rebuild a table: their round trips get this many waits. */
#define PG_MIGRATION_WAIT_FACTOR 12

/* Seconds; fine at the low end, where a healthy round trip falls, and up
 * to twice the default deadline. */
const double storage_pg_wait_bounds[STORAGE_PG_WAIT_BUCKETS] = {
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,     0.25,   0.5,   1,      2.5,   5,    10};

/* Written by the logic thread (waits) and the connector (attempts, up),
 * read by anyone (metrics): relaxed atomics. */
struct pg_counters {
    atomic_ullong waits, timeouts, failures, refused, wait_ns, max_ns;
    atomic_ullong buckets[STORAGE_PG_WAIT_BUCKETS + 1];
    atomic_ullong losses, reconnects, attempts;
    atomic_int up;
};

/* Reconnecting happens on a thread of its own, not on the logic thread
 * through PQconnectStart/PQconnectPoll. Measured on loopback (PostgreSQL
 * 15, libpq 15, 50 connections each): trust authentication 3.2 ms median
 * (9.8 ms max), 0.2 ms of it client CPU; SCRAM-SHA-256, the default for
 * passwords, 8.6 ms median (26 ms max), 4.3 ms of it client CPU (9.5 ms
 * max): the proof's 4096 hashes, computed inside one PQconnectPoll call.
 * Driven from the logic thread, every attempt would stall it for that
 * CPU, TLS's handshake would add its own, and PQconnectStart resolves a
 * host name with a blocking getaddrinfo (a resolver timeout is seconds).
 * A thread may block as long as it likes; what the logic thread pays
 * instead, measured with the storage built -O2: a call while down 0.7 us
 * on average (15 us max: a mutex and a pointer test), and the call that
 * takes the new connection over 0.5 ms, including the join and the round
 * trip that prepares the statement again and runs it.
 *
 * The thread runs only while the connection is down: it waits the
 * backoff, connects (PQconnectdbParams, bounded by connect_timeout), and
 * on success leaves the connection in `made` and ends; the logic thread
 * takes it, under the lock, on its next call. */
typedef struct pg_connector {
    pthread_mutex_t lock;
    pthread_cond_t wake;  /* stop was set */
    pthread_t thread;
    int started;          /* logic thread: a thread to join */
    int stop;             /* lock */
    PGconn *made;         /* lock: a new connection, for the logic thread */
    unsigned failed;      /* lock: attempts failed since the loss */
    char why[256];        /* lock: the last failure */
} pg_connector;

struct pg_db {
    PGconn *conn;            /* NULL while the connection is lost */
    double wait;             /* seconds a round trip may take */
    char where[256];         /* host, port and database, for logs */
    /* The connection parameters, for connecting again; read by the
     * connector too, never changed after the open. */
    PQconninfoOption *opts;  /* owns most of the values */
    const char **keys, **vals;
    char *options;           /* the `options` value: statement_timeout first */
    char connect_timeout[16];
    unsigned long generation; /* of conn: 1 for the first, +1 for each new one */
    unsigned long next_name;  /* statement names: sm_1, sm_2, ... */
    int64_t changes;          /* rows of the last INSERT, UPDATE or DELETE */
    /* The transaction status after the last answer: libpq says
     * PQTRANS_UNKNOWN once the connection broke, which is too late. */
    PGTransactionStatusType idle_status;
    int tx_lost;              /* the caller's transaction went with a connection */
    /* BEGIN was asked for and not sent yet: it goes in the same round
     * trip as the transaction's first statement (one round trip fewer per
     * transaction, a seventh of a private message's). */
    int begin_pending;
    int tx_lost_logged;
    char why_logged[256];     /* the connector's last failure, as logged */
    double down_since;        /* monotonic, when conn was lost */
    pg_connector rc;
    struct pg_counters n;
};

enum { ST_READY, ST_ROWS, ST_DONE };

struct pg_stmt {
    pg_db *db;
    char name[32];
    char *sql;      /* the caller's text, for logs */
    char *pg_sql;   /* translated, for preparing again */
    unsigned long generation; /* the connection it is prepared on; 0: none */
    int nparams;
    char **values;  /* nparams text values; NULL is SQL NULL */
    PGresult *res;  /* the whole result of the run in progress */
    int row;        /* the row the columns read, in res */
    int state;      /* ST_READY: may bind; ST_ROWS: res read; ST_DONE: reset first */
};

#define PG_MAX_PARAMS 65535 /* the protocol's limit (a 16-bit count) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

/* libpq's messages span lines, indented: one log line each, one space
 * between words. */
static void one_line(char *buf)
{
    char *out = buf;
    for (const char *c = buf; *c; c++) {
        int blank = *c == '\n' || *c == '\t' || *c == ' ';
        if (!blank)
            *out++ = *c;
        else if (out > buf && out[-1] != ' ')
            *out++ = ' ';
    }
    while (out > buf && out[-1] == ' ')
        out--;
    *out = '\0';
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
    one_line(buf);
    return buf;
}

static int result_ok(const PGresult *res)
{
    ExecStatusType t = PQresultStatus(res);
    return t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
}

/* An answer that says the session is over: the server is shutting down
 * or crashed (57P01..57P03), or a connection exception (class 08). */
static int session_ended(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && (strncmp(state, "57P0", 4) == 0 || strncmp(state, "08", 2) == 0);
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

/* ---- counting the waits ------------------------------------------------- */

#define COUNT(c) atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)

enum { WAIT_ANSWERED, WAIT_TIMEOUT, WAIT_FAILED };

static void count_wait(pg_db *db, double seconds, int outcome)
{
    struct pg_counters *n = &db->n;
    unsigned long long ns = seconds > 0 ? (unsigned long long)(seconds * 1e9) : 0;
    size_t b = 0;
    while (b < STORAGE_PG_WAIT_BUCKETS && seconds > storage_pg_wait_bounds[b])
        b++;
    COUNT(n->waits);
    COUNT(n->buckets[b]);
    atomic_fetch_add_explicit(&n->wait_ns, ns, memory_order_relaxed);
    /* The logic thread is the only writer. */
    if (ns > atomic_load_explicit(&n->max_ns, memory_order_relaxed))
        atomic_store_explicit(&n->max_ns, ns, memory_order_relaxed);
    if (outcome == WAIT_TIMEOUT)
        COUNT(n->timeouts);
    else if (outcome == WAIT_FAILED)
        COUNT(n->failures);
}

void pg_db_stats(const pg_db *db, storage_pg_stats *out)
{
    /* The counters are atomics the logic thread updates while a scrape
     * reads them: the const is the caller's promise, not the memory's. */
    struct pg_counters *n = (struct pg_counters *)&db->n;
    memset(out, 0, sizeof *out);
    out->up = atomic_load_explicit(&n->up, memory_order_relaxed);
#define LOAD(x) atomic_load_explicit(&n->x, memory_order_relaxed)
    out->waits = LOAD(waits);
    out->timeouts = LOAD(timeouts);
    out->failures = LOAD(failures);
    out->refused = LOAD(refused);
    out->wait_seconds = (double)LOAD(wait_ns) / 1e9;
    out->wait_max = (double)LOAD(max_ns) / 1e9;
    for (size_t i = 0; i <= STORAGE_PG_WAIT_BUCKETS; i++)
        out->wait_buckets[i] = LOAD(buckets[i]);
    out->losses = LOAD(losses);
    out->reconnects = LOAD(reconnects);
    out->attempts = LOAD(attempts);
#undef LOAD
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

/* The connection parameters: the parsed ones plus defaults the caller did
 * not set: a connect timeout (the wait, whole seconds), UTF-8 (what every
 * column holds), an application name for pg_stat_activity, and
 * statement_timeout in `options`, before the caller's own options so that
 * one set there wins. Startup options cost no round trip and hold on
 * every connection, the ones made again too. */
static int build_params(pg_db *db)
{
    const PQconninfoOption *opts = db->opts;
    snprintf(db->connect_timeout, sizeof db->connect_timeout, "%.0f", ceil(db->wait));
    const char *const defaults[][2] = {
        {"connect_timeout", db->connect_timeout},
        {"client_encoding", "UTF8"},
        {"application_name", "safemessenger"},
    };
    size_t n = 0, ndefaults = sizeof defaults / sizeof defaults[0];
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    const char *theirs = option(opts, "options");
    long timeout_ms = (long)(db->wait * 800.0); /* a fifth before the deadline */
    size_t len = 64 + (theirs ? strlen(theirs) : 0);
    db->keys = calloc(n + ndefaults + 2, sizeof *db->keys);
    db->vals = calloc(n + ndefaults + 2, sizeof *db->vals);
    db->options = malloc(len);
    if (!db->keys || !db->vals || !db->options)
        return SM_ENOMEM;
    snprintf(db->options, len, "-c statement_timeout=%ld%s%s", timeout_ms > 0 ? timeout_ms : 1,
             theirs ? " " : "", theirs ? theirs : "");
    size_t k = 0;
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val && strcmp(o->keyword, "options") != 0) {
            db->keys[k] = o->keyword;
            db->vals[k++] = o->val;
        }
    for (size_t i = 0; i < ndefaults; i++)
        if (!option(opts, defaults[i][0])) {
            db->keys[k] = defaults[i][0];
            db->vals[k++] = defaults[i][1];
        }
    db->keys[k] = "options";
    db->vals[k++] = db->options;
    return SM_OK;
}

/* Blocks until connected or failed (connect_timeout): the open, at the
 * start, and the connector thread. */
static PGconn *connect_now(const pg_db *db)
{
    return PQconnectdbParams(db->keys, db->vals, 0);
}

/* Makes conn the connection the calls use: non-blocking (a send never
 * waits for the socket: round_trip polls it with the time left, and
 * PQfinish's goodbye cannot hang on a full socket either). */
static int use_connection(pg_db *db, PGconn *conn)
{
    if (PQsetnonblocking(conn, 1) != 0)
        return -1;
    PQsetNoticeProcessor(conn, notice_to_log, NULL);
    db->conn = conn;
    db->generation++;
    db->idle_status = PQtransactionStatus(conn);
    atomic_store_explicit(&db->n.up, 1, memory_order_relaxed);
    return 0;
}

/* ---- the connector ------------------------------------------------------ */

static void *connector_main(void *arg)
{
    pg_db *db = arg;
    pg_connector *r = &db->rc;
    long backoff_ms = PG_RECONNECT_FIRST_MS;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += backoff_ms / 1000;
        until.tv_nsec += (backoff_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->wake, &r->lock, &until) != ETIMEDOUT)
            ;
        if (r->stop)
            break;
        pthread_mutex_unlock(&r->lock);
        PGconn *conn = connect_now(db);
        COUNT(db->n.attempts);
        pthread_mutex_lock(&r->lock);
        if (conn && PQstatus(conn) == CONNECTION_OK) {
            r->made = conn;
            atomic_store_explicit(&db->n.up, 1, memory_order_relaxed);
            break;
        }
        r->failed++;
        snprintf(r->why, sizeof r->why, "%s", conn ? PQerrorMessage(conn) : "out of memory");
        one_line(r->why);
        PQfinish(conn);
        backoff_ms = backoff_ms * 2 > PG_RECONNECT_MAX_MS ? PG_RECONNECT_MAX_MS : backoff_ms * 2;
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* Logic thread: starts reconnecting, unless it runs already. A failure
 * is logged, and tried again on the next call. */
static void start_connector(pg_db *db)
{
    pg_connector *r = &db->rc;
    if (r->started)
        return;
    r->failed = 0;
    r->why[0] = '\0';
    int rc = pthread_create(&r->thread, NULL, connector_main, db);
    if (rc != 0) {
        LOG_ERROR("storage: cannot start reconnecting to PostgreSQL: %s", strerror(rc));
        return;
    }
    r->started = 1;
}

/* Logic thread: stops the connector (waiting for an attempt in progress)
 * and closes a connection it made and nobody took. */
static void stop_connector(pg_db *db)
{
    pg_connector *r = &db->rc;
    if (!r->started)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    r->started = 0;
    r->stop = 0;
    PQfinish(r->made);
    r->made = NULL;
}

/* Logic thread, while conn is NULL: takes the connection the connector
 * made, if it has. 1 when there is one now. */
static int take_restored(pg_db *db)
{
    pg_connector *r = &db->rc;
    if (!r->started) {
        start_connector(db);
        return 0;
    }
    char why[sizeof r->why];
    pthread_mutex_lock(&r->lock);
    PGconn *conn = r->made;
    unsigned failed = r->failed;
    r->made = NULL;
    memcpy(why, r->why, sizeof why);
    pthread_mutex_unlock(&r->lock);
    /* Why reconnecting fails (a password changed, the database gone) is
     * worth a line: once per reason, not per attempt. */
    if (!conn && why[0] && strcmp(why, db->why_logged) != 0) {
        memcpy(db->why_logged, why, sizeof db->why_logged);
        LOG_WARN("storage: reconnecting to PostgreSQL (%s) fails, retrying: %s", db->where, why);
    }
    if (!conn)
        return 0;
    /* It ended after leaving conn: the join does not wait. */
    pthread_join(r->thread, NULL);
    r->started = 0;
    if (use_connection(db, conn) != 0) {
        LOG_ERROR("storage: PostgreSQL connection made again (%s) but unusable: %s", db->where,
                  PQerrorMessage(conn));
        PQfinish(conn);
        atomic_store_explicit(&db->n.up, 0, memory_order_relaxed);
        start_connector(db);
        return 0;
    }
    COUNT(db->n.reconnects);
    db->why_logged[0] = '\0';
    LOG_INFO("storage: PostgreSQL connection restored (%s) after %.1f s and %u failed attempt%s",
             db->where, now_s() - db->down_since, failed, failed == 1 ? "" : "s");
    return 1;
}

/* The connection failed or the deadline passed during `what`: drop it
 * (PostgreSQL rolls back a transaction open on it when it notices) and
 * start connecting again. Logged here, once per outage. */
static void connection_lost(pg_db *db, const char *what, const char *why)
{
    int in_tx = db->idle_status == PQTRANS_INTRANS || db->idle_status == PQTRANS_INERROR;
    if (in_tx) {
        db->tx_lost = 1;
        db->tx_lost_logged = 0;
    }
    PQfinish(db->conn);
    db->conn = NULL;
    db->idle_status = PQTRANS_IDLE;
    db->down_since = now_s();
    COUNT(db->n.losses);
    atomic_store_explicit(&db->n.up, 0, memory_order_relaxed);
    LOG_ERROR("storage: PostgreSQL connection lost (%s) during \"%.200s\": %s%s;"
              " calls fail until it is restored",
              db->where, what, why,
              !in_tx ? ""
              : strcmp(what, "COMMIT") == 0
                  ? "; the COMMIT got no answer: reported as failed, its outcome is unknown"
                  : "; the open transaction is lost (the server rolls it back)");
    start_connector(db);
}

/* 1 when a call may go to the server now: a connection is up (maybe
 * the connector's, taken now) and no lost transaction is still open.
 * Otherwise the call fails at once, without a log line per call. */
static int usable(pg_db *db, const char *what)
{
    if (!db->conn && !take_restored(db)) {
        COUNT(db->n.refused);
        LOG_DEBUG("storage: PostgreSQL is down (%s): \"%.200s\" not sent", db->where, what);
        return 0;
    }
    if (db->tx_lost) {
        COUNT(db->n.refused);
        if (!db->tx_lost_logged)
            LOG_ERROR("storage: \"%.200s\" refused: its transaction was lost with the PostgreSQL"
                      " connection; every call fails until it is rolled back",
                      what);
        db->tx_lost_logged = 1;
        return 0;
    }
    return 1;
}

/* ---- round trips -------------------------------------------------------- */

/* One query of a round trip. */
enum { Q_SIMPLE, Q_PARAMS, Q_PREPARE, Q_PREPARED };

typedef struct pg_query {
    int kind;
    const char *sql;  /* SIMPLE (several statements allowed), PARAMS, PREPARE */
    const char *name; /* PREPARE, PREPARED */
    int nparams;      /* PARAMS, PREPARED */
    const char *const *values;
} pg_query;

#define PG_MAX_BATCH 5

static int send_query(PGconn *c, const pg_query *q)
{
    switch (q->kind) {
    case Q_SIMPLE:
        return PQsendQuery(c, q->sql);
    case Q_PARAMS:
        return PQsendQueryParams(c, q->sql, q->nparams, NULL, q->values, NULL, NULL, 0);
    case Q_PREPARE:
        /* Parameter types are left to the server, which infers each from
         * where it stands (a column compared or assigned, a LIMIT); values
         * go as text, which it converts. */
        return PQsendPrepare(c, q->name, q->sql, 0, NULL);
    default:
        return PQsendQueryPrepared(c, q->name, q->nparams, q->values, NULL, NULL, 0);
    }
}

/* Sends what libpq holds and reads until PQgetResult can answer without
 * blocking. 0; -1 when the connection failed or (*timed_out set) the
 * deadline passed. */
static int await_result(PGconn *c, double deadline, int *timed_out)
{
    for (;;) {
        int unsent = PQflush(c);
        if (unsent < 0 || !PQconsumeInput(c))
            return -1;
        if (!unsent && !PQisBusy(c))
            return 0;
        double left = deadline - now_s();
        if (left <= 0) {
            *timed_out = 1;
            return -1;
        }
        struct pollfd p = {.fd = PQsocket(c), .events = (short)(POLLIN | (unsent ? POLLOUT : 0))};
        /* Rounded up: a poll that returns early would spin. */
        if (poll(&p, 1, (int)ceil(left * 1000.0)) < 0 && errno != EINTR)
            return -1;
    }
}

/* The results of one query, or of a pipeline: res[i] the i-th query's
 * (a simple query's last, which is its error if one failed: the server
 * stops there); 0, or -1 as await_result. */
static int collect(PGconn *c, size_t n, PGresult **res, double deadline, int *timed_out)
{
    size_t i = 0;
    for (;;) {
        if (await_result(c, deadline, timed_out) != 0)
            return -1;
        PGresult *r = PQgetResult(c);
        if (!r) {
            /* The end of a query's results; alone, the end of all. */
            if (n == 1)
                return 0;
            if (++i > n)
                return -1; /* the sync never came: libpq and we disagree */
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return 0;
        }
        if (n == 1) {
            PQclear(res[0]);
            res[0] = r;
        } else if (i < n && !res[i]) {
            res[i] = r;
        } else {
            PQclear(r);
        }
    }
}

/* One round trip: sends q[0..n-1] (n > 1: in one pipeline, ended by a
 * sync; then no Q_SIMPLE) and waits for every answer, until now + wait at
 * most; counts and times the wait. SM_OK with res[i] the i-th query's
 * result (each may be an error, or PGRES_PIPELINE_ABORTED after one).
 * SM_ERROR, every res[i] NULL, when there was no connection (refused at
 * once) or it failed or the deadline passed: then it is dropped, logged
 * once, and a new one is made in the background. `what` names the call
 * in that log line: SQL as the caller wrote it, never a bound value. */
static int round_trip(pg_db *db, const char *what, const pg_query *q, size_t n, PGresult **res,
                      double wait)
{
    for (size_t i = 0; i < n; i++)
        res[i] = NULL;
    if (!usable(db, what))
        return SM_ERROR;
    PGconn *c = db->conn;
    double start = now_s();
    int timed_out = 0, ok = n == 1 || PQenterPipelineMode(c);
    for (size_t i = 0; ok && i < n; i++)
        ok = send_query(c, &q[i]);
    if (ok && n > 1)
        ok = PQpipelineSync(c);
    if (ok)
        ok = collect(c, n, res, start + wait, &timed_out) == 0;
    if (ok && n > 1)
        ok = PQexitPipelineMode(c);
    count_wait(db, now_s() - start, ok ? WAIT_ANSWERED : timed_out ? WAIT_TIMEOUT : WAIT_FAILED);
    char why[512] = "";
    if (!ok && timed_out)
        snprintf(why, sizeof why, "no answer within %.1f s", wait);
    else if (!ok || PQstatus(c) == CONNECTION_BAD)
        snprintf(why, sizeof why, "%s", PQerrorMessage(c));
    for (size_t i = 0; ok && i < n; i++)
        if (session_ended(res[i])) {
            error_text(db, res[i], why, sizeof why);
            ok = 0;
        }
    if (ok && PQstatus(c) != CONNECTION_BAD) {
        db->idle_status = PQtransactionStatus(c);
        return SM_OK;
    }
    for (size_t i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
    one_line(why);
    connection_lost(db, what, why[0] ? why : "connection failed");
    return SM_ERROR;
}

/* One simple query (no parameters, one or more statements): its result,
 * NULL when it had no answer (round_trip said why). */
static PGresult *exec_simple(pg_db *db, const char *sql, double wait)
{
    pg_query q = {.kind = Q_SIMPLE, .sql = sql};
    PGresult *res;
    return round_trip(db, sql, &q, 1, &res, wait) == SM_OK ? res : NULL;
}

/* ---- opening and closing ------------------------------------------------ */

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

static void free_db(pg_db *db)
{
    stop_connector(db);
    PQfinish(db->conn);
    pthread_cond_destroy(&db->rc.wake);
    pthread_mutex_destroy(&db->rc.lock);
    PQconninfoFree(db->opts);
    free(db->keys);
    free(db->vals);
    free(db->options);
    free(db);
}

static pg_db *new_db(PQconninfoOption *opts, double wait)
{
    pg_db *db = calloc(1, sizeof *db);
    pthread_condattr_t attr;
    if (!db || pthread_condattr_init(&attr) != 0) {
        free(db);
        return NULL;
    }
    /* The backoff is measured on the monotonic clock, as is the wait. */
    int ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&db->rc.wake, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok || pthread_mutex_init(&db->rc.lock, NULL) != 0) {
        if (ok)
            pthread_cond_destroy(&db->rc.wake);
        free(db);
        return NULL;
    }
    db->opts = opts;
    db->wait = wait;
    describe(opts, db->where, sizeof db->where);
    return db;
}

int pg_db_open(const char *conninfo, double wait, pg_db **out)
{
    if (!conninfo || !out || isnan(wait) || wait < 0 || wait > STORAGE_PG_WAIT_MAX_S)
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
    pg_db *db = new_db(opts, wait > 0 ? wait : STORAGE_PG_WAIT_S);
    if (!db) {
        PQconninfoFree(opts);
        return SM_ENOMEM;
    }
    if (build_params(db) != SM_OK) {
        free_db(db);
        return SM_ENOMEM;
    }
    PGconn *conn = connect_now(db);
    char why[512];
    if (!conn || PQstatus(conn) != CONNECTION_OK || use_connection(db, conn) != 0) {
        snprintf(why, sizeof why, "%s", conn ? PQerrorMessage(conn) : "out of memory");
        one_line(why);
        LOG_ERROR("storage: cannot connect to PostgreSQL (%s): %s", db->where, why);
        PQfinish(conn);
        free_db(db);
        return conn ? SM_ERROR : SM_ENOMEM;
    }
    /* One simple query: its statements run in one implicit transaction. */
    PGresult *res = exec_simple(db, create_core_tables, db->wait);
    if (!result_ok(res)) {
        LOG_ERROR("storage: cannot create the core's tables on PostgreSQL (%s): %s", db->where,
                  error_text(db, res, why, sizeof why));
        PQclear(res);
        free_db(db);
        return SM_ERROR;
    }
    PQclear(res);
    int version = PQserverVersion(db->conn);
    LOG_INFO("storage: PostgreSQL %d.%d at %s, %.1f s per round trip at most", version / 10000,
             version % 10000, db->where, db->wait);
    *out = db;
    return SM_OK;
}

void pg_db_close(pg_db *db)
{
    if (!db)
        return;
    if (pg_db_in_transaction(db)) {
        LOG_WARN("storage: transaction left open at close, rolling back");
        if (db->conn && !db->tx_lost)
            PQclear(exec_simple(db, "ROLLBACK", db->wait));
    }
    free_db(db);
}

/* ---- statement-level rollback ------------------------------------------ */

/* Inside a transaction, a failed statement leaves PostgreSQL's whole
 * transaction aborted; SQLite undoes that statement only and the
 * transaction goes on. Each statement in a transaction therefore runs
 * under a savepoint, released after it, rolled back to if it failed. */
#define SAVEPOINT_SQL "SAVEPOINT sm_stmt"
#define RELEASE_SQL "RELEASE SAVEPOINT sm_stmt"
#define UNDO_SQL "ROLLBACK TO SAVEPOINT sm_stmt; RELEASE SAVEPOINT sm_stmt"

/* After a round trip (idle_status is the server's last word). */
static int in_open_transaction(const pg_db *db)
{
    return db->idle_status == PQTRANS_INTRANS;
}

/* After the guarded statement: release, or undo it if it failed. A
 * failure here leaves the transaction aborted; the commit reports it. */
static void end_savepoint(pg_db *db, int failed)
{
    PGresult *res = exec_simple(db, failed ? UNDO_SQL : RELEASE_SQL, db->wait);
    if (res && !result_ok(res)) {
        char why[256];
        LOG_ERROR("storage: %s failed: %s", failed ? "undoing a statement" : "RELEASE SAVEPOINT",
                  error_text(db, res, why, sizeof why));
    }
    PQclear(res);
}

/* Sends a BEGIN still pending, alone (a simple query cannot join a
 * pipeline). A BEGIN that got no answer loses the transaction: nothing
 * after it may run outside one. */
static int send_pending_begin(pg_db *db)
{
    if (!db->begin_pending)
        return SM_OK;
    db->begin_pending = 0;
    PGresult *res = exec_simple(db, "BEGIN", db->wait);
    int ok = res && result_ok(res);
    PQclear(res);
    if (!ok && !db->conn)
        db->tx_lost = 1;
    return ok ? SM_OK : SM_ERROR;
}

/* A simple query (one or more statements, no parameters), guarded as
 * above inside a transaction: savepoint, query and release are three
 * round trips (a simple query cannot join a pipeline). NULL when the
 * connection is gone. */
static PGresult *exec_guarded(pg_db *db, const char *sql)
{
    if (!usable(db, sql) || send_pending_begin(db) != SM_OK)
        return NULL;
    int guard = in_open_transaction(db);
    if (guard) {
        PGresult *sp = exec_simple(db, SAVEPOINT_SQL, db->wait);
        if (!result_ok(sp))
            return sp;
        PQclear(sp);
    }
    PGresult *res = exec_simple(db, sql, db->wait);
    if (guard && res)
        end_savepoint(db, !result_ok(res));
    return res;
}

/* One statement with parameters (q: PARAMS, PREPARE or PREPARED), after
 * `prep` (a PREPARE, or NULL) when the statement must be prepared on this
 * connection first; in a transaction, under a savepoint. All in one round
 * trip (a pipeline: savepoint, prepare, statement, release); only a
 * failure in a transaction costs a second one, to undo it. *out: the
 * statement's result, or the first failed one's before it; *prepared set
 * when prep succeeded. SM_ERROR when the connection is gone. */
static int run_statement(pg_db *db, const char *what, const pg_query *prep, const pg_query *q,
                         PGresult **out, int *prepared)
{
    if (!usable(db, what))
        return SM_ERROR;
    static const pg_query begin = {.kind = Q_PARAMS, .sql = "BEGIN"};
    static const pg_query savepoint = {.kind = Q_PARAMS, .sql = SAVEPOINT_SQL};
    static const pg_query release = {.kind = Q_PARAMS, .sql = RELEASE_SQL};
    pg_query batch[PG_MAX_BATCH];
    PGresult *res[PG_MAX_BATCH];
    size_t n = 0, at_prep = PG_MAX_BATCH, at_q;
    int began = db->begin_pending;
    int guard = began || in_open_transaction(db);
    db->begin_pending = 0;
    if (began)
        batch[n++] = begin;
    if (guard)
        batch[n++] = savepoint;
    if (prep) {
        at_prep = n;
        batch[n++] = *prep;
    }
    at_q = n;
    batch[n++] = *q;
    if (guard)
        batch[n++] = release;
    if (round_trip(db, what, batch, n, res, db->wait) != SM_OK) {
        /* The connection went with the BEGIN: the transaction is lost
         * (connection_lost saw no transaction open yet). */
        if (began && !db->conn)
            db->tx_lost = 1;
        return SM_ERROR;
    }
    if (prepared)
        *prepared = at_prep < n && result_ok(res[at_prep]);
    size_t answer = at_q;
    for (size_t i = 0; i < at_q; i++)
        if (!result_ok(res[i])) {
            answer = i;
            break;
        }
    *out = res[answer];
    res[answer] = NULL;
    if (guard && answer == at_q && result_ok(*out) && !result_ok(res[n - 1])) {
        /* The transaction is aborted now: the commit will say so. */
        char why[256];
        LOG_ERROR("storage: RELEASE SAVEPOINT failed: %s",
                  error_text(db, res[n - 1], why, sizeof why));
    }
    for (size_t i = 0; i < n; i++)
        PQclear(res[i]);
    /* Without the savepoint the statement did not run: nothing to undo. */
    if (guard && answer > 0 && !result_ok(*out))
        end_savepoint(db, 1);
    return SM_OK;
}

/* ---- transactions ------------------------------------------------------ */

static int run_tx(pg_db *db, const char *sql)
{
    PGresult *res = exec_simple(db, sql, db->wait);
    if (!res)
        return SM_ERROR; /* logged as the connection's loss */
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
    if (db->tx_lost || db->begin_pending)
        return 1;
    if (!db->conn)
        return 0;
    PGTransactionStatusType t = PQtransactionStatus(db->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

int pg_db_begin(pg_db *db)
{
    if (pg_db_in_transaction(db))
        return SM_ESTATE;
    /* Fails at once while the connection is down, as a BEGIN sent would. */
    if (!usable(db, "BEGIN"))
        return SM_ERROR;
    db->begin_pending = 1;
    return SM_OK;
}

int pg_db_commit(pg_db *db)
{
    if (db->tx_lost) {
        /* Its statements went to a connection that is gone, and no COMMIT
         * was sent on it: the server rolled them back. */
        db->tx_lost = 0;
        LOG_ERROR("storage: COMMIT refused: the transaction was lost with the PostgreSQL"
                  " connection, nothing of it is stored");
        return SM_ERROR;
    }
    if (!pg_db_in_transaction(db))
        return SM_ESTATE;
    if (db->begin_pending) {
        db->begin_pending = 0; /* nothing was sent: nothing to commit */
        return SM_OK;
    }
    /* COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK:
     * only the tag COMMIT means the rows are stored. No answer at all is
     * a failure too (round_trip logged it), though the server may have
     * committed: the caller must not believe anything was stored. */
    PGresult *res = exec_simple(db, "COMMIT", db->wait);
    if (!res) {
        db->tx_lost = 0;
        return SM_ERROR;
    }
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
    if (pg_db_in_transaction(db))
        run_tx(db, "ROLLBACK");
    db->tx_lost = 0;
    return SM_ERROR;
}

int pg_db_rollback(pg_db *db)
{
    if (db->tx_lost) {
        db->tx_lost = 0; /* the server rolled it back when the connection went */
        return SM_OK;
    }
    if (!pg_db_in_transaction(db))
        return SM_ESTATE;
    if (db->begin_pending) {
        db->begin_pending = 0;
        return SM_OK;
    }
    PGresult *res = exec_simple(db, "ROLLBACK", db->wait);
    if (!res) {
        db->tx_lost = 0; /* nor is there a transaction without a connection */
        return SM_OK;
    }
    int ok = result_ok(res);
    if (!ok) {
        char why[256];
        log_msg(SM_LOG_ERROR, "core", "SQL failed (ROLLBACK): %s",
                error_text(db, res, why, sizeof why));
    }
    PQclear(res);
    return ok ? SM_OK : SM_ERROR;
}

/* PostgreSQL has no rowid: the id of the row just inserted is the value
 * its identity (or serial) column took from its sequence, which is
 * lastval(), the session's most recent nextval. So it is right after an
 * INSERT into a table whose key is such a column, as every plugin table
 * that reads it must have. One round trip, under a savepoint inside a
 * transaction (lastval() fails before any nextval, and a failure must
 * not abort the transaction). 0 (and a log line) when no sequence was
 * used yet in this session, as SQLite gives 0 before any insert, or
 * when the connection is gone. */
int64_t pg_db_last_insert_id(pg_db *db)
{
    pg_query q = {.kind = Q_PARAMS, .sql = "SELECT lastval()"};
    PGresult *res = NULL;
    int64_t id = 0;
    if (run_statement(db, q.sql, NULL, &q, &res, NULL) != SM_OK)
        return 0;
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

int pg_db_session_option(pg_db *db, const char *name, const char *value)
{
    /* Ahead of the rest: the caller's own options, last, still win. */
    size_t len = strlen(db->options) + strlen(name) + strlen(value) + 8;
    char *grown = malloc(len);
    if (!grown)
        return SM_ENOMEM;
    snprintf(grown, len, "-c %s=%s %s", name, value, db->options);
    for (size_t k = 0; db->keys[k]; k++)
        if (db->vals[k] == db->options)
            db->vals[k] = grown;
    free(db->options);
    db->options = grown;
    char sql[256];
    snprintf(sql, sizeof sql, "SET %s = %s", name, value);
    return pg_db_exec(db, "core", sql);
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
    if (!res)
        return SM_ERROR;
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
    pg_query q = {.kind = Q_PARAMS, .sql = sql, .nparams = n, .values = params};
    PGresult *res;
    if (send_pending_begin(db) != SM_OK || round_trip(db, sql, &q, 1, &res, db->wait) != SM_OK)
        return NULL;
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
    char version[16], at[32], why[512], begin[96];
    snprintf(version, sizeof version, "%d", m->version);
    snprintf(at, sizeof at, "%.17g", applied_at);
    /* A migration may rebuild a table: a longer wait, and the server's
     * cancel a fifth before it, for this transaction only. */
    double wait = db->wait * PG_MIGRATION_WAIT_FACTOR;
    snprintf(begin, sizeof begin, "BEGIN; SET LOCAL statement_timeout = %ld",
             (long)(wait * 800.0));
    const char *params[] = {owner, version, at};
    char *text = NULL;
    const char *bad = NULL;
    if (pg_translate_types(m->sql, &text, &bad) != SM_OK) {
        log_msg(SM_LOG_ERROR, owner, "migration %d failed: %s", m->version,
                bad ? bad : "out of memory");
        return -1;
    }
    pg_query record = {.kind = Q_PARAMS,
                       .sql = "INSERT INTO sm_migrations(owner, version, applied_at)"
                              " VALUES($1, $2, $3)",
                       .nparams = 3,
                       .values = params};
    PGresult *res = exec_simple(db, begin, db->wait);
    if (!result_ok(res))
        goto fail;
    PQclear(res);
    /* A simple query: the migration may hold several statements. */
    res = exec_simple(db, text, wait);
    if (!result_ok(res))
        goto fail;
    PQclear(res);
    if (round_trip(db, record.sql, &record, 1, &res, db->wait) != SM_OK || !result_ok(res))
        goto fail;
    PQclear(res);
    res = exec_simple(db, "COMMIT", wait);
    if (!result_ok(res) || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        goto fail;
    PQclear(res);
    free(text);
    log_msg(SM_LOG_INFO, owner, "applied migration %d", m->version);
    return 0;
fail:
    free(text);
    log_msg(SM_LOG_ERROR, owner, "migration %d failed: %s", m->version,
            res ? error_text(db, res, why, sizeof why) : "no answer from PostgreSQL");
    PQclear(res);
    db->tx_lost = 0; /* the server rolled back what the connection held */
    if (pg_db_in_transaction(db))
        PQclear(exec_simple(db, "ROLLBACK", db->wait));
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
    st->pg_sql = translated;
    translated = NULL;
    st->sql = copy_text(sql, strlen(sql));
    if (!st->sql || (nparams && !(st->values = calloc((size_t)nparams, sizeof *st->values))))
        goto fail;
    snprintf(st->name, sizeof st->name, "sm_%lu", ++db->next_name);
    /* Prepared now, so that a mistake shows at once, not at the first
     * step. */
    pg_query q = {.kind = Q_PREPARE, .sql = st->pg_sql, .name = st->name};
    PGresult *res = NULL;
    status = SM_ERROR;
    if (run_statement(db, sql, NULL, &q, &res, NULL) != SM_OK)
        goto fail; /* no connection: logged */
    if (!result_ok(res)) {
        char buf[512];
        log_msg(SM_LOG_ERROR, owner, "cannot prepare \"%s\": %s", sql,
                error_text(db, res, buf, sizeof buf));
        status = status_from_result(res) == SM_ENOMEM ? SM_ENOMEM : SM_ERROR;
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    st->generation = db->generation;
    *out = st;
    return SM_OK;
fail:
    free(translated);
    if (st) {
        free(st->values);
        free(st->sql);
        free(st->pg_sql);
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

/* Runs the statement with its bindings; prepared again first, in the same
 * round trip, when it was prepared on an older connection. SM_OK with
 * *out its result, SM_ERROR when the connection is gone. */
static int exec_prepared(pg_stmt *st, PGresult **out)
{
    pg_db *db = st->db;
    if (!usable(db, st->sql))
        return SM_ERROR;
    pg_query prep = {.kind = Q_PREPARE, .sql = st->pg_sql, .name = st->name};
    pg_query q = {.kind = Q_PREPARED,
                  .name = st->name,
                  .nparams = st->nparams,
                  .values = (const char *const *)st->values};
    int stale = st->generation != db->generation, prepared = 0;
    if (run_statement(db, st->sql, stale ? &prep : NULL, &q, out, &prepared) != SM_OK)
        return SM_ERROR;
    if (prepared)
        st->generation = db->generation;
    return SM_OK;
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
        PGresult *res = NULL;
        if (exec_prepared(st, &res) != SM_OK) {
            st->state = ST_DONE; /* no connection: logged once, not per call */
            return SM_ERROR;
        }
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
    /* The server keeps a prepared statement until the session ends: one
     * prepared on a connection since lost is gone with it. In an aborted
     * transaction the server would refuse DEALLOCATE: the statement then
     * stays until disconnection, which is harmless. */
    pg_db *db = st->db;
    if (db->conn && st->generation == db->generation && !db->tx_lost &&
        db->idle_status != PQTRANS_INERROR) {
        char sql[48];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", st->name);
        PGresult *res = exec_simple(db, sql, db->wait);
        if (res && !result_ok(res))
            LOG_DEBUG("storage: %s failed: %s", sql, PQerrorMessage(db->conn));
        PQclear(res);
    }
    free(st->values);
    free(st->sql);
    free(st->pg_sql);
    free(st);
}
