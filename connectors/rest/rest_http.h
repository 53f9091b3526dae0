/* rest_http.h: HTTP transport of a rest endpoint (SPEC §6): libcurl's
 * multi interface driven by the libuv loop (CURLMOPT_SOCKETFUNCTION →
 * one uv_poll per socket, CURLMOPT_TIMERFUNCTION → one uv_timer), so no
 * thread ever blocks on a request.
 *
 * Limits from the endpoint config: at most max_in_flight transfers, at
 * most max_requests_per_s starts (a token bucket, burst of one second),
 * timeout_ms per transfer, max_response_bytes per body (the transfer is
 * aborted past it). TLS peers are verified unless tls_verify is false.
 * Every request carries the configured headers (whose values may be
 * secrets and are never logged), Accept: application/json, and
 * Content-Type: application/json on every write (DELETE included).
 *
 * Retries are the caller's policy; rest_classify sorts a result. One
 * transport may be shared by the poller and the writer of an endpoint
 * (reference counted), so the limits hold for the endpoint as a whole. */
#ifndef TANDEM_REST_HTTP_H
#define TANDEM_REST_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../daemon/strbuf.h"

struct rest_http;
struct rest_req;

struct rest_resp {
    long status;            /* HTTP status; 0 when no response arrived */
    int curl_code;          /* the transfer's CURLcode (0 = complete) */
    const char *error;      /* one line for logs and the DLQ; "" on success */
    const char *body;       /* NUL-terminated; "" when none */
    size_t body_len;
    const char *etag;       /* NULL when absent */
    const char *location;   /* NULL when absent */
    int64_t retry_after_ms; /* Retry-After, -1 when absent */
    bool too_big;           /* aborted past max_response_bytes */
};

enum rest_class {
    REST_OK = 0,            /* 2xx */
    REST_NOT_FOUND,         /* 404, 410 */
    REST_CONFLICT,          /* 409, 412: a conditional write lost */
    REST_RATE_LIMITED,      /* 429, 503 with Retry-After: wait as told */
    REST_TRANSIENT,         /* other 5xx, 408, timeouts, connection errors */
    REST_PERMANENT          /* other 4xx, 3xx, a response over the limit */
};

enum rest_class rest_classify(const struct rest_resp *r);
const char *rest_class_name(enum rest_class c);

/* Called once per request that was not cancelled, on the loop, after the
 * transfer ended. r and everything it points to live until it returns;
 * req is freed right after. */
typedef void (*rest_done_fn)(void *arg, struct rest_req *req,
                             const struct rest_resp *r);

struct rest_hdr {
    const char *name;
    const char *value;
};

/* Creates a transport for ep (a rest endpoint) with one reference; logs a
 * warning when tls_verify is false. ep must outlive it. */
int rest_http_new(struct rest_http **out, uv_loop_t *loop,
                  const struct cfg_endpoint *ep, struct err *e);

/* Takes / drops a reference. The last unref cancels whatever is queued or
 * in flight (no callbacks), closes the handles and frees h once they are
 * closed (the loop must keep running until then). */
void rest_http_ref(struct rest_http *h);
void rest_http_unref(struct rest_http *h);

/* Queues a request: method GET, POST, PUT, PATCH or DELETE; url absolute
 * (see rest_http_url); body NULL or JSON text (copied); hdrs extra headers
 * (copied). done fires exactly once unless the request is cancelled, and
 * never before rest_http_request returns. *out (may be NULL) receives the
 * handle for rest_http_cancel. Errors: -ENOMEM, -EINVAL (a header or
 * option libcurl refused); done then never fires. */
int rest_http_request(struct rest_http *h, const char *method, const char *url,
                      const char *body, const struct rest_hdr *hdrs,
                      size_t nhdrs, rest_done_fn done, void *arg,
                      struct rest_req **out, struct err *e);

/* Drops a queued or running request; its callback never fires. */
void rest_http_cancel(struct rest_http *h, struct rest_req *req);

/* Requests running / waiting for a slot or a token. */
int rest_http_in_flight(const struct rest_http *h);
int rest_http_queued(const struct rest_http *h);

/* The revision an ETag names: without a weak "W/" prefix and quotes, into
 * buf (cut at cap - 1). Returns buf, or NULL when etag is NULL. */
const char *rest_etag_revision(const char *etag, char *buf, size_t cap);

/* base_url + path (+ "?" query when query is not NULL/empty) into out. */
int rest_http_url(struct strbuf *out, const struct cfg_endpoint *ep,
                  const char *path, const char *query);

/* Blocking GET for `tandem check`: 0 with *status when a response came
 * back, -EIO (msg filled) when none did. Not for the daemon loop. */
int rest_http_probe(const struct cfg_endpoint *ep, const char *url,
                    long *status, char *msg, size_t cap);

#endif
