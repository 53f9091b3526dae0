/* notify.h: systemd readiness and watchdog notifications (SPEC §8).
 * Every call is a no-op returning 0 when NOTIFY_SOCKET is unset, so the
 * daemon calls them unconditionally. */
#ifndef TANDEM_NOTIFY_H
#define TANDEM_NOTIFY_H

#include <stdint.h>

/* Sends READY=1, with STATUS=status when status is not NULL. Returns 0
 * (also when not under systemd) or a negative errno from sd_notify. */
int notify_ready(const char *status);

/* Sends STATUS= with a one-line summary formatted like printf; newlines
 * become spaces and registered secrets are masked. The text is cut at
 * 255 bytes. Returns 0 or a negative errno. */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sends STOPPING=1 when a stop begins. */
int notify_stopping(void);

/* Sends WATCHDOG=1. Call at least every notify_watchdog_usec() / 2. */
int notify_watchdog(void);

/* The watchdog interval the unit set with WatchdogSec, in microseconds, or
 * 0 when the watchdog is off (or not for this process). */
uint64_t notify_watchdog_usec(void);

#endif
