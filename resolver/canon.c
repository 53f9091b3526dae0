#include "canon.h"
#include "flatobj.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Two 64-bit lanes over the item stream taken 8 bytes at a time, each a
 * multiply with a fold that brings high bits down, then murmur3's
 * finalizer: 128 bits to tell record versions apart, about eight times
 * faster than a byte-at-a-time hash. Not a security boundary. The value is
 * stored in shadow.hash: a change here needs a state migration that
 * recomputes it (state.c, schema 6). */
struct canon_h {
    uint64_t h1, h2;
};

#define CANON_H_INIT { UINT64_C(0x243f6a8885a308d3), UINT64_C(0x13198a2e03707344) }
#define K1 UINT64_C(0x9e3779b97f4a7c15)
#define K2 UINT64_C(0xc2b2ae3d27d4eb4f)

static inline uint64_t rotl64(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

static inline void mix_word(uint64_t *h1, uint64_t *h2, uint64_t w)
{
    *h1 = (*h1 ^ w) * K1;
    *h1 ^= *h1 >> 32;
    *h2 = rotl64(*h2 ^ w, 31) * K2;
}

/* Little-endian words whatever the host, so the stored hashes travel. */
static inline uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t w = 0;

    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return w;
}

/* One item: a word of its tag and length, then its bytes, the last word
 * zero-padded (the length says where the bytes end), so ("ab","c") and
 * ("a","bc") differ. */
static void canon_add_item(struct canon_h *f, const char *s, size_t n, char tag)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t h1 = f->h1, h2 = f->h2;
    size_t i = 0;

    mix_word(&h1, &h2, (uint64_t)n << 8 | (unsigned char)tag);
    for (; i + 8 <= n; i += 8)
        mix_word(&h1, &h2, load_le(p + i, 8));
    if (i < n)
        mix_word(&h1, &h2, load_le(p + i, n - i));
    f->h1 = h1;
    f->h2 = h2;
}

static uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    return k;
}

/* As "%016llx%016llx" of the finished lanes, without snprintf's cost. */
static void canon_hex(const struct canon_h *f, char out[CANON_HASH_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint64_t a = fmix64(f->h1), b = fmix64(f->h2);

    a += b;
    b += a;
    for (int i = 0; i < 16; i++) {
        out[i] = digits[a >> (60 - 4 * i) & 0xf];
        out[16 + i] = digits[b >> (60 - 4 * i) & 0xf];
    }
    out[CANON_HASH_HEX] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void canon_hash(const json_t *fields, char out[CANON_HASH_HEX + 1])
{
    struct canon_h f = CANON_H_INIT;
    size_t n = json_object_size(fields), i = 0;
    const char **names = calloc(n + 1, sizeof(*names));
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)fields, k, v)
        if (names != NULL)
            names[i++] = k;
    if (names != NULL)
        qsort(names, i, sizeof(*names), cmp_str);
    for (size_t j = 0; names != NULL && j < i; j++) {
        json_t *val = json_object_get(fields, names[j]);
        canon_add_item(&f, names[j], strlen(names[j]), 'k');
        if (json_is_null(val)) {
            canon_add_item(&f, "", 0, 'n');
        } else if (json_is_string(val)) {
            canon_add_item(&f, json_string_value(val), json_string_length(val), 's');
        } else {
            char *t = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            canon_add_item(&f, t ? t : "", t ? strlen(t) : 0, 'j');
            free(t);
        }
    }
    free(names);
    canon_hex(&f, out);
}

void canon_hash_flat(const struct flatobj *o, char out[CANON_HASH_HEX + 1])
{
    struct canon_h f = CANON_H_INIT;

    for (size_t i = 0; i < o->n; i++) {
        const struct flatobj_pair *p = o->sorted[i];

        canon_add_item(&f, p->key, p->key_len, 'k');
        if (p->null)
            canon_add_item(&f, "", 0, 'n');
        else
            canon_add_item(&f, p->val, p->val_len, 's');
    }
    canon_hex(&f, out);
}
