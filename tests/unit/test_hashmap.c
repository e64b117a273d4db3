#include "hashmap.h"
#include "safemessenger/testhost_suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tag[8]; /* distinct addresses to store as values */

static void hashmap_put_get_replace_remove(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(hashmap_count(m), 0);
    CU_ASSERT_PTR_NULL(hashmap_get(m, "alice", 5));
    CU_ASSERT_EQUAL(hashmap_put(m, "alice", 5, &tag[0]), 0);
    CU_ASSERT_EQUAL(hashmap_put(m, "bob", 3, &tag[1]), 0);
    CU_ASSERT_EQUAL(hashmap_count(m), 2);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "alice", 5), &tag[0]);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "bob", 3), &tag[1]);
    /* A prefix or a longer key is a different key. */
    CU_ASSERT_PTR_NULL(hashmap_get(m, "alic", 4));
    CU_ASSERT_PTR_NULL(hashmap_get(m, "alicex", 6));

    CU_ASSERT_EQUAL(hashmap_put(m, "alice", 5, &tag[2]), 0);
    CU_ASSERT_EQUAL(hashmap_count(m), 2);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "alice", 5), &tag[2]);

    CU_ASSERT_PTR_EQUAL(hashmap_remove(m, "alice", 5), &tag[2]);
    CU_ASSERT_EQUAL(hashmap_count(m), 1);
    CU_ASSERT_PTR_NULL(hashmap_get(m, "alice", 5));
    CU_ASSERT_PTR_NULL(hashmap_remove(m, "alice", 5));
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "bob", 3), &tag[1]);
    hashmap_free(m, NULL);
}

static void hashmap_copies_keys(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    char key[16];
    int n = snprintf(key, sizeof key, "topic");
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_EQUAL(hashmap_put(m, key, 5, &tag[0]), 0);
    memset(key, 'x', sizeof key);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "topic", 5), &tag[0]);
    hashmap_free(m, NULL);
}

static void hashmap_null_value_is_stored(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(hashmap_put(m, "k", 1, NULL), 0);
    CU_ASSERT_EQUAL(hashmap_count(m), 1);
    CU_ASSERT_PTR_NULL(hashmap_remove(m, "k", 1));
    CU_ASSERT_EQUAL(hashmap_count(m), 0);
    hashmap_free(m, NULL);
}

static void hashmap_zero_length_key(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(hashmap_put(m, "", 0, &tag[0]), 0);
    CU_ASSERT_EQUAL(hashmap_put(m, NULL, 0, &tag[1]), 0); /* the same empty key */
    CU_ASSERT_EQUAL(hashmap_count(m), 1);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "", 0), &tag[1]);
    CU_ASSERT_EQUAL(hashmap_put(m, "\0", 1, &tag[2]), 0); /* one NUL byte differs */
    CU_ASSERT_EQUAL(hashmap_count(m), 2);
    hashmap_iter it;
    const void *k = NULL;
    size_t klen = 99;
    void *v = NULL;
    int seen_empty = 0;
    hashmap_iter_init(m, &it);
    while (hashmap_iter_next(&it, &k, &klen, &v))
        if (klen == 0) {
            seen_empty++;
            CU_ASSERT_PTR_EQUAL(v, &tag[1]);
        }
    CU_ASSERT_EQUAL(seen_empty, 1);
    CU_ASSERT_PTR_EQUAL(hashmap_remove(m, NULL, 0), &tag[1]);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "\0", 1), &tag[2]);
    CU_ASSERT_EQUAL(hashmap_count(m), 1);
    hashmap_free(m, NULL);
}

static void hashmap_rejects_null_key_with_length(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(hashmap_put(m, NULL, 3, &tag[0]), -1);
    CU_ASSERT_EQUAL(hashmap_count(m), 0);
    CU_ASSERT_PTR_NULL(hashmap_get(m, NULL, 3));
    CU_ASSERT_PTR_NULL(hashmap_remove(m, NULL, 3));
    hashmap_free(m, NULL);
}

static void hashmap_u64_helpers(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    for (uint64_t i = 1; i <= 1000; i++)
        CU_ASSERT_EQUAL(hashmap_put_u64(m, i * 0x9e3779b97f4a7c15ULL, (void *)(uintptr_t)i), 0);
    CU_ASSERT_EQUAL(hashmap_put_u64(m, 0, &tag[0]), 0);
    CU_ASSERT_EQUAL(hashmap_put_u64(m, UINT64_MAX, &tag[1]), 0);
    CU_ASSERT_EQUAL(hashmap_count(m), 1002);
    for (uint64_t i = 1; i <= 1000; i++)
        CU_ASSERT_EQUAL((uintptr_t)hashmap_get_u64(m, i * 0x9e3779b97f4a7c15ULL), i);
    CU_ASSERT_PTR_EQUAL(hashmap_get_u64(m, 0), &tag[0]);
    CU_ASSERT_PTR_EQUAL(hashmap_get_u64(m, UINT64_MAX), &tag[1]);
    /* The u64 helpers use the integer's bytes in host order as the key. */
    uint64_t raw = UINT64_MAX;
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, &raw, sizeof raw), &tag[1]);
    CU_ASSERT_PTR_NULL(hashmap_get_u64(m, 2));
    CU_ASSERT_PTR_EQUAL(hashmap_remove_u64(m, 0), &tag[0]);
    CU_ASSERT_PTR_NULL(hashmap_get_u64(m, 0));
    CU_ASSERT_PTR_NULL(hashmap_remove_u64(m, 0));
    CU_ASSERT_EQUAL(hashmap_count(m), 1001);
    hashmap_free(m, NULL);
}

/* A deterministic PRNG so a failure is reproducible. */
static uint64_t rng_state = 0x853c49e6748fea9bULL;
static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

#define MODEL_KEYS 100000u

static size_t model_key(uint32_t id, char *buf, size_t size)
{
    int n = snprintf(buf, size, "user-%u", id);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < size);
    return (size_t)n;
}

static void hashmap_matches_array_model_over_100k_keys(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    /* model[id] is the value stored under key id, 0 when absent. */
    uintptr_t *model = calloc(MODEL_KEYS, sizeof *model);
    CU_ASSERT_PTR_NOT_NULL_FATAL(model);
    size_t present = 0;
    char key[32];
    size_t mismatches = 0;

    for (uint32_t id = 0; id < MODEL_KEYS; id++) {
        size_t len = model_key(id, key, sizeof key);
        if (hashmap_put(m, key, len, (void *)(uintptr_t)(id + 1)) != 0)
            mismatches++;
        model[id] = id + 1;
        present++;
    }
    CU_ASSERT_EQUAL(hashmap_count(m), MODEL_KEYS);

    /* Random removals, re-inserts and replacements. */
    for (uint32_t round = 0; round < 300000; round++) {
        uint32_t id = rng_next() % MODEL_KEYS;
        size_t len = model_key(id, key, sizeof key);
        uint32_t op = rng_next() % 3;
        if (op == 0) {
            void *got = hashmap_remove(m, key, len);
            if ((uintptr_t)got != model[id])
                mismatches++;
            if (model[id])
                present--;
            model[id] = 0;
        } else {
            uintptr_t value = ((uintptr_t)round << 20) | id | 1u << 19;
            if (hashmap_put(m, key, len, (void *)value) != 0)
                mismatches++;
            if (!model[id])
                present++;
            model[id] = value;
        }
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT_EQUAL(hashmap_count(m), present);
    for (uint32_t id = 0; id < MODEL_KEYS; id++) {
        size_t len = model_key(id, key, sizeof key);
        if ((uintptr_t)hashmap_get(m, key, len) != model[id])
            mismatches++;
    }
    CU_ASSERT_EQUAL(mismatches, 0);

    /* Iteration visits exactly the model's present keys, each once. */
    unsigned char *seen = calloc(MODEL_KEYS, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
    hashmap_iter it;
    const void *k;
    size_t klen;
    void *v;
    size_t visited = 0;
    hashmap_iter_init(m, &it);
    while (hashmap_iter_next(&it, &k, &klen, &v)) {
        char buf[32];
        CU_ASSERT_FATAL(klen > 5 && klen < sizeof buf);
        memcpy(buf, k, klen);
        buf[klen] = '\0';
        unsigned long id = strtoul(buf + 5, NULL, 10);
        CU_ASSERT_FATAL(id < MODEL_KEYS);
        if (seen[id] || model[id] != (uintptr_t)v)
            mismatches++;
        seen[id] = 1;
        visited++;
    }
    CU_ASSERT_EQUAL(visited, present);
    CU_ASSERT_EQUAL(mismatches, 0);

    /* Removing everything leaves an empty, reusable map. */
    for (uint32_t id = 0; id < MODEL_KEYS; id++) {
        size_t len = model_key(id, key, sizeof key);
        hashmap_remove(m, key, len);
    }
    CU_ASSERT_EQUAL(hashmap_count(m), 0);
    hashmap_iter_init(m, &it);
    CU_ASSERT_EQUAL(hashmap_iter_next(&it, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(hashmap_put(m, "again", 5, &tag[3]), 0);
    CU_ASSERT_PTR_EQUAL(hashmap_get(m, "again", 5), &tag[3]);
    free(seen);
    free(model);
    hashmap_free(m, NULL);
}

static void hashmap_iteration_visits_each_entry_once(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    hashmap_iter it;
    hashmap_iter_init(m, &it);
    CU_ASSERT_EQUAL(hashmap_iter_next(&it, NULL, NULL, NULL), 0); /* empty map */

    enum { N = 500 };
    int counts[N] = {0};
    for (uint64_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(hashmap_put_u64(m, i, &counts[i]), 0);
    size_t visited = 0;
    const void *k;
    size_t klen;
    void *v;
    hashmap_iter_init(m, &it);
    while (hashmap_iter_next(&it, &k, &klen, &v)) {
        uint64_t key;
        CU_ASSERT_EQUAL_FATAL(klen, sizeof key);
        memcpy(&key, k, sizeof key);
        CU_ASSERT_FATAL(key < N);
        CU_ASSERT_PTR_EQUAL(v, &counts[key]);
        counts[key]++;
        visited++;
    }
    CU_ASSERT_EQUAL(visited, N);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(counts[i], 1);
    /* Past the end it keeps answering 0. */
    CU_ASSERT_EQUAL(hashmap_iter_next(&it, NULL, NULL, NULL), 0);
    hashmap_free(m, NULL);
}

static void hashmap_remove_current_entry_while_iterating(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    enum { N = 2000 };
    int counts[N] = {0};
    for (uint64_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(hashmap_put_u64(m, i, &counts[i]), 0);
    hashmap_iter it;
    const void *k;
    size_t klen;
    size_t visited = 0;
    hashmap_iter_init(m, &it);
    while (hashmap_iter_next(&it, &k, &klen, NULL)) {
        uint64_t key;
        memcpy(&key, k, sizeof key);
        CU_ASSERT_FATAL(key < N);
        counts[key]++;
        visited++;
        if (key % 3 != 0) /* k points into the entry: copy before removing */
            CU_ASSERT_PTR_EQUAL(hashmap_remove_u64(m, key), &counts[key]);
    }
    CU_ASSERT_EQUAL(visited, N);
    size_t once = 0;
    for (int i = 0; i < N; i++)
        once += counts[i] == 1;
    CU_ASSERT_EQUAL(once, N);
    CU_ASSERT_EQUAL(hashmap_count(m), (N + 2) / 3);
    for (uint64_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(hashmap_get_u64(m, i) != NULL, i % 3 == 0);
    hashmap_free(m, NULL);
}

static size_t freed_values;
static void count_free(void *value)
{
    freed_values++;
    free(value);
}

static void hashmap_free_calls_free_value_for_each_value(void)
{
    hashmap *m = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    for (uint64_t i = 0; i < 100; i++) {
        int *value = malloc(sizeof *value);
        CU_ASSERT_PTR_NOT_NULL_FATAL(value);
        *value = (int)i;
        CU_ASSERT_EQUAL(hashmap_put_u64(m, i, value), 0);
    }
    free(hashmap_remove_u64(m, 7));
    freed_values = 0;
    hashmap_free(m, count_free);
    CU_ASSERT_EQUAL(freed_values, 99);
    hashmap_free(NULL, count_free); /* ignored */
    CU_ASSERT_EQUAL(freed_values, 99);
}

static void hashmap_separate_maps_are_independent(void)
{
    hashmap *a = hashmap_new(), *b = hashmap_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(hashmap_put(a, "x", 1, &tag[0]), 0);
    CU_ASSERT_PTR_NULL(hashmap_get(b, "x", 1));
    CU_ASSERT_EQUAL(hashmap_count(b), 0);
    hashmap_free(a, NULL);
    hashmap_free(b, NULL);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(hashmap_put_get_replace_remove),
        SM_TEST(hashmap_copies_keys),
        SM_TEST(hashmap_null_value_is_stored),
        SM_TEST(hashmap_zero_length_key),
        SM_TEST(hashmap_rejects_null_key_with_length),
        SM_TEST(hashmap_u64_helpers),
        SM_TEST(hashmap_matches_array_model_over_100k_keys),
        SM_TEST(hashmap_iteration_visits_each_entry_once),
        SM_TEST(hashmap_remove_current_entry_while_iterating),
        SM_TEST(hashmap_free_calls_free_value_for_each_value),
        SM_TEST(hashmap_separate_maps_are_independent),
        SM_TEST_END,
    };
    return sm_test_run("hashmap", cases, NULL, NULL);
}
