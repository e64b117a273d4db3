#include "shared_payload.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct shared_payload {
    atomic_size_t refs;
    size_t len;
    char text[]; /* len + 1 */
};

shared_payload *shared_payload_new(const char *text, size_t len)
{
    if (!text || len > SIZE_MAX - sizeof(shared_payload) - 1)
        return NULL;
    shared_payload *p = malloc(sizeof *p + len + 1);
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->len = len;
    memcpy(p->text, text, len);
    p->text[len] = '\0';
    return p;
}

shared_payload *shared_payload_ref(shared_payload *p)
{
    /* Relaxed is enough to take a reference: the caller already holds
     * one, so the buffer cannot go away meanwhile. */
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

int shared_payload_unref(shared_payload *p)
{
    if (!p)
        return 0;
    /* Release so this thread's reads happen before another thread's free,
     * acquire so the last one frees after them all. (acq_rel on the
     * decrement rather than a separate fence: ThreadSanitizer does not
     * model standalone fences.) */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return 0;
    free(p);
    return 1;
}

const char *shared_payload_text(const shared_payload *p)
{
    return p->text;
}

size_t shared_payload_len(const shared_payload *p)
{
    return p->len;
}
