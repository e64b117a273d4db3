/* libFuzzer target: the cluster bus's frame decoder (core/cluster_frame.c)
 * on arbitrary bytes, what anyone who can PUBLISH on the cluster's Redis
 * could send a node.
 *
 * Invariants: a frame that decodes has an origin node id and an action of
 * their alphabets and bounds, an except-user empty or a valid name, no
 * NUL inside any string, a payload that ends exactly at the input's end;
 * encoding the decoded fields gives back the input byte for byte (one
 * encoding per frame). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_frame.h"
#include "fuzz_check.h"
#include "safemessenger/plugin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cluster_frame f;
    if (cluster_frame_decode(data, size, &f) != NULL)
        return 0;
    size_t origin = strlen(f.origin), except = strlen(f.except_user), action = strlen(f.action);
    FUZZ_CHECK(origin >= 1 && origin <= CLUSTER_BUS_NODE_MAX);
    FUZZ_CHECK(sm_name_valid(f.origin, 1, CLUSTER_BUS_NODE_MAX));
    FUZZ_CHECK(except == 0 || sm_name_valid(f.except_user, 1, CLUSTER_BUS_USER_MAX));
    FUZZ_CHECK(action >= 1 && action <= CLUSTER_BUS_ACTION_MAX);
    FUZZ_CHECK(f.len <= CLUSTER_BUS_PAYLOAD_MAX);
    FUZZ_CHECK(f.payload + f.len == data + size);
    FUZZ_CHECK(f.instance == data + 1);
    unsigned char *again = NULL;
    size_t again_len = 0;
    FUZZ_CHECK(cluster_frame_encode(f.instance, f.origin, origin, f.except_user, except, f.action,
                                    action, f.payload, f.len, &again, &again_len) == 0);
    FUZZ_CHECK(again_len == size && memcmp(again, data, size) == 0);
    free(again);
    return 0;
}
