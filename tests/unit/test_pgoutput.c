/* test_pgoutput.c: the pgoutput decoder against the captured fixtures in
 * tests/fixtures/pgoutput (decodings listed in MANIFEST.md), plus
 * truncated, bit-flipped and hand-made malformed input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/pg/pgoutput.h"

#ifndef FIXTURES_DIR
#error "FIXTURES_DIR must point at tests/fixtures"
#endif
#define PGO_DIR FIXTURES_DIR "/pgoutput/"

/* ---- fixture files ---- */

/* One message of a .hex fixture: header tokens and the decoded bytes. */
struct fxmsg {
    char lsn[32], xid[32], kind[32], dir[16];
    uint64_t lsn_val;           /* 0 when the LSN token is "-" */
    uint8_t *buf;
    size_t len;
};

struct fx {
    struct fxmsg *m;
    size_t n;
};

static int hexdigit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void chomp(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static uint8_t *unhex(const char *s, size_t *len)
{
    size_t n = strlen(s);
    uint8_t *out;

    assert_int_equal(n % 2, 0);
    out = malloc(n / 2 + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexdigit(s[2 * i]), lo = hexdigit(s[2 * i + 1]);

        assert_true(hi >= 0 && lo >= 0);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return out;
}

static struct fx *fx_load(const char *name)
{
    char path[512];
    struct fx *fx = calloc(1, sizeof(*fx));
    size_t cap = 0, n = 0;
    char *line = NULL;
    struct fxmsg cur;
    bool have_header = false;
    FILE *f;

    assert_non_null(fx);
    snprintf(path, sizeof(path), "%s%s", PGO_DIR, name);
    f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    while (getline(&line, &cap, f) > 0) {
        chomp(line);
        if (line[0] == '\0' || strncmp(line, "##", 2) == 0)
            continue;
        if (line[0] == '#') {
            memset(&cur, 0, sizeof(cur));
            sscanf(line, "# %31s %31s %31s %15s", cur.lsn, cur.xid, cur.kind,
                   cur.dir);
            if (pgo_lsn_parse(cur.lsn, &cur.lsn_val) < 0)
                cur.lsn_val = 0;
            have_header = true;
            continue;
        }
        assert_true(have_header);
        cur.buf = unhex(line, &cur.len);
        fx->m = realloc(fx->m, (n + 1) * sizeof(*fx->m));
        assert_non_null(fx->m);
        fx->m[n++] = cur;
        have_header = false;
    }
    free(line);
    fclose(f);
    fx->n = n;
    assert_true(n > 0);
    return fx;
}

static void fx_free(struct fx *fx)
{
    for (size_t i = 0; i < fx->n; i++)
        free(fx->m[i].buf);
    free(fx->m);
    free(fx);
}

/* The lines of the "Decoded:" block of a fixture's MANIFEST.md section. */
static char **manifest_lines(const char *fixture, size_t *count)
{
    char heading[128], *line = NULL, **out = NULL;
    size_t cap = 0, n = 0;
    int state = 0;      /* 0 heading, 1 "Decoded:", 2 fence, 3 in block */
    FILE *f = fopen(PGO_DIR "MANIFEST.md", "r");

    assert_non_null(f);
    snprintf(heading, sizeof(heading), "## %s", fixture);
    while (getline(&line, &cap, f) > 0) {
        chomp(line);
        if (state == 0 && strcmp(line, heading) == 0) {
            state = 1;
        } else if (state == 1 && strcmp(line, "Decoded:") == 0) {
            state = 2;
        } else if (state == 2 && strcmp(line, "```") == 0) {
            state = 3;
        } else if (state == 3 && strcmp(line, "```") == 0) {
            break;
        } else if (state == 3) {
            out = realloc(out, (n + 1) * sizeof(*out));
            assert_non_null(out);
            out[n++] = strdup(line);
        }
    }
    free(line);
    fclose(f);
    if (n == 0)
        fail_msg("no Decoded block for %s in MANIFEST.md", fixture);
    *count = n;
    return out;
}

static void lines_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* ---- rendering decoded messages like MANIFEST.md's listings ---- */

struct sb {
    char *p;
    size_t n, cap;
};

static void sb_printf(struct sb *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    int k;

    for (;;) {
        va_start(ap, fmt);
        k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0,
                      fmt, ap);
        va_end(ap);
        assert_true(k >= 0);
        if (b->p != NULL && (size_t)k < b->cap - b->n)
            break;
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
        if (b->n == 0)
            b->p[0] = '\0';
    }
    b->n += (size_t)k;
}

static void sb_reset(struct sb *b)
{
    b->n = 0;
    if (b->p != NULL)
        b->p[0] = '\0';
}

/* Python's repr() of a UTF-8 str or of bytes; long strings are shortened
 * to 40 characters plus "...(N chars)" as in the listing. */
static void sb_repr(struct sb *b, const char *s, size_t n, bool bytes)
{
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    size_t shown = n, chars = 0;

    for (size_t i = 0; i < n; i++)
        chars += bytes || ((uint8_t)s[i] & 0xc0) != 0x80;
    if (!bytes && chars > 1000)
        shown = 40;             /* the long value is ASCII hex */
    sb_printf(b, "%s%c", bytes ? "b" : "", q);
    for (size_t i = 0; i < shown; i++) {
        uint8_t ch = (uint8_t)s[i];

        if (ch == '\\')
            sb_printf(b, "\\\\");
        else if (ch == (uint8_t)q)
            sb_printf(b, "\\%c", q);
        else if (ch == '\t')
            sb_printf(b, "\\t");
        else if (ch == '\n')
            sb_printf(b, "\\n");
        else if (ch == '\r')
            sb_printf(b, "\\r");
        else if (ch < 0x20 || ch == 0x7f || (bytes && ch >= 0x80))
            sb_printf(b, "\\x%02x", ch);
        else
            sb_printf(b, "%c", ch);
    }
    if (shown < n)
        sb_printf(b, "...(%zu chars)", chars);
    sb_printf(b, "%c", q);
}

static void sb_cstr(struct sb *b, const char *s)
{
    sb_repr(b, s, strlen(s), false);
}

static void sb_lsn(struct sb *b, uint64_t lsn)
{
    char t[PGO_LSN_STRLEN];

    pgo_lsn_format(lsn, t);
    sb_printf(b, "%s", t);
}

/* datetime.isoformat() of a PostgreSQL timestamp, in UTC. */
static void sb_ts(struct sb *b, int64_t pg_us)
{
    int64_t us = pg_us + PGO_EPOCH_OFFSET_US;
    int64_t secs = us / 1000000, frac = us % 1000000;
    time_t t;
    struct tm tm;

    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    t = (time_t)secs;
    gmtime_r(&t, &tm);
    sb_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac != 0)
        sb_printf(b, ".%06" PRId64, frac);
    sb_printf(b, "+00:00");
}

static void sb_tuple(struct sb *b, char tag, const struct pgo_relation *rel,
                     const struct pgo_tuple *t)
{
    assert_int_equal(t->ncols, rel->ncols);
    sb_printf(b, "%c(", tag);
    for (int i = 0; i < t->ncols; i++) {
        const struct pgo_value *v = &t->vals[i];

        sb_printf(b, "%s%s=", i ? ", " : "", rel->cols[i].name);
        if (v->kind == 'n')
            sb_printf(b, "NULL");
        else if (v->kind == 'u')
            sb_printf(b, "<unchanged-toast>");
        else if (v->kind == 't')
            sb_repr(b, v->data, v->len, false);
        else
            fail_msg("unexpected value kind %c", v->kind);
    }
    sb_printf(b, ")");
}

static void render(struct sb *b, const struct pgo_decoder *d,
                   const struct pgo_msg *m)
{
    const struct pgo_relation *r;

    switch (m->type) {
    case 'B':
        sb_printf(b, "Begin final_lsn=");
        sb_lsn(b, m->u.begin.final_lsn);
        sb_printf(b, " commit_ts=");
        sb_ts(b, m->u.begin.commit_ts);
        sb_printf(b, " xid=%" PRIu32, m->u.begin.xid);
        break;
    case 'C':
        sb_printf(b, "Commit flags=%d commit_lsn=", m->u.commit.flags);
        sb_lsn(b, m->u.commit.commit_lsn);
        sb_printf(b, " end_lsn=");
        sb_lsn(b, m->u.commit.end_lsn);
        sb_printf(b, " commit_ts=");
        sb_ts(b, m->u.commit.commit_ts);
        break;
    case 'O':
        sb_printf(b, "Origin origin_lsn=");
        sb_lsn(b, m->u.origin.lsn);
        sb_printf(b, " name=");
        sb_cstr(b, m->u.origin.name);
        break;
    case 'Y':
        sb_printf(b, "Type oid=%" PRIu32 " namespace=", m->u.type.oid);
        sb_cstr(b, m->u.type.nspname);
        sb_printf(b, " name=");
        sb_cstr(b, m->u.type.typname);
        break;
    case 'R':
        r = m->u.relation;
        sb_printf(b, "Relation relid=%" PRIu32 " ", r->oid);
        sb_cstr(b, r->nspname);
        sb_printf(b, ".");
        sb_cstr(b, r->relname);
        sb_printf(b, " ident='%c' cols=[", r->replident);
        for (int i = 0; i < r->ncols; i++)
            sb_printf(b, "%s%s%s:%" PRIu32 "/%" PRId32, i ? ", " : "",
                      r->cols[i].flags & 1 ? "*" : "", r->cols[i].name,
                      r->cols[i].type_oid, r->cols[i].typmod);
        sb_printf(b, "]");
        break;
    case 'I':
    case 'U':
    case 'D':
        r = m->u.change.rel;
        assert_non_null(r);
        assert_int_equal(r->oid, m->u.change.relid);
        sb_printf(b, "%s %s ", pgo_msg_name(m->type), r->relname);
        if (m->u.change.old_kind != 0) {
            sb_tuple(b, m->u.change.old_kind, r, &m->u.change.old);
            if (m->type == 'U')
                sb_printf(b, " ");
        }
        if (m->type != 'D')
            sb_tuple(b, 'N', r, &m->u.change.new);
        break;
    case 'T':
        sb_printf(b, "Truncate flags=%d relations=[", m->u.truncate.flags);
        for (int i = 0; i < m->u.truncate.nrels; i++) {
            r = pgo_relation_get(d, m->u.truncate.relids[i]);
            assert_non_null(r);
            sb_printf(b, "%s", i ? ", " : "");
            sb_cstr(b, r->relname);
        }
        sb_printf(b, "]");
        break;
    case 'M':
        sb_printf(b, "Message flags=%d lsn=", m->u.message.flags);
        sb_lsn(b, m->u.message.lsn);
        sb_printf(b, " prefix=");
        sb_cstr(b, m->u.message.prefix);
        sb_printf(b, " content=");
        sb_repr(b, m->u.message.content, m->u.message.len, true);
        break;
    default:
        fail_msg("unexpected message type %c", m->type);
    }
}

/* A listing line ending in "..." was cut: compare only what is shown. */
static void assert_listing(const char *expected, const char *got,
                           const char *where)
{
    size_t n = strlen(expected);

    if (n >= 3 && strcmp(expected + n - 3, "...") == 0 &&
        strncmp(expected, got, n - 3) == 0)
        return;
    if (strcmp(expected, got) != 0)
        fail_msg("%s:\n  expected: %s\n  got:      %s", where, expected, got);
}

static uint64_t lsn_of(const char *s)
{
    uint64_t v;

    assert_int_equal(pgo_lsn_parse(s, &v), 0);
    return v;
}

static const struct pgo_value *col(const struct pgo_tuple *t,
                                   const struct pgo_relation *r,
                                   const char *name)
{
    for (int i = 0; i < r->ncols; i++)
        if (strcmp(r->cols[i].name, name) == 0)
            return &t->vals[i];
    fail_msg("no column %s", name);
    return NULL;
}

static void assert_text(const struct pgo_value *v, const char *want)
{
    assert_int_equal(v->kind, 't');
    assert_int_equal(v->len, strlen(want));
    assert_memory_equal(v->data, want, v->len);
}

/* Decodes every message of a fixture in order; returns them in msgs (the
 * pointers are only valid for the last one, so callers use decode_at). */
static void decode_ok(struct pgo_decoder *d, const struct fxmsg *fm,
                      struct pgo_msg *m)
{
    struct err e = { 0 };
    int rc = pgo_decode(d, fm->buf, fm->len, fm->lsn_val, m, &e);

    if (rc != 0)
        fail_msg("decode %s %s %s: rc %d: %s", fm->lsn, fm->xid, fm->kind,
                 rc, e.msg);
    assert_int_equal(m->type, fm->kind[0]);
}

/* ---- LSN text ---- */

static void test_lsn(void **state)
{
    char buf[PGO_LSN_STRLEN];
    uint64_t v;
    static const char *bad[] = {
        "", "/", "0/", "/0", "0", "0/0/0", "g/0", "0/g", "123456789/0",
        "0/123456789", " 0/0", "0/0 ", "-1/0", "+1/0", "0x1/0", "1 /0",
    };

    pgo_lsn_format(0, buf);
    assert_string_equal(buf, "0/0");
    pgo_lsn_format(UINT64_C(0x16B3748), buf);
    assert_string_equal(buf, "0/16B3748");
    pgo_lsn_format(UINT64_MAX, buf);
    assert_string_equal(buf, "FFFFFFFF/FFFFFFFF");
    pgo_lsn_format(UINT64_C(0x100000000), buf);
    assert_string_equal(buf, "1/0");

    assert_int_equal(pgo_lsn_parse("0/16B3748", &v), 0);
    assert_int_equal(v, 0x16B3748);
    assert_int_equal(pgo_lsn_parse("1/2345678", &v), 0);
    assert_int_equal(v, UINT64_C(0x102345678));
    assert_int_equal(pgo_lsn_parse("ffffffff/FFFFFFFF", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(pgo_lsn_parse("00000000/00000001", &v), 0);
    assert_int_equal(v, 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        if (pgo_lsn_parse(bad[i], &v) != -EINVAL)
            fail_msg("pgo_lsn_parse(\"%s\") accepted", bad[i]);
        assert_int_equal(v, 42);
    }
    assert_int_equal(pgo_lsn_parse(NULL, &v), -EINVAL);
}

/* ---- fixtures 01..13 against MANIFEST.md ---- */

static void test_fixture_listing(void **state)
{
    const char *name = *state;
    struct fx *fx = fx_load(name);
    struct pgo_decoder *d;
    struct sb b = { 0 };
    size_t nl, xid_col;
    char **lines = manifest_lines(name, &nl);

    assert_int_equal(pgo_decoder_new(&d), 0);
    assert_int_equal(fx->n, nl);
    for (size_t i = 0; i < fx->n; i++) {
        const struct fxmsg *fm = &fx->m[i];
        char lsn[32], xid[32], where[128];
        struct pgo_msg m;
        int off = 0;

        assert_int_equal(sscanf(lines[i], "%31s %31s %n", lsn, xid, &off), 2);
        xid_col = (size_t)off;
        assert_string_equal(lsn, fm->lsn);
        assert_string_equal(xid, fm->xid);
        decode_ok(d, fm, &m);
        sb_reset(&b);
        render(&b, d, &m);
        snprintf(where, sizeof(where), "%s message %zu (%s %s)", name, i,
                 fm->lsn, fm->kind);
        assert_listing(lines[i] + xid_col, b.p, where);
    }
    free(b.p);
    lines_free(lines, nl);
    pgo_decoder_free(d);
    fx_free(fx);
}

/* ---- case 01: every column's text against sql/01-expected-text.tsv ---- */

static void test_01_expected_text(void **state)
{
    struct fx *fx = fx_load("01-insert-many-types.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;
    const struct pgo_relation *r;
    char *line = NULL;
    size_t cap = 0;
    int ntypes = 0, checked = 0;
    FILE *f;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        decode_ok(d, &fx->m[i], &m);
        if (m.type == 'Y')
            ntypes++;
        if (m.type == 'B') {
            assert_int_equal(m.u.begin.xid, 769);
            assert_int_equal(m.u.begin.final_lsn, lsn_of("0/17C0888"));
        }
        if (m.type == 'I')
            break;
    }
    assert_int_equal(ntypes, 3);
    assert_int_equal(m.type, 'I');
    r = m.u.change.rel;
    assert_int_equal(r->oid, 16397);
    assert_string_equal(r->nspname, "public");
    assert_string_equal(r->relname, "t01");
    assert_int_equal(r->replident, 'd');
    assert_int_equal(r->ncols, 30);
    assert_int_equal(m.u.change.old_kind, 0);
    assert_int_equal(m.u.change.old.ncols, 0);
    assert_int_equal(m.u.change.new.ncols, 30);
    assert_int_equal(r->cols[0].flags, 1);
    assert_int_equal(r->cols[1].flags, 0);
    assert_string_equal(r->cols[4].name, "c_num_pos");
    assert_int_equal(r->cols[4].type_oid, 1700);
    assert_int_equal(r->cols[4].typmod, 1310730);
    assert_string_equal(r->cols[14].name, "c_varchar");
    assert_int_equal(r->cols[14].type_oid, 1043);
    assert_int_equal(r->cols[14].typmod, 36);
    assert_int_equal(col(&m.u.change.new, r, "c_domain") - m.u.change.new.vals,
                     26);
    assert_int_equal(r->cols[26].type_oid, 16392);

    f = fopen(PGO_DIR "sql/01-expected-text.tsv", "r");
    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        char *tab, *name = line;
        const struct pgo_value *v;

        chomp(line);
        tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        v = col(&m.u.change.new, r, name);
        if (strcmp(tab + 1, "NULL") == 0) {
            assert_int_equal(v->kind, 'n');
            assert_null(v->data);
        } else {
            size_t n;
            uint8_t *want = unhex(tab + 1, &n);

            assert_int_equal(v->kind, 't');
            assert_int_equal(v->len, n);
            assert_memory_equal(v->data, want, n);
            /* Points into the message, not a copy. */
            assert_true((const uint8_t *)v->data > fx->m[5].buf &&
                        (const uint8_t *)v->data + n <=
                        fx->m[5].buf + fx->m[5].len);
            free(want);
        }
        checked++;
    }
    assert_int_equal(checked, 30);
    free(line);
    fclose(f);
    pgo_decoder_free(d);
    fx_free(fx);
}

/* The same Insert under other session GUCs keeps their exact text. */
static void test_01_other_gucs(void **state)
{
    struct fx *fx = fx_load("01-insert-many-types.hex");
    struct fx *other = fx_load("sql/01-insert-other-gucs.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;
    const struct pgo_tuple *t;
    const struct pgo_relation *r;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < 5; i++)
        decode_ok(d, &fx->m[i], &m);
    assert_int_equal(other->n, 1);
    assert_int_equal(pgo_decode(d, other->m[0].buf, other->m[0].len, 0, &m,
                                NULL), 0);
    t = &m.u.change.new;
    r = m.u.change.rel;
    assert_text(col(t, r, "c_f8"), "3.14159265358979");
    assert_text(col(t, r, "c_bytea"), "\\336\\255\\276\\357\\000");
    assert_text(col(t, r, "c_date"), "29/02/2024");
    assert_text(col(t, r, "c_ts"), "29/02/2024 13:14:15.123456");
    assert_text(col(t, r, "c_tstz"), "29/02/2024 20:14:15.5 JST");
    assert_text(col(t, r, "c_interval"), "P1Y2M3DT4H5M6.789S");
    pgo_decoder_free(d);
    fx_free(other);
    fx_free(fx);
}

/* ---- targeted checks of individual cases ---- */

/* Decodes fixture messages up to and including index upto. */
static struct pgo_decoder *replay(const struct fx *fx, size_t upto,
                                  struct pgo_msg *m)
{
    struct pgo_decoder *d;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i <= upto; i++)
        decode_ok(d, &fx->m[i], m);
    return d;
}

static void test_update_old_tuples(void **state)
{
    struct fx *f02 = fx_load("02-update-key-unchanged.hex");
    struct fx *f03 = fx_load("03-update-key-changed.hex");
    struct fx *f04 = fx_load("04-update-identity-full.hex");
    struct fx *f05 = fx_load("05-delete.hex");
    struct pgo_decoder *d;
    const struct pgo_relation *r;
    struct pgo_msg m;

    /* 02: no old tuple; v set to NULL. */
    d = replay(f02, 5, &m);
    assert_int_equal(m.type, 'U');
    assert_int_equal(m.u.change.old_kind, 0);
    r = m.u.change.rel;
    assert_int_equal(col(&m.u.change.new, r, "v")->kind, 'n');
    assert_text(col(&m.u.change.new, r, "n"), "21");
    pgo_decoder_free(d);

    /* 03: K with old key, non-key column 'n'. */
    d = replay(f03, 2, &m);
    r = m.u.change.rel;
    assert_int_equal(m.u.change.old_kind, 'K');
    assert_int_equal(m.u.change.old.ncols, 3);
    assert_text(col(&m.u.change.old, r, "k2"), "a");
    assert_int_equal(col(&m.u.change.old, r, "v")->kind, 'n');
    assert_text(col(&m.u.change.new, r, "k2"), "b");
    assert_int_equal(r->cols[0].flags & r->cols[1].flags, 1);
    assert_int_equal(r->cols[2].flags, 0);
    pgo_decoder_free(d);

    /* 04: FULL gives O; USING INDEX flags only the index column. */
    d = replay(f04, 2, &m);
    r = m.u.change.rel;
    assert_int_equal(r->replident, 'f');
    assert_int_equal(m.u.change.old_kind, 'O');
    assert_text(col(&m.u.change.old, r, "v"), "one");
    assert_text(col(&m.u.change.new, r, "v"), "changed");
    pgo_decoder_free(d);
    d = replay(f04, 9, &m);
    r = m.u.change.rel;
    assert_int_equal(r->replident, 'i');
    assert_int_equal(r->cols[0].flags, 0);
    assert_int_equal(r->cols[1].flags, 1);
    assert_int_equal(m.u.change.old_kind, 'K');
    assert_int_equal(col(&m.u.change.old, r, "id")->kind, 'n');
    assert_text(col(&m.u.change.old, r, "code"), "c1");
    assert_text(col(&m.u.change.new, r, "code"), "c2");
    pgo_decoder_free(d);

    /* 05: Delete K (default identity) and O (FULL); no new tuple. */
    d = replay(f05, 2, &m);
    assert_int_equal(m.type, 'D');
    assert_int_equal(m.u.change.old_kind, 'K');
    assert_int_equal(m.u.change.new.ncols, 0);
    assert_int_equal(col(&m.u.change.old, m.u.change.rel, "v")->kind, 'n');
    pgo_decoder_free(d);
    d = replay(f05, 6, &m);
    assert_int_equal(m.type, 'D');
    assert_int_equal(m.u.change.old_kind, 'O');
    assert_text(col(&m.u.change.old, m.u.change.rel, "v"), "gone-f");
    pgo_decoder_free(d);

    fx_free(f02);
    fx_free(f03);
    fx_free(f04);
    fx_free(f05);
}

static void test_06_unchanged_toast(void **state)
{
    struct fx *fx = fx_load("06-unchanged-toast.hex");
    struct pgo_decoder *d;
    const struct pgo_relation *r;
    const struct pgo_value *v;
    struct pgo_msg m;

    d = replay(fx, 2, &m);
    r = m.u.change.rel;
    assert_int_equal(m.u.change.old_kind, 0);
    v = col(&m.u.change.new, r, "big");
    assert_int_equal(v->kind, 'u');
    assert_null(v->data);
    assert_int_equal(v->len, 0);
    assert_text(col(&m.u.change.new, r, "small"), "2");
    pgo_decoder_free(d);

    d = replay(fx, 6, &m);
    r = m.u.change.rel;
    assert_string_equal(r->relname, "t06f");
    assert_int_equal(m.u.change.old_kind, 'O');
    v = col(&m.u.change.old, r, "big");
    assert_int_equal(v->kind, 't');
    assert_int_equal(v->len, 1048576);
    assert_memory_equal(v->data, "f32cfbdbbcae6b14b5f5efca80efc94de45364f2",
                        40);
    assert_int_equal(col(&m.u.change.new, r, "big")->kind, 'u');
    assert_text(col(&m.u.change.old, r, "small"), "1");
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_07_truncate(void **state)
{
    static const struct { int flags, n; uint32_t relids[2]; } want[] = {
        { 0, 1, { 16463 } }, { 0, 2, { 16463, 16466 } },
        { 1, 2, { 16470, 16477 } }, { 2, 1, { 16463 } },
        { 3, 2, { 16470, 16477 } },
    };
    struct fx *fx = fx_load("07-truncate.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;
    size_t k = 0;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        decode_ok(d, &fx->m[i], &m);
        if (m.type != 'T')
            continue;
        assert_true(k < 5);
        assert_int_equal(m.u.truncate.flags, want[k].flags);
        assert_int_equal(m.u.truncate.nrels, want[k].n);
        for (int j = 0; j < want[k].n; j++)
            assert_int_equal(m.u.truncate.relids[j], want[k].relids[j]);
        k++;
    }
    assert_int_equal(k, 5);
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_08_relation_replaced(void **state)
{
    struct fx *fx = fx_load("08-alter-add-drop-column.hex");
    struct pgo_decoder *d;
    const struct pgo_relation *r;
    struct pgo_msg m;
    int inserts = 0;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        decode_ok(d, &fx->m[i], &m);
        if (m.type == 'R') {
            assert_ptr_equal(m.u.relation, pgo_relation_get(d, 16485));
            continue;
        }
        if (m.type != 'I')
            continue;
        r = m.u.change.rel;
        assert_ptr_equal(r, pgo_relation_get(d, 16485));
        inserts++;
        switch (inserts) {
        case 4:     /* first insert of the ALTER txn: old layout */
            assert_int_equal(r->ncols, 2);
            assert_text(col(&m.u.change.new, r, "b"), "10");
            break;
        case 5:     /* after the mid-transaction Relation */
            assert_int_equal(fx->m[i - 1].kind[0], 'R');
            assert_int_equal(r->ncols, 3);
            assert_string_equal(r->cols[2].name, "c");
            assert_int_equal(r->cols[1].type_oid, 23);
            assert_text(col(&m.u.change.new, r, "c"), "c5");
            break;
        case 6:
            assert_int_equal(r->cols[1].type_oid, 20);
            assert_text(col(&m.u.change.new, r, "b"), "12");
            break;
        }
    }
    assert_int_equal(inserts, 6);
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_09_origin(void **state)
{
    struct fx *fx = fx_load("09-origin.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;
    int origins = 0;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        decode_ok(d, &fx->m[i], &m);
        if (m.type != 'O')
            continue;
        assert_int_equal(fx->m[i - 1].kind[0], 'B');
        assert_string_equal(m.u.origin.name, "origin_a");
        assert_int_equal(m.u.origin.lsn,
                         origins == 0 ? 0xABCDEF : UINT64_C(0x102345678));
        origins++;
    }
    assert_int_equal(origins, 3);
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_10_messages(void **state)
{
    struct fx *fx = fx_load("10-logical-message.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;

    /* Outside any transaction, before the first Begin. */
    d = replay(fx, 0, &m);
    assert_int_equal(m.u.message.flags, 0);
    assert_int_equal(m.u.message.lsn, lsn_of("0/18D5CF0"));
    assert_string_equal(m.u.message.prefix, "prefix");
    assert_int_equal(m.u.message.len, 7);
    assert_memory_equal(m.u.message.content, "content", 7);
    pgo_decoder_free(d);
    d = replay(fx, 3, &m);
    assert_int_equal(m.u.message.flags, 1);
    assert_string_equal(m.u.message.prefix, "bin");
    assert_int_equal(m.u.message.len, 5);
    assert_memory_equal(m.u.message.content, "\x00\x01\x02\x03\xff", 5);
    pgo_decoder_free(d);
    d = replay(fx, 5, &m);
    assert_int_equal(m.type, 'M');
    assert_int_equal(m.u.message.flags, 0);
    assert_int_equal(fx->m[6].kind[0], 'B');
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_11_types(void **state)
{
    static const struct { uint32_t oid; const char *nsp, *name; } want[] = {
        { 16507, "s11", "color" }, { 16506, "s11", "_color" },
        { 16514, "public", "floatrange" }, { 16385, "public", "mood" },
    };
    struct fx *fx = fx_load("11-custom-type.hex");
    struct fx *f01 = fx_load("01-insert-many-types.hex");
    struct pgo_decoder *d;
    struct pgo_msg m;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < 4; i++) {
        decode_ok(d, &fx->m[i + 1], &m);
        assert_int_equal(m.u.type.oid, want[i].oid);
        assert_string_equal(m.u.type.nspname, want[i].nsp);
        assert_string_equal(m.u.type.typname, want[i].name);
    }
    decode_ok(d, &fx->m[5], &m);
    assert_string_equal(m.u.relation->nspname, "s11");
    assert_int_equal(m.u.relation->cols[1].type_oid, 16507);
    /* 01: the domain is announced with the base type's name. */
    decode_ok(d, &f01->m[2], &m);
    assert_int_equal(m.u.type.oid, 16392);
    assert_string_equal(m.u.type.nspname, "");
    assert_string_equal(m.u.type.typname, "text");
    pgo_decoder_free(d);
    fx_free(f01);
    fx_free(fx);
}

/* ---- 00: replication frames on the wire ---- */

/* The CopyData payload of a whole wire message, or NULL. */
static const uint8_t *copydata(const struct fxmsg *fm, size_t *len)
{
    uint32_t n;

    if (fm->len < 5 || fm->buf[0] != 'd')
        return NULL;
    n = (uint32_t)fm->buf[1] << 24 | (uint32_t)fm->buf[2] << 16 |
        (uint32_t)fm->buf[3] << 8 | fm->buf[4];
    assert_int_equal(n, fm->len - 1);
    *len = fm->len - 5;
    return fm->buf + 5;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void test_00_frames(void **state)
{
    struct fx *fx = fx_load("00-copyboth-frames.hex");
    struct fx *f01 = fx_load("01-insert-many-types.hex");
    size_t nl, li = 0, txn1 = 0;
    char **lines = manifest_lines("00-copyboth-frames.hex", &nl);
    struct pgo_decoder *d;
    struct sb b = { 0 };
    int conns = 0, replies = 0, inserts = 0, statuses = 0;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        const struct fxmsg *fm = &fx->m[i];
        const uint8_t *p;
        struct pgo_frame fr;
        struct pgo_msg m;
        struct err e = { 0 };
        char where[128];
        size_t len;

        if (fm->buf[0] == 'Q') {
            /* A new connection: the server re-sends Relations. */
            pgo_decoder_reset(d);
            assert_null(pgo_relation_get(d, 16397));
            conns++;
            continue;
        }
        p = copydata(fm, &len);
        if (p == NULL)
            continue;
        assert_true(li < nl);
        snprintf(where, sizeof(where), "00 message %zu (%s)", i, fm->kind);
        sb_reset(&b);
        if (strcmp(fm->dir, "C>S") == 0) {
            uint8_t out[PGO_STATUS_LEN];
            int64_t now = (int64_t)be64(p + 25);

            /* Our builder reproduces the client's status update. */
            assert_int_equal(len, 34);
            assert_int_equal(p[0], 'r');
            assert_int_equal(pgo_build_status(out, be64(p + 1), be64(p + 9),
                                              be64(p + 17), now, p[33] != 0),
                             34);
            assert_memory_equal(out, p, 34);
            assert_int_equal(be64(p + 9), fm->lsn_val);
            assert_int_equal(pgo_parse_frame(p, len, &fr, &e), -EPROTO);
            sb_printf(&b, "r (client) write=");
            sb_lsn(&b, be64(p + 1));
            sb_printf(&b, " flush=");
            sb_lsn(&b, be64(p + 9));
            sb_printf(&b, " apply=");
            sb_lsn(&b, be64(p + 17));
            sb_printf(&b, " time=");
            sb_ts(&b, now);
            sb_printf(&b, " reply=%d", p[33]);
            statuses++;
            assert_listing(lines[li++], b.p, where);
            continue;
        }
        if (pgo_parse_frame(p, len, &fr, &e) != 0)
            fail_msg("%s: %s", where, e.msg);
        assert_int_equal(fr.kind, p[0]);
        if (fr.kind == 'k') {
            assert_int_equal(len, 18);
            assert_int_equal(fr.end_lsn, fm->lsn_val);
            assert_int_equal(fr.reply_requested,
                             strcmp(fm->kind, "k(reply=1)") == 0);
            assert_null(fr.payload);
            replies += fr.reply_requested;
            sb_printf(&b, "k wal_end=");
            sb_lsn(&b, fr.end_lsn);
            sb_printf(&b, " send=");
            sb_ts(&b, fr.send_time);
            sb_printf(&b, " reply_requested=%d", fr.reply_requested);
        } else {
            assert_int_equal(fr.kind, 'w');
            assert_int_equal(fr.start_lsn, fr.end_lsn);
            assert_int_equal(fr.start_lsn, fm->lsn_val);
            assert_ptr_equal(fr.payload, p + 25);
            assert_int_equal(fr.payload_len, len - 25);
            assert_int_equal(fr.payload[0], fm->kind[2]);
            if (conns == 1 && txn1 < f01->n) {
                /* Connection 1's first txn is case 01 byte for byte. */
                assert_int_equal(fr.payload_len, f01->m[txn1].len);
                assert_memory_equal(fr.payload, f01->m[txn1].buf,
                                    fr.payload_len);
                txn1++;
            }
            if (pgo_decode(d, fr.payload, fr.payload_len, fr.start_lsn, &m,
                           &e) != 0)
                fail_msg("%s: %s", where, e.msg);
            if (m.type == 'R' || m.type == 'Y')
                assert_int_equal(fr.start_lsn, 0);
            if (m.type == 'I') {
                char id[2] = { (char)('1' + inserts), 0 };

                assert_text(&m.u.change.new.vals[0], id);
                inserts++;
            }
            sb_printf(&b, "w start=");
            sb_lsn(&b, fr.start_lsn);
            sb_printf(&b, " end=");
            sb_lsn(&b, fr.end_lsn);
            sb_printf(&b, " send=");
            sb_ts(&b, fr.send_time);
            sb_printf(&b, " | ");
            render(&b, d, &m);
        }
        assert_listing(lines[li++], b.p, where);
    }
    assert_int_equal(li, nl);
    assert_int_equal(conns, 3);
    assert_int_equal(txn1, f01->n);
    assert_int_equal(replies, 1);
    assert_int_equal(inserts, 5);
    assert_int_equal(statuses, 5);
    free(b.p);
    lines_free(lines, nl);
    pgo_decoder_free(d);
    fx_free(f01);
    fx_free(fx);
}

static void test_build_status(void **state)
{
    static const uint8_t want[34] = {
        'r',
        0, 0, 0, 0, 0x01, 0x7c, 0x09, 0x88,
        0, 0, 0, 0x01, 0x01, 0x02, 0x03, 0x04,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
        1,
    };
    uint8_t out[PGO_STATUS_LEN];

    assert_int_equal(pgo_build_status(out, lsn_of("0/17C0988"),
                                      lsn_of("1/1020304"), UINT64_MAX, -2,
                                      true), 34);
    assert_memory_equal(out, want, 34);
    pgo_build_status(out, 0, 0, 0, 0, false);
    assert_int_equal(out[0], 'r');
    for (int i = 1; i < 34; i++)
        assert_int_equal(out[i], 0);
}

static void test_frame_errors(void **state)
{
    uint8_t k[18] = { 'k', 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 1,
                      1 };
    uint8_t w[26] = { 'w' };
    uint8_t big[19];
    struct pgo_frame fr;
    struct err e = { 0 };

    assert_int_equal(pgo_parse_frame(k, 18, &fr, &e), 0);
    assert_int_equal(fr.end_lsn, 0x10);
    assert_int_equal(fr.send_time, 1);
    assert_true(fr.reply_requested);
    for (size_t n = 0; n < 18; n++)
        assert_int_equal(pgo_parse_frame(k, n, &fr, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "truncated keepalive frame"));
    memcpy(big, k, 18);
    big[18] = 0;
    assert_int_equal(pgo_parse_frame(big, 19, &fr, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "trailing"));

    w[25] = 'B';
    assert_int_equal(pgo_parse_frame(w, 26, &fr, &e), 0);
    assert_int_equal(fr.payload_len, 1);
    assert_int_equal(pgo_parse_frame(w, 25, &fr, &e), -EPROTO);
    assert_string_equal(e.msg, "pgoutput: truncated XLogData frame: no "
                        "pgoutput message after the 25-byte header");
    assert_int_equal(pgo_parse_frame(w, 9, &fr, &e), -EPROTO);
    assert_string_equal(e.msg, "pgoutput: truncated XLogData frame: need 8 "
                        "bytes at offset 9, have 0");
    assert_int_equal(fr.kind, 0);
    assert_null(fr.payload);

    w[0] = 'x';
    assert_int_equal(pgo_parse_frame(w, 26, &fr, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "unknown replication frame kind 0x78"));
    assert_int_equal(pgo_parse_frame(w, 0, &fr, &e), -EPROTO);
    assert_int_equal(pgo_parse_frame(NULL, 0, &fr, NULL), -EPROTO);
}

/* ---- hand-made malformed messages ---- */

struct mb {
    uint8_t b[32768];
    size_t n;
};

static void mb_be(struct mb *m, uint64_t v, int n)
{
    assert_true(n >= 1 && n <= 8 && m->n + (size_t)n <= sizeof(m->b));
    for (int i = n - 1; i >= 0; i--)
        m->b[m->n++] = (uint8_t)(v >> (8 * i));
}

static void mb_str(struct mb *m, const char *s)
{
    assert_true(m->n + strlen(s) + 1 <= sizeof(m->b));
    memcpy(m->b + m->n, s, strlen(s) + 1);
    m->n += strlen(s) + 1;
}

/* Relation 16397 public.t with columns id (key) and v. */
static struct mb rel_msg(uint32_t oid, int ncols)
{
    struct mb m = { .n = 0 };

    mb_be(&m, 'R', 1);
    mb_be(&m, oid, 4);
    mb_str(&m, "public");
    mb_str(&m, "t");
    mb_be(&m, 'd', 1);
    mb_be(&m, (uint64_t)ncols, 2);
    for (int i = 0; i < ncols; i++) {
        char name[16];

        snprintf(name, sizeof(name), "c%d", i);
        mb_be(&m, i == 0, 1);
        mb_str(&m, name);
        mb_be(&m, 23, 4);
        mb_be(&m, UINT32_MAX, 4);
    }
    return m;
}

static int decode_mb(struct pgo_decoder *d, const struct mb *m,
                     struct pgo_msg *out, struct err *e)
{
    /* An exact-size copy, so ASan sees any over-read. */
    uint8_t *copy = malloc(m->n ? m->n : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, m->b, m->n);
    rc = pgo_decode(d, copy, m->n, UINT64_C(0x16B3748), out, e);
    free(copy);
    return rc;
}

static void expect_eproto(struct pgo_decoder *d, const struct mb *m,
                          const char *msg)
{
    struct pgo_msg out;
    struct err e = { 0 };

    assert_int_equal(decode_mb(d, m, &out, &e), -EPROTO);
    assert_int_equal(e.code, -EPROTO);
    if (strstr(e.msg, msg) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", e.msg, msg);
    assert_int_equal(out.type, 0);
}

static void test_unknown_type(void **state)
{
    struct pgo_decoder *d;
    struct mb m = { .n = 0 };
    struct pgo_msg out;
    struct err e = { 0 };

    assert_int_equal(pgo_decoder_new(&d), 0);
    mb_be(&m, 'x', 1);
    mb_be(&m, 0, 8);
    expect_eproto(d, &m, "pgoutput: unknown message type 0x78 ('x') at "
                  "0/16B3748");
    m.b[0] = 0;
    expect_eproto(d, &m, "unknown message type 0x00");
    /* Types of later protocol versions ('S'tream start, 'b'egin prepare). */
    m.b[0] = 'S';
    expect_eproto(d, &m, "unknown message type 0x53");
    m.b[0] = 'b';
    expect_eproto(d, &m, "unknown message type 0x62");
    assert_int_equal(pgo_decode(d, m.b, 0, 5, &out, &e), -EPROTO);
    assert_string_equal(e.msg, "pgoutput: empty message at 0/5");
    assert_null(pgo_msg_name('x'));
    assert_string_equal(pgo_msg_name('U'), "Update");
    pgo_decoder_free(d);
}

static void test_change_before_relation(void **state)
{
    struct fx *fx = fx_load("12-multi-statement-two-tables.hex");
    struct pgo_decoder *d;
    struct pgo_msg out;
    struct err e = { 0 };

    assert_int_equal(pgo_decoder_new(&d), 0);
    /* Skip the Relation: the Insert must be refused, naming the OID. */
    decode_ok(d, &fx->m[0], &out);
    assert_int_equal(pgo_decode(d, fx->m[2].buf, fx->m[2].len, 0x18D6388,
                                &out, &e), -EPROTO);
    assert_string_equal(e.msg, "pgoutput: Insert at 0/18D6388: unknown "
                        "relation OID 16528 (no Relation message seen)");
    assert_int_equal(out.type, 0);
    decode_ok(d, &fx->m[1], &out);
    decode_ok(d, &fx->m[2], &out);
    /* After a reset (reconnect) the layout is gone again. */
    pgo_decoder_reset(d);
    assert_null(pgo_relation_get(d, 16528));
    assert_int_equal(pgo_decode(d, fx->m[2].buf, fx->m[2].len, 0, &out, &e),
                     -EPROTO);
    assert_non_null(strstr(e.msg, "unknown relation OID 16528"));
    /* The Truncate of 07 without its Relations. */
    fx_free(fx);
    fx = fx_load("07-truncate.hex");
    assert_int_equal(pgo_decode(d, fx->m[2].buf, fx->m[2].len, 0, &out, &e),
                     -EPROTO);
    assert_non_null(strstr(e.msg, "Truncate at 0/0: unknown relation OID "
                           "16463"));
    pgo_decoder_free(d);
    fx_free(fx);
}

static void test_malformed(void **state)
{
    struct pgo_decoder *d;
    struct pgo_msg out;
    struct err e = { 0 };
    struct mb m;

    assert_int_equal(pgo_decoder_new(&d), 0);

    /* Relation: bad identity, negative and absurd column counts. */
    m = rel_msg(16397, 2);
    m.b[1 + 4 + 7 + 2] = 'x';
    expect_eproto(d, &m, "unknown replica identity 0x78");
    m = rel_msg(16397, 0);
    m.b[m.n - 2] = 0xff;
    m.b[m.n - 1] = 0xff;
    expect_eproto(d, &m, "column count -1 outside 0..1664");
    m = rel_msg(16397, 0);
    m.b[m.n - 2] = 0x06;
    m.b[m.n - 1] = 0x81;
    expect_eproto(d, &m, "column count 1665 outside");
    /* Unterminated string. */
    m = rel_msg(16397, 0);
    m.n = 8;
    expect_eproto(d, &m, "pgoutput: truncated Relation at 0/16B3748: "
                  "unterminated string at offset 5");
    /* Trailing bytes. */
    m = rel_msg(16397, 2);
    mb_be(&m, 0, 1);
    expect_eproto(d, &m, "1 trailing bytes at offset");
    assert_null(pgo_relation_get(d, 16397));
    /* Zero columns is legal (CREATE TABLE t ()). */
    m = rel_msg(16398, 0);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.relation->ncols, 0);

    m = rel_msg(16397, 2);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);

    /* Tuple column count must equal the relation's. */
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'I', 1);
    mb_be(&m, 16397, 4);
    mb_be(&m, 'N', 1);
    mb_be(&m, 3, 2);
    mb_be(&m, 'n', 1);
    mb_be(&m, 'n', 1);
    mb_be(&m, 'n', 1);
    expect_eproto(d, &m, "tuple has 3 columns, relation public.t (OID "
                  "16397) has 2");
    m.b[6] = 0xff;
    m.b[7] = 0xff;
    expect_eproto(d, &m, "tuple has -1 columns");

    /* Negative value length; unknown value kind; the required message. */
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'I', 1);
    mb_be(&m, 16397, 4);
    mb_be(&m, 'N', 1);
    mb_be(&m, 2, 2);
    mb_be(&m, 't', 1);
    mb_be(&m, 0xfffffffe, 4);
    expect_eproto(d, &m, "negative value length -2 at offset 9");
    m.b[9] = 0;
    m.b[10] = 0;
    m.b[11] = 0;
    m.b[12] = 4;
    mb_be(&m, 0x41424344, 4);
    mb_be(&m, 't', 1);
    mb_be(&m, 4, 4);
    mb_be(&m, 0x4142, 2);
    expect_eproto(d, &m, "pgoutput: truncated Insert at 0/16B3748: need 4 "
                  "bytes at offset 22, have 2");
    m.b[17] = '?';
    expect_eproto(d, &m, "column 1 (c1): unknown value kind 0x3f at "
                  "offset 17");
    m.b[17] = 'u';
    m.n = 18;
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.change.new.vals[1].kind, 'u');
    m.b[6] = 1;         /* 0x0102 columns */
    expect_eproto(d, &m, "tuple has 258 columns");
    m.b[6] = 0;
    /* Insert with a K tuple; Update with an unknown marker; Delete N. */
    m.b[5] = 'K';
    expect_eproto(d, &m, "unexpected tuple marker 0x4b at offset 5");
    m.b[0] = 'U';
    m.b[5] = 'X';
    expect_eproto(d, &m, "Update at 0/16B3748: unexpected tuple marker 0x58");
    m.b[5] = 'N';
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.change.old_kind, 0);
    m.b[0] = 'D';
    expect_eproto(d, &m, "Delete at 0/16B3748: unexpected tuple marker 0x4e");
    m.b[5] = 'O';
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.change.old_kind, 'O');
    assert_int_equal(out.u.change.new.ncols, 0);
    /* Update with an old tuple but no new one, or a second old one. */
    m.b[0] = 'U';
    m.b[5] = 'K';
    expect_eproto(d, &m, "truncated Update at 0/16B3748: need 1 bytes at "
                  "offset 18, have 0");
    mb_be(&m, 'K', 1);
    expect_eproto(d, &m, "unexpected tuple marker 0x4b at offset 18");

    /* Truncate: negative and oversized counts allocate nothing. */
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'T', 1);
    mb_be(&m, 0x80000000u, 4);
    mb_be(&m, 0, 1);
    expect_eproto(d, &m, "negative relation count -2147483648");
    m.b[1] = 0x7f;
    m.b[2] = m.b[3] = m.b[4] = 0xff;
    expect_eproto(d, &m, "truncated Truncate at 0/16B3748: need 8589934588 "
                  "bytes for 2147483647 relation OIDs at offset 6, have 0");
    m.b[1] = m.b[2] = m.b[3] = 0;
    m.b[4] = 1;
    mb_be(&m, 16397, 4);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.truncate.nrels, 1);
    assert_int_equal(out.u.truncate.relids[0], 16397);

    /* Message: negative content length. */
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'M', 1);
    mb_be(&m, 1, 1);
    mb_be(&m, 5, 8);
    mb_str(&m, "p");
    mb_be(&m, UINT32_MAX, 4);
    expect_eproto(d, &m, "negative content length -1 at offset 12");
    m.n -= 4;
    mb_be(&m, 0, 4);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.message.len, 0);

    /* Fixed-size messages with a byte too many. */
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'B', 1);
    memset(m.b + m.n, 0, 20);
    m.n += 20;
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    mb_be(&m, 0, 1);
    expect_eproto(d, &m, "Begin at 0/16B3748: 1 trailing bytes at offset 21");
    m.b[0] = 'C';
    m.n = 26;
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    m.n = 27;
    expect_eproto(d, &m, "Commit at 0/16B3748: 1 trailing bytes");

    pgo_decoder_free(d);
}

/* The widest legal relation, growing the scratch arrays past their
 * initial size, then a narrower one replacing it. */
static void test_wide_relation(void **state)
{
    static struct mb m;
    struct pgo_decoder *d;
    struct pgo_msg out;
    struct err e = { 0 };

    assert_int_equal(pgo_decoder_new(&d), 0);
    m = rel_msg(7, PGO_MAX_COLS);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.relation->ncols, PGO_MAX_COLS);
    assert_string_equal(out.u.relation->cols[PGO_MAX_COLS - 1].name,
                        "c1663");
    m = (struct mb){ .n = 0 };
    mb_be(&m, 'U', 1);
    mb_be(&m, 7, 4);
    mb_be(&m, 'O', 1);
    mb_be(&m, PGO_MAX_COLS, 2);
    for (int i = 0; i < PGO_MAX_COLS; i++) {
        mb_be(&m, 't', 1);
        mb_be(&m, 1, 4);
        mb_be(&m, (uint64_t)('a' + i % 26), 1);
    }
    mb_be(&m, 'N', 1);
    mb_be(&m, PGO_MAX_COLS, 2);
    for (int i = 0; i < PGO_MAX_COLS; i++)
        mb_be(&m, i % 2 ? 'u' : 'n', 1);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(out.u.change.old.ncols, PGO_MAX_COLS);
    /* (data pointed into decode_mb's freed copy) */
    assert_int_equal(out.u.change.old.vals[27].kind, 't');
    assert_int_equal(out.u.change.old.vals[27].len, 1);
    assert_int_equal(out.u.change.new.vals[1663].kind, 'u');
    m = rel_msg(7, 1);
    assert_int_equal(decode_mb(d, &m, &out, &e), 0);
    assert_int_equal(pgo_relation_get(d, 7)->ncols, 1);
    pgo_decoder_reset(NULL);
    pgo_decoder_free(d);
}

/* Scratch is reused between messages, and a failed Relation keeps the
 * stored layout. */
static void test_state(void **state)
{
    struct fx *fx = fx_load("12-multi-statement-two-tables.hex");
    struct pgo_decoder *d;
    const struct pgo_relation *r;
    const struct pgo_value *first;
    struct pgo_msg m;
    struct err e = { 0 };

    d = replay(fx, 2, &m);
    first = m.u.change.new.vals;
    decode_ok(d, &fx->m[3], &m);
    decode_ok(d, &fx->m[4], &m);
    assert_ptr_equal(m.u.change.new.vals, first);
    decode_ok(d, &fx->m[6], &m);
    assert_ptr_equal(m.u.change.new.vals, first);
    decode_ok(d, &fx->m[7], &m);
    assert_int_equal(m.type, 'D');
    assert_ptr_not_equal(m.u.change.old.vals, first);

    r = pgo_relation_get(d, 16528);
    assert_non_null(r);
    assert_int_equal(pgo_decode(d, fx->m[1].buf, fx->m[1].len - 1, 0, &m,
                                &e), -EPROTO);
    assert_ptr_equal(pgo_relation_get(d, 16528), r);
    assert_null(pgo_relation_get(d, 1));
    pgo_decoder_reset(d);
    pgo_decoder_reset(d);
    assert_null(pgo_relation_get(d, 16528));
    pgo_decoder_free(d);
    pgo_decoder_free(NULL);
    fx_free(fx);
}

/* ---- robustness over every fixture ---- */

static const char *const all_fixtures[] = {
    "01-insert-many-types.hex", "02-update-key-unchanged.hex",
    "03-update-key-changed.hex", "04-update-identity-full.hex",
    "05-delete.hex", "06-unchanged-toast.hex", "07-truncate.hex",
    "08-alter-add-drop-column.hex", "09-origin.hex",
    "10-logical-message.hex", "11-custom-type.hex",
    "12-multi-statement-two-tables.hex", "13-nothing-published.hex",
};
#define NFIXTURES (sizeof(all_fixtures) / sizeof(all_fixtures[0]))

/* Every prefix of a message is refused. Prefixes are exact-size copies
 * (so ASan catches over-reads) except in the middle of huge messages,
 * where only the result is checked. */
static void check_truncations(struct pgo_decoder *d, const struct fxmsg *fm,
                              const char *lsntext)
{
    for (size_t l = 0; l < fm->len; l++) {
        bool exact = fm->len <= 65536 || l < 4096 || fm->len - l < 512;
        uint8_t *copy = NULL;
        struct pgo_msg m;
        struct err e = { 0 };
        int rc;

        if (exact) {
            copy = malloc(l ? l : 1);
            assert_non_null(copy);
            memcpy(copy, fm->buf, l);
        }
        rc = pgo_decode(d, exact ? copy : fm->buf, l, fm->lsn_val, &m, &e);
        free(copy);
        if (rc != -EPROTO)
            fail_msg("%s %s cut to %zu of %zu bytes: rc %d", fm->lsn,
                     fm->kind, l, fm->len, rc);
        if (l > 0 && (strncmp(e.msg, "pgoutput: truncated ", 20) != 0 ||
                      strstr(e.msg, pgo_msg_name((char)fm->buf[0])) == NULL ||
                      strstr(e.msg, lsntext) == NULL))
            fail_msg("cut to %zu: unexpected error \"%s\"", l, e.msg);
    }
}

static void test_truncated_everywhere(void **state)
{
    for (size_t f = 0; f < NFIXTURES; f++) {
        struct fx *fx = fx_load(all_fixtures[f]);
        struct pgo_decoder *d;

        assert_int_equal(pgo_decoder_new(&d), 0);
        for (size_t i = 0; i < fx->n; i++) {
            struct pgo_msg m;
            char lsn[48];

            snprintf(lsn, sizeof(lsn), " at %s", fx->m[i].lsn);
            check_truncations(d, &fx->m[i], lsn);
            decode_ok(d, &fx->m[i], &m);
        }
        pgo_decoder_free(d);
        fx_free(fx);
    }
}

/* Frames of 00: a cut 'k' or 'w' header is refused by pgo_parse_frame, a
 * cut 'w' payload by pgo_decode. */
static void test_truncated_frames(void **state)
{
    struct fx *fx = fx_load("00-copyboth-frames.hex");
    struct pgo_decoder *d;

    assert_int_equal(pgo_decoder_new(&d), 0);
    for (size_t i = 0; i < fx->n; i++) {
        const uint8_t *p;
        struct pgo_frame fr;
        struct pgo_msg m;
        size_t len;

        if (fx->m[i].buf[0] == 'Q')
            pgo_decoder_reset(d);
        p = copydata(&fx->m[i], &len);
        if (p == NULL || p[0] == 'r')
            continue;
        for (size_t l = 0; l < len; l++) {
            uint8_t *copy = malloc(l ? l : 1);
            int rc;

            assert_non_null(copy);
            memcpy(copy, p, l);
            rc = pgo_parse_frame(copy, l, &fr, NULL);
            if (rc == 0) {
                assert_int_equal(p[0], 'w');
                assert_true(l > 25);
                rc = pgo_decode(d, fr.payload, fr.payload_len, 0, &m, NULL);
            }
            assert_int_equal(rc, -EPROTO);
            free(copy);
        }
        assert_int_equal(pgo_parse_frame(p, len, &fr, NULL), 0);
        if (fr.kind == 'w')
            assert_int_equal(pgo_decode(d, fr.payload, fr.payload_len, 0, &m,
                                        NULL), 0);
    }
    pgo_decoder_free(d);
    fx_free(fx);
}

static uint64_t rng_state = UINT64_C(0x9E3779B97F4A7C15);

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reads every byte the decoder pointed at, so ASan checks the pointers. */
static unsigned touch(const struct pgo_msg *m, const uint8_t *buf,
                      size_t len)
{
    unsigned sum = 0;
    const struct pgo_tuple *ts[2] = { &m->u.change.old, &m->u.change.new };

    switch (m->type) {
    case 'O':
        sum += (unsigned)strlen(m->u.origin.name);
        break;
    case 'Y':
        sum += (unsigned)strlen(m->u.type.nspname) +
               (unsigned)strlen(m->u.type.typname);
        break;
    case 'R':
        sum += (unsigned)strlen(m->u.relation->nspname);
        for (int i = 0; i < m->u.relation->ncols; i++)
            sum += (unsigned)strlen(m->u.relation->cols[i].name);
        break;
    case 'I':
    case 'U':
    case 'D':
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < ts[k]->ncols; i++) {
                const struct pgo_value *v = &ts[k]->vals[i];

                if (v->len > 0) {
                    assert_true((const uint8_t *)v->data >= buf &&
                                (const uint8_t *)v->data + v->len <=
                                buf + len);
                    sum += (uint8_t)v->data[0] + (uint8_t)v->data[v->len - 1];
                }
            }
        break;
    case 'T':
        for (int i = 0; i < m->u.truncate.nrels; i++)
            sum += m->u.truncate.relids[i];
        break;
    case 'M':
        sum += (unsigned)strlen(m->u.message.prefix);
        if (m->u.message.len > 0)
            sum += (uint8_t)m->u.message.content[m->u.message.len - 1];
        break;
    }
    return sum;
}

static void test_bit_flips(void **state)
{
    unsigned long ok = 0, refused = 0;
    unsigned sum = 0;

    for (size_t f = 0; f < NFIXTURES; f++) {
        struct fx *fx = fx_load(all_fixtures[f]);
        struct pgo_decoder *d;

        assert_int_equal(pgo_decoder_new(&d), 0);
        for (size_t i = 0; i < fx->n; i++) {
            const struct fxmsg *fm = &fx->m[i];
            int rounds = fm->len > 65536 ? 20 : 1500;
            struct pgo_msg m;

            for (int r = 0; r < rounds; r++) {
                uint8_t *copy = malloc(fm->len);
                int flips = 1 + (int)(rng() % 4), rc;

                assert_non_null(copy);
                memcpy(copy, fm->buf, fm->len);
                for (int k = 0; k < flips; k++) {
                    /* Favour the header, where the structure is. */
                    size_t at = rng() % (fm->len < 64 || rng() % 2
                                         ? fm->len : 64);

                    copy[at] ^= (uint8_t)(1u << (rng() % 8));
                }
                rc = pgo_decode(d, copy, fm->len, fm->lsn_val, &m, NULL);
                assert_true(rc == 0 || rc == -EPROTO);
                if (rc == 0) {
                    sum += touch(&m, copy, fm->len);
                    ok++;
                } else {
                    refused++;
                }
                free(copy);
                /* Put back the true layout a flipped Relation replaced. */
                if (fm->buf[0] == 'R')
                    decode_ok(d, fm, &m);
            }
            decode_ok(d, fm, &m);
        }
        pgo_decoder_free(d);
        fx_free(fx);
    }
    /* Random garbage after a valid type byte. */
    for (int r = 0; r < 20000; r++) {
        static const char types[] = "BCORYIUDTMwk";
        struct pgo_decoder *d;
        size_t len = 1 + rng() % 48;
        uint8_t *buf = malloc(len);
        struct pgo_msg m;
        struct pgo_frame fr;

        assert_non_null(buf);
        assert_int_equal(pgo_decoder_new(&d), 0);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng();
        buf[0] = (uint8_t)types[rng() % (sizeof(types) - 1)];
        if (pgo_decode(d, buf, len, 0, &m, NULL) == 0)
            sum += touch(&m, buf, len);
        if (pgo_parse_frame(buf, len, &fr, NULL) == 0 && fr.kind == 'w')
            assert_true(fr.payload + fr.payload_len == buf + len);
        pgo_decoder_free(d);
        free(buf);
    }
    print_message("bit flips: %lu decoded, %lu refused (checksum %u)\n", ok,
                  refused, sum);
    assert_true(refused > 0);
}

#define FIXTURE_TEST(file) \
    { .name = "listing " file, .test_func = test_fixture_listing, \
      .initial_state = (void *)(file) }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn),
        FIXTURE_TEST("01-insert-many-types.hex"),
        FIXTURE_TEST("02-update-key-unchanged.hex"),
        FIXTURE_TEST("03-update-key-changed.hex"),
        FIXTURE_TEST("04-update-identity-full.hex"),
        FIXTURE_TEST("05-delete.hex"),
        FIXTURE_TEST("06-unchanged-toast.hex"),
        FIXTURE_TEST("07-truncate.hex"),
        FIXTURE_TEST("08-alter-add-drop-column.hex"),
        FIXTURE_TEST("09-origin.hex"),
        FIXTURE_TEST("10-logical-message.hex"),
        FIXTURE_TEST("11-custom-type.hex"),
        FIXTURE_TEST("12-multi-statement-two-tables.hex"),
        FIXTURE_TEST("13-nothing-published.hex"),
        cmocka_unit_test(test_01_expected_text),
        cmocka_unit_test(test_01_other_gucs),
        cmocka_unit_test(test_update_old_tuples),
        cmocka_unit_test(test_06_unchanged_toast),
        cmocka_unit_test(test_07_truncate),
        cmocka_unit_test(test_08_relation_replaced),
        cmocka_unit_test(test_09_origin),
        cmocka_unit_test(test_10_messages),
        cmocka_unit_test(test_11_types),
        cmocka_unit_test(test_00_frames),
        cmocka_unit_test(test_build_status),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_change_before_relation),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_wide_relation),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_truncated_frames),
        cmocka_unit_test(test_bit_flips),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
