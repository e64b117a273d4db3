#include "reassembly.h"

#include <stdlib.h>
#include <string.h>

/* First allocation: most messages fit, and doubling from here keeps the
 * number of reallocations logarithmic. */
#define REASSEMBLY_INITIAL_CAP 1024

static int reserve(reassembly *r, size_t need, size_t limit)
{
    if (r->buf && need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : REASSEMBLY_INITIAL_CAP;
    while (cap < need)
        cap = cap > limit / 2 ? limit : cap * 2;
    if (cap > limit)
        cap = limit > need ? limit : need;
    if (cap == (size_t)-1)
        return -1;
    /* +1: the message is handed out NUL-terminated. */
    char *buf = realloc(r->buf, cap + 1);
    if (!buf)
        return -1;
    r->buf = buf;
    r->cap = cap;
    return 0;
}

reassembly_status reassembly_append(reassembly *r, int first, int final, const char *in,
                                    size_t len, size_t limit)
{
    if (first) {
        r->len = 0;
        r->discard = 0;
    }
    if (r->discard)
        return REASSEMBLY_SKIPPED;
    if (len > limit || r->len > limit - len) {
        reassembly_release(r);
        r->discard = 1;
        return REASSEMBLY_TOO_LARGE;
    }
    if (reserve(r, r->len + len, limit) != 0)
        return REASSEMBLY_NO_MEMORY;
    if (len)
        memcpy(r->buf + r->len, in, len);
    r->len += len;
    r->buf[r->len] = '\0';
    return final ? REASSEMBLY_COMPLETE : REASSEMBLY_MORE;
}

const char *reassembly_take(reassembly *r, size_t *len)
{
    *len = r->len;
    r->len = 0;
    return r->buf ? r->buf : "";
}

void reassembly_discard(reassembly *r)
{
    r->len = 0;
    r->discard = 1;
}

void reassembly_release(reassembly *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = 0;
    r->cap = 0;
}
