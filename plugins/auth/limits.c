#include "limits.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RL_MIN_BUCKETS 64

typedef struct rl_entry {
    struct rl_entry *chain;       /* next in the hash bucket */
    struct rl_entry *older, *newer; /* touch order, least recent first */
    size_t pending;               /* attempts in flight */
    size_t count, cap;            /* event times held / allocated */
    double *times;                /* in the order recorded, oldest first */
    char key[RATELIMIT_KEY_MAX + 1];
} rl_entry;

struct ratelimit {
    size_t limit;
    double window;
    size_t max_keys;
    rl_entry **buckets;           /* power-of-two count */
    size_t nbuckets;
    size_t size;
    rl_entry *least, *most;       /* touch order */
};

static uint64_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

static rl_entry **bucket_of(const ratelimit *rl, const char *key)
{
    return &rl->buckets[hash_key(key) & (rl->nbuckets - 1)];
}

int ratelimit_new(size_t limit, double window, size_t max_keys, ratelimit **out)
{
    if (limit == 0 || !(window > 0) || max_keys == 0 || !out)
        return -1;
    ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return -1;
    rl->nbuckets = RL_MIN_BUCKETS;
    rl->buckets = calloc(rl->nbuckets, sizeof *rl->buckets);
    if (!rl->buckets) {
        free(rl);
        return -1;
    }
    rl->limit = limit;
    rl->window = window;
    rl->max_keys = max_keys;
    *out = rl;
    return 0;
}

static void entry_free(rl_entry *e)
{
    free(e->times);
    free(e);
}

void ratelimit_set(ratelimit *rl, size_t limit, double window)
{
    if (!rl || limit == 0 || !(window > 0))
        return;
    /* A key never holds more than `limit` times: keep the newest. */
    for (rl_entry *e = rl->least; e; e = e->newer) {
        if (e->count > limit) {
            memmove(e->times, e->times + (e->count - limit), limit * sizeof *e->times);
            e->count = limit;
        }
    }
    rl->limit = limit;
    rl->window = window;
}

void ratelimit_free(ratelimit *rl)
{
    if (!rl)
        return;
    for (rl_entry *e = rl->least, *next; e; e = next) {
        next = e->newer;
        entry_free(e);
    }
    free(rl->buckets);
    free(rl);
}


static void order_unlink(ratelimit *rl, rl_entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        rl->least = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        rl->most = e->older;
    e->older = e->newer = NULL;
}

static void order_append(ratelimit *rl, rl_entry *e)
{
    e->older = rl->most;
    e->newer = NULL;
    if (rl->most)
        rl->most->newer = e;
    else
        rl->least = e;
    rl->most = e;
}

static void touch(ratelimit *rl, rl_entry *e)
{
    if (rl->most != e) {
        order_unlink(rl, e);
        order_append(rl, e);
    }
}

static rl_entry *find(const ratelimit *rl, const char *key)
{
    for (rl_entry *e = *bucket_of(rl, key); e; e = e->chain)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void remove_entry(ratelimit *rl, rl_entry *e)
{
    for (rl_entry **pp = bucket_of(rl, e->key); *pp; pp = &(*pp)->chain) {
        if (*pp == e) {
            *pp = e->chain;
            break;
        }
    }
    order_unlink(rl, e);
    rl->size--;
    entry_free(e);
}

/* Doubles the bucket array when the table is fuller than one key per
 * bucket; failing to grow only makes chains longer. */
static void maybe_grow(ratelimit *rl)
{
    if (rl->size < rl->nbuckets || rl->nbuckets > SIZE_MAX / 2 / sizeof(rl_entry *))
        return;
    size_t n = rl->nbuckets * 2;
    rl_entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (rl_entry *e = rl->least; e; e = e->newer) {
        rl_entry **slot = &b[hash_key(e->key) & (n - 1)];
        e->chain = *slot;
        *slot = e;
    }
    free(rl->buckets);
    rl->buckets = b;
    rl->nbuckets = n;
}

/* Drops the key's events that have left the window. */
static void expire(const ratelimit *rl, rl_entry *e, double now)
{
    size_t drop = 0;
    while (drop < e->count && e->times[drop] + rl->window <= now)
        drop++;
    if (drop) {
        memmove(e->times, e->times + drop, (e->count - drop) * sizeof *e->times);
        e->count -= drop;
    }
}

/* The key's entry after expiring its old events; NULL when it has none
 * left (the entry is then removed) or never had any. */
static rl_entry *lookup(ratelimit *rl, const char *key, double now)
{
    rl_entry *e = find(rl, key);
    if (!e)
        return NULL;
    expire(rl, e, now);
    if (e->count == 0 && e->pending == 0) {
        remove_entry(rl, e);
        return NULL;
    }
    return e;
}

static rl_entry *lookup_or_create(ratelimit *rl, const char *key, double now)
{
    size_t len = strlen(key);
    if (len > RATELIMIT_KEY_MAX)
        return NULL;
    rl_entry *e = lookup(rl, key, now);
    if (e) {
        touch(rl, e);
        return e;
    }
    if (rl->size >= rl->max_keys) {
        /* Evict the least recently touched key with no attempt in flight:
         * forgetting a reservation would let its key exceed the limit.
         * Attempts in flight are bounded by the hash queue, so the walk
         * is short; only when every key has some is the oldest taken. */
        rl_entry *victim = rl->least;
        while (victim && victim->pending > 0)
            victim = victim->newer;
        if (!victim)
            victim = rl->least;
        if (victim)
            remove_entry(rl, victim);
    }
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    memcpy(e->key, key, len + 1);
    rl_entry **slot = bucket_of(rl, key);
    e->chain = *slot;
    *slot = e;
    order_append(rl, e);
    rl->size++;
    maybe_grow(rl);
    return e;
}

int ratelimit_blocked(ratelimit *rl, const char *key, double now, double *retry_after)
{
    if (strlen(key) > RATELIMIT_KEY_MAX)
        return 0;
    rl_entry *e = lookup(rl, key, now);
    if (!e || e->count + e->pending < rl->limit)
        return 0;
    /* Blocked because of attempts in flight: they end within a hash's
     * time, and if they succeed the key is below its limit again. */
    double wait = 1.0;
    if (e->count >= rl->limit) {
        wait = ceil(e->times[0] + rl->window - now);
        /* A wall clock that jumped back must not block for longer than
         * one window. */
        if (wait > ceil(rl->window))
            wait = ceil(rl->window);
        if (wait < 1.0)
            wait = 1.0;
    }
    *retry_after = wait;
    return 1;
}

static int record(ratelimit *rl, rl_entry *e, double now)
{
    if (e->count == rl->limit) {
        /* Full: the oldest event makes room (more than `limit` events in
         * the window change no decision). */
        memmove(e->times, e->times + 1, (e->count - 1) * sizeof *e->times);
        e->count--;
    }
    if (e->count == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        if (cap > rl->limit)
            cap = rl->limit;
        double *t = realloc(e->times, cap * sizeof *t);
        if (!t)
            return -1;
        e->times = t;
        e->cap = cap;
    }
    e->times[e->count++] = now;
    return 0;
}

int ratelimit_add(ratelimit *rl, const char *key, double now)
{
    rl_entry *e = lookup_or_create(rl, key, now);
    if (!e)
        return -1;
    if (record(rl, e, now) != 0) {
        if (e->count == 0 && e->pending == 0)
            remove_entry(rl, e);
        return -1;
    }
    return 0;
}

int ratelimit_begin(ratelimit *rl, const char *key, double now)
{
    rl_entry *e = lookup_or_create(rl, key, now);
    if (!e)
        return -1;
    e->pending++;
    return 0;
}

void ratelimit_end(ratelimit *rl, const char *key, int counted, double now)
{
    rl_entry *e = find(rl, key);
    if (e && e->pending > 0)
        e->pending--;
    if (counted) {
        ratelimit_add(rl, key, now);
        return;
    }
    if (e)
        lookup(rl, key, now); /* drops the entry if nothing is left */
}

void ratelimit_prune(ratelimit *rl, double now)
{
    for (rl_entry *e = rl->least, *next; e; e = next) {
        next = e->newer;
        expire(rl, e, now);
        if (e->count == 0 && e->pending == 0)
            remove_entry(rl, e);
    }
}

void ratelimit_address_key(const char *address, char *out)
{
    struct in6_addr a6;
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET6, address, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            struct in_addr a4;
            memcpy(&a4, &a6.s6_addr[12], sizeof a4);
            if (inet_ntop(AF_INET, &a4, text, sizeof text)) {
                snprintf(out, RATELIMIT_KEY_MAX + 1, "%s", text);
                return;
            }
        } else {
            memset(&a6.s6_addr[8], 0, 8);
            if (inet_ntop(AF_INET6, &a6, text, sizeof text)) {
                snprintf(out, RATELIMIT_KEY_MAX + 1, "%s/64", text);
                return;
            }
        }
    }
    snprintf(out, RATELIMIT_KEY_MAX + 1, "%s", address);
}
