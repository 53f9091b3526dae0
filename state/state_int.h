/* state_int.h: internals shared by the state/ files only (never included
 * from outside state/). The struct, the prepared-statement cache and small
 * helpers that keep every SQLite result checked. */
#ifndef TANDEM_STATE_INT_H
#define TANDEM_STATE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "state.h"

/* One slot per cached statement. Each is prepared on first use and kept
 * until state_close, so hot paths only reset and bind. */
enum state_stmt_id {
    /* state.c */
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_POS_GET,
    ST_POS_SET,
    ST_APPLIED_GET,
    ST_APPLIED_SET,
    ST_META_GET,
    ST_META_SET,
    /* journal.c */
    ST_J_TXN_OPEN,
    ST_J_APPEND,
    ST_J_COUNT,
    ST_J_TXN_DELETE,
    ST_J_TXN_COMMIT,
    ST_J_MAX_SEQ,
    ST_J_NEWEST_OPEN,
    ST_J_DECIDED_LATER,
    ST_J_FIRST_COMMIT,
    ST_J_COUNT_OPEN,
    ST_J_SCAN_TXNS,
    ST_J_SCAN_CHANGES,
    ST_J_SCAN_RANGE,
    ST_J_DEPTH,
    ST_J_EP_STATS,
    ST_J_RECOVER_CHANGES,
    ST_J_RECOVER_TXNS,
    ST_J_PRUNE_MAX,
    ST_J_PRUNE_CHANGES,
    ST_J_PRUNE_TXNS,
    ST_J_PRUNE_MARK,
    ST_J_CHANGE_SEQ,
    ST_J_TXN_CHECK,
    ST_J_APPEND_MANY,
    ST_J_TXN_MANY,
    ST_J_TXN_ID,
    ST_DATA_VERSION,
    /* shadow.c */
    ST_SH_GET,
    ST_SH_PUT,
    ST_SH_DELETE,
    ST_SH_SCAN,
    ST_SH_COUNT,
    ST_XR_PUT,
    ST_XR_GET_B,
    ST_XR_GET_A,
    ST_XR_DELETE,
    /* conflicts.c */
    ST_CF_INSERT,
    ST_CF_LIST,
    ST_CF_LIST_OPEN,
    ST_CF_GET,
    ST_CF_RESOLVE,
    ST_CF_RESOLVE_KEY,
    ST_CF_EXISTS,
    ST_CF_COUNT,
    ST_CF_COUNT_OPEN,
    ST_CF_FIND_OPEN,
    ST_CF_TALLY,
    /* dlq.c */
    ST_DLQ_ADD,
    ST_DLQ_LIST,
    ST_DLQ_LIST_ALL,
    ST_DLQ_GET,
    ST_DLQ_STATUS,
    ST_DLQ_SET_STATUS,
    ST_DLQ_REQUEST_RETRY,
    ST_DLQ_RETRY_FAILED,
    ST_DLQ_LIST_RETRY,
    ST_DLQ_COUNT_OPEN,
    ST_DLQ_COUNT_KEY,
    ST_DLQ_LIST_WAITING,
    ST_DLQ_EXISTING,
    ST_SH_PUT_A1,
    ST_SH_PUT_AN,
    ST_SH_PUT_B1,
    ST_SH_PUT_BN,
    ST_DLQ_SET_OPEN,
    ST_PK_PARK,
    ST_PK_UNPARK,
    ST_PK_GET,
    ST_PK_LIST,
    ST_PK_LIST_MAPPING,
    ST_PK_COUNT_REASON,
    ST_PK_COUNT,
    /* canary.c */
    ST_CN_SENT,
    ST_CN_SEEN,
    ST_CN_GET,
    ST_CN_LIST,
    ST__COUNT
};

/* Rows gathered for one multi-row INSERT: journal changes and shadows are
 * written one statement per ROWBATCH_ROWS rows, a third less work per row
 * than one each. Pending rows are flushed before anything reads their
 * table, and by state_commit and state_tx_enter; a rollback drops them.
 * Text values are copied. */
#define ROWBATCH_ROWS 32
#define ROWBATCH_COLS 12

struct rowbatch_cell {
    int64_t i;                  /* the integer, or the text's offset in buf */
    char kind;                  /* 'l' integer, 't' text, 'n' null */
};

struct rowbatch {
    int ncols, nrows;
    int tag;                    /* what the rows share (the shadow's side) */
    struct rowbatch_cell cell[ROWBATCH_ROWS * ROWBATCH_COLS];
    char *buf;
    size_t len, cap;
};

/* Adds one row of values typed as for state_bind ('t' text or NULL,
 * 'l' int64_t, 'n' NULL taking no argument); -EOVERFLOW when full,
 * -ENOMEM. */
int rowbatch_add(struct rowbatch *b, const char *types, ...);
/* The row whose integer column col is v, or -1. */
int rowbatch_find(const struct rowbatch *b, int col, int64_t v);
/* Sets row's column col to the integer v. */
void rowbatch_set(struct rowbatch *b, int row, int col, int64_t v);
/* Removes row (its text stays in buf until the batch is emptied). */
void rowbatch_drop(struct rowbatch *b, int row);

/* Inserts the rows as head "(?, ..), .." tail: one statement (id_many)
 * when full, else one per row (id_one); empties b either way. */
int rowbatch_flush(struct state *s, struct rowbatch *b, enum state_stmt_id id_one,
                   enum state_stmt_id id_many, const char *head, const char *tail,
                   struct err *e, const char *what);
void rowbatch_clear(struct rowbatch *b);
void rowbatch_free(struct rowbatch *b);

struct state {
    sqlite3 *db;
    char *path;
    enum state_mode mode;
    int lock_fd;                    /* -1 unless EXCLUSIVE */
    int version;                    /* schema version in the file */
    int64_t last_commit_seq;        /* cached, -1 when unknown */
    int64_t last_change_seq;        /* cached, -1 when unknown */
    int64_t last_txn_id;            /* cached, -1 when unknown */
    int64_t append_txn;             /* last journal txn found open, 0 none */
    int64_t append_n;               /* changes appended to it since */
    bool append_full;               /* ... since it was opened: all of them */
    struct rowbatch txn_rows;       /* journal transactions not yet inserted */
    struct rowbatch journal_rows;   /* appended changes not yet inserted */
    struct rowbatch shadow_rows;    /* shadow_put_side rows not yet written */
    int64_t data_version;           /* PRAGMA data_version at the last BEGIN */
    int wal_frames;                 /* after the last commit (wal hook) */
    bool batch;                     /* state_begin opened a transaction */
    state_clock_fn clock;
    void *clock_arg;
    sqlite3_stmt *stmt[ST__COUNT];
};

/* Prepares (cached as id), binds as state_bind and runs a statement that
 * returns no rows. */
int state_write(struct state *s, enum state_stmt_id id, const char *sql,
                struct err *e, const char *what, const char *types, ...);

/* Runs sql (no parameters, one row, one integer column) as cached
 * statement id into *out; what names it in errors. */
int state_query_int64(struct state *s, enum state_stmt_id id, const char *sql,
                      int64_t *out, struct err *e, const char *what);

/* state_query_int64 with parameters bound as state_bind does (a NULL
 * result reads as 0). */
int state_query_int64_args(struct state *s, enum state_stmt_id id, const char *sql,
                           int64_t *out, struct err *e, const char *what,
                           const char *types, ...);

/* Writes the pending journal and shadow rows. */
int state_flush_rows(struct state *s, struct err *e);
int journal_flush(struct state *s, struct err *e);
int shadow_flush(struct state *s, struct err *e);
/* Drops them: their transaction is being rolled back. */
void state_drop_rows(struct state *s);

/* Sets *out to the cached statement id, preparing it from sql on first
 * use. When the cached one is still stepping (a callback re-entered the
 * same scan), a fresh private statement is prepared instead. Release every
 * statement obtained here with state_stmt_done. */
int state_stmt(struct state *s, enum state_stmt_id id, const char *sql,
               sqlite3_stmt **out, struct err *e);

/* Resets a statement from state_stmt (finalizes a private one). */
void state_stmt_done(struct state *s, enum state_stmt_id id, sqlite3_stmt *st);

/* Fills e with "<what>: <sqlite message>" and returns the errno matching
 * the SQLite result code rc (-EPROTO for a corrupt or foreign file,
 * -EBUSY, -ENOSPC, -EROFS, -ENOMEM, else -EIO). */
int state_sqlerr(struct state *s, struct err *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Binds parameters 1..n of st from a type string, one letter each:
 *   't' const char * (NULL binds SQL NULL), 'l' int64_t, 'u' uint64_t
 *   (stored bit-for-bit as a 64-bit integer), 'i' int, 'b' bool.
 * what names the operation in the error message. */
int state_bind(struct state *s, sqlite3_stmt *st, struct err *e,
               const char *what, const char *types, ...);

/* Steps a statement that returns no rows; 0 or an errno with e set. */
int state_step_done(struct state *s, sqlite3_stmt *st, struct err *e,
                    const char *what);

/* Makes a multi-statement operation atomic: inside an open transaction
 * it takes a savepoint, otherwise it begins an IMMEDIATE transaction.
 * state_tx_leave commits (rc == 0) or rolls back (rc < 0) and returns rc,
 * or the commit's error. */
int state_tx_enter(struct state *s, bool *own, struct err *e);
int state_tx_leave(struct state *s, bool own, int rc, struct err *e);

/* The state clock, µs since the Unix epoch. */
int64_t state_now_us(struct state *s);

/* Copies column col of a row into buf (cap bytes, NUL included):
 * -ERANGE when it does not fit, -ENOENT when it is NULL. */
int state_column_copy(struct state *s, sqlite3_stmt *st, int col, char *buf,
                      size_t cap, struct err *e, const char *what);

/* Column text or NULL, as a C string. */
static inline const char *state_col_text(sqlite3_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(st, col);
}

#endif
