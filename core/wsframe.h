/* Coalesced writes: several queued frames leave a session in one socket
 * write. Each send-queue frame is one complete WebSocket text message;
 * lws_write(LWS_WRITE_TEXT) would add its header and send it alone, so
 * for a batch we write the headers ourselves (RFC 6455 5.2: FIN, opcode
 * text, unmasked as every server frame is, 7-bit, 16-bit or 64-bit
 * length) into one contiguous buffer that goes out with LWS_WRITE_RAW.
 * No extension is negotiated (transport.c), so the frames need no other
 * treatment. Pure functions: no lws here. */
#ifndef SM_CORE_WSFRAME_H
#define SM_CORE_WSFRAME_H

#include <stddef.h>

#include "outqueue.h"

#define WSFRAME_HEADER_MAX 10

/* Writes the header of a final, unmasked text frame of payload_len bytes
 * to out (at least WSFRAME_HEADER_MAX bytes); returns its length: 2, 4
 * or 10. */
size_t wsframe_text_header(unsigned char *out, size_t payload_len);

/* How many frames from head on go in one batch: as many as fit, headers
 * included, in max_bytes and max_frames, in queue order. *batch_bytes is
 * their size on the wire. 0 when the first frame alone does not fit (it
 * is then written on its own) or there is none. */
size_t wsframe_batch_plan(const outqueue_frame *head, size_t max_bytes, size_t max_frames,
                          size_t *batch_bytes);

/* Writes the first n frames from head, each behind its header, to dst
 * (cap bytes). Returns the bytes written, or 0 when they do not fit. */
size_t wsframe_batch_fill(unsigned char *dst, size_t cap, const outqueue_frame *head, size_t n);

#endif
