/* Several servers as the nodes of one cluster (issue 14), for suites
 * whose clients are spread over nodes. Built on harness.h: each node is
 * a harness_server of its own (its directory, log, ephemeral loopback
 * port, stop and cleanup), and together they share
 *   - the server key: every node's key_file is node 0's
 *     <dir>/server_key.pem (clients see one fingerprint whichever node
 *     they reach), each node's admin socket in its own directory;
 *   - the storage: node 0's PostgreSQL schema, the others started on it
 *     with harness_start_on(). Cluster mode needs PostgreSQL: outside
 *     PostgreSQL mode (SM_TEST_SERVER_POSTGRES_URL_FILE, harness.h
 *     "Storage") harness_cluster_start() refuses, saying so;
 *   - a section
 *         cluster = { node = "<a, b, ...>"; redis = "<redis_url>";
 *                     prefix = "sm:it:<pid>:<n>:<8 hex>:"; };
 *     with node ids "a", "b", ... in order, one Redis URL (the caller's:
 *     typically a private_redis of the suite, tests/services), and a key
 *     prefix no other cluster of any run uses (the pid, a counter of the
 *     process's clusters, random bits), so clusters of one Redis never
 *     see each other's channels or keys.
 *
 *     static harness_cluster cl;
 *     CU_ASSERT_EQUAL_FATAL(harness_cluster_start(&cl, 2, redis.url, CONFIG), 0);
 *     ... harness_connect(&cl.node[0], &c) ... harness_connect(&cl.node[1], &d) ...
 *     CU_ASSERT_EQUAL(harness_cluster_cleanup(&cl), 0);
 */
#ifndef SM_TEST_HARNESS_CLUSTER_H
#define SM_TEST_HARNESS_CLUSTER_H

#include <stddef.h>

#include "harness.h"

#define HARNESS_CLUSTER_MAX_NODES 4

typedef struct harness_cluster {
    harness_server node[HARNESS_CLUSTER_MAX_NODES]; /* node[i]'s id is "a" + i */
    size_t n;                                       /* nodes started (or being started) */
    char prefix[64];                                /* its cluster.prefix */
} harness_cluster;

/* The id of node i: "a", "b", ... */
const char *harness_cluster_node_id(size_t i);

/* Starts n nodes (1..HARNESS_CLUSTER_MAX_NODES) one after the other, each
 * waited for as harness_start() waits (so node 0 has made the schema's
 * tables before the others start on it). extra_config is every node's
 * (harness_start()'s placeholders apply); it must not define the server,
 * storage or cluster sections, which the harness writes for each node
 * (server: HARNESS_SERVER_ADDR, the shared key, HARNESS_IO_THREADS, the
 * node's own admin socket). Returns 0, or -1 with the reason (and the
 * failing node's log tail) on stderr; the nodes started so far are then
 * left for harness_cluster_cleanup(). */
int harness_cluster_start(harness_cluster *c, size_t n, const char *redis_url,
                          const char *extra_config);

/* Spawns one more server as node `id` of c: c's storage (node 0's
 * schema), prefix and Redis (redis_url, as given to
 * harness_cluster_start()), its configuration as a node's with
 * extra_config, and key_file (NULL: the cluster's, node 0's file; for
 * another key, a file harness_write_key() wrote: a server makes no key of
 * its own on a database that served clients). It does not wait for the
 * server to listen: it may be refused by the cluster and exit first
 * (harness_wait_exit()). s is the caller's, not one of c's nodes:
 * harness_cleanup(s), in any order with c's cleanup. 0, or -1 with the
 * reason on stderr (s is then left for harness_cleanup()). */
int harness_cluster_spawn(const harness_cluster *c, harness_server *s, const char *id,
                          const char *redis_url, const char *extra_config, const char *key_file);

/* SIGKILLs node i (a crash: it tells Redis nothing) and reaps it. 0, or -1
 * when it was not running. harness_cluster_cleanup() does not count a
 * killed node's status against it. */
int harness_cluster_kill(harness_cluster *c, size_t i);

/* harness_cleanup() of every node, the last first (SIGTERM to a node still
 * running, which must exit 0; its log checked for sanitizer reports; the
 * schema dropped with the last node). Returns 0, or -1 when any node's
 * cleanup failed. Safe on a zeroed or already cleaned cluster, and on one
 * whose start failed. */
int harness_cluster_cleanup(harness_cluster *c);

#endif
