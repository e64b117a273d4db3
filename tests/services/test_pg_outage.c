/* PostgreSQL going away under a running server (issue 14 item 4: "commands
 * that need storage get an error (no crash, nothing half-written);
 * service resumes when it returns"), end to end: the real server on a
 * private PostgreSQL of this test's own, real clients. While PostgreSQL is
 * down a private message gets 1005 at once and is not stored, a command
 * that needs no storage still works; once it is back, the next message is
 * delivered and stored; the server logs the loss and the return once. */
#include <CUnit/CUnit.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "safemessenger/testhost_suite.h"

#define PASSWORD "correct horse battery"

static char pg_dir[128];
static char pg_url[512];
static harness_server srv;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* postgres-instance VERB on this test's instance; 0 on success. */
static int instance(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/tests/services/postgres-instance' %s '%s' >/dev/null 2>&1",
             SM_SOURCE_DIR, verb, pg_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int init(void)
{
    snprintf(pg_dir, sizeof pg_dir, "/tmp/sm-pg-outage.%ld", (long)getpid());
    if (instance("start") != 0)
        return -1;
    char path[256];
    snprintf(path, sizeof path, "%s/url", pg_dir);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(pg_url, sizeof pg_url, f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    pg_url[strcspn(pg_url, "\n")] = '\0';
    char extra[2048];
    /* A short deadline: a call to a server that is gone fails at once
     * anyway; this bounds one whose answer never comes. */
    snprintf(extra, sizeof extra,
             "storage = { backend = \"postgresql\"; postgresql = \"%s\";"
             " postgresql_timeout = 2; };\n"
             "plugins = { dir = \"@PLUGIN_BUILD_DIR@\"; load = [\"auth\", \"rooms\", \"messaging\"]; };\n"
             "auth = { allow_weak_argon2 = true; argon2_memory_kib = 1024; argon2_passes = 1;\n"
             "         registrations_per_hour = 1000; };\n",
             pg_url);
    return harness_start(&srv, extra);
}

static int fini(void)
{
    int rc = harness_cleanup(&srv);
    instance("stop");
    return rc;
}

/* Rows in messaging_messages, through a connection of the test's own;
 * -1 on failure. */
static long long count_messages(void)
{
    PGconn *c = PQconnectdb(pg_url);
    long long n = -1;
    PGresult *res = PQstatus(c) == CONNECTION_OK
                        ? PQexec(c, "SELECT count(*) FROM messaging_messages")
                        : NULL;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(c);
    return n;
}

static sm_client *registered(const char *name)
{
    sm_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(harness_connect(&srv, &c), SM_CLIENT_OK);
    sm_message *m = harness_callf(c, "register", "{s:s, s:s}", "username", name, "password",
                                  PASSWORD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL_FATAL(m->action, "registration_success");
    sm_message_free(m);
    return c;
}

static sm_message *send_pm(sm_client *c, const char *to, const char *text)
{
    return harness_callf(c, "private_message", "{s:s, s:s, s:b}", "recipient", to, "content",
                         text, "encrypted", 0);
}

static void outage_gives_errors_then_service_resumes(void)
{
    sm_client *bob = registered("out_bob");
    sm_client *alice = registered("out_alice");
    sm_message *m = send_pm(alice, "out_bob", "before");
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "message_delivered");
    sm_message_free(m);

    CU_ASSERT_EQUAL_FATAL(instance("down"), 0);
    /* Refused at once with 1005, and the connection stays open. */
    double t0 = now_s();
    m = send_pm(alice, "out_bob", "during");
    double took = now_s() - t0;
    CU_ASSERT_EQUAL(harness_error_code(m), 1005);
    CU_ASSERT(took < 3.0); /* at most one deadline (2 s), not a hang */
    sm_message_free(m);
    /* What needs no storage goes on. */
    m = harness_callf(alice, "get_users", NULL);
    CU_ASSERT_STRING_EQUAL(m ? m->action : "", "get_users");
    sm_message_free(m);
    CU_ASSERT_EQUAL(harness_wait_log(&srv, "PostgreSQL connection lost", 5000), 1);

    CU_ASSERT_EQUAL_FATAL(instance("up"), 0);
    /* Back within the reconnection's backoff (at most 5 s between tries). */
    int delivered = 0;
    double deadline = now_s() + 20;
    while (!delivered && now_s() < deadline) {
        m = send_pm(alice, "out_bob", "after");
        delivered = m && strcmp(m->action, "message_delivered") == 0;
        if (!delivered)
            CU_ASSERT_EQUAL(harness_error_code(m), 1005);
        sm_message_free(m);
        if (!delivered) {
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
        }
    }
    CU_ASSERT_TRUE(delivered);
    CU_ASSERT_EQUAL(harness_log_count(&srv, "PostgreSQL connection lost"), 1);
    CU_ASSERT(harness_log_contains(&srv, "PostgreSQL connection restored"));

    /* Bob saw "before" and "after", never "during", and the storage holds
     * exactly those two. */
    sm_message *ev = NULL;
    int seen_before = 0, seen_after = 0, seen_during = 0;
    while (sm_client_next_event(bob, 2000, &ev) == SM_CLIENT_OK) {
        if (strcmp(ev->action, "private_message") == 0) {
            const char *text = json_string_value(json_object_get(ev->payload, "content"));
            seen_before += text && strcmp(text, "before") == 0;
            seen_after += text && strcmp(text, "after") == 0;
            seen_during += text && strcmp(text, "during") == 0;
        }
        sm_message_free(ev);
        if (seen_after)
            break;
    }
    CU_ASSERT_EQUAL(seen_before, 1);
    CU_ASSERT_EQUAL(seen_after, 1);
    CU_ASSERT_EQUAL(seen_during, 0);
    CU_ASSERT_EQUAL(count_messages(), 2);
    sm_client_close(alice, 1000);
    sm_client_close(bob, 1000);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(outage_gives_errors_then_service_resumes),
        SM_TEST_END,
    };
    return sm_test_run("services_pg_outage", cases, init, fini);
}
