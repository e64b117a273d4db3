/* struct ucred and accept4 are GNU extensions. */
#define _GNU_SOURCE
#include "admin_socket.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "log.h"

/* A request line is small ({"command", "args"}); anything longer is not
 * the admin tool talking. */
#define ADMIN_LINE_MAX 65536
#define ADMIN_BACKLOG 8
#define ADMIN_MAX_CONNS 16

typedef struct admin_conn {
    struct lws *wsi;
    int fd;
    char in[ADMIN_LINE_MAX];
    size_t in_len;
    char *out;                /* reply lines not yet written */
    size_t out_len, out_off;
    sm_admin_ctx *pending;    /* a deferred command's context */
    int busy;                 /* a command runs: read nothing more meanwhile */
    int eof;                  /* the peer shut its side: close once written */
} admin_conn;

static struct lws *listener;
static int listen_fd = -1;
static struct lws_vhost *admin_vhost;
static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static size_t n_conns;

int admin_socket_path(const server_config *sc, char *out, size_t out_len)
{
    int n;
    size_t max = sizeof socket_path;
    if (sc->admin_socket && *sc->admin_socket) {
        n = snprintf(out, out_len, "%s", sc->admin_socket);
    } else {
        /* Beside the SQLite file; on PostgreSQL, beside the key file, the
         * one file such a server surely has in its state directory. */
        const char *beside = strcmp(sc->backend, "postgresql") == 0 ? sc->key_file : sc->database;
        const char *slash = strrchr(beside, '/');
        int dir_len = slash ? (int)(slash - beside) : 1;
        n = snprintf(out, out_len, "%.*s/admin.sock", dir_len, slash ? beside : ".");
    }
    if (n < 0 || (size_t)n >= out_len || (size_t)n >= max)
        return -1;
    return 0;
}

/* ---- one connection ----------------------------------------------------- */

static void conn_queue(admin_conn *c, const char *text)
{
    size_t len = strlen(text);
    char *grown = realloc(c->out, c->out_len + len + 1);
    if (!grown) {
        /* Cannot answer: end the connection rather than leave the tool
         * waiting. */
        c->eof = 1;
        lws_callback_on_writable(c->wsi);
        return;
    }
    memcpy(grown + c->out_len, text, len);
    grown[c->out_len + len] = '\n';
    c->out = grown;
    c->out_len += len + 1;
    lws_callback_on_writable(c->wsi);
}

/* Reading pauses while a command runs (and after the peer's EOF): the
 * descriptor would stay readable, and the loop would spin on it. */
static void set_busy(admin_conn *c, int busy)
{
    c->busy = busy;
    lws_rx_flow_control(c->wsi, busy || c->eof ? 0 : 1);
}

static void conn_done(const json_t *reply, void *arg)
{
    admin_conn *c = arg;
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    c->pending = NULL;
    set_busy(c, 0);
    if (text)
        conn_queue(c, text);
    else
        conn_queue(c, "{\"ok\":false,\"status\":\"no_memory\",\"error\":\"out of memory\"}");
    free(text);
}

static void run_line(admin_conn *c, const char *line)
{
    json_error_t err;
    json_t *request = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    set_busy(c, 1);
    if (!request) {
        json_t *reply = json_pack("{s:b, s:s, s:s}", "ok", 0, "status", "invalid", "error",
                                  "a request is one JSON object a line");
        conn_done(reply, c);
        json_decref(reply);
        return;
    }
    c->pending = admin_run(request, conn_done, c);
    admin_scrub(request);
    json_decref(request);
}

/* Runs the complete lines received; one command at a time, so replies
 * come back in request order. */
static void run_lines(admin_conn *c)
{
    while (!c->busy) {
        char *nl = memchr(c->in, '\n', c->in_len);
        if (!nl)
            return;
        *nl = '\0';
        size_t used = (size_t)(nl - c->in) + 1;
        /* The line is copied out: the command may finish later, after
         * more input arrived. */
        char *line = strdup(c->in);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        /* The line may hold a password (users passwd): no copy stays. */
        explicit_bzero(c->in + c->in_len, used);
        if (!line) {
            c->eof = 1;
            lws_callback_on_writable(c->wsi);
            return;
        }
        run_line(c, line);
        explicit_bzero(line, strlen(line));
        free(line);
    }
}

static int conn_read(admin_conn *c)
{
    if (c->busy || c->eof)
        return 0;
    ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) {
        c->eof = 1;
        set_busy(c, c->busy);
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    c->in_len += (size_t)n;
    run_lines(c);
    if (!c->busy && c->in_len == sizeof c->in) {
        LOG_WARN("admin socket: a request line over %d bytes; closing", ADMIN_LINE_MAX);
        return -1;
    }
    return 0;
}

static int conn_write(admin_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                lws_callback_on_writable(c->wsi);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (c->eof && !c->busy)
        return -1;
    /* Lines that arrived while a command ran. */
    run_lines(c);
    return 0;
}

static void conn_free(admin_conn *c)
{
    /* A deferred command may still answer: into nothing. */
    admin_detach(c->pending);
    free(c->out);
    free(c);
    n_conns--;
}

/* ---- accepting ---------------------------------------------------------- */

/* Root, or the user the server runs as: the file mode already says so,
 * but a socket's mode is not honoured everywhere, and the check is
 * cheap. */
static int peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    if (cred.uid == 0 || cred.uid == geteuid())
        return 1;
    LOG_WARN("admin socket: refused a connection from uid %u (pid %d)", (unsigned)cred.uid,
             (int)cred.pid);
    return 0;
}

static void accept_one(void)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (!peer_allowed(fd) || n_conns >= ADMIN_MAX_CONNS) {
        close(fd);
        return;
    }
    admin_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    n_conns++;
    lws_sock_file_fd_type desc;
    desc.filefd = fd;
    c->wsi = lws_adopt_descriptor_vhost(admin_vhost, LWS_ADOPT_RAW_FILE_DESC, desc, "sm-admin",
                                        NULL);
    if (!c->wsi) {
        close(fd);
        n_conns--;
        free(c);
        return;
    }
    lws_set_opaque_user_data(c->wsi, c);
}

static int admin_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                          void *in, size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    if (wsi == listener) {
        if (reason == LWS_CALLBACK_RAW_RX_FILE)
            accept_one();
        else if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
            listener = NULL;
            listen_fd = -1;
        }
        return 0;
    }
    admin_conn *c = lws_get_opaque_user_data(wsi);
    if (!c)
        return 0; /* adoption callbacks, before the connection is ours */
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        return conn_read(c);
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        return conn_write(c);
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        lws_set_opaque_user_data(wsi, NULL);
        conn_free(c);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols admin_protocols[] = {
    {"sm-admin", admin_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

/* ---- the socket file ---------------------------------------------------- */

/* A socket at path that nobody answers on is left from a server that
 * died: replaced. One that answers is another server's: refused. */
static int clear_path(const char *path, const struct sockaddr_un *addr)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        LOG_ERROR("admin socket: %s exists and is not a socket; not touching it", path);
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -1;
    int live = connect(probe, (const struct sockaddr *)addr, sizeof *addr) == 0;
    close(probe);
    if (live) {
        LOG_ERROR("admin socket: %s is in use (another server running?)", path);
        return -1;
    }
    if (unlink(path) != 0) {
        LOG_ERROR("admin socket: cannot remove the stale %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_socket(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path) {
        LOG_ERROR("admin socket: path too long: %s", path);
        return -1;
    }
    memcpy(addr.sun_path, path, len + 1);
    if (clear_path(path, &addr) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG_ERROR("admin socket: %s", strerror(errno));
        return -1;
    }
    /* Created 0600 from the start (no moment at which others could
     * connect); the umask is process-wide, and nothing else creates files
     * at this point of the start-up. */
    mode_t old = umask(0177);
    int rc = bind(fd, (const struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, ADMIN_BACKLOG) != 0) {
        LOG_ERROR("admin socket: cannot listen on %s: %s", path, strerror(errno));
        if (rc == 0)
            unlink(path);
        close(fd);
        return -1;
    }
    return fd;
}

int admin_socket_start(struct lws_context *ctx, const char *path)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = admin_protocols;
    info.vhost_name = "sm-admin";
    admin_vhost = lws_create_vhost(ctx, &info);
    if (!admin_vhost) {
        LOG_ERROR("admin socket: cannot create its vhost");
        return -1;
    }
    listen_fd = open_socket(path);
    if (listen_fd < 0)
        return -1;
    snprintf(socket_path, sizeof socket_path, "%s", path);
    lws_sock_file_fd_type desc;
    desc.filefd = listen_fd;
    listener = lws_adopt_descriptor_vhost(admin_vhost, LWS_ADOPT_RAW_FILE_DESC, desc, "sm-admin",
                                          NULL);
    if (!listener) {
        LOG_ERROR("admin socket: cannot watch %s", path);
        close(listen_fd);
        listen_fd = -1;
        unlink(socket_path);
        socket_path[0] = '\0';
        return -1;
    }
    LOG_INFO("admin socket on %s", path);
    return 0;
}

void admin_socket_stop(void)
{
    if (socket_path[0])
        unlink(socket_path);
    socket_path[0] = '\0';
    admin_vhost = NULL;
}
