/* Reassembly of one inbound WebSocket message from its fragments, under a
 * size cap, with no knowledge of lws: the transport feeds it each piece lws
 * hands over (with the frame's first/final flags) and takes the complete
 * message out. A fuzz target drives it the same way.
 *
 * Use, per received piece:
 *     switch (reassembly_append(&r, first, final, in, len, limit)) {
 *     case REASSEMBLY_COMPLETE: text = reassembly_take(&r, &n); ...; break;
 *     case REASSEMBLY_TOO_LARGE: refuse the message (1009); break;
 *     case REASSEMBLY_NO_MEMORY: drop the connection; break;
 *     default: wait for more; break;
 *     }
 * and reassembly_release() when idle or at the end, so idle connections
 * hold no buffer. */
#ifndef SM_CORE_REASSEMBLY_H
#define SM_CORE_REASSEMBLY_H

#include <stddef.h>

typedef struct reassembly {
    char *buf;      /* NULL until the first non-empty piece; NUL-terminated */
    size_t len;     /* bytes of the current message so far */
    size_t cap;     /* bytes allocated for the message (the NUL not counted) */
    int discard;    /* the rest of the current message is ignored */
} reassembly;

typedef enum reassembly_status {
    REASSEMBLY_MORE = 0,        /* stored; the message continues */
    REASSEMBLY_COMPLETE = 1,    /* stored; the message is complete: reassembly_take() */
    REASSEMBLY_SKIPPED = 2,     /* part of a discarded message; ignored */
    REASSEMBLY_TOO_LARGE = -1,  /* the message would exceed the limit: the buffer
                                   is freed and the rest of the message discarded */
    REASSEMBLY_NO_MEMORY = -2   /* allocation failed; the state is unchanged */
} reassembly_status;

/* Adds len bytes (in may be NULL when len is 0). `first` starts a new
 * message (dropping any unfinished one and ending a discard); `final`
 * completes it. The buffer only ever grows by bytes actually received,
 * never by a length the peer declared, and never past limit. */
reassembly_status reassembly_append(reassembly *r, int first, int final, const char *in,
                                    size_t len, size_t limit);

/* The complete message, NUL-terminated, never NULL (an empty message is
 * ""); *len receives its length. Valid until the next call on r. Resets
 * the length for the next message. */
const char *reassembly_take(reassembly *r, size_t *len);

/* Drops the current message and ignores its remaining fragments, up to the
 * next piece with `first` set (binary messages, closing sessions). */
void reassembly_discard(reassembly *r);

/* Frees the buffer; r is then empty and ready for a new message (the
 * discard flag is kept). */
void reassembly_release(reassembly *r);

#endif
