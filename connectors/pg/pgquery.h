/* pgquery.h: one-shot asynchronous queries on the libuv loop (connect,
 * run one statement, disconnect), for periodic monitoring that must never
 * block the loop, e.g. the slot's retained WAL. */
#ifndef TANDEM_PGQUERY_H
#define TANDEM_PGQUERY_H

#include <libpq-fe.h>
#include <uv.h>

#include "../../daemon/config.h"

/* cb gets the result (NULL on failure, with errmsg set); the result is
 * freed after cb returns. */
typedef void (*pgquery_cb)(void *arg, PGresult *res, const char *errmsg);

/* Starts the query; 0, or -ENOMEM (cb never fires then). At most one
 * query per call; params are copied. */
int pgquery_start(uv_loop_t *loop, const struct cfg_endpoint *ep,
                  const char *sql, int nparams, const char *const *params,
                  pgquery_cb cb, void *arg);

#endif
