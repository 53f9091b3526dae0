#include "canaries.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../connectors/pg/pgquery.h"
#include "../state/canary.h"
#include "log.h"
#include "strbuf.h"

/* One probe per mapping; directions alternate. */
struct probe {
    struct canaries *k;
    const struct cfg_mapping *m;
    uv_timer_t timer;
    enum canary_dir dir;        /* of the outstanding canary */
    bool outstanding, overdue_logged;
    int64_t sent_us;
    char token[32];
};

struct canaries {
    uv_loop_t *loop;
    const struct config *cfg;
    struct state *st;
    struct metrics *metrics;
    struct health *health;
    struct probe *probes;
    size_t nprobes;
    int pending_closes;
};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool canaries_is_canary(const struct cfg_mapping *m, const char *key)
{
    struct strbuf b;
    bool same;

    if (m == NULL || !m->canary_enabled || m->canary_key == NULL || key == NULL)
        return false;
    strbuf_init(&b);
    strbuf_addc(&b, '[');
    strbuf_add_json_string(&b, m->canary_key, strlen(m->canary_key));
    strbuf_addc(&b, ']');
    same = !b.failed && strcmp(strbuf_cstr(&b), key) == 0;
    strbuf_free(&b);
    return same;
}

static const struct cfg_side *source_side(const struct probe *p)
{
    return p->dir == CANARY_A_TO_B ? &p->m->a : &p->m->b;
}

/* "name" with embedded quotes doubled (PostgreSQL's identifier rule);
 * cut short rather than overflow (config names are at most 63 bytes). */
static void quote_ident(const char *name, char *out, size_t cap)
{
    size_t n = 0;

    out[n++] = '"';
    for (const char *c = name; *c && n + 3 < cap; c++) {
        if (*c == '"')
            out[n++] = '"';
        out[n++] = *c;
    }
    out[n++] = '"';
    out[n] = '\0';
}

static void on_written(void *arg, PGresult *res, const char *errmsg)
{
    struct probe *p = arg;

    if (res == NULL)
        log_error("canary", "cannot write the canary row; check that the table accepts"
                  " a row with only its key", "mapping", p->m->name,
                  "endpoint", source_side(p)->endpoint, "err", errmsg);
}

/* Upserts (present) or deletes the canary row on the probe's source side. */
static void write_canary(struct probe *p, bool present)
{
    const struct cfg_side *side = source_side(p);
    const struct cfg_endpoint *ep = side->ep;
    char sql[1024];
    const char *params[] = { p->m->canary_key };

    if (ep->kind != CFG_KIND_POSTGRES || side->nkey != 1)
        return;
    {
        char tbl[300], key[140];
        quote_ident(side->schema, tbl, sizeof(tbl) / 2);
        strcat(tbl, ".");
        quote_ident(side->relname, tbl + strlen(tbl), sizeof(tbl) / 2 - 1);
        quote_ident(side->key[0], key, sizeof(key));
        if (present)
            snprintf(sql, sizeof(sql), "INSERT INTO %s (%s) VALUES ($1) ON CONFLICT (%s)"
                     " DO UPDATE SET %s = EXCLUDED.%s", tbl, key, key, key, key);
        else
            snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE %s = $1", tbl, key);
    }
    if (sql[0] != '\0')
        pgquery_start(p->k->loop, ep, sql, 1, params, on_written, p);
}

static bool dir_allowed(const struct cfg_mapping *m, enum canary_dir d)
{
    return m->direction == CFG_DIR_BOTH ||
           (d == CANARY_A_TO_B && m->direction == CFG_DIR_A_TO_B) ||
           (d == CANARY_B_TO_A && m->direction == CFG_DIR_B_TO_A);
}

static void check_overdue(struct probe *p)
{
    char late[32];

    if (!p->outstanding || p->overdue_logged ||
        now_us() - p->sent_us < (int64_t)p->m->canary_deadline_s * 1000000)
        return;
    p->overdue_logged = true;
    snprintf(late, sizeof(late), "%" PRId64, (now_us() - p->sent_us) / 1000000);
    log_error("canary", "canary overdue: changes are not arriving end to end;"
              " check both endpoints and the journal depth", "mapping", p->m->name,
              "direction", canary_dir_name(p->dir), "seconds", late);
    health_set(p->k->health, HEALTH_CANARY_OVERDUE, p->m->name,
               "a canary was not seen within its deadline");
}

static void on_probe_timer(uv_timer_t *t)
{
    struct probe *p = t->data;

    check_overdue(p);
    if (p->outstanding)
        return;         /* one at a time: the overdue one keeps its clock */
    if (!dir_allowed(p->m, p->dir))
        p->dir = p->dir == CANARY_A_TO_B ? CANARY_B_TO_A : CANARY_A_TO_B;
    p->sent_us = now_us();
    snprintf(p->token, sizeof(p->token), "%" PRId64, p->sent_us);
    if (state_begin(p->k->st, NULL) == 0)
        canary_sent(p->k->st, p->m->name, p->dir, p->token, p->sent_us, NULL);
    p->outstanding = true;
    p->overdue_logged = false;
    write_canary(p, true);
}

void canaries_seen(struct canaries *k, const char *mapping, const char *target)
{
    int64_t latency = 0;

    for (size_t i = 0; k != NULL && i < k->nprobes; i++) {
        struct probe *p = &k->probes[i];
        const struct cfg_side *dst = p->dir == CANARY_A_TO_B ? &p->m->b : &p->m->a;

        if (strcmp(p->m->name, mapping) != 0 || !p->outstanding ||
            strcmp(dst->endpoint, target) != 0)
            continue;
        latency = now_us() - p->sent_us;
        if (state_begin(k->st, NULL) == 0)
            canary_seen(k->st, p->m->name, p->dir, p->token, 0, NULL, NULL);
        metrics_observe(k->metrics, "tandem_canary_latency_seconds", NULL,
                        (double)latency / 1e6);
        health_clear(k->health, HEALTH_CANARY_OVERDUE, p->m->name);
        p->outstanding = false;
        /* Clean up: the delete flows to the other side like any change. */
        write_canary(p, false);
        if (dir_allowed(p->m, p->dir == CANARY_A_TO_B ? CANARY_B_TO_A : CANARY_A_TO_B))
            p->dir = p->dir == CANARY_A_TO_B ? CANARY_B_TO_A : CANARY_A_TO_B;
    }
}

int canaries_new(struct canaries **out, uv_loop_t *loop, const struct config *c,
                 struct state *st, struct metrics *m, struct health *h)
{
    struct canaries *k = calloc(1, sizeof(*k));
    size_t n = 0;

    if (k == NULL || (k->probes = calloc(c->nmappings + 1, sizeof(*k->probes))) == NULL) {
        free(k);
        return -ENOMEM;
    }
    k->loop = loop;
    k->cfg = c;
    k->st = st;
    k->metrics = m;
    k->health = h;
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *mp = &c->mappings[i];
        struct probe *p = &k->probes[n];

        if (!mp->canary_enabled)
            continue;
        if (mp->a.nkey != 1 || mp->b.nkey != 1) {
            log_warn("canary", "canaries need a single-column key: disabled for this mapping",
                     "mapping", mp->name);
            continue;
        }
        p->k = k;
        p->m = mp;
        p->dir = dir_allowed(mp, CANARY_A_TO_B) ? CANARY_A_TO_B : CANARY_B_TO_A;
        uv_timer_init(loop, &p->timer);
        p->timer.data = p;
        uv_timer_start(&p->timer, on_probe_timer, (uint64_t)mp->canary_interval_s * 1000,
                       (uint64_t)mp->canary_interval_s * 1000);
        n++;
    }
    k->nprobes = n;
    *out = k;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    struct canaries *k = p->k;

    if (--k->pending_closes == 0) {
        free(k->probes);
        free(k);
    }
}

void canaries_close(struct canaries *k)
{
    if (k == NULL)
        return;
    if (k->nprobes == 0) {
        free(k->probes);
        free(k);
        return;
    }
    k->pending_closes = (int)k->nprobes;
    for (size_t i = 0; i < k->nprobes; i++)
        uv_close((uv_handle_t *)&k->probes[i].timer, on_closed);
}
