/* The failed-login and registration limits across the nodes of a cluster.
 * Each node counts what happens on it and broadcasts it (sm_host.broadcast);
 * the others count it too, at their own clock. So every node's tables hold
 * the whole cluster's events and the checks stay local and synchronous
 * (limits.h). What is not shared: attempts in flight (a guess being hashed
 * on one node is not yet counted on another) and the hash queue's share
 * per address, which protects each node's own CPU. An event reaches the
 * others within a Redis round trip, so a burst spread over several nodes
 * can pass a limit by what arrives in that moment; without Redis each
 * node limits on its own events (the server logs the outage). */
#include "shared_limits.h"

#include <string.h>

#define KIND_LOGIN_FAILED "login_failed"
#define KIND_REGISTERED "registered"

static void tell(auth *a, const char *kind, const char *address, const char *user)
{
    const sm_host *h = a->host;
    if (!SM_HOST_HAS(h, broadcast))
        return;
    json_t *msg = json_pack("{s:s, s:s, s:s?}", "kind", kind, "address", address, "user", user);
    /* SM_EBUSY (no Redis) is logged by the server; the local count stands. */
    if (!msg || h->broadcast(a->self, msg) == SM_ENOMEM)
        h->log(a->self, SM_LOG_ERROR, "%s not shared with the other nodes: out of memory",
               kind);
    json_decref(msg);
}

void shared_login_failed(auth *a, const char *address, const char *user)
{
    tell(a, KIND_LOGIN_FAILED, address, user);
}

void shared_registered(auth *a, const char *address)
{
    tell(a, KIND_REGISTERED, address, NULL);
}

void shared_on_broadcast(const json_t *payload, void *plugin_data)
{
    auth *a = plugin_data;
    const char *kind = json_string_value(json_object_get(payload, "kind"));
    const char *address = json_string_value(json_object_get(payload, "address"));
    const char *user = json_string_value(json_object_get(payload, "user"));
    double now = a->host->now();
    if (!kind || !address || strlen(address) > RATELIMIT_KEY_MAX ||
        (user && strlen(user) > RATELIMIT_KEY_MAX))
        return;
    if (strcmp(kind, KIND_LOGIN_FAILED) == 0) {
        ratelimit_add(a->fail_addr, address, now);
        if (user)
            ratelimit_add(a->fail_user, user, now);
    } else if (strcmp(kind, KIND_REGISTERED) == 0) {
        ratelimit_add(a->reg_addr, address, now);
    }
}
