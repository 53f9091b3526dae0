/* manual.c: park the key until an operator decides (tandem conflicts
 * resolve); nothing is written on either side meanwhile. */
#include "resolver_int.h"

int rs_manual(struct rs *c)
{
    int rc = rs_park(c, "parked");

    rs_detail(c, "manual: parked until an operator decides");
    return rc;
}
