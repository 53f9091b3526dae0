#include "strbuf.h"
#include "swar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_init(struct strbuf *b)
{
    memset(b, 0, sizeof(*b));
}

void strbuf_free(struct strbuf *b)
{
    free(b->buf);
    strbuf_init(b);
}

void strbuf_reset(struct strbuf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->buf)
        b->buf[0] = '\0';
}

static bool reserve(struct strbuf *b, size_t extra)
{
    size_t need = b->len + extra + 1, cap;
    char *p;

    if (b->failed)
        return false;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = realloc(b->buf, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->buf = p;
    b->cap = cap;
    return true;
}

void strbuf_add(struct strbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void strbuf_adds(struct strbuf *b, const char *s)
{
    strbuf_add(b, s, strlen(s));
}

void strbuf_addc(struct strbuf *b, char c)
{
    strbuf_add(b, &c, 1);
}

/* The escape for c (a byte swar_json_special flags), into esc. */
static const char *json_escape(unsigned char c, char esc[8])
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default:
        snprintf(esc, 8, "\\u%04x", c);
        return esc;
    }
}

static bool json_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

void strbuf_add_json_string(struct strbuf *b, const char *s, size_t n)
{
    size_t start = 0, i = 0;
    char esc[8];

    if (!reserve(b, n + 2))
        return;
    strbuf_addc(b, '"');
    while (i < n) {
        /* Plain runs 8 bytes at a time: most values have nothing to escape. */
        while (n - i >= 8 && swar_json_special(swar_load(s + i)) == 0)
            i += 8;
        while (i < n && json_plain((unsigned char)s[i]))
            i++;
        if (i == n)
            break;
        strbuf_add(b, s + start, i - start);
        strbuf_adds(b, json_escape((unsigned char)s[i], esc));
        start = ++i;
    }
    strbuf_add(b, s + start, n - start);
    strbuf_addc(b, '"');
}

const char *strbuf_cstr(struct strbuf *b)
{
    if (b->failed)
        return NULL;
    if (b->buf == NULL && !reserve(b, 0))
        return NULL;
    b->buf[b->len] = '\0';
    return b->buf;
}
