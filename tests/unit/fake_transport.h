/* A session transport that takes every frame at once and records what it
 * carried instead of sending it, for unit tests of dispatch, sessions,
 * topics and session I/O without sockets. Sessions made by fake_session
 * have keys (the fake keeps the client's side), so their frames are sealed
 * and opened as on the wire; other sessions' encrypted payloads are
 * recorded as NULL. With fake_hold set, frames stay queued (a client that
 * does not read) until fake_take. */
#ifndef SM_TEST_FAKE_TRANSPORT_H
#define SM_TEST_FAKE_TRANSPORT_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "envelope.h"
#include "session.h"
#include "session_io.h"

#define FAKE_MAX 256
#define FAKE_CLIENTS 64

typedef struct fake_msg {
    sm_session_id session;
    char type[16];
    char action[64];
    char reply_to[32];
    json_t *payload;
} fake_msg;

/* The client's side of a fake_session's keys. */
typedef struct fake_client {
    sm_session_id id;
    envelope_dir c2s; /* seals commands */
    envelope_dir s2c; /* opens what the server sent */
} fake_client;

static fake_msg fake_log[FAKE_MAX];
static size_t fake_count;
static size_t fake_unreadable; /* frames taken that were no envelope */
static int fake_closed_code;   /* the last close: its code, 1006 for a drop */
static int fake_paused;
static int fake_hold;
static fake_client fake_clients[FAKE_CLIENTS];
static size_t fake_n_clients;

static fake_client *fake_client_of(sm_session_id id)
{
    for (size_t i = 0; i < fake_n_clients; i++)
        if (fake_clients[i].id == id)
            return &fake_clients[i];
    return NULL;
}

static void fake_record(struct session *s, const char *text, size_t len)
{
    envelope_in in;
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        fake_unreadable++;
        return;
    }
    if (fake_count < FAKE_MAX) {
        fake_msg *m = &fake_log[fake_count++];
        m->session = s->id;
        snprintf(m->type, sizeof m->type, "%s", in.type);
        snprintf(m->action, sizeof m->action, "%s", in.action);
        snprintf(m->reply_to, sizeof m->reply_to, "%s", in.reply_to ? in.reply_to : "");
        m->payload = NULL;
        fake_client *c = fake_client_of(s->id);
        if (json_is_object(in.payload))
            m->payload = json_incref(in.payload);
        else if (c && envelope_open(&c->s2c, &in, &m->payload) != ENVELOPE_OK)
            m->payload = NULL;
    }
    envelope_in_clear(&in);
}

/* Takes (and records) up to n queued frames of s. */
static void fake_take(struct session *s, size_t n)
{
    outqueue_frame *f;
    while (n-- > 0 && (f = session_io_next_frame(s))) {
        fake_record(s, (const char *)f->data + OUTQUEUE_HEADROOM, f->len);
        session_io_frame_sent(s, 0);
    }
}

static void fake_write(struct session *s)
{
    if (!fake_hold)
        fake_take(s, (size_t)-1);
}

static void fake_close(struct session *s, int how)
{
    fake_closed_code = how == SESSION_IO_DROP ? 1006 : s->close_code;
}

static void fake_pause(struct session *s, int pause)
{
    (void)s;
    fake_paused = pause;
}

static const session_transport fake_transport = {fake_write, fake_close, fake_pause, NULL};

static void fake_reset(void)
{
    for (size_t i = 0; i < fake_count; i++)
        json_decref(fake_log[i].payload);
    fake_count = 0;
    fake_unreadable = 0;
    fake_closed_code = 0;
    fake_hold = 0;
}

/* A logged-out session past the handshake, with keys whose client side
 * the fake keeps (NULL when out of memory or clients). */
static struct session *fake_session(void)
{
    if (fake_n_clients == FAKE_CLIENTS) {
        /* Slots of sessions gone are reused. */
        size_t j = 0;
        for (size_t i = 0; i < fake_n_clients; i++)
            if (session_find(fake_clients[i].id))
                fake_clients[j++] = fake_clients[i];
        fake_n_clients = j;
        if (fake_n_clients == FAKE_CLIENTS)
            return NULL;
    }
    struct session *s = session_new(NULL, "127.0.0.1");
    if (!s)
        return NULL;
    uint8_t k[CRYPTO_KEY_LEN], client_nonce[ENVELOPE_NONCE_LEN];
    if (crypto_random(k, sizeof k) != 0 || crypto_random(client_nonce, sizeof client_nonce) != 0 ||
        crypto_random(s->server_nonce, sizeof s->server_nonce) != 0 ||
        envelope_derive(k, s->server_nonce, client_nonce, ENVELOPE_CIPHER_AES256_GCM, &s->c2s,
                        &s->s2c) != 0) {
        session_destroy(s);
        return NULL;
    }
    /* Ids start again at 1 with each core_start: a stale slot is reused. */
    fake_client *c = fake_client_of(s->id);
    if (!c)
        c = &fake_clients[fake_n_clients++];
    c->id = s->id;
    c->c2s = s->c2s;
    c->s2c = s->s2c;
    session_set_open(s);
    s->opened = 1;
    return s;
}

/* Seals a command from s's client (payload: JSON object text) and hands it
 * to session I/O as the transport would. */
static int fake_send(struct session *s, const char *action, const char *payload)
{
    fake_client *c = fake_client_of(s->id);
    char *frame = NULL;
    size_t len = 0;
    if (!c || envelope_seal(&c->c2s, "command", action, NULL, payload, strlen(payload), &frame,
                            &len) != 0)
        return -1;
    session_io_receive(s, frame, len);
    free(frame);
    return 0;
}

static long long fake_code(size_t i)
{
    return json_integer_value(json_object_get(fake_log[i].payload, "code"));
}

#endif
