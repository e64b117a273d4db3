/* Cryptographic primitives shared by the server core and the client library.
 * Thin, checked wrappers over OpenSSL 3 so that no other module touches
 * EVP objects directly. Every function returns 0 on success and -1 on
 * failure; out-parameters are written only on success. */
#ifndef SM_CORE_CRYPTO_H
#define SM_CORE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

typedef struct evp_pkey_st EVP_PKEY;

#define CRYPTO_KEY_LEN 32   /* AES-256 and HMAC-SHA256 keys */
#define CRYPTO_MAC_LEN 32   /* HMAC-SHA256 output */
#define CRYPTO_GCM_IV_LEN 12
#define CRYPTO_GCM_TAG_LEN 16
#define CRYPTO_CBC_IV_LEN 16
#define CRYPTO_FINGERPRINT_LEN (7 + 64 + 1) /* "sha256:" + hex + NUL */

/* Base64, RFC 4648 standard alphabet with padding. encode writes a
 * NUL-terminated malloc'd string; decode is strict (length a multiple of 4,
 * correct padding, no whitespace) and writes a malloc'd buffer. The caller
 * frees both. */
int crypto_b64_encode(const uint8_t *in, size_t len, char **out, size_t *out_len);
int crypto_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);

int crypto_random(uint8_t *buf, size_t len);
/* Random bytes that go out in the clear (IVs, WebSocket masking keys): the
 * same DRBG's output, taken from a per-thread block of it drawn 4 KiB at a
 * time, so they stay unpredictable but cost one RAND_bytes call per few
 * hundred. Never for keys, nonces of the handshake or anything secret:
 * those use crypto_random, which leaves no copy behind. */
int crypto_random_public(uint8_t *buf, size_t len);

/* Constant-time equality: 1 when equal, 0 otherwise. */
int crypto_memeq(const void *a, const void *b, size_t len);

int crypto_hkdf_sha256(const uint8_t *ikm, size_t ikm_len,
                       const uint8_t *salt, size_t salt_len,
                       const uint8_t *info, size_t info_len,
                       uint8_t *out, size_t out_len);

/* HMAC-SHA256 over the concatenation of the given parts. */
int crypto_hmac_sha256(const uint8_t key[CRYPTO_KEY_LEN],
                       const uint8_t *const parts[], const size_t part_lens[],
                       size_t nparts, uint8_t out[CRYPTO_MAC_LEN]);

/* AES-256-GCM. encrypt writes ct (same length as pt) and a 16-byte tag.
 * decrypt requires tag_len == 16 exactly (OpenSSL would accept a truncated
 * tag otherwise) and fails on any authentication failure. */
int crypto_gcm_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_GCM_IV_LEN],
                       const uint8_t *aad, size_t aad_len,
                       const uint8_t *pt, size_t pt_len,
                       uint8_t *ct, uint8_t tag[CRYPTO_GCM_TAG_LEN]);
int crypto_gcm_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_GCM_IV_LEN],
                       const uint8_t *aad, size_t aad_len,
                       const uint8_t *ct, size_t ct_len,
                       const uint8_t *tag, size_t tag_len,
                       uint8_t *pt);

/* AES-256-CBC with PKCS#7 padding. ct must have room for pt_len + 16;
 * pt must have room for ct_len. */
int crypto_cbc_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_CBC_IV_LEN],
                       const uint8_t *pt, size_t pt_len, uint8_t *ct, size_t *ct_len);
int crypto_cbc_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_CBC_IV_LEN],
                       const uint8_t *ct, size_t ct_len, uint8_t *pt, size_t *pt_len);

/* The RSA sizes the server accepts for its own key, loaded or generated.
 * Larger keys cost every handshake a slower private-key operation for no
 * gain, and nothing in the protocol needs them. */
#define CRYPTO_RSA_MIN_BITS 2048
#define CRYPTO_RSA_MAX_BITS 8192

/* RSA keys. load_or_generate reads a PEM private key from path, or when the
 * file does not exist generates an RSA key of `bits` and writes it with
 * mode 0600 (created with O_EXCL, parent directory created 0700 if missing).
 * An existing file that is group/world readable is refused, and so is a
 * key outside CRYPTO_RSA_MIN_BITS..CRYPTO_RSA_MAX_BITS (loaded or asked
 * for), with a log line naming the file and the size. */
int crypto_rsa_load_or_generate(const char *path, int bits, EVP_PKEY **out);
int crypto_rsa_generate(int bits, EVP_PKEY **out);
/* PEM SubjectPublicKeyInfo of the key, malloc'd, NUL-terminated. */
int crypto_pubkey_pem(EVP_PKEY *key, char **out);
/* "sha256:<lowercase hex of SHA-256 over DER SubjectPublicKeyInfo>". */
int crypto_fingerprint(EVP_PKEY *key, char out[CRYPTO_FINGERPRINT_LEN]);
/* Parses a PEM public key (SubjectPublicKeyInfo). */
int crypto_pubkey_from_pem(const char *pem, size_t len, EVP_PKEY **out);
/* RSA-OAEP, SHA-256 and MGF1-SHA-256, no label. decrypt is safe to call
 * from several threads at once on the same key. out has room for out_cap
 * bytes and nothing more is written there: a ciphertext (encrypt: the
 * modulus size) or a plaintext (decrypt) that does not fit fails; OpenSSL
 * 3 also fails a decryption into less than the modulus size. *out_len
 * receives the length written. */
int crypto_rsa_oaep_encrypt(EVP_PKEY *pub, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len);
int crypto_rsa_oaep_decrypt(EVP_PKEY *priv, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len);
size_t crypto_pkey_size(EVP_PKEY *key);
void crypto_pkey_free(EVP_PKEY *key);

/* Overwrites memory in a way the compiler may not remove. */
void crypto_wipe(void *p, size_t len);
/* Frees the calling thread's cipher and MAC contexts now rather than when
 * it ends (they are made again on next use): for the main thread, whose
 * end runs no thread-specific destructor, before exit. */
void crypto_thread_release(void);

#endif
