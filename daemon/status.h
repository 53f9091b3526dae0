/* status.h: the status document shared by `tandem status --json` and
 * GET /status (SPEC §3, §8), read from the state file alone, so it works
 * while the daemon runs (open the state STATE_READONLY).
 *
 * Shape (counts are integers; a missing position or LSN is null):
 *   {"pipeline": name,
 *    "endpoints": {name: {"kind": "postgres"|"rest",
 *                         "position": text|null,        acknowledged source position
 *                         "last_journaled_lsn": "X/Y"|null,  postgres only
 *                         "journaled_txns": n,
 *                         "target": bool,               some mapping writes to it
 *                         "applied_commit_seq": n,
 *                         "pending_txns": n, "pending_changes": n}},
 *    "journal": {"last_commit_seq": n, "depth_txns": n, "depth_changes": n},
 *    "conflicts": {"total": n, "open": n},
 *    "dlq": {"depth": n},
 *    "parked": {reason: n}}
 * pending_* count committed transactions from other endpoints past the
 * endpoint's applied_commit_seq (0 when it is no mapping's target); the
 * journal depth is their sum over endpoints. No conninfo, password, URL or
 * header ever appears in it. */
#ifndef TANDEM_STATUS_H
#define TANDEM_STATUS_H

#include <jansson.h>
#include <stdio.h>

#include "config.h"
#include "err.h"
#include "../state/state.h"

/* Builds the document. Returns a new reference (json_decref it), or NULL
 * with e set (-EIO, -ENOMEM, ... from the state module). */
json_t *status_build(struct state *s, const struct config *c, struct err *e);

/* The same as compact JSON text (malloc'd), e.g. for an HTTP handler;
 * NULL on error. */
char *status_json_text(struct state *s, const struct config *c,
                       struct err *e);

/* Prints doc as a human-readable summary with an endpoint table.
 * Returns 0, -EINVAL when doc lacks the shape above, or -EIO when writing
 * fails. */
int status_print_text(FILE *out, json_t *doc);

#endif
