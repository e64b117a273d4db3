/* The seam between a session's I/O side and its logic side (issue 11,
 * session_io.h). Each crossing is one call here: without I/O threads
 * (g_core.bridge NULL: the plugin test host, the unit tests) session_io.c
 * makes it a direct call; with them (io_threads.c) it is an item on a
 * queue to the other thread, and the session is named by its id, so an
 * item that arrives after the session is gone finds nothing and is
 * dropped.
 *
 * Order: items from one thread to another arrive in the order they were
 * made, so a reply goes before the events the command caused and "done"
 * after both; an I/O thread's "opened" goes before the session's first
 * command. */
#ifndef SM_CORE_BRIDGE_H
#define SM_CORE_BRIDGE_H

#include <jansson.h>
#include <stddef.h>

struct session;

typedef struct session_bridge {
    /* ---- I/O side -> logic side ---- */
    /* The handshake completed: the logic side registers the session and
     * fires SESSION_OPENED. */
    void (*opened)(struct session *s);
    /* An opened, verified command for dispatch; payload's reference is
     * the callee's. One at a time per session: the next waits for done. */
    void (*command)(struct session *s, const char *action, const char *nonce, json_t *payload,
                    size_t bytes);
    /* ---- logic side -> I/O side ---- */
    /* One message to seal and queue (text: the serialised payload). */
    void (*send)(struct session *s, const char *type, const char *action, const char *reply_to,
                 const char *text, size_t len);
    /* The same event to n sessions: serialised once, sealed per session. */
    void (*publish)(struct session *const *to, size_t n, const char *action, const char *text,
                    size_t len);
    /* The command from `command` has had its reply (and the events it
     * held went out): the session may take its next one. */
    void (*done)(struct session *s);
    /* Close after the queued frames, with this code and reason. */
    void (*close)(struct session *s, int code, const char *reason);
} session_bridge;

#endif
