/* accept4() */
#define _GNU_SOURCE
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Pending connections the kernel holds for us; it caps this at somaxconn. */
#define LISTEN_BACKLOG 511

/* Parses an address literal into *sa / *len. Returns 0, or -1 with the
 * reason in err. */
static int parse_address(const char *address, int port, struct sockaddr_storage *sa,
                         socklen_t *len, char *err, size_t err_len)
{
    memset(sa, 0, sizeof *sa);
    if (!address || !*address) {
        snprintf(err, err_len, "server.bind is empty: give an IP address (\"0.0.0.0\" for "
                               "every IPv4 address, \"::\" for every address)");
        return -1;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    /* IPv6: optional brackets (as logged), optional %interface. */
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 4];
    size_t n = strlen(address);
    if (n >= sizeof text)
        goto not_literal;
    if (address[0] == '[') {
        if (n < 3 || address[n - 1] != ']')
            goto not_literal;
        memcpy(text, address + 1, n - 2);
        text[n - 2] = '\0';
    } else {
        memcpy(text, address, n + 1);
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    char *scope = strchr(text, '%');
    if (scope) {
        *scope++ = '\0';
        unsigned index = if_nametoindex(scope);
        if (index == 0) {
            snprintf(err, err_len, "server.bind \"%s\": no network interface named \"%s\"",
                     address, scope);
            return -1;
        }
        v6->sin6_scope_id = index;
    }
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) != 1)
        goto not_literal;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return 0;
not_literal:
    snprintf(err, err_len,
             "server.bind \"%s\" is not an IP address: give an IPv4 or IPv6 address such as "
             "\"127.0.0.1\", \"::1\", \"0.0.0.0\" (every IPv4 address) or \"::\" (every "
             "address); host names are not resolved",
             address);
    return -1;
}

/* "a.b.c.d:port" / "[v6%if]:port", or the bare address without with_port. */
static int format_address(const struct sockaddr_storage *sa, int with_port, char *buf,
                          size_t buf_len, int *port_out)
{
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    int port;
    int n;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host))
            return -1;
        port = ntohs(v4->sin_port);
        n = with_port ? snprintf(buf, buf_len, "%s:%d", host, port)
                      : snprintf(buf, buf_len, "%s", host);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        port = ntohs(v6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            /* A dual-stack socket's IPv4 peer: show it as IPv4. */
            if (!inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], host, sizeof host))
                return -1;
            n = with_port ? snprintf(buf, buf_len, "%s:%d", host, port)
                          : snprintf(buf, buf_len, "%s", host);
        } else {
            if (!inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host))
                return -1;
            char ifname[IF_NAMESIZE];
            if (v6->sin6_scope_id && if_indextoname(v6->sin6_scope_id, ifname)) {
                size_t used = strlen(host);
                snprintf(host + used, sizeof host - used, "%%%s", ifname);
            }
            n = with_port ? snprintf(buf, buf_len, "[%s]:%d", host, port)
                          : snprintf(buf, buf_len, "%s", host);
        }
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= buf_len)
        return -1;
    if (port_out)
        *port_out = port;
    return 0;
}

int listener_check_address(const char *address, char *err, size_t err_len)
{
    struct sockaddr_storage sa;
    socklen_t len;
    return parse_address(address, 0, &sa, &len, err, err_len);
}

int listener_open(const char *address, int port, char *err, size_t err_len)
{
    struct sockaddr_storage sa;
    socklen_t len;
    if (parse_address(address, port, &sa, &len, err, err_len) != 0)
        return -1;
    char where[LISTENER_ADDRESS_LEN];
    if (format_address(&sa, 1, where, sizeof where, NULL) != 0)
        snprintf(where, sizeof where, "%s port %d", address, port);
    const char *step = "socket";
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1, zero = 0;
    /* A restart must not wait for the old connections' TIME_WAIT. */
    step = "SO_REUSEADDR";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        goto fail;
    if (sa.ss_family == AF_INET6) {
        /* Only the unspecified address "::" is dual-stack; set either way so
         * the sysctl net.ipv6.bindv6only does not decide. */
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&sa;
        int v6only = IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr) ? zero : one;
        step = "IPV6_V6ONLY";
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0)
            goto fail;
    }
    /* bind and listen errors speak for themselves ("Address already in
     * use", "Cannot assign requested address"). */
    step = NULL;
    if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    snprintf(err, err_len, "cannot listen on %s: %s%s%s", where, step ? step : "",
             step ? ": " : "", strerror(e));
    return -1;
}

int listener_local_address(int fd, char *buf, size_t buf_len, int *port_out)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    return format_address(&sa, 1, buf, buf_len, port_out);
}

int listener_family(int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    return sa.ss_family;
}

int listener_peer_address(int fd, char *buf, size_t buf_len)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    return format_address(&sa, 0, buf, buf_len, NULL);
}

int listener_accept(int fd)
{
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return -1;
    int one = 1;
    /* Replies are whole frames written at once: no reason to delay them. */
    (void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}
