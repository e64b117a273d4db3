/* The one message format of cluster_bus.h: every PUBLISH a node sends on
 * a topic or user channel is one frame (version 1, big-endian lengths,
 * nothing after the payload):
 *
 *   1 byte version (1) | 8 bytes instance | 1 byte N + N bytes origin node id
 *   | 1 byte E + E bytes except-user (0: none) | 1 byte A + A bytes action
 *   | 4 bytes P + P bytes payload
 *
 * Anyone who can PUBLISH on the Redis can send one, so decoding trusts
 * nothing: every length is checked against what is left and against its
 * bound, names against their alphabets, strings for NUL bytes. One
 * encoding per frame: decoding then encoding gives back the same bytes
 * (fuzz/fuzz_cluster_frame.c checks it). */
#ifndef SM_CORE_CLUSTER_FRAME_H
#define SM_CORE_CLUSTER_FRAME_H

#include <stddef.h>

#include "cluster_bus.h"

#define CLUSTER_FRAME_VERSION 1
#define CLUSTER_FRAME_INSTANCE_LEN 8

typedef struct cluster_frame {
    const unsigned char *instance; /* CLUSTER_FRAME_INSTANCE_LEN bytes, in the message */
    char origin[CLUSTER_BUS_NODE_MAX + 1];
    char except_user[CLUSTER_BUS_USER_MAX + 1]; /* "" for none */
    char action[CLUSTER_BUS_ACTION_MAX + 1];
    const unsigned char *payload;                /* in the message */
    size_t len;
} cluster_frame;

/* NULL with *f filled (pointing into msg), or why msg is not a frame. */
const char *cluster_frame_decode(const void *msg, size_t len, cluster_frame *f);

/* One frame in a new buffer (*out, *out_len): 0, or -1 when out of
 * memory or a length is beyond the format's (the bus checks names and
 * bounds before; this only refuses what could not be encoded). */
int cluster_frame_encode(const unsigned char instance[CLUSTER_FRAME_INSTANCE_LEN],
                         const char *origin, size_t origin_len, const char *except_user,
                         size_t except_len, const char *action, size_t action_len,
                         const void *payload, size_t len, unsigned char **out, size_t *out_len);

#endif
