/* The PostgreSQL engine behind the storage service (storage.h). Only
 * storage.c calls this: it keeps the statement list and the owners' names,
 * and sends a storage opened with storage_open_pg here. The semantics are
 * those of storage.h; where PostgreSQL differs, the function says how.
 *
 * Waiting: every call runs on the calling thread (the logic thread) and
 * waits for the server's answer, each round trip at most the open's wait
 * (storage_open_pg in storage.h says what happens when it passes, when the
 * connection is lost and when it comes back); reconnecting happens on a
 * thread of the pg_db's own. Each wait is counted and timed
 * (pg_db_stats). */
#ifndef SM_CORE_STORAGE_PG_H
#define SM_CORE_STORAGE_PG_H

#include <stddef.h>
#include <stdint.h>
#include "safemessenger/plugin.h"
#include "storage.h"

typedef struct pg_db pg_db;
typedef struct pg_stmt pg_stmt;

/* Connects (libpq connection string or URI) and creates sm_migrations and
 * sm_meta if missing; wait: seconds per round trip (0: STORAGE_PG_WAIT_S).
 * Logs host, port and database, never the password. SM_EINVAL for a
 * string libpq cannot parse or a wait out of range, SM_ERROR if
 * unreachable. */
int pg_db_open(const char *conninfo, double wait, pg_db **out);
/* Rolls back a transaction left open (with a warning), stops reconnecting
 * (waiting for an attempt in progress, at most its connect_timeout) and
 * disconnects. */
void pg_db_close(pg_db *db);
/* The counters; any thread. */
void pg_db_stats(const pg_db *db, storage_pg_stats *out);

/* SQL without parameters, one or several statements. Inside a transaction
 * a failure undoes this call's statements only, as with SQLite. */
int pg_db_exec(pg_db *db, const char *who, const char *sql);
/* Sets a server setting on this connection and on every one made again
 * after a loss (a startup option). name and value are trusted words (the
 * core's own). Only while no reconnection is under way: at start. */
int pg_db_session_option(pg_db *db, const char *name, const char *value);
int pg_db_begin(pg_db *db);
int pg_db_commit(pg_db *db);
int pg_db_rollback(pg_db *db);
int pg_db_in_transaction(const pg_db *db);
int64_t pg_db_last_insert_id(pg_db *db);
int64_t pg_db_changes(const pg_db *db);

/* One migration and its row of sm_migrations in one transaction;
 * 0, or -1 with the reason logged under owner. */
int pg_db_apply_migration(pg_db *db, const char *owner, const sm_migration *m,
                          double applied_at);
int pg_db_version(pg_db *db, const char *owner, int *out);
int pg_db_meta_get(pg_db *db, const char *name, char *buf, size_t size);
int pg_db_meta_set(pg_db *db, const char *name, const char *value);
int pg_db_has_migrations(pg_db *db);

/* `?` and `?NNN` placeholders become `$N` (quoted text and comments are
 * left alone); the statement is prepared on the server now, and again
 * when it is stepped on a newer connection. */
int pg_stmt_prepare(pg_db *db, const char *owner, const char *sql, pg_stmt **out);
/* The SQL as the caller wrote it. */
const char *pg_stmt_sql(const pg_stmt *st);
int pg_stmt_bind_int64(pg_stmt *st, const char *owner, int index, int64_t value);
int pg_stmt_bind_double(pg_stmt *st, const char *owner, int index, double value);
/* value NULL binds NULL. A NUL byte inside the text is SM_EINVAL:
 * PostgreSQL's text cannot hold one. */
int pg_stmt_bind_text(pg_stmt *st, const char *owner, int index, const char *value, size_t len);
int pg_stmt_step(pg_stmt *st, const char *owner);
int64_t pg_stmt_column_int64(const pg_stmt *st, int col);
double pg_stmt_column_double(const pg_stmt *st, int col);
const char *pg_stmt_column_text(const pg_stmt *st, int col);
int pg_stmt_column_is_null(const pg_stmt *st, int col);
void pg_stmt_reset(pg_stmt *st);
void pg_stmt_finalize(pg_stmt *st);

/* The placeholder translation pg_stmt_prepare uses: *out is malloc'd,
 * *nparams the highest index. SM_EINVAL (why says it) for an empty SQL
 * text, a second statement, `$N` written directly or an index out of
 * 1..65535; SM_ENOMEM. */
int pg_translate_sql(const char *sql, char **out, int *nparams, const char **why);
/* SQLite's types in PostgreSQL's words, for every text sent (prepared
 * statements through pg_translate_sql too): INTEGER and INT become BIGINT,
 * REAL becomes DOUBLE PRECISION (SQLite's are 64-bit and a double),
 * outside quotes and comments, and a column declared TEXT is declared
 * TEXT COLLATE "C" (byte order, as SQLite and strcmp compare); `?` is
 * left alone and the text may hold several statements. SM_EINVAL (why)
 * for an empty text or `$N`. */
int pg_translate_types(const char *sql, char **out, const char **why);

#endif
