/* journal.h: the ordered, durable log of captured changes (SPEC G1, G2).
 *
 * A source transaction is opened with journal_txn_open, its changes are
 * appended as they stream (large transactions span several state commits,
 * so memory stays bounded), and journal_txn_commit marks it committed and
 * gives it the next commit sequence. Appliers read committed transactions
 * in commit-sequence order. Transactions never committed (crash mid-stream)
 * are deleted by journal_recover. */
#ifndef TANDEM_JOURNAL_H
#define TANDEM_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "../connectors/change.h"
#include "state.h"

struct journal_txn_info {
    int64_t txn;            /* journal transaction id */
    int64_t commit_seq;     /* 0 until committed */
    const char *endpoint;   /* source endpoint */
    int64_t source_xid;
    uint64_t commit_lsn;    /* PG: commit LSN; REST: 0 */
    uint64_t end_lsn;       /* PG: end LSN; REST: 0 */
    int64_t commit_ts_us;   /* source commit time, µs since Unix epoch */
    int64_t nchanges;
    int64_t first_seq, last_seq;    /* its changes' sequences (0: none) */
};

/* Deletes every transaction not committed, with its changes. Run at start
 * before any reader. Returns the number of transactions removed (>= 0) or
 * a negative errno. */
int journal_recover(struct state *s, struct err *e);

/* Deletes endpoint's uncommitted transactions other than keep_txn (its
 * source's current one; 0: none): transactions a reconnect cut short,
 * which the source resends as new ones. Returns how many, or negative. */
int journal_drop_open(struct state *s, const char *endpoint, int64_t keep_txn,
                      struct err *e);

/* Opens a source transaction; *txn receives its id. Must run inside
 * state_begin/state_commit. */
int journal_txn_open(struct state *s, const char *endpoint, int64_t source_xid,
                     uint64_t commit_lsn, int64_t commit_ts_us, int64_t *txn,
                     struct err *e);

/* Appends one change to an open transaction; c->seq is set. */
int journal_append(struct state *s, int64_t txn, struct change *c,
                   struct err *e);

/* Marks txn committed with its end LSN and assigns the next commit
 * sequence (*commit_seq). A transaction with no changes is deleted instead
 * and *commit_seq is 0. */
int journal_txn_commit(struct state *s, int64_t txn, uint64_t end_lsn,
                       int64_t *commit_seq, struct err *e);

/* Journals c as a committed transaction of its own from c->endpoint, at
 * commit time c->version_us: a change tandem makes itself (a DLQ retry, a
 * conflict result the source side must take). Must run inside
 * state_begin/state_commit. c->seq is set; *commit_seq may be NULL. */
int journal_single(struct state *s, struct change *c, int64_t *commit_seq,
                   struct err *e);

/* Reads committed transactions with commit_seq > after, oldest first, at
 * most max of them, excluding those whose source is skip_endpoint (a
 * target never applies its own changes). Calls fn for each; fn returning
 * nonzero stops the scan and that value is returned. The strings in info
 * live until fn returns. */
typedef int (*journal_txn_fn)(const struct journal_txn_info *info, void *arg);
int journal_scan_txns(struct state *s, int64_t after, int max,
                      const char *skip_endpoint, journal_txn_fn fn, void *arg,
                      struct err *e);

/* Calls fn for each change of txn in sequence order. Strings in c live
 * until fn returns. Nonzero from fn stops and is returned. */
typedef int (*journal_change_fn)(const struct change *c, void *arg);
int journal_scan_changes(struct state *s, int64_t txn, journal_change_fn fn,
                         void *arg, struct err *e);

/* Like journal_scan_changes but only changes with seq > after_seq, at most
 * limit of them (so a huge transaction is read in slices). Returns the
 * number of changes passed to fn (>= 0) or a negative errno. fn returning
 * nonzero stops the scan: a negative value is returned as is, a positive
 * one gives the count so far (that change included). */
int journal_scan_changes_from(struct state *s, int64_t txn, int64_t after_seq,
                              int limit, journal_change_fn fn, void *arg,
                              struct err *e);

/* Counts: committed transactions with commit_seq > after and their changes. */
int journal_depth(struct state *s, int64_t after, int64_t *txns,
                  int64_t *changes, struct err *e);

/* The highest commit sequence (0 when empty). */
int journal_last_commit_seq(struct state *s, int64_t *out, struct err *e);

/* Like journal_scan_changes_from, but the changes with seq in
 * (after_seq, last_seq] whatever their transaction (c->txn says which):
 * consecutive transactions read in one query. */
int journal_scan_seq_range(struct state *s, int64_t after_seq, int64_t last_seq,
                           int limit, journal_change_fn fn, void *arg, struct err *e);

/* The newest transaction of endpoint not committed yet (*txn 0 when
 * none): the one its source is streaming, or one cut short. Sees what this
 * connection has written and not committed. */
int journal_newest_open(struct state *s, const char *endpoint, int64_t *txn,
                        struct err *e);

/* *found true when an operator settled a conflict of (mapping, key) and a
 * change of that key bound to `target` (journaled by another endpoint: the
 * decision, or a later edit) was committed to the journal after seq: a change at seq replayed
 * after the key was released is then superseded, not a new conflict. */
int journal_decided_later(struct state *s, const char *target, const char *mapping,
                          const char *key, int64_t seq, bool *found, struct err *e);

/* Per-endpoint summary for status: last journaled end LSN and commit count. */
int journal_endpoint_stats(struct state *s, const char *endpoint,
                           uint64_t *last_end_lsn, int64_t *txns,
                           struct err *e);

/* Deletes committed transactions with commit_seq <= upto that were
 * committed more than retention_s ago. */
int journal_prune(struct state *s, int64_t upto, int retention_s,
                  struct err *e);

/* journal_prune of at most max_txns of the oldest committed transactions:
 * the daemon's periodic prune, which must not stall its event loop on a
 * long history. */
int journal_prune_some(struct state *s, int64_t upto, int retention_s, int64_t max_txns,
                       struct err *e);

#endif
