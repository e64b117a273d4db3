/* libFuzzer target: the envelope of PROTOCOL.md sections 2-4 (proto/envelope.c
 * over proto/crypto.c) with fixed session keys.
 *
 * Input: byte 0 picks the mode (low 3 bits) and the cipher (bit 3); the
 * rest is the mode's material.
 *   0 open:    the rest is a message off the wire, parsed and opened.
 *   1 resign:  as 0, but the target signs the parsed fields with the real
 *              MAC key first, so mutated payloads and nonces get past the
 *              signature to the nonce check and the decryption.
 *   2 round:   the rest is a plaintext: open(seal(x)) must give x back, and
 *              the wire form must be what section 4 says (nonce "1", then
 *              "2"; iv || ct || 16-byte tag; replays and skips refused).
 *   3 tamper:  seal a valid object, flip bytes of the sealed text where the
 *              input says: opening must fail or give the same payload.
 *   4 short:   seal, cut 1-16 bytes off the raw payload and re-sign: a
 *              short GCM tag must be an integrity failure (1007).
 *   5 counter: seal with the sender's counter and open with the receiver's
 *              counter both taken from the input (the 2^64-1 edge).
 * fuzz/corpus/envelope holds real sealed envelopes (made by
 * fuzz_envelope_seeds with the same keys) for modes 0 and 1. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "envelope.h"
#include "fuzz_check.h"
#include "fuzz_keys.h"

static envelope_dir c2s_gcm, s2c_gcm, c2s_cbc, s2c_cbc;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    FUZZ_CHECK(fuzz_keys_derive(ENVELOPE_CIPHER_AES256_GCM, &c2s_gcm, &s2c_gcm) == 0);
    FUZZ_CHECK(fuzz_keys_derive(ENVELOPE_CIPHER_AES256_CBC_HMAC, &c2s_cbc, &s2c_cbc) == 0);
    return 0;
}

static int status_known(envelope_status st)
{
    return st == ENVELOPE_OK || st == ENVELOPE_MALFORMED || st == ENVELOPE_NONCE
           || st == ENVELOPE_INTEGRITY;
}

static int resign(const envelope_dir *d, envelope_in *in);

/* Whether in carries the right signature for its fields under d's MAC key
 * (in's signature is replaced by the right one). */
static int signed_right(const envelope_dir *d, envelope_in *in)
{
    size_t n = strlen(in->signature);
    char *given = malloc(n + 1);
    FUZZ_CHECK(given != NULL);
    memcpy(given, in->signature, n + 1);
    int right = resign(d, in) == 0 && strcmp(given, in->signature) == 0;
    free(given);
    return right;
}

/* Opens text with a fresh copy of dir (counter `expect_prev`) and checks
 * what any outcome must satisfy. *payload is set on ENVELOPE_OK only. */
static envelope_status open_checked(const envelope_dir *dir, uint64_t expect_prev,
                                    const char *text, size_t len, json_t **payload)
{
    envelope_in in;
    *payload = NULL;
    envelope_status st = envelope_parse(text, len, &in);
    FUZZ_CHECK(st == ENVELOPE_OK || st == ENVELOPE_MALFORMED);
    if (st != ENVELOPE_OK)
        return st;
    FUZZ_CHECK(in.type && in.action && in.nonce && in.signature);
    envelope_dir d = *dir;
    d.nonce = expect_prev;
    st = envelope_open(&d, &in, payload);
    /* A message signed right and next in order has moved the counter even
     * when it then does not decrypt (envelope.h; the keys of one exchange
     * do not depend on the cipher, so a message sealed under the other
     * cipher is one). */
    char next[24];
    snprintf(next, sizeof next, "%llu", (unsigned long long)expect_prev + 1);
    int in_order = expect_prev != UINT64_MAX && strcmp(in.nonce, next) == 0;
    FUZZ_CHECK(status_known(st));
    if (st == ENVELOPE_OK) {
        FUZZ_CHECK(json_is_object(*payload));
        FUZZ_CHECK(d.nonce == expect_prev + 1);
    } else if (st == ENVELOPE_MALFORMED) {
        /* Authenticated and in order, but the plaintext is no object: the
         * counter has moved (envelope.h). */
        FUZZ_CHECK(d.nonce == expect_prev + 1);
        FUZZ_CHECK(*payload == NULL);
    } else if (st == ENVELOPE_INTEGRITY && in_order && signed_right(dir, &in)) {
        FUZZ_CHECK(d.nonce == expect_prev + 1);
        FUZZ_CHECK(*payload == NULL);
    } else {
        /* Only an authenticated, in-order message may move the counter. */
        FUZZ_CHECK(d.nonce == expect_prev);
        FUZZ_CHECK(*payload == NULL);
    }
    envelope_in_clear(&in);
    return st;
}

/* Replaces the envelope's signature with the right one for its fields. */
static int resign(const envelope_dir *d, envelope_in *in)
{
    if (!json_is_string(in->payload))
        return -1;
    size_t cap = strlen(in->type) + strlen(in->action) + strlen(in->nonce)
                 + (in->reply_to ? strlen(in->reply_to) : 0) + 4;
    char *h = malloc(cap);
    char *b64 = NULL;
    size_t b64_len = 0;
    int rc = -1;
    if (!h)
        return -1;
    long h_len = envelope_header(in->type, in->action, in->nonce, in->reply_to, h, cap);
    FUZZ_CHECK(h_len >= 0);
    const uint8_t *parts[3] = {(const uint8_t *)h, (const uint8_t *)"\n",
                               (const uint8_t *)json_string_value(in->payload)};
    const size_t lens[3] = {(size_t)h_len, 1, json_string_length(in->payload)};
    uint8_t mac[CRYPTO_MAC_LEN];
    if (crypto_hmac_sha256(d->mac_key, parts, lens, 3, mac) != 0
        || crypto_b64_encode(mac, sizeof mac, &b64, &b64_len) != 0)
        goto done;
    if (json_object_set_new(in->root, "signature", json_string(b64)) != 0)
        goto done;
    in->signature = json_string_value(json_object_get(in->root, "signature"));
    rc = 0;
done:
    free(b64);
    free(h);
    return rc;
}

static void mode_open(const envelope_dir *dir, const uint8_t *data, size_t len, int sign_it)
{
    if (!sign_it) {
        json_t *payload = NULL;
        (void)open_checked(dir, 0, (const char *)data, len, &payload);
        json_decref(payload);
        return;
    }
    envelope_in in;
    if (envelope_parse((const char *)data, len, &in) != ENVELOPE_OK)
        return;
    if (resign(dir, &in) == 0) {
        envelope_dir d = *dir;
        json_t *payload = NULL;
        envelope_status st = envelope_open(&d, &in, &payload);
        FUZZ_CHECK(status_known(st));
        /* A valid signature leaves only the nonce and the ciphertext. */
        if (st == ENVELOPE_NONCE)
            FUZZ_CHECK(strcmp(in.nonce, "1") != 0 && d.nonce == 0);
        else
            FUZZ_CHECK(strcmp(in.nonce, "1") == 0 && d.nonce == 1);
        if (st == ENVELOPE_OK)
            FUZZ_CHECK(json_is_object(payload));
        json_decref(payload);
    }
    envelope_in_clear(&in);
}

static const char *const types[] = {"response", "event", "error", "command"};
static const char *const actions[] = {"login_success", "private_message", "error",
                                      "get_history", "key_exchange"};

/* Seals x as the next message of *d: returns the text (caller frees). */
static char *seal_checked(envelope_dir *d, const char *type, const char *action,
                          const char *reply_to, const uint8_t *x, size_t len, size_t *out_len)
{
    char *out = NULL;
    uint64_t before = d->nonce;
    FUZZ_CHECK(envelope_seal(d, type, action, reply_to, (const char *)x, len, &out, out_len)
               == 0);
    FUZZ_CHECK(d->nonce == before + 1);
    FUZZ_CHECK(out && strlen(out) == *out_len);
    return out;
}

/* Section 4's wire form, checked from the text with the primitives alone:
 * the decrypted bytes must be exactly x. */
static void check_wire(const envelope_dir *d, const char *text, size_t text_len,
                       const char *nonce, const uint8_t *x, size_t len)
{
    envelope_in in;
    FUZZ_CHECK(envelope_parse(text, text_len, &in) == ENVELOPE_OK);
    FUZZ_CHECK(strcmp(in.nonce, nonce) == 0);
    FUZZ_CHECK(json_is_string(in.payload));
    uint8_t *raw = NULL, *pt = NULL;
    size_t raw_len = 0, pt_len = 0;
    FUZZ_CHECK(crypto_b64_decode(json_string_value(in.payload), json_string_length(in.payload),
                                 &raw, &raw_len) == 0);
    char h[512];
    long h_len = envelope_header(in.type, in.action, in.nonce, in.reply_to, h, sizeof h);
    FUZZ_CHECK(h_len >= 0);
    pt = malloc(raw_len + 1);
    FUZZ_CHECK(pt != NULL);
    if (d->cipher == ENVELOPE_CIPHER_AES256_GCM) {
        FUZZ_CHECK(raw_len == CRYPTO_GCM_IV_LEN + len + CRYPTO_GCM_TAG_LEN);
        FUZZ_CHECK(crypto_gcm_decrypt(d->enc_key, raw, (const uint8_t *)h, (size_t)h_len,
                                      raw + CRYPTO_GCM_IV_LEN, len,
                                      raw + CRYPTO_GCM_IV_LEN + len, CRYPTO_GCM_TAG_LEN, pt)
                   == 0);
        pt_len = len;
    } else {
        /* PKCS#7 always adds 1 to 16 bytes. */
        FUZZ_CHECK(raw_len == CRYPTO_CBC_IV_LEN + (len / 16 + 1) * 16);
        FUZZ_CHECK(crypto_cbc_decrypt(d->enc_key, raw, raw + CRYPTO_CBC_IV_LEN,
                                      raw_len - CRYPTO_CBC_IV_LEN, pt, &pt_len) == 0);
    }
    FUZZ_CHECK(pt_len == len && (len == 0 || memcmp(pt, x, len) == 0));
    free(pt);
    free(raw);
    envelope_in_clear(&in);
}

static void mode_round_trip(const envelope_dir *dir, fuzz_reader *r)
{
    uint8_t pick = fuzz_byte(r);
    const char *type = types[pick % 4];
    const char *action = actions[(pick >> 2) % 5];
    const char *reply_to = (pick & 0x80) ? "17" : NULL;
    const uint8_t *x = r->data;
    size_t len = r->len;

    envelope_dir sender = *dir;
    size_t len1 = 0, len2 = 0;
    char *first = seal_checked(&sender, type, action, reply_to, x, len, &len1);
    char *second = seal_checked(&sender, type, action, reply_to, x, len, &len2);
    check_wire(dir, first, len1, "1", x, len);
    check_wire(dir, second, len2, "2", x, len);

    /* What open must make of x: the strict parse of the plaintext. */
    json_t *expect = envelope_json_loads((const char *)x, len);
    int is_object = json_is_object(expect);

    json_t *got = NULL;
    envelope_status st = open_checked(dir, 0, first, len1, &got);
    FUZZ_CHECK(st == (is_object ? ENVELOPE_OK : ENVELOPE_MALFORMED));
    if (is_object)
        FUZZ_CHECK(json_equal(got, expect));
    json_decref(got);

    /* In order: the second after the first. Out of order: skipped (second
     * first) and replayed (first again) both get 1006. */
    st = open_checked(dir, 1, second, len2, &got);
    FUZZ_CHECK(st == (is_object ? ENVELOPE_OK : ENVELOPE_MALFORMED));
    json_decref(got);
    FUZZ_CHECK(open_checked(dir, 0, second, len2, &got) == ENVELOPE_NONCE);
    FUZZ_CHECK(open_checked(dir, 1, first, len1, &got) == ENVELOPE_NONCE);
    FUZZ_CHECK(open_checked(dir, 2, first, len1, &got) == ENVELOPE_NONCE);

    json_decref(expect);
    free(second);
    free(first);
}

/* A valid object carrying the input bytes, base64 so any bytes fit. */
static char *object_of(const uint8_t *x, size_t len, json_t **obj)
{
    char *b64 = NULL;
    size_t b64_len = 0;
    FUZZ_CHECK(crypto_b64_encode(x, len, &b64, &b64_len) == 0);
    *obj = json_pack("{s:s, s:i}", "data", b64, "n", (json_int_t)len);
    free(b64);
    FUZZ_CHECK(*obj != NULL);
    char *text = json_dumps(*obj, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    return text;
}

static void mode_tamper(const envelope_dir *dir, fuzz_reader *r)
{
    uint8_t flips[8][2];
    uint8_t n_flips = (uint8_t)(fuzz_byte(r) % 8 + 1);
    for (int i = 0; i < n_flips; i++) {
        flips[i][0] = fuzz_byte(r);
        flips[i][1] = fuzz_byte(r);
    }
    json_t *obj = NULL;
    char *plain = object_of(r->data, r->len, &obj);
    envelope_dir sender = *dir;
    size_t len = 0;
    char *text = seal_checked(&sender, "event", "private_message", NULL, (const uint8_t *)plain,
                              strlen(plain), &len);
    int changed = 0;
    for (int i = 0; i < n_flips; i++) {
        size_t at = (size_t)flips[i][0] * len / 256;
        if (flips[i][1]) {
            text[at] = (char)(text[at] ^ flips[i][1]);
            changed = 1;
        }
    }
    json_t *got = NULL;
    envelope_status st = open_checked(dir, 0, text, len, &got);
    if (!changed)
        FUZZ_CHECK(st == ENVELOPE_OK);
    if (st == ENVELOPE_OK)
        FUZZ_CHECK(json_equal(got, obj));
    json_decref(got);
    free(text);
    free(plain);
    json_decref(obj);
}

static void mode_short(const envelope_dir *dir, fuzz_reader *r)
{
    size_t cut = fuzz_byte(r) % 16 + 1;
    json_t *obj = NULL;
    char *plain = object_of(r->data, r->len, &obj);
    envelope_dir sender = *dir;
    size_t len = 0;
    char *text = seal_checked(&sender, "response", "get_history", "3", (const uint8_t *)plain,
                              strlen(plain), &len);
    envelope_in in;
    FUZZ_CHECK(envelope_parse(text, len, &in) == ENVELOPE_OK);
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    char *b64 = NULL;
    size_t b64_len = 0;
    FUZZ_CHECK(crypto_b64_decode(json_string_value(in.payload), json_string_length(in.payload),
                                 &raw, &raw_len) == 0);
    FUZZ_CHECK(raw_len > cut);
    FUZZ_CHECK(crypto_b64_encode(raw, raw_len - cut, &b64, &b64_len) == 0);
    FUZZ_CHECK(json_object_set_new(in.root, "payload", json_string(b64)) == 0);
    in.payload = json_object_get(in.root, "payload");
    FUZZ_CHECK(resign(dir, &in) == 0);
    envelope_dir d = *dir;
    json_t *got = NULL;
    envelope_status st = envelope_open(&d, &in, &got);
    if (dir->cipher == ENVELOPE_CIPHER_AES256_GCM) {
        FUZZ_CHECK(st == ENVELOPE_INTEGRITY);
    } else {
        /* Cutting whole CBC blocks can leave valid padding by chance; the
         * plaintext is then a prefix, never something else. */
        FUZZ_CHECK(st == ENVELOPE_INTEGRITY || st == ENVELOPE_MALFORMED
                   || (st == ENVELOPE_OK && json_equal(got, obj)));
    }
    json_decref(got);
    free(b64);
    free(raw);
    envelope_in_clear(&in);
    free(text);
    free(plain);
    json_decref(obj);
}

static void mode_counter(const envelope_dir *dir, fuzz_reader *r)
{
    uint64_t sent = fuzz_u64(r);
    uint8_t delta = fuzz_byte(r);
    /* Mostly near each other, so in-order and off-by-one cases are common. */
    uint64_t accepted = (delta & 0x80) ? sent - (uint64_t)(delta & 0x7f) : sent + delta;
    envelope_dir sender = *dir;
    sender.nonce = sent;
    char *text = NULL;
    size_t len = 0;
    int rc = envelope_seal(&sender, "event", "PING", NULL, "{}", 2, &text, &len);
    if (sent == UINT64_MAX) {
        /* The counter may not wrap (envelope_seal). */
        FUZZ_CHECK(rc != 0 && sender.nonce == UINT64_MAX);
        return;
    }
    FUZZ_CHECK(rc == 0 && sender.nonce == sent + 1);
    json_t *got = NULL;
    envelope_status st = open_checked(dir, accepted, text, len, &got);
    FUZZ_CHECK(st == (accepted == sent ? ENVELOPE_OK : ENVELOPE_NONCE));
    json_decref(got);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_reader r = {data, size};
    uint8_t sel = fuzz_byte(&r);
    const envelope_dir *dir = (sel & 8) ? &c2s_cbc : &c2s_gcm;
    switch (sel & 7) {
    case 0:
        mode_open(dir, r.data, r.len, 0);
        break;
    case 1:
        mode_open(dir, r.data, r.len, 1);
        break;
    case 2:
        mode_round_trip(dir, &r);
        break;
    case 3:
        mode_tamper(dir, &r);
        break;
    case 4:
        mode_short(dir, &r);
        break;
    case 5:
        mode_counter(dir, &r);
        break;
    default:
        /* The server's direction too: its keys differ from c2s. */
        mode_open((sel & 8) ? &s2c_cbc : &s2c_gcm, r.data, r.len, 0);
        break;
    }
    return 0;
}
