#include "session_io.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "dispatch.h"
#include "envelope.h"
#include "bridge.h"
#include "handshake.h"
#include "log.h"
#include "server_metrics.h"
#include "session.h"

/* Used when no configuration is loaded (never in the server). */
#define DEFAULT_QUEUE_BYTES ((size_t)1 << 20)
#define DEFAULT_QUEUE_MESSAGES ((size_t)1000)

static size_t queue_bytes(void)
{
    const server_config *sc = g_core.sc;
    return sc ? sc->send_queue_bytes : DEFAULT_QUEUE_BYTES;
}

static size_t queue_messages(void)
{
    const server_config *sc = g_core.sc;
    return sc ? sc->send_queue_messages : DEFAULT_QUEUE_MESSAGES;
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
    m->type = core_strdup(type);
    m->action = core_strdup(action);
    m->reply_to = core_strdup(reply_to);
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

/* The send queue's level as the logic side reads it (held events count
 * with it against the bounds). */
static void out_changed(struct session *s)
{
    atomic_store_explicit(&s->out_msgs, outqueue_messages(&s->out), memory_order_relaxed);
    atomic_store_explicit(&s->out_bytes, outqueue_unsent(&s->out), memory_order_relaxed);
}

/* ==== the I/O side ======================================================= */

/* ---- closing ---- */

void session_io_out_close(struct session *s, int close_code, const char *reason)
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
    out_changed(s);
    server_metrics_send_queue_drop(why);
    session_set_closing(s);
    g_core.transport->close(s, SESSION_IO_DROP);
}

void session_io_disconnected(struct session *s)
{
    session_set_closing(s);
    s->io = NULL;
}

/* ---- output ---- */

size_t session_io_payload_max(void) { return outqueue_payload_max(queue_bytes()); }

int session_io_out_send(struct session *s, const char *type, const char *action,
                        const char *reply_to, const char *text, size_t len)
{
    /* The transport is gone (transport_stop): nothing can be written, and
     * no nonce is spent on it. */
    if (s->state == SESSION_CLOSING || atomic_load(&g_core.shutting_down) > 1)
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
    out_changed(s);
    g_core.transport->write(s);
    return 0;
}

int session_io_out_error(struct session *s, const char *reply_to, const char *command, int code,
                         const char *message, const json_t *extra)
{
    char *text = dispatch_error_text(command, code, message, extra);
    if (!text)
        return SM_ENOMEM;
    int rc = session_io_out_send(s, "error", "error", reply_to ? reply_to : "", text,
                                 strlen(text));
    free(text);
    return rc == 0 ? SM_OK : SM_ERROR;
}

void session_io_fail(struct session *s, int code, const char *message, int close_code)
{
    session_io_out_error(s, "", "", code, message, NULL);
    session_io_out_close(s, close_code, message);
}

/* ---- input ---- */

/* Closes the session when the queue is full or memory short. */
static void queue_input(struct session *s, const char *text, size_t len)
{
    if (s->input_count >= SESSION_MAX_PENDING_INPUT) {
        LOG_WARN("session %llu: too many commands pipelined; closing",
                 (unsigned long long)s->id);
        session_io_out_close(s, 1008, "too many pipelined commands");
        return;
    }
    session_msg *m = msg_new(NULL, NULL, NULL, text, len);
    if (!m) {
        session_io_out_close(s, 1011, "out of memory");
        return;
    }
    msg_append(&s->input_head, &s->input_tail, m);
    s->input_count++;
    g_core.transport->pause(s, 1);
}

static void bridge_command(struct session *s, const char *action, const char *nonce,
                           json_t *payload, size_t bytes);

static void process_open(struct session *s, const char *text, size_t len)
{
    envelope_in in;
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        /* Unreadable: 1004, connection stays open, no nonce consumed. */
        session_io_out_error(s, "", "", SM_ERR_MALFORMED, "malformed envelope", NULL);
        return;
    }
    json_t *payload = NULL;
    envelope_status st = envelope_open(&s->c2s, &in, &payload);
    switch (st) {
    case ENVELOPE_OK:
        break;
    case ENVELOPE_NONCE:
        session_io_out_error(s, in.nonce, in.action, SM_ERR_REPLAY,
                             "replayed or out-of-order nonce", NULL);
        session_io_out_close(s, 1008, "bad nonce");
        goto done;
    case ENVELOPE_INTEGRITY:
        session_io_out_error(s, in.nonce, in.action, SM_ERR_INTEGRITY, "integrity check failed",
                             NULL);
        session_io_out_close(s, 1008, "integrity failure");
        goto done;
    case ENVELOPE_MALFORMED:
        session_io_out_error(s, in.nonce, in.action, SM_ERR_MALFORMED,
                             "payload must be a JSON object", NULL);
        goto done;
    default:
        session_io_out_error(s, in.nonce, in.action, SM_ERR_INTERNAL, "internal server error",
                             NULL);
        goto done;
    }
    if (strcmp(in.type, "command") != 0) {
        session_io_out_error(s, in.nonce, in.action, SM_ERR_INVALID_COMMAND,
                             "only commands may be sent to the server", NULL);
    } else if (strcmp(in.action, "key_exchange") == 0) {
        session_io_out_error(s, in.nonce, in.action, SM_ERR_INVALID_COMMAND,
                             "the handshake is already complete", NULL);
    } else {
        /* From here the logic side has it; the next command waits for its
         * done. */
        s->io_busy = 1;
        bridge_command(s, in.action, in.nonce, payload, len);
        payload = NULL;
    }
done:
    json_decref(payload);
    envelope_in_clear(&in);
}

static void process(struct session *s, const char *text, size_t len)
{
    s->in_io = 1;
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
    s->in_io = 0;
}

/* Back-pressure: while half the send queue bound is unsent, the session's
 * next command waits (reading paused) instead of adding a reply; the
 * transport resumes it as the output drains. A client that reads is thus
 * never cut off for pipelining. */
static int output_congested(const struct session *s)
{
    const server_config *sc = g_core.sc;
    return s->state == SESSION_OPEN && sc && outqueue_congested(&s->out, sc->send_queue_bytes);
}

void session_io_receive(struct session *s, const char *text, size_t len)
{
    if (s->state == SESSION_CLOSING)
        return;
    if (s->io_busy || s->input_head || s->state == SESSION_KEY_PENDING || output_congested(s)) {
        queue_input(s, text, len);
        return;
    }
    process(s, text, len);
}

void session_io_resume(struct session *s)
{
    /* Processing never frees the session (only the transport's end of the
     * connection does), so s stays valid through the loop. */
    while (s->state == SESSION_OPEN && !s->io_busy && s->input_head && !output_congested(s)) {
        session_msg *m = s->input_head;
        s->input_head = m->next;
        if (!s->input_head)
            s->input_tail = NULL;
        s->input_count--;
        process(s, m->text, m->len);
        msg_free(m);
    }
    if (s->state == SESSION_OPEN && !s->io_busy && !s->input_head)
        g_core.transport->pause(s, 0);
}

static void resume_cb(sm_timer *t, void *arg)
{
    (void)t;
    struct session *s = session_find((sm_session_id)(uintptr_t)arg);
    if (s)
        session_io_resume(s);
}

void session_io_done(struct session *s)
{
    s->io_busy = 0;
    /* Inside process(): its caller takes the next command when it returns. */
    if (s->in_io)
        return;
    if (g_core.bridge) {
        session_io_resume(s);
        return;
    }
    /* One thread: this runs inside the plugin callback that replied; the
     * next command starts on the next loop turn, not in there. */
    if (core_timer_start(0, resume_cb, (void *)(uintptr_t)s->id))
        return;
    /* The reply went out, but the session's next command could never
     * run: close rather than leave it waiting. */
    LOG_ERROR("session %llu: cannot schedule its next command (out of memory); closing",
              (unsigned long long)s->id);
    session_io_out_close(s, 1011, "internal error");
}

/* ---- the transport's side of the send queue ---- */

outqueue_frame *session_io_next_frame(const struct session *s)
{
    return outqueue_peek(&s->out);
}

void session_io_frame_sent(struct session *s, int transport_holds_rest)
{
    outqueue_sent(&s->out, transport_holds_rest, core_mono_now());
    out_changed(s);
}

void session_io_frames_sent(struct session *s, size_t n, int transport_holds_rest)
{
    outqueue_sent_many(&s->out, n, transport_holds_rest, core_mono_now());
    out_changed(s);
}

void session_io_transport_drained(struct session *s)
{
    outqueue_transport_drained(&s->out, core_mono_now());
    out_changed(s);
}

int session_io_output_pending(const struct session *s) { return outqueue_pending(&s->out); }

void session_io_output_moved(struct session *s)
{
    if (s->input_head && !s->io_busy && s->state == SESSION_OPEN && !output_congested(s))
        session_io_resume(s);
}

int session_io_check_stall(struct session *s, double *check_in)
{
    const server_config *sc = g_core.sc;
    double now = core_mono_now(), timeout = (double)sc->send_timeout;
    *check_in = 0;
    if (!outqueue_pending(&s->out))
        return 0;
    if (outqueue_stalled(&s->out, now, timeout)) {
        LOG_WARN("session %llu (%s): no output taken for %d s (%zu messages, %zu bytes unsent); "
                 "disconnecting",
                 (unsigned long long)s->id, s->address, sc->send_timeout,
                 outqueue_messages(&s->out), outqueue_unsent(&s->out));
        cut(s, "send_timeout");
        return 1;
    }
    *check_in = s->out.progress_at + timeout - now;
    return 0;
}

/* ==== the logic side ===================================================== */

/* Whether the logic side may still send to s. Without I/O threads the I/O
 * side's state is on this thread too, and a session it closed takes
 * nothing more either. */
static int logic_closed(const struct session *s)
{
    return s->logic_closing || (!g_core.bridge && s->state == SESSION_CLOSING);
}

static void bridge_send(struct session *s, const char *type, const char *action,
                        const char *reply_to, const char *text, size_t len)
{
    if (g_core.bridge)
        g_core.bridge->send(s, type, action, reply_to, text, len);
    else
        session_io_out_send(s, type, action, reply_to, text, len);
}

void session_io_close(struct session *s, int close_code, const char *reason)
{
    if (logic_closed(s))
        return;
    s->logic_closing = 1;
    if (g_core.bridge)
        g_core.bridge->close(s, close_code, reason);
    else
        session_io_out_close(s, close_code, reason);
}

/* PROTOCOL.md 5: a command's reply goes before the events it causes. Held
 * events count with the unsent output against the send queue's bounds, so
 * a flood cannot grow memory here either. */
static int hold(struct session *s, const char *type, const char *action, const char *reply_to,
                const char *text, size_t len)
{
    size_t msgs = s->held_count + atomic_load_explicit(&s->out_msgs, memory_order_relaxed);
    size_t bytes = s->held_bytes + atomic_load_explicit(&s->out_bytes, memory_order_relaxed);
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

static int over_payload_max(const struct session *s, const char *type, const char *action,
                            size_t len)
{
    size_t cap = session_io_payload_max();
    if (len <= cap)
        return 0;
    /* Nothing this large is ever queued (replies were turned into error
     * 1011 by dispatch already). */
    LOG_WARN("session %llu: %s '%s' of %zu bytes is over the %zu-byte payload limit; not sent",
             (unsigned long long)s->id, type, action, len, cap);
    return 1;
}

int session_io_send(struct session *s, const char *type, const char *action,
                    const char *reply_to, const char *text, size_t len)
{
    if (logic_closed(s) || over_payload_max(s, type, action, len))
        return -1;
    int event = strcmp(type, "event") == 0;
    if (s->busy && event)
        return hold(s, type, action, reply_to, text, len);
    if (g_core.bridge) {
        g_core.bridge->send(s, type, action, reply_to, text, len);
    } else if (session_io_out_send(s, type, action, reply_to, text, len) != 0) {
        return -1;
    }
    /* An event counts as delivered once queued (held ones when held). */
    if (event)
        server_metrics_delivery();
    return 0;
}

int session_io_publish(struct session *const *to, size_t n, const char *action,
                       const char *text, size_t len)
{
    if (n == 0)
        return 0;
    if (len > session_io_payload_max()) {
        LOG_WARN("event '%s' of %zu bytes is over the %zu-byte payload limit; not sent", action,
                 len, session_io_payload_max());
        return -1;
    }
    if (g_core.bridge) {
        g_core.bridge->publish(to, n, action, text, len);
        for (size_t i = 0; i < n; i++)
            server_metrics_delivery();
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        session_io_send(to[i], "event", action, NULL, text, len);
    return 0;
}

int session_io_can_publish(const struct session *s)
{
    return !logic_closed(s) && !s->busy;
}

static void release_held(struct session *s)
{
    session_msg *m = s->held_head;
    s->held_head = s->held_tail = NULL;
    s->held_bytes = s->held_count = 0;
    while (m) {
        session_msg *next = m->next;
        if (!logic_closed(s))
            bridge_send(s, m->type, m->action, m->reply_to, m->text, m->len);
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

void session_io_deferred(struct session *s)
{
    /* One thread: stop reading now. With I/O threads the I/O side stops
     * once a message arrives behind the command (queue_input). */
    if (!g_core.bridge)
        g_core.transport->pause(s, 1);
}

void session_io_command_done(struct session *s)
{
    if (!s->cmd_open || s->busy)
        return;
    s->cmd_open = 0;
    if (g_core.bridge)
        g_core.bridge->done(s);
    else
        session_io_done(s);
}

void session_io_command(struct session *s, const char *action, const char *nonce,
                        json_t *payload, size_t bytes)
{
    s->cmd_open = 1;
    dispatch_command(s, action, nonce, payload, bytes);
    json_decref(payload);
    /* Answered already (or refused before the handler): the next one may
     * come. A deferred command's done comes with its reply (dispatch's
     * resume hook). */
    session_io_command_done(s);
}

static void bridge_command(struct session *s, const char *action, const char *nonce,
                           json_t *payload, size_t bytes)
{
    if (g_core.bridge)
        g_core.bridge->command(s, action, nonce, payload, bytes);
    else
        session_io_command(s, action, nonce, payload, bytes);
}
