/* resolver.h: conflict resolution (SPEC G5, G7; §4 conflict, deletes).
 *
 * Pure functions: no clock, no I/O, no arrival order. The same inputs give
 * the same output, and swapping the sides (a <-> b in the mapping, the base
 * versions and the arguments) gives the same final record, so both
 * directions converge.
 *
 * Records are jansson objects {side-a field name: text value or null}.
 * A field missing from a side's object was not sent (PostgreSQL unchanged
 * TOAST) and stands for the base value; null is a value. Values compare
 * with resolve_values_equal (numbers by value).
 *
 * Decisions, for every strategy:
 *  - Both sides already equal (both deleted, or equal records): decided,
 *    rule "equal", nothing written (manual does not park it).
 *  - deletes "ignore": a delete never wins against a record; the record is
 *    taken (and recreated on the side that deleted it), rule
 *    "deletes_ignored". "propagate" and "soft" resolve deletes alike (the
 *    writer turns a delete into the soft flag).
 *  - last_write_wins: the greater version wins (resolve_version). A delete
 *    and an update compare by version like any two writes. Exact ties go
 *    to the side whose endpoint name is greater (strcmp); same endpoint:
 *    the greater collection name (table or resource); same again: a
 *    record beats a delete, then the record whose canonical JSON (sorted
 *    keys, compact) is bytewise greater.
 *  - source_priority: the priority side's record (or delete) wins whole.
 *  - field_merge: three-way against base per field: equal on both sides
 *    → kept; changed on one side only → taken; changed on both to
 *    different values → the fallback decides that field (last_write_wins
 *    by the records' versions, source_priority, or manual which parks the
 *    whole record). A delete against a changed record, a missing base or
 *    a tombstone base with both sides present → the fallback decides the
 *    whole record. A delete against an unchanged record is taken; a new
 *    record against a still-deleted side (tombstone base) is taken.
 *  - manual: outcome RESOLVE_PARK, nothing written.
 *  - plugin: tandem/resolver.h; the plugin's choice.
 *  - Whole-record winners: a field the winner does not carry (neither sent
 *    nor in base) is filled from the other side, so both sides end equal.
 *  - Values equal by value but not by text ("12.50" vs "12.5") keep the
 *    bytewise smaller text in the result; neither side is rewritten.
 */
#ifndef TANDEM_RESOLVER_H
#define TANDEM_RESOLVER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "daemon/config.h"
#include "daemon/err.h"
#include "include/tandem/resolver.h"

/* The shadow as the resolver sees it. */
struct resolve_base {
    const json_t *fields;   /* last agreed record; ignored when tombstone */
    int64_t version_a_us;   /* side a's version of the agreement */
    int64_t version_b_us;
    bool tombstone;         /* deleted at these versions */
};

/* One side's current state. */
struct resolve_side {
    const json_t *fields;   /* the record; ignored when deleted */
    bool deleted;
    int64_t version_us;     /* the source version (commit time or cursor) */
    int64_t commit_us;      /* the source commit time (for the log) */
};

enum resolve_outcome {
    RESOLVE_DECIDED = 0,    /* result holds the record both sides end with */
    RESOLVE_PARK,           /* manual: write nothing until an operator decides */
    RESOLVE_ERROR           /* detail says why; write nothing */
};

#define RESOLVE_DETAIL_MAX 512

struct resolve_result {
    enum resolve_outcome outcome;
    bool deleted;           /* decided: both sides end deleted */
    json_t *fields;         /* decided record (owned); NULL when deleted,
                             * parked or failed */
    bool write_a, write_b;  /* sides whose current state differs from the
                             * result and must be written */
    char winner;            /* 'a' or 'b' for a whole-record winner, else 0 */
    /* Per field: [{"field": name, "taken_from": "a"|"b"|"base"|"both_equal"
     * (plugin: also "merged"; parked: null), "rule": r}] in field-name
     * order, r one of equal, unchanged, one_side_changed, last_write_wins,
     * source_priority, fill_from_other, deletes_ignored, plugin, parked.
     * A delete result has one entry with "field": null. Owned. */
    json_t *explain;
    /* What decided: "equal", "deletes_ignored", "last_write_wins",
     * "source_priority", "field_merge" (also when its fallback decided),
     * "manual" (every park, except a plugin's) or "plugin". Static. */
    const char *rule;
    char detail[RESOLVE_DETAIL_MAX];  /* one sentence for the conflict log */
};

struct resolver_plugin;

/* Decides the conflict of key between a and b over base (NULL: none yet).
 * Callers drop stale changes first (resolve_is_stale, resolve_check);
 * resolve compares what it is given. For an update (not a full row),
 * pass the fields it sent; the rest count as base values (TOAST).
 * plugin is required for strategy plugin, else ignored. key is only
 * passed on (plugin, detail). Fills *out (release with
 * resolve_result_clear) and returns 0 for RESOLVE_DECIDED and
 * RESOLVE_PARK; for RESOLVE_ERROR returns -EINVAL (bad input, bad
 * strategy), -EPROTO (plugin failed) or -ENOMEM, with out->detail set. */
int resolve(const struct cfg_mapping *m, const struct resolver_plugin *plugin,
            const char *key, const struct resolve_base *base,
            const struct resolve_side *a, const struct resolve_side *b,
            struct resolve_result *out);

/* A decided (or parked) conflict for the conflict log. JSON texts; NULL
 * where a side is deleted or there is no base. */
struct resolve_log {
    const struct cfg_mapping *m;
    const char *key;
    const char *base, *side_a, *side_b;
    int64_t version_a_us, version_b_us;
};

/* Records res in the conflict log (state/conflicts.h) with its result,
 * rule and per-field decisions; open when parked. Starts the state
 * transaction when none is open. Returns 0 or a negative errno. */
struct state;
int resolve_log_conflict(struct state *st, const struct resolve_log *l,
                         const struct resolve_result *res, struct err *e);

/* Frees what r owns and zeroes it; r may be NULL. */
void resolve_result_clear(struct resolve_result *r);

/* The version last_write_wins compares: m->timestamp_field parsed from
 * s->fields when set, present as text and parseable, else s->version_us. */
int64_t resolve_version(const struct cfg_mapping *m, const struct resolve_side *s);

/* True when two text values are equal: both numeric (-?digits[.digits]
 * [e[+-]digits], no '+' sign, no spaces) and equal by value (12.50 ==
 * 12.5, 1e2 == 100, -0 == 0, 007 == 7), else bytewise. NULL (SQL null)
 * equals only NULL. */
bool resolve_values_equal(const char *a, const char *b);

/* Parses "2026-11-27 10:00:00.123+00", "2026-11-27T10:00:00.123Z",
 * "+05:30"/"-0800" zones (none: UTC), seconds and fraction optional, a
 * date alone, into µs since the epoch. Digits past µs are truncated.
 * Returns 0 or -EINVAL. */
int resolve_parse_timestamp(const char *s, int64_t *out_us);

/* G5: true when version_us is older than base's version for side ('a' or
 * 'b'), tombstones included: such a change is dropped and counted. False
 * without a base. */
bool resolve_is_stale(const struct resolve_base *base, char side,
                      int64_t version_us);

/* What a single change (s, from side) is against the shadow. */
enum resolve_fresh {
    RESOLVE_FRESH_CHANGE = 0,   /* newer than the shadow: apply / resolve */
    RESOLVE_FRESH_NEW,          /* no shadow, or a record newer than a
                                 * tombstone: a new record (upsert) */
    RESOLVE_FRESH_STALE,        /* older than the shadow: drop and count */
    RESOLVE_FRESH_DUPLICATE,    /* same version and state as the shadow:
                                 * delivered twice, a no-op */
    RESOLVE_FRESH_ECHO          /* newer version, same state as the shadow:
                                 * write nothing, advance the shadow */
};

/* Classifies s by version_us against base's version for side and by
 * state (fields not sent count as unchanged). */
enum resolve_fresh resolve_check(const struct resolve_base *base, char side,
                                 const struct resolve_side *s);

/* Loads the plugin at path with dlopen (a path without '/' is taken
 * relative to the working directory, never searched for) and checks
 * tandem_resolver_abi_version() == TANDEM_RESOLVER_ABI_VERSION and
 * tandem_resolve. On success *out owns the handle (resolver_plugin_free).
 * Errors: -ENOENT (cannot load), -ENOEXEC (missing symbol), -EPROTO (ABI
 * version mismatch), -ENOMEM; e names the path and the cause. */
int resolver_plugin_load(const char *path, struct resolver_plugin **out,
                         struct err *e);

/* The same checks over two functions already in the process (a resolver
 * linked in statically, tests). Errors as resolver_plugin_load. */
int resolver_plugin_wrap(const char *name, tandem_resolver_abi_version_fn version,
                         tandem_resolve_fn fn, struct resolver_plugin **out,
                         struct err *e);

/* Unloads p; p may be NULL. */
void resolver_plugin_free(struct resolver_plugin *p);

/* A writer's plugins, one per mapping, loaded on first use and kept until
 * resolver_plugin_cache_free. *cache starts NULL. Returns the mapping's
 * plugin, or NULL with e set (errors as resolver_plugin_load). */
struct resolver_plugin_cache;
const struct resolver_plugin *resolver_plugin_for(struct resolver_plugin_cache **cache,
                                                  const struct cfg_mapping *m,
                                                  struct err *e);
void resolver_plugin_cache_free(struct resolver_plugin_cache *c);

#endif
