#include "peers.h"

#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "hashmap.h"

typedef struct peer {
    size_t sessions;
    bucket handshakes; /* refilled at handshakes_per_minute / 60 a second */
    /* Refusals (connections and handshakes) not yet in a log line. */
    size_t refused;
    double logged_at;
    int logged;
} peer;

struct peers {
    hashmap *map; /* address -> peer * */
    size_t max_entries;
    size_t max_sessions;
    double hs_burst;
    double hs_rate; /* attempts per second */
};

peers *peers_new(size_t max_entries, int max_sessions_per_address, int handshakes_per_minute)
{
    if (max_entries == 0 || max_sessions_per_address < 1 || handshakes_per_minute < 1)
        return NULL;
    peers *p = calloc(1, sizeof *p);
    if (!p || !(p->map = hashmap_new())) {
        free(p);
        return NULL;
    }
    p->max_entries = max_entries;
    p->max_sessions = (size_t)max_sessions_per_address;
    p->hs_burst = handshakes_per_minute;
    p->hs_rate = handshakes_per_minute / 60.0;
    return p;
}

void peers_set_limits(peers *p, size_t max_entries, int max_sessions_per_address,
                      int handshakes_per_minute)
{
    if (!p || max_entries == 0 || max_sessions_per_address < 1 || handshakes_per_minute < 1)
        return;
    p->max_entries = max_entries;
    p->max_sessions = (size_t)max_sessions_per_address;
    p->hs_burst = handshakes_per_minute;
    p->hs_rate = handshakes_per_minute / 60.0;
}

void peers_free(peers *p)
{
    if (!p)
        return;
    hashmap_free(p->map, free);
    free(p);
}

static peer *find(const peers *p, const char *addr)
{
    return hashmap_get(p->map, addr, strlen(addr));
}

/* No sessions, a whole handshake budget and no refusal logged within the
 * interval: forgetting the address changes nothing. */
static int quiet(const peers *p, peer *e, double now)
{
    return e->sessions == 0 &&
           bucket_wait(&e->handshakes, p->hs_rate, p->hs_burst, p->hs_burst, now) == 0 &&
           (!e->logged || now - e->logged_at >= PEERS_LOG_INTERVAL);
}

/* Counts a refusal; returns how many to log now (0: not yet). */
static size_t refusal(peer *e, double now)
{
    e->refused++;
    if (e->logged && now - e->logged_at < PEERS_LOG_INTERVAL)
        return 0;
    size_t n = e->refused;
    e->refused = 0;
    e->logged = 1;
    e->logged_at = now;
    return n;
}

int peers_admit(peers *p, const char *addr, double now, size_t *log_refused)
{
    *log_refused = 0;
    peer *e = find(p, addr);
    if (!e || e->sessions < p->max_sessions)
        return 1;
    *log_refused = refusal(e, now);
    return 0;
}

/* Makes room for one entry by forgetting addresses without sessions,
 * quiet or not: under a flood of addresses the table stays bounded, at
 * the price of their handshake budgets starting afresh. */
static int make_room(peers *p)
{
    hashmap_iter it;
    const void *key;
    size_t key_len;
    void *value;
    hashmap_iter_init(p->map, &it);
    while (hashmap_count(p->map) >= p->max_entries &&
           hashmap_iter_next(&it, &key, &key_len, &value)) {
        if (((peer *)value)->sessions == 0) {
            hashmap_remove(p->map, key, key_len);
            free(value);
        }
    }
    return hashmap_count(p->map) < p->max_entries ? 0 : -1;
}

static peer *find_or_add(peers *p, const char *addr, double now)
{
    peer *e = find(p, addr);
    if (e)
        return e;
    if (hashmap_count(p->map) >= p->max_entries && make_room(p) != 0)
        return NULL;
    e = calloc(1, sizeof *e);
    if (!e || hashmap_put(p->map, addr, strlen(addr), e) != 0) {
        free(e);
        return NULL;
    }
    bucket_init(&e->handshakes, p->hs_burst, now);
    return e;
}

int peers_session_opened(peers *p, const char *addr, double now)
{
    peer *e = find_or_add(p, addr, now);
    if (!e)
        return -1;
    e->sessions++;
    return 0;
}

void peers_session_closed(peers *p, const char *addr, double now)
{
    peer *e = find(p, addr);
    if (!e || e->sessions == 0)
        return;
    e->sessions--;
    if (quiet(p, e, now)) {
        hashmap_remove(p->map, addr, strlen(addr));
        free(e);
    }
}

int peers_handshake_take(peers *p, const char *addr, double now, double *retry_after,
                         size_t *log_refused)
{
    *log_refused = 0;
    peer *e = find_or_add(p, addr, now);
    if (!e) {
        /* No room to remember it: refuse rather than give an unmetered
         * handshake. */
        *retry_after = bucket_retry_after(1.0 / p->hs_rate);
        return 0;
    }
    double wait = bucket_wait(&e->handshakes, p->hs_rate, p->hs_burst, 1.0, now);
    if (wait == 0) {
        bucket_take(&e->handshakes, 1.0);
        return 1;
    }
    *retry_after = bucket_retry_after(wait);
    *log_refused = refusal(e, now);
    return 0;
}

size_t peers_sweep(peers *p, double now)
{
    size_t n = 0;
    hashmap_iter it;
    const void *key;
    size_t key_len;
    void *value;
    hashmap_iter_init(p->map, &it);
    while (hashmap_iter_next(&it, &key, &key_len, &value)) {
        if (quiet(p, value, now)) {
            hashmap_remove(p->map, key, key_len);
            free(value);
            n++;
        }
    }
    return n;
}

size_t peers_count(const peers *p) { return hashmap_count(p->map); }

size_t peers_sessions(const peers *p, const char *addr)
{
    peer *e = find(p, addr);
    return e ? e->sessions : 0;
}
