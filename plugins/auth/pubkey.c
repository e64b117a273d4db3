#include "pubkey.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A public key is never encrypted: refuse instead of letting OpenSSL's
 * default callback prompt on a terminal for a block with Proc-Type headers. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int refuse(char *why, size_t why_len, const char *reason)
{
    snprintf(why, why_len, "%s", reason);
    ERR_clear_error();
    return -1;
}

int pubkey_check(const char *pem, size_t len, char *why, size_t why_len)
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----";
    static const char *not_spki =
        "field 'public_key' must be a PEM public key (-----BEGIN PUBLIC KEY-----)";
    if (len > INT_MAX || memchr(pem, '\0', len))
        return refuse(why, why_len, not_spki);
    size_t start = 0;
    while (start < len && is_space(pem[start]))
        start++;
    /* PEM readers skip text before the header; we store the key for other
     * clients to parse, so it must be nothing but the key. */
    if (len - start < sizeof begin - 1 || memcmp(pem + start, begin, sizeof begin - 1) != 0)
        return refuse(why, why_len, not_spki);

    BIO *bio = BIO_new_mem_buf(pem + start, (int)(len - start));
    if (!bio)
        return refuse(why, why_len, "field 'public_key' could not be checked");
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    int rc = -1;
    if (!key) {
        refuse(why, why_len, "field 'public_key' is not a readable PEM public key");
        goto out;
    }
    char *rest = NULL;
    long rest_len = BIO_get_mem_data(bio, &rest);
    for (long i = 0; i < rest_len; i++) {
        if (!is_space(rest[i])) {
            refuse(why, why_len, "field 'public_key' must hold exactly one PEM public key");
            goto out;
        }
    }
    int type = EVP_PKEY_get_base_id(key);
    if (type == EVP_PKEY_RSA) {
        if (EVP_PKEY_get_bits(key) < PUBKEY_MIN_RSA_BITS) {
            refuse(why, why_len, "field 'public_key' must be an RSA key of at least 2048 bits");
            goto out;
        }
    } else if (type != EVP_PKEY_ED25519) {
        refuse(why, why_len, "field 'public_key' must be an RSA (>= 2048 bits) or Ed25519 key");
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}
