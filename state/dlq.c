/* dlq.c: dead-letter queue and parked keys. */
#include "dlq.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <stdlib.h>

#include "journal.h"
#include "state_int.h"

#define DLQ_COLUMNS                                                        \
    "id, ts_us, mapping, key, source, target, change_seq, commit_seq,"     \
    " change, error, attempts, status, retry_requested_us, resolved_ts_us"

static const char *const dlq_names[] = {
    [DLQ_OPEN] = "open", [DLQ_RETRIED] = "retried", [DLQ_DROPPED] = "dropped",
    [DLQ_WAITING] = "waiting"
};

const char *dlq_status_name(enum dlq_status st)
{
    if ((unsigned)st < sizeof(dlq_names) / sizeof(dlq_names[0]))
        return dlq_names[st];
    return "unknown";
}

static enum dlq_status dlq_status_parse(const char *v)
{
    if (v != NULL && strcmp(v, "retried") == 0)
        return DLQ_RETRIED;
    if (v != NULL && strcmp(v, "dropped") == 0)
        return DLQ_DROPPED;
    if (v != NULL && strcmp(v, "waiting") == 0)
        return DLQ_WAITING;
    return DLQ_OPEN;
}

/* The open (or waiting) entry already holding journal change seq for
 * target, or 0. */
static int64_t dlq_existing(struct state *s, const char *target, int64_t seq)
{
    sqlite3_stmt *st;
    int64_t id = 0;

    if (seq <= 0 || state_stmt(s, ST_DLQ_EXISTING,
                               "SELECT id FROM dlq WHERE change_seq = ?1 AND target = ?2"
                               " AND status IN ('open', 'waiting') LIMIT 1", &st, NULL) < 0)
        return 0;
    if (state_bind(s, st, NULL, "dlq existing", "lt", seq, target) == 0 &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    state_stmt_done(s, ST_DLQ_EXISTING, st);
    return id;
}

int dlq_add(struct state *s, struct dlq_entry *d, struct err *e)
{
    sqlite3_stmt *st;
    int64_t ts;
    int rc;

    if (d == NULL || d->mapping == NULL || d->target == NULL || d->error == NULL)
        return err_set(e, -EINVAL, "dlq add: missing mapping, target or error");
    if (d->attempts < 0)
        return err_set(e, -EINVAL, "dlq add: negative attempts %d", d->attempts);
    ts = d->ts_us != 0 ? d->ts_us : state_now_us(s);
    /* The same journal change met again (re-read after a crash): one entry. */
    if ((d->id = dlq_existing(s, d->target, d->change_seq)) != 0)
        return 0;
    rc = state_stmt(s, ST_DLQ_ADD,
                    "INSERT INTO dlq (ts_us, mapping, key, source, target,"
                    " change_seq, commit_seq, change, error, attempts, status)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq add", "lttttllttlt", ts, d->mapping, d->key,
                    d->source, d->target, d->change_seq, d->commit_seq,
                    d->change, d->error, (int64_t)d->attempts,
                    d->status == DLQ_WAITING ? "waiting" : "open");
    if (rc == 0)
        rc = state_step_done(s, st, e, "dlq add");
    if (rc == 0) {
        d->id = sqlite3_last_insert_rowid(s->db);
        d->ts_us = ts;
        d->status = d->status == DLQ_WAITING ? DLQ_WAITING : DLQ_OPEN;
        d->retry_requested_us = 0;
        d->resolved_ts_us = 0;
    }
    state_stmt_done(s, ST_DLQ_ADD, st);
    return rc;
}

static int dlq_rows(struct state *s, sqlite3_stmt *st, dlq_fn fn, void *arg,
                    int *rows, struct err *e)
{
    struct dlq_entry d;
    int rc, ret;

    for (;;) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return state_sqlerr(s, e, rc, "dlq list");
        memset(&d, 0, sizeof(d));
        d.id = sqlite3_column_int64(st, 0);
        d.ts_us = sqlite3_column_int64(st, 1);
        d.mapping = state_col_text(st, 2);
        d.key = state_col_text(st, 3);
        d.source = state_col_text(st, 4);
        d.target = state_col_text(st, 5);
        d.change_seq = sqlite3_column_int64(st, 6);
        d.commit_seq = sqlite3_column_int64(st, 7);
        d.change = state_col_text(st, 8);
        d.error = state_col_text(st, 9);
        d.attempts = sqlite3_column_int(st, 10);
        d.status = dlq_status_parse(state_col_text(st, 11));
        d.retry_requested_us = sqlite3_column_int64(st, 12);
        d.resolved_ts_us = sqlite3_column_int64(st, 13);
        if (d.mapping == NULL || d.target == NULL || d.error == NULL)
            return err_set(e, -ENOMEM, "dlq entry %" PRId64 ": out of memory",
                           d.id);
        (*rows)++;
        ret = fn(&d, arg);
        if (ret != 0)
            return ret;
    }
}

int dlq_list(struct state *s, bool history, int limit, dlq_fn fn, void *arg,
             struct err *e)
{
    enum state_stmt_id id = history ? ST_DLQ_LIST_ALL : ST_DLQ_LIST;
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "dlq list: no callback");
    rc = state_stmt(s, id,
                    history ? "SELECT " DLQ_COLUMNS " FROM dlq ORDER BY id LIMIT ?1"
                            : "SELECT " DLQ_COLUMNS " FROM dlq WHERE status = 'open'"
                              " ORDER BY id LIMIT ?1",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq list", "l", (int64_t)(limit > 0 ? limit : -1));
    if (rc == 0)
        rc = dlq_rows(s, st, fn, arg, &rows, e);
    state_stmt_done(s, id, st);
    return rc;
}

int dlq_get(struct state *s, int64_t id, dlq_fn fn, void *arg, struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "dlq get: no callback");
    rc = state_stmt(s, ST_DLQ_GET, "SELECT " DLQ_COLUMNS " FROM dlq WHERE id = ?1",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq get", "l", id);
    if (rc == 0)
        rc = dlq_rows(s, st, fn, arg, &rows, e);
    if (rc == 0 && rows == 0)
        rc = err_set(e, -ENOENT, "no dlq entry %" PRId64, id);
    state_stmt_done(s, ST_DLQ_GET, st);
    return rc;
}

int dlq_list_retry_requested(struct state *s, dlq_fn fn, void *arg,
                             struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "dlq list: no callback");
    rc = state_stmt(s, ST_DLQ_LIST_RETRY,
                    "SELECT " DLQ_COLUMNS " FROM dlq WHERE status = 'open'"
                    " AND retry_requested_us > 0 ORDER BY id", &st, e);
    if (rc < 0)
        return rc;
    rc = dlq_rows(s, st, fn, arg, &rows, e);
    state_stmt_done(s, ST_DLQ_LIST_RETRY, st);
    return rc;
}

int dlq_list_waiting(struct state *s, const char *target, dlq_fn fn, void *arg,
                     struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL || target == NULL)
        return err_set(e, -EINVAL, "dlq list waiting: no callback or target");
    rc = state_stmt(s, ST_DLQ_LIST_WAITING,
                    "SELECT " DLQ_COLUMNS " FROM dlq WHERE status = 'waiting'"
                    " AND target = ?1 ORDER BY id", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq list waiting", "t", target);
    if (rc == 0)
        rc = dlq_rows(s, st, fn, arg, &rows, e);
    state_stmt_done(s, ST_DLQ_LIST_WAITING, st);
    return rc;
}

/* After an UPDATE ... WHERE id = ? AND status = 'open' matched nothing:
 * tells a missing entry (-ENOENT) from a closed one (-EALREADY). */
static int dlq_not_open(struct state *s, int64_t id, struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_DLQ_STATUS, "SELECT status FROM dlq WHERE id = ?1",
                        &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq status", "l", id);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            rc = err_set(e, -EALREADY, "dlq entry %" PRId64 " is already %s", id,
                         dlq_status_name(dlq_status_parse(state_col_text(st, 0))));
        else if (rc == SQLITE_DONE)
            rc = err_set(e, -ENOENT, "no dlq entry %" PRId64, id);
        else
            rc = state_sqlerr(s, e, rc, "dlq status of %" PRId64, id);
    }
    state_stmt_done(s, ST_DLQ_STATUS, st);
    return rc;
}

/* Steps a bound UPDATE on one open entry and reports a non-match. */
static int dlq_update_done(struct state *s, enum state_stmt_id sid,
                           sqlite3_stmt *st, int rc, int64_t id, struct err *e,
                           const char *what)
{
    int changed = 0;

    if (rc == 0)
        rc = state_step_done(s, st, e, what);
    if (rc == 0)
        changed = sqlite3_changes(s->db);
    state_stmt_done(s, sid, st);
    if (rc == 0 && changed == 0)
        rc = dlq_not_open(s, id, e);
    return rc;
}

int dlq_request_retry(struct state *s, int64_t id, struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_DLQ_REQUEST_RETRY,
                        "UPDATE dlq SET retry_requested_us = ?2"
                        " WHERE id = ?1 AND status = 'open'", &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq request retry", "ll", id, state_now_us(s));
    return dlq_update_done(s, ST_DLQ_REQUEST_RETRY, st, rc, id, e,
                           "dlq request retry");
}

int dlq_retry_failed(struct state *s, int64_t id, const char *error,
                     struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_DLQ_RETRY_FAILED,
                        "UPDATE dlq SET attempts = attempts + 1,"
                        " error = coalesce(?2, error), retry_requested_us = 0"
                        " WHERE id = ?1 AND status = 'open'", &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq retry failed", "lt", id, error);
    return dlq_update_done(s, ST_DLQ_RETRY_FAILED, st, rc, id, e,
                           "dlq retry failed");
}

static int dlq_close(struct state *s, int64_t id, enum dlq_status to,
                     struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_DLQ_SET_STATUS,
                        "UPDATE dlq SET status = ?2, resolved_ts_us = ?3,"
                        " attempts = attempts + ?4, retry_requested_us = 0"
                        " WHERE id = ?1 AND status IN ('open', 'waiting')", &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq close", "ltli", id, dlq_status_name(to),
                    state_now_us(s), to == DLQ_RETRIED ? 1 : 0);
    return dlq_update_done(s, ST_DLQ_SET_STATUS, st, rc, id, e,
                           to == DLQ_RETRIED ? "dlq mark retried"
                                             : "dlq mark dropped");
}

int dlq_set_open(struct state *s, int64_t id, const char *error, struct err *e)
{
    sqlite3_stmt *st;
    int rc = state_stmt(s, ST_DLQ_SET_OPEN,
                        "UPDATE dlq SET status = 'open', error = coalesce(?2, error)"
                        " WHERE id = ?1 AND status = 'waiting'", &st, e);

    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq set open", "lt", id, error);
    return dlq_update_done(s, ST_DLQ_SET_OPEN, st, rc, id, e, "dlq set open");
}

int dlq_replay(struct state *s, const struct dlq_entry *d, struct err *e)
{
    json_t *c = d->change ? json_loads(d->change, 0, NULL) : NULL;
    const char *op = json_string_value(json_object_get(c, "op"));
    const char *source = json_string_value(json_object_get(c, "source"));
    char *key = json_dumps(json_object_get(c, "key"), JSON_COMPACT | JSON_ENCODE_ANY);
    char *fields = json_dumps(json_object_get(c, "fields"), JSON_COMPACT | JSON_ENCODE_ANY);
    struct change ch = { 0 };
    int rc;

    if (op == NULL || source == NULL || key == NULL || fields == NULL ||
        strcmp(fields, "null") == 0) {
        rc = err_set(e, -EINVAL, "dlq entry %" PRId64 " holds no replayable change", d->id);
        goto out;
    }
    ch.endpoint = source;
    ch.mapping = d->mapping;
    ch.op = (enum change_op)op[0];
    ch.key = key;
    ch.fields = fields;
    ch.version_us = json_integer_value(json_object_get(c, "version_us"));
    if ((rc = journal_single(s, &ch, NULL, e)) == 0)
        rc = dlq_mark_retried(s, d->id, e);
out:
    free(key);
    free(fields);
    json_decref(c);
    return rc;
}

int dlq_mark_retried(struct state *s, int64_t id, struct err *e)
{
    return dlq_close(s, id, DLQ_RETRIED, e);
}

int dlq_mark_dropped(struct state *s, int64_t id, struct err *e)
{
    return dlq_close(s, id, DLQ_DROPPED, e);
}

/* Runs a cached count query with no parameters. */
static int dlq_count(struct state *s, enum state_stmt_id id, const char *sql,
                     int64_t *out, struct err *e, const char *what)
{
    if (out == NULL)
        return err_set(e, -EINVAL, "%s: no output", what);
    return state_query_int64(s, id, sql, out, e, what);
}

int dlq_count_open(struct state *s, int64_t *out, struct err *e)
{
    return dlq_count(s, ST_DLQ_COUNT_OPEN,
                     "SELECT count(*) FROM dlq WHERE status = 'open'", out, e,
                     "dlq count");
}

int dlq_count_open_key(struct state *s, const char *mapping, const char *key,
                       int64_t *out, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    rc = state_stmt(s, ST_DLQ_COUNT_KEY,
                    "SELECT count(*) FROM dlq WHERE status IN ('open', 'waiting')"
                    " AND mapping = ?1"
                    " AND key = ?2", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "dlq count key", "tt", mapping, key);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "dlq count of mapping %s key %s", mapping, key);
        }
    }
    state_stmt_done(s, ST_DLQ_COUNT_KEY, st);
    return rc;
}

int parked_park_ex(struct state *s, const struct parked_key *p, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (p == NULL || p->mapping == NULL || p->key == NULL || p->reason == NULL)
        return err_set(e, -EINVAL, "park: missing mapping, key or reason");
    rc = state_stmt(s, ST_PK_PARK,
                    "INSERT INTO parked (mapping, key, reason, since_us, target,"
                    " dlq_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    " ON CONFLICT (mapping, key) DO UPDATE SET"
                    " reason = excluded.reason,"
                    " target = coalesce(excluded.target, target),"
                    " dlq_id = CASE WHEN excluded.dlq_id <> 0"
                    "          THEN excluded.dlq_id ELSE dlq_id END,"
                    " detail = coalesce(excluded.detail, detail)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "park", "tttltlt", p->mapping, p->key, p->reason,
                    p->since_us != 0 ? p->since_us : state_now_us(s), p->target,
                    p->dlq_id, p->detail);
    if (rc == 0)
        rc = state_step_done(s, st, e, "park");
    state_stmt_done(s, ST_PK_PARK, st);
    return rc;
}

int parked_park(struct state *s, const char *mapping, const char *key,
                const char *reason, int64_t since_us, struct err *e)
{
    struct parked_key p = {
        .mapping = mapping, .key = key, .reason = reason, .since_us = since_us
    };

    return parked_park_ex(s, &p, e);
}

int parked_unpark(struct state *s, const char *mapping, const char *key,
                  struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL)
        return err_set(e, -EINVAL, "unpark: missing mapping or key");
    rc = state_stmt(s, ST_PK_UNPARK,
                    "DELETE FROM parked WHERE mapping = ?1 AND key = ?2", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "unpark", "tt", mapping, key);
    if (rc == 0)
        rc = state_step_done(s, st, e, "unpark");
    if (rc == 0 && sqlite3_changes(s->db) == 0)
        rc = err_set(e, -ENOENT, "%s %s is not parked", mapping, key);
    state_stmt_done(s, ST_PK_UNPARK, st);
    return rc;
}

int parked_is_parked(struct state *s, const char *mapping, const char *key,
                     bool *out, int64_t *since_us, struct err *e)
{
    return parked_lookup(s, mapping, key, out, since_us, NULL, 0, e);
}

int parked_lookup(struct state *s, const char *mapping, const char *key,
                  bool *out, int64_t *since_us, char *reason, size_t cap,
                  struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL || out == NULL)
        return err_set(e, -EINVAL, "is parked: missing mapping or key");
    rc = state_stmt(s, ST_PK_GET,
                    "SELECT since_us, reason FROM parked WHERE mapping = ?1 AND key = ?2",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "is parked", "tt", mapping, key);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
            *out = rc == SQLITE_ROW;
            if (rc == SQLITE_ROW && since_us != NULL)
                *since_us = sqlite3_column_int64(st, 0);
            if (rc == SQLITE_ROW && reason != NULL && cap > 0)
                snprintf(reason, cap, "%s", state_col_text(st, 1) ? state_col_text(st, 1) : "");
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "is parked %s %s", mapping, key);
        }
    }
    state_stmt_done(s, ST_PK_GET, st);
    return rc;
}

int parked_list(struct state *s, const char *mapping, parked_fn fn, void *arg,
                struct err *e)
{
    enum state_stmt_id id = mapping != NULL ? ST_PK_LIST_MAPPING : ST_PK_LIST;
    struct parked_key p;
    sqlite3_stmt *st;
    int rc, ret = 0;

    if (fn == NULL)
        return err_set(e, -EINVAL, "parked list: no callback");
    rc = state_stmt(s, id,
                    mapping != NULL
                        ? "SELECT mapping, key, reason, since_us, target, dlq_id,"
                          " detail FROM parked WHERE mapping = ?1"
                          " ORDER BY since_us, key"
                        : "SELECT mapping, key, reason, since_us, target, dlq_id,"
                          " detail FROM parked ORDER BY since_us, mapping, key",
                    &st, e);
    if (rc < 0)
        return rc;
    if (mapping != NULL)
        rc = state_bind(s, st, e, "parked list", "t", mapping);
    while (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (rc != SQLITE_ROW) {
            rc = state_sqlerr(s, e, rc, "parked list");
            break;
        }
        rc = 0;
        p.mapping = state_col_text(st, 0);
        p.key = state_col_text(st, 1);
        p.reason = state_col_text(st, 2);
        p.since_us = sqlite3_column_int64(st, 3);
        p.target = state_col_text(st, 4);
        p.dlq_id = sqlite3_column_int64(st, 5);
        p.detail = state_col_text(st, 6);
        if (p.mapping == NULL || p.key == NULL || p.reason == NULL) {
            rc = err_set(e, -ENOMEM, "parked list: out of memory");
            break;
        }
        ret = fn(&p, arg);
        if (ret != 0)
            break;
    }
    state_stmt_done(s, id, st);
    return rc < 0 ? rc : ret;
}

int parked_count_by_reason(struct state *s, parked_count_fn fn, void *arg,
                           struct err *e)
{
    sqlite3_stmt *st;
    int rc, ret = 0;

    if (fn == NULL)
        return err_set(e, -EINVAL, "parked count: no callback");
    rc = state_stmt(s, ST_PK_COUNT_REASON,
                    "SELECT reason, count(*) FROM parked GROUP BY reason"
                    " ORDER BY reason", &st, e);
    if (rc < 0)
        return rc;
    for (;;) {
        const char *reason;

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (rc != SQLITE_ROW) {
            rc = state_sqlerr(s, e, rc, "parked count by reason");
            break;
        }
        reason = state_col_text(st, 0);
        if (reason == NULL) {
            rc = err_set(e, -ENOMEM, "parked count: out of memory");
            break;
        }
        ret = fn(reason, sqlite3_column_int64(st, 1), arg);
        if (ret != 0)
            break;
    }
    state_stmt_done(s, ST_PK_COUNT_REASON, st);
    return rc < 0 ? rc : ret;
}

int parked_count(struct state *s, int64_t *out, struct err *e)
{
    return dlq_count(s, ST_PK_COUNT, "SELECT count(*) FROM parked", out, e,
                     "parked count");
}
