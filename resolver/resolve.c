/* resolve.c: the resolver entry point, the checks every strategy shares,
 * value equality, timestamp parsing and staleness (G5). */
#include "resolver_int.h"

#include "../state/conflicts.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ---- */

/* A decimal text split for comparison by value, without any rounding:
 * the value is 0.D * 10^point, D = digits[first..last] of int ++ frac. */
struct rs_num {
    bool neg, zero;
    const char *ip, *fp;    /* integer and fraction digits */
    size_t il, fl;
    size_t first, ndig;     /* significant digits in the int ++ frac index */
    long long point;
};

static char rs_num_digit(const struct rs_num *n, size_t k)
{
    return k < n->il ? n->ip[k] : n->fp[k - n->il];
}

/* -?D*[.D*][(e|E)[+-]?D+], at least one mantissa digit. */
static bool rs_num_parse(const char *s, struct rs_num *n)
{
    const char *p = s;
    long long exp = 0;
    size_t total, last;

    memset(n, 0, sizeof(*n));
    if (*p == '-') {
        n->neg = true;
        p++;
    }
    n->ip = p;
    while (isdigit((unsigned char)*p))
        p++;
    n->il = (size_t)(p - n->ip);
    if (*p == '.') {
        n->fp = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        n->fl = (size_t)(p - n->fp);
    }
    if (n->il + n->fl == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        bool eneg = false;
        int ndig = 0;

        p++;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        while (isdigit((unsigned char)*p)) {
            if (++ndig > 9)
                return false;   /* absurd exponent: compare as text */
            exp = exp * 10 + (*p++ - '0');
        }
        if (ndig == 0)
            return false;
        if (eneg)
            exp = -exp;
    }
    if (*p != '\0')
        return false;
    total = n->il + n->fl;
    while (n->first < total && rs_num_digit(n, n->first) == '0')
        n->first++;
    if (n->first == total) {
        n->zero = true;
        return true;
    }
    last = total - 1;
    while (rs_num_digit(n, last) == '0')
        last--;
    n->ndig = last - n->first + 1;
    n->point = (long long)n->il + exp - (long long)n->first;
    return true;
}

bool resolve_values_equal(const char *a, const char *b)
{
    struct rs_num x, y;

    if (a == NULL || b == NULL)
        return a == b;
    if (strcmp(a, b) == 0)
        return true;
    if (!rs_num_parse(a, &x) || !rs_num_parse(b, &y))
        return false;
    if (x.zero || y.zero)
        return x.zero && y.zero;
    if (x.neg != y.neg || x.point != y.point || x.ndig != y.ndig)
        return false;
    for (size_t k = 0; k < x.ndig; k++)
        if (rs_num_digit(&x, x.first + k) != rs_num_digit(&y, y.first + k))
            return false;
    return true;
}

/* ---- timestamps ---- */

static bool rs_digits(const char **pp, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*pp)[i]))
            return false;
        v = v * 10 + ((*pp)[i] - '0');
    }
    *pp += n;
    *out = v;
    return true;
}

/* Days from 1970-01-01 to y-m-d, proleptic Gregorian (H. Hinnant). */
static long long rs_days_from_civil(long long y, int m, int d)
{
    long long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int rs_days_in_month(int y, int m)
{
    static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : dm[m - 1];
}

int resolve_parse_timestamp(const char *s, int64_t *out_us)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, zh = 0, zm = 0, zs = 0;
    long long us = 0, off = 0, days;

    if (s == NULL || !rs_digits(&p, 4, &y) || *p++ != '-' ||
        !rs_digits(&p, 2, &mo) || *p++ != '-' || !rs_digits(&p, 2, &d))
        return -EINVAL;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > rs_days_in_month(y, mo))
        return -EINVAL;
    if (*p == 'T' || *p == 't' || (*p == ' ' && isdigit((unsigned char)p[1]))) {
        p++;
        if (!rs_digits(&p, 2, &h) || *p++ != ':' || !rs_digits(&p, 2, &mi))
            return -EINVAL;
        if (*p == ':') {
            p++;
            if (!rs_digits(&p, 2, &sec))
                return -EINVAL;
            if (*p == '.' || *p == ',') {
                int nd = 0;

                p++;
                if (!isdigit((unsigned char)*p))
                    return -EINVAL;
                for (; isdigit((unsigned char)*p); p++, nd++)
                    if (nd < 6)
                        us = us * 10 + (*p - '0');
                for (; nd < 6; nd++)
                    us *= 10;
            }
        }
        if (h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi || sec || us)))
            return -EINVAL;
    }
    if (*p == ' ' && (p[1] == '+' || p[1] == '-' || p[1] == 'Z'))
        p++;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;

        if (!rs_digits(&p, 2, &zh))
            return -EINVAL;
        if (*p == ':')
            p++;
        if (isdigit((unsigned char)*p)) {
            if (!rs_digits(&p, 2, &zm))
                return -EINVAL;
            if (*p == ':')
                p++;
            if (isdigit((unsigned char)*p) && !rs_digits(&p, 2, &zs))
                return -EINVAL;
        }
        if (zh > 15 || zm > 59 || zs > 59)
            return -EINVAL;
        off = sign * ((long long)zh * 3600 + zm * 60 + zs);
    }
    if (*p != '\0')
        return -EINVAL;
    days = rs_days_from_civil(y, mo, d);
    *out_us = (int64_t)(((days * 86400 + h * 3600LL + mi * 60LL + sec) - off)
                        * 1000000LL + us);
    return 0;
}

int64_t resolve_version(const struct cfg_mapping *m, const struct resolve_side *s)
{
    const json_t *v;
    int64_t t;

    if (m == NULL || m->timestamp_field == NULL || s->deleted ||
        !json_is_object(s->fields))
        return s->version_us;
    v = json_object_get(s->fields, m->timestamp_field);
    if (!json_is_string(v) || resolve_parse_timestamp(json_string_value(v), &t) != 0)
        return s->version_us;
    return t;
}

/* ---- staleness ---- */

bool resolve_is_stale(const struct resolve_base *base, char side,
                      int64_t version_us)
{
    if (base == NULL)
        return false;
    return version_us < (side == 'b' ? base->version_b_us : base->version_a_us);
}

static bool rs_same_as_base(const struct resolve_base *base,
                            const struct resolve_side *s)
{
    const char *k;
    json_t *v;

    if (base->tombstone || s->deleted)
        return base->tombstone && s->deleted;
    if (!json_is_object(base->fields))
        return false;
    json_object_foreach((json_t *)s->fields, k, v) {
        const json_t *bv = json_object_get(base->fields, k);

        if (bv == NULL || !rs_vequal(v, bv))
            return false;
    }
    return true;
}

enum resolve_fresh resolve_check(const struct resolve_base *base, char side,
                                 const struct resolve_side *s)
{
    int64_t bv;

    if (base == NULL)
        return RESOLVE_FRESH_NEW;
    bv = side == 'b' ? base->version_b_us : base->version_a_us;
    if (s->version_us < bv)
        return RESOLVE_FRESH_STALE;
    /* G5: a tombstone carries its delete's version, whichever side deleted:
     * a write older than it does not bring the record back. */
    if (base->tombstone && !s->deleted &&
        s->version_us < (base->version_a_us > base->version_b_us ? base->version_a_us
                                                                 : base->version_b_us))
        return RESOLVE_FRESH_STALE;
    if (rs_same_as_base(base, s))
        return s->version_us == bv ? RESOLVE_FRESH_DUPLICATE : RESOLVE_FRESH_ECHO;
    if (base->tombstone && !s->deleted)
        return RESOLVE_FRESH_NEW;
    return RESOLVE_FRESH_CHANGE;
}

/* ---- shared helpers ---- */

const json_t *rs_basev(const struct rs *c, const char *name)
{
    return c->basef != NULL ? json_object_get(c->basef, name) : NULL;
}

const json_t *rs_eff(const struct rs *c, int side, const char *name, bool *sent)
{
    const struct resolve_side *s = c->s[side];
    const json_t *v;

    if (sent != NULL)
        *sent = false;
    if (s->deleted)
        return NULL;
    v = json_object_get(s->fields, name);
    if (sent != NULL)
        *sent = v != NULL;
    return v != NULL ? v : rs_basev(c, name);
}

bool rs_vequal(const json_t *x, const json_t *y)
{
    if (x == NULL || y == NULL)
        return x == y;
    if (json_is_null(x) || json_is_null(y))
        return json_is_null(x) && json_is_null(y);
    return resolve_values_equal(json_string_value(x), json_string_value(y));
}

const json_t *rs_pick_equal(const json_t *x, const json_t *y)
{
    if (!json_is_string(x) || !json_is_string(y))
        return x != NULL ? x : y;
    return strcmp(json_string_value(x), json_string_value(y)) <= 0 ? x : y;
}

int rs_set(struct rs *c, const char *name, const json_t *v)
{
    json_t *copy;

    if (c->r->fields == NULL && (c->r->fields = json_object()) == NULL)
        return -ENOMEM;
    copy = json_is_string(v) ? json_stringn(json_string_value(v), json_string_length(v))
                             : json_null();
    if (copy == NULL || json_object_set_new(c->r->fields, name, copy) != 0)
        return -ENOMEM;
    return 0;
}

int rs_explain(struct rs *c, const char *field, const char *taken,
               const char *rule)
{
    json_t *o;

    if (c->r->explain == NULL && (c->r->explain = json_array()) == NULL)
        return -ENOMEM;
    o = json_pack("{s:o,s:o,s:s}",
                  "field", field != NULL ? json_string(field) : json_null(),
                  "taken_from", taken != NULL ? json_string(taken) : json_null(),
                  "rule", rule);
    if (o == NULL || json_array_append_new(c->r->explain, o) != 0)
        return -ENOMEM;
    return 0;
}

void rs_detail(struct rs *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->r->detail, sizeof(c->r->detail), fmt, ap);
    va_end(ap);
}

int rs_fail(struct rs *c, int code, const char *fmt, ...)
{
    struct resolve_result *r = c->r;
    va_list ap;

    json_decref(r->fields);
    r->fields = NULL;
    r->outcome = RESOLVE_ERROR;
    r->deleted = false;
    r->winner = 0;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
    return code;
}

int rs_delete(struct rs *c, const char *taken, const char *rule)
{
    json_decref(c->r->fields);
    c->r->fields = NULL;
    c->r->deleted = true;
    return rs_explain(c, NULL, taken, rule);
}

int rs_whole(struct rs *c, int w, const char *rule)
{
    int o = 1 - w, rc;

    c->r->winner = rs_letter(w);
    if (c->s[w]->deleted)
        return rs_delete(c, rs_letter_str(w), rule);
    for (size_t i = 0; i < c->nnames; i++) {
        const char *n = c->names[i];
        bool sw, so;
        const json_t *vw = rs_eff(c, w, n, &sw), *vo = rs_eff(c, o, n, &so);

        const char *taken = rs_letter_str(w), *why = rule;

        if (vw == NULL && vo == NULL)
            continue;
        if (vw == NULL) {
            vw = vo;
            taken = rs_letter_str(o);
            why = "fill_from_other";
        } else if (rs_vequal(vw, vo)) {
            vw = rs_pick_equal(vw, vo);
            taken = !sw && !so ? "base" : "both_equal";
            why = !sw && !so ? "unchanged" : "equal";
        }
        if ((rc = rs_set(c, n, vw)) != 0 || (rc = rs_explain(c, n, taken, why)) != 0)
            return rc;
    }
    if (c->r->fields == NULL && (c->r->fields = json_object()) == NULL)
        return -ENOMEM;
    return 0;
}

int rs_park(struct rs *c, const char *rule)
{
    struct resolve_result *r = c->r;
    int rc = 0;

    json_decref(r->fields);
    r->fields = NULL;
    json_decref(r->explain);
    r->explain = NULL;
    r->outcome = RESOLVE_PARK;
    r->deleted = false;
    r->winner = 0;
    r->rule = "manual";
    if (c->s[RS_A]->deleted || c->s[RS_B]->deleted)
        return rs_explain(c, NULL, NULL, rule);
    for (size_t i = 0; i < c->nnames && rc == 0; i++) {
        const char *n = c->names[i];
        bool sa, sb;
        const json_t *va = rs_eff(c, RS_A, n, &sa), *vb = rs_eff(c, RS_B, n, &sb);

        if (!rs_vequal(va, vb))
            rc = rs_explain(c, n, NULL, rule);
        else if (va != NULL)
            rc = rs_explain(c, n, !sa && !sb ? "base" : "both_equal",
                            !sa && !sb ? "unchanged" : "equal");
    }
    return rc;
}

char *rs_dump_side(const struct rs *c, int side)
{
    json_t *o;
    char *t;

    if (c->s[side]->deleted || (o = json_object()) == NULL)
        return NULL;
    for (size_t i = 0; i < c->nnames; i++) {
        const json_t *v = rs_eff(c, side, c->names[i], NULL);

        if (v != NULL && json_object_set(o, c->names[i], (json_t *)v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    t = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return t;
}

/* ---- entry point ---- */

static int rs_cmp_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Fields must be objects of text or null. */
static int rs_check_record(struct rs *c, const json_t *o, const char *what)
{
    const char *k;
    json_t *v;

    if (!json_is_object(o))
        return rs_fail(c, -EINVAL, "resolve %s: %s record is not an object",
                       c->key, what);
    json_object_foreach((json_t *)o, k, v)
        if (!json_is_string(v) && !json_is_null(v))
            return rs_fail(c, -EINVAL,
                           "resolve %s: %s field %s: value must be text or null",
                           c->key, what, k);
    return 0;
}

static int rs_collect_names(struct rs *c)
{
    const json_t *objs[3] = { c->basef, NULL, NULL };
    size_t cap = 0, n = 0;
    const char *k;
    json_t *v;

    for (int i = 0; i < 2; i++)
        if (!c->s[i]->deleted)
            objs[i + 1] = c->s[i]->fields;
    for (int i = 0; i < 3; i++)
        cap += objs[i] != NULL ? json_object_size(objs[i]) : 0;
    c->names = calloc(cap + 1, sizeof(*c->names));
    if (c->names == NULL)
        return -ENOMEM;
    for (int i = 0; i < 3; i++) {
        if (objs[i] == NULL)
            continue;
        json_object_foreach((json_t *)objs[i], k, v)
            c->names[n++] = k;
    }
    qsort(c->names, n, sizeof(*c->names), rs_cmp_name);
    c->nnames = 0;
    for (size_t i = 0; i < n; i++)
        if (c->nnames == 0 || strcmp(c->names[c->nnames - 1], c->names[i]) != 0)
            c->names[c->nnames++] = c->names[i];
    return 0;
}

/* Both sides deleted, or both records equal field by field. */
static bool rs_sides_equal(const struct rs *c)
{
    if (c->s[RS_A]->deleted || c->s[RS_B]->deleted)
        return c->s[RS_A]->deleted && c->s[RS_B]->deleted;
    for (size_t i = 0; i < c->nnames; i++)
        if (!rs_vequal(rs_eff(c, RS_A, c->names[i], NULL),
                       rs_eff(c, RS_B, c->names[i], NULL)))
            return false;
    return true;
}

static int rs_equal(struct rs *c)
{
    int rc;

    c->r->rule = "equal";
    rs_detail(c, "both sides are already equal");
    if (c->s[RS_A]->deleted)
        return rs_delete(c, "both_equal", "equal");
    /* Same filling as a whole-record win; the result is symmetric. */
    rc = rs_whole(c, RS_A, "equal");
    c->r->winner = 0;
    return rc;
}

/* Side i must be written when its state differs from the result. */
static bool rs_needs_write(const struct rs *c, int side)
{
    const char *k;
    json_t *v;

    if (c->r->deleted)
        return !c->s[side]->deleted;
    if (c->s[side]->deleted)
        return true;
    json_object_foreach(c->r->fields, k, v)
        if (!rs_vequal(rs_eff(c, side, k, NULL), v))
            return true;
    return false;
}

static int rs_dispatch(struct rs *c)
{
    const struct cfg_mapping *m = c->m;
    int del_a = c->s[RS_A]->deleted, del_b = c->s[RS_B]->deleted;

    if (rs_sides_equal(c))
        return rs_equal(c);
    if (m->deletes == CFG_DEL_IGNORE && del_a != del_b) {
        c->r->rule = "deletes_ignored";
        rs_detail(c, "deletes are ignored: the record on %s (%s) is kept",
                  del_a ? "b" : "a", del_a ? m->b.endpoint : m->a.endpoint);
        return rs_whole(c, del_a ? RS_B : RS_A, "deletes_ignored");
    }
    switch (m->strategy) {
    case CFG_STRAT_LWW:
        return rs_lww(c);
    case CFG_STRAT_PRIORITY:
        return rs_priority(c);
    case CFG_STRAT_FIELD_MERGE:
        return rs_field_merge(c);
    case CFG_STRAT_MANUAL:
        return rs_manual(c);
    case CFG_STRAT_PLUGIN:
        return rs_plugin(c);
    }
    return rs_fail(c, -EINVAL, "resolve %s: unknown strategy %d", c->key,
                   (int)m->strategy);
}

int resolve(const struct cfg_mapping *m, const struct resolver_plugin *plugin,
            const char *key, const struct resolve_base *base,
            const struct resolve_side *a, const struct resolve_side *b,
            struct resolve_result *out)
{
    struct rs c = { .m = m, .plugin = plugin, .key = key != NULL ? key : "",
                    .base = base, .s = { a, b }, .r = out };
    int rc;

    memset(out, 0, sizeof(*out));
    out->rule = "";
    if (m == NULL || a == NULL || b == NULL)
        return rs_fail(&c, -EINVAL, "resolve %s: missing mapping or side", c.key);
    if (base != NULL && !base->tombstone) {
        if ((rc = rs_check_record(&c, base->fields, "base")) != 0)
            return rc;
        c.basef = base->fields;
    }
    if ((!a->deleted && (rc = rs_check_record(&c, a->fields, "side a")) != 0) ||
        (!b->deleted && (rc = rs_check_record(&c, b->fields, "side b")) != 0))
        return rc;
    if (rs_collect_names(&c) != 0)
        return rs_fail(&c, -ENOMEM, "resolve %s: out of memory", c.key);
    rc = rs_dispatch(&c);
    if (rc == -ENOMEM || (rc != 0 && out->outcome != RESOLVE_ERROR))
        rc = rs_fail(&c, rc, "resolve %s: %s", c.key, strerror(-rc));
    if (rc == 0 && out->outcome == RESOLVE_DECIDED) {
        out->write_a = rs_needs_write(&c, RS_A);
        out->write_b = rs_needs_write(&c, RS_B);
    }
    if (rc == 0 && out->explain == NULL && (out->explain = json_array()) == NULL)
        rc = rs_fail(&c, -ENOMEM, "resolve %s: out of memory", c.key);
    free(c.names);
    return rc;
}

void resolve_result_clear(struct resolve_result *r)
{
    if (r == NULL)
        return;
    json_decref(r->fields);
    json_decref(r->explain);
    memset(r, 0, sizeof(*r));
}

/* ---- the conflict log ---- */

int resolve_log_conflict(struct state *st, const struct resolve_log *l,
                         const struct resolve_result *res, struct err *e)
{
    char *result = res->fields ? json_dumps(res->fields, JSON_COMPACT) : NULL;
    char *decisions = res->explain ? json_dumps(res->explain, JSON_COMPACT) : NULL;
    struct conflict c = { 0 };
    int rc;

    c.mapping = l->m->name;
    c.key = l->key;
    c.strategy = config_strategy_name(l->m->strategy);
    c.base = l->base;
    c.side_a = l->side_a;
    c.side_b = l->side_b;
    c.open = res->outcome == RESOLVE_PARK;
    c.result = c.open ? NULL : result ? result : "null";
    c.rule = res->detail[0] ? res->detail : res->rule;
    c.version_a_us = l->version_a_us;
    c.version_b_us = l->version_b_us;
    c.decisions = decisions;
    rc = state_begin(st, e);
    if (rc == 0)
        rc = conflict_record(st, &c, e);
    free(result);
    free(decisions);
    return rc;
}
