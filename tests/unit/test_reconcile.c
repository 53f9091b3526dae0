/* test_reconcile.c: the pure parts of reconcile: key order, field
 * equality (numbers by value), classification, buckets, the merge of two
 * key-ordered streams (synthetic, in memory), the report's JSON, and the
 * repair decisions journaled into a temporary state. No network. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/config.h"
#include "daemon/reconcile.h"
#include "resolver/resolver.h"
#include "state/conflicts.h"
#include "state/journal.h"
#include "state/shadow.h"
#include "state/state.h"

/* ---- a synthetic record stream over an array ---- */

struct arec {
    const char *k1, *k2;        /* k2 NULL: one key column */
    const char *fields;         /* JSON object text */
    int64_t version_us;
};

struct astream {
    const struct arec *recs;
    size_t n, i;
    json_t *fields;
    char key[256];
    int fail_at;                /* >0: next() fails at this record (1-based) */
};

static int as_begin(void *impl, struct err *e)
{
    (void)impl; (void)e;
    return 0;
}

static int as_scan(void *impl, int nb, const int *b, size_t n, struct err *e)
{
    struct astream *s = impl;

    (void)nb; (void)b; (void)n; (void)e;
    s->i = 0;
    return 0;
}

static int as_next(void *impl, struct rec_record *r, struct err *e)
{
    struct astream *s = impl;
    const struct arec *a;

    if (s->i >= s->n)
        return 0;
    if (s->fail_at > 0 && (int)s->i + 1 == s->fail_at)
        return err_set(e, -EIO, "synthetic failure");
    a = &s->recs[s->i++];
    memset(r, 0, sizeof(*r));
    r->nkey = a->k2 ? 2 : 1;
    r->keyv[0] = a->k1;
    r->keyv[1] = a->k2;
    if (a->k2)
        snprintf(s->key, sizeof(s->key), "[\"%s\",\"%s\"]", a->k1, a->k2);
    else
        snprintf(s->key, sizeof(s->key), "[\"%s\"]", a->k1);
    r->key = s->key;
    json_decref(s->fields);
    s->fields = json_loads(a->fields, 0, NULL);
    assert_non_null(s->fields);
    r->fields = s->fields;
    r->version_us = a->version_us;
    r->bucket = -1;
    return 1;
}

static void as_free(void *impl)
{
    struct astream *s = impl;

    json_decref(s->fields);
    s->fields = NULL;
}

static const struct rec_stream_ops as_ops = {
    .bucket_method = NULL, .begin = as_begin, .scan = as_scan,
    .next = as_next, .free = as_free,
};

static void as_init(struct astream *s, struct rec_stream *st,
                    const struct arec *recs, size_t n)
{
    memset(s, 0, sizeof(*s));
    s->recs = recs;
    s->n = n;
    st->ops = &as_ops;
    st->impl = s;
}

/* ---- config ---- */

static const char *cfg_text =
    "{ \"name\": \"t\", \"state\": { \"path\": \"%s\" }, \"http\": { \"listen\": \"\" },"
    "  \"endpoints\": {"
    "    \"A\": { \"kind\": \"postgres\", \"conninfo\": \"host=127.0.0.1 port=1 dbname=a\","
    "             \"publication\": \"pa\", \"slot\": \"sa\", \"origin\": \"oa\" },"
    "    \"B\": { \"kind\": \"postgres\", \"conninfo\": \"host=127.0.0.1 port=1 dbname=b\","
    "             \"publication\": \"pb\", \"slot\": \"sb\", \"origin\": \"ob\" } },"
    "  \"mappings\": ["
    "   { \"name\": \"m\", \"a\": { \"endpoint\": \"A\", \"table\": \"t\", \"key\": [\"id\"] },"
    "     \"b\": { \"endpoint\": \"B\", \"table\": \"t\", \"key\": [\"id\"] },"
    "     \"fields\": { \"id\": \"id\", \"v\": \"val\", \"n\": \"n\" }, \"direction\": \"both\","
    "     \"conflict\": { \"strategy\": \"last_write_wins\" } },"
    "   { \"name\": \"oneway\", \"a\": { \"endpoint\": \"A\", \"table\": \"u\", \"key\": [\"id\"] },"
    "     \"b\": { \"endpoint\": \"B\", \"table\": \"u\", \"key\": [\"id\"] },"
    "     \"fields\": { \"id\": \"id\", \"v\": \"v\" }, \"direction\": \"a_to_b\","
    "     \"conflict\": { \"strategy\": \"last_write_wins\" } },"
    "   { \"name\": \"man\", \"a\": { \"endpoint\": \"A\", \"table\": \"w\", \"key\": [\"id\"] },"
    "     \"b\": { \"endpoint\": \"B\", \"table\": \"w\", \"key\": [\"id\"] },"
    "     \"fields\": { \"id\": \"id\", \"v\": \"v\" }, \"direction\": \"both\","
    "     \"conflict\": { \"strategy\": \"manual\" } } ] }";

struct fx {
    char dir[256];
    char path[300];
    struct config *cfg;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag; (void)f;
    return remove(p);
}

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");
    char text[4096];
    struct err e = { 0 };

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-reconcile-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    snprintf(text, sizeof(text), cfg_text, fx->path);
    if (config_load_string(&fx->cfg, text, &e) != 0)
        fail_msg("config: %s", e.msg);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    struct fx *fx = *ctx;

    config_free(fx->cfg);
    nftw(fx->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static struct rec_record rec1(const char *k)
{
    struct rec_record r = { 0 };

    r.nkey = 1;
    r.keyv[0] = k;
    r.key = k;
    return r;
}

/* ---- key order ---- */

static void test_key_order(void **ctx)
{
    struct rec_record a = rec1("10"), b = rec1("9"), c = rec1("1"), d;

    (void)ctx;
    /* Byte order of the text, not numeric order: both sides agree on it. */
    assert_true(rec_key_cmp(&a, &b) < 0);
    assert_true(rec_key_cmp(&c, &a) < 0);
    assert_int_equal(rec_key_cmp(&a, &a), 0);
    /* Column by column: ("a", "z") < ("ab", "a"), unlike the JSON text. */
    memset(&d, 0, sizeof(d));
    d.nkey = 2;
    d.keyv[0] = "a";
    d.keyv[1] = "z";
    struct rec_record e2 = { 0 };
    e2.nkey = 2;
    e2.keyv[0] = "ab";
    e2.keyv[1] = "a";
    assert_true(rec_key_cmp(&d, &e2) < 0);
    /* "a!" sorts after "a" although '!' < '"'. */
    struct rec_record f = rec1("a"), g = rec1("a!");
    assert_true(rec_key_cmp(&f, &g) < 0);
}

/* ---- field equality ---- */

static void test_fields_equal(void **ctx)
{
    json_t *a = json_pack("{s:s,s:s,s:n}", "id", "5", "n", "12.50", "v", NULL);
    json_t *b = json_pack("{s:s,s:s,s:n}", "id", "5", "n", "12.5", "v", NULL);
    json_t *c = json_pack("{s:s,s:s,s:s}", "id", "5", "n", "12.5", "v", "");
    json_t *d = json_pack("{s:s,s:s}", "id", "5", "n", "12.6");
    json_t *diff = json_array();

    (void)ctx;
    assert_true(rec_fields_equal(a, b, NULL));      /* 12.50 == 12.5 */
    assert_true(rec_fields_equal(a, a, NULL));
    assert_false(rec_fields_equal(b, c, diff));     /* null != "" */
    assert_int_equal(json_array_size(diff), 1);
    assert_string_equal(json_string_value(json_array_get(diff, 0)), "v");
    json_array_clear(diff);
    assert_false(rec_fields_equal(b, d, diff));     /* n differs, v missing */
    assert_int_equal(json_array_size(diff), 2);
    /* Text that merely looks alike is not equal: 1e2 == 100 by value, but
     * "007" and "7 " (space) are not both numbers. */
    json_t *x = json_pack("{s:s}", "n", "1e2"), *y = json_pack("{s:s}", "n", "100");
    json_t *z = json_pack("{s:s}", "n", "100 ");
    assert_true(rec_fields_equal(x, y, NULL));
    assert_false(rec_fields_equal(y, z, NULL));
    json_decref(x);
    json_decref(y);
    json_decref(z);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
    json_decref(diff);
}

/* ---- classification ---- */

static void test_classify(void **ctx)
{
    struct fx *fx = *ctx;
    const struct cfg_mapping *m = config_mapping(fx->cfg, "m");
    struct rec_record a = rec1("5"), b = rec1("5");
    struct resolve_base base = { NULL, 1000, 2000, false };
    json_t *fa = json_pack("{s:s,s:s}", "id", "5", "v", "x");
    json_t *fb = json_pack("{s:s,s:s}", "id", "5", "v", "y");
    json_t *diff = json_array();
    char stale;

    (void)ctx;
    a.fields = fa;
    b.fields = fa;
    assert_int_equal(rec_classify(m, &a, &b, NULL, diff, &stale), REC_SAME);
    b.fields = fb;
    assert_int_equal(rec_classify(m, &a, &b, NULL, diff, &stale), REC_DIFFERENT);
    assert_int_equal(stale, 0);
    assert_int_equal(rec_classify(m, &a, NULL, NULL, NULL, &stale), REC_ONLY_A);
    assert_int_equal(rec_classify(m, NULL, &b, NULL, NULL, &stale), REC_ONLY_B);
    /* Versions newer than the shadow's: plain difference. */
    a.version_us = 1500;
    b.version_us = 2500;
    assert_int_equal(rec_classify(m, &a, &b, &base, NULL, &stale), REC_DIFFERENT);
    /* Side b older than the version both agreed on: stale (G5). */
    b.version_us = 1999;
    assert_int_equal(rec_classify(m, &a, &b, &base, NULL, &stale), REC_STALE);
    assert_int_equal(stale, 'b');
    /* Unknown versions (0) are never stale. */
    b.version_us = 0;
    assert_int_equal(rec_classify(m, &a, &b, &base, NULL, &stale), REC_DIFFERENT);
    /* A record older than a tombstone, the other side deleted: stale. */
    base.tombstone = true;
    a.version_us = 900;
    assert_int_equal(rec_classify(m, &a, NULL, &base, NULL, &stale), REC_STALE);
    assert_int_equal(stale, 'a');
    assert_string_equal(rec_class_name(REC_ONLY_B), "only_b");
    json_decref(fa);
    json_decref(fb);
    json_decref(diff);
}

/* ---- buckets ---- */

static void test_buckets(void **ctx)
{
    struct rec_bucket a[6], b[6];
    int out[6];

    (void)ctx;
    assert_int_equal(rec_bucket_count(-1), 1024);
    assert_int_equal(rec_bucket_count(0), 16);
    assert_int_equal(rec_bucket_count(200000), 1562);
    assert_int_equal(rec_bucket_count(1000000000LL), 65536);
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    for (int i = 0; i < 6; i++) {
        a[i].count = b[i].count = 10;
        snprintf(a[i].hash, sizeof(a[i].hash), "h%d", i);
        snprintf(b[i].hash, sizeof(b[i].hash), "h%d", i);
    }
    assert_int_equal(rec_buckets_diff(a, b, 6, out), 0);
    b[1].count = 9;                         /* a row missing on b */
    snprintf(b[4].hash, sizeof(b[4].hash), "other");   /* a row changed */
    a[5].count = 0;                         /* empty on a, rows on b */
    a[5].hash[0] = '\0';
    assert_int_equal(rec_buckets_diff(a, b, 6, out), 3);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 4);
    assert_int_equal(out[2], 5);
}

/* ---- merge ---- */

struct tally {
    const struct cfg_mapping *m;
    int64_t cls[REC_NCLASS];
    char seen[512];
    int stop_after;
};

static int on_pair(const struct rec_record *a, const struct rec_record *b, void *arg)
{
    struct tally *t = arg;
    char stale;
    enum rec_class c = rec_classify(t->m, a, b, NULL, NULL, &stale);

    t->cls[c]++;
    strncat(t->seen, a ? a->key : b->key, sizeof(t->seen) - strlen(t->seen) - 1);
    if (t->stop_after > 0 && --t->stop_after == 0)
        return 42;
    return 0;
}

static void test_merge(void **ctx)
{
    struct fx *fx = *ctx;
    static const struct arec A[] = {
        { "1", NULL, "{\"id\":\"1\",\"v\":\"x\"}", 0 },
        { "10", NULL, "{\"id\":\"10\",\"v\":\"x\",\"n\":\"12.50\"}", 0 },
        { "2", NULL, "{\"id\":\"2\",\"v\":\"x\"}", 0 },
        { "4", NULL, "{\"id\":\"4\",\"v\":\"x\"}", 0 },
    };
    static const struct arec B[] = {
        { "10", NULL, "{\"id\":\"10\",\"v\":\"x\",\"n\":\"12.5\"}", 0 },
        { "2", NULL, "{\"id\":\"2\",\"v\":\"y\"}", 0 },
        { "3", NULL, "{\"id\":\"3\",\"v\":\"x\"}", 0 },
        { "4", NULL, "{\"id\":\"4\",\"v\":\"x\"}", 0 },
        { "5", NULL, "{\"id\":\"5\",\"v\":\"x\"}", 0 },
    };
    struct astream sa, sb;
    struct rec_stream a, b;
    struct tally t = { .m = config_mapping(fx->cfg, "m") };
    struct err e = { 0 };

    as_init(&sa, &a, A, 4);
    as_init(&sb, &b, B, 5);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), 0);
    assert_int_equal(t.cls[REC_SAME], 2);       /* 10 (12.50 == 12.5), 4 */
    assert_int_equal(t.cls[REC_ONLY_A], 1);     /* 1 */
    assert_int_equal(t.cls[REC_ONLY_B], 2);     /* 3, 5 */
    assert_int_equal(t.cls[REC_DIFFERENT], 1);  /* 2 */
    assert_string_equal(t.seen, "[\"1\"][\"10\"][\"2\"][\"3\"][\"4\"][\"5\"]");
    as_free(&sa);
    as_free(&sb);

    /* One side empty: everything is only on the other. */
    memset(&t, 0, sizeof(t));
    t.m = config_mapping(fx->cfg, "m");
    as_init(&sa, &a, A, 0);
    as_init(&sb, &b, B, 5);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), 0);
    assert_int_equal(t.cls[REC_ONLY_B], 5);
    as_free(&sa);
    as_free(&sb);

    /* The callback stops the merge with its value. */
    memset(&t, 0, sizeof(t));
    t.m = config_mapping(fx->cfg, "m");
    t.stop_after = 2;
    as_init(&sa, &a, A, 4);
    as_init(&sb, &b, B, 5);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), 42);
    as_free(&sa);
    as_free(&sb);

    /* A stream error is returned. */
    memset(&t, 0, sizeof(t));
    t.m = config_mapping(fx->cfg, "m");
    as_init(&sa, &a, A, 4);
    as_init(&sb, &b, B, 5);
    sb.fail_at = 3;
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), -EIO);
    as_free(&sa);
    as_free(&sb);
}

static void test_merge_order_errors(void **ctx)
{
    struct fx *fx = *ctx;
    static const struct arec bad_order[] = {
        { "2", NULL, "{\"id\":\"2\"}", 0 }, { "1", NULL, "{\"id\":\"1\"}", 0 },
    };
    static const struct arec dup[] = {
        { "1", NULL, "{\"id\":\"1\"}", 0 }, { "1", NULL, "{\"id\":\"1\"}", 0 },
    };
    static const struct arec two[] = {
        { "a", "2", "{\"id\":\"a\"}", 0 }, { "a", "10", "{\"id\":\"a\"}", 0 },
    };
    struct astream sa, sb;
    struct rec_stream a, b;
    struct tally t = { .m = config_mapping(fx->cfg, "m") };
    struct err e = { 0 };

    as_init(&sa, &a, bad_order, 2);
    as_init(&sb, &b, bad_order, 0);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "out of order"));
    as_free(&sa);
    as_free(&sb);
    as_init(&sa, &a, dup, 0);
    as_init(&sb, &b, dup, 2);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "appears twice"));
    as_free(&sa);
    as_free(&sb);
    /* Two key columns: ("a","10") < ("a","2") in byte order, so this is out
     * of order. */
    as_init(&sa, &a, two, 2);
    as_init(&sb, &b, two, 0);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), -EPROTO);
    as_free(&sa);
    as_free(&sb);
}

/* ---- report ---- */

static void add_diff(struct reconcile_report *r, const char *key, enum rec_class c,
                     const char *a, const char *b, const char *fields,
                     int64_t va, int64_t vb)
{
    struct reconcile_diff *d;

    r->diffs = realloc(r->diffs, (r->ndiffs + 1) * sizeof(*r->diffs));
    assert_non_null(r->diffs);
    d = &r->diffs[r->ndiffs++];
    memset(d, 0, sizeof(*d));
    d->key = strdup(key);
    d->cls = c;
    d->a = a ? strdup(a) : NULL;
    d->b = b ? strdup(b) : NULL;
    d->fields = strdup(fields);
    d->version_a_us = va;
    d->version_b_us = vb;
    r->classes[c]++;
}

static void test_report_json(void **ctx)
{
    struct fx *fx = *ctx;
    struct reconcile_report r = { 0 };
    json_t *j, *d;

    r.mapping = strdup("m");
    r.count_a = 10;
    r.count_b = 9;
    r.classes[REC_SAME] = 8;
    add_diff(&r, "[\"1\"]", REC_ONLY_A, "{\"id\":\"1\",\"v\":\"x\",\"n\":null}", NULL, "[]", 5, 0);
    add_diff(&r, "[\"2\"]", REC_DIFFERENT, "{\"id\":\"2\",\"v\":\"x\",\"n\":\"1\"}",
             "{\"id\":\"2\",\"v\":\"y\",\"n\":\"1\"}", "[\"v\"]", 5, 6);
    assert_true(reconcile_report_drift(&r));
    j = reconcile_report_json(&r, config_mapping(fx->cfg, "m"), 1);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "mapping")), "m");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "a"), "count")), 10);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "b"), "endpoint")), "B");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "classes"), "only_a")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "differences_total")), 2);
    assert_true(json_is_true(json_object_get(j, "drift")));
    /* --limit 1: one listed; whole record for only_a. */
    assert_int_equal(json_array_size(json_object_get(j, "differences")), 1);
    d = json_array_get(json_object_get(j, "differences"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "class")), "only_a");
    assert_string_equal(json_string_value(json_array_get(json_object_get(d, "key"), 0)), "1");
    assert_true(json_is_null(json_object_get(d, "b")));
    assert_int_equal(json_object_size(json_object_get(d, "a")), 3);
    json_decref(j);
    /* Only the differing fields of a different record. */
    j = reconcile_report_json(&r, NULL, 100);
    d = json_array_get(json_object_get(j, "differences"), 1);
    assert_int_equal(json_object_size(json_object_get(d, "a")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "b"), "v")), "y");
    json_decref(j);
    reconcile_report_clear(&r);
    assert_null(r.diffs);
    reconcile_report_clear(NULL);
}

/* ---- state helpers and repair ---- */

struct collected {
    char ops[64];
    char endpoints[64][8];
    char old[64][128];
    int n;
};

static int collect_change(const struct change *c, void *arg)
{
    struct collected *x = arg;

    if (x->n < 64) {
        x->ops[x->n] = (char)c->op;
        snprintf(x->endpoints[x->n], sizeof(x->endpoints[0]), "%s", c->endpoint);
        snprintf(x->old[x->n], sizeof(x->old[0]), "%s", c->old_fields ? c->old_fields : "-");
        x->n++;
    }
    return 0;
}

struct txn_list {
    int64_t txn[16];
    int n;
};

static int collect_txn(const struct journal_txn_info *i, void *arg)
{
    struct txn_list *t = arg;

    if (t->n < 16)
        t->txn[t->n++] = i->txn;
    return 0;
}

static void journal_contents(struct state *st, struct collected *x)
{
    struct txn_list t = { .n = 0 };

    memset(x, 0, sizeof(*x));
    assert_int_equal(journal_scan_txns(st, 0, 16, NULL, collect_txn, &t, NULL), 0);
    for (int i = 0; i < t.n; i++)
        assert_int_equal(journal_scan_changes(st, t.txn[i], collect_change, x, NULL), 0);
}

struct conflicts_seen {
    int n, open;
    char rules[8][256];
};

static int collect_conflict(const struct conflict *c, void *arg)
{
    struct conflicts_seen *s = arg;

    if (s->n < 8)
        snprintf(s->rules[s->n], sizeof(s->rules[0]), "%s", c->rule ? c->rule : "");
    s->n++;
    s->open += c->open;
    return 0;
}

static void test_repair_decisions(void **ctx)
{
    struct fx *fx = *ctx;
    const struct cfg_mapping *m = config_mapping(fx->cfg, "m");
    struct reconcile_report r = { 0 };
    struct reconcile_repair_stats st;
    struct state *s = NULL;
    struct err e = { 0 };
    struct collected x;
    struct conflicts_seen cs = { 0 };

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    r.mapping = strdup("m");
    /* a newer: b is updated, conditional on b's current record. */
    add_diff(&r, "[\"1\"]", REC_DIFFERENT, "{\"id\":\"1\",\"v\":\"new\",\"n\":\"1\"}",
             "{\"id\":\"1\",\"v\":\"old\",\"n\":\"1\"}", "[\"v\"]", 2000, 1000);
    /* Only on a, no shadow: b gets an insert. */
    add_diff(&r, "[\"2\"]", REC_ONLY_A, "{\"id\":\"2\",\"v\":\"x\",\"n\":null}", NULL,
             "[]", 2000, 0);
    /* Only on b, but a's delete is newer than the unchanged b (shadow live,
     * b equal to it): the delete wins and b's record is deleted. */
    add_diff(&r, "[\"3\"]", REC_ONLY_B, NULL, "{\"id\":\"3\",\"v\":\"s\",\"n\":null}",
             "[]", 0, 0);
    {
        struct shadow sh = { 0 };
        sh.fields = "{\"id\":\"3\",\"v\":\"s\",\"n\":null}";
        sh.version_a_us = 500;
        sh.version_b_us = 600;
        assert_int_equal(state_begin(s, &e), 0);
        assert_int_equal(shadow_put(s, "m", "[\"3\"]", &sh, &e), 0);
        assert_int_equal(state_commit(s, &e), 0);
    }
    assert_int_equal(reconcile_repair(fx->cfg, m, s, &r, &st, &e), 0);
    assert_int_equal(st.decided, 3);
    assert_int_equal(st.parked, 0);
    assert_int_equal(st.changes, 3);
    assert_true(st.last_seq_to_b > 0);
    assert_int_equal(st.last_seq_to_a, 0);
    journal_contents(s, &x);
    assert_int_equal(x.n, 3);
    /* All from side a's endpoint (applied to b). */
    assert_string_equal(x.endpoints[0], "A");
    assert_int_equal(x.ops[0], 'U');
    assert_string_equal(x.old[0], "{\"id\":\"1\",\"v\":\"old\",\"n\":\"1\"}");
    assert_int_equal(x.ops[1], 'I');
    assert_string_equal(x.old[1], "-");
    assert_int_equal(x.ops[2], 'D');
    assert_string_equal(x.old[2], "{\"id\":\"3\",\"v\":\"s\",\"n\":null}");
    assert_int_equal(conflict_list(s, false, 0, collect_conflict, &cs, &e), 0);
    assert_int_equal(cs.n, 3);
    for (int i = 0; i < 3; i++)
        assert_non_null(strstr(cs.rules[i], "reconcile: "));
    /* Nothing is pending for A (all from A), B has three changes. */
    int64_t txns = -1, changes = -1;
    assert_int_equal(reconcile_pending(s, "A", INT64_MAX, &txns, &changes, &e), 0);
    assert_int_equal(txns, 0);
    assert_int_equal(reconcile_pending(s, "B", INT64_MAX, &txns, &changes, &e), 0);
    assert_int_equal(txns, 1);
    assert_int_equal(changes, 3);
    assert_int_equal(state_applied_set(s, "B", st.last_seq_to_b, &e), 0);
    assert_int_equal(reconcile_pending(s, "B", INT64_MAX, &txns, NULL, &e), 0);
    assert_int_equal(txns, 0);
    reconcile_report_clear(&r);
    state_close(s);
}

static void test_repair_rules(void **ctx)
{
    struct fx *fx = *ctx;
    struct reconcile_report r = { 0 };
    struct reconcile_repair_stats st;
    struct state *s = NULL;
    struct err e = { 0 };
    struct collected x;
    struct conflicts_seen cs = { 0 };

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    /* One-way a_to_b: a wins although b is newer. */
    r.mapping = strdup("oneway");
    add_diff(&r, "[\"1\"]", REC_DIFFERENT, "{\"id\":\"1\",\"v\":\"a\"}",
             "{\"id\":\"1\",\"v\":\"b\"}", "[\"v\"]", 1000, 9000);
    /* Only on b in a one-way mapping: deleted from b. */
    add_diff(&r, "[\"2\"]", REC_ONLY_B, NULL, "{\"id\":\"2\",\"v\":\"b\"}", "[]", 0, 9000);
    assert_int_equal(reconcile_repair(fx->cfg, config_mapping(fx->cfg, "oneway"), s,
                                      &r, &st, &e), 0);
    assert_int_equal(st.changes, 2);
    journal_contents(s, &x);
    assert_int_equal(x.n, 2);
    assert_string_equal(x.endpoints[0], "A");
    assert_int_equal(x.ops[0], 'U');
    assert_int_equal(x.ops[1], 'D');
    reconcile_report_clear(&r);

    /* Stale b (older than the shadow) loses even with a newer version. */
    memset(&r, 0, sizeof(r));
    r.mapping = strdup("m");
    add_diff(&r, "[\"9\"]", REC_STALE, "{\"id\":\"9\",\"v\":\"a\",\"n\":null}",
             "{\"id\":\"9\",\"v\":\"b\",\"n\":null}", "[\"v\"]", 100, 50);
    r.diffs[0].stale_side = 'a';
    assert_int_equal(reconcile_repair(fx->cfg, config_mapping(fx->cfg, "m"), s,
                                      &r, &st, &e), 0);
    assert_int_equal(st.changes, 1);
    assert_int_equal(st.last_seq_to_b, 0);
    assert_true(st.last_seq_to_a > 0);
    reconcile_report_clear(&r);

    /* Manual: parked as an open conflict, nothing journaled. */
    memset(&r, 0, sizeof(r));
    r.mapping = strdup("man");
    add_diff(&r, "[\"7\"]", REC_DIFFERENT, "{\"id\":\"7\",\"v\":\"a\"}",
             "{\"id\":\"7\",\"v\":\"b\"}", "[\"v\"]", 100, 200);
    assert_int_equal(reconcile_repair(fx->cfg, config_mapping(fx->cfg, "man"), s,
                                      &r, &st, &e), 0);
    assert_int_equal(st.parked, 1);
    assert_int_equal(st.changes, 0);
    assert_int_equal(conflict_list(s, true, 0, collect_conflict, &cs, &e), 0);
    assert_int_equal(cs.open, 1);
    reconcile_report_clear(&r);
    state_close(s);
}

static void test_daemon_detection(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = { 0 };

    assert_false(reconcile_daemon_running(fx->path));
    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    /* The lock is visible (our own counts: it is held). */
    assert_true(reconcile_daemon_running(fx->path));
    state_close(s);
    assert_false(reconcile_daemon_running(fx->path));
}

static void test_unreachable(void **ctx)
{
    struct fx *fx = *ctx;
    struct reconcile_report r;
    struct err e = { 0 };
    struct reconcile_opts o = { .daemon = 0, .recheck_wait_ms = 0 };

    /* Port 1: nobody listens; no network needed to fail. */
    assert_int_equal(reconcile_mapping_opts(fx->cfg, config_mapping(fx->cfg, "m"),
                                            &o, &r, &e), -EHOSTUNREACH);
    assert_true(r.unreachable);
    assert_non_null(strstr(r.error, "A"));
    reconcile_report_clear(&r);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_key_order),
        T(test_fields_equal),
        T(test_classify),
        T(test_buckets),
        T(test_merge),
        T(test_merge_order_errors),
        T(test_report_json),
        T(test_repair_decisions),
        T(test_repair_rules),
        T(test_daemon_detection),
        T(test_unreachable),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
