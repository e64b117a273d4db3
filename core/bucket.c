#include "bucket.h"

#include <math.h>

void bucket_init(bucket *b, double burst, double now)
{
    b->tokens = burst;
    b->at = now;
}

double bucket_wait(bucket *b, double rate, double burst, double cost, double now)
{
    if (now > b->at) {
        b->tokens += (now - b->at) * rate;
        if (b->tokens > burst)
            b->tokens = burst;
        b->at = now;
    }
    double need = cost < burst ? cost : burst;
    return b->tokens >= need ? 0 : (need - b->tokens) / rate;
}

void bucket_take(bucket *b, double cost) { b->tokens -= cost; }

double bucket_retry_after(double seconds) { return ceil(seconds * 1000.0) / 1000.0; }
