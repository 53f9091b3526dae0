/* faults.h: seeded fault injection rules, set through POST /_admin/faults.
 * The fate of the n-th request a rule matches depends only on (seed, n), so a
 * test that sends the same requests in the same order sees the same faults. */
#ifndef CRMSIM_FAULTS_H
#define CRMSIM_FAULTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct faults;

/* default_seed is used by rules that give no "seed". */
int faults_new(struct faults **out, uint64_t default_seed);
void faults_free(struct faults *f);

/* Adds a rule from its JSON form, replacing one for the same route. Unknown
 * keys, rates outside 0..1 and bad types are -EINVAL (400) with text in e. */
int faults_add(struct faults *f, const json_t *spec, struct simerr *e);
void faults_clear(struct faults *f);
/* The rules with their match counters, a new array. */
json_t *faults_list(struct faults *f);

/* What to do to one request. Feed-only effects (malformed, duplicate,
 * backwards) are decided for every request and ignored elsewhere. */
struct fault_plan {
    bool matched;
    long latency_ms, hang_ms;
    bool drop, timeout, rate_limit, error, malformed, backwards;
    bool lost_reply;        /* a write is applied, then the connection is
                             * closed without the answer */
    int duplicate;          /* records to repeat, 0 = none */
    uint64_t draw;          /* extra randomness: which record, how far back */
};

/* route is the pattern ("GET /customers/{id}"), path the concrete request
 * ("GET /customers/5"). The most specific rule wins: exact pattern, then the
 * concrete path, then "METHOD *", then "*". */
void faults_decide(struct faults *f, const char *route, const char *path,
                   struct fault_plan *p);

#endif
