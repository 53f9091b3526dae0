/* pgbatch.h: rows buffered for one multi-row statement on a PostgreSQL
 * target, that statement's SQL, and the SQL pieces it shares with the
 * per-row statements (pgstmt.h): quoted names, parameters, matches.
 *
 * Two kinds, both for the common clean case, each all-or-nothing:
 *  - insert: "INSERT INTO tbl (cols) VALUES (...), (...)": new keys; a key
 *    that exists fails the statement (unique violation);
 *  - update: a set-based clean update, "UPDATE tbl SET ... FROM (VALUES
 *    ...) WHERE key matches AND the row holds the base or already the new
 *    values", which fails with division_by_zero unless every row was
 *    updated. Its values are cast to the target's column types (a VALUES
 *    list has no column to infer them from).
 * A failure rolls the target transaction back; the writer then redoes it
 * with per-row conditional statements, which decide each case. One
 * statement per batch instead of one per row: far less work per row on
 * the target. Zero-initialise a batch ({ 0 }) before use. */
#ifndef TANDEM_PGBATCH_H
#define TANDEM_PGBATCH_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "../../daemon/strbuf.h"

#define PGBATCH_ROWS 64         /* rows per statement */
#define PGBATCH_MAX_COLS 128    /* values per row */

enum pgbatch_kind { PGBATCH_INSERT = 'I', PGBATCH_UPDATE = 'U' };

/* What every row of a batch shares. cols are target column names: for an
 * insert the inserted columns (nset of them); for an update the key
 * columns, the set columns, then the base columns (compared with the row
 * before the update). types (update only) name each column's SQL type.
 * The strings must outlive the batch (config and lookup strings do). */
struct pgbatch_shape {
    char kind;
    const void *m, *t;          /* the mapping and target side, as identity */
    const char *const *cols;
    const char *const *types;
    size_t nkey, nset, nbase;
};

struct pgbatch {
    char kind;                  /* 0 while empty */
    const void *m, *t;
    const char *cols[PGBATCH_MAX_COLS];
    const char *types[PGBATCH_MAX_COLS];
    size_t nkey, nset, nbase, ncols, nrows;
    size_t nput;                /* values put in the row being added */
    size_t *offs;               /* nrows * ncols into text; SIZE_MAX: NULL */
    const char **vals;          /* the same as pointers, built to send */
    size_t cap;                 /* of offs and vals */
    char *text;                 /* the values, NUL-terminated */
    size_t text_len, text_cap;
    struct strbuf arrays;       /* an update's key arrays, built to send */
};

/* Whether a row of shape sh can join the rows held (always when empty). */
bool pgbatch_fits(const struct pgbatch *b, const struct pgbatch_shape *sh);

/* Whether a held row has these key values (an update batch must not hold
 * a key twice: the join would update the row once). */
bool pgbatch_holds_key(const struct pgbatch *b, const char *const *keys);

/* Starts a row of shape sh (b empty or pgbatch_fits), with room for
 * text_more bytes of values (their lengths plus one each); 0 or -ENOMEM,
 * -E2BIG for more than PGBATCH_MAX_COLS values. */
int pgbatch_begin_row(struct pgbatch *b, const struct pgbatch_shape *sh, size_t text_more);

/* The row's next value, len bytes of val (NULL: SQL NULL). */
void pgbatch_put(struct pgbatch *b, const char *val, size_t len);

/* Ends the row; returns true when the batch is full. */
bool pgbatch_end_row(struct pgbatch *b);

/* Points *params at the statement's parameters (each row's values; for
 * an update then one array of each key column's values) and returns their
 * count, or -ENOMEM. Valid until the batch changes. */
int pgbatch_params(struct pgbatch *b, const char *const **params);

/* Appends what tells statements apart: kind, shape and row count. */
void pgbatch_sig(const struct pgbatch *b, const char *mapping, char side, struct strbuf *sig);

/* The statement for the rows held, on table tbl (quoted). */
void pgbatch_sql(const struct pgbatch *b, PGconn *conn, const char *tbl, struct strbuf *out);

/* Appends "(true AND tbl.col1 IS NOT DISTINCT FROM <v1> AND ...)" for n
 * columns, where <vi> is "$<first+i>" when ref is NULL, else
 * "<ref><first+i>" (a column of a VALUES list, e.g. "d.c3"). */
void pgbatch_add_match(struct strbuf *b, PGconn *conn, const char *tbl,
                       const char *const *cols, size_t n, const char *ref, size_t first);

/* Appends the quoted identifier (b fails when it cannot be quoted). */
void pgbatch_add_ident(struct strbuf *b, PGconn *conn, const char *name);

/* Appends "$n". */
void pgbatch_add_param(struct strbuf *b, size_t n);

/* Appends "col1 = <v1>, col2 = <v2>" (values as in pgbatch_add_match). */
void pgbatch_add_set_list(struct strbuf *b, PGconn *conn, const char *const *cols,
                          size_t n, const char *ref, size_t first);

/* Appends "INSERT INTO tbl (col1, col2)" with the columns quoted. */
void pgbatch_add_insert_into(struct strbuf *b, PGconn *conn, const char *tbl,
                             const char *const *cols, size_t n);

void pgbatch_reset(struct pgbatch *b);
void pgbatch_free(struct pgbatch *b);

#endif
