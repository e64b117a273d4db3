#include "handshake.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "envelope.h"
#include "io_threads.h"
#include "log.h"
#include "peers.h"
#include "server_metrics.h"
#include "session.h"
#include "session_io.h"

/* Names the handshake's queue on the worker pool (each plugin has its
 * own), and bounds it: limits.handshake_queue jobs may wait. */
static const char rsa_owner;

/* Seconds a client refused for a full queue is told to wait. */
#define HANDSHAKE_RETRY_AFTER 1

/* For the shutdown line: counted on worker and I/O threads. */
static atomic_ulong rsa_run, rsa_dropped, rsa_refused;

typedef struct key_job {
    sm_session_id session;
    int io_thread;         /* the session's I/O thread, -1 without them */
    envelope_cipher cipher;
    uint8_t client_nonce[ENVELOPE_NONCE_LEN];
    uint8_t *encrypted;
    size_t encrypted_len;
    /* OpenSSL 3 wants room for a whole modulus; larger keys are refused
     * when the server key is loaded. */
    uint8_t key[CRYPTO_RSA_MAX_BITS / 8];
    size_t key_len;
    int ok;
    char *nonce; /* the key_exchange's nonce, echoed as reply_to */
} key_job;

void handshake_timed_out(struct session *s)
{
    if (s->state == SESSION_HANDSHAKE || s->state == SESSION_KEY_PENDING) {
        LOG_INFO("session %llu (%s): no key_exchange in time; closing",
                 (unsigned long long)s->id, s->address);
        server_metrics_handshake("timeout");
        session_io_out_close(s, 1008, "handshake timeout");
    }
}

static void timeout_cb(sm_timer *t, void *arg)
{
    (void)t;
    struct session *s = session_find((sm_session_id)(uintptr_t)arg);
    if (!s)
        return;
    s->handshake_timer = NULL; /* one-shot: freed by the timer module */
    handshake_timed_out(s);
}

/* The session's own thread's timer when the transport has one (an I/O
 * thread's), the core's otherwise. */
static int deadline_start(struct session *s, double seconds)
{
    if (g_core.transport && g_core.transport->handshake_deadline)
        return g_core.transport->handshake_deadline(s, seconds);
    s->handshake_timer = core_timer_start(seconds, timeout_cb, (void *)(uintptr_t)s->id);
    return s->handshake_timer ? 0 : -1;
}

static void deadline_stop(struct session *s)
{
    if (g_core.transport && g_core.transport->handshake_deadline)
        g_core.transport->handshake_deadline(s, 0);
    if (s->handshake_timer) {
        timers_stop(g_core.timers, s->handshake_timer);
        s->handshake_timer = NULL;
    }
}

int handshake_start(struct session *s)
{
    char *nonce_b64 = NULL;
    if (core_random(s->server_nonce, sizeof s->server_nonce) != 0 ||
        crypto_b64_encode(s->server_nonce, sizeof s->server_nonce, &nonce_b64, NULL) != 0)
        return -1;
    json_t *payload = json_pack("{s:i, s:s, s:s, s:[s,s], s:s}", "protocol", 1, "public_key",
                                g_core.server_public_pem, "fingerprint", g_core.fingerprint,
                                "ciphers", envelope_cipher_name(ENVELOPE_CIPHER_AES256_GCM),
                                envelope_cipher_name(ENVELOPE_CIPHER_AES256_CBC_HMAC),
                                "server_nonce", nonce_b64);
    free(nonce_b64);
    char *text = payload ? session_payload_text(payload) : NULL;
    json_decref(payload);
    if (!text)
        return -1;
    /* The session has no keys yet, so session_io sends it unencrypted. */
    int rc = session_io_out_send(s, "event", "server_hello", NULL, text, strlen(text));
    free(text);
    if (rc != 0)
        return -1;
    const server_config *sc = g_core.sc;
    return deadline_start(s, sc ? (double)sc->handshake_timeout : 10.0);
}

static void job_free(key_job *job)
{
    crypto_wipe(job->key, sizeof job->key);
    free(job->encrypted);
    free(job->nonce);
    free(job);
}

/* Worker thread: the only RSA private-key operation of the handshake. */
static void job_work(void *arg)
{
    key_job *job = arg;
    size_t out_len = 0;
    atomic_fetch_add_explicit(&rsa_run, 1, memory_order_relaxed);
    job->ok = crypto_rsa_oaep_decrypt(g_core.server_key, job->encrypted, job->encrypted_len,
                                      job->key, sizeof job->key, &out_len) == 0;
    job->key_len = out_len;
}

/* The session's drop hook: its session is being destroyed. A job still
 * waiting is taken off the queue and never costs a private-key operation
 * (a flood of key_exchanges from connections that close at once costs
 * nothing more); one already running or finished ends in job_done, which
 * finds no session. */
static void job_drop(void *arg)
{
    key_job *job = arg;
    if (workers_cancel(g_core.pool, &rsa_owner, job) != 0)
        return;
    atomic_fetch_add(&rsa_dropped, 1);
    LOG_DEBUG("session %llu closed before its key_exchange was decrypted: RSA job dropped",
              (unsigned long long)job->session);
    job_free(job);
}

/* Completes the handshake: keys, session token, the reply. 0, or -1
 * after replying with an error and closing the session. */
static int finish_key_exchange(struct session *s, key_job *job)
{
    if (!job->ok || job->key_len != CRYPTO_KEY_LEN) {
        /* One reply whatever failed: padding, length or anything else. */
        session_io_out_error(s, job->nonce, "key_exchange", SM_ERR_INTEGRITY,
                            "key exchange failed", NULL);
        session_io_out_close(s, 1008, "key exchange failed");
        return -1;
    }
    uint8_t token[16];
    static const char hex[] = "0123456789abcdef";
    if (envelope_derive(job->key, s->server_nonce, job->client_nonce, job->cipher, &s->c2s,
                        &s->s2c) != 0 ||
        core_random(token, sizeof token) != 0) {
        session_io_out_error(s, job->nonce, "key_exchange", SM_ERR_INTERNAL,
                            "internal server error", NULL);
        session_io_out_close(s, 1011, "internal error");
        return -1;
    }
    for (size_t i = 0; i < sizeof token; i++) {
        s->token[2 * i] = hex[token[i] >> 4];
        s->token[2 * i + 1] = hex[token[i] & 15];
    }
    s->token[32] = '\0';
    session_set_open(s);
    deadline_stop(s);
    json_t *reply = json_pack("{s:b, s:s}", "success", 1, "session_id", s->token);
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (!text ||
        session_io_out_send(s, "response", "key_exchange", job->nonce, text, strlen(text)) != 0) {
        free(text);
        session_io_out_close(s, 1011, "internal error");
        return -1;
    }
    free(text);
    return 0;
}

/* The session of a job: looked up on the thread that owns it. */
static struct session *job_session(const key_job *job)
{
    return job->io_thread >= 0 ? io_threads_find(job->session) : session_find(job->session);
}

/* On the session's thread, once the RSA work is done. */
static void job_finish(key_job *job)
{
    struct session *s = job_session(job);
    /* Past this point the session must not hand the job to job_drop: its
     * memory is freed below and may be reused by another session's job. */
    if (s && s->key_job == job) {
        s->key_job = NULL;
        s->key_job_drop = NULL;
    }
    if (!s || s->state != SESSION_KEY_PENDING)
        goto out;
    if (finish_key_exchange(s, job) != 0) {
        server_metrics_handshake("failed");
        goto out;
    }
    server_metrics_handshake("ok");
    session_opened(s);
    /* Commands pipelined behind key_exchange go after the session is
     * known to the logic side (the bridge keeps the order). */
    if (s->state == SESSION_OPEN)
        session_io_resume(s);
out:
    job_free(job);
}

static void job_finish_cb(void *arg) { job_finish(arg); }

/* Without I/O threads: the pool's completion, on the loop thread. */
static void job_done(void *arg, int cancelled)
{
    key_job *job = arg;
    if (cancelled) {
        atomic_fetch_add(&rsa_dropped, 1); /* the pool stopped before the job started */
        struct session *s = job_session(job);
        if (s && s->key_job == job) {
            s->key_job = NULL;
            s->key_job_drop = NULL;
        }
        job_free(job);
        return;
    }
    job_finish(job);
}

/* With I/O threads the work itself hands the job to the session's I/O
 * thread (job_work_io), so the pool has no completion for a job that ran
 * (workers_submit_handoff): this frees only one that never ran. */
static void job_done_io(void *arg, int cancelled)
{
    if (cancelled) {
        atomic_fetch_add(&rsa_dropped, 1);
        job_free(arg);
    }
}

static void job_work_io(void *arg)
{
    key_job *job = arg;
    job_work(job);
    if (io_threads_post_completion(job->io_thread, job_finish_cb, job) != 0)
        job_free(job); /* the thread has stopped: nobody is left to answer */
}

static const char *string_field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* limits.handshakes_per_address, checked before any field so that a
 * refused attempt costs no RSA work: error 1008 with retry_after, sent
 * unencrypted like every handshake error, then close 1008. */
static int handshake_admit(struct session *s, const char *nonce)
{
    double retry_after = 0;
    size_t refused = 0;
    if (!g_core.peers ||
        peers_handshake_take(g_core.peers, s->address, core_mono_now(), &retry_after, &refused))
        return 1;
    if (refused)
        LOG_WARN("refused %zu key_exchange(s) from %s: handshakes_per_address (%d per minute) "
                 "reached", refused, s->address, g_core.sc->handshakes_per_address);
    json_t *extra = json_pack("{s:f}", "retry_after", retry_after);
    session_io_out_error(s, nonce, "key_exchange", SM_ERR_RATE_LIMITED, "rate limited", extra);
    json_decref(extra);
    server_metrics_handshake("refused");
    session_io_out_close(s, 1008, "rate limited");
    return 0;
}

void handshake_receive(struct session *s, const char *text, size_t len)
{
    envelope_in in;
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        server_metrics_handshake("failed");
        session_io_fail(s, SM_ERR_MALFORMED, "malformed envelope", 1008);
        return;
    }
    key_job *job = NULL;
    const char *why = NULL;
    if (strcmp(in.type, "command") != 0 || strcmp(in.action, "key_exchange") != 0) {
        why = "the first message must be the key_exchange command";
        goto reject;
    }
    if (!handshake_admit(s, in.nonce))
        goto fail;
    const char *cipher = string_field(in.payload, "cipher");
    const char *ek = string_field(in.payload, "encrypted_key");
    const char *cn = string_field(in.payload, "client_nonce");
    if (!json_is_object(in.payload) || !cipher || !ek || !cn) {
        why = "key_exchange needs string fields cipher, encrypted_key and client_nonce";
        goto reject;
    }
    job = calloc(1, sizeof *job);
    if (!job)
        goto reject_internal;
    job->session = s->id;
    job->io_thread = s->io_thread;
    job->cipher = envelope_cipher_from_name(cipher);
    if (job->cipher == ENVELOPE_CIPHER_NONE) {
        why = "unknown cipher";
        goto reject;
    }
    uint8_t *nonce_bytes = NULL;
    size_t nonce_len = 0;
    if (crypto_b64_decode(cn, strlen(cn), &nonce_bytes, &nonce_len) != 0) {
        why = "client_nonce is not valid base64";
        goto reject;
    }
    if (nonce_len != ENVELOPE_NONCE_LEN) {
        free(nonce_bytes);
        why = "client_nonce must be 32 bytes";
        goto reject;
    }
    memcpy(job->client_nonce, nonce_bytes, ENVELOPE_NONCE_LEN);
    free(nonce_bytes);
    if (crypto_b64_decode(ek, strlen(ek), &job->encrypted, &job->encrypted_len) != 0) {
        why = "encrypted_key is not valid base64";
        goto reject;
    }
    size_t nlen = strlen(in.nonce);
    job->nonce = malloc(nlen + 1);
    if (!job->nonce)
        goto reject_internal;
    memcpy(job->nonce, in.nonce, nlen + 1);
    /* Checked and queued under one lock: I/O threads submit at once. */
    int queued = job->io_thread >= 0
                     ? workers_submit_handoff(g_core.pool, &rsa_owner,
                                              g_core.sc->handshake_queue, job_work_io,
                                              job_done_io, job)
                     : workers_submit_bounded(g_core.pool, &rsa_owner,
                                              g_core.sc->handshake_queue, job_work, job_done,
                                              job);
    if (queued == WORKERS_FULL)
        goto reject_overload;
    if (queued != 0)
        goto reject_internal;
    s->key_job = job;
    s->key_job_drop = job_drop;
    /* Input stays on: with reading paused, lws does not notice the peer
     * closing, and a flood of key_exchanges from connections that close at
     * once would all be decrypted. A command pipelined behind key_exchange
     * waits in the session's input queue, which pauses reading. */
    session_set_key_pending(s);
    envelope_in_clear(&in);
    return;

reject:
    server_metrics_handshake("failed");
    session_io_out_error(s, in.nonce, in.action, SM_ERR_MALFORMED, why, NULL);
    session_io_out_close(s, 1008, "bad key_exchange");
    goto fail;
reject_overload: {
    /* More RSA work waits than the workers clear in a few seconds: the
     * client is told to come back rather than wait in a queue that only
     * grows (docs/PROTOCOL.md, implementation decisions). */
    atomic_fetch_add(&rsa_refused, 1);
    server_metrics_handshake("refused");
    json_t *extra = json_pack("{s:i}", "retry_after", HANDSHAKE_RETRY_AFTER);
    session_io_out_error(s, in.nonce, in.action, SM_ERR_RATE_LIMITED,
                        "server busy; try again later", extra);
    json_decref(extra);
    session_io_out_close(s, 1008, "handshake queue full");
    goto fail;
}
reject_internal:
    server_metrics_handshake("failed");
    session_io_out_error(s, in.nonce, in.action, SM_ERR_INTERNAL, "internal server error", NULL);
    session_io_out_close(s, 1011, "internal error");
fail:
    if (job)
        job_free(job);
    envelope_in_clear(&in);
}

void handshake_drain(void)
{
    if (g_core.pool)
        workers_drain_owner(g_core.pool, &rsa_owner);
}

void handshake_log_stats(void)
{
    LOG_INFO("rsa jobs: %lu run, %lu dropped, %lu refused (queue full)",
             atomic_load(&rsa_run), atomic_load(&rsa_dropped), atomic_load(&rsa_refused));
}
