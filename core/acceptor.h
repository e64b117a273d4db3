/* Accepting: the core's listening socket (listener.c) watched from one
 * I/O thread's lws loop, each accepted connection handed on to the I/O
 * thread that takes it (transport.c decides which, and says why one
 * acceptor rather than a listening socket per thread). */
#ifndef SM_CORE_ACCEPTOR_H
#define SM_CORE_ACCEPTOR_H

struct lws_context;
struct lws_vhost;

/* Watches listen_fd from ctx's loop (on a vhost of its own that serves
 * nothing, so no client can select its protocol) and gives every accepted
 * socket to hand (on ctx's thread), which owns it from then on. On success
 * the listening descriptor belongs to lws and is closed with the context;
 * on failure it is left to the caller. Returns 0 or -1. */
int acceptor_start(struct lws_context *ctx, int listen_fd, void (*hand)(int fd));

/* Cancels a pending resume; call before destroying the context. */
void acceptor_stop(void);

#endif
