/* nameidx.h: finds a name among a fixed list of names in O(1) when rows
 * come with their names in the same order as the row before (what capture
 * writes), else by binary search. For the writer's per-row look-ups of
 * mapped fields and column types, which were linear, so O(columns²) per
 * row of a wide table. */
#ifndef TANDEM_NAMEIDX_H
#define TANDEM_NAMEIDX_H

#include <stddef.h>

struct nameidx {
    const char *const *names;   /* borrowed; must outlive the index */
    size_t n;
    size_t *sorted;             /* indices into names, in strcmp order */
    size_t *hint;               /* per position in a row: the index found last */
    size_t nhint;
};

/* Indexes names[0..n) (names may repeat: the first is found). 0, or
 * -ENOMEM (then the index finds nothing). */
int nameidx_init(struct nameidx *x, const char *const *names, size_t n);
void nameidx_free(struct nameidx *x);

/* The index of name, or -1; pos is the name's position in the row being
 * read (0, 1, ...), which keys the hint. */
long nameidx_find(struct nameidx *x, size_t pos, const char *name);

#endif
