/* A minimal RFC 6455 client: URL parsing, the HTTP upgrade, frame
 * encoding/decoding and one connection over a socket or TLS. Internal to
 * the client library (and its unit test); sm_client.h is the public API.
 *
 * Every blocking call takes an absolute deadline (ws_now_ms() + timeout)
 * and waits with poll(), so the socket itself is non-blocking. Status codes
 * are those of sm_client_status. */
#ifndef SM_CLIENT_WS_H
#define SM_CLIENT_WS_H

#include <stddef.h>
#include <stdint.h>

#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA

/* Largest server message (after reassembly) the client accepts. The
 * protocol requires at least 8 MiB. */
#define WS_MAX_MESSAGE (16u * 1024u * 1024u)
#define WS_MAX_HEADER 14u            /* 2 + 8 (length) + 4 (mask) */
#define WS_ACCEPT_LEN 28u            /* base64 of a SHA-1 digest */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct ws_url {
    int tls;                /* wss:// */
    char host[256];         /* without the brackets of an IPv6 literal */
    char port[6];
    char authority[272];    /* as written in the URL: the Host header */
    char path[2048];        /* path and query, at least "/" */
} ws_url;

/* Parses ws://host[:port][/path][?query] or wss://... (scheme case
 * insensitive). Rejects user info, fragments, empty hosts, bad ports and
 * anything longer than the fields. Returns 0 or -1. */
int ws_url_parse(const char *url, ws_url *out);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)).
 * out receives WS_ACCEPT_LEN characters and a NUL. Returns 0 or -1. */
int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1]);

/* Writes a frame header into hdr (room for WS_MAX_HEADER bytes) and
 * returns its length. mask NULL = unmasked frame. */
size_t ws_frame_header_write(uint8_t hdr[WS_MAX_HEADER], int opcode, int fin, int rsv,
                             const uint8_t *mask, uint64_t payload_len);

/* Encodes a whole frame (header + payload, masked with `mask` if not
 * NULL) into a malloc'd buffer. Returns 0 or -1. */
int ws_frame_encode(int opcode, int fin, const uint8_t *mask, const void *data, size_t len,
                    uint8_t **out, size_t *out_len);

typedef struct ws_frame_header {
    int fin;
    int rsv;                /* the three RSV bits, as bits 2..0 */
    int opcode;
    int masked;
    uint8_t mask[4];
    uint64_t payload_len;
    size_t header_len;
} ws_frame_header;

/* Decodes the frame header at the start of buf. Returns 1 when complete
 * (out filled), 0 when more bytes are needed, -1 when the header is
 * invalid (a 64-bit length with the top bit set, or a non-minimal length
 * encoding). */
int ws_frame_header_parse(const uint8_t *buf, size_t len, ws_frame_header *out);

/* XORs data with the mask, starting at mask offset `offset`. */
void ws_mask_apply(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);

uint64_t ws_now_ms(void);

typedef struct ws_options {
    const char *subprotocol;    /* NULL = offer none */
    const char *origin;         /* NULL = no Origin header */
    const char *ca_file;        /* NULL = system default verify paths */
    int insecure;               /* no certificate verification */
    int rcvbuf;                 /* SO_RCVBUF, 0 = system default */
    const char *source_address; /* local IP literal to bind before connect, NULL = any */
    const char *forwarded_for;  /* NULL = no X-Forwarded-For header */
} ws_options;

typedef struct ws_conn ws_conn;

/* TCP connect (each address of the name in turn), TLS for wss://, then
 * the upgrade. err receives a reason on failure. */
int ws_connect(const ws_url *url, const ws_options *opt, uint64_t deadline,
               ws_conn **out, char *err, size_t err_len);

/* Wraps an already connected socket (takes ownership; no TLS, no upgrade)
 * so tests can drive the framing over a socketpair. */
int ws_conn_wrap_fd(int fd, ws_conn **out);

/* Sends the HTTP upgrade on a wrapped or connected socket and checks the
 * 101 answer. Bytes that follow the answer stay buffered as frames. */
int ws_upgrade(ws_conn *c, const ws_url *url, const ws_options *opt, uint64_t deadline,
               char *err, size_t err_len);

/* One frame, masked with a fresh random mask when `masked`. rsv is put in
 * the RSV bits as is (tests only). */
int ws_send_frame(ws_conn *c, int opcode, int fin, int rsv, int masked,
                  const void *data, size_t len, uint64_t deadline);

/* Raw bytes on the stream, no framing. */
int ws_send_raw(ws_conn *c, const void *data, size_t len, uint64_t deadline);

/* The next complete text message (continuations reassembled), malloc'd
 * with a NUL after len bytes. Pings are answered, pongs dropped. A close
 * frame is recorded, answered with a close frame and gives
 * SM_CLIENT_CLOSED; so does EOF (code 1006). A protocol violation by the
 * server (masked frame, RSV bits, bad opcode or continuation, oversized
 * message, binary message) gives SM_CLIENT_PROTOCOL and closes with
 * 1002/1003/1009. On timeout the partial state is kept for the next call. */
int ws_recv_message(ws_conn *c, uint64_t deadline, char **data, size_t *len);

/* Sends a close frame with `code` (0 = no code) unless one was sent. */
int ws_send_close(ws_conn *c, int code, uint64_t deadline);

/* Waits until the server's close frame or EOF, discarding messages. */
void ws_drain_until_closed(ws_conn *c, uint64_t deadline);

/* -1 none yet, 1005 close without a code, 1006 EOF without a close frame. */
int ws_close_code(const ws_conn *c);
/* The subprotocol the server selected, or NULL. */
const char *ws_subprotocol(const ws_conn *c);
int ws_fd(const ws_conn *c);
void ws_free(ws_conn *c);

#endif
