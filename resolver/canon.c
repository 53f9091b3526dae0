#include "canon.h"
#include "flatobj.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An FNV-1a lane and a multiply-xorshift lane give 128 bits: enough to
 * tell record versions apart; this is not a security boundary. */
struct fnv2 {
    uint64_t h1, h2;
};

#define FNV2_INIT { UINT64_C(0xcbf29ce484222325), UINT64_C(0x84222325cbf29ce4) }

/* Locals, not f->h1/h2: b may alias *f, which forced a store per byte. */
static void fnv_add(struct fnv2 *f, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h1 = f->h1, h2 = f->h2;

    for (size_t i = 0; i < n; i++) {
        h1 = (h1 ^ b[i]) * UINT64_C(0x100000001b3);
        h2 = (h2 ^ b[i]) * UINT64_C(0x9e3779b97f4a7c15);
        h2 ^= h2 >> 29;
    }
    f->h1 = h1;
    f->h2 = h2;
}

/* Length-prefixed, so ("ab","c") and ("a","bc") differ. */
static void fnv_add_item(struct fnv2 *f, const char *s, size_t n, char tag)
{
    uint64_t len = n;

    fnv_add(f, &tag, 1);
    fnv_add(f, &len, sizeof(len));
    fnv_add(f, s, n);
}

/* As "%016llx%016llx", without snprintf's cost on the hot path. */
static void fnv_hex(const struct fnv2 *f, char out[CANON_HASH_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < 16; i++) {
        out[i] = digits[f->h1 >> (60 - 4 * i) & 0xf];
        out[16 + i] = digits[f->h2 >> (60 - 4 * i) & 0xf];
    }
    out[CANON_HASH_HEX] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void canon_hash(const json_t *fields, char out[CANON_HASH_HEX + 1])
{
    struct fnv2 f = FNV2_INIT;
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
        fnv_add_item(&f, names[j], strlen(names[j]), 'k');
        if (json_is_null(val)) {
            fnv_add_item(&f, "", 0, 'n');
        } else if (json_is_string(val)) {
            fnv_add_item(&f, json_string_value(val), json_string_length(val), 's');
        } else {
            char *t = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            fnv_add_item(&f, t ? t : "", t ? strlen(t) : 0, 'j');
            free(t);
        }
    }
    free(names);
    fnv_hex(&f, out);
}

void canon_hash_flat(const struct flatobj *o, char out[CANON_HASH_HEX + 1])
{
    struct fnv2 f = FNV2_INIT;

    for (size_t i = 0; i < o->n; i++) {
        const struct flatobj_pair *p = o->sorted[i];

        fnv_add_item(&f, p->key, p->key_len, 'k');
        if (p->null)
            fnv_add_item(&f, "", 0, 'n');
        else
            fnv_add_item(&f, p->val, p->val_len, 's');
    }
    fnv_hex(&f, out);
}
