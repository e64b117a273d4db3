#include "outqueue.h"

#include <stdlib.h>
#include <string.h>

#include "safemessenger/plugin.h"

size_t outqueue_unsent(const outqueue *q) { return q->bytes + q->in_transport; }

size_t outqueue_messages(const outqueue *q) { return q->count + q->in_transport_count; }

int outqueue_pending(const outqueue *q) { return q->count > 0 || q->in_transport_count > 0; }

int outqueue_push(outqueue *q, const char *data, size_t len, size_t max_bytes,
                  size_t max_messages, double now)
{
    size_t unsent = outqueue_unsent(q);
    if (outqueue_messages(q) + 1 > max_messages || len > max_bytes || unsent > max_bytes - len)
        return SM_EBUSY;
    outqueue_frame *f = malloc(sizeof *f + OUTQUEUE_HEADROOM + len);
    if (!f)
        return SM_ENOMEM;
    if (!outqueue_pending(q))
        q->progress_at = now;
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
    return SM_OK;
}

outqueue_frame *outqueue_peek(const outqueue *q) { return q->head; }

static void pop(outqueue *q)
{
    outqueue_frame *f = q->head;
    q->head = f->next;
    if (!q->head)
        q->tail = NULL;
    q->bytes -= f->len;
    q->count--;
    free(f);
}

void outqueue_sent(outqueue *q, int transport_holds_rest, double now)
{
    outqueue_sent_many(q, 1, transport_holds_rest, now);
}

void outqueue_sent_many(outqueue *q, size_t n, int transport_holds_rest, double now)
{
    size_t bytes = 0, count = 0;
    for (; count < n && q->head; count++) {
        bytes += q->head->len;
        pop(q);
    }
    if (count == 0)
        return;
    q->in_transport = transport_holds_rest ? bytes : 0;
    q->in_transport_count = transport_holds_rest ? count : 0;
    q->progress_at = now;
}

void outqueue_transport_drained(outqueue *q, double now)
{
    if (q->in_transport_count > 0)
        q->progress_at = now;
    q->in_transport = 0;
    q->in_transport_count = 0;
}

void outqueue_clear(outqueue *q)
{
    while (q->head)
        pop(q);
    q->in_transport = 0;
    q->in_transport_count = 0;
}

int outqueue_congested(const outqueue *q, size_t max_bytes)
{
    return outqueue_unsent(q) >= max_bytes / 2;
}

int outqueue_stalled(const outqueue *q, double now, double timeout)
{
    return outqueue_pending(q) && now - q->progress_at >= timeout;
}

size_t outqueue_payload_max(size_t max_bytes)
{
    size_t cap = max_bytes / 4;
    return cap < OUTQUEUE_PAYLOAD_MAX ? cap : OUTQUEUE_PAYLOAD_MAX;
}
