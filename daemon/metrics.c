#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds memory if a caller ever builds labels from unbounded input. */
#define METRICS_SERIES_MAX 4096

enum metric_type { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_names[] = { "counter", "gauge", "histogram" };

struct metric_def {
    const char *name;
    enum metric_type type;
    bool labeled;
    const double *buckets;      /* histogram upper bounds, ascending */
    size_t nbuckets;
    const char *help;
};

static const double canary_buckets[] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};

#define NBUCKETS(a) (sizeof(a) / sizeof((a)[0]))

static const struct metric_def defs[] = {
    { "tandem_up", METRIC_GAUGE, false, NULL, 0,
      "1 while the daemon runs with both sides connected and recovery done, else 0." },
    { "tandem_changes_captured_total", METRIC_COUNTER, true, NULL, 0,
      "Changes captured from a source endpoint and journaled." },
    { "tandem_journal_txns_total", METRIC_COUNTER, true, NULL, 0,
      "Source transactions (or REST pages) journaled, by source endpoint." },
    { "tandem_changes_applied_total", METRIC_COUNTER, true, NULL, 0,
      "Changes applied to a target endpoint, by source and target endpoint." },
    { "tandem_apply_errors_total", METRIC_COUNTER, true, NULL, 0,
      "Failed apply attempts, by target endpoint and error kind." },
    { "tandem_pg_delete_missing_total", METRIC_COUNTER, true, NULL, 0,
      "Deletes applied to a PostgreSQL target that found no row." },
    { "tandem_conflicts_total", METRIC_COUNTER, true, NULL, 0,
      "Conflicts detected, by mapping and resolution strategy." },
    { "tandem_echo_suppressed_total", METRIC_COUNTER, true, NULL, 0,
      "Changes recognised as tandem's own writes coming back, and skipped." },
    { "tandem_stale_dropped_total", METRIC_COUNTER, true, NULL, 0,
      "Changes older than the last agreed version of their record, dropped." },
    { "tandem_dlq_depth", METRIC_GAUGE, false, NULL, 0,
      "Open entries in the dead-letter queue." },
    { "tandem_journal_depth", METRIC_GAUGE, false, NULL, 0,
      "Journaled changes not yet applied to their target." },
    { "tandem_lag_seconds", METRIC_GAUGE, true, NULL, 0,
      "Seconds from source commit to apply on the target, for the last applied transaction." },
    { "tandem_pg_slot_retained_bytes", METRIC_GAUGE, true, NULL, 0,
      "WAL bytes retained by the endpoint's replication slot." },
    { "tandem_parked_keys", METRIC_GAUGE, true, NULL, 0,
      "Keys whose changes wait behind a dead letter or a dependency, by reason." },
    { "tandem_reconcile_drift", METRIC_GAUGE, true, NULL, 0,
      "Differences found by the last reconciliation, by mapping and kind." },
    { "tandem_canary_latency_seconds", METRIC_HISTOGRAM, false,
      canary_buckets, NBUCKETS(canary_buckets),
      "End-to-end delivery time of canary records, in seconds." },
};

#define NDEFS NBUCKETS(defs)

struct series {
    char *labels;               /* "" for none */
    double value;               /* counter, gauge */
    uint64_t *buckets;          /* histogram: per-bound counts, not cumulative */
    uint64_t count;
    double sum;
};

struct family {
    const struct metric_def *def;
    struct series *s;           /* sorted by labels */
    size_t n, cap;
};

struct metrics {
    pthread_mutex_t mu;
    struct family fam[NDEFS];
};

static struct family *family_find(struct metrics *m, const char *name)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(m->fam[i].def->name, name) == 0)
            return &m->fam[i];
    return NULL;
}

static bool label_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

/* Accepts exactly `k="v"(,k="v")*` with escaped values, so whatever a
 * caller passes cannot break the exposition. */
static bool labels_valid(const char *s, bool histogram)
{
    size_t len = strlen(s);

    if (len == 0)
        return true;
    if (len > METRICS_LABELS_MAX)
        return false;
    for (;;) {
        const char *k = s;

        if (!label_name_char(*s, true))
            return false;
        while (label_name_char(*s, false))
            s++;
        if (histogram && s - k == 2 && memcmp(k, "le", 2) == 0)
            return false;
        if (s[0] != '=' || s[1] != '"')
            return false;
        s += 2;
        while (*s != '"') {
            if (*s == '\0' || *s == '\n')
                return false;
            if (*s == '\\') {
                if (s[1] != '\\' && s[1] != '"' && s[1] != 'n')
                    return false;
                s++;
            }
            s++;
        }
        s++;
        if (*s == '\0')
            return true;
        if (*s != ',')
            return false;
        s++;
    }
}

/* Finds or creates the series; NULL when out of memory or over the cap. */
static struct series *series_get(struct family *f, const char *labels)
{
    size_t lo = 0, hi = f->n;
    struct series *se;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->s[mid].labels, labels);

        if (c == 0)
            return &f->s[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (f->n >= METRICS_SERIES_MAX)
        return NULL;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        struct series *ns = realloc(f->s, cap * sizeof(*ns));

        if (ns == NULL)
            return NULL;
        f->s = ns;
        f->cap = cap;
    }
    struct series tmp = { 0 };
    tmp.labels = strdup(labels);
    if (tmp.labels == NULL)
        return NULL;
    if (f->def->type == METRIC_HISTOGRAM) {
        tmp.buckets = calloc(f->def->nbuckets, sizeof(*tmp.buckets));
        if (tmp.buckets == NULL) {
            free(tmp.labels);
            return NULL;
        }
    }
    se = &f->s[lo];
    memmove(se + 1, se, (f->n - lo) * sizeof(*se));
    *se = tmp;
    f->n++;
    return se;
}

int metrics_new(struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof(*m));

    *out = NULL;
    if (m == NULL)
        return -ENOMEM;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return -ENOMEM;
    }
    for (size_t i = 0; i < NDEFS; i++) {
        m->fam[i].def = &defs[i];
        if (!defs[i].labeled && series_get(&m->fam[i], "") == NULL) {
            metrics_free(m);
            return -ENOMEM;
        }
    }
    *out = m;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < NDEFS; i++) {
        struct family *f = &m->fam[i];

        for (size_t j = 0; j < f->n; j++) {
            free(f->s[j].labels);
            free(f->s[j].buckets);
        }
        free(f->s);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

enum op { OP_ADD, OP_SET, OP_OBSERVE };

static void update(struct metrics *m, const char *name, const char *labels,
                   double v, enum op op)
{
    struct family *f;
    struct series *se;

    if (m == NULL || name == NULL)
        return;
    if (labels == NULL)
        labels = "";
    f = family_find(m, name);
    if (f == NULL)
        return;
    switch (op) {
    case OP_ADD:
        if (f->def->type == METRIC_HISTOGRAM || isnan(v))
            return;
        if (f->def->type == METRIC_COUNTER && (!isfinite(v) || v < 0))
            return;
        break;
    case OP_SET:
        if (f->def->type != METRIC_GAUGE)
            return;
        break;
    case OP_OBSERVE:
        if (f->def->type != METRIC_HISTOGRAM || isnan(v))
            return;
        break;
    }
    if (!labels_valid(labels, f->def->type == METRIC_HISTOGRAM))
        return;

    pthread_mutex_lock(&m->mu);
    se = series_get(f, labels);
    if (se != NULL) {
        switch (op) {
        case OP_ADD:
            se->value += v;
            break;
        case OP_SET:
            se->value = v;
            break;
        case OP_OBSERVE:
            for (size_t i = 0; i < f->def->nbuckets; i++)
                if (v <= f->def->buckets[i]) {
                    se->buckets[i]++;
                    break;
                }
            se->count++;
            se->sum += v;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_add(struct metrics *m, const char *name, const char *labels,
                 double v)
{
    update(m, name, labels, v, OP_ADD);
}

void metrics_set(struct metrics *m, const char *name, const char *labels,
                 double v)
{
    update(m, name, labels, v, OP_SET);
}

void metrics_observe(struct metrics *m, const char *name, const char *labels,
                     double v)
{
    update(m, name, labels, v, OP_OBSERVE);
}

/* Growable output with a sticky failure flag, checked once at the end. */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Shortest text that reads back as v, in the forms Prometheus parses. */
static void fmt_double(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
    } else if (isinf(v)) {
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(out, cap, "0");
    } else if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, cap, "%.0f", v);
    } else {
        snprintf(out, cap, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, cap, "%.17g", v);
    }
}

static void render_family(struct buf *b, const struct family *f)
{
    const struct metric_def *d = f->def;
    char num[64];

    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
               type_names[d->type]);
    for (size_t i = 0; i < f->n; i++) {
        const struct series *se = &f->s[i];
        const char *l = se->labels;
        bool has = l[0] != '\0';

        if (d->type != METRIC_HISTOGRAM) {
            fmt_double(num, sizeof(num), se->value);
            if (has)
                buf_printf(b, "%s{%s} %s\n", d->name, l, num);
            else
                buf_printf(b, "%s %s\n", d->name, num);
            continue;
        }
        uint64_t cum = 0;
        for (size_t j = 0; j < d->nbuckets; j++) {
            cum += se->buckets[j];
            fmt_double(num, sizeof(num), d->buckets[j]);
            buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", d->name, l,
                       has ? "," : "", num, (unsigned long long)cum);
        }
        buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", d->name, l,
                   has ? "," : "", (unsigned long long)se->count);
        fmt_double(num, sizeof(num), se->sum);
        buf_printf(b, "%s_sum%s%s%s %s\n", d->name, has ? "{" : "", l,
                   has ? "}" : "", num);
        buf_printf(b, "%s_count%s%s%s %llu\n", d->name, has ? "{" : "", l,
                   has ? "}" : "", (unsigned long long)se->count);
    }
}

char *metrics_render(struct metrics *m)
{
    struct buf b = { 0 };

    if (m == NULL)
        return NULL;
    b.cap = 8192;
    b.p = malloc(b.cap);
    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < NDEFS; i++)
        render_family(&b, &m->fam[i]);
    pthread_mutex_unlock(&m->mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

int metrics_labels(char *buf, size_t cap, ...)
{
    va_list ap;
    size_t len = 0;
    const char *k;
    int rc = 0;

    if (buf == NULL || cap == 0)
        return -ENOSPC;
    buf[0] = '\0';
    va_start(ap, cap);
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        size_t need;

        if (!label_name_char(k[0], true) || (k[0] == '_' && k[1] == '_')) {
            rc = -EINVAL;
            break;
        }
        for (const char *p = k; *p; p++)
            if (!label_name_char(*p, false)) {
                rc = -EINVAL;
                break;
            }
        if (rc != 0)
            break;
        if (v == NULL)
            v = "";
        need = (len ? 1 : 0) + strlen(k) + 2 + 1 + 1; /* ,k="…"NUL */
        for (const char *p = v; *p; p++)
            need += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
        if (need > cap - len) {
            rc = -ENOSPC;
            break;
        }
        if (len)
            buf[len++] = ',';
        len += (size_t)sprintf(buf + len, "%s=\"", k);
        for (const char *p = v; *p; p++) {
            if (*p == '\\' || *p == '"') {
                buf[len++] = '\\';
                buf[len++] = *p;
            } else if (*p == '\n') {
                buf[len++] = '\\';
                buf[len++] = 'n';
            } else {
                buf[len++] = *p;
            }
        }
        buf[len++] = '"';
        buf[len] = '\0';
    }
    va_end(ap);
    if (rc != 0)
        buf[0] = '\0';
    return rc;
}
