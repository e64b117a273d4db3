/* The server's own metrics (docs/OPERATIONS.md, "Monitoring"): the
 * families in g_core.metrics, counted where the events happen, and the
 * gauges read at scrape time. Every function is safe before
 * server_metrics_init and after the registry is gone (it counts nothing
 * then), so unit tests that start no core need not set it up. */
#ifndef SM_CORE_SERVER_METRICS_H
#define SM_CORE_SERVER_METRICS_H

#include "metrics.h"

/* Registers the families in m; 0, or -1 when out of memory. */
int server_metrics_init(metrics *m);
/* Forgets the families (their registry is being freed). */
void server_metrics_reset(void);

/* A WebSocket connection became a session. */
void server_metrics_connection(void);
/* A handshake ended: "ok", "failed", "refused" or "timeout". */
void server_metrics_handshake(const char *result);
/* A command finished: `action` a registered action name, or NULL for an
 * unknown one; `code` 0 for success or the error code replied; `seconds`
 * from dispatch to reply. */
void server_metrics_command(const char *action, int code, double seconds);
/* An event was queued to a session. */
void server_metrics_delivery(void);
/* A session was cut off for not reading its output: "queue_full" or
 * "send_timeout". */
void server_metrics_send_queue_drop(const char *reason);

/* Sets the scrape-time gauges: sessions by state, worker queue depth,
 * plugin info, process CPU and memory. Loop thread. */
void server_metrics_collect(void);

#endif
