#include "daemon.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../connectors/pg/pgadmin.h"
#include "../connectors/pg/pgconn.h"
#include "../connectors/pg/pgquery.h"
#include "../connectors/pg/pgsink.h"
#include "../connectors/pg/pgsrc.h"
#include "../connectors/rest/rest_http.h"
#include "../connectors/rest/restsink.h"
#include "../connectors/rest/restsrc.h"
#include "../state/conflicts.h"
#include "../state/dlq.h"
#include "../state/journal.h"
#include "../state/state.h"
#include "backfill.h"
#include "backoff.h"
#include "canaries.h"
#include "dlq_retry.h"
#include "durable.h"
#include "reconcile_rt.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "status.h"

#define MAX_EPS 32
#define FLUSH_MS 20             /* group-commit window for state writes */
#define CHUNK_CHANGES 10000     /* commit a big source transaction in chunks */
#define TICK_MS 1000
/* WAL frames (8 KiB pages) after which a worker checkpoints: SQLite's own
 * autocheckpoint size. */
#define CHECKPOINT_FRAMES 1000

struct endpoint_rt {
    struct cfg_endpoint *ep;
    struct pgsrc *src;
    struct pgsink *sink;
    struct restsrc *rsrc;       /* rest endpoints */
    struct restsink *rsink;
    bool setup_done;
    uint64_t saved_lsn;         /* position saved in the state */
    uv_timer_t setup_timer;
    bool retained_query_running;
    unsigned setup_backoff_ms;
    struct daemon *d;
    /* last values exported as counters */
    uint64_t m_captured, m_echo, m_applied, m_errors, m_delmiss;
    uint64_t m_transient, m_exhausted, m_stale;
};

struct daemon {
    uv_loop_t loop;
    struct config *cfg;
    struct state *st;
    struct metrics *metrics;
    struct health *health;
    struct http *http;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t flush_timer, tick_timer;
    struct endpoint_rt eps[MAX_EPS];
    int neps;
    int64_t durable_seq;        /* journal applied-able: committed and synced */
    int64_t committed_seq;      /* journal committed at the last state commit */
    uint64_t commit_gen;        /* state commits made */
    uint64_t syncing_gen;       /* commit_gen the running sync covers */
    uint64_t synced_gen;        /* commit_gen the last finished sync covered */
    int64_t applied_min;        /* journal applied by every writer (last tick) */
    int64_t conflicts_counted;  /* the newest conflict id in the metric */
    int64_t reconcile_cli_seen_us;  /* the hand-run reconcile result adopted */
    struct durable *durable;
    bool flush_wanted;          /* a commit waits for the running sync */
    bool failed;                /* stopping because the state cannot be synced */
    struct canaries *canaries;
    struct reconcile_rt *reconcile;
    struct backfill *backfill;
    bool ready_sent, stopping;
    unsigned ticks;
    int closing;
};

/* ---- group commit ---- */

static void save_positions(struct daemon *d)
{
    char lsn[32];

    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        uint64_t p;

        if (r->src == NULL || (p = pgsrc_pending_lsn(r->src)) <= r->saved_lsn)
            continue;
        snprintf(lsn, sizeof(lsn), "%X/%X", (unsigned)(p >> 32), (unsigned)p);
        if (state_begin(d->st, NULL) == 0 &&
            state_position_set(d->st, r->ep->name, lsn, NULL) == 0)
            r->saved_lsn = p;
    }
}

/* The last commit is on disk: sources may acknowledge it, writers apply
 * what it holds. */
static void acknowledge(struct daemon *d)
{
    bool open = false;

    for (int i = 0; i < d->neps; i++) {
        if (d->eps[i].src) {
            pgsrc_durable(d->eps[i].src);
            open = open || pgsrc_in_journal_txn(d->eps[i].src);
        }
        if (d->eps[i].rsrc)
            restsrc_durable(d->eps[i].rsrc);
    }
    if (d->committed_seq > d->durable_seq)
        d->durable_seq = d->committed_seq;
    for (int i = 0; i < d->neps; i++) {
        if (d->eps[i].sink) {
            pgsink_source_open(d->eps[i].sink, open);
            pgsink_state_synced(d->eps[i].sink, d->synced_gen);
            pgsink_kick(d->eps[i].sink, d->durable_seq);
        }
        if (d->eps[i].rsink)
            restsink_kick(d->eps[i].rsink, d->durable_seq);
    }
}

/* Commits the open state transaction and tells the sources what it
 * holds; nothing is acknowledged until it is synced. */
static int commit_state(struct daemon *d)
{
    struct err e = { 0 };

    save_positions(d);
    if (!state_in_txn(d->st))
        return 1;
    if (state_commit(d->st, &e) != 0) {
        log_error("daemon", "cannot commit the state; nothing is acknowledged, and the"
                  " sources read again from the last commit (check the disk)",
                  "err", e.msg);
        for (int i = 0; i < d->neps; i++) {
            if (d->eps[i].src) {
                pgsrc_rewind(d->eps[i].src);
                d->eps[i].saved_lsn = 0;    /* the position's write was lost too */
            }
            if (d->eps[i].sink)
                pgsink_rewind(d->eps[i].sink);
        }
        return -1;
    }
    for (int i = 0; i < d->neps; i++) {
        if (d->eps[i].src)
            pgsrc_committed(d->eps[i].src);
        if (d->eps[i].rsrc)
            restsrc_committed(d->eps[i].rsrc);
    }
    journal_last_commit_seq(d->st, &d->committed_seq, NULL);
    d->commit_gen++;
    /* The worker's checkpoints run beside this writer and never let the
     * WAL start over while commits keep coming: past twice their size,
     * finish here, between transactions (they copied most of it). */
    if (state_wal_frames(d->st) >= 2 * CHECKPOINT_FRAMES &&
        state_checkpoint_here(d->st, &e) != 0)
        log_warn("daemon", "cannot checkpoint the state's WAL", "err", e.msg);
    return 0;
}

static void begin_stop(struct daemon *d, const char *why);
static void flush_state(struct daemon *d);

static void log_sync_failure(struct daemon *d, int err)
{
    log_error("daemon", "cannot sync the state to disk (fdatasync of its WAL failed);"
              " nothing after the last synced commit is acknowledged: check the"
              " disk, then start tandem again", "state", d->cfg->state_path,
              "err", strerror(err));
}

static void on_durable(void *arg, int err)
{
    struct daemon *d = arg;

    if (err != 0) {
        log_sync_failure(d, err);
        d->failed = true;
        begin_stop(d, "state sync failed");
        return;
    }
    if (d->stopping)
        return;
    d->synced_gen = d->syncing_gen;
    acknowledge(d);
    if (state_wal_frames(d->st) >= CHECKPOINT_FRAMES && durable_checkpoint(d->durable) != 0)
        log_warn("daemon", "cannot start a checkpoint of the state's WAL: out of memory?");
    if (d->flush_wanted) {
        d->flush_wanted = false;
        flush_state(d);
    }
}

/* Group commit: one commit and one WAL sync for everything since the last,
 * then readers acknowledge and writers apply. While a sync runs the batch
 * keeps growing; it is committed when the sync ends. */
static void flush_state(struct daemon *d)
{
    if (durable_busy(d->durable)) {
        d->flush_wanted = true;
        return;
    }
    if (commit_state(d) != 0)
        return;
    d->syncing_gen = d->commit_gen;
    if (durable_start(d->durable) != 0)
        on_durable(d, durable_sync_now(d->durable));
}

/* At stop: commit and sync here, then acknowledge, so the sources can say
 * so before they close. */
static void flush_state_now(struct daemon *d)
{
    int err;

    d->flush_wanted = false;
    if (commit_state(d) < 0)
        return;
    if ((err = durable_sync_now(d->durable)) != 0) {
        log_sync_failure(d, err);
        return;
    }
    d->synced_gen = d->commit_gen;
    acknowledge(d);
}

static void on_flush_timer(uv_timer_t *t)
{
    flush_state(t->data);
}

static void on_src_batch(void *arg, struct pgsrc *src, bool had_commit,
                         uint64_t open_changes)
{
    struct daemon *d = arg;

    (void)src;
    if (had_commit || open_changes >= CHUNK_CHANGES)
        flush_state(d);
}

/* A feed page is journaled with its cursor: commit it now, so the next
 * page can be requested (the cursor never runs ahead of the journal). */
static void on_rsrc_batch(void *arg, struct restsrc *src, bool had_commit,
                          uint64_t open_changes)
{
    (void)src;
    (void)had_commit;
    (void)open_changes;
    flush_state(arg);
}

/* ---- readiness, health, metrics ---- */

static bool all_connected(struct daemon *d)
{
    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        if ((r->src && !pgsrc_streaming(r->src)) ||
            (r->sink && !pgsink_connected(r->sink)) ||
            (r->rsrc && !restsrc_up(r->rsrc)) ||
            (r->rsink && !restsink_connected(r->rsink)) ||
            (!r->setup_done && r->ep->kind == CFG_KIND_POSTGRES))
            return false;
    }
    return true;
}

static void update_health(struct daemon *d)
{
    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        bool up = r->setup_done && (!r->src || pgsrc_streaming(r->src)) &&
                  (!r->sink || pgsink_connected(r->sink)) &&
                  (!r->rsrc || restsrc_up(r->rsrc)) &&
                  (!r->rsink || restsink_connected(r->rsink));
        if (up)
            health_clear(d->health, HEALTH_ENDPOINT_DOWN, r->ep->name);
        else
            health_set(d->health, HEALTH_ENDPOINT_DOWN, r->ep->name,
                       "endpoint not connected; tandem retries with backoff");
    }
    if (all_connected(d)) {
        health_clear(d->health, HEALTH_NOT_READY, NULL);
        if (!d->ready_sent) {
            d->ready_sent = true;
            notify_ready("connected to every endpoint");
            log_info("daemon", "ready: every endpoint connected");
        }
    } else {
        health_set(d->health, HEALTH_NOT_READY, NULL, "not every endpoint is connected yet");
    }
}

static void export_counter(struct daemon *d, const char *name, const char *labels,
                           uint64_t now, uint64_t *last)
{
    if (now > *last)
        metrics_add(d->metrics, name, labels, (double)(now - *last));
    *last = now;
}

static void add_conflicts(const char *mapping, const char *strategy, int64_t n, void *arg)
{
    struct daemon *d = arg;
    char lb[256];

    metrics_labels(lb, sizeof(lb), "mapping", mapping, "strategy", strategy, NULL);
    metrics_add(d->metrics, "tandem_conflicts_total", lb, (double)n);
}

/* Whatever recorded them (either writer, the resolver, an operator's
 * decision), conflicts are counted from the log, since this process
 * started (conflicts_counted starts at the newest id: open_state). */
static void export_conflicts(struct daemon *d)
{
    struct err e = { 0 };

    if (conflict_tally_since(d->st, &d->conflicts_counted, add_conflicts, d, &e) != 0)
        log_warn("daemon", "cannot count conflicts for the metrics; the counter stays"
                 " behind until the state can be read", "err", e.msg);
}

static void export_metrics(struct daemon *d)
{
    char lb[256];
    int64_t txns = 0, changes = 0, applied_min = INT64_MAX;

    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        if (r->src) {
            const struct pgsrc_stats *s = pgsrc_stats(r->src);
            metrics_labels(lb, sizeof(lb), "endpoint", r->ep->name, NULL);
            export_counter(d, "tandem_changes_captured_total", lb, s->captured, &r->m_captured);
            export_counter(d, "tandem_echo_suppressed_total", lb, s->echo_skipped, &r->m_echo);
        }
        if (r->sink) {
            const struct pgsink_stats *s = pgsink_stats(r->sink);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, NULL);
            export_counter(d, "tandem_pg_delete_missing_total", lb, s->delete_missing, &r->m_delmiss);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "rejected", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->errors - s->exhausted,
                           &r->m_errors);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "exhausted", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->exhausted, &r->m_exhausted);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "transient", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->transient, &r->m_transient);
            /* One peer per endpoint here: "from" names the other side. */
            for (int j = 0; j < d->neps; j++)
                if (j != i && (d->eps[j].src || d->eps[j].rsrc)) {
                    metrics_labels(lb, sizeof(lb), "from", d->eps[j].ep->name, "to",
                                   r->ep->name, NULL);
                    export_counter(d, "tandem_changes_applied_total", lb, s->applied,
                                   &r->m_applied);
                    metrics_set(d->metrics, "tandem_lag_seconds", lb,
                                s->lag_us > 0 ? (double)s->lag_us / 1e6 : 0);
                    break;
                }
            if (pgsink_applied(r->sink) < applied_min)
                applied_min = pgsink_applied(r->sink);
        }
        if (r->rsrc) {
            const struct restsrc_stats *s = restsrc_stats(r->rsrc);
            metrics_labels(lb, sizeof(lb), "endpoint", r->ep->name, NULL);
            export_counter(d, "tandem_changes_captured_total", lb, s->captured, &r->m_captured);
            export_counter(d, "tandem_echo_suppressed_total", lb, s->echo_suppressed,
                           &r->m_echo);
        }
        if (r->rsink) {
            const struct restsink_stats *s = restsink_stats(r->rsink);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "rejected", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->rejected, &r->m_errors);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "exhausted", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->exhausted, &r->m_exhausted);
            metrics_labels(lb, sizeof(lb), "to", r->ep->name, "kind", "transient", NULL);
            export_counter(d, "tandem_apply_errors_total", lb, s->retries, &r->m_transient);
            for (int j = 0; j < d->neps; j++)
                if (j != i && (d->eps[j].src || d->eps[j].rsrc)) {
                    metrics_labels(lb, sizeof(lb), "from", d->eps[j].ep->name, "to",
                                   r->ep->name, NULL);
                    export_counter(d, "tandem_changes_applied_total", lb, s->applied,
                                   &r->m_applied);
                    metrics_set(d->metrics, "tandem_lag_seconds", lb,
                                s->lag_us > 0 ? (double)s->lag_us / 1e6 : 0);
                    break;
                }
            if (restsink_applied(r->rsink) < applied_min)
                applied_min = restsink_applied(r->rsink);
        }
        if (r->rsrc || r->rsink || r->sink) {
            /* Dropped by the poller (feed records) and the writers (changes). */
            uint64_t stale = (r->rsrc ? restsrc_stats(r->rsrc)->stale_dropped : 0) +
                             (r->rsink ? restsink_stats(r->rsink)->stale : 0) +
                             (r->sink ? pgsink_stats(r->sink)->stale_dropped : 0);
            metrics_labels(lb, sizeof(lb), "endpoint", r->ep->name, NULL);
            export_counter(d, "tandem_stale_dropped_total", lb, stale, &r->m_stale);
        }
    }
    if (applied_min == INT64_MAX)
        applied_min = d->durable_seq;
    d->applied_min = applied_min;
    if (journal_depth(d->st, applied_min, &txns, &changes, NULL) == 0)
        metrics_set(d->metrics, "tandem_journal_depth", NULL, (double)changes);
    export_conflicts(d);
    metrics_set(d->metrics, "tandem_up", NULL, 1);
}

/* ---- slot retention (SPEC §5): a metric, and a warning past a limit ---- */

#define RETAINED_EVERY_TICKS 10

static void on_retained(void *arg, PGresult *res, const char *errmsg)
{
    struct endpoint_rt *r = arg;
    struct daemon *d = r->d;
    char lb[256], bytes[32], limit[32];
    long long n;

    r->retained_query_running = false;
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        if (errmsg != NULL)
            log_debug("daemon", "cannot read the slot's retained WAL", "endpoint",
                      r->ep->name, "err", errmsg);
        return;
    }
    n = atoll(PQgetvalue(res, 0, 0));
    metrics_labels(lb, sizeof(lb), "endpoint", r->ep->name, NULL);
    metrics_set(d->metrics, "tandem_pg_slot_retained_bytes", lb, (double)n);
    if (n <= r->ep->slot_retained_warn_bytes) {
        health_clear(d->health, HEALTH_SLOT_RETENTION, r->ep->name);
        return;
    }
    snprintf(bytes, sizeof(bytes), "%lld", n);
    snprintf(limit, sizeof(limit), "%lld", r->ep->slot_retained_warn_bytes);
    log_warn("daemon", "replication slot retains WAL past the limit: the server keeps it"
             " until tandem confirms; check that tandem keeps up or raise"
             " slot_retained_warn_bytes", "endpoint", r->ep->name, "slot", r->ep->slot,
             "retained_bytes", bytes, "limit_bytes", limit);
    health_set(d->health, HEALTH_SLOT_RETENTION, r->ep->name,
               "replication slot retains WAL past slot_retained_warn_bytes");
}

static void check_retained(struct daemon *d)
{
    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        const char *p[] = { r->ep->slot };

        if (r->src == NULL || r->retained_query_running)
            continue;
        if (pgquery_start(&d->loop, r->ep,
                          "select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                          " from pg_replication_slots where slot_name = $1",
                          1, p, on_retained, r) == 0)
            r->retained_query_running = true;
    }
}

/* ---- DLQ: retries an operator asked for, depth, health ---- */

static int export_parked_reason(const char *reason, int64_t count, void *arg)
{
    struct daemon *d = arg;
    char lb[96];

    metrics_labels(lb, sizeof(lb), "reason", reason ? reason : "", NULL);
    metrics_set(d->metrics, "tandem_parked_keys", lb, (double)count);
    return 0;
}

/* tandem_parked_keys{reason}: the known reasons always (0 when none). */
static void export_parked(struct daemon *d)
{
    static const char *const known[] = { "dlq", "waiting_for_parent", "retrying_parent",
                                         "conflict" };

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        export_parked_reason(known[i], 0, d);
    parked_count_by_reason(d->st, export_parked_reason, d, NULL);
}

static void check_dlq(struct daemon *d)
{
    int64_t depth = 0;
    char n[96];

    /* A retry journals the key's changes again at the journal's end and
     * unparks it: a change of that key journaled earlier but not yet fed
     * would then apply first and the replay over it. So retries wait until
     * every writer is connected and has taken the whole journal (changes
     * of the key fed until then are held behind it, and replayed in order
     * with it). */
    if (all_connected(d) && d->applied_min >= d->durable_seq && state_begin(d->st, NULL) == 0)
        dlq_retry_requested(d->st);
    export_parked(d);
    if (dlq_count_open(d->st, &depth, NULL) != 0)
        return;
    metrics_set(d->metrics, "tandem_dlq_depth", NULL, (double)depth);
    if (depth == 0) {
        health_clear(d->health, HEALTH_DLQ_NONEMPTY, NULL);
        return;
    }
    snprintf(n, sizeof(n), "%" PRId64 " dead-lettered changes: tandem dlq list", depth);
    health_set(d->health, HEALTH_DLQ_NONEMPTY, NULL, n);
}

/* Does ep's change reader stream (backfill windows need it)? */
static bool src_streaming(void *arg, const struct cfg_endpoint *ep)
{
    struct daemon *d = arg;

    for (int i = 0; i < d->neps; i++)
        if (d->eps[i].ep == ep && d->eps[i].src != NULL)
            return pgsrc_streaming(d->eps[i].src);
    return false;
}

/* Applied journal transactions older than state.retention_s go (SPEC
 * §5), a bounded number per tick; what a writer has not applied stays. */
#define PRUNE_MAX_TXNS 20000

static void prune_journal(struct daemon *d)
{
    struct err e = { 0 };
    int rc = 0;

    /* Transactions a reconnect cut short: their source resends them. Both
     * look before they write: an idle daemon commits nothing. */
    for (int i = 0; i < d->neps && rc >= 0; i++)
        if (d->eps[i].src)
            rc = journal_drop_open(d->st, d->eps[i].ep->name,
                                   pgsrc_journal_txn(d->eps[i].src), &e);
    if (rc >= 0 && d->applied_min > 0)
        rc = journal_prune_some(d->st, d->applied_min, d->cfg->state_retention_s,
                                PRUNE_MAX_TXNS, &e);
    if (rc < 0)
        log_warn("daemon", "cannot prune the journal; the state file keeps growing until"
                 " a prune succeeds", "err", e.msg);
}

static void on_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;

    check_dlq(d);

    if (d->ticks++ % RETAINED_EVERY_TICKS == 0)
        check_retained(d);
    /* A reconcile run by hand (tandem reconcile) reports through the state. */
    reconcile_adopt_cli_result(d->st, d->metrics, d->health, &d->reconcile_cli_seen_us);

    update_health(d);
    export_metrics(d);
    if (!d->stopping)
        prune_journal(d);
    if (d->backfill != NULL && !d->stopping)
        backfill_tick(d->backfill, src_streaming, d);
    notify_status("journal at %" PRId64 ", %s", d->durable_seq,
                  all_connected(d) ? "all endpoints connected" : "connecting");
    if (notify_watchdog_usec() > 0)
        notify_watchdog();
}

/* ---- endpoints ---- */

static void on_src_conn(void *arg, struct pgsrc *src, bool up)
{
    (void)src;
    (void)up;
    update_health(arg);
}

static void on_applied(void *arg, struct pgsink *s, int64_t seq)
{
    (void)arg;
    (void)s;
    (void)seq;
}

static void on_canary_candidate(void *arg, struct pgsink *s, const char *mapping,
                                const char *key)
{
    struct daemon *d = arg;

    if (canaries_is_canary(config_mapping(d->cfg, mapping), key))
        canaries_seen(d->canaries, mapping, pgsink_endpoint(s)->name);
}

static void on_sink_conn(void *arg, struct pgsink *s, bool up)
{
    struct daemon *d = arg;

    update_health(d);
    if (up)
        pgsink_kick(s, d->durable_seq);
}

static void on_watermark(void *arg, struct pgsrc *src, char kind, const char *id,
                         const char *const *changed, size_t nchanged)
{
    struct daemon *d = arg;

    if (kind == 'H' && d->backfill != NULL)
        backfill_on_watermark(d->backfill, pgsrc_endpoint(src), id, changed, nchanged);
}

static uint64_t state_commit_gen(void *arg)
{
    return ((struct daemon *)arg)->commit_gen;
}

static int start_endpoint(struct daemon *d, struct endpoint_rt *r, struct err *e)
{
    struct pgsrc_hooks sh = { on_src_batch, on_src_conn, on_watermark, d };
    struct pgsink_hooks kh = { on_applied, on_sink_conn, on_canary_candidate,
                               state_commit_gen, d };
    int rc;

    if (pgadmin_is_source(d->cfg, r->ep)) {
        if ((rc = pgsrc_new(&r->src, &d->loop, d->cfg, r->ep, d->st, &sh, e)) != 0)
            return rc;
        pgsrc_start(r->src);
    }
    if (pgadmin_is_target(d->cfg, r->ep)) {
        if ((rc = pgsink_new(&r->sink, &d->loop, d->cfg, r->ep, d->st, &kh, e)) != 0)
            return rc;
        pgsink_start(r->sink);
    }
    return 0;
}

static void on_rsrc_conn(void *arg, struct restsrc *src, bool up)
{
    (void)src;
    (void)up;
    update_health(arg);
}

static void on_rsink_applied(void *arg, struct restsink *s, int64_t seq)
{
    (void)arg;
    (void)s;
    (void)seq;
}

static void on_rsink_conn(void *arg, struct restsink *s, bool up)
{
    (void)s;
    (void)up;
    update_health(arg);
}

static void on_rsink_canary(void *arg, struct restsink *s, const char *mapping,
                            const char *key)
{
    struct daemon *d = arg;

    if (canaries_is_canary(config_mapping(d->cfg, mapping), key))
        canaries_seen(d->canaries, mapping, restsink_endpoint(s)->name);
}

/* A rest endpoint: its poller and writer share one transport, so the
 * endpoint's request limits hold for both; the poller asks the writer
 * about writes under way (echoes) and creates awaiting their ids. */
static int start_rest_endpoint(struct daemon *d, struct endpoint_rt *r, struct err *e)
{
    struct restsrc_hooks sh = { on_rsrc_batch, on_rsrc_conn, d };
    struct restsink_hooks kh = { on_rsink_applied, on_rsink_conn, on_rsink_canary, d };
    struct rest_http *http = NULL;
    int rc;

    if ((rc = rest_http_new(&http, &d->loop, r->ep, e)) != 0)
        return rc;
    r->setup_done = true;
    canaries_attach_rest(d->canaries, r->ep, http);
    if (pgadmin_is_target(d->cfg, r->ep) &&
        (rc = restsink_new(&r->rsink, &d->loop, d->cfg, r->ep, d->st, http, &kh, e)) != 0)
        goto out;
    if (pgadmin_is_source(d->cfg, r->ep) &&
        (rc = restsrc_new(&r->rsrc, &d->loop, d->cfg, r->ep, d->st, http, &sh, e)) != 0)
        goto out;
    if (r->rsrc != NULL)
        restsrc_link_writer(r->rsrc, r->rsink);
    if (r->rsink != NULL) {
        restsink_start(r->rsink);
        restsink_kick(r->rsink, d->durable_seq);
    }
    if (r->rsrc != NULL)
        restsrc_start(r->rsrc);
out:
    rest_http_unref(http);
    return rc;
}

/* Creates publication, slot and origin when missing (as `setup` would),
 * retrying with backoff while the endpoint cannot be reached. This uses a
 * short blocking connection: it runs once per endpoint, before streaming. */
static void on_setup_timer(uv_timer_t *t)
{
    struct endpoint_rt *r = t->data;
    struct daemon *d = r->d;
    struct err e = { 0 };
    char delay[32];
    uint64_t wait_ms;
    PGconn *c;

    if (d->stopping)
        return;
    c = pgconn_connect(r->ep, false, &e);
    if (c != NULL && pgadmin_setup(c, d->cfg, r->ep, &e) == 0) {
        PQfinish(c);
        r->setup_done = true;
        if (start_endpoint(d, r, &e) != 0)
            log_error("daemon", "cannot start endpoint", "endpoint", r->ep->name, "err", e.msg);
        return;
    }
    PQfinish(c);
    wait_ms = backoff_jitter(r->setup_backoff_ms);
    snprintf(delay, sizeof(delay), "%" PRIu64, wait_ms);
    log_error("daemon", "endpoint not ready; retrying", "endpoint", r->ep->name,
              "err", e.msg, "retry_in_ms", delay);
    uv_timer_start(&r->setup_timer, on_setup_timer, wait_ms, 0);
    if (r->setup_backoff_ms < 30000)
        r->setup_backoff_ms *= 2;
    update_health(d);
}

/* ---- HTTP document callbacks (run on the HTTP thread) ---- */

static char *status_doc(void *arg)
{
    struct daemon *d = arg;
    struct state *ro = NULL;
    json_t *doc;
    char *out = NULL;

    /* A separate read-only handle: SQLite connections are not shared across
     * threads, and WAL lets it read while the loop writes. */
    if (state_open(&ro, d->cfg->state_path, STATE_READONLY, NULL) != 0)
        return NULL;
    doc = status_build(ro, d->cfg, NULL);
    if (doc != NULL)
        out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    state_close(ro);
    return out;
}

struct conflicts_acc {
    json_t *arr;
};

static int add_conflict(const struct conflict *c, void *arg)
{
    struct conflicts_acc *a = arg;
    json_t *o = conflict_to_json(c);
    if (o != NULL)
        json_array_append_new(a->arr, o);
    return 0;
}

static char *conflicts_doc(void *arg)
{
    struct daemon *d = arg;
    struct state *ro = NULL;
    struct conflicts_acc a = { json_array() };
    char *out = NULL;

    if (state_open(&ro, d->cfg->state_path, STATE_READONLY, NULL) == 0 &&
        conflict_list(ro, false, 1000, add_conflict, &a, NULL) == 0)
        out = json_dumps(a.arr, JSON_COMPACT);
    state_close(ro);
    json_decref(a.arr);
    return out;
}

/* ---- shutdown ---- */

static void on_closed_part(void *arg)
{
    struct daemon *d = arg;

    d->closing--;
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void begin_stop(struct daemon *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = true;
    notify_stopping();
    log_info("daemon", "stopping", "signal", why);
    /* Make every journaled change durable, then acknowledge it. */
    flush_state_now(d);
    for (int i = 0; i < d->neps; i++) {
        struct endpoint_rt *r = &d->eps[i];
        if (r->src) {
            d->closing++;
            pgsrc_close(r->src, on_closed_part, d);
            r->src = NULL;
        }
        if (r->sink) {
            d->closing++;
            pgsink_close(r->sink, on_closed_part, d);
            r->sink = NULL;
        }
        if (r->rsrc) {
            d->closing++;
            restsrc_close(r->rsrc, on_closed_part, d);
            r->rsrc = NULL;
        }
        if (r->rsink) {
            d->closing++;
            restsink_close(r->rsink, on_closed_part, d);
            r->rsink = NULL;
        }
        uv_close((uv_handle_t *)&r->setup_timer, on_handle_closed);
    }
    canaries_close(d->canaries);
    d->canaries = NULL;
    reconcile_rt_close(d->reconcile);
    d->reconcile = NULL;
    backfill_close(d->backfill);
    d->backfill = NULL;
    uv_close((uv_handle_t *)&d->flush_timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->tick_timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&d->sighup, on_handle_closed);
}

/* Logs go to stderr, which the service manager owns: there is nothing to
 * reopen, but SIGHUP must not stop the daemon as it would by default. */
static void on_sighup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    log_info("daemon", "SIGHUP: logs go to stderr, nothing to reopen; still running");
}

static void on_signal(uv_signal_t *h, int signum)
{
    begin_stop(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- run ---- */

static void warn_unversioned_lww(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nmappings; i++)
        if (config_unversioned_lww(&cfg->mappings[i]))
            log_warn("daemon", UNVERSIONED_LWW_HINT, "mapping", cfg->mappings[i].name);
}

static void ignore_conflicts(const char *mapping, const char *strategy, int64_t n, void *arg)
{
}

static int open_state(struct daemon *d, struct err *e)
{
    int rc = state_open(&d->st, d->cfg->state_path, STATE_EXCLUSIVE, e);

    if (rc != 0)
        return rc;
    rc = journal_recover(d->st, e);
    if (rc < 0)
        return rc;
    if (rc > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%d", rc);
        log_info("daemon", "discarded source transactions cut short by the last stop;"
                 " their sources resend them", "count", n);
    }
    state_meta_set(d->st, "pipeline", d->cfg->name, NULL);
    /* A mapping new to this pipeline gets its existing rows backfilled. */
    if (state_begin(d->st, e) != 0 || backfill_request_new_mappings(d->st, d->cfg, e) != 0 ||
        state_commit(d->st, e) != 0)
        return -EIO;
    journal_last_commit_seq(d->st, &d->durable_seq, NULL);
    d->committed_seq = d->durable_seq;
    /* The conflicts counter starts with this process (export_conflicts). */
    conflict_tally_since(d->st, &d->conflicts_counted, ignore_conflicts, NULL, NULL);
    /* From here on commits are synced by the durable worker. */
    if ((rc = durable_new(&d->durable, &d->loop, d->cfg->state_path, on_durable, d, e)) != 0)
        return rc;
    if ((rc = state_checkpoint_elsewhere(d->st, e)) != 0)
        return rc;
    return state_set_synchronous(d->st, false, e);
}

static int start_http(struct daemon *d, struct err *e)
{
    struct http_handlers h = { d->metrics, d->health, status_doc, conflicts_doc, d };

    if (d->cfg->http_listen == NULL || d->cfg->http_listen[0] == '\0')
        return 0;
    return http_start(&d->http, d->cfg->http_listen, &h, e);
}

static void start_all(struct daemon *d)
{
    for (size_t i = 0; i < d->cfg->nendpoints && d->neps < MAX_EPS; i++) {
        struct endpoint_rt *r = &d->eps[d->neps++];
        r->ep = &d->cfg->endpoints[i];
        r->d = d;
        r->setup_backoff_ms = 1000;
        uv_timer_init(&d->loop, &r->setup_timer);
        r->setup_timer.data = r;
        if (r->ep->kind == CFG_KIND_POSTGRES) {
            uv_timer_start(&r->setup_timer, on_setup_timer, 0, 0);
        } else {
            struct err e = { 0 };
            if (start_rest_endpoint(d, r, &e) != 0)
                log_error("daemon", "cannot start endpoint", "endpoint", r->ep->name,
                          "err", e.msg);
        }
    }
}

int daemon_run(struct config *cfg, struct err *e)
{
    struct daemon *d = calloc(1, sizeof(*d));
    int rc;

    if (d == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    d->cfg = cfg;
    if ((rc = open_state(d, e)) != 0 || (rc = metrics_new(&d->metrics)) != 0 ||
        (rc = health_new(&d->health)) != 0 || (rc = start_http(d, e)) != 0)
        goto out;
    health_set(d->health, HEALTH_NOT_READY, NULL, "starting");
    uv_loop_init(&d->loop);
    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_init(&d->loop, &d->sighup);
    uv_signal_start(&d->sighup, on_sighup, SIGHUP);
    uv_timer_init(&d->loop, &d->flush_timer);
    uv_timer_init(&d->loop, &d->tick_timer);
    d->flush_timer.data = d->tick_timer.data = d;
    uv_timer_start(&d->flush_timer, on_flush_timer, FLUSH_MS, FLUSH_MS);
    uv_timer_start(&d->tick_timer, on_tick, 0, TICK_MS);
    log_info("daemon", "started", "state", cfg->state_path,
             "http", cfg->http_listen ? cfg->http_listen : "");
    if (canaries_new(&d->canaries, &d->loop, cfg, d->st, d->metrics, d->health) != 0)
        log_error("daemon", "cannot start canaries: out of memory");
    if (reconcile_rt_new(&d->reconcile, &d->loop, cfg, d->st, d->metrics, d->health) != 0)
        log_error("daemon", "cannot start the periodic reconcile: out of memory");
    if (backfill_new(&d->backfill, &d->loop, cfg, d->st) != 0)
        log_error("daemon", "cannot start backfills: out of memory");
    warn_unversioned_lww(cfg);
    start_all(d);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (state_in_txn(d->st) && state_commit(d->st, NULL) == 0 &&
        (rc = durable_sync_now(d->durable)) != 0)
        log_sync_failure(d, rc);
    rc = uv_loop_close(&d->loop);
    if (rc != 0)
        log_error("daemon", "event loop closed with open handles", "err", uv_strerror(rc));
    rc = d->failed ? err_set(e, -EIO, "the state %s could not be synced to disk",
                             cfg->state_path) : 0;
    log_info("daemon", "stopped");
out:
    durable_free(d->durable);
    http_stop(d->http);
    health_free(d->health);
    metrics_free(d->metrics);
    state_close(d->st);
    free(d);
    return rc;
}
