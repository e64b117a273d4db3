#include "outqueue.h"

#include <stdlib.h>
#include <string.h>

int outqueue_push(outqueue *q, const char *data, size_t len, size_t max_bytes, size_t max_messages)
{
    /* The byte bound applies to what waits behind the frame being written:
     * one message larger than the bound (a long history page) still goes
     * to a client that keeps up, while a client that stops reading is cut
     * off as soon as anything piles up behind it. */
    if (q->count + 1 > max_messages || (q->count > 0 && (len > max_bytes || q->bytes > max_bytes - len)))
        return -2;
    outqueue_frame *f = malloc(sizeof *f + OUTQUEUE_HEADROOM + len);
    if (!f)
        return -1;
    f->next = NULL;
    f->len = len;
    memcpy(f->data + OUTQUEUE_HEADROOM, data, len);
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    q->bytes += len;
    q->count++;
    return 0;
}

outqueue_frame *outqueue_peek(const outqueue *q) { return q->head; }

void outqueue_pop(outqueue *q)
{
    outqueue_frame *f = q->head;
    if (!f)
        return;
    q->head = f->next;
    if (!q->head)
        q->tail = NULL;
    q->bytes -= f->len;
    q->count--;
    free(f);
}

void outqueue_clear(outqueue *q)
{
    while (q->head)
        outqueue_pop(q);
}
