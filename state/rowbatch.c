/* rowbatch.c: rows gathered for one multi-row INSERT (see state_int.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state_int.h"

static int rowbatch_text(struct rowbatch *b, const char *text, int64_t *off)
{
    size_t n = strlen(text) + 1;

    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *buf;

        while (cap < b->len + n)
            cap *= 2;
        if ((buf = realloc(b->buf, cap)) == NULL)
            return -ENOMEM;
        b->buf = buf;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, text, n);
    *off = (int64_t)b->len;
    b->len += n;
    return 0;
}

int rowbatch_add(struct rowbatch *b, const char *types, ...)
{
    struct rowbatch_cell *c = &b->cell[b->nrows * ROWBATCH_COLS];
    size_t len0 = b->len;
    int ncols = 0, rc = 0;
    va_list ap;

    if (b->nrows == ROWBATCH_ROWS)
        return -EOVERFLOW;
    va_start(ap, types);
    for (const char *t = types; *t != '\0' && rc == 0; t++, ncols++) {
        struct rowbatch_cell *cell = &c[ncols];

        if (ncols == ROWBATCH_COLS) {
            rc = -EINVAL;
        } else if (*t == 'n') {
            cell->kind = 'n';
        } else if (*t == 't') {
            const char *v = va_arg(ap, const char *);

            cell->kind = v ? 't' : 'n';
            if (v != NULL)
                rc = rowbatch_text(b, v, &cell->i);
        } else {
            cell->kind = 'l';
            cell->i = va_arg(ap, int64_t);
        }
    }
    va_end(ap);
    if (rc != 0) {
        b->len = len0;
        return rc;
    }
    b->ncols = ncols;
    b->nrows++;
    return 0;
}

int rowbatch_find(const struct rowbatch *b, int col, int64_t v)
{
    for (int r = 0; r < b->nrows; r++) {
        const struct rowbatch_cell *c = &b->cell[r * ROWBATCH_COLS + col];

        if (c->kind == 'l' && c->i == v)
            return r;
    }
    return -1;
}

void rowbatch_set(struct rowbatch *b, int row, int col, int64_t v)
{
    struct rowbatch_cell *c = &b->cell[row * ROWBATCH_COLS + col];

    c->kind = 'l';
    c->i = v;
}

void rowbatch_drop(struct rowbatch *b, int row)
{
    memmove(&b->cell[row * ROWBATCH_COLS], &b->cell[(row + 1) * ROWBATCH_COLS],
            (size_t)(b->nrows - row - 1) * ROWBATCH_COLS * sizeof(b->cell[0]));
    b->nrows--;
}

void rowbatch_clear(struct rowbatch *b)
{
    b->nrows = 0;
    b->len = 0;
}

void rowbatch_free(struct rowbatch *b)
{
    free(b->buf);
    memset(b, 0, sizeof(*b));
}

static int bind_rows(sqlite3_stmt *st, const struct rowbatch *b, int from, int n)
{
    int rc = SQLITE_OK, idx = 1;

    for (int r = from; r < from + n; r++)
        for (int c = 0; rc == SQLITE_OK && c < b->ncols; c++, idx++) {
            const struct rowbatch_cell *cell = &b->cell[r * ROWBATCH_COLS + c];

            rc = cell->kind == 'l' ? sqlite3_bind_int64(st, idx, cell->i)
               : cell->kind == 't' ? sqlite3_bind_text(st, idx, b->buf + cell->i, -1,
                                                       SQLITE_STATIC)
               : sqlite3_bind_null(st, idx);
        }
    return rc;
}

/* head, n lists of ncols placeholders, tail; false when it does not fit. */
static bool build_insert(char *sql, size_t cap, const char *head, const char *tail,
                         int n, int ncols)
{
    size_t len = (size_t)snprintf(sql, cap, "%s", head);

    for (int r = 0; r < n && len < cap; r++)
        for (int c = 0; c < ncols && len < cap; c++)
            len += (size_t)snprintf(sql + len, cap - len, "%s%s%s",
                                    c == 0 ? (r == 0 ? "(" : ", (") : "",
                                    c == 0 ? "?" : ", ?", c == ncols - 1 ? ")" : "");
    if (len < cap)
        len += (size_t)snprintf(sql + len, cap - len, "%s", tail);
    return len < cap;
}

/* One INSERT of rows [from, from + n). */
static int insert_rows(struct state *s, struct rowbatch *b, int from, int n,
                       enum state_stmt_id id, const char *head, const char *tail,
                       struct err *e, const char *what)
{
    char sql[8192] = "";
    sqlite3_stmt *st;
    int rc;

    /* The text is only needed to prepare: the statement is usually cached. */
    if ((s->stmt[id] == NULL || sqlite3_stmt_busy(s->stmt[id])) &&
        !build_insert(sql, sizeof(sql), head, tail, n, b->ncols))
        return err_set(e, -EINVAL, "%s: statement too long", what);
    rc = state_stmt(s, id, sql, &st, e);
    if (rc < 0)
        return rc;
    rc = bind_rows(st, b, from, n);
    if (rc != SQLITE_OK)
        rc = state_sqlerr(s, e, rc, "%s: bind", what);
    else if ((rc = sqlite3_step(st)) == SQLITE_DONE)
        rc = 0;
    else
        rc = state_sqlerr(s, e, rc, "%s", what);
    state_stmt_done(s, id, st);
    return rc;
}

int rowbatch_flush(struct state *s, struct rowbatch *b, enum state_stmt_id id_one,
                   enum state_stmt_id id_many, const char *head, const char *tail,
                   struct err *e, const char *what)
{
    int rc = 0;

    if (b->nrows == ROWBATCH_ROWS)
        rc = insert_rows(s, b, 0, ROWBATCH_ROWS, id_many, head, tail, e, what);
    else
        for (int r = 0; rc == 0 && r < b->nrows; r++)
            rc = insert_rows(s, b, r, 1, id_one, head, tail, e, what);
    rowbatch_clear(b);
    return rc;
}
