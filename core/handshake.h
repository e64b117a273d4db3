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
/* Logs "rsa jobs: N run, M dropped, K refused (queue full)": private-key
 * operations done, jobs that never ran (session gone, or shutdown), and
 * key_exchanges refused for a full queue. At shutdown, after the pool
 * has stopped. */
/* The handshake deadline passed (the transport's timer, on the session's
 * thread): closes with 1008 unless the keys were established meanwhile. */
void handshake_timed_out(struct session *s);
/* Waits for the RSA jobs queued or running and ends them (the transport,
 * before its I/O threads' queues are freed). Logic thread. */
void handshake_drain(void);
void handshake_log_stats(void);

#endif
