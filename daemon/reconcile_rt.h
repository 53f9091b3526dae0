/* reconcile_rt.h: the daemon's periodic reconcile (config "reconcile":
 * interval_s, mappings). Each round runs reconcile_mapping on a libuv
 * worker thread, then, on the loop: tandem_reconcile_drift{mapping,kind},
 * a log line per mapping, /healthz "drift" while any remains, and the last
 * result in the state's meta (shown by status). */
#ifndef TANDEM_RECONCILE_RT_H
#define TANDEM_RECONCILE_RT_H

#include <jansson.h>
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

/* `tandem reconcile` run by hand: its result for the daemon, whatever the
 * periodic reconcile's setting. The command saves drift ({mapping:
 * {kind: n}} for the mappings it compared) in the state; the daemon
 * adopts a result newer than *seen_us into tandem_reconcile_drift and
 * /healthz "drift", as a periodic round does. */
#define RECONCILE_CLI_META "reconcile_cli"
void reconcile_note_cli_result(struct state *st, const json_t *drift);
/* A report's drift classes as that {kind: n} object (new reference). */
json_t *reconcile_drift_json(const int64_t *classes);
void reconcile_adopt_cli_result(struct state *st, struct metrics *m, struct health *h,
                                int64_t *seen_us);

#endif
