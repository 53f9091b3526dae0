/* reconcile_pg.c: one postgres side of a mapping as a record stream
 * (reconcile.h): bucket summaries in one SQL aggregate, and key-ordered
 * records through a server-side cursor fetched 1000 rows at a time, the
 * next batch requested before the current one is consumed. */
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../connectors/pg/pgconn.h"
#include "reconcile.h"
#include "strbuf.h"

#define FETCH_ROWS 1000
#define FETCH_ROWS_STR "1000"
#define CURSOR "tandem_reconcile"

struct pgs {
    PGconn *conn;
    const struct cfg_mapping *m;
    const struct cfg_side *sd;
    char side;
    bool track_ts;
    bool trim_scale;            /* server has trim_scale (13+) */
    bool hash_ok;               /* server has hashtextextended (11+) */
    char *tbl;                  /* quoted schema.table */
    size_t nkey, ncols;
    char *kcols[REC_KEY_MAX];   /* quoted key columns */
    char **cols;                /* quoted mapped columns, m->fields order */
    bool *numeric;
    char *canary;               /* quoted literal, or NULL */
    /* scan */
    bool in_txn, cursor_open, fetch_pending, done;
    PGresult *res;
    int row, nrows;
    json_t *fields;
    struct strbuf key;
    char msg[512];
};

static int fail(struct pgs *p, struct err *e, int code, const char *what)
{
    char buf[400];

    return err_set(e, code, "endpoint %s (%s): %s: %s", p->sd->endpoint,
                   p->sd->table, what, pgconn_error(p->conn, buf, sizeof(buf)));
}

/* Runs sql, expecting COMMAND_OK or TUPLES_OK; returns the result or NULL. */
static PGresult *run(struct pgs *p, const char *sql, struct err *e,
                     const char *what)
{
    PGresult *r = PQexec(p->conn, sql);
    ExecStatusType st = PQresultStatus(r);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    if (r != NULL) {
        char buf[400];

        snprintf(buf, sizeof(buf), "%s", PQresultErrorMessage(r));
        buf[strcspn(buf, "\n")] = '\0';
        err_set(e, -EIO, "endpoint %s (%s): %s: %s", p->sd->endpoint,
                p->sd->table, what, buf);
        PQclear(r);
        return NULL;
    }
    fail(p, e, -EIO, what);
    return NULL;
}

static int run_ok(struct pgs *p, const char *sql, struct err *e, const char *what)
{
    PGresult *r = run(p, sql, e, what);

    if (r == NULL)
        return -EIO;
    PQclear(r);
    return 0;
}

static const char *side_col(const struct cfg_mapping *m, char side, size_t i)
{
    return side == 'a' ? m->fields[i].name : m->fields[i].value;
}

/* ---- SQL pieces ---- */

/* concat_ws(chr(31), k1, k2...): output texts of the key columns. */
static void add_keytext(struct pgs *p, struct strbuf *b)
{
    strbuf_adds(b, "concat_ws(chr(31)");
    for (size_t i = 0; i < p->nkey; i++) {
        strbuf_adds(b, ", ");
        strbuf_adds(b, p->kcols[i]);
    }
    strbuf_addc(b, ')');
}

static void add_bucket(struct pgs *p, struct strbuf *b, int nbuckets)
{
    char n[24];

    strbuf_adds(b, "((hashtext(");
    add_keytext(p, b);
    snprintf(n, sizeof(n), "%d", nbuckets);
    strbuf_adds(b, ") & 2147483647) % ");
    strbuf_adds(b, n);
    strbuf_addc(b, ')');
}

static void add_ts(struct pgs *p, struct strbuf *b)
{
    strbuf_adds(b, p->track_ts
        ? "(extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000000)::int8"
        : "NULL::int8");
}

static void add_where(struct pgs *p, struct strbuf *b)
{
    strbuf_adds(b, " FROM ");
    strbuf_adds(b, p->tbl);
    strbuf_adds(b, " WHERE true");
    if (p->canary != NULL) {
        /* The canary key is text; compare the column's output text. */
        strbuf_adds(b, " AND concat(");
        strbuf_adds(b, p->kcols[0]);
        strbuf_adds(b, ") <> ");
        strbuf_adds(b, p->canary);
    }
}

/* ---- ops ---- */

static void pgs_end(void *impl);

static int pgs_begin(void *impl, struct err *e)
{
    struct pgs *p = impl;

    pgs_end(p);
    if (run_ok(p, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", e,
               "begin read") != 0)
        return -EIO;
    p->in_txn = true;
    return 0;
}

static void pgs_end(void *impl)
{
    struct pgs *p = impl;
    PGresult *r;

    if (p->fetch_pending) {
        while ((r = PQgetResult(p->conn)) != NULL)
            PQclear(r);
        p->fetch_pending = false;
    }
    PQclear(p->res);
    p->res = NULL;
    p->cursor_open = false;
    if (p->in_txn) {
        PQclear(PQexec(p->conn, "COMMIT"));
        p->in_txn = false;
    }
}

/* reltuples, or the size on disk at one row per 48 bytes when larger (a
 * table never analyzed): too many buckets cost little, too few cost
 * longer row scans. */
static int pgs_estimate(void *impl, int64_t *rows, struct err *e)
{
    struct pgs *p = impl;
    const char *v[1] = { p->tbl };
    PGresult *r = pgconn_query(p->conn, "select greatest(reltuples::int8,"
                               " pg_relation_size(oid) / 48) from pg_class"
                               " where oid = $1::regclass", 1, v, e);

    if (r == NULL)
        return -EIO;
    *rows = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return 0;
}

static int pgs_summarize(void *impl, int nbuckets, struct rec_bucket *out,
                         struct err *e)
{
    struct pgs *p = impl;
    struct strbuf b;
    PGresult *r;
    int rc = 0;

    strbuf_init(&b);
    strbuf_adds(&b, "SELECT b, count(*), sum(h), max(ts) FROM (SELECT ");
    add_bucket(p, &b, nbuckets);
    strbuf_adds(&b, " AS b, hashtextextended(row(");
    for (size_t i = 0; i < p->nkey; i++) {
        strbuf_adds(&b, p->kcols[i]);
        strbuf_adds(&b, ", ");
    }
    for (size_t i = 0; i < p->ncols; i++) {
        if (i > 0)
            strbuf_adds(&b, ", ");
        if (p->numeric[i] && p->trim_scale) {
            strbuf_adds(&b, "trim_scale(");
            strbuf_adds(&b, p->cols[i]);
            strbuf_addc(&b, ')');
        } else {
            strbuf_adds(&b, p->cols[i]);
        }
    }
    strbuf_adds(&b, ")::text, 0) AS h, ");
    add_ts(p, &b);
    strbuf_adds(&b, " AS ts");
    add_where(p, &b);
    strbuf_adds(&b, ") s GROUP BY b");
    if (b.failed) {
        strbuf_free(&b);
        return err_set(e, -ENOMEM, "out of memory");
    }
    r = run(p, b.buf, e, "bucket summary");
    strbuf_free(&b);
    if (r == NULL)
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        long bk = strtol(PQgetvalue(r, i, 0), NULL, 10);

        if (bk < 0 || bk >= nbuckets) {
            rc = err_set(e, -EPROTO, "endpoint %s: bucket %ld out of range",
                         p->sd->endpoint, bk);
            break;
        }
        out[bk].count = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        snprintf(out[bk].hash, sizeof(out[bk].hash), "%s", PQgetvalue(r, i, 2));
        out[bk].newest_us = PQgetisnull(r, i, 3) ? 0
                          : strtoll(PQgetvalue(r, i, 3), NULL, 10);
    }
    PQclear(r);
    return rc;
}

static int send_fetch(struct pgs *p, struct err *e)
{
    if (PQsendQuery(p->conn, "FETCH FORWARD " FETCH_ROWS_STR " FROM " CURSOR) != 1)
        return fail(p, e, -EIO, "fetch");
    p->fetch_pending = true;
    return 0;
}

static int pgs_scan(void *impl, int nbuckets, const int *buckets, size_t n,
                    struct err *e)
{
    struct pgs *p = impl;
    struct strbuf b;
    char num[24];
    int rc;

    if (p->cursor_open || p->fetch_pending || !p->in_txn) {
        if ((rc = pgs_begin(p, e)) != 0)
            return rc;
    }
    strbuf_init(&b);
    strbuf_adds(&b, "DECLARE " CURSOR " NO SCROLL CURSOR FOR SELECT ");
    for (size_t i = 0; i < p->nkey; i++) {
        strbuf_adds(&b, "concat(");
        strbuf_adds(&b, p->kcols[i]);
        strbuf_adds(&b, ") COLLATE \"C\", ");
    }
    add_ts(p, &b);
    strbuf_adds(&b, ", ");
    if (nbuckets > 0)
        add_bucket(p, &b, nbuckets);
    else
        strbuf_adds(&b, "-1");
    for (size_t i = 0; i < p->ncols; i++) {
        strbuf_adds(&b, ", ");
        strbuf_adds(&b, p->cols[i]);
    }
    add_where(p, &b);
    if (buckets != NULL && nbuckets > 0) {
        strbuf_adds(&b, " AND ");
        add_bucket(p, &b, nbuckets);
        strbuf_adds(&b, " = ANY('{");
        for (size_t i = 0; i < n; i++) {
            snprintf(num, sizeof(num), "%s%d", i ? "," : "", buckets[i]);
            strbuf_adds(&b, num);
        }
        strbuf_adds(&b, "}'::int4[])");
    }
    strbuf_adds(&b, " ORDER BY ");
    for (size_t i = 0; i < p->nkey; i++) {
        snprintf(num, sizeof(num), "%s%zu", i ? ", " : "", i + 1);
        strbuf_adds(&b, num);
    }
    if (b.failed) {
        strbuf_free(&b);
        return err_set(e, -ENOMEM, "out of memory");
    }
    rc = run_ok(p, b.buf, e, "declare cursor");
    strbuf_free(&b);
    if (rc != 0)
        return rc;
    p->cursor_open = true;
    p->done = false;
    p->row = p->nrows = 0;
    return send_fetch(p, e);
}

/* Takes the pending FETCH's rows and requests the next batch. */
static int take_batch(struct pgs *p, struct err *e)
{
    PGresult *r, *extra;

    PQclear(p->res);
    p->res = NULL;
    p->row = p->nrows = 0;
    if (!p->fetch_pending) {
        p->done = true;
        return 0;
    }
    r = PQgetResult(p->conn);
    p->fetch_pending = false;
    while ((extra = PQgetResult(p->conn)) != NULL)
        PQclear(extra);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char buf[400];

        snprintf(buf, sizeof(buf), "%s", r ? PQresultErrorMessage(r)
                                           : PQerrorMessage(p->conn));
        buf[strcspn(buf, "\n")] = '\0';
        PQclear(r);
        return err_set(e, -EIO, "endpoint %s (%s): fetch: %s", p->sd->endpoint,
                       p->sd->table, buf);
    }
    p->res = r;
    p->nrows = PQntuples(r);
    if (p->nrows < FETCH_ROWS)
        p->done = true;         /* the cursor is exhausted */
    else if (send_fetch(p, e) != 0)
        return -EIO;
    return 0;
}

static json_t *text_value(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return json_null();
    return json_stringn(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

static int pgs_next(void *impl, struct rec_record *out, struct err *e)
{
    struct pgs *p = impl;
    int base = (int)p->nkey + 2;

    if (!p->cursor_open)
        return err_set(e, -EINVAL, "record stream: next without scan");
    while (p->res == NULL || p->row >= p->nrows) {
        if (p->done && !p->fetch_pending) {
            PQclear(p->res);
            p->res = NULL;
            return 0;
        }
        if (take_batch(p, e) != 0)
            return -EIO;
        if (p->nrows == 0 && p->done)
            return 0;
    }
    memset(out, 0, sizeof(*out));
    out->nkey = p->nkey;
    strbuf_reset(&p->key);
    strbuf_addc(&p->key, '[');
    for (size_t i = 0; i < p->nkey; i++) {
        out->keyv[i] = PQgetvalue(p->res, p->row, (int)i);
        if (i > 0)
            strbuf_addc(&p->key, ',');
        strbuf_add_json_string(&p->key, out->keyv[i],
                               (size_t)PQgetlength(p->res, p->row, (int)i));
    }
    strbuf_addc(&p->key, ']');
    out->key = strbuf_cstr(&p->key);
    if (out->key == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    out->version_us = PQgetisnull(p->res, p->row, (int)p->nkey) ? 0
        : strtoll(PQgetvalue(p->res, p->row, (int)p->nkey), NULL, 10);
    out->bucket = (int)strtol(PQgetvalue(p->res, p->row, (int)p->nkey + 1), NULL, 10);
    json_object_clear(p->fields);
    for (size_t i = 0; i < p->ncols; i++) {
        json_t *v = text_value(p->res, p->row, base + (int)i);

        if (v == NULL)
            return err_set(e, -EPROTO, "endpoint %s (%s): column %s of key %s"
                           " is not valid UTF-8", p->sd->endpoint, p->sd->table,
                           side_col(p->m, p->side, i), out->key);
        json_object_set_new(p->fields, p->m->fields[i].name, v);
    }
    out->fields = p->fields;
    p->row++;
    return 1;
}

static int pgs_position(void *impl, uint64_t *lsn, struct err *e)
{
    struct pgs *p = impl;
    unsigned hi, lo;
    PGresult *r;

    /* Not bound to the read's snapshot: the position now. */
    r = PQexec(p->conn, "select pg_current_wal_lsn()::text");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        sscanf(PQgetvalue(r, 0, 0), "%X/%X", &hi, &lo) != 2) {
        PQclear(r);
        return fail(p, e, -EIO, "read the WAL position");
    }
    *lsn = ((uint64_t)hi << 32) | lo;
    PQclear(r);
    return 0;
}

static void pgs_free(void *impl)
{
    struct pgs *p = impl;

    if (p == NULL)
        return;
    PQclear(p->res);
    if (p->conn != NULL)
        PQfinish(p->conn);
    free(p->tbl);
    for (size_t i = 0; i < p->nkey; i++)
        free(p->kcols[i]);
    for (size_t i = 0; p->cols != NULL && i < p->ncols; i++)
        free(p->cols[i]);
    free(p->cols);
    free(p->numeric);
    free(p->canary);
    json_decref(p->fields);
    strbuf_free(&p->key);
    free(p);
}

static const struct rec_stream_ops pg_ops = {
    .bucket_method = REC_BUCKET_METHOD,
    .begin = pgs_begin,
    .estimate = pgs_estimate,
    .summarize = pgs_summarize,
    .scan = pgs_scan,
    .next = pgs_next,
    .end = pgs_end,
    .position = pgs_position,
    .free = pgs_free,
};

/* Before PostgreSQL 11 (no hashtextextended): every row is compared. */
static const struct rec_stream_ops pg_ops_nobuckets = {
    .bucket_method = NULL,
    .begin = pgs_begin,
    .scan = pgs_scan,
    .next = pgs_next,
    .end = pgs_end,
    .position = pgs_position,
    .free = pgs_free,
};

static char *quote_ident(PGconn *c, const char *s)
{
    char *q = PQescapeIdentifier(c, s, strlen(s)), *out;

    if (q == NULL)
        return NULL;
    out = strdup(q);
    PQfreemem(q);
    return out;
}

/* Reads the session settings and the mapped columns' types. */
static int inspect(struct pgs *p, struct err *e)
{
    struct strbuf names;
    const char *v[2];
    PGresult *r;
    int rc = 0;

    r = run(p, "select current_setting('track_commit_timestamp'),"
               " current_setting('server_version_num')::int", e, "read settings");
    if (r == NULL)
        return -EIO;
    p->track_ts = strcmp(PQgetvalue(r, 0, 0), "on") == 0;
    p->trim_scale = atoi(PQgetvalue(r, 0, 1)) >= 130000;
    p->hash_ok = atoi(PQgetvalue(r, 0, 1)) >= 110000;
    PQclear(r);
    strbuf_init(&names);
    strbuf_addc(&names, '{');
    for (size_t i = 0; i < p->ncols; i++) {
        if (i > 0)
            strbuf_addc(&names, ',');
        strbuf_add_json_string(&names, side_col(p->m, p->side, i),
                               strlen(side_col(p->m, p->side, i)));
    }
    for (size_t i = 0; i < p->nkey; i++) {
        strbuf_addc(&names, ',');
        strbuf_add_json_string(&names, p->sd->key[i], strlen(p->sd->key[i]));
    }
    strbuf_addc(&names, '}');
    v[0] = p->tbl;
    v[1] = strbuf_cstr(&names);
    if (v[1] == NULL) {
        strbuf_free(&names);
        return err_set(e, -ENOMEM, "out of memory");
    }
    r = pgconn_query(p->conn, "select to_regclass($1) is null", 1, v, e);
    if (r == NULL) {
        strbuf_free(&names);
        return -EIO;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") == 0)
        rc = err_set(e, -ENOENT, "endpoint %s: table %s does not exist",
                     p->sd->endpoint, p->tbl);
    PQclear(r);
    if (rc != 0) {
        strbuf_free(&names);
        return rc;
    }
    r = pgconn_query(p->conn,
        "select u.n, t.typname from unnest($2::text[]) with ordinality u(n, i)"
        " left join pg_attribute a on a.attrelid = to_regclass($1)"
        "  and a.attname = u.n and a.attnum > 0 and not a.attisdropped"
        " left join pg_type t on t.oid = a.atttypid order by u.i", 2, v, e);
    strbuf_free(&names);
    if (r == NULL)
        return -EIO;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        if (PQgetisnull(r, i, 1))
            rc = err_set(e, -ENOENT, "endpoint %s: table %s has no column %s",
                         p->sd->endpoint, p->tbl, PQgetvalue(r, i, 0));
        else if ((size_t)i < p->ncols)
            p->numeric[i] = strcmp(PQgetvalue(r, i, 1), "numeric") == 0;
    }
    PQclear(r);
    return rc;
}

int rec_pg_open(struct rec_stream *out, const struct cfg_mapping *m, char side,
                struct err *e)
{
    const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;
    struct pgs *p;
    int rc;

    out->ops = NULL;
    out->impl = NULL;
    if (sd->ep == NULL || sd->ep->kind != CFG_KIND_POSTGRES)
        return err_set(e, -ENOTSUP, "mapping %s: side %c is not a postgres endpoint",
                       m->name, side);
    if (sd->nkey == 0 || sd->nkey > REC_KEY_MAX)
        return err_set(e, -EINVAL, "mapping %s: side %c needs 1..%d key columns",
                       m->name, side, REC_KEY_MAX);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    p->m = m;
    p->sd = sd;
    p->side = side;
    p->nkey = sd->nkey;
    p->ncols = m->nfields;
    strbuf_init(&p->key);
    p->fields = json_object();
    p->cols = calloc(m->nfields + 1, sizeof(*p->cols));
    p->numeric = calloc(m->nfields + 1, sizeof(*p->numeric));
    if (p->fields == NULL || p->cols == NULL || p->numeric == NULL) {
        pgs_free(p);
        return err_set(e, -ENOMEM, "out of memory");
    }
    p->conn = pgconn_connect(sd->ep, false, e);
    if (p->conn == NULL) {
        pgs_free(p);
        if (e != NULL)
            e->code = -EHOSTUNREACH;
        return -EHOSTUNREACH;
    }
    p->tbl = pgconn_quote_table(p->conn, sd->schema, sd->relname);
    for (size_t i = 0; i < p->nkey; i++)
        p->kcols[i] = quote_ident(p->conn, sd->key[i]);
    for (size_t i = 0; i < p->ncols; i++)
        p->cols[i] = quote_ident(p->conn, side_col(m, side, i));
    if (m->canary_key != NULL) {
        char *q = PQescapeLiteral(p->conn, m->canary_key, strlen(m->canary_key));
        p->canary = q ? strdup(q) : NULL;
        PQfreemem(q);
    }
    rc = p->tbl == NULL ? -ENOMEM : 0;
    for (size_t i = 0; i < p->nkey; i++)
        rc = p->kcols[i] == NULL ? -ENOMEM : rc;
    for (size_t i = 0; i < p->ncols; i++)
        rc = p->cols[i] == NULL ? -ENOMEM : rc;
    if (rc != 0 || (m->canary_key != NULL && p->canary == NULL)) {
        pgs_free(p);
        return err_set(e, -ENOMEM, "out of memory");
    }
    if ((rc = run_ok(p, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD';"
                        " SET IntervalStyle = 'postgres'; SET extra_float_digits = 1",
                     e, "session settings")) != 0 ||
        (rc = inspect(p, e)) != 0) {
        pgs_free(p);
        return rc;
    }
    out->ops = p->hash_ok ? &pg_ops : &pg_ops_nobuckets;
    out->impl = p;
    return 0;
}

void rec_stream_free(struct rec_stream *s)
{
    if (s == NULL || s->ops == NULL)
        return;
    s->ops->free(s->impl);
    s->ops = NULL;
    s->impl = NULL;
}
