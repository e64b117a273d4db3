/* The admin socket: a Unix stream socket (server.admin_socket, mode 0600)
 * on which safemessenger-admin sends one JSON request a line and reads
 * one JSON reply a line (admin.h). Served from the lws loop, so every
 * command runs on the loop thread where the plugins run, and `disable` or
 * `kick` close live sessions at once. Only root or the server's own user
 * may talk to it (SO_PEERCRED), on top of the file mode. */
#ifndef SM_CORE_ADMIN_SOCKET_H
#define SM_CORE_ADMIN_SOCKET_H

#include <stddef.h>

struct lws_context;
struct server_config;

/* The socket's path: server.admin_socket, or "admin.sock" beside the
 * database when that is empty. Returns 0, or -1 when it does not fit
 * (a Unix socket path has at most 107 bytes). */
int admin_socket_path(const struct server_config *sc, char *out, size_t out_len);

/* Creates the socket at path (an old socket nobody answers on is
 * replaced; anything else there, or a live server, refuses the start) and
 * watches it from ctx's loop. Returns 0, or -1 after logging why. */
int admin_socket_start(struct lws_context *ctx, const char *path);
/* Removes the socket file; the descriptors go with the context. Call
 * before destroying the context. */
void admin_socket_stop(void);

#endif
