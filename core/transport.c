/* pthread_setname_np */
#define _GNU_SOURCE
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "acceptor.h"
#include "cidr.h"
#include "admin_socket.h"
#include "cluster.h"
#include "core.h"
#include "durability.h"
#include "pg_barrier.h"
#include "handshake.h"
#include "io_threads.h"
#include "listener.h"
#include "log.h"
#include "metrics_http.h"
#include "peers.h"
#include "session.h"
#include "session_io.h"
#include "signals.h"
#include "tls_check.h"
#include "web.h"
#include "wsframe.h"

/* Before key_exchange completes, messages are capped at this many bytes
 * (PROTOCOL.md section 1). */
#define PRE_HANDSHAKE_MAX_BYTES 4096
/* How long a closing session may take to flush before it is dropped. */
#define CLOSE_FLUSH_SECONDS 5
#define SHUTDOWN_GRACE_SECONDS 3.0
/* How long a clean shutdown waits for Redis to hear that a node left. */
#define CLUSTER_LEAVE_SECONDS 2.0
/* Quiet addresses are forgotten this often; the table's bound is
 * max_sessions plus this many addresses without sessions. */
#define PEERS_SWEEP_SECONDS 30.0
#define PEERS_SPARE 4096
/* A coalesced write takes at most this many bytes (headers included) and
 * frames, so one session's backlog does not hog the loop; it is also the
 * most lws hands to one send() (the protocol's tx_packet_size), so a batch
 * leaves in one system call when the socket takes it. */
#define COALESCE_MAX_BYTES 65536
#define COALESCE_MAX_FRAMES 256
/* RFC 6585; lws 4.1 names no constant for it. */
#define HTTP_STATUS_TOO_MANY_REQUESTS 429
/* Items the logic thread may queue for one I/O thread before it waits for
 * that thread (io_threads.h): a publish is one item per thread, a reply
 * one item, so this is thousands of commands' worth. */
#define IO_QUEUE_CAPACITY 16384

_Static_assert(OUTQUEUE_HEADROOM >= LWS_PRE, "outqueue headroom must cover LWS_PRE");

typedef struct pss {
    session *s;
    /* Counted at the upgrade (admit_connection), released when the
     * connection is freed (LWS_CALLBACK_WSI_DESTROY), established or not. */
    int slot;                    /* one of limits.max_sessions */
    int peer_counted;            /* one of its address's sessions */
    char peer_addr[LISTENER_ADDRESS_LEN];
    lws_sorted_usec_list_t handshake_sul; /* the handshake deadline */
    int http_status;
    int stall_timer;        /* the send_timeout check is scheduled */
    web_request web;        /* a static file or its error, in progress */
    struct metrics_reply *metrics; /* GET /metrics being written */
} pss;

/* One lws context per thread: Debian's lws 4.1.6 is built with
 * LWS_MAX_SMP 1, so a context is served by one thread only. */
typedef struct io_ctx {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    lws_sorted_usec_list_t wake_sul; /* wakes the logic thread after this pass */
    pthread_t thread;
    int running;               /* the thread was started (and is joined at stop) */
    atomic_int stop;
} io_ctx;

static io_ctx *ios;
static size_t n_ios;
/* The logic thread's context: its timers, its wake-ups (worker
 * completions, the I/O threads' items, signals) and the admin socket. */
static struct lws_context *lws_ctx;
/* The context as other threads see it: workers and I/O threads wake the
 * logic thread through it. It is published once the context is ready and
 * withdrawn before the context is destroyed; wake_lock keeps a
 * lws_cancel_service from overlapping the destroy. */
static _Atomic(struct lws_context *) wake_ctx;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static lws_sorted_usec_list_t timer_sul;
static sm_timer *peers_timer;
/* The stop and reload signals (signals.h), read on the logic thread; the
 * flags are that thread's alone. */
static struct lws *signal_wsi;
static int stop_requested;
static int failed;          /* transport_fail: exit with a failure status */
static int reload_requested;
/* The paths the vhosts were made with: lws re-reads a certificate only
 * under them (lws_tls_cert_updated). */
static const char *vhost_cert, *vhost_key;
/* Connections admitted at the upgrade and not freed yet: the
 * limits.max_sessions count, taken before the 101 answer goes out, so that
 * connections accepted at once on several I/O threads cannot pass it. */
static atomic_size_t admitted;

static void schedule_timers(void);

/* ---- session_transport ------------------------------------------------- */

/* Frames wait in the session's send queue: written one per WRITEABLE
 * callback (on_writeable). */
static void t_write(session *s)
{
    struct lws *wsi = s->io;
    if (!wsi || g_core.shutting_down > 1)
        return;
    pss *p = lws_wsi_user(wsi);
    if (p && !p->stall_timer) {
        /* One timer per session with output pending, re-armed from its
         * callback rather than on every frame. */
        p->stall_timer = 1;
        lws_set_timer_usecs(wsi, (lws_usec_t)g_core.sc->send_timeout * LWS_USEC_PER_SEC);
    }
    lws_callback_on_writable(wsi);
}

static void t_close(session *s, int how)
{
    struct lws *wsi = s->io;
    if (!wsi)
        return;
    if (how == SESSION_IO_DROP) {
        /* The slow-consumer cut: no close frame, the queue is gone. */
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    /* The close frame goes after the queued frames; a peer that does not
     * read is dropped after CLOSE_FLUSH_SECONDS. */
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, CLOSE_FLUSH_SECONDS);
    lws_callback_on_writable(wsi);
}

static void t_pause(session *s, int pause)
{
    if (s->io)
        lws_rx_flow_control(s->io, pause ? 0 : 1);
}

static void handshake_sul_cb(lws_sorted_usec_list_t *sul)
{
    pss *p = lws_container_of(sul, pss, handshake_sul);
    if (p->s)
        handshake_timed_out(p->s);
}

static int t_handshake_deadline(session *s, double seconds)
{
    struct lws *wsi = s->io;
    pss *p = wsi ? lws_wsi_user(wsi) : NULL;
    if (!p)
        return seconds > 0 ? -1 : 0;
    if (seconds <= 0)
        lws_sul_cancel(&p->handshake_sul);
    else
        lws_sul_schedule(lws_get_context(wsi), 0, &p->handshake_sul, handshake_sul_cb,
                         (lws_usec_t)(seconds * 1e6));
    return 0;
}

static const session_transport lws_transport = {
    .write = t_write,
    .close = t_close,
    .pause = t_pause,
    .handshake_deadline = t_handshake_deadline,
};

/* ---- timers and wake-ups ---------------------------------------------- */

static void timer_sul_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    timers_run_due(g_core.timers, core_mono_now());
    schedule_timers();
}

static void schedule_timers(void)
{
    if (!lws_ctx)
        return;
    double due = timers_next_due(g_core.timers, core_mono_now());
    /* While shutting down the loop also waits for the I/O threads' sessions
     * to go, which post nothing when they never reached the logic side. */
    double most = atomic_load(&g_core.shutting_down) ? 0.05 : 1.0;
    if (due < 0 || due > most)
        due = most;
    lws_sul_schedule(lws_ctx, 0, &timer_sul, timer_sul_cb, (lws_usec_t)(due * 1e6) + 1);
}

void transport_wake(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&wake_lock);
    struct lws_context *ctx = atomic_load(&wake_ctx);
    if (ctx)
        lws_cancel_service(ctx);
    pthread_mutex_unlock(&wake_lock);
}

static void publish_context(void)
{
    atomic_store(&wake_ctx, lws_ctx);
    /* Jobs that completed before the loop existed found nobody to wake. */
    lws_cancel_service(lws_ctx);
}

static void withdraw_context(void)
{
    pthread_mutex_lock(&wake_lock);
    atomic_store(&wake_ctx, NULL);
    pthread_mutex_unlock(&wake_lock);
}

/* ---- HTTP: /healthz, /metrics, then the web client's files ----------- */

static int http_request(struct lws *wsi, pss *p, const char *uri, size_t len)
{
    uint8_t buf[LWS_PRE + 512];
    uint8_t *start = &buf[LWS_PRE], *q = start, *end = &buf[sizeof buf - 1];
    /* One rule for every path, reserved or not: GET and HEAD only. */
    if (!web_method_allowed(wsi))
        return web_http_refuse_method(wsi, &p->web);
    /* Reserved paths first: no file in web.root can shadow them. */
    if (strcmp(uri, "/metrics") == 0)
        return metrics_http_request(wsi, &p->metrics);
    if (strcmp(uri, "/healthz") != 0 && web_serving())
        return web_http(wsi, &p->web, uri, len);
    p->http_status = strcmp(uri, "/healthz") == 0 ? HTTP_STATUS_OK : HTTP_STATUS_NOT_FOUND;
    const char *body = p->http_status == HTTP_STATUS_OK ? "ok\n" : "not found\n";
    if (lws_add_http_common_headers(wsi, (unsigned)p->http_status, "text/plain",
                                    (lws_filepos_t)strlen(body), &q, end) ||
        lws_finalize_write_http_header(wsi, start, &q, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_writeable(struct lws *wsi, pss *p)
{
    if (p->metrics)
        return metrics_http_writeable(wsi, &p->metrics);
    if (p->web.active)
        return web_http_writeable(wsi, &p->web);
    const char *body = p->http_status == HTTP_STATUS_OK ? "ok\n" : "not found\n";
    uint8_t buf[LWS_PRE + 32];
    size_t len = strlen(body);
    memcpy(&buf[LWS_PRE], body, len);
    if (lws_write(wsi, &buf[LWS_PRE], len, LWS_WRITE_HTTP_FINAL) != (int)len)
        return 1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- WebSocket --------------------------------------------------------- */

static int origin_allowed(struct lws *wsi)
{
    const server_config *sc = g_core.sc;
    if (sc->n_allowed_origins == 0)
        return 1;
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    /* Browsers always send Origin; a request without one is not from a web
     * page, so the list (a browser protection) does not apply to it. */
    if (n <= 0)
        return 1;
    char origin[512];
    if (n >= (int)sizeof origin || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        return 0;
    for (size_t i = 0; i < sc->n_allowed_origins; i++)
        if (strcmp(origin, sc->allowed_origins[i]) == 0)
            return 1;
    LOG_INFO("refused upgrade from origin '%s'", origin);
    return 0;
}

static int on_receive(struct lws *wsi, session *s, const char *in, size_t len)
{
    int first = lws_is_first_fragment(wsi);
    if (first && (s->state == SESSION_CLOSING || lws_frame_is_binary(wsi))) {
        reassembly_discard(&s->rx);
        if (s->state != SESSION_CLOSING)
            session_io_fail(s, SM_ERR_MALFORMED, "binary messages are not accepted", 1003);
        return 0;
    }
    size_t limit = s->has_keys ? g_core.sc->max_message_bytes : PRE_HANDSHAKE_MAX_BYTES;
    /* Our own cap: lws has none. */
    switch (reassembly_append(&s->rx, first, lws_is_final_fragment(wsi), in, len, limit)) {
    case REASSEMBLY_COMPLETE:
        break;
    case REASSEMBLY_TOO_LARGE:
        session_io_fail(s, SM_ERR_TOO_LARGE, "message too large", 1009);
        return 0;
    case REASSEMBLY_NO_MEMORY:
        return -1;
    default:
        return 0;
    }
    size_t n;
    const char *text = reassembly_take(&s->rx, &n);
    session_io_receive(s, text, n);
    /* Idle sessions keep no buffer at all: with thousands of them the
     * memory matters more than one malloc per message. */
    s = lws_wsi_user(wsi) ? ((pss *)lws_wsi_user(wsi))->s : NULL;
    if (s)
        reassembly_release(&s->rx);
    return 0;
}

/* Several frames waiting: they leave in one LWS_WRITE_RAW write, each
 * behind the header we build (wsframe.h). lws sends raw bytes on a ws
 * connection as they are, through TLS when the connection has it, and
 * buffers what the socket does not take like any other write. Returns the
 * frames written (0: fewer than two waited, or coalescing is off), or -1
 * when the write failed. */
static int write_batch(struct lws *wsi, session *s, outqueue_frame *head)
{
    /* One buffer per thread: the loop's today, each I/O thread's later. */
    static _Thread_local unsigned char batch[LWS_PRE + COALESCE_MAX_BYTES];
    size_t bytes = 0;
    if (!g_core.sc->coalesce_writes)
        return 0;
    size_t n = wsframe_batch_plan(head, COALESCE_MAX_BYTES, COALESCE_MAX_FRAMES, &bytes);
    if (n < 2)
        return 0;
    if (wsframe_batch_fill(batch + LWS_PRE, COALESCE_MAX_BYTES, head, n) != bytes)
        return -1;
    if (lws_write(wsi, batch + LWS_PRE, bytes, LWS_WRITE_RAW) < (int)bytes)
        return -1;
    session_io_frames_sent(s, n, lws_partial_buffered(wsi));
    return (int)n;
}

static int on_writeable(struct lws *wsi, session *s)
{
    /* lws calls this only once it has written out all it buffered
     * (lws_partial_buffered is never set here), so the frames it held
     * have left our count. */
    session_io_transport_drained(s);
    outqueue_frame *f = session_io_next_frame(s);
    if (f) {
        /* Exactly one lws_write per WRITEABLE callback: a batch, or the
         * oldest frame alone. */
        int sent = write_batch(wsi, s, f);
        if (sent < 0)
            return -1;
        if (sent == 0) {
            int n = lws_write(wsi, f->data + OUTQUEUE_HEADROOM, f->len, LWS_WRITE_TEXT);
            if (n < (int)f->len)
                return -1;
            session_io_frame_sent(s, lws_partial_buffered(wsi));
        }
        /* Also while lws holds part of the write: the next callback comes
         * once lws has written it, and ends its count. */
        if (session_io_output_pending(s) || s->state == SESSION_CLOSING)
            lws_callback_on_writable(wsi);
        session_io_output_moved(s);
        return 0;
    }
    if (s->state == SESSION_CLOSING && s->close_code) {
        lws_close_reason(wsi, (enum lws_close_status)s->close_code,
                         (unsigned char *)s->close_reason, strlen(s->close_reason));
        return -1;
    }
    session_io_output_moved(s);
    return 0;
}

/* limits.send_timeout: output pending and nothing taken by the socket for
 * that long closes the session, whatever else the client sends (a PONG
 * does not show that it reads). */
static int on_stall_timer(struct lws *wsi, pss *p)
{
    double check_in = 0;
    if (session_io_check_stall(p->s, &check_in) || check_in <= 0) {
        p->stall_timer = 0;
        return 0;
    }
    lws_set_timer_usecs(wsi, (lws_usec_t)(check_in * 1e6) + 1000);
    return 0;
}

/* The peer's address as sessions, plugins and logs see it. */
static const char *peer_address(struct lws *wsi, char *buf, size_t len)
{
    /* Not lws_get_peer_simple(): it reads every peer as IPv6 when the
     * vhost has IPv6 on, whatever the socket's family. */
    if (listener_peer_address(lws_get_socket_fd(wsi), buf, len) != 0)
        snprintf(buf, len, "?");
    return buf;
}

static int is_trusted_proxy(const char *addr)
{
    unsigned char a[16], p[16];
    size_t alen, plen;
    if (cidr_address(addr, a, &alen) != 0)
        return 0;
    for (size_t i = 0; i < g_core.sc->n_trusted_proxies; i++)
        if (cidr_address(g_core.sc->trusted_proxies[i], p, &plen) == 0 && plen == alen
            && memcmp(a, p, alen) == 0)
            return 1;
    return 0;
}

/* The client's address: the TCP peer's, unless the peer is a trusted
 * proxy that sent X-Forwarded-For; then the right-most address of that
 * header which is not itself a trusted proxy (the left-most if all are).
 * Entries left of it were written by the client and prove nothing. A
 * header with an entry that is not an IP literal is ignored whole. */
static const char *client_address(struct lws *wsi, char *buf, size_t len)
{
    peer_address(wsi, buf, len);
    if (g_core.sc->n_trusted_proxies == 0 || !is_trusted_proxy(buf))
        return buf;
    char xff[1024];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR);
    if (n <= 0 || n >= (int)sizeof xff
        || lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) < 0)
        return buf;
    char canon[INET6_ADDRSTRLEN] = "";
    char *end = xff + strlen(xff);
    while (end > xff) {
        char *a = end, *b = end;
        while (a > xff && a[-1] != ',')
            a--;
        end = a > xff ? a - 1 : xff;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char entry[INET6_ADDRSTRLEN];
        unsigned char bin[16];
        size_t blen;
        if ((size_t)(b - a) >= sizeof entry)
            return buf;
        memcpy(entry, a, (size_t)(b - a));
        entry[b - a] = '\0';
        /* Canonical text, so that the limits count one address once. */
        if (cidr_address(entry, bin, &blen) != 0
            || !inet_ntop(blen == 4 ? AF_INET : AF_INET6, bin, canon, sizeof canon))
            return buf;
        if (!is_trusted_proxy(canon))
            break;
    }
    if (canon[0])
        snprintf(buf, len, "%s", canon);
    return buf;
}

/* Takes one of limits.max_sessions: 0 when none is left. */
static int take_slot(void)
{
    size_t max = (size_t)g_core.sc->max_sessions, n = atomic_load(&admitted);
    do {
        if (n >= max)
            return 0;
    } while (!atomic_compare_exchange_weak(&admitted, &n, n + 1));
    return 1;
}

/* Whether the upgrade may go on; otherwise answers it with an HTTP error.
 * The limits are counted here, before the 101 answer, rather than once the
 * session exists: a client that has its answer may connect again at once,
 * and that connection may be admitted on another I/O thread. */
static int admit_connection(struct lws *wsi, pss *p)
{
    if (!origin_allowed(wsi)) {
        lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, "origin not allowed");
        return 0;
    }
    if (g_core.shutting_down || !take_slot()) {
        if (!g_core.shutting_down)
            LOG_WARN("refused a connection: max_sessions (%d) reached",
                     g_core.sc->max_sessions);
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "try again later");
        return 0;
    }
    p->slot = 1;
    char buf[LISTENER_ADDRESS_LEN];
    const char *addr = client_address(wsi, buf, sizeof buf);
    size_t refused = 0;
    int counted = g_core.peers ? peers_admit_open(g_core.peers, addr, core_mono_now(), &refused)
                               : 0;
    if (counted == 0 && g_core.peers) {
        /* 429, not 503: the server has room, this address has used its
         * share. One line per address per minute, so a flood cannot fill
         * the log. */
        if (refused)
            LOG_WARN("refused %zu connection(s) from %s: max_sessions_per_address (%d) reached",
                     refused, addr, g_core.sc->max_sessions_per_address);
        lws_return_http_status(wsi, HTTP_STATUS_TOO_MANY_REQUESTS, "too many connections");
        return 0;
    }
    if (counted < 0) {
        LOG_WARN("refused a connection from %s: out of memory for its address", addr);
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "try again later");
        return 0;
    }
    if (counted > 0) {
        p->peer_counted = 1;
        snprintf(p->peer_addr, sizeof p->peer_addr, "%s", addr);
    }
    return 1;
}

/* The connection's counts go back (every connection, whether its upgrade
 * was refused, failed or ended). */
static void release_counts(pss *p)
{
    if (p->slot) {
        p->slot = 0;
        atomic_fetch_sub(&admitted, 1);
    }
    if (p->peer_counted) {
        p->peer_counted = 0;
        if (g_core.peers)
            peers_session_closed(g_core.peers, p->peer_addr, core_mono_now());
    }
}

static int on_established(struct lws *wsi, pss *p)
{
    char buf[LISTENER_ADDRESS_LEN];
    const char *addr = client_address(wsi, buf, sizeof buf);
    session *s = session_new(wsi, addr);
    if (s && io_threads_add(s) != SM_OK) {
        session_discard(s);
        s = NULL;
    }
    if (s) {
        p->s = s;
        io_threads_count_connection(s->io_thread, 1);
        session_audit(s, "connection", NULL, NULL);
    }
    if (!s || handshake_start(s) != 0) {
        /* CLOSED does not follow a refused ESTABLISHED: the session goes
         * here (the counts go with the connection, WSI_DESTROY). */
        p->s = NULL;
        if (s) {
            lws_sul_cancel(&p->handshake_sul);
            io_threads_count_connection(s->io_thread, -1);
            io_threads_gone(s);
        }
        return -1;
    }
    return 0;
}

/* Woken (lws_cancel_service): sockets the acceptor handed over, then what
 * the logic thread and the workers posted. */
static void io_service(void)
{
    int index = io_threads_current(), fd;
    while ((fd = io_threads_take_fd()) >= 0)
        if (!lws_adopt_socket_vhost(ios[index].vhost, fd)) /* lws closes fd */
            LOG_WARN("libwebsockets could not take an accepted connection");
    io_threads_run();
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    pss *p = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return p && admit_connection(wsi, p) ? 0 : 1;
    case LWS_CALLBACK_WSI_DESTROY:
        if (p)
            release_counts(p);
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, p);
    case LWS_CALLBACK_RECEIVE:
        if (!p || !p->s)
            return -1;
        return on_receive(wsi, p->s, in, len);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* RFC 6455 5.5.1: a close body is empty or starts with a 2-byte
         * code. lws 4.1 checks the code but echoes a 1-byte body as is
         * (which the peer reads as 1005); fail the connection with 1002
         * instead. Returning nonzero makes lws send our reason and close. */
        if (len == 1) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, NULL, 0);
            return -1;
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!p || !p->s)
            return 0;
        return on_writeable(wsi, p->s);
    case LWS_CALLBACK_TIMER:
        if (!p || !p->s)
            return 0;
        return on_stall_timer(wsi, p);
    case LWS_CALLBACK_CLOSED:
        if (p && p->s) {
            session *s = p->s;
            p->s = NULL;
            lws_sul_cancel(&p->handshake_sul);
            session_io_disconnected(s);
            io_threads_count_connection(s->io_thread, -1);
            io_threads_gone(s);
        }
        return 0;
    case LWS_CALLBACK_HTTP:
        return http_request(wsi, p, in ? (const char *)in : "", in ? len : 0);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_writeable(wsi, p);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (p) {
            web_http_release(&p->web);
            metrics_http_free(&p->metrics);
        }
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        io_service();
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    /* First = the vhost default: clients offering no subprotocol bind here. */
    /* rx_buffer_size 4096: lws keeps a buffer of this size per connection;
     * 16 KiB made an idle session cost 8.8 KB, 4 KiB brings it to 7.0 KB
     * (docs/BENCHMARKS.md, idle scenario). Larger messages simply arrive
     * in more pieces, which on_receive reassembles anyway.
     * tx_packet_size: without it lws also cuts every send() at
     * rx_buffer_size and buffers the rest; a coalesced batch should go in
     * one. It allocates nothing. */
    {"safemessenger.v1", callback, sizeof(pss), 4096, 0, NULL, COALESCE_MAX_BYTES},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

static void lws_log_bridge(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_msg(level == LLL_ERR ? SM_LOG_ERROR : SM_LOG_WARNING, "lws", "%.*s", (int)n, line);
}

/* ---- start and stop ---------------------------------------------------- */

static struct lws_vhost *create_vhost(struct lws_context *ctx, const server_config *sc,
                                      int listen_family)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    /* Sockets arrive through lws_adopt_socket_vhost(); lws binds nothing. */
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.vhost_name = "safemessenger";
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    /* lws reads peers of an IPv6-enabled vhost as IPv6 structures. */
    if (listen_family == AF_INET)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    int tls = sc->tls_cert && *sc->tls_cert;
    if (tls) {
        /* lws reads this flag from the vhost's options too: without it the
         * vhost silently serves plain ws. */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = sc->tls_cert;
        info.ssl_private_key_filepath = sc->tls_key;
    }
    /* No extensions: permessage-deflate stays off. */
    info.extensions = NULL;
    struct lws_vhost *vh = lws_create_vhost(ctx, &info);
    if (vh) {
        vhost_cert = tls ? sc->tls_cert : NULL;
        vhost_key = tls ? sc->tls_key : NULL;
        return vh;
    }
    /* With no socket of its own to bind, only TLS (or memory) fails here. */
    if (tls)
        LOG_ERROR("cannot set up TLS with the certificate %s and the key %s", sc->tls_cert,
                  sc->tls_key);
    else
        LOG_ERROR("cannot create the libwebsockets vhost");
    return NULL;
}

static void peers_sweep_cb(sm_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    peers_sweep(g_core.peers, core_mono_now());
}

static int peers_start(const server_config *sc)
{
    g_core.peers = peers_new((size_t)sc->max_sessions + PEERS_SPARE, sc->max_sessions_per_address,
                             sc->handshakes_per_address);
    if (g_core.peers)
        peers_timer = timers_start(g_core.timers, core_mono_now(), PEERS_SWEEP_SECONDS,
                                   PEERS_SWEEP_SECONDS, peers_sweep_cb, NULL, NULL);
    if (!g_core.peers || !peers_timer) {
        LOG_ERROR("out of memory for the per-address limits");
        peers_free(g_core.peers);
        g_core.peers = NULL;
        return -1;
    }
    return 0;
}

static void peers_stop(void)
{
    if (peers_timer) {
        timers_stop(g_core.timers, peers_timer);
        peers_timer = NULL;
    }
    peers_free(g_core.peers);
    g_core.peers = NULL;
}

/* On each I/O thread: its own context's copy of the certificate. */
static void reload_cert_on(int index)
{
    lws_tls_cert_updated(ios[index].ctx, vhost_cert, vhost_key, NULL, 0, NULL, 0);
}

/* A reload: the per-address limits, and the TLS certificate re-read
 * from its files (the paths themselves cannot change, reload.c). New
 * connections get the new certificate; open ones keep theirs. */
static int t_reload(const server_config *next, int check)
{
    if (check) {
        char err[1024];
        if (vhost_cert && tls_check_pair(next->tls_cert, next->tls_key, err, sizeof err) != 0) {
            LOG_ERROR("server.tls: %s", err);
            return -1;
        }
        return 0;
    }
    if (g_core.peers)
        peers_set_limits(g_core.peers, (size_t)next->max_sessions + PEERS_SPARE,
                         next->max_sessions_per_address, next->handshakes_per_address);
    if (vhost_cert) {
        /* lws_tls_cert_updated returns 0 whatever happened; the files were
         * checked just before, so a failure there means they changed again
         * meanwhile. Each context is its own thread's to touch. */
        io_threads_call_all(reload_cert_on);
        LOG_INFO("TLS certificate reloaded from %s", vhost_cert);
    }
    return 0;
}

/* ---- the threads --------------------------------------------------------- */

/* The logic thread's context only wakes and times: its one protocol hears
 * the wake-ups (a vhost that serves nothing, so no client reaches it). */
static int logic_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                          void *in, size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    if (wsi && wsi == signal_wsi) {
        if (reason == LWS_CALLBACK_RAW_RX_FILE) {
            /* Acted on by transport_run once this service returns: a
             * reload never interrupts a callback. */
            int got = signals_take(lws_get_socket_fd(wsi));
            stop_requested |= (got & SIGNALS_STOP) != 0;
            reload_requested |= (got & SIGNALS_RELOAD) != 0;
        } else if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
            signal_wsi = NULL;
        }
        return 0;
    }
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        io_threads_run_logic();
        if (g_core.pool)
            workers_run_completions(g_core.pool);
    }
    return 0;
}

static const struct lws_protocols logic_protocols[] = {
    {"sm-logic", logic_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

static void wake_io(int index) { lws_cancel_service(ios[index].ctx); }

static void wake_logic(void) { transport_wake(NULL); }

static void wake_sul_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    wake_logic();
}

/* On an I/O thread: the logic thread is woken once this pass of the
 * thread's loop is over, however many items the pass posted. */
static void defer_wake(void)
{
    io_ctx *io = &ios[io_threads_current()];
    lws_sul_schedule(io->ctx, 0, &io->wake_sul, wake_sul_cb, 1);
}

/* Where an accepted socket goes (the acceptor runs on I/O thread 0): the
 * thread with the fewest sessions. One acceptor handing sockets over
 * rather than a listening socket per thread with SO_REUSEPORT: the kernel
 * spreads connections over reuseport sockets by a hash of the addresses,
 * blind to how loaded each thread is, and a thread that stops (or a
 * reload) would strand the connections queued on its socket; the core
 * also keeps its own listening socket (listener.c) for exact binding. */
static void hand_over(int fd)
{
    int to = io_threads_pick();
    if (to == io_threads_current()) {
        if (!lws_adopt_socket_vhost(ios[to].vhost, fd)) /* lws closes fd */
            LOG_WARN("libwebsockets could not take an accepted connection");
        return;
    }
    if (io_threads_post_fd(to, fd) != 0)
        close(fd);
}

static void *io_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    io_ctx *io = &ios[index];
    char name[16];
    snprintf(name, sizeof name, "sm-io-%d", index);
    pthread_setname_np(pthread_self(), name);
    io_threads_enter(index);
    while (!atomic_load(&io->stop))
        if (lws_service(io->ctx, 0) < 0)
            break;
    io_threads_stopping();
    io_threads_enter(-1);
    return NULL;
}

/* After thread `index` ended (or never ran), on the logic thread standing
 * in for it: its context is destroyed (open connections dropped, their
 * sessions gone) and what was posted to it is settled. */
static void end_io_thread(size_t index)
{
    io_threads_enter((int)index);
    io_threads_stopping();
    /* Items posted from now on (the sessions that go with the context)
     * wake the logic thread at once: this loop runs no more passes. */
    io_threads_set_deferred_wake(NULL);
    if (index == 0)
        acceptor_stop();
    if (ios[index].ctx)
        lws_context_destroy(ios[index].ctx);
    ios[index].ctx = NULL;
    ios[index].vhost = NULL;
    io_threads_leave();
}

static struct lws_context *new_context(int tls, void *user)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.user = user;
    return lws_create_context(&info);
}

static int create_logic_context(const server_config *sc)
{
    lws_ctx = new_context(0, NULL);
    if (!lws_ctx) {
        LOG_ERROR("cannot create the libwebsockets context");
        return -1;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = logic_protocols;
    info.vhost_name = "sm-logic";
    struct lws_vhost *vh = lws_create_vhost(lws_ctx, &info);
    if (!vh) {
        LOG_ERROR("cannot create the logic thread's libwebsockets vhost");
        return -1;
    }
    lws_sock_file_fd_type desc;
    desc.filefd = signals_open();
    if (desc.filefd < 0) {
        LOG_ERROR("cannot read signals (signalfd): %s", strerror(errno));
        return -1;
    }
    /* lws closes it with the context. */
    signal_wsi = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, desc, "sm-logic", NULL);
    if (!signal_wsi) {
        LOG_ERROR("cannot watch the signal descriptor");
        close(desc.filefd);
        return -1;
    }
    char admin_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (admin_socket_path(sc, admin_path, sizeof admin_path) != 0) {
        LOG_ERROR("server.admin_socket: the path is too long for a Unix socket");
        return -1;
    }
    return admin_socket_start(lws_ctx, admin_path);
}

static size_t io_thread_count(const server_config *sc)
{
    int n = sc->io_threads;
    return n < 1 ? 1 : n > IO_THREADS_MAX ? IO_THREADS_MAX : (size_t)n;
}

/* The I/O threads' contexts and vhosts, the acceptor on thread 0's. The
 * threads are not started yet. */
static int create_io_contexts(const server_config *sc, int listen_fd)
{
    n_ios = io_thread_count(sc);
    ios = calloc(n_ios, sizeof *ios);
    if (!ios || io_threads_init(n_ios, IO_QUEUE_CAPACITY, wake_io, wake_logic) != 0) {
        LOG_ERROR("out of memory for %zu I/O threads", n_ios);
        return -1;
    }
    io_threads_set_deferred_wake(defer_wake);
    int tls = sc->tls_cert && *sc->tls_cert, family = listener_family(listen_fd);
    for (size_t i = 0; i < n_ios; i++) {
        /* OpenSSL's global set-up once, by the first context: lws leaks
         * ~700 KB per further context that asks for it (seen under ASan).
         * The vhosts still each ask for TLS in their own options. */
        ios[i].ctx = new_context(tls && i == 0, NULL);
        if (!ios[i].ctx) {
            LOG_ERROR("cannot create the libwebsockets context of I/O thread %zu", i);
            return -1;
        }
        ios[i].vhost = create_vhost(ios[i].ctx, sc, family);
        if (!ios[i].vhost)
            return -1;
    }
    return 0;
}

static void stop_io_threads(void)
{
    for (size_t i = 0; i < n_ios; i++) {
        if (!ios[i].running)
            continue;
        atomic_store(&ios[i].stop, 1);
        io_threads_wake((int)i);
    }
    for (size_t i = 0; i < n_ios; i++) {
        if (ios[i].running) {
            pthread_join(ios[i].thread, NULL);
            ios[i].running = 0;
        }
    }
    for (size_t i = 0; i < n_ios; i++)
        end_io_thread(i);
}

static void free_io_contexts(void)
{
    if (!ios)
        n_ios = 0;
    stop_io_threads();
    /* Sessions that went while the threads stopped, then the RSA jobs
     * still running, whose completions find their threads stopped. */
    io_threads_run_logic();
    handshake_drain();
    io_threads_run_logic();
    io_threads_free();
    free(ios);
    ios = NULL;
    n_ios = 0;
}

/* ---- group commit on PostgreSQL (durability.h) ----------------------- */

static lws_sorted_usec_list_t durability_sul;
static pg_barrier *barrier;

static void durability_sul_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    durability_kick();
}

/* After the work of this service pass, so one barrier covers all of it. */
static void durability_kick_soon(void)
{
    if (lws_ctx)
        lws_sul_schedule(lws_ctx, 0, &durability_sul, durability_sul_cb, 1);
}

static uint64_t pg_writes(void) { return storage_pg_writes(g_core.db); }

/* A held item's way on: a session's to its I/O thread, a cluster
 * publish to Redis. */
static void release_held(int index, void *item)
{
    if (index == CLUSTER_HELD_INDEX)
        cluster_release_held(item);
    else
        io_threads_release_held(index, item);
}

/* On PostgreSQL the logic thread commits without waiting for the flush
 * and what it sends after a write waits for a barrier instead. */
static int start_durability(void)
{
    if (!g_core.db || !storage_is_postgresql(g_core.db) || !g_core.pg_conninfo)
        return 0;
    if (pg_barrier_new(g_core.pg_conninfo, &barrier) != SM_OK ||
        storage_pg_session_option(g_core.db, "synchronous_commit", "off") != SM_OK) {
        LOG_ERROR("storage: cannot set up group commit on PostgreSQL");
        return -1;
    }
    durability_ops ops = {
        .barrier = pg_barrier_run,
        .barrier_arg = barrier,
        .release = release_held,
        .commits = pg_writes,
        .kick = durability_kick_soon,
    };
    return durability_start(g_core.pool, &ops) == SM_OK ? 0 : -1;
}

static void stop_durability(void)
{
    durability_stop();
    if (lws_ctx)
        lws_sul_cancel(&durability_sul);
    pg_barrier_free(barrier);
    barrier = NULL;
}

int transport_start(const server_config *sc, int *port_out)
{
    /* Errors only: lws 4.1 formats every log line in one static buffer, so
     * two I/O threads logging at once race in it (ThreadSanitizer saw it
     * with "User code denied connection", a warning lws writes for each
     * connection we refuse, which we log ourselves). Errors are rare; the
     * suppression in tests/tsan.supp covers that remaining case. */
    lws_set_log_level(LLL_ERR, lws_log_bridge);
    if (peers_start(sc) != 0)
        return -1;
    if (web_start(sc) != 0) {
        peers_stop();
        return -1;
    }
    g_core.transport = &lws_transport;
    g_core.timers_changed = schedule_timers;
    g_core.transport_reload = t_reload;

    char err[512];
    int listen_fd = listener_open(sc->bind, sc->port, err, sizeof err);
    if (listen_fd < 0) {
        LOG_ERROR("%s", err);
        web_stop();
        peers_stop();
        return -1;
    }
    char where[LISTENER_ADDRESS_LEN];
    int port = 0, tls = sc->tls_cert && *sc->tls_cert;
    if (listener_local_address(listen_fd, where, sizeof where, &port) != 0) {
        LOG_ERROR("cannot read back the listening address: %s", strerror(errno));
        goto fail;
    }
    if (create_logic_context(sc) != 0 || create_io_contexts(sc, listen_fd) != 0 ||
        start_durability() != 0 || cluster_start(lws_ctx, sc) != 0)
        goto fail;
    if (acceptor_start(ios[0].ctx, listen_fd, hand_over) != 0) {
        LOG_ERROR("cannot watch the listening socket %s", where);
        goto fail;
    }
    listen_fd = -1; /* lws's now */
    /* glibc reads the time zone on first use without a lock; lws's first
     * timestamps would otherwise race to do it on several threads. */
    tzset();
    for (size_t i = 0; i < n_ios; i++) {
        if (pthread_create(&ios[i].thread, NULL, io_main, (void *)(intptr_t)i) != 0) {
            LOG_ERROR("cannot start I/O thread %zu", i);
            goto fail;
        }
        ios[i].running = 1;
    }
    pthread_setname_np(pthread_self(), "sm-logic");
    LOG_INFO("listening on %s (%s), %zu I/O thread%s", where, tls ? "wss" : "ws", n_ios,
             n_ios == 1 ? "" : "s");
    *port_out = port;
    schedule_timers();
    publish_context();
    return 0;
fail:
    if (listen_fd >= 0)
        close(listen_fd);
    cluster_stop();
    stop_durability();
    free_io_contexts();
    admin_socket_stop();
    if (lws_ctx)
        lws_context_destroy(lws_ctx);
    lws_ctx = NULL;
    web_stop();
    peers_stop();
    g_core.transport_reload = NULL;
    return -1;
}

static void close_session(session *s) { session_io_out_close(s, 1001, "server shutting down"); }

/* On each I/O thread, at shutdown: every session it has, opened or not. */
static void close_all_on(int index)
{
    (void)index;
    io_threads_each(close_session);
}

void transport_fail(const char *why)
{
    LOG_ERROR("stopping: %s", why);
    failed = 1;
    stop_requested = 1;
}

int transport_run(void (*on_reload)(void))
{
    while (!stop_requested) {
        /* Here, between two services, on the logic thread where plugins
         * run: a reload never interrupts a callback. */
        if (reload_requested) {
            reload_requested = 0;
            if (on_reload)
                on_reload();
            continue;
        }
        if (lws_service(lws_ctx, 0) < 0)
            break;
    }
    LOG_INFO("shutting down: closing %zu sessions", atomic_load(&g_core.n_sessions));
    atomic_store(&g_core.shutting_down, 1);
    /* Replies and events waiting for a flush go before the 1001s. */
    durability_stop();
    io_threads_call_all(close_all_on);
    schedule_timers();
    double deadline = core_mono_now() + SHUTDOWN_GRACE_SECONDS;
    while (atomic_load(&g_core.n_sessions) > 0 && core_mono_now() < deadline)
        if (lws_service(lws_ctx, 0) < 0)
            break;
    /* Their logouts went to Redis first, on the same connection. */
    cluster_leave(lws_ctx, CLUSTER_LEAVE_SECONDS);
    return failed ? -1 : 0;
}

void transport_stop(void)
{
    atomic_store(&g_core.shutting_down, 2);
    cluster_stop();
    stop_durability();
    if (ios)
        free_io_contexts();
    if (lws_ctx) {
        withdraw_context();
        lws_sul_cancel(&timer_sul);
        admin_socket_stop();
        lws_context_destroy(lws_ctx);
        lws_ctx = NULL;
        vhost_cert = vhost_key = NULL;
    }
    g_core.transport_reload = NULL;
    web_stop();
    peers_stop();
}
