/* Token buckets: the per-session command and byte limits (dispatch) and
 * the per-room fan-out budget (topics). A bucket refills at `rate` tokens
 * a second up to `burst`. A cost above the burst passes when the bucket is
 * full and leaves a debt, so one large charge waits its full price rather
 * than never passing. Times are monotonic seconds from the caller. */
#ifndef SM_CORE_BUCKET_H
#define SM_CORE_BUCKET_H

typedef struct bucket {
    double tokens;
    double at; /* when tokens was last brought up to date */
} bucket;

/* A full bucket. */
void bucket_init(bucket *b, double burst, double now);
/* Refills the bucket to now and returns the seconds until `cost` could be
 * taken (0: it can be taken now). */
double bucket_wait(bucket *b, double rate, double burst, double cost, double now);
/* Takes cost; call after bucket_wait returned 0. */
void bucket_take(bucket *b, double cost);
/* Seconds as sent in "retry_after": rounded up to the millisecond, so a
 * client that waits that long finds the tokens there. */
double bucket_retry_after(double seconds);

#endif
