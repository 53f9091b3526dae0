/* deps.c: the dependency graph between mappings; see deps.h. */
#include "deps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Edges of node v, in the order given: [first[v], first[v + 1]). */
struct adjacency {
    size_t *first, *to;
};

static int adjacency_build(size_t n, const struct dep_edge *edges, size_t nedges,
                           struct adjacency *a)
{
    size_t *fill;

    a->first = calloc(n + 1, sizeof(size_t));
    a->to = calloc(nedges ? nedges : 1, sizeof(size_t));
    fill = calloc(n + 1, sizeof(size_t));
    if (a->first == NULL || a->to == NULL || fill == NULL) {
        free(fill);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nedges; i++)
        a->first[edges[i].child + 1]++;
    for (size_t v = 0; v < n; v++)
        a->first[v + 1] += a->first[v];
    for (size_t i = 0; i < nedges; i++) {
        size_t v = edges[i].child;
        a->to[a->first[v] + fill[v]++] = edges[i].parent;
    }
    free(fill);
    return 0;
}

int deps_cycles(size_t n, const struct dep_edge *edges, size_t nedges, bool self_loops,
                deps_cycle_fn fn, void *arg)
{
    struct adjacency a = { 0 };
    unsigned char *color = calloc(n ? n : 1, 1);   /* 0 new, 1 on the path, 2 done */
    size_t *stk = calloc(n ? n : 1, sizeof(size_t));
    size_t *next = calloc(n ? n : 1, sizeof(size_t));  /* next edge to follow */
    size_t *pos = calloc(n ? n : 1, sizeof(size_t));   /* where on the path */
    int found = -EINVAL;

    for (size_t i = 0; i < nedges; i++)
        if (edges[i].child >= n || edges[i].parent >= n)
            goto out;
    found = -ENOMEM;
    if (color == NULL || stk == NULL || next == NULL || pos == NULL ||
        adjacency_build(n, edges, nedges, &a) != 0)
        goto out;
    found = 0;
    for (size_t root = 0; root < n; root++) {
        size_t sp = 1;

        if (color[root] != 0)
            continue;
        color[root] = 1;
        stk[0] = root;
        pos[root] = 0;
        next[0] = a.first[root];
        while (sp > 0) {
            size_t v = stk[sp - 1], w;

            if (next[sp - 1] == a.first[v + 1]) {
                color[stk[--sp]] = 2;
                continue;
            }
            w = a.to[next[sp - 1]++];
            if (w == v && !self_loops)
                continue;
            if (color[w] == 1) {
                fn(stk + pos[w], sp - pos[w], arg);
                found++;
            } else if (color[w] == 0) {
                color[w] = 1;
                pos[w] = sp;
                stk[sp] = w;
                next[sp++] = a.first[w];
            }
        }
    }
out:
    free(a.first);
    free(a.to);
    free(color);
    free(stk);
    free(next);
    free(pos);
    return found;
}

size_t deps_declared(const struct config *c, struct dep_edge *out)
{
    size_t k = 0;

    for (size_t i = 0; i < c->nmappings; i++)
        for (size_t j = 0; j < c->mappings[i].ndepends_on; j++) {
            const struct cfg_mapping *p = c->mappings[i].depends_on[j].parent;

            if (p == NULL)
                continue;
            if (out != NULL)
                out[k] = (struct dep_edge){ i, (size_t)(p - c->mappings) };
            k++;
        }
    return k;
}

/* The mapping whose side on ep is the table schema.relname, if any. */
static long mapping_of_table(const struct config *c, const struct cfg_endpoint *ep,
                             const char *schema, const char *relname)
{
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        const struct cfg_side *sides[2] = { &m->a, &m->b };

        for (int k = 0; k < 2; k++)
            if (sides[k]->ep == ep && sides[k]->relname != NULL &&
                strcmp(sides[k]->relname, relname) == 0 &&
                strcmp(sides[k]->schema ? sides[k]->schema : "public", schema) == 0)
                return (long)i;
    }
    return -1;
}

int deps_discover(PGconn *conn, const struct config *c, const struct cfg_endpoint *ep,
                  struct dep_edge **edges, size_t *n, struct err *e)
{
    static const char *const sql =
        "SELECT cn.nspname, cr.relname, pn.nspname, pr.relname"
        " FROM pg_constraint k"
        " JOIN pg_class cr ON cr.oid = k.conrelid"
        " JOIN pg_namespace cn ON cn.oid = cr.relnamespace"
        " JOIN pg_class pr ON pr.oid = k.confrelid"
        " JOIN pg_namespace pn ON pn.oid = pr.relnamespace"
        " WHERE k.contype = 'f'";
    PGresult *r = PQexec(conn, sql);
    int rc = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = err_set(e, -EIO, "endpoint %s: cannot read foreign keys: %s", ep->name,
                     PQresultErrorMessage(r));
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        long child = mapping_of_table(c, ep, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        long parent = mapping_of_table(c, ep, PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
        struct dep_edge *grown;

        if (child < 0 || parent < 0)
            continue;
        if ((grown = realloc(*edges, (*n + 1) * sizeof(**edges))) == NULL) {
            rc = err_set(e, -ENOMEM, "out of memory");
            goto out;
        }
        *edges = grown;
        grown[(*n)++] = (struct dep_edge){ (size_t)child, (size_t)parent };
    }
out:
    PQclear(r);
    return rc;
}

struct cycle_text {
    const struct config *c;
    char *text;
    size_t cap;
    bool found;
};

static void first_cycle_text(const size_t *cycle, size_t len, void *arg)
{
    struct cycle_text *t = arg;
    size_t used = 0;

    if (t->found)
        return;
    t->found = true;
    for (size_t i = 0; i <= len && used < t->cap; i++) {
        const char *name = t->c->mappings[cycle[i % len]].name;
        int w = snprintf(t->text + used, t->cap - used, "%s%s", i ? " -> " : "",
                         name ? name : "?");
        used += w > 0 ? (size_t)w : 0;
    }
}

bool deps_cycle_text(const struct config *c, const struct dep_edge *extra, size_t nextra,
                     char *text, size_t cap)
{
    size_t k = deps_declared(c, NULL);
    struct dep_edge *all = calloc(k + nextra + 1, sizeof(*all));
    struct cycle_text t = { c, text, cap, false };

    if (all == NULL)
        return false;
    k = deps_declared(c, all);
    for (size_t i = 0; i < nextra; i++)
        if (extra[i].child != extra[i].parent)      /* a table referencing itself */
            all[k++] = extra[i];
    deps_cycles(c->nmappings, all, k, true, first_cycle_text, &t);
    free(all);
    return t.found;
}
