#include "storage.h"
#include "workers.h"
#include "safemessenger/testhost_suite.h"

/* SQLite's own matters: WAL and pragmas, file modes, the lock file,
 * backup, integrity, checkpoints. What every engine must do alike
 * (statements, transactions, migrations) is test_storage_sql.c, which
 * runs on SQLite here and on PostgreSQL as services.storage_pg. */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Every test works in its own mkdtemp directory: <dir>/data/test.db. */
static char tmp_dir[64];
static char data_dir[96];
static char db_path[128];

static void path_join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < size);
}

static void setup_dir(void)
{
    int n = snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sm_test_storage_XXXXXX");
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof tmp_dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmp_dir));
    path_join(data_dir, sizeof data_dir, tmp_dir, "data");
    path_join(db_path, sizeof db_path, data_dir, "test.db");
}

static void unlink_if_present(const char *path)
{
    if (unlink(path) != 0)
        CU_ASSERT_EQUAL(errno, ENOENT);
}

static void cleanup_dir(void)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", ".lock"};
    char path[160];
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        int n = snprintf(path, sizeof path, "%s%s", db_path, suffixes[i]);
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof path);
        unlink_if_present(path);
    }
    path_join(path, sizeof path, tmp_dir, "log.txt");
    unlink_if_present(path);
    if (rmdir(data_dir) != 0)
        CU_ASSERT_EQUAL(errno, ENOENT);
    CU_ASSERT_EQUAL(rmdir(tmp_dir), 0); /* fails if anything was left behind */
}

static storage *open_db(void)
{
    storage *s = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(db_path, "normal", &s), SM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    return s;
}

/* Runs a query that returns one integer. */
static int64_t query_int(storage *s, const char *sql)
{
    sm_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_prepare(s, "test", sql, &st), SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_step(st), SM_ROW);
    int64_t v = storage_column_int64(st, 0);
    storage_finalize(st);
    return v;
}

static void query_text(storage *s, const char *sql, char *buf, size_t size)
{
    sm_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_prepare(s, "test", sql, &st), SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_step(st), SM_ROW);
    const char *text = storage_column_text(st, 0);
    int n = snprintf(buf, size, "%s", text ? text : "(null)");
    CU_ASSERT_FATAL(n >= 0 && (size_t)n < size);
    storage_finalize(st);
}

static int table_exists(storage *s, const char *name)
{
    sm_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(
        storage_prepare(s, "test", "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
                        &st),
        SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_bind_text(st, 1, name, -1), SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_step(st), SM_ROW);
    int64_t n = storage_column_int64(st, 0);
    storage_finalize(st);
    return n == 1;
}

/* stderr capture, to check what a failure logs. */
static int saved_stderr = -1;
static char log_path[128];

static void capture_begin(void)
{
    path_join(log_path, sizeof log_path, tmp_dir, "log.txt");
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    CU_ASSERT_FATAL(saved_stderr >= 0);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
}

static void capture_end(char *buf, size_t size)
{
    fflush(stderr);
    CU_ASSERT_FATAL(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(log_path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    fputs(buf, stderr); /* keep the lines visible in the test output */
}

/* ---- opening ----------------------------------------------------------- */

static void storage_file_db_uses_wal_and_configured_pragmas(void)
{
    setup_dir();
    storage *s = open_db();
    char mode[16];
    query_text(s, "PRAGMA journal_mode", mode, sizeof mode);
    CU_ASSERT_STRING_EQUAL(mode, "wal");
    CU_ASSERT_EQUAL(query_int(s, "PRAGMA synchronous"), 1); /* NORMAL */
    CU_ASSERT_EQUAL(query_int(s, "PRAGMA foreign_keys"), 1);
    CU_ASSERT_EQUAL(query_int(s, "PRAGMA busy_timeout"), 5000);
    CU_ASSERT_TRUE(table_exists(s, "sm_migrations"));
    storage_close(s);

    s = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(db_path, "extra", &s), SM_OK);
    CU_ASSERT_EQUAL(query_int(s, "PRAGMA synchronous"), 3); /* EXTRA */
    storage_close(s);
    cleanup_dir();
}

static void storage_rejects_unknown_synchronous_mode(void)
{
    setup_dir();
    storage *s = (storage *)&s; /* must stay untouched */
    storage *before = s;
    CU_ASSERT_EQUAL(storage_open(db_path, "fast", &s), SM_EINVAL);
    CU_ASSERT_EQUAL(storage_open(db_path, "NORMAL ", &s), SM_EINVAL);
    CU_ASSERT_PTR_EQUAL(s, before);
    CU_ASSERT_EQUAL(access(db_path, F_OK), -1); /* nothing created */
    cleanup_dir();
}

static void storage_creates_parent_0700_and_files_0600(void)
{
    setup_dir();
    struct stat st;
    CU_ASSERT_EQUAL(stat(data_dir, &st), -1);
    storage *s = open_db();
    CU_ASSERT_EQUAL_FATAL(stat(data_dir, &st), 0);
    CU_ASSERT_TRUE(S_ISDIR(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
    CU_ASSERT_EQUAL_FATAL(stat(db_path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* The WAL written by a change gets the database file's mode. */
    CU_ASSERT_EQUAL(storage_exec(s, "CREATE TABLE t(x)"), SM_OK);
    char wal[160];
    int n = snprintf(wal, sizeof wal, "%s-wal", db_path);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof wal);
    CU_ASSERT_EQUAL_FATAL(stat(wal, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    storage_close(s);
    /* A clean close checkpoints the WAL into the database and removes it. */
    CU_ASSERT_EQUAL(access(wal, F_OK), -1);
    cleanup_dir();
}

/* A database left readable by others (an older server, a copy, a restore)
 * is put back to 0600 with its WAL and shared-memory files before use. */
static void storage_fixes_a_database_readable_by_others(void)
{
    setup_dir();
    storage *s = open_db();
    CU_ASSERT_EQUAL(storage_exec(s, "CREATE TABLE t(x)"), SM_OK);
    storage_close(s);
    char wal[160], shm[160];
    snprintf(wal, sizeof wal, "%s-wal", db_path);
    snprintf(shm, sizeof shm, "%s-shm", db_path);
    CU_ASSERT_EQUAL_FATAL(chmod(db_path, 0644), 0);
    int fd = open(wal, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(fchmod(fd, 0644), 0);
    close(fd);
    char log[4096];
    capture_begin();
    s = open_db();
    capture_end(log, sizeof log);
    struct stat st;
    CU_ASSERT_EQUAL(stat(db_path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(stat(wal, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(stat(shm, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT(strstr(log, "was accessible to other users (mode 644); set it to 0600") != NULL);
    storage_close(s);
    cleanup_dir();
}

/* Two servers on one database would both run the purge timers and own
 * sessions: the second is refused, and told who holds it. */
static void storage_second_open_of_a_database_is_refused_naming_the_pid(void)
{
    setup_dir();
    storage *s = open_db(), *second = NULL;
    char log[4096], want[128];
    capture_begin();
    int rc = storage_open(db_path, "normal", &second);
    capture_end(log, sizeof log);
    CU_ASSERT_EQUAL(rc, SM_ERROR);
    CU_ASSERT_PTR_NULL(second);
    snprintf(want, sizeof want, "is in use by another server (pid %ld)", (long)getpid());
    CU_ASSERT(strstr(log, want) != NULL);
    storage_close(s);
    /* Released at close: the next server starts. */
    s = open_db();
    storage_close(s);
    cleanup_dir();
}

static void storage_memory_db_opens(void)
{
    storage *s = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(":memory:", "off", &s), SM_OK);
    char mode[16];
    query_text(s, "PRAGMA journal_mode", mode, sizeof mode);
    CU_ASSERT_STRING_EQUAL(mode, "memory");
    CU_ASSERT_EQUAL(query_int(s, "PRAGMA synchronous"), 0);
    CU_ASSERT_TRUE(storage_integrity_ok(s));
    storage_close(s);
    storage_close(NULL); /* ignored */
}

/* ---- backup and integrity --------------------------------------------- */

static const sm_migration migrations_v3[] = {
    {1, "CREATE TABLE m1(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"},
    {2, "CREATE TABLE m2(x INTEGER); INSERT INTO m2 VALUES(7);"},
    {3, "CREATE TABLE m3(y INTEGER); INSERT INTO m2 VALUES(8);"},
    {0, NULL},
};

/* The online backup in steps: writes made between steps are in the copy,
 * the copy is 0600, and an aborted one leaves no file behind. */
static void backup_in_steps_copies_writes_made_meanwhile(void)
{
    setup_dir();
    storage *s = open_db();
    CU_ASSERT_EQUAL(storage_exec(s, "CREATE TABLE t (v BLOB);"
                                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1"
                                    " FROM n WHERE i < 200) INSERT INTO t SELECT"
                                    " randomblob(4000) FROM n"), 0);
    char copy[160], err[256] = "";
    path_join(copy, sizeof copy, tmp_dir, "copy.db");
    storage_backup *b = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_backup_begin(s, copy, &b, err, sizeof err), 0);
    int steps = 0, rc;
    while ((rc = storage_backup_step(b, 16, err, sizeof err)) == 1) {
        if (++steps == 3)
            CU_ASSERT_EQUAL(storage_exec(s, "INSERT INTO t VALUES (x'01')"), 0);
        CU_ASSERT_FATAL(steps < 10000);
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(steps > 3);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(copy, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    storage *c = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(copy, "normal", &c), SM_OK);
    CU_ASSERT_EQUAL(query_int(c, "SELECT count(*) FROM t"), 201);
    CU_ASSERT_TRUE(storage_integrity_ok(c));
    storage_close(c);

    /* Aborted half-way: neither the temporary file nor a new copy. */
    char again[160];
    path_join(again, sizeof again, tmp_dir, "again.db");
    CU_ASSERT_EQUAL_FATAL(storage_backup_begin(s, again, &b, err, sizeof err), 0);
    CU_ASSERT_EQUAL(storage_backup_step(b, 1, err, sizeof err), 1);
    storage_backup_abort(b);
    CU_ASSERT_EQUAL(access(again, F_OK), -1);
    /* No directory to write in: refused with a reason. */
    CU_ASSERT_EQUAL(storage_backup_begin(s, "/nonexistent-dir/x.db", &b, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot create"));
    storage_close(s);
    static const char *const left[] = {"copy.db", "copy.db.lock", "copy.db-wal", "copy.db-shm"};
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        char p[160];
        path_join(p, sizeof p, tmp_dir, left[i]);
        unlink_if_present(p);
    }
    cleanup_dir();
}

static void integrity_check_ok_on_fresh_file_db(void)
{
    setup_dir();
    storage *s = open_db();
    CU_ASSERT_EQUAL(storage_migrate(s, "plug", migrations_v3), 0);
    CU_ASSERT_EQUAL(storage_integrity_ok(s), 1);
    storage_close(s);
    cleanup_dir();
}

/* ---- WAL checkpoints on the worker pool -------------------------------- */

/* In WAL mode only a checkpoint writes the database file itself (commits
 * append to the -wal). SQLite's unix VFS writes through its pwrite64
 * entry, which these tests replace (xSetSystemCall) to see which thread
 * wrote, and to hold a worker in the middle of a checkpoint. */
static struct {
    pthread_t caller; /* the test's thread */
    dev_t dev;
    ino_t ino;
    atomic_int on_caller, on_worker;
    atomic_int worker_writing; /* a worker thread reached a write */
    atomic_int hold;           /* workers' writes wait while set */
    atomic_int fail;           /* workers' writes fail (EIO) while set */
} db_writes;
static sqlite3_syscall_ptr real_pwrite64;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ssize_t watched_pwrite64(int fd, const void *buf, size_t n, off_t offset)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_dev == db_writes.dev && st.st_ino == db_writes.ino) {
        if (pthread_equal(pthread_self(), db_writes.caller)) {
            atomic_fetch_add(&db_writes.on_caller, 1);
        } else {
            atomic_fetch_add(&db_writes.on_worker, 1);
            atomic_store(&db_writes.worker_writing, 1);
            while (atomic_load(&db_writes.hold))
                sleep_ms(1);
            if (atomic_load(&db_writes.fail)) {
                errno = EIO;
                return -1;
            }
        }
    }
    return ((ssize_t(*)(int, const void *, size_t, off_t))real_pwrite64)(fd, buf, n, offset);
}

/* Only while no other thread uses SQLite: the VFS reads its table unlocked. */
static void watch_db_writes(void)
{
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(db_path, &st), 0);
    db_writes.caller = pthread_self();
    db_writes.dev = st.st_dev;
    db_writes.ino = st.st_ino;
    atomic_store(&db_writes.on_caller, 0);
    atomic_store(&db_writes.on_worker, 0);
    atomic_store(&db_writes.worker_writing, 0);
    atomic_store(&db_writes.hold, 0);
    atomic_store(&db_writes.fail, 0);
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    CU_ASSERT_PTR_NOT_NULL_FATAL(vfs);
    /* The default first, should a failed test have left ours in place. */
    CU_ASSERT_EQUAL_FATAL(vfs->xSetSystemCall(vfs, "pwrite64", NULL), SQLITE_OK);
    real_pwrite64 = vfs->xGetSystemCall(vfs, "pwrite64");
    CU_ASSERT_PTR_NOT_NULL_FATAL(real_pwrite64);
    CU_ASSERT_EQUAL_FATAL(
        vfs->xSetSystemCall(vfs, "pwrite64", (sqlite3_syscall_ptr)watched_pwrite64), SQLITE_OK);
}

static void unwatch_db_writes(void)
{
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    CU_ASSERT_EQUAL(vfs->xSetSystemCall(vfs, "pwrite64", NULL), SQLITE_OK); /* the default */
}

/* Each row fills a page of its own, so a transaction appends a little
 * more than ROWS_PER_TXN pages to the WAL. */
enum { ROWS_PER_TXN = 250, TXN_PAGES = ROWS_PER_TXN + 5 };

static void create_blob_table(storage *s)
{
    CU_ASSERT_EQUAL_FATAL(storage_exec(s, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"), SM_OK);
}

static void write_txn(storage *s)
{
    char sql[160];
    int n = snprintf(sql, sizeof sql,
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                     " WHERE i < %d) INSERT INTO t(b) SELECT zeroblob(3500) FROM n",
                     ROWS_PER_TXN);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof sql);
    CU_ASSERT_EQUAL_FATAL(storage_begin(s), SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_exec(s, sql), SM_OK);
    CU_ASSERT_EQUAL_FATAL(storage_commit(s), SM_OK);
}

/* The -wal file's size; it is never shortened while open, so this is the
 * longest the WAL has been. */
static long long wal_file_size(void)
{
    char path[160];
    int n = snprintf(path, sizeof path, "%s-wal", db_path);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof path);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    return (long long)st.st_size;
}

/* A WAL of `pages` frames: a 32-byte header, each frame 24 + 4096. */
static long long wal_bytes(long long pages)
{
    return 32 + pages * (24 + 4096);
}

static int wait_for_worker_write(void)
{
    for (int i = 0; i < 10000 && !atomic_load(&db_writes.worker_writing); i++)
        sleep_ms(1);
    return atomic_load(&db_writes.worker_writing);
}

/* A file database with table t, checkpoints on a pool of one worker
 * thread, its writes to the database file watched. */
static storage *start_checkpointed_db(const char *synchronous, workers **pool)
{
    setup_dir();
    storage *s = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(db_path, synchronous, &s), SM_OK);
    create_blob_table(s);
    CU_ASSERT_EQUAL_FATAL(workers_start_nice(1, 0, NULL, NULL, pool), 0);
    watch_db_writes();
    CU_ASSERT_EQUAL_FATAL(storage_start_checkpoints(s, *pool), SM_OK);
    return s;
}

/* Closes s (unless the test did), stops the pool, and checks that every
 * row written is in the reopened database. */
static void finish_checkpointed_db(storage *s, workers *pool, int64_t rows)
{
    storage_close(s);
    workers_stop(pool);
    unwatch_db_writes();
    s = open_db();
    CU_ASSERT_EQUAL(query_int(s, "SELECT count(*) FROM t"), rows);
    CU_ASSERT_EQUAL(storage_integrity_ok(s), 1);
    storage_close(s);
    cleanup_dir();
}

static void checkpoints_run_on_a_worker_and_the_wal_restarts(void)
{
    workers *pool = NULL;
    storage *s = start_checkpointed_db("normal", &pool);
    CU_ASSERT_EQUAL(storage_start_checkpoints(s, pool), SM_ESTATE);
    enum { TXNS = 6 * STORAGE_CHECKPOINT_PAGES / TXN_PAGES };
    for (int i = 0; i < TXNS; i++) {
        write_txn(s);
        /* Each job finishes before the next commit, so it copies the whole
         * WAL and the next transaction starts the WAL again. */
        workers_drain(pool);
    }
    CU_ASSERT(atomic_load(&db_writes.on_worker) > 0);
    CU_ASSERT_EQUAL(atomic_load(&db_writes.on_caller), 0);
    /* 6 times the threshold was written; the WAL never held much more than
     * the threshold and one transaction. */
    CU_ASSERT(wal_file_size() <= wal_bytes(STORAGE_CHECKPOINT_PAGES + 2 * TXN_PAGES));
    finish_checkpointed_db(s, pool, (int64_t)TXNS * ROWS_PER_TXN);
}

/* Under a steady stream of commits one lands during each checkpoint, so
 * no checkpoint leaves the WAL wholly copied and it never starts again:
 * past STORAGE_WAL_LIMIT_PAGES the committing thread checkpoints. */
static void wal_stays_bounded_when_every_checkpoint_overlaps_a_commit(void)
{
    /* synchronous=off: this writes tens of megabytes, fsyncs would only
     * slow it. */
    workers *pool = NULL;
    storage *s = start_checkpointed_db("off", &pool);
    int txns = 0, jobs = 0;
    while ((long long)txns * TXN_PAGES < 2LL * STORAGE_WAL_LIMIT_PAGES) {
        atomic_store(&db_writes.hold, 1);
        atomic_store(&db_writes.worker_writing, 0);
        for (int k = 0; workers_pending(pool) == 0 && k < 100; k++) {
            write_txn(s);
            txns++;
        }
        CU_ASSERT_FATAL(workers_pending(pool) == 1);
        jobs++;
        CU_ASSERT_FATAL(wait_for_worker_write());
        write_txn(s); /* while the worker copies */
        txns++;
        atomic_store(&db_writes.hold, 0);
        workers_drain(pool);
    }
    CU_ASSERT(jobs > 2 * STORAGE_WAL_LIMIT_PAGES / STORAGE_CHECKPOINT_PAGES);
    CU_ASSERT(atomic_load(&db_writes.on_worker) > 0);
    CU_ASSERT(atomic_load(&db_writes.on_caller) > 0); /* past the limit */
    CU_ASSERT(wal_file_size() <= wal_bytes(STORAGE_WAL_LIMIT_PAGES + 3 * TXN_PAGES));
    finish_checkpointed_db(s, pool, (int64_t)txns * ROWS_PER_TXN);
}

static void *release_hold_later(void *arg)
{
    (void)arg;
    sleep_ms(200);
    atomic_store(&db_writes.hold, 0);
    return NULL;
}

/* Writes until a commit queues a checkpoint job; returns the rows written. */
static int64_t write_until_job_queued(storage *s, workers *pool)
{
    int64_t rows = 0;
    while (workers_pending(pool) == 0 && rows < 100 * ROWS_PER_TXN) {
        write_txn(s);
        rows += ROWS_PER_TXN;
    }
    return rows;
}

static void close_waits_for_a_running_checkpoint(void)
{
    workers *pool = NULL;
    storage *s = start_checkpointed_db("normal", &pool);
    atomic_store(&db_writes.hold, 1);
    int64_t rows = write_until_job_queued(s, pool);
    CU_ASSERT_FATAL(wait_for_worker_write()); /* the job is in its checkpoint */
    pthread_t releaser;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&releaser, NULL, release_hold_later, NULL), 0);
    char log[4096];
    capture_begin();
    storage_close(s); /* waits for the job, then closes both connections */
    capture_end(log, sizeof log);
    pthread_join(releaser, NULL);
    CU_ASSERT_EQUAL(workers_pending(pool), 0);
    CU_ASSERT_PTR_NULL(strstr(log, "fail"));
    finish_checkpointed_db(NULL, pool, rows);
}

static void failed_checkpoints_are_logged_once_a_minute(void)
{
    workers *pool = NULL;
    storage *s = start_checkpointed_db("normal", &pool);
    atomic_store(&db_writes.fail, 1);
    int64_t rows = 0;
    char log[4096];
    capture_begin();
    for (int job = 0; job < 3; job++) {
        rows += write_until_job_queued(s, pool);
        workers_drain(pool);
    }
    capture_end(log, sizeof log);
    atomic_store(&db_writes.fail, 0);
    CU_ASSERT(atomic_load(&db_writes.on_worker) >= 3);
    const char *first = strstr(log, "WAL checkpoint failed");
    CU_ASSERT_PTR_NOT_NULL(first);
    CU_ASSERT_PTR_NULL(first ? strstr(first + 1, "WAL checkpoint failed") : NULL);
    /* The commits stand, and the next checkpoint copies them. */
    rows += write_until_job_queued(s, pool);
    workers_drain(pool);
    finish_checkpointed_db(s, pool, rows);
}

static atomic_int blocker_hold;

static void blocker_work(void *arg)
{
    (void)arg;
    while (atomic_load(&blocker_hold))
        sleep_ms(1);
}

static void close_cancels_a_queued_checkpoint(void)
{
    workers *pool = NULL;
    storage *s = start_checkpointed_db("normal", &pool);
    /* The one worker is busy with another owner's job: the checkpoint
     * waits in the queue. */
    static const char blocker_owner = 0;
    atomic_store(&blocker_hold, 1);
    CU_ASSERT_EQUAL_FATAL(workers_submit(pool, &blocker_owner, blocker_work, NULL, NULL), 0);
    int64_t rows = 0;
    while (workers_queued(pool, s) == 0 && rows < 100 * ROWS_PER_TXN) {
        write_txn(s);
        rows += ROWS_PER_TXN;
    }
    CU_ASSERT_EQUAL_FATAL(workers_queued(pool, s), 1);
    /* Nothing checkpointed the WAL meanwhile, on any thread. */
    CU_ASSERT(wal_file_size() > wal_bytes(STORAGE_CHECKPOINT_PAGES));
    CU_ASSERT_EQUAL(atomic_load(&db_writes.on_caller) + atomic_load(&db_writes.on_worker), 0);
    storage_close(s); /* cancels the queued job */
    CU_ASSERT_EQUAL(workers_pending(pool), 1); /* the blocker alone */
    atomic_store(&blocker_hold, 0);
    finish_checkpointed_db(NULL, pool, rows);
}

static void checkpoints_not_started_for_a_memory_database(void)
{
    storage *s = NULL;
    CU_ASSERT_EQUAL_FATAL(storage_open(":memory:", "normal", &s), SM_OK);
    workers *pool = NULL;
    CU_ASSERT_EQUAL_FATAL(workers_start_nice(1, 0, NULL, NULL, &pool), 0);
    CU_ASSERT_EQUAL(storage_start_checkpoints(s, pool), SM_OK);
    CU_ASSERT_EQUAL(storage_exec(s, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"), SM_OK);
    CU_ASSERT_EQUAL(workers_pending(pool), 0);
    storage_close(s);
    workers_stop(pool);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(storage_file_db_uses_wal_and_configured_pragmas),
        SM_TEST(storage_rejects_unknown_synchronous_mode),
        SM_TEST(storage_creates_parent_0700_and_files_0600),
        SM_TEST(storage_fixes_a_database_readable_by_others),
        SM_TEST(storage_second_open_of_a_database_is_refused_naming_the_pid),
        SM_TEST(storage_memory_db_opens),
        SM_TEST(backup_in_steps_copies_writes_made_meanwhile),
        SM_TEST(integrity_check_ok_on_fresh_file_db),
        SM_TEST(checkpoints_run_on_a_worker_and_the_wal_restarts),
        SM_TEST(wal_stays_bounded_when_every_checkpoint_overlaps_a_commit),
        SM_TEST(failed_checkpoints_are_logged_once_a_minute),
        SM_TEST(close_waits_for_a_running_checkpoint),
        SM_TEST(close_cancels_a_queued_checkpoint),
        SM_TEST(checkpoints_not_started_for_a_memory_database),
        SM_TEST_END,
    };
    return sm_test_run("storage", cases, NULL, NULL);
}
