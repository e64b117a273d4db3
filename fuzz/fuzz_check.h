/* Shared by the libFuzzer targets: an invariant that does not hold is a
 * finding, so it aborts (libFuzzer then saves the input as crash-*),
 * whatever NDEBUG says. */
#ifndef SM_FUZZ_CHECK_H
#define SM_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* The entry point libFuzzer calls; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Consumes fuzz input front to back; reads past the end give zeros, so a
 * decoder never needs a length check of its own. */
typedef struct fuzz_reader {
    const uint8_t *data;
    size_t len;
} fuzz_reader;

static inline uint8_t fuzz_byte(fuzz_reader *r)
{
    if (r->len == 0)
        return 0;
    r->len--;
    return *r->data++;
}

static inline uint64_t fuzz_u64(fuzz_reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fuzz_byte(r);
    return v;
}

#endif
