/* pgstmt.h: the SQL of the PostgreSQL writer's per-row statements.
 *
 * One statement per (mapping, target side, operation, column set) shape,
 * prepared once, values always as parameters:
 *  - the conditional write (G6): lock the row by key; write only if it is
 *    clean (holds the base the change was made on, or already the incoming
 *    values) or the conflict mode lets the change win; insert when the
 *    row is missing; report whether it existed, was clean, how many rows
 *    were written, and (only when not clean) the row's commit time and its
 *    mapped fields as JSON for the resolver and the conflict log;
 *  - the clean update alone ('F'), which fails with division_by_zero when
 *    the row is not clean, for the writer to redo with the full statement.
 * Multi-row statements are pgbatch.h's. */
#ifndef TANDEM_PGSTMT_H
#define TANDEM_PGSTMT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "../../daemon/config.h"
#include "../../daemon/strbuf.h"

struct pgstmt_shape {
    const struct cfg_mapping *m;
    const struct cfg_side *side;    /* the target side */
    char op;                        /* 'U' (upsert, for I and U), 'D', 'S' (a
                                     * delete as the mapping's soft flag),
                                     * 'F' (the clean update alone) */
    const char **keycols;           /* target names */
    size_t nkey;
    const char **setcols;           /* target names, values $nkey+1.. */
    size_t nset;
    const char **basecols;          /* target names compared with the base */
    size_t nbase;
};

/* The statement for sh into out. Parameters: keys $1.., set values, base
 * values, then (not for 'F') version, tie-break and conflict mode, and for
 * 'U' keep (true: a missing row is not inserted). With
 * track_ts off the target row's commit time is reported as NULL. A row
 * whose last writer was the replication origin own_origin (its roident;
 * 0: not checked, as it must be with track_commit_timestamp off) is
 * clean. */
void pgstmt_sql(PGconn *conn, bool track_ts, unsigned own_origin,
                const struct pgstmt_shape *sh, struct strbuf *out);

/* Appends what tells shapes apart (for the prepared-statement cache). */
void pgstmt_sig(const struct pgstmt_shape *sh, struct strbuf *sig);

#endif
