/* reconcile.h: compares both sides of a mapping in full (SPEC G9; §3
 * `reconcile`) and repairs what differs through the resolver and the
 * journal, so fixes take the normal apply path.
 *
 * The engine reads each side as a record stream ordered by key and merges
 * the two streams, so memory stays bounded whatever the table size.
 * Records match by canonical key (the text of each key column: bigint 5
 * and "5" are the same key); mapped fields are compared by canon_hash and,
 * on a hash mismatch, field by field with resolve_values_equal (12.50 ==
 * 12.5), so text that differs only in numeric form is not drift.
 *
 * Bucket method ("pg-hashtext-v1"): the key space is split into N hash
 * buckets, bucket(k) = (hashtext(key column texts joined by U+001F) &
 * 0x7fffffff) mod N, the same function on both sides. A postgres side
 * computes, per bucket and in one SQL aggregate (one scan, no sort), the
 * row count and the sum of hashtextextended(record text of the key and
 * mapped columns, numeric columns with trailing zeros trimmed, 0). Only
 * buckets whose (count, sum) differ are streamed row by row (a second,
 * filtered, key-ordered scan); a bucket-level mismatch is always followed
 * by the row-level compare of that bucket, and equal buckets count as
 * equal rows. Hash functions that differ between the two servers (other
 * byte order) only make every bucket differ: slower, never wrong. N is
 * chosen from the table size estimate (about 128 rows a bucket,
 * 16..65536; 1024 when unknown). Before PostgreSQL 11 every row is
 * compared.
 *
 * Key order is the byte order of each key column's text, column by column
 * (ORDER BY ... COLLATE "C" on postgres); every stream must deliver
 * records in that order. Canary records (first key column equal to the
 * mapping's canary key) are never compared. */
#ifndef TANDEM_RECONCILE_H
#define TANDEM_RECONCILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

struct state;
struct resolve_base;

#define REC_KEY_MAX 16          /* key columns a mapping may have */
#define REC_KEEP_MAX 50000      /* differences kept with their values */
#define REC_BUCKET_METHOD "pg-hashtext-v1"
#define REC_BUCKET_HASH_MAX 64

enum rec_class {
    REC_SAME = 0,
    REC_ONLY_A,         /* a record on side a only */
    REC_ONLY_B,
    REC_DIFFERENT,      /* on both sides, some mapped field differs */
    REC_STALE,          /* differs, and one side's version is older than
                         * the shadow's version of that side (G5) */
    REC_NCLASS
};

/* "same", "only_a", "only_b", "different", "stale". */
const char *rec_class_name(enum rec_class c);

/* ---- record streams ----
 *
 * One side of one mapping, as a source of records in key order. The
 * postgres stream is below; another kind of endpoint (REST) adds its own
 * ops. A stream that cannot compute bucket summaries leaves summarize
 * NULL: then the whole mapping is compared row by row (both sides must
 * name the same bucket_method for buckets to be used).
 *
 * A rest stream (reconcile_rest.h) reads the side's feed from the
 * beginning, keeps the latest non-deleted record per key (key through the
 * key cross-reference, side-a names, canonical values as rf_map_record
 * gives them) in a temporary SQLite table and returns them in key order,
 * so memory stays bounded; it has no bucket summaries. */
struct rec_record {
    size_t nkey;
    const char *keyv[REC_KEY_MAX];  /* key column texts, mapping key order */
    const char *key;        /* canonical key: JSON array of keyv */
    json_t *fields;         /* {side-a name: text or null}; borrowed */
    int64_t version_us;     /* the record's version (commit time), 0 when
                             * unknown */
    int bucket;             /* its bucket, -1 when the stream has none */
};

struct rec_bucket {
    int64_t count;
    char hash[REC_BUCKET_HASH_MAX];
    int64_t newest_us;      /* newest record version in it, 0 unknown */
};

struct rec_stream_ops {
    const char *bucket_method;      /* NULL: no bucket summaries */
    /* Starts a new consistent read (ending any earlier one); every
     * summarize/scan until the next begin sees the same data. */
    int (*begin)(void *impl, struct err *e);
    /* Row count estimate (for the number of buckets); optional. */
    int (*estimate)(void *impl, int64_t *rows, struct err *e);
    /* Fills out[0..nbuckets) (zeroed first by the caller). Optional. */
    int (*summarize)(void *impl, int nbuckets, struct rec_bucket *out,
                     struct err *e);
    /* Starts a key-ordered scan of the records in the given buckets of
     * nbuckets (buckets NULL: every record). */
    int (*scan)(void *impl, int nbuckets, const int *buckets, size_t n,
                struct err *e);
    /* 1 and *r filled (valid until the next call), 0 at the end, or a
     * negative errno. */
    int (*next)(void *impl, struct rec_record *r, struct err *e);
    /* Ends the consistent read begun by begin (optional): a pass is over,
     * so the source's vacuum is not held back while reconcile waits. */
    void (*end)(void *impl);
    /* The source's current position (PostgreSQL: pg_current_wal_lsn) for
     * waiting until the daemon captured everything; optional. */
    int (*position)(void *impl, uint64_t *lsn, struct err *e);
    void (*free)(void *impl);
};

struct rec_stream {
    const struct rec_stream_ops *ops;
    void *impl;
};

/* Opens side ('a' or 'b') of m, a postgres endpoint, with its own
 * blocking connection (session TimeZone UTC, DateStyle ISO, so both sides
 * print times alike). Checks the table and mapped columns exist. Errors:
 * -EHOSTUNREACH when the endpoint cannot be reached, -ENOENT for a missing
 * table or column, -EIO otherwise; e names the endpoint. */
int rec_pg_open(struct rec_stream *out, const struct cfg_mapping *m, char side,
                struct err *e);

/* Frees the stream (NULL ops accepted). */
void rec_stream_free(struct rec_stream *s);

/* ---- pure parts (unit-tested) ---- */

/* Byte order of the key texts, column by column (<0, 0, >0). */
int rec_key_cmp(const struct rec_record *a, const struct rec_record *b);

/* Mapped fields of two records: true when equal (canon_hash, then by
 * value per field). When not equal and diff is not NULL, the names of
 * the differing fields are appended to the array *diff. */
bool rec_fields_equal(const json_t *a, const json_t *b, json_t *diff);

/* rec_fields_equal, and for a mapping with a rest side also the same
 * boolean ("t" and true) or the same instant (PostgreSQL and RFC 3339
 * text) in both: the forms each kind of endpoint prints. */
bool rec_fields_same(const struct cfg_mapping *m, const json_t *a,
                     const json_t *b, json_t *diff);

/* Class of one key: a or b NULL when that side has no record; base the
 * shadow (NULL when none). *stale_side gets 'a'/'b' for REC_STALE, else
 * 0. Fields compare by rec_fields_same. Versions go through
 * resolve_version (timestamp_field when set). */
enum rec_class rec_classify(const struct cfg_mapping *m,
                            const struct rec_record *a,
                            const struct rec_record *b,
                            const struct resolve_base *base, json_t *diff,
                            char *stale_side);

/* Number of buckets for an estimated row count (-1: unknown). */
int rec_bucket_count(int64_t est_rows);

/* Indexes i in [0, n) where the two summaries differ, written to out
 * (room for n); returns how many. */
size_t rec_buckets_diff(const struct rec_bucket *a, const struct rec_bucket *b,
                        int n, int *out);

/* Merges two key-ordered streams: fn(a, b, arg) once per key, a or b NULL
 * when that side lacks the key. Stops at the first error (a stream error,
 * keys out of order or repeated on one side: -EPROTO) or nonzero from fn,
 * which is returned. */
typedef int (*rec_pair_fn)(const struct rec_record *a,
                           const struct rec_record *b, void *arg);
int rec_merge(struct rec_stream *a, struct rec_stream *b, rec_pair_fn fn,
              void *arg, struct err *e);

/* ---- reports ---- */

struct reconcile_diff {
    char *key;              /* canonical key */
    enum rec_class cls;
    int bucket;
    char *a, *b;            /* mapped fields (compact JSON), NULL when the
                             * side has no record */
    char *fields;           /* JSON array of the differing field names */
    int64_t version_a_us, version_b_us;     /* 0 unknown */
    char stale_side;
};

struct reconcile_report {
    char *mapping;
    int rc;                     /* 0, or why the mapping could not be
                                 * compared (then error says it) */
    char error[512];
    bool unreachable;           /* a side could not be reached */
    int64_t count_a, count_b;   /* records on each side, canaries excluded */
    int64_t classes[REC_NCLASS];
    struct reconcile_diff *diffs;   /* in key order, at most REC_KEEP_MAX */
    size_t ndiffs;
    int64_t diffs_not_kept;     /* differing keys beyond REC_KEEP_MAX */
    /* lag: newest record version per side vs the newest shadow version */
    int64_t newest_a_us, newest_b_us, shadow_newest_us;
    bool has_shadow;
    /* method */
    int nbuckets, nbuckets_differing;
    int64_t rows_streamed_a, rows_streamed_b;
    bool buckets_used;
    /* in-flight handling */
    bool daemon_running;
    int recheck_rounds;
    int64_t in_flight;          /* differences gone once the journal drained */
    int64_t journal_pending;    /* journaled changes not yet applied to this
                                 * mapping's targets (at the end) */
    bool drain_timed_out;
    double elapsed_s;
};

/* True when the report shows drift (any class but same). */
bool reconcile_report_drift(const struct reconcile_report *r);

/* Frees what r owns and zeroes it; r may be NULL. */
void reconcile_report_clear(struct reconcile_report *r);

/* The report of mapping m (NULL: sides not described) as JSON (see
 * `tandem reconcile --json`); the first limit differences are listed, each with only its differing field values
 * (whole records for only_a/only_b). New reference or NULL. */
json_t *reconcile_report_json(const struct reconcile_report *r,
                              const struct cfg_mapping *m, int limit);

struct reconcile_opts {
    /* -1: detect (the state file's lock is held, read from /proc/locks),
     * 0: no daemon runs, 1: a daemon runs. */
    int daemon;
    /* Bound on waiting for the journal to drain before re-checking the
     * differing keys (a daemon runs); 0: no re-check. */
    int recheck_wait_ms;
};

#define RECONCILE_RECHECK_WAIT_MS 30000

/* Compares mapping m of c into *out (zeroed first; clear it with
 * reconcile_report_clear, also on failure). While a daemon runs,
 * differences are re-checked after the journal drained (bounded by
 * opts->recheck_wait_ms) and those gone are counted in_flight, not drift.
 *
 * Blocking, and safe to call from any thread, several at once: it opens
 * its own connections and its own read-only state handle, and reads c and
 * m only (they must not change meanwhile). The state file may be missing
 * (no shadow, no journal yet).
 *
 * Returns 0 when compared (drift or not: see out->classes), or a negative
 * errno: -EHOSTUNREACH (a side unreachable; out->unreachable), -ENOTSUP
 * (an endpoint kind without a record stream yet), -ENOENT (missing table
 * or column), -EIO / -EPROTO; e and out->error say why. */
int reconcile_mapping_opts(const struct config *c, const struct cfg_mapping *m,
                           const struct reconcile_opts *opts,
                           struct reconcile_report *out, struct err *e);

/* reconcile_mapping_opts with daemon detection and the default re-check
 * wait: for the daemon's periodic reconcile (from a worker thread). */
int reconcile_mapping(const struct config *c, const struct cfg_mapping *m,
                      struct reconcile_report *out, struct err *e);

/* ---- repair ---- */

struct reconcile_repair_stats {
    int64_t decided;        /* keys decided by the resolver (or rule) */
    int64_t parked;         /* manual strategy: open conflicts, no fix */
    int64_t failed;         /* the resolver could not decide */
    int64_t changes;        /* synthetic changes journaled */
    int64_t last_seq_to_a;  /* highest commit sequence of a fix bound for
                             * side a (0 when none), likewise for b */
    int64_t last_seq_to_b;
};

/* Decides every difference of r (a report of m) and journals the fixes
 * in st (opened STATE_SHARED or STATE_EXCLUSIVE): each key is decided
 * with resolve() under the mapping's strategy (a one-way mapping's source
 * side always wins; a stale side always loses), the decision is recorded
 * with conflict_record (rule "reconcile: ..."), and each side that must
 * change gets a synthetic change journaled as a transaction from the
 * other side's endpoint, old_fields = its current record, so the writer's
 * conditional write checks against what was compared. Versions: the
 * records' commit timestamps when known, else inferred from the shadow
 * (see reconcile_repair.c). Commits st in batches. Returns 0 or a
 * negative errno (state errors; e says why). */
int reconcile_repair(const struct config *c, const struct cfg_mapping *m,
                     struct state *st, const struct reconcile_report *r,
                     struct reconcile_repair_stats *out, struct err *e);

/* Applies committed journal transactions up to upto_seq to the targets
 * among endpoints (names, n of them) with the writers `run` uses (pgsink
 * for postgres, restsink with its own transport for rest), on a private
 * event loop: for when no daemon runs. st must be opened STATE_EXCLUSIVE.
 * Creates a postgres endpoint's replication origin when missing (as `run`
 * would). Returns 0 once nothing up to
 * upto_seq is pending for any of them (reconcile_pending), -ETIMEDOUT
 * after timeout_ms, or a negative errno. */
int reconcile_apply_inline(const struct config *c, struct state *st,
                           const char *const *endpoints, size_t n,
                           int64_t upto_seq, int timeout_ms, struct err *e);

/* Polls the state at path (read-only) until nothing up to upto[i] is
 * pending for endpoints[i] (upto[i] <= 0: not waited for); 0, or
 * -ETIMEDOUT after timeout_ms. */
int reconcile_wait_applied(const char *path, const char *const *endpoints,
                           const int64_t *upto, size_t n, int timeout_ms,
                           struct err *e);

/* Journal transactions committed with commit_seq <= upto (INT64_MAX: all)
 * that target (an endpoint name) has not applied yet: those past its
 * applied commit sequence and not sourced from target itself. *txns and
 * *changes (either may be NULL) receive the counts. */
int reconcile_pending(struct state *st, const char *target, int64_t upto,
                      int64_t *txns, int64_t *changes, struct err *e);

/* True when a process holds the state file's lock (a daemon runs). */
bool reconcile_daemon_running(const char *state_path);

#endif
