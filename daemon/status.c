#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../state/canary.h"
#include "../state/conflicts.h"
#include "../state/dlq.h"
#include "../state/journal.h"
#include "backfill.h"

#define STATUS_POSITION_MAX 8192
/* Page size when counting pending transactions, to bound each query. */
#define STATUS_SCAN_PAGE 10000

/* Sticky-failure JSON builder: check once at the end. */
struct jb {
    bool failed;
};

static void jset(struct jb *b, json_t *obj, const char *k, json_t *v)
{
    if (v == NULL || json_object_set_new(obj, k, v) != 0)
        b->failed = true;
}

/* A text value; invalid UTF-8 (a strange cursor) must not lose the doc. */
static json_t *jtext(const char *s)
{
    json_t *v = json_string(s);

    return v != NULL ? v : json_string("(not valid utf-8)");
}

static bool endpoint_is_target(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];

        if (m->a.endpoint != NULL && strcmp(m->a.endpoint, name) == 0 &&
            m->direction != CFG_DIR_A_TO_B)
            return true;
        if (m->b.endpoint != NULL && strcmp(m->b.endpoint, name) == 0 &&
            m->direction != CFG_DIR_B_TO_A)
            return true;
    }
    return false;
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct pending {
    int64_t txns, changes, last_seq;
    int64_t oldest_ts_us;       /* source commit time of the oldest pending */
};

static int count_txn(const struct journal_txn_info *info, void *arg)
{
    struct pending *p = arg;

    if (p->txns == 0)
        p->oldest_ts_us = info->commit_ts_us;
    p->txns++;
    p->changes += info->nchanges;
    p->last_seq = info->commit_seq;
    return 0;
}

/* Committed transactions past applied that target would apply (those from
 * other endpoints), counted page by page. */
static int pending_for(struct state *s, const char *target, int64_t applied,
                       struct pending *out, struct err *e)
{
    int64_t after = applied;

    memset(out, 0, sizeof(*out));
    for (;;) {
        int64_t before = out->txns;
        int rc;

        out->last_seq = after;
        rc = journal_scan_txns(s, after, STATUS_SCAN_PAGE, target, count_txn,
                               out, e);
        if (rc < 0)
            return rc;
        if (out->txns - before < STATUS_SCAN_PAGE)
            return 0;
        after = out->last_seq;
    }
}

static json_t *endpoint_doc(struct state *s, const struct config *c,
                            const struct cfg_endpoint *ep, int64_t *depth_txns,
                            int64_t *depth_changes, struct err *e)
{
    char *pos = malloc(STATUS_POSITION_MAX);
    json_t *o = json_object();
    struct jb b = { .failed = o == NULL };
    uint64_t lsn = 0;
    int64_t jtxns = 0, applied = 0;
    struct pending pend = { 0 };
    bool target = endpoint_is_target(c, ep->name);
    int rc;

    if (pos == NULL || o == NULL) {
        err_set(e, -ENOMEM, "status: out of memory");
        goto fail;
    }
    jset(&b, o, "kind", json_string(ep->kind == CFG_KIND_POSTGRES ? "postgres"
                                                                  : "rest"));
    rc = state_position_get(s, ep->name, pos, STATUS_POSITION_MAX, e);
    if (rc == 0)
        jset(&b, o, "position", jtext(pos));
    else if (rc == -ENOENT)
        jset(&b, o, "position", json_null());
    else
        goto fail;

    if (journal_endpoint_stats(s, ep->name, &lsn, &jtxns, e) < 0)
        goto fail;
    if (ep->kind == CFG_KIND_POSTGRES && lsn != 0) {
        char buf[32];

        snprintf(buf, sizeof(buf), "%X/%X", (unsigned)(lsn >> 32),
                 (unsigned)lsn);
        jset(&b, o, "last_journaled_lsn", json_string(buf));
    } else {
        jset(&b, o, "last_journaled_lsn", json_null());
    }
    jset(&b, o, "journaled_txns", json_integer(jtxns));

    if (state_applied_get(s, ep->name, &applied, e) < 0)
        goto fail;
    if (target && pending_for(s, ep->name, applied, &pend, e) < 0)
        goto fail;
    jset(&b, o, "target", json_boolean(target));
    jset(&b, o, "applied_commit_seq", json_integer(applied));
    jset(&b, o, "pending_txns", json_integer(pend.txns));
    jset(&b, o, "pending_changes", json_integer(pend.changes));
    /* Lag: how long the oldest change not yet applied here has waited. */
    jset(&b, o, "lag_seconds", json_real(pend.txns > 0 && pend.oldest_ts_us > 0
                                         ? (double)(now_us() - pend.oldest_ts_us) / 1e6
                                         : 0.0));
    *depth_txns += pend.txns;
    *depth_changes += pend.changes;
    if (b.failed) {
        err_set(e, -ENOMEM, "status: out of memory");
        goto fail;
    }
    free(pos);
    return o;

fail:
    free(pos);
    json_decref(o);
    return NULL;
}

struct canary_ctx {
    json_t *arr;
    struct jb *b;
};

static int add_canary(const struct canary_status *cs, void *arg)
{
    struct canary_ctx *k = arg;
    json_t *o = json_pack("{s:s,s:s,s:f,s:I,s:I,s:b}", "mapping", cs->mapping,
                          "direction", canary_dir_name(cs->dir),
                          "last_latency_seconds", (double)cs->last_latency_us / 1e6,
                          "sent", (json_int_t)cs->sent_count,
                          "seen", (json_int_t)cs->seen_count,
                          "outstanding", cs->sent_us != 0 && cs->seen_us == 0);

    if (o == NULL || json_array_append_new(k->arr, o) != 0)
        k->b->failed = true;
    return 0;
}

struct parked_ctx {
    json_t *obj;
    struct jb *b;
};

static int add_parked(const char *reason, int64_t count, void *arg)
{
    struct parked_ctx *p = arg;

    jset(p->b, p->obj, reason != NULL ? reason : "", json_integer(count));
    return 0;
}

/* Backfills asked for (backfill.h): {"mapping:side": "done" or
 * {"rows": copied so far}}; sides never asked for are left out. */
static json_t *backfills_json(struct state *s, const struct config *c)
{
    json_t *out = json_object();

    for (size_t i = 0; out != NULL && i < c->nmappings; i++)
        for (char side = 'a'; side <= 'b'; side++) {
            char name[300];
            int64_t rows = 0;
            int st = backfill_progress(s, &c->mappings[i], side, &rows);

            snprintf(name, sizeof(name), "%s:%c", c->mappings[i].name, side);
            if (st == 1)
                json_object_set_new(out, name, json_string("done"));
            else if (st == 0)
                json_object_set_new(out, name, json_pack("{s:I}", "rows", (json_int_t)rows));
        }
    return out;
}

json_t *status_build(struct state *s, const struct config *c, struct err *e)
{
    json_t *doc = json_object();
    json_t *eps = json_object(), *journal = json_object();
    json_t *conflicts = json_object(), *dlq = json_object();
    json_t *parked = json_object();
    struct jb b = { 0 };
    int64_t depth_txns = 0, depth_changes = 0, last = 0;
    int64_t total = 0, open = 0, dlq_open = 0;
    struct parked_ctx pc = { parked, &b };

    if (s == NULL || c == NULL) {
        err_set(e, -EINVAL, "status: no state or config");
        goto fail;
    }
    if (doc == NULL || eps == NULL || journal == NULL || conflicts == NULL ||
        dlq == NULL || parked == NULL) {
        err_set(e, -ENOMEM, "status: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < c->nendpoints; i++) {
        json_t *o = endpoint_doc(s, c, &c->endpoints[i], &depth_txns,
                                 &depth_changes, e);

        if (o == NULL)
            goto fail;
        jset(&b, eps, c->endpoints[i].name, o);
    }
    if (journal_last_commit_seq(s, &last, e) < 0 ||
        conflict_count(s, false, &total, e) < 0 ||
        conflict_count(s, true, &open, e) < 0 ||
        dlq_count_open(s, &dlq_open, e) < 0)
        goto fail;
    if (parked_count_by_reason(s, add_parked, &pc, e) < 0)
        goto fail;
    {
        json_t *canaries = json_array();
        struct canary_ctx kc = { canaries, &b };
        if (canaries == NULL || canary_list(s, add_canary, &kc, e) < 0) {
            json_decref(canaries);
            goto fail;
        }
        jset(&b, doc, "canaries", canaries);
    }

    jset(&b, journal, "last_commit_seq", json_integer(last));
    jset(&b, journal, "depth_txns", json_integer(depth_txns));
    jset(&b, journal, "depth_changes", json_integer(depth_changes));
    jset(&b, conflicts, "total", json_integer(total));
    jset(&b, conflicts, "open", json_integer(open));
    jset(&b, dlq, "depth", json_integer(dlq_open));

    jset(&b, doc, "pipeline", jtext(c->name != NULL ? c->name : ""));
    jset(&b, doc, "endpoints", eps);
    jset(&b, doc, "journal", journal);
    jset(&b, doc, "conflicts", conflicts);
    jset(&b, doc, "dlq", dlq);
    jset(&b, doc, "parked", parked);
    jset(&b, doc, "backfills", backfills_json(s, c));
    {
        char last_rec[512];
        /* "mapping=differing keys,..." from the daemon's periodic reconcile. */
        if (state_meta_get(s, "last_reconcile", last_rec, sizeof(last_rec), NULL) == 0)
            jset(&b, doc, "last_reconcile", jtext(last_rec));
        else
            jset(&b, doc, "last_reconcile", json_null());
    }
    if (b.failed) {
        err_set(e, -ENOMEM, "status: out of memory");
        json_decref(doc);
        return NULL;
    }
    return doc;

fail:
    json_decref(eps);
    json_decref(journal);
    json_decref(conflicts);
    json_decref(dlq);
    json_decref(parked);
    json_decref(doc);
    return NULL;
}

char *status_json_text(struct state *s, const struct config *c,
                       struct err *e)
{
    json_t *doc = status_build(s, c, e);
    char *text;

    if (doc == NULL)
        return NULL;
    text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (text == NULL)
        err_set(e, -ENOMEM, "status: out of memory");
    return text;
}

/* ---- text rendering ---- */

#define COLS 7
#define CELL_MAX 48

static const char *const headings[COLS] = {
    "ENDPOINT", "KIND", "POSITION", "JOURNALED", "APPLIED SEQ", "PENDING TXNS",
    "PENDING CHANGES"
};

/* A cell's text: strings (cut to CELL_MAX with "..."), integers, or "-". */
static void cell(char *buf, size_t cap, json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);

        if (strlen(s) > CELL_MAX)
            snprintf(buf, cap, "%.*s...", CELL_MAX - 3, s);
        else
            snprintf(buf, cap, "%s", s);
        for (char *p = buf; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = '?';
    } else if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else {
        snprintf(buf, cap, "-");
    }
}

static json_int_t jint(json_t *obj, const char *k)
{
    return json_integer_value(json_object_get(obj, k));
}

int status_print_text(FILE *out, json_t *doc)
{
    json_t *eps = json_object_get(doc, "endpoints");
    json_t *journal = json_object_get(doc, "journal");
    json_t *conflicts = json_object_get(doc, "conflicts");
    json_t *dlq = json_object_get(doc, "dlq");
    json_t *parked = json_object_get(doc, "parked");
    const char *name = json_string_value(json_object_get(doc, "pipeline"));
    static const char *const keys[COLS] = {
        NULL, "kind", "position", "journaled_txns", "applied_commit_seq",
        "pending_txns", "pending_changes"
    };
    size_t width[COLS];
    char buf[CELL_MAX + 8];
    const char *k;
    json_t *v;

    if (out == NULL || !json_is_object(eps) || !json_is_object(journal) ||
        !json_is_object(conflicts) || !json_is_object(dlq) ||
        !json_is_object(parked) || name == NULL)
        return -EINVAL;

    for (int i = 0; i < COLS; i++)
        width[i] = strlen(headings[i]);
    json_object_foreach(eps, k, v) {
        if (strlen(k) > width[0])
            width[0] = strlen(k) > CELL_MAX ? CELL_MAX : strlen(k);
        for (int i = 1; i < COLS; i++) {
            cell(buf, sizeof(buf), json_object_get(v, keys[i]));
            if (strlen(buf) > width[i])
                width[i] = strlen(buf);
        }
    }

    fprintf(out, "pipeline: %s\n\n", name);
    for (int i = 0; i < COLS; i++)
        fprintf(out, "%-*s%s", (int)width[i], headings[i],
                i + 1 < COLS ? "  " : "\n");
    json_object_foreach(eps, k, v) {
        json_t *key = json_string(k);

        cell(buf, sizeof(buf), key);
        json_decref(key);
        fprintf(out, "%-*s  ", (int)width[0], buf);
        for (int i = 1; i < COLS; i++) {
            cell(buf, sizeof(buf), json_object_get(v, keys[i]));
            /* Numbers right-aligned, text left-aligned. */
            fprintf(out, i >= 3 ? "%*s%s" : "%-*s%s", (int)width[i], buf,
                    i + 1 < COLS ? "  " : "\n");
        }
    }
    fprintf(out, "\njournal:   last commit seq %" JSON_INTEGER_FORMAT
            ", pending %" JSON_INTEGER_FORMAT " txns / %" JSON_INTEGER_FORMAT
            " changes\n", jint(journal, "last_commit_seq"),
            jint(journal, "depth_txns"), jint(journal, "depth_changes"));
    fprintf(out, "conflicts: %" JSON_INTEGER_FORMAT " total, %"
            JSON_INTEGER_FORMAT " open\n", jint(conflicts, "total"),
            jint(conflicts, "open"));
    fprintf(out, "dlq:       %" JSON_INTEGER_FORMAT " open\n",
            jint(dlq, "depth"));
    if (json_object_size(json_object_get(doc, "backfills")) > 0) {
        fprintf(out, "backfill:  ");
        json_object_foreach(json_object_get(doc, "backfills"), k, v)
            if (json_is_string(v))
                fprintf(out, "%s done  ", k);
            else
                fprintf(out, "%s %" JSON_INTEGER_FORMAT " rows so far  ", k,
                        json_integer_value(json_object_get(v, "rows")));
        fprintf(out, "\n");
    }
    fprintf(out, "parked:    ");
    if (json_object_size(parked) == 0) {
        fprintf(out, "none\n");
    } else {
        bool first = true;

        json_object_foreach(parked, k, v) {
            fprintf(out, "%s%s %" JSON_INTEGER_FORMAT, first ? "" : ", ", k,
                    json_integer_value(v));
            first = false;
        }
        fprintf(out, "\n");
    }
    if (fflush(out) != 0 || ferror(out))
        return -EIO;
    return 0;
}
