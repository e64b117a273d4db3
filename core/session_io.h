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
 * Who owns what, ready for the I/O-thread split (today everything runs on
 * the one event loop thread):
 *
 *   I/O side (later: the one I/O thread that owns the session): s->io, the
 *   reassembly buffer (s->rx), the input queue, opening (s->c2s), sealing
 *   (s->s2c), the send queue (s->out) with its cut and stall check, input
 *   pause, and the state (session_set_*), which only this module and the
 *   handshake change.
 *   Logic side (later: the one logic thread running dispatch and the
 *   plugins): the command in flight (s->busy) and so the held events, the
 *   rate buckets, login, attributes, topics.
 *
 * The logic thread is g_core.logic_thread (the thread that ran
 * core_start); the host table refuses plugin calls from any other thread
 * (host_api.c), so once the sides split, an I/O-side path that reaches a
 * host service by mistake fails visibly instead of racing.
 *
 * They meet at four calls, which become queue hand-offs then:
 *   I/O -> logic   process(): an opened command goes to dispatch_command;
 *   logic -> I/O   session_io_send(): a reply or event to seal and queue;
 *   logic -> I/O   session_io_end() + the resume hook
 *                  (session_io_resume_later, a zero timer today): the
 *                  command is done, take the next one;
 *   either side    session_io_close().
 */
#ifndef SM_CORE_SESSION_IO_H
#define SM_CORE_SESSION_IO_H

#include <stddef.h>

#include "outqueue.h"

struct session;
struct sm_ctx;

/* How the transport ends a connection (session_transport.close). */
enum {
    SESSION_IO_FLUSH = 0, /* after the queued frames, with the session's close_code and reason */
    SESSION_IO_DROP = 1   /* at once, no close frame: the slow-consumer cut */
};

/* ---- input (from the transport) ---- */

/* One complete inbound text message: run now, or queued behind the command
 * in flight, a pending key exchange or congested output. */
void session_io_receive(struct session *s, const char *text, size_t len);
/* Runs queued messages while nothing holds them back, then resumes
 * reading once the queue is empty. */
void session_io_resume(struct session *s);
/* The resume hook of dispatch (dispatch_set_resume): session_io_resume on
 * the next loop turn, not inside the plugin callback that replied. When
 * that cannot be scheduled (out of memory) the session is closed with 1011
 * rather than left waiting with its input paused. */
void session_io_resume_later(struct session *s);

/* ---- the command in flight (from dispatch) ---- */

/* ctx is the session's command in flight from now on. */
void session_io_begin(struct session *s, struct sm_ctx *ctx);
/* ctx's reply was sent (or it needs none): it is no longer in flight and
 * the events it held go out. Nothing when ctx is not in flight. */
void session_io_end(struct session *s, struct sm_ctx *ctx);
/* The command in flight will reply later: reading stops until then. */
void session_io_deferred(struct session *s);

/* ---- output ---- */

/* The largest payload text sent to a session (outqueue_payload_max of
 * limits.send_queue_bytes): session_io_send drops, and logs, anything
 * larger. */
size_t session_io_payload_max(void);
/* Sends one message (payload_text: serialised JSON object), holding events
 * while a command is in flight. 0, or -1 when it was not sent (closing,
 * too large, out of memory, or the session was cut for it). */
int session_io_send(struct session *s, const char *type, const char *action,
                    const char *reply_to, const char *payload_text, size_t len);
/* Sends error `code` (reply_to and command "") and closes with close_code. */
void session_io_fail(struct session *s, int code, const char *message, int close_code);
/* Closes after the queued frames are written; nothing more is read or
 * sent. Nothing when the session is already closing. */
void session_io_close(struct session *s, int close_code, const char *reason);

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

#endif
