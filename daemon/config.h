/* config.h: the pipeline configuration (SPEC §4), loaded and validated. */
#ifndef TANDEM_CONFIG_H
#define TANDEM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "log.h"

enum cfg_kind { CFG_KIND_POSTGRES = 0, CFG_KIND_REST };
enum cfg_direction { CFG_DIR_BOTH = 0, CFG_DIR_A_TO_B, CFG_DIR_B_TO_A };
enum cfg_strategy {
    CFG_STRAT_LWW = 0, CFG_STRAT_PRIORITY, CFG_STRAT_FIELD_MERGE,
    CFG_STRAT_MANUAL, CFG_STRAT_PLUGIN
};
enum cfg_deletes { CFG_DEL_PROPAGATE = 0, CFG_DEL_IGNORE, CFG_DEL_SOFT };
enum cfg_feed_style { CFG_FEED_NONE = 0, CFG_FEED_UPDATED_SINCE, CFG_FEED_SEQUENCE };
enum cfg_numeric { CFG_NUM_NUMBER = 0, CFG_NUM_STRING };
enum cfg_http_method { CFG_HTTP_POST = 0, CFG_HTTP_PUT, CFG_HTTP_PATCH, CFG_HTTP_DELETE };
enum cfg_rev_in { CFG_REV_NONE = 0, CFG_REV_BODY, CFG_REV_IF_MATCH, CFG_REV_QUERY };

/* A string-to-string pair (headers, feed params, field map). */
struct cfg_pair {
    char *name;
    char *value;
};

struct cfg_endpoint {
    char *name;                 /* the key under $.endpoints */
    enum cfg_kind kind;
    /* postgres */
    char *conninfo;             /* without the password */
    char *password;             /* secret; NULL when not given */
    char *publication, *slot, *origin;
    bool apply_as_replica;      /* default false */
    long long slot_retained_warn_bytes; /* default 1 GiB */
    /* rest */
    char *base_url;
    struct cfg_pair *headers;   /* values are secrets when substituted */
    size_t nheaders;
    int poll_interval_ms;       /* default 1000, 10..3600000 */
    int page_size;              /* default 100, 1..10000 */
    int timeout_ms;             /* default 10000, 100..600000 */
    int max_in_flight;          /* default 8, 1..256 */
    int max_requests_per_s;     /* default 50, 1..100000 */
    long long max_response_bytes; /* default 64 MiB */
    bool tls_verify;            /* default true */
    enum cfg_numeric numeric;   /* default number */
};

struct cfg_feed {
    enum cfg_feed_style style;
    /* updated_since */
    char *cursor_field, *cursor_param, *limit_param, *offset_param;
    /* sequence */
    char *path, *since_param, *seq_field, *id_field, *doc_field, *last_seq;
    /* both */
    char *records;              /* JSON pointer; default "" (updated_since),
                                 * "/results" (sequence) */
    char *deleted_field;        /* NULL when absent; default "deleted" for
                                 * sequence */
    struct cfg_pair *params;
    size_t nparams;
};

struct cfg_write {
    enum cfg_http_method create;  /* POST (default) or PUT */
    enum cfg_http_method update;  /* PATCH (default) or PUT */
    enum cfg_http_method del;     /* DELETE (default), or PATCH when soft:
                                   * then del_soft_field is set */
    char *del_soft_field;         /* set when "delete": {"soft": "f"} */
    char *revision_field;         /* NULL when absent */
    enum cfg_rev_in revision_in;
    char *revision_param;         /* default "rev" */
};

/* One side of a mapping. */
struct cfg_side {
    char *endpoint;             /* name, as in $.endpoints */
    struct cfg_endpoint *ep;    /* resolved by the loader */
    char *table;                /* postgres: "schema.table" (schema defaults to public) */
    char *schema, *relname;     /* table split by the loader */
    char *resource;             /* rest: "/customers" */
    char **key;                 /* key field names on this side */
    size_t nkey;
    struct cfg_feed feed;       /* rest only */
    struct cfg_write write;     /* rest only */
};

struct cfg_dependency {
    char *mapping;
    struct cfg_mapping *parent; /* resolved by the loader */
    struct cfg_pair *fields;    /* child field (side a) -> parent key field */
    size_t nfields;
};

struct cfg_mapping {
    char *name;
    struct cfg_side a, b;
    struct cfg_pair *fields;    /* side a name -> side b name, in config order */
    size_t nfields;
    enum cfg_direction direction;
    enum cfg_strategy strategy;
    enum cfg_strategy fallback; /* for field_merge; default last_write_wins */
    char *timestamp_field;      /* side a name, NULL when absent; its side b
                                 * name is config_field_a_to_b(), or the
                                 * same name when unmapped (SPEC example) */
    char priority;              /* 'a' or 'b'; default 'a' */
    char *plugin;               /* path, for strategy plugin */
    enum cfg_deletes deletes;
    char *soft_delete_field;    /* for deletes {"soft": f} */
    bool canary_enabled;
    int canary_interval_s;      /* default 30 */
    int canary_deadline_s;      /* default 60 */
    char *canary_key;           /* default "__tandem_canary" */
    struct cfg_dependency *depends_on;
    size_t ndepends_on;
    int dependency_wait_s;      /* default 300 */
};

struct cfg_retry {
    int max_attempts;           /* default 10, 1..1000 */
    int max_retry_s;            /* default 3600, 1..604800 */
    int backoff_max_ms;         /* default 30000, 10..3600000 */
};

struct cfg_reconcile {
    int interval_s;             /* 0 = off (default) */
    char **mappings;            /* NULL/0 = all */
    size_t nmappings;
};

struct config {
    char *name;
    char *state_path;
    int state_retention_s;      /* applied journal entries kept; default 86400 */
    enum log_level log_level;
    enum log_format log_format;
    char *http_listen;          /* default "127.0.0.1:9187"; "" disables */
    struct cfg_endpoint *endpoints;
    size_t nendpoints;
    struct cfg_mapping *mappings;
    size_t nmappings;
    struct cfg_retry retry;
    struct cfg_reconcile reconcile;
    /* Every string that came from ${VAR} or ${file:…}, and every password
     * (endpoint password, password inside conninfo), for log masking. */
    char **secrets;
    size_t nsecrets;
};

/* Loads and validates path. On success *out owns a config (free with
 * config_free) and every secret is registered with log_add_secret().
 * On failure returns -EINVAL (bad config) or -ENOENT/-EIO (unreadable
 * file) and e->msg holds every problem, one per line, each starting with
 * its JSON path ("$.mappings[0].conflict.strategy: …"). Never touches the
 * network. */
int config_load(struct config **out, const char *path, struct err *e);

/* Same, from a JSON text in memory (tests, fuzzing). */
int config_load_string(struct config **out, const char *text, struct err *e);

void config_free(struct config *c);

/* Lookups by name; NULL when absent. */
struct cfg_endpoint *config_endpoint(const struct config *c, const char *name);
struct cfg_mapping *config_mapping(const struct config *c, const char *name);

/* The config spelling of a strategy ("last_write_wins", ...). */
const char *config_strategy_name(enum cfg_strategy st);

/* The side b name of side a field f (or the reverse); NULL when unmapped. */
const char *config_field_a_to_b(const struct cfg_mapping *m, const char *f);

/* Whether a both-ways mapping has a side whose records carry no version
 * (a REST sequence feed without conflict.timestamp_field) while last
 * write decides its conflicts (last_write_wins, or field_merge's
 * fallback): concurrent edits of one record cannot be ordered the same
 * way by both writers. */
bool config_unversioned_lww(const struct cfg_mapping *m);
#define UNVERSIONED_LWW_HINT "its sequence feed gives records no version, so last write" \
    " cannot order an edit of the same record on both sides the same way in both" \
    " directions; set conflict.timestamp_field to a field both sides keep"
const char *config_field_b_to_a(const struct cfg_mapping *m, const char *f);

#endif
