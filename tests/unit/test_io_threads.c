/* The queues between the logic thread and the I/O threads
 * (core/io_threads.c) with real threads: this thread is the logic thread
 * (it ran core_start), and each "I/O thread" is a pthread that sleeps on
 * a condition variable until io_threads wakes it, then takes the sockets
 * posted to it and runs io_threads_run, as transport.c's io_service does.
 * Sessions are made on their I/O threads, with keys whose client side the
 * test keeps, and the transport below opens every frame it takes with
 * them: what a session received, in which order, with which nonces and
 * on which thread, is what a client would have read off the wire. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "envelope.h"
#include "host_api.h"
#include "io_threads.h"
#include "plugin_loader.h"
#include "session.h"
#include "session_io.h"
#include "safemessenger/testhost_suite.h"

/* How long any wait for another thread may take before it counts as
 * lost (a missed wake-up, a dropped item). */
#define WAIT_SECONDS 10.0

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(double ms)
{
    long ns = (long)(ms * 1e6);
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
}

/* ==== the transport: what each session's client read ===================== */

enum { MAX_CLIENTS = 64 };

/* One thing a session's connection saw, in order. */
typedef struct rec {
    char kind;            /* 'f' a frame, 'p' reading paused, 'r' resumed, 'c' closed */
    char type[16];
    char action[64];
    char reply_to[32];
    uint64_t nonce;
    char *text;           /* the frame's opened payload, compact JSON */
    int thread;           /* io_threads_current() when it happened */
} rec;

typedef struct client {
    sm_session_id id;
    envelope_dir c2s;     /* seals the client's commands (this thread) */
    envelope_dir s2c;     /* opens what the server sent (the I/O thread) */
    rec *log;
    size_t n, cap;
    size_t unopened;      /* frames that did not open: bad nonce, signature, JSON */
} client;

/* The transport's calls run on the sessions' I/O threads, the checks on
 * this one: everything below is under rec_lock. */
static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static client clients[MAX_CLIENTS];
static size_t n_clients;
static size_t rec_lost; /* records that found no client or no memory */

static client *client_of(sm_session_id id)
{
    for (size_t i = 0; i < n_clients; i++)
        if (clients[i].id == id)
            return &clients[i];
    return NULL;
}

static rec *rec_add(sm_session_id id, char kind)
{
    client *c = client_of(id);
    if (c && c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        rec *log = realloc(c->log, cap * sizeof *log);
        if (!log)
            c = NULL;
        else {
            c->log = log;
            c->cap = cap;
        }
    }
    if (!c) {
        rec_lost++;
        return NULL;
    }
    rec *r = &c->log[c->n++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->thread = io_threads_current();
    return r;
}

static void record_frame(struct session *s, const char *text, size_t len)
{
    pthread_mutex_lock(&rec_lock);
    envelope_in in;
    client *c = client_of(s->id);
    if (envelope_parse(text, len, &in) != ENVELOPE_OK) {
        if (c)
            c->unopened++;
        pthread_mutex_unlock(&rec_lock);
        return;
    }
    json_t *payload = NULL;
    rec *r = rec_add(s->id, 'f');
    if (r) {
        snprintf(r->type, sizeof r->type, "%s", in.type);
        snprintf(r->action, sizeof r->action, "%s", in.action);
        snprintf(r->reply_to, sizeof r->reply_to, "%s", in.reply_to ? in.reply_to : "");
        r->nonce = strtoull(in.nonce, NULL, 10);
        /* envelope_open takes only the nonce after the last one opened. */
        if (envelope_open(&c->s2c, &in, &payload) == ENVELOPE_OK)
            r->text = json_dumps(payload, JSON_COMPACT);
        else
            c->unopened++;
    }
    json_decref(payload);
    envelope_in_clear(&in);
    pthread_mutex_unlock(&rec_lock);
}

/* Takes every frame at once, as a socket that is always writable. */
static void t_write(struct session *s)
{
    outqueue_frame *f;
    while ((f = session_io_next_frame(s))) {
        record_frame(s, (const char *)f->data + OUTQUEUE_HEADROOM, f->len);
        session_io_frame_sent(s, 0);
    }
}

static void t_close(struct session *s, int how)
{
    (void)how;
    pthread_mutex_lock(&rec_lock);
    rec_add(s->id, 'c');
    pthread_mutex_unlock(&rec_lock);
}

static void t_pause(struct session *s, int pause)
{
    pthread_mutex_lock(&rec_lock);
    rec_add(s->id, pause ? 'p' : 'r');
    pthread_mutex_unlock(&rec_lock);
}

static const session_transport threaded_transport = {t_write, t_close, t_pause, NULL};

static void clients_reset(void)
{
    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < n_clients; i++) {
        for (size_t j = 0; j < clients[i].n; j++)
            free(clients[i].log[j].text);
        free(clients[i].log);
    }
    memset(clients, 0, sizeof clients);
    n_clients = 0;
    rec_lost = 0;
    pthread_mutex_unlock(&rec_lock);
}

/* How many records of `kind` the session has. */
static size_t count_of(sm_session_id id, char kind)
{
    size_t n = 0;
    pthread_mutex_lock(&rec_lock);
    client *c = client_of(id);
    for (size_t i = 0; c && i < c->n; i++)
        if (c->log[i].kind == kind)
            n++;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

/* Seals a command as the session's client would. malloc'd, or NULL. */
static char *client_command(sm_session_id id, const char *action, const char *payload,
                            size_t *len)
{
    char *frame = NULL;
    pthread_mutex_lock(&rec_lock);
    client *c = client_of(id);
    if (c && envelope_seal(&c->c2s, "command", action, NULL, payload, strlen(payload), &frame,
                           len) != 0)
        frame = NULL;
    pthread_mutex_unlock(&rec_lock);
    return frame;
}

/* ==== the I/O threads ==================================================== */

typedef struct io_rig {
    pthread_t thread;
    int running;             /* this thread's */
    int no_leave;            /* this thread's: rig_stop does not leave it */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int woken, stop, hold;   /* under lock; hold: woken but does not drain */
    double slow_ms;          /* under lock: sleeps this long before draining */
    atomic_size_t ran;       /* what io_threads_run ran */
    atomic_size_t runs;      /* io_threads_run calls that returned (and were counted) */
    atomic_size_t fds;       /* sockets taken */
} io_rig;

static io_rig rigs[IO_THREADS_MAX];
static size_t n_rigs;

/* The logic thread's wake-up. */
static pthread_mutex_t logic_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t logic_cond = PTHREAD_COND_INITIALIZER;
static int logic_woken;

/* lws_cancel_service's part: sticky until the thread looks. */
static void wake_io(int index)
{
    io_rig *f = &rigs[index];
    pthread_mutex_lock(&f->lock);
    f->woken = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static void wake_logic(void)
{
    pthread_mutex_lock(&logic_lock);
    logic_woken = 1;
    pthread_cond_signal(&logic_cond);
    pthread_mutex_unlock(&logic_lock);
}

static void logic_wait(double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)(seconds * 1e9);
    until.tv_sec += ns / 1000000000L;
    until.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&logic_lock);
    while (!logic_woken && pthread_cond_timedwait(&logic_cond, &logic_lock, &until) == 0)
        ;
    logic_woken = 0;
    pthread_mutex_unlock(&logic_lock);
}

/* Runs the logic thread's side until cond holds; ok says whether it did
 * within WAIT_SECONDS. */
#define PUMP_UNTIL(ok, cond)                                                                      \
    do {                                                                                          \
        double until_ = mono() + WAIT_SECONDS;                                                    \
        (ok) = 0;                                                                                 \
        for (;;) {                                                                                \
            io_threads_run_logic();                                                               \
            if (cond) {                                                                           \
                (ok) = 1;                                                                         \
                break;                                                                            \
            }                                                                                     \
            if (mono() > until_)                                                                  \
                break;                                                                            \
            logic_wait(0.002);                                                                    \
        }                                                                                         \
    } while (0)

/* transport.c's io_main and io_service, with a condition variable for
 * lws_service. The wait has no timeout: a lost wake-up shows. */
static void *io_main(void *arg)
{
    io_rig *f = arg;
    io_threads_enter((int)(f - rigs));
    for (;;) {
        pthread_mutex_lock(&f->lock);
        while (!f->woken && !f->stop)
            pthread_cond_wait(&f->cond, &f->lock);
        while (f->hold && !f->stop)
            pthread_cond_wait(&f->cond, &f->lock);
        f->woken = 0;
        int stop = f->stop;
        double slow = f->slow_ms;
        pthread_mutex_unlock(&f->lock);
        if (stop)
            break;
        if (slow > 0)
            sleep_ms(slow);
        int fd;
        while ((fd = io_threads_take_fd()) >= 0) {
            close(fd);
            atomic_fetch_add(&f->fds, 1);
        }
        atomic_fetch_add(&f->ran, io_threads_run());
        atomic_fetch_add(&f->runs, 1);
    }
    io_threads_stopping();
    io_threads_enter(-1);
    return NULL;
}

static void rig_set(io_rig *f, int *field, int value)
{
    pthread_mutex_lock(&f->lock);
    *field = value;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static void rig_join(io_rig *f)
{
    if (!f->running)
        return;
    rig_set(f, &f->stop, 1);
    pthread_join(f->thread, NULL);
    f->running = 0;
}

static int rig_start(size_t n, size_t capacity)
{
    clients_reset();
    memset(rigs, 0, sizeof rigs);
    if (io_threads_init(n, capacity, wake_io, wake_logic) != 0)
        return -1;
    n_rigs = n;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_init(&rigs[i].lock, NULL);
        pthread_cond_init(&rigs[i].cond, NULL);
        if (pthread_create(&rigs[i].thread, NULL, io_main, &rigs[i]) != 0)
            return -1;
        rigs[i].running = 1;
    }
    return 0;
}

/* transport_stop's order: the threads end, each is left (its sessions
 * gone), the logic thread settles what they posted, the queues go. Then
 * no session may be left anywhere. */
static void rig_stop(void)
{
    for (size_t i = 0; i < n_rigs; i++)
        rig_join(&rigs[i]);
    for (size_t i = 0; i < n_rigs; i++) {
        if (rigs[i].no_leave)
            continue;
        io_threads_enter((int)i);
        io_threads_stopping();
        io_threads_leave();
    }
    io_threads_run_logic();
    io_threads_free();
    for (size_t i = 0; i < n_rigs; i++) {
        pthread_mutex_destroy(&rigs[i].lock);
        pthread_cond_destroy(&rigs[i].cond);
    }
    n_rigs = 0;
    CU_ASSERT_PTR_NULL(g_core.bridge);
    CU_ASSERT_EQUAL(atomic_load(&g_core.n_sessions), 0);
    CU_ASSERT_EQUAL(hashmap_count(g_core.sessions), 0);
    clients_reset();
}

/* ---- running something on an I/O thread ---- */

typedef struct on_call {
    void (*fn)(void *arg);
    void *arg;
    size_t runs;         /* the thread's runs before the one running this */
    atomic_int done;
} on_call;

static void on_call_run(void *p)
{
    on_call *c = p;
    c->runs = atomic_load(&rigs[io_threads_current()].runs);
    c->fn(c->arg);
    atomic_store(&c->done, 1);
}

/* fn(arg) on I/O thread `index` (posted as a worker's completion is),
 * waited for until the io_threads_run that ran it has returned, so that
 * the thread's counters are settled. 0, or -1 when the thread has
 * stopped. */
static int run_on(int index, void (*fn)(void *arg), void *arg)
{
    on_call c = {fn, arg, 0, 0};
    if (io_threads_post_completion(index, on_call_run, &c) != 0)
        return -1;
    double until = mono() + WAIT_SECONDS;
    while (!atomic_load(&c.done) || atomic_load(&rigs[index].runs) <= c.runs) {
        if (mono() > until) {
            /* c is on this stack: the thread may still run it. */
            fprintf(stderr, "I/O thread %d never ran a posted call\n", index);
            abort();
        }
        sleep_ms(0.1);
    }
    return 0;
}

enum { MAX_MAKE = 16 };

static int all_registered(const sm_session_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!session_find(ids[i]))
            return 0;
    return 1;
}

typedef struct make_job {
    size_t n;
    int announce;
    sm_session_id ids[MAX_MAKE];
    size_t made;
} make_job;

/* As transport.c's on_established and a completed handshake: the
 * session is made, keyed and added on its own I/O thread. */
static void make_on_thread(void *arg)
{
    make_job *j = arg;
    for (size_t i = 0; i < j->n; i++) {
        struct session *s = session_new(NULL, "127.0.0.1");
        if (!s)
            return;
        uint8_t k[CRYPTO_KEY_LEN], client_nonce[ENVELOPE_NONCE_LEN];
        if (crypto_random(k, sizeof k) != 0 ||
            crypto_random(client_nonce, sizeof client_nonce) != 0 ||
            crypto_random(s->server_nonce, sizeof s->server_nonce) != 0 ||
            envelope_derive(k, s->server_nonce, client_nonce, ENVELOPE_CIPHER_AES256_GCM, &s->c2s,
                            &s->s2c) != 0 ||
            io_threads_add(s) != SM_OK) {
            session_discard(s);
            return;
        }
        pthread_mutex_lock(&rec_lock);
        int room = n_clients < MAX_CLIENTS;
        if (room) {
            client *c = &clients[n_clients++];
            memset(c, 0, sizeof *c);
            c->id = s->id;
            c->c2s = s->c2s;
            c->s2c = s->s2c;
        }
        pthread_mutex_unlock(&rec_lock);
        if (!room) {
            io_threads_gone(s);
            return;
        }
        session_set_open(s);
        if (j->announce)
            session_opened(s);
        j->ids[j->made++] = s->id;
    }
}

/* n sessions on thread `index`; with announce, the logic thread has
 * registered them on return (unless it must not run: wait = 0). */
static size_t make_sessions(int index, size_t n, int announce, int wait, sm_session_id *ids)
{
    make_job j = {.n = n, .announce = announce};
    if (n > MAX_MAKE || run_on(index, make_on_thread, &j) != 0)
        return 0;
    memcpy(ids, j.ids, j.made * sizeof *ids);
    if (announce && wait) {
        int ok;
        PUMP_UNTIL(ok, all_registered(ids, j.made));
        if (!ok)
            return 0;
    }
    return j.made;
}

/* What the I/O side knows of a session, read on its thread. */
typedef struct probe_job {
    sm_session_id id;
    int found, io_busy;
    size_t input_count;
    /* what to do to it first */
    int set_busy, gone;
    const char *text;
    size_t len;
} probe_job;

static void probe_on_thread(void *arg)
{
    probe_job *p = arg;
    struct session *s = io_threads_find(p->id);
    p->found = s != NULL;
    if (!s)
        return;
    if (p->set_busy)
        s->io_busy = 1; /* as when a command went to the logic side */
    if (p->text)
        session_io_receive(s, p->text, p->len);
    if (p->gone) {
        /* The transport's LWS_CALLBACK_CLOSED. */
        session_io_disconnected(s);
        io_threads_gone(s);
        return;
    }
    p->io_busy = s->io_busy;
    p->input_count = s->input_count;
}

static probe_job probe(int index, sm_session_id id)
{
    probe_job p = {.id = id};
    run_on(index, probe_on_thread, &p);
    return p;
}

static void gone(int index, sm_session_id id)
{
    probe_job p = {.id = id, .gone = 1};
    run_on(index, probe_on_thread, &p);
}

/* ==== the logic side: a tiny plugin ====================================== */

static const sm_host *host;
static char plugin_name[] = "iotest", plugin_path[] = "(tests/unit/test_io_threads.c)";
static plugin test_plugin = {.name = plugin_name, .path = plugin_path};

static int echo_calls, hold_calls;
static sm_ctx *held;
static sm_session_id closed_ids[64];
static size_t n_closed;

static void act_echo(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)data;
    echo_calls++;
    host->reply(ctx, "echo", payload);
}

/* Replies later, when the test says (held). */
static void act_hold(sm_ctx *ctx, const json_t *payload, void *data)
{
    (void)payload;
    (void)data;
    hold_calls++;
    host->defer(ctx);
    held = ctx;
}

static const sm_action actions[] = {
    {"echo", act_echo, 0, NULL},
    {"hold", act_hold, 0, NULL},
    {NULL, NULL, 0, NULL},
};

static void on_closed(sm_core_event event, sm_session_id id, const char *username, void *data)
{
    (void)event;
    (void)username;
    (void)data;
    if (n_closed < sizeof closed_ids / sizeof *closed_ids)
        closed_ids[n_closed++] = id;
}

static int was_closed(sm_session_id id)
{
    int n = 0;
    for (size_t i = 0; i < n_closed; i++)
        n += closed_ids[i] == id;
    return n;
}

static int setup(void)
{
    core_options o = {.database = ":memory:", .port = -1, .workers = 1,
                      .transport = &threaded_transport};
    if (core_start(&o) != 0)
        return -1;
    host = host_api_table();
    /* What plugin_load does around a plugin's init. */
    g_core.initialising = &test_plugin;
    int rc = host->register_actions(&test_plugin, actions);
    if (rc == SM_OK)
        rc = host->subscribe(&test_plugin, SM_EVENT_SESSION_CLOSED, on_closed);
    g_core.initialising = NULL;
    return rc == SM_OK ? 0 : -1;
}

static int teardown(void)
{
    core_stop();
    clients_reset();
    return 0;
}

static io_threads_stats stats(void)
{
    io_threads_stats st;
    io_threads_stats_get(&st);
    return st;
}

/* ==== the cases ========================================================== */

static size_t frames_to(struct session *const *to, size_t n)
{
    size_t got = 0;
    for (size_t i = 0; i < n; i++)
        got += count_of(to[i]->id, 'f');
    return got;
}

/* What the first n I/O threads ran since `before`. */
static size_t ran_since(const size_t *before, size_t n)
{
    size_t ran = 0;
    for (size_t i = 0; i < n; i++)
        ran += atomic_load(&rigs[i].ran) - before[i];
    return ran;
}

/* A publish is one item per I/O thread that has recipients, whatever the
 * number of recipients; each recipient gets it once, with the same text. */
static void io_threads_publish_is_one_item_per_thread(void)
{
    CU_ASSERT_FATAL(rig_start(4, 16) == 0);
    /* Recipients on threads 0, 1 and 2; thread 3's sessions are not. */
    static const size_t per_thread[4] = {3, 1, 4, 2};
    sm_session_id ids[4][MAX_MAKE];
    for (int t = 0; t < 4; t++)
        CU_ASSERT_EQUAL_FATAL(make_sessions(t, per_thread[t], 1, 1, ids[t]), per_thread[t]);
    /* Interleaved across threads: the module must group them. */
    struct session *to[8];
    size_t n = 0;
    for (size_t i = 0; i < 4; i++)
        for (int t = 0; t < 3; t++)
            if (i < per_thread[t])
                to[n++] = session_find(ids[t][i]);
    CU_ASSERT_EQUAL_FATAL(n, 8);
    size_t ran_before[4];
    for (int t = 0; t < 4; t++)
        ran_before[t] = atomic_load(&rigs[t].ran);
    io_threads_stats before = stats();

    static const char text[] = "{\"note\":\"the same for every one\",\"n\":42}";
    CU_ASSERT_EQUAL(session_io_publish(to, n, "pub", text, sizeof text - 1), 0);

    int ok;
    PUMP_UNTIL(ok, frames_to(to, n) == n && ran_since(ran_before, 4) == 3);
    CU_ASSERT(ok);
    io_threads_stats after = stats();
    CU_ASSERT_EQUAL(after.queue.pushed - before.queue.pushed, 3);
    CU_ASSERT_EQUAL(after.queue.queued, 0);
    for (int t = 0; t < 3; t++)
        CU_ASSERT_EQUAL(atomic_load(&rigs[t].ran) - ran_before[t], 1);
    CU_ASSERT_EQUAL(atomic_load(&rigs[3].ran), ran_before[3]);

    pthread_mutex_lock(&rec_lock);
    for (int t = 0; t < 4; t++) {
        for (size_t i = 0; i < per_thread[t]; i++) {
            client *c = client_of(ids[t][i]);
            CU_ASSERT_PTR_NOT_NULL(c);
            if (!c)
                continue;
            CU_ASSERT_EQUAL(c->unopened, 0);
            if (t == 3) {
                CU_ASSERT_EQUAL(c->n, 0);
                continue;
            }
            CU_ASSERT_EQUAL(c->n, 1);
            if (c->n < 1)
                continue;
            rec *r = &c->log[0];
            CU_ASSERT_EQUAL(r->kind, 'f');
            CU_ASSERT_STRING_EQUAL(r->type, "event");
            CU_ASSERT_STRING_EQUAL(r->action, "pub");
            CU_ASSERT_STRING_EQUAL(r->reply_to, "");
            CU_ASSERT_EQUAL(r->nonce, 1);
            CU_ASSERT_EQUAL(r->thread, t);
            CU_ASSERT_PTR_NOT_NULL(r->text);
            if (r->text)
                CU_ASSERT_STRING_EQUAL(r->text, text);
        }
    }
    CU_ASSERT_EQUAL(rec_lost, 0);
    pthread_mutex_unlock(&rec_lock);
    rig_stop();
}

/* What the logic thread sends one session arrives in the order sent: a
 * reply, then an event, then the command's done; and a long run of sends
 * keeps its order with consecutive nonces. */
static void io_threads_keep_send_publish_done_order(void)
{
    CU_ASSERT_FATAL(rig_start(2, 16) == 0);
    sm_session_id id;
    CU_ASSERT_EQUAL_FATAL(make_sessions(1, 1, 1, 1, &id), 1);
    struct session *s = session_find(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* A command of the session is at the logic side. */
    probe_job p = {.id = id, .set_busy = 1};
    run_on(1, probe_on_thread, &p);
    CU_ASSERT_TRUE_FATAL(p.found && p.io_busy);

    static const char reply[] = "{\"r\":1}", event[] = "{\"e\":1}";
    CU_ASSERT_EQUAL(session_io_send(s, "response", "cmd", "n1", reply, sizeof reply - 1), 0);
    CU_ASSERT_EQUAL(session_io_publish(&s, 1, "ev", event, sizeof event - 1), 0);
    g_core.bridge->done(s);

    int ok;
    PUMP_UNTIL(ok, count_of(id, 'r') == 1);
    CU_ASSERT(ok);
    pthread_mutex_lock(&rec_lock);
    client *c = client_of(id);
    CU_ASSERT_EQUAL(c->n, 3);
    if (c->n == 3) {
        CU_ASSERT_EQUAL(c->log[0].kind, 'f');
        CU_ASSERT_STRING_EQUAL(c->log[0].type, "response");
        CU_ASSERT_STRING_EQUAL(c->log[0].reply_to, "n1");
        CU_ASSERT_EQUAL(c->log[0].nonce, 1);
        CU_ASSERT_EQUAL(c->log[1].kind, 'f');
        CU_ASSERT_STRING_EQUAL(c->log[1].type, "event");
        CU_ASSERT_STRING_EQUAL(c->log[1].action, "ev");
        CU_ASSERT_EQUAL(c->log[1].nonce, 2);
        /* done: the I/O side takes input again (session_io_resume). */
        CU_ASSERT_EQUAL(c->log[2].kind, 'r');
        for (size_t i = 0; i < 3; i++)
            CU_ASSERT_EQUAL(c->log[i].thread, 1);
    }
    pthread_mutex_unlock(&rec_lock);
    p = probe(1, id);
    CU_ASSERT_EQUAL(p.io_busy, 0);

    enum { SENDS = 300 };
    for (int i = 0; i < SENDS; i++) {
        char text[32];
        int len = snprintf(text, sizeof text, "{\"i\":%d}", i);
        CU_ASSERT_EQUAL(session_io_send(s, "event", "seq", NULL, text, (size_t)len), 0);
    }
    PUMP_UNTIL(ok, count_of(id, 'f') == 2 + SENDS);
    CU_ASSERT(ok);
    pthread_mutex_lock(&rec_lock);
    c = client_of(id);
    CU_ASSERT_EQUAL(c->unopened, 0);
    size_t in_order = 0;
    for (size_t i = 3; i < c->n; i++) {
        char want[32];
        snprintf(want, sizeof want, "{\"i\":%zu}", i - 3);
        in_order += c->log[i].kind == 'f' && c->log[i].nonce == i && c->log[i].text &&
                    strcmp(c->log[i].text, want) == 0 && c->log[i].thread == 1;
    }
    CU_ASSERT_EQUAL(in_order, SENDS);
    pthread_mutex_unlock(&rec_lock);
    rig_stop();
}

/* A full queue makes the logic thread wait for the slow I/O thread,
 * counted, instead of dropping or growing: everything arrives, in order,
 * and the queue never held more than its capacity. */
static void io_threads_full_queue_makes_the_logic_thread_wait(void)
{
    enum { CAPACITY = 4, ITEMS = 120 };
    CU_ASSERT_FATAL(rig_start(2, CAPACITY) == 0);
    sm_session_id ids[2];
    CU_ASSERT_EQUAL_FATAL(make_sessions(1, 2, 1, 1, ids), 2);
    struct session *x = session_find(ids[0]), *y = session_find(ids[1]);
    CU_ASSERT_FATAL(x && y);
    struct session *both[2] = {x, y};
    pthread_mutex_lock(&rigs[1].lock);
    rigs[1].slow_ms = 3;
    pthread_mutex_unlock(&rigs[1].lock);
    io_threads_stats before = stats();

    /* Sends to x and publishes to both, alternating: one item each. */
    for (int k = 0; k < ITEMS; k++) {
        char text[32];
        int len = snprintf(text, sizeof text, "{\"k\":%d}", k);
        int rc = k % 2 == 0 ? session_io_send(x, "event", "sent", NULL, text, (size_t)len)
                            : session_io_publish(both, 2, "published", text, (size_t)len);
        CU_ASSERT_EQUAL(rc, 0);
    }
    io_threads_stats during = stats();
    CU_ASSERT(during.full_waits > before.full_waits);
    CU_ASSERT(during.queue.refused > before.queue.refused);
    CU_ASSERT_EQUAL(during.queue.pushed - before.queue.pushed, ITEMS);

    int ok;
    PUMP_UNTIL(ok, count_of(ids[0], 'f') == ITEMS && count_of(ids[1], 'f') == ITEMS / 2);
    CU_ASSERT(ok);
    io_threads_stats after = stats();
    CU_ASSERT_EQUAL(after.queue.queued, 0);
    CU_ASSERT(after.queue.high_water <= CAPACITY);
    CU_ASSERT_EQUAL(after.queue.high_water, CAPACITY); /* it was full */

    pthread_mutex_lock(&rec_lock);
    for (int who = 0; who < 2; who++) {
        client *c = client_of(ids[who]);
        CU_ASSERT_EQUAL(c->unopened, 0);
        size_t in_order = 0;
        for (size_t i = 0; i < c->n; i++) {
            /* x: k = 0, 1, 2, ...; y: the publishes, k = 1, 3, 5, ... */
            size_t k = who == 0 ? i : 2 * i + 1;
            char want[32];
            snprintf(want, sizeof want, "{\"k\":%zu}", k);
            in_order += c->log[i].kind == 'f' && c->log[i].nonce == i + 1 && c->log[i].text &&
                        strcmp(c->log[i].text, want) == 0 &&
                        strcmp(c->log[i].action, k % 2 ? "published" : "sent") == 0;
        }
        CU_ASSERT_EQUAL(in_order, who == 0 ? ITEMS : ITEMS / 2);
    }
    pthread_mutex_unlock(&rec_lock);
    rig_stop();
}

static void *stopper(void *arg)
{
    io_rig *f = arg;
    sleep_ms(100);
    rig_set(f, &f->stop, 1);
    return NULL;
}

static void set_flag(void *arg) { *(int *)arg = 1; }

/* A stopped I/O thread takes nothing more: a push into its full queue
 * returns (dropped) even while the logic thread was waiting on it,
 * sockets and completions are refused, and what stays queued is freed
 * with the queues. */
static void io_threads_stopped_thread_drops_without_blocking(void)
{
    enum { CAPACITY = 4 };
    CU_ASSERT_FATAL(rig_start(2, CAPACITY) == 0);
    sm_session_id a, b;
    CU_ASSERT_EQUAL_FATAL(make_sessions(0, 1, 1, 1, &a), 1);
    CU_ASSERT_EQUAL_FATAL(make_sessions(1, 1, 1, 1, &b), 1);
    struct session *sa = session_find(a), *sb = session_find(b);
    CU_ASSERT_FATAL(sa && sb);
    /* b's connection closes; the logic thread has not heard yet, and
     * still sends to it (its items will find nothing). */
    gone(1, b);
    io_rig *f1 = &rigs[1];
    rig_set(f1, &f1->hold, 1);
    io_threads_stats before = stats();

    pthread_t stop_thread;
    CU_ASSERT_FATAL(pthread_create(&stop_thread, NULL, stopper, f1) == 0);
    /* A push that waited for ever would hang the suite: SIGALRM ends it. */
    alarm(30);
    double t0 = mono();
    for (int k = 0; k < 8; k++) {
        static const char text[] = "{\"lost\":true}";
        if (k % 2)
            session_io_publish(&sb, 1, "lost", text, sizeof text - 1);
        else
            session_io_send(sb, "event", "lost", NULL, text, sizeof text - 1);
    }
    double waited = mono() - t0;
    pthread_join(stop_thread, NULL);
    pthread_join(f1->thread, NULL);
    f1->running = 0;
    f1->no_leave = 1; /* what it holds is left for io_threads_free */
    /* The fifth push waited for the held thread until it stopped. */
    CU_ASSERT(waited >= 0.05);
    CU_ASSERT(waited < 5.0);
    io_threads_stats after = stats();
    CU_ASSERT_EQUAL(after.queue.pushed - before.queue.pushed, CAPACITY);
    CU_ASSERT_EQUAL(after.queue.queued, CAPACITY);
    CU_ASSERT(after.full_waits > before.full_waits);
    CU_ASSERT(after.queue.refused - before.queue.refused >= 8 - CAPACITY);

    /* Stopped: nothing more is posted to it, and now nothing waits. */
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    CU_ASSERT_EQUAL(io_threads_post_fd(1, fds[0]), -1);
    close(fds[0]);
    int ran = 0;
    CU_ASSERT_EQUAL(io_threads_post_completion(1, set_flag, &ran), -1);
    io_threads_wake(1);
    t0 = mono();
    struct session *both[2] = {sa, sb};
    static const char after_text[] = "{\"after\":1}";
    CU_ASSERT_EQUAL(session_io_publish(both, 2, "after", after_text, sizeof after_text - 1), 0);
    CU_ASSERT(mono() - t0 < 1.0);
    alarm(0);
    /* The running thread still takes sockets and items. */
    CU_ASSERT_EQUAL(io_threads_post_fd(0, fds[1]), 0);
    int ok;
    PUMP_UNTIL(ok, count_of(a, 'f') == 1 && atomic_load(&rigs[0].fds) == 1 &&
                       session_find(b) == NULL);
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(ran, 0);
    CU_ASSERT_EQUAL(was_closed(b), 1);
    CU_ASSERT_EQUAL(count_of(b, 'f'), 0);
    CU_ASSERT_EQUAL(stats().queue.queued, CAPACITY);
    rig_stop();
}

/* A connection gone before its handshake completed is discarded on its
 * thread, unknown to the logic thread; one the logic thread knew is
 * destroyed there (SESSION_CLOSED), also when its opened and gone reach
 * it in the same turn. */
static void io_threads_gone_goes_to_whoever_knows_the_session(void)
{
    CU_ASSERT_FATAL(rig_start(2, 16) == 0);
    size_t base = atomic_load(&g_core.n_sessions);
    size_t closed = n_closed;

    sm_session_id u;
    CU_ASSERT_EQUAL_FATAL(make_sessions(0, 1, 0, 0, &u), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_core.n_sessions), base + 1);
    CU_ASSERT_PTR_NULL(session_find(u));
    gone(0, u);
    CU_ASSERT_EQUAL(atomic_load(&g_core.n_sessions), base);
    CU_ASSERT_FALSE(probe(0, u).found);
    CU_ASSERT_EQUAL(io_threads_run_logic(), 0); /* nothing was posted */
    CU_ASSERT_EQUAL(n_closed, closed);

    sm_session_id k;
    CU_ASSERT_EQUAL_FATAL(make_sessions(0, 1, 1, 1, &k), 1);
    CU_ASSERT_PTR_NOT_NULL(session_find(k));
    gone(0, k);
    CU_ASSERT_FALSE(probe(0, k).found);
    int ok;
    PUMP_UNTIL(ok, session_find(k) == NULL);
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(was_closed(k), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_core.n_sessions), base);

    /* Opened and gone both waiting for the logic thread. */
    sm_session_id q;
    CU_ASSERT_EQUAL_FATAL(make_sessions(1, 1, 1, 0, &q), 1);
    gone(1, q);
    CU_ASSERT_EQUAL(io_threads_run_logic(), 2);
    CU_ASSERT_PTR_NULL(session_find(q));
    CU_ASSERT_EQUAL(was_closed(q), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_core.n_sessions), base);
    rig_stop();
}

/* The acceptor's choice: the thread with the fewest connections, equal
 * ones in turn. */
static void io_threads_pick_least_loaded_in_turn(void)
{
    enum { N = 3 };
    CU_ASSERT_FATAL(rig_start(N, 4) == 0);
    /* All equal: any N picks in a row name every thread once. */
    int seen[N] = {0};
    for (int i = 0; i < N; i++)
        seen[io_threads_pick()]++;
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(seen[i], 1);

    io_threads_count_connection(0, 1);
    io_threads_count_connection(2, 1);
    for (int i = 0; i < 2 * N; i++)
        CU_ASSERT_EQUAL(io_threads_pick(), 1);

    /* 0 and 2 tie below 1: both are chosen in any N picks, 1 never. */
    io_threads_count_connection(1, 1);
    io_threads_count_connection(1, 1);
    for (int round = 0; round < 2; round++) {
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < N; i++)
            seen[io_threads_pick()]++;
        CU_ASSERT(seen[0] >= 1);
        CU_ASSERT(seen[2] >= 1);
        CU_ASSERT_EQUAL(seen[1], 0);
    }

    /* Connections that end count too: 0 now has none, 1 and 2 one each. */
    io_threads_count_connection(1, -1);
    io_threads_count_connection(0, -1);
    for (int i = 0; i < 2 * N; i++)
        CU_ASSERT_EQUAL(io_threads_pick(), 0);
    rig_stop();
}

/* A command from the client: opened on its I/O thread, dispatched on the
 * logic thread, its reply sealed back on the I/O thread; a second one
 * pipelined behind it waits for the first one's done. */
static void io_threads_command_round_trip_and_pipelining(void)
{
    CU_ASSERT_FATAL(rig_start(2, 16) == 0);
    sm_session_id id;
    CU_ASSERT_EQUAL_FATAL(make_sessions(1, 1, 1, 1, &id), 1);
    echo_calls = hold_calls = 0;
    held = NULL;
    size_t len1 = 0, len2 = 0;
    char *first = client_command(id, "hold", "{\"n\":1}", &len1);
    char *second = client_command(id, "echo", "{\"n\":2}", &len2);
    CU_ASSERT_FATAL(first && second);
    io_threads_stats before = stats();

    /* Both arrive at once, as from one socket read. */
    probe_job p = {.id = id, .text = first, .len = len1};
    run_on(1, probe_on_thread, &p);
    CU_ASSERT_TRUE(p.found && p.io_busy);
    p = (probe_job){.id = id, .text = second, .len = len2};
    run_on(1, probe_on_thread, &p);
    CU_ASSERT_EQUAL(p.input_count, 1);
    CU_ASSERT_EQUAL(count_of(id, 'p'), 1); /* reading paused behind it */
    free(first);
    free(second);

    int ok;
    PUMP_UNTIL(ok, hold_calls == 1 && held != NULL);
    CU_ASSERT_FATAL(ok);
    /* The second waits while the first is unanswered. */
    double until = mono() + 0.1;
    while (mono() < until) {
        io_threads_run_logic();
        logic_wait(0.005);
    }
    CU_ASSERT_EQUAL(echo_calls, 0);
    p = probe(1, id);
    CU_ASSERT_EQUAL(p.input_count, 1);
    CU_ASSERT_EQUAL(p.io_busy, 1);
    CU_ASSERT_EQUAL(count_of(id, 'f'), 0);

    json_t *answer = json_pack("{s:i}", "n", 1);
    CU_ASSERT_EQUAL(host->reply(held, "hold", answer), SM_OK);
    json_decref(answer);
    held = NULL;
    PUMP_UNTIL(ok, echo_calls == 1 && count_of(id, 'f') == 2 && count_of(id, 'r') == 1);
    CU_ASSERT(ok);
    /* send, done, send, done: one item each. */
    CU_ASSERT_EQUAL(stats().queue.pushed - before.queue.pushed, 4);

    pthread_mutex_lock(&rec_lock);
    client *c = client_of(id);
    CU_ASSERT_EQUAL(c->unopened, 0);
    /* paused, reply 1, reply 2, resumed */
    CU_ASSERT_EQUAL(c->n, 4);
    if (c->n == 4) {
        CU_ASSERT_EQUAL(c->log[0].kind, 'p');
        for (size_t i = 1; i <= 2; i++) {
            rec *r = &c->log[i];
            char want[16];
            snprintf(want, sizeof want, "{\"n\":%zu}", i);
            CU_ASSERT_EQUAL(r->kind, 'f');
            CU_ASSERT_STRING_EQUAL(r->type, "response");
            CU_ASSERT_STRING_EQUAL(r->action, i == 1 ? "hold" : "echo");
            CU_ASSERT_STRING_EQUAL(r->reply_to, i == 1 ? "1" : "2");
            CU_ASSERT_EQUAL(r->nonce, i);
            CU_ASSERT_PTR_NOT_NULL(r->text);
            if (r->text)
                CU_ASSERT_STRING_EQUAL(r->text, want);
            CU_ASSERT_EQUAL(r->thread, 1); /* sealed on the session's thread */
        }
        CU_ASSERT_EQUAL(c->log[3].kind, 'r');
    }
    pthread_mutex_unlock(&rec_lock);
    p = probe(1, id);
    CU_ASSERT_EQUAL(p.io_busy, 0);
    CU_ASSERT_EQUAL(p.input_count, 0);
    rig_stop();
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(io_threads_publish_is_one_item_per_thread),
        SM_TEST(io_threads_keep_send_publish_done_order),
        SM_TEST(io_threads_full_queue_makes_the_logic_thread_wait),
        SM_TEST(io_threads_stopped_thread_drops_without_blocking),
        SM_TEST(io_threads_gone_goes_to_whoever_knows_the_session),
        SM_TEST(io_threads_pick_least_loaded_in_turn),
        SM_TEST(io_threads_command_round_trip_and_pipelining),
        SM_TEST_END,
    };
    return sm_test_run("io_threads", tests, setup, teardown);
}
