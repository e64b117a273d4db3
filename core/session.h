/* Sessions: one per connection. The registry by id, the index of online
 * users (lower-case username -> their logged-in sessions), login state,
 * per-session attributes and the session's state. Its I/O (the command
 * in flight, input and held events, sealing, the send queue) is
 * session_io.c's. */
#ifndef SM_CORE_SESSION_H
#define SM_CORE_SESSION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bucket.h"
#include "envelope.h"
#include "outqueue.h"
#include "reassembly.h"
#include "safemessenger/plugin.h"

#define SESSION_MAX_ATTRS 32
#define SESSION_ATTR_KEY_MAX 64
#define SESSION_ATTR_VALUE_MAX 1024
#define SESSION_USERNAME_MAX 64
/* Commands read while another is in flight wait here (the transport stops
 * reading meanwhile, so only what was already buffered arrives). */
#define SESSION_MAX_PENDING_INPUT 64

typedef enum session_state {
    SESSION_HANDSHAKE,     /* server_hello sent, waiting for key_exchange */
    SESSION_KEY_PENDING,   /* RSA decryption running on a worker */
    SESSION_OPEN,          /* keys established */
    SESSION_CLOSING        /* closing: nothing more is read or sent */
} session_state;

typedef struct session_attr {
    char *key;
    char *value;
} session_attr;

typedef struct session_msg {
    struct session_msg *next;
    char *type;
    char *action;
    char *reply_to;
    char *text;
    size_t len;
} session_msg;

struct sm_ctx;

/* Which thread touches what (issue 11). With I/O threads, a session
 * lives on one of them (io_thread) for its socket and on the logic thread
 * for dispatch and the plugins; the fields are split between the two and
 * neither side touches the other's. Without I/O threads (the plugin test
 * host, the unit tests) both sides run on the caller's thread.
 *
 *   set once, before the logic side sees the session: id, io_thread,
 *     address, connected_at, connected_mono, token;
 *   I/O side: state, io, server_nonce, c2s, s2c, has_keys, rx, out, the
 *     input queue, io_busy, in_io, the handshake's timer and key job,
 *     close_code, close_reason;
 *   logic side: login, attributes, topics, busy and the held events,
 *     cmd_open, logic_closing, the rate buckets, login_timer, opened;
 *   both, atomically: out_msgs and out_bytes (the I/O side's send queue
 *     level, which bounds the logic side's held events) and metric_word
 *     (state and login, for /metrics). */
typedef struct session {
    sm_session_id id;
    int io_thread;                   /* the owning I/O thread, -1 without them */
    session_state state;
    void *io;                        /* the transport's handle (struct lws *) */
    char address[64];
    char token[33];                  /* the opaque session_id sent to the client */
    uint8_t server_nonce[ENVELOPE_NONCE_LEN];
    envelope_dir c2s;
    envelope_dir s2c;
    int has_keys;

    reassembly rx;                   /* input reassembly (transport) */

    outqueue out;                    /* sealed frames not yet written (session_io.c) */

    /* login */
    char *username;                  /* as first written */
    int64_t user_id;
    int counted;                     /* this login was told to presence (presence.h) */

    session_attr attrs[SESSION_MAX_ATTRS];
    size_t n_attrs;

    struct session_topic *topics;    /* the topics this session is in (topic.c) */
    size_t n_topics;
    size_t cap_topics;

    /* owned by session_io.c: the I/O side */
    int io_busy;                     /* a command went to the logic side; the next waits for done */
    int in_io;                       /* input is being processed right now */
    int announced;                   /* the logic side was told it opened (bridge) */
    atomic_size_t out_msgs, out_bytes; /* the send queue's level, for the logic side */
    /* owned by session_io.c: the logic side */
    int cmd_open;                    /* a command arrived and its done is not yet sent */
    int logic_closing;               /* the logic side closed the session */
    struct sm_ctx *busy;             /* command in flight, or NULL */
    session_msg *held_head, *held_tail; /* events held until busy's reply */
    size_t held_bytes, held_count;
    session_msg *input_head, *input_tail; /* commands waiting for busy */
    size_t input_count;
    bucket commands;                 /* limits.commands_per_second */
    bucket bytes;                    /* limits.bytes_per_second */

    sm_timer *handshake_timer;
    /* The handshake's RSA job while it may still wait on the worker pool;
     * session_destroy hands it to key_job_drop (set by the handshake) so
     * that a session gone first costs no private-key operation. */
    void *key_job;
    void (*key_job_drop)(void *key_job);
    sm_timer *login_timer;           /* limits.login_deadline, until the first login */
    int opened;                      /* SM_EVENT_SESSION_OPENED fired */
    double connected_at;             /* wall clock at accept (admin sessions list) */
    double connected_mono;           /* monotonic clock at accept (the login deadline) */
    int close_code;
    char close_reason[64];           /* sent in the close frame (<= 123 bytes allowed) */
    /* The SERVER_METRICS_SESSION_* category the session is counted in
     * (session.c moves it as state and login change). */
    atomic_int metric_word;          /* its safemessenger_sessions category (session.c) */
} session;

/* One topic a session is in: the name (owned by the topic) and the
 * folded name of the user the session was logged in as when it joined
 * (NULL: not logged in), whose count in the topic it holds. */
struct session_topic {
    const char *name;
    char *user;
};

/* The logged-in sessions of one user. */
typedef struct user_sessions {
    char *name;                      /* as first written by the first session */
    sm_session_id *ids;
    size_t n;
    size_t cap;
} user_sessions;

/* Creates a session with a fresh id; without I/O threads it is
 * registered with the logic side at once. */
session *session_new(void *io, const char *address);
/* Registers s with the logic side (session_find finds it from now on):
 * with I/O threads, when its handshake completed. SM_OK or SM_ENOMEM. */
int session_register(session *s);
/* Whether the logic side may log s in and send to it: opened and not
 * closed by the logic side (without I/O threads: state OPEN). */
int session_usable(const session *s);
session *session_find(sm_session_id id);

/* session->state changes only through these (session_new starts it at
 * SESSION_HANDSHAKE), called by the handshake and session_io.c. */
/* The key_exchange's RSA job was queued: input waits. */
void session_set_key_pending(session *s);
/* Keys are in c2s and s2c: messages are sealed and opened from now on.
 * Nothing when the session is already closing. */
void session_set_open(session *s);
/* Nothing more is read or sent (session_io_close, the cut, disconnect). */
void session_set_closing(session *s);
/* The handshake completed (on the session's I/O side): the logic side
 * learns of it through the bridge, or at once without I/O threads. */
void session_opened(session *s);
/* The logic side's part (the bridge's "opened"; the session is
 * registered): SESSION_OPENED fires and the login deadline runs. */
void session_logic_opened(session *s);
/* Fires LOGGED_OUT / CLOSED as due, leaves every topic, unregisters and
 * frees the session. */
void session_destroy(session *s);
/* Frees a session the logic side never saw (with I/O threads: closed
 * before its handshake completed), on its I/O thread: drops its key job. */
void session_discard(session *s);
void session_destroy_all(void);

/* The compact JSON text of payload, "{}" for NULL; malloc'd (free it), or
 * NULL when out of memory. Payloads are serialised once, here, however
 * many sessions they go to. */
char *session_payload_text(const json_t *payload);
/* Serialises payload (NULL = {}) and delivers it as an event. */
int session_send_event_json(session *s, const char *action, const json_t *payload);

int session_login(session *s, const char *username, int64_t user_id);
/* One audit line (source "audit"): event, username (NULL: none), the
 * session's address and id; by names the plugin that reported it (NULL:
 * the core). */
void session_audit(const session *s, const char *event, const char *username, const char *by);
/* Closes the session (1008 "login deadline") if it has not logged in
 * within limits.login_deadline seconds (0 = never). Met by the first
 * login: a later logout does not start it again. */
int session_start_login_deadline(session *s);
int session_logout(session *s);
user_sessions *session_user(const char *username);
/* An event (action, text: a serialised object of len bytes) to every
 * session of username on this node; SM_OK also when there is none. */
int session_send_user(const char *username, const char *action, const char *text, size_t len);

int session_set_attr(session *s, const char *key, const char *value);
const char *session_get_attr(const session *s, const char *key);

/* Fires a core event to every subscriber, in plugin load order. */
void session_fire(sm_core_event event, session *s);

#endif
