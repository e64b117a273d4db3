/* Exporting and importing the user's private key. scrypt (N = 2^14, r = 8,
 * p = 1: 16 MiB, within OpenSSL's default decoding limit of 32 MiB) makes
 * guessing the passphrase of a stolen file costly, which the default
 * PBKDF2 with 2048 iterations would not. */
#include "keyio.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "account.h"
#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "privmsg.h"
#include "render.h"
#include "tty.h"

#define PASSPHRASE_MIN 8
#define PASSPHRASE_MAX 1024
#define EXPORT_FILE_MAX 65536
#define SCRYPT_N 16384
#define SCRYPT_R 8
#define SCRYPT_P 1
#define SALT_BYTES 16

static int fail(cli_app *app, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(cli_app *app, const char *what, const char *fmt, ...)
{
    char msg[CLI_PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    render_local("error", what, NULL, "%s", n < 0 ? "failed" : msg);
    cli_set_status(app, CLI_EXIT_FAILED);
    return -1;
}

static int get_passphrase(cli_app *app, int confirm, char *buf, size_t len)
{
    const char *env = getenv("SM_KEY_PASSPHRASE");
    if (env) {
        if (strlen(env) >= len)
            return fail(app, "bad_passphrase", "SM_KEY_PASSPHRASE is too long");
        memcpy(buf, env, strlen(env) + 1);
    } else if (app->batch) {
        return fail(app, "no_passphrase", "batch mode reads the key passphrase from $SM_KEY_PASSPHRASE");
    } else {
        if (tty_read_password("Key passphrase: ", buf, len) != 0)
            return fail(app, "no_passphrase", "no passphrase read");
        if (confirm) {
            char again[PASSPHRASE_MAX + 2];
            int same = tty_read_password("Repeat it: ", again, sizeof again) == 0 && strcmp(again, buf) == 0;
            crypto_wipe(again, sizeof again);
            if (!same) {
                crypto_wipe(buf, len);
                return fail(app, "passphrase_mismatch", "the passphrases differ");
            }
        }
    }
    if (confirm && strlen(buf) < PASSPHRASE_MIN) {
        crypto_wipe(buf, len);
        return fail(app, "bad_passphrase", "the passphrase must be at least 8 bytes long");
    }
    return 0;
}

int keyio_export(cli_app *app, const char *path)
{
    if (!app->key)
        return fail(app, "no_private_key", "no private key loaded: /login first");
    char pass[PASSPHRASE_MAX + 2] = "";
    if (get_passphrase(app, 1, pass, sizeof pass) != 0)
        return -1;
    int rc = -1;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(app->key);
    unsigned char salt[SALT_BYTES];
    X509_ALGOR *alg = crypto_random(salt, sizeof salt) == 0
        ? PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), salt, (int)sizeof salt, NULL, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        : NULL;
    X509_SIG *sig = p8 && alg ? PKCS8_set0_pbe(pass, (int)strlen(pass), p8, alg) : NULL;
    if (sig)
        alg = NULL;   /* owned by sig now */
    crypto_wipe(pass, sizeof pass);
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (sig && mem && PEM_write_bio_PKCS8(mem, sig) == 1)
        n = BIO_get_mem_data(mem, &data);
    if (n <= 0) {
        render_local("error", "export_failed", NULL, "cannot encrypt the key");
    } else {
        int w = files_write_new(path, data, (size_t)n);
        if (w == 1)
            render_local("error", "export_failed", NULL, "%s exists: not replaced", path);
        else if (w != 0)
            render_local("error", "export_failed", NULL, "cannot write %s", path);
        else
            rc = 0;
    }
    BIO_free(mem);
    X509_SIG_free(sig);
    X509_ALGOR_free(alg);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (rc != 0) {
        cli_set_status(app, CLI_EXIT_FAILED);
        return -1;
    }
    char fp[CRYPTO_FINGERPRINT_LEN] = "";
    (void)crypto_fingerprint(app->key, fp);
    json_t *f = json_pack("{s:s,s:s}", "path", path, "fingerprint", fp);
    render_local("info", "key_exported", f,
                 "private key of %s (fingerprint %s) written to %s, encrypted with the passphrase",
                 app->username, fp, path);
    json_decref(f);
    return 0;
}

/* Decrypts the file; -1 reported. */
static int read_key(cli_app *app, const char *path, EVP_PKEY **out)
{
    char *data = NULL;
    size_t len = 0;
    int r = files_read(path, EXPORT_FILE_MAX, &data, &len);
    if (r != 0)
        return fail(app, "import_failed", "cannot read %s", path);
    char pass[PASSPHRASE_MAX + 2] = "";
    if (get_passphrase(app, 0, pass, sizeof pass) != 0) {
        free(data);
        return -1;
    }
    BIO *mem = BIO_new_mem_buf(data, (int)len);
    EVP_PKEY *key = mem ? PEM_read_bio_PrivateKey(mem, NULL, NULL, pass) : NULL;
    crypto_wipe(pass, sizeof pass);
    BIO_free(mem);
    crypto_wipe(data, len);
    free(data);
    if (!key)
        return fail(app, "import_failed", "%s: wrong passphrase, or not an exported key", path);
    char why[256];
    if (e2e_key_usable(key, why, sizeof why) != 0) {
        EVP_PKEY_free(key);
        return fail(app, "import_failed", "the key is unusable: %s", why);
    }
    *out = key;
    return 0;
}

int keyio_import(cli_app *app, const char *path)
{
    if (!app->username[0])
        return fail(app, "not_logged_in", "/login first: the key is installed for that user");
    EVP_PKEY *key = NULL;
    if (read_key(app, path, &key) != 0)
        return -1;
    char fp[CRYPTO_FINGERPRINT_LEN], server_fp[CRYPTO_FINGERPRINT_LEN] = "";
    int rc = -1;
    int reg = privmsg_registered_fingerprint(app, app->username, server_fp);
    if (crypto_fingerprint(key, fp) != 0 || reg < 0) {
        render_local("error", "import_failed", NULL, "cannot compare the key with the server's");
        goto out;
    }
    /* The protocol has no way to change a registered key, so a key the
     * server does not hold for us could neither decrypt nor sign anything
     * the others accept. */
    if (reg == 1 || strcmp(fp, server_fp) != 0) {
        json_t *f = json_pack("{s:s,s:s?}", "fingerprint", fp, "registered_fingerprint",
                              reg == 1 ? NULL : server_fp);
        render_local("error", "key_mismatch", f,
                     "refused: the key in %s (%s) is not the key the server holds for %s (%s)", path, fp,
                     app->username, reg == 1 ? "none" : server_fp);
        json_decref(f);
        goto out;
    }
    char priv[CLI_PATH_MAX], pub[CLI_PATH_MAX], why[CLI_PATH_MAX + 128];
    if (account_key_paths(app, app->username, priv, sizeof priv, pub, sizeof pub) != 0
        || files_mkdirs_parent(priv) != 0) {
        render_local("error", "key_dir", NULL, "cannot create the key directory under %s", app->config_dir);
        goto out;
    }
    EVP_PKEY *have = NULL;
    int r = e2e_key_load(priv, &have, why, sizeof why);
    char have_fp[CRYPTO_FINGERPRINT_LEN] = "";
    if (r == 0 && crypto_fingerprint(have, have_fp) == 0 && strcmp(have_fp, fp) == 0) {
        render_local("info", "key_imported", NULL, "%s already holds this key", priv);
    } else if (r != 1) {
        /* Never overwritten: it may be the only copy of another key. */
        render_local("error", "import_failed", NULL,
                     "%s already exists and holds another key: move it away first", priv);
        EVP_PKEY_free(have);
        goto out;
    } else if (e2e_key_save(priv, pub, key) != 0) {
        render_local("error", "import_failed", NULL, "cannot write %s", priv);
        goto out;
    } else {
        json_t *f = json_pack("{s:s,s:s}", "path", priv, "fingerprint", fp);
        render_local("info", "key_imported", f, "key %s installed in %s", fp, priv);
        json_decref(f);
    }
    EVP_PKEY_free(have);
    EVP_PKEY_free(app->key);
    app->key = key;
    key = NULL;
    rc = 0;
out:
    EVP_PKEY_free(key);
    if (rc != 0)
        cli_set_status(app, CLI_EXIT_FAILED);
    return rc;
}
