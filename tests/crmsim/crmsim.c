/* crmsim: a small CRM-like REST service for tandem's tests. It keeps records
 * the way SaaS APIs do (server ids, updated_at, revisions, soft deletes,
 * updated_since and _changes feeds) and misbehaves on demand through
 * /_admin/faults. See README.md for the API. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "faults.h"
#include "store.h"
#include "util.h"

#define BODY_MAX (1024 * 1024)
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* --ref RES.FIELD=PARENT: a write of RES whose FIELD names no live PARENT
 * record is refused with 422, as an API with foreign keys would. */
#define MAX_REFS 8
struct ref {
    char res[64], field[64], parent[64];
};

/* --assign-ids RES: POST to RES ignores a body id and assigns the next
 * integer id, as an API that owns its ids does. */
#define MAX_ASSIGN 8

/* POSTs by Idempotency-Key: a repeated key gets the record the first POST
 * created (as payment and CRM APIs do), not a second record. */
#define IDEM_MAX 65536
struct idem {
    char *key;              /* "<resource> <Idempotency-Key>" */
    char id[STORE_ID_MAX];
};

struct sim {
    struct store *store;
    pthread_mutex_t idem_mu;
    struct idem *idem;      /* IDEM_MAX slots, open addressing */
    size_t nidem;
    struct ref refs[MAX_REFS];
    int nrefs;
    char assign[MAX_ASSIGN][64];
    int nassign;
    struct faults *faults;
    bool verbose;
    atomic_bool stopping;
    pthread_mutex_t stats_mu;
    json_t *stats;          /* {"total":N,"routes":{...},"faults":{...}} */
    pthread_mutex_t log_mu;
};

/* Per-request state across MHD's calls: the body as it arrives. */
struct req {
    char *body;
    size_t len, cap;
    bool too_big, responded;
    struct timespec t0;
};

enum rkind {
    R_NOT_FOUND, R_ROOT, R_COLLECTION, R_ITEM, R_CHANGES, R_RES_CHANGES,
    R_ADMIN_FAULTS, R_ADMIN_RECORDS, R_ADMIN_RESET, R_ADMIN_STATS, R_ADMIN_CLOCK,
};

struct ctx {
    struct sim *sim;
    struct MHD_Connection *conn;
    struct req *r;
    const char *method;
    const char *url;
    enum rkind kind;
    char res[64];
    char id[STORE_ID_MAX];
    char route[160];        /* "GET /customers/{id}" */
    char concrete[600];     /* "GET /customers/5" */
    const char *fault;      /* injected fault, for the log */
};

struct hdrs {
    const char *etag, *location, *allow, *retry_after;
};

/* ---------------------------------------------------------------- stats */

static void stats_count(struct sim *sim, const char *route, const char *status,
                        const char *fault)
{
    json_t *routes, *r, *v;

    pthread_mutex_lock(&sim->stats_mu);
    v = json_object_get(sim->stats, "total");
    json_integer_set(v, json_integer_value(v) + 1);
    routes = json_object_get(sim->stats, "routes");
    r = json_object_get(routes, route);
    if (!r) {
        r = json_object();
        json_object_set_new(routes, route, r);
    }
    v = json_object_get(r, status);
    json_object_set_new(r, status, json_integer(json_integer_value(v) + 1));
    if (fault) {
        r = json_object_get(sim->stats, "faults");
        v = json_object_get(r, fault);
        json_object_set_new(r, fault, json_integer(json_integer_value(v) + 1));
    }
    pthread_mutex_unlock(&sim->stats_mu);
}

static json_t *stats_new(void)
{
    return json_pack("{s:I,s:{},s:{}}", "total", (json_int_t)0, "routes",
                     "faults");
}

static void stats_reset(struct sim *sim)
{
    json_t *fresh = stats_new();

    pthread_mutex_lock(&sim->stats_mu);
    if (fresh) {
        json_decref(sim->stats);
        sim->stats = fresh;
    }
    pthread_mutex_unlock(&sim->stats_mu);
}

/* -------------------------------------------------------------- replies */

static void log_request(struct ctx *c, const char *status)
{
    struct timespec t1;
    char ts[TS_LEN];
    json_t *o;
    char *line;

    if (!c->sim->verbose)
        return;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ts_format(now_ms(), ts);
    o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "ts", ts, "method",
                  c->method, "path", c->url, "route", c->route, "status",
                  status, "fault", c->fault ? c->fault : "none", "ms",
                  (json_int_t)((t1.tv_sec - c->r->t0.tv_sec) * 1000 +
                               (t1.tv_nsec - c->r->t0.tv_nsec) / 1000000));
    line = o ? jsonw_dump(o, NULL) : NULL;
    if (line) {
        pthread_mutex_lock(&c->sim->log_mu);
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
        pthread_mutex_unlock(&c->sim->log_mu);
    }
    free(line);
    json_decref(o);
}

/* Sends text (malloc'd, taken) with status; counts and logs the request. */
static enum MHD_Result reply_text(struct ctx *c, unsigned status, char *text,
                                  size_t len, const char *ctype,
                                  const struct hdrs *h)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char st[16];

    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (h && h->etag)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, h->etag);
    if (h && h->location)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, h->location);
    if (h && h->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, h->allow);
    if (h && h->retry_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, h->retry_after);
    ret = MHD_queue_response(c->conn, status, resp);
    MHD_destroy_response(resp);
    c->r->responded = true;
    snprintf(st, sizeof(st), "%u", status);
    stats_count(c->sim, c->route, st, c->fault);
    log_request(c, st);
    return ret;
}

/* Sends body (a reference taken) as JSON. */
static enum MHD_Result reply_json(struct ctx *c, unsigned status, json_t *body,
                                  const struct hdrs *h)
{
    size_t len;
    char *text = body ? jsonw_dump(body, &len) : NULL;

    json_decref(body);
    if (!text)
        return MHD_NO;
    return reply_text(c, status, text, len, "application/json", h);
}

static enum MHD_Result reply_err(struct ctx *c, unsigned status,
                                 const struct hdrs *h, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum MHD_Result reply_err(struct ctx *c, unsigned status,
                                 const struct hdrs *h, const char *fmt, ...)
{
    const char *code;
    char msg[512];
    va_list ap;

    switch (status) {
    case 400: code = "bad_request"; break;
    case 404: code = "not_found"; break;
    case 405: code = "method_not_allowed"; break;
    case 409: code = "conflict"; break;
    case 412: code = "precondition_failed"; break;
    case 413: code = "payload_too_large"; break;
    case 415: code = "unsupported_media_type"; break;
    case 429: code = "rate_limited"; break;
    case 504: code = "gateway_timeout"; break;
    default: code = "internal_error"; break;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return reply_json(c, status, json_pack("{s:s,s:s}", "error", code,
                                           "message", msg), h);
}

static enum MHD_Result reply_simerr(struct ctx *c, const struct simerr *e)
{
    return reply_err(c, e->http ? (unsigned)e->http : 500, NULL, "%s", e->msg);
}

/* Ends the connection with no response, counted under status. */
static enum MHD_Result hang_up(struct ctx *c, const char *status)
{
    c->r->responded = true;
    stats_count(c->sim, c->route, status, c->fault);
    log_request(c, status);
    return MHD_NO;
}

/* ------------------------------------------------------------- requests */

/* Keeps the URL and arguments raw so ids may contain an encoded '/'. */
static size_t no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    return strlen(s);
}

static const char *header(struct ctx *c, const char *name)
{
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, name);
}

/* 1 and the decoded value when present, 0 when absent, -EINVAL if broken. */
static int qarg(struct ctx *c, const char *name, char *out, size_t n)
{
    const char *v = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
                                                name);

    if (!v)
        return 0;
    return pct_decode(v, out, n) < 0 ? -EINVAL : 1;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    if (*s < '0' || *s > '9')
        return -EINVAL;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static void classify(struct ctx *c)
{
    char path[512], *seg[4], *save = NULL, *tok;
    const char *url = c->url;
    size_t len = strlen(url);
    int n = 0;

    c->kind = R_NOT_FOUND;
    snprintf(c->concrete, sizeof(c->concrete), "%.16s %.500s", c->method, url);
    snprintf(c->route, sizeof(c->route), "%.16s (unmatched)", c->method);
    if (len == 0 || len >= sizeof(path) || url[0] != '/')
        return;
    memcpy(path, url, len + 1);
    if (len > 1 && path[len - 1] == '/')
        path[len - 1] = '\0';
    if (strstr(path, "//"))
        return;
    for (tok = strtok_r(path, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (n == 4)
            return;
        seg[n++] = tok;
    }
    if (n == 0) {
        c->kind = R_ROOT;
        snprintf(c->route, sizeof(c->route), "%.16s /", c->method);
        return;
    }
    if (!strcmp(seg[0], "_admin")) {
        static const struct { const char *name; enum rkind k; } admin[] = {
            { "faults", R_ADMIN_FAULTS }, { "reset", R_ADMIN_RESET },
            { "stats", R_ADMIN_STATS }, { "clock", R_ADMIN_CLOCK },
        };
        if (n == 3 && !strcmp(seg[1], "records") &&
            store_has_resource(c->sim->store, seg[2])) {
            c->kind = R_ADMIN_RECORDS;
            snprintf(c->res, sizeof(c->res), "%s", seg[2]);
            snprintf(c->route, sizeof(c->route), "%.16s /_admin/records/%s",
                     c->method, c->res);
            return;
        }
        for (size_t i = 0; n == 2 && i < sizeof(admin) / sizeof(admin[0]); i++) {
            if (!strcmp(seg[1], admin[i].name)) {
                c->kind = admin[i].k;
                snprintf(c->route, sizeof(c->route), "%.16s /_admin/%s",
                         c->method, admin[i].name);
            }
        }
        return;
    }
    if (n == 1 && !strcmp(seg[0], "_changes")) {
        c->kind = R_CHANGES;
        snprintf(c->route, sizeof(c->route), "%.16s /_changes", c->method);
        return;
    }
    if (!store_has_resource(c->sim->store, seg[0]) || n > 2)
        return;
    snprintf(c->res, sizeof(c->res), "%s", seg[0]);
    if (n == 1) {
        c->kind = R_COLLECTION;
        snprintf(c->route, sizeof(c->route), "%.16s /%s", c->method, c->res);
    } else if (!strcmp(seg[1], "_changes")) {
        c->kind = R_RES_CHANGES;
        snprintf(c->route, sizeof(c->route), "%.16s /%s/_changes", c->method,
                 c->res);
    } else if (pct_decode(seg[1], c->id, sizeof(c->id)) == 0) {
        c->kind = R_ITEM;
        snprintf(c->route, sizeof(c->route), "%.16s /%s/{id}", c->method, c->res);
    }
}

static const char *allowed(enum rkind k)
{
    switch (k) {
    case R_ROOT: case R_CHANGES: case R_RES_CHANGES: case R_ADMIN_STATS:
    case R_ADMIN_RECORDS:
        return "GET";
    case R_COLLECTION: return "GET, POST";
    case R_ITEM: return "GET, PUT, PATCH, DELETE";
    case R_ADMIN_FAULTS: return "GET, POST, DELETE";
    case R_ADMIN_RESET: return "POST";
    case R_ADMIN_CLOCK: return "GET, POST";
    case R_NOT_FOUND: break;
    }
    return "";
}

static bool method_allowed(const char *method, enum rkind k)
{
    const char *list = allowed(k), *p = list;
    size_t n = strlen(method);

    while ((p = strstr(p, method)) != NULL) {
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ','))
            return true;
        p += n;
    }
    return false;
}

/* Sleeps ms, waking early when the server stops. */
static void nap(struct sim *sim, long ms)
{
    while (ms > 0 && !atomic_load(&sim->stopping)) {
        long step = ms < 20 ? ms : 20;
        struct timespec ts = { 0, step * 1000000L };

        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* True once the client closed its end (gave up waiting). */
static bool client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;
    char b;

    if (!ci)
        return false;
    p.fd = ci->connect_fd;
    p.events = POLLIN | POLLRDHUP;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP))
        return true;
    return (p.revents & POLLIN) &&
           recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Applies the request-level faults; returns 1 when the request goes on. */
static int apply_faults(struct ctx *c, const struct fault_plan *p,
                        enum MHD_Result *ret)
{
    static const struct hdrs retry = { .retry_after = "1" };

    if (!p->matched)
        return 1;
    nap(c->sim, p->latency_ms);
    if (p->drop) {
        c->fault = "drop";
        *ret = hang_up(c, "drop");
        return 0;
    }
    if (p->timeout) {
        long waited = 0;

        c->fault = "timeout";
        while (waited < p->hang_ms && !atomic_load(&c->sim->stopping) &&
               !client_gone(c->conn)) {
            nap(c->sim, 20);
            waited += 20;
        }
        if (waited < p->hang_ms) {
            *ret = hang_up(c, "timeout");
            return 0;
        }
        *ret = reply_err(c, 504, NULL, "injected timeout after %ld ms", waited);
        return 0;
    }
    if (p->rate_limit) {
        c->fault = "rate_limit";
        *ret = reply_err(c, 429, &retry, "too many requests (injected)");
        return 0;
    }
    if (p->error) {
        c->fault = "error";
        *ret = reply_err(c, 500, NULL, "internal error (injected)");
        return 0;
    }
    return 1;
}

/* Turns a page into invalid JSON: cut in half, or an HTML error page. */
static enum MHD_Result reply_malformed(struct ctx *c, json_t *body,
                                       uint64_t draw)
{
    static const char html[] = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    size_t len;
    char *text = jsonw_dump(body, &len);

    json_decref(body);
    if (!text)
        return MHD_NO;
    c->fault = "malformed";
    if (draw % 2 == 0) {
        len = len / 2 > 0 ? len / 2 : 1;
        text[len] = '\0';
    } else {
        free(text);
        text = strdup(html);
        if (!text)
            return MHD_NO;
        len = strlen(text);
    }
    return reply_text(c, 200, text, len, "application/json", NULL);
}

/* Moves one record's updated_at before its predecessor's in the reply only. */
static void push_back(json_t *docs[], size_t n, uint64_t draw)
{
    size_t i = n >= 2 ? 1 + (size_t)(draw % (n - 1)) : 0;
    const char *ref = json_string_value(
        json_object_get(docs[i ? i - 1 : 0], "updated_at"));
    int64_t ms;
    char ts[TS_LEN];

    if (!ref || ts_parse(ref, &ms) < 0)
        return;
    ts_format(ms - 1 - (int64_t)((draw >> 8) % 1000), ts);
    json_object_set_new(docs[i], "updated_at", json_string(ts));
}

static int page_limit(struct ctx *c, long *limit)
{
    char v[32];
    int rc = qarg(c, "limit", v, sizeof(v));

    if (rc == 0)
        rc = qarg(c, "_limit", v, sizeof(v));
    *limit = PAGE_DEFAULT;
    if (rc < 0 || (rc == 1 && parse_long(v, 1, 1000000000L, limit) < 0))
        return -EINVAL;
    if (*limit > PAGE_MAX)
        *limit = PAGE_MAX;  /* like most SaaS APIs: silently capped */
    return 0;
}

static enum MHD_Result do_feed(struct ctx *c, const struct fault_plan *p)
{
    struct store_feed_q q = { .res = c->res };
    struct simerr e = { 0 };
    char v[128];
    json_t *page;
    int rc;

    if ((rc = qarg(c, "updated_at_gte", v, sizeof(v))) < 0 ||
        (rc == 1 && ts_parse(v, &q.since_ms) < 0))
        return reply_err(c, 400, NULL,
                         "updated_at_gte: expected an RFC 3339 timestamp");
    q.has_since = rc == 1;
    if (page_limit(c, &q.limit) < 0)
        return reply_err(c, 400, NULL, "limit: expected an integer >= 1");
    if ((rc = qarg(c, "offset", v, sizeof(v))) == 0)
        rc = qarg(c, "_start", v, sizeof(v));
    if (rc < 0 || (rc == 1 && parse_long(v, 0, 1000000000L, &q.offset) < 0))
        return reply_err(c, 400, NULL, "offset: expected an integer >= 0");
    if ((rc = qarg(c, "_sort", v, sizeof(v))) < 0 ||
        (rc == 1 && strcmp(v, "updated_at") && strcmp(v, "updated_at,id")))
        return reply_err(c, 400, NULL,
                         "_sort: only \"updated_at\" or \"updated_at,id\"");
    if ((rc = qarg(c, "_order", v, sizeof(v))) < 0 ||
        (rc == 1 && strcmp(v, "asc") && strcmp(v, "asc,asc")))
        return reply_err(c, 400, NULL, "_order: only \"asc\" or \"asc,asc\"");
    q.dup = p->duplicate;
    if (store_feed(c->sim->store, &q, &page, &e) < 0)
        return reply_simerr(c, &e);
    if (p->duplicate)
        c->fault = "duplicate";
    if (p->backwards && json_array_size(page) > 0) {
        size_t n = json_array_size(page);
        json_t **docs = calloc(n, sizeof(*docs));

        for (size_t i = 0; docs && i < n; i++)
            docs[i] = json_array_get(page, i);
        if (docs) {
            push_back(docs, n, p->draw);
            c->fault = "backwards";
        }
        free(docs);
    }
    if (p->malformed)
        return reply_malformed(c, page, p->draw);
    return reply_json(c, 200, page, NULL);
}

static enum MHD_Result do_changes(struct ctx *c, const struct fault_plan *p)
{
    struct store_changes_q q = { .res = c->kind == R_RES_CHANGES ? c->res : NULL };
    struct simerr e = { 0 };
    char v[128];
    json_t *body, *results;
    int rc;

    if ((rc = qarg(c, "since", v, sizeof(v))) < 0 ||
        (rc == 1 && strcmp(v, "now") && store_seq_parse(v, &q.since) < 0))
        return reply_err(c, 400, NULL, "since: expected a sequence or \"now\"");
    q.since_now = rc == 1 && !strcmp(v, "now");
    if (page_limit(c, &q.limit) < 0)
        return reply_err(c, 400, NULL, "limit: expected an integer >= 1");
    if ((rc = qarg(c, "include_docs", v, sizeof(v))) < 0 ||
        (rc == 1 && strcmp(v, "true") && strcmp(v, "false")))
        return reply_err(c, 400, NULL, "include_docs: expected true or false");
    q.docs = rc == 1 && !strcmp(v, "true");
    if ((rc = qarg(c, "feed", v, sizeof(v))) < 0 ||
        (rc == 1 && strcmp(v, "normal")))
        return reply_err(c, 400, NULL, "feed: only \"normal\" is supported");
    q.dup = p->duplicate;
    if (store_changes(c->sim->store, &q, &body, &e) < 0)
        return reply_simerr(c, &e);
    if (p->duplicate)
        c->fault = "duplicate";
    results = json_object_get(body, "results");
    if (p->backwards && q.docs && json_array_size(results) > 0) {
        size_t n = json_array_size(results);
        json_t **docs = calloc(n, sizeof(*docs));

        for (size_t i = 0; docs && i < n; i++)
            docs[i] = json_object_get(json_array_get(results, i), "doc");
        if (docs) {
            push_back(docs, n, p->draw);
            c->fault = "backwards";
        }
        free(docs);
    }
    if (p->malformed)
        return reply_malformed(c, body, p->draw);
    return reply_json(c, 200, body, NULL);
}

static bool json_content_type(const char *ct)
{
    size_t n = strlen("application/json");

    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    return !strncasecmp(ct, "application/json", n) &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Parses the body as a JSON object, or replies 400/413 and returns NULL. */
static json_t *body_object(struct ctx *c, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *body;

    if (c->r->too_big) {
        *ret = reply_err(c, 413, NULL, "body exceeds %d bytes", BODY_MAX);
        return NULL;
    }
    if (c->r->len == 0) {
        *ret = reply_err(c, 400, NULL, "a JSON object body is required");
        return NULL;
    }
    body = json_loadb(c->r->body, c->r->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        *ret = reply_err(c, 400, NULL, "invalid json at line %d column %d: %s",
                         jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        *ret = reply_err(c, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    return body;
}

static void location(char *out, size_t n, const char *res, const char *key)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = (size_t)snprintf(out, n, "/%s/", res);

    for (const unsigned char *p = (const unsigned char *)key; *p && o + 4 < n; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o < n ? o : n - 1] = '\0';
}

/* True when every --ref of this resource is satisfied; else false with
 * *ret the result of the 422 reply. */
static bool refs_ok(struct ctx *c, const json_t *body, enum MHD_Result *ret)
{
    for (int i = 0; i < c->sim->nrefs; i++) {
        const struct ref *r = &c->sim->refs[i];
        json_t *v = json_object_get(body, r->field), *rec = NULL;
        struct simerr e = { 0 };
        char key[STORE_ID_MAX];

        if (strcmp(r->res, c->res) != 0 || v == NULL || json_is_null(v))
            continue;
        if (id_canonical(v, key, sizeof(key)) != 0 ||
            store_get(c->sim->store, r->parent, key, &rec, &e) < 0) {
            *ret = reply_err(c, 422, NULL, "%s: no %s record with id %s", r->field,
                             r->parent, json_is_string(v) ? json_string_value(v) : "(number)");
            return false;
        }
        json_decref(rec);
    }
    return true;
}

static uint64_t idem_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* The slot of key: its entry, or the empty slot where it goes. */
static struct idem *idem_slot(struct sim *sim, const char *key)
{
    size_t i = idem_hash(key) & (IDEM_MAX - 1);

    while (sim->idem[i].key != NULL && strcmp(sim->idem[i].key, key) != 0)
        i = (i + 1) & (IDEM_MAX - 1);
    return &sim->idem[i];
}

/* The id a POST with this key created earlier, into id; false if none. */
static bool idem_get(struct sim *sim, const char *key, char *id, size_t cap)
{
    struct idem *e;
    bool found;

    pthread_mutex_lock(&sim->idem_mu);
    e = idem_slot(sim, key);
    found = e->key != NULL;
    if (found)
        snprintf(id, cap, "%s", e->id);
    pthread_mutex_unlock(&sim->idem_mu);
    return found;
}

static void idem_put(struct sim *sim, const char *key, const char *id)
{
    struct idem *e;

    pthread_mutex_lock(&sim->idem_mu);
    e = idem_slot(sim, key);
    if (e->key == NULL && sim->nidem < IDEM_MAX / 2 && (e->key = strdup(key)) != NULL) {
        snprintf(e->id, sizeof(e->id), "%s", id);
        sim->nidem++;
    }
    pthread_mutex_unlock(&sim->idem_mu);
}

static void idem_clear(struct sim *sim)
{
    pthread_mutex_lock(&sim->idem_mu);
    for (size_t i = 0; i < IDEM_MAX; i++) {
        free(sim->idem[i].key);
        sim->idem[i].key = NULL;
    }
    sim->nidem = 0;
    pthread_mutex_unlock(&sim->idem_mu);
}

/* A POST repeating an Idempotency-Key: the first POST's record, 201. */
static bool idem_replay(struct ctx *c, const char *ikey, enum MHD_Result *ret)
{
    char id[STORE_ID_MAX], etag[160];
    struct simerr e = { 0 };
    struct hdrs h = { 0 };
    json_t *rec;

    if (!idem_get(c->sim, ikey, id, sizeof(id)) || store_get(c->sim->store, c->res, id, &rec, &e) < 0)
        return false;
    snprintf(etag, sizeof(etag), "\"%s\"", json_string_value(json_object_get(rec, "_rev")));
    h.etag = etag;
    *ret = reply_json(c, 201, rec, &h);
    return true;
}

static enum MHD_Result do_write(struct ctx *c, const struct fault_plan *p)
{
    struct store_write w = { .res = c->res };
    struct simerr e = { 0 };
    enum MHD_Result ret = MHD_NO;
    json_t *body = NULL, *rec = NULL;
    char rev[128], etag[160], loc[STORE_ID_MAX * 3 + 80], key[STORE_ID_MAX];
    char ikey[512] = "";
    struct hdrs h = { 0 };
    bool created = false;
    int rc;

    if (!json_content_type(header(c, MHD_HTTP_HEADER_CONTENT_TYPE)))
        return reply_err(c, 415, NULL, "writes must send Content-Type: application/json");
    if (!strcmp(c->method, "DELETE")) {
        w.op = STORE_DELETE;
        if (c->r->too_big)
            return reply_err(c, 413, NULL, "body exceeds %d bytes", BODY_MAX);
    } else {
        if (!(body = body_object(c, &ret)))
            return ret;
        w.op = !strcmp(c->method, "POST") ? STORE_POST :
               !strcmp(c->method, "PUT") ? STORE_PUT : STORE_PATCH;
    }
    for (int i = 0; w.op == STORE_POST && i < c->sim->nassign; i++)
        if (!strcmp(c->sim->assign[i], c->res))
            json_object_del(body, "id");
    if (body != NULL && !refs_ok(c, body, &ret)) {
        json_decref(body);
        return ret;
    }
    w.key = c->kind == R_ITEM ? c->id : NULL;
    w.body = body;
    w.if_match = header(c, MHD_HTTP_HEADER_IF_MATCH);
    if ((rc = qarg(c, "rev", rev, sizeof(rev))) < 0) {
        json_decref(body);
        return reply_err(c, 400, NULL, "rev: bad percent-encoding");
    }
    w.rev_param = rc == 1 ? rev : NULL;
    if (w.op == STORE_POST && header(c, "Idempotency-Key") != NULL) {
        snprintf(ikey, sizeof(ikey), "%s %s", c->res, header(c, "Idempotency-Key"));
        if (idem_replay(c, ikey, &ret)) {
            json_decref(body);
            return ret;
        }
    }
    rc = store_write(c->sim->store, &w, &rec, &created, &e);
    json_decref(body);
    if (rc < 0)
        return reply_simerr(c, &e);
    if (ikey[0] != '\0' &&
        id_canonical(json_object_get(rec, "id"), key, sizeof(key)) == 0)
        idem_put(c->sim, ikey, key);
    if (p->lost_reply) {
        /* Applied, but the client never hears of it. */
        json_decref(rec);
        c->fault = "lost_reply";
        return hang_up(c, "lost_reply");
    }
    snprintf(etag, sizeof(etag), "\"%s\"",
             json_string_value(json_object_get(rec, "_rev")));
    h.etag = etag;
    if (created) {
        if (id_canonical(json_object_get(rec, "id"), key, sizeof(key)) == 0) {
            location(loc, sizeof(loc), c->res, key);
            h.location = loc;
        }
    }
    return reply_json(c, created ? 201 : 200, rec, &h);
}

static enum MHD_Result do_get(struct ctx *c)
{
    struct simerr e = { 0 };
    char etag[160];
    struct hdrs h = { 0 };
    json_t *rec;

    if (store_get(c->sim->store, c->res, c->id, &rec, &e) < 0)
        return reply_simerr(c, &e);
    snprintf(etag, sizeof(etag), "\"%s\"",
             json_string_value(json_object_get(rec, "_rev")));
    h.etag = etag;
    return reply_json(c, 200, rec, &h);
}

static enum MHD_Result do_admin(struct ctx *c)
{
    struct simerr e = { 0 };
    json_t *body, *v;
    size_t i;
    int rc;

    switch (c->kind) {
    case R_ADMIN_STATS:
        pthread_mutex_lock(&c->sim->stats_mu);
        v = json_deep_copy(c->sim->stats);
        pthread_mutex_unlock(&c->sim->stats_mu);
        return reply_json(c, 200, v, NULL);
    case R_ADMIN_RECORDS:
        if (store_dump(c->sim->store, c->res, &v, &e) < 0)
            return reply_simerr(c, &e);
        return reply_json(c, 200, v, NULL);
    case R_ADMIN_RESET:
        if (store_reset(c->sim->store, &e) < 0)
            return reply_simerr(c, &e);
        faults_clear(c->sim->faults);
        idem_clear(c->sim);
        stats_reset(c->sim);
        return reply_json(c, 200, json_pack("{s:b}", "ok", 1), NULL);
    case R_ADMIN_FAULTS:
        if (!strcmp(c->method, "GET"))
            return reply_json(c, 200, faults_list(c->sim->faults), NULL);
        if (!strcmp(c->method, "DELETE")) {
            faults_clear(c->sim->faults);
            return reply_json(c, 200, json_pack("{s:b}", "ok", 1), NULL);
        }
        if (c->r->too_big)
            return reply_err(c, 413, NULL, "body exceeds %d bytes", BODY_MAX);
        body = json_loadb(c->r->body ? c->r->body : "", c->r->len, 0, NULL);
        if (json_is_object(body)) {
            v = json_array();
            json_array_append(v, body);
            json_decref(body);
            body = v;
        }
        if (!json_is_array(body)) {
            json_decref(body);
            return reply_err(c, 400, NULL, "expected a fault rule object or array");
        }
        json_array_foreach(body, i, v) {
            if (faults_add(c->sim->faults, v, &e) < 0) {
                json_decref(body);
                return reply_simerr(c, &e);
            }
        }
        json_decref(body);
        return reply_json(c, 200, faults_list(c->sim->faults), NULL);
    case R_ADMIN_CLOCK:
        if (!strcmp(c->method, "POST")) {
            json_int_t off = 0, res = 1;

            body = json_loadb(c->r->body ? c->r->body : "", c->r->len, 0, NULL);
            v = json_object_get(body, "offset_ms");
            if (v && json_is_integer(v))
                off = json_integer_value(v);
            else if (v)
                off = INT64_MAX;
            v = json_object_get(body, "resolution_ms");
            if (v && json_is_integer(v))
                res = json_integer_value(v);
            else if (v)
                res = 0;
            rc = json_is_object(body) && off >= -31536000000LL &&
                 off <= 31536000000LL && res >= 1 && res <= 3600000;
            json_decref(body);
            if (!rc)
                return reply_err(c, 400, NULL,
                                 "expected {\"offset_ms\": -1y..1y, \"resolution_ms\": 1..3600000}");
            store_set_clock(c->sim->store, (int64_t)off, (int64_t)res);
        }
        return reply_json(c, 200, store_clock(c->sim->store), NULL);
    default:
        break;
    }
    return reply_err(c, 404, NULL, "no such admin route");
}

static enum MHD_Result dispatch(struct ctx *c)
{
    struct fault_plan plan;
    enum MHD_Result ret = MHD_NO;

    if (c->kind == R_NOT_FOUND)
        return reply_err(c, 404, NULL, "no route for %s", c->concrete);
    if (!method_allowed(c->method, c->kind)) {
        struct hdrs h = { .allow = allowed(c->kind) };

        return reply_err(c, 405, &h, "%s is not allowed here", c->method);
    }
    if (c->kind == R_ROOT)
        return reply_json(c, 200, json_pack("{s:s,s:o}", "service", "crmsim",
                                            "resources",
                                            store_resources(c->sim->store)),
                          NULL);
    if (c->kind >= R_ADMIN_FAULTS)
        return do_admin(c);
    faults_decide(c->sim->faults, c->route, c->concrete, &plan);
    if (!apply_faults(c, &plan, &ret))
        return ret;
    switch (c->kind) {
    case R_COLLECTION:
        if (!strcmp(c->method, "GET"))
            return do_feed(c, &plan);
        return do_write(c, &plan);
    case R_ITEM:
        if (!strcmp(c->method, "GET"))
            return do_get(c);
        return do_write(c, &plan);
    case R_CHANGES:
    case R_RES_CHANGES:
        return do_changes(c, &plan);
    default:
        break;
    }
    return reply_err(c, 404, NULL, "no route");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct ctx c;
    struct req *r = *con_cls;

    memset(&c, 0, sizeof(c));
    c.sim = cls;
    c.conn = conn;
    c.method = method ? method : "";
    c.url = url ? url : "";
    if (!r) {
        const char *cl;
        char *end;
        unsigned long long n;

        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        *con_cls = r;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        errno = 0;
        n = cl ? strtoull(cl, &end, 10) : 0;
        if (cl && (errno || n > BODY_MAX)) {
            /* Refuse before reading: no 100 Continue, the body is never read. */
            r->too_big = true;
            c.r = r;
            classify(&c);
            return reply_err(&c, 413, NULL, "body exceeds %d bytes", BODY_MAX);
        }
        return MHD_YES;
    }
    c.r = r;
    if (*upload_data_size) {
        size_t n = *upload_data_size;

        *upload_data_size = 0;
        if (r->responded || r->too_big)
            return MHD_YES;
        if (r->len + n > BODY_MAX) {
            r->too_big = true;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            char *p;

            while (cap < r->len + n + 1)
                cap *= 2;
            if (!(p = realloc(r->body, cap)))
                return MHD_NO;
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    classify(&c);
    return dispatch(&c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *r = *con_cls;

    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

/* ----------------------------------------------------------------- main */

/* MHD's own complaints (bad requests, socket errors) as JSON lines too. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct sim *sim = cls;
    char msg[512], ts[TS_LEN];
    json_t *o;
    char *line;
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    ts_format(now_ms(), ts);
    o = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "level", "warn", "mod", "mhd",
                  "msg", msg);
    line = o ? jsonw_dump(o, NULL) : NULL;
    if (line) {
        pthread_mutex_lock(&sim->log_mu);
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
        pthread_mutex_unlock(&sim->log_mu);
    }
    free(line);
    json_decref(o);
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fatal(const char *fmt, ...)
{
    char msg[512];
    json_t *o;
    char *line;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    o = json_pack("{s:s,s:s}", "level", "error", "msg", msg);
    line = o ? jsonw_dump(o, NULL) : NULL;
    fprintf(stderr, "%s\n", line ? line : msg);
    free(line);
    json_decref(o);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: crmsim --listen HOST:PORT [--resources a,b,c] [--seed N] [--ref R.F=P]\n"
            "              [--assign-ids RES] [--state FILE] [--verbose]\n"
            "  --listen     address to serve on; port 0 picks a free one\n"
            "  --resources  collections to serve (default customers,accounts,invoices)\n"
            "  --seed       default seed of fault rules that name none (default 1)\n"
            "  --ref        RES.FIELD=PARENT: refuse (422) a write of RES whose FIELD names\n"
            "               no live PARENT record (repeatable)\n"
            "  --assign-ids RES: POST to RES ignores a body id and assigns one (repeatable)\n"
            "  --state      SQLite file to keep records in across restarts\n"
            "  --verbose    one JSON line per request on stderr\n");
}

static int parse_resources(char *list, const char *out[], int *n)
{
    char *save = NULL;

    *n = 0;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t len = strlen(t);

        if (*n == STORE_MAX_RESOURCES || len == 0 || len > 63 || t[0] == '_')
            return -EINVAL;
        for (size_t i = 0; i < len; i++)
            if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') ||
                  t[i] == '_' || t[i] == '-'))
                return -EINVAL;
        for (int i = 0; i < *n; i++)
            if (!strcmp(out[i], t))
                return -EINVAL;
        out[(*n)++] = t;
    }
    return *n > 0 ? 0 : -EINVAL;
}

static int resolve(const char *listen, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    char host[256], *colon;
    struct addrinfo hints, *ai = NULL;
    const char *h;
    int rc;

    if (snprintf(host, sizeof(host), "%s", listen) >= (int)sizeof(host))
        return -EINVAL;
    colon = strrchr(host, ':');
    if (!colon || colon == host || colon[1] == '\0')
        return -EINVAL;
    *colon = '\0';
    h = host;
    if (host[0] == '[' && colon[-1] == ']') {
        colon[-1] = '\0';
        h = host + 1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    rc = getaddrinfo(h, colon + 1, &hints, &ai);
    if (rc != 0 || !ai)
        return -EINVAL;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "resources", required_argument, NULL, 'r' },
        { "seed", required_argument, NULL, 's' },
        { "state", required_argument, NULL, 'f' },
        { "verbose", no_argument, NULL, 'v' },
        { "ref", required_argument, NULL, 'R' },
        { "assign-ids", required_argument, NULL, 'A' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char default_res[] = "customers,accounts,invoices";
    char *res_list = default_res, *end;
    const char *listen = "127.0.0.1:0", *state = NULL, *resources[STORE_MAX_RESOURCES];
    unsigned long long seed = 1;
    struct sockaddr_storage ss, bound;
    socklen_t sslen, blen = sizeof(bound);
    struct sim sim;
    struct simerr e = { 0 };
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *di;
    char addr[INET6_ADDRSTRLEN];
    sigset_t sigs;
    int n_res, opt, sig, port;

    memset(&sim, 0, sizeof(sim));
    while ((opt = getopt_long(argc, argv, "l:r:s:f:vhR:A:", opts, NULL)) != -1) {
        switch (opt) {
        case 'R': {
            struct ref *r = &sim.refs[sim.nrefs];
            if (sim.nrefs == MAX_REFS ||
                sscanf(optarg, "%63[a-z0-9_-].%63[A-Za-z0-9_]=%63[a-z0-9_-]", r->res, r->field,
                       r->parent) != 3) {
                fatal("--ref: expected RES.FIELD=PARENT (at most %d), got \"%s\"", MAX_REFS,
                      optarg);
                return 2;
            }
            sim.nrefs++;
            break;
        }
        case 'A':
            if (sim.nassign == MAX_ASSIGN ||
                sscanf(optarg, "%63[a-z0-9_-]", sim.assign[sim.nassign]) != 1 ||
                strlen(optarg) != strlen(sim.assign[sim.nassign])) {
                fatal("--assign-ids: expected a resource name (at most %d), got \"%s\"",
                      MAX_ASSIGN, optarg);
                return 2;
            }
            sim.nassign++;
            break;
        case 'l': listen = optarg; break;
        case 'r': res_list = optarg; break;
        case 'f': state = optarg; break;
        case 'v': sim.verbose = true; break;
        case 's':
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || *end || optarg[0] < '0' || optarg[0] > '9') {
                fatal("--seed: expected a non-negative integer, got \"%s\"", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (parse_resources(res_list, resources, &n_res) < 0) {
        fatal("--resources: expected 1..%d distinct names of [a-z0-9_-], got \"%s\"",
              STORE_MAX_RESOURCES, res_list);
        return 2;
    }
    if (resolve(listen, &ss, &sslen) < 0) {
        fatal("--listen: expected HOST:PORT, got \"%s\"", listen);
        return 2;
    }
    if (store_open(&sim.store, state, resources, n_res, &e) < 0) {
        fatal("state: %s", e.msg);
        return 1;
    }
    if (faults_new(&sim.faults, seed) < 0 || !(sim.stats = stats_new())) {
        fatal("out of memory");
        return 1;
    }
    pthread_mutex_init(&sim.stats_mu, NULL);
    pthread_mutex_init(&sim.idem_mu, NULL);
    if ((sim.idem = calloc(IDEM_MAX, sizeof(*sim.idem))) == NULL) {
        fatal("out of memory");
        return 1;
    }
    pthread_mutex_init(&sim.log_mu, NULL);
    atomic_init(&sim.stopping, false);

    /* Connection threads inherit this mask, so only sigwait sees signals. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION |
                             MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                             (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0) |
                             (sim.verbose ? MHD_USE_ERROR_LOG : 0),
                         0, NULL, NULL, on_request, &sim,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &sim,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                         MHD_OPTION_END);
    if (!d) {
        fatal("cannot listen on %s", listen);
        return 1;
    }
    di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    if (!di || getsockname(di->listen_fd, (struct sockaddr *)&bound, &blen) < 0) {
        fatal("getsockname: %s", strerror(errno));
        MHD_stop_daemon(d);
        return 1;
    }
    if (bound.ss_family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&bound;

        inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof(addr));
        port = ntohs(a6->sin6_port);
        printf("{\"listening\":\"[%s]:%d\"}\n", addr, port);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&bound;

        inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof(addr));
        port = ntohs(a4->sin_port);
        printf("{\"listening\":\"%s:%d\"}\n", addr, port);
    }
    fflush(stdout);

    while (sigwait(&sigs, &sig) != 0)
        ;
    atomic_store(&sim.stopping, true);
    MHD_stop_daemon(d);
    faults_free(sim.faults);
    idem_clear(&sim);
    free(sim.idem);
    store_free(sim.store);
    json_decref(sim.stats);
    pthread_mutex_destroy(&sim.stats_mu);
    pthread_mutex_destroy(&sim.log_mu);
    return 0;
}
