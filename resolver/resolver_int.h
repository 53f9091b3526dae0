/* resolver_int.h: what the strategy files share; not part of the API. */
#ifndef TANDEM_RESOLVER_INT_H
#define TANDEM_RESOLVER_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "resolver.h"

enum { RS_A = 0, RS_B = 1 };

/* One resolve() call. */
struct rs {
    const struct cfg_mapping *m;
    const struct resolver_plugin *plugin;
    const char *key;
    const struct resolve_base *base;    /* NULL: no shadow yet */
    const json_t *basef;                /* base record; NULL when none or
                                         * a tombstone */
    const struct resolve_side *s[2];
    const char **names;                 /* sorted union of field names */
    size_t nnames;
    struct resolve_result *r;
};

static inline char rs_letter(int side)
{
    return side == RS_A ? 'a' : 'b';
}

static inline const char *rs_letter_str(int side)
{
    return side == RS_A ? "a" : "b";
}

/* Side i's value of name: what it sent, else the base value; NULL when
 * neither has it (absent). *sent (may be NULL) tells which. */
const json_t *rs_eff(const struct rs *c, int side, const char *name, bool *sent);

/* The base record's value of name, NULL when absent. */
const json_t *rs_basev(const struct rs *c, const char *name);

/* Absent == absent, null == null, text by resolve_values_equal. */
bool rs_vequal(const json_t *x, const json_t *y);

/* Of two equal values, the bytewise smaller text (order-independent). */
const json_t *rs_pick_equal(const json_t *x, const json_t *y);

/* Sets name in the result record to a copy of v (string or null). */
int rs_set(struct rs *c, const char *name, const json_t *v);

/* Appends an explanation entry; field NULL means the whole record,
 * taken NULL means JSON null. */
int rs_explain(struct rs *c, const char *field, const char *taken,
               const char *rule);

/* Sets out->detail (truncating). */
void rs_detail(struct rs *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fails the call: outcome error, code returned. */
int rs_fail(struct rs *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Result: side w's whole state (record or delete); fields w lacks are
 * filled from the other side. rule names the per-field rule. */
int rs_whole(struct rs *c, int w, const char *rule);

/* Result: delete. taken is "a", "b", "both_equal" or "merged". */
int rs_delete(struct rs *c, const char *taken, const char *rule);

/* Outcome park: nothing written; explanation marks the differing fields. */
int rs_park(struct rs *c, const char *rule);

/* Canonical JSON text of side i's effective record (sorted keys, compact);
 * NULL when deleted or no memory. Caller frees. */
char *rs_dump_side(const struct rs *c, int side);

/* Strategies; each sets c->r->rule, winner, detail. */
int rs_lww_winner(const struct rs *c, int *winner, char *why, size_t n);
int rs_lww(struct rs *c);
int rs_priority(struct rs *c);
int rs_field_merge(struct rs *c);
int rs_manual(struct rs *c);
int rs_plugin(struct rs *c);

#endif
