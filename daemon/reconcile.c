/* reconcile.c: the compare engine (reconcile.h): bucket summaries, the
 * merge of two key-ordered record streams, classification, the re-check
 * of differences while a daemon applies the journal, and the report. */
#include "reconcile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "../resolver/canon.h"
#include "../resolver/resolver.h"
#include "../state/journal.h"
#include "../state/shadow.h"
#include "../state/state.h"
#include "reconcile_rest.h"

#define RECHECK_ROUNDS 3
#define SETTLE_MS 1500          /* bound on waiting for capture to pass the
                                 * sources' WAL position */
#define POLL_MS 100

static const char *const class_names[REC_NCLASS] = {
    "same", "only_a", "only_b", "different", "stale"
};

const char *rec_class_name(enum rec_class c)
{
    return (unsigned)c < REC_NCLASS ? class_names[c] : "unknown";
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* ---- pure parts ---- */

int rec_key_cmp(const struct rec_record *a, const struct rec_record *b)
{
    size_t n = a->nkey < b->nkey ? a->nkey : b->nkey;

    for (size_t i = 0; i < n; i++) {
        int c = strcmp(a->keyv[i], b->keyv[i]);
        if (c != 0)
            return c;
    }
    return a->nkey < b->nkey ? -1 : a->nkey > b->nkey;
}

/* A field's text: NULL for null; strings as they are; other JSON as
 * compact JSON (*tmp owns it). */
static const char *value_text(const json_t *v, char **tmp)
{
    *tmp = NULL;
    if (v == NULL || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return json_string_value(v);
    *tmp = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return *tmp ? *tmp : "";
}

static int bool_text(const char *s)
{
    if (strcmp(s, "t") == 0 || strcmp(s, "true") == 0)
        return 1;
    if (strcmp(s, "f") == 0 || strcmp(s, "false") == 0)
        return 0;
    return -1;
}

/* Across kinds of endpoint the same value prints differently: a boolean
 * is "t" in PostgreSQL and true in JSON, a time "2024-01-02 03:04:05+00"
 * and "2024-01-02T03:04:05Z". */
static bool loose_equal(const char *a, const char *b)
{
    int64_t ta, tb;

    if (a == NULL || b == NULL)
        return false;
    if (bool_text(a) >= 0 && bool_text(a) == bool_text(b))
        return true;
    return resolve_parse_timestamp(a, &ta) == 0 && resolve_parse_timestamp(b, &tb) == 0 &&
           ta == tb;
}

static bool field_equal(const json_t *x, const json_t *y, bool loose)
{
    char *tx, *ty;
    const char *a, *b;
    bool eq;

    if (x == NULL || y == NULL)
        return x == y;
    a = value_text(x, &tx);
    b = value_text(y, &ty);
    eq = resolve_values_equal(a, b) || (loose && loose_equal(a, b));
    free(tx);
    free(ty);
    return eq;
}

static bool fields_equal(const json_t *a, const json_t *b, json_t *diff, bool loose)
{
    char ha[CANON_HASH_HEX + 1], hb[CANON_HASH_HEX + 1];
    const char *k;
    json_t *v;
    bool eq = true;

    canon_hash(a, ha);
    canon_hash(b, hb);
    if (strcmp(ha, hb) == 0)
        return true;
    json_object_foreach((json_t *)a, k, v) {
        if (!field_equal(v, json_object_get(b, k), loose)) {
            eq = false;
            if (diff != NULL)
                json_array_append_new(diff, json_string(k));
        }
    }
    json_object_foreach((json_t *)b, k, v) {
        if (json_object_get(a, k) == NULL) {
            eq = false;
            if (diff != NULL)
                json_array_append_new(diff, json_string(k));
        }
    }
    return eq;
}

bool rec_fields_equal(const json_t *a, const json_t *b, json_t *diff)
{
    return fields_equal(a, b, diff, false);
}

static bool has_rest_side(const struct cfg_mapping *m)
{
    return (m->a.ep != NULL && m->a.ep->kind == CFG_KIND_REST) ||
           (m->b.ep != NULL && m->b.ep->kind == CFG_KIND_REST);
}

bool rec_fields_same(const struct cfg_mapping *m, const json_t *a, const json_t *b,
                     json_t *diff)
{
    return fields_equal(a, b, diff, has_rest_side(m));
}

static int64_t record_version(const struct cfg_mapping *m,
                              const struct rec_record *r)
{
    struct resolve_side s = { r->fields, false, r->version_us, r->version_us };

    return resolve_version(m, &s);
}

enum rec_class rec_classify(const struct cfg_mapping *m,
                            const struct rec_record *a,
                            const struct rec_record *b,
                            const struct resolve_base *base, json_t *diff,
                            char *stale_side)
{
    enum rec_class cls;

    *stale_side = 0;
    if (a == NULL && b == NULL)
        return REC_SAME;
    if (a != NULL && b != NULL) {
        if (rec_fields_same(m, a->fields, b->fields, diff))
            return REC_SAME;
        cls = REC_DIFFERENT;
    } else {
        cls = a != NULL ? REC_ONLY_A : REC_ONLY_B;
    }
    if (base != NULL) {
        /* G5: a record older than the version both sides agreed on. */
        int64_t va = a ? record_version(m, a) : 0, vb = b ? record_version(m, b) : 0;

        if (va > 0 && base->version_a_us > 0 && va < base->version_a_us)
            *stale_side = 'a';
        else if (vb > 0 && base->version_b_us > 0 && vb < base->version_b_us)
            *stale_side = 'b';
        if (*stale_side)
            cls = REC_STALE;
    }
    return cls;
}

int rec_bucket_count(int64_t est_rows)
{
    int64_t n;

    if (est_rows < 0)
        return 1024;
    n = est_rows / 128;
    return n < 16 ? 16 : n > 65536 ? 65536 : (int)n;
}

size_t rec_buckets_diff(const struct rec_bucket *a, const struct rec_bucket *b,
                        int n, int *out)
{
    size_t k = 0;

    for (int i = 0; i < n; i++)
        if (a[i].count != b[i].count || strcmp(a[i].hash, b[i].hash) != 0)
            out[k++] = i;
    return k;
}

/* A copy of a record's key texts, for the order check. */
struct keysave {
    char *v[REC_KEY_MAX];
    size_t n;
    bool set;
};

static void keysave_clear(struct keysave *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    k->n = 0;
    k->set = false;
}

static int keysave_put(struct keysave *k, const struct rec_record *r)
{
    keysave_clear(k);
    for (size_t i = 0; i < r->nkey && i < REC_KEY_MAX; i++) {
        if ((k->v[i] = strdup(r->keyv[i])) == NULL) {
            k->n = i;
            return -ENOMEM;
        }
    }
    k->n = r->nkey;
    k->set = true;
    return 0;
}

/* Next record of s; checks it sorts after the previous one. */
static int advance(struct rec_stream *s, char side, struct rec_record *r,
                   struct keysave *prev, struct err *e)
{
    struct rec_record p = { 0 };
    int rc;

    if (prev->set && keysave_put(prev, r) != 0)
        return err_set(e, -ENOMEM, "out of memory");
    rc = s->ops->next(s->impl, r, e);
    if (rc <= 0)
        return rc;
    if (prev->set) {
        p.nkey = prev->n;
        for (size_t i = 0; i < prev->n; i++)
            p.keyv[i] = prev->v[i];
        if (rec_key_cmp(&p, r) >= 0)
            return err_set(e, -EPROTO, "side %c: key %s %s", side, r->key,
                           rec_key_cmp(&p, r) == 0
                               ? "appears twice: the mapping's key must be unique"
                               : "out of order");
    }
    prev->set = true;
    return 1;
}

int rec_merge(struct rec_stream *a, struct rec_stream *b, rec_pair_fn fn,
              void *arg, struct err *e)
{
    struct rec_record ra = { 0 }, rb = { 0 };
    struct keysave pa = { .set = false }, pb = { .set = false };
    int ha, hb, rc = 0;

    ha = advance(a, 'a', &ra, &pa, e);
    hb = ha < 0 ? 0 : advance(b, 'b', &rb, &pb, e);
    if (ha < 0 || hb < 0) {
        rc = ha < 0 ? ha : hb;
        goto out;
    }
    while (ha > 0 || hb > 0) {
        int c = ha <= 0 ? 1 : hb <= 0 ? -1 : rec_key_cmp(&ra, &rb);

        rc = fn(c <= 0 ? &ra : NULL, c >= 0 ? &rb : NULL, arg);
        if (rc != 0)
            goto out;
        if (c <= 0 && (ha = advance(a, 'a', &ra, &pa, e)) < 0) {
            rc = ha;
            goto out;
        }
        if (c >= 0 && (hb = advance(b, 'b', &rb, &pb, e)) < 0) {
            rc = hb;
            goto out;
        }
    }
out:
    keysave_clear(&pa);
    keysave_clear(&pb);
    return rc;
}

/* ---- reports ---- */

bool reconcile_report_drift(const struct reconcile_report *r)
{
    for (int c = REC_ONLY_A; c < REC_NCLASS; c++)
        if (r->classes[c] > 0)
            return true;
    return false;
}

static void diff_clear(struct reconcile_diff *d)
{
    free(d->key);
    free(d->a);
    free(d->b);
    free(d->fields);
    memset(d, 0, sizeof(*d));
}

static void diffs_free(struct reconcile_diff *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        diff_clear(&d[i]);
    free(d);
}

void reconcile_report_clear(struct reconcile_report *r)
{
    if (r == NULL)
        return;
    free(r->mapping);
    diffs_free(r->diffs, r->ndiffs);
    memset(r, 0, sizeof(*r));
}

static json_t *load_or_null(const char *s)
{
    json_t *j = s ? json_loads(s, 0, NULL) : NULL;

    return j ? j : json_null();
}

/* Only the fields named in names (all when names is not an array). */
static json_t *pick(const char *rec, const json_t *names)
{
    json_t *all = load_or_null(rec), *out;
    size_t i;
    json_t *n;

    if (!json_is_object(all) || !json_is_array(names) || json_array_size(names) == 0)
        return all;
    out = json_object();
    json_array_foreach(names, i, n) {
        json_t *v = json_object_get(all, json_string_value(n));
        if (v != NULL)
            json_object_set(out, json_string_value(n), v);
    }
    json_decref(all);
    return out;
}

static json_t *lag_json(int64_t newest, int64_t shadow)
{
    if (newest <= 0 || shadow <= 0)
        return json_null();
    return json_real((double)(newest - shadow) / 1e6);
}

static json_t *side_json(const struct cfg_side *sd, int64_t count, int64_t newest,
                         int64_t shadow)
{
    return json_pack("{s:s,s:s,s:I,s:o,s:o}", "endpoint", sd->endpoint,
                     "collection", sd->table ? sd->table : (sd->resource ? sd->resource : ""),
                     "count", (json_int_t)count,
                     "newest_us", newest > 0 ? json_integer(newest) : json_null(),
                     "lag_s", lag_json(newest, shadow));
}

json_t *reconcile_report_json(const struct reconcile_report *r,
                              const struct cfg_mapping *m, int limit)
{
    json_t *o = json_object(), *classes = json_object(), *diffs = json_array();
    int64_t total = 0;

    if (o == NULL || classes == NULL || diffs == NULL) {
        json_decref(o);
        json_decref(classes);
        json_decref(diffs);
        return NULL;
    }
    json_object_set_new(o, "mapping", json_string(r->mapping ? r->mapping : ""));
    if (r->rc != 0) {
        json_object_set_new(o, "error", json_string(r->error));
        json_object_set_new(o, "unreachable", json_boolean(r->unreachable));
        json_decref(classes);
        json_decref(diffs);
        return o;
    }
    for (int c = 0; c < REC_NCLASS; c++) {
        json_object_set_new(classes, rec_class_name(c), json_integer(r->classes[c]));
        if (c != REC_SAME)
            total += r->classes[c];
    }
    for (size_t i = 0; i < r->ndiffs && (int64_t)i < limit; i++) {
        const struct reconcile_diff *d = &r->diffs[i];
        json_t *names = d->fields ? json_loads(d->fields, 0, NULL) : json_array();
        json_t *j = json_pack("{s:o,s:s,s:O,s:o,s:o}",
                              "key", load_or_null(d->key),
                              "class", rec_class_name(d->cls),
                              "fields", names ? names : json_null(),
                              "a", pick(d->a, names),
                              "b", pick(d->b, names));
        json_decref(names);
        if (j == NULL)
            continue;
        json_object_set_new(j, "version_a_us", d->version_a_us ? json_integer(d->version_a_us) : json_null());
        json_object_set_new(j, "version_b_us", d->version_b_us ? json_integer(d->version_b_us) : json_null());
        if (d->stale_side) {
            char s[2] = { d->stale_side, '\0' };
            json_object_set_new(j, "stale_side", json_string(s));
        }
        json_array_append_new(diffs, j);
    }
    if (m != NULL) {
        json_object_set_new(o, "a", side_json(&m->a, r->count_a, r->newest_a_us,
                                              r->shadow_newest_us));
        json_object_set_new(o, "b", side_json(&m->b, r->count_b, r->newest_b_us,
                                              r->shadow_newest_us));
    }
    json_object_set_new(o, "classes", classes);
    json_object_set_new(o, "drift", json_boolean(reconcile_report_drift(r)));
    json_object_set_new(o, "differences_total", json_integer(total));
    json_object_set_new(o, "differences", diffs);
    json_object_set_new(o, "method", json_pack("{s:s?,s:i,s:i,s:I,s:I}",
        "bucket_method", r->buckets_used ? REC_BUCKET_METHOD : NULL,
        "buckets", r->nbuckets, "buckets_differing", r->nbuckets_differing,
        "rows_streamed_a", (json_int_t)r->rows_streamed_a,
        "rows_streamed_b", (json_int_t)r->rows_streamed_b));
    json_object_set_new(o, "in_flight", json_pack("{s:b,s:i,s:I,s:I,s:b}",
        "daemon_running", r->daemon_running, "recheck_rounds", r->recheck_rounds,
        "resolved", (json_int_t)r->in_flight,
        "journal_pending", (json_int_t)r->journal_pending,
        "drain_timed_out", r->drain_timed_out));
    json_object_set_new(o, "shadow_newest_us", r->shadow_newest_us > 0
                        ? json_integer(r->shadow_newest_us) : json_null());
    json_object_set_new(o, "elapsed_s", json_real(r->elapsed_s));
    return o;
}

/* ---- one comparison pass ---- */

struct pass {
    const struct cfg_mapping *m;
    struct state *st;           /* read-only; NULL when there is none */
    struct rec_stream *a, *b;
    bool bucketed;              /* scanning bucket subsets: counts come
                                 * from the summaries */
    int64_t classes[REC_NCLASS];
    struct reconcile_diff *diffs;
    size_t ndiffs, cap;
    int64_t not_kept;
    int64_t count_a, count_b, newest_a, newest_b;
    int64_t streamed_a, streamed_b;
    int nbuckets, ndiffering;
    bool buckets_used;
    struct err *e;
};

static void pass_free(struct pass *p)
{
    diffs_free(p->diffs, p->ndiffs);
    p->diffs = NULL;
    p->ndiffs = p->cap = 0;
}

static char *dump(const json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

static bool is_canary(const struct cfg_mapping *m, const struct rec_record *r)
{
    return r != NULL && m->canary_key != NULL && r->nkey > 0 &&
           strcmp(r->keyv[0], m->canary_key) == 0;
}

static int keep_diff(struct pass *p, const struct rec_record *a,
                     const struct rec_record *b, enum rec_class cls,
                     json_t *names, char stale)
{
    struct reconcile_diff *d;

    if (p->ndiffs >= REC_KEEP_MAX) {
        p->not_kept++;
        return 0;
    }
    if (p->ndiffs == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 64;
        struct reconcile_diff *n = realloc(p->diffs, ncap * sizeof(*n));
        if (n == NULL)
            return err_set(p->e, -ENOMEM, "out of memory");
        p->diffs = n;
        p->cap = ncap;
    }
    d = &p->diffs[p->ndiffs];
    memset(d, 0, sizeof(*d));
    d->key = strdup(a ? a->key : b->key);
    d->cls = cls;
    d->bucket = a ? a->bucket : b->bucket;
    d->a = a ? dump(a->fields) : NULL;
    d->b = b ? dump(b->fields) : NULL;
    d->fields = dump(names);
    d->version_a_us = a ? a->version_us : 0;
    d->version_b_us = b ? b->version_us : 0;
    d->stale_side = stale;
    if (d->key == NULL || (a && !d->a) || (b && !d->b) || !d->fields) {
        diff_clear(d);
        return err_set(p->e, -ENOMEM, "out of memory");
    }
    p->ndiffs++;
    return 0;
}

static int on_pair(const struct rec_record *a, const struct rec_record *b,
                   void *arg)
{
    struct pass *p = arg;
    struct shadow sh = { 0 };
    struct resolve_base base = { 0 };
    bool have_base = false;
    json_t *names;
    enum rec_class cls;
    char stale;
    int rc;

    if (is_canary(p->m, a) || is_canary(p->m, b))
        return 0;
    if (a != NULL) {
        p->streamed_a++;
        if (a->version_us > p->newest_a && !p->bucketed)
            p->newest_a = a->version_us;
    }
    if (b != NULL) {
        p->streamed_b++;
        if (b->version_us > p->newest_b && !p->bucketed)
            p->newest_b = b->version_us;
    }
    if (!p->bucketed) {
        p->count_a += a != NULL;
        p->count_b += b != NULL;
    }
    if (a != NULL && b != NULL && rec_fields_equal(a->fields, b->fields, NULL)) {
        p->classes[REC_SAME]++;
        return 0;
    }
    if (p->st != NULL &&
        shadow_get(p->st, p->m->name, a ? a->key : b->key, &sh, NULL) == 0) {
        base.version_a_us = sh.version_a_us;
        base.version_b_us = sh.version_b_us;
        base.tombstone = sh.tombstone;
        have_base = true;
    }
    names = json_array();
    if (names == NULL) {
        shadow_clear(&sh);
        return err_set(p->e, -ENOMEM, "out of memory");
    }
    cls = rec_classify(p->m, a, b, have_base ? &base : NULL, names, &stale);
    shadow_clear(&sh);
    p->classes[cls]++;
    rc = cls == REC_SAME ? 0 : keep_diff(p, a, b, cls, names, stale);
    json_decref(names);
    return rc;
}

struct summary_job {
    struct rec_stream *s;
    int nbuckets;
    struct rec_bucket *out;
    struct err e;
    int rc;
};

static void *summary_thread(void *arg)
{
    struct summary_job *j = arg;

    j->rc = j->s->ops->summarize(j->s->impl, j->nbuckets, j->out, &j->e);
    return NULL;
}

/* Both sides' summaries at once (each has its own connection). */
static int summarize_both(struct pass *p, int nb, struct rec_bucket *ba,
                          struct rec_bucket *bb)
{
    struct summary_job ja = { p->a, nb, ba, { 0 }, 0 }, jb = { p->b, nb, bb, { 0 }, 0 };
    pthread_t t;
    bool threaded = pthread_create(&t, NULL, summary_thread, &jb) == 0;

    summary_thread(&ja);
    if (threaded)
        pthread_join(t, NULL);
    else
        summary_thread(&jb);
    if (ja.rc != 0 || jb.rc != 0) {
        const struct err *bad = ja.rc != 0 ? &ja.e : &jb.e;
        return err_set(p->e, ja.rc != 0 ? ja.rc : jb.rc, "%s", bad->msg);
    }
    return 0;
}

static bool buckets_possible(const struct pass *p)
{
    const struct rec_stream_ops *a = p->a->ops, *b = p->b->ops;

    return a->summarize && b->summarize && a->bucket_method && b->bucket_method &&
           strcmp(a->bucket_method, b->bucket_method) == 0;
}

static int begin_both(struct pass *p)
{
    int rc;

    if ((rc = p->a->ops->begin(p->a->impl, p->e)) != 0)
        return rc;
    return p->b->ops->begin(p->b->impl, p->e);
}

static void end_both(struct pass *p)
{
    if (p->a->ops->end)
        p->a->ops->end(p->a->impl);
    if (p->b->ops->end)
        p->b->ops->end(p->b->impl);
}

static int scan_both(struct pass *p, int nb, const int *list, size_t n)
{
    int rc;

    if ((rc = p->a->ops->scan(p->a->impl, nb, list, n, p->e)) != 0)
        return rc;
    return p->b->ops->scan(p->b->impl, nb, list, n, p->e);
}

static int pass_full_read(struct pass *p);

/* A full pass: summaries, then the rows of the differing buckets (or
 * every row when the streams have no buckets). */
static int pass_full(struct pass *p)
{
    int rc = pass_full_read(p);

    end_both(p);
    return rc;
}

static int pass_full_read(struct pass *p)
{
    struct rec_bucket *ba = NULL, *bb = NULL;
    int64_t ea = -1, eb = -1;
    int *list = NULL, nb, rc;
    size_t n;

    if ((rc = begin_both(p)) != 0)
        return rc;
    if (!buckets_possible(p)) {
        if ((rc = scan_both(p, 0, NULL, 0)) != 0)
            return rc;
        return rec_merge(p->a, p->b, on_pair, p, p->e);
    }
    if (p->a->ops->estimate && (rc = p->a->ops->estimate(p->a->impl, &ea, p->e)) != 0)
        return rc;
    if (p->b->ops->estimate && (rc = p->b->ops->estimate(p->b->impl, &eb, p->e)) != 0)
        return rc;
    nb = rec_bucket_count(ea > eb ? ea : eb);
    ba = calloc((size_t)nb, sizeof(*ba));
    bb = calloc((size_t)nb, sizeof(*bb));
    list = calloc((size_t)nb, sizeof(*list));
    if (ba == NULL || bb == NULL || list == NULL) {
        rc = err_set(p->e, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = summarize_both(p, nb, ba, bb)) != 0)
        goto out;
    n = rec_buckets_diff(ba, bb, nb, list);
    p->bucketed = true;
    p->buckets_used = true;
    p->nbuckets = nb;
    p->ndiffering = (int)n;
    for (int i = 0; i < nb; i++) {
        p->count_a += ba[i].count;
        p->count_b += bb[i].count;
        if (ba[i].newest_us > p->newest_a)
            p->newest_a = ba[i].newest_us;
        if (bb[i].newest_us > p->newest_b)
            p->newest_b = bb[i].newest_us;
    }
    /* Equal buckets hold equal rows. */
    p->classes[REC_SAME] = 0;
    for (int i = 0, k = 0; i < nb; i++) {
        if ((size_t)k < n && list[k] == i) {
            k++;
            continue;
        }
        p->classes[REC_SAME] += ba[i].count;
    }
    if (n > 0) {
        if ((rc = scan_both(p, nb, list, n)) != 0)
            goto out;
        rc = rec_merge(p->a, p->b, on_pair, p, p->e);
    }
out:
    free(ba);
    free(bb);
    free(list);
    return rc;
}

/* Rows of the given buckets only (the re-check of differing keys). */
static int pass_buckets(struct pass *p, int nb, const int *list, size_t n)
{
    int rc;

    p->bucketed = true;
    if ((rc = begin_both(p)) == 0 && (rc = scan_both(p, nb, list, n)) == 0)
        rc = rec_merge(p->a, p->b, on_pair, p, p->e);
    end_both(p);
    return rc;
}

static void pass_to_report(struct pass *p, struct reconcile_report *r)
{
    memcpy(r->classes, p->classes, sizeof(r->classes));
    diffs_free(r->diffs, r->ndiffs);
    r->diffs = p->diffs;
    r->ndiffs = p->ndiffs;
    p->diffs = NULL;
    p->ndiffs = p->cap = 0;
    r->diffs_not_kept = p->not_kept;
    r->count_a = p->count_a;
    r->count_b = p->count_b;
    r->newest_a_us = p->newest_a;
    r->newest_b_us = p->newest_b;
    r->rows_streamed_a += p->streamed_a;
    r->rows_streamed_b += p->streamed_b;
    r->nbuckets = p->nbuckets;
    r->nbuckets_differing = p->ndiffering;
    r->buckets_used = p->buckets_used;
}

/* ---- in-flight: wait for the daemon, then re-check ---- */

static int cmp_diff_key(const void *x, const void *y)
{
    return strcmp(((const struct reconcile_diff *)x)->key,
                  ((const struct reconcile_diff *)y)->key);
}

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;

    return (a > b) - (a < b);
}

/* Keeps the differences of r that the re-check p still found (with their
 * new values); the others were in flight and count as same. */
static int64_t intersect(struct reconcile_report *r, struct pass *p)
{
    size_t kept = 0;
    int64_t gone = 0;

    if (p->ndiffs > 1)      /* qsort(NULL, 0) is undefined behaviour */
        qsort(p->diffs, p->ndiffs, sizeof(*p->diffs), cmp_diff_key);
    for (size_t i = 0; i < r->ndiffs; i++) {
        struct reconcile_diff *d = &r->diffs[i];
        struct reconcile_diff *now = p->ndiffs == 0 ? NULL
            : bsearch(d, p->diffs, p->ndiffs, sizeof(*p->diffs), cmp_diff_key);

        r->classes[d->cls]--;
        if (now == NULL) {
            r->classes[REC_SAME]++;
            gone++;
            diff_clear(d);
            continue;
        }
        /* Take the re-checked values; the key stays in p for bsearch. */
        r->classes[now->cls]++;
        free(d->a);
        free(d->b);
        free(d->fields);
        d->a = now->a;
        d->b = now->b;
        d->fields = now->fields;
        now->a = now->b = now->fields = NULL;
        d->cls = now->cls;
        d->bucket = now->bucket;
        d->version_a_us = now->version_a_us;
        d->version_b_us = now->version_b_us;
        d->stale_side = now->stale_side;
        r->diffs[kept++] = *d;
    }
    r->ndiffs = kept;
    return gone;
}

/* Endpoints of m the daemon reads from (sources) and writes to (targets). */
static bool side_is_source(const struct cfg_mapping *m, char side)
{
    return side == 'a' ? m->direction != CFG_DIR_B_TO_A : m->direction != CFG_DIR_A_TO_B;
}

static int parse_lsn(const char *s, uint64_t *out)
{
    unsigned hi, lo;

    if (sscanf(s, "%X/%X", &hi, &lo) != 2)
        return -EINVAL;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* Waits (bounded) until the daemon saved a position at or past each
 * source's current WAL position: what was committed before is journaled. */
static void settle(struct state *st, const struct cfg_mapping *m,
                   struct rec_stream *a, struct rec_stream *b, int64_t deadline)
{
    struct rec_stream *s[2] = { a, b };
    const char *ep[2] = { m->a.endpoint, m->b.endpoint };
    int64_t until = mono_ms() + SETTLE_MS;
    uint64_t want[2] = { 0, 0 };
    bool need[2] = { false, false };

    if (until > deadline)
        until = deadline;
    for (int i = 0; i < 2; i++)
        need[i] = side_is_source(m, i ? 'b' : 'a') && s[i]->ops->position &&
                  s[i]->ops->position(s[i]->impl, &want[i], NULL) == 0;
    while (mono_ms() < until) {
        bool done = true;

        for (int i = 0; i < 2; i++) {
            char pos[256];
            uint64_t have = 0;

            if (!need[i])
                continue;
            if (state_position_get(st, ep[i], pos, sizeof(pos), NULL) == 0 &&
                parse_lsn(pos, &have) == 0 && have >= want[i])
                need[i] = false;
            else
                done = false;
        }
        if (done)
            return;
        sleep_ms(POLL_MS);
    }
}

/* Waits until every target of m applied the journal as it is now. */
static int drain(struct state *st, const struct cfg_mapping *m, int64_t deadline)
{
    const char *ep[2] = { m->a.endpoint, m->b.endpoint };
    int64_t last = 0;

    if (journal_last_commit_seq(st, &last, NULL) != 0)
        return -EIO;
    for (;;) {
        bool done = true;

        for (int i = 0; i < 2; i++) {
            int64_t txns = 0;

            /* Side a is a target when b is a source, and the reverse. */
            if (!side_is_source(m, i ? 'a' : 'b'))
                continue;
            if (reconcile_pending(st, ep[i], last, &txns, NULL, NULL) != 0 || txns > 0)
                done = false;
        }
        if (done)
            return 0;
        if (mono_ms() >= deadline)
            return -ETIMEDOUT;
        sleep_ms(POLL_MS);
    }
}

static int recheck(struct reconcile_report *r, struct pass *tmpl, int wait_ms)
{
    int64_t deadline = mono_ms() + wait_ms;
    int rc = 0;

    for (int round = 0; round < RECHECK_ROUNDS && reconcile_report_drift(r); round++) {
        struct pass p = *tmpl;
        int *list = NULL;
        size_t n = 0;
        int64_t gone;

        settle(tmpl->st, tmpl->m, tmpl->a, tmpl->b, deadline);
        if (drain(tmpl->st, tmpl->m, deadline) != 0) {
            r->drain_timed_out = true;
            break;
        }
        r->recheck_rounds++;
        if (r->diffs_not_kept > 0 || !r->buckets_used) {
            /* Too many differences to track one by one: compare again. */
            int64_t before = 0, after = 0;

            for (int c = REC_ONLY_A; c < REC_NCLASS; c++)
                before += r->classes[c];
            if ((rc = pass_full(&p)) != 0) {
                pass_free(&p);
                return rc;
            }
            pass_to_report(&p, r);
            for (int c = REC_ONLY_A; c < REC_NCLASS; c++)
                after += r->classes[c];
            gone = before > after ? before - after : 0;
        } else {
            list = malloc((r->ndiffs + 1) * sizeof(*list));
            if (list == NULL)
                return err_set(tmpl->e, -ENOMEM, "out of memory");
            for (size_t i = 0; i < r->ndiffs; i++)
                list[n++] = r->diffs[i].bucket;
            qsort(list, n, sizeof(*list), cmp_int);
            size_t u = 0;
            for (size_t i = 0; i < n; i++)
                if (u == 0 || list[u - 1] != list[i])
                    list[u++] = list[i];
            rc = pass_buckets(&p, r->nbuckets, list, u);
            free(list);
            if (rc != 0) {
                pass_free(&p);
                return rc;
            }
            r->rows_streamed_a += p.streamed_a;
            r->rows_streamed_b += p.streamed_b;
            gone = intersect(r, &p);
            pass_free(&p);
        }
        r->in_flight += gone;
        if (gone == 0)
            break;          /* stable: what differs now is drift */
    }
    return 0;
}

/* ---- lag and journal ---- */

static int newest_shadow(const char *key, const struct shadow *sh, void *arg)
{
    int64_t *max = arg;

    (void)key;
    if (sh->version_a_us > *max)
        *max = sh->version_a_us;
    if (sh->version_b_us > *max)
        *max = sh->version_b_us;
    return 0;
}

static void journal_info(struct state *st, const struct cfg_mapping *m,
                         struct reconcile_report *r)
{
    const char *ep[2] = { m->a.endpoint, m->b.endpoint };

    for (int i = 0; i < 2; i++) {
        int64_t changes = 0;

        if (side_is_source(m, i ? 'a' : 'b') &&
            reconcile_pending(st, ep[i], INT64_MAX, NULL, &changes, NULL) == 0)
            r->journal_pending += changes;
    }
}

/* ---- the entry points ---- */

static int open_side(const struct config *c, const struct cfg_mapping *m, char side,
                     struct rec_stream *s, struct err *e)
{
    const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;

    if (sd->ep != NULL && sd->ep->kind == CFG_KIND_POSTGRES)
        return rec_pg_open(s, m, side, e);
    if (sd->ep != NULL && sd->ep->kind == CFG_KIND_REST)
        return rec_rest_open(s, c, m, side, e);
    return err_set(e, -ENOTSUP, "mapping %s: side %c (%s): no record stream for this"
                   " kind of endpoint", m->name, side, sd->endpoint);
}

int reconcile_mapping_opts(const struct config *c, const struct cfg_mapping *m,
                           const struct reconcile_opts *opts,
                           struct reconcile_report *out, struct err *e)
{
    struct rec_stream a = { 0 }, b = { 0 };
    struct state *st = NULL;
    struct pass p = { 0 };
    int64_t t0 = mono_ms();
    int rc;

    memset(out, 0, sizeof(*out));
    out->mapping = strdup(m->name);
    if (out->mapping == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    if ((rc = open_side(c, m, 'a', &a, e)) != 0 || (rc = open_side(c, m, 'b', &b, e)) != 0)
        goto out;
    /* Optional: without a state file there is no shadow and no journal. */
    if (state_open(&st, c->state_path, STATE_READONLY, NULL) != 0)
        st = NULL;
    out->daemon_running = opts->daemon < 0 ? reconcile_daemon_running(c->state_path)
                                           : opts->daemon > 0;
    p.m = m;
    p.st = st;
    p.a = &a;
    p.b = &b;
    p.e = e;
    if ((rc = pass_full(&p)) != 0)
        goto out;
    pass_to_report(&p, out);
    if (st != NULL && out->daemon_running && opts->recheck_wait_ms > 0 &&
        reconcile_report_drift(out)) {
        struct pass tmpl = { .m = m, .st = st, .a = &a, .b = &b, .e = e };

        if ((rc = recheck(out, &tmpl, opts->recheck_wait_ms)) != 0)
            goto out;
    }
    if (st != NULL) {
        out->has_shadow = true;
        shadow_scan(st, m->name, NULL, 0, newest_shadow, &out->shadow_newest_us, NULL);
        journal_info(st, m, out);
    }
out:
    pass_free(&p);
    if (rc != 0) {
        out->rc = rc;
        out->unreachable = rc == -EHOSTUNREACH;
        snprintf(out->error, sizeof(out->error), "%.500s", e ? e->msg : "failed");
    }
    out->elapsed_s = (double)(mono_ms() - t0) / 1000.0;
    rec_stream_free(&a);
    rec_stream_free(&b);
    state_close(st);
    return rc;
}

int reconcile_mapping(const struct config *c, const struct cfg_mapping *m,
                      struct reconcile_report *out, struct err *e)
{
    struct reconcile_opts o = { .daemon = -1, .recheck_wait_ms = RECONCILE_RECHECK_WAIT_MS };

    return reconcile_mapping_opts(c, m, &o, out, e);
}

/* ---- daemon presence, applied progress ---- */

/* /proc/locks names the device and inode of every flock; the daemon holds
 * one on "<state>.lock". Reading it takes no lock, so a daemon starting
 * at this instant is never refused. */
bool reconcile_daemon_running(const char *state_path)
{
    char lp[4096], line[512];
    struct stat sb;
    FILE *f;
    bool found = false;

    if (snprintf(lp, sizeof(lp), "%s.lock", state_path) >= (int)sizeof(lp) ||
        stat(lp, &sb) != 0)
        return false;
    f = fopen("/proc/locks", "re");
    if (f == NULL) {
        /* Fallback: probe with a shared lock, released at once. */
        int fd = open(lp, O_RDONLY | O_CLOEXEC);
        bool busy;

        if (fd < 0)
            return false;
        busy = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
        close(fd);
        return busy;
    }
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char kind[16], mode[16];
        unsigned maj, min;
        unsigned long ino;
        long pid;

        if (sscanf(line, "%*[^:]: %15s %*s %15s %ld %x:%x:%lu", kind, mode, &pid,
                   &maj, &min, &ino) == 6 &&
            strcmp(kind, "FLOCK") == 0 && ino == (unsigned long)sb.st_ino &&
            maj == major(sb.st_dev) && min == minor(sb.st_dev))
            found = true;
    }
    fclose(f);
    return found;
}

struct pending_acc {
    int64_t upto, txns, changes, last;
    bool past;
};

static int count_pending(const struct journal_txn_info *info, void *arg)
{
    struct pending_acc *p = arg;

    p->last = info->commit_seq;
    if (info->commit_seq > p->upto) {
        p->past = true;
        return 1;
    }
    p->txns++;
    p->changes += info->nchanges;
    return 0;
}

int reconcile_pending(struct state *st, const char *target, int64_t upto,
                      int64_t *txns, int64_t *changes, struct err *e)
{
    struct pending_acc p = { .upto = upto };
    int64_t after = 0;
    int rc;

    if ((rc = state_applied_get(st, target, &after, e)) != 0)
        return rc;
    for (;;) {
        int64_t before = p.txns;

        p.last = after;
        rc = journal_scan_txns(st, after, 1000, target, count_pending, &p, e);
        if (rc < 0)
            return rc;
        if (p.past || p.txns - before < 1000 || p.last == after)
            break;
        after = p.last;
    }
    if (txns != NULL)
        *txns = p.txns;
    if (changes != NULL)
        *changes = p.changes;
    return 0;
}

int reconcile_wait_applied(const char *path, const char *const *endpoints,
                           const int64_t *upto, size_t n, int timeout_ms,
                           struct err *e)
{
    int64_t deadline = mono_ms() + timeout_ms;
    struct state *st = NULL;
    int rc;

    if ((rc = state_open(&st, path, STATE_READONLY, e)) != 0)
        return rc;
    for (;;) {
        bool done = true;

        for (size_t i = 0; i < n; i++) {
            int64_t txns = 0;

            if (upto[i] <= 0)
                continue;
            if (reconcile_pending(st, endpoints[i], upto[i], &txns, NULL, NULL) != 0 ||
                txns > 0)
                done = false;
        }
        if (done)
            break;
        if (mono_ms() >= deadline) {
            rc = err_set(e, -ETIMEDOUT, "the daemon did not apply the fixes"
                         " within %d s", timeout_ms / 1000);
            break;
        }
        sleep_ms(POLL_MS);
    }
    state_close(st);
    return rc;
}
