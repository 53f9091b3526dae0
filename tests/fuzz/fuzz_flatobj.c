/* fuzz_flatobj.c: libFuzzer target for the flat-object scanner
 * (resolver/flatobj.c), differential against jansson.
 *
 * The input is the fields text. When the scanner accepts it, json_loads()
 * must parse it to the same pairs (byte for byte) and canon_hash() must
 * equal canon_hash_flat(); a flatobj reused across inputs must agree with
 * a fresh one. When it bails, jansson (refusing duplicate keys) must not
 * find a flat object there either: bailing is safe, but only the bails
 * flatobj.h documents are meant. Any disagreement aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "resolver/canon.h"
#include "resolver/flatobj.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

/* As a writer keeps one: buffers reused across inputs. Reachable at exit,
 * so not a leak. */
static struct flatobj reused;

static bool is_flat(const json_t *j)
{
    const char *k;
    json_t *v;

    if (!json_is_object(j))
        return false;
    json_object_foreach((json_t *)j, k, v)
        if (!json_is_string(v) && !json_is_null(v))
            return false;
    return true;
}

static void check_same(const struct flatobj *a, const struct flatobj *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct flatobj_pair *x = &a->pairs[i], *y = &b->pairs[i];

        CHECK(x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0);
        CHECK(x->null == y->null && x->val_len == y->val_len);
        CHECK(x->null || memcmp(x->val, y->val, x->val_len) == 0);
    }
}

static void check_accepted(const struct flatobj *o, const char *z, size_t size)
{
    char hj[CANON_HASH_HEX + 1], hf[CANON_HASH_HEX + 1];
    json_t *j;

    CHECK(memchr(z, '\0', size) == NULL);
    j = json_loads(z, 0, NULL);         /* what the writer would call */
    CHECK(j != NULL && json_is_object(j) && json_object_size(j) == o->n);
    for (size_t i = 0; i < o->n; i++) {
        const struct flatobj_pair *p = &o->pairs[i];
        json_t *v = json_object_get(j, p->key);

        CHECK(v != NULL && strlen(p->key) == p->key_len);
        if (p->null) {
            CHECK(json_is_null(v) && p->val == NULL && p->val_len == 0);
        } else {
            CHECK(json_is_string(v) && json_string_length(v) == p->val_len);
            CHECK(memcmp(json_string_value(v), p->val, p->val_len) == 0);
            CHECK(p->val[p->val_len] == '\0');
        }
        CHECK(i == 0 || strcmp(o->sorted[i - 1]->key, o->sorted[i]->key) < 0);
    }
    canon_hash(j, hj);
    canon_hash_flat(o, hf);
    CHECK(strcmp(hj, hf) == 0);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct flatobj fresh = { 0 };
    char *z = malloc(size + 1);
    int rc, again;

    if (z == NULL)
        return 0;
    memcpy(z, data, size);
    z[size] = '\0';
    /* data itself, not z: libFuzzer's copy ends at size, so ASan sees any
     * read past len. */
    rc = flatobj_scan(&fresh, (const char *)data, size);
    again = flatobj_scan(&reused, (const char *)data, size);
    CHECK(rc == 0 || rc == 1);
    CHECK(again == rc);
    if (rc == 1) {
        check_accepted(&fresh, z, size);
        check_same(&fresh, &reused);
    } else if (memchr(data, '\0', size) == NULL) {
        json_t *j = json_loads(z, JSON_REJECT_DUPLICATES, NULL);

        CHECK(fresh.n == 0 && reused.n == 0);
        CHECK(j == NULL || !is_flat(j));
        json_decref(j);
    }
    flatobj_free(&fresh);
    free(z);
    return 0;
}
