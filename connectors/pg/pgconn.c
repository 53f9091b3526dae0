#include "pgconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/log.h"
#include "pgwatch.h"

void pgconn_params_init(struct pgconn_params *p, const struct cfg_endpoint *ep,
                        bool replication)
{
    int n = 0;

    memset(p, 0, sizeof(*p));
    /* dbname with expand_dbname=1 lets the whole conninfo stand there;
     * later keywords override what it sets. */
    p->keys[n] = "dbname"; p->vals[n++] = ep->conninfo;
    p->keys[n] = "application_name"; p->vals[n++] = "tandem";
    p->keys[n] = "connect_timeout"; p->vals[n++] = "10";
    if (ep->password != NULL) {
        p->keys[n] = "password"; p->vals[n++] = ep->password;
    }
    if (replication) {
        p->keys[n] = "replication"; p->vals[n++] = "database";
    }
    p->keys[n] = NULL;
    p->vals[n] = NULL;
}

const char *pgconn_error(PGconn *c, char *buf, size_t cap)
{
    char *nl;

    snprintf(buf, cap, "%s", c ? PQerrorMessage(c) : "out of memory");
    while ((nl = strchr(buf, '\n')) != NULL) {
        if (nl[1] == '\0')
            *nl = '\0';
        else
            *nl = ' ';
    }
    log_redact(buf, cap);
    return buf;
}

/* Server notices ("publication does not exist, skipping") would go to
 * stderr as plain text between the JSON log lines: they become debug
 * events instead. */
static void on_notice(void *arg, const char *message)
{
    const struct cfg_endpoint *ep = arg;
    char text[512];

    snprintf(text, sizeof(text), "%s", message);
    text[strcspn(text, "\n")] = '\0';
    log_debug("pgconn", "server notice", "endpoint", ep->name, "notice", text);
}

PGconn *pgconn_connect(const struct cfg_endpoint *ep, bool replication,
                       struct err *e)
{
    struct pgconn_params p;
    char msg[512];
    PGconn *c;

    pgconn_params_init(&p, ep, replication);
    c = PQconnectdbParams(p.keys, p.vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        err_set(e, -EIO, "endpoint %s: cannot connect to postgres: %s",
                ep->name, pgconn_error(c, msg, sizeof(msg)));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, (void *)ep);
    return c;
}

int pgconn_exec(PGconn *c, const char *sql, struct err *e)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    char msg[512];

    PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return err_set(e, -EIO, "%s: %s", sql, pgconn_error(c, msg, sizeof(msg)));
    return 0;
}

PGresult *pgconn_query(PGconn *c, const char *sql, int nparams,
                       const char *const *params, struct err *e)
{
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    char msg[512];

    if (PQresultStatus(r) != PGRES_TUPLES_OK &&
        PQresultStatus(r) != PGRES_COMMAND_OK) {
        err_set(e, -EIO, "query failed: %s", pgconn_error(c, msg, sizeof(msg)));
        PQclear(r);
        return NULL;
    }
    return r;
}

char *pgconn_quote_ident(PGconn *c, const char *ident)
{
    char *q = PQescapeIdentifier(c, ident, strlen(ident));
    char *copy;

    if (q == NULL)
        return NULL;
    copy = strdup(q);
    PQfreemem(q);
    return copy;
}

char *pgconn_quote_table(PGconn *c, const char *schema, const char *rel)
{
    char *s = pgconn_quote_ident(c, schema), *r = pgconn_quote_ident(c, rel);
    char *out = NULL;

    if (s != NULL && r != NULL && asprintf(&out, "%s.%s", s, r) < 0)
        out = NULL;
    free(s);
    free(r);
    return out;
}

int pgconn_poll_connect(PGconn *c, struct pgwatch *w)
{
    switch (PQconnectPoll(c)) {
    case PGRES_POLLING_READING:
        return pgwatch_set(w, PQsocket(c), UV_READABLE) == 0 ? 0 : -1;
    case PGRES_POLLING_WRITING:
        return pgwatch_set(w, PQsocket(c), UV_WRITABLE) == 0 ? 0 : -1;
    case PGRES_POLLING_OK:
        return PQsetnonblocking(c, 1) == 0 ? 1 : -1;
    default:
        return -1;
    }
}
