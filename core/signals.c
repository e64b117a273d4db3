/* Stop and reload signals read from a signalfd (see signals.h). */
#define _GNU_SOURCE
#include "signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void stop_and_reload_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

int signals_block(void)
{
    sigset_t set;
    stop_and_reload_signals(&set);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}

int signals_open(void)
{
    sigset_t set;
    stop_and_reload_signals(&set);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int signals_take(int fd)
{
    int got = 0;
    struct signalfd_siginfo info[8];
    for (;;) {
        ssize_t n = read(fd, info, sizeof info);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (size_t i = 0; i < (size_t)n / sizeof info[0]; i++)
            got |= info[i].ssi_signo == SIGHUP ? SIGNALS_RELOAD : SIGNALS_STOP;
    }
    return got;
}
