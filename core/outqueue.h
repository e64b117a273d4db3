/* A session's bounded send queue: sealed frames waiting for the socket to
 * become writable. Each frame is allocated with LWS_PRE bytes of headroom so
 * it can be handed to lws_write without a copy. */
#ifndef SM_CORE_OUTQUEUE_H
#define SM_CORE_OUTQUEUE_H

#include <stddef.h>

#define OUTQUEUE_HEADROOM 16 /* >= LWS_PRE, checked in transport.c */

typedef struct outqueue_frame {
    struct outqueue_frame *next;
    size_t len;
    unsigned char data[]; /* OUTQUEUE_HEADROOM + len */
} outqueue_frame;

typedef struct outqueue {
    outqueue_frame *head;
    outqueue_frame *tail;
    size_t bytes;
    size_t count;
} outqueue;

/* Appends a copy of data. Returns 0, -1 when out of memory, -2 when the
 * frame would take the queue past max_messages, or past max_bytes while
 * other frames wait (an empty queue takes one frame of any size); nothing
 * is queued then. */
int outqueue_push(outqueue *q, const char *data, size_t len, size_t max_bytes, size_t max_messages);
/* The oldest frame, or NULL; it stays queued until outqueue_pop. */
outqueue_frame *outqueue_peek(const outqueue *q);
void outqueue_pop(outqueue *q);
void outqueue_clear(outqueue *q);

#endif
