/* restsrc.h: the REST change poller (SPEC G1, G4, G10; §4 "feed").
 *
 * For every mapping whose side on this rest endpoint is a source, pages
 * the side's change feed: style updated_since (an inclusive keyset cursor:
 * the last cursor value exactly as the server wrote it, plus the keys seen
 * at it, which are skipped when the next page starts with them again;
 * offset_param pages through a run of equal cursor values) or style
 * sequence (CouchDB _changes, an opaque since). Each page is journaled as
 * one journal transaction together with the feed's new position, in the
 * owner's open state transaction (position name "<endpoint>/<mapping>");
 * the next page is requested only after the owner made it durable
 * (restsrc_committed, then restsrc_durable), so the cursor never runs ahead of the journal (G1).
 * A short page means caught up: the next poll is poll_interval_ms later.
 *
 * Records are mapped to side-a names with canonical values; a key the
 * server assigned becomes the postgres side's key it stands for (the key
 * cross-reference, whichever side the resource is). A record
 * whose values equal the shadow (or a write of this endpoint's writer
 * still under way) is an echo of tandem's own write: the shadow's version
 * is updated, nothing is journaled (G4). A record older than the shadow's
 * version for its side (a page read before a write of ours landed) is
 * stale and dropped (G5). A record without a key, with a
 * value that cannot be text, or over the size limit goes to the DLQ with
 * an excerpt and the feed goes on (G10); its key is not parked (a later
 * record carries the whole record again). A page that cannot be parsed is
 * retried with backoff and logged; the cursor does not move. */
#ifndef TANDEM_RESTSRC_H
#define TANDEM_RESTSRC_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../state/state.h"
#include "rest_http.h"

struct restsrc;
struct restsink;

struct restsrc_stats {
    uint64_t captured;          /* changes journaled */
    uint64_t txns;              /* pages journaled (one journal txn each) */
    uint64_t echo_suppressed;   /* records recognised as tandem's writes */
    uint64_t stale_dropped;     /* records older than the shadow (G5) */
    uint64_t dead_lettered;     /* records sent to the DLQ */
    uint64_t dup_skipped;       /* records seen before at the cursor value */
    uint64_t pages;             /* pages read */
    uint64_t page_errors;       /* pages that failed (request or parse) */
};

struct restsrc_hooks {
    /* After a page was written to the open state transaction (changes,
     * DLQ entries, echo versions and the position): the owner commits
     * (had_commit is always true here) and then calls restsrc_durable. */
    void (*on_batch)(void *arg, struct restsrc *src, bool had_commit,
                     uint64_t open_changes);
    /* The feed answers (true) or stopped answering (false). */
    void (*on_connection)(void *arg, struct restsrc *src, bool up);
    void *arg;
};

/* Creates the poller of rest endpoint ep; takes a reference on http. */
int restsrc_new(struct restsrc **out, uv_loop_t *loop, const struct config *c,
                const struct cfg_endpoint *ep, struct state *s,
                struct rest_http *http, const struct restsrc_hooks *h,
                struct err *e);

/* The endpoint's writer, consulted for echoes of writes under way and for
 * creates still waiting for their answer; NULL unlinks. */
void restsrc_link_writer(struct restsrc *p, struct restsink *w);

/* Loads the saved positions and starts polling. */
int restsrc_start(struct restsrc *p);

/* The owner committed the state: pages written so far are in it. */
void restsrc_committed(struct restsrc *p);

/* What the last restsrc_committed covered is on disk: those pages'
 * cursors move and the next pages are requested. */
void restsrc_durable(struct restsrc *p);

const struct cfg_endpoint *restsrc_endpoint(const struct restsrc *p);
const struct restsrc_stats *restsrc_stats(const struct restsrc *p);
/* True once a feed request succeeded and the feed did not fail since. */
bool restsrc_up(const struct restsrc *p);

/* Cancels the request under way (its page is read again at the next
 * start), closes the handles, frees p and calls done(arg). */
void restsrc_close(struct restsrc *p, void (*done)(void *arg), void *arg);

#endif
