/* Accepting: the core's listening socket (listener.c) watched from an lws
 * loop, each accepted connection handed to the WebSocket vhost. Its own
 * module because where connections go is a decision of its own: one
 * context today, spread over several I/O threads' contexts later. */
#ifndef SM_CORE_ACCEPTOR_H
#define SM_CORE_ACCEPTOR_H

struct lws_context;
struct lws_vhost;

/* Watches listen_fd from ctx's loop (on a vhost of its own that serves
 * nothing, so no client can select its protocol) and adopts every
 * accepted socket into target. On success the descriptor belongs to lws
 * and is closed with the context; on failure it is left to the caller.
 * Returns 0 or -1. */
int acceptor_start(struct lws_context *ctx, int listen_fd, struct lws_vhost *target);

/* Cancels a pending resume; call before destroying the context. */
void acceptor_stop(void);

#endif
