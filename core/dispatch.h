/* Dispatch: the action table (action name -> plugin handler, flags,
 * schema), the checks of PROTOCOL.md section 5 in their order (unknown
 * action 1003, login 1002, rate limit 1008 of commands and of bytes,
 * payload 1004), the request
 * context, and the one-reply-per-command rule. */
#ifndef SM_CORE_DISPATCH_H
#define SM_CORE_DISPATCH_H

#include <jansson.h>
#include "safemessenger/plugin.h"

struct session;
struct sm_plugin;

typedef struct dispatch_entry {
    const sm_action *action;
    struct sm_plugin *owner;
} dispatch_entry;

struct sm_ctx {
    sm_session_id session;
    const dispatch_entry *entry;
    char *nonce;        /* the command's nonce: the reply's reply_to */
    int replied;
    int deferred;
    int in_handler;
    double started;     /* core_mono_now() at dispatch, for the duration metric */
};

/* Called once a deferred command has had its reply, so that the session
 * takes its next command. Registered by the session's input side
 * (session_io_resume_later, by core_start), so that dispatch never calls
 * up into it. */
typedef void (*dispatch_resume_fn)(struct session *s);
void dispatch_set_resume(dispatch_resume_fn fn);

/* Registers a plugin's action table; a duplicate name is an error that
 * names both plugins. */
int dispatch_register(struct sm_plugin *p, const sm_action *actions);
void dispatch_clear(void);
/* Answers with 1005 every command a plugin deferred and has not answered
 * (the plugin is being unloaded; call after its fini and before
 * dispatch_remove_owner, while the contexts still name its actions). */
void dispatch_abandon_owner(struct sm_plugin *p);
/* Removes every action of a plugin (its init failed, or it is unloaded). */
void dispatch_remove_owner(struct sm_plugin *p);

/* Runs one authenticated, decrypted command; bytes is its size as
 * received, charged to limits.bytes_per_second. */
void dispatch_command(struct session *s, const char *action, const char *nonce,
                      const json_t *payload, size_t bytes);

/* The JSON text of an error payload (PROTOCOL.md 6): code, message,
 * command, then extra's other keys. malloc'd, or NULL when out of memory. */
char *dispatch_error_text(const char *command, int code, const char *message,
                          const json_t *extra);

/* Sends an error reply ({code, message, command} plus extra's fields). */
int dispatch_send_error(struct session *s, const char *reply_to, const char *command,
                        int code, const char *message, const json_t *extra);

/* Host services on a context. */
int dispatch_reply(sm_ctx *ctx, const char *action, const json_t *payload);
int dispatch_reply_error(sm_ctx *ctx, int code, const char *message, const json_t *extra);
int dispatch_defer(sm_ctx *ctx);

#endif
