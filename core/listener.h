/* The listening socket, owned by the core rather than by lws: lws 4.1
 * treats its `iface` as an interface name first and, with IPv6 enabled,
 * parses an IPv4 literal into the wrong bytes of a sockaddr_in6, so
 * "127.0.0.1" silently listened on every address. Here server.bind is
 * parsed and bound exactly, errors carry the real errno, and the transport
 * accepts connections itself and hands each socket to lws. No lws here.
 *
 * server.bind is an IP address literal, nothing else (a host name is
 * refused, so what is bound never depends on name resolution):
 *   "0.0.0.0"       every IPv4 address
 *   "::"            every address, IPv6 and IPv4 (dual-stack; set explicitly,
 *                   whatever net.ipv6.bindv6only says)
 *   "127.0.0.1"     exactly this IPv4 address
 *   "::1", "[::1]"  exactly this IPv6 address (IPv6 only); a link-local
 *                   address may name its interface: "fe80::1%eth0" */
#ifndef SM_CORE_LISTENER_H
#define SM_CORE_LISTENER_H

#include <stddef.h>

/* Room for "[<IPv6>%<interface>]:65535". */
#define LISTENER_ADDRESS_LEN 80

/* Checks that address is one listener_open() accepts. Returns 0, or -1
 * with the reason in err. */
int listener_check_address(const char *address, char *err, size_t err_len);

/* Opens a non-blocking, close-on-exec TCP socket listening on exactly
 * address:port (port 0: the kernel picks one). Returns the descriptor, or -1
 * with the reason in err, naming the address and the failing call's
 * strerror (e.g. "cannot listen on 127.0.0.1:8765: Address already in
 * use"). */
int listener_open(const char *address, int port, char *err, size_t err_len);

/* The address a socket is bound to, read back with getsockname():
 * "127.0.0.1:8765" or "[::1]:8765". *port_out (may be NULL) receives the
 * port. Returns 0 or -1. */
int listener_local_address(int fd, char *buf, size_t buf_len, int *port_out);

/* The socket's address family (AF_INET or AF_INET6), or -1. */
int listener_family(int fd);

/* The peer's address without the port; an IPv4 peer of a dual-stack
 * socket is shown as plain IPv4. Returns 0 or -1. */
int listener_peer_address(int fd, char *buf, size_t buf_len);

/* Accepts one waiting connection, non-blocking and close-on-exec, with
 * Nagle off. Returns the descriptor, or -1 with errno set (EAGAIN when
 * none is waiting). */
int listener_accept(int fd);

#endif
