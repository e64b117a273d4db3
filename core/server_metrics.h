/* The server's own metrics (docs/OPERATIONS.md, "Monitoring"): the
 * families in g_core.metrics, counted where the events happen, and the
 * gauges read at scrape time. Every function is safe before
 * server_metrics_init and after the registry is gone (it counts nothing
 * then), so unit tests that start no core need not set it up.
 *
 * Threads: every function but init and reset is safe from any thread
 * (the I/O threads count handshakes and deliveries and answer /metrics;
 * the logic thread counts commands and moves plugins and sessions). init
 * runs before those threads start and reset after they stopped. */
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

/* The categories of safemessenger_sessions{state}: a session in
 * SESSION_HANDSHAKE, SESSION_KEY_PENDING or SESSION_CLOSING is in that
 * one (closing even when logged in); SESSION_OPEN is logged_in with a
 * username and open without. NONE: not a session (created, destroyed).
 * The state is the I/O side's and the login the logic side's, on
 * different threads: session.c keeps both in one atomic word per session
 * and moves the session's count once per change of that word. */
#define SERVER_METRICS_SESSION_NONE (-1)
#define SERVER_METRICS_SESSION_HANDSHAKE 0
#define SERVER_METRICS_SESSION_KEY_PENDING 1
#define SERVER_METRICS_SESSION_OPEN 2
#define SERVER_METRICS_SESSION_LOGGED_IN 3
#define SERVER_METRICS_SESSION_CLOSING 4
/* A session moved from one category to another (session.c, as it
 * changes them): the counts a scrape reads, kept as they change rather
 * than found by walking the logic thread's sessions. */
void server_metrics_session_state(int from, int to);

/* A plugin was loaded (loaded 1) or unloaded (0): its
 * safemessenger_plugin_info series is 1 while it is loaded; one unloaded
 * by a reload keeps its series, at 0. Logic thread (the plugin loader). */
void server_metrics_plugin(const char *name, const char *version, int loaded);

/* Sets the scrape-time gauges: sessions by state, worker queue depth,
 * process CPU and memory. Any thread, several at once (/metrics is
 * answered on the I/O thread of its connection): it reads only atomics,
 * the worker pool under its lock and the process's own counters. */
void server_metrics_collect(void);

#endif
