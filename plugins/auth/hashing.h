/* Password hashing for the auth plugin: argon2id through libargon2, run on
 * the core's worker pool, never on the loop thread.
 *
 * At most `max_running` jobs are on the pool at once (auth.max_concurrent_hashes);
 * the rest wait, in arrival order, in this module's own queue (at most
 * `max_queued`), and the next one is submitted when one completes. So a
 * login storm takes a bounded share of the pool, which the core also uses
 * for handshakes.
 *
 * Hashes are argon2's encoded form
 *   $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt b64>$<hash b64>
 * with a fresh 16-byte salt from getrandom() and a 32-byte hash.
 *
 * Passwords are copied into buffers this module owns and wiped
 * (explicit_bzero) on the worker as soon as the job's hashing is over, or
 * when a job is dropped without running. Loop thread only, except where
 * noted. */
#ifndef AUTH_HASHING_H
#define AUTH_HASHING_H

#include <stddef.h>
#include <stdint.h>

#include "safemessenger/plugin.h"

#define HASH_SALT_BYTES 16
#define HASH_TAG_BYTES 32

typedef struct hash_params {
    uint32_t m_kib;   /* memory in KiB */
    uint32_t passes;  /* t */
    uint32_t lanes;   /* p */
} hash_params;

typedef enum hash_status {
    HASH_OK = 0,        /* hash made, or the password matched */
    HASH_MISMATCH,      /* verify: wrong password (always, against the dummy) */
    HASH_FAILED,        /* argon2, randomness or memory failure (logged) */
    HASH_CANCELLED,     /* not run: the pool refused it (server stopping) */
    HASH_ABANDONED      /* not run: its session was gone when its turn came */
} hash_status;

/* Completion, on the loop thread, exactly once per queued job. `encoded`:
 * for hashq_hash with HASH_OK the new hash; for hashq_verify with HASH_OK
 * the password rehashed with the configured parameters when the stored
 * hash used others, else NULL. Valid during the call only. */
typedef void (*hash_cb)(void *arg, hash_status status, const char *encoded);

typedef struct hashq hashq;

/* Checks nothing about the parameters beyond argon2's own minimums (the
 * plugin enforces its policy before). Returns SM_OK or SM_ENOMEM. */
int hashq_new(const sm_host *host, sm_plugin *self, const hash_params *params,
              size_t max_running, size_t max_queued, hashq **out);

/* Queues the computation of the dummy hash that verifications of unknown
 * users run against (a hash of random bytes with the configured
 * parameters), so that they cost what a real verification costs. Call from
 * start(). Verifications against the dummy wait until it exists. */
int hashq_start(hashq *q);
/* argon2id parameters for hashes submitted from now on (a configuration
 * reload); stored hashes with other parameters are rehashed at login, as
 * after a restart. */
void hashq_set_params(hashq *q, const hash_params *params);

/* Frees the queue. Jobs still waiting get HASH_CANCELLED first. Call after
 * the worker pool has stopped (fini): a job still on the pool then would
 * complete into freed memory, so the queue is leaked instead (logged).
 * Returns how many jobs were not freed (0 when every job ended). */
size_t hashq_free(hashq *q);

/* Queues hashing `password` (len bytes, copied) into a new encoded hash.
 * `session` is the session the result is for: if it is gone when the job's
 * turn comes, the job does not run (HASH_ABANDONED); 0 = always run.
 * Returns SM_OK (cb will run, possibly before this call returns, when the
 * pool refuses the job), SM_EBUSY (queue full; cb will not run) or
 * SM_ENOMEM. */
int hashq_hash(hashq *q, sm_session_id session, const char *password, size_t len,
               hash_cb cb, void *arg);

/* Queues checking `password` against `encoded` (copied; NULL = the dummy
 * hash, for unknown users). On a match whose stored parameters differ from
 * the configured ones, the password is rehashed in the same job. Returns
 * as hashq_hash. */
int hashq_verify(hashq *q, sm_session_id session, const char *password, size_t len,
                 const char *encoded, hash_cb cb, void *arg);

#endif
