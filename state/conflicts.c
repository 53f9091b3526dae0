/* conflicts.c: the conflict log. */
#include "conflicts.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "state_int.h"

#define CONFLICT_COLUMNS                                                     \
    "id, ts_us, mapping, key, strategy, base, side_a, side_b, result, rule," \
    " open, version_a_us, version_b_us, coalesce(resolved_ts_us, 0), decisions"

int conflict_record(struct state *s, struct conflict *c, struct err *e)
{
    sqlite3_stmt *st;
    int64_t ts;
    int rc;

    if (c == NULL || c->mapping == NULL || c->key == NULL || c->strategy == NULL)
        return err_set(e, -EINVAL, "conflict record: missing mapping, key or "
                                   "strategy");
    ts = c->ts_us != 0 ? c->ts_us : state_now_us(s);
    rc = state_stmt(s, ST_CF_INSERT,
                    "INSERT INTO conflicts (ts_us, mapping, key, strategy, base,"
                    " side_a, side_b, result, rule, open, version_a_us,"
                    " version_b_us, resolved_ts_us, decisions)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                    " CASE WHEN ?10 THEN NULL ELSE ?1 END, ?13)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict record", "lttttttttbllt", ts, c->mapping,
                    c->key, c->strategy, c->base, c->side_a, c->side_b,
                    c->result, c->rule, (int)c->open, c->version_a_us,
                    c->version_b_us, c->decisions);
    if (rc == 0)
        rc = state_step_done(s, st, e, "conflict record");
    if (rc == 0) {
        c->id = sqlite3_last_insert_rowid(s->db);
        c->ts_us = ts;
        c->resolved_ts_us = c->open ? 0 : ts;
    }
    state_stmt_done(s, ST_CF_INSERT, st);
    return rc;
}

/* Steps st, calling fn for each row; returns fn's nonzero value, an error,
 * or 0 with *rows counting the rows seen. */
static int conflict_rows(struct state *s, sqlite3_stmt *st, conflict_fn fn,
                         void *arg, int *rows, struct err *e)
{
    struct conflict c;
    int rc, ret;

    for (;;) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return state_sqlerr(s, e, rc, "conflict list");
        memset(&c, 0, sizeof(c));
        c.id = sqlite3_column_int64(st, 0);
        c.ts_us = sqlite3_column_int64(st, 1);
        c.mapping = state_col_text(st, 2);
        c.key = state_col_text(st, 3);
        c.strategy = state_col_text(st, 4);
        c.base = state_col_text(st, 5);
        c.side_a = state_col_text(st, 6);
        c.side_b = state_col_text(st, 7);
        c.result = state_col_text(st, 8);
        c.rule = state_col_text(st, 9);
        c.open = sqlite3_column_int(st, 10) != 0;
        c.version_a_us = sqlite3_column_int64(st, 11);
        c.version_b_us = sqlite3_column_int64(st, 12);
        c.resolved_ts_us = sqlite3_column_int64(st, 13);
        c.decisions = state_col_text(st, 14);
        if (c.mapping == NULL || c.key == NULL || c.strategy == NULL)
            return err_set(e, -ENOMEM, "conflict %" PRId64 ": out of memory",
                           c.id);
        (*rows)++;
        ret = fn(&c, arg);
        if (ret != 0)
            return ret;
    }
}

json_t *conflict_to_json(const struct conflict *c)
{
    json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:b}",
                          "id", (json_int_t)c->id, "ts_us", (json_int_t)c->ts_us,
                          "mapping", c->mapping, "key", c->key, "strategy", c->strategy,
                          "base", c->base, "a", c->side_a, "b", c->side_b,
                          "result", c->result, "rule", c->rule, "open", c->open);
    json_t *d = c->decisions ? json_loads(c->decisions, 0, NULL) : NULL;

    if (o != NULL)
        json_object_set_new(o, "decisions", d ? d : json_null());
    else
        json_decref(d);
    return o;
}

int conflict_list(struct state *s, bool open_only, int limit, conflict_fn fn,
                  void *arg, struct err *e)
{
    enum state_stmt_id id = open_only ? ST_CF_LIST_OPEN : ST_CF_LIST;
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "conflict list: no callback");
    rc = state_stmt(s, id,
                    open_only ? "SELECT " CONFLICT_COLUMNS " FROM conflicts"
                                " WHERE open = 1 ORDER BY id DESC LIMIT ?1"
                              : "SELECT " CONFLICT_COLUMNS " FROM conflicts"
                                " ORDER BY id DESC LIMIT ?1",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict list", "l",
                    (int64_t)(limit > 0 ? limit : -1));
    if (rc == 0)
        rc = conflict_rows(s, st, fn, arg, &rows, e);
    state_stmt_done(s, id, st);
    return rc;
}

int conflict_get(struct state *s, int64_t id, conflict_fn fn, void *arg,
                 struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "conflict get: no callback");
    rc = state_stmt(s, ST_CF_GET,
                    "SELECT " CONFLICT_COLUMNS " FROM conflicts WHERE id = ?1",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict get", "l", id);
    if (rc == 0)
        rc = conflict_rows(s, st, fn, arg, &rows, e);
    if (rc == 0 && rows == 0)
        rc = err_set(e, -ENOENT, "no conflict %" PRId64, id);
    state_stmt_done(s, ST_CF_GET, st);
    return rc;
}

int conflict_resolve(struct state *s, int64_t id, const char *result,
                     const char *rule, struct err *e)
{
    sqlite3_stmt *st;
    int rc, changed = 0;

    if (result == NULL)
        return err_set(e, -EINVAL, "conflict %" PRId64 ": resolve without result",
                       id);
    rc = state_stmt(s, ST_CF_RESOLVE,
                    "UPDATE conflicts SET open = 0, result = ?2,"
                    " rule = coalesce(?3, rule), resolved_ts_us = ?4"
                    " WHERE id = ?1 AND open = 1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict resolve", "lttl", id, result, rule,
                    state_now_us(s));
    if (rc == 0)
        rc = state_step_done(s, st, e, "conflict resolve");
    if (rc == 0)
        changed = sqlite3_changes(s->db);
    state_stmt_done(s, ST_CF_RESOLVE, st);
    if (rc < 0 || changed > 0)
        return rc;
    rc = state_stmt(s, ST_CF_EXISTS, "SELECT open FROM conflicts WHERE id = ?1",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict resolve", "l", id);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            rc = err_set(e, -EALREADY, "conflict %" PRId64 " is already resolved",
                         id);
        else if (rc == SQLITE_DONE)
            rc = err_set(e, -ENOENT, "no conflict %" PRId64, id);
        else
            rc = state_sqlerr(s, e, rc, "conflict resolve %" PRId64, id);
    }
    state_stmt_done(s, ST_CF_EXISTS, st);
    return rc;
}

int conflict_resolve_key(struct state *s, const char *mapping, const char *key,
                         const char *result, const char *rule, int *closed,
                         struct err *e)
{
    int rc;

    if (mapping == NULL || key == NULL || result == NULL || rule == NULL)
        return err_set(e, -EINVAL, "conflict resolve key: missing argument");
    rc = state_write(s, ST_CF_RESOLVE_KEY,
                     "UPDATE conflicts SET open = 0, result = ?3, rule = ?4,"
                     " resolved_ts_us = ?5 WHERE mapping = ?1 AND key = ?2 AND open = 1",
                     e, "conflict resolve key", "ttttl", mapping, key, result, rule,
                     state_now_us(s));
    if (rc == 0 && closed != NULL)
        *closed = sqlite3_changes(s->db);
    return rc;
}

int conflict_count(struct state *s, bool open_only, int64_t *out,
                   struct err *e)
{
    enum state_stmt_id id = open_only ? ST_CF_COUNT_OPEN : ST_CF_COUNT;

    if (out == NULL)
        return err_set(e, -EINVAL, "conflict count: no output");
    return state_query_int64(s, id,
                             open_only ? "SELECT count(*) FROM conflicts WHERE open = 1"
                                       : "SELECT count(*) FROM conflicts",
                             out, e, "conflict count");
}

int conflict_tally_since(struct state *s, int64_t *last, conflict_tally_fn fn,
                         void *arg, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (last == NULL || fn == NULL)
        return err_set(e, -EINVAL, "conflict tally: no position or callback");
    rc = state_stmt(s, ST_CF_TALLY,
                    "SELECT mapping, strategy, count(*), max(id) FROM conflicts"
                    " WHERE id > ?1 GROUP BY mapping, strategy", &st, e);
    if (rc < 0)
        return rc;
    if ((rc = state_bind(s, st, e, "conflict tally", "l", *last)) != 0)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t newest = sqlite3_column_int64(st, 3);

        fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_int64(st, 2), arg);
        if (newest > *last)
            *last = newest;
    }
    rc = rc == SQLITE_DONE ? 0 : state_sqlerr(s, e, rc, "conflict tally");
    sqlite3_reset(st);
    return rc;
}

int conflict_find_open(struct state *s, const char *mapping, const char *key,
                       int64_t *id, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL || id == NULL)
        return err_set(e, -EINVAL, "conflict find: missing mapping or key");
    rc = state_stmt(s, ST_CF_FIND_OPEN,
                    "SELECT max(id) FROM conflicts"
                    " WHERE mapping = ?1 AND key = ?2 AND open = 1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "conflict find", "tt", mapping, key);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *id = sqlite3_column_int64(st, 0);
            rc = 0;
        } else if (rc == SQLITE_ROW) {
            rc = err_set(e, -ENOENT, "no open conflict for %s %s", mapping, key);
        } else {
            rc = state_sqlerr(s, e, rc, "conflict find %s %s", mapping, key);
        }
    }
    state_stmt_done(s, ST_CF_FIND_OPEN, st);
    return rc;
}
