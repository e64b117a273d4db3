/* The bench's event loop: one epoll set, thousands of non-blocking
 * connections, each a state machine
 *
 *   CONNECTING -> UPGRADING -> HELLO -> PROOF -> READY -> CLOSING -> DEAD
 *
 * that does what client/ws.c and client/handshake.c do for one blocking
 * connection. Those two wait with poll() on a deadline, which cannot drive
 * thousands of sockets from one thread, so only their non-blocking
 * building blocks are reused: the frame header encoder/parser, masking
 * and the accept key (client/ws_frame.c), envelope parse/open/seal and
 * key derivation (proto/envelope.c), base64, RSA-OAEP and the key
 * fingerprint (proto/crypto.c). libwebsockets' client API was the other
 * option; it would add its own per-connection buffers and callbacks
 * between the socket and the measurement, and a second event loop
 * implementation to trust.
 *
 * What --verify-one-in K skips: a delivery (a public_message or
 * private_message event) that is not the K-th on its connection is only
 * recognised, by a scan of its text for type, action and nonce (a full
 * JSON parse when the scan does not match the server's field order), and
 * its nonce must be exactly the next one (the counter advances as
 * envelope_open would move it). Its HMAC is not checked and its payload
 * is neither base64-decoded, decrypted nor parsed, so it gives no latency
 * sample. Every K-th delivery is opened with envelope_open_text, the
 * same checks as envelope_open (HMAC, nonce, decryption) on the fields
 * the scan found, and its send time is read off the decrypted text by a
 * scan: the bench parses no JSON for a delivery the scan recognises
 * (two parses and a strtod of the timestamp were a fifth of the bench's
 * CPU at --verify-one-in 10). Every other message (replies, errors,
 * other events, and a delivery in another form) is opened fully with
 * envelope_open. */
#include "bench.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "crypto.h"

#define SCRATCH_BYTES (256u * 1024u)
#define MAX_UPGRADE_RESPONSE 16384u
#define READS_PER_EVENT 8
#define EPOLL_BATCH 1024
#define CLOSE_WAIT_NS (2000000000ull)
#define SWEEP_NS (100000000ull)
#define MIN_RSA_BITS 2048
#define SUBPROTOCOL "safemessenger.v1"

typedef enum {
    ST_CONNECTING,
    ST_UPGRADING,
    ST_HELLO,
    ST_PROOF,
    ST_READY,
    ST_CLOSING,
    ST_DEAD
} conn_state;

struct bench_conn {
    bench_loop *loop;
    bench_conn *prev, *next;    /* live list, for the timeout sweep */
    bench_conn *dead_next;
    int fd;
    conn_state state;
    uint32_t events;            /* registered with epoll */
    void *user;
    uint64_t started_ns;
    uint64_t deadline_ns;       /* setup or close deadline */
    uint8_t *rbuf;              /* bytes of an incomplete frame */
    size_t rlen, rcap;
    uint8_t *msg;               /* a fragmented message being reassembled */
    size_t msg_len, msg_cap;
    int msg_op;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    char accept[WS_ACCEPT_LEN + 1];
    envelope_dir c2s, s2c;
    uint64_t deliveries;        /* for --verify-one-in; starts staggered */
    const bench_target *target; /* the node it connects to */
};

struct bench_loop {
    const bench_opts *o;
    bench_handlers h;
    void *arg;
    int ep;
    bench_conn *live;
    size_t n_live, n_closing;
    bench_conn *dead;
    size_t max_conns;
    struct sockaddr_storage src[BENCH_MAX_SOURCES];
    socklen_t src_len;
    unsigned n_src, next_src;
    uint64_t setup_timeout_ns;
    bench_counters ctr;
    char *server_pem;           /* the first server_hello's key, reused */
    char fingerprint[CRYPTO_FINGERPRINT_LEN];
    EVP_PKEY *server_key;
    uint8_t *scratch;
    /* When the kernel queued the bytes of the recv being fed (its
     * SO_TIMESTAMPNS, realtime clock; 0: unknown), and the realtime -
     * monotonic offset that converts it, refreshed each sweep. Converted
     * per message, with the time the message was taken. */
    int64_t arrival_real_ns;
    int64_t realtime_offset_ns;
};

static const char *const end_names[END_COUNT] = {
    "closed_by_bench", "connect", "upgrade", "handshake", "protocol",
    "server_closed", "timeout", "io"
};

const char *bench_end_name(bench_end e)
{
    return (unsigned)e < END_COUNT ? end_names[e] : "?";
}

/* ---- lifetime ------------------------------------------------------------ */

static void live_unlink(bench_loop *L, bench_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        L->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    L->n_live--;
}

static void conn_end(bench_conn *c, bench_end why)
{
    if (c->state == ST_DEAD)
        return;
    bench_loop *L = c->loop;
    if (c->state == ST_CLOSING)
        L->n_closing--;
    c->state = ST_DEAD;
    (void)epoll_ctl(L->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    live_unlink(L, c);
    L->ctr.ended[why]++;
    if (L->h.ended)
        L->h.ended(c, why, L->arg);
    /* Freed after the current epoll batch: later events of the batch may
     * still point at it. */
    c->dead_next = L->dead;
    L->dead = c;
}

static void conn_free(bench_conn *c)
{
    crypto_wipe(&c->c2s, sizeof c->c2s);
    crypto_wipe(&c->s2c, sizeof c->s2c);
    free(c->rbuf);
    free(c->msg);
    free(c->wbuf);
    free(c);
}

static void free_dead(bench_loop *L)
{
    while (L->dead) {
        bench_conn *c = L->dead;
        L->dead = c->dead_next;
        conn_free(c);
    }
}

/* ---- output -------------------------------------------------------------- */

static int set_events(bench_conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->loop->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    c->events = events;
    return 0;
}

/* Writes what is queued; the rest waits for EPOLLOUT. */
static void flush(bench_conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            c->loop->ctr.bytes_out += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (set_events(c, EPOLLIN | EPOLLOUT) != 0)
                conn_end(c, END_IO);
            return;
        }
        conn_end(c, c->state == ST_CLOSING ? END_CLOSED_BY_US
                    : c->state == ST_READY ? END_SERVER_CLOSED : END_IO);
        return;
    }
    c->woff = c->wlen = 0;
    if (c->wcap > 65536) {   /* a burst is over: give the memory back */
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    if (c->events & EPOLLOUT && set_events(c, EPOLLIN) != 0)
        conn_end(c, END_IO);
}

static int wbuf_reserve(bench_conn *c, size_t extra)
{
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wcap - c->wlen >= extra)
        return 0;
    if (extra > SIZE_MAX / 4 - c->wlen)
        return -1;
    size_t cap = c->wcap ? c->wcap : 1024;
    while (cap - c->wlen < extra)
        cap *= 2;
    uint8_t *p = realloc(c->wbuf, cap);
    if (!p)
        return -1;
    c->wbuf = p;
    c->wcap = cap;
    return 0;
}

static int queue_raw(bench_conn *c, const void *data, size_t len)
{
    if (wbuf_reserve(c, len) != 0)
        return -1;
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
    return 0;
}

/* One masked frame (RFC 6455 5.3: every client frame is masked). */
static int queue_frame(bench_conn *c, int opcode, const void *data, size_t len)
{
    uint8_t mask[4];
    uint8_t hdr[WS_MAX_HEADER];
    if (crypto_random_public(mask, sizeof mask) != 0)
        return -1;
    size_t hlen = ws_frame_header_write(hdr, opcode, 1, 0, mask, len);
    if (len > SIZE_MAX / 4 || wbuf_reserve(c, hlen + len) != 0)
        return -1;
    memcpy(c->wbuf + c->wlen, hdr, hlen);
    if (len)
        memcpy(c->wbuf + c->wlen + hlen, data, len);
    ws_mask_apply(c->wbuf + c->wlen + hlen, len, mask, 0);
    c->wlen += hlen + len;
    return 0;
}

int conn_send(bench_conn *c, const char *action, const char *payload, size_t len,
              uint64_t *nonce)
{
    if (!c || c->state != ST_READY)
        return -1;
    char *text = NULL;
    size_t text_len = 0;
    if (envelope_seal(&c->c2s, "command", action, NULL, payload, len, &text, &text_len) != 0)
        return -1;
    int rc = queue_frame(c, WS_OP_TEXT, text, text_len);
    free(text);
    if (rc != 0) {
        conn_end(c, END_IO);
        return -1;
    }
    if (nonce)
        *nonce = c->c2s.nonce;
    flush(c);
    return c->state == ST_DEAD ? -1 : 0;
}

int conn_send_json(bench_conn *c, const char *action, const json_t *payload, uint64_t *nonce)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    if (!text)
        return -1;
    int rc = conn_send(c, action, text, strlen(text), nonce);
    free(text);
    return rc;
}

void conn_close(bench_conn *c)
{
    if (!c || c->state == ST_DEAD || c->state == ST_CLOSING)
        return;
    if (c->state < ST_HELLO) {
        conn_end(c, END_CLOSED_BY_US);
        return;
    }
    static const uint8_t normal[2] = {0x03, 0xe8};   /* 1000 */
    if (queue_frame(c, WS_OP_CLOSE, normal, sizeof normal) != 0) {
        conn_end(c, END_CLOSED_BY_US);
        return;
    }
    c->state = ST_CLOSING;
    c->loop->n_closing++;
    c->deadline_ns = bench_now_ns() + CLOSE_WAIT_NS;
    flush(c);
}

void *conn_user(const bench_conn *c) { return c->user; }
void conn_set_user(bench_conn *c, void *user) { c->user = user; }
uint64_t conn_started_ns(const bench_conn *c) { return c->started_ns; }

/* ---- the HTTP upgrade ---------------------------------------------------- */

static int send_upgrade(bench_conn *c)
{
    const ws_url *u = &c->target->ws;
    uint8_t raw[16];
    char *key = NULL;
    size_t key_len = 0;
    char req[2600];
    if (crypto_random(raw, sizeof raw) != 0
        || crypto_b64_encode(raw, sizeof raw, &key, &key_len) != 0)
        return -1;
    int rc = -1;
    if (ws_accept_key(key, c->accept) != 0)
        goto out;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " SUBPROTOCOL "\r\n\r\n",
                     u->path, u->authority, key);
    if (n < 0 || (size_t)n >= sizeof req || queue_raw(c, req, (size_t)n) != 0)
        goto out;
    rc = 0;
out:
    free(key);
    return rc;
}

/* Checks the 101 answer: status line and Sec-WebSocket-Accept. */
static int check_upgrade(const bench_conn *c, const char *hdr, size_t len)
{
    static const char status[] = "HTTP/1.1 101";
    static const char accept_name[] = "sec-websocket-accept:";
    if (len < sizeof status || memcmp(hdr, status, sizeof status - 1) != 0
        || (hdr[sizeof status - 1] != ' ' && hdr[sizeof status - 1] != '\r'))
        return -1;
    const char *p = hdr, *end = hdr + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        size_t n = (size_t)(line_end - p);
        if (n > sizeof accept_name - 1
            && strncasecmp(p, accept_name, sizeof accept_name - 1) == 0) {
            const char *v = p + sizeof accept_name - 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return (size_t)(ve - v) == WS_ACCEPT_LEN && memcmp(v, c->accept, WS_ACCEPT_LEN) == 0
                       ? 0
                       : -1;
        }
        p = line_end + 1;
    }
    return -1;
}

/* ---- the protocol handshake (PROTOCOL.md section 3) ---------------------- */

static int decode_exact(const char *s, size_t want, uint8_t *out)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    if (!s || crypto_b64_decode(s, strlen(s), &buf, &n) != 0)
        return -1;
    int ok = n == want;
    if (ok)
        memcpy(out, buf, want);
    free(buf);
    return ok ? 0 : -1;
}

/* The server's key: parsed and checked once (RSA >= 2048 bits, the
 * fingerprint it announces), then compared as text, so thousands of
 * handshakes do not each parse PEM. A server whose key changes mid-run
 * fails the handshake. */
static EVP_PKEY *server_key(bench_loop *L, const char *pem, const char *fp)
{
    if (L->server_pem)
        return strcmp(L->server_pem, pem) == 0 && strcmp(L->fingerprint, fp) == 0
                   ? L->server_key
                   : NULL;
    EVP_PKEY *key = NULL;
    char computed[CRYPTO_FINGERPRINT_LEN];
    if (crypto_pubkey_from_pem(pem, strlen(pem), &key) != 0)
        return NULL;
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < MIN_RSA_BITS
        || crypto_fingerprint(key, computed) != 0 || strcmp(computed, fp) != 0
        || !(L->server_pem = strdup(pem))) {
        crypto_pkey_free(key);
        return NULL;
    }
    memcpy(L->fingerprint, computed, sizeof computed);
    L->server_key = key;
    return key;
}

static int offers_gcm(const json_t *ciphers)
{
    size_t i;
    const json_t *v;
    json_array_foreach(ciphers, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), "AES-256-GCM") == 0)
            return 1;
    return 0;
}

/* server_hello in, key_exchange out, keys derived. */
static int handle_hello(bench_conn *c, const char *text, size_t len)
{
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK)
        return -1;
    int rc = -1;
    uint8_t k[CRYPTO_KEY_LEN], cnonce[ENVELOPE_NONCE_LEN], snonce[ENVELOPE_NONCE_LEN];
    uint8_t ek[1024];
    size_t ek_len = sizeof ek;
    char *ek_b64 = NULL, *cn_b64 = NULL, *out = NULL;
    size_t b64_len = 0, out_len = 0;
    json_t *kx = NULL;
    json_t *p = env.payload;
    if (strcmp(env.type, "event") != 0 || strcmp(env.action, "server_hello") != 0
        || strcmp(env.nonce, "0") != 0 || !json_is_object(p))
        goto out;
    json_t *proto = json_object_get(p, "protocol");
    const char *pem = json_string_value(json_object_get(p, "public_key"));
    const char *fp = json_string_value(json_object_get(p, "fingerprint"));
    if (!json_is_integer(proto) || json_integer_value(proto) != 1 || !pem || !fp
        || !offers_gcm(json_object_get(p, "ciphers"))
        || decode_exact(json_string_value(json_object_get(p, "server_nonce")), sizeof snonce,
                        snonce) != 0)
        goto out;
    EVP_PKEY *key = server_key(c->loop, pem, fp);
    if (!key || crypto_pkey_size(key) > sizeof ek)
        goto out;
    if (crypto_random(k, sizeof k) != 0 || crypto_random(cnonce, sizeof cnonce) != 0
        || crypto_rsa_oaep_encrypt(key, k, sizeof k, ek, sizeof ek, &ek_len) != 0
        || crypto_b64_encode(ek, ek_len, &ek_b64, &b64_len) != 0
        || crypto_b64_encode(cnonce, sizeof cnonce, &cn_b64, &b64_len) != 0)
        goto out;
    kx = json_pack("{s:s, s:s, s:s}", "cipher", "AES-256-GCM", "encrypted_key", ek_b64,
                   "client_nonce", cn_b64);
    if (!kx || envelope_plain("command", "key_exchange", kx, NULL, &out, &out_len) != 0)
        goto out;
    if (envelope_derive(k, snonce, cnonce, ENVELOPE_CIPHER_AES256_GCM, &c->c2s, &c->s2c) != 0
        || queue_frame(c, WS_OP_TEXT, out, out_len) != 0)
        goto out;
    c->state = ST_PROOF;
    rc = 0;
out:
    crypto_wipe(k, sizeof k);
    json_decref(kx);
    free(out);
    free(ek_b64);
    free(cn_b64);
    envelope_in_clear(&env);
    return rc;
}

/* The server's first sealed message proves it holds K. */
static int handle_proof(bench_conn *c, const char *text, size_t len)
{
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK)
        return -1;
    json_t *payload = NULL;
    int rc = -1;
    if (envelope_open(&c->s2c, &env, &payload) == ENVELOPE_OK
        && strcmp(env.type, "response") == 0 && strcmp(env.action, "key_exchange") == 0
        && strcmp(env.nonce, "1") == 0 && env.reply_to && strcmp(env.reply_to, "0") == 0
        && json_is_true(json_object_get(payload, "success"))
        && json_is_string(json_object_get(payload, "session_id")))
        rc = 0;
    json_decref(payload);
    envelope_in_clear(&env);
    return rc;
}

/* ---- messages after the handshake ---------------------------------------- */

/* PROTOCOL.md section 4: digits, no leading zero, fits in 64 bits. */
static int parse_u64(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > ENVELOPE_NONCE_MAX_DIGITS || (s[0] == '0' && len > 1))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int is_delivery(const envelope_in *env)
{
    return strcmp(env->type, "event") == 0
           && (strcmp(env->action, "public_message") == 0
               || strcmp(env->action, "private_message") == 0);
}

/* Consumes `lit` at *p. */
static int take(const char **p, const char *end, const char *lit, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

#define TAKE(p, end, lit) take(p, end, lit, sizeof lit - 1)

/* The send time a delivery's content starts with (CLOCK_MONOTONIC ns as
 * decimal text, then the end of the content, `end`, or a space and
 * padding), read from the len bytes at s; 0 when absent. */
static uint64_t leading_ns(const char *s, size_t len, char end)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < len && i < 20 && s[i] >= '0' && s[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    return i > 0 && i < len && (s[i] == end || s[i] == ' ') ? v : 0;
}

static uint64_t content_ns(const json_t *payload)
{
    const char *s = json_string_value(json_object_get(payload, "content"));
    return s ? leading_ns(s, strlen(s) + 1, '\0') : 0;
}

/* A delivery found by scan_delivery: where its fields are in the text. */
typedef struct scanned_delivery {
    const char *action;             /* a static string */
    char nonce[ENVELOPE_NONCE_MAX_DIGITS + 1];
    const char *payload, *signature;
    size_t payload_len, signature_len;
} scanned_delivery;

/* Recognises a delivery by a scan of its text in the server's field
 * order, {"type":"event","action":"public_message","payload":"<b64>",
 * "nonce":"<n>","signature":"<b64>"}, without a JSON parse. Anything
 * else (another order, escapes, extra fields) is 0 and takes the full
 * path, so a change on the server only costs speed. */
static int scan_delivery(const char *t, size_t len, scanned_delivery *out)
{
    const char *p = t, *end = t + len;
    if (!TAKE(&p, end, "{\"type\":\"event\",\"action\":\""))
        return 0;
    if (TAKE(&p, end, "public_message\",\"payload\":\""))
        out->action = "public_message";
    else if (TAKE(&p, end, "private_message\",\"payload\":\""))
        out->action = "private_message";
    else
        return 0;
    const char *q = memchr(p, '"', (size_t)(end - p));   /* base64 holds no quote */
    if (!q)
        return 0;
    out->payload = p;
    out->payload_len = (size_t)(q - p);
    p = q;
    if (!TAKE(&p, end, "\",\"nonce\":\""))
        return 0;
    q = memchr(p, '"', (size_t)(end - p));
    if (!q || q == p || (size_t)(q - p) > ENVELOPE_NONCE_MAX_DIGITS)
        return 0;
    memcpy(out->nonce, p, (size_t)(q - p));
    out->nonce[q - p] = '\0';
    p = q;
    if (!TAKE(&p, end, "\",\"signature\":\""))
        return 0;
    q = memchr(p, '"', (size_t)(end - p));
    if (!q)
        return 0;
    out->signature = p;
    out->signature_len = (size_t)(q - p);
    p = q;
    return TAKE(&p, end, "\"}") && p == end;
}

/* The send time at the start of a decrypted delivery's "content" (as
 * content_ns reads it from the parsed payload), found by a scan: the key
 * must stand where a key can (after '{' or ','). 0 when it is not there. */
static uint64_t scan_content_ns(const uint8_t *pt, size_t len)
{
    static const char key[] = "\"content\":\"";
    const size_t klen = sizeof key - 1;
    for (size_t i = 1; i + klen < len; i++)
        if (memcmp(pt + i, key, klen) == 0 && (pt[i - 1] == '{' || pt[i - 1] == ','))
            return leading_ns((const char *)pt + i + klen, len - i - klen, '"');
    return 0;
}

/* A scanned delivery opened as envelope_open would (HMAC, nonce,
 * decryption), without the two JSON parses; the plaintext must at least
 * look like an object (envelope_open would parse it). */
static int open_scanned(bench_conn *c, const scanned_delivery *sc, uint64_t *content)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    if (envelope_open_text(&c->s2c, "event", sc->action, sc->nonce, NULL, sc->signature,
                           sc->signature_len, sc->payload, sc->payload_len, &pt, &pt_len)
        != ENVELOPE_OK)
        return -1;
    int object = pt_len >= 2 && pt[0] == '{' && pt[pt_len - 1] == '}';
    *content = object ? scan_content_ns(pt, pt_len) : 0;
    crypto_wipe(pt, pt_len);
    free(pt);
    return object ? 0 : -1;
}

/* realtime - monotonic, read between two monotonic reads. */
static int64_t realtime_offset(void)
{
    struct timespec rt;
    uint64_t before = bench_now_ns();
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t after = bench_now_ns();
    int64_t real = (int64_t)rt.tv_sec * 1000000000 + (int64_t)rt.tv_nsec;
    return real - (int64_t)(before + (after - before) / 2);
}

static void deliver(bench_conn *c, const bench_msg *m)
{
    if (c->loop->h.message)
        c->loop->h.message(c, m, c->loop->arg);
}

static int handle_sealed(bench_conn *c, const char *text, size_t len)
{
    bench_loop *L = c->loop;
    uint64_t now = bench_now_ns();
    uint64_t arrival = L->arrival_real_ns ? bench_arrival_mono(L->arrival_real_ns,
                                                               &L->realtime_offset_ns, now,
                                                               realtime_offset)
                                          : 0;
    unsigned k = L->o->verify_one_in;
    uint64_t n = 0;
    scanned_delivery sc;
    int scanned = scan_delivery(text, len, &sc);
    if (scanned && ++c->deliveries % k != 0) {
        /* Not opened, but the nonce must still be the next one and
         * advance, exactly as envelope_open would move it. */
        if (parse_u64(sc.nonce, &n) != 0 || c->s2c.nonce == UINT64_MAX
            || n != c->s2c.nonce + 1)
            return -1;
        c->s2c.nonce = n;
        L->ctr.unverified++;
        bench_msg m = {.type = "event", .action = sc.action, .recv_ns = now,
                       .arrival_ns = arrival};
        deliver(c, &m);
        return 0;
    }
    if (scanned) {
        bench_msg m = {.type = "event", .action = sc.action, .verified = 1, .recv_ns = now,
                       .arrival_ns = arrival};
        if (open_scanned(c, &sc, &m.content_ns) != 0)
            return -1;
        L->ctr.verified++;
        deliver(c, &m);
        return 0;
    }
    envelope_in env;
    if (envelope_parse(text, len, &env) != ENVELOPE_OK)
        return -1;
    json_t *payload = NULL;
    int rc = -1;
    int delivery = is_delivery(&env);
    if (delivery && !scanned && ++c->deliveries % k != 0) {
        /* A delivery the scan did not recognise: same rule, parsed. */
        if (parse_u64(env.nonce, &n) != 0 || c->s2c.nonce == UINT64_MAX || n != c->s2c.nonce + 1)
            goto out;
        c->s2c.nonce = n;
        L->ctr.unverified++;
    } else {
        if (envelope_open(&c->s2c, &env, &payload) != ENVELOPE_OK)
            goto out;
        if (delivery)
            L->ctr.verified++;
    }
    bench_msg m = {.type = env.type, .action = env.action, .reply_to = env.reply_to,
                   .payload = payload, .verified = payload != NULL,
                   .content_ns = content_ns(payload), .recv_ns = now,
                   .arrival_ns = arrival};
    if (env.reply_to && parse_u64(env.reply_to, &m.reply_nonce) != 0)
        m.reply_nonce = 0;
    deliver(c, &m);
    rc = 0;
out:
    json_decref(payload);
    envelope_in_clear(&env);
    return rc;
}

/* One complete text message. Returns 0, or -1 after ending the conn. */
static int on_text(bench_conn *c, const char *text, size_t len)
{
    switch (c->state) {
    case ST_HELLO:
        if (handle_hello(c, text, len) != 0) {
            conn_end(c, END_HANDSHAKE);
            return -1;
        }
        flush(c);
        return c->state == ST_DEAD ? -1 : 0;
    case ST_PROOF:
        if (handle_proof(c, text, len) != 0) {
            conn_end(c, END_HANDSHAKE);
            return -1;
        }
        c->state = ST_READY;
        c->deadline_ns = 0;
        if (c->loop->h.ready)
            c->loop->h.ready(c, c->loop->arg);
        return c->state == ST_DEAD ? -1 : 0;
    case ST_READY:
        if (handle_sealed(c, text, len) != 0) {
            conn_end(c, END_PROTOCOL);
            return -1;
        }
        return c->state == ST_DEAD ? -1 : 0;
    default:
        return 0;   /* closing: whatever still arrives is dropped */
    }
}

static bench_end eof_reason(const bench_conn *c)
{
    switch (c->state) {
    case ST_CLOSING:
        return END_CLOSED_BY_US;
    case ST_UPGRADING:
        return END_UPGRADE;
    case ST_HELLO:
    case ST_PROOF:
        return END_HANDSHAKE;
    default:
        return END_SERVER_CLOSED;
    }
}

static int msg_append(bench_conn *c, const uint8_t *data, size_t len)
{
    if (len > WS_MAX_MESSAGE - c->msg_len)
        return -1;
    if (c->msg_len + len > c->msg_cap) {
        size_t cap = c->msg_cap ? c->msg_cap : 4096;
        while (cap < c->msg_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->msg, cap);
        if (!p)
            return -1;
        c->msg = p;
        c->msg_cap = cap;
    }
    memcpy(c->msg + c->msg_len, data, len);
    c->msg_len += len;
    return 0;
}

static int on_control(bench_conn *c, const ws_frame_header *h, const uint8_t *body)
{
    if (h->opcode == WS_OP_PING) {
        /* RFC 6455 5.5.3: a pong echoes the ping's data. */
        if (c->state == ST_CLOSING)
            return 0;
        if (queue_frame(c, WS_OP_PONG, body, (size_t)h->payload_len) != 0) {
            conn_end(c, END_IO);
            return -1;
        }
        flush(c);
        return c->state == ST_DEAD ? -1 : 0;
    }
    if (h->opcode == WS_OP_PONG)
        return 0;
    if (h->opcode != WS_OP_CLOSE) {
        conn_end(c, END_PROTOCOL);
        return -1;
    }
    if (c->state == ST_CLOSING)
        return 0;   /* the answer to ours: the server closes TCP next */
    /* The server closed first: a handshake refusal or a disconnect. */
    conn_end(c, eof_reason(c));
    return -1;
}

/* Consumes complete frames from buf; *used says how far. Returns 0, or -1
 * once the connection ended. */
static int consume(bench_conn *c, const uint8_t *buf, size_t len, size_t *used)
{
    size_t off = 0;
    *used = 0;
    if (c->state == ST_UPGRADING) {
        const uint8_t *end = NULL;
        for (size_t i = 3; i < len && i < MAX_UPGRADE_RESPONSE; i++)
            if (buf[i] == '\n' && memcmp(buf + i - 3, "\r\n\r\n", 4) == 0) {
                end = buf + i + 1;
                break;
            }
        if (!end) {
            if (len < MAX_UPGRADE_RESPONSE)
                return 0;
            conn_end(c, END_UPGRADE);
            return -1;
        }
        off = (size_t)(end - buf);
        if (check_upgrade(c, (const char *)buf, off) != 0) {
            conn_end(c, END_UPGRADE);
            return -1;
        }
        c->state = ST_HELLO;
    }
    while (off < len) {
        ws_frame_header h;
        int p = ws_frame_header_parse(buf + off, len - off, &h);
        if (p == 0)
            break;
        if (p < 0 || h.masked || h.rsv || h.payload_len > WS_MAX_MESSAGE) {
            conn_end(c, END_PROTOCOL);
            return -1;
        }
        size_t total = h.header_len + (size_t)h.payload_len;
        if (len - off < total)
            break;
        const uint8_t *body = buf + off + h.header_len;
        off += total;
        *used = off;
        c->loop->ctr.frames_in++;
        int rc = 0;
        if (h.opcode & 0x8) {
            if (!h.fin || h.payload_len > 125) {
                conn_end(c, END_PROTOCOL);
                return -1;
            }
            rc = on_control(c, &h, body);
        } else if (h.opcode == WS_OP_TEXT && h.fin && c->msg_op == 0) {
            rc = on_text(c, (const char *)body, (size_t)h.payload_len);
        } else if ((h.opcode == WS_OP_CONT) != (c->msg_op != 0) || h.opcode == WS_OP_BINARY
                   || (h.opcode != WS_OP_CONT && h.opcode != WS_OP_TEXT)) {
            conn_end(c, END_PROTOCOL);   /* binary is not in the protocol */
            return -1;
        } else {
            if (h.opcode == WS_OP_TEXT)
                c->msg_op = WS_OP_TEXT;
            if (msg_append(c, body, (size_t)h.payload_len) != 0) {
                conn_end(c, END_PROTOCOL);
                return -1;
            }
            if (h.fin) {
                c->msg_op = 0;
                rc = on_text(c, (const char *)c->msg, c->msg_len);
                c->msg_len = 0;
            }
        }
        if (rc != 0 || c->state == ST_DEAD)
            return -1;
    }
    *used = off;
    return 0;
}

/* Feeds newly read bytes: parsed in place when nothing is pending, else
 * appended to what is. An incomplete frame is kept in rbuf. */
static int feed(bench_conn *c, const uint8_t *data, size_t n)
{
    const uint8_t *buf = data;
    size_t len = n;
    if (c->rlen) {
        if (c->rcap - c->rlen < n) {
            size_t cap = c->rcap ? c->rcap : 4096;
            while (cap - c->rlen < n)
                cap *= 2;
            uint8_t *p = realloc(c->rbuf, cap);
            if (!p) {
                conn_end(c, END_IO);
                return -1;
            }
            c->rbuf = p;
            c->rcap = cap;
        }
        memcpy(c->rbuf + c->rlen, data, n);
        c->rlen += n;
        buf = c->rbuf;
        len = c->rlen;
    }
    size_t used = 0;
    if (consume(c, buf, len, &used) != 0)
        return -1;
    size_t left = len - used;
    if (buf == c->rbuf) {
        memmove(c->rbuf, c->rbuf + used, left);
    } else if (left) {
        if (c->rcap < left) {
            uint8_t *p = realloc(c->rbuf, left);
            if (!p) {
                conn_end(c, END_IO);
                return -1;
            }
            c->rbuf = p;
            c->rcap = left;
        }
        memcpy(c->rbuf, buf + used, left);
    }
    c->rlen = left;
    if (left == 0 && c->rcap > 65536) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    return 0;
}

/* The SCM_TIMESTAMPNS of a recvmsg (realtime clock, ns), 0 if none. */
static int64_t arrival_real_of(struct msghdr *mh)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
            continue;
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
        return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
    }
    return 0;
}

static void on_readable(bench_conn *c)
{
    bench_loop *L = c->loop;
    for (int i = 0; i < READS_PER_EVENT && c->state != ST_DEAD; i++) {
        struct iovec iov = {.iov_base = L->scratch, .iov_len = SCRATCH_BYTES};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } control;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                            .msg_controllen = sizeof control.buf};
        ssize_t n = recvmsg(c->fd, &mh, 0);
        if (n > 0) {
            L->arrival_real_ns = arrival_real_of(&mh);
            L->ctr.bytes_in += (uint64_t)n;
            if (feed(c, L->scratch, (size_t)n) != 0 || (size_t)n < SCRATCH_BYTES)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_end(c, n == 0 || errno == ECONNRESET ? eof_reason(c) : END_IO);
        return;
    }
}

static void on_connected(bench_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        conn_end(c, END_CONNECT);
        return;
    }
    c->state = ST_UPGRADING;
    if (send_upgrade(c) != 0) {
        conn_end(c, END_IO);
        return;
    }
    flush(c);
}

/* ---- connecting ---------------------------------------------------------- */

int loop_connect(bench_loop *L, void *user, bench_conn **out)
{
    if (L->n_live >= L->max_conns)
        return -1;
    const bench_opts *o = L->o;
    unsigned ti = (unsigned)(L->ctr.connects % o->n_targets);
    const bench_target *t = &o->targets[ti];
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* The kernel's receive time of each read (bench_msg.arrival_ns). */
    (void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (L->n_src > 1) {
        /* The port is picked at connect() from the whole 4-tuple, so each
         * source address has its own ~28k ephemeral ports. */
        (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        const struct sockaddr_storage *src = &L->src[L->next_src++ % L->n_src];
        if (bind(fd, (const struct sockaddr *)src, L->src_len) != 0) {
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addr_len) != 0
        && errno != EINPROGRESS) {
        /* Typically EADDRNOTAVAIL: the source address ran out of ports. */
        int e = errno;
        close(fd);
        L->ctr.connects++;
        L->ctr.per_target[ti]++;
        L->ctr.ended[END_CONNECT]++;
        errno = e;
        return -1;
    }
    bench_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -1;
    }
    c->loop = L;
    c->target = t;
    c->fd = fd;
    c->user = user;
    c->state = ST_CONNECTING;
    /* Staggered: with --verify-one-in K, each message's deliveries are one
     * in K opened, spread over its recipients. From 0 on every connection,
     * the members of a room would all open the same message (they count
     * in step): every K-th message cost the bench K times its share at
     * once, and the latency samples came only from those messages, late
     * by the bench's own burst of opening (p50 16 ms at 10 messages/s,
     * 1 x 1,000). */
    c->deliveries = L->ctr.connects % (L->o->verify_one_in ? L->o->verify_one_in : 1);
    c->started_ns = bench_now_ns();
    c->deadline_ns = c->started_ns + L->setup_timeout_ns;
    c->events = EPOLLIN | EPOLLOUT;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return -1;
    }
    c->next = L->live;
    if (L->live)
        L->live->prev = c;
    L->live = c;
    L->n_live++;
    L->ctr.connects++;
    L->ctr.per_target[ti]++;
    *out = c;
    return 0;
}

/* Connections past their setup or close deadline. */
static void sweep(bench_loop *L, uint64_t now)
{
    bench_conn *c = L->live;
    while (c) {
        bench_conn *next = c->next;
        if (c->deadline_ns && now >= c->deadline_ns) {
            if (c->state == ST_CLOSING)
                L->ctr.close_timeouts++;
            conn_end(c, c->state == ST_CLOSING ? END_CLOSED_BY_US : END_TIMEOUT);
        }
        c = next;
    }
}

/* ---- the loop ------------------------------------------------------------ */

static int make_sources(bench_loop *L, const bench_opts *o)
{
    unsigned n = o->sources ? o->sources : 1;
    if (n > BENCH_MAX_SOURCES)
        n = BENCH_MAX_SOURCES;
    if (o->targets[0].addr.ss_family != AF_INET)
        n = 1;   /* ::1 is the only IPv6 loopback address */
    for (unsigned i = 0; i < n; i++) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&L->src[i];
        memset(sin, 0, sizeof *sin);
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(0x7f000001u + i);   /* 127.0.0.1 + i */
    }
    L->src_len = sizeof(struct sockaddr_in);
    L->n_src = n;
    return 0;
}

int loop_new(const bench_opts *o, const bench_handlers *h, void *arg, bench_loop **out)
{
    bench_loop *L = calloc(1, sizeof *L);
    if (!L)
        return -1;
    L->o = o;
    L->h = *h;
    L->arg = arg;
    L->max_conns = o->max_connections;
    L->setup_timeout_ns = (uint64_t)(o->setup_timeout_s * 1e9);
    L->scratch = malloc(SCRATCH_BYTES);
    L->realtime_offset_ns = realtime_offset();
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!L->scratch || L->ep < 0 || make_sources(L, o) != 0) {
        loop_free(L);
        return -1;
    }
    *out = L;
    return 0;
}

void loop_free(bench_loop *L)
{
    if (!L)
        return;
    /* Whatever is still open goes without ended() callbacks. */
    while (L->live) {
        bench_conn *c = L->live;
        L->live = c->next;
        if (c->fd >= 0)
            close(c->fd);
        conn_free(c);
    }
    free_dead(L);
    if (L->ep >= 0)
        close(L->ep);
    free(L->scratch);
    free(L->server_pem);
    crypto_pkey_free(L->server_key);
    free(L);
}

int loop_move(bench_conn *c, bench_loop *to)
{
    bench_loop *from = c ? c->loop : NULL;
    if (!from || !to || from == to)
        return -1;
    /* Only a ready connection: no setup or close deadline is running on
     * the loop it leaves (a write still queued goes with it, and so does
     * its epoll interest). */
    if (c->state != ST_READY || c->deadline_ns)
        return -1;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(to->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        return -1;
    (void)epoll_ctl(from->ep, EPOLL_CTL_DEL, c->fd, NULL);
    live_unlink(from, c);
    c->loop = to;
    c->next = to->live;
    if (to->live)
        to->live->prev = c;
    to->live = c;
    to->n_live++;
    return 0;
}

void loop_counters_add(bench_loop *into, const bench_loop *from)
{
    bench_counters *a = &into->ctr;
    const bench_counters *b = &from->ctr;
    for (int i = 0; i < END_COUNT; i++)
        a->ended[i] += b->ended[i];
    a->verified += b->verified;
    a->unverified += b->unverified;
    a->close_timeouts += b->close_timeouts;
    a->frames_in += b->frames_in;
    a->bytes_in += b->bytes_in;
    a->bytes_out += b->bytes_out;
}

size_t loop_live(const bench_loop *L) { return L->n_live; }
size_t loop_closing(const bench_loop *L) { return L->n_closing; }
const bench_counters *loop_counters(const bench_loop *L) { return &L->ctr; }

size_t loop_room(const bench_loop *L)
{
    return L->n_live < L->max_conns ? L->max_conns - L->n_live : 0;
}

static int ms_until(uint64_t now, uint64_t t)
{
    if (t <= now)
        return 0;
    uint64_t ms = (t - now + 999999u) / 1000000u;
    return ms > 1000 ? 1000 : (int)ms;
}

int loop_run(bench_loop *L, uint64_t deadline_ns, unsigned tick_ms, bench_tick_fn tick, void *arg)
{
    struct epoll_event evs[EPOLL_BATCH];
    uint64_t tick_ns = (uint64_t)(tick_ms ? tick_ms : 1) * 1000000u;
    uint64_t now = bench_now_ns();
    uint64_t next_tick = now, next_sweep = now;
    while (!bench_interrupted) {
        now = bench_now_ns();
        if (now >= deadline_ns)
            break;
        if (now >= next_sweep) {
            L->realtime_offset_ns = realtime_offset();
            sweep(L, now);
            free_dead(L);
            next_sweep = now + SWEEP_NS;
        }
        if (now >= next_tick) {
            if (tick && tick(arg, now))
                break;
            free_dead(L);
            next_tick = now + tick_ns;
        }
        uint64_t wake = next_tick < next_sweep ? next_tick : next_sweep;
        if (deadline_ns < wake)
            wake = deadline_ns;
        int n = epoll_wait(L->ep, evs, EPOLL_BATCH, ms_until(now, wake));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (int i = 0; i < n; i++) {
            bench_conn *c = evs[i].data.ptr;
            if (c->state == ST_DEAD)
                continue;
            if (c->state == ST_CONNECTING) {
                on_connected(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush(c);
            if (c->state != ST_DEAD && evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
        }
        free_dead(L);
    }
    return 0;
}
