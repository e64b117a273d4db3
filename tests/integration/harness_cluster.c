/* See harness_cluster.h: N servers on one key, one PostgreSQL schema and
 * one Redis, as the nodes of a cluster. */
#define _GNU_SOURCE /* asprintf */
#include "harness_cluster.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

const char *harness_cluster_node_id(size_t i)
{
    static const char *const ids[HARNESS_CLUSTER_MAX_NODES] = {"a", "b", "c", "d"};
    return i < HARNESS_CLUSTER_MAX_NODES ? ids[i] : "?";
}

/* A prefix no other cluster of this process, nor of another process on
 * the same Redis, uses: the pid keeps parallel suites apart, the counter
 * the clusters of one suite, the random part a pid the system gave again
 * (keys a killed node left may outlive its run). Within the
 * [A-Za-z0-9_.:-] and 64 bytes cluster mode accepts. */
static int make_prefix(harness_cluster *c)
{
    static unsigned serial;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        return -1;
    int n = snprintf(c->prefix, sizeof c->prefix, "sm:it:%ld:%u:%08x:", (long)getpid(), ++serial,
                     (unsigned)r);
    return n > 0 && (size_t)n < sizeof c->prefix ? 0 : -1;
}

/* A node's configuration: its server and cluster sections, then the
 * suite's. key_file is the node's (node 0's "@DIR@/server_key.pem"), NULL
 * for node 0's file, as every other node has it; the admin socket is each
 * node's own, since its default is beside the key on PostgreSQL and two
 * servers cannot hold one socket. malloc'd, NULL when out of memory or
 * the path does not fit. */
static char *node_config(const harness_cluster *c, const char *id, const char *key_file,
                         const char *redis_url, const char *extra)
{
    char key[600];
    if (key_file)
        snprintf(key, sizeof key, "%s", key_file);
    else if (harness_path(&c->node[0], "server_key.pem", key, sizeof key) != 0)
        return NULL;
    char *out = NULL;
    int n = asprintf(&out,
                     "server = { " HARNESS_SERVER_ADDR "key_file = \"%s\"; key_bits = 2048; "
                     "admin_socket = \"@DIR@/admin.sock\"; " HARNESS_IO_THREADS " };\n"
                     "cluster = { node = \"%s\"; redis = \"%s\"; prefix = \"%s\"; };\n%s",
                     key, id, redis_url, c->prefix, extra ? extra : "");
    return n < 0 ? NULL : out;
}

int harness_cluster_start(harness_cluster *c, size_t n, const char *redis_url,
                          const char *extra_config)
{
    memset(c, 0, sizeof *c);
    if (n == 0 || n > HARNESS_CLUSTER_MAX_NODES) {
        fprintf(stderr, "harness: a cluster of %zu nodes (1..%d)\n", n,
                HARNESS_CLUSTER_MAX_NODES);
        return -1;
    }
    if (!harness_postgresql()) {
        fprintf(stderr, "harness: cluster mode needs PostgreSQL: set "
                        "SM_TEST_SERVER_POSTGRES_URL_FILE (ctest's postgres fixture, "
                        "tests/services/README.md)\n");
        return -1;
    }
    if (!redis_url || !*redis_url || strchr(redis_url, '"') || strchr(redis_url, '\\')) {
        fprintf(stderr, "harness: a cluster needs a Redis URL without quotes or backslashes\n");
        return -1;
    }
    static const char *const own[] = {"server", "storage", "cluster"};
    for (size_t k = 0; k < sizeof own / sizeof *own; k++) {
        if (harness_config_defines(extra_config, own[k])) {
            fprintf(stderr, "harness: a cluster's nodes get the harness's %s section; the "
                            "suite's configuration must not define one\n", own[k]);
            return -1;
        }
    }
    if (make_prefix(c) != 0) {
        fprintf(stderr, "harness: cannot make a cluster prefix\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char *conf = node_config(c, harness_cluster_node_id(i),
                                 i == 0 ? "@DIR@/server_key.pem" : NULL, redis_url,
                                 extra_config);
        if (!conf) {
            fprintf(stderr, "harness: out of memory for node %s's configuration\n",
                    harness_cluster_node_id(i));
            return -1;
        }
        c->n = i + 1; /* counted before it starts: a failed start is cleaned up too */
        int rc = i == 0 ? harness_start(&c->node[0], conf)
                        : harness_start_on(&c->node[i], &c->node[0], conf, NULL);
        free(conf);
        if (rc != 0) {
            fprintf(stderr, "harness: node %s of the cluster (prefix %s) did not start\n",
                    harness_cluster_node_id(i), c->prefix);
            return -1;
        }
    }
    return 0;
}

int harness_cluster_spawn(const harness_cluster *c, harness_server *s, const char *id,
                          const char *redis_url, const char *extra_config, const char *key_file)
{
    memset(s, 0, sizeof *s);
    if (c->n == 0 || c->node[0].dir[0] == '\0') {
        fprintf(stderr, "harness: node %s: the cluster has no node 0 to share storage with\n",
                id);
        return -1;
    }
    char *conf = node_config(c, id, key_file, redis_url, extra_config);
    if (!conf) {
        fprintf(stderr, "harness: out of memory for node %s's configuration\n", id);
        return -1;
    }
    int rc = harness_spawn_on(s, &c->node[0], conf, NULL);
    free(conf);
    if (rc != 0)
        fprintf(stderr, "harness: node %s (prefix %s) could not be spawned\n", id, c->prefix);
    return rc;
}

int harness_cluster_kill(harness_cluster *c, size_t i)
{
    if (i >= c->n || c->node[i].pid <= 0)
        return -1;
    return harness_stop(&c->node[i], SIGKILL, NULL);
}

int harness_cluster_cleanup(harness_cluster *c)
{
    int rc = 0;
    /* The last first: node 0 holds the key file the others were started
     * with, and the schema goes with whichever is cleaned up last. */
    for (size_t i = c->n; i-- > 0;)
        if (harness_cleanup(&c->node[i]) != 0)
            rc = -1;
    c->n = 0;
    return rc;
}
