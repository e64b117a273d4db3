/* The handshake of PROTOCOL.md section 3: server_hello on open, the
 * key_exchange checks, RSA-OAEP decryption of the session key on the
 * worker pool, the HKDF split and the first encrypted response. */
#ifndef SM_CORE_HANDSHAKE_H
#define SM_CORE_HANDSHAKE_H

#include <stddef.h>

struct session;

/* Sends server_hello and arms the handshake timeout. */
int handshake_start(struct session *s);
/* Handles the first message of a session. */
void handshake_receive(struct session *s, const char *text, size_t len);

#endif
