/* canaries.h: end-to-end delivery probes (SPEC §4 canary, G9). For each
 * mapping with a canary block, tandem writes a canary record (the
 * configured key, other fields left out: a PostgreSQL row with only its
 * key, a REST record with only its key field) on one side, in turn per
 * allowed direction, and times its arrival on the other side through the
 * normal pipeline: a writer (pgsink, restsink) reports an applied change
 * of the canary key through its on_canary_candidate hook.
 *
 * Latency goes to the tandem_canary_latency_seconds histogram twice: the
 * unlabeled series counts every canary, and {mapping, direction} (a_to_b,
 * b_to_a) splits it per probe; sum one or the other, never both.
 *
 * Each canary is cleaned up after it arrived: deleted on the side it was
 * written on (the delete flows to the other side like any change; when
 * the mapping does not propagate deletes, it is deleted there too), and
 * the next canary is written only once the other side was read back
 * without it and interval_s has passed since the last one. So every canary
 * is a fresh record on a key whose last agreed state is "deleted": the
 * REST feed's echo rule (a record equal to the shadow is tandem's own
 * write) never takes it for an echo, and no canary is left behind. A
 * leftover of a run stopped mid-probe is deleted the same way at start.
 *
 * A canary not seen within deadline_s (or a cleanup not done within it) is
 * an error line and turns /healthz degraded (canary_overdue, subject the
 * mapping) until the next canary arrives. Operations that fail (a side
 * down) are retried, 1 s doubling up to interval_s; the canary keeps its
 * clock. */
#ifndef TANDEM_CANARIES_H
#define TANDEM_CANARIES_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../connectors/rest/rest_http.h"
#include "../state/state.h"
#include "config.h"
#include "health.h"
#include "metrics.h"

struct canaries;

int canaries_new(struct canaries **out, uv_loop_t *loop, const struct config *c,
                 struct state *st, struct metrics *m, struct health *h);

/* The transport of rest endpoint ep, for canary records written and read
 * on that side; takes a reference, dropped by canaries_close. Without it,
 * operations on that side fail (and are retried). */
void canaries_attach_rest(struct canaries *k, const struct cfg_endpoint *ep,
                          struct rest_http *h);

/* True when key (canonical key text) is mapping's canary key. */
bool canaries_is_canary(const struct cfg_mapping *m, const char *key);

/* A writer applied a change of mapping's canary key into target (an
 * endpoint name). Accepts k NULL. */
void canaries_seen(struct canaries *k, const char *mapping, const char *target);

/* Stops the probes and cancels their REST requests; frees k once the
 * timers are closed and running PostgreSQL queries have ended. Accepts
 * NULL. */
void canaries_close(struct canaries *k);

#endif
