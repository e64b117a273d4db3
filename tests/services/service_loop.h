/* The lws loop a services suite drives itself (redis_link and what runs
 * on it): one context, no listener, turned by hand with every wait
 * bounded. */
#ifndef SM_TEST_SERVICE_LOOP_H
#define SM_TEST_SERVICE_LOOP_H

struct lws_context;

extern struct lws_context *service_loop_ctx;

/* Creates the context (lws logs errors and warnings only): 0 or -1. */
int service_loop_init(void);
/* Destroys it; stop what runs on it first. */
void service_loop_cleanup(void);
/* One turn of the loop, never longer than 10 ms. */
void service_loop_pump(void);
/* The monotonic clock, in seconds. */
double service_loop_now(void);

/* Runs the loop until cond holds or ms pass; the caller asserts cond. */
#define SERVICE_WAIT_FOR(cond, ms)                                                                \
    do {                                                                                          \
        double wait_end_ = service_loop_now() + (ms) / 1000.0;                                    \
        while (!(cond) && service_loop_now() < wait_end_)                                         \
            service_loop_pump();                                                                  \
    } while (0)

#endif
