/* util.h: small helpers shared by the crmsim modules: error text, a growable
 * string, a JSON writer that prints reals the way a JavaScript service does,
 * and RFC 3339 timestamps in milliseconds. */
#ifndef CRMSIM_UTIL_H
#define CRMSIM_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An error with text; http is the status a handler should answer with. */
struct simerr {
    int http;
    char msg[256];
};

/* Fills e (may be NULL) and returns code, so callers can
 * `return simerr_set(e, -EINVAL, 400, "...")`. */
int simerr_set(struct simerr *e, int code, int http, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A growable NUL-terminated string; a failed allocation sets a sticky flag. */
struct sbuf {
    char *buf;
    size_t len, cap;
    bool failed;
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_add(struct sbuf *b, const char *s, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Transfers the buffer to the caller (free() it); NULL if an append failed. */
char *sbuf_take(struct sbuf *b, size_t *len);

/* Compact JSON text of v in insertion order, reals in their shortest form
 * that reads back to the same double (0.1, not 0.10000000000000001).
 * Returns a malloc'd string the caller frees, or NULL when out of memory. */
char *jsonw_dump(const json_t *v, size_t *len);

/* Milliseconds since the epoch as "2026-11-27T10:00:00.123Z" (25 bytes). */
#define TS_LEN 80
void ts_format(int64_t ms, char out[TS_LEN]);

/* Parses RFC 3339 ("T" or space, optional fraction, "Z" or +hh:mm). A fraction
 * finer than a millisecond rounds up, so `ms >= *out` keeps `>=` exact.
 * Returns 0 or -EINVAL. */
int ts_parse(const char *s, int64_t *out);

/* Wall clock in milliseconds. */
int64_t now_ms(void);

/* Canonical text of a record id: an integer in decimal or a string as is.
 * Returns 0, or -EINVAL for other types, empty or over-long strings. */
int id_canonical(const json_t *id, char *out, size_t n);

/* True when s is the decimal form of a non-negative int64 (no sign, no
 * leading zero). */
bool id_is_integer(const char *s, int64_t *value);

/* Percent-decodes src into out ('+' stays '+'); -EINVAL on a bad escape, a
 * NUL byte or when it does not fit. */
int pct_decode(const char *src, char *out, size_t n);

/* 64-bit mixing function (splitmix64 finaliser). */
uint64_t mix64(uint64_t x);

#endif
