#include "service_loop.h"

#include <libwebsockets.h>
#include <string.h>
#include <time.h>

struct lws_context *service_loop_ctx;
static lws_sorted_usec_list_t tick;

static void tick_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

int service_loop_init(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.port = CONTEXT_PORT_NO_LISTEN;
    service_loop_ctx = lws_create_context(&info);
    return service_loop_ctx ? 0 : -1;
}

void service_loop_cleanup(void)
{
    if (!service_loop_ctx)
        return;
    lws_sul_schedule(service_loop_ctx, 0, &tick, tick_cb, LWS_SET_TIMER_USEC_CANCEL);
    lws_context_destroy(service_loop_ctx);
    service_loop_ctx = NULL;
}

/* lws_service waits for the next event or timer, and the tick is a
 * timer. */
void service_loop_pump(void)
{
    lws_sul_schedule(service_loop_ctx, 0, &tick, tick_cb, 10 * LWS_US_PER_MS);
    lws_service(service_loop_ctx, 0);
}

double service_loop_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
