/* lww.c: last_write_wins: the greater version wins the whole record;
 * exact ties go to the greater endpoint name (see resolver.h). */
#include "resolver_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *rs_collection(const struct cfg_side *s)
{
    return s->table != NULL ? s->table : s->resource != NULL ? s->resource : "";
}

static int rs_cmp_text(const char *x, const char *y)
{
    return strcmp(x != NULL ? x : "", y != NULL ? y : "");
}

/* Every step compares a property of each side the same way, so relabelling
 * a and b never changes which record wins. */
int rs_lww_winner(const struct rs *c, int *winner, char *why, size_t n)
{
    const struct cfg_mapping *m = c->m;
    int64_t va = resolve_version(m, c->s[RS_A]), vb = resolve_version(m, c->s[RS_B]);
    const char *ea = m->a.endpoint != NULL ? m->a.endpoint : "";
    const char *eb = m->b.endpoint != NULL ? m->b.endpoint : "";
    int cmp;
    char *da, *db;

    if (va != vb) {
        *winner = va > vb ? RS_A : RS_B;
        snprintf(why, n, "%s (%s) is newer: version %" PRId64 " > %" PRId64,
                 rs_letter_str(*winner), *winner == RS_A ? ea : eb,
                 va > vb ? va : vb, va > vb ? vb : va);
        return 0;
    }
    if ((cmp = rs_cmp_text(ea, eb)) != 0) {
        *winner = cmp > 0 ? RS_A : RS_B;
        snprintf(why, n, "versions tie at %" PRId64 "; endpoint %s > %s, %s wins",
                 va, cmp > 0 ? ea : eb, cmp > 0 ? eb : ea, rs_letter_str(*winner));
        return 0;
    }
    if ((cmp = rs_cmp_text(rs_collection(&m->a), rs_collection(&m->b))) != 0) {
        *winner = cmp > 0 ? RS_A : RS_B;
        snprintf(why, n, "versions and endpoints tie; collection %s > %s, %s wins",
                 rs_collection(cmp > 0 ? &m->a : &m->b),
                 rs_collection(cmp > 0 ? &m->b : &m->a), rs_letter_str(*winner));
        return 0;
    }
    if (c->s[RS_A]->deleted != c->s[RS_B]->deleted) {
        *winner = c->s[RS_A]->deleted ? RS_B : RS_A;
        snprintf(why, n, "versions, endpoints and collections tie; the record "
                 "on %s beats the delete", rs_letter_str(*winner));
        return 0;
    }
    da = rs_dump_side(c, RS_A);
    db = rs_dump_side(c, RS_B);
    if (da == NULL || db == NULL) {
        free(da);
        free(db);
        return -ENOMEM;
    }
    cmp = strcmp(da, db);
    *winner = cmp >= 0 ? RS_A : RS_B;
    snprintf(why, n, "versions, endpoints and collections tie; the record on %s "
             "has the greater canonical text", rs_letter_str(*winner));
    free(da);
    free(db);
    return 0;
}

int rs_lww(struct rs *c)
{
    char why[RESOLVE_DETAIL_MAX - 32];
    int w, rc;

    c->r->rule = "last_write_wins";
    if ((rc = rs_lww_winner(c, &w, why, sizeof(why))) != 0)
        return rc;
    rs_detail(c, "last_write_wins: %s", why);
    return rs_whole(c, w, "last_write_wins");
}
