/* durable.h: makes the daemon's state commits durable off the event loop.
 *
 * The daemon's state connection commits with synchronous = NORMAL: a
 * commit writes the WAL to the kernel and returns. A worker thread then
 * fdatasyncs the WAL (one fsync covers every commit before it) and reports
 * back on the loop; only then does the daemon acknowledge its sources and
 * let its writers apply what the commit holds. The daemon commits again
 * only once the last sync is done (the batch keeps growing meanwhile), so
 * each report covers exactly one commit: group commit, with neither
 * capture nor apply waiting on the disk. A process crash loses nothing
 * (the kernel has the WAL); a power loss loses only what was never
 * acknowledged. */
#ifndef TANDEM_DURABLE_H
#define TANDEM_DURABLE_H

#include <stdbool.h>
#include <uv.h>

#include "err.h"

struct durable;

/* Called on the loop when a sync ends: err 0, or the errno of a failed
 * fdatasync (the state's durability is then unknown). */
typedef void (*durable_done_fn)(void *arg, int err);

int durable_new(struct durable **out, uv_loop_t *loop, const char *state_path,
                durable_done_fn done, void *arg, struct err *e);

/* Whether a sync is running. */
bool durable_busy(const struct durable *d);

/* Starts a sync of everything committed so far; d must not be busy.
 * Returns 0, or negative when the work cannot be queued. */
int durable_start(struct durable *d);

/* Syncs on the calling thread (shutdown, or when work cannot be queued);
 * 0 or errno. */
int durable_sync_now(struct durable *d);

/* Starts a checkpoint of the state's WAL on a worker thread unless one
 * runs (see state_checkpoint_elsewhere); a failure is logged, not fatal:
 * the WAL then keeps growing. 0, or negative when it cannot be queued. */
int durable_checkpoint(struct durable *d);

/* Frees d now, or when its running sync and checkpoint end (their
 * reports are dropped). */
void durable_free(struct durable *d);

#endif
