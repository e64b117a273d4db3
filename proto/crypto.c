/* Checked wrappers over the OpenSSL 3 EVP interfaces (see crypto.h). */
#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "log.h"


/* A private key file larger than this is not a PEM RSA key we wrote. */
#define KEY_FILE_MAX (64 * 1024)

/* Logs and clears OpenSSL's thread-local error queue, so one failure is not
 * reported again by the next unrelated caller. */
static void log_openssl_error(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        LOG_ERROR("%s: %s", what, buf);
    } else {
        LOG_ERROR("%s failed", what);
    }
    ERR_clear_error();
}

/* Algorithms fetched once: OpenSSL 3 looks an algorithm up again on every
 * init when given EVP_aes_256_gcm() or a name, which costs more than
 * sealing a short message. Fetched objects are immutable and safe to share
 * between threads. */
static EVP_MAC *alg_hmac;
static EVP_CIPHER *alg_gcm, *alg_cbc;
static pthread_once_t alg_once = PTHREAD_ONCE_INIT;

static void alg_fetch(void)
{
    alg_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    alg_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    alg_cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

static int algorithms(void)
{
    if (pthread_once(&alg_once, alg_fetch) != 0 || !alg_hmac || !alg_gcm || !alg_cbc) {
        log_openssl_error("fetching HMAC / AES-256-GCM / AES-256-CBC");
        return -1;
    }
    return 0;
}

/* ---- per-thread contexts ------------------------------------------------- */

/* Making a context per message (allocations, the provider's context, the
 * HMAC digest looked up by name, clearing on free) cost more than sealing a
 * short message did. Each thread keeps one context per use and re-keys it:
 * an EVP context must not be shared between threads, and one per session
 * would cost memory on every idle session. Freed (and cleansed by OpenSSL)
 * when the thread ends. The key schedule of the last message a thread
 * sealed or opened stays in its context until its next message (or its
 * end), possibly after that session closed: the price of not making a
 * context per message; the process holds live sessions' keys anyway. */
/* IVs are drawn from a block of DRBG output: one RAND_bytes call, with
 * its locks and parameter look-ups, served a single 12-byte IV and cost
 * as much as the HMAC (perf, fan-out). */
#define PUBLIC_RANDOM_BYTES 4096

typedef struct {
    EVP_CIPHER_CTX *gcm_enc, *gcm_dec;
    EVP_MAC_CTX *hmac;
    size_t public_used; /* bytes of public_random already handed out */
    uint8_t public_random[PUBLIC_RANDOM_BYTES];
} thread_ctx;

static pthread_key_t tctx_key;
static int tctx_key_ok;
static pthread_once_t tctx_once = PTHREAD_ONCE_INIT;

static void tctx_free(void *p)
{
    thread_ctx *t = p;
    if (!t)
        return;
    EVP_CIPHER_CTX_free(t->gcm_enc);
    EVP_CIPHER_CTX_free(t->gcm_dec);
    EVP_MAC_CTX_free(t->hmac);
    crypto_wipe(t->public_random, sizeof t->public_random);
    free(t);
}

static void tctx_key_make(void) { tctx_key_ok = pthread_key_create(&tctx_key, tctx_free) == 0; }

/* The calling thread's contexts, made on first use; NULL when out of
 * memory (the caller then fails like any allocation failure). */
static thread_ctx *thread_contexts(void)
{
    if (algorithms() != 0 || pthread_once(&tctx_once, tctx_key_make) != 0 || !tctx_key_ok)
        return NULL;
    thread_ctx *t = pthread_getspecific(tctx_key);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->public_used = PUBLIC_RANDOM_BYTES; /* drawn on first use */
    t->gcm_enc = EVP_CIPHER_CTX_new();
    t->gcm_dec = EVP_CIPHER_CTX_new();
    t->hmac = EVP_MAC_CTX_new(alg_hmac);
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    /* The cipher is set here once; each use then passes only key and IV. */
    if (!t->gcm_enc || !t->gcm_dec || !t->hmac
        || EVP_EncryptInit_ex(t->gcm_enc, alg_gcm, NULL, NULL, NULL) != 1
        || EVP_DecryptInit_ex(t->gcm_dec, alg_gcm, NULL, NULL, NULL) != 1
        || EVP_MAC_CTX_set_params(t->hmac, params) != 1
        || pthread_setspecific(tctx_key, t) != 0) {
        log_openssl_error("per-thread cipher and MAC contexts");
        tctx_free(t);
        return NULL;
    }
    return t;
}

void crypto_thread_release(void)
{
    if (!tctx_key_ok)
        return;
    thread_ctx *t = pthread_getspecific(tctx_key);
    if (t) {
        pthread_setspecific(tctx_key, NULL);
        tctx_free(t);
    }
}

/* ---- base64 -------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int crypto_b64_encode(const uint8_t *in, size_t len, char **out, size_t *out_len)
{
    if ((!in && len) || !out)
        return -1;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return -1;
    size_t n = (len + 2) / 3 * 4;
    char *s = malloc(n + 1);
    if (!s)
        return -1;
    size_t i = 0, o = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        s[o++] = b64_alphabet[v >> 18 & 63];
        s[o++] = b64_alphabet[v >> 12 & 63];
        s[o++] = b64_alphabet[v >> 6 & 63];
        s[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        s[o++] = b64_alphabet[v >> 18 & 63];
        s[o++] = b64_alphabet[v >> 12 & 63];
        s[o++] = '=';
        s[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        s[o++] = b64_alphabet[v >> 18 & 63];
        s[o++] = b64_alphabet[v >> 12 & 63];
        s[o++] = b64_alphabet[v >> 6 & 63];
        s[o++] = '=';
    }
    s[o] = '\0';
    *out = s;
    if (out_len)
        *out_len = o;
    return 0;
}

/* Sextet of each byte, -1 for a byte outside the alphabet ('=' included:
 * padding is handled apart). A table, not a chain of range checks: every
 * envelope's payload and signature are decoded on receipt, and the
 * load generator decodes each delivery it opens (perf: 9% of its CPU). */
static int8_t b64_table[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_table_fill(void)
{
    memset(b64_table, -1, sizeof b64_table);
    for (int i = 0; i < 64; i++)
        b64_table[(unsigned char)b64_alphabet[i]] = (int8_t)i;
}

int crypto_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
    if ((!in && len) || !out || !out_len)
        return -1;
    if (len % 4 != 0)
        return -1;
    if (pthread_once(&b64_once, b64_table_fill) != 0)
        return -1;
    size_t pad = 0;
    if (len >= 4 && in[len - 1] == '=') {
        pad = 1;
        if (in[len - 2] == '=')
            pad = 2;
    }
    size_t n = len / 4 * 3 - pad;
    /* malloc(0) may return NULL; an empty result is still a buffer. */
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return -1;
    const unsigned char *u = (const unsigned char *)in;
    size_t o = 0, i = 0;
    /* Every quantum but the last: four sextets, no padding allowed. */
    for (; i + 4 < len; i += 4) {
        int a = b64_table[u[i]], b = b64_table[u[i + 1]], c = b64_table[u[i + 2]],
            d = b64_table[u[i + 3]];
        if ((a | b | c | d) < 0)
            goto fail;
        uint32_t q = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        buf[o++] = (uint8_t)(q >> 16);
        buf[o++] = (uint8_t)(q >> 8);
        buf[o++] = (uint8_t)q;
    }
    if (i < len) {
        /* The last: '=' only in its padding positions. */
        int v[4];
        for (size_t j = 0; j < 4; j++) {
            if (j >= 4 - pad) {
                v[j] = 0;
                continue;
            }
            v[j] = b64_table[u[i + j]];
            if (v[j] < 0)
                goto fail;
        }
        uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6
                     | (uint32_t)v[3];
        if (pad == 2) {
            /* Bits of the second character beyond the one output byte
             * must be zero, so every byte string has one encoding. */
            if (q & 0xFFFF)
                goto fail;
            buf[o++] = (uint8_t)(q >> 16);
        } else if (pad == 1) {
            if (q & 0xFF)
                goto fail;
            buf[o++] = (uint8_t)(q >> 16);
            buf[o++] = (uint8_t)(q >> 8);
        } else {
            buf[o++] = (uint8_t)(q >> 16);
            buf[o++] = (uint8_t)(q >> 8);
            buf[o++] = (uint8_t)q;
        }
    }
    *out = buf;
    *out_len = o;
    return 0;
fail:
    free(buf);
    return -1;
}

/* ---- random, comparison, wiping ----------------------------------------- */

int crypto_random(uint8_t *buf, size_t len)
{
    if (!buf && len)
        return -1;
    while (len > 0) {
        int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(buf, chunk) != 1) {
            log_openssl_error("RAND_bytes");
            return -1;
        }
        buf += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int crypto_random_public(uint8_t *buf, size_t len)
{
    if (len == 0)
        return 0;
    if (!buf)
        return -1;
    thread_ctx *t = len <= PUBLIC_RANDOM_BYTES ? thread_contexts() : NULL;
    if (!t)
        return crypto_random(buf, len);
    if (PUBLIC_RANDOM_BYTES - t->public_used < len) {
        if (crypto_random(t->public_random, PUBLIC_RANDOM_BYTES) != 0)
            return -1;
        t->public_used = 0;
    }
    memcpy(buf, t->public_random + t->public_used, len);
    /* Handed out once: wiped, so the block never holds a value twice. */
    crypto_wipe(t->public_random + t->public_used, len);
    t->public_used += len;
    return 0;
}

int crypto_memeq(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void crypto_wipe(void *p, size_t len)
{
    if (p && len)
        OPENSSL_cleanse(p, len);
}

/* ---- HKDF, HMAC ---------------------------------------------------------- */

int crypto_hkdf_sha256(const uint8_t *ikm, size_t ikm_len,
                       const uint8_t *salt, size_t salt_len,
                       const uint8_t *info, size_t info_len,
                       uint8_t *out, size_t out_len)
{
    if (!ikm || ikm_len == 0 || (!salt && salt_len) || (!info && info_len) || !out
        || out_len == 0)
        return -1;
    int rc = -1;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = NULL;
    if (!kdf) {
        log_openssl_error("EVP_KDF_fetch(HKDF)");
        goto fail;
    }
    kctx = EVP_KDF_CTX_new(kdf);
    if (!kctx) {
        log_openssl_error("EVP_KDF_CTX_new");
        goto fail;
    }
    OSSL_PARAM params[5];
    size_t np = 0;
    params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    /* An empty salt or info is RFC 5869's default; OpenSSL treats an absent
     * parameter exactly so. */
    if (salt_len)
        params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
                                                         salt_len);
    if (info_len)
        params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info,
                                                         info_len);
    params[np] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, out, out_len, params) != 1) {
        log_openssl_error("HKDF derive");
        goto fail;
    }
    rc = 0;
fail:
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

int crypto_hmac_sha256(const uint8_t key[CRYPTO_KEY_LEN],
                       const uint8_t *const parts[], const size_t part_lens[],
                       size_t nparts, uint8_t out[CRYPTO_MAC_LEN])
{
    if (!key || (nparts && (!parts || !part_lens)) || !out)
        return -1;
    int rc = -1;
    uint8_t mac[CRYPTO_MAC_LEN];
    thread_ctx *t = thread_contexts();
    EVP_MAC_CTX *ctx = t ? t->hmac : NULL;
    if (!ctx)
        goto fail;
    /* The digest was set when the context was made. */
    if (EVP_MAC_init(ctx, key, CRYPTO_KEY_LEN, NULL) != 1) {
        log_openssl_error("EVP_MAC_init");
        goto fail;
    }
    for (size_t i = 0; i < nparts; i++) {
        if (part_lens[i] == 0)
            continue;
        if (!parts[i] || EVP_MAC_update(ctx, parts[i], part_lens[i]) != 1) {
            log_openssl_error("EVP_MAC_update");
            goto fail;
        }
    }
    size_t mac_len = 0;
    if (EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) != 1 || mac_len != CRYPTO_MAC_LEN) {
        log_openssl_error("EVP_MAC_final");
        goto fail;
    }
    memcpy(out, mac, CRYPTO_MAC_LEN);
    rc = 0;
fail:
    crypto_wipe(mac, sizeof mac);
    return rc;
}

/* ---- AES ----------------------------------------------------------------- */

int crypto_gcm_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_GCM_IV_LEN],
                       const uint8_t *aad, size_t aad_len,
                       const uint8_t *pt, size_t pt_len,
                       uint8_t *ct, uint8_t tag[CRYPTO_GCM_TAG_LEN])
{
    if (!key || !iv || (!aad && aad_len) || (!pt && pt_len) || (!ct && pt_len) || !tag)
        return -1;
    if (aad_len > INT_MAX || pt_len > INT_MAX)
        return -1;
    int rc = -1, n = 0;
    thread_ctx *t = thread_contexts();
    EVP_CIPHER_CTX *ctx = t ? t->gcm_enc : NULL;
    if (!ctx)
        goto fail;
    /* A new key and IV on the thread's context (cipher NULL: kept from
     * its set-up), which starts a new message. The default GCM IV length
     * is 12, which is the protocol's. */
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, key, iv) != 1)
        goto fail;
    if (aad_len && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        goto fail;
    int ct_len = 0;
    if (pt_len) {
        if (EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) != 1)
            goto fail;
        ct_len = n;
    }
    uint8_t dummy[16];
    if (EVP_EncryptFinal_ex(ctx, pt_len ? ct + ct_len : dummy, &n) != 1)
        goto fail;
    if ((size_t)(ct_len + n) != pt_len)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_GCM_TAG_LEN, tag) != 1)
        goto fail;
    rc = 0;
fail:
    if (rc != 0)
        log_openssl_error("AES-256-GCM encrypt");
    return rc;
}

int crypto_gcm_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_GCM_IV_LEN],
                       const uint8_t *aad, size_t aad_len,
                       const uint8_t *ct, size_t ct_len,
                       const uint8_t *tag, size_t tag_len,
                       uint8_t *pt)
{
    /* OpenSSL 3.0 accepts tags shorter than 16 bytes and compares only that
     * prefix; a truncated tag would weaken authentication, so refuse. */
    if (tag_len != CRYPTO_GCM_TAG_LEN)
        return -1;
    if (!key || !iv || (!aad && aad_len) || (!ct && ct_len) || (!pt && ct_len) || !tag)
        return -1;
    if (aad_len > INT_MAX || ct_len > INT_MAX)
        return -1;
    int rc = -1, n = 0, pt_len = 0;
    uint8_t tagbuf[CRYPTO_GCM_TAG_LEN];
    memcpy(tagbuf, tag, sizeof tagbuf);
    thread_ctx *t = thread_contexts();
    EVP_CIPHER_CTX *ctx = t ? t->gcm_dec : NULL;
    if (!ctx)
        goto fail;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) != 1)
        goto fail;
    if (aad_len && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        goto fail;
    if (ct_len) {
        if (EVP_DecryptUpdate(ctx, pt, &n, ct, (int)ct_len) != 1)
            goto fail;
        pt_len = n;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_GCM_TAG_LEN, tagbuf) != 1)
        goto fail;
    uint8_t dummy[16];
    if (EVP_DecryptFinal_ex(ctx, ct_len ? pt + pt_len : dummy, &n) != 1)
        goto fail;
    if ((size_t)(pt_len + n) != ct_len)
        goto fail;
    rc = 0;
fail:
    /* Authentication failures are expected input (an attacker's message),
     * not errors of ours: leave logging to the caller. Unauthenticated
     * plaintext must not survive. */
    if (rc != 0 && pt && ct_len)
        crypto_wipe(pt, ct_len);
    ERR_clear_error();
    return rc;
}

int crypto_cbc_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_CBC_IV_LEN],
                       const uint8_t *pt, size_t pt_len, uint8_t *ct, size_t *ct_len)
{
    if (!key || !iv || (!pt && pt_len) || !ct || !ct_len)
        return -1;
    if (pt_len > INT_MAX - 16)
        return -1;
    int rc = -1, n = 0, total = 0;
    EVP_CIPHER_CTX *ctx = algorithms() == 0 ? EVP_CIPHER_CTX_new() : NULL;
    if (!ctx)
        goto fail;
    /* PKCS#7 padding is OpenSSL's default for block modes. */
    if (EVP_EncryptInit_ex(ctx, alg_cbc, NULL, key, iv) != 1)
        goto fail;
    if (pt_len) {
        if (EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) != 1)
            goto fail;
        total = n;
    }
    if (EVP_EncryptFinal_ex(ctx, ct + total, &n) != 1)
        goto fail;
    total += n;
    *ct_len = (size_t)total;
    rc = 0;
fail:
    if (rc != 0)
        log_openssl_error("AES-256-CBC encrypt");
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int crypto_cbc_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t iv[CRYPTO_CBC_IV_LEN],
                       const uint8_t *ct, size_t ct_len, uint8_t *pt, size_t *pt_len)
{
    if (!key || !iv || !ct || !pt || !pt_len)
        return -1;
    if (ct_len == 0 || ct_len % 16 != 0 || ct_len > INT_MAX)
        return -1;
    int rc = -1, n = 0, total = 0;
    EVP_CIPHER_CTX *ctx = algorithms() == 0 ? EVP_CIPHER_CTX_new() : NULL;
    if (!ctx)
        goto fail;
    if (EVP_DecryptInit_ex(ctx, alg_cbc, NULL, key, iv) != 1)
        goto fail;
    if (EVP_DecryptUpdate(ctx, pt, &n, ct, (int)ct_len) != 1)
        goto fail;
    total = n;
    if (EVP_DecryptFinal_ex(ctx, pt + total, &n) != 1)
        goto fail;
    total += n;
    *pt_len = (size_t)total;
    rc = 0;
fail:
    /* Bad padding is attacker input, not our error; see crypto_gcm_decrypt. */
    if (rc != 0)
        crypto_wipe(pt, ct_len);
    ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* ---- RSA ----------------------------------------------------------------- */

int crypto_rsa_generate(int bits, EVP_PKEY **out)
{
    if (!out)
        return -1;
    if (bits < CRYPTO_RSA_MIN_BITS || bits > CRYPTO_RSA_MAX_BITS) {
        LOG_ERROR("RSA key of %d bits refused: supported sizes are %d to %d bits", bits,
                  CRYPTO_RSA_MIN_BITS, CRYPTO_RSA_MAX_BITS);
        return -1;
    }
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1
        || EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) != 1
        || EVP_PKEY_keygen(ctx, &key) != 1) {
        log_openssl_error("RSA key generation");
        EVP_PKEY_CTX_free(ctx);
        return -1;
    }
    EVP_PKEY_CTX_free(ctx);
    *out = key;
    return 0;
}

/* Refuses to prompt on the terminal for an encrypted key file. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int check_rsa_key(EVP_PKEY *key, const char *what)
{
    if (!EVP_PKEY_is_a(key, "RSA")) {
        LOG_ERROR("%s: not an RSA key", what);
        return -1;
    }
    /* Too large is refused as firmly as too small: buffers and the
     * handshake's cost are sized for at most CRYPTO_RSA_MAX_BITS. */
    int bits = EVP_PKEY_get_bits(key);
    if (bits < CRYPTO_RSA_MIN_BITS || bits > CRYPTO_RSA_MAX_BITS) {
        LOG_ERROR("%s: RSA key of %d bits; the server supports %d to %d bits", what, bits,
                  CRYPTO_RSA_MIN_BITS, CRYPTO_RSA_MAX_BITS);
        return -1;
    }
    return 0;
}

/* Returns 0 with *out set, 1 when the file does not exist, -1 on error. */
static int load_private_key(const char *path, EVP_PKEY **out)
{
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    char *buf = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        LOG_ERROR("cannot open key file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        LOG_ERROR("cannot stat key file %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        LOG_ERROR("key file %s is not a regular file", path);
        goto fail;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        LOG_ERROR("key file %s has mode %04o: it must not be accessible to group or others "
                  "(chmod 600)", path, (unsigned)(st.st_mode & 07777));
        goto fail;
    }
    if (st.st_size <= 0 || st.st_size > KEY_FILE_MAX) {
        LOG_ERROR("key file %s: unexpected size %lld", path, (long long)st.st_size);
        goto fail;
    }
    buf = malloc(KEY_FILE_MAX);
    if (!buf)
        goto fail;
    for (;;) {
        ssize_t r = read(fd, buf + len, KEY_FILE_MAX - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            LOG_ERROR("cannot read key file %s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == KEY_FILE_MAX) {
            LOG_ERROR("key file %s is too large", path);
            goto fail;
        }
    }
    bio = BIO_new_mem_buf(buf, (int)len);
    if (!bio)
        goto fail;
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (!key) {
        log_openssl_error(path);
        LOG_ERROR("key file %s: not a readable unencrypted PEM private key", path);
        goto fail;
    }
    if (check_rsa_key(key, path) != 0)
        goto fail;
    *out = key;
    key = NULL;
    rc = 0;
fail:
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (buf) {
        crypto_wipe(buf, KEY_FILE_MAX);
        free(buf);
    }
    close(fd);
    return rc;
}

/* mkdir -p of the directory part of `path`, new directories 0700. */
static int make_parent_dirs(const char *path)
{
    size_t len = strlen(path);
    char *dir = malloc(len + 1);
    if (!dir)
        return -1;
    memcpy(dir, path, len + 1);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    int rc = 0;
    /* Create each prefix in turn; existing ones are fine. */
    for (char *p = dir + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                LOG_ERROR("cannot create directory %s: %s", dir, strerror(errno));
                rc = -1;
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    free(dir);
    return rc;
}

/* Writes the key as PEM PKCS#8. Returns 0, 1 when the file appeared in the
 * meantime (O_EXCL), -1 on error. */
static int write_private_key(const char *path, EVP_PKEY *key)
{
    int rc = -1, fd = -1;
    /* The secure-memory BIO clears its buffer when freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        log_openssl_error("PEM encoding of the private key");
        goto fail;
    }
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    if (pem_len <= 0 || !pem)
        goto fail;
    if (make_parent_dirs(path) != 0)
        goto fail;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            rc = 1;
            goto fail;
        }
        LOG_ERROR("cannot create key file %s: %s", path, strerror(errno));
        goto fail;
    }
    size_t off = 0;
    while (off < (size_t)pem_len) {
        ssize_t w = write(fd, pem + off, (size_t)pem_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            LOG_ERROR("cannot write key file %s: %s", path, strerror(errno));
            goto fail_unlink;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        LOG_ERROR("cannot sync key file %s: %s", path, strerror(errno));
        goto fail_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        LOG_ERROR("cannot close key file %s: %s", path, strerror(errno));
        goto fail_unlink;
    }
    fd = -1;
    rc = 0;
    goto fail;
fail_unlink:
    /* A truncated key file would be refused at every later start. */
    unlink(path);
fail:
    if (fd >= 0)
        close(fd);
    BIO_free(bio);
    return rc;
}

int crypto_rsa_load_or_generate(const char *path, int bits, EVP_PKEY **out)
{
    if (!path || !*path || !out)
        return -1;
    EVP_PKEY *key = NULL;
    int r = load_private_key(path, &key);
    if (r == 0) {
        char fp[CRYPTO_FINGERPRINT_LEN];
        if (crypto_fingerprint(key, fp) == 0)
            LOG_DEBUG("loaded server key %s, fingerprint %s", path, fp);
        *out = key;
        return 0;
    }
    if (r < 0)
        return -1;
    if (crypto_rsa_generate(bits, &key) != 0) {
        LOG_ERROR("cannot generate a %d-bit RSA key for %s", bits, path);
        return -1;
    }
    r = write_private_key(path, key);
    if (r == 1) {
        /* Another process created the file first: use its key. */
        EVP_PKEY_free(key);
        key = NULL;
        if (load_private_key(path, &key) != 0)
            return -1;
        *out = key;
        return 0;
    }
    if (r != 0) {
        EVP_PKEY_free(key);
        return -1;
    }
    LOG_INFO("generated a new %d-bit RSA key in %s (mode 0600)", bits, path);
    *out = key;
    return 0;
}

int crypto_pubkey_pem(EVP_PKEY *key, char **out)
{
    if (!key || !out)
        return -1;
    int rc = -1;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PUBKEY(bio, key) != 1) {
        log_openssl_error("PEM encoding of the public key");
        goto fail;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || !data)
        goto fail;
    char *s = malloc((size_t)len + 1);
    if (!s)
        goto fail;
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    *out = s;
    rc = 0;
fail:
    BIO_free(bio);
    return rc;
}

int crypto_fingerprint(EVP_PKEY *key, char out[CRYPTO_FINGERPRINT_LEN])
{
    if (!key || !out)
        return -1;
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(key, &der);
    if (der_len <= 0) {
        log_openssl_error("i2d_PUBKEY");
        return -1;
    }
    unsigned char md[32];
    unsigned int md_len = 0;
    int ok = EVP_Digest(der, (size_t)der_len, md, &md_len, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (ok != 1 || md_len != sizeof md) {
        log_openssl_error("SHA-256");
        return -1;
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < sizeof md; i++) {
        out[7 + 2 * i] = hex[md[i] >> 4];
        out[7 + 2 * i + 1] = hex[md[i] & 15];
    }
    out[CRYPTO_FINGERPRINT_LEN - 1] = '\0';
    return 0;
}

int crypto_pubkey_from_pem(const char *pem, size_t len, EVP_PKEY **out)
{
    if (!pem || len == 0 || len > INT_MAX || !out)
        return -1;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return -1;
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    /* The PEM comes from the network (a peer's key): not our error. */
    ERR_clear_error();
    if (!key)
        return -1;
    /* Every key the protocol carries is RSA of at least 2048 bits. */
    if (!EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_get_bits(key) < CRYPTO_RSA_MIN_BITS) {
        EVP_PKEY_free(key);
        return -1;
    }
    *out = key;
    return 0;
}

/* A fresh context per call: EVP_PKEY_CTX is not safe to share between
 * threads, the key itself is (worker threads decrypt concurrently). */
static EVP_PKEY_CTX *oaep_ctx(EVP_PKEY *key, int decrypt)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (!ctx)
        return NULL;
    if ((decrypt ? EVP_PKEY_decrypt_init(ctx) : EVP_PKEY_encrypt_init(ctx)) != 1
        || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1
        || EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) != 1
        || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int crypto_rsa_oaep_encrypt(EVP_PKEY *pub, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!pub || (!in && in_len) || !out || !out_len)
        return -1;
    /* The key may be a peer's of any size: never assume the buffer holds
     * its modulus. */
    size_t size = crypto_pkey_size(pub);
    if (size == 0 || size > out_cap)
        return -1;
    EVP_PKEY_CTX *ctx = oaep_ctx(pub, 0);
    if (!ctx) {
        log_openssl_error("RSA-OAEP setup");
        return -1;
    }
    size_t n = out_cap;
    int ok = EVP_PKEY_encrypt(ctx, out, &n, in, in_len);
    EVP_PKEY_CTX_free(ctx);
    if (ok != 1) {
        log_openssl_error("RSA-OAEP encrypt");
        return -1;
    }
    *out_len = n;
    return 0;
}

int crypto_rsa_oaep_decrypt(EVP_PKEY *priv, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!priv || !in || !out || out_cap == 0 || !out_len)
        return -1;
    EVP_PKEY_CTX *ctx = oaep_ctx(priv, 1);
    if (!ctx) {
        log_openssl_error("RSA-OAEP setup");
        return -1;
    }
    /* OpenSSL writes at most n bytes and fails when the plaintext is
     * longer; passing the modulus size here instead let a crafted
     * plaintext run past the caller's buffer. */
    size_t n = out_cap;
    int ok = EVP_PKEY_decrypt(ctx, out, &n, in, in_len);
    EVP_PKEY_CTX_free(ctx);
    /* A failed decryption is the peer's bad input; the caller answers it
     * with one reply whatever failed, so no detail is logged here. */
    ERR_clear_error();
    if (ok != 1)
        return -1;
    *out_len = n;
    return 0;
}

size_t crypto_pkey_size(EVP_PKEY *key)
{
    if (!key)
        return 0;
    int n = EVP_PKEY_get_size(key);
    return n > 0 ? (size_t)n : 0;
}

void crypto_pkey_free(EVP_PKEY *key)
{
    EVP_PKEY_free(key);
}
