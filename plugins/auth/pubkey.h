/* The check of a registered public key (PROTOCOL.md section 7 and
 * Appendix A): one PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----"),
 * RSA of at least 2048 bits or Ed25519, nothing but whitespace around it. */
#ifndef AUTH_PUBKEY_H
#define AUTH_PUBKEY_H

#include <stddef.h>

#define PUBKEY_MIN_RSA_BITS 2048

/* Returns 0 when `pem` (len bytes, may contain anything) is an acceptable
 * key; otherwise -1 and a short reason for the client in why (NUL
 * terminated, never the key's contents). Leaves OpenSSL's error queue
 * empty. */
int pubkey_check(const char *pem, size_t len, char *why, size_t why_len);

#endif
