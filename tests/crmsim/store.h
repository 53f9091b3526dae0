/* store.h: the simulator's records in SQLite (":memory:" or a --state file),
 * behind one mutex. Every write stamps updated_at (strictly increasing across
 * the server unless a coarser clock resolution is set), a CouchDB-style _rev
 * "N-hash" and a new global sequence number. Deletes are soft. */
#ifndef CRMSIM_STORE_H
#define CRMSIM_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct store;

#define STORE_MAX_RESOURCES 16
#define STORE_ID_MAX 256

/* Opens path (":memory:" when NULL) and creates the schema. resources are the
 * names exposed over HTTP (copied). Returns 0 or -EIO with text in e. */
int store_open(struct store **out, const char *path,
               const char *const *resources, int n_resources,
               struct simerr *e);
void store_free(struct store *s);

bool store_has_resource(struct store *s, const char *res);
/* A new JSON array of the exposed resource names. */
json_t *store_resources(struct store *s);

enum store_op { STORE_POST, STORE_PUT, STORE_PATCH, STORE_DELETE };

struct store_write {
    enum store_op op;
    const char *res;
    const char *key;        /* canonical id from the path; NULL for POST */
    const json_t *body;     /* the request object; NULL for DELETE */
    const char *if_match;   /* If-Match header or NULL */
    const char *rev_param;  /* ?rev= (like If-Match) or NULL */
};

/* Applies w atomically. On success *out is the new record (caller decrefs)
 * and *created tells 201 from 200. Errors: -EINVAL (400), -ENOENT (404),
 * -EEXIST (409: id taken or a body _rev that does not match), -ESTALE (412:
 * If-Match or ?rev= does not match), -EIO (500); e->http holds the status. */
int store_write(struct store *s, const struct store_write *w, json_t **out,
                bool *created, struct simerr *e);

/* A live record, or -ENOENT (unknown or soft-deleted). */
int store_get(struct store *s, const char *res, const char *key, json_t **out,
              struct simerr *e);

struct store_feed_q {
    const char *res;
    bool has_since;
    int64_t since_ms;       /* inclusive */
    long limit, offset;
    int dup;                /* fault: repeat this many preceding records */
};

/* Records with updated_at >= since, ordered by (updated_at, id), deleted
 * ones included; *out is a new array. */
int store_feed(struct store *s, const struct store_feed_q *q, json_t **out,
               struct simerr *e);

struct store_changes_q {
    const char *res;        /* NULL: every resource */
    bool since_now;
    uint64_t since;
    long limit;
    bool docs;
    int dup;                /* fault: repeat this many changes before since */
};

/* CouchDB-style {"results":[...],"last_seq":"..."}; one entry per record at
 * its latest sequence. */
int store_changes(struct store *s, const struct store_changes_q *q,
                  json_t **out, struct simerr *e);

/* Every record of res, deleted ones included, ordered by id. */
int store_dump(struct store *s, const char *res, json_t **out,
               struct simerr *e);

/* Drops every record and restarts ids and sequences; the clock keeps going
 * forward. */
int store_reset(struct store *s, struct simerr *e);

/* Shifts the clock by offset_ms and truncates stamps to resolution_ms (1 =
 * strictly increasing; more allows equal updated_at values). */
void store_set_clock(struct store *s, int64_t offset_ms, int64_t resolution_ms);
json_t *store_clock(struct store *s);

/* Opaque sequence text: "17-g3fa2c1". */
#define SEQ_LEN 40
void store_seq_format(uint64_t seq, char out[SEQ_LEN]);
/* Accepts what store_seq_format wrote or a bare integer; -EINVAL otherwise. */
int store_seq_parse(const char *s, uint64_t *out);

#endif
