/* The auth plugin's state, shared by its handlers (auth.c) and its admin
 * commands (admin.c). */
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include <stddef.h>

#include "hashing.h"
#include "limits.h"
#include "safemessenger/plugin.h"
#include "settings.h"
#include "users.h"

#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024

typedef struct auth {
    const sm_host *host;
    sm_plugin *self;
    auth_settings cfg;
    users *users;
    hashq *hq;
    /* fail_addr: failures per address (failed_logins); fail_user:
     * failures per username from all addresses (failed_logins_per_user).
     * Since fail_addr stops an address after failed_logins failures, no
     * address adds more than that to a user's count in a window, so one
     * address cannot throttle a user, many together can. hash_addr: hashes
     * queued or running per address (max_hashes_per_address). */
    ratelimit *fail_user, *fail_addr, *reg_addr, *hash_addr;
    sm_timer *prune_timer;
    int unloading; /* fini: completions may no longer reply */
    size_t requests; /* auth_req allocated and not yet freed */
    sm_metric *logins; /* logins_total{result}; NULL on a host without metrics */
} auth;

/* provider.c: the users service's lookups. */
extern const sm_users_provider auth_users_provider;

#endif
