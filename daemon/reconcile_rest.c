/* reconcile_rest.c: a rest side of a mapping as a reconcile record stream
 * (reconcile_rest.h): the feed read from its beginning on a private event
 * loop, each record mapped and spilled to a temporary SQLite table, then
 * returned in key order. */
#include "reconcile_rest.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "../connectors/rest/rest_http.h"
#include "../state/shadow.h"
#include "../state/state.h"
#include "log.h"
#include "strbuf.h"

#define FETCH_TRIES 5           /* attempts per page before giving up */
#define BACKOFF_MIN_MS 250
#define RETRY_AFTER_MAX_MS 30000
#define KEY_MAX 4096

/* ---- the spill table ---- */

struct rec_spill {
    sqlite3 *db;
    sqlite3_stmt *put, *scan;
    size_t nkey;
    char *canary;
    json_t *fields;             /* the record last returned by next */
    struct strbuf key;
};

static int spill_fail(struct rec_spill *s, struct err *e, const char *what)
{
    return err_set(e, -EIO, "reconcile spill table: %s: %s", what,
                   s->db ? sqlite3_errmsg(s->db) : "cannot open");
}

static int spill_exec(struct rec_spill *s, const char *sql, struct err *e)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return spill_fail(s, e, sql);
    return 0;
}

/* Batches puts in one transaction: a temporary table needs no
 * durability, and a commit per record would be slow. */
static int spill_in_txn(struct rec_spill *s, struct err *e)
{
    return sqlite3_get_autocommit(s->db) ? spill_exec(s, "BEGIN", e) : 0;
}

static int spill_create(struct rec_spill *s, struct err *e)
{
    struct strbuf b, pk;
    char col[32];
    int rc = 0;

    strbuf_init(&b);
    strbuf_init(&pk);
    strbuf_adds(&b, "CREATE TABLE rec (");
    for (size_t i = 0; i < s->nkey; i++) {
        snprintf(col, sizeof(col), "k%zu", i);
        if (i > 0)
            strbuf_adds(&pk, ", ");
        strbuf_adds(&pk, col);
        strbuf_adds(&b, col);
        strbuf_adds(&b, " TEXT NOT NULL, ");
    }
    strbuf_adds(&b, "key TEXT NOT NULL, version INTEGER NOT NULL,"
                    " deleted INTEGER NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (");
    strbuf_adds(&b, strbuf_cstr(&pk));
    strbuf_adds(&b, "))");
    if (b.failed || pk.failed)
        rc = err_set(e, -ENOMEM, "out of memory");
    else if ((rc = spill_exec(s, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                                 " PRAGMA cache_size = -8192", e)) == 0)
        rc = spill_exec(s, strbuf_cstr(&b), e);
    strbuf_free(&b);
    strbuf_free(&pk);
    return rc;
}

static int spill_prepare(struct rec_spill *s, struct err *e)
{
    struct strbuf b;
    char n[24];
    int rc = 0;

    /* INSERT OR REPLACE: the later record of a key wins. */
    strbuf_init(&b);
    strbuf_adds(&b, "INSERT OR REPLACE INTO rec VALUES (");
    for (size_t i = 0; i < s->nkey + 4; i++) {
        snprintf(n, sizeof(n), "%s?%zu", i ? ", " : "", i + 1);
        strbuf_adds(&b, n);
    }
    strbuf_addc(&b, ')');
    if (b.failed)
        rc = err_set(e, -ENOMEM, "out of memory");
    else if (sqlite3_prepare_v2(s->db, strbuf_cstr(&b), -1, &s->put, NULL) != SQLITE_OK)
        rc = spill_fail(s, e, "prepare insert");
    strbuf_reset(&b);
    /* The primary key's index gives the order: BINARY collation is the
     * byte order of each column, as COLLATE "C" on postgres. */
    strbuf_adds(&b, "SELECT ");
    for (size_t i = 0; i < s->nkey; i++) {
        snprintf(n, sizeof(n), "k%zu, ", i);
        strbuf_adds(&b, n);
    }
    strbuf_adds(&b, "version, fields FROM rec WHERE deleted = 0 ORDER BY ");
    for (size_t i = 0; i < s->nkey; i++) {
        snprintf(n, sizeof(n), "%sk%zu", i ? ", " : "", i);
        strbuf_adds(&b, n);
    }
    if (rc == 0 && b.failed)
        rc = err_set(e, -ENOMEM, "out of memory");
    else if (rc == 0 &&
             sqlite3_prepare_v2(s->db, strbuf_cstr(&b), -1, &s->scan, NULL) != SQLITE_OK)
        rc = spill_fail(s, e, "prepare scan");
    strbuf_free(&b);
    return rc;
}

int rec_spill_new(struct rec_spill **out, size_t nkey, const char *canary_key,
                  struct err *e)
{
    struct rec_spill *s;
    int rc;

    *out = NULL;
    if (nkey == 0 || nkey > REC_KEY_MAX)
        return err_set(e, -EINVAL, "reconcile spill table: %zu key columns (1..%d)",
                       nkey, REC_KEY_MAX);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    s->nkey = nkey;
    strbuf_init(&s->key);
    if (canary_key != NULL && (s->canary = strdup(canary_key)) == NULL) {
        rec_spill_free(s);
        return err_set(e, -ENOMEM, "out of memory");
    }
    /* "": a private temporary database, kept in a file once it outgrows
     * the page cache and deleted when closed. */
    if (sqlite3_open_v2("", &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        rc = spill_fail(s, e, "open");
        rec_spill_free(s);
        return rc;
    }
    if ((rc = spill_create(s, e)) != 0 || (rc = spill_prepare(s, e)) != 0) {
        rec_spill_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void rec_spill_free(struct rec_spill *s)
{
    if (s == NULL)
        return;
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->scan);
    if (s->db != NULL)
        sqlite3_close(s->db);
    free(s->canary);
    json_decref(s->fields);
    strbuf_free(&s->key);
    free(s);
}

int rec_spill_clear(struct rec_spill *s, struct err *e)
{
    sqlite3_reset(s->scan);
    return spill_exec(s, "DELETE FROM rec", e);
}

/* Binds the key columns of key (a JSON array of nkey strings). */
static int bind_key(struct rec_spill *s, const char *key, bool *canary,
                    struct err *e)
{
    json_t *ka = json_loads(key, 0, NULL), *v;
    size_t i;
    int rc = 0;

    *canary = false;
    if (!json_is_array(ka) || json_array_size(ka) != s->nkey) {
        json_decref(ka);
        return err_set(e, -EINVAL, "key %.200s is not an array of %zu values", key,
                       s->nkey);
    }
    json_array_foreach(ka, i, v) {
        if (!json_is_string(v)) {
            rc = err_set(e, -EINVAL, "key %.200s holds a value that is not text", key);
            break;
        }
        if (sqlite3_bind_text(s->put, (int)i + 1, json_string_value(v),
                              (int)json_string_length(v), SQLITE_TRANSIENT) != SQLITE_OK) {
            rc = spill_fail(s, e, "bind key");
            break;
        }
    }
    if (rc == 0 && s->canary != NULL)
        *canary = strcmp(json_string_value(json_array_get(ka, 0)), s->canary) == 0;
    json_decref(ka);
    return rc;
}

int rec_spill_put(struct rec_spill *s, const char *key, const json_t *fields,
                  int64_t version_us, bool deleted, struct err *e)
{
    int n = (int)s->nkey;
    bool canary;
    char *text;
    int rc;

    sqlite3_reset(s->put);
    if ((rc = bind_key(s, key, &canary, e)) != 0 || canary)
        return rc;
    if ((rc = spill_in_txn(s, e)) != 0)
        return rc;
    text = json_dumps(fields, JSON_COMPACT);
    if (text == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    if (sqlite3_bind_text(s->put, n + 1, key, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(s->put, n + 2, version_us) != SQLITE_OK ||
        sqlite3_bind_int(s->put, n + 3, deleted ? 1 : 0) != SQLITE_OK ||
        sqlite3_bind_text(s->put, n + 4, text, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        rc = spill_fail(s, e, "bind record");
    else if (sqlite3_step(s->put) != SQLITE_DONE)
        rc = spill_fail(s, e, "insert");
    free(text);
    sqlite3_reset(s->put);
    return rc;
}

int rec_spill_scan(struct rec_spill *s, struct err *e)
{
    int rc;

    sqlite3_reset(s->scan);
    if (!sqlite3_get_autocommit(s->db) && (rc = spill_exec(s, "COMMIT", e)) != 0)
        return rc;
    return 0;
}

int rec_spill_next(struct rec_spill *s, struct rec_record *r, struct err *e)
{
    int n = (int)s->nkey, rc = sqlite3_step(s->scan);
    const char *f;

    if (rc == SQLITE_DONE) {
        sqlite3_reset(s->scan);
        return 0;
    }
    if (rc != SQLITE_ROW)
        return spill_fail(s, e, "scan");
    memset(r, 0, sizeof(*r));
    r->nkey = s->nkey;
    /* The canonical key rebuilt from the columns, exactly as the
     * postgres stream writes it. */
    strbuf_reset(&s->key);
    strbuf_addc(&s->key, '[');
    for (int i = 0; i < n; i++) {
        r->keyv[i] = (const char *)sqlite3_column_text(s->scan, i);
        if (r->keyv[i] == NULL)
            return spill_fail(s, e, "read key");
        if (i > 0)
            strbuf_addc(&s->key, ',');
        strbuf_add_json_string(&s->key, r->keyv[i],
                               (size_t)sqlite3_column_bytes(s->scan, i));
    }
    strbuf_addc(&s->key, ']');
    if ((r->key = strbuf_cstr(&s->key)) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    r->version_us = sqlite3_column_int64(s->scan, n);
    f = (const char *)sqlite3_column_text(s->scan, n + 1);
    json_decref(s->fields);
    s->fields = f ? json_loads(f, 0, NULL) : NULL;
    if (!json_is_object(s->fields))
        return err_set(e, -EPROTO, "reconcile spill table: record %s unreadable", r->key);
    r->fields = s->fields;
    r->bucket = -1;
    return 1;
}

/* ---- paging a feed ---- */

void rec_walk_init(struct rec_walk *w, int page_size)
{
    memset(w, 0, sizeof(*w));
    w->page_size = page_size > 0 ? page_size : 100;
    w->limit = w->page_size;
}

void rec_walk_clear(struct rec_walk *w)
{
    free(w->since);
    w->since = NULL;
}

static int walk_since(struct rec_walk *w, const char *v, struct err *e)
{
    char *n = strdup(v);

    if (n == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    free(w->since);
    w->since = n;
    return 0;
}

static int walk_sequence(struct rec_walk *w, const struct rf_page *pg, struct err *e)
{
    if (pg->last_seq == NULL)
        return err_set(e, -EPROTO, "a full page gave no sequence to go on from");
    if (w->since != NULL && strcmp(w->since, pg->last_seq) == 0)
        return err_set(e, -EPROTO, "the feed does not advance: a full page ended at"
                       " sequence %.100s, where it started", pg->last_seq);
    return walk_since(w, pg->last_seq, e);
}

int rec_walk_next(struct rec_walk *w, const struct cfg_feed *f,
                  const struct rf_page *pg, struct err *e)
{
    const char *last;
    size_t run = 0;

    if (pg->n < (size_t)w->limit) {
        w->done = true;
        return 0;
    }
    if (f->style == CFG_FEED_SEQUENCE)
        return walk_sequence(w, pg, e);
    last = pg->recs[pg->n - 1].cursor;
    if (last == NULL)
        return err_set(e, -EPROTO, "the last record of a full page has no cursor field"
                       " \"%s\": the feed cannot be paged",
                       f->cursor_field ? f->cursor_field : "");
    if (w->since != NULL && strcmp(last, w->since) == 0) {
        /* The whole page sits at one cursor value (the cursor is
         * inclusive): step over it, or see more of it at once. */
        if (f->offset_param != NULL) {
            w->offset += (long)pg->n;
            return 0;
        }
        if (w->limit >= REC_WALK_LIMIT_MAX)
            return err_set(e, -EPROTO, "more than %d records share the cursor value"
                           " %.100s and the feed has no offset_param: it cannot be paged",
                           REC_WALK_LIMIT_MAX, last);
        w->limit = w->limit > REC_WALK_LIMIT_MAX / 2 ? REC_WALK_LIMIT_MAX : w->limit * 2;
        return 0;
    }
    /* The records at the last value come again first: skip them when the
     * feed lets us (read twice they would only replace themselves). */
    for (size_t i = pg->n; i-- > 0;) {
        if (pg->recs[i].cursor == NULL || strcmp(pg->recs[i].cursor, last) != 0)
            break;
        run++;
    }
    w->offset = f->offset_param != NULL ? (long)run : 0;
    w->limit = w->page_size;
    return walk_since(w, last, e);
}

/* ---- the stream ---- */

struct fetch {
    bool done;
    long status;
    enum rest_class cls;
    int64_t retry_after_ms;
    char *body;
    size_t len;
    char error[512];
};

struct rrs {
    const struct cfg_mapping *m;
    const struct cfg_side *sd;
    const struct cfg_retry *retry;
    char side;
    struct state *st;           /* read-only; NULL without a state file */
    struct rec_spill *spill;
    uv_loop_t loop;
    bool loop_ok;
    struct rest_http *http;
    struct strbuf url, query, shown;
    int64_t skipped;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static void on_fetched(void *arg, struct rest_req *req, const struct rest_resp *r)
{
    struct fetch *f = arg;

    (void)req;
    f->done = true;
    f->status = r->status;
    f->cls = rest_classify(r);
    f->retry_after_ms = r->retry_after_ms;
    snprintf(f->error, sizeof(f->error), "%s", r->error ? r->error : "");
    if (f->cls == REST_OK && (f->body = malloc(r->body_len + 1)) != NULL) {
        memcpy(f->body, r->body, r->body_len + 1);
        f->len = r->body_len;
    }
}

/* One GET of the url built in p->url, run to its end on the private loop. */
static int fetch_once(struct rrs *p, struct fetch *f, struct err *e)
{
    int rc;

    memset(f, 0, sizeof(*f));
    rc = rest_http_request(p->http, "GET", strbuf_cstr(&p->url), NULL, NULL, 0,
                           on_fetched, f, NULL, e);
    if (rc != 0)
        return rc;
    while (!f->done)
        if (uv_run(&p->loop, UV_RUN_ONCE) == 0 && !f->done)
            return err_set(e, -EIO, "endpoint %s: the request loop stopped early",
                           p->sd->endpoint);
    if (f->cls == REST_OK && f->body == NULL)
        return err_set(e, -ENOMEM, "out of memory for a feed page");
    return 0;
}

/* Builds the next request's url in p->url, and in p->shown the request
 * as messages show it: the path and the paging parameters, never base_url
 * (it may hold credentials), headers or the feed's own params (they may
 * hold API keys). */
static int build_request(struct rrs *p, const struct rec_walk *w)
{
    const struct cfg_feed *fd = &p->sd->feed;
    struct cfg_feed bare = *fd;
    const char *path = fd->style == CFG_FEED_SEQUENCE && fd->path ? fd->path
                                                                   : p->sd->resource;

    bare.params = NULL;
    bare.nparams = 0;
    if (rf_feed_query(&bare, w->since, w->limit, w->offset, &p->query) != 0)
        return -ENOMEM;
    strbuf_reset(&p->shown);
    strbuf_adds(&p->shown, path);
    strbuf_addc(&p->shown, '?');
    strbuf_adds(&p->shown, strbuf_cstr(&p->query));
    if (p->shown.failed ||
        rf_feed_query(fd, w->since, w->limit, w->offset, &p->query) != 0)
        return -ENOMEM;
    return rest_http_url(&p->url, p->sd->ep, path, strbuf_cstr(&p->query));
}

/* The delay before attempt+1, or -1 when a failure is not worth retrying. */
static int64_t retry_delay(const struct rrs *p, const struct fetch *f, bool parsed_bad,
                           int attempt)
{
    int64_t d = (int64_t)BACKOFF_MIN_MS << (attempt - 1);

    if (attempt >= FETCH_TRIES)
        return -1;
    if (!parsed_bad && f->cls != REST_TRANSIENT && f->cls != REST_RATE_LIMITED)
        return -1;
    if (f->cls == REST_RATE_LIMITED && f->retry_after_ms >= 0)
        return f->retry_after_ms < RETRY_AFTER_MAX_MS ? f->retry_after_ms
                                                      : RETRY_AFTER_MAX_MS;
    return d < p->retry->backoff_max_ms ? d : p->retry->backoff_max_ms;
}

/* The final error of a page: what failed, and what the operator can do. */
static int page_error(struct rrs *p, const struct fetch *f, const struct err *perr,
                      int attempts, struct err *e)
{
    const char *ep = p->sd->endpoint, *req = strbuf_cstr(&p->shown);

    if (perr != NULL)
        return err_set(e, -EPROTO, "endpoint %s: GET %s: the feed page cannot be used"
                       " (%d attempts): %s; check the mapping's feed settings (style,"
                       " records, cursor_field) against what the API returns",
                       ep, req, attempts, perr->msg);
    if (f->status == 0)
        return err_set(e, -EHOSTUNREACH, "endpoint %s: GET %s: no answer (%d attempts):"
                       " %s; check that the API is up and base_url is right (tandem"
                       " check -c FILE), then run reconcile again", ep, req, attempts,
                       f->error);
    if (f->cls == REST_TRANSIENT || f->cls == REST_RATE_LIMITED)
        return err_set(e, -EIO, "endpoint %s: GET %s: %s (%d attempts); the API keeps"
                       " failing: run reconcile again later", ep, req, f->error, attempts);
    return err_set(e, -EIO, "endpoint %s: GET %s: %s; check the endpoint's headers and"
                   " the mapping's resource and feed (tandem check -c FILE)", ep, req,
                   f->error);
}

/* Reads the page w asks for into *pg, retrying transient failures and
 * pages that cannot be parsed (a proxy's error page, a cut body). */
static int read_page(struct rrs *p, const struct rec_walk *w, struct rf_page *pg,
                     struct err *e)
{
    struct fetch f;
    struct err perr;
    int rc;

    if (build_request(p, w) != 0)
        return err_set(e, -ENOMEM, "out of memory");
    for (int attempt = 1;; attempt++) {
        bool bad = false;
        int64_t delay;
        char d[24];

        if ((rc = fetch_once(p, &f, e)) != 0)
            return rc;
        if (f.cls == REST_OK) {
            memset(&perr, 0, sizeof(perr));
            rc = rf_parse_page(p->m, p->sd, f.body, f.len, pg, &perr);
            free(f.body);
            if (rc == 0)
                return 0;
            if (rc == -ENOMEM)
                return err_set(e, rc, "out of memory");
            bad = true;
        }
        if ((delay = retry_delay(p, &f, bad, attempt)) < 0)
            return page_error(p, &f, bad ? &perr : NULL, attempt, e);
        snprintf(d, sizeof(d), "%" PRId64, delay);
        log_warn("reconcile", bad ? "feed page cannot be parsed; reading it again"
                                  : "feed request failed; retrying",
                 "endpoint", p->sd->endpoint, "mapping", p->m->name,
                 "request", strbuf_cstr(&p->shown), "err", bad ? perr.msg : f.error,
                 "retry_in_ms", d);
        sleep_ms(delay);
    }
}

/* A key the server assigned stands for the side-a key it was created
 * for (the key cross-reference the writer keeps). */
/* Records of a server that assigns its own ids pair with the other side's
 * key through the key cross-reference: side b's id maps to side a's key;
 * on side a, the canonical key is side b's (the postgres row's). Only
 * mapped key fields are rewritten: an extra field would read as a
 * difference. */
static int translate_key(struct rrs *p, struct rf_record *r, struct err *e)
{
    const struct cfg_side *other = p->side == 'b' ? &p->m->a : &p->m->b;
    char buf[KEY_MAX];
    json_t *k, *v;
    size_t i;
    int rc;

    if (p->st == NULL)
        return 0;
    rc = p->side == 'b' ? xref_get_a(p->st, p->m->name, r->key, buf, sizeof(buf), e)
                        : xref_get_b(p->st, p->m->name, r->key, buf, sizeof(buf), e);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    k = json_loads(buf, 0, NULL);
    if (!json_is_array(k) || json_array_size(k) != other->nkey) {
        json_decref(k);
        return err_set(e, -EPROTO, "mapping %s: the key cross-reference of %s is"
                       " malformed", p->m->name, r->key);
    }
    json_array_foreach(k, i, v) {
        const char *name = p->side == 'b' ? other->key[i]
                                          : config_field_b_to_a(p->m, other->key[i]);
        if (name != NULL && json_object_get(r->fields, name) != NULL)
            json_object_set(r->fields, name, v);
    }
    json_decref(k);
    free(r->key);
    r->key = strdup(buf);
    return r->key ? 0 : err_set(e, -ENOMEM, "out of memory");
}

static int spill_page(struct rrs *p, struct rf_page *pg, struct err *e)
{
    int rc;

    for (size_t i = 0; i < pg->n; i++) {
        struct rf_record *r = &pg->recs[i];

        if (r->error != NULL || r->key == NULL || r->fields == NULL) {
            p->skipped++;
            continue;
        }
        if ((rc = translate_key(p, r, e)) != 0)
            return rc;
        rc = rec_spill_put(p->spill, r->key, r->fields, r->version_us, r->deleted, e);
        if (rc == -EINVAL) {
            p->skipped++;       /* a key of the wrong shape: not comparable */
            continue;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void log_read(struct rrs *p, int pages, int64_t ms)
{
    char n[24], np[24], t[24];

    snprintf(n, sizeof(n), "%" PRId64, p->skipped);
    snprintf(np, sizeof(np), "%d", pages);
    snprintf(t, sizeof(t), "%" PRId64, ms);
    if (p->skipped > 0)
        log_warn("reconcile", "feed records without a usable key were not compared"
                 " (the daemon dead-letters them)", "endpoint", p->sd->endpoint,
                 "mapping", p->m->name, "records", n);
    log_debug("reconcile", "feed read", "endpoint", p->sd->endpoint,
              "mapping", p->m->name, "pages", np, "ms", t);
}

/* A consistent read of a feed is the whole feed as paged now. */
static int rrs_begin(void *impl, struct err *e)
{
    struct rrs *p = impl;
    struct rec_walk w;
    int64_t t0 = mono_ms();
    int pages = 0, rc;

    p->skipped = 0;
    if ((rc = rec_spill_clear(p->spill, e)) != 0)
        return rc;
    rec_walk_init(&w, p->sd->ep->page_size);
    while (!w.done) {
        struct rf_page pg;
        struct err we = { 0 };

        if ((rc = read_page(p, &w, &pg, e)) != 0)
            break;
        pages++;
        rc = spill_page(p, &pg, e);
        if (rc == 0 && (rc = rec_walk_next(&w, &p->sd->feed, &pg, &we)) != 0)
            err_set(e, rc, "endpoint %s: GET %s: %s", p->sd->endpoint,
                    strbuf_cstr(&p->shown), we.msg);
        rf_page_free(&pg);
        if (rc != 0)
            break;
    }
    rec_walk_clear(&w);
    if (rc == 0)
        log_read(p, pages, mono_ms() - t0);
    return rc;
}

static int rrs_scan(void *impl, int nbuckets, const int *buckets, size_t n,
                    struct err *e)
{
    struct rrs *p = impl;

    /* No buckets: the engine only asks for every record. */
    (void)nbuckets;
    (void)buckets;
    (void)n;
    return rec_spill_scan(p->spill, e);
}

static int rrs_next(void *impl, struct rec_record *r, struct err *e)
{
    struct rrs *p = impl;

    return rec_spill_next(p->spill, r, e);
}

static void rrs_free(void *impl)
{
    struct rrs *p = impl;

    if (p == NULL)
        return;
    if (p->http != NULL)
        rest_http_unref(p->http);
    if (p->loop_ok) {
        /* Let the transport's handles close before the loop goes. */
        uv_run(&p->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&p->loop) != 0)
            log_error("reconcile", "event loop closed with open handles",
                      "endpoint", p->sd->endpoint);
    }
    rec_spill_free(p->spill);
    state_close(p->st);
    strbuf_free(&p->url);
    strbuf_free(&p->query);
    strbuf_free(&p->shown);
    free(p);
}

static const struct rec_stream_ops rest_ops = {
    .bucket_method = NULL,
    .begin = rrs_begin,
    .scan = rrs_scan,
    .next = rrs_next,
    .free = rrs_free,
};

static int check_side(const struct cfg_mapping *m, char side, const struct cfg_side *sd,
                      struct err *e)
{
    if (sd->ep == NULL || sd->ep->kind != CFG_KIND_REST)
        return err_set(e, -ENOTSUP, "mapping %s: side %c is not a rest endpoint",
                       m->name, side);
    if (sd->feed.style == CFG_FEED_NONE)
        return err_set(e, -ENOTSUP, "mapping %s: side %c (%s %s) has no feed: reconcile"
                       " reads a rest side through its feed; add \"feed\" to that side",
                       m->name, side, sd->endpoint, sd->resource ? sd->resource : "");
    if (sd->nkey == 0 || sd->nkey > REC_KEY_MAX)
        return err_set(e, -EINVAL, "mapping %s: side %c needs 1..%d key fields",
                       m->name, side, REC_KEY_MAX);
    if (m->a.nkey != m->b.nkey)
        return err_set(e, -EINVAL, "mapping %s: side a has %zu key fields and side b"
                       " %zu: reconcile matches keys field by field", m->name,
                       m->a.nkey, m->b.nkey);
    return 0;
}

int rec_rest_open(struct rec_stream *out, const struct config *c,
                  const struct cfg_mapping *m, char side, struct err *e)
{
    const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;
    struct rrs *p;
    int rc;

    out->ops = NULL;
    out->impl = NULL;
    if ((rc = check_side(m, side, sd, e)) != 0)
        return rc;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    p->m = m;
    p->sd = sd;
    p->side = side;
    p->retry = &c->retry;
    strbuf_init(&p->url);
    strbuf_init(&p->query);
    strbuf_init(&p->shown);
    /* Optional: without a state file there is no cross-reference yet. */
    if (state_open(&p->st, c->state_path, STATE_READONLY, NULL) != 0)
        p->st = NULL;
    if ((rc = rec_spill_new(&p->spill, sd->nkey, m->canary_key, e)) != 0) {
        rrs_free(p);
        return rc;
    }
    if (uv_loop_init(&p->loop) != 0) {
        rrs_free(p);
        return err_set(e, -EIO, "endpoint %s: cannot start an event loop", sd->endpoint);
    }
    p->loop_ok = true;
    if ((rc = rest_http_new(&p->http, &p->loop, sd->ep, e)) != 0) {
        p->http = NULL;
        rrs_free(p);
        return rc;
    }
    out->ops = &rest_ops;
    out->impl = p;
    return 0;
}
