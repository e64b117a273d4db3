#include "receive.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "dispatch.h"
#include "envelope.h"
#include "handshake.h"
#include "log.h"
#include "session.h"

void receive_fail(struct session *s, int code, const char *message, int close_code)
{
    dispatch_send_error(s, "", "", code, message, NULL);
    g_core.transport->close(s, close_code, message);
}

static int queue_input(struct session *s, const char *text, size_t len)
{
    if (s->input_count >= SESSION_MAX_PENDING_INPUT) {
        LOG_WARN("session %llu: too many commands pipelined; closing",
                 (unsigned long long)s->id);
        g_core.transport->close(s, 1008, "too many pipelined commands");
        return -1;
    }
    session_msg *m = calloc(1, sizeof *m);
    if (!m || !(m->text = malloc(len + 1))) {
        free(m);
        g_core.transport->close(s, 1011, "out of memory");
        return -1;
    }
    if (len)
        memcpy(m->text, text, len);
    m->text[len] = '\0';
    m->len = len;
    if (s->input_tail)
        s->input_tail->next = m;
    else
        s->input_head = m;
    s->input_tail = m;
    s->input_count++;
    if (g_core.transport->pause_input)
        g_core.transport->pause_input(s, 1);
    return 0;
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
        g_core.transport->close(s, 1008, "bad nonce");
        goto done;
    case ENVELOPE_INTEGRITY:
        dispatch_send_error(s, in.nonce, in.action, SM_ERR_INTEGRITY, "integrity check failed",
                            NULL);
        g_core.transport->close(s, 1008, "integrity failure");
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

void receive_message(struct session *s, const char *text, size_t len)
{
    if (s->state == SESSION_CLOSING)
        return;
    if (s->busy || s->input_head || s->state == SESSION_KEY_PENDING || output_congested(s)) {
        queue_input(s, text, len);
        return;
    }
    process(s, text, len);
}

void receive_resume(struct session *s)
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
        free(m->text);
        free(m);
    }
    s = session_find(id);
    if (s && s->state == SESSION_OPEN && !s->busy && !s->input_head &&
        g_core.transport->pause_input)
        g_core.transport->pause_input(s, 0);
}

static void resume_cb(sm_timer *t, void *arg)
{
    (void)t;
    struct session *s = session_find((sm_session_id)(uintptr_t)arg);
    if (s)
        receive_resume(s);
}

void receive_resume_later(struct session *s)
{
    if (core_timer_start(0, resume_cb, (void *)(uintptr_t)s->id))
        return;
    /* The reply went out, but the session's next command could never
     * run: close rather than leave it waiting. */
    LOG_ERROR("session %llu: cannot schedule its next command (out of memory); closing",
              (unsigned long long)s->id);
    g_core.transport->close(s, 1011, "internal error");
}
