/* journal.c: the durable, ordered log of captured changes. */
#include "journal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state_int.h"

/* Highest commit sequence ever given out. Pruning may delete the newest
 * transactions, so the pruned watermark and applied progress are floors:
 * a sequence is never given out twice (applied progress relies on it). */
static const char sql_max_seq[] =
    "SELECT max(coalesce((SELECT max(commit_seq) FROM journal_txn), 0),"
    "           coalesce((SELECT max(commit_seq) FROM applied), 0),"
    "           coalesce((SELECT CAST(v AS INTEGER) FROM meta"
    "                     WHERE k = 'journal_pruned_seq'), 0))";

/* Column order of a pending journal_txn row (txn_rows). */
enum { TX_TXN, TX_ENDPOINT, TX_XID, TX_COMMIT_LSN, TX_END_LSN, TX_COMMIT_TS,
       TX_COMMIT_SEQ, TX_OPENED, TX_COMMITTED, TX_NCHANGES, TX_FIRST, TX_LAST };

/* Writes the pending transactions and changes: before anything reads
 * journal_txn or journal_change. */
int journal_flush(struct state *s, struct err *e)
{
    int rc = rowbatch_flush(s, &s->txn_rows, ST_J_TXN_OPEN, ST_J_TXN_MANY,
                            "INSERT INTO journal_txn (txn, endpoint, source_xid, commit_lsn,"
                            " end_lsn, commit_ts_us, commit_seq, opened_at_us,"
                            " committed_at_us, nchanges, first_seq, last_seq) VALUES ",
                            "", e, "journal transaction");

    if (rc < 0) {
        rowbatch_clear(&s->journal_rows);
        return rc;
    }
    return rowbatch_flush(s, &s->journal_rows, ST_J_APPEND, ST_J_APPEND_MANY,
                          "INSERT INTO journal_change (txn, mapping, op, key, old_key,"
                          " fields, unchanged, version_us, old_fields, seq) VALUES ",
                          "", e, "journal append");
}

static int journal_max_seq(struct state *s, int64_t *out, struct err *e)
{
    int rc = journal_flush(s, e);

    return rc < 0 ? rc : state_query_int64(s, ST_J_MAX_SEQ, sql_max_seq, out, e,
                                           "journal: read last commit sequence");
}

/* A counter this connection gives out: *cache inside a write transaction
 * (the table does not hold pending rows yet, and state_begin drops the
 * cache when another process wrote since), else read by sql. */
static int cached_counter(struct state *s, int64_t *cache, enum state_stmt_id id,
                          const char *sql, int64_t *out, struct err *e, const char *what)
{
    int rc;

    if (*cache >= 0 && state_in_txn(s)) {
        *out = *cache;
        return 0;
    }
    rc = state_query_int64(s, id, sql, out, e, what);
    if (rc == 0)
        *cache = *out;
    return rc;
}

/* The last change sequence given out: the newest change, or the high water
 * pruning saved, whichever is larger. */
static int journal_change_seq(struct state *s, int64_t *out, struct err *e)
{
    return cached_counter(s, &s->last_change_seq, ST_J_CHANGE_SEQ,
                          "SELECT max(coalesce((SELECT max(seq) FROM journal_change), 0),"
                          " coalesce((SELECT CAST(v AS INTEGER) FROM meta"
                          "           WHERE k = 'journal_change_seq'), 0))", out, e,
                          "journal: read last change sequence");
}

/* The last transaction id given out (journal_txn is AUTOINCREMENT, so
 * sqlite_sequence keeps the high water). */
static int journal_txn_id(struct state *s, int64_t *out, struct err *e)
{
    return cached_counter(s, &s->last_txn_id, ST_J_TXN_ID,
                          "SELECT max(coalesce((SELECT max(txn) FROM journal_txn), 0),"
                          " coalesce((SELECT seq FROM sqlite_sequence"
                          "           WHERE name = 'journal_txn'), 0))", out, e,
                          "journal: read last transaction id");
}

/* Deletes the uncommitted transactions of endpoint (NULL: of every
 * endpoint) but keep, with their changes; returns how many, or negative.
 * An open transaction's changes have sequences from its first_seq on,
 * which bounds the scan (changes have no index by transaction). */
static int drop_open_txns(struct state *s, const char *endpoint, int64_t keep,
                          struct err *e)
{
    int rc = state_write(s, ST_J_RECOVER_CHANGES,
                         "DELETE FROM journal_change WHERE seq >="
                         " (SELECT coalesce(min(first_seq), 9223372036854775807)"
                         "  FROM journal_txn WHERE commit_seq IS NULL"
                         "  AND (?1 IS NULL OR endpoint = ?1) AND txn != ?2)"
                         " AND txn IN (SELECT txn FROM journal_txn WHERE commit_seq IS NULL"
                         "  AND (?1 IS NULL OR endpoint = ?1) AND txn != ?2)",
                         e, "journal: delete uncommitted changes", "tl", endpoint, keep);

    if (rc == 0)
        rc = state_write(s, ST_J_RECOVER_TXNS,
                         "DELETE FROM journal_txn WHERE commit_seq IS NULL"
                         " AND (?1 IS NULL OR endpoint = ?1) AND txn != ?2",
                         e, "journal: delete uncommitted transactions", "tl", endpoint, keep);
    return rc < 0 ? rc : sqlite3_changes(s->db);
}

int journal_recover(struct state *s, struct err *e)
{
    bool own;
    int rc = state_tx_enter(s, &own, e), n = 0;

    if (rc < 0)
        return rc;
    if ((rc = journal_flush(s, e)) == 0 && (rc = drop_open_txns(s, NULL, 0, e)) >= 0) {
        n = rc;
        rc = 0;
    }
    rc = state_tx_leave(s, own, rc, e);
    return rc < 0 ? rc : n;
}

int journal_drop_open(struct state *s, const char *endpoint, int64_t keep_txn,
                      struct err *e)
{
    int64_t n = 0;
    bool own;
    int rc = journal_flush(s, e);

    /* Nearly always none: one indexed look-up before any delete. */
    if (rc == 0)
        rc = state_query_int64_args(s, ST_J_COUNT_OPEN,
                                    "SELECT count(*) FROM journal_txn WHERE commit_seq IS NULL"
                                    " AND endpoint = ?1 AND txn != ?2", &n, e,
                                    "journal: abandoned transactions", "tl", endpoint, keep_txn);
    if (rc < 0 || n == 0)
        return rc;
    if ((rc = state_tx_enter(s, &own, e)) < 0)
        return rc;
    rc = drop_open_txns(s, endpoint, keep_txn, e);
    return state_tx_leave(s, own, rc, e);
}

int journal_txn_open(struct state *s, const char *endpoint, int64_t source_xid,
                     uint64_t commit_lsn, int64_t commit_ts_us, int64_t *txn,
                     struct err *e)
{
    int64_t last, id;
    int rc;

    if (endpoint == NULL || txn == NULL)
        return err_set(e, -EINVAL, "journal_txn_open: no endpoint");
    if (!state_in_txn(s))
        return err_set(e, -EINVAL, "journal_txn_open for %s outside "
                                   "state_begin/state_commit", endpoint);
    if ((rc = journal_change_seq(s, &last, e)) < 0 || (rc = journal_txn_id(s, &id, e)) < 0)
        return rc;
    if (s->txn_rows.nrows == ROWBATCH_ROWS && (rc = journal_flush(s, e)) < 0)
        return rc;
    /* Written with its commit when both come before the next flush (a small
     * source transaction): one insert, no update. */
    if (rowbatch_add(&s->txn_rows, "ltllllnlnlln", id + 1, endpoint, source_xid,
                     (int64_t)commit_lsn, (int64_t)0, commit_ts_us, state_now_us(s),
                     (int64_t)0, last + 1) != 0)
        return err_set(e, -ENOMEM, "journal open transaction for %s: out of memory",
                       endpoint);
    *txn = s->last_txn_id = s->append_txn = id + 1;
    s->append_n = 0;
    s->append_full = true;
    return 0;
}

/* Whether txn is open. Changes of one transaction come in runs, so the
 * last transaction found open is remembered until it commits. */
static int journal_txn_check_open(struct state *s, int64_t txn, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (txn == s->append_txn)
        return 0;
    if ((rc = journal_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_J_TXN_CHECK,
                    "SELECT commit_seq IS NULL FROM journal_txn WHERE txn = ?1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal append", "l", txn);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_int(st, 0) == 1) {
            s->append_txn = txn;
            s->append_n = 0;
            s->append_full = false;
            rc = 0;
        } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
            rc = err_set(e, -ENOENT, "journal append: no open transaction %"
                         PRId64, txn);
        } else {
            rc = state_sqlerr(s, e, rc, "journal append: look up transaction %"
                              PRId64, txn);
        }
    }
    state_stmt_done(s, ST_J_TXN_CHECK, st);
    return rc;
}

int journal_append(struct state *s, int64_t txn, struct change *c,
                   struct err *e)
{
    char op[2] = { 0 };
    int64_t seq;
    int rc;

    if (c == NULL || c->mapping == NULL || c->key == NULL)
        return err_set(e, -EINVAL, "journal append to txn %" PRId64
                                   ": change without mapping or key", txn);
    if (c->op != CHANGE_INSERT && c->op != CHANGE_UPDATE &&
        c->op != CHANGE_DELETE && c->op != CHANGE_TRUNCATE)
        return err_set(e, -EINVAL, "journal append to txn %" PRId64
                                   ": bad op %d", txn, (int)c->op);
    if ((rc = journal_txn_check_open(s, txn, e)) < 0 ||
        (rc = journal_change_seq(s, &seq, e)) < 0)
        return rc;
    op[0] = (char)c->op;
    if (rowbatch_add(&s->journal_rows, "lttttttltl", txn, c->mapping, op, c->key,
                     c->old_key, c->fields, c->unchanged, c->version_us,
                     c->old_fields, seq + 1) != 0)
        return err_set(e, -ENOMEM, "journal append to txn %" PRId64
                       ": out of memory", txn);
    c->seq = s->last_change_seq = seq + 1;
    c->txn = txn;
    s->append_n++;
    /* Outside a transaction each statement commits on its own: so does
     * an append. */
    if (s->journal_rows.nrows == ROWBATCH_ROWS || !state_in_txn(s))
        return journal_flush(s, e);
    return 0;
}

/* Whether txn exists and is open, and how many changes it has. */
static int journal_txn_count(struct state *s, int64_t txn, int64_t *n,
                             struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_J_COUNT,
                        "SELECT t.commit_seq,"
                        " (SELECT count(*) FROM journal_change c"
                        "  WHERE c.seq >= t.first_seq AND c.txn = t.txn)"
                        " FROM journal_txn t WHERE t.txn = ?1", &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal commit", "l", txn);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (sqlite3_column_type(st, 0) != SQLITE_NULL)
                rc = err_set(e, -EALREADY, "journal commit: transaction %"
                             PRId64 " is already committed (seq %" PRId64 ")",
                             txn, (int64_t)sqlite3_column_int64(st, 0));
            else
                rc = 0;
            *n = sqlite3_column_int64(st, 1);
        } else if (rc == SQLITE_DONE) {
            rc = err_set(e, -ENOENT, "journal commit: no transaction %" PRId64,
                         txn);
        } else {
            rc = state_sqlerr(s, e, rc, "journal commit: count changes of %"
                              PRId64, txn);
        }
    }
    state_stmt_done(s, ST_J_COUNT, st);
    return rc;
}

/* Marks a written transaction committed. */
static int commit_row(struct state *s, int64_t txn, int64_t seq, uint64_t end_lsn,
                      int64_t n, int64_t last_change, struct err *e)
{
    return state_write(s, ST_J_TXN_COMMIT,
                       "UPDATE journal_txn SET commit_seq = ?2, end_lsn = ?3,"
                       " committed_at_us = ?4, nchanges = ?5, last_seq = ?6"
                       " WHERE txn = ?1 AND commit_seq IS NULL", e, "journal commit",
                       "llulll", txn, seq, end_lsn, state_now_us(s), n, last_change);
}

int journal_txn_commit(struct state *s, int64_t txn, uint64_t end_lsn,
                       int64_t *commit_seq, struct err *e)
{
    int64_t n = 0, seq = 0, last = s->last_commit_seq, last_change = 0;
    bool own = false, entered = false;
    int rc = 0, row;

    /* A transaction opened here and appended to without interruption has a
     * known count and is open: its commit is one statement, which needs no
     * savepoint. Otherwise count (and check) it in one. */
    if (txn == s->append_txn && s->append_full && state_in_txn(s)) {
        n = s->append_n;
    } else {
        if ((rc = state_tx_enter(s, &own, e)) < 0)
            return rc;
        entered = true;
        rc = journal_txn_count(s, txn, &n, e);
    }
    s->append_txn = 0;
    row = entered ? -1 : rowbatch_find(&s->txn_rows, TX_TXN, txn);
    if (rc == 0 && n == 0 && row >= 0) {
        rowbatch_drop(&s->txn_rows, row);       /* never written */
    } else if (rc == 0 && n == 0) {
        rc = state_write(s, ST_J_TXN_DELETE, "DELETE FROM journal_txn WHERE txn = ?1",
                         e, "journal delete empty txn", "l", txn);
    } else if (rc == 0) {
        /* Only an exclusive owner can trust a cached counter. */
        if (last < 0 || s->mode != STATE_EXCLUSIVE)
            rc = journal_max_seq(s, &last, e);
        seq = last + 1;
        if (rc == 0)
            rc = journal_change_seq(s, &last_change, e);
        /* Still pending (reading the sequence may have flushed it): its
         * one insert carries the commit. */
        row = entered ? -1 : rowbatch_find(&s->txn_rows, TX_TXN, txn);
        if (rc == 0 && row >= 0) {
            rowbatch_set(&s->txn_rows, row, TX_COMMIT_SEQ, seq);
            rowbatch_set(&s->txn_rows, row, TX_END_LSN, (int64_t)end_lsn);
            rowbatch_set(&s->txn_rows, row, TX_COMMITTED, state_now_us(s));
            rowbatch_set(&s->txn_rows, row, TX_NCHANGES, n);
            rowbatch_set(&s->txn_rows, row, TX_LAST, last_change);
        } else if (rc == 0) {
            rc = commit_row(s, txn, seq, end_lsn, n, last_change, e);
        }
    }
    if (entered)
        rc = state_tx_leave(s, own, rc, e);
    if (rc < 0)
        return rc;
    if (n > 0)
        s->last_commit_seq = seq;
    if (commit_seq != NULL)
        *commit_seq = n > 0 ? seq : 0;
    return 0;
}

int journal_scan_txns(struct state *s, int64_t after, int max,
                      const char *skip_endpoint, journal_txn_fn fn, void *arg,
                      struct err *e)
{
    struct journal_txn_info info;
    sqlite3_stmt *st;
    int rc, ret = 0;

    if (fn == NULL)
        return err_set(e, -EINVAL, "journal scan: no callback");
    if ((rc = journal_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_J_SCAN_TXNS,
                    "SELECT txn, commit_seq, endpoint, source_xid, commit_lsn,"
                    " end_lsn, commit_ts_us, nchanges, coalesce(first_seq, 0),"
                    " coalesce(last_seq, 0) FROM journal_txn"
                    " WHERE commit_seq > ?1 AND (?2 IS NULL OR endpoint <> ?2)"
                    " ORDER BY commit_seq LIMIT ?3", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal scan", "ltl", after, skip_endpoint,
                    (int64_t)(max > 0 ? max : -1));
    while (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (rc != SQLITE_ROW) {
            rc = state_sqlerr(s, e, rc, "journal scan after %" PRId64, after);
            break;
        }
        rc = 0;
        info.txn = sqlite3_column_int64(st, 0);
        info.commit_seq = sqlite3_column_int64(st, 1);
        info.endpoint = state_col_text(st, 2);
        info.source_xid = sqlite3_column_int64(st, 3);
        info.commit_lsn = (uint64_t)sqlite3_column_int64(st, 4);
        info.end_lsn = (uint64_t)sqlite3_column_int64(st, 5);
        info.commit_ts_us = sqlite3_column_int64(st, 6);
        info.nchanges = sqlite3_column_int64(st, 7);
        info.first_seq = sqlite3_column_int64(st, 8);
        info.last_seq = sqlite3_column_int64(st, 9);
        if (info.endpoint == NULL) {
            rc = err_set(e, -ENOMEM, "journal scan: out of memory");
            break;
        }
        ret = fn(&info, arg);
        if (ret != 0)
            break;
    }
    state_stmt_done(s, ST_J_SCAN_TXNS, st);
    return rc < 0 ? rc : ret;
}

/* Streams the changes of txn with seq > after_seq, at most limit (<= 0:
 * all), through one statement. Returns fn's nonzero value when it stops
 * the scan, else 0; *count gets the number of calls to fn. */
/* Steps st, whose rows are (seq, endpoint, mapping, op, key, old_key,
 * fields, unchanged, version_us, old_fields, txn), calling fn for each;
 * counts them in *count. Finishes st. */
static int step_changes(struct state *s, enum state_stmt_id id, sqlite3_stmt *st,
                        journal_change_fn fn, void *arg, int *count, struct err *e)
{
    struct change c;
    int rc = 0, ret = 0;

    while (rc == 0) {
        const char *op;

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (rc != SQLITE_ROW) {
            rc = state_sqlerr(s, e, rc, "journal scan changes");
            break;
        }
        rc = 0;
        memset(&c, 0, sizeof(c));
        c.seq = sqlite3_column_int64(st, 0);
        c.endpoint = state_col_text(st, 1);
        c.mapping = state_col_text(st, 2);
        op = state_col_text(st, 3);
        c.key = state_col_text(st, 4);
        c.old_key = state_col_text(st, 5);
        c.fields = state_col_text(st, 6);
        c.unchanged = state_col_text(st, 7);
        c.version_us = sqlite3_column_int64(st, 8);
        c.old_fields = state_col_text(st, 9);
        c.txn = sqlite3_column_int64(st, 10);
        if (c.endpoint == NULL || c.mapping == NULL || op == NULL ||
            c.key == NULL) {
            rc = err_set(e, -EPROTO, "journal change %" PRId64
                         " is incomplete (or out of memory)", c.seq);
            break;
        }
        c.op = (enum change_op)op[0];
        (*count)++;
        ret = fn(&c, arg);
        if (ret != 0)
            break;
    }
    state_stmt_done(s, id, st);
    return rc < 0 ? rc : ret;
}

#define CHANGE_COLS \
    "SELECT c.seq, t.endpoint, c.mapping, c.op, c.key, c.old_key, c.fields," \
    " c.unchanged, c.version_us, c.old_fields, c.txn"

/* Runs the changes query sql (CHANGE_COLS, parameters p1, p2 and a
 * limit) and passes its rows to fn. */
static int scan_changes(struct state *s, enum state_stmt_id id, const char *sql,
                        int64_t p1, int64_t p2, int limit, journal_change_fn fn,
                        void *arg, int *count, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    *count = 0;
    if (fn == NULL)
        return err_set(e, -EINVAL, "journal scan: no callback");
    if ((rc = journal_flush(s, e)) < 0 || (rc = state_stmt(s, id, sql, &st, e)) < 0)
        return rc;
    rc = state_bind(s, st, e, "journal scan changes", "lll", p1, p2,
                    (int64_t)(limit > 0 ? limit : -1));
    if (rc < 0) {
        state_stmt_done(s, id, st);
        return rc;
    }
    return step_changes(s, id, st, fn, arg, count, e);
}

static int journal_changes(struct state *s, int64_t txn, int64_t after_seq,
                           int limit, journal_change_fn fn, void *arg,
                           int *count, struct err *e)
{
    return scan_changes(s, ST_J_SCAN_CHANGES,
                        CHANGE_COLS
                        " FROM journal_txn t JOIN journal_change c"
                        "  ON c.seq > max(?2, t.first_seq - 1)"
                        "  AND c.seq <= coalesce(t.last_seq, 9223372036854775807)"
                        "  AND c.txn = t.txn"
                        " WHERE t.txn = ?1 ORDER BY c.seq LIMIT ?3",
                        txn, after_seq, limit, fn, arg, count, e);
}

int journal_scan_seq_range(struct state *s, int64_t after_seq, int64_t last_seq,
                           int limit, journal_change_fn fn, void *arg, struct err *e)
{
    int n = 0;
    int rc = scan_changes(s, ST_J_SCAN_RANGE,
                          CHANGE_COLS
                          " FROM journal_change c JOIN journal_txn t ON t.txn = c.txn"
                          " WHERE c.seq > ?1 AND c.seq <= ?2 ORDER BY c.seq LIMIT ?3",
                          after_seq, last_seq, limit, fn, arg, &n, e);

    return rc < 0 ? rc : n;
}

int journal_scan_changes(struct state *s, int64_t txn, journal_change_fn fn,
                         void *arg, struct err *e)
{
    int n;

    return journal_changes(s, txn, 0, 0, fn, arg, &n, e);
}

int journal_single(struct state *s, struct change *c, int64_t *commit_seq,
                   struct err *e)
{
    int64_t txn, seq;
    int rc;

    if ((rc = journal_txn_open(s, c->endpoint, 0, 0, c->version_us, &txn, e)) == 0 &&
        (rc = journal_append(s, txn, c, e)) == 0 &&
        (rc = journal_txn_commit(s, txn, 0, &seq, e)) == 0 && commit_seq != NULL)
        *commit_seq = seq;
    return rc;
}

int journal_scan_changes_from(struct state *s, int64_t txn, int64_t after_seq,
                              int limit, journal_change_fn fn, void *arg,
                              struct err *e)
{
    int n;
    int rc = journal_changes(s, txn, after_seq, limit, fn, arg, &n, e);

    return rc < 0 ? rc : n;
}

int journal_depth(struct state *s, int64_t after, int64_t *txns,
                  int64_t *changes, struct err *e)
{
    sqlite3_stmt *st;
    int rc = journal_flush(s, e);

    if (rc < 0)
        return rc;
    rc = state_stmt(s, ST_J_DEPTH,
                    "SELECT count(*), coalesce(sum(nchanges), 0)"
                    " FROM journal_txn WHERE commit_seq > ?1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal depth", "l", after);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (txns != NULL)
                *txns = sqlite3_column_int64(st, 0);
            if (changes != NULL)
                *changes = sqlite3_column_int64(st, 1);
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "journal depth after %" PRId64, after);
        }
    }
    state_stmt_done(s, ST_J_DEPTH, st);
    return rc;
}

int journal_newest_open(struct state *s, const char *endpoint, int64_t *txn,
                        struct err *e)
{
    int rc;

    *txn = 0;
    if ((rc = journal_flush(s, e)) < 0)
        return rc;
    return state_query_int64_args(s, ST_J_NEWEST_OPEN,
                                  "SELECT max(txn) FROM journal_txn"
                                  " WHERE commit_seq IS NULL AND endpoint = ?1", txn, e,
                                  "journal: newest open transaction", "t", endpoint);
}

int journal_decided_later(struct state *s, const char *target, const char *mapping,
                          const char *key, int64_t seq, bool *found, struct err *e)
{
    int64_t n = 0;
    int rc;

    *found = false;
    if ((rc = journal_flush(s, e)) < 0)
        return rc;
    /* CASE, not AND: the journal is scanned only for a settled key. */
    rc = state_query_int64_args(s, ST_J_DECIDED_LATER,
                                "SELECT CASE WHEN EXISTS (SELECT 1 FROM conflicts"
                                "   WHERE mapping = ?2 AND key = ?3 AND open = 0)"
                                " THEN EXISTS (SELECT 1 FROM journal_change c"
                                "   JOIN journal_txn t ON t.txn = c.txn"
                                "   WHERE c.seq > ?1 AND c.mapping = ?2 AND c.key = ?3"
                                "   AND t.endpoint != ?4 AND t.commit_seq IS NOT NULL)"
                                " ELSE 0 END", &n, e, "journal: later decision",
                                "lttt", seq, mapping, key, target);
    *found = n != 0;
    return rc;
}

int journal_last_commit_seq(struct state *s, int64_t *out, struct err *e)
{
    if (out == NULL)
        return err_set(e, -EINVAL, "journal_last_commit_seq: no output");
    return journal_max_seq(s, out, e);
}

int journal_endpoint_stats(struct state *s, const char *endpoint,
                           uint64_t *last_end_lsn, int64_t *txns,
                           struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (endpoint == NULL)
        return err_set(e, -EINVAL, "journal stats: no endpoint");
    if ((rc = journal_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_J_EP_STATS,
                    "SELECT coalesce((SELECT end_lsn FROM journal_txn"
                    "  WHERE endpoint = ?1 AND commit_seq IS NOT NULL"
                    "  ORDER BY commit_seq DESC LIMIT 1), 0),"
                    " (SELECT count(*) FROM journal_txn"
                    "  WHERE endpoint = ?1 AND commit_seq IS NOT NULL)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal stats", "t", endpoint);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (last_end_lsn != NULL)
                *last_end_lsn = (uint64_t)sqlite3_column_int64(st, 0);
            if (txns != NULL)
                *txns = sqlite3_column_int64(st, 1);
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "journal stats of %s", endpoint);
        }
    }
    state_stmt_done(s, ST_J_EP_STATS, st);
    return rc;
}

/* Runs a cached prune statement bound to (upto, cutoff). */
static int journal_prune_step(struct state *s, enum state_stmt_id id,
                              const char *sql, int64_t upto, int64_t cutoff,
                              int64_t *max, struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, id, sql, &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "journal prune", "ll", upto, cutoff);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (max != NULL && rc == SQLITE_ROW) {
            *max = sqlite3_column_int64(st, 0);
            rc = 0;
        } else if (max == NULL && rc == SQLITE_DONE) {
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "journal prune up to %" PRId64, upto);
        }
    }
    state_stmt_done(s, id, st);
    return rc;
}

/* Raises the integer in meta key k to at least v. */
static int meta_raise(struct state *s, const char *k, int64_t v, struct err *e)
{
    return state_write(s, ST_J_PRUNE_MARK,
                       "INSERT INTO meta (k, v) VALUES (?2, ?1)"
                       " ON CONFLICT (k) DO UPDATE SET v ="
                       " max(CAST(v AS INTEGER), CAST(excluded.v AS INTEGER))",
                       e, "journal prune mark", "lt", v, k);
}

/* Remembers the highest pruned commit sequence, and the last change
 * sequence given out, so neither is ever given out again. */
static int journal_prune_mark(struct state *s, int64_t max, struct err *e)
{
    int64_t change_seq;
    int rc = journal_change_seq(s, &change_seq, e);

    if (rc == 0)
        rc = meta_raise(s, "journal_change_seq", change_seq, e);
    if (rc == 0)
        rc = meta_raise(s, "journal_pruned_seq", max, e);
    return rc;
}

/* Transactions committed before this time are past the retention window. */
static int64_t prune_cutoff(struct state *s, int retention_s)
{
    return state_now_us(s) - (int64_t)retention_s * 1000000;
}

int journal_prune(struct state *s, int64_t upto, int retention_s,
                  struct err *e)
{
    int64_t cutoff, max = 0;
    bool own;
    int rc;

    if (retention_s < 0)
        return err_set(e, -EINVAL, "journal prune: negative retention %d",
                       retention_s);
    cutoff = prune_cutoff(s, retention_s);
    rc = state_tx_enter(s, &own, e);
    if (rc < 0)
        return rc;
    rc = journal_prune_step(s, ST_J_PRUNE_MAX,
                            "SELECT coalesce(max(commit_seq), 0) FROM journal_txn"
                            " WHERE commit_seq <= ?1 AND committed_at_us <= ?2",
                            upto, cutoff, &max, e);
    if (rc == 0 && max > 0)
        rc = journal_prune_mark(s, max, e);
    if (rc == 0 && max > 0)
        rc = journal_prune_step(s, ST_J_PRUNE_CHANGES,
                                "DELETE FROM journal_change WHERE seq BETWEEN"
                                " (SELECT min(first_seq) FROM journal_txn"
                                "  WHERE commit_seq <= ?1 AND committed_at_us <= ?2)"
                                " AND (SELECT max(last_seq) FROM journal_txn"
                                "  WHERE commit_seq <= ?1 AND committed_at_us <= ?2)"
                                " AND txn IN (SELECT txn FROM journal_txn"
                                "  WHERE commit_seq <= ?1 AND committed_at_us <= ?2)",
                                upto, cutoff, NULL, e);
    if (rc == 0 && max > 0)
        rc = journal_prune_step(s, ST_J_PRUNE_TXNS,
                                "DELETE FROM journal_txn WHERE commit_seq <= ?1"
                                " AND committed_at_us <= ?2",
                                upto, cutoff, NULL, e);
    return state_tx_leave(s, own, rc, e);
}

int journal_prune_some(struct state *s, int64_t upto, int retention_s, int64_t max_txns,
                       struct err *e)
{
    sqlite3_stmt *st;
    int64_t first = 0, first_at = 0;
    int rc = journal_flush(s, e);

    if (rc < 0 || (rc = state_stmt(s, ST_J_FIRST_COMMIT,
                                   "SELECT commit_seq, committed_at_us FROM journal_txn"
                                   " WHERE commit_seq IS NOT NULL ORDER BY commit_seq LIMIT 1",
                                   &st, e)) < 0)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        first = sqlite3_column_int64(st, 0);
        first_at = sqlite3_column_int64(st, 1);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = 0;
    } else {
        rc = state_sqlerr(s, e, rc, "journal: first committed transaction");
    }
    state_stmt_done(s, ST_J_FIRST_COMMIT, st);
    /* Nothing committed, or even the oldest is inside the retention window. */
    if (rc < 0 || first == 0 || first > upto ||
        first_at > prune_cutoff(s, retention_s))
        return rc;
    if (upto > first + max_txns - 1)
        upto = first + max_txns - 1;
    return journal_prune(s, upto, retention_s, e);
}
