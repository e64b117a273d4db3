/* The `auth = { ... }` configuration section: keys, defaults, ranges and
 * the argon2id policy (docs/OPERATIONS.md lists them for operators). */
#ifndef AUTH_SETTINGS_H
#define AUTH_SETTINGS_H

#include <stddef.h>

#include "hashing.h"
#include "safemessenger/plugin.h"

/* OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. */
#define OWASP_M_KIB 19456
#define OWASP_PASSES 2

typedef struct auth_settings {
    hash_params argon2;             /* m 19456 KiB, t 2, p 1 */
    size_t max_concurrent_hashes;   /* 2 */
    size_t max_queued_hashes;       /* 256 */
    size_t max_hashes_per_address;  /* 2 queued or running per address */
    size_t failed_logins;           /* 5 per address ... */
    double failed_login_window;     /* ... per 60 s */
    size_t failed_logins_per_user;  /* 50 per window, > failed_logins */
    size_t registrations_per_hour;  /* 20 */
    size_t max_public_key_bytes;    /* 8192 */
    size_t max_tracked_keys;        /* 100000 per rate-limit table */
} auth_settings;

/* Reads every key (in init: the server warns about keys not read then).
 * Parameters below the OWASP minimum are refused, with a message saying
 * so, unless allow_weak_argon2 = true (then a warning is logged if `warn`:
 * a reload reads the settings twice and warns once). Returns SM_OK or
 * SM_EINVAL (the reason logged, with file and line where the host knows
 * them). */
int settings_read(const sm_host *host, sm_plugin *self, int warn, auth_settings *out);

#endif
