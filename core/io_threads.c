#include "io_threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "durability.h"
#include "hashmap.h"
#include "log.h"
#include "session.h"
#include "session_io.h"
#include "shared_payload.h"

/* Items taken from a queue at once. */
#define TAKE_BATCH 256
/* A full queue is logged at most this often. */
#define FULL_LOG_SECONDS 10.0

/* ---- items: logic thread -> I/O thread ---------------------------------- */

enum io_kind { IO_SEND, IO_PUBLISH, IO_DONE, IO_CLOSE, IO_CALL };

typedef struct io_item {
    enum io_kind kind;
    sm_session_id id;
    union {
        struct {          /* IO_SEND: strings in the same allocation */
            const char *type, *action, *reply_to, *text;
            size_t len;
        } send;
        struct {          /* IO_PUBLISH: ids and action in the same allocation */
            shared_payload *text;
            const char *action;
            size_t n;
            sm_session_id *ids;
        } publish;
        struct {          /* IO_CLOSE */
            int code;
            char reason[64];
        } close;
        struct {          /* IO_CALL */
            void (*fn)(int index);
        } call;
    } u;
} io_item;

/* ---- items: I/O thread -> logic thread ---------------------------------- */

enum logic_kind { LOGIC_OPENED, LOGIC_COMMAND, LOGIC_GONE };

typedef struct logic_item {
    struct logic_item *next;
    enum logic_kind kind;
    struct session *s;   /* OPENED, GONE: handed over with the item */
    sm_session_id id;    /* COMMAND */
    json_t *payload;
    size_t bytes;
    char *action, *nonce; /* in the same allocation */
} logic_item;

typedef struct completion {
    struct completion *next;
    void (*fn)(void *arg);
    void *arg;
} completion;

typedef struct io_thread {
    int index;
    handoff *inbox;                  /* the logic thread's items */
    hashmap *sessions;               /* this thread's: id -> session * */
    atomic_size_t connections;       /* for the acceptor's choice */
    /* Accepted sockets and finished handshake jobs for this thread. */
    pthread_mutex_t lock;
    int *fds;
    size_t n_fds, cap_fds;
    completion *done_head, *done_tail;
    int stopped;                     /* left: nothing more is taken */
} io_thread;

static io_thread *threads;
static size_t n_threads;
static void (*wake_io_fn)(int index);
static void (*wake_logic_fn)(void);
static _Thread_local int current = -1;
static void (*defer_wake_fn)(void); /* set before the I/O threads start */
static atomic_uint next_pick;

static pthread_mutex_t logic_lock = PTHREAD_MUTEX_INITIALIZER;
static logic_item *logic_head, *logic_tail;

static atomic_uint_least64_t full_waits;
static double full_logged_at = -1e9; /* logic thread only */

static const session_bridge threaded_bridge;

/* Under the thread's lock, and only while it runs: its lws context is
 * destroyed once it has stopped (io_threads_stopping). */
static void wake(io_thread *t)
{
    pthread_mutex_lock(&t->lock);
    if (!t->stopped)
        wake_io_fn(t->index);
    pthread_mutex_unlock(&t->lock);
}

static void wake_thread(void *arg) { wake(arg); }

void io_threads_wake(int index)
{
    if (index >= 0 && (size_t)index < n_threads)
        wake(&threads[index]);
}

/* ---- life cycle ----------------------------------------------------------- */

static void item_free(void *p)
{
    io_item *it = p;
    if (it && it->kind == IO_PUBLISH)
        shared_payload_unref(it->u.publish.text);
    free(it);
}

int io_threads_init(size_t n, size_t capacity, void (*wake_io)(int index),
                    void (*wake_logic)(void))
{
    if (n == 0 || n > IO_THREADS_MAX)
        return -1;
    threads = calloc(n, sizeof *threads);
    if (!threads)
        goto fail;
    wake_io_fn = wake_io;
    wake_logic_fn = wake_logic;
    for (size_t i = 0; i < n; i++) {
        io_thread *t = &threads[i];
        t->index = (int)i;
        pthread_mutex_init(&t->lock, NULL);
        n_threads = i + 1;
        t->inbox = handoff_new(capacity, wake_thread, t);
        t->sessions = hashmap_new();
        if (!t->inbox || !t->sessions)
            goto fail;
    }
    g_core.bridge = &threaded_bridge;
    return 0;
fail:
    LOG_ERROR("out of memory for the I/O threads' queues");
    io_threads_free();
    return -1;
}

static void logic_item_free(logic_item *li)
{
    json_decref(li->payload);
    free(li);
}

void io_threads_free(void)
{
    for (size_t i = 0; i < n_threads; i++) {
        io_thread *t = &threads[i];
        handoff_free(t->inbox, item_free);
        hashmap_free(t->sessions, NULL);
        for (size_t j = 0; j < t->n_fds; j++)
            close(t->fds[j]);
        free(t->fds);
        /* handshake_drain ran first: no job is left to complete. */
        for (completion *c = t->done_head, *next; c; c = next) {
            next = c->next;
            free(c);
        }
        pthread_mutex_destroy(&t->lock);
    }
    free(threads);
    threads = NULL;
    n_threads = 0;
    for (logic_item *li = logic_head, *next; li; li = next) {
        next = li->next;
        logic_item_free(li);
    }
    logic_head = logic_tail = NULL;
    if (g_core.bridge == &threaded_bridge)
        g_core.bridge = NULL;
}

size_t io_threads_count(void) { return n_threads; }

/* ---- on an I/O thread ----------------------------------------------------- */

void io_threads_enter(int index) { current = index; }

int io_threads_current(void) { return current; }

static io_thread *self(void)
{
    return current >= 0 && (size_t)current < n_threads ? &threads[current] : NULL;
}

struct session *io_threads_find(sm_session_id id)
{
    io_thread *t = self();
    return t ? hashmap_get_u64(t->sessions, id) : NULL;
}

int io_threads_add(struct session *s)
{
    io_thread *t = self();
    if (!t || hashmap_put_u64(t->sessions, s->id, s) != 0)
        return SM_ENOMEM;
    s->io_thread = t->index;
    return SM_OK;
}

static void post_logic(logic_item *li)
{
    li->next = NULL;
    pthread_mutex_lock(&logic_lock);
    int was_empty = logic_head == NULL;
    if (logic_tail)
        logic_tail->next = li;
    else
        logic_head = li;
    logic_tail = li;
    pthread_mutex_unlock(&logic_lock);
    if (!was_empty)
        return;
    /* From an I/O thread, once its current pass is over: the items of one
     * pass (several handshakes, commands, closes) then cost the logic
     * thread one wake-up. */
    if (defer_wake_fn && current >= 0)
        defer_wake_fn();
    else
        wake_logic_fn();
}

void io_threads_set_deferred_wake(void (*defer)(void)) { defer_wake_fn = defer; }

void io_threads_gone(struct session *s)
{
    io_thread *t = self();
    if (t)
        hashmap_remove_u64(t->sessions, s->id);
    if (!s->announced) {
        session_discard(s);
        return;
    }
    logic_item *li = calloc(1, sizeof *li);
    if (!li) {
        /* The logic side would keep a session whose connection is gone:
         * nothing can be done without memory but say so. */
        LOG_ERROR("session %llu: out of memory telling the logic thread it closed",
                  (unsigned long long)s->id);
        return;
    }
    li->kind = LOGIC_GONE;
    li->s = s;
    post_logic(li);
}

void io_threads_each(void (*fn)(struct session *s))
{
    io_thread *t = self();
    if (!t)
        return;
    /* Collected first: fn may change the map. */
    size_t n = hashmap_count(t->sessions), i = 0;
    sm_session_id *ids = n ? malloc(n * sizeof *ids) : NULL;
    if (n && !ids)
        return;
    hashmap_iter it;
    void *value;
    hashmap_iter_init(t->sessions, &it);
    while (i < n && hashmap_iter_next(&it, NULL, NULL, &value))
        ids[i++] = ((struct session *)value)->id;
    for (size_t j = 0; j < i; j++) {
        struct session *s = hashmap_get_u64(t->sessions, ids[j]);
        if (s)
            fn(s);
    }
    free(ids);
}

static void run_item(io_item *it)
{
    struct session *s;
    switch (it->kind) {
    case IO_SEND:
        if ((s = io_threads_find(it->id)))
            session_io_out_send(s, it->u.send.type, it->u.send.action, it->u.send.reply_to,
                                it->u.send.text, it->u.send.len);
        break;
    case IO_PUBLISH: {
        const char *text = shared_payload_text(it->u.publish.text);
        size_t len = shared_payload_len(it->u.publish.text);
        for (size_t i = 0; i < it->u.publish.n; i++)
            if ((s = io_threads_find(it->u.publish.ids[i])))
                session_io_out_send(s, "event", it->u.publish.action, NULL, text, len);
        break;
    }
    case IO_DONE:
        if ((s = io_threads_find(it->id)))
            session_io_done(s);
        break;
    case IO_CLOSE:
        if ((s = io_threads_find(it->id)))
            session_io_out_close(s, it->u.close.code, it->u.close.reason);
        break;
    case IO_CALL:
        it->u.call.fn(current);
        break;
    }
    item_free(it);
}

size_t io_threads_run(void)
{
    io_thread *t = self();
    if (!t)
        return 0;
    size_t ran = 0;
    pthread_mutex_lock(&t->lock);
    completion *c = t->done_head;
    t->done_head = t->done_tail = NULL;
    pthread_mutex_unlock(&t->lock);
    while (c) {
        completion *next = c->next;
        c->fn(c->arg);
        free(c);
        c = next;
        ran++;
    }
    void *items[TAKE_BATCH];
    size_t n;
    do {
        n = handoff_take(t->inbox, items, TAKE_BATCH);
        for (size_t i = 0; i < n; i++)
            run_item(items[i]);
        ran += n;
    } while (n == TAKE_BATCH);
    return ran;
}

static void gone_cb(struct session *s) { io_threads_gone(s); }

void io_threads_stopping(void)
{
    io_thread *t = self();
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopped = 1;
    pthread_mutex_unlock(&t->lock);
}

void io_threads_leave(void)
{
    io_thread *t = self();
    if (!t)
        return;
    io_threads_each(gone_cb);
    /* Completions that came before the stop: their sessions are gone, so
     * each only frees its job. */
    io_threads_run();
    int fd;
    while ((fd = io_threads_take_fd()) >= 0)
        close(fd);
    current = -1;
}

/* ---- the acceptor --------------------------------------------------------- */

int io_threads_pick(void)
{
    /* Start the scan at a rotating place, so equal loads take turns. */
    unsigned start = atomic_fetch_add_explicit(&next_pick, 1, memory_order_relaxed);
    size_t best = start % n_threads, best_load = (size_t)-1;
    for (size_t k = 0; k < n_threads; k++) {
        size_t i = (start + k) % n_threads;
        size_t load = atomic_load_explicit(&threads[i].connections, memory_order_relaxed);
        if (load < best_load) {
            best = i;
            best_load = load;
        }
    }
    return (int)best;
}

void io_threads_count_connection(int index, int delta)
{
    if (index < 0 || (size_t)index >= n_threads)
        return;
    if (delta > 0)
        atomic_fetch_add_explicit(&threads[index].connections, 1, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&threads[index].connections, 1, memory_order_relaxed);
}

int io_threads_post_fd(int index, int fd)
{
    if (index < 0 || (size_t)index >= n_threads)
        return -1;
    io_thread *t = &threads[index];
    pthread_mutex_lock(&t->lock);
    int ok = !t->stopped;
    if (ok && t->n_fds == t->cap_fds) {
        size_t cap = t->cap_fds ? t->cap_fds * 2 : 16;
        int *fds = realloc(t->fds, cap * sizeof *fds);
        if (fds) {
            t->fds = fds;
            t->cap_fds = cap;
        } else {
            ok = 0;
        }
    }
    if (ok)
        t->fds[t->n_fds++] = fd;
    if (ok)
        wake_io_fn(index);
    pthread_mutex_unlock(&t->lock);
    return ok ? 0 : -1;
}

int io_threads_take_fd(void)
{
    io_thread *t = self();
    if (!t)
        return -1;
    int fd = -1;
    pthread_mutex_lock(&t->lock);
    if (t->n_fds > 0) {
        fd = t->fds[0];
        memmove(t->fds, t->fds + 1, (t->n_fds - 1) * sizeof *t->fds);
        t->n_fds--;
    }
    pthread_mutex_unlock(&t->lock);
    return fd;
}

/* ---- any thread ----------------------------------------------------------- */

int io_threads_post_completion(int index, void (*fn)(void *arg), void *arg)
{
    if (index < 0 || (size_t)index >= n_threads)
        return -1;
    io_thread *t = &threads[index];
    completion *c = malloc(sizeof *c);
    if (!c)
        return -1;
    c->next = NULL;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&t->lock);
    int ok = !t->stopped;
    if (ok) {
        if (t->done_tail)
            t->done_tail->next = c;
        else
            t->done_head = c;
        t->done_tail = c;
        wake_io_fn(index);
    }
    pthread_mutex_unlock(&t->lock);
    if (!ok)
        free(c);
    return ok ? 0 : -1;
}

/* ---- the logic thread's side of the queues -------------------------------- */

static int thread_stopped(io_thread *t)
{
    pthread_mutex_lock(&t->lock);
    int stopped = t->stopped;
    pthread_mutex_unlock(&t->lock);
    return stopped;
}

/* Queues it for thread t, waiting while t's queue is full: back-pressure
 * on the logic thread, never memory (io_threads.h). */
static void push_now(io_thread *t, io_item *it)
{
    int waited = 0;
    while (handoff_push(t->inbox, it) == SM_EBUSY) {
        if (thread_stopped(t)) {
            item_free(it);
            return;
        }
        if (!waited) {
            waited = 1;
            atomic_fetch_add_explicit(&full_waits, 1, memory_order_relaxed);
            double now = core_mono_now();
            if (now - full_logged_at >= FULL_LOG_SECONDS) {
                full_logged_at = now;
                LOG_WARN("I/O thread %d's queue is full: the logic thread waits for it "
                         "(safemessenger_io_queue_full_waits_total)", t->index);
            }
        }
        wake(t);
        struct timespec pause = {0, 50000}; /* 50 us */
        nanosleep(&pause, NULL);
    }
}

/* Every item from the logic thread: held while a write it may follow is
 * not yet flushed on PostgreSQL (durability.h), else queued. */
static void push(io_thread *t, io_item *it)
{
    if (!durability_hold(t->index, it))
        push_now(t, it);
}

void io_threads_release_held(int index, void *item)
{
    if (index >= 0 && (size_t)index < n_threads)
        push_now(&threads[index], item);
    else
        item_free(item);
}

static io_thread *owner(const struct session *s)
{
    return s->io_thread >= 0 && (size_t)s->io_thread < n_threads ? &threads[s->io_thread] : NULL;
}

static char *put_str(char **at, const char *s, size_t len)
{
    char *p = *at;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    *at += len + 1;
    return p;
}

static void b_send(struct session *s, const char *type, const char *action, const char *reply_to,
                   const char *text, size_t len)
{
    io_thread *t = owner(s);
    if (!t)
        return;
    size_t lt = strlen(type), la = strlen(action), lr = reply_to ? strlen(reply_to) : 0;
    io_item *it = malloc(sizeof *it + lt + la + lr + len + 4);
    if (!it) {
        LOG_ERROR("session %llu: out of memory queueing '%s'; closing", (unsigned long long)s->id,
                  action);
        session_io_close(s, 1011, "internal error");
        return;
    }
    char *at = (char *)(it + 1);
    it->kind = IO_SEND;
    it->id = s->id;
    it->u.send.type = put_str(&at, type, lt);
    it->u.send.action = put_str(&at, action, la);
    it->u.send.reply_to = reply_to ? put_str(&at, reply_to, lr) : NULL;
    it->u.send.text = put_str(&at, text, len);
    it->u.send.len = len;
    push(t, it);
}

static void b_publish(struct session *const *to, size_t n, const char *action, const char *text,
                      size_t len)
{
    size_t count[IO_THREADS_MAX] = {0};
    for (size_t i = 0; i < n; i++)
        if (owner(to[i]))
            count[to[i]->io_thread]++;
    shared_payload *payload = shared_payload_new(text, len);
    if (!payload) {
        LOG_ERROR("out of memory publishing '%s' to %zu sessions; not sent", action, n);
        return;
    }
    size_t la = strlen(action);
    for (size_t k = 0; k < n_threads; k++) {
        if (count[k] == 0)
            continue;
        io_item *it = malloc(sizeof *it + count[k] * sizeof(sm_session_id) + la + 1);
        if (!it) {
            LOG_ERROR("out of memory publishing '%s' to %zu sessions of I/O thread %zu; not sent",
                      action, count[k], k);
            continue;
        }
        it->kind = IO_PUBLISH;
        it->id = 0;
        it->u.publish.ids = (sm_session_id *)(void *)(it + 1);
        char *at = (char *)(it->u.publish.ids + count[k]);
        it->u.publish.action = put_str(&at, action, la);
        it->u.publish.n = 0;
        for (size_t i = 0; i < n; i++)
            if (to[i]->io_thread == (int)k)
                it->u.publish.ids[it->u.publish.n++] = to[i]->id;
        it->u.publish.text = shared_payload_ref(payload);
        push(&threads[k], it);
    }
    shared_payload_unref(payload);
}

static void b_done(struct session *s)
{
    io_thread *t = owner(s);
    io_item *it = t ? malloc(sizeof *it) : NULL;
    if (!it) {
        if (t) {
            LOG_ERROR("session %llu: out of memory ending its command; closing",
                      (unsigned long long)s->id);
            session_io_close(s, 1011, "internal error");
        }
        return;
    }
    it->kind = IO_DONE;
    it->id = s->id;
    push(t, it);
}

static void b_close(struct session *s, int code, const char *reason)
{
    io_thread *t = owner(s);
    io_item *it = t ? malloc(sizeof *it) : NULL;
    if (!it) {
        if (t)
            LOG_ERROR("session %llu: out of memory closing it", (unsigned long long)s->id);
        return;
    }
    it->kind = IO_CLOSE;
    it->id = s->id;
    it->u.close.code = code;
    snprintf(it->u.close.reason, sizeof it->u.close.reason, "%s", reason ? reason : "");
    push(t, it);
}

void io_threads_call_all(void (*fn)(int index))
{
    for (size_t k = 0; k < n_threads; k++) {
        io_item *it = malloc(sizeof *it);
        if (!it) {
            LOG_ERROR("out of memory asking I/O thread %zu to act", k);
            continue;
        }
        it->kind = IO_CALL;
        it->id = 0;
        it->u.call.fn = fn;
        push(&threads[k], it);
    }
}

/* ---- the I/O threads' side of the logic queue ----------------------------- */

static void b_opened(struct session *s)
{
    logic_item *li = calloc(1, sizeof *li);
    if (!li) {
        LOG_ERROR("session %llu: out of memory announcing it; closing",
                  (unsigned long long)s->id);
        session_io_out_close(s, 1011, "internal error");
        return;
    }
    s->announced = 1;
    li->kind = LOGIC_OPENED;
    li->s = s;
    post_logic(li);
}

static void b_command(struct session *s, const char *action, const char *nonce, json_t *payload,
                      size_t bytes)
{
    size_t la = strlen(action), ln = strlen(nonce);
    logic_item *li = malloc(sizeof *li + la + ln + 2);
    if (!li) {
        json_decref(payload);
        s->io_busy = 0;
        session_io_out_error(s, nonce, action, SM_ERR_INTERNAL, "internal server error", NULL);
        return;
    }
    char *at = (char *)(li + 1);
    li->kind = LOGIC_COMMAND;
    li->s = NULL;
    li->id = s->id;
    li->payload = payload;
    li->bytes = bytes;
    li->action = put_str(&at, action, la);
    li->nonce = put_str(&at, nonce, ln);
    post_logic(li);
}

static void run_logic_item(logic_item *li)
{
    struct session *s;
    switch (li->kind) {
    case LOGIC_OPENED:
        s = li->s;
        if (session_register(s) != SM_OK) {
            /* The I/O side will say gone; until then the session is
             * unknown here and receives nothing. */
            LOG_ERROR("session %llu: out of memory registering it; closing",
                      (unsigned long long)s->id);
            s->logic_closing = 1;
            g_core.bridge->close(s, 1011, "internal error");
            break;
        }
        session_logic_opened(s);
        break;
    case LOGIC_COMMAND:
        s = session_find(li->id);
        if (s) {
            session_io_command(s, li->action, li->nonce, li->payload, li->bytes);
            li->payload = NULL;
        }
        break;
    case LOGIC_GONE:
        s = li->s;
        if (session_find(s->id) == s)
            session_destroy(s);
        else
            session_discard(s); /* registration had failed */
        break;
    }
    logic_item_free(li);
}

size_t io_threads_run_logic(void)
{
    pthread_mutex_lock(&logic_lock);
    logic_item *li = logic_head;
    logic_head = logic_tail = NULL;
    pthread_mutex_unlock(&logic_lock);
    size_t n = 0;
    while (li) {
        logic_item *next = li->next;
        run_logic_item(li);
        li = next;
        n++;
    }
    return n;
}

void io_threads_stats_get(io_threads_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k < n_threads; k++) {
        handoff_stats st;
        handoff_stats_get(threads[k].inbox, &st);
        out->queue.queued += st.queued;
        if (st.high_water > out->queue.high_water)
            out->queue.high_water = st.high_water;
        out->queue.pushed += st.pushed;
        out->queue.refused += st.refused;
        out->queue.wakes += st.wakes;
    }
    out->full_waits = atomic_load_explicit(&full_waits, memory_order_relaxed);
}

static const session_bridge threaded_bridge = {
    .opened = b_opened,
    .command = b_command,
    .send = b_send,
    .publish = b_publish,
    .done = b_done,
    .close = b_close,
};
