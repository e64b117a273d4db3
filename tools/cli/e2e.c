/* PROTOCOL.md Appendix A over OpenSSL 3 EVP. The session-level crypto
 * (base64, AES-GCM, RSA-OAEP, fingerprints) comes from proto/crypto.h; the
 * pieces only an end-to-end client needs (RSA-PSS, the user's key files)
 * are here. */
#include "e2e.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "files.h"

#define E2E_SALT_LEN 32
#define E2E_M_LEN 32
#define E2E_CONTENT_MAX (1024 * 1024)
#define E2E_ID_B64_LEN 24   /* base64 of 16 bytes, with "==" */

int e2e_key_usable(EVP_PKEY *key, char *why, size_t why_len)
{
    if (!key) {
        snprintf(why, why_len, "no key");
        return -1;
    }
    if (!EVP_PKEY_is_a(key, "RSA")) {
        snprintf(why, why_len, "not an RSA key (end-to-end messages need RSA >= %d bits)",
                 E2E_MIN_RSA_BITS);
        return -1;
    }
    int bits = EVP_PKEY_get_bits(key);
    if (bits < E2E_MIN_RSA_BITS) {
        snprintf(why, why_len, "RSA key of %d bits, at least %d required", bits, E2E_MIN_RSA_BITS);
        return -1;
    }
    return 0;
}

int e2e_key_generate(int bits, EVP_PKEY **out)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    int ok = ctx && EVP_PKEY_keygen_init(ctx) == 1
             && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) == 1
             && EVP_PKEY_keygen(ctx, &key) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) {
        EVP_PKEY_free(key);
        return -1;
    }
    *out = key;
    return 0;
}

/* Refuses instead of letting OpenSSL prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

int e2e_key_load(const char *path, EVP_PKEY **out, char *why, size_t why_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(why, why_len, "%s is readable by others (mode %03o): run chmod 600 on it", path,
                 (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        snprintf(why, why_len, "cannot read %s", path);
        return -1;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    ERR_clear_error();
    if (!key) {
        snprintf(why, why_len, "%s holds no readable unencrypted PEM private key", path);
        return -1;
    }
    *out = key;
    return 0;
}

/* The PEM text of a key (public or private) from a memory BIO. */
static int bio_text(BIO *bio, char **out, size_t *out_len)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || !data)
        return -1;
    char *s = malloc((size_t)len + 1);
    if (!s)
        return -1;
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    *out = s;
    *out_len = (size_t)len;
    return 0;
}

int e2e_key_save(const char *priv_path, const char *pub_path, EVP_PKEY *key)
{
    int rc = -1;
    char *priv = NULL, *pub = NULL;
    size_t priv_len = 0;
    /* A secure-memory BIO: its buffer is wiped when freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1
        || bio_text(bio, &priv, &priv_len) != 0)
        goto fail;
    if (crypto_pubkey_pem(key, &pub) != 0)
        goto fail;
    if (files_write_new(priv_path, priv, priv_len) != 0)
        goto fail;
    if (files_write(pub_path, pub, strlen(pub)) != 0)
        goto fail;
    rc = 0;
fail:
    if (priv) {
        crypto_wipe(priv, priv_len);
        free(priv);
    }
    free(pub);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}

int e2e_pubkey_parse(const char *pem, EVP_PKEY **out)
{
    size_t len = strlen(pem);
    if (len == 0 || len > E2E_KEY_PEM_MAX)
        return -1;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return -1;
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!key)
        return -1;
    *out = key;
    return 0;
}

int e2e_pem_fingerprint(const char *pem, char *out, size_t out_len)
{
    if (out_len < CRYPTO_FINGERPRINT_LEN)
        return -1;
    EVP_PKEY *key = NULL;
    if (e2e_pubkey_parse(pem, &key) != 0)
        return -1;
    char fp[CRYPTO_FINGERPRINT_LEN];
    int rc = crypto_fingerprint(key, fp);
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (rc != 0)
        return -1;
    memcpy(out, fp, sizeof fp);
    return 0;
}

/* E2E_PREFIX + sender + "\n" + recipient [+ "\n" + content]: the signed
 * text (content given) or the GCM AAD (content NULL). */
static int bound_text(const char *sender, const char *recipient, const char *content,
                      char **out, size_t *out_len)
{
    size_t p = strlen(E2E_PREFIX), s = strlen(sender), r = strlen(recipient);
    size_t c = content ? strlen(content) : 0;
    if (c > E2E_CONTENT_MAX || s > 1024 || r > 1024)
        return -1;
    size_t len = p + s + 1 + r + (content ? 1 + c : 0);
    char *buf = malloc(len + 1);
    if (!buf)
        return -1;
    size_t at = 0;
    memcpy(buf + at, E2E_PREFIX, p);
    at += p;
    memcpy(buf + at, sender, s);
    at += s;
    buf[at++] = '\n';
    memcpy(buf + at, recipient, r);
    at += r;
    if (content) {
        buf[at++] = '\n';
        memcpy(buf + at, content, c);
        at += c;
    }
    buf[at] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

/* A digest-sign or -verify context set up for Appendix A's RSA-PSS. */
static EVP_MD_CTX *pss_ctx(EVP_PKEY *key, int sign)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (!md)
        return NULL;
    int ok = sign ? EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key)
                  : EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key);
    /* A fixed salt length (not "auto") on verification too: a signature
     * with any other salt length is not an Appendix A signature. */
    if (ok != 1 || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
        || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1
        || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, E2E_SALT_LEN) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    return md;
}

int e2e_sign(EVP_PKEY *priv, const char *sender, const char *recipient, const char *content,
             char **sig)
{
    char why[128];
    if (e2e_key_usable(priv, why, sizeof why) != 0)
        return -1;
    int rc = -1;
    char *text = NULL;
    size_t text_len = 0;
    uint8_t *raw = NULL;
    EVP_MD_CTX *md = NULL;
    if (bound_text(sender, recipient, content, &text, &text_len) != 0)
        goto fail;
    if (!(md = pss_ctx(priv, 1)))
        goto fail;
    size_t raw_len = 0;
    if (EVP_DigestSign(md, NULL, &raw_len, (const unsigned char *)text, text_len) != 1)
        goto fail;
    if (!(raw = malloc(raw_len)))
        goto fail;
    if (EVP_DigestSign(md, raw, &raw_len, (const unsigned char *)text, text_len) != 1)
        goto fail;
    char *b64 = NULL;
    size_t b64_len = 0;
    if (crypto_b64_encode(raw, raw_len, &b64, &b64_len) != 0)
        goto fail;
    *sig = b64;
    rc = 0;
fail:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(raw);
    free(text);
    return rc;
}

int e2e_verify(EVP_PKEY *pub, const char *sender, const char *recipient, const char *content,
               const char *sig)
{
    char why[128];
    if (!sig || e2e_key_usable(pub, why, sizeof why) != 0)
        return -1;
    int rc = -1;
    char *text = NULL;
    size_t text_len = 0;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    EVP_MD_CTX *md = NULL;
    if (crypto_b64_decode(sig, strlen(sig), &raw, &raw_len) != 0)
        goto fail;
    /* A signature is exactly as long as the modulus. */
    if (raw_len != crypto_pkey_size(pub))
        goto fail;
    if (bound_text(sender, recipient, content, &text, &text_len) != 0)
        goto fail;
    if (!(md = pss_ctx(pub, 0)))
        goto fail;
    if (EVP_DigestVerify(md, raw, raw_len, (const unsigned char *)text, text_len) == 1)
        rc = 0;
fail:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(raw);
    free(text);
    return rc;
}

static int b64_field(json_t *obj, const char *name, const uint8_t *data, size_t len)
{
    char *b64 = NULL;
    size_t b64_len = 0;
    if (crypto_b64_encode(data, len, &b64, &b64_len) != 0)
        return -1;
    int rc = json_object_set_new(obj, name, json_stringn(b64, b64_len));
    free(b64);
    return rc == 0 ? 0 : -1;
}

int e2e_encrypt(EVP_PKEY *recipient_pub, const char *sender, const char *recipient,
                const char *text, double sent_at, char **content, char **id)
{
    char why[128];
    if (e2e_key_usable(recipient_pub, why, sizeof why) != 0)
        return -1;
    int rc = -1;
    uint8_t m[E2E_M_LEN], iv[CRYPTO_GCM_IV_LEN], raw_id[E2E_ID_BYTES];
    char *id_b64 = NULL, *plain = NULL, *aad = NULL, *out = NULL;
    size_t id_len = 0, plain_len = 0, aad_len = 0;
    uint8_t *ct = NULL, *ek = NULL;
    json_t *pt_obj = NULL, *env = NULL;

    if (crypto_random(m, sizeof m) != 0 || crypto_random(iv, sizeof iv) != 0
        || crypto_random(raw_id, sizeof raw_id) != 0)
        goto fail;
    if (crypto_b64_encode(raw_id, sizeof raw_id, &id_b64, &id_len) != 0)
        goto fail;
    json_t *text_json = json_string(text);   /* NULL for text that is not UTF-8 */
    if (!text_json)
        goto fail;
    pt_obj = json_object();
    if (!pt_obj || json_object_set_new(pt_obj, "text", text_json) != 0
        || json_object_set_new(pt_obj, "sent_at", json_real(sent_at)) != 0
        || json_object_set_new(pt_obj, "id", json_string(id_b64)) != 0)
        goto fail;
    if (!(plain = json_dumps(pt_obj, JSON_COMPACT | JSON_PRESERVE_ORDER)))
        goto fail;
    plain_len = strlen(plain);
    if (bound_text(sender, recipient, NULL, &aad, &aad_len) != 0)
        goto fail;
    if (!(ct = malloc(plain_len + CRYPTO_GCM_TAG_LEN)))
        goto fail;
    if (crypto_gcm_encrypt(m, iv, (const uint8_t *)aad, aad_len, (const uint8_t *)plain,
                           plain_len, ct, ct + plain_len) != 0)
        goto fail;
    size_t ek_cap = crypto_pkey_size(recipient_pub), ek_len = 0;
    if (!(ek = malloc(ek_cap)))
        goto fail;
    if (crypto_rsa_oaep_encrypt(recipient_pub, m, sizeof m, ek, ek_cap, &ek_len) != 0)
        goto fail;
    /* Member order as Appendix A writes it (jansson keeps insertion order). */
    env = json_object();
    if (!env || json_object_set_new(env, "v", json_integer(1)) != 0
        || b64_field(env, "ek", ek, ek_len) != 0 || b64_field(env, "iv", iv, sizeof iv) != 0
        || b64_field(env, "ct", ct, plain_len + CRYPTO_GCM_TAG_LEN) != 0)
        goto fail;
    if (!(out = json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER)))
        goto fail;
    *content = out;
    *id = id_b64;
    out = NULL;
    id_b64 = NULL;
    rc = 0;
fail:
    crypto_wipe(m, sizeof m);
    if (plain) {
        crypto_wipe(plain, plain_len);
        free(plain);
    }
    json_decref(pt_obj);
    json_decref(env);
    free(id_b64);
    free(aad);
    free(ct);
    free(ek);
    free(out);
    return rc;
}

/* The decoded base64 string member `name` of obj. */
static int b64_member(const json_t *obj, const char *name, uint8_t **out, size_t *out_len)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return -1;
    return crypto_b64_decode(json_string_value(v), json_string_length(v), out, out_len);
}

/* 1 when s is the base64 of exactly E2E_ID_BYTES bytes. */
static int id_ok(const char *s, size_t len)
{
    if (len != E2E_ID_B64_LEN)
        return 0;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    if (crypto_b64_decode(s, len, &raw, &raw_len) != 0)
        return 0;
    free(raw);
    return raw_len == E2E_ID_BYTES;
}

static int parse_plain(const char *pt, size_t pt_len, e2e_plain *out)
{
    json_t *obj = json_loadb(pt, pt_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return -1;
    }
    int rc = -1;
    const json_t *text = json_object_get(obj, "text");
    const json_t *sent_at = json_object_get(obj, "sent_at");
    const json_t *id = json_object_get(obj, "id");
    if (!json_is_string(text) || !json_is_number(sent_at) || !json_is_string(id)
        || !id_ok(json_string_value(id), json_string_length(id)))
        goto out;
    size_t text_len = json_string_length(text);
    char *t = malloc(text_len + 1);
    char *i = strdup(json_string_value(id));
    if (!t || !i) {
        free(t);
        free(i);
        goto out;
    }
    memcpy(t, json_string_value(text), text_len + 1);
    out->text = t;
    out->text_len = text_len;
    out->sent_at = json_number_value(sent_at);
    out->id = i;
    rc = 0;
out:
    json_decref(obj);
    return rc;
}

int e2e_decrypt(EVP_PKEY *priv, const char *sender, const char *recipient, const char *content,
                e2e_plain *out)
{
    char why[128];
    if (!content || e2e_key_usable(priv, why, sizeof why) != 0)
        return -1;
    int rc = -1;
    uint8_t *ek = NULL, *iv = NULL, *ct = NULL, *m = NULL, *pt = NULL;
    size_t ek_len = 0, iv_len = 0, ct_len = 0, m_len = 0;
    char *aad = NULL;
    size_t aad_len = 0;
    size_t m_cap = crypto_pkey_size(priv);
    json_t *env = json_loads(content, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(env))
        goto fail;
    const json_t *v = json_object_get(env, "v");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        goto fail;
    if (b64_member(env, "ek", &ek, &ek_len) != 0 || b64_member(env, "iv", &iv, &iv_len) != 0
        || b64_member(env, "ct", &ct, &ct_len) != 0)
        goto fail;
    if (ek_len != m_cap || iv_len != CRYPTO_GCM_IV_LEN || ct_len < CRYPTO_GCM_TAG_LEN)
        goto fail;
    if (!(m = malloc(m_cap)))
        goto fail;
    if (crypto_rsa_oaep_decrypt(priv, ek, ek_len, m, m_cap, &m_len) != 0 || m_len != E2E_M_LEN)
        goto fail;
    if (bound_text(sender, recipient, NULL, &aad, &aad_len) != 0)
        goto fail;
    size_t pt_len = ct_len - CRYPTO_GCM_TAG_LEN;
    if (!(pt = malloc(pt_len + 1)))
        goto fail;
    if (crypto_gcm_decrypt(m, iv, (const uint8_t *)aad, aad_len, ct, pt_len, ct + pt_len,
                           CRYPTO_GCM_TAG_LEN, pt) != 0)
        goto fail;
    rc = parse_plain((const char *)pt, pt_len, out);
    crypto_wipe(pt, pt_len);
fail:
    if (m) {
        crypto_wipe(m, m_cap);
        free(m);
    }
    json_decref(env);
    free(ek);
    free(iv);
    free(ct);
    free(pt);
    free(aad);
    return rc;
}

void e2e_plain_clear(e2e_plain *p)
{
    if (!p)
        return;
    if (p->text) {
        crypto_wipe(p->text, p->text_len);
        free(p->text);
    }
    free(p->id);
    memset(p, 0, sizeof *p);
}
