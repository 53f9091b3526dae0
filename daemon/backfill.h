/* backfill.h: copies a mapping's existing rows from a PostgreSQL source
 * that already streams (a mapping added to a running pipeline, or
 * `tandem snapshot` when the slot exists), without pausing the stream: the
 * DBLog approach. Per key-ordered chunk: a low watermark message is written
 * into the source's WAL (pg_logical_emit_message, non-transactional), the
 * chunk is read, a high watermark is written. When the reader meets the
 * high watermark in the stream, the chunk minus the keys that changed
 * between the two watermarks (the stream carries those) is journaled right
 * there, in stream order, as inserts from the source: the writers merge
 * them with what the target has by the mapping's policy, like any change,
 * and fill the shadow. Requests live in the state (meta
 * "backfill:<mapping>:<side>"), so a restart resumes after the last chunk
 * journaled. */
#ifndef TANDEM_BACKFILL_H
#define TANDEM_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "../state/state.h"
#include "config.h"
#include "err.h"

#define BACKFILL_CHUNK 1000

struct backfill;

/* Requests a backfill of m from each of its postgres source sides
 * (direction permitting). Inside the caller's state transaction. Returns
 * the number of sides requested (0: none is a postgres source). */
int backfill_request(struct state *st, const struct cfg_mapping *m, struct err *e);

/* Mappings added to the config since the last run get a request; the
 * first run only records the mappings (its initial load is `snapshot`'s). */
int backfill_request_new_mappings(struct state *st, const struct config *c, struct err *e);

/* Where the backfill of m's side stands: -ENOENT never requested, 1 done,
 * 0 under way with *rows copied so far. */
int backfill_progress(struct state *st, const struct cfg_mapping *m, char side,
                      int64_t *rows);

int backfill_new(struct backfill **out, uv_loop_t *loop, const struct config *c,
                 struct state *st);

/* Starts the next chunk when none is in flight and a request waits on an
 * endpoint whose reader streams (streaming(arg, ep)). Call on each tick. */
void backfill_tick(struct backfill *b, bool (*streaming)(void *arg, const struct cfg_endpoint *ep),
                   void *arg);

/* The reader of ep met the high watermark id (pgsrc_hooks.on_watermark). */
void backfill_on_watermark(struct backfill *b, const struct cfg_endpoint *ep, const char *id,
                           const char *const *changed, size_t nchanged);

/* True while a request is pending (for status and tests). */
bool backfill_busy(const struct backfill *b);

/* Frees b now, or when its query in flight returns. */
void backfill_close(struct backfill *b);

#endif
