/* abi_mismatch_resolver.c: built against a future ABI, for the loader test. */
#include <tandem/resolver.h>

TANDEM_RESOLVER_EXPORT int tandem_resolver_abi_version(void)
{
    return TANDEM_RESOLVER_ABI_VERSION + 1;
}

TANDEM_RESOLVER_EXPORT int tandem_resolve(const struct tandem_resolve_input *in,
                                          struct tandem_resolve_output *out)
{
    (void)in;
    out->choice = TANDEM_CHOICE_A;
    return 0;
}
