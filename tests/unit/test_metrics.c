/* Unit tests for daemon/metrics.c: registry, label building, exposition. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/metrics.h"

static const struct {
    const char *name;
    const char *type;
} expected[] = {
    { "tandem_up", "gauge" },
    { "tandem_changes_captured_total", "counter" },
    { "tandem_changes_applied_total", "counter" },
    { "tandem_apply_errors_total", "counter" },
    { "tandem_conflicts_total", "counter" },
    { "tandem_dlq_depth", "gauge" },
    { "tandem_journal_depth", "gauge" },
    { "tandem_lag_seconds", "gauge" },
    { "tandem_echo_suppressed_total", "counter" },
    { "tandem_stale_dropped_total", "counter" },
    { "tandem_pg_slot_retained_bytes", "gauge" },
    { "tandem_canary_latency_seconds", "histogram" },
    { "tandem_parked_keys", "gauge" },
    { "tandem_reconcile_drift", "gauge" },
    { "tandem_pg_delete_missing_total", "counter" },
    { "tandem_journal_txns_total", "counter" },
};
#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))

/* ---- a strict reader of the text exposition format 0.0.4 ---- */

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == ':' || (!first && c >= '0' && c <= '9');
}

static const char *parse_name(const char *p, char *out, size_t cap)
{
    size_t n = 0;

    if (!name_char(*p, true))
        return NULL;
    while (name_char(*p, false) && n + 1 < cap)
        out[n++] = *p++;
    out[n] = '\0';
    return p;
}

/* Parses {k="v",...}; records whether an le label was present. */
static const char *parse_labels(const char *p, bool *has_le)
{
    char k[128];

    *has_le = false;
    if (*p != '{')
        return p;
    p++;
    while (*p != '}') {
        p = parse_name(p, k, sizeof(k));
        if (p == NULL || strchr(k, ':') != NULL)
            return NULL;
        if (strcmp(k, "le") == 0)
            *has_le = true;
        if (p[0] != '=' || p[1] != '"')
            return NULL;
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return NULL;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return NULL;
                p++;
            }
            p++;
        }
        p++;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return NULL;
    }
    return p + 1;
}

static bool parse_value(const char *p, size_t n)
{
    char tmp[64];
    char *end;

    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (strcmp(tmp, "+Inf") == 0 || strcmp(tmp, "-Inf") == 0 ||
        strcmp(tmp, "NaN") == 0)
        return true;
    strtod(tmp, &end);
    return *end == '\0';
}

/* Returns NULL when text is valid exposition, else the first bad line. */
static char *exposition_error(const char *text, int *nfamilies)
{
    static char bad[512];
    char fam[128] = "", help_for[128] = "", type[32] = "";
    char seen[64][128];
    int nseen = 0;
    const char *line = text;

    *nfamilies = 0;
    if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
        return "no final newline";
    while (*line) {
        const char *eol = strchr(line, '\n');
        size_t len = (size_t)(eol - line);
        char name[128];
        const char *p;
        bool has_le;

        snprintf(bad, sizeof(bad), "%.*s", (int)len, line);
        if (strncmp(line, "# HELP ", 7) == 0) {
            p = parse_name(line + 7, help_for, sizeof(help_for));
            if (p == NULL || *p != ' ')
                return bad;
            for (int i = 0; i < nseen; i++)
                if (strcmp(seen[i], help_for) == 0)
                    return bad; /* family repeated */
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            p = parse_name(line + 7, fam, sizeof(fam));
            if (p == NULL || *p != ' ' || strcmp(fam, help_for) != 0)
                return bad;
            snprintf(type, sizeof(type), "%.*s", (int)(eol - p - 1), p + 1);
            if (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0 &&
                strcmp(type, "histogram") != 0)
                return bad;
            if (nseen < 64)
                snprintf(seen[nseen++], sizeof(seen[0]), "%s", fam);
            (*nfamilies)++;
        } else if (line[0] == '#') {
            return bad;
        } else {
            p = parse_name(line, name, sizeof(name));
            if (p == NULL || fam[0] == '\0')
                return bad;
            p = parse_labels(p, &has_le);
            if (p == NULL || *p != ' ' || !parse_value(p + 1, (size_t)(eol - p - 1)))
                return bad;
            if (strcmp(type, "histogram") == 0) {
                size_t fl = strlen(fam);

                if (strncmp(name, fam, fl) != 0)
                    return bad;
                if (strcmp(name + fl, "_bucket") == 0) {
                    if (!has_le)
                        return bad;
                } else if (strcmp(name + fl, "_sum") != 0 &&
                           strcmp(name + fl, "_count") != 0) {
                    return bad;
                }
            } else if (strcmp(name, fam) != 0 || has_le) {
                return bad;
            }
        }
        line = eol + 1;
    }
    return NULL;
}

static char *render_valid(struct metrics *m)
{
    char *text = metrics_render(m);
    char *why;
    int n;

    assert_non_null(text);
    why = exposition_error(text, &n);
    if (why != NULL)
        fail_msg("invalid exposition line: \"%s\" in:\n%s", why, text);
    assert_int_equal(n, NEXPECTED);
    return text;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL) {
        print_error("%s", hay);
        fail_msg("\"%s\" not found in the text above", needle);
    }
}

static void assert_lacks(const char *hay, const char *needle)
{
    if (strstr(hay, needle) != NULL) {
        print_error("%s", hay);
        fail_msg("\"%s\" unexpectedly found in the text above", needle);
    }
}

/* ---- tests ---- */

static void test_every_metric_declared(void **st)
{
    struct metrics *m = NULL;
    char line[256];
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    text = render_valid(m);
    for (size_t i = 0; i < NEXPECTED; i++) {
        snprintf(line, sizeof(line), "# HELP %s ", expected[i].name);
        assert_contains(text, line);
        snprintf(line, sizeof(line), "# TYPE %s %s\n", expected[i].name,
                 expected[i].type);
        assert_contains(text, line);
    }
    /* Unlabeled metrics have a sample from the start. */
    assert_contains(text, "\ntandem_up 0\n");
    assert_contains(text, "\ntandem_dlq_depth 0\n");
    assert_contains(text, "\ntandem_journal_depth 0\n");
    assert_contains(text, "\ntandem_canary_latency_seconds_bucket{le=\"+Inf\"} 0\n");
    assert_contains(text, "\ntandem_canary_latency_seconds_count 0\n");
    /* Labeled ones have none until used. */
    assert_lacks(text, "\ntandem_changes_captured_total{");
    free(text);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_counters_and_gauges(void **st)
{
    struct metrics *m = NULL;
    char l[256];
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    assert_int_equal(metrics_labels(l, sizeof(l), "endpoint", "app", NULL), 0);
    metrics_add(m, "tandem_changes_captured_total", l, 3);
    metrics_add(m, "tandem_changes_captured_total", l, 2);
    metrics_add(m, "tandem_changes_captured_total", l, -1);     /* counters only grow */
    metrics_add(m, "tandem_changes_captured_total", l, NAN);
    metrics_add(m, "tandem_changes_captured_total", l, INFINITY);
    metrics_set(m, "tandem_changes_captured_total", l, 100);    /* not a gauge */
    metrics_add(m, "tandem_no_such_metric", l, 1);              /* ignored */
    metrics_set(m, "tandem_no_such_metric", NULL, 1);
    metrics_observe(m, "tandem_no_such_metric", NULL, 1);
    metrics_add(m, NULL, l, 1);
    metrics_add(NULL, "tandem_up", NULL, 1);

    assert_int_equal(metrics_labels(l, sizeof(l), "from", "app", "to", "crm", NULL), 0);
    assert_string_equal(l, "from=\"app\",to=\"crm\"");
    metrics_add(m, "tandem_changes_applied_total", l, 7);
    metrics_set(m, "tandem_lag_seconds", l, 0.25);
    metrics_set(m, "tandem_lag_seconds", l, 1.5);
    metrics_set(m, "tandem_up", NULL, 1);
    metrics_set(m, "tandem_dlq_depth", "", 4);
    metrics_add(m, "tandem_dlq_depth", "", -1);                 /* gauges may go down */
    metrics_set(m, "tandem_pg_slot_retained_bytes", "endpoint=\"app\"", 123456789012.0);
    metrics_set(m, "tandem_reconcile_drift", "mapping=\"c\",kind=\"missing_b\"", 0.1);

    /* Malformed label bodies would corrupt the output: ignored. */
    metrics_add(m, "tandem_changes_captured_total", "endpoint=app", 1);
    metrics_add(m, "tandem_changes_captured_total", "endpoint=\"a\nb\"", 1);
    metrics_add(m, "tandem_changes_captured_total", "endpoint=\"a\",", 1);
    metrics_add(m, "tandem_changes_captured_total", "endpoint=\"a\\x\"", 1);
    metrics_add(m, "tandem_changes_captured_total", "9x=\"a\"", 1);
    metrics_add(m, "tandem_changes_captured_total", "endpoint=\"unterminated", 1);

    text = render_valid(m);
    assert_contains(text, "\ntandem_changes_captured_total{endpoint=\"app\"} 5\n");
    assert_contains(text, "\ntandem_changes_applied_total{from=\"app\",to=\"crm\"} 7\n");
    assert_contains(text, "\ntandem_lag_seconds{from=\"app\",to=\"crm\"} 1.5\n");
    assert_contains(text, "\ntandem_up 1\n");
    assert_contains(text, "\ntandem_dlq_depth 3\n");
    assert_contains(text, "\ntandem_pg_slot_retained_bytes{endpoint=\"app\"} 123456789012\n");
    assert_contains(text, "\ntandem_reconcile_drift{mapping=\"c\",kind=\"missing_b\"} 0.1\n");
    assert_lacks(text, "no_such");
    assert_lacks(text, "endpoint=app");
    free(text);
    metrics_free(m);
}

static void test_series_sorted(void **st)
{
    struct metrics *m = NULL;
    char *text;
    const char *a, *b, *c;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    metrics_add(m, "tandem_stale_dropped_total", "endpoint=\"zeta\"", 1);
    metrics_add(m, "tandem_stale_dropped_total", "endpoint=\"alpha\"", 2);
    metrics_add(m, "tandem_stale_dropped_total", "endpoint=\"mid\"", 3);
    metrics_add(m, "tandem_stale_dropped_total", "endpoint=\"alpha\"", 2);
    text = render_valid(m);
    a = strstr(text, "tandem_stale_dropped_total{endpoint=\"alpha\"} 4\n");
    b = strstr(text, "tandem_stale_dropped_total{endpoint=\"mid\"} 3\n");
    c = strstr(text, "tandem_stale_dropped_total{endpoint=\"zeta\"} 1\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
    free(text);
    metrics_free(m);
}

static void test_histogram(void **st)
{
    struct metrics *m = NULL;
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, 0.005);
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, 0.01);  /* le is inclusive */
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, 0.7);
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, 59);
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, 120);
    metrics_observe(m, "tandem_canary_latency_seconds", NULL, NAN);   /* ignored */
    metrics_observe(m, "tandem_canary_latency_seconds", "le=\"1\"", 1); /* reserved */
    metrics_observe(m, "tandem_dlq_depth", NULL, 1);                  /* not a histogram */
    metrics_add(m, "tandem_canary_latency_seconds", NULL, 1);         /* not a counter */
    text = render_valid(m);
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"0.01\"} 2\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"0.025\"} 2\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"0.5\"} 2\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"1\"} 3\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"30\"} 3\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"60\"} 4\n");
    assert_contains(text, "tandem_canary_latency_seconds_bucket{le=\"+Inf\"} 5\n");
    assert_contains(text, "tandem_canary_latency_seconds_sum 179.715\n");
    assert_contains(text, "tandem_canary_latency_seconds_count 5\n");
    assert_contains(text, "\ntandem_dlq_depth 0\n");
    free(text);

    /* A labeled histogram series puts le after the caller's labels. */
    metrics_observe(m, "tandem_canary_latency_seconds", "mapping=\"c\"", 2);
    text = render_valid(m);
    assert_contains(text, "tandem_canary_latency_seconds_bucket{mapping=\"c\",le=\"2.5\"} 1\n");
    assert_contains(text, "tandem_canary_latency_seconds_sum{mapping=\"c\"} 2\n");
    assert_contains(text, "tandem_canary_latency_seconds_count{mapping=\"c\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_labels_helper(void **st)
{
    char l[64];
    char small[12];
    struct metrics *m = NULL;
    char *text;

    (void)st;
    assert_int_equal(metrics_labels(l, sizeof(l), NULL), 0);
    assert_string_equal(l, "");
    assert_int_equal(metrics_labels(l, sizeof(l), "endpoint", "a\"b\\c\nd", NULL), 0);
    assert_string_equal(l, "endpoint=\"a\\\"b\\\\c\\nd\"");
    assert_int_equal(metrics_labels(l, sizeof(l), "reason", NULL, NULL), 0);
    assert_string_equal(l, "reason=\"\"");

    assert_int_equal(metrics_labels(l, sizeof(l), "9bad", "x", NULL), -EINVAL);
    assert_string_equal(l, "");
    assert_int_equal(metrics_labels(l, sizeof(l), "__reserved", "x", NULL), -EINVAL);
    assert_int_equal(metrics_labels(l, sizeof(l), "a-b", "x", NULL), -EINVAL);
    assert_int_equal(metrics_labels(l, sizeof(l), "", "x", NULL), -EINVAL);

    /* k="v" is 5 bytes + NUL: fits exactly in 6, not in 5. */
    assert_int_equal(metrics_labels(small, 6, "k", "v", NULL), 0);
    assert_string_equal(small, "k=\"v\"");
    assert_int_equal(metrics_labels(small, 5, "k", "v", NULL), -ENOSPC);
    assert_string_equal(small, "");
    assert_int_equal(metrics_labels(small, sizeof(small), "k", "\"\"\"\"", NULL), -ENOSPC);
    assert_int_equal(metrics_labels(small, 0, "k", "v", NULL), -ENOSPC);

    /* An escaped value round-trips into valid exposition. */
    assert_int_equal(metrics_new(&m), 0);
    assert_int_equal(metrics_labels(l, sizeof(l), "endpoint", "we\"ird\\\nname", NULL), 0);
    metrics_add(m, "tandem_echo_suppressed_total", l, 1);
    text = render_valid(m);
    assert_contains(text, "tandem_echo_suppressed_total{endpoint=\"we\\\"ird\\\\\\nname\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_number_format(void **st)
{
    struct metrics *m = NULL;
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"b\"", 0.1);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"c\"", 1e20);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"d\"", -2.5);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"e\"", INFINITY);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"f\"", -INFINITY);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"g\"", NAN);
    metrics_set(m, "tandem_lag_seconds", "from=\"a\",to=\"h\"", 1.0 / 3.0);
    text = render_valid(m);
    assert_contains(text, "to=\"b\"} 0.1\n");
    assert_contains(text, "to=\"c\"} 1e+20\n");
    assert_contains(text, "to=\"d\"} -2.5\n");
    assert_contains(text, "to=\"e\"} +Inf\n");
    assert_contains(text, "to=\"f\"} -Inf\n");
    assert_contains(text, "to=\"g\"} NaN\n");
    assert_contains(text, "to=\"h\"} 0.33333333333333331\n");
    free(text);
    metrics_free(m);
}

#define NTHREADS 8
#define NITER 20000

static void *adder(void *arg)
{
    struct metrics *m = arg;

    for (int i = 0; i < NITER; i++) {
        metrics_add(m, "tandem_changes_applied_total", "from=\"a\",to=\"b\"", 1);
        metrics_observe(m, "tandem_canary_latency_seconds", NULL, 0.2);
        if (i % 1000 == 0)
            free(metrics_render(m));
    }
    return NULL;
}

static void test_threads(void **st)
{
    struct metrics *m = NULL;
    pthread_t t[NTHREADS];
    char want[128];
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder, m), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    text = render_valid(m);
    snprintf(want, sizeof(want),
             "tandem_changes_applied_total{from=\"a\",to=\"b\"} %d\n", NTHREADS * NITER);
    assert_contains(text, want);
    snprintf(want, sizeof(want), "tandem_canary_latency_seconds_count %d\n",
             NTHREADS * NITER);
    assert_contains(text, want);
    free(text);
    metrics_free(m);
}

static void test_many_series(void **st)
{
    struct metrics *m = NULL;
    char l[64];
    char *text;

    (void)st;
    assert_int_equal(metrics_new(&m), 0);
    for (int i = 0; i < 10000; i++) {
        char v[16];

        snprintf(v, sizeof(v), "k%d", i);
        assert_int_equal(metrics_labels(l, sizeof(l), "reason", v, NULL), 0);
        metrics_set(m, "tandem_parked_keys", l, i);
    }
    /* Bounded: past the per-metric cap new series are dropped. */
    text = render_valid(m);
    assert_contains(text, "tandem_parked_keys{reason=\"k0\"} 0\n");
    assert_lacks(text, "tandem_parked_keys{reason=\"k9999\"}");
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_metric_declared),
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_series_sorted),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_labels_helper),
        cmocka_unit_test(test_number_format),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_many_series),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
