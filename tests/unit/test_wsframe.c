/* Coalesced writes (core/wsframe.c, outqueue_sent_many): the RFC 6455
 * headers we build for server frames, how a batch is chosen from the send
 * queue (queue order, byte and frame bounds), what it looks like on the
 * wire, and that a batch the transport still holds stays counted, every
 * frame of it, against the send-queue bounds. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "outqueue.h"
#include "safemessenger/plugin.h"
#include "safemessenger/testhost_suite.h"
#include "wsframe.h"

/* An independent reading of a server frame header (RFC 6455 5.2):
 * returns the header length and sets *len, or 0 when it is not a final,
 * unmasked text frame. */
static size_t parse_header(const unsigned char *h, size_t avail, uint64_t *len)
{
    if (avail < 2 || h[0] != 0x81 || (h[1] & 0x80))
        return 0;
    unsigned l7 = h[1] & 0x7f;
    if (l7 < 126) {
        *len = l7;
        return 2;
    }
    if (l7 == 126) {
        if (avail < 4)
            return 0;
        *len = (uint64_t)h[2] << 8 | h[3];
        return *len >= 126 ? 4 : 0; /* minimal encoding */
    }
    if (avail < 10 || (h[2] & 0x80))
        return 0;
    *len = 0;
    for (int i = 0; i < 8; i++)
        *len = *len << 8 | h[2 + i];
    return *len > 0xffff ? 10 : 0;
}

static void check_header(size_t payload, size_t want_len)
{
    unsigned char h[WSFRAME_HEADER_MAX + 4];
    memset(h, 0xee, sizeof h);
    size_t n = wsframe_text_header(h, payload);
    CU_ASSERT_EQUAL(n, want_len);
    uint64_t len = 0;
    CU_ASSERT_EQUAL(parse_header(h, n, &len), want_len);
    CU_ASSERT_EQUAL(len, (uint64_t)payload);
    CU_ASSERT_EQUAL(h[n], 0xee); /* nothing written past the header */
}

static void wsframe_header_lengths_follow_rfc6455(void)
{
    check_header(0, 2);
    check_header(1, 2);
    check_header(125, 2);
    check_header(126, 4);
    check_header(65535, 4);
    check_header(65536, 10);
    check_header(8u << 20, 10);
#if SIZE_MAX > 0xffffffffu
    check_header(((size_t)1 << 32) + 5, 10);
#endif
    unsigned char h[WSFRAME_HEADER_MAX];
    wsframe_text_header(h, 300);
    CU_ASSERT_EQUAL(h[0], 0x81);
    CU_ASSERT_EQUAL(h[1], 126);
    CU_ASSERT_EQUAL(h[2], 1);
    CU_ASSERT_EQUAL(h[3], 44);
}

/* A queue of frames whose bytes say which frame they are. */
static outqueue queue_of(const size_t *lens, size_t n)
{
    outqueue q = {0};
    static char text[200000];
    for (size_t i = 0; i < n; i++) {
        memset(text, 'a' + (int)(i % 26), lens[i]);
        CU_ASSERT_EQUAL_FATAL(outqueue_push(&q, text, lens[i], (size_t)1 << 30, 1000, 0), SM_OK);
    }
    return q;
}

static void wsframe_batch_keeps_order_and_respects_the_bounds(void)
{
    const size_t lens[] = {10, 200, 0, 70000, 5, 5};
    outqueue q = queue_of(lens, 6);
    size_t bytes = 0;
    /* Everything fits: all six, headers included. */
    size_t all = (2 + 10) + (4 + 200) + 2 + (10 + 70000) + (2 + 5) + (2 + 5);
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 1000000, 100, &bytes), 6);
    CU_ASSERT_EQUAL(bytes, all);
    /* The frame bound. */
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 1000000, 2, &bytes), 2);
    CU_ASSERT_EQUAL(bytes, 12 + 204);
    /* The byte bound: the batch stops before the frame that does not fit,
     * never skipping it for a later one that would. */
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 65536, 100, &bytes), 3);
    CU_ASSERT_EQUAL(bytes, 12 + 204 + 2);
    /* Exactly at the bound still fits. */
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 12 + 204, 100, &bytes), 2);
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 12 + 204 - 1, 100, &bytes), 1);
    /* A first frame larger than the bound is not batched (it goes alone). */
    CU_ASSERT_EQUAL(wsframe_batch_plan(q.head, 11, 100, &bytes), 0);
    CU_ASSERT_EQUAL(bytes, 0);
    CU_ASSERT_EQUAL(wsframe_batch_plan(NULL, 65536, 100, &bytes), 0);
    outqueue_clear(&q);
}

static void wsframe_batch_on_the_wire_is_the_frames_in_order(void)
{
    const size_t lens[] = {3, 125, 126, 0, 65535, 65536, 7};
    outqueue q = queue_of(lens, 7);
    static unsigned char wire[300000];
    size_t bytes = 0;
    size_t n = wsframe_batch_plan(q.head, sizeof wire, 100, &bytes);
    CU_ASSERT_EQUAL_FATAL(n, 7);
    CU_ASSERT_EQUAL_FATAL(wsframe_batch_fill(wire, sizeof wire, q.head, n), bytes);
    /* Too small a buffer writes nothing usable. */
    CU_ASSERT_EQUAL(wsframe_batch_fill(wire, bytes - 1, q.head, n), 0);
    CU_ASSERT_EQUAL(wsframe_batch_fill(wire, sizeof wire, q.head, n), bytes);
    size_t at = 0;
    for (size_t i = 0; i < 7; i++) {
        uint64_t len = 0;
        size_t h = parse_header(wire + at, bytes - at, &len);
        CU_ASSERT_NOT_EQUAL_FATAL(h, 0);
        CU_ASSERT_EQUAL_FATAL(len, (uint64_t)lens[i]);
        at += h;
        CU_ASSERT_TRUE_FATAL(bytes - at >= lens[i]);
        for (size_t j = 0; j < lens[i]; j++)
            if (wire[at + j] != 'a' + i) {
                CU_FAIL("payload out of order or damaged");
                break;
            }
        at += lens[i];
    }
    CU_ASSERT_EQUAL(at, bytes);
    outqueue_clear(&q);
}

static void outqueue_batch_held_by_the_transport_stays_counted(void)
{
    outqueue q = {0};
    char text[1000];
    memset(text, 'x', sizeof text);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL_FATAL(outqueue_push(&q, text, 1000, 8000, 8, 0), SM_OK);
    /* Three went to lws in one write, which kept part of it. */
    outqueue_sent_many(&q, 3, 1, 2.0);
    CU_ASSERT_EQUAL(q.count, 2);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 5000);
    CU_ASSERT_EQUAL(outqueue_messages(&q), 5);
    CU_ASSERT_TRUE(outqueue_pending(&q));
    CU_ASSERT_EQUAL(q.progress_at, 2.0);
    /* The bounds still see all of them: 3 more bytes-wise fit (8000), but
     * only 3 more messages (8). */
    CU_ASSERT_EQUAL(outqueue_push(&q, text, 1000, 8000, 8, 3.0), SM_OK);
    CU_ASSERT_EQUAL(outqueue_push(&q, text, 1000, 8000, 8, 3.0), SM_OK);
    CU_ASSERT_EQUAL(outqueue_push(&q, text, 1000, 8000, 8, 3.0), SM_OK);
    CU_ASSERT_EQUAL(outqueue_push(&q, text, 1, 8000, 8, 3.0), SM_EBUSY);
    /* lws wrote the rest: the batch leaves the count. */
    outqueue_transport_drained(&q, 4.0);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 5000);
    CU_ASSERT_EQUAL(outqueue_messages(&q), 5);
    CU_ASSERT_EQUAL(q.progress_at, 4.0);
    /* A batch the socket took whole is not counted at all; asking for more
     * frames than are queued takes what is there. */
    outqueue_sent_many(&q, 100, 0, 5.0);
    CU_ASSERT_EQUAL(outqueue_unsent(&q), 0);
    CU_ASSERT_EQUAL(outqueue_messages(&q), 0);
    CU_ASSERT_FALSE(outqueue_pending(&q));
    CU_ASSERT_PTR_NULL(q.head);
    CU_ASSERT_PTR_NULL(q.tail);
    outqueue_clear(&q);
}

/* A batch of empty frames held by lws is still output pending: the stall
 * clock runs for it. */
static void outqueue_held_batch_of_empty_frames_is_pending(void)
{
    outqueue q = {0};
    CU_ASSERT_EQUAL_FATAL(outqueue_push(&q, "", 0, 8000, 8, 0), SM_OK);
    CU_ASSERT_EQUAL_FATAL(outqueue_push(&q, "", 0, 8000, 8, 0), SM_OK);
    outqueue_sent_many(&q, 2, 1, 1.0);
    CU_ASSERT_TRUE(outqueue_pending(&q));
    CU_ASSERT_EQUAL(outqueue_messages(&q), 2);
    CU_ASSERT_TRUE(outqueue_stalled(&q, 31.0, 30.0));
    outqueue_clear(&q);
    CU_ASSERT_FALSE(outqueue_pending(&q));
}

int main(void)
{
    static const sm_test_case cases[] = {
        SM_TEST(wsframe_header_lengths_follow_rfc6455),
        SM_TEST(wsframe_batch_keeps_order_and_respects_the_bounds),
        SM_TEST(wsframe_batch_on_the_wire_is_the_frames_in_order),
        SM_TEST(outqueue_batch_held_by_the_transport_stays_counted),
        SM_TEST(outqueue_held_batch_of_empty_frames_is_pending),
        SM_TEST_END,
    };
    return sm_test_run("wsframe", cases, NULL, NULL);
}
