#include "acceptor.h"

#include <errno.h>
#include <libwebsockets.h>
#include <string.h>

#include "core.h"
#include "listener.h"
#include "log.h"

/* Connections accepted per wake-up, so a burst does not starve the
 * established ones. */
#define ACCEPT_BATCH 64
/* Out of descriptors: stop accepting this long instead of spinning on a
 * listening socket that stays readable. */
#define ACCEPT_PAUSE_USEC 100000

static struct lws_context *lws_ctx;
static void (*hand)(int fd);       /* where accepted sockets go */
static int listen_fd = -1;
static struct lws *acceptor;
static lws_sorted_usec_list_t accept_pause_sul;
static double accept_error_logged_at = -1e9;

static void accept_resume(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    if (acceptor)
        lws_rx_flow_control(acceptor, 1);
}

static void accept_waiting(void)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = listener_accept(listen_fd);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED)
                return;
            double now = core_mono_now();
            if (now - accept_error_logged_at >= 10.0) {
                LOG_WARN("cannot accept a connection: %s", strerror(e));
                accept_error_logged_at = now;
            }
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                lws_rx_flow_control(acceptor, 0);
                lws_sul_schedule(lws_ctx, 0, &accept_pause_sul, accept_resume,
                                 ACCEPT_PAUSE_USEC);
            }
            return;
        }
        hand(fd);
    }
}

static int acceptor_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    (void)wsi;
    (void)user;
    (void)in;
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        accept_waiting();
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        /* lws closes the descriptor with the wsi. */
        acceptor = NULL;
        listen_fd = -1;
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols acceptor_protocols[] = {
    {"sm-acceptor", acceptor_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Watches the listening socket from the lws loop, on a vhost that serves
 * nothing, so no client can select its protocol. */
int acceptor_start(struct lws_context *ctx, int fd, void (*hand_fd)(int fd))
{
    lws_ctx = ctx;
    listen_fd = fd;
    hand = hand_fd;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = acceptor_protocols;
    info.vhost_name = "sm-acceptor";
    struct lws_vhost *vh = lws_create_vhost(ctx, &info);
    if (!vh)
        return -1;
    lws_sock_file_fd_type desc;
    desc.filefd = listen_fd;
    acceptor = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, desc, "sm-acceptor", NULL);
    if (!acceptor)
        listen_fd = -1; /* still the caller's */
    return acceptor ? 0 : -1;
}


void acceptor_stop(void)
{
    if (lws_ctx)
        lws_sul_cancel(&accept_pause_sul);
    lws_ctx = NULL;
    hand = NULL;
}
