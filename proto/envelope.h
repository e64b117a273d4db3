/* The message envelope of PROTOCOL.md sections 2-4: parsing, sealing
 * (encrypt + sign + number) and opening (verify signature, check nonce,
 * decrypt). Used by the server for both directions' state and by the client
 * library, so both sides check exactly the same rules. */
#ifndef SM_CORE_ENVELOPE_H
#define SM_CORE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "crypto.h"

typedef enum {
    ENVELOPE_CIPHER_NONE = 0,
    ENVELOPE_CIPHER_AES256_GCM,         /* "AES-256-GCM" */
    ENVELOPE_CIPHER_AES256_CBC_HMAC     /* "AES-256-CBC-HMAC-SHA256" */
} envelope_cipher;

/* Result of envelope_parse / envelope_open; values are the protocol's
 * error codes so callers can reply with them directly. */
typedef enum {
    ENVELOPE_OK = 0,
    ENVELOPE_MALFORMED = 1004,  /* not an envelope, or plaintext not an object */
    ENVELOPE_NONCE = 1006,      /* replayed, skipped or ill-formed nonce */
    ENVELOPE_INTEGRITY = 1007,  /* bad signature or failed decryption */
    ENVELOPE_INTERNAL = 1005    /* allocation or library failure */
} envelope_status;

#define ENVELOPE_HKDF_INFO "safemessenger v1 session keys"
#define ENVELOPE_NONCE_LEN 32        /* server_nonce and client_nonce */
#define ENVELOPE_NONCE_MAX_DIGITS 20 /* 2^64-1 */

/* One direction of an established session. `nonce` is the last nonce
 * sent (sealing) or accepted (opening); 0 before the first message. */
typedef struct envelope_dir {
    envelope_cipher cipher;
    uint8_t enc_key[CRYPTO_KEY_LEN];
    uint8_t mac_key[CRYPTO_KEY_LEN];
    uint64_t nonce;
} envelope_dir;

/* An envelope read off the wire. All pointers borrow from `root`; the
 * envelope owns `root` and envelope_in_clear releases it. reply_to is NULL
 * when absent. payload is an object (handshake) or a string (encrypted). */
typedef struct envelope_in {
    json_t *root;
    const char *type;
    const char *action;
    const char *nonce;
    const char *signature;
    const char *reply_to;
    json_t *payload;
} envelope_in;

const char *envelope_cipher_name(envelope_cipher c);
/* Returns ENVELOPE_CIPHER_NONE for an unknown name. */
envelope_cipher envelope_cipher_from_name(const char *name);

/* HKDF split of PROTOCOL.md 3.3: fills both directions' keys and resets
 * their nonces to 0. `k` is the 32-byte session key. */
int envelope_derive(const uint8_t k[CRYPTO_KEY_LEN],
                    const uint8_t server_nonce[ENVELOPE_NONCE_LEN],
                    const uint8_t client_nonce[ENVELOPE_NONCE_LEN],
                    envelope_cipher cipher,
                    envelope_dir *c2s, envelope_dir *s2c);

/* Parses one text message. Rejects what section 1 calls unreadable:
 * invalid JSON, not an object, duplicate keys, non-finite numbers, missing
 * or non-string type/action/nonce/signature, a present non-string reply_to.
 * A missing payload leaves payload NULL (envelope_open then gives
 * ENVELOPE_INTEGRITY). Returns ENVELOPE_OK or ENVELOPE_MALFORMED. */
envelope_status envelope_parse(const char *text, size_t len, envelope_in *out);
void envelope_in_clear(envelope_in *in);

/* Verifies the signature (constant time), then the nonce (exactly
 * d->nonce + 1, canonical decimal), then decrypts. On success advances
 * d->nonce and stores the decrypted JSON object in *payload (caller owns).
 * A payload that is not a string is ENVELOPE_INTEGRITY. The decrypted
 * plaintext must be a JSON object without duplicate keys, else
 * ENVELOPE_MALFORMED (the nonce has still advanced). */
envelope_status envelope_open(envelope_dir *d, const envelope_in *in, json_t **payload);

/* envelope_open's checks on fields already taken out of the text (for a
 * reader that scans instead of parsing JSON): signature and payload
 * (base64) are given with their lengths and need no NUL. On success the
 * nonce has advanced and *plaintext holds the decrypted bytes (malloc'd,
 * not NUL-terminated, not checked to be JSON; the caller wipes and frees
 * them). */
envelope_status envelope_open_text(envelope_dir *d, const char *type, const char *action,
                                   const char *nonce, const char *reply_to, const char *signature,
                                   size_t signature_len, const char *b64, size_t b64_len,
                                   uint8_t **plaintext, size_t *plaintext_len);

/* Seals `plaintext` (a serialised JSON object) as the next message of
 * direction d: increments d->nonce, draws a fresh IV, encrypts, signs and
 * writes the complete envelope JSON text to *out (malloc'd, NUL-terminated,
 * caller frees). reply_to NULL means absent. */
int envelope_seal(envelope_dir *d, const char *type, const char *action,
                  const char *reply_to, const char *plaintext, size_t plaintext_len,
                  char **out, size_t *out_len);

/* An unencrypted handshake-phase envelope: nonce "0", signature "".
 * payload is borrowed. */
int envelope_plain(const char *type, const char *action, const json_t *payload,
                   const char *reply_to, char **out, size_t *out_len);

/* The canonical header H of section 4, written into buf. Returns its length
 * or -1 if buf is too small. */
long envelope_header(const char *type, const char *action, const char *nonce,
                     const char *reply_to, char *buf, size_t buf_len);

/* Strict JSON parse used for every incoming document: duplicate keys
 * rejected, the whole input must be one value. Returns NULL on error. */
json_t *envelope_json_loads(const char *text, size_t len);

#endif
