/* cmd_ops.c: operator commands over the state file: `conflicts` and `dlq`.
 * They work while the daemon runs (WAL readers, short write transactions);
 * a retry is requested here and performed by the running daemon. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../state/conflicts.h"
#include "../state/dlq.h"
#include "../state/journal.h"
#include "../state/state.h"
#include "commands.h"
#include "config.h"
#include "log.h"

struct ops {
    struct config *cfg;
    struct state *st;
    struct cli_opts *o;
    json_t *out;        /* --json accumulator */
};

static void format_time(int64_t us, char *buf, size_t cap)
{
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int open_ops(struct cli_opts *o, struct ops *x, enum state_mode mode)
{
    struct err e = { 0 };

    memset(x, 0, sizeof(*x));
    x->o = o;
    log_setup(LOG_WARN, LOG_FORMAT_JSON, NULL, NULL);
    if (config_load(&x->cfg, o->config, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: config %s is invalid:\n%s\n", o->config, e.msg);
        return EXIT_USAGE;
    }
    if (state_open(&x->st, x->cfg->state_path, mode, &e) != 0) {
        fprintf(stderr, "tandem: %s\n", e.msg);
        config_free(x->cfg);
        return EXIT_RUNTIME;
    }
    x->out = json_array();
    return 0;
}

static int close_ops(struct ops *x, int rc)
{
    if (rc == EXIT_OK && x->o->json) {
        json_dumpf(x->out, stdout, JSON_INDENT(2));
        printf("\n");
    }
    json_decref(x->out);
    state_close(x->st);
    config_free(x->cfg);
    return rc;
}

static int parse_id(const char *s, int64_t *id)
{
    char *end;

    if (s == NULL)
        return -1;
    *id = strtoll(s, &end, 10);
    return (*s && !*end && *id > 0) ? 0 : -1;
}

/* ---- conflicts ---- */

static int conflict_line(const struct conflict *c, void *arg)
{
    struct ops *x = arg;
    char t[32];

    if (x->o->json) {
        json_array_append_new(x->out, conflict_to_json(c));
        return 0;
    }
    format_time(c->ts_us, t, sizeof(t));
    printf("%" PRId64 "\t%s\t%s\t%s\t%s\t%s\n", c->id, t, c->mapping, c->key,
           c->strategy, c->open ? "open" : "decided");
    return 0;
}

/* One record shown whole: into the --json array, or indented on stdout.
 * Takes the reference j. */
static int show_record(struct ops *x, json_t *j)
{
    if (x->o->json)
        json_array_append(x->out, j);
    else
        json_dumpf(j, stdout, JSON_INDENT(2)), printf("\n");
    json_decref(j);
    return 0;
}

static int conflict_detail(const struct conflict *c, void *arg)
{
    return show_record(arg, conflict_to_json(c));
}

/* ---- conflicts resolve: an operator's decision, written to both sides ---- */

struct taken {
    char *mapping, *key, *a, *b;
    bool open;
};

static int take_conflict(const struct conflict *c, void *arg)
{
    struct taken *t = arg;

    t->mapping = strdup(c->mapping);
    t->key = strdup(c->key);
    t->a = c->side_a ? strdup(c->side_a) : NULL;
    t->b = c->side_b ? strdup(c->side_b) : NULL;
    t->open = c->open;
    return 0;
}

/* Journals the decided record as a change from one side to the other,
 * based on the target's recorded state so the conditional write applies. */
static int journal_decision(struct state *st, const char *from, const char *mapping,
                            const char *key, const char *result, const char *target_row,
                            struct err *e)
{
    struct change c = { 0 };
    struct timespec ts;
    int64_t txn, seq;
    int rc;

    clock_gettime(CLOCK_REALTIME, &ts);
    c.endpoint = from;
    c.mapping = mapping;
    c.key = key;
    c.op = result ? CHANGE_UPDATE : CHANGE_DELETE;
    c.fields = result ? result : (target_row ? target_row : "{}");
    c.old_fields = target_row;
    c.version_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if ((rc = journal_txn_open(st, from, 0, 0, c.version_us, &txn, e)) != 0 ||
        (rc = journal_append(st, txn, &c, e)) != 0 ||
        (rc = journal_txn_commit(st, txn, 0, &seq, e)) != 0)
        return rc;
    return 0;
}

static char *read_result_file(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    char *out = NULL;

    if (json_is_object(j))
        out = json_dumps(j, JSON_COMPACT);
    else
        fprintf(stderr, "tandem: %s: %s\n", path,
                j ? "expected a JSON object of side-a field names" : je.text);
    json_decref(j);
    return out;
}

static int resolve_conflict(struct ops *x, int64_t id)
{
    struct taken t = { 0 };
    struct err e = { 0 };
    const struct cfg_mapping *m;
    char *result = NULL, rule[128], other_rule[160];
    int rc = EXIT_RUNTIME;

    if (conflict_get(x->st, id, take_conflict, &t, &e) != 0) {
        fprintf(stderr, "tandem: no conflict %" PRId64 "\n", id);
        return EXIT_RUNTIME;
    }
    m = config_mapping(x->cfg, t.mapping);
    if (!t.open || m == NULL) {
        fprintf(stderr, "tandem: conflict %" PRId64 " is %s\n", id,
                m ? "already decided" : "for a mapping no longer in the config");
        goto out;
    }
    if (!strcmp(x->o->take, "a") || !strcmp(x->o->take, "b")) {
        const char *side = x->o->take[0] == 'a' ? t.a : t.b;
        result = side ? strdup(side) : NULL;
    } else if ((result = read_result_file(x->o->take)) == NULL) {
        rc = EXIT_USAGE;
        goto out;
    }
    snprintf(rule, sizeof(rule), "manual: operator took %s", x->o->take);
    /* The other direction's conflicts of the key are the same disagreement. */
    snprintf(other_rule, sizeof(other_rule), "manual: operator took %s (conflict %" PRId64 ")",
             x->o->take, id);
    if (state_begin(x->st, &e) != 0 ||
        journal_decision(x->st, m->b.endpoint, t.mapping, t.key, result, t.a, &e) != 0 ||
        journal_decision(x->st, m->a.endpoint, t.mapping, t.key, result, t.b, &e) != 0 ||
        conflict_resolve(x->st, id, result ? result : "null", rule, &e) != 0 ||
        conflict_resolve_key(x->st, t.mapping, t.key, result ? result : "null", other_rule,
                             NULL, &e) != 0 ||
        parked_unpark(x->st, t.mapping, t.key, &e) < 0 ||
        state_commit(x->st, &e) != 0) {
        fprintf(stderr, "tandem: cannot resolve conflict %" PRId64 ": %s\n", id, e.msg);
        goto out;
    }
    printf("conflict %" PRId64 " resolved (%s); the running daemon writes the result to both sides\n",
           id, rule);
    rc = EXIT_OK;
out:
    free(result);
    free(t.mapping);
    free(t.key);
    free(t.a);
    free(t.b);
    return rc;
}

int cmd_conflicts(struct cli_opts *o)
{
    const char *sub = o->nargs > 0 ? o->args[0] : "list";
    struct ops x;
    struct err e = { 0 };
    int64_t id = 0;
    int rc;

    if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "resolve")) {
        fprintf(stderr, "tandem: conflicts: unknown subcommand %s (list, show ID,"
                " resolve ID --take a|b|FILE.json)\n", sub);
        return EXIT_USAGE;
    }
    if (strcmp(sub, "list") && parse_id(o->nargs > 1 ? o->args[1] : NULL, &id) != 0) {
        fprintf(stderr, "tandem: conflicts %s needs a numeric ID\n", sub);
        return EXIT_USAGE;
    }
    if (!strcmp(sub, "resolve") && o->take == NULL) {
        fprintf(stderr, "tandem: conflicts resolve needs --take a|b|FILE.json\n");
        return EXIT_USAGE;
    }
    if ((rc = open_ops(o, &x, strcmp(sub, "resolve") ? STATE_READONLY : STATE_SHARED)) != 0)
        return rc;
    if (!strcmp(sub, "resolve"))
        return close_ops(&x, resolve_conflict(&x, id));
    if (!strcmp(sub, "list"))
        rc = conflict_list(x.st, o->open_only, 0, conflict_line, &x, &e);
    else
        rc = conflict_get(x.st, id, conflict_detail, &x, &e);
    if (rc == -ENOENT) {
        fprintf(stderr, "tandem: no conflict %" PRId64 "\n", id);
        return close_ops(&x, EXIT_RUNTIME);
    }
    if (rc < 0) {
        fprintf(stderr, "tandem: cannot read conflicts: %s\n", e.msg);
        return close_ops(&x, EXIT_RUNTIME);
    }
    return close_ops(&x, EXIT_OK);
}

/* ---- dlq ---- */

static json_t *dlq_json(const struct dlq_entry *d)
{
    return json_pack("{s:I,s:I,s:s,s:s?,s:s?,s:s,s:I,s:I,s:s?,s:s,s:i,s:s,s:b}",
                     "id", (json_int_t)d->id, "ts_us", (json_int_t)d->ts_us,
                     "mapping", d->mapping, "key", d->key, "source", d->source,
                     "target", d->target, "change_seq", (json_int_t)d->change_seq,
                     "commit_seq", (json_int_t)d->commit_seq, "change", d->change,
                     "error", d->error, "attempts", d->attempts,
                     "status", dlq_status_name(d->status),
                     "retry_requested", d->retry_requested_us != 0);
}

static int dlq_line(const struct dlq_entry *d, void *arg)
{
    struct ops *x = arg;
    char t[32];

    if (x->o->json) {
        json_array_append_new(x->out, dlq_json(d));
        return 0;
    }
    format_time(d->ts_us, t, sizeof(t));
    printf("%" PRId64 "\t%s\t%s\t%s\t%s%s%s\n", d->id, t, d->mapping,
           d->key ? d->key : "-", d->error,
           x->o->history ? "\t" : "", x->o->history ? dlq_status_name(d->status) : "");
    return 0;
}

static int dlq_detail(const struct dlq_entry *d, void *arg)
{
    return show_record(arg, dlq_json(d));
}

struct retry_all {
    struct state *st;
    int n, failed;
};

static int request_one(const struct dlq_entry *d, void *arg)
{
    struct retry_all *r = arg;

    if (d->status == DLQ_OPEN && dlq_request_retry(r->st, d->id, NULL) == 0)
        r->n++;
    else
        r->failed++;
    return 0;
}

static int take_dlq_key(const struct dlq_entry *d, void *arg)
{
    struct taken *t = arg;

    t->mapping = strdup(d->mapping);
    t->key = d->key ? strdup(d->key) : NULL;
    return 0;
}

static int dlq_change(struct ops *x, const char *sub, int64_t id)
{
    struct err e = { 0 };
    int rc;

    struct taken t = { 0 };
    int64_t left = 1;

    if (!strcmp(sub, "retry")) {
        rc = dlq_request_retry(x->st, id, &e);
    } else {
        dlq_get(x->st, id, take_dlq_key, &t, NULL);
        rc = dlq_mark_dropped(x->st, id, &e);
        /* The last open entry of a key gone: its later changes may flow. */
        if (rc == 0 && t.key != NULL &&
            dlq_count_open_key(x->st, t.mapping, t.key, &left, NULL) == 0 && left == 0)
            parked_unpark(x->st, t.mapping, t.key, NULL);
        free(t.mapping);
        free(t.key);
    }
    if (rc == -ENOENT) {
        fprintf(stderr, "tandem: no DLQ entry %" PRId64 "\n", id);
        return EXIT_RUNTIME;
    }
    if (rc == -EALREADY) {
        fprintf(stderr, "tandem: DLQ entry %" PRId64 " is not open\n", id);
        return EXIT_RUNTIME;
    }
    if (rc < 0) {
        fprintf(stderr, "tandem: %s\n", e.msg);
        return EXIT_RUNTIME;
    }
    if (!strcmp(sub, "drop")) {
        char ids[24];
        snprintf(ids, sizeof(ids), "%" PRId64, id);
        log_setup(LOG_INFO, LOG_FORMAT_JSON, NULL, x->cfg->name);
        log_info("dlq", "entry dropped by an operator", "id", ids,
                 "user", getenv("USER") ? getenv("USER") : "unknown");
        printf("dropped %" PRId64 "\n", id);
    } else {
        printf("retry requested for %" PRId64 "; the running daemon re-applies it\n", id);
    }
    return EXIT_OK;
}

int cmd_dlq(struct cli_opts *o)
{
    const char *sub = o->nargs > 0 ? o->args[0] : "list";
    bool writes = !strcmp(sub, "retry") || !strcmp(sub, "drop");
    struct ops x;
    struct err e = { 0 };
    int64_t id = 0;
    int rc;

    if (strcmp(sub, "list") && strcmp(sub, "show") && !writes) {
        fprintf(stderr, "tandem: dlq: unknown subcommand %s (list, show ID, retry ID|--all, drop ID)\n", sub);
        return EXIT_USAGE;
    }
    if (strcmp(sub, "list") && !(writes && o->all && !strcmp(sub, "retry")) &&
        parse_id(o->nargs > 1 ? o->args[1] : NULL, &id) != 0) {
        fprintf(stderr, "tandem: dlq %s needs a numeric ID\n", sub);
        return EXIT_USAGE;
    }
    if ((rc = open_ops(o, &x, writes ? STATE_SHARED : STATE_READONLY)) != 0)
        return rc;
    if (!strcmp(sub, "list")) {
        rc = dlq_list(x.st, o->history, 0, dlq_line, &x, &e);
    } else if (!strcmp(sub, "show")) {
        rc = dlq_get(x.st, id, dlq_detail, &x, &e);
        if (rc == -ENOENT) {
            fprintf(stderr, "tandem: no DLQ entry %" PRId64 "\n", id);
            return close_ops(&x, EXIT_RUNTIME);
        }
    } else if (o->all) {
        struct retry_all r = { x.st, 0, 0 };
        rc = dlq_list(x.st, false, 0, request_one, &r, &e);
        if (rc >= 0)
            printf("retry requested for %d entries\n", r.n);
    } else {
        return close_ops(&x, dlq_change(&x, sub, id));
    }
    if (rc < 0) {
        fprintf(stderr, "tandem: cannot read the DLQ: %s\n", e.msg);
        return close_ops(&x, EXIT_RUNTIME);
    }
    return close_ops(&x, EXIT_OK);
}
