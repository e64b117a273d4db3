/* The WebSocket transport on libwebsockets: our own listening socket whose
 * connections are handed to one vhost whose default
 * protocol is ours (so clients offering no subprotocol reach it), GET
 * /healthz on the same port, the Origin check, message reassembly under our
 * own size cap, the bounded send queue written one frame per WRITEABLE
 * callback, and the loop's wake-ups for timers and worker completions. */
#ifndef SM_CORE_TRANSPORT_H
#define SM_CORE_TRANSPORT_H

#include "config.h"

/* Opens the listening socket on exactly sc->bind (listener.c), creates the
 * lws context and the vhost that serves the connections accepted from it,
 * and logs the address actually bound. *port_out receives the bound port
 * (useful with port 0). Returns 0, or -1 after logging the reason. */
int transport_start(const server_config *sc, int *port_out);
/* Runs the loop until SIGINT or SIGTERM (read from a signalfd on this
 * thread, signals.h: main blocks them first); then closes every session
 * with 1001 and waits (bounded) for their queues to flush. After each
 * SIGHUP it calls on_reload (may be NULL) on the loop thread, between two
 * services. Returns 0, or -1 after transport_fail. */
int transport_run(void (*on_reload)(void));
/* Has transport_run stop as for SIGTERM but return -1 (the server exits
 * with a failure status), after logging why at error level. Logic
 * thread. */
void transport_fail(const char *why);
/* Destroys the context (remaining connections are dropped). */
void transport_stop(void);
/* Worker wake-up hook (any thread). */
void transport_wake(void *unused);

#endif
