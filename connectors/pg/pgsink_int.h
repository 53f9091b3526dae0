/* pgsink_int.h: the PostgreSQL writer's internals, shared by its files
 * only (never included from outside connectors/pg/pgsink*.c): pgsink.c
 * feeds the pipeline and reads the answers; pgsink_conflict.c records
 * conflicts and runs the resolver on a row the target changed. */
#ifndef TANDEM_PGSINK_INT_H
#define TANDEM_PGSINK_INT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "../../daemon/strbuf.h"
#include "../../resolver/flatobj.h"
#include "nameidx.h"
#include "pgbatch.h"
#include "pgsink.h"
#include "pgwatch.h"

enum sink_state { SK_IDLE, SK_CONNECTING, SK_SETUP, SK_READY, SK_CLOSING };

enum q_kind { Q_SETUP, Q_PROGRESS, Q_TRACKTS, Q_PREPARE, Q_BEGIN, Q_STMT,
              Q_PLAIN, Q_XACT, Q_COMMIT, Q_SYNC, Q_FAST, Q_FAST_UPDATE,
              Q_FAST_UPDATES, Q_TYPES, Q_ABANDON };

/* One query sent and not yet answered. */
struct q_entry {
    enum q_kind kind;
    int64_t seq;                /* Q_STMT: journal change */
    int64_t commit_seq;         /* Q_COMMIT: last journal txn of the group */
    char op;
    bool had_base;
    bool resolve;               /* a conflict is decided by the resolver here */
    bool retrying;              /* a replay of a change that waited for its parent */
    bool stale;                 /* sent after a failed segment: it ran in the
                                 * aborted transaction, its outcome means nothing */
    int64_t keep_missing_us;    /* an update that does not insert a missing row:
                                 * the target side's newer version (else 0) */
    int64_t version_us;
    char *mapping, *key, *incoming, *base, *source;  /* Q_STMT, owned */
};

/* The next journal transactions to apply, read ahead (next_txn). */
#define TXNS_AHEAD 256
struct txn_pick {
    int64_t txn, commit_seq, ts;
    int64_t first_seq, last_seq, nchanges;
};
struct txns_ahead {
    struct txn_pick t[TXNS_AHEAD];
    int n, at;
    int64_t after;              /* the commit_seq before t[at] */
    int64_t durable;            /* durable_seq when read */
};

struct stmt {
    char *sig;
    char name[24];
};

/* One target table's columns and their SQL types (format_type). */
struct coltypes {
    const struct cfg_mapping *m;
    const struct cfg_side *t;
    size_t n;
    char **names, **types;
    struct nameidx idx;         /* over names */
};

/* Per mapping (in config order): its side-a field names, indexed. */
struct fieldnames {
    const char **names;
    struct nameidx idx;
};

struct pgsink {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct cfg_endpoint *ep;
    struct state *st;
    struct pgsink_hooks hooks;
    enum sink_state state;
    PGconn *conn;
    struct pgwatch watch;
    uv_timer_t retry_timer, feed_timer;
    unsigned backoff_ms;
    int pending_closes;
    void (*closed)(void *);
    void *closed_arg;
    bool track_ts;
    unsigned origin_id;         /* our origin's roident, 0 unknown */
    /* progress */
    int64_t applied_seq;        /* committed in the target */
    int64_t durable_seq;        /* may be applied up to here */
    uint64_t synced_gen;        /* state commits on disk (pgsink_state_synced) */
    uint64_t hold_gen;          /* no target COMMIT before this one is */
    int stmts_out;              /* Q_STMT entries waiting for their answer */
    int64_t fed_seq;            /* last journal txn fully sent */
    int64_t cur_txn, cur_txn_seq, cur_after, cur_ts_us;
    int64_t group_last_seq, group_ts_us;
    bool in_txn;
    bool hold;                  /* feeding paused until feed_timer */
    bool draining;              /* closing: finishing what is sent (pgsink_close) */
    bool parked_any;            /* some key is parked: check each change */
    /* A change whose conflict the resolver decides (field_merge, plugin)
     * is a barrier: nothing more is sent until its result is in, so the
     * decision can be written in the same target transaction, in order. */
    int64_t barrier_seq;
    struct resolver_plugin_cache *plugins;
    /* Changes waiting for a parent (foreign key): replayed by parent_timer. */
    bool waiting_any;
    uint64_t waiting_applied;   /* stats.applied at the last replay */
    uint64_t waiting_pass_ms;
    uv_timer_t parent_timer;
    /* Inserts of new keys travel as multi-row INSERTs (the common bulk
     * case); one that hits an existing key fails the target transaction,
     * which is then redone with conditional writes up to careful_until. */
    int64_t careful_until;
    int64_t careful_txn;        /* ... and this journal txn (one applied early) */
    /* Early apply: with a single PostgreSQL source, the changes of the
     * source transaction being journaled are sent into the open target
     * transaction before its commit is journaled (a large transaction is
     * then applied while it is still arriving); the target COMMIT still
     * waits for the journaled commit to be durable. cur_open: cur_txn is
     * that open transaction. early_txn/early_after: what of it was sent
     * when the scan caught up with the journal. A transaction the source
     * cut short (it reconnected and resends it as a new one) is dropped:
     * the target transaction is rolled back and redone. */
    const char *early_source;   /* the single source, or NULL: no early apply */
    bool cur_open;
    int64_t early_txn, early_after, early_dead;
    bool abandoning;            /* until the rollback of an abandoned one */
    bool source_open;           /* pgsink_source_open */
    struct pgbatch batch;
    struct flatobj scan, base_scan;     /* the change being added */
    /* The target tables' column types, for set-based updates (looked up
     * at each connect; a column without one takes the per-row path). */
    struct coltypes *types;
    size_t ntypes;
    struct fieldnames *fields;  /* cfg->nmappings of them */
    uint64_t parked_checked_ms;
    int group_changes;
    struct txns_ahead ahead;
    /* in-flight queue (ring) */
    struct q_entry *q;
    size_t qcap, qhead, qlen;
    bool seg_failed;
    char seg_error[512];
    char seg_sqlstate[8];
    /* transient failures of one change: attempts and first failure (ms) */
    int64_t retry_seq;
    int retry_attempts;
    uint64_t retry_first_ms;
    int64_t seg_error_seq;
    struct q_entry seg_error_entry;
    /* prepared statements */
    struct stmt *stmts;
    size_t nstmts;
    unsigned stmt_counter;
    /* changes the target rejected: skipped on redo */
    int64_t *excluded;
    size_t nexcluded;
    struct strbuf sql;
    struct pgsink_stats stats;
};

/* One conditional write, as build_sql's statement takes it. */
struct write_req {
    const struct cfg_mapping *m;
    const struct cfg_side *t;
    int64_t seq;
    char op;                    /* the change's op: I, U (upsert) or D */
    const json_t *keyarr;       /* key column texts */
    const json_t *fields;       /* {side-a name: text or null} */
    const json_t *base;         /* what the target row must hold; NULL: none */
    const json_t *unch;         /* fields the source did not send */
    const char *mode;           /* see conflict_mode */
    int64_t version_us;
    const char *source;         /* the endpoint the change came from */
    const char *mapping, *key, *incoming;
    bool may_be_fast;           /* a journal change: the clean update may go alone */
    int64_t keep_missing_us;    /* > 0: the target side's last version, newer
                                 * than this update: a missing row stays
                                 * missing (send_change) */
};

/* pgsink.c */
/* Sends one conditional write (see write_req); -EIO when it cannot. */
int sink_send_write(struct pgsink *s, const struct write_req *w, struct err *e);
/* Drops the connection, logs what failed, and retries with backoff. */
void sink_fail(struct pgsink *s, const char *what, const char *detail);
/* Records q's change in the DLQ with msg and parks its key (G8). */
void sink_dead_letter(struct pgsink *s, const struct q_entry *q, const char *msg);
/* No target COMMIT until the state's next commit, holding what was just
 * written to it, is on disk. */
void hold_commit_until_saved(struct pgsink *s);

/* pgsink_conflict.c */
/* The statement of q found the target row changed (not clean) and decided
 * in SQL (applied: the incoming change was written): records the conflict
 * with both versions. */
void sink_record_conflict(struct pgsink *s, const struct q_entry *q, bool applied,
                          const char *target_ts, const char *cur_row);
/* field_merge, plugin: the statement of q kept the target row (cur_row,
 * last written at target_ts); the resolver decides and its result is
 * written in the same target transaction. */
void sink_resolve_here(struct pgsink *s, const struct q_entry *q,
                       const char *target_ts, const char *cur_row);

#endif
