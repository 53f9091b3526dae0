/* shadow.c: last agreed versions per mapping and key; key cross-reference. */
#include "shadow.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "state_int.h"

/* The shadow is keyed by (mapping, klen, key) (schema 7): klen, the key
 * text's length in bytes, makes integer keys sort by value. */
static int64_t key_len(const char *key)
{
    return (int64_t)strlen(key);
}

/* Fills sh from columns hash, fields, version_a_us, version_b_us,
 * tombstone starting at col; fields borrowed (not copied). */
static int shadow_row(struct state *s, sqlite3_stmt *st, int col,
                      struct shadow *sh, const char *key, struct err *e)
{
    const char *hash = state_col_text(st, col);
    size_t n;

    memset(sh, 0, sizeof(*sh));
    if (hash == NULL)
        return err_set(e, -EPROTO, "shadow %s: no hash", key);
    n = (size_t)sqlite3_column_bytes(st, col);
    if (n > SHADOW_HASH_LEN)
        return err_set(e, -EPROTO, "shadow %s: hash of %zu chars (max %d)",
                       key, n, SHADOW_HASH_LEN);
    memcpy(sh->hash, hash, n);
    sh->hash[n] = '\0';
    sh->fields = (char *)state_col_text(st, col + 1);
    sh->version_a_us = sqlite3_column_int64(st, col + 2);
    sh->version_b_us = sqlite3_column_int64(st, col + 3);
    sh->tombstone = sqlite3_column_int(st, col + 4) != 0;
    (void)s;
    return 0;
}

int shadow_get(struct state *s, const char *mapping, const char *key,
               struct shadow *out, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL || out == NULL)
        return err_set(e, -EINVAL, "shadow_get: missing mapping or key");
    memset(out, 0, sizeof(*out));
    if ((rc = shadow_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_SH_GET,
                    "SELECT hash, fields, version_a_us, version_b_us, tombstone"
                    " FROM shadow WHERE mapping = ?1 AND klen = ?3 AND key = ?2",
                    &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "shadow get", "ttl", mapping, key, key_len(key));
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            rc = shadow_row(s, st, 0, out, key, e);
            if (rc == 0 && out->fields != NULL) {
                out->fields = strdup(out->fields);
                if (out->fields == NULL)
                    rc = err_set(e, -ENOMEM, "shadow %s %s: out of memory",
                                 mapping, key);
            }
        } else if (rc == SQLITE_DONE) {
            rc = err_set(e, -ENOENT, "no shadow for %s %s", mapping, key);
        } else {
            rc = state_sqlerr(s, e, rc, "shadow get %s %s", mapping, key);
        }
    }
    state_stmt_done(s, ST_SH_GET, st);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* The rows of a batch are all for one side: the side names which version
 * an existing shadow takes (the other keeps its own). */
#define PUT_SIDE_HEAD \
    "INSERT INTO shadow (mapping, klen, key, hash, fields, version_a_us," \
    " version_b_us, tombstone, updated_at_us) VALUES "
#define PUT_SIDE_TAIL(take) \
    " ON CONFLICT (mapping, klen, key) DO UPDATE SET" \
    " hash = excluded.hash, fields = excluded.fields," \
    " " take " = excluded." take "," \
    " tombstone = excluded.tombstone, updated_at_us = excluded.updated_at_us"

int shadow_flush(struct state *s, struct err *e)
{
    struct rowbatch *b = &s->shadow_rows;

    if (b->nrows == 0)
        return 0;
    if (b->tag == 'a')
        return rowbatch_flush(s, b, ST_SH_PUT_A1, ST_SH_PUT_AN, PUT_SIDE_HEAD,
                              PUT_SIDE_TAIL("version_a_us"), e, "shadow put side a");
    return rowbatch_flush(s, b, ST_SH_PUT_B1, ST_SH_PUT_BN, PUT_SIDE_HEAD,
                          PUT_SIDE_TAIL("version_b_us"), e, "shadow put side b");
}

int shadow_put_side(struct state *s, const char *mapping, const char *key,
                    const struct shadow *sh, char side, struct err *e)
{
    struct rowbatch *b = &s->shadow_rows;
    int rc;

    if (mapping == NULL || key == NULL || sh == NULL || (side != 'a' && side != 'b'))
        return err_set(e, -EINVAL, "shadow_put_side: missing mapping, key or side");
    if (b->nrows > 0 && b->tag != side && (rc = shadow_flush(s, e)) < 0)
        return rc;
    b->tag = side;
    /* A new shadow has 0 for the other side's version. */
    if (rowbatch_add(b, "tltttllll", mapping, key_len(key), key, sh->hash, sh->fields,
                     side == 'a' ? sh->version_a_us : (int64_t)0,
                     side == 'b' ? sh->version_b_us : (int64_t)0,
                     (int64_t)(sh->tombstone ? 1 : 0), state_now_us(s)) != 0)
        return err_set(e, -ENOMEM, "shadow put side %s %s: out of memory", mapping, key);
    if (b->nrows == ROWBATCH_ROWS || !state_in_txn(s))
        return shadow_flush(s, e);
    return 0;
}

int shadow_put(struct state *s, const char *mapping, const char *key,
               const struct shadow *sh, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL || sh == NULL)
        return err_set(e, -EINVAL, "shadow_put: missing mapping or key");
    if (strnlen(sh->hash, sizeof(sh->hash)) == sizeof(sh->hash))
        return err_set(e, -EINVAL, "shadow_put %s %s: hash not terminated",
                       mapping, key);
    if ((rc = shadow_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_SH_PUT,
                    "INSERT INTO shadow (mapping, key, hash, fields, version_a_us,"
                    " version_b_us, tombstone, updated_at_us, klen)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    " ON CONFLICT (mapping, klen, key) DO UPDATE SET"
                    " hash = excluded.hash, fields = excluded.fields,"
                    " version_a_us = excluded.version_a_us,"
                    " version_b_us = excluded.version_b_us,"
                    " tombstone = excluded.tombstone,"
                    " updated_at_us = excluded.updated_at_us", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "shadow put", "ttttllbll", mapping, key, sh->hash,
                    sh->fields, sh->version_a_us, sh->version_b_us,
                    (int)sh->tombstone, state_now_us(s), key_len(key));
    if (rc == 0)
        rc = state_step_done(s, st, e, "shadow put");
    state_stmt_done(s, ST_SH_PUT, st);
    return rc;
}

void shadow_clear(struct shadow *sh)
{
    if (sh == NULL)
        return;
    free(sh->fields);
    memset(sh, 0, sizeof(*sh));
}

int64_t shadow_side_version(const struct shadow *sh, char side)
{
    return side == 'b' ? sh->version_b_us : sh->version_a_us;
}

int64_t shadow_version(const struct shadow *sh)
{
    return sh->version_a_us > sh->version_b_us ? sh->version_a_us : sh->version_b_us;
}

/* Runs a cached DELETE keyed by two texts; -ENOENT when nothing matched. */
static int shadow_delete2(struct state *s, enum state_stmt_id id,
                          const char *sql, const char *k1, const char *k2,
                          struct err *e, const char *what)
{
    sqlite3_stmt *st;
    int rc;

    if (k1 == NULL || k2 == NULL)
        return err_set(e, -EINVAL, "%s: missing mapping or key", what);
    rc = state_stmt(s, id, sql, &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, what, "tt", k1, k2);
    if (rc == 0)
        rc = state_step_done(s, st, e, what);
    if (rc == 0 && sqlite3_changes(s->db) == 0)
        rc = err_set(e, -ENOENT, "%s %s %s: none", what, k1, k2);
    state_stmt_done(s, id, st);
    return rc;
}

int shadow_delete(struct state *s, const char *mapping, const char *key,
                  struct err *e)
{
    int rc = shadow_flush(s, e);

    if (rc < 0)
        return rc;
    return shadow_delete2(s, ST_SH_DELETE,
                          "DELETE FROM shadow WHERE mapping = ?1"
                          " AND klen = length(CAST(?2 AS BLOB)) AND key = ?2",
                          mapping, key, e, "shadow delete");
}

int shadow_scan(struct state *s, const char *mapping, const char *after_key,
                int limit, shadow_fn fn, void *arg, struct err *e)
{
    struct shadow sh;
    sqlite3_stmt *st;
    int rc, ret = 0;

    if (mapping == NULL || fn == NULL)
        return err_set(e, -EINVAL, "shadow scan: missing mapping or callback");
    if ((rc = shadow_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_SH_SCAN,
                    "SELECT key, hash, fields, version_a_us, version_b_us, tombstone"
                    " FROM shadow WHERE mapping = ?1 AND (?2 IS NULL OR"
                    " (klen, key) > (length(CAST(?2 AS BLOB)), ?2))"
                    " ORDER BY klen, key LIMIT ?3", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "shadow scan", "ttl", mapping, after_key,
                    (int64_t)(limit > 0 ? limit : -1));
    while (rc == 0) {
        const char *key;

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (rc != SQLITE_ROW) {
            rc = state_sqlerr(s, e, rc, "shadow scan of %s", mapping);
            break;
        }
        rc = 0;
        key = state_col_text(st, 0);
        if (key == NULL) {
            rc = err_set(e, -ENOMEM, "shadow scan of %s: out of memory", mapping);
            break;
        }
        rc = shadow_row(s, st, 1, &sh, key, e);
        if (rc < 0)
            break;
        ret = fn(key, &sh, arg);
        if (ret != 0)
            break;
    }
    state_stmt_done(s, ST_SH_SCAN, st);
    return rc < 0 ? rc : ret;
}

int shadow_count(struct state *s, const char *mapping, bool with_tombstones,
                 int64_t *out, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || out == NULL)
        return err_set(e, -EINVAL, "shadow count: missing mapping");
    if ((rc = shadow_flush(s, e)) < 0)
        return rc;
    rc = state_stmt(s, ST_SH_COUNT,
                    "SELECT count(*) FROM shadow WHERE mapping = ?1"
                    " AND (?2 OR tombstone = 0)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "shadow count", "tb", mapping, (int)with_tombstones);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = 0;
        } else {
            rc = state_sqlerr(s, e, rc, "shadow count of %s", mapping);
        }
    }
    state_stmt_done(s, ST_SH_COUNT, st);
    return rc;
}

int xref_put(struct state *s, const char *mapping, const char *key_a,
             const char *key_b, struct err *e)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key_a == NULL || key_b == NULL)
        return err_set(e, -EINVAL, "xref_put: missing mapping or key");
    /* REPLACE drops a row conflicting on either key: one pairing each. */
    rc = state_stmt(s, ST_XR_PUT,
                    "INSERT OR REPLACE INTO xref (mapping, key_a, key_b,"
                    " updated_at_us) VALUES (?1, ?2, ?3, ?4)", &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, "xref put", "tttl", mapping, key_a, key_b,
                    state_now_us(s));
    if (rc == 0)
        rc = state_step_done(s, st, e, "xref put");
    state_stmt_done(s, ST_XR_PUT, st);
    return rc;
}

static int xref_get(struct state *s, enum state_stmt_id id, const char *sql,
                    const char *mapping, const char *key, char *buf, size_t cap,
                    struct err *e, const char *what)
{
    sqlite3_stmt *st;
    int rc;

    if (mapping == NULL || key == NULL)
        return err_set(e, -EINVAL, "%s: missing mapping or key", what);
    rc = state_stmt(s, id, sql, &st, e);
    if (rc < 0)
        return rc;
    rc = state_bind(s, st, e, what, "tt", mapping, key);
    if (rc == 0) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            rc = state_column_copy(s, st, 0, buf, cap, e, what);
        else if (rc == SQLITE_DONE)
            rc = err_set(e, -ENOENT, "%s %s %s: unknown", what, mapping, key);
        else
            rc = state_sqlerr(s, e, rc, "%s %s %s", what, mapping, key);
    }
    state_stmt_done(s, id, st);
    return rc;
}

int xref_get_b(struct state *s, const char *mapping, const char *key_a,
               char *buf, size_t cap, struct err *e)
{
    return xref_get(s, ST_XR_GET_B,
                    "SELECT key_b FROM xref WHERE mapping = ?1 AND key_a = ?2",
                    mapping, key_a, buf, cap, e, "xref of a key");
}

int xref_get_a(struct state *s, const char *mapping, const char *key_b,
               char *buf, size_t cap, struct err *e)
{
    return xref_get(s, ST_XR_GET_A,
                    "SELECT key_a FROM xref WHERE mapping = ?1 AND key_b = ?2",
                    mapping, key_b, buf, cap, e, "xref of b key");
}

int xref_delete(struct state *s, const char *mapping, const char *key_a,
                struct err *e)
{
    return shadow_delete2(s, ST_XR_DELETE,
                          "DELETE FROM xref WHERE mapping = ?1 AND key_a = ?2",
                          mapping, key_a, e, "xref delete");
}
