/* PROTOCOL.md section 3 from the client's side: check server_hello, send
 * key_exchange, derive the session keys, check the server's proof. */
#include "client_priv.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define MIN_RSA_BITS 2048

/* What server_hello taught us. */
typedef struct hello {
    EVP_PKEY *key;
    uint8_t server_nonce[ENVELOPE_NONCE_LEN];
} hello;

static int read_text(sm_client *c, const char *waiting_for, char **text, size_t *len,
                     char *err, size_t err_len)
{
    int rc = ws_recv_message(c->ws, client_deadline(c, -1), text, len);
    if (rc == SM_CLIENT_CLOSED)
        client_err(err, err_len, "waiting for %s: connection closed (close code %d)",
                   waiting_for, ws_close_code(c->ws));
    else if (rc != SM_CLIENT_OK)
        client_err(err, err_len, "waiting for %s: %s", waiting_for, client_status_text(rc));
    return rc;
}

static int decode_b64_exact(const char *s, size_t want, uint8_t *out)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    if (crypto_b64_decode(s, strlen(s), &buf, &n) != 0)
        return -1;
    int ok = n == want;
    if (ok)
        memcpy(out, buf, want);
    crypto_wipe(buf, n);
    free(buf);
    return ok ? 0 : -1;
}

static int check_hello(sm_client *c, const envelope_in *env, hello *h, char *err, size_t err_len)
{
    if (strcmp(env->type, "event") != 0 || strcmp(env->action, "server_hello") != 0) {
        client_err(err, err_len, "expected server_hello, got %.40s/%.40s", env->type,
                   env->action);
        return SM_CLIENT_PROTOCOL;
    }
    if (strcmp(env->nonce, "0") != 0 || env->signature[0] != '\0' || env->reply_to
        || !json_is_object(env->payload)) {
        client_err(err, err_len, "server_hello: not an unencrypted event");
        return SM_CLIENT_PROTOCOL;
    }
    json_t *p = env->payload;
    json_t *proto = json_object_get(p, "protocol");
    const char *pem = json_string_value(json_object_get(p, "public_key"));
    const char *fp = json_string_value(json_object_get(p, "fingerprint"));
    json_t *ciphers = json_object_get(p, "ciphers");
    const char *snonce = json_string_value(json_object_get(p, "server_nonce"));
    if (!json_is_integer(proto) || json_integer_value(proto) != 1) {
        client_err(err, err_len, "server_hello: protocol is not 1");
        return SM_CLIENT_PROTOCOL;
    }
    if (!pem || !fp || !json_is_array(ciphers) || !snonce) {
        client_err(err, err_len, "server_hello: missing or ill-typed field");
        return SM_CLIENT_PROTOCOL;
    }
    int offered = 0;
    size_t i;
    json_t *v;
    const char *want = envelope_cipher_name(c->cipher);
    json_array_foreach(ciphers, i, v) {
        if (!json_is_string(v)) {
            client_err(err, err_len, "server_hello: ciphers holds a non-string");
            return SM_CLIENT_PROTOCOL;
        }
        if (strcmp(json_string_value(v), want) == 0)
            offered = 1;
    }
    if (!offered) {
        client_err(err, err_len, "server_hello: cipher %s not offered", want);
        return SM_CLIENT_PROTOCOL;
    }
    if (decode_b64_exact(snonce, ENVELOPE_NONCE_LEN, h->server_nonce) != 0) {
        client_err(err, err_len, "server_hello: server_nonce is not base64 of 32 bytes");
        return SM_CLIENT_PROTOCOL;
    }
    EVP_PKEY *key = NULL;
    if (crypto_pubkey_from_pem(pem, strlen(pem), &key) != 0) {
        client_err(err, err_len, "server_hello: public_key is not a PEM public key");
        return SM_CLIENT_PROTOCOL;
    }
    char computed[CRYPTO_FINGERPRINT_LEN];
    int rc = SM_CLIENT_PROTOCOL;
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < MIN_RSA_BITS) {
        client_err(err, err_len, "server_hello: public_key is not RSA >= %d bits", MIN_RSA_BITS);
        goto fail;
    }
    if (crypto_fingerprint(key, computed) != 0) {
        rc = SM_CLIENT_ERROR;
        client_err(err, err_len, "server_hello: cannot compute the fingerprint");
        goto fail;
    }
    if (strcmp(computed, fp) != 0) {
        client_err(err, err_len, "server_hello: fingerprint does not match public_key");
        goto fail;
    }
    c->server_key_pem = strdup(pem);
    if (!c->server_key_pem) {
        rc = SM_CLIENT_ERROR;
        goto fail;
    }
    memcpy(c->fingerprint, computed, sizeof computed);
    h->key = key;
    return SM_CLIENT_OK;
fail:
    crypto_pkey_free(key);
    return rc;
}

static int read_hello(sm_client *c, hello *h, char *err, size_t err_len)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_text(c, "server_hello", &text, &len, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK) {
        client_err(err, err_len, "server_hello: not an envelope");
        free(text);
        return SM_CLIENT_PROTOCOL;
    }
    rc = check_hello(c, &env, h, err, err_len);
    envelope_in_clear(&env);
    free(text);
    return rc;
}

/* Draws K and client_nonce, sends key_exchange and derives both
 * directions. K lives only on this stack frame and is wiped. */
static int send_key_exchange(sm_client *c, const hello *h, char *err, size_t err_len)
{
    uint8_t k[CRYPTO_KEY_LEN];
    uint8_t cnonce[ENVELOPE_NONCE_LEN];
    size_t ek_cap = crypto_pkey_size(h->key);
    uint8_t *ek = malloc(ek_cap ? ek_cap : 1);
    size_t ek_len = ek_cap;
    char *ek_b64 = NULL, *cn_b64 = NULL, *text = NULL;
    size_t b64_len = 0, text_len = 0;
    json_t *payload = NULL;
    int rc = SM_CLIENT_ERROR;
    if (!ek || crypto_random(k, sizeof k) != 0 || crypto_random(cnonce, sizeof cnonce) != 0) {
        client_err(err, err_len, "key_exchange: cannot draw the session key");
        goto out;
    }
    if (crypto_rsa_oaep_encrypt(h->key, k, sizeof k, ek, ek_cap, &ek_len) != 0
        || crypto_b64_encode(ek, ek_len, &ek_b64, &b64_len) != 0
        || crypto_b64_encode(cnonce, sizeof cnonce, &cn_b64, &b64_len) != 0) {
        client_err(err, err_len, "key_exchange: cannot encrypt the session key");
        goto out;
    }
    payload = json_pack("{s:s, s:s, s:s}", "cipher", envelope_cipher_name(c->cipher),
                        "encrypted_key", ek_b64, "client_nonce", cn_b64);
    if (!payload || envelope_plain("command", "key_exchange", payload, NULL, &text, &text_len) != 0) {
        client_err(err, err_len, "key_exchange: cannot build the message");
        goto out;
    }
    if (envelope_derive(k, h->server_nonce, cnonce, c->cipher, &c->c2s, &c->s2c) != 0) {
        client_err(err, err_len, "key_exchange: key derivation failed");
        goto out;
    }
    c->keyed = 1;
    rc = ws_send_frame(c->ws, WS_OP_TEXT, 1, 0, 1, text, text_len, client_deadline(c, -1));
    if (rc != SM_CLIENT_OK)
        client_err(err, err_len, "key_exchange: send failed: %s", client_status_text(rc));
out:
    crypto_wipe(k, sizeof k);
    json_decref(payload);
    free(text);
    free(ek_b64);
    free(cn_b64);
    free(ek);
    return rc;
}

/* A handshake error comes unencrypted (nonce "0", empty signature). */
static int is_plain_error(const envelope_in *env)
{
    return strcmp(env->type, "error") == 0 && strcmp(env->nonce, "0") == 0
           && env->signature[0] == '\0' && json_is_object(env->payload);
}

static int check_proof(sm_client *c, const envelope_in *env, char *err, size_t err_len)
{
    json_t *payload = NULL;
    envelope_status st = envelope_open(&c->s2c, env, &payload);
    if (st != ENVELOPE_OK) {
        client_err(err, err_len, "key_exchange response: envelope check failed (%d)", (int)st);
        return st == ENVELOPE_INTERNAL ? SM_CLIENT_ERROR : SM_CLIENT_PROTOCOL;
    }
    int rc = SM_CLIENT_PROTOCOL;
    const char *sid = json_string_value(json_object_get(payload, "session_id"));
    if (strcmp(env->type, "response") != 0 || strcmp(env->action, "key_exchange") != 0
        || strcmp(env->nonce, "1") != 0 || !env->reply_to || strcmp(env->reply_to, "0") != 0) {
        client_err(err, err_len, "key_exchange response: unexpected %.40s/%.40s", env->type,
                   env->action);
    } else if (!json_is_true(json_object_get(payload, "success")) || !sid) {
        client_err(err, err_len, "key_exchange response: no success/session_id");
    } else if (!(c->session_id = strdup(sid))) {
        rc = SM_CLIENT_ERROR;
    } else {
        rc = SM_CLIENT_OK;
    }
    json_decref(payload);
    return rc;
}

static int read_proof(sm_client *c, char *err, size_t err_len)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_text(c, "the key_exchange response", &text, &len, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK) {
        client_err(err, err_len, "key_exchange response: not an envelope");
        free(text);
        return SM_CLIENT_PROTOCOL;
    }
    if (is_plain_error(&env)) {
        json_t *code = json_object_get(env.payload, "code");
        const char *msg = json_string_value(json_object_get(env.payload, "message"));
        client_err(err, err_len, "server refused key_exchange: error %lld: %.120s",
                   (long long)json_integer_value(code), msg ? msg : "");
        rc = SM_CLIENT_PROTOCOL;
    } else {
        rc = check_proof(c, &env, err, err_len);
    }
    envelope_in_clear(&env);
    free(text);
    return rc;
}

int sm_client_handshake(sm_client *c, char *err, size_t err_len)
{
    if (!c || c->handshake_started) {
        client_err(err, err_len, "handshake already started");
        return SM_CLIENT_ERROR;
    }
    c->handshake_started = 1;
    hello h;
    memset(&h, 0, sizeof h);
    int rc = read_hello(c, &h, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    rc = send_key_exchange(c, &h, err, err_len);
    crypto_pkey_free(h.key);
    if (rc != SM_CLIENT_OK)
        return rc;
    rc = read_proof(c, err, err_len);
    if (rc != SM_CLIENT_OK)
        return rc;
    c->ready = 1;
    return SM_CLIENT_OK;
}
