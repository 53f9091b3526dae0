#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LOG_LINE_MAX 8192
#define LOG_SECRETS_MAX 64

/* The logger is process state by nature (one stderr); it is set once at
 * start and read by every module. */
static struct {
    enum log_level min;
    enum log_format fmt;
    FILE *out;
    char pipeline[128];
    char *secrets[LOG_SECRETS_MAX];
    int nsecrets;
} L = { LOG_INFO, LOG_FORMAT_JSON, NULL, "", { 0 }, 0 };

static const char *level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_level min, enum log_format fmt, FILE *out,
               const char *pipeline)
{
    L.min = min;
    L.fmt = fmt;
    L.out = out;
    snprintf(L.pipeline, sizeof(L.pipeline), "%s", pipeline ? pipeline : "");
}

void log_add_secret(const char *secret)
{
    if (secret == NULL || strlen(secret) < 3 || L.nsecrets >= LOG_SECRETS_MAX)
        return;
    for (int i = 0; i < L.nsecrets; i++)
        if (strcmp(L.secrets[i], secret) == 0)
            return;
    char *copy = strdup(secret);
    if (copy != NULL)
        L.secrets[L.nsecrets++] = copy;
}

void log_redact(char *s, size_t cap)
{
    (void)cap; /* "***" is never longer than a secret of >= 3 bytes */
    for (int i = 0; i < L.nsecrets; i++) {
        const char *sec = L.secrets[i];
        size_t n = strlen(sec);
        char *p = s;

        /* On after each mask, never back into it: a secret that is itself
         * "***" (a placeholder password) would match its mask forever. */
        while ((p = strstr(p, sec)) != NULL) {
            memcpy(p, "***", 3);
            memmove(p + 3, p + n, strlen(p + n) + 1);
            p += 3;
        }
    }
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int log_enabled(enum log_level lvl)
{
    return lvl >= L.min;
}

/* Appends to a fixed buffer; a too-long line is cut, never overflowed. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->len + n >= sizeof(l->buf) - 2)
        n = sizeof(l->buf) - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_raw(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* s with '"', '\\' and control characters escaped as JSON escapes them:
 * whatever a value holds (a server's multi-line error), the event stays
 * on one line. */
static void put_escaped(struct line *l, const char *s)
{
    char esc[8];

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': put(l, "\\\"", 2); break;
        case '\\': put(l, "\\\\", 2); break;
        case '\n': put(l, "\\n", 2); break;
        case '\r': put(l, "\\r", 2); break;
        case '\t': put(l, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                put(l, esc, 6);
            } else {
                put(l, (const char *)p, 1);
            }
        }
    }
}

static void put_json_string(struct line *l, const char *s)
{
    put(l, "\"", 1);
    put_escaped(l, s);
    put(l, "\"", 1);
}

/* A text-format value: bare when it is one plain word, else quoted and
 * escaped like a JSON string (key="two words"), so fields split on
 * spaces and every event is one line. */
static void put_text_value(struct line *l, const char *v)
{
    bool plain = v[0] != '\0';

    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        plain = *p > ' ' && *p != '"' && *p != '=' && *p != '\\' && *p != 0x7f;
    if (plain)
        puts_raw(l, v);
    else
        put_json_string(l, v);
}

static void format_ts(char *out, size_t cap)
{
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

/* Copies v into scratch with secrets masked. */
static const char *masked(const char *v, char *scratch, size_t cap)
{
    if (L.nsecrets == 0)
        return v;
    snprintf(scratch, cap, "%s", v);
    log_redact(scratch, cap);
    return scratch;
}

static void put_field(struct line *l, const char *k, const char *v)
{
    static __thread char scratch[LOG_LINE_MAX];

    if (L.fmt == LOG_FORMAT_JSON) {
        put(l, ",", 1);
        put_json_string(l, k);
        put(l, ":", 1);
        if (v == NULL)
            puts_raw(l, "null");
        else
            put_json_string(l, masked(v, scratch, sizeof(scratch)));
    } else {
        put(l, " ", 1);
        puts_raw(l, k);
        put(l, "=", 1);
        put_text_value(l, v ? masked(v, scratch, sizeof(scratch)) : "null");
    }
}

void log_event(enum log_level lvl, const char *mod, const char *msg, ...)
{
    struct line l = { .len = 0 };
    char ts[64], m[LOG_LINE_MAX];
    va_list ap;
    const char *k;

    if (lvl < L.min)
        return;
    format_ts(ts, sizeof(ts));
    snprintf(m, sizeof(m), "%s", msg);
    log_redact(m, sizeof(m));
    if (L.fmt == LOG_FORMAT_JSON) {
        puts_raw(&l, "{\"ts\":\"");
        puts_raw(&l, ts);
        puts_raw(&l, "\",\"level\":\"");
        puts_raw(&l, level_names[lvl]);
        puts_raw(&l, "\",\"mod\":");
        put_json_string(&l, mod);
        puts_raw(&l, ",\"msg\":");
        put_json_string(&l, m);
    } else {
        puts_raw(&l, ts);
        put(&l, " ", 1);
        puts_raw(&l, level_names[lvl]);
        put(&l, " ", 1);
        puts_raw(&l, mod);
        puts_raw(&l, ": ");
        put_escaped(&l, m);
    }
    if (L.pipeline[0])
        put_field(&l, "pipeline", L.pipeline);
    va_start(ap, msg);
    while ((k = va_arg(ap, const char *)) != NULL)
        put_field(&l, k, va_arg(ap, const char *));
    va_end(ap);
    if (L.fmt == LOG_FORMAT_JSON)
        put(&l, "}", 1);
    l.buf[l.len++] = '\n';
    fwrite(l.buf, 1, l.len, L.out ? L.out : stderr);
    fflush(L.out ? L.out : stderr);
}
