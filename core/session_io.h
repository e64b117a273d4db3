/* Session I/O: everything between a session's socket and dispatch, in one
 * place. The transport hands in complete text messages and takes out
 * sealed frames; dispatch and the plugins send through here. This module
 * owns, per session:
 *
 *   - the command in flight (session->busy): at most one per session;
 *   - the input queue: messages read while a command is in flight, the key
 *     exchange is pending or the output is congested (at most
 *     SESSION_MAX_PENDING_INPUT, then close 1008);
 *   - the held events: events sent while a command is in flight wait for
 *     its reply (PROTOCOL.md 5), counted against the send queue bounds;
 *   - sealing: each outgoing message is sealed with the session's s2c
 *     direction (unencrypted before the key exchange), here and nowhere
 *     else, so the nonce order is the send order;
 *   - the send queue (session->out, outqueue.h) and its bounds: over them
 *     the slow consumer is cut (queue freed, connection dropped without a
 *     close frame: the client sees 1006), and at half of send_queue_bytes
 *     the next command waits until the output drains (back-pressure);
 *   - the stall check of limits.send_timeout;
 *   - closing: session_io_close records the code and reason and marks the
 *     session closing (session.c's state functions are the only writers of
 *     session->state).
 *
 * Data flow:
 *
 *   socket -> transport (reassembly) -> session_io_receive
 *          -> [input queue] -> handshake_receive | envelope open -> dispatch
 *          -> plugin handler -> session_io_send -> [held events] -> seal
 *          -> send queue -> transport->write ... session_io_next_frame /
 *             session_io_frame_sent -> socket
 *
 * The transport reaches the socket through three calls (session_transport
 * in core.h): write (frames are waiting), close (flush then close, or
 * drop) and pause (stop or resume reading). Besides a session's birth and
 * end (session_new, handshake_start, the login deadline, session_destroy)
 * it calls only session_io_*.
 *
 * Who owns what (issue 11): with I/O threads, each session's I/O side
 * runs on the I/O thread that owns its connection and its logic side on
 * the logic thread; without them (the plugin test host, the unit tests)
 * both run on the caller's thread.
 *
 *   I/O side: s->io, the reassembly buffer (s->rx), the input queue,
 *   opening (s->c2s), the handshake, sealing (s->s2c), the send queue
 *   (s->out) with its cut and stall check, input pause, and the state
 *   (session_set_*), which only this module and the handshake change.
 *   Logic side: the command in flight (s->busy) and so the held events,
 *   the rate buckets, login, attributes, topics, and logic_closing.
 *
 * The logic thread is g_core.logic_thread (the thread that ran
 * core_start); the host table refuses plugin calls from any other thread
 * (host_api.c), so an I/O-side path that reaches a host service by
 * mistake fails visibly instead of racing.
 *
 * The sides meet only through the bridge (bridge.h): direct calls on one
 * thread, queue items between threads (io_threads.c):
 *   I/O -> logic   opened (the handshake completed), command (one opened
 *                  command, the next waits for its done);
 *   logic -> I/O   send, publish (one batch per I/O thread), done, close.
 * A session closed by its connection reaches the logic side as "gone"
 * (the transport's, after which the I/O side never touches it again).
 */
#ifndef SM_CORE_SESSION_IO_H
#define SM_CORE_SESSION_IO_H

#include <stddef.h>

#include <jansson.h>

#include "outqueue.h"

struct session;
struct sm_ctx;

/* How the transport ends a connection (session_transport.close). */
enum {
    SESSION_IO_FLUSH = 0, /* after the queued frames, with the session's close_code and reason */
    SESSION_IO_DROP = 1   /* at once, no close frame: the slow-consumer cut */
};

/* ==== the I/O side: the session's I/O thread (or the only thread) ==== */

/* ---- input (from the transport) ---- */

/* One complete inbound text message: run now, or queued behind the command
 * at the logic side, a pending key exchange or congested output. */
void session_io_receive(struct session *s, const char *text, size_t len);
/* Runs queued messages while nothing holds them back, then resumes
 * reading once the queue is empty. */
void session_io_resume(struct session *s);
/* The logic side is done with the session's command (bridge.h "done"):
 * the next one may run. Without I/O threads that happens on the next loop
 * turn (a zero timer), not inside the plugin callback that replied; when
 * that cannot be scheduled (out of memory) the session is closed with 1011
 * rather than left waiting with its input paused. */
void session_io_done(struct session *s);

/* ---- output ---- */

/* Seals one message (payload_text: serialised JSON object) as the
 * session's next frame and queues it; over the send queue's bounds the
 * session is cut. 0, or -1 when it was not sent. */
int session_io_out_send(struct session *s, const char *type, const char *action,
                        const char *reply_to, const char *payload_text, size_t len);
/* An error reply (PROTOCOL.md 6) sent from the I/O side: the handshake's,
 * and an envelope's that never reached dispatch. SM_OK or a status. */
int session_io_out_error(struct session *s, const char *reply_to, const char *command, int code,
                         const char *message, const json_t *extra);
/* Sends error `code` (reply_to and command "") and closes with close_code. */
void session_io_fail(struct session *s, int code, const char *message, int close_code);
/* Closes after the queued frames are written; nothing more is read or
 * sent. Nothing when the session is already closing. */
void session_io_out_close(struct session *s, int close_code, const char *reason);

/* ---- the transport's side of the send queue ---- */

/* The oldest frame waiting (its text at data + OUTQUEUE_HEADROOM), or NULL;
 * the frames after it follow its next links. */
outqueue_frame *session_io_next_frame(const struct session *s);
/* The transport wrote the oldest frame; it still buffers part of it when
 * transport_holds_rest (that part stays counted). */
void session_io_frame_sent(struct session *s, int transport_holds_rest);
/* The same for the n oldest frames, written together (a coalesced batch,
 * wsframe.h); all n stay counted while the transport holds a part. */
void session_io_frames_sent(struct session *s, size_t n, int transport_holds_rest);
/* The transport's own buffer is empty (all it took reached the socket). */
void session_io_transport_drained(struct session *s);
/* Output moved: queued commands that waited for it to drain run once it is
 * below the back-pressure threshold again. */
void session_io_output_moved(struct session *s);
/* Whether output is waiting to be written. */
int session_io_output_pending(const struct session *s);
/* limits.send_timeout: 1 when output has been pending and not moved for
 * that long (the session is then cut: queue freed, transport->close DROP);
 * otherwise 0 with *check_in the seconds until the next check is due, or
 * 0 when nothing is pending (no check needed). */
int session_io_check_stall(struct session *s, double *check_in);
/* The connection is gone (closed by the peer, or dropped): nothing more
 * is read or sent; session_destroy follows. */
void session_io_disconnected(struct session *s);
/* Frees the input queue, the held events and the send queue (from
 * session_destroy). */
void session_io_free(struct session *s);

/* ==== the logic side: dispatch and the plugins ==== */

/* A command from the I/O side (bridge.h "command"): dispatched; its done
 * goes back once it is answered. Takes payload's reference. */
void session_io_command(struct session *s, const char *action, const char *nonce,
                        json_t *payload, size_t bytes);
/* The resume hook of dispatch (dispatch_set_resume): a deferred command
 * was answered, so the I/O side may take the session's next one. */
void session_io_command_done(struct session *s);

/* ctx is the session's command in flight from now on. */
void session_io_begin(struct session *s, struct sm_ctx *ctx);
/* ctx's reply was sent (or it needs none): it is no longer in flight and
 * the events it held go out. Nothing when ctx is not in flight. */
void session_io_end(struct session *s, struct sm_ctx *ctx);
/* The command in flight will reply later: without I/O threads, reading
 * stops until then. */
void session_io_deferred(struct session *s);

/* The largest payload text sent to a session (outqueue_payload_max of
 * limits.send_queue_bytes): session_io_send drops, and logs, anything
 * larger. */
size_t session_io_payload_max(void);
/* Sends one message (payload_text: serialised JSON object), holding events
 * while a command is in flight. 0, or -1 when it was not sent (closing,
 * too large, out of memory, or the session was cut for it). */
int session_io_send(struct session *s, const char *type, const char *action,
                    const char *reply_to, const char *payload_text, size_t len);
/* Whether an event to s may go through session_io_publish: not closing,
 * and no command in flight (whose reply its events must follow). */
int session_io_can_publish(const struct session *s);
/* One event to n sessions (each passing session_io_can_publish),
 * serialised once; with I/O threads, one batch per thread. 0, or -1 when
 * the text is over the payload limit (nothing sent). */
int session_io_publish(struct session *const *to, size_t n, const char *action,
                       const char *text, size_t len);
/* Closes after the queued frames are written; nothing more is sent.
 * Nothing when the session is already closing. */
void session_io_close(struct session *s, int close_code, const char *reason);

#endif
