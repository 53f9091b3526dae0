#include "nameidx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Before: strcmp order, a repeated name's first index first. */
static int before(const char *const *names, size_t i, size_t j)
{
    int c = strcmp(names[i], names[j]);

    return c < 0 || (c == 0 && i < j);
}

int nameidx_init(struct nameidx *x, const char *const *names, size_t n)
{
    memset(x, 0, sizeof(*x));
    x->names = names;
    x->n = n;
    if (n == 0)
        return 0;
    if ((x->sorted = malloc(n * sizeof(*x->sorted))) == NULL) {
        x->n = 0;               /* finds nothing */
        return -ENOMEM;
    }
    /* Insertion sort, once per connect: no global context for qsort. */
    for (size_t i = 0; i < n; i++) {
        size_t j = i;

        while (j > 0 && before(names, i, x->sorted[j - 1])) {
            x->sorted[j] = x->sorted[j - 1];
            j--;
        }
        x->sorted[j] = i;
    }
    return 0;
}

void nameidx_free(struct nameidx *x)
{
    free(x->sorted);
    free(x->hint);
    memset(x, 0, sizeof(*x));
}

static long search(const struct nameidx *x, const char *name)
{
    size_t lo = 0, hi = x->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(x->names[x->sorted[mid]], name);

        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < x->n && strcmp(x->names[x->sorted[lo]], name) == 0 ? (long)x->sorted[lo] : -1;
}

/* Room for a hint at pos; false when memory is short (then no hint). */
static int hint_room(struct nameidx *x, size_t pos)
{
    size_t *h, n;

    if (pos < x->nhint)
        return 1;
    n = pos + 1 > 2 * x->nhint ? pos + 1 : 2 * x->nhint;
    if ((h = realloc(x->hint, n * sizeof(*h))) == NULL)
        return 0;
    for (size_t i = x->nhint; i < n; i++)
        h[i] = (size_t)-1;
    x->hint = h;
    x->nhint = n;
    return 1;
}

long nameidx_find(struct nameidx *x, size_t pos, const char *name)
{
    long i;

    if (pos < x->nhint && x->hint[pos] < x->n && strcmp(x->names[x->hint[pos]], name) == 0)
        return (long)x->hint[pos];
    i = search(x, name);
    if (i >= 0 && hint_room(x, pos))
        x->hint[pos] = (size_t)i;
    return i;
}
