/* field_merge.c: three-way merge against the shadow, field by field; the
 * fallback decides fields changed on both sides, and whole records where
 * there is nothing to merge against (see resolver.h). */
#include "resolver_int.h"

#include <errno.h>
#include <stdio.h>

/* The fallback decides the whole record. */
static int rs_fallback_whole(struct rs *c, const char *why)
{
    char inner[RESOLVE_DETAIL_MAX];
    int rc;

    switch (c->m->fallback) {
    case CFG_STRAT_LWW:
        rc = rs_lww(c);
        break;
    case CFG_STRAT_PRIORITY:
        rc = rs_priority(c);
        break;
    case CFG_STRAT_MANUAL:
        rc = rs_manual(c);
        break;
    default:
        return rs_fail(c, -EINVAL, "resolve %s: field_merge fallback %s is not "
                       "supported", c->key, config_strategy_name(c->m->fallback));
    }
    if (rc != 0)
        return rc;
    if (c->r->outcome == RESOLVE_DECIDED)
        c->r->rule = "field_merge";
    snprintf(inner, sizeof(inner), "%s", c->r->detail);
    rs_detail(c, "field_merge: %s, fallback %s", why, inner);
    return 0;
}

/* The record-level one-side rule: only side w changed; take its state. */
static int rs_take_changed(struct rs *c, int w, const char *why)
{
    c->r->rule = "field_merge";
    rs_detail(c, "field_merge: %s; only %s changed", why, rs_letter_str(w));
    return rs_whole(c, w, "one_side_changed");
}

/* True when side i's record equals base field by field. */
static bool rs_unchanged(const struct rs *c, int side)
{
    for (size_t i = 0; i < c->nnames; i++)
        if (!rs_vequal(rs_eff(c, side, c->names[i], NULL), rs_basev(c, c->names[i])))
            return false;
    return true;
}

int rs_field_merge(struct rs *c)
{
    const struct cfg_mapping *m = c->m;
    bool del_a = c->s[RS_A]->deleted, del_b = c->s[RS_B]->deleted;
    char lww_why[RESOLVE_DETAIL_MAX - 128] = "";
    int fb = -1, rc = 0;   /* fallback's winning side, once needed */
    size_t n_a = 0, n_b = 0, n_fb = 0;

    if (c->base == NULL)
        return rs_fallback_whole(c, "no base");
    if (c->base->tombstone) {
        if (del_a != del_b)
            return rs_take_changed(c, del_a ? RS_B : RS_A, "base is a tombstone");
        return rs_fallback_whole(c, "both sides recreated a deleted record");
    }
    if (del_a || del_b) {
        int other = del_a ? RS_B : RS_A;

        if (rs_unchanged(c, other))
            return rs_take_changed(c, 1 - other, "delete against an unchanged record");
        return rs_fallback_whole(c, "delete against an update");
    }
    c->r->rule = "field_merge";
    for (size_t i = 0; i < c->nnames && rc == 0; i++) {
        const char *n = c->names[i];
        bool sa, sb;
        const json_t *va = rs_eff(c, RS_A, n, &sa), *vb = rs_eff(c, RS_B, n, &sb);
        const json_t *vo = rs_basev(c, n);

        if (rs_vequal(va, vb)) {
            if (va == NULL)
                continue;
            rc = rs_set(c, n, rs_pick_equal(va, vb));
            if (rc == 0)
                rc = rs_explain(c, n, !sa && !sb ? "base" : "both_equal",
                                !sa && !sb ? "unchanged" : "equal");
        } else if (rs_vequal(va, vo) || rs_vequal(vb, vo)) {
            int w = rs_vequal(va, vo) ? RS_B : RS_A;

            if (w == RS_A)
                n_a++;
            else
                n_b++;
            rc = rs_set(c, n, rs_eff(c, w, n, NULL));
            if (rc == 0)
                rc = rs_explain(c, n, rs_letter_str(w), "one_side_changed");
        } else {
            if (fb < 0) {
                switch (m->fallback) {
                case CFG_STRAT_LWW:
                    rc = rs_lww_winner(c, &fb, lww_why, sizeof(lww_why));
                    break;
                case CFG_STRAT_PRIORITY:
                    fb = m->priority == 'b' ? RS_B : RS_A;
                    snprintf(lww_why, sizeof(lww_why), "%s has priority",
                             rs_letter_str(fb));
                    break;
                case CFG_STRAT_MANUAL:
                    rc = rs_park(c, "parked");
                    rs_detail(c, "field_merge: field %s changed on both sides, "
                              "fallback manual: parked", n);
                    return rc;
                default:
                    return rs_fail(c, -EINVAL, "resolve %s: field_merge fallback "
                                   "%s is not supported", c->key,
                                   config_strategy_name(m->fallback));
                }
                if (rc != 0)
                    break;
            }
            n_fb++;
            rc = rs_set(c, n, rs_eff(c, fb, n, NULL));
            if (rc == 0)
                rc = rs_explain(c, n, rs_letter_str(fb), config_strategy_name(m->fallback));
        }
    }
    if (rc != 0)
        return rc;
    if (c->r->fields == NULL && (c->r->fields = json_object()) == NULL)
        return -ENOMEM;
    if (n_fb > 0)
        rs_detail(c, "field_merge: %zu field(s) from a, %zu from b, %zu changed on "
                  "both sides by fallback %s (%s)", n_a, n_b, n_fb,
                  config_strategy_name(m->fallback), lww_why);
    else
        rs_detail(c, "field_merge: %zu field(s) from a, %zu from b", n_a, n_b);
    return 0;
}
