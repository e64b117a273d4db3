/* The path of one complete inbound text message: handshake phase or
 * envelope check (signature, nonce, decryption), then dispatch. Messages
 * that arrive while a command is in flight wait in the session's input
 * queue, so one session's commands run one at a time and in order. */
#ifndef SM_CORE_RECEIVE_H
#define SM_CORE_RECEIVE_H

#include <stddef.h>

struct session;

void receive_message(struct session *s, const char *text, size_t len);
/* Resumes reading and runs queued messages after a deferred reply, the
 * end of the key exchange, or the session's output draining below the
 * back-pressure threshold (half of limits.send_queue_bytes unsent). */
void receive_resume(struct session *s);
/* The resume hook of dispatch (dispatch_set_resume): runs receive_resume
 * on the next loop turn, not inside the plugin callback that replied.
 * When that cannot be scheduled (out of memory) the session is closed
 * with 1011 rather than left waiting with its input paused. */
void receive_resume_later(struct session *s);
/* Sends error `code` (reply_to and command "") and closes with close_code. */
void receive_fail(struct session *s, int code, const char *message, int close_code);

#endif
