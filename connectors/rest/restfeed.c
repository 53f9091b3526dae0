#include "restfeed.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Markers inside decoded strings (see restfeed.h). */
#define MARK_NUM '#'
#define MARK_ESC '$'

/* ---- JSON with exact numbers ---- */

/* Length of the JSON number at p (RFC 8259 grammar), 0 when there is none. */
static size_t number_len(const char *p, size_t n)
{
    size_t i = 0, s;

    if (i < n && p[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (p[i] == '0')
        i++;
    else if (p[i] >= '1' && p[i] <= '9')
        while (i < n && isdigit((unsigned char)p[i]))
            i++;
    else
        return 0;
    if (i < n && p[i] == '.') {
        s = ++i;
        while (i < n && isdigit((unsigned char)p[i]))
            i++;
        if (i == s)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        s = i;
        while (i < n && isdigit((unsigned char)p[i]))
            i++;
        if (i == s)
            return 0;
    }
    return i;
}

bool rf_is_json_number(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && number_len(s, n) == n;
}

json_t *rf_json_load(const char *text, size_t len, struct err *e)
{
    struct strbuf b;
    json_error_t je;
    json_t *doc = NULL;
    size_t i = 0;

    strbuf_init(&b);
    while (i < len) {
        char c = text[i];

        if (c == '"') {
            size_t j = i + 1;
            bool lead1 = len - j >= 6 && memcmp(text + j, "\\u0001", 6) == 0;

            while (j < len && text[j] != '"')
                j += text[j] == '\\' ? 2 : 1;
            if (j >= len) {
                err_set(e, -EPROTO, "not JSON: unterminated string at byte %zu", i);
                goto out;
            }
            if (lead1) {
                strbuf_add(&b, "\"\\u0001$", 8);
                strbuf_add(&b, text + i + 1, j - i);
            } else {
                strbuf_add(&b, text + i, j - i + 1);
            }
            i = j + 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n = number_len(text + i, len - i);

            if (n == 0) {
                err_set(e, -EPROTO, "not JSON: bad number at byte %zu", i);
                goto out;
            }
            strbuf_add(&b, "\"\\u0001#", 8);
            strbuf_add(&b, text + i, n);
            strbuf_addc(&b, '"');
            i += n;
        } else {
            strbuf_addc(&b, c);
            i++;
        }
    }
    if (b.failed) {
        err_set(e, -ENOMEM, "out of memory parsing JSON");
        goto out;
    }
    doc = json_loadb(b.buf ? b.buf : "", b.len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (doc == NULL)
        err_set(e, -EPROTO, "not JSON: %s at line %d column %d", je.text,
                je.line, je.column);
out:
    strbuf_free(&b);
    return doc;
}

/* A decoded string's real content: number text, or string without marks. */
static enum rf_kind string_kind(const json_t *v, const char **s, size_t *n)
{
    *s = json_string_value(v);
    *n = json_string_length(v);
    if (*n >= 2 && (*s)[0] == '\x01') {
        char m = (*s)[1];
        *s += 2;
        *n -= 2;
        if (m == MARK_NUM)
            return RF_NUMBER;
    }
    return RF_STRING;
}

static void dump_key(struct strbuf *out, const char *k)
{
    size_t n = strlen(k);

    if (n >= 2 && k[0] == '\x01' && k[1] == MARK_ESC) {
        k += 2;
        n -= 2;
    }
    strbuf_add_json_string(out, k, n);
}

void rf_json_dump(const json_t *v, struct strbuf *out)
{
    const char *s, *k;
    size_t n, i;
    json_t *x;
    bool first = true;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        strbuf_addc(out, '{');
        json_object_foreach((json_t *)v, k, x) {
            if (!first)
                strbuf_addc(out, ',');
            first = false;
            dump_key(out, k);
            strbuf_addc(out, ':');
            rf_json_dump(x, out);
        }
        strbuf_addc(out, '}');
        break;
    case JSON_ARRAY:
        strbuf_addc(out, '[');
        json_array_foreach(v, i, x) {
            if (i > 0)
                strbuf_addc(out, ',');
            rf_json_dump(x, out);
        }
        strbuf_addc(out, ']');
        break;
    case JSON_STRING:
        if (string_kind(v, &s, &n) == RF_NUMBER)
            strbuf_add(out, s, n);
        else
            strbuf_add_json_string(out, s, n);
        break;
    case JSON_INTEGER: case JSON_REAL: {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (t == NULL)
            out->failed = true;
        else
            strbuf_adds(out, t);
        free(t);
        break;
    }
    case JSON_TRUE:
        strbuf_adds(out, "true");
        break;
    case JSON_FALSE:
        strbuf_adds(out, "false");
        break;
    default:
        strbuf_adds(out, "null");
        break;
    }
}

enum rf_kind rf_value(const json_t *v, struct strbuf *out)
{
    const char *s;
    size_t n;
    enum rf_kind k;

    if (v == NULL || json_is_null(v))
        return RF_NULL;
    if (json_is_true(v)) {
        strbuf_adds(out, "true");
        return RF_BOOL;
    }
    if (json_is_false(v)) {
        strbuf_adds(out, "false");
        return RF_BOOL;
    }
    if (json_is_string(v)) {
        k = string_kind(v, &s, &n);
        if (memchr(s, '\0', n) != NULL)
            return RF_INVALID;
        strbuf_add(out, s, n);
        return k;
    }
    if (json_is_number(v)) {
        rf_json_dump(v, out);
        return RF_NUMBER;
    }
    rf_json_dump(v, out);
    return RF_JSON;
}

const json_t *rf_pointer(const json_t *doc, const char *ptr)
{
    const json_t *cur = doc;
    char tok[256];

    if (ptr == NULL || doc == NULL)
        return NULL;
    if (ptr[0] == '\0')
        return doc;
    if (ptr[0] != '/')
        return NULL;
    while (*ptr == '/' && cur != NULL) {
        size_t n = 0;

        ptr++;
        while (*ptr && *ptr != '/') {
            char c = *ptr++;
            if (c == '~') {
                if (*ptr == '0')
                    c = '~';
                else if (*ptr == '1')
                    c = '/';
                else
                    return NULL;
                ptr++;
            }
            if (n + 1 >= sizeof(tok))
                return NULL;
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long idx;

            if (n == 0 || (n > 1 && tok[0] == '0') || !isdigit((unsigned char)tok[0]))
                return NULL;
            idx = strtoul(tok, &end, 10);
            if (*end != '\0')
                return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

/* ---- names ---- */

const char *rf_b_name(const struct cfg_mapping *m, const char *a)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, a) == 0)
            return m->fields[i].value;
    return NULL;
}

const char *rf_a_name(const struct cfg_mapping *m, const char *b)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].value, b) == 0)
            return m->fields[i].name;
    return NULL;
}

/* ---- numbers and times ---- */

bool rf_decimal_norm(const char *s, char *out, size_t cap)
{
    char digits[512];
    size_t nd = 0;
    long point = 0, exp10 = 0;
    bool neg = false, any = false, in_frac = false;
    const char *p = s;

    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    for (; *p; p++) {
        if (isdigit((unsigned char)*p)) {
            any = true;
            if (nd == 0 && *p == '0') {     /* leading zero */
                if (in_frac)
                    point--;
                continue;
            }
            if (nd + 1 >= sizeof(digits))
                return false;
            digits[nd++] = *p;
            if (!in_frac)
                point++;
        } else if (*p == '.' && !in_frac) {
            in_frac = true;
        } else {
            break;
        }
    }
    if (!any)
        return false;
    if (*p == 'e' || *p == 'E') {
        char *end;
        long x;

        p++;
        if (!isdigit((unsigned char)*p) && !((*p == '+' || *p == '-') &&
                                             isdigit((unsigned char)p[1])))
            return false;
        x = strtol(p, &end, 10);
        if (x > 1000000 || x < -1000000)
            return false;
        exp10 = x;
        p = end;
    }
    if (*p != '\0')
        return false;
    while (nd > 0 && digits[nd - 1] == '0')
        nd--;
    if (nd == 0) {
        snprintf(out, cap, "0");
        return true;
    }
    digits[nd] = '\0';
    return (size_t)snprintf(out, cap, "%c%se%ld", neg ? '-' : '+', digits,
                            point + exp10) < cap;
}

bool rf_number_exact(const char *s)
{
    char want[600], got[600], buf[64];
    const char *e;
    size_t sig;
    long exp10;
    double d;

    if (!rf_is_json_number(s) || !rf_decimal_norm(s, want, sizeof(want)))
        return false;
    if (strcmp(want, "0") == 0)
        return true;
    e = strchr(want, 'e');
    sig = (size_t)(e - want) - 1;
    exp10 = strtol(e + 1, NULL, 10);
    if (sig <= 15 && exp10 > -290 && exp10 < 300)
        return true;
    d = strtod(s, NULL);
    if (!isfinite(d) || d == 0)
        return false;
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
        if (rf_decimal_norm(buf, got, sizeof(got)) && strcmp(got, want) == 0)
            return true;
    }
    return false;
}

static bool take_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int rf_parse_time(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, sec, tzh = 0, tzm = 0, frac = 0, fd = 0;
    const char *p = s;
    int sign = 0;

    if (s == NULL || !take_digits(&p, 4, &y) || *p++ != '-' ||
        !take_digits(&p, 2, &mo) || *p++ != '-' || !take_digits(&p, 2, &d) ||
        (*p != 'T' && *p != 't' && *p != ' '))
        return -EINVAL;
    p++;
    if (!take_digits(&p, 2, &h) || *p++ != ':' || !take_digits(&p, 2, &mi) ||
        *p++ != ':' || !take_digits(&p, 2, &sec))
        return -EINVAL;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        for (; isdigit((unsigned char)*p); p++)
            if (fd < 6) {
                frac = frac * 10 + (*p - '0');
                fd++;
            }
        for (; fd < 6; fd++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (!take_digits(&p, 2, &tzh))
            return -EINVAL;
        if (*p == ':')
            p++;
        if (isdigit((unsigned char)*p) && !take_digits(&p, 2, &tzm))
            return -EINVAL;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || sec > 60 || tzh > 23 || tzm > 59)
        return -EINVAL;
    *us = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
            mi * 60 + sec - sign * (tzh * 3600 + tzm * 60)) * 1000000) + frac;
    return 0;
}

bool rf_pg_ts_to_rfc3339(const char *s, char *out, size_t cap)
{
    const char *p = s, *tz;
    int v;
    size_t n;

    if (!take_digits(&p, 4, &v) || *p++ != '-' || !take_digits(&p, 2, &v) ||
        *p++ != '-' || !take_digits(&p, 2, &v) || *p++ != ' ' ||
        !take_digits(&p, 2, &v) || *p++ != ':' || !take_digits(&p, 2, &v) ||
        *p++ != ':' || !take_digits(&p, 2, &v))
        return false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    tz = p;
    if (*p != '+' && *p != '-')
        return false;
    p++;
    if (!take_digits(&p, 2, &v))
        return false;
    if (*p == ':') {
        if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != '\0')
            return false;
    } else if (*p != '\0') {
        return false;
    }
    n = (size_t)(tz - s);
    if (n + 7 > cap)
        return false;
    memcpy(out, s, n);
    out[10] = 'T';
    memcpy(out + n, tz, 3);
    if (tz[3] == ':')
        memcpy(out + n + 3, tz + 3, 3);
    else
        memcpy(out + n + 3, ":00", 3);
    out[n + 6] = '\0';
    return true;
}

static int bool_text(const char *s)
{
    if (!strcmp(s, "t") || !strcmp(s, "true"))
        return 1;
    if (!strcmp(s, "f") || !strcmp(s, "false"))
        return 0;
    return -1;
}

bool rf_value_equal(const char *a, const char *b, char kb)
{
    char na[600], nb[600];
    int64_t ta, tb;

    if (a == NULL || b == NULL)
        return a == b;
    if (strcmp(a, b) == 0)
        return true;
    if (kb == RF_NUMBER)
        return rf_decimal_norm(a, na, sizeof(na)) &&
               rf_decimal_norm(b, nb, sizeof(nb)) && strcmp(na, nb) == 0;
    if (kb == RF_BOOL)
        return bool_text(a) >= 0 && bool_text(a) == bool_text(b);
    return rf_parse_time(a, &ta) == 0 && rf_parse_time(b, &tb) == 0 && ta == tb;
}

bool rf_fields_equal(const json_t *rec_fields, const json_t *rec_kinds,
                     const json_t *want)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)want, k, v) {
        const json_t *rv = json_object_get(rec_fields, k);
        const char *kind = json_string_value(json_object_get(rec_kinds, k));

        if (!rf_value_equal(json_string_value(v), json_string_value(rv),
                            kind ? kind[0] : 0))
            return false;
    }
    return true;
}

/* ---- records ---- */

void rf_record_clear(struct rf_record *r)
{
    free(r->key);
    json_decref(r->fields);
    json_decref(r->kinds);
    free(r->cursor);
    free(r->rev);
    free(r->error);
    free(r->excerpt);
    memset(r, 0, sizeof(*r));
}

static char *excerpt_of(const json_t *v)
{
    struct strbuf b;
    size_t n;
    char *out;

    strbuf_init(&b);
    rf_json_dump(v, &b);
    if (b.failed) {
        strbuf_free(&b);
        return NULL;
    }
    n = b.len;
    if (n > RF_EXCERPT_MAX) {
        n = RF_EXCERPT_MAX;
        while (n > 0 && ((unsigned char)b.buf[n] & 0xC0) == 0x80)
            n--;
    }
    out = strndup(b.buf ? b.buf : "", n);
    strbuf_free(&b);
    return out;
}

/* Text of a scalar (string or number) into a new string; NULL otherwise. */
static char *scalar_text(const json_t *v, enum rf_kind *kind)
{
    struct strbuf b;
    enum rf_kind k;
    char *out = NULL;

    if (v == NULL || !(json_is_string(v) || json_is_number(v)))
        return NULL;
    strbuf_init(&b);
    k = rf_value(v, &b);
    if (kind)
        *kind = k;
    if ((k == RF_STRING || k == RF_NUMBER) && !b.failed)
        out = strdup(strbuf_cstr(&b));
    strbuf_free(&b);
    return out;
}

static bool truthy(const json_t *v)
{
    const char *s;

    if (json_is_true(v))
        return true;
    if (!json_is_string(v))
        return false;
    s = json_string_value(v);
    if (s[0] == '\x01' && s[1] == MARK_NUM)
        return strcmp(s + 2, "0") != 0;
    return bool_text(s) == 1;
}

static int record_error(struct rf_record *r, const json_t *rec, const char *fmt,
                        const char *arg)
{
    char msg[512];

    snprintf(msg, sizeof(msg), fmt, arg);
    free(r->error);
    r->error = strdup(msg);
    if (r->excerpt == NULL)
        r->excerpt = excerpt_of(rec);
    return r->error == NULL ? -ENOMEM : 0;
}

int rf_map_record(const struct cfg_mapping *m, const struct cfg_side *sd,
                  const json_t *rec, const json_t *result,
                  struct rf_record *r)
{
    bool side_b = sd == &m->b;
    const struct cfg_feed *f = &sd->feed;
    const char *tf = m->timestamp_field;
    struct strbuf kb, vb;
    size_t total = 0;
    int rc = 0;

    memset(r, 0, sizeof(r[0]));
    /* The position first: a record in error moves the cursor too. */
    if (f->style == CFG_FEED_SEQUENCE && json_is_object(result) && f->seq_field != NULL)
        r->cursor = scalar_text(json_object_get(result, f->seq_field), NULL);
    else if (f->style != CFG_FEED_SEQUENCE && f->cursor_field != NULL && json_is_object(rec))
        r->cursor = scalar_text(json_object_get(rec, f->cursor_field), NULL);
    if (!json_is_object(rec))
        return record_error(r, result ? result : rec, "record is not an object", NULL);
    r->fields = json_object();
    r->kinds = json_object();
    if (r->fields == NULL || r->kinds == NULL)
        return -ENOMEM;
    strbuf_init(&kb);
    strbuf_init(&vb);
    /* key */
    strbuf_addc(&kb, '[');
    for (size_t i = 0; i < sd->nkey; i++) {
        const json_t *kv = json_object_get(rec, sd->key[i]);
        enum rf_kind k = RF_NULL;
        char *t;

        if ((kv == NULL || json_is_null(kv)) && result != NULL && sd->nkey == 1 &&
            f->id_field != NULL)
            kv = json_object_get(result, f->id_field);
        if (kv == NULL || json_is_null(kv)) {
            rc = record_error(r, result ? result : rec,
                              "record has no value for key field \"%s\"", sd->key[i]);
            goto out;
        }
        t = scalar_text(kv, &k);
        if (t == NULL) {
            rc = record_error(r, result ? result : rec,
                              "key field \"%s\" is not a string or a number", sd->key[i]);
            goto out;
        }
        if (t[0] == '\0') {
            free(t);
            rc = record_error(r, result ? result : rec, "key field \"%s\" is empty",
                              sd->key[i]);
            goto out;
        }
        if (i > 0)
            strbuf_addc(&kb, ',');
        strbuf_add_json_string(&kb, t, strlen(t));
        free(t);
    }
    strbuf_addc(&kb, ']');
    if (kb.failed) {
        rc = -ENOMEM;
        goto out;
    }
    r->key = strdup(kb.buf);
    /* fields */
    for (size_t i = 0; i < m->nfields; i++) {
        const char *an = m->fields[i].name;
        const char *rn = side_b ? m->fields[i].value : an;
        const json_t *v = json_object_get(rec, rn);
        char kind[2] = { 0, 0 };
        enum rf_kind k;

        strbuf_reset(&vb);
        k = rf_value(v, &vb);
        if (k == RF_INVALID) {
            rc = record_error(r, rec, "field \"%s\" holds a string with a NUL byte", rn);
            goto out;
        }
        if (vb.failed) {
            rc = -ENOMEM;
            goto out;
        }
        kind[0] = (char)k;
        total += vb.len + strlen(an);
        if (k == RF_NULL)
            json_object_set_new(r->fields, an, json_null());
        else
            json_object_set_new(r->fields, an, json_stringn(strbuf_cstr(&vb), vb.len));
        json_object_set_new(r->kinds, an, json_string(kind));
    }
    if (total > RF_RECORD_MAX) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", total);
        rc = record_error(r, rec, "record of %s bytes is over the 1 MiB limit", n);
        goto out;
    }
    /* deleted: the feed's flag (on the entry or the record), or a
     * soft-delete flag tandem itself writes */
    if (f->deleted_field != NULL)
        r->deleted = truthy(json_object_get(rec, f->deleted_field)) ||
                     (result && truthy(json_object_get(result, f->deleted_field)));
    if (sd->write.del_soft_field != NULL &&
        truthy(json_object_get(rec, sd->write.del_soft_field)))
        r->deleted = true;
    if (m->soft_delete_field != NULL &&
        truthy(json_object_get(rec, m->soft_delete_field)))
        r->deleted = true;
    /* version */
    if (sd->write.revision_field != NULL)
        r->rev = scalar_text(json_object_get(rec, sd->write.revision_field), NULL);
    if (tf != NULL) {
        const char *tn = side_b ? rf_b_name(m, tf) : tf;
        char *t = scalar_text(json_object_get(rec, tn ? tn : tf), NULL);
        if (t != NULL && rf_parse_time(t, &r->version_us) != 0)
            r->version_us = 0;
        free(t);
    }
    if (r->version_us == 0 && f->style != CFG_FEED_SEQUENCE && r->cursor != NULL &&
        rf_parse_time(r->cursor, &r->version_us) != 0)
        r->version_us = 0;
out:
    strbuf_free(&kb);
    strbuf_free(&vb);
    return rc;
}

/* ---- pages ---- */

void rf_page_free(struct rf_page *p)
{
    for (size_t i = 0; i < p->n; i++)
        rf_record_clear(&p->recs[i]);
    free(p->recs);
    free(p->last_seq);
    memset(p, 0, sizeof(*p));
}

int rf_parse_page(const struct cfg_mapping *m, const struct cfg_side *sd,
                  const char *body, size_t len, struct rf_page *out,
                  struct err *e)
{
    const struct cfg_feed *f = &sd->feed;
    bool seq = f->style == CFG_FEED_SEQUENCE;
    const char *ptr = f->records ? f->records : (seq ? "/results" : "");
    const json_t *arr, *el;
    json_t *doc, *empty = NULL;
    size_t i;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    doc = rf_json_load(body, len, e);
    if (doc == NULL)
        return e && e->code ? e->code : -EPROTO;
    arr = rf_pointer(doc, ptr);
    if (!json_is_array(arr)) {
        rc = err_set(e, -EPROTO, "page has no records array at \"%s\"", ptr);
        goto out;
    }
    out->recs = calloc(json_array_size(arr) + 1, sizeof(*out->recs));
    empty = json_object();
    if (out->recs == NULL || empty == NULL) {
        rc = err_set(e, -ENOMEM, "out of memory");
        goto out;
    }
    json_array_foreach(arr, i, el) {
        const json_t *rec = el, *result = NULL;

        if (seq) {
            result = el;
            rec = json_is_object(el) ? json_object_get(el, f->doc_field ? f->doc_field : "doc")
                                     : el;
            if (json_is_object(el) && !json_is_object(rec))
                rec = empty;
        }
        if (rf_map_record(m, sd, rec, result, &out->recs[out->n++]) != 0) {
            rc = err_set(e, -ENOMEM, "out of memory");
            goto out;
        }
    }
    if (seq) {
        const json_t *ls = rf_pointer(doc, f->last_seq ? f->last_seq : "/last_seq");

        out->last_seq = scalar_text(ls, NULL);
        if (out->last_seq == NULL && out->n > 0 && out->recs[out->n - 1].cursor)
            out->last_seq = strdup(out->recs[out->n - 1].cursor);
        if (out->last_seq == NULL && out->n > 0)
            rc = err_set(e, -EPROTO, "page has no last sequence at \"%s\" and its last"
                         " entry no \"%s\"", f->last_seq ? f->last_seq : "/last_seq",
                         f->seq_field ? f->seq_field : "seq");
    }
out:
    json_decref(empty);
    json_decref(doc);
    if (rc != 0)
        rf_page_free(out);
    return rc;
}

/* ---- the updated_since cursor ---- */

void rf_cursor_init(struct rf_cursor *c)
{
    memset(c, 0, sizeof(*c));
}

void rf_cursor_clear(struct rf_cursor *c)
{
    free(c->value);
    for (size_t i = 0; i < c->nseen; i++)
        free(c->seen[i]);
    free(c->seen);
    memset(c, 0, sizeof(*c));
}

static int seen_add(struct rf_cursor *c, const char *key)
{
    char *k = strdup(key), **n;

    if (k == NULL)
        return -ENOMEM;
    if (c->nseen == RF_SEEN_MAX) {
        free(c->seen[0]);
        memmove(c->seen, c->seen + 1, (c->nseen - 1) * sizeof(*c->seen));
        c->nseen--;
    }
    n = realloc(c->seen, (c->nseen + 1) * sizeof(*n));
    if (n == NULL) {
        free(k);
        return -ENOMEM;
    }
    c->seen = n;
    c->seen[c->nseen++] = k;
    return 0;
}

static bool seen_has(const struct rf_cursor *c, const char *key)
{
    for (size_t i = c->nseen; i-- > 0;)
        if (strcmp(c->seen[i], key) == 0)
            return true;
    return false;
}

int rf_cursor_copy(struct rf_cursor *dst, const struct rf_cursor *src)
{
    rf_cursor_init(dst);
    if (src->value != NULL && (dst->value = strdup(src->value)) == NULL)
        return -ENOMEM;
    dst->n_at = src->n_at;
    for (size_t i = 0; i < src->nseen; i++)
        if (seen_add(dst, src->seen[i]) != 0) {
            rf_cursor_clear(dst);
            return -ENOMEM;
        }
    return 0;
}

int rf_cursor_load(struct rf_cursor *c, const char *text)
{
    json_t *doc = json_loads(text, 0, NULL), *v, *seen;
    size_t i;
    int rc = 0;

    rf_cursor_init(c);
    v = json_object_get(doc, "cursor");
    seen = json_object_get(doc, "seen");
    if (!json_is_object(doc) || !(json_is_string(v) || json_is_null(v)) ||
        (seen != NULL && !json_is_array(seen))) {
        json_decref(doc);
        return -EINVAL;
    }
    if (json_is_string(v) && (c->value = strdup(json_string_value(v))) == NULL)
        rc = -ENOMEM;
    c->n_at = (long)json_integer_value(json_object_get(doc, "n"));
    json_array_foreach(seen, i, v)
        if (rc == 0 && json_is_string(v))
            rc = seen_add(c, json_string_value(v));
    json_decref(doc);
    if (rc != 0)
        rf_cursor_clear(c);
    return rc;
}

char *rf_cursor_save(const struct rf_cursor *c)
{
    json_t *doc = json_object(), *seen = json_array();
    char *out = NULL;

    if (doc != NULL && seen != NULL) {
        for (size_t i = 0; i < c->nseen; i++)
            json_array_append_new(seen, json_string(c->seen[i]));
        json_object_set_new(doc, "cursor", c->value ? json_string(c->value) : json_null());
        json_object_set_new(doc, "n", json_integer(c->n_at));
        json_object_set(doc, "seen", seen);
        out = json_dumps(doc, JSON_COMPACT);
    }
    json_decref(seen);
    json_decref(doc);
    return out;
}

/* What a record is known by at its cursor value: its key, or for a
 * record without one (dead-lettered) its excerpt, so it is not read and
 * dead-lettered again. */
static const char *seen_id(const struct rf_record *r)
{
    return r->key != NULL ? r->key : r->excerpt;
}

bool rf_cursor_seen(const struct rf_cursor *c, const struct rf_record *r)
{
    return c->value != NULL && r->cursor != NULL && seen_id(r) != NULL &&
           strcmp(c->value, r->cursor) == 0 && seen_has(c, seen_id(r));
}

int rf_cursor_advance(struct rf_cursor *c, const struct rf_record *r)
{
    const char *id = seen_id(r);
    char *v;

    if (r->cursor == NULL)
        return 0;
    if (c->value != NULL && strcmp(c->value, r->cursor) == 0) {
        if (id != NULL && seen_has(c, id))
            return 0;
        c->n_at++;
        return id ? seen_add(c, id) : 0;
    }
    if ((v = strdup(r->cursor)) == NULL)
        return -ENOMEM;
    rf_cursor_clear(c);
    c->value = v;
    c->n_at = 1;
    return id ? seen_add(c, id) : 0;
}

/* ---- requests ---- */

void rf_url_escape(struct strbuf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            strbuf_addc(out, (char)c);
        } else {
            char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
            strbuf_add(out, esc, 3);
        }
    }
}

static void add_param(struct strbuf *out, const char *name, const char *value)
{
    if (out->len > 0)
        strbuf_addc(out, '&');
    rf_url_escape(out, name, strlen(name));
    strbuf_addc(out, '=');
    rf_url_escape(out, value, strlen(value));
}

int rf_feed_query(const struct cfg_feed *f, const char *since, int limit,
                  long offset, struct strbuf *out)
{
    char num[32];
    bool seq = f->style == CFG_FEED_SEQUENCE;
    const char *sp = seq ? f->since_param : f->cursor_param;

    strbuf_reset(out);
    if (since != NULL && sp != NULL)
        add_param(out, sp, since);
    snprintf(num, sizeof(num), "%d", limit);
    add_param(out, f->limit_param ? f->limit_param : "limit", num);
    if (!seq && offset > 0 && f->offset_param != NULL) {
        snprintf(num, sizeof(num), "%ld", offset);
        add_param(out, f->offset_param, num);
    }
    for (size_t i = 0; i < f->nparams; i++)
        add_param(out, f->params[i].name, f->params[i].value);
    return out->failed ? -ENOMEM : 0;
}

static void add_text_string(struct strbuf *out, const char *s, size_t n)
{
    char ts[96];

    if (n < sizeof(ts) - 8 && rf_pg_ts_to_rfc3339(s, ts, sizeof(ts)))
        strbuf_add_json_string(out, ts, strlen(ts));
    else
        strbuf_add_json_string(out, s, n);
}

int rf_body_value(struct strbuf *out, const json_t *v, char kind,
                  enum cfg_numeric numeric, const char **why)
{
    const char *s;
    size_t n;

    if (v == NULL || json_is_null(v)) {
        strbuf_adds(out, "null");
        return 0;
    }
    if (!json_is_string(v)) {
        rf_json_dump(v, out);
        return 0;
    }
    s = json_string_value(v);
    n = json_string_length(v);
    switch (kind) {
    case RF_BOOL:
        if (bool_text(s) >= 0) {
            strbuf_adds(out, bool_text(s) ? "true" : "false");
            return 0;
        }
        break;
    case RF_JSON: {
        json_t *doc = rf_json_load(s, n, NULL);
        bool ok = json_is_object(doc) || json_is_array(doc);
        if (ok)
            rf_json_dump(doc, out);
        json_decref(doc);
        if (ok)
            return 0;
        break;
    }
    case RF_STRING:
        break;
    default:
        if (!rf_is_json_number(s) || n != strlen(s))
            break;
        if (numeric == CFG_NUM_STRING)
            break;
        if (!rf_number_exact(s)) {
            if (why)
                *why = "a JSON parser would round this number (more digits than"
                       " a double keeps); set \"numeric\": \"string\" on the endpoint";
            return -ERANGE;
        }
        strbuf_add(out, s, n);
        return 0;
    }
    add_text_string(out, s, n);
    return 0;
}
