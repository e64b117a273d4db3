/* Fan-out under churn (issue 11, tests): publishers publish into one
 * room while steady members read everything and churning members join,
 * read a while, leave or just close, and reconnect, all at once from
 * threads of their own. Every delivery must arrive exactly once and in
 * order: a steady member gets each publisher's whole sequence, a churning
 * member one unbroken run of it per membership; nothing arrives after a
 * leave's reply; every message passes the client's envelope checks (each
 * nonce exactly one more than the last). And a slow consumer delays
 * nobody else: while one member reads nothing and is cut, the others
 * still get every event and other sessions their replies promptly.
 *
 * The server's I/O is spread over threads once server.io_threads is
 * above 1; these checks are what must not change with it.
 *
 * The worker threads record what they saw; only the main thread asserts
 * (CUnit is not thread-safe). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define ROOM "stress"
#define PUBLISHERS 3
#define MSGS_PER_PUBLISHER 500
#define STEADY 3
#define CHURNERS 4
#define CALL_MS 20000
#define RUN_SECONDS 120.0

static harness_server srv;

static int init(void)
{
    /* Limits out of the way: this suite is about delivery, not about
     * them, and the churners reconnect many times from one address. No
     * login deadline: nobody logs in, and a loaded sanitizer run may take
     * longer than its default minute. */
    return harness_start(
        &srv, "limits = { commands_per_second = 100000; command_burst = 100000; login_deadline = 0;"
              " bytes_per_second = 1000000000; bytes_burst = 1000000000;"
              " max_sessions_per_address = 1000; handshakes_per_address = 100000;"
              " room_fanout_bytes_per_second = 1000000000; room_fanout_burst = 1000000000; };\n");
}

static int fini(void)
{
    return harness_cleanup(&srv);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Calls the testcmds "topic" action; returns its status or -1000 when no
 * reply came (the reason is printed). */
static int topic_op(sm_client *c, const char *op, json_t *body)
{
    json_t *p = json_pack("{s:s, s:s}", "op", op, "topic", ROOM);
    if (!p)
        return -1000;
    if (body)
        json_object_set_new(p, "body", body);
    sm_message *r = NULL;
    int rc = sm_client_call(c, "topic", p, CALL_MS, &r);
    json_decref(p);
    if (rc != SM_CLIENT_OK || !r) {
        fprintf(stderr, "fanout: topic %s: no reply (%d), close code %d\n", op, rc,
                sm_client_close_code(c));
        return -1000;
    }
    int status = strcmp(r->type, "response") == 0
                     ? (int)json_integer_value(json_object_get(r->payload, "status"))
                     : -1001;
    sm_message_free(r);
    return status;
}

/* What one reader saw of the publishers' sequences. */
typedef struct run {
    long next[PUBLISHERS];   /* expected seq, -1 before the first */
    long got;                /* deliveries */
    long broken;             /* a seq that was not the expected one */
    long foreign;            /* an event that is not a topic_event of ROOM */
} run;

static void run_reset(run *r)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < PUBLISHERS; i++)
        r->next[i] = -1;
}

/* One delivery: the first of a publisher starts its run anywhere (a
 * churner joins mid-sequence), then each must be the next. */
static void run_note(run *r, const sm_message *m, int from_start)
{
    const json_t *body = json_object_get(m->payload, "body");
    json_int_t p = json_integer_value(json_object_get(body, "p"));
    json_int_t seq = json_integer_value(json_object_get(body, "seq"));
    if (strcmp(m->action, "topic_event") != 0 || p < 0 || p >= PUBLISHERS
        || strcmp(json_string_value(json_object_get(m->payload, "topic")) ?
                  json_string_value(json_object_get(m->payload, "topic")) : "", ROOM) != 0) {
        r->foreign++;
        return;
    }
    long expected = r->next[p] < 0 ? (from_start ? 0 : (long)seq) : r->next[p];
    if ((long)seq != expected)
        r->broken++;
    r->next[p] = (long)seq + 1;
    r->got++;
}

static atomic_int publishing_done;
static atomic_int steady_ready;

/* ---- publishers -------------------------------------------------------- */

typedef struct publisher {
    pthread_t thread;
    int id;
    int failed;         /* connect or a publish without status 0 */
} publisher;

static void *publish_all(void *arg)
{
    publisher *pub = arg;
    sm_client *c = NULL;
    if (harness_connect(&srv, &c) != SM_CLIENT_OK) {
        pub->failed = 1;
        return NULL;
    }
    for (long seq = 0; seq < MSGS_PER_PUBLISHER && !pub->failed; seq++)
        if (topic_op(c, "publish", json_pack("{s:i, s:I}", "p", pub->id, "seq",
                                             (json_int_t)seq)) != 0)
            pub->failed = 1;
    sm_client_free(c);
    return NULL;
}

/* ---- steady members ---------------------------------------------------- */

typedef struct steady {
    pthread_t thread;
    run seen;
    int failed;          /* connect, join, or a read that failed */
    int recv_status;     /* the failing read's status */
} steady;

static void *read_everything(void *arg)
{
    steady *st = arg;
    run_reset(&st->seen);
    sm_client *c = NULL;
    if (harness_connect(&srv, &c) != SM_CLIENT_OK || topic_op(c, "join", NULL) != 0) {
        st->failed = 1;
        atomic_fetch_add(&steady_ready, 1);
        sm_client_free(c);
        return NULL;
    }
    atomic_fetch_add(&steady_ready, 1);
    double deadline = mono() + RUN_SECONDS;
    while (st->seen.got < (long)PUBLISHERS * MSGS_PER_PUBLISHER && mono() < deadline) {
        sm_message *m = NULL;
        int rc = sm_client_next_event(c, 1000, &m);
        if (rc == SM_CLIENT_TIMEOUT)
            continue;
        if (rc != SM_CLIENT_OK) {
            st->failed = 1;
            st->recv_status = rc;
            break;
        }
        run_note(&st->seen, m, 1);
        sm_message_free(m);
    }
    sm_client_free(c);
    return NULL;
}

/* ---- churning members -------------------------------------------------- */

typedef struct churner {
    pthread_t thread;
    unsigned seed;
    long memberships;
    long leaves;
    long got;
    long broken;
    long foreign;
    long after_leave;    /* events after the leave's reply and a round trip */
    long failures;       /* connect, join, leave or a read that failed */
} churner;

/* Reads up to n events of the current membership (fewer when none
 * comes within the wait). 0, or -1 when the connection failed. */
static int read_some(sm_client *c, run *r, long n, int wait_ms)
{
    for (long i = 0; i < n; i++) {
        sm_message *m = NULL;
        int rc = sm_client_next_event(c, wait_ms, &m);
        if (rc == SM_CLIENT_TIMEOUT)
            return 0;
        if (rc != SM_CLIENT_OK)
            return -1;
        run_note(r, m, 0);
        sm_message_free(m);
    }
    return 0;
}

static void *churn(void *arg)
{
    churner *ch = arg;
    double deadline = mono() + RUN_SECONDS;
    while (!atomic_load(&publishing_done) && mono() < deadline) {
        sm_client *c = NULL;
        if (harness_connect(&srv, &c) != SM_CLIENT_OK) {
            ch->failures++;
            continue;
        }
        int cycles = 1 + (int)(rand_r(&ch->seed) % 3);
        for (int k = 0; k < cycles && !atomic_load(&publishing_done); k++) {
            run r;
            run_reset(&r);
            if (topic_op(c, "join", NULL) != 0) {
                ch->failures++;
                break;
            }
            ch->memberships++;
            if (read_some(c, &r, 5 + (long)(rand_r(&ch->seed) % 60), 200) != 0) {
                ch->failures++;
                break;
            }
            int leave = rand_r(&ch->seed) % 2;
            if (leave) {
                if (topic_op(c, "leave", NULL) != 0) {
                    ch->failures++;
                    break;
                }
                ch->leaves++;
                /* What was queued before the leave's reply belongs to the
                 * membership, and continues its runs... */
                if (read_some(c, &r, 1000000, 0) != 0) {
                    ch->failures++;
                    break;
                }
                /* ...and after a round trip nothing more may come. */
                sm_message *e = NULL;
                if (sm_client_call(c, "echo", NULL, CALL_MS, &e) != SM_CLIENT_OK) {
                    ch->failures++;
                    break;
                }
                sm_message_free(e);
                while (sm_client_next_event(c, 0, &e) == SM_CLIENT_OK) {
                    ch->after_leave++;
                    sm_message_free(e);
                }
            }
            ch->got += r.got;
            ch->broken += r.broken;
            ch->foreign += r.foreign;
            if (!leave)
                break; /* close while still a member */
        }
        /* Half the time a clean close, otherwise just gone (TCP closed
         * without a close frame). */
        if (rand_r(&ch->seed) % 2)
            sm_client_close(c, 1000);
        else
            sm_client_free(c);
    }
    return NULL;
}

static void fanout_under_churn_delivers_exactly_once_in_order(void)
{
    atomic_store(&publishing_done, 0);
    atomic_store(&steady_ready, 0);
    steady st[STEADY];
    churner ch[CHURNERS];
    publisher pub[PUBLISHERS];
    memset(st, 0, sizeof st);
    memset(ch, 0, sizeof ch);
    memset(pub, 0, sizeof pub);
    for (int i = 0; i < STEADY; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&st[i].thread, NULL, read_everything, &st[i]), 0);
    double t0 = mono();
    while (atomic_load(&steady_ready) < STEADY && mono() - t0 < 60.0) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    CU_ASSERT_EQUAL_FATAL(atomic_load(&steady_ready), STEADY);
    for (int i = 0; i < CHURNERS; i++) {
        ch[i].seed = 1234u + (unsigned)i;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&ch[i].thread, NULL, churn, &ch[i]), 0);
    }
    for (int i = 0; i < PUBLISHERS; i++) {
        pub[i].id = i;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&pub[i].thread, NULL, publish_all, &pub[i]), 0);
    }
    for (int i = 0; i < PUBLISHERS; i++)
        pthread_join(pub[i].thread, NULL);
    atomic_store(&publishing_done, 1);
    for (int i = 0; i < CHURNERS; i++)
        pthread_join(ch[i].thread, NULL);
    for (int i = 0; i < STEADY; i++)
        pthread_join(st[i].thread, NULL);

    for (int i = 0; i < PUBLISHERS; i++)
        CU_ASSERT_EQUAL(pub[i].failed, 0);
    for (int i = 0; i < STEADY; i++) {
        CU_ASSERT_EQUAL(st[i].failed, 0);
        CU_ASSERT_EQUAL(st[i].recv_status, 0);
        CU_ASSERT_EQUAL(st[i].seen.got, (long)PUBLISHERS * MSGS_PER_PUBLISHER);
        CU_ASSERT_EQUAL(st[i].seen.broken, 0);
        CU_ASSERT_EQUAL(st[i].seen.foreign, 0);
        for (int p = 0; p < PUBLISHERS; p++)
            CU_ASSERT_EQUAL(st[i].seen.next[p], MSGS_PER_PUBLISHER);
    }
    long memberships = 0, leaves = 0, got = 0;
    for (int i = 0; i < CHURNERS; i++) {
        CU_ASSERT_EQUAL(ch[i].failures, 0);
        CU_ASSERT_EQUAL(ch[i].broken, 0);
        CU_ASSERT_EQUAL(ch[i].foreign, 0);
        CU_ASSERT_EQUAL(ch[i].after_leave, 0);
        memberships += ch[i].memberships;
        leaves += ch[i].leaves;
        got += ch[i].got;
    }
    printf("\n    %d publishers x %d; churners: %ld memberships, %ld leaves, %ld deliveries\n",
           PUBLISHERS, MSGS_PER_PUBLISHER, memberships, leaves, got);
    /* The churn really overlapped the publishing. */
    CU_ASSERT(memberships >= CHURNERS);
    CU_ASSERT(got > 0);
}

/* ---- a slow consumer ----------------------------------------------------- */

#define SLOW_MSGS 300
#define SLOW_BODY 8000

typedef struct fast_reader {
    pthread_t thread;
    sm_client *c;
    run seen;
    int failed;
} fast_reader;

static void *read_fast(void *arg)
{
    fast_reader *f = arg;
    double deadline = mono() + RUN_SECONDS;
    while (f->seen.got < SLOW_MSGS && mono() < deadline) {
        sm_message *m = NULL;
        int rc = sm_client_next_event(f->c, 1000, &m);
        if (rc == SM_CLIENT_TIMEOUT)
            continue;
        if (rc != SM_CLIENT_OK) {
            f->failed = 1;
            break;
        }
        run_note(&f->seen, m, 1);
        sm_message_free(m);
    }
    return NULL;
}

static void slow_consumer_delays_no_other_session(void)
{
    /* The slow one's socket takes little (4 KiB receive buffer) and it
     * never reads: its queue fills and it is cut. */
    sm_client_options slow_opts;
    memset(&slow_opts, 0, sizeof slow_opts);
    slow_opts.rcvbuf = 4096;
    sm_client *slow = NULL, *pub = NULL, *bystander = NULL;
    fast_reader fast;
    memset(&fast, 0, sizeof fast);
    run_reset(&fast.seen);
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(&srv, &slow_opts, &slow), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &fast.c), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &pub), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &bystander), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(topic_op(slow, "join", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(topic_op(fast.c, "join", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&fast.thread, NULL, read_fast, &fast), 0);

    char *filler = malloc(SLOW_BODY + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(filler);
    memset(filler, 'x', SLOW_BODY);
    filler[SLOW_BODY] = '\0';
    double worst_publish = 0, worst_echo = 0;
    int publish_failed = 0, echo_failed = 0;
    for (long seq = 0; seq < SLOW_MSGS; seq++) {
        double t = mono();
        if (topic_op(pub, "publish", json_pack("{s:i, s:I, s:s}", "p", 0, "seq",
                                               (json_int_t)seq, "fill", filler)) != 0)
            publish_failed++;
        double d = mono() - t;
        if (d > worst_publish)
            worst_publish = d;
        if (seq % 10 == 0) {
            t = mono();
            sm_message *e = NULL;
            if (sm_client_call(bystander, "echo", NULL, CALL_MS, &e) != SM_CLIENT_OK)
                echo_failed++;
            sm_message_free(e);
            d = mono() - t;
            if (d > worst_echo)
                worst_echo = d;
        }
    }
    free(filler);
    pthread_join(fast.thread, NULL);
    printf("\n    slowest publish reply %.3f s, slowest bystander echo %.3f s\n", worst_publish,
           worst_echo);
    CU_ASSERT_EQUAL(publish_failed, 0);
    CU_ASSERT_EQUAL(echo_failed, 0);
    CU_ASSERT_EQUAL(fast.failed, 0);
    CU_ASSERT_EQUAL(fast.seen.got, SLOW_MSGS);
    CU_ASSERT_EQUAL(fast.seen.broken, 0);
    /* Generous for a loaded sanitizer build; a session held up behind the
     * slow one would wait for limits.send_timeout (30 s). */
    CU_ASSERT(worst_publish < 10.0);
    CU_ASSERT(worst_echo < 10.0);
    /* The slow consumer was cut: no close frame, 1006. */
    CU_ASSERT_EQUAL(harness_wait_closed(slow, 30000), 1006);
    CU_ASSERT_TRUE(harness_wait_log(&srv, "send queue over its bound", 5000));
    sm_client_free(slow);
    sm_client_free(fast.c);
    sm_client_free(pub);
    sm_client_free(bystander);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(fanout_under_churn_delivers_exactly_once_in_order),
        SM_TEST(slow_consumer_delays_no_other_session),
        SM_TEST_END,
    };
    return sm_test_run("fanout", tests, init, fini);
}
