/* The five scenarios, one function each (see bench.h and docs/BENCHMARKS.md).
 * Every one runs: setup (not measured), warm-up (load, not counted),
 * measure (counted), then stops by itself; the loop never runs past the
 * phase deadlines. */
#include "run.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS 1e9
#define DRAIN_S 5.0
#define CLOSE_S 3.0
#define PAYLOAD_MAX (BENCH_MAX_CONTENT + 160)

static int is_reply(const bench_msg *m)
{
    return m->reply_to != NULL;
}

static int is_error(const bench_msg *m)
{
    return strcmp(m->type, "error") == 0;
}

static void rate_text(char *buf, size_t len, double v)
{
    if (v >= 10000)
        snprintf(buf, len, "%.1fk", v / 1000);
    else
        snprintf(buf, len, "%.0f", v);
}

/* ---- pacing: a total rate spread over senders, or windows kept full ------ */

/* Sends one message for u if it may: 0 sent, -1 not now. */
typedef int (*try_send_fn)(run *r, user *u, uint64_t now);

/* The senders of a scenario and how fast they send. */
typedef struct pacer {
    unsigned *senders;      /* user indexes */
    unsigned n_senders;
    try_send_fn send;
    int sending;            /* set during warm-up and measurement */
    double rate;            /* per second; 0 = as fast as windows allow */
    double credit;
    double shortfall;       /* messages due that no sender could take */
    uint64_t last_ns;
    unsigned rr;
} pacer;

static void pace(run *r, pacer *p, uint64_t now)
{
    const unsigned *senders = p->senders;
    unsigned n = p->n_senders;
    try_send_fn send = p->send;
    if (n == 0 || !p->sending)
        return;
    if (p->rate <= 0) {
        for (unsigned i = 0; i < n; i++)
            while (send(r, &r->users[senders[i]], now) == 0) {
            }
        return;
    }
    if (p->last_ns == 0)
        p->last_ns = now;
    p->credit += p->rate * (double)(now - p->last_ns) / NS;
    p->last_ns = now;
    /* At most 50 ms of backlog: a stall is reported, not made up for
     * with a burst that would distort the latency after it. */
    double cap = p->rate * 0.05 > 1 ? p->rate * 0.05 : 1;
    if (p->credit > cap) {
        if (r->measuring)
            p->shortfall += p->credit - cap;
        p->credit = cap;
    }
    while (p->credit >= 1) {
        int sent = 0;
        for (unsigned k = 0; k < n && !sent; k++)
            sent = send(r, &r->users[senders[p->rr++ % n]], now) == 0;
        if (!sent)
            break;
        p->credit -= 1;
    }
}

static void pacer_start(pacer *p, double rate)
{
    p->rate = rate;
    p->credit = p->shortfall = 0;
    p->last_ns = 0;
    p->rr = 0;
    p->sending = 1;
}

/* After a reply frees a window slot: without a rate, refill it at once. */
static void pacer_refill(run *r, pacer *p, user *u, uint64_t now)
{
    if (p->rate <= 0)
        while (p->send(r, u, now) == 0) {
        }
}

static void add_cpu(json_t *results, const char *key, const cpu_mark *a, const cpu_mark *b)
{
    json_object_set_new(results, key, cpu_json(a, b));
}

/* ---- (a) handshakes ------------------------------------------------------ */

typedef struct hs_state {
    bench_hist lat;
    unsigned idle;          /* slots waiting for a free descriptor */
    int stopping;
} hs_state;

static void hs_start(run *r, user *u)
{
    hs_state *s = r->scenario;
    if (s->stopping || loop_room(r->loop) == 0 || loop_connect(r->loop, u, &u->conn) != 0) {
        u->conn = NULL;
        s->idle++;
    }
}

static void hs_ready(run *r, bench_conn *c)
{
    hs_state *s = r->scenario;
    user *u = conn_user(c);
    count_done(r);
    if (r->measuring)
        hist_add(&s->lat, bench_now_ns() - conn_started_ns(c));
    /* The slot starts over at once; this connection closes on its own. */
    conn_set_user(c, NULL);
    conn_close(c);
    if (u) {
        u->conn = NULL;
        hs_start(r, u);
    }
}

/* A failed slot restarts from the tick, so a refusing server is not
 * hammered in a tight loop. */
static void hs_ended(run *r, user *u, bench_end why)
{
    (void)u;
    (void)why;
    hs_state *s = r->scenario;
    s->idle++;
}

static int hs_tick(run *r, uint64_t now)
{
    (void)now;
    hs_state *s = r->scenario;
    if (s->idle == 0 || s->stopping)
        return 0;
    s->idle = 0;
    for (unsigned i = 0; i < r->n_users; i++)
        if (!r->users[i].conn)
            hs_start(r, &r->users[i]);
    return 0;
}

static void hs_progress(run *r, char *buf, size_t len, double dt)
{
    char v[32];
    rate_text(v, sizeof v, per_s(r->all_done - r->done_shown, dt));
    snprintf(buf, len, "handshakes %s/s", v);
}

int scenario_handshakes(const bench_opts *o, json_t *report)
{
    static const run_hooks hooks = {.conn_ready = hs_ready, .ended = hs_ended,
                                    .tick = hs_tick, .progress = hs_progress};
    hs_state *s = calloc(1, sizeof *s);
    run r;
    if (!s || run_init(&r, o, &hooks, s, o->connections, 1) != 0) {
        free(s);
        json_object_set_new(report, "error", json_string("out of memory"));
        return -1;
    }
    for (unsigned i = 0; i < r.n_users; i++)
        hs_start(&r, &r.users[i]);
    (void)run_phase(&r, "warmup", o->warmup_s, 0, NULL);
    cpu_mark a, b;
    cpu_take(&r, &a);
    double secs = run_phase(&r, "measure", o->duration_s, 1, NULL);
    cpu_take(&r, &b);
    s->stopping = 1;
    run_close_all(&r, CLOSE_S);
    json_t *res = json_pack("{s:i, s:I, s:f, s:f}", "concurrency", (int)o->connections,
                            "handshakes", (json_int_t)r.done, "handshakes_per_s",
                            per_s(r.done, secs), "measured_seconds", secs);
    json_object_set_new(res, "latency_ms", hist_json_ms(&s->lat));
    add_cpu(res, "cpu", &a, &b);
    json_object_set_new(report, "results", res);
    run_report(&r, report);
    run_free(&r);
    free(s);
    return 0;
}

/* ---- (b) logins ------------------------------------------------------------ */

/* The bystander: one more logged-in user, in a room of its own, sending
 * get_users every --bystander-ms, first with nobody logging in ("alone"),
 * then during the storm. Its reply times show what a login storm costs
 * everyone else on the server. Sends follow the clock, not the replies
 * (up to BY_SLOTS in flight), so a slow reply does not hide the ones that
 * would have queued behind it. */
#define BY_SLOTS 64u

typedef struct by_phase {
    bench_hist rtt;
    uint64_t sent, replies;
    uint64_t missed;        /* sends due that were not made: all slots busy, or the tick late */
    double secs;
    cpu_mark a, b;
} by_phase;

typedef struct bystander {
    user *u;                /* NULL: no bystander */
    uint64_t period_ns, next_ns;
    by_phase *phase;        /* where samples go; NULL: not sending */
    pending slots[BY_SLOTS];
    unsigned inflight;
    by_phase alone, storm;
} bystander;

typedef struct lg_state {
    bench_hist rtt;
    int stopping;
    bystander by;
} lg_state;

static int lg_send(run *r, user *u, uint64_t now)
{
    char payload[256];
    int n = snprintf(payload, sizeof payload, "{\"username\":\"%s\",\"password\":\"%s\"}",
                     u->name, r->o->password);
    if (n < 0 || (size_t)n >= sizeof payload)
        return -1;
    return user_send(r, u, "login", payload, (size_t)n, now);
}

/* Counts go to the phase only while measuring, like the samples. */
static void by_send(bystander *b, uint64_t now, int measuring)
{
    by_phase *ph = b->phase;
    uint64_t nonce = 0;
    if (b->inflight >= BY_SLOTS || !b->u->conn
        || conn_send(b->u->conn, "get_users", "{}", 2, &nonce) != 0) {
        ph->missed += measuring != 0;
        return;
    }
    b->slots[b->inflight++] = (pending){nonce, now};
    ph->sent += measuring != 0;
}

static void by_tick(bystander *b, uint64_t now, int measuring)
{
    if (!b->u || !b->phase || now < b->next_ns)
        return;
    by_send(b, now, measuring);
    b->next_ns += b->period_ns;
    /* A late tick (the bench descheduled) skips the sends it missed
     * instead of bursting them: a burst would measure the queue it makes. */
    if (b->next_ns <= now) {
        uint64_t behind = (now - b->next_ns) / b->period_ns + 1;
        b->phase->missed += measuring ? behind : 0;
        b->next_ns += behind * b->period_ns;
    }
}

static void by_message(run *r, bystander *b, const bench_msg *m)
{
    if (!is_reply(m))
        return;   /* room events */
    unsigned i = 0;
    while (i < b->inflight && b->slots[i].nonce != m->reply_nonce)
        i++;
    if (i == b->inflight)
        return;
    uint64_t sent = b->slots[i].sent_ns;
    b->slots[i] = b->slots[--b->inflight];
    if (is_error(m)) {
        run_count_error(r, m);
        if (r->measuring)
            r->cmd_errors++;
    } else if (strcmp(m->action, "get_users") != 0) {
        r->unexpected++;
    } else if (r->measuring && b->phase) {
        b->phase->replies++;
        hist_add(&b->phase->rtt, m->recv_ns - sent);
    }
}

static void lg_message(run *r, user *u, const bench_msg *m)
{
    lg_state *s = r->scenario;
    uint64_t sent = 0;
    if (u == s->by.u) {
        by_message(r, &s->by, m);
        return;
    }
    if (!is_reply(m) || !user_take_reply(u, m->reply_nonce, &sent))
        return;
    if (is_error(m)) {
        run_count_error(r, m);
        if (r->measuring)
            r->cmd_errors++;
    } else if (strcmp(m->action, "login_success") != 0) {
        r->unexpected++;
    } else {
        count_done(r);
        if (r->measuring)
            hist_add(&s->rtt, m->recv_ns - sent);
    }
    if (!s->stopping)
        (void)lg_send(r, u, m->recv_ns);
}

static int lg_tick(run *r, uint64_t now)
{
    lg_state *s = r->scenario;
    by_tick(&s->by, now, r->measuring);
    return 0;
}

static void lg_progress(run *r, char *buf, size_t len, double dt)
{
    lg_state *s = r->scenario;
    char v[32];
    rate_text(v, sizeof v, per_s(r->all_done - r->done_shown, dt));
    if (s->by.phase)
        snprintf(buf, len, "logins %s/s bystander p99 %.2f ms", v,
                 (double)hist_percentile(&s->by.phase->rtt, 99) / 1e6);
    else
        snprintf(buf, len, "logins %s/s", v);
}

static int nothing_in_flight(run *r)
{
    for (unsigned i = 0; i < r->n_users; i++)
        if (r->users[i].conn && r->users[i].inflight)
            return 0;
    return 1;
}

static int lg_nothing_in_flight(run *r)
{
    lg_state *s = r->scenario;
    return nothing_in_flight(r) && (!s->by.u || !s->by.u->conn || s->by.inflight == 0);
}

static json_t *by_phase_json(const by_phase *ph)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:f}", "sent", (json_int_t)ph->sent, "replies",
                          (json_int_t)ph->replies, "missed_sends", (json_int_t)ph->missed,
                          "measured_seconds", ph->secs);
    json_object_set_new(o, "latency_ms", hist_json_ms(&ph->rtt));
    json_object_set_new(o, "cpu", cpu_json(&ph->a, &ph->b));
    return o;
}

static json_t *by_json(const bystander *b, const bench_opts *opts)
{
    uint64_t alone = hist_percentile(&b->alone.rtt, 99);
    uint64_t storm = hist_percentile(&b->storm.rtt, 99);
    json_t *o = json_pack("{s:s, s:f, s:i, s:f}", "command", "get_users", "interval_ms",
                          opts->bystander_ms, "rounds", (int)opts->bystander_rounds,
                          "p99_ratio", alone ? (double)storm / (double)alone : 0.0);
    json_object_set_new(o, "alone", by_phase_json(&b->alone));
    json_object_set_new(o, "storm", by_phase_json(&b->storm));
    return o;
}

/* One measured stretch of a condition: its samples, time and CPU add up
 * over the rounds. */
static void by_segment(run *r, bystander *b, by_phase *ph, const char *name, double secs)
{
    cpu_mark a, z;
    b->phase = ph;
    cpu_take(r, &a);
    ph->secs += run_phase(r, name, secs, 1, NULL);
    cpu_take(r, &z);
    ph->b.wall_ns += z.wall_ns - a.wall_ns;
    ph->b.bench_ns += z.bench_ns - a.bench_ns;
    ph->b.server_ticks += z.server_ticks - a.server_ticks;
    ph->b.has_server = ph->a.has_server = a.has_server && z.has_server;
}

static void lg_storm_start(run *r, unsigned storm)
{
    lg_state *s = r->scenario;
    uint64_t now = bench_now_ns();
    s->stopping = 0;
    for (unsigned i = 0; i < storm; i++)
        (void)lg_send(r, &r->users[i], now);
}

/* With the bystander: `rounds` times, duration/rounds without logins, then
 * (after a warm-up) duration/rounds of storm, then the storm's logins in
 * flight drained. Alternating short stretches lets both conditions see
 * the same background load on a shared machine. */
static void lg_rounds(run *r, lg_state *s, unsigned storm)
{
    const bench_opts *o = r->o;
    double seg = o->duration_s / o->bystander_rounds;
    s->by.phase = &s->by.alone;
    s->by.next_ns = bench_now_ns();
    (void)run_phase(r, "warmup", o->warmup_s, 0, NULL);
    for (unsigned k = 0; k < o->bystander_rounds && !bench_interrupted; k++) {
        by_segment(r, &s->by, &s->by.alone, "alone", seg);
        lg_storm_start(r, storm);
        s->by.phase = &s->by.storm;
        (void)run_phase(r, "warmup", o->warmup_s, 0, NULL);
        by_segment(r, &s->by, &s->by.storm, "storm", seg);
        s->stopping = 1;
        (void)run_phase(r, "drain", DRAIN_S, 0, nothing_in_flight);
        s->by.phase = &s->by.alone;
    }
}

int scenario_logins(const bench_opts *o, json_t *report)
{
    static const run_hooks hooks = {.message = lg_message, .tick = lg_tick,
                                    .progress = lg_progress};
    unsigned storm = o->connections;
    int probe = o->bystander_ms > 0;
    lg_state *s = calloc(1, sizeof *s);
    run r;
    if (!s || run_init(&r, o, &hooks, s, storm + (probe ? 1u : 0u), 1) != 0) {
        free(s);
        json_object_set_new(report, "error", json_string("out of memory"));
        return -1;
    }
    int rc = -1;
    for (unsigned i = 0; i < storm; i++)
        if (run_sender(&r, &r.users[i]) != 0)
            goto out;
    if (probe) {
        /* get_users needs a room; bench.conf puts nobody in one. */
        s->by.u = &r.users[storm];
        s->by.u->join = 1;
        s->by.u->room = 0;
        s->by.period_ns = (uint64_t)(o->bystander_ms * 1e6);
    }
    if (run_setup(&r, report) != 0)
        goto out;
    double secs;
    cpu_mark a, b;
    if (probe) {
        lg_rounds(&r, s, storm);
        secs = s->by.storm.secs;
        a = s->by.storm.a;
        b = s->by.storm.b;
    } else {
        lg_storm_start(&r, storm);
        (void)run_phase(&r, "warmup", o->warmup_s, 0, NULL);
        cpu_take(&r, &a);
        secs = run_phase(&r, "measure", o->duration_s, 1, NULL);
        cpu_take(&r, &b);
    }
    s->by.phase = NULL;
    s->stopping = 1;
    (void)run_phase(&r, "drain", DRAIN_S, 0, lg_nothing_in_flight);
    json_t *res = json_pack("{s:i, s:I, s:f, s:f}", "concurrency", (int)o->connections, "logins",
                            (json_int_t)r.done, "logins_per_s", per_s(r.done, secs),
                            "measured_seconds", secs);
    json_object_set_new(res, "latency_ms", hist_json_ms(&s->rtt));
    add_cpu(res, "cpu", &a, &b);
    if (probe)
        json_object_set_new(res, "bystander", by_json(&s->by, o));
    json_object_set_new(report, "results", res);
    rc = 0;
out:
    run_close_all(&r, CLOSE_S);
    run_report(&r, report);
    run_free(&r);
    free(s);
    return rc;
}

/* ---- (c) fanout -------------------------------------------------------------- */

/* user.role in fanout: a sender, or a member another thread reads. */
enum { FO_SENDER = 1, FO_ELSEWHERE };

typedef struct fo_state {
    uint64_t *room_sent;    /* messages accepted for sending, whole run */
    /* deliveries received, whole run, by every reading thread */
    _Atomic uint64_t *room_recv;
    bench_hist lat, rtt;
    bench_hist arrival;     /* latency to the kernel's receive time (bench_msg) */
    uint64_t sent_measured;
    pacer pace;
    /* --readers N: N - 1 threads besides this one read members'
     * deliveries, each on a loop of its own (fo_readers_start) */
    struct fo_reader *readers;
    unsigned n_readers;
    atomic_int measuring;   /* run.measuring, for those threads */
    uint64_t deliveries_shown;
    char content[BENCH_MAX_CONTENT + 32];
    char payload[PAYLOAD_MAX];
} fo_state;

/* A thread reading members' deliveries (--readers; see below). */
typedef struct fo_reader {
    fo_state *s;
    bench_loop *loop;
    pthread_t tid;
    int started;
    atomic_int stop;
    bench_hist lat, arrival;            /* this thread's, read after the join */
    uint64_t deliveries;                /* measured, read after the join */
    _Atomic uint64_t all_deliveries;    /* for the progress line */
    atomic_size_t live;
    _Atomic uint64_t ended;
} fo_reader;

static uint64_t fo_in_flight(const run *r, const fo_state *s, unsigned room)
{
    uint64_t expect = s->room_sent[room] * r->o->members;
    uint64_t got = atomic_load_explicit(&s->room_recv[room], memory_order_relaxed);
    return expect > got ? expect - got : 0;
}

/* A measured delivery's latency samples (verified deliveries only). */
static void fo_sample(bench_hist *lat, bench_hist *arrival, const bench_msg *m)
{
    uint64_t t = m->content_ns;
    if (t && t <= m->recv_ns)
        hist_add(lat, m->recv_ns - t);
    if (t && m->arrival_ns && t <= m->arrival_ns)
        hist_add(arrival, m->arrival_ns - t);
}

static int is_delivery(const bench_msg *m)
{
    return strcmp(m->type, "event") == 0 && strcmp(m->action, "public_message") == 0;
}

static int fo_try_send(run *r, user *u, uint64_t now)
{
    fo_state *s = r->scenario;
    if (!s->pace.sending || !u->conn || u->inflight >= r->window
        || fo_in_flight(r, s, u->room) >= (uint64_t)r->o->room_window * r->o->members)
        return -1;
    size_t clen = content_make(r->o, now, s->content, sizeof s->content);
    int n = snprintf(s->payload, sizeof s->payload, "{\"content\":\"%s\"}", s->content);
    if (clen == 0 || n < 0 || (size_t)n >= sizeof s->payload)
        return -1;
    if (user_send(r, u, "public_message", s->payload, (size_t)n, now) != 0)
        return -1;
    s->room_sent[u->room]++;
    if (r->measuring)
        s->sent_measured++;
    return 0;
}

static void fo_message(run *r, user *u, const bench_msg *m)
{
    fo_state *s = r->scenario;
    if (is_delivery(m)) {
        atomic_fetch_add_explicit(&s->room_recv[u->room], 1, memory_order_relaxed);
        count_delivery(r);
        if (r->measuring)
            fo_sample(&s->lat, &s->arrival, m);
        return;
    }
    uint64_t sent = 0;
    if (!is_reply(m) || !user_take_reply(u, m->reply_nonce, &sent))
        return;   /* user_joined and the like */
    if (is_error(m)) {
        run_count_error(r, m);
        if (r->measuring)
            r->cmd_errors++;
        s->room_sent[u->room]--;   /* no deliveries will come for it */
    } else if (strcmp(m->action, "public_message") != 0) {
        r->unexpected++;
    } else {
        count_done(r);
        if (r->measuring)
            hist_add(&s->rtt, m->recv_ns - sent);
    }
    pacer_refill(r, &s->pace, u, m->recv_ns);
}

static int fo_tick(run *r, uint64_t now)
{
    fo_state *s = r->scenario;
    pace(r, &s->pace, now);
    size_t live = 0;
    uint64_t ended = 0;
    for (unsigned i = 0; i < s->n_readers; i++) {
        live += atomic_load_explicit(&s->readers[i].live, memory_order_relaxed);
        ended += atomic_load_explicit(&s->readers[i].ended, memory_order_relaxed);
    }
    r->live_elsewhere = live;
    r->errors_elsewhere = ended;
    return 0;
}

static uint64_t fo_all_deliveries(const run *r, const fo_state *s);

static void fo_progress(run *r, char *buf, size_t len, double dt)
{
    fo_state *s = r->scenario;
    char d[32], m[32];
    uint64_t all = fo_all_deliveries(r, s);
    rate_text(d, sizeof d, per_s(all - s->deliveries_shown, dt));
    s->deliveries_shown = all;
    rate_text(m, sizeof m, per_s(r->all_done - r->done_shown, dt));
    snprintf(buf, len, "deliveries %s/s msgs %s/s p99 %.1f ms", d, m,
             (double)hist_percentile(&s->lat, 99) / 1e6);
}

static int fo_all_delivered(run *r)
{
    fo_state *s = r->scenario;
    for (unsigned i = 0; i < r->o->rooms; i++)
        if (fo_in_flight(r, s, i))
            return 0;
    /* Only senders have commands in flight; the members' user records
     * may belong to reading threads now. */
    for (unsigned k = 0; k < s->pace.n_senders; k++) {
        const user *u = &r->users[s->pace.senders[k]];
        if (u->conn && u->inflight)
            return 0;
    }
    return 1;
}

/* ---- fanout --readers: members read on several threads --------------------
 *
 * One thread cannot read a 1,000-member room as fast as 1,000 clients
 * with cores of their own: it takes each delivery after the ones before
 * it (BENCHMARKS (h), "the floor"). With --readers N the members other
 * than the senders are dealt over this thread and N - 1 others after
 * setup, each with a loop of its own (loop_move); the senders, the pacing
 * and the progress line stay here. What the threads share: the rooms'
 * delivery counts (atomics, for the room window and the drain), the
 * measuring flag, and their counters for the progress line; their
 * latency samples and loop counters are merged once they are joined. A
 * member's user record belongs to its thread until then. */

static uint64_t fo_all_deliveries(const run *r, const fo_state *s)
{
    uint64_t all = r->all_deliveries;
    for (unsigned i = 0; i < s->n_readers; i++)
        all += atomic_load_explicit(&s->readers[i].all_deliveries, memory_order_relaxed);
    return all;
}

static void rd_message(bench_conn *c, const bench_msg *m, void *arg)
{
    fo_reader *rd = arg;
    const user *u = conn_user(c);
    if (!u || !is_delivery(m))
        return;   /* user_joined and the like: members send no commands */
    atomic_fetch_add_explicit(&rd->s->room_recv[u->room], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rd->all_deliveries, 1, memory_order_relaxed);
    if (!atomic_load_explicit(&rd->s->measuring, memory_order_relaxed))
        return;
    rd->deliveries++;
    fo_sample(&rd->lat, &rd->arrival, m);
}

static void rd_ended(bench_conn *c, bench_end why, void *arg)
{
    fo_reader *rd = arg;
    (void)why;   /* the loop counted it; merged into the report */
    user *u = conn_user(c);
    if (u && u->conn == c) {
        u->conn = NULL;
        u->stage = STAGE_GONE;
    }
    atomic_fetch_sub_explicit(&rd->live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rd->ended, 1, memory_order_relaxed);
}

static int rd_tick(void *arg, uint64_t now)
{
    (void)now;
    fo_reader *rd = arg;
    return atomic_load(&rd->stop) != 0;
}

static void *rd_main(void *arg)
{
    fo_reader *rd = arg;
    (void)loop_run(rd->loop, UINT64_MAX, 5, rd_tick, rd);
    return NULL;
}

/* Deals the members over N threads and starts the N - 1 others. */
static int fo_readers_start(run *r, fo_state *s)
{
    static const bench_handlers handlers = {.message = rd_message, .ended = rd_ended};
    unsigned extra = r->o->readers > 1 ? r->o->readers - 1 : 0;
    if (extra == 0)
        return 0;
    s->readers = calloc(extra, sizeof *s->readers);
    if (!s->readers)
        return -1;
    s->n_readers = extra;
    for (unsigned i = 0; i < extra; i++) {
        s->readers[i].s = s;
        if (loop_new(r->o, &handlers, &s->readers[i], &s->readers[i].loop) != 0)
            return -1;
    }
    unsigned turn = 0;
    for (unsigned i = 0; i < r->n_users; i++) {
        user *u = &r->users[i];
        if (!u->conn || u->role == FO_SENDER)
            continue;
        unsigned t = turn++ % r->o->readers;
        if (t == 0)
            continue;   /* this thread's share */
        fo_reader *rd = &s->readers[t - 1];
        if (loop_move(u->conn, rd->loop) == 0) {
            u->role = FO_ELSEWHERE;
            atomic_fetch_add_explicit(&rd->live, 1, memory_order_relaxed);
        }
    }
    for (unsigned i = 0; i < extra; i++) {
        if (pthread_create(&s->readers[i].tid, NULL, rd_main, &s->readers[i]) != 0)
            return -1;
        s->readers[i].started = 1;
    }
    return 0;
}

/* Stops and joins the reading threads, takes their connections back
 * (for run_close_all) and merges what they counted. Safe after a failed
 * start. */
static void fo_readers_stop(run *r, fo_state *s, json_t *by_reader)
{
    if (by_reader)   /* measured deliveries per thread, this one first */
        json_array_append_new(by_reader, json_integer((json_int_t)r->deliveries));
    for (unsigned i = 0; i < s->n_readers; i++) {
        atomic_store(&s->readers[i].stop, 1);
        if (s->readers[i].started)
            pthread_join(s->readers[i].tid, NULL);
        s->readers[i].started = 0;
    }
    for (unsigned i = 0; s->n_readers && i < r->n_users; i++) {
        user *u = &r->users[i];
        if (u->role != FO_ELSEWHERE)
            continue;
        u->role = 0;
        if (u->conn && loop_move(u->conn, r->loop) != 0) {
            /* Not movable (it cannot be mid-close: only run_close_all
             * closes members): it goes with its loop below, unclosed. */
            u->conn = NULL;
            u->stage = STAGE_GONE;
            r->teardown_unclosed++;
        }
    }
    for (unsigned i = 0; i < s->n_readers; i++) {
        fo_reader *rd = &s->readers[i];
        if (by_reader)
            json_array_append_new(by_reader, json_integer((json_int_t)rd->deliveries));
        r->deliveries += rd->deliveries;
        r->all_deliveries += atomic_load(&rd->all_deliveries);
        hist_merge(&s->lat, &rd->lat);
        hist_merge(&s->arrival, &rd->arrival);
        if (rd->loop) {
            loop_counters_add(r->loop, rd->loop);
            loop_free(rd->loop);
        }
    }
    free(s->readers);
    s->readers = NULL;
    s->n_readers = 0;
    r->live_elsewhere = 0;
    r->errors_elsewhere = 0;
}

int scenario_fanout(const bench_opts *o, json_t *report)
{
    static const run_hooks hooks = {.message = fo_message, .tick = fo_tick,
                                    .progress = fo_progress};
    unsigned n = o->rooms * o->members;
    fo_state *s = calloc(1, sizeof *s);
    run r;
    if (!s || run_init(&r, o, &hooks, s, n, o->window) != 0) {
        free(s);
        json_object_set_new(report, "error", json_string("out of memory"));
        return -1;
    }
    int rc = -1;
    s->pace.senders = calloc(o->senders, sizeof *s->pace.senders);
    s->pace.send = fo_try_send;
    s->room_sent = calloc(o->rooms, sizeof *s->room_sent);
    s->room_recv = calloc(o->rooms, sizeof *s->room_recv);
    if (!s->pace.senders || !s->room_sent || !s->room_recv)
        goto out;
    for (unsigned i = 0; i < n; i++) {
        r.users[i].room = i / o->members;
        r.users[i].join = 1;
    }
    /* Sender k is member k / R of room k % R: spread evenly over rooms. */
    for (unsigned k = 0; k < o->senders; k++) {
        unsigned idx = (k % o->rooms) * o->members + k / o->rooms;
        s->pace.senders[s->pace.n_senders++] = idx;
        r.users[idx].role = FO_SENDER;
        if (run_sender(&r, &r.users[idx]) != 0)
            goto out;
    }
    if (run_setup(&r, report) != 0)
        goto out;
    if (fo_readers_start(&r, s) != 0) {
        json_object_set_new(report, "error", json_string("cannot start the reading threads"));
        goto out;
    }
    pacer_start(&s->pace, o->rate);
    (void)run_phase(&r, "warmup", o->warmup_s, 0, NULL);
    cpu_mark a, b;
    cpu_take(&r, &a);
    atomic_store(&s->measuring, 1);
    double secs = run_phase(&r, "measure", o->duration_s, 1, NULL);
    atomic_store(&s->measuring, 0);
    cpu_take(&r, &b);
    s->pace.sending = 0;
    (void)run_phase(&r, "drain", DRAIN_S, 0, fo_all_delivered);
    json_t *by_reader = json_array();
    fo_readers_stop(&r, s, by_reader);
    uint64_t undelivered = 0;
    for (unsigned i = 0; i < o->rooms; i++)
        undelivered += fo_in_flight(&r, s, i);
    json_t *res = json_pack(
        "{s:i, s:i, s:i, s:f, s:i, s:i, s:I, s:f, s:I, s:f, s:I, s:f, s:f}", "rooms",
        (int)o->rooms, "members", (int)o->members, "senders", (int)o->senders, "target_rate",
        o->rate, "window", (int)o->window, "content_bytes", (int)o->content_bytes,
        "messages_sent", (json_int_t)s->sent_measured, "messages_per_s",
        per_s(s->sent_measured, secs), "deliveries", (json_int_t)r.deliveries,
        "deliveries_per_s", per_s(r.deliveries, secs), "undelivered", (json_int_t)undelivered,
        "rate_shortfall", s->pace.shortfall, "measured_seconds", secs);
    json_object_set_new(res, "deliveries_by_reader", by_reader);
    json_object_set_new(res, "latency_ms", hist_json_ms(&s->lat));
    json_object_set_new(res, "arrival_latency_ms", hist_json_ms(&s->arrival));
    json_object_set_new(res, "send_rtt_ms", hist_json_ms(&s->rtt));
    add_cpu(res, "cpu", &a, &b);
    json_object_set_new(report, "results", res);
    rc = 0;
out:
    fo_readers_stop(&r, s, NULL);
    run_close_all(&r, CLOSE_S);
    run_report(&r, report);
    run_free(&r);
    free(s->pace.senders);
    free(s->room_sent);
    free(s->room_recv);
    free(s);
    return rc;
}

/* ---- (d) private ------------------------------------------------------------- */

enum { ROLE_SENDER = 1, ROLE_ONLINE, ROLE_OFFLINE };

typedef struct pm_phase {
    uint64_t messages;
    uint64_t deliveries;
    uint64_t wrong_online;  /* message_delivered.online not as expected */
    bench_hist rtt, lat;
    double secs;
    cpu_mark a, b;
} pm_phase;

typedef struct pm_state {
    unsigned first_online, first_offline;
    int offline;            /* which phase */
    pacer pace;
    pm_phase ph[2];
    char content[BENCH_MAX_CONTENT + 32];
    char payload[PAYLOAD_MAX];
} pm_state;

static int pm_try_send(run *r, user *u, uint64_t now)
{
    pm_state *s = r->scenario;
    if (!s->pace.sending || !u->conn || u->inflight >= r->window)
        return -1;
    unsigned count = s->offline ? r->o->offline : r->o->online;
    unsigned first = s->offline ? s->first_offline : s->first_online;
    const user *to = &r->users[first + (u->idx + u->next_target) % count];
    size_t clen = content_make(r->o, now, s->content, sizeof s->content);
    int n = snprintf(s->payload, sizeof s->payload,
                     "{\"recipient\":\"%s\",\"content\":\"%s\",\"encrypted\":false}", to->name,
                     s->content);
    if (clen == 0 || n < 0 || (size_t)n >= sizeof s->payload)
        return -1;
    if (user_send(r, u, "private_message", s->payload, (size_t)n, now) != 0)
        return -1;
    u->next_target++;
    return 0;
}

static void pm_message(run *r, user *u, const bench_msg *m)
{
    pm_state *s = r->scenario;
    pm_phase *ph = &s->ph[s->offline];
    if (strcmp(m->type, "event") == 0 && strcmp(m->action, "private_message") == 0) {
        count_delivery(r);
        if (!r->measuring)
            return;
        ph->deliveries++;
        uint64_t t = m->content_ns;
        if (t && t <= m->recv_ns)
            hist_add(&ph->lat, m->recv_ns - t);
        return;
    }
    uint64_t sent = 0;
    if (!is_reply(m) || !user_take_reply(u, m->reply_nonce, &sent))
        return;
    if (is_error(m)) {
        run_count_error(r, m);
        if (r->measuring)
            r->cmd_errors++;
    } else if (strcmp(m->action, "message_delivered") != 0) {
        r->unexpected++;
    } else {
        count_done(r);
        if (r->measuring) {
            ph->messages++;
            hist_add(&ph->rtt, m->recv_ns - sent);
            if (json_is_true(json_object_get(m->payload, "online")) != !s->offline)
                ph->wrong_online++;
        }
    }
    pacer_refill(r, &s->pace, u, m->recv_ns);
}

static int pm_tick(run *r, uint64_t now)
{
    pm_state *s = r->scenario;
    pace(r, &s->pace, now);
    return 0;
}

static void pm_progress(run *r, char *buf, size_t len, double dt)
{
    pm_state *s = r->scenario;
    char v[32];
    rate_text(v, sizeof v, per_s(r->all_done - r->done_shown, dt));
    snprintf(buf, len, "private (%s) %s/s", s->offline ? "offline" : "online", v);
}

static int no_closing(run *r)
{
    return loop_closing(r->loop) == 0;
}

/* One half of the measured time, to online or to offline recipients. */
static void pm_run_phase(run *r, pm_state *s, int offline, double secs)
{
    s->offline = offline;
    pacer_start(&s->pace, r->o->rate);
    (void)run_phase(r, offline ? "warmup-off" : "warmup-on", r->o->warmup_s, 0, NULL);
    cpu_take(r, &s->ph[offline].a);
    s->ph[offline].secs = run_phase(r, offline ? "offline" : "online", secs, 1, NULL);
    cpu_take(r, &s->ph[offline].b);
    s->pace.sending = 0;
    (void)run_phase(r, "drain", DRAIN_S, 0, nothing_in_flight);
}

static json_t *pm_phase_json(const pm_phase *ph, unsigned recipients, int offline)
{
    json_t *o = json_pack("{s:i, s:I, s:f, s:I, s:f, s:f}", "recipients", (int)recipients,
                          "messages", (json_int_t)ph->messages, "messages_per_s",
                          per_s(ph->messages, ph->secs), "wrong_online_flag",
                          (json_int_t)ph->wrong_online, "deliveries_per_s",
                          per_s(ph->deliveries, ph->secs), "measured_seconds", ph->secs);
    json_object_set_new(o, "rtt_ms", hist_json_ms(&ph->rtt));
    if (!offline)
        json_object_set_new(o, "delivery_latency_ms", hist_json_ms(&ph->lat));
    json_object_set_new(o, "cpu", cpu_json(&ph->a, &ph->b));
    return o;
}

int scenario_private(const bench_opts *o, json_t *report)
{
    static const run_hooks hooks = {.message = pm_message, .tick = pm_tick,
                                    .progress = pm_progress};
    unsigned n = o->senders + o->online + o->offline;
    pm_state *s = calloc(1, sizeof *s);
    run r;
    if (!s || run_init(&r, o, &hooks, s, n, o->window) != 0) {
        free(s);
        json_object_set_new(report, "error", json_string("out of memory"));
        return -1;
    }
    int rc = -1;
    s->pace.senders = calloc(o->senders, sizeof *s->pace.senders);
    s->pace.send = pm_try_send;
    if (!s->pace.senders)
        goto out;
    s->first_online = o->senders;
    s->first_offline = o->senders + o->online;
    for (unsigned i = 0; i < n; i++) {
        user *u = &r.users[i];
        u->role = i < s->first_online ? ROLE_SENDER
                  : i < s->first_offline ? ROLE_ONLINE : ROLE_OFFLINE;
        if (u->role == ROLE_SENDER) {
            s->pace.senders[s->pace.n_senders++] = i;
            if (run_sender(&r, u) != 0)
                goto out;
        }
    }
    if (run_setup(&r, report) != 0)
        goto out;
    /* Offline recipients exist (registered) but have no session. */
    for (unsigned i = s->first_offline; i < n; i++) {
        user *u = &r.users[i];
        bench_conn *c = u->conn;
        u->conn = NULL;
        u->stage = STAGE_GONE;
        if (c) {
            conn_set_user(c, NULL);
            conn_close(c);
        }
    }
    (void)run_phase(&r, "logout", CLOSE_S, 0, no_closing);
    double half = o->duration_s / 2;
    pm_run_phase(&r, s, 0, half);
    pm_run_phase(&r, s, 1, half);
    json_t *res = json_pack("{s:i, s:i, s:f, s:i}", "senders", (int)o->senders, "window",
                            (int)o->window, "target_rate", o->rate, "content_bytes",
                            (int)o->content_bytes);
    json_object_set_new(res, "online", pm_phase_json(&s->ph[0], o->online, 0));
    json_object_set_new(res, "offline", pm_phase_json(&s->ph[1], o->offline, 1));
    json_object_set_new(report, "results", res);
    r.unexpected += s->ph[0].wrong_online + s->ph[1].wrong_online;
    rc = 0;
out:
    run_close_all(&r, CLOSE_S);
    run_report(&r, report);
    run_free(&r);
    free(s->pace.senders);
    free(s);
    return rc;
}

/* ---- (e) idle ---------------------------------------------------------------- */

/* VmRSS and RssAnon of a process, in KiB (from /proc/<pid>/status). */
static int read_rss(long pid, long *rss, long *anon)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %ld", rss) == 1)
            found |= 1;
        else if (sscanf(line, "RssAnon: %ld", anon) == 1)
            found |= 2;
    }
    fclose(f);
    return found == 3 ? 0 : -1;
}

static void idle_progress(run *r, char *buf, size_t len, double dt)
{
    (void)dt;
    unsigned alive = 0;
    for (unsigned i = 0; i < r->n_users; i++)
        alive += r->users[i].stage == STAGE_READY;
    snprintf(buf, len, "idle sessions %u", alive);
}

int scenario_idle(const bench_opts *o, json_t *report)
{
    static const run_hooks hooks = {.progress = idle_progress};
    run r;
    if (run_init(&r, o, &hooks, NULL, o->connections, 1) != 0) {
        json_object_set_new(report, "error", json_string("out of memory"));
        return -1;
    }
    r.tick_ms = 50;
    int rc = -1;
    long before = 0, before_anon = 0, after = 0, after_anon = 0, end = 0, end_anon = 0;
    if (read_rss(o->server_pid, &before, &before_anon) != 0) {
        json_object_set_new(report, "error", json_string("cannot read /proc/<server-pid>/status"));
        goto out;
    }
    if (run_setup(&r, report) != 0)
        goto out;
    cpu_mark a, b;
    cpu_take(&r, &a);
    if (read_rss(o->server_pid, &after, &after_anon) != 0) {
        json_object_set_new(report, "error", json_string("server gone after setup"));
        goto out;
    }
    double secs = run_phase(&r, "hold", o->duration_s, 1, NULL);
    cpu_take(&r, &b);
    if (read_rss(o->server_pid, &end, &end_anon) != 0) {
        json_object_set_new(report, "error", json_string("server gone while holding"));
        goto out;
    }
    unsigned alive = 0;
    for (unsigned i = 0; i < r.n_users; i++)
        alive += r.users[i].stage == STAGE_READY;
    double n = o->connections ? (double)o->connections : 1;
    json_t *res = json_pack(
        "{s:i, s:i, s:f, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f}", "sessions",
        (int)o->connections, "alive_at_end", (int)alive, "held_seconds", secs, "rss_before_kib",
        (int)before, "rss_after_kib", (int)after, "rss_end_kib", (int)end,
        "rss_anon_before_kib", (int)before_anon, "rss_anon_after_kib", (int)after_anon,
        "rss_anon_end_kib", (int)end_anon, "per_session_bytes",
        (double)(after - before) * 1024.0 / n, "per_session_bytes_at_end",
        (double)(end - before) * 1024.0 / n, "anon_per_session_bytes",
        (double)(after_anon - before_anon) * 1024.0 / n);
    add_cpu(res, "cpu", &a, &b);
    json_object_set_new(report, "results", res);
    rc = 0;
out:
    run_close_all(&r, CLOSE_S);
    run_report(&r, report);
    run_free(&r);
    return rc;
}
