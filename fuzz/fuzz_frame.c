/* libFuzzer target: the WebSocket frame path on arbitrary bytes.
 *
 * Input: byte 0 seeds how the server side splits frame payloads into
 * fragments and picks its message size cap (top 3 bits); the rest is a
 * byte stream read two ways.
 *
 * Client side (client/ws.c, client/ws_frame.c): the stream is what a
 * server sent. It is written into a socketpair and read with
 * ws_recv_message until the connection ends. Messages must be complete,
 * NUL-terminated and within WS_MAX_MESSAGE; the statuses are the
 * documented ones; everything the client writes back (pongs, its close)
 * must be a well-formed masked control frame.
 *
 * A stream that starts with "HTTP/" is first the server's answer to the
 * upgrade request; the same bytes are also parsed as a ws:// URL.
 *
 * Server side: the stream is what a client sent. Frames are walked with
 * ws_frame_header_parse as the server's receive callback sees them: each
 * payload unmasked and cut into fragments with first/final/binary flags,
 * as lws delivers them, and passed to server_fragment(), which keeps the
 * message a reassembly must produce under the cap. Re-encoding every
 * parsed frame must give back the input bytes (one encoding per header). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "reassembly.h"
#include "sm_client.h"
#include "ws.h"

/* Larger inputs add nothing the frame rules can see and would only fill
 * the socket buffer. */
#define FRAME_MAX_INPUT 16384u

/* ---- client side ------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What the client wrote back: the upgrade request if there was one, then
 * only masked, final control frames of at most 125 bytes, each whole. */
static void check_client_output(int fd, int upgraded)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    FUZZ_CHECK(buf != NULL);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            FUZZ_CHECK(buf != NULL);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    size_t off = 0, closes = 0;
    if (upgraded) {
        uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
        FUZZ_CHECK(end != NULL && memcmp(buf, "GET ", 4) == 0);
        off = (size_t)(end - buf) + 4;
    }
    while (off < len) {
        ws_frame_header h;
        FUZZ_CHECK(ws_frame_header_parse(buf + off, len - off, &h) == 1);
        FUZZ_CHECK(h.fin && h.masked && h.rsv == 0);
        FUZZ_CHECK(h.opcode == WS_OP_PONG || h.opcode == WS_OP_CLOSE);
        FUZZ_CHECK(h.payload_len <= 125);
        FUZZ_CHECK(len - off - h.header_len >= h.payload_len);
        if (h.opcode == WS_OP_CLOSE) {
            FUZZ_CHECK(h.payload_len == 0 || h.payload_len == 2);
            closes++;
        }
        off += h.header_len + (size_t)h.payload_len;
    }
    /* RFC 6455 5.5.1: after its close frame an endpoint sends nothing. */
    FUZZ_CHECK(closes <= 1);
    free(buf);
}

static void client_side(const uint8_t *data, size_t len)
{
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    FUZZ_CHECK(write_all(sv[0], data, len) == 0);
    /* EOF after the input: every read ends instead of waiting. */
    FUZZ_CHECK(shutdown(sv[0], SHUT_WR) == 0);
    ws_conn *c = NULL;
    FUZZ_CHECK(ws_conn_wrap_fd(sv[1], &c) == SM_CLIENT_OK);
    size_t delivered = 0;
    int rc = SM_CLIENT_OK;
    /* A stream that starts like an HTTP response is read as the answer to
     * an upgrade first. Its accept key cannot match (the request's key is
     * random), so this covers the response parser, not what follows. */
    int upgraded = len >= 5 && memcmp(data, "HTTP/", 5) == 0;
    if (upgraded) {
        ws_url url;
        ws_options opt = {.subprotocol = "safemessenger.v1"};
        char err[256];
        FUZZ_CHECK(ws_url_parse("ws://127.0.0.1:8765/", &url) == 0);
        rc = ws_upgrade(c, &url, &opt, ws_now_ms() + 10000, err, sizeof err);
        FUZZ_CHECK(rc == SM_CLIENT_PROTOCOL || rc == SM_CLIENT_CLOSED || rc == SM_CLIENT_OK);
    }
    while (rc == SM_CLIENT_OK) {
        char *msg = NULL;
        size_t msg_len = 0;
        rc = ws_recv_message(c, ws_now_ms() + 10000, &msg, &msg_len);
        if (rc != SM_CLIENT_OK) {
            FUZZ_CHECK(msg == NULL);
            break;
        }
        FUZZ_CHECK(msg != NULL && msg[msg_len] == '\0');
        FUZZ_CHECK(msg_len <= WS_MAX_MESSAGE);
        delivered += msg_len;
        FUZZ_CHECK(delivered <= len);
        free(msg);
    }
    /* The input ends in EOF, so nothing may time out or fail on I/O. */
    FUZZ_CHECK(rc == SM_CLIENT_CLOSED || rc == SM_CLIENT_PROTOCOL);
    int code = ws_close_code(c);
    if (rc == SM_CLIENT_CLOSED && !upgraded)
        FUZZ_CHECK(code >= 0 && code <= 0xffff);
    if (!upgraded) {
        /* The end is sticky: a later call gives the same status. */
        char *again = NULL;
        size_t again_len = 0;
        FUZZ_CHECK(ws_recv_message(c, ws_now_ms() + 10000, &again, &again_len) == rc);
    }
    ws_free(c);
    check_client_output(sv[0], upgraded);
    close(sv[0]);
}

/* The same bytes as a ws:// URL: what parses must be usable as is. */
static void url_side(const uint8_t *data, size_t len)
{
    char text[512];
    if (len >= sizeof text)
        return;
    memcpy(text, data, len);
    text[len] = '\0';
    ws_url u;
    if (ws_url_parse(text, &u) != 0)
        return;
    FUZZ_CHECK(u.host[0] != '\0' && u.authority[0] != '\0');
    FUZZ_CHECK(u.path[0] == '/');
    char *end = NULL;
    long port = strtol(u.port, &end, 10);
    FUZZ_CHECK(end && *end == '\0' && port >= 1 && port <= 65535);
    for (const char *p = u.path; *p; p++)
        FUZZ_CHECK((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f);
}

/* ---- server side ------------------------------------------------------- */

/* One message as the server's receive callback sees it, and the
 * reference a reassembly of it must produce: `model` holds the message's
 * bytes so far, `too_large` says whether they passed `limit` (the server's
 * per-session cap, chosen from the input so small caps are hit too). */
typedef struct server_rx {
    int in_message;     /* a data frame without FIN was seen */
    int binary;
    size_t fragments;
    size_t limit;
    uint8_t *model;
    size_t model_len, model_cap;
    int too_large;
    size_t frame_bytes;  /* payload bytes of the message's frames, counted per frame */
    reassembly r;        /* the server's reassembly, checked against the model */
} server_rx;

/* One piece of a data frame's unmasked payload, flagged as lws flags it:
 * first = the first piece of a message, final = the last piece of its
 * last frame. */
static void server_fragment(server_rx *rx, const uint8_t *data, size_t len, int first,
                            int final, int binary)
{
    FUZZ_CHECK(first == (rx->fragments == 0));
    if (first) {
        rx->binary = binary;
        rx->model_len = 0;
        rx->too_large = 0;
    }
    rx->fragments++;
    int was_too_large = rx->too_large;
    if (!rx->too_large && len > rx->limit - rx->model_len) {
        rx->too_large = 1;
    } else if (!rx->too_large) {
        if (rx->model_len + len > rx->model_cap) {
            rx->model_cap = rx->model_len + len;
            rx->model = realloc(rx->model, rx->model_cap);
            FUZZ_CHECK(rx->model != NULL);
        }
        if (len)
            memcpy(rx->model + rx->model_len, data, len);
        rx->model_len += len;
    }
    /* The server's reassembly agrees with the model piece by piece. */
    reassembly_status st = reassembly_append(&rx->r, first, final, (const char *)data, len,
                                             rx->limit);
    if (rx->too_large) {
        FUZZ_CHECK(st == (was_too_large ? REASSEMBLY_SKIPPED : REASSEMBLY_TOO_LARGE));
    } else if (final) {
        FUZZ_CHECK(st == REASSEMBLY_COMPLETE);
        size_t n = 0;
        const char *message = reassembly_take(&rx->r, &n);
        FUZZ_CHECK(message != NULL && n == rx->model_len && message[n] == '\0');
        FUZZ_CHECK(n == 0 || memcmp(message, rx->model, n) == 0);
    } else {
        FUZZ_CHECK(st == REASSEMBLY_MORE);
    }
    if (final) {
        /* The pieces add up to the frames' payloads, nothing lost or doubled. */
        FUZZ_CHECK(rx->too_large || rx->model_len == rx->frame_bytes);
        FUZZ_CHECK(!rx->too_large || rx->frame_bytes > rx->limit);
        rx->fragments = 0;
        rx->frame_bytes = 0;
    }
}

/* Cuts one frame's payload into pieces whose sizes come from the split
 * seed, as a server with a small receive buffer would see them. */
static void deliver_frame(server_rx *rx, const uint8_t *payload, size_t len, int fin,
                          int binary, uint8_t *split)
{
    size_t off = 0;
    do {
        *split = (uint8_t)(*split * 33u + 17u);
        size_t piece = (size_t)(*split % 64u) + 1;
        if (piece > len - off)
            piece = len - off;
        int first = rx->fragments == 0;
        int final = fin && off + piece == len;
        server_fragment(rx, payload + off, piece, first, final, binary);
        off += piece;
    } while (off < len);
}

/* Caps from tiny to the default max_message_bytes. */
static const size_t limits[] = {0, 1, 16, 125, 4096, 65536};

static void server_side(uint8_t split, const uint8_t *data, size_t len)
{
    server_rx rx = {0};
    rx.limit = limits[(split >> 5) % (sizeof limits / sizeof limits[0])];
    size_t off = 0;
    uint8_t *payload = NULL;
    while (off < len) {
        ws_frame_header h;
        int p = ws_frame_header_parse(data + off, len - off, &h);
        if (p != 1)
            break;
        if (h.payload_len > len - off - h.header_len)
            break;
        size_t plen = (size_t)h.payload_len;

        /* One encoding per header: re-encoding gives the same bytes. */
        uint8_t hdr[WS_MAX_HEADER];
        size_t hlen = ws_frame_header_write(hdr, h.opcode, h.fin, h.rsv,
                                            h.masked ? h.mask : NULL, h.payload_len);
        FUZZ_CHECK(hlen == h.header_len && memcmp(hdr, data + off, hlen) == 0);

        payload = realloc(payload, plen ? plen : 1);
        FUZZ_CHECK(payload != NULL);
        memcpy(payload, data + off + h.header_len, plen);
        if (h.masked)
            ws_mask_apply(payload, plen, h.mask, 0);
        /* Masking twice is the identity, whatever the offset. */
        if (h.masked && plen > 0) {
            uint8_t *again = NULL;
            size_t again_len = 0;
            FUZZ_CHECK(ws_frame_encode(h.opcode, h.fin, h.mask, payload, plen, &again,
                                       &again_len) == 0);
            FUZZ_CHECK(again_len == h.header_len + plen);
            FUZZ_CHECK(memcmp(again + h.header_len, data + off + h.header_len, plen) == 0);
            free(again);
        }

        /* lws fails the connection itself on these before any callback. */
        int control = (h.opcode & 8) != 0;
        int valid = h.rsv == 0 && (control ? (h.opcode == WS_OP_CLOSE || h.opcode == WS_OP_PING
                                              || h.opcode == WS_OP_PONG) && h.fin && plen <= 125
                                           : h.opcode <= WS_OP_BINARY);
        if (!valid || (!control && (h.opcode == WS_OP_CONT) != rx.in_message))
            break;
        if (!control) {
            rx.frame_bytes += plen;
            deliver_frame(&rx, payload, plen, h.fin, h.opcode == WS_OP_BINARY, &split);
            rx.in_message = !h.fin;
        }
        off += h.header_len + plen;
    }
    reassembly_release(&rx.r);
    free(rx.model);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FRAME_MAX_INPUT)
        return 0;
    client_side(data + 1, size - 1);
    server_side(data[0], data + 1, size - 1);
    url_side(data + 1, size - 1);
    return 0;
}
