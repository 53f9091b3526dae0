/* reconcile_repair.c: `reconcile --repair`: every difference is decided by
 * the mapping's resolver, recorded in the conflict log, and journaled as a
 * synthetic change from the winning side, so the ordinary writers apply
 * it (conditionally on the loser's record as it was compared).
 *
 * Versions given to the resolver, per side:
 *  - a record whose commit timestamp is known (track_commit_timestamp on:
 *    pg_xact_commit_timestamp(xmin)): that time (or timestamp_field, by
 *    resolve_version);
 *  - a record without one: the shadow's version of that side when the
 *    record still equals the shadow (unchanged since the agreement), else
 *    now (changed since, at an unknown time);
 *  - a missing record: the tombstone's version when the shadow is one;
 *    now when the shadow is live and the other side still equals it (the
 *    delete is the only change since the agreement); the shadow's version
 *    when both changed (a changed record beats a delete of unknown time);
 *    0 without a shadow.
 * A one-way mapping's source side always wins, and a stale side (older
 * than the shadow, G5) always loses; every other key goes to resolve(). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "../connectors/change.h"
#include "../connectors/pg/pgconn.h"
#include "../connectors/pg/pgsink.h"
#include "../connectors/rest/rest_http.h"
#include "../connectors/rest/restsink.h"
#include "../resolver/resolver.h"
#include "../state/conflicts.h"
#include "../state/journal.h"
#include "../state/shadow.h"
#include "../state/state.h"
#include "log.h"
#include "reconcile.h"

#define REPAIR_BATCH 200        /* keys per state transaction */
#define INLINE_TICK_MS 20
#define INLINE_MAX_SINKS 32

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct fixer {
    const struct config *c;
    const struct cfg_mapping *m;
    struct state *st;
    struct resolver_plugin *plugin;
    struct reconcile_repair_stats *out;
    int64_t txn_from[2];        /* open journal txn sourced from a / b */
    int64_t now_us;
    struct err *e;
};

/* The version of one side as documented at the top of this file. */
static int64_t side_version(const struct cfg_mapping *m,
                            const struct reconcile_diff *d, char side,
                            const json_t *rec, const json_t *other,
                            const struct shadow *sh, const json_t *shfields,
                            int64_t now)
{
    int64_t known = side == 'a' ? d->version_a_us : d->version_b_us;
    int64_t shv = sh ? (side == 'a' ? sh->version_a_us : sh->version_b_us) : 0;
    bool live = sh != NULL && !sh->tombstone && json_is_object(shfields);

    if (rec != NULL) {
        if (known > 0)
            return known;
        if (live && rec_fields_same(m, rec, shfields, NULL))
            return shv;
        return now;
    }
    if (sh == NULL)
        return 0;
    if (sh->tombstone)
        return shv;
    if (other != NULL && live && rec_fields_same(m, other, shfields, NULL))
        return now;
    return shv;
}

static int txn_for(struct fixer *f, int from)
{
    const char *ep = from == 0 ? f->m->a.endpoint : f->m->b.endpoint;

    if (f->txn_from[from] != 0)
        return 0;
    return journal_txn_open(f->st, ep, 0, 0, f->now_us, &f->txn_from[from], f->e);
}

/* Journals the change that brings side `to` to result (NULL: deleted). */
static int journal_fix(struct fixer *f, const struct reconcile_diff *d, char to,
                       const char *result, int64_t version)
{
    const char *cur = to == 'a' ? d->a : d->b;
    int from = to == 'a' ? 1 : 0;
    struct change ch = { 0 };
    int rc;

    if (result == NULL && cur == NULL)
        return 0;
    if ((rc = txn_for(f, from)) != 0)
        return rc;
    ch.endpoint = from == 0 ? f->m->a.endpoint : f->m->b.endpoint;
    ch.mapping = f->m->name;
    ch.key = d->key;
    ch.version_us = version;
    if (result == NULL) {
        ch.op = CHANGE_DELETE;
        ch.fields = cur;
        ch.old_fields = cur;
    } else {
        ch.op = cur ? CHANGE_UPDATE : CHANGE_INSERT;
        ch.fields = result;
        ch.old_fields = cur;    /* the writer checks the row still is this */
    }
    if ((rc = journal_append(f->st, f->txn_from[from], &ch, f->e)) != 0)
        return rc;
    f->out->changes++;
    return 0;
}

static int commit_batch(struct fixer *f)
{
    int rc = 0;

    for (int i = 0; i < 2 && rc == 0; i++) {
        int64_t seq = 0;

        if (f->txn_from[i] == 0)
            continue;
        rc = journal_txn_commit(f->st, f->txn_from[i], 0, &seq, f->e);
        f->txn_from[i] = 0;
        /* A transaction from a is applied to b, and the reverse. */
        if (rc == 0 && seq > 0) {
            if (i == 0)
                f->out->last_seq_to_b = seq;
            else
                f->out->last_seq_to_a = seq;
        }
    }
    if (rc == 0)
        rc = state_commit(f->st, f->e);
    if (rc != 0)
        state_rollback(f->st);
    return rc;
}

static int record(struct fixer *f, const struct reconcile_diff *d,
                  const char *base, const char *result, const char *rule,
                  bool open, int64_t va, int64_t vb)
{
    struct conflict cf = { 0 };

    cf.mapping = f->m->name;
    cf.key = d->key;
    cf.strategy = config_strategy_name(f->m->strategy);
    cf.base = base;
    cf.side_a = d->a;
    cf.side_b = d->b;
    cf.result = open ? NULL : (result ? result : "null");
    cf.rule = rule;
    cf.open = open;
    cf.version_a_us = va;
    cf.version_b_us = vb;
    return conflict_record(f->st, &cf, f->e);
}

static int fix_one(struct fixer *f, const struct reconcile_diff *d)
{
    const struct cfg_mapping *m = f->m;
    json_t *a = d->a ? json_loads(d->a, 0, NULL) : NULL;
    json_t *b = d->b ? json_loads(d->b, 0, NULL) : NULL;
    json_t *shf = NULL;
    struct shadow sh = { 0 };
    bool have_sh = shadow_get(f->st, m->name, d->key, &sh, NULL) == 0;
    struct resolve_base base = { 0 };
    struct resolve_side sa = { 0 }, sb = { 0 };
    struct resolve_result res = { 0 };
    char rule[RESOLVE_DETAIL_MAX + 128];
    char *result = NULL;
    const char *base_text = NULL;
    bool write_a = false, write_b = false, deleted = false;
    char winner = 0;
    int64_t va, vb, version;
    int rc = 0;

    if ((d->a && !a) || (d->b && !b)) {
        rc = err_set(f->e, -EPROTO, "mapping %s key %s: unreadable record", m->name, d->key);
        goto out;
    }
    if (have_sh && sh.fields != NULL)
        shf = json_loads(sh.fields, 0, NULL);
    if (have_sh && !sh.tombstone)
        base_text = sh.fields;
    va = side_version(m, d, 'a', a, b, have_sh ? &sh : NULL, shf, f->now_us);
    vb = side_version(m, d, 'b', b, a, have_sh ? &sh : NULL, shf, f->now_us);
    if (m->direction != CFG_DIR_BOTH || d->stale_side) {
        /* Decided by rule, not by the strategy. */
        if (m->direction != CFG_DIR_BOTH)
            winner = m->direction == CFG_DIR_A_TO_B ? 'a' : 'b';
        else
            winner = d->stale_side == 'a' ? 'b' : 'a';
        if (m->direction != CFG_DIR_BOTH)
            snprintf(rule, sizeof(rule), "reconcile: %s: direction %s: %c is the source",
                     rec_class_name(d->cls),
                     m->direction == CFG_DIR_A_TO_B ? "a_to_b" : "b_to_a", winner);
        else
            snprintf(rule, sizeof(rule), "reconcile: stale: side %c's version is older"
                     " than the shadow's (never wins): %c taken", d->stale_side, winner);
        const char *w = winner == 'a' ? d->a : d->b;
        deleted = w == NULL;
        result = w ? strdup(w) : NULL;
        if (w && !result) {
            rc = err_set(f->e, -ENOMEM, "out of memory");
            goto out;
        }
        write_a = winner == 'b';
        write_b = winner == 'a';
    } else {
        if (have_sh) {
            base.fields = shf;
            base.version_a_us = sh.version_a_us;
            base.version_b_us = sh.version_b_us;
            base.tombstone = sh.tombstone;
        }
        sa.fields = a;
        sa.deleted = a == NULL;
        sa.version_us = sa.commit_us = va;
        sb.fields = b;
        sb.deleted = b == NULL;
        sb.version_us = sb.commit_us = vb;
        resolve(m, f->plugin, d->key, have_sh ? &base : NULL, &sa, &sb, &res);
        if (res.outcome == RESOLVE_ERROR) {
            f->out->failed++;
            log_error("reconcile", "the resolver could not decide a difference",
                      "mapping", m->name, "key", d->key, "err", res.detail);
            goto out;
        }
        snprintf(rule, sizeof(rule), "reconcile: %s: %s", rec_class_name(d->cls),
                 res.detail[0] ? res.detail : res.rule);
        if (res.outcome == RESOLVE_PARK) {
            f->out->parked++;
            rc = record(f, d, base_text, NULL, rule, true, va, vb);
            goto out;
        }
        deleted = res.deleted;
        result = res.fields ? json_dumps(res.fields, JSON_COMPACT) : NULL;
        if (!deleted && result == NULL) {
            rc = err_set(f->e, -ENOMEM, "out of memory");
            goto out;
        }
        write_a = res.write_a;
        write_b = res.write_b;
        winner = res.winner;
    }
    f->out->decided++;
    version = winner == 'a' ? va : winner == 'b' ? vb : (va > vb ? va : vb);
    if ((rc = record(f, d, base_text, deleted ? NULL : result, rule, false, va, vb)) != 0)
        goto out;
    if (write_a && (rc = journal_fix(f, d, 'a', deleted ? NULL : result, version)) != 0)
        goto out;
    if (write_b && (rc = journal_fix(f, d, 'b', deleted ? NULL : result, version)) != 0)
        goto out;
out:
    resolve_result_clear(&res);
    free(result);
    json_decref(a);
    json_decref(b);
    json_decref(shf);
    shadow_clear(&sh);
    return rc;
}

int reconcile_repair(const struct config *c, const struct cfg_mapping *m,
                     struct state *st, const struct reconcile_report *r,
                     struct reconcile_repair_stats *out, struct err *e)
{
    struct fixer f = { c, m, st, NULL, out, { 0, 0 }, wall_us(), e };
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (m->strategy == CFG_STRAT_PLUGIN && m->direction == CFG_DIR_BOTH &&
        (rc = resolver_plugin_load(m->plugin, &f.plugin, e)) != 0)
        return rc;
    for (size_t i = 0; i < r->ndiffs && rc == 0; i++) {
        if (!state_in_txn(st) && (rc = state_begin(st, e)) != 0)
            break;
        rc = fix_one(&f, &r->diffs[i]);
        if (rc != 0) {
            state_rollback(st);
            break;
        }
        if ((i + 1) % REPAIR_BATCH == 0)
            rc = commit_batch(&f);
    }
    if (rc == 0 && state_in_txn(st))
        rc = commit_batch(&f);
    resolver_plugin_free(f.plugin);
    return rc;
}

/* ---- applying without a daemon ---- */

/* One writer of the private loop: the one `run` uses for the endpoint's
 * kind (exactly one of the two is set). */
struct inline_sink {
    struct pgsink *pg;
    struct restsink *rest;
};

struct inline_run {
    uv_loop_t loop;
    uv_timer_t timer;
    struct state *st;
    struct inline_sink sinks[INLINE_MAX_SINKS];
    size_t n;
    int64_t upto;
    uint64_t deadline_ms;
    bool stopping, done;
    int closing;
    struct err *e;
};

static void sink_kick(struct inline_sink *s, int64_t durable)
{
    if (s->pg != NULL)
        pgsink_kick(s->pg, durable);
    else
        restsink_kick(s->rest, durable);
}

/* Connected, nothing waiting or running. */
static bool sink_quiet(const struct inline_sink *s)
{
    if (s->pg != NULL)
        return pgsink_connected(s->pg) && pgsink_idle(s->pg);
    return restsink_connected(s->rest) && restsink_idle(s->rest);
}

static const char *sink_endpoint(const struct inline_sink *s)
{
    return s->pg != NULL ? pgsink_endpoint(s->pg)->name : restsink_endpoint(s->rest)->name;
}

static void on_sink_closed(void *arg)
{
    struct inline_run *r = arg;

    r->closing--;
}

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void inline_stop(struct inline_run *r)
{
    r->stopping = true;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    for (size_t i = 0; i < r->n; i++) {
        r->closing++;
        if (r->sinks[i].pg != NULL)
            pgsink_close(r->sinks[i].pg, on_sink_closed, r);
        else
            restsink_close(r->sinks[i].rest, on_sink_closed, r);
        r->sinks[i].pg = NULL;
        r->sinks[i].rest = NULL;
    }
}

/* The daemon's flush timer in small: commit what the writers recorded,
 * then let them apply up to the journal's end. */
static void on_inline_tick(uv_timer_t *t)
{
    struct inline_run *r = t->data;
    int64_t durable = 0;
    bool all = true;

    if (r->stopping)
        return;
    if (state_in_txn(r->st) && state_commit(r->st, r->e) != 0) {
        inline_stop(r);
        return;
    }
    journal_last_commit_seq(r->st, &durable, NULL);
    for (size_t i = 0; i < r->n; i++) {
        int64_t txns = 0;

        sink_kick(&r->sinks[i], durable);
        if (!sink_quiet(&r->sinks[i]) ||
            reconcile_pending(r->st, sink_endpoint(&r->sinks[i]), r->upto,
                              &txns, NULL, NULL) != 0 || txns > 0)
            all = false;
    }
    if (all) {
        r->done = true;
        inline_stop(r);
    } else if (uv_now(&r->loop) >= r->deadline_ms) {
        inline_stop(r);
    }
}

/* The writer applies under the endpoint's replication origin; `run` and
 * `setup` create it, and so does this (it holds no WAL, unlike a slot). */
static int ensure_origin(const struct cfg_endpoint *ep, struct err *e)
{
    const char *p[1] = { ep->origin };
    PGconn *conn = pgconn_connect(ep, false, e);
    PGresult *r;
    int rc = 0;

    if (conn == NULL)
        return -EHOSTUNREACH;
    r = pgconn_query(conn, "select exists(select 1 from pg_replication_origin"
                     " where roname = $1)", 1, p, e);
    if (r == NULL) {
        rc = -EIO;
    } else if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        PQclear(r);
        r = pgconn_query(conn, "select pg_replication_origin_create($1)", 1, p, e);
        rc = r == NULL ? -EIO : 0;
        if (rc == 0)
            log_info("reconcile", "created replication origin", "endpoint", ep->name,
                     "origin", ep->origin);
    }
    PQclear(r);
    PQfinish(conn);
    return rc;
}

/* A rest endpoint's writer with its own transport on the private loop
 * (the writer holds the only reference, so closing it closes both). */
static int open_rest_sink(struct inline_run *r, const struct config *c,
                          const struct cfg_endpoint *ep, struct err *e)
{
    struct restsink_hooks hooks = { .arg = NULL };
    struct rest_http *http = NULL;
    int rc;

    if ((rc = rest_http_new(&http, &r->loop, ep, e)) != 0)
        return rc;
    rc = restsink_new(&r->sinks[r->n].rest, &r->loop, c, ep, r->st, http, &hooks, e);
    rest_http_unref(http);
    if (rc != 0)
        return rc;
    restsink_start(r->sinks[r->n++].rest);
    return 0;
}

static int open_pg_sink(struct inline_run *r, const struct config *c,
                        const struct cfg_endpoint *ep, struct err *e)
{
    struct pgsink_hooks hooks = { .arg = NULL };
    int rc;

    if ((rc = ensure_origin(ep, e)) != 0 ||
        (rc = pgsink_new(&r->sinks[r->n].pg, &r->loop, c, ep, r->st, &hooks, e)) != 0)
        return rc;
    pgsink_start(r->sinks[r->n++].pg);
    return 0;
}

int reconcile_apply_inline(const struct config *c, struct state *st,
                           const char *const *endpoints, size_t n,
                           int64_t upto_seq, int timeout_ms, struct err *e)
{
    struct inline_run *r = calloc(1, sizeof(*r));
    int rc = 0;

    if (r == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    if (state_mode_of(st) != STATE_EXCLUSIVE) {
        free(r);
        return err_set(e, -EINVAL, "applying inline needs the state's lock");
    }
    r->st = st;
    r->upto = upto_seq;
    r->e = e;
    if (uv_loop_init(&r->loop) != 0) {
        free(r);
        return err_set(e, -EIO, "cannot start an event loop");
    }
    for (size_t i = 0; i < n && r->n < INLINE_MAX_SINKS && rc == 0; i++) {
        const struct cfg_endpoint *ep = config_endpoint(c, endpoints[i]);
        bool dup = false;

        for (size_t j = 0; j < i; j++)
            dup = dup || strcmp(endpoints[j], endpoints[i]) == 0;
        if (ep == NULL || dup)
            continue;
        rc = ep->kind == CFG_KIND_POSTGRES ? open_pg_sink(r, c, ep, e)
                                           : open_rest_sink(r, c, ep, e);
    }
    uv_timer_init(&r->loop, &r->timer);
    r->timer.data = r;
    r->deadline_ms = uv_now(&r->loop) + (uint64_t)timeout_ms;
    if (rc != 0)
        inline_stop(r);
    else
        uv_timer_start(&r->timer, on_inline_tick, INLINE_TICK_MS, INLINE_TICK_MS);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (state_in_txn(st) && state_commit(st, NULL) != 0)
        state_rollback(st);
    if (uv_loop_close(&r->loop) != 0)
        log_error("reconcile", "event loop closed with open handles");
    if (rc == 0 && !r->done)
        rc = err_set(e, -ETIMEDOUT, "the fixes were not applied within %d s"
                     " (an endpoint unreachable?); they apply at the next tandem run",
                     timeout_ms / 1000);
    free(r);
    return rc;
}
