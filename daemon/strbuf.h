/* strbuf.h: a growable byte string with JSON-escaping appends. A failed
 * allocation sets a sticky flag checked once at the end (no partial data
 * is ever used). */
#ifndef TANDEM_STRBUF_H
#define TANDEM_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
    char *buf;      /* NUL-terminated when len > 0 or after strbuf_cstr */
    size_t len, cap;
    bool failed;
};

void strbuf_init(struct strbuf *b);
void strbuf_free(struct strbuf *b);
void strbuf_reset(struct strbuf *b);               /* len = 0, keeps memory */
void strbuf_add(struct strbuf *b, const char *s, size_t n);
void strbuf_adds(struct strbuf *b, const char *s);
void strbuf_addc(struct strbuf *b, char c);
/* Appends s (n bytes) as a quoted JSON string, escaping as RFC 8259 asks. */
void strbuf_add_json_string(struct strbuf *b, const char *s, size_t n);
/* "" when empty; never NULL unless failed. */
const char *strbuf_cstr(struct strbuf *b);

#endif
