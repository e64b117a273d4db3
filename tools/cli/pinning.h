/* Trust on first use, as SSH does: the server's key per host:port in
 * <config>/known_servers, and each correspondent's e2e key per server in
 * <config>/contacts/<server>/<username>.pem (PROTOCOL.md 3 and Appendix A). */
#ifndef SM_CLI_PINNING_H
#define SM_CLI_PINNING_H

#include <stddef.h>

#include "crypto.h"

typedef enum pin_result {
    PIN_MATCH,      /* the pinned fingerprint */
    PIN_NEW,        /* first use: recorded */
    PIN_REPLACED,   /* different, replaced on request (--accept-new-key) */
    PIN_CHANGED     /* different: refused, nothing written */
} pin_result;

/* The known_servers key of a ws:// or wss:// URL: "host:port" with the
 * host lower-cased (IPv6 literals keep their brackets) and the default
 * port (80 / 443) filled in; dir receives the same as a file name. */
int pinning_server_id(const char *url, char *id, size_t id_len, char *dir, size_t dir_len);

/* Checks fingerprint ("sha256:<hex>") against the pin of server_id in
 * <config_dir>/known_servers, recording it on first use and replacing it
 * when accept_new is set. *old receives the pinned fingerprint for
 * PIN_REPLACED and PIN_CHANGED. Returns 0 with *result set, or -1 when the
 * file cannot be read or written. */
int pinning_check_server(const char *config_dir, const char *server_id, const char *fingerprint,
                         int accept_new, pin_result *result, char old[CRYPTO_FINGERPRINT_LEN]);

/* The pinned key of a correspondent (user is lower-cased here): 0 with
 * *pem (malloc'd PEM) set, 1 when none is pinned, -1 on error. */
int pinning_contact_load(const char *config_dir, const char *server_dir, const char *user,
                         char **pem);

/* Pins (or deliberately re-pins) a correspondent's PEM public key. */
int pinning_contact_save(const char *config_dir, const char *server_dir, const char *user,
                         const char *pem);

#endif
