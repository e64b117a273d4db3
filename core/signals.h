/* SIGINT, SIGTERM and SIGHUP as events of the logic thread's loop.
 *
 * main() blocks the three before it starts any thread, so every thread
 * inherits the mask and none runs an asynchronous handler; the loop reads
 * them from a signalfd between two callbacks. A signal that comes while the
 * plugins load waits for the loop instead of killing a half-started server
 * (SIGTERM: it starts, then stops cleanly; SIGHUP: the reload runs once the
 * loop does). Why not a handler: it runs on whichever thread the kernel
 * picks, and under ThreadSanitizer one delivered to an I/O thread that had
 * just started was lost, and the server never stopped. */
#ifndef SM_SIGNALS_H
#define SM_SIGNALS_H

enum {
    SIGNALS_STOP = 1,   /* SIGINT or SIGTERM */
    SIGNALS_RELOAD = 2, /* SIGHUP */
};

/* Blocks the three signals in the calling thread (and so in every thread
 * it starts from now on). Returns 0, or -1 with errno. */
int signals_block(void);

/* A non-blocking, close-on-exec signalfd for the three, which must be
 * blocked already. Returns the descriptor, or -1 with errno. */
int signals_open(void);

/* Reads every signal waiting on fd: SIGNALS_STOP and/or SIGNALS_RELOAD, 0
 * when none was waiting. */
int signals_take(int fd);

#endif
