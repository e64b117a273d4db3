/* F_DUPFD_CLOEXEC */
#define _GNU_SOURCE
#include "redis_link.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hashmap.h"
#include "log.h"

#define RL_VHOST "sm-redis"
#define RL_BACKOFF_FIRST_MS 100u
#define RL_BACKOFF_MAX_MS 5000u
/* The subscriber connection's heartbeat channel: this prefix, the pid and
 * a number, so no two links of a host share one. */
#define RL_HEARTBEAT_PREFIX "sm:redis-link:heartbeat:"

/* ---- the URL ------------------------------------------------------------- */

static int url_error(char *err, size_t err_len, const char *fmt, ...) SM_PRINTF(3, 4);

static int url_error(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        int n = snprintf(err, err_len, "redis URL: ");
        if (n > 0 && (size_t)n < err_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return REDIS_LINK_INVALID;
}

static int all_digits(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A decimal in [min, max] spelled in len bytes at s (no sign, no
 * spaces); -1 otherwise. */
static long bounded_number(const char *s, size_t len, long min, long max)
{
    if (!all_digits(s, len) || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (s[i] - '0');
    return v < min || v > max ? -1 : v;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes the password's %XX escapes into out. */
static int parse_password(const char *s, size_t len, redis_link_url *out, char *err,
                          size_t err_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = len - i >= 3 ? hex_value(s[i + 1]) : -1;
            int lo = len - i >= 3 ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return url_error(err, err_len, "a %% in the password is not followed by two "
                                               "hexadecimal digits");
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0')
            return url_error(err, err_len, "the password holds a NUL byte (%%00)");
        if (n + 1 >= sizeof out->password)
            return url_error(err, err_len, "the password is longer than %zu bytes",
                             sizeof out->password - 1);
        out->password[n++] = c;
    }
    out->password[n] = '\0';
    if (n == 0)
        return url_error(err, err_len, "the password is empty (leave out ':@' for none)");
    return 0;
}

static int host_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

/* host[:port] or [v6][:port], len bytes at s. */
static int parse_host_port(const char *s, size_t len, redis_link_url *out, char *err,
                           size_t err_len)
{
    size_t host_len, i;
    const char *host;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return url_error(err, err_len, "an IPv6 address lacks its closing ']'");
        host = s + 1;
        host_len = (size_t)(close - host);
        i = (size_t)(close - s) + 1;
        char v6[INET6_ADDRSTRLEN + 1];
        struct in6_addr addr;
        if (host_len == 0 || host_len >= sizeof v6)
            return url_error(err, err_len, "'[%.*s]' is not an IPv6 address",
                             host_len < 64 ? (int)host_len : 64, host);
        memcpy(v6, host, host_len);
        v6[host_len] = '\0';
        if (inet_pton(AF_INET6, v6, &addr) != 1)
            return url_error(err, err_len, "'[%s]' is not an IPv6 address", v6);
        if (i < len && s[i] != ':')
            return url_error(err, err_len, "unexpected '%.*s' after the IPv6 address",
                             (int)(len - i), s + i);
    } else {
        for (i = 0; i < len && s[i] != ':'; i++)
            if (!host_char(s[i]))
                return url_error(err, err_len, "the host holds '%c': a host is a name, an IPv4 "
                                               "address or an [IPv6] address", s[i]);
        host = s;
        host_len = i;
        if (host_len == 0)
            return url_error(err, err_len, "no host");
    }
    if (host_len >= sizeof out->host)
        return url_error(err, err_len, "the host is longer than %zu bytes", sizeof out->host - 1);
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = 6379;
    if (i < len) { /* s[i] == ':' */
        const char *port = s + i + 1;
        size_t port_len = len - i - 1;
        long v = bounded_number(port, port_len, 1, 65535);
        if (v < 0)
            return url_error(err, err_len, "the port '%.*s' is not a number from 1 to 65535",
                             port_len < 32 ? (int)port_len : 32, port);
        out->port = (int)v;
    }
    return 0;
}

int redis_link_parse_url(const char *url, redis_link_url *out, char *err, size_t err_len)
{
    static const char scheme[] = "redis://";
    if (err && err_len)
        err[0] = '\0';
    if (!url || !out)
        return url_error(err, err_len, "none given");
    size_t url_len = strnlen(url, REDIS_LINK_URL_MAX + 1);
    if (url_len > REDIS_LINK_URL_MAX)
        return url_error(err, err_len, "longer than %d bytes", REDIS_LINK_URL_MAX);
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        if (strncmp(url, "rediss://", 9) == 0)
            return url_error(err, err_len, "TLS (rediss://) is not supported");
        if (strncmp(url, "unix://", 7) == 0)
            return url_error(err, err_len, "Unix sockets (unix://) are not supported");
        return url_error(err, err_len, "unknown scheme: it must begin with redis://");
    }
    redis_link_url parsed;
    memset(&parsed, 0, sizeof parsed);
    const char *auth = url + sizeof scheme - 1;
    const char *slash = strchr(auth, '/');
    const char *end = slash ? slash : url + url_len;
    /* The last '@' ends the password, which may hold '@' itself. */
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    const char *hostport = auth;
    if (at) {
        if (auth[0] != ':')
            return url_error(err, err_len, "a user name is not supported: write "
                                           "redis://:password@host");
        int rc = parse_password(auth + 1, (size_t)(at - auth - 1), &parsed, err, err_len);
        if (rc != 0)
            return rc;
        hostport = at + 1;
    }
    int rc = parse_host_port(hostport, (size_t)(end - hostport), &parsed, err, err_len);
    if (rc != 0)
        return rc;
    if (slash) {
        const char *db = slash + 1;
        size_t db_len = strcspn(db, "/?#");
        if (db[db_len] != '\0')
            return url_error(err, err_len, "unexpected '%.32s' after the database", db + db_len);
        if (db_len > 0) {
            long v = bounded_number(db, db_len, 0, 15);
            if (v < 0)
                return url_error(err, err_len, "the database '%.*s' is not a number from 0 to 15",
                                 db_len < 32 ? (int)db_len : 32, db);
            parsed.db = (int)v;
        }
    }
    *out = parsed;
    explicit_bzero(&parsed, sizeof parsed);
    return 0;
}

/* ---- the link ------------------------------------------------------------ */

typedef struct rl_conn {
    struct redis_link *link;
    const char *role;           /* "command" or "subscriber", for the log */
    redisAsyncContext *ac;      /* NULL between attempts */
    struct lws *wsi;            /* lws's watch on a dup() of ac's descriptor */
    struct lws *dispatching;    /* the wsi whose callback runs hiredis now */
    int close_dispatching;      /* hiredis let go of it meanwhile: close it */
    int ready;                  /* connected, and AUTH/SELECT answered */
    int lost;                   /* this attempt failed; a retry is scheduled */
    int handshake_pending;      /* AUTH/SELECT replies still to come */
    int heartbeat_pending;      /* a PING (or heartbeat SUBSCRIBE) awaits its reply */
    char drop_reason[128];      /* why the link dropped this attempt itself (Redis's
                                   error reply to AUTH/SELECT, no answer in time) */
    unsigned backoff_ms;
    lws_usec_t last_answer;     /* when this connection last answered anything */
    lws_sorted_usec_list_t retry;
    lws_sorted_usec_list_t connect_deadline; /* from the attempt until ready */
    lws_sorted_usec_list_t heartbeat;        /* while ready, every PING interval */
} rl_conn;

typedef struct rl_channel {
    int confirmed; /* Redis answered the SUBSCRIBE on this connection */
    int in_batch;  /* re-sent after a reconnection; the link is up once none is left */
    size_t len;
    char name[];
} rl_channel;

enum rl_state { RL_STARTING, RL_UP, RL_DOWN };

struct redis_link_script {
    struct redis_link_script *next;
    struct redis_link *link;
    char sha[41];
    size_t len;
    char source[];
};

struct redis_link {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    redis_link_url url;
    redis_link_handlers handlers;
    void *arg;
    rl_conn cmd, sub;
    hashmap *channels; /* name -> rl_channel */
    redis_link_script *scripts; /* loaded on every command connection */
    size_t resub_pending;
    char heartbeat_channel[64]; /* the subscriber connection's, see heartbeat_send */
    enum rl_state state;
    int stopping;
    _Atomic uint64_t published, publish_failed, publish_refused, received, reconnects, in_flight;
    _Atomic uint64_t commands, command_failed, command_refused, commands_in_flight,
        script_fallbacks;
};

/* Monotonic, unlike the wall clock lws_now_usecs documents: a clock
 * step must neither kill a live connection nor hide a dead one. */
static lws_usec_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (lws_usec_t)ts.tv_sec * LWS_USEC_PER_SEC + (lws_usec_t)ts.tv_nsec / 1000;
}

static void count(_Atomic uint64_t *c, int64_t delta)
{
    atomic_fetch_add_explicit(c, (uint64_t)delta, memory_order_relaxed);
}

static uint64_t read_count(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void update_state(redis_link *l, const char *why)
{
    int up = l->cmd.ready && l->sub.ready && l->resub_pending == 0;
    enum rl_state next = up ? RL_UP : l->state == RL_STARTING && !l->cmd.lost && !l->sub.lost
                                 ? RL_STARTING : RL_DOWN;
    if (next == l->state)
        return;
    enum rl_state before = l->state;
    l->state = next;
    if (next == RL_UP) {
        if (before == RL_DOWN) {
            count(&l->reconnects, 1);
            LOG_INFO("redis %s:%d: connected again, %zu subscriptions restored", l->url.host,
                     l->url.port, hashmap_count(l->channels));
        } else {
            LOG_INFO("redis %s:%d: connected (database %d)", l->url.host, l->url.port, l->url.db);
        }
    } else if (before == RL_UP) {
        LOG_WARN("redis %s:%d: connection lost (%s); reconnecting", l->url.host, l->url.port,
                 why ? why : "unknown");
    } else {
        LOG_WARN("redis %s:%d: cannot connect (%s); retrying", l->url.host, l->url.port,
                 why ? why : "unknown");
    }
    if (l->handlers.on_state)
        l->handlers.on_state(next == RL_UP, l->arg);
}

static void conn_connect(rl_conn *c);
static void subscribe_now(redis_link *l, rl_channel *ch);
static void script_load(redis_link *l, redis_link_script *script);
static void heartbeat_cb(lws_sorted_usec_list_t *sul);

/* No subscription holds any more (the subscriber connection is gone);
 * with resend, the connection is back: every channel is subscribed
 * again, and the link is up once Redis confirmed them all. */
static void reset_channels(redis_link *l, int resend)
{
    hashmap_iter it;
    void *v;
    l->resub_pending = 0;
    hashmap_iter_init(l->channels, &it);
    while (hashmap_iter_next(&it, NULL, NULL, &v)) {
        rl_channel *ch = v;
        ch->confirmed = 0;
        ch->in_batch = resend;
        if (resend) {
            l->resub_pending++;
            subscribe_now(l, ch);
        }
    }
}

static void retry_cb(lws_sorted_usec_list_t *sul)
{
    rl_conn *c = lws_container_of(sul, rl_conn, retry);
    conn_connect(c);
}

/* The timers of one attempt (not the retry, which outlives it).
 * Cancelling one that is not scheduled does nothing. */
static void conn_cancel_timers(rl_conn *c)
{
    lws_sul_cancel(&c->connect_deadline);
    lws_sul_cancel(&c->heartbeat);
}

/* This attempt is over (refused, dropped, or lws saw the descriptor
 * hang up): the next one after the backoff. Idempotent per attempt. */
static void conn_lost(rl_conn *c, const char *why)
{
    redis_link *l = c->link;
    if (c->lost || l->stopping)
        return;
    c->lost = 1;
    c->ac = NULL;
    c->ready = 0;
    c->heartbeat_pending = 0;
    conn_cancel_timers(c);
    if (c == &l->sub)
        reset_channels(l, 0);
    LOG_DEBUG("redis %s:%d: %s connection: %s; next attempt in %u ms", l->url.host, l->url.port,
              c->role, why, c->backoff_ms);
    lws_sul_schedule(l->ctx, 0, &c->retry, retry_cb, (lws_usec_t)c->backoff_ms * LWS_US_PER_MS);
    c->backoff_ms = c->backoff_ms * 2 > RL_BACKOFF_MAX_MS ? RL_BACKOFF_MAX_MS : c->backoff_ms * 2;
    update_state(l, why);
}

/* ---- hiredis's event hooks, on lws ----------------------------------- */

static void ev_add_write(void *privdata)
{
    rl_conn *c = privdata;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

/* lws polls for input all along and asks for writability once per
 * lws_callback_on_writable: nothing to undo for these. */
static void ev_nothing(void *privdata)
{
    (void)privdata;
}

/* hiredis is done with its descriptor (it may call this twice). lws's
 * copy is closed: at once, or, when this runs inside that wsi's own
 * callback, by the callback's return value. */
static void ev_cleanup(void *privdata)
{
    rl_conn *c = privdata;
    struct lws *wsi = c->wsi;
    if (!wsi)
        return;
    c->wsi = NULL;
    lws_set_opaque_user_data(wsi, NULL);
    if (wsi == c->dispatching)
        c->close_dispatching = 1;
    else
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

static int dispatch(rl_conn *c, struct lws *wsi, void (*handle)(redisAsyncContext *))
{
    if (!c->ac)
        return -1;
    c->dispatching = wsi;
    c->close_dispatching = 0;
    handle(c->ac);
    c->dispatching = NULL;
    return c->close_dispatching ? -1 : 0;
}

/* lws closed the watched copy itself (a hang-up or an error on the
 * socket): hiredis must find out, or it would wait for ever. */
static void conn_orphaned(rl_conn *c)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    if (!(ac->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(ac); /* completes or fails the connect */
    else
        redisAsyncHandleRead(ac);
    if (c->ac == ac && !c->lost) {
        /* It saw nothing wrong, but nothing watches the socket any more. */
        redisAsyncFree(ac);
        conn_lost(c, "the socket was closed");
    }
}

static int rl_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    rl_conn *c = lws_get_opaque_user_data(wsi);
    if (!c || c->wsi != wsi)
        return 0; /* adoption, or a copy hiredis already let go of */
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        return dispatch(c, wsi, redisAsyncHandleRead);
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        return dispatch(c, wsi, redisAsyncHandleWrite);
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        lws_set_opaque_user_data(wsi, NULL);
        c->wsi = NULL;
        conn_orphaned(c);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols rl_protocols[] = {
    {RL_VHOST, rl_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Every link on a context shares one vhost; lws frees it with the
 * context. */
static struct lws_vhost *link_vhost(struct lws_context *ctx)
{
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, RL_VHOST);
    if (vh)
        return vh;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = rl_protocols;
    info.vhost_name = RL_VHOST;
    return lws_create_vhost(ctx, &info);
}

/* ---- replies ------------------------------------------------------------ */

static rl_channel *find_channel(const redis_link *l, const char *name, size_t len)
{
    return hashmap_get(l->channels, name, len);
}

static void sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void subscribe_now(redis_link *l, rl_channel *ch)
{
    if (redisAsyncCommand(l->sub.ac, sub_reply, l, "SUBSCRIBE %b", ch->name, ch->len) != REDIS_OK)
        LOG_WARN("redis: cannot send SUBSCRIBE (connection closing); it is sent again on "
                 "reconnection");
}

/* Every reply on the subscriber connection once it subscribed: the
 * confirmations and the messages. */
static void sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redis_link *l = privdata;
    redisReply *r = reply;
    if (r)
        l->sub.last_answer = now_us();
    if (!r || l->stopping || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    redisReply *kind = r->element[0], *name = r->element[1];
    if (kind->type != REDIS_REPLY_STRING || name->type != REDIS_REPLY_STRING)
        return;
    rl_channel *ch = find_channel(l, name->str, (size_t)name->len);
    if (!ch)
        return; /* unsubscribed meanwhile: nothing more reaches the caller */
    if (strcmp(kind->str, "message") == 0) {
        redisReply *payload = r->element[2];
        if (payload->type != REDIS_REPLY_STRING)
            return;
        count(&l->received, 1);
        if (l->handlers.on_message)
            l->handlers.on_message(ch->name, payload->str, (size_t)payload->len, l->arg);
    } else if (strcmp(kind->str, "subscribe") == 0) {
        ch->confirmed = 1;
        if (ch->in_batch) {
            ch->in_batch = 0;
            l->resub_pending--;
            update_state(l, NULL);
        }
    }
}


static void handshake_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rl_conn *c = privdata;
    redis_link *l = c->link;
    redisReply *r = reply;
    if (!r || l->stopping || c->ac != ac)
        return;
    c->last_answer = now_us();
    if (r->type == REDIS_REPLY_ERROR) {
        /* A wrong password or database: retried with backoff like a
         * refused connection, and the reason logged with the state. */
        if (c->handshake_pending > 0)
            snprintf(c->drop_reason, sizeof c->drop_reason, "%s", r->str ? r->str : "error");
        c->handshake_pending = -1;
        redisAsyncDisconnect(ac);
        return;
    }
    if (c->handshake_pending <= 0 || --c->handshake_pending > 0)
        return;
    c->ready = 1;
    c->backoff_ms = RL_BACKOFF_FIRST_MS;
    lws_sul_cancel(&c->connect_deadline);
    lws_sul_schedule(l->ctx, 0, &c->heartbeat, heartbeat_cb,
                     (lws_usec_t)REDIS_LINK_PING_INTERVAL_MS * LWS_US_PER_MS);
    if (c == &l->sub)
        reset_channels(l, 1);
    update_state(l, NULL);
}

static void publish_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redis_link *l = privdata;
    redisReply *r = reply;
    if (r)
        l->cmd.last_answer = now_us();
    /* NULL: the connection went (closed, or dropped as dead) before the
     * answer; hiredis runs every pending callback so, once. */
    count(&l->in_flight, -1);
    if (r && r->type == REDIS_REPLY_INTEGER)
        count(&l->published, 1);
    else
        count(&l->publish_failed, 1);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rl_conn *c = ac->data;
    if (status != REDIS_OK)
        conn_lost(c, ac->c.errstr[0] ? ac->c.errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rl_conn *c = ac->data;
    if (c->drop_reason[0])
        conn_lost(c, c->drop_reason);
    else if (status == REDIS_OK)
        conn_lost(c, "closed");
    else
        conn_lost(c, ac->errstr && ac->errstr[0] ? ac->errstr : "connection error");
}

/* ---- liveness ------------------------------------------------------------ */

/* The link gives up on this attempt (no answer in time): hiredis closes
 * it, which runs every pending callback with no reply (publishes in
 * flight count as failed) and, had it connected, on_disconnect; either
 * way conn_lost schedules the next attempt, with why as the reason. */
static void conn_drop(rl_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (!c->drop_reason[0]) /* else Redis refused AUTH/SELECT: that says more */
        snprintf(c->drop_reason, sizeof c->drop_reason, "%s", why);
    if (ac)
        redisAsyncFree(ac);
    conn_lost(c, c->drop_reason); /* a no-op when on_disconnect ran */
}

/* A late timer may only mean the loop itself was held up while an
 * answer sat unread in the socket: read it before judging the
 * connection. Returns 0 when the attempt ended meanwhile. */
static int conn_read_pending(rl_conn *c)
{
    if (c->ac && (c->ac->c.flags & REDIS_CONNECTED))
        redisAsyncHandleRead(c->ac);
    return !c->lost && c->ac != NULL;
}

static void connect_deadline_cb(lws_sorted_usec_list_t *sul)
{
    rl_conn *c = lws_container_of(sul, rl_conn, connect_deadline);
    if (c->ready || !conn_read_pending(c) || c->ready)
        return;
    char why[96];
    snprintf(why, sizeof why, "no answer within %d ms", REDIS_LINK_CONNECT_TIMEOUT_MS);
    conn_drop(c, why);
}

static void heartbeat_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rl_conn *c = privdata;
    if (!reply || c->ac != ac)
        return; /* the connection is going: nothing to note */
    c->last_answer = now_us();
    c->heartbeat_pending = 0;
}

/* Something for Redis to answer. On the command connection, PING. On
 * the subscriber connection, hiredis 0.14 never hands PING's reply to
 * its callback: a command sent while subscribed waits in its "invalid"
 * queue, which only a non-array reply unblocks, and RESP2's answer to
 * PING in subscribed mode is the array ["pong", ""], which hiredis takes
 * for a message on a pattern ("p...") named "" and drops. So that
 * connection SUBSCRIBEs again to a channel of its own, which nobody
 * publishes on: Redis answers every SUBSCRIBE, also to a channel it is
 * already subscribed to, and hiredis routes that answer by channel name
 * to this callback. It also keeps the connection in subscribed mode for
 * good, so hiredis never has to leave it when the last topic goes. */
static void heartbeat_send(rl_conn *c)
{
    redis_link *l = c->link;
    int rc = c == &l->sub
                 ? redisAsyncCommand(c->ac, heartbeat_reply, c, "SUBSCRIBE %s",
                                     l->heartbeat_channel)
                 : redisAsyncCommand(c->ac, heartbeat_reply, c, "PING");
    /* A refusal means hiredis is closing the connection: on_disconnect
     * follows. */
    c->heartbeat_pending = rc == REDIS_OK;
}

/* Every REDIS_LINK_PING_INTERVAL_MS while the connection is ready: a
 * heartbeat when none is unanswered, and the connection dropped once it
 * answered nothing (heartbeat, publish, message) for
 * REDIS_LINK_DEAD_AFTER_MS. */
static void heartbeat_cb(lws_sorted_usec_list_t *sul)
{
    rl_conn *c = lws_container_of(sul, rl_conn, heartbeat);
    redis_link *l = c->link;
    const lws_usec_t dead_after = (lws_usec_t)REDIS_LINK_DEAD_AFTER_MS * LWS_US_PER_MS;
    if (!c->ready || !c->ac)
        return;
    if (now_us() - c->last_answer >= dead_after) {
        if (!conn_read_pending(c))
            return;
        if (now_us() - c->last_answer >= dead_after) {
            char why[96];
            snprintf(why, sizeof why, "the %s connection answered nothing for %d ms", c->role,
                     REDIS_LINK_DEAD_AFTER_MS);
            conn_drop(c, why);
            return;
        }
    }
    if (!c->heartbeat_pending)
        heartbeat_send(c);
    lws_sul_schedule(l->ctx, 0, &c->heartbeat, heartbeat_cb,
                     (lws_usec_t)REDIS_LINK_PING_INTERVAL_MS * LWS_US_PER_MS);
}

/* One attempt: a non-blocking connect, watched through lws, and the
 * AUTH/SELECT that both make hiredis finish connecting (on its first
 * write event) and tell when the connection is usable. */
static void conn_connect(rl_conn *c)
{
    redis_link *l = c->link;
    char why[128];
    c->lost = 0;
    c->ready = 0;
    c->drop_reason[0] = '\0';
    redisAsyncContext *ac = redisAsyncConnect(l->url.host, l->url.port);
    if (!ac) {
        conn_lost(c, "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        conn_lost(c, why);
        return;
    }
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_nothing;
    ac->ev.delRead = ev_nothing;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_nothing;
    ac->ev.cleanup = ev_cleanup;
    /* lws closes what it adopted when the wsi goes: it gets its own copy,
     * so hiredis's descriptor stays hiredis's to close. */
    lws_sock_file_fd_type desc;
    desc.filefd = fcntl(ac->c.fd, F_DUPFD_CLOEXEC, 0);
    c->wsi = desc.filefd < 0 ? NULL
                             : lws_adopt_descriptor_vhost(l->vhost, LWS_ADOPT_RAW_FILE_DESC, desc,
                                                          RL_VHOST, NULL);
    if (!c->wsi) {
        snprintf(why, sizeof why, "cannot watch its socket: %s",
                 desc.filefd < 0 ? strerror(errno) : "lws refused it");
        if (desc.filefd >= 0)
            close(desc.filefd);
        redisAsyncFree(ac);
        conn_lost(c, why);
        return;
    }
    lws_set_opaque_user_data(c->wsi, c);
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Without it, an address that drops our SYNs (a firewall, a host
     * gone from the network) holds this attempt for the kernel's TCP
     * timeout (about two minutes with Linux's default tcp_syn_retries). */
    lws_sul_schedule(l->ctx, 0, &c->connect_deadline, connect_deadline_cb,
                     (lws_usec_t)REDIS_LINK_CONNECT_TIMEOUT_MS * LWS_US_PER_MS);
    c->handshake_pending = 1;
    if (l->url.password[0]) {
        c->handshake_pending++;
        redisAsyncCommand(ac, handshake_reply, c, "AUTH %s", l->url.password);
    }
    redisAsyncCommand(ac, handshake_reply, c, "SELECT %d", l->url.db);
    /* Before anything the caller sends once the connection is ready, so
     * no EVALSHA on it can find its script missing (redis_link.h). */
    if (c == &l->cmd)
        for (redis_link_script *s = l->scripts; s; s = s->next)
            script_load(l, s);
}

/* ---- the API -------------------------------------------------------------- */

static void conn_init(rl_conn *c, redis_link *l, const char *role)
{
    c->link = l;
    c->role = role;
    c->backoff_ms = RL_BACKOFF_FIRST_MS;
}

int redis_link_start(struct lws_context *ctx, const char *url, const redis_link_handlers *handlers,
                     void *arg, redis_link **out, char *err, size_t err_len)
{
    redis_link *l = calloc(1, sizeof *l);
    if (!l) {
        if (err && err_len)
            snprintf(err, err_len, "out of memory");
        return REDIS_LINK_NO_MEMORY;
    }
    int rc = redis_link_parse_url(url, &l->url, err, err_len);
    if (rc != 0) {
        free(l);
        return rc;
    }
    l->channels = hashmap_new();
    l->vhost = l->channels ? link_vhost(ctx) : NULL;
    if (!l->vhost) {
        if (err && err_len)
            snprintf(err, err_len, l->channels ? "cannot create the lws vhost for Redis"
                                               : "out of memory");
        hashmap_free(l->channels, NULL);
        explicit_bzero(&l->url, sizeof l->url);
        free(l);
        return REDIS_LINK_NO_MEMORY;
    }
    l->ctx = ctx;
    if (handlers)
        l->handlers = *handlers;
    l->arg = arg;
    l->state = RL_STARTING;
    conn_init(&l->cmd, l, "command");
    conn_init(&l->sub, l, "subscriber");
    static atomic_uint links_started;
    snprintf(l->heartbeat_channel, sizeof l->heartbeat_channel, RL_HEARTBEAT_PREFIX "%ld:%u",
             (long)getpid(), atomic_fetch_add(&links_started, 1u));
    /* From the loop, so no handler runs before the caller has the link. */
    lws_sul_schedule(ctx, 0, &l->cmd.retry, retry_cb, 1);
    lws_sul_schedule(ctx, 0, &l->sub.retry, retry_cb, 1);
    *out = l;
    return 0;
}

static void conn_close(rl_conn *c)
{
    lws_sul_cancel(&c->retry);
    conn_cancel_timers(c);
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->ready = 0;
    if (ac)
        redisAsyncFree(ac); /* runs the pending callbacks with NULL, then ev_cleanup */
}

static void free_channel(void *v)
{
    free(v);
}

void redis_link_stop(redis_link *l)
{
    if (!l)
        return;
    l->stopping = 1;
    conn_close(&l->cmd);
    conn_close(&l->sub);
    while (l->scripts) {
        redis_link_script *next = l->scripts->next;
        free(l->scripts);
        l->scripts = next;
    }
    hashmap_free(l->channels, free_channel);
    explicit_bzero(&l->url, sizeof l->url);
    free(l);
}

static int channel_ok(const char *channel, size_t *len)
{
    if (!channel)
        return 0;
    *len = strnlen(channel, REDIS_LINK_CHANNEL_MAX + 1);
    return *len > 0 && *len <= REDIS_LINK_CHANNEL_MAX;
}

int redis_link_subscribe(redis_link *l, const char *channel)
{
    size_t len;
    if (!channel_ok(channel, &len))
        return REDIS_LINK_INVALID;
    if (find_channel(l, channel, len))
        return 0;
    rl_channel *ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return REDIS_LINK_NO_MEMORY;
    ch->len = len;
    memcpy(ch->name, channel, len + 1);
    if (hashmap_put(l->channels, ch->name, len, ch) != 0) {
        free(ch);
        return REDIS_LINK_NO_MEMORY;
    }
    if (l->sub.ready)
        subscribe_now(l, ch);
    return 0;
}

int redis_link_unsubscribe(redis_link *l, const char *channel)
{
    size_t len;
    if (!channel_ok(channel, &len))
        return REDIS_LINK_INVALID;
    rl_channel *ch = hashmap_remove(l->channels, channel, len);
    if (!ch)
        return REDIS_LINK_INVALID;
    if (ch->in_batch) {
        /* The link need not wait for a channel it no longer wants. */
        l->resub_pending--;
        update_state(l, NULL);
    }
    if (l->sub.ready)
        redisAsyncCommand(l->sub.ac, NULL, NULL, "UNSUBSCRIBE %b", ch->name, ch->len);
    free(ch);
    return 0;
}

int redis_link_is_subscribed(const redis_link *l, const char *channel)
{
    size_t len;
    if (!channel_ok(channel, &len))
        return 0;
    const rl_channel *ch = find_channel(l, channel, len);
    return ch && ch->confirmed;
}

int redis_link_publish(redis_link *l, const char *channel, const void *payload, size_t len)
{
    size_t channel_len;
    if (!channel_ok(channel, &channel_len) || (len > 0 && !payload))
        return REDIS_LINK_INVALID;
    if (!l->cmd.ready) {
        count(&l->publish_refused, 1);
        return REDIS_LINK_DOWN;
    }
    if (read_count(&l->in_flight) >= REDIS_LINK_MAX_IN_FLIGHT) {
        count(&l->publish_refused, 1);
        return REDIS_LINK_BUSY;
    }
    if (redisAsyncCommand(l->cmd.ac, publish_reply, l, "PUBLISH %b %b", channel, channel_len,
                          payload ? payload : "", len) != REDIS_OK) {
        count(&l->publish_refused, 1);
        return REDIS_LINK_DOWN; /* closing, or hiredis out of memory */
    }
    count(&l->in_flight, 1);
    return 0;
}

/* ---- commands with replies and scripts ---------------------------------- */

/* One command sent, until its callback ran. An EVALSHA keeps a copy of
 * its arguments, for the EVAL it becomes on NOSCRIPT. */
typedef struct rl_request {
    redis_link *link;
    redis_link_reply_fn cb;
    void *arg;
    const redis_link_script *script; /* NULL: a plain command */
    int argc;                        /* EVALSHA's: sha, numkeys and the arguments */
    const char **argv;
    size_t *argvlen;
} rl_request;

_Static_assert(_Alignof(size_t) >= _Alignof(const char *) && sizeof(size_t) % _Alignof(const char *) == 0,
               "the request's argv array may follow its argvlen array");

/* Commands that would change the command connection's state behind the
 * link (subscribed mode, another database, a closed connection). */
static int command_allowed(const char *name, size_t len)
{
    static const char *const refused[] = {
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
        "MONITOR", "SELECT", "AUTH", "HELLO", "RESET", "QUIT",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strlen(refused[i]) == len && strncasecmp(refused[i], name, len) == 0)
            return 0;
    return 1;
}

static size_t arg_len(const char *const *argv, const size_t *argvlen, int i)
{
    return argvlen ? argvlen[i] : strlen(argv[i]);
}

static int args_valid(int argc, const char *const *argv)
{
    if (argc < 0 || (argc > 0 && !argv))
        return 0;
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return 0;
    return 1;
}

/* DOWN or BUSY before anything is sent, counted. */
static int command_admit(redis_link *l)
{
    int rc = !l->cmd.ready || !l->cmd.ac ? REDIS_LINK_DOWN
             : read_count(&l->commands_in_flight) >= REDIS_LINK_MAX_IN_FLIGHT ? REDIS_LINK_BUSY
                                                                               : 0;
    if (rc != 0)
        count(&l->command_refused, 1);
    return rc;
}

static void command_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void request_free(rl_request *rq)
{
    free(rq->argvlen); /* argv lives in the same block */
    free(rq);
}


static int request_send(rl_request *rq, int argc, const char **argv, const size_t *argvlen)
{
    redis_link *l = rq->link;
    /* Refused while hiredis closes the connection (a callback run by the
     * close itself may send): the connection is as good as down. */
    if (!l->cmd.ac || redisAsyncCommandArgv(l->cmd.ac, command_reply, rq, argc, argv, argvlen)
                          != REDIS_OK)
        return REDIS_LINK_DOWN;
    return 0;
}

/* EVALSHA's arguments with EVAL and the source in front instead. */
static int request_send_eval(rl_request *rq)
{
    rq->argv[0] = "EVAL";
    rq->argvlen[0] = 4;
    rq->argv[1] = rq->script->source;
    rq->argvlen[1] = rq->script->len;
    return request_send(rq, rq->argc, rq->argv, rq->argvlen);
}

static void command_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    rl_request *rq = privdata;
    redis_link *l = rq->link;
    redisReply *r = reply;
    if (r)
        l->cmd.last_answer = now_us();
    if (r && rq->script && !l->stopping && r->type == REDIS_REPLY_ERROR && r->str
        && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        count(&l->script_fallbacks, 1);
        LOG_DEBUG("redis %s:%d: script %.12s is not loaded (%s); sending it as EVAL",
                  l->url.host, l->url.port, rq->script->sha, r->str);
        if (request_send_eval(rq) == 0)
            return; /* still in flight */
        r = NULL;   /* the connection is going: no answer will come */
    }
    count(&l->commands_in_flight, -1);
    count(r ? &l->commands : &l->command_failed, 1);
    if (rq->cb)
        rq->cb(r, rq->arg);
    request_free(rq);
}

/* Sends rq, in flight from then on; on failure frees it and counts the
 * refusal. */
static int request_start(redis_link *l, rl_request *rq, redis_link_reply_fn cb, void *arg,
                         int argc, const char **argv, const size_t *argvlen)
{
    rq->link = l;
    rq->cb = cb;
    rq->arg = arg;
    int rc = request_send(rq, argc, argv, argvlen);
    if (rc != 0) {
        request_free(rq);
        count(&l->command_refused, 1);
        return rc;
    }
    count(&l->commands_in_flight, 1);
    return 0;
}

int redis_link_command(redis_link *l, int argc, const char *const *argv, const size_t *argvlen,
                       redis_link_reply_fn cb, void *arg)
{
    if (argc < 1 || !args_valid(argc, argv) || !argv[0]
        || !command_allowed(argv[0], arg_len(argv, argvlen, 0)))
        return REDIS_LINK_INVALID;
    int rc = command_admit(l);
    if (rc != 0)
        return rc;
    rl_request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return REDIS_LINK_NO_MEMORY;
    /* hiredis formats the command at once: nothing to copy. Its argv
     * lacks const on the pointers only; it writes through neither. */
    return request_start(l, rq, cb, arg, argc, (const char **)argv, argvlen);
}

/* An EVALSHA request: argv (EVALSHA, sha, numkeys, then the caller's
 * arguments) and their bytes copied into one block. */
static rl_request *eval_request(const redis_link_script *script, int numkeys, int argc,
                                const char *const *argv, const size_t *argvlen)
{
    size_t n = (size_t)argc + 3, bytes = 0;
    for (int i = 0; i < argc; i++) {
        size_t len = arg_len(argv, argvlen, i);
        if (len > SIZE_MAX / 2 - bytes)
            return NULL;
        bytes += len;
    }
    char numkeys_text[16];
    int numkeys_len = snprintf(numkeys_text, sizeof numkeys_text, "%d", numkeys);
    rl_request *rq = calloc(1, sizeof *rq);
    size_t arrays = n * (sizeof(size_t) + sizeof(char *));
    char *block = rq ? malloc(arrays + bytes + (size_t)numkeys_len + 1) : NULL;
    if (!block) {
        free(rq);
        return NULL;
    }
    rq->script = script;
    rq->argc = (int)n;
    rq->argvlen = (size_t *)(void *)block;
    rq->argv = (const char **)(void *)(block + n * sizeof(size_t));
    char *data = block + arrays;
    rq->argv[0] = "EVALSHA";
    rq->argvlen[0] = 7;
    rq->argv[1] = script->sha;
    rq->argvlen[1] = 40;
    memcpy(data, numkeys_text, (size_t)numkeys_len + 1);
    rq->argv[2] = data;
    rq->argvlen[2] = (size_t)numkeys_len;
    data += numkeys_len + 1;
    for (int i = 0; i < argc; i++) {
        size_t len = arg_len(argv, argvlen, i);
        if (len)
            memcpy(data, argv[i], len);
        rq->argv[i + 3] = data;
        rq->argvlen[i + 3] = len;
        data += len;
    }
    return rq;
}

int redis_link_eval(redis_link *l, const redis_link_script *script, int numkeys, int argc,
                    const char *const *argv, const size_t *argvlen, redis_link_reply_fn cb,
                    void *arg)
{
    if (!script || script->link != l || numkeys < 0 || numkeys > argc
        || !args_valid(argc, argv))
        return REDIS_LINK_INVALID;
    int rc = command_admit(l);
    if (rc != 0)
        return rc;
    rl_request *rq = eval_request(script, numkeys, argc, argv, argvlen);
    if (!rq)
        return REDIS_LINK_NO_MEMORY;
    return request_start(l, rq, cb, arg, rq->argc, rq->argv, rq->argvlen);
}

static void script_load_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_script *script = privdata;
    redis_link *l = script->link;
    redisReply *r = reply;
    if (!r || l->cmd.ac != ac)
        return; /* the connection is going: loaded again on the next */
    l->cmd.last_answer = now_us();
    if (r->type == REDIS_REPLY_ERROR)
        LOG_ERROR("redis %s:%d: Lua script %s does not load: %s", l->url.host, l->url.port,
                  script->sha, r->str ? r->str : "error");
    else if (r->type != REDIS_REPLY_STRING || r->len != 40 || memcmp(r->str, script->sha, 40) != 0)
        LOG_WARN("redis %s:%d: SCRIPT LOAD of %s answered something else than its SHA1",
                 l->url.host, l->url.port, script->sha);
}

static void script_load(redis_link *l, redis_link_script *script)
{
    /* A refusal means hiredis is closing the connection: the next one
     * loads it. */
    (void)redisAsyncCommand(l->cmd.ac, script_load_reply, script, "SCRIPT LOAD %b",
                            script->source, script->len);
}

int redis_link_script_add(redis_link *l, const char *source, redis_link_script **out)
{
    size_t len = source ? strlen(source) : 0;
    if (len == 0)
        return REDIS_LINK_INVALID;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (EVP_Digest(source, len, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return REDIS_LINK_NO_MEMORY;
    char sha[41];
    for (unsigned i = 0; i < 20; i++)
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    for (redis_link_script *s = l->scripts; s; s = s->next)
        if (memcmp(s->sha, sha, 41) == 0) {
            *out = s;
            return 0;
        }
    redis_link_script *script = malloc(sizeof *script + len + 1);
    if (!script)
        return REDIS_LINK_NO_MEMORY;
    script->link = l;
    memcpy(script->sha, sha, sizeof sha);
    script->len = len;
    memcpy(script->source, source, len + 1);
    script->next = l->scripts;
    l->scripts = script;
    /* On a live connection, now: before any EVALSHA of it. Otherwise the
     * connection being made has it queued (conn_connect) or the next
     * one will. */
    if (l->cmd.ac && !l->cmd.lost)
        script_load(l, script);
    *out = script;
    return 0;
}

const char *redis_link_script_sha(const redis_link_script *script)
{
    return script->sha;
}

int redis_link_is_up(const redis_link *l)
{
    return l->state == RL_UP;
}

void redis_link_get_counters(const redis_link *l, redis_link_counters *out)
{
    out->published = read_count(&l->published);
    out->publish_failed = read_count(&l->publish_failed);
    out->publish_refused = read_count(&l->publish_refused);
    out->received = read_count(&l->received);
    out->reconnects = read_count(&l->reconnects);
    out->in_flight = read_count(&l->in_flight);
    out->commands = read_count(&l->commands);
    out->command_failed = read_count(&l->command_failed);
    out->command_refused = read_count(&l->command_refused);
    out->commands_in_flight = read_count(&l->commands_in_flight);
    out->script_fallbacks = read_count(&l->script_fallbacks);
}

const char *redis_link_status_text(int status)
{
    switch (status) {
    case REDIS_LINK_OK:
        return "ok";
    case REDIS_LINK_DOWN:
        return "redis is unreachable";
    case REDIS_LINK_BUSY:
        return "too many redis commands in flight";
    case REDIS_LINK_NO_MEMORY:
        return "out of memory";
    case REDIS_LINK_INVALID:
        return "invalid argument";
    default:
        return "unknown status";
    }
}
