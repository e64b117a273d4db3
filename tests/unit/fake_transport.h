/* A session transport that records every message instead of sending it,
 * for unit tests of dispatch, sessions and topics without sockets. */
#ifndef SM_TEST_FAKE_TRANSPORT_H
#define SM_TEST_FAKE_TRANSPORT_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "session.h"

#define FAKE_MAX 256

typedef struct fake_msg {
    sm_session_id session;
    char type[16];
    char action[64];
    char reply_to[32];
    json_t *payload;
} fake_msg;

static fake_msg fake_log[FAKE_MAX];
static size_t fake_count;
static int fake_closed_code;
static int fake_paused;

static int fake_deliver(struct session *s, const char *type, const char *action,
                        const char *reply_to, const char *text, size_t len)
{
    if (fake_count == FAKE_MAX)
        return -1;
    fake_msg *m = &fake_log[fake_count++];
    m->session = s->id;
    snprintf(m->type, sizeof m->type, "%s", type);
    snprintf(m->action, sizeof m->action, "%s", action);
    snprintf(m->reply_to, sizeof m->reply_to, "%s", reply_to ? reply_to : "");
    m->payload = json_loadb(text, len, 0, NULL);
    return 0;
}

static void fake_close(struct session *s, int code, const char *reason)
{
    (void)reason;
    s->state = SESSION_CLOSING;
    fake_closed_code = code;
}

static void fake_pause(struct session *s, int pause)
{
    (void)s;
    fake_paused = pause;
}

static const session_transport fake_transport = {fake_deliver, fake_close, fake_pause};

static void fake_reset(void)
{
    for (size_t i = 0; i < fake_count; i++)
        json_decref(fake_log[i].payload);
    fake_count = 0;
    fake_closed_code = 0;
}

/* A logged-out session past the handshake. */
static struct session *fake_session(void)
{
    struct session *s = session_new(NULL, "127.0.0.1");
    if (s) {
        s->state = SESSION_OPEN;
        s->opened = 1;
    }
    return s;
}

static long long fake_code(size_t i)
{
    return json_integer_value(json_object_get(fake_log[i].payload, "code"));
}

#endif
