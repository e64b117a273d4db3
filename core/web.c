#include "web.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "web_path.h"

/* Bytes read and written per writeable callback: a large file goes out
 * over many turns of the loop, between other connections' traffic. */
#define WEB_CHUNK 16384
/* A response that makes no progress for this long is dropped. */
#define WEB_STALL_SECONDS 30
#define WEB_HEADER_BYTES 2048
#define HOST_MAX 255

static int root_fd = -1;

/* ---- start and stop ---------------------------------------------------- */

int web_check(const server_config *sc)
{
    if (!sc->web_enabled)
        return 0;
    struct stat st;
    const char *why;
    if (stat(sc->web_root, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    else
        return 0;
    if (sc->web_root_set) {
        LOG_ERROR("web.root %s: %s (set web.enabled = false to run without the web client)",
                  sc->web_root, why);
        return -1;
    }
    LOG_WARN("web.root is not set and its default %s is missing (%s): the web client is not "
             "served (set web.root, or web.enabled = false)", sc->web_root, why);
    return 0;
}

int web_start(const server_config *sc)
{
    web_stop();
    if (!sc->web_enabled)
        return 0;
    root_fd = open(sc->web_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        if (!sc->web_root_set)
            return 0; /* web_check warned */
        LOG_ERROR("web.root %s: %s", sc->web_root, strerror(errno));
        return -1;
    }
    LOG_INFO("serving the web client from %s", sc->web_root);
    return 0;
}

void web_stop(void)
{
    if (root_fd >= 0)
        close(root_fd);
    root_fd = -1;
}

int web_serving(void)
{
    return root_fd >= 0;
}

void web_http_release(web_request *r)
{
    if (r->has_body)
        close(r->fd);
    memset(r, 0, sizeof *r);
}

/* ---- headers ----------------------------------------------------------- */

/* A Host header fit to be written into the policy: a DNS name or IPv4
 * literal of [A-Za-z0-9.-], or a bracketed IPv6 literal, and an optional
 * numeric port. Anything else (spaces, ';', quotes, '*', ...) could change
 * the policy's meaning, so it is not used at all. */
static int host_is_safe(const char *h)
{
    size_t n = strlen(h), i = 0;
    if (n == 0 || n > HOST_MAX)
        return 0;
    if (h[0] == '[') {
        for (i = 1; i < n && h[i] != ']'; i++)
            if (!(isxdigit((unsigned char)h[i]) || h[i] == ':' || h[i] == '.'))
                return 0;
        if (i == n || i == 1)
            return 0;
        i++;
    } else {
        for (; i < n && h[i] != ':'; i++)
            if (!(isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-'))
                return 0;
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (h[i] != ':' || i + 1 == n || n - i - 1 > 5)
        return 0;
    for (i++; i < n; i++)
        if (!isdigit((unsigned char)h[i]))
            return 0;
    return 1;
}

/* The policy: the page's own origin for everything, nothing inline, no
 * framing, no plugins. connect-src names the WebSocket origin as well as
 * 'self': CSP 3 lets 'self' match ws: and wss: of the same host and port,
 * but browsers that predate that rule (older Safari and Firefox) would
 * block the client's connection. The origin is built from the request's
 * Host, checked above, so a forged Host only shapes the answer to its own
 * sender (who could connect anywhere anyway) and cannot add directives.
 * Over plain HTTP both ws: and wss: are named, for a TLS-terminating
 * proxy in front (the page is then https: and connects to wss:). */
static void build_csp(struct lws *wsi, char *out, size_t len)
{
    static const char base[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'; connect-src 'self'";
    char host[HOST_MAX + 2] = "";
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    enum lws_token_indexes tok = WSI_TOKEN_HOST;
    if (n <= 0) {
        tok = WSI_TOKEN_HTTP_COLON_AUTHORITY; /* HTTP/2 */
        n = lws_hdr_total_length(wsi, tok);
    }
    if (n <= 0 || n > HOST_MAX || lws_hdr_copy(wsi, host, sizeof host, tok) < 0 ||
        !host_is_safe(host)) {
        snprintf(out, len, "%s", base);
        return;
    }
    int r;
    if (lws_is_ssl(wsi))
        r = snprintf(out, len, "%s wss://%s", base, host);
    else
        r = snprintf(out, len, "%s ws://%s wss://%s", base, host, host);
    if (r < 0 || (size_t)r >= len)
        snprintf(out, len, "%s", base);
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Every answer of ours, file or error, carries these. */
static int add_common_headers(struct lws *wsi, unsigned char **p, unsigned char *end)
{
    char csp[512 + 2 * (HOST_MAX + sizeof " wss://")];
    build_csp(wsi, csp, sizeof csp);
    return add_header(wsi, "content-security-policy:", csp, p, end) ||
           add_header(wsi, "x-content-type-options:", "nosniff", p, end) ||
           add_header(wsi, "x-frame-options:", "DENY", p, end) ||
           add_header(wsi, "referrer-policy:", "no-referrer", p, end) ||
           add_header(wsi, "cross-origin-opener-policy:", "same-origin", p, end) ||
           add_header(wsi, "cross-origin-resource-policy:", "same-origin", p, end);
}

/* ---- responses --------------------------------------------------------- */

static const char *error_body(int status)
{
    switch (status) {
    case HTTP_STATUS_METHOD_NOT_ALLOWED: return "method not allowed\n";
    default: return "not found\n";
    }
}

/* Headers now, the short body from the writeable callback. */
static int respond_error(struct lws *wsi, web_request *r, int status, int close_after)
{
    unsigned char buf[LWS_PRE + WEB_HEADER_BYTES];
    unsigned char *start = &buf[LWS_PRE], *p = start, *end = &buf[sizeof buf - 1];
    const char *body = error_body(status);
    r->active = 1;
    r->status = status;
    r->close_after = close_after;
    if (lws_add_http_common_headers(wsi, (unsigned)status, "text/plain; charset=utf-8",
                                    (lws_filepos_t)strlen(body), &p, end) ||
        add_common_headers(wsi, &p, end) ||
        add_header(wsi, "cache-control:", "no-store", &p, end) ||
        (status == HTTP_STATUS_METHOD_NOT_ALLOWED &&
         add_header(wsi, "allow:", "GET, HEAD", &p, end)) ||
        (close_after && add_header(wsi, "connection:", "close", &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (close_after) {
        /* lws would now read the request's body, and a writeable callback
         * asked for meanwhile never comes: answer at once, then close. */
        size_t n = strlen(body);
        memcpy(start, body, n);
        web_http_release(r);
        lws_write(wsi, start, n, LWS_WRITE_HTTP_FINAL);
        return -1;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

/* The method, for HTTP/1 and HTTP/2: 'G'et, 'H'ead, or 0 for the rest;
 * *h2 tells which. */
static char request_method(struct lws *wsi, int *h2)
{
    char *uri = NULL;
    int len = 0;
    /* lws files an HTTP/2 request's path under the method's token as well,
     * so :path is what tells the protocol. */
    *h2 = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COLON_PATH) > 0;
    switch (lws_http_get_uri_and_method(wsi, &uri, &len)) {
    case LWSHUMETH_GET: return 'G';
    case LWSHUMETH_HEAD: return 'H';
    case LWSHUMETH_COLON_PATH: {
        char m[8];
        if (lws_hdr_copy(wsi, m, sizeof m, WSI_TOKEN_HTTP_COLON_METHOD) < 0)
            return 0;
        return strcmp(m, "GET") == 0 ? 'G' : strcmp(m, "HEAD") == 0 ? 'H' : 0;
    }
    default: return 0;
    }
}

/* The request's If-None-Match lists etag. */
static int not_modified(struct lws *wsi, const char *etag)
{
    char inm[512];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH);
    if (n <= 0 || n >= (int)sizeof inm ||
        lws_hdr_copy(wsi, inm, sizeof inm, WSI_TOKEN_HTTP_IF_NONE_MATCH) < 0)
        return 0;
    return web_etag_matches(inm, etag);
}

int web_method_allowed(struct lws *wsi)
{
    int h2;
    return request_method(wsi, &h2) != 0;
}

int web_http_refuse_method(struct lws *wsi, web_request *r)
{
    web_http_release(r);
    int h2;
    (void)request_method(wsi, &h2);
    /* HTTP/1: the request may carry a body we do not read, so the
     * connection cannot be reused and ends after the answer. HTTP/2 ends
     * only the stream, as for any answer. */
    return respond_error(wsi, r, HTTP_STATUS_METHOD_NOT_ALLOWED, !h2);
}

int web_http(struct lws *wsi, web_request *r, const char *uri, size_t len)
{
    /* Keep-alive: a new request on the connection starts afresh. */
    web_http_release(r);
    int h2;
    char method = request_method(wsi, &h2);
    char rel[WEB_PATH_MAX + 1];
    int fd = -1;
    struct stat st;
    /* Every refusal looks like a missing file: no hint of what exists
     * outside the root or why a path was refused. */
    if (web_path_resolve(uri, len, rel, sizeof rel) != 0 ||
        web_open_beneath(root_fd, rel, &fd, &st) != 0)
        return respond_error(wsi, r, HTTP_STATUS_NOT_FOUND, 0);

    char etag[96];
    int unchanged = web_etag(&st, etag, sizeof etag) == 0 && not_modified(wsi, etag);
    unsigned status = unchanged ? HTTP_STATUS_NOT_MODIFIED : HTTP_STATUS_OK;
    unsigned char buf[LWS_PRE + WEB_HEADER_BYTES];
    unsigned char *start = &buf[LWS_PRE], *p = start, *end = &buf[sizeof buf - 1];
    char length[24];
    snprintf(length, sizeof length, "%llu", (unsigned long long)st.st_size);
    /* Content-Length by name, not lws's helper: lws would then count the
     * body it expects, and HEAD and 304 send none. */
    /* Cache: every use revalidates (no-cache) against the ETag, and an
     * unchanged file costs a 304 without a body. The client's files keep
     * their names from release to release, so a max-age would let a
     * browser mix an old script with a new page after an upgrade. */
    if (lws_add_http_header_status(wsi, status, &p, end) ||
        add_header(wsi, "content-type:", web_mime_type(rel), &p, end) ||
        (!unchanged && add_header(wsi, "content-length:", length, &p, end)) ||
        add_common_headers(wsi, &p, end) ||
        add_header(wsi, "cache-control:", "no-cache", &p, end) ||
        add_header(wsi, "etag:", etag, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        close(fd);
        return -1;
    }
    if (unchanged || method == 'H' || st.st_size == 0) {
        close(fd);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    r->active = 1;
    r->has_body = 1;
    r->fd = fd;
    r->remaining = (uint64_t)st.st_size;
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, WEB_STALL_SECONDS);
    lws_callback_on_writable(wsi);
    return 0;
}

int web_http_writeable(struct lws *wsi, web_request *r)
{
    unsigned char buf[LWS_PRE + WEB_CHUNK];
    if (!r->has_body) {
        const char *body = error_body(r->status);
        size_t n = strlen(body);
        memcpy(&buf[LWS_PRE], body, n);
        int close_after = r->close_after;
        web_http_release(r);
        if (lws_write(wsi, &buf[LWS_PRE], n, LWS_WRITE_HTTP_FINAL) != (int)n || close_after)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    size_t want = r->remaining < WEB_CHUNK ? (size_t)r->remaining : WEB_CHUNK;
    ssize_t got = read(r->fd, &buf[LWS_PRE], want);
    if (got <= 0) {
        /* Shrunk or unreadable since it was opened: the length is already
         * promised, so only closing tells the client it is cut short. */
        LOG_WARN("web: cannot read a file being served: %s", got < 0 ? strerror(errno)
                                                                     : "it became shorter");
        web_http_release(r);
        return -1;
    }
    r->remaining -= (uint64_t)got;
    int last = r->remaining == 0;
    if (lws_write(wsi, &buf[LWS_PRE], (size_t)got, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)got) {
        web_http_release(r);
        return -1;
    }
    if (!last) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, WEB_STALL_SECONDS);
        lws_callback_on_writable(wsi);
        return 0;
    }
    web_http_release(r);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
