#include "private_redis.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* redis-instance VERB DIR, with SM_REDIS_PORT=port when port > 0, and
 * this process as the instance's owner: should the suite die before it
 * stops the instance (a ctest timeout), the instance goes too. */
static int instance(const private_redis *r, const char *verb, int port)
{
    char cmd[512];
    char env[64];
    int n = snprintf(env, sizeof env, "SM_SERVICE_OWNER=%ld ", (long)getpid());
    if (port > 0 && n > 0 && (size_t)n < sizeof env)
        snprintf(env + n, sizeof env - (size_t)n, "SM_REDIS_PORT=%d ", port);
    snprintf(cmd, sizeof cmd, "%s'%s/tests/services/redis-instance' %s '%s'", env, SM_SOURCE_DIR,
             verb, r->dir);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "%s: status %d\n", cmd, rc);
    return rc == 0 ? 0 : -1;
}

/* The first line of DIR/name into buf. */
static int read_line(const private_redis *r, const char *name, char *buf, size_t len)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s", r->dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    int rc = fgets(buf, (int)len, f) ? 0 : -1;
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return rc;
}

/* The URL, port and pid the instance wrote. */
static int read_instance(private_redis *r)
{
    char port[16], pid[32];
    if (read_line(r, "url", r->url, sizeof r->url) != 0
        || read_line(r, "port", port, sizeof port) != 0
        || read_line(r, "redis.pid", pid, sizeof pid) != 0)
        return -1;
    r->port = atoi(port);
    r->pid = (pid_t)atoi(pid);
    return r->port > 0 && r->pid > 0 ? 0 : -1;
}

int private_redis_start(private_redis *r, const char *tag)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/sm-%s.XXXXXX", tag);
    if (!mkdtemp(r->dir)) {
        perror("mkdtemp");
        r->dir[0] = '\0';
        return -1;
    }
    if (instance(r, "start", 0) != 0 || read_instance(r) != 0) {
        fprintf(stderr, "cannot start a private redis-server in %s\n", r->dir);
        private_redis_stop(r);
        return -1;
    }
    return 0;
}

int private_redis_down(private_redis *r)
{
    private_redis_thaw(r);
    return instance(r, "stop", 0);
}

int private_redis_up(private_redis *r)
{
    if (instance(r, "start", r->port) != 0)
        return -1;
    return read_instance(r);
}

int private_redis_freeze(private_redis *r)
{
    if (r->pid <= 0 || kill(r->pid, SIGSTOP) != 0)
        return -1;
    r->frozen = 1;
    return 0;
}

void private_redis_thaw(private_redis *r)
{
    if (r->frozen && r->pid > 0)
        kill(r->pid, SIGCONT);
    r->frozen = 0;
}

void private_redis_stop(private_redis *r)
{
    private_redis_thaw(r); /* a frozen one would not stop politely */
    if (r->dir[0])
        instance(r, "stop", 0);
    memset(r, 0, sizeof *r);
}
