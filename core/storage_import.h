/* Moving an SQLite deployment to PostgreSQL (issue 14, docs/OPERATIONS.md
 * "Moving from SQLite to PostgreSQL"): every row of every table of a
 * stopped server's SQLite database copied into the PostgreSQL database the
 * storage service runs on, in one transaction. The target's tables come
 * from the plugins' own migrations (the caller started the core with the
 * same plugins), so the copy only moves rows, and only between schemas at
 * the same versions. */
#ifndef SM_CORE_STORAGE_IMPORT_H
#define SM_CORE_STORAGE_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "storage.h"

/* Called after each table was copied, in name order, with its rows. */
typedef void (*storage_import_table_fn)(const char *table, int64_t rows, void *arg);

/* Copies the SQLite database at sqlite_path into target (PostgreSQL, opened
 * by the core with the plugins loaded and migrated). Refuses, with the
 * reason in err and nothing written, when: target is not PostgreSQL; a
 * server holds the SQLite database (its lock file); the file is not a
 * SafeMessenger database; target was used by a server already (it
 * recorded a server key); a plugin's schema version differs between the
 * two (either way: the message says which to upgrade), or the SQLite
 * database has a plugin's tables and the configuration does not load that
 * plugin; a table or column is missing in target; a value does not fit
 * its column (binary data, a type PostgreSQL refuses). Rows the target's
 * migrations wrote (an id counter's first row) are replaced. The core's
 * sm_meta comes along (the server key's fingerprint: start the PostgreSQL
 * server with the same key file); sm_migrations stays the target's own.
 * Holds the SQLite lock file while it reads, so no server starts on it
 * meanwhile. SM_OK, or a status with err set. */
int storage_import_sqlite(storage *target, const char *sqlite_path,
                          storage_import_table_fn on_table, void *arg, char *err,
                          size_t err_len);

#endif
