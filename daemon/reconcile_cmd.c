/* reconcile_cmd.c: `tandem reconcile -c FILE [-m MAPPING] [--json]
 * [--limit N] [--repair]` (SPEC §3).
 *
 * Exit codes: 0 no drift; 3 drift (or drift left after --repair); 1 a side
 * could not be reached or compared, or the state could not be written;
 * 2 usage or config error.
 *
 * --repair with a daemon running (the state's lock is held): fixes are
 * journaled through a shared state handle and the daemon applies them;
 * this command waits (bounded) until its writers report them applied.
 * Without a daemon, this command takes the state's lock itself, first
 * applies what the journal already holds for the mapping's targets (when
 * anything differs), then journals the fixes and applies them with the
 * same writers `run` uses (pgsink, restsink) on a private loop, so the fix
 * never waits for the next `tandem run`. Either way it compares again and
 * reports what is left. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../state/journal.h"
#include "../state/state.h"
#include "commands.h"
#include "config.h"
#include "log.h"
#include "reconcile.h"
#include "reconcile_rt.h"

#define APPLY_WAIT_MS 120000
#define REPAIR_ROUNDS 20

struct rec_cmd {
    struct cli_opts *o;
    struct config *cfg;
    struct state *rw;           /* --repair only */
    bool daemon;
    json_t *out;                /* --json: mappings */
    json_t *drift;              /* {mapping: {kind: n}}: for the daemon */
    bool any_drift, any_error;
};

static void fmt_time(int64_t us, char *buf, size_t cap)
{
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;

    if (us <= 0) {
        snprintf(buf, cap, "unknown");
        return;
    }
    gmtime_r(&sec, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_value(const json_t *v)
{
    if (v == NULL || json_is_null(v))
        printf("null");
    else if (json_is_string(v))
        printf("\"%s\"", json_string_value(v));
    else {
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        printf("%s", t ? t : "?");
        free(t);
    }
}

static void print_diff(const struct reconcile_diff *d)
{
    char cls[24];
    json_t *names = d->fields ? json_loads(d->fields, 0, NULL) : NULL;

    if (d->stale_side)
        snprintf(cls, sizeof(cls), "stale (%c)", d->stale_side);
    else
        snprintf(cls, sizeof(cls), "%s", rec_class_name(d->cls));
    printf("    %-11s %s", cls, d->key);
    if (d->a != NULL && d->b != NULL && json_array_size(names) > 0) {
        json_t *a = json_loads(d->a, 0, NULL), *b = json_loads(d->b, 0, NULL);
        size_t i;
        json_t *n;

        json_array_foreach(names, i, n) {
            const char *f = json_string_value(n);
            printf("%s%s: a ", i ? "; " : "  ", f);
            print_value(json_object_get(a, f));
            printf(" | b ");
            print_value(json_object_get(b, f));
        }
        json_decref(a);
        json_decref(b);
    } else if (d->a != NULL) {
        printf("  a %s (b: none)", d->a);
    } else if (d->b != NULL) {
        printf("  b %s (a: none)", d->b);
    }
    printf("\n");
    json_decref(names);
}

static void print_report(const struct cfg_mapping *m, const struct reconcile_report *r,
                         int limit)
{
    char ta[32], tb[32];
    int64_t total = 0;

    for (int c = REC_ONLY_A; c < REC_NCLASS; c++)
        total += r->classes[c];
    printf("mapping %s: %s on %s (%" PRId64 " records) vs %s on %s (%" PRId64 " records)\n",
           m->name, m->a.table ? m->a.table : m->a.resource, m->a.endpoint, r->count_a,
           m->b.table ? m->b.table : m->b.resource, m->b.endpoint, r->count_b);
    printf("  ");
    for (int c = 0; c < REC_NCLASS; c++)
        printf("%s%s %" PRId64, c ? ", " : "", rec_class_name(c), r->classes[c]);
    printf("\n");
    fmt_time(r->newest_a_us, ta, sizeof(ta));
    fmt_time(r->newest_b_us, tb, sizeof(tb));
    printf("  newest: a %s, b %s", ta, tb);
    if (r->shadow_newest_us > 0) {
        fmt_time(r->shadow_newest_us, ta, sizeof(ta));
        printf(", shadow %s", ta);
        if (r->newest_a_us > 0)
            printf("; lag a %+.3f s", (double)(r->newest_a_us - r->shadow_newest_us) / 1e6);
        if (r->newest_b_us > 0)
            printf(", b %+.3f s", (double)(r->newest_b_us - r->shadow_newest_us) / 1e6);
    }
    printf("\n");
    if (r->buckets_used)
        printf("  compared %d of %d key-hash buckets row by row (rows streamed: a %" PRId64
               ", b %" PRId64 ") in %.2f s\n", r->nbuckets_differing, r->nbuckets,
               r->rows_streamed_a, r->rows_streamed_b, r->elapsed_s);
    else
        printf("  compared every row (a %" PRId64 ", b %" PRId64 ") in %.2f s\n",
               r->rows_streamed_a, r->rows_streamed_b, r->elapsed_s);
    if (r->daemon_running && (r->recheck_rounds > 0 || r->drain_timed_out))
        printf("  in flight: %" PRId64 " difference(s) gone once the journal drained"
               " (%d re-check(s))%s\n", r->in_flight, r->recheck_rounds,
               r->drain_timed_out ? "; the journal did not drain in time:"
                                    " some differences may be in flight" : "");
    if (!r->daemon_running && r->journal_pending > 0)
        printf("  note: no daemon runs and %" PRId64 " journaled change(s) are not yet"
               " applied: they apply at the next tandem run\n", r->journal_pending);
    if (total > 0) {
        size_t shown = r->ndiffs < (size_t)limit ? r->ndiffs : (size_t)limit;
        printf("  differences (first %zu of %" PRId64 "):\n", shown, total);
        for (size_t i = 0; i < shown; i++)
            print_diff(&r->diffs[i]);
    }
}

static json_t *classes_json(const struct reconcile_report *r)
{
    json_t *o = json_object();

    for (int c = 0; c < REC_NCLASS; c++)
        json_object_set_new(o, rec_class_name(c), json_integer(r->classes[c]));
    return o;
}

static void targets_of(const struct cfg_mapping *m, const char **eps, size_t *n)
{
    *n = 0;
    if (m->direction != CFG_DIR_B_TO_A)
        eps[(*n)++] = m->b.endpoint;
    if (m->direction != CFG_DIR_A_TO_B)
        eps[(*n)++] = m->a.endpoint;
}

/* No daemon: apply what the journal holds for m's targets first, so the
 * compare sees what tandem already decided. Returns true when it did. */
static bool apply_backlog(struct rec_cmd *x, const struct cfg_mapping *m)
{
    const char *eps[2];
    size_t n;
    int64_t last = 0;
    bool pending = false;
    struct err e = { 0 };

    targets_of(m, eps, &n);
    if (journal_last_commit_seq(x->rw, &last, NULL) != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        int64_t txns = 0;
        if (reconcile_pending(x->rw, eps[i], last, &txns, NULL, NULL) == 0 && txns > 0)
            pending = true;
    }
    if (!pending)
        return false;
    if (reconcile_apply_inline(x->cfg, x->rw, eps, n, last, APPLY_WAIT_MS, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: reconcile %s: cannot apply the journal's backlog: %s\n",
                m->name, e.msg);
        return false;
    }
    return true;
}

/* Journals fixes, waits until they are applied, compares again. */
static int repair(struct rec_cmd *x, const struct cfg_mapping *m,
                  struct reconcile_report *r, const struct reconcile_opts *ro,
                  json_t *rj)
{
    struct reconcile_repair_stats st, tot = { 0 };
    struct err e = { 0 };
    int rounds = 0, rc = 0;
    const char *how = x->daemon ? "daemon" : "inline";

    if (r->drain_timed_out) {
        /* Some differences may still be in flight: fixing them now would
         * race the daemon's own writes. */
        rc = err_set(&e, -EAGAIN, "the journal did not drain within %d s, so some"
                     " differences may be in flight: nothing repaired; try again"
                     " once the daemon caught up", RECONCILE_RECHECK_WAIT_MS / 1000);
    }
    while (rc == 0 && reconcile_report_drift(r) && rounds < REPAIR_ROUNDS) {
        bool more = r->diffs_not_kept > 0;
        const char *eps[2] = { m->a.endpoint, m->b.endpoint };
        int64_t upto[2];

        rounds++;
        if ((rc = reconcile_repair(x->cfg, m, x->rw, r, &st, &e)) != 0)
            break;
        tot.decided += st.decided;
        tot.parked += st.parked;
        tot.failed += st.failed;
        tot.changes += st.changes;
        upto[0] = st.last_seq_to_a;
        upto[1] = st.last_seq_to_b;
        if (st.changes > 0) {
            if (x->daemon)
                rc = reconcile_wait_applied(x->cfg->state_path, eps, upto, 2,
                                            APPLY_WAIT_MS, &e);
            else
                rc = reconcile_apply_inline(x->cfg, x->rw, eps, 2,
                                            upto[0] > upto[1] ? upto[0] : upto[1],
                                            APPLY_WAIT_MS, &e);
            if (rc != 0)
                break;
        }
        reconcile_report_clear(r);
        if ((rc = reconcile_mapping_opts(x->cfg, m, ro, r, &e)) != 0)
            break;
        if (st.changes == 0 || !more)
            break;
    }
    json_object_set_new(rj, "decided", json_integer(tot.decided));
    json_object_set_new(rj, "parked", json_integer(tot.parked));
    json_object_set_new(rj, "failed", json_integer(tot.failed));
    json_object_set_new(rj, "changes", json_integer(tot.changes));
    json_object_set_new(rj, "rounds", json_integer(rounds));
    json_object_set_new(rj, "applied_by", json_string(how));
    if (rc != 0) {
        log_redact(e.msg, sizeof(e.msg));
        json_object_set_new(rj, "error", json_string(e.msg));
        fprintf(stderr, "tandem: reconcile %s: repair: %s\n", m->name, e.msg);
    }
    if (!x->o->json)
        printf("  repair: %" PRId64 " key(s) decided (%" PRId64 " parked for an operator,"
               " %" PRId64 " undecided), %" PRId64 " change(s) journaled and applied by %s%s\n",
               tot.decided, tot.parked, tot.failed, tot.changes,
               x->daemon ? "the running daemon" : "this command (no daemon runs)",
               rc != 0 ? " (incomplete)" : "");
    return rc;
}

static int one_mapping(struct rec_cmd *x, const struct cfg_mapping *m)
{
    struct reconcile_opts ro = { .daemon = x->daemon ? 1 : 0,
                                 .recheck_wait_ms = RECONCILE_RECHECK_WAIT_MS };
    struct reconcile_report r;
    struct err e = { 0 };
    json_t *j = NULL, *before = NULL, *rj = NULL;
    bool printed = false;
    int rc;

    rc = reconcile_mapping_opts(x->cfg, m, &ro, &r, &e);
    if (rc == 0 && x->o->repair && !x->daemon && reconcile_report_drift(&r) &&
        apply_backlog(x, m)) {
        reconcile_report_clear(&r);
        rc = reconcile_mapping_opts(x->cfg, m, &ro, &r, &e);
    }
    if (rc == 0 && x->o->repair) {
        before = classes_json(&r);
        rj = json_object();
        if (reconcile_report_drift(&r)) {
            if (!x->o->json)
                print_report(m, &r, x->o->limit);
            if (repair(x, m, &r, &ro, rj) != 0) {
                x->any_error = true;
                printed = true;     /* the report above still holds */
            } else if (!x->o->json && r.rc == 0) {
                printf("  after repair:\n");
            }
            rc = r.rc;
        }
    }
    if (rc != 0) {
        log_redact(r.error, sizeof(r.error));
        fprintf(stderr, "tandem: reconcile %s: %s\n", m->name, r.error);
        x->any_error = true;
    } else if (!x->o->json) {
        if (!printed)
            print_report(m, &r, x->o->limit);
        printf("  %s\n", reconcile_report_drift(&r) ? "drift" : "no drift");
    }
    if (rc == 0 && reconcile_report_drift(&r))
        x->any_drift = true;
    if (rc == 0)
        json_object_set_new(x->drift, m->name, reconcile_drift_json(r.classes));
    j = reconcile_report_json(&r, m, x->o->limit);
    if (j != NULL && rj != NULL) {
        json_object_set_new(rj, "before", before);
        json_object_set_new(j, "repair", rj);
        before = rj = NULL;
    }
    json_decref(before);
    json_decref(rj);
    if (j != NULL)
        json_array_append_new(x->out, j);
    reconcile_report_clear(&r);
    return 0;
}

/* What was found goes to the daemon's /healthz and metrics through the
 * state (reconcile_adopt_cli_result), when there is a state: a reconcile
 * of two databases tandem does not sync yet creates none. */
static void note_for_daemon(struct rec_cmd *x)
{
    struct state *st = x->rw;
    struct err e = { 0 };

    if (json_object_size(x->drift) == 0)
        return;
    if (st == NULL && (access(x->cfg->state_path, F_OK) != 0 ||
                       state_open(&st, x->cfg->state_path, STATE_SHARED, &e) != 0))
        return;
    reconcile_note_cli_result(st, x->drift);
    if (st != x->rw)
        state_close(st);
}

static int open_rw(struct rec_cmd *x)
{
    struct err e = { 0 };
    int rc = state_open(&x->rw, x->cfg->state_path, STATE_EXCLUSIVE, &e);

    if (rc == -EBUSY) {
        x->daemon = true;
        memset(&e, 0, sizeof(e));
        rc = state_open(&x->rw, x->cfg->state_path, STATE_SHARED, &e);
    }
    if (rc != 0) {
        fprintf(stderr, "tandem: reconcile --repair: %s\n", e.msg);
        return EXIT_RUNTIME;
    }
    return 0;
}

int cmd_reconcile(struct cli_opts *o)
{
    struct rec_cmd x = { .o = o };
    struct err e = { 0 };
    int rc = EXIT_OK;

    log_setup(LOG_WARN, LOG_FORMAT_JSON, NULL, NULL);
    if (o->nargs > 0) {
        fprintf(stderr, "tandem: reconcile takes no arguments (got %s)\n", o->args[0]);
        return EXIT_USAGE;
    }
    if (config_load(&x.cfg, o->config, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: config %s is invalid:\n%s\n", o->config, e.msg);
        return EXIT_USAGE;
    }
    log_setup(LOG_WARN, x.cfg->log_format, NULL, x.cfg->name);
    if (o->mapping != NULL && config_mapping(x.cfg, o->mapping) == NULL) {
        fprintf(stderr, "tandem: reconcile: no mapping named %s in %s\n", o->mapping,
                o->config);
        config_free(x.cfg);
        return EXIT_USAGE;
    }
    if (o->repair) {
        if ((rc = open_rw(&x)) != 0) {
            config_free(x.cfg);
            return rc;
        }
    } else {
        x.daemon = reconcile_daemon_running(x.cfg->state_path);
    }
    x.out = json_array();
    x.drift = json_object();
    for (size_t i = 0; i < x.cfg->nmappings; i++) {
        const struct cfg_mapping *m = &x.cfg->mappings[i];

        if (o->mapping != NULL && strcmp(o->mapping, m->name) != 0)
            continue;
        one_mapping(&x, m);
    }
    if (o->json) {
        json_t *doc = json_pack("{s:O,s:b,s:b}", "mappings", x.out, "drift", x.any_drift,
                                "daemon_running", x.daemon);
        char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;

        if (text != NULL) {
            log_redact(text, strlen(text) + 1);
            printf("%s\n", text);
        }
        free(text);
        json_decref(doc);
    }
    note_for_daemon(&x);
    rc = x.any_error ? EXIT_RUNTIME : x.any_drift ? EXIT_DRIFT : EXIT_OK;
    json_decref(x.out);
    json_decref(x.drift);
    state_close(x.rw);
    config_free(x.cfg);
    return rc;
}
