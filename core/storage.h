/* Storage: the one SQLite database in WAL mode (or, in cluster mode, a
 * PostgreSQL database: storage_open_pg), opened by the core, and the
 * statement API that plugins reach through the host table. Every plugin's
 * migrations are recorded in table sm_migrations(owner, version, applied_at). */
#ifndef SM_CORE_STORAGE_H
#define SM_CORE_STORAGE_H

#include <stdint.h>
#include "safemessenger/plugin.h"

typedef struct storage storage;

/* Opens (creating if needed) the database, sets journal_mode=WAL,
 * synchronous ("off", "normal", "full", "extra"), foreign_keys=ON and a busy
 * timeout, and creates sm_migrations and sm_meta. path ":memory:" gives an
 * in-memory database (the test host). The parent directory is created 0700
 * if missing; the file and its -wal/-shm are made 0600. A file database is
 * locked ("<path>.lock", flock) for as long as it is open: a second server
 * on it is refused, naming the first one's pid. */
int storage_open(const char *path, const char *synchronous, storage **out);
/* Seconds one round trip to PostgreSQL may take by default (storage_open_pg's
 * wait_seconds 0). */
#define STORAGE_PG_WAIT_S 5.0
/* The longest wait_seconds storage_open_pg accepts. */
#define STORAGE_PG_WAIT_MAX_S 3600.0

/* Connects to PostgreSQL instead (cluster mode, issue 14) with a libpq
 * connection string or URI. Creates sm_migrations and sm_meta if missing.
 * Logs say host, port and database, never the password. SM_EINVAL for a
 * string libpq cannot parse or a wait_seconds out of range, SM_ERROR when
 * the server cannot be reached or refuses. Every function below then
 * works on PostgreSQL with the same semantics, except where it says
 * otherwise ("PostgreSQL:"). SQL is PostgreSQL's: plugins write portable
 * SQL; `?` and `?NNN` placeholders are translated.
 *
 * Waits: calls still wait for the server on the calling thread (the logic
 * thread), but each round trip at most wait_seconds (0: STORAGE_PG_WAIT_S;
 * at most STORAGE_PG_WAIT_MAX_S); migrations get 12 times as long. The
 * server cancels a statement itself a fifth of that earlier
 * (statement_timeout, unless the string's options set one), and the
 * connection goes on; when the deadline passes the connection is dropped
 * and the call fails (SM_ERROR). Connecting waits at most the string's
 * connect_timeout, by default wait_seconds rounded up (libpq's minimum
 * is 2 s).
 *
 * A lost connection (the server went away, a deadline, a socket error)
 * is logged once, and every call fails at once (SM_ERROR) while a thread
 * of the storage's own connects again in the background (100 ms, then
 * doubling up to 5 s between attempts); the first call after it
 * succeeded uses the new connection ("connection restored" is logged),
 * and statements prepared before are prepared again when next stepped.
 * A transaction open when the connection went is gone (the server rolled
 * it back): until the caller ends it, storage_in_transaction stays 1 and
 * every call fails, storage_commit fails (SM_ERROR: nothing of it is
 * stored) and storage_rollback succeeds. A COMMIT whose answer never came
 * is an error, though the server may have committed it. */
int storage_open_pg(const char *conninfo, double wait_seconds, storage **out);
/* 1 when s runs on PostgreSQL (storage_open_pg), 0 on SQLite. */
int storage_is_postgresql(const storage *s);
/* PostgreSQL: how many commits so far may have written (COMMITs, and
 * statements other than SELECT run outside a transaction); what
 * durability.h waits to see flushed. 0 on SQLite. */
uint64_t storage_pg_writes(const storage *s);
/* PostgreSQL: a server setting for this connection and every one made
 * again (pg_db_session_option). SM_EINVAL on SQLite. At start only. */
int storage_pg_session_option(storage *s, const char *name, const char *value);

/* The waits on PostgreSQL and the connection's state, for metrics. */
#define STORAGE_PG_WAIT_BUCKETS 15
/* The buckets' upper bounds in seconds, ascending; a last one is +Inf. */
extern const double storage_pg_wait_bounds[STORAGE_PG_WAIT_BUCKETS];
typedef struct storage_pg_stats {
    int up; /* 1 while a connection is up (or made and not yet taken) */
    unsigned long long waits;    /* round trips waited for, answered or not */
    unsigned long long timeouts; /* of which no answer came before the deadline */
    unsigned long long failures; /* of which the connection failed first */
    unsigned long long refused;  /* calls failed at once: no connection, or a lost transaction */
    double wait_seconds;         /* the time the waits took, in all */
    double wait_max;             /* the longest one, seconds */
    /* Waits per bucket (not cumulative); the last one is above every bound. */
    unsigned long long wait_buckets[STORAGE_PG_WAIT_BUCKETS + 1];
    unsigned long long losses;     /* times the connection was lost */
    unsigned long long reconnects; /* times a new one was taken into use */
    unsigned long long attempts;   /* connection attempts in the background */
} storage_pg_stats;
/* Copies them; any thread (atomics), for as long as s is open. SM_OK, or
 * SM_EINVAL when s is not on PostgreSQL. */
int storage_pg_stats_get(const storage *s, storage_pg_stats *out);

/* Finalizes statements left open (logging each as a leak), checkpoints the
 * WAL and closes. Stops the checkpoint jobs first if they were started
 * (the pool must then still run). NULL is ignored. */
void storage_close(storage *s);

/* A commit that leaves the WAL at this many pages or more checkpoints it:
 * SQLite's own wal_autocheckpoint default (SQLITE_DEFAULT_WAL_AUTOCHECKPOINT). */
#define STORAGE_CHECKPOINT_PAGES 1000
/* A WAL this long has outrun the checkpoint jobs: the committing thread
 * checkpoints it itself (storage.c, checkpoint_on_commit, says why). */
#define STORAGE_WAL_LIMIT_PAGES (10 * STORAGE_CHECKPOINT_PAGES)

struct workers;
/* Moves WAL checkpoints off the thread that commits: from here on, a
 * commit that leaves the WAL at STORAGE_CHECKPOINT_PAGES or more queues a
 * PASSIVE checkpoint on `pool`, run through a second connection of its
 * own, one job at a time; a WAL of STORAGE_WAL_LIMIT_PAGES (the jobs do
 * not keep up with a steady stream of commits) is checkpointed by the
 * committing thread. Before, SQLite checkpoints inside the commit. The
 * jobs' done callbacks run where the pool's completions do. Nothing to do
 * for an in-memory database or a SQLite built without threads (SM_OK).
 * SM_ERROR when the second connection cannot be opened, SM_ESTATE if
 * already started. PostgreSQL: SM_OK, nothing to do (the server
 * checkpoints by itself). */
int storage_start_checkpoints(storage *s, struct workers *pool);
/* Waits for the job in flight (a queued one is cancelled), closes the
 * second connection and gives checkpoints back to SQLite. Before the pool
 * stops. Nothing to do if not started; NULL is ignored. */
void storage_stop_checkpoints(storage *s);

/* Applies the owner's migrations above its recorded version, each in one
 * transaction together with its record. Versions must increase strictly;
 * a database recorded at a version higher than the owner knows is an error
 * (a downgrade). Returns 0 or -1 with the reason logged. */
int storage_migrate(storage *s, const char *owner, const sm_migration *migrations);
/* The owner's recorded version, 0 if none. */
int storage_version(storage *s, const char *owner, int *out);

/* The core's own facts about the database (table sm_meta), such as the
 * fingerprint of the server key it was used with. get: SM_OK, SM_ENOTFOUND,
 * SM_EINVAL if buf is too small, SM_ERROR. */
int storage_meta_get(storage *s, const char *name, char *buf, size_t size);
int storage_meta_set(storage *s, const char *name, const char *value);
/* 1 if any migration was ever applied (the database has been used), 0 if
 * not, -1 on error. */
int storage_has_migrations(storage *s);

/* Statement API; semantics as in sm_host. `owner` names the plugin in logs. */
int storage_prepare(storage *s, const char *owner, const char *sql, sm_stmt **out);
int storage_bind_int64(sm_stmt *st, int index, int64_t value);
int storage_bind_double(sm_stmt *st, int index, double value);
int storage_bind_text(sm_stmt *st, int index, const char *value, long len);
int storage_bind_null(sm_stmt *st, int index);
int storage_step(sm_stmt *st);
int64_t storage_column_int64(sm_stmt *st, int col);
double storage_column_double(sm_stmt *st, int col);
const char *storage_column_text(sm_stmt *st, int col);
int storage_column_is_null(sm_stmt *st, int col);
int storage_reset(sm_stmt *st);
void storage_finalize(sm_stmt *st);

int storage_begin(storage *s);
int storage_commit(storage *s);
int storage_rollback(storage *s);
int storage_in_transaction(const storage *s);
/* SQLite: the rowid of the last insert. PostgreSQL has no rowid: this is
 * `SELECT lastval()`, the value the session's last nextval gave, i.e. the
 * key of the row just inserted into a table keyed by an identity (or
 * serial) column; a round trip (inside a transaction under a savepoint,
 * in the same round trip); 0 and a log line if no sequence was used yet
 * or the connection is gone.
 * Read it right after your own INSERT. */
int64_t storage_last_insert_id(storage *s);
/* Rows changed by the last INSERT, UPDATE or DELETE. */
int64_t storage_changes(storage *s);

/* Runs SQL without results (core use: pragmas, checks). */
int storage_exec(storage *s, const char *sql);
/* PRAGMA integrity_check == "ok": 1, else 0. PostgreSQL: refused (0,
 * logged): it has no equivalent an ordinary role may run. */
int storage_integrity_ok(storage *s);
/* Copies the whole database to `path` with SQLite's online backup API,
 * in steps so that a large database does not hold the loop: begin, then
 * step (pages at a time, -1 = all) until it returns 0 (done) or -1
 * (failed, the reason in err); both free b; 1 means more to copy. The copy
 * is written to a new file of mode 0600 beside path and renamed into
 * place, so path never holds half a backup and is replaced whole. abort
 * frees a backup not finished (before storage_close). PostgreSQL: begin
 * refuses (-1, err names pg_dump). */
typedef struct storage_backup storage_backup;
int storage_backup_begin(storage *s, const char *path, storage_backup **out, char *err,
                         size_t err_len);
int storage_backup_step(storage_backup *b, int pages, char *err, size_t err_len);
void storage_backup_abort(storage_backup *b);

#endif
