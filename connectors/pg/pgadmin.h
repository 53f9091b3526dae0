/* pgadmin.h: setup, teardown and prerequisite checks of a postgres
 * endpoint (publication, logical slot, replication origin). Blocking; used
 * by the CLI commands and once per connection by the daemon. */
#ifndef TANDEM_PGADMIN_H
#define TANDEM_PGADMIN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"

/* Does any mapping read changes from (is_source) or write changes into
 * this endpoint? */
bool pgadmin_is_source(const struct config *c, const struct cfg_endpoint *ep);
bool pgadmin_is_target(const struct config *c, const struct cfg_endpoint *ep);

/* Creates what is missing, idempotently: the publication (adding mapped
 * tables it lacks) and the pgoutput slot when the endpoint is a source,
 * the replication origin when it is a target. conn is a normal
 * (non-replication) connection. Each action is logged. */
int pgadmin_setup(PGconn *conn, const struct config *c,
                  const struct cfg_endpoint *ep, struct err *e);

/* pgadmin_setup without the slot: for `tandem snapshot`, which creates
 * the slot itself with an exported snapshot (after the publication, so
 * the slot's stream can find it). */
int pgadmin_setup_except_slot(PGconn *conn, const struct config *c,
                              const struct cfg_endpoint *ep, struct err *e);

/* 1 when the endpoint's slot exists, 0 when not, or a negative errno. */
int pgadmin_slot_exists(PGconn *conn, const struct cfg_endpoint *ep,
                        struct err *e);

/* Drops slot, publication and origin when present. */
int pgadmin_teardown(PGconn *conn, const struct config *c,
                     const struct cfg_endpoint *ep, struct err *e);

/* Verifies prerequisites (wal_level, REPLICATION right, tables, replica
 * identity, publication, slot, origin function privileges, table
 * privileges), printing one line per result to out. Returns the number of
 * unmet prerequisites (0 = all fine), or a negative errno when a query
 * failed. */
int pgadmin_check(PGconn *conn, const struct config *c,
                  const struct cfg_endpoint *ep, FILE *out, struct err *e);

/* Bytes of WAL the slot retains (current WAL LSN - confirmed flush), or a
 * negative errno (-ENOENT when the slot is missing). */
long long pgadmin_slot_retained(PGconn *conn, const struct cfg_endpoint *ep,
                                struct err *e);

#endif
