/* The admin socket's client side: one request line, one reply line. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tool.h"
#include "write_all.h"

/* A reply may be a long list; a command may wait for a hash or a backup. */
#define REPLY_MAX (64u << 20)
#define REPLY_TIMEOUT_MS 120000

static char *read_line(int fd, char *err, size_t err_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, REPLY_TIMEOUT_MS);
        if (r == 0) {
            snprintf(err, err_len, "the server did not answer in %d s", REPLY_TIMEOUT_MS / 1000);
            break;
        }
        if (r < 0 && errno == EINTR)
            continue;
        ssize_t n = r < 0 ? -1 : read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, err_len, "the server closed the admin connection");
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (memchr(buf, '\n', len))
            return buf;
        if (len + 1 == cap) {
            char *grown = cap < REPLY_MAX ? realloc(buf, cap * 2) : NULL;
            if (!grown) {
                snprintf(err, err_len, "the reply is too large");
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    free(buf);
    return NULL;
}

int remote_call(const char *socket_path, const json_t *request, json_t **reply, char *err,
                size_t err_len)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(socket_path) >= sizeof addr.sun_path) {
        snprintf(err, err_len, "admin socket path too long: %s", socket_path);
        return -1;
    }
    memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            return 0;
        snprintf(err, err_len, "cannot connect to %s: %s%s", socket_path, strerror(e),
                 e == EACCES ? " (run as the server's user or root)" : "");
        return -1;
    }
    char *text = json_dumps(request, JSON_COMPACT);
    int rc = -1;
    char *line = NULL;
    if (!text || tool_write_all(fd, text, strlen(text)) != 0 || tool_write_all(fd, "\n", 1) != 0) {
        snprintf(err, err_len, "cannot send to %s: %s", socket_path, strerror(errno));
        goto out;
    }
    /* Our side is done: the server closes once it answered. */
    shutdown(fd, SHUT_WR);
    line = read_line(fd, err, err_len);
    if (!line)
        goto out;
    json_error_t jerr;
    *reply = json_loads(line, JSON_DISABLE_EOF_CHECK, &jerr);
    if (!*reply || !json_is_object(*reply)) {
        json_decref(*reply);
        *reply = NULL;
        snprintf(err, err_len, "the server's reply is not JSON");
        goto out;
    }
    rc = 1;
out:
    if (text) {
        /* It may carry a password (users passwd). */
        explicit_bzero(text, strlen(text));
        free(text);
    }
    free(line);
    close(fd);
    return rc;
}
