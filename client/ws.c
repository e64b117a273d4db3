/* One WebSocket client connection: TCP (+ TLS), the HTTP upgrade and the
 * frame stream. The socket is non-blocking and every wait is a poll() with
 * the caller's deadline, so a timeout never loses a half-read frame: raw
 * bytes and a partly reassembled message stay buffered for the next call. */
#include "ws.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "crypto.h"
#include "sm_client.h"

#define WS_READ_CHUNK 65536u
#define WS_MAX_RESPONSE_HEADER 16384u

struct ws_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    uint8_t *rbuf;          /* bytes read, not yet consumed as frames */
    size_t rlen, rcap;
    uint8_t *msg;           /* data message being reassembled */
    size_t msg_len, msg_cap;
    int msg_opcode;         /* 0 = no message in progress */
    int close_code;         /* from the server; -1 none */
    int close_sent;
    int closed;             /* close frame or EOF received */
    int failed;             /* status every later call returns, 0 = fine */
    char *subprotocol;
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    if (n < 0)
        err[0] = '\0';
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = ws_now_ms();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now;
    return left > 0x7fffffffu ? 0x7fffffff : (int)left;
}

/* Waits for `events` until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events, .revents = 0};
        int left = remaining_ms(deadline);
        int r = poll(&p, 1, left);
        if (r > 0)
            return 1;   /* POLLERR/POLLHUP too: the next read/write reports it */
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int ws_conn_new(int fd, ws_conn **out)
{
    ws_conn *c = calloc(1, sizeof *c);
    if (!c)
        return SM_CLIENT_ERROR;
    c->fd = fd;
    c->close_code = -1;
    *out = c;
    return SM_CLIENT_OK;
}

int ws_conn_wrap_fd(int fd, ws_conn **out)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return SM_CLIENT_IO;
    return ws_conn_new(fd, out);
}

/* ---- raw I/O ----------------------------------------------------------- */

/* Reads up to cap bytes: > 0 bytes read, 0 EOF, or a negative status. */
static long io_read(ws_conn *c, void *buf, size_t cap, uint64_t deadline)
{
    for (;;) {
        short want = POLLIN;
        if (c->ssl) {
            ERR_clear_error();
            errno = 0;   /* SSL_ERROR_SYSCALL with errno 0 means EOF */
            int n = SSL_read(c->ssl, buf, cap > 0x7fffffff ? 0x7fffffff : (int)cap);
            if (n > 0)
                return n;
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if (e == SSL_ERROR_WANT_WRITE)
                want = POLLOUT;
            else if (e == SSL_ERROR_SYSCALL && (errno == ECONNRESET || errno == 0))
                return 0;
            else if (e != SSL_ERROR_WANT_READ)
                return SM_CLIENT_IO;
        } else {
            ssize_t n = recv(c->fd, buf, cap, 0);
            if (n > 0)
                return (long)n;
            if (n == 0)
                return 0;
            if (errno == ECONNRESET)
                return 0;   /* the server went away; same as EOF for the caller */
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return SM_CLIENT_IO;
        }
        int w = wait_fd(c->fd, want, deadline);
        if (w == 0)
            return SM_CLIENT_TIMEOUT;
        if (w < 0)
            return SM_CLIENT_IO;
    }
}

/* Writes everything or fails. A partial write leaves the stream unusable,
 * so the connection is marked failed. */
static int io_write_all(ws_conn *c, const void *data, size_t len, uint64_t deadline)
{
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        short want = POLLOUT;
        size_t chunk = len - done;
        if (c->ssl) {
            ERR_clear_error();
            int n = SSL_write(c->ssl, p + done, chunk > 0x40000000 ? 0x40000000 : (int)chunk);
            if (n > 0) {
                done += (size_t)n;
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                want = POLLIN;
            else if (e != SSL_ERROR_WANT_WRITE)
                goto fail_io;
        } else {
            ssize_t n = send(c->fd, p + done, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                done += (size_t)n;
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                goto fail_io;
        }
        int w = wait_fd(c->fd, want, deadline);
        if (w <= 0) {
            if (done > 0)
                c->failed = SM_CLIENT_IO;
            return w == 0 ? SM_CLIENT_TIMEOUT : SM_CLIENT_IO;
        }
    }
    return SM_CLIENT_OK;
fail_io:
    c->failed = SM_CLIENT_IO;
    return c->closed ? SM_CLIENT_CLOSED : SM_CLIENT_IO;
}

/* ---- connect ------------------------------------------------------------ */

/* Binds fd to the source address (port chosen by the kernel). Returns 0,
 * or -1 with the reason written (not a literal of the family, bind failed). */
static int bind_source(int fd, int family, const char *source, char *reason, size_t reason_len)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        if (inet_pton(AF_INET, source, &a->sin_addr) == 1)
            len = sizeof *a;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, source, &a->sin6_addr) == 1)
            len = sizeof *a;
    }
    if (len == 0) {
        snprintf(reason, reason_len, "source address %.64s does not fit this address family",
                 source);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        snprintf(reason, reason_len, "bind to %.64s: %s", source, strerror(errno));
        return -1;
    }
    return 0;
}

static int tcp_connect(const ws_url *url, const ws_options *opt, uint64_t deadline,
                       int *out_fd, char *err, size_t err_len)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int g = getaddrinfo(url->host, url->port, &hints, &res);
    if (g != 0) {
        set_err(err, err_len, "cannot resolve %s: %s", url->host, gai_strerror(g));
        return SM_CLIENT_IO;
    }
    int rc = SM_CLIENT_IO;
    char reason[128] = "no address";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            snprintf(reason, sizeof reason, "socket: %s", strerror(errno));
            continue;
        }
        if (opt->rcvbuf > 0)   /* before connect, so the window is negotiated small */
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt->rcvbuf, sizeof opt->rcvbuf);
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (opt->source_address &&
            bind_source(fd, ai->ai_family, opt->source_address, reason, sizeof reason) != 0) {
            close(fd);
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            *out_fd = fd;
            rc = SM_CLIENT_OK;
            break;
        }
        if (errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (w > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                *out_fd = fd;
                rc = SM_CLIENT_OK;
                break;
            }
            if (w == 0) {
                snprintf(reason, sizeof reason, "timed out");
                rc = SM_CLIENT_TIMEOUT;
            } else {
                snprintf(reason, sizeof reason, "%s", strerror(soerr ? soerr : errno));
                rc = SM_CLIENT_IO;
            }
        } else {
            snprintf(reason, sizeof reason, "%s", strerror(errno));
            rc = SM_CLIENT_IO;
        }
        close(fd);
        if (rc == SM_CLIENT_TIMEOUT)
            break;
    }
    freeaddrinfo(res);
    if (rc != SM_CLIENT_OK)
        set_err(err, err_len, "connect to %s: %s", url->authority, reason);
    return rc;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void tls_err(char *err, size_t err_len, const char *what, SSL *ssl)
{
    char detail[256];
    unsigned long e = ERR_get_error();
    if (e) {
        ERR_error_string_n(e, detail, sizeof detail);
    } else {
        snprintf(detail, sizeof detail, "%s", "connection closed");
    }
    if (ssl && SSL_get_verify_result(ssl) != X509_V_OK) {
        snprintf(detail, sizeof detail, "certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    }
    set_err(err, err_len, "%s: %s", what, detail);
    ERR_clear_error();
}

static int tls_start(ws_conn *c, const ws_url *url, const ws_options *opt, uint64_t deadline,
                     char *err, size_t err_len)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx) {
        tls_err(err, err_len, "TLS context", NULL);
        return SM_CLIENT_ERROR;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    /* EOF without close_notify is how servers usually drop a socket; it is
     * reported as a plain EOF (close code 1006), not a TLS error. */
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opt->insecure) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        int ok = opt->ca_file ? SSL_CTX_load_verify_locations(c->ctx, opt->ca_file, NULL)
                              : SSL_CTX_set_default_verify_paths(c->ctx);
        if (ok != 1) {
            tls_err(err, err_len, "TLS CA file", NULL);
            return SM_CLIENT_ERROR;
        }
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        tls_err(err, err_len, "TLS session", NULL);
        return SM_CLIENT_ERROR;
    }
    int literal = is_ip_literal(url->host);
    /* RFC 6066 3: SNI carries host names only, never address literals. */
    if (!literal && SSL_set_tlsext_host_name(c->ssl, url->host) != 1) {
        tls_err(err, err_len, "TLS SNI", NULL);
        return SM_CLIENT_ERROR;
    }
    if (!opt->insecure) {
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), url->host)
                         : SSL_set1_host(c->ssl, url->host);
        if (ok != 1) {
            tls_err(err, err_len, "TLS host check", NULL);
            return SM_CLIENT_ERROR;
        }
    }
    SSL_set_connect_state(c->ssl);
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return SM_CLIENT_OK;
        int e = SSL_get_error(c->ssl, r);
        short want;
        if (e == SSL_ERROR_WANT_READ)
            want = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE)
            want = POLLOUT;
        else {
            tls_err(err, err_len, "TLS handshake", c->ssl);
            return SM_CLIENT_IO;
        }
        int w = wait_fd(c->fd, want, deadline);
        if (w <= 0) {
            set_err(err, err_len, "TLS handshake: %s", w == 0 ? "timed out" : "poll failed");
            return w == 0 ? SM_CLIENT_TIMEOUT : SM_CLIENT_IO;
        }
    }
}

static int has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

static int build_request(const ws_url *url, const ws_options *opt, const char *key,
                         char *buf, size_t buf_len, size_t *out_len)
{
    int n = snprintf(buf, buf_len,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s%s"
                     "%s%s%s"
                     "%s%s%s"
                     "\r\n",
                     url->path, url->authority, key,
                     opt->subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     opt->subprotocol ? opt->subprotocol : "", opt->subprotocol ? "\r\n" : "",
                     opt->origin ? "Origin: " : "", opt->origin ? opt->origin : "",
                     opt->origin ? "\r\n" : "",
                     opt->forwarded_for ? "X-Forwarded-For: " : "",
                     opt->forwarded_for ? opt->forwarded_for : "",
                     opt->forwarded_for ? "\r\n" : "");
    if (n < 0 || (size_t)n >= buf_len)
        return -1;
    *out_len = (size_t)n;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Whether a comma-separated header value holds `token` (case insensitive). */
static int has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tlen && strncasecmp(p, token, tlen) == 0)
            return 1;
        p += n;
    }
    return 0;
}

/* Checks the 101 response held in hdr (NUL-terminated, without the final
 * blank line). */
static int check_response(ws_conn *c, char *hdr, const char *expect_accept,
                          const ws_options *opt, char *err, size_t err_len)
{
    char *save = NULL;
    char *line = strtok_r(hdr, "\r\n", &save);
    if (!line || strncmp(line, "HTTP/1.1 ", 9) != 0) {
        set_err(err, err_len, "upgrade: not an HTTP/1.1 response: %.80s", line ? line : "");
        return SM_CLIENT_PROTOCOL;
    }
    if (strncmp(line + 9, "101", 3) != 0 || (line[12] != ' ' && line[12] != '\0')) {
        set_err(err, err_len, "upgrade refused: %.120s", line);
        return SM_CLIENT_PROTOCOL;
    }
    int upgrade_ok = 0, connection_ok = 0, accept_ok = 0;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (!colon) {
            set_err(err, err_len, "upgrade: bad header line: %.80s", line);
            return SM_CLIENT_PROTOCOL;
        }
        *colon = '\0';
        char *name = trim(line);
        char *value = trim(colon + 1);
        if (strcasecmp(name, "Upgrade") == 0) {
            upgrade_ok = strcasecmp(value, "websocket") == 0;
        } else if (strcasecmp(name, "Connection") == 0) {
            connection_ok = has_token(value, "upgrade");
        } else if (strcasecmp(name, "Sec-WebSocket-Accept") == 0) {
            accept_ok = strcmp(value, expect_accept) == 0;
        } else if (strcasecmp(name, "Sec-WebSocket-Extensions") == 0) {
            /* RFC 6455 4.1: an extension we did not offer fails the connection. */
            set_err(err, err_len, "upgrade: server chose extension %.80s", value);
            return SM_CLIENT_PROTOCOL;
        } else if (strcasecmp(name, "Sec-WebSocket-Protocol") == 0) {
            if (!opt->subprotocol || strcmp(value, opt->subprotocol) != 0 || c->subprotocol) {
                set_err(err, err_len, "upgrade: server chose subprotocol %.80s not offered",
                        value);
                return SM_CLIENT_PROTOCOL;
            }
            c->subprotocol = strdup(value);
            if (!c->subprotocol)
                return SM_CLIENT_ERROR;
        }
    }
    if (!upgrade_ok || !connection_ok) {
        set_err(err, err_len, "upgrade: missing Upgrade/Connection headers");
        return SM_CLIENT_PROTOCOL;
    }
    if (!accept_ok) {
        set_err(err, err_len, "upgrade: missing or wrong Sec-WebSocket-Accept");
        return SM_CLIENT_PROTOCOL;
    }
    return SM_CLIENT_OK;
}

static int rbuf_reserve(ws_conn *c, size_t extra)
{
    if (c->rcap - c->rlen >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - c->rlen)
        return -1;
    size_t cap = c->rcap ? c->rcap : WS_READ_CHUNK;
    while (cap - c->rlen < extra)
        cap *= 2;
    uint8_t *p = realloc(c->rbuf, cap);
    if (!p)
        return -1;
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

static void rbuf_consume(ws_conn *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

int ws_upgrade(ws_conn *c, const ws_url *url, const ws_options *opt, uint64_t deadline,
               char *err, size_t err_len)
{
    if (has_crlf(opt->subprotocol) || has_crlf(opt->origin) || has_crlf(opt->forwarded_for)) {
        set_err(err, err_len, "upgrade: header value with CR/LF");
        return SM_CLIENT_ERROR;
    }
    uint8_t raw_key[16];
    char *key = NULL;
    size_t key_len = 0;
    char accept[WS_ACCEPT_LEN + 1];
    char req[4096];
    size_t req_len = 0;
    if (crypto_random(raw_key, sizeof raw_key) != 0
        || crypto_b64_encode(raw_key, sizeof raw_key, &key, &key_len) != 0) {
        set_err(err, err_len, "upgrade: cannot draw a key");
        return SM_CLIENT_ERROR;
    }
    int rc = SM_CLIENT_ERROR;
    if (ws_accept_key(key, accept) != 0
        || build_request(url, opt, key, req, sizeof req, &req_len) != 0) {
        set_err(err, err_len, "upgrade: request too long");
        goto out;
    }
    rc = io_write_all(c, req, req_len, deadline);
    if (rc != SM_CLIENT_OK) {
        set_err(err, err_len, "upgrade: cannot send the request");
        goto out;
    }
    size_t hdr_end = 0;
    for (;;) {
        uint8_t *end = NULL;
        for (size_t i = 3; i < c->rlen; i++)
            if (memcmp(c->rbuf + i - 3, "\r\n\r\n", 4) == 0) {
                end = c->rbuf + i + 1;
                break;
            }
        if (end) {
            hdr_end = (size_t)(end - c->rbuf);
            break;
        }
        if (c->rlen >= WS_MAX_RESPONSE_HEADER) {
            set_err(err, err_len, "upgrade: response header too long");
            rc = SM_CLIENT_PROTOCOL;
            goto out;
        }
        if (rbuf_reserve(c, 1024) != 0) {
            rc = SM_CLIENT_ERROR;
            goto out;
        }
        /* Whatever follows the header in this read (the server's first
         * frame, typically server_hello) stays in rbuf for the frame parser. */
        long n = io_read(c, c->rbuf + c->rlen, c->rcap - c->rlen, deadline);
        if (n <= 0) {
            rc = n == 0 ? SM_CLIENT_CLOSED : (int)n;
            set_err(err, err_len, "upgrade: %s",
                    n == 0 ? "connection closed before the response"
                           : n == SM_CLIENT_TIMEOUT ? "timed out waiting for the response"
                                                    : "read failed");
            goto out;
        }
        c->rlen += (size_t)n;
    }
    char *hdr = malloc(hdr_end + 1);
    if (!hdr) {
        rc = SM_CLIENT_ERROR;
        goto out;
    }
    memcpy(hdr, c->rbuf, hdr_end);
    hdr[hdr_end] = '\0';
    rc = check_response(c, hdr, accept, opt, err, err_len);
    free(hdr);
    if (rc == SM_CLIENT_OK)
        rbuf_consume(c, hdr_end);
out:
    free(key);
    return rc;
}

int ws_connect(const ws_url *url, const ws_options *opt, uint64_t deadline, ws_conn **out,
               char *err, size_t err_len)
{
    int fd = -1;
    int rc = tcp_connect(url, opt, deadline, &fd, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    ws_conn *c = NULL;
    rc = ws_conn_new(fd, &c);
    if (rc != SM_CLIENT_OK) {
        close(fd);
        return rc;
    }
    if (url->tls) {
        rc = tls_start(c, url, opt, deadline, err, err_len);
        if (rc != SM_CLIENT_OK)
            goto fail;
    }
    rc = ws_upgrade(c, url, opt, deadline, err, err_len);
    if (rc != SM_CLIENT_OK)
        goto fail;
    *out = c;
    return SM_CLIENT_OK;
fail:
    ws_free(c);
    return rc;
}

/* ---- frames ------------------------------------------------------------- */

static int send_frame_now(ws_conn *c, int opcode, int fin, int rsv, int masked,
                          const void *data, size_t len, uint64_t deadline)
{
    uint8_t mask[4];
    if (masked && crypto_random_public(mask, sizeof mask) != 0)
        return SM_CLIENT_ERROR;
    uint8_t hdr[WS_MAX_HEADER];
    size_t hlen = ws_frame_header_write(hdr, opcode, fin, rsv, masked ? mask : NULL, len);
    if (len > SIZE_MAX - hlen)
        return SM_CLIENT_ERROR;
    uint8_t *buf = malloc(hlen + len + 1);
    if (!buf)
        return SM_CLIENT_ERROR;
    memcpy(buf, hdr, hlen);
    if (len)
        memcpy(buf + hlen, data, len);
    if (masked)
        ws_mask_apply(buf + hlen, len, mask, 0);
    /* One write per frame, so control frames (pongs) never land inside
     * another frame's bytes. */
    int rc = io_write_all(c, buf, hlen + len, deadline);
    free(buf);
    return rc;
}

/* After the server's close or our own failure nothing more may be sent;
 * the status says which of the two happened. */
static int send_state(const ws_conn *c)
{
    if (c->closed)
        return SM_CLIENT_CLOSED;
    return c->failed;
}

int ws_send_frame(ws_conn *c, int opcode, int fin, int rsv, int masked, const void *data,
                  size_t len, uint64_t deadline)
{
    int st = send_state(c);
    if (st != SM_CLIENT_OK)
        return st;
    return send_frame_now(c, opcode, fin, rsv, masked, data, len, deadline);
}

int ws_send_raw(ws_conn *c, const void *data, size_t len, uint64_t deadline)
{
    int st = send_state(c);
    if (st != SM_CLIENT_OK)
        return st;
    return io_write_all(c, data, len, deadline);
}

int ws_send_close(ws_conn *c, int code, uint64_t deadline)
{
    if (c->close_sent || c->failed == SM_CLIENT_IO)
        return SM_CLIENT_OK;
    c->close_sent = 1;
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    return send_frame_now(c, WS_OP_CLOSE, 1, 0, 1, body, code > 0 ? 2 : 0, deadline);
}

/* The server broke the framing rules: tell it why and stop reading. */
static int fail_protocol(ws_conn *c, int close_code, uint64_t deadline)
{
    (void)ws_send_close(c, close_code, deadline);
    c->failed = SM_CLIENT_PROTOCOL;
    return SM_CLIENT_PROTOCOL;
}

static int msg_append(ws_conn *c, const uint8_t *data, size_t len)
{
    size_t need = c->msg_len + len + 1;
    if (need > c->msg_cap) {
        size_t cap = c->msg_cap ? c->msg_cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(c->msg, cap);
        if (!p)
            return -1;
        c->msg = p;
        c->msg_cap = cap;
    }
    if (len)
        memcpy(c->msg + c->msg_len, data, len);
    c->msg_len += len;
    return 0;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        size_t extra;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            extra = 1;
            cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            extra = 2;
            cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            extra = 3;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (n - i <= extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        static const uint32_t min_for[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* Close codes a peer may send (RFC 6455 7.4): 1004-1006 and 1015 are
 * reserved for reporting, never sent. */
static int close_code_sendable(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

static int handle_control(ws_conn *c, const ws_frame_header *h, const uint8_t *body,
                          uint64_t deadline)
{
    size_t len = (size_t)h->payload_len;
    if (h->opcode == WS_OP_PING) {
        /* RFC 6455 5.5.3: a pong echoes the ping's application data. */
        int rc = send_frame_now(c, WS_OP_PONG, 1, 0, 1, body, len, deadline);
        return rc == SM_CLIENT_OK ? 1 : rc;
    }
    if (h->opcode == WS_OP_PONG)
        return 1;
    /* close: empty, or a sendable code and a UTF-8 reason (RFC 6455
     * 5.5.1, 7.4); anything else fails the connection. */
    int code = 1005;
    if (len == 1)
        return fail_protocol(c, 1002, deadline);
    if (len >= 2) {
        code = (body[0] << 8) | body[1];
        if (!close_code_sendable(code))
            return fail_protocol(c, 1002, deadline);
        if (!utf8_valid(body + 2, len - 2))
            return fail_protocol(c, 1007, deadline);
    }
    c->close_code = code;
    c->closed = 1;
    (void)ws_send_close(c, len >= 2 ? code : 0, deadline);
    return SM_CLIENT_CLOSED;
}

/* Consumes one complete frame from rbuf if there is one: 1 a frame was
 * handled, 2 a message is complete, 0 more bytes needed, or a negative
 * status. */
static int take_frame(ws_conn *c, uint64_t deadline)
{
    ws_frame_header h;
    int p = ws_frame_header_parse(c->rbuf, c->rlen, &h);
    if (p < 0)
        return fail_protocol(c, 1002, deadline);
    if (p == 0)
        return 0;
    if (h.masked || h.rsv)
        return fail_protocol(c, 1002, deadline);   /* RFC 6455 5.1, 5.2 */
    int control = (h.opcode & 0x8) != 0;
    if (control) {
        if (h.opcode != WS_OP_CLOSE && h.opcode != WS_OP_PING && h.opcode != WS_OP_PONG)
            return fail_protocol(c, 1002, deadline);
        if (!h.fin || h.payload_len > 125)
            return fail_protocol(c, 1002, deadline);
    } else {
        if (h.opcode != WS_OP_CONT && h.opcode != WS_OP_TEXT && h.opcode != WS_OP_BINARY)
            return fail_protocol(c, 1002, deadline);
        if ((h.opcode == WS_OP_CONT) != (c->msg_opcode != 0))
            return fail_protocol(c, 1002, deadline);
        if (h.payload_len > WS_MAX_MESSAGE - c->msg_len)
            return fail_protocol(c, 1009, deadline);
    }
    size_t total = h.header_len + (size_t)h.payload_len;
    if (c->rlen < total)
        return 0;
    const uint8_t *body = c->rbuf + h.header_len;
    int rc;
    if (control) {
        rc = handle_control(c, &h, body, deadline);
    } else {
        if (h.opcode != WS_OP_CONT)
            c->msg_opcode = h.opcode;
        if (msg_append(c, body, (size_t)h.payload_len) != 0)
            return SM_CLIENT_ERROR;
        rc = h.fin ? 2 : 1;
    }
    rbuf_consume(c, total);
    return rc;
}

int ws_recv_message(ws_conn *c, uint64_t deadline, char **data, size_t *len)
{
    for (;;) {
        if (c->closed)
            return SM_CLIENT_CLOSED;
        if (c->failed)
            return c->failed;
        int t = take_frame(c, deadline);
        if (t < 0)
            return t;
        if (t == 2) {
            int opcode = c->msg_opcode;
            c->msg_opcode = 0;
            if (opcode == WS_OP_BINARY) {
                c->msg_len = 0;
                return fail_protocol(c, 1003, deadline);   /* the protocol is text only */
            }
            if (msg_append(c, NULL, 0) != 0)   /* room for the NUL */
                return SM_CLIENT_ERROR;
            c->msg[c->msg_len] = '\0';
            *data = (char *)c->msg;
            *len = c->msg_len;
            c->msg = NULL;
            c->msg_len = c->msg_cap = 0;
            return SM_CLIENT_OK;
        }
        if (t == 1)
            continue;
        /* Need more bytes: make room for the rest of the frame in one go
         * when its header is known, so big messages are not re-grown. */
        ws_frame_header h;
        size_t want = WS_READ_CHUNK;
        if (ws_frame_header_parse(c->rbuf, c->rlen, &h) == 1) {
            size_t total = h.header_len + (size_t)h.payload_len;
            if (total > c->rlen && total - c->rlen > want)
                want = total - c->rlen;
        }
        if (rbuf_reserve(c, want) != 0)
            return SM_CLIENT_ERROR;
        long n = io_read(c, c->rbuf + c->rlen, c->rcap - c->rlen, deadline);
        if (n == 0) {
            if (c->close_code < 0)
                c->close_code = 1006;
            c->closed = 1;
            return SM_CLIENT_CLOSED;
        }
        if (n < 0) {
            if (n != SM_CLIENT_TIMEOUT)
                c->failed = (int)n;
            return (int)n;
        }
        c->rlen += (size_t)n;
    }
}

void ws_drain_until_closed(ws_conn *c, uint64_t deadline)
{
    for (;;) {
        char *m = NULL;
        size_t n = 0;
        int rc = ws_recv_message(c, deadline, &m, &n);
        if (rc != SM_CLIENT_OK)
            return;
        free(m);
    }
}

int ws_close_code(const ws_conn *c) { return c->close_code; }

const char *ws_subprotocol(const ws_conn *c) { return c->subprotocol; }

int ws_fd(const ws_conn *c) { return c->fd; }

void ws_free(ws_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    free(c->rbuf);
    free(c->msg);
    free(c->subprotocol);
    free(c);
}
