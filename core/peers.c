#include "peers.h"

#include <pthread.h>
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

/* One lock for the table: every I/O thread admits, counts and takes
 * handshakes, the logic thread sweeps and reloads the bounds. Each call is
 * a few hash lookups, so a per-address lock would buy nothing. */
struct peers {
    pthread_mutex_t lock;
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
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (!(p->map = hashmap_new())) {
        pthread_mutex_destroy(&p->lock);
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
    pthread_mutex_lock(&p->lock);
    p->max_entries = max_entries;
    p->max_sessions = (size_t)max_sessions_per_address;
    p->hs_burst = handshakes_per_minute;
    p->hs_rate = handshakes_per_minute / 60.0;
    pthread_mutex_unlock(&p->lock);
}

void peers_free(peers *p)
{
    if (!p)
        return;
    hashmap_free(p->map, free);
    pthread_mutex_destroy(&p->lock);
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
    pthread_mutex_lock(&p->lock);
    peer *e = find(p, addr);
    int admitted = !e || e->sessions < p->max_sessions;
    if (!admitted)
        *log_refused = refusal(e, now);
    pthread_mutex_unlock(&p->lock);
    return admitted;
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

int peers_admit_open(peers *p, const char *addr, double now, size_t *log_refused)
{
    *log_refused = 0;
    int rc = 1;
    pthread_mutex_lock(&p->lock);
    peer *e = find(p, addr);
    if (e && e->sessions >= p->max_sessions) {
        *log_refused = refusal(e, now);
        rc = 0;
    } else if (!(e = find_or_add(p, addr, now))) {
        rc = -1;
    } else {
        e->sessions++;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int peers_session_opened(peers *p, const char *addr, double now)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    peer *e = find_or_add(p, addr, now);
    if (!e) {
        rc = -1;
    } else if (e->sessions >= p->max_sessions) {
        /* Another thread's connection from addr was counted since
         * peers_admit said yes. Reported with the address's next logged
         * refusal: this caller has no log line to give. */
        e->refused++;
        rc = 1;
    } else {
        e->sessions++;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void peers_session_closed(peers *p, const char *addr, double now)
{
    pthread_mutex_lock(&p->lock);
    peer *e = find(p, addr);
    if (e && e->sessions > 0) {
        e->sessions--;
        if (quiet(p, e, now)) {
            hashmap_remove(p->map, addr, strlen(addr));
            free(e);
        }
    }
    pthread_mutex_unlock(&p->lock);
}

int peers_handshake_take(peers *p, const char *addr, double now, double *retry_after,
                         size_t *log_refused)
{
    *log_refused = 0;
    int taken = 0;
    pthread_mutex_lock(&p->lock);
    peer *e = find_or_add(p, addr, now);
    if (!e) {
        /* No room to remember it: refuse rather than give an unmetered
         * handshake. */
        *retry_after = bucket_retry_after(1.0 / p->hs_rate);
    } else {
        double wait = bucket_wait(&e->handshakes, p->hs_rate, p->hs_burst, 1.0, now);
        if (wait == 0) {
            bucket_take(&e->handshakes, 1.0);
            taken = 1;
        } else {
            *retry_after = bucket_retry_after(wait);
            *log_refused = refusal(e, now);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return taken;
}

size_t peers_sweep(peers *p, double now)
{
    size_t n = 0;
    hashmap_iter it;
    const void *key;
    size_t key_len;
    void *value;
    pthread_mutex_lock(&p->lock);
    hashmap_iter_init(p->map, &it);
    while (hashmap_iter_next(&it, &key, &key_len, &value)) {
        if (quiet(p, value, now)) {
            hashmap_remove(p->map, key, key_len);
            free(value);
            n++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

size_t peers_count(const peers *p)
{
    peers *mp = (peers *)p; /* the lock is the only mutable part of a const table */
    pthread_mutex_lock(&mp->lock);
    size_t n = hashmap_count(p->map);
    pthread_mutex_unlock(&mp->lock);
    return n;
}

size_t peers_sessions(const peers *p, const char *addr)
{
    peers *mp = (peers *)p; /* as in peers_count */
    pthread_mutex_lock(&mp->lock);
    peer *e = find(p, addr);
    size_t n = e ? e->sessions : 0;
    pthread_mutex_unlock(&mp->lock);
    return n;
}
