/* The fixed session of the envelope target and its seed generator: both
 * must derive the same keys, or the seeds stop verifying. */
#ifndef SM_FUZZ_KEYS_H
#define SM_FUZZ_KEYS_H

#include <stdint.h>

#include "envelope.h"

static inline int fuzz_keys_derive(envelope_cipher cipher, envelope_dir *c2s, envelope_dir *s2c)
{
    uint8_t k[CRYPTO_KEY_LEN], server_nonce[ENVELOPE_NONCE_LEN], client_nonce[ENVELOPE_NONCE_LEN];
    for (unsigned i = 0; i < CRYPTO_KEY_LEN; i++)
        k[i] = (uint8_t)i;
    for (unsigned i = 0; i < ENVELOPE_NONCE_LEN; i++) {
        server_nonce[i] = (uint8_t)(0x40 + i);
        client_nonce[i] = (uint8_t)(0x80 + i);
    }
    return envelope_derive(k, server_nonce, client_nonce, cipher, c2s, s2c);
}

#endif
