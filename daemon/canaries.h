/* canaries.h: end-to-end delivery probes (SPEC §4 canary, G9). For each
 * mapping with a canary block, tandem writes a canary row (the configured
 * key, other columns at their defaults) on one side, in turn per allowed
 * direction, times its arrival on the other side through the normal
 * pipeline, then deletes it again. Latency goes to the
 * tandem_canary_latency_seconds histogram; a canary not seen within
 * deadline_s is an error line and turns /healthz degraded. */
#ifndef TANDEM_CANARIES_H
#define TANDEM_CANARIES_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../state/state.h"
#include "config.h"
#include "health.h"
#include "metrics.h"

struct canaries;

int canaries_new(struct canaries **out, uv_loop_t *loop, const struct config *c,
                 struct state *st, struct metrics *m, struct health *h);

/* True when key (canonical key text) is mapping's canary key. */
bool canaries_is_canary(const struct cfg_mapping *m, const char *key);

/* A writer applied a change of mapping's canary key into target. */
void canaries_seen(struct canaries *k, const char *mapping, const char *target);

/* Stops the timers; frees k once they are closed. Accepts NULL. */
void canaries_close(struct canaries *k);

#endif
