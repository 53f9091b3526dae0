/* reconcile_rt.h: the daemon's periodic reconcile (config "reconcile":
 * interval_s, mappings). Each round runs reconcile_mapping on a libuv
 * worker thread, then, on the loop: tandem_reconcile_drift{mapping,kind},
 * a log line per mapping, /healthz "drift" while any remains, and the last
 * result in the state's meta (shown by status). */
#ifndef TANDEM_RECONCILE_RT_H
#define TANDEM_RECONCILE_RT_H

#include <uv.h>

#include "../state/state.h"
#include "config.h"
#include "health.h"
#include "metrics.h"

struct reconcile_rt;

/* Does nothing (and *out is NULL) when reconcile.interval_s is 0. */
int reconcile_rt_new(struct reconcile_rt **out, uv_loop_t *loop,
                     const struct config *c, struct state *st,
                     struct metrics *m, struct health *h);

/* Stops the timer; a round in progress finishes first. Accepts NULL. */
void reconcile_rt_close(struct reconcile_rt *r);

#endif
