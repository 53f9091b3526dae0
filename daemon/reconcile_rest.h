/* reconcile_rest.h: a rest side of a mapping as a reconcile record stream
 * (reconcile.h), with its two pure parts: the spill table that sorts the
 * records by key, and the walk that pages a feed from its beginning.
 *
 * On every begin the stream reads the side's change feed from the start
 * through the endpoint's own transport (rest_http on a private event loop,
 * so the endpoint's headers, TLS setting, timeout and request limits
 * hold), maps each record as the daemon's feed reader does (side-a field
 * names, canonical values, a server-assigned key through the key
 * cross-reference) and keeps the latest record per key in a temporary
 * SQLite table, so memory stays bounded whatever the resource's size.
 * Records come back in key order: the byte order of each key column's
 * text, column by column, as the postgres stream's ORDER BY ... COLLATE
 * "C". A key whose latest record is deleted is absent; canary records are
 * never returned; feed records without a usable key (the daemon sends them
 * to the DLQ) are skipped and counted. The stream has no bucket summaries:
 * a mapping with a rest side is compared row by row. */
#ifndef TANDEM_RECONCILE_REST_H
#define TANDEM_RECONCILE_REST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../connectors/rest/restfeed.h"
#include "config.h"
#include "err.h"
#include "reconcile.h"

/* Opens side ('a' or 'b') of m, a rest endpoint with a feed. Nothing is
 * requested yet (begin reads the feed). The state file of c, when it
 * exists, is opened read-only for the key cross-reference. Errors:
 * -ENOTSUP (not a rest side, or a side without a feed), -EINVAL (key
 * columns), -ENOMEM, -EIO; e names the mapping and endpoint.
 *
 * begin fails with -EHOSTUNREACH when the endpoint cannot be reached,
 * -EPROTO for feed pages that cannot be used, -EIO for other HTTP errors;
 * transient failures and unparseable pages are retried a few times with
 * backoff first. Messages name the endpoint and the request path (never
 * base_url or header values) and what the operator can do. */
int rec_rest_open(struct rec_stream *out, const struct config *c,
                  const struct cfg_mapping *m, char side, struct err *e);

/* ---- the spill table ---- */

struct rec_spill;

/* A private temporary SQLite database (spilled to a file as it grows,
 * deleted when freed) for records with nkey key columns (1..REC_KEY_MAX).
 * Records whose first key column equals canary_key (may be NULL) are
 * dropped. */
int rec_spill_new(struct rec_spill **out, size_t nkey, const char *canary_key,
                  struct err *e);
void rec_spill_free(struct rec_spill *s);

/* Forgets every record (a new read). */
int rec_spill_clear(struct rec_spill *s, struct err *e);

/* Adds the record of key (canonical: a JSON array of nkey strings) with
 * fields ({name: text or null}, copied). A later put of the same key
 * replaces the earlier one, deleted or not: put records in feed order.
 * -EINVAL (e says why) for a key that is not such an array. */
int rec_spill_put(struct rec_spill *s, const char *key, const json_t *fields,
                  int64_t version_us, bool deleted, struct err *e);

/* Starts a key-ordered read of the live (not deleted) records; ends any
 * earlier one. */
int rec_spill_scan(struct rec_spill *s, struct err *e);

/* 1 and *r filled (its strings and fields valid until the next call), 0
 * at the end, or a negative errno. r->bucket is -1. */
int rec_spill_next(struct rec_spill *s, struct rec_record *r, struct err *e);

/* ---- paging a feed from its beginning ---- */

#define REC_WALK_LIMIT_MAX 100000

struct rec_walk {
    char *since;        /* cursor value or sequence; NULL: the beginning */
    long offset;        /* records to skip at since (offset_param) */
    int limit;          /* records asked for */
    int page_size;
    bool done;
};

void rec_walk_init(struct rec_walk *w, int page_size);
void rec_walk_clear(struct rec_walk *w);

/* Moves w past pg, the page just read with w's request. A short page
 * means caught up (done). updated_since: the next page starts at the last
 * record's cursor value (inclusive), skipping the records already read at
 * it when the feed has an offset_param; a full page that sits at one
 * cursor value moves the offset on, or without offset_param asks for
 * larger pages. sequence: the next page starts at the page's last
 * sequence. -EPROTO (e says why) when the feed cannot be paged further. */
int rec_walk_next(struct rec_walk *w, const struct cfg_feed *f,
                  const struct rf_page *pg, struct err *e);

#endif
