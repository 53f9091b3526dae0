/* pgconn.h: opening libpq connections to a postgres endpoint, and small
 * checked query helpers. Secrets stay out of every message. */
#ifndef TANDEM_PGCONN_H
#define TANDEM_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "../../daemon/config.h"
#include "../../daemon/err.h"

/* Keyword/value arrays for PQconnectStartParams/PQconnectdbParams built
 * from the endpoint (conninfo expanded, password added, application_name
 * "tandem", replication=database when asked). */
struct pgconn_params {
    const char *keys[8];
    const char *vals[8];
};
void pgconn_params_init(struct pgconn_params *p, const struct cfg_endpoint *ep,
                        bool replication);

/* Blocking connect (for check/setup/teardown/snapshot, never on the
 * daemon's loop). NULL on failure with e naming the endpoint. */
PGconn *pgconn_connect(const struct cfg_endpoint *ep, bool replication,
                       struct err *e);

/* The connection's last error on one line, secrets masked. */
const char *pgconn_error(PGconn *c, char *buf, size_t cap);

/* Runs sql (simple protocol, no parameters) and checks it returned
 * COMMAND_OK or TUPLES_OK; -EIO with the server's message otherwise. */
int pgconn_exec(PGconn *c, const char *sql, struct err *e);

/* Runs a parameterized query expecting rows; returns the result (caller
 * PQclear()s) or NULL with e set. */
PGresult *pgconn_query(PGconn *c, const char *sql, int nparams,
                       const char *const *params, struct err *e);

/* Quotes an identifier like "schema"."table" into buf (caller frees). */
char *pgconn_quote_ident(PGconn *c, const char *ident);
char *pgconn_quote_table(PGconn *c, const char *schema, const char *rel);

/* Advances a non-blocking connect (PQconnectStartParams) one step and
 * re-arms w for what libpq waits on: 1 connected, 0 in progress, -1
 * failed (PQerrorMessage says why). */
struct pgwatch;
int pgconn_poll_connect(PGconn *c, struct pgwatch *w);

#endif
