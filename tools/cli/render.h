/* Everything the CLI prints. Batch mode: one JSON object per line on
 * stdout, {"kind":"reply"|"error"|"event"|"local", ...}, flushed at once.
 * Interactive mode: one readable line per message on stdout, with the
 * control characters of remote text neutralised (a peer must not be able
 * to drive the terminal). Loud warnings go to stderr in both modes. */
#ifndef SM_CLI_RENDER_H
#define SM_CLI_RENDER_H

#include <jansson.h>

#include "sm_client.h"

void render_init(int batch);

/* fn(ctx) is called before each piece of output until replaced (NULL:
 * none): the terminal code erases the line being edited there. */
void render_on_output(void (*fn)(void *ctx), void *ctx);

/* The reply (response or error) to a slash command. extra (may be NULL):
 * members added to the batch object, e.g. {"sent": {...}}. */
void render_reply(const char *command, const sm_message *m, const json_t *extra);

/* A reply shown as it came: batch mode as render_reply, interactive mode
 * the action and the payload as indented JSON (errors as code and text). */
void render_json_reply(const char *command, const sm_message *m);

/* A server event; e2e (may be NULL) is the private message's end-to-end
 * verdict (privmsg.h). */
void render_event(const sm_message *m, const json_t *e2e);

/* A note from the CLI itself. level: "info", "warning" or "error"; what: a
 * short machine-readable tag; fields (may be NULL): members added to the
 * batch object. */
void render_local(const char *level, const char *what, const json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A multi-line warning that must not be missed (changed keys): a banner
 * on stderr in both modes, plus a "local" error line in batch mode. */
void render_loud(const char *what, const json_t *fields, const char *const *lines, size_t n);

/* Plain text for /help and similar (interactive: as is; batch: a local
 * info line). */
void render_text(const char *what, const char *text);

#endif
