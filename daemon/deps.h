/* deps.h: dependencies between mappings (SPEC §4 depends_on): declared in
 * the config, or discovered as foreign keys between the mapped tables of a
 * postgres endpoint. A cycle among them, declared or declared plus
 * discovered, is a config error: children would wait for each other. */
#ifndef TANDEM_DEPS_H
#define TANDEM_DEPS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "err.h"

/* child mapping waits for parent mapping (indexes into config mappings). */
struct dep_edge {
    size_t child, parent;
};

/* Reports cycles in the graph of n nodes and the given edges (iterative
 * depth-first search: configs come from fuzzers too): fn gets each cycle
 * found as its nodes in order, each waiting for the next and the last for
 * the first. Edges of a node to itself count only when self_loops (a
 * table referencing itself is no cycle: rows of one mapping keep their
 * source order; a mapping declared to depend on itself is). Returns the
 * number of cycles reported, -EINVAL for an edge naming no node, or
 * -ENOMEM. */
typedef void (*deps_cycle_fn)(const size_t *cycle, size_t len, void *arg);
int deps_cycles(size_t n, const struct dep_edge *edges, size_t nedges, bool self_loops,
                deps_cycle_fn fn, void *arg);

/* The declared depends_on of every mapping as edges into out (room for
 * deps_declared(c, NULL) of them); returns how many. */
size_t deps_declared(const struct config *c, struct dep_edge *out);

/* The foreign keys of ep's database between tables that mappings write
 * there, as edges (child mapping -> parent mapping), appended to *edges
 * (realloc'd; *n counts them). A foreign key whose columns are not all
 * mapped fields, or whose referenced columns are not the parent's key, is
 * still an ordering constraint and counts. Returns 0 or a negative errno. */
int deps_discover(PGconn *conn, const struct config *c, const struct cfg_endpoint *ep,
                  struct dep_edge **edges, size_t *n, struct err *e);

/* Declared plus discovered: on a cycle returns true and writes it as
 * "a -> b -> a" into text. */
bool deps_cycle_text(const struct config *c, const struct dep_edge *extra, size_t nextra,
                     char *text, size_t cap);

#endif
