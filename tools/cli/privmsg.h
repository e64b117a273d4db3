/* Private messages end to end (PROTOCOL.md Appendix A) over the
 * connection: the send and receive pipelines, with each correspondent's
 * key pinned on first use (pinning.h) and replays refused (seen.h). */
#ifndef SM_CLI_PRIVMSG_H
#define SM_CLI_PRIVMSG_H

#include <jansson.h>

#include "cli.h"
#include "crypto.h"

/* /msg USER TEXT: encrypts for USER's registered key (plain text when USER
 * has none), signs with ours when we have one, sends private_message and
 * renders the reply. Refuses (nothing sent) when USER's key differs from
 * the pinned one or disappeared. Returns 0 when the server accepted it. */
int privmsg_send(cli_app *app, const char *command, const char *user, const char *text);

/* The end-to-end verdict on a received private message (an event payload
 * or an unread_messages item): a new object
 *   {"verified", "decrypted", "encrypted", "status", "text"?, "sent_at"?,
 *    "id"?, "reason"?, "sender_key"?}
 * status: "ok", "unsigned", "bad_signature" (no key to check with, or a
 * wrong signature), "key_changed" (valid only under a key other than the
 * pinned one), "replay" (text withheld) or "undecryptable". NULL only when
 * out of memory. */
json_t *privmsg_receive(cli_app *app, const json_t *msg);

/* /key USER (trust 0): shows USER's registered key, its fingerprint and
 * how it compares with the pin (pinning it on first use). /trust USER
 * (trust 1): pins USER's current key, replacing an old pin on purpose. */
int privmsg_key(cli_app *app, const char *command, const char *user, int trust);

/* After login: warns when the key the server holds for us is not the
 * key of our local key file. */
void privmsg_check_own_key(cli_app *app);

/* The fingerprint of the key the server holds for user: 0 with fp set, 1
 * when the user has none, -1 when that cannot be known (reported). */
int privmsg_registered_fingerprint(cli_app *app, const char *user, char fp[CRYPTO_FINGERPRINT_LEN]);

#endif
