/* conflicts.h: the conflict log (SPEC G7): every decision, with base, both
 * sides, the result and the rule applied. */
#ifndef TANDEM_CONFLICTS_H
#define TANDEM_CONFLICTS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "state.h"

struct conflict {
    int64_t id;             /* set by conflict_record / read */
    int64_t ts_us;          /* when recorded */
    const char *mapping;
    const char *key;
    const char *strategy;   /* last_write_wins, ... */
    const char *base;       /* JSON or NULL */
    const char *side_a;     /* JSON or NULL (deleted) */
    const char *side_b;
    const char *result;     /* JSON, NULL while open */
    const char *rule;       /* explanation, e.g. "a newer (t_a > t_b)" */
    bool open;              /* manual strategy: awaiting an operator */
    /* Per field, JSON array [{"field", "taken_from", "rule"}] as the
     * resolver explains it (resolver.h); NULL when not known. */
    const char *decisions;
    int64_t version_a_us;   /* the versions compared (0 when unknown) */
    int64_t version_b_us;
    int64_t resolved_ts_us; /* when decided (= ts_us unless open); read only */
};

/* c as a JSON object, for `conflicts list --json|show` and GET /conflicts:
 * base, a, b and result as JSON text, decisions as JSON. */
json_t *conflict_to_json(const struct conflict *c);

/* Records c. ts_us 0 means now; c->id and c->ts_us are set. mapping, key
 * and strategy are required (-EINVAL); the strings are copied. */
int conflict_record(struct state *s, struct conflict *c, struct err *e);

/* Calls fn for conflicts newest first (only open ones when open_only),
 * at most limit (0 = all). Strings live until fn returns. */
typedef int (*conflict_fn)(const struct conflict *c, void *arg);
int conflict_list(struct state *s, bool open_only, int limit, conflict_fn fn,
                  void *arg, struct err *e);

/* -ENOENT when no such id. */
int conflict_get(struct state *s, int64_t id, conflict_fn fn, void *arg,
                 struct err *e);

/* Marks an open conflict decided with result (required); rule NULL keeps
 * the recorded one. -ENOENT when no such id, -EALREADY when it is not
 * open. */
int conflict_resolve(struct state *s, int64_t id, const char *result,
                     const char *rule, struct err *e);

/* Closes every open conflict of (mapping, key) with result and rule, as
 * an operator's decision on one of them settles the key in both
 * directions; *closed (may be NULL) counts them. */
int conflict_resolve_key(struct state *s, const char *mapping, const char *key,
                         const char *result, const char *rule, int *closed,
                         struct err *e);

/* The newest open conflict of (mapping, key) into *id; -ENOENT when none
 * (a manual-strategy key is parked while it has one). */
int conflict_find_open(struct state *s, const char *mapping, const char *key,
                       int64_t *id, struct err *e);

int conflict_count(struct state *s, bool open_only, int64_t *out,
                   struct err *e);

/* Conflicts recorded after id *last, per mapping and strategy: calls fn
 * once per pair with their number (strings live until fn returns) and
 * moves *last to the newest id seen. For counters that follow the log. */
typedef void (*conflict_tally_fn)(const char *mapping, const char *strategy,
                                  int64_t n, void *arg);
int conflict_tally_since(struct state *s, int64_t *last, conflict_tally_fn fn,
                         void *arg, struct err *e);

#endif
