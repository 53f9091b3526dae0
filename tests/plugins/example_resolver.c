/* example_resolver.c: an example tandem resolver plugin.
 *
 * Per field, the longer value wins (null is shorter than any text, a field
 * a side does not have is shorter still); equal lengths go to the bytewise
 * greater text. A record beats a delete. Every rule compares the two
 * values the same way, so swapping a and b gives the same record: both
 * directions converge.
 *
 * Build: cc -shared -fPIC -I<prefix>/include example_resolver.c -o example.so */
#include <string.h>

#include <tandem/resolver.h>

static const struct tandem_field *find(const struct tandem_record *r, const char *name)
{
    for (size_t i = 0; i < r->nfields; i++)
        if (strcmp(r->fields[i].name, name) == 0)
            return &r->fields[i];
    return NULL;
}

/* >0 when x beats y, <0 when y beats x, 0 when they are the same. */
static int compare(const struct tandem_field *x, const struct tandem_field *y)
{
    long lx = x == NULL ? -2 : x->is_null ? -1 : (long)strlen(x->value);
    long ly = y == NULL ? -2 : y->is_null ? -1 : (long)strlen(y->value);

    if (lx != ly)
        return lx > ly ? 1 : -1;
    if (lx < 0)
        return 0;
    return strcmp(x->value, y->value);
}

static int decide(void *host, struct tandem_resolve_output *out,
                  const struct tandem_field *w)
{
    return out->set_field(host, w->name, w->is_null ? NULL : w->value, w->is_null);
}

TANDEM_RESOLVER_EXPORT int tandem_resolver_abi_version(void)
{
    return TANDEM_RESOLVER_ABI_VERSION;
}

TANDEM_RESOLVER_EXPORT int tandem_resolve(const struct tandem_resolve_input *in,
                                          struct tandem_resolve_output *out)
{
    const struct tandem_record *a = &in->a, *b = &in->b;
    size_t from_a = 0, from_b = 0;

    if (in->abi_version != TANDEM_RESOLVER_ABI_VERSION) {
        strcpy(out->explanation, "unexpected abi version");
        return 1;
    }
    if (a->deleted || b->deleted) {
        out->choice = a->deleted && b->deleted ? TANDEM_CHOICE_DELETE :
                      a->deleted ? TANDEM_CHOICE_B : TANDEM_CHOICE_A;
        strcpy(out->explanation, "a record beats a delete");
        return 0;
    }
    /* Fields of a, then fields only b has. */
    for (size_t i = 0; i < a->nfields; i++) {
        const struct tandem_field *fa = &a->fields[i], *fb = find(b, fa->name);
        int cmp = compare(fa, fb);

        if (decide(out->host, out, cmp >= 0 ? fa : fb) != 0)
            return 1;
        if (cmp > 0)
            from_a++;
        else if (cmp < 0)
            from_b++;
    }
    for (size_t i = 0; i < b->nfields; i++) {
        if (find(a, b->fields[i].name) != NULL)
            continue;
        if (decide(out->host, out, &b->fields[i]) != 0)
            return 1;
        from_b++;
    }
    out->choice = TANDEM_CHOICE_MERGED;
    /* snprintf-free on purpose: a plugin need not link stdio. */
    strcpy(out->explanation, from_a && from_b ? "longer values from both sides" :
                             from_a ? "longer values from a" :
                             from_b ? "longer values from b" : "equal");
    return 0;
}
