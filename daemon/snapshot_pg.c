/* snapshot_pg.c: the PostgreSQL side of `tandem snapshot` (snapshot.h):
 * a slot with an exported snapshot, key-ordered reads inside it, and bulk
 * writes (COPY into a staging table) under the replication origin. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../connectors/pg/pgconn.h"
#include "../connectors/pg/pgoutput.h"
#include "log.h"
#include "snapshot.h"
#include "strbuf.h"

#define FETCH_ROWS "2000"
#define CURSOR "tandem_snapshot"
#define XMIN_COL "__tandem_xmin"
#define LOCK_WAIT "30s"         /* the copy's longest wait for a locked row */
#define COPY_CHUNK 65536        /* bytes buffered before PQputCopyData */
#define DROP_WAIT_S 10

/* ---- shared helpers ---- */

/* The server's message for the last command, one line, secrets masked. */
static const char *server_msg(PGconn *c, PGresult *r, char *buf, size_t cap)
{
    const char *m = r != NULL ? PQresultErrorMessage(r) : "";

    if (m == NULL || m[0] == '\0')
        return pgconn_error(c, buf, cap);
    snprintf(buf, cap, "%s", m);
    buf[strcspn(buf, "\n")] = '\0';
    log_redact(buf, cap);
    return buf;
}

/* Runs sql expecting COMMAND_OK or TUPLES_OK; the result, or NULL with e
 * naming the endpoint, the table (when known) and the step. */
static PGresult *run(PGconn *c, const char *ep, const char *table,
                     const char *sql, const char *what, struct err *e)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    char msg[512];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    err_set(e, -EIO, "endpoint %s%s%s%s: %s: %s", ep, table ? " (" : "",
            table ? table : "", table ? ")" : "", what, server_msg(c, r, msg, sizeof(msg)));
    PQclear(r);
    return NULL;
}

static int run_ok(PGconn *c, const char *ep, const char *table, const char *sql,
                  const char *what, struct err *e)
{
    PGresult *r = run(c, ep, table, sql, what, e);

    if (r == NULL)
        return -EIO;
    PQclear(r);
    return 0;
}

static PGconn *connect_ep(const struct cfg_endpoint *ep, bool replication,
                          struct err *e)
{
    PGconn *c = pgconn_connect(ep, replication, e);

    if (c == NULL && e != NULL)
        e->code = -EHOSTUNREACH;
    return c;
}

static const char *side_col(const struct cfg_mapping *m, char side, size_t i)
{
    return side == 'a' ? m->fields[i].name : m->fields[i].value;
}

/* ---- the slot ---- */

struct snap_slot {
    const struct cfg_endpoint *ep;
    PGconn *repl;
    char *snapshot;
    uint64_t lsn;
};

int snap_slot_create(const struct cfg_endpoint *ep, struct snap_slot **out,
                     struct err *e)
{
    struct snap_slot *s = calloc(1, sizeof(*s));
    char *slot = NULL, *sql = NULL;
    PGresult *r = NULL;
    int rc = 0;

    *out = NULL;
    if (s == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    s->ep = ep;
    if ((s->repl = connect_ep(ep, true, e)) == NULL) {
        free(s);
        return -EHOSTUNREACH;
    }
    slot = pgconn_quote_ident(s->repl, ep->slot);
    /* PostgreSQL 15 took options in parentheses; older servers the keyword. */
    if (slot == NULL ||
        asprintf(&sql, PQserverVersion(s->repl) >= 150000
                 ? "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export')"
                 : "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput EXPORT_SNAPSHOT",
                 slot) < 0) {
        sql = NULL;
        rc = err_set(e, -ENOMEM, "out of memory");
        goto out;
    }
    r = run(s->repl, ep->name, NULL, sql, "create replication slot", e);
    if (r == NULL) {
        rc = e != NULL && strstr(e->msg, "already exists") ? -EEXIST : -EIO;
        if (e != NULL)
            e->code = rc;
        goto out;
    }
    if (PQntuples(r) != 1 || PQnfields(r) < 3 || PQgetisnull(r, 0, 2) ||
        pgo_lsn_parse(PQgetvalue(r, 0, 1), &s->lsn) != 0 ||
        (s->snapshot = strdup(PQgetvalue(r, 0, 2))) == NULL) {
        rc = err_set(e, -EPROTO, "endpoint %s: slot %s created, but the server sent"
                     " no snapshot name or consistent point", ep->name, ep->slot);
        goto out;
    }
    log_info("snapshot", "created replication slot with an exported snapshot",
             "endpoint", ep->name, "slot", ep->slot, "lsn", PQgetvalue(r, 0, 1),
             "snapshot", s->snapshot);
out:
    PQclear(r);
    free(slot);
    free(sql);
    if (rc != 0) {
        if (rc == -EPROTO)
            snap_slot_drop(s, NULL);    /* created but unusable */
        else
            snap_slot_release(s);
        return rc;
    }
    *out = s;
    return 0;
}

const char *snap_slot_snapshot(const struct snap_slot *s)
{
    return s->snapshot;
}

uint64_t snap_slot_lsn(const struct snap_slot *s)
{
    return s->lsn;
}

void snap_slot_release(struct snap_slot *s)
{
    if (s == NULL)
        return;
    PQfinish(s->repl);
    free(s->snapshot);
    free(s);
}

/* DROP_REPLICATION_SLOT on a replication connection. */
static int drop_slot_on(PGconn *repl, const struct cfg_endpoint *ep, struct err *e)
{
    char *slot = pgconn_quote_ident(repl, ep->slot), *sql = NULL;
    int rc;

    if (slot == NULL || asprintf(&sql, "DROP_REPLICATION_SLOT %s", slot) < 0) {
        free(slot);
        return err_set(e, -ENOMEM, "out of memory");
    }
    rc = run_ok(repl, ep->name, NULL, sql, "drop replication slot", e);
    free(slot);
    free(sql);
    return rc;
}

/* The walsender of a connection that just died may hold the slot a little
 * longer: retry a few seconds, never wait on a slot someone really uses. */
static int drop_retrying(const struct cfg_endpoint *ep, struct err *e)
{
    struct err de = { 0 };
    PGconn *repl = connect_ep(ep, true, e);
    int rc = -EIO;

    if (repl == NULL)
        return -EHOSTUNREACH;
    for (int i = 0; i < DROP_WAIT_S; i++) {
        if ((rc = drop_slot_on(repl, ep, &de)) == 0 || !strstr(de.msg, "is active"))
            break;
        sleep(1);
    }
    PQfinish(repl);
    if (rc != 0)
        err_set(e, rc, "%s", de.msg);
    return rc;
}

int snap_slot_drop_leftover(const struct cfg_endpoint *ep, struct err *e)
{
    int rc = drop_retrying(ep, e);

    if (rc == 0)
        log_info("snapshot", "dropped the slot of an interrupted snapshot",
                 "endpoint", ep->name, "slot", ep->slot);
    return rc;
}

int snap_slot_drop(struct snap_slot *s, struct err *e)
{
    int rc;

    if (s == NULL)
        return 0;
    /* The creating connection released the slot when the command ended,
     * so it can drop it; when that connection broke, a new one retries. */
    if (PQstatus(s->repl) == CONNECTION_OK && drop_slot_on(s->repl, s->ep, NULL) == 0)
        rc = 0;
    else
        rc = drop_retrying(s->ep, e);
    if (rc == 0)
        log_info("snapshot", "dropped the replication slot of the failed snapshot",
                 "endpoint", s->ep->name, "slot", s->ep->slot);
    snap_slot_release(s);
    return rc;
}

/* ---- reading ---- */

struct snap_read {
    const struct cfg_endpoint *ep;
    PGconn *conn;
    bool track_ts;
    /* the scan */
    const struct cfg_mapping *m;
    const struct cfg_side *sd;
    char side;
    bool cursor_open, done;
    PGresult *res;
    int row, nrows;
    json_t *fields;
    struct strbuf key;
};

int snap_read_open(const struct cfg_endpoint *ep, const char *snapshot,
                   struct snap_read **out, struct err *e)
{
    struct snap_read *r = calloc(1, sizeof(*r));
    PGresult *res;
    char *lit = NULL, *sql = NULL;
    int rc = 0;

    *out = NULL;
    if (r == NULL || (r->fields = json_object()) == NULL) {
        free(r);
        return err_set(e, -ENOMEM, "out of memory");
    }
    r->ep = ep;
    strbuf_init(&r->key);
    if ((r->conn = connect_ep(ep, false, e)) == NULL) {
        snap_read_free(r);
        return -EHOSTUNREACH;
    }
    /* Read before BEGIN: SET TRANSACTION SNAPSHOT must come first in it. */
    res = run(r->conn, ep->name, NULL, "select current_setting('track_commit_timestamp')",
              "read settings", e);
    if (res == NULL) {
        snap_read_free(r);
        return -EIO;
    }
    r->track_ts = strcmp(PQgetvalue(res, 0, 0), "on") == 0;
    PQclear(res);
    rc = run_ok(r->conn, ep->name, NULL, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                "begin read", e);
    if (rc == 0 && snapshot != NULL) {
        lit = PQescapeLiteral(r->conn, snapshot, strlen(snapshot));
        if (lit == NULL || asprintf(&sql, "SET TRANSACTION SNAPSHOT %s", lit) < 0) {
            sql = NULL;
            rc = err_set(e, -ENOMEM, "out of memory");
        } else {
            rc = run_ok(r->conn, ep->name, NULL, sql, "import the slot's snapshot", e);
        }
    }
    PQfreemem(lit);
    free(sql);
    if (rc != 0) {
        snap_read_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void read_end_scan(struct snap_read *r)
{
    PQclear(r->res);
    r->res = NULL;
    r->row = r->nrows = 0;
    if (r->cursor_open)
        PQclear(PQexec(r->conn, "CLOSE " CURSOR));
    r->cursor_open = false;
}

/* The planner's row count; a table never analyzed is counted (inside the
 * snapshot) when small enough for that to be quick, else unknown. */
static int estimate_rows(struct snap_read *r, const char *tbl, int64_t *estimate,
                         struct err *e)
{
    const char *v[1] = { tbl };
    PGresult *res = pgconn_query(r->conn,
        "select case when c.reltuples >= 0 then c.reltuples::int8"
        " when pg_relation_size(c.oid) < 256 * 1024 * 1024 then -2 else -1 end"
        " from pg_class c where c.oid = to_regclass($1)", 1, v, e);
    char *sql = NULL;

    if (res == NULL)
        return -EIO;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return err_set(e, -ENOENT, "endpoint %s: table %s does not exist (tandem never"
                       " creates user tables: create it)", r->ep->name, r->sd->table);
    }
    *estimate = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (*estimate != -2)
        return 0;
    *estimate = -1;
    if (asprintf(&sql, "select count(*) from %s", tbl) < 0)
        return err_set(e, -ENOMEM, "out of memory");
    res = run(r->conn, r->ep->name, r->sd->table, sql, "count rows", e);
    free(sql);
    if (res == NULL)
        return -EIO;
    *estimate = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

static void add_ident(PGconn *c, struct strbuf *b, const char *name)
{
    char *q = PQescapeIdentifier(c, name, strlen(name));

    if (q == NULL) {
        b->failed = true;
        return;
    }
    strbuf_adds(b, q);
    PQfreemem(q);
}

/* SELECT key texts, version, xmin, mapped columns, in key order. */
static void build_select(struct snap_read *r, const char *tbl, struct strbuf *b)
{
    const struct cfg_mapping *m = r->m;
    char num[24];

    strbuf_adds(b, "DECLARE " CURSOR " NO SCROLL CURSOR FOR SELECT ");
    for (size_t i = 0; i < r->sd->nkey; i++) {
        strbuf_adds(b, "concat(");
        add_ident(r->conn, b, r->sd->key[i]);
        strbuf_adds(b, ") COLLATE \"C\", ");
    }
    strbuf_adds(b, r->track_ts
        ? "(extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000000)::int8"
        : "NULL::int8");
    strbuf_adds(b, ", xmin::text");
    for (size_t i = 0; i < m->nfields; i++) {
        strbuf_adds(b, ", ");
        add_ident(r->conn, b, side_col(m, r->side, i));
    }
    strbuf_adds(b, " FROM ");
    strbuf_adds(b, tbl);
    if (m->canary_key != NULL) {
        /* Canary records are the daemon's own: never copied. */
        char *lit = PQescapeLiteral(r->conn, m->canary_key, strlen(m->canary_key));

        if (lit == NULL) {
            b->failed = true;
            return;
        }
        strbuf_adds(b, " WHERE concat(");
        add_ident(r->conn, b, r->sd->key[0]);
        strbuf_adds(b, ") <> ");
        strbuf_adds(b, lit);
        PQfreemem(lit);
    }
    strbuf_adds(b, " ORDER BY ");
    for (size_t i = 0; i < r->sd->nkey; i++) {
        snprintf(num, sizeof(num), "%s%zu", i ? ", " : "", i + 1);
        strbuf_adds(b, num);
    }
}

int snap_read_scan(struct snap_read *r, const struct cfg_mapping *m, char side,
                   int64_t *estimate, struct err *e)
{
    const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;
    char *tbl;
    struct strbuf b;
    int rc;

    read_end_scan(r);
    if (sd->nkey == 0 || sd->nkey > REC_KEY_MAX)
        return err_set(e, -EINVAL, "mapping %s: side %c needs 1..%d key columns",
                       m->name, side, REC_KEY_MAX);
    r->m = m;
    r->sd = sd;
    r->side = side;
    r->done = false;
    tbl = pgconn_quote_table(r->conn, sd->schema, sd->relname);
    if (tbl == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    if ((rc = estimate_rows(r, tbl, estimate, e)) != 0) {
        free(tbl);
        return rc;
    }
    strbuf_init(&b);
    build_select(r, tbl, &b);
    free(tbl);
    if (strbuf_cstr(&b) == NULL) {
        strbuf_free(&b);
        return err_set(e, -ENOMEM, "out of memory");
    }
    rc = run_ok(r->conn, r->ep->name, sd->table, b.buf, "read", e);
    strbuf_free(&b);
    if (rc == 0)
        r->cursor_open = true;
    return rc;
}

static int fetch(struct snap_read *r, struct err *e)
{
    PQclear(r->res);
    r->res = run(r->conn, r->ep->name, r->sd->table, "FETCH FORWARD " FETCH_ROWS
                 " FROM " CURSOR, "fetch", e);
    r->row = 0;
    r->nrows = r->res != NULL ? PQntuples(r->res) : 0;
    if (r->res == NULL)
        return -EIO;
    if (r->nrows < atoi(FETCH_ROWS))
        r->done = true;
    return 0;
}

int snap_read_next(struct snap_read *r, struct snap_row *out, struct err *e)
{
    const struct cfg_mapping *m = r->m;
    size_t nkey;
    int base;

    if (!r->cursor_open)
        return err_set(e, -EINVAL, "snapshot read: next without scan");
    while (r->res == NULL || r->row >= r->nrows) {
        if (r->done)
            return 0;
        if (fetch(r, e) != 0)
            return -EIO;
    }
    nkey = r->sd->nkey;
    base = (int)nkey + 2;
    memset(out, 0, sizeof(*out));
    out->rec.nkey = nkey;
    strbuf_reset(&r->key);
    strbuf_addc(&r->key, '[');
    for (size_t i = 0; i < nkey; i++) {
        out->rec.keyv[i] = PQgetvalue(r->res, r->row, (int)i);
        if (i > 0)
            strbuf_addc(&r->key, ',');
        strbuf_add_json_string(&r->key, out->rec.keyv[i],
                               (size_t)PQgetlength(r->res, r->row, (int)i));
    }
    strbuf_addc(&r->key, ']');
    if ((out->rec.key = strbuf_cstr(&r->key)) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    out->rec.version_us = PQgetisnull(r->res, r->row, (int)nkey) ? 0
        : strtoll(PQgetvalue(r->res, r->row, (int)nkey), NULL, 10);
    out->rec.bucket = -1;
    out->xmin = PQgetvalue(r->res, r->row, (int)nkey + 1);
    json_object_clear(r->fields);
    for (size_t i = 0; i < m->nfields; i++) {
        json_t *v = PQgetisnull(r->res, r->row, base + (int)i) ? json_null()
            : json_stringn(PQgetvalue(r->res, r->row, base + (int)i),
                           (size_t)PQgetlength(r->res, r->row, base + (int)i));

        if (v == NULL)
            return err_set(e, -EPROTO, "endpoint %s (%s): column %s of key %s is not"
                           " valid UTF-8", r->ep->name, r->sd->table,
                           side_col(m, r->side, i), out->rec.key);
        json_object_set_new(r->fields, m->fields[i].name, v);
    }
    out->rec.fields = r->fields;
    r->row++;
    return 1;
}

void snap_read_free(struct snap_read *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    if (r->conn != NULL)
        PQfinish(r->conn);      /* ends the read-only transaction */
    json_decref(r->fields);
    strbuf_free(&r->key);
    free(r);
}

/* ---- writing ---- */

struct snap_write {
    const struct cfg_endpoint *ep;
    PGconn *conn;
    int ntables;
    /* the table being staged */
    const struct cfg_mapping *m;
    const struct cfg_side *sd;
    char side;
    bool conditional, copying;
    char stage[32];
    int64_t staged;
    struct strbuf line;
};

int snap_write_open(const struct cfg_endpoint *ep, struct snap_write **out,
                    struct err *e)
{
    struct snap_write *w = calloc(1, sizeof(*w));
    const char *v[1] = { ep->origin };
    PGresult *r;
    int rc = 0;

    *out = NULL;
    if (w == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    w->ep = ep;
    strbuf_init(&w->line);
    if ((w->conn = connect_ep(ep, false, e)) == NULL) {
        snap_write_free(w);
        return -EHOSTUNREACH;
    }
    r = PQexecParams(w->conn, "select pg_replication_origin_session_setup($1)", 1,
                     NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];

        server_msg(w->conn, r, msg, sizeof(msg));
        rc = err_set(e, strstr(msg, "already active") ? -EBUSY : -EIO,
                     "endpoint %s: cannot write under replication origin %s: %s%s",
                     ep->name, ep->origin, msg, strstr(msg, "already active")
                     ? " (is tandem run still running? stop it first)" : "");
    }
    PQclear(r);
    if (rc == 0 && ep->apply_as_replica)
        rc = run_ok(w->conn, ep->name, NULL, "SET session_replication_role = replica",
                    "apply as replica", e);
    if (rc == 0)
        rc = run_ok(w->conn, ep->name, NULL, "BEGIN", "begin write", e);
    if (rc != 0) {
        snap_write_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* "c1, c2, ..." of the side's mapped columns; prefix each with p. when
 * p is not NULL; keys only / non-keys only when asked. */
enum col_pick { COLS_ALL, COLS_KEYS, COLS_VALUES };

static bool is_key(const struct cfg_side *sd, const char *col)
{
    for (size_t k = 0; k < sd->nkey; k++)
        if (strcmp(sd->key[k], col) == 0)
            return true;
    return false;
}

static void add_cols(struct snap_write *w, struct strbuf *b, const char *p,
                     enum col_pick pick)
{
    bool first = true;

    for (size_t i = 0; i < w->m->nfields; i++) {
        const char *c = side_col(w->m, w->side, i);
        bool key = is_key(w->sd, c);

        if ((pick == COLS_KEYS && !key) || (pick == COLS_VALUES && key))
            continue;
        if (!first)
            strbuf_adds(b, ", ");
        first = false;
        if (p != NULL) {
            strbuf_adds(b, p);
            strbuf_addc(b, '.');
        }
        add_ident(w->conn, b, c);
    }
}

/* The staging table: the target's mapped columns with their types, and
 * the row version read from the target. */
static int make_stage(struct snap_write *w, const char *tbl, struct err *e)
{
    struct strbuf b;
    PGresult *r;
    int rc;

    strbuf_init(&b);
    strbuf_adds(&b, "CREATE TEMP TABLE ");
    strbuf_adds(&b, w->stage);
    strbuf_adds(&b, " ON COMMIT DROP AS SELECT ");
    add_cols(w, &b, NULL, COLS_ALL);
    strbuf_adds(&b, " FROM ");
    strbuf_adds(&b, tbl);
    strbuf_adds(&b, " WITH NO DATA; ALTER TABLE ");
    strbuf_adds(&b, w->stage);
    strbuf_adds(&b, " ADD COLUMN " XMIN_COL " xid");
    if (strbuf_cstr(&b) == NULL) {
        strbuf_free(&b);
        return err_set(e, -ENOMEM, "out of memory");
    }
    rc = run_ok(w->conn, w->ep->name, w->sd->table, b.buf, "create staging table", e);
    strbuf_reset(&b);
    strbuf_adds(&b, "COPY ");
    strbuf_adds(&b, w->stage);
    strbuf_adds(&b, " (");
    add_cols(w, &b, NULL, COLS_ALL);
    strbuf_adds(&b, ", " XMIN_COL ") FROM STDIN");
    if (rc == 0 && strbuf_cstr(&b) == NULL)
        rc = err_set(e, -ENOMEM, "out of memory");
    if (rc == 0) {
        r = PQexec(w->conn, b.buf);
        if (PQresultStatus(r) != PGRES_COPY_IN) {
            char msg[512];

            rc = err_set(e, -EIO, "endpoint %s (%s): start copy: %s", w->ep->name,
                         w->sd->table, server_msg(w->conn, r, msg, sizeof(msg)));
        }
        PQclear(r);
    }
    strbuf_free(&b);
    return rc;
}

int snap_write_table(struct snap_write *w, const struct cfg_mapping *m,
                     char side, bool conditional, struct err *e)
{
    char *tbl;
    int rc;

    if (w->copying)
        return err_set(e, -EINVAL, "snapshot write: a table is still being staged");
    w->m = m;
    w->sd = side == 'a' ? &m->a : &m->b;
    w->side = side;
    w->conditional = conditional;
    w->staged = 0;
    snprintf(w->stage, sizeof(w->stage), "tandem_snap_%d", ++w->ntables);
    tbl = pgconn_quote_table(w->conn, w->sd->schema, w->sd->relname);
    if (tbl == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    rc = make_stage(w, tbl, e);
    free(tbl);
    if (rc == 0)
        w->copying = true;
    return rc;
}

/* COPY text format: backslash escapes, \N for null. */
static void add_copy_value(struct strbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\': strbuf_adds(b, "\\\\"); break;
        case '\t': strbuf_adds(b, "\\t"); break;
        case '\n': strbuf_adds(b, "\\n"); break;
        case '\r': strbuf_adds(b, "\\r"); break;
        default: strbuf_addc(b, *s); break;
        }
    }
}

static int send_copy(struct snap_write *w, struct err *e)
{
    char msg[512];

    if (w->line.failed)
        return err_set(e, -ENOMEM, "out of memory");
    if (w->line.len > 0 && PQputCopyData(w->conn, w->line.buf, (int)w->line.len) != 1)
        return err_set(e, -EIO, "endpoint %s (%s): copy: %s", w->ep->name, w->sd->table,
                       pgconn_error(w->conn, msg, sizeof(msg)));
    strbuf_reset(&w->line);
    return 0;
}

int snap_write_row(struct snap_write *w, const json_t *fields, const char *xmin,
                   struct err *e)
{
    if (!w->copying)
        return err_set(e, -EINVAL, "snapshot write: row without a table");
    for (size_t i = 0; i < w->m->nfields; i++) {
        const json_t *v = json_object_get(fields, w->m->fields[i].name);

        if (v == NULL || json_is_null(v)) {
            strbuf_adds(&w->line, "\\N");
        } else if (json_is_string(v)) {
            add_copy_value(&w->line, json_string_value(v));
        } else {
            char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

            if (t == NULL)
                return err_set(e, -ENOMEM, "out of memory");
            add_copy_value(&w->line, t);
            free(t);
        }
        strbuf_addc(&w->line, '\t');
    }
    strbuf_adds(&w->line, xmin != NULL ? xmin : "\\N");
    strbuf_addc(&w->line, '\n');
    w->staged++;
    return w->line.len >= COPY_CHUNK ? send_copy(w, e) : 0;
}

static int end_copy(struct snap_write *w, struct err *e)
{
    PGresult *r, *extra;
    char msg[512];
    int rc = 0;

    w->copying = false;
    if ((rc = send_copy(w, e)) != 0)
        return rc;
    if (PQputCopyEnd(w->conn, NULL) != 1)
        return err_set(e, -EIO, "endpoint %s (%s): end copy: %s", w->ep->name,
                       w->sd->table, pgconn_error(w->conn, msg, sizeof(msg)));
    r = PQgetResult(w->conn);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = err_set(e, -EIO, "endpoint %s (%s): copy: %s", w->ep->name, w->sd->table,
                     server_msg(w->conn, r, msg, sizeof(msg)));
    PQclear(r);
    while ((extra = PQgetResult(w->conn)) != NULL)
        PQclear(extra);
    return rc;
}

/* " t.k1 = s.k1 AND ..." */
static void add_key_join(struct snap_write *w, struct strbuf *b)
{
    for (size_t k = 0; k < w->sd->nkey; k++) {
        strbuf_adds(b, k ? " AND t." : " t.");
        add_ident(w->conn, b, w->sd->key[k]);
        strbuf_adds(b, " = s.");
        add_ident(w->conn, b, w->sd->key[k]);
    }
}

/* INSERT of the staged rows: new keys only (conditional), or upserts. */
static void build_insert(struct snap_write *w, const char *tbl, struct strbuf *b)
{
    bool values = w->m->nfields > w->sd->nkey;

    strbuf_adds(b, "INSERT INTO ");
    strbuf_adds(b, tbl);
    strbuf_adds(b, " (");
    add_cols(w, b, NULL, COLS_ALL);
    strbuf_adds(b, ") SELECT ");
    add_cols(w, b, NULL, COLS_ALL);
    strbuf_adds(b, " FROM ");
    strbuf_adds(b, w->stage);
    if (w->conditional)
        strbuf_adds(b, " WHERE " XMIN_COL " IS NULL");
    strbuf_adds(b, " ON CONFLICT (");
    add_cols(w, b, NULL, COLS_KEYS);
    if (w->conditional || !values) {
        strbuf_adds(b, ") DO NOTHING");
        return;
    }
    strbuf_adds(b, ") DO UPDATE SET (");
    add_cols(w, b, NULL, COLS_VALUES);
    strbuf_adds(b, ") = ROW(");
    add_cols(w, b, "EXCLUDED", COLS_VALUES);
    strbuf_addc(b, ')');
}

/* UPDATE of rows still at the version read (conditional mode only). A
 * row locked by another transaction is most often being changed: its
 * stream brings the change, so the first pass skips it rather than waits
 * (wait false). But a lock alone (a foreign key check, a transaction that
 * rolls back) changes nothing and no stream event follows: the second
 * pass waits for the rows still at the version read (wait true). */
static void build_update(struct snap_write *w, const char *tbl, struct strbuf *b, bool wait)
{
    strbuf_adds(b, "WITH l AS (SELECT t.ctid AS tandem_tid, s.* FROM ");
    strbuf_adds(b, tbl);
    strbuf_adds(b, " AS t JOIN ");
    strbuf_adds(b, w->stage);
    strbuf_adds(b, " AS s ON");
    add_key_join(w, b);
    strbuf_adds(b, " WHERE s." XMIN_COL " IS NOT NULL AND t.xmin = s." XMIN_COL
                " FOR UPDATE OF t");
    strbuf_adds(b, wait ? ") UPDATE " : " SKIP LOCKED) UPDATE ");
    strbuf_adds(b, tbl);
    strbuf_adds(b, " AS t SET (");
    add_cols(w, b, NULL, COLS_VALUES);
    strbuf_adds(b, ") = ROW(");
    add_cols(w, b, "l", COLS_VALUES);
    strbuf_adds(b, ") FROM l WHERE t.ctid = l.tandem_tid");
}

static int apply_stmt(struct snap_write *w, struct strbuf *b, const char *what,
                      int64_t *count, struct err *e)
{
    PGresult *r;

    if (strbuf_cstr(b) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    r = run(w->conn, w->ep->name, w->sd->table, b->buf, what, e);
    if (r == NULL) {
        if (e != NULL && strstr(e->msg, "no unique or exclusion constraint"))
            return err_set(e, -EINVAL, "endpoint %s: table %s needs a primary key or"
                           " unique index on the mapping's key columns", w->ep->name,
                           w->sd->table);
        return -EIO;
    }
    *count += strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

int snap_write_apply(struct snap_write *w, struct snap_write_stats *st,
                     struct err *e)
{
    char *tbl;
    struct strbuf b;
    int64_t ins = 0, upd = 0;
    int rc;

    if (!w->copying)
        return 0;
    if ((rc = end_copy(w, e)) != 0)
        return rc;
    if ((tbl = pgconn_quote_table(w->conn, w->sd->schema, w->sd->relname)) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    strbuf_init(&b);
    build_insert(w, tbl, &b);
    rc = apply_stmt(w, &b, "insert", &ins, e);
    if (rc == 0 && w->conditional && w->m->nfields > w->sd->nkey) {
        strbuf_reset(&b);
        build_update(w, tbl, &b, false);
        rc = apply_stmt(w, &b, "update", &upd, e);
        /* Rows the pass skipped: those changed since the read are left
         * alone again (their version moved); those only locked are waited
         * for, at most LOCK_WAIT, then the copy fails and can be rerun. */
        if (rc == 0 && w->staged - ins - upd > 0) {
            strbuf_reset(&b);
            build_update(w, tbl, &b, true);
            rc = run_ok(w->conn, w->ep->name, w->sd->table,
                        "SET LOCAL lock_timeout = '" LOCK_WAIT "'", "lock timeout", e);
            if (rc == 0)
                rc = apply_stmt(w, &b, "update of rows locked by others", &upd, e);
        }
    }
    strbuf_free(&b);
    free(tbl);
    if (rc != 0)
        return rc;
    st->staged += w->staged;
    st->inserted += ins;
    st->updated += upd;
    /* Upserts touch every row; conditional rows left alone are the ones
     * the table's own stream delivers in their newer state. */
    if (w->conditional)
        st->skipped += w->staged - ins - upd;
    return 0;
}

int snap_write_commit(struct snap_write *w, struct err *e)
{
    return run_ok(w->conn, w->ep->name, NULL, "COMMIT", "commit", e);
}

void snap_write_free(struct snap_write *w)
{
    if (w == NULL)
        return;
    if (w->conn != NULL)
        PQfinish(w->conn);      /* an open transaction rolls back */
    strbuf_free(&w->line);
    free(w);
}
