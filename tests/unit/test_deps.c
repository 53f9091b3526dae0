/* Unit tests for daemon/deps.c: the cycle search over declared and
 * discovered dependencies. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/deps.h"

struct seen {
    size_t n, len[8], cycle[8][8];
};

static void keep(const size_t *cycle, size_t len, void *arg)
{
    struct seen *s = arg;

    if (s->n < 8 && len <= 8) {
        memcpy(s->cycle[s->n], cycle, len * sizeof(*cycle));
        s->len[s->n++] = len;
    }
}

static void test_no_cycle(void **st)
{
    struct dep_edge e[] = { { 1, 0 }, { 2, 1 }, { 3, 1 }, { 3, 0 } };
    struct seen s = { 0 };

    (void)st;
    assert_int_equal(deps_cycles(4, e, 4, true, keep, &s), 0);
    assert_int_equal(s.n, 0);
}

static void test_cycle_in_order(void **st)
{
    /* 0 waits for 2, 2 for 1, 1 for 0. */
    struct dep_edge e[] = { { 0, 2 }, { 2, 1 }, { 1, 0 }, { 3, 0 } };
    struct seen s = { 0 };

    (void)st;
    assert_int_equal(deps_cycles(4, e, 4, true, keep, &s), 1);
    assert_int_equal(s.len[0], 3);
    assert_int_equal(s.cycle[0][0], 0);
    assert_int_equal(s.cycle[0][1], 2);
    assert_int_equal(s.cycle[0][2], 1);
}

static void test_self_loops(void **st)
{
    struct dep_edge e[] = { { 1, 1 } };
    struct seen s = { 0 };

    (void)st;
    assert_int_equal(deps_cycles(2, e, 1, false, keep, &s), 0);
    assert_int_equal(deps_cycles(2, e, 1, true, keep, &s), 1);
    assert_int_equal(s.len[0], 1);
    assert_int_equal(s.cycle[0][0], 1);
}

static void test_two_cycles_and_bad_edges(void **st)
{
    struct dep_edge e[] = { { 0, 1 }, { 1, 0 }, { 2, 3 }, { 3, 2 } };
    struct dep_edge bad[] = { { 0, 9 } };
    struct seen s = { 0 };

    (void)st;
    assert_int_equal(deps_cycles(4, e, 4, true, keep, &s), 2);
    assert_int_equal(deps_cycles(4, bad, 1, true, keep, &s), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_cycle),
        cmocka_unit_test(test_cycle_in_order),
        cmocka_unit_test(test_self_loops),
        cmocka_unit_test(test_two_cycles_and_bad_edges),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
