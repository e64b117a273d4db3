/* Latency histograms (see bench.h). A fixed log-linear
 * histogram instead of a sample array: memory does not grow with the
 * millions of deliveries a fan-out run sees, and adding a sample is a few
 * instructions on the loop's hot path. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned top_bit(uint64_t v)
{
    return 63u - (unsigned)__builtin_clzll(v);
}

static size_t bucket_of(uint64_t v)
{
    if (v < HIST_SUB)
        return (size_t)v;
    unsigned e = top_bit(v);   /* >= HIST_SUB_BITS */
    unsigned shift = e - HIST_SUB_BITS;
    size_t sub = (size_t)((v >> shift) & (HIST_SUB - 1));
    return HIST_SUB + (size_t)shift * HIST_SUB + sub;
}

/* The largest value that falls into bucket b. */
static uint64_t bucket_top(size_t b)
{
    if (b < HIST_SUB)
        return (uint64_t)b;
    size_t shift = (b - HIST_SUB) / HIST_SUB;
    uint64_t sub = (uint64_t)((b - HIST_SUB) % HIST_SUB);
    uint64_t low = (HIST_SUB + sub) << shift;
    return low + ((uint64_t)1 << shift) - 1;
}

uint64_t bench_arrival_mono(int64_t real_ns, int64_t *offset_ns, uint64_t now_ns,
                            int64_t (*fresh_offset)(void))
{
    int64_t mono = real_ns - *offset_ns;
    if (mono > (int64_t)now_ns && fresh_offset) {
        /* Later than now: the realtime clock stepped forward since the
         * offset was taken (a resumed VM did, by 3.7 s, once). */
        *offset_ns = fresh_offset();
        mono = real_ns - *offset_ns;
    }
    return mono > 0 && mono <= (int64_t)now_ns ? (uint64_t)mono : 0;
}

void hist_reset(bench_hist *h)
{
    memset(h, 0, sizeof *h);
}

void hist_add(bench_hist *h, uint64_t value)
{
    h->counts[bucket_of(value)]++;
    h->n++;
    h->sum += (double)value;
    if (value > h->max)
        h->max = value;
}

void hist_merge(bench_hist *into, const bench_hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->n += from->n;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_percentile(const bench_hist *h, double p)
{
    if (h->n == 0 || !(p > 0))
        return 0;
    if (p >= 100)
        return h->max;
    /* Nearest rank: ceil(p/100 * n), at least 1. */
    double exact = p / 100.0 * (double)h->n;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            uint64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

double hist_mean(const bench_hist *h)
{
    return h->n ? h->sum / (double)h->n : 0.0;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

json_t *hist_json_ms(const bench_hist *h)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f}", "samples", (json_int_t)h->n, "p50",
                     ms(hist_percentile(h, 50)), "p99", ms(hist_percentile(h, 99)), "max",
                     ms(h->max), "mean", hist_mean(h) / 1e6);
}
