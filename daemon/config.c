/* config.c: loads and validates the pipeline configuration (SPEC §4).
 *
 * The schema is a set of tables (struct cfg_schema): per key a type, a
 * default, bounds and the variant (endpoint kind, feed style) it belongs to.
 * One generic walker (cfg_object) applies defaults, parses present keys with
 * one helper per type and rejects unknown keys at their own path; a check
 * hook per object then validates what the types cannot express, and the
 * top-level hook does the cross-checks (names, dependencies, cycles).
 * Every problem is collected, one line each, before the load fails.
 *
 * Decisions the spec leaves open:
 * - slot, publication and origin of a postgres endpoint default to
 *   "tandem_<name>_<endpoint>" (lower case, other characters as '_', at
 *   most 63 bytes): one per endpoint, so two endpoints on one cluster never
 *   share a slot or an origin.
 * - state.path defaults to "/var/lib/tandem/<name>.db".
 * - ${…} is substituted in string values (never in object keys) and is not
 *   re-scanned; "$${" stands for a literal "${". ${file:PATH} takes PATH as
 *   given (relative to the working directory), at most 1 MiB, and also
 *   drops a "\r" before the removed trailing newline.
 * - A password inside conninfo ("password=…", or user:password@ / ?password=
 *   in a URI) is moved to cfg_endpoint.password; giving it there and in
 *   "password" too is an error. Literal passwords and the values of
 *   credential-looking headers (Authorization, Cookie, …token…) are
 *   secrets as well as substituted values.
 * - Unquoted parts of a postgres "table" fold to lower case, as PostgreSQL
 *   does; double-quoted parts keep their case.
 * - Pipeline, endpoint and mapping names are 1..63 characters of letters,
 *   digits, '_', '.' and '-' (they end up in file names, slot names and
 *   metric labels).
 * - At least one side of a mapping is postgres (SPEC: a database and a
 *   second database or a REST API); both sides cannot be the same
 *   collection.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "deps.h"

#define CFG_PATH_MAX 512
#define CFG_LINE_MAX 1024
#define CFG_FILE_MAX (4 << 20)          /* a config file */
#define CFG_SECRET_FILE_MAX (1 << 20)   /* a ${file:…} */
#define CFG_NAME_MAX 63                 /* PostgreSQL NAMEDATALEN - 1 */
#define CFG_ORIGIN_MAX 512              /* PostgreSQL's replication origin limit */
#define CFG_TRAILER 64                  /* room kept for "… N more problems" */

/* Enum fields are stored through an int pointer. */
_Static_assert(sizeof(enum cfg_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_direction) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_strategy) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_deletes) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_feed_style) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_numeric) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_http_method) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_rev_in) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum size");

/* snprintf for text that may be cut on purpose (paths, messages). */
static int cfg_fmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cfg_fmt(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- collecting problems ------------------------------------------------ */

struct cfg_ctx {
    struct config *c;
    struct err *e;
    size_t len;                 /* bytes used in e->msg */
    int nerr;                   /* problems found */
    int nlost;                  /* problems that did not fit in e->msg */
    bool oom;
    size_t secrets_cap;
};

static void cfg_bad(struct cfg_ctx *x, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends "path: message" as one more line of e->msg. */
static void cfg_bad(struct cfg_ctx *x, const char *path, const char *fmt, ...)
{
    char line[CFG_LINE_MAX];
    va_list ap;
    int n;
    size_t len;

    x->nerr++;
    if (x->e == NULL)
        return;
    n = cfg_fmt(line, sizeof(line), "%s: ", path);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    len = strlen(line);
    if (x->len + len + 1 >= sizeof(x->e->msg) - CFG_TRAILER) {
        x->nlost++;
        return;
    }
    if (x->len > 0)
        x->e->msg[x->len++] = '\n';
    memcpy(x->e->msg + x->len, line, len + 1);
    x->len += len;
}

/* ---- memory --------------------------------------------------------------- */

static void *cfg_calloc(struct cfg_ctx *x, size_t n, size_t size)
{
    void *p = calloc(n > 0 ? n : 1, size);

    if (p == NULL)
        x->oom = true;
    return p;
}

static char *cfg_strdup(struct cfg_ctx *x, const char *s)
{
    char *p = strdup(s);

    if (p == NULL)
        x->oom = true;
    return p;
}

static char *cfg_printf(struct cfg_ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *cfg_printf(struct cfg_ctx *x, const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0) {
        x->oom = true;
        return NULL;
    }
    return p;
}

/* A growable string; a failed allocation is sticky and checked once. */
struct cfg_buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void cfg_buf_put(struct cfg_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Records a secret once; registered with the logger when loading ends. */
static void cfg_secret(struct cfg_ctx *x, const char *s)
{
    struct config *c = x->c;
    char **v;

    if (s == NULL || s[0] == '\0')
        return;
    for (size_t i = 0; i < c->nsecrets; i++)
        if (strcmp(c->secrets[i], s) == 0)
            return;
    if (c->nsecrets == x->secrets_cap) {
        size_t cap = x->secrets_cap ? x->secrets_cap * 2 : 8;

        v = realloc(c->secrets, cap * sizeof(*v));
        if (v == NULL) {
            x->oom = true;
            return;
        }
        c->secrets = v;
        x->secrets_cap = cap;
    }
    c->secrets[c->nsecrets] = cfg_strdup(x, s);
    if (c->secrets[c->nsecrets] != NULL)
        c->nsecrets++;
}

/* ---- JSON paths ------------------------------------------------------------ */

static bool cfg_is_ident(const char *k)
{
    if (!isalpha((unsigned char)k[0]) && k[0] != '_')
        return false;
    for (const char *p = k; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

/* parent.key, or parent['odd key'] when key is not an identifier. */
static void cfg_path_key(char *out, const char *parent, const char *key)
{
    size_t n;

    if (cfg_is_ident(key)) {
        cfg_fmt(out, CFG_PATH_MAX, "%s.%s", parent, key);
        return;
    }
    n = (size_t)cfg_fmt(out, CFG_PATH_MAX, "%s['", parent);
    for (const char *p = key; *p && n + 6 < CFG_PATH_MAX; p++) {
        if (*p == '\'' || *p == '\\')
            out[n++] = '\\';
        out[n++] = *p;
    }
    if (n + 3 < CFG_PATH_MAX)
        memcpy(out + n, "']", 3);
    else
        out[CFG_PATH_MAX - 1] = '\0';
}

static void cfg_path_idx(char *out, const char *parent, size_t i)
{
    cfg_fmt(out, CFG_PATH_MAX, "%s[%zu]", parent, i);
}

static const char *cfg_jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* ---- files and ${…} substitution ------------------------------------------ */

/* Reads at most max bytes of path; 0 or -errno (-EFBIG when larger). */
static int cfg_read_file(const char *path, size_t max, char **out, size_t *outlen)
{
    struct cfg_buf b = { 0 };
    char chunk[8192];
    size_t n;
    int rc = 0;
    FILE *f;

    *out = NULL;
    f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    errno = 0;
    cfg_buf_put(&b, "", 0);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + n > max) {
            rc = -EFBIG;
            break;
        }
        cfg_buf_put(&b, chunk, n);
    }
    if (rc == 0 && ferror(f))
        rc = errno ? -errno : -EIO;
    if (rc == 0 && b.failed)
        rc = -ENOMEM;
    fclose(f);
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

static char *cfg_subst_file(struct cfg_ctx *x, const char *path,
                            const char *name, size_t n)
{
    char *fpath = strndup(name, n), *text = NULL;
    size_t len = 0;
    int rc;

    if (fpath == NULL) {
        x->oom = true;
        return NULL;
    }
    if (fpath[0] == '\0') {
        cfg_bad(x, path, "empty path in \"${file:}\"");
        free(fpath);
        return NULL;
    }
    rc = cfg_read_file(fpath, CFG_SECRET_FILE_MAX, &text, &len);
    if (rc < 0)
        cfg_bad(x, path, "cannot read ${file:%s}: %s", fpath,
                rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
    else if (strlen(text) != len) {
        cfg_bad(x, path, "${file:%s} contains a NUL byte", fpath);
        free(text);
        text = NULL;
    } else if (len > 0 && text[len - 1] == '\n') {
        text[--len] = '\0';
        if (len > 0 && text[len - 1] == '\r')
            text[--len] = '\0';
    }
    free(fpath);
    return text;
}

static char *cfg_subst_env(struct cfg_ctx *x, const char *path,
                           const char *name, size_t n)
{
    char var[256];
    const char *val;
    char *copy;

    if (n == 0 || n >= sizeof(var)) {
        cfg_bad(x, path, "invalid variable name in \"${%.*s}\"",
                (int)(n < 64 ? n : 64), name);
        return NULL;
    }
    memcpy(var, name, n);
    var[n] = '\0';
    if (!cfg_is_ident(var)) {
        cfg_bad(x, path, "invalid variable name \"%s\"", var);
        return NULL;
    }
    val = getenv(var);
    if (val == NULL) {
        cfg_bad(x, path, "environment variable %s is not set", var);
        return NULL;
    }
    copy = cfg_strdup(x, val);
    return copy;
}

/* Substitutes the ${…} starting at d; *next is where scanning resumes. */
static int cfg_subst_one(struct cfg_ctx *x, const char *path, const char *d,
                         struct cfg_buf *b, const char **next)
{
    const char *name = d + 2, *end = strchr(name, '}');
    size_t n;
    char *val;

    if (end == NULL) {
        cfg_bad(x, path, "unterminated \"${\"");
        return -1;
    }
    n = (size_t)(end - name);
    if (n >= 5 && strncmp(name, "file:", 5) == 0)
        val = cfg_subst_file(x, path, name + 5, n - 5);
    else
        val = cfg_subst_env(x, path, name, n);
    if (val == NULL)
        return -1;
    cfg_buf_put(b, val, strlen(val));
    cfg_secret(x, val);
    free(val);
    *next = end + 1;
    return 0;
}

/* *out = in with every ${VAR} and ${file:PATH} replaced (malloc'd). */
static int cfg_subst(struct cfg_ctx *x, const char *path, const char *in,
                     char **out)
{
    struct cfg_buf b = { 0 };
    const char *p = in, *d;
    int rc = 0;

    cfg_buf_put(&b, "", 0);
    while (rc == 0 && (d = strchr(p, '$')) != NULL) {
        cfg_buf_put(&b, p, (size_t)(d - p));
        if (d[1] == '$' && d[2] == '{') {
            cfg_buf_put(&b, "${", 2);
            p = d + 3;
        } else if (d[1] == '{') {
            rc = cfg_subst_one(x, path, d, &b, &p);
        } else {
            cfg_buf_put(&b, "$", 1);
            p = d + 1;
        }
    }
    if (rc == 0)
        cfg_buf_put(&b, p, strlen(p));
    if (rc == 0 && b.failed) {
        x->oom = true;
        rc = -1;
    }
    if (rc < 0) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    return 0;
}

/* ---- one helper per type ---------------------------------------------------- */

enum cfg_type { T_STR, T_INT, T_LL, T_BOOL, T_ENUM, T_MAP, T_ARR, T_SUB, T_FN };

enum {
    F_REQ = 1 << 0,             /* the key must be present */
    F_NONEMPTY = 1 << 1,        /* string: not ""; map/array: ≥ 1 entry */
    F_NAMES = 1 << 2,           /* map: names and values not "" */
    F_VARIANT = 1 << 3,         /* selects the object's variant */
};

struct cfg_name {
    const char *name;
    int value;
};

struct cfg_ctx;
struct cfg_schema;

struct cfg_key {
    const char *key;
    enum cfg_type type;
    size_t off;                 /* of the value in the object's struct */
    size_t noff;                /* of the count, for maps and arrays */
    unsigned flags;
    unsigned variants;          /* 0 = every variant */
    long long lo, hi;           /* bounds; entry counts for maps and arrays */
    long long def;              /* default for numbers, booleans, enums */
    const char *sdef;           /* default for strings */
    const struct cfg_name *names;       /* enum values */
    const struct cfg_schema *sub;       /* nested object at off */
    /* Custom value; v is NULL when the key is absent (apply defaults). */
    int (*fn)(struct cfg_ctx *x, json_t *v, const char *path, void *base);
};

struct cfg_schema {
    const struct cfg_key *keys;         /* ends with key == NULL */
    /* Variant bits after the F_VARIANT key parsed; 0 when unknown. */
    unsigned (*variant)(struct cfg_ctx *x, void *base);
    const char *const *variant_names;   /* by bit number */
    const char *variant_fmt;            /* "not valid for a %s endpoint" */
    void (*check)(struct cfg_ctx *x, void *base, const char *path);
};

static int cfg_str(struct cfg_ctx *x, json_t *v, const char *path,
                   unsigned flags, char **out)
{
    char *s;

    if (!json_is_string(v)) {
        cfg_bad(x, path, "expected string, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_subst(x, path, json_string_value(v), &s) < 0)
        return -1;
    if ((flags & F_NONEMPTY) && s[0] == '\0') {
        cfg_bad(x, path, "must not be empty");
        free(s);
        return -1;
    }
    free(*out);
    *out = s;
    return 0;
}

static int cfg_int(struct cfg_ctx *x, json_t *v, const char *path,
                   long long lo, long long hi, long long *out)
{
    long long n;

    if (!json_is_integer(v)) {
        cfg_bad(x, path, "expected integer, got %s", cfg_jtype(v));
        return -1;
    }
    n = json_integer_value(v);
    if (n < lo || n > hi) {
        cfg_bad(x, path, "must be %lld..%lld, got %lld", lo, hi, n);
        return -1;
    }
    *out = n;
    return 0;
}

static int cfg_bool(struct cfg_ctx *x, json_t *v, const char *path, bool *out)
{
    if (!json_is_boolean(v)) {
        cfg_bad(x, path, "expected boolean, got %s", cfg_jtype(v));
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* "a, b, c" */
static void cfg_enum_list(const struct cfg_name *names, char *buf, size_t cap)
{
    size_t len = 0;

    buf[0] = '\0';
    for (size_t i = 0; names[i].name != NULL && len < cap; i++)
        len += (size_t)cfg_fmt(buf + len, cap - len, "%s%s", i ? ", " : "",
                                names[i].name);
}

static bool cfg_lookup(const struct cfg_name *names, const char *s, int *out)
{
    for (size_t i = 0; names[i].name != NULL; i++)
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return true;
        }
    return false;
}

static int cfg_enum(struct cfg_ctx *x, json_t *v, const char *path,
                    const struct cfg_name *names, int *out)
{
    char *s = NULL, list[256];
    int rc = 0;

    if (cfg_str(x, v, path, 0, &s) < 0)
        return -1;
    if (!cfg_lookup(names, s, out)) {
        cfg_enum_list(names, list, sizeof(list));
        cfg_bad(x, path, "unknown value \"%s\"; expected one of %s", s, list);
        rc = -1;
    }
    free(s);
    return rc;
}

static int cfg_count(struct cfg_ctx *x, const char *path, size_t n,
                     long long lo, long long hi)
{
    if (n == 0 && lo > 0) {
        cfg_bad(x, path, "must not be empty");
        return -1;
    }
    if ((long long)n < lo || (long long)n > hi) {
        cfg_bad(x, path, "must have %lld..%lld entries, got %zu", lo, hi, n);
        return -1;
    }
    return 0;
}

/* A JSON object of strings, kept in document order. */
static int cfg_map(struct cfg_ctx *x, json_t *v, const char *path,
                   const struct cfg_key *k, struct cfg_pair **out, size_t *n)
{
    char p[CFG_PATH_MAX];
    const char *name;
    json_t *val;
    int rc = 0;

    if (!json_is_object(v)) {
        cfg_bad(x, path, "expected object, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_count(x, path, json_object_size(v), k->lo, k->hi) < 0)
        return -1;
    *out = cfg_calloc(x, json_object_size(v), sizeof(**out));
    if (*out == NULL)
        return -1;
    json_object_foreach(v, name, val) {
        struct cfg_pair *pr = &(*out)[*n];

        cfg_path_key(p, path, name);
        if ((k->flags & F_NAMES) && name[0] == '\0') {
            cfg_bad(x, p, "empty name");
            rc = -1;
            continue;
        }
        if (cfg_str(x, val, p, k->flags & F_NAMES ? F_NONEMPTY : 0,
                    &pr->value) < 0) {
            rc = -1;
            continue;
        }
        pr->name = cfg_strdup(x, name);
        (*n)++;
    }
    return rc;
}

/* A JSON array of distinct non-empty strings. */
static int cfg_strarr(struct cfg_ctx *x, json_t *v, const char *path,
                      const struct cfg_key *k, char ***out, size_t *n)
{
    char p[CFG_PATH_MAX];
    json_t *el;
    size_t i;
    int rc = 0;

    if (!json_is_array(v)) {
        cfg_bad(x, path, "expected array, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_count(x, path, json_array_size(v), k->lo, k->hi) < 0)
        return -1;
    *out = cfg_calloc(x, json_array_size(v), sizeof(**out));
    if (*out == NULL)
        return -1;
    json_array_foreach(v, i, el) {
        char *s = NULL;

        cfg_path_idx(p, path, i);
        if (cfg_str(x, el, p, F_NONEMPTY, &s) < 0) {
            rc = -1;
            continue;
        }
        for (size_t j = 0; j < *n; j++)
            if (strcmp((*out)[j], s) == 0) {
                cfg_bad(x, p, "duplicate \"%s\"", s);
                free(s);
                s = NULL;
                rc = -1;
                break;
            }
        if (s != NULL)
            (*out)[(*n)++] = s;
    }
    return rc;
}

/* ---- the generic object walker ---------------------------------------------- */

static void cfg_object(struct cfg_ctx *x, json_t *obj, const char *path,
                       const struct cfg_schema *s, void *base);

static void cfg_default(struct cfg_ctx *x, const struct cfg_key *k,
                        const char *path, void *base)
{
    char *at = (char *)base + k->off;

    switch (k->type) {
    case T_STR:
        if (k->sdef != NULL && *(char **)at == NULL)
            *(char **)at = cfg_strdup(x, k->sdef);
        break;
    case T_INT: *(int *)at = (int)k->def; break;
    case T_LL: *(long long *)at = k->def; break;
    case T_BOOL: *(bool *)at = k->def != 0; break;
    case T_ENUM: *(int *)at = (int)k->def; break;
    case T_SUB: cfg_object(x, NULL, path, k->sub, at); break;
    case T_FN: k->fn(x, NULL, path, base); break;
    case T_MAP:
    case T_ARR: break;
    }
}

/* Parses a present value; true when it was valid. */
static bool cfg_value(struct cfg_ctx *x, const struct cfg_key *k, json_t *v,
                      const char *path, void *base)
{
    char *at = (char *)base + k->off;
    size_t *n = (size_t *)((char *)base + k->noff);
    long long ll;

    switch (k->type) {
    case T_STR: return cfg_str(x, v, path, k->flags, (char **)at) == 0;
    case T_INT:
        if (cfg_int(x, v, path, k->lo, k->hi, &ll) < 0)
            return false;
        *(int *)at = (int)ll;
        return true;
    case T_LL: return cfg_int(x, v, path, k->lo, k->hi, (long long *)at) == 0;
    case T_BOOL: return cfg_bool(x, v, path, (bool *)at) == 0;
    case T_ENUM: return cfg_enum(x, v, path, k->names, (int *)at) == 0;
    case T_MAP: return cfg_map(x, v, path, k, (struct cfg_pair **)at, n) == 0;
    case T_ARR: return cfg_strarr(x, v, path, k, (char ***)at, n) == 0;
    case T_SUB:
        cfg_object(x, v, path, k->sub, at);
        return true;
    case T_FN: return k->fn(x, v, path, base) == 0;
    }
    return false;
}

static const struct cfg_key *cfg_find(const struct cfg_schema *s,
                                      const char *key)
{
    for (const struct cfg_key *k = s->keys; k->key != NULL; k++)
        if (strcmp(k->key, key) == 0)
            return k;
    return NULL;
}

static const char *cfg_variant_name(const struct cfg_schema *s, unsigned variant)
{
    unsigned bit = 0;

    while (bit < 31 && !(variant & (1u << bit)))
        bit++;
    return s->variant_names[bit];
}

/* One key of an object: default, then the value when present. */
static void cfg_one(struct cfg_ctx *x, json_t *obj, const char *path,
                    const struct cfg_schema *s, const struct cfg_key *k,
                    void *base, unsigned *variant)
{
    json_t *v = obj ? json_object_get(obj, k->key) : NULL;
    char p[CFG_PATH_MAX];
    bool ok = false;

    cfg_path_key(p, path, k->key);
    if (k->variants != 0 && *variant != 0 && !(k->variants & *variant)) {
        if (v != NULL) {
            char msg[128];

            cfg_fmt(msg, sizeof(msg), s->variant_fmt,
                     cfg_variant_name(s, *variant));
            cfg_bad(x, p, "%s", msg);
        }
        return;
    }
    if (v == NULL && (k->flags & F_REQ)) {
        if (k->variants == 0 || *variant != 0)
            cfg_bad(x, p, "required key is missing");
        if (k->type == T_SUB)
            return;
    }
    /* Scalars take the default first so that a bad value leaves it;
     * nested objects and custom keys apply their own when present. */
    if (v == NULL || (k->type != T_SUB && k->type != T_FN))
        cfg_default(x, k, p, base);
    if (v != NULL)
        ok = cfg_value(x, k, v, p, base);
    if ((k->flags & F_VARIANT) && s->variant != NULL)
        *variant = ok ? s->variant(x, base) : 0;
}

/* Walks obj (NULL: absent, apply defaults) by schema s into base. */
static void cfg_object(struct cfg_ctx *x, json_t *obj, const char *path,
                       const struct cfg_schema *s, void *base)
{
    unsigned variant = 0;
    const char *key;
    json_t *v;

    if (obj != NULL && !json_is_object(obj)) {
        cfg_bad(x, path, "expected object, got %s", cfg_jtype(obj));
        return;
    }
    for (const struct cfg_key *k = s->keys; k->key != NULL; k++)
        cfg_one(x, obj, path, s, k, base, &variant);
    if (obj != NULL)
        json_object_foreach(obj, key, v) {
            char p[CFG_PATH_MAX];

            if (cfg_find(s, key) == NULL) {
                cfg_path_key(p, path, key);
                cfg_bad(x, p, "unknown key");
            }
        }
    if (s->check != NULL)
        s->check(x, base, path);
}

/* ---- value checks ------------------------------------------------------------ */

static bool cfg_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CFG_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
            return false;
    return true;
}

static void cfg_check_name(struct cfg_ctx *x, const char *path, const char *s,
                           const char *what)
{
    if (s != NULL && !cfg_name_ok(s))
        cfg_bad(x, path, "%s \"%s\" must be 1..%d letters, digits, '_', '.' "
                "or '-'", what, s, CFG_NAME_MAX);
}

/* A JSON pointer (RFC 6901): "" or "/a/b", "~" only as "~0" or "~1". */
static bool cfg_pointer_ok(const char *s)
{
    if (s[0] != '\0' && s[0] != '/')
        return false;
    for (const char *p = s; *p; p++)
        if (*p == '~' && p[1] != '0' && p[1] != '1')
            return false;
    return true;
}

static void cfg_check_pointer(struct cfg_ctx *x, const char *path,
                              const char *key, const char *s)
{
    char p[CFG_PATH_MAX];

    if (s == NULL || cfg_pointer_ok(s))
        return;
    cfg_path_key(p, path, key);
    cfg_bad(x, p, "\"%s\" is not a JSON pointer (\"\" or \"/a/b\")", s);
}

/* ---- enum names ------------------------------------------------------------- */

static const struct cfg_name cfg_levels[] = {
    { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warn", LOG_WARN },
    { "error", LOG_ERROR }, { NULL, 0 }
};
static const struct cfg_name cfg_formats[] = {
    { "json", LOG_FORMAT_JSON }, { "text", LOG_FORMAT_TEXT }, { NULL, 0 }
};
static const struct cfg_name cfg_kinds[] = {
    { "postgres", CFG_KIND_POSTGRES }, { "rest", CFG_KIND_REST }, { NULL, 0 }
};
static const struct cfg_name cfg_numerics[] = {
    { "number", CFG_NUM_NUMBER }, { "string", CFG_NUM_STRING }, { NULL, 0 }
};
static const struct cfg_name cfg_directions[] = {
    { "both", CFG_DIR_BOTH }, { "a_to_b", CFG_DIR_A_TO_B },
    { "b_to_a", CFG_DIR_B_TO_A }, { NULL, 0 }
};
static const struct cfg_name cfg_strategies[] = {
    { "last_write_wins", CFG_STRAT_LWW }, { "source_priority", CFG_STRAT_PRIORITY },
    { "field_merge", CFG_STRAT_FIELD_MERGE }, { "manual", CFG_STRAT_MANUAL },
    { "plugin", CFG_STRAT_PLUGIN }, { NULL, 0 }
};
/* What field_merge does with a field changed on both sides. */
static const struct cfg_name cfg_fallbacks[] = {
    { "last_write_wins", CFG_STRAT_LWW }, { "source_priority", CFG_STRAT_PRIORITY },
    { "manual", CFG_STRAT_MANUAL }, { NULL, 0 }
};
static const struct cfg_name cfg_priorities[] = {
    { "a", 'a' }, { "b", 'b' }, { NULL, 0 }
};
static const struct cfg_name cfg_styles[] = {
    { "updated_since", CFG_FEED_UPDATED_SINCE }, { "sequence", CFG_FEED_SEQUENCE },
    { NULL, 0 }
};
static const struct cfg_name cfg_creates[] = {
    { "POST", CFG_HTTP_POST }, { "PUT", CFG_HTTP_PUT }, { NULL, 0 }
};
static const struct cfg_name cfg_updates[] = {
    { "PATCH", CFG_HTTP_PATCH }, { "PUT", CFG_HTTP_PUT }, { NULL, 0 }
};
static const struct cfg_name cfg_revs[] = {
    { "body", CFG_REV_BODY }, { "if-match", CFG_REV_IF_MATCH },
    { "query", CFG_REV_QUERY }, { NULL, 0 }
};

#define KEY(k, t, st, f) .key = (k), .type = (t), .off = offsetof(st, f)
#define KEYN(k, t, st, f, nf) KEY(k, t, st, f), .noff = offsetof(st, nf)

/* ---- state, log, http, retry, reconcile ------------------------------------- */

static void cfg_check_state(struct cfg_ctx *x, void *base, const char *path)
{
    struct config *c = base;

    if (c->state_path == NULL && c->name != NULL && cfg_name_ok(c->name))
        c->state_path = cfg_printf(x, "/var/lib/tandem/%s.db", c->name);
}

static const struct cfg_key cfg_state_keys[] = {
    { KEY("path", T_STR, struct config, state_path), .flags = F_NONEMPTY },
    { KEY("retention_s", T_INT, struct config, state_retention_s),
      .lo = 0, .hi = 31536000, .def = 86400 },
    { 0 }
};
static const struct cfg_schema cfg_state_schema = {
    .keys = cfg_state_keys, .check = cfg_check_state
};

static const struct cfg_key cfg_log_keys[] = {
    { KEY("level", T_ENUM, struct config, log_level), .names = cfg_levels,
      .def = LOG_INFO },
    { KEY("format", T_ENUM, struct config, log_format), .names = cfg_formats,
      .def = LOG_FORMAT_JSON },
    { 0 }
};
static const struct cfg_schema cfg_log_schema = { .keys = cfg_log_keys };

/* "ipv4:port", "localhost:port" or "" (disabled), port 0..65535: what
 * daemon/http.c binds, checked before any socket is opened. */
static bool cfg_listen_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN];
    struct in_addr a;
    size_t hlen;
    char *end;
    long port;

    if (s[0] == '\0')
        return true;
    if (colon == NULL || !isdigit((unsigned char)colon[1]))
        return false;
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= sizeof(host))
        return false;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, &a) != 1)
        return false;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    return errno == 0 && *end == '\0' && port >= 0 && port <= 65535;
}

static void cfg_check_http(struct cfg_ctx *x, void *base, const char *path)
{
    struct config *c = base;

    if (c->http_listen != NULL && !cfg_listen_ok(c->http_listen))
        cfg_bad(x, "$.http.listen", "expected \"ipv4:port\" or "
                "\"localhost:port\" (port 0..65535), or \"\" to disable; got "
                "\"%s\"", c->http_listen);
}

static const struct cfg_key cfg_http_keys[] = {
    { KEY("listen", T_STR, struct config, http_listen),
      .sdef = "127.0.0.1:9187" },
    { 0 }
};
static const struct cfg_schema cfg_http_schema = {
    .keys = cfg_http_keys, .check = cfg_check_http
};

static const struct cfg_key cfg_retry_keys[] = {
    { KEY("max_attempts", T_INT, struct cfg_retry, max_attempts),
      .lo = 1, .hi = 1000, .def = 10 },
    { KEY("max_retry_s", T_INT, struct cfg_retry, max_retry_s),
      .lo = 1, .hi = 604800, .def = 3600 },
    { KEY("backoff_max_ms", T_INT, struct cfg_retry, backoff_max_ms),
      .lo = 10, .hi = 3600000, .def = 30000 },
    { 0 }
};
static const struct cfg_schema cfg_retry_schema = { .keys = cfg_retry_keys };

static const struct cfg_key cfg_reconcile_keys[] = {
    { KEY("interval_s", T_INT, struct cfg_reconcile, interval_s),
      .lo = 0, .hi = 604800, .def = 0 },
    { KEYN("mappings", T_ARR, struct cfg_reconcile, mappings, nmappings),
      .lo = 0, .hi = 1024 },
    { 0 }
};
static const struct cfg_schema cfg_reconcile_schema = {
    .keys = cfg_reconcile_keys
};

/* ---- endpoints ---------------------------------------------------------------- */

enum { V_PG = 1u << CFG_KIND_POSTGRES, V_REST = 1u << CFG_KIND_REST };
static const char *const cfg_kind_names[] = { "postgres", "rest" };

/* Reads one conninfo value at *pp, quoted or not, into val (unescaped). */
static int cfg_conninfo_value(const char **pp, struct cfg_buf *val)
{
    const char *p = *pp;
    bool quoted = *p == '\'';

    cfg_buf_put(val, "", 0);
    for (p += quoted; *p; p++) {
        if (quoted ? *p == '\'' : isspace((unsigned char)*p) != 0)
            break;
        if (*p == '\\' && p[1])
            p++;
        cfg_buf_put(val, p, 1);
    }
    if (quoted && *p++ != '\'')
        return -1;
    *pp = p;
    return 0;
}

/* Moves a "password=…" out of a key/value conninfo (libpq quoting rules). */
static int cfg_conninfo_kv(const char *in, struct cfg_buf *rest,
                           char **password, const char **why)
{
    const char *p = in;

    while (*p) {
        const char *start, *kend;
        struct cfg_buf val = { 0 };

        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        start = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        kend = p;
        while (isspace((unsigned char)*p))
            p++;
        if (kend == start || *p != '=') {
            *why = kend == start ? "missing keyword before \"=\""
                                 : "missing \"=\" after a keyword";
            return -1;
        }
        for (p++; isspace((unsigned char)*p); p++)
            ;
        if (cfg_conninfo_value(&p, &val) < 0) {
            free(val.p);
            *why = "unterminated quoted value";
            return -1;
        }
        if ((size_t)(kend - start) == 8 && strncmp(start, "password", 8) == 0) {
            free(*password);
            *password = val.p;
            if (val.failed)
                return -ENOMEM;
            continue;
        }
        free(val.p);
        if (rest->len > 0)
            cfg_buf_put(rest, " ", 1);
        cfg_buf_put(rest, start, (size_t)(p - start));
    }
    return 0;
}

static int cfg_hex(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; *bad when malformed. */
static char *cfg_pct_decode(const char *s, size_t n, bool *bad)
{
    char *out = malloc(n + 1);
    size_t j = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;

        if (s[i] != '%') {
            out[j++] = s[i];
            continue;
        }
        hi = i + 1 < n ? cfg_hex((unsigned char)s[i + 1]) : -1;
        lo = i + 2 < n ? cfg_hex((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            *bad = true;
            free(out);
            return NULL;
        }
        out[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[j] = '\0';
    return out;
}

/* Moves the password out of a postgresql:// URI (user:pw@, ?password=). */
static int cfg_conninfo_uri(const char *in, size_t plen, struct cfg_buf *rest,
                            char **password, const char **why)
{
    const char *auth = in + plen, *p = auth, *q, *s;
    bool bad = false, first = true;

    cfg_buf_put(rest, in, plen);
    while (*p && *p != '@' && *p != '/')  /* libpq's userinfo rule */
        p++;
    if (*p == '@') {
        const char *colon = memchr(auth, ':', (size_t)(p - auth));

        if (colon != NULL) {
            free(*password);
            *password = cfg_pct_decode(colon + 1, (size_t)(p - colon - 1), &bad);
            if (*password == NULL)
                goto fail;
        }
        cfg_buf_put(rest, auth, (size_t)((colon ? colon : p) - auth));
        cfg_buf_put(rest, "@", 1);
        auth = p + 1;
    }
    q = strchr(auth, '?');
    cfg_buf_put(rest, auth, q ? (size_t)(q - auth) : strlen(auth));
    for (s = q ? q + 1 : NULL; s != NULL; s = q ? q + 1 : NULL) {
        size_t n;

        q = strchr(s, '&');
        n = q ? (size_t)(q - s) : strlen(s);
        if (n >= 9 && strncmp(s, "password=", 9) == 0) {
            free(*password);
            *password = cfg_pct_decode(s + 9, n - 9, &bad);
            if (*password == NULL)
                goto fail;
        } else if (n > 0) {
            cfg_buf_put(rest, first ? "?" : "&", 1);
            cfg_buf_put(rest, s, n);
            first = false;
        }
    }
    return 0;
fail:
    *why = "invalid percent-encoding in the password";
    return bad ? -1 : -ENOMEM;
}

static size_t cfg_uri_prefix(const char *s)
{
    if (strncmp(s, "postgresql://", 13) == 0)
        return 13;
    if (strncmp(s, "postgres://", 11) == 0)
        return 11;
    return 0;
}

/* Splits a password out of ep->conninfo into ep->password (a secret). */
static void cfg_conninfo(struct cfg_ctx *x, struct cfg_endpoint *ep,
                         const char *path)
{
    struct cfg_buf rest = { 0 };
    char *pw = NULL, p[CFG_PATH_MAX];
    const char *why = "";
    size_t plen = cfg_uri_prefix(ep->conninfo);
    int rc;

    cfg_buf_put(&rest, "", 0);
    rc = plen ? cfg_conninfo_uri(ep->conninfo, plen, &rest, &pw, &why)
              : cfg_conninfo_kv(ep->conninfo, &rest, &pw, &why);
    if (rc == 0 && rest.failed)
        rc = -ENOMEM;
    cfg_secret(x, pw);
    cfg_path_key(p, path, "conninfo");
    if (rc == -ENOMEM)
        x->oom = true;
    else if (rc < 0)
        cfg_bad(x, p, "malformed: %s", why);
    else if (pw != NULL && ep->password != NULL)
        cfg_bad(x, p, "has a password and %s.password is set too; keep one",
                path);
    else if (pw != NULL) {
        free(ep->conninfo);
        ep->conninfo = rest.p;
        rest.p = NULL;
        ep->password = pw;
        pw = NULL;
    }
    free(rest.p);
    free(pw);
}

/* "tandem_<name>_<endpoint>", folded to a valid slot name. */
static char *cfg_derive_name(struct cfg_ctx *x, const char *ep)
{
    const char *name = x->c->name ? x->c->name : "pipeline";
    char *s = cfg_printf(x, "tandem_%s_%s", name, ep);

    if (s == NULL)
        return NULL;
    for (char *p = s; *p; p++)
        *p = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    if (strlen(s) > CFG_NAME_MAX)
        s[CFG_NAME_MAX] = '\0';
    return s;
}

static bool cfg_slot_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CFG_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

static void cfg_pg_names(struct cfg_ctx *x, struct cfg_endpoint *ep,
                         const char *path)
{
    char p[CFG_PATH_MAX];

    if (ep->name == NULL)
        return;
    if (ep->slot == NULL)
        ep->slot = cfg_derive_name(x, ep->name);
    if (ep->publication == NULL)
        ep->publication = cfg_derive_name(x, ep->name);
    if (ep->origin == NULL)
        ep->origin = cfg_derive_name(x, ep->name);
    cfg_path_key(p, path, "slot");
    if (ep->slot != NULL && !cfg_slot_ok(ep->slot))
        cfg_bad(x, p, "\"%s\" must be 1..%d lower-case letters, digits or '_'",
                ep->slot, CFG_NAME_MAX);
    cfg_path_key(p, path, "publication");
    if (ep->publication != NULL && strlen(ep->publication) > CFG_NAME_MAX)
        cfg_bad(x, p, "must be at most %d bytes", CFG_NAME_MAX);
    cfg_path_key(p, path, "origin");
    if (ep->origin != NULL && strlen(ep->origin) > CFG_ORIGIN_MAX)
        cfg_bad(x, p, "must be at most %d bytes", CFG_ORIGIN_MAX);
}

static void cfg_check_base_url(struct cfg_ctx *x, struct cfg_endpoint *ep,
                               const char *path)
{
    char p[CFG_PATH_MAX];
    char *u = ep->base_url;
    size_t scheme = strncmp(u, "http://", 7) == 0 ? 7
                  : strncmp(u, "https://", 8) == 0 ? 8 : 0;
    size_t n = strlen(u);

    cfg_path_key(p, path, "base_url");
    if (scheme == 0 || n == scheme || u[scheme] == '/') {
        cfg_bad(x, p, "expected \"http://host[:port][/path]\" or https://, "
                "got \"%s\"", u);
        return;
    }
    while (n > scheme + 1 && u[n - 1] == '/')  /* resources start with "/" */
        u[--n] = '\0';
}

/* Header values that carry credentials are secrets even when literal. */
static bool cfg_secret_header(const char *name)
{
    static const char *const words[] = {
        "authorization", "cookie", "token", "secret", "password", "api-key",
        "apikey", "api_key", NULL
    };

    for (size_t i = 0; words[i] != NULL; i++)
        if (strcasestr(name, words[i]) != NULL)
            return true;
    return false;
}

static bool cfg_token_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && strchr("!#$%&'*+-.^_`|~", *p) == NULL)
            return false;
    return true;
}

static void cfg_check_headers(struct cfg_ctx *x, struct cfg_endpoint *ep,
                              const char *path)
{
    char hp[CFG_PATH_MAX], p[CFG_PATH_MAX];

    cfg_path_key(hp, path, "headers");
    for (size_t i = 0; i < ep->nheaders; i++) {
        struct cfg_pair *h = &ep->headers[i];

        cfg_path_key(p, hp, h->name);
        if (!cfg_token_ok(h->name))
            cfg_bad(x, p, "invalid header name");
        else if (strpbrk(h->value, "\r\n") != NULL)
            cfg_bad(x, p, "header value must not contain a line break");
        if (cfg_secret_header(h->name))
            cfg_secret(x, h->value);
    }
}

static void cfg_check_endpoint(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_endpoint *ep = base;

    if (ep->conninfo != NULL)
        cfg_conninfo(x, ep, path);
    cfg_secret(x, ep->password);
    if (ep->kind == CFG_KIND_POSTGRES)
        cfg_pg_names(x, ep, path);
    if (ep->base_url != NULL)
        cfg_check_base_url(x, ep, path);
    cfg_check_headers(x, ep, path);
}

static unsigned cfg_endpoint_variant(struct cfg_ctx *x, void *base)
{
    return 1u << ((struct cfg_endpoint *)base)->kind;
}

#define EP struct cfg_endpoint
static const struct cfg_key cfg_endpoint_keys[] = {
    { KEY("kind", T_ENUM, EP, kind), .flags = F_REQ | F_VARIANT,
      .names = cfg_kinds },
    { KEY("conninfo", T_STR, EP, conninfo), .flags = F_REQ | F_NONEMPTY,
      .variants = V_PG },
    { KEY("password", T_STR, EP, password), .variants = V_PG },
    { KEY("publication", T_STR, EP, publication), .flags = F_NONEMPTY,
      .variants = V_PG },
    { KEY("slot", T_STR, EP, slot), .flags = F_NONEMPTY, .variants = V_PG },
    { KEY("origin", T_STR, EP, origin), .flags = F_NONEMPTY, .variants = V_PG },
    { KEY("apply_as_replica", T_BOOL, EP, apply_as_replica), .def = false,
      .variants = V_PG },
    { KEY("slot_retained_warn_bytes", T_LL, EP, slot_retained_warn_bytes),
      .lo = 0, .hi = 1LL << 50, .def = 1LL << 30, .variants = V_PG },
    { KEY("base_url", T_STR, EP, base_url), .flags = F_REQ | F_NONEMPTY,
      .variants = V_REST },
    { KEYN("headers", T_MAP, EP, headers, nheaders), .lo = 0, .hi = 64,
      .variants = V_REST },
    { KEY("poll_interval_ms", T_INT, EP, poll_interval_ms),
      .lo = 10, .hi = 3600000, .def = 1000, .variants = V_REST },
    { KEY("page_size", T_INT, EP, page_size),
      .lo = 1, .hi = 10000, .def = 100, .variants = V_REST },
    { KEY("timeout_ms", T_INT, EP, timeout_ms),
      .lo = 100, .hi = 600000, .def = 10000, .variants = V_REST },
    { KEY("max_in_flight", T_INT, EP, max_in_flight),
      .lo = 1, .hi = 256, .def = 8, .variants = V_REST },
    { KEY("max_requests_per_s", T_INT, EP, max_requests_per_s),
      .lo = 1, .hi = 100000, .def = 50, .variants = V_REST },
    { KEY("max_response_bytes", T_LL, EP, max_response_bytes),
      .lo = 1024, .hi = 1LL << 32, .def = 64LL << 20, .variants = V_REST },
    { KEY("tls_verify", T_BOOL, EP, tls_verify), .def = true,
      .variants = V_REST },
    { KEY("numeric", T_ENUM, EP, numeric), .names = cfg_numerics,
      .def = CFG_NUM_NUMBER, .variants = V_REST },
    { 0 }
};
#undef EP

static const struct cfg_schema cfg_endpoint_schema = {
    .keys = cfg_endpoint_keys,
    .variant = cfg_endpoint_variant,
    .variant_names = cfg_kind_names,
    .variant_fmt = "not valid for a %s endpoint",
    .check = cfg_check_endpoint,
};

static int cfg_endpoints(struct cfg_ctx *x, json_t *v, const char *path,
                         void *base)
{
    struct config *c = base;
    char p[CFG_PATH_MAX];
    const char *name;
    json_t *ev;

    if (v == NULL)
        return 0;
    if (!json_is_object(v)) {
        cfg_bad(x, path, "expected object, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_count(x, path, json_object_size(v), 1, 64) < 0)
        return -1;
    c->endpoints = cfg_calloc(x, json_object_size(v), sizeof(*c->endpoints));
    if (c->endpoints == NULL)
        return -1;
    json_object_foreach(v, name, ev) {
        struct cfg_endpoint *ep = &c->endpoints[c->nendpoints++];

        cfg_path_key(p, path, name);
        cfg_check_name(x, p, name, "endpoint name");
        ep->name = cfg_strdup(x, name);
        cfg_object(x, ev, p, &cfg_endpoint_schema, ep);
    }
    return 0;
}

/* ---- mapping sides ------------------------------------------------------------ */

enum { V_US = 1u << (CFG_FEED_UPDATED_SINCE - 1),
       V_SEQ = 1u << (CFG_FEED_SEQUENCE - 1) };
static const char *const cfg_style_names[] = { "updated_since", "sequence" };

static void cfg_check_feed(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_feed *f = base;
    bool seq = f->style == CFG_FEED_SEQUENCE;

    /* records is set whenever a feed was given: cfg_check_sides relies on it. */
    if (f->records == NULL)
        f->records = cfg_strdup(x, seq ? "/results" : "");
    if (seq && f->deleted_field == NULL)
        f->deleted_field = cfg_strdup(x, "deleted");
    cfg_check_pointer(x, path, "records", f->records);
    cfg_check_pointer(x, path, "last_seq", f->last_seq);
}

static unsigned cfg_feed_variant(struct cfg_ctx *x, void *base)
{
    return 1u << (((struct cfg_feed *)base)->style - 1);
}

#define FD struct cfg_feed
static const struct cfg_key cfg_feed_keys[] = {
    { KEY("style", T_ENUM, FD, style), .flags = F_REQ | F_VARIANT,
      .names = cfg_styles },
    { KEY("cursor_field", T_STR, FD, cursor_field), .flags = F_REQ | F_NONEMPTY,
      .variants = V_US },
    { KEY("cursor_param", T_STR, FD, cursor_param), .flags = F_REQ | F_NONEMPTY,
      .variants = V_US },
    { KEY("offset_param", T_STR, FD, offset_param), .flags = F_NONEMPTY,
      .variants = V_US },
    { KEY("path", T_STR, FD, path), .flags = F_NONEMPTY, .variants = V_SEQ },
    { KEY("since_param", T_STR, FD, since_param), .flags = F_NONEMPTY,
      .sdef = "since", .variants = V_SEQ },
    { KEY("seq_field", T_STR, FD, seq_field), .flags = F_NONEMPTY,
      .sdef = "seq", .variants = V_SEQ },
    { KEY("id_field", T_STR, FD, id_field), .flags = F_NONEMPTY,
      .sdef = "id", .variants = V_SEQ },
    { KEY("doc_field", T_STR, FD, doc_field), .flags = F_NONEMPTY,
      .sdef = "doc", .variants = V_SEQ },
    { KEY("last_seq", T_STR, FD, last_seq), .sdef = "/last_seq",
      .variants = V_SEQ },
    { KEY("limit_param", T_STR, FD, limit_param), .flags = F_NONEMPTY,
      .sdef = "limit" },
    { KEY("records", T_STR, FD, records) },
    { KEY("deleted_field", T_STR, FD, deleted_field), .flags = F_NONEMPTY },
    { KEYN("params", T_MAP, FD, params, nparams), .lo = 0, .hi = 64 },
    { 0 }
};
#undef FD

static const struct cfg_schema cfg_feed_schema = {
    .keys = cfg_feed_keys,
    .variant = cfg_feed_variant,
    .variant_names = cfg_style_names,
    .variant_fmt = "not valid for feed style %s",
    .check = cfg_check_feed,
};

static int cfg_feed(struct cfg_ctx *x, json_t *v, const char *path, void *base)
{
    if (v != NULL)
        cfg_object(x, v, path, &cfg_feed_schema, &((struct cfg_side *)base)->feed);
    return 0;
}

/* {"soft": "field"}, the alternative to a word for deletes. */
struct cfg_soft {
    char *field;
};

static const struct cfg_key cfg_soft_keys[] = {
    { KEY("soft", T_STR, struct cfg_soft, field), .flags = F_REQ | F_NONEMPTY },
    { 0 }
};
static const struct cfg_schema cfg_soft_schema = { .keys = cfg_soft_keys };

/* A word among names, or {"soft": "field"} (then *soft is set). */
static int cfg_enum_or_soft(struct cfg_ctx *x, json_t *v, const char *path,
                            const struct cfg_name *names, int *out, char **soft)
{
    struct cfg_soft sf = { NULL };
    char list[256], *s = NULL;
    int rc = 0;

    cfg_enum_list(names, list, sizeof(list));
    if (json_is_object(v)) {
        cfg_object(x, v, path, &cfg_soft_schema, &sf);
        *soft = sf.field;
        return sf.field ? 0 : -1;
    }
    if (!json_is_string(v)) {
        cfg_bad(x, path, "expected one of %s, {\"soft\": \"field\"}; got %s",
                list, cfg_jtype(v));
        return -1;
    }
    if (cfg_str(x, v, path, 0, &s) < 0)
        return -1;
    if (!cfg_lookup(names, s, out)) {
        cfg_bad(x, path, "unknown value \"%s\"; expected one of %s, "
                "{\"soft\": \"field\"}", s, list);
        rc = -1;
    }
    free(s);
    return rc;
}

static const struct cfg_name cfg_write_deletes[] = {
    { "DELETE", CFG_HTTP_DELETE }, { NULL, 0 }
};

static int cfg_write_delete(struct cfg_ctx *x, json_t *v, const char *path,
                            void *base)
{
    struct cfg_write *w = base;
    int m = CFG_HTTP_DELETE;

    w->del = CFG_HTTP_DELETE;
    if (v == NULL)
        return 0;
    if (cfg_enum_or_soft(x, v, path, cfg_write_deletes, &m,
                         &w->del_soft_field) < 0)
        return -1;
    w->del = w->del_soft_field ? CFG_HTTP_PATCH : (enum cfg_http_method)m;
    return 0;
}

static void cfg_check_write(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_write *w = base;
    char p[CFG_PATH_MAX];

    if (w->revision_field != NULL && w->revision_in == CFG_REV_NONE) {
        cfg_path_key(p, path, "revision_in");
        cfg_bad(x, p, "required with revision_field; expected one of body, "
                "if-match, query");
    }
    if (w->revision_field == NULL && w->revision_in != CFG_REV_NONE) {
        cfg_path_key(p, path, "revision_field");
        cfg_bad(x, p, "required with revision_in");
    }
}

#define WR struct cfg_write
static const struct cfg_key cfg_write_keys[] = {
    { KEY("create", T_ENUM, WR, create), .names = cfg_creates,
      .def = CFG_HTTP_POST },
    { KEY("update", T_ENUM, WR, update), .names = cfg_updates,
      .def = CFG_HTTP_PATCH },
    { .key = "delete", .type = T_FN, .fn = cfg_write_delete },
    { KEY("revision_field", T_STR, WR, revision_field), .flags = F_NONEMPTY },
    { KEY("revision_in", T_ENUM, WR, revision_in), .names = cfg_revs,
      .def = CFG_REV_NONE },
    { KEY("revision_param", T_STR, WR, revision_param), .flags = F_NONEMPTY,
      .sdef = "rev" },
    { 0 }
};
#undef WR

static const struct cfg_schema cfg_write_schema = {
    .keys = cfg_write_keys, .check = cfg_check_write
};

/* One part of a table name: "quoted" keeps case, unquoted folds. */
static int cfg_ident_part(const char **pp, struct cfg_buf *out)
{
    const char *p = *pp;

    if (*p == '"') {
        for (p++; *p != '"' || p[1] == '"'; p++) {
            if (*p == '\0')
                return -1;
            if (*p == '"')
                p++;
            cfg_buf_put(out, p, 1);
        }
        p++;
    } else {
        for (; *p && *p != '.'; p++) {
            unsigned char ch = (unsigned char)*p;
            char low = (char)tolower(ch);

            if (!isalnum(ch) && ch != '_' && ch != '$' && ch < 0x80)
                return -1;
            cfg_buf_put(out, &low, 1);
        }
        if (out->len > 0 && isdigit((unsigned char)out->p[0]))
            return -1;
    }
    *pp = p;
    return out->len > 0 && out->len <= CFG_NAME_MAX ? 0 : -1;
}

/* "schema.table" or "table" (schema public) into sd->schema, sd->relname. */
static void cfg_split_table(struct cfg_ctx *x, struct cfg_side *sd,
                            const char *path)
{
    struct cfg_buf a = { 0 }, b = { 0 };
    const char *p = sd->table;
    char tp[CFG_PATH_MAX];
    int rc;

    cfg_buf_put(&a, "", 0);
    cfg_buf_put(&b, "", 0);
    rc = cfg_ident_part(&p, &a);
    if (rc == 0 && *p == '.') {
        p++;
        rc = cfg_ident_part(&p, &b);
    } else if (rc == 0) {
        struct cfg_buf t = a;

        a = b;
        b = t;
        cfg_buf_put(&a, "public", 6);
    }
    if (rc == 0 && *p != '\0')
        rc = -1;
    if (a.failed || b.failed)
        x->oom = true;
    if (rc < 0) {
        cfg_path_key(tp, path, "table");
        cfg_bad(x, tp, "expected \"table\" or \"schema.table\" (identifiers "
                "of at most %d bytes), got \"%s\"", CFG_NAME_MAX, sd->table);
    }
    if (rc < 0 || x->oom) {
        free(a.p);
        free(b.p);
        return;
    }
    sd->schema = a.p;
    sd->relname = b.p;
}

static void cfg_unknown_endpoint(struct cfg_ctx *x, const char *path,
                                 const char *name)
{
    char list[256] = "", p[CFG_PATH_MAX];
    size_t len = 0;

    for (size_t i = 0; i < x->c->nendpoints && len < sizeof(list); i++)
        if (x->c->endpoints[i].name != NULL)
            len += (size_t)cfg_fmt(list + len, sizeof(list) - len, "%s%s",
                                    len ? ", " : "", x->c->endpoints[i].name);
    cfg_path_key(p, path, "endpoint");
    if (len > 0)
        cfg_bad(x, p, "unknown endpoint \"%s\"; expected one of %s", name, list);
    else
        cfg_bad(x, p, "unknown endpoint \"%s\"", name);
}

static void cfg_check_side(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_side *sd = base;
    char p[CFG_PATH_MAX];

    if (sd->endpoint != NULL && sd->ep == NULL)
        cfg_unknown_endpoint(x, path, sd->endpoint);
    if (sd->table != NULL)
        cfg_split_table(x, sd, path);
    if (sd->resource != NULL && sd->resource[0] != '/') {
        cfg_path_key(p, path, "resource");
        cfg_bad(x, p, "must start with \"/\", got \"%s\"", sd->resource);
    }
    if (sd->feed.style == CFG_FEED_SEQUENCE && sd->feed.path == NULL &&
        sd->resource != NULL)
        sd->feed.path = cfg_printf(x, "%s/_changes", sd->resource);
}

static unsigned cfg_side_variant(struct cfg_ctx *x, void *base)
{
    struct cfg_side *sd = base;

    sd->ep = config_endpoint(x->c, sd->endpoint);
    return sd->ep ? 1u << sd->ep->kind : 0;
}

#define SD struct cfg_side
static const struct cfg_key cfg_side_keys[] = {
    { KEY("endpoint", T_STR, SD, endpoint),
      .flags = F_REQ | F_NONEMPTY | F_VARIANT },
    { KEY("table", T_STR, SD, table), .flags = F_REQ | F_NONEMPTY,
      .variants = V_PG },
    { KEY("resource", T_STR, SD, resource), .flags = F_REQ | F_NONEMPTY,
      .variants = V_REST },
    { KEYN("key", T_ARR, SD, key, nkey), .flags = F_REQ, .lo = 1, .hi = 32 },
    { .key = "feed", .type = T_FN, .fn = cfg_feed, .variants = V_REST },
    { KEY("write", T_SUB, SD, write), .sub = &cfg_write_schema,
      .variants = V_REST },
    { 0 }
};
#undef SD

static const struct cfg_schema cfg_side_schema = {
    .keys = cfg_side_keys,
    .variant = cfg_side_variant,
    .variant_names = cfg_kind_names,
    .variant_fmt = "not valid for a %s endpoint",
    .check = cfg_check_side,
};

/* ---- mappings ----------------------------------------------------------------- */

static int cfg_priority(struct cfg_ctx *x, json_t *v, const char *path,
                        void *base)
{
    struct cfg_mapping *m = base;
    int p = 'a';

    m->priority = 'a';
    if (v == NULL)
        return 0;
    if (cfg_enum(x, v, path, cfg_priorities, &p) < 0)
        return -1;
    m->priority = (char)p;
    return 0;
}

static void cfg_check_conflict(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_mapping *m = base;
    char p[CFG_PATH_MAX];

    cfg_path_key(p, path, "plugin");
    if (m->strategy == CFG_STRAT_PLUGIN && m->plugin == NULL)
        cfg_bad(x, p, "required key is missing (strategy plugin)");
    if (m->strategy != CFG_STRAT_PLUGIN && m->plugin != NULL)
        cfg_bad(x, p, "only valid with strategy plugin");
}

#define MP struct cfg_mapping
static const struct cfg_key cfg_conflict_keys[] = {
    { KEY("strategy", T_ENUM, MP, strategy), .names = cfg_strategies,
      .def = CFG_STRAT_LWW },
    { KEY("fallback", T_ENUM, MP, fallback), .names = cfg_fallbacks,
      .def = CFG_STRAT_LWW },
    { KEY("timestamp_field", T_STR, MP, timestamp_field), .flags = F_NONEMPTY },
    { .key = "priority", .type = T_FN, .fn = cfg_priority },
    { KEY("plugin", T_STR, MP, plugin), .flags = F_NONEMPTY },
    { 0 }
};
static const struct cfg_schema cfg_conflict_schema = {
    .keys = cfg_conflict_keys, .check = cfg_check_conflict
};

static const struct cfg_key cfg_canary_keys[] = {
    { KEY("interval_s", T_INT, MP, canary_interval_s),
      .lo = 1, .hi = 86400, .def = 30 },
    { KEY("deadline_s", T_INT, MP, canary_deadline_s),
      .lo = 1, .hi = 604800, .def = 60 },
    { KEY("key", T_STR, MP, canary_key), .flags = F_NONEMPTY,
      .sdef = "__tandem_canary" },
    { 0 }
};
static const struct cfg_schema cfg_canary_schema = { .keys = cfg_canary_keys };

/* An object enables canaries; true/false too, with the defaults. */
static int cfg_canary(struct cfg_ctx *x, json_t *v, const char *path,
                      void *base)
{
    struct cfg_mapping *m = base;

    m->canary_enabled = v != NULL && !json_is_false(v);
    if (v != NULL && !json_is_object(v) && !json_is_boolean(v)) {
        cfg_bad(x, path, "expected object or boolean, got %s", cfg_jtype(v));
        m->canary_enabled = false;
    }
    cfg_object(x, json_is_object(v) ? v : NULL, path, &cfg_canary_schema, m);
    return 0;
}

static const struct cfg_name cfg_deletes_names[] = {
    { "propagate", CFG_DEL_PROPAGATE }, { "ignore", CFG_DEL_IGNORE },
    { NULL, 0 }
};

static int cfg_deletes(struct cfg_ctx *x, json_t *v, const char *path,
                       void *base)
{
    struct cfg_mapping *m = base;
    int d = CFG_DEL_PROPAGATE;

    m->deletes = CFG_DEL_PROPAGATE;
    if (v == NULL)
        return 0;
    if (cfg_enum_or_soft(x, v, path, cfg_deletes_names, &d,
                         &m->soft_delete_field) < 0)
        return -1;
    m->deletes = m->soft_delete_field ? CFG_DEL_SOFT : (enum cfg_deletes)d;
    return 0;
}

static const struct cfg_key cfg_dep_keys[] = {
    { KEY("mapping", T_STR, struct cfg_dependency, mapping),
      .flags = F_REQ | F_NONEMPTY },
    { KEYN("fields", T_MAP, struct cfg_dependency, fields, nfields),
      .flags = F_REQ | F_NAMES, .lo = 1, .hi = 64 },
    { 0 }
};
static const struct cfg_schema cfg_dep_schema = { .keys = cfg_dep_keys };

static int cfg_depends_on(struct cfg_ctx *x, json_t *v, const char *path,
                          void *base)
{
    struct cfg_mapping *m = base;
    char p[CFG_PATH_MAX];
    json_t *el;
    size_t i;

    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        cfg_bad(x, path, "expected array, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_count(x, path, json_array_size(v), 0, 64) < 0)
        return -1;
    m->depends_on = cfg_calloc(x, json_array_size(v), sizeof(*m->depends_on));
    if (m->depends_on == NULL)
        return -1;
    json_array_foreach(v, i, el) {
        cfg_path_idx(p, path, i);
        cfg_object(x, el, p, &cfg_dep_schema, &m->depends_on[m->ndepends_on++]);
    }
    return 0;
}

/* Side b names are distinct: the field map is one-to-one. */
static void cfg_check_fields(struct cfg_ctx *x, struct cfg_mapping *m,
                             const char *path)
{
    char fp[CFG_PATH_MAX], p[CFG_PATH_MAX];

    cfg_path_key(fp, path, "fields");
    for (size_t i = 1; i < m->nfields; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->fields[i].value, m->fields[j].value) == 0) {
                cfg_path_key(p, fp, m->fields[i].name);
                cfg_bad(x, p, "side b name \"%s\" is already mapped from "
                        "\"%s\"; the field map must be one-to-one",
                        m->fields[i].value, m->fields[j].name);
                break;
            }
}

static void cfg_check_keys(struct cfg_ctx *x, struct cfg_mapping *m,
                           struct cfg_side *sd, const char *path, char side)
{
    char sp[CFG_PATH_MAX], kp[CFG_PATH_MAX], p[CFG_PATH_MAX];

    if (m->nfields == 0)
        return;
    cfg_fmt(sp, sizeof(sp), "%s.%c", path, side);
    cfg_path_key(kp, sp, "key");
    for (size_t i = 0; i < sd->nkey; i++) {
        const char *k = sd->key[i];
        bool mapped = side == 'a' ? config_field_a_to_b(m, k) != NULL
                                  : config_field_b_to_a(m, k) != NULL;

        cfg_path_idx(p, kp, i);
        if (!mapped)
            cfg_bad(x, p, "\"%s\" is not in fields (side %c names are its %s)",
                    k, side, side == 'a' ? "keys" : "values");
    }
}

/* A rest side that is a source (direction permitting) needs a feed. */
static void cfg_check_source(struct cfg_ctx *x, struct cfg_mapping *m,
                             struct cfg_side *sd, char side, const char *path)
{
    enum cfg_direction into_peer = side == 'a' ? CFG_DIR_A_TO_B : CFG_DIR_B_TO_A;
    char p[CFG_PATH_MAX];

    if (sd->ep->kind != CFG_KIND_REST || sd->feed.records != NULL)
        return;
    if (m->direction != CFG_DIR_BOTH && m->direction != into_peer)
        return;
    cfg_fmt(p, sizeof(p), "%s.%c.feed", path, side);
    cfg_bad(x, p, "required key is missing: side %c is a rest source "
            "(direction %s)", side, cfg_directions[m->direction].name);
}

static bool cfg_same_collection(const struct cfg_side *a,
                                const struct cfg_side *b)
{
    if (a->ep != b->ep)
        return false;
    if (a->schema && b->schema && a->relname && b->relname)
        return strcmp(a->schema, b->schema) == 0 &&
               strcmp(a->relname, b->relname) == 0;
    return a->resource && b->resource && strcmp(a->resource, b->resource) == 0;
}

static void cfg_check_sides(struct cfg_ctx *x, struct cfg_mapping *m,
                            const char *path)
{
    if (m->a.ep == NULL || m->b.ep == NULL)
        return;
    if (m->a.ep->kind == CFG_KIND_REST && m->b.ep->kind == CFG_KIND_REST)
        cfg_bad(x, path, "sides a and b are both rest endpoints; one side "
                "must be postgres");
    if (cfg_same_collection(&m->a, &m->b))
        cfg_bad(x, path, "sides a and b are the same collection");
    cfg_check_source(x, m, &m->a, 'a', path);
    cfg_check_source(x, m, &m->b, 'b', path);
}

static void cfg_check_mapping(struct cfg_ctx *x, void *base, const char *path)
{
    struct cfg_mapping *m = base;
    char p[CFG_PATH_MAX];

    cfg_path_key(p, path, "name");
    cfg_check_name(x, p, m->name, "mapping name");
    cfg_check_fields(x, m, path);
    cfg_check_keys(x, m, &m->a, path, 'a');
    cfg_check_keys(x, m, &m->b, path, 'b');
    cfg_check_sides(x, m, path);
}

static const struct cfg_key cfg_mapping_keys[] = {
    { KEY("name", T_STR, MP, name), .flags = F_REQ | F_NONEMPTY },
    { KEY("a", T_SUB, MP, a), .flags = F_REQ, .sub = &cfg_side_schema },
    { KEY("b", T_SUB, MP, b), .flags = F_REQ, .sub = &cfg_side_schema },
    { KEYN("fields", T_MAP, MP, fields, nfields), .flags = F_REQ | F_NAMES,
      .lo = 1, .hi = 4096 },
    { KEY("direction", T_ENUM, MP, direction), .names = cfg_directions,
      .def = CFG_DIR_BOTH },
    { .key = "conflict", .type = T_SUB, .off = 0, .sub = &cfg_conflict_schema },
    { .key = "deletes", .type = T_FN, .fn = cfg_deletes },
    { .key = "canary", .type = T_FN, .fn = cfg_canary },
    { .key = "depends_on", .type = T_FN, .fn = cfg_depends_on },
    { KEY("dependency_wait_s", T_INT, MP, dependency_wait_s),
      .lo = 1, .hi = 604800, .def = 300 },
    { 0 }
};
#undef MP

static const struct cfg_schema cfg_mapping_schema = {
    .keys = cfg_mapping_keys, .check = cfg_check_mapping
};

static int cfg_mappings(struct cfg_ctx *x, json_t *v, const char *path,
                        void *base)
{
    struct config *c = base;
    char p[CFG_PATH_MAX];
    json_t *el;
    size_t i;

    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        cfg_bad(x, path, "expected array, got %s", cfg_jtype(v));
        return -1;
    }
    if (cfg_count(x, path, json_array_size(v), 1, 1024) < 0)
        return -1;
    c->mappings = cfg_calloc(x, json_array_size(v), sizeof(*c->mappings));
    if (c->mappings == NULL)
        return -1;
    json_array_foreach(v, i, el) {
        cfg_path_idx(p, path, i);
        cfg_object(x, el, p, &cfg_mapping_schema, &c->mappings[c->nmappings++]);
    }
    return 0;
}

/* ---- cross-checks --------------------------------------------------------------- */

static void cfg_check_mapping_names(struct cfg_ctx *x, struct config *c)
{
    char p[CFG_PATH_MAX];

    for (size_t i = 1; i < c->nmappings; i++) {
        const char *n = c->mappings[i].name;

        for (size_t j = 0; n != NULL && j < i; j++)
            if (c->mappings[j].name && strcmp(c->mappings[j].name, n) == 0) {
                cfg_fmt(p, sizeof(p), "$.mappings[%zu].name", i);
                cfg_bad(x, p, "duplicate mapping name \"%s\" (also "
                        "$.mappings[%zu].name)", n, j);
                break;
            }
    }
}

static bool cfg_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

/* Resolves d->parent and checks its field pairs. */
static void cfg_check_dep(struct cfg_ctx *x, struct config *c,
                          struct cfg_mapping *m, struct cfg_dependency *d,
                          const char *path)
{
    char p[CFG_PATH_MAX], fp[CFG_PATH_MAX];

    if (d->mapping == NULL)
        return;
    d->parent = config_mapping(c, d->mapping);
    if (d->parent == NULL) {
        cfg_path_key(p, path, "mapping");
        cfg_bad(x, p, "unknown mapping \"%s\"", d->mapping);
    }
    cfg_path_key(fp, path, "fields");
    for (size_t i = 0; i < d->nfields; i++) {
        struct cfg_pair *f = &d->fields[i];

        cfg_path_key(p, fp, f->name);
        if (m->nfields > 0 && config_field_a_to_b(m, f->name) == NULL)
            cfg_bad(x, p, "\"%s\" is not a side a field of mapping \"%s\"",
                    f->name, m->name ? m->name : "?");
        if (d->parent != NULL && !cfg_has(d->parent->a.key, d->parent->a.nkey,
                                          f->value))
            cfg_bad(x, p, "\"%s\" is not a side a key field of mapping \"%s\"",
                    f->value, d->parent->name);
    }
}

static void cfg_check_deps(struct cfg_ctx *x, struct config *c)
{
    char p[CFG_PATH_MAX];

    for (size_t i = 0; i < c->nmappings; i++) {
        struct cfg_mapping *m = &c->mappings[i];

        for (size_t k = 0; k < m->ndepends_on; k++) {
            cfg_fmt(p, sizeof(p), "$.mappings[%zu].depends_on[%zu]", i, k);
            cfg_check_dep(x, c, m, &m->depends_on[k], p);
        }
    }
}

struct cfg_cycles {
    struct cfg_ctx *x;
    struct config *c;
};

/* Reports a cycle at the edge that closes it (from its last mapping back
 * to its first). */
static void cfg_report_cycle(const size_t *cycle, size_t len, void *arg)
{
    struct cfg_cycles *cc = arg;
    struct config *c = cc->c;
    const struct cfg_mapping *last = &c->mappings[cycle[len - 1]];
    char text[CFG_LINE_MAX / 2], p[CFG_PATH_MAX];
    size_t used = 0, k;

    for (size_t i = 0; i <= len && used < sizeof(text); i++) {
        const char *name = c->mappings[cycle[i % len]].name;

        used += (size_t)cfg_fmt(text + used, sizeof(text) - used, "%s%s",
                                i ? " -> " : "", name ? name : "?");
    }
    for (k = 0; k < last->ndepends_on; k++)
        if (last->depends_on[k].parent == &c->mappings[cycle[0]])
            break;
    cfg_fmt(p, sizeof(p), "$.mappings[%zu].depends_on[%zu]", cycle[len - 1], k);
    cfg_bad(cc->x, p, "dependency cycle: %s", text);
}

static void cfg_check_cycles(struct cfg_ctx *x, struct config *c)
{
    struct dep_edge *edges = cfg_calloc(x, deps_declared(c, NULL) + 1, sizeof(*edges));
    struct cfg_cycles cc = { x, c };
    size_t k;

    if (edges == NULL)
        return;
    k = deps_declared(c, edges);
    if (deps_cycles(c->nmappings, edges, k, true, cfg_report_cycle, &cc) < 0)
        x->oom = true;
    free(edges);
}

static void cfg_check_reconcile(struct cfg_ctx *x, struct config *c)
{
    char p[CFG_PATH_MAX];

    for (size_t i = 0; i < c->reconcile.nmappings; i++)
        if (config_mapping(c, c->reconcile.mappings[i]) == NULL) {
            cfg_fmt(p, sizeof(p), "$.reconcile.mappings[%zu]", i);
            cfg_bad(x, p, "unknown mapping \"%s\"", c->reconcile.mappings[i]);
        }
}

static void cfg_check_config(struct cfg_ctx *x, void *base, const char *path)
{
    struct config *c = base;

    cfg_check_name(x, "$.name", c->name, "name");
    cfg_check_mapping_names(x, c);
    cfg_check_deps(x, c);
    cfg_check_cycles(x, c);
    cfg_check_reconcile(x, c);
}

static const struct cfg_key cfg_top_keys[] = {
    { KEY("name", T_STR, struct config, name), .flags = F_REQ | F_NONEMPTY },
    { .key = "state", .type = T_SUB, .off = 0, .sub = &cfg_state_schema },
    { .key = "log", .type = T_SUB, .off = 0, .sub = &cfg_log_schema },
    { .key = "http", .type = T_SUB, .off = 0, .sub = &cfg_http_schema },
    { .key = "endpoints", .type = T_FN, .flags = F_REQ, .fn = cfg_endpoints },
    { .key = "mappings", .type = T_FN, .flags = F_REQ, .fn = cfg_mappings },
    { KEY("retry", T_SUB, struct config, retry), .sub = &cfg_retry_schema },
    { KEY("reconcile", T_SUB, struct config, reconcile),
      .sub = &cfg_reconcile_schema },
    { 0 }
};
static const struct cfg_schema cfg_top_schema = {
    .keys = cfg_top_keys, .check = cfg_check_config
};

/* ---- loading ---------------------------------------------------------------------- */

static int cfg_finish(struct cfg_ctx *x, struct config **out)
{
    struct config *c = x->c;
    size_t len;

    for (size_t i = 0; i < c->nsecrets; i++)
        log_add_secret(c->secrets[i]);
    if (x->oom) {
        config_free(c);
        return err_set(x->e, -ENOMEM, "out of memory loading the config");
    }
    if (x->nerr == 0) {
        *out = c;
        return 0;
    }
    if (x->e != NULL) {
        len = x->len;
        if (x->nlost > 0)
            cfg_fmt(x->e->msg + len, sizeof(x->e->msg) - len,
                     "\n... and %d more problems", x->nlost);
        log_redact(x->e->msg, sizeof(x->e->msg));
        x->e->code = -EINVAL;
    }
    config_free(c);
    return -EINVAL;
}

static int cfg_parse(struct config **out, const char *text, size_t len,
                     const char *src, struct err *e)
{
    struct cfg_ctx x = { .e = e };
    json_error_t je;
    json_t *root;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return err_set(e, -EINVAL, "$: invalid JSON%s%s at line %d, column %d: %s",
                       src ? " in " : "", src ? src : "", je.line, je.column,
                       je.text);
    x.c = calloc(1, sizeof(*x.c));
    if (x.c == NULL) {
        json_decref(root);
        return err_set(e, -ENOMEM, "out of memory loading the config");
    }
    cfg_object(&x, root, "$", &cfg_top_schema, x.c);
    json_decref(root);
    return cfg_finish(&x, out);
}

int config_load_string(struct config **out, const char *text, struct err *e)
{
    *out = NULL;
    err_clear(e);
    if (text == NULL)
        return err_set(e, -EINVAL, "$: no config text");
    return cfg_parse(out, text, strlen(text), NULL, e);
}

int config_load(struct config **out, const char *path, struct err *e)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    err_clear(e);
    rc = cfg_read_file(path, CFG_FILE_MAX, &text, &len);
    if (rc < 0)
        return err_set(e, rc == -ENOENT ? -ENOENT : rc == -ENOMEM ? -ENOMEM : -EIO,
                       "cannot read config %s: %s", path,
                       rc == -EFBIG ? "larger than 4 MiB" : strerror(-rc));
    rc = cfg_parse(out, text, len, path, e);
    free(text);
    return rc;
}

/* ---- freeing and lookups ------------------------------------------------------------ */

static void cfg_free_secret(char *s)
{
    if (s != NULL)
        explicit_bzero(s, strlen(s));
    free(s);
}

static void cfg_free_pairs(struct cfg_pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        cfg_free_secret(p[i].value);
    }
    free(p);
}

static void cfg_free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void cfg_free_endpoint(struct cfg_endpoint *ep)
{
    free(ep->name);
    free(ep->conninfo);
    cfg_free_secret(ep->password);
    free(ep->publication);
    free(ep->slot);
    free(ep->origin);
    free(ep->base_url);
    cfg_free_pairs(ep->headers, ep->nheaders);
}

static void cfg_free_side(struct cfg_side *s)
{
    struct cfg_feed *f = &s->feed;

    free(s->endpoint);
    free(s->table);
    free(s->schema);
    free(s->relname);
    free(s->resource);
    cfg_free_strv(s->key, s->nkey);
    free(f->cursor_field);
    free(f->cursor_param);
    free(f->limit_param);
    free(f->offset_param);
    free(f->path);
    free(f->since_param);
    free(f->seq_field);
    free(f->id_field);
    free(f->doc_field);
    free(f->last_seq);
    free(f->records);
    free(f->deleted_field);
    cfg_free_pairs(f->params, f->nparams);
    free(s->write.del_soft_field);
    free(s->write.revision_field);
    free(s->write.revision_param);
}

static void cfg_free_mapping(struct cfg_mapping *m)
{
    free(m->name);
    cfg_free_side(&m->a);
    cfg_free_side(&m->b);
    cfg_free_pairs(m->fields, m->nfields);
    free(m->timestamp_field);
    free(m->plugin);
    free(m->soft_delete_field);
    free(m->canary_key);
    for (size_t i = 0; i < m->ndepends_on; i++) {
        free(m->depends_on[i].mapping);
        cfg_free_pairs(m->depends_on[i].fields, m->depends_on[i].nfields);
    }
    free(m->depends_on);
}

void config_free(struct config *c)
{
    if (c == NULL)
        return;
    free(c->name);
    free(c->state_path);
    free(c->http_listen);
    for (size_t i = 0; i < c->nendpoints; i++)
        cfg_free_endpoint(&c->endpoints[i]);
    free(c->endpoints);
    for (size_t i = 0; i < c->nmappings; i++)
        cfg_free_mapping(&c->mappings[i]);
    free(c->mappings);
    cfg_free_strv(c->reconcile.mappings, c->reconcile.nmappings);
    for (size_t i = 0; i < c->nsecrets; i++)
        cfg_free_secret(c->secrets[i]);
    free(c->secrets);
    free(c);
}

struct cfg_endpoint *config_endpoint(const struct config *c, const char *name)
{
    if (c == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < c->nendpoints; i++)
        if (c->endpoints[i].name && strcmp(c->endpoints[i].name, name) == 0)
            return &c->endpoints[i];
    return NULL;
}

struct cfg_mapping *config_mapping(const struct config *c, const char *name)
{
    if (c == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < c->nmappings; i++)
        if (c->mappings[i].name && strcmp(c->mappings[i].name, name) == 0)
            return &c->mappings[i];
    return NULL;
}

const char *config_field_a_to_b(const struct cfg_mapping *m, const char *f)
{
    if (m == NULL || f == NULL)
        return NULL;
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, f) == 0)
            return m->fields[i].value;
    return NULL;
}

static bool sequence_feed(const struct cfg_side *sd)
{
    return sd->ep != NULL && sd->ep->kind == CFG_KIND_REST && sd->feed.style == CFG_FEED_SEQUENCE;
}

bool config_unversioned_lww(const struct cfg_mapping *m)
{
    bool lww = m->strategy == CFG_STRAT_LWW ||
               (m->strategy == CFG_STRAT_FIELD_MERGE && m->fallback == CFG_STRAT_LWW);

    return m->direction == CFG_DIR_BOTH && lww && m->timestamp_field == NULL &&
           (sequence_feed(&m->a) || sequence_feed(&m->b));
}

const char *config_field_b_to_a(const struct cfg_mapping *m, const char *f)
{
    if (m == NULL || f == NULL)
        return NULL;
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].value, f) == 0)
            return m->fields[i].name;
    return NULL;
}

const char *config_strategy_name(enum cfg_strategy st)
{
    for (const struct cfg_name *n = cfg_strategies; n->name != NULL; n++)
        if (n->value == (int)st)
            return n->name;
    return "unknown";
}
