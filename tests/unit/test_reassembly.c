#include "reassembly.h"
#include "safemessenger/testhost_suite.h"

#include <string.h>

static void reassembly_single_frame_message(void)
{
    reassembly r = {0};
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, "hello", 5, 100), REASSEMBLY_COMPLETE);
    size_t n = 99;
    const char *t = reassembly_take(&r, &n);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_STRING_EQUAL(t, "hello");
    CU_ASSERT_EQUAL(r.len, 0);
    reassembly_release(&r);
    CU_ASSERT_PTR_NULL(r.buf);
    CU_ASSERT_EQUAL(r.cap, 0);
}

static void reassembly_empty_message_is_an_empty_string(void)
{
    reassembly r = {0};
    /* lws hands an empty frame over as (NULL, 0). */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, NULL, 0, 100), REASSEMBLY_COMPLETE);
    size_t n = 99;
    const char *t = reassembly_take(&r, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_STRING_EQUAL(t, "");
    /* Empty fragments, too. */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, NULL, 0, 100), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, NULL, 0, 100), REASSEMBLY_COMPLETE);
    t = reassembly_take(&r, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(n, 0);
    reassembly_release(&r);
    /* Taken without any append: still a valid empty string. */
    t = reassembly_take(&r, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(n, 0);
}

static void reassembly_joins_fragments_in_order(void)
{
    reassembly r = {0};
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, "ab", 2, 100), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 0, "", 0, 100), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, "cd", 2, 100), REASSEMBLY_COMPLETE);
    size_t n = 0;
    CU_ASSERT_STRING_EQUAL(reassembly_take(&r, &n), "abcd");
    CU_ASSERT_EQUAL(n, 4);
    reassembly_release(&r);
}

static void reassembly_grows_past_its_first_allocation(void)
{
    reassembly r = {0};
    char chunk[700];
    memset(chunk, 'x', sizeof chunk);
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, chunk, sizeof chunk, 5000), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 0, chunk, sizeof chunk, 5000), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, chunk, sizeof chunk, 5000), REASSEMBLY_COMPLETE);
    CU_ASSERT_TRUE(r.cap >= 2100 && r.cap <= 5000);
    size_t n = 0;
    const char *t = reassembly_take(&r, &n);
    CU_ASSERT_EQUAL(n, 2100);
    CU_ASSERT_EQUAL(strlen(t), 2100);
    reassembly_release(&r);
}

static void reassembly_limit_is_inclusive_and_never_exceeded(void)
{
    reassembly r = {0};
    char buf[10];
    memset(buf, 'y', sizeof buf);
    /* Exactly the limit is accepted, and the buffer is no larger. */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, buf, 6, 10), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, buf, 4, 10), REASSEMBLY_COMPLETE);
    CU_ASSERT_EQUAL(r.cap, 10);
    size_t n = 0;
    reassembly_take(&r, &n);
    CU_ASSERT_EQUAL(n, 10);
    /* One byte more is refused: buffer freed, the rest skipped. */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, buf, 6, 10), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 0, buf, 5, 10), REASSEMBLY_TOO_LARGE);
    CU_ASSERT_PTR_NULL(r.buf);
    CU_ASSERT_EQUAL(r.len, 0);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, buf, 1, 10), REASSEMBLY_SKIPPED);
    CU_ASSERT_PTR_NULL(r.buf);
    /* A single piece over the limit, too, and a length that would wrap. */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, buf, 10, 9), REASSEMBLY_TOO_LARGE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, buf, 5, 10), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, buf, (size_t)-1, 10), REASSEMBLY_TOO_LARGE);
    /* The next message starts clean. */
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, "ok", 2, 10), REASSEMBLY_COMPLETE);
    CU_ASSERT_STRING_EQUAL(reassembly_take(&r, &n), "ok");
    reassembly_release(&r);
}

static void reassembly_discard_skips_until_the_next_message(void)
{
    reassembly r = {0};
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, "ab", 2, 100), REASSEMBLY_MORE);
    reassembly_discard(&r);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 0, "cd", 2, 100), REASSEMBLY_SKIPPED);
    CU_ASSERT_EQUAL(reassembly_append(&r, 0, 1, "ef", 2, 100), REASSEMBLY_SKIPPED);
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, "gh", 2, 100), REASSEMBLY_COMPLETE);
    size_t n = 0;
    CU_ASSERT_STRING_EQUAL(reassembly_take(&r, &n), "gh");
    reassembly_release(&r);
}

static void reassembly_first_fragment_drops_an_unfinished_message(void)
{
    reassembly r = {0};
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 0, "old", 3, 100), REASSEMBLY_MORE);
    CU_ASSERT_EQUAL(reassembly_append(&r, 1, 1, "new", 3, 100), REASSEMBLY_COMPLETE);
    size_t n = 0;
    CU_ASSERT_STRING_EQUAL(reassembly_take(&r, &n), "new");
    CU_ASSERT_EQUAL(n, 3);
    reassembly_release(&r);
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(reassembly_single_frame_message),
        SM_TEST(reassembly_empty_message_is_an_empty_string),
        SM_TEST(reassembly_joins_fragments_in_order),
        SM_TEST(reassembly_grows_past_its_first_allocation),
        SM_TEST(reassembly_limit_is_inclusive_and_never_exceeded),
        SM_TEST(reassembly_discard_skips_until_the_next_message),
        SM_TEST(reassembly_first_fragment_drops_an_unfinished_message),
        SM_TEST_END,
    };
    return sm_test_run("reassembly", cases, NULL, NULL);
}
