/* plugin.c: the plugin strategy: load a shared object implementing
 * tandem/resolver.h and hand it base, a and b as plain C structs. */
#include "resolver_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resolver_plugin {
    void *dl;                   /* NULL for a wrapped in-process resolver */
    char *name;
    tandem_resolve_fn fn;
};

static int rs_plugin_check(struct resolver_plugin *p,
                           tandem_resolver_abi_version_fn version, struct err *e)
{
    int v;

    if (version == NULL)
        return err_set(e, -ENOEXEC, "plugin %s: missing symbol "
                       "tandem_resolver_abi_version", p->name);
    if (p->fn == NULL)
        return err_set(e, -ENOEXEC, "plugin %s: missing symbol tandem_resolve",
                       p->name);
    v = version();
    if (v != TANDEM_RESOLVER_ABI_VERSION)
        return err_set(e, -EPROTO, "plugin %s: abi version %d, tandem needs %d",
                       p->name, v, TANDEM_RESOLVER_ABI_VERSION);
    return 0;
}

/* dlsym returns an object pointer; copy it into a function pointer. */
static void *rs_sym(void *dl, const char *name, size_t size, void *fnp)
{
    void *sym = dlsym(dl, name);

    memcpy(fnp, &sym, size);
    return sym;
}

int resolver_plugin_load(const char *path, struct resolver_plugin **out,
                         struct err *e)
{
    struct resolver_plugin *p;
    tandem_resolver_abi_version_fn version = NULL;
    char *rel = NULL;
    const char *open_path = path;
    int rc;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return err_set(e, -ENOENT, "plugin: empty path");
    /* dlopen searches the library path for a bare name; a config names a file. */
    if (strchr(path, '/') == NULL) {
        if ((rel = malloc(strlen(path) + 3)) == NULL)
            return err_set(e, -ENOMEM, "plugin %s: out of memory", path);
        strcpy(rel, "./");
        strcat(rel, path);
        open_path = rel;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->name = strdup(path)) == NULL) {
        free(p);
        free(rel);
        return err_set(e, -ENOMEM, "plugin %s: out of memory", path);
    }
    dlerror();
    p->dl = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    free(rel);
    if (p->dl == NULL) {
        const char *why = dlerror();

        rc = err_set(e, -ENOENT, "plugin %s: cannot load: %s", path,
                     why != NULL ? why : "unknown error");
        goto error;
    }
    rs_sym(p->dl, "tandem_resolver_abi_version", sizeof(version), &version);
    rs_sym(p->dl, "tandem_resolve", sizeof(p->fn), &p->fn);
    if ((rc = rs_plugin_check(p, version, e)) != 0)
        goto error;
    *out = p;
    return 0;
error:
    resolver_plugin_free(p);
    return rc;
}

int resolver_plugin_wrap(const char *name, tandem_resolver_abi_version_fn version,
                         tandem_resolve_fn fn, struct resolver_plugin **out,
                         struct err *e)
{
    struct resolver_plugin *p = calloc(1, sizeof(*p));
    int rc;

    *out = NULL;
    if (p == NULL || (p->name = strdup(name != NULL ? name : "(linked)")) == NULL) {
        free(p);
        return err_set(e, -ENOMEM, "plugin: out of memory");
    }
    p->fn = fn;
    if ((rc = rs_plugin_check(p, version, e)) != 0) {
        resolver_plugin_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void resolver_plugin_free(struct resolver_plugin *p)
{
    if (p == NULL)
        return;
    if (p->dl != NULL)
        dlclose(p->dl);
    free(p->name);
    free(p);
}

/* ---- one plugin per mapping, loaded on first use ---- */

struct resolver_plugin_cache {
    size_t n;
    struct {
        const struct cfg_mapping *m;
        struct resolver_plugin *p;
    } slot[];
};

const struct resolver_plugin *resolver_plugin_for(struct resolver_plugin_cache **cache,
                                                  const struct cfg_mapping *m,
                                                  struct err *e)
{
    struct resolver_plugin_cache *c = *cache, *n;
    size_t have = c ? c->n : 0;

    for (size_t i = 0; i < have; i++)
        if (c->slot[i].m == m)
            return c->slot[i].p;
    n = realloc(c, sizeof(*n) + (have + 1) * sizeof(n->slot[0]));
    if (n == NULL) {
        err_set(e, -ENOMEM, "plugin: out of memory");
        return NULL;
    }
    n->n = have;
    *cache = n;
    if (resolver_plugin_load(m->plugin, &n->slot[have].p, e) != 0)
        return NULL;
    n->slot[have].m = m;
    n->n = have + 1;
    return n->slot[have].p;
}

void resolver_plugin_cache_free(struct resolver_plugin_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        resolver_plugin_free(c->slot[i].p);
    free(c);
}

/* ---- calling it ---- */

/* The arrays behind the three tandem_records. */
struct rs_call {
    struct rs *c;
    struct tandem_field *f[3];  /* base, a, b */
    json_t *merged;
    int bad;                    /* set_field saw an unknown name / no memory */
    char bad_name[128];
};

static int rs_fill(struct rs_call *k, int which, struct tandem_record *rec)
{
    const struct rs *c = k->c;
    size_t n = 0;

    if ((k->f[which] = calloc(c->nnames + 1, sizeof(*k->f[which]))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < c->nnames; i++) {
        const json_t *v = which == 0 ? rs_basev(c, c->names[i])
                                     : rs_eff(c, which - 1, c->names[i], NULL);

        if (v == NULL)
            continue;
        k->f[which][n].name = c->names[i];
        k->f[which][n].value = json_is_string(v) ? json_string_value(v) : NULL;
        k->f[which][n].is_null = json_is_null(v);
        n++;
    }
    rec->fields = k->f[which];
    rec->nfields = n;
    return 0;
}

static int rs_set_field(void *host, const char *name, const char *value, int is_null)
{
    struct rs_call *k = host;
    const struct rs *c = k->c;
    bool known = false;
    json_t *v;

    for (size_t i = 0; name != NULL && i < c->nnames && !known; i++)
        known = strcmp(c->names[i], name) == 0;
    if (!known || (!is_null && value == NULL)) {
        if (!k->bad)
            snprintf(k->bad_name, sizeof(k->bad_name), "%s",
                     name != NULL ? name : "(null)");
        k->bad = 1;
        return -1;
    }
    if (k->merged == NULL && (k->merged = json_object()) == NULL)
        return -1;
    v = is_null ? json_null() : json_string(value);
    if (v == NULL || json_object_set_new(k->merged, name, v) != 0) {
        k->bad = -1;
        return -1;
    }
    return 0;
}

/* The merged record: every field present in a or b must be decided. */
static int rs_take_merged(struct rs_call *k, const char *pname)
{
    struct rs *c = k->c;
    int rc = 0;

    c->r->winner = 0;
    for (size_t i = 0; i < c->nnames && rc == 0; i++) {
        const char *n = c->names[i];
        bool sa, sb;
        const json_t *va = rs_eff(c, RS_A, n, &sa), *vb = rs_eff(c, RS_B, n, &sb);
        const json_t *v = json_object_get(k->merged, n);
        const char *taken = "merged";

        if (v == NULL) {
            if (va == NULL && vb == NULL)
                continue;
            return rs_fail(c, -EPROTO, "plugin %s: field %s left undecided",
                           pname, n);
        }
        if (va != NULL && rs_vequal(v, va) && rs_vequal(v, vb))
            taken = !sa && !sb ? "base" : "both_equal";
        else if (va != NULL && rs_vequal(v, va))
            taken = "a";
        else if (vb != NULL && rs_vequal(v, vb))
            taken = "b";
        else if (rs_basev(c, n) != NULL && rs_vequal(v, rs_basev(c, n)))
            taken = "base";
        rc = rs_set(c, n, v);
        if (rc == 0)
            rc = rs_explain(c, n, taken, "plugin");
    }
    if (rc == 0 && c->r->fields == NULL && (c->r->fields = json_object()) == NULL)
        rc = -ENOMEM;
    return rc;
}

static void rs_side_rec(const struct rs *c, int side, struct tandem_record *rec)
{
    const struct cfg_side *cs = side == RS_A ? &c->m->a : &c->m->b;

    rec->present = 1;
    rec->deleted = c->s[side]->deleted;
    rec->version_us = c->s[side]->version_us;
    rec->commit_us = c->s[side]->commit_us;
    rec->endpoint = cs->endpoint != NULL ? cs->endpoint : "";
}

int rs_plugin(struct rs *c)
{
    const struct resolver_plugin *p = c->plugin;
    struct tandem_resolve_input in;
    struct tandem_resolve_output out;
    struct rs_call k = { .c = c };
    int rc, prc;

    c->r->rule = "plugin";
    if (p == NULL)
        return rs_fail(c, -EINVAL, "resolve %s: strategy plugin without a loaded "
                       "plugin", c->key);
    memset(&in, 0, sizeof(in));
    memset(&out, 0, sizeof(out));
    in.abi_version = TANDEM_RESOLVER_ABI_VERSION;
    in.mapping = c->m->name != NULL ? c->m->name : "";
    in.key = c->key;
    if (c->base != NULL) {
        in.base.present = 1;
        in.base.deleted = c->base->tombstone;
        in.base_version_a_us = c->base->version_a_us;
        in.base_version_b_us = c->base->version_b_us;
    }
    rs_side_rec(c, RS_A, &in.a);
    rs_side_rec(c, RS_B, &in.b);
    if ((rc = rs_fill(&k, 0, &in.base)) != 0 || (rc = rs_fill(&k, 1, &in.a)) != 0 ||
        (rc = rs_fill(&k, 2, &in.b)) != 0)
        goto done;
    if (c->basef == NULL) {
        in.base.fields = NULL;
        in.base.nfields = 0;
    }
    out.set_field = rs_set_field;
    out.host = &k;
    prc = p->fn(&in, &out);
    out.explanation[sizeof(out.explanation) - 1] = '\0';
    if (k.bad < 0) {
        rc = -ENOMEM;
        goto done;
    }
    if (prc != 0) {
        rc = rs_fail(c, -EPROTO, "plugin %s: tandem_resolve failed (%d): %s",
                     p->name, prc, out.explanation);
        goto done;
    }
    if (k.bad) {
        rc = rs_fail(c, -EPROTO, "plugin %s: set_field with an unknown field or "
                     "value: %s", p->name, k.bad_name);
        goto done;
    }
    switch (out.choice) {
    case TANDEM_CHOICE_A:
    case TANDEM_CHOICE_B:
        rc = rs_whole(c, out.choice == TANDEM_CHOICE_A ? RS_A : RS_B, "plugin");
        break;
    case TANDEM_CHOICE_DELETE:
        rc = rs_delete(c, c->s[RS_A]->deleted && !c->s[RS_B]->deleted ? "a" :
                          c->s[RS_B]->deleted && !c->s[RS_A]->deleted ? "b" :
                          "merged", "plugin");
        break;
    case TANDEM_CHOICE_MERGED:
        rc = rs_take_merged(&k, p->name);
        break;
    case TANDEM_CHOICE_PARK:
        rc = rs_park(c, "parked");
        c->r->rule = "plugin";
        break;
    default:
        rc = rs_fail(c, -EPROTO, "plugin %s: unknown choice %d", p->name, out.choice);
        goto done;
    }
    if (rc == 0)
        rs_detail(c, "plugin %s: %s", p->name,
                  out.explanation[0] != '\0' ? out.explanation : "decided");
done:
    json_decref(k.merged);
    for (int i = 0; i < 3; i++)
        free(k.f[i]);
    return rc;
}
