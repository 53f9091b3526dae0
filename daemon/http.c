#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_CONN_LIMIT 64
#define HTTP_CONN_TIMEOUT_S 10

#define CT_JSON "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define ALLOW "GET, HEAD"

enum route { ROUTE_HEALTHZ, ROUTE_METRICS, ROUTE_STATUS, ROUTE_CONFLICTS };

static const struct {
    const char *path;
    enum route route;
} routes[] = {
    { "/healthz", ROUTE_HEALTHZ },
    { "/metrics", ROUTE_METRICS },
    { "/status", ROUTE_STATUS },
    { "/conflicts", ROUTE_CONFLICTS },
};

struct http {
    struct MHD_Daemon *d;
    struct http_handlers h;
    int port;
};

/* The daemon logs through log.h; libmicrohttpd must stay quiet. */
static void quiet_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    (void)fmt;
    (void)ap;
}

/* Queues body with status. A body we own (malloc'd) moves to MHD, which
 * frees it; a constant one is copied by reference. */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status,
                             const char *ctype, const char *body, bool owned,
                             bool allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(strlen(body), (void *)body,
            owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        if (owned)
            free((void *)body);
        return MHD_NO;
    }
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, ALLOW) != MHD_YES)) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *c,
                                   unsigned int status, const char *body,
                                   bool allow)
{
    return reply(c, status, CT_JSON, body, false, allow);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct http *s = cls;
    const struct http_handlers *h = &s->h;
    const char *ctype = CT_JSON;
    char *body = NULL;
    unsigned int status = MHD_HTTP_OK;
    size_t i;

    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    if (url == NULL || method == NULL)
        return MHD_NO;
    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(url, routes[i].path) == 0)
            break;
    if (i == sizeof(routes) / sizeof(routes[0]))
        return reply_error(c, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}",
                           false);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                           "{\"error\":\"method not allowed\"}", true);

    switch (routes[i].route) {
    case ROUTE_HEALTHZ: {
        int st = 500;

        if (h->health != NULL)
            body = health_json(h->health, &st);
        status = (unsigned int)st;
        break;
    }
    case ROUTE_METRICS:
        if (h->metrics != NULL)
            body = metrics_render(h->metrics);
        ctype = CT_METRICS;
        break;
    case ROUTE_STATUS:
        if (h->status_json != NULL)
            body = h->status_json(h->arg);
        break;
    case ROUTE_CONFLICTS:
        if (h->conflicts_json != NULL)
            body = h->conflicts_json(h->arg);
        break;
    }
    if (body == NULL)
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                           "{\"error\":\"internal error\"}", false);
    return reply(c, status, ctype, body, true, false);
}

/* "HOST:PORT", HOST an IPv4 address or localhost, PORT 0..65535. */
static int parse_listen(const char *listen, struct sockaddr_in *sa,
                        struct err *e)
{
    const char *colon;
    char host[64];
    size_t hlen;
    long port = 0;

    if (listen == NULL || listen[0] == '\0')
        return err_set(e, -EINVAL, "http.listen: empty address");
    colon = strrchr(listen, ':');
    if (colon == NULL)
        return err_set(e, -EINVAL,
                       "http.listen \"%s\": expected host:port", listen);
    hlen = (size_t)(colon - listen);
    if (hlen == 0 || hlen >= sizeof(host))
        return err_set(e, -EINVAL,
                       "http.listen \"%s\": expected an ipv4 host before ':'",
                       listen);
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (colon[1] == '\0' || strlen(colon + 1) > 5)
        return err_set(e, -EINVAL,
                       "http.listen \"%s\": port must be 0..65535", listen);
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return err_set(e, -EINVAL,
                           "http.listen \"%s\": port must be 0..65535", listen);
        port = port * 10 + (*p - '0');
    }
    if (port > 65535)
        return err_set(e, -EINVAL,
                       "http.listen \"%s\": port must be 0..65535", listen);

    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return err_set(e, -EINVAL,
                       "http.listen \"%s\": \"%s\" is not an ipv4 address",
                       listen, host);
    return 0;
}

/* libmicrohttpd does not say why it failed; binding ourselves does. */
static int probe_bind(const struct sockaddr_in *sa)
{
    int one = 1, rc = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 ||
        listen(fd, 1) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

int http_start(struct http **out, const char *listen,
               const struct http_handlers *h, struct err *e)
{
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    struct http *s;
    int rc;

    *out = NULL;
    rc = parse_listen(listen, &sa, e);
    if (rc != 0)
        return rc;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return err_set(e, -ENOMEM, "http.listen %s: out of memory", listen);
    if (h != NULL)
        s->h = *h;
    s->d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD,
                            ntohs(sa.sin_port), NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, quiet_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)HTTP_CONN_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)HTTP_CONN_TIMEOUT_S,
                            MHD_OPTION_END);
    if (s->d == NULL) {
        free(s);
        rc = probe_bind(&sa);
        if (rc != 0)
            return err_set(e, rc, "http.listen %s: cannot listen: %s",
                           listen, strerror(-rc));
        return err_set(e, -EIO, "http.listen %s: cannot start http server",
                       listen);
    }
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL && info->port != 0 ? info->port
                                              : ntohs(sa.sin_port);
    *out = s;
    return 0;
}

int http_port(struct http *h)
{
    return h != NULL ? h->port : -1;
}

void http_stop(struct http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
