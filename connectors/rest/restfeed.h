/* restfeed.h: the pure parts of the REST connector, without I/O or state:
 * JSON that keeps every number's exact text, canonical field values, feed
 * pages of both styles (SPEC §4), record → change mapping, the
 * updated_since keyset cursor, numeric exactness, value comparison and
 * request bodies. Unit-tested and fuzzed on their own.
 *
 * Exact numbers: jansson turns numbers into doubles, which would round
 * 12345678901234567890 or print 0.1 as 0.10000000000000001. rf_json_load
 * keeps each number as a string "\x01#<text>" instead (and a string that
 * itself begins with \x01 gains the prefix "\x01$"), so rf_value and
 * rf_json_dump give back the text exactly as the server wrote it. Trees
 * from rf_json_load must be read with these functions, not with
 * json_number_value or json_dumps. */
#ifndef TANDEM_RESTFEED_H
#define TANDEM_RESTFEED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../daemon/strbuf.h"

#define RF_RECORD_MAX (1 << 20)   /* a record's JSON text, in bytes */
#define RF_EXCERPT_MAX 512        /* DLQ excerpt of a record */
#define RF_SEEN_MAX 10000         /* keys remembered at the cursor value */

/* The JSON kind of a value as the REST side sent it. The letter form is
 * what rf_record.kinds holds and what rf_body_value takes. */
enum rf_kind {
    RF_NULL = 'z', RF_STRING = 's', RF_NUMBER = 'n', RF_BOOL = 'b',
    RF_JSON = 'j',      /* object or array */
    RF_INVALID = 0      /* cannot be text (a string holding NUL) */
};

/* Parses text (len bytes) as JSON, keeping numbers exact (see above).
 * Any JSON value is accepted (callers check the type). Returns a new
 * reference, or NULL with e filled (-EPROTO) when the text
 * is not JSON. */
json_t *rf_json_load(const char *text, size_t len, struct err *e);

/* The canonical text of v appended to out (nothing for null): strings as
 * they are, numbers as their JSON text, booleans "true"/"false",
 * objects and arrays as compact JSON. Returns v's kind. */
enum rf_kind rf_value(const json_t *v, struct strbuf *out);

/* Compact JSON of v (a tree from rf_json_load, or any jansson tree)
 * appended to out, numbers exact. */
void rf_json_dump(const json_t *v, struct strbuf *out);

/* RFC 6901 JSON pointer ("" = doc itself); NULL when absent or invalid. */
const json_t *rf_pointer(const json_t *doc, const char *ptr);

/* One record of a feed page, or one record read back by the writer. */
struct rf_record {
    char *key;          /* canonical key, a JSON array of strings in the
                         * side's key order; NULL when missing */
    json_t *fields;     /* {side-a name: canonical text or null} */
    json_t *kinds;      /* {side-a name: "s"|"n"|"b"|"j"|"z"} */
    bool deleted;       /* deleted_field (or a soft-delete flag) is true */
    char *cursor;       /* updated_since: the cursor field's text;
                         * sequence: the entry's sequence; NULL if none */
    char *rev;          /* write.revision_field's text, or NULL */
    int64_t version_us; /* timestamp_field, else the cursor as a time,
                         * else 0 */
    char *error;        /* set: a record error (DLQ), the rest may be NULL */
    char *excerpt;      /* at most RF_EXCERPT_MAX bytes of the record */
};

void rf_record_clear(struct rf_record *r);

/* Maps rec (a record object) of side sd of mapping m into r: key from the
 * side's key fields (for a sequence entry, result[id_field] when the
 * document lacks it), fields renamed to side-a names (a field absent from
 * the record is null: many APIs leave nulls out), values canonical. A
 * record error (not an object, no key, a key that is not a string or
 * number, a value that cannot be text, over RF_RECORD_MAX) is reported in
 * r->error, never as a failure. result is the sequence entry or NULL.
 * Returns 0 or -ENOMEM. */
int rf_map_record(const struct cfg_mapping *m, const struct cfg_side *sd,
                  const json_t *rec, const json_t *result,
                  struct rf_record *r);

struct rf_page {
    struct rf_record *recs;
    size_t n;           /* records in the page, errors included */
    char *last_seq;     /* sequence style: where the next page starts */
};

/* Parses one feed page of side sd (its feed config says the style).
 * -EPROTO (with e) when the page as a whole cannot be used: not JSON, no
 * records array at the pointer, or (sequence style) no position to go on
 * from. Record problems stay in their record. */
int rf_parse_page(const struct cfg_mapping *m, const struct cfg_side *sd,
                  const char *body, size_t len, struct rf_page *out,
                  struct err *e);
void rf_page_free(struct rf_page *p);

/* The updated_since cursor: the last cursor value seen, exactly as the
 * server wrote it, and the keys seen at that value (the cursor is
 * inclusive, so the next page starts with them again). */
struct rf_cursor {
    char *value;        /* NULL before the first record */
    long n_at;          /* distinct records seen at value */
    char **seen;        /* their keys, the latest RF_SEEN_MAX */
    size_t nseen;
};

void rf_cursor_init(struct rf_cursor *c);
void rf_cursor_clear(struct rf_cursor *c);
int rf_cursor_copy(struct rf_cursor *dst, const struct rf_cursor *src);
/* From / to the saved position text ({"cursor":…,"n":…,"seen":[…]}).
 * load: -EINVAL when text is not such a position. */
int rf_cursor_load(struct rf_cursor *c, const char *text);
char *rf_cursor_save(const struct rf_cursor *c);
/* True when r sits at the cursor value and was seen there (by its key, or
 * by its excerpt when it has none). */
bool rf_cursor_seen(const struct rf_cursor *c, const struct rf_record *r);
/* Moves the cursor over r (a record handled: journaled, dead-lettered,
 * echo or skipped). Records without a cursor value leave it alone. */
int rf_cursor_advance(struct rf_cursor *c, const struct rf_record *r);

/* Query string of the next feed request (without "?"): cursor/since,
 * limit, offset (when offset > 0 and the feed has offset_param) and the
 * feed's params, each URL-encoded. since is the cursor value or the
 * sequence, NULL for none. */
int rf_feed_query(const struct cfg_feed *f, const char *since, int limit,
                  long offset, struct strbuf *out);

/* Appends s URL-encoded (RFC 3986 unreserved characters kept). */
void rf_url_escape(struct strbuf *out, const char *s, size_t n);

/* True when s is a JSON number (RFC 8259 grammar, whole string). */
bool rf_is_json_number(const char *s);

/* True when the decimal number s (a JSON number) survives a round trip
 * through an IEEE double, the way a JSON parser reads it: false for more
 * significant digits than a double keeps (most above 15), or out of
 * range. */
bool rf_number_exact(const char *s);

/* Normalises decimal text (sign, digits, ".", exponent) so that equal
 * values give equal text (12.50 and 1.25e1 both "+125e2"). Returns false
 * when s is not a decimal number. */
bool rf_decimal_norm(const char *s, char *out, size_t cap);

/* Parses RFC 3339 or PostgreSQL timestamp text (T or space, optional
 * fraction, Z / ±HH[:MM] / none = UTC) into µs since the Unix epoch.
 * Returns 0 or -EINVAL. */
int rf_parse_time(const char *s, int64_t *us);

/* PostgreSQL timestamptz output ("2024-01-02 03:04:05.6+00") as RFC 3339
 * ("2024-01-02T03:04:05.6+00:00"); false (out untouched) for other text. */
bool rf_pg_ts_to_rfc3339(const char *s, char *out, size_t cap);

/* True when the text value a (side-a canonical text or NULL for null)
 * equals the REST value b (canonical text or NULL) whose kind is kb:
 * same text, or same number (12.50 == 12.5) when b was a JSON number,
 * or same boolean ("t" == true) when b was a boolean, or same instant
 * when both read as timestamps. */
bool rf_value_equal(const char *a, const char *b, char kb);

/* True when every field of want ({name: text or null}) equals the same
 * field of rec (fields and kinds of an rf_record) by rf_value_equal. */
bool rf_fields_equal(const json_t *rec_fields, const json_t *rec_kinds,
                     const json_t *want);

/* Appends the JSON of side-a text v (a string, or null) for a REST field
 * whose kind the server showed as kind (0 when unknown):
 *   null → null; kind b: "t"/"true" → true, "f"/"false" → false;
 *   kind j: the JSON text itself; kind s: a string;
 *   otherwise a JSON number text → a number when numeric is number (and
 *   -ERANGE, *why set, when a JSON parser would round it), a string when
 *   numeric is string; any other text → a string, PostgreSQL timestamptz
 *   text rewritten as RFC 3339. */
int rf_body_value(struct strbuf *out, const json_t *v, char kind,
                  enum cfg_numeric numeric, const char **why);

/* The side-b name of side-a field a (NULL when unmapped), and back. */
const char *rf_b_name(const struct cfg_mapping *m, const char *a);
const char *rf_a_name(const struct cfg_mapping *m, const char *b);

#endif
