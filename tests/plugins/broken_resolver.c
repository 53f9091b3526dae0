/* broken_resolver.c: a plugin without tandem_resolve, for the loader test. */
#include <tandem/resolver.h>

TANDEM_RESOLVER_EXPORT int tandem_resolver_abi_version(void)
{
    return TANDEM_RESOLVER_ABI_VERSION;
}
