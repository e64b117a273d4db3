/* core/peers: sessions per address, the key_exchange budget per address
 * per minute, one refusal log line per address per minute, and an entry
 * forgotten once its address is quiet, within a bounded table. */
#include "peers.h"
#include "safemessenger/testhost_suite.h"

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

static const sm_test_case cases[] = {
    SM_TEST(sessions_per_address_refuse_beyond_the_limit),
    SM_TEST(new_limits_apply_to_counts_already_taken),
    SM_TEST(refusals_are_logged_once_per_address_per_minute),
    SM_TEST(handshake_budget_refills_over_a_minute),
    SM_TEST(quiet_address_is_forgotten_and_busy_one_kept),
    SM_TEST(table_stays_bounded_by_forgetting_addresses_without_sessions),
    SM_TEST_END
};

int main(void)
{
    return sm_test_run("peers", cases, NULL, NULL);
}
