/* test_reconcile_rest.c: the pure parts of the rest record stream of
 * reconcile: the spill table (key order as the postgres stream's COLLATE
 * "C", the latest record per key, deletes, canaries), its use by the
 * merge, the paging of a feed from its beginning, value equality across
 * kinds of endpoint, and the error of an endpoint that cannot be reached
 * (a closed loopback port: no network). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/config.h"
#include "daemon/reconcile.h"
#include "daemon/reconcile_rest.h"

static json_t *fields_of(const char *v)
{
    json_t *o = json_pack("{s:s?}", "v", v);

    assert_non_null(o);
    return o;
}

static void put(struct rec_spill *s, const char *key, const char *v, int64_t ver,
                bool deleted)
{
    json_t *f = fields_of(v);
    struct err e = { 0 };

    assert_int_equal(rec_spill_put(s, key, f, ver, deleted, &e), 0);
    json_decref(f);
}

/* Reads every live record: keys joined by " ", values by ",". */
static void read_all(struct rec_spill *s, char *keys, size_t kcap, char *vals,
                     size_t vcap)
{
    struct rec_record r, prev = { 0 };
    char pk[REC_KEY_MAX][64];
    struct err e = { 0 };
    int rc;

    keys[0] = vals[0] = '\0';
    assert_int_equal(rec_spill_scan(s, &e), 0);
    while ((rc = rec_spill_next(s, &r, &e)) == 1) {
        const char *v = json_string_value(json_object_get(r.fields, "v"));

        /* Each record sorts after the one before, as the merge checks. */
        if (prev.nkey > 0)
            assert_true(rec_key_cmp(&prev, &r) < 0);
        prev.nkey = r.nkey;
        for (size_t i = 0; i < r.nkey; i++) {
            snprintf(pk[i], sizeof(pk[i]), "%s", r.keyv[i]);
            prev.keyv[i] = pk[i];
        }
        assert_int_equal(r.bucket, -1);
        snprintf(keys + strlen(keys), kcap - strlen(keys), "%s%s", keys[0] ? " " : "", r.key);
        snprintf(vals + strlen(vals), vcap - strlen(vals), "%s%s", vals[0] ? "," : "",
                 v ? v : "null");
    }
    assert_int_equal(rc, 0);
}

static void test_spill_key_order(void **ctx)
{
    struct rec_spill *s = NULL;
    struct err e = { 0 };
    char keys[512], vals[256];

    (void)ctx;
    assert_int_equal(rec_spill_new(&s, 1, NULL, &e), 0);
    /* Byte order of the text: "10" before "9", upper case before lower,
     * UTF-8 (é = C3 A9) after ASCII, a prefix before its extensions. */
    put(s, "[\"b\"]", "1", 0, false);
    put(s, "[\"10\"]", "2", 0, false);
    put(s, "[\"9\"]", "3", 0, false);
    put(s, "[\"1\"]", "4", 0, false);
    put(s, "[\"\\u00e9\"]", "5", 0, false);
    put(s, "[\"a\"]", "6", 0, false);
    put(s, "[\"B\"]", "7", 0, false);
    put(s, "[\"ab\"]", "8", 0, false);
    read_all(s, keys, sizeof(keys), vals, sizeof(vals));
    assert_string_equal(keys, "[\"1\"] [\"10\"] [\"9\"] [\"B\"] [\"a\"] [\"ab\"] [\"b\"]"
                              " [\"\xc3\xa9\"]");
    assert_string_equal(vals, "4,2,3,7,6,8,1,5");
    rec_spill_free(s);
}

static void test_spill_two_columns(void **ctx)
{
    struct rec_spill *s = NULL;
    struct err e = { 0 };
    char keys[512], vals[256];

    (void)ctx;
    assert_int_equal(rec_spill_new(&s, 2, NULL, &e), 0);
    /* Column by column: ["a","c"] before ["ab",""], although the JSON
     * text of the keys sorts the other way round ('"' < 'b'... and ','). */
    put(s, "[\"ab\",\"\"]", "1", 0, false);
    put(s, "[\"a\",\"c\"]", "2", 0, false);
    put(s, "[\"a\",\"\"]", "3", 0, false);
    put(s, "[\"a\",\"b\"]", "4", 0, false);
    put(s, "[\"a\",\"b \\\"q\\\"\"]", "5", 0, false);
    read_all(s, keys, sizeof(keys), vals, sizeof(vals));
    assert_string_equal(keys, "[\"a\",\"\"] [\"a\",\"b\"] [\"a\",\"b \\\"q\\\"\"]"
                              " [\"a\",\"c\"] [\"ab\",\"\"]");
    assert_string_equal(vals, "3,4,5,2,1");
    rec_spill_free(s);
}

static void test_spill_latest_wins(void **ctx)
{
    struct rec_spill *s = NULL;
    struct err e = { 0 };
    struct rec_record r;
    char keys[512], vals[256];

    (void)ctx;
    assert_int_equal(rec_spill_new(&s, 1, "__tandem_canary", &e), 0);
    put(s, "[\"1\"]", "old", 10, false);
    put(s, "[\"2\"]", "live", 10, false);
    put(s, "[\"3\"]", "gone", 10, true);
    put(s, "[\"__tandem_canary\"]", "probe", 10, false);
    put(s, "[\"1\"]", "new", 20, false);       /* later in the feed: wins */
    put(s, "[\"2\"]", "live", 30, true);       /* deleted at last: absent */
    put(s, "[\"3\"]", "back", 40, false);      /* created again: present */
    put(s, "[\"4\"]", NULL, 50, false);
    read_all(s, keys, sizeof(keys), vals, sizeof(vals));
    assert_string_equal(keys, "[\"1\"] [\"3\"] [\"4\"]");
    assert_string_equal(vals, "new,back,null");
    /* Versions come along; a second scan reads the same again. */
    assert_int_equal(rec_spill_scan(s, &e), 0);
    assert_int_equal(rec_spill_next(s, &r, &e), 1);
    assert_int_equal(r.version_us, 20);
    assert_int_equal(rec_spill_next(s, &r, &e), 1);
    assert_int_equal(r.version_us, 40);
    /* clear: a new read starts empty. */
    assert_int_equal(rec_spill_clear(s, &e), 0);
    read_all(s, keys, sizeof(keys), vals, sizeof(vals));
    assert_string_equal(keys, "");
    rec_spill_free(s);
}

static void test_spill_bad_keys(void **ctx)
{
    struct rec_spill *s = NULL;
    struct err e = { 0 };
    json_t *f = fields_of("x");

    (void)ctx;
    assert_int_equal(rec_spill_new(&s, 0, NULL, &e), -EINVAL);
    assert_null(s);
    assert_int_equal(rec_spill_new(&s, REC_KEY_MAX + 1, NULL, &e), -EINVAL);
    assert_int_equal(rec_spill_new(&s, 2, NULL, &e), 0);
    assert_int_equal(rec_spill_put(s, "[\"1\"]", f, 0, false, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "not an array of 2 values"));
    assert_int_equal(rec_spill_put(s, "not json", f, 0, false, &e), -EINVAL);
    assert_int_equal(rec_spill_put(s, "[\"1\", 2]", f, 0, false, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "not text"));
    assert_int_equal(rec_spill_put(s, "{\"a\":\"1\"}", f, 0, false, &e), -EINVAL);
    json_decref(f);
    rec_spill_free(s);
    rec_spill_free(NULL);
}

/* ---- the spill as a record stream, merged with another ---- */

static int sp_begin(void *impl, struct err *e)
{
    (void)impl;
    (void)e;
    return 0;
}

static int sp_scan(void *impl, int nb, const int *b, size_t n, struct err *e)
{
    (void)nb;
    (void)b;
    (void)n;
    return rec_spill_scan(impl, e);
}

static int sp_next(void *impl, struct rec_record *r, struct err *e)
{
    return rec_spill_next(impl, r, e);
}

static void sp_free(void *impl)
{
    rec_spill_free(impl);
}

static const struct rec_stream_ops sp_ops = {
    .begin = sp_begin, .scan = sp_scan, .next = sp_next, .free = sp_free,
};

struct tally {
    int both, only_a, only_b, differ;
};

static int on_pair(const struct rec_record *a, const struct rec_record *b, void *arg)
{
    struct tally *t = arg;

    if (a && b) {
        t->both++;
        t->differ += !rec_fields_equal(a->fields, b->fields, NULL);
    } else {
        t->only_a += a != NULL;
        t->only_b += b != NULL;
    }
    return 0;
}

/* Keys put in a scrambled order on both sides come out paired: the merge
 * never sees a key out of order or twice. */
static void test_spill_merge(void **ctx)
{
    struct rec_stream a = { &sp_ops, NULL }, b = { &sp_ops, NULL };
    struct rec_spill *sa = NULL, *sb = NULL;
    struct tally t = { 0 };
    struct err e = { 0 };
    char key[64], v[32];

    (void)ctx;
    assert_int_equal(rec_spill_new(&sa, 1, NULL, &e), 0);
    assert_int_equal(rec_spill_new(&sb, 1, NULL, &e), 0);
    /* 5000 keys in a scrambled order (3779 is prime to 5000). */
    for (unsigned i = 0; i < 5000; i++) {
        unsigned k = (i * 3779u) % 5000;

        snprintf(key, sizeof(key), "[\"%u\"]", k);
        snprintf(v, sizeof(v), "%u", k);
        if (k % 100 != 1)
            put(sa, key, v, 0, false);
        if (k % 100 != 2)
            put(sb, key, k % 100 == 3 ? "changed" : v, 0, false);
        if (k % 100 == 4)
            put(sb, key, v, 0, true);
    }
    a.impl = sa;
    b.impl = sb;
    assert_int_equal(sp_scan(sa, 0, NULL, 0, &e), 0);
    assert_int_equal(sp_scan(sb, 0, NULL, 0, &e), 0);
    assert_int_equal(rec_merge(&a, &b, on_pair, &t, &e), 0);
    assert_int_equal(t.only_a, 100);        /* k % 100 == 2 and == 4 */
    assert_int_equal(t.only_b, 50);         /* k % 100 == 1 */
    assert_int_equal(t.both, 4850);
    assert_int_equal(t.differ, 50);         /* k % 100 == 3 */
    rec_stream_free(&a);
    rec_stream_free(&b);
}

/* ---- paging ---- */

static struct rf_page page_of(const char *const *cursors, size_t n, const char *last_seq)
{
    struct rf_page pg = { 0 };

    pg.recs = calloc(n + 1, sizeof(*pg.recs));
    assert_non_null(pg.recs);
    for (size_t i = 0; i < n; i++)
        pg.recs[i].cursor = cursors[i] ? strdup(cursors[i]) : NULL;
    pg.n = n;
    pg.last_seq = last_seq ? strdup(last_seq) : NULL;
    return pg;
}

static void walk(struct rec_walk *w, const struct cfg_feed *f, const char *const *cursors,
                 size_t n, const char *last_seq, int want_rc)
{
    struct rf_page pg = page_of(cursors, n, last_seq);
    struct err e = { 0 };

    assert_int_equal(rec_walk_next(w, f, &pg, &e), want_rc);
    rf_page_free(&pg);
}

static void test_walk_updated_since(void **ctx)
{
    struct cfg_feed f = { .style = CFG_FEED_UPDATED_SINCE, .cursor_field = "updated_at",
                          .offset_param = "offset" };
    const char *p1[] = { "t1", "t2", "t2" }, *p2[] = { "t2", "t2", "t2" },
               *p3[] = { "t2", "t3", "t4" }, *p4[] = { "t4" }, *bad[] = { "t1", "t2", NULL };
    struct rec_walk w;

    (void)ctx;
    rec_walk_init(&w, 3);
    assert_null(w.since);
    walk(&w, &f, p1, 3, NULL, 0);           /* full: go on from t2, skip 2 */
    assert_string_equal(w.since, "t2");
    assert_int_equal(w.offset, 2);
    walk(&w, &f, p2, 3, NULL, 0);           /* all at t2: step over them */
    assert_string_equal(w.since, "t2");
    assert_int_equal(w.offset, 5);
    walk(&w, &f, p3, 3, NULL, 0);
    assert_string_equal(w.since, "t4");
    assert_int_equal(w.offset, 1);
    assert_false(w.done);
    walk(&w, &f, p4, 1, NULL, 0);           /* short page: caught up */
    assert_true(w.done);
    rec_walk_clear(&w);

    /* Without offset_param: larger pages until past the value. */
    f.offset_param = NULL;
    rec_walk_init(&w, 3);
    walk(&w, &f, p1, 3, NULL, 0);
    assert_string_equal(w.since, "t2");
    assert_int_equal(w.offset, 0);
    walk(&w, &f, p2, 3, NULL, 0);
    assert_int_equal(w.limit, 6);
    {
        const char *p5[] = { "t2", "t2", "t2", "t2", "t2", "t9" };
        walk(&w, &f, p5, 6, NULL, 0);
    }
    assert_string_equal(w.since, "t9");
    assert_int_equal(w.limit, 3);
    walk(&w, &f, bad, 3, NULL, -EPROTO);    /* no cursor to go on from */
    rec_walk_clear(&w);
    rec_walk_init(&w, 0);
    assert_int_equal(w.limit, 100);
    walk(&w, &f, NULL, 0, NULL, 0);         /* empty feed */
    assert_true(w.done);
    rec_walk_clear(&w);
}

static void test_walk_sequence(void **ctx)
{
    struct cfg_feed f = { .style = CFG_FEED_SEQUENCE, .path = "/x/_changes" };
    const char *two[] = { NULL, NULL };
    struct rec_walk w;

    (void)ctx;
    rec_walk_init(&w, 2);
    walk(&w, &f, two, 2, "5-a", 0);
    assert_string_equal(w.since, "5-a");
    walk(&w, &f, two, 2, "5-a", -EPROTO);   /* does not advance */
    walk(&w, &f, two, 2, NULL, -EPROTO);    /* nowhere to go on from */
    walk(&w, &f, two, 1, "9-b", 0);
    assert_true(w.done);
    rec_walk_clear(&w);
}

/* ---- a mapping with a rest side ---- */

static const char *cfg_text(int port)
{
    static char buf[2048];

    snprintf(buf, sizeof(buf),
        "{ \"name\": \"t\", \"state\": { \"path\": \"/nonexistent/t.db\" },"
        "  \"retry\": { \"backoff_max_ms\": 10 },"
        "  \"endpoints\": {"
        "    \"app\": { \"kind\": \"postgres\", \"conninfo\": \"dbname=x\" },"
        "    \"crm\": { \"kind\": \"rest\", \"base_url\": \"http://127.0.0.1:%d\","
        "               \"timeout_ms\": 1000,"
        "               \"headers\": { \"Authorization\": \"Bearer very-secret\" } } },"
        "  \"mappings\": [ { \"name\": \"m\","
        "    \"a\": { \"endpoint\": \"app\", \"table\": \"t\", \"key\": [\"id\"] },"
        "    \"b\": { \"endpoint\": \"crm\", \"resource\": \"/things\", \"key\": [\"id\"],"
        "             \"feed\": { \"style\": \"updated_since\", \"cursor_field\": \"u\","
        "                         \"cursor_param\": \"u_gte\","
        "                         \"params\": { \"api_key\": \"k-123\" } } },"
        "    \"fields\": { \"id\": \"id\", \"on\": \"on\", \"at\": \"at\", \"t\": \"t\" } } ] }",
        port);
    return buf;
}

static void test_fields_same_across_kinds(void **ctx)
{
    struct config *c = NULL;
    struct err e = { 0 };
    json_t *pg, *rest, *diff;

    (void)ctx;
    assert_int_equal(config_load_string(&c, cfg_text(9), &e), 0);
    pg = json_pack("{s:s,s:s,s:s,s:s}", "id", "5", "on", "t", "at",
                   "2024-01-02 03:04:05.5+00", "t", "12.50");
    rest = json_pack("{s:s,s:s,s:s,s:s}", "id", "5", "on", "true", "at",
                     "2024-01-02T04:04:05.500+01:00", "t", "12.5");
    assert_false(rec_fields_equal(pg, rest, NULL));
    assert_true(rec_fields_same(&c->mappings[0], pg, rest, NULL));
    json_object_set_new(rest, "on", json_string("false"));
    json_object_set_new(rest, "at", json_string("2024-01-02T03:04:06Z"));
    diff = json_array();
    assert_false(rec_fields_same(&c->mappings[0], pg, rest, diff));
    assert_int_equal(json_array_size(diff), 2);
    json_decref(diff);
    json_decref(pg);
    json_decref(rest);
    config_free(c);
}

/* An endpoint that cannot be reached: begin fails with -EHOSTUNREACH and
 * a message naming the endpoint and the path, never the headers, the
 * feed's params. */
static void test_unreachable(void **ctx)
{
    struct config *c = NULL;
    struct rec_stream s = { 0 };
    struct err e = { 0 };

    (void)ctx;
    /* Port 9 (discard) on loopback: nothing listens there in a test box. */
    assert_int_equal(config_load_string(&c, cfg_text(9), &e), 0);
    assert_int_equal(rec_rest_open(&s, c, &c->mappings[0], 'b', &e), 0);
    assert_null(s.ops->summarize);
    assert_int_equal(s.ops->begin(s.impl, &e), -EHOSTUNREACH);
    assert_non_null(strstr(e.msg, "endpoint crm: GET /things?limit=100: no answer"));
    assert_non_null(strstr(e.msg, "tandem check"));
    assert_null(strstr(e.msg, "very-secret"));
    assert_null(strstr(e.msg, "k-123"));
    rec_stream_free(&s);
    /* Side a is not a rest side. */
    assert_int_equal(rec_rest_open(&s, c, &c->mappings[0], 'a', &e), -ENOTSUP);
    config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spill_key_order),
        cmocka_unit_test(test_spill_two_columns),
        cmocka_unit_test(test_spill_latest_wins),
        cmocka_unit_test(test_spill_bad_keys),
        cmocka_unit_test(test_spill_merge),
        cmocka_unit_test(test_walk_updated_since),
        cmocka_unit_test(test_walk_sequence),
        cmocka_unit_test(test_fields_same_across_kinds),
        cmocka_unit_test(test_unreachable),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
