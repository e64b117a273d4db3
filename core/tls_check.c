#include "tls_check.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* The reason OpenSSL queued, or a fallback; clears the queue. */
static const char *openssl_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0 || !ERR_reason_error_string(e))
        snprintf(buf, len, "%s", fallback);
    else
        snprintf(buf, len, "%s", ERR_reason_error_string(e));
    ERR_clear_error();
    return buf;
}

/* A password callback that refuses: an encrypted key cannot be used by an
 * unattended server, and OpenSSL must not prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

int tls_check_pair(const char *cert_file, const char *key_file, char *err, size_t err_len)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    char why[256];
    int rc = -1;
    ERR_clear_error();
    FILE *f = fopen(cert_file, "r");
    if (!f) {
        snprintf(err, err_len, "server.tls.cert: cannot open %s: %s", cert_file, strerror(errno));
        goto fail;
    }
    cert = PEM_read_X509(f, NULL, no_password, NULL);
    fclose(f);
    if (!cert) {
        snprintf(err, err_len, "server.tls.cert: %s holds no PEM certificate (%s)", cert_file,
                 openssl_reason(why, sizeof why, "unreadable"));
        goto fail;
    }
    f = fopen(key_file, "r");
    if (!f) {
        snprintf(err, err_len, "server.tls.key: cannot open %s: %s", key_file, strerror(errno));
        goto fail;
    }
    key = PEM_read_PrivateKey(f, NULL, no_password, NULL);
    fclose(f);
    if (!key) {
        snprintf(err, err_len,
                 "server.tls.key: %s holds no usable PEM private key (%s; an encrypted key "
                 "is not supported)",
                 key_file, openssl_reason(why, sizeof why, "unreadable"));
        goto fail;
    }
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        snprintf(err, err_len,
                 "server.tls: the key %s does not match the certificate %s", key_file,
                 cert_file);
        goto fail;
    }
    rc = 0;
fail:
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}
