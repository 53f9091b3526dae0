/* http.h: the observability HTTP server on http.listen (SPEC §8):
 * GET /healthz, /metrics, /status, /conflicts. It runs on its own thread
 * (libmicrohttpd), so everything it touches must be thread-safe. */
#ifndef TANDEM_HTTP_H
#define TANDEM_HTTP_H

#include "err.h"
#include "health.h"
#include "metrics.h"

/* What the server serves. Any member may be NULL; its route then answers
 * 500. The callbacks run on the server thread, concurrently with the
 * daemon, and return a malloc'd JSON text the server frees, or NULL for a
 * 500 response. */
struct http_handlers {
    struct metrics *metrics;
    struct health *health;
    char *(*status_json)(void *arg);
    char *(*conflicts_json)(void *arg);
    void *arg;
};

struct http;

/* Starts serving on listen, "HOST:PORT" with HOST an IPv4 address or
 * "localhost" and PORT 0..65535 (0 picks a free port; see http_port). h is
 * copied; the objects it points to must outlive the server. Errors:
 * -EINVAL for a malformed address, -EADDRINUSE, -EACCES, -EADDRNOTAVAIL
 * or -EIO when the server cannot start; e->msg names the address. */
int http_start(struct http **out, const char *listen,
               const struct http_handlers *h, struct err *e);

/* The bound TCP port. */
int http_port(struct http *h);

/* Stops the server, waiting for requests in progress, and frees it.
 * Accepts NULL. No callback runs after it returns. */
void http_stop(struct http *h);

#endif
