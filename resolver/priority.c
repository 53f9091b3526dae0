/* priority.c: source_priority: the configured side wins the whole record. */
#include "resolver_int.h"

int rs_priority(struct rs *c)
{
    int w = c->m->priority == 'b' ? RS_B : RS_A;
    const char *ep = w == RS_A ? c->m->a.endpoint : c->m->b.endpoint;

    c->r->rule = "source_priority";
    rs_detail(c, "source_priority: %s (%s) has priority", rs_letter_str(w),
              ep != NULL ? ep : "");
    return rs_whole(c, w, "source_priority");
}
