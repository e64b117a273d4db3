#include "metrics_http.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "core.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "server_metrics.h"

/* Bytes written per WRITEABLE callback: one socket buffer's worth, so a
 * large page does not hold the loop. */
#define CHUNK 16384

struct metrics_reply {
    char *body;
    size_t len, sent;
};

/* The TCP peer itself: a proxy's X-Forwarded-For is not believed here,
 * whatever server.trusted_proxies says, so the list names the hosts that
 * connect. */
static int peer_allowed(struct lws *wsi, char *addr, size_t addr_len)
{
    if (listener_peer_address(lws_get_socket_fd(wsi), addr, addr_len) != 0) {
        snprintf(addr, addr_len, "?");
        return 0;
    }
    const server_config *sc = g_core.sc;
    for (size_t i = 0; i < sc->n_metrics_allow; i++) {
        cidr net;
        if (cidr_parse(sc->metrics_allow[i], &net) == 0 && cidr_contains(&net, addr))
            return 1;
    }
    return 0;
}

static int send_headers(struct lws *wsi, unsigned status, const char *type, size_t len)
{
    uint8_t buf[LWS_PRE + 512];
    uint8_t *start = &buf[LWS_PRE], *q = start, *end = &buf[sizeof buf - 1];
    if (lws_add_http_common_headers(wsi, status, type, (lws_filepos_t)len, &q, end) ||
        lws_finalize_write_http_header(wsi, start, &q, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static metrics_reply *reply_new(const char *text, size_t len)
{
    metrics_reply *r = calloc(1, sizeof *r);
    if (r && !(r->body = malloc(len + 1))) {
        free(r);
        return NULL;
    }
    if (r) {
        memcpy(r->body, text, len + 1);
        r->len = len;
    }
    return r;
}

int metrics_http_request(struct lws *wsi, metrics_reply **reply)
{
    char addr[LISTENER_ADDRESS_LEN];
    metrics_http_free(reply);
    if (!peer_allowed(wsi, addr, sizeof addr)) {
        LOG_DEBUG("refused /metrics to %s: not in metrics.allow", addr);
        static const char forbidden[] = "forbidden\n";
        *reply = reply_new(forbidden, sizeof forbidden - 1);
        if (!*reply)
            return 1;
        return send_headers(wsi, HTTP_STATUS_FORBIDDEN, "text/plain", (*reply)->len);
    }
    server_metrics_collect();
    metrics_reply *r = calloc(1, sizeof *r);
    if (!r || metrics_render(g_core.metrics, &r->body, &r->len) != 0) {
        LOG_ERROR("cannot render /metrics: out of memory");
        free(r);
        return 1;
    }
    *reply = r;
    return send_headers(wsi, HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8",
                        r->len);
}

int metrics_http_writeable(struct lws *wsi, metrics_reply **reply)
{
    metrics_reply *r = *reply;
    uint8_t buf[LWS_PRE + CHUNK];
    size_t n = r->len - r->sent;
    int last = n <= CHUNK;
    if (!last)
        n = CHUNK;
    memcpy(&buf[LWS_PRE], r->body + r->sent, n);
    /* lws takes the whole chunk, buffering what the socket refused, and
     * calls back once it is out. */
    if (lws_write(wsi, &buf[LWS_PRE], n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)n)
        return -1;
    r->sent += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    metrics_http_free(reply);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void metrics_http_free(metrics_reply **reply)
{
    if (*reply) {
        free((*reply)->body);
        free(*reply);
        *reply = NULL;
    }
}
