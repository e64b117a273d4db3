#include "wsframe.h"

#include <stdint.h>
#include <string.h>

#define WS_FIN_TEXT 0x81 /* FIN, opcode 1 */

size_t wsframe_text_header(unsigned char *out, size_t payload_len)
{
    out[0] = WS_FIN_TEXT;
    if (payload_len < 126) {
        out[1] = (unsigned char)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char)(payload_len >> 8);
        out[3] = (unsigned char)payload_len;
        return 4;
    }
    /* The most significant bit stays 0 (RFC 6455 5.2): size_t lengths here
     * never reach 2^63. */
    uint64_t len = (uint64_t)payload_len;
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

static size_t header_len(size_t payload_len)
{
    return payload_len < 126 ? 2 : payload_len <= 0xffff ? 4 : 10;
}

size_t wsframe_batch_plan(const outqueue_frame *head, size_t max_bytes, size_t max_frames,
                          size_t *batch_bytes)
{
    size_t n = 0, total = 0;
    for (const outqueue_frame *f = head; f && n < max_frames; f = f->next) {
        size_t need = header_len(f->len) + f->len;
        if (need < f->len || need > max_bytes - total)
            break;
        total += need;
        n++;
    }
    *batch_bytes = total;
    return n;
}

size_t wsframe_batch_fill(unsigned char *dst, size_t cap, const outqueue_frame *head, size_t n)
{
    size_t at = 0;
    const outqueue_frame *f = head;
    for (size_t i = 0; i < n; i++, f = f->next) {
        if (!f || cap - at < header_len(f->len) || cap - at - header_len(f->len) < f->len)
            return 0;
        at += wsframe_text_header(dst + at, f->len);
        memcpy(dst + at, f->data + OUTQUEUE_HEADROOM, f->len);
        at += f->len;
    }
    return at;
}
