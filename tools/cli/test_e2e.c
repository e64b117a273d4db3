/* The end-to-end format (PROTOCOL.md Appendix A) and the CLI's files,
 * without a server: ctest cli.e2e. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "e2e.h"
#include "files.h"
#include "pinning.h"
#include "seen.h"
#include "serverdir.h"
#include "safemessenger/testhost_suite.h"

/* A message alice -> Bob made independently with Python `cryptography`
 * (AESGCM, OAEP-SHA256, PSS salt 32), plaintext
 * {"text":"héllo\nBob","sent_at":1700000000.5,"id":"AAECAwQFBgcICQoLDA0ODw=="}. */
static const char VEC_BOB_PRIV[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQD31Iophrja0DQG\n"
    "hQvRnGxlPFq4Pu45iizOnUD+Ju1DBCzuVlAqal1yKEV3/nCzqAbzg5uoP2U8FYK2\n"
    "3yOdltIU1GYD1Foe2RdK/bKRGpgwvtjGPxW15g5cfVO/z8/BTVq4/MVZFlD2+et3\n"
    "9PIO9R7Dk8vl5sHuEfR7lfQxZEEkfZ7XpQplpoQ0PeB42B0vPuPpxQ8YCWv00b5u\n"
    "bvDMGztpTuGtxZUJezCqH6EBzHDoT8j1tFO3hA3K09fBH/vb7fJVUy9vs3fHaCdv\n"
    "t7JtedITz4fqo/zxSGZ6nI2emDVzihaE8o8ajIIrmq30onTyHKl+VDOgA9CEmAC3\n"
    "DvXyjcppAgMBAAECggEAWc+2OhJOj02AbRRuEgpD5fQXVEnJ/yQp1L58PR5SQUUU\n"
    "G1NAPf7J2oLpmfClWxX7XuhE0pYW081fz3HR8FwlydKnHaApAKDfpheGTLt8h73B\n"
    "xSY7ce3rKm1omkxvF7g2tm8z/XLu6HHteU1VI0KFYY8AB1K22NW86cSP+A5C5TvC\n"
    "cXFedJm0B1olHKKeqTq0AXBwIqXulTXa40H/evdDdi5xE8G7P37EiY9c+zLnPzF2\n"
    "pzJbVKdhtoFuanMycj7Itmn2/pWIa/dNxQ5z4yTL94rlpk/+PXl58L3T/+sVws9a\n"
    "FEtEkZ1PwHiw0JXa0NTdA8G2TPsbD3TbxByAkDsH+QKBgQD9t8Xl16fV/0UWfwW2\n"
    "sUpTLO+EAxfhUvrlG/3OwAnuQh70haPTve3T7xdgzVOnguXi6YaWoesEn4rYXClX\n"
    "Y60cBR0wPWV5KSqrt/doJ6Epyis6UBvuoWuzdYTR2JsQHQjpgOSoRBrA8jrHkCpI\n"
    "demmI36adXCIFaLavyES8LBPVwKBgQD6DzWc05T/NcoGX2fTYe/aOhowLpjAuu2M\n"
    "XrLl7u9ST7eTn+ucw0jZ09iwMTI+lXVkANQNVWFC944wRHVUG6CWRgG5sBxhCQp6\n"
    "6o+JnUGW1/qxv6LuwcbuoAgjntl+F8faxrqoSejj+lAglcPet+sIb5Cy2xkHFdwV\n"
    "uZS3TTFcPwKBgDJN95zkr1BMtqQJN1bLvBLVu/+OpXN1gm1eqWoOxWlKDt0oihz3\n"
    "cWot45K74zQ5Td85sge3vuNBxsOzMjczeiUuFmV0JuRo9x7o8NLj2J5yiTOcoo0j\n"
    "0DjauiTpL4V4XEX/2lZKeot6+5CJ0vhe+J6KNxXk5xT0RT/d2W7p7estAoGBAMUN\n"
    "yUTto0O+YpbFBi+YxQems852Wd+/LsVoNvhlYujtcw/9fRGK/tTRUbf+/MY+x0Ro\n"
    "NrLPLpc0ODOnLwJ5xwHE50UqGCMLmdulDjn216IET0VVbBNUVuzi5acUXfY0zUSF\n"
    "SMCnhcRqFEypWLIhIzEBofigGcfwnP/tv9j3FsfHAoGALm9fIk602SwP/Fgz2c3a\n"
    "hqLx/D9kJOqFg3rel5HaFjKiFjCDdYoFE+UDMNumFJbLnNFtlNK88rAI9P26DeUO\n"
    "+VJblZivpIBlDsRg7vthXZbHho5n33LwAgYZernp6nTqPj/+pFnO+jXA+Fcs4yKw\n"
    "PakU8EJO1eRRziwzVtF6itc=\n"
    "-----END PRIVATE KEY-----\n";

static const char VEC_ALICE_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApGU1u1ivahiyFkzGaO+6\n"
    "7fXhYBdrMpeVJ5qt+P37TbEYz6l5S24eLihM2H14ulYoOec/AUqqmjDKvGHvJ3jz\n"
    "iN0pUWc0brGMABRKgRa4E2L6OUj8wfwfhWueVrLluEvw9rt544InkPF1nzYAQ4t5\n"
    "iuD5EXJC8GFs5yhiXoDx10vdT1Mo631l09+yrzIKU1l3bP3cP7hiySMOmCIiEQCP\n"
    "2XT98Bd3X4cUjSjQ1tJjb51QTQ/IM0QPlFCycRqDiu4qbLqdvBCyhBkkE0NZKuf1\n"
    "4f/4arRDKaAZs2jXw3GnVkB/hsTwx3I/jPGGnkkdKMEQkj6P7XyBAUvQ5mRF76lS\n"
    "UwIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static const char VEC_CONTENT[] =
    "{\"v\":1,\"ek\":\"r5tLnGmGHXSie4sNrkB7WfSilKP6Ue9AxKDPIFrBhHn0qaGC37UTObzZLe5gXoJe8TfRDtQNGDut4xlo8DwkMo37BgdvcXH71McTu5G5vw+lZEIuN5v7Xq9syOqC2IJd0BKSNVyngy8cxI70Y7wigpRf+sERhScBy2X+jCTLbGaToq92d0Sph+Ey8txk4Lhi7JcmolMW+NqNH29WvqgSYRGDUzagXBkB26Vhyx8EfeQaq5Ni0iG+Cq9mxTVgBqWFu7/YV4FVJigMmu7adtCIwbVwS8/40t0KxLXAnZTEQIl2Z+WQRORdGXUU1LqTTHaM7AYbjgNtvVW6Fmmn5G341Q==\",\"iv\":\"DYstcvkesPYKQzsz\",\"ct\":\"DD6Wo+203ND+WZX9M2FkOB3jqnM9f1WVSBfkPH3Oo1et0JidLWG6M+BZgb/L8647z0y9ZdzFL73EEJBbLDQrkJK0QlqFkqA3e7jzTJeAMgheCNgZwJpkUrGICEPe\"}";
static const char VEC_SIGNATURE[] =
    "cD++2seStSFMCd8bsK1Io1D+eKEsVgk/PQ5Xa9SnLhVeST72NCMdTGDvzvKpHO3FuWV7SwTRbGm5v6cAcpmNPhELuYBRFYyqC98Re1R8LOIlQnzjEY+8eSxBPKBmWm9/g9BdLySjDUSb+pzp3L2VwPBsHhptaN6bBzB5uQZKbKWHqmLgRDZUiFUvMuldYbAQIzcIDnVQMWMD8Fe+T9abYzhaeXvJYTHAP6Lx9Lbi8G6WZhCfb6EKgRpkrRX9+wXclLmM7r7Q02bfMZqrM8eZogCjE6gVvjrng8wWMGQtFcoyeMC2Qyck07NL2V9xl6X3lHZ4k3Okh2QU9lBrBJU9Pw==";

static char tmpdir[256];

static int init(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cli_test_e2e.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int fini(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static EVP_PKEY *keys[2];   /* 2048-bit keys of "alice" and "Bob", made once */

static EVP_PKEY *key_of(int i)
{
    if (!keys[i])
        CU_ASSERT_FATAL(e2e_key_generate(2048, &keys[i]) == 0);
    return keys[i];
}

static EVP_PKEY *pub_of(EVP_PKEY *priv)
{
    char *pem = NULL;
    EVP_PKEY *pub = NULL;
    CU_ASSERT_FATAL(crypto_pubkey_pem(priv, &pem) == 0);
    CU_ASSERT_FATAL(e2e_pubkey_parse(pem, &pub) == 0);
    free(pem);
    return pub;
}

static void path_in_tmp(char *out, size_t len, const char *name)
{
    CU_ASSERT_FATAL(files_join(out, len, tmpdir, name, NULL) == 0);
}

static void encrypt_then_decrypt_with_signature_roundtrips(void)
{
    EVP_PKEY *bob_pub = pub_of(key_of(1)), *alice_pub = pub_of(key_of(0));
    char *content = NULL, *id = NULL, *sig = NULL;
    CU_ASSERT_FATAL(e2e_encrypt(bob_pub, "alice", "Bob", "hi \xc3\xa9 there", 1700000000.25, &content, &id) == 0);
    /* Compact JSON with the members in Appendix A's order. */
    CU_ASSERT_EQUAL(strncmp(content, "{\"v\":1,\"ek\":\"", 13), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(content, "\",\"iv\":\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(content, "\",\"ct\":\""));
    CU_ASSERT_PTR_NULL(strchr(content, ' '));
    CU_ASSERT_EQUAL(strlen(id), 24);
    CU_ASSERT_EQUAL_FATAL(e2e_sign(key_of(0), "alice", "Bob", content, &sig), 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", content, sig), 0);
    e2e_plain p = {0};
    CU_ASSERT_EQUAL_FATAL(e2e_decrypt(key_of(1), "alice", "Bob", content, &p), 0);
    CU_ASSERT_STRING_EQUAL(p.text, "hi \xc3\xa9 there");
    CU_ASSERT_EQUAL(p.text_len, 11);
    CU_ASSERT_DOUBLE_EQUAL(p.sent_at, 1700000000.25, 1e-6);
    CU_ASSERT_STRING_EQUAL(p.id, id);
    e2e_plain_clear(&p);
    free(content);
    free(id);
    free(sig);
    EVP_PKEY_free(bob_pub);
    EVP_PKEY_free(alice_pub);
}

static void decrypt_fails_when_names_differ_from_the_aad(void)
{
    EVP_PKEY *bob_pub = pub_of(key_of(1));
    char *content = NULL, *id = NULL;
    CU_ASSERT_FATAL(e2e_encrypt(bob_pub, "alice", "Bob", "x", 1, &content, &id) == 0);
    e2e_plain p = {0};
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(1), "mallory", "Bob", content, &p), -1);
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(1), "alice", "bob", content, &p), -1);   /* "as registered" */
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(0), "alice", "Bob", content, &p), -1);   /* not our key */
    CU_ASSERT_PTR_NULL(p.text);
    free(content);
    free(id);
    EVP_PKEY_free(bob_pub);
}

static void decrypt_fails_on_a_flipped_ciphertext_bit(void)
{
    EVP_PKEY *bob_pub = pub_of(key_of(1));
    char *content = NULL, *id = NULL;
    CU_ASSERT_FATAL(e2e_encrypt(bob_pub, "alice", "Bob", "secret", 1, &content, &id) == 0);
    json_t *env = json_loads(content, 0, NULL);
    CU_ASSERT_FATAL(env != NULL);
    uint8_t *ct = NULL;
    size_t ct_len = 0;
    const char *b64 = json_string_value(json_object_get(env, "ct"));
    CU_ASSERT_FATAL(crypto_b64_decode(b64, strlen(b64), &ct, &ct_len) == 0);
    CU_ASSERT_EQUAL(ct_len, strlen("{\"text\":\"secret\",\"sent_at\":1.0,\"id\":\"\"}") + 24 + 16);
    ct[0] ^= 1;
    char *nb64 = NULL;
    size_t nlen = 0;
    CU_ASSERT_FATAL(crypto_b64_encode(ct, ct_len, &nb64, &nlen) == 0);
    json_object_set_new(env, "ct", json_string(nb64));
    char *tampered = json_dumps(env, JSON_COMPACT);
    e2e_plain p = {0};
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(1), "alice", "Bob", tampered, &p), -1);
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(1), "alice", "Bob", "{\"v\":2}", &p), -1);
    CU_ASSERT_EQUAL(e2e_decrypt(key_of(1), "alice", "Bob", "not json", &p), -1);
    free(tampered);
    free(nb64);
    free(ct);
    json_decref(env);
    free(content);
    free(id);
    EVP_PKEY_free(bob_pub);
}

static void verify_rejects_other_text_sender_or_key(void)
{
    EVP_PKEY *alice_pub = pub_of(key_of(0)), *bob_pub = pub_of(key_of(1));
    char *sig = NULL;
    CU_ASSERT_FATAL(e2e_sign(key_of(0), "alice", "Bob", "plain text", &sig) == 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", "plain text", sig), 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", "plain texT", sig), -1);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alicf", "Bob", "plain text", sig), -1);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Carol", "plain text", sig), -1);
    CU_ASSERT_EQUAL(e2e_verify(bob_pub, "alice", "Bob", "plain text", sig), -1);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", "plain text", "AAAA"), -1);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", "plain text", "not base64!"), -1);
    free(sig);
    EVP_PKEY_free(alice_pub);
    EVP_PKEY_free(bob_pub);
}

/* Appendix A fixes the salt at 32 bytes: a PSS signature with another salt
 * length is not accepted. */
static void verify_rejects_pss_with_another_salt_length(void)
{
    EVP_PKEY *alice_pub = pub_of(key_of(0));
    const char *text = "safemessenger e2e v1\nalice\nBob\nhello";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    CU_ASSERT_FATAL(EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key_of(0)) == 1);
    CU_ASSERT_FATAL(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
    CU_ASSERT_FATAL(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 20) == 1);
    unsigned char raw[256];
    size_t raw_len = sizeof raw;
    CU_ASSERT_FATAL(EVP_DigestSign(md, raw, &raw_len, (const unsigned char *)text, strlen(text)) == 1);
    char *b64 = NULL;
    size_t b64_len = 0;
    CU_ASSERT_FATAL(crypto_b64_encode(raw, raw_len, &b64, &b64_len) == 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", "hello", b64), -1);
    free(b64);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(alice_pub);
}

static void decrypts_and_verifies_an_independent_python_message(void)
{
    char path[512];
    path_in_tmp(path, sizeof path, "vec_bob.pem");
    CU_ASSERT_FATAL(files_write(path, VEC_BOB_PRIV, strlen(VEC_BOB_PRIV)) == 0);
    EVP_PKEY *bob = NULL, *alice_pub = NULL;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(e2e_key_load(path, &bob, why, sizeof why), 0);
    CU_ASSERT_FATAL(e2e_pubkey_parse(VEC_ALICE_PUB, &alice_pub) == 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "Bob", VEC_CONTENT, VEC_SIGNATURE), 0);
    CU_ASSERT_EQUAL(e2e_verify(alice_pub, "alice", "bob", VEC_CONTENT, VEC_SIGNATURE), -1);
    e2e_plain p = {0};
    CU_ASSERT_EQUAL_FATAL(e2e_decrypt(bob, "alice", "Bob", VEC_CONTENT, &p), 0);
    CU_ASSERT_STRING_EQUAL(p.text, "h\xc3\xa9llo\nBob");
    CU_ASSERT_DOUBLE_EQUAL(p.sent_at, 1700000000.5, 1e-9);
    CU_ASSERT_STRING_EQUAL(p.id, "AAECAwQFBgcICQoLDA0ODw==");
    e2e_plain_clear(&p);
    EVP_PKEY_free(bob);
    EVP_PKEY_free(alice_pub);
}

static void key_usable_only_for_rsa_of_2048_bits_or_more(void)
{
    char why[160];
    CU_ASSERT_EQUAL(e2e_key_usable(key_of(0), why, sizeof why), 0);
    EVP_PKEY *small = NULL, *ec = NULL;
    CU_ASSERT_FATAL(e2e_key_generate(1024, &small) == 0);
    CU_ASSERT_EQUAL(e2e_key_usable(small, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "1024 bits"));
    ec = EVP_EC_gen("P-256");
    CU_ASSERT_FATAL(ec != NULL);
    CU_ASSERT_EQUAL(e2e_key_usable(ec, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not an RSA key"));
    char *sig = NULL;
    CU_ASSERT_EQUAL(e2e_sign(small, "a", "b", "c", &sig), -1);
    CU_ASSERT_PTR_NULL(sig);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ec);
}

static void key_files_are_0600_never_replaced_and_checked_on_load(void)
{
    char priv[512], pub[512], why[600];
    path_in_tmp(priv, sizeof priv, "keys/srv_1/alice.pem");
    path_in_tmp(pub, sizeof pub, "keys/srv_1/alice.pub.pem");
    EVP_PKEY *k = NULL;
    CU_ASSERT_EQUAL(e2e_key_load(priv, &k, why, sizeof why), 1);
    CU_ASSERT_EQUAL_FATAL(e2e_key_save(priv, pub, key_of(0)), 0);
    struct stat st;
    CU_ASSERT_FATAL(stat(priv, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_FATAL(stat(pub, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    path_in_tmp(why, sizeof why, "keys/srv_1");
    CU_ASSERT_FATAL(stat(why, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
    CU_ASSERT_EQUAL(e2e_key_save(priv, pub, key_of(1)), -1);   /* exists: not replaced */
    CU_ASSERT_EQUAL_FATAL(e2e_key_load(priv, &k, why, sizeof why), 0);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(k, key_of(0)), 1);
    EVP_PKEY_free(k);
    k = NULL;
    CU_ASSERT_FATAL(chmod(priv, 0640) == 0);
    CU_ASSERT_EQUAL(e2e_key_load(priv, &k, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "readable by others"));
    CU_ASSERT_PTR_NULL(k);
}

static void server_id_is_lowercase_host_and_port(void)
{
    char id[300], dir[300];
    CU_ASSERT_EQUAL(pinning_server_id("ws://LocalHost:8765/chat?x=1", id, sizeof id, dir, sizeof dir), 0);
    CU_ASSERT_STRING_EQUAL(id, "localhost:8765");
    CU_ASSERT_STRING_EQUAL(dir, "localhost_8765");
    CU_ASSERT_EQUAL(pinning_server_id("wss://chat.example.org", id, sizeof id, dir, sizeof dir), 0);
    CU_ASSERT_STRING_EQUAL(id, "chat.example.org:443");
    CU_ASSERT_EQUAL(pinning_server_id("WS://[::1]:09/", id, sizeof id, dir, sizeof dir), 0);
    CU_ASSERT_STRING_EQUAL(id, "[::1]:9");
    CU_ASSERT_STRING_EQUAL(dir, "___1__9");
    CU_ASSERT_EQUAL(pinning_server_id("ws://h", id, sizeof id, dir, sizeof dir), 0);
    CU_ASSERT_STRING_EQUAL(id, "h:80");
    CU_ASSERT_EQUAL(pinning_server_id("http://h/", id, sizeof id, dir, sizeof dir), -1);
    CU_ASSERT_EQUAL(pinning_server_id("ws://u@h/", id, sizeof id, dir, sizeof dir), -1);
    CU_ASSERT_EQUAL(pinning_server_id("ws://h:0/", id, sizeof id, dir, sizeof dir), -1);
    CU_ASSERT_EQUAL(pinning_server_id("ws://h:65536/", id, sizeof id, dir, sizeof dir), -1);
    CU_ASSERT_EQUAL(pinning_server_id("ws://:80/", id, sizeof id, dir, sizeof dir), -1);
}

#define FP_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void server_pin_recorded_then_change_refused_unless_accepted(void)
{
    char dir[512], path[600];
    path_in_tmp(dir, sizeof dir, "pins");
    CU_ASSERT_FATAL(files_mkdirs(dir) == 0);
    CU_ASSERT_FATAL(files_join(path, sizeof path, dir, "known_servers", NULL) == 0);
    const char *start = "# my servers\nother:1 " FP_B "\n";
    CU_ASSERT_FATAL(files_write(path, start, strlen(start)) == 0);
    pin_result r;
    char old[CRYPTO_FINGERPRINT_LEN] = "";
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:80", FP_A, 0, &r, old), 0);
    CU_ASSERT_EQUAL(r, PIN_NEW);
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:80", FP_A, 0, &r, old), 0);
    CU_ASSERT_EQUAL(r, PIN_MATCH);
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:8", FP_B, 0, &r, old), 0);   /* a prefix is another server */
    CU_ASSERT_EQUAL(r, PIN_NEW);
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:80", FP_B, 0, &r, old), 0);
    CU_ASSERT_EQUAL(r, PIN_CHANGED);
    CU_ASSERT_STRING_EQUAL(old, FP_A);
    char *data = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(files_read(path, 65536, &data, &len) == 0);
    CU_ASSERT_STRING_EQUAL(data, "# my servers\nother:1 " FP_B "\nh:80 " FP_A "\nh:8 " FP_B "\n");
    free(data);
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:80", FP_B, 1, &r, old), 0);
    CU_ASSERT_EQUAL(r, PIN_REPLACED);
    CU_ASSERT_FATAL(files_read(path, 65536, &data, &len) == 0);
    CU_ASSERT_STRING_EQUAL(data, "# my servers\nother:1 " FP_B "\nh:80 " FP_B "\nh:8 " FP_B "\n");
    free(data);
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(pinning_check_server(dir, "h:80", FP_B, 0, &r, old), 0);
    CU_ASSERT_EQUAL(r, PIN_MATCH);
}

static void contact_pins_are_per_lowercase_name(void)
{
    char dir[512];
    path_in_tmp(dir, sizeof dir, "cfg");
    char *pem = NULL;
    CU_ASSERT_EQUAL(pinning_contact_load(dir, "srv_1", "Alice", &pem), 1);
    CU_ASSERT_EQUAL(pinning_contact_save(dir, "srv_1", "Alice", VEC_ALICE_PUB), 0);
    CU_ASSERT_EQUAL_FATAL(pinning_contact_load(dir, "srv_1", "ALICE", &pem), 0);
    CU_ASSERT_STRING_EQUAL(pem, VEC_ALICE_PUB);
    free(pem);
    CU_ASSERT_EQUAL(pinning_contact_load(dir, "srv_1", "../x", &pem), -1);   /* never a path */
    CU_ASSERT_EQUAL(pinning_contact_save(dir, "srv_1", "a/b/c", VEC_ALICE_PUB), -1);
}

static void seen_tells_replay_from_the_same_message_listed_again(void)
{
    char path[512];
    path_in_tmp(path, sizeof path, "seen/srv_1/bob");
    seen_store *s = NULL;
    CU_ASSERT_EQUAL_FATAL(seen_open(path, 5, &s), 0);
    seen_result r;
    CU_ASSERT_EQUAL(seen_check(s, "AAECAwQFBgcICQoLDA0ODw==", 7, &r), 0);
    CU_ASSERT_EQUAL(r, SEEN_NEW);
    CU_ASSERT_EQUAL(seen_check(s, "AAECAwQFBgcICQoLDA0ODw==", 7, &r), 0);
    CU_ASSERT_EQUAL(r, SEEN_SAME);
    CU_ASSERT_EQUAL(seen_check(s, "AAECAwQFBgcICQoLDA0ODw==", 8, &r), 0);
    CU_ASSERT_EQUAL(r, SEEN_REPLAY);
    CU_ASSERT_EQUAL(seen_check(s, "bad id\n", 9, &r), -1);
    seen_close(s);
    /* Remembered across runs. */
    CU_ASSERT_EQUAL_FATAL(seen_open(path, 5, &s), 0);
    CU_ASSERT_EQUAL(seen_count(s), 1);
    CU_ASSERT_EQUAL(seen_check(s, "AAECAwQFBgcICQoLDA0ODw==", 9, &r), 0);
    CU_ASSERT_EQUAL(r, SEEN_REPLAY);
    seen_close(s);
}

static void seen_keeps_only_the_newest_entries(void)
{
    char path[512];
    path_in_tmp(path, sizeof path, "seen/srv_1/carol");
    seen_store *s = NULL;
    CU_ASSERT_EQUAL_FATAL(seen_open(path, 10, &s), 0);
    seen_result r;
    char id[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "id%02d", i);
        CU_ASSERT_EQUAL(seen_check(s, id, i, &r), 0);
        CU_ASSERT_EQUAL(r, SEEN_NEW);
    }
    CU_ASSERT_EQUAL(seen_count(s), 10);
    seen_close(s);
    char *data = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(files_read(path, 65536, &data, &len) == 0);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    CU_ASSERT_TRUE(lines <= 11);   /* compacted at limit + limit/10 */
    free(data);
    CU_ASSERT_EQUAL_FATAL(seen_open(path, 10, &s), 0);
    CU_ASSERT_EQUAL(seen_count(s), 10);
    CU_ASSERT_EQUAL(seen_check(s, "id24", 99, &r), 0);
    CU_ASSERT_EQUAL(r, SEEN_REPLAY);
    CU_ASSERT_EQUAL(seen_check(s, "id14", 99, &r), 0);   /* forgotten: the 11th newest */
    CU_ASSERT_EQUAL(r, SEEN_NEW);
    seen_close(s);
}

static void names_used_in_paths_are_checked(void)
{
    CU_ASSERT_EQUAL(files_name_ok("alice"), 1);
    CU_ASSERT_EQUAL(files_name_ok("A.b-c_9"), 1);
    CU_ASSERT_EQUAL(files_name_ok("..."), 1);   /* 3 dots: a file name, not a parent */
    CU_ASSERT_EQUAL(files_name_ok(".."), 0);
    CU_ASSERT_EQUAL(files_name_ok("a/b"), 0);
    CU_ASSERT_EQUAL(files_name_ok("abcdefghijabcdefghijabcdefghijabc"), 0);   /* 33 */
    CU_ASSERT_EQUAL(files_name_ok("al ice"), 0);
}

static int cleanup_keys(void)
{
    EVP_PKEY_free(keys[0]);
    EVP_PKEY_free(keys[1]);
    return fini();
}

static void put_file(const char *rel, const char *text)
{
    char path[512];
    path_in_tmp(path, sizeof path, rel);
    CU_ASSERT_EQUAL_FATAL(files_mkdirs_parent(path), 0);
    CU_ASSERT_EQUAL_FATAL(files_write(path, text, strlen(text)), 0);
}

static char *get_file(const char *rel)
{
    char path[512], *data = NULL;
    size_t len = 0;
    path_in_tmp(path, sizeof path, rel);
    return files_read(path, 4096, &data, &len) == 0 ? data : NULL;
}

static void server_dirs_move_to_the_fingerprint_without_replacing(void)
{
    char name[80];
    CU_ASSERT_EQUAL(serverdir_name("sha256:00ff" "00000000000000000000000000000000000000000000000000000000000a",
                                   name, sizeof name), 0);
    CU_ASSERT_STRING_EQUAL(name, "sha256_00ff00000000000000000000000000000000000000000000000000000000000a");
    CU_ASSERT_EQUAL(serverdir_name("sha256:../x", name, sizeof name), -1);
    CU_ASSERT_EQUAL(serverdir_name("sha256:00FF00000000000000000000000000000000000000000000000000000000000a",
                                   name, sizeof name), -1);
    char cfg[512];
    path_in_tmp(cfg, sizeof cfg, "mig");
    put_file("mig/keys/old_1/alice.pem", "old alice");
    put_file("mig/keys/old_1/bob.pem", "old bob");
    put_file("mig/keys/new/alice.pem", "new alice");
    put_file("mig/seen/old_1/alice", "seen");
    serverdir_moved moved = {0, 0};
    CU_ASSERT_EQUAL(serverdir_migrate(cfg, "old_1", "new", &moved), 0);
    CU_ASSERT_EQUAL(moved.files, 2);       /* keys/bob.pem, and seen/ whole */
    CU_ASSERT_EQUAL(moved.conflicts, 1);   /* keys/alice.pem exists in both */
    char *t = get_file("mig/keys/new/alice.pem");
    CU_ASSERT_STRING_EQUAL(t ? t : "", "new alice");   /* never replaced */
    free(t);
    t = get_file("mig/keys/old_1/alice.pem");
    CU_ASSERT_STRING_EQUAL(t ? t : "", "old alice");   /* left for the user */
    free(t);
    t = get_file("mig/keys/new/bob.pem");
    CU_ASSERT_STRING_EQUAL(t ? t : "", "old bob");
    free(t);
    t = get_file("mig/seen/new/alice");
    CU_ASSERT_STRING_EQUAL(t ? t : "", "seen");
    free(t);
    /* Nothing left to move: a second run changes nothing. */
    moved.files = moved.conflicts = 0;
    CU_ASSERT_EQUAL(serverdir_migrate(cfg, "old_1", "new", &moved), 0);
    CU_ASSERT_EQUAL(moved.files, 0);
    CU_ASSERT_EQUAL(moved.conflicts, 1);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(encrypt_then_decrypt_with_signature_roundtrips),
        SM_TEST(decrypt_fails_when_names_differ_from_the_aad),
        SM_TEST(decrypt_fails_on_a_flipped_ciphertext_bit),
        SM_TEST(verify_rejects_other_text_sender_or_key),
        SM_TEST(verify_rejects_pss_with_another_salt_length),
        SM_TEST(decrypts_and_verifies_an_independent_python_message),
        SM_TEST(key_usable_only_for_rsa_of_2048_bits_or_more),
        SM_TEST(key_files_are_0600_never_replaced_and_checked_on_load),
        SM_TEST(server_id_is_lowercase_host_and_port),
        SM_TEST(server_pin_recorded_then_change_refused_unless_accepted),
        SM_TEST(contact_pins_are_per_lowercase_name),
        SM_TEST(seen_tells_replay_from_the_same_message_listed_again),
        SM_TEST(seen_keeps_only_the_newest_entries),
        SM_TEST(names_used_in_paths_are_checked),
        SM_TEST(server_dirs_move_to_the_fingerprint_without_replacing),
        SM_TEST_END,
    };
    return sm_test_run("cli_e2e", cases, init, cleanup_keys);
}
