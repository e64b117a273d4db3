/* Unit tests for proto/crypto.c: published test vectors for every primitive,
 * strict base64, and the RSA key file rules. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "crypto.h"
#include "log.h"
#include "safemessenger/testhost_suite.h"

/* ---- helpers ------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    CU_ASSERT_FATAL(strlen(hex) % 2 == 0 && n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        CU_ASSERT_FATAL(sscanf(hex + 2 * i, "%2x", &v) == 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void assert_hex(const uint8_t *buf, size_t len, const char *hex)
{
    uint8_t want[512];
    size_t n = unhex(hex, want, sizeof want);
    CU_ASSERT_EQUAL(len, n);
    if (len == n)
        CU_ASSERT_EQUAL(memcmp(buf, want, n), 0);
}

/* A 2048-bit RSA key made for these tests only (openssl genpkey), with its
 * SPKI fingerprint computed by
 * `openssl pkey -pubin -outform DER | sha256sum`. */
static const char test_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCuFhFYOI+ahXNo\n"
    "1W5B/voMTH2WQVBu7I/72pl+1yJwaC58m0yfRu4AFwvH21c5A8oh5Bg4Yj5FfQM7\n"
    "aueVDm9i43qIMCLiyyR9rsDlv3EHF159fT5GOeL5XN24jXegb9MRozAma2C+/oBc\n"
    "uT8LUIIOo5ZCGhscos4SNpLUnQEco1UmMxhUptmgbNIj8i1STDIuYrZGuPRpF9mZ\n"
    "SFeF4cdgAHm2NDzb0nvDZuyve4ogFZw3nGx+C16T5AFtVZOESoHnIXWZ8/XuZQA5\n"
    "pKHAxgpzLn2bHdlDlOjV3lUIHWT9ZjPoY3DNnAyOwGcaSVmOAMZ5jFNwa1ebjNql\n"
    "8PZjgRGVAgMBAAECggEAAYwbqluSVy7BeFiRSs/f3BUf9qJs+xdqLjRiseBqo3Ih\n"
    "m6TruOyx99k8lxGphE220bdLydCBui9ixHfuSAJhVhEsiSJYZQimMeHIQCKD+Cqq\n"
    "gdYHpCsmi83aAKZtPkVQLHN1XZoNuZTcgjZ5S3nzNfsZPkwqGoaN61aF1pLwrBb5\n"
    "zYnml3ABAXAkEcUtXXYFW79Ke2lYb2cvvKEXfjS+b5m1Kj4grRylMtEBVqk1C6n1\n"
    "Aft78nFKWUfYXcKrWG7lbqMSGYBgrfXNakThZu2cAG/C394KpHEofAd3iEdhJ58M\n"
    "UbbejRbygo8bfGlQZ8HycbtqSpGbyUOrzeX+gcl8DwKBgQDU2fc/6As7eBzHG2JB\n"
    "kC0M2iQYu1VAdp0XgMVdEfh7aleDTTMfsUIztmguoTH4Zywpc+GJYVr/ug27GNwN\n"
    "20N8RMrtkub7wmlOIaUwyb+2PznwVVR5xAyxX4/0YQxS7dlj01PX3n6fSBFCC1Pk\n"
    "BD4Rbz5Vww4WhWwTj0N21DakJwKBgQDRYFxPYEKlp3qrfAnRjFW4qI9hPv6wUnQa\n"
    "u6LJigBOqjmn++IqdxzHvOtWQ6oqR75Np5tGd8cYgIlM4DcdBI3Ih/e35lGtVU1+\n"
    "pIDLXPru4afx27AZMBKvzHdxPrpNK87DAIrBmrwJgp9Ns9qC6TGWoxZixAqx3sWN\n"
    "7MulAxlF4wKBgGV2IS4NZo1KjC09GHE4UME3ms1PPywjXm69q1baIiByaJTmT+Bj\n"
    "lrMf2DmiDTfjtmFsI65hAge0oKb3Cq5wPpMWF8V3qTOJULk1wJCpGwG80dmGU2ZX\n"
    "1dUXQH+1YzKEvoOfUPAt1x4GNHPPAoZGn2+gH46yFB0YLJSGThpuvj0xAoGBAJOZ\n"
    "UnnCajlNL3TkJCfMvkFG0ozDU9gIyEBwNfnNhxntdmetcWpuPaOw0lYlrTfRC57C\n"
    "oPu0RG5JboD7Lt8N7sWG1GKXwsxmbhLw9Lpn+Z2dBj/BlwqqkQHNKgZzKfJtB30A\n"
    "TNDeu+AYbSThvRC8Q3Dl10oY2VE6shmy7HyPCqnxAoGAZRXwUaWPD2ruo/bULniq\n"
    "MCYck5WI5D6cP4Atul/4KFaToxpm9Ze/pYIWxsYrHoZR/36ZAy6YpGaVExW9vB3Y\n"
    "UGP8DxBE1m6r2Rz6dOihuGJSDx+EMx2yFC8mZZbcPO9JDXdiTSixvJmPCUa/aQAX\n"
    "23dYU3R6V8X2hw9H9G2D8qI=\n"
    "-----END PRIVATE KEY-----\n";
static const char test_key_fingerprint[] =
    "sha256:3d559414e213633d3dad9e44355c51d013af2b3f89be34554c681fa8f8d40a76";
/* Python `cryptography`: test key's public half, OAEP(MGF1(SHA256), SHA256,
 * label None), plaintext bytes 0x00..0x1f. */
static const char test_key_oaep_ct_b64[] =
    "h/TmPll1Y3sZUrZE7r4NTe8Ba2cI5MMOf3yE3T3GqNlUBNvfIisOs+ivtvYF0qF5XxZqTvc2AprR5mkqSdMHT4kp"
    "RXd9xEQK0UzVrjjtkHqkzjNfw1DqwMR3QgomKSpr8QgvRaTiS4tlTDYpfyCtfbO0MRpoSkhCRixTOEIxeqLWDO3S"
    "BAToMFyykDlW7eTGw9U4ZvNDsiRlC/CLManL00t24eR5o1zQt0FxYDh/spkgicNRG2BdbFEScqjZ9tCoPLJGs2fX"
    "ok4At0iJZMGdujxGkF1hpFOejtl9G2JsrQ6O6O84k3+aHdpQy6U4Mo9nzwS+mRHNOQDvb33tM6SYqA==";

static char tmp_root[64];

static void tmp_make(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/sm_test_crypto_XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmp_root));
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char child[512];
                int n = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (n > 0 && (size_t)n < sizeof child)
                    rm_rf(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void tmp_path(char *buf, size_t cap, const char *rel)
{
    int n = snprintf(buf, cap, "%s/%s", tmp_root, rel);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
}

static void write_file(const char *path, const char *content, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, content, len) == (ssize_t)len);
    CU_ASSERT_FATAL(fchmod(fd, mode) == 0);
    close(fd);
}

static void write_pkey_file(const char *path, EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    CU_ASSERT_FATAL(bio != NULL);
    CU_ASSERT_FATAL(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    write_file(path, data, (size_t)len, 0600);
    BIO_free(bio);
}

/* Loads the fixed test key through the module's own file loader. */
static EVP_PKEY *load_test_key(void)
{
    char path[256];
    tmp_make();
    tmp_path(path, sizeof path, "test_key.pem");
    write_file(path, test_key_pem, sizeof test_key_pem - 1, 0600);
    EVP_PKEY *key = NULL;
    int rc = crypto_rsa_load_or_generate(path, 2048, &key);
    rm_rf(tmp_root);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return key;
}

static int is_fingerprint(const char *fp)
{
    if (strlen(fp) != CRYPTO_FINGERPRINT_LEN - 1 || strncmp(fp, "sha256:", 7) != 0)
        return 0;
    for (const char *p = fp + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* ---- base64 -------------------------------------------------------------- */

static const char *const rfc4648_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const rfc4648_b64[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                          "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

static void b64_encode_matches_rfc4648_vectors(void)
{
    for (size_t i = 0; i < 7; i++) {
        char *out = NULL;
        size_t out_len = 99;
        CU_ASSERT_EQUAL_FATAL(crypto_b64_encode((const uint8_t *)rfc4648_plain[i],
                                                strlen(rfc4648_plain[i]), &out, &out_len), 0);
        CU_ASSERT_STRING_EQUAL(out, rfc4648_b64[i]);
        CU_ASSERT_EQUAL(out_len, strlen(rfc4648_b64[i]));
        free(out);
    }
}

static void b64_decode_matches_rfc4648_vectors(void)
{
    for (size_t i = 0; i < 7; i++) {
        uint8_t *out = NULL;
        size_t out_len = 99;
        CU_ASSERT_EQUAL_FATAL(crypto_b64_decode(rfc4648_b64[i], strlen(rfc4648_b64[i]), &out,
                                                &out_len), 0);
        CU_ASSERT_PTR_NOT_NULL(out);
        CU_ASSERT_EQUAL(out_len, strlen(rfc4648_plain[i]));
        CU_ASSERT_EQUAL(memcmp(out, rfc4648_plain[i], out_len), 0);
        free(out);
    }
}

static void b64_round_trips_all_byte_values(void)
{
    uint8_t in[256];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)i;
    for (size_t len = 0; len <= sizeof in; len += 37) {
        char *enc = NULL;
        uint8_t *dec = NULL;
        size_t enc_len = 0, dec_len = 0;
        CU_ASSERT_EQUAL_FATAL(crypto_b64_encode(in, len, &enc, &enc_len), 0);
        CU_ASSERT_EQUAL(enc_len, (len + 2) / 3 * 4);
        CU_ASSERT_EQUAL_FATAL(crypto_b64_decode(enc, enc_len, &dec, &dec_len), 0);
        CU_ASSERT_EQUAL(dec_len, len);
        CU_ASSERT_EQUAL(memcmp(dec, in, len), 0);
        free(enc);
        free(dec);
    }
}

static void assert_b64_rejected(const char *s, size_t len)
{
    uint8_t *out = (uint8_t *)"untouched";
    size_t out_len = 12345;
    CU_ASSERT_EQUAL(crypto_b64_decode(s, len, &out, &out_len), -1);
    CU_ASSERT_STRING_EQUAL((const char *)out, "untouched");
    CU_ASSERT_EQUAL(out_len, 12345);
}

static void b64_decode_rejects_length_not_multiple_of_4(void)
{
    assert_b64_rejected("Zg=", 3);
    assert_b64_rejected("Zg", 2);
    assert_b64_rejected("Zm9vY", 5);
    assert_b64_rejected("Zm9vYg=", 7);
}

static void b64_decode_rejects_characters_outside_standard_alphabet(void)
{
    assert_b64_rejected("Zm9-", 4);  /* base64url */
    assert_b64_rejected("Zm9_", 4);
    assert_b64_rejected("Zm 9", 4);  /* whitespace */
    assert_b64_rejected("Zm9\n", 4);
    assert_b64_rejected("Zm9v\r\nYmFy", 10);
    assert_b64_rejected("Zm9\xc3", 4);
    assert_b64_rejected("Zm\0v", 4); /* embedded NUL */
}

static void b64_decode_rejects_padding_not_at_the_end(void)
{
    assert_b64_rejected("====", 4);
    assert_b64_rejected("Z===", 4);
    assert_b64_rejected("Zg=a", 4);
    assert_b64_rejected("=Zm9", 4);
    assert_b64_rejected("Zg==Zm9v", 8);
    assert_b64_rejected("Zm8=Zm8=", 8);
}

static void b64_decode_rejects_nonzero_trailing_bits(void)
{
    assert_b64_rejected("Zh==", 4); /* "f" is Zg== */
    assert_b64_rejected("Zm9=", 4); /* "fo" is Zm8= */
    assert_b64_rejected("Zm9vYh==", 8);
}

static void b64_decode_of_empty_string_is_empty_buffer(void)
{
    uint8_t *out = NULL;
    size_t out_len = 7;
    CU_ASSERT_EQUAL_FATAL(crypto_b64_decode("", 0, &out, &out_len), 0);
    CU_ASSERT_PTR_NOT_NULL(out);
    CU_ASSERT_EQUAL(out_len, 0);
    free(out);
}

/* ---- HKDF, HMAC, memeq, random ------------------------------------------ */

static void hkdf_matches_rfc5869_test_case_1(void)
{
    uint8_t ikm[22], salt[13], info[10], okm[42];
    memset(ikm, 0x0b, sizeof ikm);
    for (size_t i = 0; i < sizeof salt; i++)
        salt[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof info; i++)
        info[i] = (uint8_t)(0xf0 + i);
    CU_ASSERT_EQUAL_FATAL(crypto_hkdf_sha256(ikm, sizeof ikm, salt, sizeof salt, info,
                                             sizeof info, okm, sizeof okm), 0);
    assert_hex(okm, sizeof okm,
               "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
               "34007208d5b887185865");
}

static void hkdf_matches_rfc5869_test_case_3_empty_salt_and_info(void)
{
    uint8_t ikm[22], okm[42];
    memset(ikm, 0x0b, sizeof ikm);
    CU_ASSERT_EQUAL_FATAL(crypto_hkdf_sha256(ikm, sizeof ikm, NULL, 0, NULL, 0, okm,
                                             sizeof okm), 0);
    assert_hex(okm, sizeof okm,
               "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
               "9d201395faa4b61a96c8");
}

static void hmac_matches_rfc4231_test_case_2(void)
{
    /* RFC 4231 uses the 4-byte key "Jefe"; HMAC pads short keys with zeros
     * to the block size, so "Jefe" followed by 28 zero bytes is the same
     * key in our fixed 32-byte form. The data is split across parts to
     * check that parts are concatenated. */
    uint8_t key[CRYPTO_KEY_LEN] = {'J', 'e', 'f', 'e'};
    const char *data = "what do ya want for nothing?";
    const uint8_t *parts[4] = {(const uint8_t *)data, NULL, (const uint8_t *)data + 10,
                               (const uint8_t *)data + 11};
    const size_t lens[4] = {10, 0, 1, strlen(data) - 11};
    uint8_t mac[CRYPTO_MAC_LEN];
    CU_ASSERT_EQUAL_FATAL(crypto_hmac_sha256(key, parts, lens, 4, mac), 0);
    assert_hex(mac, sizeof mac,
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void memeq_is_one_only_for_equal_bytes(void)
{
    uint8_t a[32] = {0}, b[32] = {0};
    CU_ASSERT_EQUAL(crypto_memeq(a, b, sizeof a), 1);
    b[31] = 1;
    CU_ASSERT_EQUAL(crypto_memeq(a, b, sizeof a), 0);
    b[31] = 0;
    b[0] = 0x80;
    CU_ASSERT_EQUAL(crypto_memeq(a, b, sizeof a), 0);
}

static void wipe_zeroes_memory(void)
{
    uint8_t buf[16];
    memset(buf, 0xAA, sizeof buf);
    crypto_wipe(buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        CU_ASSERT_EQUAL(buf[i], 0);
    crypto_wipe(NULL, 0);
}

static void random_fills_distinct_buffers(void)
{
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    CU_ASSERT_EQUAL(crypto_random(a, sizeof a), 0);
    CU_ASSERT_EQUAL(crypto_random(b, sizeof b), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof a), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, zero, sizeof a), 0);
}

/* ---- AES ----------------------------------------------------------------- */

/* McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test case 16
 * (256-bit key, 60-byte plaintext, 20-byte AAD); also checked with Python
 * `cryptography` AESGCM. */
#define GCM16_KEY "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define GCM16_IV "cafebabefacedbaddecaf888"
#define GCM16_AAD "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define GCM16_PT                                                                         \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"                   \
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define GCM16_CT                                                                         \
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"                   \
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
#define GCM16_TAG "76fc6ece0f4e1768cddf8853bb2d551b"

typedef struct {
    uint8_t key[32], iv[12], aad[20], pt[60], ct[60], tag[16];
} gcm16;

static void gcm16_load(gcm16 *v)
{
    unhex(GCM16_KEY, v->key, sizeof v->key);
    unhex(GCM16_IV, v->iv, sizeof v->iv);
    unhex(GCM16_AAD, v->aad, sizeof v->aad);
    unhex(GCM16_PT, v->pt, sizeof v->pt);
    unhex(GCM16_CT, v->ct, sizeof v->ct);
    unhex(GCM16_TAG, v->tag, sizeof v->tag);
}

static void gcm_encrypt_matches_gcm_spec_test_case_16(void)
{
    gcm16 v;
    gcm16_load(&v);
    uint8_t ct[60], tag[16];
    CU_ASSERT_EQUAL_FATAL(crypto_gcm_encrypt(v.key, v.iv, v.aad, sizeof v.aad, v.pt,
                                             sizeof v.pt, ct, tag), 0);
    assert_hex(ct, sizeof ct, GCM16_CT);
    assert_hex(tag, sizeof tag, GCM16_TAG);
}

static void gcm_decrypt_matches_gcm_spec_test_case_16(void)
{
    gcm16 v;
    gcm16_load(&v);
    uint8_t pt[60];
    CU_ASSERT_EQUAL_FATAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct,
                                             sizeof v.ct, v.tag, sizeof v.tag, pt), 0);
    assert_hex(pt, sizeof pt, GCM16_PT);
}

static void gcm_decrypt_rejects_truncated_tag(void)
{
    gcm16 v;
    gcm16_load(&v);
    uint8_t pt[60];
    /* The first 15 bytes of the right tag: OpenSSL alone would accept. */
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 15, pt), -1);
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 12, pt), -1);
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 0, pt), -1);
}

static void gcm_decrypt_rejects_tampering_and_wipes_output(void)
{
    gcm16 v;
    gcm16_load(&v);
    uint8_t pt[60], zero[60] = {0};
    v.ct[5] ^= 1;
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 16, pt), -1);
    CU_ASSERT_EQUAL(memcmp(pt, zero, sizeof pt), 0);
    v.ct[5] ^= 1;
    v.aad[0] ^= 1;
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 16, pt), -1);
    v.aad[0] ^= 1;
    v.tag[15] ^= 1;
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 16, pt), -1);
    v.tag[15] ^= 1;
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct,
                                       v.tag, 16, pt), 0);
}

static void gcm_round_trips_empty_plaintext(void)
{
    uint8_t key[32] = {1}, iv[12] = {2}, tag[16], out[1];
    CU_ASSERT_EQUAL_FATAL(crypto_gcm_encrypt(key, iv, (const uint8_t *)"h", 1, NULL, 0, NULL,
                                             tag), 0);
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(key, iv, (const uint8_t *)"h", 1, NULL, 0, tag, 16,
                                       out), 0);
    CU_ASSERT_EQUAL(crypto_gcm_decrypt(key, iv, (const uint8_t *)"H", 1, NULL, 0, tag, 16,
                                       out), -1);
}

/* Each thread re-keys one context per use (crypto.c): what one message
 * leaves in it must not change the next, whatever the order and outcome. */
static void gcm_and_hmac_contexts_are_rekeyed_between_calls(void)
{
    gcm16 v;
    gcm16_load(&v);
    uint8_t other_key[32], other_iv[12] = {9}, ct[60], tag[16], pt[60];
    memset(other_key, 0x5c, sizeof other_key);
    for (int round = 0; round < 3; round++) {
        /* Another key, a longer AAD and a failed open first. */
        uint8_t junk_ct[60], junk_tag[16];
        CU_ASSERT_EQUAL(crypto_gcm_encrypt(other_key, other_iv, v.pt, sizeof v.pt, v.pt, 33,
                                           junk_ct, junk_tag), 0);
        junk_tag[0] ^= 1;
        CU_ASSERT_EQUAL(crypto_gcm_decrypt(other_key, other_iv, v.pt, sizeof v.pt, junk_ct, 33,
                                           junk_tag, 16, pt), -1);
        CU_ASSERT_EQUAL_FATAL(crypto_gcm_encrypt(v.key, v.iv, v.aad, sizeof v.aad, v.pt,
                                                 sizeof v.pt, ct, tag), 0);
        assert_hex(ct, sizeof ct, GCM16_CT);
        assert_hex(tag, sizeof tag, GCM16_TAG);
        CU_ASSERT_EQUAL_FATAL(crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct,
                                                 sizeof v.ct, v.tag, 16, pt), 0);
        assert_hex(pt, sizeof pt, GCM16_PT);
        /* The HMAC keyed with other_key in between: RFC 4231 case 2 still. */
        uint8_t mac[CRYPTO_MAC_LEN], key[CRYPTO_KEY_LEN] = {'J', 'e', 'f', 'e'};
        const uint8_t *parts[1] = {v.pt};
        const size_t lens[1] = {sizeof v.pt};
        CU_ASSERT_EQUAL(crypto_hmac_sha256(other_key, parts, lens, 1, mac), 0);
        const char *data = "what do ya want for nothing?";
        const uint8_t *jparts[1] = {(const uint8_t *)data};
        const size_t jlens[1] = {strlen(data)};
        CU_ASSERT_EQUAL_FATAL(crypto_hmac_sha256(key, jparts, jlens, 1, mac), 0);
        assert_hex(mac, sizeof mac,
                   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

/* Threads each with their own contexts: every result is the known one. */
static void *gcm_thread(void *arg)
{
    int *ok = arg;
    gcm16 v;
    gcm16_load(&v);
    for (int i = 0; i < 200; i++) {
        uint8_t ct[60], tag[16], pt[60], iv[12];
        if (crypto_gcm_encrypt(v.key, v.iv, v.aad, sizeof v.aad, v.pt, sizeof v.pt, ct, tag) == 0
            && memcmp(ct, v.ct, sizeof ct) == 0 && memcmp(tag, v.tag, sizeof tag) == 0
            && crypto_gcm_decrypt(v.key, v.iv, v.aad, sizeof v.aad, v.ct, sizeof v.ct, v.tag,
                                  16, pt) == 0
            && memcmp(pt, v.pt, sizeof pt) == 0 && crypto_random_public(iv, sizeof iv) == 0)
            (*ok)++;
    }
    return NULL; /* the thread's contexts go with it (ASan: no leak) */
}

static void gcm_is_right_on_several_threads_at_once(void)
{
    pthread_t th[4];
    int ok[4] = {0};
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, gcm_thread, &ok[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(ok[i], 200);
    }
}

static int cmp_iv(const void *a, const void *b) { return memcmp(a, b, 12); }

/* Drawn from a 4 KiB block: across several refills, no value repeats and
 * none is all zero; a request larger than the block still works. */
static void random_public_never_repeats_across_refills(void)
{
    enum { N = 2000 };
    static uint8_t ivs[N][12];
    uint8_t zero[12] = {0};
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(crypto_random_public(ivs[i], 12), 0);
        CU_ASSERT_NOT_EQUAL(memcmp(ivs[i], zero, 12), 0);
    }
    qsort(ivs, N, 12, cmp_iv);
    int repeats = 0;
    for (int i = 1; i < N; i++)
        repeats += memcmp(ivs[i - 1], ivs[i], 12) == 0;
    CU_ASSERT_EQUAL(repeats, 0);
    static uint8_t big[10000];
    CU_ASSERT_EQUAL(crypto_random_public(big, sizeof big), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(big + 9000, zero, sizeof zero), 0);
    CU_ASSERT_EQUAL(crypto_random_public(NULL, 1), -1);
    CU_ASSERT_EQUAL(crypto_random_public(NULL, 0), 0);
    crypto_thread_release(); /* and made again on next use */
    CU_ASSERT_EQUAL(crypto_random_public(ivs[0], 12), 0);
}

/* NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt). Our CBC always adds PKCS#7
 * padding, so the 64-byte vector gets a fifth block (a full block of 0x10),
 * whose ciphertext was computed with Python `cryptography`. */
#define CBC_KEY "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
#define CBC_IV "000102030405060708090a0b0c0d0e0f"
#define CBC_PT                                                                           \
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"                   \
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
#define CBC_CT                                                                           \
    "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"                   \
    "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"
#define CBC_PAD_BLOCK_CT "3f461796d6b0d6b2e0c2a72b4d80e644"

static void cbc_encrypt_matches_sp800_38a_f25(void)
{
    uint8_t key[32], iv[16], pt[64], ct[80];
    unhex(CBC_KEY, key, sizeof key);
    unhex(CBC_IV, iv, sizeof iv);
    unhex(CBC_PT, pt, sizeof pt);
    size_t ct_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_cbc_encrypt(key, iv, pt, sizeof pt, ct, &ct_len), 0);
    assert_hex(ct, ct_len, CBC_CT CBC_PAD_BLOCK_CT);
}

static void cbc_decrypt_matches_sp800_38a_f25(void)
{
    uint8_t key[32], iv[16], ct[80], pt[80];
    unhex(CBC_KEY, key, sizeof key);
    unhex(CBC_IV, iv, sizeof iv);
    unhex(CBC_CT CBC_PAD_BLOCK_CT, ct, sizeof ct);
    size_t pt_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_cbc_decrypt(key, iv, ct, sizeof ct, pt, &pt_len), 0);
    assert_hex(pt, pt_len, CBC_PT);
}

static void cbc_decrypt_rejects_bad_padding(void)
{
    uint8_t key[32], iv[16], ct[80], pt[80];
    unhex(CBC_KEY, key, sizeof key);
    unhex(CBC_IV, iv, sizeof iv);
    unhex(CBC_CT CBC_PAD_BLOCK_CT, ct, sizeof ct);
    size_t pt_len = 999;
    /* Without the padding block, the last plaintext byte 0x10 of the vector
     * claims 16 bytes of padding, but they are not all 0x10. */
    CU_ASSERT_EQUAL(crypto_cbc_decrypt(key, iv, ct, 64, pt, &pt_len), -1);
    CU_ASSERT_EQUAL(pt_len, 999);
    /* Flipping a bit of the second-to-last block garbles the padding. */
    ct[63] ^= 0x01;
    CU_ASSERT_EQUAL(crypto_cbc_decrypt(key, iv, ct, sizeof ct, pt, &pt_len), -1);
    CU_ASSERT_EQUAL(pt_len, 999);
}

static void cbc_decrypt_rejects_length_not_positive_multiple_of_16(void)
{
    uint8_t key[32] = {0}, iv[16] = {0}, ct[48] = {0}, pt[48];
    size_t pt_len = 999;
    CU_ASSERT_EQUAL(crypto_cbc_decrypt(key, iv, ct, 0, pt, &pt_len), -1);
    CU_ASSERT_EQUAL(crypto_cbc_decrypt(key, iv, ct, 15, pt, &pt_len), -1);
    CU_ASSERT_EQUAL(crypto_cbc_decrypt(key, iv, ct, 33, pt, &pt_len), -1);
    CU_ASSERT_EQUAL(pt_len, 999);
}

static void cbc_round_trips_empty_plaintext(void)
{
    uint8_t key[32] = {3}, iv[16] = {4}, ct[16], pt[16];
    size_t ct_len = 0, pt_len = 99;
    CU_ASSERT_EQUAL_FATAL(crypto_cbc_encrypt(key, iv, NULL, 0, ct, &ct_len), 0);
    CU_ASSERT_EQUAL(ct_len, 16);
    CU_ASSERT_EQUAL_FATAL(crypto_cbc_decrypt(key, iv, ct, ct_len, pt, &pt_len), 0);
    CU_ASSERT_EQUAL(pt_len, 0);
}

/* ---- RSA ----------------------------------------------------------------- */

static void rsa_generate_oaep_round_trip_and_fingerprint_format(void)
{
    EVP_PKEY *key = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_generate(2048, &key), 0);
    CU_ASSERT_EQUAL(crypto_pkey_size(key), 256);

    char fp[CRYPTO_FINGERPRINT_LEN];
    CU_ASSERT_EQUAL(crypto_fingerprint(key, fp), 0);
    CU_ASSERT_TRUE(is_fingerprint(fp));

    /* The public half alone, through PEM, has the same fingerprint. */
    char *pem = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_pem(key, &pem), 0);
    CU_ASSERT_EQUAL(strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27), 0);
    EVP_PKEY *pub = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_from_pem(pem, strlen(pem), &pub), 0);
    char fp2[CRYPTO_FINGERPRINT_LEN];
    CU_ASSERT_EQUAL(crypto_fingerprint(pub, fp2), 0);
    CU_ASSERT_STRING_EQUAL(fp, fp2);

    uint8_t secret[32], ct[256], pt[256];
    size_t ct_len = 0, pt_len = 0;
    CU_ASSERT_EQUAL(crypto_random(secret, sizeof secret), 0);
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_oaep_encrypt(pub, secret, sizeof secret, ct, sizeof ct,
                                                  &ct_len), 0);
    CU_ASSERT_EQUAL(ct_len, 256);
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_oaep_decrypt(key, ct, ct_len, pt, sizeof pt, &pt_len), 0);
    CU_ASSERT_EQUAL(pt_len, 32);
    CU_ASSERT_EQUAL(memcmp(pt, secret, 32), 0);

    ct[100] ^= 1;
    pt_len = 777;
    CU_ASSERT_EQUAL(crypto_rsa_oaep_decrypt(key, ct, ct_len, pt, sizeof pt, &pt_len), -1);
    CU_ASSERT_EQUAL(pt_len, 777);
    CU_ASSERT_EQUAL(crypto_rsa_oaep_decrypt(key, ct, ct_len - 1, pt, sizeof pt, &pt_len), -1);

    free(pem);
    crypto_pkey_free(pub);
    crypto_pkey_free(key);
}

static void rsa_generate_refuses_fewer_than_2048_bits(void)
{
    EVP_PKEY *key = (EVP_PKEY *)&key;
    CU_ASSERT_EQUAL(crypto_rsa_generate(1024, &key), -1);
    CU_ASSERT_PTR_EQUAL(key, (EVP_PKEY *)&key);
}

/* Refused before any work: generating even 8200 bits would take seconds. */
static void rsa_generate_refuses_more_than_8192_bits(void)
{
    EVP_PKEY *key = (EVP_PKEY *)&key;
    CU_ASSERT_EQUAL(crypto_rsa_generate(CRYPTO_RSA_MAX_BITS + 8, &key), -1);
    CU_ASSERT_EQUAL(crypto_rsa_generate(9216, &key), -1);
    CU_ASSERT_PTR_EQUAL(key, (EVP_PKEY *)&key);
}

/* The overflow of issue 10 item 2: a valid ciphertext whose plaintext is
 * longer than the caller's buffer. AddressSanitizer does not see writes
 * made inside libcrypto (not instrumented), so the bytes past out_cap are
 * guard bytes checked here. */
static void oaep_decrypt_fails_when_plaintext_exceeds_the_buffer(void)
{
    EVP_PKEY *key = load_test_key();
    uint8_t long_pt[190]; /* the most OAEP-SHA-256 carries in 2048 bits */
    uint8_t ct[256];
    size_t ct_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_random(long_pt, sizeof long_pt), 0);
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_oaep_encrypt(key, long_pt, sizeof long_pt, ct, sizeof ct,
                                                  &ct_len), 0);
    uint8_t *buf = malloc(256);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    memset(buf, 0xA5, 256);
    size_t pt_len = 777;
    CU_ASSERT_EQUAL(crypto_rsa_oaep_decrypt(key, ct, ct_len, buf, CRYPTO_KEY_LEN, &pt_len), -1);
    CU_ASSERT_EQUAL(pt_len, 777);
    size_t touched = 0;
    for (size_t i = CRYPTO_KEY_LEN; i < 256; i++)
        touched += buf[i] != 0xA5;
    CU_ASSERT_EQUAL(touched, 0);
    free(buf);

    /* A buffer of the modulus size holds it. */
    uint8_t *whole = malloc(256);
    CU_ASSERT_PTR_NOT_NULL_FATAL(whole);
    CU_ASSERT_EQUAL(crypto_rsa_oaep_decrypt(key, ct, ct_len, whole, 256, &pt_len), 0);
    CU_ASSERT_EQUAL(pt_len, sizeof long_pt);
    CU_ASSERT_EQUAL(memcmp(whole, long_pt, sizeof long_pt), 0);
    free(whole);
    crypto_pkey_free(key);
}

/* A peer's key may be larger than the buffer the caller sized for it. */
static void oaep_encrypt_fails_when_the_modulus_exceeds_the_buffer(void)
{
    EVP_PKEY *key = load_test_key();
    uint8_t secret[32] = {1};
    uint8_t *ct = malloc(512);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ct);
    memset(ct, 0xA5, 512);
    size_t ct_len = 777;
    CU_ASSERT_EQUAL(crypto_rsa_oaep_encrypt(key, secret, sizeof secret, ct, 255, &ct_len), -1);
    CU_ASSERT_EQUAL(ct_len, 777);
    size_t touched = 0;
    for (size_t i = 255; i < 512; i++)
        touched += ct[i] != 0xA5;
    CU_ASSERT_EQUAL(touched, 0); /* guard bytes, as in the decrypt test */
    free(ct);
    crypto_pkey_free(key);
}

static void fingerprint_is_sha256_of_der_spki(void)
{
    EVP_PKEY *key = load_test_key();
    char fp[CRYPTO_FINGERPRINT_LEN];
    CU_ASSERT_EQUAL(crypto_fingerprint(key, fp), 0);
    CU_ASSERT_STRING_EQUAL(fp, test_key_fingerprint);
    crypto_pkey_free(key);
}

static void oaep_decrypts_python_cryptography_ciphertext(void)
{
    /* Interoperability: pins SHA-256 for both OAEP and MGF1. */
    EVP_PKEY *key = load_test_key();
    uint8_t *ct = NULL;
    size_t ct_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_b64_decode(test_key_oaep_ct_b64, strlen(test_key_oaep_ct_b64),
                                            &ct, &ct_len), 0);
    uint8_t pt[256];
    size_t pt_len = 0;
    CU_ASSERT_EQUAL(crypto_rsa_oaep_decrypt(key, ct, ct_len, pt, sizeof pt, &pt_len), 0);
    CU_ASSERT_EQUAL(pt_len, 32);
    for (size_t i = 0; i < 32 && i < pt_len; i++)
        CU_ASSERT_EQUAL(pt[i], i);
    free(ct);
    crypto_pkey_free(key);
}

typedef struct {
    EVP_PKEY *key;
    const uint8_t *ct;
    size_t ct_len;
    int ok;
} oaep_job;

static void *oaep_thread(void *arg)
{
    oaep_job *job = arg;
    for (int i = 0; i < 8; i++) {
        uint8_t pt[256];
        size_t pt_len = 0;
        int rc = crypto_rsa_oaep_decrypt(job->key, job->ct, job->ct_len, pt, sizeof pt,
                                         &pt_len);
        if (rc == 0 && pt_len == 32 && pt[31] == 31)
            job->ok++;
    }
    return NULL;
}

static void oaep_decrypt_is_safe_from_several_threads(void)
{
    EVP_PKEY *key = load_test_key();
    uint8_t *ct = NULL;
    size_t ct_len = 0;
    CU_ASSERT_EQUAL_FATAL(crypto_b64_decode(test_key_oaep_ct_b64, strlen(test_key_oaep_ct_b64),
                                            &ct, &ct_len), 0);
    pthread_t th[4];
    oaep_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (oaep_job){key, ct, ct_len, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, oaep_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(jobs[i].ok, 8);
    }
    free(ct);
    crypto_pkey_free(key);
}

static void pubkey_from_pem_rejects_garbage_and_non_rsa(void)
{
    EVP_PKEY *key = NULL;
    const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    CU_ASSERT_EQUAL(crypto_pubkey_from_pem(junk, strlen(junk), &key), -1);
    CU_ASSERT_EQUAL(crypto_pubkey_from_pem("hello", 5, &key), -1);
    CU_ASSERT_PTR_NULL(key);

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ec);
    char *pem = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_pubkey_pem(ec, &pem), 0);
    CU_ASSERT_EQUAL(crypto_pubkey_from_pem(pem, strlen(pem), &key), -1);
    CU_ASSERT_PTR_NULL(key);
    free(pem);
    EVP_PKEY_free(ec);
}

/* ---- key file ------------------------------------------------------------ */

static void load_or_generate_creates_0600_file_and_reuses_it(void)
{
    char dir[256], path[256];
    tmp_make();
    tmp_path(dir, sizeof dir, "data/keys");
    tmp_path(path, sizeof path, "data/keys/server_key.pem");

    EVP_PKEY *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(crypto_rsa_load_or_generate(path, 2048, &a), 0);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_TRUE(S_ISREG(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL_FATAL(stat(dir, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);

    FILE *f = fopen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char line[64] = "";
    CU_ASSERT_PTR_NOT_NULL(fgets(line, sizeof line, f));
    fclose(f);
    CU_ASSERT_STRING_EQUAL(line, "-----BEGIN PRIVATE KEY-----\n"); /* PKCS#8 */

    CU_ASSERT_EQUAL_FATAL(crypto_rsa_load_or_generate(path, 2048, &b), 0);
    char fa[CRYPTO_FINGERPRINT_LEN], fb[CRYPTO_FINGERPRINT_LEN];
    CU_ASSERT_EQUAL(crypto_fingerprint(a, fa), 0);
    CU_ASSERT_EQUAL(crypto_fingerprint(b, fb), 0);
    CU_ASSERT_STRING_EQUAL(fa, fb);
    CU_ASSERT_EQUAL(crypto_pkey_size(b), 256);

    crypto_pkey_free(a);
    crypto_pkey_free(b);
    rm_rf(tmp_root);
}

static void load_or_generate_refuses_group_or_world_accessible_file(void)
{
    char path[256];
    tmp_make();
    tmp_path(path, sizeof path, "key.pem");
    write_file(path, test_key_pem, sizeof test_key_pem - 1, 0644);
    EVP_PKEY *key = NULL;
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(path, 2048, &key), -1);
    CU_ASSERT_PTR_NULL(key);
    CU_ASSERT_EQUAL(chmod(path, 0640), 0);
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(path, 2048, &key), -1);
    CU_ASSERT_EQUAL(chmod(path, 0602), 0);
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(path, 2048, &key), -1);
    CU_ASSERT_PTR_NULL(key);
    /* The file was refused, not replaced. */
    struct stat st;
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL((size_t)st.st_size, sizeof test_key_pem - 1);
    CU_ASSERT_EQUAL(chmod(path, 0400), 0);
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(path, 2048, &key), 0);
    crypto_pkey_free(key);
    rm_rf(tmp_root);
}

static void load_or_generate_refuses_to_generate_more_than_8192_bits(void)
{
    char path[256];
    tmp_make();
    tmp_path(path, sizeof path, "big.pem");
    EVP_PKEY *key = NULL;
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(path, 9216, &key), -1);
    CU_ASSERT_PTR_NULL(key);
    struct stat st;
    CU_ASSERT_EQUAL(stat(path, &st), -1); /* nothing written */
    rm_rf(tmp_root);
}

static void load_or_generate_refuses_small_rsa_or_non_rsa_key(void)
{
    char small_path[256], ec_path[256], junk_path[256];
    tmp_make();
    tmp_path(small_path, sizeof small_path, "small.pem");
    tmp_path(ec_path, sizeof ec_path, "ec.pem");
    tmp_path(junk_path, sizeof junk_path, "junk.pem");

    EVP_PKEY *small = EVP_RSA_gen(1024);
    CU_ASSERT_PTR_NOT_NULL_FATAL(small);
    write_pkey_file(small_path, small);
    EVP_PKEY_free(small);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ec);
    write_pkey_file(ec_path, ec);
    EVP_PKEY_free(ec);
    write_file(junk_path, "not a key\n", 10, 0600);

    EVP_PKEY *key = NULL;
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(small_path, 2048, &key), -1);
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(ec_path, 2048, &key), -1);
    CU_ASSERT_EQUAL(crypto_rsa_load_or_generate(junk_path, 2048, &key), -1);
    CU_ASSERT_PTR_NULL(key);
    rm_rf(tmp_root);
}

static const sm_test_case cases[] = {
    SM_TEST(b64_encode_matches_rfc4648_vectors),
    SM_TEST(b64_decode_matches_rfc4648_vectors),
    SM_TEST(b64_round_trips_all_byte_values),
    SM_TEST(b64_decode_rejects_length_not_multiple_of_4),
    SM_TEST(b64_decode_rejects_characters_outside_standard_alphabet),
    SM_TEST(b64_decode_rejects_padding_not_at_the_end),
    SM_TEST(b64_decode_rejects_nonzero_trailing_bits),
    SM_TEST(b64_decode_of_empty_string_is_empty_buffer),
    SM_TEST(hkdf_matches_rfc5869_test_case_1),
    SM_TEST(hkdf_matches_rfc5869_test_case_3_empty_salt_and_info),
    SM_TEST(hmac_matches_rfc4231_test_case_2),
    SM_TEST(memeq_is_one_only_for_equal_bytes),
    SM_TEST(wipe_zeroes_memory),
    SM_TEST(random_fills_distinct_buffers),
    SM_TEST(gcm_encrypt_matches_gcm_spec_test_case_16),
    SM_TEST(gcm_decrypt_matches_gcm_spec_test_case_16),
    SM_TEST(gcm_decrypt_rejects_truncated_tag),
    SM_TEST(gcm_decrypt_rejects_tampering_and_wipes_output),
    SM_TEST(gcm_round_trips_empty_plaintext),
    SM_TEST(gcm_and_hmac_contexts_are_rekeyed_between_calls),
    SM_TEST(gcm_is_right_on_several_threads_at_once),
    SM_TEST(random_public_never_repeats_across_refills),
    SM_TEST(cbc_encrypt_matches_sp800_38a_f25),
    SM_TEST(cbc_decrypt_matches_sp800_38a_f25),
    SM_TEST(cbc_decrypt_rejects_bad_padding),
    SM_TEST(cbc_decrypt_rejects_length_not_positive_multiple_of_16),
    SM_TEST(cbc_round_trips_empty_plaintext),
    SM_TEST(rsa_generate_oaep_round_trip_and_fingerprint_format),
    SM_TEST(rsa_generate_refuses_fewer_than_2048_bits),
    SM_TEST(rsa_generate_refuses_more_than_8192_bits),
    SM_TEST(fingerprint_is_sha256_of_der_spki),
    SM_TEST(oaep_decrypts_python_cryptography_ciphertext),
    SM_TEST(oaep_decrypt_fails_when_plaintext_exceeds_the_buffer),
    SM_TEST(oaep_encrypt_fails_when_the_modulus_exceeds_the_buffer),
    SM_TEST(oaep_decrypt_is_safe_from_several_threads),
    SM_TEST(pubkey_from_pem_rejects_garbage_and_non_rsa),
    SM_TEST(load_or_generate_creates_0600_file_and_reuses_it),
    SM_TEST(load_or_generate_refuses_group_or_world_accessible_file),
    SM_TEST(load_or_generate_refuses_small_rsa_or_non_rsa_key),
    SM_TEST(load_or_generate_refuses_to_generate_more_than_8192_bits),
    SM_TEST_END};

int main(void)
{
    return sm_test_run("crypto", cases, NULL, NULL);
}
