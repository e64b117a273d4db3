/* Envelope rules of PROTOCOL.md sections 2-4 (see envelope.h). */
#include "envelope.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SESSION_KEY_MATERIAL (4 * CRYPTO_KEY_LEN)

const char *envelope_cipher_name(envelope_cipher c)
{
    switch (c) {
    case ENVELOPE_CIPHER_AES256_GCM:
        return "AES-256-GCM";
    case ENVELOPE_CIPHER_AES256_CBC_HMAC:
        return "AES-256-CBC-HMAC-SHA256";
    case ENVELOPE_CIPHER_NONE:
        break;
    }
    return "none";
}

envelope_cipher envelope_cipher_from_name(const char *name)
{
    if (!name)
        return ENVELOPE_CIPHER_NONE;
    if (strcmp(name, "AES-256-GCM") == 0)
        return ENVELOPE_CIPHER_AES256_GCM;
    if (strcmp(name, "AES-256-CBC-HMAC-SHA256") == 0)
        return ENVELOPE_CIPHER_AES256_CBC_HMAC;
    return ENVELOPE_CIPHER_NONE;
}

int envelope_derive(const uint8_t k[CRYPTO_KEY_LEN],
                    const uint8_t server_nonce[ENVELOPE_NONCE_LEN],
                    const uint8_t client_nonce[ENVELOPE_NONCE_LEN],
                    envelope_cipher cipher,
                    envelope_dir *c2s, envelope_dir *s2c)
{
    if (!k || !server_nonce || !client_nonce || !c2s || !s2c)
        return -1;
    if (cipher != ENVELOPE_CIPHER_AES256_GCM && cipher != ENVELOPE_CIPHER_AES256_CBC_HMAC)
        return -1;
    uint8_t salt[2 * ENVELOPE_NONCE_LEN];
    uint8_t okm[SESSION_KEY_MATERIAL];
    memcpy(salt, server_nonce, ENVELOPE_NONCE_LEN);
    memcpy(salt + ENVELOPE_NONCE_LEN, client_nonce, ENVELOPE_NONCE_LEN);
    static const char info[] = ENVELOPE_HKDF_INFO;
    if (crypto_hkdf_sha256(k, CRYPTO_KEY_LEN, salt, sizeof salt, (const uint8_t *)info,
                           sizeof info - 1, okm, sizeof okm) != 0) {
        crypto_wipe(okm, sizeof okm);
        return -1;
    }
    /* Section 3.3 order: c2s_enc, s2c_enc, c2s_mac, s2c_mac. */
    c2s->cipher = cipher;
    s2c->cipher = cipher;
    memcpy(c2s->enc_key, okm, CRYPTO_KEY_LEN);
    memcpy(s2c->enc_key, okm + CRYPTO_KEY_LEN, CRYPTO_KEY_LEN);
    memcpy(c2s->mac_key, okm + 2 * CRYPTO_KEY_LEN, CRYPTO_KEY_LEN);
    memcpy(s2c->mac_key, okm + 3 * CRYPTO_KEY_LEN, CRYPTO_KEY_LEN);
    c2s->nonce = 0;
    s2c->nonce = 0;
    crypto_wipe(okm, sizeof okm);
    return 0;
}

json_t *envelope_json_loads(const char *text, size_t len)
{
    if (!text)
        return NULL;
    json_error_t err;
    /* Without JSON_DISABLE_EOF_CHECK Jansson refuses anything after the
     * value; without JSON_ALLOW_NUL it refuses "\u0000" in strings, so every
     * string is a C string. Jansson also refuses invalid UTF-8, NaN/Infinity
     * and numbers that overflow. */
    return json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
}

static const char *string_member(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

envelope_status envelope_parse(const char *text, size_t len, envelope_in *out)
{
    if (!text || !out)
        return ENVELOPE_MALFORMED;
    json_t *root = envelope_json_loads(text, len);
    if (!json_is_object(root))
        goto fail;
    envelope_in in = {.root = root};
    in.type = string_member(root, "type");
    in.action = string_member(root, "action");
    in.nonce = string_member(root, "nonce");
    in.signature = string_member(root, "signature");
    if (!in.type || !in.action || !in.nonce || !in.signature)
        goto fail;
    json_t *reply_to = json_object_get(root, "reply_to");
    if (reply_to) {
        if (!json_is_string(reply_to))
            goto fail;
        in.reply_to = json_string_value(reply_to);
    }
    /* A missing payload is not "unreadable" (PROTOCOL.md section 1 lists
     * what is): it is a payload that is not a string, so it fails the
     * signature check after the handshake and the field check before it. */
    in.payload = json_object_get(root, "payload");
    *out = in;
    return ENVELOPE_OK;
fail:
    json_decref(root);
    return ENVELOPE_MALFORMED;
}

void envelope_in_clear(envelope_in *in)
{
    if (!in)
        return;
    json_decref(in->root);
    memset(in, 0, sizeof *in);
}

long envelope_header(const char *type, const char *action, const char *nonce,
                     const char *reply_to, char *buf, size_t buf_len)
{
    if (!type || !action || !nonce || !buf)
        return -1;
    if (!reply_to)
        reply_to = "";
    const char *fields[4] = {type, action, nonce, reply_to};
    size_t lens[4], total = 3;
    for (size_t i = 0; i < 4; i++) {
        lens[i] = strlen(fields[i]);
        if (lens[i] > (size_t)LONG_MAX - total)
            return -1;
        total += lens[i];
    }
    /* Room for a terminating NUL too, so the result is also a C string. */
    if (total >= buf_len || total > (size_t)LONG_MAX)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < 4; i++) {
        memcpy(buf + o, fields[i], lens[i]);
        o += lens[i];
        if (i < 3)
            buf[o++] = '\n';
    }
    buf[o] = '\0';
    return (long)o;
}

/* H of section 4 in a malloc'd buffer (its fields may be as long as the
 * message itself, so no fixed buffer fits). */
static char *header_alloc(const char *type, const char *action, const char *nonce,
                          const char *reply_to, size_t *len)
{
    size_t cap = strlen(type) + strlen(action) + strlen(nonce)
                 + (reply_to ? strlen(reply_to) : 0) + 4;
    char *h = malloc(cap);
    if (!h)
        return NULL;
    long n = envelope_header(type, action, nonce, reply_to, h, cap);
    if (n < 0) {
        free(h);
        return NULL;
    }
    *len = (size_t)n;
    return h;
}

static int sign(const uint8_t key[CRYPTO_KEY_LEN], const char *h, size_t h_len,
                const char *payload, size_t payload_len, uint8_t mac[CRYPTO_MAC_LEN])
{
    const uint8_t *parts[3] = {(const uint8_t *)h, (const uint8_t *)"\n",
                               (const uint8_t *)payload};
    const size_t lens[3] = {h_len, 1, payload_len};
    return crypto_hmac_sha256(key, parts, lens, 3, mac);
}

/* Section 4: digits only, no leading zero, at most 2^64-1. "0" parses
 * (to 0) but never equals an expected nonce, which starts at 1. */
static int parse_nonce(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > ENVELOPE_NONCE_MAX_DIGITS)
        return -1;
    if (s[0] == '0' && len > 1)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t digit = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}

static envelope_status decrypt_payload(const envelope_dir *d, const char *h, size_t h_len,
                                       const uint8_t *raw, size_t raw_len, uint8_t **pt_out,
                                       size_t *pt_len_out)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    if (d->cipher == ENVELOPE_CIPHER_AES256_GCM) {
        if (raw_len < CRYPTO_GCM_IV_LEN + CRYPTO_GCM_TAG_LEN)
            return ENVELOPE_INTEGRITY;
        size_t ct_len = raw_len - CRYPTO_GCM_IV_LEN - CRYPTO_GCM_TAG_LEN;
        pt = malloc(ct_len ? ct_len : 1);
        if (!pt)
            return ENVELOPE_INTERNAL;
        if (crypto_gcm_decrypt(d->enc_key, raw, (const uint8_t *)h, h_len,
                               raw + CRYPTO_GCM_IV_LEN, ct_len, raw + raw_len - CRYPTO_GCM_TAG_LEN,
                               CRYPTO_GCM_TAG_LEN, pt) != 0) {
            free(pt);
            return ENVELOPE_INTEGRITY;
        }
        pt_len = ct_len;
    } else {
        if (raw_len < CRYPTO_CBC_IV_LEN + 16 || (raw_len - CRYPTO_CBC_IV_LEN) % 16 != 0)
            return ENVELOPE_INTEGRITY;
        size_t ct_len = raw_len - CRYPTO_CBC_IV_LEN;
        pt = malloc(ct_len);
        if (!pt)
            return ENVELOPE_INTERNAL;
        if (crypto_cbc_decrypt(d->enc_key, raw, raw + CRYPTO_CBC_IV_LEN, ct_len, pt,
                               &pt_len) != 0) {
            free(pt);
            return ENVELOPE_INTEGRITY;
        }
    }
    *pt_out = pt;
    *pt_len_out = pt_len;
    return ENVELOPE_OK;
}

envelope_status envelope_open_text(envelope_dir *d, const char *type, const char *action,
                                   const char *nonce, const char *reply_to, const char *signature,
                                   size_t signature_len, const char *b64, size_t b64_len,
                                   uint8_t **plaintext, size_t *plaintext_len)
{
    if (!d || !type || !action || !nonce || !signature || !b64 || !plaintext || !plaintext_len)
        return ENVELOPE_INTERNAL;
    if (d->cipher != ENVELOPE_CIPHER_AES256_GCM && d->cipher != ENVELOPE_CIPHER_AES256_CBC_HMAC)
        return ENVELOPE_INTERNAL;

    envelope_status st = ENVELOPE_INTERNAL;
    char *h = NULL;
    size_t h_len = 0;
    uint8_t *sig = NULL, *raw = NULL;
    size_t sig_len = 0, raw_len = 0;
    uint8_t mac[CRYPTO_MAC_LEN];

    h = header_alloc(type, action, nonce, reply_to, &h_len);
    if (!h)
        goto done;
    if (crypto_b64_decode(signature, signature_len, &sig, &sig_len) != 0
        || sig_len != CRYPTO_MAC_LEN) {
        st = ENVELOPE_INTEGRITY;
        goto done;
    }
    if (sign(d->mac_key, h, h_len, b64, b64_len, mac) != 0)
        goto done;
    if (!crypto_memeq(mac, sig, CRYPTO_MAC_LEN)) {
        st = ENVELOPE_INTEGRITY;
        goto done;
    }

    /* Only an authenticated message may move the counter (section 4). */
    uint64_t n = 0;
    if (d->nonce == UINT64_MAX || parse_nonce(nonce, &n) != 0 || n != d->nonce + 1) {
        st = ENVELOPE_NONCE;
        goto done;
    }
    d->nonce = n;

    if (crypto_b64_decode(b64, b64_len, &raw, &raw_len) != 0) {
        st = ENVELOPE_INTEGRITY;
        goto done;
    }
    st = decrypt_payload(d, h, h_len, raw, raw_len, plaintext, plaintext_len);
done:
    free(raw);
    free(sig);
    free(h);
    crypto_wipe(mac, sizeof mac);
    return st;
}

envelope_status envelope_open(envelope_dir *d, const envelope_in *in, json_t **payload)
{
    if (!d || !in || !payload || !in->type || !in->action || !in->nonce || !in->signature)
        return ENVELOPE_INTERNAL;
    if (d->cipher != ENVELOPE_CIPHER_AES256_GCM && d->cipher != ENVELOPE_CIPHER_AES256_CBC_HMAC)
        return ENVELOPE_INTERNAL;
    /* No signature can cover a payload that is not the base64 string. */
    if (!json_is_string(in->payload))
        return ENVELOPE_INTEGRITY;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    envelope_status st = envelope_open_text(d, in->type, in->action, in->nonce, in->reply_to,
                                            in->signature, strlen(in->signature),
                                            json_string_value(in->payload),
                                            json_string_length(in->payload), &pt, &pt_len);
    if (st != ENVELOPE_OK)
        return st;
    json_t *obj = envelope_json_loads((const char *)pt, pt_len);
    crypto_wipe(pt, pt_len);
    free(pt);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return ENVELOPE_MALFORMED;
    }
    *payload = obj;
    return ENVELOPE_OK;
}

/* iv || ct || tag (GCM) or iv || ct (CBC), base64-encoded. */
static int encrypt_payload(const envelope_dir *d, const char *h, size_t h_len,
                           const char *plaintext, size_t plaintext_len, char **b64,
                           size_t *b64_len)
{
    int rc = -1;
    size_t raw_len;
    if (plaintext_len > SIZE_MAX - CRYPTO_GCM_IV_LEN - CRYPTO_GCM_TAG_LEN - 32)
        return -1;
    size_t cap = plaintext_len + CRYPTO_CBC_IV_LEN + 32;
    uint8_t *raw = malloc(cap);
    if (!raw)
        return -1;
    const uint8_t *pt = (const uint8_t *)plaintext;
    if (d->cipher == ENVELOPE_CIPHER_AES256_GCM) {
        if (crypto_random_public(raw, CRYPTO_GCM_IV_LEN) != 0)
            goto fail;
        if (crypto_gcm_encrypt(d->enc_key, raw, (const uint8_t *)h, h_len, pt, plaintext_len,
                               raw + CRYPTO_GCM_IV_LEN,
                               raw + CRYPTO_GCM_IV_LEN + plaintext_len) != 0)
            goto fail;
        raw_len = CRYPTO_GCM_IV_LEN + plaintext_len + CRYPTO_GCM_TAG_LEN;
    } else {
        size_t ct_len = 0;
        if (crypto_random_public(raw, CRYPTO_CBC_IV_LEN) != 0)
            goto fail;
        if (crypto_cbc_encrypt(d->enc_key, raw, pt, plaintext_len, raw + CRYPTO_CBC_IV_LEN,
                               &ct_len) != 0)
            goto fail;
        raw_len = CRYPTO_CBC_IV_LEN + ct_len;
    }
    if (crypto_b64_encode(raw, raw_len, b64, b64_len) != 0)
        goto fail;
    rc = 0;
fail:
    free(raw);
    return rc;
}

/* Serialises the envelope with its keys in the documented order. Jansson
 * keeps insertion order and escapes every string. */
static int dump_envelope(const char *type, const char *action, json_t *payload,
                         const char *nonce, const char *signature, const char *reply_to,
                         char **out, size_t *out_len)
{
    int rc = -1;
    json_t *root = json_object();
    if (!root)
        goto fail;
    if (json_object_set_new(root, "type", json_string(type)) != 0
        || json_object_set_new(root, "action", json_string(action)) != 0
        || json_object_set(root, "payload", payload) != 0
        || json_object_set_new(root, "nonce", json_string(nonce)) != 0
        || json_object_set_new(root, "signature", json_string(signature)) != 0)
        goto fail;
    if (reply_to && json_object_set_new(root, "reply_to", json_string(reply_to)) != 0)
        goto fail;
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        goto fail;
    *out = text;
    if (out_len)
        *out_len = strlen(text);
    rc = 0;
fail:
    json_decref(root);
    return rc;
}

/* Appends s as a JSON string (quotes included) at *w. The caller sized the
 * buffer for the worst case, 6 bytes per input byte. Input is UTF-8 that
 * Jansson or our own tables produced, so only '"', '\\' and control bytes
 * need escaping. */
static char *put_json_string(char *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    *w++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *w++ = '\\';
            *w++ = (char)*p;
        } else if (*p < 0x20) {
            memcpy(w, "\\u00", 4);
            w[4] = hex[*p >> 4];
            w[5] = hex[*p & 15];
            w += 6;
        } else {
            *w++ = (char)*p;
        }
    }
    *w++ = '"';
    return w;
}

static char *put_raw(char *w, const char *s, size_t len)
{
    memcpy(w, s, len);
    return w + len;
}

/* The sealed envelope written directly: this runs once per recipient of
 * every message, and building a Jansson tree to serialise it cost more than
 * the encryption. Same key order and escaping as dump_envelope. */
static int write_sealed(const char *type, const char *action, const char *b64, size_t b64_len,
                        const char *nonce, const char *sig, size_t sig_len, const char *reply_to,
                        char **out, size_t *out_len)
{
    size_t tl = strlen(type), al = strlen(action), nl = strlen(nonce);
    size_t rl = reply_to ? strlen(reply_to) : 0;
    if (tl > SIZE_MAX / 8 || al > SIZE_MAX / 8 || rl > SIZE_MAX / 8 || b64_len > SIZE_MAX / 2)
        return -1;
    size_t cap = 6 * (tl + al + nl + rl) + b64_len + sig_len + 128;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    char *w = buf;
    w = put_raw(w, "{\"type\":", 8);
    w = put_json_string(w, type);
    w = put_raw(w, ",\"action\":", 10);
    w = put_json_string(w, action);
    w = put_raw(w, ",\"payload\":\"", 12);
    w = put_raw(w, b64, b64_len);
    w = put_raw(w, "\",\"nonce\":", 10);
    w = put_json_string(w, nonce);
    w = put_raw(w, ",\"signature\":\"", 14);
    w = put_raw(w, sig, sig_len);
    *w++ = '"';
    if (reply_to) {
        w = put_raw(w, ",\"reply_to\":", 12);
        w = put_json_string(w, reply_to);
    }
    *w++ = '}';
    *w = '\0';
    *out = buf;
    if (out_len)
        *out_len = (size_t)(w - buf);
    return 0;
}

int envelope_seal(envelope_dir *d, const char *type, const char *action,
                  const char *reply_to, const char *plaintext, size_t plaintext_len,
                  char **out, size_t *out_len)
{
    if (!d || !type || !action || (!plaintext && plaintext_len) || !out)
        return -1;
    if (d->cipher != ENVELOPE_CIPHER_AES256_GCM && d->cipher != ENVELOPE_CIPHER_AES256_CBC_HMAC)
        return -1;
    /* The counter may not wrap: the peer would take it for a replay. */
    if (d->nonce == UINT64_MAX) {
        LOG_ERROR("envelope nonce exhausted");
        return -1;
    }
    if (!plaintext)
        plaintext = "";
    int rc = -1;
    uint64_t next = d->nonce + 1;
    char nonce[ENVELOPE_NONCE_MAX_DIGITS + 1];
    int nn = snprintf(nonce, sizeof nonce, "%" PRIu64, next);
    if (nn < 0 || (size_t)nn >= sizeof nonce)
        return -1;

    char *h = NULL, *b64 = NULL, *sig_b64 = NULL;
    size_t h_len = 0, b64_len = 0, sig_len = 0;
    uint8_t mac[CRYPTO_MAC_LEN];

    h = header_alloc(type, action, nonce, reply_to, &h_len);
    if (!h)
        goto fail;
    if (encrypt_payload(d, h, h_len, plaintext, plaintext_len, &b64, &b64_len) != 0)
        goto fail;
    if (sign(d->mac_key, h, h_len, b64, b64_len, mac) != 0)
        goto fail;
    if (crypto_b64_encode(mac, sizeof mac, &sig_b64, &sig_len) != 0)
        goto fail;
    if (write_sealed(type, action, b64, b64_len, nonce, sig_b64, sig_len, reply_to, out,
                     out_len) != 0)
        goto fail;
    d->nonce = next;
    rc = 0;
fail:
    free(sig_b64);
    free(b64);
    free(h);
    crypto_wipe(mac, sizeof mac);
    return rc;
}

int envelope_plain(const char *type, const char *action, const json_t *payload,
                   const char *reply_to, char **out, size_t *out_len)
{
    if (!type || !action || !json_is_object(payload) || !out)
        return -1;
    /* json_object_set only takes a reference: the payload is not changed,
     * but Jansson's API has no const variant. */
    return dump_envelope(type, action, (json_t *)payload, "0", "", reply_to, out, out_len);
}
