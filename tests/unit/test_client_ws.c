/* The client library's WebSocket layer without a server: URL parsing, the
 * accept key, frame headers, and the frame stream over a socketpair whose
 * other end plays the server. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sm_client.h"
#include "safemessenger/testhost_suite.h"
#include "ws.h"

/* ---- helpers: the fake server's side of a socketpair ------------------- */

typedef struct peer {
    int client_fd;  /* owned by the ws_conn once wrapped */
    int server_fd;
    ws_conn *ws;
} peer;

static int peer_open(peer *p)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -1;
    p->client_fd = sv[0];
    p->server_fd = sv[1];
    p->ws = NULL;
    if (ws_conn_wrap_fd(sv[0], &p->ws) != SM_CLIENT_OK) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    return 0;
}

static void peer_close(peer *p)
{
    ws_free(p->ws);
    if (p->server_fd >= 0)
        close(p->server_fd);
    p->server_fd = -1;
}

static int write_all(int fd, const void *data, size_t len)
{
    const uint8_t *b = data;
    while (len) {
        ssize_t n = write(fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

/* An unmasked server frame. */
static int server_frame(int fd, int opcode, int fin, const void *data, size_t len)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    if (ws_frame_encode(opcode, fin, NULL, data, len, &buf, &n) != 0)
        return -1;
    int rc = write_all(fd, buf, n);
    free(buf);
    return rc;
}

static int read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
    uint8_t *b = buf;
    while (len) {
        struct pollfd pf = {.fd = fd, .events = POLLIN, .revents = 0};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        ssize_t n = read(fd, b, len);
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one client frame (must be small) and unmasks it. */
typedef struct client_frame {
    ws_frame_header h;
    uint8_t body[256];
} client_frame;

static int read_client_frame(int fd, client_frame *f)
{
    uint8_t hdr[WS_MAX_HEADER];
    size_t have = 2;
    if (read_exact(fd, hdr, 2, 2000) != 0)
        return -1;
    for (;;) {
        int r = ws_frame_header_parse(hdr, have, &f->h);
        if (r < 0)
            return -1;
        if (r == 1)
            break;
        if (have >= sizeof hdr || read_exact(fd, hdr + have, 1, 2000) != 0)
            return -1;
        have++;
    }
    if (f->h.payload_len > sizeof f->body)
        return -1;
    if (read_exact(fd, f->body, (size_t)f->h.payload_len, 2000) != 0)
        return -1;
    if (f->h.masked)
        ws_mask_apply(f->body, (size_t)f->h.payload_len, f->h.mask, 0);
    return 0;
}

static uint64_t in_ms(int ms) { return ws_now_ms() + (uint64_t)ms; }

/* ---- pure functions --------------------------------------------------- */

static void accept_key_matches_rfc6455_example(void)
{
    char out[WS_ACCEPT_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    /* RFC 6455 1.3 (SHA-1 b37a4f2cc0624f1690f64606cf385945b2bec4ea). */
    CU_ASSERT_STRING_EQUAL(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void url_parse_accepts_ipv4_with_port_and_path(void)
{
    ws_url u;
    CU_ASSERT_EQUAL_FATAL(ws_url_parse("ws://127.0.0.1:8765/chat?x=1", &u), 0);
    CU_ASSERT_EQUAL(u.tls, 0);
    CU_ASSERT_STRING_EQUAL(u.host, "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(u.port, "8765");
    CU_ASSERT_STRING_EQUAL(u.authority, "127.0.0.1:8765");
    CU_ASSERT_STRING_EQUAL(u.path, "/chat?x=1");
}

static void url_parse_defaults_port_and_path(void)
{
    ws_url u;
    CU_ASSERT_EQUAL_FATAL(ws_url_parse("WSS://example.org", &u), 0);
    CU_ASSERT_EQUAL(u.tls, 1);
    CU_ASSERT_STRING_EQUAL(u.host, "example.org");
    CU_ASSERT_STRING_EQUAL(u.port, "443");
    CU_ASSERT_STRING_EQUAL(u.authority, "example.org");
    CU_ASSERT_STRING_EQUAL(u.path, "/");
    CU_ASSERT_EQUAL_FATAL(ws_url_parse("ws://localhost?a=b", &u), 0);
    CU_ASSERT_STRING_EQUAL(u.port, "80");
    CU_ASSERT_STRING_EQUAL(u.path, "/?a=b");
}

static void url_parse_accepts_bracketed_ipv6(void)
{
    ws_url u;
    CU_ASSERT_EQUAL_FATAL(ws_url_parse("ws://[::1]:9000/", &u), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "::1");
    CU_ASSERT_STRING_EQUAL(u.port, "9000");
    CU_ASSERT_STRING_EQUAL(u.authority, "[::1]:9000");
    CU_ASSERT_EQUAL_FATAL(ws_url_parse("wss://[fe80::1]", &u), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "fe80::1");
    CU_ASSERT_STRING_EQUAL(u.port, "443");
}

static void url_parse_rejects_bad_urls(void)
{
    static const char *const bad[] = {
        "http://h/", "ws://", "ws:///x", "ws://:80/", "ws://h:0/", "ws://h:65536/",
        "ws://h:8a/", "ws://h:/", "ws://user@h/", "ws://h/#frag", "ws://[::1/",
        "ws://[]:80/", "ws://[::1]x/", "ws://::1/", "ws://h/a b", "ws://h/\r\nX: y",
        NULL};
    for (int i = 0; bad[i]; i++) {
        ws_url u;
        if (ws_url_parse(bad[i], &u) == 0)
            CU_FAIL(bad[i]);
    }
    ws_url u;
    CU_ASSERT_EQUAL(ws_url_parse(NULL, &u), -1);
}

static void frame_header_uses_minimal_length_encoding(void)
{
    static const struct { uint64_t len; size_t hlen; } cases[] = {
        {0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {16u << 20, 10}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t hdr[WS_MAX_HEADER];
        size_t n = ws_frame_header_write(hdr, WS_OP_TEXT, 1, 0, NULL, cases[i].len);
        CU_ASSERT_EQUAL(n, cases[i].hlen);
        ws_frame_header h;
        CU_ASSERT_EQUAL(ws_frame_header_parse(hdr, n, &h), 1);
        CU_ASSERT_EQUAL(h.payload_len, cases[i].len);
        CU_ASSERT_EQUAL(h.header_len, n);
        CU_ASSERT_EQUAL(h.fin, 1);
        CU_ASSERT_EQUAL(h.opcode, WS_OP_TEXT);
        CU_ASSERT_EQUAL(h.masked, 0);
        CU_ASSERT_EQUAL(ws_frame_header_parse(hdr, n - 1, &h), 0);
    }
}

static void frame_header_rejects_non_minimal_length(void)
{
    const uint8_t len16[] = {0x81, 126, 0x00, 0x7d};
    const uint8_t len64[] = {0x81, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const uint8_t top_bit[] = {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
    ws_frame_header h;
    CU_ASSERT_EQUAL(ws_frame_header_parse(len16, sizeof len16, &h), -1);
    CU_ASSERT_EQUAL(ws_frame_header_parse(len64, sizeof len64, &h), -1);
    CU_ASSERT_EQUAL(ws_frame_header_parse(top_bit, sizeof top_bit, &h), -1);
}

static void frame_encode_masks_payload(void)
{
    const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t *buf = NULL;
    size_t n = 0;
    /* RFC 6455 5.7: a masked "Hello". */
    CU_ASSERT_EQUAL_FATAL(ws_frame_encode(WS_OP_TEXT, 1, mask, "Hello", 5, &buf, &n), 0);
    const uint8_t expect[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    CU_ASSERT_EQUAL(n, sizeof expect);
    CU_ASSERT_EQUAL(memcmp(buf, expect, sizeof expect), 0);
    ws_frame_header h;
    CU_ASSERT_EQUAL(ws_frame_header_parse(buf, n, &h), 1);
    CU_ASSERT_EQUAL(h.masked, 1);
    CU_ASSERT_EQUAL(memcmp(h.mask, mask, 4), 0);
    free(buf);
}

/* ---- the frame stream ---------------------------------------------------- */

static void recv_reassembles_fragments_and_answers_ping(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_TEXT, 0, "Hel", 3), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_PING, 1, "pp", 2), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CONT, 0, "l", 1), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CONT, 1, "o", 1), 0);
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_OK);
    CU_ASSERT_EQUAL(len, 5);
    CU_ASSERT_STRING_EQUAL(msg, "Hello");
    free(msg);
    client_frame f;
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p.server_fd, &f), 0);
    CU_ASSERT_EQUAL(f.h.opcode, WS_OP_PONG);
    CU_ASSERT_EQUAL(f.h.masked, 1);
    CU_ASSERT_EQUAL(f.h.payload_len, 2);
    CU_ASSERT_EQUAL(memcmp(f.body, "pp", 2), 0);
    peer_close(&p);
}

static void recv_records_close_code_and_replies(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_TEXT, 1, "{}", 2), 0);
    const uint8_t body[] = {0x03, 0xf0, 'b', 'y', 'e'};   /* 1008 */
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CLOSE, 1, body, sizeof body), 0);
    CU_ASSERT_EQUAL(ws_close_code(p.ws), -1);
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_OK);
    free(msg);
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ws_close_code(p.ws), 1008);
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(10), &msg, &len), SM_CLIENT_CLOSED);
    client_frame f;
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p.server_fd, &f), 0);
    CU_ASSERT_EQUAL(f.h.opcode, WS_OP_CLOSE);
    CU_ASSERT_EQUAL(f.h.payload_len, 2);
    CU_ASSERT_EQUAL((f.body[0] << 8) | f.body[1], 1008);
    CU_ASSERT_EQUAL(ws_send_frame(p.ws, WS_OP_TEXT, 1, 0, 1, "x", 1, in_ms(100)),
                    SM_CLIENT_CLOSED);
    peer_close(&p);
}

static void recv_close_without_code_is_1005(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CLOSE, 1, NULL, 0), 0);
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ws_close_code(p.ws), 1005);
    client_frame f;
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p.server_fd, &f), 0);
    CU_ASSERT_EQUAL(f.h.opcode, WS_OP_CLOSE);
    CU_ASSERT_EQUAL(f.h.payload_len, 0);
    peer_close(&p);
}

static void recv_eof_without_close_is_1006(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_TEXT, 0, "partial", 7), 0);
    close(p.server_fd);
    p.server_fd = -1;
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ws_close_code(p.ws), 1006);
    peer_close(&p);
}

static void recv_timeout_keeps_partial_frame(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    uint8_t *buf = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(ws_frame_encode(WS_OP_TEXT, 1, NULL, "abcdef", 6, &buf, &n), 0);
    CU_ASSERT_EQUAL(write_all(p.server_fd, buf, 4), 0);
    char *msg = NULL;
    size_t len = 0;
    uint64_t t0 = ws_now_ms();
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(50), &msg, &len), SM_CLIENT_TIMEOUT);
    CU_ASSERT(ws_now_ms() - t0 >= 45);
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(0), &msg, &len), SM_CLIENT_TIMEOUT);
    CU_ASSERT_EQUAL(write_all(p.server_fd, buf + 4, n - 4), 0);
    free(buf);
    CU_ASSERT_EQUAL_FATAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_OK);
    CU_ASSERT_STRING_EQUAL(msg, "abcdef");
    free(msg);
    peer_close(&p);
}

/* Asserts that the client gave up with `status` and closed with `code`. */
static void expect_failure(peer *p, int status, int code)
{
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(ws_recv_message(p->ws, in_ms(1000), &msg, &len), status);
    client_frame f;
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p->server_fd, &f), 0);
    CU_ASSERT_EQUAL(f.h.opcode, WS_OP_CLOSE);
    CU_ASSERT_EQUAL_FATAL(f.h.payload_len, 2);
    CU_ASSERT_EQUAL((f.body[0] << 8) | f.body[1], code);
    CU_ASSERT_EQUAL(ws_close_code(p->ws), -1);
}

static void recv_rejects_masked_server_frame(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    const uint8_t mask[4] = {1, 2, 3, 4};
    uint8_t *buf = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(ws_frame_encode(WS_OP_TEXT, 1, mask, "{}", 2, &buf, &n), 0);
    CU_ASSERT_EQUAL(write_all(p.server_fd, buf, n), 0);
    free(buf);
    expect_failure(&p, SM_CLIENT_PROTOCOL, 1002);
    peer_close(&p);
}

/* RFC 6455 5.5.1 and 7.4: a close body is empty or a code a peer may send
 * with a UTF-8 reason; a 1-byte body or a reserved code fails the
 * connection with 1002, a reason that is not UTF-8 with 1007. */
static void recv_fails_on_malformed_close_frames(void)
{
    static const struct {
        uint8_t body[6];
        size_t len;
        int code;
    } cases[] = {
        {{0x03}, 1, 1002},
        {{0x03, 0xed}, 2, 1002},                   /* 1005: reserved */
        {{0x03, 0xee}, 2, 1002},                   /* 1006: reserved */
        {{0x03, 0xf7}, 2, 1002},                   /* 1015: reserved */
        {{0x03, 0xe7}, 2, 1002},                   /* 999 */
        {{0x13, 0x88}, 2, 1002},                   /* 5000 */
        {{0x03, 0xe8, 0xc0, 0xaf}, 4, 1007},       /* overlong '/' */
        {{0x03, 0xe8, 0xed, 0xa0, 0x80}, 5, 1007}, /* a surrogate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        peer p;
        CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
        CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CLOSE, 1, cases[i].body, cases[i].len), 0);
        expect_failure(&p, SM_CLIENT_PROTOCOL, cases[i].code);
        peer_close(&p);
    }
    /* A registered private-use code with a UTF-8 reason is a normal close. */
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    const uint8_t ok[] = {0x0f, 0xa0, 0xc3, 0xa9};   /* 4000, "\u00e9" */
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CLOSE, 1, ok, sizeof ok), 0);
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ws_close_code(p.ws), 4000);
    peer_close(&p);
}

static void recv_rejects_continuation_without_start(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_CONT, 1, "x", 1), 0);
    expect_failure(&p, SM_CLIENT_PROTOCOL, 1002);
    peer_close(&p);
}

static void recv_rejects_binary_message(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(server_frame(p.server_fd, WS_OP_BINARY, 1, "\x01\x02", 2), 0);
    expect_failure(&p, SM_CLIENT_PROTOCOL, 1003);
    peer_close(&p);
}

static void recv_rejects_message_over_16_mib(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    /* Only the header: the length alone must be refused. */
    uint8_t hdr[WS_MAX_HEADER];
    size_t n = ws_frame_header_write(hdr, WS_OP_TEXT, 1, 0, NULL, WS_MAX_MESSAGE + 1u);
    CU_ASSERT_EQUAL(write_all(p.server_fd, hdr, n), 0);
    expect_failure(&p, SM_CLIENT_PROTOCOL, 1009);
    peer_close(&p);
}

typedef struct big_writer {
    int fd;
    size_t total;
    size_t fragment;
    int rc;
} big_writer;

static void *write_big_message(void *arg)
{
    big_writer *w = arg;
    uint8_t *chunk = malloc(w->fragment);
    w->rc = -1;
    if (!chunk)
        return NULL;
    memset(chunk, 'a', w->fragment);
    size_t sent = 0;
    while (sent < w->total) {
        size_t n = w->total - sent < w->fragment ? w->total - sent : w->fragment;
        int op = sent == 0 ? WS_OP_TEXT : WS_OP_CONT;
        if (server_frame(w->fd, op, sent + n == w->total, chunk, n) != 0) {
            free(chunk);
            return NULL;
        }
        sent += n;
    }
    free(chunk);
    w->rc = 0;
    return NULL;
}

static void recv_accepts_8_mib_fragmented_message(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    big_writer w = {.fd = p.server_fd, .total = 8u << 20, .fragment = 1u << 20, .rc = -1};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, write_big_message, &w), 0);
    char *msg = NULL;
    size_t len = 0;
    int rc = ws_recv_message(p.ws, in_ms(5000), &msg, &len);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(w.rc, 0);
    CU_ASSERT_EQUAL_FATAL(rc, SM_CLIENT_OK);
    CU_ASSERT_EQUAL(len, (size_t)8u << 20);
    CU_ASSERT_EQUAL(msg[0], 'a');
    CU_ASSERT_EQUAL(msg[len - 1], 'a');
    CU_ASSERT_EQUAL(msg[len], '\0');
    free(msg);
    peer_close(&p);
}

static void send_masks_each_frame_with_fresh_mask(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    CU_ASSERT_EQUAL(ws_send_frame(p.ws, WS_OP_TEXT, 1, 0, 1, "same", 4, in_ms(1000)),
                    SM_CLIENT_OK);
    CU_ASSERT_EQUAL(ws_send_frame(p.ws, WS_OP_TEXT, 0, 0, 1, "same", 4, in_ms(1000)),
                    SM_CLIENT_OK);
    client_frame a, b;
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p.server_fd, &a), 0);
    CU_ASSERT_EQUAL_FATAL(read_client_frame(p.server_fd, &b), 0);
    CU_ASSERT_EQUAL(a.h.masked, 1);
    CU_ASSERT_EQUAL(b.h.masked, 1);
    CU_ASSERT_EQUAL(a.h.fin, 1);
    CU_ASSERT_EQUAL(b.h.fin, 0);
    CU_ASSERT_EQUAL(memcmp(a.body, "same", 4), 0);
    CU_ASSERT_EQUAL(memcmp(b.body, "same", 4), 0);
    /* 2^-32 chance of a false failure. */
    CU_ASSERT_NOT_EQUAL(memcmp(a.h.mask, b.h.mask, 4), 0);
    peer_close(&p);
}

/* ---- the upgrade ---------------------------------------------------------- */

typedef struct fake_server {
    int fd;
    const char *status;         /* e.g. "101 Switching Protocols" */
    int wrong_accept;
    const char *protocol;       /* Sec-WebSocket-Protocol to answer, or NULL */
    char request[4096];
    int rc;
} fake_server;

static void *serve_upgrade(void *arg)
{
    fake_server *s = arg;
    size_t n = 0;
    s->rc = -1;
    while (n + 1 < sizeof s->request) {
        if (read_exact(s->fd, s->request + n, 1, 2000) != 0)
            return NULL;
        n++;
        s->request[n] = '\0';
        if (n >= 4 && memcmp(s->request + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    const char *k = strstr(s->request, "\r\nSec-WebSocket-Key: ");
    if (!k)
        return NULL;
    k += 21;
    char key[64];
    size_t klen = strcspn(k, "\r");
    if (klen >= sizeof key)
        return NULL;
    memcpy(key, k, klen);
    key[klen] = '\0';
    char accept[WS_ACCEPT_LEN + 1];
    if (ws_accept_key(key, accept) != 0)
        return NULL;
    if (s->wrong_accept)
        accept[0] = accept[0] == 'A' ? 'B' : 'A';
    char resp[512];
    int len = snprintf(resp, sizeof resp,
                       "HTTP/1.1 %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                       s->status, accept, s->protocol ? "Sec-WebSocket-Protocol: " : "",
                       s->protocol ? s->protocol : "", s->protocol ? "\r\n" : "");
    if (len < 0 || (size_t)len >= sizeof resp || write_all(s->fd, resp, (size_t)len) != 0)
        return NULL;
    /* A frame right behind the response, as a server sends server_hello. */
    if (server_frame(s->fd, WS_OP_TEXT, 1, "hello", 5) != 0)
        return NULL;
    s->rc = 0;
    return NULL;
}

static int run_upgrade(fake_server *s, const char *url_text, const ws_options *opt, peer *p,
                       char *err, size_t err_len)
{
    ws_url url;
    if (ws_url_parse(url_text, &url) != 0)
        return -100;
    s->fd = p->server_fd;
    pthread_t t;
    if (pthread_create(&t, NULL, serve_upgrade, s) != 0)
        return -100;
    int rc = ws_upgrade(p->ws, &url, opt, in_ms(2000), err, err_len);
    pthread_join(t, NULL);
    return rc;
}

static void upgrade_sends_rfc6455_request_and_keeps_first_frame(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    fake_server s = {.status = "101 Switching Protocols", .protocol = "safemessenger.v1"};
    ws_options opt = {.subprotocol = "safemessenger.v1", .origin = "https://chat.example"};
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(run_upgrade(&s, "ws://[::1]:8765/sock?x=1", &opt, &p, err, sizeof err),
                          SM_CLIENT_OK);
    CU_ASSERT_EQUAL(s.rc, 0);
    CU_ASSERT_EQUAL(strncmp(s.request, "GET /sock?x=1 HTTP/1.1\r\n", 24), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nHost: [::1]:8765\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nUpgrade: websocket\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nConnection: Upgrade\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nSec-WebSocket-Version: 13\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nSec-WebSocket-Protocol: safemessenger.v1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nOrigin: https://chat.example\r\n"));
    CU_ASSERT_PTR_NULL(strstr(s.request, "Extensions"));
    const char *k = strstr(s.request, "\r\nSec-WebSocket-Key: ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(strcspn(k + 21, "\r"), 24);   /* base64 of 16 bytes */
    CU_ASSERT_STRING_EQUAL(ws_subprotocol(p.ws), "safemessenger.v1");
    char *msg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ws_recv_message(p.ws, in_ms(1000), &msg, &len), SM_CLIENT_OK);
    CU_ASSERT_STRING_EQUAL(msg, "hello");
    free(msg);
    peer_close(&p);
}

static void upgrade_without_subprotocol_sends_no_protocol_header(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    fake_server s = {.status = "101 Switching Protocols"};
    ws_options opt = {0};
    CU_ASSERT_EQUAL(run_upgrade(&s, "ws://h/", &opt, &p, NULL, 0), SM_CLIENT_OK);
    CU_ASSERT_PTR_NULL(strstr(s.request, "Sec-WebSocket-Protocol"));
    CU_ASSERT_PTR_NULL(strstr(s.request, "Origin"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.request, "\r\nHost: h\r\n"));
    CU_ASSERT_PTR_NULL(ws_subprotocol(p.ws));
    peer_close(&p);
}

static void upgrade_rejects_refusal_and_wrong_accept(void)
{
    ws_options opt = {.subprotocol = "safemessenger.v1"};
    char err[256] = "";
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    fake_server refused = {.status = "403 Forbidden"};
    CU_ASSERT_EQUAL(run_upgrade(&refused, "ws://h/", &opt, &p, err, sizeof err),
                    SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "403 Forbidden"));
    peer_close(&p);

    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    fake_server wrong = {.status = "101 Switching Protocols", .wrong_accept = 1};
    CU_ASSERT_EQUAL(run_upgrade(&wrong, "ws://h/", &opt, &p, err, sizeof err),
                    SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "Sec-WebSocket-Accept"));
    peer_close(&p);
}

static void upgrade_rejects_subprotocol_not_offered(void)
{
    peer p;
    CU_ASSERT_EQUAL_FATAL(peer_open(&p), 0);
    fake_server s = {.status = "101 Switching Protocols", .protocol = "other.v9"};
    ws_options opt = {.subprotocol = "safemessenger.v1"};
    char err[256] = "";
    CU_ASSERT_EQUAL(run_upgrade(&s, "ws://h/", &opt, &p, err, sizeof err), SM_CLIENT_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "other.v9"));
    peer_close(&p);
}

static void client_open_rejects_bad_url_and_cipher(void)
{
    sm_client *c = NULL;
    char err[256] = "";
    sm_client_options o = {.url = "http://127.0.0.1:1/"};
    CU_ASSERT_EQUAL(sm_client_open(&o, &c, err, sizeof err), SM_CLIENT_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad url"));
    o.url = "ws://127.0.0.1:1/";
    o.cipher = "ROT13";
    CU_ASSERT_EQUAL(sm_client_open(&o, &c, err, sizeof err), SM_CLIENT_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "ROT13"));
    CU_ASSERT_PTR_NULL(c);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(accept_key_matches_rfc6455_example),
        SM_TEST(url_parse_accepts_ipv4_with_port_and_path),
        SM_TEST(url_parse_defaults_port_and_path),
        SM_TEST(url_parse_accepts_bracketed_ipv6),
        SM_TEST(url_parse_rejects_bad_urls),
        SM_TEST(frame_header_uses_minimal_length_encoding),
        SM_TEST(frame_header_rejects_non_minimal_length),
        SM_TEST(frame_encode_masks_payload),
        SM_TEST(recv_reassembles_fragments_and_answers_ping),
        SM_TEST(recv_records_close_code_and_replies),
        SM_TEST(recv_close_without_code_is_1005),
        SM_TEST(recv_eof_without_close_is_1006),
        SM_TEST(recv_timeout_keeps_partial_frame),
        SM_TEST(recv_rejects_masked_server_frame),
        SM_TEST(recv_fails_on_malformed_close_frames),
        SM_TEST(recv_rejects_continuation_without_start),
        SM_TEST(recv_rejects_binary_message),
        SM_TEST(recv_rejects_message_over_16_mib),
        SM_TEST(recv_accepts_8_mib_fragmented_message),
        SM_TEST(send_masks_each_frame_with_fresh_mask),
        SM_TEST(upgrade_sends_rfc6455_request_and_keeps_first_frame),
        SM_TEST(upgrade_without_subprotocol_sends_no_protocol_header),
        SM_TEST(upgrade_rejects_refusal_and_wrong_accept),
        SM_TEST(upgrade_rejects_subprotocol_not_offered),
        SM_TEST(client_open_rejects_bad_url_and_cipher),
        SM_TEST_END};
    return sm_test_run("client_ws", cases, NULL, NULL);
}
