#include "wakeup.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

struct wakeup {
    int fd;
};

wakeup *wakeup_new(void)
{
    wakeup *w = malloc(sizeof *w);
    if (!w)
        return NULL;
    w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->fd < 0) {
        LOG_ERROR("cannot create an eventfd: %s", strerror(errno));
        free(w);
        return NULL;
    }
    return w;
}

void wakeup_free(wakeup *w)
{
    if (!w)
        return;
    close(w->fd);
    free(w);
}

void wakeup_signal(wakeup *w)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is at its maximum: the waiter is woken
     * anyway. Nothing else can fail on a valid eventfd. */
    ssize_t n = write(w->fd, &one, sizeof one);
    (void)n;
}

int wakeup_wait(wakeup *w, double timeout)
{
    int ms = -1;
    if (timeout >= 0) {
        /* Rounded up: waking a little late is harmless, waking early
         * spins on a timer not yet due. */
        double m = ceil(timeout * 1000.0);
        ms = m > 86400000.0 ? 86400000 : (int)m;
    }
    struct pollfd p = {.fd = w->fd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, ms);
    if (r < 0) {
        if (errno == EINTR)
            return 0;
        LOG_ERROR("cannot wait for the logic thread's wake-up: %s", strerror(errno));
        return -1;
    }
    if (r == 0)
        return 0;
    uint64_t count;
    if (read(w->fd, &count, sizeof count) < 0 && errno != EAGAIN) {
        LOG_ERROR("cannot read the logic thread's wake-up: %s", strerror(errno));
        return -1;
    }
    return 1;
}
