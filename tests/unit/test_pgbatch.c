/* test_pgbatch.c: the multi-row statement buffer (connectors/pg/pgbatch.c):
 * which shapes may share a batch, rows and values (NULL, quotes,
 * backslashes, growth), the full-batch signal and column limits, held
 * keys, the parameters (an update's key arrays with their escapes), the
 * exact SQL of an insert and of an update, statement signatures, and
 * reset/free with reuse. No server: the SQL is quoted through a PGconn
 * that is only started (PQescapeIdentifier needs the object, not a
 * connection). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "connectors/pg/pgbatch.h"

static int mapping_a, mapping_b, side_a, side_b;    /* identities only */

/* ---- helpers ---- */

static struct pgbatch_shape shape(char kind, const char *const *cols, const char *const *types,
                                  size_t nkey, size_t nset, size_t nbase)
{
    struct pgbatch_shape sh = { kind, &mapping_a, &side_a, cols, types, nkey, nset, nbase };

    return sh;
}

/* Adds one row of n values (NULL: SQL NULL); returns end_row's result. */
static bool add_row(struct pgbatch *b, const struct pgbatch_shape *sh,
                    const char *const *vals, size_t n)
{
    size_t more = 0;

    for (size_t i = 0; i < n; i++)
        more += vals[i] ? strlen(vals[i]) + 1 : 0;
    assert_int_equal(pgbatch_begin_row(b, sh, more), 0);
    for (size_t i = 0; i < n; i++)
        pgbatch_put(b, vals[i], vals[i] ? strlen(vals[i]) : 0);
    return pgbatch_end_row(b);
}

/* The batch's parameters equal want[0..n) (NULL where NULL). */
static void check_params(struct pgbatch *b, const char *const *want, size_t n)
{
    const char *const *p = NULL;

    assert_int_equal(pgbatch_params(b, &p), (int)n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (want[i] == NULL)
            assert_null(p[i]);
        else if (p[i] == NULL || strcmp(p[i], want[i]) != 0)
            fail_msg("param %zu: got %s, want %s", i + 1, p[i] ? p[i] : "NULL", want[i]);
    }
}

static char *sig_of(const struct pgbatch *b, const char *mapping, char side)
{
    struct strbuf s;
    char *out;

    strbuf_init(&s);
    pgbatch_sig(b, mapping, side, &s);
    assert_false(s.failed);
    out = strdup(strbuf_cstr(&s));
    assert_non_null(out);
    strbuf_free(&s);
    return out;
}

/* ---- tests ---- */

static void test_fits(void **ctx)
{
    static const char *const cols[] = { "id", "v", "w", "x" };
    char id[] = "id", v[] = "v", w[] = "w";     /* equal strings, other storage */
    const char *same[] = { id, v, w };
    struct pgbatch b = { 0 };
    struct pgbatch_shape sh = shape(PGBATCH_UPDATE, cols, NULL, 1, 1, 1), o;

    o = shape(PGBATCH_INSERT, cols + 1, NULL, 0, 2, 0);
    assert_true(pgbatch_fits(&b, &o));      /* empty: anything */
    assert_false(add_row(&b, &sh, (const char *const[]){ "1", "a", "b" }, 3));
    assert_true(pgbatch_fits(&b, &sh));
    o = shape(PGBATCH_UPDATE, same, NULL, 1, 1, 1);
    assert_true(pgbatch_fits(&b, &o));

    o = sh, o.kind = PGBATCH_INSERT;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.m = &mapping_b;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.t = &side_b;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.nkey = 2, o.nset = 0;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.nkey = 2;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.nset = 2;
    assert_false(pgbatch_fits(&b, &o));
    o = sh, o.nbase = 2;
    assert_false(pgbatch_fits(&b, &o));
    for (size_t i = 0; i < 3; i++) {
        const char *changed[] = { id, v, w };

        changed[i] = "zz";
        o = shape(PGBATCH_UPDATE, changed, NULL, 1, 1, 1);
        assert_false(pgbatch_fits(&b, &o));
    }
    pgbatch_free(&b);
}

static void test_rows(void **ctx)
{
    static const char *const cols[] = { "id", "note" };
    struct pgbatch_shape sh = shape(PGBATCH_INSERT, cols, NULL, 0, 2, 0);
    struct pgbatch b = { 0 };
    const char *want[2 * PGBATCH_ROWS];
    char vals[PGBATCH_ROWS][2][128];

    /* ~13 KB of values: the text buffer grows past its first 4096 bytes. */
    for (size_t r = 0; r < PGBATCH_ROWS; r++) {
        snprintf(vals[r][0], sizeof(vals[r][0]), "%zu", r);
        memset(vals[r][1], 'a' + (int)(r % 26), 100);
        snprintf(vals[r][1] + 100, 28, "'q\"b\\%zu", r);
        want[2 * r] = vals[r][0];
        want[2 * r + 1] = r % 5 == 3 ? NULL : vals[r][1];
        assert_int_equal(add_row(&b, &sh, want + 2 * r, 2), r + 1 == PGBATCH_ROWS);
        assert_int_equal(b.nrows, r + 1);
    }
    check_params(&b, want, 2 * PGBATCH_ROWS);
    pgbatch_free(&b);
}

static void test_cols_limit(void **ctx)
{
    static const char *cols[PGBATCH_MAX_COLS + 1], *vals[PGBATCH_MAX_COLS];
    struct pgbatch b = { 0 };
    struct pgbatch_shape sh = shape(PGBATCH_INSERT, cols, NULL, 0, 0, 0);

    for (size_t i = 0; i <= PGBATCH_MAX_COLS; i++)
        cols[i] = "c";
    assert_int_equal(pgbatch_begin_row(&b, &sh, 0), -E2BIG);
    sh.nset = PGBATCH_MAX_COLS + 1;
    assert_int_equal(pgbatch_begin_row(&b, &sh, 0), -E2BIG);
    sh = shape(PGBATCH_UPDATE, cols, cols, 64, 64, 1);
    assert_int_equal(pgbatch_begin_row(&b, &sh, 0), -E2BIG);
    assert_int_equal(b.nrows, 0);
    assert_int_equal(b.kind, 0);

    for (size_t i = 0; i < PGBATCH_MAX_COLS; i++)
        vals[i] = i % 2 ? "v" : NULL;
    sh = shape(PGBATCH_INSERT, cols, NULL, 0, PGBATCH_MAX_COLS, 0);
    assert_false(add_row(&b, &sh, vals, PGBATCH_MAX_COLS));
    check_params(&b, vals, PGBATCH_MAX_COLS);
    pgbatch_free(&b);
}

static void test_holds_key(void **ctx)
{
    static const char *const cols[] = { "k1", "k2", "v" };
    static const char *const types[] = { "int8", "text", "text" };
    struct pgbatch_shape sh = shape(PGBATCH_UPDATE, cols, types, 2, 1, 0);
    struct pgbatch b = { 0 };

    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "1", "x" }));
    add_row(&b, &sh, (const char *const[]){ "1", "x", "a" }, 3);
    add_row(&b, &sh, (const char *const[]){ "2", "y", NULL }, 3);
    add_row(&b, &sh, (const char *const[]){ "3", NULL, "c" }, 3);
    assert_true(pgbatch_holds_key(&b, (const char *const[]){ "1", "x" }));
    assert_true(pgbatch_holds_key(&b, (const char *const[]){ "2", "y" }));
    assert_true(pgbatch_holds_key(&b, (const char *const[]){ "3", NULL }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "1", "y" }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "2", "x" }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "1", "xx" }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "4", "x" }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "3", "" }));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "a", "a" }));  /* not a value */
    pgbatch_free(&b);
}

static void test_update_params(void **ctx)
{
    static const char *const cols[] = { "k1", "k2", "v", "v" };
    static const char *const types[] = { "int8", "text", "text", "text" };
    struct pgbatch_shape sh = shape(PGBATCH_UPDATE, cols, types, 2, 1, 1);
    struct pgbatch b = { 0 };
    static const char *const want[] = {
        "1", "a\"b\\c", NULL, "old",
        "2", "x, {y}", "new", NULL,
        "{\"1\",\"2\"}", "{\"a\\\"b\\\\c\",\"x, {y}\"}",
    };

    add_row(&b, &sh, want, 4);
    add_row(&b, &sh, want + 4, 4);
    check_params(&b, want, 10);
    check_params(&b, want, 10);             /* again: the arrays are rebuilt */
    pgbatch_free(&b);
}

static void test_sql(void **ctx)
{
    static const char *const icols[] = { "id", "Na\"me" };
    static const char *const ucols[] = { "id", "v", "v" };
    static const char *const types[] = { "int8", "text", "text" };
    struct pgbatch_shape ins = shape(PGBATCH_INSERT, icols, NULL, 0, 2, 0);
    struct pgbatch_shape upd = shape(PGBATCH_UPDATE, ucols, types, 1, 1, 1);
    PGconn *c = PQconnectStart("host=127.0.0.1 port=1 connect_timeout=1");
    struct pgbatch b = { 0 };
    struct strbuf sql;

    assert_non_null(c);
    strbuf_init(&sql);
    add_row(&b, &ins, (const char *const[]){ "1", "a" }, 2);
    add_row(&b, &ins, (const char *const[]){ "2", NULL }, 2);
    pgbatch_sql(&b, c, "\"public\".\"t\"", &sql);
    assert_false(sql.failed);
    assert_string_equal(strbuf_cstr(&sql), "INSERT INTO \"public\".\"t\" (\"id\", \"Na\"\"me\") "
                                           "VALUES ($1, $2), ($3, $4)");

    pgbatch_reset(&b);
    add_row(&b, &upd, (const char *const[]){ "1", "b", "a" }, 3);
    add_row(&b, &upd, (const char *const[]){ "2", "d", "c" }, 3);
    pgbatch_sql(&b, c, "\"public\".\"t\"", &sql);
    assert_false(sql.failed);
    assert_string_equal(strbuf_cstr(&sql),
        "WITH d (c1, c2, c3) AS (VALUES ($1::int8, $2::text, $3::text), "
        "($4::int8, $5::text, $6::text)), "
        "u AS (UPDATE \"public\".\"t\" AS t SET \"v\" = d.c2 FROM d "
        "WHERE t.\"id\" = ANY($7) AND t.\"id\" = d.c1 AND "
        "((true AND t.\"v\" IS NOT DISTINCT FROM d.c3) OR "
        "(true AND t.\"v\" IS NOT DISTINCT FROM d.c2)) RETURNING 1) "
        "SELECT 1 / (count(*) = 2)::int FROM u");
    check_params(&b, (const char *const[]){ "1", "b", "a", "2", "d", "c", "{\"1\",\"2\"}" }, 7);

    strbuf_free(&sql);
    pgbatch_free(&b);
    PQfinish(c);
}

static void test_sig(void **ctx)
{
    static const char *const ab[] = { "ab", "c" }, *const a_bc[] = { "a", "bc" };
    struct pgbatch_shape ins = shape(PGBATCH_INSERT, ab, NULL, 0, 2, 0), o;
    struct pgbatch b = { 0 };
    const char *const row[] = { "1", "2" };
    char *one, *two, *s;

    add_row(&b, &ins, row, 2);
    one = sig_of(&b, "m", 'a');
    s = sig_of(&b, "m", 'a');
    assert_string_equal(one, s);            /* stable */
    free(s);
    s = sig_of(&b, "m", 'b');
    assert_string_not_equal(one, s);        /* side */
    free(s);
    add_row(&b, &ins, row, 2);
    two = sig_of(&b, "m", 'a');
    assert_string_not_equal(one, two);      /* row count */

    pgbatch_reset(&b);
    o = ins, o.kind = PGBATCH_UPDATE;       /* only the kind differs */
    add_row(&b, &o, row, 2);
    s = sig_of(&b, "m", 'a');
    assert_string_not_equal(one, s);
    free(s);

    pgbatch_reset(&b);
    o = shape(PGBATCH_INSERT, a_bc, NULL, 0, 2, 0);     /* same characters */
    add_row(&b, &o, row, 2);
    s = sig_of(&b, "m", 'a');
    assert_string_not_equal(one, s);
    free(s);
    free(one);
    free(two);
    pgbatch_free(&b);
}

static void test_reset_free(void **ctx)
{
    static const char *const icols[] = { "id", "v" };
    static const char *const ucols[] = { "k", "s", "t", "s", "t" };
    static const char *const types[] = { "int4", "text", "text", "text", "text" };
    struct pgbatch_shape ins = shape(PGBATCH_INSERT, icols, NULL, 0, 2, 0);
    struct pgbatch_shape upd = shape(PGBATCH_UPDATE, ucols, types, 1, 2, 2);
    struct pgbatch b = { 0 }, zero = { 0 };
    const char *const urow[] = { "7", "s1", NULL, "s0", "t0" };

    add_row(&b, &ins, (const char *const[]){ "1", "one" }, 2);
    add_row(&b, &ins, (const char *const[]){ "2", "two" }, 2);
    pgbatch_reset(&b);
    assert_int_equal(b.nrows, 0);
    assert_int_equal(b.kind, 0);
    assert_true(pgbatch_fits(&b, &upd));
    assert_false(pgbatch_holds_key(&b, (const char *const[]){ "1" }));

    assert_false(add_row(&b, &upd, urow, 5));
    assert_int_equal(b.kind, PGBATCH_UPDATE);
    assert_int_equal(b.ncols, 5);
    assert_false(pgbatch_fits(&b, &ins));
    assert_true(pgbatch_holds_key(&b, (const char *const[]){ "7" }));
    check_params(&b, (const char *const[]){ "7", "s1", NULL, "s0", "t0", "{\"7\"}" }, 6);

    pgbatch_free(&b);
    assert_memory_equal(&b, &zero, sizeof(b));
    add_row(&b, &ins, (const char *const[]){ NULL, "x" }, 2);
    check_params(&b, (const char *const[]){ NULL, "x" }, 2);
    pgbatch_free(&b);
    pgbatch_free(&b);                       /* twice: harmless */
    assert_memory_equal(&b, &zero, sizeof(b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits),
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_cols_limit),
        cmocka_unit_test(test_holds_key),
        cmocka_unit_test(test_update_params),
        cmocka_unit_test(test_sql),
        cmocka_unit_test(test_sig),
        cmocka_unit_test(test_reset_free),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
