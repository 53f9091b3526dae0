/* test_nameidx.c: the writer's name look-ups give the same answer as a
 * linear search whatever order rows name their fields in, hinted or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/pg/nameidx.h"

static long linear(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (long)i;
    return -1;
}

static void test_basic(void **ctx)
{
    static const char *const names[] = { "id", "Name", "email", "a", "zz", "id", "" };
    const size_t n = sizeof(names) / sizeof(names[0]);
    struct nameidx x;

    (void)ctx;
    assert_int_equal(nameidx_init(&x, names, n), 0);
    assert_int_equal(nameidx_find(&x, 0, "id"), 0);          /* repeated: first */
    assert_int_equal(nameidx_find(&x, 1, "Name"), 1);
    assert_int_equal(nameidx_find(&x, 1, "name"), -1);       /* case matters */
    assert_int_equal(nameidx_find(&x, 2, ""), 6);
    assert_int_equal(nameidx_find(&x, 3, "zz"), 4);
    assert_int_equal(nameidx_find(&x, 3, "zzz"), -1);
    assert_int_equal(nameidx_find(&x, 3, "0"), -1);          /* before every name */
    /* A hinted position asked for another name: the hint does not stick. */
    assert_int_equal(nameidx_find(&x, 3, "a"), 3);
    assert_int_equal(nameidx_find(&x, 3, "email"), 2);
    nameidx_free(&x);
    assert_int_equal(nameidx_init(&x, names, 0), 0);
    assert_int_equal(nameidx_find(&x, 0, "id"), -1);
    nameidx_free(&x);
}

/* Rows of 200 fields, in config order, reversed, shuffled, with unknown
 * names mixed in: every answer equals the linear search's. */
static void test_against_linear(void **ctx)
{
    enum { N = 200 };
    static char buf[N][16];
    const char *names[N], *row[N + 20];
    char unknown[20][16];
    struct nameidx x;
    uint32_t r = 7;

    (void)ctx;
    for (size_t i = 0; i < N; i++) {
        snprintf(buf[i], sizeof(buf[i]), "col_%zu", (i * 37) % N);
        names[i] = buf[i];
    }
    for (size_t i = 0; i < 20; i++)
        snprintf(unknown[i], sizeof(unknown[i]), "col_%zu", N + i);
    assert_int_equal(nameidx_init(&x, names, N), 0);
    for (int round = 0; round < 50; round++) {
        size_t n = 0;

        for (size_t i = 0; i < N; i++)
            row[n++] = names[round % 3 == 1 ? N - 1 - i : i];
        for (size_t i = 0; i < 20; i++)
            row[n++] = unknown[i];
        if (round % 3 == 2)
            for (size_t i = n - 1; i > 0; i--) {
                size_t j;
                const char *t;

                r = r * 1103515245u + 12345u;
                j = (r >> 8) % (i + 1);
                t = row[i];
                row[i] = row[j];
                row[j] = t;
            }
        for (size_t pos = 0; pos < n; pos++)
            assert_int_equal(nameidx_find(&x, pos, row[pos]), linear(names, N, row[pos]));
    }
    nameidx_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_against_linear),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
