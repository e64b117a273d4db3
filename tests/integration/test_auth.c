/* The auth plugin in the real server with real clients: register, login
 * and logout (PROTOCOL.md section 7), one reply for unknown users and wrong
 * passwords, a registration race between two connections, several devices,
 * closed connections, the failed-login limits (parallel guesses from one
 * address, one address against a user's other addresses, clients bound to
 * 127.0.0.2 and 127.0.0.3), and password hashing that leaves the event
 * loop free. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

/* Cheap hashes and no auth limits in the way: every client is 127.0.0.1. */
#define AUTH_SERVER_CONFIG                                                                \
    "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"                   \
    "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;"     \
    " failed_logins = 1000; failed_logins_per_user = 1000000; registrations_per_hour = 10000;" \
    " max_hashes_per_address = 100; };\n"

static harness_server srv;

static int init(void) { return harness_start(&srv, AUTH_SERVER_CONFIG); }

static int fini(void)
{
    return harness_cleanup(&srv);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static sm_client *connect_to(const harness_server *s)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(s, &c), SM_CLIENT_OK);
    return c;
}

/* A client connecting from `source` (a loopback address other than
 * 127.0.0.1 is another address to the server's limits). */
static sm_client *connect_from(const harness_server *s, const char *source)
{
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.source_address = source;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(s, &o, &c), SM_CLIENT_OK);
    return c;
}

/* For a server with production-strength hashes: a register or login may
 * take seconds on a loaded machine (sanitizers, parallel suites), so its
 * calls wait 30 s instead of the client's default 5 s. */
static sm_client *connect_patient(const harness_server *s, const char *source)
{
    sm_client_options o;
    memset(&o, 0, sizeof o);
    o.source_address = source;
    o.timeout_ms = 30000;
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect_opts(s, &o, &c), SM_CLIENT_OK);
    return c;
}

static sm_message *call2(sm_client *c, const char *action, const char *username,
                         const char *password)
{
    sm_message *m = harness_callf(c, action, "{s:s, s:s}", "username", username, "password",
                                  password);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    return m;
}

static void expect_response(const sm_message *m, const char *action)
{
    CU_ASSERT_STRING_EQUAL(m->type, "response");
    CU_ASSERT_STRING_EQUAL(m->action, action);
}

/* registration_success or login_success for `username`; returns user_id. */
static json_int_t expect_welcome(sm_message *m, const char *action, const char *username)
{
    expect_response(m, action);
    json_t *p = m->payload;
    /* "<none>": a failing comparison reports instead of passing NULL to strcmp. */
    const char *name = json_string_value(json_object_get(p, "username"));
    CU_ASSERT_STRING_EQUAL(name ? name : "<none>", username);
    CU_ASSERT_TRUE(json_is_null(json_object_get(p, "assigned_room")));
    json_int_t id = json_integer_value(json_object_get(p, "user_id"));
    CU_ASSERT_TRUE(id > 0);
    if (strcmp(action, "login_success") == 0) {
        CU_ASSERT_EQUAL(json_object_size(p), 4);
        CU_ASSERT_TRUE(json_is_integer(json_object_get(p, "unread_count")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "unread_count")), 0);
    } else {
        CU_ASSERT_EQUAL(json_object_size(p), 3);
    }
    sm_message_free(m);
    return id;
}

static void expect_code(sm_message *m, int code, const char *command)
{
    CU_ASSERT_STRING_EQUAL(m->type, "error");
    CU_ASSERT_EQUAL(harness_error_code(m), code);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m->payload, "command")), command);
    sm_message_free(m);
}

static void expect_logout(sm_client *c)
{
    sm_message *m = harness_callf(c, "logout", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    expect_response(m, "logout");
    CU_ASSERT_EQUAL(json_object_size(m->payload), 0);
    sm_message_free(m);
}

static void expect_not_logged_in(sm_client *c)
{
    sm_message *m = harness_callf(c, "logout", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    expect_code(m, 1002, "logout");
}

static void register_login_logout_round_trip(void)
{
    sm_client *c = connect_to(&srv);
    json_int_t id = expect_welcome(call2(c, "register", "Flow.User", "correct horse"),
                                   "registration_success", "Flow.User");
    expect_logout(c);
    expect_not_logged_in(c);
    CU_ASSERT_EQUAL(expect_welcome(call2(c, "login", "flow.user", "correct horse"),
                                   "login_success", "Flow.User"),
                    id);
    expect_logout(c);
    sm_client_close(c, 1000);
}

/* Audit lines (source "audit") for the connection, a registration, a
 * failed and a successful login and each logout, with the address; the
 * passwords never reach the log. */
static void audit_lines_record_logins_and_never_passwords(void)
{
    harness_server s = {0};
    CU_ASSERT_EQUAL_FATAL(harness_start(&s, AUTH_SERVER_CONFIG), 0);
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&s, &c), 0);
    expect_welcome(call2(c, "register", "Audit.User", "Pw-Reg-7c1e9a"), "registration_success",
                   "Audit.User");
    expect_logout(c);
    expect_code(call2(c, "login", "audit.user", "Pw-Wrong-2b8d44"), 1001, "login");
    expect_code(call2(c, "login", "nobody.audit", "Pw-Unknown-55f0"), 1001, "login");
    expect_welcome(call2(c, "login", "audit.user", "Pw-Reg-7c1e9a"), "login_success",
                   "Audit.User");
    expect_logout(c);
    sm_client_close(c, 1000);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&s, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    static const char *const present[] = {
        "info    [audit] connection user=- address=127.0.0.1 session=",
        "info    [audit] register user='Audit.User' address=127.0.0.1 session=",
        "info    [audit] login user='Audit.User' address=127.0.0.1 session=",
        "info    [audit] logout user='Audit.User' address=127.0.0.1 session=",
        "info    [audit] login_failed user='Audit.User' address=127.0.0.1 session=",
        "info    [audit] login_failed user=- address=127.0.0.1 session=",
    };
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
        int found = harness_log_contains(&s, present[i]);
        if (found != 1)
            fprintf(stderr, "missing audit line: %s\n", present[i]);
        CU_ASSERT_EQUAL(found, 1);
    }
    /* An unknown name may be a password typed into the wrong field. */
    static const char *const absent[] = {"Pw-Reg-7c1e9a", "Pw-Wrong-2b8d44", "Pw-Unknown-55f0",
                                         "Pw-", "nobody.audit"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        CU_ASSERT_EQUAL(harness_log_contains(&s, absent[i]), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&s), 0);
}

static void logout_without_login_gets_1002(void)
{
    sm_client *c = connect_to(&srv);
    expect_not_logged_in(c);
    sm_client_close(c, 1000);
}

static void unknown_user_and_wrong_password_get_the_same_reply(void)
{
    sm_client *c = connect_to(&srv);
    expect_welcome(call2(c, "register", "same_reply", "correct horse"), "registration_success",
                   "same_reply");
    sm_message *wrong = call2(c, "login", "same_reply", "wrong horse");
    sm_message *unknown = call2(c, "login", "nobody_here", "correct horse");
    sm_message *ill = call2(c, "login", "x", "correct horse");
    CU_ASSERT_EQUAL(harness_error_code(wrong), 1001);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(wrong->payload, "message")),
                           "invalid username or password");
    CU_ASSERT_TRUE(json_equal(wrong->payload, unknown->payload));
    CU_ASSERT_TRUE(json_equal(wrong->payload, ill->payload));
    CU_ASSERT_STRING_EQUAL(wrong->action, unknown->action);
    CU_ASSERT_STRING_EQUAL(wrong->type, unknown->type);
    sm_message_free(wrong);
    sm_message_free(unknown);
    sm_message_free(ill);
    /* The failed login ended the registration's login. */
    expect_not_logged_in(c);
    sm_client_close(c, 1000);
}

/* Both commands are on the wire before either reply is read. */
static void registration_race_between_two_clients_has_one_winner(void)
{
    sm_client *a = connect_to(&srv), *b = connect_to(&srv);
    json_t *pa = json_pack("{s:s, s:s}", "username", "Race.Name", "password", "password-a");
    json_t *pb = json_pack("{s:s, s:s}", "username", "race.NAME", "password", "password-b");
    uint64_t na = 0, nb = 0;
    CU_ASSERT_EQUAL_FATAL(sm_client_send(a, "register", pa, &na), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(sm_client_send(b, "register", pb, &nb), SM_CLIENT_OK);
    json_decref(pa);
    json_decref(pb);
    sm_message *ra = NULL, *rb = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_client_recv(a, 5000, &ra), SM_CLIENT_OK);
    CU_ASSERT_EQUAL_FATAL(sm_client_recv(b, 5000, &rb), SM_CLIENT_OK);
    int wins = (strcmp(ra->type, "response") == 0) + (strcmp(rb->type, "response") == 0);
    CU_ASSERT_EQUAL(wins, 1);
    sm_message *loser = strcmp(ra->type, "response") == 0 ? rb : ra;
    sm_message *winner = loser == ra ? rb : ra;
    sm_client *lc = loser == ra ? a : b, *wc = loser == ra ? b : a;
    CU_ASSERT_EQUAL(harness_error_code(loser), 1010);
    CU_ASSERT_STRING_EQUAL(winner->action, "registration_success");
    sm_message_free(ra);
    sm_message_free(rb);
    expect_not_logged_in(lc);
    expect_logout(wc);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
}

static void two_devices_stay_logged_in_independently(void)
{
    sm_client *phone = connect_to(&srv), *laptop = connect_to(&srv);
    json_int_t id = expect_welcome(call2(phone, "register", "TwoDevices", "correct horse"),
                                   "registration_success", "TwoDevices");
    CU_ASSERT_EQUAL(expect_welcome(call2(laptop, "login", "twodevices", "correct horse"),
                                   "login_success", "TwoDevices"),
                    id);
    expect_logout(phone);
    expect_not_logged_in(phone);
    expect_logout(laptop); /* was still logged in */
    sm_client_close(phone, 1000);
    sm_client_close(laptop, 1000);
}

static void closing_a_connection_ends_only_its_login(void)
{
    sm_client *first = connect_to(&srv), *second = connect_to(&srv);
    expect_welcome(call2(first, "register", "Closer", "correct horse"), "registration_success",
                   "Closer");
    expect_welcome(call2(second, "login", "closer", "correct horse"), "login_success", "Closer");
    sm_client_free(first); /* abrupt: no close frame */
    expect_logout(second);
    sm_client_close(second, 1000);
}

static void login_again_after_the_first_connection_closed(void)
{
    sm_client *first = connect_to(&srv);
    json_int_t id = expect_welcome(call2(first, "register", "Comeback", "correct horse"),
                                   "registration_success", "Comeback");
    sm_client_close(first, 1000);
    sm_client *again = connect_to(&srv);
    CU_ASSERT_EQUAL(expect_welcome(call2(again, "login", "COMEBACK", "correct horse"),
                                   "login_success", "Comeback"),
                    id);
    expect_logout(again);
    sm_client_close(again, 1000);
}

static void failed_logins_get_1008_with_retry_after(void)
{
    harness_server limited = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&limited,
                      "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"
                      "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024;"
                      " argon2_passes = 1; failed_logins = 2; failed_login_window = 60; };\n"),
        0);
    sm_client *c = connect_to(&limited);
    expect_welcome(call2(c, "register", "limited", "correct horse"), "registration_success",
                   "limited");
    expect_code(call2(c, "login", "limited", "wrong horse"), 1001, "login");
    expect_code(call2(c, "login", "limited", "wrong horse"), 1001, "login");
    sm_message *m = call2(c, "login", "limited", "correct horse");
    CU_ASSERT_EQUAL(harness_error_code(m), 1008);
    json_t *ra = json_object_get(m->payload, "retry_after");
    CU_ASSERT_TRUE(json_is_integer(ra));
    CU_ASSERT_TRUE(json_integer_value(ra) >= 59 && json_integer_value(ra) <= 60);
    sm_message_free(m);
    /* The address is limited for other names as well. */
    sm_client *d = connect_to(&limited);
    m = call2(d, "login", "someone_else", "whatever pw");
    CU_ASSERT_EQUAL(harness_error_code(m), 1008);
    sm_message_free(m);
    sm_client_close(c, 1000);
    sm_client_close(d, 1000);
    CU_ASSERT_EQUAL(harness_log_contains(&limited, "failed-login limit reached for 127.0.0.1"),
                    1);
    CU_ASSERT_EQUAL(harness_log_contains(&limited, "wrong horse"), 0);
    CU_ASSERT_EQUAL(harness_log_contains(&limited, "correct horse"), 0);
    CU_ASSERT_EQUAL(harness_cleanup(&limited), 0);
}

/* The review's attack: parallel wrong logins from one address were all
 * hashed, and then the user was locked out everywhere. Now, with the
 * defaults (failed_logins 5, max_hashes_per_address 2), each burst has
 * at most two hashed and the rest refused with 1008 before any hashing;
 * over the window no more than five are hashed in all; and the user logs
 * in from another address (127.0.0.2) during and after the attack.
 * Hashes three times the default cost (about 0.1 to 0.3 s each), so that
 * a burst, sent in a few milliseconds, is in flight together. */
static void parallel_wrong_logins_from_one_address_hash_at_most_the_limit(void)
{
    enum { ATTACKERS = 12, BURSTS = 6 };
    harness_server srv2 = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&srv2, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"
                             "auth = { argon2_passes = 6; };\n"),
        0);
    sm_client *owner = connect_patient(&srv2, "127.0.0.2");
    sm_client *c[ATTACKERS];
    for (int i = 0; i < ATTACKERS; i++)
        c[i] = connect_patient(&srv2, NULL);
    json_int_t id = expect_welcome(call2(owner, "register", "Target", "correct horse"),
                                   "registration_success", "Target");
    expect_logout(owner);
    int hashed = 0, last_retry = 0;
    for (int burst = 0; burst < BURSTS; burst++) {
        for (int i = 0; i < ATTACKERS; i++) {
            json_t *p = json_pack("{s:s, s:s}", "username", "target", "password", "wrong horse");
            CU_ASSERT_EQUAL_FATAL(sm_client_send(c[i], "login", p, NULL), SM_CLIENT_OK);
            json_decref(p);
        }
        /* The owner, elsewhere, in the middle of the first burst. */
        if (burst == 0) {
            json_t *p = json_pack("{s:s, s:s}", "username", "Target", "password", "correct horse");
            CU_ASSERT_EQUAL_FATAL(sm_client_send(owner, "login", p, NULL), SM_CLIENT_OK);
            json_decref(p);
        }
        int in_burst = 0;
        for (int i = 0; i < ATTACKERS; i++) {
            sm_message *m = NULL;
            CU_ASSERT_EQUAL_FATAL(sm_client_recv(c[i], 30000, &m), SM_CLIENT_OK);
            int code = harness_error_code(m);
            if (code == 1001) {
                in_burst++;
            } else {
                CU_ASSERT_EQUAL(code, 1008);
                json_t *ra = json_object_get(m->payload, "retry_after");
                CU_ASSERT_TRUE(json_is_integer(ra) && json_integer_value(ra) >= 1);
                last_retry = (int)json_integer_value(ra);
            }
            sm_message_free(m);
        }
        if (burst == 0) {
            sm_message *m = NULL;
            CU_ASSERT_EQUAL_FATAL(sm_client_recv(owner, 30000, &m), SM_CLIENT_OK);
            CU_ASSERT_EQUAL(expect_welcome(m, "login_success", "Target"), id);
            expect_logout(owner);
        }
        fprintf(stderr, "%s burst %d: %d of %d hashed", burst ? "," : "\n ", burst, in_burst,
                ATTACKERS);
        /* Never more than the address's share of the queue at once. */
        CU_ASSERT_TRUE(in_burst <= 2);
        hashed += in_burst;
        CU_ASSERT_TRUE(hashed <= 5);
        if (in_burst == 0)
            break;
    }
    fprintf(stderr, "; %d in all\n", hashed);
    /* The address has used its five failures: refused for the window. */
    CU_ASSERT_EQUAL(hashed, 5);
    CU_ASSERT_TRUE(last_retry >= 2 && last_retry <= 60);
    sm_message *m = call2(c[0], "login", "Target", "correct horse");
    CU_ASSERT_EQUAL(harness_error_code(m), 1008);
    sm_message_free(m);
    /* The user is not locked out. */
    CU_ASSERT_EQUAL(expect_welcome(call2(owner, "login", "target", "correct horse"),
                                   "login_success", "Target"),
                    id);
    CU_ASSERT_EQUAL(harness_log_contains(&srv2, "failed-login limit reached for 127.0.0.1"), 1);
    CU_ASSERT_EQUAL(harness_log_contains(&srv2, "failed login from 127.0.0.2"), 0);
    sm_client_close(owner, 1000);
    for (int i = 0; i < ATTACKERS; i++)
        sm_client_close(c[i], 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&srv2), 0);
}

/* Failures from one address throttle that address only; spread over enough
 * addresses (here 127.0.0.1 and 127.0.0.2, each below failed_logins_per_user)
 * they throttle the user, for 127.0.0.3 too, with the same reply whatever
 * the password. */
static void failures_from_one_address_throttle_it_not_the_user(void)
{
    harness_server lim = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&lim, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"
                            "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024;"
                            " argon2_passes = 1; failed_logins = 2; failed_logins_per_user = 3; };\n"),
        0);
    sm_client *a = connect_to(&lim), *b = connect_from(&lim, "127.0.0.2");
    sm_client *c = connect_from(&lim, "127.0.0.3");
    json_int_t id = expect_welcome(call2(b, "register", "Victim", "correct horse"),
                                   "registration_success", "Victim");
    for (int i = 0; i < 2; i++)
        expect_code(call2(a, "login", "victim", "wrong horse"), 1001, "login");
    /* 127.0.0.1 is refused, even with the right password... */
    expect_code(call2(a, "login", "victim", "correct horse"), 1008, "login");
    /* ...and 127.0.0.2 is not. */
    CU_ASSERT_EQUAL(expect_welcome(call2(b, "login", "victim", "correct horse"),
                                   "login_success", "Victim"),
                    id);
    expect_code(call2(b, "login", "victim", "wrong horse"), 1001, "login");
    /* Three failures from two addresses: the user is throttled. */
    sm_message *right = call2(c, "login", "victim", "correct horse");
    sm_message *wrong = call2(c, "login", "victim", "wrong horse");
    CU_ASSERT_EQUAL(harness_error_code(right), 1008);
    CU_ASSERT_TRUE(json_equal(right->payload, wrong->payload));
    json_t *ra = json_object_get(right->payload, "retry_after");
    CU_ASSERT_TRUE(json_is_integer(ra) && json_integer_value(ra) >= 1 &&
                   json_integer_value(ra) <= 60);
    sm_message_free(right);
    sm_message_free(wrong);
    CU_ASSERT_EQUAL(harness_log_contains(&lim, "failed login from 127.0.0.2"), 1);
    CU_ASSERT_EQUAL(harness_log_contains(&lim, "failed-login limit reached for a username"), 1);
    sm_client_close(a, 1000);
    sm_client_close(b, 1000);
    sm_client_close(c, 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&lim), 0);
}

/* Default-cost hashes run on the worker pool: while several logins hash,
 * a command answered on the loop (logout without login: 1002) comes back
 * at once, before the logins finish. (failed_logins is raised because
 * parallel logins of one account count against its limit while they run.) */
static void hashing_does_not_block_the_event_loop(void)
{
    enum { LOGINS = 6 };
    harness_server strong = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&strong, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"
                               "auth = { failed_logins = 10; max_hashes_per_address = 6; };\n"),
        0);
    /* Every handshake first: they use the same worker pool. */
    sm_client *c[LOGINS], *probe = connect_to(&strong);
    for (int i = 0; i < LOGINS; i++)
        c[i] = connect_to(&strong);
    expect_welcome(call2(c[0], "register", "busy_user", "correct horse"),
                   "registration_success", "busy_user");

    double t0 = now_ms();
    for (int i = 0; i < LOGINS; i++) {
        json_t *p = json_pack("{s:s, s:s}", "username", "busy_user", "password", "correct horse");
        CU_ASSERT_EQUAL_FATAL(sm_client_send(c[i], "login", p, NULL), SM_CLIENT_OK);
        json_decref(p);
    }
    sm_message *m = harness_callf(probe, "logout", NULL);
    double probe_ms = now_ms() - t0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    expect_code(m, 1002, "logout");
    /* Which logins had already been answered when the probe's reply came? */
    int ready = 0;
    sm_message *r[LOGINS] = {0};
    for (int i = 0; i < LOGINS; i++)
        if (sm_client_recv(c[i], 0, &r[i]) == SM_CLIENT_OK)
            ready++;
    /* How long one hash takes on this machine, as busy as it is now: until
     * the first login's answer. A loop that hashed would answer the probe
     * only after a hash; a free one answers it in a fraction of one. */
    double first_login_ms = probe_ms;
    if (ready == 0) {
        struct pollfd first[LOGINS];
        for (int i = 0; i < LOGINS; i++)
            first[i] = (struct pollfd){sm_client_fd(c[i]), POLLIN, 0};
        CU_ASSERT_TRUE_FATAL(poll(first, LOGINS, 10000) > 0);
        first_login_ms = now_ms() - t0;
    }
    for (int i = 0; i < LOGINS; i++) {
        if (!r[i])
            CU_ASSERT_EQUAL_FATAL(sm_client_recv(c[i], 10000, &r[i]), SM_CLIENT_OK);
        expect_welcome(r[i], "login_success", "busy_user");
    }
    double logins_ms = now_ms() - t0;
    fprintf(stderr, "\n  probe answered in %.1f ms (%d of %d logins done by then); "
            "the first login took %.1f ms, all %.1f ms\n", probe_ms, ready, LOGINS,
            first_login_ms, logins_ms);
    CU_ASSERT_TRUE(probe_ms < first_login_ms / 2);
    CU_ASSERT_TRUE(ready < LOGINS);
    CU_ASSERT_EQUAL(harness_log_contains(&strong, "m=19456 KiB, t=2, p=1"), 1);
    sm_client_close(probe, 1000);
    for (int i = 0; i < LOGINS; i++)
        sm_client_close(c[i], 1000);
    CU_ASSERT_EQUAL(harness_cleanup(&strong), 0);
}

/* SIGTERM while logins hash and wait: a clean exit, nothing leaked (the
 * server is built with the sanitizers in SM_SANITIZE builds). */
static void shutdown_with_logins_in_flight_is_clean(void)
{
    enum { CLIENTS = 6 };
    harness_server busy = {0};
    CU_ASSERT_EQUAL_FATAL(
        harness_start(&busy, "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\"]; };\n"
                             "auth = { max_concurrent_hashes = 1; failed_logins = 100;"
                             " failed_logins_per_user = 1000; max_hashes_per_address = 6; };\n"),
        0);
    sm_client *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        c[i] = connect_to(&busy);
    for (int i = 0; i < CLIENTS; i++) {
        json_t *p = json_pack("{s:s, s:s}", "username", i % 2 ? "someone" : "other",
                              "password", "correct horse");
        CU_ASSERT_EQUAL(sm_client_send(c[i], i % 2 ? "login" : "register", p, NULL),
                        SM_CLIENT_OK);
        json_decref(p);
    }
    /* The commands are on the wire: wait until the first has been read. */
    CU_ASSERT_EQUAL(harness_wait_log(&busy, "registered", 5000), 1);
    int status = -1;
    CU_ASSERT_EQUAL(harness_stop(&busy, SIGTERM, &status), 0);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_EQUAL(harness_log_contains(&busy, "Sanitizer"), 0);
    CU_ASSERT_EQUAL(harness_log_contains(&busy, "still on the worker pool"), 0);
    CU_ASSERT_EQUAL(harness_log_contains(&busy, "statement"), 0);
    for (int i = 0; i < CLIENTS; i++)
        sm_client_free(c[i]);
    CU_ASSERT_EQUAL(harness_cleanup(&busy), 0);
}

static const sm_test_case cases[] = {
    SM_TEST(register_login_logout_round_trip),
    SM_TEST(logout_without_login_gets_1002),
    SM_TEST(unknown_user_and_wrong_password_get_the_same_reply),
    SM_TEST(registration_race_between_two_clients_has_one_winner),
    SM_TEST(two_devices_stay_logged_in_independently),
    SM_TEST(closing_a_connection_ends_only_its_login),
    SM_TEST(login_again_after_the_first_connection_closed),
    SM_TEST(failed_logins_get_1008_with_retry_after),
    SM_TEST(parallel_wrong_logins_from_one_address_hash_at_most_the_limit),
    SM_TEST(failures_from_one_address_throttle_it_not_the_user),
    SM_TEST(hashing_does_not_block_the_event_loop),
    SM_TEST(shutdown_with_logins_in_flight_is_clean),
    SM_TEST(audit_lines_record_logins_and_never_passwords),
    SM_TEST_END,
};

int main(void) { return sm_test_run("integration.auth", cases, init, fini); }
