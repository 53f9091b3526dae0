/* daemon.h: `tandem run`: the libuv loop that wires readers, the journal
 * and writers together, with signals, health, metrics and sd_notify. */
#ifndef TANDEM_DAEMON_H
#define TANDEM_DAEMON_H

#include "config.h"
#include "err.h"

/* Runs until SIGTERM/SIGINT. Returns 0 after a clean stop, or a negative
 * errno when the state cannot be opened (e->msg says why). */
int daemon_run(struct config *cfg, struct err *e);

#endif
