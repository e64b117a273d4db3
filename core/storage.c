/* The core's SQLite database. Only the loop thread uses it, so the
 * connection is opened without SQLite's own mutexes. WAL checkpoints run
 * on the worker pool, through a second connection of their own (see
 * "checkpoints" below).
 *
 * A storage opened with storage_open_pg runs on PostgreSQL instead
 * (storage_pg.c): each function below starts with one test of its `pg`
 * field and hands such a storage over, so SQLite's path keeps its code
 * and costs one predictable branch. The statement list and the owners'
 * names stay here for both. */
#include "storage.h"

#include "log.h"
#include "storage_pg.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STORAGE_BUSY_TIMEOUT_MS 5000

/* Failed checkpoints are logged at most this often (seconds). */
#define STORAGE_WARN_INTERVAL 60.0

/* WAL checkpoints off the logic thread. `running` and the warning state
 * belong to the logic thread; `db` to whoever holds the job (the worker
 * while it runs, the logic thread otherwise), and the job's results are
 * written by the worker and read by done, both ordered by the pool's lock. */
struct checkpointer {
    workers *pool;        /* NULL: SQLite checkpoints on the committing thread */
    sqlite3 *db;          /* the job's own connection to the same file */
    int running;          /* a job is queued or running */
    int rc;               /* the last job's sqlite3_wal_checkpoint_v2 */
    int warned;           /* a warning was logged, at warned_at (monotonic) */
    double warned_at;
    unsigned long unlogged; /* failures not logged since */
};

struct storage {
    sqlite3 *db;           /* NULL on PostgreSQL */
    pg_db *pg;             /* NULL on SQLite */
    int lock_fd;           /* <database>.lock, held for the process's life; -1 if none */
    struct sm_stmt *stmts; /* live statements, so close can finalize leftovers */
    const char *sync_sql;  /* the synchronous pragma, for the checkpoint connection too */
    struct checkpointer ckpt;
    /* BEGIN IMMEDIATE, COMMIT, ROLLBACK, prepared on first use: parsed
     * again by sqlite3_exec for every transaction they were a tenth of
     * the logic thread's time storing a room message (perf, fan-out). */
    sqlite3_stmt *tx[3];
    /* PostgreSQL: commits that may have written (storage_pg_writes). */
    uint64_t pg_writes;
};

enum { TX_BEGIN, TX_COMMIT, TX_ROLLBACK };
static const char *const tx_sql[] = {"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};

struct sm_stmt {
    sqlite3_stmt *stmt; /* NULL on PostgreSQL */
    pg_stmt *pg;        /* NULL on SQLite */
    storage *s;
    char *owner;
    struct sm_stmt *prev, *next;
};

static const char *owner_name(const char *owner)
{
    return owner ? owner : "core";
}

/* Maps a (possibly extended) SQLite result code to the SDK's status. */
static int status_from_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK: return SM_OK;
    case SQLITE_ROW: return SM_ROW;
    case SQLITE_DONE: return SM_DONE;
    case SQLITE_CONSTRAINT: return SM_EEXIST;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return SM_EBUSY;
    case SQLITE_NOMEM: return SM_ENOMEM;
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return SM_EINVAL;
    case SQLITE_MISUSE: return SM_ESTATE;
    default: return SM_ERROR;
    }
}

static char *dup_string(const char *str)
{
    size_t len = strlen(str);
    char *copy = malloc(len + 1);
    if (copy)
        memcpy(copy, str, len + 1);
    return copy;
}

/* mkdir -p of the directory part of path, each missing level 0700: the
 * database holds password hashes and messages. */
static int make_parent_dirs(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    size_t len = (size_t)(slash - path);
    char *dir = malloc(len + 1);
    if (!dir)
        return -1;
    memcpy(dir, path, len);
    dir[len] = '\0';
    int rc = 0;
    for (size_t i = 1; i <= len && rc == 0; i++) {
        if (dir[i] != '/' && dir[i] != '\0')
            continue;
        char saved = dir[i];
        dir[i] = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            LOG_ERROR("storage: cannot create directory %s: %s", dir, strerror(errno));
            rc = -1;
        }
        dir[i] = saved;
    }
    free(dir);
    return rc;
}

/* The database holds password hashes and messages: like the server key it
 * is for the server's user alone. A file found readable by others is put
 * back to 0600 (and said so) rather than refused, since the fix is certain
 * and the operator may not be at hand. */
static int restrict_mode(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        LOG_ERROR("storage: cannot stat %s: %s", path, strerror(errno));
        return -1;
    }
    if ((st.st_mode & 077) == 0)
        return 0;
    if (fchmod(fd, 0600) != 0) {
        LOG_ERROR("storage: %s is accessible to other users (mode %03o) and cannot be made "
                  "0600: %s", path, (unsigned)(st.st_mode & 0777), strerror(errno));
        return -1;
    }
    LOG_WARN("storage: %s was accessible to other users (mode %03o); set it to 0600", path,
             (unsigned)(st.st_mode & 0777));
    return 0;
}

/* Creates the database file 0600 before SQLite opens it (an empty file is a
 * valid empty database), without touching the process umask, which other
 * threads may rely on. SQLite gives new -wal and -shm files the database
 * file's mode; ones left by an earlier run are checked too. */
static int create_db_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG_ERROR("storage: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = restrict_mode(fd, path);
    close(fd);
    static const char *const suffixes[] = {"-wal", "-shm"};
    for (size_t i = 0; rc == 0 && i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char side[4096];
        int n = snprintf(side, sizeof side, "%s%s", path, suffixes[i]);
        if (n < 0 || (size_t)n >= sizeof side)
            return -1;
        fd = open(side, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue; /* none yet */
        rc = restrict_mode(fd, side);
        close(fd);
    }
    return rc;
}

/* One server per database: two would each think they own sessions, rooms
 * and the purge timers, and SQLite would only serialise their writes. The
 * lock is an flock on "<database>.lock", released by the kernel however
 * the process ends, so a crash leaves nothing to clean up; the file holds
 * the owner's pid for the message a second server prints. */
static int take_lock(const char *path, int *fd_out)
{
    char lock_path[4096];
    int n = snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    if (n < 0 || (size_t)n >= sizeof lock_path)
        return -1;
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        LOG_ERROR("storage: cannot open the lock file %s: %s", lock_path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (err == EWOULDBLOCK)
            LOG_ERROR("storage: the database %s is in use by another server (pid %s); stop "
                      "that one first, or give this one its own storage.database",
                      path, pid[0] ? pid : "unknown");
        else
            LOG_ERROR("storage: cannot lock %s: %s", lock_path, strerror(err));
        close(fd);
        return -1;
    }
    char pid[32];
    n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        LOG_ERROR("storage: cannot write the lock file %s: %s", lock_path, strerror(errno));
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return 0;
}

static int exec_sql(storage *s, const char *who, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        log_msg(SM_LOG_ERROR, who, "SQL failed (%s): %s", sql,
                err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return status_from_sqlite(rc);
    }
    return SM_OK;
}

/* One of the transaction statements, logged like exec_sql on failure. */
static int run_tx(storage *s, int which)
{
    const char *sql = tx_sql[which];
    int rc = SQLITE_OK;
    if (!s->tx[which])
        rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->tx[which], NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s->tx[which]);
        /* reset repeats a step's error code: keep the step's. */
        (void)sqlite3_reset(s->tx[which]);
    }
    if (rc == SQLITE_DONE || rc == SQLITE_OK)
        return SM_OK;
    log_msg(SM_LOG_ERROR, "core", "SQL failed (%s): %s", sql, sqlite3_errmsg(s->db));
    return status_from_sqlite(rc);
}

static void finalize_tx(storage *s)
{
    for (size_t i = 0; i < sizeof s->tx / sizeof s->tx[0]; i++) {
        sqlite3_finalize(s->tx[i]);
        s->tx[i] = NULL;
    }
}

/* Runs a one-row pragma and copies its first column into buf. */
static int pragma_text(storage *s, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        LOG_ERROR("storage: %s failed: %s", sql, sqlite3_errmsg(s->db));
        sqlite3_finalize(stmt);
        return -1;
    }
    const unsigned char *text = sqlite3_column_text(stmt, 0);
    int n = snprintf(buf, size, "%s", text ? (const char *)text : "");
    sqlite3_finalize(stmt);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The pragma statements are whole constant strings picked from this table,
 * never built from the configured value. */
static const struct {
    const char *name;
    const char *sql;
} synchronous_modes[] = {
    {"off", "PRAGMA synchronous=OFF"},
    {"normal", "PRAGMA synchronous=NORMAL"},
    {"full", "PRAGMA synchronous=FULL"},
    {"extra", "PRAGMA synchronous=EXTRA"},
};

int storage_open(const char *path, const char *synchronous, storage **out)
{
    if (!path || !*path || !out)
        return SM_EINVAL;
    if (!synchronous)
        synchronous = "normal";
    const char *sync_sql = NULL;
    for (size_t i = 0; i < sizeof synchronous_modes / sizeof synchronous_modes[0]; i++)
        if (strcmp(synchronous, synchronous_modes[i].name) == 0)
            sync_sql = synchronous_modes[i].sql;
    if (!sync_sql) {
        LOG_ERROR("storage: unknown synchronous mode \"%s\" (off, normal, full, extra)",
                  synchronous);
        return SM_EINVAL;
    }
    int memory = strcmp(path, ":memory:") == 0;
    int lock_fd = -1;
    if (!memory && (make_parent_dirs(path) != 0 || take_lock(path, &lock_fd) != 0))
        return SM_ERROR;
    if (!memory && create_db_file(path) != 0) {
        close(lock_fd);
        return SM_ERROR;
    }

    storage *s = calloc(1, sizeof *s);
    if (!s) {
        if (lock_fd >= 0)
            close(lock_fd);
        return SM_ENOMEM;
    }
    s->lock_fd = lock_fd;
    s->sync_sql = sync_sql;
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        LOG_ERROR("storage: cannot open %s: %s", path,
                  s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORAGE_BUSY_TIMEOUT_MS);

    char mode[16];
    if (pragma_text(s, "PRAGMA journal_mode=WAL", mode, sizeof mode) != 0)
        goto fail;
    /* An in-memory database cannot use a WAL and answers "memory". */
    if (!memory && sqlite3_stricmp(mode, "wal") != 0) {
        LOG_ERROR("storage: %s: journal_mode is \"%s\", WAL is required", path, mode);
        goto fail;
    }
    if (exec_sql(s, "core", sync_sql) != SM_OK ||
        exec_sql(s, "core", "PRAGMA foreign_keys=ON") != SM_OK ||
        exec_sql(s, "core",
                 "CREATE TABLE IF NOT EXISTS sm_migrations("
                 "owner TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
                 " PRIMARY KEY(owner, version))") != SM_OK ||
        exec_sql(s, "core",
                 "CREATE TABLE IF NOT EXISTS sm_meta("
                 "name TEXT PRIMARY KEY, value TEXT NOT NULL)") != SM_OK)
        goto fail;
    *out = s;
    return SM_OK;
fail:
    sqlite3_close(s->db);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
    return SM_ERROR;
}

int storage_is_postgresql(const storage *s)
{
    return s->pg != NULL;
}

int storage_open_pg(const char *conninfo, double wait_seconds, storage **out)
{
    if (!conninfo || !*conninfo || !out)
        return SM_EINVAL;
    storage *s = calloc(1, sizeof *s);
    if (!s)
        return SM_ENOMEM;
    s->lock_fd = -1; /* PostgreSQL serves several servers: no lock file */
    int rc = pg_db_open(conninfo, wait_seconds, &s->pg);
    if (rc != SM_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return SM_OK;
}

int storage_pg_stats_get(const storage *s, storage_pg_stats *out)
{
    if (!s || !s->pg || !out)
        return SM_EINVAL;
    pg_db_stats(s->pg, out);
    return SM_OK;
}

static const char *stmt_sql(const struct sm_stmt *st)
{
    const char *sql = st->pg ? pg_stmt_sql(st->pg) : sqlite3_sql(st->stmt);
    return sql ? sql : "?";
}

static void finalize_leftovers(storage *s)
{
    while (s->stmts) {
        struct sm_stmt *st = s->stmts;
        LOG_WARN("storage: statement of %s left open at close, finalizing: %s",
                 owner_name(st->owner), stmt_sql(st));
        storage_finalize(st);
    }
}

void storage_close(storage *s)
{
    if (!s)
        return;
    if (s->pg) {
        finalize_leftovers(s);
        pg_db_close(s->pg);
        free(s);
        return;
    }
    /* The checkpoint connection first: the main one must be the last, so
     * that its close checkpoints and removes the WAL. */
    storage_stop_checkpoints(s);
    finalize_leftovers(s);
    if (!sqlite3_get_autocommit(s->db)) {
        LOG_WARN("storage: transaction left open at close, rolling back");
        exec_sql(s, "core", "ROLLBACK");
    }
    finalize_tx(s);
    /* On the last connection a clean close checkpoints the WAL into the
     * database and removes it. */
    int rc = sqlite3_close(s->db);
    if (rc != SQLITE_OK) {
        LOG_ERROR("storage: close failed: %s", sqlite3_errstr(rc));
        sqlite3_close_v2(s->db);
    }
    /* Only after the checkpoint: the next server may start the moment the
     * lock is gone. */
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
}

/* ---- checkpoints ------------------------------------------------------- */

/* SQLite's automatic checkpoint runs inside the commit that takes the WAL
 * past wal_autocheckpoint pages: about 4 MB copied into the database file
 * and two fsyncs, on the logic thread, once per thousand pages written.
 * Here that commit only queues a job, and a worker runs a PASSIVE
 * checkpoint through a second connection: PASSIVE takes no lock the
 * writer needs, so the logic thread's commits go on meanwhile. */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A failing checkpoint fails again at each commit: one warning per
 * STORAGE_WARN_INTERVAL, with the count of those not logged. */
static void checkpoint_warn(struct checkpointer *c, const char *what, const char *why)
{
    double now = mono_now();
    if (c->warned && now - c->warned_at < STORAGE_WARN_INTERVAL) {
        c->unlogged++;
        return;
    }
    if (c->unlogged)
        LOG_WARN("storage: %s: %s (and %lu more since the last warning)", what, why,
                 c->unlogged);
    else
        LOG_WARN("storage: %s: %s", what, why);
    c->warned = 1;
    c->warned_at = now;
    c->unlogged = 0;
}

static void checkpoint_work(void *arg)
{
    struct checkpointer *c = arg;
    c->rc = sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* On the logic thread. A WAL that grew meanwhile needs nothing here: the
 * next commit past the threshold queues the next job. */
static void checkpoint_done(void *arg, int cancelled)
{
    struct checkpointer *c = arg;
    c->running = 0;
    if (!cancelled && c->rc != SQLITE_OK)
        checkpoint_warn(c, "WAL checkpoint failed", sqlite3_errmsg(c->db));
}

/* The WAL hook (sqlite3_wal_hook), called on the logic thread after each
 * commit with the WAL's length in pages. */
static int checkpoint_on_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    storage *s = arg;
    struct checkpointer *c = &s->ckpt;
    if (pages < STORAGE_CHECKPOINT_PAGES || c->running)
        return SQLITE_OK;
    /* The WAL starts again from its beginning only when a transaction
     * begins with every frame of it already in the database. A worker's
     * checkpoint copies the frames there were when it started, and under
     * a steady stream of commits one always lands meanwhile, so the WAL
     * would grow for as long as the stream lasts. Past the limit the
     * logic thread checkpoints between two of its commits, as SQLite
     * would have: the workers copied most frames already, so this copies
     * only the last ones, and the next transaction restarts the WAL. */
    if (pages >= STORAGE_WAL_LIMIT_PAGES) {
        if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) !=
            SQLITE_OK)
            checkpoint_warn(c, "WAL checkpoint failed", sqlite3_errmsg(db));
        return SQLITE_OK;
    }
    if (workers_submit(c->pool, s, checkpoint_work, checkpoint_done, c) != 0) {
        checkpoint_warn(c, "cannot queue a WAL checkpoint", "the worker pool refused it");
        return SQLITE_OK; /* the commit stands; the next one tries again */
    }
    c->running = 1;
    return SQLITE_OK;
}

int storage_start_checkpoints(storage *s, workers *pool)
{
    if (!s || !pool)
        return SM_EINVAL;
    if (s->ckpt.pool)
        return SM_ESTATE;
    if (s->pg)
        return SM_OK; /* PostgreSQL's checkpoints are the server's own */
    /* An in-memory database ("") has no file for a second connection, and
     * nothing to checkpoint. */
    const char *path = sqlite3_db_filename(s->db, "main");
    if (!path || !*path)
        return SM_OK;
    if (!sqlite3_threadsafe()) {
        LOG_WARN("storage: this SQLite library is built without threads; WAL checkpoints "
                 "stay on the logic thread");
        return SM_OK;
    }
    /* Without SQLite's mutexes, as the main connection: it is used by one
     * thread at a time, handed between this thread and the job's worker
     * under the pool's lock. The same synchronous setting, so that the
     * checkpoint syncs as the main connection's would have. */
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db, 1);
        rc = sqlite3_exec(db, s->sync_sql, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        LOG_ERROR("storage: cannot open %s for checkpoints: %s", path,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return SM_ERROR;
    }
    s->ckpt.db = db;
    s->ckpt.pool = pool;
    /* Replaces SQLite's automatic checkpoints, which are a WAL hook too. */
    sqlite3_wal_hook(s->db, checkpoint_on_commit, s);
    return SM_OK;
}

void storage_stop_checkpoints(storage *s)
{
    if (!s || !s->ckpt.pool)
        return;
    /* A queued job is cancelled, a running one finishes; either way its
     * done runs here and the connection is this thread's again. */
    workers_drain_owner(s->ckpt.pool, s);
    sqlite3_wal_autocheckpoint(s->db, STORAGE_CHECKPOINT_PAGES);
    /* Not the last connection (the main one is open), so its close leaves
     * the WAL alone. */
    int rc = sqlite3_close(s->ckpt.db);
    if (rc != SQLITE_OK) {
        LOG_ERROR("storage: closing the checkpoint connection failed: %s", sqlite3_errstr(rc));
        sqlite3_close_v2(s->ckpt.db);
    }
    s->ckpt.db = NULL;
    s->ckpt.pool = NULL;
}

static double wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one migration and its record in one BEGIN IMMEDIATE transaction. */
static int apply_migration(storage *s, const char *owner, const sm_migration *m)
{
    char *err = NULL;
    sqlite3_stmt *record = NULL;
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_exec(s->db, m->sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT INTO sm_migrations(owner, version, applied_at)"
                            " VALUES(?1, ?2, ?3)",
                            -1, &record, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(record, 1, owner, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(record, 2, m->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_double(record, 3, wall_clock());
    if (rc == SQLITE_OK)
        rc = sqlite3_step(record);
    if (rc != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(record);
    record = NULL;
    rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, &err);
    if (rc != SQLITE_OK)
        goto fail;
    log_msg(SM_LOG_INFO, owner, "applied migration %d", m->version);
    return 0;
fail:
    log_msg(SM_LOG_ERROR, owner, "migration %d failed: %s", m->version,
            err ? err : sqlite3_errmsg(s->db));
    sqlite3_free(err);
    sqlite3_finalize(record);
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int storage_migrate(storage *s, const char *owner, const sm_migration *migrations)
{
    if (!s || !owner || !*owner)
        return -1;
    if (storage_in_transaction(s)) {
        log_msg(SM_LOG_ERROR, owner, "migrations cannot run inside a transaction");
        return -1;
    }
    /* Check the whole list before applying any of it. */
    int highest = 0;
    for (const sm_migration *m = migrations; m && (m->version != 0 || m->sql); m++) {
        if (!m->sql || m->version <= highest) {
            log_msg(SM_LOG_ERROR, owner,
                    "migration %d: versions must start at 1, increase strictly and"
                    " each have SQL",
                    m->version);
            return -1;
        }
        highest = m->version;
    }
    int current;
    if (storage_version(s, owner, &current) != SM_OK)
        return -1;
    if (current > highest) {
        log_msg(SM_LOG_ERROR, owner,
                "database is at schema version %d but this build knows only up to %d;"
                " refusing to downgrade",
                current, highest);
        return -1;
    }
    for (const sm_migration *m = migrations; m && m->sql; m++)
        if (m->version > current &&
            (s->pg ? pg_db_apply_migration(s->pg, owner, m, wall_clock())
                   : apply_migration(s, owner, m)) != 0)
            return -1;
    return 0;
}

int storage_version(storage *s, const char *owner, int *out)
{
    if (!s || !owner || !out)
        return SM_EINVAL;
    if (s->pg)
        return pg_db_version(s->pg, owner, out);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT COALESCE(MAX(version), 0) FROM sm_migrations"
                                " WHERE owner = ?1",
                                -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 1, owner, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        log_msg(SM_LOG_ERROR, owner, "cannot read schema version: %s", sqlite3_errmsg(s->db));
        sqlite3_finalize(stmt);
        return SM_ERROR;
    }
    sqlite3_int64 version = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    if (version < 0 || version > INT32_MAX)
        return SM_ERROR;
    *out = (int)version;
    return SM_OK;
}

int storage_meta_get(storage *s, const char *name, char *buf, size_t size)
{
    if (s->pg)
        return pg_db_meta_get(s->pg, name, buf, size);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT value FROM sm_meta WHERE name = ?1", -1, &stmt,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    int status = SM_ERROR;
    if (rc == SQLITE_DONE) {
        status = SM_ENOTFOUND;
    } else if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(stmt, 0);
        int n = snprintf(buf, size, "%s", v ? (const char *)v : "");
        status = n < 0 || (size_t)n >= size ? SM_EINVAL : SM_OK;
    } else {
        LOG_ERROR("storage: cannot read sm_meta: %s", sqlite3_errmsg(s->db));
    }
    sqlite3_finalize(stmt);
    return status;
}

int storage_meta_set(storage *s, const char *name, const char *value)
{
    if (s->pg)
        return pg_db_meta_set(s->pg, name, value);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO sm_meta(name, value) VALUES(?1, ?2)"
                                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                                -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, value, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        LOG_ERROR("storage: cannot write sm_meta: %s", sqlite3_errmsg(s->db));
        return SM_ERROR;
    }
    return SM_OK;
}

int storage_has_migrations(storage *s)
{
    if (s->pg)
        return pg_db_has_migrations(s->pg);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM sm_migrations LIMIT 1", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- statements -------------------------------------------------------- */

static int only_blank(const char *p)
{
    for (; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';')
            return 0;
    return 1;
}

/* The engine's half of storage_prepare: st->stmt or st->pg. */
static int prepare_sqlite(storage *s, const char *owner, const char *sql, struct sm_stmt *st)
{
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st->stmt, &tail);
    if (rc != SQLITE_OK) {
        log_msg(SM_LOG_ERROR, owner, "cannot prepare \"%s\": %s", sql, sqlite3_errmsg(s->db));
        return status_from_sqlite(rc) == SM_ENOMEM ? SM_ENOMEM : SM_ERROR;
    }
    /* One statement only: SQLite would silently ignore the rest. */
    if (!st->stmt || (tail && !only_blank(tail))) {
        log_msg(SM_LOG_ERROR, owner, "prepare wants exactly one SQL statement: \"%s\"", sql);
        sqlite3_finalize(st->stmt);
        st->stmt = NULL;
        return SM_EINVAL;
    }
    return SM_OK;
}

int storage_prepare(storage *s, const char *owner, const char *sql, sm_stmt **out)
{
    if (!s || !sql || !out)
        return SM_EINVAL;
    owner = owner_name(owner);
    struct sm_stmt *st = calloc(1, sizeof *st);
    if (!st)
        return SM_ENOMEM;
    int status = SM_ENOMEM;
    st->owner = dup_string(owner);
    if (st->owner)
        status = s->pg ? pg_stmt_prepare(s->pg, owner, sql, &st->pg)
                       : prepare_sqlite(s, owner, sql, st);
    if (status != SM_OK) {
        free(st->owner);
        free(st);
        return status;
    }
    st->s = s;
    st->next = s->stmts;
    if (s->stmts)
        s->stmts->prev = st;
    s->stmts = st;
    *out = st;
    return SM_OK;
}

static int bind_status(sm_stmt *st, int rc)
{
    if (rc == SQLITE_OK)
        return SM_OK;
    log_msg(SM_LOG_ERROR, st->owner, "bind failed on \"%s\": %s", sqlite3_sql(st->stmt),
            sqlite3_errstr(rc));
    return status_from_sqlite(rc);
}

int storage_bind_int64(sm_stmt *st, int index, int64_t value)
{
    if (!st)
        return SM_EINVAL;
    if (st->pg)
        return pg_stmt_bind_int64(st->pg, st->owner, index, value);
    return bind_status(st, sqlite3_bind_int64(st->stmt, index, (sqlite3_int64)value));
}

int storage_bind_double(sm_stmt *st, int index, double value)
{
    if (!st)
        return SM_EINVAL;
    if (st->pg)
        return pg_stmt_bind_double(st->pg, st->owner, index, value);
    return bind_status(st, sqlite3_bind_double(st->stmt, index, value));
}

int storage_bind_text(sm_stmt *st, int index, const char *value, long len)
{
    if (!st)
        return SM_EINVAL;
    size_t n = !value ? 0 : len < 0 ? strlen(value) : (size_t)len;
    if (st->pg)
        return pg_stmt_bind_text(st->pg, st->owner, index, value, n);
    if (!value)
        return bind_status(st, sqlite3_bind_null(st->stmt, index));
    return bind_status(st, sqlite3_bind_text64(st->stmt, index, value, (sqlite3_uint64)n,
                                               SQLITE_TRANSIENT, SQLITE_UTF8));
}

int storage_bind_null(sm_stmt *st, int index)
{
    if (!st)
        return SM_EINVAL;
    if (st->pg)
        return pg_stmt_bind_text(st->pg, st->owner, index, NULL, 0);
    return bind_status(st, sqlite3_bind_null(st->stmt, index));
}

/* The statement is a SELECT (reads only: no commit to confirm). */
static int starts_select(const char *sql)
{
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '(')
        sql++;
    return strncasecmp(sql, "SELECT", 6) == 0 && !isalnum((unsigned char)sql[6]) && sql[6] != '_';
}

int storage_pg_session_option(storage *s, const char *name, const char *value)
{
    if (!s || !s->pg)
        return SM_EINVAL;
    return pg_db_session_option(s->pg, name, value);
}

uint64_t storage_pg_writes(const storage *s)
{
    return s ? s->pg_writes : 0;
}

int storage_step(sm_stmt *st)
{
    if (!st)
        return SM_EINVAL;
    if (st->pg) {
        int in_tx = pg_db_in_transaction(st->s->pg);
        int rc = pg_stmt_step(st->pg, st->owner);
        /* A statement outside a transaction commits by itself; one that
         * is not a plain SELECT may have written. */
        if (!in_tx && (rc == SM_DONE || rc == SM_ROW) && !starts_select(pg_stmt_sql(st->pg)))
            st->s->pg_writes++;
        return rc;
    }
    int rc = sqlite3_step(st->stmt);
    int status = status_from_sqlite(rc);
    switch (status) {
    case SM_ROW:
    case SM_DONE:
        return status;
    case SM_EEXIST:
        /* Expected in normal operation (a taken username, a duplicate). */
        log_msg(SM_LOG_DEBUG, st->owner, "constraint on \"%s\": %s", sqlite3_sql(st->stmt),
                sqlite3_errmsg(st->s->db));
        return SM_EEXIST;
    case SM_EBUSY:
        log_msg(SM_LOG_WARNING, st->owner, "database busy on \"%s\": %s",
                sqlite3_sql(st->stmt), sqlite3_errmsg(st->s->db));
        return SM_EBUSY;
    default:
        log_msg(SM_LOG_ERROR, st->owner, "step failed on \"%s\": %s", sqlite3_sql(st->stmt),
                sqlite3_errmsg(st->s->db));
        return SM_ERROR;
    }
}

int64_t storage_column_int64(sm_stmt *st, int col)
{
    if (st && st->pg)
        return pg_stmt_column_int64(st->pg, col);
    return st ? (int64_t)sqlite3_column_int64(st->stmt, col) : 0;
}

double storage_column_double(sm_stmt *st, int col)
{
    if (st && st->pg)
        return pg_stmt_column_double(st->pg, col);
    return st ? sqlite3_column_double(st->stmt, col) : 0.0;
}

const char *storage_column_text(sm_stmt *st, int col)
{
    if (st && st->pg)
        return pg_stmt_column_text(st->pg, col);
    return st ? (const char *)sqlite3_column_text(st->stmt, col) : NULL;
}

int storage_column_is_null(sm_stmt *st, int col)
{
    if (st && st->pg)
        return pg_stmt_column_is_null(st->pg, col);
    return st ? sqlite3_column_type(st->stmt, col) == SQLITE_NULL : 1;
}

int storage_reset(sm_stmt *st)
{
    if (!st)
        return SM_EINVAL;
    if (st->pg) {
        pg_stmt_reset(st->pg);
        return SM_OK;
    }
    /* sqlite3_reset repeats the error of the last step, which step already
     * reported; the statement is reset all the same. */
    sqlite3_reset(st->stmt);
    sqlite3_clear_bindings(st->stmt);
    return SM_OK;
}

void storage_finalize(sm_stmt *st)
{
    if (!st)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else
        st->s->stmts = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (st->pg)
        pg_stmt_finalize(st->pg);
    else
        sqlite3_finalize(st->stmt);
    free(st->owner);
    free(st);
}

/* ---- transactions and the rest ----------------------------------------- */

int storage_begin(storage *s)
{
    if (!s)
        return SM_EINVAL;
    if (s->pg)
        return pg_db_begin(s->pg);
    if (!sqlite3_get_autocommit(s->db))
        return SM_ESTATE;
    return run_tx(s, TX_BEGIN);
}

int storage_commit(storage *s)
{
    if (!s)
        return SM_EINVAL;
    if (s->pg) {
        int rc = pg_db_commit(s->pg);
        if (rc == SM_OK)
            s->pg_writes++;
        return rc;
    }
    if (sqlite3_get_autocommit(s->db))
        return SM_ESTATE;
    if (run_tx(s, TX_COMMIT) == SM_OK)
        return SM_OK;
    /* The caller must not believe anything was stored. */
    if (!sqlite3_get_autocommit(s->db))
        run_tx(s, TX_ROLLBACK);
    return SM_ERROR;
}

int storage_rollback(storage *s)
{
    if (!s)
        return SM_EINVAL;
    if (s->pg)
        return pg_db_rollback(s->pg);
    if (sqlite3_get_autocommit(s->db))
        return SM_ESTATE;
    return run_tx(s, TX_ROLLBACK) == SM_OK ? SM_OK : SM_ERROR;
}

int storage_in_transaction(const storage *s)
{
    /* autocommit is off exactly while a transaction is open, including
     * after SQLite rolled one back by itself (then it is on again). */
    if (s && s->pg)
        return pg_db_in_transaction(s->pg);
    return s ? !sqlite3_get_autocommit(s->db) : 0;
}

int64_t storage_last_insert_id(storage *s)
{
    if (s && s->pg)
        return pg_db_last_insert_id(s->pg);
    return s ? (int64_t)sqlite3_last_insert_rowid(s->db) : 0;
}

int64_t storage_changes(storage *s)
{
    if (s && s->pg)
        return pg_db_changes(s->pg);
    return s ? (int64_t)sqlite3_changes64(s->db) : 0;
}

int storage_exec(storage *s, const char *sql)
{
    if (!s || !sql)
        return SM_EINVAL;
    if (s->pg) {
        int in_tx = pg_db_in_transaction(s->pg);
        int rc = pg_db_exec(s->pg, "core", sql);
        if (!in_tx && rc == SM_OK)
            s->pg_writes++;
        return rc;
    }
    return exec_sql(s, "core", sql);
}

int storage_integrity_ok(storage *s)
{
    if (!s)
        return 0;
    if (s->pg) {
        /* PostgreSQL has no online equivalent an ordinary role may run
         * (amcheck is an extension for superusers; data checksums are
         * checked as pages are read): refused, not faked. */
        LOG_ERROR("storage: the integrity check is SQLite's; on PostgreSQL use the server's "
                  "own tools (data checksums, amcheck, pg_dump)");
        return 0;
    }
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &stmt, NULL) != SQLITE_OK) {
        LOG_ERROR("storage: integrity_check: %s", sqlite3_errmsg(s->db));
        return 0;
    }
    int ok = 0, rows = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(stmt, 0);
        if (rows++ == 0 && text && strcmp((const char *)text, "ok") == 0)
            ok = 1;
        else
            LOG_ERROR("storage: integrity_check: %s", text ? (const char *)text : "?");
    }
    if (rc != SQLITE_DONE) {
        LOG_ERROR("storage: integrity_check: %s", sqlite3_errmsg(s->db));
        ok = 0;
    }
    sqlite3_finalize(stmt);
    return ok && rows == 1;
}

struct storage_backup {
    sqlite3 *dst;
    sqlite3_backup *b;
    char tmp[4096];
    char path[4096];
};

static void backup_free(storage_backup *b, int remove_copy)
{
    if (b->b)
        sqlite3_backup_finish(b->b);
    if (b->dst)
        sqlite3_close(b->dst);
    if (remove_copy)
        unlink(b->tmp);
    free(b);
}

int storage_backup_begin(storage *s, const char *path, storage_backup **out, char *err,
                         size_t err_len)
{
    if (s->pg) {
        snprintf(err, err_len, "backup copies a SQLite database; back up PostgreSQL with "
                               "its own tools (pg_dump, pg_basebackup)");
        return -1;
    }
    storage_backup *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int n = snprintf(b->tmp, sizeof b->tmp, "%s.tmp-XXXXXX", path);
    int m = snprintf(b->path, sizeof b->path, "%s", path);
    if (n < 0 || (size_t)n >= sizeof b->tmp || m < 0 || (size_t)m >= sizeof b->path) {
        snprintf(err, err_len, "path too long");
        free(b);
        return -1;
    }
    /* mkstemp creates the file 0600 and exclusively: the copy holds every
     * password hash and message, and nobody else may open it meanwhile. */
    int fd = mkstemp(b->tmp);
    if (fd < 0) {
        snprintf(err, err_len, "cannot create %s: %s", b->tmp, strerror(errno));
        free(b);
        return -1;
    }
    int ok = fchmod(fd, 0600) == 0;
    close(fd);
    if (!ok || sqlite3_open_v2(b->tmp, &b->dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                               NULL) != SQLITE_OK ||
        !(b->b = sqlite3_backup_init(b->dst, "main", s->db, "main"))) {
        snprintf(err, err_len, "cannot start the backup: %s",
                 b->dst ? sqlite3_errmsg(b->dst) : "cannot open the copy");
        backup_free(b, 1);
        return -1;
    }
    *out = b;
    return 0;
}

int storage_backup_step(storage_backup *b, int pages, char *err, size_t err_len)
{
    /* Writes by this server between steps go through the same connection,
     * and SQLite carries them into the copy as they happen: the finished
     * copy is the database as it is at the last step. */
    int rc = sqlite3_backup_step(b->b, pages);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return 1;
    int fin = sqlite3_backup_finish(b->b);
    b->b = NULL;
    if (rc == SQLITE_DONE)
        rc = fin;
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "backup failed: %s", sqlite3_errstr(rc));
        backup_free(b, 1);
        return -1;
    }
    rc = sqlite3_close(b->dst);
    b->dst = NULL;
    if (rc != SQLITE_OK || rename(b->tmp, b->path) != 0) {
        snprintf(err, err_len, "cannot put the copy in place at %s: %s", b->path,
                 rc != SQLITE_OK ? sqlite3_errstr(rc) : strerror(errno));
        backup_free(b, 1);
        return -1;
    }
    backup_free(b, 0);
    return 0;
}

void storage_backup_abort(storage_backup *b)
{
    if (b)
        backup_free(b, 1);
}
