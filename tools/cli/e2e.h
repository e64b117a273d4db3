/* End-to-end private messages, PROTOCOL.md Appendix A, and the user's own
 * key pair. Pure functions over OpenSSL 3: no network, no printing.
 * Every function returns 0 on success and -1 on failure unless it says
 * otherwise; out-parameters are written only on success. */
#ifndef SM_CLI_E2E_H
#define SM_CLI_E2E_H

#include <stddef.h>

typedef struct evp_pkey_st EVP_PKEY;

#define E2E_MIN_RSA_BITS 2048
#define E2E_NEW_KEY_BITS 3072
#define E2E_ID_BYTES 16
#define E2E_KEY_PEM_MAX 65536

/* The domain separation prefix of Appendix A. */
#define E2E_PREFIX "safemessenger e2e v1\n"

/* 0 when key is an RSA key of at least 2048 bits (the only kind Appendix A
 * encrypts to and verifies with); -1 with a reason in why otherwise. */
int e2e_key_usable(EVP_PKEY *key, char *why, size_t why_len);

/* A fresh RSA key pair of `bits` bits. */
int e2e_key_generate(int bits, EVP_PKEY **out);

/* Loads a PEM private key (never prompting for a passphrase). Returns 0,
 * 1 when the file does not exist, -1 on error with a reason in why: a file
 * readable by group or others is refused, as ssh does. */
int e2e_key_load(const char *path, EVP_PKEY **out, char *why, size_t why_len);

/* Writes the private key (PKCS#8 PEM, mode 0600) to priv_path, refusing to
 * replace an existing file, and its public PEM to pub_path (mode 0600). */
int e2e_key_save(const char *priv_path, const char *pub_path, EVP_PKEY *key);

/* Parses a PEM SubjectPublicKeyInfo of any type (check it with
 * e2e_key_usable before use). */
int e2e_pubkey_parse(const char *pem, EVP_PKEY **out);

/* "sha256:<hex of SHA-256 of the DER SubjectPublicKeyInfo>" of a PEM
 * public key; out has room for CRYPTO_FINGERPRINT_LEN bytes. */
int e2e_pem_fingerprint(const char *pem, char *out, size_t out_len);

/* RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) over
 * E2E_PREFIX + sender + "\n" + recipient + "\n" + content: *sig is the
 * malloc'd base64 signature. */
int e2e_sign(EVP_PKEY *priv, const char *sender, const char *recipient, const char *content,
             char **sig);
/* 0 when sig (base64) is a valid signature of that text by pub, -1 when
 * not (or pub is not a usable RSA key). */
int e2e_verify(EVP_PKEY *pub, const char *sender, const char *recipient, const char *content,
               const char *sig);

/* Encrypts text for recipient_pub: *content receives the compact JSON
 * {"v":1,"ek":...,"iv":...,"ct":...} and *id the base64 of the 16 random
 * bytes of the plaintext's "id" (both malloc'd). text must be UTF-8. */
int e2e_encrypt(EVP_PKEY *recipient_pub, const char *sender, const char *recipient,
                const char *text, double sent_at, char **content, char **id);

/* The plaintext of a decrypted message. */
typedef struct e2e_plain {
    char *text;
    size_t text_len;    /* may hold NULs: the text is JSON-decoded */
    double sent_at;
    char *id;           /* base64 of 16 bytes, checked */
} e2e_plain;

/* Decrypts content sent by sender to recipient with our private key and
 * checks the plaintext's shape. -1 whatever failed (wrong key, tampered,
 * malformed). */
int e2e_decrypt(EVP_PKEY *priv, const char *sender, const char *recipient, const char *content,
                e2e_plain *out);
void e2e_plain_clear(e2e_plain *p);

#endif
