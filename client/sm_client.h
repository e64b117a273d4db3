/* SafeMessenger client library: one connection to a server, speaking the
 * protocol of PROTOCOL.md (WebSocket transport, RSA-OAEP key exchange,
 * sealed envelopes in both directions).
 *
 * Use: sm_client_connect() (or sm_client_open() + sm_client_handshake()),
 * then sm_client_call() for commands and sm_client_next_event() for events,
 * sm_client_close() at the end. A client is used by one thread at a time.
 *
 * Every blocking call waits at most its timeout: a `timeout_ms` argument
 * that is negative means the options' timeout_ms, 0 means "only what is
 * ready now".
 *
 * Messages the library reads while waiting for something else (events
 * while waiting for a reply, replies while waiting for an event) are queued
 * in arrival order, and sm_client_recv()/sm_client_next_event() return
 * them before reading the wire.
 *
 * The library writes nothing to stdout/stderr and never exposes the
 * session key except through sm_client_c2s()/sm_client_s2c(), which exist
 * for tests. Writing to a socket the peer closed can raise SIGPIPE with
 * TLS: programs using wss:// should ignore SIGPIPE.
 */
#ifndef SM_CLIENT_H
#define SM_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "envelope.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sm_client sm_client;

typedef enum sm_client_status {
    SM_CLIENT_OK = 0,
    SM_CLIENT_TIMEOUT = -1,
    SM_CLIENT_CLOSED = -2,      /* the server closed: see sm_client_close_code */
    SM_CLIENT_PROTOCOL = -3,    /* bad signature, bad nonce, malformed message from the server */
    SM_CLIENT_IO = -4,          /* socket or TLS failure */
    SM_CLIENT_ERROR = -5        /* bad argument, out of memory, wrong state */
} sm_client_status;

#define SM_CLIENT_DEFAULT_SUBPROTOCOL "safemessenger.v1"
#define SM_CLIENT_DEFAULT_CIPHER "AES-256-GCM"
#define SM_CLIENT_DEFAULT_TIMEOUT_MS 5000

typedef struct sm_client_options {
    const char *url;        /* ws://host:port/path or wss://; host may be an IPv4 or
                               [IPv6] literal or a name */
    const char *cipher;     /* NULL = "AES-256-GCM" */
    int timeout_ms;         /* 0 = 5000, for each blocking call */
    int no_subprotocol;     /* offer no Sec-WebSocket-Protocol */
    const char *origin;     /* Origin header, NULL = none */
    const char *ca_file;    /* wss: PEM CA bundle, NULL = system default */
    int insecure;           /* wss: skip certificate and host name verification */
    int auto_pong;          /* answer PING events with PONG {timestamp}, default 0 */
    int rcvbuf;             /* SO_RCVBUF in bytes (slow-reader tests), 0 = default */
    const char *subprotocol;/* offer this instead of "safemessenger.v1" (NULL = default) */
    const char *source_address; /* IPv4/IPv6 literal to connect from (tests of
                                   per-address limits over 127.0.0.0/8), NULL = any */
    const char *forwarded_for; /* X-Forwarded-For header (tests of
                                  server.trusted_proxies), NULL = none */
} sm_client_options;

/* A message from the server, decrypted and verified. */
typedef struct sm_message {
    char *type;             /* "response", "event", "error" */
    char *action;
    char *nonce;
    char *reply_to;         /* NULL if absent */
    json_t *payload;        /* decrypted object (owned) */
} sm_message;

/* Frees the message and everything in it. NULL is allowed. */
void sm_message_free(sm_message *m);

/* Opens the TCP connection (TLS for wss://) and performs the WebSocket
 * upgrade only; the protocol handshake is not started. On success *out is
 * the new client. On failure returns a negative status and writes a
 * reason into err (may be NULL): SM_CLIENT_ERROR for bad options,
 * SM_CLIENT_IO for connect/TLS failures, SM_CLIENT_PROTOCOL when the
 * upgrade is refused (the HTTP status line is in err), SM_CLIENT_TIMEOUT. */
int sm_client_open(const sm_client_options *opt, sm_client **out, char *err, size_t err_len);

/* The protocol handshake of PROTOCOL.md section 3 on an opened client:
 * reads and checks server_hello (protocol 1, RSA key >= 2048 bits whose
 * fingerprint matches, the chosen cipher offered, 32-byte server_nonce),
 * sends key_exchange, derives the session keys and checks the server's
 * first encrypted message (response key_exchange, nonce "1", reply_to "0",
 * success true, a session_id). Returns SM_CLIENT_OK, SM_CLIENT_PROTOCOL
 * (including an error the server sent: its code is in err),
 * SM_CLIENT_CLOSED, SM_CLIENT_TIMEOUT or SM_CLIENT_IO. Not repeatable. */
int sm_client_handshake(sm_client *c, char *err, size_t err_len);

/* sm_client_open() + sm_client_handshake(); on failure nothing is left
 * open and *out is untouched. */
int sm_client_connect(const sm_client_options *opt, sm_client **out, char *err, size_t err_len);

/* The server's fingerprint ("sha256:<hex>"), public key PEM and session id,
 * once known (NULL before server_hello / the handshake response). Valid
 * until the client is freed. */
const char *sm_client_fingerprint(const sm_client *c);
const char *sm_client_server_key_pem(const sm_client *c);
const char *sm_client_session_id(const sm_client *c);
/* The subprotocol the server selected in the upgrade, or NULL. */
const char *sm_client_subprotocol(const sm_client *c);
/* The cipher in use (or chosen for the handshake), e.g. "AES-256-GCM". */
const char *sm_client_cipher(const sm_client *c);

/* Seals a command (payload NULL = {}) and sends it. *nonce_out (may be
 * NULL) receives its nonce. Requires a completed handshake. */
int sm_client_send(sm_client *c, const char *action, const json_t *payload, uint64_t *nonce_out);

/* The next server message of any type: queued ones first, then from the
 * wire. After the handshake each is verified exactly as the server does
 * (envelope_open on the s2c direction: signature, nonce + 1, decryption);
 * before it, a message must be unencrypted (nonce "0", signature ""). A
 * message failing those checks gives SM_CLIENT_PROTOCOL and the client
 * refuses further protocol reads. On success *out is owned by the caller. */
int sm_client_recv(sm_client *c, int timeout_ms, sm_message **out);

/* Sends a command and waits for the response or error whose reply_to is
 * its nonce; everything else read meanwhile is queued. On success *reply
 * is the reply (check reply->type for "error"). */
int sm_client_call(sm_client *c, const char *action, const json_t *payload, int timeout_ms,
                   sm_message **reply);

/* The next message of type "event": the first queued one, else from the
 * wire (non-events read meanwhile are queued). With auto_pong, PING events
 * are answered with PONG {timestamp} as soon as they are read (by any
 * call) and are still returned here. */
int sm_client_next_event(sm_client *c, int timeout_ms, sm_message **out);

/* Close code received from the server, or -1 (none yet), 1005 when the
 * close frame had no code, 1006 when TCP closed without a close frame. */
int sm_client_close_code(const sm_client *c);

/* ---- raw access, for tests -------------------------------------------- */

/* One text frame (fin set) with exactly these bytes. */
int sm_client_send_text(sm_client *c, const char *data, size_t len);
/* Any frame, masked with a fresh random mask: opcode (WebSocket opcode,
 * e.g. 0 continuation, 1 text, 2 binary, 8 close, 9 ping), fin flag. */
int sm_client_send_frame(sm_client *c, int opcode, int fin, const void *data, size_t len);
/* Any frame with explicit RSV bits (0..7) and masking choice. */
int sm_client_send_frame_ex(sm_client *c, int opcode, int fin, int rsv, int masked,
                            const void *data, size_t len);
/* Raw bytes on the connection (after TLS), no framing at all. */
int sm_client_send_raw(sm_client *c, const void *data, size_t len);
/* The next text message unparsed, bypassing the queue and all envelope
 * checks (s2c nonce is not advanced). *text is malloc'd and NUL-terminated;
 * the caller frees it. */
int sm_client_recv_text(sm_client *c, int timeout_ms, char **text, size_t *len);
/* The session's directions, so tests can seal tampered messages with
 * envelope_seal() or open raw ones with envelope_open(). NULL before the
 * key exchange. */
envelope_dir *sm_client_c2s(sm_client *c);
envelope_dir *sm_client_s2c(sm_client *c);
int sm_client_fd(const sm_client *c);

/* Sends a close frame with `code` (if code > 0), waits briefly for the
 * server's close, and frees the client. NULL is allowed. */
void sm_client_close(sm_client *c, int code);
/* Frees the client without a close frame (abrupt disconnect). Session keys
 * are wiped. NULL is allowed. */
void sm_client_free(sm_client *c);

#ifdef __cplusplus
}
#endif

#endif
