/* See storage_import.h. The source is read with SQLite directly (read-only,
 * never migrated here: a copy between different schema versions would put
 * rows where a later migration expects them changed), the target is
 * written through the storage service, whose PostgreSQL statements the
 * server itself uses. */
#include "storage_import.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* identity.c's record of the key a database served clients with. */
#define META_FINGERPRINT "server_key_fingerprint"
/* PostgreSQL's identifier limit (NAMEDATALEN - 1). */
#define IDENT_MAX 63

typedef struct import {
    storage *target;
    sqlite3 *src;
    char *err;
    size_t err_len;
} import;

static int fail(import *im, int status, const char *fmt, ...) SM_PRINTF(3, 4);

static int fail(import *im, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(im->err, im->err_len, fmt, ap);
    va_end(ap);
    return status;
}

/* Names are spliced into SQL (a table or column cannot be a parameter):
 * only plain identifiers, which every plugin's schema uses, pass. */
static int plain_identifier(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (n > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return n > 0 && n <= IDENT_MAX;
}

/* ---- a growing SQL text ------------------------------------------------- */

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static int text_add(text *t, const char *piece)
{
    size_t n = strlen(piece);
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s)
            return SM_ENOMEM;
        t->s = s;
        t->cap = cap;
    }
    memcpy(t->s + t->len, piece, n + 1);
    t->len += n;
    return SM_OK;
}

/* ---- checks before anything is written ----------------------------------- */

/* Shares the lock a server takes exclusively on "<path>.lock": refused
 * while one runs, and none can start until *fd is closed. A database
 * without a lock file (copied from elsewhere) needs none. */
static int hold_lock(import *im, const char *path, int *fd)
{
    char lock_path[4096];
    int n = snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    if (n < 0 || (size_t)n >= sizeof lock_path)
        return fail(im, SM_EINVAL, "%s: path too long", path);
    *fd = open(lock_path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errno == ENOENT ? SM_OK : fail(im, SM_ERROR, "%s: %s", lock_path, strerror(errno));
    if (flock(*fd, LOCK_SH | LOCK_NB) != 0) {
        int busy = errno == EWOULDBLOCK;
        int status = fail(im, SM_EBUSY, "%s: %s", path,
                          busy ? "a server is running on it (it holds the lock file): stop it "
                                 "first"
                               : strerror(errno));
        close(*fd);
        *fd = -1;
        return status;
    }
    return SM_OK;
}

static int open_source(import *im, const char *path)
{
    if (access(path, R_OK) != 0)
        return fail(im, SM_ENOTFOUND, "%s: %s", path, strerror(errno));
    if (sqlite3_open_v2(path, &im->src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        return fail(im, SM_ERROR, "%s: %s", path,
                    im->src ? sqlite3_errmsg(im->src) : "cannot open");
    sqlite3_stmt *st = NULL;
    int ours = sqlite3_prepare_v2(im->src,
                                  "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                  " AND name IN ('sm_migrations', 'sm_meta')",
                                  -1, &st, NULL) == SQLITE_OK &&
               sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 2;
    const char *why = sqlite3_errmsg(im->src);
    int status = ours ? SM_OK
                      : fail(im, SM_EINVAL, "%s: not a SafeMessenger database (%s)", path,
                             st ? "no sm_migrations or sm_meta table" : why);
    sqlite3_finalize(st);
    return status;
}

static int target_unused(import *im)
{
    char fp[256];
    int rc = storage_meta_get(im->target, META_FINGERPRINT, fp, sizeof fp);
    if (rc == SM_OK)
        return fail(im, SM_EEXIST,
                    "the PostgreSQL database was used by a server already (it recorded the key "
                    "%s): import only into a new, empty database",
                    fp);
    if (rc != SM_ENOTFOUND)
        return fail(im, SM_ERROR, "cannot read the PostgreSQL database's sm_meta");
    return SM_OK;
}

/* Each plugin's schema version must be the same on both sides. */
static int same_versions(import *im)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(im->src,
                           "SELECT owner, MAX(version) FROM sm_migrations GROUP BY owner"
                           " ORDER BY owner",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(im, SM_ERROR, "reading sm_migrations: %s", sqlite3_errmsg(im->src));
    int status = SM_OK, rc;
    while (status == SM_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(st, 0);
        int from = sqlite3_column_int(st, 1), to = 0;
        if (!owner || storage_version(im->target, owner, &to) != SM_OK)
            status = fail(im, SM_ERROR, "cannot read the schema versions");
        else if (to == 0)
            status = fail(im, SM_EINVAL,
                          "plugin %s: the SQLite database holds its tables, but the "
                          "configuration does not load it (plugins.load): load it, or nothing "
                          "of it would be copied",
                          owner);
        else if (to > from)
            status = fail(im, SM_ESTATE,
                          "plugin %s: the SQLite database is at schema version %d, this build "
                          "at %d: start this version of the server once on the SQLite database "
                          "to upgrade it, stop it, then import",
                          owner, from, to);
        else if (to < from)
            status = fail(im, SM_ESTATE,
                          "plugin %s: the SQLite database is at schema version %d, newer than "
                          "this build's %d: import with the version that wrote it",
                          owner, from, to);
    }
    if (status == SM_OK && rc != SQLITE_DONE)
        status = fail(im, SM_ERROR, "reading sm_migrations: %s", sqlite3_errmsg(im->src));
    sqlite3_finalize(st);
    return status;
}

/* ---- the copy ------------------------------------------------------------ */

/* The column names of table, as "a, b, c" into cols; n receives how many. */
static int columns_of(import *im, const char *table, text *cols, int *n)
{
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(im->src, sql, -1, &st, NULL) != SQLITE_OK)
        return fail(im, SM_ERROR, "table %s: %s", table, sqlite3_errmsg(im->src));
    int status = SM_OK;
    *n = 0;
    while (status == SM_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (!name || !plain_identifier(name))
            status = fail(im, SM_EINVAL, "table %s: column \"%s\" is not a plain name", table,
                          name ? name : "");
        else if ((*n > 0 && text_add(cols, ", ") != SM_OK) || text_add(cols, name) != SM_OK)
            status = fail(im, SM_ENOMEM, "out of memory");
        else
            ++*n;
    }
    sqlite3_finalize(st);
    if (status == SM_OK && *n == 0)
        status = fail(im, SM_ERROR, "table %s: no columns", table);
    return status;
}

/* Binds source column i as the same value on the target. */
static int bind_value(import *im, const char *table, sqlite3_stmt *from, int i, sm_stmt *to)
{
    switch (sqlite3_column_type(from, i)) {
    case SQLITE_INTEGER:
        return storage_bind_int64(to, i + 1, sqlite3_column_int64(from, i));
    case SQLITE_FLOAT:
        return storage_bind_double(to, i + 1, sqlite3_column_double(from, i));
    case SQLITE_NULL:
        return storage_bind_null(to, i + 1);
    case SQLITE_TEXT: {
        const char *v = (const char *)sqlite3_column_text(from, i);
        int len = sqlite3_column_bytes(from, i);
        if (v && memchr(v, '\0', (size_t)len))
            return fail(im, SM_EINVAL, "table %s, column %s: a text holds a NUL byte, which "
                        "PostgreSQL's text cannot", table, sqlite3_column_name(from, i));
        return storage_bind_text(to, i + 1, v ? v : "", len);
    }
    default:
        return fail(im, SM_EINVAL, "table %s, column %s: binary data, which no SafeMessenger "
                    "schema stores", table, sqlite3_column_name(from, i));
    }
}

static int64_t target_count(import *im, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    sm_stmt *st = NULL;
    int64_t n = -1;
    if (storage_prepare(im->target, "import", sql, &st) == SM_OK && storage_step(st) == SM_ROW)
        n = storage_column_int64(st, 0);
    storage_finalize(st);
    return n;
}

/* Replaces the target table's rows with the source's. */
static int copy_table(import *im, const char *table, int64_t *rows)
{
    text cols = {0}, sql = {0};
    sqlite3_stmt *from = NULL;
    sm_stmt *to = NULL;
    int n = 0, rc;
    int status = columns_of(im, table, &cols, &n);
    if (status != SM_OK)
        goto out;
    if (text_add(&sql, "SELECT ") != SM_OK || text_add(&sql, cols.s) != SM_OK ||
        text_add(&sql, " FROM ") != SM_OK || text_add(&sql, table) != SM_OK) {
        status = fail(im, SM_ENOMEM, "out of memory");
        goto out;
    }
    if (sqlite3_prepare_v2(im->src, sql.s, -1, &from, NULL) != SQLITE_OK) {
        status = fail(im, SM_ERROR, "table %s: %s", table, sqlite3_errmsg(im->src));
        goto out;
    }
    sql.len = 0;
    if (text_add(&sql, "INSERT INTO ") != SM_OK || text_add(&sql, table) != SM_OK ||
        text_add(&sql, " (") != SM_OK || text_add(&sql, cols.s) != SM_OK ||
        text_add(&sql, ") VALUES (") != SM_OK) {
        status = fail(im, SM_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (text_add(&sql, i ? ", ?" : "?") != SM_OK) {
            status = fail(im, SM_ENOMEM, "out of memory");
            goto out;
        }
    if (text_add(&sql, ")") != SM_OK) {
        status = fail(im, SM_ENOMEM, "out of memory");
        goto out;
    }
    char del[128];
    snprintf(del, sizeof del, "DELETE FROM %s", table);
    /* A table or column the target lacks fails here, before any row. */
    if (storage_exec(im->target, del) != SM_OK ||
        storage_prepare(im->target, "import", sql.s, &to) != SM_OK) {
        status = fail(im, SM_ERROR,
                      "table %s: not in the PostgreSQL database with the same columns (the "
                      "server's log above says what PostgreSQL answered)",
                      table);
        goto out;
    }
    *rows = 0;
    while ((rc = sqlite3_step(from)) == SQLITE_ROW) {
        for (int i = 0; i < n; i++) {
            int b = bind_value(im, table, from, i, to);
            if (b != SM_OK) {
                status = im->err[0] ? b : fail(im, b, "table %s: cannot bind a value", table);
                goto out;
            }
        }
        if (storage_step(to) != SM_DONE) {
            status = fail(im, SM_ERROR,
                          "table %s: PostgreSQL refused row %lld (the log above says why)", table,
                          (long long)*rows + 1);
            goto out;
        }
        storage_reset(to);
        ++*rows;
    }
    if (rc != SQLITE_DONE) {
        status = fail(im, SM_ERROR, "table %s: %s", table, sqlite3_errmsg(im->src));
        goto out;
    }
    if (target_count(im, table) != *rows)
        status = fail(im, SM_ERROR, "table %s: %lld rows read, but not as many in PostgreSQL",
                      table, (long long)*rows);
out:
    storage_finalize(to);
    sqlite3_finalize(from);
    free(cols.s);
    free(sql.s);
    return status;
}

/* Every table but SQLite's own and sm_migrations (the target's records
 * its own migrations, at the same versions). */
static int copy_tables(import *im, storage_import_table_fn on_table, void *arg)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(im->src,
                           "SELECT name FROM sqlite_master WHERE type = 'table'"
                           " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                           " AND name <> 'sm_migrations' ORDER BY name",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(im, SM_ERROR, "listing the tables: %s", sqlite3_errmsg(im->src));
    int status = SM_OK, rc;
    while (status == SM_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *table = (const char *)sqlite3_column_text(st, 0);
        int64_t rows = 0;
        if (!table || !plain_identifier(table))
            status = fail(im, SM_EINVAL, "table \"%s\" is not a plain name", table ? table : "");
        else if ((status = copy_table(im, table, &rows)) == SM_OK && on_table)
            on_table(table, rows, arg);
    }
    if (status == SM_OK && rc != SQLITE_DONE)
        status = fail(im, SM_ERROR, "listing the tables: %s", sqlite3_errmsg(im->src));
    sqlite3_finalize(st);
    return status;
}

int storage_import_sqlite(storage *target, const char *sqlite_path,
                          storage_import_table_fn on_table, void *arg, char *err,
                          size_t err_len)
{
    import im = {.target = target, .err = err, .err_len = err_len};
    int lock_fd = -1;
    err[0] = '\0';
    if (!storage_is_postgresql(target))
        return fail(&im, SM_EINVAL, "the configuration's storage.backend is not \"postgresql\"");
    int status = hold_lock(&im, sqlite_path, &lock_fd);
    if (status == SM_OK)
        status = open_source(&im, sqlite_path);
    if (status == SM_OK)
        status = target_unused(&im);
    if (status == SM_OK)
        status = same_versions(&im);
    if (status == SM_OK && storage_begin(target) != SM_OK)
        status = fail(&im, SM_ERROR, "cannot begin a transaction on PostgreSQL");
    if (status == SM_OK) {
        status = copy_tables(&im, on_table, arg);
        if (status == SM_OK && storage_commit(target) != SM_OK)
            status = fail(&im, SM_ERROR, "PostgreSQL did not commit the copy: nothing was "
                                         "written");
        if (status != SM_OK && storage_in_transaction(target))
            storage_rollback(target);
    }
    sqlite3_close(im.src);
    if (lock_fd >= 0)
        close(lock_fd);
    return status;
}
