#include "restsrc.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "../../daemon/backoff.h"
#include "../../daemon/log.h"
#include "../../daemon/strbuf.h"
#include "../../resolver/canon.h"
#include "../../state/dlq.h"
#include "../../state/journal.h"
#include "../../state/shadow.h"
#include "restfeed.h"
#include "restsink.h"

#define POSITION_MAX (1 << 20)
#define BACKOFF_MIN_MS 250
#define FENCE_POLL_MS 10
#define DOWN_AFTER_FAILURES 3
#define LIMIT_MAX 100000
#define DURABLE_CHECK_MS 2000   /* a page still not durable: look why */

/* FS_DURABLE: the page is in the open state transaction; FS_COMMITTED:
 * committed, waiting for the owner's sync (restsrc_durable). */
enum feed_state { FS_WAIT, FS_REQUEST, FS_FENCE, FS_DURABLE, FS_COMMITTED };

/* One feed: a mapping side on this endpoint that is a source. */
struct feed {
    struct restsrc *src;
    const struct cfg_mapping *m;
    const struct cfg_side *sd;      /* this endpoint's side */
    const struct cfg_side *peer;
    char pos[300];                  /* position name */
    enum feed_state st;
    uv_timer_t timer;
    struct rest_req *req;
    /* durable position, and the one written with the page in flight */
    struct rf_cursor cur, next;
    char *since, *next_since;       /* sequence style */
    char *next_text;                /* position text written with the page */
    int limit;
    long offset, next_offset;
    bool next_short;
    unsigned backoff_ms;
    int fails;
    uint64_t fence;
    char *body;                     /* a page waiting for the create fence */
    size_t body_len;
};

struct restsrc {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct cfg_endpoint *ep;
    struct state *st;
    struct rest_http *http;
    struct restsink *writer;
    struct restsrc_hooks hooks;
    struct feed *feeds;
    size_t nfeeds;
    bool up, closing;
    int pending_closes;
    void (*closed)(void *);
    void *closed_arg;
    uint64_t open_changes;
    json_t *kinds;                  /* {mapping: {side-a field: kind}} */
    struct strbuf url, q;
    struct restsrc_stats stats;
};

static void feed_request(struct feed *f);

static int64_t now_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static bool side_reads(const struct cfg_mapping *m, const struct cfg_side *sd)
{
    return m->direction == CFG_DIR_BOTH ||
           (sd == &m->a && m->direction == CFG_DIR_A_TO_B) ||
           (sd == &m->b && m->direction == CFG_DIR_B_TO_A);
}

static void set_up(struct restsrc *p, bool up)
{
    if (p->up == up)
        return;
    p->up = up;
    if (p->hooks.on_connection)
        p->hooks.on_connection(p->hooks.arg, p, up);
}

static unsigned backoff_max(const struct restsrc *p)
{
    return (unsigned)p->cfg->retry.backoff_max_ms;
}

static void on_timer(uv_timer_t *t)
{
    struct feed *f = t->data;

    if (!f->src->closing)
        feed_request(f);
}

static void feed_retry(struct feed *f, const char *what, const char *why,
                       int64_t retry_after_ms, bool transport)
{
    struct restsrc *p = f->src;
    uint64_t delay = f->backoff_ms;
    char d[32];

    p->stats.page_errors++;
    f->fails++;
    if (retry_after_ms >= 0)
        delay = retry_after_ms < BACKOFF_MIN_MS ? BACKOFF_MIN_MS : (uint64_t)retry_after_ms;
    else {
        delay = backoff_jitter(delay);
        f->backoff_ms = f->backoff_ms * 2 > backoff_max(p) ? backoff_max(p) : f->backoff_ms * 2;
    }
    snprintf(d, sizeof(d), "%" PRIu64, delay);
    log_error("restsrc", what, "endpoint", p->ep->name, "mapping", f->m->name,
              "err", why, "retry_in_ms", d);
    if (transport || f->fails >= DOWN_AFTER_FAILURES)
        set_up(p, false);
    f->st = FS_WAIT;
    uv_timer_start(&f->timer, on_timer, delay, 0);
}

/* ---- learned field kinds (shared with the writer through the state) ---- */

static void kinds_key(const struct cfg_mapping *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "rest_kinds/%s", m->name);
}

static json_t *kinds_of(struct restsrc *p, const struct cfg_mapping *m)
{
    json_t *k = json_object_get(p->kinds, m->name);
    char key[300], *buf;

    if (k != NULL)
        return k;
    k = NULL;
    kinds_key(m, key, sizeof(key));
    buf = malloc(65536);
    if (buf != NULL && state_meta_get(p->st, key, buf, 65536, NULL) == 0)
        k = json_loads(buf, 0, NULL);
    free(buf);
    if (!json_is_object(k)) {
        json_decref(k);
        k = json_object();
    }
    json_object_set_new(p->kinds, m->name, k);
    return k;
}

/* Remembers the kinds a record showed; true when something is new. */
static bool kinds_learn(json_t *known, const struct rf_record *r)
{
    const char *name;
    json_t *v;
    bool changed = false;

    json_object_foreach(r->kinds, name, v) {
        const char *k = json_string_value(v);
        const char *old = json_string_value(json_object_get(known, name));

        if (k == NULL || k[0] == RF_NULL || (old && strcmp(old, k) == 0))
            continue;
        json_object_set_new(known, name, json_string(k));
        changed = true;
    }
    return changed;
}

static void kinds_save(struct restsrc *p, const struct cfg_mapping *m)
{
    char key[300], *text = json_dumps(kinds_of(p, m), JSON_COMPACT);

    kinds_key(m, key, sizeof(key));
    if (text != NULL)
        state_meta_set(p->st, key, text, NULL);
    free(text);
}

/* ---- one record ---- */

static int dead_letter(struct feed *f, const struct rf_record *r, struct err *e)
{
    struct restsrc *p = f->src;
    struct dlq_entry d = { 0 };
    int rc;

    d.mapping = f->m->name;
    d.key = r->key;
    d.source = p->ep->name;
    d.target = f->peer->endpoint;
    d.change = r->excerpt ? r->excerpt : "";
    d.error = r->error;
    d.attempts = 1;
    if ((rc = dlq_add(p->st, &d, e)) != 0)
        return rc;
    p->stats.dead_lettered++;
    log_error("restsrc", "feed record sent to the DLQ; the feed goes on",
              "endpoint", p->ep->name, "mapping", f->m->name, "key", r->key,
              "err", r->error);
    return 0;
}

/* Replaces a server-assigned key with the key of the postgres side (the
 * peer) it stands for: changes carry that one. */
static int translate_key(struct feed *f, struct rf_record *r, struct err *e)
{
    const struct cfg_side *pg = f->peer;
    char buf[4096];
    json_t *ka;
    size_t i;
    json_t *v;
    int rc;

    rc = f->sd == &f->m->b ? xref_get_a(f->src->st, f->m->name, r->key, buf, sizeof(buf), e)
                           : xref_get_b(f->src->st, f->m->name, r->key, buf, sizeof(buf), e);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    ka = json_loads(buf, 0, NULL);
    if (!json_is_array(ka) || json_array_size(ka) != pg->nkey) {
        json_decref(ka);
        return err_set(e, -EPROTO, "key cross-reference of %s is malformed", r->key);
    }
    json_array_foreach(ka, i, v) {
        const char *an = pg == &f->m->a ? pg->key[i] : rf_a_name(f->m, pg->key[i]);
        if (an != NULL)
            json_object_set(r->fields, an, v);
    }
    json_decref(ka);
    free(r->key);
    r->key = strdup(buf);
    return r->key ? 0 : -ENOMEM;
}

/* 1: r is an echo of tandem's write (its version saved), 2: r is older than
 * what the shadow already holds for this side (G5: a page read before a
 * write of ours came back after it), 0: a change, <0: error. A canary
 * record tandem writes here itself must travel on: daemon/canaries.c only
 * writes one on a key whose shadow is absent or a tombstone (the last one was
 * deleted on both sides) and not through the writer, so neither rule
 * below takes it for an echo. */
/* For a change, *agreed gets the shadow's record (the last state both
 * sides agreed on: what this change was made over, as far as tandem
 * knows), or NULL. */
static int echo_check(struct feed *f, const struct rf_record *r, bool *had_shadow,
                      bool *tombstone, char **agreed, struct err *e)
{
    struct restsrc *p = f->src;
    struct shadow sh = { 0 };
    char hash[CANON_HASH_HEX + 1];
    bool echo = false;
    int rc;

    *had_shadow = *tombstone = false;
    if (p->writer != NULL && restsink_expects(p->writer, f->m->name, r->key, r))
        return 1;
    rc = shadow_get(p->st, f->m->name, r->key, &sh, e);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    *had_shadow = true;
    *tombstone = sh.tombstone;
    /* Older than what this side already sent, or than the delete that
     * left the record's tombstone, whichever side deleted (G5): stale. */
    if (r->version_us != 0 &&
        (r->version_us < shadow_side_version(&sh, f->sd == &f->m->a ? 'a' : 'b') ||
         (sh.tombstone && !r->deleted && r->version_us < shadow_version(&sh)))) {
        shadow_clear(&sh);
        return 2;
    }
    if (r->deleted) {
        echo = sh.tombstone;
    } else if (!sh.tombstone) {
        canon_hash(r->fields, hash);
        echo = strcmp(hash, sh.hash) == 0;
        if (!echo && sh.fields != NULL) {
            json_t *want = json_loads(sh.fields, 0, NULL);
            echo = json_is_object(want) && rf_fields_equal(r->fields, r->kinds, want);
            json_decref(want);
        }
    }
    if (!echo && !sh.tombstone && sh.fields != NULL)
        *agreed = strdup(sh.fields);
    if (echo && r->version_us != 0) {
        if (f->sd == &f->m->a)
            sh.version_a_us = r->version_us;
        else
            sh.version_b_us = r->version_us;
        rc = shadow_put(p->st, f->m->name, r->key, &sh, e);
    }
    shadow_clear(&sh);
    return rc < 0 ? rc : echo;
}

static int handle_record(struct feed *f, struct rf_record *r, int64_t *txn,
                         int64_t now, bool *kinds_changed, struct err *e)
{
    struct restsrc *p = f->src;
    struct change c = { 0 };
    bool had, tomb;
    char *fields, *agreed = NULL;
    int rc;

    if (r->error != NULL)
        return dead_letter(f, r, e);
    if ((rc = translate_key(f, r, e)) != 0)
        return rc;
    if (kinds_learn(kinds_of(p, f->m), r))
        *kinds_changed = true;
    rc = echo_check(f, r, &had, &tomb, &agreed, e);
    if (rc != 0 || (r->deleted && f->m->deletes == CFG_DEL_IGNORE)) {
        if (rc == 1)
            p->stats.echo_suppressed++;
        else if (rc == 2)
            p->stats.stale_dropped++;
        free(agreed);
        return rc < 0 ? rc : 0;
    }
    fields = json_dumps(r->fields, JSON_COMPACT);
    if (fields == NULL) {
        free(agreed);
        return err_set(e, -ENOMEM, "out of memory");
    }
    c.endpoint = p->ep->name;
    c.mapping = f->m->name;
    c.op = r->deleted ? CHANGE_DELETE : (had && !tomb ? CHANGE_UPDATE : CHANGE_INSERT);
    c.key = r->key;
    c.fields = fields;
    /* A feed has no before-image; the agreed record at capture time is the
     * base a writer checks its target against (the shadow at apply time
     * may already hold what the other direction wrote meanwhile). */
    c.old_fields = c.op == CHANGE_INSERT ? NULL : agreed;
    c.version_us = r->version_us ? r->version_us : now;
    rc = 0;
    if (*txn == 0)
        rc = journal_txn_open(p->st, p->ep->name, 0, 0, now, txn, e);
    if (rc == 0)
        rc = journal_append(p->st, *txn, &c, e);
    free(fields);
    free(agreed);
    if (rc == 0) {
        p->stats.captured++;
        p->open_changes++;
    }
    return rc;
}

/* ---- positions ---- */

static char *seq_position(const char *since)
{
    json_t *o = json_pack("{s:s?}", "since", since);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return t;
}

/* {"<mapping>": position, ...} under the endpoint's own name, for status. */
/* A page journaled whose cursor has not moved yet. */
static bool page_pending(const struct feed *f)
{
    return f->st == FS_DURABLE || f->st == FS_COMMITTED;
}

static int save_summary(struct restsrc *p, struct err *e)
{
    json_t *o = json_object();
    char *t;
    int rc;

    for (size_t i = 0; i < p->nfeeds; i++) {
        struct feed *f = &p->feeds[i];
        const char *v = f->sd->feed.style == CFG_FEED_SEQUENCE
            ? (page_pending(f) ? f->next_since : f->since)
            : (page_pending(f) ? f->next.value : f->cur.value);
        json_object_set_new(o, f->m->name, v ? json_string(v) : json_null());
    }
    t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    rc = state_position_set(p->st, p->ep->name, t, e);
    free(t);
    return rc;
}

static void load_position(struct feed *f)
{
    char *buf = malloc(POSITION_MAX);
    json_t *o;

    if (buf == NULL || state_position_get(f->src->st, f->pos, buf, POSITION_MAX, NULL) != 0) {
        free(buf);
        return;
    }
    if (f->sd->feed.style == CFG_FEED_SEQUENCE) {
        o = json_loads(buf, 0, NULL);
        if (json_is_string(json_object_get(o, "since")))
            f->since = strdup(json_string_value(json_object_get(o, "since")));
        json_decref(o);
    } else if (rf_cursor_load(&f->cur, buf) != 0) {
        log_error("restsrc", "saved feed position is unreadable; reading the feed from"
                  " the start (duplicates are harmless)", "endpoint", f->src->ep->name,
                  "mapping", f->m->name);
    }
    free(buf);
}

/* ---- one page ---- */

static bool page_stuck(const struct feed *f, const struct rf_page *pg)
{
    /* A full page whose records all sit at one cursor value: without an
     * offset the next request would return the same page. */
    const char *v = f->next.value;

    if (v == NULL || pg->n == 0)
        return false;
    for (size_t i = 0; i < pg->n; i++)
        if (pg->recs[i].cursor == NULL || strcmp(pg->recs[i].cursor, v) != 0)
            return false;
    return true;
}

static void schedule_next(struct feed *f)
{
    struct restsrc *p = f->src;

    f->st = FS_WAIT;
    uv_timer_start(&f->timer, on_timer,
                   f->next_short ? (uint64_t)p->ep->poll_interval_ms : 0, 0);
}

static void promote(struct feed *f)
{
    rf_cursor_clear(&f->cur);
    f->cur = f->next;
    rf_cursor_init(&f->next);
    free(f->since);
    f->since = f->next_since;
    f->next_since = NULL;
    f->offset = f->next_offset;
    free(f->next_text);
    f->next_text = NULL;
}

/* Whether the position written with the page is the one in the state. */
static bool page_saved(struct feed *f)
{
    /* Room for the expected text only: a longer one differs anyway. */
    size_t cap = f->next_text ? strlen(f->next_text) + 2 : 0;
    char *buf = cap ? malloc(cap) : NULL;
    bool ok = buf != NULL &&
              state_position_get(f->src->st, f->pos, buf, cap, NULL) == 0 &&
              strcmp(buf, f->next_text) == 0;

    free(buf);
    return ok;
}

static void page_lost(struct feed *f)
{
    log_error("restsrc", "a feed page was not saved; reading it again",
              "endpoint", f->src->ep->name, "mapping", f->m->name);
    free(f->next_text);
    f->next_text = NULL;
    f->st = FS_WAIT;
    uv_timer_start(&f->timer, on_timer, f->backoff_ms, 0);
}

/* The owner normally calls restsrc_durable soon after the page. If a state
 * commit failed (the page rolled back) and nothing else writes, that call
 * never comes: decide from the state itself. */
static void on_durable_check(uv_timer_t *t)
{
    struct feed *f = t->data;

    if (f->src->closing || f->st != FS_DURABLE)
        return;
    if (state_in_txn(f->src->st)) {
        uv_timer_start(&f->timer, on_durable_check, DURABLE_CHECK_MS, 0);
        return;
    }
    if (!page_saved(f)) {
        page_lost(f);
        return;
    }
    promote(f);
    schedule_next(f);
}

static void process_page(struct feed *f)
{
    struct restsrc *p = f->src;
    bool seq = f->sd->feed.style == CFG_FEED_SEQUENCE;
    struct rf_page pg;
    struct err e = { 0 };
    int64_t txn = 0, commit_seq = 0, now = now_us();
    bool kinds_changed = false, full, stuck;
    int rc;

    rc = rf_parse_page(f->m, f->sd, f->body, f->body_len, &pg, &e);
    free(f->body);
    f->body = NULL;
    if (rc != 0) {
        feed_retry(f, "feed page cannot be parsed; reading it again, the cursor stays",
                   e.msg, -1, false);
        return;
    }
    p->stats.pages++;
    full = (int)pg.n >= f->limit;
    rf_cursor_clear(&f->next);
    free(f->next_since);
    f->next_since = NULL;
    if ((rc = rf_cursor_copy(&f->next, &f->cur)) != 0 ||
        (f->since && (f->next_since = strdup(f->since)) == NULL) ||
        (rc = state_begin(p->st, &e)) != 0)
        goto fail;
    for (size_t i = 0; i < pg.n; i++) {
        struct rf_record *r = &pg.recs[i];

        if (!seq && rf_cursor_seen(&f->next, r)) {
            p->stats.dup_skipped++;
            continue;
        }
        if ((rc = handle_record(f, r, &txn, now, &kinds_changed, &e)) != 0)
            goto fail;
        if (!seq && (rc = rf_cursor_advance(&f->next, r)) != 0)
            goto fail;
    }
    if (txn != 0) {
        if ((rc = journal_txn_commit(p->st, txn, 0, &commit_seq, &e)) != 0)
            goto fail;
        txn = 0;
        p->stats.txns++;
    }
    if (seq && pg.last_seq != NULL) {
        free(f->next_since);
        f->next_since = strdup(pg.last_seq);
    }
    stuck = !seq && full && page_stuck(f, &pg);
    f->next_offset = 0;
    if (stuck && f->sd->feed.offset_param != NULL) {
        f->next_offset = f->next.n_at;
    } else if (stuck && f->limit < LIMIT_MAX) {
        char l[32];
        f->limit = f->limit * 2 > LIMIT_MAX ? LIMIT_MAX : f->limit * 2;
        snprintf(l, sizeof(l), "%d", f->limit);
        log_warn("restsrc", "a whole page shares one cursor value and the feed has no"
                 " offset_param: asking for larger pages", "endpoint", p->ep->name,
                 "mapping", f->m->name, "limit", l);
    } else if (!stuck && f->limit != p->ep->page_size && !full) {
        f->limit = p->ep->page_size;
    }
    f->next_short = !full;
    f->next_text = seq ? seq_position(f->next_since) : rf_cursor_save(&f->next);
    if (f->next_text == NULL) {
        rc = err_set(&e, -ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = state_position_set(p->st, f->pos, f->next_text, &e)) != 0)
        goto fail;
    f->st = FS_DURABLE;
    if ((rc = save_summary(p, &e)) != 0)
        goto fail;
    if (kinds_changed)
        kinds_save(p, f->m);
    f->backoff_ms = BACKOFF_MIN_MS;
    f->fails = 0;
    rf_page_free(&pg);
    uv_timer_start(&f->timer, on_durable_check, DURABLE_CHECK_MS, 0);
    /* The owner commits, possibly right here, and calls restsrc_durable. */
    if (p->hooks.on_batch)
        p->hooks.on_batch(p->hooks.arg, p, true, p->open_changes);
    return;
fail:
    /* The page's open journal transaction is never committed (the next
     * start deletes it) and the position did not move: read it again. */
    rf_page_free(&pg);
    free(f->next_text);
    f->next_text = NULL;
    feed_retry(f, "cannot journal a feed page; reading it again",
               e.msg[0] ? e.msg : "out of memory", -1, false);
}

static void on_fence(uv_timer_t *t)
{
    struct feed *f = t->data;

    if (f->src->closing)
        return;
    if (f->src->writer != NULL && !restsink_create_passed(f->src->writer, f->fence)) {
        uv_timer_start(&f->timer, on_fence, FENCE_POLL_MS, 0);
        return;
    }
    process_page(f);
}

static void on_page(void *arg, struct rest_req *req, const struct rest_resp *r)
{
    struct feed *f = arg;
    struct restsrc *p = f->src;
    enum rest_class cls = rest_classify(r);

    (void)req;
    f->req = NULL;
    if (p->closing)
        return;
    if (cls != REST_OK) {
        if (r->too_big && f->limit > 1) {
            f->limit = f->limit / 2;
            log_warn("restsrc", "feed page over max_response_bytes: asking for smaller"
                     " pages", "endpoint", p->ep->name, "mapping", f->m->name);
        }
        feed_retry(f, "feed request failed; retrying", r->error,
                   cls == REST_RATE_LIMITED ? r->retry_after_ms : -1, r->status == 0);
        return;
    }
    set_up(p, true);
    f->body = malloc(r->body_len + 1);
    if (f->body == NULL) {
        feed_retry(f, "out of memory for a feed page", "out of memory", -1, false);
        return;
    }
    memcpy(f->body, r->body, r->body_len + 1);
    f->body_len = r->body_len;
    /* Records made by creates still waiting for their answer need that
     * answer (the key cross-reference) before they can be recognised. */
    if (p->writer != NULL) {
        f->fence = restsink_create_mark(p->writer);
        if (!restsink_create_passed(p->writer, f->fence)) {
            f->st = FS_FENCE;
            uv_timer_start(&f->timer, on_fence, FENCE_POLL_MS, 0);
            return;
        }
    }
    process_page(f);
}

static void feed_request(struct feed *f)
{
    struct restsrc *p = f->src;
    const struct cfg_feed *fd = &f->sd->feed;
    bool seq = fd->style == CFG_FEED_SEQUENCE;
    struct err e = { 0 };
    int rc;

    rc = rf_feed_query(fd, seq ? f->since : f->cur.value, f->limit, f->offset, &p->q);
    if (rc == 0)
        rc = rest_http_url(&p->url, p->ep, seq ? fd->path : f->sd->resource,
                           strbuf_cstr(&p->q));
    if (rc == 0)
        rc = rest_http_request(p->http, "GET", strbuf_cstr(&p->url), NULL, NULL, 0,
                               on_page, f, &f->req, &e);
    if (rc != 0) {
        feed_retry(f, "cannot send a feed request", e.msg[0] ? e.msg : "out of memory",
                   -1, false);
        return;
    }
    f->st = FS_REQUEST;
}

/* ---- lifecycle ---- */

int restsrc_new(struct restsrc **out, uv_loop_t *loop, const struct config *c,
                const struct cfg_endpoint *ep, struct state *s,
                struct rest_http *http, const struct restsrc_hooks *h,
                struct err *e)
{
    struct restsrc *p = calloc(1, sizeof(*p));
    size_t n = 0;

    if (p == NULL || (p->kinds = json_object()) == NULL ||
        (p->feeds = calloc(c->nmappings * 2 + 1, sizeof(*p->feeds))) == NULL) {
        if (p)
            json_decref(p->kinds);
        free(p);
        return err_set(e, -ENOMEM, "out of memory");
    }
    p->loop = loop;
    p->cfg = c;
    p->ep = ep;
    p->st = s;
    p->http = http;
    rest_http_ref(http);
    p->hooks = *h;
    strbuf_init(&p->url);
    strbuf_init(&p->q);
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        for (int side = 0; side < 2; side++) {
            const struct cfg_side *sd = side ? &m->b : &m->a;
            struct feed *f = &p->feeds[n];

            if (sd->ep != ep || !side_reads(m, sd) || sd->feed.style == CFG_FEED_NONE)
                continue;
            f->src = p;
            f->m = m;
            f->sd = sd;
            f->peer = side ? &m->a : &m->b;
            snprintf(f->pos, sizeof(f->pos), "%s/%s", ep->name, m->name);
            f->limit = ep->page_size;
            f->backoff_ms = BACKOFF_MIN_MS;
            rf_cursor_init(&f->cur);
            rf_cursor_init(&f->next);
            uv_timer_init(loop, &f->timer);
            f->timer.data = f;
            n++;
        }
    }
    p->nfeeds = n;
    *out = p;
    return 0;
}

void restsrc_link_writer(struct restsrc *p, struct restsink *w)
{
    p->writer = w;
}

int restsrc_start(struct restsrc *p)
{
    for (size_t i = 0; i < p->nfeeds; i++) {
        struct feed *f = &p->feeds[i];
        load_position(f);
        log_info("restsrc", "polling the feed", "endpoint", p->ep->name,
                 "mapping", f->m->name,
                 "position", f->sd->feed.style == CFG_FEED_SEQUENCE ? f->since : f->cur.value);
        f->st = FS_WAIT;
        uv_timer_start(&f->timer, on_timer, 0, 0);
    }
    return 0;
}

void restsrc_committed(struct restsrc *p)
{
    p->open_changes = 0;
    for (size_t i = 0; i < p->nfeeds; i++) {
        struct feed *f = &p->feeds[i];

        if (f->st != FS_DURABLE)
            continue;
        /* A failed state commit loses the page: make sure it is there
         * before the cursor moves past it. */
        if (!page_saved(f))
            page_lost(f);
        else
            f->st = FS_COMMITTED;
    }
}

void restsrc_durable(struct restsrc *p)
{
    for (size_t i = 0; i < p->nfeeds; i++) {
        struct feed *f = &p->feeds[i];

        if (f->st != FS_COMMITTED)
            continue;
        promote(f);
        schedule_next(f);
    }
}

const struct cfg_endpoint *restsrc_endpoint(const struct restsrc *p)
{
    return p->ep;
}

const struct restsrc_stats *restsrc_stats(const struct restsrc *p)
{
    return &p->stats;
}

bool restsrc_up(const struct restsrc *p)
{
    return p->up;
}

static void on_closed(uv_handle_t *h)
{
    struct feed *f = h->data;
    struct restsrc *p = f->src;

    if (--p->pending_closes > 0)
        return;
    if (p->closed)
        p->closed(p->closed_arg);
    for (size_t i = 0; i < p->nfeeds; i++) {
        struct feed *x = &p->feeds[i];
        rf_cursor_clear(&x->cur);
        rf_cursor_clear(&x->next);
        free(x->since);
        free(x->next_since);
        free(x->next_text);
        free(x->body);
    }
    free(p->feeds);
    json_decref(p->kinds);
    strbuf_free(&p->url);
    strbuf_free(&p->q);
    free(p);
}

void restsrc_close(struct restsrc *p, void (*done)(void *arg), void *arg)
{
    p->closing = true;
    p->writer = NULL;
    p->closed = done;
    p->closed_arg = arg;
    for (size_t i = 0; i < p->nfeeds; i++)
        if (p->feeds[i].req != NULL) {
            rest_http_cancel(p->http, p->feeds[i].req);
            p->feeds[i].req = NULL;
        }
    rest_http_unref(p->http);
    p->http = NULL;
    if (p->nfeeds == 0) {
        if (done)
            done(arg);
        free(p->feeds);
        json_decref(p->kinds);
        strbuf_free(&p->url);
        strbuf_free(&p->q);
        free(p);
        return;
    }
    p->pending_closes = (int)p->nfeeds;
    for (size_t i = 0; i < p->nfeeds; i++)
        uv_close((uv_handle_t *)&p->feeds[i].timer, on_closed);
}
