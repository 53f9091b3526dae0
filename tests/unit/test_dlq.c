/* test_dlq.c: dead-letter queue and parked keys. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "state/dlq.h"
#include "state/state.h"

struct fx {
    char dir[256];
    char path[300];
    int64_t now;
    struct state *s;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag; (void)f;
    return remove(p);
}

static int64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->now;
}

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");
    struct err e = {0};

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-dlq-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    assert_int_equal(state_open(&fx->s, fx->path, STATE_EXCLUSIVE, &e), 0);
    fx->now = 1000;
    state_set_clock(fx->s, fake_clock, fx);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    struct fx *fx = *ctx;

    state_close(fx->s);
    nftw(fx->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

struct dl {
    int n;
    int64_t id[8];
    enum dlq_status status[8];
    int attempts[8];
    int64_t resolved[8];
    int64_t retry_req[8];
    char error[8][48];
    char key[8][16];
};

static int collect(const struct dlq_entry *d, void *arg)
{
    struct dl *l = arg;

    l->id[l->n] = d->id;
    l->status[l->n] = d->status;
    l->attempts[l->n] = d->attempts;
    l->resolved[l->n] = d->resolved_ts_us;
    l->retry_req[l->n] = d->retry_requested_us;
    snprintf(l->error[l->n], 48, "%s", d->error);
    snprintf(l->key[l->n], 16, "%s", d->key ? d->key : "(null)");
    l->n++;
    return 0;
}

static int check_full(const struct dlq_entry *d, void *arg)
{
    (void)arg;
    assert_string_equal(d->mapping, "customers");
    assert_string_equal(d->key, "[\"1\"]");
    assert_string_equal(d->source, "app");
    assert_string_equal(d->target, "crm");
    assert_int_equal(d->change_seq, 17);
    assert_int_equal(d->commit_seq, 4);
    assert_string_equal(d->change, "{\"op\":\"U\"}");
    assert_string_equal(d->error, "422 unprocessable: email invalid");
    assert_int_equal(d->attempts, 1);
    assert_int_equal(d->status, DLQ_OPEN);
    assert_int_equal(d->ts_us, 1000);
    return 0;
}

static void test_dlq(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct dl l = {0};
    int64_t n = -1;
    struct dlq_entry d1 = {
        .mapping = "customers", .key = "[\"1\"]", .source = "app",
        .target = "crm", .change_seq = 17, .commit_seq = 4,
        .change = "{\"op\":\"U\"}", .error = "422 unprocessable: email invalid",
        .attempts = 1
    };
    struct dlq_entry d2 = {
        .mapping = "customers", .key = NULL, .target = "app",
        .change = "{\"name\":", .error = "record without a key"
    };
    struct dlq_entry d3 = {
        .mapping = "orders", .key = "[\"9\"]", .target = "crm",
        .error = "503 after 10 attempts", .attempts = 10
    };
    struct dlq_entry bad = { .mapping = "customers", .target = "crm" };

    assert_int_equal(dlq_count_open(fx->s, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dlq_add(fx->s, &d1, &e), 0);
    fx->now = 2000;
    assert_int_equal(dlq_add(fx->s, &d2, &e), 0);
    assert_int_equal(dlq_add(fx->s, &d3, &e), 0);
    assert_int_equal(dlq_add(fx->s, &bad, &e), -EINVAL);
    assert_true(d1.id > 0 && d2.id > d1.id && d3.id > d2.id);
    assert_int_equal(d1.ts_us, 1000);
    assert_int_equal(dlq_get(fx->s, d1.id, check_full, NULL, &e), 0);
    assert_int_equal(dlq_get(fx->s, 999, check_full, NULL, &e), -ENOENT);
    assert_int_equal(dlq_count_open(fx->s, &n, &e), 0);
    assert_int_equal(n, 3);

    assert_int_equal(dlq_list(fx->s, false, 0, collect, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.id[0], d1.id);   /* oldest first */
    assert_string_equal(l.key[1], "(null)");

    /* Operator asks for a retry; the daemon fails once, then succeeds. */
    fx->now = 3000;
    assert_int_equal(dlq_request_retry(fx->s, d1.id, &e), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(dlq_list_retry_requested(fx->s, collect, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], d1.id);
    assert_int_equal(l.retry_req[0], 3000);
    assert_int_equal(dlq_retry_failed(fx->s, d1.id, "422 again", &e), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(dlq_list_retry_requested(fx->s, collect, &l, &e), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(dlq_get(fx->s, d1.id, collect, &l, &e), 0);
    assert_int_equal(l.attempts[0], 2);
    assert_string_equal(l.error[0], "422 again");
    assert_int_equal(l.status[0], DLQ_OPEN);
    assert_int_equal(dlq_request_retry(fx->s, d1.id, &e), 0);
    fx->now = 4000;
    assert_int_equal(dlq_mark_retried(fx->s, d1.id, &e), 0);
    assert_int_equal(dlq_mark_dropped(fx->s, d2.id, &e), 0);
    assert_int_equal(dlq_mark_dropped(fx->s, d2.id, &e), -EALREADY);
    assert_non_null(strstr(e.msg, "dropped"));
    assert_int_equal(dlq_mark_retried(fx->s, 999, &e), -ENOENT);
    assert_int_equal(dlq_request_retry(fx->s, d1.id, &e), -EALREADY);
    assert_int_equal(dlq_retry_failed(fx->s, d2.id, "x", &e), -EALREADY);

    assert_int_equal(dlq_count_open(fx->s, &n, &e), 0);
    assert_int_equal(n, 1);
    memset(&l, 0, sizeof(l));
    assert_int_equal(dlq_list(fx->s, false, 0, collect, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], d3.id);
    memset(&l, 0, sizeof(l));
    assert_int_equal(dlq_list(fx->s, true, 0, collect, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.status[0], DLQ_RETRIED);
    assert_int_equal(l.attempts[0], 3);
    assert_int_equal(l.resolved[0], 4000);
    assert_int_equal(l.status[1], DLQ_DROPPED);
    assert_int_equal(l.status[2], DLQ_OPEN);
    assert_int_equal(l.resolved[2], 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(dlq_list(fx->s, true, 2, collect, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(dlq_status_name(DLQ_RETRIED), "retried");
}

struct pl {
    int n;
    char key[8][16];
    char reason[8][16];
    int64_t since[8];
    int64_t dlq_id[8];
};

static int collect_parked(const struct parked_key *p, void *arg)
{
    struct pl *l = arg;

    snprintf(l->key[l->n], 16, "%s", p->key);
    snprintf(l->reason[l->n], 16, "%s", p->reason);
    l->since[l->n] = p->since_us;
    l->dlq_id[l->n] = p->dlq_id;
    l->n++;
    return 0;
}

static int collect_reason(const char *reason, int64_t count, void *arg)
{
    struct pl *l = arg;

    snprintf(l->reason[l->n], 16, "%s", reason);
    l->since[l->n] = count;
    l->n++;
    return 0;
}

static void test_parked(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct pl l = {0};
    bool parked = true;
    int64_t since = 0, n = -1;
    struct parked_key p = {
        .mapping = "orders", .key = "[\"7\"]", .reason = "dependency",
        .target = "crm", .detail = "customers [\"5\"] missing"
    };

    assert_int_equal(parked_is_parked(fx->s, "customers", "[\"1\"]", &parked,
                                      &since, &e), 0);
    assert_false(parked);
    assert_int_equal(parked_park(fx->s, "customers", "[\"1\"]", "dlq", 500, &e), 0);
    fx->now = 1500;
    assert_int_equal(parked_park_ex(fx->s, &p, &e), 0);
    assert_int_equal(parked_park(fx->s, "customers", "[\"2\"]", "dlq", 0, &e), 0);
    assert_int_equal(parked_park(fx->s, "customers", NULL, "dlq", 0, &e), -EINVAL);
    assert_int_equal(parked_is_parked(fx->s, "customers", "[\"1\"]", &parked,
                                      &since, &e), 0);
    assert_true(parked);
    assert_int_equal(since, 500);
    /* Parking again keeps the original time and takes the new reason. */
    p.reason = "dlq";
    p.dlq_id = 42;
    p.since_us = 9999;
    fx->now = 2000;
    assert_int_equal(parked_park_ex(fx->s, &p, &e), 0);
    assert_int_equal(parked_is_parked(fx->s, "orders", "[\"7\"]", &parked, &since, &e), 0);
    assert_true(parked);
    assert_int_equal(since, 1500);

    assert_int_equal(parked_count(fx->s, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(parked_list(fx->s, NULL, collect_parked, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.key[0], "[\"1\"]");   /* oldest first */
    assert_int_equal(l.dlq_id[1] + l.dlq_id[2], 42);
    memset(&l, 0, sizeof(l));
    assert_int_equal(parked_list(fx->s, "orders", collect_parked, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.reason[0], "dlq");
    assert_int_equal(l.dlq_id[0], 42);

    assert_int_equal(parked_park(fx->s, "orders", "[\"8\"]", "dependency", 0, &e), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(parked_count_by_reason(fx->s, collect_reason, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.reason[0], "dependency");
    assert_int_equal(l.since[0], 1);
    assert_string_equal(l.reason[1], "dlq");
    assert_int_equal(l.since[1], 3);

    assert_int_equal(parked_unpark(fx->s, "customers", "[\"1\"]", &e), 0);
    assert_int_equal(parked_unpark(fx->s, "customers", "[\"1\"]", &e), -ENOENT);
    assert_int_equal(parked_is_parked(fx->s, "customers", "[\"1\"]", &parked,
                                      NULL, &e), 0);
    assert_false(parked);
    assert_int_equal(parked_count(fx->s, &n, &e), 0);
    assert_int_equal(n, 3);
}

/* The same journal change dead-lettered again (re-read after a crash) is
 * one entry; once retried, a new failure of it is a new one; a waiting
 * entry is not counted as DLQ depth but keeps the key's count. */
static void test_dlq_same_change(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    int64_t n = -1, first;
    struct dlq_entry d = {
        .mapping = "invoices", .key = "[\"7\"]", .source = "crm", .target = "app",
        .change_seq = 42, .change = "{\"op\":\"I\",\"key\":[\"7\"],\"fields\":{},"
        "\"source\":\"crm\"}", .error = "foreign key", .status = DLQ_WAITING
    };

    assert_int_equal(dlq_add(fx->s, &d, &e), 0);
    first = d.id;
    assert_int_equal(dlq_add(fx->s, &d, &e), 0);
    assert_int_equal(d.id, first);
    assert_int_equal(dlq_count_open(fx->s, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dlq_count_open_key(fx->s, "invoices", "[\"7\"]", &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(dlq_set_open(fx->s, first, "parent missing", &e), 0);
    assert_int_equal(dlq_count_open(fx->s, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(dlq_mark_retried(fx->s, first, &e), 0);
    d.status = DLQ_OPEN;
    assert_int_equal(dlq_add(fx->s, &d, &e), 0);
    assert_true(d.id > first);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_dlq),
        T(test_parked),
        T(test_dlq_same_change),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
