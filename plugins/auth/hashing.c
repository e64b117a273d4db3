#include "hashing.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <argon2.h>

typedef enum job_kind { JOB_HASH, JOB_VERIFY, JOB_DUMMY } job_kind;

typedef enum dummy_state { DUMMY_NONE, DUMMY_PENDING, DUMMY_READY } dummy_state;

typedef struct hash_job {
    struct hash_job *next;
    hashq *q;
    job_kind kind;
    sm_session_id session;
    hash_params params;
    unsigned char *password;      /* owned copy, wiped after use */
    size_t password_len;
    char *stored;                 /* verify: the encoded hash; NULL = wants the dummy */
    char *encoded;                /* output buffer: new hash or rehash */
    size_t encoded_len;
    int rehashed;                 /* verify: encoded holds a rehash */
    hash_status status;           /* written by the worker */
    int argon2_rc;                /* for the log line on failure */
    hash_cb cb;
    void *arg;
} hash_job;

struct hashq {
    const sm_host *host;
    sm_plugin *self;
    hash_params params;
    size_t max_running, max_queued;
    size_t running, waiting;
    size_t live;                  /* jobs allocated and not yet freed */
    hash_job *head, *tail;
    dummy_state dummy_state;
    char *dummy;
};

/* ---- worker side: no host calls here ---------------------------------- */

static int fill_random(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == len)
        return 0;
    /* getrandom() missing (old kernel, seccomp): the device it reads. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got == len ? 0 : -1;
}

/* 1 when `encoded` is an argon2id v19 hash with exactly these parameters.
 * Pure function, any thread. */
static int hash_params_match(const char *encoded, const hash_params *p)
{
    char prefix[96];
    int n = snprintf(prefix, sizeof prefix, "$argon2id$v=%d$m=%u,t=%u,p=%u$",
                     ARGON2_VERSION_NUMBER, p->m_kib, p->passes, p->lanes);
    if (n < 0 || (size_t)n >= sizeof prefix)
        return 0;
    return strncmp(encoded, prefix, (size_t)n) == 0;
}

static hash_status make_hash(hash_job *j)
{
    unsigned char salt[HASH_SALT_BYTES];
    if (fill_random(salt, sizeof salt) != 0) {
        j->argon2_rc = ARGON2_OK;
        return HASH_FAILED;
    }
    /* argon2 runs `lanes` threads of its own inside this job. */
    j->argon2_rc = argon2id_hash_encoded(j->params.passes, j->params.m_kib, j->params.lanes,
                                         j->password, j->password_len, salt, sizeof salt,
                                         HASH_TAG_BYTES, j->encoded, j->encoded_len);
    explicit_bzero(salt, sizeof salt);
    return j->argon2_rc == ARGON2_OK ? HASH_OK : HASH_FAILED;
}

static void job_work(void *arg)
{
    hash_job *j = arg;
    switch (j->kind) {
    case JOB_HASH:
    case JOB_DUMMY:
        j->status = make_hash(j);
        break;
    case JOB_VERIFY:
        /* Constant-time comparison inside argon2. The dummy takes this same
         * path with the configured parameters, so it costs the same. */
        j->argon2_rc = argon2id_verify(j->stored, j->password, j->password_len);
        if (j->argon2_rc == ARGON2_OK) {
            j->status = HASH_OK;
            if (!hash_params_match(j->stored, &j->params)) {
                /* The password is in memory only now: upgrade the hash. */
                if (make_hash(j) == HASH_OK)
                    j->rehashed = 1;
            }
        } else if (j->argon2_rc == ARGON2_VERIFY_MISMATCH) {
            j->status = HASH_MISMATCH;
        } else {
            j->status = HASH_FAILED;
        }
        break;
    }
    explicit_bzero(j->password, j->password_len);
}

/* ---- loop side --------------------------------------------------------- */

static void job_free(hash_job *j)
{
    if (!j)
        return;
    j->q->live--;
    if (j->password) {
        explicit_bzero(j->password, j->password_len);
        free(j->password);
    }
    free(j->stored);
    if (j->encoded) {
        explicit_bzero(j->encoded, j->encoded_len);
        free(j->encoded);
    }
    free(j);
}

static hash_job *job_new(hashq *q, job_kind kind, sm_session_id session, const char *password,
                         size_t len, hash_cb cb, void *arg)
{
    hash_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->q = q;
    q->live++;
    j->kind = kind;
    j->session = session;
    j->params = q->params;
    j->cb = cb;
    j->arg = arg;
    j->encoded_len = argon2_encodedlen(q->params.passes, q->params.m_kib, q->params.lanes,
                                       HASH_SALT_BYTES, HASH_TAG_BYTES, Argon2_id);
    j->encoded = calloc(1, j->encoded_len);
    /* +1: malloc(0) may return NULL, and an empty password is a password. */
    j->password = malloc(len + 1);
    if (!j->encoded || !j->password) {
        job_free(j);
        return NULL;
    }
    memcpy(j->password, password, len);
    j->password_len = len;
    return j;
}

static void push_tail(hashq *q, hash_job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->waiting++;
}

static void push_head(hashq *q, hash_job *j)
{
    j->next = q->head;
    q->head = j;
    if (!q->tail)
        q->tail = j;
    q->waiting++;
}

static hash_job *pop_head(hashq *q)
{
    hash_job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        j->next = NULL;
        q->waiting--;
    }
    return j;
}

/* Reports the job's end and frees it. */
static void finish(hash_job *j, hash_status status)
{
    const char *encoded = NULL;
    if (status == HASH_OK && (j->kind == JOB_HASH || j->rehashed))
        encoded = j->encoded;
    if (j->cb)
        j->cb(j->arg, status, encoded);
    job_free(j);
}

static int wants_dummy(const hash_job *j) { return j->kind == JOB_VERIFY && !j->stored; }

/* Fails every waiting job that needs the dummy (it could not be made). */
static void fail_dummy_waiters(hashq *q)
{
    hash_job *keep_head = NULL, *keep_tail = NULL, *failed = NULL;
    while (q->head) {
        hash_job *j = pop_head(q);
        if (wants_dummy(j)) {
            j->next = failed;
            failed = j;
            continue;
        }
        if (keep_tail)
            keep_tail->next = j;
        else
            keep_head = j;
        keep_tail = j;
    }
    for (hash_job *j = keep_head, *next; j; j = next) {
        next = j->next;
        push_tail(q, j);
    }
    while (failed) {
        hash_job *next = failed->next;
        finish(failed, HASH_FAILED);
        failed = next;
    }
}

/* The pool refused a job: it is stopping (or out of memory), and would
 * refuse the others as well. */
static void cancel_all(hashq *q)
{
    if (q->dummy_state == DUMMY_PENDING)
        q->dummy_state = DUMMY_NONE;
    hash_job *j;
    while ((j = pop_head(q)) != NULL) {
        if (j->kind == JOB_DUMMY)
            job_free(j);
        else
            finish(j, HASH_CANCELLED);
    }
}

static hash_job *dummy_job(hashq *q)
{
    /* The dummy's "password": random bytes nobody knows. */
    unsigned char secret[32];
    if (fill_random(secret, sizeof secret) != 0)
        return NULL;
    hash_job *j = job_new(q, JOB_DUMMY, 0, (const char *)secret, sizeof secret, NULL, NULL);
    explicit_bzero(secret, sizeof secret);
    return j;
}

static void job_done(void *arg, int cancelled);

/* Moves waiting jobs to the pool while fewer than max_running are there. */
static void pump(hashq *q)
{
    while (q->running < q->max_running && q->head) {
        hash_job *j = q->head;
        if (wants_dummy(j)) {
            if (q->dummy_state == DUMMY_PENDING)
                break; /* being computed: its completion pumps again */
            if (q->dummy_state == DUMMY_NONE) {
                hash_job *d = dummy_job(q);
                if (!d) {
                    q->host->log(q->self, SM_LOG_ERROR, "cannot prepare the dummy hash");
                    fail_dummy_waiters(q);
                    continue;
                }
                push_head(q, d);
                q->dummy_state = DUMMY_PENDING;
                continue;
            }
            size_t n = strlen(q->dummy) + 1;
            j->stored = malloc(n);
            if (!j->stored) {
                finish(pop_head(q), HASH_FAILED);
                continue;
            }
            memcpy(j->stored, q->dummy, n);
        }
        pop_head(q);
        /* A login storm of clients that gave up must not burn the pool. */
        if (j->session && !q->host->session_address(j->session)) {
            finish(j, HASH_ABANDONED);
            continue;
        }
        q->running++;
        if (q->host->work_submit(q->self, job_work, job_done, j) != SM_OK) {
            q->running--;
            if (j->kind == JOB_DUMMY) {
                q->dummy_state = DUMMY_NONE;
                job_free(j);
            } else {
                finish(j, HASH_CANCELLED);
            }
            cancel_all(q);
            return;
        }
    }
}

static void job_done(void *arg, int cancelled)
{
    hash_job *j = arg;
    hashq *q = j->q;
    q->running--;
    hash_status status = cancelled ? HASH_CANCELLED : j->status;
    if (status == HASH_FAILED)
        q->host->log(q->self, SM_LOG_ERROR, "password hashing failed: %s",
                     j->argon2_rc == ARGON2_OK ? "no random bytes"
                                               : argon2_error_message(j->argon2_rc));
    if (j->kind == JOB_DUMMY) {
        if (status == HASH_OK) {
            q->dummy = j->encoded;
            j->encoded = NULL;
            q->dummy_state = DUMMY_READY;
        } else {
            q->dummy_state = DUMMY_NONE;
            if (!cancelled)
                fail_dummy_waiters(q);
        }
        job_free(j);
    } else {
        finish(j, status);
    }
    pump(q);
}

int hashq_new(const sm_host *host, sm_plugin *self, const hash_params *params,
              size_t max_running, size_t max_queued, hashq **out)
{
    if (!host || !params || max_running == 0 || !out)
        return SM_EINVAL;
    hashq *q = calloc(1, sizeof *q);
    if (!q)
        return SM_ENOMEM;
    q->host = host;
    q->self = self;
    q->params = *params;
    q->max_running = max_running;
    q->max_queued = max_queued;
    *out = q;
    return SM_OK;
}

void hashq_set_params(hashq *q, const hash_params *params)
{
    if (q && params)
        q->params = *params;
}

int hashq_start(hashq *q)
{
    if (q->dummy_state != DUMMY_NONE)
        return SM_OK;
    hash_job *d = dummy_job(q);
    if (!d)
        return SM_ENOMEM;
    push_head(q, d);
    q->dummy_state = DUMMY_PENDING;
    pump(q);
    return SM_OK;
}

size_t hashq_free(hashq *q)
{
    if (!q)
        return 0;
    hash_job *j;
    while ((j = pop_head(q)) != NULL) {
        if (j->kind == JOB_DUMMY)
            job_free(j);
        else
            finish(j, HASH_CANCELLED);
    }
    if (q->running > 0) {
        q->host->log(q->self, SM_LOG_ERROR,
                     "%zu password hashing jobs still on the worker pool at unload; "
                     "their state is leaked", q->running);
        return q->live;
    }
    size_t left = q->live;
    if (q->dummy) {
        explicit_bzero(q->dummy, strlen(q->dummy));
        free(q->dummy);
    }
    free(q);
    return left;
}

static int enqueue(hashq *q, job_kind kind, sm_session_id session, const char *password,
                   size_t len, const char *encoded, hash_cb cb, void *arg)
{
    if (!q || !password || !cb)
        return SM_EINVAL;
    if (q->waiting >= q->max_queued && q->running >= q->max_running)
        return SM_EBUSY;
    hash_job *j = job_new(q, kind, session, password, len, cb, arg);
    if (!j)
        return SM_ENOMEM;
    if (encoded) {
        size_t n = strlen(encoded) + 1;
        j->stored = malloc(n);
        if (!j->stored) {
            job_free(j);
            return SM_ENOMEM;
        }
        memcpy(j->stored, encoded, n);
    }
    push_tail(q, j);
    pump(q);
    return SM_OK;
}

int hashq_hash(hashq *q, sm_session_id session, const char *password, size_t len, hash_cb cb,
               void *arg)
{
    return enqueue(q, JOB_HASH, session, password, len, NULL, cb, arg);
}

int hashq_verify(hashq *q, sm_session_id session, const char *password, size_t len,
                 const char *encoded, hash_cb cb, void *arg)
{
    return enqueue(q, JOB_VERIFY, session, password, len, encoded, cb, arg);
}

