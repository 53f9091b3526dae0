/* flatobj.h: a fast scanner for the one JSON shape on the writers' hot path,
 * a flat object whose values are strings or null ({"id":"12","n":null}), as
 * captured changes store their fields. Anything else is left to jansson:
 * the scanner either accepts exactly what json_loads() would parse to the
 * same pairs, or says "not flat" and the caller falls back. */
#ifndef TANDEM_FLATOBJ_H
#define TANDEM_FLATOBJ_H

#include <stdbool.h>
#include <stddef.h>

/* One member. key and val are unescaped UTF-8, NUL-terminated, and contain
 * no NUL byte; for a null value val is NULL and val_len 0. */
struct flatobj_pair {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
    bool null;
};

/* Zero-initialise before the first scan ({ 0 }); then reuse it across scans
 * (each scan keeps the buffers and resets n and buf_len). The pointers of
 * pairs point into buf and stay valid until the next scan or flatobj_free. */
struct flatobj {
    struct flatobj_pair *pairs;         /* n pairs, in document order */
    const struct flatobj_pair **sorted; /* the same n, by key byte order */
    size_t n, cap;                      /* cap: of pairs and sorted */
    char *buf;                          /* the unescaped keys and values */
    size_t buf_len, buf_cap;
};

/* Scans text[0..len) (need not be NUL-terminated; nothing past len is
 * read). Returns 1 when it is exactly a JSON object of distinct keys whose
 * values are strings or null, with o holding its pairs; 0 when it is
 * anything else, valid JSON or not, for the caller to hand to jansson;
 * -ENOMEM. Bails (0) on: other value types, duplicate keys (jansson would
 * keep the last), \u0000 (jansson rejects it), invalid UTF-8, escapes or
 * surrogates, malformed or trailing text other than JSON whitespace. After
 * 0 or -ENOMEM, o->n is 0. */
int flatobj_scan(struct flatobj *o, const char *text, size_t len);

/* Frees what o holds (o itself is the caller's) and zeroes it, so it can
 * be scanned into again. Accepts NULL. */
void flatobj_free(struct flatobj *o);

#endif
