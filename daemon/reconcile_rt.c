#include "reconcile_rt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* One mapping's result into tandem_reconcile_drift{mapping,kind} and the
 * log; returns its number of differing keys. */
static int64_t publish_mapping(struct metrics *metrics, const char *mapping,
                               const int64_t classes[REC_NCLASS])
{
    char lb[256], n[32];
    int64_t total = 0;

    for (size_t k = 0; k < NKINDS; k++) {
        metrics_labels(lb, sizeof(lb), "mapping", mapping, "kind",
                       rec_class_name(drift_kinds[k]), NULL);
        metrics_set(metrics, "tandem_reconcile_drift", lb, (double)classes[drift_kinds[k]]);
        total += classes[drift_kinds[k]];
    }
    snprintf(n, sizeof(n), "%" PRId64, total);
    if (total > 0)
        log_error("reconcile", "drift found: run tandem reconcile to see the keys,"
                  " --repair to fix them by the mapping's policy",
                  "mapping", mapping, "differing_keys", n);
    else
        log_info("reconcile", "no drift", "mapping", mapping);
    return total;
}

static void publish_health(struct health *h, int64_t drifting)
{
    if (drifting > 0)
        health_set(h, HEALTH_DRIFT, NULL, "reconcile found differing keys");
    else
        health_clear(h, HEALTH_DRIFT, NULL);
}

static void report_round(struct reconcile_rt *r)
{
    int64_t drifting = 0;
    char summary[512];
    size_t used = 0;

    summary[0] = '\0';
    for (size_t i = 0; i < r->nresults; i++) {
        struct round_result *res = &r->results[i];
        int64_t total;

        if (res->rc != 0) {
            log_warn("reconcile", "periodic reconcile could not compare the mapping",
                     "mapping", res->m->name, "err", res->error);
            continue;
        }
        total = publish_mapping(r->metrics, res->m->name, res->classes);
        drifting += total;
        used += (size_t)snprintf(summary + used, used < sizeof(summary) ? sizeof(summary) - used : 0,
                                 "%s%s=%" PRId64, used ? "," : "", res->m->name, total);
        if (used >= sizeof(summary))
            used = sizeof(summary) - 1;
    }
    publish_health(r->health, drifting);
    if (state_begin(r->st, NULL) == 0)
        state_meta_set(r->st, "last_reconcile", summary, NULL);
}

json_t *reconcile_drift_json(const int64_t *classes)
{
    json_t *o = json_object();

    for (size_t k = 0; o != NULL && k < NKINDS; k++)
        json_object_set_new(o, rec_class_name(drift_kinds[k]),
                            json_integer(classes[drift_kinds[k]]));
    return o;
}

void reconcile_note_cli_result(struct state *st, const json_t *drift)
{
    struct timespec now;
    json_t *doc;

    clock_gettime(CLOCK_REALTIME, &now);
    doc = json_pack("{s:I,s:O}", "ts_us",
                    (json_int_t)now.tv_sec * 1000000 + now.tv_nsec / 1000, "drift", drift);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    if (text != NULL && state_begin(st, NULL) == 0 &&
        state_meta_set(st, RECONCILE_CLI_META, text, NULL) == 0)
        state_commit(st, NULL);
    free(text);
    json_decref(doc);
}

void reconcile_adopt_cli_result(struct state *st, struct metrics *m, struct health *h,
                                int64_t *seen_us)
{
    static char buf[65536];
    json_t *doc, *drift, *counts;
    const char *name;
    int64_t ts, drifting = 0;

    if (state_meta_get(st, RECONCILE_CLI_META, buf, sizeof(buf), NULL) != 0 ||
        (doc = json_loads(buf, 0, NULL)) == NULL)
        return;
    ts = json_integer_value(json_object_get(doc, "ts_us"));
    drift = json_object_get(doc, "drift");
    if (ts > *seen_us && json_is_object(drift)) {
        *seen_us = ts;
        json_object_foreach(drift, name, counts) {
            int64_t classes[REC_NCLASS] = { 0 };

            for (size_t k = 0; k < NKINDS; k++)
                classes[drift_kinds[k]] = json_integer_value(
                    json_object_get(counts, rec_class_name(drift_kinds[k])));
            drifting += publish_mapping(m, name, classes);
        }
        publish_health(h, drifting);
    }
    json_decref(doc);
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
