#include "pgquery.h"

#include <stdlib.h>
#include <string.h>

#include "pgconn.h"
#include "pgwatch.h"

#define PGQUERY_MAX_PARAMS 4

struct pgquery {
    PGconn *conn;
    struct pgwatch watch;
    char *sql;
    char *params[PGQUERY_MAX_PARAMS];
    int nparams;
    bool sent;
    pgquery_cb cb;
    void *arg;
};

static void finish(struct pgquery *q, PGresult *r, const char *why)
{
    char msg[512];

    if (r == NULL && why != NULL)
        q->cb(q->arg, NULL, q->conn ? pgconn_error(q->conn, msg, sizeof(msg)) : why);
    else
        q->cb(q->arg, r, NULL);
    PQclear(r);
    pgwatch_stop(&q->watch);
    PQfinish(q->conn);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->sql);
    free(q);
}

static void on_io(void *arg, int events)
{
    struct pgquery *q = arg;
    PGresult *r, *last = NULL;
    int rc;

    (void)events;
    if (!q->sent) {
        rc = pgconn_poll_connect(q->conn, &q->watch);
        if (rc < 0) {
            finish(q, NULL, "cannot connect");
        } else if (rc > 0) {
            if (PQsendQueryParams(q->conn, q->sql, q->nparams, NULL,
                                  (const char *const *)q->params, NULL, NULL, 0) != 1) {
                finish(q, NULL, "cannot send");
                return;
            }
            q->sent = true;
            PQflush(q->conn);
            pgwatch_set(&q->watch, PQsocket(q->conn), UV_READABLE);
        }
        return;
    }
    if (PQconsumeInput(q->conn) == 0) {
        finish(q, NULL, "connection lost");
        return;
    }
    if (PQisBusy(q->conn))
        return;
    while ((r = PQgetResult(q->conn)) != NULL) {
        PQclear(last);
        last = r;
    }
    if (last != NULL && PQresultStatus(last) != PGRES_TUPLES_OK &&
        PQresultStatus(last) != PGRES_COMMAND_OK) {
        PQclear(last);
        finish(q, NULL, "query failed");
        return;
    }
    finish(q, last, "no result");
}

int pgquery_start(uv_loop_t *loop, const struct cfg_endpoint *ep,
                  const char *sql, int nparams, const char *const *params,
                  pgquery_cb cb, void *arg)
{
    struct pgquery *q = calloc(1, sizeof(*q));
    struct pgconn_params prm;

    if (q == NULL || nparams > PGQUERY_MAX_PARAMS || (q->sql = strdup(sql)) == NULL) {
        free(q);
        return -ENOMEM;
    }
    for (int i = 0; i < nparams; i++)
        q->params[q->nparams++] = params[i] ? strdup(params[i]) : NULL;
    q->cb = cb;
    q->arg = arg;
    pgwatch_init(&q->watch, loop, on_io, q);
    pgconn_params_init(&prm, ep, false);
    q->conn = PQconnectStartParams(prm.keys, prm.vals, 1);
    if (q->conn == NULL || PQstatus(q->conn) == CONNECTION_BAD) {
        finish(q, NULL, "cannot start a connection");
        return 0;
    }
    on_io(q, 0);
    return 0;
}
