/* dlq.h: the dead-letter queue and parked keys (SPEC G8, G10).
 *
 * A change that failed permanently, or transiently past the retry policy,
 * or a record that could not be read (no key, bad type, too large) becomes
 * a DLQ entry with the error. Its key is parked, so later changes to it
 * wait behind it and order is kept. An operator retries or drops the entry
 * (tandem dlq retry|drop, possibly while the daemon runs: STATE_SHARED);
 * the daemon performs requested retries and marks the outcome. */
#ifndef TANDEM_DLQ_H
#define TANDEM_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state.h"

enum dlq_status {
    DLQ_OPEN = 0,   /* waiting for an operator (shown by dlq list) */
    DLQ_RETRIED,    /* a retry succeeded (history) */
    DLQ_DROPPED,    /* an operator dropped it (history) */
    DLQ_WAITING     /* waiting for its parent: replayed by the writer until
                     * it lands or the wait ends (then open); not counted
                     * as DLQ depth */
};

struct dlq_entry {
    int64_t id;             /* set by dlq_add */
    int64_t ts_us;          /* when dead-lettered; 0 = now on dlq_add */
    const char *mapping;    /* required */
    const char *key;        /* canonical key; NULL when the record had none */
    const char *source;     /* source endpoint, or NULL */
    const char *target;     /* endpoint the change was for; required */
    int64_t change_seq;     /* journal seq of the change, 0 when not journaled */
    int64_t commit_seq;     /* journal commit sequence, 0 when not journaled */
    const char *change;     /* the change as JSON, or an excerpt of the record */
    const char *error;      /* required: why, e.g. "422 Unprocessable: ..." */
    int attempts;           /* apply attempts made */
    enum dlq_status status; /* read only */
    int64_t retry_requested_us; /* read only: operator asked for a retry, 0 = no */
    int64_t resolved_ts_us; /* read only: when retried or dropped, 0 while open */
};

/* Adds an entry (status open, or waiting when d->status is DLQ_WAITING);
 * sets d->id and d->ts_us. Strings copied. A journal change (change_seq >
 * 0) already open or waiting for the same target is not added twice:
 * d->id is the existing entry's. */
int dlq_add(struct state *s, struct dlq_entry *d, struct err *e);

/* Calls fn for entries oldest first: open ones, or all when history, at
 * most limit (0 = all). Strings live until fn returns; nonzero from fn
 * stops and is returned. */
typedef int (*dlq_fn)(const struct dlq_entry *d, void *arg);
int dlq_list(struct state *s, bool history, int limit, dlq_fn fn, void *arg,
             struct err *e);

/* Calls fn once for entry id; -ENOENT when there is none. */
int dlq_get(struct state *s, int64_t id, dlq_fn fn, void *arg, struct err *e);

/* Operator asks for a retry of an open entry (the daemon performs it, see
 * dlq_retry_failed/dlq_mark_retried). -ENOENT: no such id; -EALREADY: not
 * open. */
int dlq_request_retry(struct state *s, int64_t id, struct err *e);

/* Calls fn for open entries whose retry was requested, oldest first. */
int dlq_list_retry_requested(struct state *s, dlq_fn fn, void *arg,
                             struct err *e);

/* A retry failed again: attempts + 1, the new error, the request cleared;
 * the entry stays open. -ENOENT / -EALREADY as above. */
int dlq_retry_failed(struct state *s, int64_t id, const char *error,
                     struct err *e);

/* Calls fn for the waiting entries for target, oldest first. */
int dlq_list_waiting(struct state *s, const char *target, dlq_fn fn, void *arg,
                     struct err *e);

/* A waiting entry whose wait ended becomes open with error. -ENOENT /
 * -EALREADY (not waiting) as above. */
int dlq_set_open(struct state *s, int64_t id, const char *error, struct err *e);

/* Journals the change d holds again, as a transaction of its own from its
 * source, so it takes the normal apply path, and closes d as retried.
 * -EINVAL when d holds no replayable change. Inside state_begin. */
int dlq_replay(struct state *s, const struct dlq_entry *d, struct err *e);

/* Closes an open (or waiting) entry: its retry succeeded / an operator
 * dropped it.
 * -ENOENT when no such id, -EALREADY when it is not open. */
int dlq_mark_retried(struct state *s, int64_t id, struct err *e);
int dlq_mark_dropped(struct state *s, int64_t id, struct err *e);

/* Number of open entries (the tandem_dlq_depth metric). */
int dlq_count_open(struct state *s, int64_t *out, struct err *e);

const char *dlq_status_name(enum dlq_status st);

/* Open and waiting entries of (mapping, key): a key is unparked when this
 * reaches 0. */
int dlq_count_open_key(struct state *s, const char *mapping, const char *key,
                       int64_t *out, struct err *e);

/* Parked keys: a key whose later changes must wait (behind a DLQ entry,
 * a missing parent, an open manual conflict). One row per (mapping, key).
 * reason is a short code used as the tandem_parked_keys{reason} label:
 * "dlq", "dependency", "conflict", ... */
struct parked_key {
    const char *mapping;
    const char *key;
    const char *reason;
    int64_t since_us;       /* when first parked */
    const char *target;     /* endpoint the waiting changes go to, or NULL */
    int64_t dlq_id;         /* the blocking DLQ entry, 0 when none */
    const char *detail;     /* e.g. the missing parent, or NULL */
};

/* Parks (mapping, key). When it is parked already, the reason is updated
 * and since_us kept (a wait is counted from when the key was first
 * parked). since_us 0 = now. */
int parked_park(struct state *s, const char *mapping, const char *key,
                const char *reason, int64_t since_us, struct err *e);
/* The same with every field of p. */
int parked_park_ex(struct state *s, const struct parked_key *p, struct err *e);

/* Unparks; -ENOENT when it was not parked. */
int parked_unpark(struct state *s, const char *mapping, const char *key,
                  struct err *e);

/* *out = whether (mapping, key) is parked; when it is and since_us is not
 * NULL, *since_us = when. */
int parked_is_parked(struct state *s, const char *mapping, const char *key,
                     bool *out, int64_t *since_us, struct err *e);

/* The same, also copying the reason into reason (cap bytes) when parked. */
int parked_lookup(struct state *s, const char *mapping, const char *key,
                  bool *out, int64_t *since_us, char *reason, size_t cap,
                  struct err *e);

/* Calls fn for parked keys of mapping (NULL = all), oldest first. */
typedef int (*parked_fn)(const struct parked_key *p, void *arg);
int parked_list(struct state *s, const char *mapping, parked_fn fn, void *arg,
                struct err *e);

/* Calls fn(reason, count) per reason with parked keys, by reason. */
typedef int (*parked_count_fn)(const char *reason, int64_t count, void *arg);
int parked_count_by_reason(struct state *s, parked_count_fn fn, void *arg,
                           struct err *e);

/* Total parked keys. */
int parked_count(struct state *s, int64_t *out, struct err *e);

#endif
