#include "session_io.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "dispatch.h"
#include "envelope.h"
#include "handshake.h"
#include "log.h"
#include "server_metrics.h"
#include "session.h"

/* Used when no configuration is loaded (never in the server). */
#define DEFAULT_QUEUE_BYTES ((size_t)1 << 20)
#define DEFAULT_QUEUE_MESSAGES ((size_t)1000)

static size_t queue_bytes(void)
{
    return g_core.sc ? g_core.sc->send_queue_bytes : DEFAULT_QUEUE_BYTES;
}

static size_t queue_messages(void)
{
    return g_core.sc ? g_core.sc->send_queue_messages : DEFAULT_QUEUE_MESSAGES;
}

static char *dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void msg_free(session_msg *m)
{
    free(m->type);
    free(m->action);
    free(m->reply_to);
    free(m->text);
    free(m);
}

static void clear_msgs(session_msg **head, session_msg **tail)
{
    for (session_msg *m = *head, *next; m; m = next) {
        next = m->next;
        msg_free(m);
    }
    *head = *tail = NULL;
}

/* A copy of text, NUL-terminated, with the other fields copied when given. */
static session_msg *msg_new(const char *type, const char *action, const char *reply_to,
                            const char *text, size_t len)
{
    session_msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->type = dup_str(type);
    m->action = dup_str(action);
    m->reply_to = dup_str(reply_to);
    m->text = malloc(len + 1);
    if ((type && !m->type) || (action && !m->action) || (reply_to && !m->reply_to) || !m->text) {
        msg_free(m);
        return NULL;
    }
    if (len)
        memcpy(m->text, text, len);
    m->text[len] = '\0';
    m->len = len;
    return m;
}

static void msg_append(session_msg **head, session_msg **tail, session_msg *m)
{
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
}

void session_io_free(struct session *s)
{
    clear_msgs(&s->held_head, &s->held_tail);
    s->held_bytes = s->held_count = 0;
    clear_msgs(&s->input_head, &s->input_tail);
    s->input_count = 0;
    outqueue_clear(&s->out);
}

/* ---- closing ---- */

void session_io_close(struct session *s, int close_code, const char *reason)
{
    if (s->state == SESSION_CLOSING)
        return;
    session_set_closing(s);
    s->close_code = close_code;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason ? reason : "");
    g_core.transport->close(s, SESSION_IO_FLUSH);
}

/* The slow-consumer cut: the queue is freed at once, so memory stays flat
 * whatever the session is sent, and the connection is dropped. why names
 * it in the metrics. */
static void cut(struct session *s, const char *why)
{
    outqueue_clear(&s->out);
    server_metrics_send_queue_drop(why);
    session_set_closing(s);
    g_core.transport->close(s, SESSION_IO_DROP);
}

void session_io_disconnected(struct session *s)
{
    session_set_closing(s);
    s->io = NULL;
}

void session_io_fail(struct session *s, int code, const char *message, int close_code)
{
    dispatch_send_error(s, "", "", code, message, NULL);
    session_io_close(s, close_code, message);
}

/* ---- output ---- */

size_t session_io_payload_max(void) { return outqueue_payload_max(queue_bytes()); }

/* Seals one message as the session's next frame and queues it. */
static int seal_and_queue(struct session *s, const char *type, const char *action,
                          const char *reply_to, const char *text, size_t len)
{
    /* The transport is gone (transport_stop): nothing can be written, and
     * no nonce is spent on it. */
    if (g_core.shutting_down > 1)
        return -1;
    char *frame = NULL;
    size_t frame_len = 0;
    int rc;
    if (s->has_keys) {
        rc = envelope_seal(&s->s2c, type, action, reply_to, text, len, &frame, &frame_len);
    } else {
        /* Handshake phase: unencrypted, nonce "0", empty signature. */
        json_t *payload = json_loadb(text, len, 0, NULL);
        rc = payload ? envelope_plain(type, action, payload, reply_to, &frame, &frame_len) : -1;
        json_decref(payload);
    }
    if (rc != 0) {
        LOG_ERROR("session %llu: cannot encode '%s'", (unsigned long long)s->id, action);
        return -1;
    }
    rc = outqueue_push(&s->out, frame, frame_len, queue_bytes(), queue_messages(),
                       core_mono_now());
    free(frame);
    if (rc == SM_EBUSY) {
        /* The count includes what the transport still buffers of the frame
         * last written. */
        LOG_WARN("session %llu (%s): send queue over its bound (%zu messages, %zu bytes unsent, "
                 "%zu more refused); disconnecting",
                 (unsigned long long)s->id, s->address, outqueue_messages(&s->out),
                 outqueue_unsent(&s->out), frame_len);
        cut(s, "queue_full");
        return -1;
    }
    if (rc != 0)
        return -1;
    g_core.transport->write(s);
    return 0;
}

/* PROTOCOL.md 5: a command's reply goes before the events it causes. Held
 * events count with the unsent output against the send queue's bounds, so
 * a flood cannot grow memory here either. */
static int hold(struct session *s, const char *type, const char *action, const char *reply_to,
                const char *text, size_t len)
{
    size_t msgs = s->held_count + outqueue_messages(&s->out);
    size_t bytes = s->held_bytes + outqueue_unsent(&s->out);
    if (msgs + 1 > queue_messages() || bytes > queue_bytes() - len) {
        LOG_WARN("session %llu: held events exceed the send queue bound; closing",
                 (unsigned long long)s->id);
        server_metrics_send_queue_drop("queue_full");
        session_io_close(s, 1008, "send queue overflow");
        return -1;
    }
    session_msg *m = msg_new(type, action, reply_to, text, len);
    if (!m)
        return -1;
    msg_append(&s->held_head, &s->held_tail, m);
    s->held_bytes += len;
    s->held_count++;
    server_metrics_delivery();
    return 0;
}

int session_io_send(struct session *s, const char *type, const char *action,
                    const char *reply_to, const char *text, size_t len)
{
    if (s->state == SESSION_CLOSING)
        return -1;
    size_t cap = session_io_payload_max();
    if (len > cap) {
        /* Nothing this large is ever queued (replies were turned into
         * error 1011 by dispatch already). */
        LOG_WARN("session %llu: %s '%s' of %zu bytes is over the %zu-byte payload limit; "
                 "not sent",
                 (unsigned long long)s->id, type, action, len, cap);
        return -1;
    }
    int event = strcmp(type, "event") == 0;
    if (s->busy && event)
        return hold(s, type, action, reply_to, text, len);
    int rc = seal_and_queue(s, type, action, reply_to, text, len);
    /* An event counts as delivered once queued (held ones when held);
     * server_hello, the one event before the keys, is the handshake's. */
    if (rc == 0 && event && s->has_keys)
        server_metrics_delivery();
    return rc;
}

static void release_held(struct session *s)
{
    session_msg *m = s->held_head;
    s->held_head = s->held_tail = NULL;
    s->held_bytes = s->held_count = 0;
    while (m) {
        session_msg *next = m->next;
        if (s->state != SESSION_CLOSING)
            seal_and_queue(s, m->type, m->action, m->reply_to, m->text, m->len);
        msg_free(m);
        m = next;
    }
}

/* ---- the command in flight ---- */

void session_io_begin(struct session *s, struct sm_ctx *ctx) { s->busy = ctx; }

void session_io_end(struct session *s, struct sm_ctx *ctx)
{
    if (!s || !ctx || s->busy != ctx)
        return;
    s->busy = NULL;
    release_held(s);
}

void session_io_deferred(struct session *s) { g_core.transport->pause(s, 1); }

/* ---- input ---- */

/* Closes the session when the queue is full or memory short. */
static void queue_input(struct session *s, const char *text, size_t len)
{
    if (s->input_count >= SESSION_MAX_PENDING_INPUT) {
        LOG_WARN("session %llu: too many commands pipelined; closing",
                 (unsigned long long)s->id);
        session_io_close(s, 1008, "too many pipelined commands");
        return;
    }
    session_msg *m = msg_new(NULL, NULL, NULL, text, len);
    if (!m) {
        session_io_close(s, 1011, "out of memory");
        return;
    }
    msg_append(&s->input_head, &s->input_tail, m);
    s->input_count++;
    g_core.transport->pause(s, 1);
}

static void process_open(struct session *s, const char *text, size_t len)
{
    envelope_in in;
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        /* Unreadable: 1004, connection stays open, no nonce consumed. */
        dispatch_send_error(s, "", "", SM_ERR_MALFORMED, "malformed envelope", NULL);
        return;
    }
    json_t *payload = NULL;
    envelope_status st = envelope_open(&s->c2s, &in, &payload);
    switch (st) {
    case ENVELOPE_OK:
        break;
    case ENVELOPE_NONCE:
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_REPLAY,
                            "replayed or out-of-order nonce", NULL);
        session_io_close(s, 1008, "bad nonce");
        goto done;
    case ENVELOPE_INTEGRITY:
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_INTEGRITY, "integrity check failed",
                            NULL);
        session_io_close(s, 1008, "integrity failure");
        goto done;
    case ENVELOPE_MALFORMED:
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_MALFORMED,
                            "payload must be a JSON object", NULL);
        goto done;
    default:
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_INTERNAL, "internal server error",
                            NULL);
        goto done;
    }
    if (strcmp(in.type, "command") != 0)
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_INVALID_COMMAND,
                            "only commands may be sent to the server", NULL);
    else if (strcmp(in.action, "key_exchange") == 0)
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_INVALID_COMMAND,
                            "the handshake is already complete", NULL);
    else
        dispatch_command(s, in.action, in.nonce, payload, len);
done:
    json_decref(payload);
    envelope_in_clear(&in);
}

static void process(struct session *s, const char *text, size_t len)
{
    switch (s->state) {
    case SESSION_HANDSHAKE:
        handshake_receive(s, text, len);
        break;
    case SESSION_OPEN:
        process_open(s, text, len);
        break;
    default:
        break;
    }
}

/* Back-pressure: while half the send queue bound is unsent, the session's
 * next command waits (reading paused) instead of adding a reply; the
 * transport resumes it as the output drains. A client that reads is thus
 * never cut off for pipelining. */
static int output_congested(const struct session *s)
{
    return s->state == SESSION_OPEN && g_core.sc &&
           outqueue_congested(&s->out, g_core.sc->send_queue_bytes);
}

void session_io_receive(struct session *s, const char *text, size_t len)
{
    if (s->state == SESSION_CLOSING)
        return;
    if (s->busy || s->input_head || s->state == SESSION_KEY_PENDING || output_congested(s)) {
        queue_input(s, text, len);
        return;
    }
    process(s, text, len);
}

void session_io_resume(struct session *s)
{
    sm_session_id id = s->id;
    while ((s = session_find(id)) && s->state == SESSION_OPEN && !s->busy && s->input_head &&
           !output_congested(s)) {
        session_msg *m = s->input_head;
        s->input_head = m->next;
        if (!s->input_head)
            s->input_tail = NULL;
        s->input_count--;
        process(s, m->text, m->len);
        msg_free(m);
    }
    s = session_find(id);
    if (s && s->state == SESSION_OPEN && !s->busy && !s->input_head)
        g_core.transport->pause(s, 0);
}

static void resume_cb(sm_timer *t, void *arg)
{
    (void)t;
    struct session *s = session_find((sm_session_id)(uintptr_t)arg);
    if (s)
        session_io_resume(s);
}

void session_io_resume_later(struct session *s)
{
    if (core_timer_start(0, resume_cb, (void *)(uintptr_t)s->id))
        return;
    /* The reply went out, but the session's next command could never
     * run: close rather than leave it waiting. */
    LOG_ERROR("session %llu: cannot schedule its next command (out of memory); closing",
              (unsigned long long)s->id);
    session_io_close(s, 1011, "internal error");
}

/* ---- the transport's side of the send queue ---- */

outqueue_frame *session_io_next_frame(const struct session *s)
{
    return outqueue_peek(&s->out);
}

void session_io_frame_sent(struct session *s, int transport_holds_rest)
{
    outqueue_sent(&s->out, transport_holds_rest, core_mono_now());
}

void session_io_frames_sent(struct session *s, size_t n, int transport_holds_rest)
{
    outqueue_sent_many(&s->out, n, transport_holds_rest, core_mono_now());
}

void session_io_transport_drained(struct session *s)
{
    outqueue_transport_drained(&s->out, core_mono_now());
}

int session_io_output_pending(const struct session *s) { return outqueue_pending(&s->out); }

void session_io_output_moved(struct session *s)
{
    if (s->input_head && !s->busy && s->state == SESSION_OPEN && !output_congested(s))
        session_io_resume(s);
}

int session_io_check_stall(struct session *s, double *check_in)
{
    double now = core_mono_now(), timeout = (double)g_core.sc->send_timeout;
    *check_in = 0;
    if (!outqueue_pending(&s->out))
        return 0;
    if (outqueue_stalled(&s->out, now, timeout)) {
        LOG_WARN("session %llu (%s): no output taken for %d s (%zu messages, %zu bytes unsent); "
                 "disconnecting",
                 (unsigned long long)s->id, s->address, g_core.sc->send_timeout,
                 outqueue_messages(&s->out), outqueue_unsent(&s->out));
        cut(s, "send_timeout");
        return 1;
    }
    *check_in = s->out.progress_at + timeout - now;
    return 0;
}
