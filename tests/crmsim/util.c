/* util.c: see util.h. */
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int simerr_set(struct simerr *e, int code, int http, const char *fmt, ...)
{
    va_list ap;

    if (e) {
        e->http = http;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void sbuf_init(struct sbuf *b)
{
    memset(b, 0, sizeof(*b));
}

void sbuf_free(struct sbuf *b)
{
    free(b->buf);
    sbuf_init(b);
}

static bool sbuf_reserve(struct sbuf *b, size_t extra)
{
    size_t cap;
    char *p;

    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    p = realloc(b->buf, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->buf = p;
    b->cap = cap;
    return true;
}

void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (!sbuf_reserve(b, n))
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sbuf_reserve(b, (size_t)n)) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *sbuf_take(struct sbuf *b, size_t *len)
{
    char *p;

    if (b->failed || !sbuf_reserve(b, 0)) {
        sbuf_free(b);
        return NULL;
    }
    p = b->buf;
    if (len)
        *len = b->len;
    sbuf_init(b);
    return p;
}

static void jsonw_string(struct sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    sbuf_add(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sbuf_add(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sbuf_add(b, "\\\"", 2); break;
        case '\\': sbuf_add(b, "\\\\", 2); break;
        case '\b': sbuf_add(b, "\\b", 2); break;
        case '\f': sbuf_add(b, "\\f", 2); break;
        case '\n': sbuf_add(b, "\\n", 2); break;
        case '\r': sbuf_add(b, "\\r", 2); break;
        case '\t': sbuf_add(b, "\\t", 2); break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            sbuf_add(b, esc, 6);
        }
    }
    sbuf_add(b, s + run, n - run);
    sbuf_add(b, "\"", 1);
}

static void jsonw_real(struct sbuf *b, double d)
{
    char buf[40];
    int p;

    /* Shortest text that reads back to d, as JavaScript prints numbers. */
    for (p = 1; p <= 17; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    sbuf_adds(b, buf);
    if (!strpbrk(buf, ".eEnN"))
        sbuf_add(b, ".0", 2);
}

static void jsonw_value(struct sbuf *b, const json_t *v)
{
    const char *key;
    json_t *item;
    size_t i;
    bool first = true;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        sbuf_add(b, "{", 1);
        json_object_foreach((json_t *)v, key, item) {
            if (!first)
                sbuf_add(b, ",", 1);
            first = false;
            jsonw_string(b, key, strlen(key));
            sbuf_add(b, ":", 1);
            jsonw_value(b, item);
        }
        sbuf_add(b, "}", 1);
        break;
    case JSON_ARRAY:
        sbuf_add(b, "[", 1);
        json_array_foreach(v, i, item) {
            if (i)
                sbuf_add(b, ",", 1);
            jsonw_value(b, item);
        }
        sbuf_add(b, "]", 1);
        break;
    case JSON_STRING:
        jsonw_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sbuf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        jsonw_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sbuf_add(b, "true", 4);
        break;
    case JSON_FALSE:
        sbuf_add(b, "false", 5);
        break;
    case JSON_NULL:
        sbuf_add(b, "null", 4);
        break;
    }
}

char *jsonw_dump(const json_t *v, size_t *len)
{
    struct sbuf b;

    sbuf_init(&b);
    jsonw_value(&b, v);
    return sbuf_take(&b, len);
}

void ts_format(int64_t ms, char out[TS_LEN])
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    struct tm tm;

    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    if (!gmtime_r(&secs, &tm)) {
        snprintf(out, TS_LEN, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out, TS_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, frac);
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return -EINVAL;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int ts_parse(const char *s, int64_t *out)
{
    struct tm tm;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    int64_t ms = 0, secs;
    bool round_up = false;
    const char *p = s;

    memset(&tm, 0, sizeof(tm));
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) ||
        *p++ != '-' || digits(&p, 2, &d))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) ||
        *p++ != ':' || digits(&p, 2, &sec))
        return -EINVAL;
    if (*p == '.') {
        int n = 0;

        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++, n++) {
            if (n < 3)
                ms = ms * 10 + (*p - '0');
            else if (*p != '0')
                round_up = true;
        }
        for (; n < 3; n++)
            ms *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || sec > 60 || oh > 23 || om > 59)
        return -EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    secs = (int64_t)timegm(&tm) - sign * (oh * 3600 + om * 60);
    *out = secs * 1000 + ms + (round_up ? 1 : 0);
    return 0;
}

int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int id_canonical(const json_t *id, char *out, size_t n)
{
    if (json_is_integer(id)) {
        snprintf(out, n, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return 0;
    }
    if (!json_is_string(id) || json_string_length(id) == 0 ||
        json_string_length(id) >= n ||
        strlen(json_string_value(id)) != json_string_length(id))
        return -EINVAL;
    memcpy(out, json_string_value(id), json_string_length(id) + 1);
    return 0;
}

bool id_is_integer(const char *s, int64_t *value)
{
    int64_t v = 0;
    const char *p;

    if (!*s || (s[0] == '0' && s[1]))
        return false;
    for (p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - (*p - '0')) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    if (value)
        *value = v;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pct_decode(const char *src, char *out, size_t n)
{
    size_t o = 0;

    for (const char *p = src; *p; p++) {
        char c = *p;

        if (c == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -EINVAL;
            p += 2;
        }
        if (o + 1 >= n)
            return -EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
