/* pgsink.c: the PostgreSQL writer (pgsink.h): feeds journal transactions
 * through a libpq pipeline, reads the answers, keeps the connection.
 * Conflicts on a changed target row: pgsink_conflict.c. */
#include "pgsink.h"

#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../daemon/backoff.h"
#include "../../daemon/log.h"
#include "../../daemon/strbuf.h"
#include "../../resolver/canon.h"
#include "../../resolver/flatobj.h"
#include "../../resolver/resolver.h"
#include "../../state/dlq.h"
#include "../../state/journal.h"
#include "../../state/shadow.h"
#include "pgconn.h"
#include "pgoutput.h"
#include "pgsink_int.h"
#include "pgstmt.h"

#define WINDOW 4000            /* queries in flight */
#define SLICE 500              /* changes read from the journal at once */
#define GROUP_CHANGES 5000     /* close a target transaction past this */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define DRAIN_MS 5000           /* stopping: longest wait for the last commit */


static void sink_connect(struct pgsink *s);
static void feed(struct pgsink *s);
static void fast_reset(struct pgsink *s);
static bool held_by_parked_key(struct pgsink *s, const struct change *c, bool *retrying);
static void wait_for_parent(struct pgsink *s, const struct q_entry *q, const char *msg);
static bool resolved_in_c(const struct cfg_mapping *m);
static void finish_close(struct pgsink *s);
static void drain_check(struct pgsink *s);
static void drain_failed(struct pgsink *s, const char *err);

/* ---- the in-flight queue ---- */

static struct q_entry *q_push(struct pgsink *s, enum q_kind kind)
{
    struct q_entry *e;

    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 256;
        struct q_entry *n = malloc(ncap * sizeof(*n));
        if (n == NULL)
            return NULL;
        for (size_t i = 0; i < s->qlen; i++)
            n[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = n;
        s->qcap = ncap;
        s->qhead = 0;
    }
    e = &s->q[(s->qhead + s->qlen++) % s->qcap];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    if (kind == Q_STMT)
        s->stmts_out++;
    return e;
}

static void q_entry_free(struct q_entry *e)
{
    free(e->mapping);
    free(e->key);
    free(e->incoming);
    free(e->base);
    free(e->source);
    memset(e, 0, sizeof(*e));
}

static struct q_entry *q_head(struct pgsink *s)
{
    return s->qlen ? &s->q[s->qhead] : NULL;
}

/* The entry pushed last (the queue is not empty). */
static struct q_entry *q_tail(struct pgsink *s)
{
    return &s->q[(s->qhead + s->qlen - 1) % s->qcap];
}

static void q_pop(struct pgsink *s)
{
    if (s->q[s->qhead].kind == Q_STMT)
        s->stmts_out--;
    q_entry_free(&s->q[s->qhead]);
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
}

static void q_clear(struct pgsink *s)
{
    while (s->qlen)
        q_pop(s);
}

/* ---- helpers ---- */

static bool excluded(const struct pgsink *s, int64_t seq)
{
    for (size_t i = 0; i < s->nexcluded; i++)
        if (s->excluded[i] == seq)
            return true;
    return false;
}

static void exclude(struct pgsink *s, int64_t seq)
{
    int64_t *n = realloc(s->excluded, (s->nexcluded + 1) * sizeof(*n));

    if (n == NULL)
        return;
    s->excluded = n;
    s->excluded[s->nexcluded++] = seq;
}

/* Whether the change being sent is part of a redo after a failed
 * multi-row or clean-update statement: it then goes per row. */
static bool careful(const struct pgsink *s)
{
    return (s->cur_txn_seq != 0 && s->cur_txn_seq <= s->careful_until) ||
           (s->careful_txn != 0 && s->cur_txn == s->careful_txn);
}

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "2026-11-27 10:00:00.123456+00" from µs since the Unix epoch. */
static void format_ts(int64_t us, char *buf, size_t cap)
{
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(us % 1000000));
}

static void clear_stmts(struct pgsink *s)
{
    for (size_t i = 0; i < s->nstmts; i++)
        free(s->stmts[i].sig);
    free(s->stmts);
    s->stmts = NULL;
    s->nstmts = 0;
}

static bool send_plain(struct pgsink *s, enum q_kind kind, const char *sql,
                       int n, const char *const *vals)
{
    if (PQsendQueryParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0) != 1)
        return false;
    return q_push(s, kind) != NULL;
}

/* The prepared statement whose signature is sig: when new, build writes
 * its SQL into s->sql and it is prepared in the pipeline. NULL on failure. */
static const char *prepared(struct pgsink *s, const struct strbuf *sig,
                            void (*build)(struct pgsink *, const void *), const void *arg)
{
    struct stmt *n;

    if (sig->failed)
        return NULL;
    for (size_t i = 0; i < s->nstmts; i++)
        if (strcmp(s->stmts[i].sig, sig->buf) == 0)
            return s->stmts[i].name;
    strbuf_reset(&s->sql);
    build(s, arg);
    n = realloc(s->stmts, (s->nstmts + 1) * sizeof(*n));
    if (s->sql.failed || n == NULL)
        return NULL;
    s->stmts = n;
    n = &s->stmts[s->nstmts];
    snprintf(n->name, sizeof(n->name), "tandem_%u", ++s->stmt_counter);
    if (PQsendPrepare(s->conn, n->name, s->sql.buf, 0, NULL) != 1 ||
        q_push(s, Q_PREPARE) == NULL || (n->sig = strdup(sig->buf)) == NULL)
        return NULL;
    s->nstmts++;
    return n->name;
}

static void build_shape_sql(struct pgsink *s, const void *sh)
{
    pgstmt_sql(s->conn, s->track_ts, s->track_ts ? s->origin_id : 0, sh, &s->sql);
}

/* The prepared statement for the shape, prepared in the pipeline when new;
 * NULL on failure. */
static const char *stmt_for(struct pgsink *s, const struct pgstmt_shape *sh)
{
    struct strbuf sig;
    const char *name;

    strbuf_init(&sig);
    pgstmt_sig(sh, &sig);
    name = prepared(s, &sig, build_shape_sql, sh);
    strbuf_free(&sig);
    return name;
}

/* ---- one change ---- */

struct change_ctx {
    struct pgsink *s;
    int err;
    int count;
    struct err e;
};

static bool mapping_targets(const struct pgsink *s, const struct cfg_mapping *m,
                            const char *source, const struct cfg_side **target)
{
    bool from_a = strcmp(m->a.endpoint, source) == 0;
    bool from_b = strcmp(m->b.endpoint, source) == 0;

    if (from_a && m->b.ep == s->ep && m->direction != CFG_DIR_B_TO_A) {
        *target = &m->b;
        return true;
    }
    if (from_b && m->a.ep == s->ep && m->direction != CFG_DIR_A_TO_B) {
        *target = &m->a;
        return true;
    }
    return false;
}

static const char *target_name(const struct cfg_mapping *m,
                               const struct cfg_side *t, const char *a_name)
{
    return t == &m->a ? a_name : config_field_a_to_b(m, a_name);
}

static bool in_list(const json_t *list, const char *name)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return true;
    return false;
}

/* The shadow after an insert or a whole update: its fields, as agreed by
 * both sides now (the other side's version kept). */
static void shadow_after_insert(struct pgsink *s, const struct change *c,
                                const struct cfg_mapping *m,
                                const char hash[CANON_HASH_HEX + 1])
{
    struct shadow next = { 0 };
    bool from_a = m != NULL && strcmp(m->a.endpoint, c->endpoint) == 0;

    next.fields = (char *)c->fields;
    memcpy(next.hash, hash, CANON_HASH_HEX + 1);
    next.version_a_us = next.version_b_us = c->version_us;
    if (state_begin(s->st, NULL) == 0)
        shadow_put_side(s->st, c->mapping, c->key, &next, from_a ? 'a' : 'b', NULL);
}

/* An update captured from PostgreSQL with its whole new row (no unchanged
 * TOAST value) and its before-image: the new shadow is its fields, and the
 * before-image, not the shadow, is its base. No merge with the old shadow
 * is needed. */
static bool whole_update(struct pgsink *s, const struct change *c)
{
    const struct cfg_endpoint *src;

    if (c->op != CHANGE_UPDATE || c->unchanged != NULL || c->old_fields == NULL)
        return false;
    src = config_endpoint(s->cfg, c->endpoint);
    return src != NULL && src->kind == CFG_KIND_POSTGRES;
}

/* Computes and saves the shadow this change leads to from old (what the
 * shadow held; NULL: nothing, or not read for an insert or whole update);
 * returns the base (old's fields) or NULL. */
static json_t *advance_shadow(struct pgsink *s, const struct change *c,
                              const json_t *fields, const struct shadow *old)
{
    struct shadow next = { 0 };
    json_t *base = NULL, *merged;
    const char *k;
    json_t *v;
    bool from_a;
    const struct cfg_mapping *m = config_mapping(s->cfg, c->mapping);

    from_a = m != NULL && strcmp(m->a.endpoint, c->endpoint) == 0;
    if (c->op == CHANGE_INSERT || whole_update(s, c)) {
        canon_hash(fields, next.hash);
        shadow_after_insert(s, c, m, next.hash);
        return NULL;
    }
    if (old != NULL) {
        base = old->fields ? json_loads(old->fields, 0, NULL) : NULL;
        next.version_a_us = old->version_a_us;
        next.version_b_us = old->version_b_us;
    }
    merged = (base && c->op != CHANGE_DELETE) ? json_deep_copy(base) : json_object();
    json_object_foreach((json_t *)fields, k, v)
        json_object_set(merged, k, v);
    next.fields = json_dumps(merged, JSON_COMPACT);
    canon_hash(merged, next.hash);
    next.tombstone = c->op == CHANGE_DELETE;
    if (from_a)
        next.version_a_us = c->version_us;
    else
        next.version_b_us = c->version_us;
    if (next.fields != NULL && state_begin(s->st, NULL) == 0)
        shadow_put(s->st, c->mapping, c->key, &next, NULL);
    free(next.fields);
    json_decref(merged);
    if (old != NULL && old->tombstone) {
        json_decref(base);
        base = NULL;
    }
    return base;
}

/* Whether a change goes as the clean update alone ('F' in
 * sink_send_write): a whole update outside a redo. A missing or changed
 * row fails it, and the redo sends the conditional statement. */
static bool clean_update_alone(struct pgsink *s, const struct change *c,
                               const struct cfg_mapping *m)
{
    return whole_update(s, c) && !resolved_in_c(m) && !m->canary_enabled && !careful(s);
}

/* G5: a change older than the delete of its record does not bring the
 * record back; it is dropped and counted. */
static void count_stale(struct pgsink *s, const char *mapping, const char *key,
                        int64_t version_us, int64_t newer_us)
{
    char ver[24], del[24];

    snprintf(ver, sizeof(ver), "%" PRId64, version_us);
    snprintf(del, sizeof(del), "%" PRId64, newer_us);
    s->stats.stale_dropped++;
    log_info("pgsink", "stale change dropped: older than the delete of its record",
             "endpoint", s->ep->name, "mapping", mapping, "key", key,
             "version_us", ver, "deleted_us", del);
}

struct params {
    const char *v[256];
    int n;
    bool overflow;
};

static void param_add(struct params *p, const char *v)
{
    if (p->n >= 256) {
        p->overflow = true;
        return;
    }
    p->v[p->n++] = v;
}

static const char *json_text(const json_t *v)
{
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* How a conflict (target row neither the base nor the incoming values) is
 * decided in SQL: "0" by last write (commit timestamps, ties by endpoint
 * name), "1" the incoming change wins, "2" the target row is kept. */
static const char *conflict_mode(const struct cfg_mapping *m,
                                 const struct cfg_side *target)
{
    char target_side = target == &m->a ? 'a' : 'b';

    if (resolved_in_c(m))
        return "2";     /* the resolver decides */
    switch (m->strategy) {
    case CFG_STRAT_PRIORITY:
        return m->priority == target_side ? "2" : "1";
    case CFG_STRAT_MANUAL:
    case CFG_STRAT_FIELD_MERGE:
    case CFG_STRAT_PLUGIN:
        return "2";     /* field_merge, plugin: then the resolver decides */
    default:
        return "0";
    }
}

/* True when the resolver, not the conditional statement, decides the
 * mapping's conflicts: field_merge, plugin, and last_write_wins by a
 * mapped timestamp_field (the versions are the two rows' values of it,
 * read and compared as the resolver does for every peer, not commit
 * times; an unmapped one is not in the rows, and commit times decide). */
static bool resolved_in_c(const struct cfg_mapping *m)
{
    return m->strategy == CFG_STRAT_FIELD_MERGE || m->strategy == CFG_STRAT_PLUGIN ||
           (m->strategy == CFG_STRAT_LWW && m->timestamp_field != NULL &&
            config_field_a_to_b(m, m->timestamp_field) != NULL);
}


int sink_send_write(struct pgsink *s, const struct write_req *w, struct err *e)
{
    const char *keycols[64], *setcols[128], *basecols[128], *k, *name;
    struct pgstmt_shape sh = { w->m, w->t, w->op != CHANGE_DELETE ? 'U'
                                    : w->m->deletes == CFG_DEL_SOFT ? 'S' : 'D',
                        keycols, 0, setcols, 0, basecols, 0 };
    struct params p = { .n = 0 };
    char ver[24];
    json_t *v;
    struct q_entry *q;

    for (size_t i = 0; i < w->t->nkey; i++) {
        keycols[sh.nkey++] = w->t->key[i];
        param_add(&p, json_text(json_array_get(w->keyarr, i)));
    }
    if (sh.op == 'U') {
        json_object_foreach((json_t *)w->fields, k, v) {
            if ((name = target_name(w->m, w->t, k)) == NULL || sh.nset >= 128)
                continue;
            setcols[sh.nset++] = name;
            param_add(&p, json_text(v));
        }
    }
    if (w->base != NULL) {
        json_object_foreach((json_t *)w->base, k, v) {
            if ((name = target_name(w->m, w->t, k)) == NULL || in_list(w->unch, k) ||
                sh.nbase >= 128)
                continue;
            basecols[sh.nbase++] = name;
            param_add(&p, json_text(v));
        }
    }
    /* An update with a base, outside a redo: most likely clean. */
    if (sh.op == 'U' && w->op == CHANGE_UPDATE && w->base != NULL && w->may_be_fast &&
        !w->m->canary_enabled && !careful(s))
        sh.op = 'F';
    if (sh.op != 'F') {
        snprintf(ver, sizeof(ver), "%" PRId64, w->version_us);
        param_add(&p, ver);
        param_add(&p, strcmp(w->source, s->ep->name) > 0 ? "true" : "false");
        param_add(&p, w->mode);
    }
    if (sh.op == 'U')
        param_add(&p, w->keep_missing_us > 0 ? "true" : "false");
    if (p.overflow)
        return err_set(e, -E2BIG, "change %" PRId64 " has too many columns", w->seq);
    if ((name = stmt_for(s, &sh)) == NULL ||
        PQsendQueryPrepared(s->conn, name, p.n, p.v, NULL, NULL, 0) != 1 ||
        (q = q_push(s, sh.op == 'F' ? Q_FAST_UPDATE : Q_STMT)) == NULL)
        return err_set(e, -EIO, "cannot send change %" PRId64, w->seq);
    q->seq = w->seq;
    q->op = w->op;
    q->had_base = w->base != NULL;
    q->keep_missing_us = sh.op == 'U' ? w->keep_missing_us : 0;
    q->version_us = w->version_us;
    q->mapping = strdup(w->mapping);
    q->key = strdup(w->key);
    q->incoming = strdup(w->incoming);
    q->base = w->base ? json_dumps(w->base, JSON_COMPACT) : NULL;
    q->source = strdup(w->source);
    return 0;
}

static int send_change(struct pgsink *s, const struct change *c,
                       const struct cfg_mapping *m, const struct cfg_side *t,
                       struct err *e)
{
    json_t *fields = json_loads(c->fields, 0, NULL);
    json_t *unch = c->unchanged ? json_loads(c->unchanged, 0, NULL) : NULL;
    json_t *keyarr = json_loads(c->old_key ? c->old_key : c->key, 0, NULL);
    json_t *base = NULL;
    /* A change the resolver may decide waits for the full statement's
     * answer (a barrier): it does not go alone. */
    struct write_req w = { m, t, c->seq, (char)c->op, keyarr,
                           fields, NULL, unch, conflict_mode(m, t), c->version_us,
                           c->endpoint, c->mapping, c->key, c->fields, !resolved_in_c(m), false };
    struct shadow old = { 0 };
    bool have_old = false;
    int rc;

    if (!json_is_object(fields) || !json_is_array(keyarr) ||
        json_array_size(keyarr) != t->nkey || t->nkey > 64) {
        rc = err_set(e, -EPROTO, "journal change %" PRId64 " is malformed", c->seq);
        goto out;
    }
    if (c->op != CHANGE_INSERT && !clean_update_alone(s, c, m))
        have_old = shadow_get(s->st, c->mapping, c->key, &old, NULL) == 0;
    if (have_old && old.tombstone && c->version_us < shadow_version(&old)) {
        count_stale(s, c->mapping, c->key, c->version_us, shadow_version(&old));
        rc = 0;
        goto out;
    }
    /* A missing row is normally an upsert (out of order, or never there).
     * When the target side's last known version of the record is newer
     * than this update, it was deleted after it: the update is stale and
     * must not resurrect it (the version survives a tombstone overwritten
     * by this change's own first try, whose shadow write a redo sees). */
    if (c->op == CHANGE_UPDATE && have_old &&
        shadow_side_version(&old, t == &m->a ? 'a' : 'b') > c->version_us)
        w.keep_missing_us = shadow_side_version(&old, t == &m->a ? 'a' : 'b');
    base = advance_shadow(s, c, fields, have_old ? &old : NULL);
    if (c->op == CHANGE_INSERT) {
        /* An insert was made on no row: a row already there is a conflict
         * unless it holds the same values. The shadow may hold what the
         * other direction has in flight, so it is no base here. */
        json_decref(base);
        base = NULL;
    } else if (c->old_fields != NULL) {
        /* The source's before-image is the exact state this change was
         * made on: a better base than the shadow, which may already hold
         * what another direction sent. */
        json_decref(base);
        base = json_loads(c->old_fields, 0, NULL);
    }
    w.base = base;
    if ((rc = sink_send_write(s, &w, e)) == 0 && resolved_in_c(m)) {
        q_tail(s)->resolve = true;
        s->barrier_seq = c->seq;
    }
out:
    shadow_clear(&old);
    json_decref(fields);
    json_decref(unch);
    json_decref(keyarr);
    json_decref(base);
    return rc;
}

static int send_truncate(struct pgsink *s, const struct cfg_mapping *m,
                         const struct cfg_side *t, struct err *e)
{
    char *tbl = pgconn_quote_table(s->conn, t->schema, t->relname), *sql = NULL;
    char *flag = m->deletes == CFG_DEL_SOFT
                 ? PQescapeIdentifier(s->conn, m->soft_delete_field, strlen(m->soft_delete_field))
                 : NULL;
    int rc = 0;

    /* DELETE, not TRUNCATE: the peer's triggers and foreign keys see it
     * like any other delete; with soft deletes every row gets the flag. */
    if (tbl == NULL || (m->deletes == CFG_DEL_SOFT && flag == NULL) ||
        (flag ? asprintf(&sql, "UPDATE %s SET %s = true", tbl, flag)
              : asprintf(&sql, "DELETE FROM %s", tbl)) < 0 ||
        !send_plain(s, Q_PLAIN, sql, 0, NULL))
        rc = err_set(e, -EIO, "cannot send delete-all for %s", t->table);
    free(tbl);
    free(sql);
    PQfreemem(flag);
    return rc;
}

static int begin_if_needed(struct pgsink *s)
{
    if (s->in_txn)
        return 0;
    if (!send_plain(s, Q_BEGIN, "BEGIN", 0, NULL))
        return -EIO;
    s->in_txn = true;
    s->group_changes = 0;
    return 0;
}

/* ---- multi-row statements (pgbatch.h) ---- */

static void fast_reset(struct pgsink *s)
{
    pgbatch_reset(&s->batch);
}

static void build_batch_sql(struct pgsink *s, const void *arg)
{
    const struct cfg_side *t = s->batch.t;
    char *tbl = pgconn_quote_table(s->conn, t->schema, t->relname);

    (void)arg;
    if (tbl == NULL) {
        s->sql.failed = true;
        return;
    }
    pgbatch_sql(&s->batch, s->conn, tbl, &s->sql);
    free(tbl);
}

/* The prepared statement for the rows held, prepared when new. */
static const char *fast_stmt(struct pgsink *s)
{
    const struct cfg_mapping *m = s->batch.m;
    struct strbuf sig;
    const char *name;

    strbuf_init(&sig);
    pgbatch_sig(&s->batch, m->name, s->batch.t == &m->a ? 'a' : 'b', &sig);
    name = prepared(s, &sig, build_batch_sql, NULL);
    strbuf_free(&sig);
    return name;
}

/* Sends the rows held as one statement. */
static int fast_flush(struct pgsink *s)
{
    struct pgbatch *b = &s->batch;
    const char *const *params, *name;
    struct q_entry *q;
    int n, rc = 0;

    if (b->nrows == 0)
        return 0;
    if ((n = pgbatch_params(b, &params)) < 0 || (name = fast_stmt(s)) == NULL ||
        PQsendQueryPrepared(s->conn, name, n, params, NULL, NULL, 0) != 1 ||
        (q = q_push(s, b->kind == PGBATCH_INSERT ? Q_FAST : Q_FAST_UPDATES)) == NULL)
        rc = -EIO;
    else
        q->seq = (int64_t)b->nrows;
    fast_reset(s);
    return rc;
}

/* The target column for side-a field k, the pos-th field of its row, as
 * the config's own string (it outlives the parsed change, unlike the JSON
 * key). */
static const char *config_column(struct pgsink *s, const struct cfg_mapping *m,
                                 const struct cfg_side *t, size_t pos, const char *k)
{
    long i = nameidx_find(&s->fields[m - s->cfg->mappings].idx, pos, k);

    if (i < 0)
        return NULL;
    return t == &m->a ? m->fields[i].name : m->fields[i].value;
}

/* Adds a row of shape sh, flushing first when it cannot join the rows
 * held (or, for an update, holds its key); the caller then puts its
 * values and ends it. */
static int fast_begin_row(struct pgsink *s, const struct pgbatch_shape *sh,
                          const char *const *keys, size_t text_more)
{
    if ((!pgbatch_fits(&s->batch, sh) || (keys && pgbatch_holds_key(&s->batch, keys))) &&
        fast_flush(s) != 0)
        return -EIO;
    return pgbatch_begin_row(&s->batch, sh, text_more);
}

static int fast_end_row(struct pgsink *s)
{
    return pgbatch_end_row(&s->batch) ? fast_flush(s) : 0;
}

/* Whether a change may join a multi-row statement at all. */
static bool may_batch(const struct pgsink *s, const struct change *c,
                      const struct cfg_mapping *m)
{
    return c->fields != NULL && c->unchanged == NULL && !m->canary_enabled && !careful(s);
}

/* Buffers an insert of a new key; returns 1 when taken, 0 when the change
 * must take the conditional path, negative on error. Only a flat object of
 * text values (what capture writes) takes this path. */
static int fast_add(struct pgsink *s, const struct change *c, const struct cfg_mapping *m,
                    const struct cfg_side *t)
{
    struct flatobj *fo = &s->scan;
    const char *cols[PGBATCH_MAX_COLS];
    const struct flatobj_pair *vals[PGBATCH_MAX_COLS];
    struct pgbatch_shape sh = { PGBATCH_INSERT, m, t, cols, NULL, 0, 0, 0 };
    size_t len;
    char hash[CANON_HASH_HEX + 1];
    int rc;

    if (c->op != CHANGE_INSERT || !may_batch(s, c, m))
        return 0;
    len = strlen(c->fields);
    if ((rc = flatobj_scan(fo, c->fields, len)) <= 0)
        return rc < 0 ? rc : 0;
    for (size_t i = 0; i < fo->n; i++) {
        const char *name = config_column(s, m, t, i, fo->pairs[i].key);

        if (name == NULL)
            continue;
        if (sh.nset == PGBATCH_MAX_COLS)
            return 0;
        vals[sh.nset] = &fo->pairs[i];
        cols[sh.nset++] = name;
    }
    if (sh.nset == 0)
        return fast_flush(s) == 0 ? 0 : -EIO;
    /* Unescaped values are never longer than the text they came from. */
    if ((rc = fast_begin_row(s, &sh, NULL, len + sh.nset)) != 0)
        return rc;
    for (size_t i = 0; i < sh.nset; i++)
        pgbatch_put(&s->batch, vals[i]->null ? NULL : vals[i]->val, vals[i]->val_len);
    canon_hash_flat(fo, hash);
    shadow_after_insert(s, c, m, hash);
    return fast_end_row(s) == 0 ? 1 : -EIO;
}

/* The SQL type of target column col, the pos-th of its statement, or NULL
 * when unknown. */
static const char *column_type(struct pgsink *s, const struct cfg_mapping *m,
                               const struct cfg_side *t, size_t pos, const char *col)
{
    for (size_t i = 0; i < s->ntypes; i++) {
        struct coltypes *ct = &s->types[i];
        long j;

        if (ct->m != m || ct->t != t)
            continue;
        j = nameidx_find(&ct->idx, pos, col);
        return j < 0 ? NULL : ct->types[j];
    }
    return NULL;
}

/* Collects fo's mapped fields into the shape's next columns (with their
 * types) and vals; false when one has no known type or there are too many. */
static bool collect_cols(struct pgsink *s, const struct flatobj *fo,
                         const struct cfg_mapping *m, const struct cfg_side *t,
                         const char **cols, const char **types,
                         const struct flatobj_pair **vals, size_t *n)
{
    for (size_t i = 0; i < fo->n; i++) {
        const char *name = config_column(s, m, t, i, fo->pairs[i].key);

        if (name == NULL)
            continue;
        if (*n == PGBATCH_MAX_COLS || (types[*n] = column_type(s, m, t, *n, name)) == NULL)
            return false;
        vals[*n] = &fo->pairs[i];
        cols[(*n)++] = name;
    }
    return true;
}

/* Buffers a clean update of a whole row with its before-image (what
 * PostgreSQL capture journals with REPLICA IDENTITY FULL): 1 when taken,
 * 0 for the per-row path, negative on error. The new values name the key;
 * a key change goes per row. */
static int fast_update_add(struct pgsink *s, const struct change *c,
                           const struct cfg_mapping *m, const struct cfg_side *t)
{
    const char *cols[PGBATCH_MAX_COLS], *types[PGBATCH_MAX_COLS], *keys[64];
    const struct flatobj_pair *vals[PGBATCH_MAX_COLS];
    struct pgbatch_shape sh = { PGBATCH_UPDATE, m, t, cols, types, t->nkey, 0, 0 };
    size_t n, flen, olen;
    char hash[CANON_HASH_HEX + 1];
    int rc;

    if (!whole_update(s, c) || c->old_key != NULL || !may_batch(s, c, m) || resolved_in_c(m) ||
        t->nkey == 0 || t->nkey > 64 || s->ntypes == 0)
        return 0;
    flen = strlen(c->fields);
    olen = strlen(c->old_fields);
    if ((rc = flatobj_scan(&s->scan, c->fields, flen)) <= 0 ||
        (rc = flatobj_scan(&s->base_scan, c->old_fields, olen)) <= 0)
        return rc < 0 ? rc : 0;
    /* Keys first: each is the new value of its field. */
    n = t->nkey;
    if (!collect_cols(s, &s->scan, m, t, cols, types, vals, &n))
        return 0;
    sh.nset = n - t->nkey;
    for (size_t k = 0; k < t->nkey; k++) {
        size_t i = t->nkey;

        while (i < n && strcmp(cols[i], t->key[k]) != 0)
            i++;
        if (i == n || vals[i]->null || (types[k] = column_type(s, m, t, k, t->key[k])) == NULL)
            return 0;
        cols[k] = t->key[k];
        vals[k] = vals[i];
        keys[k] = vals[i]->val;
    }
    if (!collect_cols(s, &s->base_scan, m, t, cols, types, vals, &n))
        return 0;
    sh.nbase = n - t->nkey - sh.nset;
    if (sh.nset == 0)
        return 0;
    if ((rc = fast_begin_row(s, &sh, keys, 2 * flen + olen + n)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        pgbatch_put(&s->batch, vals[i]->null ? NULL : vals[i]->val, vals[i]->val_len);
    canon_hash_flat(&s->scan, hash);
    shadow_after_insert(s, c, m, hash);
    return fast_end_row(s) == 0 ? 1 : -EIO;
}

static int on_journal_change(const struct change *c, void *arg)
{
    struct change_ctx *x = arg;
    struct pgsink *s = x->s;
    const struct cfg_mapping *m = config_mapping(s->cfg, c->mapping);
    const struct cfg_side *t;
    bool retrying = false;
    int rc;

    x->count++;
    s->cur_after = c->seq;
    if (m == NULL || !mapping_targets(s, m, c->endpoint, &t) || excluded(s, c->seq) ||
        held_by_parked_key(s, c, &retrying))
        return 0;
    /* deletes "ignore": the peer keeps its row (SPEC §4). */
    if ((c->op == CHANGE_DELETE || c->op == CHANGE_TRUNCATE) && m->deletes == CFG_DEL_IGNORE)
        return 0;
    if ((rc = begin_if_needed(s)) != 0)
        return x->err = rc;
    /* A replay goes alone (not batched), so its outcome unparks the key. */
    if (!retrying && ((rc = fast_add(s, c, m, t)) != 0 || (rc = fast_update_add(s, c, m, t)) != 0)) {
        if (rc < 0)
            return x->err = err_set(&x->e, rc, "cannot send inserts of change %" PRId64, c->seq);
        s->group_changes++;
        return 0;
    }
    if ((rc = fast_flush(s)) != 0)
        return x->err = err_set(&x->e, rc, "cannot send buffered inserts");
    rc = c->op == CHANGE_TRUNCATE ? send_truncate(s, m, t, &x->e)
                                  : send_change(s, c, m, t, &x->e);
    if (rc != 0)
        return x->err = rc;
    if (retrying && c->op != CHANGE_TRUNCATE)
        q_tail(s)->retrying = true;
    s->group_changes++;
    return s->barrier_seq != 0 ? 1 : 0;    /* a barrier stops the scan */
}

/* ---- feeding the pipeline ---- */

static int send_commit(struct pgsink *s)
{
    char lsn[PGO_LSN_STRLEN], ts[64];
    const char *v[2] = { lsn, ts };
    struct q_entry *q;

    if (fast_flush(s) != 0)
        return -EIO;
    pgo_lsn_format((uint64_t)s->group_last_seq, lsn);
    format_ts(s->group_ts_us, ts, sizeof(ts));
    if (!send_plain(s, Q_XACT, "SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)",
                    2, v) ||
        !send_plain(s, Q_COMMIT, "COMMIT", 0, NULL))
        return -EIO;
    q = q_tail(s);
    q->commit_seq = s->group_last_seq;
    q->version_us = s->group_ts_us;
    if (PQpipelineSync(s->conn) != 1 || q_push(s, Q_SYNC) == NULL)
        return -EIO;
    s->in_txn = false;
    return 0;
}

static int pick_txn(const struct journal_txn_info *info, void *arg)
{
    struct txns_ahead *a = arg;
    struct txn_pick *p = &a->t[a->n];

    if (info->commit_seq > a->durable)
        return 1;
    a->n++;
    p->txn = info->txn;
    p->commit_seq = info->commit_seq;
    p->ts = info->commit_ts_us;
    p->first_seq = info->first_seq;
    p->last_seq = info->last_seq;
    p->nchanges = info->nchanges;
    return a->n == TXNS_AHEAD ? 1 : 0;
}

/* The source transaction applied early will never commit (the source
 * resends it as a new one): fail the target transaction on purpose, so
 * on_sync rolls it back and feeding restarts from the last target commit. */
static void abandon_early(struct pgsink *s)
{
    s->early_dead = s->early_txn;
    s->early_txn = s->early_after = 0;
    s->abandoning = true;
    fast_reset(s);
    if (!send_plain(s, Q_ABANDON, "SELECT 1 / 0", 0, NULL) || PQpipelineSync(s->conn) != 1 ||
        q_push(s, Q_SYNC) == NULL)
        sink_fail(s, "cannot roll back on the target", NULL);
}

/* Makes p, the next transaction read ahead, the current one, to be sent
 * from after its change seq after. */
static void take_txn(struct pgsink *s, const struct txn_pick *p, int64_t after)
{
    s->ahead.at++;
    s->ahead.after = p->commit_seq;
    s->cur_txn = p->txn;
    s->cur_txn_seq = p->commit_seq;
    s->cur_ts_us = p->ts;
    s->cur_after = after;
}

/* Moves to the next durable journal transaction, if any. The next ones
 * are read TXNS_AHEAD at a time, durable ones only (they cannot be rolled
 * back); the list holds while transactions are taken in order (a redo or
 * reconnect starts from elsewhere: read again). */
static bool next_txn(struct pgsink *s)
{
    struct txns_ahead *a = &s->ahead;
    const struct txn_pick *p;

    if (a->at == a->n || a->after != s->fed_seq) {
        a->n = a->at = 0;
        a->after = s->fed_seq;
        a->durable = s->durable_seq;
        if (journal_scan_txns(s->st, s->fed_seq, TXNS_AHEAD, s->ep->name, pick_txn, a,
                              NULL) < 0)
            a->n = 0;
    }
    if (a->at == a->n)
        return false;
    p = &a->t[a->at];
    if (s->early_txn != 0 && p->txn != s->early_txn) {
        abandon_early(s);
        return false;
    }
    take_txn(s, p, s->early_txn != 0 ? s->early_after : 0);
    s->early_txn = s->early_after = 0;
    return true;
}

/* Moves to the transaction the single source is streaming, to apply what
 * is journaled of it early: only when every committed transaction is fed
 * (it will be the next to commit). */
static bool next_open_txn(struct pgsink *s)
{
    int64_t last = 0, txn = 0;

    if (s->early_source == NULL || s->abandoning || (!s->source_open && s->early_txn == 0) ||
        journal_last_commit_seq(s->st, &last, NULL) != 0 || last > s->fed_seq ||
        journal_newest_open(s->st, s->early_source, &txn, NULL) != 0 ||
        txn == 0 || txn <= s->early_dead)
        return false;
    if (s->early_txn != 0 && txn != s->early_txn) {
        abandon_early(s);
        return false;
    }
    s->cur_txn = txn;
    s->cur_txn_seq = 0;
    s->cur_after = s->early_txn != 0 ? s->early_after : 0;
    s->cur_open = true;
    s->early_txn = s->early_after = 0;
    return true;
}

/* The current source transaction is fully sent. */
static void txn_sent(struct pgsink *s)
{
    s->fed_seq = s->cur_txn_seq;
    if (s->in_txn) {
        s->group_last_seq = s->cur_txn_seq;
        s->group_ts_us = s->cur_ts_us;
    }
    s->cur_txn = 0;
}

/* A change of a run (scan_run): one of the next transaction read ahead
 * ends the current one. A change of another transaction (journaled
 * between the current one's changes from another source) is skipped
 * here: it is read with its own transaction. */
static int on_run_change(const struct change *c, void *arg)
{
    struct change_ctx *x = arg;
    struct pgsink *s = x->s;
    struct txns_ahead *a = &s->ahead;

    if (c->txn != s->cur_txn) {
        const struct txn_pick *p = a->at < a->n ? &a->t[a->at] : NULL;

        if (p == NULL || p->txn != c->txn)
            return 0;
        txn_sent(s);
        take_txn(s, p, 0);
    }
    return on_journal_change(c, arg);
}

/* Sends the current transaction (next_txn just took it) with the ones
 * read ahead after it whose changes follow on in sequence, up to SLICE
 * changes, in one journal read: small transactions cost one query per run,
 * not one each. Returns the changes read, as journal_scan_changes_from. */
static int scan_run(struct pgsink *s, struct change_ctx *x)
{
    const struct txns_ahead *a = &s->ahead;
    const struct txn_pick *cur = a->at > 0 ? &a->t[a->at - 1] : NULL;
    int64_t last, total;
    int i;

    if (cur == NULL || cur->txn != s->cur_txn || cur->first_seq == 0)
        return journal_scan_changes_from(s->st, s->cur_txn, 0, SLICE, on_journal_change,
                                         x, &x->e);
    last = cur->last_seq;
    total = cur->nchanges;
    for (i = a->at; i < a->n && a->t[i].first_seq == last + 1 &&
                    total + a->t[i].nchanges <= SLICE; i++) {
        last = a->t[i].last_seq;
        total += a->t[i].nchanges;
    }
    return journal_scan_seq_range(s->st, cur->first_seq - 1, last, SLICE, on_run_change, x,
                                  &x->e);
}

static void refresh_parked(struct pgsink *s)
{
    int64_t n = 0;

    if (uv_now(s->loop) - s->parked_checked_ms < 1000)
        return;
    s->parked_checked_ms = uv_now(s->loop);
    if (parked_count(s->st, &n, NULL) == 0)
        s->parked_any = n > 0;
}

static void feed(struct pgsink *s)
{
    struct change_ctx x = { .s = s };
    int n;

    refresh_parked(s);

    while (s->state == SK_READY && !s->seg_failed && !s->hold && s->barrier_seq == 0 &&
           s->qlen < WINDOW) {
        if (s->cur_txn == 0) {
            /* Never commit with part of a source transaction sent, nor
             * before the state holds what this transaction left out. */
            bool may_commit = s->in_txn && s->early_txn == 0 && !s->abandoning &&
                              s->synced_gen >= s->hold_gen;
            /* Nor before every conditional statement answered: an answer
             * may record a conflict, park a key or journal a result for
             * the other side, which must be saved first (after a crash
             * the target's progress would pass the change without it). */
            bool answered = s->stmts_out == 0;

            if (may_commit && s->group_changes >= GROUP_CHANGES) {
                if (!answered)
                    break;      /* on_readable feeds again */
                if (send_commit(s) != 0)
                    goto fail;
                continue;
            }
            if (s->draining || (!next_txn(s) && !next_open_txn(s))) {
                /* (not when next_txn just abandoned an early transaction) */
                if (may_commit && answered && !s->abandoning && send_commit(s) != 0)
                    goto fail;
                break;
            }
        }
        x.count = 0;
        n = s->cur_after == 0 && !s->cur_open ? scan_run(s, &x)
            : journal_scan_changes_from(s->st, s->cur_txn, s->cur_after, SLICE,
                                        on_journal_change, &x, &x.e);
        if (n < 0 || x.err != 0) {
            sink_fail(s, "cannot send changes", x.e.msg[0] ? x.e.msg : "journal read failed");
            return;
        }
        if (n < SLICE && s->barrier_seq == 0 && s->cur_open) {
            /* Everything journaled of the open transaction is sent. */
            s->early_txn = s->cur_txn;
            s->early_after = s->cur_after;
            s->cur_txn = 0;
            s->cur_open = false;
            break;
        }
        if (n < SLICE && s->barrier_seq == 0)
            txn_sent(s);
    }
    /* Everything fed is committed and the rest was not for this target:
     * count it as applied so depth and status do not wait on it. */
    if (s->state == SK_READY && s->qlen == 0 && !s->in_txn && s->cur_txn == 0 &&
        s->fed_seq > s->applied_seq) {
        s->applied_seq = s->fed_seq;
        if (state_begin(s->st, NULL) == 0)
            state_applied_set(s->st, s->ep->name, s->applied_seq, NULL);
    }
    if (s->state == SK_READY && fast_flush(s) != 0) {
        sink_fail(s, "cannot send buffered inserts", NULL);
        return;
    }
    if (s->state == SK_READY && s->qlen > 0) {
        if (PQflush(s->conn) == 1)
            pgwatch_set(&s->watch, PQsocket(s->conn), UV_READABLE | UV_WRITABLE);
        else if (s->in_txn)
            PQsendFlushRequest(s->conn);
    }
    return;
fail:
    sink_fail(s, "cannot send to the target", NULL);
}

static void on_feed_timer(uv_timer_t *t)
{
    struct pgsink *s = t->data;

    s->hold = false;
    feed(s);
}

/* ---- results ---- */

/* A change's statement answered: a barrier on it lifts, and a replayed
 * change's key is no longer parked (its parent landed). */
static void statement_answered(struct pgsink *s, const struct q_entry *q)
{
    if (q->resolve && q->seq == s->barrier_seq)
        s->barrier_seq = 0;
    if (q->retrying && state_begin(s->st, NULL) == 0)
        parked_unpark(s->st, q->mapping, q->key, NULL);
}

static void on_stmt_result(struct pgsink *s, const struct q_entry *q, PGresult *r)
{
    bool exists, clean;
    long long written;

    if (PQntuples(r) != 1 || PQnfields(r) != 5)
        return;
    exists = PQgetvalue(r, 0, 0)[0] == 't';
    clean = PQgetvalue(r, 0, 1)[0] == 't';
    written = atoll(PQgetvalue(r, 0, 2));
    if (written > 0) {
        const struct cfg_mapping *m = config_mapping(s->cfg, q->mapping);
        s->stats.applied++;
        if (m != NULL && m->canary_enabled && q->op != 'D' && s->hooks.on_canary_candidate)
            s->hooks.on_canary_candidate(s->hooks.arg, s, q->mapping, q->key);
    }
    if (q->op == 'D' && !exists)
        s->stats.delete_missing++;
    if (q->keep_missing_us > 0 && !exists)
        count_stale(s, q->mapping, q->key, q->version_us, q->keep_missing_us);
    statement_answered(s, q);
    if (q->resolve && exists && !clean && written == 0)
        sink_resolve_here(s, q, PQgetisnull(r, 0, 3) ? NULL : PQgetvalue(r, 0, 3),
                     PQgetisnull(r, 0, 4) ? NULL : PQgetvalue(r, 0, 4));
    else if (exists && !clean)
        sink_record_conflict(s, q, written > 0,
                        PQgetisnull(r, 0, 3) ? NULL : PQgetvalue(r, 0, 3),
                        PQgetisnull(r, 0, 4) ? NULL : PQgetvalue(r, 0, 4));
}

/* Origin progress counts this state's journal: progress beyond the
 * journal's end was left by another state file using the same origin (a
 * recreated state, a second pipeline). Trusting it would skip changes, so
 * the state's own applied position wins and the operator is told. */
static void adopt_foreign_progress(struct pgsink *s)
{
    int64_t last = 0, own = 0;
    char prog[24], mine[24];

    if (journal_last_commit_seq(s->st, &last, NULL) != 0 || s->applied_seq <= last)
        return;
    state_applied_get(s->st, s->ep->name, &own, NULL);
    snprintf(prog, sizeof(prog), "%" PRId64, s->applied_seq);
    snprintf(mine, sizeof(mine), "%" PRId64, own);
    log_warn("pgsink", "replication origin progress is ahead of this state's journal:"
             " another state file used this origin; applying from this state's own"
             " position. Give each pipeline its own origin", "endpoint", s->ep->name,
             "origin", s->ep->origin, "origin_progress", prog, "state_applied", mine);
    s->applied_seq = own;
    /* Move the origin back to this state's position, so from now on its
     * progress is exact again (advance may go backwards). */
    char lsn[PGO_LSN_STRLEN];
    const char *v[2] = { s->ep->origin, lsn };
    pgo_lsn_format((uint64_t)own, lsn);
    if (!send_plain(s, Q_PLAIN, "SELECT pg_replication_origin_advance($1, $2::pg_lsn)", 2, v) ||
        PQpipelineSync(s->conn) != 1 || q_push(s, Q_SYNC) == NULL)
        log_error("pgsink", "cannot reset the replication origin's progress",
                  "endpoint", s->ep->name, "origin", s->ep->origin);
}

/* ---- the target tables' column types ---- */

static void types_clear(struct pgsink *s)
{
    for (size_t i = 0; i < s->ntypes; i++) {
        for (size_t j = 0; j < s->types[i].n; j++) {
            free(s->types[i].names[j]);
            free(s->types[i].types[j]);
        }
        free(s->types[i].names);
        free(s->types[i].types);
        nameidx_free(&s->types[i].idx);
    }
    free(s->types);
    s->types = NULL;
    s->ntypes = 0;
}

/* Asks for the column types of every table this sink writes, in the
 * setup pipeline. A missing table answers no rows: its changes go per row
 * (and meet the error there). */
static bool send_type_lookups(struct pgsink *s)
{
    types_clear(s);
    s->types = calloc(s->cfg->nmappings * 2, sizeof(*s->types));
    if (s->types == NULL && s->cfg->nmappings > 0)
        return false;
    for (size_t i = 0; i < s->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &s->cfg->mappings[i];
        const struct cfg_side *sides[2] = { &m->a, &m->b };

        for (int k = 0; k < 2; k++) {
            const struct cfg_side *t = sides[k];
            const char *other = t == &m->a ? m->b.endpoint : m->a.endpoint;
            const struct cfg_side *target = NULL;
            char *tbl;
            bool ok;

            if (t->ep != s->ep || t->relname == NULL ||
                !mapping_targets(s, m, other, &target) || target != t)
                continue;
            if ((tbl = pgconn_quote_table(s->conn, t->schema, t->relname)) == NULL)
                return false;
            ok = send_plain(s, Q_TYPES,
                            "SELECT a.attname, format_type(a.atttypid, a.atttypmod)"
                            " FROM pg_attribute a WHERE a.attrelid = to_regclass($1)"
                            " AND a.attnum > 0 AND NOT a.attisdropped",
                            1, (const char *const *)&tbl);
            free(tbl);
            if (!ok)
                return false;
            q_tail(s)->seq = (int64_t)s->ntypes;
            s->types[s->ntypes].m = m;
            s->types[s->ntypes++].t = t;
        }
    }
    return true;
}

static void on_types(struct pgsink *s, const struct q_entry *q, PGresult *r)
{
    struct coltypes *ct = q->seq >= 0 && (size_t)q->seq < s->ntypes ? &s->types[q->seq] : NULL;
    int n = PQntuples(r);

    if (ct == NULL || n <= 0 || PQnfields(r) != 2)
        return;
    ct->names = calloc((size_t)n, sizeof(*ct->names));
    ct->types = calloc((size_t)n, sizeof(*ct->types));
    for (int i = 0; ct->names && ct->types && i < n; i++) {
        ct->names[ct->n] = strdup(PQgetvalue(r, i, 0));
        ct->types[ct->n] = strdup(PQgetvalue(r, i, 1));
        if (ct->names[ct->n] == NULL || ct->types[ct->n] == NULL) {
            free(ct->names[ct->n]);
            free(ct->types[ct->n]);
            break;
        }
        ct->n++;
    }
    /* Out of memory, the index finds nothing: changes take the per-row path. */
    nameidx_init(&ct->idx, (const char *const *)ct->names, ct->n);
}

static void on_setup_result(struct pgsink *s, const struct q_entry *q, PGresult *r)
{
    uint64_t lsn = 0;

    if (q->kind == Q_PROGRESS && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) &&
        pgo_lsn_parse(PQgetvalue(r, 0, 0), &lsn) == 0) {
        s->applied_seq = (int64_t)lsn;
        adopt_foreign_progress(s);
    }
    if (q->kind == Q_TRACKTS && PQntuples(r) == 1 && PQnfields(r) == 2) {
        s->track_ts = strcmp(PQgetvalue(r, 0, 0), "on") == 0;
        s->origin_id = PQgetisnull(r, 0, 1) ? 0 : (unsigned)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
    }
    if (q->kind == Q_TYPES)
        on_types(s, q, r);
}

/* The target rejected a change: record it, skip it on the redo. */
/* What was just written to the state must be on disk before the target
 * commits: the owner's next state commit holds it. */
void hold_commit_until_saved(struct pgsink *s)
{
    if (s->hooks.state_commit_gen != NULL)
        s->hold_gen = s->hooks.state_commit_gen(s->hooks.arg) + 1;
}

/* Records a change the target cannot take in the DLQ with everything a
 * retry needs to journal it again, and parks its key so later changes of
 * the key wait behind it (G8). */
static void park_change(struct pgsink *s, const struct change *c, const char *msg,
                        bool waiting)
{
    struct dlq_entry d = { .status = waiting ? DLQ_WAITING : DLQ_OPEN };
    struct parked_key pk = { 0 };
    char op[2] = { (char)c->op, '\0' };
    json_t *fields = c->fields ? json_loads(c->fields, 0, NULL) : NULL;
    json_t *key = json_loads(c->key, 0, NULL);
    json_t *change = json_pack("{s:s,s:o*,s:o*,s:I,s:s?}", "op", op, "key", key,
                               "fields", fields, "version_us", (json_int_t)c->version_us,
                               "source", c->endpoint);
    char *text = change ? json_dumps(change, JSON_COMPACT) : NULL;
    char seq[24];

    snprintf(seq, sizeof(seq), "%" PRId64, c->seq);
    json_decref(change);
    exclude(s, c->seq);
    if (!waiting)
        s->stats.errors++;
    d.mapping = c->mapping;
    d.key = c->key;
    d.source = c->endpoint;
    d.target = s->ep->name;
    d.change_seq = c->seq;
    d.change = text;
    d.error = msg;
    d.attempts = 1;
    pk.mapping = c->mapping;
    pk.key = c->key;
    pk.reason = waiting ? "waiting_for_parent" : "dlq";
    pk.target = s->ep->name;
    pk.detail = waiting ? msg : NULL;
    if (state_begin(s->st, NULL) != 0 || dlq_add(s->st, &d, NULL) != 0) {
        log_error("pgsink", "cannot record the change in the DLQ", "endpoint",
                  s->ep->name, "seq", seq);
    } else {
        hold_commit_until_saved(s);
        pk.dlq_id = d.id;
        if (parked_park_ex(s->st, &pk, NULL) == 0)
            s->parked_any = true;
    }
    free(text);
}

static void dead_letter_change(struct pgsink *s, const struct change *c, const char *msg)
{
    park_change(s, c, msg, false);
}

/* The target refused a change whose shadow was already advanced when it
 * was sent: the two sides do not agree on that record any more. Without
 * a shadow, a later change of the key upserts (send_change), instead of
 * taking a row the target never got for one it deleted. */
static void forget_agreement(struct pgsink *s, const char *mapping, const char *key)
{
    if (state_begin(s->st, NULL) == 0)
        shadow_delete(s->st, mapping, key, NULL);
}

static void change_of(const struct q_entry *q, struct change *c)
{
    memset(c, 0, sizeof(*c));
    c->seq = q->seq;
    c->endpoint = q->source;
    c->mapping = q->mapping;
    c->op = (enum change_op)q->op;
    c->key = q->key;
    c->fields = q->incoming;
    c->version_us = q->version_us;
}

/* The target refused the change for a foreign key: its parent is not
 * there yet (another mapping, another feed), or a parent's delete came
 * before its children's. Not an error yet: the change waits, its key
 * parked, and is replayed when other changes landed, until the mapping's
 * dependency_wait_s ends (then the DLQ, naming the parent). */
static void wait_for_parent(struct pgsink *s, const struct q_entry *q, const char *msg)
{
    struct change c;
    char seq[24];

    snprintf(seq, sizeof(seq), "%" PRId64, q->seq);
    log_info("pgsink", "a change waits for its parent (foreign key); replayed when"
             " the parent lands", "endpoint", s->ep->name, "mapping", q->mapping,
             "key", q->key, "seq", seq, "err", msg);
    change_of(q, &c);
    park_change(s, &c, msg, true);
    s->waiting_any = true;
}

void sink_dead_letter(struct pgsink *s, const struct q_entry *q, const char *msg)
{
    struct change c = { 0 };
    char seq[24];

    snprintf(seq, sizeof(seq), "%" PRId64, q->seq);
    log_error("pgsink", "the target rejected a change: dead-lettered and its key parked;"
              " fix the data or the target, then tandem dlq retry", "endpoint", s->ep->name,
              "mapping", q->mapping, "key", q->key, "seq", seq, "err", msg);
    change_of(q, &c);
    dead_letter_change(s, &c, msg);
    forget_agreement(s, q->mapping, q->key);
}

/* ---- changes waiting for a parent ---- */

struct waiting {
    int64_t id, ts_us;
    char *mapping, *key, *change, *error;
};

struct waiting_list {
    struct waiting *v;
    size_t n, cap;
};

static int collect_waiting(const struct dlq_entry *d, void *arg)
{
    struct waiting_list *l = arg;
    struct waiting *n;

    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        if ((n = realloc(l->v, cap * sizeof(*n))) == NULL)
            return -ENOMEM;
        l->v = n;
        l->cap = cap;
    }
    n = &l->v[l->n++];
    n->id = d->id;
    n->ts_us = d->ts_us;
    n->mapping = strdup(d->mapping);
    n->key = d->key ? strdup(d->key) : NULL;
    n->change = d->change ? strdup(d->change) : NULL;
    n->error = strdup(d->error);
    return 0;
}

/* Past its mapping's dependency_wait_s (counted from when the key was
 * parked) a waiting change becomes a DLQ entry naming the missing parent. */
static void give_up_waiting(struct pgsink *s, const struct waiting *w, int64_t since,
                            int wait_s)
{
    char msg[1024];
    struct parked_key pk = { w->mapping, w->key, "dlq", since, s->ep->name, w->id, NULL };

    snprintf(msg, sizeof(msg), "the parent never arrived within dependency_wait_s"
             " (%d s): %.900s", wait_s, w->error);
    if (dlq_set_open(s->st, w->id, msg, NULL) == 0)
        parked_park_ex(s->st, &pk, NULL);
    forget_agreement(s, w->mapping, w->key);
    s->stats.errors++;
    log_error("pgsink", "a change waited for its parent past dependency_wait_s:"
              " dead-lettered; create the parent, then tandem dlq retry",
              "endpoint", s->ep->name, "mapping", w->mapping, "key", w->key, "err", msg);
}

/* Replays the waiting changes (in order, from their source) once other
 * changes landed, or every few seconds so deadlines are seen. */
static void replay_waiting(struct pgsink *s)
{
    struct waiting_list l = { 0 };
    uint64_t now_ms = uv_now(s->loop);
    int64_t now_us = wall_us();

    if (!s->waiting_any || s->state != SK_READY || s->barrier_seq != 0)
        return;
    if (s->stats.applied == s->waiting_applied && now_ms - s->waiting_pass_ms < 5000)
        return;
    s->waiting_applied = s->stats.applied;
    s->waiting_pass_ms = now_ms;
    if (state_begin(s->st, NULL) != 0 ||
        dlq_list_waiting(s->st, s->ep->name, collect_waiting, &l, NULL) != 0)
        goto out;
    s->waiting_any = l.n > 0;
    for (size_t i = 0; i < l.n; i++) {
        const struct waiting *w = &l.v[i];
        const struct cfg_mapping *m = config_mapping(s->cfg, w->mapping);
        int wait_s = m ? m->dependency_wait_s : 300;
        int64_t since = w->ts_us;
        bool parked = false;
        struct dlq_entry d = { .id = w->id, .mapping = w->mapping, .key = w->key,
                               .change = w->change };

        if (w->key != NULL)
            parked_is_parked(s->st, w->mapping, w->key, &parked, &since, NULL);
        if (now_us - since > (int64_t)wait_s * 1000000)
            give_up_waiting(s, w, since, wait_s);
        else if (dlq_replay(s->st, &d, NULL) == 0 && w->key != NULL)
            parked_park(s->st, w->mapping, w->key, "retrying_parent", 0, NULL);
    }
out:
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].mapping);
        free(l.v[i].key);
        free(l.v[i].change);
        free(l.v[i].error);
    }
    free(l.v);
}

static void on_parent_timer(uv_timer_t *t)
{
    replay_waiting(t->data);
}

/* A change of a key parked behind a DLQ entry waits there too, in order. */
static bool held_by_parked_key(struct pgsink *s, const struct change *c, bool *retrying)
{
    char reason[32] = "", msg[128];
    bool parked = false;

    if (!s->parked_any || c->op == CHANGE_TRUNCATE ||
        parked_lookup(s->st, c->mapping, c->key, &parked, NULL, reason,
                      sizeof(reason), NULL) != 0 || !parked)
        return false;
    *retrying = strcmp(reason, "retrying_parent") == 0;
    if (strcmp(reason, "waiting_for_parent") == 0) {
        snprintf(msg, sizeof(msg), "key parked behind an earlier change waiting for its parent");
        park_change(s, c, msg, true);
        return true;
    }
    if (strcmp(reason, "dlq") != 0)
        return false;
    snprintf(msg, sizeof(msg), "key parked behind an earlier dead-lettered change");
    dead_letter_change(s, c, msg);
    return true;
}

/* Errors that may pass by themselves: serialization failures and
 * deadlocks (40), resources (53), operator intervention (57), connection
 * (08), lock timeouts (55P03). Anything else about a change is about its
 * data. */
static bool transient_sqlstate(const char *st)
{
    return !strncmp(st, "40", 2) || !strncmp(st, "53", 2) || !strncmp(st, "57", 2) ||
           !strncmp(st, "08", 2) || !strcmp(st, "55P03") || st[0] == '\0';
}

/* Counts a transient failure of change seq against cfg->retry. */
static bool retries_exhausted(struct pgsink *s, int64_t seq)
{
    uint64_t now = uv_now(s->loop);

    if (s->retry_seq != seq) {
        s->retry_seq = seq;
        s->retry_attempts = 0;
        s->retry_first_ms = now;
    }
    s->retry_attempts++;
    return s->retry_attempts >= s->cfg->retry.max_attempts ||
           now - s->retry_first_ms >= (uint64_t)s->cfg->retry.max_retry_s * 1000;
}

/* Rolls the failed target transaction back (Sync alone leaves an
 * explicit transaction block open and aborted); feeding starts again
 * after the last target commit. False when the connection failed. */
static bool roll_back_and_restart(struct pgsink *s)
{
    /* What was pipelined after the failed segment's Sync (the next group)
     * ran in the aborted transaction block and failed there: not news. */
    for (size_t i = 0; i < s->qlen; i++)
        s->q[(s->qhead + i) % s->qcap].stale = true;
    q_entry_free(&s->seg_error_entry);
    clear_stmts(s);
    fast_reset(s);
    s->fed_seq = s->applied_seq;
    s->cur_txn = 0;
    s->cur_open = s->abandoning = false;
    s->early_txn = s->early_after = 0;
    s->in_txn = false;
    /* A Sync first: a stale segment not closed by one yet would have the
     * server skip the ROLLBACK along with it. */
    if (s->qlen > 0 && (PQpipelineSync(s->conn) != 1 || q_push(s, Q_SYNC) == NULL))
        goto fail;
    if (!send_plain(s, Q_PLAIN, "ROLLBACK", 0, NULL) || PQpipelineSync(s->conn) != 1 ||
        q_push(s, Q_SYNC) == NULL)
        goto fail;
    return true;
fail:
    sink_fail(s, "cannot roll back on the target", NULL);
    return false;
}

/* End of a pipeline segment (Sync): commit bookkeeping or redo. */
static void on_sync(struct pgsink *s)
{
    if (s->state == SK_SETUP) {
        if (s->seg_failed) {
            s->seg_failed = false;
            sink_fail(s, "cannot set up the replication origin session", s->seg_error);
            return;
        }
        s->state = SK_READY;
        s->fed_seq = s->applied_seq;
        s->backoff_ms = BACKOFF_MIN_MS;
        state_applied_set(s->st, s->ep->name, s->applied_seq, NULL);
        log_info("pgsink", "ready to apply", "endpoint", s->ep->name,
                 "origin", s->ep->origin,
                 "commit_timestamps", s->track_ts ? "on" : "off");
        if (!s->track_ts)
            log_warn("pgsink", "track_commit_timestamp is off: conflicts cannot compare"
                     " the target row's version and the incoming change wins, and after"
                     " a crash a row tandem wrote last may be taken for a conflict; set"
                     " track_commit_timestamp = on", "endpoint", s->ep->name);
        if (s->hooks.on_connection)
            s->hooks.on_connection(s->hooks.arg, s, true);
        return;
    }
    if (!s->seg_failed)
        return;
    if (s->draining) {
        drain_failed(s, s->seg_error);
        return;
    }
    s->barrier_seq = 0;     /* its result will not come: the redo resends it */
    /* The target transaction failed: roll it back, then redo from the
     * last commit without the rejected change. */
    bool data_error = s->seg_error_entry.kind == Q_STMT && !transient_sqlstate(s->seg_sqlstate);
    bool exhausted = false;
    s->seg_failed = false;
    if (s->seg_error_entry.kind == Q_FAST || s->seg_error_entry.kind == Q_FAST_UPDATE ||
        s->seg_error_entry.kind == Q_FAST_UPDATES) {
        /* A key existed (or a row was bad), or an update was not clean:
         * redo everything sent so far with per-row conditional writes,
         * which decide or dead-letter. */
        s->careful_until = s->cur_txn != 0 && s->cur_txn_seq > s->fed_seq ? s->cur_txn_seq
                                                                          : s->fed_seq;
        if (s->cur_open || s->early_txn != 0)
            s->careful_txn = s->cur_open ? s->cur_txn : s->early_txn;
        log_info("pgsink", s->seg_error_entry.kind == Q_FAST
                 ? "a multi-row insert failed; redoing with conditional writes"
                 : "an update found its row changed or gone; redoing with conditional writes",
                 "endpoint", s->ep->name, "sqlstate", s->seg_sqlstate);
        roll_back_and_restart(s);
        return;
    }
    if (s->seg_error_entry.kind == Q_ABANDON) {
        log_info("pgsink", "the source cut short a transaction applied early;"
                 " redoing from the last target commit", "endpoint", s->ep->name);
        roll_back_and_restart(s);
        return;
    }
    if (!data_error && s->seg_error_entry.kind == Q_STMT &&
        retries_exhausted(s, s->seg_error_entry.seq)) {
        /* Transient, but past the retry policy (G8): dead-letter it. */
        data_error = exhausted = true;
    }
    if (data_error && strcmp(s->seg_sqlstate, "23503") == 0) {
        wait_for_parent(s, &s->seg_error_entry, s->seg_error);
    } else if (data_error) {
        s->stats.exhausted += exhausted;    /* a share of errors, counted there */
        sink_dead_letter(s, &s->seg_error_entry, s->seg_error);
    } else {
        s->stats.transient++;
        log_error("pgsink", "target transaction failed; retrying", "endpoint",
                  s->ep->name, "sqlstate", s->seg_sqlstate, "err", s->seg_error);
    }
    if (!roll_back_and_restart(s))
        return;
    if (!data_error) {
        /* Hold feeding back until the timer: not a per-row problem. */
        s->hold = true;
        uv_timer_start(&s->feed_timer, on_feed_timer, backoff_jitter(s->backoff_ms), 0);
        s->backoff_ms = s->backoff_ms * 2 > (unsigned)s->cfg->retry.backoff_max_ms
                        ? (unsigned)s->cfg->retry.backoff_max_ms : s->backoff_ms * 2;
    }
}

static void on_result(struct pgsink *s, struct q_entry *q, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);

    if (q->stale)
        return;
    if (st == PGRES_FATAL_ERROR && !s->seg_failed) {
        s->seg_failed = true;
        snprintf(s->seg_error, sizeof(s->seg_error), "%s",
                 PQresultErrorMessage(r));
        s->seg_error[strcspn(s->seg_error, "\n")] = '\0';
        if (PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) != NULL) {
            /* e.g. which parent key a foreign key misses */
            size_t n = strlen(s->seg_error);
            snprintf(s->seg_error + n, sizeof(s->seg_error) - n, " (%s)",
                     PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL));
        }
        log_redact(s->seg_error, sizeof(s->seg_error));
        snprintf(s->seg_sqlstate, sizeof(s->seg_sqlstate), "%s",
                 PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "");
        s->seg_error_entry = *q;      /* takes ownership of its strings */
        q->mapping = q->key = q->incoming = q->base = q->source = NULL;
        return;
    }
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        return;
    switch (q->kind) {
    case Q_STMT:
        on_stmt_result(s, q, r);
        break;
    case Q_FAST:
    case Q_FAST_UPDATES:
        s->stats.applied += (uint64_t)q->seq;
        break;
    case Q_FAST_UPDATE:
        s->stats.applied++;
        statement_answered(s, q);
        break;
    case Q_SETUP: case Q_PROGRESS: case Q_TRACKTS: case Q_TYPES:
        on_setup_result(s, q, r);
        break;
    case Q_COMMIT:
        s->applied_seq = q->commit_seq;
        s->stats.txns++;
        s->stats.lag_us = wall_us() - q->version_us;
        if (state_begin(s->st, NULL) == 0)
            state_applied_set(s->st, s->ep->name, s->applied_seq, NULL);
        if (s->hooks.on_applied)
            s->hooks.on_applied(s->hooks.arg, s, s->applied_seq);
        break;
    default:
        break;
    }
}

/* A failed statement aborts the target transaction until the next Sync.
 * When none is on its way (feeding stopped at a barrier or a full window
 * before the commit was sent), send one, so on_sync can roll back and
 * redo instead of waiting forever. */
static void ensure_sync(struct pgsink *s)
{
    for (size_t i = 0; i < s->qlen; i++)
        if (s->q[(s->qhead + i) % s->qcap].kind == Q_SYNC)
            return;
    if (PQpipelineSync(s->conn) != 1 || q_push(s, Q_SYNC) == NULL)
        sink_fail(s, "cannot end a failed target transaction", NULL);
    else
        PQflush(s->conn);
}

static void read_results(struct pgsink *s)
{
    PGresult *r;
    struct q_entry *q;

    if (PQconsumeInput(s->conn) == 0) {
        sink_fail(s, "connection to the target lost", NULL);
        return;
    }
    while (s->conn != NULL && (q = q_head(s)) != NULL && !PQisBusy(s->conn)) {
        r = PQgetResult(s->conn);
        if (r == NULL) {
            /* End of one query's results. */
            if (q->kind != Q_SYNC)
                q_pop(s);
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            q_pop(s);
            on_sync(s);
            continue;
        }
        on_result(s, q, r);
        PQclear(r);
    }
    if (s->state == SK_READY && s->seg_failed && s->conn != NULL)
        ensure_sync(s);
    if (s->state == SK_READY)
        feed(s);
    drain_check(s);
}

/* ---- connection ---- */

static void on_io(void *arg, int events)
{
    struct pgsink *s = arg;
    int rc;

    if (s->state == SK_CONNECTING) {
        rc = pgconn_poll_connect(s->conn, &s->watch);
        if (rc < 0)
            sink_fail(s, "cannot connect to the target", NULL);
        else if (rc > 0) {
            const char *v[1] = { s->ep->origin };
            if (PQenterPipelineMode(s->conn) != 1 ||
                !send_plain(s, Q_SETUP, "SELECT pg_replication_origin_session_setup($1)", 1, v) ||
                !send_plain(s, Q_PROGRESS, "SELECT pg_replication_origin_progress($1, true)", 1, v) ||
                /* The origin's id, for pg_xact_commit_timestamp_origin
                 * (PostgreSQL 14 and later). */
                !send_plain(s, Q_TRACKTS, "SELECT current_setting('track_commit_timestamp'),"
                            " CASE WHEN current_setting('server_version_num')::int >= 140000"
                            " THEN pg_replication_origin_oid($1) END", 1, v) ||
                !send_type_lookups(s) ||
                (s->ep->apply_as_replica &&
                 !send_plain(s, Q_SETUP, "SET session_replication_role = replica", 0, NULL)) ||
                PQpipelineSync(s->conn) != 1 || q_push(s, Q_SYNC) == NULL) {
                sink_fail(s, "cannot start the apply session", NULL);
                return;
            }
            s->state = SK_SETUP;
            PQflush(s->conn);
            pgwatch_set(&s->watch, PQsocket(s->conn), UV_READABLE);
        }
        return;
    }
    if ((events & UV_WRITABLE) && s->conn && PQflush(s->conn) == 0)
        pgwatch_set(&s->watch, PQsocket(s->conn), UV_READABLE);
    if ((events & UV_READABLE) && s->conn)
        read_results(s);
}

static void sink_disconnect(struct pgsink *s)
{
    pgwatch_stop(&s->watch);
    if (s->conn != NULL) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    q_clear(s);
    q_entry_free(&s->seg_error_entry);
    s->seg_failed = false;
    s->barrier_seq = 0;
    clear_stmts(s);
    s->in_txn = false;
    s->cur_txn = 0;
    s->cur_open = s->abandoning = false;
    s->early_txn = s->early_after = 0;
    s->hold = false;
    fast_reset(s);
}

static void on_retry(uv_timer_t *t)
{
    sink_connect(t->data);
}

void sink_fail(struct pgsink *s, const char *what, const char *detail)
{
    char msg[512], delay[32];
    bool was_up = s->state == SK_READY;
    uint64_t wait_ms;

    if (s->state == SK_CLOSING)
        return;
    if (s->draining) {
        drain_failed(s, detail ? detail : s->conn ? PQerrorMessage(s->conn) : "");
        return;
    }
    wait_ms = backoff_jitter(s->backoff_ms);
    if (detail == NULL && s->conn != NULL)
        detail = pgconn_error(s->conn, msg, sizeof(msg));
    snprintf(delay, sizeof(delay), "%" PRIu64, wait_ms);
    log_error("pgsink", what, "endpoint", s->ep->name, "err", detail,
              "retry_in_ms", delay);
    sink_disconnect(s);
    s->state = SK_IDLE;
    uv_timer_start(&s->retry_timer, on_retry, wait_ms, 0);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
    if (was_up && s->hooks.on_connection)
        s->hooks.on_connection(s->hooks.arg, s, false);
}

static void sink_connect(struct pgsink *s)
{
    struct pgconn_params prm;

    if (s->state == SK_CLOSING)
        return;
    pgconn_params_init(&prm, s->ep, false);
    s->conn = PQconnectStartParams(prm.keys, prm.vals, 1);
    if (s->conn == NULL || PQstatus(s->conn) == CONNECTION_BAD) {
        sink_fail(s, "cannot start a connection to the target", NULL);
        return;
    }
    s->state = SK_CONNECTING;
    on_io(s, 0);
}

/* ---- lifecycle ---- */

/* The one PostgreSQL endpoint every change for this target comes from, or
 * NULL (none, several, or REST): early apply needs one commit order. */
static const char *single_pg_source(const struct pgsink *s)
{
    const char *src = NULL;
    const struct cfg_endpoint *ep;

    for (size_t i = 0; i < s->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &s->cfg->mappings[i];
        const char *sources[2] = { m->a.endpoint, m->b.endpoint };

        for (int k = 0; k < 2; k++) {
            const struct cfg_side *t;

            if (!mapping_targets(s, m, sources[k], &t))
                continue;
            if (src != NULL && strcmp(src, sources[k]) != 0)
                return NULL;
            src = sources[k];
        }
    }
    ep = src ? config_endpoint(s->cfg, src) : NULL;
    return ep != NULL && ep->kind == CFG_KIND_POSTGRES && ep != s->ep ? src : NULL;
}

static void fieldnames_free(struct pgsink *s)
{
    for (size_t i = 0; s->fields != NULL && i < s->cfg->nmappings; i++) {
        free(s->fields[i].names);
        nameidx_free(&s->fields[i].idx);
    }
    free(s->fields);
    s->fields = NULL;
}

static int fieldnames_init(struct pgsink *s)
{
    if (s->cfg->nmappings == 0)
        return 0;
    if ((s->fields = calloc(s->cfg->nmappings, sizeof(*s->fields))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < s->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &s->cfg->mappings[i];
        struct fieldnames *f = &s->fields[i];

        if (m->nfields > 0 && (f->names = calloc(m->nfields, sizeof(*f->names))) == NULL)
            return -ENOMEM;
        for (size_t j = 0; j < m->nfields; j++)
            f->names[j] = m->fields[j].name;
        if (nameidx_init(&f->idx, f->names, m->nfields) != 0)
            return -ENOMEM;
    }
    return 0;
}

int pgsink_new(struct pgsink **out, uv_loop_t *loop, const struct config *c,
               const struct cfg_endpoint *ep, struct state *st,
               const struct pgsink_hooks *h, struct err *e)
{
    struct pgsink *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    s->loop = loop;
    s->cfg = c;
    s->ep = ep;
    s->st = st;
    s->hooks = *h;
    s->backoff_ms = BACKOFF_MIN_MS;
    if (fieldnames_init(s) != 0) {      /* before any handle joins the loop */
        fieldnames_free(s);
        free(s);
        return err_set(e, -ENOMEM, "out of memory");
    }
    pgwatch_init(&s->watch, loop, on_io, s);
    uv_timer_init(loop, &s->retry_timer);
    uv_timer_init(loop, &s->feed_timer);
    uv_timer_init(loop, &s->parent_timer);
    s->parent_timer.data = s;
    s->waiting_any = true;      /* find waiting changes left by a previous run */
    s->retry_timer.data = s;
    s->feed_timer.data = s;
    strbuf_init(&s->sql);
    s->early_source = single_pg_source(s);
    *out = s;
    return 0;
}

int pgsink_start(struct pgsink *s)
{
    uv_timer_start(&s->parent_timer, on_parent_timer, 1000, 1000);
    sink_connect(s);
    return 0;
}

void pgsink_source_open(struct pgsink *s, bool open)
{
    s->source_open = open;
}

void pgsink_state_synced(struct pgsink *s, uint64_t gen)
{
    bool was_held = s->synced_gen < s->hold_gen;

    s->synced_gen = gen;
    if (was_held && gen >= s->hold_gen && s->state == SK_READY)
        feed(s);
}

void pgsink_rewind(struct pgsink *s)
{
    if (s->state != SK_READY || (!s->in_txn && s->qlen == 0))
        return;
    sink_fail(s, "the state commit failed: the open target transaction is rolled back"
              " and redone", "state commit failed");
}

void pgsink_kick(struct pgsink *s, int64_t durable_seq)
{
    if (durable_seq > s->durable_seq)
        s->durable_seq = durable_seq;
    if (s->state == SK_READY)
        feed(s);
}

int64_t pgsink_applied(const struct pgsink *s)
{
    return s->applied_seq;
}

bool pgsink_connected(const struct pgsink *s)
{
    return s->state == SK_READY;
}

bool pgsink_idle(const struct pgsink *s)
{
    return s->qlen == 0 && !s->in_txn;
}

const struct pgsink_stats *pgsink_stats(const struct pgsink *s)
{
    return &s->stats;
}

const struct cfg_endpoint *pgsink_endpoint(const struct pgsink *s)
{
    return s->ep;
}

static void on_closed(uv_handle_t *h)
{
    struct pgsink *s = h->data;

    if (--s->pending_closes > 0)
        return;
    if (s->closed)
        s->closed(s->closed_arg);
    free(s->q);
    pgbatch_free(&s->batch);
    flatobj_free(&s->scan);
    flatobj_free(&s->base_scan);
    types_clear(s);
    fieldnames_free(s);
    free(s->excluded);
    resolver_plugin_cache_free(s->plugins);
    strbuf_free(&s->sql);
    free(s);
}

static void finish_close(struct pgsink *s)
{
    /* An open target transaction is rolled back by the disconnect; origin
     * progress makes the next start resume exactly after the last commit. */
    s->state = SK_CLOSING;
    s->draining = false;
    sink_disconnect(s);
    s->pending_closes = 3;
    uv_close((uv_handle_t *)&s->parent_timer, on_closed);
    uv_close((uv_handle_t *)&s->retry_timer, on_closed);
    uv_close((uv_handle_t *)&s->feed_timer, on_closed);
}

/* Done draining once everything sent is answered and committed, or when
 * the commit waits for a state sync, which no longer comes: what was
 * saved for it (a conflict, a DLQ entry) needs the disk first, so the
 * transaction rolls back and is redone at the next start. */
static void drain_check(struct pgsink *s)
{
    if (!s->draining)
        return;
    if ((s->qlen == 0 && !s->in_txn) ||
        (s->in_txn && s->stmts_out == 0 && s->synced_gen < s->hold_gen))
        finish_close(s);
}

static void drain_failed(struct pgsink *s, const char *err)
{
    log_warn("pgsink", "stopping: the target transaction being finished failed;"
             " it is rolled back and redone at the next start", "endpoint",
             s->ep->name, "err", err);
    finish_close(s);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct pgsink *s = t->data;

    if (!s->draining)
        return;
    log_warn("pgsink", "stopping: the target transaction being finished did not commit"
             " in time; it is rolled back and redone at the next start", "endpoint",
             s->ep->name);
    finish_close(s);
}

void pgsink_close(struct pgsink *s, void (*done)(void *arg), void *arg)
{
    s->closed = done;
    s->closed_arg = arg;
    /* The owner is going away: nothing more goes back to it. */
    s->hooks.on_applied = NULL;
    s->hooks.on_connection = NULL;
    s->hooks.on_canary_candidate = NULL;
    /* Drain (SPEC: SIGTERM drains in-flight applies): source transactions
     * already being sent are finished and committed, and a COMMIT already
     * sent is waited for (the server would run it after a disconnect
     * anyway), so the applied position is saved before the exit; nothing
     * new starts. Not a transaction still arriving (applied early), nor
     * after a failure: those roll back. */
    if (s->state == SK_READY && (s->in_txn || s->qlen > 0) && !s->seg_failed && !s->hold &&
        !s->cur_open && s->early_txn == 0 && !s->abandoning) {
        s->draining = true;
        uv_timer_stop(&s->retry_timer);
        uv_timer_start(&s->retry_timer, on_drain_timeout, DRAIN_MS, 0);
        feed(s);
        drain_check(s);
        return;
    }
    finish_close(s);
}
