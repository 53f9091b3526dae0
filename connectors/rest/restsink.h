/* restsink.h: the REST change writer (SPEC G3, G6, G8; §4 "write").
 *
 * Applies committed journal changes bound for one rest endpoint in commit
 * order. Changes to different keys run concurrently (up to max_in_flight
 * requests); two changes to one key never do, and a key's changes apply
 * in order. Applied progress (state_applied_set) moves over a journal
 * transaction once every change of it and of all earlier ones is done.
 *
 * Per change: insert → create (POST to the resource with the key in the
 * body, or PUT to resource/{id}); update → PATCH (the change's fields) or
 * PUT (the whole record); delete → DELETE, or PATCH of the soft-delete
 * flag. Field names go from side a to side b; values are typed by what
 * the server showed for each field (numbers exact or refused, see
 * rf_body_value).
 *
 * No lost update (G6): before a write the record is read (GET) and
 * compared with the shadow; the write carries the record's revision
 * (write.revision_field as revision_in says, else the ETag as If-Match
 * when the server sent one). A record that moved since the shadow is a
 * conflict (a 409/412 answer makes the writer read and compare again): the
 * mapping's strategy decides (resolver.h; the record's version is its
 * timestamp_field or cursor field, 0 = unknown), the conflict is recorded,
 * and a manual one parks the key until it is resolved. When the result
 * differs from the source too, the writer writes the target and leaves the
 * shadow as the source has it, so the result comes back through the feed.
 * Changes the resolver finds stale, redelivered or already agreed are
 * dropped before any request (G5).
 *
 * Exactly-once effect (G3): every write carries an Idempotency-Key made of
 * the state's random instance id and the change's journal sequence, the
 * same on every retry. A server-assigned id from a create is saved in the
 * key cross-reference at once, so a later attempt updates instead of
 * creating (the resource may be side a or b: the cross-reference pairs
 * side a's key with side b's, and changes carry the postgres side's). A create whose answer was lost (no answer, or a 5xx) is not
 * simply sent again: the record is first looked up by its key (found: the
 * create happened, compare; 404: create again). Creates carry the key in
 * the body and repeat their Idempotency-Key, so a server that honours
 * client ids answers 409 (→ read and compare) rather than duplicating;
 * only a server that assigns ids itself and ignores Idempotency-Key could
 * still duplicate a create whose answer was lost: prefer "create": "PUT"
 * there.
 *
 * Failures (G8): 429/503 wait Retry-After; 5xx, timeouts and connection
 * errors retry with exponential backoff and jitter within cfg->retry;
 * other 4xx, and retries past the policy, go to the DLQ and park the key.
 * A later change of a parked key is held: applied progress stops before
 * it (it stays in the journal), other keys keep flowing, and once the key
 * is unparked the writer re-reads the journal from its applied position;
 * changes already applied are recognised by the shadow and skipped. */
#ifndef TANDEM_RESTSINK_H
#define TANDEM_RESTSINK_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "../../state/state.h"
#include "rest_http.h"
#include "restfeed.h"

struct restsink;

struct restsink_stats {
    uint64_t applied;           /* changes written, or found already there */
    uint64_t conflicts;         /* conflicts decided and recorded */
    uint64_t stale;             /* dropped: older than the shadow */
    uint64_t unchanged;         /* skipped: the shadow already holds them */
    uint64_t delete_missing;    /* deletes of records already gone */
    uint64_t retries;           /* transient failures retried */
    uint64_t rejected;          /* permanent errors, sent to the DLQ */
    uint64_t exhausted;         /* transient past the retry policy, DLQ */
    uint64_t held;              /* changes held behind a parked key */
    int64_t lag_us;             /* source commit to written, for the last
                                 * journal transaction done */
};

struct restsink_hooks {
    /* Applied progress moved to applied_seq (in the open state txn). */
    void (*on_applied)(void *arg, struct restsink *s, int64_t applied_seq);
    /* The endpoint answers (true) or stopped answering (false). */
    void (*on_connection)(void *arg, struct restsink *s, bool up);
    /* A change of a mapping with canaries now stands in the target (it
     * was written, or found already there), and it is not a delete; key
     * is the canonical key. The owner tells canary records apart
     * (daemon/canaries.h). May be NULL. */
    void (*on_canary_candidate)(void *arg, struct restsink *s, const char *mapping,
                                const char *key);
    void *arg;
};

/* Creates the writer of rest endpoint ep; takes a reference on http (the
 * endpoint's transport, shared with its poller). */
int restsink_new(struct restsink **out, uv_loop_t *loop, const struct config *c,
                 const struct cfg_endpoint *ep, struct state *st,
                 struct rest_http *http, const struct restsink_hooks *h,
                 struct err *e);

/* Reads the applied position and starts; failures retry by themselves. */
int restsink_start(struct restsink *s);

/* Journal transactions up to durable_seq are durable: apply them. */
void restsink_kick(struct restsink *s, int64_t durable_seq);

int64_t restsink_applied(const struct restsink *s);
bool restsink_connected(const struct restsink *s);
/* True when no change is waiting or running. */
bool restsink_idle(const struct restsink *s);
const struct restsink_stats *restsink_stats(const struct restsink *s);
const struct cfg_endpoint *restsink_endpoint(const struct restsink *s);

/* For the endpoint's poller (echo, G4): true when a write of this writer
 * for (mapping, key) is under way and r (a feed record mapped to side-a
 * names) shows its values, i.e. r is that write coming back. */
bool restsink_expects(const struct restsink *s, const char *mapping,
                      const char *key, const struct rf_record *r);

/* Create fence for the poller: a feed page may hold records created by
 * creates still waiting for their answer (and so for their key
 * cross-reference). mark = the creates started so far; passed = every one
 * of them has finished. */
uint64_t restsink_create_mark(const struct restsink *s);
bool restsink_create_passed(const struct restsink *s, uint64_t mark);

/* Stops starting changes, lets running requests finish (at most a few
 * seconds), then cancels the rest, closes the handles, frees s and calls
 * done(arg). Unfinished changes are applied again at the next start. */
void restsink_close(struct restsink *s, void (*done)(void *arg), void *arg);

#endif
