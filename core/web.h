/* Serves the browser client's static files (web.root) over HTTP on the
 * server's port: GET and HEAD, every path that the transport does not
 * reserve (/healthz). Files are streamed in chunks from the loop's
 * writeable callbacks, never read whole; the headers fix the page's
 * Content-Security-Policy (docs/OPERATIONS.md, "The web client"). */
#ifndef SM_CORE_WEB_H
#define SM_CORE_WEB_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct lws;

/* One HTTP connection's file in flight; zeroed memory is the idle state
 * (the transport's per-connection data is zeroed by lws). */
typedef struct web_request {
    int active;         /* a response of ours is in progress */
    int fd;             /* the file, when active and body left */
    int has_body;       /* fd is open and remaining bytes go out */
    int close_after;    /* end the connection once the response is out */
    uint64_t remaining; /* bytes of the body still to write */
    int status;         /* an error response's status (its body is short text) */
} web_request;

/* What --check-config and the start check: with web.enabled, a web.root
 * that was written in the file must be a directory (else an error naming
 * it, -1); the built-in default may be missing (a warning: nothing is
 * served). Returns 0 or -1. */
int web_check(const server_config *sc);

/* Opens the root for serving (web.enabled); a missing default root leaves
 * serving off with the warning of web_check. Returns 0 or -1. */
int web_start(const server_config *sc);
void web_stop(void);

/* Whether this module answers the request: serving is on. */
int web_serving(void);

/* Whether the request's method is GET or HEAD, the only ones the server
 * answers on any path (HTTP/1 and HTTP/2). */
int web_method_allowed(struct lws *wsi);
/* Answers 405 with Allow: GET, HEAD (and closes an HTTP/1 connection, whose
 * unread body would otherwise follow); for any path, web serving on or
 * off. Returns what the callback returns. */
int web_http_refuse_method(struct lws *wsi, web_request *r);
/* LWS_CALLBACK_HTTP for a path the transport does not reserve, after the
 * method was allowed; uri/len as lws passes them. Returns what the
 * callback returns. */
int web_http(struct lws *wsi, web_request *r, const char *uri, size_t len);
/* LWS_CALLBACK_HTTP_WRITEABLE while r->active. */
int web_http_writeable(struct lws *wsi, web_request *r);
/* The connection closed or left HTTP: frees what r holds. */
void web_http_release(web_request *r);

#endif
