/* swar.h: tests on 8 bytes at once in a 64-bit word (SIMD within a
 * register), for the JSON string scanners. Each answers "is any byte ..."
 * exactly: the borrow tricks give false positives only in bytes above a
 * true one. */
#ifndef TANDEM_SWAR_H
#define TANDEM_SWAR_H

#include <stdint.h>
#include <string.h>

#define SWAR_ONES UINT64_C(0x0101010101010101)
#define SWAR_HIGH UINT64_C(0x8080808080808080)

static inline uint64_t swar_load(const void *p)
{
    uint64_t x;

    memcpy(&x, p, sizeof(x));
    return x;
}

/* Nonzero when some byte of x equals c. */
static inline uint64_t swar_has_byte(uint64_t x, unsigned char c)
{
    uint64_t q = x ^ (SWAR_ONES * c);

    return (q - SWAR_ONES) & ~q & SWAR_HIGH;
}

/* Nonzero when some byte of x is below n (n <= 128). */
static inline uint64_t swar_has_less(uint64_t x, unsigned char n)
{
    return (x - SWAR_ONES * n) & ~x & SWAR_HIGH;
}

/* Nonzero when some byte of x must be escaped in a JSON string: '"', '\\'
 * or a control character. */
static inline uint64_t swar_json_special(uint64_t x)
{
    return swar_has_byte(x, '"') | swar_has_byte(x, '\\') | swar_has_less(x, 0x20);
}

#endif
