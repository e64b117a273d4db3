/* core/peers: sessions per address, the key_exchange budget per address
 * per minute, one refusal log line per address per minute, and an entry
 * forgotten once its address is quiet, within a bounded table. */
#include "peers.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

static void sessions_per_address_refuse_beyond_the_limit(void)
{
    peers *p = peers_new(16, 2, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t logged = 99;
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 0, &logged), 1);
    CU_ASSERT_EQUAL(logged, 0);
    CU_ASSERT_EQUAL(peers_session_opened(p, "10.0.0.1", 0), 0);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 0, &logged), 1);
    CU_ASSERT_EQUAL(peers_session_opened(p, "10.0.0.1", 0), 0);
    CU_ASSERT_EQUAL(peers_sessions(p, "10.0.0.1"), 2);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 1, &logged), 0);
    /* Another address is not affected. */
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.2", 1, &logged), 1);
    peers_session_closed(p, "10.0.0.1", 2);
    CU_ASSERT_EQUAL(peers_sessions(p, "10.0.0.1"), 1);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 2, &logged), 1);
    peers_free(p);
}

/* A reload: the new bounds hold against the counts already taken. */
static void new_limits_apply_to_counts_already_taken(void)
{
    peers *p = peers_new(16, 3, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t logged;
    double retry;
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL(peers_session_opened(p, "10.0.0.1", 0), 0);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 0, &logged), 1);
    peers_set_limits(p, 16, 2, 6);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 0, &logged), 0);
    /* The handshake budget is cut to the new burst at once. */
    int taken = 0;
    for (int i = 0; i < 10; i++)
        taken += peers_handshake_take(p, "10.0.0.1", 1, &retry, &logged);
    CU_ASSERT_EQUAL(taken, 6);
    peers_set_limits(p, 16, 5, 6);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 1, &logged), 1);
    /* Bad values are ignored. */
    peers_set_limits(p, 0, 0, 0);
    CU_ASSERT_EQUAL(peers_admit(p, "10.0.0.1", 1, &logged), 1);
    peers_free(p);
}

static void refusals_are_logged_once_per_address_per_minute(void)
{
    peers *p = peers_new(16, 1, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(peers_session_opened(p, "a", 0), 0);
    CU_ASSERT_EQUAL(peers_session_opened(p, "b", 0), 0);
    size_t logged = 0;
    CU_ASSERT_EQUAL(peers_admit(p, "a", 1, &logged), 0);
    CU_ASSERT_EQUAL(logged, 1); /* the first refusal is logged at once */
    for (int i = 0; i < 300; i++) {
        CU_ASSERT_EQUAL(peers_admit(p, "a", 2 + i * 0.1, &logged), 0);
        CU_ASSERT_EQUAL(logged, 0);
    }
    /* Each address has its own minute. */
    CU_ASSERT_EQUAL(peers_admit(p, "b", 5, &logged), 0);
    CU_ASSERT_EQUAL(logged, 1);
    /* A minute after the line, the next refusal reports all since. */
    CU_ASSERT_EQUAL(peers_admit(p, "a", 61, &logged), 0);
    CU_ASSERT_EQUAL(logged, 301);
    CU_ASSERT_EQUAL(peers_admit(p, "a", 62, &logged), 0);
    CU_ASSERT_EQUAL(logged, 0);
    peers_free(p);
}

static void handshake_budget_refills_over_a_minute(void)
{
    peers *p = peers_new(16, 64, 6); /* 6 per minute: one each 10 s */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(peers_session_opened(p, "a", 0), 0);
    double retry = -1;
    size_t logged = 0;
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(peers_handshake_take(p, "a", 0, &retry, &logged), 1);
    CU_ASSERT_EQUAL(peers_handshake_take(p, "a", 0, &retry, &logged), 0);
    CU_ASSERT_DOUBLE_EQUAL(retry, 10.0, 1e-9);
    CU_ASSERT_EQUAL(logged, 1);
    CU_ASSERT_EQUAL(peers_handshake_take(p, "a", 4, &retry, &logged), 0);
    CU_ASSERT_DOUBLE_EQUAL(retry, 6.0, 1e-9);
    CU_ASSERT_EQUAL(logged, 0);
    /* Another address has its own budget. */
    CU_ASSERT_EQUAL(peers_handshake_take(p, "b", 4, &retry, &logged), 1);
    /* Refused attempts cost nothing: one attempt is back after 10 s. */
    CU_ASSERT_EQUAL(peers_handshake_take(p, "a", 10, &retry, &logged), 1);
    CU_ASSERT_EQUAL(peers_handshake_take(p, "a", 10, &retry, &logged), 0);
    peers_free(p);
}

static void quiet_address_is_forgotten_and_busy_one_kept(void)
{
    peers *p = peers_new(16, 64, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* No events: forgotten as its last session closes. */
    CU_ASSERT_EQUAL(peers_session_opened(p, "a", 0), 0);
    peers_session_closed(p, "a", 1);
    CU_ASSERT_EQUAL(peers_count(p), 0);
    /* A handshake within the minute keeps it until its budget is whole. */
    double retry;
    size_t logged;
    CU_ASSERT_EQUAL(peers_session_opened(p, "b", 0), 0);
    CU_ASSERT_EQUAL(peers_handshake_take(p, "b", 0, &retry, &logged), 1);
    peers_session_closed(p, "b", 0.5);
    CU_ASSERT_EQUAL(peers_count(p), 1);
    CU_ASSERT_EQUAL(peers_sweep(p, 0.9), 0);
    /* An address with a session stays whatever the time. */
    CU_ASSERT_EQUAL(peers_session_opened(p, "c", 0), 0);
    CU_ASSERT_EQUAL(peers_sweep(p, 1.0), 1); /* b: one attempt paid back in 1 s */
    CU_ASSERT_EQUAL(peers_sweep(p, 1000), 0);
    CU_ASSERT_EQUAL(peers_count(p), 1);
    CU_ASSERT_EQUAL(peers_sessions(p, "c"), 1);
    peers_free(p);
}

static void table_stays_bounded_by_forgetting_addresses_without_sessions(void)
{
    peers *p = peers_new(4, 64, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    char addr[32];
    double retry;
    size_t logged;
    /* Four addresses that left recent events behind fill the table. */
    for (int i = 0; i < 4; i++) {
        snprintf(addr, sizeof addr, "10.0.0.%d", i);
        CU_ASSERT_EQUAL(peers_session_opened(p, addr, 0), 0);
        CU_ASSERT_EQUAL(peers_handshake_take(p, addr, 0, &retry, &logged), 1);
        if (i > 0)
            peers_session_closed(p, addr, 0);
    }
    CU_ASSERT_EQUAL(peers_count(p), 4);
    /* A fifth finds room: addresses without sessions make way. */
    CU_ASSERT_EQUAL(peers_session_opened(p, "10.0.1.1", 0), 0);
    CU_ASSERT(peers_count(p) <= 4);
    CU_ASSERT_EQUAL(peers_sessions(p, "10.0.0.0"), 1);
    CU_ASSERT_EQUAL(peers_sessions(p, "10.0.1.1"), 1);
    /* With every entry holding sessions, a new address is refused. */
    for (int i = 0; i < 8; i++) {
        snprintf(addr, sizeof addr, "10.0.2.%d", i);
        peers_session_opened(p, addr, 0);
    }
    CU_ASSERT_EQUAL(peers_count(p), 4);
    CU_ASSERT_EQUAL(peers_session_opened(p, "10.0.3.1", 0), -1);
    peers_free(p);
}

/* One connection from each address won the cheap early answer before
 * another thread's was counted: the count is what refuses the second. */
static void opened_refuses_at_the_limit_even_after_admit_said_yes(void)
{
    peers *p = peers_new(16, 1, 60);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t logged;
    CU_ASSERT_EQUAL(peers_admit(p, "a", 0, &logged), 1);
    CU_ASSERT_EQUAL(peers_admit(p, "a", 0, &logged), 1);
    CU_ASSERT_EQUAL(peers_session_opened(p, "a", 0), 0);
    CU_ASSERT_EQUAL(peers_session_opened(p, "a", 0), 1);
    CU_ASSERT_EQUAL(peers_sessions(p, "a"), 1);
    /* The refusal is in the address's next log count. */
    CU_ASSERT_EQUAL(peers_admit(p, "a", 1, &logged), 0);
    CU_ASSERT_EQUAL(logged, 2);
    peers_free(p);
}

/* ---- several threads: every I/O thread admits, counts and takes
 * handshakes while the logic thread sweeps and reloads ---------------- */

#define HAMMER_THREADS 4
#define HAMMER_ADDRESSES 6
#define HAMMER_ROUNDS 3000
#define HAMMER_CAP 3
#define HAMMER_HANDSHAKES 50
#define HAMMER_HELD 4

typedef struct hammer {
    peers *p;
    atomic_int live[HAMMER_ADDRESSES];     /* sessions counted and not yet closed */
    atomic_int most_live[HAMMER_ADDRESSES];
    atomic_int handshakes[HAMMER_ADDRESSES];
    atomic_int log_lines[HAMMER_ADDRESSES];
    atomic_int opened_errors;
    atomic_int stop;
    atomic_int sweeps;
    atomic_int over_bound;                 /* the sweeper saw more entries than the bound */
} hammer;

typedef struct hammer_thread {
    hammer *h;
    int index;
} hammer_thread;

static void hammer_address(int i, char *out, size_t len) { snprintf(out, len, "10.0.0.%d", i); }

static void hammer_close(hammer *h, int i)
{
    char addr[32];
    hammer_address(i, addr, sizeof addr);
    atomic_fetch_sub(&h->live[i], 1);
    peers_session_closed(h->p, addr, 0);
}

/* The time stands still at 0: no handshake is paid back, so exactly
 * HAMMER_HANDSHAKES attempts per address can succeed, and an address's
 * refusals make one log line at most (its minute never ends). Each thread
 * stays on one address for 8 rounds and holds up to HAMMER_HELD sessions,
 * closing its oldest to open another: alone it reaches the cap of every
 * address, and the others reach for the same ones meanwhile. */
static void *hammer_io_thread(void *arg)
{
    hammer_thread *t = arg;
    hammer *h = t->h;
    int held[HAMMER_HELD]; /* a ring, oldest first */
    size_t n_held = 0, oldest = 0;
    for (int r = 0; r < HAMMER_ROUNDS; r++) {
        int i = (t->index + r / 8) % HAMMER_ADDRESSES;
        char addr[32];
        hammer_address(i, addr, sizeof addr);
        size_t logged = 0;
        double retry = 0;
        if (peers_handshake_take(h->p, addr, 0, &retry, &logged))
            atomic_fetch_add(&h->handshakes[i], 1);
        if (logged)
            atomic_fetch_add(&h->log_lines[i], 1);
        if (n_held == HAMMER_HELD) {
            hammer_close(h, held[oldest]);
            oldest = (oldest + 1) % HAMMER_HELD;
            n_held--;
        }
        if (!peers_admit(h->p, addr, 0, &logged)) {
            if (logged)
                atomic_fetch_add(&h->log_lines[i], 1);
            continue;
        }
        int rc = peers_session_opened(h->p, addr, 0);
        if (rc < 0)
            atomic_fetch_add(&h->opened_errors, 1);
        if (rc != 0)
            continue;
        int now_live = atomic_fetch_add(&h->live[i], 1) + 1;
        int most = atomic_load(&h->most_live[i]);
        while (now_live > most && !atomic_compare_exchange_weak(&h->most_live[i], &most, now_live))
            ;
        held[(oldest + n_held) % HAMMER_HELD] = i;
        n_held++;
    }
    while (n_held > 0) {
        hammer_close(h, held[oldest]);
        oldest = (oldest + 1) % HAMMER_HELD;
        n_held--;
    }
    return NULL;
}

static void *hammer_logic_thread(void *arg)
{
    hammer *h = arg;
    while (!atomic_load(&h->stop)) {
        peers_sweep(h->p, 0);
        peers_set_limits(h->p, 64, HAMMER_CAP, HAMMER_HANDSHAKES);
        if (peers_count(h->p) > 64)
            atomic_store(&h->over_bound, 1);
        atomic_fetch_add(&h->sweeps, 1);
    }
    return NULL;
}

static void counts_stay_exact_under_several_threads(void)
{
    static hammer h; /* static: its atomics start at 0 */
    h.p = peers_new(64, HAMMER_CAP, HAMMER_HANDSHAKES);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h.p);
    pthread_t io[HAMMER_THREADS], logic;
    hammer_thread args[HAMMER_THREADS];
    CU_ASSERT_EQUAL_FATAL(pthread_create(&logic, NULL, hammer_logic_thread, &h), 0);
    for (int t = 0; t < HAMMER_THREADS; t++) {
        args[t] = (hammer_thread){&h, t};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&io[t], NULL, hammer_io_thread, &args[t]), 0);
    }
    for (int t = 0; t < HAMMER_THREADS; t++)
        pthread_join(io[t], NULL);
    atomic_store(&h.stop, 1);
    pthread_join(logic, NULL);
    CU_ASSERT(atomic_load(&h.sweeps) > 0);
    CU_ASSERT_EQUAL(atomic_load(&h.over_bound), 0);
    CU_ASSERT_EQUAL(atomic_load(&h.opened_errors), 0);
    for (int i = 0; i < HAMMER_ADDRESSES; i++) {
        char addr[32];
        hammer_address(i, addr, sizeof addr);
        /* Reached (each thread alone gets there), never passed. */
        CU_ASSERT_EQUAL(atomic_load(&h.most_live[i]), HAMMER_CAP);
        CU_ASSERT_EQUAL(atomic_load(&h.live[i]), 0);
        CU_ASSERT_EQUAL(peers_sessions(h.p, addr), 0);
        CU_ASSERT_EQUAL(atomic_load(&h.handshakes[i]), HAMMER_HANDSHAKES);
        CU_ASSERT_EQUAL(atomic_load(&h.log_lines[i]), 1);
    }
    /* Every address is quiet once its minute is over. */
    CU_ASSERT_EQUAL(peers_sweep(h.p, 1000), HAMMER_ADDRESSES);
    CU_ASSERT_EQUAL(peers_count(h.p), 0);
    peers_free(h.p);
}

static const sm_test_case cases[] = {
    SM_TEST(sessions_per_address_refuse_beyond_the_limit),
    SM_TEST(new_limits_apply_to_counts_already_taken),
    SM_TEST(refusals_are_logged_once_per_address_per_minute),
    SM_TEST(handshake_budget_refills_over_a_minute),
    SM_TEST(quiet_address_is_forgotten_and_busy_one_kept),
    SM_TEST(table_stays_bounded_by_forgetting_addresses_without_sessions),
    SM_TEST(opened_refuses_at_the_limit_even_after_admit_said_yes),
    SM_TEST(counts_stay_exact_under_several_threads),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("peers", cases, NULL, NULL);
}
