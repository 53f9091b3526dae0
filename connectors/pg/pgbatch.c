/* pgbatch.c: rows for one multi-row statement, and its SQL (see pgbatch.h). */
#include "pgbatch.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t shape_ncols(const struct pgbatch_shape *sh)
{
    return sh->nkey + sh->nset + sh->nbase;
}

static bool same_strings(const char *const *a, const char *const *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

bool pgbatch_fits(const struct pgbatch *b, const struct pgbatch_shape *sh)
{
    if (b->nrows == 0)
        return true;
    return b->kind == sh->kind && b->m == sh->m && b->t == sh->t && b->nkey == sh->nkey &&
           b->nset == sh->nset && b->nbase == sh->nbase &&
           same_strings(b->cols, sh->cols, b->ncols);
}

static const char *value_at(const struct pgbatch *b, size_t row, size_t col)
{
    size_t off = b->offs[row * b->ncols + col];

    return off == SIZE_MAX ? NULL : b->text + off;
}

bool pgbatch_holds_key(const struct pgbatch *b, const char *const *keys)
{
    for (size_t r = 0; r < b->nrows; r++) {
        size_t k = 0;

        while (k < b->nkey) {
            const char *held = value_at(b, r, k);
            if (held == NULL || keys[k] == NULL ? held != keys[k] : strcmp(held, keys[k]) != 0)
                break;
            k++;
        }
        if (k == b->nkey)
            return true;
    }
    return false;
}

static int reserve(struct pgbatch *b, size_t ncols, size_t text_more)
{
    size_t need = PGBATCH_ROWS * ncols + ncols;   /* and an update's key arrays */

    if (need > b->cap) {
        size_t *no = realloc(b->offs, need * sizeof(*no));
        const char **nv = no ? realloc(b->vals, need * sizeof(*nv)) : NULL;

        if (no != NULL)
            b->offs = no;
        if (nv == NULL)
            return -ENOMEM;
        b->vals = nv;
        b->cap = need;
    }
    if (b->text_len + text_more > b->text_cap) {
        size_t cap = b->text_cap ? b->text_cap : 4096;
        char *t;

        while (cap < b->text_len + text_more)
            cap *= 2;
        if ((t = realloc(b->text, cap)) == NULL)
            return -ENOMEM;
        b->text = t;
        b->text_cap = cap;
    }
    return 0;
}

int pgbatch_begin_row(struct pgbatch *b, const struct pgbatch_shape *sh, size_t text_more)
{
    size_t n = shape_ncols(sh);
    int rc;

    if (n == 0 || n > PGBATCH_MAX_COLS)
        return -E2BIG;
    if ((rc = reserve(b, n, text_more)) != 0)
        return rc;
    if (b->nrows == 0) {
        b->kind = sh->kind;
        b->m = sh->m;
        b->t = sh->t;
        b->nkey = sh->nkey;
        b->nset = sh->nset;
        b->nbase = sh->nbase;
        b->ncols = n;
        memcpy(b->cols, sh->cols, n * sizeof(*sh->cols));
        if (sh->types != NULL)
            memcpy(b->types, sh->types, n * sizeof(*sh->types));
    }
    b->nput = 0;
    return 0;
}

void pgbatch_put(struct pgbatch *b, const char *val, size_t len)
{
    size_t *off = &b->offs[b->nrows * b->ncols + b->nput++];

    if (val == NULL) {
        *off = SIZE_MAX;
        return;
    }
    memcpy(b->text + b->text_len, val, len);
    b->text[b->text_len + len] = '\0';
    *off = b->text_len;
    b->text_len += len + 1;
}

bool pgbatch_end_row(struct pgbatch *b)
{
    b->nrows++;
    return b->nrows == PGBATCH_ROWS;
}

/* Appends "{"v1","v2"}", key column k of every row as an array literal. */
static void add_key_array(const struct pgbatch *b, size_t k, struct strbuf *out)
{
    strbuf_addc(out, '{');
    for (size_t r = 0; r < b->nrows; r++) {
        const char *v = value_at(b, r, k);

        strbuf_adds(out, r > 0 ? ",\"" : "\"");
        for (; v != NULL && *v; v++) {
            if (*v == '"' || *v == '\\')
                strbuf_addc(out, '\\');
            strbuf_addc(out, *v);
        }
        strbuf_addc(out, '"');
    }
    strbuf_addc(out, '}');
}

int pgbatch_params(struct pgbatch *b, const char *const **params)
{
    size_t n = b->nrows * b->ncols, at[PGBATCH_MAX_COLS];

    for (size_t i = 0; i < n; i++)
        b->vals[i] = b->offs[i] == SIZE_MAX ? NULL : b->text + b->offs[i];
    if (b->kind == PGBATCH_UPDATE) {
        strbuf_reset(&b->arrays);
        for (size_t k = 0; k < b->nkey; k++) {
            at[k] = b->arrays.len;
            add_key_array(b, k, &b->arrays);
            strbuf_addc(&b->arrays, '\0');
        }
        if (b->arrays.failed)
            return -ENOMEM;
        for (size_t k = 0; k < b->nkey; k++)
            b->vals[n + k] = b->arrays.buf + at[k];
        n += b->nkey;
    }
    *params = b->vals;
    return (int)n;
}

void pgbatch_sig(const struct pgbatch *b, const char *mapping, char side, struct strbuf *sig)
{
    char head[64];

    snprintf(head, sizeof(head), "%c%zu:%zu:%zu:%zu:", b->kind == PGBATCH_INSERT ? 'F' : 'B',
             b->nrows, b->nkey, b->nset, b->nbase);
    strbuf_adds(sig, head);
    strbuf_adds(sig, mapping);
    strbuf_addc(sig, side);
    for (size_t i = 0; i < b->ncols; i++) {
        strbuf_adds(sig, b->cols[i]);
        strbuf_addc(sig, '\x1f');
    }
}

void pgbatch_add_ident(struct strbuf *b, PGconn *conn, const char *name)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));

    if (q == NULL) {
        b->failed = true;
        return;
    }
    strbuf_adds(b, q);
    PQfreemem(q);
}

/* "$n" or "<ref>n". */
static void add_value_ref(struct strbuf *b, const char *ref, size_t n)
{
    char num[24];

    snprintf(num, sizeof(num), "%zu", n);
    strbuf_adds(b, ref ? ref : "$");
    strbuf_adds(b, num);
}

void pgbatch_add_param(struct strbuf *b, size_t n)
{
    add_value_ref(b, NULL, n);
}

void pgbatch_add_set_list(struct strbuf *b, PGconn *conn, const char *const *cols,
                          size_t n, const char *ref, size_t first)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strbuf_adds(b, ", ");
        pgbatch_add_ident(b, conn, cols[i]);
        strbuf_adds(b, " = ");
        add_value_ref(b, ref, first + i);
    }
}

void pgbatch_add_insert_into(struct strbuf *b, PGconn *conn, const char *tbl,
                             const char *const *cols, size_t n)
{
    strbuf_adds(b, "INSERT INTO ");
    strbuf_adds(b, tbl);
    strbuf_adds(b, " (");
    for (size_t c = 0; c < n; c++) {
        if (c > 0)
            strbuf_adds(b, ", ");
        pgbatch_add_ident(b, conn, cols[c]);
    }
    strbuf_addc(b, ')');
}

void pgbatch_add_match(struct strbuf *b, PGconn *conn, const char *tbl,
                       const char *const *cols, size_t n, const char *ref, size_t first)
{
    strbuf_adds(b, "(true");
    for (size_t i = 0; i < n; i++) {
        strbuf_adds(b, " AND ");
        strbuf_adds(b, tbl);
        strbuf_addc(b, '.');
        pgbatch_add_ident(b, conn, cols[i]);
        strbuf_adds(b, " IS NOT DISTINCT FROM ");
        add_value_ref(b, ref, first + i);
    }
    strbuf_addc(b, ')');
}

/* "($1, $2), ($3, $4)": every row's parameters, cast to the column types
 * when there are (an update's VALUES list). */
static void add_value_rows(const struct pgbatch *b, struct strbuf *out, bool cast)
{
    size_t p = 1;

    for (size_t r = 0; r < b->nrows; r++) {
        strbuf_adds(out, r > 0 ? ", (" : "(");
        for (size_t c = 0; c < b->ncols; c++) {
            if (c > 0)
                strbuf_adds(out, ", ");
            add_value_ref(out, NULL, p++);
            if (cast) {
                strbuf_adds(out, "::");
                strbuf_adds(out, b->types[c]);
            }
        }
        strbuf_addc(out, ')');
    }
}

static void insert_sql(const struct pgbatch *b, PGconn *conn, const char *tbl,
                       struct strbuf *out)
{
    pgbatch_add_insert_into(out, conn, tbl, b->cols, b->ncols);
    strbuf_adds(out, " VALUES ");
    add_value_rows(b, out, false);
}

/* d.c<i> is value i (1-based) of a row: keys, then set, then base. The
 * key arrays after the rows ("t.k = ANY($n)", pgbatch_params) let the
 * planner find the rows by index whatever it thinks of the join: without
 * them, a generic plan may hash-join the VALUES list with the whole
 * table. */
static void update_sql(const struct pgbatch *b, PGconn *conn, const char *tbl,
                       struct strbuf *out)
{
    const char *const *set = b->cols + b->nkey, *const *base = set + b->nset;
    size_t pset = b->nkey + 1, pbase = pset + b->nset, parr = b->nrows * b->ncols + 1;
    char num[24];

    strbuf_adds(out, "WITH d (");
    for (size_t c = 0; c < b->ncols; c++)
        add_value_ref(out, c > 0 ? ", c" : "c", c + 1);
    strbuf_adds(out, ") AS (VALUES ");
    add_value_rows(b, out, true);
    strbuf_adds(out, "), u AS (UPDATE ");
    strbuf_adds(out, tbl);
    strbuf_adds(out, " AS t SET ");
    pgbatch_add_set_list(out, conn, set, b->nset, "d.c", pset);
    strbuf_adds(out, " FROM d WHERE ");
    for (size_t k = 0; k < b->nkey; k++) {
        strbuf_adds(out, "t.");
        pgbatch_add_ident(out, conn, b->cols[k]);
        add_value_ref(out, " = ANY($", parr + k);
        strbuf_adds(out, ") AND t.");
        pgbatch_add_ident(out, conn, b->cols[k]);
        add_value_ref(out, " = d.c", k + 1);
        strbuf_adds(out, " AND ");
    }
    strbuf_addc(out, '(');
    if (b->nbase > 0) {
        pgbatch_add_match(out, conn, "t", base, b->nbase, "d.c", pbase);
        strbuf_adds(out, " OR ");
    }
    pgbatch_add_match(out, conn, "t", set, b->nset, "d.c", pset);
    snprintf(num, sizeof(num), "%zu", b->nrows);
    strbuf_adds(out, ") RETURNING 1) SELECT 1 / (count(*) = ");
    strbuf_adds(out, num);
    strbuf_adds(out, ")::int FROM u");
}

void pgbatch_sql(const struct pgbatch *b, PGconn *conn, const char *tbl, struct strbuf *out)
{
    strbuf_reset(out);
    if (b->kind == PGBATCH_INSERT)
        insert_sql(b, conn, tbl, out);
    else
        update_sql(b, conn, tbl, out);
}

void pgbatch_reset(struct pgbatch *b)
{
    b->kind = 0;
    b->m = b->t = NULL;
    b->nrows = b->ncols = b->nput = 0;
    b->text_len = 0;
}

void pgbatch_free(struct pgbatch *b)
{
    free(b->offs);
    free(b->vals);
    free(b->text);
    strbuf_free(&b->arrays);
    memset(b, 0, sizeof(*b));
}
