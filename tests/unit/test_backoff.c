/* test_backoff.c: jittered retry delays stay within [d/2, d] and spread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../daemon/backoff.h"

static void test_bounds(void **state)
{
    static const uint64_t delays[] = { 0, 1, 2, 3, 500, 1000, 30000, UINT32_MAX };

    (void)state;
    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++)
        for (int n = 0; n < 2000; n++) {
            uint64_t w = backoff_jitter(delays[i]);

            assert_true(w >= delays[i] / 2);
            assert_true(w <= delays[i]);
        }
}

/* Two processes that failed together must not retry together: the draws
 * cover the range instead of repeating one value. */
static void test_spread(void **state)
{
    int low = 0, high = 0;
    uint64_t first = backoff_jitter(1000), other = 0;

    (void)state;
    for (int n = 0; n < 4000; n++) {
        uint64_t w = backoff_jitter(1000);

        if (w < 625)
            low++;
        else if (w > 875)
            high++;
        if (w != first)
            other++;
    }
    assert_true(low > 500 && high > 500);       /* each quarter ~1000 */
    assert_true(other > 3900);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_spread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
