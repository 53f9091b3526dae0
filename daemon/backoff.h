/* backoff.h: jittered retry delays (SPEC G8). Every retry loop — a lost
 * connection, a failed target transaction, a feed page, an endpoint not
 * ready — doubles its delay up to a cap and waits a jittered share of it,
 * so processes that lost the same peer at the same moment do not come back
 * in lockstep. */
#ifndef TANDEM_BACKOFF_H
#define TANDEM_BACKOFF_H

#include <stdint.h>

/* "Equal jitter": a delay drawn from [delay_ms / 2, delay_ms] (the
 * expected wait is 3/4 of delay_ms). Per-thread generator, seeded from
 * the kernel on first use. */
uint64_t backoff_jitter(uint64_t delay_ms);

#endif
