/* health.h: the set of reasons the daemon is degraded, behind /healthz
 * (SPEC §8). Thread-safe: the daemon loop sets and clears reasons while the
 * HTTP thread renders them. */
#ifndef TANDEM_HEALTH_H
#define TANDEM_HEALTH_H

#include <stddef.h>

/* The reason codes health_set accepts. */
#define HEALTH_ENDPOINT_DOWN  "endpoint_down"
#define HEALTH_NOT_READY      "not_ready"
#define HEALTH_DLQ_NONEMPTY   "dlq_nonempty"
#define HEALTH_CANARY_OVERDUE "canary_overdue"
#define HEALTH_DRIFT          "drift"
#define HEALTH_SLOT_RETENTION "slot_retention"

/* Longest detail kept, in bytes; longer ones are cut. */
#define HEALTH_DETAIL_MAX 512

struct health;

/* Creates an empty (healthy) set. Returns 0 or -ENOMEM. */
int health_new(struct health **out);

/* Frees the set. Accepts NULL. */
void health_free(struct health *h);

/* Adds the reason (code, subject), or replaces its detail when present.
 * subject names what is degraded (an endpoint, a mapping) and may be NULL
 * or "" when the code needs none. detail is a one-line explanation; when
 * NULL or "" the subject (or the code) is used. Registered secrets are
 * masked in detail (log_redact). Returns 0, -EINVAL for a code not listed
 * above, or -ENOMEM. */
int health_set(struct health *h, const char *code, const char *subject,
               const char *detail);

/* Removes the reason (code, subject); subject NULL removes the code for
 * every subject, "" only the subject-less one. Absent reasons are fine. */
void health_clear(struct health *h, const char *code, const char *subject);

/* The number of reasons set (0 means healthy). */
size_t health_count(struct health *h);

/* The /healthz body: {"status":"ok"} with *http_status 200, or
 * {"status":"degraded","reasons":[{"code":…,"subject":…,"detail":…}]}
 * with 503, reasons sorted by code then subject ("subject" is left out
 * when empty). http_status may be NULL. Returns a malloc'd string the
 * caller frees, or NULL when out of memory (*http_status is then 500). */
char *health_json(struct health *h, int *http_status);

#endif
