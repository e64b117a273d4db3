/* A hash map from byte-string keys to pointers (open addressing, grows as
 * needed). Keys are copied; values are borrowed. Used for sessions by id,
 * users online, topics and topic members, so each lookup is O(1). */
#ifndef SM_CORE_HASHMAP_H
#define SM_CORE_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hashmap hashmap;

typedef struct hashmap_iter {
    const hashmap *map;
    size_t index;
} hashmap_iter;

hashmap *hashmap_new(void);
/* free_value may be NULL; it is called for each remaining value. */
void hashmap_free(hashmap *map, void (*free_value)(void *value));

/* Inserts or replaces. Returns 0, or -1 on allocation failure (map unchanged). */
int hashmap_put(hashmap *map, const void *key, size_t key_len, void *value);
/* NULL when absent. */
void *hashmap_get(const hashmap *map, const void *key, size_t key_len);
/* Removes and returns the value, NULL when absent. */
void *hashmap_remove(hashmap *map, const void *key, size_t key_len);
size_t hashmap_count(const hashmap *map);

/* Convenience for 64-bit integer keys (stored in host byte order). */
int hashmap_put_u64(hashmap *map, uint64_t key, void *value);
void *hashmap_get_u64(const hashmap *map, uint64_t key);
void *hashmap_remove_u64(hashmap *map, uint64_t key);

/* Iteration. The map must not be modified while iterating, except by
 * hashmap_remove of the entry just returned (safe: nothing is skipped or
 * seen twice). */
void hashmap_iter_init(const hashmap *map, hashmap_iter *it);
/* Returns 1 and sets the out-parameters (any may be NULL) for the next
 * entry, 0 at the end. */
int hashmap_iter_next(hashmap_iter *it, const void **key, size_t *key_len, void **value);

#endif
