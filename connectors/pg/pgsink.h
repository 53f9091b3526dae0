/* pgsink.h: the PostgreSQL change writer (SPEC G2, G3, G4, G6).
 *
 * Applies committed journal transactions bound for one postgres endpoint,
 * in commit order, over a non-blocking libpq connection in pipeline mode.
 * Consecutive source transactions are grouped into one target transaction
 * (never split). Each target transaction runs under the endpoint's
 * replication origin with pg_replication_origin_xact_setup(commit_seq), so
 * origin progress says exactly which journal transactions are applied,
 * after any crash, and the endpoint's reader skips these rows (no echo).
 * Updates and deletes apply only when the row still matches the shadow (or
 * already holds the incoming values); otherwise last-write-wins by commit
 * time (the row's commit timestamp vs the change's) decides, and the
 * conflict is recorded. */
#ifndef TANDEM_PGSINK_H
#define TANDEM_PGSINK_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../state/state.h"

struct pgsink;

struct pgsink_stats {
    uint64_t applied;           /* changes applied */
    uint64_t txns;              /* target transactions committed */
    uint64_t conflicts;
    uint64_t delete_missing;    /* deletes of rows already gone */
    uint64_t stale_dropped;     /* older than their record's delete (G5) */
    uint64_t errors;            /* changes dead-lettered (rejected or exhausted) */
    uint64_t exhausted;         /* of those, transient failures past the retry policy */
    uint64_t transient;         /* target transactions failed and retried */
    int64_t lag_us;             /* commit to applied, for the last target commit */
};

struct pgsink_hooks {
    /* A target transaction committed; applied_seq is the journal commit
     * sequence now applied. */
    void (*on_applied)(void *arg, struct pgsink *s, int64_t applied_seq);
    void (*on_connection)(void *arg, struct pgsink *s, bool up);
    /* A change of a mapping with canaries was written (may be NULL). */
    void (*on_canary_candidate)(void *arg, struct pgsink *s, const char *mapping,
                                const char *key);
    /* State commits the owner has made so far (see pgsink_state_synced). */
    uint64_t (*state_commit_gen)(void *arg);
    void *arg;
};

int pgsink_new(struct pgsink **out, uv_loop_t *loop, const struct config *c,
               const struct cfg_endpoint *ep, struct state *st,
               const struct pgsink_hooks *h, struct err *e);
int pgsink_start(struct pgsink *s);

/* Journal transactions up to durable_seq are committed to the state and
 * may be applied: wakes the writer. */
void pgsink_kick(struct pgsink *s, int64_t durable_seq);

/* The owner's state commits up to number gen (state_commit_gen) are on
 * disk. A target transaction that left a change out and recorded it in
 * the state (dead-lettered, or waiting for its parent) commits only once
 * that record is on disk: after a crash in between, the target's origin
 * progress would have moved past a change recorded nowhere. */
void pgsink_state_synced(struct pgsink *s, uint64_t gen);

/* The daemon's state commit failed: what this writer recorded since the
 * last commit is gone. An open target transaction is rolled back (by a
 * reconnect) and redone from the origin's progress. */
void pgsink_rewind(struct pgsink *s);

/* Whether a source has a transaction partly journaled (set before a kick;
 * false by default): only then does the writer look for one to apply
 * early, which costs two journal queries per look. */
void pgsink_source_open(struct pgsink *s, bool open);

int64_t pgsink_applied(const struct pgsink *s);
bool pgsink_connected(const struct pgsink *s);
/* True when nothing is in flight. */
bool pgsink_idle(const struct pgsink *s);
const struct pgsink_stats *pgsink_stats(const struct pgsink *s);
const struct cfg_endpoint *pgsink_endpoint(const struct pgsink *s);

/* Stops feeding; once in-flight work finished (or after the connection is
 * dropped) closes everything, frees s and calls done(arg). */
void pgsink_close(struct pgsink *s, void (*done)(void *arg), void *arg);

#endif
