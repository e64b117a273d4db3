/* services.redis_link: core/redis_link.c, cluster mode's link to Redis
 * (hiredis's async API on an lws loop), against the private Redis of
 * ctest's fixture "redis" (SM_TEST_REDIS_URL_FILE) and, for the restart
 * case, a second private instance this suite starts, stops and starts
 * again on the same port (tests/services/redis-instance, SM_REDIS_PORT),
 * and freezes with SIGSTOP for the liveness case; a loopback listener
 * whose accept queue is full stands for an address that drops packets.
 * The suite drives its own lws context; every wait is bounded. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <poll.h>
#include <safemessenger/testhost_suite.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "private_redis.h"
#include "redis_link.h"
#include "service_loop.h"
#include "service_url.h"

/* How late a timer may run on a loaded CI machine (ASan or TSan, the
 * other suites in parallel on two cores) before a bound counts as missed:
 * generous, since what the bounds prove is seconds against the kernel's
 * two minutes. */
#define SLACK_MS 3000

static char fixture_url[256];
static private_redis priv; /* the restart and freeze cases' instance, while it exists */
static char channel_prefix[64];

/* ---- what a link reports ------------------------------------------------- */

typedef struct probe {
    int ups, downs;          /* on_state calls */
    int messages;
    char channel[128];       /* the last message's */
    char payload[64];
    size_t len;
    char counted[128];       /* messages on this channel... */
    int on_counted;          /* ...are counted here */
} probe;

static void on_message(const char *channel, const void *payload, size_t len, void *arg)
{
    probe *p = arg;
    p->messages++;
    snprintf(p->channel, sizeof p->channel, "%s", channel);
    p->len = len < sizeof p->payload ? len : sizeof p->payload;
    memcpy(p->payload, payload, p->len);
    if (strcmp(channel, p->counted) == 0)
        p->on_counted++;
}

static void on_state(int up, void *arg)
{
    probe *p = arg;
    if (up)
        p->ups++;
    else
        p->downs++;
}

static const redis_link_handlers handlers = { on_message, on_state };

static redis_link *start_link(const char *url, probe *p)
{
    char err[256] = "";
    redis_link *link = NULL;
    memset(p, 0, sizeof *p);
    int rc = redis_link_start(service_loop_ctx, url, &handlers, p, &link, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "redis_link_start(%s): %d %s\n", url, rc, err);
    CU_ASSERT_EQUAL(rc, 0);
    return link;
}

/* A channel name of this run, so suites sharing the fixture never meet. */
static const char *chan(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s%s", channel_prefix, name);
    return buf;
}

static uint64_t counter(const redis_link *link, size_t offset)
{
    redis_link_counters c;
    redis_link_get_counters(link, &c);
    uint64_t v;
    memcpy(&v, (const char *)&c + offset, sizeof v);
    return v;
}

#define COUNTER(link, field) counter(link, offsetof(redis_link_counters, field))

/* Redis's reply at url to a command of the test's own, on a blocking
 * connection (freeReplyObject it), or NULL. */
static redisReply *blocking_command(const char *url, const char *fmt, const char *arg)
{
    redis_link_url u;
    char err[128];
    if (redis_link_parse_url(url, &u, err, sizeof err) != 0)
        return NULL;
    struct timeval timeout = { 5, 0 };
    redisContext *c = redisConnectWithTimeout(u.host, u.port, timeout);
    if (!c || c->err) {
        redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, fmt, arg);
    redisFree(c);
    return r;
}

/* Subscribers Redis itself counts on channel (PUBSUB NUMSUB), -1 on
 * failure. */
static long redis_subscribers(const char *channel)
{
    long n = -1;
    redisReply *r = blocking_command(fixture_url, "PUBSUB NUMSUB %s", channel);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[1]->type == REDIS_REPLY_INTEGER)
        n = (long)r->element[1]->integer;
    freeReplyObject(r);
    return n;
}

/* ---- the URL ------------------------------------------------------------- */

static void url_accepts_the_documented_forms(void)
{
    static const struct {
        const char *url, *host, *password;
        int port, db;
    } cases[] = {
        { "redis://127.0.0.1:6379/0", "127.0.0.1", "", 6379, 0 },
        { "redis://localhost", "localhost", "", 6379, 0 },
        { "redis://cache-1.example.internal:7000/15", "cache-1.example.internal", "", 7000, 15 },
        { "redis://host/", "host", "", 6379, 0 },
        { "redis://[::1]:6380/2", "::1", "", 6380, 2 },
        { "redis://[fe80::1]", "fe80::1", "", 6379, 0 },
        { "redis://:s3cr%40t%2f@10.0.0.2:1/3", "10.0.0.2", "s3cr@t/", 1, 3 },
        { "redis://:p@ss@host:65535", "host", "p@ss", 65535, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redis_link_url u;
        char err[128] = "x";
        int rc = redis_link_parse_url(cases[i].url, &u, err, sizeof err);
        if (rc != 0)
            fprintf(stderr, "%s: %s\n", cases[i].url, err);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_STRING_EQUAL(err, "");
        CU_ASSERT_STRING_EQUAL(u.host, cases[i].host);
        CU_ASSERT_STRING_EQUAL(u.password, cases[i].password);
        CU_ASSERT_EQUAL(u.port, cases[i].port);
        CU_ASSERT_EQUAL(u.db, cases[i].db);
    }
}

static void url_rejects_bad_input_with_the_reason(void)
{
    static const struct {
        const char *url, *reason;
    } cases[] = {
        { "http://host", "unknown scheme" },
        { "host:6379", "unknown scheme" },
        { "rediss://host", "TLS" },
        { "redis://host:0", "port '0' is not" },
        { "redis://host:65536", "port '65536'" },
        { "redis://host:", "port '' is not" },
        { "redis://host:12a", "port '12a'" },
        { "redis://host:+80", "port '+80'" },
        { "redis://host/16", "database '16' is not" },
        { "redis://host/-1", "database '-1'" },
        { "redis://host/1x", "database '1x'" },
        { "redis://host/1/2", "unexpected '/2' after the database" },
        { "redis://host/1?timeout=1", "unexpected '?timeout=1'" },
        { "redis://", "no host" },
        { "redis://:6379", "no host" },
        { "redis://[::1", "closing ']'" },
        { "redis://[not-v6]:1", "'[not-v6]' is not an IPv6 address" },
        { "redis://[::1]x", "unexpected 'x' after the IPv6 address" },
        { "redis://ho st", "holds ' '" },
        { "redis://user:pw@host", "user name" },
        { "redis://:@host", "password is empty" },
        { "redis://:a%4@host", "hexadecimal" },
        { "redis://:a%zz@host", "hexadecimal" },
        { "redis://:a%00b@host", "NUL" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redis_link_url u;
        memset(&u, 0x5a, sizeof u);
        char err[160] = "";
        CU_ASSERT_EQUAL(redis_link_parse_url(cases[i].url, &u, err, sizeof err),
                        REDIS_LINK_INVALID);
        if (!strstr(err, cases[i].reason))
            fprintf(stderr, "%s: expected '%s' in '%s'\n", cases[i].url, cases[i].reason, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].reason));
        CU_ASSERT_EQUAL(strncmp(err, "redis URL: ", 11), 0);
        /* Out-parameters are set only on success. */
        CU_ASSERT_EQUAL(u.port, 0x5a5a5a5a);
    }
}

static void url_too_long_is_refused_and_errors_never_show_the_password(void)
{
    char url[REDIS_LINK_URL_MAX + 16];
    memset(url, 'a', sizeof url - 1);
    memcpy(url, "redis://", 8);
    url[sizeof url - 1] = '\0';
    redis_link_url u;
    char err[128];
    CU_ASSERT_EQUAL(redis_link_parse_url(url, &u, err, sizeof err), REDIS_LINK_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "longer than 1024 bytes"));
    /* A host label of 300 bytes fits the URL but not the host. */
    memset(url, 'h', 308);
    memcpy(url, "redis://", 8);
    url[308] = '\0';
    CU_ASSERT_EQUAL(redis_link_parse_url(url, &u, err, sizeof err), REDIS_LINK_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "host is longer"));

    CU_ASSERT_EQUAL(redis_link_parse_url("redis://:hunter2@host:99999", &u, err, sizeof err),
                    REDIS_LINK_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "port '99999'"));
    CU_ASSERT_PTR_NULL(strstr(err, "hunter2"));
    /* A short buffer gets a cut, terminated message. */
    char small[8];
    memset(small, 'x', sizeof small);
    CU_ASSERT_EQUAL(redis_link_parse_url("redis://host:0", &u, small, sizeof small),
                    REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(small[sizeof small - 1], '\0');
}

static void start_refuses_a_bad_url(void)
{
    redis_link *link = (redis_link *)&service_loop_ctx; /* a sentinel: must stay untouched */
    char err[128] = "";
    probe p;
    CU_ASSERT_EQUAL(redis_link_start(service_loop_ctx, "redis://host:70000", &handlers, &p, &link, err,
                                     sizeof err), REDIS_LINK_INVALID);
    CU_ASSERT_PTR_EQUAL(link, (redis_link *)&service_loop_ctx);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "port '70000'"));
}

/* ---- against the fixture's Redis ----------------------------------------- */

static void publish_reaches_a_subscriber_binary_safe_and_only_on_its_channel(void)
{
    static const char payload[] = "sealed\0payload\xff";
    char a[128], b[128];
    probe pp, sp;
    redis_link *pub = start_link(fixture_url, &pp);
    redis_link *sub = start_link(fixture_url, &sp);
    CU_ASSERT_FATAL(pub && sub);
    /* Subscribing before the link is up: sent once it is. */
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, chan(a, sizeof a, "topic:a")), 0);
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, a), 0); /* twice is once */
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub), 5000);
    CU_ASSERT(redis_link_is_up(pub) && redis_link_is_up(sub));
    CU_ASSERT_EQUAL(pp.ups, 1);
    CU_ASSERT_EQUAL(sp.ups, 1);
    CU_ASSERT_EQUAL(pp.downs + sp.downs, 0);
    /* Up means the subscriptions made so far are confirmed. */
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, a), 1);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, chan(b, sizeof b, "topic:b")), 0);

    CU_ASSERT_EQUAL(redis_link_publish(pub, b, "not for you", 11), 0);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, payload, sizeof payload - 1), 0);
    SERVICE_WAIT_FOR(sp.messages >= 1, 3000);
    /* One publisher connection: Redis handles its commands in order, so
     * had the first reached the subscriber, it would have come first. */
    CU_ASSERT_EQUAL(sp.messages, 1);
    CU_ASSERT_STRING_EQUAL(sp.channel, a);
    CU_ASSERT_EQUAL(sp.len, sizeof payload - 1);
    CU_ASSERT_EQUAL(memcmp(sp.payload, payload, sizeof payload - 1), 0);
    SERVICE_WAIT_FOR(COUNTER(pub, in_flight) == 0, 3000);
    CU_ASSERT_EQUAL(COUNTER(pub, published), 2);
    CU_ASSERT_EQUAL(COUNTER(pub, publish_failed), 0);
    CU_ASSERT_EQUAL(COUNTER(sub, received), 1);
    CU_ASSERT_EQUAL(COUNTER(sub, reconnects), 0);

    CU_ASSERT_EQUAL(redis_link_publish(pub, "", "x", 1), REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, ""), REDIS_LINK_INVALID);
    redis_link_stop(pub);
    redis_link_stop(sub);
}

static void unsubscribe_stops_delivery(void)
{
    char a[128], marker[128];
    probe pp, sp;
    redis_link *pub = start_link(fixture_url, &pp);
    redis_link *sub = start_link(fixture_url, &sp);
    CU_ASSERT_FATAL(pub && sub);
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub), 5000);
    CU_ASSERT_FATAL(redis_link_is_up(pub) && redis_link_is_up(sub));
    /* Subscribing while up: confirmed a moment later. */
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, chan(a, sizeof a, "unsub:a")), 0);
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, chan(marker, sizeof marker, "unsub:marker")), 0);
    SERVICE_WAIT_FOR(redis_link_is_subscribed(sub, a) && redis_link_is_subscribed(sub, marker), 3000);
    CU_ASSERT(redis_link_is_subscribed(sub, a) && redis_link_is_subscribed(sub, marker));
    CU_ASSERT_EQUAL(redis_subscribers(a), 1);
    snprintf(sp.counted, sizeof sp.counted, "%s", a);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "1", 1), 0);
    SERVICE_WAIT_FOR(sp.on_counted == 1, 3000);
    CU_ASSERT_EQUAL(sp.on_counted, 1);

    CU_ASSERT_EQUAL(redis_link_unsubscribe(sub, a), 0);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, a), 0);
    CU_ASSERT_EQUAL(redis_link_unsubscribe(sub, a), REDIS_LINK_INVALID);
    /* Published right away, possibly before Redis saw the UNSUBSCRIBE:
     * it must not reach the caller either way. */
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "2", 1), 0);
    CU_ASSERT_EQUAL(redis_link_publish(pub, marker, "end", 3), 0);
    SERVICE_WAIT_FOR(strcmp(sp.channel, marker) == 0, 3000);
    CU_ASSERT_STRING_EQUAL(sp.channel, marker);
    CU_ASSERT_EQUAL(sp.on_counted, 1);
    CU_ASSERT_EQUAL(sp.messages, 2);
    /* Redis forgot the subscriber too (the marker came after it). */
    CU_ASSERT_EQUAL(redis_subscribers(a), 0);
    CU_ASSERT_EQUAL(redis_subscribers(marker), 1);
    redis_link_stop(pub);
    redis_link_stop(sub);
    /* Stopping a link closes its connections. */
    SERVICE_WAIT_FOR(redis_subscribers(marker) == 0, 3000);
    CU_ASSERT_EQUAL(redis_subscribers(marker), 0);
}

static void publish_beyond_the_in_flight_cap_is_busy(void)
{
    char a[128];
    probe pp;
    redis_link *pub = start_link(fixture_url, &pp);
    CU_ASSERT_FATAL(pub != NULL);
    SERVICE_WAIT_FOR(redis_link_is_up(pub), 5000);
    CU_ASSERT_FATAL(redis_link_is_up(pub));
    chan(a, sizeof a, "busy");
    int ok = 0;
    /* Nothing is answered while the loop does not run. */
    for (int i = 0; i < REDIS_LINK_MAX_IN_FLIGHT; i++)
        ok += redis_link_publish(pub, a, "x", 1) == 0;
    CU_ASSERT_EQUAL(ok, REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "x", 1), REDIS_LINK_BUSY);
    CU_ASSERT_EQUAL(COUNTER(pub, publish_refused), 1);
    SERVICE_WAIT_FOR(COUNTER(pub, in_flight) == 0, 10000);
    CU_ASSERT_EQUAL(COUNTER(pub, published), REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "x", 1), 0);
    /* Stopped with one in flight: it counts as failed, nothing leaks. */
    redis_link_stop(pub);
}

/* ---- without Redis ----------------------------------------------------- */

/* A loopback port nothing listens on (bound, then released). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0
        && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void publish_without_redis_is_refused_and_the_link_reports_down(void)
{
    char url[64], a[128];
    int port = closed_port();
    CU_ASSERT_FATAL(port > 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    probe p;
    redis_link *link = start_link(url, &p);
    CU_ASSERT_FATAL(link != NULL);
    CU_ASSERT_EQUAL(redis_link_publish(link, chan(a, sizeof a, "nowhere"), "x", 1),
                    REDIS_LINK_DOWN);
    SERVICE_WAIT_FOR(p.downs > 0, 3000);
    CU_ASSERT_EQUAL(p.downs, 1);
    CU_ASSERT_EQUAL(p.ups, 0);
    CU_ASSERT_EQUAL(redis_link_is_up(link), 0);
    CU_ASSERT_EQUAL(redis_link_publish(link, a, "x", 1), REDIS_LINK_DOWN);
    /* A subscription is kept for when Redis comes. */
    CU_ASSERT_EQUAL(redis_link_subscribe(link, a), 0);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(link, a), 0);
    /* Further failed attempts (backoff) report nothing new. */
    SERVICE_WAIT_FOR(0, 400);
    CU_ASSERT_EQUAL(p.downs, 1);
    CU_ASSERT_EQUAL(COUNTER(link, publish_refused), 2);
    CU_ASSERT_EQUAL(COUNTER(link, published), 0);
    redis_link_stop(link);
}


/* ---- an address that drops packets ---------------------------------------- */

/* A loopback listener nobody accepts on, backlog 0, whose accept queue
 * the test fills: Linux then drops further SYNs (a listen overflow), as a
 * firewall or a vanished host would, and a connect waits for the
 * kernel's TCP timeout (about two minutes). Returns the listener (and
 * its port in *port), or -1; fillers[0..*n) are the test's own client
 * sockets, the last of them the one left waiting. */
static int full_listener(int *port, int *fillers, int max_fillers, int *n)
{
    *n = 0;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 0) != 0
        || getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
        if (lfd >= 0)
            close(lfd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    while (*n < max_fillers) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0)
            break;
        fillers[(*n)++] = fd;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
            break;
        struct pollfd pfd = { fd, POLLOUT, 0 };
        if (poll(&pfd, 1, 500) == 0)
            return lfd; /* this one's SYN was dropped: the queue is full */
    }
    for (int i = 0; i < *n; i++)
        close(fillers[i]);
    close(lfd);
    return -1;
}

/* Accepts on lfd, running the loop, until a connection sends the first
 * bytes of a SELECT (the link's handshake) or ms pass; 1 when one did. */
static int link_attempt_arrives(int lfd, int ms)
{
    static const char handshake[] = "*2\r\n$6\r\nSELECT\r\n";
    int fds[16], n = 0, seen = 0;
    char buf[64];
    double end = service_loop_now() + ms / 1000.0;
    while (!seen && service_loop_now() < end) {
        service_loop_pump();
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0 && n < (int)(sizeof fds / sizeof fds[0]))
            fds[n++] = fd;
        else if (fd >= 0)
            close(fd);
        for (int i = 0; i < n && !seen; i++) {
            ssize_t got = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT | MSG_PEEK);
            seen = got >= (ssize_t)sizeof handshake - 1
                   && memcmp(buf, handshake, sizeof handshake - 1) == 0;
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return seen;
}

static void connect_to_an_address_that_drops_packets_times_out_and_retries(void)
{
    int fillers[8], n_fillers = 0, port = 0;
    char url[64], a[128];
    int lfd = full_listener(&port, fillers, 8, &n_fillers);
    CU_ASSERT_FATAL(lfd >= 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    probe p;
    double started = service_loop_now();
    redis_link *link = start_link(url, &p);
    if (!link)
        goto out;
    const double bound = REDIS_LINK_CONNECT_TIMEOUT_MS / 1000.0;
    SERVICE_WAIT_FOR(p.downs > 0, REDIS_LINK_CONNECT_TIMEOUT_MS + SLACK_MS);
    double took = service_loop_now() - started;
    fprintf(stderr, "down %.2f s after start (connect timeout %.1f s)\n", took, bound);
    CU_ASSERT_EQUAL(p.downs, 1);
    /* The timeout, not a refusal, and not the kernel's two minutes. */
    CU_ASSERT(took >= bound - 0.05);
    CU_ASSERT(took <= bound + SLACK_MS / 1000.0);
    CU_ASSERT_EQUAL(redis_link_publish(link, chan(a, sizeof a, "dropped"), "x", 1),
                    REDIS_LINK_DOWN);

    /* Keeps retrying: once the queue has room, a later attempt reaches
     * the listener (the timed-out ones were closed, and the test's own
     * waiting connect goes first). Nothing answers its SELECT. */
    for (int i = 0; i < n_fillers; i++)
        close(fillers[i]);
    n_fillers = 0;
    for (int fd; (fd = accept(lfd, NULL, NULL)) >= 0;)
        close(fd);
    CU_ASSERT_EQUAL(link_attempt_arrives(lfd, REDIS_LINK_CONNECT_TIMEOUT_MS + 3000), 1);
    /* An attempt that connects but is never answered times out too,
     * without a new report. */
    SERVICE_WAIT_FOR(0, REDIS_LINK_CONNECT_TIMEOUT_MS + 300);
    CU_ASSERT_EQUAL(p.downs, 1);
    CU_ASSERT_EQUAL(p.ups, 0);
    CU_ASSERT_EQUAL(redis_link_is_up(link), 0);
out:
    redis_link_stop(link);
    for (int i = 0; i < n_fillers; i++)
        close(fillers[i]);
    close(lfd);
}

/* ---- a Redis restart ------------------------------------------------------ */

/* After Redis came back: the two links reported up a second time and
 * reconnected once, the subscriber's subscription to channel restored
 * (a publish from `from` reaches it as its second message). */
static void check_back_with_subscription(redis_link *pub, const probe *pp, redis_link *sub,
                                         const probe *sp, const char *channel, redis_link *from)
{
    CU_ASSERT_EQUAL(pp->ups, 2);
    CU_ASSERT_EQUAL(sp->ups, 2);
    CU_ASSERT_EQUAL(COUNTER(pub, reconnects), 1);
    CU_ASSERT_EQUAL(COUNTER(sub, reconnects), 1);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, channel), 1);
    CU_ASSERT_EQUAL(redis_link_publish(from, channel, "after", 5), 0);
    SERVICE_WAIT_FOR(sp->messages == 2, 3000);
    CU_ASSERT_EQUAL(sp->messages, 2);
    CU_ASSERT_EQUAL(sp->len, 5);
    CU_ASSERT_EQUAL(memcmp(sp->payload, "after", 5), 0);
}

static void links_come_back_after_a_redis_restart_with_their_subscriptions(void)
{
    char a[128];
    probe pp, sp;
    redis_link *pub = NULL, *sub = NULL;
    if (private_redis_start(&priv, "redis-link") != 0) {
        CU_FAIL("cannot start a private redis-server");
        goto out;
    }
    pub = start_link(priv.url, &pp);
    sub = start_link(priv.url, &sp);
    if (!pub || !sub)
        goto out;
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, chan(a, sizeof a, "restart")), 0);
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub), 5000);
    CU_ASSERT(redis_link_is_up(pub) && redis_link_is_up(sub));
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "before", 6), 0);
    SERVICE_WAIT_FOR(sp.messages == 1, 3000);
    CU_ASSERT_EQUAL(sp.messages, 1);

    /* Redis goes away: both links say so, and publishing is refused. */
    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    SERVICE_WAIT_FOR(pp.downs == 1 && sp.downs == 1, 5000);
    CU_ASSERT_EQUAL(pp.downs, 1);
    CU_ASSERT_EQUAL(sp.downs, 1);
    CU_ASSERT_EQUAL(redis_link_is_up(sub), 0);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "lost", 4), REDIS_LINK_DOWN);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, a), 0);
    /* Some failed attempts while it is away (the backoff grows). */
    SERVICE_WAIT_FOR(0, 700);

    /* Back on the same port: the links return by themselves, the
     * subscription with them. */
    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    double back_from = service_loop_now();
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub), 8000);
    CU_ASSERT(redis_link_is_up(pub) && redis_link_is_up(sub));
    fprintf(stderr, "links up again %.2f s after redis-server answered\n", service_loop_now() - back_from);
    check_back_with_subscription(pub, &pp, sub, &sp, a, pub);
out:
    redis_link_stop(pub);
    redis_link_stop(sub);
    private_redis_stop(&priv);
}


static void a_frozen_redis_is_detected_and_the_links_come_back_when_it_resumes(void)
{
    char a[128], other[128];
    probe pp, sp, lp;
    redis_link *pub = NULL, *sub = NULL, *late = NULL;
    if (private_redis_start(&priv, "redis-link") != 0) {
        CU_FAIL("cannot start a private redis-server");
        goto out;
    }
    pub = start_link(priv.url, &pp);
    sub = start_link(priv.url, &sp);
    if (!pub || !sub)
        goto out;
    CU_ASSERT_EQUAL(redis_link_subscribe(sub, chan(a, sizeof a, "frozen")), 0);
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub), 5000);
    if (!redis_link_is_up(pub) || !redis_link_is_up(sub)) {
        CU_FAIL("the links did not come up");
        goto out;
    }
    /* A few heartbeats answered: an idle link stays up. */
    SERVICE_WAIT_FOR(0, REDIS_LINK_PING_INTERVAL_MS * 2 + 200);
    CU_ASSERT_EQUAL(pp.downs + sp.downs, 0);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "before", 6), 0);
    SERVICE_WAIT_FOR(sp.messages == 1, 3000);
    CU_ASSERT_EQUAL(sp.messages, 1);

    /* Frozen: the kernel still accepts connections and data, Redis
     * answers nothing. */
    if (private_redis_freeze(&priv) != 0) {
        CU_FAIL("cannot SIGSTOP redis-server");
        goto out;
    }
    double frozen_at = service_loop_now();
    /* Sent, never answered: it counts as failed once the link gives up.
     * (On a channel nobody reads: Redis may still run it on resuming.) */
    CU_ASSERT_EQUAL(redis_link_publish(pub, chan(other, sizeof other, "frozen:lost"), "x", 1), 0);
    /* A link that starts meanwhile connects (TCP) but gets no answer to
     * its SELECT: down after the connect timeout. */
    late = start_link(priv.url, &lp);
    SERVICE_WAIT_FOR(lp.downs == 1, REDIS_LINK_CONNECT_TIMEOUT_MS + SLACK_MS);
    double late_down = service_loop_now() - frozen_at;
    /* A link is down once one of its connections is found silent, and
     * each connection is, at most an interval after DEAD_AFTER from its
     * last answer: publish is refused once the command connection's
     * turn came, the subscription gone once the subscriber's did. */
    SERVICE_WAIT_FOR(pp.downs == 1 && sp.downs == 1, REDIS_LINK_DEAD_AFTER_MS
                                                 + REDIS_LINK_PING_INTERVAL_MS + SLACK_MS);
    double down = service_loop_now() - frozen_at;
    SERVICE_WAIT_FOR(COUNTER(pub, publish_failed) == 1 && !redis_link_is_subscribed(sub, a),
             REDIS_LINK_DEAD_AFTER_MS + REDIS_LINK_PING_INTERVAL_MS + SLACK_MS
                 - (service_loop_now() - frozen_at) * 1000);
    double all_down = service_loop_now() - frozen_at;
    fprintf(stderr, "frozen redis: links down after %.2f s, every connection after %.2f s, a "
            "new link after %.2f s\n", down, all_down, late_down);
    CU_ASSERT_EQUAL(lp.downs, 1);
    CU_ASSERT_EQUAL(lp.ups, 0);
    CU_ASSERT(late_down >= REDIS_LINK_CONNECT_TIMEOUT_MS / 1000.0 - 0.05);
    CU_ASSERT_EQUAL(pp.downs, 1);
    CU_ASSERT_EQUAL(sp.downs, 1);
    /* Not before a connection was silent for DEAD_AFTER: the last answer
     * came at most one heartbeat interval before the freeze (plus how
     * late that heartbeat's timer ran on a busy machine). */
    CU_ASSERT(down >= (REDIS_LINK_DEAD_AFTER_MS - REDIS_LINK_PING_INTERVAL_MS) / 1000.0 - 0.3);
    CU_ASSERT_EQUAL(redis_link_is_up(pub), 0);
    CU_ASSERT_EQUAL(redis_link_is_up(sub), 0);
    CU_ASSERT_EQUAL(redis_link_publish(pub, a, "lost", 4), REDIS_LINK_DOWN);
    CU_ASSERT_EQUAL(COUNTER(pub, publish_failed), 1);
    CU_ASSERT_EQUAL(COUNTER(pub, in_flight), 0);
    CU_ASSERT_EQUAL(COUNTER(pub, published), 1);
    CU_ASSERT_EQUAL(redis_link_is_subscribed(sub, a), 0);
    /* Still frozen: the retries connect and time out, reporting nothing
     * new. */
    SERVICE_WAIT_FOR(0, REDIS_LINK_CONNECT_TIMEOUT_MS + 500);
    CU_ASSERT_EQUAL(pp.downs + sp.downs + lp.downs, 3);
    CU_ASSERT_EQUAL(pp.ups + sp.ups + lp.ups, 2);

    /* Resumed: all three come up by themselves, the subscription with
     * them. */
    private_redis_thaw(&priv);
    double thawed_at = service_loop_now();
    SERVICE_WAIT_FOR(redis_link_is_up(pub) && redis_link_is_up(sub) && redis_link_is_up(late), 8000);
    CU_ASSERT(redis_link_is_up(pub) && redis_link_is_up(sub) && redis_link_is_up(late));
    fprintf(stderr, "links up again %.2f s after SIGCONT\n", service_loop_now() - thawed_at);
    CU_ASSERT_EQUAL(lp.ups, 1);
    check_back_with_subscription(pub, &pp, sub, &sp, a, late);
out:
    redis_link_stop(pub);
    redis_link_stop(sub);
    redis_link_stop(late);
    private_redis_stop(&priv);
}

/* ---- commands with replies ------------------------------------------------ */

/* A copy of what one callback got. */
typedef struct reply_copy {
    int got_null;            /* no reply: the command failed */
    int type;
    long long integer;
    char str[64];            /* a string, status or error reply's bytes */
    size_t len;
    size_t elements;
    char element[4][32];     /* an array's first string (or integer) elements, as text */
} reply_copy;

typedef struct replies {
    reply_copy r[32];
    int n;                   /* callbacks run */
    redis_link *link;        /* with send_in_callback: */
    int send_in_callback;    /* a command sent from a failure callback... */
    int sent_in_callback;    /* ...returned this */
} replies;

static void copy_reply(reply_copy *c, const redisReply *r)
{
    memset(c, 0, sizeof *c);
    if (!r) {
        c->got_null = 1;
        return;
    }
    c->type = r->type;
    c->integer = r->integer;
    if (r->str) {
        c->len = r->len;
        memcpy(c->str, r->str, r->len < sizeof c->str ? r->len : sizeof c->str - 1);
    }
    c->elements = r->elements;
    for (size_t i = 0; i < r->elements && i < 4; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_INTEGER)
            snprintf(c->element[i], sizeof c->element[i], "%lld", e->integer);
        else if (e->str)
            snprintf(c->element[i], sizeof c->element[i], "%.*s", (int)e->len, e->str);
    }
}

static void on_reply(const struct redisReply *r, void *arg)
{
    replies *rs = arg;
    if (rs->n < (int)(sizeof rs->r / sizeof rs->r[0]))
        copy_reply(&rs->r[rs->n], r);
    rs->n++;
    if (!r && rs->send_in_callback) {
        static const char *const get[] = { "GET", "x" };
        rs->sent_in_callback = redis_link_command(rs->link, 2, get, NULL, NULL, NULL);
        rs->send_in_callback = 0;
    }
}

/* One command of NUL-terminated arguments. */
static int command(redis_link *link, replies *rs, int argc, const char *const *argv)
{
    return redis_link_command(link, argc, argv, NULL, on_reply, rs);
}

/* An integer Redis at url answers to a command of the test's own (for
 * an array, its first element; 0 for a status), or -1. */
static long long redis_int(const char *url, const char *fmt, const char *arg)
{
    long long n = -1;
    redisReply *r = blocking_command(url, fmt, arg);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0)
        n = r->element[0]->type == REDIS_REPLY_INTEGER ? r->element[0]->integer : -1;
    else if (r && r->type == REDIS_REPLY_INTEGER)
        n = r->integer;
    else if (r && r->type == REDIS_REPLY_STATUS)
        n = 0;
    freeReplyObject(r);
    return n;
}

/* A link to the fixture, up (else NULL, stopped), and rs emptied. */
static redis_link *start_up_link(probe *p, replies *rs)
{
    memset(rs, 0, sizeof *rs);
    redis_link *link = start_link(fixture_url, p);
    if (link)
        SERVICE_WAIT_FOR(redis_link_is_up(link), 5000);
    if (link && !redis_link_is_up(link)) {
        redis_link_stop(link);
        link = NULL;
    }
    return link;
}

static void commands_get_every_type_of_reply_in_order_and_binary_safe(void)
{
    static const char value[] = "a\0b\xff";
    char key[128], num[128], list[128], missing[128];
    chan(key, sizeof key, "cmd:bin");
    chan(num, sizeof num, "cmd:num");
    chan(list, sizeof list, "cmd:list");
    chan(missing, sizeof missing, "cmd:missing");
    probe p;
    replies rs;
    redis_link *link = start_up_link(&p, &rs);
    CU_ASSERT_FATAL(link != NULL);

    const char *set[] = { "SET", key, value };
    const size_t set_len[] = { 3, strlen(key), sizeof value - 1 };
    CU_ASSERT_EQUAL(redis_link_command(link, 3, set, set_len, on_reply, &rs), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ "GET", key }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ "GET", missing }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ "INCR", num }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 4, (const char *const[]){ "RPUSH", list, "x", "y" }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 4, (const char *const[]){ "LRANGE", list, "0", "-1" }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ "INCR", key }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 1, (const char *const[]){ "NO-SUCH-COMMAND" }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 4, (const char *const[]){ "DEL", key, num, list }), 0);
    CU_ASSERT_EQUAL(rs.n, 0); /* nothing before the loop runs */
    SERVICE_WAIT_FOR(rs.n == 9, 3000);
    CU_ASSERT_EQUAL_FATAL(rs.n, 9);
    CU_ASSERT_EQUAL(rs.r[0].type, REDIS_REPLY_STATUS);
    CU_ASSERT_STRING_EQUAL(rs.r[0].str, "OK");
    CU_ASSERT_EQUAL(rs.r[1].type, REDIS_REPLY_STRING);
    CU_ASSERT_EQUAL(rs.r[1].len, sizeof value - 1);
    CU_ASSERT_EQUAL(memcmp(rs.r[1].str, value, sizeof value - 1), 0);
    CU_ASSERT_EQUAL(rs.r[2].type, REDIS_REPLY_NIL);
    CU_ASSERT_EQUAL(rs.r[3].type, REDIS_REPLY_INTEGER);
    CU_ASSERT_EQUAL(rs.r[3].integer, 1);
    CU_ASSERT_EQUAL(rs.r[4].type, REDIS_REPLY_INTEGER);
    CU_ASSERT_EQUAL(rs.r[4].integer, 2);
    CU_ASSERT_EQUAL(rs.r[5].type, REDIS_REPLY_ARRAY);
    CU_ASSERT_EQUAL(rs.r[5].elements, 2);
    CU_ASSERT_STRING_EQUAL(rs.r[5].element[0], "x");
    CU_ASSERT_STRING_EQUAL(rs.r[5].element[1], "y");
    CU_ASSERT_EQUAL(rs.r[6].type, REDIS_REPLY_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(rs.r[6].str, "not an integer"));
    CU_ASSERT_EQUAL(rs.r[7].type, REDIS_REPLY_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(rs.r[7].str, "unknown command"));
    CU_ASSERT_EQUAL(rs.r[8].type, REDIS_REPLY_INTEGER);
    CU_ASSERT_EQUAL(rs.r[8].integer, 3);
    for (int i = 0; i < 9; i++)
        CU_ASSERT_EQUAL(rs.r[i].got_null, 0);
    CU_ASSERT_EQUAL(COUNTER(link, commands), 9);
    CU_ASSERT_EQUAL(COUNTER(link, command_failed), 0);
    CU_ASSERT_EQUAL(COUNTER(link, commands_in_flight), 0);

    /* What would change the connection behind the link, and bad
     * arguments, are refused before anything is sent. */
    static const char *const refused[] = { "subscribe", "PSUBSCRIBE", "Monitor", "SELECT",
                                           "AUTH", "QUIT", "HELLO", "RESET", "UNSUBSCRIBE" };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ refused[i], "1" }),
                        REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(command(link, &rs, 0, (const char *const[]){ "PING" }), REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(command(link, &rs, 2, (const char *const[]){ "GET", NULL }),
                    REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(redis_link_command(link, 1, NULL, NULL, on_reply, &rs), REDIS_LINK_INVALID);
    /* A callback may be NULL. */
    CU_ASSERT_EQUAL(redis_link_command(link, 1, (const char *const[]){ "PING" }, NULL, NULL,
                                       NULL), 0);
    SERVICE_WAIT_FOR(COUNTER(link, commands) == 10, 3000);
    CU_ASSERT_EQUAL(COUNTER(link, commands), 10);
    CU_ASSERT_EQUAL(rs.n, 9);
    redis_link_stop(link);
}

static void commands_beyond_the_in_flight_cap_are_busy(void)
{
    probe p;
    replies rs;
    redis_link *link = start_up_link(&p, &rs);
    CU_ASSERT_FATAL(link != NULL);
    static const char *const ping[] = { "PING" };
    int ok = 0;
    for (int i = 0; i < REDIS_LINK_MAX_IN_FLIGHT; i++)
        ok += redis_link_command(link, 1, ping, NULL, NULL, NULL) == 0;
    CU_ASSERT_EQUAL(ok, REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(command(link, &rs, 1, ping), REDIS_LINK_BUSY);
    /* Publishes have a cap of their own. */
    char a[128];
    CU_ASSERT_EQUAL(redis_link_publish(link, chan(a, sizeof a, "cap"), "x", 1), 0);
    CU_ASSERT_EQUAL(COUNTER(link, command_refused), 1);
    CU_ASSERT_EQUAL(COUNTER(link, commands_in_flight), REDIS_LINK_MAX_IN_FLIGHT);
    SERVICE_WAIT_FOR(COUNTER(link, commands_in_flight) == 0, 10000);
    CU_ASSERT_EQUAL(COUNTER(link, commands), REDIS_LINK_MAX_IN_FLIGHT);
    CU_ASSERT_EQUAL(command(link, &rs, 1, ping), 0);
    SERVICE_WAIT_FOR(rs.n == 1, 3000);
    CU_ASSERT_EQUAL(rs.n, 1);
    CU_ASSERT_STRING_EQUAL(rs.r[0].str, "PONG");
    CU_ASSERT_EQUAL(rs.r[0].type, REDIS_REPLY_STATUS);
    redis_link_stop(link);
}

static void commands_without_redis_are_refused_at_once(void)
{
    char url[64];
    int port = closed_port();
    CU_ASSERT_FATAL(port > 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    probe p;
    replies rs;
    memset(&rs, 0, sizeof rs);
    redis_link *link = start_link(url, &p);
    CU_ASSERT_FATAL(link != NULL);
    redis_link_script *script = NULL;
    CU_ASSERT_EQUAL(redis_link_script_add(link, "return 1", &script), 0);
    static const char *const ping[] = { "PING" };
    /* Before the first attempt, and after it failed. */
    CU_ASSERT_EQUAL(command(link, &rs, 1, ping), REDIS_LINK_DOWN);
    CU_ASSERT_EQUAL(redis_link_eval(link, script, 0, 0, NULL, NULL, on_reply, &rs),
                    REDIS_LINK_DOWN);
    SERVICE_WAIT_FOR(p.downs > 0, 3000);
    CU_ASSERT_EQUAL(p.downs, 1);
    double t0 = service_loop_now();
    CU_ASSERT_EQUAL(command(link, &rs, 1, ping), REDIS_LINK_DOWN);
    CU_ASSERT_EQUAL(redis_link_eval(link, script, 0, 0, NULL, NULL, on_reply, &rs),
                    REDIS_LINK_DOWN);
    CU_ASSERT(service_loop_now() - t0 < 0.1);
    SERVICE_WAIT_FOR(0, 300);
    CU_ASSERT_EQUAL(rs.n, 0); /* a refused call never calls back */
    CU_ASSERT_EQUAL(COUNTER(link, command_refused), 4);
    CU_ASSERT_EQUAL(COUNTER(link, commands_in_flight), 0);
    redis_link_stop(link);
}

/* ---- scripts ---------------------------------------------------------------- */

/* KEYS[1], ARGV[1] as given (binary), ARGV[2] + 1 as an integer. */
static const char echo_script[] =
    "return { KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1 }";

static void check_echo(const reply_copy *c, const char *key)
{
    CU_ASSERT_EQUAL(c->got_null, 0);
    CU_ASSERT_EQUAL(c->type, REDIS_REPLY_ARRAY);
    CU_ASSERT_EQUAL(c->elements, 3);
    CU_ASSERT_STRING_EQUAL(c->element[0], key);
    CU_ASSERT_STRING_EQUAL(c->element[1], "v\xff");
    CU_ASSERT_STRING_EQUAL(c->element[2], "42");
}

static int eval_echo(redis_link *link, const redis_link_script *script, const char *key,
                     replies *rs)
{
    const char *argv[] = { key, "v\xff", "41" };
    return redis_link_eval(link, script, 1, 3, argv, NULL, on_reply, rs);
}

static void scripts_run_by_sha_loaded_on_connect_and_after_a_flush(void)
{
    probe p;
    replies rs;
    memset(&rs, 0, sizeof rs);
    redis_link *link = NULL;
    redis_link_script *echo = NULL, *again = NULL, *late = NULL, *broken = NULL;
    if (private_redis_start(&priv, "redis-link") != 0) {
        CU_FAIL("cannot start a private redis-server");
        goto out;
    }
    link = start_link(priv.url, &p);
    if (!link)
        goto out;
    /* Added before the link is up: loaded as it connects. */
    CU_ASSERT_EQUAL(redis_link_script_add(link, echo_script, &echo), 0);
    CU_ASSERT_EQUAL(redis_link_script_add(link, echo_script, &again), 0);
    CU_ASSERT_PTR_EQUAL(echo, again);
    CU_ASSERT_EQUAL(redis_link_script_add(link, "", &again), REDIS_LINK_INVALID);
    CU_ASSERT_EQUAL(strlen(redis_link_script_sha(echo)), 40);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(echo)), 0);
    SERVICE_WAIT_FOR(redis_link_is_up(link), 5000);
    CU_ASSERT_FATAL(redis_link_is_up(link));
    /* Redis's SHA1 of the text is the link's. */
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(echo)), 1);
    CU_ASSERT_EQUAL(eval_echo(link, echo, "k1", &rs), 0);
    /* Added on a live connection: loaded at once, before its first call. */
    CU_ASSERT_EQUAL(redis_link_script_add(link, "return 'late'", &late), 0);
    CU_ASSERT_EQUAL(redis_link_eval(link, late, 0, 0, NULL, NULL, on_reply, &rs), 0);
    /* A script that does not compile: Redis's error reaches the caller. */
    CU_ASSERT_EQUAL(redis_link_script_add(link, "return (", &broken), 0);
    CU_ASSERT_EQUAL(redis_link_eval(link, broken, 0, 0, NULL, NULL, on_reply, &rs), 0);
    SERVICE_WAIT_FOR(rs.n == 3, 3000);
    CU_ASSERT_EQUAL_FATAL(rs.n, 3);
    check_echo(&rs.r[0], "k1");
    CU_ASSERT_EQUAL(rs.r[1].type, REDIS_REPLY_STRING);
    CU_ASSERT_STRING_EQUAL(rs.r[1].str, "late");
    CU_ASSERT_EQUAL(rs.r[2].type, REDIS_REPLY_ERROR);
    CU_ASSERT_EQUAL(COUNTER(link, script_fallbacks), 1); /* the broken one's */

    /* Forgotten by Redis behind the link's back: sent again as EVAL,
     * which loads it too; the numbers of keys and arguments hold. */
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT FLUSH", NULL), 0);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(echo)), 0);
    CU_ASSERT_EQUAL(eval_echo(link, echo, "k2", &rs), 0);
    CU_ASSERT_EQUAL(redis_link_eval(link, echo, 4, 3, (const char *const[]){ "a", "b", "c" },
                                    NULL, on_reply, &rs), REDIS_LINK_INVALID);
    SERVICE_WAIT_FOR(rs.n == 4, 3000);
    CU_ASSERT_EQUAL_FATAL(rs.n, 4);
    check_echo(&rs.r[3], "k2");
    CU_ASSERT_EQUAL(COUNTER(link, script_fallbacks), 2);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(echo)), 1);

    /* A restart: every script is loaded again as the link reconnects,
     * before any call (no fallback). */
    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    SERVICE_WAIT_FOR(p.downs == 1, 5000);
    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    SERVICE_WAIT_FOR(redis_link_is_up(link), 8000);
    CU_ASSERT_FATAL(redis_link_is_up(link));
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(echo)), 1);
    CU_ASSERT_EQUAL(redis_int(priv.url, "SCRIPT EXISTS %s", redis_link_script_sha(late)), 1);
    CU_ASSERT_EQUAL(eval_echo(link, echo, "k3", &rs), 0);
    SERVICE_WAIT_FOR(rs.n == 5, 3000);
    CU_ASSERT_EQUAL_FATAL(rs.n, 5);
    check_echo(&rs.r[4], "k3");
    CU_ASSERT_EQUAL(COUNTER(link, script_fallbacks), 2);
out:
    redis_link_stop(link);
    private_redis_stop(&priv);
}

/* ---- a command whose answer never comes ------------------------------------ */

static void commands_in_flight_when_the_connection_drops_fail_and_the_link_recovers(void)
{
    char list[128];
    chan(list, sizeof list, "cmd:blocked");
    probe p, op;
    replies rs, stopped;
    memset(&rs, 0, sizeof rs);
    memset(&stopped, 0, sizeof stopped);
    redis_link *link = NULL, *other = NULL;
    if (private_redis_start(&priv, "redis-link") != 0) {
        CU_FAIL("cannot start a private redis-server");
        goto out;
    }
    link = start_link(priv.url, &p);
    if (!link)
        goto out;
    SERVICE_WAIT_FOR(redis_link_is_up(link), 5000);
    CU_ASSERT_FATAL(redis_link_is_up(link));
    rs.link = link;
    rs.send_in_callback = 1;
    /* Held by Redis (a list nobody pushes to), and one behind it. */
    CU_ASSERT_EQUAL(command(link, &rs, 3, (const char *const[]){ "BLPOP", list, "0" }), 0);
    CU_ASSERT_EQUAL(command(link, &rs, 1, (const char *const[]){ "PING" }), 0);
    SERVICE_WAIT_FOR(0, 200);
    CU_ASSERT_EQUAL(rs.n, 0);
    CU_ASSERT_EQUAL(private_redis_down(&priv), 0);
    SERVICE_WAIT_FOR(rs.n == 2, 5000);
    CU_ASSERT_EQUAL(rs.n, 2);
    CU_ASSERT_EQUAL(rs.r[0].got_null, 1);
    CU_ASSERT_EQUAL(rs.r[1].got_null, 1);
    /* A command sent from the failure callback is refused, not lost. */
    CU_ASSERT_EQUAL(rs.sent_in_callback, REDIS_LINK_DOWN);
    CU_ASSERT_EQUAL(COUNTER(link, command_failed), 2);
    CU_ASSERT_EQUAL(COUNTER(link, commands_in_flight), 0);
    SERVICE_WAIT_FOR(p.downs == 1, 3000);
    CU_ASSERT_EQUAL(p.downs, 1);
    CU_ASSERT_EQUAL(command(link, &rs, 1, (const char *const[]){ "PING" }), REDIS_LINK_DOWN);

    CU_ASSERT_EQUAL(private_redis_up(&priv), 0);
    SERVICE_WAIT_FOR(redis_link_is_up(link), 8000);
    CU_ASSERT_FATAL(redis_link_is_up(link));
    CU_ASSERT_EQUAL(command(link, &rs, 1, (const char *const[]){ "PING" }), 0);
    SERVICE_WAIT_FOR(rs.n == 3, 3000);
    CU_ASSERT_EQUAL(rs.n, 3);
    CU_ASSERT_STRING_EQUAL(rs.r[2].str, "PONG");

    /* Stopping a link fails what it has in flight before returning. */
    other = start_link(priv.url, &op);
    if (!other)
        goto out;
    SERVICE_WAIT_FOR(redis_link_is_up(other), 5000);
    CU_ASSERT_FATAL(redis_link_is_up(other));
    CU_ASSERT_EQUAL(command(other, &stopped, 3, (const char *const[]){ "BLPOP", list, "0" }), 0);
    SERVICE_WAIT_FOR(0, 100);
    redis_link_stop(other);
    other = NULL;
    CU_ASSERT_EQUAL(stopped.n, 1);
    CU_ASSERT_EQUAL(stopped.r[0].got_null, 1);
out:
    redis_link_stop(link);
    redis_link_stop(other);
    private_redis_stop(&priv);
}

/* ---- the suite ------------------------------------------------------------ */

static int suite_init(void)
{
    if (service_url_read("SM_TEST_REDIS_URL_FILE", fixture_url, sizeof fixture_url) != 0)
        return -1;
    snprintf(channel_prefix, sizeof channel_prefix, "sm:test:redis_link:%ld:", (long)getpid());
    return service_loop_init();
}

static int suite_cleanup(void)
{
    private_redis_stop(&priv); /* a failed assertion left a case early */
    service_loop_cleanup();
    return 0;
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(url_accepts_the_documented_forms),
        SM_TEST(url_rejects_bad_input_with_the_reason),
        SM_TEST(url_too_long_is_refused_and_errors_never_show_the_password),
        SM_TEST(start_refuses_a_bad_url),
        SM_TEST(publish_reaches_a_subscriber_binary_safe_and_only_on_its_channel),
        SM_TEST(unsubscribe_stops_delivery),
        SM_TEST(publish_beyond_the_in_flight_cap_is_busy),
        SM_TEST(publish_without_redis_is_refused_and_the_link_reports_down),
        SM_TEST(connect_to_an_address_that_drops_packets_times_out_and_retries),
        SM_TEST(links_come_back_after_a_redis_restart_with_their_subscriptions),
        SM_TEST(a_frozen_redis_is_detected_and_the_links_come_back_when_it_resumes),
        SM_TEST(commands_get_every_type_of_reply_in_order_and_binary_safe),
        SM_TEST(commands_beyond_the_in_flight_cap_are_busy),
        SM_TEST(commands_without_redis_are_refused_at_once),
        SM_TEST(scripts_run_by_sha_loaded_on_connect_and_after_a_flush),
        SM_TEST(commands_in_flight_when_the_connection_drops_fail_and_the_link_recovers),
        SM_TEST_END,
    };
    return sm_test_run("services.redis_link", tests, suite_init, suite_cleanup);
}
