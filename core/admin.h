/* Admin commands: one registry, reached two ways.
 *
 * Why one registry: every admin operation (disable a user, delete a room,
 * kick a session, back up) is written once, as a named handler taking a
 * JSON argument object and answering a JSON result or an error, in the
 * module that owns the data (Redis's command table: the plugins register
 * theirs through sm_host.register_admin_commands, the core registers its
 * own here). The admin socket (admin_socket.c) feeds them requests from a
 * running server's loop thread; safemessenger-admin on a stopped server
 * starts the core in its own process (no listener) and runs the very same
 * handlers on the database directly. So the two modes cannot drift apart.
 *
 * A request is {"command": "users.disable", "args": {...}}; the reply is
 * {"ok": true, "result": {...}} or {"ok": false, "status": "not_found",
 * "error": "no such user"}. Loop thread only. */
#ifndef SM_CORE_ADMIN_H
#define SM_CORE_ADMIN_H

#include <jansson.h>

#include "safemessenger/plugin.h"

struct sm_plugin;

/* Receives the reply (borrowed for the call). */
typedef void (*admin_done_fn)(const json_t *reply, void *arg);

/* Registers a table of commands; owner NULL is the core. All or none:
 * SM_EINVAL for a row without name or handler, SM_EEXIST for a name
 * taken, SM_ENOMEM. */
int admin_register(struct sm_plugin *owner, const sm_admin_command *commands);
/* The core's own commands (admin_core.c): sessions.list, sessions.kick,
 * backup, commands. */
int admin_register_core(void);
/* {name: {"summary", "by"}} of every command (a new reference, NULL when
 * out of memory). */
json_t *admin_command_list(void);
/* Ends what a command left running (a backup), answering it with an
 * error: at shutdown, before the database closes. */
void admin_abort(void);
/* Forgets every command (core shutdown). */
void admin_clear(void);
/* Removes a plugin's commands (it is being unloaded) and answers its
 * deferred ones with an error. */
void admin_remove_owner(struct sm_plugin *owner);

/* Runs one request. done is called exactly once, possibly before this
 * returns; returns the pending context when the handler deferred (NULL
 * when done has run already), so the requester can admin_detach it if it
 * goes away first. */
sm_admin_ctx *admin_run(const json_t *request, admin_done_fn done, void *arg);
/* The requester is gone: the pending reply will be dropped. */
void admin_detach(sm_admin_ctx *ctx);

/* The sm_host entries. */
int admin_reply(sm_admin_ctx *ctx, const json_t *result);
int admin_error(sm_admin_ctx *ctx, int status, const char *message);
int admin_defer(sm_admin_ctx *ctx);

/* Overwrites the request's args.password in place (users passwd) before
 * the request is freed: jansson frees strings without wiping them. */
void admin_scrub(json_t *request);

/* "not_found", "invalid", ... for an sm_status (the reply's "status"). */
const char *admin_status_name(int status);

#endif
