/* snapshot.c: `tandem snapshot -c FILE [-m MAPPING]` (SPEC §3, §5): the
 * initial load of mappings whose sides already hold rows, consistent with
 * the replication slots `tandem run` then streams from: nothing committed
 * before a slot's consistent point is missed by the copy, nothing after
 * it is copied (the stream brings it).
 *
 * For the chosen mappings (every mapping without -m; PostgreSQL on both
 * sides):
 *  1. No endpoint the mappings read from may have its slot yet. A slot
 *     means the pipeline already streams: refused, and `reconcile
 *     --repair` backfills (the watermark-chunk path of SPEC §5 is not
 *     built yet). A slot left by an interrupted snapshot on this state
 *     (its marker in the state, no position saved since) is dropped and
 *     made again.
 *  2. Publication and origin as `setup` makes them; then each source
 *     endpoint's slot with an exported snapshot, its replication
 *     connection kept open until the end.
 *  3. Each endpoint is read in one REPEATABLE READ transaction: in its
 *     slot's snapshot when it is a source, a fresh one otherwise.
 *  4. Per mapping, both sides merge in key order. A key on one side is
 *     copied to the other when the direction allows, else left alone
 *     (no shadow: nothing was agreed). A key on both sides with equal
 *     fields is kept. Different fields: a one-way mapping's source wins;
 *     a two-way mapping's records go to resolve() with no base (versions
 *     are commit times when track_commit_timestamp is on, or the
 *     timestamp_field). Each decision is in the conflict log; manual
 *     parks the key (an open conflict, no write, no shadow).
 *  5. Every agreed key gets its shadow: fields of the agreed record, each
 *     side's version the version of the row it had (or of the agreed
 *     record, where it had none) — never later than its slot's
 *     consistent point, so no streamed change is taken for stale (G5).
 *  6. Writes go to each target endpoint in one transaction under that
 *     endpoint's replication origin, so its own reader skips them (G4). A
 *     side that is also streamed is written conditionally: a row changed
 *     after the snapshot is left to its stream, which carries the newer
 *     state to the other side.
 *  7. Targets commit, then the state (shadows, conflicts, each new slot's
 *     consistent point as its endpoint's position) in one SQLite
 *     transaction. A failure before that rolls back and drops the new
 *     slots, so the command can simply run again: the merge is idempotent.
 *
 * Exit codes: 0 done; 1 a side unreachable, a slot already there, the
 * state in use, or any failure; 2 usage or config error. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../connectors/pg/pgadmin.h"
#include "../connectors/pg/pgconn.h"
#include "../connectors/pg/pgoutput.h"
#include "../resolver/canon.h"
#include "../resolver/resolver.h"
#include "../state/conflicts.h"
#include "../state/shadow.h"
#include "../state/state.h"
#include "commands.h"
#include "config.h"
#include "log.h"
#include "snapshot.h"

#include "backfill.h"
#include "strbuf.h"

#define SNAP_MAX_EPS 64
#define PROGRESS_ROWS 20000     /* a progress line per this many rows read */
#define PROGRESS_MIN_S 1.0      /* ...at most once a second */
#define META_PREFIX "snapshot.slot."

/* Set by SIGINT/SIGTERM; the merge loop stops and everything rolls back.
 * A signal handler can reach nothing else. */
static volatile sig_atomic_t snap_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    snap_interrupted = 1;
}

/* One PostgreSQL endpoint taking part. */
struct snap_ep {
    const struct cfg_endpoint *ep;
    bool source;                /* a chosen mapping reads it: new slot */
    bool target;                /* a chosen mapping writes it */
    struct snap_slot *slot;
    struct snap_write *wr;
};

struct snap_cmd {
    struct cli_opts *o;
    struct config *cfg;
    struct state *st;
    struct snap_ep eps[SNAP_MAX_EPS];
    int neps;
    struct resolver_plugin_cache *plugins;
    bool tty;
    int slots_made;
};

struct snap_stats {
    int64_t read_a, read_b;
    int64_t equal, decided, parked;
    int64_t left_a, left_b;     /* one-sided keys the direction keeps there */
    int64_t shadows;
    struct snap_write_stats wa, wb;
};

/* One mapping being copied. */
struct snap_map {
    struct snap_cmd *x;
    const struct cfg_mapping *m;
    struct snap_read *ra, *rb;
    struct snap_write *wa, *wb; /* NULL: the direction never writes there */
    const struct resolver_plugin *plugin;
    struct snap_stats st;
    /* progress */
    int64_t estimate, next_report;
    double t0, last_report;
    struct err *e;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct snap_ep *ep_of(struct snap_cmd *x, const struct cfg_endpoint *ep)
{
    for (int i = 0; i < x->neps; i++)
        if (x->eps[i].ep == ep)
            return &x->eps[i];
    return NULL;
}

static bool writes_a(const struct cfg_mapping *m) { return m->direction != CFG_DIR_A_TO_B; }
static bool writes_b(const struct cfg_mapping *m) { return m->direction != CFG_DIR_B_TO_A; }

/* ---- choosing mappings and endpoints ---- */

static int add_ep(struct snap_cmd *x, const struct cfg_endpoint *ep, bool source,
                  bool target)
{
    struct snap_ep *s = ep_of(x, ep);

    if (s == NULL) {
        if (x->neps == SNAP_MAX_EPS) {
            fprintf(stderr, "tandem: snapshot: more than %d endpoints\n", SNAP_MAX_EPS);
            return EXIT_USAGE;
        }
        s = &x->eps[x->neps++];
        s->ep = ep;
    }
    s->source = s->source || source;
    s->target = s->target || target;
    return 0;
}

static bool chosen(const struct snap_cmd *x, const struct cfg_mapping *m)
{
    return x->o->mapping == NULL || strcmp(x->o->mapping, m->name) == 0;
}

/* Checks the chosen mappings and collects their endpoints. */
static int choose(struct snap_cmd *x)
{
    int rc;

    if (x->o->mapping != NULL && config_mapping(x->cfg, x->o->mapping) == NULL) {
        fprintf(stderr, "tandem: snapshot: no mapping named %s in %s\n", x->o->mapping,
                x->o->config);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < x->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &x->cfg->mappings[i];

        if (!chosen(x, m))
            continue;
        if (m->a.ep->kind != CFG_KIND_POSTGRES || m->b.ep->kind != CFG_KIND_POSTGRES) {
            fprintf(stderr, "tandem: snapshot: mapping %s has a rest side: snapshot loads"
                    " postgres-to-postgres mappings only so far; use tandem reconcile -m %s"
                    " --repair to load it\n", m->name, m->name);
            return EXIT_RUNTIME;
        }
        if (m->a.ep == m->b.ep) {
            /* One write session per endpoint stages one table at a time. */
            fprintf(stderr, "tandem: snapshot: mapping %s has both sides on endpoint %s:"
                    " snapshot copies between two endpoints; use tandem reconcile -m %s"
                    " --repair\n", m->name, m->a.endpoint, m->name);
            return EXIT_RUNTIME;
        }
        if (m->nfields == 0) {
            fprintf(stderr, "tandem: snapshot: mapping %s maps no fields\n", m->name);
            return EXIT_USAGE;
        }
        if ((rc = add_ep(x, m->a.ep, writes_b(m), writes_a(m))) != 0 ||
            (rc = add_ep(x, m->b.ep, writes_a(m), writes_b(m))) != 0)
            return rc;
    }
    return 0;
}

/* A mapping not chosen that streams from a new slot starts from the slot's
 * point with its existing rows not copied: say so. */
static void warn_unchosen(struct snap_cmd *x)
{
    for (size_t i = 0; i < x->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &x->cfg->mappings[i];
        struct snap_ep *a = ep_of(x, m->a.ep), *b = ep_of(x, m->b.ep);

        if (chosen(x, m))
            continue;
        if ((a && a->source && writes_b(m)) || (b && b->source && writes_a(m)))
            log_warn("snapshot", "another mapping streams from a slot this snapshot creates:"
                     " its existing rows are not copied; snapshot all mappings at once"
                     " (omit -m) or run tandem reconcile --repair for it", "mapping", m->name);
    }
}

/* ---- slots ---- */

static void meta_key(const struct cfg_endpoint *ep, char *buf, size_t cap)
{
    snprintf(buf, cap, META_PREFIX "%s", ep->name);
}

/* A slot this state's snapshot created and never finished: the marker
 * names it and no position was saved since (no `run` streamed from it). */
static bool leftover_slot(struct snap_cmd *x, const struct cfg_endpoint *ep)
{
    char k[256], v[256], pos[64];

    meta_key(ep, k, sizeof(k));
    return state_meta_get(x->st, k, v, sizeof(v), NULL) == 0 &&
           strcmp(v, ep->slot) == 0 &&
           state_position_get(x->st, ep->name, pos, sizeof(pos), NULL) == -ENOENT;
}

/* Setup without the slot for every endpoint, and the check that no source
 * endpoint has its slot yet. */
static int prepare_endpoints(struct snap_cmd *x, struct err *e)
{
    for (int i = 0; i < x->neps; i++) {
        struct snap_ep *s = &x->eps[i];
        PGconn *c = pgconn_connect(s->ep, false, e);
        int rc = 0;

        if (c == NULL)
            return -EHOSTUNREACH;
        if (s->source && (rc = pgadmin_slot_exists(c, s->ep, e)) > 0) {
            if (leftover_slot(x, s->ep))
                rc = snap_slot_drop_leftover(s->ep, e);
            else
                rc = err_set(e, -EEXIST, "endpoint %s: slot %s exists: the mapping is"
                             " already streaming; use tandem reconcile --repair to backfill",
                             s->ep->name, s->ep->slot);
        }
        if (rc == 0)
            rc = pgadmin_setup_except_slot(c, x->cfg, s->ep, e);
        PQfinish(c);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Marks the slots about to be created (committed now: a crash mid-copy
 * leaves the marker, so the next attempt knows the slot is its own). */
static int mark_slots(struct snap_cmd *x, struct err *e)
{
    char k[256];
    int rc = state_begin(x->st, e);

    for (int i = 0; rc == 0 && i < x->neps; i++) {
        if (!x->eps[i].source)
            continue;
        meta_key(x->eps[i].ep, k, sizeof(k));
        rc = state_meta_set(x->st, k, x->eps[i].ep->slot, e);
    }
    if (rc == 0)
        rc = state_commit(x->st, e);
    if (rc != 0)
        state_rollback(x->st);
    return rc;
}

/* Slots first, before any transaction of ours is open on the servers: a
 * slot waits for every transaction running when it starts. Readers come
 * per mapping (copy_mapping), each importing its endpoint's snapshot. */
static int open_sessions(struct snap_cmd *x, struct err *e)
{
    int rc;

    for (int i = 0; i < x->neps; i++) {
        if (!x->eps[i].source)
            continue;
        if ((rc = snap_slot_create(x->eps[i].ep, &x->eps[i].slot, e)) != 0)
            return rc;
        x->slots_made++;
    }
    for (int i = 0; i < x->neps; i++)
        if (x->eps[i].target && (rc = snap_write_open(x->eps[i].ep, &x->eps[i].wr, e)) != 0)
            return rc;
    return 0;
}

/* ---- progress ---- */

static void progress(struct snap_map *s, bool final)
{
    int64_t rows = s->st.read_a + s->st.read_b;
    double t = now_s(), rate;
    char nrows[24], nest[24], nrate[24], pct[16] = "";

    if (!final && (rows < s->next_report || t - s->last_report < PROGRESS_MIN_S))
        return;
    s->next_report = rows + PROGRESS_ROWS;
    s->last_report = t;
    rate = t > s->t0 ? (double)rows / (t - s->t0) : 0;
    snprintf(nrows, sizeof(nrows), "%" PRId64, rows);
    snprintf(nest, sizeof(nest), "%" PRId64, s->estimate);
    snprintf(nrate, sizeof(nrate), "%.0f", rate);
    if (s->estimate > 0)
        snprintf(pct, sizeof(pct), " (%d%%)",
                 (int)(rows * 100 / (rows > s->estimate ? rows : s->estimate)));
    if (s->x->tty)
        fprintf(stderr, "snapshot %s: %s rows read%s%s%s, %s rows/s%s\n", s->m->name, nrows,
                s->estimate > 0 ? " of ~" : "", s->estimate > 0 ? nest : "", pct, nrate,
                final ? ", done" : "");
    else
        log_info("snapshot", final ? "copy read everything" : "copy progress",
                 "mapping", s->m->name, "rows", nrows,
                 "estimate", s->estimate > 0 ? nest : NULL, "rows_per_s", nrate);
}

/* ---- one key ---- */

/* The shadow of key: what both sides hold once the copy commits. */
static int agree(struct snap_map *s, const char *key, const json_t *fields,
                 int64_t va, int64_t vb)
{
    struct shadow sh = { 0 };
    int rc;

    if ((sh.fields = json_dumps(fields, JSON_COMPACT)) == NULL)
        return err_set(s->e, -ENOMEM, "out of memory");
    canon_hash(fields, sh.hash);
    sh.version_a_us = va;
    sh.version_b_us = vb;
    rc = shadow_put(s->x->st, s->m->name, key, &sh, s->e);
    free(sh.fields);
    if (rc == 0)
        s->st.shadows++;
    return rc;
}

/* Writes fields to side ('a'/'b'), where the row read had xmin (NULL:
 * no row). */
static int stage(struct snap_map *s, char side, const json_t *fields, const char *xmin)
{
    return snap_write_row(side == 'a' ? s->wa : s->wb, fields, xmin, s->e);
}

/* The conflict log entry of a key both sides held differently (G7). */
static int record(struct snap_map *s, const struct snap_row *a, const struct snap_row *b,
                  const json_t *result, const json_t *explain, const char *rule, bool open)
{
    struct conflict cf = { 0 };
    char *ta = json_dumps(a->rec.fields, JSON_COMPACT);
    char *tb = json_dumps(b->rec.fields, JSON_COMPACT);
    char *tr = result ? json_dumps(result, JSON_COMPACT) : NULL;
    char *td = explain ? json_dumps(explain, JSON_COMPACT) : NULL;
    int rc;

    cf.mapping = s->m->name;
    cf.key = a->rec.key;
    cf.strategy = config_strategy_name(s->m->strategy);
    cf.side_a = ta;
    cf.side_b = tb;
    cf.result = tr;
    cf.rule = rule;
    cf.open = open;
    cf.decisions = td;
    cf.version_a_us = a->rec.version_us;
    cf.version_b_us = b->rec.version_us;
    rc = ta && tb && (tr || !result) ? conflict_record(s->x->st, &cf, s->e)
                                    : err_set(s->e, -ENOMEM, "out of memory");
    free(ta);
    free(tb);
    free(tr);
    free(td);
    return rc;
}

/* A one-way mapping: its source's record is the agreed one. */
static int source_wins(struct snap_map *s, const struct snap_row *a,
                       const struct snap_row *b)
{
    bool from_a = s->m->direction == CFG_DIR_A_TO_B;
    const struct snap_row *w = from_a ? a : b, *l = from_a ? b : a;
    char rule[128];
    int rc;

    snprintf(rule, sizeof(rule), "snapshot: direction %s: %c is the source",
             from_a ? "a_to_b" : "b_to_a", from_a ? 'a' : 'b');
    s->st.decided++;
    if ((rc = record(s, a, b, w->rec.fields, NULL, rule, false)) != 0 ||
        (rc = stage(s, from_a ? 'b' : 'a', w->rec.fields, l->xmin)) != 0)
        return rc;
    return agree(s, a->rec.key, w->rec.fields, a->rec.version_us, b->rec.version_us);
}

/* A two-way mapping: the resolver decides, as for any conflict, with no
 * base (the sides never agreed before). */
static int resolve_pair(struct snap_map *s, const struct snap_row *a,
                        const struct snap_row *b)
{
    struct resolve_side sa = { a->rec.fields, false, a->rec.version_us, a->rec.version_us };
    struct resolve_side sb = { b->rec.fields, false, b->rec.version_us, b->rec.version_us };
    struct resolve_result res = { 0 };
    char rule[RESOLVE_DETAIL_MAX + 32];
    int rc;

    resolve(s->m, s->plugin, a->rec.key, NULL, &sa, &sb, &res);
    if (res.outcome == RESOLVE_ERROR) {
        rc = err_set(s->e, -EPROTO, "mapping %s key %s: the resolver could not decide: %s",
                     s->m->name, a->rec.key, res.detail);
        goto out;
    }
    snprintf(rule, sizeof(rule), "snapshot: %s", res.detail[0] ? res.detail : res.rule);
    if (res.outcome == RESOLVE_PARK || res.deleted) {
        /* No write and no shadow until an operator decides; a delete is
         * parked too: snapshot only ever adds and updates rows. */
        if (res.deleted)
            snprintf(rule, sizeof(rule), "snapshot: the resolver decided a delete, which"
                     " snapshot does not apply: decide with tandem conflicts resolve");
        s->st.parked++;
        rc = record(s, a, b, NULL, NULL, rule, true);
        goto out;
    }
    s->st.decided++;
    if ((rc = record(s, a, b, res.fields, res.explain, rule, false)) != 0 ||
        (res.write_a && (rc = stage(s, 'a', res.fields, a->xmin)) != 0) ||
        (res.write_b && (rc = stage(s, 'b', res.fields, b->xmin)) != 0))
        goto out;
    rc = agree(s, a->rec.key, res.fields, a->rec.version_us, b->rec.version_us);
out:
    resolve_result_clear(&res);
    return rc;
}

static int on_both(struct snap_map *s, const struct snap_row *a, const struct snap_row *b)
{
    if (rec_fields_same(s->m, a->rec.fields, b->rec.fields, NULL)) {
        s->st.equal++;
        return agree(s, a->rec.key, a->rec.fields, a->rec.version_us, b->rec.version_us);
    }
    if (s->m->direction != CFG_DIR_BOTH)
        return source_wins(s, a, b);
    return resolve_pair(s, a, b);
}

/* A key on one side: copied when the direction allows. */
static int on_one(struct snap_map *s, char side, const struct snap_row *r)
{
    int rc;

    if (side == 'a' ? !writes_b(s->m) : !writes_a(s->m)) {
        if (side == 'a')
            s->st.left_a++;
        else
            s->st.left_b++;
        return 0;
    }
    if ((rc = stage(s, side == 'a' ? 'b' : 'a', r->rec.fields, NULL)) != 0)
        return rc;
    return agree(s, r->rec.key, r->rec.fields, r->rec.version_us, r->rec.version_us);
}

/* ---- one mapping ---- */

/* Reads the next row of a side; a key seen twice in a row means the key
 * columns are not unique, which no sync can work with. */
static int next_row(struct snap_map *s, char side, struct snap_row *r, struct strbuf *prev)
{
    struct snap_read *rd = side == 'a' ? s->ra : s->rb;
    const struct cfg_side *sd = side == 'a' ? &s->m->a : &s->m->b;
    int rc = snap_read_next(rd, r, s->e);

    if (rc <= 0)
        return rc;
    if (side == 'a')
        s->st.read_a++;
    else
        s->st.read_b++;
    if (prev->len > 0 && strcmp(strbuf_cstr(prev), r->rec.key) == 0)
        return err_set(s->e, -EPROTO, "endpoint %s: table %s has key %s twice: the"
                       " mapping's key columns must be unique", sd->endpoint, sd->table,
                       r->rec.key);
    strbuf_reset(prev);
    strbuf_adds(prev, r->rec.key);
    return prev->failed ? err_set(s->e, -ENOMEM, "out of memory") : 1;
}

static int merge(struct snap_map *s)
{
    struct snap_row ra, rb;
    struct strbuf pa, pb;
    int ha, hb, rc = 0;

    strbuf_init(&pa);
    strbuf_init(&pb);
    ha = next_row(s, 'a', &ra, &pa);
    hb = ha < 0 ? 0 : next_row(s, 'b', &rb, &pb);
    if (ha < 0 || hb < 0)
        rc = ha < 0 ? ha : hb;
    while (rc == 0 && (ha > 0 || hb > 0)) {
        int c = ha <= 0 ? 1 : hb <= 0 ? -1 : rec_key_cmp(&ra.rec, &rb.rec);

        if (snap_interrupted) {
            rc = err_set(s->e, -EINTR, "interrupted");
            break;
        }
        rc = c < 0 ? on_one(s, 'a', &ra) : c > 0 ? on_one(s, 'b', &rb) : on_both(s, &ra, &rb);
        if (rc == 0 && c <= 0 && (ha = next_row(s, 'a', &ra, &pa)) < 0)
            rc = ha;
        if (rc == 0 && c >= 0 && (hb = next_row(s, 'b', &rb, &pb)) < 0)
            rc = hb;
        progress(s, false);
    }
    strbuf_free(&pa);
    strbuf_free(&pb);
    return rc;
}

static void print_stats(const struct snap_map *s)
{
    const struct snap_stats *t = &s->st;
    char ra[24], rb[24], tb[24], ta[24], eq[24], de[24], pk[24], lf[24], ch[24], sh[24];

    printf("ok   snapshot %s: a %" PRId64 " rows, b %" PRId64 " rows; copied a->b %" PRId64
           ", b->a %" PRId64 "; on both sides %" PRId64 " equal, %" PRId64 " decided by %s, %"
           PRId64 " parked; %" PRId64 " keys in the shadow\n", s->m->name, t->read_a,
           t->read_b, t->wb.staged, t->wa.staged, t->equal, t->decided,
           s->m->direction == CFG_DIR_BOTH ? config_strategy_name(s->m->strategy)
                                           : "direction", t->parked, t->shadows);
    if (t->left_a + t->left_b > 0)
        printf("     %" PRId64 " keys only on a, %" PRId64 " only on b stay where they are"
               " (direction)\n", t->left_a, t->left_b);
    if (t->wa.skipped + t->wb.skipped > 0)
        printf("     %" PRId64 " rows changed during the copy: their streams carry the"
               " newer state\n", t->wa.skipped + t->wb.skipped);
    snprintf(ra, sizeof(ra), "%" PRId64, t->read_a);
    snprintf(rb, sizeof(rb), "%" PRId64, t->read_b);
    snprintf(tb, sizeof(tb), "%" PRId64, t->wb.staged);
    snprintf(ta, sizeof(ta), "%" PRId64, t->wa.staged);
    snprintf(eq, sizeof(eq), "%" PRId64, t->equal);
    snprintf(de, sizeof(de), "%" PRId64, t->decided);
    snprintf(pk, sizeof(pk), "%" PRId64, t->parked);
    snprintf(lf, sizeof(lf), "%" PRId64, t->left_a + t->left_b);
    snprintf(ch, sizeof(ch), "%" PRId64, t->wa.skipped + t->wb.skipped);
    snprintf(sh, sizeof(sh), "%" PRId64, t->shadows);
    log_info("snapshot", "mapping loaded", "mapping", s->m->name, "rows_a", ra,
             "rows_b", rb, "copied_to_b", tb, "copied_to_a", ta, "equal", eq,
             "decided", de, "parked", pk, "left", lf, "changed_during_copy", ch,
             "shadows", sh);
}

static int copy_sides(struct snap_map *s)
{
    const struct cfg_mapping *m = s->m;
    int64_t est_a = -1, est_b = -1;
    bool both = m->direction == CFG_DIR_BOTH;
    struct err *e = s->e;
    int rc;

    /* Each side is streamed only when the mapping runs both ways: then
     * both are written conditionally. */
    if ((rc = snap_read_scan(s->ra, m, 'a', &est_a, e)) != 0 ||
        (rc = snap_read_scan(s->rb, m, 'b', &est_b, e)) != 0 ||
        (s->wa && (rc = snap_write_table(s->wa, m, 'a', both, e)) != 0) ||
        (s->wb && (rc = snap_write_table(s->wb, m, 'b', both, e)) != 0))
        return rc;
    s->estimate = est_a >= 0 && est_b >= 0 ? est_a + est_b : -1;
    s->t0 = s->last_report = now_s();
    s->next_report = PROGRESS_ROWS;
    log_info("snapshot", "copying", "mapping", m->name, "from", m->a.table, "to", m->b.table,
             "direction", both ? "both" : m->direction == CFG_DIR_A_TO_B ? "a_to_b" : "b_to_a");
    if ((rc = merge(s)) != 0)
        return rc;
    progress(s, true);
    if ((s->wb && (rc = snap_write_apply(s->wb, &s->st.wb, e)) != 0) ||
        (s->wa && (rc = snap_write_apply(s->wa, &s->st.wa, e)) != 0))
        return rc;
    print_stats(s);
    return 0;
}

static int copy_mapping(struct snap_cmd *x, const struct cfg_mapping *m, struct err *e)
{
    struct snap_map s = { .x = x, .m = m, .e = e };
    struct snap_ep *ea = ep_of(x, m->a.ep), *eb = ep_of(x, m->b.ep);
    int rc;

    s.wa = writes_a(m) ? ea->wr : NULL;
    s.wb = writes_b(m) ? eb->wr : NULL;
    if (m->strategy == CFG_STRAT_PLUGIN && m->direction == CFG_DIR_BOTH &&
        (s.plugin = resolver_plugin_for(&x->plugins, m, e)) == NULL)
        return e->code ? e->code : -ENOENT;
    /* A source side is read in its slot's snapshot; a side no mapping
     * streams from, as it is now. */
    if ((rc = snap_read_open(ea->ep, ea->slot ? snap_slot_snapshot(ea->slot) : NULL,
                             &s.ra, e)) == 0 &&
        (rc = snap_read_open(eb->ep, eb->slot ? snap_slot_snapshot(eb->slot) : NULL,
                             &s.rb, e)) == 0)
        rc = copy_sides(&s);
    snap_read_free(s.ra);
    snap_read_free(s.rb);
    return rc;
}

/* ---- the end ---- */

/* Targets first: the shadow must never claim an agreement the sides do
 * not hold. A failure between the two leaves rows without shadows, which
 * the daemon treats as first sight; the rerun this error asks for fixes it. */
static int commit_all(struct snap_cmd *x, struct err *e)
{
    char lsn[PGO_LSN_STRLEN], k[256], why[512];
    const char *done = NULL;
    int rc = 0;

    for (int i = 0; i < x->neps && rc == 0; i++) {
        if (x->eps[i].wr == NULL)
            continue;
        if ((rc = snap_write_commit(x->eps[i].wr, e)) == 0)
            done = x->eps[i].ep->name;
        else if (done != NULL) {
            snprintf(why, sizeof(why), "%.400s", e->msg);
            return err_set(e, rc, "%s (endpoint %s had committed its rows already:"
                           " running snapshot again merges them)", why, done);
        }
    }
    for (int i = 0; i < x->neps && rc == 0; i++) {
        struct snap_ep *s = &x->eps[i];

        if (s->slot == NULL)
            continue;
        /* The stream resumes here: nothing older can come twice. */
        pgo_lsn_format(snap_slot_lsn(s->slot), lsn);
        meta_key(s->ep, k, sizeof(k));
        if ((rc = state_position_set(x->st, s->ep->name, lsn, e)) == 0)
            rc = state_meta_set(x->st, k, "done", e);
    }
    if (rc == 0)
        rc = state_commit(x->st, e);
    return rc;
}

static void close_sessions(struct snap_cmd *x, bool ok)
{
    char lsn[PGO_LSN_STRLEN];
    struct err de = { 0 };

    for (int i = 0; i < x->neps; i++) {
        struct snap_ep *s = &x->eps[i];

        snap_write_free(s->wr);
        s->wr = NULL;
        if (s->slot == NULL)
            continue;
        if (ok) {
            pgo_lsn_format(snap_slot_lsn(s->slot), lsn);
            printf("ok   slot %s on %s starts at %s: tandem run streams what was"
                   " committed after the copy\n", s->ep->slot, s->ep->name, lsn);
            snap_slot_release(s->slot);
        } else if (snap_slot_drop(s->slot, &de) != 0) {
            log_redact(de.msg, sizeof(de.msg));
            fprintf(stderr, "tandem: snapshot: could not drop slot %s on %s after the"
                    " failure: %s; drop it (tandem teardown, or pg_drop_replication_slot)"
                    " before running snapshot again\n", s->ep->slot, s->ep->name, de.msg);
        }
        s->slot = NULL;
    }
}

static int run_snapshot(struct snap_cmd *x, struct err *e)
{
    int rc;

    if ((rc = prepare_endpoints(x, e)) != 0)
        return rc;
    warn_unchosen(x);
    if ((rc = mark_slots(x, e)) != 0 || (rc = open_sessions(x, e)) != 0 ||
        (rc = state_begin(x->st, e)) != 0)
        return rc;
    for (size_t i = 0; i < x->cfg->nmappings && rc == 0; i++)
        if (chosen(x, &x->cfg->mappings[i]))
            rc = copy_mapping(x, &x->cfg->mappings[i], e);
    if (rc == 0)
        rc = commit_all(x, e);
    if (rc != 0)
        state_rollback(x->st);
    return rc;
}

static int open_state(struct snap_cmd *x)
{
    struct err e = { 0 };
    int rc = state_open(&x->st, x->cfg->state_path, STATE_EXCLUSIVE, &e);

    if (rc == 0)
        return 0;
    log_redact(e.msg, sizeof(e.msg));
    fprintf(stderr, "tandem: snapshot: %s\n", e.msg);
    if (rc == -EBUSY)
        fprintf(stderr, "tandem: snapshot loads a mapping before its first tandem run;"
                " to backfill a running pipeline use tandem reconcile --repair\n");
    return EXIT_RUNTIME;
}

/* Does a postgres source side of m already have its slot (the mapping's
 * endpoint streams)? */
static bool source_streams(const struct cfg_mapping *m)
{
    const struct cfg_side *sides[2] = { &m->a, &m->b };
    bool streams = false;

    for (int i = 0; i < 2 && !streams; i++) {
        struct err e = { 0 };
        bool src = i == 0 ? m->direction != CFG_DIR_B_TO_A : m->direction != CFG_DIR_A_TO_B;
        PGconn *c;

        if (!src || sides[i]->ep == NULL || sides[i]->ep->kind != CFG_KIND_POSTGRES)
            continue;
        if ((c = pgconn_connect(sides[i]->ep, false, &e)) == NULL)
            continue;
        streams = pgadmin_slot_exists(c, sides[i]->ep, &e) > 0;
        PQfinish(c);
    }
    return streams;
}

/* The slot exists: the load goes through the stream instead, chunk by
 * chunk between watermarks (backfill.h), done by the running daemon or
 * the next tandem run; streaming never pauses. */
static int request_backfill(struct snap_cmd *x, const struct cfg_mapping *m)
{
    struct state *st = NULL;
    struct err e = { 0 };
    int n = 0;

    if (state_open(&st, x->cfg->state_path, STATE_SHARED, &e) != 0 ||
        state_begin(st, &e) != 0 || (n = backfill_request(st, m, &e)) < 0 ||
        state_commit(st, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: snapshot: cannot request the backfill: %s\n", e.msg);
        state_close(st);
        return EXIT_RUNTIME;
    }
    state_close(st);
    printf("snapshot: mapping %s loads through the stream: backfill requested; the running"
           " daemon (or the next tandem run) copies its rows in chunks between stream"
           " watermarks without pausing the stream (progress in its log)\n", m->name);
    log_info("snapshot", "backfill requested", "mapping", m->name);
    return EXIT_OK;
}

/* A mapping with a rest side loads through the stream: its postgres
 * sources get publication and slot now (setup), and the backfill request
 * makes the daemon journal their rows in chunks, which the rest writer
 * sends max_in_flight at a time; a rest source needs nothing, its feed
 * reads the resource from the beginning. */
static int rest_side_load(struct snap_cmd *x, const struct cfg_mapping *m)
{
    const struct cfg_side *sides[2] = { &m->a, &m->b };

    for (int i = 0; i < 2; i++) {
        struct err e = { 0 };
        PGconn *c;
        int rc;

        if (sides[i]->ep == NULL || sides[i]->ep->kind != CFG_KIND_POSTGRES)
            continue;
        if ((c = pgconn_connect(sides[i]->ep, false, &e)) == NULL) {
            fprintf(stderr, "tandem: snapshot: %s\n", e.msg);
            return EXIT_RUNTIME;
        }
        rc = pgadmin_setup(c, x->cfg, sides[i]->ep, &e);
        PQfinish(c);
        if (rc != 0) {
            log_redact(e.msg, sizeof(e.msg));
            fprintf(stderr, "tandem: snapshot: endpoint %s: %s\n", sides[i]->endpoint, e.msg);
            return EXIT_RUNTIME;
        }
    }
    return request_backfill(x, m);
}

int cmd_snapshot(struct cli_opts *o)
{
    struct snap_cmd x = { .o = o };
    struct sigaction sa = { 0 }, old_int, old_term;
    struct err e = { 0 };
    int rc;

    log_setup(LOG_INFO, LOG_FORMAT_JSON, NULL, NULL);
    if (o->nargs > 0) {
        fprintf(stderr, "tandem: snapshot takes no arguments (got %s)\n", o->args[0]);
        return EXIT_USAGE;
    }
    if (config_load(&x.cfg, o->config, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: config %s is invalid:\n%s\n", o->config, e.msg);
        return EXIT_USAGE;
    }
    log_setup(x.cfg->log_level, x.cfg->log_format, NULL, x.cfg->name);
    x.tty = isatty(STDERR_FILENO);
    if (o->mapping != NULL && config_mapping(x.cfg, o->mapping) != NULL) {
        const struct cfg_mapping *m = config_mapping(x.cfg, o->mapping);
        bool rest = (m->a.ep && m->a.ep->kind == CFG_KIND_REST) ||
                    (m->b.ep && m->b.ep->kind == CFG_KIND_REST);

        if (rest || source_streams(m)) {
            rc = rest ? rest_side_load(&x, m) : request_backfill(&x, m);
            config_free(x.cfg);
            return rc;
        }
    }
    if ((rc = choose(&x)) != 0 || (rc = open_state(&x)) != 0) {
        config_free(x.cfg);
        return rc;
    }
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    rc = run_snapshot(&x, &e);
    close_sessions(&x, rc == 0);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc != 0) {
        log_redact(e.msg, sizeof(e.msg));
        log_error("snapshot", "snapshot failed: nothing kept", "err", e.msg);
        fprintf(stderr, "tandem: snapshot: %s\n", e.msg);
        if (x.slots_made > 0)
            fprintf(stderr, "tandem: snapshot: rolled back and the new slots dropped:"
                    " fix the cause and run it again\n");
    }
    resolver_plugin_cache_free(x.plugins);
    state_close(x.st);
    config_free(x.cfg);
    return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}
