/* pgsink_conflict.c: a row the target changed under the writer (G6).
 * The conditional statement decided last_write_wins, source_priority and
 * manual in SQL: record that decision. field_merge and plugin come here
 * undecided: run the resolver, record, take the result as the shadow,
 * write it over the locked row in the same target transaction and, when
 * the mapping runs both ways, journal it for the source side. What is
 * recorded holds the target's commit until it is on disk. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/log.h"
#include "../../resolver/canon.h"
#include "../../resolver/resolver.h"
#include "../../state/conflicts.h"
#include "../../state/dlq.h"
#include "../../state/journal.h"
#include "../../state/shadow.h"
#include "pgsink_int.h"

/* Per-field decisions of a whole-record outcome (resolver.h's explain
 * form): every field of either side, taken from the winner ('a', 'b'), or
 * "both_equal"; winner 0: parked, nothing taken. Returns JSON text. */
static char *whole_record_decisions(const char *a_text, const char *b_text, char winner,
                                    const char *rule)
{
    json_t *a = a_text ? json_loads(a_text, 0, NULL) : NULL;
    json_t *b = b_text ? json_loads(b_text, 0, NULL) : NULL;
    json_t *names = json_object(), *out = json_array(), *v;
    const char *k;
    char *text = NULL;
    char w[2] = { winner, '\0' };

    if (names == NULL || out == NULL)
        goto done;
    json_object_foreach(a, k, v)
        json_object_set(names, k, json_true());
    json_object_foreach(b, k, v)
        json_object_set(names, k, json_true());
    if (json_object_size(names) == 0)   /* a delete against a delete */
        json_object_set(names, "", json_true());
    json_object_foreach(names, k, v) {
        json_t *va = json_object_get(a, k), *vb = json_object_get(b, k);
        bool same = va && vb && resolve_values_equal(json_string_value(va),
                                                     json_string_value(vb));
        const char *taken = winner == 0 ? NULL : same ? "both_equal" : w;

        json_array_append_new(out, json_pack("{s:o,s:s?,s:s}", "field",
                                             k[0] ? json_string(k) : json_null(),
                                             "taken_from", taken, "rule",
                                             winner == 0 ? "parked" : rule));
    }
    text = json_dumps(out, JSON_COMPACT);
done:
    json_decref(a);
    json_decref(b);
    json_decref(names);
    json_decref(out);
    return text;
}

static void journal_for_source(struct pgsink *s, const struct q_entry *q,
                               const struct cfg_mapping *m, enum change_op op,
                               const char *fields, const char *old_fields,
                               int64_t target_us);

/* A delete met a row changed since the base (LWW, priority decided it).
 * Both outcomes go back to the side that deleted, whose own delete cannot
 * bring them: the row kept here (the delete lost), or the delete of a
 * row an older change of it may have put back there (the delete won:
 * send_change upserts a missing row unless it knows of a newer version).
 * Either is a no-op there when that side already agrees. */
static void send_back_delete_outcome(struct pgsink *s, const struct q_entry *q,
                                     const struct cfg_mapping *m, bool applied,
                                     const char *target_ts, const char *cur_row)
{
    int64_t tv = target_ts != NULL ? atoll(target_ts) : 0;

    if (applied)
        journal_for_source(s, q, m, CHANGE_DELETE, cur_row, cur_row, tv);
    else
        journal_for_source(s, q, m, CHANGE_INSERT, cur_row, NULL, tv);
}

void sink_record_conflict(struct pgsink *s, const struct q_entry *q, bool applied,
                          const char *target_ts, const char *cur_row)
{
    struct conflict c = { 0 };
    char rule[256];
    const struct cfg_mapping *m = config_mapping(s->cfg, q->mapping);
    bool target_is_a = m != NULL && m->a.ep == s->ep;
    const char *incoming = q->op == 'D' ? NULL : q->incoming;

    const char *strategy = m ? config_strategy_name(m->strategy) : "last_write_wins";
    char *decisions;
    bool manual = m != NULL && m->strategy == CFG_STRAT_MANUAL;

    if (manual)
        snprintf(rule, sizeof(rule), "manual: both sides changed; nothing written until"
                 " an operator decides (tandem conflicts resolve)");
    else if (m != NULL && m->strategy == CFG_STRAT_PRIORITY)
        snprintf(rule, sizeof(rule), "source_priority: side %c wins: %s", m->priority,
                 applied ? "incoming applied" : "target kept");
    else if (target_ts == NULL || target_ts[0] == '\0')
        snprintf(rule, sizeof(rule), "target version unknown (no commit timestamp): incoming %s applied",
                 q->op == 'D' ? "delete" : "write");
    else
        snprintf(rule, sizeof(rule), "last_write_wins: incoming version %" PRId64 " %s target version %s%s",
                 q->version_us, applied ? ">=" : "<=", target_ts,
                 applied ? ": incoming applied" : ": target kept");
    c.mapping = q->mapping;
    c.key = q->key;
    c.strategy = strategy;
    c.base = q->base;
    c.side_a = target_is_a ? cur_row : incoming;
    c.side_b = target_is_a ? incoming : cur_row;
    c.result = manual ? NULL : applied ? (incoming ? incoming : "null") : (cur_row ? cur_row : "null");
    c.rule = rule;
    c.open = manual;
    decisions = whole_record_decisions(c.side_a, c.side_b,
                                       manual ? 0 : (applied == target_is_a) ? 'b' : 'a',
                                       strategy);
    c.decisions = decisions;
    if (manual && state_begin(s->st, NULL) == 0)
        parked_park(s->st, q->mapping, q->key, "conflict", 0, NULL);
    if (state_begin(s->st, NULL) != 0 || conflict_record(s->st, &c, NULL) != 0)
        log_error("pgsink", "cannot record a conflict", "endpoint", s->ep->name,
                  "mapping", q->mapping, "key", q->key);
    if (q->op == 'D' && !manual && m != NULL && cur_row != NULL)
        send_back_delete_outcome(s, q, m, applied, target_ts, cur_row);
    hold_commit_until_saved(s);
    log_warn("pgsink", "conflict decided", "endpoint", s->ep->name, "mapping",
             q->mapping, "key", q->key, "rule", rule);
    s->stats.conflicts++;
    free(decisions);
}

/* ---- conflicts the resolver decides (field_merge, plugin) ---- */

static void record_resolved(struct pgsink *s, const struct q_entry *q,
                            const char *cur_row, int64_t target_us,
                            const struct resolve_result *res)
{
    const struct cfg_mapping *m = config_mapping(s->cfg, q->mapping);
    bool target_a = m->a.ep == s->ep;
    const char *incoming = q->op == 'D' ? NULL : q->incoming;
    struct resolve_log l = { m, q->key, q->base, target_a ? cur_row : incoming,
                             target_a ? incoming : cur_row,
                             target_a ? target_us : q->version_us,
                             target_a ? q->version_us : target_us };

    if (resolve_log_conflict(s->st, &l, res, NULL) != 0)
        log_error("pgsink", "cannot record a conflict", "endpoint", s->ep->name,
                  "mapping", q->mapping, "key", q->key);
    /* With what resolve_here writes after it (shadow, parked key, the
     * result journaled for the source side). */
    hold_commit_until_saved(s);
    log_warn("pgsink", res->outcome == RESOLVE_PARK ? "conflict parked until an operator"
             " decides" : "conflict decided", "endpoint", s->ep->name, "mapping", q->mapping,
             "key", q->key, "strategy", config_strategy_name(m->strategy), "rule",
             res->detail[0] ? res->detail : res->rule);
    s->stats.conflicts++;
}

/* The shadow takes the decided record: it is what both sides agree on. */
static void shadow_take(struct pgsink *s, const struct q_entry *q,
                        const struct resolve_result *res)
{
    struct shadow sh = { 0 };
    json_t *empty = json_object();
    const json_t *rec = res->deleted || res->fields == NULL ? empty : res->fields;

    if (shadow_get(s->st, q->mapping, q->key, &sh, NULL) != 0)
        memset(&sh, 0, sizeof(sh));
    free(sh.fields);
    sh.fields = json_dumps(rec, JSON_COMPACT);
    canon_hash(rec, sh.hash);
    sh.tombstone = res->deleted;
    if (sh.fields != NULL && state_begin(s->st, NULL) == 0)
        shadow_put(s->st, q->mapping, q->key, &sh, NULL);
    shadow_clear(&sh);
    json_decref(empty);
}

/* Journals a change from this target for the source side, so the
 * source's own writer applies it, conditional on the source still holding
 * old_fields; its version is the later of the target row's (target_us)
 * and the change's. Only when the mapping runs both ways. */
static void journal_for_source(struct pgsink *s, const struct q_entry *q,
                               const struct cfg_mapping *m, enum change_op op,
                               const char *fields, const char *old_fields,
                               int64_t target_us)
{
    struct change ch = { 0 };
    struct err e = { 0 };

    if (m->direction != CFG_DIR_BOTH)
        return;
    ch.endpoint = s->ep->name;
    ch.mapping = q->mapping;
    ch.key = q->key;
    ch.version_us = target_us > q->version_us ? target_us : q->version_us;
    ch.op = op;
    ch.fields = fields;
    ch.old_fields = old_fields;
    if (state_begin(s->st, &e) != 0 || journal_single(s->st, &ch, NULL, &e) != 0)
        log_error("pgsink", "cannot journal a conflict result for the source side;"
                  " run tandem reconcile --repair", "endpoint", s->ep->name,
                  "mapping", q->mapping, "key", q->key, "err", e.msg);
}

/* The source side must take the result too (it differs from what the
 * source sent). */
static void send_back(struct pgsink *s, const struct q_entry *q,
                      const struct cfg_mapping *m, const struct resolve_result *res,
                      int64_t target_us)
{
    char *result = res->fields ? json_dumps(res->fields, JSON_COMPACT) : NULL;
    const char *had = q->op == 'D' ? NULL : q->incoming;

    if (res->deleted && had != NULL)
        journal_for_source(s, q, m, CHANGE_DELETE, had, had, target_us);
    else if (!res->deleted && result != NULL)
        journal_for_source(s, q, m, had ? CHANGE_UPDATE : CHANGE_INSERT, result, had, target_us);
    free(result);
}

/* Writes the decided record over cur (the row as the statement read and
 * locked it), in the same target transaction. */
static int send_result(struct pgsink *s, const struct q_entry *q,
                       const struct cfg_mapping *m, const json_t *cur,
                       const struct resolve_result *res)
{
    const struct cfg_side *t = m->a.ep == s->ep ? &m->a : &m->b;
    json_t *keyarr = json_loads(q->key, 0, NULL);
    char *result = res->fields ? json_dumps(res->fields, JSON_COMPACT) : NULL;
    struct write_req w = { m, t, q->seq, res->deleted ? CHANGE_DELETE : CHANGE_UPDATE,
                           keyarr, res->fields, cur, NULL, "1", q->version_us,
                           q->source, q->mapping, q->key, result ? result : "{}", false, false };
    struct err e = { 0 };
    int rc = -EPROTO;

    if (json_is_array(keyarr) && json_array_size(keyarr) == t->nkey &&
        (res->deleted || res->fields != NULL))
        rc = sink_send_write(s, &w, &e);
    json_decref(keyarr);
    free(result);
    return rc;
}

/* field_merge, plugin: the statement kept the target row (cur_row, last
 * written at target_ts) and wrote nothing; the resolver decides, and the
 * result is written before anything else is sent (the barrier). */
void sink_resolve_here(struct pgsink *s, const struct q_entry *q,
                       const char *target_ts, const char *cur_row)
{
    const struct cfg_mapping *m = config_mapping(s->cfg, q->mapping);
    json_t *base = q->base ? json_loads(q->base, 0, NULL) : NULL;
    json_t *in_f = q->op != 'D' && q->incoming ? json_loads(q->incoming, 0, NULL) : NULL;
    json_t *cur = cur_row ? json_loads(cur_row, 0, NULL) : NULL;
    int64_t tv = target_ts ? atoll(target_ts) : 0;
    struct resolve_base rb = { base, 0, 0, false };
    struct resolve_side in = { in_f, q->op == 'D', q->version_us, q->version_us };
    struct resolve_side tg = { cur, false, tv, tv };
    const struct resolver_plugin *pl = NULL;
    struct resolve_result res = { 0 };
    struct err e = { 0 };
    char why[RESOLVE_DETAIL_MAX + 64];
    bool target_a;

    if (m == NULL || cur == NULL)
        goto out;
    target_a = m->a.ep == s->ep;
    if (m->strategy == CFG_STRAT_PLUGIN &&
        (pl = resolver_plugin_for(&s->plugins, m, &e)) == NULL) {
        snprintf(why, sizeof(why), "conflict resolver plugin: %.400s", e.msg);
        sink_dead_letter(s, q, why);
        goto out;
    }
    if (resolve(m, pl, q->key, base ? &rb : NULL, target_a ? &tg : &in,
                target_a ? &in : &tg, &res) != 0 && res.outcome == RESOLVE_ERROR) {
        snprintf(why, sizeof(why), "conflict resolution failed: %.400s", res.detail);
        sink_dead_letter(s, q, why);
        goto out;
    }
    record_resolved(s, q, cur_row, tv, &res);
    if (res.outcome == RESOLVE_PARK) {
        if (state_begin(s->st, NULL) == 0 &&
            parked_park(s->st, q->mapping, q->key, "conflict", 0, NULL) == 0)
            s->parked_any = true;
        goto out;
    }
    shadow_take(s, q, &res);
    if ((target_a ? res.write_a : res.write_b) && send_result(s, q, m, cur, &res) != 0) {
        sink_fail(s, "cannot send a conflict result to the target", NULL);
        goto out;
    }
    if (target_a ? res.write_b : res.write_a)
        send_back(s, q, m, &res, tv);
out:
    resolve_result_clear(&res);
    json_decref(base);
    json_decref(in_f);
    json_decref(cur);
}
