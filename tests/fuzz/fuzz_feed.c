/* fuzz_feed.c: libFuzzer target for the REST feed page parser and what
 * runs on its output (connectors/rest/restfeed.c).
 *
 * The first input byte picks the feed: bit 0 the style (updated_since or
 * sequence), bit 1 records at the body's root or under "/data" (updated
 * since) / "/results" (sequence), bit 2 a revision field. The rest is the
 * page body, parsed as the poller parses it; every record is then run
 * through the cursor, canonical comparison and request-body code. Exact
 * JSON must survive a dump and reload unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/rest/restfeed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static volatile size_t sink;

static void touch(const char *s)
{
    if (s != NULL)
        sink += strlen(s);
}

static void setup(struct cfg_mapping *m, uint8_t sel)
{
    static struct cfg_pair fields[] = {
        { "id", "id" }, { "name", "full_name" }, { "amount", "amount" },
        { "updated_at", "updated_at" }, { "tags", "tags" },
    };
    static char *key[] = { "id" };

    memset(m, 0, sizeof(*m));
    m->name = "fuzz";
    m->fields = fields;
    m->nfields = sizeof(fields) / sizeof(fields[0]);
    m->timestamp_field = "updated_at";
    m->a.key = m->b.key = key;
    m->a.nkey = m->b.nkey = 1;
    m->b.resource = "/r";
    if (sel & 1) {
        m->b.feed.style = CFG_FEED_SEQUENCE;
        m->b.feed.records = (sel & 2) ? "/results" : "";
        m->b.feed.seq_field = "seq";
        m->b.feed.id_field = "id";
        m->b.feed.doc_field = "doc";
        m->b.feed.last_seq = "/last_seq";
        m->b.feed.since_param = "since";
    } else {
        m->b.feed.style = CFG_FEED_UPDATED_SINCE;
        m->b.feed.records = (sel & 2) ? "/data" : "";
        m->b.feed.cursor_field = "updated_at";
        m->b.feed.cursor_param = "updated_at_gte";
        m->b.feed.offset_param = "offset";
    }
    m->b.feed.limit_param = "limit";
    m->b.feed.deleted_field = "deleted";
    if (sel & 4)
        m->b.write.revision_field = "_rev";
}

/* dump(load(text)) is a fixed point after one round. */
static void roundtrip(const uint8_t *data, size_t size)
{
    json_t *a = rf_json_load((const char *)data, size, NULL), *b;
    struct strbuf x, y;

    if (a == NULL)
        return;
    strbuf_init(&x);
    strbuf_init(&y);
    rf_json_dump(a, &x);
    if (!x.failed) {
        b = rf_json_load(x.buf ? x.buf : "", x.len, NULL);
        CHECK(b != NULL);
        rf_json_dump(b, &y);
        CHECK(y.failed || (x.len == y.len && memcmp(x.buf, y.buf, x.len) == 0));
        json_decref(b);
    }
    strbuf_free(&x);
    strbuf_free(&y);
    json_decref(a);
}

static void use_record(const struct cfg_mapping *m, struct rf_cursor *c,
                       const struct rf_record *r)
{
    struct strbuf b;
    const char *name, *why;
    json_t *v;
    int64_t t;
    char norm[600];

    touch(r->key);
    touch(r->cursor);
    touch(r->rev);
    touch(r->error);
    touch(r->excerpt);
    if (r->error != NULL) {
        CHECK(r->excerpt == NULL || strlen(r->excerpt) <= RF_EXCERPT_MAX);
        return;
    }
    CHECK(r->key != NULL && r->key[0] == '[');
    CHECK(json_object_size(r->fields) == m->nfields);
    CHECK(rf_fields_equal(r->fields, r->kinds, r->fields));
    (void)rf_cursor_seen(c, r);
    (void)rf_cursor_advance(c, r);
    if (r->cursor != NULL)
        (void)rf_parse_time(r->cursor, &t);
    strbuf_init(&b);
    json_object_foreach(r->fields, name, v) {
        const char *k = json_string_value(json_object_get(r->kinds, name));
        const char *s = json_string_value(v);

        CHECK(k != NULL);
        if (s != NULL && k[0] == RF_NUMBER) {
            CHECK(rf_is_json_number(s));
            (void)rf_decimal_norm(s, norm, sizeof(norm));   /* false past 1e±1000000 */
            (void)rf_number_exact(s);
        }
        if (s != NULL)
            CHECK(rf_value_equal(s, s, k[0]));
        strbuf_reset(&b);
        why = NULL;
        if (rf_body_value(&b, v, k[0], CFG_NUM_NUMBER, &why) == 0 && !b.failed) {
            json_t *back = rf_json_load(b.buf, b.len, NULL);
            CHECK(back != NULL);
            json_decref(back);
        } else {
            CHECK(why != NULL || b.failed);
        }
    }
    strbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg_mapping m;
    struct rf_page p;
    struct rf_cursor c, d;
    struct err e = { 0 };
    struct strbuf q;
    char *saved;

    if (size < 1)
        return 0;
    setup(&m, data[0]);
    roundtrip(data + 1, size - 1);
    if (rf_parse_page(&m, &m.b, (const char *)data + 1, size - 1, &p, &e) != 0) {
        CHECK(p.recs == NULL && p.n == 0);
        return 0;
    }
    rf_cursor_init(&c);
    for (size_t i = 0; i < p.n; i++)
        use_record(&m, &c, &p.recs[i]);
    saved = rf_cursor_save(&c);
    if (saved != NULL) {
        CHECK(rf_cursor_load(&d, saved) == 0);
        CHECK((c.value == NULL) == (d.value == NULL));
        CHECK(c.value == NULL || strcmp(c.value, d.value) == 0);
        CHECK(c.nseen == d.nseen);
        rf_cursor_clear(&d);
        free(saved);
    }
    strbuf_init(&q);
    (void)rf_feed_query(&m.b.feed, m.b.feed.style == CFG_FEED_SEQUENCE ? p.last_seq : c.value,
                        100, c.n_at, &q);
    strbuf_free(&q);
    rf_cursor_clear(&c);
    rf_page_free(&p);
    return 0;
}
