/* Users, setup, phases and the shared report (see run.h). */
#include "run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000.0

double per_s(uint64_t x, double s)
{
    return s > 0 ? (double)x / s : 0.0;
}

/* ---- loop callbacks ------------------------------------------------------ */

static void setup_done(run *r, user *u)
{
    u->stage = STAGE_READY;
    r->setup_inflight--;
    r->setup_ready++;
    if (r->hooks.user_ready)
        r->hooks.user_ready(r, u);
}

static void setup_fail(run *r, user *u, const char *what, int code)
{
    if (u->stage == STAGE_GONE)
        return;   /* a failed send already ended the connection: counted there */
    if (r->setup_failed == 0)
        snprintf(r->setup_error, sizeof r->setup_error, "user %s: %s%s%d", u->name, what,
                 code >= 0 ? ": error " : "", code >= 0 ? code : 0);
    r->setup_failed++;
    r->setup_inflight--;
    u->stage = STAGE_GONE;
    bench_conn *c = u->conn;
    u->conn = NULL;
    if (c) {
        conn_set_user(c, NULL);
        conn_close(c);
    }
}

static int send_auth(run *r, user *u, const char *action)
{
    char payload[256];
    int n = snprintf(payload, sizeof payload, "{\"username\":\"%s\",\"password\":\"%s\"}",
                     u->name, r->o->password);
    if (n < 0 || (size_t)n >= sizeof payload)
        return -1;
    return conn_send(u->conn, action, payload, (size_t)n, &u->wait_nonce);
}

static int send_join(run *r, user *u)
{
    char payload[96];
    int n = snprintf(payload, sizeof payload, "{\"room_name\":\"%sr%u\"}", r->o->user_prefix,
                     u->room);
    if (n < 0 || (size_t)n >= sizeof payload)
        return -1;
    return conn_send(u->conn, "join_room", payload, (size_t)n, &u->wait_nonce);
}

static int error_code(const bench_msg *m)
{
    json_t *code = m->payload ? json_object_get(m->payload, "code") : NULL;
    return json_is_integer(code) ? (int)json_integer_value(code) : -1;
}

static void setup_reply(run *r, user *u, const bench_msg *m)
{
    int is_error = strcmp(m->type, "error") == 0;
    switch (u->stage) {
    case STAGE_REGISTER:
        if (is_error && error_code(m) == 1010) {   /* exists: a fixed --user-prefix */
            u->stage = STAGE_LOGIN;
            if (send_auth(r, u, "login") != 0)
                setup_fail(r, u, "cannot send login", -1);
            return;
        }
        if (is_error || strcmp(m->action, "registration_success") != 0) {
            setup_fail(r, u, "register failed", error_code(m));
            return;
        }
        break;
    case STAGE_LOGIN:
        if (is_error || strcmp(m->action, "login_success") != 0) {
            setup_fail(r, u, "login failed", error_code(m));
            return;
        }
        break;
    case STAGE_JOIN:
        if (is_error || strcmp(m->action, "join_room") != 0) {
            setup_fail(r, u, "join_room failed", error_code(m));
            return;
        }
        setup_done(r, u);
        return;
    default:
        return;
    }
    if (u->join) {
        u->stage = STAGE_JOIN;
        if (send_join(r, u) != 0)
            setup_fail(r, u, "cannot send join_room", -1);
        return;
    }
    setup_done(r, u);
}

static void on_ready(bench_conn *c, void *arg)
{
    run *r = arg;
    user *u = conn_user(c);
    if (u && u->stage == STAGE_CONNECTING) {
        u->stage = STAGE_REGISTER;
        if (send_auth(r, u, "register") != 0)
            setup_fail(r, u, "cannot send register", -1);
        return;
    }
    if (r->hooks.conn_ready)
        r->hooks.conn_ready(r, c);
}

static void on_message(bench_conn *c, const bench_msg *m, void *arg)
{
    run *r = arg;
    user *u = conn_user(c);
    if (!u)
        return;
    if (strcmp(m->type, "event") == 0 && strcmp(m->action, "PING") == 0) {
        /* heartbeat: echo the timestamp, or the server closes us */
        json_t *pong = json_pack("{s:O?}", "timestamp",
                                 m->payload ? json_object_get(m->payload, "timestamp") : NULL);
        if (pong)
            (void)conn_send_json(c, "PONG", pong, NULL);
        json_decref(pong);
        return;
    }
    if (u->stage == STAGE_READY) {
        if (r->hooks.message)
            r->hooks.message(r, u, m);
        return;
    }
    /* Setup: only the reply to the pending command matters; room events
     * caused by other users' joins are dropped (after the envelope checks). */
    if (m->reply_to && m->reply_nonce == u->wait_nonce
        && (u->stage == STAGE_REGISTER || u->stage == STAGE_LOGIN || u->stage == STAGE_JOIN))
        setup_reply(r, u, m);
}

static void on_ended(bench_conn *c, bench_end why, void *arg)
{
    run *r = arg;
    user *u = conn_user(c);
    if (!u || u->conn != c)
        return;
    u->conn = NULL;
    switch (u->stage) {
    case STAGE_CONNECTING:
    case STAGE_REGISTER:
    case STAGE_LOGIN:
    case STAGE_JOIN:
        if (r->setup_failed == 0)
            snprintf(r->setup_error, sizeof r->setup_error, "user %s: connection ended (%s)",
                     u->name, bench_end_name(why));
        r->setup_failed++;
        r->setup_inflight--;
        u->stage = STAGE_GONE;
        return;
    case STAGE_READY:
        u->stage = STAGE_GONE;
        break;
    default:
        break;
    }
    if (r->hooks.ended)
        r->hooks.ended(r, u, why);
}

/* ---- progress -------------------------------------------------------------- */

static uint64_t error_total(const run *r)
{
    const bench_counters *k = loop_counters(r->loop);
    uint64_t n = k->close_timeouts - r->teardown_timeouts + r->cmd_errors + r->unexpected;
    for (int i = 1; i < END_COUNT; i++)
        n += k->ended[i];
    return n;
}

static void progress(run *r, uint64_t now)
{
    if (r->o->quiet || now < r->next_progress_ns)
        return;
    double dt = (double)(now - r->last_progress_ns) / NS;
    char part[200] = "";
    if (r->in_setup)
        snprintf(part, sizeof part, "ready %u/%u", r->setup_ready, r->n_users);
    else if (r->hooks.progress)
        r->hooks.progress(r, part, sizeof part, dt);
    fprintf(stderr, "[%6.1fs] %-8s conns %5zu | %s | errors %" PRIu64 "\n",
            (double)(now - r->t0_ns) / NS, r->phase, loop_live(r->loop) + r->live_elsewhere, part,
            error_total(r) + r->errors_elsewhere);
    r->done_shown = r->all_done;
    r->deliveries_shown = r->all_deliveries;
    r->last_progress_ns = now;
    r->next_progress_ns += 1000000000u;
    if (r->next_progress_ns <= now)
        r->next_progress_ns = now + 1000000000u;
}

static void setup_start(run *r)
{
    while (r->setup_inflight < r->o->setup_concurrency && r->next_setup < r->n_users
           && loop_room(r->loop) > 0) {
        user *u = &r->users[r->next_setup++];
        if (u->stage != STAGE_IDLE || u->conn)
            continue;
        r->setup_inflight++;
        u->stage = STAGE_CONNECTING;
        if (loop_connect(r->loop, u, &u->conn) != 0) {
            u->conn = NULL;
            setup_fail(r, u, "cannot connect", -1);
        }
    }
}

static int tick(void *arg, uint64_t now)
{
    run *r = arg;
    int stop = 0;
    if (r->in_setup) {
        setup_start(r);
        stop = r->setup_failed > 0 || r->setup_ready == r->n_users
               || (r->next_setup == r->n_users && r->setup_inflight == 0);
    } else if (r->hooks.tick) {
        stop = r->hooks.tick(r, now);
    }
    if (!stop && r->until)
        stop = r->until(r);
    progress(r, now);
    return stop;
}

/* ---- public ---------------------------------------------------------------- */

int run_init(run *r, const bench_opts *o, const run_hooks *h, void *scenario, unsigned n_users,
             unsigned window)
{
    memset(r, 0, sizeof *r);
    r->o = o;
    r->hooks = *h;
    r->scenario = scenario;
    r->window = window ? window : 1;
    r->tick_ms = 1;
    r->phase = "start";
    r->t0_ns = r->last_progress_ns = bench_now_ns();
    r->next_progress_ns = r->t0_ns + 1000000000u;
    static const bench_handlers handlers = {on_ready, on_message, on_ended};
    r->error_codes = json_object();
    r->users = calloc(n_users ? n_users : 1, sizeof *r->users);
    if (!r->error_codes || !r->users || loop_new(o, &handlers, r, &r->loop) != 0) {
        run_free(r);
        return -1;
    }
    r->n_users = n_users;
    for (unsigned i = 0; i < n_users; i++) {
        user *u = &r->users[i];
        u->idx = i;
        int n = snprintf(u->name, sizeof u->name, "%s%u", o->user_prefix, i);
        if (n < 0 || (size_t)n >= sizeof u->name) {
            run_free(r);
            return -1;
        }
    }
    return 0;
}

void run_free(run *r)
{
    if (r->users)
        for (unsigned i = 0; i < r->n_users; i++)
            free(r->users[i].pend);
    free(r->users);
    loop_free(r->loop);
    json_decref(r->error_codes);
    memset(r, 0, sizeof *r);
}

int run_sender(run *r, user *u)
{
    if (u->pend)
        return 0;
    u->pend = calloc(r->window, sizeof *u->pend);
    return u->pend ? 0 : -1;
}

#define QUIET_NS 300000000u
#define SETTLE_MAX_S 60.0

static int quiet(run *r)
{
    uint64_t now = bench_now_ns();
    uint64_t frames = loop_counters(r->loop)->frames_in;
    if (frames != r->quiet_frames || r->quiet_since_ns == 0) {
        r->quiet_frames = frames;
        r->quiet_since_ns = now;
        return 0;
    }
    return now - r->quiet_since_ns >= QUIET_NS;
}

int run_setup(run *r, json_t *report)
{
    uint64_t start = bench_now_ns();
    r->in_setup = 1;
    r->phase = "setup";
    r->setup_failed = r->setup_ready = 0;
    r->next_setup = 0;
    unsigned want = 0;
    for (unsigned i = 0; i < r->n_users; i++)
        want += r->users[i].stage == STAGE_IDLE && !r->users[i].conn;
    uint64_t deadline = start + (uint64_t)(r->o->setup_timeout_s * NS);
    int rc = loop_run(r->loop, deadline, 10, tick, r);
    r->in_setup = 0;
    double secs = (double)(bench_now_ns() - start) / NS;
    int ok = rc == 0 && r->setup_failed == 0 && r->setup_ready == want;
    double settle = 0;
    if (ok) {
        r->quiet_since_ns = 0;
        settle = run_phase(r, "settle", SETTLE_MAX_S, 0, quiet);
    }
    json_object_set_new(report, "setup",
                        json_pack("{s:f, s:f, s:i, s:i}", "seconds", secs, "settle_seconds",
                                  settle, "users", (int)want, "ready", (int)r->setup_ready));
    if (ok)
        return 0;
    char why[300];
    if (r->setup_failed)
        snprintf(why, sizeof why, "setup failed (%u of %u users): %s", r->setup_failed, want,
                 r->setup_error);
    else if (bench_interrupted)
        snprintf(why, sizeof why, "setup interrupted");
    else
        snprintf(why, sizeof why, "setup timed out after %.0f s: %u of %u users ready",
                 r->o->setup_timeout_s, r->setup_ready, want);
    json_object_set_new(report, "error", json_string(why));
    return -1;
}

double run_phase(run *r, const char *name, double seconds, int measuring, int (*until)(run *))
{
    uint64_t start = bench_now_ns();
    r->phase = name;
    r->measuring = measuring;
    r->until = until;
    if (seconds > 0)
        (void)loop_run(r->loop, start + (uint64_t)(seconds * NS), r->tick_ms, tick, r);
    r->measuring = 0;
    r->until = NULL;
    return (double)(bench_now_ns() - start) / NS;
}

int user_send(run *r, user *u, const char *action, const char *payload, size_t len,
              uint64_t now)
{
    uint64_t nonce = 0;
    if (!u->conn || u->inflight >= r->window)
        return -1;
    if (conn_send(u->conn, action, payload, len, &nonce) != 0)
        return -1;
    if (u->pend)
        u->pend[u->inflight] = (pending){nonce, now};
    u->inflight++;
    u->sent++;
    return 0;
}

int user_take_reply(user *u, uint64_t reply_nonce, uint64_t *sent_ns)
{
    if (!u->pend || reply_nonce == 0)
        return 0;
    for (unsigned i = 0; i < u->inflight; i++)
        if (u->pend[i].nonce == reply_nonce) {
            *sent_ns = u->pend[i].sent_ns;
            u->pend[i] = u->pend[u->inflight - 1];
            u->inflight--;
            return 1;
        }
    return 0;
}

int run_count_error(run *r, const bench_msg *m)
{
    int code = error_code(m);
    char key[16];
    snprintf(key, sizeof key, "%d", code);
    json_t *v = json_object_get(r->error_codes, key);
    json_object_set_new(r->error_codes, key,
                        json_integer(v ? json_integer_value(v) + 1 : 1));
    return code;
}

static int none_live(run *r)
{
    return loop_live(r->loop) == 0;
}

void run_close_all(run *r, double seconds)
{
    uint64_t before = loop_counters(r->loop)->close_timeouts;
    for (unsigned i = 0; i < r->n_users; i++) {
        user *u = &r->users[i];
        if (u->conn) {
            bench_conn *c = u->conn;
            u->conn = NULL;
            u->stage = STAGE_GONE;
            conn_set_user(c, NULL);
            conn_close(c);
        }
    }
    r->teardown_s += run_phase(r, "close", seconds, 0, none_live);
    r->teardown_timeouts += loop_counters(r->loop)->close_timeouts - before;
    r->teardown_unclosed += loop_live(r->loop);
}

size_t content_make(const bench_opts *o, uint64_t now, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%" PRIu64, now);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    size_t len = (size_t)n;
    size_t want = o->content_bytes < cap ? o->content_bytes : cap - 1;
    if (want > len + 1) {
        buf[len++] = ' ';
        memset(buf + len, 'x', want - len);
        len = want;
    }
    buf[len] = '\0';
    return len;
}

/* utime + stime of a process, in clock ticks. */
static int proc_ticks(long pid, uint64_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return stat_text_ticks(buf, out);
}

void cpu_take(const run *r, cpu_mark *m)
{
    struct timespec ts;
    memset(m, 0, sizeof *m);
    m->wall_ns = bench_now_ns();
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0)
        m->bench_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    m->has_server = r->o->server_pid > 0 && proc_ticks(r->o->server_pid, &m->server_ticks) == 0;
    m->has_threads = m->has_server && threads_take(r->o->server_pid, &m->threads) == 0;
}

json_t *cpu_json(const cpu_mark *a, const cpu_mark *b)
{
    double wall = (double)(b->wall_ns - a->wall_ns);
    json_t *o = json_object();
    if (!o || wall <= 0)
        return o;
    /* 100 = one core busy for the whole interval. */
    double bench = (double)(b->bench_ns - a->bench_ns);
    json_object_set_new(o, "bench_percent", json_real(100.0 * bench / wall));
    if (a->has_server && b->has_server) {
        long hz = sysconf(_SC_CLK_TCK);
        double secs = (double)(b->server_ticks - a->server_ticks) / (double)(hz > 0 ? hz : 100);
        json_object_set_new(o, "server_percent", json_real(100.0 * secs * NS / wall));
    }
    if (a->has_threads && b->has_threads)
        json_object_set_new(o, "server_threads_s", threads_json(&a->threads, &b->threads));
    return o;
}

void run_report(run *r, json_t *report)
{
    const bench_counters *k = loop_counters(r->loop);
    json_t *e = json_object();
    for (int i = 1; i < END_COUNT; i++)
        json_object_set_new(e, bench_end_name((bench_end)i), json_integer((json_int_t)k->ended[i]));
    json_object_set_new(e, "close_timeouts",
                        json_integer((json_int_t)(k->close_timeouts - r->teardown_timeouts)));
    json_object_set_new(e, "command_errors", json_integer((json_int_t)r->cmd_errors));
    json_object_set(e, "error_codes", r->error_codes);
    json_object_set_new(e, "unexpected_replies", json_integer((json_int_t)r->unexpected));
    json_object_set_new(e, "total", json_integer((json_int_t)error_total(r)));
    json_object_set_new(report, "errors", e);
    json_object_set_new(
        report, "verification",
        json_pack("{s:i, s:I, s:I, s:s}", "verify_one_in", (int)r->o->verify_one_in,
                  "deliveries_verified", (json_int_t)k->verified, "deliveries_unverified",
                  (json_int_t)k->unverified, "unverified_means",
                  r->o->verify_one_in > 1
                      ? "recognised by type, action and nonce (a scan of the envelope text), "
                        "nonce checked and advanced; JSON parse, HMAC, base64 decoding, AES-GCM "
                        "decryption and payload parse skipped; no latency sample"
                      : "none: every message opened with envelope_open (HMAC, nonce, AES-GCM)"));
    json_object_set_new(report, "teardown",
                        json_pack("{s:f, s:I, s:I}", "seconds", r->teardown_s, "close_timeouts",
                                  (json_int_t)r->teardown_timeouts, "unclosed",
                                  (json_int_t)r->teardown_unclosed));
    json_t *per_target = json_array();
    for (unsigned i = 0; per_target && i < r->o->n_targets; i++)
        json_array_append_new(per_target, json_integer((json_int_t)k->per_target[i]));
    json_object_set_new(report, "traffic",
                        json_pack("{s:I, s:o*, s:I, s:I, s:I}", "connections_opened",
                                  (json_int_t)k->connects, "connections_per_target", per_target,
                                  "frames_in", (json_int_t)k->frames_in, "bytes_in",
                                  (json_int_t)k->bytes_in, "bytes_out", (json_int_t)k->bytes_out));
}
