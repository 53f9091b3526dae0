/* backoff.c: jittered retry delays (see backoff.h). */
#include "backoff.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static _Thread_local uint64_t rng;

/* xorshift64: retry timing needs spread, not secrecy. */
static uint64_t rng_next(void)
{
    if (rng == 0) {
        struct timespec ts;

        if (getrandom(&rng, sizeof(rng), GRND_NONBLOCK) != sizeof(rng) || rng == 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                  ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ULL;
        }
    }
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

uint64_t backoff_jitter(uint64_t delay_ms)
{
    return delay_ms / 2 + rng_next() % (delay_ms - delay_ms / 2 + 1);
}
