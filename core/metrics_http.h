/* GET /metrics on the server's port: the registry in the Prometheus text
 * format, to TCP peers in metrics.allow only (403 for the others;
 * X-Forwarded-For is never consulted). The page is rendered once per
 * request and written in chunks, one per WRITEABLE callback. */
#ifndef SM_CORE_METRICS_HTTP_H
#define SM_CORE_METRICS_HTTP_H

struct lws;
typedef struct metrics_reply metrics_reply;

/* Sends the headers and keeps the body in *reply (the caller's
 * per-connection slot, NULL before). Returns as an lws HTTP callback
 * does: 0, or non-zero to close the connection. */
int metrics_http_request(struct lws *wsi, metrics_reply **reply);
/* Writes the next chunk of *reply; after the last one frees it and ends
 * the transaction. Returns as an lws callback does. */
int metrics_http_writeable(struct lws *wsi, metrics_reply **reply);
/* Frees an unfinished reply (the connection closed); NULL is fine. */
void metrics_http_free(metrics_reply **reply);

#endif
