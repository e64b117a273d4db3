#include "write_all.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

int tool_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    int is_socket = 1;
    while (len > 0) {
        /* send() for sockets: MSG_NOSIGNAL keeps a closed peer from
         * killing the tool; files (ENOTSOCK) go through write(). */
        ssize_t n = is_socket ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (n < 0 && is_socket && errno == ENOTSOCK) {
            is_socket = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
