/* pgsrc.h: the PostgreSQL change reader. Streams a logical slot with
 * pgoutput over a non-blocking replication connection on the libuv loop,
 * turns row changes of mapped tables into journal entries (in the state's
 * open write transaction), skips transactions carrying the endpoint's own
 * origin (echo filter, G4), and acknowledges to the server only positions
 * the owner has made durable (G1). Reconnects with capped backoff. */
#ifndef TANDEM_PGSRC_H
#define TANDEM_PGSRC_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../state/state.h"

struct pgsrc;

struct pgsrc_stats {
    uint64_t captured;          /* changes journaled */
    uint64_t txns;              /* source transactions journaled */
    uint64_t echo_skipped;      /* transactions skipped for our origin */
    uint64_t dup_skipped;       /* transactions already journaled */
};

struct pgsrc_hooks {
    /* After a read batch that added changes or commits to the open state
     * transaction: the owner decides when to commit (group commit) and
     * then calls pgsrc_durable. open_changes counts appended changes not
     * yet committed to the state. */
    void (*on_batch)(void *arg, struct pgsrc *src, bool had_commit,
                     uint64_t open_changes);
    /* Connected and streaming (true) or disconnected (false). */
    void (*on_connection)(void *arg, struct pgsrc *src, bool up);
    /* A backfill watermark (PGSRC_WM_PREFIX message) passed in the stream
     * (may be NULL). At a high watermark, changed[0..nchanged) are the
     * canonical keys of the watched mapping that changed since the low
     * watermark of the same id (in transactions journaled or skipped), or
     * changed is NULL when that low watermark was not seen (a reconnect
     * in between): then nothing is known and the chunk must be read again.
     * Runs inside the state's open write transaction, in stream order. */
    void (*on_watermark)(void *arg, struct pgsrc *src, char kind, const char *id,
                         const char *const *changed, size_t nchanged);
    void *arg;
};

int pgsrc_new(struct pgsrc **out, uv_loop_t *loop, const struct config *c,
              const struct cfg_endpoint *ep, struct state *s,
              const struct pgsrc_hooks *h, struct err *e);

/* Logical decoding messages with this prefix are backfill watermarks:
 * content "L <id> <mapping>" (low) or "H <id>" (high). */
#define PGSRC_WM_PREFIX "tandem.backfill"

/* Connects and starts streaming; failures retry by themselves. */
int pgsrc_start(struct pgsrc *p);

/* The end LSN of the last source commit appended to the state (durable or
 * not): the owner saves it as the position before committing. */
uint64_t pgsrc_pending_lsn(const struct pgsrc *p);

/* The owner committed the state: everything appended so far is in it.
 * Until pgsrc_durable, nothing new is acknowledged to the server. */
void pgsrc_committed(struct pgsrc *p);

/* The owner's state commit failed: what was journaled since the last
 * pgsrc_committed is gone. Reconnects, and the server resends it (it was
 * never acknowledged); until then nothing past the last commit counts as
 * journaled, so no later commit can acknowledge it. */
void pgsrc_rewind(struct pgsrc *p);

/* What the last pgsrc_committed covered is on disk: the reader may
 * acknowledge it to the server. */
void pgsrc_durable(struct pgsrc *p);

const struct cfg_endpoint *pgsrc_endpoint(const struct pgsrc *p);
const struct pgsrc_stats *pgsrc_stats(const struct pgsrc *p);
bool pgsrc_streaming(const struct pgsrc *p);

/* Whether a source transaction is being journaled (its commit not yet
 * received): a writer may apply it early. */
bool pgsrc_in_journal_txn(const struct pgsrc *p);

/* The journal transaction being written (0: none): any other uncommitted
 * one of this endpoint was cut short by a reconnect. */
int64_t pgsrc_journal_txn(const struct pgsrc *p);

/* Sends a final status update, closes the connection and the handles;
 * done(arg) runs once everything is closed and p is freed. */
void pgsrc_close(struct pgsrc *p, void (*done)(void *arg), void *arg);

#endif
