/* The client's state, shared by client.c (messages, queue, raw access)
 * and handshake.c (PROTOCOL.md section 3). Not installed. */
#ifndef SM_CLIENT_PRIV_H
#define SM_CLIENT_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "envelope.h"
#include "sm_client.h"
#include "ws.h"

typedef struct msg_node {
    sm_message *msg;
    struct msg_node *next;
} msg_node;

struct sm_client {
    ws_conn *ws;
    int timeout_ms;
    int auto_pong;
    envelope_cipher cipher;
    int handshake_started;
    int keyed;              /* envelope_derive done: messages must be sealed */
    int ready;              /* handshake completed */
    int failed;             /* SM_CLIENT_PROTOCOL once the server broke the rules */
    envelope_dir c2s;
    envelope_dir s2c;
    char *server_key_pem;
    char fingerprint[CRYPTO_FINGERPRINT_LEN];
    char *session_id;
    msg_node *head, *tail;
};

/* Absolute deadline for a call's timeout (negative = the client's default). */
uint64_t client_deadline(const sm_client *c, int timeout_ms);

/* Writes a formatted reason into err when err is not NULL. */
void client_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Text for a status, for error messages. */
const char *client_status_text(int status);

#endif
