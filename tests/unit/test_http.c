/* Unit tests for daemon/http.c: a real server on 127.0.0.1, an ephemeral
 * port, queried with libcurl (loopback only). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/health.h"
#include "daemon/http.h"
#include "daemon/metrics.h"

static const char *const metric_names[] = {
    "tandem_up", "tandem_changes_captured_total",
    "tandem_changes_applied_total", "tandem_apply_errors_total",
    "tandem_conflicts_total", "tandem_dlq_depth", "tandem_journal_depth",
    "tandem_lag_seconds", "tandem_echo_suppressed_total",
    "tandem_stale_dropped_total", "tandem_pg_slot_retained_bytes",
    "tandem_canary_latency_seconds", "tandem_parked_keys",
    "tandem_reconcile_drift", "tandem_pg_delete_missing_total",
    "tandem_journal_txns_total",
};

struct resp {
    long status;
    char body[65536];
    size_t len;
    char ctype[128];
    char allow[128];
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = sz * n;

    if (len > sizeof(r->body) - 1 - r->len)
        return 0;
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = sz * n;

    if (len > 6 && strncasecmp(p, "Allow:", 6) == 0) {
        size_t vl = len - 6;

        while (vl > 0 && (p[6 + vl - 1] == '\r' || p[6 + vl - 1] == '\n'))
            vl--;
        snprintf(r->allow, sizeof(r->allow), "%.*s", (int)vl, p + 6);
    }
    return len;
}

/* One request; the response lands in *r. body != NULL makes it a POST. */
static void request(int port, const char *method, const char *path,
                    const char *body, struct resp *r)
{
    CURL *c = curl_easy_init();
    char url[256];
    char *ct = NULL;
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    assert_non_null(c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(r->ctype, sizeof(r->ctype), "%s", ct);
    curl_easy_cleanup(c);
}

static json_t *body_json(const struct resp *r)
{
    json_error_t jerr;
    json_t *doc = json_loads(r->body, 0, &jerr);

    if (doc == NULL)
        fail_msg("invalid json \"%s\": %s", r->body, jerr.text);
    return doc;
}

static char *status_cb(void *arg)
{
    int *calls = arg;

    (*calls)++;
    return strdup("{\"pipeline\":\"test\"}");
}

static char *null_cb(void *arg)
{
    (void)arg;
    return NULL;
}

struct fixture {
    struct metrics *m;
    struct health *h;
    struct http *srv;
    int calls;
    int port;
};

static int setup(void **st)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct http_handlers hh = { 0 };
    struct err e = { 0 };

    if (f == NULL || metrics_new(&f->m) != 0 || health_new(&f->h) != 0)
        return -1;
    hh.metrics = f->m;
    hh.health = f->h;
    hh.status_json = status_cb;
    hh.conflicts_json = null_cb;
    hh.arg = &f->calls;
    if (http_start(&f->srv, "127.0.0.1:0", &hh, &e) != 0) {
        fprintf(stderr, "http_start: %s\n", e.msg);
        return -1;
    }
    f->port = http_port(f->srv);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    struct fixture *f = *st;

    http_stop(f->srv);
    health_free(f->h);
    metrics_free(f->m);
    free(f);
    return 0;
}

static void test_healthz(void **st)
{
    struct fixture *f = *st;
    struct resp r;
    json_t *doc, *reason;

    assert_true(f->port > 0 && f->port < 65536);
    request(f->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_string_equal(r.ctype, "application/json");

    assert_int_equal(health_set(f->h, HEALTH_ENDPOINT_DOWN, "crm",
                                "endpoint crm: connection refused"), 0);
    request(f->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 503);
    doc = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "degraded");
    reason = json_array_get(json_object_get(doc, "reasons"), 0);
    assert_string_equal(json_string_value(json_object_get(reason, "code")), "endpoint_down");
    assert_string_equal(json_string_value(json_object_get(reason, "detail")),
                        "endpoint crm: connection refused");
    json_decref(doc);

    health_clear(f->h, HEALTH_ENDPOINT_DOWN, "crm");
    request(f->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);

    request(f->port, "HEAD", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);

    /* A query string does not change the route. */
    request(f->port, "GET", "/healthz?verbose=1", NULL, &r);
    assert_int_equal(r.status, 200);
}

static void test_metrics_route(void **st)
{
    struct fixture *f = *st;
    struct resp r;
    char help[128];

    metrics_add(f->m, "tandem_changes_captured_total", "endpoint=\"app\"", 42);
    request(f->port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/plain"));
    assert_non_null(strstr(r.ctype, "version=0.0.4"));
    for (size_t i = 0; i < sizeof(metric_names) / sizeof(metric_names[0]); i++) {
        snprintf(help, sizeof(help), "# HELP %s ", metric_names[i]);
        if (strstr(r.body, help) == NULL)
            fail_msg("missing \"%s\"", help);
        snprintf(help, sizeof(help), "# TYPE %s ", metric_names[i]);
        if (strstr(r.body, help) == NULL)
            fail_msg("missing \"%s\"", help);
    }
    assert_non_null(strstr(r.body, "\ntandem_changes_captured_total{endpoint=\"app\"} 42\n"));
}

static void test_status_conflicts(void **st)
{
    struct fixture *f = *st;
    struct resp r;

    request(f->port, "GET", "/status", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"pipeline\":\"test\"}");
    assert_string_equal(r.ctype, "application/json");
    assert_int_equal(f->calls, 1);

    /* A callback returning NULL is a 500 with a JSON body. */
    request(f->port, "GET", "/conflicts", NULL, &r);
    assert_int_equal(r.status, 500);
    json_decref(body_json(&r));
}

static void test_not_found_and_methods(void **st)
{
    struct fixture *f = *st;
    struct resp r;
    json_t *doc;
    static const char *const paths[] = { "/", "/nope", "/healthz/", "/metricsx",
                                         "/status/../healthz", "/%00" };
    static const char *const methods[] = { "POST", "PUT", "DELETE", "PATCH",
                                           "OPTIONS", "BREW" };

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        request(f->port, "GET", paths[i], NULL, &r);
        if (r.status != 404)
            fail_msg("GET %s: status %ld, want 404", paths[i], r.status);
        doc = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(doc, "error")), "not found");
        json_decref(doc);
    }
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        request(f->port, methods[i], "/healthz", NULL, &r);
        if (r.status != 405)
            fail_msg("%s /healthz: status %ld, want 405", methods[i], r.status);
        assert_string_equal(r.allow, " GET, HEAD");
        doc = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(doc, "error")),
                            "method not allowed");
        json_decref(doc);
    }
    /* With a request body too. */
    request(f->port, "POST", "/metrics", "{\"x\":1}", &r);
    assert_int_equal(r.status, 405);
    request(f->port, "POST", "/unknown", "{\"x\":1}", &r);
    assert_int_equal(r.status, 404);
    assert_int_equal(f->calls, 0);
}

/* Sends raw bytes and reads whatever comes back (possibly nothing). */
static void raw_exchange(int port, const char *data, size_t len)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { .tv_sec = 2 };
    char buf[4096];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)!send(fd, data, len, MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    close(fd);
}

static void raw_text(int port, const char *s)
{
    raw_exchange(port, s, strlen(s));
}

static void test_bad_requests(void **st)
{
    struct fixture *f = *st;
    struct resp r;
    char *big;
    static const char junk[] = "\x00\x01\x02garbage\r\n\xff\xfe\r\n\r\n";

    raw_exchange(f->port, junk, sizeof(junk) - 1);
    raw_text(f->port, "GET\r\n\r\n");
    raw_text(f->port, "GET /healthz HTTP/9.9\r\n\r\n");
    raw_text(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n");
    raw_text(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n");
    raw_text(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    raw_text(f->port, "GET /healthz HTTP/1.1\r\n"); /* cut short */
    raw_text(f->port, "");

    /* A very long URL and a huge header are refused, not fatal. */
    big = malloc(200000);
    assert_non_null(big);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', 200000 - 5 - 15);
    memcpy(big + 200000 - 15, " HTTP/1.1\r\n\r\n", 14);
    raw_exchange(f->port, big, 200000 - 1);
    free(big);

    /* Still serving. */
    request(f->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
}

static void test_bad_listen(void **st)
{
    struct http *s = (struct http *)1;
    struct err e = { 0 };
    static const char *const bad[] = {
        "", "nope", "127.0.0.1", "127.0.0.1:", ":9187", "127.0.0.1:70000",
        "127.0.0.1:-1", "127.0.0.1:80x", "1.2.3:80", "example.com:80",
        "127.0.0.1:123456",
    };

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = (struct http *)1;
        err_clear(&e);
        assert_int_equal(http_start(&s, bad[i], NULL, &e), -EINVAL);
        assert_null(s);
        assert_non_null(strstr(e.msg, "http.listen"));
    }
    assert_int_equal(http_start(&s, NULL, NULL, &e), -EINVAL);
    http_stop(NULL);
}

static void test_addr_in_use(void **st)
{
    struct fixture *f = *st;
    struct http *s = NULL;
    struct err e = { 0 };
    char addr[64];
    int rc;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", f->port);
    rc = http_start(&s, addr, NULL, &e);
    assert_int_equal(rc, -EADDRINUSE);
    assert_null(s);
    if (strstr(e.msg, addr) == NULL)
        fail_msg("message does not name %s: %s", addr, e.msg);
}

static void test_no_handlers(void **st)
{
    struct http *s = NULL;
    struct err e = { 0 };
    struct resp r;
    static const char *const paths[] = { "/healthz", "/metrics", "/status", "/conflicts" };

    (void)st;
    assert_int_equal(http_start(&s, "localhost:0", NULL, &e), 0);
    for (size_t i = 0; i < 4; i++) {
        request(http_port(s), "GET", paths[i], NULL, &r);
        assert_int_equal(r.status, 500);
    }
    http_stop(s);
}

#define WITH_SERVER(t) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
    /* A fresh server per test keeps counters independent. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_no_handlers),
        WITH_SERVER(test_healthz),
        WITH_SERVER(test_metrics_route),
        WITH_SERVER(test_status_conflicts),
        WITH_SERVER(test_not_found_and_methods),
        WITH_SERVER(test_bad_requests),
        WITH_SERVER(test_addr_in_use),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
