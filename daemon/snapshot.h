/* snapshot.h: the PostgreSQL pieces of `tandem snapshot` (SPEC §3, §5),
 * used by snapshot.c (the command and the merge):
 *
 *  - snap_slot: the endpoint's logical slot, created on a replication
 *    connection with an exported snapshot. The connection stays open,
 *    idle, while the copy runs: the snapshot lives as long as it does.
 *  - snap_read: one REPEATABLE READ transaction per endpoint, inside the
 *    slot's snapshot when there is one, reading a mapping's table in
 *    canonical key order (each key column's text, COLLATE "C"), the order
 *    rec_key_cmp compares.
 *  - snap_write: one transaction per endpoint under the endpoint's
 *    replication origin, so what it writes is skipped by the endpoint's
 *    own reader (G4), without moving the origin's progress (no
 *    pg_replication_origin_xact_setup: the journal position stays the
 *    daemon's). Rows are COPYed into a temporary staging table and
 *    applied with one INSERT and one UPDATE per table.
 *
 * All calls block; none runs on the daemon's loop. */
#ifndef TANDEM_SNAPSHOT_H
#define TANDEM_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "reconcile.h"

/* ---- the slot ---- */

struct snap_slot;

/* Creates ep's slot (pgoutput) exporting its snapshot. -EEXIST when the
 * slot exists, -EHOSTUNREACH when the endpoint cannot be reached, -EIO
 * otherwise; e names the endpoint and the slot. */
int snap_slot_create(const struct cfg_endpoint *ep, struct snap_slot **out,
                     struct err *e);

/* The exported snapshot's name and the slot's consistent point: the
 * stream starts with the first transaction committed after it. */
const char *snap_slot_snapshot(const struct snap_slot *s);
uint64_t snap_slot_lsn(const struct snap_slot *s);

/* Closes the replication connection and frees s; the slot stays for
 * `tandem run`. Accepts NULL. */
void snap_slot_release(struct snap_slot *s);

/* Drops the slot (after a failed snapshot, so a new attempt can create it
 * again), then frees s. Accepts NULL. */
int snap_slot_drop(struct snap_slot *s, struct err *e);

/* Drops ep's slot left by an earlier, interrupted snapshot, retrying for
 * a few seconds while the old connection's server process exits. */
int snap_slot_drop_leftover(const struct cfg_endpoint *ep, struct err *e);

/* ---- reading ---- */

struct snap_read;

/* Opens a read transaction on ep: in the exported snapshot when snapshot
 * is not NULL, else a fresh one. Errors as snap_slot_create. */
int snap_read_open(const struct cfg_endpoint *ep, const char *snapshot,
                   struct snap_read **out, struct err *e);

/* Starts reading side ('a' or 'b') of m, canary records excluded.
 * *estimate gets the planner's row estimate (-1 unknown). */
int snap_read_scan(struct snap_read *r, const struct cfg_mapping *m, char side,
                   int64_t *estimate, struct err *e);

/* One row: rec (key, key texts, fields with side-a names, version = the
 * row's commit time when track_commit_timestamp is on, else 0) and the
 * row version's xmin, for writing back conditionally. Both valid until
 * the next call on r. */
struct snap_row {
    struct rec_record rec;
    const char *xmin;
};

/* 1 with *row filled, 0 at the end, or a negative errno. */
int snap_read_next(struct snap_read *r, struct snap_row *row, struct err *e);

/* Ends the transaction and closes the connection. Accepts NULL. */
void snap_read_free(struct snap_read *r);

/* ---- writing ---- */

struct snap_write;

struct snap_write_stats {
    int64_t staged;         /* rows handed to snap_write_row */
    int64_t inserted, updated;
    int64_t skipped;        /* conditional rows the table changed under:
                             * its own stream carries the newer state */
};

/* Opens ep's write transaction under its replication origin (which must
 * exist). Errors as snap_slot_create; -EBUSY when another session (a
 * running daemon) holds the origin. */
int snap_write_open(const struct cfg_endpoint *ep, struct snap_write **out,
                    struct err *e);

/* Starts staging rows for side ('a' or 'b') of m. conditional: the side
 * is also streamed, so a row is inserted only when its key is still free
 * and updated only while its row version is the one read (xmin); else
 * every row is upserted. */
int snap_write_table(struct snap_write *w, const struct cfg_mapping *m,
                     char side, bool conditional, struct err *e);

/* Stages one record (side-a names; every mapped field). xmin is the
 * target row version read, NULL when the target has no such key. */
int snap_write_row(struct snap_write *w, const json_t *fields,
                   const char *xmin, struct err *e);

/* Applies the staged rows of the current table (still uncommitted) and
 * adds the counts to *st. */
int snap_write_apply(struct snap_write *w, struct snap_write_stats *st,
                     struct err *e);

/* Commits everything applied. */
int snap_write_commit(struct snap_write *w, struct err *e);

/* Rolls back what is not committed and closes. Accepts NULL. */
void snap_write_free(struct snap_write *w);

#endif
