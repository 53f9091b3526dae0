/* test_canary.c: canary send/arrival bookkeeping. */
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

#include "state/canary.h"
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
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-canary-XXXXXX",
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

struct cs {
    int n;
    struct canary_status c[4];
    char mapping[4][16];
    char token[4][16];
};

static int collect(const struct canary_status *c, void *arg)
{
    struct cs *l = arg;

    l->c[l->n] = *c;
    snprintf(l->mapping[l->n], 16, "%s", c->mapping);
    snprintf(l->token[l->n], 16, "%s", c->token ? c->token : "(null)");
    l->n++;
    return 0;
}

static void test_canary(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct cs l = {0};
    int64_t lat = 0;

    assert_int_equal(canary_get(fx->s, "customers", CANARY_A_TO_B, collect, &l, &e),
                     -ENOENT);
    assert_int_equal(canary_sent(fx->s, "customers", CANARY_A_TO_B, "t1", 0, &e), 0);
    assert_int_equal(canary_sent(fx->s, "customers", CANARY_B_TO_A, "u1", 1200, &e), 0);
    assert_int_equal(canary_get(fx->s, "customers", CANARY_A_TO_B, collect, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.c[0].sent_us, 1000);
    assert_int_equal(l.c[0].seen_us, 0);
    assert_int_equal(l.c[0].dir, CANARY_A_TO_B);
    assert_string_equal(l.token[0], "t1");

    assert_int_equal(canary_seen(fx->s, "customers", CANARY_A_TO_B, "t0", 1500,
                                 &lat, &e), -ESTALE);
    assert_int_equal(canary_seen(fx->s, "customers", CANARY_A_TO_B, "t1", 1500,
                                 &lat, &e), 0);
    assert_int_equal(lat, 500);
    assert_int_equal(canary_seen(fx->s, "customers", CANARY_A_TO_B, "t1", 1600,
                                 &lat, &e), -ESTALE);
    fx->now = 5000;
    assert_int_equal(canary_sent(fx->s, "customers", CANARY_A_TO_B, "t2", 0, &e), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(canary_list(fx->s, collect, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.c[0].dir, CANARY_A_TO_B);
    assert_string_equal(l.token[0], "t2");
    assert_int_equal(l.c[0].sent_us, 5000);
    assert_int_equal(l.c[0].seen_us, 0);            /* outstanding again */
    assert_int_equal(l.c[0].last_latency_us, 500);  /* kept */
    assert_int_equal(l.c[0].sent_count, 2);
    assert_int_equal(l.c[0].seen_count, 1);
    assert_int_equal(l.c[1].dir, CANARY_B_TO_A);
    assert_int_equal(l.c[1].sent_us, 1200);
    assert_string_equal(canary_dir_name(CANARY_B_TO_A), "b_to_a");
    assert_int_equal(canary_sent(fx->s, "customers", (enum canary_dir)5, "x", 0, &e),
                     -EINVAL);
    assert_int_equal(canary_seen(fx->s, "customers", CANARY_B_TO_A, "u1", 0, NULL,
                                 &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_canary, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
