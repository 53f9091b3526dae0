#include "commands.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../connectors/pg/pgadmin.h"
#include "../connectors/pg/pgconn.h"
#include "../connectors/rest/rest_http.h"
#include "../resolver/resolver.h"
#include "../state/state.h"
#include "config.h"
#include "daemon.h"
#include "deps.h"
#include "log.h"
#include "status.h"

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.1.0"
#endif

/* Loads the config; prints every problem and returns EXIT_USAGE on error. */
static int load_config(struct cli_opts *o, struct config **out)
{
    struct err e = { 0 };

    log_setup(LOG_INFO, LOG_FORMAT_JSON, NULL, NULL);
    if (config_load(out, o->config, &e) != 0) {
        log_redact(e.msg, sizeof(e.msg));
        fprintf(stderr, "tandem: config %s is invalid:\n%s\n", o->config, e.msg);
        return EXIT_USAGE;
    }
    log_setup((*out)->log_level, (*out)->log_format, NULL, (*out)->name);
    return 0;
}

int cmd_version(struct cli_opts *o)
{
    (void)o;
    printf("tandem %s\n", TANDEM_VERSION);
    return EXIT_OK;
}

/* Foreign keys between the mapped tables of each reachable postgres
 * endpoint count as declared dependencies: a cycle through them is a
 * config error (exit 2). Unreachable endpoints are left to the caller. */
static bool discovered_cycle(struct config *c, const char *path)
{
    struct dep_edge *edges = NULL;
    size_t n = 0;
    char text[512];
    bool cycle;

    for (size_t i = 0; i < c->nendpoints; i++) {
        struct cfg_endpoint *ep = &c->endpoints[i];
        struct err e = { 0 };
        PGconn *conn;

        if (ep->kind != CFG_KIND_POSTGRES || !pgadmin_is_target(c, ep))
            continue;
        if ((conn = pgconn_connect(ep, false, &e)) == NULL)
            continue;
        if (deps_discover(conn, c, ep, &edges, &n, &e) != 0)
            log_warn("config", "cannot read foreign keys; dependency cycles through them"
                     " are not checked", "endpoint", ep->name, "err", e.msg);
        PQfinish(conn);
    }
    cycle = deps_cycle_text(c, edges, n, text, sizeof(text));
    free(edges);
    if (cycle) {
        fprintf(stderr, "tandem: config %s: dependency cycle (declared depends_on plus"
                " foreign keys of the peers): %s; break it in depends_on or the schema\n",
                path, text);
        log_error("config", "dependency cycle through foreign keys", "cycle", text);
    }
    return cycle;
}

/* A plugin that cannot be loaded (bad path, missing symbol, other ABI
 * version) is a config error at start, not at the first conflict. */
static bool plugins_load(const struct config *c, const char *path)
{
    bool ok = true;

    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];
        struct resolver_plugin *p = NULL;
        struct err e = { 0 };

        if (m->strategy != CFG_STRAT_PLUGIN)
            continue;
        if (resolver_plugin_load(m->plugin, &p, &e) != 0) {
            fprintf(stderr, "tandem: config %s is invalid:\n$.mappings[%zu].conflict.plugin: %s\n",
                    path, i, e.msg);
            ok = false;
        }
        resolver_plugin_free(p);
    }
    return ok;
}

/* What the loader cannot see by itself and both run and check refuse
 * (exit 2): plugins that do not load, a cycle through the peers' foreign
 * keys. */
static bool config_holds(struct config *c, const char *path)
{
    return plugins_load(c, path) && !discovered_cycle(c, path);
}

int cmd_run(struct cli_opts *o)
{
    struct config *c;
    struct err e = { 0 };
    int rc = load_config(o, &c);

    if (rc != 0)
        return rc;
    if (!config_holds(c, o->config)) {
        config_free(c);
        return EXIT_USAGE;
    }
    rc = daemon_run(c, &e);
    if (rc != 0) {
        log_redact(e.msg, sizeof(e.msg));
        log_error("daemon", "cannot run", "err", e.msg);
        fprintf(stderr, "tandem: %s\n", e.msg);
    }
    config_free(c);
    return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* Runs fn on a blocking connection to each postgres endpoint. */
typedef int (*ep_fn)(PGconn *conn, struct config *c, struct cfg_endpoint *ep,
                     struct err *e);

static int for_each_pg(struct config *c, ep_fn fn, int *unreachable)
{
    int total = 0;

    *unreachable = 0;
    for (size_t i = 0; i < c->nendpoints; i++) {
        struct cfg_endpoint *ep = &c->endpoints[i];
        struct err e = { 0 };
        PGconn *conn;
        int rc;

        if (ep->kind != CFG_KIND_POSTGRES)
            continue;
        conn = pgconn_connect(ep, false, &e);
        if (conn == NULL) {
            printf("FAIL %s: %s\n", ep->name, e.msg);
            (*unreachable)++;
            continue;
        }
        rc = fn(conn, c, ep, &e);
        PQfinish(conn);
        if (rc < 0) {
            log_redact(e.msg, sizeof(e.msg));
            printf("FAIL %s: %s\n", ep->name, e.msg);
            (*unreachable)++;
        } else {
            total += rc;
        }
    }
    return total;
}

static int check_one(PGconn *conn, struct config *c, struct cfg_endpoint *ep,
                     struct err *e)
{
    return pgadmin_check(conn, c, ep, stdout, e);
}

static int setup_one(PGconn *conn, struct config *c, struct cfg_endpoint *ep,
                     struct err *e)
{
    int rc = pgadmin_setup(conn, c, ep, e);

    if (rc == 0)
        printf("ok   %s: publication, slot and origin in place\n", ep->name);
    return rc;
}

static int teardown_one(PGconn *conn, struct config *c, struct cfg_endpoint *ep,
                        struct err *e)
{
    int rc = pgadmin_teardown(conn, c, ep, e);

    if (rc == 0)
        printf("ok   %s: slot, publication and origin dropped\n", ep->name);
    return rc;
}

/* Reaches each rest endpoint: one small GET per mapped resource. No answer
 * (or a 5xx) counts as unreachable, another non-2xx answer (401, 403,
 * 404…) as an unmet prerequisite. Returns the unmet count. */
static int check_rest(struct config *c, int *unreachable)
{
    struct strbuf url, q;
    int unmet = 0;

    strbuf_init(&url);
    strbuf_init(&q);
    for (size_t i = 0; i < c->nendpoints; i++) {
        struct cfg_endpoint *ep = &c->endpoints[i];

        if (ep->kind != CFG_KIND_REST)
            continue;
        if (!ep->tls_verify)
            printf("warn %s: tls_verify is false: the server's certificate is not checked\n",
                   ep->name);
        for (size_t j = 0; j < c->nmappings; j++)
            if (config_unversioned_lww(&c->mappings[j]) &&
                (c->mappings[j].a.ep == ep || c->mappings[j].b.ep == ep))
                printf("warn %s: mapping %s: %s\n", ep->name, c->mappings[j].name,
                       UNVERSIONED_LWW_HINT);
        for (size_t j = 0; j < c->nmappings; j++) {
            struct cfg_mapping *m = &c->mappings[j];
            struct cfg_side *sd = m->a.ep == ep ? &m->a : m->b.ep == ep ? &m->b : NULL;
            const char *lp;
            char msg[512];
            long status = 0;

            if (sd == NULL)
                continue;
            lp = sd->feed.limit_param ? sd->feed.limit_param : "limit";
            strbuf_reset(&q);
            strbuf_adds(&q, lp);
            strbuf_adds(&q, "=1");
            if (rest_http_url(&url, ep, sd->resource, strbuf_cstr(&q)) != 0)
                continue;
            if (rest_http_probe(ep, strbuf_cstr(&url), &status, msg, sizeof(msg)) != 0) {
                log_redact(msg, sizeof(msg));
                printf("FAIL %s: GET %s unreachable: %s\n", ep->name, sd->resource, msg);
                (*unreachable)++;
            } else if (status >= 500) {
                log_redact(msg, sizeof(msg));
                printf("FAIL %s: GET %s: %s\n", ep->name, sd->resource, msg);
                (*unreachable)++;
            } else if ((status < 200 || status >= 300) && status != 429) {
                log_redact(msg, sizeof(msg));
                printf("FAIL %s: GET %s: %s\n", ep->name, sd->resource, msg);
                unmet++;
            } else {
                printf("ok   %s: GET %s answered %ld (mapping %s)\n", ep->name,
                       sd->resource, status, m->name);
            }
        }
    }
    strbuf_free(&url);
    strbuf_free(&q);
    return unmet;
}

int cmd_check(struct cli_opts *o)
{
    struct config *c;
    int unreachable, unmet, rc = load_config(o, &c);

    if (rc != 0)
        return rc;
    if (!config_holds(c, o->config)) {
        config_free(c);
        return EXIT_USAGE;
    }
    printf("ok   config %s\n", o->config);
    unmet = for_each_pg(c, check_one, &unreachable);
    unmet += check_rest(c, &unreachable);
    config_free(c);
    if (unreachable > 0)
        return EXIT_RUNTIME;
    return unmet > 0 ? EXIT_DRIFT : EXIT_OK;
}

int cmd_setup(struct cli_opts *o)
{
    struct config *c;
    struct state *st = NULL;
    struct err e = { 0 };
    int unreachable, rc = load_config(o, &c);

    if (rc != 0)
        return rc;
    if (state_open(&st, c->state_path, STATE_SHARED, &e) != 0) {
        fprintf(stderr, "tandem: %s\n", e.msg);
        config_free(c);
        return EXIT_RUNTIME;
    }
    state_close(st);
    printf("ok   state %s\n", c->state_path);
    for_each_pg(c, setup_one, &unreachable);
    config_free(c);
    return unreachable > 0 ? EXIT_RUNTIME : EXIT_OK;
}

int cmd_teardown(struct cli_opts *o)
{
    struct config *c;
    int unreachable, rc = load_config(o, &c);

    if (rc != 0)
        return rc;
    for_each_pg(c, teardown_one, &unreachable);
    config_free(c);
    return unreachable > 0 ? EXIT_RUNTIME : EXIT_OK;
}

int cmd_status(struct cli_opts *o)
{
    struct config *c;
    struct state *st = NULL;
    struct err e = { 0 };
    json_t *doc;
    int rc = load_config(o, &c);

    if (rc != 0)
        return rc;
    if (state_open(&st, c->state_path, STATE_READONLY, &e) != 0) {
        fprintf(stderr, "tandem: %s\n", e.msg);
        config_free(c);
        return EXIT_RUNTIME;
    }
    doc = status_build(st, c, &e);
    if (doc == NULL) {
        fprintf(stderr, "tandem: cannot read status: %s\n", e.msg);
        rc = EXIT_RUNTIME;
    } else if (o->json) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        printf("\n");
    } else {
        status_print_text(stdout, doc);
    }
    json_decref(doc);
    state_close(st);
    config_free(c);
    return rc;
}
