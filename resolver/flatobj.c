#include "flatobj.h"
#include "../daemon/swar.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Up to this many pairs, keys are insertion-sorted (no qsort calls). */
#define FLATOBJ_SMALL 16


static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static const unsigned char *skip_ws(const unsigned char *p,
                                    const unsigned char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* Copied as is inside a string: not '"', '\\', control or non-ASCII. */
static bool is_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Nonzero when one of the 8 bytes of x is not plain. */
static uint64_t special8(uint64_t x)
{
    return (x & SWAR_HIGH) | swar_json_special(x);
}

static int hexval(unsigned c)
{
    if (c - '0' < 10u)
        return (int)(c - '0');
    c |= 0x20;
    if (c - 'a' < 6u)
        return (int)(c - 'a' + 10);
    return -1;
}

/* The 4 hex digits at p (bounds checked by the caller), or -1. */
static int32_t hex4(const unsigned char *p)
{
    int32_t v = 0;

    for (int i = 0; i < 4; i++) {
        int d = hexval(p[i]);

        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Length of the well-formed UTF-8 sequence at p (no overlong forms, no
 * surrogates, at most U+10FFFF, as jansson checks), or 0. p[0] >= 0x80. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0xC2)
        return 0;
    if (c < 0xE0) {
        n = 2;
    } else if (c < 0xF0) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c < 0xF5) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static unsigned char *put_utf8(unsigned char *out, uint32_t cp)
{
    if (cp < 0x80) {
        *out++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *out++ = (unsigned char)(0xC0 | cp >> 6);
        *out++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *out++ = (unsigned char)(0xE0 | cp >> 12);
        *out++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        *out++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *out++ = (unsigned char)(0xF0 | cp >> 18);
        *out++ = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        *out++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        *out++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    return out;
}

/* The escape at p (p[0] == '\\') into *outp; returns the bytes it took,
 * 0 if jansson would reject it or it is \u0000. */
static size_t unescape(const unsigned char *p, const unsigned char *end,
                       unsigned char **outp)
{
    static const unsigned char simple[256] = {
        ['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
        ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
    };
    int32_t cp, lo;

    if (end - p < 2)
        return 0;
    if (simple[p[1]] != 0) {
        *(*outp)++ = simple[p[1]];
        return 2;
    }
    if (p[1] != 'u' || end - p < 6 || (cp = hex4(p + 2)) <= 0)
        return 0;                       /* also \u0000: jansson rejects it */
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return 0;                       /* lone low surrogate */
    if (cp < 0xD800 || cp > 0xDBFF) {
        *outp = put_utf8(*outp, (uint32_t)cp);
        return 6;
    }
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0xDC00 ||
        lo > 0xDFFF)
        return 0;                       /* high surrogate without its low */
    *outp = put_utf8(*outp, 0x10000 + ((uint32_t)(cp - 0xD800) << 10) +
                                (uint32_t)(lo - 0xDC00));
    return 12;
}

/* Unescapes the string whose opening quote is at *pp into *outp and
 * NUL-terminates it; 1 with *pp past the closing quote and *outp past the
 * NUL, else 0. Output never outgrows input: a string's content plus its NUL
 * fit in the bytes of its content and quotes. */
static int scan_string(const unsigned char **pp, const unsigned char *end,
                       char **outp)
{
    const unsigned char *p = *pp + 1;
    unsigned char *out = (unsigned char *)*outp;
    size_t n;

    for (;;) {
        while (end - p >= 8) {
            uint64_t x;

            memcpy(&x, p, 8);
            if (special8(x) != 0)
                break;
            memcpy(out, p, 8);
            p += 8;
            out += 8;
        }
        while (p < end && is_plain(*p))
            *out++ = *p++;
        if (p == end)
            return 0;
        if (*p == '"')
            break;
        if (*p == '\\') {
            n = unescape(p, end, &out);
        } else if (*p >= 0x80) {
            n = utf8_len(p, end);
            memcpy(out, p, n);
            out += n;
        } else {
            return 0;                   /* raw control character */
        }
        if (n == 0)
            return 0;
        p += n;
    }
    *out++ = '\0';
    *pp = p + 1;
    *outp = (char *)out;
    return 1;
}

/* Byte order, shorter first on a tie: strcmp's order, keys having no NUL. */
static int key_cmp(const struct flatobj_pair *a, const struct flatobj_pair *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);

    if (c != 0)
        return c;
    return (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

static int key_qcmp(const void *a, const void *b)
{
    return key_cmp(*(const struct flatobj_pair *const *)a,
                   *(const struct flatobj_pair *const *)b);
}

/* Fills o->sorted; false on a duplicate key. */
static bool sort_keys(struct flatobj *o)
{
    const struct flatobj_pair **s = o->sorted;
    size_t n = o->n;

    for (size_t i = 0; i < n; i++)
        s[i] = &o->pairs[i];
    if (n <= FLATOBJ_SMALL) {
        for (size_t i = 1; i < n; i++) {
            const struct flatobj_pair *x = s[i];
            size_t j = i;
            int c = 1;

            while (j > 0 && (c = key_cmp(s[j - 1], x)) > 0) {
                s[j] = s[j - 1];
                j--;
            }
            if (c == 0)
                return false;
            s[j] = x;
        }
        return true;
    }
    qsort(s, n, sizeof(*s), key_qcmp);
    for (size_t i = 1; i < n; i++)
        if (key_cmp(s[i - 1], s[i]) == 0)
            return false;
    return true;
}

static int grow_pairs(struct flatobj *o)
{
    size_t cap = o->cap ? o->cap * 2 : 8;
    struct flatobj_pair *p;
    const struct flatobj_pair **s;

    if (cap > SIZE_MAX / sizeof(*p))
        return -ENOMEM;
    if ((p = realloc(o->pairs, cap * sizeof(*p))) == NULL)
        return -ENOMEM;
    o->pairs = p;
    if ((s = realloc(o->sorted, cap * sizeof(*s))) == NULL)
        return -ENOMEM;                 /* pairs just has spare room */
    o->sorted = s;
    o->cap = cap;
    return 0;
}

/* Room for len + 1 bytes: unescaped text never outgrows its input. */
static int reserve_buf(struct flatobj *o, size_t len)
{
    size_t cap;
    char *b;

    if (o->buf_cap > len)
        return 0;
    if (len >= SIZE_MAX / 2)
        return -ENOMEM;
    cap = o->buf_cap * 2 > len + 1 ? o->buf_cap * 2 : len + 1;
    if (cap < 64)
        cap = 64;
    if ((b = malloc(cap)) == NULL)      /* nothing to keep: no realloc */
        return -ENOMEM;
    free(o->buf);
    o->buf = b;
    o->buf_cap = cap;
    return 0;
}

int flatobj_scan(struct flatobj *o, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    char *out, *start;
    int rc;

    o->n = 0;
    o->buf_len = 0;
    p = skip_ws(p, end);
    if (p == end || *p != '{')
        return 0;                       /* before allocating anything */
    if ((rc = reserve_buf(o, len)) != 0)
        return rc;
    out = o->buf;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            struct flatobj_pair *pr;

            if (p == end || *p != '"')
                goto not_flat;
            if (o->n == o->cap && (rc = grow_pairs(o)) != 0) {
                o->n = 0;
                return rc;
            }
            pr = &o->pairs[o->n];
            start = out;
            if (!scan_string(&p, end, &out))
                goto not_flat;
            pr->key = start;
            pr->key_len = (size_t)(out - start) - 1;
            p = skip_ws(p, end);
            if (p == end || *p != ':')
                goto not_flat;
            p = skip_ws(p + 1, end);
            if (p == end) {
                goto not_flat;
            } else if (*p == '"') {
                start = out;
                if (!scan_string(&p, end, &out))
                    goto not_flat;
                pr->val = start;
                pr->val_len = (size_t)(out - start) - 1;
                pr->null = false;
            } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;                 /* "nullx": x fails below */
                pr->val = NULL;
                pr->val_len = 0;
                pr->null = true;
            } else {
                goto not_flat;          /* number, true, object, ... */
            }
            o->n++;
            p = skip_ws(p, end);
            if (p == end)
                goto not_flat;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p != ',')
                goto not_flat;
            p = skip_ws(p + 1, end);
        }
    }
    if (skip_ws(p, end) != end || !sort_keys(o))
        goto not_flat;
    o->buf_len = (size_t)(out - o->buf);
    return 1;

not_flat:
    o->n = 0;
    return 0;
}

void flatobj_free(struct flatobj *o)
{
    if (o == NULL)
        return;
    free(o->pairs);
    free(o->sorted);
    free(o->buf);
    memset(o, 0, sizeof(*o));
}
