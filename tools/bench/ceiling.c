/* safemessenger-ceiling: how fast, and how soon, this machine's loopback
 * TCP alone can fan one message out to M connections, with the same
 * number of writing threads as the server's I/O threads and one reading
 * thread like safemessenger-bench's. The writers send a prepared frame
 * (no sealing, no WebSocket framing, no event library); the reader only
 * takes frames off its sockets. What the server's fan-out reaches is then
 * read against this ceiling measured in the same session, on the same
 * vCPUs (docs/BENCHMARKS.md (h)): it separates the server's own cost from
 * what the kernel and the machine cost any server.
 *
 * One process writes, a forked child reads; they talk over a SOCK_SEQPACKET
 * pair: the parent starts a phase, the child reports each message every
 * member has received (the parent keeps at most --window messages in
 * flight) and, at the end, its latency histogram (CLOCK_MONOTONIC is
 * shared by both processes). */
#define _GNU_SOURCE /* accept4 */
#include "bench.h"
#include "write_all.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CEIL_MAX_MEMBERS 8000   /* in all rooms; each process holds one descriptor each */
#define CEIL_MAX_WRITERS 64
#define CEIL_MAX_IN_FLIGHT 512  /* rooms x window */
#define CEIL_FRAME_MIN 16       /* message id, magic, send time */
#define CEIL_FRAME_MAX 4096
#define CEIL_MAGIC 0x534d4345u  /* "SMCE" */
#define CEIL_RING 1024u         /* delivery counts per message, > in flight */
#define CEIL_DRAIN_NS 10000000000ull /* in-flight messages after a phase */

volatile int bench_interrupted;

typedef struct {
    unsigned rooms, members, writers, window; /* members and window per room */
    size_t frame_bytes;
    double duration_s, warmup_s, rate;
    int half; /* a second phase at half the first's messages/s */
} ceil_opts;

/* ---- control messages between the two processes -------------------------- */

enum { CTL_START = 1, CTL_DONE, CTL_REPORT, CTL_QUIT };

typedef struct {
    uint32_t kind;
    uint32_t id;          /* CTL_DONE: the message every member received */
    uint64_t from_ns;     /* CTL_START: frames sent in [from, to) are measured */
    uint64_t to_ns;
} ctl_msg;

typedef struct {
    uint32_t kind; /* CTL_REPORT */
    uint32_t failed;
    uint64_t deliveries;  /* measured: sent within the window */
    uint64_t samples, p50_ns, p99_ns, max_ns;
    double mean_ns;
    double cpu_s;         /* the reader's user + system time during the phase */
} ctl_report;

static int ctl_send(int fd, const void *m, size_t len)
{
    for (;;) {
        ssize_t n = send(fd, m, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
           + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- the reader (child process) ------------------------------------------- */

typedef struct {
    int fd;
    size_t have;           /* bytes of a frame split across reads */
    uint8_t *part;         /* frame_bytes of room for it */
} reader_conn;

typedef struct {
    const ceil_opts *o;
    int ctl;
    uint64_t from_ns, to_ns;
    uint32_t counts[CEIL_RING];
    bench_hist hist;
    uint64_t deliveries;
    /* The reader's CPU over the measured window, as the writers' is:
     * taken at the first wake-up at or after each end of it. */
    double cpu_from, cpu_to;
    int cpu_state; /* 0: before the window, 1: in it, 2: after it */
    int failed;
} reader;

static void reader_clock(reader *r, uint64_t now)
{
    if (r->cpu_state == 0 && now >= r->from_ns) {
        r->cpu_from = cpu_seconds();
        r->cpu_state = 1;
    }
    if (r->cpu_state == 1 && now >= r->to_ns) {
        r->cpu_to = cpu_seconds();
        r->cpu_state = 2;
    }
}

/* Milliseconds until the next end of the window the CPU is taken at; -1
 * once both are past. */
static int reader_timeout(const reader *r, uint64_t now)
{
    if (r->cpu_state == 2)
        return -1;
    uint64_t at = r->cpu_state == 0 ? r->from_ns : r->to_ns;
    return at > now ? (int)((at - now + 999999) / 1000000) : 0;
}

static void reader_frame(reader *r, const uint8_t *f, uint64_t now)
{
    if (get32(f + 4) != CEIL_MAGIC) {
        r->failed = 1;
        return;
    }
    uint32_t id = get32(f);
    uint64_t sent = get64(f + 8);
    if (sent >= r->from_ns && sent < r->to_ns) {
        hist_add(&r->hist, now > sent ? now - sent : 0);
        r->deliveries++;
    }
    if (++r->counts[id % CEIL_RING] == r->o->members) {
        r->counts[id % CEIL_RING] = 0;
        ctl_msg done = {.kind = CTL_DONE, .id = id};
        if (ctl_send(r->ctl, &done, sizeof done) != 0)
            r->failed = 1;
    }
}

/* One read per ready socket, as the bench does; frames may be split. */
static int reader_read(reader *r, reader_conn *c, uint8_t *buf, size_t cap)
{
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    uint64_t now = bench_now_ns();
    size_t fb = r->o->frame_bytes, off = 0, len = (size_t)n;
    if (c->have) {
        size_t take = fb - c->have < len ? fb - c->have : len;
        memcpy(c->part + c->have, buf, take);
        c->have += take;
        off = take;
        if (c->have == fb) {
            reader_frame(r, c->part, now);
            c->have = 0;
        }
    }
    for (; len - off >= fb; off += fb)
        reader_frame(r, buf + off, now);
    if (off < len) {
        memcpy(c->part, buf + off, len - off);
        c->have = len - off;
    }
    return 0;
}

static int reader_control(reader *r)
{
    ctl_msg m;
    ssize_t n = recv(r->ctl, &m, sizeof m, 0);
    if (n != (ssize_t)sizeof m)
        return -1; /* the parent is gone: stop */
    if (m.kind == CTL_START) {
        r->from_ns = m.from_ns;
        r->to_ns = m.to_ns;
        hist_reset(&r->hist);
        r->deliveries = 0;
        r->cpu_state = 0;
        return 0;
    }
    if (m.kind == CTL_REPORT) {
        ctl_report rep = {
            .kind = CTL_REPORT,
            .failed = (uint32_t)r->failed,
            .deliveries = r->deliveries,
            .samples = r->hist.n,
            .p50_ns = hist_percentile(&r->hist, 50),
            .p99_ns = hist_percentile(&r->hist, 99),
            .max_ns = r->hist.max,
            .mean_ns = hist_mean(&r->hist),
            .cpu_s = r->cpu_state == 2 ? r->cpu_to - r->cpu_from : 0,
        };
        return ctl_send(r->ctl, &rep, sizeof rep);
    }
    return -1; /* CTL_QUIT */
}

static int connect_member(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0
        || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int reader_main(const ceil_opts *o, int port, int ctl)
{
    int rc = 1, ep = -1;
    reader *r = calloc(1, sizeof *r);
    unsigned total = o->rooms * o->members;
    reader_conn *conns = calloc(total, sizeof *conns);
    uint8_t *parts = malloc(total * o->frame_bytes);
    uint8_t *buf = malloc(65536);
    if (!r || !conns || !parts || !buf)
        goto out;
    r->o = o;
    r->ctl = ctl;
    for (unsigned i = 0; i < total; i++) {
        conns[i].fd = -1;
        conns[i].part = parts + (size_t)i * o->frame_bytes;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        goto out;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &ev) != 0)
        goto out;
    for (unsigned i = 0; i < total; i++) {
        conns[i].fd = connect_member(port);
        if (conns[i].fd < 0) {
            perror("safemessenger-ceiling: connect");
            goto out;
        }
        ev.data.ptr = &conns[i];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0)
            goto out;
    }
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, reader_timeout(r, bench_now_ns()));
        reader_clock(r, bench_now_ns());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        for (int i = 0; i < n; i++) {
            reader_conn *c = evs[i].data.ptr;
            if (!c) {
                if (reader_control(r) != 0) {
                    rc = r->failed;
                    goto out;
                }
            } else if (reader_read(r, c, buf, 65536) != 0) {
                fprintf(stderr, "safemessenger-ceiling: a member's connection ended\n");
                goto out;
            }
        }
    }
out:
    if (ep >= 0)
        close(ep);
    if (conns)
        for (unsigned i = 0; i < total; i++)
            if (conns[i].fd >= 0)
                close(conns[i].fd);
    free(conns);
    free(parts);
    free(buf);
    free(r);
    return rc;
}

/* ---- the writers (parent process) ------------------------------------------ */

typedef struct {
    uint32_t id;
    unsigned room;
    uint64_t sent_ns;
} queued;

/* A writer's connections are in room order: room g's are
 * fds[room_first[g] .. room_first[g + 1]). */
typedef struct writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queued q[CEIL_MAX_IN_FLIGHT];
    unsigned head, len;
    int stop, failed;
    int *fds;
    unsigned nfds;
    unsigned *room_first;
    size_t frame_bytes;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    uint8_t frame[CEIL_FRAME_MAX] = {0};
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->len && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->len)
            break;
        queued m = w->q[w->head];
        w->head = (w->head + 1) % CEIL_MAX_IN_FLIGHT;
        w->len--;
        pthread_mutex_unlock(&w->mu);
        put32(frame, m.id);
        put32(frame + 4, CEIL_MAGIC);
        put64(frame + 8, m.sent_ns);
        /* Blocking sockets: a member that cannot take a frame holds its
         * writer up, as a full send queue would; at the loads compared
         * that does not happen (write_failed in the report says if it
         * failed). */
        int failed = 0;
        for (unsigned i = w->room_first[m.room]; i < w->room_first[m.room + 1] && !failed; i++)
            failed = tool_write_all(w->fds[i], frame, w->frame_bytes) != 0;
        pthread_mutex_lock(&w->mu);
        if (failed)
            w->failed = 1;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* One wake-up per writer per message, as the server's logic thread hands
 * each I/O thread one batch per publish. */
static void writers_post(writer *ws, unsigned n, uint32_t id, unsigned room, uint64_t sent_ns)
{
    for (unsigned i = 0; i < n; i++) {
        writer *w = &ws[i];
        pthread_mutex_lock(&w->mu);
        /* The windows bound messages in flight, so the queue has room. */
        w->q[(w->head + w->len) % CEIL_MAX_IN_FLIGHT] = (queued){id, room, sent_ns};
        w->len++;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

typedef struct {
    double rate, msgs_per_s, deliveries_per_s, writer_cpu_percent, reader_cpu_percent;
    double rate_shortfall;
    uint64_t messages, undelivered;
    ctl_report rep;
} phase_result;

/* In flight per room; a completed message's room by its id. */
typedef struct {
    unsigned total;
    unsigned in_room[CEIL_MAX_IN_FLIGHT];
    unsigned room_of[CEIL_RING];
} flight;

/* Waits for CTL_DONE messages until `until_ns`, or only for what is
 * already there with until_ns 0, and takes them off `f`. Returns how many
 * arrived, -1 on error. */
static int take_done(int ctl, uint64_t until_ns, flight *f)
{
    int got = 0;
    for (;;) {
        uint64_t now = bench_now_ns();
        int ms = until_ns > now ? (int)((until_ns - now + 999999) / 1000000) : 0;
        struct pollfd p = {.fd = ctl, .events = POLLIN};
        int n = poll(&p, 1, got ? 0 : ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return got;
        ctl_msg m;
        if (recv(ctl, &m, sizeof m, 0) != (ssize_t)sizeof m || m.kind != CTL_DONE)
            return -1;
        unsigned room = f->room_of[m.id % CEIL_RING];
        if (f->total == 0 || f->in_room[room] == 0)
            return -1;
        f->in_room[room]--;
        f->total--;
        got++;
    }
}

/* The next room, in turn, that has room in its window; -1 if none. */
static int next_room(const ceil_opts *o, const flight *f, unsigned *turn)
{
    for (unsigned k = 0; k < o->rooms; k++) {
        unsigned g = (*turn + k) % o->rooms;
        if (f->in_room[g] < o->window) {
            *turn = (g + 1) % o->rooms;
            return (int)g;
        }
    }
    return -1;
}

static int run_phase(const ceil_opts *o, writer *ws, int ctl, double rate, uint32_t *next_id,
                     phase_result *res)
{
    memset(res, 0, sizeof *res);
    res->rate = rate;
    flight *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    int rc = -1;
    uint64_t start = bench_now_ns();
    uint64_t from = start + (uint64_t)(o->warmup_s * 1e9);
    uint64_t to = from + (uint64_t)(o->duration_s * 1e9);
    ctl_msg m = {.kind = CTL_START, .from_ns = from, .to_ns = to};
    if (ctl_send(ctl, &m, sizeof m) != 0)
        goto out;
    double cpu0 = 0;
    int cpu_taken = 0;
    unsigned turn = 0;
    uint64_t sent = 0, measured = 0, due = start;
    double gap_ns = rate > 0 ? 1e9 / rate : 0;
    double due_ns = (double)start;
    double backlog_ns = gap_ns * (rate * 0.05 > 1 ? rate * 0.05 : 1);
    for (;;) {
        uint64_t now = bench_now_ns();
        if (!cpu_taken && now >= from) {
            cpu0 = cpu_seconds();
            cpu_taken = 1;
        }
        if (now >= to || bench_interrupted)
            break;
        int room = rate <= 0 || now >= due ? next_room(o, f, &turn) : -1;
        if (room >= 0) {
            uint32_t id = (*next_id)++;
            f->room_of[id % CEIL_RING] = (unsigned)room;
            f->in_room[room]++;
            f->total++;
            writers_post(ws, o->writers, id, (unsigned)room, now);
            sent++;
            if (now >= from)
                measured++;
            if (rate > 0) {
                /* As the bench paces: at most 50 ms (or one message) of
                 * backlog; a stall shows as rate_shortfall, not as a
                 * burst that would distort the latency after it. */
                due_ns += gap_ns;
                if ((double)now - due_ns > backlog_ns)
                    due_ns = (double)now - backlog_ns;
                due = (uint64_t)due_ns;
            }
            if (take_done(ctl, 0, f) < 0)
                goto out;
            continue;
        }
        /* Every window full, or not yet due: wait for a completion, the
         * next due time or the end. */
        uint64_t until = to;
        if (rate > 0 && now < due && due < until)
            until = due;
        if (take_done(ctl, until, f) < 0)
            goto out;
    }
    if (!cpu_taken)
        cpu0 = cpu_seconds();
    double cpu1 = cpu_seconds();
    uint64_t drain_until = bench_now_ns() + CEIL_DRAIN_NS;
    while (f->total > 0 && bench_now_ns() < drain_until)
        if (take_done(ctl, drain_until, f) < 0)
            goto out;
    m = (ctl_msg){.kind = CTL_REPORT};
    if (ctl_send(ctl, &m, sizeof m) != 0)
        goto out;
    for (;;) {
        /* Completions still on their way come before the report. */
        ctl_report rep;
        ssize_t n = recv(ctl, &rep, sizeof rep, 0);
        if (n == (ssize_t)sizeof(ctl_msg) && rep.kind == CTL_DONE)
            continue;
        if (n != (ssize_t)sizeof rep || rep.kind != CTL_REPORT)
            goto out;
        res->rep = rep;
        break;
    }
    res->messages = measured;
    res->undelivered = f->total;
    res->msgs_per_s = (double)measured / o->duration_s;
    res->deliveries_per_s = (double)res->rep.deliveries / o->duration_s;
    res->writer_cpu_percent = 100.0 * (cpu1 - cpu0) / o->duration_s;
    res->reader_cpu_percent = 100.0 * res->rep.cpu_s / o->duration_s;
    if (rate > 0)
        res->rate_shortfall = res->msgs_per_s < rate ? 1.0 - res->msgs_per_s / rate : 0.0;
    rc = 0;
out:
    free(f);
    return rc;
}

static json_t *phase_json(const char *name, const phase_result *p)
{
    double ms = 1e6;
    return json_pack("{s:s, s:f, s:I, s:f, s:f, s:f, s:I, s:b, "
                     "s:{s:I, s:f, s:f, s:f, s:f}, s:{s:f, s:f}}",
                     "name", name, "target_rate", p->rate, "messages",
                     (json_int_t)p->messages, "messages_per_s", p->msgs_per_s,
                     "deliveries_per_s", p->deliveries_per_s, "rate_shortfall",
                     p->rate_shortfall, "undelivered", (json_int_t)p->undelivered,
                     "write_failed", (int)p->rep.failed, "latency_ms", "samples",
                     (json_int_t)p->rep.samples, "p50", (double)p->rep.p50_ns / ms, "p99",
                     (double)p->rep.p99_ns / ms, "max", (double)p->rep.max_ns / ms, "mean",
                     p->rep.mean_ns / ms, "cpu_percent", "writers", p->writer_cpu_percent,
                     "reader", p->reader_cpu_percent);
}

static int accept_members(int lfd, unsigned total, int *fds, pid_t child)
{
    int one = 1;
    for (unsigned i = 0; i < total; i++) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int n = poll(&p, 1, 30000);
        if (n <= 0) {
            fprintf(stderr, "safemessenger-ceiling: members did not connect in 30 s\n");
            return -1;
        }
        fds[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fds[i] < 0 || setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            return -1;
        if (waitpid(child, NULL, WNOHANG) == child) {
            fprintf(stderr, "safemessenger-ceiling: the reader exited during set-up\n");
            return -1;
        }
    }
    return 0;
}

static int writer_side(const ceil_opts *o, int lfd, int ctl, pid_t child)
{
    int rc = 1;
    unsigned started = 0;
    unsigned total = o->rooms * o->members;
    int *fds = malloc(total * sizeof *fds);
    writer *ws = calloc(o->writers, sizeof *ws);
    json_t *report = NULL, *phases = NULL;
    if (!fds || !ws)
        goto out;
    for (unsigned i = 0; i < total; i++)
        fds[i] = -1;
    if (accept_members(lfd, total, fds, child) != 0)
        goto out;
    /* Connections dealt in turn, as the server's acceptor deals them; room
     * g is connections g * members .. (g + 1) * members - 1, so each room
     * is spread over the writers. */
    for (unsigned t = 0; t < o->writers; t++) {
        writer *w = &ws[t];
        w->frame_bytes = o->frame_bytes;
        w->fds = malloc((total / o->writers + 1) * sizeof *w->fds);
        w->room_first = malloc((o->rooms + 1) * sizeof *w->room_first);
        if (!w->fds || !w->room_first)
            goto out;
        for (unsigned g = 0; g < o->rooms; g++) {
            w->room_first[g] = w->nfds;
            for (unsigned i = g * o->members; i < (g + 1) * o->members; i++)
                if (i % o->writers == t)
                    w->fds[w->nfds++] = fds[i];
        }
        w->room_first[o->rooms] = w->nfds;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
            goto out;
        }
        started++;
    }
    uint32_t next_id = 0;
    phase_result first, second;
    if (run_phase(o, ws, ctl, o->rate, &next_id, &first) != 0)
        goto out;
    phases = json_array();
    if (!phases || json_array_append_new(phases, phase_json(o->rate > 0 ? "rate" : "max", &first)))
        goto out;
    if (o->half) {
        if (run_phase(o, ws, ctl, first.msgs_per_s / 2, &next_id, &second) != 0
            || json_array_append_new(phases, phase_json("half", &second)) != 0)
            goto out;
    }
    int failed = 0;
    for (unsigned t = 0; t < o->writers; t++) {
        pthread_mutex_lock(&ws[t].mu);
        failed |= ws[t].failed;
        pthread_mutex_unlock(&ws[t].mu);
    }
    report = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:O}", "tool",
                       "safemessenger-ceiling", "rooms", (json_int_t)o->rooms, "members",
                       (json_int_t)o->members, "writers",
                       (json_int_t)o->writers, "frame_bytes", (json_int_t)o->frame_bytes,
                       "window", (json_int_t)o->window, "duration_s", o->duration_s,
                       "warmup_s", o->warmup_s, "phases", phases);
    if (!report || json_dumpf(report, stdout, JSON_INDENT(2)) != 0)
        goto out;
    putchar('\n');
    rc = failed || first.rep.failed || (o->half && second.rep.failed) || bench_interrupted;
out:
    if (ctl >= 0) {
        ctl_msg q = {.kind = CTL_QUIT};
        (void)ctl_send(ctl, &q, sizeof q);
    }
    for (unsigned t = 0; t < started; t++) {
        pthread_mutex_lock(&ws[t].mu);
        ws[t].stop = 1;
        pthread_cond_signal(&ws[t].cv);
        pthread_mutex_unlock(&ws[t].mu);
    }
    /* Closing the members' sockets ends a writer stuck in a full send. */
    if (fds)
        for (unsigned i = 0; i < total; i++)
            if (fds[i] >= 0)
                shutdown(fds[i], SHUT_RDWR);
    for (unsigned t = 0; t < started; t++) {
        pthread_join(ws[t].thread, NULL);
        pthread_mutex_destroy(&ws[t].mu);
        pthread_cond_destroy(&ws[t].cv);
    }
    if (ws)
        for (unsigned t = 0; t < o->writers; t++) {
            free(ws[t].fds);
            free(ws[t].room_first);
        }
    if (fds)
        for (unsigned i = 0; i < total; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    free(fds);
    free(ws);
    json_decref(phases);
    json_decref(report);
    return rc;
}

/* ---- options ---------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: safemessenger-ceiling [options]\n"
        "Fans a prepared frame out over loopback TCP from W writing threads to M\n"
        "connections read by one thread of a second process: what the machine allows a\n"
        "fan-out before any server code (docs/BENCHMARKS.md). JSON report on stdout.\n"
        "  --rooms R          rooms; a message goes to one room's members, the rooms in\n"
        "                     turn (default 1)\n"
        "  --members M        connections per room (default 1000, at most %d in all)\n"
        "  --writers W        writing threads, as server.io_threads (default 2, at most %d)\n"
        "  --frame-bytes B    bytes per delivery (default 315, a 64-byte message's sealed\n"
        "                     envelope in its frame; %d..%d)\n"
        "  --window K         messages in flight per room (default 4; rooms x K at most %d)\n"
        "  --rate X           messages/s (default 0 = as fast as the window allows)\n"
        "  --half             then a second phase at half the first's messages/s\n"
        "  --duration S       measured seconds per phase (default 8, at most 300)\n"
        "  --warmup S         load before measuring, per phase (default 1)\n",
        CEIL_MAX_MEMBERS, CEIL_MAX_WRITERS, CEIL_FRAME_MIN, CEIL_FRAME_MAX, CEIL_MAX_IN_FLIGHT);
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

/* The backstop for "stops by itself": a reader that stopped reading would
 * leave a writer blocked in send and the parent waiting for its report. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "safemessenger-ceiling: hard time limit reached, exiting\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

int main(int argc, char **argv)
{
    ceil_opts o = {.rooms = 1, .members = 1000, .writers = 2, .window = 4, .frame_bytes = 315,
                   .duration_s = 8, .warmup_s = 1};
    static const struct option longopts[] = {
        {"rooms", required_argument, NULL, 'g'}, {"members", required_argument, NULL, 'm'}, {"writers", required_argument, NULL, 'w'},
        {"frame-bytes", required_argument, NULL, 'b'}, {"window", required_argument, NULL, 'k'},
        {"rate", required_argument, NULL, 'r'}, {"half", no_argument, NULL, 'H'},
        {"duration", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        double v = 0;
        int bad = 0;
        switch (opt) {
        case 'g': bad = parse_num(optarg, 1, CEIL_MAX_IN_FLIGHT, &v); o.rooms = (unsigned)v; break;
        case 'm': bad = parse_num(optarg, 1, CEIL_MAX_MEMBERS, &v); o.members = (unsigned)v; break;
        case 'w': bad = parse_num(optarg, 1, CEIL_MAX_WRITERS, &v); o.writers = (unsigned)v; break;
        case 'b':
            bad = parse_num(optarg, CEIL_FRAME_MIN, CEIL_FRAME_MAX, &v);
            o.frame_bytes = (size_t)v;
            break;
        case 'k': bad = parse_num(optarg, 1, CEIL_MAX_IN_FLIGHT, &v); o.window = (unsigned)v; break;
        case 'r': bad = parse_num(optarg, 0, 1e6, &o.rate); break;
        case 'H': o.half = 1; break;
        case 'd': bad = parse_num(optarg, 0.1, 300, &o.duration_s); break;
        case 'u': bad = parse_num(optarg, 0, 60, &o.warmup_s); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad || (opt != 'r' && opt != 'H' && opt != 'd' && opt != 'u' && v != (double)(long)v)) {
            fprintf(stderr, "safemessenger-ceiling: bad value: %s\n", optarg ? optarg : "");
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "safemessenger-ceiling: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    if ((unsigned long)o.rooms * o.members > CEIL_MAX_MEMBERS
        || (unsigned long)o.rooms * o.window > CEIL_MAX_IN_FLIGHT) {
        fprintf(stderr, "safemessenger-ceiling: at most %d members in all and %d messages "
                        "in flight (rooms x window)\n", CEIL_MAX_MEMBERS, CEIL_MAX_IN_FLIGHT);
        return 2;
    }
    if (o.writers > o.members) {
        fprintf(stderr, "safemessenger-ceiling: more writers than members in a room\n");
        return 2;
    }
    struct rlimit rl;
    rlim_t need = (rlim_t)o.rooms * o.members + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_cur < need || setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "safemessenger-ceiling: %u members need more open files\n",
                    o.rooms * o.members);
            return 2;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    /* Set-up (30 s to accept), then each phase's warm-up, window and drain. */
    unsigned limit = (unsigned)(60 + (o.half ? 2 : 1)
                                         * (o.warmup_s + o.duration_s + CEIL_DRAIN_NS / 1e9));

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int pair[2];
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0
        || listen(lfd, (int)(o.rooms * o.members)) != 0
        || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0
        || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        perror("safemessenger-ceiling: set-up");
        return 1;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        perror("safemessenger-ceiling: fork");
        return 1;
    }
    if (child == 0) {
        alarm(limit); /* a child does not inherit its parent's */
        close(lfd);
        close(pair[0]);
        _exit(reader_main(&o, ntohs(a.sin_port), pair[1]));
    }
    alarm(limit);
    close(pair[1]);
    int rc = writer_side(&o, lfd, pair[0], child);
    close(pair[0]);
    close(lfd);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "safemessenger-ceiling: the reader failed\n");
        rc = 1;
    }
    return rc;
}
