/* test_resolver.c: conflict resolution: value equality, timestamps,
 * staleness, every strategy by table, the plugin ABI, and a seeded
 * property test of determinism and convergence.
 *
 * Built twice: as unit test "resolver", and by tests/plugins as
 * "resolver_plugins" with PLUGIN_DIR set, which adds the dlopen tests. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "resolver/resolver.h"

/* ---- helpers ---- */

static void mapping_init(struct cfg_mapping *m, enum cfg_strategy s)
{
    memset(m, 0, sizeof(*m));
    m->name = (char *)"customers";
    m->a.endpoint = (char *)"app";
    m->a.table = (char *)"public.customers";
    m->b.endpoint = (char *)"crm";
    m->b.resource = (char *)"/customers";
    m->strategy = s;
    m->fallback = CFG_STRAT_LWW;
    m->priority = 'a';
    m->deletes = CFG_DEL_PROPAGATE;
}

static json_t *J(const char *text)
{
    json_error_t je;
    json_t *v;

    if (text == NULL)
        return NULL;
    v = json_loads(text, JSON_DECODE_ANY, &je);
    if (v == NULL)
        fail_msg("bad test json %s: %s", text, je.text);
    return v;
}

static char *dump(const json_t *v)
{
    return v == NULL ? strdup("(none)")
                     : json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

/* ---- values ---- */

static void test_values_equal(void **ctx)
{
    static const struct { const char *x, *y; bool eq; } t[] = {
        { "12.50", "12.5", true }, { "12.5", "12.50", true },
        { "1e2", "100", true }, { "1E+2", "100.000", true },
        { "1.0e-1", "0.1", true }, { "0.10", "1e-1", true },
        { "-0", "0", true }, { "0.0", "-0.000", true }, { "0", "0e5", true },
        { "007", "7", true }, { ".5", "0.5", true }, { "5.", "5", true },
        { "-12.30", "-12.3", true }, { "123456789012345678901234567890.1",
          "123456789012345678901234567890.10", true },
        { "abc", "abc", true }, { "", "", true }, { "NaN", "NaN", true },
        { "abc", "ABC", false }, { "12.5", "12.51", false }, { "-1", "1", false },
        { "1e2", "1e3", false }, { "100", "10", false }, { "0.1", "0.01", false },
        { "+1", "1", false }, { " 1", "1", false }, { "1 ", "1", false },
        { "1e", "1", false }, { "-", "0", false }, { ".", "0", false },
        { "1e9999999999", "1e9999999999", true },
        { "10e999999999", "1e1000000000", false },
        { "12.5", "", false }, { "0x10", "16", false },
        /* Beyond double precision: no rounding through floating point. */
        { "9007199254740993", "9007199254740992", false },
        { "0.1000000000000000055511151231257827", "0.1", false },
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (resolve_values_equal(t[i].x, t[i].y) != t[i].eq)
            fail_msg("values_equal(\"%s\", \"%s\") != %d", t[i].x, t[i].y, t[i].eq);
        if (resolve_values_equal(t[i].y, t[i].x) != t[i].eq)
            fail_msg("values_equal(\"%s\", \"%s\") != %d", t[i].y, t[i].x, t[i].eq);
    }
    assert_true(resolve_values_equal(NULL, NULL));
    assert_false(resolve_values_equal(NULL, ""));
    assert_false(resolve_values_equal("0", NULL));
}

static void test_parse_timestamp(void **ctx)
{
    static const struct { const char *s; int64_t us; } ok[] = {
        { "2026-11-27 10:00:00.123+00", INT64_C(1795773600123000) },
        { "2026-11-27T10:00:00.123Z", INT64_C(1795773600123000) },
        { "2026-11-27T10:00:00.123000Z", INT64_C(1795773600123000) },
        { "2026-11-27T12:00:00.123+02:00", INT64_C(1795773600123000) },
        { "2026-11-27 05:00:00.123-0500", INT64_C(1795773600123000) },
        { "2026-11-27 10:00:00.1234569", INT64_C(1795773600123456) },
        { "2026-11-27 10:00:00", INT64_C(1795773600000000) },
        { "2026-11-27 10:00", INT64_C(1795773600000000) },
        { "2026-11-27 10:00:00 +00:00", INT64_C(1795773600000000) },
        { "2026-11-27", INT64_C(1795737600000000) },
        { "1970-01-01T00:00:00Z", 0 },
        { "1969-12-31T23:59:59.999999Z", -1 },
        { "2024-02-29T12:30:45.5+05:30", INT64_C(1709190045500000) },
        { "2000-03-01T00:00:00-08:00", INT64_C(951897600000000) },
        { "0001-01-01T00:00:00Z", INT64_C(-62135596800000000) },
        { "9999-12-31T23:59:59.999999Z", INT64_C(253402300799999999) },
    };
    static const char *const bad[] = {
        "", "garbage", "2026-13-01", "2026-02-29", "2026-11-31", "2026-11-27T25:00",
        "2026-11-27 10:00:00.123+00 extra", "2026-11-27T10", "26-11-27",
        "2026-11-27T10:00:00.Z", "2026-11-27T10:00:61", "0000-01-01",
        "2026-11-27T10:00:00+1", "1795773600",
    };
    int64_t us;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        us = 0;
        if (resolve_parse_timestamp(ok[i].s, &us) != 0)
            fail_msg("parse \"%s\" failed", ok[i].s);
        if (us != ok[i].us)
            fail_msg("parse \"%s\": %" PRId64 " != %" PRId64, ok[i].s, us, ok[i].us);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (resolve_parse_timestamp(bad[i], &us) != -EINVAL)
            fail_msg("parse \"%s\" should fail", bad[i]);
    assert_int_equal(resolve_parse_timestamp(NULL, &us), -EINVAL);
}

static void test_version(void **ctx)
{
    struct cfg_mapping m;
    json_t *f = J("{\"ts\":\"2026-11-27T10:00:00Z\",\"bad\":\"x\",\"n\":null}");
    struct resolve_side s = { .fields = f, .version_us = 42 };

    mapping_init(&m, CFG_STRAT_LWW);
    assert_int_equal(resolve_version(&m, &s), 42);
    m.timestamp_field = (char *)"ts";
    assert_int_equal(resolve_version(&m, &s), INT64_C(1795773600000000));
    m.timestamp_field = (char *)"bad";      /* unparseable: the source version */
    assert_int_equal(resolve_version(&m, &s), 42);
    m.timestamp_field = (char *)"n";        /* null */
    assert_int_equal(resolve_version(&m, &s), 42);
    m.timestamp_field = (char *)"missing";  /* not sent */
    assert_int_equal(resolve_version(&m, &s), 42);
    m.timestamp_field = (char *)"ts";
    s.deleted = true;                       /* a delete has no fields */
    assert_int_equal(resolve_version(&m, &s), 42);
    json_decref(f);
}

/* ---- staleness (G5) ---- */

static void test_stale(void **ctx)
{
    json_t *bf = J("{\"name\":\"A\",\"bal\":\"12.50\"}");
    json_t *same = J("{\"bal\":\"12.5\"}"), *other = J("{\"name\":\"B\"}");
    struct resolve_base base = { .fields = bf, .version_a_us = 100, .version_b_us = 50 };
    struct resolve_base tomb = { .version_a_us = 300, .version_b_us = 250, .tombstone = true };
    struct resolve_side s = { .fields = other };

    assert_false(resolve_is_stale(NULL, 'a', 0));
    assert_true(resolve_is_stale(&base, 'a', 99));
    assert_false(resolve_is_stale(&base, 'a', 100));
    assert_false(resolve_is_stale(&base, 'b', 99));
    assert_true(resolve_is_stale(&base, 'b', 49));
    /* Tombstones: an older update never resurrects; a newer one is new. */
    assert_true(resolve_is_stale(&tomb, 'a', 299));
    assert_false(resolve_is_stale(&tomb, 'a', 301));

    s.version_us = 10;
    assert_int_equal(resolve_check(NULL, 'a', &s), RESOLVE_FRESH_NEW);
    assert_int_equal(resolve_check(&base, 'a', &s), RESOLVE_FRESH_STALE);
    s.version_us = 101;
    assert_int_equal(resolve_check(&base, 'a', &s), RESOLVE_FRESH_CHANGE);
    /* Same state (by value, fields not sent unchanged): twice, or an echo. */
    s.fields = same;
    s.version_us = 100;
    assert_int_equal(resolve_check(&base, 'a', &s), RESOLVE_FRESH_DUPLICATE);
    s.version_us = 120;
    assert_int_equal(resolve_check(&base, 'a', &s), RESOLVE_FRESH_ECHO);
    s.deleted = true;
    assert_int_equal(resolve_check(&base, 'a', &s), RESOLVE_FRESH_CHANGE);
    /* Against a tombstone. */
    s.version_us = 200;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_STALE);
    s.deleted = false;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_STALE);
    s.version_us = 301;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_NEW);
    /* The other side's delete is newer than this side's write (b deleted
     * at 250 after a's write at 200): stale, not a new record. */
    tomb.version_a_us = 100;
    s.version_us = 200;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_STALE);
    s.version_us = 251;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_NEW);
    tomb.version_a_us = 300;
    s.deleted = true;
    s.version_us = 300;
    assert_int_equal(resolve_check(&tomb, 'a', &s), RESOLVE_FRESH_DUPLICATE);
    s.version_us = 250;
    assert_int_equal(resolve_check(&tomb, 'b', &s), RESOLVE_FRESH_DUPLICATE);
    json_decref(bf);
    json_decref(same);
    json_decref(other);
}

/* ---- an in-process plugin through the ABI (resolver_plugin_wrap) ---- */

/* Per field the greatest value (absent < null < text, bytewise) wins; a
 * record beats a delete; symmetric in a and b. */
static int greatest_abi(void)
{
    return TANDEM_RESOLVER_ABI_VERSION;
}

static const struct tandem_field *tf_find(const struct tandem_record *r, const char *n)
{
    for (size_t i = 0; i < r->nfields; i++)
        if (strcmp(r->fields[i].name, n) == 0)
            return &r->fields[i];
    return NULL;
}

static int tf_cmp(const struct tandem_field *x, const struct tandem_field *y)
{
    int rx = x == NULL ? 0 : x->is_null ? 1 : 2, ry = y == NULL ? 0 : y->is_null ? 1 : 2;

    if (rx != ry || rx < 2)
        return rx - ry;
    return strcmp(x->value, y->value);
}

static int greatest_resolve(const struct tandem_resolve_input *in,
                            struct tandem_resolve_output *out)
{
    const struct tandem_record *r[2] = { &in->a, &in->b };

    if (in->abi_version != TANDEM_RESOLVER_ABI_VERSION || !in->a.present ||
        !in->b.present || in->a.endpoint == NULL || in->key == NULL)
        return 7;
    if (in->a.deleted || in->b.deleted) {
        out->choice = in->a.deleted ? TANDEM_CHOICE_B : TANDEM_CHOICE_A;
        return 0;
    }
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < r[s]->nfields; i++) {
            const struct tandem_field *f = &r[s]->fields[i];
            const struct tandem_field *g = tf_find(r[1 - s], f->name);

            if (i > 0 && strcmp(r[s]->fields[i - 1].name, f->name) >= 0)
                return 8;   /* fields must come sorted */
            if (tf_cmp(f, g) >= 0 &&
                out->set_field(out->host, f->name, f->value, f->is_null) != 0)
                return 9;
        }
    out->choice = TANDEM_CHOICE_MERGED;
    snprintf(out->explanation, sizeof(out->explanation), "greatest values");
    return 0;
}

/* Misbehaving ones: error, unknown field, undecided field, bad choice. */
static int mode_resolve(const struct tandem_resolve_input *in,
                        struct tandem_resolve_output *out)
{
    const char *key = in->key;

    if (strcmp(key, "fail") == 0) {
        snprintf(out->explanation, sizeof(out->explanation), "cannot decide");
        return 3;
    }
    if (strcmp(key, "unknown") == 0) {
        out->set_field(out->host, "nosuch", "x", 0);
        out->choice = TANDEM_CHOICE_MERGED;
        return 0;
    }
    if (strcmp(key, "undecided") == 0) {
        out->choice = TANDEM_CHOICE_MERGED;
        return 0;
    }
    if (strcmp(key, "park") == 0) {
        out->choice = TANDEM_CHOICE_PARK;
        return 0;
    }
    if (strcmp(key, "delete") == 0) {
        out->choice = TANDEM_CHOICE_DELETE;
        return 0;
    }
    if (strcmp(key, "b") == 0) {
        out->choice = TANDEM_CHOICE_B;
        return 0;
    }
    out->choice = 42;
    return 0;
}

static int future_abi(void)
{
    return TANDEM_RESOLVER_ABI_VERSION + 1;
}

static struct resolver_plugin *greatest_plugin(void)
{
    struct resolver_plugin *p = NULL;
    struct err e = {0};

    if (resolver_plugin_wrap("greatest", greatest_abi, greatest_resolve, &p, &e) != 0)
        fail_msg("wrap: %s", e.msg);
    return p;
}

/* ---- table-driven strategies ---- */

#define DEL NULL
#define NONE NULL
#define TOMB "T"

struct tcase {
    const char *name;
    enum cfg_strategy strat;
    enum cfg_strategy fallback;
    char prio;
    const char *ts;
    enum cfg_deletes deletes;
    const char *ep_a, *ep_b;
    const char *base;           /* NONE, TOMB or a record */
    int64_t bva, bvb;
    const char *a;              /* DEL or a record */
    int64_t va;
    const char *b;
    int64_t vb;
    enum resolve_outcome outcome;
    const char *result;         /* DEL or a record; ignored unless decided */
    int write_a, write_b;
    const char *rule;
    char winner;
    const char *explain;        /* expected explanation, or NULL: unchecked */
};

#define BASE3 "{\"name\":\"A\",\"email\":\"a@x\",\"bal\":\"10\"}"

static const struct tcase tcases[] = {
    /* last_write_wins */
    { "lww a newer", CFG_STRAT_LWW, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 10, 10,
      "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"10\"}", 200,
      "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"10\"}", 0, 1,
      "last_write_wins", 'a',
      "[{\"field\":\"bal\",\"rule\":\"equal\",\"taken_from\":\"both_equal\"},"
      "{\"field\":\"email\",\"rule\":\"equal\",\"taken_from\":\"both_equal\"},"
      "{\"field\":\"name\",\"rule\":\"last_write_wins\",\"taken_from\":\"a\"}]" },
    { "lww b newer", CFG_STRAT_LWW, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 10, 10, "{\"name\":\"A2\"}", 100, "{\"name\":\"B2\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "last_write_wins", 'b',
      "[{\"field\":\"bal\",\"rule\":\"unchanged\",\"taken_from\":\"base\"},"
      "{\"field\":\"email\",\"rule\":\"unchanged\",\"taken_from\":\"base\"},"
      "{\"field\":\"name\",\"rule\":\"last_write_wins\",\"taken_from\":\"b\"}]" },
    { "lww tie: greater endpoint name (crm > app) wins", CFG_STRAT_LWW, 0, 'a',
      NULL, 0, "app", "crm", NONE, 0, 0, "{\"n\":\"A\"}", 100, "{\"n\":\"B\"}", 100,
      RESOLVE_DECIDED, "{\"n\":\"B\"}", 1, 0, "last_write_wins", 'b', NULL },
    { "lww tie: greater endpoint name (zeta > alpha) wins", CFG_STRAT_LWW, 0, 'a',
      NULL, 0, "zeta", "alpha", NONE, 0, 0, "{\"n\":\"A\"}", 100, "{\"n\":\"B\"}", 100,
      RESOLVE_DECIDED, "{\"n\":\"A\"}", 0, 1, "last_write_wins", 'a', NULL },
    { "lww tie, same endpoint: greater collection wins", CFG_STRAT_LWW, 0, 'a',
      NULL, 0, "pg", "pg", NONE, 0, 0, "{\"n\":\"A\"}", 100, "{\"n\":\"B\"}", 100,
      RESOLVE_DECIDED, "{\"n\":\"A\"}", 0, 1, "last_write_wins", 'a', NULL },
    { "lww delete newer than update", CFG_STRAT_LWW, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 10, 10, DEL, 200, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, DEL, 0, 1, "last_write_wins", 'a',
      "[{\"field\":null,\"rule\":\"last_write_wins\",\"taken_from\":\"a\"}]" },
    { "lww update newer than delete", CFG_STRAT_LWW, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 10, 10, DEL, 100, "{\"name\":\"B2\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "last_write_wins", 'b', NULL },
    { "lww delete vs update tie: endpoint crm (b) wins", CFG_STRAT_LWW, 0, 'a',
      NULL, 0, NULL, NULL, BASE3, 10, 10, DEL, 100, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "last_write_wins", 'b', NULL },
    { "lww timestamp_field overrides source versions", CFG_STRAT_LWW, 0, 'a', "ts",
      0, NULL, NULL, NONE, 0, 0,
      "{\"n\":\"A\",\"ts\":\"2026-01-01 10:00:00+00\"}", 500,
      "{\"n\":\"B\",\"ts\":\"2026-01-01T10:00:00.000001Z\"}", 100,
      RESOLVE_DECIDED, "{\"n\":\"B\",\"ts\":\"2026-01-01T10:00:00.000001Z\"}", 1, 0,
      "last_write_wins", 'b', NULL },
    { "lww timestamps equal across zones: tie by endpoint", CFG_STRAT_LWW, 0, 'a',
      "ts", 0, "zeta", "alpha", NONE, 0, 0,
      "{\"n\":\"A\",\"ts\":\"2026-01-01 12:00:00+02\"}", 1,
      "{\"n\":\"B\",\"ts\":\"2026-01-01T10:00:00Z\"}", 2,
      RESOLVE_DECIDED, "{\"n\":\"A\",\"ts\":\"2026-01-01 12:00:00+02\"}", 0, 1,
      "last_write_wins", 'a', NULL },
    { "lww unchanged TOAST field comes from base", CFG_STRAT_LWW, 0, 'a', NULL, 0,
      NULL, NULL, "{\"name\":\"A\",\"bio\":\"long\"}", 10, 10,
      "{\"name\":\"A2\"}", 200, "{\"name\":\"B\",\"bio\":\"x\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"bio\":\"long\"}", 0, 1,
      "last_write_wins", 'a', NULL },
    { "lww field the winner lacks is filled from the other", CFG_STRAT_LWW, 0, 'a',
      NULL, 0, NULL, NULL, NONE, 0, 0,
      "{\"name\":\"A\"}", 200, "{\"name\":\"B\",\"extra\":\"E\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"A\",\"extra\":\"E\"}", 1, 1,
      "last_write_wins", 'a',
      "[{\"field\":\"extra\",\"rule\":\"fill_from_other\",\"taken_from\":\"b\"},"
      "{\"field\":\"name\",\"rule\":\"last_write_wins\",\"taken_from\":\"a\"}]" },
    { "lww null is a value, absent is unchanged", CFG_STRAT_LWW, 0, 'a', NULL, 0,
      NULL, NULL, "{\"x\":\"1\",\"y\":\"2\"}", 10, 10,
      "{\"x\":null}", 200, "{\"y\":\"3\"}", 100,
      RESOLVE_DECIDED, "{\"x\":null,\"y\":\"2\"}", 0, 1, "last_write_wins", 'a', NULL },
    { "equal by numeric value: nothing written", CFG_STRAT_LWW, 0, 'a', NULL, 0,
      NULL, NULL, NONE, 0, 0, "{\"bal\":\"12.50\",\"n\":\"x\"}", 200,
      "{\"bal\":\"12.5\",\"n\":\"x\"}", 100,
      RESOLVE_DECIDED, "{\"bal\":\"12.5\",\"n\":\"x\"}", 0, 0, "equal", 0,
      "[{\"field\":\"bal\",\"rule\":\"equal\",\"taken_from\":\"both_equal\"},"
      "{\"field\":\"n\",\"rule\":\"equal\",\"taken_from\":\"both_equal\"}]" },
    { "1e2 equals 100", CFG_STRAT_MANUAL, 0, 'a', NULL, 0, NULL, NULL, NONE, 0, 0,
      "{\"q\":\"1e2\"}", 1, "{\"q\":\"100\"}", 2,
      RESOLVE_DECIDED, "{\"q\":\"100\"}", 0, 0, "equal", 0, NULL },
    { "both deleted", CFG_STRAT_LWW, 0, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      DEL, 5, DEL, 6, RESOLVE_DECIDED, DEL, 0, 0, "equal", 0,
      "[{\"field\":null,\"rule\":\"equal\",\"taken_from\":\"both_equal\"}]" },
    /* source_priority */
    { "priority a beats a newer b", CFG_STRAT_PRIORITY, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 1, 1, "{\"name\":\"A2\"}", 100, "{\"name\":\"B2\",\"bal\":\"9\"}", 900,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"10\"}", 0, 1,
      "source_priority", 'a', NULL },
    { "priority b: a's delete loses", CFG_STRAT_PRIORITY, 0, 'b', NULL, 0, NULL, NULL,
      BASE3, 1, 1, DEL, 900, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "source_priority", 'b', NULL },
    { "priority a: a's delete wins", CFG_STRAT_PRIORITY, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 1, 1, DEL, 1, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, DEL, 0, 1, "source_priority", 'a', NULL },
    /* field_merge */
    { "merge: one-side changes from both sides", CFG_STRAT_FIELD_MERGE, CFG_STRAT_LWW,
      'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"10\"}", 100,
      "{\"name\":\"A\",\"email\":\"b@x\",\"bal\":\"10.00\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"b@x\",\"bal\":\"10\"}", 1, 1,
      "field_merge", 0,
      "[{\"field\":\"bal\",\"rule\":\"equal\",\"taken_from\":\"both_equal\"},"
      "{\"field\":\"email\",\"rule\":\"one_side_changed\",\"taken_from\":\"b\"},"
      "{\"field\":\"name\",\"rule\":\"one_side_changed\",\"taken_from\":\"a\"}]" },
    { "merge: both changed a field: fallback lww per field", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_LWW, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"name\":\"A2\",\"email\":\"a2@x\"}", 300,
      "{\"name\":\"B2\",\"bal\":\"11\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"a2@x\",\"bal\":\"11\"}", 1, 1,
      "field_merge", 0,
      "[{\"field\":\"bal\",\"rule\":\"one_side_changed\",\"taken_from\":\"b\"},"
      "{\"field\":\"email\",\"rule\":\"one_side_changed\",\"taken_from\":\"a\"},"
      "{\"field\":\"name\",\"rule\":\"last_write_wins\",\"taken_from\":\"a\"}]" },
    { "merge: both changed to equal values", CFG_STRAT_FIELD_MERGE, CFG_STRAT_MANUAL,
      'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"bal\":\"12.50\",\"name\":\"A2\"}", 300, "{\"bal\":\"12.5\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"12.5\"}", 0, 1,
      "field_merge", 0, NULL },
    { "merge: fallback source_priority b per field", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_PRIORITY, 'b', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"name\":\"A2\",\"email\":\"a2@x\"}", 300, "{\"name\":\"B2\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a2@x\",\"bal\":\"10\"}", 1, 1,
      "field_merge", 0, NULL },
    { "merge: fallback manual parks", CFG_STRAT_FIELD_MERGE, CFG_STRAT_MANUAL, 'a',
      NULL, 0, NULL, NULL, BASE3, 1, 1, "{\"name\":\"A2\"}", 300,
      "{\"name\":\"B2\",\"bal\":\"3\"}", 200, RESOLVE_PARK, NULL, 0, 0, "manual", 0,
      "[{\"field\":\"bal\",\"rule\":\"parked\",\"taken_from\":null},"
      "{\"field\":\"email\",\"rule\":\"unchanged\",\"taken_from\":\"base\"},"
      "{\"field\":\"name\",\"rule\":\"parked\",\"taken_from\":null}]" },
    { "merge: fallback manual, one-side changes only", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_MANUAL, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"name\":\"A2\"}", 300, "{\"bal\":\"3\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"email\":\"a@x\",\"bal\":\"3\"}", 1, 1,
      "field_merge", 0, NULL },
    { "merge: TOAST field not sent by a, changed by b", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_LWW, 'a', NULL, 0, NULL, NULL, "{\"name\":\"A\",\"bio\":\"long\"}",
      1, 1, "{\"name\":\"A2\"}", 300, "{\"name\":\"A\",\"bio\":\"longer\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"A2\",\"bio\":\"longer\"}", 1, 1, "field_merge", 0,
      NULL },
    { "merge: null vs absent", CFG_STRAT_FIELD_MERGE, CFG_STRAT_LWW, 'a', NULL, 0,
      NULL, NULL, "{\"x\":\"1\",\"y\":\"2\"}", 1, 1, "{\"x\":null}", 300, "{}", 200,
      RESOLVE_DECIDED, "{\"x\":null,\"y\":\"2\"}", 0, 1, "field_merge", 0,
      "[{\"field\":\"x\",\"rule\":\"one_side_changed\",\"taken_from\":\"a\"},"
      "{\"field\":\"y\",\"rule\":\"unchanged\",\"taken_from\":\"base\"}]" },
    { "merge: field new on one side", CFG_STRAT_FIELD_MERGE, CFG_STRAT_LWW, 'a', NULL,
      0, NULL, NULL, "{\"x\":\"1\"}", 1, 1, "{\"x\":\"1\"}", 300,
      "{\"x\":\"2\",\"z\":\"9\"}", 200,
      RESOLVE_DECIDED, "{\"x\":\"2\",\"z\":\"9\"}", 1, 0, "field_merge", 0, NULL },
    { "merge: delete vs update: fallback lww, delete newer", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_LWW, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      DEL, 300, "{\"name\":\"B2\"}", 200,
      RESOLVE_DECIDED, DEL, 0, 1, "field_merge", 'a', NULL },
    { "merge: delete vs update: fallback lww, update newer", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_LWW, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      DEL, 100, "{\"name\":\"B2\"}", 200,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "field_merge", 'b', NULL },
    { "merge: delete vs unchanged record: delete", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_PRIORITY, 'b', NULL, 0, NULL, NULL, BASE3, 1, 1,
      "{\"bal\":\"10.0\"}", 900, DEL, 200, RESOLVE_DECIDED, DEL, 1, 0, "field_merge",
      'b', "[{\"field\":null,\"rule\":\"one_side_changed\",\"taken_from\":\"b\"}]" },
    { "merge: delete vs update: fallback manual parks", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_MANUAL, 'a', NULL, 0, NULL, NULL, BASE3, 1, 1,
      DEL, 300, "{\"name\":\"B2\"}", 200, RESOLVE_PARK, NULL, 0, 0, "manual", 0,
      "[{\"field\":null,\"rule\":\"parked\",\"taken_from\":null}]" },
    { "merge: no base: fallback decides the whole record", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_LWW, 'a', NULL, 0, NULL, NULL, NONE, 0, 0,
      "{\"n\":\"A\",\"m\":\"1\"}", 100, "{\"n\":\"B\"}", 200,
      RESOLVE_DECIDED, "{\"n\":\"B\",\"m\":\"1\"}", 1, 1, "field_merge", 'b', NULL },
    { "merge: tombstone, b recreated: new record", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_PRIORITY, 'a', NULL, 0, NULL, NULL, TOMB, 50, 50,
      DEL, 50, "{\"n\":\"B\"}", 200,
      RESOLVE_DECIDED, "{\"n\":\"B\"}", 1, 0, "field_merge", 'b', NULL },
    { "merge: tombstone, both recreated: fallback", CFG_STRAT_FIELD_MERGE,
      CFG_STRAT_PRIORITY, 'a', NULL, 0, NULL, NULL, TOMB, 50, 50,
      "{\"n\":\"A\"}", 60, "{\"n\":\"B\"}", 200,
      RESOLVE_DECIDED, "{\"n\":\"A\"}", 0, 1, "field_merge", 'a', NULL },
    /* manual */
    { "manual parks a conflict", CFG_STRAT_MANUAL, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 1, 1, "{\"name\":\"A2\"}", 300, DEL, 200, RESOLVE_PARK, NULL, 0, 0,
      "manual", 0, NULL },
    /* deletes: ignore */
    { "deletes ignore: the record survives a newer delete", CFG_STRAT_LWW, 0, 'a',
      NULL, CFG_DEL_IGNORE, NULL, NULL, BASE3, 1, 1, DEL, 900, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, "{\"name\":\"B2\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "deletes_ignored", 'b', NULL },
    { "deletes soft resolves like propagate", CFG_STRAT_LWW, 0, 'a', NULL,
      CFG_DEL_SOFT, NULL, NULL, BASE3, 1, 1, DEL, 900, "{\"name\":\"B2\"}", 100,
      RESOLVE_DECIDED, DEL, 0, 1, "last_write_wins", 'a', NULL },
    /* plugin (in-process "greatest value" resolver) */
    { "plugin merges per field", CFG_STRAT_PLUGIN, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 1, 1, "{\"name\":\"Z\",\"bal\":\"1\"}", 1, "{\"name\":\"B\",\"bal\":\"2\"}",
      2, RESOLVE_DECIDED, "{\"name\":\"Z\",\"email\":\"a@x\",\"bal\":\"2\"}", 1, 1,
      "plugin", 0,
      "[{\"field\":\"bal\",\"rule\":\"plugin\",\"taken_from\":\"b\"},"
      "{\"field\":\"email\",\"rule\":\"plugin\",\"taken_from\":\"base\"},"
      "{\"field\":\"name\",\"rule\":\"plugin\",\"taken_from\":\"a\"}]" },
    { "plugin: a record beats a delete", CFG_STRAT_PLUGIN, 0, 'a', NULL, 0, NULL, NULL,
      BASE3, 1, 1, DEL, 9, "{\"name\":\"B\"}", 2,
      RESOLVE_DECIDED, "{\"name\":\"B\",\"email\":\"a@x\",\"bal\":\"10\"}", 1, 0,
      "plugin", 'b', NULL },
};

static void load_case(const struct tcase *t, struct cfg_mapping *m,
                      struct resolve_base *base, struct resolve_side *a,
                      struct resolve_side *b)
{
    mapping_init(m, t->strat);
    m->fallback = t->fallback;
    m->priority = t->prio;
    m->timestamp_field = (char *)t->ts;
    m->deletes = t->deletes;
    if (t->ep_a != NULL)
        m->a.endpoint = (char *)t->ep_a;
    if (t->ep_b != NULL)
        m->b.endpoint = (char *)t->ep_b;
    memset(base, 0, sizeof(*base));
    base->version_a_us = t->bva;
    base->version_b_us = t->bvb;
    if (t->base != NULL && strcmp(t->base, TOMB) == 0)
        base->tombstone = true;
    else
        base->fields = J(t->base);
    *a = (struct resolve_side){ .fields = J(t->a), .deleted = t->a == NULL,
                                .version_us = t->va, .commit_us = t->va };
    *b = (struct resolve_side){ .fields = J(t->b), .deleted = t->b == NULL,
                                .version_us = t->vb, .commit_us = t->vb };
}

static void test_table(void **ctx)
{
    struct resolver_plugin *p = greatest_plugin();

    for (size_t i = 0; i < sizeof(tcases) / sizeof(tcases[0]); i++) {
        const struct tcase *t = &tcases[i];
        struct cfg_mapping m;
        struct resolve_base base;
        struct resolve_side a, b;
        struct resolve_result r;
        int rc;

        load_case(t, &m, &base, &a, &b);
        rc = resolve(&m, p, "[\"1\"]", t->base != NULL ? &base : NULL, &a, &b, &r);
        if (rc != 0)
            fail_msg("%s: rc %d: %s", t->name, rc, r.detail);
        if (r.outcome != t->outcome)
            fail_msg("%s: outcome %d != %d (%s)", t->name, r.outcome, t->outcome,
                     r.detail);
        if (strcmp(r.rule, t->rule) != 0)
            fail_msg("%s: rule %s != %s", t->name, r.rule, t->rule);
        if (r.detail[0] == '\0')
            fail_msg("%s: no detail", t->name);
        if (t->outcome == RESOLVE_DECIDED) {
            json_t *want = J(t->result);
            char *got_s = dump(r.fields), *want_s = dump(want);

            if (r.deleted != (t->result == NULL) ||
                (t->result == NULL ? r.fields != NULL : !json_equal(r.fields, want)))
                fail_msg("%s: result %s (deleted %d) != %s", t->name, got_s,
                         r.deleted, want_s);
            if (r.write_a != t->write_a || r.write_b != t->write_b)
                fail_msg("%s: writes a=%d b=%d != a=%d b=%d", t->name, r.write_a,
                         r.write_b, t->write_a, t->write_b);
            if (r.winner != t->winner)
                fail_msg("%s: winner '%c' != '%c'", t->name, r.winner ? r.winner : '0',
                         t->winner ? t->winner : '0');
            free(got_s);
            free(want_s);
            json_decref(want);
        } else {
            assert_null(r.fields);
            assert_false(r.write_a || r.write_b);
        }
        assert_true(json_is_array(r.explain));
        if (t->explain != NULL) {
            json_t *want = J(t->explain);
            char *got_s = dump(r.explain);

            if (!json_equal(r.explain, want))
                fail_msg("%s: explain %s != %s", t->name, got_s, t->explain);
            free(got_s);
            json_decref(want);
        }
        resolve_result_clear(&r);
        assert_null(r.fields);
        json_decref((json_t *)base.fields);
        json_decref((json_t *)a.fields);
        json_decref((json_t *)b.fields);
    }
    resolve_result_clear(NULL);
    resolver_plugin_free(p);
}

static void test_errors(void **ctx)
{
    struct cfg_mapping m;
    json_t *ok = J("{\"n\":\"A\"}"), *num = J("{\"n\":5}"), *arr = J("[]");
    struct resolve_side a = { .fields = ok, .version_us = 1 };
    struct resolve_side b = { .fields = num, .version_us = 2 };
    struct resolve_base base = { .fields = arr };
    struct resolve_result r;

    mapping_init(&m, CFG_STRAT_LWW);
    assert_int_equal(resolve(&m, NULL, "k", NULL, &a, &b, &r), -EINVAL);
    assert_int_equal(r.outcome, RESOLVE_ERROR);
    assert_non_null(strstr(r.detail, "side b field n: value must be text or null"));
    resolve_result_clear(&r);
    b.fields = ok;
    assert_int_equal(resolve(&m, NULL, "k", &base, &a, &b, &r), -EINVAL);
    assert_non_null(strstr(r.detail, "base record is not an object"));
    resolve_result_clear(&r);
    /* A deleted side's fields are not looked at. */
    b.fields = num;
    b.deleted = true;
    assert_int_equal(resolve(&m, NULL, "k", NULL, &a, &b, &r), 0);
    resolve_result_clear(&r);
    b.deleted = false;
    b.fields = J("{\"n\":\"B\"}");
    m.strategy = CFG_STRAT_PLUGIN;
    assert_int_equal(resolve(&m, NULL, "k", NULL, &a, &b, &r), -EINVAL);
    assert_int_equal(r.outcome, RESOLVE_ERROR);
    assert_non_null(strstr(r.detail, "without a loaded plugin"));
    resolve_result_clear(&r);
    m.strategy = CFG_STRAT_FIELD_MERGE;
    m.fallback = CFG_STRAT_PLUGIN;
    assert_int_equal(resolve(&m, NULL, "k", NULL, &a, &b, &r), -EINVAL);
    assert_non_null(strstr(r.detail, "fallback plugin is not supported"));
    resolve_result_clear(&r);
    m.strategy = (enum cfg_strategy)77;
    assert_int_equal(resolve(&m, NULL, "k", NULL, &a, &b, &r), -EINVAL);
    assert_int_equal(resolve(NULL, NULL, "k", NULL, &a, &b, &r), -EINVAL);
    resolve_result_clear(&r);
    json_decref((json_t *)b.fields);
    json_decref(ok);
    json_decref(num);
    json_decref(arr);
}

static void test_plugin_abi(void **ctx)
{
    struct resolver_plugin *p = NULL;
    struct err e = {0};
    struct cfg_mapping m;
    json_t *fa = J("{\"n\":\"A\"}"), *fb = J("{\"n\":\"B\"}");
    struct resolve_side a = { .fields = fa, .version_us = 1 };
    struct resolve_side b = { .fields = fb, .version_us = 2 };
    struct resolve_result r;

    assert_int_equal(resolver_plugin_wrap("future", future_abi, mode_resolve, &p, &e),
                     -EPROTO);
    assert_null(p);
    assert_non_null(strstr(e.msg, "plugin future: abi version 2, tandem needs 1"));
    assert_int_equal(resolver_plugin_wrap("nofn", greatest_abi, NULL, &p, &e), -ENOEXEC);
    assert_non_null(strstr(e.msg, "missing symbol tandem_resolve"));
    assert_int_equal(resolver_plugin_wrap("nov", NULL, mode_resolve, &p, &e), -ENOEXEC);
    assert_non_null(strstr(e.msg, "missing symbol tandem_resolver_abi_version"));
    assert_int_equal(resolver_plugin_wrap("modes", greatest_abi, mode_resolve, &p, &e), 0);
    mapping_init(&m, CFG_STRAT_PLUGIN);

    assert_int_equal(resolve(&m, p, "fail", NULL, &a, &b, &r), -EPROTO);
    assert_int_equal(r.outcome, RESOLVE_ERROR);
    assert_non_null(strstr(r.detail, "plugin modes: tandem_resolve failed (3): cannot decide"));
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "unknown", NULL, &a, &b, &r), -EPROTO);
    assert_non_null(strstr(r.detail, "unknown field or value: nosuch"));
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "undecided", NULL, &a, &b, &r), -EPROTO);
    assert_non_null(strstr(r.detail, "field n left undecided"));
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "bogus", NULL, &a, &b, &r), -EPROTO);
    assert_non_null(strstr(r.detail, "unknown choice 42"));
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "park", NULL, &a, &b, &r), 0);
    assert_int_equal(r.outcome, RESOLVE_PARK);
    assert_null(r.fields);
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "delete", NULL, &a, &b, &r), 0);
    assert_int_equal(r.outcome, RESOLVE_DECIDED);
    assert_true(r.deleted && r.write_a && r.write_b);
    resolve_result_clear(&r);
    assert_int_equal(resolve(&m, p, "b", NULL, &a, &b, &r), 0);
    assert_string_equal(json_string_value(json_object_get(r.fields, "n")), "B");
    assert_true(r.write_a && !r.write_b);
    resolve_result_clear(&r);
    resolver_plugin_free(p);
    resolver_plugin_free(NULL);
    json_decref(fa);
    json_decref(fb);
}

static void test_plugin_load_errors(void **ctx)
{
    struct resolver_plugin *p = (struct resolver_plugin *)&p;
    struct err e = {0};

    assert_int_equal(resolver_plugin_load("/nonexistent/dir/x.so", &p, &e), -ENOENT);
    assert_null(p);
    assert_non_null(strstr(e.msg, "plugin /nonexistent/dir/x.so: cannot load: "));
    assert_int_equal(resolver_plugin_load("", &p, &e), -ENOENT);
    /* A bare name is a file in the working directory, never a library search. */
    assert_int_equal(resolver_plugin_load("libc.so.6", &p, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "plugin libc.so.6: cannot load"));
    /* Not a shared object at all. */
    assert_int_equal(resolver_plugin_load("/etc/hostname", &p, &e), -ENOENT);
}

/* ---- property test ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    uint64_t x = rng_state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (uint32_t)((x * UINT64_C(2685821657736338717)) >> 33) % n;
}

static const char *const pnames[] = { "f0", "f1", "f2", "ts" };
#define NPNAMES 4
static const char *const pvals[] = {
    NULL /* json null */, "1", "1.0", "01", "x", "y", "12.50", "12.5", "", "abc",
    "-0", "0"
};
static const char *const ptimes[] = {
    "2026-01-01 10:00:00+00", "2026-01-01T10:00:00Z", "2026-01-01T12:00:00+02:00",
    "2026-01-01 10:00:00.000001+00", "2025-12-31T23:59:59Z", "not a time"
};

static json_t *rnd_value(const char *name)
{
    const char *v;

    if (strcmp(name, "ts") == 0 && rnd(4) != 0) {
        v = ptimes[rnd(sizeof(ptimes) / sizeof(ptimes[0]))];
        return json_string(v);
    }
    v = pvals[rnd(sizeof(pvals) / sizeof(pvals[0]))];
    return v == NULL ? json_null() : json_string(v);
}

struct pcase {
    struct cfg_mapping m;
    bool has_base;
    struct resolve_base base;
    struct resolve_side a, b;
};

static json_t *rnd_side_fields(const json_t *basef)
{
    json_t *o = json_object();

    for (int i = 0; i < NPNAMES; i++) {
        const json_t *bv = basef != NULL ? json_object_get(basef, pnames[i]) : NULL;

        switch (rnd(4)) {
        case 0:     /* not sent (unchanged TOAST) */
            break;
        case 1:     /* sent unchanged */
            if (bv != NULL) {
                json_object_set(o, pnames[i], (json_t *)bv);
                break;
            }
            /* fall through */
        default:
            json_object_set_new(o, pnames[i], rnd_value(pnames[i]));
        }
    }
    return o;
}

static void rnd_case(struct pcase *c, enum cfg_strategy s, enum cfg_strategy fb,
                     struct resolver_plugin *plugin)
{
    static const char *const eps[] = { "app", "crm", "zz" };
    static const char *const colls[] = { "public.t", "/t", "public.u" };
    uint32_t k = rnd(6);
    json_t *basef = NULL;

    (void)plugin;
    mapping_init(&c->m, s);
    c->m.fallback = fb;
    c->m.priority = rnd(2) ? 'a' : 'b';
    c->m.deletes = rnd(4) == 0 ? CFG_DEL_IGNORE : CFG_DEL_PROPAGATE;
    c->m.timestamp_field = rnd(2) ? (char *)"ts" : NULL;
    c->m.a.endpoint = (char *)eps[rnd(3)];
    c->m.b.endpoint = (char *)eps[rnd(3)];
    c->m.a.table = (char *)colls[rnd(3)];
    c->m.b.table = (char *)colls[rnd(3)];
    c->m.b.resource = NULL;
    memset(&c->base, 0, sizeof(c->base));
    c->has_base = k != 0;
    c->base.tombstone = k == 1;
    c->base.version_a_us = 100 * (1 + rnd(2));
    c->base.version_b_us = 100 * (1 + rnd(2));
    if (c->has_base && !c->base.tombstone) {
        basef = json_object();
        for (int i = 0; i < NPNAMES; i++)
            if (rnd(4) != 0)
                json_object_set_new(basef, pnames[i], rnd_value(pnames[i]));
        c->base.fields = basef;
    }
    for (int side = 0; side < 2; side++) {
        struct resolve_side *sd = side == 0 ? &c->a : &c->b;
        int64_t bv = side == 0 ? c->base.version_a_us : c->base.version_b_us;

        memset(sd, 0, sizeof(*sd));
        sd->deleted = rnd(5) == 0;
        sd->fields = sd->deleted && rnd(2) ? NULL : rnd_side_fields(basef);
        sd->version_us = bv + 50 * (int64_t)rnd(4) - 50;
        sd->commit_us = sd->version_us;
    }
}

static void free_case(struct pcase *c)
{
    json_decref((json_t *)c->base.fields);
    json_decref((json_t *)c->a.fields);
    json_decref((json_t *)c->b.fields);
}

static void swap_case(const struct pcase *c, struct pcase *s)
{
    *s = *c;
    s->m.a = c->m.b;
    s->m.b = c->m.a;
    s->m.priority = c->m.priority == 'a' ? 'b' : 'a';
    s->base.version_a_us = c->base.version_b_us;
    s->base.version_b_us = c->base.version_a_us;
    s->a = c->b;
    s->b = c->a;
}

/* The test's own view of a side's value (independent of the resolver). */
static const json_t *t_eff(const struct pcase *c, const struct resolve_side *s,
                           const char *n)
{
    const json_t *v;

    if (s->deleted)
        return NULL;
    v = json_object_get(s->fields, n);
    if (v == NULL && c->has_base && !c->base.tombstone)
        v = json_object_get(c->base.fields, n);
    return v;
}

static bool t_vequal(const json_t *x, const json_t *y)
{
    if (x == NULL || y == NULL)
        return x == y;
    if (json_is_null(x) || json_is_null(y))
        return json_is_null(x) && json_is_null(y);
    return resolve_values_equal(json_string_value(x), json_string_value(y));
}

/* The side ends as the result: equal when not written. */
static bool t_side_matches(const struct pcase *c, const struct resolve_side *s,
                           const struct resolve_result *r)
{
    if (r->deleted || s->deleted)
        return r->deleted && s->deleted;
    for (int i = 0; i < NPNAMES; i++)
        if (!t_vequal(t_eff(c, s, pnames[i]), json_object_get(r->fields, pnames[i])))
            return false;
    return true;
}

/* Explanation with taken_from a <-> b swapped. */
static char *explain_swapped(const json_t *ex)
{
    json_t *copy = json_deep_copy(ex);
    size_t i;
    json_t *e;
    char *s;

    json_array_foreach(copy, i, e) {
        const char *t = json_string_value(json_object_get(e, "taken_from"));

        if (t != NULL && strcmp(t, "a") == 0)
            json_object_set_new(e, "taken_from", json_string("b"));
        else if (t != NULL && strcmp(t, "b") == 0)
            json_object_set_new(e, "taken_from", json_string("a"));
    }
    s = dump(copy);
    json_decref(copy);
    return s;
}

static char *result_text(const struct resolve_result *r, bool swapped)
{
    char *f = dump(r->fields), *x = swapped ? explain_swapped(r->explain) : dump(r->explain);
    char *out = NULL;
    bool wa = swapped ? r->write_b : r->write_a, wb = swapped ? r->write_a : r->write_b;
    char w = r->winner;

    if (swapped && w != 0)
        w = w == 'a' ? 'b' : 'a';
    if (asprintf(&out, "outcome=%d deleted=%d writes=%d%d winner=%c rule=%s fields=%s "
                 "explain=%s", r->outcome, r->deleted, wa, wb, w ? w : '-', r->rule,
                 f, x) < 0)
        out = NULL;
    free(f);
    free(x);
    return out;
}

static const char *strat_label(enum cfg_strategy s, enum cfg_strategy fb)
{
    switch (s) {
    case CFG_STRAT_LWW: return "last_write_wins";
    case CFG_STRAT_PRIORITY: return "source_priority";
    case CFG_STRAT_MANUAL: return "manual";
    case CFG_STRAT_PLUGIN: return "plugin";
    case CFG_STRAT_FIELD_MERGE:
        return fb == CFG_STRAT_LWW ? "field_merge/lww" :
               fb == CFG_STRAT_PRIORITY ? "field_merge/priority" : "field_merge/manual";
    }
    return "?";
}

/* Checks one random case; returns NULL or what failed (static text). */
static const char *check_case(struct pcase *c, struct resolver_plugin *p,
                              char *why, size_t n)
{
    const struct resolve_base *bp = c->has_base ? &c->base : NULL;
    struct resolve_result r1, r2, rs;
    struct pcase sw;
    char *t1 = NULL, *t2 = NULL, *ts = NULL;
    const char *fail = NULL;
    int rc1, rc2, rcs;

    rc1 = resolve(&c->m, p, "[\"k\"]", bp, &c->a, &c->b, &r1);
    rc2 = resolve(&c->m, p, "[\"k\"]", bp, &c->a, &c->b, &r2);
    swap_case(c, &sw);
    rcs = resolve(&sw.m, p, "[\"k\"]", c->has_base ? &sw.base : NULL, &sw.a, &sw.b, &rs);
    t1 = result_text(&r1, false);
    t2 = result_text(&r2, false);
    ts = result_text(&rs, true);
    if (rc1 != 0 || r1.outcome == RESOLVE_ERROR) {
        snprintf(why, n, "error %d: %s", rc1, r1.detail);
        fail = why;
        goto out;
    }
    /* (1) Same inputs, same output (detail text included). */
    if (rc1 != rc2 || strcmp(t1, t2) != 0 || strcmp(r1.detail, r2.detail) != 0) {
        snprintf(why, n, "not deterministic:\n %s\n %s", t1, t2);
        fail = why;
        goto out;
    }
    /* (2) Relabelled sides: the same record, the same decisions. */
    if (rcs != rc1 || strcmp(t1, ts) != 0) {
        snprintf(why, n, "swapping sides changes the result:\n %s\n %s", t1, ts);
        fail = why;
        goto out;
    }
    if (r1.outcome == RESOLVE_PARK) {
        if (r1.fields != NULL || r1.write_a || r1.write_b)
            fail = "a parked key writes";
        else if (c->m.strategy != CFG_STRAT_MANUAL &&
                 !(c->m.strategy == CFG_STRAT_FIELD_MERGE &&
                   c->m.fallback == CFG_STRAT_MANUAL))
            fail = "parked without manual";
        goto out;
    }
    if (c->m.strategy == CFG_STRAT_MANUAL && strcmp(r1.rule, "equal") != 0 &&
        strcmp(r1.rule, "deletes_ignored") != 0) {
        fail = "manual decided a conflict";
        goto out;
    }
    /* (3) Convergence: a side not written already holds the result; the
     * result carries every field either side has. */
    if ((!r1.write_a && !t_side_matches(c, &c->a, &r1)) ||
        (!r1.write_b && !t_side_matches(c, &c->b, &r1))) {
        snprintf(why, n, "an unwritten side differs from the result: %s", t1);
        fail = why;
        goto out;
    }
    if (!r1.deleted) {
        for (int i = 0; i < NPNAMES; i++) {
            const char *f = pnames[i];

            if ((t_eff(c, &c->a, f) != NULL || t_eff(c, &c->b, f) != NULL) &&
                json_object_get(r1.fields, f) == NULL) {
                snprintf(why, n, "field %s missing from the result: %s", f, t1);
                fail = why;
                goto out;
            }
        }
    }
    if (c->m.deletes == CFG_DEL_IGNORE && r1.deleted && !(c->a.deleted && c->b.deleted)) {
        fail = "deletes ignored, but a delete won";
        goto out;
    }
    /* (4) field_merge takes what changed on one side only. */
    if (c->m.strategy == CFG_STRAT_FIELD_MERGE && c->has_base && !c->base.tombstone &&
        !c->a.deleted && !c->b.deleted) {
        for (int i = 0; i < NPNAMES; i++) {
            const char *f = pnames[i];
            const json_t *va = t_eff(c, &c->a, f), *vb = t_eff(c, &c->b, f);
            const json_t *vo = json_object_get(c->base.fields, f);
            const json_t *got = json_object_get(r1.fields, f);

            if ((t_vequal(vb, vo) && !t_vequal(got, va)) ||
                (t_vequal(va, vo) && !t_vequal(got, vb))) {
                snprintf(why, n, "field %s changed on one side was not taken: %s", f, t1);
                fail = why;
                goto out;
            }
        }
    }
    /* ... and at record level: a delete against an unchanged record, a
     * record against a side still deleted since the tombstone. */
    if (c->m.strategy == CFG_STRAT_FIELD_MERGE && c->has_base &&
        c->a.deleted != c->b.deleted && c->m.deletes != CFG_DEL_IGNORE) {
        const struct resolve_side *live = c->a.deleted ? &c->b : &c->a;
        bool unchanged = !c->base.tombstone;

        for (int i = 0; i < NPNAMES && unchanged; i++)
            unchanged = t_vequal(t_eff(c, live, pnames[i]),
                                 json_object_get(c->base.fields, pnames[i]));
        if ((c->base.tombstone && r1.deleted) || (unchanged && !r1.deleted)) {
            snprintf(why, n, "the one-side record change was not taken: %s", t1);
            fail = why;
            goto out;
        }
    }
    /* Whole-record strategies: the result is the winner's state. */
    if ((c->m.strategy == CFG_STRAT_LWW || c->m.strategy == CFG_STRAT_PRIORITY) &&
        strcmp(r1.rule, "equal") != 0 && strcmp(r1.rule, "deletes_ignored") != 0) {
        const struct resolve_side *w = r1.winner == 'a' ? &c->a : &c->b;
        const struct resolve_side *l = r1.winner == 'a' ? &c->b : &c->a;

        if (r1.winner != 'a' && r1.winner != 'b') {
            fail = "no winner";
            goto out;
        }
        if (c->m.strategy == CFG_STRAT_PRIORITY && r1.winner != c->m.priority) {
            fail = "priority side lost";
            goto out;
        }
        if (c->m.strategy == CFG_STRAT_LWW &&
            resolve_version(&c->m, w) < resolve_version(&c->m, l)) {
            fail = "the older write won";
            goto out;
        }
        if (w->deleted != r1.deleted) {
            fail = "the winner's delete state was not taken";
            goto out;
        }
        for (int i = 0; i < NPNAMES && !w->deleted; i++) {
            const json_t *vw = t_eff(c, w, pnames[i]);

            if (vw != NULL && !t_vequal(vw, json_object_get(r1.fields, pnames[i]))) {
                snprintf(why, n, "field %s is not the winner's: %s", pnames[i], t1);
                fail = why;
                goto out;
            }
        }
    }
out:
    free(t1);
    free(t2);
    free(ts);
    resolve_result_clear(&r1);
    resolve_result_clear(&r2);
    resolve_result_clear(&rs);
    return fail;
}

static void run_property(struct resolver_plugin *p, unsigned nseeds, bool plugin_only)
{
    static const struct { enum cfg_strategy s, fb; } strats[] = {
        { CFG_STRAT_LWW, CFG_STRAT_LWW }, { CFG_STRAT_PRIORITY, CFG_STRAT_LWW },
        { CFG_STRAT_FIELD_MERGE, CFG_STRAT_LWW },
        { CFG_STRAT_FIELD_MERGE, CFG_STRAT_PRIORITY },
        { CFG_STRAT_FIELD_MERGE, CFG_STRAT_MANUAL }, { CFG_STRAT_MANUAL, CFG_STRAT_LWW },
        { CFG_STRAT_PLUGIN, CFG_STRAT_LWW },
    };
    char why[4096];

    for (size_t k = 0; k < sizeof(strats) / sizeof(strats[0]); k++) {
        unsigned decided = 0, parked = 0, writes = 0;

        if (plugin_only && strats[k].s != CFG_STRAT_PLUGIN)
            continue;

        for (unsigned seed = 1; seed <= nseeds; seed++) {
            struct pcase c;
            const char *fail;
            char *sa, *sb, *sbase;

            rng_state = UINT64_C(0x9E3779B97F4A7C15) * (seed + 1000 * (k + 1));
            rnd_case(&c, strats[k].s, strats[k].fb, p);
            /* (5) Stale detection, G5. */
            if (resolve_is_stale(c.has_base ? &c.base : NULL, 'a', c.a.version_us) !=
                (c.has_base && c.a.version_us < c.base.version_a_us))
                fail_msg("%s seed %u: stale check", strat_label(strats[k].s, strats[k].fb),
                         seed);
            fail = check_case(&c, p, why, sizeof(why));
            if (fail != NULL) {
                sa = dump(c.a.deleted ? NULL : c.a.fields);
                sb = dump(c.b.deleted ? NULL : c.b.fields);
                sbase = dump(c.base.fields);
                fail_msg("%s seed %u: %s\n base %s%s (va %" PRId64 ", vb %" PRId64
                         ")\n a %s v%" PRId64 " ep %s\n b %s v%" PRId64 " ep %s",
                         strat_label(strats[k].s, strats[k].fb), seed, fail,
                         c.has_base ? "" : "none ",
                         c.base.tombstone ? "tombstone" : sbase,
                         c.base.version_a_us, c.base.version_b_us, sa, c.a.version_us,
                         c.m.a.endpoint, sb, c.b.version_us, c.m.b.endpoint);
            }
            {
                struct resolve_result r;

                resolve(&c.m, p, "k", c.has_base ? &c.base : NULL, &c.a, &c.b, &r);
                decided += r.outcome == RESOLVE_DECIDED;
                parked += r.outcome == RESOLVE_PARK;
                writes += r.write_a + r.write_b;
                resolve_result_clear(&r);
            }
            free_case(&c);
        }
        print_message("  %-22s %u seeds: %u decided, %u parked, %u side writes\n",
                      strat_label(strats[k].s, strats[k].fb), nseeds, decided, parked,
                      writes);
        /* The generator reaches the interesting outcomes. */
        assert_true(decided > 0);
        if (strats[k].s == CFG_STRAT_MANUAL)
            assert_true(parked > nseeds / 4);
    }
}

static void test_property(void **ctx)
{
    struct resolver_plugin *p = greatest_plugin();

    run_property(p, 5000, false);
    resolver_plugin_free(p);
}

/* ---- dlopen of the plugins built in tests/plugins ---- */

#ifdef PLUGIN_DIR
static void test_example_plugin(void **ctx)
{
    struct resolver_plugin *p = NULL;
    struct err e = {0};
    struct cfg_mapping m;
    json_t *bf = J("{\"name\":\"Ann\",\"city\":\"Oslo\",\"note\":null}");
    json_t *fa = J("{\"name\":\"Annabel\",\"city\":\"Rome\"}");
    json_t *fb = J("{\"name\":\"Anna\",\"city\":\"Paris\",\"note\":\"hi\"}");
    struct resolve_base base = { .fields = bf, .version_a_us = 1, .version_b_us = 1 };
    struct resolve_side a = { .fields = fa, .version_us = 5 };
    struct resolve_side b = { .fields = fb, .version_us = 6 };
    struct resolve_result r;
    json_t *want = J("{\"name\":\"Annabel\",\"city\":\"Paris\",\"note\":\"hi\"}");
    char cwd[4096];

    if (resolver_plugin_load(PLUGIN_DIR "/example_resolver.so", &p, &e) != 0)
        fail_msg("load: %s", e.msg);
    mapping_init(&m, CFG_STRAT_PLUGIN);
    assert_int_equal(resolve(&m, p, "[\"1\"]", &base, &a, &b, &r), 0);
    assert_int_equal(r.outcome, RESOLVE_DECIDED);
    assert_true(json_equal(r.fields, want));
    assert_true(r.write_a && r.write_b);
    assert_string_equal(r.rule, "plugin");
    assert_non_null(strstr(r.detail, "longer values from both sides"));
    resolve_result_clear(&r);
    /* A record beats a delete. */
    a.deleted = true;
    assert_int_equal(resolve(&m, p, "[\"1\"]", &base, &a, &b, &r), 0);
    assert_false(r.deleted);
    assert_true(r.write_a && !r.write_b);
    resolve_result_clear(&r);
    /* Determinism and convergence over random cases, via dlopen. */
    run_property(p, 5000, true);
    resolver_plugin_free(p);

    /* A bare name is looked up in the working directory. */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(PLUGIN_DIR), 0);
    assert_int_equal(resolver_plugin_load("example_resolver.so", &p, &e), 0);
    resolver_plugin_free(p);
    assert_int_equal(chdir(cwd), 0);
    json_decref(bf);
    json_decref(fa);
    json_decref(fb);
    json_decref(want);
}

static void test_broken_plugins(void **ctx)
{
    struct resolver_plugin *p = NULL;
    struct err e = {0};

    assert_int_equal(resolver_plugin_load(PLUGIN_DIR "/broken_resolver.so", &p, &e),
                     -ENOEXEC);
    assert_null(p);
    assert_non_null(strstr(e.msg, "broken_resolver.so: missing symbol tandem_resolve"));
    assert_int_equal(resolver_plugin_load(PLUGIN_DIR "/abi_mismatch_resolver.so", &p, &e),
                     -EPROTO);
    assert_null(p);
    assert_non_null(strstr(e.msg, "abi_mismatch_resolver.so: abi version 2, tandem needs 1"));
    assert_int_equal(resolver_plugin_load(PLUGIN_DIR "/missing_resolver.so", &p, &e),
                     -ENOENT);
    assert_non_null(strstr(e.msg, "missing_resolver.so: cannot load: "));
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_equal),
        cmocka_unit_test(test_parse_timestamp),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_stale),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_plugin_abi),
        cmocka_unit_test(test_plugin_load_errors),
        cmocka_unit_test(test_property),
#ifdef PLUGIN_DIR
        cmocka_unit_test(test_example_plugin),
        cmocka_unit_test(test_broken_plugins),
#endif
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
