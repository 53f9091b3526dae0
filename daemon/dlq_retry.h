/* dlq_retry.h: performs the DLQ retries operators asked for (tandem dlq
 * retry), inside the running daemon: the change is journaled again as a new
 * transaction from its source, so it takes the normal apply path. A retry
 * of an entry also retries every later open entry of the same key, in
 * order, and unparks the key when none is left open. A change that fails
 * again becomes a new DLQ entry. */
#ifndef TANDEM_DLQ_RETRY_H
#define TANDEM_DLQ_RETRY_H

#include "../state/state.h"

/* Runs inside the caller's open state transaction; logs each retry. */
void dlq_retry_requested(struct state *st);

#endif
