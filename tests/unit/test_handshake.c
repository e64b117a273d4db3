/* The handshake of PROTOCOL.md section 3 on the real receive path with a
 * recording transport: a key_exchange that cannot be completed gets one
 * reply and its session is closed, never left waiting. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "crypto.h"
#include "envelope.h"
#include "fake_transport.h"
#include "handshake.h"
#include "session_io.h"
#include "safemessenger/testhost_suite.h"
#include "session.h"

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &fake_transport};
    if (core_start(&o) != 0)
        return -1;
    /* The smallest key the core accepts: generated once per run. */
    if (crypto_rsa_generate(CRYPTO_RSA_MIN_BITS, &g_core.server_key) != 0 ||
        crypto_pubkey_pem(g_core.server_key, &g_core.server_public_pem) != 0 ||
        crypto_fingerprint(g_core.server_key, g_core.fingerprint) != 0)
        return -1;
    return 0;
}

static int teardown(void)
{
    fake_reset();
    core_stop();
    return 0;
}

static int no_entropy(uint8_t *buf, size_t len)
{
    (void)buf;
    (void)len;
    return -1;
}

/* A well-formed key_exchange for the server's key, as a client sends it. */
static char *key_exchange_text(size_t *len)
{
    uint8_t k[CRYPTO_KEY_LEN], cnonce[ENVELOPE_NONCE_LEN], ek[CRYPTO_RSA_MAX_BITS / 8];
    size_t ek_len = 0, b64_len = 0;
    char *ek_b64 = NULL, *cn_b64 = NULL, *text = NULL;
    if (crypto_random(k, sizeof k) != 0 || crypto_random(cnonce, sizeof cnonce) != 0 ||
        crypto_rsa_oaep_encrypt(g_core.server_key, k, sizeof k, ek, sizeof ek, &ek_len) != 0 ||
        crypto_b64_encode(ek, ek_len, &ek_b64, &b64_len) != 0 ||
        crypto_b64_encode(cnonce, sizeof cnonce, &cn_b64, &b64_len) != 0)
        goto out;
    json_t *payload = json_pack("{s:s, s:s, s:s}", "cipher",
                                envelope_cipher_name(ENVELOPE_CIPHER_AES256_GCM),
                                "encrypted_key", ek_b64, "client_nonce", cn_b64);
    if (!payload || envelope_plain("command", "key_exchange", payload, NULL, &text, len) != 0)
        text = NULL;
    json_decref(payload);
out:
    free(ek_b64);
    free(cn_b64);
    return text;
}

static void handshake_without_entropy_for_the_token_replies_1005_and_closes_1011(void)
{
    fake_reset();
    struct session *s = session_new(NULL, "127.0.0.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    sm_session_id id = s->id;
    CU_ASSERT_EQUAL_FATAL(handshake_start(s), 0);
    CU_ASSERT_EQUAL_FATAL(fake_count, 1);
    CU_ASSERT_STRING_EQUAL(fake_log[0].action, "server_hello");

    size_t len = 0;
    char *text = key_exchange_text(&len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    /* The RSA job succeeds; drawing the session token then fails. */
    g_core.random = no_entropy;
    session_io_receive(s, text, len);
    free(text);
    workers_drain(g_core.pool);
    g_core.random = crypto_random;

    s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "error");
    CU_ASSERT_STRING_EQUAL(fake_log[1].reply_to, "0");
    CU_ASSERT_EQUAL(fake_code(1), SM_ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(fake_log[1].payload, "command")),
                           "key_exchange");
    CU_ASSERT_EQUAL(s->state, SESSION_CLOSING);
    CU_ASSERT_EQUAL(fake_closed_code, 1011);
    CU_ASSERT_FALSE(s->has_keys);
    session_destroy(s);
}

static void handshake_completes_with_entropy(void)
{
    fake_reset();
    struct session *s = session_new(NULL, "127.0.0.1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    sm_session_id id = s->id;
    CU_ASSERT_EQUAL_FATAL(handshake_start(s), 0);
    size_t len = 0;
    char *text = key_exchange_text(&len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    session_io_receive(s, text, len);
    free(text);
    workers_drain(g_core.pool);
    s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(s->state, SESSION_OPEN);
    CU_ASSERT_EQUAL(fake_closed_code, 0);
    CU_ASSERT_EQUAL_FATAL(fake_count, 2);
    CU_ASSERT_STRING_EQUAL(fake_log[1].type, "response");
    CU_ASSERT_STRING_EQUAL(fake_log[1].action, "key_exchange");
    CU_ASSERT_EQUAL(strlen(s->token), 32);
    session_destroy(s);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(handshake_completes_with_entropy),
        SM_TEST(handshake_without_entropy_for_the_token_replies_1005_and_closes_1011),
        SM_TEST_END,
    };
    return sm_test_run("handshake", cases, setup, teardown);
}
