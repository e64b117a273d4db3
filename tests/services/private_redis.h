/* A private redis-server for a case that stops, restarts or freezes it
 * (the fixture's is shared by every suite of the run, so it is never
 * touched): started in a new mkdtemp directory by
 * tests/services/redis-instance, always stopped by private_redis_stop
 * (also from a suite's cleanup, should an assertion end a case early). */
#ifndef SM_TEST_PRIVATE_REDIS_H
#define SM_TEST_PRIVATE_REDIS_H

#include <sys/types.h>

typedef struct private_redis {
    char dir[128]; /* "" while none is started */
    char url[128]; /* redis://127.0.0.1:PORT/0 */
    int port;
    pid_t pid;     /* its redis-server */
    int frozen;    /* SIGSTOPped by private_redis_freeze */
} private_redis;

/* Starts one in /tmp/sm-<tag>.XXXXXX. Returns 0, or -1 with the reason
 * on stderr (r is then stopped and empty). */
int private_redis_start(private_redis *r, const char *tag);
/* redis-instance stop: the server goes (its clients see the connection
 * closed); r keeps its port for private_redis_up. 0 or -1. */
int private_redis_down(private_redis *r);
/* Starts it again on the same port (SM_REDIS_PORT), where its clients
 * reconnect. 0 or -1. */
int private_redis_up(private_redis *r);
/* SIGSTOP, SIGCONT: a frozen Redis, whose kernel still accepts
 * connections and data. */
int private_redis_freeze(private_redis *r);
void private_redis_thaw(private_redis *r);
/* Thaws and stops it, if started; r is empty after. */
void private_redis_stop(private_redis *r);

#endif
