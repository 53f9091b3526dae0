#include "reconcile_rt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reconcile.h"

/* The drift classes exported as tandem_reconcile_drift{kind}. */
static const enum rec_class drift_kinds[] = { REC_ONLY_A, REC_ONLY_B, REC_DIFFERENT, REC_STALE };
#define NKINDS (sizeof(drift_kinds) / sizeof(drift_kinds[0]))
#define ROUND_RECHECK_MS 5000   /* bounded, so a stop is never held long */

struct round_result {
    const struct cfg_mapping *m;
    int rc;
    char error[512];
    int64_t classes[REC_NCLASS];
};

struct reconcile_rt {
    uv_loop_t *loop;
    const struct config *cfg;
    struct state *st;
    struct metrics *metrics;
    struct health *health;
    uv_timer_t timer;
    uv_work_t work;
    bool running, closing, timer_closed;
    struct round_result *results;
    size_t nresults;
};

static bool selected(const struct config *c, const struct cfg_mapping *m)
{
    if (c->reconcile.nmappings == 0)
        return true;
    for (size_t i = 0; i < c->reconcile.nmappings; i++)
        if (strcmp(c->reconcile.mappings[i], m->name) == 0)
            return true;
    return false;
}

/* Worker thread: only reconcile_mapping_opts, which opens its own
 * connections and state handle. */
static void run_round(uv_work_t *w)
{
    struct reconcile_rt *r = w->data;
    struct reconcile_opts opts = { .daemon = 1, .recheck_wait_ms = ROUND_RECHECK_MS };

    for (size_t i = 0; i < r->nresults; i++) {
        struct round_result *res = &r->results[i];
        struct reconcile_report rep = { 0 };
        struct err e = { 0 };

        res->rc = reconcile_mapping_opts(r->cfg, res->m, &opts, &rep, &e);
        memcpy(res->error, e.msg, sizeof(res->error) - 1);
        res->error[sizeof(res->error) - 1] = '\0';
        memcpy(res->classes, rep.classes, sizeof(res->classes));
        reconcile_report_clear(&rep);
    }
}

static void report_round(struct reconcile_rt *r)
{
    int64_t drifting = 0;
    char lb[256], n[32], summary[512];
    size_t used = 0;

    summary[0] = '\0';
    for (size_t i = 0; i < r->nresults; i++) {
        struct round_result *res = &r->results[i];
        int64_t total = 0;

        if (res->rc != 0) {
            log_warn("reconcile", "periodic reconcile could not compare the mapping",
                     "mapping", res->m->name, "err", res->error);
            continue;
        }
        for (size_t k = 0; k < NKINDS; k++) {
            metrics_labels(lb, sizeof(lb), "mapping", res->m->name, "kind",
                           rec_class_name(drift_kinds[k]), NULL);
            metrics_set(r->metrics, "tandem_reconcile_drift", lb,
                        (double)res->classes[drift_kinds[k]]);
            total += res->classes[drift_kinds[k]];
        }
        snprintf(n, sizeof(n), "%" PRId64, total);
        if (total > 0)
            log_error("reconcile", "drift found: run tandem reconcile to see the keys,"
                      " --repair to fix them by the mapping's policy",
                      "mapping", res->m->name, "differing_keys", n);
        else
            log_info("reconcile", "no drift", "mapping", res->m->name);
        drifting += total;
        used += (size_t)snprintf(summary + used, used < sizeof(summary) ? sizeof(summary) - used : 0,
                                 "%s%s=%" PRId64, used ? "," : "", res->m->name, total);
        if (used >= sizeof(summary))
            used = sizeof(summary) - 1;
    }
    if (drifting > 0)
        health_set(r->health, HEALTH_DRIFT, NULL, "reconcile found differing keys");
    else
        health_clear(r->health, HEALTH_DRIFT, NULL);
    if (state_begin(r->st, NULL) == 0)
        state_meta_set(r->st, "last_reconcile", summary, NULL);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct reconcile_rt *r = h->data;

    r->timer_closed = true;
    if (!r->running) {
        free(r->results);
        free(r);
    }
}

static void round_done(uv_work_t *w, int status)
{
    struct reconcile_rt *r = w->data;

    r->running = false;
    if (status == 0 && !r->closing)
        report_round(r);
    if (r->closing && r->timer_closed) {
        free(r->results);
        free(r);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct reconcile_rt *r = t->data;

    if (r->running || r->closing)
        return;
    r->running = true;
    if (uv_queue_work(r->loop, &r->work, run_round, round_done) != 0)
        r->running = false;
}

int reconcile_rt_new(struct reconcile_rt **out, uv_loop_t *loop,
                     const struct config *c, struct state *st,
                     struct metrics *m, struct health *h)
{
    struct reconcile_rt *r;
    uint64_t every;

    *out = NULL;
    if (c->reconcile.interval_s <= 0)
        return 0;
    if ((r = calloc(1, sizeof(*r))) == NULL ||
        (r->results = calloc(c->nmappings + 1, sizeof(*r->results))) == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->loop = loop;
    r->cfg = c;
    r->st = st;
    r->metrics = m;
    r->health = h;
    r->work.data = r;
    for (size_t i = 0; i < c->nmappings; i++)
        if (selected(c, &c->mappings[i]))
            r->results[r->nresults++].m = &c->mappings[i];
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    every = (uint64_t)c->reconcile.interval_s * 1000;
    uv_timer_start(&r->timer, on_timer, every, every);
    *out = r;
    return 0;
}

void reconcile_rt_close(struct reconcile_rt *r)
{
    if (r == NULL)
        return;
    r->closing = true;
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
