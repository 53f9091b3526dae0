/* state.c: opening, locking and migrating the state file; positions,
 * applied progress, metadata; the statement cache and helpers shared by
 * the other state/ files. */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state_int.h"
#include "../resolver/canon.h"

/* Readers (tandem status) and a daemon share the file; a writer waits this
 * long for another's transaction before giving up with -EBUSY. */
#define STATE_BUSY_TIMEOUT_MS 5000

/* Forward migrations: step i takes the schema from version i to i + 1, in
 * one transaction with the version bump. Append only; never edit a step
 * that has shipped. */
static const char *const state_migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE meta ("
    "  k TEXT PRIMARY KEY,"
    "  v TEXT NOT NULL"
    ");"
    /* Per source endpoint: the acknowledged-safe position. */
    "CREATE TABLE positions ("
    "  endpoint TEXT PRIMARY KEY,"
    "  position TEXT NOT NULL,"
    "  updated_at_us INTEGER NOT NULL"
    ");"
    /* Per target endpoint: journal commit_seq applied up to. */
    "CREATE TABLE applied ("
    "  target TEXT PRIMARY KEY,"
    "  commit_seq INTEGER NOT NULL CHECK (commit_seq >= 0),"
    "  updated_at_us INTEGER NOT NULL"
    ");"
    /* One row per source transaction; commit_seq is NULL while open. */
    "CREATE TABLE journal_txn ("
    "  txn INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  endpoint TEXT NOT NULL,"
    "  source_xid INTEGER NOT NULL DEFAULT 0,"
    "  commit_lsn INTEGER NOT NULL DEFAULT 0,"
    "  end_lsn INTEGER NOT NULL DEFAULT 0,"
    "  commit_ts_us INTEGER NOT NULL DEFAULT 0,"
    "  commit_seq INTEGER UNIQUE,"
    "  opened_at_us INTEGER NOT NULL,"
    "  committed_at_us INTEGER,"
    "  nchanges INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX journal_txn_endpoint ON journal_txn (endpoint, commit_seq);"
    "CREATE TABLE journal_change ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  txn INTEGER NOT NULL REFERENCES journal_txn (txn) ON DELETE CASCADE,"
    "  mapping TEXT NOT NULL,"
    "  op TEXT NOT NULL CHECK (op IN ('I', 'U', 'D', 'T')),"
    "  key TEXT NOT NULL,"
    "  old_key TEXT,"
    "  fields TEXT,"
    "  unchanged TEXT,"
    "  version_us INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX journal_change_txn ON journal_change (txn, seq);"
    /* Last agreed version per mapping and key. */
    "CREATE TABLE shadow ("
    "  mapping TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  fields TEXT,"
    "  version_a_us INTEGER NOT NULL DEFAULT 0,"
    "  version_b_us INTEGER NOT NULL DEFAULT 0,"
    "  tombstone INTEGER NOT NULL DEFAULT 0 CHECK (tombstone IN (0, 1)),"
    "  updated_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY (mapping, key)"
    ");"
    "CREATE TABLE xref ("
    "  mapping TEXT NOT NULL,"
    "  key_a TEXT NOT NULL,"
    "  key_b TEXT NOT NULL,"
    "  updated_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY (mapping, key_a),"
    "  UNIQUE (mapping, key_b)"
    ");"
    "CREATE TABLE conflicts ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_us INTEGER NOT NULL,"
    "  mapping TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  strategy TEXT NOT NULL,"
    "  base TEXT,"
    "  side_a TEXT,"
    "  side_b TEXT,"
    "  result TEXT,"
    "  rule TEXT,"
    "  version_a_us INTEGER NOT NULL DEFAULT 0,"
    "  version_b_us INTEGER NOT NULL DEFAULT 0,"
    "  open INTEGER NOT NULL DEFAULT 0 CHECK (open IN (0, 1)),"
    "  resolved_ts_us INTEGER"
    ");"
    "CREATE INDEX conflicts_open ON conflicts (open, id);"
    "CREATE INDEX conflicts_key ON conflicts (mapping, key, open);"
    "CREATE TABLE dlq ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_us INTEGER NOT NULL,"
    "  mapping TEXT NOT NULL,"
    "  key TEXT,"
    "  source TEXT,"
    "  target TEXT NOT NULL,"
    "  change_seq INTEGER NOT NULL DEFAULT 0,"
    "  commit_seq INTEGER NOT NULL DEFAULT 0,"
    "  change TEXT,"
    "  error TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL DEFAULT 'open'"
    "    CHECK (status IN ('open', 'retried', 'dropped')),"
    "  retry_requested_us INTEGER NOT NULL DEFAULT 0,"
    "  resolved_ts_us INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX dlq_status ON dlq (status, id);"
    "CREATE INDEX dlq_key ON dlq (mapping, key);"
    "CREATE TABLE parked ("
    "  mapping TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  since_us INTEGER NOT NULL,"
    "  target TEXT,"
    "  dlq_id INTEGER NOT NULL DEFAULT 0,"
    "  detail TEXT,"
    "  PRIMARY KEY (mapping, key)"
    ");"
    "CREATE INDEX parked_reason ON parked (reason);"
    "CREATE TABLE canary ("
    "  mapping TEXT NOT NULL,"
    "  direction TEXT NOT NULL CHECK (direction IN ('a_to_b', 'b_to_a')),"
    "  token TEXT,"
    "  sent_us INTEGER NOT NULL DEFAULT 0,"
    "  seen_us INTEGER NOT NULL DEFAULT 0,"
    "  last_latency_us INTEGER NOT NULL DEFAULT 0,"
    "  sent_count INTEGER NOT NULL DEFAULT 0,"
    "  seen_count INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (mapping, direction)"
    ");",
    /* 1 -> 2: the source's before-image of an update or delete (REPLICA
     * IDENTITY FULL), the base a writer checks the target row against. */
    "ALTER TABLE journal_change ADD COLUMN old_fields TEXT;",
    /* 2 -> 3: a conflict's per-field decisions (which side each field
     * was taken from, and by what rule), as a JSON array. */
    "ALTER TABLE conflicts ADD COLUMN decisions TEXT;",
    /* 3 -> 4: a change waiting for its parent (a foreign key the peer
     * enforces) is kept like a DLQ entry, status 'waiting', and replayed
     * when the parent may have landed. SQLite cannot alter a CHECK: the
     * table is rebuilt. */
    "CREATE TABLE dlq_v4 ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_us INTEGER NOT NULL,"
    "  mapping TEXT NOT NULL,"
    "  key TEXT,"
    "  source TEXT,"
    "  target TEXT NOT NULL,"
    "  change_seq INTEGER NOT NULL DEFAULT 0,"
    "  commit_seq INTEGER NOT NULL DEFAULT 0,"
    "  change TEXT,"
    "  error TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL DEFAULT 'open'"
    "    CHECK (status IN ('open', 'retried', 'dropped', 'waiting')),"
    "  retry_requested_us INTEGER NOT NULL DEFAULT 0,"
    "  resolved_ts_us INTEGER NOT NULL DEFAULT 0"
    ");"
    "INSERT INTO dlq_v4 SELECT id, ts_us, mapping, key, source, target, change_seq,"
    " commit_seq, change, error, attempts, status, retry_requested_us, resolved_ts_us"
    " FROM dlq;"
    "DROP TABLE dlq;"
    "ALTER TABLE dlq_v4 RENAME TO dlq;"
    "CREATE INDEX dlq_status ON dlq (status, id);"
    "CREATE INDEX dlq_key ON dlq (mapping, key);",
    /* 4 -> 5: appending a change was a third of a busy daemon's CPU. The
     * journal gives out change sequences itself (meta journal_change_seq
     * keeps the high water across pruning, as AUTOINCREMENT did, without
     * its per-insert bookkeeping); prune and recover delete changes
     * explicitly, so the foreign key check per insert goes. A transaction's
     * changes lie in its [first_seq, last_seq] range of sequences (set when
     * it opens and commits; other transactions' changes may interleave), so
     * the (txn, seq) index goes too. The shadow is keyed by (mapping, key)
     * alone: one b-tree, not a table and an index. */
    "ALTER TABLE journal_txn ADD COLUMN first_seq INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE journal_txn ADD COLUMN last_seq INTEGER;"
    "UPDATE journal_txn SET"
    " first_seq = coalesce((SELECT min(seq) FROM journal_change c"
    "                       WHERE c.txn = journal_txn.txn), 0),"
    " last_seq = CASE WHEN commit_seq IS NULL THEN NULL ELSE"
    "   coalesce((SELECT max(seq) FROM journal_change c"
    "             WHERE c.txn = journal_txn.txn), 0) END;"
    "CREATE TABLE journal_change_v5 ("
    "  seq INTEGER PRIMARY KEY,"
    "  txn INTEGER NOT NULL,"
    "  mapping TEXT NOT NULL,"
    "  op TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  old_key TEXT,"
    "  fields TEXT,"
    "  unchanged TEXT,"
    "  version_us INTEGER NOT NULL DEFAULT 0,"
    "  old_fields TEXT"
    ");"
    "INSERT INTO journal_change_v5 SELECT seq, txn, mapping, op, key, old_key,"
    " fields, unchanged, version_us, old_fields FROM journal_change;"
    "INSERT OR REPLACE INTO meta (k, v) SELECT 'journal_change_seq',"
    " max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'journal_change'), 0),"
    "     coalesce((SELECT max(seq) FROM journal_change), 0));"
    "DROP TABLE journal_change;"
    "ALTER TABLE journal_change_v5 RENAME TO journal_change;"
    "CREATE TABLE shadow_v5 ("
    "  mapping TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  fields TEXT,"
    "  version_a_us INTEGER NOT NULL DEFAULT 0,"
    "  version_b_us INTEGER NOT NULL DEFAULT 0,"
    "  tombstone INTEGER NOT NULL DEFAULT 0 CHECK (tombstone IN (0, 1)),"
    "  updated_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY (mapping, key)"
    ") WITHOUT ROWID;"
    "INSERT INTO shadow_v5 SELECT mapping, key, hash, fields, version_a_us,"
    " version_b_us, tombstone, updated_at_us FROM shadow;"
    "DROP TABLE shadow;"
    "ALTER TABLE shadow_v5 RENAME TO shadow;",
    /* 5 -> 6: the canonical hash takes 8 bytes a step (resolver/canon.c);
     * every stored hash is recomputed from the fields it stands for. */
    "UPDATE shadow SET hash = coalesce(tandem_canon_hash(fields), hash)"
    " WHERE fields IS NOT NULL;",
    /* 6 -> 7: the shadow is keyed by (mapping, klen, key), klen the key
     * text's length in bytes. Integer keys then sort by value, so rows
     * inserted in key order append at the b-tree's right edge instead of
     * landing all over it: the shadow upsert was a third of the daemon's
     * CPU in a backlog drain, most of it page splits and the dirty pages
     * every commit wrote. */
    "CREATE TABLE shadow_v7 ("
    "  mapping TEXT NOT NULL,"
    "  klen INTEGER NOT NULL,"
    "  key TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  fields TEXT,"
    "  version_a_us INTEGER NOT NULL DEFAULT 0,"
    "  version_b_us INTEGER NOT NULL DEFAULT 0,"
    "  tombstone INTEGER NOT NULL DEFAULT 0 CHECK (tombstone IN (0, 1)),"
    "  updated_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY (mapping, klen, key)"
    ") WITHOUT ROWID;"
    "INSERT INTO shadow_v7 SELECT mapping, length(CAST(key AS BLOB)), key, hash,"
    " fields, version_a_us, version_b_us, tombstone, updated_at_us FROM shadow;"
    "DROP TABLE shadow;"
    "ALTER TABLE shadow_v7 RENAME TO shadow;",
};

_Static_assert(sizeof(state_migrations) / sizeof(state_migrations[0]) ==
                   STATE_SCHEMA_VERSION,
               "one migration step per schema version");

/* Before SQLite's first use: no global memory statistics, whose mutex every
 * allocation takes (a tenth of the CPU time of a busy daemon). Too late
 * when something opened SQLite first: harmless, the default stays. */
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;

static void sqlite_configure(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int64_t state_default_clock(void *arg)
{
    struct timespec ts;

    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t state_now_us(struct state *s)
{
    return s->clock(s->clock_arg);
}

void state_set_clock(struct state *s, state_clock_fn fn, void *arg)
{
    s->clock = fn != NULL ? fn : state_default_clock;
    s->clock_arg = fn != NULL ? arg : NULL;
}

static int state_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return -EPROTO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return -EEXIST;
        return -EINVAL;
    default:
        return -EIO;
    }
}

int state_sqlerr(struct state *s, struct err *e, int rc, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return err_set(e, state_errno(rc), "%s: %s", what,
                   s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

int state_stmt(struct state *s, enum state_stmt_id id, const char *sql,
               sqlite3_stmt **out, struct err *e)
{
    sqlite3_stmt *st = s->stmt[id];
    sqlite3_stmt *fresh = NULL;
    int rc;

    *out = NULL;
    if (st != NULL && !sqlite3_stmt_busy(st)) {
        *out = st;
        return 0;
    }
    rc = sqlite3_prepare_v3(s->db, sql, -1,
                            st == NULL ? SQLITE_PREPARE_PERSISTENT : 0,
                            &fresh, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(fresh);
        return state_sqlerr(s, e, rc, "prepare \"%.60s\"", sql);
    }
    if (st == NULL)
        s->stmt[id] = fresh;
    *out = fresh;
    return 0;
}

void state_stmt_done(struct state *s, enum state_stmt_id id, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    if (st != s->stmt[id])
        sqlite3_finalize(st);
    else
        sqlite3_reset(st);
}

static int state_vbind(struct state *s, sqlite3_stmt *st, struct err *e,
                       const char *what, const char *types, va_list ap)
{
    int idx = 1;
    int rc = SQLITE_OK;

    for (const char *t = types; *t != '\0' && rc == SQLITE_OK; t++, idx++) {
        switch (*t) {
        case 't': {
            const char *v = va_arg(ap, const char *);

            rc = v != NULL ? sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC)
                           : sqlite3_bind_null(st, idx);
            break;
        }
        case 'l':
            rc = sqlite3_bind_int64(st, idx, (sqlite3_int64)va_arg(ap, int64_t));
            break;
        case 'u':
            rc = sqlite3_bind_int64(st, idx, (sqlite3_int64)va_arg(ap, uint64_t));
            break;
        case 'i':
            rc = sqlite3_bind_int(st, idx, va_arg(ap, int));
            break;
        case 'b':
            rc = sqlite3_bind_int(st, idx, va_arg(ap, int) ? 1 : 0);
            break;
        default:
            return err_set(e, -EINVAL, "%s: bad bind type '%c'", what, *t);
        }
    }
    if (rc != SQLITE_OK)
        return state_sqlerr(s, e, rc, "%s: bind parameter %d", what, idx - 1);
    return 0;
}

int state_bind(struct state *s, sqlite3_stmt *st, struct err *e,
               const char *what, const char *types, ...)
{
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = state_vbind(s, st, e, what, types, ap);
    va_end(ap);
    return rc;
}

int state_write(struct state *s, enum state_stmt_id id, const char *sql,
                struct err *e, const char *what, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    int rc = state_stmt(s, id, sql, &st, e);

    if (rc < 0)
        return rc;
    va_start(ap, types);
    rc = state_vbind(s, st, e, what, types, ap);
    va_end(ap);
    if (rc == 0)
        rc = state_step_done(s, st, e, what);
    state_stmt_done(s, id, st);
    return rc;
}

int state_step_done(struct state *s, sqlite3_stmt *st, struct err *e,
                    const char *what)
{
    int rc = sqlite3_step(st);

    if (rc != SQLITE_DONE)
        return state_sqlerr(s, e, rc, "%s", what);
    return 0;
}

int state_column_copy(struct state *s, sqlite3_stmt *st, int col, char *buf,
                      size_t cap, struct err *e, const char *what)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    size_t n;

    if (v == NULL) {
        if (sqlite3_errcode(s->db) == SQLITE_NOMEM)
            return err_set(e, -ENOMEM, "%s: out of memory", what);
        return err_set(e, -ENOENT, "%s: no value", what);
    }
    n = (size_t)sqlite3_column_bytes(st, col);
    if (buf == NULL || n + 1 > cap)
        return err_set(e, -ERANGE, "%s: value of %zu bytes does not fit in %zu",
                       what, n, cap);
    memcpy(buf, v, n);
    buf[n] = '\0';
    return 0;
}

/* Runs one cached statement that returns no rows. */
static int state_run(struct state *s, enum state_stmt_id id, const char *sql,
                     struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, id, sql, &st, e);

    if (rc < 0)
        return rc;
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? 0 : state_sqlerr(s, e, rc, "state %s: %s", s->path, sql);
    state_stmt_done(s, id, st);
    return rc;
}

bool state_in_txn(const struct state *s)
{
    return s != NULL && s->db != NULL && !sqlite3_get_autocommit(s->db);
}

int state_query_int64_args(struct state *s, enum state_stmt_id id, const char *sql,
                           int64_t *out, struct err *e, const char *what,
                           const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    int rc = state_stmt(s, id, sql, &st, e);

    if (rc < 0)
        return rc;
    va_start(ap, types);
    rc = state_vbind(s, st, e, what, types, ap);
    va_end(ap);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "%s", what);
        }
    }
    state_stmt_done(s, id, st);
    return rc;
}

int state_query_int64(struct state *s, enum state_stmt_id id, const char *sql,
                      int64_t *out, struct err *e, const char *what)
{
    return state_query_int64_args(s, id, sql, out, e, what, "");
}

int state_flush_rows(struct state *s, struct err *e)
{
    int rc = journal_flush(s, e);

    return rc < 0 ? rc : shadow_flush(s, e);
}

void state_drop_rows(struct state *s)
{
    rowbatch_clear(&s->txn_rows);
    rowbatch_clear(&s->journal_rows);
    rowbatch_clear(&s->shadow_rows);
}

/* Drops every counter cached from this connection's own writes. */
static void state_forget_counters(struct state *s)
{
    s->last_commit_seq = -1;
    s->last_change_seq = -1;
    s->last_txn_id = -1;
    s->append_txn = 0;
}

/* Takes the write lock. Counters cached from this connection's own writes
 * are stale when another process (a CLI repair, a retry) committed since:
 * data_version says so. */
static int state_begin_write(struct state *s, struct err *e)
{
    int64_t v = -1;
    int rc = state_run(s, ST_BEGIN, "BEGIN IMMEDIATE", e);

    if (rc < 0)
        return rc;
    if (state_query_int64(s, ST_DATA_VERSION, "PRAGMA data_version", &v, NULL,
                          "read data version") < 0 || v != s->data_version) {
        state_forget_counters(s);
        s->data_version = v;
    }
    return 0;
}

int state_begin(struct state *s, struct err *e)
{
    int rc;

    if (state_in_txn(s))
        return 0;
    rc = state_begin_write(s, e);
    s->batch = rc == 0;
    return rc;
}

void state_rollback(struct state *s)
{
    s->batch = false;
    state_drop_rows(s);
    if (!state_in_txn(s))
        return;
    state_run(s, ST_ROLLBACK, "ROLLBACK", NULL);
    /* Counters cached from rolled-back writes are wrong now. */
    state_forget_counters(s);
}

int state_commit(struct state *s, struct err *e)
{
    int rc;

    if (!state_in_txn(s)) {
        if (!s->batch)
            return 0;
        /* SQLite rolls back on its own after some errors (disk full, I/O):
         * the batch is gone and must not be reported as saved. */
        s->batch = false;
        state_forget_counters(s);
        return err_set(e, -EIO, "state %s: the transaction was rolled back "
                       "after an earlier error; nothing since state_begin "
                       "was saved", s->path);
    }
    s->batch = false;
    rc = state_flush_rows(s, e);
    if (rc == 0)
        rc = state_run(s, ST_COMMIT, "COMMIT", e);
    if (rc < 0)
        state_rollback(s);
    return rc;
}

int state_tx_enter(struct state *s, bool *own, struct err *e)
{
    int rc;

    if (state_in_txn(s)) {
        *own = false;
        /* Rows gathered before the savepoint are not its to undo. */
        if ((rc = state_flush_rows(s, e)) < 0)
            return rc;
        return state_run(s, ST_SAVEPOINT, "SAVEPOINT tandem_op", e);
    }
    *own = true;
    return state_begin_write(s, e);
}

int state_tx_leave(struct state *s, bool own, int rc, struct err *e)
{
    int r;

    if (rc >= 0) {
        r = own ? state_commit(s, e)
                : state_run(s, ST_RELEASE, "RELEASE tandem_op", e);
        return r < 0 ? r : rc;
    }
    if (own) {
        state_rollback(s);
    } else if (state_in_txn(s)) {
        state_drop_rows(s);
        /* SQLite may have rolled the whole transaction back already. */
        state_run(s, ST_ROLLBACK_TO, "ROLLBACK TO tandem_op", NULL);
        state_run(s, ST_RELEASE, "RELEASE tandem_op", NULL);
        state_forget_counters(s);
    }
    return rc;
}

/* Runs SQL text once (pragmas, migrations); not for hot paths. */
static int state_exec(struct state *s, const char *sql, struct err *e,
                      const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return state_sqlerr(s, e, rc, "state %s: %s", s->path, what);
    return 0;
}

/* Runs a one-row, one-column query (uncached); *out gets column 0 as
 * integer, or text into buf when buf is not NULL. -ENOENT: no row. */
static int state_query1(struct state *s, const char *sql, int64_t *out,
                        char *buf, size_t cap, struct err *e, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    int ret = 0;

    if (rc != SQLITE_OK) {
        ret = state_sqlerr(s, e, rc, "state %s: %s", s->path, what);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        ret = err_set(e, -ENOENT, "state %s: %s: no row", s->path, what);
    } else if (rc != SQLITE_ROW) {
        ret = state_sqlerr(s, e, rc, "state %s: %s", s->path, what);
    } else if (buf != NULL) {
        const unsigned char *v = sqlite3_column_text(st, 0);

        snprintf(buf, cap, "%s", v != NULL ? (const char *)v : "");
    } else if (out != NULL) {
        *out = sqlite3_column_int64(st, 0);
    }
out:
    sqlite3_finalize(st);
    return ret;
}

/* Reads the schema version; 0 for a new, empty file. Also the first
 * access to the file, which is where SQLite notices a foreign file. */
static int state_read_version(struct state *s, int *version, struct err *e)
{
    int64_t nmeta = 0, nobj = 0;
    char buf[32], *end;
    long v;
    int rc;

    rc = state_query1(s, "SELECT count(*) FROM sqlite_master", &nobj, NULL, 0,
                      e, "read schema");
    if (rc == 0)
        rc = state_query1(s, "SELECT count(*) FROM sqlite_master WHERE "
                             "type = 'table' AND name = 'meta'",
                          &nmeta, NULL, 0, e, "read schema");
    if (rc == -EPROTO)
        return err_set(e, -EPROTO,
                       "state %s is not a tandem state database (not a SQLite "
                       "file, or corrupted): %s",
                       s->path, sqlite3_errmsg(s->db));
    if (rc < 0)
        return rc;
    if (nmeta == 0) {
        if (nobj > 0)
            return err_set(e, -EPROTO,
                           "state %s is a SQLite database but not a tandem "
                           "state (no meta table)", s->path);
        *version = 0;
        return 0;
    }
    rc = state_query1(s, "SELECT v FROM meta WHERE k = 'schema_version'", NULL,
                      buf, sizeof(buf), e, "read schema version");
    if (rc == -ENOENT)
        return err_set(e, -EPROTO, "state %s: meta has no schema_version",
                       s->path);
    if (rc < 0)
        return rc;
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0' || v < 1 || v > 1000000)
        return err_set(e, -EPROTO, "state %s: bad schema_version \"%s\"",
                       s->path, buf);
    *version = (int)v;
    return 0;
}

/* tandem_canon_hash(fields JSON text): canon_hash(), for migrations;
 * NULL when the text is not a JSON object. */
static void sql_canon_hash(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
    const char *text = (const char *)sqlite3_value_text(argv[0]);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    char h[CANON_HASH_HEX + 1];

    (void)argc;
    if (json_is_object(j)) {
        canon_hash(j, h);
        sqlite3_result_text(cx, h, CANON_HASH_HEX, SQLITE_TRANSIENT);
    } else {
        sqlite3_result_null(cx);
    }
    json_decref(j);
}

static int state_migrate(struct state *s, struct err *e)
{
    char sql[128];
    int rc;

    rc = sqlite3_create_function_v2(s->db, "tandem_canon_hash", 1,
                                    SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                    sql_canon_hash, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return state_sqlerr(s, e, rc, "state %s: register the migration's hash", s->path);

    while (s->version < STATE_SCHEMA_VERSION) {
        rc = state_exec(s, "BEGIN IMMEDIATE", e, "begin migration");
        if (rc < 0)
            return rc;
        /* Another process may have migrated while we waited for the lock. */
        rc = state_read_version(s, &s->version, e);
        if (rc == 0 && s->version > STATE_SCHEMA_VERSION)
            rc = err_set(e, -ENOTSUP,
                         "state %s has schema version %d, newer than this "
                         "tandem supports (%d): upgrade tandem",
                         s->path, s->version, STATE_SCHEMA_VERSION);
        if (rc == 0 && s->version < STATE_SCHEMA_VERSION) {
            int to = s->version + 1;

            rc = state_exec(s, state_migrations[s->version], e,
                            "migrate schema");
            snprintf(sql, sizeof(sql),
                     "INSERT INTO meta (k, v) VALUES ('schema_version', '%d') "
                     "ON CONFLICT (k) DO UPDATE SET v = excluded.v", to);
            if (rc == 0)
                rc = state_exec(s, sql, e, "record schema version");
            if (rc == 0)
                rc = state_exec(s, "COMMIT", e, "commit migration");
            if (rc == 0)
                s->version = to;
        } else if (rc == 0) {
            rc = state_exec(s, "COMMIT", e, "commit");
        }
        if (rc < 0) {
            if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    return 0;
}

static int state_lock(struct state *s, struct err *e)
{
    size_t n = strlen(s->path) + sizeof(".lock");
    char *lp = malloc(n);
    int fd;

    if (lp == NULL)
        return err_set(e, -ENOMEM, "state %s: out of memory", s->path);
    snprintf(lp, n, "%s.lock", s->path);
    fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int ret = -errno;

        err_set(e, ret == -ENOENT ? -ENOENT : -EIO,
                "state %s: cannot open lock %s: %s", s->path, lp,
                strerror(-ret));
        free(lp);
        return ret == -ENOENT ? -ENOENT : -EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int ret = errno == EWOULDBLOCK ? -EBUSY : -EIO;

        if (ret == -EBUSY)
            err_set(e, ret,
                    "state %s is in use by another tandem process (lock %s)",
                    s->path, lp);
        else
            err_set(e, ret, "state %s: cannot lock %s: %s", s->path, lp,
                    strerror(errno));
        close(fd);
        free(lp);
        return ret;
    }
    free(lp);
    s->lock_fd = fd;
    return 0;
}

/* Reports a missing directory or (read-only) file by name before SQLite
 * turns it into a vaguer "unable to open database file". */
static int state_check_path(struct state *s, struct err *e)
{
    char *dir = strdup(s->path);
    char *slash;
    struct stat sb;
    int rc = 0;

    if (dir == NULL)
        return err_set(e, -ENOMEM, "state %s: out of memory", s->path);
    slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        strcpy(dir, ".");
    if (stat(dir, &sb) < 0 && errno == ENOENT)
        rc = err_set(e, -ENOENT, "state directory %s does not exist (state %s)",
                     dir, s->path);
    else if (stat(dir, &sb) < 0)
        rc = err_set(e, -EIO, "state %s: cannot access directory %s: %s",
                     s->path, dir, strerror(errno));
    else if (!S_ISDIR(sb.st_mode))
        rc = err_set(e, -ENOENT, "state directory %s is not a directory "
                                 "(state %s)", dir, s->path);
    else if (stat(s->path, &sb) < 0) {
        if (errno == ENOENT && s->mode == STATE_READONLY)
            rc = err_set(e, -ENOENT, "state %s does not exist", s->path);
    } else if (S_ISDIR(sb.st_mode)) {
        rc = err_set(e, -EIO, "state %s is a directory", s->path);
    }
    free(dir);
    return rc;
}

static int state_configure(struct state *s, bool memory, struct err *e)
{
    char mode[16];
    int rc;

    /* 8 KiB pages for a new file (an existing one keeps its own): less
     * B-tree and WAL-frame work per journaled row than 4 KiB pages (about
     * 8% less CPU on a backlog drain, as much as 16 or 32 KiB gave), while
     * a commit of one small transaction still writes few bytes (larger
     * pages made each such commit and its sync write several times more).
     * Must come before WAL mode, which fixes the page size. */
    if (s->mode != STATE_READONLY && !memory &&
        (rc = state_exec(s, "PRAGMA page_size = 8192", e, "set page size")) < 0)
        return rc;
    if (s->mode != STATE_READONLY && !memory) {
        rc = state_query1(s, "PRAGMA journal_mode = WAL", NULL, mode,
                          sizeof(mode), e, "set WAL mode");
        if (rc < 0)
            return rc;
        if (strcmp(mode, "wal") != 0)
            return err_set(e, -EIO, "state %s: cannot enable WAL mode (got %s)",
                           s->path, mode);
    }
    rc = state_exec(s, "PRAGMA synchronous = FULL", e, "set synchronous");
    if (rc == 0)
        rc = state_exec(s, "PRAGMA foreign_keys = ON", e, "enable foreign keys");
    if (rc == 0)
        rc = state_exec(s, "PRAGMA temp_store = MEMORY", e, "set temp_store");
    /* 16 MiB of page cache keeps a large batch from spilling mid-commit. */
    if (rc == 0)
        rc = state_exec(s, "PRAGMA cache_size = -16384", e, "set cache size");
    return rc;
}

int state_open(struct state **out, const char *path, enum state_mode mode,
               struct err *e)
{
    struct state *s;
    bool memory;
    int flags, rc;

    if (out == NULL || path == NULL || path[0] == '\0')
        return err_set(e, -EINVAL, "state_open: no path");
    if (mode != STATE_READONLY && mode != STATE_SHARED && mode != STATE_EXCLUSIVE)
        return err_set(e, -EINVAL, "state %s: bad mode %d", path, (int)mode);
    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return err_set(e, -ENOMEM, "state %s: out of memory", path);
    s->lock_fd = -1;
    state_forget_counters(s);
    s->data_version = -1;
    s->mode = mode;
    s->clock = state_default_clock;
    s->path = strdup(path);
    if (s->path == NULL) {
        free(s);
        return err_set(e, -ENOMEM, "state %s: out of memory", path);
    }
    memory = strcmp(path, ":memory:") == 0;
    if (!memory) {
        rc = state_check_path(s, e);
        if (rc == 0 && mode == STATE_EXCLUSIVE)
            rc = state_lock(s, e);
        if (rc < 0)
            goto fail;
    }
    pthread_once(&sqlite_once, sqlite_configure);
    flags = mode == STATE_READONLY ? SQLITE_OPEN_READONLY
                                   : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    flags |= SQLITE_OPEN_NOMUTEX;
    rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = state_sqlerr(s, e, rc, "state %s: open", path);
        if (rc == -EIO && mode == STATE_READONLY && access(path, F_OK) < 0)
            rc = err_set(e, -ENOENT, "state %s does not exist", path);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    rc = sqlite3_busy_timeout(s->db, STATE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK) {
        rc = state_sqlerr(s, e, rc, "state %s: set busy timeout", path);
        goto fail;
    }
    rc = state_read_version(s, &s->version, e);
    if (rc < 0)
        goto fail;
    if (s->version > STATE_SCHEMA_VERSION) {
        rc = err_set(e, -ENOTSUP,
                     "state %s has schema version %d, newer than this tandem "
                     "supports (%d): upgrade tandem",
                     path, s->version, STATE_SCHEMA_VERSION);
        goto fail;
    }
    rc = state_configure(s, memory, e);
    if (rc < 0)
        goto fail;
    if (s->version < STATE_SCHEMA_VERSION) {
        if (mode == STATE_READONLY) {
            rc = err_set(e, -EIO,
                         "state %s has schema version %d, this tandem needs %d: "
                         "open it read-write once (tandem setup or run) to "
                         "migrate", path, s->version, STATE_SCHEMA_VERSION);
            goto fail;
        }
        rc = state_migrate(s, e);
        if (rc < 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    state_close(s);
    return rc;
}

void state_close(struct state *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    if (s->db != NULL)
        sqlite3_close(s->db);   /* rolls back an open transaction */
    if (s->lock_fd >= 0)
        close(s->lock_fd);      /* releases the flock */
    rowbatch_free(&s->txn_rows);
    rowbatch_free(&s->journal_rows);
    rowbatch_free(&s->shadow_rows);
    free(s->path);
    free(s);
}

int state_set_synchronous(struct state *s, bool full, struct err *e)
{
    return state_exec(s, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                      e, "set synchronous");
}

static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct state *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

int state_checkpoint_elsewhere(struct state *s, struct err *e)
{
    if (s->mode != STATE_EXCLUSIVE)
        return err_set(e, -EINVAL, "state %s: only the daemon checkpoints elsewhere", s->path);
    /* Replaces the autocheckpoint, which is itself a WAL hook. */
    sqlite3_wal_hook(s->db, on_wal_commit, s);
    return 0;
}

/* A PASSIVE checkpoint of db's WAL. SQLITE_BUSY (another connection is
 * checkpointing, a command's closing) counts as done: the next one copies
 * what this one could not. */
static int checkpoint_passive(sqlite3 *db)
{
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

    return rc == SQLITE_BUSY ? SQLITE_OK : rc;
}

int state_checkpoint_here(struct state *s, struct err *e)
{
    int rc;

    if (state_in_txn(s))
        return err_set(e, -EBUSY, "state %s: checkpoint inside a transaction", s->path);
    if ((rc = checkpoint_passive(s->db)) != SQLITE_OK)
        return state_sqlerr(s, e, rc, "state %s: checkpoint", s->path);
    return 0;
}

int state_wal_frames(const struct state *s)
{
    return s->wal_frames;
}

struct state_ckpt {
    sqlite3 *db;
};

int state_ckpt_run(struct state_ckpt **ck, const char *path, struct err *e)
{
    int rc;

    if (*ck == NULL) {
        if ((*ck = calloc(1, sizeof(**ck))) == NULL)
            return err_set(e, -ENOMEM, "checkpoint: out of memory");
        rc = sqlite3_open_v2(path, &(*ck)->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec((*ck)->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            err_set(e, -EIO, "state %s: open for checkpoints: %s", path,
                    (*ck)->db ? sqlite3_errmsg((*ck)->db) : sqlite3_errstr(rc));
            state_ckpt_close(*ck);
            *ck = NULL;
            return -EIO;
        }
    }
    if (checkpoint_passive((*ck)->db) != SQLITE_OK)
        return err_set(e, -EIO, "state %s: checkpoint: %s", path, sqlite3_errmsg((*ck)->db));
    return 0;
}

void state_ckpt_close(struct state_ckpt *ck)
{
    if (ck == NULL)
        return;
    sqlite3_close(ck->db);
    free(ck);
}

int state_schema_version(struct state *s)
{
    return s->version;
}

struct sqlite3 *state_db(struct state *s)
{
    return s->db;
}

const char *state_path(const struct state *s)
{
    return s->path;
}

enum state_mode state_mode_of(const struct state *s)
{
    return s->mode;
}

/* Runs a cached single-row lookup keyed by one text and copies column 0. */
static int state_get_text(struct state *s, enum state_stmt_id id,
                          const char *sql, const char *k, char *buf, size_t cap,
                          struct err *e, const char *what)
{
    sqlite3_stmt *st;
    int rc;

    if (k == NULL)
        return err_set(e, -EINVAL, "%s: no name", what);
    rc = state_stmt(s, id, sql, &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, what, "t", k);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            rc = state_column_copy(s, st, 0, buf, cap, e, what);
        else if (rc == SQLITE_DONE)
            rc = err_set(e, -ENOENT, "no %s %s", what, k);
        else
            rc = state_sqlerr(s, e, rc, "%s %s", what, k);
    }
    state_stmt_done(s, id, st);
    return rc;
}

/* Runs a cached upsert of (name, value, now): the value is tv when not
 * NULL, else iv. */
static int state_upsert(struct state *s, enum state_stmt_id id, const char *sql,
                        const char *k, const char *tv, int64_t iv,
                        struct err *e, const char *what)
{
    sqlite3_stmt *st;
    int rc;

    if (k == NULL)
        return err_set(e, -EINVAL, "%s: missing name", what);
    rc = state_stmt(s, id, sql, &st, e);
    if (rc < 0)
        return rc;
    if (tv != NULL)
        rc = state_bind(s, st, e, what, "ttl", k, tv, state_now_us(s));
    else
        rc = state_bind(s, st, e, what, "tll", k, iv, state_now_us(s));
    if (rc == 0)
        rc = state_step_done(s, st, e, what);
    state_stmt_done(s, id, st);
    return rc;
}

int state_position_get(struct state *s, const char *endpoint, char *buf,
                       size_t cap, struct err *e)
{
    return state_get_text(s, ST_POS_GET,
                          "SELECT position FROM positions WHERE endpoint = ?1",
                          endpoint, buf, cap, e, "position for endpoint");
}

int state_position_set(struct state *s, const char *endpoint,
                       const char *position, struct err *e)
{
    if (position == NULL)
        return err_set(e, -EINVAL, "save position of %s: no position",
                       endpoint != NULL ? endpoint : "(null)");
    return state_upsert(s, ST_POS_SET,
                        "INSERT INTO positions (endpoint, position, updated_at_us)"
                        " VALUES (?1, ?2, ?3) ON CONFLICT (endpoint) DO UPDATE"
                        " SET position = excluded.position,"
                        " updated_at_us = excluded.updated_at_us",
                        endpoint, position, 0, e, "save position");
}

int state_applied_get(struct state *s, const char *target, int64_t *out,
                      struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (target == NULL || out == NULL)
        return err_set(e, -EINVAL, "applied progress: no target");
    rc = state_stmt(s, ST_APPLIED_GET,
                    "SELECT commit_seq FROM applied WHERE target = ?1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "applied progress", "t", target);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = 0;
        } else if (rc == SQLITE_DONE) {
            *out = 0;
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "applied progress of %s", target);
        }
    }
    state_stmt_done(s, ST_APPLIED_GET, st);
    return rc;
}

int state_applied_set(struct state *s, const char *target, int64_t commit_seq,
                      struct err *e)
{
    if (commit_seq < 0)
        return err_set(e, -EINVAL, "applied progress of %s: negative seq %" PRId64,
                       target != NULL ? target : "(null)", commit_seq);
    return state_upsert(s, ST_APPLIED_SET,
                        "INSERT INTO applied (target, commit_seq, updated_at_us)"
                        " VALUES (?1, ?2, ?3) ON CONFLICT (target) DO UPDATE"
                        " SET commit_seq = excluded.commit_seq,"
                        " updated_at_us = excluded.updated_at_us",
                        target, NULL, commit_seq, e, "save applied progress");
}

int state_meta_get(struct state *s, const char *k, char *buf, size_t cap,
                   struct err *e)
{
    return state_get_text(s, ST_META_GET, "SELECT v FROM meta WHERE k = ?1", k,
                          buf, cap, e, "meta value");
}

int state_meta_set(struct state *s, const char *k, const char *v,
                   struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (k == NULL || v == NULL)
        return err_set(e, -EINVAL, "meta: missing name or value");
    rc = state_stmt(s, ST_META_SET,
                    "INSERT INTO meta (k, v) VALUES (?1, ?2)"
                    " ON CONFLICT (k) DO UPDATE SET v = excluded.v", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "save meta", "tt", k, v);
    if (rc == 0)
        rc = state_step_done(s, st, e, "save meta");
    state_stmt_done(s, ST_META_SET, st);
    return rc;
}
