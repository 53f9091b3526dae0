#include "pgadmin.h"

#include <stdlib.h>
#include <string.h>

#include "../../daemon/log.h"
#include "pgconn.h"

static bool side_reads(const struct cfg_mapping *m, char side)
{
    return m->direction == CFG_DIR_BOTH ||
           (side == 'a' && m->direction == CFG_DIR_A_TO_B) ||
           (side == 'b' && m->direction == CFG_DIR_B_TO_A);
}

bool pgadmin_is_source(const struct config *c, const struct cfg_endpoint *ep)
{
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        if ((m->a.ep == ep && side_reads(m, 'a')) ||
            (m->b.ep == ep && side_reads(m, 'b')))
            return true;
    }
    return false;
}

bool pgadmin_is_target(const struct config *c, const struct cfg_endpoint *ep)
{
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        if ((m->b.ep == ep && side_reads(m, 'a')) ||
            (m->a.ep == ep && side_reads(m, 'b')))
            return true;
    }
    return false;
}

/* Calls fn for each mapped table of ep (a table mapped twice comes twice). */
typedef int (*table_fn)(PGconn *conn, const struct cfg_endpoint *ep,
                        const struct cfg_side *side, bool source, bool target,
                        void *arg, struct err *e);

static int each_table(PGconn *conn, const struct config *c,
                      const struct cfg_endpoint *ep, table_fn fn, void *arg,
                      struct err *e)
{
    int rc, total = 0;

    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        if (m->a.ep == ep) {
            if ((rc = fn(conn, ep, &m->a, side_reads(m, 'a'), side_reads(m, 'b'), arg, e)) < 0)
                return rc;
            total += rc;
        }
        if (m->b.ep == ep) {
            if ((rc = fn(conn, ep, &m->b, side_reads(m, 'b'), side_reads(m, 'a'), arg, e)) < 0)
                return rc;
            total += rc;
        }
    }
    return total;
}

/* One-row, one-column query; returns a malloc'd value ("" for NULL) or NULL
 * with e set. */
static char *query_value(PGconn *conn, const char *sql, int n,
                         const char *const *params, struct err *e)
{
    PGresult *r = pgconn_query(conn, sql, n, params, e);
    char *v = NULL;

    if (r == NULL)
        return NULL;
    if (PQntuples(r) == 1)
        v = strdup(PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    else
        v = strdup("");
    PQclear(r);
    return v;
}

static int query_bool(PGconn *conn, const char *sql, int n,
                      const char *const *params, struct err *e)
{
    char *v = query_value(conn, sql, n, params, e);
    int rc;

    if (v == NULL)
        return -EIO;
    rc = strcmp(v, "t") == 0;
    free(v);
    return rc;
}

static int add_to_publication(PGconn *conn, const struct cfg_endpoint *ep,
                              const struct cfg_side *side, bool source, bool target,
                              void *arg, struct err *e)
{
    const char *p[] = { ep->publication, side->schema, side->relname };
    char *pub, *tbl, *sql = NULL;
    int rc;

    if (!source)
        return 0;
    rc = query_bool(conn,
        "select exists(select 1 from pg_publication_tables where pubname = $1"
        " and schemaname = $2 and tablename = $3)", 3, p, e);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    pub = pgconn_quote_ident(conn, ep->publication);
    tbl = pgconn_quote_table(conn, side->schema, side->relname);
    if (pub && tbl && asprintf(&sql, "alter publication %s add table %s", pub, tbl) > 0) {
        rc = pgconn_exec(conn, sql, e);
        if (rc == 0)
            log_info("pgadmin", "added table to publication", "endpoint", ep->name,
                     "publication", ep->publication, "table", side->table);
    } else {
        rc = err_set(e, -ENOMEM, "out of memory");
    }
    free(pub);
    free(tbl);
    free(sql);
    return rc;
}

static int setup_publication(PGconn *conn, const struct config *c,
                             const struct cfg_endpoint *ep, struct err *e)
{
    const char *p[] = { ep->publication };
    char *pub, *sql = NULL;
    int rc = query_bool(conn,
        "select exists(select 1 from pg_publication where pubname = $1)", 1, p, e);

    if (rc < 0)
        return rc;
    if (rc == 0) {
        pub = pgconn_quote_ident(conn, ep->publication);
        if (pub == NULL || asprintf(&sql, "create publication %s", pub) < 0) {
            free(pub);
            return err_set(e, -ENOMEM, "out of memory");
        }
        rc = pgconn_exec(conn, sql, e);
        free(pub);
        free(sql);
        if (rc != 0)
            return rc;
        log_info("pgadmin", "created publication", "endpoint", ep->name,
                 "publication", ep->publication);
    }
    rc = each_table(conn, c, ep, add_to_publication, NULL, e);
    return rc < 0 ? rc : 0;
}

static int setup_slot(PGconn *conn, const struct cfg_endpoint *ep, struct err *e)
{
    const char *p[] = { ep->slot };
    int rc = query_bool(conn,
        "select exists(select 1 from pg_replication_slots where slot_name = $1)",
        1, p, e);
    PGresult *r;

    if (rc != 0)
        return rc < 0 ? rc : 0;
    r = pgconn_query(conn,
        "select pg_create_logical_replication_slot($1, 'pgoutput')", 1, p, e);
    if (r == NULL)
        return -EIO;
    PQclear(r);
    log_info("pgadmin", "created replication slot", "endpoint", ep->name,
             "slot", ep->slot);
    return 0;
}

static int setup_origin(PGconn *conn, const struct cfg_endpoint *ep, struct err *e)
{
    const char *p[] = { ep->origin };
    int rc = query_bool(conn,
        "select exists(select 1 from pg_replication_origin where roname = $1)",
        1, p, e);
    PGresult *r;

    if (rc != 0)
        return rc < 0 ? rc : 0;
    r = pgconn_query(conn, "select pg_replication_origin_create($1)", 1, p, e);
    if (r == NULL)
        return -EIO;
    PQclear(r);
    log_info("pgadmin", "created replication origin", "endpoint", ep->name,
             "origin", ep->origin);
    return 0;
}

/* The origin marks tandem's own writes for the reader's echo filter. A
 * target needs it; any other endpoint gets it too when its role may
 * create it, so a direction added later finds it, and goes on without it
 * (a read-only source role) otherwise. */
static int setup_origin_for(PGconn *conn, const struct config *c,
                            const struct cfg_endpoint *ep, struct err *e)
{
    struct err oe = { 0 };
    bool target = pgadmin_is_target(c, ep);
    int rc = setup_origin(conn, ep, target ? e : &oe);

    if (rc != 0 && !target) {
        log_info("pgadmin", "no replication origin on this source-only endpoint; its role"
                 " may not create one, and it needs none until it is a target",
                 "endpoint", ep->name, "err", oe.msg);
        return 0;
    }
    return rc;
}

int pgadmin_setup(PGconn *conn, const struct config *c,
                  const struct cfg_endpoint *ep, struct err *e)
{
    int rc;

    if (pgadmin_is_source(c, ep)) {
        if ((rc = setup_publication(conn, c, ep, e)) != 0 ||
            (rc = setup_slot(conn, ep, e)) != 0)
            return rc;
    }
    return setup_origin_for(conn, c, ep, e);
}

int pgadmin_setup_except_slot(PGconn *conn, const struct config *c,
                              const struct cfg_endpoint *ep, struct err *e)
{
    int rc;

    if (pgadmin_is_source(c, ep) && (rc = setup_publication(conn, c, ep, e)) != 0)
        return rc;
    return setup_origin_for(conn, c, ep, e);
}

int pgadmin_slot_exists(PGconn *conn, const struct cfg_endpoint *ep,
                        struct err *e)
{
    const char *p[] = { ep->slot };

    return query_bool(conn,
        "select exists(select 1 from pg_replication_slots where slot_name = $1)",
        1, p, e);
}

int pgadmin_teardown(PGconn *conn, const struct config *c,
                     const struct cfg_endpoint *ep, struct err *e)
{
    const char *p[] = { ep->slot };
    const char *o[] = { ep->origin };
    char *pub, *sql = NULL;
    PGresult *r;
    int rc;

    (void)c;
    r = pgconn_query(conn, "select pg_drop_replication_slot(slot_name) from"
                     " pg_replication_slots where slot_name = $1", 1, p, e);
    if (r == NULL)
        return -EIO;
    PQclear(r);
    pub = pgconn_quote_ident(conn, ep->publication);
    if (pub == NULL || asprintf(&sql, "drop publication if exists %s", pub) < 0) {
        free(pub);
        return err_set(e, -ENOMEM, "out of memory");
    }
    rc = pgconn_exec(conn, sql, e);
    free(pub);
    free(sql);
    if (rc != 0)
        return rc;
    r = pgconn_query(conn, "select pg_replication_origin_drop(roname) from"
                     " pg_replication_origin where roname = $1", 1, o, e);
    if (r == NULL)
        return -EIO;
    PQclear(r);
    log_info("pgadmin", "dropped slot, publication and origin", "endpoint", ep->name);
    return 0;
}

/* ---- check ---- */

struct check_ctx {
    FILE *out;
    const char *ep;
};

static int report(struct check_ctx *k, bool ok, bool warn_only,
                  const char *what, const char *detail)
{
    fprintf(k->out, "%-4s %s: %s%s%s\n", ok ? "ok" : (warn_only ? "warn" : "FAIL"),
            k->ep, what, detail ? ": " : "", detail ? detail : "");
    return ok || warn_only ? 0 : 1;
}

/* The write privileges a target table lacks, as "INSERT, DELETE", or "".
 * (has_table_privilege with a list is true when any one is held.) */
static void missing_writes(PGresult *r, int first, char *out, size_t cap)
{
    static const char *const names[] = { "INSERT", "UPDATE", "DELETE" };

    out[0] = '\0';
    for (int i = 0; i < 3; i++)
        if (strcmp(PQgetvalue(r, 0, first + i), "t") != 0)
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? ", " : "",
                     names[i]);
}

static int check_table(PGconn *conn, const struct cfg_endpoint *ep,
                       const struct cfg_side *side, bool source, bool target,
                       void *arg, struct err *e)
{
    struct check_ctx *k = arg;
    const char *p[] = { ep->publication, side->schema, side->relname };
    char what[512], lacks[64], detail[256], *ident;
    PGresult *r;
    int bad = 0;

    r = pgconn_query(conn,
        "select c.relreplident, has_table_privilege(c.oid, 'select'),"
        " has_table_privilege(c.oid, 'insert'), has_table_privilege(c.oid, 'update'),"
        " has_table_privilege(c.oid, 'delete'),"
        " exists(select 1 from pg_publication_tables where pubname = $1"
        "   and schemaname = $2 and tablename = $3)"
        " from pg_class c where c.oid = to_regclass(quote_ident($2) || '.' || quote_ident($3))",
        3, p, e);
    if (r == NULL)
        return -EIO;
    snprintf(what, sizeof(what), "table %s", side->table);
    if (PQntuples(r) != 1) {
        PQclear(r);
        return report(k, false, false, what,
                      "does not exist (tandem never creates user tables: create it)");
    }
    bad += report(k, true, false, what, "exists");
    if (strcmp(PQgetvalue(r, 0, 1), "t") != 0)
        bad += report(k, false, false, what, "no SELECT privilege: GRANT SELECT ON TABLE ... TO <role>");
    missing_writes(r, 2, lacks, sizeof(lacks));
    if (target && lacks[0] != '\0') {
        snprintf(detail, sizeof(detail), "no %s privilege (tandem writes here): GRANT %s"
                 " ON TABLE ... TO <role>", lacks, lacks);
        bad += report(k, false, false, what, detail);
    }
    if (source) {
        ident = PQgetvalue(r, 0, 0);
        if (ident[0] == 'n')
            bad += report(k, false, false, what,
                          "replica identity NOTHING: updates and deletes cannot sync; ALTER TABLE ... REPLICA IDENTITY FULL");
        else if (ident[0] == 'd' || ident[0] == 'i')
            report(k, false, true, what,
                   "replica identity DEFAULT/INDEX works with less conflict detail; FULL recommended");
        else
            report(k, true, false, what, "replica identity FULL");
        if (strcmp(PQgetvalue(r, 0, 5), "t") != 0)
            report(k, false, true, what, "not in the publication yet: run or setup adds it");
    }
    PQclear(r);
    return bad;
}

static int check_server(PGconn *conn, const struct config *c,
                        const struct cfg_endpoint *ep, struct check_ctx *k,
                        struct err *e)
{
    PGresult *r;
    const char *p[] = { ep->slot, ep->publication, ep->origin };
    int bad = 0;
    bool source = pgadmin_is_source(c, ep), target = pgadmin_is_target(c, ep);

    r = pgconn_query(conn,
        "select current_setting('wal_level'),"
        " (select rolreplication or rolsuper from pg_roles where rolname = current_user),"
        " exists(select 1 from pg_replication_slots where slot_name = $1),"
        " exists(select 1 from pg_publication where pubname = $2),"
        " exists(select 1 from pg_replication_origin where roname = $3),"
        " has_function_privilege('pg_replication_origin_session_setup(text)', 'execute')"
        "  and has_function_privilege('pg_replication_origin_xact_setup(pg_lsn, timestamptz)', 'execute')"
        "  and has_function_privilege('pg_replication_origin_progress(text, boolean)', 'execute')"
        "  and has_function_privilege('pg_replication_origin_oid(text)', 'execute')"
        "  and has_function_privilege('pg_replication_origin_advance(text, pg_lsn)', 'execute'),"
        " has_database_privilege(current_database(), 'create')",
        3, p, e);
    if (r == NULL)
        return -EIO;
    if (source) {
        bad += report(k, !strcmp(PQgetvalue(r, 0, 0), "logical"), false, "wal_level",
                      !strcmp(PQgetvalue(r, 0, 0), "logical") ? "logical"
                      : "must be logical: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL");
        bad += report(k, !strcmp(PQgetvalue(r, 0, 1), "t"), false, "REPLICATION right",
                      !strcmp(PQgetvalue(r, 0, 1), "t") ? "granted" : "missing: ALTER ROLE <role> REPLICATION");
        report(k, !strcmp(PQgetvalue(r, 0, 2), "t"), true, "slot",
               !strcmp(PQgetvalue(r, 0, 2), "t") ? ep->slot : "missing: run or setup creates it");
        report(k, !strcmp(PQgetvalue(r, 0, 3), "t"), true, "publication",
               !strcmp(PQgetvalue(r, 0, 3), "t") ? ep->publication : "missing: run or setup creates it");
        if (strcmp(PQgetvalue(r, 0, 3), "t") != 0)
            bad += report(k, !strcmp(PQgetvalue(r, 0, 6), "t"), false, "CREATE on database",
                          !strcmp(PQgetvalue(r, 0, 6), "t") ? "granted"
                          : "missing: GRANT CREATE ON DATABASE <db> TO <role>");
    }
    if (target) {
        report(k, !strcmp(PQgetvalue(r, 0, 4), "t"), true, "origin",
               !strcmp(PQgetvalue(r, 0, 4), "t") ? ep->origin : "missing: run or setup creates it");
        bad += report(k, !strcmp(PQgetvalue(r, 0, 5), "t"), false, "replication origin functions",
                      !strcmp(PQgetvalue(r, 0, 5), "t") ? "executable"
                      : "missing: GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text),"
                        " pg_replication_origin_xact_setup(pg_lsn, timestamptz),"
                        " pg_replication_origin_progress(text, boolean),"
                        " pg_replication_origin_oid(text), pg_replication_origin_advance(text, pg_lsn),"
                        " pg_replication_origin_create(text) TO <role>");
    }
    PQclear(r);
    return bad;
}

int pgadmin_check(PGconn *conn, const struct config *c,
                  const struct cfg_endpoint *ep, FILE *out, struct err *e)
{
    struct check_ctx k = { out, ep->name };
    int bad, rc;

    fprintf(out, "ok   %s: connected (server %d)\n", ep->name, PQserverVersion(conn));
    bad = check_server(conn, c, ep, &k, e);
    if (bad < 0)
        return bad;
    rc = each_table(conn, c, ep, check_table, &k, e);
    return rc < 0 ? rc : bad + rc;
}

long long pgadmin_slot_retained(PGconn *conn, const struct cfg_endpoint *ep,
                                struct err *e)
{
    const char *p[] = { ep->slot };
    char *v = query_value(conn,
        "select coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint"
        " from pg_replication_slots where slot_name = $1", 1, p, e);
    long long n;

    if (v == NULL)
        return -EIO;
    if (v[0] == '\0') {
        free(v);
        return err_set(e, -ENOENT, "slot %s does not exist", ep->slot);
    }
    n = atoll(v);
    free(v);
    return n;
}
