#include "restsink.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../daemon/backoff.h"
#include "../../daemon/log.h"
#include "../../daemon/strbuf.h"
#include "../../resolver/canon.h"
#include "../../resolver/resolver.h"
#include "../../state/conflicts.h"
#include "../../state/dlq.h"
#include "../../state/journal.h"
#include "../../state/shadow.h"

#define WINDOW_MAX 1024         /* changes read ahead of applied progress */
#define KEYSET_CAP 4096         /* power of two, > 2 * WINDOW_MAX */
#define MAX_DEPS 4              /* depends_on entries ordered per mapping */
#define SLICE 256               /* changes read from the journal at once */
#define CONFLICT_ROUNDS 5       /* re-reads after a lost conditional write */
#define BACKOFF_BASE_MS 250
#define DRAIN_MS 5000           /* close: wait this long for running requests */
#define TICK_MS 1000            /* parked keys, learned kinds */
#define JOURNAL_RETRY_MS 1000
#define KEY_MAX 4096

enum phase { PH_GET, PH_WRITE, PH_CREATE, PH_PUT_CREATE };
enum op_state { OP_PENDING, OP_RUNNING, OP_WAITING, OP_DONE };

/* One journal change bound for this endpoint, or a transaction end. */
struct op {
    struct restsink *s;
    enum op_state state;
    bool marker;                /* end of journal transaction commit_seq */
    int64_t commit_seq, seq;
    char kind;                  /* I U D T */
    char *mapping, *key, *source, *fields_text;
    const struct cfg_mapping *m;
    const struct cfg_side *t;   /* the side on this endpoint */
    json_t *fields;             /* incoming, side-a names */
    int64_t version_us;
    uint64_t keyhash;
    /* Keys of the records this one depends on (depends_on): while an
     * earlier change of one of them is unfinished, this one waits, and an
     * earlier change that depends on this key holds this one back. */
    uint64_t parent_hash[MAX_DEPS];
    int nparents;
    /* while applying */
    enum phase phase;
    struct shadow old;
    bool had_old;
    json_t *base;               /* what the target must still hold for a
                                 * clean write: the source's before-image
                                 * when the change has one, else the
                                 * shadow's fields unless a tombstone */
    json_t *before;             /* the change's old_fields, or NULL */
    json_t *merged;             /* the record after this change */
    json_t *write;              /* a resolved conflict: what the target gets
                                 * (NULL: merged, or the delete) */
    bool write_delete;          /* the resolution deletes the target */
    bool write_source;          /* the resolution also changes the source:
                                 * the result must come back through the
                                 * feed, so it is not taken as an echo */
    char hash[CANON_HASH_HEX + 1];
    char *id;                   /* the record's id in URLs */
    bool has_xref;
    char *rev, *etag;           /* from the last read */
    int64_t target_version_us;
    int attempts, rounds;
    int64_t first_fail_us;
    uint64_t next_try_ms;
    bool post_refused;
    uint64_t ticket;            /* create fence, while a POST runs */
    struct rest_req *req;
};

struct held_key {
    char *mapping, *key;
};

struct restsink {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct cfg_endpoint *ep;
    struct state *st;
    struct rest_http *http;
    struct restsink_hooks hooks;
    uv_timer_t timer, tick, drain;
    bool started, closing, connected, rewinding, closed_handles;
    bool waiting_any;           /* some key waits for its parent */
    int pending_closes;
    void (*closed)(void *);
    void *closed_arg;
    /* progress */
    int64_t applied_seq, done_seq, durable_seq, fed_seq;
    int64_t cur_txn, cur_txn_seq, cur_after;
    int64_t cur_txn_ts_us;      /* its source commit time (lag) */
    int64_t hold_seq;
    struct held_key *held;
    size_t nheld;
    /* the window, oldest first */
    struct op *win[WINDOW_MAX];
    size_t whead, wlen;
    int running;
    uint64_t keyset[KEYSET_CAP];
    uint64_t parentset[KEYSET_CAP]; /* parent keys of unfinished changes */
    size_t nparentset;
    /* create fence */
    uint64_t next_ticket;
    uint64_t *tickets;
    size_t ntickets;
    json_t *kinds;              /* {mapping: {side-a field: kind}} */
    struct resolver_plugin_cache *plugins;  /* loaded on first use */
    char instance[40];
    uint64_t rng;
    struct strbuf url, body, q;
    struct restsink_stats stats;
};

static void feed(struct restsink *s);
static void dispatch(struct restsink *s);
static void send_op(struct op *op);
static void op_done(struct op *op);
static char *parent_key(const struct cfg_dependency *d, const json_t *fields);
static json_t *missing_parents(struct op *op);
static void hold(struct op *op);
static void finish_close(struct restsink *s);

static int64_t now_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static uint64_t fnv(const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 0x100000001b3ULL;
    h = (h ^ 0x1f) * 0x100000001b3ULL;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 0x100000001b3ULL;
    return h ? h : 1;
}

static uint64_t rng_next(struct restsink *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

static void set_connected(struct restsink *s, bool up)
{
    if (s->connected == up)
        return;
    s->connected = up;
    if (s->hooks.on_connection)
        s->hooks.on_connection(s->hooks.arg, s, up);
}

/* ---- window ---- */

static struct op *win_at(struct restsink *s, size_t i)
{
    return s->win[(s->whead + i) % WINDOW_MAX];
}

static void op_free(struct op *op)
{
    if (op == NULL)
        return;
    free(op->mapping);
    free(op->key);
    free(op->source);
    free(op->fields_text);
    json_decref(op->fields);
    shadow_clear(&op->old);
    json_decref(op->base);
    json_decref(op->before);
    json_decref(op->merged);
    json_decref(op->write);
    free(op->id);
    free(op->rev);
    free(op->etag);
    free(op);
}

static bool win_push(struct restsink *s, struct op *op)
{
    if (s->wlen == WINDOW_MAX)
        return false;
    s->win[(s->whead + s->wlen++) % WINDOW_MAX] = op;
    return true;
}

static void update_applied(struct restsink *s)
{
    int64_t target = s->done_seq;

    if (s->hold_seq > 0 && target > s->hold_seq - 1)
        target = s->hold_seq - 1;
    if (target <= s->applied_seq)
        return;
    s->applied_seq = target;
    if (state_begin(s->st, NULL) != 0 ||
        state_applied_set(s->st, s->ep->name, s->applied_seq, NULL) != 0)
        log_error("restsink", "cannot save applied progress", "endpoint", s->ep->name);
    if (s->hooks.on_applied)
        s->hooks.on_applied(s->hooks.arg, s, s->applied_seq);
}

/* Drops finished changes from the head of the window. */
static void retire(struct restsink *s)
{
    while (s->wlen > 0) {
        struct op *op = win_at(s, 0);

        if (!op->marker && op->state != OP_DONE)
            break;
        if (op->marker && op->commit_seq > s->done_seq) {
            s->done_seq = op->commit_seq;
            /* Source commit to the last of its writes answered. */
            if (op->version_us > 0)
                s->stats.lag_us = now_us() - op->version_us;
        }
        op_free(op);
        s->whead = (s->whead + 1) % WINDOW_MAX;
        s->wlen--;
    }
    update_applied(s);
}

/* ---- create fence ---- */

static void ticket_take(struct restsink *s, struct op *op)
{
    uint64_t *n = realloc(s->tickets, (s->ntickets + 1) * sizeof(*n));

    if (n == NULL)
        return;
    s->tickets = n;
    op->ticket = ++s->next_ticket;
    s->tickets[s->ntickets++] = op->ticket;
}

static void ticket_drop(struct restsink *s, struct op *op)
{
    for (size_t i = 0; op->ticket && i < s->ntickets; i++)
        if (s->tickets[i] == op->ticket) {
            s->tickets[i] = s->tickets[--s->ntickets];
            break;
        }
    op->ticket = 0;
}

uint64_t restsink_create_mark(const struct restsink *s)
{
    return s->next_ticket;
}

bool restsink_create_passed(const struct restsink *s, uint64_t mark)
{
    for (size_t i = 0; i < s->ntickets; i++)
        if (s->tickets[i] <= mark)
            return false;
    return true;
}

/* ---- learned kinds ---- */

static void kinds_reload(struct restsink *s)
{
    char key[300], *buf = malloc(65536);

    if (buf == NULL)
        return;
    for (size_t i = 0; i < s->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &s->cfg->mappings[i];
        json_t *saved, *mine;
        const char *f;
        json_t *v;

        if (m->a.ep != s->ep && m->b.ep != s->ep)
            continue;
        snprintf(key, sizeof(key), "rest_kinds/%s", m->name);
        if (state_meta_get(s->st, key, buf, 65536, NULL) != 0)
            continue;
        saved = json_loads(buf, 0, NULL);
        mine = json_object_get(s->kinds, m->name);
        if (mine == NULL) {
            mine = json_object();
            json_object_set_new(s->kinds, m->name, mine);
        }
        json_object_foreach(saved, f, v)
            json_object_set(mine, f, v);
        json_decref(saved);
    }
    free(buf);
}

static void kinds_learn(struct restsink *s, const struct op *op,
                        const struct rf_record *r)
{
    json_t *mine = json_object_get(s->kinds, op->mapping);
    const char *f;
    json_t *v;

    if (mine == NULL) {
        mine = json_object();
        json_object_set_new(s->kinds, op->mapping, mine);
    }
    json_object_foreach(r->kinds, f, v) {
        const char *k = json_string_value(v);
        if (k != NULL && k[0] != RF_NULL)
            json_object_set(mine, f, v);
    }
}

static char kind_of(struct restsink *s, const struct op *op, const char *a_name)
{
    const char *k = json_string_value(
        json_object_get(json_object_get(s->kinds, op->mapping), a_name));

    return k ? k[0] : 0;
}

/* ---- echo hook for the poller ---- */

bool restsink_expects(const struct restsink *s, const char *mapping,
                      const char *key, const struct rf_record *r)
{
    uint64_t h = fnv(mapping, key);

    for (size_t i = 0; i < s->wlen; i++) {
        struct op *op = s->win[(s->whead + i) % WINDOW_MAX];

        if (op->marker || op->keyhash != h ||
            (op->state != OP_RUNNING && op->state != OP_WAITING) ||
            strcmp(op->mapping, mapping) != 0 || strcmp(op->key, key) != 0)
            continue;
        bool del = op->write ? op->write_delete : op->kind == CHANGE_DELETE;
        const json_t *w = op->write ? op->write : op->merged;

        if (op->write_source)
            continue;
        if (del ? r->deleted
                : !r->deleted && w != NULL && rf_fields_equal(r->fields, r->kinds, w))
            return true;
    }
    return false;
}

/* ---- building requests ---- */

static const char *target_name(const struct op *op, const char *a)
{
    return op->t == &op->m->b ? rf_b_name(op->m, a) : a;
}

static bool is_target_key(const struct op *op, const char *tname)
{
    for (size_t i = 0; i < op->t->nkey; i++)
        if (strcmp(op->t->key[i], tname) == 0)
            return true;
    return false;
}

/* The record's id for URLs: the cross-referenced key, else the change's. */
static int resolve_id(struct op *op, struct err *e)
{
    char buf[KEY_MAX];
    struct strbuf b;
    json_t *ka;
    int rc;

    /* The cross-reference pairs side a's key with side b's; a change
     * carries the postgres side's key, the server's is the other one. */
    op->has_xref = false;
    rc = op->t == &op->m->b
             ? xref_get_b(op->s->st, op->mapping, op->key, buf, sizeof(buf), e)
             : xref_get_a(op->s->st, op->mapping, op->key, buf, sizeof(buf), e);
    if (rc == 0)
        op->has_xref = true;
    else if (rc != -ENOENT)
        return rc;
    ka = json_loads(op->has_xref ? buf : op->key, 0, NULL);
    if (!json_is_array(ka) || json_array_size(ka) == 0) {
        json_decref(ka);
        return err_set(e, -EPROTO, "key %s is not a key array", op->key);
    }
    strbuf_init(&b);
    for (size_t i = 0; i < json_array_size(ka); i++) {
        const char *v = json_string_value(json_array_get(ka, i));
        if (i > 0)
            strbuf_addc(&b, ',');
        strbuf_adds(&b, v ? v : "");
    }
    json_decref(ka);
    free(op->id);
    op->id = b.failed ? NULL : strdup(strbuf_cstr(&b));
    strbuf_free(&b);
    return op->id ? 0 : err_set(e, -ENOMEM, "out of memory");
}

static int record_url(struct op *op, const char *query)
{
    struct restsink *s = op->s;
    struct strbuf path;
    int rc;

    strbuf_init(&path);
    strbuf_adds(&path, op->t->resource);
    strbuf_addc(&path, '/');
    rf_url_escape(&path, op->id, strlen(op->id));
    rc = path.failed ? -ENOMEM
                     : rest_http_url(&s->url, s->ep, strbuf_cstr(&path), query);
    strbuf_free(&path);
    return rc;
}

enum body_mode { B_CREATE, B_PATCH, B_PUT, B_SOFT };

/* The revision to send in a body or query: the record's field, else the
 * ETag without quotes. */
static const char *revision(struct op *op, char *buf, size_t cap)
{
    return op->rev != NULL ? op->rev : rest_etag_revision(op->etag, buf, cap);
}

static int add_field(struct op *op, struct strbuf *b, bool *first, const char *tname,
                     const json_t *v, const char *a_name, const char **why)
{
    int rc;

    if (!*first)
        strbuf_addc(b, ',');
    *first = false;
    strbuf_add_json_string(b, tname, strlen(tname));
    strbuf_addc(b, ':');
    rc = rf_body_value(b, v, a_name ? kind_of(op->s, op, a_name) : 0,
                       op->s->ep->numeric, why);
    return rc;
}

/* JSON body of the write; -ERANGE with *why for a value that cannot be
 * sent as the server wants it. */
static int build_body(struct op *op, enum body_mode mode, const char **why)
{
    struct strbuf *b = &op->s->body;
    const json_t *src = op->write ? op->write : mode == B_PATCH ? op->fields : op->merged;
    const struct cfg_write *w = &op->t->write;
    const char *a, *tn;
    json_t *v, *ka = NULL;
    bool first = true;
    char rb[256];
    int rc = 0;

    strbuf_reset(b);
    strbuf_addc(b, '{');
    if (mode == B_SOFT) {
        const char *f = w->del_soft_field ? w->del_soft_field : op->m->soft_delete_field;
        strbuf_add_json_string(b, f, strlen(f));
        strbuf_adds(b, ":true");
        first = false;
    } else {
        json_object_foreach((json_t *)src, a, v) {
            if ((tn = target_name(op, a)) == NULL)
                continue;
            /* The server owns a key it assigned: never send ours for it. */
            if (is_target_key(op, tn) && (op->has_xref || mode == B_PATCH))
                continue;
            if ((rc = add_field(op, b, &first, tn, v, a, why)) != 0)
                return rc;
        }
        if (mode == B_CREATE || mode == B_PUT) {
            /* Key fields not in the field values (and the server's id when
             * it assigned one). */
            ka = json_loads(op->key, 0, NULL);
            for (size_t i = 0; i < op->t->nkey && json_is_array(ka); i++) {
                const char *kn = op->t->key[i];
                const char *an = op->t == &op->m->b ? rf_a_name(op->m, kn) : kn;
                json_t *kv = json_array_get(ka, i);
                if (op->has_xref)
                    kv = NULL;
                else if (an != NULL && json_object_get(src, an) != NULL)
                    continue;
                if (kv == NULL) {
                    json_t *ida = json_string(op->id);
                    rc = add_field(op, b, &first, kn, ida, an, why);
                    json_decref(ida);
                } else {
                    rc = add_field(op, b, &first, kn, kv, an, why);
                }
                if (rc != 0)
                    break;
            }
            json_decref(ka);
            if (rc != 0)
                return rc;
        }
    }
    if (mode != B_CREATE && w->revision_field != NULL && w->revision_in == CFG_REV_BODY) {
        const char *r = revision(op, rb, sizeof(rb));
        if (r != NULL) {
            if (!first)
                strbuf_addc(b, ',');
            strbuf_add_json_string(b, w->revision_field, strlen(w->revision_field));
            strbuf_addc(b, ':');
            strbuf_add_json_string(b, r, strlen(r));
        }
    }
    strbuf_addc(b, '}');
    return b->failed ? -ENOMEM : 0;
}

/* ---- outcomes ---- */

/* The change as a DLQ entry keeps it: everything a retry needs to journal
 * it again (the shape the daemon's DLQ retry reads). */
static char *change_json(const struct op *op)
{
    char kind[2] = { op->kind, '\0' };
    json_t *key = json_loads(op->key, 0, NULL);
    json_t *o = json_pack("{s:s,s:o*,s:O*,s:I,s:s,s:I}", "op", kind, "key", key,
                          "fields", op->fields, "version_us", (json_int_t)op->version_us,
                          "source", op->source, "seq", (json_int_t)op->seq);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return t;
}

/* Permanent failure or retries exhausted: DLQ, and the key is parked. */
static void dead_letter(struct op *op, const char *why, bool exhausted)
{
    struct restsink *s = op->s;
    struct dlq_entry d = { 0 };
    struct parked_key pk = { 0 };
    char *ch = change_json(op), seq[24];
    struct err e = { 0 };
    int rc;

    d.mapping = op->mapping;
    d.key = op->key;
    d.source = op->source;
    d.target = s->ep->name;
    d.change_seq = op->seq;
    d.commit_seq = op->commit_seq;
    d.change = ch ? ch : op->fields_text;
    d.error = why;
    d.attempts = op->attempts + 1;
    rc = state_begin(s->st, &e);
    if (rc == 0)
        rc = dlq_add(s->st, &d, &e);
    pk.mapping = op->mapping;
    pk.key = op->key;
    pk.reason = "dlq";
    pk.target = s->ep->name;
    pk.dlq_id = d.id;
    pk.detail = why;
    if (rc == 0 && op->kind != CHANGE_TRUNCATE)
        rc = parked_park_ex(s->st, &pk, &e);
    snprintf(seq, sizeof(seq), "%" PRId64, op->seq);
    if (rc != 0)
        log_error("restsink", "cannot record a failed change in the DLQ", "endpoint",
                  s->ep->name, "mapping", op->mapping, "key", op->key, "seq", seq,
                  "err", e.msg);
    else
        log_error("restsink", exhausted ? "change failed past the retry policy: sent to"
                  " the DLQ, its key parked" : "change rejected: sent to the DLQ, its"
                  " key parked", "endpoint", s->ep->name, "mapping", op->mapping,
                  "key", op->key, "seq", seq, "err", why);
    if (exhausted)
        s->stats.exhausted++;
    else
        s->stats.rejected++;
    free(ch);
    op_done(op);
}

struct park_find {
    const char *key;
    char reason[32];
    int64_t dlq_id, since_us;
    char *detail;           /* owned */
    bool found;
};

static int find_parked(const struct parked_key *p, void *arg)
{
    struct park_find *f = arg;

    if (strcmp(p->key, f->key) != 0)
        return 0;
    snprintf(f->reason, sizeof(f->reason), "%s", p->reason ? p->reason : "");
    f->dlq_id = p->dlq_id;
    f->since_us = p->since_us;
    f->detail = p->detail ? strdup(p->detail) : NULL;
    f->found = true;
    return 1;
}

/* A permanent refusal. When a declared parent of the record is not agreed
 * on both sides yet, the API most likely refused a reference to a record
 * it does not have (a foreign key it enforces): the change waits, its key
 * parked as waiting_for_parent, and is tried again once the parents are
 * there, until the mapping's dependency_wait_s; then the DLQ, naming them. */
static void reject(struct op *op, const char *why)
{
    struct restsink *s = op->s;
    json_t *parents = missing_parents(op);
    struct park_find pf = { .key = op->key };
    char *detail = parents ? json_dumps(parents, JSON_COMPACT) : NULL, msg[900];
    struct parked_key pk = { op->mapping, op->key, "waiting_for_parent", 0, s->ep->name, 0,
                             detail };

    if (detail == NULL) {
        json_decref(parents);
        dead_letter(op, why, false);
        return;
    }
    if (parked_list(s->st, op->mapping, find_parked, &pf, NULL) >= 0 && pf.found &&
        !strcmp(pf.reason, "retrying_parent") &&
        now_us() - pf.since_us > (int64_t)op->m->dependency_wait_s * 1000000) {
        snprintf(msg, sizeof(msg), "the parent never arrived within dependency_wait_s"
                 " (%d s): missing %.300s: %.400s", op->m->dependency_wait_s, detail, why);
        dead_letter(op, msg, false);
    } else if (state_begin(s->st, NULL) == 0 && parked_park_ex(s->st, &pk, NULL) == 0) {
        log_info("restsink", "the peer refused a change whose parent it does not have"
                 " yet: it waits for the parent", "endpoint", s->ep->name, "mapping",
                 op->mapping, "key", op->key, "parents", detail, "err", why);
        s->waiting_any = true;
        hold(op);
    } else {
        dead_letter(op, why, false);
    }
    free(pf.detail);
    free(detail);
    json_decref(parents);
}

static void retry_later(struct op *op, const struct rest_resp *r, enum rest_class cls)
{
    struct restsink *s = op->s;
    const struct cfg_retry *rp = &s->cfg->retry;
    int64_t now = now_us();
    uint64_t delay;
    char why[600], d[24];

    op->attempts++;
    if (op->first_fail_us == 0)
        op->first_fail_us = now;
    if (op->attempts >= rp->max_attempts ||
        now - op->first_fail_us >= (int64_t)rp->max_retry_s * 1000000) {
        snprintf(why, sizeof(why), "gave up after %d attempts: %s", op->attempts,
                 r->error);
        dead_letter(op, why, true);
        return;
    }
    if (cls == REST_RATE_LIMITED && r->retry_after_ms >= 0) {
        delay = (uint64_t)r->retry_after_ms;
    } else {
        uint64_t cap = (uint64_t)rp->backoff_max_ms;
        delay = (uint64_t)BACKOFF_BASE_MS << (op->attempts > 16 ? 16 : op->attempts - 1);
        if (delay > cap)
            delay = cap;
        delay = backoff_jitter(delay);
    }
    /* A create without an answer (or with a 5xx) may have happened: the
     * next attempt looks the record up by its key first (404 → create,
     * found → compare), and the POST itself repeats its Idempotency-Key. */
    if (op->phase == PH_CREATE && cls == REST_TRANSIENT)
        op->phase = PH_GET;
    s->stats.retries++;
    snprintf(d, sizeof(d), "%" PRIu64, delay);
    log_warn("restsink", "write failed; retrying", "endpoint", s->ep->name,
             "mapping", op->mapping, "key", op->key, "err", r->error, "retry_in_ms", d);
    op->state = OP_WAITING;
    op->next_try_ms = uv_now(s->loop) + delay;
}

/* Maps a record the server returned; NULL (why set) when it is no record. */
static int read_record(struct op *op, const struct rest_resp *r, struct rf_record *rec,
                       const char **why)
{
    json_t *doc = rf_json_load(r->body, r->body_len, NULL);
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (!json_is_object(doc)) {
        json_decref(doc);
        *why = "the server's answer is not a JSON object";
        return -EPROTO;
    }
    rc = rf_map_record(op->m, op->t, doc, NULL, rec);
    json_decref(doc);
    if (rc != 0) {
        *why = "out of memory";
        return rc;
    }
    if (rec->error != NULL && rec->fields == NULL) {
        *why = rec->error;
        return -EPROTO;
    }
    /* Compare in the change's terms: a key the server assigned stands for
     * the postgres side's key (the change's, in that side's key order). */
    if (op->has_xref) {
        const struct cfg_side *pg = op->t == &op->m->b ? &op->m->a : &op->m->b;
        json_t *ka = json_loads(op->key, 0, NULL), *kv;

        for (size_t i = 0; i < pg->nkey && json_is_array(ka); i++) {
            const char *an = pg == &op->m->a ? pg->key[i] : rf_a_name(op->m, pg->key[i]);
            if (an != NULL && (kv = json_array_get(ka, i)) != NULL)
                json_object_set(rec->fields, an, kv);
        }
        json_decref(ka);
    }
    kinds_learn(op->s, op, rec);
    return 0;
}

static void save_shadow(struct op *op, int64_t target_version)
{
    struct restsink *s = op->s;
    struct shadow cur = { 0 }, sh = { 0 };
    bool from_a = op->t == &op->m->b;
    int rc;

    /* Someone else (the other direction) moved the shadow meanwhile:
     * theirs stands. */
    rc = shadow_get(s->st, op->mapping, op->key, &cur, NULL);
    if ((rc == 0) != op->had_old ||
        (rc == 0 && (strcmp(cur.hash, op->old.hash) != 0 ||
                     cur.tombstone != op->old.tombstone))) {
        shadow_clear(&cur);
        return;
    }
    /* The agreement: what was written, unless the source must still get
     * the result (then what the source has, so the result flows back). */
    if (op->write != NULL && !op->write_source) {
        sh.fields = json_dumps(op->write, JSON_COMPACT);
        canon_hash(op->write, sh.hash);
        sh.tombstone = op->write_delete;
    } else {
        sh.fields = json_dumps(op->merged, JSON_COMPACT);
        memcpy(sh.hash, op->hash, sizeof(op->hash));
        sh.tombstone = op->kind == CHANGE_DELETE;
    }
    sh.version_a_us = op->had_old ? op->old.version_a_us : 0;
    sh.version_b_us = op->had_old ? op->old.version_b_us : 0;
    if (from_a) {
        sh.version_a_us = op->version_us;
        if (target_version)
            sh.version_b_us = target_version;
    } else {
        sh.version_b_us = op->version_us;
        if (target_version)
            sh.version_a_us = target_version;
    }
    if (sh.fields == NULL || state_begin(s->st, NULL) != 0 ||
        shadow_put(s->st, op->mapping, op->key, &sh, NULL) != 0)
        log_error("restsink", "cannot save the shadow after a write", "endpoint",
                  s->ep->name, "mapping", op->mapping, "key", op->key);
    free(sh.fields);
    shadow_clear(&cur);
}

/* A change that waited for its parent landed: its key is free. */
static void release_retried(struct restsink *s, const struct op *op)
{
    char reason[32] = "";
    bool parked = false;

    if (parked_lookup(s->st, op->mapping, op->key, &parked, NULL, reason, sizeof(reason),
                      NULL) == 0 && parked && !strcmp(reason, "retrying_parent") &&
        state_begin(s->st, NULL) == 0)
        parked_unpark(s->st, op->mapping, op->key, NULL);
}

static void succeed(struct op *op, int64_t target_version)
{
    struct restsink *s = op->s;
    bool del = op->write ? op->write_delete : op->kind == CHANGE_DELETE;

    save_shadow(op, target_version);
    s->stats.applied++;
    if (s->waiting_any)
        release_retried(s, op);
    /* Arrival of a canary (SPEC §4 canary): its delete is only cleanup. */
    if (op->m->canary_enabled && !del && s->hooks.on_canary_candidate)
        s->hooks.on_canary_candidate(s->hooks.arg, s, op->mapping, op->key);
    op_done(op);
}

/* A create answered: the server's key for ours goes to the cross-reference
 * right away (G3), so no later attempt creates it again. */
static void on_created(struct op *op, const struct rest_resp *r)
{
    struct restsink *s = op->s;
    struct rf_record rec = { 0 };
    const char *why = NULL;
    char kb[KEY_MAX];
    const char *key_srv = NULL;
    struct err e = { 0 };
    int64_t ver = 0;

    if (r->body_len > 0 && read_record(op, r, &rec, &why) == 0) {
        key_srv = rec.key;
        ver = rec.version_us;
    }
    if (key_srv == NULL && r->location != NULL && op->t->nkey == 1) {
        const char *slash = strrchr(r->location, '/');
        struct strbuf b;
        strbuf_init(&b);
        strbuf_addc(&b, '[');
        strbuf_add_json_string(&b, slash ? slash + 1 : r->location,
                               strlen(slash ? slash + 1 : r->location));
        strbuf_addc(&b, ']');
        if (!b.failed && b.len < sizeof(kb)) {
            memcpy(kb, b.buf, b.len + 1);
            key_srv = kb;
        }
        strbuf_free(&b);
    }
    if (key_srv != NULL && state_begin(s->st, &e) == 0) {
        bool rest_b = op->t == &op->m->b;
        int rc = 0;
        /* Side a's key first. A pairing made stale by a create under the
         * change's own key goes (side a: by pairing the key with itself). */
        if (strcmp(key_srv, op->key) != 0 || (op->has_xref && !rest_b))
            rc = rest_b ? xref_put(s->st, op->mapping, op->key, key_srv, &e)
                        : xref_put(s->st, op->mapping, key_srv, op->key, &e);
        else if (op->has_xref)
            rc = xref_delete(s->st, op->mapping, op->key, &e);
        if (rc != 0 && rc != -ENOENT)
            log_error("restsink", "cannot save the key cross-reference of a create",
                      "endpoint", s->ep->name, "mapping", op->mapping, "key", op->key,
                      "err", e.msg);
    }
    rf_record_clear(&rec);
    succeed(op, ver);
}

static void record_conflict(struct op *op, const struct rf_record *rec,
                            const struct resolve_result *res)
{
    struct restsink *s = op->s;
    char *cur = rec ? json_dumps(rec->fields, JSON_COMPACT) : NULL;
    char *base = op->base ? json_dumps(op->base, JSON_COMPACT) : NULL;
    const char *incoming = op->kind == CHANGE_DELETE ? NULL : op->fields_text;
    bool target_b = op->t == &op->m->b;
    int64_t tv = rec ? rec->version_us : 0;
    struct resolve_log l = { op->m, op->key, base, target_b ? incoming : cur,
                             target_b ? cur : incoming, target_b ? op->version_us : tv,
                             target_b ? tv : op->version_us };

    if (resolve_log_conflict(s->st, &l, res, NULL) != 0)
        log_error("restsink", "cannot record a conflict", "endpoint", s->ep->name,
                  "mapping", op->mapping, "key", op->key);
    log_warn("restsink", res->outcome == RESOLVE_PARK ? "conflict parked until an operator"
             " decides" : "conflict decided", "endpoint", s->ep->name, "mapping", op->mapping,
             "key", op->key, "strategy", config_strategy_name(op->m->strategy), "rule",
             res->detail[0] ? res->detail : res->rule);
    s->stats.conflicts++;
    free(cur);
    free(base);
}

static void go(struct op *op, enum phase ph)
{
    op->phase = ph;
    send_op(op);
}

static void create(struct op *op)
{
    free(op->etag);
    free(op->rev);
    op->etag = op->rev = NULL;
    /* POST when tandem may not know the id, PUT to the id otherwise (also
     * when the server refused a POST for an id it keeps deleted). */
    if (op->t->write.create == CFG_HTTP_PUT || op->post_refused)
        go(op, PH_PUT_CREATE);
    else
        go(op, PH_CREATE);
}

/* True when a later change of op's key waits in the window, or an
 * operator's decision for it is journaled after op (it may not be durable
 * yet, so not in the window, when the released key is replayed). */
static bool superseded(const struct op *op)
{
    const struct restsink *s = op->s;
    bool later = false;

    for (size_t i = 0; i < s->wlen; i++) {
        const struct op *o = s->win[(s->whead + i) % WINDOW_MAX];

        if (!o->marker && o->seq > op->seq && o->keyhash == op->keyhash &&
            o->state != OP_DONE && strcmp(o->mapping, op->mapping) == 0 &&
            strcmp(o->key, op->key) == 0)
            return true;
    }
    return journal_decided_later(s->st, s->ep->name, op->mapping, op->key, op->seq,
                                 &later, NULL) == 0 && later;
}

/* Both sides moved since the shadow (G7): the mapping's strategy decides.
 * rec is the target's record, NULL when it is gone. The source side is
 * never written here: when the result differs from it, the result goes to
 * the target and comes back through the feed. */
static int64_t gone_version(struct op *op, bool target_b)
{
    struct shadow now = { 0 };
    char side = target_b ? 'b' : 'a';
    int64_t v = op->target_version_us;

    if (v < shadow_side_version(&op->old, side))
        v = shadow_side_version(&op->old, side);
    if (shadow_get(op->s->st, op->mapping, op->key, &now, NULL) == 0) {
        if (v < shadow_side_version(&now, side))
            v = shadow_side_version(&now, side);
        shadow_clear(&now);
    }
    return v;
}

static void resolve_conflict(struct op *op, const struct rf_record *rec)
{
    struct restsink *s = op->s;
    bool target_b = op->t == &op->m->b, write_target;
    struct resolve_base base = { op->base, op->old.version_a_us, op->old.version_b_us,
                                 op->had_old && op->old.tombstone };
    struct resolve_side in = { op->fields, op->kind == CHANGE_DELETE, op->version_us,
                               op->version_us };
    /* A record that is gone: its delete's version when a soft-deleted
     * record showed one, else at least the last version known of that
     * side (the delete came after it), not 0, which lost to every write;
     * the shadow is read again, as the delete may have come through the
     * feed and been applied since this write started. */
    int64_t gone_us = rec == NULL ? gone_version(op, target_b) : 0;
    int64_t tv = rec ? rec->version_us : gone_us;
    struct resolve_side tg = { rec ? rec->fields : NULL, rec == NULL, tv, tv };
    const struct resolver_plugin *pl = NULL;
    struct resolve_result res = { 0 };
    struct err e = { 0 };
    char why[RESOLVE_DETAIL_MAX + 64];

    if (op->m->strategy == CFG_STRAT_PLUGIN && (pl = resolver_plugin_for(&s->plugins, op->m, &e)) == NULL) {
        snprintf(why, sizeof(why), "conflict resolver plugin: %.400s", e.msg);
        dead_letter(op, why, false);
        return;
    }
    if (resolve(op->m, pl, op->key, op->had_old ? &base : NULL, target_b ? &in : &tg,
                target_b ? &tg : &in, &res) != 0 && res.outcome == RESOLVE_ERROR) {
        snprintf(why, sizeof(why), "conflict resolution failed: %.400s", res.detail);
        resolve_result_clear(&res);
        dead_letter(op, why, false);
        return;
    }
    if (res.outcome == RESOLVE_PARK && superseded(op)) {
        /* A later change of the key is already queued (an operator's
         * decision, replayed after the key was released, or a newer edit
         * that meets the same conflict): it decides, not this one. */
        resolve_result_clear(&res);
        op_done(op);
        return;
    }
    record_conflict(op, rec, &res);
    if (res.outcome == RESOLVE_PARK) {
        struct parked_key pk = { op->mapping, op->key, "conflict", 0, s->ep->name, 0,
                                 "manual conflict: tandem conflicts resolve" };
        if (state_begin(s->st, NULL) != 0 || parked_park_ex(s->st, &pk, NULL) != 0)
            log_error("restsink", "cannot park a key", "endpoint", s->ep->name,
                      "mapping", op->mapping, "key", op->key);
        resolve_result_clear(&res);
        op_done(op);
        return;
    }
    write_target = target_b ? res.write_b : res.write_a;
    if (!write_target) {
        /* The target keeps its record; the feed brings it to the source
         * (the shadow stays as it was, so it is not taken as an echo). */
        resolve_result_clear(&res);
        op_done(op);
        return;
    }
    json_decref(op->write);
    op->write = res.fields ? json_incref(res.fields) : json_object();
    op->write_delete = res.deleted;
    op->write_source = target_b ? res.write_a : res.write_b;
    resolve_result_clear(&res);
    if (rec != NULL)
        go(op, PH_WRITE);
    else if (op->write_delete)
        succeed(op, 0);
    else
        create(op);
}

/* The record is gone (404, or soft-deleted). */
static void on_absent(struct op *op)
{
    bool del = op->write ? op->write_delete : op->kind == CHANGE_DELETE;

    if (del) {
        op->s->stats.delete_missing++;
        succeed(op, 0);
        return;
    }
    /* An agreed record vanished while the source changed it: a delete
     * against an update, for the strategy to decide (once). */
    if (op->base != NULL && op->write == NULL) {
        resolve_conflict(op, NULL);
        return;
    }
    create(op);
}

/* Read-compare-write: the record as it is now decides. */
static void decide(struct op *op, const struct rf_record *rec)
{
    if (op->write == NULL && op->kind != CHANGE_DELETE &&
        rf_fields_equal(rec->fields, rec->kinds, op->merged)) {
        succeed(op, rec->version_us);       /* already there */
        return;
    }
    if (op->write != NULL && !op->write_delete &&
        rf_fields_equal(rec->fields, rec->kinds, op->write)) {
        succeed(op, rec->version_us);
        return;
    }
    if (op->base != NULL && rf_fields_equal(rec->fields, rec->kinds, op->base)) {
        go(op, PH_WRITE);                   /* clean: still the shadow */
        return;
    }
    /* After a lost conditional write the record is read again and the
     * conflict decided anew. */
    json_decref(op->write);
    op->write = NULL;
    op->write_delete = op->write_source = false;
    resolve_conflict(op, rec);
}

static void lost_condition(struct op *op, const struct rest_resp *r)
{
    char why[600];

    if (++op->rounds > CONFLICT_ROUNDS) {
        snprintf(why, sizeof(why), "conditional write kept failing (%d rounds): %s",
                 op->rounds, r->error);
        dead_letter(op, why, false);
        return;
    }
    go(op, PH_GET);
}

static void on_resp(void *arg, struct rest_req *req, const struct rest_resp *r)
{
    struct op *op = arg;
    struct restsink *s = op->s;
    enum rest_class cls = rest_classify(r);
    struct rf_record rec;
    const char *why = NULL;

    (void)req;
    op->req = NULL;
    s->running--;
    ticket_drop(s, op);
    set_connected(s, r->status != 0);
    if (s->closing) {
        /* Keep what the server did (shadow, cross-reference); anything
         * else is redone at the next start. */
        if (cls == REST_OK && op->phase == PH_CREATE)
            on_created(op, r);
        else if (cls == REST_OK && op->phase != PH_GET)
            succeed(op, 0);
        else
            op->state = OP_DONE;
        if (s->running == 0)
            finish_close(s);
        return;
    }
    switch (op->phase) {
    case PH_GET:
        if (cls == REST_OK) {
            if (read_record(op, r, &rec, &why) != 0) {
                rf_record_clear(&rec);
                dead_letter(op, why, false);
                break;
            }
            free(op->etag);
            free(op->rev);
            op->etag = r->etag ? strdup(r->etag) : NULL;
            op->rev = rec.rev ? strdup(rec.rev) : NULL;
            op->target_version_us = rec.version_us;
            if (rec.deleted)
                on_absent(op);
            else
                decide(op, &rec);
            rf_record_clear(&rec);
        } else if (cls == REST_NOT_FOUND) {
            on_absent(op);
        } else if (cls == REST_TRANSIENT || cls == REST_RATE_LIMITED) {
            retry_later(op, r, cls);
        } else {
            dead_letter(op, r->error, false);
        }
        break;
    case PH_WRITE:
        if (cls == REST_OK) {
            int64_t ver = 0;
            if (r->body_len > 0 && read_record(op, r, &rec, &why) == 0)
                ver = rec.version_us;
            if (r->body_len > 0)
                rf_record_clear(&rec);
            succeed(op, ver);
        } else if (cls == REST_NOT_FOUND) {
            on_absent(op);
        } else if (cls == REST_CONFLICT) {
            lost_condition(op, r);
        } else if (cls == REST_TRANSIENT || cls == REST_RATE_LIMITED) {
            retry_later(op, r, cls);
        } else {
            reject(op, r->error);
        }
        break;
    case PH_CREATE:
    case PH_PUT_CREATE:
        if (cls == REST_OK) {
            on_created(op, r);
        } else if (cls == REST_CONFLICT) {
            /* The id is taken: read the record and compare. */
            if (op->phase == PH_CREATE)
                op->post_refused = true;
            lost_condition(op, r);
        } else if (cls == REST_TRANSIENT || cls == REST_RATE_LIMITED) {
            retry_later(op, r, cls);
        } else {
            reject(op, r->error);
        }
        break;
    }
    retire(s);
    feed(s);
}

/* ---- sending ---- */

static void send_failed(struct op *op, const char *why)
{
    struct rest_resp r = { 0 };

    r.error = why;
    r.curl_code = -1;
    r.retry_after_ms = -1;
    retry_later(op, &r, REST_TRANSIENT);
}

static void send_op(struct op *op)
{
    struct restsink *s = op->s;
    const struct cfg_write *w = &op->t->write;
    struct rest_hdr hdr[4];
    size_t nh = 0;
    const char *method = "GET", *body = NULL, *why = NULL;
    char idem[128], ifm[300], rb[256];
    const char *rev = NULL;
    struct err e = { 0 };
    bool del = false;
    int rc = 0;

    strbuf_reset(&s->q);
    switch (op->phase) {
    case PH_GET:
        rc = record_url(op, NULL);
        break;
    case PH_WRITE:
        del = op->write ? op->write_delete : op->kind == CHANGE_DELETE;
        rev = w->revision_field ? revision(op, rb, sizeof(rb)) : NULL;
        if (del && (w->del_soft_field || op->m->deletes == CFG_DEL_SOFT)) {
            method = "PATCH";
            rc = build_body(op, B_SOFT, &why);
        } else if (del) {
            method = "DELETE";
            if (rev != NULL) {
                strbuf_adds(&s->q, w->revision_param ? w->revision_param : "rev");
                strbuf_addc(&s->q, '=');
                rf_url_escape(&s->q, rev, strlen(rev));
            }
        } else if (w->update == CFG_HTTP_PUT) {
            method = "PUT";
            rc = build_body(op, B_PUT, &why);
        } else {
            method = "PATCH";
            rc = build_body(op, B_PATCH, &why);
        }
        if (rc == 0 && !del && rev != NULL && w->revision_in == CFG_REV_QUERY) {
            strbuf_adds(&s->q, w->revision_param ? w->revision_param : "rev");
            strbuf_addc(&s->q, '=');
            rf_url_escape(&s->q, rev, strlen(rev));
        }
        /* The write holds only if the record is still the one compared. */
        if (op->etag != NULL) {
            snprintf(ifm, sizeof(ifm), "%s", op->etag);
            hdr[nh++] = (struct rest_hdr){ "If-Match", ifm };
        } else if (rev != NULL && (w->revision_in == CFG_REV_IF_MATCH || del)) {
            snprintf(ifm, sizeof(ifm), "\"%s\"", rev);
            hdr[nh++] = (struct rest_hdr){ "If-Match", ifm };
        }
        if (rc == 0)
            rc = record_url(op, strbuf_cstr(&s->q));
        break;
    case PH_CREATE:
        method = "POST";
        rc = build_body(op, B_CREATE, &why);
        if (rc == 0)
            rc = rest_http_url(&s->url, s->ep, op->t->resource, NULL);
        break;
    case PH_PUT_CREATE:
        method = "PUT";
        rc = build_body(op, B_CREATE, &why);
        if (rc == 0)
            rc = record_url(op, NULL);
        break;
    }
    if (rc == -ERANGE || (rc != 0 && why != NULL)) {
        dead_letter(op, why ? why : "a value cannot be sent", false);
        return;
    }
    if (rc != 0) {
        send_failed(op, "out of memory building a request");
        return;
    }
    if (op->phase != PH_GET) {
        body = strcmp(method, "DELETE") == 0 ? NULL : strbuf_cstr(&s->body);
        if (op->rounds > 0)
            snprintf(idem, sizeof(idem), "tandem-%s-%" PRId64 "-%d", s->instance,
                     op->seq, op->rounds);
        else
            snprintf(idem, sizeof(idem), "tandem-%s-%" PRId64, s->instance, op->seq);
        hdr[nh++] = (struct rest_hdr){ "Idempotency-Key", idem };
    }
    rc = rest_http_request(s->http, method, strbuf_cstr(&s->url), body, hdr, nh,
                           on_resp, op, &op->req, &e);
    if (rc != 0) {
        send_failed(op, e.msg);
        return;
    }
    op->state = OP_RUNNING;
    s->running++;
    if (op->phase == PH_CREATE)
        ticket_take(s, op);
}

/* ---- starting a change ---- */


/* ---- children waiting for their parent (declared depends_on) ---- */

static bool live_shadow(struct restsink *s, const char *mapping, const char *key)
{
    struct shadow sh = { 0 };
    bool live = shadow_get(s->st, mapping, key, &sh, NULL) == 0 && !sh.tombstone;

    shadow_clear(&sh);
    return live;
}

/* The declared parents of op that are not agreed on both sides yet, as a
 * JSON array of [mapping, key]; NULL when none is missing. */
static json_t *missing_parents(struct op *op)
{
    json_t *out = json_array();

    for (size_t i = 0; out != NULL && i < op->m->ndepends_on; i++) {
        const struct cfg_dependency *d = &op->m->depends_on[i];
        char *key = d->parent ? parent_key(d, op->fields) : NULL;

        if (key != NULL && !live_shadow(op->s, d->parent->name, key))
            json_array_append_new(out, json_pack("[s,s]", d->parent->name, key));
        free(key);
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* A key waiting for its parents is let through again (parked as
 * retrying_parent, so the wait keeps counting from when it began) once
 * they are agreed, or once dependency_wait_s ran out (the retry then
 * dead-letters it). */
static bool parent_wait_over(struct restsink *s, const char *mapping, const char *key,
                             const struct park_find *pf)
{
    const struct cfg_mapping *m = config_mapping(s->cfg, mapping);
    json_t *parents = pf->detail ? json_loads(pf->detail, 0, NULL) : NULL, *p;
    bool over = m == NULL ||
                now_us() - pf->since_us > (int64_t)m->dependency_wait_s * 1000000;
    size_t i;

    if (!over && json_is_array(parents)) {
        over = true;
        json_array_foreach(parents, i, p)
            if (!live_shadow(s, json_string_value(json_array_get(p, 0)),
                             json_string_value(json_array_get(p, 1))))
                over = false;
    }
    json_decref(parents);
    if (over && state_begin(s->st, NULL) == 0)
        parked_park(s->st, mapping, key, "retrying_parent", 0, NULL);
    return over;
}

static int dlq_status_of(const struct dlq_entry *d, void *arg)
{
    *(enum dlq_status *)arg = d->status;
    return 0;
}

/* True while (mapping, key) must wait. A key parked behind a DLQ entry is
 * released once that entry left the queue (an operator retried it, which
 * journals it again, or dropped it); one parked by a manual conflict once
 * the conflict is resolved. Other reasons wait for whoever parked them. */
static bool still_parked(struct restsink *s, const char *mapping, const char *key)
{
    struct park_find pf = { .key = key };
    enum dlq_status st = DLQ_OPEN;
    bool parked = false;
    int rc;

    if (parked_is_parked(s->st, mapping, key, &parked, NULL, NULL) != 0 || !parked)
        return false;
    if (parked_list(s->st, mapping, find_parked, &pf, NULL) < 0 || !pf.found) {
        free(pf.detail);
        return true;
    }
    if (!strcmp(pf.reason, "waiting_for_parent") || !strcmp(pf.reason, "retrying_parent")) {
        bool wait = !strcmp(pf.reason, "waiting_for_parent") &&
                    !parent_wait_over(s, mapping, key, &pf);
        free(pf.detail);
        return wait;
    }
    free(pf.detail);
    if (strcmp(pf.reason, "conflict") == 0) {
        int64_t cid;
        rc = conflict_find_open(s->st, mapping, key, &cid, NULL);
        if (rc != -ENOENT)
            return true;
    } else if (strcmp(pf.reason, "dlq") == 0 && pf.dlq_id > 0) {
        rc = dlq_get(s->st, pf.dlq_id, dlq_status_of, &st, NULL);
        if (rc == 0 && st == DLQ_OPEN)
            return true;
        if (rc != 0 && rc != -ENOENT)
            return true;
    } else {
        return true;
    }
    if (state_begin(s->st, NULL) == 0 && parked_unpark(s->st, mapping, key, NULL) == 0)
        log_info("restsink", "key released: its DLQ entry or conflict was settled",
                 "endpoint", s->ep->name, "mapping", mapping, "key", key);
    return false;
}

static bool is_held(struct restsink *s, const struct op *op)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (strcmp(s->held[i].key, op->key) == 0 &&
            strcmp(s->held[i].mapping, op->mapping) == 0)
            return true;
    return false;
}

static void hold(struct op *op)
{
    struct restsink *s = op->s;
    struct held_key *n;

    s->stats.held++;
    if (s->hold_seq == 0 || op->commit_seq < s->hold_seq)
        s->hold_seq = op->commit_seq;
    if (!is_held(s, op) &&
        (n = realloc(s->held, (s->nheld + 1) * sizeof(*n))) != NULL) {
        s->held = n;
        n[s->nheld].mapping = strdup(op->mapping);
        n[s->nheld].key = strdup(op->key);
        if (n[s->nheld].mapping && n[s->nheld].key)
            s->nheld++;
        else {
            free(n[s->nheld].mapping);
            free(n[s->nheld].key);
        }
        log_info("restsink", "changes of a parked key wait until it is unparked",
                 "endpoint", s->ep->name, "mapping", op->mapping, "key", op->key);
    }
    op_done(op);
}

static void op_done(struct op *op)
{
    op->state = OP_DONE;
    ticket_drop(op->s, op);
}

/* Returns after the change finished at once (skipped, held) or was sent. */
static void start_op(struct op *op)
{
    struct restsink *s = op->s;
    struct err e = { 0 };
    bool from_a = op->t == &op->m->b;
    int rc;

    if (is_held(s, op) || still_parked(s, op->mapping, op->key)) {
        hold(op);
        return;
    }
    if (op->kind == CHANGE_TRUNCATE) {
        dead_letter(op, "a truncate cannot be applied to a rest endpoint (no delete-all);"
                    " delete the records there or drop this entry", false);
        return;
    }
    if (op->kind == CHANGE_DELETE && op->m->deletes == CFG_DEL_IGNORE) {
        op_done(op);
        return;
    }
    rc = shadow_get(s->st, op->mapping, op->key, &op->old, &e);
    if (rc != 0 && rc != -ENOENT) {
        send_failed(op, e.msg);
        return;
    }
    op->had_old = rc == 0;
    if (op->had_old && !op->old.tombstone && op->old.fields != NULL)
        op->base = json_loads(op->old.fields, 0, NULL);
    if (op->had_old) {
        /* G5 and redelivery, as the resolver sees them. */
        struct resolve_base rb = { op->base, op->old.version_a_us, op->old.version_b_us,
                                   op->old.tombstone };
        struct resolve_side in = { op->fields, op->kind == CHANGE_DELETE, op->version_us,
                                   op->version_us };

        switch (resolve_check(&rb, from_a ? 'a' : 'b', &in)) {
        case RESOLVE_FRESH_STALE:
            s->stats.stale++;       /* an older change never wins */
            op_done(op);
            return;
        case RESOLVE_FRESH_DUPLICATE:
            s->stats.unchanged++;   /* applied already (a redo) */
            op_done(op);
            return;
        case RESOLVE_FRESH_ECHO: {
            /* With a before-image the source changed something, and the
             * shadow may only say what the other direction wrote to the
             * source: read the target and compare instead. */
            if (json_is_object(op->before))
                break;
            /* Same state, newer version: only the shadow's version moves. */
            struct shadow sh = op->old;
            if (from_a)
                sh.version_a_us = op->version_us;
            else
                sh.version_b_us = op->version_us;
            if (state_begin(s->st, NULL) == 0)
                shadow_put(s->st, op->mapping, op->key, &sh, NULL);
            s->stats.unchanged++;
            op_done(op);
            return;
        }
        default:
            break;
        }
    }
    if (json_is_object(op->before) && op->base != NULL) {
        /* The state the source changed is a truer base than the shadow,
         * which may already hold what the other direction wrote. */
        json_decref(op->base);
        op->base = json_incref(op->before);
    }
    if (op->kind == CHANGE_DELETE) {
        op->merged = op->base ? json_deep_copy(op->base) : json_deep_copy(op->fields);
    } else {
        const char *k;
        json_t *v;
        op->merged = op->base ? json_deep_copy(op->base) : json_object();
        json_object_foreach(op->fields, k, v)
            json_object_set(op->merged, k, v);
    }
    if (op->merged == NULL) {
        send_failed(op, "out of memory");
        return;
    }
    canon_hash(op->merged, op->hash);
    if ((rc = resolve_id(op, &e)) != 0) {
        dead_letter(op, e.msg, false);
        return;
    }
    /* A record never synced: create it directly (a 409 leads to a read);
     * otherwise read, compare, write. */
    if (op->kind != CHANGE_DELETE && (!op->had_old || op->old.tombstone) &&
        !op->has_xref && op->t->write.create == CFG_HTTP_POST)
        go(op, PH_CREATE);
    else
        go(op, PH_GET);
}

/* ---- scheduling ---- */

static bool keyset_has(const uint64_t *set, uint64_t h)
{
    size_t i = (size_t)h & (KEYSET_CAP - 1);

    while (set[i] != 0) {
        if (set[i] == h)
            return true;
        i = (i + 1) & (KEYSET_CAP - 1);
    }
    return false;
}

static bool keyset_test_add(uint64_t *set, uint64_t h)
{
    size_t i = (size_t)h & (KEYSET_CAP - 1);

    while (set[i] != 0) {
        if (set[i] == h)
            return true;
        i = (i + 1) & (KEYSET_CAP - 1);
    }
    set[i] = h;
    return false;
}

/* Declared dependencies keep source order across keys (a parent's create
 * before its children's, their deletes before the parent's) although
 * changes of different keys run concurrently. Returns true when op must
 * wait for an earlier unfinished change; records op's parents either way
 * (when the set is full, op waits: order over speed). */
static bool waits_for_relative(struct restsink *s, const struct op *op)
{
    bool wait = keyset_has(s->parentset, op->keyhash);

    for (int i = 0; i < op->nparents; i++) {
        if (keyset_has(s->keyset, op->parent_hash[i]))
            wait = true;
        if (s->nparentset >= KEYSET_CAP / 2)
            wait = true;
        else if (!keyset_test_add(s->parentset, op->parent_hash[i]))
            s->nparentset++;
    }
    return wait;
}

static void on_timer(uv_timer_t *t)
{
    feed(t->data);
}

static void dispatch(struct restsink *s)
{
    uint64_t now = uv_now(s->loop), next = UINT64_MAX;
    bool again = true;
    int rounds = 0;

    if (s->closing)
        return;
    while (again && rounds++ < 8) {
        again = false;
        now = uv_now(s->loop);
        memset(s->keyset, 0, sizeof(s->keyset));
        memset(s->parentset, 0, sizeof(s->parentset));
        s->nparentset = 0;
        for (size_t i = 0; i < s->wlen; i++) {
            struct op *op = win_at(s, i);
            bool busy;

            if (op->marker || op->state == OP_DONE)
                continue;
            /* Every unfinished change blocks later ones of its key. */
            busy = keyset_test_add(s->keyset, op->keyhash);
            if (op->nparents > 0 || s->nparentset > 0)
                busy = waits_for_relative(s, op) || busy;
            if (busy || op->state == OP_RUNNING)
                continue;
            if (op->state == OP_WAITING && op->next_try_ms > now) {
                if (op->next_try_ms < next)
                    next = op->next_try_ms;
                continue;
            }
            if (s->running >= s->ep->max_in_flight ||
                (s->rewinding && op->state == OP_PENDING))
                continue;
            if (op->state == OP_PENDING)
                start_op(op);
            else
                send_op(op);
            if (op->state == OP_DONE)
                again = true;
        }
        retire(s);
    }
    if (next != UINT64_MAX && !s->closing)
        uv_timer_start(&s->timer, on_timer, next > now ? next - now : 1, 0);
    if (again && !s->closing)
        uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* ---- reading the journal ---- */

static bool targets(const struct restsink *s, const struct cfg_mapping *m,
                    const char *source, const struct cfg_side **t)
{
    if (strcmp(m->a.endpoint, source) == 0 && m->b.ep == s->ep &&
        m->direction != CFG_DIR_B_TO_A) {
        *t = &m->b;
        return true;
    }
    if (strcmp(m->b.endpoint, source) == 0 && m->a.ep == s->ep &&
        m->direction != CFG_DIR_A_TO_B) {
        *t = &m->a;
        return true;
    }
    return false;
}

struct scan_ctx {
    struct restsink *s;
    int err;
};

/* The canonical key of d's parent record from the child's fields, or NULL
 * when a referencing field is missing or null (no parent). */
static char *parent_key(const struct cfg_dependency *d, const json_t *fields)
{
    json_t *arr = json_array();
    char *text = NULL;

    for (size_t i = 0; arr != NULL && i < d->parent->a.nkey; i++) {
        const char *child = NULL;
        json_t *v;

        for (size_t k = 0; k < d->nfields; k++)
            if (strcmp(d->fields[k].value, d->parent->a.key[i]) == 0)
                child = d->fields[k].name;
        v = child ? json_object_get(fields, child) : NULL;
        if (!json_is_string(v))
            goto out;
        json_array_append(arr, v);
    }
    text = json_dumps(arr, JSON_COMPACT);
out:
    json_decref(arr);
    return text;
}

static void parents_of(struct op *op)
{
    for (size_t i = 0; i < op->m->ndepends_on && op->nparents < MAX_DEPS; i++) {
        const struct cfg_dependency *d = &op->m->depends_on[i];
        char *key = d->parent ? parent_key(d, op->fields) : NULL;

        if (key != NULL)
            op->parent_hash[op->nparents++] = fnv(d->parent->name, key);
        free(key);
    }
}

static int on_change(const struct change *c, void *arg)
{
    struct scan_ctx *x = arg;
    struct restsink *s = x->s;
    const struct cfg_mapping *m = config_mapping(s->cfg, c->mapping);
    const struct cfg_side *t;
    struct op *op;

    s->cur_after = c->seq;
    if (m == NULL || !targets(s, m, c->endpoint, &t))
        return 0;
    op = calloc(1, sizeof(*op));
    if (op == NULL)
        return x->err = -ENOMEM;
    op->s = s;
    op->commit_seq = s->cur_txn_seq;
    op->seq = c->seq;
    op->kind = (char)c->op;
    op->m = m;
    op->t = t;
    op->version_us = c->version_us;
    op->mapping = strdup(c->mapping);
    op->key = strdup(c->key);
    op->source = strdup(c->endpoint);
    op->fields_text = strdup(c->fields ? c->fields : "{}");
    op->fields = json_loads(op->fields_text ? op->fields_text : "{}", 0, NULL);
    if (c->old_fields != NULL && c->op != CHANGE_INSERT)
        op->before = json_loads(c->old_fields, 0, NULL);
    if (op->mapping == NULL || op->key == NULL || op->source == NULL ||
        op->fields_text == NULL || !json_is_object(op->fields)) {
        op_free(op);
        return x->err = -ENOMEM;
    }
    op->keyhash = fnv(op->mapping, op->key);
    parents_of(op);
    if (!win_push(s, op)) {
        op_free(op);
        return x->err = -ENOSPC;
    }
    return 0;
}

struct txn_pick {
    int64_t txn, commit_seq, commit_ts_us;
    bool found;
};

static int pick_txn(const struct journal_txn_info *info, void *arg)
{
    struct txn_pick *p = arg;

    p->txn = info->txn;
    p->commit_seq = info->commit_seq;
    p->commit_ts_us = info->commit_ts_us;
    p->found = true;
    return 1;
}

static void feed(struct restsink *s)
{
    struct scan_ctx x = { s, 0 };
    struct err e = { 0 };
    int n, limit;

    if (s->closing || !s->started)
        return;
    while (!s->rewinding && s->wlen < WINDOW_MAX - 1) {
        if (s->cur_txn == 0) {
            struct txn_pick pk = { 0 };
            if (journal_scan_txns(s->st, s->fed_seq, 1, s->ep->name, pick_txn, &pk, &e) < 0) {
                log_error("restsink", "cannot read the journal", "endpoint", s->ep->name,
                          "err", e.msg);
                uv_timer_start(&s->timer, on_timer, JOURNAL_RETRY_MS, 0);
                return;
            }
            if (!pk.found || pk.commit_seq > s->durable_seq)
                break;
            s->cur_txn = pk.txn;
            s->cur_txn_seq = pk.commit_seq;
            s->cur_txn_ts_us = pk.commit_ts_us;
            s->cur_after = 0;
        }
        limit = (int)(WINDOW_MAX - 1 - s->wlen);
        if (limit > SLICE)
            limit = SLICE;
        n = journal_scan_changes_from(s->st, s->cur_txn, s->cur_after, limit,
                                      on_change, &x, &e);
        if (n < 0 || x.err != 0) {
            log_error("restsink", "cannot read the journal", "endpoint", s->ep->name,
                      "err", x.err ? strerror(-x.err) : e.msg);
            uv_timer_start(&s->timer, on_timer, JOURNAL_RETRY_MS, 0);
            break;
        }
        if (n < limit) {
            struct op *mk = calloc(1, sizeof(*mk));
            if (mk == NULL)
                break;
            mk->s = s;
            mk->marker = true;
            mk->commit_seq = s->cur_txn_seq;
            mk->version_us = s->cur_txn_ts_us;
            win_push(s, mk);
            s->fed_seq = s->cur_txn_seq;
            s->cur_txn = 0;
        }
    }
    dispatch(s);
}

/* ---- parked keys and learned kinds, every second ---- */

static void clear_held(struct restsink *s)
{
    for (size_t i = 0; i < s->nheld; i++) {
        free(s->held[i].mapping);
        free(s->held[i].key);
    }
    free(s->held);
    s->held = NULL;
    s->nheld = 0;
}

/* Once unparked, held changes are read again from the applied position. */
static void try_rewind(struct restsink *s)
{
    for (size_t i = 0; i < s->wlen; i++) {
        struct op *op = win_at(s, i);
        if (!op->marker && (op->state == OP_RUNNING || op->state == OP_WAITING))
            return;
    }
    while (s->wlen > 0) {
        op_free(win_at(s, 0));
        s->whead = (s->whead + 1) % WINDOW_MAX;
        s->wlen--;
    }
    clear_held(s);
    s->hold_seq = 0;
    s->done_seq = s->fed_seq = s->applied_seq;
    s->cur_txn = 0;
    s->rewinding = false;
    log_info("restsink", "a parked key was released: applying its waiting changes",
             "endpoint", s->ep->name);
    feed(s);
}

static void on_tick(uv_timer_t *t)
{
    struct restsink *s = t->data;
    if (s->closing || !s->started)
        return;
    kinds_reload(s);
    if (s->rewinding) {
        try_rewind(s);
        return;
    }
    for (size_t i = 0; i < s->nheld; i++)
        if (!still_parked(s, s->held[i].mapping, s->held[i].key)) {
            s->rewinding = true;
            try_rewind(s);
            return;
        }
}

/* ---- lifecycle ---- */

static void load_instance(struct restsink *s)
{
    FILE *f;
    unsigned char r[8];

    if (state_meta_get(s->st, "rest_instance", s->instance, sizeof(s->instance), NULL) == 0)
        return;
    f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(r, 1, sizeof(r), f) != sizeof(r))
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (unsigned char)rng_next(s);
    if (f)
        fclose(f);
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(s->instance + i * 2, 3, "%02x", r[i]);
    if (state_begin(s->st, NULL) != 0 ||
        state_meta_set(s->st, "rest_instance", s->instance, NULL) != 0)
        log_error("restsink", "cannot save the idempotency key prefix", "endpoint",
                  s->ep->name);
}

int restsink_new(struct restsink **out, uv_loop_t *loop, const struct config *c,
                 const struct cfg_endpoint *ep, struct state *st,
                 struct rest_http *http, const struct restsink_hooks *h,
                 struct err *e)
{
    struct restsink *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->kinds = json_object()) == NULL) {
        free(s);
        return err_set(e, -ENOMEM, "out of memory");
    }
    s->loop = loop;
    s->cfg = c;
    s->ep = ep;
    s->st = st;
    s->http = http;
    rest_http_ref(http);
    s->hooks = *h;
    s->connected = true;
    s->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
    if (s->rng == 0)
        s->rng = 0x9e3779b97f4a7c15ULL;
    strbuf_init(&s->url);
    strbuf_init(&s->body);
    strbuf_init(&s->q);
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->tick);
    uv_timer_init(loop, &s->drain);
    s->timer.data = s->tick.data = s->drain.data = s;
    *out = s;
    return 0;
}

int restsink_start(struct restsink *s)
{
    struct err e = { 0 };
    int rc = state_applied_get(s->st, s->ep->name, &s->applied_seq, &e);

    if (rc != 0 && rc != -ENOENT)
        log_error("restsink", "cannot read applied progress; starting from 0",
                  "endpoint", s->ep->name, "err", e.msg);
    s->done_seq = s->fed_seq = s->applied_seq;
    load_instance(s);
    kinds_reload(s);
    s->started = true;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    log_info("restsink", "ready to apply", "endpoint", s->ep->name);
    feed(s);
    return 0;
}

void restsink_kick(struct restsink *s, int64_t durable_seq)
{
    if (durable_seq > s->durable_seq)
        s->durable_seq = durable_seq;
    feed(s);
}

int64_t restsink_applied(const struct restsink *s)
{
    return s->applied_seq;
}

bool restsink_connected(const struct restsink *s)
{
    return s->connected;
}

bool restsink_idle(const struct restsink *s)
{
    for (size_t i = 0; i < s->wlen; i++) {
        struct op *op = s->win[(s->whead + i) % WINDOW_MAX];
        if (!op->marker && op->state != OP_DONE)
            return false;
    }
    return true;
}

const struct restsink_stats *restsink_stats(const struct restsink *s)
{
    return &s->stats;
}

const struct cfg_endpoint *restsink_endpoint(const struct restsink *s)
{
    return s->ep;
}

static void on_closed(uv_handle_t *h)
{
    struct restsink *s = h->data;

    if (--s->pending_closes > 0)
        return;
    if (s->closed)
        s->closed(s->closed_arg);
    while (s->wlen > 0) {
        op_free(win_at(s, 0));
        s->whead = (s->whead + 1) % WINDOW_MAX;
        s->wlen--;
    }
    clear_held(s);
    resolver_plugin_cache_free(s->plugins);
    free(s->tickets);
    json_decref(s->kinds);
    strbuf_free(&s->url);
    strbuf_free(&s->body);
    strbuf_free(&s->q);
    free(s);
}

static void finish_close(struct restsink *s)
{
    if (s->closed_handles)
        return;
    s->closed_handles = true;
    for (size_t i = 0; i < s->wlen; i++) {
        struct op *op = win_at(s, i);
        if (op->req != NULL) {
            rest_http_cancel(s->http, op->req);
            op->req = NULL;
        }
    }
    s->running = 0;
    rest_http_unref(s->http);
    s->http = NULL;
    s->pending_closes = 3;
    uv_close((uv_handle_t *)&s->timer, on_closed);
    uv_close((uv_handle_t *)&s->tick, on_closed);
    uv_close((uv_handle_t *)&s->drain, on_closed);
}

static void on_drain(uv_timer_t *t)
{
    struct restsink *s = t->data;

    if (s->running > 0)
        log_warn("restsink", "stopping with writes still running; they are applied"
                 " again at the next start", "endpoint", s->ep->name);
    finish_close(s);
}

void restsink_close(struct restsink *s, void (*done)(void *arg), void *arg)
{
    s->closing = true;
    s->closed = done;
    s->closed_arg = arg;
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->tick);
    if (s->running == 0)
        finish_close(s);
    else
        uv_timer_start(&s->drain, on_drain, DRAIN_MS, 0);
}
