/* services.redis_smoke: the private Redis that ctest's fixture "redis"
 * starts (tests/services/redis-instance) works end to end through
 * hiredis, the client library cluster mode will use: its URL file, a
 * binary-safe SET/GET, PUBLISH on one connection reaching SUBSCRIBE on
 * another, and the settings the fixture promises (loopback only, nothing
 * written to disk). The URL file is in SM_TEST_REDIS_URL_FILE. */
#include <CUnit/CUnit.h>
#include <hiredis/hiredis.h>
#include <safemessenger/testhost_suite.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "service_url.h"

static char redis_host[64];
static int redis_port;
static int redis_db;

/* Parses redis://HOST:PORT[/DB], the form DIR/url holds. */
static int parse_url(const char *url)
{
    static const char prefix[] = "redis://";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *host = url + sizeof prefix - 1;
    const char *colon = strchr(host, ':');
    if (!colon || colon == host || (size_t)(colon - host) >= sizeof redis_host)
        return -1;
    memcpy(redis_host, host, (size_t)(colon - host));
    redis_host[colon - host] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535)
        return -1;
    long db = 0;
    if (*end == '/') {
        const char *digits = end + 1;
        db = strtol(digits, &end, 10);
        if (end == digits || db < 0 || db > 15)
            return -1;
    }
    if (*end != '\0')
        return -1;
    redis_port = (int)port;
    redis_db = (int)db;
    return 0;
}

static int suite_init(void)
{
    char url[256];
    if (service_url_read("SM_TEST_REDIS_URL_FILE", url, sizeof url) != 0)
        return -1;
    if (parse_url(url) != 0) {
        fprintf(stderr, "not a redis://HOST:PORT/DB URL: %s\n", url);
        return -1;
    }
    return 0;
}

/* A connection to the fixture's instance and database, with 5 s
 * timeouts so that a lost message fails the test instead of hanging it;
 * NULL (and a failed assertion) when it cannot connect. */
static redisContext *connect_redis(void)
{
    struct timeval timeout = { 5, 0 };
    redisContext *c = redisConnectWithTimeout(redis_host, redis_port, timeout);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    if (c->err) {
        fprintf(stderr, "connect %s:%d: %s\n", redis_host, redis_port, c->errstr);
        redisFree(c);
        CU_FAIL_FATAL("cannot connect to the fixture's Redis");
    }
    CU_ASSERT_EQUAL_FATAL(redisSetTimeout(c, timeout), REDIS_OK);
    if (redis_db != 0) {
        redisReply *r = redisCommand(c, "SELECT %d", redis_db);
        CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    return c;
}

/* True when reply is a bulk string of exactly len bytes equal to want. */
static int reply_is(const redisReply *reply, const char *want, size_t len)
{
    return reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == len
           && memcmp(reply->str, want, len) == 0;
}

#define REPLY_IS(reply, literal) reply_is(reply, literal, sizeof literal - 1)

static void set_get_round_trips_binary_value(void)
{
    /* A NUL and a non-UTF-8 byte: payloads cross Redis as bytes. */
    static const char value[] = "sealed\0payload\xff";
    redisContext *c = connect_redis();
    redisReply *r = redisCommand(c, "SET %s %b", "sm:smoke", value, sizeof value - 1);
    CU_ASSERT(r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0);
    freeReplyObject(r);
    r = redisCommand(c, "GET %s", "sm:smoke");
    CU_ASSERT(REPLY_IS(r, value));
    freeReplyObject(r);
    r = redisCommand(c, "DEL %s", "sm:smoke");
    CU_ASSERT(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    r = redisCommand(c, "GET %s", "sm:smoke");
    CU_ASSERT(r && r->type == REDIS_REPLY_NIL);
    freeReplyObject(r);
    redisFree(c);
}

static void publish_reaches_subscriber_on_other_connection(void)
{
    char channel[64];
    snprintf(channel, sizeof channel, "sm:smoke:%ld", (long)getpid());
    redisContext *sub = connect_redis();
    redisContext *pub = connect_redis();

    /* SUBSCRIBE answers only once the subscription is in place, so the
     * PUBLISH that follows cannot overtake it. */
    redisReply *r = redisCommand(sub, "SUBSCRIBE %s", channel);
    CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    CU_ASSERT(REPLY_IS(r->element[0], "subscribe"));
    CU_ASSERT(reply_is(r->element[1], channel, strlen(channel)));
    freeReplyObject(r);

    r = redisCommand(pub, "PUBLISH %s %b", channel, "hello\0node", (size_t)10);
    CU_ASSERT(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1); /* one receiver */
    freeReplyObject(r);

    void *reply = NULL;
    CU_ASSERT_EQUAL_FATAL(redisGetReply(sub, &reply), REDIS_OK);
    r = reply;
    CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    CU_ASSERT(REPLY_IS(r->element[0], "message"));
    CU_ASSERT(reply_is(r->element[1], channel, strlen(channel)));
    CU_ASSERT(REPLY_IS(r->element[2], "hello\0node"));
    freeReplyObject(r);
    redisFree(pub);
    redisFree(sub);
}

/* CONFIG GET NAME returns [NAME, VALUE]; true when VALUE is want. */
static int config_is(redisContext *c, const char *name, const char *want)
{
    redisReply *r = redisCommand(c, "CONFIG GET %s", name);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
             && reply_is(r->element[1], want, strlen(want));
    if (!ok)
        fprintf(stderr, "CONFIG GET %s: not \"%s\"\n", name, want);
    freeReplyObject(r);
    return ok;
}

static void instance_is_loopback_only_and_keeps_nothing(void)
{
    redisContext *c = connect_redis();
    CU_ASSERT(config_is(c, "bind", "127.0.0.1"));
    CU_ASSERT(config_is(c, "protected-mode", "yes"));
    CU_ASSERT(config_is(c, "save", ""));
    CU_ASSERT(config_is(c, "appendonly", "no"));
    redisFree(c);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(set_get_round_trips_binary_value),
        SM_TEST(publish_reaches_subscriber_on_other_connection),
        SM_TEST(instance_is_loopback_only_and_keeps_nothing),
        SM_TEST_END,
    };
    return sm_test_run("services.redis_smoke", tests, suite_init, NULL);
}
