/* pgstmt.c: the SQL of the PostgreSQL writer's per-row statements (see
 * pgstmt.h). */
#include "pgstmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgbatch.h"
#include "pgconn.h"

/* Whether the target row is clean: it holds the base (what the change was
 * made on) or already the incoming values, or this writer's own origin
 * wrote it last: nobody changed it since tandem did, whatever the shadow
 * says (a shadow is stale when tandem died after a target commit and
 * before the state commit that held the shadow's update). A delete has no
 * incoming values: only the base (or the origin) makes its row clean, so
 * a row changed since the base is a conflict, not deleted unseen; with no
 * base at all nothing can tell, and the row counts as clean. */
static void add_clean(PGconn *conn, struct strbuf *b, const char *tbl,
                      const struct pgstmt_shape *sh, unsigned own_origin,
                      size_t pbase, size_t pset)
{
    char num[16];
    bool del = sh->op == 'D' || sh->op == 'S';

    strbuf_addc(b, '(');
    if (sh->nbase > 0) {
        pgbatch_add_match(b, conn, tbl, sh->basecols, sh->nbase, NULL, pbase);
        strbuf_adds(b, del ? "" : " OR ");
    }
    if (!del)
        pgbatch_add_match(b, conn, tbl, sh->setcols, sh->nset, NULL, pset);
    else if (sh->nbase == 0)
        strbuf_adds(b, "true");
    if (own_origin != 0) {
        /* NULL (no commit time kept for the row's transaction) is not clean. */
        snprintf(num, sizeof(num), "%u", own_origin);
        strbuf_adds(b, " OR coalesce((pg_xact_commit_timestamp_origin(");
        strbuf_adds(b, tbl);
        strbuf_adds(b, ".xmin)).roident = ");
        strbuf_adds(b, num);
        strbuf_adds(b, ", false)");
    }
    strbuf_addc(b, ')');
}

/* The target row's mapped fields as a JSON object text with side-a names
 * and text values, the shape of every record in the conflict log.
 * jsonb_build_object takes at most 100 arguments: chunks are joined. */
static void add_row_json(PGconn *conn, struct strbuf *b, const struct pgstmt_shape *sh)
{
    const struct cfg_mapping *m = sh->m;
    bool target_a = sh->side == &m->a;

    strbuf_adds(b, "(jsonb_build_object()");
    for (size_t i = 0; i < m->nfields; i++) {
        const char *tcol = target_a ? m->fields[i].name : m->fields[i].value;
        char *lit = PQescapeLiteral(conn, m->fields[i].name, strlen(m->fields[i].name));

        if (i % 40 == 0)
            strbuf_adds(b, i == 0 ? " || jsonb_build_object(" : ") || jsonb_build_object(");
        else
            strbuf_adds(b, ", ");
        if (lit == NULL) {
            b->failed = true;
            return;
        }
        strbuf_adds(b, lit);
        PQfreemem(lit);
        strbuf_adds(b, ", ");
        pgbatch_add_ident(b, conn, tcol);
        strbuf_adds(b, "::text");
    }
    strbuf_adds(b, m->nfields > 0 ? "))::text" : ")::text");
}

/* " WHERE k1 = $1 AND k2 = $2 ...": the row by its key parameters. */
static void add_key_where(PGconn *conn, struct strbuf *b, const struct pgstmt_shape *sh)
{
    for (size_t i = 0; i < sh->nkey; i++) {
        strbuf_adds(b, i == 0 ? " WHERE " : " AND ");
        pgbatch_add_ident(b, conn, sh->keycols[i]);
        strbuf_adds(b, " = ");
        pgbatch_add_param(b, i + 1);
    }
}

/* "UPDATE tbl SET col = $i, ... WHERE key = $1 ...": set values from $pset. */
static void add_update(PGconn *conn, struct strbuf *b, const char *tbl,
                       const struct pgstmt_shape *sh, size_t pset)
{
    strbuf_adds(b, "UPDATE ");
    strbuf_adds(b, tbl);
    strbuf_adds(b, " SET ");
    pgbatch_add_set_list(b, conn, sh->setcols, sh->nset, NULL, pset);
    add_key_where(conn, b, sh);
}

/* The clean update alone: it writes only when the row holds the base (or
 * already the incoming values) and otherwise fails with division_by_zero,
 * which rolls the target transaction back and has it redone with the full
 * conditional statement (missing row, conflict). Much less to set up at
 * each execution. Parameters: keys, set values, base values. */
static void build_fast_update(PGconn *conn, struct strbuf *b, const char *tbl,
                              const struct pgstmt_shape *sh, unsigned own_origin,
                              size_t pbase, size_t pset)
{
    strbuf_adds(b, "WITH u AS (");
    add_update(conn, b, tbl, sh, pset);
    strbuf_adds(b, " AND ");
    add_clean(conn, b, tbl, sh, own_origin, pbase, pset);
    strbuf_adds(b, " RETURNING 1) SELECT 1 / count(*)::int FROM u");
}

/* Parameters: keys $1.., set values, base values, version, tie-break,
 * mode and, for 'U', keep. */
void pgstmt_sql(PGconn *conn, bool track_ts, unsigned own_origin,
                const struct pgstmt_shape *sh, struct strbuf *b)
{
    char *tbl = pgconn_quote_table(conn, sh->side->schema, sh->side->relname);
    size_t pset = sh->nkey + 1, pbase = pset + sh->nset;
    size_t pver = pbase + sh->nbase, ptie = pver + 1, pmode = ptie + 1;

    strbuf_reset(b);
    if (tbl == NULL) {
        b->failed = true;
        return;
    }
    if (sh->op == 'F') {
        build_fast_update(conn, b, tbl, sh, own_origin, pbase, pset);
        free(tbl);
        return;
    }
    /* The row's commit time and its JSON only matter when it is not clean
     * (a conflict): the common clean case skips both. */
    strbuf_adds(b, "WITH cur AS (SELECT ctid AS c_tid, ");
    add_clean(conn, b, tbl, sh, own_origin, pbase, pset);
    strbuf_adds(b, " AS clean, CASE WHEN ");
    add_clean(conn, b, tbl, sh, own_origin, pbase, pset);
    strbuf_adds(b, track_ts
        ? " THEN NULL ELSE (extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000000)::int8"
        : " THEN NULL ELSE NULL::int8");
    strbuf_adds(b, " END AS ts, CASE WHEN ");
    add_clean(conn, b, tbl, sh, own_origin, pbase, pset);
    strbuf_adds(b, " THEN NULL ELSE ");
    add_row_json(conn, b, sh);
    strbuf_adds(b, " END AS cur_row FROM ");
    strbuf_adds(b, tbl);
    add_key_where(conn, b, sh);     /* a mapping has at least one key */
    /* $mode: 0 last write wins, 1 incoming wins, 2 target kept (see
     * conflict_mode). */
    strbuf_adds(b, " FOR UPDATE), ok AS (SELECT c_tid FROM cur WHERE clean OR ");
    pgbatch_add_param(b, pmode);
    strbuf_adds(b, "::int = 1 OR (");
    pgbatch_add_param(b, pmode);
    strbuf_adds(b, "::int = 0 AND (ts IS NULL OR ts < ");
    pgbatch_add_param(b, pver);
    strbuf_adds(b, " OR (ts = ");
    pgbatch_add_param(b, pver);
    strbuf_adds(b, " AND ");
    pgbatch_add_param(b, ptie);
    strbuf_adds(b, "::bool))))");
    /* The write finds its row by key, not by the ctid cur read: when a
     * user's transaction updated the row while cur waited for its lock,
     * cur (FOR UPDATE) saw the newest version, but the write's snapshot
     * only the old one; by key, PostgreSQL follows the update chain to the
     * newest version and re-checks, so the write lands instead of being
     * skipped. */
    if (sh->op == 'D') {
        strbuf_adds(b, ", w AS (DELETE FROM ");
        strbuf_adds(b, tbl);
        add_key_where(conn, b, sh);
        strbuf_adds(b, " AND EXISTS (SELECT 1 FROM ok) RETURNING 1)");
    } else if (sh->op == 'S') {
        strbuf_adds(b, ", w AS (UPDATE ");
        strbuf_adds(b, tbl);
        strbuf_adds(b, " SET ");
        pgbatch_add_ident(b, conn, sh->m->soft_delete_field);
        strbuf_adds(b, " = true");
        add_key_where(conn, b, sh);
        strbuf_adds(b, " AND EXISTS (SELECT 1 FROM ok) RETURNING 1)");
    } else {
        strbuf_adds(b, ", u AS (");
        add_update(conn, b, tbl, sh, pset);
        strbuf_adds(b, " AND EXISTS (SELECT 1 FROM ok) RETURNING 1), i AS (");
        pgbatch_add_insert_into(b, conn, tbl, sh->setcols, sh->nset);
        strbuf_adds(b, " SELECT ");
        for (size_t i = 0; i < sh->nset; i++) {
            if (i > 0)
                strbuf_adds(b, ", ");
            pgbatch_add_param(b, pset + i);
        }
        /* $keep: a missing row stays missing (the target deleted it). */
        strbuf_adds(b, " WHERE NOT EXISTS (SELECT 1 FROM cur) AND NOT ");
        pgbatch_add_param(b, pmode + 1);
        strbuf_adds(b, "::bool ON CONFLICT DO NOTHING"
                       " RETURNING 1), w AS (SELECT 1 FROM u UNION ALL SELECT 1 FROM i)");
    }
    /* cur has at most one row (a key): joined once rather than read by
     * four subplans, each set up anew at every execution. */
    strbuf_adds(b, " SELECT cur.c_tid IS NOT NULL, coalesce(cur.clean, false),"
                   " (SELECT count(*) FROM w), cur.ts, cur.cur_row"
                   " FROM (SELECT 1) AS one LEFT JOIN cur ON true");
    free(tbl);
}

static void add_sig_cols(struct strbuf *b, const char **cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        strbuf_adds(b, cols[i]);
        strbuf_addc(b, '\x1f');
    }
    strbuf_addc(b, '\x1e');
}

void pgstmt_sig(const struct pgstmt_shape *sh, struct strbuf *sig)
{
    strbuf_addc(sig, sh->op);
    strbuf_adds(sig, sh->m->name);
    strbuf_addc(sig, sh->side == &sh->m->a ? 'a' : 'b');
    add_sig_cols(sig, sh->keycols, sh->nkey);
    add_sig_cols(sig, sh->setcols, sh->nset);
    add_sig_cols(sig, sh->basecols, sh->nbase);
}
