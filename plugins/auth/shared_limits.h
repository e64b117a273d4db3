/* The failed-login and registration limits shared by the nodes of a
 * cluster (shared_limits.c). */
#ifndef AUTH_SHARED_LIMITS_H
#define AUTH_SHARED_LIMITS_H

#include "auth.h"

/* Tells the other nodes of a failed login from address (a rate-limit key,
 * limits.h), for the folded name user (NULL: the name was no user name),
 * or of a registration attempt from address. This node counted it. */
void shared_login_failed(auth *a, const char *address, const char *user);
void shared_registered(auth *a, const char *address);

/* sm_broadcast_fn: counts what another node told. */
void shared_on_broadcast(const json_t *payload, void *plugin_data);

#endif
