/* canary.c: canary send/arrival times per mapping and direction. */
#include "canary.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "state_int.h"

#define CANARY_COLUMNS                                                   \
    "mapping, direction, token, sent_us, seen_us, last_latency_us,"      \
    " sent_count, seen_count"

const char *canary_dir_name(enum canary_dir dir)
{
    return dir == CANARY_B_TO_A ? "b_to_a" : "a_to_b";
}

static int canary_check(const char *mapping, enum canary_dir dir,
                        const char *token, bool need_token, struct err *e,
                        const char *what)
{
    if (mapping == NULL || (need_token && token == NULL))
        return err_set(e, -EINVAL, "canary %s: missing mapping or token",
                       what);
    if (dir != CANARY_A_TO_B && dir != CANARY_B_TO_A)
        return err_set(e, -EINVAL, "canary %s: bad direction %d", what,
                       (int)dir);
    return 0;
}

int canary_sent(struct state *s, const char *mapping, enum canary_dir dir,
                const char *token, int64_t sent_us, struct err *e)
{
    sqlite3_stmt *st;
    int rc = canary_check(mapping, dir, token, true, e, "sent");

    if (rc < 0)
        return rc;
    rc = state_stmt(s, ST_CN_SENT,
                    "INSERT INTO canary (mapping, direction, token, sent_us,"
                    " seen_us, sent_count) VALUES (?1, ?2, ?3, ?4, 0, 1)"
                    " ON CONFLICT (mapping, direction) DO UPDATE SET"
                    " token = excluded.token, sent_us = excluded.sent_us,"
                    " seen_us = 0, sent_count = sent_count + 1", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "canary sent", "tttl", mapping,
                    canary_dir_name(dir), token,
                    sent_us != 0 ? sent_us : state_now_us(s));
    if (rc == 0)
        rc = state_step_done(s, st, e, "canary sent");
    state_stmt_done(s, ST_CN_SENT, st);
    return rc;
}

int canary_seen(struct state *s, const char *mapping, enum canary_dir dir,
                const char *token, int64_t seen_us, int64_t *latency_us,
                struct err *e)
{
    sqlite3_stmt *st;
    int rc = canary_check(mapping, dir, token, true, e, "seen");

    if (rc < 0)
        return rc;
    rc = state_stmt(s, ST_CN_SEEN,
                    "UPDATE canary SET seen_us = ?4,"
                    " last_latency_us = ?4 - sent_us, seen_count = seen_count + 1"
                    " WHERE mapping = ?1 AND direction = ?2 AND token = ?3"
                    " AND seen_us = 0 RETURNING last_latency_us", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "canary seen", "tttl", mapping,
                    canary_dir_name(dir), token,
                    seen_us != 0 ? seen_us : state_now_us(s));
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (latency_us != NULL)
                *latency_us = sqlite3_column_int64(st, 0);
            rc = sqlite3_step(st);
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_NOTFOUND;
        }
        if (rc == SQLITE_NOTFOUND)
            rc = err_set(e, -ESTALE, "canary %s of %s %s is not outstanding",
                         token, mapping, canary_dir_name(dir));
        else if (rc != SQLITE_DONE)
            rc = state_sqlerr(s, e, rc, "canary seen %s %s", mapping,
                              canary_dir_name(dir));
        else
            rc = 0;
    }
    state_stmt_done(s, ST_CN_SEEN, st);
    return rc;
}

static int canary_rows(struct state *s, sqlite3_stmt *st, canary_fn fn,
                       void *arg, int *rows, struct err *e)
{
    struct canary_status c;
    int rc, ret;

    for (;;) {
        const char *dir;

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return state_sqlerr(s, e, rc, "canary list");
        memset(&c, 0, sizeof(c));
        c.mapping = state_col_text(st, 0);
        dir = state_col_text(st, 1);
        c.token = state_col_text(st, 2);
        c.sent_us = sqlite3_column_int64(st, 3);
        c.seen_us = sqlite3_column_int64(st, 4);
        c.last_latency_us = sqlite3_column_int64(st, 5);
        c.sent_count = sqlite3_column_int64(st, 6);
        c.seen_count = sqlite3_column_int64(st, 7);
        if (c.mapping == NULL || dir == NULL)
            return err_set(e, -ENOMEM, "canary list: out of memory");
        c.dir = strcmp(dir, "b_to_a") == 0 ? CANARY_B_TO_A : CANARY_A_TO_B;
        (*rows)++;
        ret = fn(&c, arg);
        if (ret != 0)
            return ret;
    }
}

int canary_get(struct state *s, const char *mapping, enum canary_dir dir,
               canary_fn fn, void *arg, struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc = canary_check(mapping, dir, NULL, false, e, "get");

    if (rc == 0 && fn == NULL)
        rc = err_set(e, -EINVAL, "canary get: no callback");
    if (rc < 0)
        return rc;
    rc = state_stmt(s, ST_CN_GET,
                    "SELECT " CANARY_COLUMNS " FROM canary"
                    " WHERE mapping = ?1 AND direction = ?2", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "canary get", "tt", mapping, canary_dir_name(dir));
    if (rc == 0)
        rc = canary_rows(s, st, fn, arg, &rows, e);
    if (rc == 0 && rows == 0)
        rc = err_set(e, -ENOENT, "no canary for %s %s", mapping,
                     canary_dir_name(dir));
    state_stmt_done(s, ST_CN_GET, st);
    return rc;
}

int canary_list(struct state *s, canary_fn fn, void *arg, struct err *e)
{
    sqlite3_stmt *st;
    int rows = 0;
    int rc;

    if (fn == NULL)
        return err_set(e, -EINVAL, "canary list: no callback");
    rc = state_stmt(s, ST_CN_LIST,
                    "SELECT " CANARY_COLUMNS " FROM canary"
                    " ORDER BY mapping, direction", &st, e);
    if (rc < 0)
        return rc;
    rc = canary_rows(s, st, fn, arg, &rows, e);
    state_stmt_done(s, ST_CN_LIST, st);
    return rc;
}
