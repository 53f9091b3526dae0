#include "canaries.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../connectors/pg/pgquery.h"
#include "../connectors/rest/restcanary.h"
#include "../state/canary.h"
#include "log.h"
#include "strbuf.h"

#define TICK_MS 250             /* phase steps; overdue is noticed this soon */
#define RETRY_BASE_US 1000000   /* a failed operation: 1 s, doubling... */
#define MAX_REST 32

/* Sides as bits, so a cleanup can name both. */
#define SIDE_A 1u
#define SIDE_B 2u

/* One probe per mapping cycles: clean up (at start: sweep leftovers),
 * read the other side back until the canary is gone there, wait for the
 * interval, write a canary, wait for its arrival. */
enum phase {
    PH_CLEAN,       /* deleting the canary on the sides in clean_mask */
    PH_VERIFY,      /* reading the sides in verify_mask until it is gone */
    PH_IDLE,        /* until next_us */
    PH_SEND,        /* writing the canary on the source side */
    PH_OUT          /* written: waiting for it on the other side */
};

enum side_op { OP_WRITE, OP_REMOVE, OP_READ };

struct probe {
    struct canaries *k;
    const struct cfg_mapping *m;
    uv_timer_t timer;
    enum phase phase;
    enum canary_dir dir;        /* of the current (or next) canary */
    unsigned clean_mask, verify_mask;
    unsigned op_side;           /* the operation running: its side, */
    enum side_op op;            /* and what it does */
    bool busy, overdue;
    int fails;                  /* operations failed in a row */
    int64_t sent_us;            /* canary written (first attempt) */
    int64_t clean_us;           /* cleanup began */
    int64_t next_us, retry_us;
    struct restcanary *rc;      /* REST operation under way */
    char token[32];
};

struct rest_link {
    const struct cfg_endpoint *ep;
    struct rest_http *h;
};

struct canaries {
    uv_loop_t *loop;
    const struct config *cfg;
    struct state *st;
    struct metrics *metrics;
    struct health *health;
    struct probe *probes;
    size_t nprobes;
    struct rest_link rest[MAX_REST];
    size_t nrest;
    bool closing;
    int pending_closes;         /* timers */
    int pg_running;             /* PostgreSQL queries under way */
};

static void step(struct probe *p);

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

/* ---- sides and directions ---- */

static unsigned src_side(enum canary_dir d)
{
    return d == CANARY_A_TO_B ? SIDE_A : SIDE_B;
}

static unsigned dst_side(enum canary_dir d)
{
    return d == CANARY_A_TO_B ? SIDE_B : SIDE_A;
}

static const struct cfg_side *side_of(const struct probe *p, unsigned side)
{
    return side == SIDE_A ? &p->m->a : &p->m->b;
}

static enum canary_dir other_dir(enum canary_dir d)
{
    return d == CANARY_A_TO_B ? CANARY_B_TO_A : CANARY_A_TO_B;
}

static bool dir_allowed(const struct cfg_mapping *m, enum canary_dir d)
{
    return m->direction == CFG_DIR_BOTH ||
           (d == CANARY_A_TO_B && m->direction == CFG_DIR_A_TO_B) ||
           (d == CANARY_B_TO_A && m->direction == CFG_DIR_B_TO_A);
}

/* Where a canary of direction d is deleted: its source (the delete flows
 * on), and its destination too when the mapping does not carry deletes. */
static unsigned cleanup_sides(const struct cfg_mapping *m, enum canary_dir d)
{
    return src_side(d) | (m->deletes != CFG_DEL_PROPAGATE ? dst_side(d) : 0);
}

/* ---- operations on one side ---- */

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

static void pg_sql(const struct cfg_side *side, enum side_op op, char *sql, size_t cap)
{
    char tbl[300], key[140];

    quote_ident(side->schema, tbl, sizeof(tbl) / 2);
    strcat(tbl, ".");
    quote_ident(side->relname, tbl + strlen(tbl), sizeof(tbl) / 2 - 1);
    quote_ident(side->key[0], key, sizeof(key));
    if (op == OP_WRITE)
        snprintf(sql, cap, "INSERT INTO %s (%s) VALUES ($1) ON CONFLICT (%s)"
                 " DO UPDATE SET %s = EXCLUDED.%s", tbl, key, key, key, key);
    else if (op == OP_REMOVE)
        snprintf(sql, cap, "DELETE FROM %s WHERE %s = $1", tbl, key);
    else
        snprintf(sql, cap, "SELECT 1 FROM %s WHERE %s = $1", tbl, key);
}

static const char *op_name(enum side_op op)
{
    return op == OP_WRITE ? "write" : op == OP_REMOVE ? "delete" : "read";
}

static void maybe_free(struct canaries *k)
{
    if (k->closing && k->pending_closes == 0 && k->pg_running == 0) {
        free(k->probes);
        free(k);
    }
}

/* Backs off (1 s doubling up to the interval) and logs the first failure
 * of a streak; the tick tries again. */
static void op_failed(struct probe *p, const char *msg)
{
    int64_t delay = RETRY_BASE_US << (p->fails < 6 ? p->fails : 6);
    int64_t cap = (int64_t)p->m->canary_interval_s * 1000000;

    if (delay > cap)
        delay = cap > RETRY_BASE_US ? cap : RETRY_BASE_US;
    p->retry_us = now_us() + delay;
    if (p->fails++ > 0)
        return;
    if (p->op == OP_WRITE)
        log_error("canary", "cannot write the canary record; check that the endpoint is"
                  " up and accepts a record with only its key", "mapping", p->m->name,
                  "endpoint", side_of(p, p->op_side)->endpoint, "err", msg);
    else
        log_warn("canary", "canary operation failed; retrying", "mapping", p->m->name,
                 "endpoint", side_of(p, p->op_side)->endpoint, "op", op_name(p->op),
                 "err", msg);
}

/* The end of the operation run() started: result < 0 failed, else 0 done
 * (a read: 0 the canary is not there, 1 it is). */
static void op_done(struct probe *p, int result, const char *msg)
{
    p->busy = false;
    if (result < 0) {
        op_failed(p, msg);
        return;
    }
    p->fails = 0;
    if (p->op == OP_REMOVE && p->phase == PH_CLEAN)
        p->clean_mask &= ~p->op_side;
    else if (p->op == OP_READ && p->phase == PH_VERIFY && result == 0)
        p->verify_mask &= ~p->op_side;
    else if (p->op == OP_READ && p->phase == PH_VERIFY)
        p->retry_us = now_us() + TICK_MS * 1000;   /* still there: look again */
    else if (p->op == OP_WRITE && p->phase == PH_SEND)
        p->phase = PH_OUT;
    /* else: the canary arrived before its write was answered. */
    step(p);
}

static void on_pg_done(void *arg, PGresult *res, const char *errmsg)
{
    struct probe *p = arg;
    struct canaries *k = p->k;

    k->pg_running--;
    if (k->closing) {
        maybe_free(k);
        return;
    }
    if (res == NULL)
        op_done(p, -EIO, errmsg);
    else
        op_done(p, PQntuples(res) > 0 ? 1 : 0, NULL);
}

static void on_rest_done(void *arg, int result, const char *msg)
{
    struct probe *p = arg;

    p->rc = NULL;
    op_done(p, result, msg);
}

static struct rest_http *rest_of(struct canaries *k, const struct cfg_endpoint *ep)
{
    for (size_t i = 0; i < k->nrest; i++)
        if (k->rest[i].ep == ep)
            return k->rest[i].h;
    return NULL;
}

/* Starts op on one side of p's mapping; its end comes to op_done. */
static void run(struct probe *p, unsigned side, enum side_op op)
{
    static const enum restcanary_op rest_op[] = {
        RESTCANARY_WRITE, RESTCANARY_REMOVE, RESTCANARY_READ
    };
    const struct cfg_side *sd = side_of(p, side);
    struct canaries *k = p->k;
    struct err e = { 0 };
    struct rest_http *h;
    int rc;

    p->busy = true;
    p->op_side = side;
    p->op = op;
    if (sd->ep->kind == CFG_KIND_POSTGRES) {
        const char *params[] = { p->m->canary_key };
        char sql[1024];

        pg_sql(sd, op, sql, sizeof(sql));
        /* Counted first: the callback may fire before pgquery_start returns. */
        k->pg_running++;
        if ((rc = pgquery_start(k->loop, sd->ep, sql, 1, params, on_pg_done, p)) == 0)
            return;
        k->pg_running--;
        err_set(&e, rc, "cannot start a query: out of memory");
    } else if ((h = rest_of(k, sd->ep)) == NULL) {
        rc = err_set(&e, -ENOTCONN, "the endpoint's transport is not started");
    } else if ((rc = restcanary_start(&p->rc, h, p->m, sd, rest_op[op], on_rest_done, p,
                                      &e)) == 0) {
        return;
    }
    op_done(p, rc, e.msg);
}

/* ---- the cycle ---- */

static void set_overdue(struct probe *p, const char *msg, int64_t since)
{
    char late[32];

    p->overdue = true;
    snprintf(late, sizeof(late), "%" PRId64, (now_us() - since) / 1000000);
    log_error("canary", msg, "mapping", p->m->name, "direction", canary_dir_name(p->dir),
              "seconds", late);
    health_set(p->k->health, HEALTH_CANARY_OVERDUE, p->m->name,
               "a canary was not seen within its deadline");
}

static void clear_overdue(struct probe *p)
{
    if (!p->overdue)
        return;
    p->overdue = false;
    health_clear(p->k->health, HEALTH_CANARY_OVERDUE, p->m->name);
    log_info("canary", "canaries arrive again", "mapping", p->m->name);
}

static void check_overdue(struct probe *p)
{
    int64_t deadline = (int64_t)p->m->canary_deadline_s * 1000000, now = now_us();

    if (p->overdue)
        return;
    if ((p->phase == PH_SEND || p->phase == PH_OUT) && now - p->sent_us >= deadline)
        set_overdue(p, "canary overdue: changes are not arriving end to end;"
                    " check both endpoints and the journal depth", p->sent_us);
    else if ((p->phase == PH_CLEAN || p->phase == PH_VERIFY) &&
             now - p->clean_us >= deadline)
        set_overdue(p, "canary overdue: its cleanup (a delete) is not arriving on the"
                    " other side; check both endpoints and the journal depth", p->clean_us);
}

static void begin_cleanup(struct probe *p, unsigned clean, unsigned verify)
{
    p->phase = PH_CLEAN;
    p->clean_mask = clean;
    p->verify_mask = verify;
    p->clean_us = now_us();
    p->retry_us = 0;
    p->fails = 0;
}

static void send_canary(struct probe *p)
{
    if (!dir_allowed(p->m, p->dir))
        p->dir = other_dir(p->dir);
    p->phase = PH_SEND;
    p->sent_us = now_us();
    p->retry_us = 0;
    p->fails = 0;
    snprintf(p->token, sizeof(p->token), "%" PRId64, p->sent_us);
    if (state_begin(p->k->st, NULL) == 0)
        canary_sent(p->k->st, p->m->name, p->dir, p->token, p->sent_us, NULL);
    run(p, src_side(p->dir), OP_WRITE);
}

/* Runs whatever the phase needs next, unless an operation runs or a
 * failed one waits for its retry. */
static void step(struct probe *p)
{
    int64_t now = now_us();

    if (p->busy || p->k->closing || now < p->retry_us)
        return;
    if (p->phase == PH_CLEAN && p->clean_mask != 0) {
        run(p, p->clean_mask & SIDE_A ? SIDE_A : SIDE_B, OP_REMOVE);
        return;
    }
    if (p->phase == PH_CLEAN)
        p->phase = PH_VERIFY;
    if (p->phase == PH_VERIFY && p->verify_mask != 0) {
        run(p, p->verify_mask & SIDE_A ? SIDE_A : SIDE_B, OP_READ);
        return;
    }
    if (p->phase == PH_VERIFY) {
        p->phase = PH_IDLE;
        clear_overdue(p);
    }
    if (p->phase == PH_IDLE && now >= p->next_us)
        send_canary(p);
    else if (p->phase == PH_SEND)
        run(p, src_side(p->dir), OP_WRITE);     /* the last attempt failed */
}

static void on_probe_timer(uv_timer_t *t)
{
    struct probe *p = t->data;

    check_overdue(p);
    step(p);
}

static void arrived(struct probe *p)
{
    struct canaries *k = p->k;
    int64_t latency = now_us() - p->sent_us;
    char lb[256], ms[32];

    if (state_begin(k->st, NULL) == 0)
        canary_seen(k->st, p->m->name, p->dir, p->token, 0, NULL, NULL);
    if (metrics_labels(lb, sizeof(lb), "mapping", p->m->name, "direction",
                       canary_dir_name(p->dir), NULL) == 0)
        metrics_observe(k->metrics, "tandem_canary_latency_seconds", lb,
                        (double)latency / 1e6);
    snprintf(ms, sizeof(ms), "%" PRId64, latency / 1000);
    log_debug("canary", "canary arrived", "mapping", p->m->name,
              "direction", canary_dir_name(p->dir), "latency_ms", ms);
    clear_overdue(p);
    begin_cleanup(p, cleanup_sides(p->m, p->dir), dst_side(p->dir));
    p->next_us = p->sent_us + (int64_t)p->m->canary_interval_s * 1000000;
    if (dir_allowed(p->m, other_dir(p->dir)))
        p->dir = other_dir(p->dir);
    step(p);
}

void canaries_seen(struct canaries *k, const char *mapping, const char *target)
{
    for (size_t i = 0; k != NULL && !k->closing && i < k->nprobes; i++) {
        struct probe *p = &k->probes[i];

        if (strcmp(p->m->name, mapping) != 0 ||
            (p->phase != PH_SEND && p->phase != PH_OUT) ||
            strcmp(side_of(p, dst_side(p->dir))->endpoint, target) != 0)
            continue;
        arrived(p);
    }
}

/* ---- lifecycle ---- */

static void probe_init(struct canaries *k, struct probe *p, const struct cfg_mapping *m)
{
    unsigned clean = 0, verify = 0;

    p->k = k;
    p->m = m;
    p->dir = dir_allowed(m, CANARY_A_TO_B) ? CANARY_A_TO_B : CANARY_B_TO_A;
    /* A canary left by a run stopped mid-probe is swept first. */
    for (int d = CANARY_A_TO_B; d <= CANARY_B_TO_A; d++)
        if (dir_allowed(m, (enum canary_dir)d)) {
            clean |= cleanup_sides(m, (enum canary_dir)d);
            verify |= dst_side((enum canary_dir)d);
        }
    begin_cleanup(p, clean, verify);
    p->next_us = now_us() + (int64_t)m->canary_interval_s * 1000000;
    uv_timer_init(k->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_probe_timer, TICK_MS, TICK_MS);
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

        if (!mp->canary_enabled)
            continue;
        if (mp->a.nkey != 1 || mp->b.nkey != 1) {
            log_warn("canary", "canaries need a single-column key: disabled for this mapping",
                     "mapping", mp->name);
            continue;
        }
        probe_init(k, &k->probes[n++], mp);
    }
    k->nprobes = n;
    *out = k;
    return 0;
}

void canaries_attach_rest(struct canaries *k, const struct cfg_endpoint *ep,
                          struct rest_http *h)
{
    if (k == NULL || k->closing || h == NULL || rest_of(k, ep) != NULL)
        return;
    if (k->nrest == MAX_REST) {
        log_warn("canary", "too many rest endpoints: no canaries on this one",
                 "endpoint", ep->name);
        return;
    }
    rest_http_ref(h);
    k->rest[k->nrest++] = (struct rest_link){ ep, h };
}

static void on_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    struct canaries *k = p->k;

    k->pending_closes--;
    maybe_free(k);
}

void canaries_close(struct canaries *k)
{
    if (k == NULL)
        return;
    k->closing = true;
    for (size_t i = 0; i < k->nprobes; i++) {
        restcanary_cancel(k->probes[i].rc);
        k->probes[i].rc = NULL;
    }
    for (size_t i = 0; i < k->nrest; i++)
        rest_http_unref(k->rest[i].h);
    k->nrest = 0;
    k->pending_closes = (int)k->nprobes;
    for (size_t i = 0; i < k->nprobes; i++)
        uv_close((uv_handle_t *)&k->probes[i].timer, on_closed);
    maybe_free(k);
}
