/* A session's bounded send queue: sealed frames waiting for the socket to
 * become writable, and the accounting of every byte not yet taken by the
 * socket. Each frame is allocated with LWS_PRE bytes of headroom so it can
 * be handed to lws_write without a copy.
 *
 * Unsent bytes are the frames queued here plus the frames last handed to
 * the transport (one, or a coalesced batch: wsframe.h) while the transport
 * still holds part of them (lws buffers what the socket did not take):
 * they stay counted, whole, until the transport reports its buffer empty. Nothing is exempt from the
 * bounds, not even a first frame into an empty queue. */
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
    size_t bytes;              /* of the queued frames */
    size_t count;
    size_t in_transport;       /* bytes of the handed-off frames the transport still holds */
    size_t in_transport_count; /* and how many frames they are */
    double progress_at;        /* when output last moved (or became pending) */
} outqueue;

/* Appends a copy of data. Returns SM_OK, SM_ENOMEM, or SM_EBUSY when the
 * frame would take the unsent bytes past max_bytes or the unsent messages
 * past max_messages; nothing is queued then. now (monotonic seconds)
 * starts the stall clock when output was not pending before. */
int outqueue_push(outqueue *q, const char *data, size_t len, size_t max_bytes,
                  size_t max_messages, double now);
/* The oldest frame, or NULL; it stays queued until outqueue_sent. */
outqueue_frame *outqueue_peek(const outqueue *q);
/* The oldest frame was handed to the transport and is freed here;
 * transport_holds_rest says the transport still buffers part of it, so
 * its length stays counted until outqueue_transport_drained. */
void outqueue_sent(outqueue *q, int transport_holds_rest, double now);
/* The same for the n oldest frames, handed to the transport in one write
 * (a coalesced batch); they stay counted, all n, while it holds a part. */
void outqueue_sent_many(outqueue *q, size_t n, int transport_holds_rest, double now);
/* The transport's buffer is empty (every byte handed off went to the
 * socket): output moved. */
void outqueue_transport_drained(outqueue *q, double now);
/* Frees every frame and forgets the transport's bytes (the connection is
 * being dropped with them). */
void outqueue_clear(outqueue *q);

/* Bytes not yet taken by the socket: queued plus held by the transport. */
size_t outqueue_unsent(const outqueue *q);
/* Messages not yet taken by the socket, the handed-off ones included. */
size_t outqueue_messages(const outqueue *q);
int outqueue_pending(const outqueue *q);
/* Back-pressure: at or above half of max_bytes unsent, the session's next
 * command waits (its reply, at most a quarter of max_bytes, then still
 * fits under max_bytes). */
int outqueue_congested(const outqueue *q, size_t max_bytes);
/* Output pending and nothing moved for timeout seconds. */
int outqueue_stalled(const outqueue *q, double now, double timeout);
/* The largest payload (JSON text before sealing) that may be sent to a
 * session: a quarter of max_bytes, at most OUTQUEUE_PAYLOAD_MAX. Sealing
 * grows a payload by a third (base64) plus a few hundred bytes, so a
 * sealed frame of this size stays below the back-pressure threshold. */
size_t outqueue_payload_max(size_t max_bytes);

/* Clients must accept server messages of 8 MiB (PROTOCOL.md section 1);
 * payloads stay below that once sealed. */
#define OUTQUEUE_PAYLOAD_MAX ((size_t)6000000)

#endif
