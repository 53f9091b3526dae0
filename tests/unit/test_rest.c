/* test_rest.c: the REST connector's pure parts (connectors/rest/restfeed.h)
 * and the transport's result classification; no network. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/rest/rest_http.h"
#include "connectors/rest/restfeed.h"

/* ---- a mapping like SPEC §4's, built by hand ---- */

static struct cfg_pair fields[] = {
    { "id", "id" }, { "name", "full_name" }, { "email", "email" },
    { "balance", "balance" }, { "updated_at", "updated_at" },
};
static char *key_a[] = { "id" };
static char *key_b[] = { "id" };
static char *key_couch[] = { "_id" };

static void mapping(struct cfg_mapping *m, enum cfg_feed_style style)
{
    memset(m, 0, sizeof(*m));
    m->name = "customers";
    m->fields = fields;
    m->nfields = sizeof(fields) / sizeof(fields[0]);
    m->a.key = key_a;
    m->a.nkey = 1;
    m->b.key = key_b;
    m->b.nkey = 1;
    m->b.resource = "/customers";
    m->b.feed.style = style;
    if (style == CFG_FEED_UPDATED_SINCE) {
        m->b.feed.cursor_field = "updated_at";
        m->b.feed.cursor_param = "updated_at_gte";
        m->b.feed.limit_param = "limit";
        m->b.feed.records = "";
        m->b.feed.deleted_field = "deleted";
    } else {
        m->b.feed.path = "/customers/_changes";
        m->b.feed.since_param = "since";
        m->b.feed.limit_param = "limit";
        m->b.feed.records = "/results";
        m->b.feed.seq_field = "seq";
        m->b.feed.id_field = "id";
        m->b.feed.doc_field = "doc";
        m->b.feed.deleted_field = "deleted";
        m->b.feed.last_seq = "/last_seq";
    }
}

static const char *field(const struct rf_record *r, const char *name)
{
    return json_string_value(json_object_get(r->fields, name));
}

static char kind(const struct rf_record *r, const char *name)
{
    const char *k = json_string_value(json_object_get(r->kinds, name));
    return k ? k[0] : 0;
}

static char *dump(const json_t *v)
{
    struct strbuf b;
    char *out;

    strbuf_init(&b);
    rf_json_dump(v, &b);
    out = strdup(strbuf_cstr(&b));
    strbuf_free(&b);
    return out;
}

/* ---- JSON with exact numbers ---- */

static void test_json_exact_numbers(void **ctx)
{
    const char *text = "{\"big\":12345678901234567890,\"dec\":12.50,\"neg\":-0.1e-3,"
                       "\"s\":\"12.50\",\"nested\":[1,{\"x\":0.10000000000000001}],"
                       "\"odd\":\"\\u0001#not a number\"}";
    json_t *doc = rf_json_load(text, strlen(text), NULL);
    struct strbuf b;
    char *out;

    (void)ctx;
    assert_non_null(doc);
    strbuf_init(&b);
    assert_int_equal(rf_value(json_object_get(doc, "big"), &b), RF_NUMBER);
    assert_string_equal(strbuf_cstr(&b), "12345678901234567890");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_object_get(doc, "dec"), &b), RF_NUMBER);
    assert_string_equal(strbuf_cstr(&b), "12.50");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_object_get(doc, "neg"), &b), RF_NUMBER);
    assert_string_equal(strbuf_cstr(&b), "-0.1e-3");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_object_get(doc, "s"), &b), RF_STRING);
    assert_string_equal(strbuf_cstr(&b), "12.50");
    strbuf_reset(&b);
    /* A string that itself starts with U+0001 stays a string, unchanged. */
    assert_int_equal(rf_value(json_object_get(doc, "odd"), &b), RF_STRING);
    assert_string_equal(strbuf_cstr(&b), "\x01#not a number");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_object_get(doc, "nested"), &b), RF_JSON);
    assert_string_equal(strbuf_cstr(&b), "[1,{\"x\":0.10000000000000001}]");
    strbuf_free(&b);
    out = dump(doc);
    assert_string_equal(out, text);
    free(out);
    json_decref(doc);
}

static void test_json_malformed(void **ctx)
{
    const char *bad[] = {
        "", "[1.]", "[01]", "[-]", "[1.2.3]", "{\"a\":1", "[\"open", "[1e]",
        "<html>500</html>", "[NaN]", "[1 2]", "{\"a\":tru}", "[-01]", "[.5]",
    };
    struct err e;

    (void)ctx;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *doc;
        memset(&e, 0, sizeof(e));
        doc = rf_json_load(bad[i], strlen(bad[i]), &e);
        if (doc != NULL)
            fail_msg("accepted malformed JSON: %s", bad[i]);
        assert_int_equal(e.code, -EPROTO);
    }
}

static void test_value_kinds(void **ctx)
{
    const char *text = "[true,false,null,\"\",{\"a\":[]},\"t\"]";
    json_t *doc = rf_json_load(text, strlen(text), NULL);
    struct strbuf b;

    (void)ctx;
    assert_non_null(doc);
    strbuf_init(&b);
    assert_int_equal(rf_value(json_array_get(doc, 0), &b), RF_BOOL);
    assert_string_equal(strbuf_cstr(&b), "true");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_array_get(doc, 1), &b), RF_BOOL);
    assert_string_equal(strbuf_cstr(&b), "false");
    strbuf_reset(&b);
    assert_int_equal(rf_value(json_array_get(doc, 2), &b), RF_NULL);
    assert_int_equal(b.len, 0);
    assert_int_equal(rf_value(json_array_get(doc, 3), &b), RF_STRING);
    assert_int_equal(b.len, 0);
    assert_int_equal(rf_value(json_array_get(doc, 4), &b), RF_JSON);
    assert_string_equal(strbuf_cstr(&b), "{\"a\":[]}");
    strbuf_free(&b);
    json_decref(doc);
    /* A NUL inside a string cannot be text. */
    doc = rf_json_load("[\"a\\u0000b\"]", strlen("[\"a\\u0000b\"]"), NULL);
    assert_non_null(doc);
    strbuf_init(&b);
    assert_int_equal(rf_value(json_array_get(doc, 0), &b), RF_INVALID);
    strbuf_free(&b);
    json_decref(doc);
}

static void test_pointer(void **ctx)
{
    const char *text = "{\"a\":{\"b/c\":[10,{\"~d\":5}]},\"\":1}";
    json_t *doc = rf_json_load(text, strlen(text), NULL);
    struct strbuf b;

    (void)ctx;
    strbuf_init(&b);
    assert_ptr_equal(rf_pointer(doc, ""), doc);
    rf_value(rf_pointer(doc, "/a/b~1c/0"), &b);
    assert_string_equal(strbuf_cstr(&b), "10");
    strbuf_reset(&b);
    rf_value(rf_pointer(doc, "/a/b~1c/1/~0d"), &b);
    assert_string_equal(strbuf_cstr(&b), "5");
    assert_null(rf_pointer(doc, "/a/b~1c/2"));
    assert_null(rf_pointer(doc, "/a/b~1c/01"));
    assert_null(rf_pointer(doc, "/missing"));
    assert_null(rf_pointer(doc, "a"));
    assert_null(rf_pointer(doc, "/a/~2"));
    assert_non_null(rf_pointer(doc, "/"));
    strbuf_free(&b);
    json_decref(doc);
}

/* ---- records ---- */

static void test_map_record(void **ctx)
{
    struct cfg_mapping m;
    struct rf_record r;
    const char *text = "{\"id\":5,\"full_name\":\"Ann\",\"balance\":12.50,\"vip\":true,"
                       "\"updated_at\":\"2024-01-02T03:04:05.678Z\",\"deleted\":false}";
    json_t *rec = rf_json_load(text, strlen(text), NULL);

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    assert_int_equal(rf_map_record(&m, &m.b, rec, NULL, &r), 0);
    assert_null(r.error);
    assert_string_equal(r.key, "[\"5\"]");      /* 5 == "5" */
    assert_string_equal(field(&r, "id"), "5");
    assert_string_equal(field(&r, "name"), "Ann");  /* renamed to side a */
    assert_string_equal(field(&r, "balance"), "12.50");
    assert_true(json_is_null(json_object_get(r.fields, "email")));   /* absent = null */
    assert_int_equal(kind(&r, "balance"), RF_NUMBER);
    assert_int_equal(kind(&r, "email"), RF_NULL);
    assert_int_equal(kind(&r, "name"), RF_STRING);
    assert_null(json_object_get(r.fields, "vip"));  /* unmapped */
    assert_false(r.deleted);
    assert_string_equal(r.cursor, "2024-01-02T03:04:05.678Z");
    assert_true(r.version_us == INT64_C(1704164645678000));
    rf_record_clear(&r);
    json_decref(rec);
}

static void test_map_record_errors(void **ctx)
{
    struct cfg_mapping m;
    struct rf_record r;
    const char *cases[] = {
        "{\"full_name\":\"no key\"}",
        "{\"id\":null}",
        "{\"id\":{\"x\":1}}",
        "{\"id\":true}",
        "{\"id\":\"\"}",
        "[1,2]",
        "{\"id\":7,\"full_name\":\"a\\u0000b\"}",
    };

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *rec = rf_json_load(cases[i], strlen(cases[i]), NULL);
        assert_non_null(rec);
        assert_int_equal(rf_map_record(&m, &m.b, rec, NULL, &r), 0);
        if (r.error == NULL)
            fail_msg("no record error for %s", cases[i]);
        assert_non_null(r.excerpt);
        rf_record_clear(&r);
        json_decref(rec);
    }
}

static void test_map_record_deleted_and_soft(void **ctx)
{
    struct cfg_mapping m;
    struct rf_record r;
    json_t *rec;

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    rec = rf_json_load("{\"id\":\"x\",\"deleted\":true}", 25, NULL);
    assert_int_equal(rf_map_record(&m, &m.b, rec, NULL, &r), 0);
    assert_true(r.deleted);
    rf_record_clear(&r);
    json_decref(rec);
    m.b.write.del_soft_field = "archived";
    rec = rf_json_load("{\"id\":\"x\",\"archived\":true}", 26, NULL);
    assert_int_equal(rf_map_record(&m, &m.b, rec, NULL, &r), 0);
    assert_true(r.deleted);
    rf_record_clear(&r);
    json_decref(rec);
}

static void test_map_record_side_a(void **ctx)
{
    struct cfg_mapping m;
    struct rf_record r;
    const char *text = "{\"id\":\"k\",\"name\":\"kept\",\"full_name\":\"ignored\"}";
    json_t *rec = rf_json_load(text, strlen(text), NULL);

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    m.a.feed = m.b.feed;
    assert_int_equal(rf_map_record(&m, &m.a, rec, NULL, &r), 0);
    assert_string_equal(field(&r, "name"), "kept");     /* side a: names stay */
    rf_record_clear(&r);
    json_decref(rec);
}

/* ---- pages ---- */

static void test_page_updated_since(void **ctx)
{
    struct cfg_mapping m;
    struct rf_page p;
    struct err e = { 0 };
    const char *body = "[{\"id\":1,\"full_name\":\"a\",\"updated_at\":\"2024-01-01T00:00:00.001Z\"},"
                       "{\"full_name\":\"no key\",\"updated_at\":\"2024-01-01T00:00:00.002Z\"},"
                       "{\"id\":\"2\",\"updated_at\":\"2024-01-01T00:00:00.002Z\",\"deleted\":true}]";

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    assert_int_equal(rf_parse_page(&m, &m.b, body, strlen(body), &p, &e), 0);
    assert_int_equal(p.n, 3);
    assert_null(p.recs[0].error);
    assert_non_null(p.recs[1].error);
    assert_true(strstr(p.recs[1].excerpt, "no key") != NULL);
    assert_true(p.recs[2].deleted);
    assert_string_equal(p.recs[2].key, "[\"2\"]");
    assert_null(p.last_seq);
    /* The record in error has its position too; read again at the same
     * (inclusive) cursor value, every record is known, also the one
     * without a key, so nothing is journaled or dead-lettered twice. */
    assert_string_equal(p.recs[1].cursor, "2024-01-01T00:00:00.002Z");
    {
        struct rf_cursor c;
        struct rf_page again;

        rf_cursor_init(&c);
        for (size_t i = 0; i < p.n; i++)
            assert_int_equal(rf_cursor_advance(&c, &p.recs[i]), 0);
        assert_string_equal(c.value, "2024-01-01T00:00:00.002Z");
        assert_int_equal(c.n_at, 2);
        assert_int_equal(rf_parse_page(&m, &m.b, body, strlen(body), &again, &e), 0);
        assert_false(rf_cursor_seen(&c, &again.recs[0]));   /* older value: not at the cursor */
        assert_true(rf_cursor_seen(&c, &again.recs[1]));
        assert_true(rf_cursor_seen(&c, &again.recs[2]));
        rf_page_free(&again);
        rf_cursor_clear(&c);
    }
    rf_page_free(&p);
    /* records under a pointer */
    m.b.feed.records = "/data/items";
    body = "{\"data\":{\"items\":[{\"id\":9}]}}";
    assert_int_equal(rf_parse_page(&m, &m.b, body, strlen(body), &p, &e), 0);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.recs[0].key, "[\"9\"]");
    rf_page_free(&p);
}

static void test_page_malformed(void **ctx)
{
    struct cfg_mapping m;
    struct rf_page p;
    struct err e;
    const char *bodies[] = {
        "[{\"id\":1,\"full_na", "<html><body>502 Bad Gateway</body></html>",
        "{\"not\":\"an array\"}", "", "null",
    };

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        memset(&e, 0, sizeof(e));
        assert_int_equal(rf_parse_page(&m, &m.b, bodies[i], strlen(bodies[i]), &p, &e),
                         -EPROTO);
        assert_true(e.msg[0] != '\0');
        assert_null(p.recs);
    }
    /* sequence: no last_seq and no seq on the entries */
    mapping(&m, CFG_FEED_SEQUENCE);
    memset(&e, 0, sizeof(e));
    assert_int_equal(rf_parse_page(&m, &m.b, "{\"results\":[{\"id\":\"1\"}]}", 24, &p, &e),
                     -EPROTO);
}

static void test_page_sequence(void **ctx)
{
    struct cfg_mapping m;
    struct rf_page p;
    struct err e = { 0 };
    const char *body =
        "{\"results\":["
        "{\"seq\":\"3-abc\",\"id\":\"a\",\"doc\":{\"_id\":\"a\",\"name\":\"A\",\"_rev\":\"2-x\"}},"
        "{\"seq\":\"4-def\",\"id\":\"b\",\"deleted\":true},"
        "{\"seq\":5,\"id\":\"c\",\"doc\":{\"_id\":\"c\",\"name\":\"C\"}},"
        "17],\"last_seq\":\"5-zzz\"}";
    static struct cfg_pair couch_fields[] = { { "id", "_id" }, { "name", "name" } };

    (void)ctx;
    mapping(&m, CFG_FEED_SEQUENCE);
    m.fields = couch_fields;
    m.nfields = 2;
    m.b.key = key_couch;
    m.b.write.revision_field = "_rev";
    assert_int_equal(rf_parse_page(&m, &m.b, body, strlen(body), &p, &e), 0);
    assert_int_equal(p.n, 4);
    assert_string_equal(p.recs[0].key, "[\"a\"]");
    assert_string_equal(field(&p.recs[0], "name"), "A");
    assert_string_equal(p.recs[0].cursor, "3-abc");
    assert_string_equal(p.recs[0].rev, "2-x");
    assert_true(p.recs[1].deleted);
    assert_string_equal(p.recs[1].key, "[\"b\"]");     /* from the entry's id */
    assert_string_equal(p.recs[2].cursor, "5");
    assert_non_null(p.recs[3].error);                 /* not an object */
    assert_string_equal(p.last_seq, "5-zzz");
    rf_page_free(&p);
    /* an empty page keeps its last_seq; a number is taken as its text */
    body = "{\"results\":[],\"last_seq\":42}";
    assert_int_equal(rf_parse_page(&m, &m.b, body, strlen(body), &p, &e), 0);
    assert_int_equal(p.n, 0);
    assert_string_equal(p.last_seq, "42");
    rf_page_free(&p);
}

/* ---- the cursor ---- */

static struct rf_record rec_at(const char *cursor, const char *key)
{
    struct rf_record r = { 0 };

    r.cursor = (char *)cursor;
    r.key = (char *)key;
    return r;
}

static void test_cursor(void **ctx)
{
    struct rf_cursor c, d;
    struct rf_record r1 = rec_at("t1", "[\"1\"]"), r2 = rec_at("t2", "[\"2\"]"),
                     r3 = rec_at("t2", "[\"3\"]"), r2again = rec_at("t2", "[\"2\"]"),
                     r2later = rec_at("t3", "[\"2\"]"), nocur = rec_at(NULL, "[\"9\"]");
    char *saved;

    (void)ctx;
    rf_cursor_init(&c);
    assert_false(rf_cursor_seen(&c, &r1));
    assert_int_equal(rf_cursor_advance(&c, &r1), 0);
    assert_string_equal(c.value, "t1");
    assert_int_equal(c.n_at, 1);
    assert_int_equal(rf_cursor_advance(&c, &r2), 0);
    assert_int_equal(rf_cursor_advance(&c, &r3), 0);
    assert_string_equal(c.value, "t2");
    assert_int_equal(c.n_at, 2);
    /* the inclusive cursor brings t2 records back: they are skipped */
    assert_true(rf_cursor_seen(&c, &r2again));
    assert_int_equal(rf_cursor_advance(&c, &r2again), 0);
    assert_int_equal(c.n_at, 2);
    /* the same key at a newer value is a new change */
    assert_false(rf_cursor_seen(&c, &r2later));
    assert_false(rf_cursor_seen(&c, &r1));
    /* no cursor value: the cursor stays */
    assert_int_equal(rf_cursor_advance(&c, &nocur), 0);
    assert_string_equal(c.value, "t2");
    saved = rf_cursor_save(&c);
    assert_non_null(saved);
    assert_int_equal(rf_cursor_load(&d, saved), 0);
    assert_string_equal(d.value, "t2");
    assert_int_equal(d.n_at, 2);
    assert_int_equal(d.nseen, 2);
    assert_true(rf_cursor_seen(&d, &r3));
    free(saved);
    rf_cursor_clear(&d);
    assert_int_equal(rf_cursor_copy(&d, &c), 0);
    assert_true(rf_cursor_seen(&d, &r2));
    rf_cursor_clear(&d);
    rf_cursor_clear(&c);
    assert_int_equal(rf_cursor_load(&d, "not json"), -EINVAL);
    assert_int_equal(rf_cursor_load(&d, "{\"cursor\":5}"), -EINVAL);
    assert_int_equal(rf_cursor_load(&d, "{\"cursor\":null}"), 0);
    assert_null(d.value);
    rf_cursor_clear(&d);
}

static void test_feed_query(void **ctx)
{
    struct cfg_mapping m;
    struct strbuf q;
    static struct cfg_pair params[] = { { "_sort", "updated_at,id" }, { "a b", "c&d" } };

    (void)ctx;
    mapping(&m, CFG_FEED_UPDATED_SINCE);
    strbuf_init(&q);
    assert_int_equal(rf_feed_query(&m.b.feed, NULL, 100, 0, &q), 0);
    assert_string_equal(strbuf_cstr(&q), "limit=100");
    /* the cursor goes back exactly as the server wrote it, URL-encoded */
    m.b.feed.offset_param = "offset";
    m.b.feed.params = params;
    m.b.feed.nparams = 2;
    assert_int_equal(rf_feed_query(&m.b.feed, "2024-01-02T03:04:05.6+01:00", 50, 3, &q), 0);
    assert_string_equal(strbuf_cstr(&q),
        "updated_at_gte=2024-01-02T03%3A04%3A05.6%2B01%3A00&limit=50&offset=3"
        "&_sort=updated_at%2Cid&a%20b=c%26d");
    mapping(&m, CFG_FEED_SEQUENCE);
    assert_int_equal(rf_feed_query(&m.b.feed, "17-g3fa2c1", 10, 5, &q), 0);
    assert_string_equal(strbuf_cstr(&q), "since=17-g3fa2c1&limit=10");
    strbuf_free(&q);
}

/* ---- numbers, times, comparison, bodies ---- */

static void test_numbers(void **ctx)
{
    char n[128];

    (void)ctx;
    assert_true(rf_is_json_number("0"));
    assert_true(rf_is_json_number("-12.50e+3"));
    assert_false(rf_is_json_number("01"));
    assert_false(rf_is_json_number("1."));
    assert_false(rf_is_json_number("NaN"));
    assert_false(rf_is_json_number(""));
    assert_false(rf_is_json_number(" 1"));
    assert_true(rf_number_exact("12.50"));
    assert_true(rf_number_exact("123456789012345"));
    assert_true(rf_number_exact("9007199254740992"));       /* 2^53 */
    assert_false(rf_number_exact("9007199254740993"));      /* 2^53 + 1 */
    assert_false(rf_number_exact("12345678901234567.25"));
    assert_false(rf_number_exact("0.12345678901234567891"));
    assert_true(rf_number_exact("0.1"));
    assert_true(rf_number_exact("1e300"));
    assert_false(rf_number_exact("1e400"));
    assert_false(rf_number_exact("1e-400"));
    assert_true(rf_number_exact("-0.000"));
    assert_true(rf_decimal_norm("12.50", n, sizeof(n)));
    assert_string_equal(n, "+125e2");
    assert_true(rf_decimal_norm("1.25e1", n, sizeof(n)));
    assert_string_equal(n, "+125e2");
    assert_true(rf_decimal_norm("-0.0050", n, sizeof(n)));
    assert_string_equal(n, "-5e-2");
    assert_true(rf_decimal_norm("000", n, sizeof(n)));
    assert_string_equal(n, "0");
    assert_false(rf_decimal_norm("12a", n, sizeof(n)));
    assert_false(rf_decimal_norm("e5", n, sizeof(n)));
}

static void test_times(void **ctx)
{
    int64_t a, b;
    char out[64];

    (void)ctx;
    assert_int_equal(rf_parse_time("1970-01-01T00:00:00Z", &a), 0);
    assert_true(a == 0);
    assert_int_equal(rf_parse_time("2024-01-02T03:04:05.678Z", &a), 0);
    assert_int_equal(rf_parse_time("2024-01-02 04:04:05.678+01", &b), 0);
    assert_true(a == b);
    assert_int_equal(rf_parse_time("2024-01-02T01:34:05.678-01:30", &b), 0);
    assert_true(a == b);
    assert_int_equal(rf_parse_time("2024-01-02 03:04:05.678123456", &b), 0);
    assert_true(b == a + 123);
    assert_int_equal(rf_parse_time("2024-13-02T03:04:05Z", &a), -EINVAL);
    assert_int_equal(rf_parse_time("2024-01-02", &a), -EINVAL);
    assert_int_equal(rf_parse_time("2024-01-02T03:04:05Zjunk", &a), -EINVAL);
    assert_int_equal(rf_parse_time(NULL, &a), -EINVAL);
    assert_true(rf_pg_ts_to_rfc3339("2024-01-02 03:04:05.6+00", out, sizeof(out)));
    assert_string_equal(out, "2024-01-02T03:04:05.6+00:00");
    assert_true(rf_pg_ts_to_rfc3339("2024-01-02 03:04:05-05:30", out, sizeof(out)));
    assert_string_equal(out, "2024-01-02T03:04:05-05:30");
    assert_false(rf_pg_ts_to_rfc3339("2024-01-02 03:04:05", out, sizeof(out)));
    assert_false(rf_pg_ts_to_rfc3339("2024-01-02T03:04:05+00", out, sizeof(out)));
    assert_false(rf_pg_ts_to_rfc3339("hello", out, sizeof(out)));
}

static void test_value_equal(void **ctx)
{
    json_t *rec = json_pack("{s:s,s:s,s:s,s:n,s:s}", "balance", "12.5", "vip", "true",
                            "at", "2024-01-02T03:04:05Z", "email", "zip", "01234");
    json_t *kinds = json_pack("{s:s,s:s,s:s,s:s,s:s}", "balance", "n", "vip", "b",
                              "at", "s", "email", "z", "zip", "s");
    json_t *want = json_pack("{s:s,s:s,s:s,s:n,s:s}", "balance", "12.50", "vip", "t",
                             "at", "2024-01-02 03:04:05+00", "email", "zip", "01234");

    (void)ctx;
    assert_true(rf_value_equal(NULL, NULL, RF_NULL));
    assert_false(rf_value_equal("", NULL, RF_NULL));
    assert_true(rf_value_equal("12.50", "12.5", RF_NUMBER));
    assert_false(rf_value_equal("12.50", "12.5", RF_STRING));   /* strings compare as text */
    assert_false(rf_value_equal("007", "7", RF_STRING));
    assert_true(rf_value_equal("f", "false", RF_BOOL));
    assert_false(rf_value_equal("t", "false", RF_BOOL));
    assert_true(rf_fields_equal(rec, kinds, want));
    json_object_set_new(want, "zip", json_string("1234"));
    assert_false(rf_fields_equal(rec, kinds, want));
    json_decref(rec);
    json_decref(kinds);
    json_decref(want);
}

static void test_body_value(void **ctx)
{
    struct strbuf b;
    const char *why = NULL;
    json_t *v;

    (void)ctx;
    strbuf_init(&b);
#define BODY(text, k, num, want) do {                                          \
        v = (text) ? json_string(text) : json_null();                          \
        strbuf_reset(&b);                                                      \
        assert_int_equal(rf_body_value(&b, v, k, num, &why), 0);               \
        assert_string_equal(strbuf_cstr(&b), want);                            \
        json_decref(v);                                                        \
    } while (0)
    BODY(NULL, 0, CFG_NUM_NUMBER, "null");
    BODY("12.50", 0, CFG_NUM_NUMBER, "12.50");          /* exact text as a number */
    BODY("12.50", RF_NUMBER, CFG_NUM_STRING, "\"12.50\"");
    BODY("12.50", RF_STRING, CFG_NUM_NUMBER, "\"12.50\"");   /* the server keeps strings */
    BODY("01234", 0, CFG_NUM_NUMBER, "\"01234\"");       /* not a JSON number */
    BODY("t", RF_BOOL, CFG_NUM_NUMBER, "true");
    BODY("false", RF_BOOL, CFG_NUM_NUMBER, "false");
    BODY("t", 0, CFG_NUM_NUMBER, "\"t\"");
    BODY("{\"a\":1.10}", RF_JSON, CFG_NUM_NUMBER, "{\"a\":1.10}");
    BODY("not json", RF_JSON, CFG_NUM_NUMBER, "\"not json\"");
    BODY("2024-01-02 03:04:05+00", 0, CFG_NUM_NUMBER, "\"2024-01-02T03:04:05+00:00\"");
    BODY("say \"hi\"", 0, CFG_NUM_NUMBER, "\"say \\\"hi\\\"\"");
    /* a number a JSON parser would round is refused, not rounded */
    v = json_string("12345678901234567.25");
    assert_int_equal(rf_body_value(&b, v, RF_NUMBER, CFG_NUM_NUMBER, &why), -ERANGE);
    assert_non_null(why);
    strbuf_reset(&b);
    assert_int_equal(rf_body_value(&b, v, RF_NUMBER, CFG_NUM_STRING, &why), 0);
    assert_string_equal(strbuf_cstr(&b), "\"12345678901234567.25\"");
    json_decref(v);
    strbuf_free(&b);
}

static void test_url_escape(void **ctx)
{
    struct strbuf b;

    (void)ctx;
    strbuf_init(&b);
    rf_url_escape(&b, "a/b c?d=é", strlen("a/b c?d=é"));
    assert_string_equal(strbuf_cstr(&b), "a%2Fb%20c%3Fd%3D%C3%A9");
    strbuf_free(&b);
}

static void test_classify(void **ctx)
{
    struct rest_resp r = { .retry_after_ms = -1 };

    (void)ctx;
    r.status = 200;
    assert_int_equal(rest_classify(&r), REST_OK);
    r.status = 201;
    assert_int_equal(rest_classify(&r), REST_OK);
    r.status = 404;
    assert_int_equal(rest_classify(&r), REST_NOT_FOUND);
    r.status = 409;
    assert_int_equal(rest_classify(&r), REST_CONFLICT);
    r.status = 412;
    assert_int_equal(rest_classify(&r), REST_CONFLICT);
    r.status = 429;
    assert_int_equal(rest_classify(&r), REST_RATE_LIMITED);
    r.status = 503;
    assert_int_equal(rest_classify(&r), REST_TRANSIENT);
    r.retry_after_ms = 1000;
    assert_int_equal(rest_classify(&r), REST_RATE_LIMITED);
    r.retry_after_ms = -1;
    r.status = 500;
    assert_int_equal(rest_classify(&r), REST_TRANSIENT);
    r.status = 408;
    assert_int_equal(rest_classify(&r), REST_TRANSIENT);
    r.status = 422;
    assert_int_equal(rest_classify(&r), REST_PERMANENT);
    r.status = 301;
    assert_int_equal(rest_classify(&r), REST_PERMANENT);
    r.status = 0;
    r.curl_code = 28;           /* timeout */
    assert_int_equal(rest_classify(&r), REST_TRANSIENT);
    r.status = 200;
    r.curl_code = 23;
    r.too_big = true;
    assert_int_equal(rest_classify(&r), REST_PERMANENT);
    assert_string_equal(rest_class_name(REST_CONFLICT), "conflict");
}

static void test_url(void **ctx)
{
    struct cfg_endpoint ep = { 0 };
    struct strbuf b;

    (void)ctx;
    strbuf_init(&b);
    ep.base_url = "http://h:1/api/";
    assert_int_equal(rest_http_url(&b, &ep, "/customers", "limit=1"), 0);
    assert_string_equal(strbuf_cstr(&b), "http://h:1/api/customers?limit=1");
    assert_int_equal(rest_http_url(&b, &ep, "/c?x=1", "limit=1"), 0);
    assert_string_equal(strbuf_cstr(&b), "http://h:1/api/c?x=1&limit=1");
    assert_int_equal(rest_http_url(&b, &ep, "/c", ""), 0);
    assert_string_equal(strbuf_cstr(&b), "http://h:1/api/c");
    strbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_exact_numbers),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_value_kinds),
        cmocka_unit_test(test_pointer),
        cmocka_unit_test(test_map_record),
        cmocka_unit_test(test_map_record_errors),
        cmocka_unit_test(test_map_record_deleted_and_soft),
        cmocka_unit_test(test_map_record_side_a),
        cmocka_unit_test(test_page_updated_since),
        cmocka_unit_test(test_page_malformed),
        cmocka_unit_test(test_page_sequence),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_feed_query),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_value_equal),
        cmocka_unit_test(test_body_value),
        cmocka_unit_test(test_url_escape),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
