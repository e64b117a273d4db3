/* The reference-counted payload a publish shares between I/O threads
 * (core/shared_payload.c): an exact copy, freed once by whichever thread
 * drops the last reference, never before. */
#include "shared_payload.h"
#include "safemessenger/testhost_suite.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static void shared_payload_is_a_terminated_copy(void)
{
    char text[] = "{\"a\":1}xyz";
    shared_payload *p = shared_payload_new(text, 7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    text[0] = 'X'; /* the caller's buffer is not the payload */
    CU_ASSERT_EQUAL(shared_payload_len(p), 7);
    CU_ASSERT_STRING_EQUAL(shared_payload_text(p), "{\"a\":1}");
    CU_ASSERT_EQUAL(shared_payload_unref(p), 1);
}

static void shared_payload_last_reference_frees(void)
{
    shared_payload *p = shared_payload_new("", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_EQUAL(shared_payload_ref(p), p);
    CU_ASSERT_PTR_EQUAL(shared_payload_ref(p), p);
    CU_ASSERT_EQUAL(shared_payload_unref(p), 0);
    CU_ASSERT_EQUAL(shared_payload_unref(p), 0);
    /* Still readable: one reference left. */
    CU_ASSERT_STRING_EQUAL(shared_payload_text(p), "");
    CU_ASSERT_EQUAL(shared_payload_unref(p), 1);
    CU_ASSERT_EQUAL(shared_payload_unref(NULL), 0);
    CU_ASSERT_PTR_NULL(shared_payload_new(NULL, 0));
}

enum { READERS = 8, ROUNDS = 200 };

static atomic_int frees;
static atomic_int bad_reads;

static void *read_and_drop(void *arg)
{
    shared_payload *p = arg;
    if (shared_payload_len(p) != 5 || memcmp(shared_payload_text(p), "hello", 6) != 0)
        atomic_fetch_add(&bad_reads, 1);
    if (shared_payload_unref(p))
        atomic_fetch_add(&frees, 1);
    return NULL;
}

/* As after a publish: one reference per I/O thread, dropped in any order
 * once each has sealed for its sessions. ThreadSanitizer checks the
 * reads against the free; ASan a free too early or twice. */
static void shared_payload_shared_by_threads_is_freed_once(void)
{
    for (int r = 0; r < ROUNDS; r++) {
        atomic_store(&frees, 0);
        shared_payload *p = shared_payload_new("hello", 5);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        pthread_t t[READERS];
        for (int i = 1; i < READERS; i++)
            shared_payload_ref(p);
        for (int i = 0; i < READERS; i++)
            CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, read_and_drop, p), 0);
        for (int i = 0; i < READERS; i++)
            pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(atomic_load(&frees), 1);
    }
    CU_ASSERT_EQUAL(atomic_load(&bad_reads), 0);
}

int main(void)
{
    static const sm_test_case tests[] = {
        SM_TEST(shared_payload_is_a_terminated_copy),
        SM_TEST(shared_payload_last_reference_frees),
        SM_TEST(shared_payload_shared_by_threads_is_freed_once),
        SM_TEST_END,
    };
    return sm_test_run("shared_payload", tests, NULL, NULL);
}
