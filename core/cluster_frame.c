/* See cluster_frame.h. */
#include "cluster_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safemessenger/plugin.h"

/* A reader over the message: each take fails once the bytes run out. */
typedef struct cb_reader {
    const unsigned char *p, *end;
} cb_reader;

static const unsigned char *take(cb_reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return NULL;
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

/* A 1-byte length and that many bytes into out (NUL-terminated), min to
 * max bytes. NULL when it is not there, out of bounds or holds a NUL
 * (which would cut the string the handler sees). */
static const char *take_string(cb_reader *r, size_t min, size_t max, char *out)
{
    const unsigned char *n = take(r, 1);
    const unsigned char *s = n && *n >= min && *n <= max ? take(r, *n) : NULL;
    if (!s || memchr(s, '\0', *n))
        return NULL;
    memcpy(out, s, *n);
    out[*n] = '\0';
    return out;
}

/* Returns NULL and fills *f, or why the message does not parse. */
const char *cluster_frame_decode(const void *msg, size_t len, cluster_frame *f)
{
    cb_reader r = { msg, (const unsigned char *)msg + len };
    const unsigned char *version = take(&r, 1);
    if (!version)
        return "empty";
    if (*version != CLUSTER_FRAME_VERSION)
        return "unknown version";
    if (!(f->instance = take(&r, CLUSTER_FRAME_INSTANCE_LEN)))
        return "cut short";
    if (!take_string(&r, 1, CLUSTER_BUS_NODE_MAX, f->origin)
        || !sm_name_valid(f->origin, 1, CLUSTER_BUS_NODE_MAX))
        return "bad origin node id";
    if (!take_string(&r, 0, CLUSTER_BUS_USER_MAX, f->except_user)
        || (f->except_user[0] && !sm_name_valid(f->except_user, 1, CLUSTER_BUS_USER_MAX)))
        return "bad except-user";
    if (!take_string(&r, 1, CLUSTER_BUS_ACTION_MAX, f->action))
        return "bad action";
    const unsigned char *n = take(&r, 4);
    if (!n)
        return "cut short";
    uint32_t payload_len = (uint32_t)n[0] << 24 | (uint32_t)n[1] << 16 | (uint32_t)n[2] << 8 | n[3];
    if (payload_len > CLUSTER_BUS_PAYLOAD_MAX || payload_len != (size_t)(r.end - r.p))
        return "payload length does not match";
    f->payload = r.p;
    f->len = payload_len;
    return NULL;
}

static void put_string(unsigned char **p, const char *s, size_t len)
{
    *(*p)++ = (unsigned char)len;
    if (len) /* s may be NULL then */
        memcpy(*p, s, len);
    *p += len;
}

int cluster_frame_encode(const unsigned char instance[CLUSTER_FRAME_INSTANCE_LEN],
                         const char *origin, size_t origin_len, const char *except_user,
                         size_t except_len, const char *action, size_t action_len,
                         const void *payload, size_t len, unsigned char **out, size_t *out_len)
{
    if (origin_len > 255 || except_len > 255 || action_len > 255 || len > UINT32_MAX)
        return -1;
    size_t size = 1 + CLUSTER_FRAME_INSTANCE_LEN + 1 + origin_len + 1 + except_len + 1 +
                  action_len + 4 + len;
    unsigned char *buf = malloc(size), *p = buf;
    if (!buf)
        return -1;
    *p++ = CLUSTER_FRAME_VERSION;
    memcpy(p, instance, CLUSTER_FRAME_INSTANCE_LEN);
    p += CLUSTER_FRAME_INSTANCE_LEN;
    put_string(&p, origin, origin_len);
    put_string(&p, except_user, except_len);
    put_string(&p, action, action_len);
    for (int shift = 24; shift >= 0; shift -= 8)
        *p++ = (unsigned char)(len >> shift);
    if (len)
        memcpy(p, payload, len);
    *out = buf;
    *out_len = size;
    return 0;
}
