/* metrics.h: the process's Prometheus registry (SPEC §8), thread-safe.
 *
 * Every metric tandem exports is declared in metrics.c and registered by
 * metrics_new, so /metrics prints its HELP and TYPE lines before the
 * first sample. A series is one metric name plus a label body such as
 * `from="app",to="crm"`; build label bodies with metrics_labels, always
 * passing the keys in the same order (the body is the series identity).
 *
 * Declared metrics (labels in the order callers should pass them):
 *   tandem_up                               gauge
 *   tandem_changes_captured_total{endpoint} counter
 *   tandem_journal_txns_total{endpoint}     counter
 *   tandem_changes_applied_total{from,to}   counter
 *   tandem_apply_errors_total{to,kind}      counter
 *   tandem_pg_delete_missing_total{to}      counter
 *   tandem_conflicts_total{mapping,strategy} counter
 *   tandem_echo_suppressed_total{endpoint}  counter
 *   tandem_stale_dropped_total{endpoint}    counter
 *   tandem_dlq_depth                        gauge
 *   tandem_journal_depth                    gauge
 *   tandem_lag_seconds{from,to}             gauge
 *   tandem_pg_slot_retained_bytes{endpoint} gauge
 *   tandem_parked_keys{reason}              gauge
 *   tandem_reconcile_drift{mapping,kind}    gauge
 *   tandem_canary_latency_seconds           histogram (0.01 .. 60 s)
 */
#ifndef TANDEM_METRICS_H
#define TANDEM_METRICS_H

#include <stddef.h>

/* Longest label body accepted by add/set/observe, in bytes. */
#define METRICS_LABELS_MAX 1024

struct metrics;

/* Creates a registry with every metric above declared; unlabeled metrics
 * start with one sample at 0. Returns 0 or -ENOMEM. */
int metrics_new(struct metrics **out);

/* Frees the registry. Accepts NULL. No other thread may use m meanwhile. */
void metrics_free(struct metrics *m);

/* Counter (or gauge) += v. For counters v must be finite and >= 0.
 * Unknown names, type mismatches, malformed label bodies and bad values
 * are ignored silently: metrics never fail their caller. labels may be
 * NULL or "" for none. */
void metrics_add(struct metrics *m, const char *name, const char *labels,
                 double v);

/* Gauge = v. Ignored for counters and histograms, and for unknown names. */
void metrics_set(struct metrics *m, const char *name, const char *labels,
                 double v);

/* Records one observation v (not NaN) in a histogram. Ignored for other
 * types, unknown names, or a label body using the reserved name "le". */
void metrics_observe(struct metrics *m, const char *name, const char *labels,
                     double v);

/* The Prometheus text exposition (format 0.0.4) of every metric, families
 * in declaration order and series sorted by label body. Returns a malloc'd
 * string the caller frees, or NULL when out of memory. */
char *metrics_render(struct metrics *m);

/* Builds a label body into buf from NULL-terminated key/value string
 * pairs: metrics_labels(buf, sizeof(buf), "from", "app", "to", "crm",
 * NULL) gives `from="app",to="crm"`. Values are escaped (\\, \", \n); a
 * NULL value counts as "". Returns 0, -EINVAL for an invalid label name
 * (not [a-zA-Z_][a-zA-Z0-9_]*, or starting with "__"), or -ENOSPC when
 * cap is too small; on error buf holds "" (when cap > 0). */
int metrics_labels(char *buf, size_t cap, ...) __attribute__((sentinel));

#endif
