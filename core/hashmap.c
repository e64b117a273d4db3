/* Open addressing with Robin Hood linear probing and backward-shift
 * deletion, so removals leave no tombstones.
 *
 * The slot array does not wrap around: it has `capacity` home slots (a power
 * of two) followed by a short overflow area, and an insertion that would run
 * past the end grows the table instead. Without wrap-around, every cluster is
 * sorted by home slot and a backward shift only moves entries towards lower
 * indices. Iteration walks from the last slot down to slot 0, so removing the
 * entry just returned (hashmap_remove with its key) only moves entries that
 * were already visited: nothing is skipped or seen twice.
 *
 * Keys are usernames and topic names chosen by clients, so the hash is
 * SipHash-1-3 keyed once per process from getrandom(): an attacker cannot
 * precompute keys that collide. */
#include "hashmap.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define HASHMAP_MIN_CAPACITY 8u

struct hm_entry {
    void *value;
    size_t key_len;
    unsigned char key[]; /* key_len bytes; the struct is never zero-sized */
};

struct hm_slot {
    uint64_t hash;
    struct hm_entry *entry; /* NULL: empty */
};

struct hashmap {
    struct hm_slot *slots;
    size_t capacity; /* home slots, a power of two; 0 before the first put */
    size_t nslots;   /* capacity + overflow area */
    size_t count;
};

/* ---- SipHash-1-3 -------------------------------------------------------- */

static uint64_t sip_key[2];
static int sip_key_ok;
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static int read_urandom(void *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    return 0;
}

static void sip_seed(void)
{
    unsigned char buf[16];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = getrandom(buf + got, sizeof buf - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < sizeof buf && read_urandom(buf, sizeof buf) != 0) {
        LOG_ERROR("hashmap: no random source for the hash key");
        return;
    }
    memcpy(&sip_key[0], buf, 8);
    memcpy(&sip_key[1], buf + 8, 8);
    sip_key_ok = 1;
}

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64u - b));
}

#define SIPROUND                                                        \
    do {                                                                \
        v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);   \
        v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                        \
        v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                        \
        v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);   \
    } while (0)

static uint64_t load_le64(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static uint64_t siphash13(const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t k0 = sip_key[0], k1 = sip_key[1];
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t blocks = len / 8;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t m = load_le64(in + i * 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    const unsigned char *tail = in + blocks * 8;
    switch (len & 7u) {
    case 7: b |= (uint64_t)tail[6] << 48; /* fall through */
    case 6: b |= (uint64_t)tail[5] << 40; /* fall through */
    case 5: b |= (uint64_t)tail[4] << 32; /* fall through */
    case 4: b |= (uint64_t)tail[3] << 24; /* fall through */
    case 3: b |= (uint64_t)tail[2] << 16; /* fall through */
    case 2: b |= (uint64_t)tail[1] << 8;  /* fall through */
    case 1: b |= (uint64_t)tail[0]; break;
    default: break;
    }
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- table ------------------------------------------------------------- */

static size_t log2_size(size_t n)
{
    size_t bits = 0;
    while (n > 1) {
        n >>= 1;
        bits++;
    }
    return bits;
}

/* Robin Hood keeps probe lengths around log2(n) at 70% load; twice that plus
 * a margin makes growth by overflow practically never happen with a keyed
 * hash, and costs little memory. */
static size_t overflow_for(size_t capacity)
{
    return 2 * log2_size(capacity) + 8;
}

static inline size_t home_of(const hashmap *map, uint64_t hash)
{
    return (size_t)hash & (map->capacity - 1);
}

static int entry_matches(const struct hm_slot *slot, uint64_t hash, const void *key,
                         size_t key_len)
{
    return slot->hash == hash && slot->entry->key_len == key_len &&
           (key_len == 0 || memcmp(slot->entry->key, key, key_len) == 0);
}

/* Index of the key's slot, or SIZE_MAX. */
static size_t find_slot(const hashmap *map, uint64_t hash, const void *key, size_t key_len)
{
    if (map->count == 0)
        return SIZE_MAX;
    size_t home = home_of(map, hash);
    for (size_t i = home; i < map->nslots; i++) {
        const struct hm_slot *slot = &map->slots[i];
        /* Clusters are sorted by home slot: once we meet an empty slot or an
         * entry whose home is after ours, the key is not here. */
        if (!slot->entry || home_of(map, slot->hash) > home)
            return SIZE_MAX;
        if (entry_matches(slot, hash, key, key_len))
            return i;
    }
    return SIZE_MAX;
}

/* Places an entry known to be absent. Returns -1, with the table unchanged,
 * when the shift would run past the overflow area. */
static int place(struct hm_slot *slots, size_t capacity, size_t nslots, uint64_t hash,
                 struct hm_entry *entry)
{
    size_t mask = capacity - 1;
    size_t home = (size_t)hash & mask;
    size_t pos = home;
    while (pos < nslots && slots[pos].entry && ((size_t)slots[pos].hash & mask) <= home)
        pos++;
    size_t empty = pos;
    while (empty < nslots && slots[empty].entry)
        empty++;
    if (empty >= nslots)
        return -1;
    memmove(&slots[pos + 1], &slots[pos], (empty - pos) * sizeof *slots);
    slots[pos].hash = hash;
    slots[pos].entry = entry;
    return 0;
}

/* Moves every entry into a table of at least `capacity` home slots, doubling
 * further in the (keyed-hash) unlikely event that an overflow area fills. */
static int rehash(hashmap *map, size_t capacity)
{
    for (;;) {
        size_t overflow = overflow_for(capacity);
        if (capacity > (SIZE_MAX / sizeof(struct hm_slot)) / 2 - overflow)
            return -1;
        size_t nslots = capacity + overflow;
        struct hm_slot *slots = calloc(nslots, sizeof *slots);
        if (!slots)
            return -1;
        int ok = 1;
        for (size_t i = 0; i < map->nslots && ok; i++)
            if (map->slots[i].entry &&
                place(slots, capacity, nslots, map->slots[i].hash, map->slots[i].entry) != 0)
                ok = 0;
        if (ok) {
            free(map->slots);
            map->slots = slots;
            map->capacity = capacity;
            map->nslots = nslots;
            return 0;
        }
        free(slots);
        capacity *= 2;
    }
}

static void remove_at(hashmap *map, size_t i)
{
    size_t end = i + 1;
    /* Backward shift: pull up the following entries that are not in their
     * home slot, up to an empty slot or an entry already at home. */
    while (end < map->nslots && map->slots[end].entry &&
           home_of(map, map->slots[end].hash) < end)
        end++;
    memmove(&map->slots[i], &map->slots[i + 1], (end - i - 1) * sizeof *map->slots);
    map->slots[end - 1].entry = NULL;
    map->slots[end - 1].hash = 0;
    map->count--;
}

/* ---- public API -------------------------------------------------------- */

hashmap *hashmap_new(void)
{
    if (pthread_once(&sip_once, sip_seed) != 0 || !sip_key_ok)
        return NULL;
    return calloc(1, sizeof(hashmap));
}

void hashmap_free(hashmap *map, void (*free_value)(void *value))
{
    if (!map)
        return;
    for (size_t i = 0; i < map->nslots; i++) {
        struct hm_entry *e = map->slots[i].entry;
        if (!e)
            continue;
        if (free_value)
            free_value(e->value);
        free(e);
    }
    free(map->slots);
    free(map);
}

int hashmap_put(hashmap *map, const void *key, size_t key_len, void *value)
{
    if (!map || (!key && key_len > 0) || key_len > SIZE_MAX - sizeof(struct hm_entry))
        return -1;
    uint64_t hash = siphash13(key, key_len);
    size_t i = find_slot(map, hash, key, key_len);
    if (i != SIZE_MAX) {
        map->slots[i].entry->value = value;
        return 0;
    }
    struct hm_entry *e = malloc(sizeof *e + key_len);
    if (!e)
        return -1;
    e->value = value;
    e->key_len = key_len;
    if (key_len)
        memcpy(e->key, key, key_len);
    /* Grow before the load would exceed 70%. */
    if (map->capacity == 0 || (map->count + 1) * 10 > map->capacity * 7) {
        size_t cap = map->capacity ? map->capacity * 2 : HASHMAP_MIN_CAPACITY;
        if (cap < map->capacity || rehash(map, cap) != 0)
            goto fail;
    }
    while (place(map->slots, map->capacity, map->nslots, hash, e) != 0)
        if (map->capacity > SIZE_MAX / 2 || rehash(map, map->capacity * 2) != 0)
            goto fail;
    map->count++;
    return 0;
fail:
    free(e);
    return -1;
}

void *hashmap_get(const hashmap *map, const void *key, size_t key_len)
{
    if (!map || (!key && key_len > 0))
        return NULL;
    size_t i = find_slot(map, siphash13(key, key_len), key, key_len);
    return i == SIZE_MAX ? NULL : map->slots[i].entry->value;
}

void *hashmap_remove(hashmap *map, const void *key, size_t key_len)
{
    if (!map || (!key && key_len > 0))
        return NULL;
    size_t i = find_slot(map, siphash13(key, key_len), key, key_len);
    if (i == SIZE_MAX)
        return NULL;
    struct hm_entry *e = map->slots[i].entry;
    void *value = e->value;
    free(e);
    remove_at(map, i);
    return value;
}

size_t hashmap_count(const hashmap *map)
{
    return map ? map->count : 0;
}

int hashmap_put_u64(hashmap *map, uint64_t key, void *value)
{
    return hashmap_put(map, &key, sizeof key, value);
}

void *hashmap_get_u64(const hashmap *map, uint64_t key)
{
    return hashmap_get(map, &key, sizeof key);
}

void *hashmap_remove_u64(hashmap *map, uint64_t key)
{
    return hashmap_remove(map, &key, sizeof key);
}

void hashmap_iter_init(const hashmap *map, hashmap_iter *it)
{
    it->map = map;
    it->index = map ? map->nslots : 0;
}

int hashmap_iter_next(hashmap_iter *it, const void **key, size_t *key_len, void **value)
{
    const hashmap *map = it->map;
    if (!map)
        return 0;
    /* Downwards, see the comment at the top of the file. */
    while (it->index > 0) {
        it->index--;
        if (it->index >= map->nslots)
            continue;
        const struct hm_entry *e = map->slots[it->index].entry;
        if (!e)
            continue;
        if (key)
            *key = e->key;
        if (key_len)
            *key_len = e->key_len;
        if (value)
            *value = e->value;
        return 1;
    }
    return 0;
}
